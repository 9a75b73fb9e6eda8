//! `runner-fence audit`: where job pods run today, what the policy would do to
//! them, what runners can reach outside the fence, and whether the webhook and
//! its backstop are installed and serving as the policy generates them.
//! Collection ([`collect`], [`run_once`]) talks to the API server; the
//! findings ([`analyze`]) come from the same engine the webhook runs and from
//! the pure RBAC analysis in `core::rbac`. Nothing read is dropped: a pod that
//! cannot be evaluated is an [`Unreadable`] finding of its own.

mod backstop;
mod collect;
pub mod continuous;
mod policies;
mod reports;
mod serving;
mod table;

use std::collections::BTreeMap;

use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use serde::Serialize;
use serde_json::Value;

use crate::core::engine::pod::{MetaView, PodView};
use crate::core::engine::{Decision, Evaluation, Moment, Origin, ReviewError, evaluate};
use crate::core::nodes::{NodeInfo, NodeSnapshot};
use crate::core::policy::{Policy, ProtectedBy, RuleId};
use crate::core::rbac::{self, Reach, ServiceAccountRef};
use crate::core::render::webhooks::{Gap, LiveWebhook, coverage_gaps};
use crate::core::report::Report as ErrorReport;

pub use backstop::{Backstop, BackstopObject, LiveBackstop};
pub use collect::{ExpectedBackstop, Options, collect, read, run_once};

/// Seconds since the Unix epoch (0 if the clock is before it): report and
/// certificate times.
pub fn now_seconds() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
pub use policies::{Audited, Policies, Reports, audit_each, restrict};
pub use reports::{
    Applied, BuiltReport, CONTENT_HASH, MANAGED_BY, MAX_MESSAGE, MAX_RESULTS, OUTSIDE_RULE,
    POLICY_LABEL, REACH_RULE, UNREADABLE_RULE, apply_reports, apply_reports_with, build_reports,
    label_value, policy_reports,
};
pub use serving::{
    Called, Certificate, DeploymentStatus, EXPIRY_WARNING_DAYS, Served, Serving, ServingIssue,
    Target,
};
pub use table::table;

/// Objects per page of a list.
const PAGE: u32 = 500;

/// Annotations GitLab Runner's Kubernetes executor puts on every job pod
/// (`job.runner.gitlab.com/{id,url,sha,before_sha,ref,name,timeout}`).
const JOB_ANNOTATION_PREFIX: &str = "job.runner.gitlab.com/";
/// Labels it sets on every job pod since 17.9 (jobs cannot override them).
const JOB_LABELS: [&str; 2] = [
    "job.runner.gitlab.com/pod",
    "manager.runner.gitlab.com/name",
];

/// A protected node as seen in the cluster.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ProtectedNode {
    /// Node name.
    pub name: String,
    /// Why it is protected.
    pub reason: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its taints, as `key=value:effect`.
    pub taints: Vec<String>,
}

/// A job pod and what runner-fence makes of it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct JobPod {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Node it runs on, if scheduled.
    pub node: Option<String>,
    /// Whether that node is a protected (GitLab) node.
    pub on_protected_node: bool,
    /// Profile the policy resolves.
    pub profile: Option<String>,
    /// Whether creating it today would be denied (enforce mode).
    pub would_deny: bool,
    /// Whether creating it today would be patched.
    pub would_patch: bool,
    /// Denial messages and audit warnings.
    pub messages: Vec<String>,
    /// What the patch would change.
    pub changes: Vec<String>,
    /// The pod's uid, for report references.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// Each violation with its rule: enforced (a denial) or only reported (audit mode).
    pub findings: Vec<Finding>,
    /// Where it is in its life: what enforcing can still stop.
    pub state: PodState,
    /// Its `spec.schedulingGates`, by name.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub scheduling_gates: Vec<String>,
    /// For a gated or pending pod: the violations of the pod *as stored*, as
    /// enforce mode judges it when it becomes schedulable (the UPDATE that
    /// removes its last gate; the scheduler's choice for a pending pod). No
    /// mutation runs then, so a pod created in audit mode or before install
    /// that only lacks its profile's affinity is denied, not patched.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub when_schedulable: Vec<Finding>,
}

