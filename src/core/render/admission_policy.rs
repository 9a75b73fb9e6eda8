//! `render admission-policy`: the in-tree backstop, a ValidatingAdmissionPolicy
//! and its binding compiled from the policy, that keeps the fence closed while
//! runner-fence itself is unreachable.
//!
//! It is a sound, conservative form of the invariant, evaluated by the
//! apiserver itself: every required nodeSelectorTerm (or the nodeSelector when
//! there are none) must carry the whole requirement set of a profile the
//! namespace may use (the loader has proven that each profile excludes the
//! protected nodes); no toleration may tolerate a protected taint; no
//! `spec.nodeName` unless allowed; no binding to a node in
//! `protectedNodes.names`. Pods the mutating webhook has patched pass; an
//! unmutated pod (runner-fence down, mutating webhook `failurePolicy: Ignore`)
//! is denied with a message that says why. UPDATEs are only checked for the
//! fields they change, so pods admitted earlier can still be edited.
//!
//! Scope is the same as the webhooks' ([`super::webhooks`]): one implementation.

use serde_json::{Value, json};

use super::webhooks::{RenderError, match_conditions, namespace_selector};
use crate::core::policy::{Operator, Policy, Requirement, TaintSpec};

/// Name of the ValidatingAdmissionPolicy and its binding.
pub const NAME: &str = "runner-fence-backstop";

use super::webhooks::cel_string as lit;

fn list(values: &[String]) -> String {
    let items: Vec<String> = values.iter().map(|v| lit(v)).collect();
    format!("[{}]", items.join(", "))
}

/// `e` (a nodeSelectorRequirement) is exactly `r` (values compared as sets).
fn expr_is(r: &Requirement) -> String {
    let mut c = format!(
        "e.key == {} && e.operator == {}",
        lit(&r.key),
        lit(r.operator.as_str())
    );
    if r.values.is_empty() {
        c.push_str(" && (!has(e.values) || size(e.values) == 0)");
    } else {
        let vals = list(&r.values);
        c.push_str(&format!(
            " && has(e.values) && e.values.all(v, v in {vals}) && {vals}.all(v, v in e.values)"
        ));
    }
    c
}

/// The CEL that a term carries every requirement of a profile.
fn term_carries(reqs: &[Requirement]) -> String {
    if reqs.is_empty() {
        return "true".into();
    }
    let parts: Vec<String> = reqs
        .iter()
        .map(|r| {
            format!(
                "(has(t.matchExpressions) && t.matchExpressions.exists(e, {}))",
                expr_is(r)
            )
        })
        .collect();
    parts.join(" && ")
}

/// The CEL that the nodeSelector alone carries every requirement (only `In [v]` can be).
fn node_selector_carries(reqs: &[Requirement]) -> String {
    if reqs.is_empty() {
        return "true".into();
    }
    let parts: Vec<String> = reqs
        .iter()
        .map(|r| match (r.operator, r.values.as_slice()) {
            (Operator::In, [v]) => format!(
                "(has(object.spec.nodeSelector) && {k} in object.spec.nodeSelector && object.spec.nodeSelector[{k}] == {v})",
                k = lit(&r.key),
                v = lit(v)
            ),
            _ => "false".into(),
        })
        .collect();
    parts.join(" && ")
}

/// A namespace pattern as CEL on `request.namespace`.
fn namespace_test(pattern: &str) -> String {
    match pattern.strip_suffix('*') {
        Some(prefix) => format!("request.namespace.startsWith({})", lit(prefix)),
        None => format!("request.namespace == {}", lit(pattern)),
    }
}

/// The CEL that the pod's placement carries the requirements of a profile it may use.
fn placement_expression(policy: &Policy) -> String {
    let alts: Vec<String> = policy
        .placement
        .profiles
        .values()
        .map(|p| {
            let ns = match &p.namespaces {
                Some(list) if !list.is_empty() => {
                    let t: Vec<String> = list.iter().map(|n| namespace_test(n)).collect();
                    format!("({}) && ", t.join(" || "))
                }
                _ => String::new(),
            };
            format!(
                "({ns}(variables.terms.size() > 0 ? variables.terms.all(t, {}) : {}))",
                term_carries(&p.required_node_labels),
                node_selector_carries(&p.required_node_labels)
            )
        })
        .collect();
    alts.join(" || ")
}

/// The CEL that toleration `t` tolerates the protected taint (as `Tol::tolerates_spec`).
fn tolerates(taint: &TaintSpec) -> String {
    let exists = "(has(t.operator) && t.operator == 'Exists')";
    let key_ok = format!(
        "(((!has(t.key) || t.key == '') && {exists}) || (has(t.key) && t.key == {}))",
        lit(&taint.key)
    );
    let value_ok = match &taint.value {
        Some(v) => format!("({exists} || (has(t.value) ? t.value : '') == {})", lit(v)),
        None => "true".into(),
    };
    let effect_ok = match taint.effect {
        Some(e) => format!(
            "(!has(t.effect) || t.effect == '' || t.effect == {})",
            lit(e.as_str())
        ),
        None => "true".into(),
    };
    format!("({key_ok} && {value_ok} && {effect_ok})")
}

