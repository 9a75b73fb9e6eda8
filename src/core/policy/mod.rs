//! The `RunnerPolicy` model (SPEC §6): what a policy file may say.
//!
//! Every struct rejects unknown fields so that a typo (`podNamePrefix`) is an
//! error with a line and column, never a silently ignored setting.

mod lint;
mod load;
mod locate;
mod protected;
mod schema;
mod yaml;

use std::collections::BTreeMap;
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::core::quantity::Quantity;
use crate::core::selector::matches_labels;
pub use crate::core::selector::{Operator, Requirement};
pub use crate::core::tolerations::{TaintEffect, TaintSpec, TolerationOperator, TolerationSpec};

pub use lint::{LintWarning, lint};
pub use load::{EMBEDDED_POLICY, GROUP, LoadError, OBJECT_KIND, PLURAL, VERSION, embedded, parse};
pub(crate) use load::{load, load_file, parse_data};
pub use protected::{ProtectedBy, ProtectedNodes};
pub use schema::json_schema;

/// `apiVersion` every policy must carry.
pub const API_VERSION: &str = "runner-fence.dev/v1alpha1";
/// `kind` every policy must carry.
pub const KIND: &str = "RunnerPolicy";

/// A complete runner-fence policy.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Policy {
    /// Always `runner-fence.dev/v1alpha1`.
    #[schemars(extend("const" = API_VERSION))]
    pub api_version: String,
    /// Always `RunnerPolicy`.
    #[schemars(extend("const" = KIND))]
    pub kind: String,
    /// Name used in logs and metrics.
    pub metadata: Metadata,
    /// Mode of the whole policy; rules may override it.
    #[serde(default)]
    pub mode: Mode,
    /// Per-rule mode overrides.
    #[serde(default)]
    #[schemars(schema_with = "schema::rules")]
    pub rules: BTreeMap<RuleId, Mode>,
    /// Which namespaces are fenced.
    #[serde(rename = "match")]
    pub matching: Match,
    /// GitLab's own nodes that job pods must never reach.
    pub protected_nodes: ProtectedNodes,
    /// Allow job pods to set `spec.nodeName` (off: the scheduler must place them).
    #[serde(default, deserialize_with = "crate::core::scalar::strict_bool")]
    pub allow_node_name: bool,
    /// The cluster's EKS Fargate profile selectors.
    #[serde(default)]
    pub fargate: Fargate,
    /// Where job pods go.
    pub placement: Placement,
    /// Resource defaults and limits.
    #[serde(default)]
    pub resources: Resources,
}

/// Policy metadata.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    /// Policy name.
    pub name: String,
}

/// `enforce` blocks and patches; `audit` only reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Deny violations and apply patches.
    #[default]
    Enforce,
    /// Allow everything; report what enforce would do.
    Audit,
}

impl Mode {
    /// The mode as written in policies, metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Audit => "audit",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Validation rule ids (SPEC §4), used in messages, metrics and tests.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize, JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum RuleId {
    /// Never reach a protected node (labels, names, taints, live nodes).
    ProtectedNodes,
    /// No `spec.nodeName` unless allowed.
    NodeName,
    /// The profile's node requirements are present and satisfiable.
    Placement,
    /// Fargate cannot run privileged or host-namespace pods.
    FargateCompat,
    /// Requests within `resources.max`, limits not below requests.
    Resources,
}

impl RuleId {
    /// All rules, in the order they are evaluated.
    pub const ALL: [RuleId; 5] = [
        RuleId::ProtectedNodes,
        RuleId::NodeName,
        RuleId::Placement,
        RuleId::FargateCompat,
        RuleId::Resources,
    ];

    /// The id as written in policies and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            RuleId::ProtectedNodes => "protected-nodes",
            RuleId::NodeName => "node-name",
            RuleId::Placement => "placement",
            RuleId::FargateCompat => "fargate-compat",
            RuleId::Resources => "resources",
        }
    }
}

