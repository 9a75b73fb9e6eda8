//! The in-tree backstop (`render admission-policy`), its CEL evaluated with a
//! real CEL implementation on what the apiserver would send while runner-fence
//! is down: unmutated pods are denied, pods runner-fence patched pass.
//! (tests/e2e.rs runs the same policy in a real kube-apiserver.)

mod backstop_cel;
mod common;

use backstop_cel::{Verdict, backstop, mutated, rendered, request, validated, verdict};
use common::{fixture, fixture_names, reference};
use rstest::rstest;
use runner_fence::core::policy::Policy;
use serde_json::{Value, json};

#[rstest]
#[case::plain("plain-job.json")]
#[case::services("job-with-services.json")]
#[case::aliased("job-with-aliased-service.json")]
#[case::kaniko("kaniko-build-job.json")]
#[case::dind("dind-privileged-job.json")]
#[case::fargate("fargate-job.json")]
#[case::operator_pod("unrelated-pod-same-namespace.json")]
fn pods_runner_fence_patched_pass_and_unmutated_ones_are_denied(#[case] name: &str) {
    let p = reference();
    let review = fixture(name);
    assert_eq!(
        backstop(&p, &request(&mutated(&p, &review))),
        Ok(()),
        "{name}: mutated"
    );
    // runner-fence down, mutating webhook Ignore: the raw pod reaches the backstop.
    let err = backstop(&p, &request(&review)).expect_err("unmutated pod");
    assert!(
        err[0].starts_with("placement: spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms (or spec.nodeSelector) does not require the node labels of a runner-fence profile"),
        "{err:?}"
    );
    // It lists each profile with the labels it requires.
    assert!(
        err[0].contains("(fargate: eks.amazonaws.com/compute-type=fargate; runner-nodes: workload=gitlab-runner)"),
        "{err:?}"
    );
}

fn with_spec(name: &str, f: impl FnOnce(&mut Value)) -> Value {
    let p = reference();
    let mut r = mutated(&p, &fixture(name));
    f(&mut r["request"]["object"]["spec"]);
    request(&r)
}

#[rstest]
#[case::tolerate_all(with_spec("plain-job.json", |s| s["tolerations"] = json!([{"operator": "Exists"}])), "protected-nodes: spec.tolerations[0] tolerates workload=gitlab:NoSchedule, the taint protectedNodes.taints lists for GitLab's nodes (it tolerates every taint (empty key, operator Exists)); remove the KUBERNETES_NODE_TOLERATIONS_* override [runner-fence backstop]")]
#[case::key_only_exists(with_spec("plain-job.json", |s| s["tolerations"] = json!([{"key": "workload", "operator": "Exists"}])), "protected-nodes: spec.tolerations[0] tolerates workload=gitlab:NoSchedule, the taint protectedNodes.taints lists for GitLab's nodes (it tolerates workload (any value) with any effect); remove the KUBERNETES_NODE_TOLERATIONS_* override [runner-fence backstop]")]
#[case::gitlab_toleration(with_spec("plain-job.json", |s| s["tolerations"] = json!([{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"}, {"key": "workload", "value": "gitlab", "effect": "NoSchedule"}])), "protected-nodes: spec.tolerations[1] tolerates workload=gitlab:NoSchedule, the taint protectedNodes.taints lists for GitLab's nodes; remove the KUBERNETES_NODE_TOLERATIONS_* override [runner-fence backstop]")]
#[case::node_name(with_spec("plain-job.json", |s| s["nodeName"] = json!("gitlab-1")), "node-name: spec.nodeName is set to gitlab-1; job pods must be placed by the scheduler, remove spec.nodeName")]
#[case::extra_or_term(with_spec("plain-job.json", |s| {
    let terms = &mut s["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"];
    if let Some(t) = terms.as_array_mut() { t.push(json!({"matchExpressions": [{"key": "workload", "operator": "In", "values": ["gitlab"]}]})); }
}), "placement: spec.affinity")]
#[case::widened_values(with_spec("plain-job.json", |s| {
    s["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0]["matchExpressions"]
        = json!([{"key": "workload", "operator": "In", "values": ["gitlab-runner", "gitlab"]}]);
}), "placement: spec.affinity")]
#[case::match_fields_only(with_spec("plain-job.json", |s| {
    s["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
        = json!([{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["gitlab-1"]}]}]);
}), "placement: spec.affinity")]
fn what_could_reach_gitlab_nodes_is_denied(#[case] req: Value, #[case] message: &str) {
    let err = backstop(&reference(), &req).expect_err("denied");
    assert!(err.iter().any(|m| m.contains(message)), "{err:?}");
}

