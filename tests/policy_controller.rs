//! The policy controller's watch against an HTTP-level fake of the
//! RunnerFencePolicy list/watch API on 127.0.0.1: what every replica serves
//! while policies are created, broken, and deleted.

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Query, State as AxState};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use runner_fence::core::engine::Endpoint;
use runner_fence::k8s::controller::{Snapshot, watch_policies};
use runner_fence::webhook::State;
use serde_json::{Value, json};
use tokio::sync::{Mutex, mpsc, watch};

/// The reference policy's spec for `namespaces`, as stored.
fn spec(namespaces: &[&str]) -> Value {
    let object: Value =
        serde_saphyr::from_str(include_str!("../examples/runnerfencepolicy.yaml")).expect("yaml");
    let mut spec = object["spec"].clone();
    spec["match"]["namespaces"] = json!(namespaces);
    spec["fargate"]["selectors"] = json!([]);
    spec
}

fn object(name: &str, created: &str, generation: i64, spec: Value, status: Value) -> Value {
    json!({"apiVersion": "runner-fence.dev/v1alpha1", "kind": "RunnerFencePolicy",
        "metadata": {"name": name, "resourceVersion": "1", "generation": generation,
                     "creationTimestamp": created},
        "spec": spec, "status": status})
}

struct Fake {
    events: Mutex<Option<mpsc::UnboundedReceiver<String>>>,
    items: Vec<Value>,
}

async fn policies(
    AxState(f): AxState<Arc<Fake>>,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> Response {
    if matches!(q.get("watch").map(String::as_str), Some("true" | "1")) {
        let Some(rx) = f.events.lock().await.take() else {
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
    axum::Json(
        json!({"apiVersion": "runner-fence.dev/v1alpha1", "kind": "RunnerFencePolicyList",
        "metadata": {"resourceVersion": "10"}, "items": f.items}),
    )
    .into_response()
}

/// Who reviews a pod in `namespace` now: the policy's name, or None (skipped).
fn reviewer(state: &State, namespace: &str) -> Option<String> {
    state
        .policies
        .load()
        .covering(namespace)
        .map(|p| p.metadata.name.clone())
}

async fn wait_for(what: &str, pred: impl Fn() -> bool) {
    for _ in 0..200 {
        if pred() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn replicas_serve_ready_policies_and_keep_the_last_good_one() {
    let (tx, rx) = mpsc::unbounded_channel::<String>();
    // team-a is valid; team-b's spec is broken but its last valid one is in its status;
    // late claims team-a's namespace.
    let broken = json!({"match": {"namespaces": ["team-b"]}});
    let items = vec![
        object(
            "team-a",
            "2026-01-01T00:00:00Z",
            1,
            spec(&["team-a", "ci-a-*"]),
            json!({}),
        ),
        object(
            "team-b",
            "2026-01-02T00:00:00Z",
            2,
            broken,
            json!({"enforcedGeneration": 1, "enforcedSpec": spec(&["team-b"])}),
        ),
        object(
            "late",
            "2026-01-03T00:00:00Z",
            1,
            spec(&["ci-a-7"]),
            json!({}),
        ),
    ];
    let fake = Arc::new(Fake {
        events: Mutex::new(Some(rx)),
        items,
    });
    let app = Router::new()
        .route(
            "/apis/runner-fence.dev/v1alpha1/runnerfencepolicies",
            get(policies),
        )
        .with_state(fake);
    let addr = common::serve_fake(app).await;
    let config = kube::Config::new(format!("http://{addr}").parse().expect("url"));
    let client = kube::Client::try_from(config).expect("client");
    let state = Arc::new(State::from_cluster(false));
    assert!(
        state
            .not_ready_reasons()
            .iter()
            .any(|r| r.contains("policies")),
        "not ready before the policies are read"
    );
    let (snap_tx, snap_rx) = watch::channel::<Option<Arc<Snapshot>>>(None);
    let (_stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(watch_policies(
        kube::Api::all(client),
        state.clone(),
        "runner-fence".into(),
        snap_tx,
        stop_rx,
    ));

    wait_for("initial list", || state.not_ready_reasons().is_empty()).await;
    assert_eq!(
        reviewer(&state, "ci-a-7").as_deref(),
        Some("team-a"),
        "the older policy reviews it"
    );
    assert_eq!(
        reviewer(&state, "team-b").as_deref(),
        Some("team-b"),
        "last good spec serves"
    );
    assert_eq!(reviewer(&state, "default"), None);
    let snap = snap_rx.borrow().clone().expect("snapshot");
    let verdict = |name: &str| {
        snap.verdicts
            .iter()
            .find(|v| v.name == name)
            .expect("verdict")
            .clone()
    };
    assert_eq!(verdict("team-a").state.as_str(), "Ready");
    let b = verdict("team-b");
    assert_eq!(b.state.as_str(), "Invalid");
    assert!(
        b.message.contains("still enforcing generation 1"),
        "{}",
        b.message
    );
    assert!(
        b.message.starts_with("spec.protectedNodes") || b.message.contains("missing field"),
        "{}",
        b.message
    );
    let late = verdict("late");
    assert_eq!(late.state.as_str(), "Conflict");
    assert!(
        late.message.contains("RunnerFencePolicy team-a"),
        "{}",
        late.message
    );
    let metrics = state.metrics.encode();
    assert!(
        metrics.contains("runner_fence_policies{state=\"Conflict\"} 1"),
        "{metrics}"
    );

    // The engine behind the set: a GitLab selector in team-b is still denied.
    let pod = json!({"metadata": {"name": "runner-x", "namespace": "team-b"},
        "spec": {"nodeSelector": {"workload": "gitlab"}, "containers": [{"name": "build", "image": "a"}]}});
    let mut review = common::review_of(pod, "CREATE");
    review["request"]["namespace"] = "team-b".into();
    let body = serde_json::to_vec(&review).expect("json");
    let out = runner_fence::webhook::admission::handle_set(
        &state.policies.load(),
        Endpoint::Validate,
        &body,
        None,
    )
    .expect("review");
    assert!(
        !out.response.response.allowed,
        "{:?}",
        out.response.response.status
    );

    // team-a is edited into something invalid; its status holds no valid spec
    // (this fake's leader never wrote one), so it serves nothing, and the later
    // claim on ci-a-7 becomes Ready and reviews it.
    let mut edited = object(
        "team-a",
        "2026-01-01T00:00:00Z",
        2,
        json!({"mode": "block"}),
        json!({}),
    );
    edited["metadata"]["resourceVersion"] = "11".into();
    tx.send(json!({"type": "MODIFIED", "object": edited}).to_string())
        .expect("send");
    wait_for("edit judged", || {
        reviewer(&state, "ci-a-7").as_deref() == Some("late")
    })
    .await;
    assert_eq!(reviewer(&state, "team-a"), None);

    // team-b is deleted (its finalizer gone): it is no longer served.
    let gone = object("team-b", "2026-01-02T00:00:00Z", 2, json!({}), json!({}));
    tx.send(json!({"type": "DELETED", "object": gone}).to_string())
        .expect("send");
    wait_for("deletion", || reviewer(&state, "team-b").is_none()).await;
}
