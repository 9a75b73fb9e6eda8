//! The command line: exit codes, output formats and bad input.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{data, fixture_names};
use serde_json::{Value, json};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_runner-fence"))
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn run(args: &[&str]) -> Output {
    bin().args(args).current_dir(root()).output().expect("runs")
}

/// `args` with `input` on stdin.
fn run_stdin(args: &[&str], input: &[u8]) -> Output {
    use std::io::Write;
    let mut child = bin()
        .args(args)
        .current_dir(root())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input)
        .expect("write");
    child.wait_with_output().expect("runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write");
    p
}

#[test]
fn eval_json_gives_the_expected_answer_for_every_fixture() {
    let expected_allowed = |name: &str| {
        !matches!(
            name,
            "job-with-node-selector-overwrite.json"
                | "job-with-toleration-overwrite.json"
                | "job-pod-update-adds-toleration.json"
                // The manager is fenced too, and this one asks for GitLab's nodes.
                | "runner-manager-pod.json"
        )
    };
    for name in fixture_names() {
        let path = data(&name);
        let o = run(&[
            "eval",
            "--policy",
            "examples/policy.yaml",
            "--output",
            "json",
            path.to_str().unwrap_or(""),
        ]);
        let want_code = if expected_allowed(&name) { 0 } else { 1 };
        assert_eq!(o.status.code(), Some(want_code), "{name}: {}", stderr(&o));
        let v: Value = serde_json::from_str(&stdout(&o)).expect("json output");
        for key in ["matched", "profile", "mutate", "validate", "pod"] {
            assert!(v.get(key).is_some(), "{name}: no {key}");
        }
        assert_eq!(v["validate"]["kind"], "AdmissionReview");
        assert_eq!(
            v["validate"]["response"]["allowed"],
            Value::Bool(expected_allowed(&name))
        );
        assert_eq!(
            v["mutate"]["response"]["uid"],
            common::fixture(&name)["request"]["uid"]
        );
    }
}

#[test]
fn eval_text_summarises_and_accepts_pod_yaml_on_stdin() {
    let pod =
        std::fs::read(root().join("examples/tests/pods/toleration-override.yaml")).expect("pod");
    let o = run_stdin(&["eval", "-"], &pod);
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    assert!(
        out.contains("-: job pod, profile runner-nodes: DENIED"),
        "{out}"
    );
    assert!(
        out.contains("deny: protected-nodes: spec.tolerations[0]"),
        "{out}"
    );
}

#[test]
fn eval_says_why_an_input_is_not_fenced_or_not_reviewable() {
    // A namespace the policy does not cover: the namespace decides, not the pod.
    let o = run(&[
        "eval",
        "--namespace",
        "elsewhere",
        "examples/tests/pods/plain-job.yaml",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        "examples/tests/pods/plain-job.yaml: namespace \"elsewhere\" is not covered by the policy (match.namespaces): not fenced, ALLOWED unchanged\n"
    );
    // A review of another kind: denied, the reason said once (both webhooks give it).
    let dir = tempfile::tempdir().expect("tmp");
    let review = json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "1",
            "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
            "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
            "namespace": "gitlab-runner",
            "operation": "CREATE",
            "object": {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}}
        }
    });
    let p = write(dir.path(), "deploy-review.json", &review.to_string());
    let o = run(&["eval", p.to_str().unwrap_or("")]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("deploy-review.json: not reviewable, DENIED\n"),
        "{out}"
    );
    assert_eq!(
        out.matches("but was sent apps/deployments Deployment")
            .count(),
        1,
        "{out}"
    );
}

