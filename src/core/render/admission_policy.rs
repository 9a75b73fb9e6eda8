//! `render admission-policy`: the in-tree backstop, a ValidatingAdmissionPolicy
//! and its binding compiled from the policy, that keeps the fence closed while
//! runner-fence itself is unreachable.
//!
//! It is a sound, conservative form of the invariant, evaluated by the
//! apiserver itself: each requirement of a profile the namespace may use must
//! be carried by the nodeSelector or by every required nodeSelectorTerm (the
//! loader has proven that each profile excludes the protected nodes); no
//! toleration may tolerate a protected taint; no `spec.nodeName` unless
//! allowed; no binding to a node in `protectedNodes.names`. Pods the mutating
//! webhook has patched pass; an unmutated pod (runner-fence down, mutating
//! webhook `failurePolicy: Ignore`) is denied with a message that names the
//! rule, the field and the fix, as the webhook's do. UPDATEs are only checked
//! for the fields they change, so pods admitted earlier can still be edited —
//! except the UPDATE that removes the last scheduling gate: from then on the
//! scheduler may place the pod, so it is judged like a new one.
//!
//! Per-rule modes are honoured: validations whose rules are all in audit mode
//! go to a second policy (`<name>-audit`) bound with `Warn, Audit`. When the
//! whole policy audits, the mutating webhook patches nothing, so every pod
//! lacks its profile's requirements: the placement check would warn on every
//! pod and is left out. What remains judges what mutation never changes
//! (tolerations of protected taints, `nodeName`, bindings), so the backstop
//! warns only for pods enforce mode would deny, in the webhook's words. A check
//! that stands for two rules (the placement check also keeps pods off protected
//! nodes; `nodeName` bypasses the scheduler, so the backstop cannot prove the
//! node unprotected) denies while either rule enforces: deliberately
//! conservative, it may deny more than the webhook, never admit a pod the
//! webhook would deny.
//!
//! Scope is the same as the webhooks' ([`super::webhooks`]): one implementation.

use k8s_openapi::api::admissionregistration::v1::{
    MatchCondition, MatchResources, NamedRuleWithOperations, ValidatingAdmissionPolicy,
    ValidatingAdmissionPolicyBinding, ValidatingAdmissionPolicyBindingSpec,
    ValidatingAdmissionPolicySpec, Validation, Variable,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::Object;
use super::webhooks::{RenderError, match_conditions, namespace_selector};
use crate::core::policy::{Mode, Operator, Policy, Requirement, RuleId, TaintSpec};
use crate::core::tolerations::{Field, TOLERATES, TaintView, Test};

/// Name of the ValidatingAdmissionPolicy and its binding.
pub const NAME: &str = "runner-fence-backstop";

/// Name of the policy for validations whose rules are all audited ([`name_for`]).
pub const AUDIT_NAME: &str = "runner-fence-backstop-audit";

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

/// The CEL that term `t` carries requirement `r`.
fn term_carries(r: &Requirement) -> String {
    format!(
        "(has(t.matchExpressions) && t.matchExpressions.exists(e, {}))",
        expr_is(r)
    )
}

/// The CEL that the nodeSelector carries `r` (only `In [v]` can be).
fn node_selector_carries(r: &Requirement) -> String {
    match (r.operator, r.values.as_slice()) {
        (Operator::In, [v]) => format!(
            "(has(object.spec.nodeSelector) && {k} in object.spec.nodeSelector && object.spec.nodeSelector[{k}] == {v})",
            k = lit(&r.key),
            v = lit(v)
        ),
        _ => "false".into(),
    }
}

/// The CEL that every alternative the scheduler may pick carries `r`: the
/// nodeSelector (AND-ed with every term) does, or every term does.
fn carried(r: &Requirement) -> String {
    format!(
        "({} || (variables.terms.size() > 0 && variables.terms.all(t, {})))",
        node_selector_carries(r),
        term_carries(r)
    )
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
                None => None,
                // An empty list allows the profile nowhere, as the engine reads
                // it (`Profile::allowed_in`).
                Some(list) if list.is_empty() => Some("false".to_string()),
                Some(list) => {
                    let t: Vec<String> = list.iter().map(|n| namespace_test(n)).collect();
                    Some(format!("({})", t.join(" || ")))
                }
            };
            let parts: Vec<String> = ns
                .into_iter()
                .chain(p.required_node_labels.iter().map(carried))
                .collect();
            if parts.is_empty() {
                "true".to_string()
            } else {
                format!("({})", parts.join(" && "))
            }
        })
        .collect();
    alts.join(" || ")
}