impl fmt::Display for RuleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Scope (SPEC §2): every pod in these namespaces is fenced.
///
/// Nothing a pod says about itself (name, labels, owner) can take it out of
/// scope; labels only choose a profile (`placement.profiles.*.selector`).
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Match {
    /// Runner namespaces; an entry ending in `*` is a prefix (`ci-job-*`).
    #[schemars(length(min = 1))]
    pub namespaces: Vec<String>,
    /// Removed: names never exempted safely. Kept only to reject it with advice.
    #[serde(default, skip_serializing)]
    #[schemars(skip)]
    pub pod_name_prefixes: Option<Vec<String>>,
    /// Removed: a missing label must not exempt a pod. Kept only to reject it with advice.
    #[serde(default, skip_serializing)]
    #[schemars(skip)]
    pub require_labels: Option<Vec<String>>,
    /// Removed: a label must not exempt a pod. Kept only to reject it with advice.
    #[serde(default, skip_serializing)]
    #[schemars(skip)]
    pub exclude: Option<Exclude>,
}

impl Match {
    /// Does `namespace` fall under one of the patterns (`prefix*` entries match prefixes)?
    pub fn covers(&self, namespace: &str) -> bool {
        self.namespaces
            .iter()
            .any(|pattern| namespace_pattern_matches(pattern, namespace))
    }
}

/// `ns` matches `pattern` exactly, or by prefix when the pattern ends in `*`.
pub(crate) fn namespace_pattern_matches(pattern: &str, ns: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => ns.starts_with(prefix),
        None => pattern == ns,
    }
}

/// Is every namespace `inner` covers also covered by `outer`? (Both exact or `prefix*`.)
pub(crate) fn pattern_within(inner: &str, outer: &str) -> bool {
    match (inner.strip_suffix('*'), outer.strip_suffix('*')) {
        (None, _) => namespace_pattern_matches(outer, inner),
        (Some(i), Some(o)) => i.starts_with(o),
        (Some(_), None) => false,
    }
}

/// The old exemption list (`match.exclude`), only parsed to reject it.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Exclude {
    /// Label pairs that used to exempt a pod.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// The cluster's EKS Fargate profile selectors, mirrored so that
/// `fargate-compat` applies to every pod EKS would send to Fargate.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Fargate {
    /// As in the EKS Fargate profile: a pod matching any selector runs on Fargate.
    #[serde(default)]
    pub selectors: Vec<FargateSelector>,
}

/// One EKS Fargate profile selector: a namespace and labels (`*` and `?` wildcards allowed).
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FargateSelector {
    /// Namespace (wildcards `*` and `?` as in EKS).
    pub namespace: String,
    /// Labels the pod must carry (values may use wildcards).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

impl FargateSelector {
    /// Does EKS send a pod with these labels in `namespace` to Fargate?
    pub fn selects(&self, namespace: &str, labels: &BTreeMap<String, String>) -> bool {
        glob(&self.namespace, namespace)
            && self
                .labels
                .iter()
                .all(|(k, v)| labels.get(k).is_some_and(|have| glob(v, have)))
    }
}

/// EKS wildcard matching: `*` any run of characters, `?` one character.
pub(crate) fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    // Iterative matcher with single-star backtracking: linear in practice, never recursive.
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// A label selector on the pod's own labels (as in a Kubernetes LabelSelector).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LabelSelector {
    /// Labels the pod must carry.
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
    /// In, NotIn, Exists, DoesNotExist on the pod's labels.
    #[serde(default)]
    pub match_expressions: Vec<Requirement>,
}

impl LabelSelector {
    /// Whether it selects nothing at all (an empty selector would select every pod).
    pub fn is_empty(&self) -> bool {
        self.match_labels.is_empty() && self.match_expressions.is_empty()
    }

    /// Whether these labels are selected (never by an empty selector).
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        !self.is_empty()
            && self
                .match_labels
                .iter()
                .all(|(k, v)| labels.get(k) == Some(v))
            && self
                .match_expressions
                .iter()
                .all(|r| matches_labels(labels, r))
    }
}

