//! Structure-aware: arbitrary job pods (containers, requests, terms,
//! nodeSelector, tolerations, labels from the alphabets a runner and a job can
//! produce without asking for GitLab's nodes) through /mutate and /validate.
//! Invariants: no panic; every decision has the request's uid; the mutation
//! patch applies and is idempotent; a mutated pod of a valid profile passes
//! validation, unless its own terms can match no node (the generator can write
//! `zone In [v0]` and `zone NotIn [v0]` together): then the only denial is
//! `placement` naming exactly that.
#![no_main]

use std::sync::OnceLock;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use runner_fence::webhook::admission;
use runner_fence::core::engine::Endpoint;
use runner_fence::core::policy::Policy;
use serde_json::{Value, json};

#[derive(Arbitrary, Debug)]
enum Name {
    Build,
    Helper,
    Svc(u8),
    Alias(u8),
}

#[derive(Arbitrary, Debug)]
struct Container {
    name: Name,
    cpu_milli: Option<u16>,
    memory_mi: Option<u16>,
    limit_factor: Option<u8>,
}

#[derive(Arbitrary, Debug)]
enum Op {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

#[derive(Arbitrary, Debug)]
struct Expr {
    key: u8,
    op: Op,
    values: Vec<u8>,
}

#[derive(Arbitrary, Debug)]
struct Pod {
    name: Option<u16>,
    profile: Option<bool>,
    use_fargate_label: bool,
    extra_labels: Vec<(u8, u8)>,
    containers: Vec<Container>,
    init: Vec<Container>,
    terms: Vec<Vec<Expr>>,
    node_selector: Vec<(u8, u8)>,
    tolerations: Vec<(u8, bool)>,
}

const KEYS: [&str; 4] = ["topology.kubernetes.io/zone", "kubernetes.io/arch", "gpu", "team"];

fn key(k: u8) -> &'static str {
    KEYS[usize::from(k) % KEYS.len()]
}

fn container(c: &Container) -> Value {
    let name = match c.name {
        Name::Build => "build".to_string(),
        Name::Helper => "helper".to_string(),
        Name::Svc(n) => format!("svc-{n}"),
        Name::Alias(n) => format!("db{n}"),
    };
    let mut requests = serde_json::Map::new();
    // Below the reference policy's max (4 cpu, 16Gi), so `resources` has nothing to say.
    if let Some(m) = c.cpu_milli {
        requests.insert("cpu".into(), json!(format!("{}m", m % 4000 + 1)));
    }
    if let Some(m) = c.memory_mi {
        requests.insert("memory".into(), json!(format!("{}Mi", m % 16000 + 1)));
    }
    let mut res = json!({"requests": requests});
    if let Some(f) = c.limit_factor {
        let mut limits = serde_json::Map::new();
        for (k, v) in &requests {
            let q = v.as_str().unwrap_or("1");
            let (n, unit) = q.split_at(q.len() - if q.ends_with("Mi") { 2 } else { 1 });
            let n: u64 = n.parse().unwrap_or(1);
            limits.insert(k.clone(), json!(format!("{}{unit}", n * (u64::from(f % 4) + 1))));
        }
        res["limits"] = Value::Object(limits);
    }
    json!({"name": name, "image": "alpine", "resources": res})
}

