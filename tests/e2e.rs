//! The fence on a real control plane (SPEC §11): etcd, kube-apiserver,
//! kube-scheduler and kube-controller-manager on loopback, fake Nodes shaped
//! like the production cluster (`scripts/cluster/`).
//!
//! Ignored by `cargo test`: it needs the control plane. Run it with
//! `bash scripts/e2e.sh` (builds and starts the cluster, then runs
//! `cargo test --test e2e -- --ignored`); CI does exactly that, so it is
//! never skipped there. `RUNNER_FENCE_E2E_KUBECONFIG` names the admin kubeconfig.
//!
//! The webhook runs as the real binary (`runner-fence serve`) with a node
//! cache whose credentials allow only get/list/watch on nodes, registered with
//! the configurations `runner-fence render webhooks --url` prints.
//!
//! Beside it, the Helm chart: every option set's objects through a server-side
//! dry-run apply, and its Deployment's pods under restricted Pod Security.

mod common;

use common::cluster::{BIN, free_port, fresh_namespace, kubeconfig, kubectl, kubectl_ok, wait_for};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

const NS: &str = "gitlab-runner";
const CI_NS: &str = "ci-job-e2e-1";

/// The policy under test: the reference, plus a `namespace_per_job` prefix.
fn policy_text(mode: &str) -> String {
    runner_fence::core::policy::EMBEDDED_POLICY
        .replacen(
            "namespaces: [gitlab-runner]",
            "namespaces: [gitlab-runner, ci-job-*]",
            1,
        )
        .replacen("mode: enforce ", &format!("mode: {mode} "), 1)
}

/// `runner-fence serve` as a child process; killed on drop.
struct Webhook {
    child: Child,
    /// Its pod name (the Lease holder identity).
    name: String,
    addr: String,
    admin: String,
    log: PathBuf,
}

impl Drop for Webhook {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The release the e2e installs (`helm install`, no runner-fence CLI) and the
/// namespace it lives in.
const RELEASE: &str = "runner-fence";

/// The chart as installed, and what a kubelet would run for its Deployment (there is
/// none here): the container's args and environment, with the ServiceAccount's token.
struct Installed {
    args: Vec<String>,
    /// Name and value; `None`: the pod's name (`fieldRef: metadata.name`).
    env: Vec<(String, Option<String>)>,
    kubeconfig: PathBuf,
    /// Where the apiserver calls the replicas: the Service stand-in's URL.
    url: String,
}

impl Installed {
    /// `helm install` of the chart in this checkout, then the Deployment's container
    /// spec read back from the apiserver.
    fn chart(dir: &Path, url: String) -> Installed {
        let values = dir.join("chart-values.yaml");
        // Shorter periods than the defaults, so handover and uninstall fit the suite;
        // the shutdown timings are the ones the rollout phase below relies on.
        std::fs::write(
            &values,
            serde_saphyr::to_string(&json!({
                "controller": {"leaseSeconds": 4, "resyncSeconds": 30},
                "shutdownDelaySeconds": SHUTDOWN_DELAY,
                "drainSeconds": 5,
                "preStopSleepSeconds": 1,
                "terminationGracePeriodSeconds": SHUTDOWN_DELAY + 7,
            }))
            .expect("yaml"),
        )
        .expect("values");
        let chart = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("charts/runner-fence");
        common::cluster::helm_ok([
            "install".as_ref(),
            RELEASE.as_ref(),
            chart.as_os_str(),
            "--namespace".as_ref(),
            RELEASE.as_ref(),
            "--create-namespace".as_ref(),
            "-f".as_ref(),
            values.as_os_str(),
        ]);
        let deployment: Value = serde_json::from_str(&kubectl_ok(
            &["-n", RELEASE, "get", "deployment", RELEASE, "-o", "json"],
            None,
        ))
        .expect("deployment json");
        let container = &deployment["spec"]["template"]["spec"]["containers"][0];
        let args = container["args"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a.as_str().map(String::from))
            .collect();
        let env = container["env"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                let name = e["name"].as_str().unwrap_or_default().to_string();
                match e["value"].as_str() {
                    Some(v) => (name, Some(v.to_string())),
                    None => {
                        assert_eq!(
                            e["valueFrom"]["fieldRef"]["fieldPath"], "metadata.name",
                            "an env var this stand-in for the kubelet cannot resolve: {e}"
                        );
                        (name, None)
                    }
                }
            })
            .collect();
        let kubeconfig = token_kubeconfig(dir, RELEASE, RELEASE);
        // Least privilege really is least: nothing of the runner namespace's secrets.
        let out = Command::new("kubectl")
            .env("KUBECONFIG", &kubeconfig)
            .args(["-n", NS, "get", "secrets"])
            .output()
            .expect("kubectl");
        assert!(
            !out.status.success(),
            "the chart's ServiceAccount can read the runner namespace's secrets"
        );
        Installed {
            args,
            env,
            kubeconfig,
            url,
        }
    }
}

impl Webhook {
    fn start(dir: &Path, port: u16, chart: &Installed) -> Webhook {
        Webhook::start_with(dir, port, chart, true, &[])
    }

    /// A replica as the chart's Deployment runs it, with or without the node cache
    /// (without it, the nodes that bindings and ephemeral containers name are read on
    /// demand), `extra` flags after the chart's.
    fn start_with(
        dir: &Path,
        port: u16,
        chart: &Installed,
        node_cache: bool,
        extra: &[&str],
    ) -> Webhook {
        let admin_port = free_port();
        let name = format!("{RELEASE}-replica-{port}");
        let log = dir.join(format!("webhook-{port}.log"));
        let file = std::fs::File::create(&log).expect("log");
        let mut cmd = Command::new(BIN);
        cmd.args(
            chart
                .args
                .iter()
                .filter(|a| node_cache || a.as_str() != "--node-cache"),
        )
        .args(extra)
        .args(["--log-format", "json"]);
        for (k, v) in &chart.env {
            cmd.env(k, v.as_deref().unwrap_or(&name));
        }
        let child = cmd
            .env("RUNNER_FENCE_ADDR", format!("127.0.0.1:{port}"))
            .env("RUNNER_FENCE_ADMIN_ADDR", format!("127.0.0.1:{admin_port}"))
            .env("RUNNER_FENCE_WEBHOOK_URL", &chart.url)
            .env("KUBECONFIG", &chart.kubeconfig)
            .stdout(Stdio::from(file.try_clone().expect("log")))
            .stderr(Stdio::from(file))
            .spawn()
            .expect("runner-fence serve starts");
        let w = Webhook {
            child,
            name,
            addr: format!("127.0.0.1:{port}"),
            admin: format!("127.0.0.1:{admin_port}"),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while http_get(&w.admin, "/readyz").0 != 200 {
            assert!(
                Instant::now() < deadline,
                "runner-fence never became ready (policies, node cache or certificate through the chart's RBAC?); log:\n{}",
                std::fs::read_to_string(&w.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        w
    }
}

impl Webhook {
    /// SIGTERM, as the kubelet sends it, then wait for a clean exit.
    async fn terminate(mut self) {
        let pid = self.child.id().to_string();
        let out = Command::new("kill")
            .args(["-TERM", &pid])
            .output()
            .expect("kill");
        assert!(out.status.success(), "kill -TERM {pid}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                assert!(
                    status.success(),
                    "replica exited with {status}; log:\n{}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
                return;
            }
            assert!(
                Instant::now() < deadline,
                "replica did not exit within the grace period"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// How often the proxy checks readiness: the endpoint-propagation lag it models.
/// 5 s, the readinessProbe periodSeconds of the shipped Deployment: longer than the
/// apiserver's own retries of a failed webhook call (about 4 s), so a replica that
/// closes its listener while still listed fails creations.
const PROBE_PERIOD: Duration = Duration::from_secs(5);

/// The replicas' `--shutdown-delay-seconds`.
const SHUTDOWN_DELAY: u64 = 7;

/// A Service stand-in: new connections go round-robin to the replicas whose
/// `/readyz` answered 200 at the last check (every [`PROBE_PERIOD`], like a
/// readiness probe feeding endpoints); established connections stay where they
/// are. A replica that closed its listener while still listed is what a rolling
/// update must never expose: the connection fails, and so does the creation.
struct Proxy {
    port: u16,
    backends: Arc<Mutex<Vec<(String, String)>>>,
    task: tokio::task::JoinHandle<()>,
    poller: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start() -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let backends: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
        let ready: Arc<Mutex<Vec<String>>> = Arc::default();
        let poller = {
            let (backends, ready) = (backends.clone(), ready.clone());
            tokio::spawn(async move {
                loop {
                    let list = backends.lock().expect("lock").clone();
                    let ok = tokio::task::spawn_blocking(move || {
                        list.into_iter()
                            .filter(|(_, admin)| http_get(admin, "/readyz").0 == 200)
                            .map(|(addr, _)| addr)
                            .collect::<Vec<_>>()
                    })
                    .await
                    .unwrap_or_default();
                    *ready.lock().expect("lock") = ok;
                    tokio::time::sleep(PROBE_PERIOD).await;
                }
            })
        };
        let task = tokio::spawn(async move {
            let mut next = 0usize;
            while let Ok((mut inbound, _)) = listener.accept().await {
                let pick = {
                    let r = ready.lock().expect("lock");
                    next = next.wrapping_add(1);
                    (!r.is_empty()).then(|| r[next % r.len()].clone())
                };
                let Some(backend) = pick else { continue };
                tokio::spawn(async move {
                    if let Ok(mut out) = tokio::net::TcpStream::connect(&backend).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                });
            }
        });
        Proxy {
            port,
            backends,
            task,
            poller,
        }
    }

    fn add(&self, w: &Webhook) {
        self.backends
            .lock()
            .expect("lock")
            .push((w.addr.clone(), w.admin.clone()));
    }

    fn remove(&self, addr: &str) {
        self.backends
            .lock()
            .expect("lock")
            .retain(|(a, _)| a != addr);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        self.poller.abort();
    }
}

/// A plain HTTP/1.1 GET on the admin port: (status, body).
fn http_get(addr: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return (0, String::new());
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    );
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// A pod from a GitLab job fixture, as the runner submits it (minus what the
/// apiserver itself fills in, like the service-account token volume).
fn fixture_pod(name: &str) -> Value {
    submittable(common::fixture(name)["request"]["object"].clone())
}

/// A pod as the apiserver returned it, made fit to create again: no server-set
/// metadata, status, node or service-account token volume.
fn submittable(mut pod: Value) -> Value {
    if let Some(m) = pod["metadata"].as_object_mut() {
        for key in [
            "managedFields",
            "creationTimestamp",
            "uid",
            "resourceVersion",
        ] {
            m.remove(key);
        }
    }
    if let Some(o) = pod.as_object_mut() {
        o.remove("status");
    }
    if let Some(spec) = pod["spec"].as_object_mut() {
        spec.remove("nodeName");
        for list in ["containers", "initContainers"] {
            for c in spec
                .get_mut(list)
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                if let Some(mounts) = c.get_mut("volumeMounts").and_then(Value::as_array_mut) {
                    mounts.retain(|m| {
                        !m["name"]
                            .as_str()
                            .unwrap_or("")
                            .starts_with("kube-api-access")
                    });
                }
            }
        }
        if let Some(vols) = spec.get_mut("volumes").and_then(Value::as_array_mut) {
            vols.retain(|v| {
                !v["name"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with("kube-api-access")
            });
        }
    }
    pod
}

fn named(mut pod: Value, name: &str, ns: &str) -> Value {
    pod["metadata"]["name"] = json!(name);
    pod["metadata"]["namespace"] = json!(ns);
    if let Some(m) = pod["metadata"].as_object_mut() {
        m.remove("generateName");
    }
    pod
}

fn bare(name: &str, ns: &str, spec: Value) -> Value {
    let mut spec = spec;
    spec["containers"] = json!([{"name": "main", "image": "busybox"}]);
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns}, "spec": spec})
}

async fn create(client: &Client, pod: &Value) -> Result<Pod, String> {
    let ns = pod["metadata"]["namespace"].as_str().unwrap_or(NS);
    let pod: Pod = serde_json::from_value(pod.clone()).map_err(|e| format!("not a pod: {e}"))?;
    Api::<Pod>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &pod)
        .await
        .map_err(|e| e.to_string())
}

async fn denied(client: &Client, what: &str, pod: &Value, rule: &str) {
    match create(client, pod).await {
        Ok(p) => panic!(
            "{what}: admitted, stored as {}",
            serde_json::to_string(&p).unwrap_or_default()
        ),
        // The in-tree backstop, which the leader applies with the webhooks, is asked
        // before the validating webhook: its denial (in its own words) holds too.
        Err(e) => assert!(
            (e.contains("runner-fence") && e.contains(rule))
                || e.contains("[runner-fence backstop"),
            "{what}: denied, but not by runner-fence's {rule}: {e}"
        ),
    }
}

/// POSTs a Binding through `pods/binding` or the legacy `bindings` resource.
async fn bind(client: &Client, path: &str, name: &str, node: &str) -> Result<Value, String> {
    let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name, "namespace": NS},
        "target": {"apiVersion": "v1", "kind": "Node", "name": node}});
    let url = if path == "bindings" {
        format!("/api/v1/namespaces/{NS}/bindings")
    } else {
        format!("/api/v1/namespaces/{NS}/pods/{name}/binding")
    };
    let req = axum::http::Request::post(&url)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&binding).map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    client
        .request::<Value>(req)
        .await
        .map_err(|e| e.to_string())
}

