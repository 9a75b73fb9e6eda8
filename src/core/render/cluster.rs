//! What the policy controller applies for the served policies (SPEC §12):
//! the two webhook configurations scoped to every served policy's namespaces
//! and the backstop, built by the functions `render webhooks` and `render
//! admission-policy` use, under names derived from the release so that two
//! installations coexist. Also what a live object may differ in without
//! being a hand edit ([`drift`]).

use serde_json::{Value, json};

use super::admission_policy;
use super::webhooks::{self, Names, Options, RenderError, scope_expression};
use crate::core::fleet::PolicySet;
use crate::core::policy::{Mode, Policy};

/// The backstop of the enforcing policies: `<release>-backstop`.
pub fn backstop_name(release: &str, mode: Mode) -> String {
    match mode {
        Mode::Enforce => format!("{release}-backstop"),
        // Its binding warns and audits instead of denying, so it is a policy of its own.
        Mode::Audit => format!("{release}-backstop-audit"),
    }
}

/// One generated object: its kind and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ObjectName {
    /// `MutatingWebhookConfiguration`, ...
    pub kind: &'static str,
    /// `metadata.name`.
    pub name: String,
}

/// The kinds the controller writes, in apply order (a binding after its policy).
pub const KINDS: [&str; 4] = [
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
];

/// Every object a release can own, whatever its policies: what RBAC names
/// (`resourceNames`) and what is deleted when nothing is served.
pub fn all_names(release: &str) -> Vec<ObjectName> {
    let names = Names::release(release);
    let mut out = vec![
        ObjectName {
            kind: KINDS[0],
            name: names.mutating,
        },
        ObjectName {
            kind: KINDS[1],
            name: names.validating,
        },
    ];
    for mode in [Mode::Enforce, Mode::Audit] {
        for kind in &KINDS[2..] {
            out.push(ObjectName {
                kind,
                name: backstop_name(release, mode),
            });
        }
    }
    out
}

/// The backstop of a release: every served policy's enforced checks in
/// `<release>-backstop` (`Deny`), its audited ones in `<release>-backstop-audit`
/// (`Warn, Audit`). A policy alone in an object gets exactly what `render
/// admission-policy --release` prints; with several, each validation applies in
/// its own policy's namespaces only and its message names the policy.
pub fn backstop(
    policies: &[&Policy],
    own_namespace: &str,
    release: &str,
) -> Result<Vec<Value>, RenderError> {
    let base = backstop_name(release, Mode::Enforce);
    let mut out = Vec::new();
    for p in policies {
        super::webhooks::check_scope(p, own_namespace)?;
    }
    for (i, mode) in [Mode::Enforce, Mode::Audit].into_iter().enumerate() {
        let contributing: Vec<(&Policy, Vec<Value>)> = policies
            .iter()
            .map(|p| {
                let [enforced, audited] = admission_policy::validations(p);
                (*p, if i == 0 { enforced.1 } else { audited.1 })
            })
            .filter(|(_, v)| !v.is_empty())
            .collect();
        let name = admission_policy::name_for(&base, mode);
        match contributing.as_slice() {
            [] => {}
            [(p, validations)] => out.extend(admission_policy::pair(
                &name,
                mode,
                validations.clone(),
                admission_policy::variables(p),
                admission_policy::conditions_json(webhooks::match_conditions(p)),
                serde_json::to_value(webhooks::namespace_selector(p, own_namespace))
                    .unwrap_or(Value::Null),
            )),
            several => {
                let mut validations = Vec::new();
                let mut namespaces: Vec<String> = Vec::new();
                // The policy-independent variables once; each policy's own
                // `tolerating` (its protected taints) under a name of its own.
                let mut variables: Vec<Value> = admission_policy::variables(several[0].0)
                    .into_iter()
                    .filter(|v| v["name"] != admission_policy::TOLERATING)
                    .collect();
                for (i, (p, vs)) in several.iter().enumerate() {
                    let own = format!("{}{i}", admission_policy::TOLERATING);
                    for v in admission_policy::variables(p) {
                        if v["name"] == admission_policy::TOLERATING {
                            variables.push(json!({"name": own, "expression": v["expression"]}));
                        }
                    }
                    let gate = scope_expression(p);
                    let from = format!("variables.{}", admission_policy::TOLERATING);
                    let to = format!("variables.{own}");
                    for v in vs {
                        let mut v = v.clone();
                        for key in ["expression", "messageExpression"] {
                            if let Some(e) = v[key].as_str() {
                                v[key] = e.replace(&from, &to).into();
                            }
                        }
                        if let Some(e) = v["expression"].as_str() {
                            v["expression"] = format!("!({gate}) || ({e})").into();
                        }
                        admission_policy::attribute(&mut v, &p.metadata.name);
                        validations.push(v);
                    }
                    for ns in &p.matching.namespaces {
                        if !namespaces.contains(ns) {
                            namespaces.push(ns.clone());
                        }
                    }
                }
                out.extend(admission_policy::pair(
                    &name,
                    mode,
                    validations,
                    variables,
                    admission_policy::conditions_json(webhooks::match_conditions_of(&namespaces)),
                    serde_json::to_value(webhooks::namespace_selector_of(
                        &namespaces,
                        own_namespace,
                    ))
                    .unwrap_or(Value::Null),
                ));
            }
        }
    }
    if out.is_empty() {
        return Err(RenderError::NoPolicies);
    }
    Ok(out)
}

