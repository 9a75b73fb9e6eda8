//! Validation rules on hand-built pods: the satisfiability table and each rule's edges.

mod common;

use common::{reference, reference_with, review_of};
use rstest::rstest;
use runner_fence::core::engine::{Cause, Decision, Endpoint, Outcome};
use runner_fence::core::nodes::{NodeInfo, NodeSnapshot};
use runner_fence::core::policy::{Policy, RuleId};
use runner_fence::webhook::admission;
use serde_json::{Value, json};

fn pod(spec: Value) -> Value {
    let mut spec = spec;
    if spec.get("containers").is_none() {
        spec["containers"] = json!([{"name": "build", "image": "alpine"}]);
    }
    json!({"metadata": {"name": "runner-abc-project-1-concurrent-0-xyz", "namespace": "gitlab-runner"}, "spec": spec})
}

fn validate(policy: &Policy, p: Value, nodes: Option<&NodeSnapshot>) -> Decision {
    let body = serde_json::to_vec(&review_of(p, "CREATE")).expect("json");
    admission::handle(policy, Endpoint::Validate, &body, nodes)
        .expect("valid review")
        .decision
}

fn handle(p: &Policy, ep: Endpoint, review: &Value) -> admission::Reviewed {
    admission::handle(p, ep, &serde_json::to_vec(review).expect("json"), None).expect("review")
}

fn rules(d: &Decision) -> Vec<RuleId> {
    let mut r: Vec<RuleId> = d.denials().iter().map(|v| v.rule).collect();
    r.sort();
    r.dedup();
    r
}

fn terms(terms: Value) -> Value {
    json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}})
}

fn expr(key: &str, op: &str, values: &[&str]) -> Value {
    if values.is_empty() {
        json!({"key": key, "operator": op})
    } else {
        json!({"key": key, "operator": op, "values": values})
    }
}

const RUNNER: fn() -> Value = || expr("workload", "In", &["gitlab-runner"]);

/// Does the `protected-nodes` label check deny these scheduling constraints?
#[rstest]
#[case::runner_term(json!({"affinity": terms(json!([{"matchExpressions": [RUNNER()]}]))}), false)]
#[case::no_constraints(json!({}), true)]
#[case::zone_only(json!({"affinity": terms(json!([{"matchExpressions": [expr("zone", "In", &["a"])]}]))}), true)]
#[case::one_or_term_reaches(json!({"affinity": terms(json!([
    {"matchExpressions": [RUNNER()]},
    {"matchExpressions": [expr("zone", "In", &["a"])]}]))}), true)]
#[case::both_terms_excluded(json!({"affinity": terms(json!([
    {"matchExpressions": [RUNNER(), expr("zone", "In", &["a"])]},
    {"matchExpressions": [RUNNER(), expr("zone", "In", &["b"])]}]))}), false)]
#[case::not_in_gitlab(json!({"affinity": terms(json!([{"matchExpressions": [expr("workload", "NotIn", &["gitlab"])]}]))}), false)]
#[case::not_in_other(json!({"affinity": terms(json!([{"matchExpressions": [expr("workload", "NotIn", &["batch"])]}]))}), true)]
#[case::exists_same_key(json!({"affinity": terms(json!([{"matchExpressions": [expr("workload", "Exists", &[])]}]))}), true)]
#[case::exists_other_key(json!({"affinity": terms(json!([{"matchExpressions": [expr("gpu", "Exists", &[])]}]))}), true)]
#[case::does_not_exist(json!({"affinity": terms(json!([{"matchExpressions": [expr("workload", "DoesNotExist", &[])]}]))}), false)]
#[case::gt_on_other_key(json!({"affinity": terms(json!([{"matchExpressions": [expr("cpus", "Gt", &["8"])]}]))}), true)]
#[case::node_selector_runner(json!({"nodeSelector": {"workload": "gitlab-runner"}}), false)]
#[case::node_selector_gitlab(json!({"nodeSelector": {"workload": "gitlab"}}), true)]
#[case::node_selector_and_term(json!({"nodeSelector": {"workload": "gitlab-runner"},
    "affinity": terms(json!([{"matchExpressions": [expr("zone", "In", &["a"])]}]))}), false)]
