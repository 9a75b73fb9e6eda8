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
    pod_pages: AtomicUsize,
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

/// How the webhook is served in the fake cluster.
#[derive(Clone)]
struct Serving {
    /// Whether the Service the webhook configurations call exists.
    service: bool,
    /// The Deployment's `spec.replicas` and `status.readyReplicas`.
    replicas: i32,
    ready: i32,
    /// Validity of the certificates the endpoint presents.
    cert_days: u32,
    /// The caBundle is another CA's.
    foreign_ca: bool,
    /// The endpoint's port is closed (not reachable from where audit runs).
    unreachable: bool,
}

impl Default for Serving {
    fn default() -> Self {
        Serving {
            service: true,
            replicas: 2,
            ready: 2,
            cert_days: 365,
            foreign_ca: false,
            unreachable: false,
        }
    }
}

/// What the fake API server serves.
#[derive(Default)]
struct Fake {
    calls: Calls,
    pods: Vec<Value>,
    mutating: Vec<Value>,
    validating: Vec<Value>,
    /// None: every RBAC and ServiceAccount list is forbidden.
    rbac: Option<Rbac>,
    serving: Serving,
    /// Backstop objects (ValidatingAdmissionPolicies and bindings).
    backstop: Vec<Value>,
    /// Resources whose reads are forbidden (403), by plural.
    forbidden: Vec<&'static str>,
    /// Filled in by `serve`: the webhook's Service, Deployment and EndpointSlice.
    objects: Vec<Value>,
    /// PolicyReports as stored (shared across passes); None: the CRD is not installed.
    reports: Option<Store>,
    /// The webhook's TLS endpoint `(port, CA)`, when made by the test.
    endpoint: Option<(u16, String)>,
}

/// PolicyReports by namespace and name.
type Store = Arc<std::sync::Mutex<std::collections::BTreeMap<(String, String), Value>>>;

fn status(code: StatusCode, reason: &str, message: String) -> Response {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code.as_u16()});
    (code, axum::Json(body)).into_response()
}

fn forbidden(resource: &str) -> Response {
    status(
        StatusCode::FORBIDDEN,
        "Forbidden",
        format!(
            "{resource} is forbidden: User \"system:serviceaccount:ci:auditor\" cannot read resource \"{resource}\""
        ),
    )
}

fn not_found(resource: &str, name: &str) -> Response {
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        format!("{resource} \"{name}\" not found"),
    )
}

/// `GET .../RESOURCE/NAME` of the webhook's objects and the backstop.
async fn get_named(
    State(f): State<Arc<Fake>>,
    axum::extract::Path(params): axum::extract::Path<Vec<(String, String)>>,
) -> Response {
    let p: std::collections::HashMap<String, String> = params.into_iter().collect();
    let resource = p.get("resource").cloned().unwrap_or_default();
    let name = p.get("name").cloned().unwrap_or_default();
    if f.forbidden.iter().any(|r| *r == resource) {
        return forbidden(&resource);
    }
    let kind = match resource.as_str() {
        "services" => "Service",
        "validatingadmissionpolicies" => "ValidatingAdmissionPolicy",
        "validatingadmissionpolicybindings" => "ValidatingAdmissionPolicyBinding",
        _ => return not_found(&resource, &name),
    };
    f.objects
        .iter()
        .chain(&f.backstop)
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name.as_str())
        .map(|o| axum::Json(o.clone()).into_response())
        .unwrap_or_else(|| not_found(&resource, &name))
}

/// `GET .../namespaces/NS/RESOURCE` of the webhook's Deployments and EndpointSlices.
async fn list_namespaced(
    State(f): State<Arc<Fake>>,
    axum::extract::Path((_ns, resource)): axum::extract::Path<(String, String)>,
) -> Response {
    if f.forbidden.iter().any(|r| *r == resource) {
        return forbidden(&resource);
    }
    let kind = match resource.as_str() {
        "deployments" => "Deployment",
        "endpointslices" => "EndpointSlice",
        _ => return not_found(&resource, ""),
    };
    let items = f
        .objects
        .iter()
        .filter(|o| o["kind"] == kind)
        .cloned()
        .collect();
    list(&format!("{kind}List"), items, None).into_response()
}

/// A TLS endpoint presenting a certificate for the webhook Service's name, as
/// the webhook's pods do: its port and the CA that signed it.
async fn tls_endpoint(names: &[&str], days: u32) -> (u16, String) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let g = runner_fence::webhook::certs::generate(&names, days).expect("certs");
    let chain = CertificateDer::pem_slice_iter(g.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .expect("chain");
    let key = PrivateKeyDer::from_pem_slice(g.key_pem.as_bytes()).expect("key");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .expect("config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let a = acceptor.clone();
            tokio::spawn(async move {
                let _ = a.accept(tcp).await;
            });
        }
    });
    (port, g.ca_pem)
}

/// The webhook's Service, Deployment and EndpointSlice as the chart makes
/// them, the endpoint at 127.0.0.1:`port`.
fn serving_objects(s: &Serving, port: u16) -> Vec<Value> {
    let labels = json!({"app.kubernetes.io/name": "runner-fence"});
    let mut out = Vec::new();
    if s.service {
        out.push(json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "runner-fence", "namespace": "runner-fence"},
            "spec": {"selector": labels, "ports": [{"name": "https", "port": 443, "targetPort": "https"}]}}));
    }
    out.push(json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "runner-fence", "namespace": "runner-fence"},
        "spec": {"replicas": s.replicas, "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "webhook", "image": "runner-fence"}]}}},
        "status": {"replicas": s.replicas, "readyReplicas": s.ready}}));
    let port = if s.unreachable { 1 } else { port };
    out.push(
        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "runner-fence-x7k2p", "namespace": "runner-fence",
            "labels": {"kubernetes.io/service-name": "runner-fence"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": s.ready > 0}}],
        "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}),
    );
    out
}

