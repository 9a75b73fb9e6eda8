//! The Helm chart (charts/runner-fence) rendered by a real Helm, built from its Go
//! module by `scripts/tools/helm.sh` (cached in ~/.cache/runner-fence; the first run
//! on a machine builds it, which needs Go and the module proxy).
//!
//! What is generated from the policy comes from runner-fence itself
//! (`render helm-values`); these tests hold the chart to that: its webhook
//! configurations and backstop equal `render webhooks` / `render admission-policy`
//! for the same policy, and it refuses values whose parts disagree.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use rstest::rstest;
use runner_fence::core::render::{admission_policy, helm_values, webhooks};
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

/// `helm template` in `namespace` with a values file and `--set` pairs: the
/// objects, or Helm's error text.
fn template(namespace: &str, values: Option<&str>, set: &[&str]) -> Result<Vec<Value>, String> {
    let dir = tempfile::tempdir().expect("tmp");
    let mut cmd = Command::new(helm());
    cmd.args(["template", "runner-fence"]).arg(chart()).args([
        "--namespace",
        namespace,
        "--kube-version",
        "1.33.0",
    ]);
    match values {
        Some(v) => {
            let f = dir.path().join("values.yaml");
            std::fs::write(&f, v).expect("write values");
            cmd.arg("-f").arg(f);
        }
        // Without a values file the reference policy must be asked for.
        None => {
            cmd.args(["--set", "referencePolicy=true"]);
        }
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

fn values_for(policy_text: &str, namespace: &str) -> String {
    helm_values::render(
        policy_text,
        "policy.yaml",
        &helm_values::Target {
            namespace: namespace.into(),
            service: "runner-fence".into(),
        },
    )
    .expect("render helm-values")
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

/// What the installation owns on a generated object: labels, annotations, caBundle.
fn without_install(mut obj: Value) -> Value {
    if let Some(m) = obj["metadata"].as_object_mut() {
        m.remove("labels");
        m.remove("annotations");
    }
    if let Some(hooks) = obj["webhooks"].as_array_mut() {
        for h in hooks {
            if let Some(c) = h["clientConfig"].as_object_mut() {
                c.remove("caBundle");
            }
        }
    }
    obj
}

const AUDIT: &str = "manifests/overlays/audit/policy.yaml";

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// A policy with a prefix namespace, a second exact one and no node names.
fn prefix_policy() -> String {
    read("examples/policy.yaml").replacen(
        "namespaces: [gitlab-runner]",
        "namespaces: [gitlab-runner, \"ci-job-*\", build]",
        1,
    )
}

#[test]
fn the_shipped_reference_values_are_generated_from_the_reference_policy() {
    // Regenerate with: cargo run -- render helm-values > charts/runner-fence/files/reference-values.yaml
    let want = helm_values::render(
        runner_fence::core::policy::EMBEDDED_POLICY,
        "<embedded reference policy>",
        &helm_values::Target {
            namespace: "runner-fence".into(),
            service: "runner-fence".into(),
        },
    )
    .expect("render");
    assert!(
        read("charts/runner-fence/files/reference-values.yaml") == want,
        "charts/runner-fence/files/reference-values.yaml differs from `runner-fence render helm-values`; regenerate it"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_runner-fence"))
        .args(["render", "helm-values"])
        .output()
        .expect("runs");
    assert_eq!(String::from_utf8_lossy(&out.stdout), want);
}

#[test]
fn the_values_schema_embeds_the_policy_schema() {
    // Regenerate with: cargo run -q -- schema | python3 scripts/update-chart-schema.py
    let values: Value =
        serde_json::from_str(&read("charts/runner-fence/values.schema.json")).expect("JSON");
    let mut policy: Value = serde_json::from_slice(
        &Command::new(env!("CARGO_BIN_EXE_runner-fence"))
            .arg("schema")
            .output()
            .expect("runner-fence schema")
            .stdout,
    )
    .expect("policy schema");
    let defs = policy
        .as_object_mut()
        .and_then(|o| o.remove("$defs"))
        .expect("$defs");
    policy.as_object_mut().map(|o| o.remove("$schema"));
    let mut want = serde_json::Map::new();
    want.insert("RunnerPolicy".into(), policy);
    want.extend(defs.as_object().cloned().unwrap_or_default());
    assert!(
        values["$defs"] == Value::Object(want),
        "values.schema.json's $defs are not the policy's JSON Schema; run `cargo run -q -- schema | python3 scripts/update-chart-schema.py`"
    );
    assert_eq!(
        values["properties"]["policy"]["anyOf"][1]["$ref"],
        "#/$defs/RunnerPolicy"
    );
}

#[rstest]
#[case::reference("examples/policy.yaml", "runner-fence")]
#[case::audit(AUDIT, "runner-fence")]
#[case::prefix_namespaces("prefix", "runner-fence")]
#[case::other_namespace("examples/policy.yaml", "admission")]
fn the_chart_installs_what_render_generates(#[case] policy: &str, #[case] namespace: &str) {
    let text = if policy == "prefix" {
        prefix_policy()
    } else {
        read(policy)
    };
    let p = runner_fence::core::policy::parse(&text, policy).expect("policy");
    let objs = template(namespace, Some(&values_for(&text, namespace)), &[]).expect("template");

    // Webhooks: `render webhooks --namespace NS` with the failure policy of the mode
    // (the audit overlay's Ignore), apart from what the installation adds.
    let mut opts = webhooks::Options::service("runner-fence", namespace);
    if p.mode == runner_fence::core::policy::Mode::Audit {
        opts.mutate_failure_policy = webhooks::FailurePolicy::Ignore;
        opts.validate_failure_policy = webhooks::FailurePolicy::Ignore;
    }
    let [m, v] = webhooks::objects(&p, &opts).expect("render webhooks");
    assert_eq!(
        without_install(find(&objs, "MutatingWebhookConfiguration").clone()),
        without_install(m)
    );
    assert_eq!(
        without_install(find(&objs, "ValidatingWebhookConfiguration").clone()),
        without_install(v)
    );
    // The backstop: `render admission-policy`.
    let backstop = admission_policy::objects(&p, namespace).expect("backstop");
    let in_chart = |kind: &str| objs.iter().filter(|o| o["kind"] == kind).count();
    for kind in [
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    ] {
        let rendered = backstop.iter().filter(|o| o["kind"] == kind).count();
        assert_eq!(in_chart(kind), rendered, "{kind}: chart vs render");
    }
    for want in backstop {
        let got = objs
            .iter()
            .find(|o| {
                o["kind"] == want["kind"] && o["metadata"]["name"] == want["metadata"]["name"]
            })
            .unwrap_or_else(|| {
                panic!(
                    "no {} {} in the chart output",
                    want["kind"], want["metadata"]["name"]
                )
            });
        assert_eq!(without_install(got.clone()), without_install(want));
    }
    // The webhook itself stays off every node a job pod may reach.
    assert_eq!(
        find(&objs, "Deployment")["spec"]["template"]["spec"]["affinity"]["nodeAffinity"],
        runner_fence::core::render::placement::webhook_node_affinity(&p).expect("affinity")
    );
    // The server enforces the same policy.
    let cm = find(&objs, "ConfigMap");
    let served = cm["data"]["policy.yaml"].as_str().expect("policy.yaml");
    let loaded =
        runner_fence::core::policy::parse(served, "configmap").expect("served policy loads");
    assert_eq!(loaded.matching.namespaces, p.matching.namespaces);
    assert_eq!(loaded.mode, p.mode);
    // Every namespaced object is in the release namespace.
    for o in &objs {
        if let Some(ns) = o["metadata"]["namespace"].as_str() {
            assert_eq!(ns, namespace, "{}", o["kind"]);
        }
    }
}

#[test]
fn defaults_install_the_reference_policy_with_everything_a_webhook_needs() {
    let objs = template("runner-fence", None, &[]).expect("template");
    assert_eq!(
        kinds(&objs),
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "ConfigMap",
            "Deployment",
            "MutatingWebhookConfiguration",
            "PodDisruptionBudget",
            "Secret",
            "Service",
            "ServiceAccount",
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding",
            "ValidatingWebhookConfiguration",
        ]
    );
    let served = find(&objs, "ConfigMap")["data"]["policy.yaml"]
        .as_str()
        .expect("policy")
        .to_string();
    let p = runner_fence::core::policy::parse(&served, "configmap").expect("loads");
    assert_eq!(p.metadata.name, "gitlab-runner-jobs");
    let d = find(&objs, "Deployment");
    assert!(d["spec"]["replicas"].as_i64() >= Some(2));
    let pod = &d["spec"]["template"]["spec"];
    assert_eq!(pod["priorityClassName"], "system-cluster-critical");
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let c = &pod["containers"][0];
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(c["securityContext"]["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(
        c["image"],
        format!(
            "registry.gitlab.com/runner-fence/runner-fence:{}",
            env!("CARGO_PKG_VERSION")
        )
    );
    // The Service selects the Deployment's pods and is what the webhooks call.
    let svc = find(&objs, "Service");
    for (k, v) in svc["spec"]["selector"].as_object().expect("selector") {
        assert_eq!(&d["spec"]["template"]["metadata"]["labels"][k], v);
    }
    let hook = &find(&objs, "ValidatingWebhookConfiguration")["webhooks"][0]["clientConfig"];
    assert_eq!(hook["service"]["name"], svc["metadata"]["name"]);
    // The PDB keeps one replica through node drains.
    let pdb = find(&objs, "PodDisruptionBudget");
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    assert_eq!(
        pdb["spec"]["selector"]["matchLabels"],
        svc["spec"]["selector"]
    );
}

/// Decodes a base64 value of a Secret or caBundle.
fn b64(v: &Value) -> String {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(v.as_str().expect("base64 string"))
        .expect("base64");
    String::from_utf8(bytes).expect("PEM")
}

#[tokio::test]
async fn generated_certificates_serve_tls_the_apiserver_trusts() {
    let objs = template("runner-fence", None, &[]).expect("template");
    let secret = find(&objs, "Secret");
    let d = find(&objs, "Deployment");
    assert_eq!(
        d["spec"]["template"]["spec"]["volumes"][1]["secret"]["secretName"],
        secret["metadata"]["name"]
    );
    let ca = b64(
        &find(&objs, "MutatingWebhookConfiguration")["webhooks"][0]["clientConfig"]["caBundle"],
    );
    assert_eq!(
        ca,
        b64(
            &find(&objs, "ValidatingWebhookConfiguration")["webhooks"][0]["clientConfig"]["caBundle"]
        )
    );
    assert_eq!(ca, b64(&secret["data"]["ca.crt"]));

    // Serve with the Secret's key pair on 127.0.0.1 and call it by the Service's
    // DNS name, trusting only the caBundle: what the apiserver does.
    let dir = tempfile::tempdir().expect("tmp");
    let (crt, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&crt, b64(&secret["data"]["tls.crt"])).expect("write");
    std::fs::write(&key, b64(&secret["data"]["tls.key"])).expect("write");
    let mut args = common::serve_args();
    args.tls_cert = Some(crt);
    args.tls_key = Some(key);
    let server = common::start(args).await;
    let host = "runner-fence.runner-fence.svc";
    let client = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).expect("ca"))
        .resolve(host, server.addr)
        .build()
        .expect("client");
    let review = common::review_of(
        common::fixture("plain-job.json")["request"]["object"].clone(),
        "CREATE",
    );
    let rsp = client
        .post(format!("https://{host}:{}/validate", server.addr.port()))
        .json(&review)
        .send()
        .await
        .expect("TLS handshake with the chart's certificate");
    assert_eq!(rsp.status(), 200);
    // A name the certificate does not carry is refused: the SANs are the Service's.
    let wrong = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).expect("ca"))
        .resolve("other.runner-fence.svc", server.addr)
        .build()
        .expect("client");
    assert!(
        wrong
            .post(format!(
                "https://other.runner-fence.svc:{}/validate",
                server.addr.port()
            ))
            .json(&review)
            .send()
            .await
            .is_err()
    );
    server.stop().await;
}