/// Where an existing pod is in its life.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PodState {
    /// Waiting behind `spec.schedulingGates`: it runs once they are removed.
    Gated,
    /// Schedulable, not yet bound to a node.
    Pending,
    /// Bound to a node (`spec.nodeName`).
    Bound,
    /// `Succeeded` or `Failed`: it never runs again.
    Finished,
}

/// A pod, by namespace and name.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PodRef {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

/// A GitLab Runner job pod in a namespace the policy does not cover: found by
/// the labels and annotations the runner writes, a detection signal only
/// (inside the runner namespaces every pod is fenced, whatever it carries).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct OutsidePod {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Node it runs on, if scheduled.
    pub node: Option<String>,
    /// Whether that node is a protected (GitLab) node.
    pub on_protected_node: bool,
    /// The runner's job labels it carries.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
    /// The runner's job annotations it carries.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub annotations: Vec<String>,
    /// The pod's uid, for report references.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// `manager.runner.gitlab.com/name`: the runner that made it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runner: Option<String>,
    /// `job.runner.gitlab.com/id`: the CI job.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
}

/// A check `audit` could not complete.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Check {
    /// Which runner service accounts can create pods outside the fence (RBAC).
    RunnerReach,
    /// What enforce mode would do to one pod, and whether it runs on a protected node.
    Pod,
    /// Whether the in-tree backstop is installed as the policy generates it.
    Backstop,
    /// Whether the webhook serves: its Service, Deployment, endpoints, certificate.
    Serving,
}

/// The pod an [`Unreadable`] finding is about.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct UnreadablePod {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// uid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// The node it is bound to, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Whether that node is a protected (GitLab) node.
    pub on_protected_node: bool,
}

/// Something `audit` could not read or evaluate: a finding of its own, never skipped.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Unreadable {
    /// What could not be read, e.g. `clusterrolebindings.rbac.authorization.k8s.io`
    /// or `pod gitlab-runner/runner-x`.
    pub what: String,
    /// The API server's status code, when it answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
    /// Its answer, or why there was none.
    pub reason: String,
    /// The check this leaves incomplete.
    pub check: Check,
    /// The pod, for a pod that could not be evaluated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<UnreadablePod>,
    /// The verb that failed (`get`, `list`), for the advice.
    #[serde(skip)]
    pub(crate) verb: &'static str,
}

impl std::fmt::Display for Unreadable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.check {
            Check::Pod => write!(f, "cannot evaluate {}: {}; ", self.what, self.reason)?,
            _ => write!(f, "cannot {} {}: {}; ", self.verb, self.what, self.reason)?,
        }
        f.write_str(match self.check {
            Check::RunnerReach if self.what.starts_with("serviceaccounts") => {
                "grants to groups of service accounts are reported without naming their members"
            }
            Check::RunnerReach => {
                "which runner service accounts can create pods outside the fence is not known \
                 (only what the readable objects grant is reported)"
            }
            Check::Pod => "what enforce mode would do to it is not known",
            Check::Backstop => {
                "whether the in-tree backstop is installed is not known (a fail-open webhook \
                 counts as unguarded)"
            }
            Check::Serving => "whether the webhook is serving is not known",
        })?;
        if let Some(p) = &self.pod {
            match (&p.node, p.on_protected_node) {
                (Some(n), true) => write!(f, "; it RUNS ON PROTECTED NODE {n}")?,
                (Some(n), false) => write!(f, "; it runs on {n}")?,
                (None, _) => {}
            }
            f.write_str("; fix or delete the pod")?;
        }
        if self.code == Some(403) {
            write!(
                f,
                "; grant {} on it to whoever runs audit (manifests/extras/audit-rbac.yaml)",
                self.verb
            )?;
        }
        Ok(())
    }
}

