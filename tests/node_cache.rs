//! The node cache against an HTTP-level fake of the Nodes list/watch API on 127.0.0.1.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Query, State as AxState};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use runner_fence::k8s::cache::watch_nodes;
use runner_fence::webhook::State;
use serde_json::{Value, json};
use tokio::sync::{Mutex, mpsc};

fn node(name: &str, workload: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "resourceVersion": "1", "labels": {"workload": workload}},
        "spec": {"taints": [{"key": "workload", "value": workload, "effect": "NoSchedule"}]}})
}

struct Fake {
    events: Mutex<Option<mpsc::UnboundedReceiver<String>>>,
    broken: AtomicBool,
}

async fn nodes(
    AxState(f): AxState<Arc<Fake>>,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> Response {
    if f.broken.load(Ordering::SeqCst) {
        return (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "down").into_response();
    }
    if q.get("watch").map(String::as_str) == Some("true")
        || q.get("watch").map(String::as_str) == Some("1")
    {
        let Some(rx) = f.events.lock().await.take() else {
            // Later watches: hold the connection open with nothing to say.
            tokio::time::sleep(Duration::from_secs(30)).await;
            return "".into_response();
        };
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv()
                .await
                .map(|l| (Ok::<_, std::io::Error>(l + "\n"), rx))
        });
        return Response::builder()
            .header("content-type", "application/json")
            .body(Body::from_stream(stream))
            .unwrap_or_default();
    }
    let list = json!({"apiVersion": "v1", "kind": "NodeList", "metadata": {"resourceVersion": "10"},
        "items": [node("gitlab-1", "gitlab"), node("runner-1", "gitlab-runner")]});
    axum::Json(list).into_response()
}

