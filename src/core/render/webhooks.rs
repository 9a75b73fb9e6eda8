//! `render webhooks`: the Mutating/ValidatingWebhookConfiguration whose scope
//! is derived from the policy (SPEC §7, §9).
//!
//! Scope is the namespace and nothing else: a namespaceSelector on the
//! automatic `kubernetes.io/metadata.name` label for exact names, and a
//! `matchConditions` CEL test on `request.namespace` that also covers `prefix*`
//! entries (a label selector cannot match a name prefix, and the runner creates
//! `namespace_per_job` namespaces without labels). Nothing looks at the pod's
//! name, labels or owner: those are the attacker's to write.
//!
//! `audit` compares the live configurations with [`configurations`] through
//! [`coverage_gaps`], so the cluster can be checked against the same source.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MatchCondition, MutatingWebhook, MutatingWebhookConfiguration, RuleWithOperations,
    ServiceReference, ValidatingWebhook, ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta,
};

use crate::core::policy::{Mode, Policy, namespace_pattern_matches};

/// Name of the MutatingWebhookConfiguration. Mutating webhooks run in the
/// order of their configurations' names; EKS's Fargate profile matching is
/// `0500-amazon-eks-fargate-mutation.amazonaws.com`, so an injected
/// `use-fargate` label must exist before it runs.
pub const MUTATING_NAME: &str = "0100-runner-fence";
/// Name of the ValidatingWebhookConfiguration.
pub const VALIDATING_NAME: &str = "runner-fence";
/// The mutating webhook's name (audit annotation keys are prefixed with it).
pub const MUTATING_WEBHOOK: &str = "pods.mutate.runner-fence.dev";
/// The validating webhook's name.
pub const VALIDATING_WEBHOOK: &str = "pods.validate.runner-fence.dev";
/// The mutating webhook of the namespaces whose policies audit (`failurePolicy:
/// Ignore`), beside [`MUTATING_WEBHOOK`] of the enforcing ones (`Fail`).
pub const AUDIT_MUTATING_WEBHOOK: &str = "audit.pods.mutate.runner-fence.dev";
/// The validating webhook of the auditing policies' namespaces.
pub const AUDIT_VALIDATING_WEBHOOK: &str = "audit.pods.validate.runner-fence.dev";
/// The matchCondition that scopes both webhooks to the runner namespaces.
pub const SCOPE_CONDITION: &str = "runner-namespaces";
/// Never reviewed: the control plane's own namespace.
pub const KUBE_SYSTEM: &str = "kube-system";
const NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// Names of the cluster-scoped objects of one installation (a Helm release):
/// two releases in one cluster must not share them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Names {
    /// The MutatingWebhookConfiguration: `0100-<release>`, so it sorts before
    /// EKS's `0500-amazon-eks-fargate-mutation.amazonaws.com`.
    pub mutating: String,
    /// The ValidatingWebhookConfiguration: `<release>`.
    pub validating: String,
}

impl Names {
    /// The names for a release; `runner-fence` gives [`MUTATING_NAME`] and [`VALIDATING_NAME`].
    pub fn release(release: &str) -> Self {
        Names {
            mutating: format!("0100-{release}"),
            validating: release.to_string(),
        }
    }
}

impl Default for Names {
    fn default() -> Self {
        Names::release(VALIDATING_NAME)
    }
}

/// Where the apiserver reaches the webhook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Client {
    /// An in-cluster Service (the manifests and chart).
    Service {
        /// Service name.
        name: String,
        /// Service namespace (also the webhook's own, excluded from review).
        namespace: String,
        /// Service port.
        port: i32,
    },
    /// A URL base such as `https://127.0.0.1:18443` (`/mutate`, `/validate` appended).
    Url {
        /// The base URL.
        base: String,
        /// The webhook's own namespace, excluded from review.
        namespace: String,
    },
}

impl Client {
    fn own_namespace(&self) -> &str {
        match self {
            Client::Service { namespace, .. } | Client::Url { namespace, .. } => namespace,
        }
    }

    fn config(&self, path: &str, ca_bundle: Option<&[u8]>) -> WebhookClientConfig {
        let (service, url) = match self {
            Client::Service {
                name,
                namespace,
                port,
            } => (
                Some(ServiceReference {
                    name: name.clone(),
                    namespace: namespace.clone(),
                    path: Some(path.to_string()),
                    port: Some(*port),
                }),
                None,
            ),
            Client::Url { base, .. } => {
                (None, Some(format!("{}{path}", base.trim_end_matches('/'))))
            }
        };
        WebhookClientConfig {
            ca_bundle: ca_bundle.map(|b| ByteString(b.to_vec())),
            service,
            url,
        }
    }
}

/// `Fail` or `Ignore`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailurePolicy {
    /// The request fails when the webhook cannot be reached.
    Fail,
    /// The request goes on without the webhook.
    Ignore,
}

