//! The webhook server: in-process router tests and real TLS on 127.0.0.1.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::{fixture, fixture_names, reference};
use http_body_util::BodyExt;
use rstest::rstest;
use runner_fence::core::engine::Endpoint;
use runner_fence::webhook::admission;
use runner_fence::webhook::routes::{admin_router, admission_router};
use runner_fence::webhook::{ServeArgs, State};
use serde_json::Value;
use tower::ServiceExt;

fn state() -> Arc<State> {
    Arc::new(State::new(reference(), false))
}

async fn send(router: axum::Router, req: Request<Body>) -> (StatusCode, String) {
    let resp = router.oneshot(req).await.expect("response");
    let status = resp.status();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&body).to_string())
}

fn post(path: &str, ctype: &str, body: impl Into<Body>) -> Request<Body> {
    Request::post(path)
        .header("content-type", ctype)
        .body(body.into())
        .expect("request")
}

#[tokio::test]
async fn every_fixture_through_both_endpoints() {
    let s = state();
    let policy = reference();
    let mut denied = 0;
    for name in fixture_names() {
        let body = serde_json::to_vec(&fixture(&name)).expect("json");
        for (path, ep) in [
            ("/mutate", Endpoint::Mutate),
            ("/validate", Endpoint::Validate),
        ] {
            let (status, text) = send(
                admission_router(s.clone()),
                post(path, "application/json", body.clone()),
            )
            .await;
            assert_eq!(status, StatusCode::OK, "{name} {path}: {text}");
            let got: Value = serde_json::from_str(&text).expect("json response");
            let want = serde_json::to_value(
                admission::handle(&policy, ep, &body, None)
                    .expect("engine")
                    .response,
            )
            .expect("json");
            assert_eq!(
                got, want,
                "{name} {path}: the server answers what the engine decides"
            );
            if ep == Endpoint::Validate && got["response"]["allowed"] == false {
                denied += 1;
            }
        }
    }
    let (_, metrics) = send(
        admin_router(s),
        Request::get("/metrics").body(Body::empty()).expect("req"),
    )
    .await;
    // Unmutated fixtures posted to /validate: most lack the runner affinity.
    assert!(denied > 0);
    let line = format!(
        "runner_fence_reviews_total{{endpoint=\"validate\",decision=\"denied\",mode=\"enforce\",rule=\"protected-nodes\"}} {denied}"
    );
    assert!(metrics.contains(&line), "{line} not in {metrics}");
    assert!(
        metrics.contains("runner_fence_reviews_total{endpoint=\"mutate\",decision=\"skipped\""),
        "{metrics}"
    );
}

fn review_with(f: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut v = fixture("plain-job.json");
    f(&mut v);
    serde_json::to_vec(&v).expect("json")
}