/// Stands for the CA of the fake's endpoint until `serve` makes it.
const PLACEHOLDER_CA: &[u8] = b"-----BEGIN CERTIFICATE-----\n";

/// Sets every placeholder caBundle of the configurations to `ca`.
fn set_ca_bundles(configs: &mut [Value], ca: &str) {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let placeholder = json!(b64.encode(PLACEHOLDER_CA));
    for c in configs {
        for w in c["webhooks"].as_array_mut().into_iter().flatten() {
            if w["clientConfig"]["caBundle"] == placeholder {
                w["clientConfig"]["caBundle"] = json!(b64.encode(ca));
            }
        }
    }
}

/// What the apiserver answers for a resource it does not serve (no CRD).
fn no_such_resource() -> Response {
    (StatusCode::NOT_FOUND, "404 page not found").into_response()
}

async fn list_reports(State(f): State<Arc<Fake>>) -> Response {
    let Some(store) = &f.reports else {
        return no_such_resource();
    };
    let items = store
        .lock()
        .map(|s| s.values().cloned().collect())
        .unwrap_or_default();
    list("PolicyReportList", items, None).into_response()
}

/// Server-side apply, as far as a test needs it: the object becomes the body.
async fn apply_report(
    State(f): State<Arc<Fake>>,
    axum::extract::Path((ns, name)): axum::extract::Path<(String, String)>,
    body: axum::body::Bytes,
) -> Response {
    let Some(store) = &f.reports else {
        return no_such_resource();
    };
    let Ok(obj) = serde_json::from_slice::<Value>(&body) else {
        return status(StatusCode::BAD_REQUEST, "BadRequest", "not JSON".into());
    };
    // etcd's limit (the apiserver refuses larger requests).
    if body.len() > 1_572_864 {
        return status(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            "etcdserver: request is too large".into(),
        );
    }
    if let Ok(mut s) = store.lock() {
        s.insert((ns, name), obj.clone());
    }
    axum::Json(obj).into_response()
}

async fn delete_report(
    State(f): State<Arc<Fake>>,
    axum::extract::Path((ns, name)): axum::extract::Path<(String, String)>,
) -> Response {
    let Some(store) = &f.reports else {
        return no_such_resource();
    };
    match store
        .lock()
        .ok()
        .and_then(|mut s| s.remove(&(ns, name.clone())))
    {
        Some(_) => axum::Json(json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}))
            .into_response(),
        None => not_found("policyreports.wgpolicyk8s.io", &name),
    }
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

/// Pods per page of the fake's pod list.
const POD_PAGE: usize = 2;

async fn pods(
    State(f): State<Arc<Fake>>,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> axum::Json<Value> {
    f.calls.pod_pages.fetch_add(1, Ordering::SeqCst);
    // Pages of POD_PAGE pods, the continue token the offset of the next.
    let from: usize = q
        .get("continue")
        .and_then(|c| c.strip_prefix("pods-"))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let to = (from + POD_PAGE).min(f.pods.len());
    let next = (to < f.pods.len()).then(|| format!("pods-{to}"));
    list(
        "PodList",
        f.pods.get(from..to).unwrap_or_default().to_vec(),
        next.as_deref(),
    )
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
    let mut opts =
        runner_fence::core::render::webhooks::Options::service("runner-fence", "runner-fence");
    opts.ca_bundle = Some(PLACEHOLDER_CA.to_vec());
    generated_with(&reference(), &opts)
}

/// Both configurations as `render webhooks` generates them with `opts`.
fn generated_with(
    p: &runner_fence::core::policy::Policy,
    opts: &runner_fence::core::render::webhooks::Options,
) -> (Value, Value) {
    use runner_fence::core::render::webhooks::configurations;
    let (m, v) = configurations(p, opts).expect("render");
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
        ..Fake::default()
    }
}

/// Nothing wrong: the generated configurations, one well-placed job pod and
/// RBAC without ways out (unless `rbac` is None: forbidden).
fn clean_cluster(rbac: Option<Rbac>) -> Fake {
    let (m, v) = generated();
    Fake {
        pods: vec![scheduled("plain-job.json", "runner-1"), unrelated_pod()],
        mutating: vec![m],
        validating: vec![v],
        rbac,
        ..Fake::default()
    }
}

fn client_for(addr: std::net::SocketAddr) -> kube::Client {
    kube::Client::try_from(kube::Config::new(
        format!("http://{addr}").parse().expect("url"),
    ))
    .expect("client")
}