impl FailurePolicy {
    /// As the apiserver spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            FailurePolicy::Fail => "Fail",
            FailurePolicy::Ignore => "Ignore",
        }
    }

    /// The failurePolicy of both webhooks for a policy: `Fail` when it
    /// enforces (an outage must not open the fence), `Ignore` when the whole
    /// policy audits (audit mode never blocks a creation, so neither may an
    /// outage). The one decision behind `render webhooks`, the policy
    /// controller (for a set: [`FailurePolicy::for_set`]) and `audit`.
    pub fn for_policy(policy: &Policy) -> Self {
        Self::for_mode(policy.mode)
    }

    /// The failurePolicy of the webhooks serving policies of `mode`. Several
    /// policies of both modes get one webhook per mode in each configuration
    /// ([`configurations_of`]), so an auditing team's pods are never blocked by
    /// an outage because another team enforces.
    pub fn for_mode(mode: Mode) -> Self {
        match mode {
            Mode::Enforce => FailurePolicy::Fail,
            Mode::Audit => FailurePolicy::Ignore,
        }
    }
}

/// Everything `render webhooks` needs besides the policy.
#[derive(Clone, Debug)]
pub struct Options {
    /// Service or URL.
    pub client: Client,
    /// PEM CA bundle the apiserver trusts for the webhook (none: injected later).
    pub ca_bundle: Option<Vec<u8>>,
    /// failurePolicy of the mutating webhooks; None: from the mode of the
    /// policies each serves ([`FailurePolicy::for_mode`]).
    pub mutate_failure_policy: Option<FailurePolicy>,
    /// failurePolicy of the validating webhooks; None: from the mode.
    pub validate_failure_policy: Option<FailurePolicy>,
    /// timeoutSeconds (1-5; the apiserver allows up to 30, a job pod should not wait).
    pub timeout_seconds: i32,
    /// Names of the two configurations.
    pub names: Names,
}

impl Options {
    /// For a Service on port 443, the failure policies from the policies'
    /// modes, 5 s.
    pub fn service(name: &str, namespace: &str) -> Self {
        Options {
            client: Client::Service {
                name: name.to_string(),
                namespace: namespace.to_string(),
                port: 443,
            },
            ca_bundle: None,
            mutate_failure_policy: None,
            validate_failure_policy: None,
            timeout_seconds: 5,
            names: Names::default(),
        }
    }
}

/// Why something cannot be rendered from this policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// The policy covers a namespace the webhooks must never review.
    #[error(
        "match.namespaces entry {pattern:?} covers {namespace}, which the webhooks exclude (the webhook's own namespace and kube-system are never reviewed, so the fence could not hold there); run runner-fence in another namespace or narrow the entry"
    )]
    CoversExcluded {
        /// The policy entry.
        pattern: String,
        /// The excluded namespace.
        namespace: String,
    },
    /// Webhooks or a backstop for no policy at all.
    #[error("no policy to build the webhooks or the backstop from")]
    NoPolicies,
    /// timeoutSeconds out of range.
    #[error("timeoutSeconds must be between 1 and 5, got {0}")]
    Timeout(i32),
    /// `render runner-config --profile` names no profile of the policy.
    #[error("unknown profile {name:?}; known profiles: {known}")]
    UnknownProfile {
        /// The name asked for.
        name: String,
        /// The policy's profiles, comma-separated.
        known: String,
    },
    /// The runner configuration could not be written as TOML.
    #[error("cannot write TOML")]
    Toml(#[source] toml::ser::Error),
}

/// What one webhook must be sent: (resource incl. subresource, operation).
pub(crate) fn required_mutating() -> &'static [(&'static str, &'static str)] {
    &[("pods", "CREATE")]
}

/// What the validating webhook must be sent.
pub(crate) fn required_validating() -> &'static [(&'static str, &'static str)] {
    &[
        ("pods", "CREATE"),
        ("pods", "UPDATE"),
        ("pods/binding", "CREATE"),
        ("pods/ephemeralcontainers", "UPDATE"),
        ("pods/resize", "UPDATE"),
        ("bindings", "CREATE"),
    ]
}

/// The rules that send `required` (grouped by resource set with the same operations).
fn rules(required: &[(&str, &str)]) -> Vec<RuleWithOperations> {
    let mut by_resource: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (res, op) in required {
        by_resource.entry(res).or_default().push(op.to_string());
    }
    let mut by_ops: BTreeMap<Vec<String>, Vec<String>> = BTreeMap::new();
    for (res, ops) in by_resource {
        by_ops.entry(ops).or_default().push(res.to_string());
    }
    by_ops
        .into_iter()
        .map(|(operations, resources)| RuleWithOperations {
            api_groups: Some(vec![String::new()]),
            api_versions: Some(vec!["v1".into()]),
            operations: Some(operations),
            resources: Some(resources),
            scope: Some("Namespaced".into()),
        })
        .collect()
}

/// A CEL string literal (shared with the backstop).
pub(crate) fn cel_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// The CEL test on `request.namespace` for the policy's namespaces.
pub(crate) fn scope_expression(policy: &Policy) -> String {
    scope_expression_of(&policy.matching.namespaces)
}

