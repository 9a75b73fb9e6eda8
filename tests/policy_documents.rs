//! Policy documents: what the loader says about each, exactly, and that the
//! JSON Schema gives the same verdict (the property test in
//! `src/core/policy/schema.rs` covers generated documents).

use rstest::rstest;
use runner_fence::core::policy::{EMBEDDED_POLICY, json_schema, parse};
use serde_json::Value;

/// What the schema sees of a YAML document: YAML 1.2 core data.
fn as_data(src: &str) -> Value {
    let options = serde_saphyr::options! { strict_booleans: true };
    serde_saphyr::from_str_with_options(src, options).unwrap_or(Value::Null)
}

fn schema_accepts(src: &str) -> bool {
    let validator = jsonschema::validator_for(json_schema().as_value()).expect("schema");
    validator.is_valid(&as_data(src))
}

const BOOLEANS: &str = "true or false (YAML 1.2 booleans: true, True, TRUE, false, False, FALSE; yes, no, on, off and quoted values are strings)";

/// `from` replaced by `to` in the reference policy: the loader's whole answer
/// (`Ok` or the error as shown), and whether the schema accepts it too (`None`:
/// a semantic check the schema cannot express, see the README).
#[rstest]
#[case::quoted_yes("allowNodeName: false", "allowNodeName: \"yes\"", Err(format!("p.yaml:24:1: allowNodeName: expected {BOOLEANS}, got string \"yes\"")), Some(false))]
#[case::plain_yes("allowNodeName: false", "allowNodeName: yes", Err(format!("p.yaml:24:1: allowNodeName: expected {BOOLEANS}, got string \"yes\"")), Some(false))]
#[case::on("allowNodeName: false", "allowNodeName: on", Err(format!("p.yaml:24:1: allowNodeName: expected {BOOLEANS}, got string \"on\"")), Some(false))]
#[case::quoted_true("allowNodeName: false", "allowNodeName: \"true\"", Err(format!("p.yaml:24:1: allowNodeName: expected {BOOLEANS}, got string \"true\"")), Some(false))]
#[case::number_for_boolean("allowNodeName: false", "allowNodeName: 1", Err(format!("p.yaml:24:1: allowNodeName: expected {BOOLEANS}, got integer 1")), Some(false))]
#[case::capitalised_true("allowNodeName: false", "allowNodeName: True", Ok(()), Some(true))]
#[case::profile_fargate_no("      fargate: true\n", "      fargate: no\n", Err(format!("p.yaml:43:7: placement.profiles.fargate.fargate: expected {BOOLEANS}, got string \"no\"")), Some(false))]
#[case::unknown_rule("resources: audit\n", "resource: audit\n", Err("p.yaml:9:3: rules.resource: \"resource\" is not one of protected-nodes, node-name, placement, fargate-compat, resources".into()), Some(false))]
#[case::unknown_mode_of_a_rule("resources: audit\n", "resources: block\n", Err("p.yaml:9:14: rules.resources: \"block\" is not one of enforce, audit".into()), Some(false))]
#[case::rule_mode_not_a_string("resources: audit\n", "resources: 3\n", Err("p.yaml:9:14: rules.resources: expected a string, got 3 (a YAML number); quote it if the text is meant".into()), Some(false))]
#[case::unknown_field("allowNodeName: false", "allowNodeNames: false", Err("p.yaml:24:1: allowNodeNames: unknown field `allowNodeNames`, expected one of apiVersion, kind, metadata, mode, rules, match, protectedNodes, allowNodeName, fargate, placement, resources".into()), Some(false))]
#[case::duplicate_profile("    fargate:\n", "    runner-nodes:\n", Err("p.yaml:38:5: placement.profiles.runner-nodes: key \"runner-nodes\" appears twice in the same mapping; keep one".into()), None)]
#[case::duplicate_top_level_key("mode: enforce", "mode: enforce\nmode: audit", Err("p.yaml:8:1: mode: key \"mode\" appears twice in the same mapping; keep one".into()), None)]
#[case::unquoted_label_value("use-fargate: \"true\"}", "use-fargate: true}", Err("p.yaml:28:29: fargate.selectors[0].labels.use-fargate: expected a string, got true (a YAML boolean); quote it if the text is meant".into()), Some(false))]
#[case::number_for_a_name("name: gitlab-runner-jobs", "name: 123", Err("p.yaml:6:9: metadata.name: expected a string, got 123 (a YAML number); quote it if the text is meant".into()), Some(false))]
#[case::null_mode("mode: enforce ", "mode: null ", Err("p.yaml:7:7: mode: expected a string, got null (a YAML null); quote it if the text is meant".into()), Some(false))]
#[case::list_for_a_string("name: gitlab-runner-jobs", "name: [a]", Err("p.yaml:6:9: metadata.name: expected a string".into()), Some(false))]
#[case::quoted_toleration_seconds("value: gitlab-runner, effect: NoSchedule}", "value: gitlab-runner, effect: NoSchedule, tolerationSeconds: \"30\"}", Err("p.yaml:37:86: placement.profiles.runner-nodes.tolerations[0].tolerationSeconds: expected a whole number of seconds, got string \"30\"".into()), Some(false))]
#[case::whole_float_toleration_seconds("value: gitlab-runner, effect: NoSchedule}", "value: gitlab-runner, effect: NoSchedule, tolerationSeconds: 30.0}", Ok(()), Some(true))]
#[case::second_document("  onExceed: deny", "  onExceed: deny\n---\nkind: RunnerPolicy", Err("p.yaml:62:1: a second YAML document (after `---`); a policy file holds exactly one (`runner-fence lint FILE` judges a file of several RunnerFencePolicy objects)".into()), None)]
#[case::wrong_kind("kind: RunnerPolicy", "kind: Policy", Err("p.yaml:4:7: kind: must be RunnerPolicy, got \"Policy\"".into()), Some(false))]
#[case::no_namespaces("namespaces: [gitlab-runner]", "namespaces: []", Err("p.yaml:13:15: match.namespaces: must list at least one runner namespace".into()), Some(false))]
#[case::semantic_kube_system("namespaces: [gitlab-runner]", "namespaces: [gitlab-runner, kube-*]", Err("p.yaml:13:31: match.namespaces[1]: \"kube-*\" covers kube-system, which the webhooks never review; name the runner namespaces".into()), None)]
#[case::removed_exemption("namespaces: [gitlab-runner]\n", "namespaces: [gitlab-runner]\n  podNamePrefixes: [runner-]\n", Err("p.yaml:14:20: match.podNamePrefixes: no longer exempts pods: every pod in match.namespaces is fenced, whatever its name or labels (an attacker writes both); remove it (job pods are chosen by namespace only)".into()), Some(false))]
fn policy_documents(
    #[case] from: &str,
    #[case] to: &str,
    #[case] want: Result<(), String>,
    #[case] schema: Option<bool>,
) {
    assert!(
        EMBEDDED_POLICY.contains(from),
        "{from:?} not in the reference policy"
    );
    let src = EMBEDDED_POLICY.replacen(from, to, 1);
    let got = parse(&src, "p.yaml").map(drop).map_err(|e| e.to_string());
    assert_eq!(got, want);
    if let Some(accepts) = schema {
        assert_eq!(schema_accepts(&src), accepts, "the schema's verdict");
    }
}