#[case::match_fields_only(json!({"affinity": terms(json!([{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]}]))}), true)]
#[case::match_fields_and_runner(json!({"affinity": terms(json!([{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}], "matchExpressions": [RUNNER()]}]))}), false)]
#[case::empty_term_matches_nothing(json!({"affinity": terms(json!([{}, {"matchExpressions": [RUNNER()]}]))}), false)]
fn label_satisfiability(#[case] spec: Value, #[case] reaches: bool) {
    let d = validate(&reference(), pod(spec.clone()), None);
    let label_denials: Vec<_> = d
        .denials()
        .iter()
        .filter(|v| {
            v.rule == RuleId::ProtectedNodes
                && matches!(v.cause, Cause::ReachesProtectedLabels { .. })
        })
        .collect();
    assert_eq!(
        !label_denials.is_empty(),
        reaches,
        "{spec}: {:?}",
        d.message()
    );
}

#[test]
fn terms_that_match_nothing_are_a_placement_denial_not_a_panic() {
    for terms_json in [
        json!([{}]),
        json!([{"matchExpressions": [expr("workload", "Bogus", &["x"])]}]),
    ] {
        let d = validate(
            &reference(),
            pod(json!({"affinity": terms(terms_json.clone())})),
            None,
        );
        assert_eq!(
            rules(&d),
            vec![RuleId::Placement],
            "{terms_json}: {:?}",
            d.message()
        );
        assert!(
            d.message()
                .unwrap_or_default()
                .contains("has no term that can match any node")
        );
    }
}

#[test]
fn or_term_denial_names_the_term() {
    let spec = json!({"affinity": terms(json!([
        {"matchExpressions": [RUNNER()]},
        {"matchExpressions": [expr("zone", "In", &["a"])]}]))});
    let d = validate(&reference(), pod(spec), None);
    let msg = d.message().expect("denied");
    assert!(msg.contains("nodeSelectorTerms[1]"), "{msg}");
    assert!(!msg.contains("nodeSelectorTerms[0] "), "{msg}");
}

#[rstest]
#[case::equal(json!([{"key": "workload", "operator": "Equal", "value": "gitlab", "effect": "NoSchedule"}]), true)]
#[case::key_only(json!([{"key": "workload", "operator": "Exists"}]), true)]
#[case::everything(json!([{"operator": "Exists"}]), true)]
#[case::runner(json!([{"key": "workload", "operator": "Equal", "value": "gitlab-runner", "effect": "NoSchedule"}]), false)]
#[case::other_effect(json!([{"key": "workload", "operator": "Equal", "value": "gitlab", "effect": "NoExecute"}]), false)]
#[case::defaults(json!([{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}]), false)]
fn taint_tolerations(#[case] tolerations: Value, #[case] denied: bool) {
    let spec = json!({"affinity": terms(json!([{"matchExpressions": [RUNNER()]}])), "tolerations": tolerations});
    let d = validate(&reference(), pod(spec), None);
    assert_eq!(
        rules(&d).contains(&RuleId::ProtectedNodes),
        denied,
        "{:?}",
        d.message()
    );
    if denied {
        let msg = d.message().unwrap_or_default();
        assert!(msg.contains("protected-nodes: spec.tolerations[0] tolerates workload=gitlab:NoSchedule, the taint protectedNodes.taints lists"), "{msg}");
        assert!(
            msg.contains("remove the KUBERNETES_NODE_TOLERATIONS_* override"),
            "{msg}"
        );
    }
}

