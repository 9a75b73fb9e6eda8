//! The job pod GitLab Runner (19.4, kubernetes executor) creates from a
//! runner's `[runners.kubernetes]` settings, in the fields the webhooks read,
//! and which setting each field came from.
//!
//! As in `executors/kubernetes/kubernetes.go`: containers `build`, `helper`,
//! services (`svc-0`, ...), init container `init-permissions` (helper
//! requests); `node_selector` as `spec.nodeSelector`; `node_tolerations`
//! `"key=value" = "effect"` as `Equal`, a bare key as `Exists` (an empty key
//! tolerates every taint); `affinity` as `spec.affinity` (an empty object when
//! unset); `privileged` on every container unless its
//! `*_container_security_context` says otherwise; `pod_labels` after
//! GitLab's own labels, never under `runner.gitlab.com`. `pod_spec` patches
//! are not applied here (they are checked on their own).

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};
use toml::Spanned;

use super::config::{ConfigFile, Kubernetes, Text};
use crate::core::engine::pod::TERMS_PATH;
use crate::core::policy::Role;

/// A job pod and where its fields came from.
#[derive(Clone, Debug)]
pub struct JobPod {
    /// The Pod, as `/mutate` receives it.
    pub pod: Value,
    /// Field path prefix (as in violations, `spec.tolerations[0]`) to setting.
    pub(crate) origins: Vec<(String, super::Location)>,
    /// The `[runners.kubernetes]` table, for fields no setting wrote.
    pub(crate) table: super::Location,
}

impl JobPod {
    /// The setting behind the field at `path` (longest matching prefix), or
    /// behind the requirement on label `key` there.
    pub fn origin(&self, path: &str, key: Option<&str>) -> &super::Location {
        if let Some(k) = key
            && let Some((_, at)) = self
                .origins
                .iter()
                .find(|(p, _)| p == &format!("{path}#{k}"))
        {
            return at;
        }
        self.origins
            .iter()
            .filter(|(p, _)| {
                path.strip_prefix(p.as_str())
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
            })
            .max_by_key(|(p, _)| p.len())
            .map_or(&self.table, |(_, at)| at)
    }
}

/// The containers of the pod and the settings they take.
struct ContainerSpec {
    name: &'static str,
    role: Role,
    init: bool,
}

const CONTAINERS: [ContainerSpec; 4] = [
    ContainerSpec {
        name: "build",
        role: Role::Build,
        init: false,
    },
    ContainerSpec {
        name: "helper",
        role: Role::Helper,
        init: false,
    },
    ContainerSpec {
        name: "svc-0",
        role: Role::Service,
        init: false,
    },
    ContainerSpec {
        name: "init-permissions",
        role: Role::Init,
        init: true,
    },
];