#[test]
fn eval_bad_input_exits_2_with_a_clear_error() {
    let dir = tempfile::tempdir().expect("tmp");
    let cases = [
        (
            write(dir.path(), "broken.json", "{\"kind\": \"Pod\", "),
            "invalid JSON",
        ),
        (
            write(
                dir.path(),
                "deploy.yaml",
                "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n",
            ),
            "deploy.yaml: kind Deployment is not a Pod or an AdmissionReview; runner-fence reviews pods as they are created",
        ),
        (
            write(dir.path(), "nokind.yaml", "metadata: {name: x}\n"),
            "nokind.yaml: document has no kind",
        ),
        (
            write(dir.path(), "empty.yaml", ""),
            "empty.yaml: the input is empty; expected a Pod or an AdmissionReview",
        ),
        (dir.path().join("missing.yaml"), "missing.yaml"),
        (
            write(
                dir.path(),
                "review.json",
                "{\"kind\": \"AdmissionReview\", \"apiVersion\": \"admission.k8s.io/v1\"}",
            ),
            "has no request",
        ),
    ];
    for (path, msg) in cases {
        let o = run(&["eval", path.to_str().unwrap_or("")]);
        assert_eq!(o.status.code(), Some(2), "{}", path.display());
        assert!(
            stderr(&o).contains(msg),
            "{}: {}",
            path.display(),
            stderr(&o)
        );
    }
    let big = dir.path().join("big.json");
    std::fs::write(&big, vec![b' '; 4 << 20]).expect("write");
    let o = run(&["eval", big.to_str().unwrap_or("")]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("larger than"), "{}", stderr(&o));
}