async fn wait_for(state: &State, what: &str, pred: impl Fn(&State) -> bool) {
    for _ in 0..200 {
        if pred(state) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn node_cache_lists_watches_and_survives_a_broken_watch() {
    let (tx, rx) = mpsc::unbounded_channel::<String>();
    let fake = Arc::new(Fake {
        events: Mutex::new(Some(rx)),
        broken: AtomicBool::new(false),
    });
    let app = Router::new()
        .route("/api/v1/nodes", get(nodes))
        .with_state(fake.clone());
    let addr = common::serve_fake(app).await;
    let config = kube::Config::new(format!("http://{addr}").parse().expect("url"));
    let client = kube::Client::try_from(config).expect("client");
    let state = Arc::new(State::new(common::reference(), true));
    assert!(
        !state.not_ready_reasons().is_empty(),
        "not ready before sync"
    );
    let (_stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(watch_nodes(client, state.clone(), stop_rx));

    wait_for(&state, "initial sync", |s| {
        s.nodes.load().as_ref().is_some_and(|n| n.len() == 2)
    })
    .await;
    assert!(state.not_ready_reasons().is_empty(), "ready after sync");
    let snap = state.nodes.load_full().expect("snapshot");
    let g = snap.get("gitlab-1").expect("gitlab-1");
    assert_eq!(g.labels.get("workload").map(String::as_str), Some("gitlab"));
    assert_eq!(g.taints[0].value.as_deref(), Some("gitlab"));

    // Watch events: a node joins, another leaves.
    tx.send(json!({"type": "ADDED", "object": node("gitlab-2", "gitlab")}).to_string())
        .expect("send");
    tx.send(json!({"type": "DELETED", "object": node("runner-1", "gitlab-runner")}).to_string())
        .expect("send");
    wait_for(&state, "watch events", |s| {
        s.nodes
            .load()
            .as_ref()
            .is_some_and(|n| n.get("gitlab-2").is_some() && n.get("runner-1").is_none())
    })
    .await;
    // The engine sees the new node: a nodeName on it is a protected-nodes denial.
    let policy = common::reference();
    let pod = json!({"metadata": {"name": "runner-x", "namespace": "gitlab-runner"},
        "spec": {"nodeName": "gitlab-2", "containers": [{"name": "build", "image": "a"}]}});
    let body = serde_json::to_vec(&common::review_of(pod, "CREATE")).expect("json");
    let snap = state.nodes.load_full();
    let d = runner_fence::webhook::admission::handle(
        &policy,
        runner_fence::core::engine::Endpoint::Validate,
        &body,
        snap.as_deref(),
    )
    .expect("review")
    .decision;
    assert!(
        d.message()
            .unwrap_or_default()
            .contains("names protected GitLab node gitlab-2"),
        "{:?}",
        d.message()
    );

    // The API goes away: the cache keeps its last state and says the watch is down.
    fake.broken.store(true, Ordering::SeqCst);
    drop(tx);
    wait_for(&state, "watch down", |s| {
        s.metrics
            .encode()
            .contains("runner_fence_node_cache_watch_up 0")
    })
    .await;
    let snap = state.nodes.load_full().expect("snapshot kept");
    assert_eq!(snap.len(), 2);
    assert!(snap.get("gitlab-2").is_some());
    assert!(
        state.not_ready_reasons().is_empty(),
        "a lost watch does not make the webhook unready"
    );
}

#[tokio::test]
async fn the_node_cache_reaches_the_cluster_of_its_kubeconfig_and_context() {
    let (_tx, rx) = mpsc::unbounded_channel::<String>();
    let fake = Arc::new(Fake {
        events: Mutex::new(Some(rx)),
        broken: AtomicBool::new(false),
    });
    let app = Router::new()
        .route("/api/v1/nodes", get(nodes))
        .with_state(fake);
    let addr = common::serve_fake(app).await;
    // The current context points nowhere (port 1 on loopback refuses); only
    // `--context fake` reaches the nodes.
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: wrong\nclusters:\n- name: wrong\n  cluster: {{server: 'http://127.0.0.1:1'}}\n- name: fake\n  cluster: {{server: 'http://{addr}'}}\nusers:\n- name: u\n  user: {{}}\ncontexts:\n- name: wrong\n  context: {{cluster: wrong, user: u}}\n- name: fake\n  context: {{cluster: fake, user: u}}\n"
        ),
    )
    .expect("write kubeconfig");
    let access = runner_fence::k8s::Access {
        kubeconfig: Some(kubeconfig),
        context: Some("fake".into()),
    };
    let state = Arc::new(State::new(common::reference(), true));
    let (_stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(runner_fence::k8s::cache::run(
        access,
        state.clone(),
        stop_rx,
    ));
    wait_for(&state, "sync through the kubeconfig's context", |s| {
        s.nodes.load().as_ref().is_some_and(|n| n.len() == 2)
    })
    .await;
}

// ---- without the node cache: the node a request names is read on demand ----

async fn one_node(axum::extract::Path(name): axum::extract::Path<String>) -> Response {
    match name.as_str() {
        "gitlab-1" => axum::Json(node("gitlab-1", "gitlab")).into_response(),
        "runner-1" => axum::Json(node("runner-1", "gitlab-runner")).into_response(),
        "broken-1" => (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "down").into_response(),
        _ => (
            axum::http::StatusCode::NOT_FOUND,
            axum::Json(json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                "message": format!("nodes \"{name}\" not found"), "reason": "NotFound", "code": 404})),
        )
            .into_response(),
    }
}

fn binding_review(node: &str) -> Value {
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "b1", "kind": {"group": "", "version": "v1", "kind": "Binding"},
        "resource": {"group": "", "version": "v1", "resource": "pods"}, "subResource": "binding",
        "name": "p1", "namespace": "gitlab-runner", "operation": "CREATE",
        "object": {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "p1"},
            "target": {"kind": "Node", "name": node}}}})
}

