//! Is the in-tree backstop installed as `render admission-policy` generates it
//! for this policy? Both names it may write (`runner-fence-backstop`, and
//! `runner-fence-backstop-audit` when some rules audit while others enforce),
//! their bindings' actions and their validations, compared as data.

use serde::Serialize;
use serde_json::Value;

use super::ExpectedBackstop;
use crate::core::policy::{Mode, Policy};
use crate::core::render::admission_policy::{self, AUDIT_NAME, NAME};
use crate::core::render::cluster;

/// A ValidatingAdmissionPolicy and its binding as read from the cluster.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LiveBackstop {
    /// The name both share.
    pub name: String,
    /// The policy's `spec`, if it exists.
    pub policy: Option<Value>,
    /// The binding's `spec`, if it exists.
    pub binding: Option<Value>,
}

/// One backstop object pair found in the cluster.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BackstopObject {
    /// Name of the policy (and of its binding).
    pub name: String,
    /// Whether the ValidatingAdmissionPolicy exists.
    pub policy: bool,
    /// The binding's `validationActions`; `None` without a binding.
    pub actions: Option<Vec<String>>,
}

/// The backstop as found, and what differs from what the policy generates.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Backstop {
    /// The backstop objects in the cluster.
    pub found: Vec<BackstopObject>,
    /// What is not as `render admission-policy` generates it; each with the fix.
    pub issues: Vec<String>,
}

impl Backstop {
    /// The enforcing backstop (`runner-fence-backstop`, or `<release>-backstop`) is
    /// installed with a binding that denies: what makes a fail-open webhook safe while
    /// the policy enforces. Only the two expected names are ever read.
    pub fn denies(&self) -> bool {
        self.found.iter().any(|o| {
            !o.name.ends_with("-audit")
                && o.policy
                && o.actions.iter().flatten().any(|a| a == "Deny")
        })
    }

