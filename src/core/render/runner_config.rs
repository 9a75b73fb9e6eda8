//! `render runner-config`: the `[runners.kubernetes]` fragment of a GitLab
//! Runner `config.toml` that asks for exactly what the policy enforces, so a
//! runner's own configuration and the webhook agree (and the mutating webhook
//! has nothing to add).

use toml::{Table, Value};

use super::webhooks::RenderError;
use crate::core::policy::{Policy, Profile, Requirement, ResourceName, Role, TolerationOperator};

/// Renders the fragment for one profile (the default one when `profile` is None).
pub fn runner_config(policy: &Policy, profile: Option<&str>) -> Result<String, RenderError> {
    let name = profile.unwrap_or(&policy.placement.default);
    let Some(prof) = policy.placement.profiles.get(name) else {
        return Err(RenderError::UnknownProfile {
            name: name.to_string(),
            known: policy.known_profiles(),
        });
    };
    let mut k = Table::new();
    // The first exact runner namespace this profile may be used in.
    if let Some(first) = prof
        .namespaces
        .as_ref()
        .unwrap_or(&policy.matching.namespaces)
        .iter()
        .find(|n| !n.ends_with('*'))
    {
        k.insert("namespace".into(), Value::String(first.clone()));
    }
    k.extend(requests(policy, prof));
    let labels = pod_labels(policy, name, prof);
    if !labels.is_empty() {
        k.insert("pod_labels".into(), Value::Table(labels));
    }
    let tolerations = node_tolerations(prof);
    if !tolerations.is_empty() {
        k.insert("node_tolerations".into(), Value::Table(tolerations));
    }
    if !prof.required_node_labels.is_empty() {
        k.insert("affinity".into(), affinity(&prof.required_node_labels));
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
    if policy.resources.defaults.init.is_some() {
        out.push_str("# init containers (init-permissions) use the helper_* requests; runner-fence applies its own init defaults.\n");
    }
    out.push_str(&body);
    Ok(out)
}

/// build -> cpu_request, helper (and init-permissions) -> helper_*, services -> service_*.
fn requests(policy: &Policy, prof: &Profile) -> Table {
    let mut k = Table::new();
    for (role, prefix) in [
        (Role::Build, ""),
        (Role::Helper, "helper_"),
        (Role::Service, "service_"),
    ] {
        for res in ResourceName::ALL {
            if let Some(q) = policy.default_request(prof, role, res) {
                k.insert(
                    format!("{prefix}{}_request", res.as_str()),
                    Value::String(q.as_str().into()),
                );
            }
        }
    }
    k
}

/// The profile label (unless it is the default profile), the labels of the
/// profile's selector (they choose it too) and its podLabels (injected anyway).
fn pod_labels(policy: &Policy, name: &str, prof: &Profile) -> Table {
    let mut labels = Table::new();
    if name != policy.placement.default {
        labels.insert(
            policy.placement.profile_label.clone(),
            Value::String(name.into()),
        );
    }
    for (key, v) in prof
        .selector
        .iter()
        .flat_map(|s| &s.match_labels)
        .chain(&prof.pod_labels)
    {
        labels.insert(key.clone(), Value::String(v.clone()));
    }
    labels
}

/// The runner's map form: "key=value" = "effect"; a bare key is Exists.
fn node_tolerations(prof: &Profile) -> Table {
    let mut tolerations = Table::new();
    for t in &prof.tolerations {
        let key = t.key.clone().unwrap_or_default();
        let entry = match (t.operator, &t.value) {
            (Some(TolerationOperator::Exists), _) => key,
            (_, Some(v)) => format!("{key}={v}"),
            (_, None) => format!("{key}="),
        };
        let effect = t.effect.map(|e| e.as_str()).unwrap_or("");
        tolerations.insert(entry, Value::String(effect.into()));
    }
    tolerations
}

/// `affinity.node_affinity.required_during_scheduling_ignored_during_execution`
/// with one term requiring `required`.
fn affinity(required: &[Requirement]) -> Value {
    let exprs: Vec<Value> = required
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
    let mut required = Table::new();
    required.insert(
        "node_selector_terms".into(),
        Value::Array(vec![Value::Table(term)]),
    );
    let mut node_affinity = Table::new();
    node_affinity.insert(
        "required_during_scheduling_ignored_during_execution".into(),
        Value::Table(required),
    );
    let mut affinity = Table::new();
    affinity.insert("node_affinity".into(), Value::Table(node_affinity));
    Value::Table(affinity)
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

    #[test]
    fn default_profile_matches_the_policy() {
        let p = embedded().expect("policy");
        let t = parse(&runner_config(&p, None).expect("render"));
        let k = k(&t);
        assert_eq!(k["namespace"].as_str(), Some("gitlab-runner"));
        assert_eq!(k["cpu_request"].as_str(), Some("500m"));
        assert_eq!(k["memory_request"].as_str(), Some("1Gi"));
        assert_eq!(k["helper_cpu_request"].as_str(), Some("100m"));
        assert_eq!(k["service_memory_request"].as_str(), Some("256Mi"));
        assert_eq!(
            k["node_tolerations"]["workload=gitlab-runner"].as_str(),
            Some("NoSchedule")
        );
        let e = &k["affinity"]["node_affinity"]["required_during_scheduling_ignored_during_execution"]
            ["node_selector_terms"][0]["match_expressions"][0];
        assert_eq!(e["key"].as_str(), Some("workload"));
        assert_eq!(e["operator"].as_str(), Some("In"));
        assert_eq!(e["values"][0].as_str(), Some("gitlab-runner"));
        assert!(k.get("pod_labels").is_none());
    }

    #[test]
    fn fargate_profile_selects_itself_and_fargate() {
        let p = embedded().expect("policy");
        let t = parse(&runner_config(&p, Some("fargate")).expect("render"));
        let k = k(&t);
        assert_eq!(k["pod_labels"]["use-fargate"].as_str(), Some("true"));
        assert_eq!(
            k["pod_labels"]["runner-fence.dev/profile"].as_str(),
            Some("fargate")
        );
        assert_eq!(k["cpu_request"].as_str(), Some("2"));
        assert_eq!(k["memory_request"].as_str(), Some("8Gi"));
        assert!(k.get("node_tolerations").is_none());
        assert!(
            runner_config(&p, Some("gpu"))
                .expect_err("unknown")
                .to_string()
                .contains("known profiles: fargate, runner-nodes")
        );
    }
}
