//! The backstop's CEL run with a real CEL implementation, and the differential
//! checks of it against the Rust engine. Shared by tests/backstop.rs (proptest,
//! fixed case budget in CI) and the `backstop_differential` fuzz target (longer
//! runs), which includes this file by path: one comparison, two drivers.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;

use cel::extractors::This;
use runner_fence::core::engine::{Decision, Endpoint};
use runner_fence::core::policy::{Policy, RuleId};
use runner_fence::core::render::Object;
use runner_fence::core::render::admission_policy::objects;
use runner_fence::webhook::admission;
use serde_json::{Value, json};

/// What the apiserver would do with a request: the messages of failed
/// validations bound with `Deny`, and those bound with `Warn`.
#[derive(Debug, Default, PartialEq)]
pub struct Verdict {
    pub denied: Vec<String>,
    pub warned: Vec<String>,
}

fn compile(e: &Value) -> cel::Program {
    cel::Program::compile(e.as_str().unwrap_or(""))
        .unwrap_or_else(|err| panic!("does not compile: {err:?}\n{e}"))
}

/// The backstop objects generated for `p`, as applied (JSON).
pub fn rendered(p: &Policy) -> Vec<Value> {
    objects(p, "runner-fence")
        .expect("render")
        .iter()
        .map(Object::to_value)
        .collect()
}

/// Evaluates every generated policy (with its binding's actions) on a request.
pub fn verdict(p: &Policy, request: &Value) -> Verdict {
    let objs = rendered(p);
    let mut out = Verdict::default();
    for vap in objs
        .iter()
        .filter(|o| o["kind"] == "ValidatingAdmissionPolicy")
    {
        let binding = objs
            .iter()
            .find(|o| {
                o["kind"] == "ValidatingAdmissionPolicyBinding"
                    && o["spec"]["policyName"] == vap["metadata"]["name"]
            })
            .expect("every policy has its binding");
        let actions = &binding["spec"]["validationActions"];
        let messages = failed(&vap["spec"], request);
        if actions
            .as_array()
            .is_some_and(|a| a.contains(&json!("Deny")))
        {
            out.denied.extend(messages);
        } else {
            assert_eq!(actions, &json!(["Warn", "Audit"]), "{binding}");
            out.warned.extend(messages);
        }
    }
    out
}

/// The messages (messageExpression when set, as the apiserver prefers) of the
/// validations that fail.
fn failed(spec: &Value, request: &Value) -> Vec<String> {
    let mut ctx = cel::Context::default();
    ctx.add_variable_from_value("request", cel::to_value(request).expect("cel"));
    ctx.add_variable_from_value("object", cel::to_value(&request["object"]).expect("cel"));
    ctx.add_variable_from_value(
        "oldObject",
        cel::to_value(&request["oldObject"]).expect("cel"),
    );
    // Kubernetes' list library (k8s.io/apiserver/pkg/cel/library/lists.go), part
    // of every apiserver's CEL environment: `<list<T>>.indexOf(<T>)`, -1 if absent.
    ctx.add_function(
        "indexOf",
        |This(list): This<Arc<Vec<cel::Value>>>, item: cel::Value| -> i64 {
            list.iter()
                .position(|x| *x == item)
                .and_then(|i| i64::try_from(i).ok())
                .unwrap_or(-1)
        },
    )
    .expect("indexOf");
    // Scope: the same matchConditions as the webhooks.
    for c in spec["matchConditions"].as_array().into_iter().flatten() {
        if !matches!(
            compile(&c["expression"]).execute(&ctx),
            Ok(cel::Value::Bool(true))
        ) {
            return Vec::new();
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
    spec["validations"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| {
            !matches!(
                compile(&v["expression"]).execute(&ctx),
                Ok(cel::Value::Bool(true))
            )
        })
        .map(|v| match v.get("messageExpression") {
            Some(e) => match compile(e).execute(&ctx) {
                Ok(cel::Value::String(m)) => m.to_string(),
                other => panic!("messageExpression {e} gave {other:?}"),
            },
            None => v["message"].as_str().unwrap_or("").to_string(),
        })
        .collect()
}

/// `Err(denials)` when the backstop denies the request.
pub fn backstop(p: &Policy, request: &Value) -> Result<(), Vec<String>> {
    let v = verdict(p, request);
    if v.denied.is_empty() {
        Ok(())
    } else {
        Err(v.denied)
    }
}

/// The request part of a review, with what the apiserver always sets.
pub fn request(review: &Value) -> Value {
    let mut r = review["request"].clone();
    if r.get("subResource").is_none() {
        r["subResource"] = json!("");
    }
    if r.get("oldObject").is_none() {
        r["oldObject"] = Value::Null;
    }
    r
}

/// What runner-fence's validating webhook decides on `review` (no node cache).
pub fn validated(p: &Policy, review: &Value) -> Decision {
    admission::handle(
        p,
        Endpoint::Validate,
        &serde_json::to_vec(review).expect("json"),
        None,
    )
    .expect("validate answers")
    .decision
}

/// The review after runner-fence's mutating webhook patched its pod.
pub fn mutated(p: &Policy, review: &Value) -> Value {
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

/// A pod in the reference policy's runner namespace.
pub fn pod(labels: Value, spec: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "gitlab-runner", "labels": labels}, "spec": spec})
}

