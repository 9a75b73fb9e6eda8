//! Property tests: mutation is idempotent, applies cleanly, keeps unknown
//! fields; clean job pods pass after their own mutation; no input panics.

mod common;

use common::{reference, review_of};
use proptest::prelude::*;
use runner_fence::core::engine::Endpoint;
use runner_fence::webhook::admission;
use runner_fence::webhook::eval::evaluate;
use serde_json::{Value, json};

fn quantity() -> impl Strategy<Value = String> {
    prop_oneof![
        (1u32..4000).prop_map(|n| format!("{n}m")),
        (1u32..4).prop_map(|n| n.to_string()),
        (1u32..8192).prop_map(|n| format!("{n}Mi")),
        (1u32..16).prop_map(|n| format!("{n}Gi")),
    ]
}

fn resources() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        Just(None),
        Just(Some(json!({}))),
        (
            proptest::option::of(quantity()),
            proptest::option::of(quantity())
        )
            .prop_map(|(c, m)| {
                let mut req = serde_json::Map::new();
                if let Some(c) = c {
                    req.insert("cpu".into(), json!(c));
                }
                if let Some(m) = m {
                    req.insert("memory".into(), json!(m));
                }
                Some(json!({"requests": req}))
            }),
    ]
}

fn container(name: String) -> impl Strategy<Value = Value> {
    (resources(), any::<bool>()).prop_map(move |(r, unknown)| {
        let mut c = json!({"name": name, "image": "alpine"});
        if let Some(r) = r {
            c["resources"] = r;
        }
        if unknown {
            c["x-future-field"] = json!({"keep": ["me"]});
        }
        c
    })
}

fn containers() -> impl Strategy<Value = Vec<Value>> {
    let names = prop_oneof![
        Just("build".to_string()),
        Just("helper".to_string()),
        (0u8..5).prop_map(|i| format!("svc-{i}")),
        "[a-z]{1,8}".prop_map(|s| s),
    ];
    proptest::collection::btree_set(names, 1..5)
        .prop_flat_map(|set| set.into_iter().map(container).collect::<Vec<_>>())
}

/// Keys and values that never name GitLab's nodes.
fn safe_expr() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(
            json!({"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["eu-west-1a", "eu-west-1b"]})
        ),
        Just(json!({"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]})),
        Just(json!({"key": "workload", "operator": "In", "values": ["gitlab-runner"]})),
        Just(json!({"key": "gpu", "operator": "DoesNotExist"})),
    ]
}

fn affinity() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        Just(None),
        Just(Some(json!({}))),
        Just(Some(json!({"nodeAffinity": {}}))),
        Just(Some(json!({"podAntiAffinity": {"x-unknown": 1}}))),
        Just(Some(json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{}]}}}))),
        proptest::collection::vec(proptest::collection::vec(safe_expr(), 0..3), 1..3).prop_map(|terms| {
            let terms: Vec<Value> = terms
                .into_iter()
                .map(|e| if e.is_empty() { json!({"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]}) } else { json!({"matchExpressions": e}) })
                .collect();
            Some(json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}}))
        }),
    ]
}

