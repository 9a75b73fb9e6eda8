//! Policy lint: legal policies that probably do not do what their author meant.

use std::fmt;

use super::{Policy, ResourceName, Role, TolerationOperator};
use crate::engine::selector::satisfiable;
use crate::engine::tolerations::tolerates_spec;

/// One lint finding, with the field path it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LintWarning {
    /// Field path such as `placement.profiles.fargate`.
    pub path: String,
    /// What is suspicious and how to fix it.
    pub message: String,
}

impl fmt::Display for LintWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Lints a loaded policy.
pub fn lint(p: &Policy) -> Vec<LintWarning> {
    let mut out = Vec::new();
    let mut warn = |path: String, message: String| out.push(LintWarning { path, message });
    let protected = p.protected_nodes.label_requirements();

    for (name, prof) in &p.placement.profiles {
        let base = format!("placement.profiles.{name}");
        if !protected.is_empty()
            && satisfiable(protected.iter().chain(&prof.required_node_labels)).is_ok()
        {
            let sel: Vec<String> = protected.iter().map(ToString::to_string).collect();
            warn(
                format!("{base}.requiredNodeLabels"),
                format!(
                    "do not exclude protected nodes ({}): a node carrying those labels also meets this profile, so protected-nodes denies its pods; require a label that protected nodes lack (e.g. workload In [gitlab-runner]) or add a matchExpression such as `eks.amazonaws.com/compute-type DoesNotExist` to protectedNodes",
                    sel.join(", ")
                ),
            );
        }
        if prof.required_node_labels.is_empty() {
            warn(
                format!("{base}.requiredNodeLabels"),
                "is empty: pods of this profile get no node affinity".into(),
            );
        }
        for (i, t) in prof.tolerations.iter().enumerate() {
            if let Some(taint) = p
                .protected_nodes
                .taints
                .iter()
                .find(|pt| tolerates_spec(t, pt))
            {
                warn(
                    format!("{base}.tolerations[{i}]"),
                    format!(
                        "tolerates the protected taint {taint}; protected-nodes will deny every pod of this profile"
                    ),
                );
            } else if t.key.as_deref().unwrap_or("").is_empty()
                && t.operator == Some(TolerationOperator::Exists)
            {
                warn(
                    format!("{base}.tolerations[{i}]"),
                    "tolerates every taint".into(),
                );
            }
        }
        if prof.fargate && prof.pod_labels.is_empty() {
            warn(
                format!("{base}.podLabels"),
                "fargate profile sets no podLabels, so no Fargate profile selects its pods (e.g. use-fargate: \"true\")".into(),
            );
        }
        if !prof.fargate && prof.pod_labels.contains_key("use-fargate") {
            warn(
                format!("{base}.podLabels"),
                "sets use-fargate but is not `fargate: true`, so fargate-compat does not check its pods".into(),
            );
        }
        if prof.pod_labels.contains_key(&p.placement.profile_label) {
            warn(
                format!("{base}.podLabels"),
                format!(
                    "sets the profile label {}; mutation would then change the profile of the pod it patches",
                    p.placement.profile_label
                ),
            );
        }
        for role in [Role::Build, Role::Helper, Role::Service, Role::Init] {
            for res in ResourceName::ALL {
                let (Some(d), Some(max)) = (p.default_request(prof, role, res), p.max_request(res))
                else {
                    continue;
                };
                if d > max {
                    warn(
                        format!("{base}: {} default {}", role.as_str(), res.as_str()),
                        format!(
                            "{d} is above resources.max.{} {max}: every such container would be {}",
                            res.as_str(),
                            match p.resources.on_exceed {
                                super::OnExceed::Deny => "denied",
                                super::OnExceed::Clamp => "clamped",
                            }
                        ),
                    );
                }
            }
        }
    }
    if p.matching.pod_name_prefixes.is_empty() && !p.matching.exclude.labels.is_empty() {
        warn(
            "match.podNamePrefixes".into(),
            "is empty while exclude.labels is set: pods/binding requests carry no labels, so bindings of excluded pods in the runner namespaces are still checked".into(),
        );
    }
    if p.protected_nodes.taints.is_empty() {
        warn(
            "protectedNodes.taints".into(),
            "is empty: a toleration override cannot be caught; taint GitLab's nodes and list the taint".into(),
        );
    }
    out
}
