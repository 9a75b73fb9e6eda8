//! The Helm chart (charts/runner-fence) rendered by a real Helm, built from its Go
//! module by `scripts/tools/helm.sh` (cached in ~/.cache/runner-fence; the first run
//! on a machine builds it, which needs Go and the module proxy).
//!
//! The chart installs the policy controller (`serve --policies-from-cluster`): no
//! policy, webhook configuration or backstop is rendered by Helm, so `helm install`
//! needs no runner-fence CLI. These tests hold it to what the controller needs: the
//! RBAC names exactly the objects it writes, names derive from the release, the
//! optional initial policy loads with the one loader, and uninstall cleans up.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use rstest::rstest;
use runner_fence::core::render::cluster;
use serde_json::{Value, json};

mod common;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn chart() -> PathBuf {
    root().join("charts/runner-fence")
}

/// The helm binary (built once per machine).
fn helm() -> &'static Path {
    static HELM: OnceLock<PathBuf> = OnceLock::new();
    HELM.get_or_init(|| {
        if let Ok(p) = std::env::var("RUNNER_FENCE_HELM") {
            return PathBuf::from(p);
        }
        common::cached_tool("scripts/tools/helm.sh")
    })
}

/// `helm template RELEASE` in `namespace` with a values file and `--set` pairs: the
/// objects (hooks included), or Helm's error text.
fn template_release(
    release: &str,
    namespace: &str,
    values: Option<&str>,
    set: &[&str],
) -> Result<Vec<Value>, String> {
    let dir = tempfile::tempdir().expect("tmp");
    let mut cmd = Command::new(helm());
    cmd.args(["template", release]).arg(chart()).args([
        "--namespace",
        namespace,
        "--kube-version",
        "1.33.0",
    ]);
    if let Some(v) = values {
        let f = dir.path().join("values.yaml");
        std::fs::write(&f, v).expect("write values");
        cmd.arg("-f").arg(f);
    }
    for s in set {
        cmd.args(["--set", s]);
    }
    let out = cmd.output().expect("run helm");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text).expect("helm output is YAML");
    Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
}

fn template(namespace: &str, values: Option<&str>, set: &[&str]) -> Result<Vec<Value>, String> {
    template_release("runner-fence", namespace, values, set)
}

fn find<'a>(objs: &'a [Value], kind: &str) -> &'a Value {
    objs.iter()
        .find(|o| o["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in the chart output"))
}