fn cluster() -> NodeSnapshot {
    let taint = |v: &str| k8s_openapi::api::core::v1::Taint {
        key: "workload".into(),
        value: Some(v.into()),
        effect: "NoSchedule".into(),
        time_added: None,
    };
    NodeSnapshot::new([
        NodeInfo {
            name: "gitlab-1".into(),
            labels: [
                ("workload".to_string(), "gitlab".to_string()),
                ("zone".to_string(), "a".to_string()),
            ]
            .into(),
            taints: vec![taint("gitlab")],
        },
        NodeInfo {
            name: "runner-1".into(),
            labels: [("workload".to_string(), "gitlab-runner".to_string())].into(),
            taints: vec![taint("gitlab-runner")],
        },
        NodeInfo {
            name: "untainted-gitlab".into(),
            labels: [
                ("workload".to_string(), "gitlab".to_string()),
                ("zone".to_string(), "b".to_string()),
            ]
            .into(),
            taints: vec![],
        },
    ])
}

/// With the node cache, a tolerated protected taint's message names the protected
/// nodes that carry exactly that taint: not another value, effect or key.
#[test]
fn the_carriers_of_a_tolerated_taint_are_the_nodes_with_that_taint() {
    let node = |name: &str, taint: Option<(&str, &str, &str)>| NodeInfo {
        name: name.into(),
        labels: [("workload".to_string(), "gitlab".to_string())].into(),
        taints: taint
            .map(|(key, value, effect)| k8s_openapi::api::core::v1::Taint {
                key: key.into(),
                value: Some(value.into()),
                effect: effect.into(),
                time_added: None,
            })
            .into_iter()
            .collect(),
    };
    let nodes = NodeSnapshot::new([
        node("gitlab-1", Some(("workload", "gitlab", "NoSchedule"))),
        node("gitlab-2", Some(("workload", "gitlab", "NoExecute"))),
        node("gitlab-3", Some(("workload", "other", "NoSchedule"))),
        node("gitlab-4", Some(("other", "gitlab", "NoSchedule"))),
        node("gitlab-5", None),
    ]);
    let spec = json!({"affinity": terms(json!([{"matchExpressions": [RUNNER()]}])),
        "tolerations": [{"key": "workload", "operator": "Exists"}]});
    let d = validate(&reference(), pod(spec.clone()), Some(&nodes));
    let msg = d.message().expect("denied");
    assert!(
        msg.contains(
            "the taint protectedNodes.taints lists for GitLab's nodes, which gitlab-1 carries"
        ),
        "{msg}"
    );
    // A cluster where no protected node carries it says so.
    let none = NodeSnapshot::new([node("gitlab-3", Some(("workload", "other", "NoSchedule")))]);
    let d = validate(&reference(), pod(spec), Some(&none));
    let msg = d.message().expect("denied");
    assert!(
        msg.contains("though no protected node in the cluster carries it now"),
        "{msg}"
    );
}

#[test]
fn node_names_are_checked_against_the_names_list_and_the_node_cache() {
    let spec = json!({"nodeName": "gitlab-1", "affinity": terms(json!([{"matchExpressions": [RUNNER()]}]))});
    // Without the cache, only node-name fires (the name is not listed).
    let d = validate(&reference(), pod(spec.clone()), None);
    assert_eq!(rules(&d), vec![RuleId::NodeName]);
    // The cache knows gitlab-1 carries workload=gitlab.
    let d = validate(&reference(), pod(spec.clone()), Some(&cluster()));
    assert_eq!(rules(&d), vec![RuleId::ProtectedNodes, RuleId::NodeName]);
    // Listed by name, and nodeName allowed: protected-nodes alone.
    let p = reference_with("names: []", "names: [gitlab-1]");
    let p = Policy {
        allow_node_name: true,
        ..p
    };
    let d = validate(&p, pod(spec), None);
    assert_eq!(rules(&d), vec![RuleId::ProtectedNodes]);
    let runner = json!({"nodeName": "runner-1", "affinity": terms(json!([{"matchExpressions": [RUNNER()]}]))});
    let d = validate(&p, pod(runner), Some(&cluster()));
    assert!(d.allowed(), "{:?}", d.message());
}

