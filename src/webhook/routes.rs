//! HTTP routes: `/mutate` and `/validate` on the webhook port, `/healthz`,
//! `/readyz` and `/metrics` on the admin port.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State as AxState;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::sync::Semaphore;

use super::State;
use super::metrics::{EndpointLabels, ReviewLabels, ViolationLabels};
use crate::core::engine::{Decision, Endpoint};
use crate::core::policy::Mode;
use crate::core::report::Report;
use crate::webhook::admission;

/// The apiserver's own request size limit.
pub(crate) const MAX_BODY_BYTES: usize = 3 << 20;

/// What the webhook port serves: one router whose two handlers read the body
/// first, within `body_timeout` and the size cap, *before* taking a permit of
/// the one `max_concurrency` limit both endpoints share (a slow client must not
/// hold one). A single router and no middleware: this is every admission's
/// path, and a second router behind a boxed middleware cost more per review
/// than the rules.
pub(crate) fn admission_service(
    state: Arc<State>,
    max_concurrency: usize,
    body_timeout: Duration,
) -> Router {
    router(Arc::new(Admission {
        permits: Semaphore::new(max_concurrency.clamp(1, Semaphore::MAX_PERMITS)),
        body_timeout,
        state,
    }))
}

fn router(admission: Arc<Admission>) -> Router {
    Router::new()
        .route("/mutate", post(mutate))
        .route("/validate", post(validate))
        .method_not_allowed_fallback(wrong_method)
        .fallback(unknown_path)
        .with_state(admission)
}

/// The admission router with the default limits (`--max-concurrency`,
/// `--body-timeout-ms`), for tests and benchmarks.
pub fn admission_router(state: Arc<State>) -> Router {
    admission_service(
        state,
        DEFAULT_MAX_CONCURRENCY,
        Duration::from_millis(DEFAULT_BODY_TIMEOUT_MS),
    )
}

/// `--max-concurrency`'s default.
pub(crate) const DEFAULT_MAX_CONCURRENCY: usize = 512;
/// `--body-timeout-ms`'s default.
pub(crate) const DEFAULT_BODY_TIMEOUT_MS: u64 = 5000;

/// What the admission handlers share: the state, the limit, the body deadline.
struct Admission {
    state: Arc<State>,
    /// One pool for both endpoints; waiters queue in order.
    permits: Semaphore,
    body_timeout: Duration,
}

async fn mutate(AxState(a): AxState<Arc<Admission>>, req: axum::extract::Request) -> Response {
    admit(&a, Endpoint::Mutate, req).await
}

async fn validate(AxState(a): AxState<Arc<Admission>>, req: axum::extract::Request) -> Response {
    admit(&a, Endpoint::Validate, req).await
}

/// Reads the body, then waits for a permit, then reviews.
async fn admit(a: &Admission, endpoint: Endpoint, req: axum::extract::Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = match read_body(a, endpoint.as_str(), body).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    // The semaphore is never closed, so acquiring only fails if it were.
    let Ok(_permit) = a.permits.acquire().await else {
        return bad(
            &a.state,
            endpoint.as_str(),
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting-down",
            "runner-fence is shutting down".to_string(),
        );
    };
    review(&a.state, endpoint, &parts.headers, &body).await
}

/// Buffers the request body within a deadline and the size cap; a body that
/// is too large, too slow or cut off is answered, counted and logged here.
async fn read_body(
    a: &Admission,
    endpoint: &'static str,
    body: axum::body::Body,
) -> Result<Bytes, Response> {
    let s = &*a.state;
    // A client that resets its HTTP/2 stream (or closes the connection) while
    // sending makes hyper drop this future: the guard still counts it.
    let mut reading = Reading {
        state: s,
        endpoint,
        finished: false,
    };
    let read =
        tokio::time::timeout(a.body_timeout, axum::body::to_bytes(body, MAX_BODY_BYTES)).await;
    reading.finished = true;
    match read {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(e)) => {
            let too_large = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            Err(if too_large {
                bad(
                    s,
                    endpoint,
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too-large",
                    format!("request body is larger than {MAX_BODY_BYTES} bytes"),
                )
            } else {
                bad(
                    s,
                    endpoint,
                    StatusCode::BAD_REQUEST,
                    "body-incomplete",
                    format!("cannot read the request body: {e}"),
                )
            })
        }
        Err(_) => Err(bad(
            s,
            endpoint,
            StatusCode::REQUEST_TIMEOUT,
            "body-timeout",
            format!(
                "request body not received within {} ms",
                a.body_timeout.as_millis()
            ),
        )),
    }
}

