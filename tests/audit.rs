//! `runner-fence audit` against an HTTP-level fake of the Kubernetes API on 127.0.0.1.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use common::{fixture, reference, reference_with};
use serde_json::{Value, json};

fn node(name: &str, workload: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": {"workload": workload}},
        "spec": {"taints": [{"key": "workload", "value": workload, "effect": "NoSchedule"}]}})
}

/// A fixture's pod in namespace `ns`, bound to `node` (None: not scheduled).
fn pod_in(fixture_name: &str, ns: &str, node: Option<&str>) -> Value {
    let mut pod = fixture(fixture_name)["request"]["object"].clone();
    if let Some(node) = node {
        pod["spec"]["nodeName"] = json!(node);
    }
    pod["metadata"]["namespace"] = json!(ns);
    if pod["metadata"]["name"].as_str().unwrap_or("").is_empty() {
        pod["metadata"]["name"] = json!("gitlab-runner-7d9f8b6c5d-q8kzv");
    }
    pod
}

fn scheduled(fixture_name: &str, node: &str) -> Value {
    pod_in(fixture_name, "gitlab-runner", Some(node))
}

/// A pod created before enforcement with a GitLab toleration, waiting behind a
/// scheduling gate.
fn gated_bad_pod() -> Value {
    let mut pod = pod_in("job-with-toleration-overwrite.json", "gitlab-runner", None);
    pod["metadata"]["name"] = json!("runner-kq9pz8wrx-project-4521-concurrent-5-gated000");
    pod["spec"]["schedulingGates"] = json!([{"name": "example.com/hold"}]);
    pod
}

/// A job pod of a runner with `namespace_per_job`, on a GitLab node.
fn ci_job_pod() -> Value {
    let mut pod = pod_in("plain-job.json", "ci-job-123", Some("gitlab-1"));
    pod["metadata"]["name"] = json!("runner-kq9pz8wrx-project-4521-concurrent-0-cijob123");
    pod
}

/// A job pod of an older runner (annotations only, no job labels).
fn old_runner_pod() -> Value {
    let mut pod = pod_in(
        "job-pod-other-namespace.json",
        "team-data-ci",
        Some("runner-1"),
    );
    let labels = pod["metadata"]["labels"].as_object_mut().expect("labels");
    labels.retain(|k, _| !k.contains("runner.gitlab.com"));
    pod
}

fn unrelated_pod() -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "coredns-5d78c9869d-abcde", "namespace": "kube-system", "labels": {"k8s-app": "kube-dns"}},
        "spec": {"nodeName": "gitlab-1", "containers": [{"name": "coredns", "image": "coredns"}]}})
}

#[derive(Default)]
struct Calls {
    node_pages: AtomicUsize,
    /// Every request, as `GET /path`.
    requests: std::sync::Mutex<Vec<String>>,
}

async fn record(
    State(f): State<Arc<Fake>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if let Ok(mut r) = f.calls.requests.lock() {
        r.push(format!("{} {}", req.method(), req.uri().path()));
    }
    next.run(req).await
}

/// The RBAC objects the fake serves.
#[derive(Default)]
struct Rbac {
    roles: Vec<Value>,
    cluster_roles: Vec<Value>,
    role_bindings: Vec<Value>,
    cluster_role_bindings: Vec<Value>,
    service_accounts: Vec<Value>,
}

/// What the fake API server serves.
struct Fake {
    calls: Calls,
    pods: Vec<Value>,
    mutating: Vec<Value>,
    validating: Vec<Value>,
    /// None: every RBAC and ServiceAccount list is forbidden.
    rbac: Option<Rbac>,
}

fn list(kind: &str, items: Vec<Value>, cont: Option<&str>) -> axum::Json<Value> {
    axum::Json(json!({"apiVersion": "v1", "kind": kind,
        "metadata": {"resourceVersion": "7", "continue": cont.unwrap_or("")}, "items": items}))
}

async fn nodes(
    State(f): State<Arc<Fake>>,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> axum::Json<Value> {
    f.calls.node_pages.fetch_add(1, Ordering::SeqCst);
    // Two pages, to prove the continue token is followed.
    match q.get("continue").map(String::as_str) {
        Some("page2") => list("NodeList", vec![node("runner-1", "gitlab-runner")], None),
        _ => list("NodeList", vec![node("gitlab-1", "gitlab")], Some("page2")),
    }
}

async fn pods(State(f): State<Arc<Fake>>) -> axum::Json<Value> {
    list("PodList", f.pods.clone(), None)
}

async fn mwcs(State(f): State<Arc<Fake>>) -> axum::Json<Value> {
    list("MutatingWebhookConfigurationList", f.mutating.clone(), None)
}

async fn vwcs(State(f): State<Arc<Fake>>) -> axum::Json<Value> {
    list(
        "ValidatingWebhookConfigurationList",
        f.validating.clone(),
        None,
    )
}

/// An RBAC (or ServiceAccount) list, or the apiserver's 403 for an identity
/// without list on it.
fn rbac_list(
    f: &Fake,
    resource: &str,
    kind: &str,
    items: impl Fn(&Rbac) -> &Vec<Value>,
) -> Response {
    match &f.rbac {
        Some(r) => list(kind, items(r).clone(), None).into_response(),
        None => {
            let group = if resource == "serviceaccounts" {
                ""
            } else {
                "rbac.authorization.k8s.io"
            };
            let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": format!("{resource} is forbidden: User \"system:serviceaccount:ci:auditor\" cannot list resource \"{resource}\" in API group \"{group}\" at the cluster scope"),
                "reason": "Forbidden", "details": {"group": group, "kind": resource}, "code": 403});
            (StatusCode::FORBIDDEN, axum::Json(status)).into_response()
        }
    }
}