/// Placement profiles.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Placement {
    /// Pod label that names the profile.
    #[serde(default = "default_profile_label")]
    pub profile_label: String,
    /// Profile used when the label is absent.
    pub default: String,
    /// Profiles by name.
    #[schemars(extend("minProperties" = 1))]
    pub profiles: BTreeMap<String, Profile>,
}

fn default_profile_label() -> String {
    "runner-fence.dev/profile".to_string()
}

/// Where and how a job pod runs.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Profile {
    /// Pods whose labels match get this profile (when the profile label is absent;
    /// the first matching profile in name order wins). Chooses a profile, never an exemption.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
    /// Namespaces (exact or `prefix*`) whose pods may use this profile; all runner
    /// namespaces when omitted. A pod elsewhere that asks for it is a `placement` denial.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<Vec<String>>,
    /// Pods run on EKS Fargate (enables `fargate-compat`).
    #[serde(default, deserialize_with = "crate::core::scalar::strict_bool")]
    pub fargate: bool,
    /// AND-ed into every required nodeSelectorTerm.
    #[serde(default)]
    pub required_node_labels: Vec<Requirement>,
    /// Added unless an identical toleration exists.
    #[serde(default)]
    pub tolerations: Vec<TolerationSpec>,
    /// Set on the pod (overwriting other values).
    #[serde(default)]
    pub pod_labels: BTreeMap<String, String>,
    /// Per-profile resource defaults.
    #[serde(default)]
    pub resources: Option<ProfileResources>,
}

/// Profile-level resource overrides.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ProfileResources {
    /// Defaults by role, overriding the policy's per field.
    #[serde(default)]
    pub defaults: RoleDefaults,
}

/// Resource defaults and limits.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Resources {
    /// Requests for containers that set none, by role.
    #[serde(default)]
    pub defaults: RoleDefaults,
    /// Largest request a container may make.
    #[serde(default)]
    pub max: Option<Requests>,
    /// What to do with a request above `max`.
    #[serde(default)]
    pub on_exceed: OnExceed,
}

/// Default requests per container role.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RoleDefaults {
    /// The `build` container.
    #[serde(default)]
    pub build: Option<Requests>,
    /// The `helper` container.
    #[serde(default)]
    pub helper: Option<Requests>,
    /// Services: every container other than build and helper (`svc-N`, aliases).
    #[serde(default)]
    pub service: Option<Requests>,
    /// Every init container (`init-permissions`, ...).
    #[serde(default)]
    pub init: Option<Requests>,
}

impl RoleDefaults {
    /// The defaults of one role.
    pub fn get(&self, role: Role) -> Option<&Requests> {
        match role {
            Role::Build => self.build.as_ref(),
            Role::Helper => self.helper.as_ref(),
            Role::Service => self.service.as_ref(),
            Role::Init => self.init.as_ref(),
        }
    }
}

/// cpu and memory amounts.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Requests {
    /// CPU, e.g. `500m`.
    #[serde(default)]
    pub cpu: Option<Quantity>,
    /// Memory, e.g. `1Gi`.
    #[serde(default)]
    pub memory: Option<Quantity>,
}

impl Requests {
    /// The amount of one resource.
    pub fn get(&self, r: ResourceName) -> Option<&Quantity> {
        match r {
            ResourceName::Cpu => self.cpu.as_ref(),
            ResourceName::Memory => self.memory.as_ref(),
        }
    }
}

/// The resources runner-fence defaults and caps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResourceName {
    /// `cpu`
    Cpu,
    /// `memory`
    Memory,
}

impl ResourceName {
    /// Both, in patch order.
    pub const ALL: [ResourceName; 2] = [ResourceName::Cpu, ResourceName::Memory];
    /// The Kubernetes resource name.
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceName::Cpu => "cpu",
            ResourceName::Memory => "memory",
        }
    }
}

/// A container's role in a GitLab job pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// `build`
    Build,
    /// `helper`
    Helper,
    /// Any other container.
    Service,
    /// Any init container.
    Init,
}

