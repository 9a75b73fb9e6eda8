//! The continuous audit (`serve --audit-interval-seconds`) against an
//! HTTP-level fake of the Kubernetes API on 127.0.0.1: passes write
//! PolicyReports in place, remove those of deleted pods, report what cannot
//! be evaluated, read in paced pages, and only while the replica leads.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Query, State as AxState};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use runner_fence::core::fleet::PolicySet;
use runner_fence::k8s::audit::continuous::{self, Config};
use runner_fence::k8s::audit::{CONTENT_HASH, Options, POLICY_LABEL};
use runner_fence::k8s::controller::PolicySink;
use runner_fence::webhook::State;
use serde_json::{Value, json};
use tokio::sync::watch;

/// What the fake serves and saw.
#[derive(Default)]
struct Fake {
    pods: Mutex<Vec<Value>>,
    /// PolicyReports by (namespace, name).
    reports: Mutex<BTreeMap<(String, String), Value>>,
    /// Every request, as `METHOD /path?query`.
    requests: Mutex<Vec<String>>,
    /// The controller's Lease, as stored.
    lease: Mutex<Option<Value>>,
    /// RunnerFencePolicy objects.
    policies: Mutex<Vec<Value>>,
    /// Per list of PolicyReports: whether it asked for metadata only.
    report_lists: Mutex<Vec<bool>>,
}

impl Fake {
    fn requests(&self) -> Vec<String> {
        self.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }
    fn reports(&self) -> BTreeMap<(String, String), Value> {
        self.reports.lock().map(|r| r.clone()).unwrap_or_default()
    }
    fn report_lists(&self) -> Vec<bool> {
        self.report_lists
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default()
    }
    fn edit_pod(&self, name: &str, edit: impl Fn(&mut Value)) {
        if let Ok(mut p) = self.pods.lock() {
            p.iter_mut()
                .filter(|p| p["metadata"]["name"] == name)
                .for_each(edit);
        }
    }
    fn delete_pod(&self, name: &str) {
        if let Ok(mut p) = self.pods.lock() {
            p.retain(|p| p["metadata"]["name"] != name);
        }
    }
}

fn list(kind: &str, items: Vec<Value>, cont: &str) -> Response {
    axum::Json(json!({"apiVersion": "v1", "kind": kind,
        "metadata": {"resourceVersion": "7", "continue": cont}, "items": items}))
    .into_response()
}

fn not_found() -> Response {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": "not found", "reason": "NotFound", "code": 404});
    (StatusCode::NOT_FOUND, axum::Json(body)).into_response()
}

async fn record(
    AxState(f): AxState<Arc<Fake>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if let Ok(mut r) = f.requests.lock() {
        r.push(format!(
            "{} {}?{}",
            req.method(),
            req.uri().path(),
            req.uri().query().unwrap_or("")
        ));
    }
    next.run(req).await
}

fn node(name: &str, workload: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": {"workload": workload}},
        "spec": {"taints": [{"key": "workload", "value": workload, "effect": "NoSchedule"}]}})
}

/// Pods in pages of `limit`, the continue token being the offset.
async fn list_pods(
    AxState(f): AxState<Arc<Fake>>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    let all = f.pods.lock().map(|p| p.clone()).unwrap_or_default();
    let from: usize = q.get("continue").and_then(|c| c.parse().ok()).unwrap_or(0);
    let limit: usize = q
        .get("limit")
        .and_then(|c| c.parse().ok())
        .unwrap_or(usize::MAX);
    let page: Vec<Value> = all.iter().skip(from).take(limit).cloned().collect();
    let next = from.saturating_add(limit);
    let cont = if next < all.len() {
        next.to_string()
    } else {
        String::new()
    };
    list("PodList", page, &cont)
}

