//! What `check runner-config` finds, as data; the wording is produced only
//! when it is shown ([`Finding::message`], [`Finding::fix`]).

use std::fmt;

use serde::{Serialize, Serializer};

use super::Location;
use super::namespaces::Reach;
use crate::core::engine::{Cause as ViolationCause, FargateIssue, Violation};
use crate::core::policy::{Requirement, RuleId};
use crate::core::quantity::Quantity;

/// A `[[runners]]` entry.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct RunnerRef {
    /// 0-based position in the file.
    pub index: usize,
    /// Its `name`, when it has one.
    pub name: Option<String>,
}

impl fmt::Display for RunnerRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(n) => write!(f, "runner {n:?}"),
            None => write!(f, "runner #{}", self.index + 1),
        }
    }
}

/// How bad a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Jobs leave the fence, or fight it (denied every time, Pending forever).
    Error,
    /// Jobs can try something the webhooks deny at once, or get what the
    /// policy did not intend (another profile's requests).
    Warning,
}

/// Rule-like finding ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FindingId {
    /// `namespace` is not fenced.
    NamespaceNotCovered,
    /// `namespace_per_job` namespaces are not fenced.
    NamespacePerJobNotCovered,
    /// `namespace_overwrite_allowed` reaches unfenced namespaces.
    NamespaceOverwriteNotCovered,
    /// `namespace` is a Helm template this check cannot resolve.
    NamespaceUnresolved,
    /// `node_selector_overwrite_allowed` is set.
    NodeSelectorOverwrite,
    /// `node_tolerations_overwrite_allowed` is set.
    NodeTolerationsOverwrite,
    /// `service_account_overwrite_allowed` is set.
    ServiceAccountOverwrite,
    /// A `pod_spec` patch (outside placement, or not readable here).
    PodSpecPatch,
    /// A `pod_spec` patch that changes placement fields.
    PodSpecPlacement,
    /// The webhooks deny the runner's jobs (by this rule).
    Denied(RuleId),
    /// Jobs are admitted but no node can run them.
    Unschedulable,
    /// A request setting replaces a profile's default.
    RequestOverridesProfile,
    /// A `*_overwrite_max_allowed` above the policy's `resources.max`.
    OverwriteMaxAboveMax,
}

impl fmt::Display for FindingId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            FindingId::NamespaceNotCovered => "namespace-not-covered",
            FindingId::NamespacePerJobNotCovered => "namespace-per-job-not-covered",
            FindingId::NamespaceOverwriteNotCovered => "namespace-overwrite-not-covered",
            FindingId::NamespaceUnresolved => "namespace-unresolved",
            FindingId::NodeSelectorOverwrite => "node-selector-overwrite",
            FindingId::NodeTolerationsOverwrite => "node-tolerations-overwrite",
            FindingId::ServiceAccountOverwrite => "service-account-overwrite",
            FindingId::PodSpecPatch => "pod-spec-patch",
            FindingId::PodSpecPlacement => "pod-spec-placement",
            FindingId::Denied(rule) => return write!(f, "denied-{rule}"),
            FindingId::Unschedulable => "unschedulable",
            FindingId::RequestOverridesProfile => "request-overrides-profile",
            FindingId::OverwriteMaxAboveMax => "overwrite-max-above-policy",
        };
        f.write_str(s)
    }
}

impl Serialize for FindingId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Which job a finding is about.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Job {
    /// Every job of the runner (its own profile).
    Every(String),
    /// A job that chooses this profile (profile label or selector labels).
    Choosing(String),
}

impl Job {
    /// The profile.
    pub fn profile(&self) -> &str {
        match self {
            Job::Every(p) | Job::Choosing(p) => p,
        }
    }
}

impl fmt::Display for Job {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Job::Every(p) => write!(f, "every job (profile {p})"),
            Job::Choosing(p) => write!(f, "a job choosing profile {p}"),
        }
    }
}