async fn wait_scheduled(client: &Client, ns: &str, name: &str) -> String {
    let api = Api::<Pod>::namespaced(client.clone(), ns);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(node) = api
            .get(name)
            .await
            .ok()
            .and_then(|p| p.spec.and_then(|s| s.node_name))
        {
            return node;
        }
        assert!(Instant::now() < deadline, "{ns}/{name} was never scheduled");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Fields the webhook owns, as the offline engine computes them and as the apiserver stored them.
fn owned(pod: &Value) -> Value {
    let requests = |list: &str| -> Value {
        pod["spec"][list]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                (
                    c["name"].as_str().unwrap_or("").to_string(),
                    c["resources"]["requests"].clone(),
                )
            })
            .collect::<serde_json::Map<_, _>>()
            .into()
    };
    json!({
        "affinity": pod["spec"]["affinity"]["nodeAffinity"],
        "annotation": pod["metadata"]["annotations"]["runner-fence.dev/profile"],
        "use-fargate": pod["metadata"]["labels"]["use-fargate"],
        "containers": requests("containers"),
        "initContainers": requests("initContainers"),
    })
}

fn events_mention_runner_fence(ns: &str, owner: &str) -> bool {
    let out = kubectl(&["get", "events", "-n", ns, "-o", "json"], None);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    v["items"].as_array().into_iter().flatten().any(|e| {
        e["involvedObject"]["name"]
            .as_str()
            .is_some_and(|n| n.starts_with(owner))
            && e["message"]
                .as_str()
                .is_some_and(|m| m.contains("runner-fence"))
    })
}

/// A policy file's fields as the `spec` of RunnerFencePolicy `name`.
fn policy_object(name: &str, text: &str) -> Value {
    let mut spec: Value = serde_saphyr::from_str(text).expect("policy yaml");
    if let Some(o) = spec.as_object_mut() {
        for k in ["apiVersion", "kind", "metadata"] {
            o.remove(k);
        }
    }
    json!({"apiVersion": "runner-fence.dev/v1alpha1", "kind": "RunnerFencePolicy",
           "metadata": {"name": name}, "spec": spec})
}

/// `kubectl apply` of a policy object, as a platform team (or GitOps) does it.
fn apply_policy(object: &Value) {
    kubectl_ok(
        &[
            "apply",
            "--server-side",
            "--field-manager=platform-team",
            "-f",
            "-",
        ],
        Some(&object.to_string()),
    );
}