/// PolicyReports in pages of `limit`, as PartialObjectMetadata when the
/// client asks for it (as the apiserver does), else whole.
async fn reports_list(
    AxState(f): AxState<Arc<Fake>>,
    headers: axum::http::HeaderMap,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    let metadata_only = headers
        .get("accept")
        .and_then(|a| a.to_str().ok())
        .is_some_and(|a| a.contains("as=PartialObjectMetadataList"));
    if let Ok(mut l) = f.report_lists.lock() {
        l.push(metadata_only);
    }
    let all: Vec<Value> = f.reports().into_values().collect();
    let from: usize = q.get("continue").and_then(|c| c.parse().ok()).unwrap_or(0);
    let limit: usize = q
        .get("limit")
        .and_then(|c| c.parse().ok())
        .unwrap_or(usize::MAX);
    let page = all.iter().skip(from).take(limit).map(|r| {
        if metadata_only {
            json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": r["metadata"]})
        } else {
            r.clone()
        }
    });
    let next = from.saturating_add(limit);
    let cont = if next < all.len() {
        next.to_string()
    } else {
        String::new()
    };
    let kind = if metadata_only {
        "PartialObjectMetadataList"
    } else {
        "PolicyReportList"
    };
    list(kind, page.collect(), &cont)
}

async fn report(
    AxState(f): AxState<Arc<Fake>>,
    method: Method,
    Path((ns, name)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Response {
    let Ok(mut store) = f.reports.lock() else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    if method == Method::DELETE {
        return match store.remove(&(ns, name)) {
            Some(_) => {
                axum::Json(json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}))
                    .into_response()
            }
            None => not_found(),
        };
    }
    match serde_json::from_slice::<Value>(&body) {
        Ok(obj) => {
            store.insert((ns, name), obj.clone());
            axum::Json(obj).into_response()
        }
        Err(_) => StatusCode::BAD_REQUEST.into_response(),
    }
}

/// `GET`, `PUT` (replace) and `POST` (create) of the one Lease.
async fn lease(
    AxState(f): AxState<Arc<Fake>>,
    method: Method,
    body: axum::body::Bytes,
) -> Response {
    let Ok(mut stored) = f.lease.lock() else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    if method == Method::GET {
        return match stored.clone() {
            Some(l) => axum::Json(l).into_response(),
            None => not_found(),
        };
    }
    match serde_json::from_slice::<Value>(&body) {
        Ok(mut l) => {
            l["metadata"]["resourceVersion"] = json!("1");
            *stored = Some(l.clone());
            axum::Json(l).into_response()
        }
        Err(_) => StatusCode::BAD_REQUEST.into_response(),
    }
}

/// RunnerFencePolicy list; a watch that never sends anything.
async fn policies(
    AxState(f): AxState<Arc<Fake>>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    if matches!(q.get("watch").map(String::as_str), Some("true" | "1")) {
        tokio::time::sleep(Duration::from_secs(30)).await;
        return "".into_response();
    }
    let items = f.policies.lock().map(|p| p.clone()).unwrap_or_default();
    list("RunnerFencePolicyList", items, "")
}

/// Sets the Lease's holder, renewed now.
fn hold_lease(fake: &Fake, holder: &str) {
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    if let Ok(mut l) = fake.lease.lock() {
        *l = Some(
            json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "runner-fence-controller", "namespace": "runner-fence", "resourceVersion": "1"},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15, "renewTime": now, "acquireTime": now}}),
        );
    }
}