#[test]
fn live_check_denies_what_real_nodes_allow() {
    // Protected by a label the static check cannot reason about: only real nodes show the risk.
    let spec = json!({"affinity": terms(json!([{"matchExpressions": [expr("workload", "In", &["gitlab"])]}]))});
    let mut no_labels_policy = reference();
    no_labels_policy.protected_nodes.match_labels.clear();
    no_labels_policy.protected_nodes.match_expressions.clear();
    no_labels_policy.protected_nodes.names = vec!["untainted-gitlab".into()];
    let d = validate(&no_labels_policy, pod(spec.clone()), None);
    assert!(
        !rules(&d).contains(&RuleId::ProtectedNodes),
        "{:?}",
        d.message()
    );
    let d = validate(&no_labels_policy, pod(spec), Some(&cluster()));
    let msg = d.message().expect("denied live");
    assert!(
        msg.contains("can be scheduled on protected GitLab node untainted-gitlab"),
        "{msg}"
    );
    // A pod that only fits the tainted runner node is fine.
    let ok = json!({"affinity": terms(json!([{"matchExpressions": [RUNNER()]}])),
        "tolerations": [{"key": "workload", "operator": "Equal", "value": "gitlab-runner", "effect": "NoSchedule"}]});
    let d = validate(&no_labels_policy, pod(ok), Some(&cluster()));
    assert!(d.allowed(), "{:?}", d.message());
}

#[test]
fn bindings_to_protected_nodes_are_denied() {
    let binding = |node: &str, name: &str| {
        json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
            "uid": "u1", "kind": {"group": "", "version": "v1", "kind": "Binding"},
            "resource": {"group": "", "version": "v1", "resource": "pods"}, "subResource": "binding",
            "name": name, "namespace": "gitlab-runner", "operation": "CREATE",
            "object": {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name}, "target": {"kind": "Node", "name": node}}}})
    };
    let p = reference();
    let run = |r: Value, nodes: Option<&NodeSnapshot>, ep: Endpoint| {
        admission::handle(&p, ep, &serde_json::to_vec(&r).expect("json"), nodes)
            .expect("review")
            .decision
    };
    let d = run(
        binding("gitlab-1", "runner-x"),
        Some(&cluster()),
        Endpoint::Validate,
    );
    assert_eq!(d.outcome(), Outcome::Denied);
    assert!(d.message().unwrap_or_default().contains(
        "protected-nodes: target.name binds the job pod to protected GitLab node gitlab-1"
    ));
    assert!(
        run(
            binding("runner-1", "runner-x"),
            Some(&cluster()),
            Endpoint::Validate
        )
        .allowed()
    );
    // Whatever the pod is called: a binding carries no labels, and names exempt nothing.
    assert_eq!(
        run(
            binding("gitlab-1", "gitlab-runner-abc"),
            Some(&cluster()),
            Endpoint::Validate
        )
        .outcome(),
        Outcome::Denied
    );
    // The legacy `bindings` resource is the same request by another path.
    let mut legacy = binding("gitlab-1", "netshoot");
    legacy["request"]["resource"]["resource"] = json!("bindings");
    legacy["request"]["subResource"] = Value::Null;
    let d = run(legacy.clone(), Some(&cluster()), Endpoint::Validate);
    assert_eq!(d.outcome(), Outcome::Denied, "{:?}", d.message());
    assert_eq!(d.denials()[0].rule, RuleId::ProtectedNodes);
    // Outside the runner namespaces a binding is none of runner-fence's business.
    legacy["request"]["namespace"] = json!("default");
    assert_eq!(
        run(legacy, Some(&cluster()), Endpoint::Validate).outcome(),
        Outcome::Skipped
    );
    // /mutate answers bindings with allowed and no patch.
    let m = run(
        binding("gitlab-1", "runner-x"),
        Some(&cluster()),
        Endpoint::Mutate,
    );
    assert!(m.allowed() && m.patch().is_empty());
}

