//! `render runner-config`: the `[runners.kubernetes]` fragment of a GitLab
//! Runner `config.toml` that asks for what the policy enforces, so a runner's
//! own configuration and the webhook agree, whichever profile a job chooses.
//!
//! A job may choose any profile its namespace may use (the profile label, or
//! a profile's selector labels), so the fragment fits all of them at once:
//! one required nodeSelectorTerm per profile (terms are OR-ed; the mutating
//! webhook ANDs the chosen profile's `requiredNodeLabels` into every term, so
//! only that profile's nodes remain, and without the webhook every term still
//! excludes GitLab's nodes), the tolerations of all of them, and only the
//! requests they agree on (the webhook injects the chosen profile's others).
//! A single fragment requiring one profile's node labels would leave a job
//! choosing another profile with both requirements: for Fargate and a node
//! group's label, no node at all.

use std::collections::BTreeMap;

use toml::{Table, Value};

use super::webhooks::RenderError;
use crate::core::policy::{
    Match, Policy, Profile, Requirement, ResourceName, Role, TolerationOperator,
};
use crate::core::runner_config::{PER_JOB_PREFIX, covers_per_job};

/// Renders the fragment for one profile (the default one when `profile` is
/// None): that profile is what jobs get without choosing.
pub fn runner_config(policy: &Policy, profile: Option<&str>) -> Result<String, RenderError> {
    let name = profile.unwrap_or(&policy.placement.default);
    let Some(prof) = policy.placement.profiles.get(name) else {
        return Err(RenderError::UnknownProfile {
            name: name.to_string(),
            known: policy.known_profiles(),
        });
    };
    // The runner's namespace: the first exact runner namespace this profile may use.
    let patterns = prof
        .namespaces
        .as_ref()
        .unwrap_or(&policy.matching.namespaces);
    let namespace = patterns.iter().find(|n| !n.ends_with('*')).cloned();
    // Only prefixes: namespace_per_job's `ci-job-<job id>`, when one covers them.
    let prefixes = Match {
        namespaces: patterns.clone(),
        ..policy.matching.clone()
    };
    let per_job = namespace.is_none() && covers_per_job(&prefixes);
    let scope = namespace
        .clone()
        .or_else(|| per_job.then(|| format!("{PER_JOB_PREFIX}1")))
        .or_else(|| patterns.first().cloned());
    let scope = scope.as_deref();
    // The profiles a job there may choose: this one first.
    let mut usable: Vec<(&str, &Profile)> = vec![(name, prof)];
    usable.extend(
        policy
            .placement
            .profiles
            .iter()
            .filter(|(n, p)| n.as_str() != name && scope.is_none_or(|s| p.allowed_pattern(s)))
            .map(|(n, p)| (n.as_str(), p)),
    );

    let mut k = Table::new();
    if let Some(ns) = namespace {
        k.insert("namespace".into(), Value::String(ns));
    }
    if per_job {
        k.insert("namespace_per_job".into(), Value::Boolean(true));
    }
    let (requests, differing) = requests(policy, &usable);
    k.extend(requests);
    if name != policy.placement.default {
        let mut labels = Table::new();
        labels.insert(
            policy.placement.profile_label.clone(),
            Value::String(name.into()),
        );
        k.insert("pod_labels".into(), Value::Table(labels));
    }
    let tolerations = node_tolerations(&usable);
    if !tolerations.is_empty() {
        k.insert("node_tolerations".into(), Value::Table(tolerations));
    }
    if let Some(a) = affinity(&usable) {
        k.insert("affinity".into(), a);
    }
    let mut runners = Table::new();
    runners.insert("kubernetes".into(), Value::Table(k));
    let mut root = Table::new();
    root.insert("runners".into(), Value::Table(runners));
    let body = toml::to_string(&root).map_err(RenderError::Toml)?;
    let mut out = format!(
        "# GitLab Runner [runners.kubernetes] settings matching runner-fence policy {:?}, profile {name:?}.\n\
         # Merge into the [[runners]] entry of config.toml. Leave node_selector_overwrite_allowed and\n\
         # node_tolerations_overwrite_allowed unset: runner-fence denies overrides that reach GitLab's nodes.\n\
         # Every pod in the runner namespaces is fenced, the runner manager included: run it on the runner nodes too.\n",
        policy.metadata.name
    );
    let others: Vec<&str> = usable.iter().skip(1).map(|(n, _)| *n).collect();
    if !others.is_empty() {
        out.push_str(&format!(
            "# Jobs may choose another profile ({}) with the {} label or its selector labels:\n\
             # the affinity has one node_selector_terms entry per profile (OR-ed), and runner-fence adds the\n\
             # chosen profile's requiredNodeLabels to each and its podLabels, so the job runs on its nodes only.\n",
            others.join(", "),
            policy.placement.profile_label,
        ));
    }
    if !differing.is_empty() {
        out.push_str("# Not set, the profiles' defaults differ (runner-fence injects the chosen profile's):\n");
        for d in &differing {
            out.push_str(&format!("#   {d}\n"));
        }
    }
    if policy.resources.defaults.init.is_some() {
        out.push_str("# init containers (init-permissions) use the helper_* requests; runner-fence applies its own init defaults.\n");
    }
    out.push_str(&body);
    Ok(out)
}