impl Role {
    /// The role of a regular (non-init) container, by the name GitLab gives it.
    pub fn of_container(name: &str) -> Role {
        match name {
            "build" => Role::Build,
            "helper" => Role::Helper,
            _ => Role::Service,
        }
    }
    /// The role name used in policies.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Build => "build",
            Role::Helper => "helper",
            Role::Service => "service",
            Role::Init => "init",
        }
    }
}

/// What to do with requests above `resources.max`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OnExceed {
    /// Deny the pod (rule `resources`).
    #[default]
    Deny,
    /// Lower the request to the maximum during mutation.
    Clamp,
}

impl Profile {
    /// May pods in `namespace` use this profile?
    pub fn allowed_in(&self, namespace: &str) -> bool {
        self.namespaces
            .as_ref()
            .is_none_or(|list| list.iter().any(|p| namespace_pattern_matches(p, namespace)))
    }

    /// May pods in every namespace that `pattern` (exact or `prefix*`) covers use this profile?
    pub fn allowed_pattern(&self, pattern: &str) -> bool {
        self.namespaces
            .as_ref()
            .is_none_or(|list| list.iter().any(|outer| pattern_within(pattern, outer)))
    }
}

impl Policy {
    /// The profile names, for messages: `fargate, runner-nodes`.
    pub fn known_profiles(&self) -> String {
        let names: Vec<&str> = self.placement.profiles.keys().map(String::as_str).collect();
        names.join(", ")
    }

    /// The profiles pods in `namespace` may use, by name.
    pub fn allowed_profiles(&self, namespace: &str) -> Vec<String> {
        self.placement
            .profiles
            .iter()
            .filter(|(_, p)| p.allowed_in(namespace))
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Would EKS run a pod with these (final) labels in `namespace` on Fargate?
    pub fn fargate_selects(&self, namespace: &str, labels: &BTreeMap<String, String>) -> bool {
        self.fargate
            .selectors
            .iter()
            .any(|s| s.selects(namespace, labels))
    }

    /// The mode a rule runs in.
    pub fn rule_mode(&self, rule: RuleId) -> Mode {
        self.rules.get(&rule).copied().unwrap_or(self.mode)
    }

    /// The default request for a role in a profile: the profile's value, else the policy's.
    pub fn default_request<'a>(
        &'a self,
        profile: &'a Profile,
        role: Role,
        res: ResourceName,
    ) -> Option<&'a Quantity> {
        profile
            .resources
            .as_ref()
            .and_then(|r| r.defaults.get(role))
            .and_then(|d| d.get(res))
            .or_else(|| self.resources.defaults.get(role).and_then(|d| d.get(res)))
    }

    /// The cap for a resource, if any.
    pub fn max_request(&self, res: ResourceName) -> Option<&Quantity> {
        self.resources.max.as_ref().and_then(|m| m.get(res))
    }

    /// A short, stable hash of the policy's content, for metrics and logs.
    pub fn content_hash(&self) -> String {
        use sha2::{Digest, Sha256};
        let json = serde_json::to_vec(self).unwrap_or_default();
        let digest = Sha256::digest(&json);
        digest[..8].iter().map(|b| format!("{b:02x}")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eks_wildcards() {
        for (p, t, want) in [
            ("gitlab-runner", "gitlab-runner", true),
            ("gitlab-runner", "gitlab-runner-2", false),
            ("ci-job-*", "ci-job-42", true),
            ("ci-job-*", "ci-job-", true),
            ("ci-job-*", "ci-jo", false),
            ("*-runner", "gitlab-runner", true),
            ("ci-?", "ci-a", true),
            ("ci-?", "ci-ab", false),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
            ("*", "", true),
        ] {
            assert_eq!(glob(p, t), want, "{p} ~ {t}");
        }
    }

    #[test]
    fn pattern_containment() {
        assert!(pattern_within("ci-job-1", "ci-job-*"));
        assert!(pattern_within("ci-job-a*", "ci-job-*"));
        assert!(!pattern_within("ci-*", "ci-job-*"));
        assert!(!pattern_within("ci-job-*", "ci-job-1"));
        assert!(pattern_within("gitlab-runner", "gitlab-runner"));
    }
}