async fn serve(pods: Vec<Value>) -> (kube::Client, Arc<Fake>) {
    let fake = Arc::new(Fake {
        pods: Mutex::new(pods),
        ..Fake::default()
    });
    let empty = |kind: &'static str| get(move || async move { list(kind, vec![], "") });
    let app = Router::new()
        .route(
            "/api/v1/nodes",
            get(|| async {
                list(
                    "NodeList",
                    vec![
                        node("gitlab-1", "gitlab"),
                        node("runner-1", "gitlab-runner"),
                    ],
                    "",
                )
            }),
        )
        .route("/api/v1/pods", get(list_pods))
        .route(
            "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations",
            empty("MutatingWebhookConfigurationList"),
        )
        .route(
            "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations",
            empty("ValidatingWebhookConfigurationList"),
        )
        .route("/api/v1/serviceaccounts", empty("ServiceAccountList"))
        .route(
            "/apis/rbac.authorization.k8s.io/v1/roles",
            empty("RoleList"),
        )
        .route(
            "/apis/rbac.authorization.k8s.io/v1/clusterroles",
            empty("ClusterRoleList"),
        )
        .route(
            "/apis/rbac.authorization.k8s.io/v1/rolebindings",
            empty("RoleBindingList"),
        )
        .route(
            "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
            empty("ClusterRoleBindingList"),
        )
        .route(
            "/apis/wgpolicyk8s.io/v1alpha2/policyreports",
            get(reports_list),
        )
        .route(
            "/apis/wgpolicyk8s.io/v1alpha2/namespaces/{ns}/policyreports/{name}",
            axum::routing::patch(report).delete(report),
        )
        .route(
            "/apis/coordination.k8s.io/v1/namespaces/runner-fence/leases",
            axum::routing::post(lease),
        )
        .route(
            "/apis/coordination.k8s.io/v1/namespaces/runner-fence/leases/runner-fence-controller",
            get(lease).put(lease),
        )
        .route(
            "/apis/runner-fence.dev/v1alpha1/runnerfencepolicies",
            get(policies),
        )
        .fallback(|| async { not_found() })
        .layer(axum::middleware::from_fn_with_state(fake.clone(), record))
        .with_state(fake.clone());
    let addr = common::serve_fake(app).await;
    let client = kube::Client::try_from(kube::Config::new(
        format!("http://{addr}").parse().expect("url"),
    ))
    .expect("client");
    (client, fake)
}

/// A job pod in `namespace`, bound to `node`.
fn job(namespace: &str, name: &str, node: &str) -> Value {
    let mut pod = common::fixture("plain-job.json")["request"]["object"].clone();
    pod["metadata"]["namespace"] = json!(namespace);
    pod["metadata"]["name"] = json!(name);
    pod["metadata"]["uid"] = json!(format!("uid-{name}"));
    pod["spec"]["nodeName"] = json!(node);
    pod
}

fn config(page_size: u32, pause_ms: u64) -> Config {
    Config {
        interval: Duration::from_secs(1),
        options: Options {
            page_size,
            page_pause: Duration::from_millis(pause_ms),
            ..Options::default()
        },
        write_reports: true,
        release: None,
    }
}

/// The loop on its own task, as `serve` runs it; its stop sender.
fn start(
    client: kube::Client,
    cfg: Config,
    state: &Arc<State>,
) -> (watch::Sender<bool>, tokio::task::JoinHandle<()>) {
    let (stop_tx, stop_rx) = watch::channel(false);
    let task = tokio::spawn(continuous::run(
        client,
        cfg,
        state.clone(),
        state.leadership(),
        stop_rx,
    ));
    (stop_tx, task)
}