#[rstest]
#[case::wrong_method(Request::get("/validate").body(Body::empty()).expect("r"), StatusCode::METHOD_NOT_ALLOWED, "")]
#[case::unknown_path(post("/admit", "application/json", "{}"), StatusCode::NOT_FOUND, "")]
#[case::wrong_content_type(
    post("/validate", "text/plain", "{}"),
    StatusCode::UNSUPPORTED_MEDIA_TYPE,
    "content type must be application/json"
)]
#[case::no_content_type(Request::post("/validate").body(Body::from("{}")).expect("r"), StatusCode::UNSUPPORTED_MEDIA_TYPE, "application/json")]
#[case::invalid_json(
    post("/validate", "application/json", "{not json"),
    StatusCode::BAD_REQUEST,
    "not a valid AdmissionReview"
)]
#[case::truncated(post("/mutate", "application/json", { let b = review_with(|_| {}); b[..b.len() / 2].to_vec() }), StatusCode::BAD_REQUEST, "EOF")]
#[case::oversized(post("/mutate", "application/json", vec![b' '; 4 << 20]), StatusCode::PAYLOAD_TOO_LARGE, "")]
#[case::no_request(
    post(
        "/validate",
        "application/json",
        r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#
    ),
    StatusCode::BAD_REQUEST,
    "has no request"
)]
#[case::v1beta1(post("/validate", "application/json", review_with(|v| v["apiVersion"] = "admission.k8s.io/v1beta1".into())), StatusCode::BAD_REQUEST, "admission.k8s.io/v1 AdmissionReview only")]
#[case::no_uid(post("/validate", "application/json", review_with(|v| { v["request"].as_object_mut().map(|o| o.remove("uid")); })), StatusCode::BAD_REQUEST, "uid")]
#[case::json_charset(post("/validate", "application/json; charset=utf-8", review_with(|_| {})), StatusCode::OK, "\"allowed\"")]
#[case::no_object(post("/validate", "application/json", review_with(|v| v["request"]["object"] = Value::Null)), StatusCode::OK, "has no object")]
#[case::not_a_pod(post("/validate", "application/json", review_with(|v| { v["request"]["kind"]["kind"] = "Deployment".into(); v["request"]["resource"]["resource"] = "deployments".into(); v["request"]["resource"]["group"] = "apps".into(); })), StatusCode::OK, "only pods, pods/binding")]
#[case::object_is_an_array(post("/mutate", "application/json", review_with(|v| v["request"]["object"] = Value::Array(vec![Value::Null]))), StatusCode::OK, "object is not a JSON object")]
#[case::no_spec(post("/mutate", "application/json", review_with(|v| { v["request"]["object"].as_object_mut().map(|o| o.remove("spec")); })), StatusCode::OK, "has no spec")]
#[case::garbage_object(post("/mutate", "application/json", review_with(|v| v["request"]["object"]["spec"] = "x".into())), StatusCode::OK, "not a valid Pod")]
#[tokio::test]
async fn bad_input_gets_a_clear_answer(
    #[case] req: Request<Body>,
    #[case] status: StatusCode,
    #[case] fragment: &str,
) {
    let s = state();
    let (got, text) = send(admission_router(s.clone()), req).await;
    assert_eq!(got, status, "{text}");
    assert!(text.contains(fragment), "{text}");
    if status == StatusCode::OK && fragment != "\"allowed\"" {
        let v: Value = serde_json::from_str(&text).expect("review");
        assert_eq!(v["response"]["allowed"], false, "{text}");
    }
    // And the server keeps serving.
    let (ok, _) = send(
        admission_router(s),
        post("/validate", "application/json", review_with(|_| {})),
    )
    .await;
    assert_eq!(ok, StatusCode::OK);
}

#[tokio::test]
async fn readiness_flips_on_shutdown_and_waits_for_the_node_cache() {
    let s = state();
    let (ok, _) = send(
        admin_router(s.clone()),
        Request::get("/readyz").body(Body::empty()).expect("r"),
    )
    .await;
    assert_eq!(ok, StatusCode::OK);
    s.begin_shutdown();
    let (st, text) = send(
        admin_router(s.clone()),
        Request::get("/readyz").body(Body::empty()).expect("r"),
    )
    .await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE);
    assert!(text.contains("shutting down"));
    let cached = Arc::new(State::new(reference(), true));
    let (st, text) = send(
        admin_router(cached.clone()),
        Request::get("/readyz").body(Body::empty()).expect("r"),
    )
    .await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE);
    assert!(text.contains("node cache not synced"));
    cached.set_nodes(runner_fence::core::nodes::NodeSnapshot::new([]));
    let (st, _) = send(
        admin_router(cached),
        Request::get("/readyz").body(Body::empty()).expect("r"),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = send(
        admin_router(s),
        Request::get("/healthz").body(Body::empty()).expect("r"),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
}

// ---- real TLS on 127.0.0.1 ----

fn args() -> ServeArgs {
    common::serve_args()
}

fn client(ca_pem: &str, http2: bool, identity: Option<&str>) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).expect("ca"))
        .timeout(Duration::from_secs(10));
    if http2 {
        b = b.http2_prior_knowledge();
    } else {
        b = b.http1_only();
    }
    if let Some(id) = identity {
        b = b.identity(reqwest::Identity::from_pem(id.as_bytes()).expect("identity"));
    }
    b.build().expect("client")
}

