//! Offline evaluation of an AdmissionReview: mutate then validate, exactly
//! as the two webhooks would in sequence ([`engine::evaluate`] of an
//! admission request), with the responses both would send. Behind `eval`
//! and `test`, whose Pod inputs `cli` makes into reviews first.

use serde_json::{Value, json};

use crate::core::engine;
use crate::core::nodes::NodeSnapshot;
use crate::core::policy::Policy;
use crate::webhook::admission::{self, AdmissionError, ReviewOut};

/// What mutate-then-validate did to one input ([`engine::Evaluation`], which
/// it dereferences to), with the AdmissionReviews the two webhooks would send.
pub struct Evaluation {
    /// The `/mutate` AdmissionReview response.
    pub mutate: ReviewOut,
    /// The `/validate` AdmissionReview response.
    pub validate: ReviewOut,
    evaluation: engine::Evaluation,
}

impl std::ops::Deref for Evaluation {
    type Target = engine::Evaluation;

    fn deref(&self) -> &engine::Evaluation {
        &self.evaluation
    }
}

impl Evaluation {
    /// The `--output json` form.
    pub fn to_json(&self) -> Value {
        json!({
            "matched": self.matched,
            "profile": self.profile,
            "mutate": self.mutate,
            "validate": self.validate,
            "pod": self.pod,
        })
    }
}

/// Runs an AdmissionReview through `/mutate` and then `/validate`.
pub fn evaluate(
    policy: &Policy,
    review: &Value,
    nodes: Option<&NodeSnapshot>,
) -> Result<Evaluation, AdmissionError> {
    let body = serde_json::to_vec(review).map_err(AdmissionError::Encode)?;
    let request = admission::parse_review(&body)?;
    let object = review
        .pointer("/request/object")
        .cloned()
        .unwrap_or(Value::Null);
    let evaluation = admission::evaluate(policy, &request, &object, nodes)?;
    Ok(Evaluation {
        mutate: admission::response(request.uid(), &evaluation.mutate_decision),
        validate: admission::response(request.uid(), &evaluation.validate_decision),
        evaluation,
    })
}