fn kinds(objs: &[Value]) -> Vec<String> {
    let mut k: Vec<String> = objs
        .iter()
        .map(|o| o["kind"].as_str().unwrap_or("?").to_string())
        .collect();
    k.sort();
    k
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn is_hook(o: &Value) -> bool {
    o["metadata"]["annotations"]["helm.sh/hook"].is_string()
}

fn container(objs: &[Value]) -> &Value {
    &find(objs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
}

fn env(c: &Value) -> BTreeMap<String, Value> {
    c["env"]
        .as_array()
        .expect("env")
        .iter()
        .map(|e| {
            let v = e
                .get("value")
                .cloned()
                .unwrap_or_else(|| e["valueFrom"].clone());
            (e["name"].as_str().unwrap_or("").to_string(), v)
        })
        .collect()
}

/// The initial policy values: the reference policy's spec.
fn initial_policy_values() -> String {
    let object: Value =
        serde_saphyr::from_str(&read("examples/runnerfencepolicy.yaml")).expect("yaml");
    serde_json::to_string(&json!({"initialPolicy": {
        "enabled": true, "name": "gitlab-runner-jobs", "spec": object["spec"]}}))
    .expect("json")
}

#[test]
fn defaults_install_the_controller_with_everything_a_webhook_needs() {
    let objs = template("runner-fence", None, &[]).expect("template");
    let release: Vec<Value> = objs.iter().filter(|o| !is_hook(o)).cloned().collect();
    assert_eq!(
        kinds(&release),
        [
            "ClusterRole",
            "ClusterRole",
            "ClusterRoleBinding",
            "ClusterRoleBinding",
            "Deployment",
            "PodDisruptionBudget",
            "Role",
            "Role",
            "Role",
            "RoleBinding",
            "RoleBinding",
            "RoleBinding",
            "Service",
            "ServiceAccount",
        ],
        "the controller's RBAC, the continuous audit's (ClusterRole and Role \
         runner-fence-audit) and the events Role"
    );
    // What runner-fence applies itself is never Helm's.
    for kind in cluster::KINDS
        .iter()
        .chain(&["ConfigMap", "Secret", "RunnerFencePolicy"])
    {
        assert!(
            !objs.iter().any(|o| o["kind"] == *kind),
            "{kind} rendered by Helm"
        );
    }
    let c = container(&objs);
    assert_eq!(
        c["args"],
        json!([
            "serve",
            "--policies-from-cluster",
            "--node-cache",
            "--manage-certificates"
        ])
    );
    let e = env(c);
    assert_eq!(e["RUNNER_FENCE_RELEASE"], "runner-fence");
    assert_eq!(e["RUNNER_FENCE_NAMESPACE"], "runner-fence");
    assert_eq!(e["RUNNER_FENCE_SERVICE"], "runner-fence");
    assert_eq!(
        e["RUNNER_FENCE_POD_NAME"],
        json!({"fieldRef": {"fieldPath": "metadata.name"}})
    );
    // failurePolicy as the served policies' modes decide, unless set.
    assert!(!e.contains_key("RUNNER_FENCE_MUTATE_FAILURE_POLICY"));
    let fixed =
        template("runner-fence", None, &["webhooks.failurePolicy=Ignore"]).expect("template");
    assert_eq!(
        env(container(&fixed))["RUNNER_FENCE_VALIDATE_FAILURE_POLICY"],
        "ignore"
    );
    assert!(
        c.get("volumeMounts").is_none(),
        "managed certificates are read from the API"
    );
    // Every flag the chart sets is one `serve` knows.
    let out = Command::new(env!("CARGO_BIN_EXE_runner-fence"))
        .args(["serve", "--help"])
        .output()
        .expect("runs");
    let help = String::from_utf8_lossy(&out.stdout);
    for name in e.keys() {
        assert!(help.contains(name.as_str()), "serve has no {name}");
    }
    let d = find(&objs, "Deployment");
    assert!(d["spec"]["replicas"].as_i64() >= Some(2));
    let pod = &d["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(c["securityContext"]["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(
        c["image"],
        format!(
            "registry.gitlab.com/runner-fence/runner-fence:{}",
            env!("CARGO_PKG_VERSION")
        )
    );
    let svc = find(&objs, "Service");
    for (k, v) in svc["spec"]["selector"].as_object().expect("selector") {
        assert_eq!(&d["spec"]["template"]["metadata"]["labels"][k], v);
    }
    assert_eq!(svc["metadata"]["name"], "runner-fence");
    let pdb = find(&objs, "PodDisruptionBudget");
    assert_eq!(pdb["spec"]["minAvailable"], 1);
}

/// The ClusterRole's resourceNames per admissionregistration resource.
fn generated_names(role: &Value) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in role["rules"].as_array().expect("rules") {
        if r["apiGroups"] != json!(["admissionregistration.k8s.io"]) {
            continue;
        }
        for res in r["resources"].as_array().into_iter().flatten() {
            let names = r["resourceNames"].as_array().expect("by name only");
            out.entry(res.as_str().unwrap_or("").to_string())
                .or_default()
                .extend(names.iter().filter_map(Value::as_str).map(String::from));
        }
    }
    out
}

#[rstest]
#[case::default_release("runner-fence")]
#[case::second_release("rf-team-b")]
fn rbac_names_exactly_the_objects_the_controller_writes(#[case] release: &str) {
    let objs = template_release(release, "fence", None, &[]).expect("template");
    use k8s_openapi::Resource as _;
    use k8s_openapi::api::admissionregistration::v1 as ar;
    let plural = |kind: &str| {
        match kind {
            "MutatingWebhookConfiguration" => ar::MutatingWebhookConfiguration::URL_PATH_SEGMENT,
            "ValidatingWebhookConfiguration" => {
                ar::ValidatingWebhookConfiguration::URL_PATH_SEGMENT
            }
            "ValidatingAdmissionPolicy" => ar::ValidatingAdmissionPolicy::URL_PATH_SEGMENT,
            _ => ar::ValidatingAdmissionPolicyBinding::URL_PATH_SEGMENT,
        }
        .to_string()
    };
    let mut want: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for id in cluster::all_names(release) {
        want.entry(plural(id.kind)).or_default().push(id.name);
    }
    let audit = |o: &Value| o["metadata"]["name"] == format!("{release}-audit");
    for role in objs
        .iter()
        .filter(|o| o["kind"] == "ClusterRole" && !audit(o))
    {
        let mut got = generated_names(role);
        for v in got.values_mut() {
            v.sort();
            v.dedup();
        }
        for v in want.values_mut() {
            v.sort();
            v.dedup();
        }
        assert_eq!(got, want, "{}", role["metadata"]["name"]);
        // And nothing cluster-wide beyond the policies and Nodes.
        for r in role["rules"].as_array().expect("rules") {
            let group = r["apiGroups"][0].as_str().unwrap_or("");
            assert!(
                ["admissionregistration.k8s.io", "runner-fence.dev", ""].contains(&group),
                "{r}"
            );
            if group.is_empty() {
                assert_eq!(r["resources"], json!(["nodes"]), "{r}");
                assert_eq!(r["verbs"], json!(["get", "list", "watch"]), "{r}");
            }
        }
    }
    // The Lease and the Secret the controller uses, by name, in its namespace.
    let role = objs
        .iter()
        .find(|o| {
            o["kind"] == "Role" && o["metadata"]["namespace"] == "fence" && !is_hook(o) && !audit(o)
        })
        .expect("namespace Role");
    let text = role["rules"].to_string();
    assert!(
        text.contains(&format!("{release}-controller")) && text.contains(&format!("{release}-tls")),
        "{text}"
    );
}

/// The rules of the release's `KIND` named `NAME`, as `(apiGroup, resource, verbs, resourceNames)`.
fn rules_of(objs: &[Value], kind: &str, name: &str) -> Vec<(String, String, Value, Value)> {
    let role = objs
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"));
    let mut out = Vec::new();
    for r in role["rules"].as_array().expect("rules") {
        for g in r["apiGroups"].as_array().into_iter().flatten() {
            for res in r["resources"].as_array().into_iter().flatten() {
                out.push((
                    g.as_str().unwrap_or("").to_string(),
                    res.as_str().unwrap_or("").to_string(),
                    r["verbs"].clone(),
                    r.get("resourceNames").cloned().unwrap_or(Value::Null),
                ));
            }
        }
    }
    out.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    out
}

#[test]
fn the_continuous_audit_reads_what_audit_reads_and_writes_only_policy_reports() {
    let objs = template_release("rf-b", "fence", None, &[]).expect("template");
    let read = json!(["get", "list"]);
    let list = json!(["list"]);
    let want = |reports: bool| {
        let mut w = vec![
            ("", "nodes", read.clone()),
            ("", "pods", read.clone()),
            ("", "serviceaccounts", read.clone()),
            (
                "admissionregistration.k8s.io",
                "mutatingwebhookconfigurations",
                list.clone(),
            ),
            (
                "admissionregistration.k8s.io",
                "validatingwebhookconfigurations",
                list.clone(),
            ),
            (
                "rbac.authorization.k8s.io",
                "clusterrolebindings",
                list.clone(),
            ),
            ("rbac.authorization.k8s.io", "clusterroles", list.clone()),
            ("rbac.authorization.k8s.io", "rolebindings", list.clone()),
            ("rbac.authorization.k8s.io", "roles", list.clone()),
        ];
        if reports {
            w.push((
                "wgpolicyk8s.io",
                "policyreports",
                json!(["get", "list", "create", "patch", "delete"]),
            ));
        }
        w.into_iter()
            .map(|(g, r, v)| (g.to_string(), r.to_string(), v, Value::Null))
            .collect::<Vec<_>>()
    };
    assert_eq!(rules_of(&objs, "ClusterRole", "rf-b-audit"), want(true));
    // In the release namespace: the webhook's own Service by name, its
    // Deployments and EndpointSlices.
    assert_eq!(
        rules_of(&objs, "Role", "rf-b-audit"),
        vec![
            (
                "".into(),
                "services".into(),
                json!(["get"]),
                json!(["rf-b"])
            ),
            (
                "apps".into(),
                "deployments".into(),
                list.clone(),
                Value::Null
            ),
            (
                "discovery.k8s.io".into(),
                "endpointslices".into(),
                list.clone(),
                Value::Null
            ),
        ]
    );
    for kind in ["ClusterRoleBinding", "RoleBinding"] {
        let b = objs
            .iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == "rf-b-audit")
            .unwrap_or_else(|| panic!("no {kind}"));
        assert_eq!(
            b["subjects"],
            json!([{"kind": "ServiceAccount", "name": "rf-b", "namespace": "fence"}])
        );
        assert_eq!(b["roleRef"]["name"], "rf-b-audit");
    }
    let vars = env(container(&objs));
    assert_eq!(vars["RUNNER_FENCE_AUDIT_INTERVAL_SECONDS"], json!("300"));
    assert_eq!(vars["RUNNER_FENCE_AUDIT_PAGE_SIZE"], json!("500"));
    assert_eq!(vars["RUNNER_FENCE_AUDIT_PAGE_PAUSE_MS"], json!("100"));
    assert!(!vars.contains_key("RUNNER_FENCE_AUDIT_NO_REPORTS"));

    let metrics_only =
        template_release("rf-b", "fence", None, &["audit.policyReports=false"]).expect("template");
    assert_eq!(
        rules_of(&metrics_only, "ClusterRole", "rf-b-audit"),
        want(false)
    );
    assert_eq!(
        env(container(&metrics_only))["RUNNER_FENCE_AUDIT_NO_REPORTS"],
        json!("true")
    );

    let off =
        template_release("rf-b", "fence", None, &["audit.intervalSeconds=0"]).expect("template");
    assert!(
        !off.iter().any(|o| o["metadata"]["name"] == "rf-b-audit"),
        "no audit RBAC when it is off"
    );
    assert_eq!(
        env(container(&off))["RUNNER_FENCE_AUDIT_INTERVAL_SECONDS"],
        json!("0"),
        "0 is passed on: the server's own default in cluster mode is 300"
    );
    let err = template_release("rf-b", "fence", None, &["audit.pageSize=0"]).expect_err("schema");
    assert!(err.contains("pageSize"), "{err}");
}

#[test]
fn two_releases_share_no_cluster_scoped_name() {
    let names = |release: &str| -> Vec<String> {
        template_release(release, "fence", None, &[])
            .expect("template")
            .iter()
            .filter(|o| {
                matches!(
                    o["kind"].as_str(),
                    Some("ClusterRole" | "ClusterRoleBinding")
                ) || o["metadata"]["namespace"] == "default"
            })
            .map(|o| format!("{}/{}", o["kind"], o["metadata"]["name"]))
            .collect()
    };
    let (a, b) = (names("rf-a"), names("rf-b"));
    assert!(!a.is_empty());
    assert!(a.iter().all(|n| !b.contains(n)), "{a:?} {b:?}");
    let long = "r".repeat(41);
    let err = template_release(&long, "fence", None, &[]).expect_err("too long");
    assert!(err.contains("at most 40"), "{err}");
}

#[test]
fn the_initial_policy_is_created_once_and_loads_with_the_one_loader() {
    let objs = template("runner-fence", Some(&initial_policy_values()), &[]).expect("template");
    let p = find(&objs, "RunnerFencePolicy");
    assert_eq!(p["metadata"]["annotations"]["helm.sh/hook"], "pre-install");
    let text = serde_json::to_string_pretty(p).expect("json");
    let loaded =
        runner_fence::core::policy::parse(&text, "chart").expect("the chart's policy loads");
    let reference = runner_fence::core::policy::embedded().expect("reference");
    assert_eq!(loaded.content_hash(), reference.content_hash());
    // The values schema is the CRD's: a bad enum is refused by Helm already.
    let err = template(
        "runner-fence",
        Some(&initial_policy_values()),
        &["initialPolicy.spec.mode=block"],
    )
    .expect_err("bad mode");
    assert!(err.contains("initialPolicy/spec"), "{err}");
    let err = template("runner-fence", None, &["initialPolicy.enabled=true"]).expect_err("empty");
    assert!(err.contains("initialPolicy.spec is empty"), "{err}");
}

#[test]
fn the_values_schema_embeds_the_crd_spec_schema() {
    let schema: Value =
        serde_json::from_str(&read("charts/runner-fence/values.schema.json")).expect("schema JSON");
    let spec = runner_fence::core::render::crd::spec_schema().expect("spec schema");
    assert_eq!(
        schema["properties"]["initialPolicy"]["properties"]["spec"]["anyOf"][1],
        spec,
        "values.schema.json's initialPolicy.spec differs from the CRD's spec schema; run `{}`",
        runner_fence::core::render::generated::REGEN
    );
}

#[test]
fn cert_manager_and_an_existing_secret_serve_the_mounted_pair_and_its_ca() {
    let objs =
        template("runner-fence", None, &["certificates.mode=certManager"]).expect("template");
    let serving = objs
        .iter()
        .find(|c| c["kind"] == "Certificate" && c["metadata"]["name"] == "runner-fence-serving")
        .expect("serving certificate");
    assert_eq!(
        serving["spec"]["dnsNames"],
        json!([
            "runner-fence.runner-fence.svc",
            "runner-fence.runner-fence.svc.cluster.local"
        ])
    );
    let c = container(&objs);
    assert!(!c["args"].to_string().contains("--manage-certificates"));
    let e = env(c);
    assert_eq!(e["RUNNER_FENCE_CA_BUNDLE"], "/etc/runner-fence/tls/ca.crt");
    assert_eq!(e["RUNNER_FENCE_TLS_CERT"], "/etc/runner-fence/tls/tls.crt");
    let pod = &find(&objs, "Deployment")["spec"]["template"]["spec"];
    assert_eq!(
        pod["volumes"][0]["secret"]["secretName"],
        serving["spec"]["secretName"]
    );
    assert_eq!(c["volumeMounts"][0]["mountPath"], "/etc/runner-fence/tls");
    let err =
        template("runner-fence", None, &["certificates.mode=existingSecret"]).expect_err("no name");
    assert!(err.contains("certificates.existingSecret.name"), "{err}");
    let objs = template(
        "runner-fence",
        None,
        &[
            "certificates.mode=existingSecret",
            "certificates.existingSecret.name=corp-tls",
        ],
    )
    .expect("template");
    assert!(!objs.iter().any(|o| o["kind"] == "Certificate"));
    assert_eq!(
        find(&objs, "Deployment")["spec"]["template"]["spec"]["volumes"][0]["secret"]["secretName"],
        "corp-tls"
    );
}

#[rstest]
#[case::one_replica(&["replicaCount=1"], "replicaCount")]
#[case::timeout(&["webhooks.timeoutSeconds=10"], "timeoutSeconds")]
#[case::failure_policy(&["webhooks.failurePolicy=Maybe"], "failurePolicy")]
#[case::cert_mode(&["certificates.mode=selfmade"], "certificates")]
#[case::shutdown_longer_than_grace(&["drainSeconds=30"], "terminationGracePeriodSeconds")]
#[case::unknown_value(&["webhook.failurePolicy=Ignore"], "webhook")]
#[case::old_values(&["policy.mode=audit"], "policy")]
fn bad_values_are_refused_with_the_reason(#[case] set: &[&str], #[case] says: &str) {
    match template("runner-fence", None, set) {
        Ok(objs) => panic!("{set:?} was accepted: {:?}", kinds(&objs)),
        Err(err) => assert!(err.contains(says), "{err}"),
    }
}

#[test]
fn uninstall_runs_after_the_replicas_are_gone_with_its_own_rbac() {
    let objs = template_release("rf-x", "fence", None, &[]).expect("template");
    let hooks: Vec<&Value> = objs.iter().filter(|o| is_hook(o)).collect();
    assert!(
        hooks
            .iter()
            .all(|h| h["metadata"]["annotations"]["helm.sh/hook"] == "post-delete")
    );
    let job = hooks
        .iter()
        .find(|h| h["kind"] == "Job")
        .expect("uninstall Job");
    let pod = &job["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "rf-x-uninstall");
    // It waits out the replicas' grace period and the lease before deleting.
    assert_eq!(
        pod["containers"][0]["args"],
        json!([
            "uninstall",
            "--release",
            "rf-x",
            "--namespace",
            "fence",
            "--lease-seconds",
            "45"
        ])
    );
    let mut hook_kinds: Vec<&str> = hooks.iter().filter_map(|h| h["kind"].as_str()).collect();
    hook_kinds.sort_unstable();
    assert_eq!(
        hook_kinds,
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "Job",
            "Role",
            "RoleBinding",
            "ServiceAccount"
        ]
    );
    // The verb exists with those flags.
    let out = Command::new(env!("CARGO_BIN_EXE_runner-fence"))
        .args(["uninstall", "--help"])
        .output()
        .expect("runs");
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in ["--release", "--namespace", "--lease-seconds"] {
        assert!(help.contains(flag), "{help}");
    }
}

#[test]
fn the_chart_and_the_binary_are_one_version() {
    let chart: Value =
        serde_saphyr::from_str(&read("charts/runner-fence/Chart.yaml")).expect("yaml");
    assert_eq!(chart["appVersion"], env!("CARGO_PKG_VERSION"));
}

#[test]
fn scheduling_and_monitoring_values_reach_the_objects() {
    let objs = template(
        "runner-fence",
        None,
        &[
            "tolerations[0].key=dedicated",
            "tolerations[0].operator=Equal",
            "tolerations[0].value=gitlab",
            "tolerations[0].effect=NoSchedule",
            "nodeSelector.role=system",
            "priorityClassName=platform-critical",
            "replicaCount=3",
            "metrics.serviceMonitor.enabled=true",
            "metrics.prometheusRule.enabled=true",
            "metrics.grafanaDashboard.enabled=true",
        ],
    )
    .expect("template");
    let pod = &find(&objs, "Deployment")["spec"]["template"]["spec"];
    assert_eq!(
        pod["tolerations"],
        json!([{"key": "dedicated", "operator": "Equal", "value": "gitlab", "effect": "NoSchedule"}])
    );
    assert_eq!(pod["nodeSelector"], json!({"role": "system"}));
    assert_eq!(pod["priorityClassName"], "platform-critical");
    // A hand-written nodeAffinity requirement replaces the default one.
    let own = template(
        "runner-fence",
        None,
        &["affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].key=role",
          "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].operator=Exists"],
    )
    .expect("template");
    let aff = &find(&own, "Deployment")["spec"]["template"]["spec"]["affinity"];
    assert_eq!(
        aff["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"],
        json!([{"matchExpressions": [{"key": "role", "operator": "Exists"}]}])
    );
    assert!(aff.get("podAntiAffinity").is_some());
    // Preferences of one's own keep the default requirement (off runner nodes and Fargate).
    let pref = template(
        "runner-fence",
        None,
        &["affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].weight=10",
          "affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].preference.matchExpressions[0].key=spot",
          "affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].preference.matchExpressions[0].operator=DoesNotExist"],
    )
    .expect("template");
    let na = &find(&pref, "Deployment")["spec"]["template"]["spec"]["affinity"]["nodeAffinity"];
    let terms =
        na["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"].to_string();
    assert!(
        terms.contains("gitlab-runner") && terms.contains("fargate"),
        "{terms}"
    );
    assert_eq!(
        na["preferredDuringSchedulingIgnoredDuringExecution"][0]["weight"],
        10
    );
    assert_eq!(find(&objs, "Deployment")["spec"]["replicas"], 3);

    let sm = find(&objs, "ServiceMonitor");
    assert_eq!(sm["spec"]["endpoints"][0]["port"], "admin");
    assert_eq!(sm["spec"]["endpoints"][0]["honorLabels"], true);
    let rules: Value =
        serde_saphyr::from_str(&read("charts/runner-fence/files/prometheus-rules.yaml"))
            .expect("rules");
    assert_eq!(find(&objs, "PrometheusRule")["spec"], rules);
    let dash = objs
        .iter()
        .find(|o| o["kind"] == "ConfigMap" && o["metadata"]["labels"]["grafana_dashboard"] == "1")
        .expect("dashboard ConfigMap");
    let json: Value =
        serde_json::from_str(dash["data"]["runner-fence.json"].as_str().expect("json"))
            .expect("dashboard JSON");
    assert_eq!(json["uid"], "runner-fence");
}

#[test]
fn helm_lint_is_clean_for_every_mode() {
    let dir = tempfile::tempdir().expect("tmp");
    let initial = dir.path().join("initial.yaml");
    std::fs::write(&initial, initial_policy_values()).expect("write");
    for extra in [
        vec![],
        vec!["-f".to_string(), initial.display().to_string()],
        vec!["--set".into(), "certificates.mode=certManager".into()],
        vec![
            "--set".into(),
            "webhooks.failurePolicy=Ignore,nodeCache.enabled=false,metrics.serviceMonitor.enabled=true".into(),
        ],
    ] {
        let out = Command::new(helm())
            .args([
                "lint",
                "--strict",
                "--namespace",
                "runner-fence",
                "--kube-version",
                "1.33.0",
            ])
            .arg(chart())
            .args(&extra)
            .output()
            .expect("helm lint");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "helm lint {extra:?}:\n{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains("0 chart(s) failed"), "{text}");
        // Quiet: no template failure or warning lines (the bare chart needs no values).
        assert!(
            !text.contains("Fail") && !text.contains("[WARNING]") && !text.contains("[ERROR]"),
            "helm lint {extra:?} is not quiet:\n{text}"
        );
    }
}

/// The image's entrypoint is the binary alone (tests/release.rs), so each container's
/// args are a command line of it: the Deployment's must be `serve ...`, the uninstall
/// hook's `uninstall ...`, and both must parse (a verb in the wrong place fails here,
/// not in the cluster at `helm uninstall`).
#[test]
fn every_container_the_chart_runs_is_a_command_line_of_the_binary() {
    let objs = template("runner-fence", None, &[]).expect("template");
    let mut seen = Vec::new();
    for o in objs
        .iter()
        .filter(|o| o["kind"] == "Deployment" || o["kind"] == "Job")
    {
        let c = &o["spec"]["template"]["spec"]["containers"][0];
        assert!(
            c.get("command").is_none(),
            "{}: overrides the entrypoint",
            o["metadata"]["name"]
        );
        let args: Vec<&str> = c["args"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let out = Command::new(env!("CARGO_BIN_EXE_runner-fence"))
            .args(&args)
            .arg("--help")
            .output()
            .expect("runs");
        assert!(
            out.status.success(),
            "{} {}: runner-fence {args:?} does not parse: {}",
            o["kind"],
            o["metadata"]["name"],
            String::from_utf8_lossy(&out.stderr)
        );
        seen.push(args.first().copied().unwrap_or_default().to_string());
    }
    seen.sort();
    assert_eq!(seen, ["serve", "uninstall"]);
}
