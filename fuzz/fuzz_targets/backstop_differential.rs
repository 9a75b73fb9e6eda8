//! Structure-aware, the differential of tests/backstop.rs for longer runs: pods
//! drawn from the same alphabets (labels choosing a profile, nodeSelector,
//! required terms, tolerations, nodeName; as CREATE or as the UPDATE that ungates
//! them) through the generated backstop's CEL and the Rust engine. The checks and
//! the CEL evaluation are tests/backstop_cel, included by path: the backstop never
//! admits what the engine says can reach a protected node, and admits what
//! runner-fence placed and admitted. Sizes go a little past proptest's.
#![no_main]

use std::collections::BTreeMap;
use std::sync::OnceLock;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use runner_fence::core::policy::Policy;

#[path = "../../tests/backstop_cel/mod.rs"]
mod backstop_cel;

use backstop_cel::{
    EFFECTS, KEYS, NODE_NAMES, PROFILE_LABELS, PROFILE_REQUIREMENTS, REQUIREMENT_OPERATORS, TOLERATION_OPERATORS, VALUES,
};

#[derive(Arbitrary, Debug)]
enum Check {
    /// A CREATE the backstop admits reaches no protected node.
    Create,
    /// The same for the UPDATE that removes the pod's scheduling gate.
    Ungating,
    /// What runner-fence placed and admits, the backstop admits.
    Placed,
}

#[derive(Arbitrary, Debug)]
struct Toleration {
    key: Option<u8>,
    operator: Option<u8>,
    value: Option<u8>,
    effect: Option<u8>,
}

#[derive(Arbitrary, Debug)]
enum Requirement {
    Any { key: u8, operator: u8, values: Vec<u8> },
    /// A profile's requirement, or widened by one value.
    NearProfile { profile: u8, extra: Option<u8> },
}

#[derive(Arbitrary, Debug)]
struct Input {
    check: Check,
    label: Option<u8>,
    node_selector: Vec<(u8, u8)>,
    terms: Option<Vec<Vec<Requirement>>>,
    tolerations: Vec<Toleration>,
    node_name: Option<u8>,
}

/// Bounds every list: the checks evaluate all of the backstop's CEL per input.
const MAX: usize = 4;

fn pick<T: Copy>(from: &[T], i: u8) -> T {
    from[usize::from(i) % from.len()]
}

fn policy() -> &'static Policy {
    static P: OnceLock<Policy> = OnceLock::new();
    P.get_or_init(|| runner_fence::core::policy::embedded().expect("reference policy"))
}

fuzz_target!(|input: Input| {
    let node_selector: BTreeMap<&str, &str> = input
        .node_selector
        .iter()
        .take(MAX)
        .map(|&(k, v)| (pick(&KEYS[..3], k), pick(&VALUES[..5], v)))
        .collect();
    let terms = input.terms.map(|terms| {
        terms
            .iter()
            .take(MAX)
            .map(|t| {
                t.iter()
                    .take(MAX)
                    .map(|r| match r {
                        Requirement::Any { key, operator, values } => {
                            // In/NotIn need a value; Kubernetes refuses an empty list.
                            let mut values: Vec<&str> =
                                values.iter().take(MAX).map(|&v| pick(&VALUES[..5], v)).collect();
                            if values.is_empty() {
                                values.push(VALUES[0]);
                            }
                            backstop_cel::requirement(
                                pick(&KEYS[..3], *key),
                                pick(REQUIREMENT_OPERATORS, *operator),
                                &values,
                            )
                        }
                        Requirement::NearProfile { profile, extra } => backstop_cel::near_profile(
                            pick(PROFILE_REQUIREMENTS, *profile),
                            extra.map(|v| pick(&VALUES[..5], v)),
                        ),
                    })
                    .collect()
            })
            .collect()
    });
    let tolerations = input
        .tolerations
        .iter()
        .take(MAX)
        .map(|t| {
            backstop_cel::toleration(
                t.key.map(|i| pick(KEYS, i)),
                t.operator.map(|i| pick(TOLERATION_OPERATORS, i)),
                t.value.map(|i| pick(VALUES, i)),
                t.effect.map(|i| pick(EFFECTS, i)),
            )
        })
        .collect();
    let spec = backstop_cel::spec(
        &node_selector,
        terms,
        tolerations,
        input.node_name.map(|i| pick(NODE_NAMES, i)),
    );
    let pod = backstop_cel::pod(
        backstop_cel::labels(input.label.map(|i| pick(PROFILE_LABELS, i))),
        spec,
    );
    let p = policy();
    let result = match input.check {
        Check::Create => backstop_cel::never_admits_what_reaches(
            p,
            &backstop_cel::review_of(&pod, "CREATE", None),
        ),
        Check::Ungating => {
            backstop_cel::never_admits_what_reaches(p, &backstop_cel::ungating_review(&pod))
        }
        Check::Placed => backstop_cel::admits_what_runner_fence_places(
            p,
            &backstop_cel::review_of(&pod, "CREATE", None),
        ),
    };
    if let Err(e) = result {
        panic!("{e}");
    }
});