/// Whole documents that are not a policy at all.
#[rstest]
#[case::empty(
    "",
    "p.yaml:1:1: the document is empty; a policy is a RunnerPolicy mapping (apiVersion, kind, metadata, match, protectedNodes, placement)"
)]
#[case::a_list("- a\n", "p.yaml:1:1: expected a mapping (key: value)")]
#[case::null("null\n", "p.yaml:1:1: expected a mapping (key: value)")]
#[case::truncated(
    "apiVersion: runner-fence.dev/v1alpha1\nkind: [",
    "p.yaml:2:7: kind: unclosed bracket '['"
)]
#[case::truncated_mapping(
    "apiVersion: runner-fence.dev/v1alpha1\nmetadata: {name: x",
    "p.yaml:2:11: metadata: unclosed bracket '{'"
)]
fn not_a_policy(#[case] src: &str, #[case] want: &str) {
    let err = parse(src, "p.yaml").expect_err("not a policy");
    assert_eq!(err.to_string(), want);
    assert!(!schema_accepts(src));
}

/// No message of the loader gives advice about a library's API.
#[test]
fn messages_are_ours() {
    let broken = [
        EMBEDDED_POLICY.replacen("    fargate:\n", "    runner-nodes:\n", 1),
        format!("{EMBEDDED_POLICY}---\n{EMBEDDED_POLICY}"),
        EMBEDDED_POLICY.replacen("name: gitlab-runner-jobs", "name: null", 1),
        EMBEDDED_POLICY.replacen("resources: audit\n", "resources: [audit]\n", 1),
        EMBEDDED_POLICY.replacen("resources: audit\n", "resource: audit\n", 1),
    ];
    for src in broken {
        let e = parse(&src, "p.yaml").expect_err("broken").to_string();
        for leak in [
            "Options",
            "from_str",
            "Option<",
            "serde",
            "?:",
            ".?",
            "strict mode",
        ] {
            assert!(!e.contains(leak), "{e:?} contains {leak:?}");
        }
    }
}
