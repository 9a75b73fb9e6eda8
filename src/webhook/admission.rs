//! AdmissionReview v1 in and out.
//!
//! The request is decoded into lean structs that keep `object` as raw JSON,
//! so the patch can be computed against exactly what the apiserver sent.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::core::engine::pod::PodView;
use crate::core::engine::{
    self, Decision, Endpoint, Evaluation, Operation, Origin, Request, ReviewError,
};
use crate::core::fleet::PolicySet;
use crate::core::nodes::NodeSnapshot;
use crate::core::policy::{Mode, Policy};

/// The only AdmissionReview version served.
pub const API_VERSION: &str = "admission.k8s.io/v1";

/// The admission layer's error: why a body is not a reviewable AdmissionReview
/// (these become 400s: there is no request uid to answer to), and why a
/// response cannot be read back.
#[derive(Debug, thiserror::Error)]
pub enum AdmissionError {
    /// Not JSON, or not the shape of an AdmissionReview.
    #[error("body is not a valid AdmissionReview")]
    Invalid(#[source] serde_json::Error),
    /// Another apiVersion or kind.
    #[error(
        "unsupported apiVersion {api_version:?} kind {kind:?}; runner-fence serves admission.k8s.io/v1 AdmissionReview only (set admissionReviewVersions: [v1])"
    )]
    Unsupported {
        /// The body's apiVersion.
        api_version: String,
        /// The body's kind.
        kind: String,
    },
    /// No `request`.
    #[error("AdmissionReview has no request")]
    NoRequest,
    /// A review could not be encoded (a bug).
    #[error("cannot encode the AdmissionReview")]
    Encode(#[source] serde_json::Error),
    /// A response's patch is not base64.
    #[error("patch is not base64")]
    PatchNotBase64(#[source] base64::DecodeError),
    /// A response's patch is not a JSON Patch.
    #[error("patch is not a JSON Patch")]
    PatchNotJsonPatch(#[source] serde_json::Error),
    /// The request could not be evaluated.
    #[error(transparent)]
    Review(#[from] ReviewError),
}

impl AdmissionError {
    /// Short reason for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            AdmissionError::Invalid(_) => "invalid-json",
            AdmissionError::Unsupported { .. } => "unsupported-version",
            AdmissionError::NoRequest => "no-request",
            _ => "invalid-input",
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReviewIn<R> {
    api_version: Option<String>,
    kind: Option<String>,
    request: Option<R>,
}

#[derive(Deserialize, Default)]
struct Gvk {
    #[serde(default)]
    group: String,
    #[serde(default)]
    kind: String,
}

#[derive(Deserialize, Default)]
struct Gvr {
    #[serde(default)]
    group: String,
    #[serde(default)]
    resource: String,
}

/// The fields of `request` runner-fence reads, with the object decoded in the
/// same pass (reading the body twice cost more than all the rules together).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestIn {
    uid: String,
    #[serde(default)]
    kind: Gvk,
    #[serde(default)]
    resource: Gvr,
    #[serde(default)]
    sub_resource: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    operation: String,
    #[serde(default, deserialize_with = "crate::core::engine::pod::object_only")]
    object: Option<PodView>,
    #[serde(default, deserialize_with = "crate::core::engine::pod::object_only")]
    old_object: Option<PodView>,
    #[serde(default)]
    dry_run: Option<bool>,
    #[serde(skip)]
    object_error: Option<ReviewError>,
}

/// The same request with the objects left undecoded: the fallback that still
/// knows the uid when an object is not a valid Pod.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LenientRequest {
    uid: String,
    #[serde(default)]
    kind: Gvk,
    #[serde(default)]
    resource: Gvr,
    #[serde(default)]
    sub_resource: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    operation: String,
    #[serde(default)]
    object: Option<Box<RawValue>>,
    #[serde(default)]
    old_object: Option<Box<RawValue>>,
    #[serde(default)]
    dry_run: Option<bool>,
}

impl RequestIn {
    /// `request.uid`
    pub fn uid(&self) -> &str {
        &self.uid
    }
    /// `request.namespace`
    pub fn namespace(&self) -> &str {
        self.namespace.as_deref().unwrap_or("")
    }
    /// The pod name, or its generateName when the name is still empty.
    pub fn display_name(&self) -> String {
        match self.name.as_deref() {
            Some(n) if !n.is_empty() => n.to_string(),
            _ => self
                .object
                .as_ref()
                .and_then(|o| o.metadata.generate_name.as_ref())
                .map(|g| format!("{g}*"))
                .unwrap_or_default(),
        }
    }
    /// `request.operation`
    pub fn operation(&self) -> &str {
        &self.operation
    }
    /// `request.dryRun`
    pub fn dry_run(&self) -> bool {
        self.dry_run.unwrap_or(false)
    }
    /// `request.object`, decoded.
    pub fn object(&self) -> Option<&PodView> {
        self.object.as_ref()
    }

    /// The node a request places something on, for the rules that must know
    /// whether it is protected: a binding's target, or the node of a pod that
    /// gets ephemeral containers.
    pub fn named_node(&self) -> Option<&str> {
        let object = self.object.as_ref()?;
        let core = self.resource.group.is_empty();
        let node = match (
            core,
            self.resource.resource.as_str(),
            self.sub_resource.as_deref().unwrap_or(""),
        ) {
            (true, "pods", "binding") | (true, "bindings", "") => {
                object.target.as_ref().map(|t| t.name.as_str())
            }
            (true, "pods", "ephemeralcontainers") => object.spec().node_name.as_deref(),
            _ => None,
        };
        node.filter(|n| !n.is_empty())
    }
}

fn check_envelope(api_version: Option<String>, kind: Option<String>) -> Result<(), AdmissionError> {
    let api_version = api_version.unwrap_or_default();
    let kind = kind.unwrap_or_default();
    if api_version != API_VERSION || kind != "AdmissionReview" {
        return Err(AdmissionError::Unsupported { api_version, kind });
    }
    Ok(())
}

/// Decodes an AdmissionReview body.
pub fn parse_review(body: &[u8]) -> Result<RequestIn, AdmissionError> {
    if let Ok(review) = serde_json::from_slice::<ReviewIn<RequestIn>>(body) {
        check_envelope(review.api_version, review.kind)?;
        return review.request.ok_or(AdmissionError::NoRequest);
    }
    // Slow path, only for bodies the typed pass rejected: tell a broken
    // envelope (400) from a broken object (a denial the user can read).
    let review: ReviewIn<LenientRequest> =
        serde_json::from_slice(body).map_err(AdmissionError::Invalid)?;
    check_envelope(review.api_version, review.kind)?;
    let r = review.request.ok_or(AdmissionError::NoRequest)?;
    let decode = |o: &Option<Box<RawValue>>| -> Result<Option<PodView>, ReviewError> {
        o.as_deref()
            .map(|raw| PodView::decode(raw.get()))
            .transpose()
    };
    let (object, e1) = match decode(&r.object) {
        Ok(o) => (o, None),
        Err(e) => (None, Some(e)),
    };
    let (old_object, e2) = match decode(&r.old_object) {
        Ok(o) => (o, None),
        Err(e) => (None, Some(ReviewError::OldObject(Box::new(e)))),
    };
    Ok(RequestIn {
        uid: r.uid,
        kind: r.kind,
        resource: r.resource,
        sub_resource: r.sub_resource,
        name: r.name,
        namespace: r.namespace,
        operation: r.operation,
        object,
        old_object,
        dry_run: r.dry_run,
        object_error: e1.or(e2),
    })
}

/// Runs the engine on a decoded request.
pub fn decide(
    policy: &Policy,
    endpoint: Endpoint,
    req: &RequestIn,
    nodes: Option<&NodeSnapshot>,
) -> Decision {
    match engine_request(req) {
        Ok(r) => engine::review(policy, endpoint, &r, nodes),
        Err(e) => Decision::Invalid(e),
    }
}

/// Mutate then validate a decoded request: [`engine::evaluate`] of it as an
/// [`Origin::Admission`], with `object` the request's object as sent.
pub fn evaluate(
    policy: &Policy,
    req: &RequestIn,
    object: &Value,
    nodes: Option<&NodeSnapshot>,
) -> Result<Evaluation, ReviewError> {
    match engine_request(req) {
        Ok(request) => engine::evaluate(policy, &Origin::Admission { request, object }, nodes),
        // Both webhooks would deny it alike, and patch nothing.
        Err(e) => Ok(Evaluation {
            matched: false,
            profile: None,
            mutate_decision: Decision::Invalid(e.clone()),
            validate_decision: Decision::Invalid(e),
            pod: object.clone(),
        }),
    }
}

/// The engine's view of a decoded request.
fn engine_request(req: &RequestIn) -> Result<Request<'_>, ReviewError> {
    let Some(operation) = Operation::parse(&req.operation) else {
        return Err(ReviewError::UnknownOperation(req.operation.clone()));
    };
    // The resource names what the object is; tolerate reviews (hand-written
    // ones in `eval`) that give only the kind.
    let (group, resource) = if req.resource.resource.is_empty() && req.kind.kind == "Pod" {
        (req.kind.group.as_str(), "pods")
    } else {
        (req.resource.group.as_str(), req.resource.resource.as_str())
    };
    Ok(Request {
        group,
        kind: &req.kind.kind,
        resource,
        sub_resource: req.sub_resource.as_deref().unwrap_or(""),
        operation,
        namespace: req.namespace(),
        name: req.name.as_deref().unwrap_or(""),
        object: req.object.as_ref(),
        old_object: req.old_object.as_ref(),
        object_error: req.object_error.as_ref(),
    })
}

/// An AdmissionReview v1 as runner-fence answers it. The fields are declared
/// in sorted order, as the JSON tree this replaced was written, so the bytes
/// on the wire are the same.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ReviewOut {
    /// Always `admission.k8s.io/v1`.
    #[serde(rename = "apiVersion")]
    pub api_version: &'static str,
    /// Always `AdmissionReview`.
    pub kind: &'static str,
    /// The answer.
    pub response: AdmissionResponse,
}

