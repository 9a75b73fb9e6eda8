//! The policy engine: `(policy, request, node snapshot) -> decision`, pure.
//!
//! No I/O, no clock, no globals. Every request goes through [`review`]: the
//! server asks it for one webhook, and [`evaluate`] (mutate, then validate
//! what mutation left) for both in sequence, whatever the request's
//! [`Origin`]: an admission request (the server's, `eval`'s, `test`'s) or a
//! stored pod (`audit`). So what CI tests is what the cluster runs.

mod decision;
mod error;
mod evaluate;
mod mutate;
mod origin;
pub mod pod;
mod validate;

use crate::core::nodes::NodeSnapshot;
use crate::core::policy::{Mode, Policy, RuleId};
pub use decision::{Decision, Findings, Outcome};
pub use error::ReviewError;
pub use evaluate::{Evaluation, evaluate};
pub use mutate::Mutation;
pub use origin::{Moment, Origin};
use pod::PodView;
pub use validate::{Cause, Chosen, Context, FargateIssue, NodeRef, ProfileRef, Violation};

/// Which webhook is asking.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// `/mutate`
    Mutate,
    /// `/validate`
    Validate,
}

impl Endpoint {
    /// `mutate` or `validate`.
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Mutate => "mutate",
            Endpoint::Validate => "validate",
        }
    }
}

/// Admission operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    /// CREATE
    Create,
    /// UPDATE
    Update,
    /// DELETE
    Delete,
    /// CONNECT
    Connect,
}

impl Operation {
    /// Parses the AdmissionRequest operation.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "CREATE" => Operation::Create,
            "UPDATE" => Operation::Update,
            "DELETE" => Operation::Delete,
            "CONNECT" => Operation::Connect,
            _ => return None,
        })
    }
    /// As the apiserver spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Create => "CREATE",
            Operation::Update => "UPDATE",
            Operation::Delete => "DELETE",
            Operation::Connect => "CONNECT",
        }
    }
}

impl std::fmt::Display for Operation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the engine needs from an AdmissionRequest.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    /// `request.kind.group`
    pub group: &'a str,
    /// `request.kind.kind`
    pub kind: &'a str,
    /// `request.resource.resource`
    pub resource: &'a str,
    /// `request.subResource`, empty for none.
    pub sub_resource: &'a str,
    /// `request.operation`
    pub operation: Operation,
    /// `request.namespace`
    pub namespace: &'a str,
    /// `request.name` (empty for generateName pods at CREATE).
    pub name: &'a str,
    /// `request.object`, decoded.
    pub object: Option<&'a PodView>,
    /// `request.oldObject`, decoded.
    pub old_object: Option<&'a PodView>,
    /// Why `object` could not be decoded, if it could not.
    pub object_error: Option<&'a ReviewError>,
}

impl<'a> Request<'a> {
    /// A CREATE or UPDATE of a pod itself (no subresource) in `namespace`,
    /// named as its decoded object is.
    pub fn pod(
        operation: Operation,
        namespace: &'a str,
        decoded: &'a Result<PodView, ReviewError>,
        old_object: Option<&'a PodView>,
    ) -> Self {
        let object = decoded.as_ref().ok();
        Request {
            group: "",
            kind: "Pod",
            resource: "pods",
            sub_resource: "",
            operation,
            namespace,
            name: object
                .and_then(|p| p.metadata.name.as_deref())
                .unwrap_or(""),
            object,
            old_object,
            object_error: decoded.as_ref().err(),
        }
    }
}

