//! Validation rules (SPEC §4) over the final pod.

use std::fmt;

use super::pod::{PodView, TERMS_PATH, fields_match, term_node_names, term_requirements};
use crate::core::nodes::{NodeInfo, NodeSnapshot};
use crate::core::selector::{Conflict, ReqRef, implies, matches_labels, satisfiable};
use crate::core::tolerations::Tol;
use k8s_openapi::api::core::v1::ResourceRequirements;

use crate::core::policy::{
    Operator, Policy, Profile, ProtectedBy, Requirement, ResourceName, RuleId, TaintSpec,
};
use crate::core::quantity::Quantity;

/// One broken rule: which rule, where, and the typed cause. The wording is
/// produced only when it is shown ([`fmt::Display`]), so rewording a message
/// never changes a decision (UPDATE compares violations as data).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The rule id.
    pub rule: RuleId,
    /// Field path, e.g. `spec.tolerations[2]`.
    pub path: String,
    /// What is wrong, as data.
    pub cause: Cause,
}

/// Why a container or pod cannot run on Fargate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FargateIssue {
    /// A privileged container (ephemeral ones included).
    Privileged {
        /// Container name.
        container: String,
    },
    /// `hostNetwork`, `hostPID` or `hostIPC`.
    HostNamespace {
        /// The spec field.
        flag: &'static str,
    },
    /// A `hostPort`.
    HostPort {
        /// Container name.
        container: String,
        /// The container port.
        port: i32,
    },
    /// A `hostPath` volume.
    HostPath {
        /// Volume name.
        volume: String,
    },
}

/// The typed cause of a violation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    /// The pod's constraints (empty: none) can be met by a node with the protected labels.
    ReachesProtectedLabels {
        /// The alternative's requirements.
        constraints: Vec<Requirement>,
        /// The protected nodes' label selector.
        protected: Vec<Requirement>,
    },
    /// nodeName, a matchFields entry or a binding names a protected node.
    NamesProtectedNode {
        /// The node.
        node: String,
        /// Why it is protected.
        by: ProtectedBy,
        /// What names it.
        via: NodeRef,
    },
    /// A toleration tolerates a protected taint.
    ToleratesProtectedTaint {
        /// The toleration, described.
        toleration: String,
        /// Whether it is an `Exists` toleration (wider than it looks).
        exists: bool,
        /// The protected taint.
        taint: TaintSpec,
        /// With the node cache: the protected nodes that carry the taint now
        /// (sorted, maybe none); without it, `None`.
        carriers: Option<Vec<String>>,
    },
    /// Real protected nodes whose labels match and whose taints are tolerated.
    SchedulableOnProtected {
        /// Node names, sorted.
        nodes: Vec<String>,
    },
    /// Ephemeral containers added to a pod that runs on a protected node.
    EphemeralOnProtectedNode {
        /// The pod's node.
        node: String,
        /// Why it is protected.
        by: ProtectedBy,
    },
    /// `spec.nodeName` is set.
    NodeNameSet {
        /// The node.
        node: String,
    },
    /// The profile label names a profile the policy does not define.
    UnknownProfile {
        /// The name asked for.
        name: String,
        /// Profiles the namespace may use.
        allowed: Vec<String>,
    },
    /// The profile exists but this namespace may not use it.
    ProfileNotAllowed {
        /// The profile.
        name: String,
        /// How the pod got it (the label, or the profile's selector).
        chosen: Chosen,
        /// The pod's namespace.
        namespace: String,
        /// Profiles the namespace may use.
        allowed: Vec<String>,
    },
    /// No required nodeSelectorTerm can match any node.
    NoUsableTerm {
        /// The profile's requirements.
        required: Vec<Requirement>,
    },
    /// The pod's own constraints can be met by no node at all.
    Unsatisfiable {
        /// The contradicting requirements (all on one key).
        culprit: Vec<Requirement>,
    },
    /// A constraint contradicts the profile's requirements.
    ConflictsWithProfile {
        /// The offending requirements.
        culprit: Vec<Requirement>,
        /// Profile name.
        profile: String,
        /// The profile's requirements.
        required: Vec<Requirement>,
    },
    /// An alternative lacks one of the profile's requirements.
    MissingRequirement {
        /// The requirement.
        requirement: Requirement,
        /// Profile name.
        profile: String,
    },
    /// Something Fargate cannot run on a pod EKS sends to Fargate.
    Fargate {
        /// What.
        issue: FargateIssue,
        /// A non-Fargate profile to suggest, if any.
        alternative: Option<String>,
    },
    /// A request above `resources.max`.
    RequestAboveMax {
        /// Container name; `None` for the pod-level `spec.resources`.
        container: Option<String>,
        /// cpu or memory.
        resource: &'static str,
        /// The request.
        request: Quantity,
        /// The cap.
        max: Quantity,
    },
    /// A limit below its request.
    LimitBelowRequest {
        /// Container name; `None` for the pod-level `spec.resources`.
        container: Option<String>,
        /// Resource name.
        resource: String,
        /// The limit.
        limit: Quantity,
        /// The request.
        request: Quantity,
    },
}

