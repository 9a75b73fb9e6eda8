//! `runner-fence audit` and the server's continuous audit at the scale of a
//! busy CI namespace, on the loopback control plane (`scripts/cluster/`):
//! 2,000 pods in one namespace, one PolicyReport per pod applied to the real
//! apiserver (every object far under etcd's limit), a deleted pod's report
//! removed by the next pass, a pod that cannot be evaluated reported, and a
//! webhook Deployment without Ready replicas reported.
//!
//! Ignored by `cargo test`: it needs the control plane. `bash scripts/e2e.sh`
//! runs it beside tests/e2e.rs on the same cluster; it uses its own
//! namespaces and policy name and removes them at the end.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use common::cluster::{
    BIN, client, free_port, fresh_namespace, kubeconfig, kubectl, kubectl_json, kubectl_ok,
    policy_report_crd, wait_for,
};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};

/// The runner namespace of this suite (no other policy covers it).
const NS: &str = "rf-audit-scale";
/// Where the scaled-down webhook Deployment lives.
const SYSTEM_NS: &str = "rf-audit-system";
const POLICY: &str = "e2e-audit";
const PODS: usize = 2_000;
/// Creations in flight at once.
const CREATE_CONCURRENCY: usize = 16;
/// Every this many pods, one tolerates GitLab's taint (a protected-nodes failure).
const BAD_EVERY: usize = 100;

fn policy_text() -> String {
    let text = runner_fence::core::policy::EMBEDDED_POLICY
        .replacen("name: gitlab-runner-jobs", &format!("name: {POLICY}"), 1)
        .replacen(
            "namespaces: [gitlab-runner]",
            &format!("namespaces: [{NS}]"),
            1,
        );
    let p = runner_fence::core::policy::parse(&text, "e2e-audit.yaml").expect("policy loads");
    assert!(p.matching.covers(NS) && !p.matching.covers("gitlab-runner"));
    text
}

/// A pod of the runner namespace held by a scheduling gate (the scheduler
/// leaves it alone, there is no kubelet: it stays Pending). Every
/// [`BAD_EVERY`]th also tolerates GitLab's taint. No GitLab Runner job labels: the
/// other suite's audits never see these pods as job pods outside their fence.
fn pod(i: usize) -> Pod {
    // Placed as the runner's config.toml places job pods: on the runner nodes.
    let mut tolerations = vec![
        json!({"key": "workload", "operator": "Equal", "value": "gitlab-runner", "effect": "NoSchedule"}),
    ];
    if i.is_multiple_of(BAD_EVERY) {
        tolerations.push(
            json!({"key": "workload", "operator": "Equal", "value": "gitlab", "effect": "NoSchedule"}),
        );
    }
    let spec = json!({
        "schedulingGates": [{"name": "example.com/hold"}],
        "nodeSelector": {"workload": "gitlab-runner"},
        "tolerations": tolerations,
        "containers": [{"name": "build", "image": "alpine:3.20", "command": ["sleep", "1"]}],
    });
    serde_json::from_value(json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("runner-audit-{i:05}"), "namespace": NS},
        "spec": spec}))
    .expect("pod")
}

