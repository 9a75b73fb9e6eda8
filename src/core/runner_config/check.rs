//! `check runner-config`: every setting of a runner that lets its jobs leave
//! the fence or fight it.
//!
//! What the webhooks do with the runner's jobs is not re-derived here: the
//! job pod GitLab Runner builds from the settings ([`job_pod`]) goes through
//! the engine (mutate, then validate), once as every job gets it and once
//! per profile a job may choose (the profile label, and the profile's
//! selector labels, as `KUBERNETES_POD_LABELS_*` would add them). What the
//! engine cannot see is added here: the namespaces the runner reaches,
//! overwrite allowances, `pod_spec` patches, requests that replace profile
//! defaults, and requirements no Fargate node can meet.

use std::collections::BTreeMap;

use toml::Spanned;

use super::Location;
use super::config::{ConfigError, ConfigFile, Kubernetes, Text};
use super::finding::{Finding, FindingId, Job, Problem, RunnerRef, Severity};
use super::job::{JobPod, job_pod, requests};
use super::namespaces::{self, DEFAULT_NAMESPACE, PER_JOB_PREFIX, Reach};
use crate::core::engine::pod::{PodView, TERMS_PATH, term_requirements};
use crate::core::engine::{
    self, Cause, Evaluation, Operation, Origin, Request, ReviewError, Violation,
};
use crate::core::policy::{Operator, Policy, Requirement, ResourceName, Role};
use crate::core::quantity::Quantity;
use crate::core::selector::implies;

/// How to check.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// The Helm release namespace, for `{{ .Release.Namespace }}` in chart values.
    pub release_namespace: Option<String>,
}

/// Everything found in one configuration.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Findings, by runner and line.
    pub findings: Vec<Finding>,
    /// Runners with another executor, not checked: (runner, executor).
    pub skipped: Vec<(RunnerRef, String)>,
}

impl Report {
    /// Whether any finding is an error (exit code 1).
    pub fn has_errors(&self) -> bool {
        self.findings.iter().any(|f| f.severity == Severity::Error)
    }
}

/// Fargate nodes carry `eks.amazonaws.com/compute-type=fargate` and only
/// labels EKS and Kubernetes set (zone, region, hostname, os, arch, the
/// Fargate profile); never a node group's own labels.
const FARGATE_LABEL_PREFIXES: [&str; 6] = [
    "eks.amazonaws.com/",
    "kubernetes.io/",
    "beta.kubernetes.io/",
    "topology.kubernetes.io/",
    "failure-domain.beta.kubernetes.io/",
    "node.kubernetes.io/",
];
const COMPUTE_TYPE: &str = "eks.amazonaws.com/compute-type";

