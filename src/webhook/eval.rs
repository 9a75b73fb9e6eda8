//! Offline evaluation: mutate then validate, exactly as the two webhooks
//! would in sequence. Shared by `eval` and `test`.

use serde_json::{Value, json};

use crate::core::engine::{self, Operation};
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

/// Turns an input document into an AdmissionReview: reviews pass through,
/// Pods are wrapped as a request for `operation` in `namespace`.
pub fn to_review(
    doc: Value,
    namespace: Option<&str>,
    operation: Operation,
    policy: &Policy,
    uid: &str,
) -> Result<Value, AdmissionError> {
    let kind = doc.get("kind").and_then(Value::as_str).unwrap_or("");
    match kind {
        "AdmissionReview" => {
            if doc.get("request").is_none() {
                return Err(AdmissionError::NoRequest);
            }
            Ok(doc)
        }
        "Pod" => {
            let ns = namespace
                .map(str::to_string)
                .or_else(|| {
                    doc.pointer("/metadata/namespace")
                        .and_then(Value::as_str)
                        .map(String::from)
                })
                .or_else(|| {
                    policy
                        .matching
                        .namespaces
                        .iter()
                        .find(|n| !n.ends_with('*'))
                        .cloned()
                })
                .unwrap_or_else(|| "default".into());
            let name = doc
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let mut pod = doc;
            // The apiserver always sends metadata with the namespace set; a Pod
            // document written without any gets what the apiserver would add.
            if let Some(obj) = pod.as_object_mut() {
                let meta = obj.entry("metadata").or_insert_with(|| json!({}));
                if let Some(meta) = meta.as_object_mut() {
                    meta.insert("namespace".into(), json!(ns));
                }
            }
            let old = if operation == Operation::Update {
                pod.clone()
            } else {
                Value::Null
            };
            Ok(json!({
                "apiVersion": admission::API_VERSION,
                "kind": "AdmissionReview",
                "request": {
                    "uid": uid,
                    "kind": {"group": "", "version": "v1", "kind": "Pod"},
                    "resource": {"group": "", "version": "v1", "resource": "pods"},
                    "name": name,
                    "namespace": ns,
                    "operation": operation.as_str(),
                    "userInfo": {"username": "runner-fence-eval"},
                    "object": pod,
                    "oldObject": old,
                    "dryRun": true,
                }
            }))
        }
        "" => Err(AdmissionError::NoKind),
        other => Err(AdmissionError::WrongKind(other.to_string())),
    }
}
