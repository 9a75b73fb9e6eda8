//! Loading a policy: YAML (or JSON) text to a checked [`Policy`].

use std::fmt;
use std::path::Path;

use super::locate::{Seg, format_path, locate};
use super::yaml;
use super::{
    API_VERSION, KIND, LabelSelector, Operator, Policy, Profile, ProtectedNodes, Requests,
    TolerationOperator,
};

mod object;

pub use object::{GROUP, OBJECT_KIND, PLURAL, VERSION};

/// The reference policy, compiled into the binary as the default.
pub const EMBEDDED_POLICY: &str = include_str!("../../../examples/policy.yaml");

/// Where the embedded policy says it comes from in messages.
const EMBEDDED_NAME: &str = "<embedded reference policy>";

/// Largest policy file accepted; a policy is a few KiB, anything near this is a mistake.
const MAX_POLICY_BYTES: u64 = 1 << 20;

/// A policy that could not be loaded, with where and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct LoadError {
    /// File name (or `<embedded reference policy>`, `<stdin>`).
    pub file: String,
    /// 1-based line, when known.
    pub line: Option<u64>,
    /// 1-based column, when known.
    pub column: Option<u64>,
    /// Field path such as `placement.default`, empty for whole-document errors.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
            if let Some(c) = self.column {
                write!(f, ":{c}")?;
            }
        }
        if !self.path.is_empty() {
            write!(f, ": {}", self.path)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// The embedded reference policy.
pub fn embedded() -> Result<Policy, LoadError> {
    parse(EMBEDDED_POLICY, EMBEDDED_NAME)
}

/// The policy `--policy` names, or the embedded reference policy: what every
/// verb and the server load.
pub fn load(path: Option<&Path>) -> Result<Policy, LoadError> {
    let (text, name) = source(path)?;
    parse(&text, &name)
}

/// The text of the policy `--policy` names, or of the embedded reference
/// policy, with the name errors give it.
pub fn source(path: Option<&Path>) -> Result<(String, String), LoadError> {
    match path {
        Some(p) => Ok((read_file(p)?, p.display().to_string())),
        None => Ok((EMBEDDED_POLICY.to_string(), EMBEDDED_NAME.to_string())),
    }
}

/// Reads and checks a policy file.
pub fn load_file(path: &Path) -> Result<Policy, LoadError> {
    parse(&read_file(path)?, &path.display().to_string())
}

/// Reads a policy file's text (size and UTF-8 checked), without parsing it.
fn read_file(path: &Path) -> Result<String, LoadError> {
    let file = path.display().to_string();
    let io_err = |message: String| LoadError {
        file: file.clone(),
        line: None,
        column: None,
        path: String::new(),
        message,
    };
    let meta = std::fs::metadata(path).map_err(|e| io_err(format!("cannot read: {e}")))?;
    if meta.len() > MAX_POLICY_BYTES {
        return Err(io_err(format!(
            "file is {} bytes, more than the {MAX_POLICY_BYTES} a policy may have",
            meta.len()
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| io_err(format!("cannot read: {e}")))?;
    String::from_utf8(bytes).map_err(|_| io_err("file is not UTF-8 text".into()))
}

/// Parses and checks policy text; `file` names it in errors. The text is a
/// plain `RunnerPolicy` file or a `RunnerFencePolicy` object (SPEC §12).
pub fn parse(src: &str, file: &str) -> Result<Policy, LoadError> {
    // Not YAML, or several documents: say that, rather than the first unknown
    // field a typed read meets before it.
    deserialize::<serde::de::IgnoredAny>(src, file)?;
    if object::is_object(src) {
        return object::parse(src, file);
    }
    let policy: Policy = deserialize(src, file)?;
    checked(policy, src, file, &[])
}

/// Reads one YAML (or JSON) document as data, with the loader's YAML options
/// and error wording (what a document of any kind is, before its kind is known).
pub(crate) fn parse_data(src: &str, file: &str) -> Result<serde_json::Value, LoadError> {
    deserialize(src, file)
}

/// Deserializes `src` as YAML 1.2 core data; errors with the field path and line:column.
pub(super) fn deserialize<T: serde::de::DeserializeOwned>(
    src: &str,
    file: &str,
) -> Result<T, LoadError> {
    yaml::from_str(src, file)
}

/// `policy` if it passes the semantic checks; else the first error, located
/// in `src` (where the policy's fields sit under `prefix`).
pub(super) fn checked(
    policy: Policy,
    src: &str,
    file: &str,
    prefix: &[Seg],
) -> Result<Policy, LoadError> {
    if let Some((path, message)) = check(&policy).into_iter().next() {
        let path: Vec<Seg> = prefix.iter().cloned().chain(path).collect();
        let (line, column) = locate(src, &path).unzip();
        return Err(LoadError {
            file: file.to_string(),
            line,
            column,
            path: format_path(&path),
            message,
        });
    }
    Ok(policy)
}

fn key(s: &str) -> Seg {
    Seg::Key(s.to_string())
}

fn keys(parts: &[&str]) -> Vec<Seg> {
    parts.iter().map(|p| key(p)).collect()
}

/// DNS-1123 label characters (a prefix may end in `-`).
fn valid_namespace(s: &str) -> bool {
    s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
}

/// Label values name profiles, so profile names must be valid label values.
fn valid_label_value(s: &str) -> bool {
    s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && s.chars().next().is_none_or(|c| c.is_ascii_alphanumeric())
        && s.chars().last().is_none_or(|c| c.is_ascii_alphanumeric())
}

/// Load errors, each with its field path, in the order they are reported.
type Errors = Vec<(Vec<Seg>, String)>;

/// Semantic checks the type system cannot express; each with its field path.
fn check(p: &Policy) -> Errors {
    let mut errs = Vec::new();
    check_kind(p, &mut errs);
    check_namespaces(p, &mut errs);
    errs.extend(removed_exemptions(p));
    check_protected_nodes(&p.protected_nodes, &mut errs);
    for (i, sel) in p.fargate.selectors.iter().enumerate() {
        if sel.namespace.is_empty() {
            errs.push((
                vec![
                    key("fargate"),
                    key("selectors"),
                    Seg::Index(i),
                    key("namespace"),
                ],
                "must name the namespace of the EKS Fargate profile selector".into(),
            ));
        }
    }
    check_placement(p, &mut errs);
    for (name, prof) in &p.placement.profiles {
        check_profile(p, name, prof, &mut errs);
    }
    for (role, req) in role_requests(&p.resources.defaults) {
        errs.extend(negative(req, keys(&["resources", "defaults", role])));
    }
    if let Some(max) = &p.resources.max {
        errs.extend(negative(max, keys(&["resources", "max"])));
    }
    errs
}

fn check_kind(p: &Policy, errs: &mut Errors) {
    if p.api_version != API_VERSION {
        errs.push((
            keys(&["apiVersion"]),
            format!("must be {API_VERSION}, got {:?}", p.api_version),
        ));
    }
    if p.kind != KIND {
        errs.push((keys(&["kind"]), format!("must be {KIND}, got {:?}", p.kind)));
    }
}

/// `match.namespaces`: names or `prefix*`, never covering kube-system.
fn check_namespaces(p: &Policy, errs: &mut Errors) {
    if p.matching.namespaces.is_empty() {
        errs.push((
            keys(&["match", "namespaces"]),
            "must list at least one runner namespace".into(),
        ));
    }
    for (i, ns) in p.matching.namespaces.iter().enumerate() {
        let body = ns.strip_suffix('*').unwrap_or(ns);
        if ns.is_empty() || ns == "*" || body.contains('*') {
            errs.push((
                vec![key("match"), key("namespaces"), Seg::Index(i)],
                format!(
                    "{ns:?} is not a namespace or a prefix ending in `*` (a bare `*` would match kube-system)"
                ),
            ));
        } else if !valid_namespace(body) {
            errs.push((
                vec![key("match"), key("namespaces"), Seg::Index(i)],
                format!("{ns:?} is not a namespace name (lowercase letters, digits and '-', at most 63) or such a prefix followed by `*`"),
            ));
        } else if super::namespace_pattern_matches(ns, "kube-system") {
            errs.push((
                vec![key("match"), key("namespaces"), Seg::Index(i)],
                format!("{ns:?} covers kube-system, which the webhooks never review; name the runner namespaces"),
            ));
        }
    }
}

fn check_protected_nodes(pn: &ProtectedNodes, errs: &mut Errors) {
    if pn.names.is_empty()
        && pn.match_labels.is_empty()
        && pn.match_expressions.is_empty()
        && pn.taints.is_empty()
    {
        errs.push((
            keys(&["protectedNodes"]),
            "protects nothing: give names, matchLabels, matchExpressions or taints".into(),
        ));
    }
    for (i, r) in pn.match_expressions.iter().enumerate() {
        if let Some(m) = requirement_error(r) {
            errs.push((
                vec![
                    key("protectedNodes"),
                    key("matchExpressions"),
                    Seg::Index(i),
                ],
                m,
            ));
        }
    }
    for (i, t) in pn.taints.iter().enumerate() {
        if t.key.is_empty() {
            errs.push((
                vec![
                    key("protectedNodes"),
                    key("taints"),
                    Seg::Index(i),
                    key("key"),
                ],
                "taint key must not be empty".into(),
            ));
        }
    }
}

/// The profile label, the profiles and the default profile.
fn check_placement(p: &Policy, errs: &mut Errors) {
    if p.placement.profile_label.is_empty() {
        errs.push((
            keys(&["placement", "profileLabel"]),
            "must not be empty".into(),
        ));
    }
    if p.placement.profiles.is_empty() {
        errs.push((
            keys(&["placement", "profiles"]),
            "must define at least one profile".into(),
        ));
    } else if let Some(default) = p.placement.profiles.get(&p.placement.default) {
        for ns in &p.matching.namespaces {
            if !default.allowed_pattern(ns) {
                errs.push((
                    keys(&["placement", "profiles", &p.placement.default, "namespaces"]),
                    format!("the default profile must be usable in every runner namespace, but {ns:?} is not listed (pods without a profile label there would all be denied)"),
                ));
            }
        }
    }
    if !p.placement.profiles.is_empty() && !p.placement.profiles.contains_key(&p.placement.default)
    {
        errs.push((
            keys(&["placement", "default"]),
            format!(
                "default profile {:?} is not defined; known profiles: {}",
                p.placement.default,
                p.placement
                    .profiles
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
}

/// One profile: its name, selector, namespaces, requirements (which must
/// exclude protected nodes), tolerations, labels and resource defaults.
fn check_profile(p: &Policy, name: &str, prof: &Profile, errs: &mut Errors) {
    let base = || vec![key("placement"), key("profiles"), key(name)];
    if !valid_label_value(name) || name.is_empty() {
        errs.push((
            base(),
            format!("profile name {name:?} is not a valid label value (pods select it by label)"),
        ));
    }
    if let Some(sel) = &prof.selector {
        let mut path = base();
        path.push(key("selector"));
        check_selector(sel, path, errs);
    }
    for (i, ns) in prof.namespaces.iter().flatten().enumerate() {
        if !p
            .matching
            .namespaces
            .iter()
            .any(|outer| super::pattern_within(ns, outer))
        {
            let mut path = base();
            path.extend([key("namespaces"), Seg::Index(i)]);
            errs.push((path, format!("{ns:?} is not within match.namespaces; a profile can only be restricted to runner namespaces")));
        }
    }
    let pn = &p.protected_nodes;
    if pn.reachable_from(&prof.required_node_labels) {
        let conflict = pn
            .label_requirements()
            .map(|r| r.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let mut path = base();
        path.push(key("requiredNodeLabels"));
        errs.push((path, format!(
            "do not exclude protected nodes ({conflict}): a protected node could satisfy this profile, so its pods could reach GitLab's nodes; require a label protected nodes lack (e.g. workload In [gitlab-runner]) or narrow protectedNodes (e.g. eks.amazonaws.com/compute-type NotIn [fargate])"
        )));
    }
    for (i, r) in prof.required_node_labels.iter().enumerate() {
        if let Some(m) = requirement_error(r) {
            let mut path = base();
            path.extend([key("requiredNodeLabels"), Seg::Index(i)]);
            errs.push((path, m));
        }
    }
    for (i, t) in prof.tolerations.iter().enumerate() {
        let mut path = base();
        path.extend([key("tolerations"), Seg::Index(i)]);
        let exists = t.operator == Some(TolerationOperator::Exists);
        if exists && t.value.as_deref().is_some_and(|v| !v.is_empty()) {
            errs.push((path, "operator Exists takes no value".into()));
        } else if !exists && t.key.as_deref().unwrap_or("").is_empty() {
            errs.push((path, "operator Equal needs a key".into()));
        }
    }
    for (k, v) in &prof.pod_labels {
        if k.is_empty() || !valid_label_value(v) {
            let mut path = base();
            path.extend([key("podLabels"), key(k)]);
            errs.push((path, format!("{k:?}: {v:?} is not a valid label")));
        }
    }
    if let Some(r) = &prof.resources {
        for (role, req) in role_requests(&r.defaults) {
            let mut path = base();
            path.extend([key("resources"), key("defaults"), key(role)]);
            errs.extend(negative(req, path));
        }
    }
}

/// A profile's label selector (on pod labels: no Gt/Lt, never empty).
fn check_selector(sel: &LabelSelector, path: Vec<Seg>, errs: &mut Errors) {
    if sel.is_empty() {
        errs.push((path.clone(), "is empty and would select every pod; give matchLabels or matchExpressions, or remove it".into()));
    }
    for (i, r) in sel.match_expressions.iter().enumerate() {
        let mut path = path.clone();
        path.extend([key("matchExpressions"), Seg::Index(i)]);
        if matches!(r.operator, Operator::Gt | Operator::Lt) {
            errs.push((
                path,
                format!(
                    "operator {} is not allowed in a label selector",
                    r.operator.as_str()
                ),
            ));
        } else if let Some(m) = requirement_error(r) {
            errs.push((path, m));
        }
    }
}

/// The old exemption fields: each is now a load error that says what to write instead.
fn removed_exemptions(p: &Policy) -> Errors {
    let m = &p.matching;
    let mut errs = Vec::new();
    let fenced = "every pod in match.namespaces is fenced, whatever its name or labels (an attacker writes both)";
    if m.pod_name_prefixes.is_some() {
        errs.push((
            keys(&["match", "podNamePrefixes"]),
            format!("no longer exempts pods: {fenced}; remove it (job pods are chosen by namespace only)"),
        ));
    }
    if m.require_labels.is_some() {
        errs.push((
            keys(&["match", "requireLabels"]),
            format!("no longer exempts pods: {fenced}; remove it, and to give pods with a label their own profile use placement.profiles.NAME.selector: {{matchExpressions: [{{key: LABEL, operator: Exists}}]}}"),
        ));
    }
    if m.exclude.is_some() {
        errs.push((
            keys(&["match", "exclude"]),
            format!("no longer exempts pods: {fenced}, the runner manager included; remove it, and to give those pods their own profile use placement.profiles.NAME.selector: {{matchLabels: {{...}}}}"),
        ));
    }
    errs
}

fn role_requests(d: &super::RoleDefaults) -> Vec<(&'static str, &Requests)> {
    [
        ("build", &d.build),
        ("helper", &d.helper),
        ("service", &d.service),
        ("init", &d.init),
    ]
    .into_iter()
    .filter_map(|(n, r)| r.as_ref().map(|r| (n, r)))
    .collect()
}

fn negative(r: &Requests, path: Vec<Seg>) -> Errors {
    [("cpu", &r.cpu), ("memory", &r.memory)]
        .into_iter()
        .filter_map(|(n, q)| {
            let q = q.as_ref()?;
            (!q.is_positive()).then(|| {
                let mut p = path.clone();
                p.push(key(n));
                (p, format!("{q} must be greater than zero"))
            })
        })
        .collect()
}

fn requirement_error(r: &super::Requirement) -> Option<String> {
    if r.key.is_empty() {
        return Some("key must not be empty".into());
    }
    match r.operator {
        Operator::In | Operator::NotIn if r.values.is_empty() => Some(format!(
            "operator {} needs at least one value",
            r.operator.as_str()
        )),
        Operator::Exists | Operator::DoesNotExist if !r.values.is_empty() => {
            Some(format!("operator {} takes no values", r.operator.as_str()))
        }
        Operator::Gt | Operator::Lt
            if r.values.len() != 1 || r.values[0].parse::<i64>().is_err() =>
        {
            Some(format!(
                "operator {} needs exactly one integer value",
                r.operator.as_str()
            ))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn reference() -> String {
        EMBEDDED_POLICY.to_string()
    }

    #[test]
    fn embedded_reference_policy_loads() {
        let p = embedded().expect("reference policy");
        assert_eq!(p.placement.default, "runner-nodes");
        assert_eq!(p.placement.profiles.len(), 2);
        assert!(p.matching.pod_name_prefixes.is_none() && p.matching.exclude.is_none());
        assert!(p.fargate_selects(
            "gitlab-runner",
            &[("use-fargate".to_string(), "true".to_string())].into()
        ));
        assert_eq!(
            p.rule_mode(super::super::RuleId::Resources),
            super::super::Mode::Audit
        );
        assert_eq!(
            p.rule_mode(super::super::RuleId::Placement),
            super::super::Mode::Enforce
        );
    }

    #[rstest]
    #[case::unknown_field(
        "allowNodeName: false",
        "allowNodeNames: false",
        "unknown field `allowNodeNames`",
        ""
    )]
    #[case::name_prefix_exemption(
        "namespaces: [gitlab-runner]\n",
        "namespaces: [gitlab-runner]\n  podNamePrefixes: [runner-]\n",
        "no longer exempts pods",
        "match.podNamePrefixes"
    )]
    #[case::label_exemption(
        "namespaces: [gitlab-runner]\n",
        "namespaces: [gitlab-runner]\n  exclude:\n    labels: {app: gitlab-runner}\n",
        "placement.profiles.NAME.selector",
        "match.exclude"
    )]
    #[case::require_labels_exemption(
        "namespaces: [gitlab-runner]\n",
        "namespaces: [gitlab-runner]\n  requireLabels: [job.runner.gitlab.com/pod]\n",
        "operator: Exists",
        "match.requireLabels"
    )]
    #[case::profile_reaches_protected_nodes(
        "{key: workload, operator: In, values: [gitlab-runner]}",
        "{key: zone, operator: In, values: [a]}",
        "do not exclude protected nodes",
        "placement.profiles.runner-nodes.requiredNodeLabels"
    )]
    #[case::protected_nodes_include_fargate(
        "operator: NotIn, values: [fargate]}",
        "operator: NotIn, values: [auto]}",
        "do not exclude protected nodes",
        "placement.profiles.fargate.requiredNodeLabels"
    )]
    #[case::profile_outside_runner_namespaces(
        "      fargate: true\n",
        "      fargate: true\n      namespaces: [default]\n",
        "not within match.namespaces",
        "placement.profiles.fargate.namespaces[0]"
    )]
    #[case::default_profile_restricted(
        "    runner-nodes:\n",
        "    runner-nodes:\n      namespaces: [other]\n",
        "default profile must be usable",
        "placement.profiles.runner-nodes.namespaces"
    )]
    #[case::selector_gt(
        "matchLabels: {use-fargate: \"true\"}",
        "matchExpressions: [{key: n, operator: Gt, values: [\"1\"]}]",
        "not allowed in a label selector",
        "placement.profiles.fargate.selector.matchExpressions[0]"
    )]
    #[case::kube_system(
        "namespaces: [gitlab-runner]",
        "namespaces: [gitlab-runner, kube-*]",
        "covers kube-system",
        "match.namespaces[1]"
    )]
    #[case::bad_namespace(
        "namespaces: [gitlab-runner]",
        "namespaces: [GitLab_Runner]",
        "is not a namespace name",
        "match.namespaces[0]"
    )]
    #[case::bad_quantity(
        "cpu: 500m, memory: 1Gi",
        "cpu: 2 cores, memory: 1Gi",
        "invalid quantity \"2 cores\"",
        "resources.defaults.build.cpu"
    )]
    #[case::wrong_type(
        "allowNodeName: false",
        "allowNodeName: sometimes",
        "boolean",
        "allowNodeName"
    )]
    #[case::bad_mode("mode: enforce ", "mode: block ", "block", "mode")]
    #[case::bad_rule(
        "resources: audit\nmatch",
        "resource: audit\nmatch",
        "resource",
        "rules"
    )]
    #[case::missing_default(
        "default: runner-nodes",
        "default: runners",
        "default profile \"runners\" is not defined; known profiles: fargate, runner-nodes",
        "placement.default"
    )]
    #[case::empty_namespaces(
        "namespaces: [gitlab-runner]",
        "namespaces: []",
        "at least one runner namespace",
        "match.namespaces"
    )]
    #[case::star_namespace(
        "namespaces: [gitlab-runner]",
        "namespaces: [\"*\"]",
        "kube-system",
        "match.namespaces[0]"
    )]
    #[case::duplicate_profile(
        "    fargate:\n",
        "    runner-nodes:\n",
        "key \"runner-nodes\" appears twice",
        "placement.profiles.runner-nodes"
    )]
    #[case::bad_operator(
        "operator: In, values: [gitlab-runner]",
        "operator: Within, values: [gitlab-runner]",
        "Within",
        ""
    )]
    #[case::in_without_values(
        "{key: workload, operator: In, values: [gitlab-runner]}",
        "{key: workload, operator: In, values: []}",
        "needs at least one value",
        "placement.profiles.runner-nodes.requiredNodeLabels[0]"
    )]
    #[case::wrong_api_version(
        "runner-fence.dev/v1alpha1",
        "runner-fence.dev/v2",
        "must be runner-fence.dev/v1alpha1",
        "apiVersion"
    )]
    fn broken_policies_are_rejected_with_location(
        #[case] from: &str,
        #[case] to: &str,
        #[case] message: &str,
        #[case] path: &str,
    ) {
        let src = reference();
        assert!(
            src.contains(from),
            "fixture text {from:?} not in reference policy"
        );
        let broken = src.replacen(from, to, 1);
        let err = parse(&broken, "policy.yaml").expect_err("must be rejected");
        let shown = err.to_string();
        assert!(shown.starts_with("policy.yaml:"), "{shown}");
        assert!(
            err.line.is_some() && err.column.is_some(),
            "no location: {shown}"
        );
        assert!(shown.contains(message), "{shown} lacks {message}");
        assert!(err.path.contains(path), "path {} lacks {path}", err.path);
        // The reported line holds the offending text (or its parent key).
        let line = err.line.unwrap_or(0) as usize;
        assert!(line >= 1 && line <= broken.lines().count(), "{shown}");
    }

    #[test]
    fn location_points_at_the_bad_value() {
        let broken = reference().replacen("cpu: 500m", "cpu: 2 cores", 1);
        let err = parse(&broken, "p.yaml").expect_err("bad quantity");
        let line = broken
            .lines()
            .nth(err.line.unwrap_or(1) as usize - 1)
            .unwrap_or("");
        assert!(line.contains("2 cores"), "line {line:?} for {err}");
    }

    #[rstest]
    #[case::empty("")]
    #[case::not_a_map("- a\n- b\n")]
    #[case::truncated("apiVersion: runner-fence.dev/v1alpha1\nkind: [")]
    #[case::binary("\u{0}\u{1}\u{2}")]
    #[case::tabs("\tmode: enforce")]
    fn garbage_is_an_error_not_a_panic(#[case] src: &str) {
        let err = parse(src, "g.yaml").expect_err("garbage");
        assert!(err.to_string().starts_with("g.yaml"), "{err}");
    }

    #[test]
    fn missing_file_is_named() {
        let err = load_file(Path::new("/nonexistent/policy.yaml")).expect_err("missing");
        assert!(
            err.to_string()
                .contains("/nonexistent/policy.yaml: cannot read"),
            "{err}"
        );
    }

    #[test]
    fn json_policies_load_too() {
        let p = embedded().expect("reference");
        let json = serde_json::to_string(&p).expect("json");
        let back = parse(&json, "p.json").expect("json is YAML");
        assert_eq!(back.content_hash(), p.content_hash());
    }
}