    /// How the table shows it: `runner-fence-backstop (Deny)`, or `not installed`.
    pub fn summary(&self) -> String {
        if self.found.is_empty() {
            return "not installed".into();
        }
        self.found
            .iter()
            .map(|o| {
                let how = match (&o.actions, o.policy) {
                    (Some(a), true) => a.join(", "),
                    (Some(_), false) => "binding without its policy".into(),
                    (None, _) => "policy without a binding".into(),
                };
                format!("{} ({how})", o.name)
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The backstop's two names: the controller's `<release>-backstop[-audit]`, or
/// `render admission-policy`'s for a policy alone. Only these are read and judged.
pub(super) fn names(expected: Option<&ExpectedBackstop>) -> [String; 2] {
    match expected {
        Some(e) => [
            cluster::backstop_name(&e.release, Mode::Enforce),
            cluster::backstop_name(&e.release, Mode::Audit),
        ],
        None => [NAME.to_string(), AUDIT_NAME.to_string()],
    }
}

fn actions(binding: &Value) -> Vec<String> {
    binding["validationActions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a.as_str().map(String::from))
        .collect()
}

/// What decides what a backstop policy does and says.
fn behaviour(spec: &Value) -> (Value, Value) {
    let clean = |v: &Value| match v {
        Value::Null => Value::Array(Vec::new()),
        v => v.clone(),
    };
    (clean(&spec["validations"]), clean(&spec["variables"]))
}

/// Compares the live backstop with what `render admission-policy` generates
/// for `policy` (with the webhook in `own_namespace`).
pub fn assess(
    policy: &Policy,
    own_namespace: &str,
    live: &[LiveBackstop],
    expected: Option<&ExpectedBackstop>,
) -> Backstop {
    let mut out = Backstop {
        found: live
            .iter()
            .filter(|l| l.policy.is_some() || l.binding.is_some())
            .map(|l| BackstopObject {
                name: l.name.clone(),
                policy: l.policy.is_some(),
                actions: l.binding.as_ref().map(actions),
            })
            .collect(),
        issues: Vec::new(),
    };
    if out.found.is_empty() {
        // Not installed at all: a choice (the webhooks' failure policy decides
        // whether it is a safe one, see the coverage gaps).
        return out;
    }
    let generated = match expected {
        Some(e) => {
            let served: Vec<&Policy> = e.served.iter().collect();
            cluster::backstop(&served, own_namespace, &e.release).unwrap_or_default()
        }
        None => admission_policy::objects(policy, own_namespace).unwrap_or_default(),
    };
    let names = names(expected);
    let want = |kind: &str, name: &str| {
        generated
            .iter()
            .find(|o| o.kind() == kind && o.name() == name)
            .map(|o| o.to_value()["spec"].clone())
    };
    let regenerate = "regenerate it with `runner-fence render admission-policy` (the policy controller applies it when installed with the chart) and apply it";
    for name in &names {
        let name = name.as_str();
        let live = live.iter().find(|l| l.name == name);
        let (have_policy, have_binding) = (
            live.and_then(|l| l.policy.as_ref()),
            live.and_then(|l| l.binding.as_ref()),
        );
        let (want_policy, want_binding) = (
            want("ValidatingAdmissionPolicy", name),
            want("ValidatingAdmissionPolicyBinding", name),
        );
        match (
            want_policy.is_some(),
            have_policy.is_some() || have_binding.is_some(),
        ) {
            (false, false) => continue,
            (false, true) => {
                out.issues.push(format!(
                    "{name} is not generated for this policy (mode {}): delete it: kubectl delete validatingadmissionpolicy,validatingadmissionpolicybinding {name}",
                    policy.mode
                ));
                continue;
            }
            (true, false) => {
                out.issues.push(format!(
                    "{name} is missing although other backstop objects are installed: apply the whole output of `runner-fence render admission-policy`"
                ));
                continue;
            }
            (true, true) => {}
        }
        let (Some(have), Some(want)) = (have_policy, want_policy) else {
            out.issues.push(format!(
                "{name}: the ValidatingAdmissionPolicy is missing, its binding enforces nothing; {regenerate}"
            ));
            continue;
        };
        if behaviour(have) != behaviour(&want) {
            out.issues.push(format!(
                "{name}: its validations differ from what this version generates for this policy (another version of runner-fence, another policy, or edited by hand); {regenerate}"
            ));
        }
        let want_actions = want_binding.as_ref().map(actions).unwrap_or_default();
        match have_binding {
            None => out.issues.push(format!(
                "{name}: the policy has no binding, so the apiserver never evaluates it; {regenerate}"
            )),
            Some(b) => {
                let have_actions = actions(b);
                if b["policyName"] != name {
                    out.issues.push(format!(
                        "{name}: its binding names policy {}, not {name}; {regenerate}",
                        b["policyName"]
                    ));
                }
                if have_actions != want_actions {
                    let why = if want_actions.iter().any(|a| a == "Deny") {
                        "so it does not hold the fence while runner-fence is down"
                    } else {
                        "so it rejects pods that audit mode only reports"
                    };
                    out.issues.push(format!(
                        "{name} is bound {} but this policy (mode {}) binds it {}, {why}; {regenerate}",
                        have_actions.join(", "),
                        policy.mode,
                        want_actions.join(", ")
                    ));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::policy::{EMBEDDED_POLICY, embedded, parse};

    /// The backstop exactly as generated for `p`.
    fn generated(p: &Policy) -> Vec<LiveBackstop> {
        let objs: Vec<Value> = admission_policy::objects(p, "runner-fence")
            .expect("render")
            .iter()
            .map(crate::core::render::Object::to_value)
            .collect();
        [NAME, AUDIT_NAME]
            .into_iter()
            .map(|name| {
                let spec = |kind: &str| {
                    objs.iter()
                        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
                        .map(|o| o["spec"].clone())
                };
                LiveBackstop {
                    name: name.into(),
                    policy: spec("ValidatingAdmissionPolicy"),
                    binding: spec("ValidatingAdmissionPolicyBinding"),
                }
            })
            .collect()
    }

    fn mode(text: &str) -> Policy {
        parse(text, "p.yaml").expect("policy")
    }

    #[test]
    fn every_generated_setting_is_recognised() {
        let enforce = embedded().expect("policy");
        let audit = mode(&EMBEDDED_POLICY.replacen("mode: enforce", "mode: audit", 1));
        let mixed = mode(&EMBEDDED_POLICY.replacen(
            "  resources: audit\n",
            "  resources: audit\n  protected-nodes: audit\n  node-name: audit\n",
            1,
        ));
        for (p, want, denies) in [
            (&enforce, "runner-fence-backstop (Deny)", true),
            (&audit, "runner-fence-backstop-audit (Warn, Audit)", false),
            (
                &mixed,
                "runner-fence-backstop (Deny), runner-fence-backstop-audit (Warn, Audit)",
                true,
            ),
        ] {
            let b = assess(p, "runner-fence", &generated(p), None);
            assert_eq!(b.issues, Vec::<String>::new(), "{want}");
            assert_eq!(b.summary(), want);
            assert_eq!(b.denies(), denies, "{want}");
        }
        assert_eq!(
            assess(&enforce, "runner-fence", &[], None).summary(),
            "not installed"
        );
    }

    #[test]
    fn settings_of_another_mode_or_version_are_issues_with_the_fix() {
        let enforce = embedded().expect("policy");
        let audit = mode(&EMBEDDED_POLICY.replacen("mode: enforce", "mode: audit", 1));
        // The enforce backstop left in place after switching the policy to audit.
        let b = assess(&audit, "runner-fence", &generated(&enforce), None);
        assert_eq!(b.issues.len(), 2, "{:?}", b.issues);
        assert!(
            b.issues[0].starts_with(
                "runner-fence-backstop is not generated for this policy (mode audit): delete it"
            ),
            "{:?}",
            b.issues
        );
        assert!(
            b.issues[1].starts_with("runner-fence-backstop-audit is missing although other backstop objects are installed"),
            "{:?}",
            b.issues
        );
        // The audit overlay's old way: the enforce validations bound Warn, Audit,
        // while the policy enforces: it holds nothing.
        let mut warn_only = generated(&enforce);
        warn_only[0].binding =
            Some(serde_json::json!({"policyName": NAME, "validationActions": ["Warn", "Audit"]}));
        let b = assess(&enforce, "runner-fence", &warn_only, None);
        assert!(!b.denies());
        assert_eq!(b.issues.len(), 1, "{:?}", b.issues);
        assert!(b.issues[0].contains("so it does not hold the fence while runner-fence is down"));
        // A second policy from an earlier mixed setup.
        let mixed = mode(&EMBEDDED_POLICY.replacen(
            "  resources: audit\n",
            "  resources: audit\n  protected-nodes: audit\n  node-name: audit\n",
            1,
        ));
        let b = assess(&enforce, "runner-fence", &generated(&mixed), None);
        assert!(
            b.issues.iter().any(|i| i.starts_with(
                "runner-fence-backstop-audit is not generated for this policy (mode enforce): delete it"
            )),
            "{:?}",
            b.issues
        );
        // A binding without its policy.
        let mut half = generated(&enforce);
        half[0].policy = None;
        let b = assess(&enforce, "runner-fence", &half, None);
        assert!(!b.denies());
        assert_eq!(
            b.summary(),
            "runner-fence-backstop (binding without its policy)"
        );
        assert_eq!(b.issues.len(), 1, "{:?}", b.issues);
    }

    /// What a controller of `release` applies for `served`, as read back.
    fn applied(served: &[&Policy], release: &str) -> Vec<LiveBackstop> {
        let objs: Vec<Value> = cluster::backstop(served, "runner-fence", release)
            .expect("render")
            .iter()
            .map(crate::core::render::Object::to_value)
            .collect();
        [Mode::Enforce, Mode::Audit]
            .into_iter()
            .map(|m| {
                let name = cluster::backstop_name(release, m);
                let spec = |kind: &str| {
                    objs.iter()
                        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name.as_str())
                        .map(|o| o["spec"].clone())
                };
                LiveBackstop {
                    policy: spec("ValidatingAdmissionPolicy"),
                    binding: spec("ValidatingAdmissionPolicyBinding"),
                    name,
                }
            })
            .collect()
    }

    #[test]
    fn the_controllers_backstop_for_several_policies_under_any_release_is_recognised() {
        let team_a = embedded().expect("policy");
        let team_b = mode(
            &EMBEDDED_POLICY
                .replacen("name: gitlab-runner-jobs", "name: team-b", 1)
                .replacen("namespaces: [gitlab-runner]", "namespaces: [ci-team-b]", 1)
                .replacen(
                    "      - namespace: gitlab-runner\n",
                    "      - namespace: ci-team-b\n",
                    1,
                ),
        );
        let served = crate::core::fleet::PolicySet::new(vec![
            std::sync::Arc::new(team_a.clone()),
            std::sync::Arc::new(team_b.clone()),
        ]);
        let live = applied(&[&team_a, &team_b], "fence-prod");
        let expected = ExpectedBackstop {
            release: "fence-prod".into(),
            served: std::sync::Arc::new(served),
        };
        for p in [&team_a, &team_b] {
            let b = assess(p, "runner-fence", &live, Some(&expected));
            assert!(b.denies(), "{b:?}");
            assert_eq!(b.issues, Vec::<String>::new(), "{}", p.metadata.name);
            assert_eq!(b.summary(), "fence-prod-backstop (Deny)");
        }
        // Compared with one policy's own backstop, the shared one looks stale: the
        // false finding the expectation avoids.
        let alone = assess(&team_a, "runner-fence", &live, None);
        assert!(!alone.issues.is_empty() || !alone.denies(), "{alone:?}");
        // And a hand-edited shared backstop is still found out.
        let mut edited = live.clone();
        if let Some(spec) = edited[0].policy.as_mut() {
            spec["validations"] = serde_json::json!([]);
        }
        let b = assess(&team_a, "runner-fence", &edited, Some(&expected));
        assert!(
            b.issues.iter().any(|i| i.contains("validations differ")),
            "{:?}",
            b.issues
        );
    }
}