fn broken_validating() -> Value {
    json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
    "metadata": {"name": "runner-fence"},
    // Hand-broken the old way: a pod-name filter, no bindings or ephemeral
    // containers, fail-open.
    "webhooks": [{"name": "pods.validate.runner-fence.dev", "admissionReviewVersions": ["v1"], "sideEffects": "None",
        "failurePolicy": "Ignore", "clientConfig": {"service": {"name": "runner-fence", "namespace": "runner-fence", "path": "/validate"}},
        "rules": [{"operations": ["CREATE", "UPDATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]},
                  {"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods/binding"]}],
        "namespaceSelector": {"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["gitlab-runner"]}]},
        "matchConditions": [{"name": "runner-job-pod-name", "expression": "object.metadata.name.startsWith('runner-')"}]}]})
}

fn eks_fargate_mutating() -> Value {
    json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
    "metadata": {"name": "0500-amazon-eks-fargate-mutation.amazonaws.com"},
    "webhooks": [{"name": "0500-amazon-eks-fargate-mutation.amazonaws.com", "admissionReviewVersions": ["v1"], "sideEffects": "None",
        "clientConfig": {"url": "https://127.0.0.1:23443/mutate"}}]})
}

/// Both configurations exactly as `render webhooks` generates them.
fn generated() -> (Value, Value) {
    use runner_fence::core::render::webhooks::{Options, configurations};
    let mut opts = Options::service("runner-fence", "runner-fence");
    opts.ca_bundle = Some(b"-----BEGIN CERTIFICATE-----\n".to_vec());
    let (m, v) = configurations(&reference(), &opts).expect("render");
    let typed = |c: Value, kind: &str| {
        let mut c = c;
        c["apiVersion"] = json!("admissionregistration.k8s.io/v1");
        c["kind"] = json!(kind);
        c
    };
    (
        typed(
            serde_json::to_value(m).expect("json"),
            "MutatingWebhookConfiguration",
        ),
        typed(
            serde_json::to_value(v).expect("json"),
            "ValidatingWebhookConfiguration",
        ),
    )
}

fn rbac_meta(kind: &str, ns: Option<&str>, name: &str) -> Value {
    let mut m = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind, "metadata": {"name": name}});
    if let Some(ns) = ns {
        m["metadata"]["namespace"] = json!(ns);
    }
    m
}

fn with(mut v: Value, field: &str, value: Value) -> Value {
    v[field] = value;
    v
}

fn role_ref(kind: &str, name: &str) -> Value {
    json!({"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": name})
}

fn runner_account() -> Value {
    json!([{"kind": "ServiceAccount", "name": "gitlab-runner", "namespace": "gitlab-runner"}])
}