/// Checks every runner of `file` against `policy`.
pub fn check(policy: &Policy, file: &ConfigFile, opts: &Options) -> Result<Report, ConfigError> {
    let mut report = Report::default();
    for (index, runner) in file.runners.iter().enumerate() {
        let rref = RunnerRef {
            index,
            name: runner.name.as_ref().map(|n| n.get_ref().clone()),
        };
        if let Some(e) = &runner.executor
            && e.get_ref() != "kubernetes"
        {
            report.skipped.push((rref, e.get_ref().clone()));
            continue;
        }
        // The chart registers its runner with the kubernetes executor;
        // config.toml names it.
        if runner.executor.is_none()
            && runner.kubernetes.is_none()
            && file.format == super::Format::ConfigToml
        {
            report.skipped.push((rref, String::new()));
            continue;
        }
        let mut c = Checker {
            policy,
            file,
            index,
            runner: rref,
            k: runner
                .kubernetes
                .as_ref()
                .map(Spanned::get_ref)
                .cloned()
                .unwrap_or_default(),
            out: Vec::new(),
        };
        let namespace = c.namespaces(opts);
        c.overwrites();
        c.pod_spec();
        let mut profiles = Vec::new();
        if let Some(ns) = &namespace {
            profiles = c.jobs(ns)?;
        }
        c.requests(&profiles);
        c.overwrite_max();
        report.findings.append(&mut c.out);
    }
    report.findings.sort_by(|a, b| {
        (a.runner.index, a.at.toml_line, a.id, &a.at.key).cmp(&(
            b.runner.index,
            b.at.toml_line,
            b.id,
            &b.at.key,
        ))
    });
    // One finding per setting and job: the four containers a `privileged`
    // reaches are one change; and what every job gets needs no repeating for
    // the jobs that choose a profile.
    let mut seen: Vec<(usize, FindingId, Location, Option<Job>)> = Vec::new();
    report.findings.retain(|f| {
        let job = f.problem.job().cloned();
        let every = (f.runner.index, f.id, f.at.clone(), None);
        let dup = seen.contains(&(f.runner.index, f.id, f.at.clone(), job.clone()))
            || (matches!(job, Some(Job::Choosing(_))) && seen.contains(&every));
        if !dup {
            let is_every = matches!(job, Some(Job::Every(_)));
            seen.push((f.runner.index, f.id, f.at.clone(), job));
            if is_every {
                seen.push(every);
            }
        }
        !dup
    });
    Ok(report)
}

struct Checker<'a> {
    policy: &'a Policy,
    file: &'a ConfigFile,
    index: usize,
    runner: RunnerRef,
    k: Kubernetes,
    out: Vec<Finding>,
}