fn metric(state: &State, line: &str) -> Option<f64> {
    state
        .metrics
        .encode()
        .lines()
        .find(|l| l.starts_with(line))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// Waits until the audit's run counters reach `passes`.
async fn passes(state: &State, n: f64) {
    for _ in 0..200 {
        let done = ["clean", "findings"]
            .iter()
            .filter_map(|r| {
                metric(
                    state,
                    &format!("runner_fence_audit_runs_total{{result=\"{r}\"}}"),
                )
            })
            .sum::<f64>();
        if done >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "{n} audit passes never finished:\n{}",
        state.metrics.encode()
    );
}

/// The reports whose scope is the pod `name`, with their results' rules and outcomes.
fn results_of(fake: &Fake, name: &str) -> Vec<(String, String)> {
    fake.reports()
        .values()
        .filter(|r| r["scope"]["name"] == name)
        .flat_map(|r| {
            r["results"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(|x| {
                    (
                        x["rule"].as_str().unwrap_or("").to_string(),
                        x["result"].as_str().unwrap_or("").to_string(),
                    )
                })
        })
        .collect()
}

#[tokio::test]
async fn passes_write_reports_in_place_and_remove_a_deleted_pods() {
    let pods = vec![
        job("gitlab-runner", "runner-a", "runner-1"),
        job("gitlab-runner", "runner-b", "gitlab-1"),
        job("gitlab-runner", "runner-c", "runner-1"),
    ];
    let (client, fake) = serve(pods).await;
    let state = Arc::new(State::new(common::reference(), false));
    // Pages of one pod and 150 ms between pages: three pages of pods.
    let (stop, task) = start(client, config(1, 150), &state);
    passes(&state, 1.0).await;
    let reports = fake.reports();
    assert_eq!(reports.len(), 3, "one report per pod: {:?}", reports.keys());
    for r in reports.values() {
        assert_eq!(r["metadata"]["labels"][POLICY_LABEL], "gitlab-runner-jobs");
        assert_eq!(r["metadata"]["ownerReferences"][0]["kind"], "Pod");
    }
    assert!(
        results_of(&fake, "runner-b").contains(&("protected-nodes".into(), "fail".into())),
        "{:?}",
        results_of(&fake, "runner-b")
    );
    assert!(
        results_of(&fake, "runner-a")
            .iter()
            .all(|(_, outcome)| outcome == "pass"),
        "{:?}",
        results_of(&fake, "runner-a")
    );
    let pod_pages: Vec<String> = fake
        .requests()
        .into_iter()
        .filter(|r| r.starts_with("GET /api/v1/pods?"))
        .collect();
    assert!(
        pod_pages.len() >= 3 && pod_pages.iter().all(|r| r.contains("limit=1")),
        "{pod_pages:?}"
    );
    assert_eq!(
        metric(&state, "runner_fence_audit_pods_checked "),
        Some(3.0)
    );
    assert_eq!(
        metric(
            &state,
            "runner_fence_audit_findings{rule=\"protected-nodes\"}"
        ),
        Some(1.0)
    );
    let took = metric(&state, "runner_fence_audit_duration_seconds ").expect("duration");
    assert!(
        took >= 0.3,
        "two pauses of 150 ms between three pages: {took}"
    );
    assert!(
        metric(&state, "runner_fence_audit_last_run_timestamp_seconds ").unwrap_or(0.0) > 1.0e9
    );

    // Unchanged pods: the next pass writes nothing; a deleted pod's report goes.
    let writes = |fake: &Fake| {
        fake.requests()
            .iter()
            .filter(|r| r.starts_with("PATCH "))
            .count()
    };
    let written = writes(&fake);
    fake.delete_pod("runner-b");
    passes(&state, 2.0).await;
    assert!(
        results_of(&fake, "runner-b").is_empty(),
        "{:?}",
        fake.reports().keys()
    );
    assert_eq!(fake.reports().len(), 2);
    assert_eq!(
        writes(&fake),
        written,
        "unchanged reports are not written again"
    );
    assert_eq!(
        metric(&state, "runner_fence_audit_pods_checked "),
        Some(2.0)
    );
    assert_eq!(
        metric(
            &state,
            "runner_fence_audit_findings{rule=\"protected-nodes\"}"
        ),
        Some(0.0)
    );
    let _ = stop.send(true);
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the loop ends on stop")
        .expect("no panic");
}

#[tokio::test]
async fn a_pod_that_cannot_be_evaluated_is_an_unreadable_finding() {
    let mut broken = job("gitlab-runner", "runner-broken", "gitlab-1");
    broken["spec"]["tolerations"] = json!("not a list");
    let (client, fake) = serve(vec![job("gitlab-runner", "runner-a", "runner-1"), broken]).await;
    let state = Arc::new(State::new(common::reference(), false));
    let (stop, _task) = start(client, config(500, 0), &state);
    passes(&state, 1.0).await;
    let results = results_of(&fake, "runner-broken");
    assert_eq!(
        results,
        vec![("unreadable".to_string(), "error".to_string())]
    );
    let report = fake
        .reports()
        .into_values()
        .find(|r| r["scope"]["name"] == "runner-broken")
        .expect("report");
    let message = report["results"][0]["message"].as_str().unwrap_or("");
    assert!(
        message.contains("spec.tolerations") && message.contains("RUNS ON PROTECTED NODE gitlab-1"),
        "{message}"
    );
    assert_eq!(
        metric(&state, "runner_fence_audit_findings{rule=\"unreadable\"}"),
        Some(1.0)
    );
    assert_eq!(
        metric(&state, "runner_fence_audit_pods_checked "),
        Some(2.0)
    );
    assert!(
        metric(&state, "runner_fence_audit_runs_total{result=\"findings\"}").unwrap_or(0.0) >= 1.0
    );
    let _ = stop.send(true);
}

#[tokio::test]
async fn only_the_leader_audits_and_losing_the_lease_stops_it() {
    let (client, fake) = serve(vec![
        job("gitlab-runner", "runner-a", "runner-1"),
        job("gitlab-runner", "runner-b", "runner-1"),
    ])
    .await;
    // Cluster mode: no policies until the controller publishes them, no Lease.
    let state = Arc::new(State::from_cluster(false));
    let (stop, _task) = start(client, config(500, 0), &state);
    tokio::time::sleep(Duration::from_millis(300)).await;
    state.publish(PolicySet::single(common::reference()));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        fake.requests().is_empty(),
        "a follower read {:?}",
        fake.requests()
    );
    assert!(fake.reports().is_empty());

    state.leader(true);
    passes(&state, 1.0).await;
    assert_eq!(fake.reports().len(), 2);

    state.leader(false);
    // Let a pass under way see the loss, then nothing more is read or written.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let seen = fake.requests().len();
    fake.delete_pod("runner-b");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        fake.requests().len(),
        seen,
        "{:?}",
        &fake.requests()[seen..]
    );
    assert_eq!(
        fake.reports().len(),
        2,
        "the follower removed nothing: the next leader does"
    );
    let _ = stop.send(true);
}