#[rstest]
#[case::privileged(json!({"containers": [{"name": "build", "image": "docker", "securityContext": {"privileged": true}}]}), "is privileged")]
#[case::init_privileged(json!({"containers": [{"name": "build", "image": "a"}], "initContainers": [{"name": "init-permissions", "image": "h", "securityContext": {"privileged": true}}]}), "spec.initContainers[0].securityContext.privileged")]
#[case::host_network(json!({"hostNetwork": true}), "spec.hostNetwork is true")]
#[case::host_pid(json!({"hostPID": true}), "spec.hostPID")]
#[case::host_ipc(json!({"hostIPC": true}), "spec.hostIPC")]
#[case::host_port(json!({"containers": [{"name": "build", "image": "a", "ports": [{"containerPort": 80, "hostPort": 8080}]}]}), "hostPort")]
#[case::host_path(json!({"volumes": [{"name": "sock", "hostPath": {"path": "/var/run/docker.sock"}}]}), "spec.volumes[0].hostPath")]
fn fargate_compat(#[case] spec: Value, #[case] fragment: &str) {
    // Protected nodes by taint only, so the fargate profile is otherwise clean.
    let mut p = reference();
    p.protected_nodes.match_labels.clear();
    let mut spec = spec;
    spec["affinity"] = terms(
        json!([{"matchExpressions": [expr("eks.amazonaws.com/compute-type", "In", &["fargate"])]}]),
    );
    let mut pd = pod(spec.clone());
    pd["metadata"]["labels"] = json!({"runner-fence.dev/profile": "fargate"});
    let d = validate(&p, pd, None);
    assert_eq!(rules(&d), vec![RuleId::FargateCompat], "{:?}", d.message());
    let msg = d.message().unwrap_or_default();
    assert!(msg.contains(fragment), "{msg}");
    assert!(msg.contains("Fargate cannot"), "{msg}");
    // The way out is the first profile (by name) that is not a Fargate one and
    // that the namespace may use: `fargate` sorts first and is allowed here.
    assert!(
        msg.contains("or use the runner-nodes profile (without the Fargate labels)"),
        "{msg}"
    );
    let mut only_fargate = p.clone();
    if let Some(r) = only_fargate.placement.profiles.get_mut("runner-nodes") {
        r.namespaces = Some(vec!["elsewhere".into()]);
    }
    let mut pd = pod(spec.clone());
    pd["metadata"]["labels"] = json!({"runner-fence.dev/profile": "fargate"});
    let msg = validate(&only_fargate, pd, None)
        .message()
        .unwrap_or_default();
    assert!(
        msg.contains(fragment) && !msg.contains("or use the"),
        "{msg}"
    );
    // The same pod on the runner-nodes profile is not fargate-compat's business.
    let mut runner = pod(spec);
    runner["spec"]["affinity"] = terms(json!([{"matchExpressions": [RUNNER()]}]));
    let d = validate(&p, runner, None);
    assert!(!rules(&d).contains(&RuleId::FargateCompat));
}

#[rstest]
#[case::over_max(json!({"requests": {"cpu": "4500m"}}), true, "above the maximum 4")]
#[case::at_max(json!({"requests": {"cpu": "4", "memory": "16Gi"}}), false, "")]
#[case::decimal_vs_binary(json!({"requests": {"memory": "17G"}}), false, "")]
#[case::binary_over(json!({"requests": {"memory": "17Gi"}}), true, "memory 17Gi")]
#[case::limit_below_request(json!({"requests": {"cpu": "1"}, "limits": {"cpu": "500m"}}), true, "limit cpu 500m is below its request 1")]
#[case::limit_equal(json!({"requests": {"cpu": "1"}, "limits": {"cpu": "1000m"}}), false, "")]
fn resources_rule(#[case] resources: Value, #[case] denied: bool, #[case] fragment: &str) {
    let p = reference_with("resources: audit", "resources: enforce");
    let spec = json!({"affinity": terms(json!([{"matchExpressions": [RUNNER()]}])),
        "containers": [{"name": "build", "image": "a", "resources": resources}]});
    let d = validate(&p, pod(spec), None);
    assert_eq!(
        rules(&d).contains(&RuleId::Resources),
        denied,
        "{:?}",
        d.message()
    );
    assert!(d.message().unwrap_or_default().contains(fragment));
}