/// What names a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeRef {
    /// `spec.nodeName`
    NodeName,
    /// A `matchFields` entry.
    MatchFields,
    /// A `pods/binding` or `bindings` target.
    Binding,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} ", self.rule, self.path)?;
        match &self.cause {
            Cause::ReachesProtectedLabels {
                constraints,
                protected,
            } => {
                let sel = selector_text(protected);
                if constraints.is_empty() {
                    write!(
                        f,
                        "has no nodeSelector or required node affinity, so nothing keeps the pod off"
                    )?;
                } else {
                    write!(f, "({}) does not exclude", selector_text(constraints))?;
                }
                write!(
                    f,
                    " protected GitLab nodes ({sel}); require a label those nodes lack (the mutating webhook adds the profile's), and remove any KUBERNETES_NODE_SELECTOR_* override"
                )
            }
            Cause::NamesProtectedNode { node, by, via } => {
                let why = protected_why(*by);
                match via {
                    NodeRef::NodeName => write!(
                        f,
                        "names protected GitLab node {node} ({why}); remove spec.nodeName"
                    ),
                    NodeRef::MatchFields => write!(
                        f,
                        "names protected GitLab node {node} ({why}); remove the matchFields entry"
                    ),
                    NodeRef::Binding => write!(
                        f,
                        "binds the job pod to protected GitLab node {node} ({why}); job pods must run on runner nodes or Fargate"
                    ),
                }
            }
            Cause::ToleratesProtectedTaint {
                toleration,
                exists,
                taint,
                carriers,
            } => {
                // Said from the policy; what the cluster shows only with the node cache.
                write!(
                    f,
                    "tolerates {taint}, the taint protectedNodes.taints lists for GitLab's nodes"
                )?;
                match carriers.as_deref() {
                    None => {}
                    Some([]) => write!(
                        f,
                        ", though no protected node in the cluster carries it now"
                    )?,
                    Some(nodes) => {
                        let shown: Vec<&str> = nodes.iter().take(3).map(String::as_str).collect();
                        let more = nodes.len() - shown.len();
                        write!(f, ", which {}", shown.join(", "))?;
                        if more > 0 {
                            write!(f, " and {more} more")?;
                        }
                        write!(f, " carr{}", if nodes.len() > 1 { "y" } else { "ies" })?;
                    }
                }
                if *exists {
                    write!(f, " (it tolerates {toleration})")?;
                }
                write!(f, "; remove the KUBERNETES_NODE_TOLERATIONS_* override")
            }
            Cause::SchedulableOnProtected { nodes } => {
                let shown: Vec<&str> = nodes.iter().take(3).map(String::as_str).collect();
                let more = nodes.len().saturating_sub(shown.len());
                write!(
                    f,
                    "can be scheduled on protected GitLab node{} {}",
                    if nodes.len() > 1 { "s" } else { "" },
                    shown.join(", ")
                )?;
                if more > 0 {
                    write!(f, " and {more} more")?;
                }
                write!(
                    f,
                    " (labels match and taints are tolerated); require a label those nodes lack"
                )
            }
            Cause::EphemeralOnProtectedNode { node, by } => write!(
                f,
                "adds a container to a pod on protected GitLab node {node} ({}); debug the job on a runner node instead, and delete the pod",
                protected_why(*by)
            ),
            Cause::NodeNameSet { node } => write!(
                f,
                "is set to {node}; job pods must be placed by the scheduler, remove spec.nodeName (or set allowNodeName: true in the policy)"
            ),
            Cause::UnknownProfile { name, allowed } => write!(
                f,
                "names unknown profile {name:?}; allowed profiles: {}",
                allowed.join(", ")
            ),
            Cause::ProfileNotAllowed {
                name,
                chosen,
                namespace,
                allowed,
            } => {
                match chosen {
                    Chosen::Label => write!(f, "asks for profile {name:?}")?,
                    Chosen::Selector => write!(
                        f,
                        "match the selector of profile {name:?} (placement.profiles.{name}.selector)"
                    )?,
                    Chosen::Default => write!(
                        f,
                        "choose no profile, so the default {name:?} (placement.default) applies"
                    )?,
                }
                write!(
                    f,
                    ", which pods in namespace {namespace} may not use; allowed profiles: {}",
                    allowed.join(", ")
                )
            }
            Cause::NoUsableTerm { required } => write!(
                f,
                "has no term that can match any node, so the pod could never be scheduled; give every term matchExpressions requiring {}",
                selector_text(required)
            ),
            Cause::Unsatisfiable { culprit } => write!(
                f,
                "({}) can be met by no node, so the pod could never be scheduled; fix the job's node selector or affinity",
                selector_text(culprit)
            ),
            Cause::ConflictsWithProfile {
                culprit,
                profile,
                required,
            } => write!(
                f,
                "{} conflicts with profile {profile} (requires {}), so the pod could never be scheduled; remove the KUBERNETES_NODE_SELECTOR_* override or choose another profile",
                selector_text(culprit),
                selector_text(required)
            ),
            Cause::MissingRequirement {
                requirement,
                profile,
            } => write!(
                f,
                "does not require {requirement} of profile {profile}; register the runner-fence mutating webhook or add the requirement to the runner's affinity"
            ),
            Cause::Fargate { issue, alternative } => {
                match issue {
                    FargateIssue::Privileged { container } => write!(
                        f,
                        "({container}) is privileged and Fargate cannot run privileged containers; build images with a rootless builder (kaniko, buildah)"
                    )?,
                    FargateIssue::HostNamespace { .. } => write!(
                        f,
                        "is true and Fargate cannot run pods in host namespaces; remove it"
                    )?,
                    FargateIssue::HostPort { container, .. } => write!(
                        f,
                        "({container}) uses a hostPort and Fargate cannot run them; use a Service instead"
                    )?,
                    FargateIssue::HostPath { volume } => write!(
                        f,
                        "(volume {volume}) is a hostPath volume and Fargate cannot run them; use an emptyDir"
                    )?,
                }
                if let Some(alt) = alternative {
                    write!(f, " or use the {alt} profile (without the Fargate labels)")?;
                }
                Ok(())
            }
            Cause::RequestAboveMax {
                container,
                resource,
                request,
                max,
            } => {
                let who = resource_owner(container.as_deref());
                write!(
                    f,
                    "{who}requests {resource} {request}, above the maximum {max}; lower the job's KUBERNETES_*_{}_REQUEST or the runner's request",
                    resource.to_uppercase()
                )
            }
            Cause::LimitBelowRequest {
                container,
                resource,
                limit,
                request,
            } => {
                let who = resource_owner(container.as_deref());
                write!(
                    f,
                    "{who}limit {resource} {limit} is below its request {request}; raise the limit or lower the request"
                )
            }
        }
    }
}