/// The reference policy and a second one, `team-b`, for namespace team-b,
/// served (in that order) to a leader's audit of `pods`, after one pass.
async fn two_policies_audit(pods: Vec<Value>) -> (Arc<Fake>, Arc<State>, watch::Sender<bool>) {
    let b = runner_fence::core::policy::parse(
        &runner_fence::core::policy::EMBEDDED_POLICY
            .replacen("name: gitlab-runner-jobs", "name: team-b", 1)
            .replacen("namespaces: [gitlab-runner]", "namespaces: [team-b]", 1),
        "team-b.yaml",
    )
    .expect("team-b");
    assert!(b.matching.covers("team-b") && !b.matching.covers("gitlab-runner"));
    let (client, fake) = serve(pods).await;
    let state = Arc::new(State::from_cluster(false));
    state.publish(PolicySet::new(vec![
        Arc::new(common::reference()),
        Arc::new(b),
    ]));
    state.leader(true);
    let (stop, _task) = start(client, config(500, 0), &state);
    passes(&state, 1.0).await;
    (fake, state, stop)
}

#[tokio::test]
async fn each_policy_of_the_served_set_reports_its_own_namespaces() {
    // GitLab Runner's job labels: outside a policy's namespaces, its pods
    // would be "outside the fence" but for the other policy covering them.
    let pods = vec![
        job("gitlab-runner", "runner-a", "runner-1"),
        job("team-b", "runner-b", "runner-1"),
    ];
    assert!(pods[1]["metadata"]["labels"]["job.runner.gitlab.com/pod"].is_string());
    let (fake, state, stop) = two_policies_audit(pods).await;
    let reports = fake.reports();
    assert_eq!(reports.len(), 2, "{:?}", reports.keys());
    let policy_of = |pod: &str| {
        reports
            .values()
            .find(|r| r["scope"]["name"] == pod)
            .map(|r| r["metadata"]["labels"][POLICY_LABEL].clone())
    };
    assert_eq!(policy_of("runner-a"), Some(json!("gitlab-runner-jobs")));
    assert_eq!(policy_of("runner-b"), Some(json!("team-b")));
    assert!(
        !results_of(&fake, "runner-b")
            .iter()
            .any(|(rule, _)| rule == "job-pod-outside-fence"),
        "{:?}",
        results_of(&fake, "runner-b")
    );
    assert_eq!(
        metric(
            &state,
            "runner_fence_audit_findings{rule=\"job-pod-outside-fence\"}"
        ),
        Some(0.0)
    );
    assert_eq!(
        metric(&state, "runner_fence_audit_pods_checked "),
        Some(2.0)
    );
    let _ = stop.send(true);
}