/// Builds the pod runner `index` of `file` creates in `namespace`, with
/// `labels` set as a job's `KUBERNETES_POD_LABELS_*` would set them.
pub fn job_pod(
    file: &ConfigFile,
    index: usize,
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> JobPod {
    let empty = Kubernetes::default();
    let runner = file.runners.get(index);
    let k = runner
        .and_then(|r| r.kubernetes.as_ref())
        .map_or(&empty, Spanned::get_ref);
    let key = |rest: &str| format!("runners[{index}].kubernetes.{rest}");
    let mut origins: Vec<(String, super::Location)> = Vec::new();
    let mut at = |path: String, span: std::ops::Range<usize>, name: String| {
        origins.push((path, file.locate(span, name)));
    };

    let manager = runner
        .and_then(|r| r.name.as_ref())
        .map_or("runner", |n| n.get_ref().as_str());
    let mut pod_labels: Map<String, Value> = [
        ("pod", "runner-fence-check-project-0-concurrent-0"),
        (
            "job.runner.gitlab.com/pod",
            "runner-fence-check-project-0-concurrent-0",
        ),
        ("project.runner.gitlab.com/id", "0"),
        ("manager.runner.gitlab.com/name", manager),
        ("manager.runner.gitlab.com/id-short", "check"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), json!(v)))
    .collect();
    if let Some(l) = &k.pod_labels {
        at("metadata.labels".into(), l.span(), key("pod_labels"));
        for (name, v) in l.get_ref() {
            if !name.contains("runner.gitlab.com") {
                pod_labels.insert(name.clone(), json!(v.get_ref()));
                at(
                    format!("metadata.labels[{name}]"),
                    v.span(),
                    key(&format!("pod_labels.{name}")),
                );
            }
        }
    }
    for (name, v) in labels {
        if !name.contains("runner.gitlab.com") {
            pod_labels.insert(name.clone(), json!(v));
        }
    }

    let mut spec = Map::new();
    if let Some(sel) = &k.node_selector
        && !sel.get_ref().is_empty()
    {
        at("spec.nodeSelector".into(), sel.span(), key("node_selector"));
        let mut m = Map::new();
        for (name, v) in sel.get_ref() {
            m.insert(name.clone(), json!(v.get_ref()));
            at(
                format!("spec.nodeSelector#{name}"),
                v.span(),
                key(&format!("node_selector.{name}")),
            );
        }
        spec.insert("nodeSelector".into(), Value::Object(m));
        // Alternatives are the nodeSelector AND each term: a conflict on a
        // nodeSelector key is reported at the term's path.
        for name in sel.get_ref().keys() {
            let span = sel.get_ref()[name].span();
            for i in 0..terms_len(k).max(1) {
                at(
                    format!("{TERMS_PATH}[{i}]#{name}"),
                    span.clone(),
                    key(&format!("node_selector.{name}")),
                );
            }
        }
    }

    let mut affinity = Map::new();
    if let Some(na) = k.affinity.as_ref().and_then(|a| a.node_affinity.as_ref()) {
        let mut node_affinity = Map::new();
        if let Some(req) = &na.required_during_scheduling_ignored_during_execution {
            let req_key =
                "affinity.node_affinity.required_during_scheduling_ignored_during_execution";
            let mut terms = Vec::new();
            for (i, t) in req.get_ref().node_selector_terms.iter().enumerate() {
                let term_key = format!("{req_key}.node_selector_terms[{i}]");
                at(format!("{TERMS_PATH}[{i}]"), t.span(), key(&term_key));
                let mut term = Map::new();
                for (field, list) in [
                    ("matchExpressions", &t.get_ref().match_expressions),
                    ("matchFields", &t.get_ref().match_fields),
                ] {
                    if list.is_empty() {
                        continue;
                    }
                    let toml_field = if field == "matchExpressions" {
                        "match_expressions"
                    } else {
                        "match_fields"
                    };
                    let mut exprs = Vec::new();
                    for (j, e) in list.iter().enumerate() {
                        let e_key = format!("{term_key}.{toml_field}[{j}]");
                        at(
                            format!("{TERMS_PATH}[{i}].{field}[{j}]"),
                            e.span(),
                            key(&e_key),
                        );
                        let e = e.get_ref();
                        if field == "matchExpressions" {
                            at(
                                format!("{TERMS_PATH}[{i}]#{}", e.key),
                                list[j].span(),
                                key(&e_key),
                            );
                        }
                        let mut v = Map::new();
                        v.insert("key".into(), json!(e.key));
                        v.insert("operator".into(), json!(e.operator));
                        if !e.values.is_empty() {
                            v.insert("values".into(), json!(e.values));
                        }
                        exprs.push(Value::Object(v));
                    }
                    term.insert(field.into(), Value::Array(exprs));
                }
                terms.push(Value::Object(term));
            }
            node_affinity.insert(
                "requiredDuringSchedulingIgnoredDuringExecution".into(),
                json!({ "nodeSelectorTerms": terms }),
            );
        }
        affinity.insert("nodeAffinity".into(), Value::Object(node_affinity));
    }
    spec.insert("affinity".into(), Value::Object(affinity));

    if let Some(t) = &k.node_tolerations
        && !t.get_ref().is_empty()
    {
        let mut tolerations = Vec::new();
        for (i, (entry, effect)) in t.get_ref().iter().enumerate() {
            at(
                format!("spec.tolerations[{i}]"),
                effect.span(),
                key(&format!("node_tolerations.{}", toml_key(entry))),
            );
            tolerations.push(toleration(entry, effect.get_ref()));
        }
        spec.insert("tolerations".into(), Value::Array(tolerations));
    }

    let mut containers = Vec::new();
    let mut init_containers = Vec::new();
    for c in &CONTAINERS {
        let (list, i) = if c.init {
            ("spec.initContainers", init_containers.len())
        } else {
            ("spec.containers", containers.len())
        };
        let path = format!("{list}[{i}]");
        let mut container = Map::new();
        container.insert("name".into(), json!(c.name));
        container.insert("image".into(), json!(image(c.role)));
        let mut resources = Map::new();
        for (kind, settings) in [
            ("requests", requests(k, c.role)),
            ("limits", limits(k, c.role)),
        ] {
            let mut m = Map::new();
            for (res, setting, name) in settings {
                if let Some(v) = setting {
                    m.insert(res.into(), json!(v.get_ref()));
                    at(
                        format!("{path}.resources.{kind}.{res}"),
                        v.span(),
                        key(name),
                    );
                }
            }
            if !m.is_empty() {
                resources.insert(kind.into(), Value::Object(m));
            }
        }
        container.insert("resources".into(), Value::Object(resources));
        let mut security = json!({"capabilities": {"drop": ["NET_RAW"]}});
        if let Some((privileged, name)) = privileged(k, c.role) {
            security["privileged"] = json!(privileged.get_ref());
            at(
                format!("{path}.securityContext.privileged"),
                privileged.span(),
                key(name),
            );
        }
        container.insert("securityContext".into(), security);
        if c.init {
            init_containers.push(Value::Object(container));
        } else {
            containers.push(Value::Object(container));
        }
    }
    spec.insert("containers".into(), Value::Array(containers));
    spec.insert("initContainers".into(), Value::Array(init_containers));

    let mut volumes = Vec::new();
    for (i, v) in k.volumes.iter().flat_map(|v| &v.host_path).enumerate() {
        at(
            format!("spec.volumes[{i}]"),
            v.span(),
            key(&format!("volumes.host_path[{i}]")),
        );
        let h = v.get_ref();
        let host = h.host_path.clone().unwrap_or_else(|| h.mount_path.clone());
        volumes.push(json!({"name": h.name, "hostPath": {"path": host}}));
    }
    for name in ["repo", "scripts", "logs"] {
        volumes.push(json!({"name": name, "emptyDir": {}}));
    }
    spec.insert("volumes".into(), Value::Array(volumes));

    let mut pod_resources = Map::new();
    for (kind, settings) in [
        (
            "requests",
            [
                ("cpu", &k.pod_cpu_request, "pod_cpu_request"),
                ("memory", &k.pod_memory_request, "pod_memory_request"),
            ],
        ),
        (
            "limits",
            [
                ("cpu", &k.pod_cpu_limit, "pod_cpu_limit"),
                ("memory", &k.pod_memory_limit, "pod_memory_limit"),
            ],
        ),
    ] {
        let mut m = Map::new();
        for (res, setting, name) in settings {
            if let Some(v) = setting.as_ref().filter(|v| !v.get_ref().is_empty()) {
                m.insert(res.into(), json!(v.get_ref()));
                at(format!("spec.resources.{kind}.{res}"), v.span(), key(name));
            }
        }
        if !m.is_empty() {
            pod_resources.insert(kind.into(), Value::Object(m));
        }
    }
    spec.insert("resources".into(), Value::Object(pod_resources));
    spec.insert("restartPolicy".into(), json!("Never"));

    let pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "runner-fence-check-project-0-concurrent-0-check",
            "namespace": namespace,
            "labels": pod_labels,
            "annotations": {"job.runner.gitlab.com/id": "0", "project.runner.gitlab.com/id": "0"},
        },
        "spec": spec,
    });
    JobPod {
        pod,
        origins,
        table: file.runner_location(index),
    }
}