/// The runner's account can create pods in every namespace (a
/// ClusterRoleBinding) and in `builds` (a RoleBinding there); every account of
/// gitlab-runner can create Jobs in ci-job-123 (a group subject); the default
/// account can only read pods; GitLab's own and kube-system's grants are
/// nobody's concern here, nor are grants inside gitlab-runner.
fn cluster_rbac() -> Rbac {
    let create_pods =
        json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["create", "get"]}]);
    let read_pods = json!([{"apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["get", "list", "watch"]}]);
    Rbac {
        roles: vec![
            with(rbac_meta("Role", Some("ci-job-123"), "job-maker"), "rules",
                json!([{"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create"]}])),
            with(rbac_meta("Role", Some("gitlab-runner"), "gitlab-runner"), "rules", create_pods.clone()),
        ],
        cluster_roles: vec![
            with(rbac_meta("ClusterRole", None, "pod-maker"), "rules", create_pods),
            with(rbac_meta("ClusterRole", None, "pod-reader"), "rules", read_pods),
        ],
        role_bindings: vec![
            with(with(rbac_meta("RoleBinding", Some("builds"), "runner-builds"), "roleRef", role_ref("ClusterRole", "pod-maker")),
                "subjects", runner_account()),
            with(with(rbac_meta("RoleBinding", Some("ci-job-123"), "jobs"), "roleRef", role_ref("Role", "job-maker")),
                "subjects", json!([{"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": "system:serviceaccounts:gitlab-runner"}])),
            // Inside the fence: pods made there are reviewed.
            with(with(rbac_meta("RoleBinding", Some("gitlab-runner"), "gitlab-runner"), "roleRef", role_ref("Role", "gitlab-runner")),
                "subjects", runner_account()),
        ],
        cluster_role_bindings: vec![
            with(with(rbac_meta("ClusterRoleBinding", None, "runner-everywhere"), "roleRef", role_ref("ClusterRole", "pod-maker")),
                "subjects", runner_account()),
            with(with(rbac_meta("ClusterRoleBinding", None, "readers"), "roleRef", role_ref("ClusterRole", "pod-reader")),
                "subjects", json!([{"kind": "ServiceAccount", "name": "default", "namespace": "gitlab-runner"}])),
            with(with(rbac_meta("ClusterRoleBinding", None, "system:controller:job-controller"), "roleRef", role_ref("ClusterRole", "pod-maker")),
                "subjects", json!([{"kind": "ServiceAccount", "name": "job-controller", "namespace": "kube-system"}])),
        ],
        service_accounts: ["gitlab-runner/gitlab-runner", "gitlab-runner/default", "kube-system/job-controller"]
            .iter()
            .filter_map(|s| s.split_once('/'))
            .map(|(ns, name)| json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": ns}}))
            .collect(),
    }
}

/// The cluster of most tests: job pods on both node groups, one gated, others
/// outside the fence, hand-broken validating webhooks and RBAC with ways out.
fn broken_cluster() -> Fake {
    Fake {
        calls: Calls::default(),
        pods: vec![
            scheduled("plain-job.json", "runner-1"),
            scheduled("job-with-toleration-overwrite.json", "gitlab-1"),
            scheduled("runner-manager-pod.json", "gitlab-1"),
            gated_bad_pod(),
            ci_job_pod(),
            old_runner_pod(),
            unrelated_pod(),
        ],
        mutating: vec![generated().0, eks_fargate_mutating()],
        validating: vec![broken_validating()],
        rbac: Some(cluster_rbac()),
    }
}

/// Nothing wrong: the generated configurations, one well-placed job pod and
/// RBAC without ways out (unless `rbac` is None: forbidden).
fn clean_cluster(rbac: Option<Rbac>) -> Fake {
    let (m, v) = generated();
    Fake {
        calls: Calls::default(),
        pods: vec![scheduled("plain-job.json", "runner-1"), unrelated_pod()],
        mutating: vec![m],
        validating: vec![v],
        rbac,
    }
}

fn client_for(addr: std::net::SocketAddr) -> kube::Client {
    kube::Client::try_from(kube::Config::new(
        format!("http://{addr}").parse().expect("url"),
    ))
    .expect("client")
}

async fn serve(fake: Fake) -> (std::net::SocketAddr, Arc<Fake>) {
    let fake = Arc::new(fake);
    macro_rules! rbac_route {
        ($resource:literal, $kind:literal, $field:ident) => {
            get(|State(f): State<Arc<Fake>>| async move {
                rbac_list(&f, $resource, $kind, |r| &r.$field)
            })
        };
    }
    let app = Router::new()
        .route("/api/v1/nodes", get(nodes))
        .route("/api/v1/pods", get(pods))
        .route(
            "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations",
            get(mwcs),
        )
        .route(
            "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations",
            get(vwcs),
        )
        .route(
            "/api/v1/serviceaccounts",
            rbac_route!("serviceaccounts", "ServiceAccountList", service_accounts),
        )
        .route(
            "/apis/rbac.authorization.k8s.io/v1/roles",
            rbac_route!("roles", "RoleList", roles),
        )
        .route(
            "/apis/rbac.authorization.k8s.io/v1/clusterroles",
            rbac_route!("clusterroles", "ClusterRoleList", cluster_roles),
        )
        .route(
            "/apis/rbac.authorization.k8s.io/v1/rolebindings",
            rbac_route!("rolebindings", "RoleBindingList", role_bindings),
        )
        .route(
            "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
            rbac_route!(
                "clusterrolebindings",
                "ClusterRoleBindingList",
                cluster_role_bindings
            ),
        )
        .layer(axum::middleware::from_fn_with_state(fake.clone(), record))
        .with_state(fake.clone());
    let addr = common::serve_fake(app).await;
    (addr, fake)
}

async fn fake_api() -> (std::net::SocketAddr, Arc<Fake>) {
    serve(broken_cluster()).await
}

#[tokio::test]
async fn audit_finds_job_pods_on_gitlab_nodes_and_what_the_policy_would_do() {
    let (addr, fake) = fake_api().await;
    let client = client_for(addr);
    let r = runner_fence::k8s::audit::collect(client, &reference())
        .await
        .expect("audit");
    assert_eq!(
        fake.calls.node_pages.load(Ordering::SeqCst),
        2,
        "paged node list"
    );
    assert_eq!(r.nodes_seen, 2);
    assert_eq!(r.protected_nodes.len(), 1);
    assert_eq!(r.protected_nodes[0].name, "gitlab-1");
    assert_eq!(
        r.protected_nodes[0].taints,
        vec!["workload=gitlab:NoSchedule".to_string()]
    );
    // Every pod in the runner namespace is in scope: the runner manager too.
    assert_eq!(r.job_pods.len(), 4, "{:?}", r.job_pods);
    let manager = r
        .job_pods
        .iter()
        .find(|p| p.name.starts_with("gitlab-runner-"))
        .expect("manager pod");
    assert!(manager.on_protected_node, "{manager:?}");
    let bad = r
        .job_pods
        .iter()
        .find(|p| p.name.contains("concurrent-3"))
        .expect("toleration pod");
    assert!(bad.on_protected_node && bad.would_deny);
    assert!(
        bad.messages
            .iter()
            .any(|m| m.contains("spec.tolerations[0] tolerates workload=gitlab:NoSchedule")),
        "{:?}",
        bad.messages
    );
    let ok = r
        .job_pods
        .iter()
        .find(|p| p.name.contains("concurrent-0"))
        .expect("plain pod");
    assert!(!ok.on_protected_node && !ok.would_deny, "{:?}", ok.messages);
    assert!(ok.would_patch && ok.changes.iter().any(|c| c.contains("node affinity")));
    assert_eq!(r.on_protected().count(), 2);
    assert!(r.has_violations());
    // Only runner-fence's own webhooks, with their failure policies.
    assert_eq!(r.webhooks.len(), 2, "{:?}", r.webhooks);
    assert!(
        r.webhooks
            .iter()
            .any(|w| w.kind == "mutating" && w.failure_policy == "Fail" && w.ca_bundle)
    );
    assert!(
        r.webhooks
            .iter()
            .any(|w| w.kind == "validating" && w.failure_policy == "Ignore" && !w.ca_bundle)
    );
    let table = runner_fence::k8s::audit::table(&r);
    assert!(table.contains("JOB PODS ON PROTECTED NODES (2)"), "{table}");
    assert!(table.contains("caBundle=MISSING"), "{table}");
    // Coverage: the generated mutating webhook has no gap; the hand-broken
    // validating one misses bindings, ephemeral containers and every pod whose
    // name the filter rejects, and fails open.
    let gaps = &r.coverage_gaps;
    assert!(
        gaps.iter()
            .all(|g| g.webhook == runner_fence::core::render::webhooks::Kind::Validating),
        "{gaps:?}"
    );
    for want in [
        "bindings CREATE",
        "pods/ephemeralcontainers UPDATE",
        "pods CREATE",
    ] {
        assert!(gaps.iter().any(|g| g.request == want), "{want}: {gaps:?}");
    }
    assert!(
        gaps.iter()
            .any(|g| g.reason.contains("failurePolicy: Ignore")),
        "{gaps:?}"
    );
    assert!(table.contains("COVERAGE GAPS"), "{table}");
}

/// `runner-fence audit ARGS` against the fake at `addr`.
async fn audit_cli(addr: std::net::SocketAddr, args: &[&str]) -> std::process::Output {
    let dir = tempfile::tempdir().expect("tmp");
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: fake, cluster: {{server: \"http://{addr}\"}}}}]\nusers: [{{name: u, user: {{}}}}]\ncontexts: [{{name: fake, context: {{cluster: fake, user: u}}}}]\ncurrent-context: fake\n"
        ),
    )
    .expect("write");
    let bin = env!("CARGO_BIN_EXE_runner-fence");
    let mut argv: Vec<String> = vec!["audit".into(), "--kubeconfig".into()];
    argv.push(kubeconfig.to_str().unwrap_or("").to_string());
    argv.extend(args.iter().map(|a| a.to_string()));
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new(bin).args(&argv).output();
        drop(dir);
        out
    })
    .await
    .expect("join")
    .expect("runs")
}

