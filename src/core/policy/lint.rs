//! Policy lint: legal policies that probably do not do what their author meant.

use std::fmt;

use super::{Policy, Profile, ResourceName, Role, TolerationOperator};
use crate::core::tolerations::Tol;

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
    for (name, prof) in &p.placement.profiles {
        let base = format!("placement.profiles.{name}");
        lint_placement(p, &base, prof, &mut warn);
        lint_fargate(p, &base, prof, &mut warn);
        lint_labels_and_defaults(p, &base, prof, &mut warn);
    }
    for (i, ns) in p.matching.namespaces.iter().enumerate() {
        if super::namespace_pattern_matches(ns, "runner-fence") {
            warn(
                format!("match.namespaces[{i}]"),
                format!(
                    "{ns:?} covers runner-fence, the webhook's default namespace, which the webhooks never review; `render webhooks` refuses it unless runner-fence runs elsewhere (--namespace)"
                ),
            );
        }
    }
    if !p.protected_nodes.has_labels() {
        warn(
            "protectedNodes".into(),
            "has no matchLabels or matchExpressions: profiles cannot be proven to exclude protected nodes by their labels, only names and taints keep pods off; add the label GitLab's nodes carry (e.g. workload: gitlab)".into(),
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

/// A profile's node requirements and tolerations.
fn lint_placement(p: &Policy, base: &str, prof: &Profile, warn: &mut impl FnMut(String, String)) {
    if prof.required_node_labels.is_empty() {
        warn(
            format!("{base}.requiredNodeLabels"),
            "is empty: pods of this profile get no node affinity".into(),
        );
    }
    for (i, t) in prof.tolerations.iter().enumerate() {
        if let Some(taint) = p.protected_nodes.tolerated_taint(&Tol::of_spec(t)) {
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
}

/// Fargate is chosen by EKS from namespace + labels: say when the profile and
/// the mirrored selectors disagree.
fn lint_fargate(p: &Policy, base: &str, prof: &Profile, warn: &mut impl FnMut(String, String)) {
    let namespaces: Vec<&str> = match &prof.namespaces {
        Some(list) => list.iter().map(String::as_str).collect(),
        None => p.matching.namespaces.iter().map(String::as_str).collect(),
    };
    let exact: Vec<&str> = namespaces
        .iter()
        .copied()
        .filter(|n| !n.ends_with('*'))
        .collect();
    let selected = exact
        .iter()
        .any(|ns| p.fargate_selects(ns, &prof.pod_labels));
    if prof.fargate && !exact.is_empty() && !selected {
        warn(
            format!("{base}.podLabels"),
            "no fargate.selectors entry selects this Fargate profile's pods (namespace + podLabels), so EKS would not run them on Fargate and they stay Pending; add the labels of the cluster's Fargate profile (e.g. use-fargate: \"true\")".into(),
        );
    }
    if !prof.fargate && selected {
        warn(
            format!("{base}.podLabels"),
            "its podLabels are selected by fargate.selectors, so EKS sends its pods to Fargate, but its requiredNodeLabels are not Fargate's; set `fargate: true` and require eks.amazonaws.com/compute-type In [fargate]".into(),
        );
    }
}

/// Labels that would change the profile, and defaults above the maximum.
fn lint_labels_and_defaults(
    p: &Policy,
    base: &str,
    prof: &Profile,
    warn: &mut impl FnMut(String, String),
) {
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