/// The CEL test on `request.namespace` for namespace patterns.
pub(crate) fn scope_expression_of(namespaces: &[String]) -> String {
    let mut exact = Vec::new();
    let mut parts = Vec::new();
    for ns in namespaces {
        match ns.strip_suffix('*') {
            Some(prefix) => parts.push(format!(
                "request.namespace.startsWith({})",
                cel_string(prefix)
            )),
            None => exact.push(cel_string(ns)),
        }
    }
    if !exact.is_empty() {
        parts.insert(0, format!("request.namespace in [{}]", exact.join(", ")));
    }
    parts.join(" || ")
}

/// The namespace patterns a scope expression stands for, when it is exactly what
/// [`scope_expression_of`] generates for them (the controller scopes its webhooks to
/// every served policy's namespaces, so a live scope may name more than one policy's);
/// None for anything else (a hand-written or edited expression).
fn scope_patterns(expression: &str) -> Option<Vec<String>> {
    let unquote = |s: &str| {
        s.strip_prefix('\'')
            .and_then(|s| s.strip_suffix('\''))
            .map(str::to_string)
    };
    let mut out = Vec::new();
    for part in expression.split(" || ") {
        if let Some(list) = part
            .strip_prefix("request.namespace in [")
            .and_then(|r| r.strip_suffix(']'))
        {
            for item in list.split(", ") {
                out.push(unquote(item)?);
            }
        } else if let Some(prefix) = part
            .strip_prefix("request.namespace.startsWith(")
            .and_then(|r| r.strip_suffix(')'))
        {
            out.push(format!("{}*", unquote(prefix)?));
        } else {
            return None;
        }
    }
    (scope_expression_of(&out) == expression).then_some(out)
}

/// Do live matchConditions let requests in namespace `pattern` (a policy entry)
/// through? Only the generated scope condition is understood: anything else may
/// filter the request out.
fn conditions_pass(conditions: &[MatchCondition], pattern: &str) -> bool {
    let [c] = conditions else {
        return conditions.is_empty();
    };
    c.name == SCOPE_CONDITION
        && scope_patterns(&c.expression).is_some_and(|live| {
            live.iter().any(|l| match l.strip_suffix('*') {
                // A live prefix covers an exact name or a longer prefix it starts.
                Some(prefix) => pattern.starts_with(prefix),
                None => l == pattern,
            })
        })
}

/// The matchConditions both webhooks carry.
pub(crate) fn match_conditions(policy: &Policy) -> Vec<MatchCondition> {
    match_conditions_of(&policy.matching.namespaces)
}

/// The matchConditions for namespace patterns.
pub(crate) fn match_conditions_of(namespaces: &[String]) -> Vec<MatchCondition> {
    vec![MatchCondition {
        name: SCOPE_CONDITION.into(),
        expression: scope_expression_of(namespaces),
    }]
}

/// The namespaceSelector: exact names when there are only exact names, every
/// namespace (but the excluded ones) when prefixes need the CEL test.
pub(crate) fn namespace_selector(policy: &Policy, own_namespace: &str) -> LabelSelector {
    namespace_selector_of(&policy.matching.namespaces, own_namespace)
}

/// The namespaceSelector for namespace patterns.
pub(crate) fn namespace_selector_of(names: &[String], own_namespace: &str) -> LabelSelector {
    let mut exprs = Vec::new();
    if names.iter().all(|n| !n.ends_with('*')) {
        exprs.push(LabelSelectorRequirement {
            key: NAME_LABEL.into(),
            operator: "In".into(),
            values: Some(names.to_vec()),
        });
    }
    exprs.push(LabelSelectorRequirement {
        key: NAME_LABEL.into(),
        operator: "NotIn".into(),
        values: Some(vec![own_namespace.to_string(), KUBE_SYSTEM.to_string()]),
    });
    LabelSelector {
        match_expressions: Some(exprs),
        match_labels: None,
    }
}

/// The policy must not cover a namespace that is never reviewed.
pub(crate) fn check_scope(policy: &Policy, own_namespace: &str) -> Result<(), RenderError> {
    check_scope_of(&policy.matching.namespaces, own_namespace)
}

/// Namespace patterns must not cover a namespace that is never reviewed.
pub(crate) fn check_scope_of(
    namespaces: &[String],
    own_namespace: &str,
) -> Result<(), RenderError> {
    for excluded in [own_namespace, KUBE_SYSTEM] {
        if let Some(p) = namespaces
            .iter()
            .find(|p| namespace_pattern_matches(p, excluded))
        {
            return Err(RenderError::CoversExcluded {
                pattern: p.clone(),
                namespace: excluded.to_string(),
            });
        }
    }
    Ok(())
}

/// Both configurations for a policy.
pub fn configurations(
    policy: &Policy,
    opts: &Options,
) -> Result<(MutatingWebhookConfiguration, ValidatingWebhookConfiguration), RenderError> {
    configurations_of(&[policy], opts)
}

/// The namespace patterns of the policies of each mode, enforcing first; a
/// mode no policy has is left out.
fn scopes(policies: &[&Policy]) -> Vec<(Mode, Vec<String>)> {
    [Mode::Enforce, Mode::Audit]
        .into_iter()
        .filter_map(|mode| {
            let mut namespaces: Vec<String> = Vec::new();
            for ns in policies
                .iter()
                .filter(|p| p.mode == mode)
                .flat_map(|p| p.matching.namespaces.iter())
            {
                if !namespaces.contains(ns) {
                    namespaces.push(ns.clone());
                }
            }
            (!namespaces.is_empty()).then_some((mode, namespaces))
        })
        .collect()
}