#[tokio::test]
async fn a_job_pod_outside_every_policy_is_reported_once() {
    let pods = vec![
        job("gitlab-runner", "runner-a", "runner-1"),
        job("team-b", "runner-b", "runner-1"),
        job("elsewhere", "runner-x", "runner-1"),
    ];
    let (fake, state, stop) = two_policies_audit(pods).await;
    let outside: Vec<_> = results_of(&fake, "runner-x")
        .into_iter()
        .filter(|(rule, _)| rule == "job-pod-outside-fence")
        .collect();
    assert_eq!(
        outside,
        vec![("job-pod-outside-fence".to_string(), "fail".to_string())],
        "one result, not one per policy: {:?}",
        fake.reports().keys()
    );
    let owner: Vec<_> = fake
        .reports()
        .values()
        .filter(|r| r["scope"]["name"] == "runner-x")
        .map(|r| r["metadata"]["labels"][POLICY_LABEL].clone())
        .collect();
    assert_eq!(
        owner,
        vec![json!("gitlab-runner-jobs")],
        "the first policy's"
    );
    assert_eq!(
        metric(
            &state,
            "runner_fence_audit_findings{rule=\"job-pod-outside-fence\"}"
        ),
        Some(1.0)
    );
    let _ = stop.send(true);
}

