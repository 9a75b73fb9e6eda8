//! Deployment files that must stay in step with the code (no cluster or kubectl needed;
//! `scripts/check-deploy.sh` renders and validates the kustomize manifests in CI).

use std::path::PathBuf;

fn read(rel: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn the_audit_example_is_the_reference_policy_in_audit_mode() {
    let audit = read("examples/policy-audit.yaml");
    assert_eq!(
        audit,
        read("examples/policy.yaml").replacen("mode: enforce ", "mode: audit   ", 1)
    );
    let p =
        runner_fence::core::policy::parse(&audit, "policy-audit.yaml").expect("audit policy loads");
    assert_eq!(p.mode, runner_fence::core::policy::Mode::Audit);
}

#[test]
fn every_manifest_is_yaml() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("manifests");
    let mut stack = vec![root];
    let mut n = 0;
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).expect("dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "yaml") {
                let text = std::fs::read_to_string(&p).expect("read");
                let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&text)
                    .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                assert!(!docs.is_empty(), "{}", p.display());
                n += 1;
            }
        }
    }
    assert!(n >= 8, "found {n} manifest files");
}

#[test]
fn render_webhooks_prints_what_the_controller_applies() {
    let policy = runner_fence::core::policy::embedded().expect("policy");
    let opts =
        runner_fence::core::render::webhooks::Options::service("runner-fence", "runner-fence");
    let want = runner_fence::core::render::webhooks::render_yaml(&policy, &opts).expect("render");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_runner-fence"))
        .args(["render", "webhooks"])
        .output()
        .expect("runs");
    assert_eq!(String::from_utf8_lossy(&out.stdout), want);
}

#[test]
fn an_audit_policy_changes_only_the_failure_policy_and_names_of_the_webhooks() {
    use runner_fence::core::render::webhooks::{self, FailurePolicy};
    let policy =
        runner_fence::core::policy::parse(&read("examples/policy-audit.yaml"), "policy-audit.yaml")
            .expect("policy");
    assert_eq!(FailurePolicy::for_policy(&policy).as_str(), "Ignore");
    let opts = webhooks::Options::service("runner-fence", "runner-fence");
    let enforcing = webhooks::Options {
        mutate_failure_policy: Some(FailurePolicy::Ignore),
        validate_failure_policy: Some(FailurePolicy::Ignore),
        ..opts.clone()
    };
    let audit = webhooks::render_yaml(&policy, &opts).expect("render");
    assert!(
        audit.contains("name: audit.pods.mutate.runner-fence.dev"),
        "{audit}"
    );
    assert_eq!(
        audit.replace("name: audit.pods.", "name: pods."),
        webhooks::render_yaml(
            &runner_fence::core::policy::embedded().expect("policy"),
            &enforcing
        )
        .expect("render"),
    );
}

#[test]
fn webhook_names_and_ordering() {
    let policy = runner_fence::core::policy::embedded().expect("policy");
    let opts =
        runner_fence::core::render::webhooks::Options::service("runner-fence", "runner-fence");
    let text = runner_fence::core::render::webhooks::render_yaml(&policy, &opts).expect("render");
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&text).expect("yaml");
    let mwc = docs
        .iter()
        .find(|d| d["kind"] == "MutatingWebhookConfiguration")
        .expect("mwc");
    let name = mwc["metadata"]["name"].as_str().expect("name");
    assert!(
        name < "0500-amazon-eks-fargate-mutation.amazonaws.com",
        "{name}"
    );
    for d in &docs {
        for w in d["webhooks"].as_array().expect("webhooks") {
            // Audit annotation keys get the webhook name as prefix; it must be a DNS name of 3+ labels.
            assert!(
                w["name"]
                    .as_str()
                    .is_some_and(|n| n.split('.').count() >= 3)
            );
        }
    }
}