fn tolerations() -> impl Strategy<Value = Option<Value>> {
    let safe = prop_oneof![
        Just(
            json!({"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300})
        ),
        Just(
            json!({"key": "workload", "operator": "Equal", "value": "gitlab-runner", "effect": "NoSchedule"})
        ),
        Just(json!({"key": "workload", "value": "gitlab-runner", "effect": "NoSchedule"})),
        Just(
            json!({"key": "dedicated", "operator": "Equal", "value": "ci", "effect": "NoSchedule"})
        ),
    ];
    proptest::option::of(proptest::collection::vec(safe, 0..4).prop_map(Value::from))
}

prop_compose! {
    fn clean_job_pod()(
        containers in containers(),
        affinity in affinity(),
        tolerations in tolerations(),
        labels in proptest::option::of(proptest::collection::btree_map("[a-z]{1,6}", "[a-z0-9]{0,6}", 0..3)),
        fargate in any::<bool>(),
        unknown in any::<bool>(),
    ) -> Value {
        let mut pod = json!({
            "metadata": {"name": "runner-abc-project-1-concurrent-0-xyz", "namespace": "gitlab-runner"},
            "spec": {"containers": containers, "restartPolicy": "Never"},
        });
        if let Some(a) = affinity { pod["spec"]["affinity"] = a; }
        if let Some(t) = tolerations { pod["spec"]["tolerations"] = t; }
        if let Some(l) = labels { pod["metadata"]["labels"] = json!(l); }
        if fargate {
            if pod["metadata"]["labels"].is_null() { pod["metadata"]["labels"] = json!({}); }
            pod["metadata"]["labels"]["runner-fence.dev/profile"] = json!("fargate");
        }
        if unknown {
            pod["x-top-level"] = json!(true);
            pod["metadata"]["x-meta"] = json!("keep");
            pod["spec"]["x-spec"] = json!([1, 2, 3]);
        }
        pod
    }
}

fn mutate(
    policy: &runner_fence::core::policy::Policy,
    review: &Value,
) -> Vec<json_patch::PatchOperation> {
    let body = serde_json::to_vec(review).expect("json");
    let out = admission::handle(policy, Endpoint::Mutate, &body, None).expect("review");
    admission::response_patch(&out.response).expect("patch")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn mutation_applies_is_idempotent_and_keeps_unknown_fields(pod in clean_job_pod()) {
        let policy = reference();
        let review = review_of(pod.clone(), "CREATE");
        let ops = mutate(&policy, &review);
        let mut patched = pod.clone();
        prop_assert!(json_patch::patch(&mut patched, &ops).is_ok(), "patch does not apply: {:?}", ops);
        // Idempotent: a second pass finds nothing to do.
        let again = mutate(&policy, &review_of(patched.clone(), "CREATE"));
        prop_assert!(again.is_empty(), "second pass: {:?}", again);
        // Unknown fields survive wherever they were.
        for ptr in ["/x-top-level", "/metadata/x-meta", "/spec/x-spec", "/spec/affinity/podAntiAffinity"] {
            prop_assert_eq!(pod.pointer(ptr), patched.pointer(ptr), "{}", ptr);
        }
        for (i, c) in pod["spec"]["containers"].as_array().into_iter().flatten().enumerate() {
            prop_assert_eq!(c.get("x-future-field"), patched["spec"]["containers"][i].get("x-future-field"));
            prop_assert_eq!(&c["name"], &patched["spec"]["containers"][i]["name"]);
            // Existing requests are never changed (the reference policy denies, it does not clamp).
            for r in ["cpu", "memory"] {
                if let Some(q) = c.pointer(&format!("/resources/requests/{r}")) {
                    prop_assert_eq!(Some(q), patched["spec"]["containers"][i].pointer(&format!("/resources/requests/{r}")));
                }
            }
        }
    }

    #[test]
    fn clean_job_pods_are_allowed_after_their_own_mutation(pod in clean_job_pod()) {
        let mut policy = reference();
        // Protect by taint and by a label the fargate profile excludes, so both profiles are clean.
        policy.protected_nodes.match_expressions.push(runner_fence::core::policy::Requirement {
            key: "eks.amazonaws.com/compute-type".into(),
            operator: runner_fence::core::policy::Operator::DoesNotExist,
            values: vec![],
        });
        let ev = evaluate(&policy, &review_of(pod.clone(), "CREATE"), None).expect("eval");
        // Requests above max are audited, not enforced, in the reference policy.
        prop_assert!(ev.allowed(), "{:?}\n{}", ev.messages(), serde_json::to_string(&pod).unwrap_or_default());
    }

    #[test]
    fn arbitrary_json_never_panics_the_admission_layer(v in arb_json()) {
        let policy = reference();
        let body = serde_json::to_vec(&v).expect("json");
        for ep in [Endpoint::Mutate, Endpoint::Validate] {
            if let Ok(out) = admission::handle(&policy, ep, &body, None) {
                prop_assert!(serde_json::to_value(&out.response).expect("json")["response"]["allowed"].is_boolean());
            }
        }
    }

    #[test]
    fn arbitrary_objects_in_a_review_never_panic(obj in arb_json(), op in prop_oneof![Just("CREATE"), Just("UPDATE"), Just("DELETE"), Just("PATCH")]) {
        let policy = reference();
        let mut review = review_of(json!({}), op);
        review["request"]["object"] = obj.clone();
        review["request"]["oldObject"] = obj;
        let body = serde_json::to_vec(&review).expect("json");
        for ep in [Endpoint::Mutate, Endpoint::Validate] {
            let out = admission::handle(&policy, ep, &body, None);
            prop_assert!(out.is_ok());
            if let Ok(out) = out {
                prop_assert_eq!(&serde_json::to_value(&out.response).expect("json")["response"]["uid"], "00000000-0000-4000-8000-000000000000");
            }
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let policy = reference();
        let _ = admission::handle(&policy, Endpoint::Validate, &bytes, None);
    }

    #[test]
    fn mutated_fixtures_never_panic(idx in 0usize..13, path_pick in 0usize..64, value in arb_json()) {
        // Replace one node of a real fixture's pod with random JSON.
        let names = common::fixture_names();
        let mut review = common::fixture(&names[idx % names.len()]);
        let mut ptrs = Vec::new();
        collect_pointers(&review["request"]["object"], String::from("/request/object"), &mut ptrs);
        let ptr = &ptrs[path_pick % ptrs.len()];
        if let Some(slot) = review.pointer_mut(ptr) {
            *slot = value;
        }
        let policy = reference();
        let body = serde_json::to_vec(&review).expect("json");
        for ep in [Endpoint::Mutate, Endpoint::Validate] {
            let out = admission::handle(&policy, ep, &body, None);
            prop_assert!(out.is_ok(), "{:?}", out.err());
        }
    }

    #[test]
    fn arbitrary_yaml_never_panics_the_policy_loader(src in "[ -~\n]{0,400}") {
        let _ = runner_fence::core::policy::parse(&src, "fuzz.yaml");
    }

    #[test]
    fn mutated_reference_policy_never_panics(pos in 0usize..2000, insert in "[ -~\n]{0,12}") {
        let src = runner_fence::core::policy::EMBEDDED_POLICY;
        let pos = src.floor_char_boundary(pos % src.len());
        let broken = format!("{}{}{}", &src[..pos], insert, &src[pos..]);
        if let Err(e) = runner_fence::core::policy::parse(&broken, "fuzz.yaml") {
            prop_assert!(e.to_string().starts_with("fuzz.yaml"));
        }
    }
}

fn collect_pointers(v: &Value, at: String, out: &mut Vec<String>) {
    out.push(at.clone());
    match v {
        Value::Object(m) => {
            for (k, c) in m.iter().take(20) {
                collect_pointers(
                    c,
                    format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")),
                    out,
                );
            }
        }
        Value::Array(a) => {
            for (i, c) in a.iter().enumerate().take(5) {
                collect_pointers(c, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        "[a-zA-Z0-9 /.~-]{0,12}".prop_map(Value::from),
        prop_oneof![
            Just("Pod"),
            Just("CREATE"),
            Just("runner-x"),
            Just("gitlab-runner"),
            Just("In"),
            Just("Exists")
        ]
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            proptest::collection::btree_map(
                prop_oneof![
                    Just("metadata".to_string()),
                    Just("spec".to_string()),
                    Just("containers".to_string()),
                    Just("name".to_string()),
                    Just("labels".to_string()),
                    Just("tolerations".to_string()),
                    Just("affinity".to_string()),
                    Just("request".to_string()),
                    Just("object".to_string()),
                    "[a-z]{1,6}".prop_map(|s| s),
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}