#[test]
fn clamp_lowers_requests_during_mutation() {
    let p = reference_with("onExceed: deny", "onExceed: clamp");
    let spec = json!({"containers": [{"name": "build", "image": "a", "resources": {"requests": {"cpu": "6", "memory": "1Gi"}}}]});
    let ev = runner_fence::webhook::eval::evaluate(&p, &review_of(pod(spec), "CREATE"), None)
        .expect("eval");
    assert_eq!(
        ev.pod["spec"]["containers"][0]["resources"]["requests"]["cpu"],
        "4"
    );
    assert_eq!(
        ev.pod["spec"]["containers"][0]["resources"]["requests"]["memory"],
        "1Gi"
    );
    assert!(ev.validate_decision.audited().is_empty() && ev.validate_decision.denials().is_empty());
}

#[test]
fn defaults_never_exceed_a_containers_own_limit() {
    let spec = json!({"containers": [{"name": "build", "image": "a", "resources": {"limits": {"memory": "512Mi"}}}]});
    let ev =
        runner_fence::webhook::eval::evaluate(&reference(), &review_of(pod(spec), "CREATE"), None)
            .expect("eval");
    assert_eq!(
        ev.pod["spec"]["containers"][0]["resources"]["requests"]["memory"],
        "512Mi"
    );
    assert_eq!(
        ev.pod["spec"]["containers"][0]["resources"]["requests"]["cpu"],
        "500m"
    );
    assert!(ev.allowed(), "{:?}", ev.messages());
}

#[test]
fn placement_requires_the_profile_labels() {
    // Validation alone (no mutating webhook): a pod without the requirement is denied.
    let d = validate(
        &reference(),
        pod(json!({"nodeSelector": {"workload": "gitlab-runner"}})),
        None,
    );
    assert!(
        !rules(&d).contains(&RuleId::Placement),
        "nodeSelector implies the requirement: {:?}",
        d.message()
    );
    let d = validate(
        &reference(),
        pod(
            json!({"affinity": terms(json!([{"matchExpressions": [expr("workload", "In", &["gitlab-runner", "batch"])]}]))}),
        ),
        None,
    );
    assert!(rules(&d).contains(&RuleId::Placement), "{:?}", d.message());
    assert!(
        d.message()
            .unwrap_or_default()
            .contains("does not require workload=gitlab-runner of profile runner-nodes")
    );
}

#[test]
fn mutation_ands_into_every_term_and_keeps_match_fields() {
    let spec = json!({"affinity": terms(json!([
        {"matchExpressions": [expr("zone", "In", &["a"])]},
        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["runner-1"]}]}]))});
    let ev =
        runner_fence::webhook::eval::evaluate(&reference(), &review_of(pod(spec), "CREATE"), None)
            .expect("eval");
    let t = &ev.pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        ["nodeSelectorTerms"];
    assert_eq!(t.as_array().map(Vec::len), Some(2), "no term is added");
    assert_eq!(
        t[0]["matchExpressions"],
        json!([expr("zone", "In", &["a"]), RUNNER()])
    );
    assert_eq!(t[1]["matchExpressions"], json!([RUNNER()]));
    assert_eq!(t[1]["matchFields"][0]["values"], json!(["runner-1"]));
    assert!(ev.allowed(), "{:?}", ev.messages());
}

