//! Which runner service accounts RBAC lets make pods where the policy does not
//! fence them: create pods (directly, by binding them or through a
//! controller), add ephemeral containers, or create namespaces. A pure
//! function of the listed RBAC objects, matched the way the apiserver's RBAC
//! authorizer matches rules, so it is tested without an API server.
//!
//! Aggregated ClusterRoles are read as stored (the aggregation controller
//! writes their rules); a binding to a role that does not exist grants nothing.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, Subject,
};
use serde::Serialize;

use crate::core::policy::Match;

/// A request that ends in a pod the fence never sees (or a namespace), as RBAC names it.
struct Target {
    /// How messages name it: `resource[/subresource][.group]`.
    name: &'static str,
    group: &'static str,
    resource: &'static str,
    subresource: &'static str,
    verbs: &'static [&'static str],
    /// Cluster-scoped: only a ClusterRoleBinding can grant it.
    cluster: bool,
}

const CREATE: &[&str] = &["create"];
/// Controllers whose pod template can be changed: an update makes new pods.
const TEMPLATE: &[&str] = &["create", "update", "patch"];

const fn target(
    name: &'static str,
    group: &'static str,
    resource: &'static str,
    subresource: &'static str,
    verbs: &'static [&'static str],
) -> Target {
    Target {
        name,
        group,
        resource,
        subresource,
        verbs,
        cluster: false,
    }
}

const TARGETS: &[Target] = &[
    target("pods", "", "pods", "", CREATE),
    target("pods/binding", "", "pods", "binding", CREATE),
    target("bindings", "", "bindings", "", CREATE),
    // Ephemeral containers are added with an update or patch of the subresource.
    target(
        "pods/ephemeralcontainers",
        "",
        "pods",
        "ephemeralcontainers",
        &["update", "patch"],
    ),
    target(
        "replicationcontrollers",
        "",
        "replicationcontrollers",
        "",
        TEMPLATE,
    ),
    target("deployments.apps", "apps", "deployments", "", TEMPLATE),
    target("replicasets.apps", "apps", "replicasets", "", TEMPLATE),
    target("statefulsets.apps", "apps", "statefulsets", "", TEMPLATE),
    target("daemonsets.apps", "apps", "daemonsets", "", TEMPLATE),
    // A Job's template is immutable; a CronJob's is not.
    target("jobs.batch", "batch", "jobs", "", CREATE),
    target("cronjobs.batch", "batch", "cronjobs", "", TEMPLATE),
    Target {
        cluster: true,
        ..target("namespaces", "", "namespaces", "", CREATE)
    },
];

/// A service account, by namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ServiceAccountRef {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl fmt::Display for ServiceAccountRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// The RBAC objects of a cluster, as listed.
#[derive(Clone, Copy, Debug, Default)]
pub struct Objects<'a> {
    /// Roles (only those outside the runner namespaces matter).
    pub roles: &'a [Role],
    /// ClusterRoles.
    pub cluster_roles: &'a [ClusterRole],
    /// RoleBindings (only those outside the runner namespaces matter).
    pub role_bindings: &'a [RoleBinding],
    /// ClusterRoleBindings.
    pub cluster_role_bindings: &'a [ClusterRoleBinding],
    /// Service accounts known to exist in the runner namespaces, to name the
    /// members of a group subject.
    pub service_accounts: &'a [ServiceAccountRef],
}

/// One verb on one resource that ends in a pod outside the fence (or a namespace).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Power {
    /// `create`, `update` or `patch`.
    pub verb: &'static str,
    /// `resource[/subresource][.group]`, e.g. `pods`, `pods/binding`, `deployments.apps`.
    pub resource: &'static str,
    /// Only the objects of these names (`resourceNames`); empty: any.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub only_named: Vec<String>,
}

