//! End-to-end suite against a real API server.
//!
//! Runs only with `RUNNER_FENCE_E2E=1` and `KUBECONFIG` set; otherwise it says it
//! was skipped and passes. The API server must be able to reach runner-fence at
//! `RUNNER_FENCE_E2E_ADDR` (default `127.0.0.1:18443`): a local kube-apiserver
//! (e.g. envtest binaries) works as is; for kind, run runner-fence on an address
//! the kind node can reach. See the README ("End-to-end tests").
//!
//! Everything it creates carries the label `runner-fence.dev/e2e` and is
//! removed at the end, also when an assertion fails.

mod common;

use std::time::Duration;

use base64::Engine as _;
use futures::FutureExt;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

const NS: &str = "runner-fence-e2e";
const LABEL: &str = "runner-fence.dev/e2e";

fn enabled() -> bool {
    std::env::var("RUNNER_FENCE_E2E").as_deref() == Ok("1")
        && std::env::var_os("KUBECONFIG").is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_against_a_real_api_server() {
    if !enabled() {
        // Written past the test harness's capture so that the skip is always visible.
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED e2e: set RUNNER_FENCE_E2E=1 and KUBECONFIG to run the end-to-end suite against an API server"
        );
        return;
    }
    let client = Client::try_default().await.expect("client from KUBECONFIG");
    let dir = tempfile::tempdir().expect("tmp");
    let policy_path = dir.path().join("policy.yaml");
    let policy_text = runner_fence::policy::EMBEDDED_POLICY
        .replacen("namespaces: [gitlab-runner]", &format!("namespaces: [{NS}]"), 1)
        .replacen(
            "matchExpressions: []",
            "matchExpressions:\n    - {key: eks.amazonaws.com/compute-type, operator: DoesNotExist}",
            1,
        );
    std::fs::write(&policy_path, &policy_text).expect("policy");
    let addr: std::net::SocketAddr = std::env::var("RUNNER_FENCE_E2E_ADDR")
        .unwrap_or_else(|_| "127.0.0.1:18443".into())
        .parse()
        .expect("RUNNER_FENCE_E2E_ADDR");
    let args = runner_fence::server::ServeArgs {
        policy: Some(policy_path.clone()),
        tls_cert: None,
        tls_key: None,
        client_ca: None,
        ca_out: None,
        addr,
        admin_addr: "127.0.0.1:0".parse().expect("addr"),
        node_cache: true,
        nodes_file: None,
        drain_seconds: 5,
        reload_interval_ms: 200,
        max_concurrency: 64,
        log_format: runner_fence::server::LogFormat::Plain,
    };
    let server = runner_fence::server::Server::bind(args)
        .await
        .expect("bind");
    let ca = server.generated_ca.clone().expect("generated CA");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async move {
        let _ = stop_rx.await;
    }));

    let result = std::panic::AssertUnwindSafe(scenario(
        client.clone(),
        &ca,
        addr,
        &policy_path,
        &policy_text,
    ))
    .catch_unwind()
    .await;
    cleanup(client).await;
    let _ = stop_tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

