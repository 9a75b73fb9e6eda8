//! Validation rules (SPEC §4) over the final pod.

use std::fmt;

use super::pod::{PodView, TERMS_PATH, fields_match, term_node_names, term_requirements};
use super::selector::{implies, matches_labels, satisfiable};
use super::tolerations::Tol;
use crate::nodes::{NodeInfo, NodeSnapshot};
use crate::policy::{Operator, Policy, Profile, Requirement, ResourceName, RuleId};
use crate::quantity::Quantity;

/// One broken rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The rule id.
    pub rule: RuleId,
    /// Field path, e.g. `spec.tolerations[2]`.
    pub path: String,
    /// What is offending, without positions: stable when a list is reordered,
    /// so an UPDATE can tell old violations from new ones.
    pub subject: String,
    /// Full message: `rule: path what; fix`.
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

struct Out(Vec<Violation>);

impl Out {
    fn push(
        &mut self,
        rule: RuleId,
        path: impl Into<String>,
        subject: String,
        what_and_fix: String,
    ) {
        let path = path.into();
        self.0.push(Violation {
            rule,
            message: format!("{rule}: {path} {what_and_fix}"),
            path,
            subject,
        });
    }
}

/// The profile a pod resolved to.
pub enum ProfileRef<'a> {
    /// A defined profile.
    Known(&'a str, &'a Profile),
    /// The label named a profile the policy does not define.
    Unknown(&'a str),
}

/// Runs every rule on a pod.
pub fn validate_pod(
    policy: &Policy,
    profile: &ProfileRef<'_>,
    pod: &PodView,
    nodes: Option<&NodeSnapshot>,
) -> Vec<Violation> {
    let mut out = Out(Vec::new());
    protected_nodes(policy, pod, nodes, &mut out);
    node_name(policy, pod, &mut out);
    match profile {
        ProfileRef::Known(name, prof) => {
            placement(name, prof, pod, &mut out);
            if prof.fargate {
                fargate_compat(policy, pod, &mut out);
            }
        }
        ProfileRef::Unknown(name) => {
            out.push(
                RuleId::Placement,
                format!("metadata.labels[{}]", policy.placement.profile_label),
                format!("unknown profile {name}"),
                format!(
                    "names unknown profile {name:?}; known profiles: {}",
                    policy.known_profiles()
                ),
            );
        }
    }
    resources(policy, pod, &mut out);
    out.0
}

/// Validates a `pods/binding` target node.
pub fn validate_binding(
    policy: &Policy,
    node: &str,
    nodes: Option<&NodeSnapshot>,
) -> Vec<Violation> {
    let mut out = Out(Vec::new());
    if let Some(why) = protected_node(policy, node, nodes) {
        out.push(
            RuleId::ProtectedNodes,
            "target.name",
            format!("binding to {node}"),
            format!("binds the job pod to protected GitLab node {node} ({why}); job pods must run on runner nodes or Fargate"),
        );
    }
    out.0
}

/// Why a node is protected, if it is.
fn protected_node(policy: &Policy, name: &str, nodes: Option<&NodeSnapshot>) -> Option<String> {
    let pn = &policy.protected_nodes;
    if pn.names.iter().any(|n| n == name) {
        return Some("listed in protectedNodes.names".into());
    }
    let node = nodes?.get(name)?;
    labels_protected(policy, node).then(|| "its labels match protectedNodes".into())
}

fn labels_protected(policy: &Policy, node: &NodeInfo) -> bool {
    let sel = policy.protected_nodes.label_requirements();
    !sel.is_empty() && sel.iter().all(|r| matches_labels(&node.labels, r))
}

