//! Where runner-fence itself may run: never on a node a job pod may reach.
//!
//! A job pod can only land on nodes matching one of the profiles'
//! `requiredNodeLabels` (the loader proves each excludes GitLab's nodes, and
//! the engine makes every job pod carry one). A webhook sharing such a node
//! with arbitrary CI code could be attacked from it, so the webhook's node
//! affinity is the negation of every profile, plus "not Fargate" and Linux.

use k8s_openapi::api::core::v1::{
    NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm,
};

use crate::core::policy::{Operator, Policy, Requirement};
use crate::core::selector;

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

/// A nodeSelectorRequirement (no `values` for Exists/DoesNotExist).
fn typed(r: Requirement) -> NodeSelectorRequirement {
    NodeSelectorRequirement {
        key: r.key,
        operator: r.operator.as_str().to_string(),
        values: (!r.values.is_empty()).then_some(r.values),
    }
}

fn requirement(key: &str, operator: Operator, values: Vec<String>) -> Requirement {
    Requirement {
        key: key.to_string(),
        operator,
        values,
    }
}

/// Requirements each of which alone excludes every node `r` matches: the
/// exact negation where one exists, else (Gt/Lt) a subset of "not r".
fn negations(r: &Requirement) -> Vec<Requirement> {
    if let Some(n) = selector::negate(r.into()) {
        return vec![requirement(n.key, n.operator, n.values.to_vec())];
    }
    // Not greater than n: absent, or less than n + 1 (and the mirror for Lt).
    let (bound, delta) = match r.operator {
        Operator::Gt => (Operator::Lt, 1),
        _ => (Operator::Gt, -1),
    };
    let shifted = r
        .values
        .first()
        .and_then(|v| v.parse::<i64>().ok())
        .and_then(|n| n.checked_add(delta));
    std::iter::once(requirement(&r.key, Operator::DoesNotExist, vec![]))
        .chain(shifted.map(|n| requirement(&r.key, bound, vec![n.to_string()])))
        .collect()
}

/// The webhook Deployment's `nodeAffinity`: required terms no profile's nodes match.
pub fn webhook_node_affinity(policy: &Policy) -> Result<NodeAffinity, PlacementError> {
    let mut terms: Vec<Vec<Requirement>> = vec![Vec::new()];
    for profile in policy.placement.profiles.values() {
        // A node escapes this profile when it fails any one of its requirements.
        let escapes: Vec<Requirement> = profile
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
            .filter(|t| selector::satisfiable(t).is_ok())
            .collect();
        if terms.len() > MAX_TERMS {
            return Err(PlacementError::TooManyTerms(terms.len()));
        }
    }
    let base = [
        requirement(
            "eks.amazonaws.com/compute-type",
            Operator::NotIn,
            vec!["fargate".to_string()],
        ),
        requirement("kubernetes.io/os", Operator::In, vec!["linux".to_string()]),
    ];
    let terms: Vec<NodeSelectorTerm> = terms
        .into_iter()
        .map(|mut t| {
            for b in &base {
                if !t.contains(b) {
                    t.push(b.clone());
                }
            }
            t
        })
        .filter(|t| selector::satisfiable(t).is_ok())
        .map(|t| NodeSelectorTerm {
            match_expressions: Some(t.into_iter().map(typed).collect()),
            match_fields: None,
        })
        .collect();
    Ok(NodeAffinity {
        required_during_scheduling_ignored_during_execution: Some(NodeSelector {
            node_selector_terms: terms,
        }),
        preferred_during_scheduling_ignored_during_execution: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    /// The affinity as the Deployment carries it.
    fn affinity(p: &Policy) -> Value {
        serde_json::to_value(webhook_node_affinity(p).unwrap_or_default()).unwrap_or_default()
    }

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
        let a = affinity(&p);
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
        let a = affinity(&p);
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
        // The escape `compute-type In [fargate]` contradicts "not Fargate": only
        // the other way out of the profile is left.
        let p = policy_with(
            "  profiles:\n    runner-nodes:\n      requiredNodeLabels:\n        - {key: workload, operator: In, values: [gitlab-runner]}\n        - {key: eks.amazonaws.com/compute-type, operator: NotIn, values: [fargate]}\n      tolerations:\n        - {key: workload, operator: Equal, value: gitlab-runner, effect: NoSchedule}\n",
        );
        let a = affinity(&p);
        assert_eq!(
            a["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"],
            json!([{"matchExpressions": [
                {"key": "workload", "operator": "NotIn", "values": ["gitlab-runner"]},
                {"key": "eks.amazonaws.com/compute-type", "operator": "NotIn", "values": ["fargate"]},
                {"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]},
            ]}])
        );
    }
}