/// Why a node counts as protected, in words.
fn protected_why(by: ProtectedBy) -> &'static str {
    match by {
        ProtectedBy::Name => "listed in protectedNodes.names",
        ProtectedBy::Labels => "its labels match protectedNodes",
        ProtectedBy::Unknown => {
            "runner-fence does not know this node (not in the node cache, or it could not be read), so it may be one"
        }
    }
}

/// `(build) ` for a container, `(pod-level resources) ` for `spec.resources`.
fn resource_owner(container: Option<&str>) -> String {
    container.map_or_else(|| "(pod-level resources) ".into(), |c| format!("({c}) "))
}

struct Out(Vec<Violation>);

impl Out {
    fn push(&mut self, rule: RuleId, path: impl Into<String>, cause: Cause) {
        self.0.push(Violation {
            rule,
            path: path.into(),
            cause,
        });
    }
}

/// The profile a pod resolved to.
#[derive(Debug, Clone)]
pub enum ProfileRef<'a> {
    /// A defined profile the pod's namespace may use.
    Known(&'a str, &'a Profile),
    /// The label named a profile the policy does not define.
    Unknown(&'a str),
    /// A defined profile that the pod's namespace may not use.
    NotAllowed(&'a str, Chosen),
}

/// How a pod got its profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chosen {
    /// The profile label names it.
    Label,
    /// Its selector matches the pod's labels.
    Selector,
    /// `placement.default`.
    Default,
}

impl<'a> ProfileRef<'a> {
    /// The profile's name, as asked for.
    pub fn name(&self) -> &'a str {
        match self {
            ProfileRef::Known(n, _) | ProfileRef::Unknown(n) | ProfileRef::NotAllowed(n, _) => n,
        }
    }
}

/// Where the pod is: what rules need beyond the pod itself.
#[derive(Clone, Copy, Debug)]
pub struct Context<'a> {
    /// The request's namespace.
    pub namespace: &'a str,
    /// Live nodes, when the node cache is on.
    pub nodes: Option<&'a NodeSnapshot>,
}