/// The reference policy as a stored RunnerFencePolicy object.
fn policy_object() -> Value {
    let mut object: Value =
        serde_saphyr::from_str(include_str!("../examples/runnerfencepolicy.yaml")).expect("yaml");
    object["metadata"]["resourceVersion"] = json!("1");
    object["metadata"]["generation"] = json!(1);
    object["metadata"]["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
    object
}

/// `serve --policies-from-cluster` as the server wires it: the controller
/// (watch and Lease) publishes into the state, the audit follows its leadership.
#[tokio::test]
async fn in_cluster_mode_the_audit_follows_the_controllers_lease() {
    let (client, fake) = serve(vec![job("gitlab-runner", "runner-a", "runner-1")]).await;
    if let Ok(mut p) = fake.policies.lock() {
        p.push(policy_object());
    }
    hold_lease(&fake, "other-replica");
    let args = runner_fence::webhook::ClusterArgs {
        no_webhooks: true,
        lease_seconds: 1,
        pod_name: Some("this-replica".into()),
        ..runner_fence::webhook::ClusterArgs::default()
    };
    let state = Arc::new(State::from_cluster(false));
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(runner_fence::k8s::controller::run_with(
        client.clone(),
        state.clone(),
        args.config(),
        None,
        stop_rx.clone(),
    ));
    tokio::spawn(continuous::run(
        client,
        config(500, 0),
        state.clone(),
        state.leadership(),
        stop_rx,
    ));
    let pod_reads = |fake: &Fake| {
        fake.requests()
            .iter()
            .filter(|r| r.starts_with("GET /api/v1/pods?"))
            .count()
    };
    // Another replica holds the Lease: the policies are served, nothing is audited.
    for _ in 0..100 {
        if state.not_ready_reasons().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        state.not_ready_reasons().is_empty(),
        "{:?}",
        state.not_ready_reasons()
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(pod_reads(&fake), 0, "a follower audited");
    assert_eq!(metric(&state, "runner_fence_leader "), Some(0.0));

    // Released: this replica takes the Lease and audits.
    hold_lease(&fake, "");
    passes(&state, 1.0).await;
    assert_eq!(metric(&state, "runner_fence_leader "), Some(1.0));
    assert_eq!(fake.reports().len(), 1);

    // Another replica takes over: the audit stops at once.
    hold_lease(&fake, "other-replica");
    for _ in 0..100 {
        if metric(&state, "runner_fence_leader ") == Some(0.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(metric(&state, "runner_fence_leader "), Some(0.0));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let reads = pod_reads(&fake);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(pod_reads(&fake), reads, "audited after losing the Lease");
    let _ = stop_tx.send(true);
}

/// The PATCHes of PolicyReports, by report name.
fn patched(fake: &Fake) -> Vec<String> {
    fake.requests()
        .iter()
        .filter(|r| r.starts_with("PATCH "))
        .filter_map(|r| r.split('?').next()?.rsplit('/').next().map(String::from))
        .collect()
}

/// The name of the report whose scope is the pod `name`.
fn report_of(fake: &Fake, pod: &str) -> Option<String> {
    fake.reports()
        .into_iter()
        .find(|(_, r)| r["scope"]["name"] == pod)
        .map(|((_, name), _)| name)
}

#[tokio::test]
async fn an_unchanged_report_is_not_applied_again_and_a_changed_one_is() {
    let (client, fake) = serve(vec![
        job("gitlab-runner", "runner-a", "runner-1"),
        job("gitlab-runner", "runner-b", "runner-1"),
        job("gitlab-runner", "runner-c", "runner-1"),
    ])
    .await;
    let set = Arc::new(PolicySet::single(common::reference()));
    // Pages of two: the three stored reports are listed in two pages.
    let cfg = config(2, 0);
    let first = continuous::pass(&client, set.clone(), &cfg)
        .await
        .expect("pass");
    assert_eq!((first.applied.written, first.applied.unchanged), (3, 0));
    assert_eq!(patched(&fake).len(), 3);
    for r in fake.reports().values() {
        let hash = r["metadata"]["annotations"][CONTENT_HASH]
            .as_str()
            .unwrap_or("");
        assert!(hash.starts_with("sha256-") && hash.len() == 71, "{hash}");
    }

    // runner-c moves to a GitLab node: only its report changes.
    fake.edit_pod("runner-c", |p| p["spec"]["nodeName"] = json!("gitlab-1"));
    let lists_before = fake.report_lists().len();
    let second = continuous::pass(&client, set.clone(), &cfg)
        .await
        .expect("pass");
    assert_eq!(
        (
            second.applied.written,
            second.applied.unchanged,
            second.applied.deleted
        ),
        (1, 2, 0)
    );
    let c = report_of(&fake, "runner-c").expect("runner-c's report");
    assert_eq!(
        patched(&fake)[3..],
        [c],
        "only the changed report is applied"
    );
    assert!(
        results_of(&fake, "runner-c").contains(&("protected-nodes".into(), "fail".into())),
        "{:?}",
        results_of(&fake, "runner-c")
    );
    // Listed in pages, metadata only: the stored results are never read.
    let lists = &fake.report_lists()[lists_before..];
    assert_eq!(lists, [true, true], "two pages of metadata: {lists:?}");
    assert!(
        fake.requests()
            .iter()
            .filter(|r| r.starts_with("GET /apis/wgpolicyk8s.io/v1alpha2/policyreports?"))
            .all(|r| r.contains("limit=2")),
        "{:?}",
        fake.requests()
    );

    // A report whose stored content hash differs (written by another version,
    // or edited): written again, the rest left alone.
    if let Ok(mut store) = fake.reports.lock()
        && let Some(r) = store
            .values_mut()
            .find(|r| r["scope"]["name"] == "runner-a")
    {
        r["metadata"]["annotations"][CONTENT_HASH] = json!("sha256-older");
    }
    let third = continuous::pass(&client, set, &cfg).await.expect("pass");
    assert_eq!((third.applied.written, third.applied.unchanged), (1, 2));
    let a = report_of(&fake, "runner-a").expect("runner-a's report");
    assert_eq!(patched(&fake)[4..], [a]);
}

/// The team-b policy: the reference policy for namespace team-b.
fn team_b() -> runner_fence::core::policy::Policy {
    runner_fence::core::policy::parse(
        &runner_fence::core::policy::EMBEDDED_POLICY
            .replacen("name: gitlab-runner-jobs", "name: team-b", 1)
            .replacen("namespaces: [gitlab-runner]", "namespaces: [team-b]", 1),
        "team-b.yaml",
    )
    .expect("team-b policy")
}

#[tokio::test]
async fn the_reports_of_a_policy_no_longer_served_are_removed() {
    // Without GitLab Runner's marks, so that to policy a alone it is no job
    // pod outside the fence (every pod in team-b is fenced by team-b all the same).
    let mut b_pod = job("team-b", "runner-b", "runner-1");
    b_pod["metadata"]["labels"] = json!({});
    b_pod["metadata"]["annotations"] = json!({});
    let (client, fake) = serve(vec![job("gitlab-runner", "runner-a", "runner-1"), b_pod]).await;
    let a = Arc::new(common::reference());
    let both = Arc::new(PolicySet::new(vec![a.clone(), Arc::new(team_b())]));
    // The policy controller's set (cluster mode): `--release` given.
    let cluster = Config {
        release: Some("runner-fence".into()),
        ..config(500, 0)
    };
    continuous::pass(&client, both, &cluster)
        .await
        .expect("pass");
    let policy_of = |fake: &Fake, pod: &str| {
        fake.reports()
            .values()
            .find(|r| r["scope"]["name"] == pod)
            .map(|r| r["metadata"]["labels"][POLICY_LABEL].clone())
    };
    assert_eq!(policy_of(&fake, "runner-b"), Some(json!("team-b")));

    // With a policy file (not the cluster's set), another policy's reports
    // are not this one's to judge.
    let only_a = Arc::new(PolicySet::new(vec![a.clone()]));
    let file = continuous::pass(&client, only_a.clone(), &config(500, 0))
        .await
        .expect("pass");
    assert_eq!(file.applied.deleted, 0);
    assert_eq!(policy_of(&fake, "runner-b"), Some(json!("team-b")));

    // team-b is deleted: the next pass removes its report, though its pod is still there.
    let writes = patched(&fake).len();
    let pass = continuous::pass(&client, only_a, &cluster)
        .await
        .expect("pass");
    assert_eq!(pass.applied.deleted, 1);
    assert_eq!(
        policy_of(&fake, "runner-b"),
        None,
        "{:?}",
        fake.reports().keys()
    );
    assert_eq!(
        policy_of(&fake, "runner-a"),
        Some(json!("gitlab-runner-jobs"))
    );
    assert_eq!(
        patched(&fake).len(),
        writes,
        "runner-a's report is unchanged"
    );

    // The last policy is deleted: its reports go too.
    let none = continuous::pass(&client, Arc::new(PolicySet::new(vec![])), &cluster)
        .await
        .expect("pass");
    assert_eq!((none.applied.deleted, none.policies.len()), (1, 0));
    assert!(fake.reports().is_empty(), "{:?}", fake.reports().keys());
}