#[tokio::test]
async fn audit_command_exit_codes_and_json() {
    let (addr, _) = fake_api().await;
    let bin = env!("CARGO_BIN_EXE_runner-fence");
    let dir = tempfile::tempdir().expect("tmp");
    let out = audit_cli(addr, &["--output", "json"]).await;
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["protected_nodes"][0]["name"], "gitlab-1");
    assert_eq!(v["job_pods"].as_array().map(Vec::len), Some(4));
    // The new findings as typed data.
    assert_eq!(
        v["delete_or_fix_before_enforcing"],
        json!([
            {"namespace": "gitlab-runner", "name": "gitlab-runner-7d9f8b6c5d-q8kzv"},
            {"namespace": "gitlab-runner", "name": "runner-kq9pz8wrx-project-4521-concurrent-3-m2c8rv5k"},
            {"namespace": "gitlab-runner", "name": "runner-kq9pz8wrx-project-4521-concurrent-5-gated000"},
        ])
    );
    let outside = &v["job_pods_outside_fence"][0];
    assert_eq!(outside["namespace"], "ci-job-123");
    assert_eq!(outside["node"], "gitlab-1");
    assert_eq!(outside["on_protected_node"], true);
    assert_eq!(
        v["runner_reach"][0]["binding"],
        json!({"kind": "ClusterRoleBinding", "name": "runner-everywhere"})
    );
    assert_eq!(
        v["runner_reach"][0]["who"],
        json!({"kind": "service_account", "namespace": "gitlab-runner", "name": "gitlab-runner"})
    );
    assert_eq!(v["unreadable"], json!([]));
    assert!(
        v["coverage_gaps"].as_array().is_some_and(|g| !g.is_empty()),
        "{v}"
    );
    // An unreachable API server is a clear error, exit 2.
    let bad = dir.path().join("bad");
    std::fs::write(&bad, "apiVersion: v1\nkind: Config\nclusters: [{name: x, cluster: {server: \"http://127.0.0.1:1\"}}]\nusers: [{name: u, user: {}}]\ncontexts: [{name: x, context: {cluster: x, user: u}}]\ncurrent-context: x\n").expect("write");
    let bad = bad.to_str().unwrap_or("").to_string();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(bin)
            .args(["audit", "--kubeconfig", &bad])
            .output()
    })
    .await
    .expect("join")
    .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("listing nodes"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The CRD's schema as a JSON Schema in which unknown fields are errors (the
/// apiserver would silently prune them, so a misspelt field would be lost).
fn policy_report_schema() -> Value {
    fn strict(v: &mut Value) {
        if let Some(o) = v.as_object_mut() {
            if o.contains_key("properties") && !o.contains_key("additionalProperties") {
                o.insert("additionalProperties".into(), Value::Bool(false));
            }
            for (_, child) in o.iter_mut() {
                strict(child);
            }
        } else if let Some(a) = v.as_array_mut() {
            a.iter_mut().for_each(strict);
        }
    }
    let text = std::fs::read_to_string(format!(
        "{}/manifests/extras/policyreport-crd.yaml",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("crd");
    let crd: Value = serde_saphyr::from_str(&text).expect("yaml");
    let mut schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone();
    // metadata is validated by the apiserver itself; keep it open here.
    strict(&mut schema);
    schema["properties"]["metadata"] = json!({"type": "object"});
    schema
}

#[tokio::test]
async fn policy_reports_validate_against_the_crd_schema() {
    let (addr, _) = fake_api().await;
    let client = client_for(addr);
    let r = runner_fence::k8s::audit::collect(client, &reference())
        .await
        .expect("audit");
    let reports = runner_fence::k8s::audit::policy_reports(&r, "gitlab-runner-jobs", 1_700_000_000);
    // The runner namespace, and those of the job pods outside the fence.
    let namespaces: Vec<&str> = reports
        .iter()
        .filter_map(|r| r["metadata"]["namespace"].as_str())
        .collect();
    assert_eq!(namespaces, ["ci-job-123", "gitlab-runner", "team-data-ci"]);
    let validator = jsonschema::validator_for(&policy_report_schema()).expect("schema");
    for rep in &reports {
        let errors: Vec<String> = validator.iter_errors(rep).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{errors:?}\n{rep}");
    }
    let rep = &reports[1];
    assert_eq!(rep["metadata"]["namespace"], "gitlab-runner");
    let results = rep["results"].as_array().expect("results");
    // One result per pod and rule.
    let pod_results = results
        .iter()
        .filter(|x| x["resources"][0]["kind"] == "Pod")
        .count();
    assert_eq!(pod_results, r.job_pods.len() * 5);
    let of = |pod: &str, rule: &str| {
        results
            .iter()
            .find(|x| {
                x["rule"] == rule
                    && x["resources"][0]["name"]
                        .as_str()
                        .is_some_and(|n| n.contains(pod))
            })
            .unwrap_or_else(|| panic!("no result for {pod} {rule}"))
    };
    assert_eq!(of("concurrent-3", "protected-nodes")["result"], "fail");
    assert_eq!(of("concurrent-0", "protected-nodes")["result"], "pass");
    assert_eq!(of("concurrent-0", "fargate-compat")["result"], "pass");
    let fails = results.iter().filter(|x| x["result"] == "fail").count() as u64;
    assert_eq!(rep["summary"]["fail"].as_u64(), Some(fails));
    // A misspelt field would be caught by the strict schema.
    let mut bad = rep.clone();
    bad["results"][0]["severty"] = json!("high");
    assert!(!validator.is_valid(&bad));
}

#[test]
fn in_audit_mode_what_enforce_would_deny_is_still_would_deny() {
    // The policy only reports, but `audit` says what enforce mode would do.
    let policy = runner_fence::core::policy::parse(
        &runner_fence::core::policy::EMBEDDED_POLICY.replacen("mode: enforce ", "mode: audit ", 1),
        "audit.yaml",
    )
    .expect("audit policy");
    let pod = scheduled("job-with-toleration-overwrite.json", "runner-1");
    let r = runner_fence::k8s::audit::analyze(
        &policy,
        &[],
        &[pod],
        vec![],
        false,
        &runner_fence::k8s::audit::Access::default(),
    );
    let p = &r.job_pods[0];
    assert!(p.would_deny, "{p:?}");
    assert!(
        p.findings.iter().all(|f| !f.enforced),
        "audit mode enforces nothing"
    );
    assert!(
        p.findings
            .iter()
            .any(|f| f.rule == runner_fence::core::policy::RuleId::ProtectedNodes)
    );
}

#[tokio::test]
async fn existing_pods_enforce_mode_would_deny_come_first_gated_or_not() {
    let (addr, _) = fake_api().await;
    let r = runner_fence::k8s::audit::collect(client_for(addr), &reference())
        .await
        .expect("audit");
    use runner_fence::k8s::audit::PodState;
    let gated = r
        .job_pods
        .iter()
        .find(|p| p.name.contains("gated000"))
        .expect("gated pod");
    // Judged as if created now: the GitLab toleration is denied even though
    // the pod has no node yet.
    assert!(gated.would_deny, "{gated:?}");
    assert_eq!(gated.state, PodState::Gated);
    assert_eq!(gated.scheduling_gates, ["example.com/hold"]);
    let bound = r
        .job_pods
        .iter()
        .find(|p| p.name.contains("concurrent-3"))
        .expect("bound pod");
    assert_eq!(bound.state, PodState::Bound);
    let listed: Vec<&str> = r
        .delete_or_fix_before_enforcing
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    // The runner manager too: its nodeSelector asks for GitLab's nodes.
    assert_eq!(
        listed,
        [
            "gitlab-runner-7d9f8b6c5d-q8kzv",
            bound.name.as_str(),
            gated.name.as_str()
        ]
    );
    let table = runner_fence::k8s::audit::table(&r);
    let mut lines = table.lines();
    assert_eq!(
        lines.next(),
        Some(
            "DELETE OR FIX THESE BEFORE ENFORCING (3): existing pods that enforce mode would deny; enforcing does not remove them"
        ),
        "{table}"
    );
    let gated_line = lines.nth(2).expect("gated line");
    assert!(
        gated_line.contains("gitlab-runner/runner-kq9pz8wrx-project-4521-concurrent-5-gated000")
            && gated_line.contains("gated (example.com/hold)")
            && gated_line.contains("protected-nodes"),
        "{gated_line}"
    );
    // Nothing to delete: the report starts with the protected nodes.
    let (addr, _) = serve(clean_cluster(Some(Rbac::default()))).await;
    let clean = runner_fence::k8s::audit::collect(client_for(addr), &reference())
        .await
        .expect("audit");
    assert!(clean.delete_or_fix_before_enforcing.is_empty());
    assert!(
        runner_fence::k8s::audit::table(&clean).starts_with("PROTECTED NODES"),
        "{}",
        runner_fence::k8s::audit::table(&clean)
    );
}

#[tokio::test]
async fn job_pods_outside_the_fence_are_reported_unless_the_policy_covers_them() {
    let (addr, _) = fake_api().await;
    let r = runner_fence::k8s::audit::collect(client_for(addr), &reference())
        .await
        .expect("audit");
    let outside: Vec<(&str, Option<&str>, bool)> = r
        .job_pods_outside_fence
        .iter()
        .map(|p| (p.namespace.as_str(), p.node.as_deref(), p.on_protected_node))
        .collect();
    // The namespace_per_job pod on a GitLab node, and an older runner's pod
    // found by its annotations alone; coredns carries no runner marks.
    assert_eq!(
        outside,
        [
            ("ci-job-123", Some("gitlab-1"), true),
            ("team-data-ci", Some("runner-1"), false)
        ]
    );
    let ci = &r.job_pods_outside_fence[0];
    assert_eq!(
        ci.labels,
        [
            "job.runner.gitlab.com/pod",
            "manager.runner.gitlab.com/name"
        ]
    );
    assert!(
        ci.annotations
            .iter()
            .any(|a| a == "job.runner.gitlab.com/id")
    );
    assert!(ci.runner.is_some() && ci.job_id.is_some(), "{ci:?}");
    let old = &r.job_pods_outside_fence[1];
    assert!(
        old.labels.is_empty() && !old.annotations.is_empty(),
        "{old:?}"
    );
    assert_eq!(old.job_id.as_deref(), Some("918274305"));
    // Outside pods are not judged as job pods, and inside ones are never
    // reported as outside.
    assert!(r.job_pods.iter().all(|p| p.namespace == "gitlab-runner"));
    let table = runner_fence::k8s::audit::table(&r);
    assert!(table.contains("JOB PODS OUTSIDE THE FENCE (2)"), "{table}");
    assert!(
        table.lines().any(|l| l
            .contains("ci-job-123/runner-kq9pz8wrx-project-4521-concurrent-0-cijob123")
            && l.contains("on protected node gitlab-1")),
        "{table}"
    );
    // With `ci-job-*` in the policy, the pod is fenced: judged as a job pod
    // (denied as created, since nothing excludes the GitLab nodes) and no
    // longer reported as outside.
    let prefixed = reference_with(
        "namespaces: [gitlab-runner]",
        "namespaces: [gitlab-runner, ci-job-*]",
    );
    let r = runner_fence::k8s::audit::collect(client_for(addr), &prefixed)
        .await
        .expect("audit");
    assert_eq!(
        r.job_pods_outside_fence
            .iter()
            .map(|p| p.namespace.as_str())
            .collect::<Vec<_>>(),
        ["team-data-ci"]
    );
    let fenced = r
        .job_pods
        .iter()
        .find(|p| p.namespace == "ci-job-123")
        .expect("ci-job pod in scope");
    assert!(fenced.on_protected_node, "{fenced:?}");
}

#[tokio::test]
async fn runner_service_accounts_that_can_create_pods_elsewhere_are_reported_with_the_path() {
    let (addr, _) = fake_api().await;
    let r = runner_fence::k8s::audit::collect(client_for(addr), &reference())
        .await
        .expect("audit");
    let texts: Vec<String> = r.runner_reach.iter().map(ToString::to_string).collect();
    // Not the default account that can only read pods, not kube-system's
    // controller, not the Role inside gitlab-runner.
    assert_eq!(
        texts,
        [
            "runner service account gitlab-runner/gitlab-runner can create pods in every namespace (via ClusterRoleBinding runner-everywhere → ClusterRole pod-maker)",
            "runner service account gitlab-runner/gitlab-runner can create pods in builds (via RoleBinding builds/runner-builds → ClusterRole pod-maker)",
            "runner service accounts (group system:serviceaccounts:gitlab-runner: gitlab-runner/default, gitlab-runner/gitlab-runner) can create jobs.batch in ci-job-123 (via RoleBinding ci-job-123/jobs → Role ci-job-123/job-maker)",
        ]
    );
    assert!(r.unreadable.is_empty(), "{:?}", r.unreadable);
    let table = runner_fence::k8s::audit::table(&r);
    assert!(
        table.contains("RUNNER SERVICE ACCOUNTS REACHING OUTSIDE THE FENCE (3)\n  runner service account gitlab-runner/gitlab-runner can create pods in every namespace"),
        "{table}"
    );
    // ci-job-* covered: Jobs made there are fenced.
    let prefixed = reference_with(
        "namespaces: [gitlab-runner]",
        "namespaces: [gitlab-runner, ci-job-*]",
    );
    let (addr, _) = fake_api().await;
    let r = runner_fence::k8s::audit::collect(client_for(addr), &prefixed)
        .await
        .expect("audit");
    assert_eq!(r.runner_reach.len(), 2, "{:?}", r.runner_reach);
    assert!(
        r.runner_reach
            .iter()
            .all(|x| !x.to_string().contains("ci-job-123"))
    );
}

#[tokio::test]
async fn unreadable_rbac_is_a_finding_and_exit_1() {
    let (addr, _) = serve(clean_cluster(None)).await;
    let r = runner_fence::k8s::audit::collect(client_for(addr), &reference())
        .await
        .expect("audit goes on");
    let what: Vec<(&str, Option<u16>)> = r
        .unreadable
        .iter()
        .map(|u| (u.what.as_str(), u.code))
        .collect();
    assert_eq!(
        what,
        [
            ("clusterroles.rbac.authorization.k8s.io", Some(403)),
            ("clusterrolebindings.rbac.authorization.k8s.io", Some(403)),
            ("roles.rbac.authorization.k8s.io", Some(403)),
            ("rolebindings.rbac.authorization.k8s.io", Some(403)),
            ("serviceaccounts", Some(403)),
        ]
    );
    assert!(r.runner_reach.is_empty());
    assert!(r.has_violations());
    let line = r.unreadable[0].to_string();
    assert!(
        line.starts_with("cannot list clusterroles.rbac.authorization.k8s.io: 403 Forbidden: clusterroles is forbidden: User")
            && line.contains("which runner service accounts can create pods outside the fence is not known")
            && line.ends_with("grant list on it to whoever runs audit (manifests/extras/audit-rbac.yaml)"),
        "{line}"
    );
    let table = runner_fence::k8s::audit::table(&r);
    assert!(table.contains("UNREADABLE (5)"), "{table}");
    // The same clean cluster: exit 0 when RBAC is readable, 1 when it is not.
    let out = audit_cli(addr, &["--output", "json"]).await;
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["unreadable"][0]["code"], 403);
    assert_eq!(v["unreadable"][0]["check"], "runner_reach");
    let (addr, _) = serve(clean_cluster(Some(cluster_rbac_without_ways_out()))).await;
    let out = audit_cli(addr, &[]).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("UNREADABLE"));
}

/// `cluster_rbac` without the grants that reach outside the fence.
fn cluster_rbac_without_ways_out() -> Rbac {
    let mut r = cluster_rbac();
    r.role_bindings
        .retain(|b| b["metadata"]["namespace"] == "gitlab-runner");
    r.cluster_role_bindings
        .retain(|b| b["metadata"]["name"] != "runner-everywhere");
    r
}

#[tokio::test]
async fn policy_reports_carry_outside_pods_and_runner_reach() {
    let (addr, _) = fake_api().await;
    let r = runner_fence::k8s::audit::collect(client_for(addr), &reference())
        .await
        .expect("audit");
    let reports = runner_fence::k8s::audit::policy_reports(&r, "gitlab-runner-jobs", 1_700_000_000);
    let validator = jsonschema::validator_for(&policy_report_schema()).expect("schema");
    for rep in &reports {
        let errors: Vec<String> = validator.iter_errors(rep).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{errors:?}\n{rep}");
        let fails = rep["results"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|x| x["result"] == "fail")
            .count() as u64;
        assert_eq!(rep["summary"]["fail"].as_u64(), Some(fails), "{rep}");
    }
    let of = |ns: &str| {
        reports
            .iter()
            .find(|r| r["metadata"]["namespace"] == ns)
            .unwrap_or_else(|| panic!("no report in {ns}"))
    };
    let ci = &of("ci-job-123")["results"];
    assert_eq!(ci.as_array().map(Vec::len), Some(1), "{ci}");
    assert_eq!(ci[0]["rule"], runner_fence::k8s::audit::OUTSIDE_RULE);
    assert_eq!(ci[0]["result"], "fail");
    assert_eq!(ci[0]["resources"][0]["kind"], "Pod");
    assert!(
        ci[0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("does not cover") && m.contains("protected node gitlab-1")),
        "{ci}"
    );
    // Each reach on the accounts it names, in their namespace.
    let reach: Vec<(&str, &str)> = of("gitlab-runner")["results"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|x| x["rule"] == runner_fence::k8s::audit::REACH_RULE)
        .map(|x| {
            (
                x["resources"][0]["name"].as_str().unwrap_or(""),
                x["message"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(reach.len(), 4, "{reach:?}");
    assert!(
        reach
            .iter()
            .any(|(sa, m)| *sa == "default" && m.contains("ci-job-123"))
    );
    assert!(
        reach
            .iter()
            .filter(|(sa, _)| *sa == "gitlab-runner")
            .count()
            == 3
    );
}

#[tokio::test]
async fn the_opt_in_audit_rbac_allows_every_read_audit_makes() {
    let (addr, fake) = fake_api().await;
    runner_fence::k8s::audit::collect(client_for(addr), &reference())
        .await
        .expect("audit");
    let text = std::fs::read_to_string(format!(
        "{}/manifests/extras/audit-rbac.yaml",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("audit-rbac.yaml");
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text).expect("yaml");
    let role = docs
        .iter()
        .find(|d| d["kind"] == "ClusterRole")
        .expect("ClusterRole");
    let has = |list: &Value, want: &str| {
        list.as_array()
            .is_some_and(|l| l.iter().any(|x| x == want || x == "*"))
    };
    let requests = fake
        .calls
        .requests
        .lock()
        .map(|r| r.clone())
        .unwrap_or_default();
    assert!(requests.len() >= 11, "{requests:?}");
    for req in &requests {
        // Cluster-wide lists and gets: GET /api/v1/R[/NAME] or /apis/G/v1/R[/NAME].
        let parts: Vec<&str> = req.trim_start_matches("GET /").split('/').collect();
        let (group, resource, named) = match parts.as_slice() {
            ["api", "v1", r] => ("", *r, false),
            ["api", "v1", r, _] => ("", *r, true),
            ["apis", g, _, r] => (*g, *r, false),
            ["apis", g, _, r, _] => (*g, *r, true),
            _ => panic!("unexpected request {req}"),
        };
        let verb = if named { "get" } else { "list" };
        let allowed = role["rules"].as_array().into_iter().flatten().any(|rule| {
            has(&rule["apiGroups"], group)
                && has(&rule["resources"], resource)
                && has(&rule["verbs"], verb)
        });
        assert!(
            allowed,
            "audit-rbac.yaml does not allow {verb} {resource}.{group} ({req})"
        );
    }
}