async fn serve(mut fake: Fake) -> (std::net::SocketAddr, Arc<Fake>) {
    // The webhook's endpoint: a real TLS listener with a certificate for the
    // Service's name, and the caBundles of the configurations set to its CA.
    let (port, ca) = match fake.endpoint.clone() {
        Some(e) => e,
        None => tls_endpoint(&["runner-fence.runner-fence.svc"], fake.serving.cert_days).await,
    };
    let trusted = if fake.serving.foreign_ca {
        tls_endpoint(&["runner-fence.runner-fence.svc"], 365)
            .await
            .1
    } else {
        ca
    };
    set_ca_bundles(&mut fake.mutating, &trusted);
    set_ca_bundles(&mut fake.validating, &trusted);
    fake.objects = serving_objects(&fake.serving, port);
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
        .route("/api/v1/namespaces/{ns}/{resource}/{name}", get(get_named))
        .route(
            "/apis/admissionregistration.k8s.io/v1/{resource}/{name}",
            get(get_named),
        )
        .route(
            "/apis/apps/v1/namespaces/{ns}/{resource}",
            get(list_namespaced),
        )
        .route(
            "/apis/discovery.k8s.io/v1/namespaces/{ns}/{resource}",
            get(list_namespaced),
        )
        .route(
            "/apis/wgpolicyk8s.io/v1alpha2/policyreports",
            get(list_reports),
        )
        .route(
            "/apis/wgpolicyk8s.io/v1alpha2/namespaces/{ns}/policyreports/{name}",
            axum::routing::patch(apply_report).delete(delete_report),
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

/// The collector judges each page of pods as it comes and keeps none of them
/// (20,000 pods as JSON trees took 2.5 GiB): what it finds on a paged list is
/// what `analyze` finds on the whole list at once.
#[tokio::test]
async fn audit_judges_every_page_of_pods_as_analyze_judges_the_whole_list() {
    let (addr, fake) = fake_api().await;
    let r = runner_fence::k8s::audit::collect(client_for(addr), &reference())
        .await
        .expect("audit");
    assert_eq!(
        fake.calls.pod_pages.load(Ordering::SeqCst),
        fake.pods.len().div_ceil(POD_PAGE),
        "every page of pods read"
    );
    let nodes: Vec<runner_fence::core::nodes::NodeInfo> = [
        node("gitlab-1", "gitlab"),
        node("runner-1", "gitlab-runner"),
    ]
    .into_iter()
    .filter_map(|n| serde_json::from_value(n).ok())
    .filter_map(|n| runner_fence::core::nodes::NodeInfo::from_node(&n))
    .collect();
    let whole = runner_fence::k8s::audit::analyze(
        &reference(),
        &runner_fence::k8s::audit::Inputs {
            nodes,
            pods: fake.pods.clone(),
            ..Default::default()
        },
    );
    assert_eq!(r.job_pods.len(), 4, "{:?}", r.job_pods);
    assert_eq!(r.job_pods, whole.job_pods);
    assert!(!r.job_pods_outside_fence.is_empty());
    assert_eq!(r.job_pods_outside_fence, whole.job_pods_outside_fence);
    assert_eq!(
        r.delete_or_fix_before_enforcing,
        whole.delete_or_fix_before_enforcing
    );
    assert_eq!(r.protected_nodes, whole.protected_nodes);
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

/// The reports about one object, by the kind and name of their scope.
fn reports_of<'a>(reports: &'a [Value], kind: &str, name_part: &str) -> Vec<&'a Value> {
    reports
        .iter()
        .filter(|r| {
            r["scope"]["kind"] == kind
                && r["scope"]["name"]
                    .as_str()
                    .is_some_and(|n| n.contains(name_part))
        })
        .collect()
}

#[tokio::test]
async fn policy_reports_validate_against_the_crd_schema() {
    let (addr, _) = fake_api().await;
    let client = client_for(addr);
    let r = runner_fence::k8s::audit::collect(client, &reference())
        .await
        .expect("audit");
    let reports = runner_fence::k8s::audit::policy_reports(&r, "gitlab-runner-jobs", 1_700_000_000);
    // One report per pod (the four in the runner namespace and the two job
    // pods outside the fence) and per runner ServiceAccount that reaches out.
    let scopes: Vec<(&str, &str)> = reports
        .iter()
        .map(|r| {
            (
                r["scope"]["namespace"].as_str().unwrap_or(""),
                r["scope"]["kind"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        scopes,
        [
            ("ci-job-123", "Pod"),
            ("gitlab-runner", "Pod"),
            ("gitlab-runner", "Pod"),
            ("gitlab-runner", "Pod"),
            ("gitlab-runner", "Pod"),
            ("gitlab-runner", "ServiceAccount"),
            ("gitlab-runner", "ServiceAccount"),
            ("team-data-ci", "Pod"),
        ]
    );
    let validator = jsonschema::validator_for(&policy_report_schema()).expect("schema");
    for rep in &reports {
        let errors: Vec<String> = validator.iter_errors(rep).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{errors:?}\n{rep}");
        assert_eq!(
            rep["metadata"]["labels"],
            json!({"app.kubernetes.io/managed-by": "runner-fence", "runner-fence.dev/policy": "gitlab-runner-jobs"})
        );
        assert_eq!(rep["metadata"]["namespace"], rep["scope"]["namespace"]);
        let fails = rep["results"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|x| x["result"] == "fail")
            .count() as u64;
        assert_eq!(rep["summary"]["fail"].as_u64(), Some(fails), "{rep}");
    }
    // One result per rule for each pod of the runner namespace.
    let of = |pod: &str, rule: &str| {
        let reps: Vec<&Value> = reports_of(&reports, "Pod", pod)
            .into_iter()
            .filter(|r| r["scope"]["namespace"] == "gitlab-runner")
            .collect();
        assert_eq!(reps.len(), 1, "{pod}");
        let rep = reps[0];
        assert_eq!(rep["results"].as_array().map(Vec::len), Some(5), "{rep}");
        rep["results"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|x| x["rule"] == rule)
            .cloned()
            .unwrap_or_else(|| panic!("no result for {pod} {rule}"))
    };
    assert_eq!(of("concurrent-3", "protected-nodes")["result"], "fail");
    assert_eq!(of("concurrent-0", "protected-nodes")["result"], "pass");
    assert_eq!(of("concurrent-0", "fargate-compat")["result"], "pass");
    // A misspelt field would be caught by the strict schema.
    let mut bad = reports[1].clone();
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
        &runner_fence::k8s::audit::Inputs {
            pods: vec![pod],
            ..Default::default()
        },
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
    let ci = reports_of(&reports, "Pod", "cijob123");
    assert_eq!(ci.len(), 1);
    let ci = &ci[0]["results"];
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
    let reach: Vec<(&str, &str)> = reports
        .iter()
        .filter(|r| r["scope"]["kind"] == "ServiceAccount")
        .flat_map(|r| r["results"].as_array().into_iter().flatten())
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
    assert_eq!(
        reach
            .iter()
            .filter(|(sa, _)| *sa == "gitlab-runner")
            .count(),
        3
    );
    assert_eq!(
        reports_of(&reports, "ServiceAccount", "gitlab-runner")[0]["metadata"]["name"],
        "runner-fence-sa-gitlab-runner"
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
        // Lists and gets: GET /api/v1/[namespaces/NS/]R[/NAME] or /apis/G/v1/[namespaces/NS/]R[/NAME].
        let mut parts: Vec<&str> = req.trim_start_matches("GET /").split('/').collect();
        if let Some(i) = parts.iter().position(|p| *p == "namespaces")
            && parts.len() > i + 2
        {
            parts.drain(i..i + 2);
        }
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

/// The clean cluster with the webhook served as `serving` says.
fn served(serving: Serving) -> Fake {
    Fake {
        serving,
        ..clean_cluster(Some(Rbac::default()))
    }
}

fn issues(r: &runner_fence::k8s::audit::Report) -> Vec<String> {
    r.serving.issues.iter().map(ToString::to_string).collect()
}

#[tokio::test]
async fn a_serving_webhook_is_checked_to_its_certificate() {
    let (addr, _) = serve(served(Serving::default())).await;
    let r = runner_fence::k8s::audit::collect(client_for(addr), &reference())
        .await
        .expect("audit");
    assert_eq!(issues(&r), Vec::<String>::new());
    assert!(
        !r.has_violations(),
        "{}",
        runner_fence::k8s::audit::table(&r)
    );
    let t = &r.serving.targets[0];
    assert_eq!(
        t.target.to_string(),
        "Service runner-fence/runner-fence:443"
    );
    assert_eq!(
        t.deployments,
        [runner_fence::k8s::audit::DeploymentStatus {
            name: "runner-fence/runner-fence".into(),
            replicas: 2,
            ready: 2
        }]
    );
    assert_eq!(t.ready_endpoints, Some(1));
    // The caBundle's CA, and what the endpoint presents for the Service's name.
    let sources: Vec<&str> = t.certificates.iter().map(|c| c.source.as_str()).collect();
    assert_eq!(sources.len(), 2, "{sources:?}");
    assert_eq!(
        sources[0],
        "caBundle of 0100-runner-fence/pods.mutate.runner-fence.dev, runner-fence/pods.validate.runner-fence.dev"
    );
    assert!(
        sources[1].starts_with("Service runner-fence/runner-fence:443 (served by 127.0.0.1:"),
        "{sources:?}"
    );
    assert_eq!(
        t.certificates[1].subject,
        "CN=runner-fence.runner-fence.svc"
    );
    assert!(t.certificates.iter().all(|c| c.not_after > 1_700_000_000));
    let table = runner_fence::k8s::audit::table(&r);
    assert!(table.contains("WEBHOOK SERVING (0 issues)\n  Service runner-fence/runner-fence:443\n    Deployment runner-fence/runner-fence 2/2 Ready\n    1 ready endpoints\n"), "{table}");
}

#[rstest::rstest]
#[case::scaled_down(Serving { ready: 0, ..Serving::default() }, &[
    "Deployment runner-fence/runner-fence: has 0 of 2 replicas Ready; kubectl -n runner-fence describe deployment runner-fence",
    "Service runner-fence/runner-fence: has no ready endpoints: the apiserver cannot reach the webhook;",
])]
#[case::scaled_to_zero(Serving { replicas: 0, ready: 0, ..Serving::default() }, &[
    "Deployment runner-fence/runner-fence: is scaled to 0 replicas: nothing answers the webhook calls;",
    "Service runner-fence/runner-fence: has no ready endpoints",
])]
#[case::one_ready(Serving { ready: 1, ..Serving::default() }, &[
    "Deployment runner-fence/runner-fence: has 1 of 2 replicas Ready;",
])]
#[case::no_service(Serving { service: false, ..Serving::default() }, &[
    "Service runner-fence/runner-fence: does not exist, but 0100-runner-fence/pods.mutate.runner-fence.dev, runner-fence/pods.validate.runner-fence.dev call it: every call fails;",
])]
#[case::expiring(Serving { cert_days: 1, ..Serving::default() }, &[
    "caBundle of 0100-runner-fence/pods.mutate.runner-fence.dev, runner-fence/pods.validate.runner-fence.dev: the certificate (CN=runner-fence CA) expires on",
    "Service runner-fence/runner-fence:443 (served by 127.0.0.1:",
])]
#[case::foreign_ca(Serving { foreign_ca: true, ..Serving::default() }, &[
    "Service runner-fence/runner-fence:443 (served by 127.0.0.1:",
])]
fn what_keeps_the_webhook_from_answering_is_a_finding(
    #[case] serving: Serving,
    #[case] want: &[&str],
) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let foreign = serving.foreign_ca;
        let expiring = serving.cert_days < 14;
        let (addr, _) = serve(served(serving)).await;
        let r = runner_fence::k8s::audit::collect(client_for(addr), &reference())
            .await
            .expect("audit");
        let got = issues(&r);
        assert_eq!(got.len(), want.len(), "{got:#?}");
        for (g, w) in got.iter().zip(want) {
            assert!(g.starts_with(w), "{g}\nwant {w}");
        }
        if foreign {
            assert!(
                got[0].contains("is not accepted for runner-fence.runner-fence.svc with the caBundle of 0100-runner-fence/pods.mutate.runner-fence.dev, runner-fence/pods.validate.runner-fence.dev: invalid peer certificate: ")
                    && got[0].contains(": the apiserver's calls fail; set caBundle to the CA that signed the serving certificate"),
                "{got:?}"
            );
        }
        if expiring {
            assert!(
                got.iter().all(|g| g.contains("expires on") && g.contains("(in ")),
                "{got:?}"
            );
        }
        assert!(r.has_violations());
        let out = audit_cli(addr, &[]).await;
        assert_eq!(out.status.code(), Some(1));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(&format!("WEBHOOK SERVING ({} issues)", want.len())), "{text}");
    });
}