/// A pod CREATE (or UPDATE from `old`) review in the runner namespace.
pub fn review_of(pod: &Value, operation: &str, old: Option<&Value>) -> Value {
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "d", "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "name": "p", "namespace": "gitlab-runner", "operation": operation,
        "object": pod, "oldObject": old.cloned().unwrap_or(Value::Null)}})
}

/// The UPDATE that releases `pod`, held by a scheduling gate, for scheduling
/// (a pod created before enforcement; `nodeName` cannot be set while gated).
pub fn ungating_review(pod: &Value) -> Value {
    let mut old = pod.clone();
    old["spec"]["schedulingGates"] = json!([{"name": "example.com/hold"}]);
    if let Some(s) = old["spec"].as_object_mut() {
        s.remove("nodeName");
    }
    let mut new = old.clone();
    if let Some(s) = new["spec"].as_object_mut() {
        s.remove("schedulingGates");
    }
    review_of(&new, "UPDATE", Some(&old))
}

/// The rules the backstop stands for, as the engine reports them on `review`.
pub fn engine_reaches(p: &Policy, review: &Value) -> Vec<String> {
    let d = validated(p, review);
    d.denials()
        .iter()
        .chain(d.audited())
        .filter(|v| matches!(v.rule, RuleId::ProtectedNodes | RuleId::NodeName))
        .map(ToString::to_string)
        .collect()
}

/// The backstop's claim: what it admits, the engine finds no way to a
/// protected node for (it may deny more, never admit such a pod).
pub fn never_admits_what_reaches(p: &Policy, review: &Value) -> Result<(), String> {
    if !verdict(p, &request(review)).denied.is_empty() {
        return Ok(());
    }
    let reach = engine_reaches(p, review);
    if reach.is_empty() {
        Ok(())
    } else {
        Err(format!("backstop admitted, engine: {reach:?}\n{review}"))
    }
}

/// What the mutating webhook placed and the validating webhook admits, the
/// backstop admits too (else job pods fail while runner-fence is up).
pub fn admits_what_runner_fence_places(p: &Policy, review: &Value) -> Result<(), String> {
    let placed = mutated(p, review);
    if !validated(p, &placed).allowed() {
        return Ok(());
    }
    let b = verdict(p, &request(&placed));
    if b.denied.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "runner-fence admitted, backstop denied: {:?}\n{placed}",
            b.denied
        ))
    }
}

// ---- the input space both drivers draw from ----

