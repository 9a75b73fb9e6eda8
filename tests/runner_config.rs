//! `check runner-config` over realistic GitLab Runner configurations, and
//! `render runner-config` against the check and the engine: a job choosing
//! any profile on a runner configured from it lands on that profile's nodes
//! with that profile's requests.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use rstest::rstest;
use runner_fence::core::engine::pod::PodView;
use runner_fence::core::engine::{self, Evaluation, Operation, Origin, Request};
use runner_fence::core::policy::{self, Policy, ResourceName, Role};
use runner_fence::core::render::runner_config;
use runner_fence::core::runner_config::{ConfigFile, FindingId, Options, check, job_pod};
use serde_json::{Value, json};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn configs(name: &str) -> String {
    format!("tests/data/runner-configs/{name}")
}

fn load_policy(path: &str) -> Policy {
    let text = std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
    policy::parse(&text, path).unwrap_or_else(|e| panic!("{e}"))
}

const CI_JOB_POLICY: &str = "tests/data/runner-configs/policy-ci-job.yaml";

/// (runner, id, line, severity) of every finding, and the exit code.
#[rstest]
#[case::minimal("minimal.toml", &[], 0, &[])]
#[case::seed_like_render("seed-like.toml", &[], 1, &[
    ("rendered", "request-overrides-profile", 15, "warning"),
    ("rendered", "request-overrides-profile", 18, "warning"),
    ("rendered", "unschedulable", 25, "error"),
])]
#[case::node_selector_for_the_runner_group("node-selector.toml", &[], 1, &[
    ("node-selector", "unschedulable", 12, "error"),
])]
#[case::namespace_per_job_unfenced("namespace-per-job.toml", &[], 1, &[
    ("per-job", "namespace-per-job-not-covered", 10, "error"),
])]
#[case::namespace_per_job_fenced("namespace-per-job.toml", &["--policy", CI_JOB_POLICY], 0, &[])]
#[case::permissive_namespace_overwrite("namespace-overwrite.toml", &[], 1, &[
    ("overwrite", "namespace-overwrite-not-covered", 10, "error"),
])]
#[case::permissive_namespace_overwrite_with_ci_job("namespace-overwrite.toml", &["--policy", CI_JOB_POLICY], 1, &[
    ("overwrite", "namespace-overwrite-not-covered", 10, "error"),
])]
#[case::anchored_namespace_overwrite("namespace-overwrite-anchored.toml", &["--policy", CI_JOB_POLICY], 0, &[])]
#[case::overwrites_allowed("overwrites-allowed.toml", &[], 0, &[
    ("overwrites", "node-selector-overwrite", 11, "warning"),
    ("overwrites", "node-tolerations-overwrite", 12, "warning"),
    ("overwrites", "service-account-overwrite", 13, "warning"),
    ("overwrites", "overwrite-max-above-policy", 15, "warning"),
])]
#[case::pod_spec_patches("pod-spec.toml", &[], 1, &[
    ("pod-spec", "pod-spec-patch", 14, "warning"),
    ("pod-spec", "pod-spec-placement", 24, "error"),
    ("pod-spec", "pod-spec-placement", 30, "error"),
    ("pod-spec", "pod-spec-patch", 39, "warning"),
])]
#[case::privileged_on_runner_nodes("privileged.toml", &[], 0, &[
    ("dind", "denied-fargate-compat", 11, "warning"),
])]
#[case::privileged_on_fargate("privileged-fargate.toml", &[], 1, &[
    ("dind-fargate", "denied-fargate-compat", 11, "error"),
])]
#[case::multi_runner("multi-runner.toml", &[], 1, &[
    ("no-namespace", "namespace-not-covered", 20, "error"),
    ("on-gitlab-nodes", "denied-placement", 32, "error"),
    ("on-gitlab-nodes", "denied-protected-nodes", 34, "error"),
])]
#[case::chart_default("chart-default-values.yaml", &[], 0, &[
    ("", "namespace-unresolved", 25, "warning"),
])]
#[case::chart_default_in_runner_namespace("chart-default-values.yaml", &["--release-namespace", "gitlab-runner"], 0, &[])]
#[case::chart_default_in_default("chart-default-values.yaml", &["--release-namespace", "default"], 1, &[
    ("", "namespace-not-covered", 25, "error"),
])]
fn check_finds_exactly(
    #[case] file: &str,
    #[case] args: &[&str],
    #[case] code: i32,
    #[case] want: &[(&str, &str, usize, &str)],
) {
    let path = configs(file);
    let o = Command::new(env!("CARGO_BIN_EXE_runner-fence"))
        .args(["check", "runner-config", "--output", "json"])
        .args(args)
        .arg(&path)
        .current_dir(root())
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        o.status.code(),
        Some(code),
        "{file}: {stdout}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v: Value = serde_json::from_str(&stdout).expect("json");
    let got: Vec<(String, String, u64, String)> = v["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .map(|f| {
            assert_eq!(f["file"], json!(path));
            assert!(!f["message"].as_str().unwrap_or("").is_empty(), "{f}");
            assert!(!f["fix"].as_str().unwrap_or("").is_empty(), "{f}");
            (
                f["runner"].as_str().unwrap_or("").to_string(),
                f["id"].as_str().unwrap_or("").to_string(),
                f["line"].as_u64().unwrap_or(0),
                f["severity"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let want: Vec<(String, String, u64, String)> = want
        .iter()
        .map(|(r, id, l, s)| (r.to_string(), id.to_string(), *l as u64, s.to_string()))
        .collect();
    assert_eq!(got, want, "{file}");
    // Every reported line is where the named setting is written.
    let text = std::fs::read_to_string(root().join(&path)).expect("read");
    let lines: Vec<&str> = text.lines().collect();
    for f in v["findings"].as_array().into_iter().flatten() {
        let key = f["key"].as_str().unwrap_or("");
        let last = key.rsplit('.').next().unwrap_or("").trim_matches('"');
        let last = last.split('[').next().unwrap_or("");
        let line = lines[f["line"].as_u64().unwrap_or(1) as usize - 1];
        assert!(
            line.contains(last) || line.trim_start().starts_with('['),
            "{file}: line {} ({line:?}) is not {key}",
            f["line"]
        );
    }
}

#[test]
fn the_chart_default_is_the_charts_own_runners_config() {
    // The file keeps the chart's comment block and the values the check reads.
    let text =
        std::fs::read_to_string(root().join(configs("chart-default-values.yaml"))).expect("read");
    assert!(text.contains("runner configuration, where the multi line string is evaluated as a"));
    let c = ConfigFile::parse(&text, "values.yaml").expect("parses");
    assert_eq!(c.runners.len(), 1);
}

fn parse_config(text: &str) -> ConfigFile {
    ConfigFile::parse(text, "config.toml").unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// `render runner-config` output as the [[runners]] entry of a config.toml.
fn rendered(policy: &Policy, profile: Option<&str>) -> String {
    let fragment = runner_config(policy, profile).expect("render");
    format!("[[runners]]\n  name = \"rendered\"\n  executor = \"kubernetes\"\n{fragment}")
}

#[rstest]
fn render_output_passes_the_check_for_every_profile(
    #[values("examples/policy.yaml", "examples/policy-audit.yaml", CI_JOB_POLICY)] path: &str,
) {
    let p = load_policy(path);
    for profile in p.placement.profiles.keys() {
        let text = rendered(&p, Some(profile));
        let report = check(&p, &parse_config(&text), &Options::default()).expect("check");
        assert!(
            report.findings.is_empty(),
            "{path} profile {profile}:\n{}\n{text}",
            report
                .findings
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

/// Nodes shaped like the e2e cluster's: GitLab's, the runner group, Fargate
/// (and a GPU group for the ci-job policy).
fn model_nodes() -> Vec<(&'static str, BTreeMap<String, String>)> {
    let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .chain(&[("kubernetes.io/os", "linux")])
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    vec![
        ("gitlab", labels(&[("workload", "gitlab")])),
        ("runner-nodes", labels(&[("workload", "gitlab-runner")])),
        ("gpu", labels(&[("workload", "gpu")])),
        (
            "fargate",
            labels(&[
                ("eks.amazonaws.com/compute-type", "fargate"),
                ("topology.kubernetes.io/zone", "eu-west-1a"),
            ]),
        ),
    ]
}

fn evaluate(policy: &Policy, namespace: &str, pod: &Value) -> Evaluation {
    let decoded = Ok(PodView::from_value(pod).expect("pod"));
    let request = Request::pod(Operation::Create, namespace, &decoded, None);
    engine::evaluate(
        policy,
        &Origin::Admission {
            request,
            object: pod,
        },
        None,
    )
    .expect("evaluates")
}

/// A job choosing `profile`: the profile label and the profile's selector labels.
fn choosing(policy: &Policy, profile: &str) -> BTreeMap<String, String> {
    let mut labels: BTreeMap<String, String> = policy.placement.profiles[profile]
        .selector
        .iter()
        .flat_map(|s| s.match_labels.clone())
        .collect();
    labels.insert(policy.placement.profile_label.clone(), profile.to_string());
    labels
}

#[test]
fn the_job_pod_is_what_gitlab_runner_19_4_built_from_the_seed_config() {
    let text = std::fs::read_to_string(root().join(configs("seed-like.toml"))).expect("read");
    let config = parse_config(&text);
    let built = job_pod(&config, 0, "gitlab-runner", &BTreeMap::new()).pod;
    let recorded = common::fixture("runner-configs/recorded-runner-19.4-rendered-config-job.json");
    let recorded = &recorded["request"]["object"]["spec"];
    assert_eq!(built["spec"]["affinity"], recorded["affinity"]);
    assert_eq!(built["spec"]["tolerations"][0], recorded["tolerations"][0]);
    assert!(built["spec"].get("nodeSelector").is_none() && recorded.get("nodeSelector").is_none());
    for (built_name, recorded_name, list) in [
        ("build", "build", "containers"),
        ("helper", "helper", "containers"),
        ("svc-0", "db", "containers"),
        ("init-permissions", "init-permissions", "initContainers"),
    ] {
        let find = |spec: &Value, name: &str| {
            spec[list]
                .as_array()
                .and_then(|a| a.iter().find(|c| c["name"] == name))
                .cloned()
                .unwrap_or_else(|| panic!("{name}"))
        };
        let (b, r) = (
            find(&built["spec"], built_name),
            find(recorded, recorded_name),
        );
        assert_eq!(b["resources"], r["resources"], "{built_name}");
        assert_eq!(b["securityContext"], r["securityContext"], "{built_name}");
    }
}

#[rstest]
#[case::default_runner_nodes("examples/policy.yaml", "gitlab-runner", None, "runner-nodes")]
#[case::default_fargate("examples/policy.yaml", "gitlab-runner", None, "fargate")]
#[case::runner_nodes_runner_nodes(
    "examples/policy.yaml",
    "gitlab-runner",
    Some("runner-nodes"),
    "runner-nodes"
)]
#[case::runner_nodes_fargate(
    "examples/policy.yaml",
    "gitlab-runner",
    Some("runner-nodes"),
    "fargate"
)]
#[case::fargate_runner_nodes(
    "examples/policy.yaml",
    "gitlab-runner",
    Some("fargate"),
    "runner-nodes"
)]
#[case::fargate_fargate("examples/policy.yaml", "gitlab-runner", Some("fargate"), "fargate")]
#[case::ci_job_default_fargate(CI_JOB_POLICY, "gitlab-runner", None, "fargate")]
#[case::ci_job_gpu_gpu(CI_JOB_POLICY, "ci-job-7", Some("gpu"), "gpu")]
#[case::ci_job_gpu_runner_nodes(CI_JOB_POLICY, "ci-job-7", Some("gpu"), "runner-nodes")]
fn a_job_choosing_any_profile_lands_on_its_nodes_with_its_requests(
    #[case] path: &str,
    #[case] namespace: &str,
    #[case] rendered_for: Option<&str>,
    #[case] profile: &str,
) {
    let p = load_policy(path);
    let config = parse_config(&rendered(&p, rendered_for));
    let pod = common::recorded_job(&config, namespace, &choosing(&p, profile));
    let ev = evaluate(&p, namespace, &pod);
    assert!(ev.allowed(), "{:?}", ev.messages());
    assert_eq!(ev.profile.as_deref(), Some(profile));
    let nodes: Vec<&str> = model_nodes()
        .into_iter()
        .filter(|(_, labels)| common::schedulable_on(&ev.pod, labels))
        .map(|(n, _)| n)
        .collect();
    assert_eq!(nodes, [profile], "{}", ev.pod["spec"]["affinity"]);
    let prof = &p.placement.profiles[profile];
    let build = ev.pod["spec"]["containers"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "build"))
        .cloned()
        .expect("build");
    for res in ResourceName::ALL {
        let want = p.default_request(prof, Role::Build, res).expect("default");
        assert_eq!(
            build["resources"]["requests"][res.as_str()].as_str(),
            Some(want.as_str()),
            "{profile}: build {}",
            res.as_str()
        );
    }
    for (k, v) in &prof.pod_labels {
        assert_eq!(ev.pod["metadata"]["labels"][k].as_str(), Some(v.as_str()));
    }
    // EKS sends exactly the Fargate profile's jobs to Fargate.
    assert_eq!(
        p.fargate_selects(namespace, &labels_of(&ev.pod)),
        prof.fargate,
        "{profile}"
    );
    if profile == "fargate" {
        assert_eq!(
            build["resources"]["requests"],
            json!({"cpu": "2", "memory": "8Gi"})
        );
    }
}