/// This suite's PolicyReports in [`NS`], by the pod their scope names.
fn stored_reports() -> Vec<Value> {
    kubectl_json(&[
        "-n",
        NS,
        "get",
        "policyreports",
        "-l",
        &format!("runner-fence.dev/policy={POLICY}"),
    ])["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn report_of<'a>(reports: &'a [Value], pod: &str) -> Option<&'a Value> {
    reports.iter().find(|r| r["scope"]["name"] == pod)
}

fn results(report: &Value) -> Vec<(String, String)> {
    report["results"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|x| {
            (
                x["rule"].as_str().unwrap_or("").to_string(),
                x["result"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// `runner-fence audit ARGS --policy P` against the cluster.
fn audit(policy: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .arg("audit")
        .args(args)
        .arg("--policy")
        .arg(policy)
        .env("KUBECONFIG", kubeconfig())
        .output()
        .expect("runner-fence audit runs")
}

/// `runner-fence serve` with a policy file and the continuous audit on.
struct Server {
    child: Child,
    admin: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start(policy: &std::path::Path, interval: u64) -> Server {
        let admin = format!("127.0.0.1:{}", free_port());
        let mut child = Command::new(BIN)
            .arg("serve")
            .arg("--policy")
            .arg(policy)
            .args(["--addr", &format!("127.0.0.1:{}", free_port())])
            .args(["--admin-addr", &admin])
            .args(["--audit-interval-seconds", &interval.to_string()])
            .args(["--audit-page-size", "500", "--audit-page-pause-ms", "50"])
            .env("KUBECONFIG", kubeconfig())
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("runner-fence serve runs");
        // The log: each pass is one line.
        let stderr = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("audit") {
                    println!("serve: {line}");
                }
            }
        });
        Server { child, admin }
    }

    fn metric(&self, name: &str) -> Option<f64> {
        let out = Command::new("curl")
            .args(["-fsS", &format!("http://{}/metrics", self.admin)])
            .output()
            .ok()?;
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
    }
}

async fn create_pods() {
    let api: Api<Pod> = Api::namespaced(client().await, NS);
    let started = Instant::now();
    let failures: Vec<String> = futures::stream::iter(0..PODS)
        .map(|i| {
            let api = api.clone();
            async move {
                api.create(&PostParams::default(), &pod(i))
                    .await
                    .err()
                    .map(|e| format!("pod {i}: {e}"))
            }
        })
        .buffer_unordered(CREATE_CONCURRENCY)
        .filter_map(|r| async move { r })
        .collect()
        .await;
    assert!(failures.is_empty(), "{failures:?}");
    println!(
        "created {PODS} pods in {NS} in {:.1} s ({CREATE_CONCURRENCY} at once)",
        started.elapsed().as_secs_f64()
    );
}

/// The webhook's Service and a Deployment of `replicas` behind it (no
/// kubelet: none ever Ready).
fn webhook_deployment(replicas: i32) {
    let labels = json!({"app.kubernetes.io/name": "rf-audit-webhook"});
    let objects = json!({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": "rf-audit-webhook", "namespace": SYSTEM_NS},
         "spec": {"selector": labels, "ports": [{"port": 443, "targetPort": 8443}]}},
        {"apiVersion": "apps/v1", "kind": "Deployment",
         "metadata": {"name": "rf-audit-webhook", "namespace": SYSTEM_NS},
         "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                  "template": {"metadata": {"labels": labels},
                               "spec": {"containers": [{"name": "runner-fence", "image": "runner-fence:e2e"}]}}}},
    ]});
    kubectl_ok(&["apply", "-f", "-"], Some(&objects.to_string()));
}