fn terms_len(k: &Kubernetes) -> usize {
    k.affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| {
            n.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .map_or(0, |r| r.get_ref().node_selector_terms.len())
}

/// `"key=value" = "effect"` as GitLab Runner turns it into a toleration.
pub(crate) fn toleration(entry: &str, effect: &str) -> Value {
    let mut t = Map::new();
    match entry.split_once('=') {
        Some((key, value)) => {
            t.insert("key".into(), json!(key));
            t.insert("operator".into(), json!("Equal"));
            t.insert("value".into(), json!(value));
        }
        None => {
            t.insert("key".into(), json!(entry));
            t.insert("operator".into(), json!("Exists"));
        }
    }
    if !effect.is_empty() {
        t.insert("effect".into(), json!(effect));
    }
    Value::Object(t)
}

/// A TOML key as written in a dotted path (quoted unless bare).
pub(crate) fn toml_key(k: &str) -> String {
    if !k.is_empty()
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        k.to_string()
    } else {
        format!("{k:?}")
    }
}

fn image(role: Role) -> &'static str {
    match role {
        Role::Build => "alpine:3.22",
        Role::Service => "postgres:16-alpine",
        Role::Helper | Role::Init => {
            "registry.gitlab.com/gitlab-org/gitlab-runner/gitlab-runner-helper:x86_64-v19.4.0"
        }
    }
}

