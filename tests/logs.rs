//! The server's log lines: one JSON object per line with exactly these keys
//! and one `message`, and plain lines without colour codes unless on a terminal.

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::Request;
use common::{fixture, reference, reference_with};
use rstest::rstest;
use runner_fence::core::engine::Endpoint;
use runner_fence::core::policy::Policy;
use runner_fence::webhook::admission;
use runner_fence::webhook::routes::admission_router;
use runner_fence::webhook::{LogFormat, State, log_subscriber};
use serde_json::Value;
use tower::ServiceExt;

/// Log output captured in memory.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut v) = self.0.lock() {
            v.extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        self.0
            .lock()
            .map(|v| String::from_utf8_lossy(&v).to_string())
            .unwrap_or_default()
    }
}

/// Sends one request through the router with `format` logging into memory.
async fn logged(
    policy: Policy,
    format: LogFormat,
    ansi: bool,
    path: &str,
    ctype: &str,
    body: Vec<u8>,
) -> String {
    let out = Captured::default();
    let writer = out.clone();
    let subscriber = log_subscriber(
        format,
        tracing_subscriber::EnvFilter::new("info"),
        ansi,
        move || writer.clone(),
    );
    // The current-thread test runtime runs the router on this thread.
    let _guard = tracing::subscriber::set_default(subscriber);
    let req = Request::post(path)
        .header("content-type", ctype)
        .body(Body::from(body))
        .expect("request");
    let resp = admission_router(Arc::new(State::new(policy, false)))
        .oneshot(req)
        .await
        .expect("response");
    drop(resp);
    out.text()
}

fn body(name: &str) -> Vec<u8> {
    serde_json::to_vec(&fixture(name)).expect("json")
}

const REVIEW_KEYS: &[&str] = &[
    "timestamp",
    "level",
    "target",
    "message",
    "uid",
    "endpoint",
    "namespace",
    "pod",
    "operation",
    "dry_run",
    "profile",
    "decision",
    "rule",
    "latency_us",
    "patch_ops",
    "warnings",
    "denial",
    "would_deny",
];

/// What a review line must say besides its keys.
enum Says {
    /// A review: its decision and rule exactly; `denial` and `would_deny` are
    /// the engine's texts for the same request, and non-empty as given.
    Review {
        decision: &'static str,
        rule: &'static str,
        denial: bool,
        would_deny: bool,
    },
    /// A rejected request: its reason and detail exactly.
    Rejected {
        reason: &'static str,
        detail: &'static str,
    },
}

const REJECTED_KEYS: &[&str] = &[
    "timestamp",
    "level",
    "target",
    "message",
    "endpoint",
    "reason",
    "status",
    "detail",
];

/// One JSON line per event: its keys exactly, `message` once, and the fields
/// that say what happened.
#[rstest]
#[case::denied_review(reference(), "/validate", "application/json", body("job-with-toleration-overwrite.json"), Says::Review { decision: "denied", rule: "protected-nodes", denial: true, would_deny: false })]
#[case::audit_review(reference_with("mode: enforce ", "mode: audit "), "/validate", "application/json", body("job-with-toleration-overwrite.json"), Says::Review { decision: "allowed", rule: "protected-nodes", denial: false, would_deny: true })]
#[case::patched_review(reference(), "/mutate", "application/json", body("plain-job.json"), Says::Review { decision: "patched", rule: "none", denial: false, would_deny: false })]
#[case::rejected_content_type(reference(), "/validate", "text/plain", body("plain-job.json"), Says::Rejected { reason: "content-type", detail: "content type must be application/json, got \"text/plain\"" })]
#[case::rejected_json(reference(), "/mutate", "application/json", b"{not json".to_vec(), Says::Rejected { reason: "invalid-json", detail: "body is not a valid AdmissionReview: key must be a string at line 1 column 2" })]
#[tokio::test]
async fn json_log_lines(
    #[case] policy: Policy,
    #[case] path: &str,
    #[case] ctype: &str,
    #[case] body: Vec<u8>,
    #[case] says: Says,
) {
    let text = logged(
        policy.clone(),
        LogFormat::Json,
        false,
        path,
        ctype,
        body.clone(),
    )
    .await;
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "{text}");
    let line = lines[0];
    // Counted on the raw text: a JSON reader keeps only one of two equal keys.
    assert_eq!(line.matches("\"message\":").count(), 1, "{line}");
    let v: Value = serde_json::from_str(line).expect("a JSON line");
    let got: BTreeSet<&str> = v
        .as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default();
    let (keys, message) = match says {
        Says::Review { .. } => (REVIEW_KEYS, "review"),
        Says::Rejected { .. } => (REJECTED_KEYS, "rejected request"),
    };
    assert_eq!(got, keys.iter().copied().collect::<BTreeSet<_>>(), "{line}");
    assert_eq!(v["message"], message);
    match says {
        Says::Review {
            decision,
            rule,
            denial,
            would_deny,
        } => {
            let endpoint = if path == "/mutate" {
                Endpoint::Mutate
            } else {
                Endpoint::Validate
            };
            let d = admission::handle(&policy, endpoint, &body, None)
                .expect("reviewable")
                .decision;
            assert_eq!(v["decision"], decision, "{line}");
            assert_eq!(v["rule"], rule, "{line}");
            assert_eq!(
                v["denial"].as_str(),
                Some(d.message().unwrap_or_default().as_str())
            );
            assert_eq!(
                v["would_deny"].as_str(),
                Some(d.would_deny().unwrap_or_default().as_str())
            );
            assert_eq!(v["denial"] != "", denial, "{line}");
            assert_eq!(v["would_deny"] != "", would_deny, "{line}");
        }
        Says::Rejected { reason, detail } => {
            assert_eq!(v["reason"], reason, "{line}");
            assert_eq!(v["detail"], detail, "{line}");
            assert_eq!(
                v["status"],
                if reason == "content-type" { 415 } else { 400 }
            );
        }
    }
}

