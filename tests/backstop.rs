//! The in-tree backstop (`render admission-policy`), its CEL evaluated with a
//! real CEL implementation on what the apiserver would send while runner-fence
//! is down: unmutated pods are denied, pods runner-fence patched pass.
//! (tests/e2e.rs runs the same policy in a real kube-apiserver.)

mod common;

use common::{fixture, reference};
use rstest::rstest;
use runner_fence::core::engine::Endpoint;
use runner_fence::core::policy::Policy;
use runner_fence::core::render::admission_policy::objects;
use runner_fence::webhook::admission;
use serde_json::{Value, json};

/// Evaluates the policy's validations on a request; `Err(messages)` when denied.
fn backstop(p: &Policy, request: &Value) -> Result<(), Vec<String>> {
    let [vap, _] = objects(p, "runner-fence").expect("render");
    let spec = &vap["spec"];
    let compile = |e: &Value| {
        cel::Program::compile(e.as_str().unwrap_or(""))
            .unwrap_or_else(|err| panic!("does not compile: {err:?}\n{e}"))
    };
    let mut ctx = cel::Context::default();
    ctx.add_variable_from_value("request", cel::to_value(request).expect("cel"));
    ctx.add_variable_from_value("object", cel::to_value(&request["object"]).expect("cel"));
    ctx.add_variable_from_value(
        "oldObject",
        cel::to_value(&request["oldObject"]).expect("cel"),
    );
    // Scope: the same matchConditions as the webhooks.
    for c in spec["matchConditions"].as_array().into_iter().flatten() {
        if !matches!(
            compile(&c["expression"]).execute(&ctx),
            Ok(cel::Value::Bool(true))
        ) {
            return Ok(());
        }
    }
    let mut vars = serde_json::Map::new();
    for v in spec["variables"].as_array().into_iter().flatten() {
        let value = compile(&v["expression"])
            .execute(&ctx)
            .expect("variable evaluates");
        let json = value.json().expect("variable as JSON");
        vars.insert(v["name"].as_str().unwrap_or("").to_string(), json);
    }
    ctx.add_variable_from_value(
        "variables",
        cel::to_value(Value::Object(vars)).expect("cel"),
    );
    let denied: Vec<String> = spec["validations"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| {
            !matches!(
                compile(&v["expression"]).execute(&ctx),
                Ok(cel::Value::Bool(true))
            )
        })
        .map(|v| v["message"].as_str().unwrap_or("").to_string())
        .collect();
    if denied.is_empty() {
        Ok(())
    } else {
        Err(denied)
    }
}

/// The request part of a fixture review, with what the apiserver always sets.
fn request(review: &Value) -> Value {
    let mut r = review["request"].clone();
    if r.get("subResource").is_none() {
        r["subResource"] = json!("");
    }
    if r.get("oldObject").is_none() {
        r["oldObject"] = Value::Null;
    }
    r
}

/// The pod after runner-fence's mutating webhook.
fn mutated(p: &Policy, review: &Value) -> Value {
    let m = admission::handle(
        p,
        Endpoint::Mutate,
        &serde_json::to_vec(review).expect("json"),
        None,
    )
    .expect("mutate");
    let mut r = review.clone();
    let patch = admission::response_patch(&m.response).expect("patch");
    json_patch::patch(&mut r["request"]["object"], &patch).expect("applies");
    r
}

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
        err[0].contains("must carry the node requirements of a runner-fence profile"),
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
#[case::tolerate_all(with_spec("plain-job.json", |s| s["tolerations"] = json!([{"operator": "Exists"}])), "tolerates a taint")]
#[case::key_only_exists(with_spec("plain-job.json", |s| s["tolerations"] = json!([{"key": "workload", "operator": "Exists"}])), "tolerates a taint")]
#[case::gitlab_toleration(with_spec("plain-job.json", |s| s["tolerations"] = json!([{"key": "workload", "value": "gitlab", "effect": "NoSchedule"}])), "tolerates a taint")]
#[case::node_name(with_spec("plain-job.json", |s| s["nodeName"] = json!("gitlab-1")), "remove spec.nodeName")]
#[case::extra_or_term(with_spec("plain-job.json", |s| {
    let terms = &mut s["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"];
    if let Some(t) = terms.as_array_mut() { t.push(json!({"matchExpressions": [{"key": "workload", "operator": "In", "values": ["gitlab"]}]})); }
}), "must carry")]
#[case::widened_values(with_spec("plain-job.json", |s| {
    s["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0]["matchExpressions"]
        = json!([{"key": "workload", "operator": "In", "values": ["gitlab-runner", "gitlab"]}]);
}), "must carry")]
#[case::match_fields_only(with_spec("plain-job.json", |s| {
    s["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
        = json!([{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["gitlab-1"]}]}]);
}), "must carry")]
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
    assert!(backstop(&p, &binding("gitlab-1")).is_err());
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
}
