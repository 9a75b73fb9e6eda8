//! Mutation (SPEC §3): the JSON Patch that puts a job pod where its profile says.
//!
//! Decisions are taken on the typed pod; every operation is an `add` or
//! `replace` at a leaf the webhook owns, so fields it does not know survive.
//! Each step first checks whether its change is already there, which makes a
//! second pass over the patched pod produce no operations at all.

use std::collections::BTreeMap;

use json_patch::{AddOperation, PatchOperation, ReplaceOperation};
use jsonptr::PointerBuf;
use serde_json::{Map, Value, json};

use super::pod::{ContainerView, PodView, term_requirements};
use crate::core::policy::{
    OnExceed, Policy, Profile, Requirement, ResourceName, Role, TolerationOperator, TolerationSpec,
};
use crate::core::quantity::Quantity;
use crate::core::tolerations::Tol;

/// Annotation recording the profile a pod was placed with.
pub const PROFILE_ANNOTATION: &str = "runner-fence.dev/profile";

/// A computed mutation: the operations and a human summary of each change.
#[derive(Debug, Default, Clone)]
pub struct Mutation {
    /// RFC 6902 operations, in application order.
    pub ops: Vec<PatchOperation>,
    /// One line per change, for warnings, logs and `eval`.
    pub changes: Vec<String>,
}

impl Mutation {
    fn add(&mut self, tokens: &[&str], value: Value) {
        self.ops.push(PatchOperation::Add(AddOperation {
            path: PointerBuf::from_tokens(tokens.iter().copied()),
            value,
        }));
    }

    fn replace(&mut self, tokens: &[&str], value: Value) {
        self.ops.push(PatchOperation::Replace(ReplaceOperation {
            path: PointerBuf::from_tokens(tokens.iter().copied()),
            value,
        }));
    }
}

fn requirement_json(r: &Requirement) -> Value {
    let mut m = Map::new();
    m.insert("key".into(), json!(r.key));
    m.insert("operator".into(), json!(r.operator.as_str()));
    if !r.values.is_empty() {
        m.insert("values".into(), json!(r.values));
    }
    Value::Object(m)
}

fn toleration_json(t: &TolerationSpec) -> Value {
    let mut m = Map::new();
    if let Some(k) = &t.key {
        m.insert("key".into(), json!(k));
    }
    let op = match t.operator {
        Some(TolerationOperator::Exists) => "Exists",
        _ => "Equal",
    };
    m.insert("operator".into(), json!(op));
    if let Some(v) = &t.value {
        m.insert("value".into(), json!(v));
    }
    if let Some(e) = t.effect {
        m.insert("effect".into(), json!(e.as_str()));
    }
    if let Some(s) = t.toleration_seconds {
        m.insert("tolerationSeconds".into(), json!(s));
    }
    Value::Object(m)
}

/// Same key, operator and value set: ordering of values does not matter.
fn same_requirement(a: &Requirement, b: &Requirement) -> bool {
    if a.key != b.key || a.operator != b.operator || a.values.len() != b.values.len() {
        return false;
    }
    let mut x: Vec<&String> = a.values.iter().collect();
    let mut y: Vec<&String> = b.values.iter().collect();
    x.sort();
    y.sort();
    x == y
}

/// Computes the mutation of a job pod for a profile.
pub fn mutate(policy: &Policy, profile_name: &str, profile: &Profile, pod: &PodView) -> Mutation {
    let mut m = Mutation::default();
    node_affinity(profile, pod, &mut m);
    tolerations(profile, pod, &mut m);
    pod_labels(profile, pod, &mut m);
    resources(policy, profile, pod, &mut m);
    if pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(PROFILE_ANNOTATION))
        .map(String::as_str)
        != Some(profile_name)
    {
        set_map_entry(
            &mut m,
            pod.metadata.annotations.is_some(),
            "annotations",
            PROFILE_ANNOTATION,
            profile_name,
        );
        m.changes
            .push(format!("annotation {PROFILE_ANNOTATION}={profile_name}"));
    }
    m
}

fn set_map_entry(m: &mut Mutation, map_exists: bool, field: &str, key: &str, value: &str) {
    if map_exists {
        m.add(&["metadata", field, key], json!(value));
    } else {
        m.add(&["metadata", field], json!({ key: value }));
    }
}