async fn post_fixture(
    c: &reqwest::Client,
    port: u16,
    path: &str,
    name: &str,
) -> reqwest::Result<reqwest::Response> {
    c.post(format!("https://localhost:{port}{path}"))
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&fixture(name)).expect("json"))
        .send()
        .await
}

#[tokio::test]
async fn tls_http1_and_http2_with_a_generated_certificate() {
    let r = common::start(args()).await;
    let ca = r.ca();
    let (addr, admin, state) = (r.addr, r.admin, r.state.clone());
    for http2 in [false, true] {
        let c = client(&ca, http2, None);
        let resp = post_fixture(
            &c,
            addr.port(),
            "/validate",
            "job-with-toleration-overwrite.json",
        )
        .await
        .expect("response");
        let want = if http2 {
            reqwest::Version::HTTP_2
        } else {
            reqwest::Version::HTTP_11
        };
        assert_eq!(resp.version(), want);
        let v: Value = resp.json().await.expect("json");
        assert_eq!(v["response"]["allowed"], false);
        // Keep-alive: a second request on the same client.
        let resp = post_fixture(&c, addr.port(), "/mutate", "plain-job.json")
            .await
            .expect("response");
        let v: Value = resp.json().await.expect("json");
        assert_eq!(v["response"]["patchType"], "JSONPatch");
    }
    // A client that does not trust the CA is refused.
    let other = runner_fence::webhook::certs::generate(&["localhost".into()], 1).expect("other CA");
    assert!(
        post_fixture(
            &client(&other.ca_pem, false, None),
            addr.port(),
            "/validate",
            "plain-job.json"
        )
        .await
        .is_err()
    );
    let metrics = reqwest::get(format!("http://{admin}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("runner_fence_certificate_expiry_timestamp_seconds"),
        "{metrics}"
    );
    drop(state);
    r.stop().await;
}

fn write_pair(dir: &Path, g: &runner_fence::webhook::certs::Generated) {
    std::fs::create_dir_all(dir).expect("dir");
    std::fs::write(dir.join("tls.crt"), &g.cert_pem).expect("crt");
    std::fs::write(dir.join("tls.key"), &g.key_pem).expect("key");
}

#[tokio::test]
async fn certificate_rotation_through_a_data_symlink_swap() {
    // The layout of a mounted Secret: tls.crt -> ..data/tls.crt, ..data -> ..2026_v1
    let dir = tempfile::tempdir().expect("tmp");
    let names = ["localhost".to_string(), "127.0.0.1".to_string()];
    let first = runner_fence::webhook::certs::generate(&names, 30).expect("first");
    let second = runner_fence::webhook::certs::generate(&names, 60).expect("second");
    let expiry = |g: &runner_fence::webhook::certs::Generated| {
        format!(
            "runner_fence_certificate_expiry_timestamp_seconds {}\n",
            g.not_after.unix_timestamp()
        )
    };
    write_pair(&dir.path().join("..v1"), &first);
    write_pair(&dir.path().join("..v2"), &second);
    std::os::unix::fs::symlink("..v1", dir.path().join("..data")).expect("link");
    std::os::unix::fs::symlink("..data/tls.crt", dir.path().join("tls.crt")).expect("link");
    std::os::unix::fs::symlink("..data/tls.key", dir.path().join("tls.key")).expect("link");
    let mut a = args();
    a.tls_cert = Some(dir.path().join("tls.crt"));
    a.tls_key = Some(dir.path().join("tls.key"));
    let r = common::start(a).await;
    let port = r.addr.port();
    let metrics = r.state.metrics.encode();
    assert!(metrics.contains(&expiry(&first)), "{metrics}");
    assert!(
        post_fixture(
            &client(&first.ca_pem, false, None),
            port,
            "/validate",
            "plain-job.json"
        )
        .await
        .is_ok()
    );
    assert!(
        post_fixture(
            &client(&second.ca_pem, false, None),
            port,
            "/validate",
            "plain-job.json"
        )
        .await
        .is_err()
    );
    // Atomic swap, as the kubelet does it: new link, rename over ..data.
    std::os::unix::fs::symlink("..v2", dir.path().join("..data_tmp")).expect("link");
    std::fs::rename(dir.path().join("..data_tmp"), dir.path().join("..data")).expect("swap");
    let mut served_new = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if post_fixture(
            &client(&second.ca_pem, false, None),
            port,
            "/validate",
            "plain-job.json",
        )
        .await
        .is_ok()
        {
            served_new = true;
            break;
        }
    }
    assert!(
        served_new,
        "the rotated certificate is served without a restart"
    );
    let metrics = r.state.metrics.encode();
    assert!(
        metrics.contains(&expiry(&second)),
        "the expiry metric follows the rotated certificate: {metrics}"
    );
    // A broken key keeps the current certificate.
    std::fs::write(dir.path().join("..v2/tls.key"), "garbage").expect("break");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        post_fixture(
            &client(&second.ca_pem, false, None),
            port,
            "/validate",
            "plain-job.json"
        )
        .await
        .is_ok()
    );
    let metrics = r.state.metrics.encode();
    assert!(
        metrics.contains("runner_fence_reloads_total{kind=\"certificate\",result=\"ok\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("runner_fence_reloads_total{kind=\"certificate\",result=\"failed\"} 1"),
        "{metrics}"
    );
    r.stop().await;
}