fn serving_issues(policy: &std::path::Path) -> Vec<String> {
    let out = audit(
        policy,
        &[
            "--output",
            "json",
            "--webhook-namespace",
            SYSTEM_NS,
            "--webhook-service",
            "rf-audit-webhook",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("audit json");
    report["serving"]["issues"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| i.to_string())
        .collect()
}

#[tokio::test]
#[ignore = "needs the loopback control plane: bash scripts/e2e.sh"]
async fn audit_reports_two_thousand_pods_in_one_namespace_and_keeps_them_current() {
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("tmp");
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, policy_text()).expect("policy");
    fresh_namespace(NS).await;
    fresh_namespace(SYSTEM_NS).await;
    policy_report_crd();
    create_pods().await;

    // 1. The CLI: one report per pod applied, none near etcd's limit; exit 1
    // (the pods tolerating GitLab's taint).
    let t = Instant::now();
    let out = audit(&policy, &["--output", "policy-report", "--apply"]);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    // Every pod's, and those of job pods outside the fence that other suites on the
    // same cluster left (reported in their own namespaces; counted below per namespace).
    let written = stderr
        .lines()
        .find_map(|l| l.strip_prefix("PolicyReports: "))
        // (plus ", N not written (namespace being deleted)" while another suite's
        // namespace is still terminating)
        .and_then(|l| l.split_once(" written, 0 unchanged, 0 deleted"))
        .map(|(n, _)| n)
        .and_then(|n| n.parse::<usize>().ok());
    assert!(written.is_some_and(|n| n >= PODS), "{stderr}");
    println!(
        "audit --apply of {PODS} pods: {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let reports = stored_reports();
    assert_eq!(reports.len(), PODS, "one report per pod, none dropped");
    let mut scopes: Vec<&str> = reports
        .iter()
        .filter_map(|r| r["scope"]["name"].as_str())
        .collect();
    scopes.sort_unstable();
    scopes.dedup();
    assert_eq!(scopes.len(), PODS);
    let largest = reports
        .iter()
        .map(|r| serde_json::to_vec(r).expect("json").len())
        .max()
        .unwrap_or(0);
    println!("largest PolicyReport: {largest} bytes");
    assert!(largest < 1 << 20, "a report of {largest} bytes");
    assert!(
        largest < 64 << 10,
        "per-pod reports stay small: {largest} bytes"
    );
    let bad = report_of(&reports, "runner-audit-00100").expect("report of a bad pod");
    assert!(
        results(bad).contains(&("protected-nodes".into(), "fail".into())),
        "{bad}"
    );
    let good = report_of(&reports, "runner-audit-00001").expect("report of a good pod");
    assert!(!results(good).iter().any(|(_, r)| r == "fail"), "{good}");
    assert_eq!(bad["metadata"]["ownerReferences"][0]["kind"], "Pod");

    // 2. A pod deleted with its dependents orphaned (the garbage collector would
    // otherwise remove its report with it): the next pass of the server's
    // continuous audit removes the report.
    let gone = "runner-audit-00007";
    kubectl_ok(
        &[
            "-n",
            NS,
            "delete",
            "pod",
            gone,
            "--cascade=orphan",
            "--wait=true",
        ],
        None,
    );
    wait_for("the orphaned report to lose its owner", 60, || {
        report_of(&stored_reports(), gone)
            .is_some_and(|r| r["metadata"]["ownerReferences"].is_null())
    })
    .await;
    let server = Server::start(&policy, 3);
    wait_for("the server's first audit pass", 120, || {
        server
            .metric("runner_fence_audit_runs_total{result=\"findings\"}")
            .unwrap_or(0.0)
            >= 1.0
    })
    .await;
    let reports = stored_reports();
    assert!(
        report_of(&reports, gone).is_none(),
        "the deleted pod's report is gone"
    );
    assert_eq!(reports.len(), PODS - 1);
    assert_eq!(
        server.metric("runner_fence_audit_pods_checked "),
        Some((PODS - 1) as f64)
    );
    assert_eq!(
        server.metric("runner_fence_audit_findings{rule=\"protected-nodes\"}"),
        Some((PODS / BAD_EVERY) as f64)
    );
    assert_eq!(
        server.metric("runner_fence_audit_interval_seconds "),
        Some(3.0)
    );
    println!(
        "server pass: {:.1} s",
        server
            .metric("runner_fence_audit_duration_seconds ")
            .unwrap_or(-1.0)
    );
    drop(server);

    // 3. A pod the engine cannot evaluate (the apiserver stores only valid
    // pods, so one is made so between the read and the judging, as a pod of a
    // newer Kubernetes could be): an `unreadable` finding and an `error`
    // result in its report, written to the real apiserver, never dropped.
    let policy_obj = runner_fence::core::policy::parse(&policy_text(), "p").expect("policy");
    let c = client().await;
    let opts = runner_fence::k8s::audit::Options::default();
    let mut inputs = runner_fence::k8s::audit::read(c.clone(), &policy_obj, &opts)
        .await
        .expect("read");
    let odd = "runner-audit-00042";
    let p = inputs
        .pods
        .iter_mut()
        .find(|p| p["metadata"]["name"] == odd)
        .expect("the pod is listed");
    p["spec"]["tolerations"] = json!("not a list");
    let report = runner_fence::k8s::audit::analyze(&policy_obj, &inputs);
    assert!(report.has_violations(), "audit exits 1 on it");
    let u = report
        .unreadable
        .iter()
        .find(|u| u.what == format!("pod {NS}/{odd}"))
        .expect("the pod is an unreadable finding");
    assert!(u.to_string().contains("spec.tolerations"), "{u}");
    assert!(!report.job_pods.iter().any(|p| p.name == odd));
    let objects = runner_fence::k8s::audit::build_reports(&report, POLICY, 1).expect("built");
    let applied = runner_fence::k8s::audit::apply_reports(&c, &objects, POLICY)
        .await
        .expect("apply");
    assert_eq!((applied.written, applied.deleted), (1, 0), "{applied:?}");
    let reports = stored_reports();
    let r = report_of(&reports, odd).expect("its report");
    assert_eq!(
        results(r),
        vec![("unreadable".to_string(), "error".to_string())]
    );

    // 4. The webhook Deployment: none of its replicas Ready, then scaled to 0.
    webhook_deployment(2);
    wait_for("the Deployment to be observed", 30, || {
        kubectl_json(&["-n", SYSTEM_NS, "get", "deployment", "rf-audit-webhook"])["status"]
            ["observedGeneration"]
            .as_i64()
            .is_some()
    })
    .await;
    let issues = serving_issues(&policy);
    assert!(
        issues
            .iter()
            .any(|i| i.contains("has 0 of 2 replicas Ready")),
        "{issues:?}"
    );
    kubectl_ok(
        &[
            "-n",
            SYSTEM_NS,
            "scale",
            "deployment",
            "rf-audit-webhook",
            "--replicas=0",
        ],
        None,
    );
    let issues = serving_issues(&policy);
    assert!(
        issues.iter().any(|i| i.contains("is scaled to 0 replicas")),
        "{issues:?}"
    );

    for ns in [NS, SYSTEM_NS] {
        let _ = kubectl(&["delete", "namespace", ns, "--wait=false"], None);
    }
    println!("e2e_audit: {:.1} s", started.elapsed().as_secs_f64());
}