/// `response` of an AdmissionReview.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionResponse {
    /// Whether the request is admitted.
    pub allowed: bool,
    /// Recorded in the apiserver's audit log (keys get the webhook's name as prefix).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub audit_annotations: BTreeMap<String, String>,
    /// The JSON Patch, base64.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch: Option<String>,
    /// `JSONPatch` when there is a patch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch_type: Option<&'static str>,
    /// Why a request is denied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    /// `request.uid`.
    pub uid: String,
    /// Shown to the client (kubectl, the job log).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// `response.status` of a denial.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Status {
    /// 400 for a request that could not be reviewed, 403 for a rule's denial.
    pub code: u16,
    /// What is wrong and how to fix it.
    pub message: String,
    /// `BadRequest` or `Forbidden`.
    pub reason: &'static str,
}

/// The AdmissionReview response for a decision.
pub fn response(uid: &str, d: &Decision) -> ReviewOut {
    let status = d.message().map(|message| {
        let (code, reason) = match d {
            Decision::Invalid(_) => (400, "BadRequest"),
            _ => (403, "Forbidden"),
        };
        Status {
            code,
            message,
            reason,
        }
    });
    let patch = Some(d.patch())
        .filter(|p| d.allowed() && !p.is_empty())
        .map(|p| {
            let bytes = serde_json::to_vec(p).unwrap_or_default();
            base64::engine::general_purpose::STANDARD.encode(bytes)
        });
    ReviewOut {
        api_version: API_VERSION,
        kind: "AdmissionReview",
        response: AdmissionResponse {
            allowed: d.allowed(),
            audit_annotations: d.audit_annotations(),
            patch_type: patch.as_ref().map(|_| "JSONPatch"),
            patch,
            status,
            uid: uid.to_string(),
            warnings: d.warnings(),
        },
    }
}

