//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

use runner_fence::policy::{self, Policy};
use serde_json::Value;

/// Path of a file under `tests/data`.
pub fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

/// A fixture AdmissionReview.
pub fn fixture(name: &str) -> Value {
    let text = std::fs::read_to_string(data(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Every fixture file name.
pub fn fixture_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(data(""))
        .expect("tests/data")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".json"))
        .collect();
    names.sort();
    names
}

/// The reference policy.
pub fn reference() -> Policy {
    policy::embedded().expect("reference policy")
}

/// The reference policy with a tweak to its YAML text.
pub fn reference_with(from: &str, to: &str) -> Policy {
    let src = policy::EMBEDDED_POLICY;
    assert!(src.contains(from), "{from:?} not in the reference policy");
    policy::parse(&src.replacen(from, to, 1), "test.yaml").expect("tweaked policy")
}

/// Wraps a pod in a CREATE AdmissionReview.
pub fn review_of(pod: Value, operation: &str) -> Value {
    let ns = pod
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("gitlab-runner")
        .to_string();
    let name = pod
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    serde_json::json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "00000000-0000-4000-8000-000000000000",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "name": name,
            "namespace": ns,
            "operation": operation,
            "object": pod,
        }
    })
}

/// `serve` flags for in-process servers on 127.0.0.1 with ephemeral ports.
pub fn serve_args() -> runner_fence::server::ServeArgs {
    runner_fence::server::ServeArgs {
        policy: None,
        tls_cert: None,
        tls_key: None,
        client_ca: None,
        ca_out: None,
        addr: "127.0.0.1:0".parse().expect("addr"),
        admin_addr: "127.0.0.1:0".parse().expect("addr"),
        node_cache: false,
        nodes_file: None,
        drain_seconds: 5,
        reload_interval_ms: 50,
        max_concurrency: 256,
        log_format: runner_fence::server::LogFormat::Plain,
    }
}