/// `(has(t.operator) && t.operator == 'Exists')` for toleration `t`.
fn exists(t: &str) -> String {
    format!("(has({t}.operator) && {t}.operator == 'Exists')")
}

/// A test of [`TOLERATES`] for one protected taint: decided by the taint alone
/// (a field it leaves open), or CEL on the toleration.
#[derive(Debug, PartialEq)]
enum Part {
    Const(bool),
    Cel(String),
}

/// `parts` joined by `op`, where `absorbing` decides the whole (false for
/// `&&`, true for `||`) and its negation drops out.
fn join(parts: impl IntoIterator<Item = Part>, op: &str, absorbing: bool) -> Part {
    let mut cel = Vec::new();
    for part in parts {
        match part {
            Part::Const(b) if b == absorbing => return Part::Const(b),
            Part::Const(_) => {}
            Part::Cel(c) => cel.push(c),
        }
    }
    if cel.is_empty() {
        Part::Const(!absorbing)
    } else {
        Part::Cel(format!("({})", cel.join(op)))
    }
}

/// One test of [`TOLERATES`] on toleration `t` (a CEL expression) and protected taint `taint`.
fn test_cel(test: &Test, taint: &TaintView<'_>, t: &str) -> Part {
    let empty = |f: Field| format!("(!has({t}.{f}) || {t}.{f} == '')", f = f.name());
    match *test {
        Test::Exists => Part::Cel(exists(t)),
        Test::Empty(f) => Part::Cel(empty(f)),
        Test::Open(f) => Part::Const(taint.field(f).is_none()),
        Test::Same(f) => match taint.field(f) {
            None => Part::Const(false),
            Some("") => Part::Cel(empty(f)),
            Some(v) => Part::Cel(format!(
                "(has({t}.{f}) && {t}.{f} == {})",
                lit(v),
                f = f.name()
            )),
        },
        Test::All(tests) => join(tests.iter().map(|x| test_cel(x, taint, t)), " && ", false),
    }
}

/// The CEL that toleration `t` (a CEL expression) tolerates the protected
/// taint: [`TOLERATES`], the rule the engine evaluates, with the taint's
/// fields filled in.
fn tolerates(taint: &TaintSpec, t: &str) -> String {
    let taint = TaintView::of_spec(taint);
    let clauses = TOLERATES
        .iter()
        .map(|clause| join(clause.iter().map(|x| test_cel(x, &taint, t)), " || ", true));
    match join(clauses, " && ", false) {
        Part::Const(b) => b.to_string(),
        Part::Cel(c) => c,
    }
}

/// The pod's tolerations that tolerate a protected taint (variable `tolerating`).
fn tolerating_expression(policy: &Policy) -> String {
    if policy.protected_nodes.taints.is_empty() {
        return "[]".into();
    }
    let any: Vec<String> = policy
        .protected_nodes
        .taints
        .iter()
        .map(|taint| tolerates(taint, "t"))
        .collect();
    format!(
        "has(object.spec) && has(object.spec.tolerations) ? object.spec.tolerations.filter(t, {}) : []",
        any.join(" || ")
    )
}