fn node(name: &str, labels: Value, taints: Value) -> Node {
    serde_json::from_value(json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": labels}, "spec": {"taints": taints}}))
    .expect("node")
}

/// The webhook configurations of `manifests/base`, pointed at `addr` by URL.
fn webhooks(
    ca: &str,
    addr: std::net::SocketAddr,
) -> (MutatingWebhookConfiguration, ValidatingWebhookConfiguration) {
    let text = std::fs::read_to_string(format!(
        "{}/manifests/base/webhooks.yaml",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("webhooks.yaml");
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text).expect("yaml");
    let bundle = base64::engine::general_purpose::STANDARD.encode(ca);
    let fix = |mut d: Value, path: &str| {
        d["metadata"]["name"] = json!(format!(
            "{}-e2e",
            d["metadata"]["name"].as_str().unwrap_or("x")
        ));
        d["metadata"]["labels"] = json!({LABEL: "true"});
        for w in d["webhooks"].as_array_mut().into_iter().flatten() {
            w["clientConfig"] = json!({"url": format!("https://{addr}{path}"), "caBundle": bundle});
            w["namespaceSelector"] = json!({"matchLabels": {"kubernetes.io/metadata.name": NS}});
        }
        d
    };
    let m = docs
        .iter()
        .find(|d| d["kind"] == "MutatingWebhookConfiguration")
        .cloned()
        .expect("mwc");
    let v = docs
        .iter()
        .find(|d| d["kind"] == "ValidatingWebhookConfiguration")
        .cloned()
        .expect("vwc");
    (
        serde_json::from_value(fix(m, "/mutate")).expect("mwc"),
        serde_json::from_value(fix(v, "/validate")).expect("vwc"),
    )
}

fn job_pod(name: &str, f: impl FnOnce(&mut Value)) -> Pod {
    let mut pod = common::fixture("plain-job.json")["request"]["object"].clone();
    pod["metadata"]["name"] = json!(name);
    pod["metadata"]["namespace"] = json!(NS);
    pod["metadata"]["labels"][LABEL] = json!("true");
    for key in ["managedFields", "creationTimestamp"] {
        if let Some(m) = pod["metadata"].as_object_mut() {
            m.remove(key);
        }
    }
    // The ServiceAccount admission plugin adds its own token volume.
    if let Some(spec) = pod["spec"].as_object_mut() {
        spec.remove("imagePullSecrets");
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
    f(&mut pod);
    serde_json::from_value(pod).expect("pod")
}

async fn create(pods: &Api<Pod>, pod: &Pod) -> Result<Pod, String> {
    pods.create(&PostParams::default(), pod)
        .await
        .map_err(|e| e.to_string())
}

async fn scenario(
    client: Client,
    ca: &str,
    addr: std::net::SocketAddr,
    policy_path: &std::path::Path,
    policy_text: &str,
) {
    let nodes: Api<Node> = Api::all(client.clone());
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace =
        serde_json::from_value(json!({"metadata": {"name": NS, "labels": {LABEL: "true"}}}))
            .expect("ns");
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .expect("namespace");
    for n in [
        node(
            "e2e-gitlab",
            json!({"workload": "gitlab", LABEL: "true"}),
            json!([{"key": "workload", "value": "gitlab", "effect": "NoSchedule"}]),
        ),
        node(
            "e2e-runner",
            json!({"workload": "gitlab-runner", LABEL: "true"}),
            json!([{"key": "workload", "value": "gitlab-runner", "effect": "NoSchedule"}]),
        ),
        node(
            "e2e-fargate",
            json!({"eks.amazonaws.com/compute-type": "fargate", LABEL: "true"}),
            json!([]),
        ),
    ] {
        nodes
            .create(&PostParams::default(), &n)
            .await
            .expect("node");
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    // Created before the webhooks exist: a job pod pinned to a GitLab node, for `audit` to find.
    create(
        &pods,
        &job_pod("runner-e2e-project-1-concurrent-9-leftover", |p| {
            p["spec"]["nodeName"] = json!("e2e-gitlab")
        }),
    )
    .await
    .expect("pre-existing pod");

    let (m, v) = webhooks(ca, addr);
    Api::<MutatingWebhookConfiguration>::all(client.clone())
        .create(&PostParams::default(), &m)
        .await
        .expect("mwc");
    Api::<ValidatingWebhookConfiguration>::all(client.clone())
        .create(&PostParams::default(), &v)
        .await
        .expect("vwc");
    tokio::time::sleep(Duration::from_secs(2)).await;

    // A plain job pod: affinity, toleration, requests and the profile annotation are injected.
    let stored = create(
        &pods,
        &job_pod("runner-e2e-project-1-concurrent-0-plain", |_| {}),
    )
    .await
    .expect("plain job pod");
    let spec = stored.spec.clone().expect("spec");
    let term = &spec
        .affinity
        .expect("affinity")
        .node_affinity
        .expect("nodeAffinity")
        .required_during_scheduling_ignored_during_execution
        .expect("required")
        .node_selector_terms[0];
    let expr = &term.match_expressions.as_ref().expect("expressions")[0];
    assert_eq!(
        (expr.key.as_str(), expr.operator.as_str()),
        ("workload", "In")
    );
    assert!(
        spec.tolerations
            .iter()
            .flatten()
            .any(|t| t.value.as_deref() == Some("gitlab-runner"))
    );
    let build = spec
        .containers
        .iter()
        .find(|c| c.name == "build")
        .expect("build");
    let requests = build
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .expect("requests");
    assert_eq!(requests.get("cpu").map(|q| q.0.as_str()), Some("500m"));
    assert_eq!(
        stored
            .annotations()
            .get("runner-fence.dev/profile")
            .map(String::as_str),
        Some("runner-nodes")
    );

    // Denials: nodeName, tolerations and selectors that reach GitLab nodes, privileged on Fargate.
    let denied = [
        (
            "nodename",
            job_pod("runner-e2e-project-1-concurrent-1-nodename", |p| {
                p["spec"]["nodeName"] = json!("e2e-gitlab")
            }),
            "node-name",
        ),
        (
            "toleration",
            job_pod("runner-e2e-project-1-concurrent-2-tol", |p| {
                p["spec"]["tolerations"] = json!([{"operator": "Exists"}])
            }),
            "protected-nodes",
        ),
        (
            "selector",
            job_pod("runner-e2e-project-1-concurrent-3-sel", |p| {
                p["spec"]["nodeSelector"] = json!({"workload": "gitlab"})
            }),
            "placement",
        ),
        (
            "fargate",
            job_pod("runner-e2e-project-1-concurrent-4-dind", |p| {
                p["metadata"]["labels"]["runner-fence.dev/profile"] = json!("fargate");
                p["spec"]["containers"][0]["securityContext"]["privileged"] = json!(true);
            }),
            "fargate-compat",
        ),
    ];
    for (what, pod, rule) in &denied {
        let err = create(&pods, pod).await.expect_err(what);
        assert!(err.contains(rule), "{what}: {err}");
    }
    // Not a job pod: untouched.
    let other: Pod = serde_json::from_value(
        json!({"metadata": {"name": "netshoot", "labels": {LABEL: "true"}},
        "spec": {"containers": [{"name": "netshoot", "image": "nicolaka/netshoot"}]}}),
    )
    .expect("pod");
    let stored = create(&pods, &other).await.expect("unrelated pod");
    assert!(stored.spec.as_ref().expect("spec").affinity.is_none());
    assert!(
        !stored
            .annotations()
            .contains_key("runner-fence.dev/profile")
    );

    // Server-side dry run: the same decision, nothing stored.
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let pod = job_pod("runner-e2e-project-1-concurrent-5-dry", |_| {});
    let out = pods.create(&dry, &pod).await.expect("dry-run create");
    assert!(out.annotations().contains_key("runner-fence.dev/profile"));
    assert!(
        pods.get_opt("runner-e2e-project-1-concurrent-5-dry")
            .await
            .expect("get")
            .is_none()
    );
    assert!(pods.create(&dry, &denied[1].1).await.is_err());

    // `runner-fence audit` sees the GitLab node and the pod pinned to it.
    let audit = runner_fence::audit::collect(
        client.clone(),
        &runner_fence::policy::parse(policy_text, "p").expect("policy"),
    )
    .await
    .expect("audit");
    assert!(audit.protected_nodes.iter().any(|n| n.name == "e2e-gitlab"));
    assert!(audit.on_protected().any(|p| p.name.ends_with("leftover")));
    assert!(audit.webhooks.len() >= 2);

    // Audit mode: everything is let through, with warnings for the client.
    std::fs::write(
        policy_path,
        policy_text.replacen("mode: enforce ", "mode: audit ", 1),
    )
    .expect("audit policy");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pod = job_pod("runner-e2e-project-1-concurrent-6-audit", |p| {
        p["spec"]["tolerations"] = json!([{"operator": "Exists"}])
    });
    let req = axum::http::Request::post(format!("/api/v1/namespaces/{NS}/pods"))
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&pod).expect("json"))
        .expect("request");
    let resp = client
        .send(req.map(Into::into))
        .await
        .expect("audit-mode create");
    assert!(resp.status().is_success(), "{:?}", resp.status());
    let warnings: Vec<String> = resp
        .headers()
        .get_all("warning")
        .iter()
        .filter_map(|v| v.to_str().ok().map(String::from))
        .collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("would deny: protected-nodes")),
        "{warnings:?}"
    );
}

async fn cleanup(client: Client) {
    let lp = ListParams::default().labels(&format!("{LABEL}=true"));
    let dp = DeleteParams::default();
    let _ = Api::<MutatingWebhookConfiguration>::all(client.clone())
        .delete_collection(&dp, &lp)
        .await;
    let _ = Api::<ValidatingWebhookConfiguration>::all(client.clone())
        .delete_collection(&dp, &lp)
        .await;
    let _ = Api::<Pod>::namespaced(client.clone(), NS)
        .delete_collection(&dp, &ListParams::default())
        .await;
    let _ = Api::<Node>::all(client.clone())
        .delete_collection(&dp, &lp)
        .await;
    let _ = Api::<Namespace>::all(client).delete(NS, &dp).await;
}