#[test]
fn a_node_selector_alone_can_carry_a_single_value_requirement() {
    let req = with_spec("plain-job.json", |s| {
        if let Some(o) = s.as_object_mut() {
            o.remove("affinity");
        }
        s["nodeSelector"] = json!({"workload": "gitlab-runner", "kubernetes.io/arch": "amd64"});
    });
    assert_eq!(backstop(&reference(), &req), Ok(()));
}

#[test]
fn updates_are_checked_for_what_they_change() {
    // A pod admitted before the backstop (no affinity) may still get a label edit...
    let mut review = fixture("job-pod-update.json");
    let mut r = request(&review);
    assert_eq!(
        backstop(&reference(), &r),
        Ok(()),
        "label edit on an old pod"
    );
    // ...but not a new toleration of GitLab's taint.
    r["object"]["spec"]["tolerations"] = json!([{"operator": "Exists"}]);
    assert!(backstop(&reference(), &r).is_err());
    review["request"]["object"]["spec"]["nodeSelector"] = json!({"workload": "gitlab"});
    assert!(
        backstop(&reference(), &request(&review)).is_err(),
        "nodeSelector added while gated"
    );
}

#[test]
fn bindings_to_named_protected_nodes_are_denied() {
    let mut p = reference();
    p.protected_nodes.names = vec!["gitlab-1".into()];
    let binding = |node: &str| {
        json!({"kind": {"group": "", "version": "v1", "kind": "Binding"}, "resource": {"group": "", "version": "v1", "resource": "pods"},
            "subResource": "binding", "namespace": "gitlab-runner", "operation": "CREATE", "oldObject": null,
            "object": {"kind": "Binding", "metadata": {"name": "x"}, "target": {"kind": "Node", "name": node}}})
    };
    assert_eq!(
        backstop(&p, &binding("gitlab-1")),
        Err(vec!["protected-nodes: target.name binds the job pod to protected GitLab node gitlab-1 (listed in protectedNodes.names); job pods must run on runner nodes or Fargate [runner-fence backstop]".to_string()])
    );
    assert_eq!(backstop(&p, &binding("runner-1")), Ok(()));
}

#[test]
fn profiles_restricted_to_other_namespaces_do_not_count() {
    let text = runner_fence::core::policy::EMBEDDED_POLICY
        .replacen(
            "namespaces: [gitlab-runner]",
            "namespaces: [gitlab-runner, ci-job-*]",
            1,
        )
        .replacen(
            "      fargate: true\n",
            "      fargate: true\n      namespaces: [ci-job-*]\n",
            1,
        );
    let p = runner_fence::core::policy::parse(&text, "t.yaml").expect("policy");
    let mut review = fixture("fargate-job.json");
    let ok = mutated(&p, &{
        let mut r = review.clone();
        r["request"]["namespace"] = json!("ci-job-7");
        r
    });
    assert_eq!(backstop(&p, &request(&ok)), Ok(()), "fargate in ci-job-*");
    // The same Fargate placement in gitlab-runner, where the profile is not allowed.
    review["request"]["object"] = ok["request"]["object"].clone();
    assert!(backstop(&p, &request(&review)).is_err());
    // Outside the runner namespaces the backstop does not apply.
    let mut outside = request(&fixture("plain-job.json"));
    outside["namespace"] = json!("default");
    assert_eq!(backstop(&p, &outside), Ok(()));
    // `namespaces: []` allows the profile nowhere, in the backstop as in the
    // engine: the Fargate placement is denied in ci-job-7 too.
    let nowhere = runner_fence::core::policy::parse(
        &text.replacen("namespaces: [ci-job-*]\n", "namespaces: []\n", 1),
        "t.yaml",
    )
    .expect("policy");
    assert_eq!(
        nowhere.placement.profiles["fargate"].namespaces,
        Some(vec![])
    );
    let mut in_ci = review.clone();
    in_ci["request"]["namespace"] = json!("ci-job-7");
    assert!(backstop(&nowhere, &request(&in_ci)).is_err());
    assert!(
        !validated(&nowhere, &in_ci).allowed(),
        "the engine denies it too"
    );
}