#[test]
fn the_kustomize_deployment_stays_off_the_nodes_the_policy_derives() {
    // What `render::placement` derives for the reference policy; the chart's values
    // (and so the kustomize base, its rendering) write it by hand and must say the same
    // (order aside).
    let policy = runner_fence::core::policy::embedded().expect("policy");
    let want =
        runner_fence::core::render::placement::webhook_node_affinity(&policy).expect("affinity");
    let docs: Vec<serde_json::Value> =
        serde_saphyr::from_multiple(&read("manifests/base/runner-fence.yaml")).expect("yaml");
    let deployment = docs
        .iter()
        .find(|d| d["kind"] == "Deployment")
        .expect("Deployment");
    let have = &deployment["spec"]["template"]["spec"]["affinity"]["nodeAffinity"];
    let terms = |v: &serde_json::Value| -> Vec<Vec<String>> {
        let mut t: Vec<Vec<String>> =
            v["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
                .as_array()
                .map(|ts| {
                    ts.iter()
                        .map(|t| {
                            let mut e: Vec<String> = t["matchExpressions"]
                                .as_array()
                                .map(|es| es.iter().map(|e| e.to_string()).collect())
                                .unwrap_or_default();
                            e.sort();
                            e
                        })
                        .collect()
                })
                .unwrap_or_default();
        t.sort();
        t
    };
    assert!(!terms(&want).is_empty());
    assert_eq!(terms(have), terms(&want));
}

#[test]
fn the_shipped_crd_is_generated_from_the_policy_model() {
    let want = runner_fence::core::render::crd::render_yaml().expect("render");
    for file in [
        "manifests/base/crd.yaml",
        "charts/runner-fence/crds/runnerfencepolicies.runner-fence.dev.yaml",
    ] {
        assert!(
            read(file) == want,
            "{file} differs from `runner-fence render crd`; run `{}`",
            runner_fence::core::render::generated::REGEN
        );
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_runner-fence"))
        .args(["render", "crd"])
        .output()
        .expect("runs");
    assert_eq!(String::from_utf8_lossy(&out.stdout), want);
}

#[test]
fn the_example_object_validates_against_the_crd_schema() {
    // The apiserver's view of the reference policy: its spec passes the CRD's
    // schema (as JSON Schema), and a typo'd operator does not.
    let crd = runner_fence::core::render::crd::crd().expect("crd");
    let spec_schema =
        crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"].clone();
    let validator = jsonschema::validator_for(&spec_schema).expect("a JSON Schema");
    let object: serde_json::Value =
        serde_saphyr::from_str(&read("examples/runnerfencepolicy.yaml")).expect("yaml");
    let errors: Vec<String> = validator
        .iter_errors(&object["spec"])
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
    let mut bad = object["spec"].clone();
    bad["protectedNodes"]["matchExpressions"][0]["operator"] = "Within".into();
    assert!(!validator.is_valid(&bad));
}

#[test]
fn the_controller_applies_what_render_prints_for_its_release() {
    // What the leader applies for one policy is exactly `render webhooks --release R`
    // followed by `render admission-policy --release R`: one implementation.
    use runner_fence::core::fleet::PolicySet;
    use runner_fence::core::render::{cluster, webhooks};
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_runner-fence"))
            .args(args)
            .output()
            .expect("runs");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let docs: Vec<serde_json::Value> =
            serde_saphyr::from_multiple(&String::from_utf8_lossy(&out.stdout)).expect("yaml");
        docs
    };
    for policy in ["examples/policy.yaml", "examples/policy-audit.yaml"] {
        let p = runner_fence::core::policy::parse(&read(policy), policy).expect("policy");
        let mut printed = run(&[
            "render",
            "webhooks",
            "--policy",
            policy,
            "--release",
            "rf-b",
        ]);
        printed.extend(run(&[
            "render",
            "admission-policy",
            "--policy",
            policy,
            "--release",
            "rf-b",
        ]));
        // The controller's default failure policies: from the served policies.
        let opts = webhooks::Options::service("runner-fence", "runner-fence");
        let applied = cluster::desired(&PolicySet::single(p), &opts, "rf-b").expect("desired");
        assert_eq!(printed, applied, "{policy}");
    }
}

/// What `dev regen` would write for this tree.
fn generated_files(root: &std::path::Path) -> Vec<runner_fence::core::render::generated::File> {
    use runner_fence::core::render::generated::{self, Inputs};
    let text = |rel: &str| {
        std::fs::read_to_string(root.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
    };
    generated::files(Inputs {
        reference_policy: &text(generated::REFERENCE_POLICY),
        values_schema: &text(generated::VALUES_SCHEMA),
    })
    .expect("generated files")
}

fn regen(root: &std::path::Path, check: bool) -> std::process::Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_runner-fence"));
    cmd.args(["dev", "regen", "--root"]).arg(root);
    if check {
        cmd.arg("--check");
    }
    cmd.output().expect("runs")
}

#[test]
fn dev_regen_on_the_checked_in_tree_changes_nothing() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let files = generated_files(&root);
    let paths: Vec<&str> = files.iter().map(|f| f.path).collect();
    // Every file a staleness test in this crate compares is in the one list.
    for want in [
        "examples/policy-audit.yaml",
        "manifests/base/crd.yaml",
        "charts/runner-fence/crds/runnerfencepolicies.runner-fence.dev.yaml",
        "charts/runner-fence/values.schema.json",
    ] {
        assert!(
            paths.contains(&want),
            "{want} is not regenerated: {paths:?}"
        );
    }
    for f in &files {
        assert!(
            read(f.path) == f.text,
            "{} is stale; run `{}`",
            f.path,
            runner_fence::core::render::generated::REGEN
        );
    }
    let out = regen(&root, true);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.starts_with(&format!("{} generated files, 0 stale\n", files.len())),
        "{stdout}"
    );
    // And the kustomize manifests, the chart's rendering (scripts/update-kustomize.py).
    assert!(
        stdout.contains("kustomize manifests are the chart's rendering"),
        "{stdout}"
    );
}