/// Runs every rule on a pod.
pub fn validate_pod(
    policy: &Policy,
    profile: &ProfileRef<'_>,
    pod: &PodView,
    ctx: Context<'_>,
) -> Vec<Violation> {
    let mut out = Out(Vec::new());
    protected_nodes(policy, pod, ctx.nodes, &mut out);
    node_name(policy, pod, &mut out);
    let profile_label = || format!("metadata.labels[{}]", policy.placement.profile_label);
    let mut fargate_profile = false;
    match profile {
        ProfileRef::Known(name, prof) => {
            placement(name, prof, pod, &mut out);
            fargate_profile = prof.fargate;
        }
        ProfileRef::Unknown(name) => out.push(
            RuleId::Placement,
            profile_label(),
            Cause::UnknownProfile {
                name: name.to_string(),
                allowed: policy.allowed_profiles(ctx.namespace),
            },
        ),
        ProfileRef::NotAllowed(name, chosen) => out.push(
            RuleId::Placement,
            // The label when it chose the profile, else the labels the selector matched.
            match chosen {
                Chosen::Label => profile_label(),
                Chosen::Selector | Chosen::Default => "metadata.labels".to_string(),
            },
            Cause::ProfileNotAllowed {
                name: name.to_string(),
                chosen: *chosen,
                namespace: ctx.namespace.to_string(),
                allowed: policy.allowed_profiles(ctx.namespace),
            },
        ),
    }
    // Keyed on what EKS uses (namespace + final labels), whatever the profile.
    if fargate_profile || policy.fargate_selects(ctx.namespace, pod.labels()) {
        fargate_compat(policy, ctx.namespace, pod, &mut out);
    }
    resources(policy, pod, &mut out);
    out.0
}

/// Validates a `pods/binding` or `bindings` target node.
pub fn validate_binding(
    policy: &Policy,
    node: &str,
    nodes: Option<&NodeSnapshot>,
) -> Vec<Violation> {
    let mut out = Out(Vec::new());
    if let Some(by) = protected_node(policy, node, nodes) {
        out.push(
            RuleId::ProtectedNodes,
            "target.name",
            Cause::NamesProtectedNode {
                node: node.to_string(),
                by,
                via: NodeRef::Binding,
            },
        );
    }
    out.0
}

/// `pods/ephemeralcontainers` on a pod bound to a protected node: denied
/// whatever the pod was admitted with, since the container would run there.
pub fn ephemeral_on_protected(
    policy: &Policy,
    pod: &PodView,
    nodes: Option<&NodeSnapshot>,
) -> Vec<Violation> {
    let Some(node) = pod.spec().node_name.as_deref().filter(|n| !n.is_empty()) else {
        return Vec::new();
    };
    protected_node(policy, node, nodes)
        .map(|by| Violation {
            rule: RuleId::ProtectedNodes,
            path: "spec.ephemeralContainers".into(),
            cause: Cause::EphemeralOnProtectedNode {
                node: node.to_string(),
                by,
            },
        })
        .into_iter()
        .collect()
}

/// Why the node a pod or binding names is protected, if it is. Without the
/// node cache only its name can tell; with it, a node the cache does not know
/// counts as protected (fail closed).
fn protected_node(
    policy: &Policy,
    name: &str,
    nodes: Option<&NodeSnapshot>,
) -> Option<ProtectedBy> {
    let pn = &policy.protected_nodes;
    match nodes.map(|n| n.get(name)) {
        None => pn.is_protected(name, None),
        Some(Some(node)) => pn.is_protected(name, Some(&node.labels)),
        Some(None) => pn.is_protected(name, None).or(Some(ProtectedBy::Unknown)),
    }
}

