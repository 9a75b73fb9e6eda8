//! The no-op `raw` baseline's parse of an AdmissionReview: the envelope and the
//! uid, the object only scanned as JSON. One definition for the no-op webhook
//! (examples/noop_webhook.rs) and the benchmark that compares a review with it
//! (benches/engine.rs).

#[derive(serde::Deserialize)]
pub struct RawReview<'a> {
    #[serde(borrow)]
    pub request: RawRequest<'a>,
}

#[derive(serde::Deserialize)]
pub struct RawRequest<'a> {
    pub uid: String,
    /// Validated as JSON, never decoded.
    #[serde(borrow, default)]
    #[allow(dead_code)]
    pub object: Option<&'a serde_json::value::RawValue>,
}
