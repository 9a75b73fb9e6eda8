//! GitLab's own nodes: what makes a node protected, asked in one place by
//! the rules, the loader, lint and `audit`.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::core::selector::{ReqRef, Requirement, matches_labels, satisfiable};
use crate::core::tolerations::{TaintSpec, Tol};

/// GitLab's own nodes.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ProtectedNodes {
    /// Node names that are protected.
    #[serde(default)]
    pub names: Vec<String>,
    /// Labels every protected node carries (AND-ed with `matchExpressions`).
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
    /// Label expressions every protected node satisfies.
    #[serde(default)]
    pub match_expressions: Vec<Requirement>,
    /// Taints of protected nodes that job pods must not tolerate.
    #[serde(default)]
    pub taints: Vec<TaintSpec>,
}

/// Why a node counts as protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtectedBy {
    /// Listed in `protectedNodes.names`.
    Name,
    /// Its labels match `protectedNodes`.
    Labels,
    /// The node cache is on but does not know the node: it may be a GitLab node
    /// that has not registered yet (EKS node names are predictable), so a
    /// binding to it fails closed; the scheduler retries once the cache has it.
    Unknown,
}

impl ProtectedNodes {
    /// The label selector of protected nodes (matchLabels first), borrowed:
    /// empty when protection is by name and taint only.
    pub fn label_requirements(&self) -> impl Iterator<Item = ReqRef<'_>> + Clone {
        self.match_labels
            .iter()
            .map(|(k, v)| ReqRef::equals(k, v))
            .chain(self.match_expressions.iter().map(ReqRef::from))
    }

    /// Whether protection says anything about labels.
    pub fn has_labels(&self) -> bool {
        !self.match_labels.is_empty() || !self.match_expressions.is_empty()
    }

    /// Why the node `name` is protected, if it is: its name is listed, or
    /// its labels (when known) match.
    pub fn is_protected(
        &self,
        name: &str,
        labels: Option<&BTreeMap<String, String>>,
    ) -> Option<ProtectedBy> {
        if self.names.iter().any(|n| n == name) {
            return Some(ProtectedBy::Name);
        }
        let labels = labels?;
        (self.has_labels() && self.label_requirements().all(|r| matches_labels(labels, r)))
            .then_some(ProtectedBy::Labels)
    }

    /// Whether a node meeting all of `constraints` could carry the protected
    /// labels (a pod's placement, or a profile's `requiredNodeLabels`).
    pub fn reachable_from(&self, constraints: &[Requirement]) -> bool {
        self.has_labels()
            && satisfiable(
                constraints
                    .iter()
                    .map(ReqRef::from)
                    .chain(self.label_requirements()),
            )
            .is_ok()
    }

    /// The protected taint a toleration tolerates, if any.
    pub fn tolerated_taint(&self, toleration: &Tol<'_>) -> Option<&TaintSpec> {
        self.taints.iter().find(|t| toleration.tolerates_spec(t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::policy::embedded;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn one_test_for_names_labels_and_placement() {
        let mut pn = embedded().expect("policy").protected_nodes;
        pn.names = vec!["gitlab-0".into()];
        assert_eq!(pn.is_protected("gitlab-0", None), Some(ProtectedBy::Name));
        assert_eq!(pn.is_protected("gitlab-1", None), None);
        let gitlab = labels(&[("workload", "gitlab")]);
        assert_eq!(
            pn.is_protected("gitlab-1", Some(&gitlab)),
            Some(ProtectedBy::Labels)
        );
        let fargate = labels(&[
            ("workload", "gitlab"),
            ("eks.amazonaws.com/compute-type", "fargate"),
        ]);
        assert_eq!(pn.is_protected("f-1", Some(&fargate)), None);
        let runner = [Requirement::equals("workload", "gitlab-runner")];
        assert!(!pn.reachable_from(&runner));
        assert!(pn.reachable_from(&[Requirement::equals("zone", "a")]));
        // Without labels, nothing is reachable by labels and only names protect.
        pn.match_labels.clear();
        pn.match_expressions.clear();
        assert!(!pn.has_labels() && !pn.reachable_from(&[]));
        assert_eq!(pn.is_protected("gitlab-1", Some(&gitlab)), None);
    }
}