/// Reviews one admission request.
///
/// Scope is the namespace alone (SPEC §2): every pod, binding and ephemeral
/// container in a runner namespace is reviewed, whatever its name or labels.
pub fn review(
    policy: &Policy,
    endpoint: Endpoint,
    req: &Request<'_>,
    nodes: Option<&NodeSnapshot>,
) -> Decision {
    let core = req.group.is_empty();
    let target = match (core, req.resource, req.sub_resource) {
        (true, "pods", "") => Target::Pod,
        (true, "pods", "binding") | (true, "bindings", "") => Target::Binding,
        // Both carry the whole Pod: new containers, or new resources (in-place resize).
        (true, "pods", "ephemeralcontainers" | "resize") => Target::Pod,
        // Other pod subresources (status, eviction, exec...) cannot change placement.
        (true, "pods", _) => return Decision::Skip,
        _ => {
            return Decision::Invalid(ReviewError::UnsupportedResource {
                group: if core { "core" } else { req.group }.to_string(),
                resource: req.resource.to_string(),
                kind: req.kind.to_string(),
            });
        }
    };
    if !policy.matching.covers(req.namespace) {
        return Decision::Skip;
    }
    if target == Target::Binding {
        return review_binding(policy, endpoint, req, nodes);
    }
    if !matches!(req.operation, Operation::Create | Operation::Update) {
        return Decision::Skip;
    }
    if let Some(e) = req.object_error {
        return Decision::Invalid(e.clone());
    }
    let Some(pod) = req.object else {
        return Decision::Invalid(ReviewError::NoObject {
            operation: req.operation,
            name: req.name.to_string(),
        });
    };
    if pod.spec.is_none() {
        // Every real Pod has one; without it there is nothing to place or patch.
        return Decision::Invalid(ReviewError::NoSpec {
            operation: req.operation,
            name: req.name.to_string(),
        });
    }
    let ctx = Context {
        namespace: req.namespace,
        nodes,
    };
    let change = Change::of(req.operation, req.sub_resource);
    review_pod(policy, endpoint, change, pod, req.old_object, ctx)
}

/// What a pod request does, which decides the violations that count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Change {
    /// A new pod: every violation counts.
    Create,
    /// An UPDATE (or in-place resize): what it introduces counts, and everything
    /// once it removes the last scheduling gate.
    Update,
    /// `pods/ephemeralcontainers`: as an UPDATE, and never on a protected node.
    EphemeralContainers,
}

impl Change {
    /// What a pod request with this operation and subresource does.
    fn of(operation: Operation, sub_resource: &str) -> Change {
        match (operation, sub_resource) {
            (Operation::Create, _) => Change::Create,
            (_, "ephemeralcontainers") => Change::EphemeralContainers,
            _ => Change::Update,
        }
    }

    fn operation(self) -> Operation {
        match self {
            Change::Create => Operation::Create,
            Change::Update | Change::EphemeralContainers => Operation::Update,
        }
    }
}

/// Whether an UPDATE makes the pod schedulable: it had a scheduling gate and
/// has none now. From then on the scheduler may place it, so it is judged like
/// a new pod (SPEC §2): a pod created before enforcement (before install, in
/// audit mode, before its namespace joined the policy) must not carry its old
/// violations past this moment.
fn becomes_schedulable(old: &PodView, new: &PodView) -> bool {
    old.gated() && !new.gated()
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Target {
    Pod,
    Binding,
}

fn review_pod(
    policy: &Policy,
    endpoint: Endpoint,
    change: Change,
    pod: &PodView,
    old_object: Option<&PodView>,
    ctx: Context<'_>,
) -> Decision {
    let operation = change.operation();
    let profile = resolve_profile(policy, ctx.namespace, pod);
    let findings = Findings {
        profile: Some(profile.name().to_string()),
        ..Findings::default()
    };
    match (endpoint, operation) {
        (Endpoint::Mutate, Operation::Create) => mutate_step(policy, &profile, pod, ctx, findings),
        // Mutation is for CREATE only: pods are mostly immutable afterwards.
        (Endpoint::Mutate, _) => Decision::Allow(findings),
        (Endpoint::Validate, op) => {
            let mut violations = if policy.mode == Mode::Audit && op == Operation::Create {
                // Audit judges the pod as enforce mode's mutation would have left it.
                match mutated_view(policy, &profile, pod) {
                    Ok(mutated) => {
                        let profile = resolve_profile(policy, ctx.namespace, &mutated);
                        validate::validate_pod(policy, &profile, &mutated, ctx)
                    }
                    Err(e) => return Decision::Invalid(e),
                }
            } else {
                validate::validate_pod(policy, &profile, pod, ctx)
            };
            if op == Operation::Update {
                // Only what this update introduces, compared as data (rule, path,
                // cause): an operator's label edit on a pod admitted under an older
                // policy must not be blocked, and rewording never changes a decision.
                // Not when it ungates the pod: that is when placement starts.
                if let Some(old) = old_object
                    && !becomes_schedulable(old, pod)
                {
                    let old_profile = resolve_profile(policy, ctx.namespace, old);
                    let before = validate::validate_pod(policy, &old_profile, old, ctx);
                    violations.retain(|v| !before.contains(v));
                }
            }
            if change == Change::EphemeralContainers {
                // Whatever the pod already was: no new process on a protected node.
                violations.extend(validate::ephemeral_on_protected(policy, pod, ctx.nodes));
            }
            Decision::judge(policy, findings, violations)
        }
    }
}

/// The pod's profile (SPEC §3.1): the profile label, else the first profile
/// (by name) whose selector matches the pod's labels, else the default. Labels
/// only choose among profiles; a profile the namespace may not use is reported.
pub(crate) fn resolve_profile<'a>(
    policy: &'a Policy,
    namespace: &str,
    pod: &'a PodView,
) -> ProfileRef<'a> {
    let labels = pod.labels();
    let (name, chosen) = labels
        .get(&policy.placement.profile_label)
        .map(|n| (n.as_str(), Chosen::Label))
        .or_else(|| {
            policy
                .placement
                .profiles
                .iter()
                .find(|(_, p)| p.selector.as_ref().is_some_and(|s| s.matches(labels)))
                .map(|(n, _)| (n.as_str(), Chosen::Selector))
        })
        .unwrap_or((&policy.placement.default, Chosen::Default));
    match policy.placement.profiles.get_key_value(name) {
        Some((n, p)) if p.allowed_in(namespace) => ProfileRef::Known(n, p),
        Some((n, _)) => ProfileRef::NotAllowed(n, chosen),
        None => ProfileRef::Unknown(name),
    }
}