/// RBAC as listed for the reach check, and what could not be listed.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// Roles outside the runner namespaces.
    pub roles: Vec<Role>,
    /// ClusterRoles.
    pub cluster_roles: Vec<ClusterRole>,
    /// RoleBindings outside the runner namespaces.
    pub role_bindings: Vec<RoleBinding>,
    /// ClusterRoleBindings.
    pub cluster_role_bindings: Vec<ClusterRoleBinding>,
    /// ServiceAccounts of the runner namespaces.
    pub service_accounts: Vec<ServiceAccountRef>,
    /// Lists that failed.
    pub unreadable: Vec<Unreadable>,
}

/// One rule's verdict on a pod.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Finding {
    /// The rule.
    pub rule: RuleId,
    /// Denied (true) or only reported because the rule or policy audits (false).
    pub enforced: bool,
    /// The message.
    pub message: String,
}

/// One webhook of a runner-fence configuration.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct WebhookInfo {
    /// `mutating` or `validating`.
    pub kind: String,
    /// Configuration name.
    pub configuration: String,
    /// Webhook name.
    pub webhook: String,
    /// `Fail` or `Ignore`.
    pub failure_policy: String,
    /// Whether a caBundle is set (or injected).
    pub ca_bundle: bool,
}

/// Everything `audit` found.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    /// The policy's mode.
    pub mode: String,
    /// Protected nodes.
    pub protected_nodes: Vec<ProtectedNode>,
    /// Nodes seen in all.
    pub nodes_seen: usize,
    /// Job pods in the runner namespaces.
    pub job_pods: Vec<JobPod>,
    /// runner-fence's own webhooks.
    pub webhooks: Vec<WebhookInfo>,
    /// The in-tree backstop as found, and what differs from what the policy generates.
    pub backstop: Backstop,
    /// Whether the webhook serves: Deployment, endpoints, certificates.
    pub serving: Serving,
    /// What the policy covers that the live webhook configurations do not send,
    /// and fail-open webhooks while the policy enforces without the backstop.
    pub coverage_gaps: Vec<Gap>,
    /// Existing pods in the runner namespaces that enforce mode would deny
    /// (judged as if created now), gated or not, bound or pending: delete or
    /// fix them before enforcing, since enforcing does not touch them.
    pub delete_or_fix_before_enforcing: Vec<PodRef>,
    /// GitLab Runner job pods in namespaces the policy does not cover.
    pub job_pods_outside_fence: Vec<OutsidePod>,
    /// Auditing several served policies: the one whose report lists the job
    /// pods outside every policy's namespaces (the first), when not this one.
    /// They are cluster-wide, so each is reported once, not once per policy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_pods_outside_fence_listed_by: Option<String>,
    /// Grants that let runner service accounts make pods outside the fence.
    pub runner_reach: Vec<Reach>,
    /// What could not be read or evaluated, and which check that leaves incomplete.
    pub unreadable: Vec<Unreadable>,
}

/// Everything [`analyze`] judges, as collected.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    /// Every node.
    pub nodes: Vec<NodeInfo>,
    /// The runner namespaces' pods, and any others that carry GitLab Runner's
    /// job labels or annotations (as JSON: a pod that does not decode is a
    /// finding). [`run_once`] leaves it empty: it judges each page of the
    /// listing as it comes ([`PodJudge`]).
    pub pods: Vec<Value>,
    /// runner-fence's webhooks, as shown and as their scope.
    pub webhooks: Vec<(WebhookInfo, LiveWebhook)>,
    /// The backstop objects found.
    pub backstop: Vec<LiveBackstop>,
    /// The controller's backstop they are compared with (None: the audited policy's own).
    pub expected_backstop: Option<ExpectedBackstop>,
    /// The webhook's own namespace (the Service's), when known.
    pub own_namespace: Option<String>,
    /// Whether the webhook serves.
    pub serving: Serving,
    /// RBAC and ServiceAccounts.
    pub access: Access,
    /// Everything else that could not be read.
    pub unreadable: Vec<Unreadable>,
}