/// Both configurations for several policies (the policy controller's served
/// set): in each, one webhook per mode, scoped to the namespaces of the
/// policies of that mode, with that mode's failurePolicy unless `opts` sets one
/// — so an outage blocks creations only where a policy enforces.
pub fn configurations_of(
    policies: &[&Policy],
    opts: &Options,
) -> Result<(MutatingWebhookConfiguration, ValidatingWebhookConfiguration), RenderError> {
    let own = opts.client.own_namespace();
    let ca = opts.ca_bundle.as_deref();
    if !(1..=5).contains(&opts.timeout_seconds) {
        return Err(RenderError::Timeout(opts.timeout_seconds));
    }
    let mut mutating_hooks = Vec::new();
    let mut validating_hooks = Vec::new();
    for (mode, namespaces) in scopes(policies) {
        check_scope_of(&namespaces, own)?;
        let failure = FailurePolicy::for_mode(mode);
        let (mutating_name, validating_name) = match mode {
            Mode::Enforce => (MUTATING_WEBHOOK, VALIDATING_WEBHOOK),
            Mode::Audit => (AUDIT_MUTATING_WEBHOOK, AUDIT_VALIDATING_WEBHOOK),
        };
        mutating_hooks.push(MutatingWebhook {
            name: mutating_name.into(),
            admission_review_versions: vec!["v1".into()],
            side_effects: "None".into(),
            timeout_seconds: Some(opts.timeout_seconds),
            failure_policy: Some(
                opts.mutate_failure_policy
                    .unwrap_or(failure)
                    .as_str()
                    .into(),
            ),
            match_policy: Some("Equivalent".into()),
            reinvocation_policy: Some("IfNeeded".into()),
            client_config: opts.client.config("/mutate", ca),
            rules: Some(rules(required_mutating())),
            namespace_selector: Some(namespace_selector_of(&namespaces, own)),
            object_selector: None,
            match_conditions: Some(match_conditions_of(&namespaces)),
        });
        validating_hooks.push(ValidatingWebhook {
            name: validating_name.into(),
            admission_review_versions: vec!["v1".into()],
            side_effects: "None".into(),
            timeout_seconds: Some(opts.timeout_seconds),
            failure_policy: Some(
                opts.validate_failure_policy
                    .unwrap_or(failure)
                    .as_str()
                    .into(),
            ),
            match_policy: Some("Equivalent".into()),
            client_config: opts.client.config("/validate", ca),
            rules: Some(rules(required_validating())),
            namespace_selector: Some(namespace_selector_of(&namespaces, own)),
            object_selector: None,
            match_conditions: Some(match_conditions_of(&namespaces)),
        });
    }
    if mutating_hooks.is_empty() {
        return Err(RenderError::NoPolicies);
    }
    let meta = |name: &str| ObjectMeta {
        name: Some(name.to_string()),
        labels: Some(BTreeMap::from([(
            "app.kubernetes.io/name".to_string(),
            "runner-fence".to_string(),
        )])),
        ..ObjectMeta::default()
    };
    Ok((
        MutatingWebhookConfiguration {
            metadata: meta(&opts.names.mutating),
            webhooks: Some(mutating_hooks),
        },
        ValidatingWebhookConfiguration {
            metadata: meta(&opts.names.validating),
            webhooks: Some(validating_hooks),
        },
    ))
}

/// Both configurations as JSON objects with apiVersion and kind, as applied.
pub fn objects(policy: &Policy, opts: &Options) -> Result<[serde_json::Value; 2], RenderError> {
    objects_of(&[policy], opts)
}

/// [`objects`] for several policies ([`configurations_of`]).
pub fn objects_of(
    policies: &[&Policy],
    opts: &Options,
) -> Result<[serde_json::Value; 2], RenderError> {
    let (m, v) = configurations_of(policies, opts)?;
    // k8s-openapi's Serialize omits apiVersion/kind for nested use; add them.
    let with_kind = |value: serde_json::Value, kind: &str| {
        let mut map = serde_json::Map::new();
        map.insert(
            "apiVersion".into(),
            "admissionregistration.k8s.io/v1".into(),
        );
        map.insert("kind".into(), kind.into());
        if let serde_json::Value::Object(o) = value {
            map.extend(
                o.into_iter()
                    .filter(|(k, _)| k != "apiVersion" && k != "kind"),
            );
        }
        serde_json::Value::Object(map)
    };
    Ok([
        with_kind(
            serde_json::to_value(&m).unwrap_or_default(),
            "MutatingWebhookConfiguration",
        ),
        with_kind(
            serde_json::to_value(&v).unwrap_or_default(),
            "ValidatingWebhookConfiguration",
        ),
    ])
}

/// Both configurations as one YAML stream (`---` separated), with a header.
pub fn render_yaml(policy: &Policy, opts: &Options) -> Result<String, RenderError> {
    let docs = objects(policy, opts)?;
    let mut out = format!(
        "# Generated by `runner-fence render webhooks` from policy {:?}; do not edit by hand.\n\
         # Scope is the namespace only: never the pod's name, labels or owner.\n",
        policy.metadata.name
    );
    for d in docs {
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(&d).unwrap_or_default());
    }
    Ok(out)
}