#[test]
fn non_pod_kinds_and_missing_objects_are_clear_denials() {
    let p = reference();
    let mut r = review_of(pod(json!({})), "CREATE");
    r["request"]["kind"] = json!({"group": "apps", "version": "v1", "kind": "Deployment"});
    r["request"]["resource"] = json!({"group": "apps", "version": "v1", "resource": "deployments"});
    let d = handle(&p, Endpoint::Validate, &r);
    assert!(!d.decision.allowed());
    assert_eq!(
        serde_json::to_value(&d.response).expect("json")["response"]["status"]["code"],
        400
    );
    assert!(
        d.decision.message().unwrap_or_default().contains(
            "only pods, pods/binding, bindings, pods/ephemeralcontainers and pods/resize"
        )
    );
    let mut r = review_of(pod(json!({})), "CREATE");
    r["request"]["object"] = Value::Null;
    let d = handle(&p, Endpoint::Mutate, &r);
    assert!(
        d.decision
            .message()
            .unwrap_or_default()
            .contains("has no object")
    );
    let mut r = review_of(pod(json!({})), "CREATE");
    r["request"]["object"]["spec"]["containers"] = json!("not a list");
    let d = handle(&p, Endpoint::Mutate, &r);
    assert!(
        d.decision
            .message()
            .unwrap_or_default()
            .contains("not a valid Pod"),
        "{:?}",
        d.decision.message()
    );
}

#[test]
fn update_is_judged_on_what_it_changes() {
    let p = reference();
    let old = pod(json!({"nodeName": "gitlab-1"}));
    let mut new = old.clone();
    new["metadata"]["labels"] = json!({"x": "y"});
    let mut r = review_of(new, "UPDATE");
    r["request"]["oldObject"] = old.clone();
    let d = handle(&p, Endpoint::Validate, &r);
    assert!(
        d.decision.allowed(),
        "pre-existing violations do not block an update: {:?}",
        d.decision.message()
    );
    let mut new = old.clone();
    new["spec"]["tolerations"] = json!([{"operator": "Exists"}]);
    let mut r = review_of(new, "UPDATE");
    r["request"]["oldObject"] = old;
    let d = handle(&p, Endpoint::Validate, &r);
    assert_eq!(rules(&d.decision), vec![RuleId::ProtectedNodes]);
    // UPDATE is never mutated.
    let m = handle(&p, Endpoint::Mutate, &r);
    assert!(m.decision.allowed() && m.decision.patch().is_empty());
}

#[test]
fn per_rule_audit_is_reported_while_the_rest_is_enforced() {
    let p = reference_with("resources: audit", "resources: audit\n  node-name: audit");
    let d = validate(
        &p,
        pod(
            json!({"nodeName": "somewhere", "affinity": terms(json!([{"matchExpressions": [RUNNER()]}]))}),
        ),
        None,
    );
    assert!(d.allowed(), "{:?}", d.message());
    assert_eq!(d.audited().len(), 1);
    assert!(d.warnings()[0].contains("would deny: node-name"));
}

#[test]
fn a_prefer_no_schedule_taint_does_not_keep_a_pod_off_a_protected_node() {
    // Protected by name only, so only the live check can see the risk; the node's one
    // taint is PreferNoSchedule, which the scheduler may ignore.
    let mut p = reference();
    p.protected_nodes.match_labels.clear();
    p.protected_nodes.match_expressions.clear();
    p.protected_nodes.names = vec!["soft-gitlab".into()];
    let nodes = NodeSnapshot::new([NodeInfo {
        name: "soft-gitlab".into(),
        labels: [("zone".to_string(), "a".to_string())].into(),
        taints: vec![k8s_openapi::api::core::v1::Taint {
            key: "workload".into(),
            value: Some("gitlab".into()),
            effect: "PreferNoSchedule".into(),
            time_added: None,
        }],
    }]);
    let spec =
        json!({"affinity": terms(json!([{"matchExpressions": [expr("zone", "In", &["a"])]}]))});
    let d = validate(&p, pod(spec), Some(&nodes));
    assert!(
        d.denials()
            .iter()
            .any(|v| matches!(&v.cause, Cause::SchedulableOnProtected { nodes } if nodes == &["soft-gitlab".to_string()])),
        "{:?}",
        d.message()
    );
}