/// Label keys: GitLab's (`workload`), the Fargate one, a harmless one, and the
/// empty key (tolerations only: it matches every taint).
pub const KEYS: &[&str] = &[
    "workload",
    "eks.amazonaws.com/compute-type",
    "topology.kubernetes.io/zone",
    "",
];
/// Label and toleration values, GitLab's among them.
pub const VALUES: &[&str] = &["gitlab", "gitlab-runner", "fargate", "auto", "a", ""];
/// Toleration operators (the empty one means `Equal`).
pub const TOLERATION_OPERATORS: &[&str] = &["Equal", "Exists", ""];
/// Taint effects a toleration may name (empty: all).
pub const EFFECTS: &[&str] = &["NoSchedule", "NoExecute", "PreferNoSchedule", ""];
/// nodeSelectorTerm operators the backstop reasons about.
pub const REQUIREMENT_OPERATORS: &[&str] = &["In", "NotIn", "Exists", "DoesNotExist"];
/// Labels a job can set that choose a profile.
pub const PROFILE_LABELS: &[(&str, &str)] = &[
    ("use-fargate", "true"),
    ("runner-fence.dev/profile", "fargate"),
    ("runner-fence.dev/profile", "runner-nodes"),
];
/// A protected node and a runner node (by name; `protectedNodes.names` is empty).
pub const NODE_NAMES: &[&str] = &["gitlab-1", "runner-1"];

/// The reference policy's profile requirements (`requiredNodeLabels`): terms
/// near them (the same, or with one more value) are where carrying a
/// requirement and reaching a protected node part.
pub const PROFILE_REQUIREMENTS: &[(&str, &str)] = &[
    ("workload", "gitlab-runner"),
    ("eks.amazonaws.com/compute-type", "fargate"),
];

/// The reference policy protecting nodes by these taints instead of GitLab's
/// (`key`, `value`, `effect`; a missing value or effect is any): the toleration
/// rule's open fields are only reached through such taints.
pub fn with_taints(taints: &[(&str, Option<&str>, Option<&str>)]) -> Policy {
    let mut p = runner_fence::core::policy::embedded().expect("reference policy");
    p.protected_nodes.taints = taints
        .iter()
        .map(|(key, value, effect)| {
            serde_json::from_value(json!({"key": key, "value": value, "effect": effect}))
                .expect("taint")
        })
        .collect();
    p
}

/// `key In [value]` of a profile, or widened by `extra` (which may be GitLab's).
pub fn near_profile(profile: (&str, &str), extra: Option<&str>) -> Value {
    let (key, value) = profile;
    let mut values = vec![value];
    values.extend(extra);
    requirement(key, "In", &values)
}

/// A toleration with the fields that are given.
pub fn toleration(
    key: Option<&str>,
    operator: Option<&str>,
    value: Option<&str>,
    effect: Option<&str>,
) -> Value {
    let mut t = serde_json::Map::new();
    for (name, x) in [
        ("key", key),
        ("operator", operator),
        ("value", value),
        ("effect", effect),
    ] {
        if let Some(x) = x {
            t.insert(name.into(), json!(x));
        }
    }
    Value::Object(t)
}

/// A matchExpressions entry; `values` only where the operator takes them.
pub fn requirement(key: &str, operator: &str, values: &[&str]) -> Value {
    match operator {
        "Exists" | "DoesNotExist" => json!({"key": key, "operator": operator}),
        _ => json!({"key": key, "operator": operator, "values": values}),
    }
}

/// A one-container pod spec with the placement fields that are given
/// (`terms`: the required nodeSelectorTerms' matchExpressions).
pub fn spec(
    node_selector: &BTreeMap<&str, &str>,
    terms: Option<Vec<Vec<Value>>>,
    tolerations: Vec<Value>,
    node_name: Option<&str>,
) -> Value {
    let mut s = json!({"containers": [{"name": "build", "image": "alpine"}]});
    if !node_selector.is_empty() {
        s["nodeSelector"] = json!(node_selector);
    }
    if let Some(terms) = terms {
        let terms: Vec<Value> = terms
            .into_iter()
            .map(|t| json!({"matchExpressions": t}))
            .collect();
        s["affinity"] = json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}});
    }
    if !tolerations.is_empty() {
        s["tolerations"] = json!(tolerations);
    }
    if let Some(n) = node_name {
        s["nodeName"] = json!(n);
    }
    s
}

/// The pod's labels: none, or one that chooses a profile.
pub fn labels(label: Option<(&str, &str)>) -> Value {
    match label {
        Some((k, v)) => json!({k: v}),
        None => json!({}),
    }
}
