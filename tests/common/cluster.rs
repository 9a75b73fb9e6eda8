//! Helpers of the end-to-end suites on the loopback control plane
//! (`scripts/cluster/`): the admin kubeconfig, kubectl, waiting, free ports.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// The path of the built `runner-fence` binary.
pub const BIN: &str = env!("CARGO_BIN_EXE_runner-fence");

/// The cluster's admin kubeconfig: `RUNNER_FENCE_E2E_KUBECONFIG`, else `KUBECONFIG`.
pub fn kubeconfig() -> PathBuf {
    std::env::var_os("RUNNER_FENCE_E2E_KUBECONFIG")
        .or_else(|| std::env::var_os("KUBECONFIG"))
        .map(PathBuf::from)
        .expect("RUNNER_FENCE_E2E_KUBECONFIG (or KUBECONFIG) must name the cluster's admin kubeconfig; run bash scripts/e2e.sh")
}

/// A client with the admin kubeconfig.
pub async fn client() -> kube::Client {
    runner_fence::k8s::client(Some(kubeconfig().as_path()), None)
        .await
        .expect("client from the e2e kubeconfig")
}

/// `kubectl ARGS` with the admin kubeconfig, `stdin` written to it.
pub fn kubectl(args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new("kubectl");
    cmd.env("KUBECONFIG", kubeconfig())
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("kubectl runs");
    if let Some(text) = stdin {
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("write stdin");
    }
    child.wait_with_output().expect("kubectl finishes")
}

/// [`kubectl`] that must succeed; its stdout.
pub fn kubectl_ok(args: &[&str], stdin: Option<&str>) -> String {
    let out = kubectl(args, stdin);
    assert!(
        out.status.success(),
        "kubectl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// [`kubectl_ok`] with `-o json`, parsed.
pub fn kubectl_json(args: &[&str]) -> serde_json::Value {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["-o", "json"]);
    serde_json::from_str(&kubectl_ok(&all, None)).expect("kubectl -o json")
}

/// Polls `f` every 200 ms until it holds; fails after `secs` seconds.
pub async fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    while std::time::Instant::now() < deadline {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("timed out after {secs} s waiting for {what}");
}

/// A free port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Creates namespace `ns` (deleting what a previous run left) and waits for
/// its `default` ServiceAccount, without which pods are refused.
pub async fn fresh_namespace(ns: &str) {
    let _ = kubectl(
        &[
            "delete",
            "namespace",
            ns,
            "--ignore-not-found",
            "--wait=true",
            "--timeout=120s",
        ],
        None,
    );
    kubectl_ok(&["create", "namespace", ns], None);
    wait_for(&format!("ServiceAccount {ns}/default"), 30, || {
        kubectl(&["-n", ns, "get", "serviceaccount", "default"], None)
            .status
            .success()
    })
    .await;
}

/// Installs the PolicyReport CRD (`manifests/extras`) and waits until it is served.
pub fn policy_report_crd() {
    kubectl_ok(
        &[
            "apply",
            "-f",
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/manifests/extras/policyreport-crd.yaml"
            ),
        ],
        None,
    );
    kubectl_ok(
        &[
            "wait",
            "--for=condition=established",
            "crd/policyreports.wgpolicyk8s.io",
            "--timeout=30s",
        ],
        None,
    );
}
