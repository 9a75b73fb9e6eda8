//! Every shared GitLab job pod fixture through the engine with the reference policy.

mod common;

use common::{fixture, fixture_names, reference};
use rstest::rstest;
use runner_fence::core::engine::{Endpoint, Outcome};
use runner_fence::core::policy::RuleId;
use runner_fence::webhook::admission;
use runner_fence::webhook::eval::evaluate;
use serde_json::{Value, json};

/// Removes the fields the webhook owns, so what is left must be untouched.
fn strip_owned(pod: &Value) -> Value {
    let mut p = pod.clone();
    for ptr in ["/spec", "/metadata"] {
        if let Some(obj) = p.pointer_mut(ptr).and_then(Value::as_object_mut) {
            obj.remove("affinity");
            obj.remove("tolerations");
            obj.remove("labels");
            obj.remove("annotations");
        }
    }
    for list in ["/spec/containers", "/spec/initContainers"] {
        if let Some(arr) = p.pointer_mut(list).and_then(Value::as_array_mut) {
            for c in arr {
                if let Some(o) = c.as_object_mut() {
                    o.remove("resources");
                }
            }
        }
    }
    p
}

fn requests(pod: &Value, list: &str, name: &str) -> (Option<String>, Option<String>) {
    let c = pod
        .pointer(&format!("/spec/{list}"))
        .and_then(Value::as_array)
        .and_then(|a| a.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("container {name}"));
    let r = &c["resources"]["requests"];
    (
        r["cpu"].as_str().map(String::from),
        r["memory"].as_str().map(String::from),
    )
}

fn s(v: &str) -> Option<String> {
    Some(v.to_string())
}

#[rstest]
#[case::plain("plain-job.json", true, true, true, &[])]
#[case::services("job-with-services.json", true, true, true, &[])]
#[case::aliased_service("job-with-aliased-service.json", true, true, true, &[])]
#[case::fargate_labelled("fargate-job.json", true, true, true, &[])]
#[case::kaniko("kaniko-build-job.json", true, true, true, &[])]
#[case::dind_on_runner_nodes("dind-privileged-job.json", true, true, true, &[])]
#[case::node_selector_override("job-with-node-selector-overwrite.json", true, true, false, &[RuleId::Placement])]
#[case::toleration_override("job-with-toleration-overwrite.json", true, true, false, &[RuleId::ProtectedNodes])]
#[case::other_namespace("job-pod-other-namespace.json", false, false, true, &[])]
// Every pod in the runner namespace is fenced: the manager (whose fixture asks for
// GitLab's nodes) and an operator's debug pod included.
#[case::runner_manager("runner-manager-pod.json", true, true, false, &[RuleId::Placement])]
#[case::unrelated("unrelated-pod-same-namespace.json", true, true, true, &[])]
#[case::update_annotation("job-pod-update.json", true, false, true, &[])]
#[case::update_adds_toleration("job-pod-update-adds-toleration.json", true, false, false, &[RuleId::ProtectedNodes])]
fn fixture_decisions(
    #[case] name: &str,
    #[case] matched: bool,
    #[case] patched: bool,
    #[case] allowed: bool,
    #[case] rules: &[RuleId],
) {
    let policy = reference();
    let review = fixture(name);
    let ev = evaluate(&policy, &review, None).expect("evaluates");
    assert_eq!(ev.matched, matched, "{name}: matched");
    assert_eq!(
        !ev.mutate_decision.patch().is_empty(),
        patched,
        "{name}: patched"
    );
    assert_eq!(
        ev.allowed(),
        allowed,
        "{name}: allowed; {:?}",
        ev.messages()
    );
    let mut denied = ev.validate_decision.denied_rules();
    denied.sort();
    assert_eq!(denied, rules, "{name}: rules; {:?}", ev.messages());
    // The response echoes the uid.
    let uid = review["request"]["uid"].clone();
    assert_eq!(
        serde_json::to_value(&ev.mutate).expect("json")["response"]["uid"],
        uid
    );
    assert_eq!(
        serde_json::to_value(&ev.validate).expect("json")["response"]["uid"],
        uid
    );
    assert_eq!(
        serde_json::to_value(&ev.validate).expect("json")["response"]["allowed"],
        json!(allowed)
    );
    // Whatever was patched, every field the webhook does not own is untouched.
    let original = &review["request"]["object"];
    assert_eq!(
        strip_owned(original),
        strip_owned(&ev.pod),
        "{name}: foreign fields changed"
    );
    if !matched {
        assert_eq!(&ev.pod, original, "{name}: skipped pods are not changed");
        assert_eq!(ev.mutate_decision.outcome(), Outcome::Skipped);
    }
}