/// The webhook's message for the first tolerating toleration, word for word
/// (`Cause::ToleratesProtectedTaint` without the node cache, which the
/// backstop does not have): its index, the first protected taint it
/// tolerates and, for `Exists`, what it tolerates (`Tol::describe`).
fn tolerations_message(policy: &Policy) -> String {
    let t = "variables.tolerating[0]";
    let mut taint = String::from("''");
    for spec in policy.protected_nodes.taints.iter().rev() {
        taint = format!(
            "({} ? {} : {taint})",
            tolerates(spec, t),
            lit(&spec.to_string())
        );
    }
    let describe = format!(
        "((!has({t}.key) || {t}.key == '') ? 'every taint (empty key, operator Exists)' : {t}.key + ' (any value)' + ((!has({t}.effect) || {t}.effect == '') ? ' with any effect' : ':' + {t}.effect))"
    );
    format!(
        "'protected-nodes: spec.tolerations[' + string(object.spec.tolerations.indexOf({t})) + '] tolerates ' + {taint} + ', the taint protectedNodes.taints lists for GitLab\\'s nodes' + ({} ? ' (it tolerates ' + {describe} + ')' : '') + '; remove the KUBERNETES_NODE_TOLERATIONS_* override {SOURCE}'",
        exists(t)
    )
}

/// UPDATE only checks what changes: `field` equal in object and oldObject,
/// unless the update ungates the pod.
fn unchanged(field: &str) -> String {
    format!(
        "(request.operation == 'UPDATE' && !variables.ungating && has(object.spec.{field}) == has(oldObject.spec.{field}) && (!has(object.spec.{field}) || object.spec.{field} == oldObject.spec.{field}))"
    )
}

/// The UPDATE removes the pod's last scheduling gate.
const UNGATING: &str = "request.operation == 'UPDATE' && request.kind.kind == 'Pod' && has(oldObject.spec.schedulingGates) && size(oldObject.spec.schedulingGates) > 0 && (!has(object.spec.schedulingGates) || size(object.spec.schedulingGates) == 0)";

/// The required nodeSelectorTerms, or none.
const TERMS: &str = "has(object.spec) && has(object.spec.affinity) && has(object.spec.affinity.nodeAffinity) && has(object.spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution) ? object.spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms : []";

/// Where a backstop message comes from. The apiserver runs admission policies
/// before webhooks, so the backstop often speaks first even with runner-fence up.
const SOURCE: &str = "[runner-fence backstop]";

/// One backstop check: its CEL, message, and the rules it stands for.
struct Check {
    rules: &'static [RuleId],
    expression: String,
    message: String,
    message_expression: Option<String>,
}

impl Check {
    /// Enforced while any of its rules enforces.
    fn mode(&self, policy: &Policy) -> Mode {
        if self
            .rules
            .iter()
            .any(|r| policy.rule_mode(*r) == Mode::Enforce)
        {
            Mode::Enforce
        } else {
            Mode::Audit
        }
    }

    fn validation(&self) -> Validation {
        Validation {
            expression: self.expression.clone(),
            message: Some(self.message.clone()),
            message_expression: self.message_expression.clone(),
            reason: Some("Forbidden".into()),
        }
    }
}

