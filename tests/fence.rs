//! The fence, tried as an attacker would (SPEC §2).
//!
//! Each case is an AdmissionReview as the apiserver would build it. It goes
//! through the scope of the *generated* webhook configurations — rules,
//! namespaceSelector and the matchConditions' CEL, evaluated with a real CEL
//! implementation — and then through the webhooks the way the apiserver calls
//! them: `/mutate`, the patch applied, `/validate` on the result. A denial only
//! counts when the request is actually sent to the webhook that denies it.

mod common;

use common::fixture;
use rstest::rstest;
use runner_fence::core::engine::Endpoint;
use runner_fence::core::nodes::{NodeInfo, NodeSnapshot};
use runner_fence::core::policy::{Policy, RuleId};
use runner_fence::core::render::webhooks::{Options, configurations};
use runner_fence::webhook::admission;
use serde_json::{Value, json};

/// The reference policy, with a `namespace_per_job` prefix, every rule enforced
/// (the reference audits `resources`), and one profile only `ci-job-*` may use.
fn policy() -> Policy {
    let text = runner_fence::core::policy::EMBEDDED_POLICY
        .replacen("rules:                             # per-rule mode overrides\n  resources: audit\n", "", 1)
        .replacen("namespaces: [gitlab-runner]", "namespaces: [gitlab-runner, ci-job-*]", 1)
        .replacen(
            "  profiles:\n",
            "  profiles:\n    docker:\n      namespaces: [ci-job-*]\n      requiredNodeLabels:\n        - {key: workload, operator: In, values: [gitlab-runner-docker]}\n",
            1,
        );
    runner_fence::core::policy::parse(&text, "fence-test.yaml").expect("test policy")
}

fn cluster() -> NodeSnapshot {
    let node = |name: &str, labels: &[(&str, &str)]| NodeInfo {
        name: name.into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        taints: vec![],
    };
    NodeSnapshot::new([
        node("gitlab-1", &[("workload", "gitlab")]),
        node("runner-1", &[("workload", "gitlab-runner")]),
        node(
            "fargate-1",
            &[("eks.amazonaws.com/compute-type", "fargate")],
        ),
    ])
}

// ---- the apiserver's side: would it call the webhook at all? ----

struct Scope {
    rules: Vec<(Vec<String>, Vec<String>)>,
    selector: Value,
    conditions: Vec<cel::Program>,
}

fn scopes(p: &Policy) -> (Scope, Scope) {
    let (m, v) = configurations(p, &Options::service("runner-fence", "runner-fence"))
        .expect("render webhooks");
    let scope = |w: Value| Scope {
        rules: w["rules"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| {
                let strs = |k: &str| -> Vec<String> {
                    r[k].as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|x| x.as_str().map(String::from))
                        .collect()
                };
                (strs("resources"), strs("operations"))
            })
            .collect(),
        selector: w["namespaceSelector"].clone(),
        conditions: w["matchConditions"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                cel::Program::compile(c["expression"].as_str().unwrap_or("")).unwrap_or_else(|e| {
                    panic!("matchCondition {} does not compile: {e:?}", c["name"])
                })
            })
            .collect(),
    };
    let mv = serde_json::to_value(&m).expect("json");
    let vv = serde_json::to_value(&v).expect("json");
    (
        scope(mv["webhooks"][0].clone()),
        scope(vv["webhooks"][0].clone()),
    )
}

