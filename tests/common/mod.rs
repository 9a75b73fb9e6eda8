//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod cluster;

use std::collections::BTreeMap;
use std::path::PathBuf;

use runner_fence::core::policy::{self, Policy, Role};
use runner_fence::core::runner_config::{ConfigFile, job_pod};
use serde_json::{Value, json};

/// A tool a `scripts/tools/*.sh` script builds once per machine and caches
/// (Helm, the CRDs): the path it prints on its last line.
pub fn cached_tool(script: &str) -> PathBuf {
    let out = std::process::Command::new("bash")
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(script))
        .output()
        .unwrap_or_else(|e| panic!("run {script}: {e}"));
    assert!(
        out.status.success(),
        "{script} failed (the tools are built from the Go module proxy, so it needs Go):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    PathBuf::from(stdout.lines().last().expect("a path").trim())
}

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
pub fn serve_args() -> runner_fence::webhook::ServeArgs {
    runner_fence::webhook::ServeArgs {
        policy: None,
        policies_from_cluster: false,
        access: runner_fence::k8s::Access::default(),
        cluster: runner_fence::webhook::ClusterArgs::default(),
        audit: runner_fence::webhook::AuditArgs::default(),
        tls_cert: None,
        tls_key: None,
        client_ca: None,
        ca_out: None,
        addr: "127.0.0.1:0".parse().expect("addr"),
        admin_addr: "127.0.0.1:0".parse().expect("addr"),
        node_cache: false,
        nodes_file: None,
        shutdown_delay_seconds: 0,
        drain_seconds: 5,
        body_timeout_ms: 5000,
        reload_interval_ms: 50,
        max_concurrency: 256,
        log_format: runner_fence::webhook::LogFormat::Plain,
    }
}

/// An in-process runner-fence server on 127.0.0.1.
pub struct Running {
    /// Webhook address.
    pub addr: std::net::SocketAddr,
    /// Admin address.
    pub admin: std::net::SocketAddr,
    /// The generated CA (None with --tls-cert).
    pub ca: Option<String>,
    /// Shared state (metrics, readiness).
    pub state: std::sync::Arc<runner_fence::webhook::State>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), runner_fence::webhook::Error>>,
}

/// Binds and runs a server until [`Running::stop`].
pub async fn start(args: runner_fence::webhook::ServeArgs) -> Running {
    let server = runner_fence::webhook::Server::bind(args)
        .await
        .expect("bind");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    Running {
        addr: server.addr,
        admin: server.admin_addr,
        ca: server.generated_ca.clone(),
        state: server.state.clone(),
        stop: Some(tx),
        task: tokio::spawn(server.run(async move {
            let _ = rx.await;
        })),
    }
}

impl Running {
    /// The generated CA, which these tests always use.
    pub fn ca(&self) -> String {
        self.ca.clone().expect("generated CA")
    }

    /// Sends the shutdown signal (SIGTERM's effect) without waiting.
    pub fn signal_stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }

    /// Waits for the server to exit after [`Running::signal_stop`]; false on timeout.
    pub async fn join(self, within: std::time::Duration) -> bool {
        matches!(
            tokio::time::timeout(within, self.task).await,
            Ok(Ok(Ok(())))
        )
    }

    /// Signals shutdown and asserts a clean exit within 10 s.
    pub async fn stop(mut self) {
        self.signal_stop();
        assert!(
            self.join(std::time::Duration::from_secs(10)).await,
            "server did not stop cleanly"
        );
    }
}

/// Serves `app` on an ephemeral 127.0.0.1 port (fake Kubernetes APIs).
pub async fn serve_fake(app: axum::Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

/// A raw TLS connection to `addr` that trusts `ca_pem`, for clients that must
/// control every byte they send (slow-loris, half-sent requests).
pub async fn raw_tls(
    addr: std::net::SocketAddr,
    ca_pem: &str,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    for c in
        runner_fence::webhook::certs::parse_chain(ca_pem.as_bytes(), std::path::Path::new("ca"))
            .expect("ca")
    {
        roots.add(c).expect("root");
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    connector.connect(name, tcp).await.expect("handshake")
}

/// The recorded GitLab Runner 19.4 job pod, with the fields the runner takes
/// from config.toml replaced by what `job_pod` builds from `config` and a
/// job's `labels`.
pub fn recorded_job(
    config: &ConfigFile,
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> Value {
    let review = fixture("runner-configs/recorded-runner-19.4-rendered-config-job.json");
    let mut pod = review["request"]["object"].clone();
    pod["metadata"]["namespace"] = json!(namespace);
    let built = job_pod(config, 0, namespace, labels).pod;
    let spec = &built["spec"];
    pod["spec"]["affinity"] = spec["affinity"].clone();
    match spec.get("nodeSelector") {
        Some(s) => pod["spec"]["nodeSelector"] = s.clone(),
        None => {
            if let Some(s) = pod["spec"].as_object_mut() {
                s.remove("nodeSelector");
            }
        }
    }
    // The apiserver's NoExecute defaults stay; the rest is config.toml's.
    let mut tolerations: Vec<Value> = spec["tolerations"].as_array().cloned().unwrap_or_default();
    tolerations.extend(
        pod["spec"]["tolerations"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|t| t.get("tolerationSeconds").is_some())
            .cloned(),
    );
    pod["spec"]["tolerations"] = Value::Array(tolerations);
    let built_resources = |name: &str| -> Value {
        spec["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .chain(spec["initContainers"].as_array().into_iter().flatten())
            .find(|c| c["name"] == name)
            .map(|c| c["resources"].clone())
            .unwrap_or_else(|| panic!("no {name}"))
    };
    for (list, init) in [("containers", false), ("initContainers", true)] {
        for c in pod["spec"][list].as_array_mut().into_iter().flatten() {
            let name = c["name"].as_str().unwrap_or("").to_string();
            let role = if init {
                "init-permissions"
            } else {
                match Role::of_container(&name) {
                    Role::Build => "build",
                    Role::Helper => "helper",
                    _ => "svc-0",
                }
            };
            c["resources"] = built_resources(role);
        }
    }
    for (k, v) in built["metadata"]["labels"]
        .as_object()
        .into_iter()
        .flatten()
    {
        pod["metadata"]["labels"][k] = v.clone();
    }
    pod
}

/// Does a node with `labels` meet the pod's nodeSelector and one of its required terms?
pub fn schedulable_on(pod: &Value, labels: &BTreeMap<String, String>) -> bool {
    let meets = |e: &Value| {
        let key = e["key"].as_str().unwrap_or("");
        let values: Vec<&str> = e["values"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let have = labels.get(key).map(String::as_str);
        match e["operator"].as_str().unwrap_or("") {
            "In" => have.is_some_and(|h| values.contains(&h)),
            "NotIn" => have.is_none_or(|h| !values.contains(&h)),
            "Exists" => have.is_some(),
            "DoesNotExist" => have.is_none(),
            op => panic!("operator {op} not modelled"),
        }
    };
    let selector_ok = pod["spec"]["nodeSelector"]
        .as_object()
        .into_iter()
        .flatten()
        .all(|(k, v)| labels.get(k).map(String::as_str) == v.as_str());
    let terms = pod
        .pointer("/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    selector_ok
        && (terms.is_empty()
            || terms.iter().any(|t| {
                t["matchExpressions"]
                    .as_array()
                    .is_some_and(|ex| ex.iter().all(meets))
            }))
}