fn selector_text(reqs: &[Requirement]) -> String {
    reqs.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The pod's alternatives: nodeSelector AND each live term, or the nodeSelector alone.
/// Each is (path, requirements, term index).
fn alternatives(pod: &PodView) -> Vec<Alternative> {
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

/// The alternatives of [`alternatives`]: (path, requirements, term index).
type Alternative = (String, Vec<Requirement>, Option<usize>);

fn protected_nodes(policy: &Policy, pod: &PodView, nodes: Option<&NodeSnapshot>, out: &mut Out) {
    let before = out.0.len();
    let alts = alternatives(pod);
    protected_labels(policy, &alts, out);
    protected_names(policy, pod, nodes, out);
    protected_taints(policy, pod, nodes, out);
    // Live: a real protected node the pod could be scheduled on. Only when
    // the static checks found nothing, since they already explain the denial.
    if let Some(nodes) = nodes
        && out.0.len() == before
    {
        protected_live(policy, pod, &alts, nodes, out);
    }
}

/// Labels: could a node carrying the protected labels meet any alternative?
fn protected_labels(policy: &Policy, alts: &[Alternative], out: &mut Out) {
    let pn = &policy.protected_nodes;
    for (path, reqs, _) in alts {
        if pn.reachable_from(reqs) {
            out.push(
                RuleId::ProtectedNodes,
                path.clone(),
                Cause::ReachesProtectedLabels {
                    constraints: reqs.clone(),
                    protected: pn
                        .label_requirements()
                        .map(ReqRef::to_requirement)
                        .collect(),
                },
            );
        }
    }
}

/// Names: `spec.nodeName` and `matchFields` entries naming a protected node.
fn protected_names(policy: &Policy, pod: &PodView, nodes: Option<&NodeSnapshot>, out: &mut Out) {
    if let Some(node) = pod.spec().node_name.as_deref().filter(|n| !n.is_empty())
        && let Some(by) = protected_node(policy, node, nodes)
    {
        out.push(
            RuleId::ProtectedNodes,
            "spec.nodeName",
            Cause::NamesProtectedNode {
                node: node.to_string(),
                by,
                via: NodeRef::NodeName,
            },
        );
    }
    for (i, term) in pod.required_terms().iter().enumerate() {
        for (j, node) in term_node_names(term) {
            if let Some(by) = protected_node(policy, node, nodes) {
                out.push(
                    RuleId::ProtectedNodes,
                    format!("{TERMS_PATH}[{i}].matchFields[{j}]"),
                    Cause::NamesProtectedNode {
                        node: node.to_string(),
                        by,
                        via: NodeRef::MatchFields,
                    },
                );
            }
        }
    }
}

/// Taints: tolerations of protected taints (and, with the node cache, which
/// protected nodes carry the taint, so the message does not claim more).
fn protected_taints(policy: &Policy, pod: &PodView, nodes: Option<&NodeSnapshot>, out: &mut Out) {
    let pn = &policy.protected_nodes;
    for (i, t) in pod.spec().tolerations.iter().flatten().enumerate() {
        let tol = Tol::of(t);
        if let Some(taint) = pn.tolerated_taint(&tol) {
            let carriers = nodes.map(|nodes| {
                let mut names: Vec<String> = nodes
                    .iter()
                    .filter(|n| n.taints.iter().any(|nt| taint.matches(nt)))
                    .filter(|n| pn.is_protected(&n.name, Some(&n.labels)).is_some())
                    .map(|n| n.name.clone())
                    .collect();
                names.sort_unstable();
                names
            });
            out.push(
                RuleId::ProtectedNodes,
                format!("spec.tolerations[{i}]"),
                Cause::ToleratesProtectedTaint {
                    toleration: tol.describe(),
                    exists: tol.exists,
                    taint: taint.clone(),
                    carriers,
                },
            );
        }
    }
}

/// Live: the real protected nodes the pod could be scheduled on.
fn protected_live(
    policy: &Policy,
    pod: &PodView,
    alts: &[Alternative],
    nodes: &NodeSnapshot,
    out: &mut Out,
) {
    let pn = &policy.protected_nodes;
    let tols: Vec<Tol> = pod
        .spec()
        .tolerations
        .iter()
        .flatten()
        .map(Tol::of)
        .collect();
    let is_protected = |n: &&NodeInfo| pn.is_protected(&n.name, Some(&n.labels)).is_some();
    // Protected nodes are few: reach them through the label index when the
    // selector has an `In`, and through the names list.
    let first_in = pn.label_requirements().find(|r| r.operator == Operator::In);
    let by_label: Vec<&NodeInfo> = match first_in {
        _ if !pn.has_labels() => Vec::new(),
        Some(r) => r
            .values
            .iter()
            .flat_map(|v| nodes.with_label(r.key, v))
            .filter(is_protected)
            .collect(),
        None => nodes.iter().filter(is_protected).collect(),
    };
    let by_name = pn.names.iter().filter_map(|n| nodes.get(n));
    let mut reachable: Vec<String> = by_label
        .into_iter()
        .chain(by_name)
        .filter(|n| schedulable_on(pod, alts, &tols, n))
        .map(|n| n.name.clone())
        .collect();
    reachable.sort_unstable();
    reachable.dedup();
    if !reachable.is_empty() {
        out.push(
            RuleId::ProtectedNodes,
            "spec",
            Cause::SchedulableOnProtected { nodes: reachable },
        );
    }
}

/// Would the scheduler accept this node for the pod (labels, fields, NoSchedule/NoExecute taints)?
fn schedulable_on(pod: &PodView, alts: &[Alternative], tols: &[Tol], node: &NodeInfo) -> bool {
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
            Cause::NodeNameSet {
                node: node.to_string(),
            },
        );
    }
}