fn selector_text(reqs: &[Requirement]) -> String {
    reqs.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The pod's alternatives: nodeSelector AND each live term, or the nodeSelector alone.
/// Each is (path, requirements, term index).
fn alternatives(pod: &PodView) -> Vec<(String, Vec<Requirement>, Option<usize>)> {
    let ns = pod.node_selector();
    let terms = pod.required_terms();
    if terms.is_empty() {
        let path = if ns.is_empty() {
            "spec"
        } else {
            "spec.nodeSelector"
        };
        return vec![(path.to_string(), ns, None)];
    }
    terms
        .iter()
        .enumerate()
        .filter_map(|(i, t)| {
            let mut reqs = ns.clone();
            reqs.extend(term_requirements(t)?);
            Some((format!("{TERMS_PATH}[{i}]"), reqs, Some(i)))
        })
        .collect()
}

fn protected_nodes(policy: &Policy, pod: &PodView, nodes: Option<&NodeSnapshot>, out: &mut Out) {
    let before = out.0.len();
    let protected = policy.protected_nodes.label_requirements();
    let alts = alternatives(pod);
    // Labels: could a node carrying the protected labels meet any alternative?
    if !protected.is_empty() {
        let sel = selector_text(&protected);
        for (path, reqs, _) in &alts {
            if satisfiable(reqs.iter().chain(&protected)).is_ok() {
                let what = if reqs.is_empty() {
                    "has no nodeSelector or required node affinity, so nothing keeps the pod off"
                        .to_string()
                } else {
                    format!("({}) does not exclude", selector_text(reqs))
                };
                out.push(
                    RuleId::ProtectedNodes,
                    path.clone(),
                    format!("labels {} reach {sel}", selector_text(reqs)),
                    format!(
                        "{what} protected GitLab nodes ({sel}); require a label those nodes lack (the mutating webhook adds the profile's), and remove any KUBERNETES_NODE_SELECTOR_* override"
                    ),
                );
            }
        }
    }
    // Names: nodeName and matchFields.
    let spec = pod.spec();
    if let Some(node) = spec.node_name.as_deref().filter(|n| !n.is_empty())
        && let Some(why) = protected_node(policy, node, nodes)
    {
        out.push(
            RuleId::ProtectedNodes,
            "spec.nodeName",
            format!("nodeName {node}"),
            format!("names protected GitLab node {node} ({why}); remove spec.nodeName"),
        );
    }
    for (i, term) in pod.required_terms().iter().enumerate() {
        for (j, node) in term_node_names(term) {
            if let Some(why) = protected_node(policy, node, nodes) {
                out.push(
                    RuleId::ProtectedNodes,
                    format!("{TERMS_PATH}[{i}].matchFields[{j}]"),
                    format!("matchFields {node}"),
                    format!(
                        "names protected GitLab node {node} ({why}); remove the matchFields entry"
                    ),
                );
            }
        }
    }
    // Taints: tolerations of protected taints.
    for (i, t) in spec.tolerations.iter().flatten().enumerate() {
        let tol = Tol::of(t);
        if let Some(taint) = policy
            .protected_nodes
            .taints
            .iter()
            .find(|pt| tol.tolerates_spec(pt))
        {
            out.push(
                RuleId::ProtectedNodes,
                format!("spec.tolerations[{i}]"),
                format!("toleration {}", tol.describe()),
                format!(
                    "tolerates {taint} of protected GitLab nodes{}; remove the KUBERNETES_NODE_TOLERATIONS_* override",
                    if tol.exists { format!(" (it tolerates {})", tol.describe()) } else { String::new() }
                ),
            );
        }
    }
    // Live: a real protected node the pod could be scheduled on. Only when
    // the static checks found nothing, since they already explain the denial.
    let Some(nodes) = nodes else { return };
    if out.0.len() > before {
        return;
    }
    let tols: Vec<Tol> = spec.tolerations.iter().flatten().map(Tol::of).collect();
    let sel = policy.protected_nodes.label_requirements();
    let is_protected =
        |n: &NodeInfo| !sel.is_empty() && sel.iter().all(|r| matches_labels(&n.labels, r));
    // Protected nodes are few: reach them through the label index when the
    // selector has an `In`, and through the names list.
    let by_label: Vec<&NodeInfo> = match sel.iter().find(|r| r.operator == Operator::In) {
        Some(r) => r
            .values
            .iter()
            .flat_map(|v| nodes.with_label(&r.key, v))
            .filter(|n| is_protected(n))
            .collect(),
        None => nodes.iter().filter(|n| is_protected(n)).collect(),
    };
    let by_name = policy
        .protected_nodes
        .names
        .iter()
        .filter_map(|n| nodes.get(n));
    let mut reachable: Vec<&str> = by_label
        .into_iter()
        .chain(by_name)
        .filter(|n| schedulable_on(pod, &alts, &tols, n))
        .map(|n| n.name.as_str())
        .collect();
    reachable.sort_unstable();
    reachable.dedup();
    if reachable.is_empty() {
        return;
    }
    let shown: Vec<&str> = reachable.iter().take(3).copied().collect();
    let more = reachable.len().saturating_sub(shown.len());
    out.push(
        RuleId::ProtectedNodes,
        "spec",
        format!("schedulable on {}", reachable.join(",")),
        format!(
            "can be scheduled on protected GitLab node{} {}{} (labels match and taints are tolerated); require a label those nodes lack",
            if reachable.len() > 1 { "s" } else { "" },
            shown.join(", "),
            if more > 0 { format!(" and {more} more") } else { String::new() }
        ),
    );
}

/// Would the scheduler accept this node for the pod (labels, fields, NoSchedule/NoExecute taints)?
fn schedulable_on(
    pod: &PodView,
    alts: &[(String, Vec<Requirement>, Option<usize>)],
    tols: &[Tol],
    node: &NodeInfo,
) -> bool {
    let terms = pod.required_terms();
    let labels_ok = alts.iter().any(|(_, reqs, term)| {
        reqs.iter().all(|r| matches_labels(&node.labels, r))
            && term.is_none_or(|i| terms.get(i).is_some_and(|t| fields_match(t, &node.name)))
    });
    let taints_ok = node
        .taints
        .iter()
        .filter(|t| t.effect != "PreferNoSchedule")
        .all(|t| tols.iter().any(|tol| tol.tolerates(t)));
    labels_ok && taints_ok
}

fn node_name(policy: &Policy, pod: &PodView, out: &mut Out) {
    if policy.allow_node_name {
        return;
    }
    if let Some(node) = pod.spec().node_name.as_deref().filter(|n| !n.is_empty()) {
        out.push(
            RuleId::NodeName,
            "spec.nodeName",
            format!("nodeName {node}"),
            format!("is set to {node}; job pods must be placed by the scheduler, remove spec.nodeName (or set allowNodeName: true in the policy)"),
        );
    }
}

fn placement(name: &str, prof: &Profile, pod: &PodView, out: &mut Out) {
    let required = &prof.required_node_labels;
    if required.is_empty() {
        return;
    }
    let req_text = selector_text(required);
    let alts = alternatives(pod);
    let ns = pod.node_selector();
    // Constraints that can never be met together with the profile's.
    let live: Vec<_> = alts
        .iter()
        .filter(|(_, reqs, _)| satisfiable(reqs.iter().chain(required)).is_ok())
        .collect();
    let Some((path, reqs, _)) = alts.first() else {
        // Every required term is empty or uses an unknown operator: Kubernetes
        // matches no node with such terms.
        out.push(
            RuleId::Placement,
            TERMS_PATH,
            "no usable nodeSelectorTerm".into(),
            format!(
                "has no term that can match any node, so the pod could never be scheduled; give every term matchExpressions requiring {req_text}"
            ),
        );
        return;
    };
    if live.is_empty() {
        let conflict = satisfiable(reqs.iter().chain(required))
            .err()
            .unwrap_or_default();
        let (path, culprit) = match ns.iter().find(|r| r.key == conflict) {
            Some(r) => ("spec.nodeSelector".to_string(), r.to_string()),
            None => (
                path.clone(),
                selector_text(
                    &reqs
                        .iter()
                        .filter(|r| r.key == conflict)
                        .cloned()
                        .collect::<Vec<_>>(),
                ),
            ),
        };
        out.push(
            RuleId::Placement,
            path,
            format!("conflict {culprit}"),
            format!(
                "{culprit} conflicts with profile {name} (requires {req_text}), so the pod could never be scheduled; remove the KUBERNETES_NODE_SELECTOR_* override or choose another profile"
            ),
        );
        return;
    }
    for (path, reqs, _) in &alts {
        for r in required {
            if !implies(reqs, r) {
                out.push(
                    RuleId::Placement,
                    path.clone(),
                    format!("missing {r}"),
                    format!(
                        "does not require {r} of profile {name}; register the runner-fence mutating webhook or add the requirement to the runner's affinity"
                    ),
                );
            }
        }
    }
}

fn fargate_compat(policy: &Policy, pod: &PodView, out: &mut Out) {
    let alt = policy
        .placement
        .profiles
        .iter()
        .find(|(_, p)| !p.fargate)
        .map(|(n, _)| format!(" or use the {n} profile"))
        .unwrap_or_default();
    let spec = pod.spec();
    let eph = spec
        .ephemeral_containers
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, c)| (format!("spec.ephemeralContainers[{i}]"), c));
    let all = pod
        .containers()
        .map(|(p, c, _)| (p, c))
        .chain(eph)
        .map(|(p, c)| {
            (
                p,
                c.name.as_str(),
                c.security_context.as_ref().and_then(|s| s.privileged),
            )
        });
    for (path, cname, privileged) in all {
        if privileged == Some(true) {
            out.push(
                RuleId::FargateCompat,
                format!("{path}.securityContext.privileged"),
                format!("privileged {cname}"),
                format!("({cname}) is privileged and Fargate cannot run privileged containers; build images with a rootless builder (kaniko, buildah){alt}"),
            );
        }
    }
    for (flag, v) in [
        ("hostNetwork", spec.host_network),
        ("hostPID", spec.host_pid),
        ("hostIPC", spec.host_ipc),
    ] {
        if v == Some(true) {
            out.push(
                RuleId::FargateCompat,
                format!("spec.{flag}"),
                flag.to_string(),
                format!("is true and Fargate cannot run pods in host namespaces; remove it{alt}"),
            );
        }
    }
    for (path, c, _) in pod.containers() {
        for (j, port) in c.ports.iter().flatten().enumerate() {
            if port.host_port.is_some_and(|p| p != 0) {
                out.push(
                    RuleId::FargateCompat,
                    format!("{path}.ports[{j}].hostPort"),
                    format!("hostPort {} {}", c.name, port.container_port),
                    format!("({}) uses a hostPort and Fargate cannot run them; use a Service instead{alt}", c.name),
                );
            }
        }
    }
    for (i, v) in spec.volumes.iter().flatten().enumerate() {
        if v.host_path.is_some() {
            out.push(
                RuleId::FargateCompat,
                format!("spec.volumes[{i}].hostPath"),
                format!("hostPath volume {}", v.name),
                format!("(volume {}) is a hostPath volume and Fargate cannot run them; use an emptyDir{alt}", v.name),
            );
        }
    }
}