fn selector_selects(sel: &Value, ns: &str) -> bool {
    // A namespace carries its automatic name label; runner-created ones nothing more.
    sel["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
        .all(|e| {
            let values: Vec<&str> = e["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            assert_eq!(e["key"], "kubernetes.io/metadata.name");
            match e["operator"].as_str() {
                Some("In") => values.contains(&ns),
                Some("NotIn") => !values.contains(&ns),
                other => panic!("unexpected operator {other:?}"),
            }
        })
        && sel["matchLabels"].as_object().is_none_or(|m| m.is_empty())
}

fn sent(scope: &Scope, review: &Value) -> bool {
    let req = &review["request"];
    let resource = match req["subResource"].as_str() {
        Some(sub) if !sub.is_empty() => format!(
            "{}/{sub}",
            req["resource"]["resource"].as_str().unwrap_or("")
        ),
        _ => req["resource"]["resource"]
            .as_str()
            .unwrap_or("")
            .to_string(),
    };
    let op = req["operation"].as_str().unwrap_or("");
    let ns = req["namespace"].as_str().unwrap_or("");
    let rule_ok = scope
        .rules
        .iter()
        .any(|(res, ops)| res.contains(&resource) && ops.iter().any(|o| o == op));
    if !rule_ok || !selector_selects(&scope.selector, ns) {
        return false;
    }
    let mut ctx = cel::Context::default();
    ctx.add_variable_from_value("request", cel::to_value(req).expect("request as CEL"));
    ctx.add_variable_from_value(
        "object",
        cel::to_value(&req["object"]).expect("object as CEL"),
    );
    scope
        .conditions
        .iter()
        .all(|p| matches!(p.execute(&ctx), Ok(cel::Value::Bool(true))))
}

// ---- the requests ----

fn review(ns: &str, op: &str, object: Value) -> Value {
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "7c1d0a5e-0000-4000-8000-00000000f00d",
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "name": object["metadata"]["name"].as_str().unwrap_or(""),
        "namespace": ns, "operation": op,
        "userInfo": {"username": "system:serviceaccount:gitlab-runner:default"},
        "object": object, "dryRun": false}})
}

fn pod(meta: Value, spec: Value) -> Value {
    let mut spec = spec;
    if spec.get("containers").is_none() {
        spec["containers"] = json!([{"name": "build", "image": "alpine"}]);
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec})
}

const TOLERATE_ALL: fn() -> Value = || json!([{"operator": "Exists"}]);

fn to_gitlab() -> Value {
    json!({"nodeSelector": {"workload": "gitlab"}, "tolerations": TOLERATE_ALL()})
}

fn bare_pod() -> Value {
    review(
        "gitlab-runner",
        "CREATE",
        pod(
            json!({"name": "netshoot", "labels": {"run": "netshoot"}}),
            to_gitlab(),
        ),
    )
}

fn controller_pod(kind: &str, generate: &str, labels: Value, spec: Value) -> Value {
    review(
        "gitlab-runner",
        "CREATE",
        pod(
            json!({"generateName": generate, "labels": labels,
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": kind, "name": generate.trim_end_matches('-'),
                    "uid": "0f0f0f0f-0000-4000-8000-000000000001", "controller": true, "blockOwnerDeletion": true}]}),
            spec,
        ),
    )
}

fn deployment_pod() -> Value {
    controller_pod(
        "ReplicaSet",
        "miner-7d9f8b6c5d-",
        json!({"app": "miner", "pod-template-hash": "7d9f8b6c5d"}),
        to_gitlab(),
    )
}

fn daemonset_pod() -> Value {
    // The DaemonSet controller pins each pod with matchFields to one node.
    controller_pod(
        "DaemonSet",
        "agent-",
        json!({"app": "agent", "controller-revision-hash": "5d8f", "pod-template-generation": "1"}),
        json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["gitlab-1"]}]}]}}},
            "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"},
                            {"key": "workload", "operator": "Exists"}]}),
    )
}

fn job_pod() -> Value {
    let mut r = controller_pod(
        "Job",
        "exfil-",
        json!({"batch.kubernetes.io/job-name": "exfil", "job-name": "exfil", "batch.kubernetes.io/controller-uid": "x"}),
        json!({"nodeSelector": {"workload": "gitlab"}, "restartPolicy": "Never"}),
    );
    r["request"]["object"]["metadata"]["ownerReferences"][0]["apiVersion"] = json!("batch/v1");
    r
}

fn spoofed_manager() -> Value {
    // KUBERNETES_POD_LABELS_* with a permissive pod_labels_overwrite_allowed.
    let mut r = fixture("job-with-node-selector-overwrite.json");
    r["request"]["object"]["metadata"]["labels"]["app"] = json!("gitlab-runner");
    r
}

fn without_gitlab_labels() -> Value {
    let mut r = fixture("job-with-toleration-overwrite.json");
    if let Some(l) = r["request"]["object"]["metadata"]["labels"].as_object_mut() {
        l.retain(|k, _| !k.contains("gitlab.com"));
    }
    r
}