#[test]
fn a_term_that_contradicts_itself_is_named_as_such_not_as_a_profile_conflict() {
    // Found by the structured_pod fuzz target (fuzz/artifacts crash-11d67f20...):
    // `zone NotIn [v0]` AND `zone In [v0]` can match no node, whatever the profile.
    let spec = json!({"affinity": terms(json!([{"matchExpressions": [
        expr("topology.kubernetes.io/zone", "NotIn", &["v0"]),
        expr("topology.kubernetes.io/zone", "In", &["v0"]),
        expr("disk", "In", &["ssd"]),
        RUNNER()]}]))});
    let d = validate(&reference(), pod(spec), None);
    assert_eq!(rules(&d), vec![RuleId::Placement], "{:?}", d.message());
    // The culprit is the two zone requirements: not the satisfiable `disk` one,
    // nor the profile's own.
    let Cause::Unsatisfiable { culprit } = &d.denials()[0].cause else {
        panic!("{:?}", d.denials());
    };
    let keys: Vec<(&str, String)> = culprit
        .iter()
        .map(|r| (r.key.as_str(), format!("{:?}", r.operator)))
        .collect();
    assert_eq!(
        keys,
        [
            ("topology.kubernetes.io/zone", "NotIn".to_string()),
            ("topology.kubernetes.io/zone", "In".to_string())
        ],
        "{culprit:?}"
    );
    assert!(
        d.message()
            .unwrap_or_default()
            .contains("can be met by no node")
    );
}

#[test]
fn audit_mode_judges_a_create_as_enforce_mode_would_have_mutated_it() {
    // A plain job pod has no placement: enforce mode's mutation would add it, so
    // audit mode reports nothing for the CREATE.
    let p = reference_with("mode: enforce ", "mode: audit   ");
    let create = validate(&p, pod(json!({})), None);
    assert!(create.allowed());
    assert!(
        create.audited().is_empty(),
        "CREATE audited: {:?}",
        create.warnings()
    );
    // The same pod unmutated is what enforce mode would deny: audit says so when
    // the placement is missing from the pod as it will be stored.
    let enforced = validate(&reference(), pod(json!({})), None);
    assert!(!enforced.allowed());
}

/// A nodeSelector entry that contradicts the profile is named as the
/// nodeSelector's, and only that one (not its other, compatible entries).
#[test]
fn a_node_selector_conflicting_with_the_profile_names_its_entry() {
    let spec = json!({"nodeSelector": {"disk": "ssd", "workload": "batch"}});
    let d = validate(&reference(), pod(spec), None);
    assert_eq!(rules(&d), vec![RuleId::Placement], "{:?}", d.message());
    let v = &d.denials()[0];
    assert_eq!(v.path, "spec.nodeSelector");
    let Cause::ConflictsWithProfile {
        culprit, profile, ..
    } = &v.cause
    else {
        panic!("{:?}", d.denials());
    };
    assert_eq!(profile, "runner-nodes");
    let keys: Vec<&str> = culprit.iter().map(|r| r.key.as_str()).collect();
    assert_eq!(keys, ["workload"], "{culprit:?}");
}

/// The same conflict written in a required term is named at the term, by its
/// conflicting requirement alone.
#[test]
fn a_term_conflicting_with_the_profile_names_its_requirement() {
    let spec = json!({"affinity": terms(json!([{"matchExpressions": [
        expr("disk", "In", &["ssd"]),
        expr("workload", "In", &["batch"])]}]))});
    let d = validate(&reference(), pod(spec), None);
    assert_eq!(rules(&d), vec![RuleId::Placement], "{:?}", d.message());
    let v = &d.denials()[0];
    assert!(v.path.starts_with("spec.affinity"), "{}", v.path);
    let Cause::ConflictsWithProfile { culprit, .. } = &v.cause else {
        panic!("{:?}", d.denials());
    };
    let keys: Vec<&str> = culprit.iter().map(|r| r.key.as_str()).collect();
    assert_eq!(keys, ["workload"], "{culprit:?}");
}