#[tokio::test]
async fn an_endpoint_audit_cannot_reach_is_a_note_not_a_finding() {
    let (addr, _) = serve(served(Serving {
        unreachable: true,
        ..Serving::default()
    }))
    .await;
    let r = runner_fence::k8s::audit::collect(client_for(addr), &reference())
        .await
        .expect("audit");
    assert_eq!(issues(&r), Vec::<String>::new());
    let notes = &r.serving.targets[0].notes;
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(
        notes[0].starts_with("the serving certificate at 127.0.0.1:1 was not read: ")
            && notes[0].ends_with("run audit there to check it)"),
        "{notes:?}"
    );
    // The caBundle is still read.
    assert_eq!(r.serving.targets[0].certificates.len(), 1);
}

#[tokio::test]
async fn webhooks_called_by_url_are_probed_there_and_the_flags_name_their_deployment() {
    use runner_fence::core::render::webhooks::{Client, Options};
    // One endpoint for the URL the e2e suite uses and for the Service's name.
    let (port, ca) = tls_endpoint(&["127.0.0.1", "runner-fence.runner-fence.svc"], 365).await;
    let opts = Options {
        client: Client::Url {
            base: format!("https://127.0.0.1:{port}"),
            namespace: "runner-fence".into(),
        },
        ca_bundle: Some(ca.clone().into_bytes()),
        ..Options::service("runner-fence", "runner-fence")
    };
    let (m, v) = generated_with(&reference(), &opts);
    let fake = |serving: Serving| Fake {
        mutating: vec![m.clone()],
        validating: vec![v.clone()],
        endpoint: Some((port, ca.clone())),
        serving,
        ..clean_cluster(Some(Rbac::default()))
    };
    let (addr, _) = serve(fake(Serving::default())).await;
    let r = runner_fence::k8s::audit::collect(client_for(addr), &reference())
        .await
        .expect("audit");
    assert_eq!(issues(&r), Vec::<String>::new());
    let t = &r.serving.targets[0];
    assert_eq!(
        t.target.to_string(),
        format!("URL https://127.0.0.1:{port}/mutate")
    );
    assert!(t.notes[0].starts_with("called by URL: its Deployment and endpoints are not checked (pass --webhook-namespace and --webhook-service"), "{:?}", t.notes);
    assert_eq!(t.certificates.len(), 2, "{:?}", t.certificates);
    // Scaled down, and named by the flags: the Deployment is checked.
    let (addr, _) = serve(fake(Serving {
        ready: 0,
        ..Serving::default()
    }))
    .await;
    let out = audit_cli(
        addr,
        &[
            "--output",
            "json",
            "--webhook-namespace",
            "runner-fence",
            "--webhook-service",
            "runner-fence",
        ],
    )
    .await;
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        v["serving"]["targets"][0]["target"],
        json!({"kind": "service", "namespace": "runner-fence", "name": "runner-fence", "port": 443})
    );
    assert_eq!(
        v["serving"]["issues"][0]["problem"],
        "has 0 of 2 replicas Ready"
    );
    // Without the flags the same cluster shows no Deployment issue (not checked).
    let out = audit_cli(addr, &["--output", "json"]).await;
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["serving"]["issues"], json!([]));
}