fn placement(name: &str, prof: &Profile, pod: &PodView, out: &mut Out) {
    let required = &prof.required_node_labels;
    if required.is_empty() {
        return;
    }
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
            Cause::NoUsableTerm {
                required: required.clone(),
            },
        );
        return;
    };
    if live.is_empty() {
        // The pod's own constraints (without what the mutation injected) exclude
        // every node, whatever the profile.
        if let Err(Conflict { key }) = satisfiable(reqs.iter().filter(|r| !required.contains(r))) {
            out.push(
                RuleId::Placement,
                path.clone(),
                Cause::Unsatisfiable {
                    culprit: reqs
                        .iter()
                        .filter(|r| r.key == key && !required.contains(r))
                        .cloned()
                        .collect(),
                },
            );
            return;
        }
        let conflict = satisfiable(reqs.iter().chain(required))
            .err()
            .map(|c| c.key)
            .unwrap_or_default();
        let (path, culprit) = match ns.iter().find(|r| r.key == conflict) {
            Some(r) => ("spec.nodeSelector".to_string(), vec![r.clone()]),
            None => (
                path.clone(),
                reqs.iter().filter(|r| r.key == conflict).cloned().collect(),
            ),
        };
        out.push(
            RuleId::Placement,
            path,
            Cause::ConflictsWithProfile {
                culprit,
                profile: name.to_string(),
                required: required.clone(),
            },
        );
        return;
    }
    for (path, reqs, _) in &alts {
        for r in required {
            if !implies(reqs, r) {
                out.push(
                    RuleId::Placement,
                    path.clone(),
                    Cause::MissingRequirement {
                        requirement: r.clone(),
                        profile: name.to_string(),
                    },
                );
            }
        }
    }
}

fn fargate_compat(policy: &Policy, namespace: &str, pod: &PodView, out: &mut Out) {
    let alternative = policy
        .placement
        .profiles
        .iter()
        .find(|(_, p)| !p.fargate && p.allowed_in(namespace))
        .map(|(n, _)| n.clone());
    let mut push = |path: String, issue: FargateIssue| {
        out.push(
            RuleId::FargateCompat,
            path,
            Cause::Fargate {
                issue,
                alternative: alternative.clone(),
            },
        )
    };
    let spec = pod.spec();
    let eph = spec
        .ephemeral_containers
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, c)| (format!("spec.ephemeralContainers[{i}]"), c));
    for (path, c) in pod.containers().map(|(p, c, _)| (p, c)).chain(eph) {
        if c.security_context.as_ref().and_then(|s| s.privileged) == Some(true) {
            push(
                format!("{path}.securityContext.privileged"),
                FargateIssue::Privileged {
                    container: c.name.clone(),
                },
            );
        }
    }
    for (flag, v) in [
        ("hostNetwork", spec.host_network),
        ("hostPID", spec.host_pid),
        ("hostIPC", spec.host_ipc),
    ] {
        if v == Some(true) {
            push(format!("spec.{flag}"), FargateIssue::HostNamespace { flag });
        }
    }
    for (path, c, _) in pod.containers() {
        for (j, port) in c.ports.iter().flatten().enumerate() {
            if port.host_port.is_some_and(|p| p != 0) {
                push(
                    format!("{path}.ports[{j}].hostPort"),
                    FargateIssue::HostPort {
                        container: c.name.clone(),
                        port: port.container_port,
                    },
                );
            }
        }
    }
    for (i, v) in spec.volumes.iter().flatten().enumerate() {
        if v.host_path.is_some() {
            push(
                format!("spec.volumes[{i}].hostPath"),
                FargateIssue::HostPath {
                    volume: v.name.clone(),
                },
            );
        }
    }
}

fn resources(policy: &Policy, pod: &PodView, out: &mut Out) {
    let pod_level = pod
        .spec()
        .resources
        .as_ref()
        .map(|r| ("spec".to_string(), None, r));
    let containers = pod.containers().filter_map(|(path, c, _)| {
        c.resources
            .as_ref()
            .map(|r| (path, Some(c.name.clone()), r))
    });
    for (path, container, res) in pod_level.into_iter().chain(containers) {
        resource_checks(policy, &path, container, res, out);
    }
}

/// `resources.max` and limit >= request, for one container or the pod-level resources.
fn resource_checks(
    policy: &Policy,
    path: &str,
    container: Option<String>,
    res: &ResourceRequirements,
    out: &mut Out,
) {
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
                    Cause::RequestAboveMax {
                        container: container.clone(),
                        resource: name,
                        request: have,
                        max: max.clone(),
                    },
                );
            }
        }
    }
    let (Some(reqs), Some(limits)) = (requests, res.limits.as_ref()) else {
        return;
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
                Cause::LimitBelowRequest {
                    container: container.clone(),
                    resource: name.clone(),
                    limit: lim,
                    request: req,
                },
            );
        }
    }
}