#[test]
fn the_fargate_fixture_gets_the_fargate_profile_by_its_label() {
    let ev = evaluate(&reference(), &fixture("fargate-job.json"), None).expect("evaluates");
    assert_eq!(ev.profile.as_deref(), Some("fargate"));
    assert!(ev.allowed(), "{:?}", ev.messages());
    let terms = ev
        .pod
        .pointer("/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms")
        .and_then(Value::as_array)
        .expect("terms");
    let want =
        json!({"key": "eks.amazonaws.com/compute-type", "operator": "In", "values": ["fargate"]});
    assert!(terms.iter().all(|t| {
        t["matchExpressions"]
            .as_array()
            .is_some_and(|e| e.contains(&want))
    }));
    assert_eq!(ev.pod["metadata"]["labels"]["use-fargate"], "true");
}

#[rstest]
#[case("plain-job.json")]
#[case("job-with-services.json")]
#[case("job-with-aliased-service.json")]
#[case("kaniko-build-job.json")]
#[case("dind-privileged-job.json")]
#[case("job-with-node-selector-overwrite.json")]
#[case("job-with-toleration-overwrite.json")]
#[case("unrelated-pod-same-namespace.json")]
fn patched_job_pods_are_placed_on_runner_nodes(#[case] name: &str) {
    let policy = reference();
    let ev = evaluate(&policy, &fixture(name), None).expect("evaluates");
    let pod = &ev.pod;
    assert_eq!(ev.profile.as_deref(), Some("runner-nodes"));
    assert_eq!(
        pod["metadata"]["annotations"]["runner-fence.dev/profile"],
        "runner-nodes"
    );
    let terms = pod
        .pointer("/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms")
        .and_then(Value::as_array)
        .expect("terms");
    assert_eq!(terms.len(), 1);
    let want = json!({"key": "workload", "operator": "In", "values": ["gitlab-runner"]});
    assert!(
        terms[0]["matchExpressions"]
            .as_array()
            .is_some_and(|e| e.contains(&want))
    );
    let tols = pod["spec"]["tolerations"].as_array().expect("tolerations");
    let runner_tol = json!({"key": "workload", "operator": "Equal", "value": "gitlab-runner", "effect": "NoSchedule"});
    assert_eq!(
        tols.iter().filter(|t| **t == runner_tol).count(),
        1,
        "{name}: exactly one runner toleration"
    );
    // Every container ends up with cpu and memory requests.
    for list in ["containers", "initContainers"] {
        for c in pod["spec"][list].as_array().into_iter().flatten() {
            let r = &c["resources"]["requests"];
            assert!(
                r["cpu"].is_string() && r["memory"].is_string(),
                "{name}: {} lacks requests",
                c["name"]
            );
        }
    }
}

#[test]
fn resource_defaults_follow_container_roles() {
    let policy = reference();
    let pod = evaluate(&policy, &fixture("job-with-aliased-service.json"), None)
        .expect("eval")
        .pod
        .clone();
    assert_eq!(requests(&pod, "containers", "build"), (s("500m"), s("1Gi")));
    assert_eq!(
        requests(&pod, "containers", "helper"),
        (s("100m"), s("128Mi"))
    );
    // A service named after its alias is still a service.
    assert_eq!(requests(&pod, "containers", "db"), (s("250m"), s("256Mi")));
    assert_eq!(
        requests(&pod, "containers", "svc-0"),
        (s("250m"), s("256Mi"))
    );
    assert_eq!(
        requests(&pod, "initContainers", "init-permissions"),
        (s("50m"), s("64Mi"))
    );
}

#[test]
fn existing_requests_are_kept() {
    let policy = reference();
    let pod = evaluate(&policy, &fixture("job-with-services.json"), None)
        .expect("eval")
        .pod
        .clone();
    assert_eq!(requests(&pod, "containers", "build"), (s("1"), s("2Gi")));
    assert_eq!(
        requests(&pod, "containers", "svc-1"),
        (s("250m"), s("256Mi"))
    );
    let pod = evaluate(&policy, &fixture("kaniko-build-job.json"), None)
        .expect("eval")
        .pod
        .clone();
    assert_eq!(requests(&pod, "containers", "build"), (s("1"), s("2Gi")));
    assert_eq!(
        requests(&pod, "containers", "helper"),
        (s("100m"), s("128Mi"))
    );
}

#[test]
fn fargate_profile_uses_its_own_build_defaults_and_labels() {
    let policy = reference();
    let mut review = fixture("plain-job.json");
    review["request"]["object"]["metadata"]["labels"]["runner-fence.dev/profile"] =
        json!("fargate");
    let ev = evaluate(&policy, &review, None).expect("eval");
    assert_eq!(ev.profile.as_deref(), Some("fargate"));
    assert_eq!(requests(&ev.pod, "containers", "build"), (s("2"), s("8Gi")));
    // Roles the profile does not override keep the policy defaults.
    assert_eq!(
        requests(&ev.pod, "containers", "helper"),
        (s("100m"), s("128Mi"))
    );
    assert_eq!(ev.pod["metadata"]["labels"]["use-fargate"], "true");
    let term = &ev.pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        ["nodeSelectorTerms"][0];
    assert_eq!(
        term["matchExpressions"][0]["key"],
        "eks.amazonaws.com/compute-type"
    );
}