fn join_reqs(reqs: &[Requirement]) -> String {
    reqs.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn checks(policy: &Policy) -> Vec<Check> {
    // The rules send pods and Bindings only; the kind tells them apart.
    let is_pod = "request.kind.kind == 'Pod'";
    let placement_unchanged = format!(
        "({} && {})",
        unchanged("affinity"),
        unchanged("nodeSelector")
    );
    let profiles = policy
        .placement
        .profiles
        .iter()
        .map(|(n, p)| format!("{n}: {}", join_reqs(&p.required_node_labels)))
        .collect::<Vec<_>>()
        .join("; ");
    let taints = policy
        .protected_nodes
        .taints
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let mut out = Vec::new();
    // Only a patched pod can carry its profile's requirements: in audit mode
    // nothing is patched and enforce mode would add them, so the check is left out.
    if policy.mode == Mode::Enforce {
        out.push(Check {
            rules: &[RuleId::Placement, RuleId::ProtectedNodes],
            expression: format!(
                "!({is_pod}) || {placement_unchanged} || {}",
                placement_expression(policy)
            ),
            message: format!(
                "placement: spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms (or spec.nodeSelector) does not require the node labels of a runner-fence profile this namespace may use ({profiles}), so nothing keeps the pod off protected GitLab nodes; the runner-fence mutating webhook adds them: check that runner-fence is running and its MutatingWebhookConfiguration registered {SOURCE}"
            ),
            message_expression: None,
        });
    }
    if !policy.protected_nodes.taints.is_empty() {
        out.push(Check {
            rules: &[RuleId::ProtectedNodes],
            expression: format!(
                "!({is_pod}) || {} || size(variables.tolerating) == 0",
                unchanged("tolerations"),
            ),
            message: format!(
                "protected-nodes: spec.tolerations tolerates {taints}, the taint protectedNodes.taints lists for GitLab's nodes; remove the KUBERNETES_NODE_TOLERATIONS_* override {SOURCE}"
            ),
            message_expression: Some(tolerations_message(policy)),
        });
    }
    if !policy.allow_node_name {
        out.push(Check {
            rules: &[RuleId::NodeName, RuleId::ProtectedNodes],
            expression: format!(
                "!({is_pod}) || request.operation == 'UPDATE' || !has(object.spec.nodeName) || object.spec.nodeName == ''"
            ),
            message: format!(
                "node-name: spec.nodeName is set; job pods must be placed by the scheduler, remove spec.nodeName (or set allowNodeName: true in the policy) {SOURCE}"
            ),
            message_expression: Some(format!(
                "'node-name: spec.nodeName is set to ' + object.spec.nodeName + '; job pods must be placed by the scheduler, remove spec.nodeName (or set allowNodeName: true in the policy) {SOURCE}'"
            )),
        });
    }
    if !policy.protected_nodes.names.is_empty() {
        let names = list(&policy.protected_nodes.names);
        let text = "(listed in protectedNodes.names); job pods must run on runner nodes or Fargate";
        out.push(Check {
            rules: &[RuleId::ProtectedNodes],
            expression: format!(
                "request.kind.kind != 'Binding' || !(object.target.name in {names})"
            ),
            message: format!(
                "protected-nodes: target.name binds the job pod to a protected GitLab node {text} {SOURCE}"
            ),
            message_expression: Some(format!(
                "'protected-nodes: target.name binds the job pod to protected GitLab node ' + object.target.name + ' {text} {SOURCE}'"
            )),
        });
    }
    out
}

/// Name of the policy holding a mode's checks: `base` (bound `Deny`) or
/// `base-audit` (bound `Warn, Audit`).
pub fn name_for(base: &str, mode: Mode) -> String {
    match mode {
        Mode::Enforce => base.to_string(),
        Mode::Audit => format!("{base}-audit"),
    }
}

/// A policy's checks as ValidatingAdmissionPolicy validations, by the action
/// they get: enforced ones first, then audited ones.
pub fn validations(policy: &Policy) -> [(Mode, Vec<Validation>); 2] {
    let (enforced, audited): (Vec<Check>, Vec<Check>) = checks(policy)
        .into_iter()
        .partition(|c| c.mode(policy) == Mode::Enforce);
    let typed = |cs: Vec<Check>| cs.iter().map(Check::validation).collect();
    [
        (Mode::Enforce, typed(enforced)),
        (Mode::Audit, typed(audited)),
    ]
}

fn variable(name: &str, expression: String) -> Variable {
    Variable {
        name: name.to_string(),
        expression,
    }
}

/// The variables a policy's validations read: `terms`, `ungating` and, under
/// `tolerating`, the pod's tolerations of the policy's protected taints.
pub fn variables(policy: &Policy) -> Vec<Variable> {
    vec![
        variable("terms", TERMS.into()),
        variable("ungating", UNGATING.into()),
        variable(TOLERATING, tolerating_expression(policy)),
    ]
}

/// The one variable that depends on the policy (its protected taints).
pub const TOLERATING: &str = "tolerating";

/// Where a backstop policy applies: its scope and the requests it is sent.
pub struct Scope {
    /// The webhooks' `matchConditions`.
    pub conditions: Vec<MatchCondition>,
    /// The webhooks' `namespaceSelector`.
    pub namespace_selector: LabelSelector,
}

impl Scope {
    /// The scope of one policy (the webhook in `own_namespace`).
    pub fn of(policy: &Policy, own_namespace: &str) -> Self {
        Scope {
            conditions: match_conditions(policy),
            namespace_selector: namespace_selector(policy, own_namespace),
        }
    }
}

fn rule(operations: &[&str], resources: &[&str]) -> NamedRuleWithOperations {
    let strings = |s: &[&str]| Some(s.iter().map(|s| s.to_string()).collect());
    NamedRuleWithOperations {
        api_groups: strings(&[""]),
        api_versions: strings(&["v1"]),
        operations: strings(operations),
        resources: strings(resources),
        scope: Some("Namespaced".into()),
        resource_names: None,
    }
}

/// A ValidatingAdmissionPolicy and its binding for `validations` in a scope.
pub fn pair(
    name: &str,
    mode: Mode,
    validations: Vec<Validation>,
    variables: Vec<Variable>,
    scope: Scope,
) -> [Object; 2] {
    let vap = ValidatingAdmissionPolicy {
        metadata: super::metadata(name),
        spec: Some(ValidatingAdmissionPolicySpec {
            failure_policy: Some("Fail".into()),
            match_constraints: Some(MatchResources {
                resource_rules: Some(vec![
                    rule(&["CREATE", "UPDATE"], &["pods"]),
                    rule(&["CREATE"], &["pods/binding", "bindings"]),
                ]),
                namespace_selector: Some(scope.namespace_selector),
                ..MatchResources::default()
            }),
            match_conditions: Some(scope.conditions),
            variables: Some(variables),
            validations: Some(validations),
            ..ValidatingAdmissionPolicySpec::default()
        }),
        status: None,
    };
    // Audit: reported to the client and the audit log, never denied.
    let actions: &[&str] = match mode {
        Mode::Enforce => &["Deny"],
        Mode::Audit => &["Warn", "Audit"],
    };
    let binding = ValidatingAdmissionPolicyBinding {
        metadata: super::metadata(name),
        spec: Some(ValidatingAdmissionPolicyBindingSpec {
            policy_name: Some(name.to_string()),
            validation_actions: Some(actions.iter().map(|a| a.to_string()).collect()),
            ..ValidatingAdmissionPolicyBindingSpec::default()
        }),
    };
    [
        Object::Policy(Box::new(vap)),
        Object::Binding(Box::new(binding)),
    ]
}

/// The ValidatingAdmissionPolicies and their bindings: the enforced checks
/// under [`NAME`] (bound `Deny`) and the audited ones under [`AUDIT_NAME`]
/// (`Warn, Audit`); a policy without checks of a mode has no object of it (a
/// whole policy in audit mode has only [`AUDIT_NAME`]).
pub fn objects(policy: &Policy, own_namespace: &str) -> Result<Vec<Object>, RenderError> {
    objects_named(policy, own_namespace, NAME)
}

/// [`objects`] under another base name (one per release: `<release>-backstop`).
pub fn objects_named(
    policy: &Policy,
    own_namespace: &str,
    base: &str,
) -> Result<Vec<Object>, RenderError> {
    // Same scope checks as the webhooks (kube-system, the webhook's namespace).
    super::webhooks::check_scope(policy, own_namespace)?;
    let mut out = Vec::new();
    for (mode, validations) in validations(policy) {
        if !validations.is_empty() {
            out.extend(pair(
                &name_for(base, mode),
                mode,
                validations,
                variables(policy),
                Scope::of(policy, own_namespace),
            ));
        }
    }
    Ok(out)
}

/// Marks a validation's messages as coming from one RunnerFencePolicy (when
/// several share a backstop object).
pub fn attribute(validation: &mut Validation, policy: &str) {
    let tag = format!("[runner-fence backstop, RunnerFencePolicy {policy}]");
    for m in [&mut validation.message, &mut validation.message_expression]
        .into_iter()
        .flatten()
    {
        *m = m.replace(SOURCE, &tag);
    }
}

/// The objects as one YAML stream, with a header.
pub fn render_yaml(policy: &Policy, own_namespace: &str) -> Result<String, RenderError> {
    render_yaml_named(policy, own_namespace, NAME)
}

/// [`render_yaml`] under another base name (see [`objects_named`]).
pub fn render_yaml_named(
    policy: &Policy,
    own_namespace: &str,
    base: &str,
) -> Result<String, RenderError> {
    let header = format!(
        "# Generated by `runner-fence render admission-policy` from policy {:?}; do not edit by hand.\n\
         # The in-tree backstop: the apiserver itself keeps job pods off protected nodes while\n\
         # runner-fence is unreachable.\n",
        policy.metadata.name
    );
    Ok(super::yaml_stream(
        &header,
        &objects_named(policy, own_namespace, base)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::tolerations::{TaintEffect, Tol};
    use k8s_openapi::api::core::v1::Toleration;

    /// What the apiserver matches and does on failure: pods on CREATE and UPDATE
    /// (the ungating UPDATE), bindings on CREATE, namespaced, in the core group;
    /// `Fail` written out (the default, but a reader and `kubectl diff` see it).
    #[test]
    fn the_policy_matches_pods_and_bindings_and_fails_closed() {
        let policy = crate::core::policy::embedded().unwrap_or_else(|e| panic!("{e}"));
        let objects = objects(&policy, "runner-fence").unwrap_or_else(|e| panic!("{e}"));
        let Some(Object::Policy(vap)) = objects.first() else {
            panic!("no ValidatingAdmissionPolicy first");
        };
        let spec = serde_json::to_value(&vap.spec).unwrap_or_default();
        assert_eq!(spec["failurePolicy"], "Fail");
        let rule = |ops: &[&str], resources: &[&str]| {
            serde_json::json!({"apiGroups": [""], "apiVersions": ["v1"], "operations": ops,
                "resources": resources, "scope": "Namespaced"})
        };
        assert_eq!(
            spec["matchConstraints"]["resourceRules"],
            serde_json::json!([
                rule(&["CREATE", "UPDATE"], &["pods"]),
                rule(&["CREATE"], &["pods/binding", "bindings"])
            ])
        );
        assert!(spec["matchConstraints"]["namespaceSelector"].is_object());
        assert_eq!(
            spec["matchConditions"],
            serde_json::to_value(match_conditions(&policy)).unwrap_or_default()
        );
        // Its binding names it and denies (the reference policy enforces).
        let Some(Object::Binding(binding)) = objects.get(1) else {
            panic!("no binding second");
        };
        let bound = serde_json::to_value(&binding.spec).unwrap_or_default();
        assert_eq!(bound["policyName"], serde_json::json!(vap.metadata.name));
        assert_eq!(bound["validationActions"], serde_json::json!(["Deny"]));
    }

    /// The YAML stream is the objects, under the base name asked for, after a
    /// header that says where it comes from.
    #[test]
    fn the_yaml_stream_is_the_objects() {
        let policy = crate::core::policy::embedded().unwrap_or_else(|e| panic!("{e}"));
        for (text, base) in [
            (render_yaml(&policy, "runner-fence"), NAME),
            (
                render_yaml_named(&policy, "runner-fence", "team-a-backstop"),
                "team-a-backstop",
            ),
        ] {
            let text = text.unwrap_or_else(|e| panic!("{e}"));
            assert!(
                text.starts_with("# Generated by `runner-fence render admission-policy`"),
                "{text}"
            );
            let docs: Vec<serde_json::Value> = crate::core::document::split_stream(&text)
                .iter()
                .map(|d| {
                    serde_saphyr::from_str(d.text).unwrap_or_else(|e| panic!("{e}: {}", d.text))
                })
                .collect();
            let want: Vec<serde_json::Value> = objects_named(&policy, "runner-fence", base)
                .unwrap_or_else(|e| panic!("{e}"))
                .iter()
                .map(Object::to_value)
                .collect();
            assert_eq!(docs.len(), 2);
            assert_eq!(docs, want);
            assert_eq!(docs[0]["metadata"]["name"], serde_json::json!(base));
        }
    }

    /// Attributed messages name the RunnerFencePolicy instead of the bare source.
    #[test]
    fn attribution_names_the_policy_in_both_messages() {
        let mut v = Validation {
            expression: "true".into(),
            message: Some(format!("denied {SOURCE}")),
            message_expression: Some(format!("'denied ' + 'x' + ' {SOURCE}'")),
            reason: None,
        };
        attribute(&mut v, "team-a");
        let tag = "[runner-fence backstop, RunnerFencePolicy team-a]";
        assert_eq!(v.message.as_deref(), Some(format!("denied {tag}").as_str()));
        assert_eq!(
            v.message_expression.as_deref(),
            Some(format!("'denied ' + 'x' + ' {tag}'").as_str())
        );
    }

    /// The compiler's joins: a constant that decides makes the whole, the others
    /// drop out, and only constants leave the join's unit. Every clause of today's
    /// TOLERATES has a CEL part, so the table alone never reaches the last case.
    #[test]
    fn constants_decide_or_drop_out_of_a_join() {
        use Part::{Cel, Const};
        let c = |s: &str| Cel(s.to_string());
        assert_eq!(join([Const(true), Const(true)], " && ", false), Const(true));
        assert_eq!(
            join([Const(false), Const(false)], " || ", true),
            Const(false)
        );
        assert_eq!(join([], " && ", false), Const(true));
        assert_eq!(join([], " || ", true), Const(false));
        assert_eq!(
            join([Const(true), c("a"), c("b")], " && ", false),
            c("(a && b)")
        );
        assert_eq!(join([c("a"), Const(false)], " || ", true), c("(a)"));
        assert_eq!(join([c("a"), Const(false)], " && ", false), Const(false));
        assert_eq!(join([c("a"), Const(true)], " || ", true), Const(true));
    }

    fn taint(value: Option<&str>, effect: Option<TaintEffect>) -> TaintSpec {
        TaintSpec {
            key: "workload".into(),
            value: value.map(String::from),
            effect,
        }
    }

    /// The CEL the backstop generates from [`TOLERATES`] decides as the engine
    /// does, for every toleration over an alphabet with absent and empty fields
    /// and every shape of protected taint (value and effect set, empty or open).
    #[test]
    fn the_toleration_rule_compiles_to_cel_that_decides_as_the_engine() {
        let opt = |xs: &[&'static str]| -> Vec<Option<&'static str>> {
            std::iter::once(None)
                .chain(xs.iter().copied().map(Some))
                .collect()
        };
        let (keys, ops) = (
            opt(&["", "workload", "other"]),
            opt(&["", "Equal", "Exists"]),
        );
        let (values, effects) = (
            opt(&["", "gitlab", "x"]),
            opt(&["", "NoSchedule", "NoExecute"]),
        );
        let mut decided = [0, 0];
        for value in [None, Some(""), Some("gitlab")] {
            for effect in [
                None,
                Some(TaintEffect::NoSchedule),
                Some(TaintEffect::NoExecute),
            ] {
                let spec = taint(value, effect);
                let cel = tolerates(&spec, "t");
                let program = cel::Program::compile(&cel).expect("compiles");
                for k in &keys {
                    for o in &ops {
                        for v in &values {
                            for e in &effects {
                                let tol = Toleration {
                                    key: k.map(String::from),
                                    operator: o.map(String::from),
                                    value: v.map(String::from),
                                    effect: e.map(String::from),
                                    toleration_seconds: None,
                                };
                                let want = Tol::of(&tol).tolerates_spec(&spec);
                                let mut ctx = cel::Context::default();
                                ctx.add_variable_from_value(
                                    "t",
                                    cel::to_value(&tol).expect("cel value"),
                                );
                                let got = program.execute(&ctx);
                                assert!(
                                    matches!(got, Ok(cel::Value::Bool(b)) if b == want),
                                    "{spec}: {tol:?}: engine {want}, CEL {got:?}\n{cel}"
                                );
                                decided[usize::from(want)] += 1;
                            }
                        }
                    }
                }
            }
        }
        // Both answers are reached: the comparison is not true for nothing.
        assert!(decided[0] > 0 && decided[1] > 0, "{decided:?}");
    }

    #[test]
    fn a_field_the_taint_leaves_open_drops_out_of_the_cel() {
        assert_eq!(
            tolerates(&taint(None, None), "t"),
            "((((!has(t.key) || t.key == '') && (has(t.operator) && t.operator == 'Exists')) || (has(t.key) && t.key == 'workload')))"
        );
        let full = tolerates(&taint(Some("gitlab"), Some(TaintEffect::NoSchedule)), "t");
        assert!(full.contains("t.value == 'gitlab'"), "{full}");
        assert!(full.contains("t.effect == 'NoSchedule'"), "{full}");
    }
}