fn mutate_step(
    policy: &Policy,
    profile: &ProfileRef<'_>,
    pod: &PodView,
    ctx: Context<'_>,
    findings: Findings,
) -> Decision {
    let ProfileRef::Known(name, prof) = profile else {
        // Unknown or not allowed here: nothing to inject; say why at once.
        let v = validate::validate_pod(policy, profile, pod, Context { nodes: None, ..ctx })
            .into_iter()
            .filter(|v| v.rule == RuleId::Placement)
            .collect();
        return Decision::judge(policy, findings, v);
    };
    let m = mutate::mutate(policy, name, prof, pod);
    if m.ops.is_empty() {
        return Decision::Allow(findings);
    }
    match policy.mode {
        Mode::Enforce => Decision::Patch(findings, m),
        Mode::Audit => Decision::Allow(Findings {
            would_patch: m.changes,
            ..findings
        }),
    }
}

/// The pod after this policy's mutation, decoded again.
fn mutated_view(
    policy: &Policy,
    profile: &ProfileRef<'_>,
    pod: &PodView,
) -> Result<PodView, ReviewError> {
    let ProfileRef::Known(name, prof) = profile else {
        return Ok(pod.clone());
    };
    let m = mutate::mutate(policy, name, prof, pod);
    if m.ops.is_empty() {
        return Ok(pod.clone());
    }
    // The view holds every field the patch touches, at the same paths.
    let v = serde_json::to_value(pod).map_err(|e| ReviewError::Encode(e.into()))?;
    PodView::from_value(&evaluate::patched(&v, &m.ops)?)
}

/// `pods/binding` and the legacy `bindings` resource: a Binding names the pod
/// (`request.name`) and the node; labels are not available, so every binding
/// in a runner namespace is checked.
fn review_binding(
    policy: &Policy,
    endpoint: Endpoint,
    req: &Request<'_>,
    nodes: Option<&NodeSnapshot>,
) -> Decision {
    if req.operation != Operation::Create {
        return Decision::Skip;
    }
    if endpoint == Endpoint::Mutate {
        return Decision::Allow(Findings::default());
    }
    if let Some(e) = req.object_error {
        return Decision::Invalid(e.clone());
    }
    let target = req
        .object
        .and_then(|o| o.target.as_ref())
        .map(|t| t.name.clone())
        .filter(|n| !n.is_empty());
    let Some(target) = target else {
        return Decision::Invalid(ReviewError::NoBindingTarget {
            name: req.name.to_string(),
        });
    };
    Decision::judge(
        policy,
        Findings::default(),
        validate::validate_binding(policy, &target, nodes),
    )
}