/// Writes `text` to `path` by renaming a complete file over it.
fn replace_file(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

#[tokio::test]
async fn policy_reload_good_then_broken() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("policy.yaml");
    std::fs::write(&path, runner_fence::core::policy::EMBEDDED_POLICY).expect("write");
    let mut a = args();
    a.policy = Some(path.clone());
    let r = common::start(a).await;
    let ca = r.ca();
    let port = r.addr.port();
    let state = r.state.clone();
    let c = client(&ca, false, None);
    let allowed = |c: reqwest::Client| async move {
        let v: Value = post_fixture(&c, port, "/validate", "job-with-toleration-overwrite.json")
            .await
            .expect("resp")
            .json()
            .await
            .expect("json");
        v["response"]["allowed"].as_bool()
    };
    assert_eq!(allowed(c.clone()).await, Some(false));
    // Replaced atomically, as Kubernetes swaps a ConfigMap: a plain write can be
    // read half-done by the reload loop and counted as a second failed reload.
    replace_file(
        &path,
        &runner_fence::core::policy::EMBEDDED_POLICY.replacen("mode: enforce ", "mode: audit ", 1),
    );
    let mut switched = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if allowed(c.clone()).await == Some(true) {
            switched = true;
            break;
        }
    }
    assert!(switched, "the new policy decides");
    replace_file(&path, "mode: [broken");
    // Wait for the reload loop to have read (and refused) the broken file, by its
    // counter rather than a fixed sleep: a loaded machine may take longer.
    let failed = "runner_fence_reloads_total{kind=\"policy\",result=\"failed\"} 1";
    for _ in 0..200 {
        if state.metrics.encode().contains(failed) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        allowed(c.clone()).await,
        Some(true),
        "a broken policy keeps the old one"
    );
    let metrics = state.metrics.encode();
    assert!(
        metrics.contains("runner_fence_reloads_total{kind=\"policy\",result=\"ok\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("runner_fence_reloads_total{kind=\"policy\",result=\"failed\"} 1"),
        "{metrics}"
    );
    r.stop().await;
}