impl Report {
    /// Job pods on protected nodes: what runner-fence exists to prevent.
    pub fn on_protected(&self) -> impl Iterator<Item = &JobPod> {
        self.job_pods.iter().filter(|p| p.on_protected_node)
    }

    /// Whether anything is wrong: a job pod on a protected node, one the policy
    /// would deny, a request the cluster does not send to runner-fence, a job
    /// pod outside the fence, a runner service account that can make pods
    /// outside it, a backstop or webhook not installed or serving as
    /// generated, or something that could not be read or evaluated.
    pub fn has_violations(&self) -> bool {
        !self.coverage_gaps.is_empty()
            || !self.job_pods_outside_fence.is_empty()
            || !self.runner_reach.is_empty()
            || !self.unreadable.is_empty()
            || !self.backstop.issues.is_empty()
            || !self.serving.issues.is_empty()
            || self
                .job_pods
                .iter()
                .any(|p| p.on_protected_node || p.would_deny)
    }

    /// The number of findings by rule (the metrics' and the summary's
    /// `rule` label): each policy rule counts the pods with a failure or
    /// warning of it, as created or when schedulable; the other keys count
    /// outside pods, runner reach, unreadable objects, coverage gaps,
    /// backstop and serving issues. Every key is present, zero or not.
    pub fn findings_by_rule(&self) -> BTreeMap<&'static str, u64> {
        let mut out: BTreeMap<&'static str, u64> = finding_rules().map(|r| (r, 0)).collect();
        for p in &self.job_pods {
            for rule in RuleId::ALL {
                let hit = p
                    .findings
                    .iter()
                    .chain(&p.when_schedulable)
                    .any(|f| f.rule == rule)
                    || (rule == RuleId::ProtectedNodes && p.on_protected_node);
                if hit && let Some(n) = out.get_mut(rule.as_str()) {
                    *n += 1;
                }
            }
        }
        let counts = [
            (OUTSIDE_RULE, self.job_pods_outside_fence.len()),
            (REACH_RULE, self.runner_reach.len()),
            (UNREADABLE_RULE, self.unreadable.len()),
            ("coverage-gap", self.coverage_gaps.len()),
            ("backstop", self.backstop.issues.len()),
            ("serving", self.serving.issues.len()),
        ];
        for (k, n) in counts {
            out.insert(k, n as u64);
        }
        out
    }
}

/// The keys of [`Report::findings_by_rule`]: every policy rule, then
/// `job-pod-outside-fence`, `runner-reach`, `unreadable`, `coverage-gap`,
/// `backstop` and `serving`.
pub fn finding_rules() -> impl Iterator<Item = &'static str> {
    RuleId::ALL.iter().map(|r| r.as_str()).chain([
        OUTSIDE_RULE,
        REACH_RULE,
        UNREADABLE_RULE,
        "coverage-gap",
        "backstop",
        "serving",
    ])
}

/// Why a node is protected, if it is.
pub(crate) fn protected_reason(policy: &Policy, node: &NodeInfo) -> Option<String> {
    let pn = &policy.protected_nodes;
    Some(match pn.is_protected(&node.name, Some(&node.labels))? {
        ProtectedBy::Name => "listed in protectedNodes.names".into(),
        _ => {
            let s: Vec<String> = pn.label_requirements().map(|r| r.to_string()).collect();
            format!("labels match {}", s.join(", "))
        }
    })
}

/// Pods judged one at a time, as a listing delivers them: what [`analyze`]
/// does with [`Inputs::pods`], for a collector that must not hold every pod
/// of a cluster at once (as JSON trees, 20,000 job pods took 2.5 GiB). Only
/// the findings of each pod are kept.
pub struct PodJudge<'p> {
    policy: &'p Policy,
    snapshot: NodeSnapshot,
    protected: Vec<ProtectedNode>,
    job_pods: Vec<JobPod>,
    outside: Vec<OutsidePod>,
    unreadable: Vec<Unreadable>,
}