impl Checker<'_> {
    fn key(&self, rest: &str) -> String {
        format!("runners[{}].kubernetes.{rest}", self.index)
    }

    fn at<T>(&self, setting: &Spanned<T>, name: &str) -> Location {
        self.file.locate(setting.span(), self.key(name))
    }

    fn push(&mut self, id: FindingId, severity: Severity, at: Location, problem: Problem) {
        self.out.push(Finding {
            runner: self.runner.clone(),
            id,
            severity,
            at,
            problem,
        });
    }

    fn scope(&self) -> Vec<String> {
        self.policy.matching.namespaces.clone()
    }

    /// The namespace the runner's jobs run in, when the policy fences it (for
    /// `namespace_per_job`, a representative `ci-job-<id>`).
    fn namespaces(&mut self, opts: &Options) -> Option<String> {
        let m = &self.policy.matching;
        if let Some(per_job) = self.k.namespace_per_job.clone()
            && *per_job.get_ref()
        {
            // GitLab Runner ignores namespace and namespace_overwrite_allowed then.
            if namespaces::covers_per_job(m) {
                return Some(format!("{PER_JOB_PREFIX}1"));
            }
            let at = self.at(&per_job, "namespace_per_job");
            let scope = self.scope();
            self.push(
                FindingId::NamespacePerJobNotCovered,
                Severity::Error,
                at,
                Problem::NamespacePerJobNotCovered { scope },
            );
            return None;
        }
        if let Some(regex) = self.k.namespace_overwrite_allowed.clone()
            && !regex.get_ref().is_empty()
        {
            let reach = namespaces::overwrite_reach(regex.get_ref(), m);
            if reach != Reach::Covered {
                let at = self.at(&regex, "namespace_overwrite_allowed");
                let suggestion = namespaces::suggested_regex(m);
                self.push(
                    FindingId::NamespaceOverwriteNotCovered,
                    Severity::Error,
                    at,
                    Problem::NamespaceOverwrite {
                        regex: regex.get_ref().clone(),
                        reach,
                        suggestion,
                    },
                );
            }
        }
        let (written, at) = match &self.k.namespace {
            Some(n) => (n.get_ref().clone(), self.at(n, "namespace")),
            None => (String::new(), self.file.runner_location(self.index)),
        };
        let namespace = if written.contains("{{") {
            match self.resolve_template(&written, opts) {
                Some(ns) => ns,
                None => {
                    // As if installed in the policy's first namespace (a
                    // representative name for a prefix).
                    let assumed = m
                        .namespaces
                        .iter()
                        .find(|n| !n.ends_with('*'))
                        .or(m.namespaces.first())?
                        .replace('*', "1");
                    self.push(
                        FindingId::NamespaceUnresolved,
                        Severity::Warning,
                        at,
                        Problem::NamespaceUnresolved {
                            template: written,
                            assumed: assumed.clone(),
                        },
                    );
                    return Some(assumed);
                }
            }
        } else {
            written
        };
        let (namespace, defaulted) = if namespace.is_empty() {
            (DEFAULT_NAMESPACE.to_string(), true)
        } else {
            (namespace, false)
        };
        if m.covers(&namespace) {
            return Some(namespace);
        }
        let scope = self.scope();
        self.push(
            FindingId::NamespaceNotCovered,
            Severity::Error,
            at,
            Problem::NamespaceNotCovered {
                namespace,
                defaulted,
                scope,
            },
        );
        None
    }

    /// The chart's own forms: `{{.Release.Namespace}}` and
    /// `{{ default .Release.Namespace .Values.runners.jobNamespace }}`.
    fn resolve_template(&self, written: &str, opts: &Options) -> Option<String> {
        let inner = written.trim().strip_prefix("{{")?.strip_suffix("}}")?;
        let words: Vec<&str> = inner.trim_matches(['-', ' ']).split_whitespace().collect();
        match words.as_slice() {
            [".Release.Namespace"] => opts.release_namespace.clone(),
            [
                "default",
                ".Release.Namespace",
                ".Values.runners.jobNamespace",
            ] => self
                .file
                .job_namespace
                .clone()
                .filter(|n| !n.is_empty())
                .or_else(|| opts.release_namespace.clone()),
            _ => None,
        }
    }

    fn overwrites(&mut self) {
        let taints: Vec<String> = self
            .policy
            .protected_nodes
            .taints
            .iter()
            .map(ToString::to_string)
            .collect();
        for (setting, name, id) in [
            (
                self.k.node_selector_overwrite_allowed.clone(),
                "node_selector_overwrite_allowed",
                FindingId::NodeSelectorOverwrite,
            ),
            (
                self.k.node_tolerations_overwrite_allowed.clone(),
                "node_tolerations_overwrite_allowed",
                FindingId::NodeTolerationsOverwrite,
            ),
            (
                self.k.service_account_overwrite_allowed.clone(),
                "service_account_overwrite_allowed",
                FindingId::ServiceAccountOverwrite,
            ),
        ] {
            if let Some(regex) = setting.filter(|r| !r.get_ref().is_empty()) {
                let at = self.at(&regex, name);
                let taints = if id == FindingId::NodeTolerationsOverwrite {
                    taints.clone()
                } else {
                    Vec::new()
                };
                self.push(
                    id,
                    Severity::Warning,
                    at,
                    Problem::OverwriteAllowed {
                        regex: regex.get_ref().clone(),
                        taints,
                    },
                );
            }
        }
    }

    fn pod_spec(&mut self) {
        for (i, p) in self.k.pod_spec.clone().iter().enumerate() {
            let patch = p.get_ref();
            let name = patch.name.clone();
            let key = format!("pod_spec[{i}]");
            if let Some(path) = patch
                .patch_path
                .as_ref()
                .filter(|p| !p.get_ref().is_empty())
            {
                let at = self.at(path, &format!("{key}.patch_path"));
                self.push(
                    FindingId::PodSpecPatch,
                    Severity::Warning,
                    at,
                    Problem::PodSpecFile {
                        name,
                        path: path.get_ref().clone(),
                    },
                );
                continue;
            }
            let patch_type = patch
                .patch_type
                .as_ref()
                .map(|t| t.get_ref().clone())
                .filter(|t| !t.is_empty())
                .unwrap_or_else(|| "strategic".into());
            let at = match &patch.patch {
                Some(text) => self.at(text, &format!("{key}.patch")),
                None => self.at(p, &key),
            };
            let text = patch.patch.as_ref().map_or("", |t| t.get_ref().as_str());
            match patched_fields(text, &patch_type) {
                Ok(fields) => {
                    let placement: Vec<String> = fields
                        .iter()
                        .filter(|f| PLACEMENT_FIELDS.contains(&f.as_str()))
                        .cloned()
                        .collect();
                    let (id, severity, fields) = if placement.is_empty() {
                        (FindingId::PodSpecPatch, Severity::Warning, fields)
                    } else {
                        (FindingId::PodSpecPlacement, Severity::Error, placement)
                    };
                    self.push(
                        id,
                        severity,
                        at,
                        Problem::PodSpec {
                            name,
                            patch_type,
                            fields,
                        },
                    );
                }
                Err(reason) => self.push(
                    FindingId::PodSpecPatch,
                    Severity::Warning,
                    at,
                    Problem::PodSpecUnreadable { name, reason },
                ),
            }
        }
    }

    /// Runs the runner's job pod through the engine: as every job gets it,
    /// and choosing each profile the namespace may use. Returns the profiles
    /// the runner's jobs can get (its own first).
    fn jobs(&mut self, namespace: &str) -> Result<Vec<String>, ConfigError> {
        let own = job_pod(self.file, self.index, namespace, &BTreeMap::new());
        let eval = self.evaluate(namespace, &own)?;
        let own_profile = eval.profile.clone().unwrap_or_default();
        self.judge(&own, &eval, Job::Every(own_profile.clone()));
        let mut profiles = vec![own_profile.clone()];
        for name in self.policy.allowed_profiles(namespace) {
            if name == own_profile {
                continue;
            }
            let Some(profile) = self.policy.placement.profiles.get(&name) else {
                continue;
            };
            let mut labels: BTreeMap<String, String> = profile
                .selector
                .iter()
                .flat_map(|s| s.match_labels.clone())
                .collect();
            labels.insert(self.policy.placement.profile_label.clone(), name.clone());
            let job = job_pod(self.file, self.index, namespace, &labels);
            let eval = self.evaluate(namespace, &job)?;
            self.judge(&job, &eval, Job::Choosing(name.clone()));
            profiles.push(name);
        }
        Ok(profiles)
    }

    fn evaluate(&self, namespace: &str, job: &JobPod) -> Result<Evaluation, ConfigError> {
        let err = |source: ReviewError| ConfigError::Engine {
            runner: self.runner.to_string(),
            message: crate::core::report::Report(&source).to_string(),
        };
        let decoded: Result<PodView, ReviewError> = Ok(PodView::from_value(&job.pod).map_err(err)?);
        let request = Request::pod(Operation::Create, namespace, &decoded, None);
        let origin = Origin::Admission {
            request,
            object: &job.pod,
        };
        engine::evaluate(self.policy, &origin, None).map_err(err)
    }

    fn judge(&mut self, job_pod: &JobPod, eval: &Evaluation, job: Job) {
        let every = matches!(job, Job::Every(_));
        // A profile that cannot be used denies at mutation; the unmutated
        // pod's other violations only follow from that.
        let denials: Vec<&Violation> = if eval.mutate_decision.allowed() {
            eval.validate_decision.denials().iter().collect()
        } else {
            eval.mutate_decision.denials().iter().collect()
        };
        let audited = eval
            .mutate_decision
            .audited()
            .iter()
            .chain(eval.validate_decision.audited());
        let all: Vec<(&Violation, bool)> = denials
            .iter()
            .map(|v| (*v, false))
            .chain(audited.map(|v| (v, true)))
            .collect();
        for (v, is_audited) in all {
            let severity = if every && !is_audited {
                Severity::Error
            } else {
                Severity::Warning
            };
            let at = job_pod.origin(&v.path, culprit_key(&v.cause)).clone();
            self.push(
                FindingId::Denied(v.rule),
                severity,
                at,
                Problem::Denied {
                    job: job.clone(),
                    violation: v.clone(),
                    audited: is_audited,
                },
            );
        }
        if eval.allowed() {
            self.unschedulable(job_pod, eval, job);
        }
    }

    /// Admitted, but can a node run it? Per key the engine cannot tell that a
    /// term requiring Fargate and a node group's label matches no node.
    fn unschedulable(&mut self, job_pod: &JobPod, eval: &Evaluation, job: Job) {
        let Ok(pod) = PodView::from_value(&eval.pod) else {
            return;
        };
        let selector = pod.node_selector();
        let terms = pod.required_terms();
        let alternatives: Vec<(String, Vec<Requirement>)> = if terms.is_empty() {
            vec![("spec.nodeSelector".into(), selector)]
        } else {
            terms
                .iter()
                .enumerate()
                .filter_map(|(i, t)| {
                    let mut reqs = selector.clone();
                    reqs.extend(term_requirements(t)?);
                    Some((format!("{TERMS_PATH}[{i}]"), reqs))
                })
                .collect()
        };
        let fargate = Requirement::equals(COMPUTE_TYPE, "fargate");
        let mut first: Option<(String, Vec<Requirement>)> = None;
        for (path, reqs) in &alternatives {
            let foreign: Vec<Requirement> = reqs
                .iter()
                .filter(|r| {
                    matches!(
                        r.operator,
                        Operator::In | Operator::Exists | Operator::Gt | Operator::Lt
                    ) && !FARGATE_LABEL_PREFIXES.iter().any(|p| r.key.starts_with(p))
                })
                .cloned()
                .collect();
            if !implies(reqs, &fargate) || foreign.is_empty() {
                return; // some node may run it
            }
            first.get_or_insert((path.clone(), foreign));
        }
        let Some((path, config)) = first else {
            return;
        };
        let required = self
            .policy
            .placement
            .profiles
            .get(job.profile())
            .map(|p| p.required_node_labels.clone())
            .unwrap_or_default();
        let culprit = config.first().map(|r| r.key.as_str());
        let at = job_pod.origin(&path, culprit).clone();
        let in_node_selector = culprit.is_some_and(|k| {
            pod.spec()
                .node_selector
                .as_ref()
                .is_some_and(|s| s.contains_key(k))
        });
        self.push(
            FindingId::Unschedulable,
            Severity::Error,
            at,
            Problem::Unschedulable {
                job,
                config,
                required,
                in_node_selector,
            },
        );
    }

    /// Requests in config.toml win over the webhook's per-profile defaults.
    fn requests(&mut self, profiles: &[String]) {
        let k = self.k.clone();
        for role in [Role::Build, Role::Helper, Role::Service] {
            for (res, setting, name) in requests(&k, role) {
                let Some(setting) = setting.clone() else {
                    continue;
                };
                let Ok(value) = Quantity::parse(setting.get_ref()) else {
                    continue;
                };
                let resource = if res == "cpu" {
                    ResourceName::Cpu
                } else {
                    ResourceName::Memory
                };
                let differing: Vec<(String, Quantity)> = profiles
                    .iter()
                    .filter_map(|p| {
                        let prof = self.policy.placement.profiles.get(p)?;
                        let d = self.policy.default_request(prof, role, resource)?;
                        (*d != value).then(|| (p.clone(), d.clone()))
                    })
                    .collect();
                if differing.is_empty() {
                    continue;
                }
                let at = self.at(&setting, name);
                self.push(
                    FindingId::RequestOverridesProfile,
                    Severity::Warning,
                    at,
                    Problem::RequestOverridesProfile {
                        setting: name.to_string(),
                        value: setting.get_ref().clone(),
                        profiles: differing,
                    },
                );
            }
        }
    }

    fn overwrite_max(&mut self) {
        let k = &self.k;
        let settings: [(&Text, &str, ResourceName); 8] = [
            (
                &k.cpu_request_overwrite_max_allowed,
                "cpu_request_overwrite_max_allowed",
                ResourceName::Cpu,
            ),
            (
                &k.memory_request_overwrite_max_allowed,
                "memory_request_overwrite_max_allowed",
                ResourceName::Memory,
            ),
            (
                &k.helper_cpu_request_overwrite_max_allowed,
                "helper_cpu_request_overwrite_max_allowed",
                ResourceName::Cpu,
            ),
            (
                &k.helper_memory_request_overwrite_max_allowed,
                "helper_memory_request_overwrite_max_allowed",
                ResourceName::Memory,
            ),
            (
                &k.service_cpu_request_overwrite_max_allowed,
                "service_cpu_request_overwrite_max_allowed",
                ResourceName::Cpu,
            ),
            (
                &k.service_memory_request_overwrite_max_allowed,
                "service_memory_request_overwrite_max_allowed",
                ResourceName::Memory,
            ),
            (
                &k.pod_cpu_request_overwrite_max_allowed,
                "pod_cpu_request_overwrite_max_allowed",
                ResourceName::Cpu,
            ),
            (
                &k.pod_memory_request_overwrite_max_allowed,
                "pod_memory_request_overwrite_max_allowed",
                ResourceName::Memory,
            ),
        ];
        let mut found = Vec::new();
        for (setting, name, res) in settings {
            let (Some(setting), Some(max)) = (setting, self.policy.max_request(res)) else {
                continue;
            };
            let Ok(value) = Quantity::parse(setting.get_ref()) else {
                continue;
            };
            if value > *max {
                found.push((self.at(setting, name), name.to_string(), value, max.clone()));
            }
        }
        let clamp = self.policy.resources.on_exceed == crate::core::policy::OnExceed::Clamp;
        let audited = self
            .policy
            .rule_mode(crate::core::policy::RuleId::Resources)
            == crate::core::policy::Mode::Audit;
        for (at, setting, value, max) in found {
            self.push(
                FindingId::OverwriteMaxAboveMax,
                Severity::Warning,
                at,
                Problem::OverwriteMaxAboveMax {
                    setting,
                    value,
                    max,
                    clamp,
                    audited,
                },
            );
        }
    }
}