fn labels_of(pod: &Value) -> BTreeMap<String, String> {
    pod["metadata"]["labels"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
        .collect()
}

#[test]
fn on_the_seed_config_a_fargate_job_is_admitted_but_fits_no_node() {
    // The case, kept as the reason for `unschedulable`: the engine's
    // per-key placement check cannot see that no node carries both labels.
    let p = load_policy("examples/policy.yaml");
    let text = std::fs::read_to_string(root().join(configs("seed-like.toml"))).expect("read");
    let config = parse_config(&text);
    let job = common::recorded_job(&config, "gitlab-runner", &choosing(&p, "fargate"));
    let ev = evaluate(&p, "gitlab-runner", &job);
    assert!(ev.allowed(), "{:?}", ev.messages());
    assert!(
        model_nodes()
            .iter()
            .all(|(_, labels)| !common::schedulable_on(&ev.pod, labels)),
        "{}",
        ev.pod["spec"]["affinity"]
    );
    let build = &ev.pod["spec"]["containers"][0];
    assert_eq!(
        build["resources"]["requests"],
        json!({"cpu": "500m", "memory": "1Gi"})
    );
    let report = check(&p, &config, &Options::default()).expect("check");
    assert!(
        report
            .findings
            .iter()
            .any(|f| f.id == FindingId::Unschedulable
                && f.problem.job().map(|j| j.profile()) == Some("fargate"))
    );
}