impl<'p> PodJudge<'p> {
    /// A judge for pods on these nodes.
    pub fn new(policy: &'p Policy, nodes: &[NodeInfo]) -> Self {
        PodJudge {
            policy,
            snapshot: NodeSnapshot::new(nodes.iter().cloned()),
            protected: nodes
                .iter()
                .filter_map(|n| protected_node(policy, n))
                .collect(),
            job_pods: Vec::new(),
            outside: Vec::new(),
            unreadable: Vec::new(),
        }
    }

    /// Judges one pod (any pod: those outside the runner namespaces count
    /// only when they carry GitLab Runner's marks).
    pub fn judge(&mut self, pod: &Value) {
        match job_pod(self.policy, pod, &self.snapshot, &self.protected) {
            None => {}
            Some(Ok(p)) => self.job_pods.push(p),
            Some(Err(u)) => self.unreadable.push(u),
        }
        if let Some(o) = outside_pod(self.policy, pod, &self.protected) {
            self.outside.push(o);
        }
    }
}

/// Evaluates collected objects: pure, so it is tested without a cluster.
pub fn analyze(policy: &Policy, inputs: &Inputs) -> Report {
    analyze_judged(policy, inputs, PodJudge::new(policy, &inputs.nodes))
}

/// [`analyze`] with pods a collector judged as it listed them (those in
/// `inputs.pods` are judged too, after them).
pub fn analyze_judged(policy: &Policy, inputs: &Inputs, mut judge: PodJudge<'_>) -> Report {
    for pod in &inputs.pods {
        judge.judge(pod);
    }
    let live: Vec<LiveWebhook> = inputs.webhooks.iter().map(|(_, l)| l.clone()).collect();
    let webhooks: Vec<WebhookInfo> = inputs.webhooks.iter().map(|(i, _)| i.clone()).collect();
    let PodJudge {
        protected,
        mut job_pods,
        mut outside,
        unreadable,
        ..
    } = judge;
    job_pods.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    outside.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    let access = &inputs.access;
    let runner_reach = rbac::reach(
        &policy.matching,
        &rbac::Objects {
            roles: &access.roles,
            cluster_roles: &access.cluster_roles,
            role_bindings: &access.role_bindings,
            cluster_role_bindings: &access.cluster_role_bindings,
            service_accounts: &access.service_accounts,
        },
    );
    let own_namespace = inputs.own_namespace.as_deref().unwrap_or("runner-fence");
    let backstop = backstop::assess(
        policy,
        own_namespace,
        &inputs.backstop,
        inputs.expected_backstop.as_ref(),
    );
    Report {
        mode: policy.mode.to_string(),
        protected_nodes: protected,
        nodes_seen: inputs.nodes.len(),
        delete_or_fix_before_enforcing: job_pods
            .iter()
            .filter(|p| p.would_deny)
            .map(|p| PodRef {
                namespace: p.namespace.clone(),
                name: p.name.clone(),
            })
            .collect(),
        job_pods,
        webhooks,
        coverage_gaps: coverage_gaps(policy, &live, backstop.denies()),
        backstop,
        serving: inputs.serving.clone(),
        job_pods_outside_fence: outside,
        job_pods_outside_fence_listed_by: None,
        runner_reach,
        unreadable: access
            .unreadable
            .iter()
            .chain(&inputs.unreadable)
            .cloned()
            .chain(unreadable)
            .collect(),
    }
}

/// The keys of a JSON object of strings (labels, annotations).
fn keys<'a>(pod: &'a Value, pointer: &str) -> impl Iterator<Item = &'a str> {
    pod.pointer(pointer)
        .and_then(Value::as_object)
        .into_iter()
        .flat_map(|m| m.keys().map(String::as_str))
}

