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
fn an_audit_policy_changes_only_the_failure_policy_of_the_webhooks() {
    use runner_fence::core::render::webhooks;
    let policy =
        runner_fence::core::policy::parse(&read("examples/policy-audit.yaml"), "policy-audit.yaml")
            .expect("policy");
    let opts = webhooks::Options::service_for(&policy, "runner-fence", "runner-fence");
    assert_eq!(
        webhooks::FailurePolicy::for_policy(&policy).as_str(),
        "Ignore"
    );
    let mut base = webhooks::Options::service("runner-fence", "runner-fence");
    base.mutate_failure_policy = opts.mutate_failure_policy;
    base.validate_failure_policy = opts.validate_failure_policy;
    assert_eq!(
        webhooks::render_yaml(&policy, &opts).expect("render"),
        webhooks::render_yaml(
            &runner_fence::core::policy::embedded().expect("policy"),
            &base
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
    // Regenerate with: cargo run -- render crd > manifests/base/crd.yaml (and the chart's copy)
    let want = runner_fence::core::render::crd::render_yaml().expect("render");
    for file in [
        "manifests/base/crd.yaml",
        "charts/runner-fence/crds/runnerfencepolicies.runner-fence.dev.yaml",
    ] {
        assert!(
            read(file) == want,
            "{file} differs from `runner-fence render crd`; regenerate it"
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
        let default = webhooks::FailurePolicy::for_set(&PolicySet::single(p.clone()));
        let opts = webhooks::Options {
            mutate_failure_policy: default,
            validate_failure_policy: default,
            ..webhooks::Options::service("runner-fence", "runner-fence")
        };
        let applied = cluster::desired(&PolicySet::single(p), &opts, "rf-b").expect("desired");
        assert_eq!(printed, applied, "{policy}");
    }
}