/// build -> cpu_request, helper (and init-permissions) -> helper_*, services
/// -> service_*: the requests every usable profile agrees on, and a note for
/// each one they do not.
fn requests(policy: &Policy, usable: &[(&str, &Profile)]) -> (Table, Vec<String>) {
    let mut k = Table::new();
    let mut differing = Vec::new();
    for (role, prefix) in [
        (Role::Build, ""),
        (Role::Helper, "helper_"),
        (Role::Service, "service_"),
    ] {
        for res in ResourceName::ALL {
            let key = format!("{prefix}{}_request", res.as_str());
            let values: Vec<(&str, Option<String>)> = usable
                .iter()
                .map(|(n, p)| {
                    let q = policy.default_request(p, role, res);
                    (*n, q.map(|q| q.as_str().to_string()))
                })
                .collect();
            let first = policy.default_request(usable[0].1, role, res);
            let agree = usable
                .iter()
                .all(|(_, p)| policy.default_request(p, role, res) == first);
            match (agree, &values[0].1) {
                (true, Some(v)) => {
                    k.insert(key, Value::String(v.clone()));
                }
                (true, None) => {}
                (false, _) => {
                    let each: Vec<String> = values
                        .iter()
                        .map(|(n, v)| format!("{n} {}", v.as_deref().unwrap_or("none")))
                        .collect();
                    differing.push(format!("{key}: {}", each.join(", ")));
                }
            }
        }
    }
    (k, differing)
}

/// The runner's map form: "key=value" = "effect"; a bare key is Exists. Two
/// profiles tolerating one key with different effects, and tolerations with
/// tolerationSeconds, do not fit it: runner-fence injects those itself.
fn node_tolerations(usable: &[(&str, &Profile)]) -> Table {
    let mut entries: BTreeMap<String, Option<String>> = BTreeMap::new();
    for t in usable.iter().flat_map(|(_, p)| &p.tolerations) {
        if t.toleration_seconds.is_some() {
            continue;
        }
        let key = t.key.clone().unwrap_or_default();
        let entry = match (t.operator, &t.value) {
            (Some(TolerationOperator::Exists), _) => key,
            (_, Some(v)) => format!("{key}={v}"),
            (_, None) => format!("{key}="),
        };
        let effect = t.effect.map(|e| e.as_str()).unwrap_or("").to_string();
        let slot = entries.entry(entry).or_insert_with(|| Some(effect.clone()));
        if slot.as_deref() != Some(effect.as_str()) {
            *slot = None;
        }
    }
    entries
        .into_iter()
        .filter_map(|(entry, effect)| Some((entry, Value::String(effect?))))
        .collect()
}