/// The policy's `Ready` condition, once its `observedGeneration` is the object's.
fn policy_condition(name: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let p: Value = serde_json::from_str(&kubectl_ok(
            &["get", "runnerfencepolicy", name, "-o", "json"],
            None,
        ))
        .expect("policy json");
        let ready = p["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == "Ready")
            .cloned();
        if let Some(c) = ready
            && c["observedGeneration"] == p["metadata"]["generation"]
        {
            return c;
        }
        assert!(
            Instant::now() < deadline,
            "RunnerFencePolicy {name}: no Ready condition for generation {} ({})",
            p["metadata"]["generation"],
            p["status"]
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The policy's `Ready` condition is False for `reason`, its message saying `why`.
fn refused(name: &str, reason: &str, why: &str) -> Value {
    let c = policy_condition(name);
    assert!(
        c["status"] == "False"
            && c["reason"] == reason
            && c["message"].as_str().is_some_and(|m| m.contains(why)),
        "{c}"
    );
    c
}

/// Waits until `ns` is fenced — a plain pod is mutated (the webhooks are called) and a
/// pod pinned to a GitLab node is denied (by the webhook or the backstop, whichever the
/// apiserver asks first) — and says how long that took; fails after `secs`. Server-side
/// dry runs: nothing is stored.
async fn fenced(client: &Client, ns: &str, secs: u64) -> Duration {
    let pods = Api::<Pod>::namespaced(client.clone(), ns);
    let plain: Pod = serde_json::from_value(bare("probe", ns, json!({}))).expect("pod");
    let pinned: Pod =
        serde_json::from_value(bare("probe", ns, json!({"nodeName": "gitlab-1"}))).expect("pod");
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let start = Instant::now();
    loop {
        let mutated = pods.create(&dry, &plain).await;
        let denied = pods.create(&dry, &pinned).await;
        if mutated
            .as_ref()
            .is_ok_and(|p| p.annotations().contains_key("runner-fence.dev/profile"))
            && denied.as_ref().is_err_and(|e| {
                let e = e.to_string();
                e.contains("runner-fence denied") || e.contains("[runner-fence backstop")
            })
        {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "{ns} was not fenced within {secs} s: {mutated:?} / {denied:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Who holds the release's Lease (the replica that reconciles).
fn lease_holder() -> String {
    kubectl_ok(
        &[
            "-n",
            RELEASE,
            "get",
            "lease",
            &format!("{RELEASE}-controller"),
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ],
        None,
    )
}

/// The scope of the generated validating webhooks, as stored.
fn validating_scope() -> Value {
    let v: Value = serde_json::from_str(&kubectl_ok(
        &[
            "get",
            "validatingwebhookconfiguration",
            RELEASE,
            "-o",
            "json",
        ],
        None,
    ))
    .expect("json");
    v["webhooks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|w| json!([w["name"], w["namespaceSelector"], w["matchConditions"]]))
        .collect()
}

/// Narrows the generated validating webhook by hand, as `kubectl edit` would, and
/// checks the apiserver stored the edit (the leader may revert it within milliseconds).
fn hand_edit_scope() {
    let edited = json!({"matchLabels": {"e2e": "hand-edited"}});
    let patch =
        json!([{"op": "replace", "path": "/webhooks/0/namespaceSelector", "value": edited}]);
    let stored: Value = serde_json::from_str(&kubectl_ok(
        &[
            "patch",
            "validatingwebhookconfiguration",
            RELEASE,
            "--type=json",
            "-p",
            &patch.to_string(),
            "-o",
            "json",
        ],
        None,
    ))
    .expect("json");
    assert_eq!(
        stored["webhooks"][0]["namespaceSelector"], edited,
        "the hand edit did not take"
    );
}

/// Phase 2b of the fence test: what `kubectl apply`, a bad edit, a hand edit of the
/// generated objects and a lost leader do to the fence. Two replicas, as the chart
/// runs them; returns the one left serving.
async fn policy_objects_are_reconciled(
    client: &Client,
    d: &Path,
    proxy: &Proxy,
    chart: &Installed,
    first: Webhook,
) -> Webhook {
    const TEAM: &str = "ci-team-b";
    const TEAM_MORE: &str = "ci-team-b-more";
    let second = Webhook::start(d, free_port(), chart);
    proxy.add(&second);
    for ns in [TEAM, TEAM_MORE] {
        let n: Namespace = serde_json::from_value(json!({"metadata": {"name": ns}})).expect("ns");
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &n)
            .await
            .expect("namespace");
    }
    let team = |name: &str, namespaces: &[&str]| -> Value {
        let mut o = policy_object(name, &policy_text("enforce"));
        o["spec"]["match"]["namespaces"] = json!(namespaces);
        o["spec"]["fargate"]["selectors"] = json!([]);
        o
    };

    // A second team's policy, then one more namespace in it: each fenced within
    // 10 s of the `kubectl apply`, no restart, no Helm run.
    apply_policy(&team("e2e-team-b", &[TEAM]));
    let took = fenced(client, TEAM, 10).await;
    apply_policy(&team("e2e-team-b", &[TEAM, TEAM_MORE]));
    let took_more = fenced(client, TEAM_MORE, 10).await;
    fenced(client, NS, 5).await;
    let c = policy_condition("e2e-team-b");
    assert_eq!(
        (&c["status"], &c["reason"]),
        (&json!("True"), &json!("Ready")),
        "{c}"
    );
    println!(
        "second policy: {TEAM} fenced {took:?} after kubectl apply, {TEAM_MORE} {took_more:?} after adding it"
    );

    // A later policy claiming a namespace of an older one is refused, with the reason.
    apply_policy(&team("e2e-claims-b", &[TEAM_MORE]));
    refused("e2e-claims-b", "Conflict", "RunnerFencePolicy e2e-team-b");
    kubectl_ok(
        &[
            "annotate",
            "runnerfencepolicy",
            "e2e-claims-b",
            "runner-fence.dev/allow-removal=true",
        ],
        None,
    );
    kubectl_ok(
        &[
            "delete",
            "runnerfencepolicy",
            "e2e-claims-b",
            "--timeout=20s",
        ],
        None,
    );

    // An invalid edit (a profile that lands on GitLab's nodes): Invalid with the
    // reason, and the last valid spec keeps fencing.
    let mut bad = team("e2e-team-b", &[TEAM, TEAM_MORE]);
    bad["spec"]["placement"]["profiles"]["runner-nodes"]["requiredNodeLabels"] =
        json!([{"key": "workload", "operator": "In", "values": ["gitlab"]}]);
    apply_policy(&bad);
    let c = refused("e2e-team-b", "Invalid", "still enforcing generation");
    println!("invalid edit: {}", c["message"]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    fenced(client, TEAM_MORE, 5).await;
    let attack = {
        let mut p = bare(
            "attack",
            TEAM,
            json!({"nodeSelector": {"workload": "gitlab"}}),
        );
        p["spec"]["tolerations"] = json!([{"operator": "Exists"}]);
        p
    };
    let out = kubectl(
        &["create", "--dry-run=server", "-f", "-"],
        Some(&attack.to_string()),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && (stderr.contains("runner-fence denied")
                || stderr.contains("[runner-fence backstop")),
        "the last good policy no longer denies an attack: {stderr}"
    );
    apply_policy(&team("e2e-team-b", &[TEAM, TEAM_MORE]));
    assert_eq!(policy_condition("e2e-team-b")["status"], "True");

    // A hand edit of the webhook scope is reverted by the leader.
    let scope = validating_scope();
    hand_edit_scope();
    wait_for("the hand edit to be reverted", 15, || {
        validating_scope() == scope
    })
    .await;

    // Killing the leader (no chance to release the Lease) hands reconciliation to the
    // other replica within the lease duration: it reverts the next hand edit.
    let holder = lease_holder();
    let (leader, survivor) = if holder == first.name {
        (first, second)
    } else {
        assert_eq!(holder, second.name, "the Lease is held by neither replica");
        (second, first)
    };
    let log = std::fs::read_to_string(&leader.log).unwrap_or_default();
    assert!(
        log.contains("reverted a hand edit of a generated object"),
        "the leader did not log the correction:\n{log}"
    );
    proxy.remove(&leader.addr);
    drop(leader);
    hand_edit_scope();
    wait_for("the other replica to take over and revert", 30, || {
        lease_holder() == survivor.name && validating_scope() == scope
    })
    .await;
    let log = std::fs::read_to_string(&survivor.log).unwrap_or_default();
    assert!(
        log.lines()
            .any(|l| l.contains(r#""message":"applied","kind":"ValidatingWebhookConfiguration""#)),
        "the new leader did not log applying the configuration:\n{log}"
    );
    println!(
        "leader {holder} killed: {} took over and reverted a hand edit",
        survivor.name
    );
    // Let the proxy's next readiness check forget the killed replica.
    tokio::time::sleep(PROBE_PERIOD + Duration::from_millis(500)).await;
    survivor
}

/// `runner-fence audit --policies-from-cluster --output json`: one report per served
/// policy (or only the one named), and the exit code.
fn audit_live(kubeconfig: &Path, only: Option<&str>) -> (Value, Option<i32>) {
    let out = Command::new(BIN)
        .args(["audit", "--policies-from-cluster", "--output", "json"])
        .args(only.map(|name| ["--only", name]).into_iter().flatten())
        .env("KUBECONFIG", kubeconfig)
        .output()
        .expect("audit");
    let all: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "audit --policies-from-cluster: {e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (all, out.status.code())
}

/// Audit first, on a namespace of its own: a policy `kubectl apply`d in audit mode, job
/// pods as enforce mode would leave them (what a runner whose config.toml already
/// fences produces): no warning from either layer, placed on runner nodes, and
/// `runner-fence audit` of the setup the controller generated is clean (exit 0: no
/// coverage gap, the `Warn, Audit` backstop recognised, nothing to fix before
/// enforcing). One bad pod then is exactly one finding and exit 1, so "clean" is not
/// an audit that sees nothing.
async fn audit_first_is_clean(client: &Client, d: &Path) {
    const AUDIT_NS: &str = "ci-audit-first";
    const POLICY: &str = "e2e-audit-first";
    fresh_namespace(AUDIT_NS).await;
    // The service account the kaniko fixture's runner config names.
    kubectl_ok(
        &[
            "-n",
            AUDIT_NS,
            "create",
            "serviceaccount",
            "gitlab-runner-jobs",
        ],
        None,
    );
    let object = |mode: &str| -> Value {
        let mut o = policy_object(POLICY, &policy_text(mode));
        o["spec"]["match"]["namespaces"] = json!([AUDIT_NS]);
        o
    };
    apply_policy(&object("audit"));
    assert_eq!(policy_condition(POLICY)["status"], "True");
    let bad = |name: &str| -> String {
        let mut p = bare(
            name,
            AUDIT_NS,
            json!({"tolerations": [{"operator": "Exists"}]}),
        );
        // Gated, so the pod audit mode lets through is never placed anywhere.
        p["spec"]["schedulingGates"] = json!([{"name": "example.com/hold"}]);
        p.to_string()
    };
    wait_for("the audit-first policy to be served", 20, || {
        let out = kubectl(
            &["create", "--dry-run=server", "-f", "-"],
            Some(&bad("probe")),
        );
        out.status.success() && String::from_utf8_lossy(&out.stderr).contains("would deny")
    })
    .await;

    // The job pods, as enforce mode's mutation leaves them (`runner-fence eval` of the
    // same policy enforcing).
    let enforcing = d.join("audit-first-enforce.json");
    std::fs::write(&enforcing, object("enforce").to_string()).expect("policy file");
    let mut names = Vec::new();
    for fixture in [
        "plain-job.json",
        "job-with-services.json",
        "kaniko-build-job.json",
    ] {
        let name = format!("audit-first-{}", fixture.trim_end_matches(".json"));
        let input = d.join(format!("{name}.json"));
        std::fs::write(
            &input,
            named(fixture_pod(fixture), &name, AUDIT_NS).to_string(),
        )
        .expect("pod file");
        let out = Command::new(BIN)
            .args(["eval", "--output", "json", "--policy"])
            .arg(&enforcing)
            .arg(&input)
            .output()
            .expect("eval");
        let ev: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "eval {fixture}: {e}: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        assert_eq!(
            out.status.code(),
            Some(0),
            "{fixture} denied enforcing: {ev}"
        );
        let out = kubectl(&["create", "-f", "-"], Some(&ev["pod"].to_string()));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{name}: {stderr}");
        assert!(
            !stderr.contains("would deny") && !stderr.contains("[runner-fence backstop"),
            "audit mode warned about a pod enforce mode admits: {stderr}"
        );
        names.push(name);
    }
    for name in &names {
        let node = wait_scheduled(client, AUDIT_NS, name).await;
        assert!(!gitlab_node(&node), "{name} was placed on {node}");
    }

    let audit = || {
        let (all, code) = audit_live(&kubeconfig(), Some(POLICY));
        assert_eq!(
            all.as_array().map(Vec::len),
            Some(1),
            "--only {POLICY}: {all}"
        );
        let report = all
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["policy"] == POLICY)
            .map(|p| p["report"].clone())
            .unwrap_or_else(|| panic!("no report of {POLICY}: {all}"));
        (report, code)
    };
    // Clean: exit 0 for this policy (`--only`: the shared cluster's other
    // policies have their baseline pods on GitLab nodes).
    let (report, code) = audit();
    assert_eq!(
        code,
        Some(0),
        "audit of the generated setup is not clean: {report}"
    );
    let out = Command::new(BIN)
        .args([
            "audit",
            "--policies-from-cluster",
            "--only",
            "e2e-no-such-policy",
        ])
        .env("KUBECONFIG", kubeconfig())
        .output()
        .expect("audit");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("RunnerFencePolicy e2e-no-such-policy is not served")
            && err.contains("there is no such object"),
        "{err}"
    );
    let empty_at = |v: &Value| v.as_array().is_some_and(|a| a.is_empty());
    let empty = |key: &str| empty_at(&report[key]);
    assert_eq!(report["mode"], "audit", "{report}");
    assert_eq!(
        report["job_pods"].as_array().map(Vec::len),
        Some(names.len()),
        "the audit did not judge the job pods: {report}"
    );
    for key in [
        "coverage_gaps",
        "delete_or_fix_before_enforcing",
        "job_pods_outside_fence",
        "runner_reach",
        "unreadable",
    ] {
        assert!(
            empty(key),
            "{key} is not empty on the generated setup: {report}"
        );
    }
    assert!(empty_at(&report["serving"]["issues"]), "{report}");
    assert!(
        empty_at(&report["backstop"]["issues"]),
        "the backstop is not what the controller generates: {report}"
    );
    assert!(
        report["backstop"]["found"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|o| o["name"] == "runner-fence-backstop-audit"
                && o["policy"] == true
                && o["actions"] == json!(["Warn", "Audit"])),
        "the audit-mode backstop was not found: {report}"
    );
    // What `has_violations` (the exit code) counts of this policy: nothing.
    for p in report["job_pods"].as_array().into_iter().flatten() {
        assert!(
            p["on_protected_node"] == false
                && p["would_deny"] == false
                && p["would_patch"] == false,
            "{p}"
        );
    }

    // One bad pod: kubectl warns, and it is the audit's one finding.
    let out = kubectl(&["create", "-f", "-"], Some(&bad("audit-first-bad")));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "audit mode denied: {stderr}");
    assert!(stderr.contains("would deny: protected-nodes"), "{stderr}");
    let (report, code) = audit();
    assert_eq!(code, Some(1), "{report}");
    let would_deny: Vec<&str> = report["job_pods"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["would_deny"] == true)
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(would_deny, ["audit-first-bad"], "{report}");
    let to_fix: Vec<&str> = report["delete_or_fix_before_enforcing"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(to_fix, ["audit-first-bad"], "{report}");

    kubectl_ok(
        &[
            "annotate",
            "runnerfencepolicy",
            POLICY,
            "runner-fence.dev/allow-removal=true",
        ],
        None,
    );
    kubectl_ok(
        &["delete", "runnerfencepolicy", POLICY, "--wait=true"],
        None,
    );
    // No kubelet confirms a graceful deletion here: without --force the pods, and the
    // namespace with them, would stay Terminating for the suites that follow.
    kubectl_ok(
        &[
            "-n",
            AUDIT_NS,
            "delete",
            "pods",
            "--all",
            "--grace-period=0",
            "--force",
        ],
        None,
    );
    kubectl_ok(&["delete", "namespace", AUDIT_NS, "--wait=false"], None);
}

fn gitlab_node(n: &str) -> bool {
    n.starts_with("gitlab-")
}

/// A kubeconfig with a token of ServiceAccount `ns/sa`: what a pod running as it gets.
fn token_kubeconfig(dir: &Path, ns: &str, sa: &str) -> PathBuf {
    let token = kubectl_ok(&["-n", ns, "create", "token", sa, "--duration=2h"], None);
    let admin: Value = serde_json::from_str(&kubectl_ok(
        &["config", "view", "--raw", "-o", "json"],
        None,
    ))
    .expect("admin kubeconfig");
    let cluster = &admin["clusters"][0]["cluster"];
    let cfg = json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "e2e", "cluster": cluster}],
        "users": [{"name": sa, "user": {"token": token.trim()}}],
        "contexts": [{"name": "e2e", "context": {"cluster": "e2e", "user": sa}}],
        "current-context": "e2e",
    });
    let path = dir.join(format!("{ns}-{sa}.kubeconfig"));
    std::fs::write(&path, serde_json::to_string(&cfg).expect("json")).expect("write kubeconfig");
    path
}

async fn wait_service_account(client: &Client, ns: &str, name: &str) {
    let api = Api::<ServiceAccount>::namespaced(client.clone(), ns);
    let deadline = Instant::now() + Duration::from_secs(30);
    while api.get_opt(name).await.ok().flatten().is_none() {
        assert!(
            Instant::now() < deadline,
            "ServiceAccount {ns}/{name} never appeared"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the loopback control plane: run bash scripts/e2e.sh"]
async fn the_fence_holds_on_a_real_control_plane() {
    let kc = kubeconfig();
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(&kc).expect("kubeconfig"),
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .expect("kubeconfig");
    let client = Client::try_from(config).expect("client");
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    let nodes = kubectl_ok(&["get", "nodes", "-o", "name"], None);
    for n in ["gitlab-1", "gitlab-2", "runner-1", "runner-2", "fargate-1"] {
        assert!(
            nodes.contains(n),
            "node {n} missing; run scripts/cluster/nodes.sh"
        );
    }

    // Every pod of the runner namespaces that is ever bound, as the apiserver reports it.
    let bound: Arc<Mutex<BTreeMap<String, String>>> = Arc::default();
    let watch = {
        let bound = bound.clone();
        let api = Api::<Pod>::all(client.clone());
        tokio::spawn(async move {
            let mut s = watcher(api, watcher::Config::default()).boxed();
            while let Some(ev) = s.next().await {
                if let Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) = ev {
                    let ns = p.namespace().unwrap_or_default();
                    if let Some(node) = p.spec.as_ref().and_then(|s| s.node_name.clone()) {
                        bound
                            .lock()
                            .expect("lock")
                            .insert(format!("{ns}/{}", p.name_any()), node);
                    }
                }
            }
        })
    };

    for ns in [NS, CI_NS] {
        // Created the way the runner creates namespace_per_job namespaces: no labels.
        let n: Namespace = serde_json::from_value(json!({"metadata": {"name": ns}})).expect("ns");
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &n)
            .await
            .expect("namespace");
        wait_service_account(&client, ns, "default").await;
    }
    kubectl_ok(
        &["-n", NS, "create", "serviceaccount", "gitlab-runner-jobs"],
        None,
    );

    // 1. Baseline, no runner-fence: plain job pods land on GitLab's (untainted) nodes.
    let mut baseline = Vec::new();
    for i in 0..4 {
        let name = format!("runner-base-project-1-concurrent-{i}-baseline");
        create(&client, &named(fixture_pod("plain-job.json"), &name, NS))
            .await
            .expect("baseline pod");
        baseline.push(name);
    }
    let mut on_gitlab = 0;
    for name in &baseline {
        if gitlab_node(&wait_scheduled(&client, NS, name).await) {
            on_gitlab += 1;
        }
    }
    println!(
        "BASELINE without runner-fence: {on_gitlab} of {} plain job pods were scheduled on GitLab nodes",
        baseline.len()
    );
    assert!(
        on_gitlab > 0,
        "the baseline should reproduce the seed's failure"
    );
    let before: Vec<String> = baseline.iter().map(|n| format!("{NS}/{n}")).collect();
    // 1b. A pod created before enforcement, held back by a scheduling gate and shaped
    //     to reach GitLab's nodes once ungated: selector, toleration, privileged, hostPath.
    let mut pre_gated = bare(
        "runner-pre-gated",
        NS,
        json!({
            "schedulingGates": [{"name": "example.com/hold"}],
            "nodeSelector": {"workload": "gitlab"},
            "tolerations": [{"key": "workload", "value": "gitlab", "effect": "NoSchedule"}],
            "volumes": [{"name": "host", "hostPath": {"path": "/"}}],
        }),
    );
    pre_gated["spec"]["containers"][0]["securityContext"] = json!({"privileged": true});
    create(&client, &pre_gated)
        .await
        .expect("gated pod before enforcement");
    // Ungating it is the moment it becomes schedulable: judged like a creation.
    let ungate = |expect: &str, what: &str| {
        let out = kubectl(
            &[
                "-n",
                NS,
                "patch",
                "pod",
                "runner-pre-gated",
                "--type=json",
                "-p",
                r#"[{"op": "remove", "path": "/spec/schedulingGates"}]"#,
            ],
            None,
        );
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        // The backstop (always applied with the webhooks) is asked before the
        // validating webhook: either layer's denial holds the fence.
        assert!(
            !out.status.success()
                && (stderr.contains(expect) || stderr.contains("[runner-fence backstop")),
            "{what}: ungating the pre-enforcement pod was not denied by {expect}: {stderr}"
        );
    };

    // 2. runner-fence as a platform team installs it: `helm install` of the chart, then
    //    `kubectl apply` of a RunnerFencePolicy. The replicas (the chart's container
    //    spec with its ServiceAccount's token) apply the webhook configurations and the
    //    backstop themselves; the apiserver reaches them through a Service-like proxy
    //    that only routes new connections to ready replicas (as endpoints do).
    std::fs::write(d.join("policy.yaml"), policy_text("enforce")).expect("policy");
    let proxy = Proxy::start().await;
    let chart = Installed::chart(d, format!("https://127.0.0.1:{}", proxy.port));
    apply_policy(&policy_object("e2e", &policy_text("enforce")));
    let mut webhook = Webhook::start(d, free_port(), &chart);
    proxy.add(&webhook);
    let (_, metrics) = http_get(&webhook.admin, "/metrics");
    assert!(metrics.contains("runner_fence"), "{metrics}");
    // The apiserver picks configurations up asynchronously: wait until a bad pod is denied.
    let took = fenced(&client, NS, 30).await;
    println!("policy object applied: {NS} fenced after {took:?}");
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    // What the leader applied: its own field manager, the managed CA in every caBundle,
    // and the policy's status.
    for (kind, name) in [
        ("mutatingwebhookconfiguration", "0100-runner-fence"),
        ("validatingwebhookconfiguration", "runner-fence"),
        ("validatingadmissionpolicy", "runner-fence-backstop"),
        ("validatingadmissionpolicybinding", "runner-fence-backstop"),
    ] {
        let obj: Value = serde_json::from_str(&kubectl_ok(
            &["get", kind, name, "-o", "json", "--show-managed-fields"],
            None,
        ))
        .expect("json");
        assert!(
            obj["metadata"]["managedFields"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|m| m["manager"] == runner_fence::k8s::controller::FIELD_MANAGER),
            "{kind}/{name} is not applied by runner-fence: {}",
            obj["metadata"]["managedFields"]
        );
        if kind.ends_with("webhookconfiguration") {
            for w in obj["webhooks"].as_array().into_iter().flatten() {
                assert!(
                    w["clientConfig"]["caBundle"]
                        .as_str()
                        .is_some_and(|b| !b.is_empty()),
                    "{kind}/{name}: no caBundle"
                );
            }
        }
    }
    let ready = policy_condition("e2e");
    assert_eq!(ready["status"], "True", "{ready}");

    // 2b. The policy objects over time: more policies and namespaces, bad edits, hand
    //     edits and a lost leader, with two replicas as the chart runs them.
    webhook = policy_objects_are_reconciled(&client, d, &proxy, &chart, webhook).await;

    // 3. The fixtures as the runner submits them: admitted, patched exactly as the
    //    offline engine says, and placed by kube-scheduler on runner or Fargate nodes.
    let policy = runner_fence::core::policy::parse(&policy_text("enforce"), "e2e").expect("policy");
    for (fixture, node_prefix) in [
        ("plain-job.json", "runner-"),
        ("job-with-services.json", "runner-"),
        ("job-with-aliased-service.json", "runner-"),
        ("kaniko-build-job.json", "runner-"),
        ("dind-privileged-job.json", "runner-"),
        ("fargate-job.json", "fargate-"),
    ] {
        let name = format!("runner-e2e-{}", fixture.trim_end_matches(".json"));
        let pod = named(fixture_pod(fixture), &name, NS);
        let offline = runner_fence::webhook::eval::evaluate(
            &policy,
            &common::review_of(pod.clone(), "CREATE"),
            None,
        )
        .expect("offline evaluation");
        let stored = create(&client, &pod)
            .await
            .unwrap_or_else(|e| panic!("{fixture}: {e}"));
        let stored = serde_json::to_value(&stored).expect("json");
        assert_eq!(
            owned(&stored),
            owned(&offline.pod),
            "{fixture}: the apiserver stored another patch result"
        );
        // Tolerations: the engine's, plus what DefaultTolerationSeconds adds.
        for t in offline.pod["spec"]["tolerations"]
            .as_array()
            .into_iter()
            .flatten()
        {
            assert!(
                stored["spec"]["tolerations"]
                    .as_array()
                    .is_some_and(|s| s.contains(t)),
                "{fixture}: toleration {t} missing"
            );
        }
        if node_prefix == "fargate-" {
            // On EKS, fargate-scheduler places these (the Fargate node's taint keeps the
            // default scheduler away): bind as it would, through runner-fence's binding check.
            bind(&client, "pods/binding", &name, "fargate-1")
                .await
                .expect("bind to Fargate");
        }
        let node = wait_scheduled(&client, NS, &name).await;
        assert!(
            node.starts_with(node_prefix),
            "{fixture}: scheduled on {node}"
        );
        println!("{fixture}: admitted, patched, scheduled on {node}");
    }

    // 3a. A runner configured from `render runner-config`: a job choosing any profile
    //     of the policy lands on that profile's nodes with that profile's requests.
    //     (Before, a Fargate job got the runner node group's requirement AND Fargate's
    //     and sat Pending with the config's requests.)
    let render = Command::new(BIN)
        .args(["render", "runner-config", "--policy"])
        .arg(d.join("policy.yaml"))
        .output()
        .expect("render runner-config");
    assert!(
        render.status.success(),
        "{}",
        String::from_utf8_lossy(&render.stderr)
    );
    let config = runner_fence::core::runner_config::ConfigFile::parse(
        &format!(
            "[[runners]]\n  name = \"rendered\"\n  executor = \"kubernetes\"\n{}",
            String::from_utf8_lossy(&render.stdout)
        ),
        "config.toml",
    )
    .expect("rendered config.toml");
    let node_labels = |name: &str| -> BTreeMap<String, String> {
        let n: Value =
            serde_json::from_str(&kubectl_ok(&["get", "node", name, "-o", "json"], None))
                .expect("node json");
        serde_json::from_value(n["metadata"]["labels"].clone()).unwrap_or_default()
    };
    for (choice, want_node, want_build) in [
        (
            BTreeMap::new(),
            "runner-",
            json!({"cpu": "500m", "memory": "1Gi"}),
        ),
        (
            BTreeMap::from([("use-fargate".to_string(), "true".to_string())]),
            "fargate-",
            json!({"cpu": "2", "memory": "8Gi"}),
        ),
    ] {
        let name = format!("runner-rendered-{}", want_node.trim_end_matches('-'));
        let pod = named(
            submittable(common::recorded_job(&config, NS, &choice)),
            &name,
            NS,
        );
        let stored = serde_json::to_value(
            create(&client, &pod)
                .await
                .unwrap_or_else(|e| panic!("rendered-config job {name}: {e}")),
        )
        .expect("json");
        let build = stored["spec"]["containers"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["name"] == "build"))
            .cloned()
            .expect("build container");
        assert_eq!(
            build["resources"]["requests"], want_build,
            "{name}: build requests"
        );
        if want_node == "fargate-" {
            // Only Fargate can take it: the runner nodes do not meet its terms.
            assert!(
                common::schedulable_on(&stored, &node_labels("fargate-1")),
                "{name}: {}",
                stored["spec"]["affinity"]
            );
            assert!(
                !common::schedulable_on(&stored, &node_labels("runner-1")),
                "{name}: {}",
                stored["spec"]["affinity"]
            );
            bind(&client, "pods/binding", &name, "fargate-1")
                .await
                .expect("bind to Fargate");
        }
        let node = wait_scheduled(&client, NS, &name).await;
        assert!(node.starts_with(want_node), "{name}: scheduled on {node}");
        assert!(
            common::schedulable_on(&stored, &node_labels(&node)),
            "{name} on {node}"
        );
        println!(
            "rendered config.toml: {name} admitted with build requests {want_build}, on {node}"
        );
    }

    // 3b. Rolling restarts under continuous pod creation: not one creation fails.
    let creations = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let failures: Arc<Mutex<Vec<String>>> = Arc::default();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let creator = {
        let (client, creations, failures, done) = (
            client.clone(),
            creations.clone(),
            failures.clone(),
            done.clone(),
        );
        let mut pod = fixture_pod("plain-job.json");
        if let Some(m) = pod["metadata"].as_object_mut() {
            m.remove("name");
        }
        pod["metadata"]["generateName"] = json!("runner-roll-");
        pod["metadata"]["namespace"] = json!(NS);
        pod["metadata"]["labels"]["runner-fence.dev/e2e-roll"] = json!("true");
        // Gated: the point is admission, not the scheduler's throughput.
        pod["spec"]["schedulingGates"] = json!([{"name": "example.com/hold"}]);
        tokio::spawn(async move {
            use std::sync::atomic::Ordering;
            let limit = 2000;
            while !done.load(Ordering::SeqCst) && creations.load(Ordering::SeqCst) < limit {
                match create(&client, &pod).await {
                    Ok(_) => {}
                    Err(e) => failures.lock().expect("lock").push(e),
                }
                creations.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
        })
    };
    for round in 1..=3 {
        let next = Webhook::start(d, free_port(), &chart);
        proxy.add(&next);
        tokio::time::sleep(PROBE_PERIOD + Duration::from_millis(500)).await;
        let old = std::mem::replace(&mut webhook, next);
        let old_addr = old.addr.clone();
        old.terminate().await;
        proxy.remove(&old_addr);
        println!(
            "rolling restart {round}: replaced {old_addr} by {}",
            webhook.addr
        );
    }
    while creations.load(std::sync::atomic::Ordering::SeqCst) < 200 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    creator.await.expect("creator");
    let failed = failures.lock().expect("lock").clone();
    let total = creations.load(std::sync::atomic::Ordering::SeqCst);
    println!(
        "rolling restarts: {total} pod creations through 3 restarts, {} failed",
        failed.len()
    );
    assert!(
        failed.is_empty(),
        "creations failed during rolling restarts: {failed:?}"
    );
    kubectl_ok(
        &[
            "-n",
            NS,
            "delete",
            "pods",
            "-l",
            "runner-fence.dev/e2e-roll=true",
            "--grace-period=0",
            "--force",
            "--wait=false",
        ],
        None,
    );

    // 4. The attacks, through the API.
    let tolerate_all = json!([{"operator": "Exists"}]);
    denied(
        &client,
        "nodeSelector override",
        &named(
            fixture_pod("job-with-node-selector-overwrite.json"),
            "runner-a-1",
            NS,
        ),
        "placement",
    )
    .await;
    denied(
        &client,
        "toleration override",
        &named(
            fixture_pod("job-with-toleration-overwrite.json"),
            "runner-a-2",
            NS,
        ),
        "protected-nodes",
    )
    .await;
    denied(
        &client,
        "tolerate-all bare pod",
        &bare("netshoot", NS, json!({"tolerations": tolerate_all})),
        "protected-nodes",
    )
    .await;
    denied(
        &client,
        "nodeName",
        &bare("pinned", NS, json!({"nodeName": "gitlab-1"})),
        "node-name",
    )
    .await;
    let mut spoofed = named(
        fixture_pod("job-with-node-selector-overwrite.json"),
        "runner-a-3",
        NS,
    );
    spoofed["metadata"]["labels"]["app"] = json!("gitlab-runner");
    denied(&client, "spoofed manager label", &spoofed, "placement").await;
    denied(
        &client,
        "ci-job-* namespace",
        &bare(
            "job",
            CI_NS,
            json!({"nodeSelector": {"workload": "gitlab"}, "tolerations": tolerate_all}),
        ),
        "protected-nodes",
    )
    .await;
    // The node cache sees gitlab-1's labels: matchFields naming it is denied although
    // the policy lists no node names.
    let mf = bare(
        "mf",
        NS,
        json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["gitlab-1"]}]}]}}}}),
    );
    denied(
        &client,
        "matchFields to a GitLab node (node cache)",
        &mf,
        "its labels match protectedNodes",
    )
    .await;

    // Controllers: a Deployment, a DaemonSet and a Job whose pods ask for GitLab's nodes.
    let template = json!({"metadata": {"labels": {"app": "miner"}}, "spec": {
        "nodeSelector": {"workload": "gitlab"}, "tolerations": tolerate_all,
        "containers": [{"name": "main", "image": "busybox"}]}});
    let mut job_template = template.clone();
    job_template["spec"]["restartPolicy"] = json!("Never");
    let controllers = json!([
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "miner", "namespace": NS},
         "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "miner"}}, "template": template}},
        {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "agent", "namespace": NS},
         "spec": {"selector": {"matchLabels": {"app": "agent"}}, "template": {"metadata": {"labels": {"app": "agent"}},
            "spec": {"tolerations": tolerate_all, "containers": [{"name": "main", "image": "busybox"}]}}}},
        {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "exfil", "namespace": NS},
         "spec": {"backoffLimit": 0, "template": job_template}},
    ]);
    for c in controllers.as_array().into_iter().flatten() {
        kubectl_ok(&["apply", "-f", "-"], Some(&c.to_string()));
    }
    for owner in ["miner", "agent", "exfil"] {
        wait_for(
            &format!("a FailedCreate event of {owner} naming runner-fence"),
            60,
            || events_mention_runner_fence(NS, owner),
        )
        .await;
    }

    // Gone before audit mode (below) would let their retries through.
    kubectl_ok(
        &[
            "-n",
            NS,
            "delete",
            "deployment/miner",
            "daemonset/agent",
            "job/exfil",
            "--wait=true",
        ],
        None,
    );
    let leftover = kubectl_ok(&["-n", NS, "get", "pods", "-o", "name"], None);
    for owner in ["miner", "agent", "exfil"] {
        assert!(
            !leftover.contains(&format!("pod/{owner}-")),
            "{owner} created a pod: {leftover}"
        );
    }

    // UPDATE while scheduling-gated: nodeSelector and tolerations may still change.
    let mut gated = named(fixture_pod("plain-job.json"), "runner-gated", NS);
    gated["spec"]["schedulingGates"] = json!([{"name": "example.com/hold"}]);
    create(&client, &gated).await.expect("gated pod");
    let pods = Api::<Pod>::namespaced(client.clone(), NS);
    let out = kubectl(
        &[
            "-n",
            NS,
            "patch",
            "pod",
            "runner-gated",
            "--type=json",
            "-p",
            r#"[{"op": "add", "path": "/spec/tolerations/-", "value": {"operator": "Exists"}}]"#,
        ],
        None,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("protected-nodes"),
        "tolerate-all added while gated: {stderr}"
    );
    let out = kubectl(
        &[
            "-n",
            NS,
            "patch",
            "pod",
            "runner-gated",
            "--type=merge",
            "-p",
            r#"{"spec": {"nodeSelector": {"workload": "gitlab"}}}"#,
        ],
        None,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("placement"),
        "GitLab nodeSelector added while gated: {stderr}"
    );

    // Bindings by hand, both paths, to a GitLab node; a pod no scheduler will place.
    let unscheduled = |name: &str| {
        let mut p = named(fixture_pod("plain-job.json"), name, NS);
        p["spec"]["schedulerName"] = json!("nobody");
        p
    };
    for (name, path) in [
        ("runner-bind-a", "pods/binding"),
        ("runner-bind-b", "bindings"),
    ] {
        create(&client, &unscheduled(name))
            .await
            .expect("unscheduled pod");
        let err = bind(&client, path, name, "gitlab-1")
            .await
            .expect_err(&format!("{path} to gitlab-1"));
        assert!(err.contains("protected-nodes"), "{path}: {err}");
        // To a runner node the same binding goes through.
        bind(&client, path, name, "runner-1")
            .await
            .unwrap_or_else(|e| panic!("{path} to runner-1: {e}"));
        assert_eq!(wait_scheduled(&client, NS, name).await, "runner-1");
    }

    // A privileged ephemeral container on the Fargate-selected pod.
    let err = pods
        .patch_ephemeral_containers(
            "runner-e2e-fargate-job",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"ephemeralContainers": [
                {"name": "debugger", "image": "busybox", "securityContext": {"privileged": true}}]}})),
        )
        .await
        .expect_err("privileged ephemeral container on Fargate");
    assert!(err.to_string().contains("fargate-compat"), "{err}");

    // The pod created before enforcement: ungating it is denied with its old violations.
    ungate("protected-nodes", "node cache on");
    // An ephemeral container (not privileged even) on a pod already running on a GitLab node.
    let mut on_gitlab_pod = None;
    for name in &baseline {
        let p = pods.get(name).await.expect("baseline pod");
        if p.spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .is_some_and(gitlab_node)
        {
            on_gitlab_pod = Some(name.clone());
            break;
        }
    }
    let on_gitlab_pod = on_gitlab_pod.expect("a baseline pod on a GitLab node");
    let debug = Patch::Strategic(json!({"spec": {"ephemeralContainers": [
        {"name": "debugger", "image": "busybox", "securityContext": {"privileged": true}}]}}));
    let err = pods
        .patch_ephemeral_containers(&on_gitlab_pod, &PatchParams::default(), &debug)
        .await
        .expect_err("ephemeral container on a pod on a GitLab node");
    assert!(
        err.to_string().contains(
            "spec.ephemeralContainers adds a container to a pod on protected GitLab node"
        ),
        "{err}"
    );
    // A request the apiserver accepts must never skip the cap: memory 1e19 (the
    // e2e policy audits resources, so kubectl shows what enforce mode would deny).
    let mut huge = named(fixture_pod("plain-job.json"), "runner-huge", NS);
    huge["spec"]["containers"][0]["resources"] = json!({"requests": {"memory": "1e19"}});
    let out = kubectl(
        &["create", "--dry-run=server", "-f", "-"],
        Some(&huge.to_string()),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success()
            && stderr.contains("would deny: resources: spec.containers[0].resources.requests.memory")
            // The apiserver stores 1e19 in canonical form, 10e18.
            && stderr.contains("requests memory 10e18, above the maximum 16Gi"),
        "memory 1e19: {stderr}"
    );

    // 4c. A replica without the node cache, the only one serving: the ungating is
    //     still denied, and a hand binding to a GitLab node is judged from the Node
    //     read on demand (GitLab's nodes are not listed by name in the policy).
    let no_cache = Webhook::start_with(d, free_port(), &chart, false, &[]);
    proxy.add(&no_cache);
    tokio::time::sleep(PROBE_PERIOD + Duration::from_millis(500)).await;
    let cached = std::mem::replace(&mut webhook, no_cache);
    let cached_addr = cached.addr.clone();
    cached.terminate().await;
    proxy.remove(&cached_addr);
    ungate("protected-nodes", "node cache off");
    let mut loose = named(fixture_pod("plain-job.json"), "runner-bind-c", NS);
    loose["spec"]["schedulerName"] = json!("nobody");
    create(&client, &loose).await.expect("unscheduled pod");
    let err = bind(&client, "pods/binding", "runner-bind-c", "gitlab-1")
        .await
        .expect_err("binding to gitlab-1 without the node cache");
    assert!(
        err.contains(
            "binds the job pod to protected GitLab node gitlab-1 (its labels match protectedNodes)"
        ),
        "{err}"
    );
    bind(&client, "pods/binding", "runner-bind-c", "runner-1")
        .await
        .unwrap_or_else(|e| panic!("binding to runner-1 without the node cache: {e}"));
    let (_, metrics) = http_get(&webhook.admin, "/metrics");
    let found = metrics
        .lines()
        .find_map(|l| l.strip_prefix("runner_fence_node_lookups_total{result=\"found\"} "))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    assert!(
        found >= 2,
        "the replica without the node cache did not read both nodes: {metrics}"
    );
    // Back to a replica with the node cache for the rest.
    let next = Webhook::start(d, free_port(), &chart);
    proxy.add(&next);
    tokio::time::sleep(PROBE_PERIOD + Duration::from_millis(500)).await;
    let old = std::mem::replace(&mut webhook, next);
    let old_addr = old.addr.clone();
    old.terminate().await;
    proxy.remove(&old_addr);

    // Server-side dry run: the same answers, nothing stored.
    let dry_pod: Pod =
        serde_json::from_value(named(fixture_pod("plain-job.json"), "runner-dry", NS))
            .expect("pod");
    let out = pods.create(&dry, &dry_pod).await.expect("dry-run create");
    assert_eq!(
        out.annotations()
            .get("runner-fence.dev/profile")
            .map(String::as_str),
        Some("runner-nodes")
    );
    assert!(
        pods.get_opt("runner-dry").await.expect("get").is_none(),
        "dry run stored a pod"
    );
    let bad: Pod =
        serde_json::from_value(bare("dry-bad", NS, json!({"tolerations": tolerate_all})))
            .expect("pod");
    let err = pods.create(&dry, &bad).await.expect_err("dry-run denial");
    assert!(err.to_string().contains("protected-nodes"), "{err}");

    // 5. `runner-fence audit`: the baseline pods on GitLab nodes, then the gaps of a
    //    hand-broken configuration.
    let report = runner_fence::k8s::audit::collect(client.clone(), &policy)
        .await
        .expect("audit");
    assert!(report.protected_nodes.iter().any(|n| n.name == "gitlab-1"));
    assert_eq!(
        report.on_protected().count(),
        on_gitlab,
        "{:?}",
        report.job_pods
    );
    assert!(
        report.coverage_gaps.is_empty(),
        "generated configurations have gaps: {:?}",
        report.coverage_gaps
    );
    // A hand-broken configuration stays broken only while no replica reconciles: hold
    // the Lease for maintenance first (as `runner-fence uninstall` does).
    let generated = || -> Value {
        serde_json::from_str::<Value>(&kubectl_ok(
            &[
                "get",
                "validatingwebhookconfiguration",
                RELEASE,
                "-o",
                "json",
            ],
            None,
        ))
        .map(|v| v["webhooks"].clone())
        .expect("json")
    };
    let unbroken = generated();
    let hold = json!({"spec": {"holderIdentity": "e2e-maintenance", "leaseDurationSeconds": 600,
        "renewTime": k8s_openapi::jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S.%6fZ").to_string()}});
    kubectl_ok(
        &[
            "-n",
            RELEASE,
            "patch",
            "lease",
            &format!("{RELEASE}-controller"),
            "--type=merge",
            "-p",
            &hold.to_string(),
        ],
        None,
    );
    wait_for("the leader to step down", 15, || {
        http_get(&webhook.admin, "/metrics")
            .1
            .lines()
            .any(|l| l == "runner_fence_leader 0")
    })
    .await;
    kubectl_ok(
        &[
            "patch",
            "validatingwebhookconfiguration",
            "runner-fence",
            "--type=json",
            "-p",
            r#"[{"op": "replace", "path": "/webhooks/0/rules/0/resources", "value": ["pods/binding"]},
              {"op": "replace", "path": "/webhooks/0/failurePolicy", "value": "Ignore"}]"#,
        ],
        None,
    );
    let report = runner_fence::k8s::audit::collect(client.clone(), &policy)
        .await
        .expect("audit");
    let gaps = &report.coverage_gaps;
    assert!(
        gaps.iter().any(|g| g.request == "bindings CREATE"),
        "{gaps:?}"
    );
    // Fail-open is no gap while the backstop the leader applied denies: that is what
    // makes `failurePolicy: Ignore` safe.
    assert!(report.backstop.denies(), "audit does not see the backstop");
    assert!(
        !gaps.iter().any(|g| g.reason.contains("failurePolicy")),
        "{gaps:?}"
    );
    let out = Command::new(BIN)
        .args(["audit", "--policy"])
        .arg(d.join("policy.yaml"))
        .env("KUBECONFIG", &kc)
        .output()
        .expect("audit");
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("bindings CREATE"));
    // The live policies instead of a file: each served one for the namespaces it
    // reviews (the baseline pods on GitLab nodes are e2e's), as the controller judges them.
    let (live, code) = audit_live(&kc, None);
    assert_eq!(code, Some(1), "{live}");
    let by_policy = |name: &str| -> &Value {
        live.as_array()
            .into_iter()
            .flatten()
            .find(|p| p["policy"] == name)
            .map(|p| &p["report"])
            .unwrap_or_else(|| panic!("no report of {name}: {live}"))
    };
    let on_protected = |r: &Value| -> usize {
        r["job_pods"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["on_protected_node"] == true)
            .count()
    };
    assert_eq!(on_protected(by_policy("e2e")), on_gitlab, "{live}");
    assert_eq!(on_protected(by_policy("e2e-team-b")), 0, "{live}");
    // The backstop the leader applied for both policies is what each expects.
    for name in ["e2e", "e2e-team-b"] {
        let b = &by_policy(name)["backstop"];
        assert_eq!(b["issues"], json!([]), "{name}: {b}");
        assert!(
            b["found"]
                .as_array()
                .is_some_and(|f| f.iter().any(|o| o["name"] == "runner-fence-backstop")),
            "{name}: {b}"
        );
    }
    // Maintenance over: the replica that takes the Lease puts the configuration back.
    kubectl_ok(
        &[
            "-n",
            RELEASE,
            "delete",
            "lease",
            &format!("{RELEASE}-controller"),
        ],
        None,
    );
    wait_for("the broken configuration to be reverted", 20, || {
        generated() == unbroken
    })
    .await;

    // What runners can reach beyond the policy: a job pod (GitLab Runner's marks) in a
    // namespace the policy does not list, and the runner's service account allowed to
    // create pods in another namespace.
    kubectl_ok(&["create", "namespace", "builds"], None);
    kubectl_ok(
        &[
            "create",
            "clusterrole",
            "pod-maker",
            "--verb=create,get",
            "--resource=pods",
        ],
        None,
    );
    kubectl_ok(
        &[
            "-n",
            "builds",
            "create",
            "rolebinding",
            "runner-builds",
            "--clusterrole=pod-maker",
            &format!("--serviceaccount={NS}:gitlab-runner-jobs"),
        ],
        None,
    );
    kubectl_ok(&["create", "namespace", "runner-other-9"], None);
    let mut outside = named(
        fixture_pod("plain-job.json"),
        "runner-outside-project-9-concurrent-0-x",
        "runner-other-9",
    );
    outside["metadata"]["annotations"]["job.runner.gitlab.com/id"] = json!("9");
    outside["metadata"]["labels"]["job.runner.gitlab.com/pod"] =
        json!("runner-outside-project-9-concurrent-0");
    outside["spec"]["nodeSelector"] = json!({"workload": "gitlab"});
    wait_service_account(&client, "runner-other-9", "default").await;
    create(&client, &outside)
        .await
        .expect("job pod outside the fence");
    let out = Command::new(BIN)
        .args(["audit", "--policy"])
        .arg(d.join("policy.yaml"))
        .env("KUBECONFIG", &kc)
        .output()
        .expect("audit");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.starts_with("DELETE OR FIX THESE BEFORE ENFORCING"),
        "the pods enforce mode would deny come first: {text}"
    );
    let first_section: String = text.split("\n\n").next().unwrap_or("").to_string();
    assert!(first_section.contains("runner-pre-gated"), "{text}");
    assert!(text.contains("JOB PODS OUTSIDE THE FENCE (1)"), "{text}");
    assert!(
        text.contains("runner-other-9/runner-outside-project-9-concurrent-0-x"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "runner service account {NS}/gitlab-runner-jobs can create pods in builds (via RoleBinding builds/runner-builds → ClusterRole pod-maker)"
        )),
        "{text}"
    );
    // With the namespace in the policy, the job pod is inside the fence.
    let wider = d.join("wider.yaml");
    std::fs::write(
        &wider,
        policy_text("enforce").replacen(
            "namespaces: [gitlab-runner, ci-job-*]",
            "namespaces: [gitlab-runner, ci-job-*, runner-other-*]",
            1,
        ),
    )
    .expect("policy");
    let out = Command::new(BIN)
        .args(["audit", "--policy"])
        .arg(&wider)
        .env("KUBECONFIG", &kc)
        .output()
        .expect("audit");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.contains("JOB PODS OUTSIDE THE FENCE (0)"), "{text}");
    // Gone, so the audit-first phase judges a cluster without it (no kubelet
    // here finishes a graceful deletion).
    kubectl_ok(
        &[
            "-n",
            "runner-other-9",
            "delete",
            "pod",
            "runner-outside-project-9-concurrent-0-x",
            "--grace-period=0",
            "--force",
        ],
        None,
    );
    // namespace_per_job: a job pod in ci-job-<id> is fenced while the policy lists
    // `ci-job-*`; with a policy that lists only the runner namespace (the reference),
    // audit reports it.
    let per_job = named(
        fixture_pod("plain-job.json"),
        "runner-perjob-project-1-concurrent-0-x",
        CI_NS,
    );
    create(&client, &per_job)
        .await
        .expect("fenced job pod in ci-job-*");
    let placed = wait_scheduled(&client, CI_NS, "runner-perjob-project-1-concurrent-0-x").await;
    assert!(
        placed.starts_with("runner-"),
        "ci-job pod fenced onto {placed}"
    );
    let narrow = d.join("narrow.yaml");
    std::fs::write(&narrow, runner_fence::core::policy::EMBEDDED_POLICY).expect("policy");
    let out = Command::new(BIN)
        .args(["audit", "--policy"])
        .arg(&narrow)
        .env("KUBECONFIG", &kc)
        .output()
        .expect("audit");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let outside_section = text
        .split("JOB PODS OUTSIDE THE FENCE")
        .nth(1)
        .and_then(|t| t.split("\n\n").next())
        .unwrap_or_else(|| panic!("no job pods outside the fence reported: {text}"));
    assert!(
        outside_section.contains(&format!("{CI_NS}/runner-perjob-project-1-concurrent-0-x")),
        "{text}"
    );

    // PolicyReports: written with --apply, accepted against the CRD, readable by
    // Policy Reporter and kubectl.
    common::cluster::policy_report_crd();
    let out = Command::new(BIN)
        .args(["audit", "--output", "policy-report", "--apply", "--policy"])
        .arg(d.join("policy.yaml"))
        .env("KUBECONFIG", &kc)
        .output()
        .expect("audit --apply");
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("kind: PolicyReport"));
    // One report per pod, found by the label every report carries.
    let stored: Value = serde_json::from_str(&kubectl_ok(
        &[
            "-n",
            NS,
            "get",
            "policyreports",
            "-l",
            "app.kubernetes.io/managed-by=runner-fence",
            "-o",
            "json",
        ],
        None,
    ))
    .expect("policyreport json");
    let fails = stored["items"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|r| r["results"].as_array().into_iter().flatten())
        .filter(|r| r["result"] == "fail" && r["rule"] == "protected-nodes")
        .count();
    assert!(
        fails >= on_gitlab,
        "the baseline pods are failures in the stored report: {stored}"
    );

    // 6. Audit mode: allowed, and kubectl shows what enforce mode would deny.
    apply_policy(&policy_object("e2e", &policy_text("audit")));
    let audit_pod = {
        let mut p = bare("audit-mode", NS, json!({"tolerations": tolerate_all}));
        // Gated, so that the pod audit mode lets through is never placed anywhere.
        p["spec"]["schedulingGates"] = json!([{"name": "example.com/hold"}]);
        p.to_string()
    };
    wait_for("the policy object in audit mode to be served", 20, || {
        kubectl(&["create", "--dry-run=server", "-f", "-"], Some(&audit_pod))
            .status
            .success()
    })
    .await;
    let out = kubectl(&["create", "-f", "-"], Some(&audit_pod));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "audit mode denied: {stderr}");
    assert!(
        stderr.contains("would deny: protected-nodes"),
        "kubectl showed no warning: {stderr}"
    );
    assert!(
        stderr.contains("[runner-fence backstop"),
        "the audit backstop did not warn about the pod enforce mode denies: {stderr}"
    );
    // A job pod enforce mode admits gets no "would deny" from either layer: audit mode
    // warns only where enforcing would block.
    let fine = {
        let mut p = named(fixture_pod("plain-job.json"), "runner-audit-fine", NS);
        p["spec"]["schedulingGates"] = json!([{"name": "example.com/hold"}]);
        p.to_string()
    };
    let out = kubectl(&["create", "-f", "-"], Some(&fine));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "audit mode denied a good pod: {stderr}"
    );
    assert!(
        !stderr.contains("would deny") && !stderr.contains("[runner-fence backstop"),
        "audit mode warned about a pod enforce mode admits: {stderr}"
    );
    audit_first_is_clean(&client, d).await;

    // 7. runner-fence down: the in-tree backstop the leader applied alone holds the
    //    fence. Both webhooks fail open (the chart's `webhooks.failurePolicy: Ignore`,
    //    which the backstop makes safe).
    apply_policy(&policy_object("e2e", &policy_text("enforce")));
    let fail_open = Webhook::start_with(
        d,
        free_port(),
        &chart,
        true,
        &[
            "--mutate-failure-policy",
            "ignore",
            "--validate-failure-policy",
            "ignore",
        ],
    );
    proxy.add(&fail_open);
    tokio::time::sleep(PROBE_PERIOD + Duration::from_millis(500)).await;
    let old = std::mem::replace(&mut webhook, fail_open);
    let old_addr = old.addr.clone();
    old.terminate().await;
    proxy.remove(&old_addr);
    wait_for("the fail-open webhooks and the enforcing backstop", 30, || {
        let get = |kind: &str, name: &str| -> Value {
            serde_json::from_slice(&kubectl(&["get", kind, name, "-o", "json"], None).stdout)
                .unwrap_or(Value::Null)
        };
        let ignore = |v: Value| {
            v["webhooks"]
                .as_array()
                .is_some_and(|w| w.iter().all(|w| w["failurePolicy"] == "Ignore"))
        };
        ignore(get("mutatingwebhookconfiguration", "0100-runner-fence"))
            && ignore(get("validatingwebhookconfiguration", RELEASE))
            && get("validatingadmissionpolicybinding", "runner-fence-backstop")["spec"]
                ["validationActions"]
                == json!(["Deny"])
    })
    .await;
    // With the backstop installed, the fail-open webhooks are the documented setting.
    let report = runner_fence::k8s::audit::collect(client.clone(), &policy)
        .await
        .expect("audit");
    assert!(report.backstop.denies(), "audit does not see the backstop");
    assert!(
        !report
            .coverage_gaps
            .iter()
            .any(|g| g.reason.contains("Ignore")),
        "{:?}",
        report.coverage_gaps
    );
    drop(webhook);
    let backstop_denies = |what: &str, pod: Value| {
        let out = kubectl(&["create", "-f", "-"], Some(&pod.to_string()));
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(
            !out.status.success() && stderr.contains("runner-fence-backstop"),
            "{what}: not denied by the backstop: {stderr}"
        );
        stderr
    };
    // The policy takes a moment to reach the apiserver's admission plugin.
    wait_for("the backstop to take effect", 30, || {
        let out = kubectl(
            &["create", "--dry-run=server", "-f", "-"],
            Some(&bare("probe", NS, json!({"nodeSelector": {"workload": "gitlab"}})).to_string()),
        );
        String::from_utf8_lossy(&out.stderr).contains("runner-fence-backstop")
    })
    .await;
    let msg = backstop_denies(
        "GitLab selector",
        bare(
            "down-1",
            NS,
            json!({"nodeSelector": {"workload": "gitlab"}}),
        ),
    );
    assert!(
        msg.contains("mutating webhook"),
        "the message says why: {msg}"
    );
    backstop_denies(
        "unmutated job pod",
        named(fixture_pod("plain-job.json"), "runner-down-2", NS),
    );
    let mut placed = runner_fence::webhook::eval::evaluate(
        &policy,
        &common::review_of(
            named(fixture_pod("plain-job.json"), "runner-down-ok", NS),
            "CREATE",
        ),
        None,
    )
    .expect("offline")
    .pod
    .clone();
    let mut tolerate_all_placed = placed.clone();
    tolerate_all_placed["metadata"]["name"] = json!("runner-down-3");
    tolerate_all_placed["spec"]["tolerations"] = json!([{"operator": "Exists"}]);
    backstop_denies("tolerate-all", tolerate_all_placed);
    let mut pinned = placed.clone();
    pinned["metadata"]["name"] = json!("runner-down-4");
    pinned["spec"]["nodeName"] = json!("gitlab-1");
    backstop_denies("nodeName", pinned);
    // The pod created before enforcement: the backstop denies its ungating too.
    ungate(
        "runner-fence-backstop",
        "runner-fence down, Ignore + backstop",
    );
    // The apiserver counts the backstop's denials itself (the dashboard reads this).
    let metrics = kubectl_ok(&["get", "--raw", "/metrics"], None);
    let want_labels = |line: &str| -> Vec<String> {
        let inner = line.split_once('{').map(|(_, r)| r).unwrap_or("");
        let inner = inner.split_once('}').map(|(l, _)| l).unwrap_or("");
        let mut names: Vec<String> = inner
            .split("\",")
            .filter_map(|kv| {
                kv.split_once('=')
                    .map(|(k, _)| k.trim_matches(',').to_string())
            })
            .collect();
        names.sort();
        names
    };
    let sample = include_str!("data/apiserver-metrics.txt")
        .lines()
        .find(|l| l.starts_with("apiserver_validating_admission_policy_check_total{"))
        .expect("sample line");
    let live = metrics
        .lines()
        .find(|l| {
            l.starts_with("apiserver_validating_admission_policy_check_total{")
                && l.contains("policy=\"runner-fence-backstop\"")
                && l.contains("enforcement_action=\"deny\"")
        })
        .unwrap_or_else(|| panic!("the apiserver does not count the backstop's denials"));
    assert_eq!(want_labels(live), want_labels(sample), "{live}");
    // A correctly placed pod (as config.toml from `render runner-config` would make it) is admitted.
    placed["metadata"]["name"] = json!("runner-down-ok");
    create(&client, &placed)
        .await
        .expect("a correctly placed pod while runner-fence is down");
    let node = wait_scheduled(&client, NS, "runner-down-ok").await;
    assert!(node.starts_with("runner-"), "scheduled on {node}");
    println!(
        "runner-fence down: the backstop denied 4 unsafe pods and admitted a placed one (on {node})"
    );

    // 8. Not one pod of the runner namespaces was ever bound to a GitLab node with
    //    runner-fence in place.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let bound = bound.lock().expect("lock").clone();
    watch.abort();
    let on_gitlab_after: Vec<(&String, &String)> = bound
        .iter()
        .filter(|(pod, node)| {
            (pod.starts_with(&format!("{NS}/")) || pod.starts_with("ci-job-"))
                && gitlab_node(node)
                && !before.contains(pod)
        })
        .collect();
    let in_scope = bound
        .keys()
        .filter(|p| p.starts_with(&format!("{NS}/")))
        .count();
    println!(
        "WITH runner-fence: {} pods of the runner namespaces bound to GitLab nodes ({in_scope} bound in all, {} of them before runner-fence)",
        on_gitlab_after.len(),
        before.len()
    );
    assert!(on_gitlab_after.is_empty(), "{on_gitlab_after:?}");

    // 9. `helm uninstall`: its post-delete hook removes everything runner-fence created;
    //    the policies are the users' and stay, released.
    uninstall_release(d).await;
}