fn in_namespace(mut r: Value, ns: &str) -> Value {
    r["request"]["namespace"] = json!(ns);
    r["request"]["object"]["metadata"]["namespace"] = json!(ns);
    r
}

fn with_labels(mut r: Value, labels: Value) -> Value {
    let obj = &mut r["request"]["object"]["metadata"]["labels"];
    if !obj.is_object() {
        *obj = json!({});
    }
    for (k, v) in labels.as_object().into_iter().flatten() {
        obj[k] = v.clone();
    }
    r
}

fn privileged(mut r: Value) -> Value {
    r["request"]["object"]["spec"]["containers"][0]["securityContext"] =
        json!({"privileged": true});
    r
}

fn ephemeral_privileged_on_fargate() -> Value {
    ephemeral_privileged("fargate-job.json", "fargate-1")
}

/// A privileged ephemeral container added to a `fixture` pod bound to `node`.
fn ephemeral_privileged(fixture_name: &str, node: &str) -> Value {
    let mut old = fixture(fixture_name)["request"]["object"].clone();
    old["spec"]["nodeName"] = json!(node);
    let mut new = old.clone();
    new["spec"]["ephemeralContainers"] =
        json!([{"name": "debugger", "image": "busybox", "securityContext": {"privileged": true}}]);
    let mut r = review("gitlab-runner", "UPDATE", new);
    r["request"]["subResource"] = json!("ephemeralcontainers");
    r["request"]["oldObject"] = old;
    r
}

