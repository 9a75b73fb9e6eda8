//! `runner-fence audit`: where job pods run today, what the policy would do to
//! them, and what runners can reach outside the fence. Collection talks to the
//! API server; the findings come from the same engine the webhook runs and
//! from the pure RBAC analysis in `core::rbac`.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::api::core::v1::{Node, Pod, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::api::{Api, ListParams, ObjectList};
use kube::{Client, Resource};
use serde::Serialize;
use serde_json::{Value, json};

use super::Error;
use crate::core::engine::pod::PodView;
use crate::core::engine::{Evaluation, Operation, Request, evaluate};
use crate::core::nodes::{NodeInfo, NodeSnapshot};
use crate::core::policy::{Policy, ProtectedBy, RuleId};
use crate::core::rbac::{self, Reach, ServiceAccountRef, Who};
use crate::core::render::webhooks::{Gap, LiveWebhook, coverage_gaps};

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
}

/// Something `audit` could not read: a finding of its own, never skipped.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Unreadable {
    /// What could not be listed, e.g. `clusterrolebindings.rbac.authorization.k8s.io`.
    pub what: String,
    /// The API server's status code, when it answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
    /// Its answer, or why there was none.
    pub reason: String,
    /// The check this leaves incomplete.
    pub check: Check,
}

