//! `runner-fence audit`: where job pods run today, and what the policy would
//! do to them. Collection talks to the API server; the findings come from the
//! same engine the webhook runs.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams, ObjectList};
use kube::{Client, Resource};
use serde::Serialize;
use serde_json::{Value, json};

use super::Error;
use crate::core::engine::pod::PodView;
use crate::core::engine::{Evaluation, Operation, Request, evaluate};
use crate::core::nodes::{NodeInfo, NodeSnapshot};
use crate::core::policy::{Policy, ProtectedBy, RuleId};
use crate::core::render::webhooks::{Gap, LiveWebhook, coverage_gaps};

const PAGE: u32 = 500;

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
}

impl Report {
    /// Job pods on protected nodes: what runner-fence exists to prevent.
    pub fn on_protected(&self) -> impl Iterator<Item = &JobPod> {
        self.job_pods.iter().filter(|p| p.on_protected_node)
    }

    /// Whether anything is wrong: a job pod on a protected node, one the policy
    /// would deny, or a request the cluster does not send to runner-fence.
    pub fn has_violations(&self) -> bool {
        !self.coverage_gaps.is_empty()
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
    let mut out = Vec::new();
    let mut lp = ListParams::default().limit(PAGE);
    loop {
        let page: ObjectList<K> = api
            .list(&lp)
            .await
            .map_err(|source| Error::List { what, source })?;
        out.extend(page.items);
        progress.show(what, out.len());
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
pub fn analyze(
    policy: &Policy,
    nodes: &[NodeInfo],
    pods: &[Value],
    webhooks: Vec<(WebhookInfo, LiveWebhook)>,
    backstop: bool,
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
    Report {
        mode: policy.mode.to_string(),
        protected_nodes: protected,
        nodes_seen: nodes.len(),
        job_pods,
        webhooks,
        backstop,
        coverage_gaps: coverage_gaps(policy, &live, backstop),
    }
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
    // Exact namespaces are listed one by one; prefixes need a cluster-wide list.
    let exact: Vec<&String> = policy
        .matching
        .namespaces
        .iter()
        .filter(|n| !n.ends_with('*'))
        .collect();
    let mut pods: Vec<Pod> = Vec::new();
    if exact.len() == policy.matching.namespaces.len() {
        for ns in exact {
            pods.extend(
                list_all(
                    &Api::<Pod>::namespaced(client.clone(), ns),
                    "pods",
                    &progress,
                )
                .await?,
            );
        }
    } else {
        pods = list_all(&Api::<Pod>::all(client.clone()), "pods", &progress).await?;
    }
    let pods: Vec<Value> = pods
        .iter()
        .filter_map(|p| serde_json::to_value(p).ok())
        .collect();
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
    progress.done();
    Ok(analyze(policy, &nodes, &pods, webhooks, backstop))
}

fn cut(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let t: String = s.chars().take(n.saturating_sub(1)).collect();
        format!("{t}…")
    }
}

/// The report as terminal tables.
pub fn table(r: &Report) -> String {
    let mut o = String::new();
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
    o
}

/// The report as `wgpolicyk8s.io/v1alpha2` PolicyReports, the format Kyverno and
/// Kubewarden write and Policy Reporter reads: one per runner namespace, one
/// result per pod and rule (`fail` for what enforce mode denies or a pod already
/// on a protected node, `warn` for what audit mode reports, `pass` otherwise).
pub fn policy_reports(r: &Report, policy: &str, timestamp_seconds: i64) -> Vec<Value> {
    let mut by_ns: BTreeMap<&str, Vec<&JobPod>> = BTreeMap::new();
    for p in &r.job_pods {
        by_ns.entry(p.namespace.as_str()).or_default().push(p);
    }
    by_ns
        .into_iter()
        .map(|(ns, pods)| {
            let mut results = Vec::new();
            let mut summary: BTreeMap<&str, u64> = ["pass", "fail", "warn", "error", "skip"]
                .map(|k| (k, 0))
                .into();
            for p in pods {
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
                    let result = if fail {
                        "fail"
                    } else if warn {
                        "warn"
                    } else {
                        "pass"
                    };
                    *summary.entry(result).or_default() += 1;
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
                    let mut resource =
                        json!({"apiVersion": "v1", "kind": "Pod", "name": p.name, "namespace": ns});
                    if let Some(uid) = &p.uid {
                        resource["uid"] = json!(uid);
                    }
                    results.push(json!({
                        "policy": policy,
                        "rule": rule.as_str(),
                        "result": result,
                        "severity": match rule {
                            RuleId::ProtectedNodes | RuleId::NodeName | RuleId::Placement => "high",
                            RuleId::FargateCompat => "medium",
                            RuleId::Resources => "low",
                        },
                        "category": "runner-fence",
                        "source": "runner-fence",
                        "scored": true,
                        "message": if message.is_empty() { "ok".to_string() } else { message },
                        "timestamp": {"seconds": timestamp_seconds, "nanos": 0},
                        "resources": [resource],
                    }));
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
