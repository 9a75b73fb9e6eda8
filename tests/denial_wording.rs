//! What denials say, exactly: a toleration denial says what the policy lists
//! and, with the node cache, whether GitLab's nodes carry the taint; a profile
//! denial names the label only when the label chose the profile.

mod common;

use common::{reference, review_of};
use rstest::rstest;
use runner_fence::core::engine::Endpoint;
use runner_fence::core::nodes::{NodeInfo, NodeSnapshot};
use runner_fence::core::policy::{EMBEDDED_POLICY, Policy, parse};
use runner_fence::webhook::admission;
use serde_json::{Value, json};

fn node(name: &str, workload: &str, tainted: bool) -> NodeInfo {
    NodeInfo {
        name: name.into(),
        labels: [("workload".to_string(), workload.to_string())].into(),
        taints: if tainted {
            vec![k8s_openapi::api::core::v1::Taint {
                key: "workload".into(),
                value: Some(workload.into()),
                effect: "NoSchedule".into(),
                time_added: None,
            }]
        } else {
            vec![]
        },
    }
}

/// The seed cluster: GitLab's nodes untainted, the runner node group tainted.
fn untainted_gitlab() -> Option<NodeSnapshot> {
    Some(NodeSnapshot::new([
        node("gitlab-1", "gitlab", false),
        node("gitlab-2", "gitlab", false),
        node("runner-1", "gitlab-runner", true),
    ]))
}

fn tainted_gitlab(n: usize) -> Option<NodeSnapshot> {
    let gitlab = (1..=n).map(|i| node(&format!("gitlab-{i}"), "gitlab", true));
    Some(NodeSnapshot::new(gitlab.chain([node(
        "runner-1",
        "gitlab-runner",
        true,
    )])))
}

/// The reference policy with the fargate profile restricted to `ci-job-*`.
fn fargate_for_ci_jobs_only() -> Policy {
    let src = EMBEDDED_POLICY
        .replacen(
            "namespaces: [gitlab-runner]",
            "namespaces: [gitlab-runner, ci-job-*]",
            1,
        )
        .replacen(
            "      fargate: true\n",
            "      fargate: true\n      namespaces: [ci-job-*]\n",
            1,
        );
    parse(&src, "p.yaml").expect("policy")
}

fn pod(labels: Value, tolerations: Value) -> Value {
    json!({
        "metadata": {"name": "runner-abc-project-1-concurrent-0-xyz", "namespace": "gitlab-runner", "labels": labels},
        "spec": {
            "containers": [{"name": "build", "image": "alpine"}],
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "workload", "operator": "In", "values": ["gitlab-runner"]}]}]}}},
            "tolerations": tolerations,
        }
    })
}

const GITLAB: fn() -> Value =
    || json!([{"key": "workload", "operator": "Equal", "value": "gitlab", "effect": "NoSchedule"}]);

/// The first denial of `/validate` for the pod, as shown.
#[rstest]
#[case::toleration_without_node_cache(reference(), pod(json!({}), GITLAB()), None,
    "protected-nodes: spec.tolerations[0] tolerates workload=gitlab:NoSchedule, the taint protectedNodes.taints lists for GitLab's nodes; remove the KUBERNETES_NODE_TOLERATIONS_* override")]
#[case::toleration_gitlab_nodes_untainted(reference(), pod(json!({}), GITLAB()), untainted_gitlab(),
    "protected-nodes: spec.tolerations[0] tolerates workload=gitlab:NoSchedule, the taint protectedNodes.taints lists for GitLab's nodes, though no protected node in the cluster carries it now; remove the KUBERNETES_NODE_TOLERATIONS_* override")]
#[case::toleration_one_node_carries_it(reference(), pod(json!({}), GITLAB()), tainted_gitlab(1),
    "protected-nodes: spec.tolerations[0] tolerates workload=gitlab:NoSchedule, the taint protectedNodes.taints lists for GitLab's nodes, which gitlab-1 carries; remove the KUBERNETES_NODE_TOLERATIONS_* override")]
#[case::toleration_many_nodes_carry_it(reference(), pod(json!({}), GITLAB()), tainted_gitlab(5),
    "protected-nodes: spec.tolerations[0] tolerates workload=gitlab:NoSchedule, the taint protectedNodes.taints lists for GitLab's nodes, which gitlab-1, gitlab-2, gitlab-3 and 2 more carry; remove the KUBERNETES_NODE_TOLERATIONS_* override")]
#[case::tolerate_everything(reference(), pod(json!({}), json!([{"operator": "Exists"}])), untainted_gitlab(),
    "protected-nodes: spec.tolerations[0] tolerates workload=gitlab:NoSchedule, the taint protectedNodes.taints lists for GitLab's nodes, though no protected node in the cluster carries it now (it tolerates every taint (empty key, operator Exists)); remove the KUBERNETES_NODE_TOLERATIONS_* override")]
#[case::profile_by_label(fargate_for_ci_jobs_only(), pod(json!({"runner-fence.dev/profile": "fargate"}), json!([])), None,
    "placement: metadata.labels[runner-fence.dev/profile] asks for profile \"fargate\", which pods in namespace gitlab-runner may not use; allowed profiles: runner-nodes")]
#[case::profile_by_selector(fargate_for_ci_jobs_only(), pod(json!({"use-fargate": "true"}), json!([])), None,
    "placement: metadata.labels match the selector of profile \"fargate\" (placement.profiles.fargate.selector), which pods in namespace gitlab-runner may not use; allowed profiles: runner-nodes")]
#[case::unknown_profile(reference(), pod(json!({"runner-fence.dev/profile": "gpu"}), json!([])), None,
    "placement: metadata.labels[runner-fence.dev/profile] names unknown profile \"gpu\"; allowed profiles: fargate, runner-nodes")]
fn denials_say(
    #[case] policy: Policy,
    #[case] pod: Value,
    #[case] nodes: Option<NodeSnapshot>,
    #[case] want: &str,
) {
    let body = serde_json::to_vec(&review_of(pod, "CREATE")).expect("json");
    let d = admission::handle(&policy, Endpoint::Validate, &body, nodes.as_ref())
        .expect("review")
        .decision;
    let shown: Vec<String> = d.denials().iter().map(ToString::to_string).collect();
    assert_eq!(
        shown.first().map(String::as_str),
        Some(want),
        "all: {shown:#?}"
    );
}
