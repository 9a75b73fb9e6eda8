//! The engine's verdict on one request, as data: the wording (messages,
//! warnings, annotations) is rendered from it at the edge.

use std::collections::BTreeMap;

use json_patch::PatchOperation;

use super::error::ReviewError;
use super::mutate::Mutation;
use super::validate::Violation;
use crate::core::policy::{Mode, Policy, RuleId};
use crate::core::report::Report;

/// What the engine decided about one request.
#[derive(Clone, Debug)]
pub enum Decision {
    /// Not a job pod (or not an operation this endpoint acts on): allowed, untouched.
    Skip,
    /// A job pod (or its binding), allowed as it is.
    Allow(Findings),
    /// A job pod, allowed with a patch (enforce mode).
    Patch(Findings, Mutation),
    /// Denied by these (enforced) violations.
    Deny(Findings, Vec<Violation>),
    /// Denied: the request could not be reviewed.
    Invalid(ReviewError),
}

/// What a review of a job pod found besides the verdict; the audit findings
/// are returned as warnings.
#[derive(Clone, Debug, Default)]
pub struct Findings {
    /// The profile used, when one was resolved.
    pub profile: Option<String>,
    /// Violations of rules in audit mode: reported, not enforced.
    pub audited: Vec<Violation>,
    /// Changes audit mode would have made, one line each.
    pub would_patch: Vec<String>,
}

/// The verdict alone, for metrics and logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Not a job pod (or not an operation this endpoint acts on).
    Skipped,
    /// A job pod, allowed unchanged.
    Allowed,
    /// A job pod, allowed with a patch.
    Patched,
    /// Denied.
    Denied,
}

impl Outcome {
    /// For metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Skipped => "skipped",
            Outcome::Allowed => "allowed",
            Outcome::Patched => "patched",
            Outcome::Denied => "denied",
        }
    }
}

impl Decision {
    /// The verdict of `violations` under the policy's (per-rule) modes: denied
    /// by the enforced ones, the audited ones reported.
    pub(crate) fn judge(
        policy: &Policy,
        mut findings: Findings,
        violations: Vec<Violation>,
    ) -> Self {
        let mut denials = Vec::new();
        for v in violations {
            match policy.rule_mode(v.rule) {
                Mode::Enforce => denials.push(v),
                Mode::Audit => findings.audited.push(v),
            }
        }
        if denials.is_empty() {
            Decision::Allow(findings)
        } else {
            Decision::Deny(findings, denials)
        }
    }

    /// The verdict alone.
    pub fn outcome(&self) -> Outcome {
        match self {
            Decision::Skip => Outcome::Skipped,
            Decision::Allow(_) => Outcome::Allowed,
            Decision::Patch(..) => Outcome::Patched,
            Decision::Deny(..) | Decision::Invalid(_) => Outcome::Denied,
        }
    }

    /// Whether the request is allowed.
    pub fn allowed(&self) -> bool {
        self.outcome() != Outcome::Denied
    }

    /// Whether the request was a job pod (or its binding) the rules looked at.
    pub fn matched(&self) -> bool {
        self.findings().is_some()
    }

    /// What the review found, for a job pod.
    pub fn findings(&self) -> Option<&Findings> {
        match self {
            Decision::Allow(f) | Decision::Patch(f, _) | Decision::Deny(f, _) => Some(f),
            Decision::Skip | Decision::Invalid(_) => None,
        }
    }

    /// The profile used, when one was resolved.
    pub fn profile(&self) -> Option<&str> {
        self.findings().and_then(|f| f.profile.as_deref())
    }

    /// Enforced violations (non-empty iff denied by a rule).
    pub fn denials(&self) -> &[Violation] {
        match self {
            Decision::Deny(_, v) => v,
            _ => &[],
        }
    }

    /// Violations of rules in audit mode.
    pub fn audited(&self) -> &[Violation] {
        self.findings().map_or(&[], |f| &f.audited)
    }

    /// The patch to send (enforce mode only).
    pub fn patch(&self) -> &[PatchOperation] {
        match self {
            Decision::Patch(_, m) => &m.ops,
            _ => &[],
        }
    }

    /// What the patch changes, one line each.
    pub fn changes(&self) -> &[String] {
        match self {
            Decision::Patch(_, m) => &m.changes,
            _ => &[],
        }
    }

    /// Changes audit mode would have made.
    pub fn would_patch(&self) -> &[String] {
        self.findings().map_or(&[], |f| &f.would_patch)
    }

    /// Why the request could not be reviewed, if it could not.
    pub fn error(&self) -> Option<&ReviewError> {
        match self {
            Decision::Invalid(e) => Some(e),
            _ => None,
        }
    }

    /// The denial message shown to the user (`kubectl`, the job log).
    pub fn message(&self) -> Option<String> {
        if let Some(e) = self.error() {
            return Some(format!("runner-fence: {}", Report(e)));
        }
        let denials = self.denials();
        if denials.is_empty() {
            return None;
        }
        let msgs: Vec<String> = denials.iter().map(ToString::to_string).collect();
        Some(format!(
            "runner-fence denied the job pod: {}",
            msgs.join("; ")
        ))
    }

    /// The rule ids of enforced denials.
    pub fn denied_rules(&self) -> Vec<RuleId> {
        let mut r: Vec<RuleId> = self.denials().iter().map(|v| v.rule).collect();
        r.dedup();
        r
    }

    /// Warnings returned to the client: what audit mode would have done.
    pub fn warnings(&self) -> Vec<String> {
        let mut w: Vec<String> = self
            .audited()
            .iter()
            .map(|v| format!("runner-fence audit: would deny: {v}"))
            .collect();
        let would_patch = self.would_patch();
        if !would_patch.is_empty() {
            w.push(format!(
                "runner-fence audit: would patch: {}",
                would_patch.join("; ")
            ));
        }
        w
    }

    /// What enforce mode would deny, when rules in audit mode found something:
    /// the `would-deny` audit annotation and the review log line's `would_deny`.
    pub fn would_deny(&self) -> Option<String> {
        let audited = self.audited();
        (!audited.is_empty()).then(|| {
            let msgs: Vec<String> = audited.iter().map(ToString::to_string).collect();
            msgs.join("; ")
        })
    }

    /// Audit annotations (the apiserver prefixes keys with the webhook name).
    pub fn audit_annotations(&self) -> BTreeMap<String, String> {
        let mut a = BTreeMap::new();
        if let Some(would_deny) = self.would_deny() {
            a.insert("would-deny".to_string(), would_deny);
        }
        let would_patch = self.would_patch();
        if !would_patch.is_empty() {
            a.insert("would-patch".to_string(), would_patch.join("; "));
        }
        if let Some(p) = self.profile() {
            a.insert("profile".to_string(), p.to_string());
        }
        a
    }
}