/// `helm uninstall` of [`RELEASE`], running its post-delete hook Job's pod as a kubelet
/// would (its container's args, its ServiceAccount's token), then checks that nothing
/// of the release is left.
async fn uninstall_release(d: &Path) {
    let helm = common::cached_tool("scripts/tools/helm.sh");
    let mut uninstall = Command::new(&helm)
        .args([
            "uninstall",
            RELEASE,
            "--namespace",
            RELEASE,
            "--timeout",
            "3m",
        ])
        .arg("--kubeconfig")
        .arg(kubeconfig())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("helm uninstall");
    let deadline = Instant::now() + Duration::from_secs(200);
    let mut hook_ran = false;
    while uninstall.try_wait().expect("helm uninstall").is_none() {
        assert!(Instant::now() < deadline, "helm uninstall did not finish");
        let pods: Value = serde_json::from_str(&kubectl_ok(
            &[
                "-n",
                RELEASE,
                "get",
                "pods",
                "-l",
                "app.kubernetes.io/component=uninstall",
                "-o",
                "json",
            ],
            None,
        ))
        .expect("pods");
        let pending = pods["items"].as_array().into_iter().flatten().find(|p| {
            p["metadata"]["deletionTimestamp"].is_null() && p["status"]["phase"] != "Succeeded"
        });
        if let Some(pod) = pending.filter(|_| !hook_ran) {
            let sa = pod["spec"]["serviceAccountName"]
                .as_str()
                .expect("serviceAccountName");
            let container = &pod["spec"]["containers"][0];
            let args: Vec<&str> = container["args"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let out = Command::new(BIN)
                .args(&args)
                .env("KUBECONFIG", token_kubeconfig(d, RELEASE, sa))
                .output()
                .expect("runner-fence uninstall");
            assert!(
                out.status.success(),
                "the uninstall hook ({args:?}) failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            println!(
                "uninstall hook: {}",
                String::from_utf8_lossy(&out.stdout).trim()
            );
            let now = k8s_openapi::jiff::Timestamp::now().to_string();
            let status = json!({"status": {"phase": "Succeeded", "containerStatuses": [{
                "name": container["name"], "image": container["image"], "imageID": "",
                "ready": false, "restartCount": 0, "started": false,
                "state": {"terminated": {"exitCode": 0, "reason": "Completed",
                                         "startedAt": now, "finishedAt": now}}}]}});
            kubectl_ok(
                &[
                    "-n",
                    RELEASE,
                    "patch",
                    "pod",
                    pod["metadata"]["name"].as_str().expect("name"),
                    "--subresource=status",
                    "--type=merge",
                    "-p",
                    &status.to_string(),
                ],
                None,
            );
            hook_ran = true;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let out = uninstall.wait_with_output().expect("helm uninstall");
    assert!(
        out.status.success(),
        "helm uninstall: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(hook_ran, "helm uninstall finished without running its hook");
    // No kubelet confirms the deletion of the pods bound to the fake nodes: as it would.
    kubectl_ok(
        &[
            "-n",
            RELEASE,
            "delete",
            "pods",
            "--all",
            "--grace-period=0",
            "--force",
            "--wait=false",
        ],
        None,
    );
    let mut left = Vec::new();
    for (ns, kind, name) in [
        (None, "mutatingwebhookconfiguration", "0100-runner-fence"),
        (None, "validatingwebhookconfiguration", RELEASE),
        (None, "validatingadmissionpolicy", "runner-fence-backstop"),
        (
            None,
            "validatingadmissionpolicybinding",
            "runner-fence-backstop",
        ),
        (
            None,
            "validatingadmissionpolicy",
            "runner-fence-backstop-audit",
        ),
        (
            None,
            "validatingadmissionpolicybinding",
            "runner-fence-backstop-audit",
        ),
        (None, "clusterrole", RELEASE),
        (None, "clusterrolebinding", RELEASE),
        (None, "clusterrole", "runner-fence-uninstall"),
        (None, "clusterrolebinding", "runner-fence-uninstall"),
        (Some(RELEASE), "lease", "runner-fence-controller"),
        (Some(RELEASE), "secret", "runner-fence-tls"),
        (Some(RELEASE), "deployment", RELEASE),
        (Some(RELEASE), "service", RELEASE),
        (Some(RELEASE), "serviceaccount", RELEASE),
        (Some(RELEASE), "serviceaccount", "runner-fence-uninstall"),
        (Some(RELEASE), "job", "runner-fence-uninstall"),
        (Some(RELEASE), "role", RELEASE),
        (Some(RELEASE), "rolebinding", RELEASE),
    ] {
        let mut args = vec!["get", kind, name, "--ignore-not-found", "-o", "name"];
        if let Some(ns) = ns {
            args.extend(["-n", ns]);
        }
        let found = kubectl_ok(&args, None);
        if !found.trim().is_empty() {
            left.push(found.trim().to_string());
        }
    }
    assert!(
        left.is_empty(),
        "left behind after helm uninstall: {left:?}"
    );
    for name in ["e2e", "e2e-team-b"] {
        let p: Value = serde_json::from_str(&kubectl_ok(
            &["get", "runnerfencepolicy", name, "-o", "json"],
            None,
        ))
        .expect("policy");
        assert!(
            !p["metadata"]["finalizers"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|f| f == runner_fence::core::fleet::FINALIZER),
            "{name} still carries runner-fence's finalizer: {}",
            p["metadata"]
        );
    }
    println!(
        "helm uninstall: nothing of the release left, the policies stay without the finalizer"
    );
}

/// The Helm chart on the real apiserver: every object of every option set (the
/// initial RunnerFencePolicy and the uninstall hook included) is accepted by a
/// server-side dry-run apply, in a namespace that enforces the restricted Pod
/// Security Standard, and the Deployment's pods are really created there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the loopback control plane: run bash scripts/e2e.sh"]
async fn the_chart_is_accepted_by_the_apiserver() {
    const CHART_NS: &str = "rf-chart";
    let helm = common::cached_tool("scripts/tools/helm.sh");
    let crds = common::cached_tool("scripts/tools/crds.sh");
    // cert-manager's and the Prometheus Operator's CRDs, so their objects are checked too.
    kubectl_ok(
        &["apply", "--server-side", "-f", &crds.display().to_string()],
        None,
    );
    kubectl_ok(
        &[
            "wait",
            "--for=condition=established",
            "--timeout=60s",
            "crd/certificates.cert-manager.io",
            "crd/issuers.cert-manager.io",
            "crd/servicemonitors.monitoring.coreos.com",
            "crd/prometheusrules.monitoring.coreos.com",
        ],
        None,
    );
    kubectl_ok(&["create", "namespace", CHART_NS], None);
    kubectl_ok(
        &[
            "label",
            "namespace",
            CHART_NS,
            "pod-security.kubernetes.io/enforce=restricted",
            "pod-security.kubernetes.io/warn=restricted",
        ],
        None,
    );

    // The CRD (crds/ is what `helm install` applies first), so the initial policy is checked too.
    kubectl_ok(
        &[
            "apply",
            "--server-side",
            "-f",
            &PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("charts/runner-fence/crds/runnerfencepolicies.runner-fence.dev.yaml")
                .display()
                .to_string(),
        ],
        None,
    );
    kubectl_ok(
        &[
            "wait",
            "--for=condition=established",
            "--timeout=60s",
            "crd/runnerfencepolicies.runner-fence.dev",
        ],
        None,
    );
    let dir = tempfile::tempdir().expect("tmp");
    let object: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/runnerfencepolicy.yaml"),
        )
        .expect("example"),
    )
    .expect("yaml");
    let initial = dir.path().join("initial.yaml");
    std::fs::write(
        &initial,
        json!({"initialPolicy": {"enabled": true, "name": "chart-e2e-initial", "spec": object["spec"]}})
            .to_string(),
    )
    .expect("write");

    let cases: Vec<(&str, Vec<String>)> = vec![
        ("managed", vec![]),
        ("cert-manager", vec!["--set".into(), "certificates.mode=certManager".into()]),
        ("initial-policy", vec!["-f".into(), initial.display().to_string()]),
        (
            "existing-secret",
            vec![
                "--set".into(),
                "certificates.mode=existingSecret,certificates.existingSecret.name=corp-tls".into(),
            ],
        ),
        (
            "monitoring",
            vec![
                "--set".into(),
                "metrics.serviceMonitor.enabled=true,metrics.prometheusRule.enabled=true,metrics.grafanaDashboard.enabled=true".into(),
            ],
        ),
        (
            "scheduling",
            vec![
                "--set".into(),
                "replicaCount=3,tolerations[0].key=dedicated,tolerations[0].operator=Exists,nodeSelector.role=system".into(),
            ],
        ),
        (
            "fail-open",
            vec!["--set".into(), "nodeCache.enabled=false,webhooks.failurePolicy=Ignore".into()],
        ),
    ];
    let template = |extra: &[String]| {
        let out = Command::new(&helm)
            .args(["template", "runner-fence"])
            .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("charts/runner-fence"))
            .args(["--namespace", CHART_NS, "--kube-version", "1.36.0"])
            .args(extra)
            .output()
            .expect("helm template");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    for (name, extra) in &cases {
        // The cluster-scoped objects get their own names: the fence test beside
        // this one installs webhook configurations with the shipped names.
        let mut docs: Vec<Value> = serde_saphyr::from_multiple::<Value>(&template(extra))
            .expect("yaml")
            .into_iter()
            .filter(|d| !d.is_null())
            .collect();
        let objects = docs.len();
        let prefixed = |v: &Value| json!(format!("chart-e2e-{}", v.as_str().unwrap_or("")));
        for d in &mut docs {
            if d["metadata"].get("namespace").is_none() {
                d["metadata"]["name"] = prefixed(&d["metadata"]["name"]);
            }
            if d["kind"] == "ValidatingAdmissionPolicyBinding" {
                d["spec"]["policyName"] = prefixed(&d["spec"]["policyName"]);
            }
            if d["kind"] == "ClusterRoleBinding" {
                d["roleRef"]["name"] = prefixed(&d["roleRef"]["name"]);
            }
        }
        let list = json!({"apiVersion": "v1", "kind": "List", "items": docs}).to_string();
        let out = kubectl(
            &[
                "apply",
                "--server-side",
                "--field-manager=chart-e2e",
                "--dry-run=server",
                "-f",
                "-",
            ],
            Some(&list),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "chart ({name}) refused by the apiserver: {stderr}"
        );
        assert!(
            !stderr.contains("PodSecurity"),
            "chart ({name}) violates the restricted Pod Security Standard: {stderr}"
        );
        let applied = String::from_utf8_lossy(&out.stdout).lines().count();
        assert_eq!(
            applied, objects,
            "chart ({name}): {applied} of {objects} objects applied"
        );
        println!("chart ({name}): {objects} objects accepted (server-side dry-run)");
    }

    // For real, the namespaced part (not the uninstall hook): Pod Security
    // admission checks the pods the ReplicaSet creates.
    let yaml = template(&[]);
    let namespaced: Vec<Value> = serde_saphyr::from_multiple::<Value>(&yaml)
        .expect("yaml")
        .into_iter()
        .filter(|d| {
            d["metadata"]["namespace"] == CHART_NS
                && d["metadata"]["annotations"]["helm.sh/hook"].is_null()
        })
        .collect();
    let list = json!({"apiVersion": "v1", "kind": "List", "items": namespaced});
    kubectl_ok(
        &["apply", "--server-side", "-f", "-"],
        Some(&list.to_string()),
    );
    wait_for(
        "2 chart pods created under restricted Pod Security",
        90,
        || {
            kubectl_ok(
                &[
                    "get",
                    "pods",
                    "-n",
                    CHART_NS,
                    "-l",
                    "app.kubernetes.io/instance=runner-fence",
                    "-o",
                    "name",
                ],
                None,
            )
            .lines()
            .count()
                >= 2
        },
    )
    .await;
    let events = kubectl_ok(&["get", "events", "-n", CHART_NS], None);
    assert!(!events.contains("violates PodSecurity"), "{events}");
    println!("chart: Deployment's pods created in a restricted namespace");
    let _ = kubectl(&["delete", "namespace", CHART_NS, "--wait=false"], None);
}

/// The reference a `local-registry.sh push` printed (scripts/e2e.sh exports them).
fn published(key: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| {
        panic!("{key} is not set: run bash scripts/e2e.sh, which pushes the image and the chart to the loopback registry")
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the loopback control plane: run bash scripts/e2e.sh"]
async fn the_published_chart_installs_from_the_registry() {
    // The chart and image as the release pipeline publishes them, from the loopback
    // registry: `helm install oci://...`, no runner-fence CLI, a second release
    // beside the others (cluster-scoped names derive from the release).
    const NS_OCI: &str = "rf-oci";
    let (chart, version) = (
        published("RUNNER_FENCE_CHART"),
        published("RUNNER_FENCE_CHART_VERSION"),
    );
    let (repository, digest) = (
        published("RUNNER_FENCE_IMAGE_REPOSITORY"),
        published("RUNNER_FENCE_IMAGE_DIGEST"),
    );
    let dir = tempfile::tempdir().expect("tmp");
    let spec: Value = serde_saphyr::from_str::<Value>(runner_fence::core::policy::EMBEDDED_POLICY)
        .map(|mut p| {
            if let Some(o) = p.as_object_mut() {
                for k in ["apiVersion", "kind", "metadata"] {
                    o.remove(k);
                }
            }
            p["match"]["namespaces"] = json!(["rf-oci-jobs"]);
            p
        })
        .expect("reference policy");
    let values = dir.path().join("values.yaml");
    std::fs::write(
        &values,
        serde_saphyr::to_string(&json!({
            "image": {"repository": repository, "digest": digest},
            "initialPolicy": {"enabled": true, "name": "rf-oci-jobs", "spec": spec},
        }))
        .expect("yaml"),
    )
    .expect("values");
    common::cluster::helm_ok([
        "install".as_ref(),
        "rf-oci".as_ref(),
        chart.as_ref(),
        "--version".as_ref(),
        version.as_ref(),
        "--plain-http".as_ref(),
        "--namespace".as_ref(),
        NS_OCI.as_ref(),
        "--create-namespace".as_ref(),
        "-f".as_ref(),
        values.as_os_str(),
    ]);
    // The Deployment runs the pushed image by digest.
    let images = kubectl_ok(
        &[
            "-n",
            NS_OCI,
            "get",
            "deployments",
            "-o",
            "jsonpath={..containers[*].image}",
        ],
        None,
    );
    assert!(
        images.contains(&format!("{repository}@{digest}")),
        "deployment images: {images}"
    );
    // The CRD came with the chart, and the initial policy is an API object.
    kubectl_ok(
        &[
            "wait",
            "--for=condition=established",
            "--timeout=30s",
            "crd/runnerfencepolicies.runner-fence.dev",
        ],
        None,
    );
    let policy = kubectl_ok(
        &["get", "runnerfencepolicy", "rf-oci-jobs", "-o", "json"],
        None,
    );
    assert!(policy.contains("rf-oci-jobs"), "{policy}");
    // Uninstall without the hook Job (no kubelet here runs it); the release is gone.
    common::cluster::helm_ok(["uninstall", "rf-oci", "--no-hooks", "--namespace", NS_OCI]);
    // Policies outlive the release by design; this one goes (allowing removal first,
    // in case a controller of another release holds it).
    kubectl_ok(
        &[
            "annotate",
            "runnerfencepolicy",
            "rf-oci-jobs",
            "runner-fence.dev/allow-removal=true",
        ],
        None,
    );
    kubectl_ok(
        &["delete", "runnerfencepolicy", "rf-oci-jobs", "--wait=false"],
        None,
    );
    println!("published chart {chart} {version} installed with image {repository}@{digest}");
}