#[tokio::test]
async fn mtls_accepts_known_clients_and_rejects_others() {
    let dir = tempfile::tempdir().expect("tmp");
    // The client CA and a client certificate signed by it.
    let client_pair =
        runner_fence::webhook::certs::generate(&["apiserver".into()], 1).expect("client");
    std::fs::write(dir.path().join("client-ca.crt"), &client_pair.ca_pem).expect("write");
    let mut a = args();
    a.client_ca = Some(dir.path().join("client-ca.crt"));
    let r = common::start(a).await;
    let ca = r.ca();
    let port = r.addr.port();
    let identity = format!("{}{}", client_pair.cert_pem, client_pair.key_pem);
    let with_cert = post_fixture(
        &client(&ca, false, Some(&identity)),
        port,
        "/validate",
        "plain-job.json",
    )
    .await;
    let without = post_fixture(
        &client(&ca, false, None),
        port,
        "/validate",
        "plain-job.json",
    )
    .await;
    assert!(
        without.is_err(),
        "a client without a certificate is rejected"
    );
    let stranger = runner_fence::webhook::certs::generate(&["x".into()], 1).expect("stranger");
    let strange_id = format!("{}{}", stranger.cert_pem, stranger.key_pem);
    let strange = post_fixture(
        &client(&ca, false, Some(&strange_id)),
        port,
        "/validate",
        "plain-job.json",
    )
    .await;
    assert!(
        strange.is_err(),
        "a certificate from another CA is rejected"
    );
    let ok = with_cert.expect("a client with a certificate from the client CA is accepted");
    assert_eq!(ok.status(), reqwest::StatusCode::OK);
    r.stop().await;
}

#[tokio::test]
async fn shutdown_finishes_an_in_flight_review() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut server = common::start(args()).await;
    let ca = server.ca();
    let (addr, admin) = (server.addr, server.admin);
    // A raw TLS client that sends half a request, then waits.
    let mut tls = common::raw_tls(addr, &ca).await;
    let body = serde_json::to_vec(&fixture("plain-job.json")).expect("json");
    let head = format!(
        "POST /mutate HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes()).await.expect("head");
    tls.write_all(&body[..body.len() / 2]).await.expect("half");
    tls.flush().await.expect("flush");
    tokio::time::sleep(Duration::from_millis(100)).await;
    server.signal_stop();
    // Readiness turns 503 while the review is still in flight.
    let mut unready = false;
    for _ in 0..50 {
        match reqwest::get(format!("http://{admin}/readyz")).await {
            Ok(r) if r.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE => {
                unready = true;
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    assert!(unready, "readyz reports shutting down during the drain");
    // New connections are refused.
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err() || {
            // The listener may still exist for an instant; then a TLS request must fail.
            post_fixture(
                &client(&ca, false, None),
                addr.port(),
                "/mutate",
                "plain-job.json",
            )
            .await
            .is_err()
        }
    );
    tls.write_all(&body[body.len() / 2..]).await.expect("rest");
    tls.flush().await.expect("flush");
    let mut resp = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut resp)).await;
    let text = String::from_utf8_lossy(&resp);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("\"patchType\":\"JSONPatch\""), "{text}");
    assert!(
        server.join(Duration::from_secs(10)).await,
        "exits after the drain"
    );
}

// ---- bad input over real TLS, HTTP/1.1 and HTTP/2 ----

/// How a bad request's body is sent.
enum Sent {
    /// All at once.
    Whole(Vec<u8>),
    /// In 64 KiB pieces without a length, as a stream.
    Streamed(Vec<u8>),
    /// The first bytes, then nothing: the body never completes.
    Stalled,
    /// The first bytes, then the client gives up: the body is cut off.
    CutOff,
}