fn binding(resource: &str, sub: Option<&str>, pod: &str, node: &str) -> Value {
    let mut r = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "7c1d0a5e-0000-4000-8000-00000000b1d0",
        "kind": {"group": "", "version": "v1", "kind": "Binding"},
        "resource": {"group": "", "version": "v1", "resource": resource},
        "name": pod, "namespace": "gitlab-runner", "operation": "CREATE",
        "object": {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": pod, "namespace": "gitlab-runner"},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node}}}});
    if let Some(s) = sub {
        r["request"]["subResource"] = json!(s);
    }
    r
}

fn pod_level_resources() -> Value {
    let mut r = fixture("plain-job.json");
    r["request"]["object"]["spec"]["resources"] =
        json!({"requests": {"cpu": "32", "memory": "1Gi"}});
    r
}

fn resize() -> Value {
    let mut old = fixture("plain-job.json")["request"]["object"].clone();
    old["spec"]["containers"][0]["resources"] = json!({"requests": {"cpu": "1"}});
    let mut new = old.clone();
    new["spec"]["containers"][0]["resources"] = json!({"requests": {"cpu": "64"}});
    let mut r = review("gitlab-runner", "UPDATE", new);
    r["request"]["subResource"] = json!("resize");
    r["request"]["oldObject"] = old;
    r
}

fn gated_update_to_gitlab() -> Value {
    // UPDATE while scheduling-gated: the pod may still gain nodeSelector and tolerations.
    let mut old = fixture("plain-job.json")["request"]["object"].clone();
    old["spec"]["schedulingGates"] = json!([{"name": "example.com/hold"}]);
    let mut new = old.clone();
    new["spec"]["nodeSelector"] = json!({"workload": "gitlab"});
    new["spec"]["tolerations"] = TOLERATE_ALL();
    let mut r = review("gitlab-runner", "UPDATE", new);
    r["request"]["oldObject"] = old;
    r
}

/// A pod created before enforcement (before install, in audit mode, or before
/// its namespace joined the policy) waits behind a scheduling gate with GitLab's
/// selector and toleration and a hostPath; then the gate is removed.
fn ungating_a_pod_created_before_enforcement() -> Value {
    let mut old = fixture("plain-job.json")["request"]["object"].clone();
    old["spec"]["schedulingGates"] = json!([{"name": "example.com/hold"}]);
    old["spec"]["nodeSelector"] = json!({"workload": "gitlab"});
    old["spec"]["tolerations"] =
        json!([{"key": "workload", "value": "gitlab", "effect": "NoSchedule"}]);
    old["spec"]["volumes"] = json!([{"name": "host", "hostPath": {"path": "/"}}]);
    let mut new = old.clone();
    if let Some(spec) = new["spec"].as_object_mut() {
        spec.remove("schedulingGates");
    }
    let mut r = review("gitlab-runner", "UPDATE", new);
    r["request"]["oldObject"] = old;
    r
}

/// A privileged ephemeral container on a pod already running on a GitLab node
/// (scheduled there before runner-fence).
fn ephemeral_on_a_gitlab_node() -> Value {
    ephemeral_privileged("plain-job.json", "gitlab-1")
}

/// `memory: 1e19`: a quantity the apiserver accepts must never skip the cap.
fn huge_decimal_exponent() -> Value {
    let mut r = fixture("plain-job.json");
    r["request"]["object"]["spec"]["containers"][0]["resources"] =
        json!({"requests": {"memory": "1e19"}});
    r
}

// ---- the webhooks' side ----

/// What the apiserver ends up with: `Ok(final pod)` or `Err(denied rules)`.
fn admit(p: &Policy, nodes: &NodeSnapshot, r: &Value) -> (bool, bool, Result<Value, Vec<RuleId>>) {
    let (ms, vs) = scopes(p);
    let (to_mutate, to_validate) = (sent(&ms, r), sent(&vs, r));
    let mut r = r.clone();
    if to_mutate {
        let m = admission::handle(
            p,
            Endpoint::Mutate,
            &serde_json::to_vec(&r).expect("json"),
            Some(nodes),
        )
        .expect("mutate answers");
        if !m.decision.allowed() {
            let mut rules = m.decision.denied_rules();
            rules.sort();
            return (to_mutate, to_validate, Err(rules));
        }
        let patch = admission::response_patch(&m.response).expect("patch");
        json_patch::patch(&mut r["request"]["object"], &patch).expect("patch applies");
    }
    if to_validate {
        let v = admission::handle(
            p,
            Endpoint::Validate,
            &serde_json::to_vec(&r).expect("json"),
            Some(nodes),
        )
        .expect("validate answers");
        if !v.decision.allowed() {
            let mut rules = v.decision.denied_rules();
            rules.sort();
            rules.dedup();
            return (to_mutate, to_validate, Err(rules));
        }
    }
    (to_mutate, to_validate, Ok(r["request"]["object"].clone()))
}

use RuleId::{FargateCompat, NodeName, Placement, ProtectedNodes, Resources};

#[rstest]
#[case::bare_pod_with_another_name(bare_pod(), &[ProtectedNodes, Placement])]
#[case::deployment_pod(deployment_pod(), &[ProtectedNodes, Placement])]
#[case::daemonset_pod_pinned_to_gitlab_node(daemonset_pod(), &[ProtectedNodes])]
#[case::job_pod(job_pod(), &[Placement])]
#[case::spoofed_manager_label(spoofed_manager(), &[Placement])]
#[case::omitted_gitlab_labels(without_gitlab_labels(), &[ProtectedNodes])]
#[case::ci_job_namespace(in_namespace(bare_pod(), "ci-job-4711"), &[ProtectedNodes, Placement])]
#[case::node_name_to_gitlab(review("gitlab-runner", "CREATE", pod(json!({"name": "pinned"}), json!({"nodeName": "gitlab-1"}))), &[NodeName, ProtectedNodes])]
#[case::explicit_profile_not_allowed_here(with_labels(fixture("plain-job.json"), json!({"runner-fence.dev/profile": "docker"})), &[Placement])]
#[case::explicit_unknown_profile(with_labels(fixture("plain-job.json"), json!({"runner-fence.dev/profile": "gitlab"})), &[Placement])]
#[case::explicit_fargate_profile_privileged(privileged(with_labels(fixture("plain-job.json"), json!({"runner-fence.dev/profile": "fargate"}))), &[FargateCompat])]
#[case::selector_chosen_fargate_privileged(privileged(fixture("fargate-job.json")), &[FargateCompat])]
#[case::fargate_label_on_another_profile(privileged(with_labels(fixture("plain-job.json"), json!({"runner-fence.dev/profile": "runner-nodes", "use-fargate": "true"}))), &[FargateCompat])]
#[case::ephemeral_privileged_on_fargate(ephemeral_privileged_on_fargate(), &[FargateCompat])]
#[case::legacy_bindings_resource(binding("bindings", None, "netshoot", "gitlab-1"), &[ProtectedNodes])]
#[case::pods_binding(binding("pods", Some("binding"), "runner-x-project-1-concurrent-0-abc", "gitlab-1"), &[ProtectedNodes])]
#[case::pod_level_resources_over_max(pod_level_resources(), &[Resources])]
// A GitLab node that has not registered yet (EKS names are predictable): fail closed.
#[case::binding_to_a_node_the_cache_does_not_know(binding("pods", Some("binding"), "p1", "ip-10-0-3-77.eu-west-1.compute.internal"), &[ProtectedNodes])]
#[case::in_place_resize_over_max(resize(), &[Resources])]
#[case::update_while_gated(gated_update_to_gitlab(), &[ProtectedNodes, Placement])]
#[case::ungating_a_pod_created_before_enforcement(ungating_a_pod_created_before_enforcement(), &[ProtectedNodes, Placement])]
#[case::ephemeral_container_on_a_pod_on_a_gitlab_node(ephemeral_on_a_gitlab_node(), &[ProtectedNodes])]
#[case::memory_with_a_large_decimal_exponent(huge_decimal_exponent(), &[Resources])]
fn attacks_are_denied_with_their_rule(#[case] r: Value, #[case] want: &[RuleId]) {
    let p = policy();
    let (to_mutate, to_validate, outcome) = admit(&p, &cluster(), &r);
    let op = r["request"]["operation"].as_str().unwrap_or("");
    let plain_pod =
        r["request"]["subResource"].is_null() && r["request"]["resource"]["resource"] == "pods";
    assert!(to_validate, "the validating webhook is never called");
    assert_eq!(
        to_mutate,
        plain_pod && op == "CREATE",
        "mutating webhook scope"
    );
    let mut want = want.to_vec();
    want.sort();
    assert_eq!(outcome.err(), Some(want));
}

#[rstest]
#[case::plain("plain-job.json", "runner-nodes")]
#[case::services("job-with-services.json", "runner-nodes")]
#[case::aliased_service("job-with-aliased-service.json", "runner-nodes")]
#[case::kaniko("kaniko-build-job.json", "runner-nodes")]
#[case::dind_on_runner_nodes("dind-privileged-job.json", "runner-nodes")]
#[case::fargate_by_use_fargate_label("fargate-job.json", "fargate")]
#[case::operator_debug_pod("unrelated-pod-same-namespace.json", "runner-nodes")]
fn safe_shapes_are_admitted_with_the_expected_patch(#[case] name: &str, #[case] profile: &str) {
    let p = policy();
    let r = fixture(name);
    let (to_mutate, to_validate, outcome) = admit(&p, &cluster(), &r);
    assert!(to_mutate && to_validate, "{name}: scope");
    let pod = outcome.unwrap_or_else(|rules| panic!("{name}: denied {rules:?}"));
    assert_eq!(
        pod["metadata"]["annotations"]["runner-fence.dev/profile"], profile,
        "{name}"
    );
    let req = p.placement.profiles[profile].required_node_labels[0].clone();
    let want = json!({"key": req.key, "operator": req.operator.as_str(), "values": req.values});
    let terms = pod
        .pointer("/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms")
        .and_then(Value::as_array)
        .unwrap_or_else(|| panic!("{name}: no required terms"));
    assert!(
        terms.iter().all(|t| t["matchExpressions"]
            .as_array()
            .is_some_and(|e| e.contains(&want))),
        "{name}: {terms:?}"
    );
    // Idempotent: a second pass (reinvocationPolicy IfNeeded) adds nothing.
    let mut again = r.clone();
    again["request"]["object"] = pod;
    let m = admission::handle(
        &p,
        Endpoint::Mutate,
        &serde_json::to_vec(&again).expect("json"),
        None,
    )
    .expect("mutate");
    assert!(
        admission::response_patch(&m.response)
            .expect("patch")
            .is_empty(),
        "{name}: not idempotent"
    );
}

#[test]
fn the_runner_manager_is_fenced_and_placed_on_runner_nodes() {
    let p = policy();
    // As the Helm chart's ReplicaSet creates it, on the runner node group (seed setup).
    let mut r = fixture("runner-manager-pod.json");
    r["request"]["object"]["spec"]["nodeSelector"] = json!({"workload": "gitlab-runner"});
    r["request"]["object"]["spec"]["tolerations"] = json!([{"key": "workload", "operator": "Equal", "value": "gitlab-runner", "effect": "NoSchedule"}]);
    let (to_mutate, to_validate, outcome) = admit(&p, &cluster(), &r);
    assert!(to_mutate && to_validate);
    let pod = outcome.expect("the manager on runner nodes is admitted");
    assert_eq!(
        pod["metadata"]["annotations"]["runner-fence.dev/profile"],
        "runner-nodes"
    );
    // The fixture as given asks for GitLab's nodes: the manager is no exception.
    let (_, _, outcome) = admit(&p, &cluster(), &fixture("runner-manager-pod.json"));
    assert_eq!(outcome.err(), Some(vec![Placement]));
}

#[rstest]
#[case::other_namespace(in_namespace(bare_pod(), "default"))]
#[case::kube_system(in_namespace(bare_pod(), "kube-system"))]
#[case::the_webhooks_own_namespace(in_namespace(bare_pod(), "runner-fence"))]
#[case::lookalike_namespace(in_namespace(bare_pod(), "gitlab-runner-2"))]
fn outside_the_runner_namespaces_nothing_is_sent(#[case] r: Value) {
    let (ms, vs) = scopes(&policy());
    assert!(!sent(&ms, &r) && !sent(&vs, &r));
    // And the engine agrees: were it called anyway, it would not act.
    let m = admission::handle(
        &policy(),
        Endpoint::Mutate,
        &serde_json::to_vec(&r).expect("json"),
        None,
    )
    .expect("mutate");
    assert!(!m.decision.matched());
}

#[test]
fn the_scope_never_reads_the_pods_name_or_labels() {
    // Same request, every name and label an attacker might pick: the same answer.
    let (ms, vs) = scopes(&policy());
    for name in ["runner-abc", "gitlab-runner-7d9", "x", ""] {
        for labels in [
            json!({}),
            json!({"app": "gitlab-runner"}),
            json!({"runner-fence.dev/skip": "true"}),
        ] {
            let mut r = bare_pod();
            r["request"]["object"]["metadata"]["name"] = json!(name);
            r["request"]["object"]["metadata"]["labels"] = labels;
            assert!(sent(&ms, &r) && sent(&vs, &r), "{name}");
        }
    }
}

/// Without the node cache the engine knows protected nodes by name only; the
/// server then passes what it read of the named node, or nothing (fail closed).
#[rstest]
#[case::ungating_without_nodes(ungating_a_pod_created_before_enforcement(), None, false)]
#[case::binding_node_unreadable(binding("pods", Some("binding"), "p1", "runner-1"), Some(vec![]), false)]
#[case::binding_node_read(binding("pods", Some("binding"), "p1", "runner-1"), Some(vec!["runner-1"]), true)]
#[case::binding_gitlab_node_read(binding("pods", Some("binding"), "p1", "gitlab-1"), Some(vec!["gitlab-1"]), false)]
#[case::ephemeral_node_unreadable(ephemeral_on_a_gitlab_node(), Some(vec![]), false)]
#[case::ephemeral_on_gitlab_node_read(ephemeral_on_a_gitlab_node(), Some(vec!["gitlab-1"]), false)]
fn without_the_node_cache(
    #[case] r: Value,
    #[case] read: Option<Vec<&str>>,
    #[case] allowed: bool,
) {
    let p = policy();
    let all = cluster();
    let snapshot =
        read.map(|names| NodeSnapshot::new(names.iter().filter_map(|n| all.get(n).cloned())));
    let v = admission::handle(
        &p,
        Endpoint::Validate,
        &serde_json::to_vec(&r).expect("json"),
        snapshot.as_ref(),
    )
    .expect("validate answers");
    assert_eq!(v.decision.allowed(), allowed, "{:?}", v.decision.message());
}

#[test]
fn ungating_is_judged_like_a_creation_but_an_edit_while_gated_is_not() {
    let p = policy();
    let validate = |r: &Value| {
        admission::handle(
            &p,
            Endpoint::Validate,
            &serde_json::to_vec(r).expect("json"),
            None,
        )
        .expect("validate answers")
        .decision
    };
    // The same old violations, gate kept, a label edited: allowed (operators may edit).
    let mut edit = ungating_a_pod_created_before_enforcement();
    edit["request"]["object"]["spec"]["schedulingGates"] = json!([{"name": "example.com/hold"}]);
    edit["request"]["object"]["metadata"]["labels"]["team"] = json!("a");
    assert!(validate(&edit).allowed(), "{:?}", validate(&edit).message());
    // Removing one of two gates keeps it unschedulable: still an edit.
    let mut one_of_two = edit.clone();
    one_of_two["request"]["oldObject"]["spec"]["schedulingGates"] =
        json!([{"name": "example.com/hold"}, {"name": "example.com/other"}]);
    assert!(validate(&one_of_two).allowed());
    // Emptying the list is ungating too.
    let mut emptied = edit.clone();
    emptied["request"]["object"]["spec"]["schedulingGates"] = json!([]);
    let d = validate(&emptied);
    assert!(!d.allowed());
    let msg = d.message().unwrap_or_default();
    assert!(
        msg.contains("protected-nodes: spec.tolerations[0] tolerates workload=gitlab:NoSchedule"),
        "{msg}"
    );
}

// ---- differential: the generated scope (rules, namespaceSelector, CEL) vs covers() ----

mod scope_differential {
    use super::*;
    use proptest::prelude::*;

    /// Namespace names around the patterns: equal, prefixes, longer, shorter, the
    /// excluded namespaces and characters CEL or a selector could treat specially.
    fn namespace() -> impl Strategy<Value = String> {
        prop_oneof![
            proptest::sample::select(
                &[
                    "gitlab-runner",
                    "gitlab-runner-2",
                    "gitlab-runne",
                    "ci-job-",
                    "ci-job-1",
                    "ci-job-123456",
                    "ci-jo",
                    "ci-jobs",
                    "kube-system",
                    "runner-fence",
                    "default",
                    "team-a-ci",
                    "team-a-ci-9",
                    "builds",
                ][..]
            )
            .prop_map(String::from),
            "[a-z][a-z0-9-]{0,12}",
        ]
    }

    fn patterns() -> impl Strategy<Value = Vec<String>> {
        proptest::collection::btree_set(
            prop_oneof![
                proptest::sample::select(
                    &["gitlab-runner", "ci-job-*", "team-a-ci*", "builds"][..]
                )
                .prop_map(String::from),
                "[a-z][a-z0-9-]{0,6}\\*?",
            ],
            1..4,
        )
        .prop_map(|s| s.into_iter().collect())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// The apiserver sends a namespace's pods to both webhooks exactly when
        /// the engine's `covers()` says the policy fences it.
        #[test]
        fn the_webhooks_scope_is_what_the_policy_covers(patterns in patterns(), ns in namespace()) {
            let list = patterns.iter().map(|p| format!("{p:?}")).collect::<Vec<_>>().join(", ");
            let text = runner_fence::core::policy::EMBEDDED_POLICY
                .replacen("namespaces: [gitlab-runner]", &format!("namespaces: [{list}]"), 1);
            let parsed = runner_fence::core::policy::parse(&text, "scope.yaml");
            prop_assume!(parsed.is_ok());
            let p = parsed.expect("assumed");
            // The renderer refuses exactly the scopes that would cover kube-system
            // or the webhook's own namespace (they are never sent).
            let refused = configurations(&p, &Options::service("runner-fence", "runner-fence")).is_err();
            let covers_excluded = ["kube-system", "runner-fence"].iter().any(|n| p.matching.covers(n));
            prop_assert_eq!(refused, covers_excluded, "{:?}", patterns);
            prop_assume!(!refused);
            let (ms, vs) = scopes(&p);
            let r = review(&ns, "CREATE", pod(json!({"name": "x"}), json!({})));
            let covered = p.matching.covers(&ns);
            prop_assert_eq!(sent(&ms, &r), covered, "mutating scope for {} with {:?}", ns, patterns);
            prop_assert_eq!(sent(&vs, &r), covered, "validating scope for {} with {:?}", ns, patterns);
        }
    }
}