/// A pod created before enforcement (before install, in audit mode, before its
/// namespace joined the policy), waiting behind a scheduling gate with GitLab's
/// selector and toleration: the UPDATE that ungates it is judged like a creation.
fn gated_gitlab_pod_update(gates_after: Value) -> Value {
    let mut r = request(&fixture("job-pod-update.json"));
    let spec = json!({
        "schedulingGates": [{"name": "example.com/hold"}],
        "nodeSelector": {"workload": "gitlab"},
        "tolerations": [{"key": "workload", "value": "gitlab", "effect": "NoSchedule"}],
        "containers": [{"name": "build", "image": "alpine", "securityContext": {"privileged": true}}],
    });
    r["oldObject"]["spec"] = spec.clone();
    r["object"]["spec"] = spec;
    r["object"]["spec"]["schedulingGates"] = gates_after;
    r
}

#[rstest]
#[case::gates_removed(json!(null))]
#[case::gates_emptied(json!([]))]
fn ungating_a_pod_judges_it_like_a_creation(#[case] gates_after: Value) {
    let mut req = gated_gitlab_pod_update(gates_after.clone());
    if gates_after.is_null()
        && let Some(spec) = req["object"]["spec"].as_object_mut()
    {
        spec.remove("schedulingGates");
    }
    let err = backstop(&reference(), &req).expect_err("ungating a GitLab-bound pod");
    assert!(err.iter().any(|m| m.starts_with("placement: ")), "{err:?}");
    assert!(
        err.iter()
            .any(|m| m.starts_with("protected-nodes: spec.tolerations")),
        "{err:?}"
    );
}

#[test]
fn an_update_that_keeps_the_gate_is_checked_for_what_it_changes() {
    let mut req = gated_gitlab_pod_update(json!([{"name": "example.com/hold"}]));
    req["object"]["metadata"]["labels"]["edited"] = json!("yes");
    assert_eq!(backstop(&reference(), &req), Ok(()));
}