#[test]
fn cert_manager_issues_and_injects() {
    let objs =
        template("runner-fence", None, &["certificates.mode=certManager"]).expect("template");
    assert!(!objs.iter().any(|o| o["kind"] == "Secret"));
    let certs: Vec<&Value> = objs.iter().filter(|o| o["kind"] == "Certificate").collect();
    let serving = certs
        .iter()
        .find(|c| c["metadata"]["name"] == "runner-fence-serving")
        .expect("serving certificate");
    assert_eq!(
        serving["spec"]["dnsNames"],
        json!([
            "runner-fence.runner-fence.svc",
            "runner-fence.runner-fence.svc.cluster.local"
        ])
    );
    let d = find(&objs, "Deployment");
    assert_eq!(
        d["spec"]["template"]["spec"]["volumes"][1]["secret"]["secretName"],
        serving["spec"]["secretName"]
    );
    for kind in [
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
    ] {
        let w = find(&objs, kind);
        assert_eq!(
            w["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
            "runner-fence/runner-fence-serving"
        );
        assert!(w["webhooks"][0]["clientConfig"].get("caBundle").is_none());
    }
    // Its own chain unless an issuer is given.
    assert_eq!(kinds(&objs).iter().filter(|k| *k == "Issuer").count(), 2);
    let own = template(
        "runner-fence",
        None,
        &[
            "certificates.mode=certManager",
            "certificates.certManager.issuerRef.name=corp-ca",
            "certificates.certManager.issuerRef.kind=ClusterIssuer",
        ],
    )
    .expect("template");
    assert!(!own.iter().any(|o| o["kind"] == "Issuer"));
    assert_eq!(
        find(&own, "Certificate")["spec"]["issuerRef"],
        json!({"name": "corp-ca", "kind": "ClusterIssuer"})
    );
}

#[test]
fn an_existing_secret_needs_its_ca_bundle() {
    let err = template(
        "runner-fence",
        None,
        &[
            "certificates.mode=existingSecret",
            "certificates.existingSecret.name=my-tls",
        ],
    )
    .expect_err("no caBundle");
    assert!(
        err.contains("certificates.existingSecret.caBundle"),
        "{err}"
    );
    let pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    let values = format!(
        "referencePolicy: true\ncertificates:\n  mode: existingSecret\n  existingSecret:\n    name: my-tls\n    caBundle: {}\n",
        serde_json::to_string(pem).expect("json")
    );
    let objs = template("runner-fence", Some(&values), &[]).expect("template");
    assert!(!objs.iter().any(|o| o["kind"] == "Secret"));
    assert_eq!(
        find(&objs, "Deployment")["spec"]["template"]["spec"]["volumes"][1]["secret"]["secretName"],
        "my-tls"
    );
    assert_eq!(
        b64(
            &find(&objs, "ValidatingWebhookConfiguration")["webhooks"][0]["clientConfig"]["caBundle"]
        ),
        pem
    );
}

#[rstest]
#[case::edited_policy(
    &["policy.match.namespaces[1]=default"],
    "generated from another policy"
)]
#[case::edited_scope(
    &["rendered.validatingWebhookConfiguration.webhooks[0].failurePolicy=Ignore"],
    "edited by hand"
)]
#[case::ignore_without_backstop(
    &["webhooks.failurePolicy=Ignore", "backstop.enabled=false"],
    "opens the fence"
)]
#[case::one_replica(&["replicaCount=1"], "replicaCount")]
#[case::timeout(&["webhooks.timeoutSeconds=10"], "timeoutSeconds")]
#[case::failure_policy(&["webhooks.failurePolicy=Maybe"], "failurePolicy")]
#[case::cert_mode(&["certificates.mode=selfmade"], "certificates")]
#[case::shutdown_longer_than_grace(&["drainSeconds=30"], "terminationGracePeriodSeconds")]
#[case::unknown_value(&["webhook.failurePolicy=Ignore"], "webhook")]
fn bad_values_are_refused_with_the_reason(#[case] set: &[&str], #[case] says: &str) {
    let values = values_for(&read("examples/policy.yaml"), "runner-fence");
    match template("runner-fence", Some(&values), set) {
        Ok(objs) => panic!("{set:?} was accepted: {:?}", kinds(&objs)),
        Err(err) => assert!(err.contains(says), "{err}"),
    }
}