/// The backstop objects `render admission-policy` generates for `p`.
fn backstop_of(p: &runner_fence::core::policy::Policy) -> Vec<Value> {
    runner_fence::core::render::admission_policy::objects(p, "runner-fence").expect("render")
}

fn audit_policy() -> runner_fence::core::policy::Policy {
    reference_with("mode: enforce", "mode: audit")
}

#[tokio::test]
async fn every_backstop_setting_it_generates_is_recognised() {
    let enforce = reference();
    let audit = audit_policy();
    let mixed = reference_with(
        "  resources: audit\n",
        "  resources: audit\n  protected-nodes: audit\n  node-name: audit\n",
    );
    for (p, want) in [
        (&enforce, "runner-fence-backstop (Deny)"),
        (&audit, "runner-fence-backstop-audit (Warn, Audit)"),
        (
            &mixed,
            "runner-fence-backstop (Deny), runner-fence-backstop-audit (Warn, Audit)",
        ),
    ] {
        let (addr, _) = serve(Fake {
            backstop: backstop_of(p),
            ..clean_cluster(Some(Rbac::default()))
        })
        .await;
        let r = runner_fence::k8s::audit::collect(client_for(addr), p)
            .await
            .expect("audit");
        assert_eq!(r.backstop.summary(), want);
        assert_eq!(r.backstop.issues, Vec::<String>::new(), "{want}");
        let table = runner_fence::k8s::audit::table(&r);
        assert!(
            table.contains(&format!("IN-TREE BACKSTOP: {want}\n")),
            "{table}"
        );
    }
    // The enforce backstop while the policy audits: rejects what audit mode allows.
    let (addr, _) = serve(Fake {
        backstop: backstop_of(&enforce),
        ..clean_cluster(Some(Rbac::default()))
    })
    .await;
    let r = runner_fence::k8s::audit::collect(client_for(addr), &audit)
        .await
        .expect("audit");
    assert!(
        r.backstop.issues.iter().any(|i| i.contains(
            "runner-fence-backstop is not generated for this policy (mode audit): delete it"
        )),
        "{:?}",
        r.backstop.issues
    );
    assert!(r.has_violations());
}

