//! `runner-fence audit` against an HTTP-level fake of the Kubernetes API on 127.0.0.1.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::extract::{Query, State};
use axum::routing::get;
use common::{fixture, reference};
use serde_json::{Value, json};

fn node(name: &str, workload: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": {"workload": workload}},
        "spec": {"taints": [{"key": "workload", "value": workload, "effect": "NoSchedule"}]}})
}

fn scheduled(fixture_name: &str, node: &str) -> Value {
    let mut pod = fixture(fixture_name)["request"]["object"].clone();
    pod["spec"]["nodeName"] = json!(node);
    pod["metadata"]["namespace"] = json!("gitlab-runner");
    if pod["metadata"]["name"].as_str().unwrap_or("").is_empty() {
        pod["metadata"]["name"] = json!("gitlab-runner-7d9f8b6c5d-q8kzv");
    }
    pod
}

#[derive(Default)]
struct Calls {
    node_pages: AtomicUsize,
}

fn list(kind: &str, items: Vec<Value>, cont: Option<&str>) -> axum::Json<Value> {
    axum::Json(json!({"apiVersion": "v1", "kind": kind,
        "metadata": {"resourceVersion": "7", "continue": cont.unwrap_or("")}, "items": items}))
}

async fn nodes(
    State(c): State<Arc<Calls>>,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> axum::Json<Value> {
    c.node_pages.fetch_add(1, Ordering::SeqCst);
    // Two pages, to prove the continue token is followed.
    match q.get("continue").map(String::as_str) {
        Some("page2") => list("NodeList", vec![node("runner-1", "gitlab-runner")], None),
        _ => list("NodeList", vec![node("gitlab-1", "gitlab")], Some("page2")),
    }
}

async fn pods() -> axum::Json<Value> {
    list(
        "PodList",
        vec![
            scheduled("plain-job.json", "runner-1"),
            scheduled("job-with-toleration-overwrite.json", "gitlab-1"),
            scheduled("runner-manager-pod.json", "gitlab-1"),
        ],
        None,
    )
}

async fn mwcs() -> axum::Json<Value> {
    list(
        "MutatingWebhookConfigurationList",
        vec![
            // The mutating configuration exactly as `render webhooks` generates it.
            generated_mutating(),
            json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": "0500-amazon-eks-fargate-mutation.amazonaws.com"},
            "webhooks": [{"name": "0500-amazon-eks-fargate-mutation.amazonaws.com", "admissionReviewVersions": ["v1"], "sideEffects": "None",
                "clientConfig": {"url": "https://127.0.0.1:23443/mutate"}}]}),
        ],
        None,
    )
}

async fn vwcs() -> axum::Json<Value> {
    list(
        "ValidatingWebhookConfigurationList",
        vec![
            json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": "runner-fence"},
            // Hand-broken the old way: a pod-name filter, no bindings or ephemeral
            // containers, fail-open.
            "webhooks": [{"name": "pods.validate.runner-fence.dev", "admissionReviewVersions": ["v1"], "sideEffects": "None",
                "failurePolicy": "Ignore", "clientConfig": {"service": {"name": "runner-fence", "namespace": "runner-fence", "path": "/validate"}},
                "rules": [{"operations": ["CREATE", "UPDATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]},
                          {"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods/binding"]}],
                "namespaceSelector": {"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["gitlab-runner"]}]},
                "matchConditions": [{"name": "runner-job-pod-name", "expression": "object.metadata.name.startsWith('runner-')"}]}]}),
        ],
        None,
    )
}

fn generated_mutating() -> Value {
    use runner_fence::core::render::webhooks::{Options, configurations};
    let mut opts = Options::service("runner-fence", "runner-fence");
    opts.ca_bundle = Some(b"-----BEGIN CERTIFICATE-----\n".to_vec());
    let (m, _) = configurations(&reference(), &opts).expect("render");
    let mut v = serde_json::to_value(m).expect("json");
    v["apiVersion"] = json!("admissionregistration.k8s.io/v1");
    v["kind"] = json!("MutatingWebhookConfiguration");
    v
}

fn client_for(addr: std::net::SocketAddr) -> kube::Client {
    kube::Client::try_from(kube::Config::new(
        format!("http://{addr}").parse().expect("url"),
    ))
    .expect("client")
}

async fn fake_api() -> (std::net::SocketAddr, Arc<Calls>) {
    let calls = Arc::new(Calls::default());
    let app = Router::new()
        .route("/api/v1/nodes", get(nodes))
        .route("/api/v1/namespaces/gitlab-runner/pods", get(pods))
        .route(
            "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations",
            get(mwcs),
        )
        .route(
            "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations",
            get(vwcs),
        )
        .with_state(calls.clone());
    let addr = common::serve_fake(app).await;
    (addr, calls)
}

#[tokio::test]
async fn audit_finds_job_pods_on_gitlab_nodes_and_what_the_policy_would_do() {
    let (addr, calls) = fake_api().await;
    let client = client_for(addr);
    let r = runner_fence::k8s::audit::collect(client, &reference())
        .await
        .expect("audit");
    assert_eq!(
        calls.node_pages.load(Ordering::SeqCst),
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
    assert_eq!(r.job_pods.len(), 3, "{:?}", r.job_pods);
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

#[tokio::test]
async fn audit_command_exit_codes_and_json() {
    let (addr, _) = fake_api().await;
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
    let kc = kubeconfig.to_str().unwrap_or("").to_string();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(bin)
            .args(["audit", "--kubeconfig", &kc, "--output", "json"])
            .output()
    })
    .await
    .expect("join")
    .expect("runs");
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["protected_nodes"][0]["name"], "gitlab-1");
    assert_eq!(v["job_pods"].as_array().map(Vec::len), Some(3));
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
    assert_eq!(reports.len(), 1, "one report per runner namespace");
    let validator = jsonschema::validator_for(&policy_report_schema()).expect("schema");
    for rep in &reports {
        let errors: Vec<String> = validator.iter_errors(rep).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{errors:?}\n{rep}");
    }
    let rep = &reports[0];
    assert_eq!(rep["metadata"]["namespace"], "gitlab-runner");
    let results = rep["results"].as_array().expect("results");
    // One result per pod and rule.
    assert_eq!(results.len(), r.job_pods.len() * 5);
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
    let r = runner_fence::k8s::audit::analyze(&policy, &[], &[pod], vec![], false);
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