#[test]
fn dev_regen_rewrites_stale_and_missing_files_and_is_hidden() {
    use runner_fence::core::render::generated::{REFERENCE_POLICY, REGEN, VALUES_SCHEMA};
    let tmp = tempfile::tempdir().expect("tempdir");
    let put = |rel: &str, text: &str| {
        let p = tmp.path().join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, text).expect("write");
    };
    put(REFERENCE_POLICY, &read(REFERENCE_POLICY));
    // A stale values schema: the spliced-in spec schema is out of date, the hand-written
    // parts must survive the rewrite.
    let values = read(VALUES_SCHEMA);
    let old = values.replacen(
        "\"description\": \"The policy: the fields of a plain RunnerPolicy file",
        "\"description\": \"old",
        1,
    );
    assert_ne!(old, values);
    put(VALUES_SCHEMA, &old);
    put("examples/policy-audit.yaml", "stale\n");

    let check = regen(tmp.path(), true);
    assert_eq!(check.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&check.stdout);
    assert!(
        stdout.contains("stale: examples/policy-audit.yaml\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("stale: manifests/base/crd.yaml\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("stale: {VALUES_SCHEMA}\n")),
        "{stdout}"
    );
    assert!(String::from_utf8_lossy(&check.stderr).contains(REGEN));
    assert_eq!(
        read_in(tmp.path(), "examples/policy-audit.yaml"),
        "stale\n",
        "--check writes nothing"
    );

    let out = regen(tmp.path(), false);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for f in generated_files(tmp.path()) {
        assert!(
            read_in(tmp.path(), f.path) == f.text,
            "{} not rewritten",
            f.path
        );
        // The same as the checked-in tree: the values schema's hand-written parts are kept.
        assert!(read(f.path) == f.text, "{} differs from the tree", f.path);
    }
    assert_eq!(regen(tmp.path(), true).status.code(), Some(0));

    let help = std::process::Command::new(env!("CARGO_BIN_EXE_runner-fence"))
        .arg("--help")
        .output()
        .expect("runs");
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.lines().any(|l| l.trim_start().starts_with("render "))
            && !help.lines().any(|l| l.trim_start().starts_with("dev ")),
        "{help}"
    );
}

fn read_in(root: &std::path::Path, rel: &str) -> String {
    std::fs::read_to_string(root.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}