fn ephemeral_review(node: &str) -> Value {
    let pod = json!({"metadata": {"name": "p1", "namespace": "gitlab-runner"},
        "spec": {"nodeName": node, "containers": [{"name": "build", "image": "a"}],
            "ephemeralContainers": [{"name": "debug", "image": "busybox"}]}});
    let mut r = common::review_of(pod.clone(), "UPDATE");
    r["request"]["subResource"] = json!("ephemeralcontainers");
    r["request"]["oldObject"] = pod;
    r
}

async fn validate_through_router(state: Arc<State>, review: &Value) -> Value {
    use tower::ServiceExt;
    let req = axum::http::Request::post("/validate")
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(review).expect("json")))
        .expect("request");
    let resp = runner_fence::webhook::routes::admission_router(state)
        .oneshot(req)
        .await
        .expect("answered");
    assert_eq!(resp.status(), axum::http::StatusCode::OK);
    let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .expect("body");
    serde_json::from_slice(&body).expect("AdmissionReview")
}

#[rstest::rstest]
#[case::binding_to_a_gitlab_node(
    binding_review("gitlab-1"),
    Some("binds the job pod to protected GitLab node gitlab-1 (its labels match protectedNodes)"),
    "found"
)]
#[case::binding_to_a_runner_node(binding_review("runner-1"), None, "found")]
#[case::binding_to_a_node_that_does_not_exist(
    binding_review("ip-10-0-3-77"),
    Some("runner-fence does not know this node"),
    "not-found"
)]
#[case::binding_when_the_api_fails(
    binding_review("broken-1"),
    Some("runner-fence does not know this node"),
    "error"
)]
#[case::ephemeral_on_a_gitlab_node(
    ephemeral_review("gitlab-1"),
    Some(
        "protected-nodes: spec.ephemeralContainers adds a container to a pod on protected GitLab node gitlab-1"
    ),
    "found"
)]
#[case::ephemeral_on_a_runner_node(ephemeral_review("runner-1"), None, "found")]
#[tokio::test]
async fn without_the_node_cache_named_nodes_are_read(
    #[case] review: Value,
    #[case] denial: Option<&str>,
    #[case] lookup: &str,
) {
    let app = Router::new()
        .route("/api/v1/nodes/{name}", get(one_node))
        .with_state(());
    let addr = common::serve_fake(app).await;
    let config = kube::Config::new(format!("http://{addr}").parse().expect("url"));
    let state = Arc::new(State::new(common::reference(), false));
    state.set_node_reader(Some(runner_fence::k8s::nodes::NodeReader::new(
        kube::Client::try_from(config).expect("client"),
    )));
    let out = validate_through_router(state.clone(), &review).await;
    let response = &out["response"];
    match denial {
        None => assert_eq!(response["allowed"], true, "{response}"),
        Some(text) => {
            assert_eq!(response["allowed"], false, "{response}");
            let msg = response["status"]["message"].as_str().unwrap_or("");
            assert!(msg.contains(text), "{msg}");
        }
    }
    let metrics = state.metrics.encode();
    assert!(
        metrics.contains(&format!(
            "runner_fence_node_lookups_total{{result=\"{lookup}\"}} 1"
        )),
        "{metrics}"
    );
}

#[tokio::test]
async fn without_the_node_cache_or_a_client_bindings_fail_closed() {
    let state = Arc::new(State::new(common::reference(), false));
    state.set_node_reader(None);
    for review in [binding_review("runner-1"), ephemeral_review("runner-1")] {
        let out = validate_through_router(state.clone(), &review).await;
        assert_eq!(out["response"]["allowed"], false, "{out}");
    }
    // A plain pod CREATE names no node: nothing is read, nothing denied for it.
    let pod = common::fixture("plain-job.json");
    let out = validate_through_router(state.clone(), &pod).await;
    assert_eq!(
        out["response"]["allowed"], false,
        "unmutated pod: placement"
    );
    let metrics = state.metrics.encode();
    assert!(
        metrics.contains("runner_fence_node_lookups_total{result=\"no-client\"} 2"),
        "{metrics}"
    );
}
