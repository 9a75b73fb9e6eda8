//! Offline evaluation: mutate then validate, exactly as the two webhooks
//! would in sequence. Shared by `eval` and `test`.

use serde_json::{Value, json};

use crate::admission::{self, AdmissionError};
use crate::engine::{Decision, Endpoint, Operation};
use crate::nodes::NodeSnapshot;
use crate::policy::Policy;

/// What mutate-then-validate did to one input.
pub struct Evaluation {
    /// Whether either step saw a job pod.
    pub matched: bool,
    /// The profile used.
    pub profile: Option<String>,
    /// The `/mutate` AdmissionReview response.
    pub mutate: Value,
    /// The `/validate` AdmissionReview response.
    pub validate: Value,
    /// The pod as it would be stored (after the patch).
    pub pod: Value,
    /// The mutate decision.
    pub mutate_decision: Decision,
    /// The validate decision.
    pub validate_decision: Decision,
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
    let m = admission::handle(policy, Endpoint::Mutate, &body, nodes)?;
    let mut pod = review
        .pointer("/request/object")
        .cloned()
        .unwrap_or(Value::Null);
    let patch = admission::response_patch(&m.response)?;
    json_patch::patch(&mut pod, &patch).map_err(AdmissionError::PatchDoesNotApply)?;
    let mut second = review.clone();
    if let Some(obj) = second.pointer_mut("/request/object") {
        *obj = pod.clone();
    }
    let body = serde_json::to_vec(&second).map_err(AdmissionError::Encode)?;
    let v = admission::handle(policy, Endpoint::Validate, &body, nodes)?;
    Ok(Evaluation {
        matched: m.decision.matched || v.decision.matched,
        profile: m
            .decision
            .profile
            .clone()
            .or_else(|| v.decision.profile.clone()),
        mutate: m.response,
        validate: v.response,
        pod,
        mutate_decision: m.decision,
        validate_decision: v.decision,
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
            if let Some(meta) = pod.get_mut("metadata").and_then(Value::as_object_mut) {
                meta.insert("namespace".into(), json!(ns));
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