/// Everything one review produced, for the server's logs and metrics.
pub struct Reviewed {
    /// Mode of the policy that reviewed it (`enforce` when none covers the namespace).
    pub mode: Mode,
    /// The AdmissionReview to send back.
    pub response: ReviewOut,
    /// The engine's decision.
    pub decision: Decision,
    /// The decoded request.
    pub request: RequestIn,
}

/// Body in, AdmissionReview out: what `/mutate` and `/validate` do.
pub fn handle(
    policy: &Policy,
    endpoint: Endpoint,
    body: &[u8],
    nodes: Option<&NodeSnapshot>,
) -> Result<Reviewed, AdmissionError> {
    Ok(answer(policy, endpoint, parse_review(body)?, nodes))
}

/// A decoded request in, the AdmissionReview out.
pub fn answer(
    policy: &Policy,
    endpoint: Endpoint,
    request: RequestIn,
    nodes: Option<&NodeSnapshot>,
) -> Reviewed {
    let decision = decide(policy, endpoint, &request, nodes);
    Reviewed {
        mode: policy.mode,
        response: response(request.uid(), &decision),
        decision,
        request,
    }
}

/// [`answer`] with the policy of a set that covers the request's namespace.
/// A namespace no policy covers is skipped (an unsupported resource is still
/// reported, as one policy would).
pub fn answer_set(
    set: &PolicySet,
    endpoint: Endpoint,
    request: RequestIn,
    nodes: Option<&NodeSnapshot>,
) -> Reviewed {
    let Some(policy) = set.covering(request.namespace()).or(set.first()) else {
        return Reviewed {
            mode: Mode::Enforce,
            response: response(request.uid(), &Decision::Skip),
            decision: Decision::Skip,
            request,
        };
    };
    answer(policy, endpoint, request, nodes)
}

/// [`handle`] with the policy of a set that covers the request's namespace.
pub fn handle_set(
    set: &PolicySet,
    endpoint: Endpoint,
    body: &[u8],
    nodes: Option<&NodeSnapshot>,
) -> Result<Reviewed, AdmissionError> {
    Ok(answer_set(set, endpoint, parse_review(body)?, nodes))
}

/// Decodes the JSON Patch of a response (for tests and `eval`).
pub fn response_patch(
    review: &ReviewOut,
) -> Result<Vec<json_patch::PatchOperation>, AdmissionError> {
    let Some(b64) = review.response.patch.as_deref() else {
        return Ok(Vec::new());
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(AdmissionError::PatchNotBase64)?;
    serde_json::from_slice(&bytes).map_err(AdmissionError::PatchNotJsonPatch)
}
