//! Where runner-fence itself may run: never on a node a job pod may reach.
//!
//! A job pod can only land on nodes matching one of the profiles'
//! `requiredNodeLabels` (the loader proves each excludes GitLab's nodes, and
//! the engine makes every job pod carry one). A webhook sharing such a node
//! with arbitrary CI code could be attacked from it, so the webhook's node
//! affinity is the negation of every profile, plus "not Fargate" and Linux.

use serde_json::{Value, json};

use crate::core::policy::{Operator, Policy, Requirement};

/// More terms than this is a policy whose negation the scheduler would
/// evaluate slowly and nobody could read; write `affinity` by hand instead.
const MAX_TERMS: usize = 16;

/// Why no affinity can be derived.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    /// The negation needs too many nodeSelectorTerms.
    #[error(
        "keeping runner-fence off every profile's nodes needs {0} nodeSelectorTerms (more than {MAX_TERMS}); set the chart's affinity.nodeAffinity by hand"
    )]
    TooManyTerms(usize),
}

/// A nodeSelectorRequirement as JSON.
fn req(key: &str, operator: &str, values: &[String]) -> Value {
    if values.is_empty() {
        json!({"key": key, "operator": operator})
    } else {
        json!({"key": key, "operator": operator, "values": values})
    }
}

/// Requirements each of which alone excludes every node `r` matches (a subset
/// of "not r" where the exact negation cannot be written, as for Gt/Lt).
fn negations(r: &Requirement) -> Vec<Value> {
    let int = |d: i64| {
        r.values
            .first()
            .and_then(|v| v.parse::<i64>().ok())
            .and_then(|n| n.checked_add(d))
            .map(|n| vec![n.to_string()])
    };
    match r.operator {
        Operator::In => vec![req(&r.key, "NotIn", &r.values)],
        Operator::NotIn => vec![req(&r.key, "In", &r.values)],
        Operator::Exists => vec![req(&r.key, "DoesNotExist", &[])],
        Operator::DoesNotExist => vec![req(&r.key, "Exists", &[])],
        // Not greater than n: absent, or less than n + 1.
        Operator::Gt => std::iter::once(req(&r.key, "DoesNotExist", &[]))
            .chain(int(1).map(|v| req(&r.key, "Lt", &v)))
            .collect(),
        Operator::Lt => std::iter::once(req(&r.key, "DoesNotExist", &[]))
            .chain(int(-1).map(|v| req(&r.key, "Gt", &v)))
            .collect(),
    }
}

/// True when a term cannot match any node (`k In [a]` with `k NotIn [a]`, ...).
fn contradicts(term: &[Value]) -> bool {
    term.iter().any(|a| {
        term.iter().any(|b| {
            a["key"] == b["key"]
                && match (a["operator"].as_str(), b["operator"].as_str()) {
                    (Some("Exists"), Some("DoesNotExist")) => true,
                    (Some("In"), Some("DoesNotExist")) => true,
                    (Some("In"), Some("NotIn")) => a["values"].as_array().is_some_and(|vs| {
                        vs.iter()
                            .all(|v| b["values"].as_array().is_some_and(|n| n.contains(v)))
                    }),
                    _ => false,
                }
        })
    })
}

/// The webhook Deployment's `nodeAffinity`: required terms no profile's nodes match.
pub fn webhook_node_affinity(policy: &Policy) -> Result<Value, PlacementError> {
    let mut terms: Vec<Vec<Value>> = vec![Vec::new()];
    for profile in policy.placement.profiles.values() {
        // A node escapes this profile when it fails any one of its requirements.
        let escapes: Vec<Value> = profile
            .required_node_labels
            .iter()
            .flat_map(negations)
            .collect();
        terms = terms
            .iter()
            .flat_map(|t| {
                escapes.iter().map(move |e| {
                    let mut t = t.clone();
                    if !t.contains(e) {
                        t.push(e.clone());
                    }
                    t
                })
            })
            .filter(|t| !contradicts(t))
            .collect();
        if terms.len() > MAX_TERMS {
            return Err(PlacementError::TooManyTerms(terms.len()));
        }
    }
    let base = [
        req(
            "eks.amazonaws.com/compute-type",
            "NotIn",
            &["fargate".to_string()],
        ),
        req("kubernetes.io/os", "In", &["linux".to_string()]),
    ];
    let terms: Vec<Value> = terms
        .into_iter()
        .map(|mut t| {
            for b in &base {
                if !t.contains(b) {
                    t.push(b.clone());
                }
            }
            json!({"matchExpressions": t})
        })
        .filter(|t| {
            t["matchExpressions"]
                .as_array()
                .is_some_and(|e| !contradicts(e))
        })
        .collect();
    Ok(json!({"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy_with(profiles: &str) -> Policy {
        let text = crate::core::policy::EMBEDDED_POLICY.to_string();
        let start = text.find("  profiles:").unwrap_or(0);
        let end = text[start..]
            .find("\nresources:")
            .map(|e| start + e)
            .unwrap_or(text.len());
        let src = format!("{}{}{}", &text[..start], profiles, &text[end..]);
        crate::core::policy::parse(&src, "test").unwrap_or_else(|e| panic!("{e}\n{src}"))
    }

    #[test]
    fn the_reference_policy_keeps_the_webhook_off_runner_nodes_and_fargate() {
        let p = crate::core::policy::embedded().unwrap_or_else(|e| panic!("{e}"));
        let a = webhook_node_affinity(&p).unwrap_or_default();
        assert_eq!(
            a["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"],
            json!([{"matchExpressions": [
                {"key": "eks.amazonaws.com/compute-type", "operator": "NotIn", "values": ["fargate"]},
                {"key": "workload", "operator": "NotIn", "values": ["gitlab-runner"]},
                {"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]},
            ]}])
        );
    }

    #[test]
    fn a_profile_with_two_requirements_gives_one_term_per_way_out() {
        let p = policy_with(
            "  profiles:\n    runner-nodes:\n      requiredNodeLabels:\n        - {key: workload, operator: In, values: [gitlab-runner]}\n        - {key: size, operator: Gt, values: [\"4\"]}\n      tolerations:\n        - {key: workload, operator: Equal, value: gitlab-runner, effect: NoSchedule}\n",
        );
        let a = webhook_node_affinity(&p).unwrap_or_default();
        let terms = &a["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"];
        let firsts: Vec<&Value> = terms
            .as_array()
            .map(|t| t.iter().map(|t| &t["matchExpressions"][0]).collect())
            .unwrap_or_default();
        assert_eq!(
            firsts,
            [
                &json!({"key": "workload", "operator": "NotIn", "values": ["gitlab-runner"]}),
                &json!({"key": "size", "operator": "DoesNotExist"}),
                &json!({"key": "size", "operator": "Lt", "values": ["5"]}),
            ]
        );
    }

    #[test]
    fn terms_that_cannot_match_are_dropped() {
        assert!(contradicts(&[
            req("k", "In", &["a".into()]),
            req("k", "NotIn", &["a".into(), "b".into()]),
        ]));
        assert!(!contradicts(&[
            req("k", "In", &["a".into(), "c".into()]),
            req("k", "NotIn", &["a".into()]),
        ]));
        assert!(contradicts(&[
            req("k", "Exists", &[]),
            req("k", "DoesNotExist", &[]),
        ]));
    }
}