#[test]
fn narrowing_the_affinity_of_a_pod_placed_by_its_node_selector_is_allowed() {
    // Admitted through the nodeSelector path (no affinity), then narrowed while gated.
    let spec = |s: &mut Value| {
        if let Some(o) = s.as_object_mut() {
            o.remove("affinity");
        }
        s["nodeSelector"] = json!({"workload": "gitlab-runner"});
        s["schedulingGates"] = json!([{"name": "example.com/hold"}]);
    };
    let mut req = with_spec("plain-job.json", spec);
    req["operation"] = json!("UPDATE");
    req["oldObject"] = req["object"].clone();
    req["object"]["spec"]["affinity"] = json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [{"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["eu-west-1a"]}]}]}}});
    assert_eq!(backstop(&reference(), &req), Ok(()));
    // Widening is not narrowing: a second term without the requirement, and no
    // nodeSelector requirement to carry it, is still denied.
    if let Some(o) = req["object"]["spec"].as_object_mut() {
        o.remove("nodeSelector");
    }
    assert!(backstop(&reference(), &req).is_err());
}

#[test]
fn audited_rules_warn_and_enforced_ones_deny() {
    let text = runner_fence::core::policy::EMBEDDED_POLICY.replacen(
        "  resources: audit\n",
        "  resources: audit\n  protected-nodes: audit\n  node-name: audit\n",
        1,
    );
    let p = runner_fence::core::policy::parse(&text, "t.yaml").expect("policy");
    let objs = rendered(&p);
    let names: Vec<&Value> = objs
        .iter()
        .filter(|o| o["kind"] == "ValidatingAdmissionPolicy")
        .map(|o| &o["metadata"]["name"])
        .collect();
    assert_eq!(
        names,
        [
            &json!("runner-fence-backstop"),
            &json!("runner-fence-backstop-audit")
        ]
    );
    let req = with_spec("plain-job.json", |s| {
        s["tolerations"] = json!([{"operator": "Exists"}]);
        s["nodeName"] = json!("gitlab-1");
    });
    let v = verdict(&p, &req);
    // protected-nodes and node-name audit: the toleration and nodeName warn...
    assert!(v.denied.is_empty(), "{v:?}");
    assert_eq!(v.warned.len(), 2, "{v:?}");
    assert!(
        v.warned[0].starts_with("protected-nodes: spec.tolerations"),
        "{v:?}"
    );
    assert!(v.warned[1].starts_with("node-name: spec.nodeName"), "{v:?}");
    // ...while placement still enforces: an unmutated pod is denied.
    let raw = verdict(&p, &request(&fixture("plain-job.json")));
    assert_eq!(raw.denied.len(), 1, "{raw:?}");
    assert!(raw.denied[0].starts_with("placement: "), "{raw:?}");
    // The whole policy in audit mode: one policy, bound Warn, Audit.
    let audit = runner_fence::core::policy::parse(
        &runner_fence::core::policy::EMBEDDED_POLICY.replacen("mode: enforce", "mode: audit", 1),
        "t.yaml",
    )
    .expect("policy");
    let objs = rendered(&audit);
    assert_eq!(objs.len(), 2);
    assert_eq!(
        objs[1]["spec"]["validationActions"],
        json!(["Warn", "Audit"])
    );
    assert!(
        verdict(&audit, &request(&fixture("plain-job.json")))
            .denied
            .is_empty()
    );
}

/// The reference policy with `mode: audit`: the mutating webhook patches nothing.
fn audit_policy() -> Policy {
    runner_fence::core::policy::parse(
        &runner_fence::core::policy::EMBEDDED_POLICY.replacen("mode: enforce", "mode: audit", 1),
        "audit.yaml",
    )
    .expect("policy")
}

/// The validating webhook's violations for a review, as its messages word for
/// word: what it denies, or in audit mode reports.
fn webhook_violations(p: &Policy, review: &Value) -> Vec<String> {
    let d = validated(p, review);
    d.denials()
        .iter()
        .chain(d.audited())
        .map(ToString::to_string)
        .collect()
}

/// Every CREATE fixture in the runner namespace, and the attacks on a plain job.
fn creations(f: impl Fn(&Value) -> Value) -> Vec<(String, Value)> {
    let mut out: Vec<(String, Value)> = fixture_names()
        .into_iter()
        .map(|n| (n.clone(), fixture(&n)))
        .filter(|(_, r)| {
            r["request"]["operation"] == "CREATE" && r["request"]["namespace"] == "gitlab-runner"
        })
        .collect();
    let attacks: [(&str, Value); 5] = [
        (
            "tolerate-all",
            json!({"tolerations": [{"operator": "Exists"}]}),
        ),
        (
            "key-only",
            json!({"tolerations": [{"key": "workload", "operator": "Exists", "effect": "NoSchedule"}]}),
        ),
        (
            "gitlab-toleration-second",
            json!({"tolerations": [{"key": "a", "value": "b"}, {"key": "workload", "value": "gitlab", "effect": "NoSchedule"}]}),
        ),
        ("node-name", json!({"nodeName": "gitlab-1"})),
        (
            "gitlab-selector",
            json!({"nodeSelector": {"workload": "gitlab"}}),
        ),
    ];
    for (name, spec) in attacks {
        let mut r = fixture("plain-job.json");
        for (k, v) in spec.as_object().into_iter().flatten() {
            r["request"]["object"]["spec"][k] = v.clone();
        }
        out.push((name.to_string(), r));
    }
    out.into_iter().map(|(n, r)| (n, f(&r))).collect()
}

const SOURCE: &str = " [runner-fence backstop]";

/// The backstop's messages about tolerations and nodeName are the webhook's
/// own for the same pod (the first such violation: one message per check).
fn assert_same_words(name: &str, backstop: &[String], webhook: &[String]) {
    for m in backstop {
        let text = m
            .strip_suffix(SOURCE)
            .unwrap_or_else(|| panic!("{name}: {m:?} does not say where it comes from"));
        if !text.starts_with("placement: ") {
            assert!(
                webhook.iter().any(|w| w == text),
                "{name}: the backstop says {text:?}, the webhook {webhook:?}"
            );
        }
    }
    for prefix in [
        "protected-nodes: spec.tolerations[",
        "node-name: spec.nodeName",
    ] {
        let first = |list: &[String]| {
            list.iter()
                .map(|m| m.trim_end_matches(SOURCE).to_string())
                .find(|m| m.starts_with(prefix))
        };
        assert_eq!(first(backstop), first(webhook), "{name}: {prefix}");
    }
}

#[test]
fn in_audit_mode_the_backstop_warns_only_what_enforce_mode_would_deny_in_the_webhooks_words() {
    let p = audit_policy();
    let mut warned = Vec::new();
    // Audit mode patches nothing: the backstop sees the pods as created.
    for (name, review) in creations(Value::clone) {
        let v = verdict(&p, &request(&review));
        assert!(v.denied.is_empty(), "{name}: audit mode denies {v:?}");
        assert_same_words(&name, &v.warned, &webhook_violations(&p, &review));
        if !v.warned.is_empty() {
            warned.push(name);
        }
    }
    // An unmutated job pod is what audit mode admits: no warning (it used to
    // warn on every pod that the mutating webhook was probably not running).
    assert_eq!(
        verdict(&p, &request(&fixture("plain-job.json"))),
        Verdict::default()
    );
    assert_eq!(
        warned,
        [
            "job-with-toleration-overwrite.json",
            "tolerate-all",
            "key-only",
            "gitlab-toleration-second",
            "node-name"
        ]
    );
    assert_eq!(
        verdict(&p, &request(&fixture("job-with-toleration-overwrite.json"))).warned,
        [
            "protected-nodes: spec.tolerations[0] tolerates workload=gitlab:NoSchedule, the taint protectedNodes.taints lists for GitLab's nodes; remove the KUBERNETES_NODE_TOLERATIONS_* override [runner-fence backstop]"
        ]
    );
    // The audit-mode backstop has no placement check: nothing it could judge
    // without the mutation.
    let objs = rendered(&p);
    let validations = objs[0]["spec"]["validations"].as_array().expect("list");
    assert!(
        validations.iter().all(|v| !v["message"]
            .as_str()
            .unwrap_or("")
            .starts_with("placement:")),
        "{validations:?}"
    );
}

#[test]
fn in_enforce_mode_the_backstop_denies_tolerations_and_node_name_in_the_webhooks_words() {
    let p = reference();
    for (name, review) in creations(|r| mutated(&reference(), r)) {
        let v = verdict(&p, &request(&review));
        assert!(v.warned.is_empty(), "{name}: {v:?}");
        assert_same_words(&name, &v.denied, &webhook_violations(&p, &review));
    }
}

// ---- differential: the backstop's CEL against the Rust engine ----
//
// The backstop claims one thing: it never admits a pod that the engine says can
// reach a protected node (it may deny more). And it must not deny what the
// mutating webhook placed, or job pods would fail while runner-fence is up (the
// apiserver runs admission policies before the webhooks' verdict counts).

mod differential {
    use super::*;
    use backstop_cel::{
        admits_what_runner_fence_places, engine_reaches, never_admits_what_reaches, pod, review_of,
        ungating_review,
    };
    use proptest::prelude::*;

    use backstop_cel::{
        EFFECTS, KEYS, NODE_NAMES, PROFILE_LABELS, PROFILE_REQUIREMENTS, REQUIREMENT_OPERATORS,
        TOLERATION_OPERATORS, VALUES,
    };
    use proptest::option::of;
    use proptest::sample::{select, subsequence};

    fn toleration() -> impl Strategy<Value = Value> {
        (
            of(select(KEYS)),
            of(select(TOLERATION_OPERATORS)),
            of(select(VALUES)),
            of(select(EFFECTS)),
        )
            .prop_map(|(k, op, v, e)| backstop_cel::toleration(k, op, v, e))
    }

    fn requirement() -> impl Strategy<Value = Value> {
        prop_oneof![
            (
                select(&KEYS[..3]),
                select(REQUIREMENT_OPERATORS),
                subsequence(&VALUES[..5], 1..3),
            )
                .prop_map(|(k, op, vals)| backstop_cel::requirement(k, op, &vals)),
            (select(PROFILE_REQUIREMENTS), of(select(&VALUES[..5])))
                .prop_map(|(p, extra)| backstop_cel::near_profile(p, extra)),
        ]
    }

    fn spec() -> impl Strategy<Value = Value> {
        (
            proptest::collection::btree_map(select(&KEYS[..3]), select(&VALUES[..5]), 0..3),
            of(proptest::collection::vec(
                proptest::collection::vec(requirement(), 0..3),
                0..3,
            )),
            proptest::collection::vec(toleration(), 0..3),
            of(select(NODE_NAMES)),
        )
            .prop_map(|(ns, terms, tols, node)| backstop_cel::spec(&ns, terms, tols, node))
    }

    /// Protected taints: a key, and a value and effect or neither.
    #[allow(clippy::type_complexity)]
    fn taints()
    -> impl Strategy<Value = Vec<(&'static str, Option<&'static str>, Option<&'static str>)>> {
        proptest::collection::vec(
            (
                select(&KEYS[..3]),
                of(select(VALUES)),
                of(select(&EFFECTS[..3])),
            ),
            1..3,
        )
    }

    fn labels() -> impl Strategy<Value = Value> {
        of(select(PROFILE_LABELS)).prop_map(backstop_cel::labels)
    }

    /// Both outcomes of each property are reached: the engine admits a placed plain
    /// pod and finds the way to a protected node for GitLab's selector, the backstop
    /// admits the one and denies the other. A change that made either side judge
    /// every pod alike would leave the properties true for nothing.
    #[test]
    fn the_properties_are_not_vacuous() {
        let p = reference();
        let spec = |ns: &[(&'static str, &'static str)]| {
            backstop_cel::spec(&ns.iter().copied().collect(), None, Vec::new(), None)
        };
        let placed = mutated(&p, &review_of(&pod(json!({}), spec(&[])), "CREATE", None));
        let v = validated(&p, &placed);
        assert!(v.allowed(), "{:?}", v.message());
        assert_eq!(backstop(&p, &request(&placed)), Ok(()));
        let gitlab = review_of(
            &pod(json!({}), spec(&[("workload", "gitlab")])),
            "CREATE",
            None,
        );
        assert!(!engine_reaches(&p, &gitlab).is_empty());
        assert!(backstop(&p, &request(&gitlab)).is_err());
        // A protected taint with value and effect open: both outcomes again.
        let open = backstop_cel::with_taints(&[("topology.kubernetes.io/zone", None, None)]);
        let placed = mutated(
            &open,
            &review_of(&pod(json!({}), spec(&[])), "CREATE", None),
        );
        assert_eq!(backstop(&open, &request(&placed)), Ok(()));
        assert!(engine_reaches(&open, &placed).is_empty());
        let tolerating = backstop_cel::spec(
            &Default::default(),
            None,
            vec![backstop_cel::toleration(
                Some("topology.kubernetes.io/zone"),
                None,
                Some("a"),
                Some("NoExecute"),
            )],
            None,
        );
        // Placed by the mutation, so only the toleration can lead to a protected node.
        let tolerating = mutated(
            &open,
            &review_of(&pod(json!({}), tolerating), "CREATE", None),
        );
        assert!(!engine_reaches(&open, &tolerating).is_empty());
        assert!(backstop(&open, &request(&tolerating)).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 384, ..ProptestConfig::default() })]

        /// Whatever a pod asks for: what the backstop admits, the engine finds no
        /// way to a protected node for.
        #[test]
        fn the_backstop_never_admits_what_can_reach_a_protected_node(labels in labels(), spec in spec()) {
            let review = review_of(&pod(labels, spec), "CREATE", None);
            if let Err(e) = never_admits_what_reaches(&reference(), &review) {
                prop_assert!(false, "{e}");
            }
        }

        /// A pod created before enforcement, released from its gate: the same.
        #[test]
        fn ungating_is_judged_alike(labels in labels(), spec in spec()) {
            let review = ungating_review(&pod(labels, spec));
            if let Err(e) = never_admits_what_reaches(&reference(), &review) {
                prop_assert!(false, "{e}");
            }
        }

        /// Other protected taints (any value or effect left open, one of the
        /// profiles' own among them): the backstop still never admits a pod the
        /// engine finds tolerating one, and admits what runner-fence placed.
        #[test]
        fn any_protected_taints_are_judged_alike(taints in taints(), labels in labels(), spec in spec()) {
            let p = backstop_cel::with_taints(&taints);
            let review = review_of(&pod(labels, spec), "CREATE", None);
            if let Err(e) = never_admits_what_reaches(&p, &review) {
                prop_assert!(false, "{e}");
            }
            if let Err(e) = admits_what_runner_fence_places(&p, &review) {
                prop_assert!(false, "{e}");
            }
        }

        /// What the mutating webhook placed and the validating webhook admits, the
        /// backstop admits too (else job pods fail while runner-fence is up).
        #[test]
        fn what_runner_fence_places_the_backstop_admits(labels in labels(), spec in spec()) {
            let review = review_of(&pod(labels, spec), "CREATE", None);
            if let Err(e) = admits_what_runner_fence_places(&reference(), &review) {
                prop_assert!(false, "{e}");
            }
        }
    }
}