/// A live webhook of runner-fence's, reduced to what decides its scope.
#[derive(Clone, Debug)]
pub struct LiveWebhook {
    /// `mutating` or `validating`.
    pub kind: Kind,
    /// Configuration name.
    pub configuration: String,
    /// Webhook name.
    pub name: String,
    /// failurePolicy (`Fail` when unset, as the apiserver defaults it).
    pub failure_policy: String,
    /// Rules.
    pub rules: Vec<RuleWithOperations>,
    /// namespaceSelector.
    pub namespace_selector: Option<LabelSelector>,
    /// objectSelector.
    pub object_selector: Option<LabelSelector>,
    /// matchConditions.
    pub match_conditions: Vec<MatchCondition>,
}

/// Which of the two webhooks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// The mutating webhook.
    Mutating,
    /// The validating webhook.
    Validating,
}

impl Kind {
    /// `mutating` or `validating`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Mutating => "mutating",
            Kind::Validating => "validating",
        }
    }
}

/// One thing the cluster does not send to runner-fence although the policy covers it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Gap {
    /// Which webhook.
    pub webhook: Kind,
    /// Namespace pattern of the policy (exact or `prefix*`); empty for whole-webhook findings.
    pub namespace: String,
    /// `resource[/subresource] OPERATION`, or empty.
    pub request: String,
    /// What is wrong.
    pub reason: String,
}

fn rule_covers(rule: &RuleWithOperations, resource: &str, op: &str) -> bool {
    let any = |list: &Option<Vec<String>>, want: &str| {
        list.iter().flatten().any(|x| x == want || x == "*")
    };
    let res_ok = rule.resources.iter().flatten().any(|r| {
        r == resource
            || r == "*/*"
            || (r == "*" && !resource.contains('/'))
            || resource
                .split_once('/')
                .is_some_and(|(main, _)| r == &format!("{main}/*"))
    });
    any(&rule.api_groups, "")
        && any(&rule.api_versions, "v1")
        && any(&rule.operations, op)
        && res_ok
        && rule
            .scope
            .as_deref()
            .is_none_or(|s| s == "*" || s == "Namespaced")
}

/// Does a namespaceSelector select a namespace that carries only its automatic
/// name label? (The runner creates `namespace_per_job` namespaces unlabelled,
/// so a selector that needs any other label leaves them out.)
fn selects_bare_namespace(sel: Option<&LabelSelector>, ns: &str) -> bool {
    let Some(sel) = sel else { return true };
    let labels = BTreeMap::from([(NAME_LABEL.to_string(), ns.to_string())]);
    sel.match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v))
        && sel.match_expressions.iter().flatten().all(|e| {
            let have = labels.get(&e.key);
            let values = e.values.as_deref().unwrap_or(&[]);
            match e.operator.as_str() {
                "In" => have.is_some_and(|h| values.contains(h)),
                "NotIn" => have.is_none_or(|h| !values.contains(h)),
                "Exists" => have.is_some(),
                "DoesNotExist" => have.is_none(),
                _ => false,
            }
        })
}

/// A namespace name that stands for a policy pattern (a prefix gets a suffix).
fn probe_namespace(pattern: &str) -> String {
    match pattern.strip_suffix('*') {
        Some(prefix) => format!("{prefix}probe"),
        None => pattern.to_string(),
    }
}