#[test]
fn no_policy_is_refused_unless_the_reference_policy_is_asked_for() {
    // `helm upgrade --set image.tag=...` without the values file starts from the
    // chart's defaults: that must fail, never fence the reference namespaces.
    let out = Command::new(helm())
        .args(["template", "runner-fence"])
        .arg(chart())
        .args(["--namespace", "runner-fence", "--kube-version", "1.33.0"])
        .args(["--set", "image.tag=0.1.1"])
        .output()
        .expect("helm");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("referencePolicy=true"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_chart_and_the_binary_are_one_version() {
    let chart: Value =
        serde_saphyr::from_str(&read("charts/runner-fence/Chart.yaml")).expect("yaml");
    assert_eq!(chart["appVersion"], env!("CARGO_PKG_VERSION"));
    // Values written by another runner-fence are refused: its scope may differ.
    let values = values_for(&read("examples/policy.yaml"), "runner-fence").replace(
        &format!("\"runner-fence {}\"", env!("CARGO_PKG_VERSION")),
        "\"runner-fence 0.0.9\"",
    );
    let mut v: Value = serde_saphyr::from_str(&values).expect("yaml");
    // Keep the checksum right, so only the version check can refuse it.
    let mut both = v.clone();
    both["rendered"].as_object_mut().map(|r| r.remove("sha256"));
    v["rendered"]["sha256"] = json!(sha256_hex(&helm_values::go_json(&both, None)));
    let err = template("runner-fence", Some(&v.to_string()), &[]).expect_err("old generator");
    assert!(err.contains("written by runner-fence 0.0.9"), "{err}");
}

fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn values_for_another_namespace_or_only_half_generated_are_refused() {
    let values = values_for(&read("examples/policy.yaml"), "runner-fence");
    let err = template("ci-admission", Some(&values), &[]).expect_err("namespace");
    assert!(
        err.contains("render helm-values --namespace ci-admission"),
        "{err}"
    );
    // A policy without `rendered`: the chart cannot generate the scope itself.
    let policy_only = format!(
        "policy: {}\n",
        serde_json::to_string(
            &serde_saphyr::from_str::<Value>(&read("examples/policy.yaml")).expect("yaml")
        )
        .expect("json")
    );
    let err = template("runner-fence", Some(&policy_only), &[]).expect_err("half");
    assert!(err.contains("`rendered` is not"), "{err}");
}

#[test]
fn helm_reads_the_policy_exactly_as_runner_fence_hashed_it() {
    // Strings Go's JSON encoder escapes and numbers Helm reads as floats: the
    // checksum only matches when `render helm-values` writes what Go writes.
    let name = "<ops> & dev \u{2028} caf\u{e9} \t \u{1} tab";
    let text = read("examples/policy.yaml").replacen(
        "name: gitlab-runner-jobs",
        &format!("name: {}", serde_json::to_string(name).expect("json")),
        1,
    );
    runner_fence::core::policy::parse(&text, "p").expect("test policy loads");
    let values = values_for(&text, "runner-fence");
    let objs = template("runner-fence", Some(&values), &[]).expect("checksum accepted");
    let served = find(&objs, "ConfigMap")["data"]["policy.yaml"]
        .as_str()
        .expect("policy")
        .to_string();
    let v: Value = serde_saphyr::from_str(&served).expect("yaml");
    assert_eq!(v["metadata"]["name"], name);
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
    // A hand-written nodeAffinity replaces the derived one.
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
    // Only preferences of one's own keep the derived requirement.
    let pref = template(
        "runner-fence",
        None,
        &["affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].weight=10",
          "affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].preference.matchExpressions[0].key=spot",
          "affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].preference.matchExpressions[0].operator=DoesNotExist"],
    )
    .expect("template");
    let na = &find(&pref, "Deployment")["spec"]["template"]["spec"]["affinity"]["nodeAffinity"];
    let policy = runner_fence::core::policy::embedded().expect("policy");
    let derived =
        runner_fence::core::render::placement::webhook_node_affinity(&policy).expect("affinity");
    assert_eq!(
        na["requiredDuringSchedulingIgnoredDuringExecution"],
        derived["requiredDuringSchedulingIgnoredDuringExecution"]
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
    let audit = dir.path().join("audit.yaml");
    std::fs::write(&audit, values_for(&read(AUDIT), "runner-fence")).expect("write");
    for extra in [
        vec![],
        vec!["-f".to_string(), audit.display().to_string()],
        vec!["--set".into(), "certificates.mode=certManager".into()],
        vec![
            "--set".into(),
            "backstop.enabled=false,metrics.serviceMonitor.enabled=true".into(),
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
    }
}