fn build(p: &Pod) -> Value {
    let mut labels = serde_json::Map::new();
    for (k, v) in p.extra_labels.iter().take(4) {
        labels.insert(format!("l{k}"), json!(format!("v{v}")));
    }
    if p.use_fargate_label {
        labels.insert("use-fargate".into(), json!("true"));
    }
    if let Some(fargate) = p.profile {
        labels.insert(
            "runner-fence.dev/profile".into(),
            json!(if fargate { "fargate" } else { "runner-nodes" }),
        );
    }
    let mut containers: Vec<Value> = p.containers.iter().take(6).map(container).collect();
    if containers.is_empty() {
        containers.push(json!({"name": "build", "image": "alpine"}));
    }
    // Containers need unique names for a valid pod.
    let mut seen = std::collections::BTreeSet::new();
    containers.retain(|c| seen.insert(c["name"].as_str().unwrap_or("").to_string()));
    let init: Vec<Value> = p
        .init
        .iter()
        .take(2)
        .enumerate()
        .map(|(i, c)| {
            let mut v = container(c);
            v["name"] = json!(format!("init-{i}"));
            v
        })
        .collect();
    let mut spec = json!({"containers": containers, "initContainers": init});
    let terms: Vec<Value> = p
        .terms
        .iter()
        .take(3)
        .map(|t| {
            let exprs: Vec<Value> = t
                .iter()
                .take(3)
                .map(|e| {
                    let vals: Vec<String> = e.values.iter().take(3).map(|v| format!("v{v}")).collect();
                    match e.op {
                        Op::In => json!({"key": key(e.key), "operator": "In", "values": if vals.is_empty() { vec!["v0".to_string()] } else { vals }}),
                        Op::NotIn => json!({"key": key(e.key), "operator": "NotIn", "values": if vals.is_empty() { vec!["v0".to_string()] } else { vals }}),
                        Op::Exists => json!({"key": key(e.key), "operator": "Exists"}),
                        Op::DoesNotExist => json!({"key": key(e.key), "operator": "DoesNotExist"}),
                    }
                })
                .collect();
            json!({"matchExpressions": exprs})
        })
        .collect();
    if !terms.is_empty() {
        spec["affinity"] = json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}});
    }
    if !p.node_selector.is_empty() {
        let ns: serde_json::Map<String, Value> = p
            .node_selector
            .iter()
            .take(3)
            .map(|(k, v)| (key(*k).to_string(), json!(format!("v{v}"))))
            .collect();
        spec["nodeSelector"] = Value::Object(ns);
    }
    if !p.tolerations.is_empty() {
        let tols: Vec<Value> = p
            .tolerations
            .iter()
            .take(3)
            .map(|(k, exists)| {
                if *exists {
                    json!({"key": format!("t{k}"), "operator": "Exists"})
                } else {
                    json!({"key": format!("t{k}"), "operator": "Equal", "value": "x", "effect": "NoSchedule"})
                }
            })
            .collect();
        spec["tolerations"] = Value::Array(tols);
    }
    let mut meta = json!({"namespace": "gitlab-runner", "labels": labels});
    match p.name {
        Some(n) => meta["name"] = json!(format!("pod-{n}")),
        None => meta["generateName"] = json!("runner-x-"),
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec})
}

fn review(pod: &Value, uid: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": uid, "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "name": pod["metadata"]["name"].as_str().unwrap_or(""), "namespace": "gitlab-runner",
        "operation": "CREATE", "object": pod}}))
    .expect("json")
}

fn policy() -> &'static Policy {
    static P: OnceLock<Policy> = OnceLock::new();
    P.get_or_init(|| runner_fence::core::policy::embedded().expect("reference policy"))
}

fuzz_target!(|p: Pod| {
    let policy = policy();
    let mut pod = build(&p);
    let m = admission::handle(policy, Endpoint::Mutate, &review(&pod, "u-1"), None).expect("a valid review");
    assert_eq!(serde_json::to_value(&m.response).expect("json")["response"]["uid"], "u-1");
    let patch = admission::response_patch(&m.response).expect("patch decodes");
    if !m.decision.allowed() {
        // Only a profile the pod may not use is denied at /mutate.
        assert!(m.decision.denials().iter().all(|v| v.rule == runner_fence::core::policy::RuleId::Placement));
        return;
    }
    json_patch::patch(&mut pod, &patch).expect("the patch applies");
    // Idempotent: reinvocation adds nothing.
    let again = admission::handle(policy, Endpoint::Mutate, &review(&pod, "u-2"), None).expect("review");
    assert!(admission::response_patch(&again.response).expect("patch").is_empty(), "second pass patched: {pod}");
    // The mutated pod of a valid profile passes validation.
    let v = admission::handle(policy, Endpoint::Validate, &review(&pod, "u-3"), None).expect("review");
    assert_eq!(serde_json::to_value(&v.response).expect("json")["response"]["uid"], "u-3");
    if !v.decision.allowed() {
        assert!(
            v.decision.denials().iter().all(|d| matches!(
                d.cause,
                runner_fence::core::engine::Cause::Unsatisfiable { .. }
            )),
            "mutated pod denied: {:?}\n{pod}",
            v.decision.message()
        );
    }
});