impl std::fmt::Display for Unreadable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot list {}: {}; ", self.what, self.reason)?;
        f.write_str(match self.check {
            Check::RunnerReach if self.what.starts_with("serviceaccounts") => {
                "grants to groups of service accounts are reported without naming their members"
            }
            Check::RunnerReach => {
                "which runner service accounts can create pods outside the fence is not known \
                 (only what the readable objects grant is reported)"
            }
        })?;
        if self.code == Some(403) {
            f.write_str(
                "; grant list on it to whoever runs audit (manifests/extras/audit-rbac.yaml)",
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
    /// Whether the in-tree backstop (`runner-fence-backstop`, Deny) is installed.
    pub backstop: bool,
    /// What the policy covers that the live webhook configurations do not send,
    /// and fail-open webhooks while the policy enforces without the backstop.
    pub coverage_gaps: Vec<Gap>,
    /// Existing pods in the runner namespaces that enforce mode would deny
    /// (judged as if created now), gated or not, bound or pending: delete or
    /// fix them before enforcing, since enforcing does not touch them.
    pub delete_or_fix_before_enforcing: Vec<PodRef>,
    /// GitLab Runner job pods in namespaces the policy does not cover.
    pub job_pods_outside_fence: Vec<OutsidePod>,
    /// Grants that let runner service accounts make pods outside the fence.
    pub runner_reach: Vec<Reach>,
    /// What could not be read, and which check that leaves incomplete.
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
    /// outside it, or something that could not be read.
    pub fn has_violations(&self) -> bool {
        !self.coverage_gaps.is_empty()
            || !self.job_pods_outside_fence.is_empty()
            || !self.runner_reach.is_empty()
            || !self.unreadable.is_empty()
            || self
                .job_pods
                .iter()
                .any(|p| p.on_protected_node || p.would_deny)
    }
}

struct Progress {
    on: bool,
}

impl Progress {
    fn new() -> Self {
        Progress {
            on: std::io::stderr().is_terminal(),
        }
    }
    fn show(&self, what: &str, n: usize) {
        if self.on {
            let mut e = std::io::stderr();
            let _ = write!(e, "\r\x1b[2Klisting {what}: {n}");
            let _ = e.flush();
        }
    }
    fn done(&self) {
        if self.on {
            let _ = write!(std::io::stderr(), "\r\x1b[2K");
        }
    }
}

async fn list_all<K>(api: &Api<K>, what: &'static str, progress: &Progress) -> Result<Vec<K>, Error>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug + Resource,
{
    list_kept(api, what, progress, Some).await
}

/// Lists every page, keeping only what `keep` makes of each object, so that a
/// cluster-wide list holds one page at a time.
async fn list_kept<K, T>(
    api: &Api<K>,
    what: &'static str,
    progress: &Progress,
    mut keep: impl FnMut(K) -> Option<T>,
) -> Result<Vec<T>, Error>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug + Resource,
{
    let mut out = Vec::new();
    let mut seen = 0;
    let mut lp = ListParams::default().limit(PAGE);
    loop {
        let page: ObjectList<K> = api
            .list(&lp)
            .await
            .map_err(|source| Error::List { what, source })?;
        seen += page.items.len();
        out.extend(page.items.into_iter().filter_map(&mut keep));
        progress.show(what, seen);
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(c) => lp = ListParams::default().limit(PAGE).continue_token(&c),
            None => break,
        }
    }
    Ok(out)
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

/// Evaluates collected objects: pure, so it is tested without a cluster.
/// `pods` are the runner namespaces' pods and any others that carry GitLab
/// Runner's job labels or annotations.
pub fn analyze(
    policy: &Policy,
    nodes: &[NodeInfo],
    pods: &[Value],
    webhooks: Vec<(WebhookInfo, LiveWebhook)>,
    backstop: bool,
    access: &Access,
) -> Report {
    let live: Vec<LiveWebhook> = webhooks.iter().map(|(_, l)| l.clone()).collect();
    let webhooks: Vec<WebhookInfo> = webhooks.into_iter().map(|(i, _)| i).collect();
    let snapshot = NodeSnapshot::new(nodes.iter().cloned());
    let protected: Vec<ProtectedNode> = nodes
        .iter()
        .filter_map(|n| protected_node(policy, n))
        .collect();
    let mut job_pods: Vec<JobPod> = pods
        .iter()
        .filter_map(|pod| job_pod(policy, pod, &snapshot, &protected))
        .collect();
    job_pods.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    let mut outside: Vec<OutsidePod> = pods
        .iter()
        .filter_map(|pod| outside_pod(policy, pod, &protected))
        .collect();
    outside.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
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
    Report {
        mode: policy.mode.to_string(),
        protected_nodes: protected,
        nodes_seen: nodes.len(),
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
        backstop,
        coverage_gaps: coverage_gaps(policy, &live, backstop),
        job_pods_outside_fence: outside,
        runner_reach,
        unreadable: access.unreadable.clone(),
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
fn looks_like_job(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> bool {
    let (l, a) = runner_marks(
        meta.labels.iter().flatten().map(|(k, _)| k.as_str()),
        meta.annotations.iter().flatten().map(|(k, _)| k.as_str()),
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

/// A pod in a runner namespace (every one is in scope, whatever its name or
/// labels), where it runs and what the policy would do to it if it were
/// created now; `None` for pods elsewhere.
fn job_pod(
    policy: &Policy,
    pod: &Value,
    snapshot: &NodeSnapshot,
    protected: &[ProtectedNode],
) -> Option<JobPod> {
    let ns = pod
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("");
    if !policy.matching.covers(ns) {
        return None;
    }
    let meta = PodView::from_value(pod).ok()?.metadata;
    let node = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .map(String::from);
    let on_protected = node
        .as_ref()
        .is_some_and(|n| protected.iter().any(|p| p.name == *n));
    let ev = evaluate_as_created(policy, pod, ns, meta.name.as_deref(), snapshot)?;
    // What enforce mode would deny, even when the policy is in audit mode.
    let would_deny = !ev.allowed()
        || !ev.validate_decision.audited().is_empty()
        || !ev.mutate_decision.audited().is_empty();
    let findings = [&ev.mutate_decision, &ev.validate_decision]
        .into_iter()
        .flat_map(|d| {
            let enforced = d.denials().iter().map(|v| (v, true));
            enforced.chain(d.audited().iter().map(|v| (v, false)))
        })
        .map(|(v, enforced)| Finding {
            rule: v.rule,
            enforced,
            message: v.to_string(),
        })
        .collect();
    let mut changes = ev.mutate_decision.changes().to_vec();
    changes.extend(ev.mutate_decision.would_patch().iter().cloned());
    let (state, scheduling_gates) = pod_state(pod);
    Some(JobPod {
        namespace: ns.to_string(),
        name: meta.match_name().to_string(),
        node,
        on_protected_node: on_protected,
        profile: ev.profile.clone(),
        would_deny,
        would_patch: !changes.is_empty(),
        messages: ev.messages(),
        changes,
        uid: pod
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .map(String::from),
        findings,
        state,
        scheduling_gates,
    })
}

/// Mutate then validate the pod as a CREATE now. The scheduler's nodeName and
/// the pod's status are not the job's doing, so they are left out.
fn evaluate_as_created(
    policy: &Policy,
    pod: &Value,
    namespace: &str,
    name: Option<&str>,
    snapshot: &NodeSnapshot,
) -> Option<Evaluation> {
    let mut object = pod.clone();
    if let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) {
        spec.remove("nodeName");
    }
    if let Some(o) = object.as_object_mut() {
        o.remove("status");
    }
    let (view, object_error) = match PodView::from_value(&object) {
        Ok(v) => (Some(v), None),
        Err(e) => (None, Some(e)),
    };
    let request = Request {
        group: "",
        kind: "Pod",
        resource: "pods",
        sub_resource: "",
        operation: Operation::Create,
        namespace,
        name: name.unwrap_or(""),
        object: view.as_ref(),
        old_object: None,
        object_error: object_error.as_ref(),
    };
    evaluate(policy, &request, &object, Some(snapshot)).ok()
}

fn is_ours(name: &str, service: Option<&str>) -> bool {
    name.contains("runner-fence") || service.is_some_and(|s| s.contains("runner-fence"))
}

/// runner-fence's webhooks among one configuration's.
fn ours(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    hooks: Vec<(LiveWebhook, &WebhookClientConfig)>,
) -> Vec<(WebhookInfo, LiveWebhook)> {
    let cname = meta.name.clone().unwrap_or_default();
    let injected = meta
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key("cert-manager.io/inject-ca-from"));
    hooks
        .into_iter()
        .filter(|(w, client)| {
            let svc = client.service.as_ref().map(|s| s.name.as_str());
            is_ours(&cname, svc) || is_ours(&w.name, None)
        })
        .map(|(w, client)| {
            let info = WebhookInfo {
                kind: w.kind.as_str().into(),
                configuration: w.configuration.clone(),
                webhook: w.name.clone(),
                failure_policy: w.failure_policy.clone(),
                ca_bundle: injected || client.ca_bundle.is_some(),
            };
            (info, w)
        })
        .collect()
}

/// Is the backstop's policy there with a binding that denies? (Absent API, no
/// RBAC or no objects all mean "not installed": the check only ever relaxes
/// the fail-open finding when it has positive evidence.)
async fn backstop_installed(client: &Client) -> bool {
    use k8s_openapi::api::admissionregistration::v1::{
        ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
    };
    let name = crate::core::render::admission_policy::NAME;
    let policy = Api::<ValidatingAdmissionPolicy>::all(client.clone())
        .get_opt(name)
        .await;
    let binding = Api::<ValidatingAdmissionPolicyBinding>::all(client.clone())
        .get_opt(name)
        .await;
    matches!((policy, binding), (Ok(Some(_)), Ok(Some(b)))
    if b.spec.as_ref().is_some_and(|s| {
        s.policy_name.as_deref() == Some(name)
            && s.validation_actions.iter().flatten().any(|a| a == "Deny")
    }))
}

/// Lists nodes, pods and webhook configurations and analyzes them.
pub async fn collect(client: Client, policy: &Policy) -> Result<Report, Error> {
    let progress = Progress::new();
    let nodes: Vec<NodeInfo> = list_all(&Api::<Node>::all(client.clone()), "nodes", &progress)
        .await?
        .iter()
        .filter_map(NodeInfo::from_node)
        .collect();
    // One cluster-wide list: the runner namespaces' pods, and job pods the
    // runner put elsewhere (kept page by page, the rest dropped at once).
    let pods: Vec<Value> = list_kept(
        &Api::<Pod>::all(client.clone()),
        "pods",
        &progress,
        |p: Pod| {
            let ns = p.metadata.namespace.as_deref().unwrap_or("");
            if policy.matching.covers(ns) || looks_like_job(&p.metadata) {
                serde_json::to_value(&p).ok()
            } else {
                None
            }
        },
    )
    .await?;
    let mut webhooks = Vec::new();
    let mwcs = list_all(
        &Api::<MutatingWebhookConfiguration>::all(client.clone()),
        "mutating webhook configurations",
        &progress,
    )
    .await?;
    for c in &mwcs {
        webhooks.extend(ours(&c.metadata, LiveWebhook::of_mutating(c)));
    }
    let vwcs = list_all(
        &Api::<ValidatingWebhookConfiguration>::all(client.clone()),
        "validating webhook configurations",
        &progress,
    )
    .await?;
    for c in &vwcs {
        webhooks.extend(ours(&c.metadata, LiveWebhook::of_validating(c)));
    }
    let backstop = backstop_installed(&client).await;
    let access = access(&client, policy, &progress).await;
    progress.done();
    Ok(analyze(policy, &nodes, &pods, webhooks, backstop, &access))
}

/// A failed list as a finding of its own.
fn unreadable(e: Error, check: Check) -> Unreadable {
    let (what, source) = match e {
        Error::List { what, source } => (what.to_string(), source),
        other => {
            return Unreadable {
                what: "objects".into(),
                code: None,
                reason: crate::core::report::Report(&other).to_string(),
                check,
            };
        }
    };
    let (code, reason) = match &source {
        kube::Error::Api(status) => {
            let text = [status.reason.as_str(), status.message.as_str()]
                .into_iter()
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join(": ");
            (Some(status.code), format!("{} {text}", status.code))
        }
        other => (None, crate::core::report::Report(other).to_string()),
    };
    Unreadable {
        what,
        code,
        reason,
        check,
    }
}

/// RBAC objects and the runner namespaces' ServiceAccounts. A list that fails
/// (403: the auditor may not read RBAC) becomes an `unreadable` finding and
/// the check goes on with what could be read.
async fn access(client: &Client, policy: &Policy, progress: &Progress) -> Access {
    let mut a = Access::default();
    let covers = |ns: Option<&str>| policy.matching.covers(ns.unwrap_or(""));
    fn ok<T>(r: Result<Vec<T>, Error>, a: &mut Access) -> Vec<T> {
        r.unwrap_or_else(|e| {
            a.unreadable.push(unreadable(e, Check::RunnerReach));
            Vec::new()
        })
    }
    let r = list_all(
        &Api::<ClusterRole>::all(client.clone()),
        "clusterroles.rbac.authorization.k8s.io",
        progress,
    )
    .await;
    a.cluster_roles = ok(r, &mut a);
    let r = list_all(
        &Api::<ClusterRoleBinding>::all(client.clone()),
        "clusterrolebindings.rbac.authorization.k8s.io",
        progress,
    )
    .await;
    a.cluster_role_bindings = ok(r, &mut a);
    // Grants inside the runner namespaces are fenced: only the others matter.
    let r = list_kept(
        &Api::<Role>::all(client.clone()),
        "roles.rbac.authorization.k8s.io",
        progress,
        |r: Role| (!covers(r.metadata.namespace.as_deref())).then_some(r),
    )
    .await;
    a.roles = ok(r, &mut a);
    let r = list_kept(
        &Api::<RoleBinding>::all(client.clone()),
        "rolebindings.rbac.authorization.k8s.io",
        progress,
        |b: RoleBinding| (!covers(b.metadata.namespace.as_deref())).then_some(b),
    )
    .await;
    a.role_bindings = ok(r, &mut a);
    let r = list_kept(
        &Api::<ServiceAccount>::all(client.clone()),
        "serviceaccounts",
        progress,
        |sa: ServiceAccount| {
            let namespace = sa.metadata.namespace.filter(|ns| covers(Some(ns)))?;
            Some(ServiceAccountRef {
                namespace,
                name: sa.metadata.name?,
            })
        },
    )
    .await;
    a.service_accounts = ok(r, &mut a);
    a
}

fn cut(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let t: String = s.chars().take(n.saturating_sub(1)).collect();
        format!("{t}…")
    }
}

/// A job pod's state in the words of the report.
fn state_text(p: &JobPod) -> String {
    match p.state {
        PodState::Gated => format!("gated ({})", p.scheduling_gates.join(", ")),
        PodState::Pending => "pending".into(),
        PodState::Bound => format!("on {}", p.node.as_deref().unwrap_or("?")),
        PodState::Finished => "finished".into(),
    }
}

/// The report as terminal tables. What to do before enforcing comes first;
/// the new sections never cut the names and reasons they list.
pub fn table(r: &Report) -> String {
    let mut o = String::new();
    if !r.delete_or_fix_before_enforcing.is_empty() {
        o.push_str(&format!(
            "DELETE OR FIX THESE BEFORE ENFORCING ({}): existing pods that enforce mode would deny; enforcing does not remove them\n",
            r.delete_or_fix_before_enforcing.len()
        ));
        for p in r.job_pods.iter().filter(|p| p.would_deny) {
            let why = p.messages.first().map(String::as_str).unwrap_or("");
            // Whole: the names and the reason are what to act on.
            o.push_str(&format!(
                "  {:<72} {:<24} {}\n",
                format!("{}/{}", p.namespace, p.name),
                state_text(p),
                why.trim_start_matches("runner-fence denied the job pod: ")
            ));
        }
        o.push('\n');
    }
    o.push_str(&format!(
        "PROTECTED NODES ({} of {} nodes)\n",
        r.protected_nodes.len(),
        r.nodes_seen
    ));
    o.push_str(&format!("  {:<45} {:<30} {}\n", "NAME", "WHY", "TAINTS"));
    for n in &r.protected_nodes {
        o.push_str(&format!(
            "  {:<45} {:<30} {}\n",
            cut(&n.name, 45),
            cut(&n.reason, 30),
            cut(&n.taints.join(","), 40)
        ));
    }
    let on: Vec<&JobPod> = r.on_protected().collect();
    o.push_str(&format!("\nJOB PODS ON PROTECTED NODES ({})\n", on.len()));
    for p in &on {
        o.push_str(&format!(
            "  {}/{} on {}\n",
            p.namespace,
            cut(&p.name, 60),
            p.node.as_deref().unwrap_or("?")
        ));
    }
    o.push_str(&format!(
        "\nJOB PODS ({}; policy mode {})\n  {:<16} {:<52} {:<13} {:<6} {:<6} {}\n",
        r.job_pods.len(),
        r.mode,
        "NAMESPACE",
        "POD",
        "PROFILE",
        "DENY",
        "PATCH",
        "WHY"
    ));
    for p in &r.job_pods {
        let why = p
            .messages
            .first()
            .cloned()
            .or_else(|| p.changes.first().cloned())
            .unwrap_or_default();
        o.push_str(&format!(
            "  {:<16} {:<52} {:<13} {:<6} {:<6} {}\n",
            cut(&p.namespace, 16),
            cut(&p.name, 52),
            cut(p.profile.as_deref().unwrap_or(""), 13),
            if p.would_deny { "yes" } else { "no" },
            if p.would_patch { "yes" } else { "no" },
            cut(
                why.trim_start_matches("runner-fence denied the job pod: "),
                70
            )
        ));
    }
    o.push_str(&format!("\nRUNNER-FENCE WEBHOOKS ({})\n", r.webhooks.len()));
    for w in &r.webhooks {
        o.push_str(&format!(
            "  {:<11} {:<22} {:<32} failurePolicy={:<6} caBundle={}\n",
            w.kind,
            cut(&w.configuration, 22),
            cut(&w.webhook, 32),
            w.failure_policy,
            if w.ca_bundle { "set" } else { "MISSING" }
        ));
    }
    if r.webhooks.is_empty() {
        o.push_str("  none found: job pods are not guarded\n");
    }
    o.push_str(&format!(
        "\nIN-TREE BACKSTOP (runner-fence-backstop): {}\n",
        if r.backstop {
            "installed, denying"
        } else {
            "not installed"
        }
    ));
    o.push_str(&format!(
        "\nCOVERAGE GAPS ({}): what the policy covers that the cluster does not send to runner-fence\n",
        r.coverage_gaps.len()
    ));
    for g in &r.coverage_gaps {
        let scope = [g.namespace.as_str(), g.request.as_str()]
            .iter()
            .filter(|s| !s.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join(" ");
        o.push_str(&format!(
            "  {:<11} {:<40} {}\n",
            g.webhook.as_str(),
            if scope.is_empty() {
                "-".to_string()
            } else {
                cut(&scope, 40)
            },
            g.reason
        ));
    }
    o.push_str(&format!(
        "\nJOB PODS OUTSIDE THE FENCE ({}): GitLab Runner job pods in namespaces the policy does not cover\n",
        r.job_pods_outside_fence.len()
    ));
    for p in &r.job_pods_outside_fence {
        let node = match (&p.node, p.on_protected_node) {
            (Some(n), true) => format!("on protected node {n}"),
            (Some(n), false) => format!("on {n}"),
            (None, _) => "not scheduled".into(),
        };
        let from = [
            p.runner.as_ref().map(|r| format!("runner {r}")),
            p.job_id.as_ref().map(|j| format!("job {j}")),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(", ");
        o.push_str(&format!(
            "  {:<72} {:<36} {}\n",
            format!("{}/{}", p.namespace, p.name),
            cut(&node, 36),
            from
        ));
    }
    if !r.job_pods_outside_fence.is_empty() {
        o.push_str(
            "  add their namespaces to match.namespaces (`ci-job-*` for namespace_per_job)\n",
        );
    }
    o.push_str(&format!(
        "\nRUNNER SERVICE ACCOUNTS REACHING OUTSIDE THE FENCE ({})\n",
        r.runner_reach.len()
    ));
    for x in &r.runner_reach {
        o.push_str(&format!("  {x}\n"));
    }
    if !r.unreadable.is_empty() {
        o.push_str(&format!(
            "\nUNREADABLE ({}): checks audit could not complete\n",
            r.unreadable.len()
        ));
        for u in &r.unreadable {
            o.push_str(&format!("  {u}\n"));
        }
    }
    o
}

/// The PolicyReport rule of a job pod outside the fence.
pub const OUTSIDE_RULE: &str = "job-pod-outside-fence";
/// The PolicyReport rule of a runner service account reaching outside the fence.
pub const REACH_RULE: &str = "runner-reach";

/// The report as `wgpolicyk8s.io/v1alpha2` PolicyReports, the format Kyverno and
/// Kubewarden write and Policy Reporter reads: one per namespace with results,
/// one result per pod and rule in the runner namespaces (`fail` for what
/// enforce mode denies or a pod already on a protected node, `warn` for what
/// audit mode reports, `pass` otherwise), a `fail` per job pod outside the
/// fence (in its own namespace) and per runner service account that can make
/// pods outside it (in the account's namespace). Unreadable lists name no
/// object to report on: they are in the text and JSON reports and the exit code.
pub fn policy_reports(r: &Report, policy: &str, timestamp_seconds: i64) -> Vec<Value> {
    let mut by_ns: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
    let result = |rule: &str, result: &str, severity: &str, message: String, resource: Value| {
        json!({
            "policy": policy,
            "rule": rule,
            "result": result,
            "severity": severity,
            "category": "runner-fence",
            "source": "runner-fence",
            "scored": true,
            "message": if message.is_empty() { "ok".to_string() } else { message },
            "timestamp": {"seconds": timestamp_seconds, "nanos": 0},
            "resources": [resource],
        })
    };
    let pod_resource = |ns: &str, name: &str, uid: Option<&String>| {
        let mut resource =
            json!({"apiVersion": "v1", "kind": "Pod", "name": name, "namespace": ns});
        if let Some(uid) = uid {
            resource["uid"] = json!(uid);
        }
        resource
    };
    for p in &r.job_pods {
        let ns = p.namespace.as_str();
        for rule in RuleId::ALL {
            let mut messages: Vec<&str> = Vec::new();
            let mut fail = false;
            let mut warn = false;
            if rule == RuleId::ProtectedNodes && p.on_protected_node {
                fail = true;
            }
            for f in p.findings.iter().filter(|f| f.rule == rule) {
                messages.push(&f.message);
                if f.enforced {
                    fail = true;
                } else {
                    warn = true;
                }
            }
            let outcome = if fail {
                "fail"
            } else if warn {
                "warn"
            } else {
                "pass"
            };
            let on_node = p
                .node
                .as_deref()
                .filter(|_| rule == RuleId::ProtectedNodes && p.on_protected_node)
                .map(|n| format!("runs on protected node {n}"));
            let message = on_node
                .into_iter()
                .chain(messages.iter().map(|m| m.to_string()))
                .collect::<Vec<_>>()
                .join("; ");
            let severity = match rule {
                RuleId::ProtectedNodes | RuleId::NodeName | RuleId::Placement => "high",
                RuleId::FargateCompat => "medium",
                RuleId::Resources => "low",
            };
            let resource = pod_resource(ns, &p.name, p.uid.as_ref());
            by_ns.entry(ns).or_default().push(result(
                rule.as_str(),
                outcome,
                severity,
                message,
                resource,
            ));
        }
    }
    for p in &r.job_pods_outside_fence {
        let node = match (&p.node, p.on_protected_node) {
            (Some(n), true) => format!(", runs on protected node {n}"),
            (Some(n), false) => format!(", runs on {n}"),
            (None, _) => String::new(),
        };
        let message = format!(
            "GitLab Runner job pod in namespace {}, which the policy does not cover{node}",
            p.namespace
        );
        let resource = pod_resource(&p.namespace, &p.name, None);
        by_ns.entry(&p.namespace).or_default().push(result(
            OUTSIDE_RULE,
            "fail",
            "high",
            message,
            resource,
        ));
    }
    for x in &r.runner_reach {
        let accounts: Vec<&ServiceAccountRef> = match &x.who {
            Who::ServiceAccount(sa) => vec![sa],
            Who::Group { members, .. } => members.iter().collect(),
        };
        for sa in accounts {
            let resource = json!({"apiVersion": "v1", "kind": "ServiceAccount",
                "name": sa.name, "namespace": sa.namespace});
            by_ns.entry(&sa.namespace).or_default().push(result(
                REACH_RULE,
                "fail",
                "high",
                x.to_string(),
                resource,
            ));
        }
    }
    by_ns
        .into_iter()
        .map(|(ns, results)| {
            let mut summary: BTreeMap<&str, u64> = ["pass", "fail", "warn", "error", "skip"]
                .map(|k| (k, 0))
                .into();
            for x in &results {
                if let Some(n) = x["result"].as_str().and_then(|k| summary.get_mut(k)) {
                    *n += 1;
                }
            }
            json!({
                "apiVersion": "wgpolicyk8s.io/v1alpha2",
                "kind": "PolicyReport",
                "metadata": {
                    "name": "runner-fence",
                    "namespace": ns,
                    "labels": {"app.kubernetes.io/managed-by": "runner-fence"},
                },
                "summary": summary,
                "results": results,
            })
        })
        .collect()
}

/// Writes PolicyReports to the cluster (server-side apply, field manager
/// `runner-fence`); needs the PolicyReport CRD and create/patch on policyreports.
pub async fn apply_policy_reports(client: Client, reports: &[Value]) -> Result<usize, Error> {
    use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
    let ar = ApiResource {
        group: "wgpolicyk8s.io".into(),
        version: "v1alpha2".into(),
        api_version: "wgpolicyk8s.io/v1alpha2".into(),
        kind: "PolicyReport".into(),
        plural: "policyreports".into(),
    };
    let pp = PatchParams::apply("runner-fence").force();
    for r in reports {
        let ns = r["metadata"]["namespace"].as_str().unwrap_or("default");
        let name = r["metadata"]["name"].as_str().unwrap_or("runner-fence");
        Api::<DynamicObject>::namespaced_with(client.clone(), ns, &ar)
            .patch(name, &pp, &Patch::Apply(r))
            .await
            .map_err(|source| Error::WriteReport {
                namespace: ns.to_string(),
                name: name.to_string(),
                source,
            })?;
    }
    Ok(reports.len())
}