/// Plain lines carry colour codes only when asked to (on a terminal).
#[rstest]
#[case::not_a_terminal(false, false)]
#[case::terminal(true, true)]
#[tokio::test]
async fn plain_log_lines(#[case] ansi: bool, #[case] coloured: bool) {
    let text = logged(
        reference(),
        LogFormat::Plain,
        ansi,
        "/validate",
        "application/json",
        body("plain-job.json"),
    )
    .await;
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.contains(" review "), "{text}");
    assert_eq!(text.contains("\u{1b}["), coloured, "{text:?}");
}

/// `serve` on loopback ports the OS picks, with the default log filter,
/// its CA written to `ca`.
fn serve(extra: &[&str], ca: &std::path::Path) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_runner-fence"));
    cmd.args([
        "serve",
        "--addr",
        "127.0.0.1:0",
        "--admin-addr",
        "127.0.0.1:0",
    ])
    .args(extra)
    .arg("--ca-out")
    .arg(ca)
    .env_remove("RUST_LOG");
    cmd
}

/// `serve` with its stderr in a file (not a terminal) writes no colour codes.
#[test]
fn serve_writes_no_colour_into_a_file() {
    let dir = tempfile::tempdir().expect("tmp");
    let log = dir.path().join("serve.log");
    let file = std::fs::File::create(&log).expect("log file");
    let mut child = serve(&[], &dir.path().join("ca.crt"))
        .stdout(std::process::Stdio::null())
        .stderr(file)
        .spawn()
        .expect("serve starts");
    let mut text = String::new();
    for _ in 0..100 {
        text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("serving") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(text.contains("serving"), "{text}");
    assert!(!text.contains('\u{1b}'), "colour codes in a file: {text:?}");
}

/// `serve` on SIGTERM writes every line it logged (they are buffered for a
/// writer thread) before it exits: one per review, and its last, `stopped`.
#[tokio::test]
async fn serve_writes_every_line_before_it_exits_on_sigterm() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().expect("tmp");
    let log = dir.path().join("serve.log");
    let ca = dir.path().join("ca.crt");
    let mut child = serve(
        &["--shutdown-delay-seconds", "0", "--log-format", "json"],
        &ca,
    )
    .stdout(std::process::Stdio::piped())
    .stderr(std::fs::File::create(&log).expect("log file"))
    .spawn()
    .expect("serve starts");
    let stdout = child.stdout.take().expect("stdout");
    let addr = tokio::task::spawn_blocking(move || {
        std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find_map(|l| {
                let rest = l.split("webhook on https://").nth(1)?;
                rest.split_whitespace().next().map(str::to_string)
            })
    })
    .await
    .expect("reader")
    .expect("the webhook address on stdout");
    let port = addr.rsplit(':').next().expect("port").to_string();
    let ca_pem = std::fs::read(&ca).expect("ca");
    let client = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&ca_pem).expect("ca"))
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .expect("client");
    let reviews = 300;
    let review = body("job-with-services.json");
    for _ in 0..reviews {
        let resp = client
            .post(format!("https://localhost:{port}/mutate"))
            .header("content-type", "application/json")
            .body(review.clone())
            .send()
            .await
            .expect("answered");
        assert_eq!(resp.status(), 200);
    }
    let term = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(term.success());
    let mut exited = None;
    for _ in 0..400 {
        if let Some(s) = child.try_wait().expect("wait") {
            exited = Some(s);
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    if exited.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    assert!(exited.is_some_and(|s| s.success()), "exit: {exited:?}");
    let text = std::fs::read_to_string(&log).expect("log");
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let messages: Vec<&str> = lines.iter().filter_map(|l| l["message"].as_str()).collect();
    assert_eq!(
        messages.iter().filter(|m| **m == "review").count(),
        reviews,
        "{text}"
    );
    assert_eq!(messages.last(), Some(&"stopped"), "{text}");
}