/// The GitLab Runner job labels and annotations among these keys.
fn runner_marks<'a>(
    labels: impl Iterator<Item = &'a str>,
    annotations: impl Iterator<Item = &'a str>,
) -> (Vec<String>, Vec<String>) {
    let labels = labels
        .filter(|k| JOB_LABELS.contains(k))
        .map(String::from)
        .collect();
    let annotations = annotations
        .filter(|k| k.starts_with(JOB_ANNOTATION_PREFIX))
        .map(String::from)
        .collect();
    (labels, annotations)
}

/// Does this pod carry GitLab Runner's job labels or annotations?
fn looks_like_job(pod: &Value) -> bool {
    let (l, a) = runner_marks(
        keys(pod, "/metadata/labels"),
        keys(pod, "/metadata/annotations"),
    );
    !l.is_empty() || !a.is_empty()
}

/// A pod outside the runner namespaces that GitLab Runner made, by its marks.
fn outside_pod(policy: &Policy, pod: &Value, protected: &[ProtectedNode]) -> Option<OutsidePod> {
    let str_at = |p: &str| {
        pod.pointer(p)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    let ns = str_at("/metadata/namespace").unwrap_or("");
    if policy.matching.covers(ns) {
        return None;
    }
    let (labels, annotations) = runner_marks(
        keys(pod, "/metadata/labels"),
        keys(pod, "/metadata/annotations"),
    );
    if labels.is_empty() && annotations.is_empty() {
        return None;
    }
    let node = str_at("/spec/nodeName").map(String::from);
    Some(OutsidePod {
        uid: str_at("/metadata/uid").map(String::from),
        namespace: ns.to_string(),
        name: str_at("/metadata/name").unwrap_or("").to_string(),
        on_protected_node: node
            .as_ref()
            .is_some_and(|n| protected.iter().any(|p| p.name == *n)),
        node,
        labels,
        annotations,
        runner: str_at("/metadata/labels/manager.runner.gitlab.com~1name").map(String::from),
        job_id: str_at("/metadata/annotations/job.runner.gitlab.com~1id").map(String::from),
    })
}

/// Gated, pending, bound or finished, and the gates' names.
fn pod_state(pod: &Value) -> (PodState, Vec<String>) {
    let gates: Vec<String> = pod
        .pointer("/spec/schedulingGates")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|g| g.get("name").and_then(Value::as_str).map(String::from))
        .collect();
    let phase = pod.pointer("/status/phase").and_then(Value::as_str);
    let bound = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty());
    let state = if matches!(phase, Some("Succeeded" | "Failed")) {
        PodState::Finished
    } else if bound {
        PodState::Bound
    } else if !gates.is_empty() {
        PodState::Gated
    } else {
        PodState::Pending
    };
    (state, gates)
}

/// The node as a protected node, if it is one.
fn protected_node(policy: &Policy, n: &NodeInfo) -> Option<ProtectedNode> {
    protected_reason(policy, n).map(|reason| ProtectedNode {
        name: n.name.clone(),
        reason,
        labels: n.labels.clone(),
        taints: n
            .taints
            .iter()
            .map(|t| {
                format!(
                    "{}={}:{}",
                    t.key,
                    t.value.as_deref().unwrap_or(""),
                    t.effect
                )
            })
            .collect(),
    })
}