#[test]
fn eval_with_a_broken_policy_exits_2_naming_file_line_and_column() {
    let dir = tempfile::tempdir().expect("tmp");
    let src = runner_fence::core::policy::EMBEDDED_POLICY.replacen("cpu: 500m", "cpu: 2 cores", 1);
    let p = write(dir.path(), "policy.yaml", &src);
    let o = run(&[
        "eval",
        "--policy",
        p.to_str().unwrap_or(""),
        data("plain-job.json").to_str().unwrap_or(""),
    ]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(err.contains("policy.yaml:"), "{err}");
    assert!(err.contains("resources.defaults.build.cpu"), "{err}");
    assert!(err.contains("invalid quantity \"2 cores\""), "{err}");
}

#[test]
fn lint_reads_stdin_as_a_plain_policy_or_a_stream_of_objects() {
    let policy = runner_fence::core::policy::EMBEDDED_POLICY;
    let o = run_stdin(&["lint", "-"], policy.as_bytes());
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(stdout(&o), "<stdin>: ok\n");
    // A policy that does not load: the loader's error, named after stdin.
    let o = run_stdin(&["lint", "-"], b"mode: [broken\n");
    assert_eq!(o.status.code(), Some(2), "{}", stdout(&o));
    assert!(stderr(&o).contains("<stdin>"), "{}", stderr(&o));
    // A policy object piped (`kubectl get -o yaml | runner-fence lint -`),
    // among other paths: one line per document.
    let object = std::fs::read(root().join("examples/runnerfencepolicy.yaml")).expect("example");
    let o = run_stdin(&["lint", "-", "examples/policy.yaml"], &object);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains("<stdin>:1: RunnerFencePolicy gitlab-runner-jobs: ok"),
        "{}",
        stdout(&o)
    );
    assert!(
        stdout(&o).contains("2 policy document(s): 2 ok"),
        "{}",
        stdout(&o)
    );
    // `kubectl get runnerfencepolicies -o yaml` prints a v1 List: its items are
    // judged one by one, a broken one named (no line: the items are re-read).
    let object: Value = serde_saphyr::from_slice(&object).expect("example");
    let mut other = object.clone();
    other["metadata"]["name"] = json!("other");
    other["spec"]["match"]["namespaces"] = json!(["other"]);
    let mut broken = object.clone();
    broken["metadata"]["name"] = json!("broken");
    broken["spec"]["mode"] = json!("loud");
    let list = json!({"apiVersion": "v1", "kind": "List", "items": [object, other, broken]});
    let o = run_stdin(&["lint", "-"], list.to_string().as_bytes());
    assert_eq!(o.status.code(), Some(2), "{}{}", stdout(&o), stderr(&o));
    for want in [
        "<stdin>:1: RunnerFencePolicy gitlab-runner-jobs: ok",
        "<stdin>:1: RunnerFencePolicy other: lint warning: spec.placement.profiles.fargate.podLabels",
        "<stdin>:1: RunnerFencePolicy broken: Invalid: spec.mode: ",
        "3 policy document(s): 1 ok, 1 with warnings, 1 broken",
    ] {
        assert!(stdout(&o).contains(want), "{want}: {}", stdout(&o));
    }
    // Nothing that is a policy on stdin among other paths: an error naming it.
    let o = run_stdin(
        &["lint", "-", "examples/policy.yaml"],
        b"kind: ConfigMap\napiVersion: v1\n",
    );
    assert_eq!(o.status.code(), Some(2), "{}", stdout(&o));
    assert!(
        stderr(&o).contains("error: <stdin>: no RunnerPolicy"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn lint_passes_the_reference_and_rejects_a_profile_that_reaches_protected_nodes() {
    let o = run(&["lint", "examples/policy.yaml"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    // The old reference policy: protected nodes did not exclude Fargate, so the
    // fargate profile's pods could satisfy them. Now a load error, not a warning.
    let dir = tempfile::tempdir().expect("tmp");
    let old = runner_fence::core::policy::EMBEDDED_POLICY.replacen(
        "operator: NotIn, values: [fargate]}",
        "operator: Exists}",
        1,
    );
    let p = write(dir.path(), "old.yaml", &old);
    let o = run(&["lint", p.to_str().unwrap_or("")]);
    assert_eq!(o.status.code(), Some(2), "{}", stdout(&o));
    assert!(
        stderr(&o).contains(
            "placement.profiles.fargate.requiredNodeLabels: do not exclude protected nodes"
        ),
        "{}",
        stderr(&o)
    );
    let fixed = runner_fence::core::policy::EMBEDDED_POLICY.to_string();
    // More lint findings: fargate without podLabels, defaults above max, a protected toleration.
    let bad = fixed
        .replacen("      podLabels:\n        use-fargate: \"true\"\n", "", 1)
        .replacen(
            "build: {cpu: \"2\", memory: 8Gi}",
            "build: {cpu: \"8\", memory: 8Gi}",
            1,
        )
        .replacen(
            "value: gitlab-runner, effect: NoSchedule}",
            "value: gitlab, effect: NoSchedule}",
            1,
        );
    let p = write(dir.path(), "bad.yaml", &bad);
    let out = stdout(&run(&["lint", p.to_str().unwrap_or("")]));
    assert!(
        out.contains("no fargate.selectors entry selects this Fargate profile"),
        "{out}"
    );
    assert!(out.contains("8 is above resources.max.cpu 4"), "{out}");
    assert!(
        out.contains("tolerates the protected taint workload=gitlab:NoSchedule"),
        "{out}"
    );
    let o = run(&["lint", "/nonexistent.yaml"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn schema_accepts_the_reference_policy_and_rejects_unknown_fields() {
    let o = run(&["schema"]);
    assert_eq!(o.status.code(), Some(0));
    let schema: Value = serde_json::from_str(&stdout(&o)).expect("schema is JSON");
    let validator = jsonschema::validator_for(&schema).expect("valid schema");
    let policy: Value =
        serde_saphyr::from_str(runner_fence::core::policy::EMBEDDED_POLICY).expect("yaml");
    let errors: Vec<String> = validator
        .iter_errors(&policy)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
    let mut bad = policy.clone();
    bad["match"]["podNamePrefix"] = Value::from("runner-");
    assert!(!validator.is_valid(&bad));
    let mut bad = policy;
    bad["mode"] = Value::from("block");
    assert!(!validator.is_valid(&bad));
}

#[test]
fn test_command_runs_the_example_suite_and_writes_junit() {
    let dir = tempfile::tempdir().expect("tmp");
    let junit = dir.path().join("report.xml");
    let o = run(&[
        "test",
        "examples/tests",
        "--junit",
        junit.to_str().unwrap_or(""),
    ]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    let last = out.lines().last().unwrap_or("");
    assert!(last.ends_with("passed, 0 failed"), "{last}");
    let xml = std::fs::read_to_string(&junit).expect("junit");
    assert!(
        xml.contains("<testsuite name=\"reference-policy\""),
        "{xml}"
    );
    assert!(!xml.contains("<failure"), "{xml}");
}

#[test]
fn failing_cases_print_a_diff_and_exit_1() {
    let dir = tempfile::tempdir().expect("tmp");
    let pods = root().join("examples/tests/pods");
    let suite = format!(
        r#"apiVersion: runner-fence.dev/v1alpha1
kind: RunnerPolicyTest
cases:
  - name: wrong expectation
    input: {pods}/plain-job.yaml
    expect:
      allowed: false
      rules: [node-name]
      messages: [nothing like this]
      pod:
        spec:
          tolerations: [{{key: workload, value: gitlab}}]
          restartPolicy: Always
  - name: right expectation
    input: {pods}/plain-job.yaml
    expect: {{allowed: true}}
"#,
        pods = pods.display()
    );
    write(dir.path(), "x.test.yaml", &suite);
    let junit = dir.path().join("r.xml");
    let o = run(&[
        "test",
        dir.path().to_str().unwrap_or(""),
        "--junit",
        junit.to_str().unwrap_or(""),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    assert!(out.contains("FAIL"), "{out}");
    assert!(out.contains("allowed: expected false, got true"), "{out}");
    assert!(
        out.contains("denied rules: expected [node-name], got []"),
        "{out}"
    );
    assert!(
        out.contains(
            "pod.spec.restartPolicy:\n      - expected \"Always\"\n      + got      \"Never\""
        ),
        "{out}"
    );
    assert!(
        out.contains("pod.spec.tolerations[0]: expected an item matching"),
        "{out}"
    );
    assert!(
        out.contains("expected a denial or warning containing \"nothing like this\""),
        "{out}"
    );
    assert_eq!(out.lines().last(), Some("1 passed, 1 failed"));
    let xml = std::fs::read_to_string(&junit).expect("junit");
    assert!(
        xml.contains("failures=\"1\"") && xml.contains("<failure message="),
        "{xml}"
    );
}

#[test]
fn broken_suites_are_reported() {
    let dir = tempfile::tempdir().expect("tmp");
    write(
        dir.path(),
        "bad.test.yaml",
        "apiVersion: runner-fence.dev/v1alpha1\nkind: RunnerPolicyTest\ncases:\n  - name: x\n    expct: {}\n",
    );
    let o = run(&["test", dir.path().to_str().unwrap_or("")]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("expct"), "{}", stderr(&o));
    let empty = tempfile::tempdir().expect("tmp");
    let o = run(&["test", empty.path().to_str().unwrap_or("")]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("no *.test.yaml suites found"));
}

#[test]
fn certs_generate_writes_a_usable_set() {
    let dir = tempfile::tempdir().expect("tmp");
    let out = dir.path().join("certs");
    let o = run(&[
        "certs",
        "generate",
        "--service",
        "rf",
        "--namespace",
        "sec",
        "--out",
        out.to_str().unwrap_or(""),
        "--validity-days",
        "30",
        "--san",
        "rf.example.com",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("rf.sec.svc, rf.sec.svc.cluster.local"),
        "{}",
        stdout(&o)
    );
    for f in ["ca.crt", "ca.key", "tls.crt", "tls.key", "ca-bundle.txt"] {
        assert!(out.join(f).is_file(), "{f}");
    }
    // The files serve: the server loads them and the bundle decodes to the CA.
    let cert = std::fs::read(out.join("tls.crt")).expect("crt");
    let key = std::fs::read(out.join("tls.key")).expect("key");
    runner_fence::webhook::tls::certified_key(
        &cert,
        &key,
        Path::new("tls.crt"),
        Path::new("tls.key"),
    )
    .expect("usable pair");
    use base64::Engine as _;
    let bundle = std::fs::read_to_string(out.join("ca-bundle.txt")).expect("bundle");
    let ca = base64::engine::general_purpose::STANDARD
        .decode(bundle.trim())
        .expect("base64");
    assert_eq!(ca, std::fs::read(out.join("ca.crt")).expect("ca"));
    let o = run(&["certs", "generate", "--out", "/proc/no-such-dir/x"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("/proc/no-such-dir"), "{}", stderr(&o));
}

#[test]
fn render_runner_config_is_toml_for_the_policy() {
    let o = run(&[
        "render",
        "runner-config",
        "--policy",
        "examples/policy.yaml",
        "--profile",
        "fargate",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let t: toml::Table = stdout(&o).parse().expect("TOML");
    let k = &t["runners"]["kubernetes"];
    assert_eq!(
        k["pod_labels"]["runner-fence.dev/profile"].as_str(),
        Some("fargate")
    );
    // One term per profile a job in the namespace may choose.
    let terms = &k["affinity"]["node_affinity"]["required_during_scheduling_ignored_during_execution"]
        ["node_selector_terms"];
    assert_eq!(terms.as_array().map(Vec::len), Some(2), "{}", stdout(&o));
    let o = run(&["render", "runner-config", "--profile", "gpu"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("unknown profile \"gpu\""));
}

#[test]
fn check_runner_config_prints_one_line_per_finding_with_the_fix() {
    let o = run(&[
        "check",
        "runner-config",
        "tests/data/runner-configs/seed-like.toml",
        "tests/data/runner-configs/minimal.toml",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[2].starts_with(
            "runner \"rendered\" tests/data/runner-configs/seed-like.toml:25: unschedulable: a job choosing profile fargate requires workload=gitlab-runner"
        ),
        "{out}"
    );
    assert!(
        lines[2].contains("; fix: give each profile its own node_selector_terms entry"),
        "{out}"
    );
    assert!(
        lines[0].contains(":15: request-overrides-profile: cpu_request = \"500m\""),
        "{out}"
    );
    assert_eq!(
        lines[3],
        "tests/data/runner-configs/seed-like.toml: 1 error(s), 2 warning(s)"
    );
    assert_eq!(lines[4], "tests/data/runner-configs/minimal.toml: ok");
    // Warnings alone pass.
    let o = run(&[
        "check",
        "runner-config",
        "tests/data/runner-configs/overwrites-allowed.toml",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
}

#[test]
fn check_runner_config_reads_render_output_on_stdin() {
    let rendered = run(&["render", "runner-config", "--profile", "fargate"]);
    let o = run_stdin(&["check", "runner-config", "-"], &rendered.stdout);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert_eq!(stdout(&o), "<stdin>: ok\n");
}

#[test]
fn check_runner_config_bad_input_names_the_file_and_exits_2() {
    let dir = tempfile::tempdir().expect("tmp");
    let broken = write(
        dir.path(),
        "config.toml",
        "[[runners]]\n  [runners.kubernetes]\n    privileged = \"yes\"\n",
    );
    let values = write(
        dir.path(),
        "values.yaml",
        "gitlabUrl: https://gitlab.example.com/\nrunners:\n  executor: kubernetes\n",
    );
    let chart_toml = write(
        dir.path(),
        "chart.yaml",
        "runners:\n  config: |\n    [[runners]]\n      {{- if .Values.x }}\n",
    );
    for (path, want) in [
        (
            broken.display().to_string(),
            "config.toml:3: invalid type: string \"yes\", expected a boolean".to_string(),
        ),
        (
            values.display().to_string(),
            "YAML without runners.config".to_string(),
        ),
        (
            chart_toml.display().to_string(),
            "chart.yaml:4: runners.config:".to_string(),
        ),
        (
            "no/such/config.toml".to_string(),
            "no/such/config.toml".to_string(),
        ),
    ] {
        let o = run(&[
            "check",
            "runner-config",
            &path,
            "tests/data/runner-configs/minimal.toml",
        ]);
        assert_eq!(o.status.code(), Some(2), "{path}: {}", stdout(&o));
        assert!(stderr(&o).contains(&want), "{path}: {}", stderr(&o));
        // The other file is still checked.
        assert!(
            stdout(&o).contains("minimal.toml: ok"),
            "{path}: {}",
            stdout(&o)
        );
    }
    let o = run(&[
        "check",
        "runner-config",
        "--output",
        "json",
        "no/such/config.toml",
    ]);
    assert_eq!(o.status.code(), Some(2));
    let v: Value = serde_json::from_str(&stdout(&o)).expect("json");
    assert_eq!(v["errors"][0]["file"], "no/such/config.toml");
}

#[rstest::rstest]
#[case::schema(&["schema"])]
#[case::render(&["render", "crd"])]
#[case::eval(&["eval", "--output", "json", "tests/data/plain-job.json", "tests/data/fargate-job.json"])]
fn output_into_a_closed_pipe_does_not_panic(#[case] args: &[&str]) {
    // `runner-fence ... | head`: the reader is gone before the first write.
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let out = bin()
        .args(args)
        .current_dir(root())
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("runs");
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
    assert_ne!(out.status.code(), Some(101));
}

#[test]
fn a_pod_document_without_metadata_is_evaluated_like_the_apiserver_would_send_it() {
    let dir = tempfile::tempdir().expect("tmp");
    let f = dir.path().join("pod.yaml");
    std::fs::write(
        &f,
        "apiVersion: v1\nkind: Pod\nspec:\n  containers: [{name: build, image: alpine}]\n",
    )
    .expect("write");
    let out = run(&["eval", &f.display().to_string()]);
    assert!(
        !stdout(&out).contains("patch does not apply")
            && !stderr(&out).contains("patch does not apply"),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(stdout(&out).contains("patch:"), "{}", stdout(&out));
}