fn tolerations_expression(policy: &Policy) -> String {
    if policy.protected_nodes.taints.is_empty() {
        return "true".into();
    }
    let any: Vec<String> = policy
        .protected_nodes
        .taints
        .iter()
        .map(tolerates)
        .collect();
    format!(
        "!has(object.spec.tolerations) || object.spec.tolerations.all(t, !({}))",
        any.join(" || ")
    )
}

/// UPDATE only checks what changes: `field` equal in object and oldObject.
fn unchanged(field: &str) -> String {
    format!(
        "(request.operation == 'UPDATE' && has(object.spec.{field}) == has(oldObject.spec.{field}) && (!has(object.spec.{field}) || object.spec.{field} == oldObject.spec.{field}))"
    )
}

/// The ValidatingAdmissionPolicy and its binding, as JSON objects.
pub fn objects(policy: &Policy, own_namespace: &str) -> Result<[Value; 2], RenderError> {
    objects_named(policy, own_namespace, NAME)
}

/// [`objects`] with another name for the policy and its binding (one per release).
pub fn objects_named(
    policy: &Policy,
    own_namespace: &str,
    name: &str,
) -> Result<[Value; 2], RenderError> {
    // Same scope checks as the webhooks (kube-system, the webhook's namespace).
    super::webhooks::check_scope(policy, own_namespace)?;
    // The rules send pods and Bindings only; the kind tells them apart.
    let is_pod = "request.kind.kind == 'Pod'";
    let placement_unchanged = format!(
        "({} && {})",
        unchanged("affinity"),
        unchanged("nodeSelector")
    );
    let mut validations = vec![
        json!({
            "expression": format!("!({is_pod}) || {placement_unchanged} || {}", placement_expression(policy)),
            "message": format!(
                "runner-fence backstop: every required nodeSelectorTerm (or the nodeSelector when there are none) must carry the node requirements of a runner-fence profile ({}); the runner-fence mutating webhook adds them, so it is probably not running or not registered",
                policy.placement.profiles.iter().map(|(n, p)| format!("{n}: {}", p.required_node_labels.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "))).collect::<Vec<_>>().join("; ")
            ),
            "reason": "Forbidden",
        }),
        json!({
            "expression": format!("!({is_pod}) || {} || {}", unchanged("tolerations"), tolerations_expression(policy)),
            "message": format!(
                "runner-fence backstop: a toleration tolerates a taint of protected GitLab nodes ({}); remove the KUBERNETES_NODE_TOLERATIONS_* override",
                policy.protected_nodes.taints.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
            ),
            "reason": "Forbidden",
        }),
    ];
    if !policy.allow_node_name {
        validations.push(json!({
            "expression": format!("!({is_pod}) || request.operation == 'UPDATE' || !has(object.spec.nodeName) || object.spec.nodeName == ''"),
            "message": "runner-fence backstop: job pods must be placed by the scheduler; remove spec.nodeName",
            "reason": "Forbidden",
        }));
    }
    if !policy.protected_nodes.names.is_empty() {
        validations.push(json!({
            "expression": format!(
                "request.kind.kind != 'Binding' || !(object.target.name in {})",
                list(&policy.protected_nodes.names)
            ),
            "message": "runner-fence backstop: binds a job pod to a protected GitLab node (protectedNodes.names)",
            "reason": "Forbidden",
        }));
    }
    let conditions: Vec<Value> = match_conditions(policy)
        .into_iter()
        .map(|c| json!({"name": c.name, "expression": c.expression}))
        .collect();
    let vap = json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "runner-fence"}},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {
                "resourceRules": [
                    {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"], "resources": ["pods"], "scope": "Namespaced"},
                    {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods/binding", "bindings"], "scope": "Namespaced"},
                ],
                "namespaceSelector": serde_json::to_value(namespace_selector(policy, own_namespace)).unwrap_or(Value::Null),
            },
            "matchConditions": conditions,
            "variables": [{
                "name": "terms",
                "expression": "has(object.spec) && has(object.spec.affinity) && has(object.spec.affinity.nodeAffinity) && has(object.spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution) ? object.spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms : []",
            }],
            "validations": validations,
        },
    });
    let binding = json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "runner-fence"}},
        "spec": {
            "policyName": name,
            // Audit mode: reported to the client and the audit log, never denied.
            "validationActions": match policy.mode {
                crate::core::policy::Mode::Enforce => json!(["Deny"]),
                crate::core::policy::Mode::Audit => json!(["Warn", "Audit"]),
            },
        },
    });
    Ok([vap, binding])
}

/// Both objects as one YAML stream, with a header.
pub fn render_yaml(policy: &Policy, own_namespace: &str) -> Result<String, RenderError> {
    render_yaml_named(policy, own_namespace, NAME)
}

/// [`render_yaml`] with another name (see [`objects_named`]).
pub fn render_yaml_named(
    policy: &Policy,
    own_namespace: &str,
    name: &str,
) -> Result<String, RenderError> {
    let docs = objects_named(policy, own_namespace, name)?;
    let mut out = format!(
        "# Generated by `runner-fence render admission-policy` from policy {:?}; do not edit by hand.\n\
         # The in-tree backstop: the apiserver itself keeps job pods off protected nodes while\n\
         # runner-fence is unreachable.\n",
        policy.metadata.name
    );
    for d in docs {
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(&d).unwrap_or_default());
    }
    Ok(out)
}