/// What is wrong, as data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// Jobs run in `namespace`, outside the policy.
    NamespaceNotCovered {
        /// The namespace jobs run in.
        namespace: String,
        /// Whether it is GitLab Runner's default for an empty `namespace`.
        defaulted: bool,
        /// `match.namespaces`.
        scope: Vec<String>,
    },
    /// `ci-job-<id>` is outside the policy.
    NamespacePerJobNotCovered {
        /// `match.namespaces`.
        scope: Vec<String>,
    },
    /// `namespace_overwrite_allowed` accepts unfenced namespaces.
    NamespaceOverwrite {
        /// The regex.
        regex: String,
        /// How far it reaches.
        reach: Reach,
        /// A regex that accepts exactly the policy's namespaces.
        suggestion: String,
    },
    /// A Helm template in `namespace`.
    NamespaceUnresolved {
        /// The template.
        template: String,
        /// The namespace the check assumed.
        assumed: String,
    },
    /// An `*_overwrite_allowed` regex that lets jobs try what the webhooks deny.
    OverwriteAllowed {
        /// The regex.
        regex: String,
        /// GitLab's protected taints, for the message (tolerations only).
        taints: Vec<String>,
    },
    /// A `pod_spec` patch and the pod fields it changes.
    PodSpec {
        /// Its `name`.
        name: String,
        /// `strategic`, `merge` or `json`.
        patch_type: String,
        /// Top-level pod spec fields it changes (placement ones for `PodSpecPlacement`).
        fields: Vec<String>,
    },
    /// A `pod_spec` patch read from a file on the runner host.
    PodSpecFile {
        /// Its `name`.
        name: String,
        /// `patch_path`.
        path: String,
    },
    /// A `pod_spec` patch that is not YAML or JSON of the right shape.
    PodSpecUnreadable {
        /// Its `name`.
        name: String,
        /// Why.
        reason: String,
    },
    /// The webhooks deny these jobs.
    Denied {
        /// Which jobs.
        job: Job,
        /// The engine's violation.
        violation: Violation,
        /// The rule is in audit mode: reported, not denied.
        audited: bool,
    },
    /// Jobs are admitted, but every alternative needs a Fargate node carrying
    /// labels Fargate nodes never have.
    Unschedulable {
        /// Which jobs.
        job: Job,
        /// The runner's requirements no Fargate node meets.
        config: Vec<Requirement>,
        /// The profile's requiredNodeLabels.
        required: Vec<Requirement>,
        /// The runner's requirement is a `node_selector` entry (AND-ed with every term).
        in_node_selector: bool,
    },
    /// A request setting that replaces profiles' defaults.
    RequestOverridesProfile {
        /// The setting, e.g. `cpu_request`.
        setting: String,
        /// Its value.
        value: String,
        /// Profiles whose default differs: (profile, default).
        profiles: Vec<(String, Quantity)>,
    },
    /// A `*_request_overwrite_max_allowed` above `resources.max`.
    OverwriteMaxAboveMax {
        /// The setting.
        setting: String,
        /// Its value.
        value: Quantity,
        /// `resources.max`.
        max: Quantity,
        /// `onExceed: clamp` (else deny).
        clamp: bool,
        /// The `resources` rule is in audit mode: only reported.
        audited: bool,
    },
}

impl Problem {
    /// The job it is about, for findings from the job pod.
    pub fn job(&self) -> Option<&Job> {
        match self {
            Problem::Denied { job, .. } | Problem::Unschedulable { job, .. } => Some(job),
            _ => None,
        }
    }
}

/// One finding: which runner, where, what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// The runner.
    pub runner: RunnerRef,
    /// Rule-like id.
    pub id: FindingId,
    /// Error or warning.
    pub severity: Severity,
    /// The setting to change.
    pub at: Location,
    /// What is wrong.
    pub problem: Problem,
}

fn list(v: &[String]) -> String {
    v.join(", ")
}

