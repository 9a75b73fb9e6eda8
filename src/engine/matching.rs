//! Which requests concern job pods (SPEC §2).

use super::pod::MetaView;
#[cfg(test)]
use super::pod::PodView;
use crate::policy::Policy;

/// Is the namespace one of the runner namespaces (`prefix*` entries match prefixes)?
pub fn namespace_matches(policy: &Policy, namespace: &str) -> bool {
    policy
        .matching
        .namespaces
        .iter()
        .any(|ns| match ns.strip_suffix('*') {
            Some(prefix) => namespace.starts_with(prefix),
            None => ns == namespace,
        })
}

/// Does the pod name start with one of the prefixes (any name when there are none)?
pub fn name_matches(policy: &Policy, name: &str) -> bool {
    let prefixes = &policy.matching.pod_name_prefixes;
    prefixes.is_empty() || prefixes.iter().any(|p| name.starts_with(p.as_str()))
}

/// Name, required labels and exclusions; the namespace is checked separately
/// because it comes from the request, not the object.
pub fn pod_matches(policy: &Policy, pod: &MetaView) -> bool {
    let labels = pod.labels();
    name_matches(policy, pod.match_name())
        && policy
            .matching
            .require_labels
            .iter()
            .all(|k| labels.contains_key(k))
        && !policy
            .matching
            .exclude
            .labels
            .iter()
            .any(|(k, v)| labels.get(k) == Some(v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::embedded;
    use serde_json::json;

    #[test]
    fn namespace_prefixes() {
        let mut p = embedded().expect("policy");
        p.matching.namespaces = vec!["gitlab-runner".into(), "ci-job-*".into()];
        assert!(namespace_matches(&p, "gitlab-runner"));
        assert!(namespace_matches(&p, "ci-job-123"));
        assert!(!namespace_matches(&p, "gitlab-runner-2"));
        assert!(!namespace_matches(&p, "ci-jo"));
    }

    fn view(v: serde_json::Value) -> MetaView {
        PodView::from_value(&v).expect("pod").metadata
    }

    #[test]
    fn generate_name_is_used_while_name_is_empty() {
        let p = embedded().expect("policy");
        let pod = view(
            json!({"metadata": {"name": "", "generateName": "runner-abc-"}, "spec": {"containers": []}}),
        );
        assert!(pod_matches(&p, &pod));
        let pod = view(
            json!({"metadata": {"generateName": "gitlab-runner-7d9-"}, "spec": {"containers": []}}),
        );
        assert!(!pod_matches(&p, &pod));
    }

    #[test]
    fn require_and_exclude_labels() {
        let mut p = embedded().expect("policy");
        p.matching.require_labels = vec!["job.runner.gitlab.com/pod".into()];
        let with = view(
            json!({"metadata": {"name": "runner-x", "labels": {"job.runner.gitlab.com/pod": "runner-x"}}}),
        );
        let without = view(json!({"metadata": {"name": "runner-x"}}));
        let excluded = view(
            json!({"metadata": {"name": "runner-x", "labels": {"job.runner.gitlab.com/pod": "x", "app": "gitlab-runner"}}}),
        );
        assert!(pod_matches(&p, &with));
        assert!(!pod_matches(&p, &without));
        assert!(!pod_matches(&p, &excluded));
        p.matching.pod_name_prefixes.clear();
        let any = view(
            json!({"metadata": {"name": "netshoot", "labels": {"job.runner.gitlab.com/pod": "x"}}}),
        );
        assert!(pod_matches(&p, &any));
    }
}