#[tokio::test]
async fn a_denying_backstop_makes_fail_open_webhooks_the_documented_setting() {
    use runner_fence::core::render::webhooks::{FailurePolicy, Options};
    let mut opts = Options::service("runner-fence", "runner-fence");
    opts.ca_bundle = Some(PLACEHOLDER_CA.to_vec());
    opts.mutate_failure_policy = Some(FailurePolicy::Ignore);
    opts.validate_failure_policy = Some(FailurePolicy::Ignore);
    let (m, v) = generated_with(&reference(), &opts);
    let fake = |backstop: Vec<Value>, forbidden: Vec<&'static str>| Fake {
        mutating: vec![m.clone()],
        validating: vec![v.clone()],
        backstop,
        forbidden,
        ..clean_cluster(Some(Rbac::default()))
    };
    let (addr, _) = serve(fake(backstop_of(&reference()), vec![])).await;
    let r = runner_fence::k8s::audit::collect(client_for(addr), &reference())
        .await
        .expect("audit");
    assert!(r.backstop.denies());
    assert_eq!(r.coverage_gaps, vec![]);
    assert!(
        !r.has_violations(),
        "{}",
        runner_fence::k8s::audit::table(&r)
    );
    // The backstop cannot be read: unreadable, not "not installed", and the
    // fail-open webhooks count as unguarded.
    let (addr, _) = serve(fake(
        backstop_of(&reference()),
        vec![
            "validatingadmissionpolicies",
            "validatingadmissionpolicybindings",
        ],
    ))
    .await;
    let r = runner_fence::k8s::audit::collect(client_for(addr), &reference())
        .await
        .expect("audit");
    let what: Vec<(&str, Option<u16>)> = r
        .unreadable
        .iter()
        .map(|u| (u.what.as_str(), u.code))
        .collect();
    assert_eq!(
        what,
        [
            (
                "validatingadmissionpolicies.admissionregistration.k8s.io runner-fence-backstop",
                Some(403)
            ),
            (
                "validatingadmissionpolicybindings.admissionregistration.k8s.io runner-fence-backstop",
                Some(403)
            ),
            (
                "validatingadmissionpolicies.admissionregistration.k8s.io runner-fence-backstop-audit",
                Some(403)
            ),
            (
                "validatingadmissionpolicybindings.admissionregistration.k8s.io runner-fence-backstop-audit",
                Some(403)
            ),
        ]
    );
    let line = r.unreadable[0].to_string();
    assert!(
        line.starts_with("cannot get validatingadmissionpolicies.admissionregistration.k8s.io runner-fence-backstop: 403 Forbidden: ")
            && line.contains("whether the in-tree backstop is installed is not known")
            && line.ends_with("grant get on it to whoever runs audit (manifests/extras/audit-rbac.yaml)"),
        "{line}"
    );
    assert_eq!(r.backstop.summary(), "not installed");
    assert_eq!(r.coverage_gaps.len(), 2, "{:?}", r.coverage_gaps);
    let out = audit_cli(addr, &["--output", "json"]).await;
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["unreadable"][0]["check"], "backstop");
}

#[tokio::test]
async fn audit_is_clean_on_the_audit_mode_setup_it_generates() {
    // `render webhooks` (now Ignore for an audit policy) and `render
    // admission-policy` for the audit policy, one well-placed pod.
    let audit = audit_policy();
    let mut opts =
        runner_fence::core::render::webhooks::Options::service("runner-fence", "runner-fence");
    opts.ca_bundle = Some(PLACEHOLDER_CA.to_vec());
    let (m, v) = generated_with(&audit, &opts);
    let (addr, _) = serve(Fake {
        mutating: vec![m],
        validating: vec![v],
        backstop: backstop_of(&audit),
        ..clean_cluster(Some(cluster_rbac_without_ways_out()))
    })
    .await;
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("audit.yaml");
    std::fs::write(
        &file,
        runner_fence::core::policy::EMBEDDED_POLICY.replacen("mode: enforce", "mode: audit", 1),
    )
    .expect("write");
    let out = audit_cli(addr, &["--policy", file.to_str().unwrap_or("")]).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("IN-TREE BACKSTOP: runner-fence-backstop-audit (Warn, Audit)\n"),
        "{text}"
    );
    // The webhooks the enforce defaults left behind would be a finding.
    let (m, v) = generated();
    let (addr, _) = serve(Fake {
        mutating: vec![m],
        validating: vec![v],
        backstop: backstop_of(&audit),
        ..clean_cluster(Some(cluster_rbac_without_ways_out()))
    })
    .await;
    let out = audit_cli(addr, &["--policy", file.to_str().unwrap_or("")]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("has failurePolicy: Fail while the policy audits"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// A pod the engine cannot decode (`spec.tolerations` is not a list), bound
/// to a GitLab node.
fn undecodable_pod() -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "runner-broken", "namespace": "gitlab-runner", "uid": "0d9e8c7b-aaaa-4bbb-8ccc-1234567890ab"},
        "spec": {"nodeName": "gitlab-1", "containers": [{"name": "build", "image": "alpine"}], "tolerations": "everything"}})
}

#[tokio::test]
async fn a_pod_that_cannot_be_evaluated_is_reported_not_dropped() {
    let (addr, _) = serve(Fake {
        pods: vec![scheduled("plain-job.json", "runner-1"), undecodable_pod()],
        ..clean_cluster(Some(cluster_rbac_without_ways_out()))
    })
    .await;
    let r = runner_fence::k8s::audit::collect(client_for(addr), &reference())
        .await
        .expect("audit goes on");
    assert_eq!(r.job_pods.len(), 1);
    assert_eq!(r.unreadable.len(), 1, "{:?}", r.unreadable);
    let u = &r.unreadable[0];
    assert_eq!(u.what, "pod gitlab-runner/runner-broken");
    assert_eq!(u.check, runner_fence::k8s::audit::Check::Pod);
    let pod = u.pod.as_ref().expect("pod");
    assert!(pod.on_protected_node);
    let line = u.to_string();
    assert!(
        line.starts_with("cannot evaluate pod gitlab-runner/runner-broken: object is not a valid Pod: ")
            && line.contains("spec.tolerations: invalid type: string \"everything\", expected a sequence")
            && line.ends_with("what enforce mode would do to it is not known; it RUNS ON PROTECTED NODE gitlab-1; fix or delete the pod"),
        "{line}"
    );
    assert!(r.has_violations());
    // In the PolicyReports: an error result on the pod.
    let reports = runner_fence::k8s::audit::policy_reports(&r, "gitlab-runner-jobs", 1);
    let rep = reports_of(&reports, "Pod", "runner-broken");
    assert_eq!(rep.len(), 1);
    assert_eq!(
        rep[0]["metadata"]["name"],
        "runner-fence-pod-0d9e8c7b-aaaa-4bbb-8ccc-1234567890ab"
    );
    assert_eq!(rep[0]["results"][0]["rule"], "unreadable");
    assert_eq!(rep[0]["results"][0]["result"], "error");
    assert_eq!(rep[0]["summary"]["error"], 1);
    // And exit 1, with the finding in the JSON.
    let out = audit_cli(addr, &["--output", "json"]).await;
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["unreadable"][0]["check"], "pod");
    assert_eq!(v["unreadable"][0]["pod"]["node"], "gitlab-1");
    let table = runner_fence::k8s::audit::table(&r);
    assert!(table.contains("UNREADABLE (1)"), "{table}");
}