/// Everything to apply for the served policies, in apply order. Nothing
/// when nothing is served: then every object of [`all_names`] is removed.
pub fn desired(set: &PolicySet, opts: &Options, release: &str) -> Result<Vec<Value>, RenderError> {
    if set.is_empty() {
        return Ok(Vec::new());
    }
    let opts = Options {
        names: Names::release(release),
        ..opts.clone()
    };
    let own = match &opts.client {
        webhooks::Client::Service { namespace, .. } | webhooks::Client::Url { namespace, .. } => {
            namespace.clone()
        }
    };
    let policies: Vec<&Policy> = set.iter().collect();
    let mut out: Vec<Value> = webhooks::objects_of(&policies, &opts)?.into();
    out.extend(backstop(&policies, &own, release)?);
    Ok(out)
}

/// The kind and name of a generated object.
pub fn object_name(v: &Value) -> Option<ObjectName> {
    let kind = v["kind"].as_str()?;
    let kind = KINDS.iter().find(|k| **k == kind)?;
    Some(ObjectName {
        kind,
        name: v["metadata"]["name"].as_str()?.to_string(),
    })
}

/// Whether a field the generator does not write holds what the apiserver fills in.
fn defaulted(key: &str, v: &Value) -> bool {
    let empty = match v {
        Value::Null => true,
        Value::Object(o) => o.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    };
    empty
        || matches!(
            (key, v.as_str()),
            ("matchPolicy", Some("Equivalent"))
                | ("reinvocationPolicy", Some("Never"))
                | ("failurePolicy", Some("Fail"))
                | ("scope", Some("*"))
        )
        || (key == "timeoutSeconds" && v == &json!(10))
}

/// How a live generated object differs from what was applied (None: it does
/// not, server defaults and metadata aside). Anything else — a field changed,
/// or one added that the generator never writes, such as an `objectSelector`
/// — is a hand edit to revert.
pub fn drift(desired: &Value, live: &Value) -> Option<String> {
    for key in ["webhooks", "spec"] {
        if let Some(d) = desired.get(key) {
            let l = live.get(key).unwrap_or(&Value::Null);
            if let Some(why) = differs(d, l, key) {
                return Some(why);
            }
        }
    }
    None
}