/// A string at a JSON pointer, if non-empty.
fn str_at<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// A pod in a runner namespace (every one is in scope, whatever its name or
/// labels), where it runs and what the policy would do to it if it were
/// created now and, gated or pending, when it becomes schedulable; `None` for
/// pods elsewhere; an [`Unreadable`] finding when it cannot be evaluated.
fn job_pod(
    policy: &Policy,
    pod: &Value,
    snapshot: &NodeSnapshot,
    protected: &[ProtectedNode],
) -> Option<Result<JobPod, Unreadable>> {
    let ns = str_at(pod, "/metadata/namespace").unwrap_or("");
    if !policy.matching.covers(ns) {
        return None;
    }
    let node = str_at(pod, "/spec/nodeName").map(String::from);
    let on_protected_node = node
        .as_ref()
        .is_some_and(|n| protected.iter().any(|p| p.name == *n));
    let uid = str_at(pod, "/metadata/uid").map(String::from);
    let (meta, ev, later) = match evaluated(policy, pod, snapshot) {
        Ok(x) => x,
        Err(reason) => {
            let name = str_at(pod, "/metadata/name").unwrap_or("").to_string();
            return Some(Err(Unreadable {
                what: format!("pod {ns}/{name}"),
                code: None,
                reason,
                check: Check::Pod,
                pod: Some(UnreadablePod {
                    namespace: ns.to_string(),
                    name,
                    uid,
                    node,
                    on_protected_node,
                }),
                verb: "evaluate",
            }));
        }
    };
    // What enforce mode would deny, even when the policy is in audit mode.
    let would_deny = !ev.allowed()
        || !ev.validate_decision.audited().is_empty()
        || !ev.mutate_decision.audited().is_empty()
        || !later.is_empty();
    let mut changes = ev.mutate_decision.changes().to_vec();
    changes.extend(ev.mutate_decision.would_patch().iter().cloned());
    let (state, scheduling_gates) = pod_state(pod);
    Some(Ok(JobPod {
        namespace: ns.to_string(),
        name: meta.match_name().to_string(),
        node,
        on_protected_node,
        profile: ev.profile.clone(),
        would_deny,
        would_patch: !changes.is_empty(),
        messages: ev.messages(),
        changes,
        uid,
        findings: findings(&[&ev.mutate_decision, &ev.validate_decision]),
        state,
        scheduling_gates,
        when_schedulable: later,
    }))
}

/// The decoded metadata, the evaluation as created and the violations when
/// schedulable; or why the pod cannot be evaluated.
fn evaluated(
    policy: &Policy,
    pod: &Value,
    snapshot: &NodeSnapshot,
) -> Result<(MetaView, Evaluation, Vec<Finding>), String> {
    let meta = PodView::from_value(pod)
        .map_err(|e| decode_error(pod, &e))?
        .metadata;
    let ev = judged(policy, pod, Moment::Created, snapshot)?;
    let later = match pod_state(pod).0 {
        PodState::Gated | PodState::Pending => {
            let ev = judged(policy, pod, Moment::Schedulable, snapshot)?;
            findings(&[&ev.validate_decision])
        }
        PodState::Bound | PodState::Finished => Vec::new(),
    };
    Ok((meta, ev, later))
}

/// Why a pod does not decode, with the field at fault (looked up only then:
/// the engine's decoder does not track paths).
fn decode_error(pod: &Value, e: &ReviewError) -> String {
    match (e, serde_path_to_error::deserialize::<_, PodView>(pod)) {
        (ReviewError::InvalidPod(_), Err(at)) => {
            format!("object is not a valid Pod: {}: {}", at.path(), at.inner())
        }
        _ => ErrorReport(e).to_string(),
    }
}

/// Each violation of these decisions with its rule: enforced (a denial) or
/// only reported (audit mode).
fn findings(decisions: &[&Decision]) -> Vec<Finding> {
    decisions
        .iter()
        .flat_map(|d| {
            let enforced = d.denials().iter().map(|v| (v, true));
            enforced.chain(d.audited().iter().map(|v| (v, false)))
        })
        .map(|(v, enforced)| Finding {
            rule: v.rule,
            enforced,
            message: v.to_string(),
        })
        .collect()
}

/// The engine's evaluation of the stored pod as the request `moment` stands
/// for; an error when it could not judge the pod.
fn judged(
    policy: &Policy,
    pod: &Value,
    moment: Moment,
    snapshot: &NodeSnapshot,
) -> Result<Evaluation, String> {
    let ev = evaluate(policy, &Origin::Stored { pod, moment }, Some(snapshot))
        .map_err(|e| ErrorReport(&e).to_string())?;
    let error = [&ev.mutate_decision, &ev.validate_decision]
        .into_iter()
        .find_map(|d| d.error())
        .map(|e| ErrorReport(e).to_string());
    match error {
        Some(e) => Err(e),
        None => Ok(ev),
    }
}