#[test]
fn mutation_is_idempotent_on_every_fixture() {
    let policy = reference();
    for name in fixture_names() {
        let review = fixture(&name);
        let ev = evaluate(&policy, &review, None).expect("eval");
        let mut again = review.clone();
        again["request"]["object"] = ev.pod.clone();
        let body = serde_json::to_vec(&again).expect("json");
        let second = admission::handle(&policy, Endpoint::Mutate, &body, None).expect("review");
        assert!(
            second.decision.patch().is_empty(),
            "{name}: second pass patched {:?}",
            second.decision.patch()
        );
        assert!(
            serde_json::to_value(&second.response).expect("json")["response"]
                .get("patch")
                .is_none(),
            "{name}"
        );
    }
}

#[test]
fn patch_escapes_json_pointer_tokens() {
    let policy = reference();
    let ev = evaluate(&policy, &fixture("plain-job.json"), None).expect("eval");
    let ops = admission::response_patch(&ev.mutate).expect("patch");
    let text = serde_json::to_string(&ops).expect("json");
    assert!(
        text.contains("/metadata/annotations/runner-fence.dev~1profile"),
        "{text}"
    );
    assert_eq!(
        serde_json::to_value(&ev.mutate).expect("json")["response"]["patchType"],
        "JSONPatch"
    );
}

#[test]
fn every_fixture_is_covered() {
    // The decision table above names each fixture; a new fixture must be added there.
    let listed = [
        "dind-privileged-job.json",
        "fargate-job.json",
        "job-pod-other-namespace.json",
        "job-pod-update-adds-toleration.json",
        "job-pod-update.json",
        "job-with-aliased-service.json",
        "job-with-node-selector-overwrite.json",
        "job-with-services.json",
        "job-with-toleration-overwrite.json",
        "kaniko-build-job.json",
        "plain-job.json",
        "runner-manager-pod.json",
        "unrelated-pod-same-namespace.json",
    ];
    assert_eq!(fixture_names(), listed);
}

#[test]
fn audit_mode_allows_everything_and_reports_what_enforce_would_do() {
    let policy = common::reference_with("mode: enforce ", "mode: audit ");
    for name in fixture_names() {
        let review = fixture(&name);
        let ev = evaluate(&policy, &review, None).expect("eval");
        assert!(ev.allowed(), "{name}: audit must allow");
        assert!(
            serde_json::to_value(&ev.mutate).expect("json")["response"]
                .get("patch")
                .is_none(),
            "{name}: audit sends no patch"
        );
        assert_eq!(
            ev.pod, review["request"]["object"],
            "{name}: audit leaves the pod alone"
        );
    }
    // The toleration override: warnings say what enforce would deny, judged on the mutated pod.
    let ev = evaluate(
        &policy,
        &fixture("job-with-toleration-overwrite.json"),
        None,
    )
    .expect("eval");
    let validate = serde_json::to_value(&ev.validate).expect("json");
    let warnings = validate["response"]["warnings"]
        .as_array()
        .expect("warnings");
    assert!(
        warnings.iter().any(|w| w
            .as_str()
            .is_some_and(|w| w.contains("would deny: protected-nodes: spec.tolerations[0]"))),
        "{warnings:?}"
    );
    // Only the tolerations are reported: mutation would have fixed the missing affinity.
    assert!(
        !warnings
            .iter()
            .any(|w| w.as_str().is_some_and(|w| w.contains("does not exclude"))),
        "{warnings:?}"
    );
    assert!(serde_json::to_value(&ev.validate).expect("json")["response"]["auditAnnotations"]["would-deny"].is_string());
    let mutate = serde_json::to_value(&ev.mutate).expect("json");
    let mw = mutate["response"]["warnings"]
        .as_array()
        .expect("mutate warnings");
    assert!(
        mw[0].as_str().is_some_and(
            |w| w.contains("would patch: node affinity requires workload=gitlab-runner")
        ),
        "{mw:?}"
    );
    assert!(serde_json::to_value(&ev.mutate).expect("json")["response"]["auditAnnotations"]["would-patch"].is_string());
}

#[test]
fn dry_run_gets_the_same_decision() {
    let policy = reference();
    for name in fixture_names() {
        let review = fixture(&name);
        let mut dry = review.clone();
        dry["request"]["dryRun"] = json!(true);
        let a = evaluate(&policy, &review, None).expect("eval");
        let b = evaluate(&policy, &dry, None).expect("eval");
        assert_eq!(a.mutate, b.mutate, "{name}");
        assert_eq!(a.validate, b.validate, "{name}");
    }
}