fn resources(policy: &Policy, pod: &PodView, out: &mut Out) {
    for (path, c, _) in pod.containers() {
        let Some(res) = &c.resources else { continue };
        let requests = res.requests.as_ref();
        if let Some(reqs) = requests {
            for r in ResourceName::ALL {
                let name = r.as_str();
                let (Some(max), Some(Ok(have))) = (
                    policy.max_request(r),
                    reqs.get(name).map(|q| Quantity::parse(&q.0)),
                ) else {
                    continue;
                };
                if have > *max {
                    out.push(
                        RuleId::Resources,
                        format!("{path}.resources.requests.{name}"),
                        format!("{} request {name} {have}", c.name),
                        format!(
                            "({}) requests {name} {have}, above the maximum {max}; lower the job's KUBERNETES_*_{}_REQUEST or the runner's request",
                            c.name,
                            name.to_uppercase()
                        ),
                    );
                }
            }
        }
        let (Some(reqs), Some(limits)) = (requests, res.limits.as_ref()) else {
            continue;
        };
        for (name, limit) in limits {
            let (Some(Ok(req)), Ok(lim)) = (
                reqs.get(name).map(|q| Quantity::parse(&q.0)),
                Quantity::parse(&limit.0),
            ) else {
                continue;
            };
            if lim < req {
                out.push(
                    RuleId::Resources,
                    format!("{path}.resources.limits.{name}"),
                    format!("{} limit {name} {lim} below request {req}", c.name),
                    format!("({}) limit {name} {lim} is below its request {req}; raise the limit or lower the request", c.name),
                );
            }
        }
    }
}
