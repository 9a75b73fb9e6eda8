//! Mutate, then validate what mutation left, as the two webhooks do in
//! sequence: the one evaluation behind `eval`, `test`, `audit` and
//! `check runner-config`, whatever the request's [`Origin`].

use json_patch::PatchOperation;
use serde_json::Value;

use super::error::ReviewError;
use super::origin::AsAdmitted;
use super::pod::PodView;
use super::{Decision, Endpoint, Origin, Request, review};
use crate::core::nodes::NodeSnapshot;
use crate::core::policy::Policy;

/// What mutate-then-validate made of one request.
#[derive(Clone, Debug)]
pub struct Evaluation {
    /// Whether either step saw a job pod.
    pub matched: bool,
    /// The profile used.
    pub profile: Option<String>,
    /// The `/mutate` decision.
    pub mutate_decision: Decision,
    /// The `/validate` decision, on the object as the patch left it.
    pub validate_decision: Decision,
    /// The object as it would be stored (after the patch).
    pub pod: Value,
}

impl Evaluation {
    /// Admitted by both webhooks.
    pub fn allowed(&self) -> bool {
        self.mutate_decision.allowed() && self.validate_decision.allowed()
    }

    /// Denial messages and warnings of both steps.
    pub fn messages(&self) -> Vec<String> {
        let mut out = Vec::new();
        for d in [&self.mutate_decision, &self.validate_decision] {
            out.extend(d.message());
            out.extend(d.warnings());
        }
        out
    }
}

/// Runs the request `origin` stands for through `/mutate`, applies its patch
/// to the request's object and runs the result through `/validate`. An error
/// only when the stored pod an UPDATE compares with does not decode, or the
/// patch does not apply (a bug); a request the engine cannot judge is an
/// [`Decision::Invalid`].
pub fn evaluate(
    policy: &Policy,
    origin: &Origin<'_>,
    nodes: Option<&NodeSnapshot>,
) -> Result<Evaluation, ReviewError> {
    match *origin {
        Origin::Admission { request, object } => in_sequence(policy, &request, object, nodes),
        Origin::Stored { pod, moment } => {
            let admitted = AsAdmitted::of(pod, moment)?;
            in_sequence(policy, &admitted.request(), &admitted.object, nodes)
        }
    }
}

/// `/mutate`, then `/validate` on `object` (the request's object as sent;
/// `req.object` is its decoded view) as the patch left it.
fn in_sequence(
    policy: &Policy,
    req: &Request<'_>,
    object: &Value,
    nodes: Option<&NodeSnapshot>,
) -> Result<Evaluation, ReviewError> {
    let mutate_decision = review(policy, Endpoint::Mutate, req, nodes);
    let (validate_decision, pod) = if mutate_decision.patch().is_empty() {
        (
            review(policy, Endpoint::Validate, req, nodes),
            object.clone(),
        )
    } else {
        let pod = patched(object, mutate_decision.patch())?;
        let (view, error) = match PodView::from_value(&pod) {
            Ok(v) => (Some(v), None),
            Err(e) => (None, Some(e)),
        };
        let after = Request {
            object: view.as_ref(),
            object_error: error.as_ref(),
            ..*req
        };
        (review(policy, Endpoint::Validate, &after, nodes), pod)
    };
    Ok(Evaluation {
        matched: mutate_decision.matched() || validate_decision.matched(),
        profile: mutate_decision
            .profile()
            .or_else(|| validate_decision.profile())
            .map(String::from),
        mutate_decision,
        validate_decision,
        pod,
    })
}

/// `object` with a patch applied.
pub fn patched(object: &Value, ops: &[PatchOperation]) -> Result<Value, ReviewError> {
    let mut v = object.clone();
    json_patch::patch(&mut v, ops).map_err(|e| ReviewError::PatchDoesNotApply(e.into()))?;
    Ok(v)
}