/// The label key a placement violation blames, to find the setting behind it.
fn culprit_key(c: &Cause) -> Option<&str> {
    match c {
        Cause::ConflictsWithProfile { culprit, .. } | Cause::Unsatisfiable { culprit } => {
            culprit.first().map(|r| r.key.as_str())
        }
        _ => None,
    }
}

/// Pod spec fields that decide where a pod runs (or that Fargate refuses).
const PLACEMENT_FIELDS: [&str; 9] = [
    "nodeName",
    "nodeSelector",
    "affinity",
    "tolerations",
    "schedulerName",
    "hostNetwork",
    "hostPID",
    "hostIPC",
    "runtimeClassName",
];

/// The top-level pod spec fields a `pod_spec` patch changes.
fn patched_fields(text: &str, patch_type: &str) -> Result<Vec<String>, String> {
    let v: serde_json::Value = if text.trim().is_empty() {
        serde_json::Value::Null
    } else {
        serde_saphyr::from_str(text).map_err(|e| {
            format!(
                "not YAML/JSON: {}",
                e.to_string().lines().next().unwrap_or_default()
            )
        })?
    };
    let mut fields: Vec<String> = match patch_type {
        "json" => {
            let ops = v
                .as_array()
                .ok_or_else(|| "a json patch must be a list of operations".to_string())?;
            ops.iter()
                .flat_map(|op| ["path", "from"].map(|k| op.get(k).and_then(|p| p.as_str())))
                .flatten()
                .filter_map(|p| p.strip_prefix('/'))
                .map(|p| {
                    p.split('/')
                        .next()
                        .unwrap_or_default()
                        .replace("~1", "/")
                        .replace("~0", "~")
                })
                .collect()
        }
        "strategic" | "merge" => v
            .as_object()
            .ok_or_else(|| format!("a {patch_type} patch must be a YAML/JSON object"))?
            .keys()
            .cloned()
            .collect(),
        other => {
            return Err(format!(
                "unknown patch_type {other:?} (strategic, merge or json)"
            ));
        }
    };
    fields.sort();
    fields.dedup();
    Ok(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn findings(values: &str, release: Option<&str>) -> Vec<FindingId> {
        let p = crate::core::policy::embedded().expect("policy");
        let file = ConfigFile::parse(values, "values.yaml").expect("values");
        let opts = Options {
            release_namespace: release.map(String::from),
        };
        let r = check(&p, &file, &opts).expect("check");
        r.findings.iter().map(|f| f.id).collect()
    }

    #[test]
    fn runners_of_other_executors_are_skipped() {
        let p = crate::core::policy::embedded().expect("policy");
        let text = "[[runners]]\n  name = \"d\"\n  executor = \"docker\"\n[[runners]]\n  name = \"none\"\n  [runners.docker]\n    image = \"x\"\n[[runners]]\n  name = \"k\"\n  [runners.kubernetes]\n    namespace = \"default\"\n";
        let file = ConfigFile::parse(text, "config.toml").expect("parses");
        let r = check(&p, &file, &Options::default()).expect("check");
        let skipped: Vec<(Option<&str>, &str)> = r
            .skipped
            .iter()
            .map(|(r, e)| (r.name.as_deref(), e.as_str()))
            .collect();
        assert_eq!(skipped, [(Some("d"), "docker"), (Some("none"), "")]);
        let ids: Vec<FindingId> = r.findings.iter().map(|f| f.id).collect();
        assert_eq!(ids, [FindingId::NamespaceNotCovered]);
        assert_eq!(r.findings[0].at.line, Some(11));
    }

    #[test]
    fn the_charts_namespace_templates_resolve() {
        let newer = "runners:\n  jobNamespace: JOBNS\n  config: |\n    [[runners]]\n      [runners.kubernetes]\n        namespace = \"{{ default .Release.Namespace .Values.runners.jobNamespace }}\"\n";
        let with = |ns: &str| newer.replace("JOBNS", ns);
        assert_eq!(findings(&with("gitlab-runner"), None), []);
        assert_eq!(
            findings(&with("builds"), Some("gitlab-runner")),
            [FindingId::NamespaceNotCovered]
        );
        assert_eq!(findings(&with("\"\""), Some("gitlab-runner")), []);
        assert_eq!(
            findings(&with("\"\""), None),
            [FindingId::NamespaceUnresolved]
        );
        let other = "runners:\n  config: |\n    [[runners]]\n      [runners.kubernetes]\n        namespace = \"{{ .Values.ns }}\"\n";
        assert_eq!(
            findings(other, Some("gitlab-runner")),
            [FindingId::NamespaceUnresolved]
        );
    }

    #[test]
    fn patch_fields_by_type() {
        assert_eq!(
            patched_fields("containers:\n- name: build\n  env: []\n", "strategic"),
            Ok(vec!["containers".to_string()])
        );
        assert_eq!(
            patched_fields(
                r#"[{"op": "add", "path": "/nodeSelector", "value": {"a": "b"}}, {"op": "move", "from": "/tolerations/0", "path": "/volumes/-"}]"#,
                "json"
            ),
            Ok(vec![
                "nodeSelector".to_string(),
                "tolerations".to_string(),
                "volumes".to_string()
            ])
        );
        assert!(patched_fields("[1]", "merge").is_err());
        assert!(patched_fields("{}", "xml").is_err());
        assert!(patched_fields("a: [", "merge").is_err());
    }
}