/// The plain job as the runner sends it, never mutated (created in audit
/// mode or before install), gated or pending.
fn unmutated(name: &str, gated: bool) -> Value {
    let mut pod = pod_in("plain-job.json", "gitlab-runner", None);
    pod["metadata"]["name"] = json!(name);
    if gated {
        pod["spec"]["schedulingGates"] = json!([{"name": "example.com/hold"}]);
    }
    pod
}

#[test]
fn pods_that_only_lack_the_profile_affinity_are_denied_when_they_become_schedulable() {
    use runner_fence::k8s::audit::{Inputs, analyze, table};
    let p = reference();
    let mutated_gated = {
        let mut review = fixture("plain-job.json");
        let m = runner_fence::webhook::admission::handle(
            &p,
            runner_fence::core::engine::Endpoint::Mutate,
            &serde_json::to_vec(&review).expect("json"),
            None,
        )
        .expect("mutate");
        let patch = runner_fence::webhook::admission::response_patch(&m.response).expect("patch");
        json_patch::patch(&mut review["request"]["object"], &patch).expect("applies");
        let mut pod = review["request"]["object"].clone();
        pod["metadata"]["name"] = json!("runner-mutated-gated");
        pod["metadata"]["namespace"] = json!("gitlab-runner");
        pod["spec"]["schedulingGates"] = json!([{"name": "example.com/hold"}]);
        pod
    };
    let r = analyze(
        &p,
        &Inputs {
            pods: vec![
                unmutated("runner-gated", true),
                unmutated("runner-pending", false),
                mutated_gated,
            ],
            ..Default::default()
        },
    );
    let of = |name: &str| r.job_pods.iter().find(|j| j.name == name).expect(name);
    // As created they would be patched, not denied...
    for name in ["runner-gated", "runner-pending"] {
        let j = of(name);
        assert!(j.findings.is_empty() && j.would_patch, "{j:?}");
        // ...but removing the gate is an UPDATE that no mutation runs on.
        assert!(j.would_deny, "{j:?}");
        let rules: Vec<&str> = j.when_schedulable.iter().map(|f| f.rule.as_str()).collect();
        assert_eq!(rules, ["protected-nodes", "placement"], "{j:?}");
        assert!(j.when_schedulable.iter().all(|f| f.enforced));
    }
    // A gated pod that was patched at creation is fine when ungated.
    let ok = of("runner-mutated-gated");
    assert!(!ok.would_deny && ok.when_schedulable.is_empty(), "{ok:?}");
    let listed: Vec<&str> = r
        .delete_or_fix_before_enforcing
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(listed, ["runner-gated", "runner-pending"]);
    let text = table(&r);
    assert!(
        text.lines().any(|l| l.contains("gitlab-runner/runner-gated")
            && l.contains("gated (example.com/hold)")
            && l.contains("when its gates are removed (no mutation then): protected-nodes: spec has no nodeSelector or required node affinity")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains("gitlab-runner/runner-pending")
                && l.contains(
                    "as stored (no mutation runs on an existing pod): protected-nodes: "
                )),
        "{text}"
    );
    // In the PolicyReports: a failure, said to be about the pod as stored.
    let reports = runner_fence::k8s::audit::policy_reports(&r, "gitlab-runner-jobs", 1);
    let rep = reports_of(&reports, "Pod", "runner-gated")[0];
    let placement = rep["results"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|x| x["rule"] == "placement")
        .expect("placement");
    assert_eq!(placement["result"], "fail");
    assert!(
        placement["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("as stored, when it becomes schedulable: placement: ")),
        "{placement}"
    );
}

#[test]
fn two_thousand_pods_in_one_namespace_make_reports_each_far_below_etcds_limit() {
    use runner_fence::k8s::audit::{Inputs, MAX_RESULTS, analyze, policy_reports};
    let p = reference();
    let mut pods: Vec<Value> = (0..2000)
        .map(|i| {
            let mut pod = scheduled(
                if i % 3 == 0 {
                    "job-with-toleration-overwrite.json"
                } else {
                    "plain-job.json"
                },
                if i % 3 == 0 { "gitlab-1" } else { "runner-1" },
            );
            pod["metadata"]["name"] =
                json!(format!("runner-kq9pz8wrx-project-4521-concurrent-{i}-x"));
            pod["metadata"]["uid"] = json!(format!("00000000-0000-4000-8000-{i:012}"));
            pod
        })
        .collect();
    // The worst pod: 300 containers, each over the maximum, with long names.
    let mut worst = scheduled("plain-job.json", "runner-1");
    worst["metadata"]["name"] = json!("runner-worst");
    worst["metadata"]["uid"] = json!("00000000-0000-4000-8000-ffffffffffff");
    worst["spec"]["containers"] = Value::Array(
        (0..300)
            .map(|i| json!({"name": format!("svc-{i}-{}", "x".repeat(40)), "image": "alpine",
                "resources": {"requests": {"cpu": "64", "memory": "1Ti"}, "limits": {"cpu": "1", "memory": "1Gi"}}}))
            .collect(),
    );
    pods.push(worst);
    let inputs = Inputs {
        nodes: vec![
            runner_fence::core::nodes::NodeInfo::from_node(
                &serde_json::from_value(node("gitlab-1", "gitlab")).expect("node"),
            )
            .expect("info"),
        ],
        pods,
        ..Default::default()
    };
    let r = analyze(&p, &inputs);
    assert_eq!(r.job_pods.len(), 2001);
    let reports = policy_reports(&r, "gitlab-runner-jobs", 1_700_000_000);
    assert_eq!(reports.len(), 2001, "one report per pod");
    let mut names = std::collections::BTreeSet::new();
    let mut largest = 0;
    for rep in &reports {
        let size = serde_json::to_vec(rep).expect("json").len();
        largest = largest.max(size);
        assert!(
            size < 1 << 20,
            "{} is {size} bytes",
            rep["metadata"]["name"]
        );
        assert!(
            rep["results"]
                .as_array()
                .is_some_and(|r| r.len() <= MAX_RESULTS)
        );
        assert!(
            names.insert(rep["metadata"]["name"].as_str().unwrap_or("").to_string()),
            "unique"
        );
        assert_eq!(rep["metadata"]["ownerReferences"][0]["kind"], "Pod");
    }
    // Far below: a typical report is a few KiB, the worst one stays bounded.
    assert!(largest < 64 * 1024, "largest report {largest} bytes");
    // Stable: the same cluster, the same names.
    let again: std::collections::BTreeSet<String> =
        policy_reports(&analyze(&p, &inputs), "gitlab-runner-jobs", 1_800_000_000)
            .iter()
            .map(|r| r["metadata"]["name"].as_str().unwrap_or("").to_string())
            .collect();
    assert_eq!(again, names);
    assert!(names.contains("runner-fence-pod-00000000-0000-4000-8000-000000001999"));
}

fn store() -> Store {
    Store::default()
}

fn stored(s: &Store) -> Vec<(String, String)> {
    s.lock()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

/// One `audit --output policy-report --apply` pass over a cluster with `pods`,
/// whose PolicyReports are in `s`.
async fn pass(s: &Store, pods: Vec<Value>) -> runner_fence::k8s::audit::Applied {
    use runner_fence::k8s::audit::{apply_reports, collect, policy_reports};
    let (addr, _) = serve(Fake {
        pods,
        reports: Some(s.clone()),
        ..clean_cluster(Some(Rbac::default()))
    })
    .await;
    let client = client_for(addr);
    let r = collect(client.clone(), &reference()).await.expect("audit");
    let reports = policy_reports(&r, "gitlab-runner-jobs", 1_700_000_000);
    apply_reports(&client, &reports, "gitlab-runner-jobs")
        .await
        .expect("apply")
}

#[tokio::test]
async fn reports_are_updated_in_place_and_removed_with_their_pods() {
    use runner_fence::k8s::audit::Applied;
    let s = store();
    // Reports of another policy, and the single report of an older version.
    let other = json!({"apiVersion": "wgpolicyk8s.io/v1alpha2", "kind": "PolicyReport",
        "metadata": {"name": "runner-fence-pod-other", "namespace": "ci-other",
            "labels": {"app.kubernetes.io/managed-by": "runner-fence", "runner-fence.dev/policy": "other-policy"}},
        "results": []});
    let legacy = json!({"apiVersion": "wgpolicyk8s.io/v1alpha2", "kind": "PolicyReport",
        "metadata": {"name": "runner-fence", "namespace": "gitlab-runner",
            "labels": {"app.kubernetes.io/managed-by": "runner-fence"}},
        "results": []});
    if let Ok(mut m) = s.lock() {
        m.insert(("ci-other".into(), "runner-fence-pod-other".into()), other);
        m.insert(("gitlab-runner".into(), "runner-fence".into()), legacy);
    }
    let mut second = scheduled("plain-job.json", "runner-1");
    second["metadata"]["name"] = json!("runner-second");
    second["metadata"]["uid"] = json!("second-uid");
    let first = scheduled("plain-job.json", "runner-1");
    let done = pass(&s, vec![first.clone(), second.clone()]).await;
    assert_eq!(
        done,
        Applied {
            written: 2,
            unchanged: 0,
            deleted: 1
        },
        "the legacy report goes"
    );
    let names = stored(&s);
    assert_eq!(names.len(), 3, "{names:?}");
    assert!(names.contains(&("gitlab-runner".into(), "runner-fence-pod-second-uid".into())));
    // Nothing changed: nothing written.
    let done = pass(&s, vec![first.clone(), second.clone()]).await;
    assert_eq!(
        done,
        Applied {
            written: 0,
            unchanged: 2,
            deleted: 0
        }
    );
    // The second pod is deleted: its report goes on the next pass; another
    // policy's report stays.
    let done = pass(&s, vec![first.clone()]).await;
    assert_eq!(
        done,
        Applied {
            written: 0,
            unchanged: 1,
            deleted: 1
        }
    );
    let names = stored(&s);
    assert!(
        !names.iter().any(|(_, n)| n.contains("second")),
        "{names:?}"
    );
    assert!(names.contains(&("ci-other".into(), "runner-fence-pod-other".into())));
    // A changed result is written in place.
    let mut bad = first.clone();
    bad["spec"]["tolerations"] = json!([{"operator": "Exists"}]);
    let done = pass(&s, vec![bad]).await;
    assert_eq!(
        done,
        Applied {
            written: 1,
            unchanged: 0,
            deleted: 0
        }
    );
}

#[tokio::test]
async fn a_missing_policyreport_crd_is_one_line_that_says_what_to_install() {
    let (addr, _) = serve(clean_cluster(Some(Rbac::default()))).await;
    let out = audit_cli(addr, &["--output", "policy-report", "--apply"]).await;
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.trim_end(),
        "error: listing policyreports.wgpolicyk8s.io: 404 page not found; install the PolicyReport CRD: kubectl apply -f manifests/extras/policyreport-crd.yaml"
    );
    // With the CRD: written, and said so.
    let (addr, _) = serve(Fake {
        reports: Some(store()),
        ..clean_cluster(Some(Rbac::default()))
    })
    .await;
    let out = audit_cli(addr, &["--output", "policy-report", "--apply"]).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("PolicyReports: 1 written, 0 unchanged, 0 deleted"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