/// Where a grant applies.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(tag = "scope", content = "namespace", rename_all = "snake_case")]
pub enum Scope {
    /// Every namespace (a ClusterRoleBinding), the uncovered ones included.
    EveryNamespace,
    /// Cluster-scoped objects (namespaces), through a ClusterRoleBinding.
    Cluster,
    /// One namespace the policy does not cover (a RoleBinding there).
    Namespace(String),
}

/// Who holds the grant.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Who {
    /// One service account of a runner namespace (a `ServiceAccount` subject,
    /// or a `User` subject with its `system:serviceaccount:NS:NAME` name).
    ServiceAccount(ServiceAccountRef),
    /// A group every service account of the runner namespaces (or of one of
    /// them) belongs to: `system:serviceaccounts`, `system:serviceaccounts:NS`
    /// or `system:authenticated`.
    Group {
        /// The group.
        name: String,
        /// Its members among the listed service accounts of the runner namespaces.
        members: Vec<ServiceAccountRef>,
    },
}

/// An RBAC object named on the path of a grant.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct ObjectRef {
    /// `RoleBinding`, `ClusterRoleBinding`, `Role` or `ClusterRole`.
    pub kind: String,
    /// Namespace, for RoleBindings and Roles.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {ns}/{}", self.kind, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

/// The subject of a binding as it is written there.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct SubjectRef {
    /// `ServiceAccount`, `Group` or `User`.
    pub kind: String,
    /// Name.
    pub name: String,
    /// Namespace, for a `ServiceAccount` subject that names one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// A runner service account's way out of the fence, with the path that grants it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Reach {
    /// Who can.
    pub who: Who,
    /// Where.
    pub scope: Scope,
    /// What, in the order of the resources above.
    pub powers: Vec<Power>,
    /// The binding.
    pub binding: ObjectRef,
    /// The role it refers to.
    pub role: ObjectRef,
    /// The binding's subject that matched.
    pub subject: SubjectRef,
}