type Settings<'a> = [(&'static str, &'a Text, &'static str); 2];

/// The request settings of a container role (init-permissions takes the helper's).
pub(crate) fn requests(k: &Kubernetes, role: Role) -> Settings<'_> {
    match role {
        Role::Build => [
            ("cpu", &k.cpu_request, "cpu_request"),
            ("memory", &k.memory_request, "memory_request"),
        ],
        Role::Helper | Role::Init => [
            ("cpu", &k.helper_cpu_request, "helper_cpu_request"),
            ("memory", &k.helper_memory_request, "helper_memory_request"),
        ],
        Role::Service => [
            ("cpu", &k.service_cpu_request, "service_cpu_request"),
            (
                "memory",
                &k.service_memory_request,
                "service_memory_request",
            ),
        ],
    }
    .map(|(r, s, n)| (r, filled(s), n))
}

fn limits(k: &Kubernetes, role: Role) -> Settings<'_> {
    match role {
        Role::Build => [
            ("cpu", &k.cpu_limit, "cpu_limit"),
            ("memory", &k.memory_limit, "memory_limit"),
        ],
        Role::Helper | Role::Init => [
            ("cpu", &k.helper_cpu_limit, "helper_cpu_limit"),
            ("memory", &k.helper_memory_limit, "helper_memory_limit"),
        ],
        Role::Service => [
            ("cpu", &k.service_cpu_limit, "service_cpu_limit"),
            ("memory", &k.service_memory_limit, "service_memory_limit"),
        ],
    }
    .map(|(r, s, n)| (r, filled(s), n))
}

/// An empty string is GitLab Runner's "not set".
fn filled(t: &Text) -> &Text {
    const NONE: &Text = &None;
    match t {
        Some(v) if v.get_ref().is_empty() => NONE,
        _ => t,
    }
}

/// The `privileged` setting that applies to a container role, and its name.
fn privileged(k: &Kubernetes, role: Role) -> Option<(&Spanned<bool>, &'static str)> {
    let (own, name) = match role {
        Role::Build => (
            &k.build_container_security_context,
            "build_container_security_context.privileged",
        ),
        Role::Helper => (
            &k.helper_container_security_context,
            "helper_container_security_context.privileged",
        ),
        Role::Service => (
            &k.service_container_security_context,
            "service_container_security_context.privileged",
        ),
        Role::Init => (
            &k.init_permissions_container_security_context,
            "init_permissions_container_security_context.privileged",
        ),
    };
    own.as_ref()
        .and_then(|c| c.privileged.as_ref())
        .map(|p| (p, name))
        .or_else(|| k.privileged.as_ref().map(|p| (p, "privileged")))
}