fn node_affinity(profile: &Profile, pod: &PodView, m: &mut Mutation) {
    let required = &profile.required_node_labels;
    if required.is_empty() {
        return;
    }
    let described: Vec<String> = required.iter().map(ToString::to_string).collect();
    let described = described.join(", ");
    let new_term =
        || json!({ "matchExpressions": required.iter().map(requirement_json).collect::<Vec<_>>() });
    let spec = pod.spec();
    let Some(affinity) = &spec.affinity else {
        m.add(
            &["spec", "affinity"],
            json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [new_term()]}}}),
        );
        m.changes
            .push(format!("node affinity requires {described}"));
        return;
    };
    let Some(na) = &affinity.node_affinity else {
        m.add(
            &["spec", "affinity", "nodeAffinity"],
            json!({"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [new_term()]}}),
        );
        m.changes
            .push(format!("node affinity requires {described}"));
        return;
    };
    const REQ: &str = "requiredDuringSchedulingIgnoredDuringExecution";
    let terms = match &na.required_during_scheduling_ignored_during_execution {
        Some(r) if !r.node_selector_terms.is_empty() => &r.node_selector_terms,
        Some(_) => {
            m.add(
                &["spec", "affinity", "nodeAffinity", REQ, "nodeSelectorTerms"],
                json!([new_term()]),
            );
            m.changes
                .push(format!("node affinity requires {described}"));
            return;
        }
        None => {
            m.add(
                &["spec", "affinity", "nodeAffinity", REQ],
                json!({"nodeSelectorTerms": [new_term()]}),
            );
            m.changes
                .push(format!("node affinity requires {described}"));
            return;
        }
    };
    // Terms are OR-ed: the requirement goes into every one, never as a new term.
    let mut touched = 0;
    for (i, term) in terms.iter().enumerate() {
        let have = term_requirements(term).unwrap_or_default();
        let missing: Vec<&Requirement> = required
            .iter()
            .filter(|r| !have.iter().any(|h| same_requirement(h, r)))
            .collect();
        if missing.is_empty() {
            continue;
        }
        touched += 1;
        let idx = i.to_string();
        let base = [
            "spec",
            "affinity",
            "nodeAffinity",
            REQ,
            "nodeSelectorTerms",
            idx.as_str(),
        ];
        if term.match_expressions.is_none() {
            let mut path = base.to_vec();
            path.push("matchExpressions");
            m.add(
                &path,
                Value::Array(missing.iter().map(|r| requirement_json(r)).collect()),
            );
        } else {
            for r in missing {
                let mut path = base.to_vec();
                path.extend(["matchExpressions", "-"]);
                m.add(&path, requirement_json(r));
            }
        }
    }
    if touched > 0 {
        m.changes.push(format!(
            "node affinity requires {described} in {touched} of {} nodeSelectorTerms",
            terms.len()
        ));
    }
}

fn tolerations(profile: &Profile, pod: &PodView, m: &mut Mutation) {
    let existing = pod.spec().tolerations.as_deref().unwrap_or(&[]);
    let mut have: Vec<Tol> = existing.iter().map(Tol::of).collect();
    let mut array_exists = pod.spec().tolerations.is_some();
    for t in &profile.tolerations {
        let want = Tol::of_spec(t);
        if have.contains(&want) {
            continue;
        }
        if array_exists {
            m.add(&["spec", "tolerations", "-"], toleration_json(t));
        } else {
            m.add(&["spec", "tolerations"], json!([toleration_json(t)]));
            array_exists = true;
        }
        m.changes.push(format!("toleration {}", want.describe()));
        have.push(want);
    }
}

fn pod_labels(profile: &Profile, pod: &PodView, m: &mut Mutation) {
    let labels = pod.metadata.labels.as_ref();
    let mut missing: BTreeMap<&str, &str> = BTreeMap::new();
    for (k, v) in &profile.pod_labels {
        if labels.and_then(|l| l.get(k)) != Some(v) {
            missing.insert(k, v);
        }
    }
    if missing.is_empty() {
        return;
    }
    if labels.is_none() {
        m.add(&["metadata", "labels"], json!(missing));
    } else {
        for (k, v) in &missing {
            m.add(&["metadata", "labels", k], json!(v));
        }
    }
    for (k, v) in missing {
        m.changes.push(format!("label {k}={v}"));
    }
}

fn resources(policy: &Policy, profile: &Profile, pod: &PodView, m: &mut Mutation) {
    let spec = pod.spec();
    let groups: [(&str, &[ContainerView], bool); 2] = [
        (
            "initContainers",
            spec.init_containers.as_deref().unwrap_or(&[]),
            true,
        ),
        ("containers", &spec.containers, false),
    ];
    for (field, list, init) in groups {
        for (i, c) in list.iter().enumerate() {
            let role = if init {
                Role::Init
            } else {
                Role::of_container(&c.name)
            };
            container_resources(policy, profile, field, i, c, role, m);
        }
    }
}

fn container_resources(
    policy: &Policy,
    profile: &Profile,
    field: &str,
    index: usize,
    c: &ContainerView,
    role: Role,
    m: &mut Mutation,
) {
    let requests = c.resources.as_ref().and_then(|r| r.requests.as_ref());
    let limits = c.resources.as_ref().and_then(|r| r.limits.as_ref());
    let idx = index.to_string();
    let mut defaults: BTreeMap<&str, String> = BTreeMap::new();
    for res in ResourceName::ALL {
        let name = res.as_str();
        match requests.and_then(|r| r.get(name)) {
            Some(existing) => {
                // Clamp only what parses; the apiserver already rejected garbage.
                let (Some(max), Ok(have)) = (policy.max_request(res), Quantity::parse(&existing.0))
                else {
                    continue;
                };
                if policy.resources.on_exceed == OnExceed::Clamp && have > *max {
                    m.replace(
                        &["spec", field, &idx, "resources", "requests", name],
                        json!(max.as_str()),
                    );
                    m.changes
                        .push(format!("{} request {name} {have} clamped to {max}", c.name));
                }
            }
            None => {
                let Some(default) = policy.default_request(profile, role, res) else {
                    continue;
                };
                // A default above the container's own limit would make the pod invalid.
                let limit = limits
                    .and_then(|l| l.get(name))
                    .and_then(|q| Quantity::parse(&q.0).ok());
                let value = match limit {
                    Some(l) if l < *default => l,
                    _ => default.clone(),
                };
                defaults.insert(name, value.as_str().to_string());
            }
        }
    }
    if defaults.is_empty() {
        return;
    }
    let summary: Vec<String> = defaults.iter().map(|(k, v)| format!("{k}={v}")).collect();
    m.changes.push(format!(
        "{} ({}) requests {}",
        c.name,
        role.as_str(),
        summary.join(" ")
    ));
    match (&c.resources, requests) {
        (None, _) => m.add(
            &["spec", field, &idx, "resources"],
            json!({ "requests": defaults }),
        ),
        (Some(_), None) => m.add(
            &["spec", field, &idx, "resources", "requests"],
            json!(defaults),
        ),
        (Some(_), Some(_)) => {
            for (k, v) in defaults {
                m.add(&["spec", field, &idx, "resources", "requests", k], json!(v));
            }
        }
    }
}