fn differs(d: &Value, l: &Value, at: &str) -> Option<String> {
    match (d, l) {
        (Value::Object(d), Value::Object(l)) => {
            for (k, dv) in d {
                // caBundle is not generated when cert-manager injects it.
                let lv = l.get(k).unwrap_or(&Value::Null);
                if let Some(why) = differs(dv, lv, &format!("{at}.{k}")) {
                    return Some(why);
                }
            }
            l.iter()
                .find(|(k, v)| !d.contains_key(*k) && !defaulted(k, v) && k.as_str() != "caBundle")
                .map(|(k, _)| format!("{at}.{k} was added"))
        }
        (Value::Array(d), Value::Array(l)) => {
            if d.len() != l.len() {
                return Some(format!("{at} has {} entries, not {}", l.len(), d.len()));
            }
            d.iter()
                .zip(l)
                .enumerate()
                .find_map(|(i, (d, l))| differs(d, l, &format!("{at}[{i}]")))
        }
        (d, l) if d == l => None,
        _ => Some(format!("{at} was changed")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::policy::embedded;

    fn policy(name: &str, namespaces: &[&str], mode: Mode) -> Policy {
        let mut p = embedded().expect("reference");
        p.metadata.name = name.into();
        p.mode = mode;
        p.matching.namespaces = namespaces.iter().map(|s| s.to_string()).collect();
        p.fargate.selectors.clear();
        p
    }

    fn opts() -> Options {
        Options::service("runner-fence", "runner-fence")
    }

    #[test]
    fn one_policy_gets_exactly_what_render_prints_for_its_release() {
        let p = embedded().expect("reference");
        let got = desired(&PolicySet::single(p.clone()), &opts(), "rf-a").expect("desired");
        let o = Options {
            names: Names::release("rf-a"),
            ..opts()
        };
        let mut want: Vec<Value> = webhooks::objects(&p, &o).expect("webhooks").into();
        want.extend(
            admission_policy::objects_named(&p, "runner-fence", "rf-a-backstop").expect("backstop"),
        );
        assert_eq!(got, want);
        assert_eq!(got[0]["metadata"]["name"], "0100-rf-a");
        assert!("0100-rf-a" < "0500-amazon-eks-fargate-mutation.amazonaws.com");
    }

    #[test]
    fn the_scope_is_each_modes_union_and_each_backstop_rule_stays_in_its_policy() {
        let set = PolicySet::new(vec![
            policy("team-a", &["team-a"], Mode::Enforce).into(),
            policy("team-b", &["ci-b-*"], Mode::Enforce).into(),
            policy("team-c", &["team-c"], Mode::Audit).into(),
        ]);
        let got = desired(&set, &opts(), "runner-fence").expect("desired");
        let names: Vec<ObjectName> = got.iter().filter_map(object_name).collect();
        let mut all = all_names("runner-fence");
        all.sort();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(sorted, all, "every possible object, and only those");
        // Both configurations: one webhook for the enforcing policies' namespaces
        // (Fail), one for the auditing one's (Ignore).
        for config in &got[..2] {
            let hooks: Vec<(&str, &str, &str)> = config["webhooks"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|w| {
                    (
                        w["name"].as_str().unwrap_or(""),
                        w["failurePolicy"].as_str().unwrap_or(""),
                        w["matchConditions"][0]["expression"].as_str().unwrap_or(""),
                    )
                })
                .collect();
            let kind = if config["kind"] == "MutatingWebhookConfiguration" {
                "mutate"
            } else {
                "validate"
            };
            assert_eq!(
                hooks,
                [
                    (
                        format!("pods.{kind}.runner-fence.dev").as_str(),
                        "Fail",
                        "request.namespace in ['team-a'] || request.namespace.startsWith('ci-b-')"
                    ),
                    (
                        format!("audit.pods.{kind}.runner-fence.dev").as_str(),
                        "Ignore",
                        "request.namespace in ['team-c']"
                    ),
                ]
            );
        }
        let enforce = &got[2];
        assert_eq!(enforce["metadata"]["name"], "runner-fence-backstop");
        for v in enforce["spec"]["validations"]
            .as_array()
            .expect("validations")
        {
            let e = v["expression"].as_str().expect("expr");
            assert!(
                e.starts_with("!(request.namespace in ['team-a']) || (")
                    || e.starts_with("!(request.namespace.startsWith('ci-b-')) || ("),
                "{e}"
            );
        }
        assert_eq!(got[3]["spec"]["validationActions"], json!(["Deny"]));
        assert_eq!(got[4]["metadata"]["name"], "runner-fence-backstop-audit");
        assert_eq!(
            got[5]["spec"]["validationActions"],
            json!(["Warn", "Audit"])
        );
        assert!(
            desired(&PolicySet::default(), &opts(), "x")
                .expect("empty")
                .is_empty()
        );
    }

    #[test]
    fn server_defaults_are_not_drift_but_hand_edits_are() {
        let p = embedded().expect("reference");
        let objs = desired(&PolicySet::single(p), &opts(), "runner-fence").expect("desired");
        let want = &objs[1];
        let mut live = want.clone();
        live["metadata"]["resourceVersion"] = "7".into();
        live["webhooks"][0]["objectSelector"] = json!({});
        live["webhooks"][0]["clientConfig"]["caBundle"] = "Zm9v".into();
        assert_eq!(drift(want, &live), None);
        let mut edited = live.clone();
        edited["webhooks"][0]["objectSelector"] = json!({"matchLabels": {"a": "b"}});
        assert_eq!(
            drift(want, &edited).as_deref(),
            Some("webhooks[0].objectSelector was added")
        );
        let mut edited = live.clone();
        edited["webhooks"][0]["failurePolicy"] = "Ignore".into();
        assert_eq!(
            drift(want, &edited).as_deref(),
            Some("webhooks[0].failurePolicy was changed")
        );
        let mut edited = live;
        edited["webhooks"][0]["rules"] = json!([]);
        assert!(drift(want, &edited).is_some());
    }
}