fn reqs(r: &[Requirement]) -> String {
    r.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

impl Finding {
    /// What is wrong, in words.
    pub fn message(&self) -> String {
        match &self.problem {
            Problem::NamespaceNotCovered {
                namespace,
                defaulted,
                scope,
            } => format!(
                "jobs run in namespace {namespace:?}{}, which the policy does not fence (match.namespaces: {}): runner-fence never reviews their pods",
                if *defaulted {
                    " (namespace is empty)"
                } else {
                    ""
                },
                list(scope)
            ),
            Problem::NamespacePerJobNotCovered { scope } => format!(
                "namespace_per_job puts every job in its own namespace ci-job-<job id>, which the policy does not fence (match.namespaces: {}): runner-fence never reviews their pods",
                list(scope)
            ),
            Problem::NamespaceOverwrite { regex, reach, .. } => {
                let head = format!(
                    "namespace_overwrite_allowed {regex:?} lets a job's KUBERNETES_NAMESPACE_OVERWRITE choose namespaces the policy does not fence"
                );
                match reach {
                    Reach::Example(n) => format!("{head}, e.g. {n:?}"),
                    Reach::Unproven { unanchored: true } => format!(
                        "{head}: it is not anchored with ^...$, and GitLab Runner accepts any namespace that merely contains a match"
                    ),
                    Reach::Unproven { unanchored: false } => format!(
                        "{head}: not every name it accepts starts with a prefix of match.namespaces"
                    ),
                    Reach::Unparsable(why) => format!(
                        "{head}: it is not a regular expression this check reads ({why}), so it counts as accepting any namespace"
                    ),
                    Reach::Covered => head,
                }
            }
            Problem::NamespaceUnresolved { template, assumed } => format!(
                "namespace is the Helm template {template:?} (the release namespace); checked as if it were {assumed:?}"
            ),
            Problem::OverwriteAllowed { regex, taints } => match self.id {
                FindingId::NodeTolerationsOverwrite => format!(
                    "node_tolerations_overwrite_allowed {regex:?} lets jobs add tolerations (KUBERNETES_NODE_TOLERATIONS_*); runner-fence denies those of GitLab's taints{}, so such jobs fail at once",
                    if taints.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", list(taints))
                    }
                ),
                FindingId::ServiceAccountOverwrite => format!(
                    "service_account_overwrite_allowed {regex:?} lets jobs run as other ServiceAccounts (KUBERNETES_SERVICE_ACCOUNT_OVERWRITE); one that may create pods in namespaces the policy does not cover takes a job out of the fence"
                ),
                _ => format!(
                    "node_selector_overwrite_allowed {regex:?} lets jobs add node selectors (KUBERNETES_NODE_SELECTOR_*); runner-fence denies those that reach GitLab's nodes or conflict with the job's profile, so such jobs fail at once"
                ),
            },
            Problem::PodSpec {
                name,
                patch_type,
                fields,
            } => {
                let what = if self.id == FindingId::PodSpecPlacement {
                    "which decide where the pod runs: every job of this runner gets them, and runner-fence judges them like a job's own overrides (denied when they reach GitLab's nodes or conflict with the profile)"
                } else {
                    "pod_spec patches can change any pod field"
                };
                format!(
                    "pod_spec {name:?} ({patch_type} patch) sets {}, {what}; patches apply when FF_USE_ADVANCED_POD_SPEC_CONFIGURATION is on, which a job can turn on with a variable",
                    list(fields)
                )
            }
            Problem::PodSpecFile { name, path } => format!(
                "pod_spec {name:?} reads its patch from {path:?} on the runner manager's host, which this check cannot see; pod_spec patches can change any pod field"
            ),
            Problem::PodSpecUnreadable { name, reason } => format!(
                "pod_spec {name:?} is not a patch GitLab Runner can apply ({reason}): jobs fail when the patch is used"
            ),
            Problem::Denied {
                job,
                violation,
                audited,
            } => {
                let verdict = if *audited {
                    "would be denied (the rule is in audit mode)"
                } else {
                    "is denied at once"
                };
                let job = match job {
                    Job::Every(p) => format!("every job of this runner (profile {p})"),
                    Job::Choosing(_) => job.to_string(),
                };
                format!("{job} {verdict}: {violation}")
            }
            Problem::Unschedulable {
                job,
                config,
                required,
                ..
            } => format!(
                "{job} requires {} (this setting) and {} (the profile): Fargate nodes carry no such label, so no node matches and the job stays Pending until poll_timeout",
                reqs(config),
                reqs(required)
            ),
            Problem::RequestOverridesProfile {
                setting,
                value,
                profiles,
            } => {
                let others: Vec<String> =
                    profiles.iter().map(|(p, q)| format!("{p} ({q})")).collect();
                let (whose, them) = if profiles.len() == 1 {
                    ("profile", "its jobs")
                } else {
                    ("profiles", "their jobs")
                };
                format!(
                    "{setting} = {value:?} replaces the default of {whose} {}: {them} get {value} (runner-fence injects a default only where the runner sets none)",
                    list(&others)
                )
            }
            Problem::OverwriteMaxAboveMax {
                setting,
                value,
                max,
                clamp,
                audited,
            } => format!(
                "{setting} = {:?} lets jobs ask for more than the policy's resources.max ({max}): runner-fence {}",
                value.as_str(),
                match (clamp, audited) {
                    (true, _) => "lowers such requests to the maximum",
                    (false, true) => "only reports such jobs (the resources rule is in audit mode)",
                    (false, false) => "denies such jobs",
                }
            ),
        }
    }

    /// What to change.
    pub fn fix(&self) -> String {
        match &self.problem {
            Problem::NamespaceNotCovered { namespace, scope, .. } => {
                let exact = scope.iter().find(|n| !n.ends_with('*'));
                match exact {
                    Some(n) => format!(
                        "set namespace = {n:?}, or add {namespace:?} to the policy's match.namespaces and render the webhooks again"
                    ),
                    None => format!(
                        "add {namespace:?} to the policy's match.namespaces and render the webhooks again"
                    ),
                }
            }
            Problem::NamespacePerJobNotCovered { .. } => "add \"ci-job-*\" to the policy's match.namespaces and render the webhooks again, or set namespace_per_job = false".into(),
            Problem::NamespaceOverwrite { suggestion, .. } => format!(
                "anchor it to the policy's namespaces: namespace_overwrite_allowed = {suggestion:?}, or remove it"
            ),
            Problem::NamespaceUnresolved { assumed, .. } => format!(
                "install the chart into one of the policy's namespaces ({assumed:?}), or pass --release-namespace to check another"
            ),
            Problem::OverwriteAllowed { .. } => match self.id {
                FindingId::ServiceAccountOverwrite => "allow only ServiceAccounts that cannot create pods outside match.namespaces (runner-fence audit reports those that can), or remove it".into(),
                FindingId::NodeTolerationsOverwrite => "remove node_tolerations_overwrite_allowed; profiles bring their own tolerations (choose one with the profile label)".into(),
                _ => "remove node_selector_overwrite_allowed; jobs choose a node group with a profile (the profile label through KUBERNETES_POD_LABELS_*)".into(),
            },
            Problem::PodSpec { .. } => match self.id {
                FindingId::PodSpecPlacement => "remove these fields from the patch: placement comes from the policy's profiles (runner-fence render runner-config)".into(),
                _ => "keep pod_spec patches away from nodeName, nodeSelector, affinity, tolerations and host namespaces".into(),
            },
            Problem::PodSpecFile { .. } => "inline the patch (patch = '''...''') so that it can be checked".into(),
            Problem::PodSpecUnreadable { .. } => "fix the patch: strategic and merge patches are YAML/JSON objects, json patches a list of operations".into(),
            Problem::Denied { violation, .. } => denied_fix(violation),
            Problem::Unschedulable { in_node_selector: true, .. } => "move it from node_selector (AND-ed with every term) into a node_selector_terms entry of its own, one per profile (terms are OR-ed and runner-fence adds the chosen profile's requirements to each): `runner-fence render runner-config` prints them".into(),
            Problem::Unschedulable { .. } => "give each profile its own node_selector_terms entry instead (terms are OR-ed and runner-fence adds the chosen profile's requirements to each): `runner-fence render runner-config` prints them".into(),
            Problem::RequestOverridesProfile { setting, .. } => format!(
                "remove {setting}: runner-fence injects each profile's default"
            ),
            Problem::OverwriteMaxAboveMax { setting, max, .. } => {
                format!("set {setting} to at most {:?}", max.as_str())
            }
        }
    }
}