/// Every grant that lets a service account of a runner namespace create pods
/// (or pod controllers, bindings, ephemeral containers) in a namespace `scope`
/// does not cover, or create namespaces. Grants inside the runner namespaces
/// are fenced and not reported.
pub fn reach(scope: &Match, objects: &Objects<'_>) -> Vec<Reach> {
    let cluster_roles: HashMap<&str, &[PolicyRule]> = objects
        .cluster_roles
        .iter()
        .filter_map(|r| Some((r.metadata.name.as_deref()?, rules(&r.rules))))
        .collect();
    let roles: HashMap<(&str, &str), &[PolicyRule]> = objects
        .roles
        .iter()
        .filter_map(|r| {
            let key = (
                r.metadata.namespace.as_deref()?,
                r.metadata.name.as_deref()?,
            );
            Some((key, rules(&r.rules)))
        })
        .collect();
    let mut members: Vec<&ServiceAccountRef> = objects
        .service_accounts
        .iter()
        .filter(|sa| scope.covers(&sa.namespace))
        .collect();
    members.sort();
    members.dedup();
    let mut out = Vec::new();
    let mut push = |who: Who,
                    scope: Scope,
                    powers: &[Power],
                    binding: &ObjectRef,
                    role: &ObjectRef,
                    subject: &Subject| {
        if !powers.is_empty() {
            out.push(Reach {
                who,
                scope,
                powers: powers.to_vec(),
                binding: binding.clone(),
                role: role.clone(),
                subject: SubjectRef {
                    kind: subject.kind.clone(),
                    name: subject.name.clone(),
                    namespace: subject.namespace.clone().filter(|n| !n.is_empty()),
                },
            });
        }
    };
    for b in objects.cluster_role_bindings {
        let Some(name) = b.metadata.name.as_deref() else {
            continue;
        };
        if b.role_ref.kind != "ClusterRole" {
            continue;
        }
        let Some(role_rules) = cluster_roles.get(b.role_ref.name.as_str()) else {
            continue;
        };
        let (namespaced, cluster) = powers(role_rules);
        let binding = object("ClusterRoleBinding", None, name);
        let role = object("ClusterRole", None, &b.role_ref.name);
        for s in b.subjects.iter().flatten() {
            if let Some(who) = runner_subject(scope, s, None, &members) {
                push(
                    who.clone(),
                    Scope::EveryNamespace,
                    &namespaced,
                    &binding,
                    &role,
                    s,
                );
                push(who, Scope::Cluster, &cluster, &binding, &role, s);
            }
        }
    }
    for b in objects.role_bindings {
        let (Some(ns), Some(name)) = (b.metadata.namespace.as_deref(), b.metadata.name.as_deref())
        else {
            continue;
        };
        if scope.covers(ns) {
            continue;
        }
        let (role, role_rules) = match b.role_ref.kind.as_str() {
            "Role" => (
                object("Role", Some(ns), &b.role_ref.name),
                roles.get(&(ns, b.role_ref.name.as_str())),
            ),
            "ClusterRole" => (
                object("ClusterRole", None, &b.role_ref.name),
                cluster_roles.get(b.role_ref.name.as_str()),
            ),
            _ => continue,
        };
        let Some(role_rules) = role_rules else {
            continue;
        };
        // A RoleBinding grants namespaced requests in its namespace only.
        let (namespaced, _) = powers(role_rules);
        let binding = object("RoleBinding", Some(ns), name);
        for s in b.subjects.iter().flatten() {
            if let Some(who) = runner_subject(scope, s, Some(ns), &members) {
                let within = Scope::Namespace(ns.to_string());
                push(who, within, &namespaced, &binding, &role, s);
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

fn rules(r: &Option<Vec<PolicyRule>>) -> &[PolicyRule] {
    r.as_deref().unwrap_or_default()
}

fn object(kind: &str, namespace: Option<&str>, name: &str) -> ObjectRef {
    ObjectRef {
        kind: kind.to_string(),
        namespace: namespace.map(String::from),
        name: name.to_string(),
    }
}

/// The subject as a runner service account (or a group of them), if it is one.
/// A `ServiceAccount` subject without a namespace means the binding's own, as
/// the authorizer reads it (and nothing for a ClusterRoleBinding).
fn runner_subject(
    scope: &Match,
    s: &Subject,
    binding_namespace: Option<&str>,
    members: &[&ServiceAccountRef],
) -> Option<Who> {
    let one = |namespace: &str, name: &str| {
        (scope.covers(namespace) && !name.is_empty()).then(|| {
            Who::ServiceAccount(ServiceAccountRef {
                namespace: namespace.to_string(),
                name: name.to_string(),
            })
        })
    };
    match s.kind.as_str() {
        "ServiceAccount" => {
            let ns = s
                .namespace
                .as_deref()
                .filter(|n| !n.is_empty())
                .or(binding_namespace)?;
            one(ns, &s.name)
        }
        "User" => {
            let (ns, name) = s
                .name
                .strip_prefix("system:serviceaccount:")?
                .split_once(':')?;
            one(ns, name)
        }
        "Group" => {
            let of = |keep: &dyn Fn(&ServiceAccountRef) -> bool| Who::Group {
                name: s.name.clone(),
                members: members
                    .iter()
                    .filter(|m| keep(m))
                    .map(|m| (*m).clone())
                    .collect(),
            };
            match s.name.as_str() {
                "system:serviceaccounts" | "system:authenticated" => Some(of(&|_| true)),
                g => {
                    let ns = g.strip_prefix("system:serviceaccounts:")?;
                    scope.covers(ns).then(|| of(&|m| m.namespace == ns))
                }
            }
        }
        _ => None,
    }
}

/// What the rules allow of [`TARGETS`]: (namespaced, cluster-scoped) powers.
fn powers(rules: &[PolicyRule]) -> (Vec<Power>, Vec<Power>) {
    // None: any name; Some: only these.
    let mut granted: BTreeMap<(usize, usize), Option<BTreeSet<String>>> = BTreeMap::new();
    for rule in rules {
        for (ti, t) in TARGETS.iter().enumerate() {
            for (vi, verb) in t.verbs.iter().enumerate() {
                let Some(names) = allows(rule, t, verb) else {
                    continue;
                };
                let entry = granted
                    .entry((ti, vi))
                    .or_insert_with(|| Some(BTreeSet::new()));
                match (entry.as_mut(), names.is_empty()) {
                    (Some(_), true) => *entry = None,
                    (Some(set), false) => set.extend(names.iter().cloned()),
                    (None, _) => {}
                }
            }
        }
    }
    let mut namespaced = Vec::new();
    let mut cluster = Vec::new();
    for ((ti, vi), names) in granted {
        let t = &TARGETS[ti];
        let p = Power {
            verb: t.verbs[vi],
            resource: t.name,
            only_named: names.map(|n| n.into_iter().collect()).unwrap_or_default(),
        };
        if t.cluster {
            cluster.push(p);
        } else {
            namespaced.push(p);
        }
    }
    (namespaced, cluster)
}

/// Does `rule` allow `verb` on `t`? `Some(names)` when it does (empty: any
/// object), as the RBAC authorizer matches verbs, API groups, resources
/// (`*`, `resource/subresource`, `*/subresource`) and resource names.
fn allows(rule: &PolicyRule, t: &Target, verb: &str) -> Option<Vec<String>> {
    let any = |list: &[String], want: &str| list.iter().any(|x| x == "*" || x == want);
    if !any(&rule.verbs, verb) || !any(rules_list(&rule.api_groups), t.group) {
        return None;
    }
    let combined = if t.subresource.is_empty() {
        t.resource.to_string()
    } else {
        format!("{}/{}", t.resource, t.subresource)
    };
    let resource = rules_list(&rule.resources).iter().any(|r| {
        r == "*"
            || *r == combined
            || (!t.subresource.is_empty() && r.strip_prefix("*/") == Some(t.subresource))
    });
    if !resource {
        return None;
    }
    let names = rules_list(&rule.resource_names);
    // A create of a new object carries no name for resourceNames to match, so
    // such a rule never grants it (subresources carry the parent's name).
    if !names.is_empty() && verb == "create" && t.subresource.is_empty() {
        return None;
    }
    Some(names.to_vec())
}

fn rules_list(v: &Option<Vec<String>>) -> &[String] {
    v.as_deref().unwrap_or_default()
}

impl fmt::Display for Reach {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.who {
            Who::ServiceAccount(sa) => write!(f, "runner service account {sa}")?,
            Who::Group { name, members } if members.is_empty() => {
                write!(f, "runner service accounts (group {name})")?
            }
            Who::Group { name, members } => {
                let m: Vec<String> = members.iter().map(ToString::to_string).collect();
                write!(
                    f,
                    "runner service accounts (group {name}: {})",
                    m.join(", ")
                )?
            }
        }
        write!(f, " can {}", describe(&self.powers))?;
        match &self.scope {
            Scope::Namespace(ns) => write!(f, " in {ns}")?,
            Scope::EveryNamespace => f.write_str(" in every namespace")?,
            Scope::Cluster => {}
        }
        write!(f, " (via {} → {})", self.binding, self.role)
    }
}

/// `create pods, jobs.batch; create/update/patch deployments.apps`: resources
/// grouped by the verbs granted on them.
fn describe(powers: &[Power]) -> String {
    let mut by_resource: Vec<(String, Vec<&str>)> = Vec::new();
    for p in powers {
        let what = if p.only_named.is_empty() {
            p.resource.to_string()
        } else {
            format!("{} named {}", p.resource, p.only_named.join(", "))
        };
        match by_resource.iter_mut().find(|(r, _)| *r == what) {
            Some((_, verbs)) => verbs.push(p.verb),
            None => by_resource.push((what, vec![p.verb])),
        }
    }
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    for (what, verbs) in by_resource {
        let verbs = verbs.join("/");
        match groups.iter_mut().find(|(v, _)| *v == verbs) {
            Some((_, rs)) => rs.push(what),
            None => groups.push((verbs, vec![what])),
        }
    }
    groups
        .into_iter()
        .map(|(verbs, rs)| format!("{verbs} {}", rs.join(", ")))
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rstest::rstest;
    use serde_json::{Value, json};

    fn matching(namespaces: &[&str]) -> Match {
        serde_json::from_value(json!({"namespaces": namespaces})).expect("match")
    }

    fn from<T: serde::de::DeserializeOwned>(v: Value) -> T {
        serde_json::from_value(v).expect("rbac object")
    }

    fn cluster_role(name: &str, rules: Value) -> ClusterRole {
        from(json!({"metadata": {"name": name}, "rules": rules}))
    }

    fn role(ns: &str, name: &str, rules: Value) -> Role {
        from(json!({"metadata": {"name": name, "namespace": ns}, "rules": rules}))
    }

    fn crb(name: &str, role: &str, subjects: Value) -> ClusterRoleBinding {
        from(json!({"metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": subjects}))
    }

    fn rb(ns: &str, name: &str, kind: &str, role: &str, subjects: Value) -> RoleBinding {
        from(json!({"metadata": {"name": name, "namespace": ns},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": role},
            "subjects": subjects}))
    }

    fn runner_sa() -> Value {
        json!([{"kind": "ServiceAccount", "name": "runner", "namespace": "gitlab-runner"}])
    }

    fn sa(ns: &str, name: &str) -> ServiceAccountRef {
        ServiceAccountRef {
            namespace: ns.into(),
            name: name.into(),
        }
    }

    /// The reaches of one ClusterRole with `rules`, bound in namespace `build`
    /// (RoleBinding) and cluster-wide, to `subjects`.
    fn reach_of(rules: Value, subjects: Value) -> Vec<Reach> {
        let roles = [cluster_role("r", rules)];
        let rbs = [rb("build", "rb", "ClusterRole", "r", subjects.clone())];
        let crbs = [crb("crb", "r", subjects)];
        let sas = [
            sa("gitlab-runner", "runner"),
            sa("gitlab-runner", "default"),
            sa("other", "x"),
        ];
        reach(
            &matching(&["gitlab-runner"]),
            &Objects {
                cluster_roles: &roles,
                role_bindings: &rbs,
                cluster_role_bindings: &crbs,
                service_accounts: &sas,
                ..Objects::default()
            },
        )
    }

    fn texts(r: &[Reach]) -> Vec<String> {
        r.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn a_runner_account_that_can_create_pods_elsewhere_is_reported_with_the_path() {
        let r = reach_of(
            json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["create", "get"]}]),
            runner_sa(),
        );
        assert_eq!(
            texts(&r),
            [
                "runner service account gitlab-runner/runner can create pods in every namespace (via ClusterRoleBinding crb → ClusterRole r)",
                "runner service account gitlab-runner/runner can create pods in build (via RoleBinding build/rb → ClusterRole r)",
            ]
        );
        assert_eq!(r[0].scope, Scope::EveryNamespace);
        assert_eq!(r[0].who, Who::ServiceAccount(sa("gitlab-runner", "runner")));
        assert_eq!(r[1].scope, Scope::Namespace("build".into()));
        assert_eq!(
            r[1].powers,
            [Power {
                verb: "create",
                resource: "pods",
                only_named: vec![]
            }]
        );
    }

    #[rstest]
    #[case::get_only(json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch", "delete"]}]))]
    #[case::other_group(json!([{"apiGroups": ["extensions"], "resources": ["deployments", "pods"], "verbs": ["create"]}]))]
    #[case::no_group(json!([{"resources": ["pods"], "verbs": ["create"]}]))]
    #[case::other_subresource(json!([{"apiGroups": [""], "resources": ["pods/exec", "pods/eviction", "*/status"], "verbs": ["*"]}]))]
    #[case::create_by_name(json!([{"apiGroups": ["", "apps"], "resources": ["pods", "deployments", "namespaces"], "verbs": ["create"], "resourceNames": ["x"]}]))]
    #[case::job_update(json!([{"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["update", "patch"]}]))]
    #[case::non_resource(json!([{"nonResourceURLs": ["*"], "verbs": ["*"]}]))]
    #[case::no_rules(json!([]))]
    fn rules_that_make_no_pod_are_not_reported(#[case] rules: Value) {
        assert_eq!(texts(&reach_of(rules, runner_sa())), Vec::<String>::new());
    }

    #[rstest]
    #[case::wildcards(json!([{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]), "create pods, pods/binding, bindings, jobs.batch; update/patch pods/ephemeralcontainers; create/update/patch replicationcontrollers, deployments.apps, replicasets.apps, statefulsets.apps, daemonsets.apps, cronjobs.batch")]
    #[case::star_verb(json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["*"]}]), "create pods")]
    #[case::star_resource(json!([{"apiGroups": ["batch"], "resources": ["*"], "verbs": ["create"]}]), "create jobs.batch, cronjobs.batch")]
    #[case::star_group(json!([{"apiGroups": ["*"], "resources": ["deployments"], "verbs": ["patch"]}]), "patch deployments.apps")]
    #[case::binding(json!([{"apiGroups": [""], "resources": ["pods/binding"], "verbs": ["create"]}]), "create pods/binding")]
    #[case::star_subresource(json!([{"apiGroups": [""], "resources": ["*/binding", "*/ephemeralcontainers"], "verbs": ["create", "patch"]}]), "create pods/binding; patch pods/ephemeralcontainers")]
    #[case::legacy_binding(json!([{"apiGroups": [""], "resources": ["bindings"], "verbs": ["create"]}]), "create bindings")]
    #[case::named_update(json!([{"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["update", "create"], "resourceNames": ["coredns"]}]), "update deployments.apps named coredns")]
    #[case::named_and_any(json!([{"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["patch"], "resourceNames": ["a"]},
                                {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["patch"]}]), "patch deployments.apps")]
    #[case::named_binding(json!([{"apiGroups": [""], "resources": ["pods/binding"], "verbs": ["create"], "resourceNames": ["p"]}]), "create pods/binding named p")]
    #[case::controllers(json!([{"apiGroups": ["apps", "batch", ""], "resources": ["daemonsets", "statefulsets", "replicasets", "jobs", "cronjobs", "replicationcontrollers"], "verbs": ["create"]}]),
        "create replicationcontrollers, replicasets.apps, statefulsets.apps, daemonsets.apps, jobs.batch, cronjobs.batch")]
    fn what_makes_pods(#[case] rules: Value, #[case] can: &str) {
        let r = reach_of(rules, runner_sa());
        let ns = r
            .iter()
            .find(|x| x.scope == Scope::Namespace("build".into()))
            .expect("reported in build");
        assert_eq!(describe(&ns.powers), can);
        assert!(
            r.iter()
                .any(|x| x.scope == Scope::EveryNamespace && x.powers == ns.powers)
        );
    }

    #[test]
    fn creating_namespaces_takes_a_cluster_role_binding() {
        let r = reach_of(
            json!([{"apiGroups": [""], "resources": ["namespaces"], "verbs": ["create"]}]),
            runner_sa(),
        );
        assert_eq!(
            texts(&r),
            [
                "runner service account gitlab-runner/runner can create namespaces (via ClusterRoleBinding crb → ClusterRole r)"
            ]
        );
        assert_eq!(r[0].scope, Scope::Cluster);
    }

    #[rstest]
    #[case::all_service_accounts("system:serviceaccounts", true)]
    #[case::authenticated("system:authenticated", true)]
    #[case::runner_namespace("system:serviceaccounts:gitlab-runner", true)]
    #[case::other_namespace("system:serviceaccounts:other", false)]
    #[case::other_group("developers", false)]
    #[case::prefix_is_not_a_group("system:serviceaccounts:gitlab", false)]
    fn group_subjects(#[case] group: &str, #[case] reported: bool) {
        let r = reach_of(
            json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["create"]}]),
            json!([{"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": group}]),
        );
        assert_eq!(r.len(), if reported { 2 } else { 0 }, "{:?}", texts(&r));
        for x in &r {
            // Only the runner namespaces' accounts are named, never `other/x`.
            assert_eq!(
                x.who,
                Who::Group {
                    name: group.into(),
                    members: vec![
                        sa("gitlab-runner", "default"),
                        sa("gitlab-runner", "runner")
                    ]
                }
            );
            assert!(
                x.to_string().starts_with(&format!(
                    "runner service accounts (group {group}: gitlab-runner/default, gitlab-runner/runner) can create pods in "
                )),
                "{x}"
            );
        }
    }

    #[rstest]
    #[case::sa_elsewhere(json!([{"kind": "ServiceAccount", "name": "runner", "namespace": "other"}]), 0)]
    // Without a namespace, a RoleBinding's ServiceAccount subject is in the
    // binding's namespace (`build`: not a runner account); in a
    // ClusterRoleBinding it names nobody.
    #[case::sa_without_namespace(json!([{"kind": "ServiceAccount", "name": "runner"}]), 0)]
    #[case::user_form(json!([{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "system:serviceaccount:gitlab-runner:runner"}]), 2)]
    #[case::user_elsewhere(json!([{"kind": "User", "name": "system:serviceaccount:other:runner"}]), 0)]
    #[case::plain_user(json!([{"kind": "User", "name": "gitlab-runner"}]), 0)]
    #[case::twice(json!([{"kind": "ServiceAccount", "name": "runner", "namespace": "gitlab-runner"},
                         {"kind": "ServiceAccount", "name": "runner", "namespace": "gitlab-runner"}]), 2)]
    fn which_subjects_are_runner_accounts(#[case] subjects: Value, #[case] n: usize) {
        let r = reach_of(
            json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["create"]}]),
            subjects,
        );
        assert_eq!(r.len(), n, "{:?}", texts(&r));
    }

    #[test]
    fn grants_inside_the_fence_and_to_missing_roles_are_not_reported() {
        let pods = json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["create"]}]);
        let roles = [
            role("build", "pod-maker", pods.clone()),
            role("other", "elsewhere", pods.clone()),
        ];
        let cluster_roles = [cluster_role("cr", pods)];
        let rbs = [
            // Inside the fence: job pods made there are reviewed.
            rb("gitlab-runner", "a", "ClusterRole", "cr", runner_sa()),
            rb("ci-job-7", "b", "Role", "pod-maker", runner_sa()),
            // The Role of that name lives in another namespace: nothing granted.
            rb("build", "c", "Role", "elsewhere", runner_sa()),
            rb("build", "d", "ClusterRole", "missing", runner_sa()),
            // A real grant, through a Role.
            rb("build", "e", "Role", "pod-maker", runner_sa()),
        ];
        // A ClusterRoleBinding may not refer to a Role.
        let crbs = [
            from::<ClusterRoleBinding>(json!({"metadata": {"name": "f"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-maker"},
                "subjects": runner_sa()})),
            crb("g", "missing", runner_sa()),
        ];
        let r = reach(
            &matching(&["gitlab-runner", "ci-job-*"]),
            &Objects {
                roles: &roles,
                cluster_roles: &cluster_roles,
                role_bindings: &rbs,
                cluster_role_bindings: &crbs,
                service_accounts: &[],
            },
        );
        assert_eq!(
            texts(&r),
            [
                "runner service account gitlab-runner/runner can create pods in build (via RoleBinding build/e → Role build/pod-maker)"
            ]
        );
    }

    #[test]
    fn prefixes_cover_service_accounts_and_bindings() {
        let pods = json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["create"]}]);
        let cluster_roles = [cluster_role("cr", pods)];
        let job_sa =
            json!([{"kind": "ServiceAccount", "name": "default", "namespace": "ci-job-7"}]);
        let rbs = [
            rb("ci-job-8", "a", "ClusterRole", "cr", job_sa.clone()),
            rb("build", "b", "ClusterRole", "cr", job_sa),
        ];
        let objects = Objects {
            cluster_roles: &cluster_roles,
            role_bindings: &rbs,
            ..Objects::default()
        };
        let r = reach(&matching(&["gitlab-runner", "ci-job-*"]), &objects);
        assert_eq!(
            texts(&r),
            [
                "runner service account ci-job-7/default can create pods in build (via RoleBinding build/b → ClusterRole cr)"
            ]
        );
        // Without the prefix, ci-job-7's account is nobody's concern here.
        assert!(reach(&matching(&["gitlab-runner"]), &objects).is_empty());
    }

    #[test]
    fn reach_serializes_as_typed_data() {
        let r = reach_of(
            json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["create"]}]),
            runner_sa(),
        );
        let v = serde_json::to_value(&r[1]).expect("json");
        assert_eq!(
            v,
            json!({"who": {"kind": "service_account", "namespace": "gitlab-runner", "name": "runner"},
                "scope": {"scope": "namespace", "namespace": "build"},
                "powers": [{"verb": "create", "resource": "pods"}],
                "binding": {"kind": "RoleBinding", "namespace": "build", "name": "rb"},
                "role": {"kind": "ClusterRole", "name": "r"},
                "subject": {"kind": "ServiceAccount", "name": "runner", "namespace": "gitlab-runner"}})
        );
        assert_eq!(
            serde_json::to_value(&r[0]).expect("json")["scope"],
            json!({"scope": "every_namespace"})
        );
    }

    fn arb_rule() -> impl Strategy<Value = Value> {
        let pick = |xs: &'static [&'static str]| proptest::sample::subsequence(xs, 0..=xs.len());
        (
            pick(&["", "apps", "batch", "*", "extensions"]),
            pick(&[
                "pods",
                "pods/binding",
                "*/ephemeralcontainers",
                "deployments",
                "jobs",
                "*",
                "namespaces",
                "secrets",
            ]),
            pick(&["create", "update", "patch", "get", "*"]),
            pick(&["", "x"]),
        )
            .prop_map(|(g, r, v, n)| {
                let names: Vec<&str> = n.into_iter().filter(|n| !n.is_empty()).collect();
                json!({"apiGroups": g, "resources": r, "verbs": v, "resourceNames": names})
            })
    }

    proptest! {
        /// A rule more never takes a reported power away, and a rule's
        /// powers do not depend on the rules beside it.
        #[test]
        fn more_rules_never_report_less(a in proptest::collection::vec(arb_rule(), 0..4), b in arb_rule()) {
            let powers_of = |rules: &[Value]| {
                let rules: Vec<PolicyRule> = rules.iter().cloned().map(from).collect();
                let (n, c) = powers(&rules);
                n.into_iter().chain(c).map(|p| (p.verb, p.resource)).collect::<BTreeSet<_>>()
            };
            let before = powers_of(&a);
            let mut more = a.clone();
            more.push(b.clone());
            let after = powers_of(&more);
            prop_assert!(before.is_subset(&after));
            prop_assert!(powers_of(std::slice::from_ref(&b)).is_subset(&after));
        }
    }
}