/// What the client gets back.
enum Answer {
    /// This status with this exact text.
    Text(u16, &'static str),
    /// A 200 AdmissionReview denying with this exact message.
    Denied(&'static str),
    /// Nothing: the client went away before an answer could reach it.
    Gone,
}

/// A body that sends a few bytes, then stalls or fails.
fn unfinished(cut_off: bool) -> reqwest::Body {
    use futures::StreamExt as _;
    use futures::future::Either;
    use http_body_util::BodyExt as _;
    let head = http_body_util::Full::new(axum::body::Bytes::from_static(b"{\"apiVersion\":"))
        .map_err(|never: std::convert::Infallible| -> std::io::Error { match never {} });
    let rest = if cut_off {
        Either::Left(futures::stream::iter(vec![Err(std::io::Error::other(
            "client gave up",
        ))]))
    } else {
        Either::Right(futures::stream::pending())
    };
    let frames = http_body_util::BodyStream::new(head).chain(rest);
    reqwest::Body::wrap(http_body_util::StreamBody::new(frames))
}

/// A body sent in pieces, with no length announced.
fn streamed(body: Vec<u8>) -> reqwest::Body {
    use http_body_util::BodyExt as _;
    let pieces: Vec<_> = body
        .chunks(64 << 10)
        .map(|c| {
            http_body_util::Full::new(axum::body::Bytes::copy_from_slice(c))
                .map_err(|never: std::convert::Infallible| -> std::io::Error { match never {} })
        })
        .collect();
    let frames = futures::StreamExt::flat_map(
        futures::stream::iter(pieces),
        http_body_util::BodyStream::new,
    );
    reqwest::Body::wrap(http_body_util::StreamBody::new(frames))
}

/// The body timeout of the bad-input servers.
const BODY_TIMEOUT_MS: u64 = 300;

/// Every bad input the README lists, over HTTP/1.1 and HTTP/2 through real TLS:
/// the same exact answer over both, counted once per request under `reason`.
#[rstest]
#[case::wrong_method("GET", "/validate", Some("application/json"), Sent::Whole(vec![]), Answer::Text(405, "method GET is not allowed; the apiserver POSTs AdmissionReviews\n"), "validate", "method")]
#[case::unknown_path("POST", "/admit", Some("application/json"), Sent::Whole(b"{}".to_vec()), Answer::Text(404, "no endpoint /admit; runner-fence serves /mutate and /validate\n"), "other", "unknown-path")]
#[case::wrong_content_type("POST", "/validate", Some("text/plain"), Sent::Whole(review_with(|_| {})), Answer::Text(415, "content type must be application/json, got \"text/plain\"\n"), "validate", "content-type")]
#[case::no_content_type("POST", "/mutate", None, Sent::Whole(review_with(|_| {})), Answer::Text(415, "content type must be application/json, got \"\"\n"), "mutate", "content-type")]
#[case::invalid_json("POST", "/validate", Some("application/json"), Sent::Whole(b"{not json".to_vec()), Answer::Text(400, "body is not a valid AdmissionReview: key must be a string at line 1 column 2\n"), "validate", "invalid-json")]
#[case::truncated_json("POST", "/mutate", Some("application/json"), Sent::Whole(b"{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":".to_vec()), Answer::Text(400, "body is not a valid AdmissionReview: EOF while parsing a value at line 1 column 43\n"), "mutate", "invalid-json")]
#[case::no_request("POST", "/validate", Some("application/json"), Sent::Whole(br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#.to_vec()), Answer::Text(400, "AdmissionReview has no request\n"), "validate", "no-request")]
#[case::other_version("POST", "/validate", Some("application/json"), Sent::Whole(review_with(|v| v["apiVersion"] = "admission.k8s.io/v1beta1".into())), Answer::Text(400, "unsupported apiVersion \"admission.k8s.io/v1beta1\" kind \"AdmissionReview\"; runner-fence serves admission.k8s.io/v1 AdmissionReview only (set admissionReviewVersions: [v1])\n"), "validate", "unsupported-version")]
#[case::oversized("POST", "/validate", Some("application/json"), Sent::Whole(vec![b' '; 4 << 20]), Answer::Text(413, "request body is larger than 3145728 bytes\n"), "validate", "too-large")]
#[case::oversized_stream("POST", "/mutate", Some("application/json"), Sent::Streamed(vec![b' '; 4 << 20]), Answer::Text(413, "request body is larger than 3145728 bytes\n"), "mutate", "too-large")]
#[case::slow_body(
    "POST",
    "/validate",
    Some("application/json"),
    Sent::Stalled,
    Answer::Text(408, "request body not received within 300 ms\n"),
    "validate",
    "body-timeout"
)]
#[case::body_cut_off(
    "POST",
    "/mutate",
    Some("application/json"),
    Sent::CutOff,
    Answer::Gone,
    "mutate",
    "body-incomplete"
)]
#[case::no_object("POST", "/validate", Some("application/json"), Sent::Whole(review_with(|v| v["request"]["object"] = Value::Null)), Answer::Denied("runner-fence: CREATE request for pod \"runner-kq9pz8wrx-project-4521-concurrent-0-k7d2mxq1\" has no object"), "", "")]
#[case::not_a_pod("POST", "/validate", Some("application/json"), Sent::Whole(review_with(|v| { v["request"]["kind"]["kind"] = "Deployment".into(); v["request"]["resource"]["resource"] = "deployments".into(); v["request"]["resource"]["group"] = "apps".into(); })), Answer::Denied("runner-fence: runner-fence reviews only pods, pods/binding, bindings, pods/ephemeralcontainers and pods/resize, but was sent apps/deployments Deployment; fix the rules of the webhook configuration"), "", "")]
#[tokio::test]
async fn bad_input_over_http1_and_http2(
    #[case] method: &str,
    #[case] path: &str,
    #[case] ctype: Option<&str>,
    #[case] sent: Sent,
    #[case] answer: Answer,
    #[case] endpoint: &str,
    #[case] reason: &str,
) {
    let mut a = args();
    a.body_timeout_ms = BODY_TIMEOUT_MS;
    let r = common::start(a).await;
    let ca = r.ca();
    for http2 in [false, true] {
        let c = client(&ca, http2, None);
        let mut req = c.request(
            method.parse().expect("method"),
            format!("https://localhost:{}{path}", r.addr.port()),
        );
        if let Some(ct) = ctype {
            req = req.header("content-type", ct);
        }
        req = match &sent {
            Sent::Whole(b) => req.body(b.clone()),
            Sent::Streamed(b) => req.body(streamed(b.clone())),
            Sent::Stalled => req.body(unfinished(false)),
            Sent::CutOff => req.body(unfinished(true)),
        };
        let proto = if http2 { "HTTP/2" } else { "HTTP/1.1" };
        if matches!(sent, Sent::CutOff) && !http2 {
            // reqwest gives up before it sends anything: write the request by
            // hand, half of its body, and close the connection.
            use tokio::io::AsyncWriteExt;
            let mut tls = common::raw_tls(r.addr, &ca).await;
            let head = format!(
                "POST {path} HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"apiVersion\":"
            );
            tls.write_all(head.as_bytes()).await.expect("write");
            tls.flush().await.expect("flush");
            tokio::time::sleep(Duration::from_millis(50)).await;
            drop(tls);
            continue;
        }
        let resp = req.send().await;
        match &answer {
            Answer::Gone => assert!(resp.is_err(), "{proto}: {resp:?}"),
            Answer::Text(status, text) => {
                let resp = resp.unwrap_or_else(|e| panic!("{proto}: {e:?}"));
                assert_eq!(resp.status().as_u16(), *status, "{proto}");
                assert_eq!(resp.text().await.expect("body"), *text, "{proto}");
            }
            Answer::Denied(message) => {
                let resp = resp.unwrap_or_else(|e| panic!("{proto}: {e:?}"));
                assert_eq!(resp.status().as_u16(), 200, "{proto}");
                let v: Value = resp.json().await.expect("review");
                assert_eq!(v["response"]["allowed"], false, "{proto}");
                assert_eq!(v["response"]["status"]["message"], *message, "{proto}");
            }
        }
        // The server keeps serving, on a new connection.
        let ok = post_fixture(
            &client(&ca, http2, None),
            r.addr.port(),
            "/validate",
            "plain-job.json",
        )
        .await
        .expect("still serving");
        assert_eq!(ok.status(), reqwest::StatusCode::OK, "{proto}");
    }
    if !reason.is_empty() {
        let line = format!(
            "runner_fence_bad_requests_total{{endpoint=\"{endpoint}\",reason=\"{reason}\"}} 2"
        );
        // A cut-off body is noticed a moment after the client gave up.
        let mut metrics = String::new();
        for _ in 0..50 {
            metrics = r.state.metrics.encode();
            if metrics.contains(&line) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(metrics.contains(&line), "{line} not in\n{metrics}");
    }
    r.stop().await;
}