fn denied_fix(v: &Violation) -> String {
    match (&v.rule, &v.cause) {
        (_, ViolationCause::UnknownProfile { allowed, .. } | ViolationCause::ProfileNotAllowed { allowed, .. }) => format!(
            "set the profile label in pod_labels to one of: {}",
            list(allowed)
        ),
        (RuleId::Placement, _) => "remove this requirement: each profile brings its own requiredNodeLabels (`runner-fence render runner-config` prints settings that fit every profile)".into(),
        (RuleId::ProtectedNodes, ViolationCause::ToleratesProtectedTaint { .. }) => {
            "remove this toleration: it tolerates GitLab's own nodes".into()
        }
        (RuleId::ProtectedNodes, _) => "remove this setting: it lets job pods reach GitLab's own nodes".into(),
        (RuleId::FargateCompat, ViolationCause::Fargate { issue: FargateIssue::HostPath { .. }, .. }) => {
            "use an emptyDir instead of this host_path volume, or keep this runner's jobs off Fargate".into()
        }
        (RuleId::FargateCompat, _) => "set privileged = false (build images with kaniko or buildah), or keep this runner's jobs off Fargate".into(),
        (RuleId::Resources, ViolationCause::RequestAboveMax { max, .. }) => {
            format!("lower it to at most {:?}", max.as_str())
        }
        (RuleId::Resources, _) => "raise the limit to at least the request, or remove it".into(),
        (RuleId::NodeName, _) => "remove nodeName".into(),
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}; fix: {}", self.id, self.message(), self.fix())
    }
}