/// Everything the policy covers that the live webhooks would not be sent, and
/// every fail-open webhook while the policy enforces — unless the in-tree
/// backstop (`render admission-policy`, denying) is installed, which is exactly
/// what makes `failurePolicy: Ignore` safe.
pub fn coverage_gaps(policy: &Policy, live: &[LiveWebhook], backstop: bool) -> Vec<Gap> {
    let mut gaps = Vec::new();
    for (kind, required) in [
        (Kind::Mutating, required_mutating()),
        (Kind::Validating, required_validating()),
    ] {
        let hooks: Vec<&LiveWebhook> = live.iter().filter(|w| w.kind == kind).collect();
        if hooks.is_empty() {
            gaps.push(Gap {
                webhook: kind,
                namespace: String::new(),
                request: String::new(),
                reason: format!("no {} webhook of runner-fence is registered", kind.as_str()),
            });
            continue;
        }
        // A webhook whose filters are exactly the generated ones, or absent.
        // Why this webhook would not be sent the request; None when it would.
        let missed = |w: &LiveWebhook,
                      pattern: &str,
                      resource: &str,
                      op: &str|
         -> Option<&'static str> {
            let ns = &probe_namespace(pattern);
            let object_selector = w.object_selector.as_ref().is_some_and(|s| {
                s.match_labels.as_ref().is_some_and(|m| !m.is_empty())
                    || s.match_expressions.as_ref().is_some_and(|e| !e.is_empty())
            });
            if !w.rules.iter().any(|r| rule_covers(r, resource, op)) {
                Some("no rule sends it")
            } else if !selects_bare_namespace(w.namespace_selector.as_ref(), ns) {
                Some(
                    "the namespaceSelector does not select the namespace (by its name label alone)",
                )
            } else if !conditions_pass(&w.match_conditions, pattern) {
                Some(
                    "matchConditions differ from the ones runner-fence generates for this namespace and may filter it out",
                )
            } else if object_selector {
                Some("an objectSelector filters on the pod's labels, which the attacker writes")
            } else {
                None
            }
        };
        // Several policies get one webhook per mode: the other mode's, whose
        // generated scope names none of this policy's namespaces, does not answer
        // for this policy's failurePolicy. Any other scope (hand-edited, absent)
        // might send its pods, so its failurePolicy counts.
        let serves_others_only = |w: &LiveWebhook| match w.match_conditions.as_slice() {
            [c] if c.name == SCOPE_CONDITION => {
                scope_patterns(&c.expression).is_some()
                    && !policy
                        .matching
                        .namespaces
                        .iter()
                        .any(|p| conditions_pass(&w.match_conditions, p))
            }
            _ => false,
        };
        for w in hooks.iter().filter(|w| !serves_others_only(w)) {
            let reason = match FailurePolicy::for_policy(policy) {
                FailurePolicy::Fail if w.failure_policy == "Ignore" && !backstop => format!(
                    "{}/{} has failurePolicy: Ignore while the policy enforces: an outage opens the fence",
                    w.configuration, w.name
                ),
                FailurePolicy::Ignore if w.failure_policy != "Ignore" => format!(
                    "{}/{} has failurePolicy: {} while the policy audits: an outage blocks pod creations that audit mode allows; render webhooks emits Ignore for an audit policy",
                    w.configuration, w.name, w.failure_policy
                ),
                _ => continue,
            };
            gaps.push(Gap {
                webhook: kind,
                namespace: String::new(),
                request: String::new(),
                reason,
            });
        }
        for pattern in &policy.matching.namespaces {
            for (resource, op) in required {
                let reasons: Vec<&str> = hooks
                    .iter()
                    .map(|w| missed(w, pattern, resource, op))
                    .collect::<Option<_>>()
                    .unwrap_or_default();
                // Sent when any one webhook would be sent it.
                let Some(reason) = reasons.first().map(|r| r.to_string()) else {
                    continue;
                };
                gaps.push(Gap {
                    webhook: kind,
                    namespace: pattern.clone(),
                    request: format!("{resource} {op}"),
                    reason,
                });
            }
        }
    }
    gaps
}

/// The webhooks of one configuration as [`LiveWebhook`]s, each with its clientConfig
/// (the two configuration kinds have the same fields but distinct types).
macro_rules! live_webhooks {
    ($kind:expr, $cfg:expr) => {{
        let cfg = $cfg;
        let configuration = cfg.metadata.name.clone().unwrap_or_default();
        cfg.webhooks
            .iter()
            .flatten()
            .map(|w| {
                let live = LiveWebhook {
                    kind: $kind,
                    configuration: configuration.clone(),
                    name: w.name.clone(),
                    // Unset means Fail, as the apiserver defaults it.
                    failure_policy: w.failure_policy.clone().unwrap_or_else(|| "Fail".into()),
                    rules: w.rules.clone().unwrap_or_default(),
                    namespace_selector: w.namespace_selector.clone(),
                    object_selector: w.object_selector.clone(),
                    match_conditions: w.match_conditions.clone().unwrap_or_default(),
                };
                (live, &w.client_config)
            })
            .collect::<Vec<_>>()
    }};
}

impl LiveWebhook {
    /// The webhooks of a live MutatingWebhookConfiguration.
    pub fn of_mutating(
        c: &MutatingWebhookConfiguration,
    ) -> Vec<(LiveWebhook, &WebhookClientConfig)> {
        live_webhooks!(Kind::Mutating, c)
    }

    /// The webhooks of a live ValidatingWebhookConfiguration.
    pub fn of_validating(
        c: &ValidatingWebhookConfiguration,
    ) -> Vec<(LiveWebhook, &WebhookClientConfig)> {
        live_webhooks!(Kind::Validating, c)
    }
}