/// Counts a request whose body read was abandoned because the client went away.
struct Reading<'a> {
    state: &'a State,
    endpoint: &'static str,
    finished: bool,
}

impl Drop for Reading<'_> {
    fn drop(&mut self) {
        if !self.finished {
            let reason = "body-incomplete";
            self.state.metrics.bad_request(self.endpoint, reason);
            tracing::warn!(
                endpoint = self.endpoint,
                reason,
                detail = "the client went away before the request body was complete",
                "rejected request"
            );
        }
    }
}

/// The `endpoint` label of a request path.
fn endpoint_label(path: &str) -> &'static str {
    match path {
        "/mutate" => Endpoint::Mutate.as_str(),
        "/validate" => Endpoint::Validate.as_str(),
        _ => "other",
    }
}

async fn wrong_method(AxState(a): AxState<Arc<Admission>>, method: Method, uri: Uri) -> Response {
    let mut resp = bad(
        &a.state,
        endpoint_label(uri.path()),
        StatusCode::METHOD_NOT_ALLOWED,
        "method",
        format!("method {method} is not allowed; the apiserver POSTs AdmissionReviews"),
    );
    resp.headers_mut()
        .insert(header::ALLOW, header::HeaderValue::from_static("POST"));
    resp
}

async fn unknown_path(AxState(a): AxState<Arc<Admission>>, uri: Uri) -> Response {
    bad(
        &a.state,
        "other",
        StatusCode::NOT_FOUND,
        "unknown-path",
        format!(
            "no endpoint {}; runner-fence serves /mutate and /validate",
            uri.path()
        ),
    )
}

/// The admin router (plain HTTP, for probes and Prometheus).
pub fn admin_router(state: Arc<State>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/livez", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn readyz(AxState(s): AxState<Arc<State>>) -> Response {
    let missing = s.not_ready_reasons();
    if missing.is_empty() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", missing.join(", ")),
        )
            .into_response()
    }
}

async fn metrics(AxState(s): AxState<Arc<State>>) -> Response {
    if let Some(n) = s.nodes.load_full() {
        s.metrics.nodes.set(n.len() as i64);
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
        .into_response()
}

/// A request answered with a 4xx before review: counted by reason, logged
/// (the text in `detail`, `message` is the event's own), the text sent back.
fn bad(
    s: &State,
    endpoint: &'static str,
    status: StatusCode,
    reason: &'static str,
    message: String,
) -> Response {
    s.metrics.bad_request(endpoint, reason);
    tracing::warn!(
        endpoint,
        reason,
        status = status.as_u16(),
        detail = %message,
        "rejected request"
    );
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        message + "\n",
    )
        .into_response()
}