#[cfg(test)]
mod wording {
    //! What each cause says, word for word: the counts ("and N more", "carries"
    //! against "carry"), why a node is protected, whose resources. The denial is
    //! what a job log shows; a wrong count or an empty reason is a wrong message.
    use super::*;
    use crate::core::tolerations::TaintEffect;
    use rstest::rstest;

    fn names(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("gitlab-{i}")).collect()
    }

    fn tolerates(carriers: Option<Vec<String>>, exists: bool) -> Cause {
        Cause::ToleratesProtectedTaint {
            toleration: "dedicated Exists".into(),
            exists,
            taint: TaintSpec {
                key: "dedicated".into(),
                value: Some("gitlab".into()),
                effect: Some(TaintEffect::NoSchedule),
            },
            carriers,
        }
    }

    fn req(key: &str, op: Operator, values: &[&str]) -> Requirement {
        Requirement {
            key: key.into(),
            operator: op,
            values: values.iter().map(|v| v.to_string()).collect(),
        }
    }

    fn q(text: &str) -> Quantity {
        Quantity::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[rstest]
    #[case::no_carrier(tolerates(Some(vec![]), false), ", though no protected node in the cluster carries it now; remove")]
    #[case::one_carrier(tolerates(Some(names(1)), false), ", which gitlab-1 carries; remove")]
    #[case::two_carry(
        tolerates(Some(names(2)), false),
        ", which gitlab-1, gitlab-2 carry; remove"
    )]
    #[case::three_carry(
        tolerates(Some(names(3)), false),
        ", which gitlab-1, gitlab-2, gitlab-3 carry; remove"
    )]
    #[case::four_carry(
        tolerates(Some(names(4)), false),
        ", which gitlab-1, gitlab-2, gitlab-3 and 1 more carry; remove"
    )]
    #[case::without_cache(
        tolerates(None, false),
        "the taint protectedNodes.taints lists for GitLab's nodes; remove"
    )]
    #[case::exists(
        tolerates(Some(names(1)), true),
        " carries (it tolerates dedicated Exists); remove"
    )]
    #[case::one_node(Cause::SchedulableOnProtected { nodes: names(1) }, "can be scheduled on protected GitLab node gitlab-1 (labels")]
    #[case::two_nodes(Cause::SchedulableOnProtected { nodes: names(2) }, "on protected GitLab nodes gitlab-1, gitlab-2 (labels")]
    #[case::three_nodes(Cause::SchedulableOnProtected { nodes: names(3) }, "nodes gitlab-1, gitlab-2, gitlab-3 (labels")]
    #[case::five_nodes(Cause::SchedulableOnProtected { nodes: names(5) }, "nodes gitlab-1, gitlab-2, gitlab-3 and 2 more (labels")]
    #[case::by_name(Cause::NamesProtectedNode { node: "gitlab-1".into(), by: ProtectedBy::Name, via: NodeRef::NodeName }, "names protected GitLab node gitlab-1 (listed in protectedNodes.names); remove spec.nodeName")]
    #[case::by_labels(Cause::NamesProtectedNode { node: "gitlab-1".into(), by: ProtectedBy::Labels, via: NodeRef::MatchFields }, "gitlab-1 (its labels match protectedNodes); remove the matchFields entry")]
    #[case::unknown(Cause::NamesProtectedNode { node: "ip-10-0-0-1".into(), by: ProtectedBy::Unknown, via: NodeRef::Binding }, "binds the job pod to protected GitLab node ip-10-0-0-1 (runner-fence does not know this node (not in the node cache, or it could not be read), so it may be one); job pods")]
    #[case::ephemeral(Cause::EphemeralOnProtectedNode { node: "gitlab-1".into(), by: ProtectedBy::Labels }, "adds a container to a pod on protected GitLab node gitlab-1 (its labels match protectedNodes); debug")]
    #[case::container_limit(Cause::LimitBelowRequest { container: Some("build".into()), resource: "memory".into(), limit: q("1Gi"), request: q("2Gi") }, "resources: spec.containers[0] (build) limit memory 1Gi is below its request 2Gi; raise")]
    #[case::pod_limit(Cause::LimitBelowRequest { container: None, resource: "cpu".into(), limit: q("1"), request: q("2") }, "resources: spec.containers[0] (pod-level resources) limit cpu 1 is below")]
    #[case::container_max(Cause::RequestAboveMax { container: Some("build".into()), resource: "cpu", request: q("8"), max: q("4") }, "(build) requests cpu 8, above the maximum 4; lower the job's KUBERNETES_*_CPU_REQUEST")]
    #[case::no_constraints(Cause::ReachesProtectedLabels { constraints: vec![], protected: vec![req("role", Operator::In, &["gitlab"])] }, "has no nodeSelector or required node affinity, so nothing keeps the pod off protected GitLab nodes (role=gitlab); require")]
    #[case::constraints(Cause::ReachesProtectedLabels { constraints: vec![req("zone", Operator::Exists, &[])], protected: vec![req("role", Operator::In, &["gitlab"])] }, "(zone Exists) does not exclude protected GitLab nodes (role=gitlab); require")]
    fn each_cause_says(#[case] cause: Cause, #[case] expected: &str) {
        let v = Violation {
            rule: RuleId::Resources,
            path: "spec.containers[0]".into(),
            cause,
        };
        let text = v.to_string();
        assert!(text.starts_with("resources: spec.containers[0] "), "{text}");
        assert!(text.contains(expected), "{text}\n does not say\n{expected}");
    }
}