/// The generated configurations as [`LiveWebhook`]s (what a correct cluster holds).
#[cfg(test)]
fn as_live(
    m: &MutatingWebhookConfiguration,
    v: &ValidatingWebhookConfiguration,
) -> Vec<LiveWebhook> {
    LiveWebhook::of_mutating(m)
        .into_iter()
        .chain(LiveWebhook::of_validating(v))
        .map(|(w, _)| w)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::policy::embedded;

    fn policy_with(namespaces: &[&str]) -> Policy {
        let mut p = embedded().expect("policy");
        p.matching.namespaces = namespaces.iter().map(|s| s.to_string()).collect();
        p
    }

    #[test]
    fn exact_and_prefix_scope() {
        let p = policy_with(&["gitlab-runner", "ci-job-*"]);
        assert_eq!(
            scope_expression(&p),
            "request.namespace in ['gitlab-runner'] || request.namespace.startsWith('ci-job-')"
        );
        // A prefix needs every namespace sent, so the selector only excludes.
        let sel = namespace_selector(&p, "runner-fence");
        let exprs = sel.match_expressions.expect("exprs");
        assert_eq!(exprs.len(), 1);
        assert_eq!(exprs[0].operator, "NotIn");
        let exact = namespace_selector(&policy_with(&["gitlab-runner"]), "runner-fence");
        assert_eq!(exact.match_expressions.expect("exprs")[0].operator, "In");
    }

    #[test]
    fn generated_configurations_have_no_gaps() {
        for ns in [&["gitlab-runner"][..], &["gitlab-runner", "ci-job-*"]] {
            let p = policy_with(ns);
            let (m, v) = configurations(&p, &Options::service("runner-fence", "runner-fence"))
                .expect("render");
            assert_eq!(coverage_gaps(&p, &as_live(&m, &v), false), vec![]);
        }
    }

    #[rstest::rstest]
    #[case::more_policies(&["gitlab-runner", "team-b", "ci-*"], true)]
    #[case::a_prefix_covers(&["gitlab-*", "ci-job-*"], true)]
    #[case::shorter_prefix_covers(&["gitlab-runner", "ci-*"], true)]
    #[case::namespace_missing(&["team-b", "ci-job-*"], false)]
    #[case::prefix_missing(&["gitlab-runner", "ci-job-x"], false)]
    fn a_scope_generated_for_several_policies_covers_each(
        #[case] served: &[&str],
        #[case] covered: bool,
    ) {
        // The controller scopes its webhooks to every served policy's namespaces.
        let p = policy_with(&["gitlab-runner", "ci-job-*"]);
        let (m, v) = configurations(
            &policy_with(served),
            &Options::service("runner-fence", "runner-fence"),
        )
        .expect("render");
        let gaps = coverage_gaps(&p, &as_live(&m, &v), false);
        assert_eq!(gaps.is_empty(), covered, "{gaps:?}");
    }

    #[rstest::rstest]
    #[case::exact("request.namespace in ['a', 'b']", Some(vec!["a", "b"]))]
    #[case::both("request.namespace in ['a'] || request.namespace.startsWith('ci-')", Some(vec!["a", "ci-*"]))]
    #[case::hand_written("request.namespace == 'a'", None)]
    #[case::widened("request.namespace in ['a'] || true", None)]
    #[case::reordered(
        "request.namespace.startsWith('ci-') || request.namespace in ['a']",
        None
    )]
    fn only_generated_scopes_are_understood(
        #[case] expression: &str,
        #[case] want: Option<Vec<&str>>,
    ) {
        assert_eq!(
            scope_patterns(expression),
            want.map(|w| w.into_iter().map(String::from).collect())
        );
    }

    #[test]
    fn every_kind_of_hand_edit_is_a_gap() {
        let p = policy_with(&["gitlab-runner", "ci-job-*"]);
        let (m, v) =
            configurations(&p, &Options::service("runner-fence", "runner-fence")).expect("render");
        let live = as_live(&m, &v);
        let gaps_after = |edit: &dyn Fn(&mut Vec<LiveWebhook>)| {
            let mut l = live.clone();
            edit(&mut l);
            coverage_gaps(&p, &l, false)
        };
        // Validating webhook loses the bindings rule.
        let g = gaps_after(&|l| {
            l[1].rules
                .retain(|r| !r.resources.iter().flatten().any(|x| x == "bindings"))
        });
        assert!(
            g.iter()
                .any(|g| g.request == "bindings CREATE" && g.namespace == "gitlab-runner"),
            "{g:?}"
        );
        // A namespace selector that needs a label the runner's namespaces lack.
        let g = gaps_after(&|l| {
            l[0].namespace_selector = Some(LabelSelector {
                match_labels: Some(BTreeMap::from([("runner-fence".into(), "enabled".into())])),
                match_expressions: None,
            })
        });
        assert!(
            g.iter()
                .any(|g| g.webhook == Kind::Mutating && g.namespace == "ci-job-*"),
            "{g:?}"
        );
        // A name filter in matchConditions (the old hole).
        let g = gaps_after(&|l| {
            l[1].match_conditions.push(MatchCondition {
                name: "runner-job-pod-name".into(),
                expression: "object.metadata.name.startsWith('runner-')".into(),
            })
        });
        assert!(
            g.iter().any(|g| g.reason.contains("matchConditions")),
            "{g:?}"
        );
        // An objectSelector on the pod's labels.
        let g = gaps_after(&|l| {
            l[1].object_selector = Some(LabelSelector {
                match_labels: Some(BTreeMap::from([("app".into(), "job".into())])),
                match_expressions: None,
            })
        });
        assert!(
            g.iter().any(|g| g.reason.contains("objectSelector")),
            "{g:?}"
        );
        // Fail-open while enforcing.
        let g = gaps_after(&|l| l[0].failure_policy = "Ignore".into());
        assert!(
            g.iter().any(|g| g.reason.contains("failurePolicy: Ignore")),
            "{g:?}"
        );
        // No validating webhook at all.
        let g = gaps_after(&|l| l.retain(|w| w.kind == Kind::Mutating));
        assert!(
            g.iter()
                .any(|g| g.webhook == Kind::Validating && g.reason.contains("no validating")),
            "{g:?}"
        );
    }

    fn names_and_failure_policies(live: &[LiveWebhook]) -> Vec<(&str, &str)> {
        live.iter()
            .map(|w| (w.name.as_str(), w.failure_policy.as_str()))
            .collect()
    }

    #[test]
    fn an_audit_policy_wants_both_webhooks_to_fail_open() {
        let mut p = policy_with(&["gitlab-runner"]);
        p.mode = Mode::Audit;
        // What `render webhooks` and the chart generate for it: no gap.
        let opts = Options::service("runner-fence", "runner-fence");
        let (m, v) = configurations(&p, &opts).expect("render");
        let live = as_live(&m, &v);
        let hooks = names_and_failure_policies(&live);
        assert_eq!(
            hooks,
            [
                (AUDIT_MUTATING_WEBHOOK, "Ignore"),
                (AUDIT_VALIDATING_WEBHOOK, "Ignore")
            ]
        );
        assert_eq!(coverage_gaps(&p, &live, false), vec![]);
        // Fail set by hand: an outage would block creations.
        let fail = Options {
            mutate_failure_policy: Some(FailurePolicy::Fail),
            validate_failure_policy: Some(FailurePolicy::Fail),
            ..opts
        };
        let (m, v) = configurations(&p, &fail).expect("render");
        let reasons: Vec<String> = coverage_gaps(&p, &as_live(&m, &v), true)
            .into_iter()
            .map(|g| g.reason)
            .collect();
        assert_eq!(
            reasons,
            [
                "0100-runner-fence/audit.pods.mutate.runner-fence.dev has failurePolicy: Fail while the policy audits: an outage blocks pod creations that audit mode allows; render webhooks emits Ignore for an audit policy",
                "runner-fence/audit.pods.validate.runner-fence.dev has failurePolicy: Fail while the policy audits: an outage blocks pod creations that audit mode allows; render webhooks emits Ignore for an audit policy",
            ]
        );
        // Enforcing, Fail is right and Ignore needs the backstop.
        p.mode = Mode::Enforce;
        assert_eq!(FailurePolicy::for_policy(&p), FailurePolicy::Fail);
        assert_eq!(coverage_gaps(&p, &as_live(&m, &v), false), vec![]);
    }

    #[test]
    fn policies_of_both_modes_get_one_webhook_per_mode() {
        let enforcing = policy_with(&["gitlab-runner", "ci-job-*"]);
        let mut auditing = policy_with(&["ci-team-b", "ci-audit-*"]);
        auditing.mode = Mode::Audit;
        let opts = Options::service("runner-fence", "runner-fence");
        let (m, v) = configurations_of(&[&enforcing, &auditing], &opts).expect("render");
        let live = as_live(&m, &v);
        let hooks = names_and_failure_policies(&live);
        assert_eq!(
            hooks,
            [
                (MUTATING_WEBHOOK, "Fail"),
                (AUDIT_MUTATING_WEBHOOK, "Ignore"),
                (VALIDATING_WEBHOOK, "Fail"),
                (AUDIT_VALIDATING_WEBHOOK, "Ignore"),
            ]
        );
        // Each webhook is sent only its mode's namespaces.
        for w in &live {
            let audit = w.name.starts_with("audit.");
            for (ns, of_auditing) in [
                ("gitlab-runner", false),
                ("ci-job-*", false),
                ("ci-team-b", true),
                ("ci-audit-*", true),
            ] {
                assert_eq!(
                    conditions_pass(&w.match_conditions, ns)
                        && selects_bare_namespace(
                            w.namespace_selector.as_ref(),
                            &probe_namespace(ns)
                        ),
                    audit == of_auditing,
                    "{} and {ns}",
                    w.name
                );
            }
        }
        // Both policies are judged clean against what the controller generates.
        assert_eq!(coverage_gaps(&enforcing, &live, false), vec![]);
        assert_eq!(coverage_gaps(&auditing, &live, false), vec![]);
        // One Fail webhook for both (what the controller generated before): the
        // auditing team's creations would fail in an outage, and audit says so.
        let one = Options {
            mutate_failure_policy: Some(FailurePolicy::Fail),
            validate_failure_policy: Some(FailurePolicy::Fail),
            ..opts
        };
        let (m, v) = configurations(
            &policy_with(&["gitlab-runner", "ci-job-*", "ci-team-b", "ci-audit-*"]),
            &one,
        )
        .expect("render");
        let live = as_live(&m, &v);
        assert_eq!(coverage_gaps(&enforcing, &live, false), vec![]);
        assert_eq!(coverage_gaps(&auditing, &live, false).len(), 2);
    }

    #[test]
    fn excluded_namespaces_cannot_be_in_scope() {
        let p = policy_with(&["runner-*"]);
        let err = configurations(&p, &Options::service("runner-fence", "runner-fence"))
            .expect_err("covers own namespace");
        assert!(err.to_string().contains("runner-fence"), "{err}");
    }

    #[test]
    fn cel_strings_are_escaped() {
        assert_eq!(cel_string("a'b\\c"), "'a\\'b\\\\c'");
    }
}