/// `affinity.node_affinity.required_during_scheduling_ignored_during_execution`
/// with one term per usable profile; none when a profile requires nothing
/// (no term can express "any node").
fn affinity(usable: &[(&str, &Profile)]) -> Option<Value> {
    let mut terms: Vec<&[Requirement]> = Vec::new();
    for (_, p) in usable {
        if p.required_node_labels.is_empty() {
            return None;
        }
        if !terms.contains(&p.required_node_labels.as_slice()) {
            terms.push(&p.required_node_labels);
        }
    }
    let terms: Vec<Value> = terms
        .into_iter()
        .map(|reqs| {
            let exprs: Vec<Value> = reqs
                .iter()
                .map(|r| {
                    let mut e = Table::new();
                    e.insert("key".into(), Value::String(r.key.clone()));
                    e.insert("operator".into(), Value::String(r.operator.as_str().into()));
                    if !r.values.is_empty() {
                        e.insert(
                            "values".into(),
                            Value::Array(r.values.iter().cloned().map(Value::String).collect()),
                        );
                    }
                    Value::Table(e)
                })
                .collect();
            let mut term = Table::new();
            term.insert("match_expressions".into(), Value::Array(exprs));
            Value::Table(term)
        })
        .collect();
    let mut required = Table::new();
    required.insert("node_selector_terms".into(), Value::Array(terms));
    let mut node_affinity = Table::new();
    node_affinity.insert(
        "required_during_scheduling_ignored_during_execution".into(),
        Value::Table(required),
    );
    let mut affinity = Table::new();
    affinity.insert("node_affinity".into(), Value::Table(node_affinity));
    Some(Value::Table(affinity))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::policy::embedded;

    fn parse(s: &str) -> Table {
        s.parse::<Table>()
            .unwrap_or_else(|e| panic!("not TOML: {e}\n{s}"))
    }

    fn k(t: &Table) -> &Table {
        t["runners"]["kubernetes"]
            .as_table()
            .expect("runners.kubernetes")
    }

    fn terms(k: &Table) -> Vec<Vec<(String, String, Vec<String>)>> {
        k["affinity"]["node_affinity"]["required_during_scheduling_ignored_during_execution"]
            ["node_selector_terms"]
            .as_array()
            .expect("terms")
            .iter()
            .map(|t| {
                t["match_expressions"]
                    .as_array()
                    .expect("expressions")
                    .iter()
                    .map(|e| {
                        (
                            e["key"].as_str().unwrap_or_default().to_string(),
                            e["operator"].as_str().unwrap_or_default().to_string(),
                            e.get("values")
                                .and_then(|v| v.as_array())
                                .into_iter()
                                .flatten()
                                .filter_map(|v| v.as_str().map(String::from))
                                .collect(),
                        )
                    })
                    .collect()
            })
            .collect()
    }

    fn term(key: &str, op: &str, value: &str) -> Vec<(String, String, Vec<String>)> {
        vec![(key.into(), op.into(), vec![value.into()])]
    }

    #[test]
    fn default_profile_fits_every_profile_of_the_namespace() {
        let p = embedded().expect("policy");
        let out = runner_config(&p, None).expect("render");
        let t = parse(&out);
        let k = k(&t);
        assert_eq!(k["namespace"].as_str(), Some("gitlab-runner"));
        // Build defaults differ between the profiles: the webhook injects them.
        assert!(k.get("cpu_request").is_none() && k.get("memory_request").is_none());
        assert!(
            out.contains("#   cpu_request: runner-nodes 500m, fargate 2\n"),
            "{out}"
        );
        assert_eq!(k["helper_cpu_request"].as_str(), Some("100m"));
        assert_eq!(k["service_memory_request"].as_str(), Some("256Mi"));
        assert_eq!(
            k["node_tolerations"]["workload=gitlab-runner"].as_str(),
            Some("NoSchedule")
        );
        assert_eq!(
            terms(k),
            [
                term("workload", "In", "gitlab-runner"),
                term("eks.amazonaws.com/compute-type", "In", "fargate"),
            ]
        );
        assert!(k.get("pod_labels").is_none());
    }

    #[test]
    fn fargate_profile_names_itself_and_keeps_the_other_terms() {
        let p = embedded().expect("policy");
        let t = parse(&runner_config(&p, Some("fargate")).expect("render"));
        let k = k(&t);
        assert_eq!(
            k["pod_labels"]["runner-fence.dev/profile"].as_str(),
            Some("fargate")
        );
        // use-fargate is the webhook's to add: a job choosing runner-nodes must not keep it.
        assert!(k["pod_labels"].get("use-fargate").is_none());
        assert!(k.get("cpu_request").is_none());
        assert_eq!(
            terms(k),
            [
                term("eks.amazonaws.com/compute-type", "In", "fargate"),
                term("workload", "In", "gitlab-runner"),
            ]
        );
        assert!(
            runner_config(&p, Some("gpu"))
                .expect_err("unknown")
                .to_string()
                .contains("known profiles: fargate, runner-nodes")
        );
    }

    #[test]
    fn a_namespace_with_one_profile_gets_its_requests() {
        let src = crate::core::policy::EMBEDDED_POLICY.replace(
            "      fargate: true\n",
            "      fargate: true\n      namespaces: [ci-job-*]\n",
        );
        let src = src.replace(
            "namespaces: [gitlab-runner]",
            "namespaces: [gitlab-runner, ci-job-*]",
        );
        let p = crate::core::policy::parse(&src, "test").expect("policy");
        let t = parse(&runner_config(&p, None).expect("render"));
        let k = k(&t);
        assert_eq!(k["cpu_request"].as_str(), Some("500m"));
        assert_eq!(terms(k), [term("workload", "In", "gitlab-runner")]);
    }
}