#[cfg(test)]
mod live {
    //! The live check on its own. In [`protected_nodes`] it runs only when the
    //! static checks found nothing, and then no node with the protected labels
    //! meets the pod's constraints (the static label check is exact), so its
    //! label-index path is a second line that the rules' tests never reach.
    //! Called directly here, it must find the nodes the scheduler would accept.
    use super::*;
    use k8s_openapi::api::core::v1::Taint;
    use serde_json::json;

    fn node(name: &str, labels: &[(&str, &str)], taint: Option<&str>) -> NodeInfo {
        NodeInfo {
            name: name.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            taints: taint
                .map(|v| Taint {
                    key: "workload".into(),
                    value: Some(v.into()),
                    effect: "NoSchedule".into(),
                    time_added: None,
                })
                .into_iter()
                .collect(),
        }
    }

    fn cluster() -> NodeSnapshot {
        NodeSnapshot::new([
            node("gitlab-tainted", &[("workload", "gitlab")], Some("gitlab")),
            node("gitlab-open", &[("workload", "gitlab")], None),
            node(
                "fargate-gitlab",
                &[
                    ("workload", "gitlab"),
                    ("eks.amazonaws.com/compute-type", "fargate"),
                ],
                None,
            ),
            node(
                "runner-1",
                &[("workload", "gitlab-runner")],
                Some("gitlab-runner"),
            ),
            node("other", &[("workload", "batch")], None),
        ])
    }

    fn live(policy: &Policy) -> Vec<Violation> {
        let pod: PodView = serde_json::from_value(json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "build"}]}
        }))
        .unwrap_or_else(|e| panic!("pod: {e}"));
        let mut out = Out(Vec::new());
        protected_live(policy, &pod, &alternatives(&pod), &cluster(), &mut out);
        out.0
    }

    fn schedulable(nodes: &[&str]) -> Vec<Violation> {
        vec![Violation {
            rule: RuleId::ProtectedNodes,
            path: "spec".into(),
            cause: Cause::SchedulableOnProtected {
                nodes: nodes.iter().map(|n| n.to_string()).collect(),
            },
        }]
    }

    #[test]
    fn through_the_label_index() {
        // workload=gitlab AND compute-type NotIn [fargate]: the index is read
        // through the `In` requirement, not the `NotIn` one before or after it.
        let policy = crate::core::policy::embedded().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(live(&policy), schedulable(&["gitlab-open"]));
    }

    #[test]
    fn through_every_node_without_an_in_requirement() {
        let mut policy = crate::core::policy::embedded().unwrap_or_else(|e| panic!("{e}"));
        let pn = &mut policy.protected_nodes;
        pn.match_labels.clear();
        pn.match_expressions = vec![Requirement {
            key: "workload".into(),
            operator: Operator::NotIn,
            values: vec!["gitlab-runner".into()],
        }];
        // Every node without workload=gitlab-runner is protected: `other` has
        // no taint either.
        assert_eq!(
            live(&policy),
            schedulable(&["fargate-gitlab", "gitlab-open", "other"])
        );
    }

    #[test]
    fn through_the_names_only_without_labels() {
        let mut policy = crate::core::policy::embedded().unwrap_or_else(|e| panic!("{e}"));
        let pn = &mut policy.protected_nodes;
        pn.match_labels.clear();
        pn.match_expressions.clear();
        pn.names = vec!["other".into(), "gitlab-tainted".into(), "absent".into()];
        assert_eq!(live(&policy), schedulable(&["other"]));
    }
}