async fn review(s: &State, endpoint: Endpoint, headers: &HeaderMap, body: &[u8]) -> Response {
    let started = Instant::now();
    if let Err(ctype) = json_content_type(headers) {
        return bad(
            s,
            endpoint.as_str(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "content-type",
            format!("content type must be application/json, got {ctype:?}"),
        );
    }
    let request = match admission::parse_review(body) {
        Ok(r) => r,
        Err(e) => {
            let message = Report(&e).to_string();
            return bad(
                s,
                endpoint.as_str(),
                StatusCode::BAD_REQUEST,
                e.reason(),
                message,
            );
        }
    };
    let nodes = s.nodes.load_full();
    // Without the node cache, a node the request places something on is read
    // from the API (or, failing that, counts as protected): names alone cannot
    // tell GitLab's nodes. Only /validate decides on it.
    let looked_up = match (&nodes, endpoint, request.named_node()) {
        (None, Endpoint::Validate, Some(node))
            if s.policies.load().covering(request.namespace()).is_some() =>
        {
            Some(s.look_up_node(node).await)
        }
        _ => None,
    };
    let policies = s.policies.load();
    let snapshot = nodes.as_deref().or(looked_up.as_ref());
    let reviewed = admission::answer_set(&policies, endpoint, request, snapshot);
    let (rule, elapsed) = record(s, endpoint, reviewed.mode, &reviewed.decision, started);
    log_review(endpoint, &reviewed, rule, elapsed);
    let body = serde_json::to_vec(&reviewed.response).unwrap_or_default();
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// `Ok` for `application/json` (with any parameters); else the content type sent.
fn json_content_type(headers: &HeaderMap) -> Result<(), &str> {
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let is_json = ctype
        .split(';')
        .next()
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"));
    if is_json { Ok(()) } else { Err(ctype) }
}

/// Counts the review and its violations and observes its latency; returns the
/// rule it is counted under (the first denied or audited, or `none`) and the latency.
fn record(
    s: &State,
    endpoint: Endpoint,
    mode: Mode,
    d: &Decision,
    started: Instant,
) -> (&'static str, Duration) {
    let rule = d
        .denials()
        .first()
        .or(d.audited().first())
        .map(|v| v.rule.as_str())
        .unwrap_or("none");
    s.metrics
        .reviews
        .get_or_create(&ReviewLabels {
            endpoint: endpoint.as_str(),
            decision: d.outcome().as_str(),
            mode: mode.as_str(),
            rule,
        })
        .inc();
    for (list, m) in [(d.denials(), "enforce"), (d.audited(), "audit")] {
        for v in list {
            s.metrics
                .violations
                .get_or_create(&ViolationLabels {
                    endpoint: endpoint.as_str(),
                    rule: v.rule.as_str(),
                    mode: m,
                })
                .inc();
        }
    }
    let elapsed = started.elapsed();
    s.metrics
        .latency
        .get_or_create(&EndpointLabels {
            endpoint: endpoint.as_str(),
        })
        .observe(elapsed.as_secs_f64());
    (rule, elapsed)
}

/// One structured line per review. An event rather than a span: it carries
/// the same fields and costs a fraction (this is on every admission's path).
/// The event's `message` is `review`; what a denial says is `denial`, what
/// audit mode would deny `would_deny` (empty when there is none).
fn log_review(endpoint: Endpoint, reviewed: &admission::Reviewed, rule: &str, elapsed: Duration) {
    if !tracing::enabled!(tracing::Level::INFO) {
        return;
    }
    let (req, d) = (&reviewed.request, &reviewed.decision);
    tracing::info!(
        uid = req.uid(),
        endpoint = endpoint.as_str(),
        namespace = req.namespace(),
        pod = %req.display_name(),
        operation = req.operation(),
        dry_run = req.dry_run(),
        profile = d.profile().unwrap_or(""),
        decision = d.outcome().as_str(),
        rule,
        latency_us = elapsed.as_micros() as u64,
        patch_ops = d.patch().len(),
        warnings = d.audited().len(),
        denial = d.message().unwrap_or_default(),
        would_deny = d.would_deny().unwrap_or_default(),
        "review"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    fn request(path: &str) -> axum::extract::Request {
        axum::http::Request::post(path)
            .header("content-type", "application/json")
            .body(axum::body::Body::from("{}"))
            .unwrap_or_default()
    }

    #[tokio::test]
    async fn one_limit_covers_both_endpoints() {
        let policy = crate::core::policy::embedded().expect("policy");
        let admission = Arc::new(Admission {
            state: Arc::new(State::new(policy, false)),
            permits: Semaphore::new(1),
            body_timeout: Duration::from_secs(1),
        });
        let app = router(admission.clone());
        // Take the only permit...
        let held = admission.permits.acquire().await.expect("permit");
        // ...and neither endpoint gets through while it is held.
        for path in ["/mutate", "/validate"] {
            let waiting = tokio::time::timeout(
                Duration::from_millis(200),
                app.clone().oneshot(request(path)),
            )
            .await;
            assert!(waiting.is_err(), "{path} ran without a permit");
        }
        drop(held);
        let resp = app.oneshot(request("/validate")).await.expect("answered");
        assert_eq!(
            resp.status(),
            StatusCode::BAD_REQUEST,
            "answered once the permit is free"
        );
    }
}
