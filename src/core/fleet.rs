//! Several policies in one cluster (SPEC §12): which policy reviews which
//! namespace, which `RunnerFencePolicy` objects are Ready, and what their
//! `status` says. Pure: the controller (`k8s::controller`) feeds it the
//! objects it watches, already run through the one loader.
//!
//! The fence never opens by accident: a policy whose new spec is invalid or
//! conflicts keeps serving its last valid spec (persisted in
//! `status.enforcedSpec`, so a restart does not lose it), and a deleted policy
//! keeps serving until its removal is allowed explicitly.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::core::policy::{
    API_VERSION, LoadError, Mode, OBJECT_KIND, Policy, lint, namespace_pattern_matches, parse,
    pattern_within,
};

/// Finalizer that holds a deleted policy (and its fence) until removal is allowed.
pub const FINALIZER: &str = "runner-fence.dev/keep-enforced";
/// Annotation that allows a deleted policy to go: `runner-fence.dev/allow-removal: "true"`.
pub const ALLOW_REMOVAL: &str = "runner-fence.dev/allow-removal";
/// The condition runner-fence writes.
pub const READY: &str = "Ready";

/// The policies a server reviews with, in precedence order.
#[derive(Clone, Debug, Default)]
pub struct PolicySet {
    policies: Vec<Arc<Policy>>,
}

impl PolicySet {
    /// One policy (the `--policy` file or the embedded reference).
    pub fn single(policy: Policy) -> Self {
        PolicySet {
            policies: vec![Arc::new(policy)],
        }
    }

    /// Policies in precedence order: where two cover a namespace, the first reviews it.
    pub fn new(policies: Vec<Arc<Policy>>) -> Self {
        PolicySet { policies }
    }

    /// The policy that reviews requests in `namespace`: the first that covers it.
    pub fn covering(&self, namespace: &str) -> Option<&Policy> {
        self.policies
            .iter()
            .map(Arc::as_ref)
            .find(|p| p.matching.covers(namespace))
    }

    /// The first policy (answers requests no policy covers: they are skipped).
    pub fn first(&self) -> Option<&Policy> {
        self.policies.first().map(Arc::as_ref)
    }

    /// The policies, in precedence order.
    pub fn iter(&self) -> impl Iterator<Item = &Policy> {
        self.policies.iter().map(Arc::as_ref)
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.policies.len()
    }

    /// None at all.
    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }

    /// Every namespace pattern of every policy, each once, in order: the
    /// webhooks' scope.
    pub fn namespaces(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for ns in self.iter().flat_map(|p| p.matching.namespaces.iter()) {
            if !out.contains(ns) {
                out.push(ns.clone());
            }
        }
        out
    }
}

/// Whether two namespace patterns (exact or `prefix*`) share a namespace.
pub fn overlap(a: &str, b: &str) -> bool {
    pattern_within(a, b) || pattern_within(b, a)
}

/// One `RunnerFencePolicy` as the controller sees it.
#[derive(Clone, Debug)]
pub struct Candidate {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.creationTimestamp`, seconds (earlier wins a conflict; within
    /// one second a policy already enforcing wins, then the name).
    pub created: i64,
    /// `metadata.generation`.
    pub generation: i64,
    /// `spec` as stored.
    pub spec_json: Value,
    /// `spec` through the loader.
    pub spec: Result<Policy, LoadError>,
    /// `status.enforcedSpec` through the loader, with `status.enforcedGeneration`.
    pub enforced: Option<(Policy, i64)>,
    /// `status.enforcedSpec` as stored.
    pub enforced_json: Option<Value>,
    /// `metadata.deletionTimestamp` is set.
    pub deleting: bool,
    /// The [`ALLOW_REMOVAL`] annotation is `"true"`.
    pub removal_allowed: bool,
}

/// What a policy's Ready condition says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// The current spec is enforced.
    Ready,
    /// The current spec does not load.
    Invalid,
    /// The current spec claims a namespace an earlier policy reviews.
    Conflict,
    /// Deleted; held (still enforced) until removal is allowed.
    Deleting,
    /// Deleted and removal allowed: no longer enforced, the finalizer goes.
    Released,
}

impl State {
    /// The condition's reason, and the `state` label of the metric.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Ready => "Ready",
            State::Invalid => "Invalid",
            State::Conflict => "Conflict",
            State::Deleting => "Deleting",
            State::Released => "Released",
        }
    }

    /// All states, for the metric.
    pub const ALL: [State; 5] = [
        State::Ready,
        State::Invalid,
        State::Conflict,
        State::Deleting,
        State::Released,
    ];
}

/// Which spec of a policy is enforced.
#[derive(Clone, Debug, PartialEq)]
pub enum Enforced {
    /// Nothing (never valid, or released).
    Nothing,
    /// The current spec (generation).
    Current(i64),
    /// The last valid spec (its generation), the current one being rejected.
    LastGood(i64),
}

/// The controller's judgement of one policy.
#[derive(Clone, Debug)]
pub struct Verdict {
    /// `metadata.name`.
    pub name: String,
    /// Ready, Invalid, ...
    pub state: State,
    /// The condition message: what is wrong, the field path and the fix, and what is enforced.
    pub message: String,
    /// Which spec serves.
    pub enforced: Enforced,
    /// The generation judged.
    pub generation: i64,
}

/// What all policies come to: the set the servers review with, and one verdict each.
#[derive(Clone, Debug, Default)]
pub struct Resolution {
    /// The served policies, in precedence order.
    pub set: PolicySet,
    /// One per candidate, in precedence order.
    pub verdicts: Vec<Verdict>,
}

/// A stored object's `spec` through the one loader: the same checks and
/// words as `runner-fence lint` on the object (errors under `spec.`).
pub fn load_object(name: &str, spec: &Value) -> Result<Policy, LoadError> {
    let doc = serde_json::json!({
        "apiVersion": API_VERSION,
        "kind": OBJECT_KIND,
        "metadata": {"name": name},
        "spec": spec,
    });
    let text = serde_json::to_string_pretty(&doc).unwrap_or_default();
    parse(&text, &format!("{OBJECT_KIND}/{name}"))
}

/// A load error as the CLI prints it, without the file position (which is
/// meaningless for an object read from the API).
pub fn load_message(e: &LoadError) -> String {
    if e.path.is_empty() {
        e.message.clone()
    } else {
        format!("{}: {}", e.path, e.message)
    }
}

/// The first pattern of `policy` that overlaps one of an earlier served policy: (index, own, other policy, its pattern).
fn conflict<'a>(
    policy: &Policy,
    earlier: &'a [(String, Arc<Policy>)],
) -> Option<(usize, String, &'a str, String)> {
    for (i, ns) in policy.matching.namespaces.iter().enumerate() {
        for (other, p) in earlier {
            if let Some(theirs) = p.matching.namespaces.iter().find(|o| overlap(ns, o)) {
                return Some((i, ns.clone(), other.as_str(), theirs.clone()));
            }
        }
    }
    None
}

/// The first pattern of `policy` that covers a namespace the webhooks never
/// review (runner-fence's own): its index, the pattern and the namespace.
fn covers_excluded<'a>(policy: &Policy, excluded: &[&'a str]) -> Option<(usize, String, &'a str)> {
    policy
        .matching
        .namespaces
        .iter()
        .enumerate()
        .find_map(|(i, p)| {
            excluded
                .iter()
                .find(|ns| namespace_pattern_matches(p, ns))
                .map(|ns| (i, p.clone(), *ns))
        })
}

/// [`resolve_excluding`] with nothing excluded.
pub fn resolve(candidates: Vec<Candidate>) -> Resolution {
    resolve_excluding(candidates, &[])
}

/// Judges every policy. Candidates are taken in precedence order: creation
/// time; within one second (the timestamp's precision) a policy that already
/// enforces a spec before one that never did, so a policy created in the same
/// second cannot take namespaces from one already serving them; then the name.
/// A spec that claims a namespace of an earlier served
/// policy is a `Conflict`, one that covers an `excluded` namespace (the
/// webhook's own, never reviewed) is `Invalid`. A policy whose current spec
/// cannot be enforced keeps serving its last valid one.
pub fn resolve_excluding(mut candidates: Vec<Candidate>, excluded: &[&str]) -> Resolution {
    candidates.sort_by(|a, b| {
        (a.created, a.enforced.is_none(), &a.name).cmp(&(b.created, b.enforced.is_none(), &b.name))
    });
    let mut served: Vec<(String, Arc<Policy>)> = Vec::new();
    let mut verdicts = Vec::new();
    for mut c in candidates {
        if c.enforced
            .as_ref()
            .is_some_and(|(p, _)| covers_excluded(p, excluded).is_some())
        {
            c.enforced = None;
        }
        let still = |what: &str| match &c.enforced {
            Some((_, g)) => format!(
                "{what}; still enforcing generation {g}, the last valid spec (status.enforcedSpec)"
            ),
            None => format!("{what}; nothing is enforced for this policy yet"),
        };
        let current = match &c.spec {
            Ok(p) if let Some((i, pattern, ns)) = covers_excluded(p, excluded) => Err((
                State::Invalid,
                format!(
                    "spec.match.namespaces[{i}]: {pattern:?} covers {ns}, runner-fence's own namespace, which the webhooks never review (the fence could not hold there); narrow the entry"
                ),
            )),
            Ok(p) => match conflict(p, &served) {
                None => Ok(p.clone()),
                Some((i, ns, other, theirs)) => Err((
                    State::Conflict,
                    format!(
                        "spec.match.namespaces[{i}]: {ns:?} overlaps {theirs:?} of RunnerFencePolicy {other}, which is older and reviews it; give each namespace to one policy"
                    ),
                )),
            },
            Err(e) => Err((State::Invalid, load_message(e))),
        };
        let (state, message, enforced, policy) = if c.deleting && c.removal_allowed {
            (
                State::Released,
                format!("deleted and {ALLOW_REMOVAL}=true: no longer enforced"),
                Enforced::Nothing,
                None,
            )
        } else if c.deleting {
            let (enforced, policy) = match (current, &c.enforced) {
                (Ok(p), _) => (Enforced::Current(c.generation), Some(p)),
                (Err(_), Some((p, g))) => (Enforced::LastGood(*g), Some(p.clone())),
                (Err(_), None) => (Enforced::Nothing, None),
            };
            (
                State::Deleting,
                format!(
                    "deleted, but still enforced: the finalizer {FINALIZER} holds it until you run `kubectl annotate runnerfencepolicy {} {ALLOW_REMOVAL}=true`",
                    c.name
                ),
                enforced,
                policy,
            )
        } else {
            match current {
                Ok(p) => {
                    let mut message = format!(
                        "enforcing generation {} in {}",
                        c.generation,
                        p.matching.namespaces.join(", ")
                    );
                    for w in lint(&p) {
                        message.push_str(&format!("; lint warning: spec.{w}"));
                    }
                    (
                        State::Ready,
                        message,
                        Enforced::Current(c.generation),
                        Some(p),
                    )
                }
                Err((state, why)) => match &c.enforced {
                    Some((p, g)) => (state, still(&why), Enforced::LastGood(*g), Some(p.clone())),
                    None => (state, still(&why), Enforced::Nothing, None),
                },
            }
        };
        if let Some(mut p) = policy {
            // Logs and metrics name the object.
            p.metadata.name = c.name.clone();
            served.push((c.name.clone(), Arc::new(p)));
        }
        verdicts.push(Verdict {
            name: c.name,
            state,
            message,
            enforced,
            generation: c.generation,
        });
    }
    Resolution {
        set: PolicySet::new(served.into_iter().map(|(_, p)| p).collect()),
        verdicts,
    }
}

/// `status.conditions[]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// `Ready`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True` or `False`.
    pub status: String,
    /// [`State::as_str`].
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// [`Verdict::message`].
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// The generation judged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// When `status` last changed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
}

/// `status` of a `RunnerFencePolicy` (the CRD's status schema is in `render::crd`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// The generation the conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Mode of the enforced spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Namespaces of the enforced spec, comma-separated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<String>,
    /// Generation of the enforced spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enforced_generation: Option<i64>,
    /// The enforced spec, as stored: reloaded through the loader after a restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enforced_spec: Option<Value>,
    /// The Ready condition.
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

impl Status {
    /// The Ready condition, if any.
    pub fn ready(&self) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == READY)
    }
}

/// The status to write for a verdict. `previous` is the stored status (its
/// enforced spec and transition time are kept where they still apply), `now`
/// the time to stamp a changed condition with.
pub fn status(
    verdict: &Verdict,
    candidate_spec: &Value,
    previous: &Status,
    enforced: Option<&Policy>,
    now: &str,
) -> Status {
    let ready = verdict.state == State::Ready;
    let status = if ready { "True" } else { "False" };
    let since = previous
        .ready()
        .filter(|c| c.status == status)
        .and_then(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| now.to_string());
    let (enforced_generation, enforced_spec) = match verdict.enforced {
        Enforced::Current(g) => (Some(g), Some(candidate_spec.clone())),
        Enforced::LastGood(_) => (previous.enforced_generation, previous.enforced_spec.clone()),
        Enforced::Nothing => (None, None),
    };
    Status {
        observed_generation: Some(verdict.generation),
        mode: enforced.map(|p| p.mode.as_str().to_string()),
        namespaces: enforced.map(|p| p.matching.namespaces.join(",")),
        enforced_generation,
        enforced_spec,
        conditions: vec![Condition {
            type_: READY.into(),
            status: status.into(),
            reason: verdict.state.as_str().into(),
            message: verdict.message.clone(),
            observed_generation: Some(verdict.generation),
            last_transition_time: Some(since),
        }],
    }
}

/// Counts per state (the `runner_fence_policies{state}` metric).
pub fn counts(verdicts: &[Verdict]) -> Vec<(State, usize)> {
    State::ALL
        .iter()
        .map(|s| (*s, verdicts.iter().filter(|v| v.state == *s).count()))
        .collect()
}

/// The modes present among the served policies (each once).
pub fn modes(set: &PolicySet) -> Vec<Mode> {
    let mut out = Vec::new();
    for p in set.iter() {
        if !out.contains(&p.mode) {
            out.push(p.mode);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::policy::embedded;
    use proptest::prelude::*;
    use rstest::rstest;

    fn policy(namespaces: &[&str]) -> Policy {
        let mut p = embedded().expect("reference");
        p.matching.namespaces = namespaces.iter().map(|s| s.to_string()).collect();
        p.fargate.selectors.clear();
        for prof in p.placement.profiles.values_mut() {
            prof.namespaces = None;
        }
        p
    }

    fn candidate(name: &str, created: i64, namespaces: &[&str]) -> Candidate {
        Candidate {
            name: name.into(),
            created,
            generation: 1,
            spec_json: serde_json::json!({"match": {"namespaces": namespaces}}),
            spec: Ok(policy(namespaces)),
            enforced: None,
            enforced_json: None,
            deleting: false,
            removal_allowed: false,
        }
    }

    fn broken() -> LoadError {
        LoadError {
            file: "x".into(),
            line: Some(3),
            column: Some(4),
            path: "spec.placement.default".into(),
            message: "default profile \"x\" is not defined; known profiles: fargate, runner-nodes"
                .into(),
        }
    }

    fn state_of(r: &Resolution, name: &str) -> State {
        r.verdicts
            .iter()
            .find(|v| v.name == name)
            .map(|v| v.state)
            .expect("verdict")
    }

    #[rstest]
    #[case::exact("gitlab-runner", "gitlab-runner", true)]
    #[case::different("gitlab-runner", "team-a", false)]
    #[case::exact_in_prefix("ci-job-1", "ci-job-*", true)]
    #[case::exact_outside_prefix("ci-1", "ci-job-*", false)]
    #[case::nested_prefixes("ci-*", "ci-job-*", true)]
    #[case::disjoint_prefixes("team-a-*", "team-b-*", false)]
    fn overlapping_patterns(#[case] a: &str, #[case] b: &str, #[case] want: bool) {
        assert_eq!(overlap(a, b), want);
        assert_eq!(overlap(b, a), want, "symmetric");
    }

    #[test]
    fn disjoint_policies_are_all_ready_and_each_reviews_its_own() {
        let r = resolve(vec![
            candidate("team-b", 20, &["team-b"]),
            candidate("team-a", 10, &["team-a", "ci-a-*"]),
        ]);
        assert_eq!(state_of(&r, "team-a"), State::Ready);
        assert_eq!(state_of(&r, "team-b"), State::Ready);
        let name = |ns| r.set.covering(ns).map(|p| p.metadata.name.clone());
        assert_eq!(name("ci-a-7").as_deref(), Some("team-a"));
        assert_eq!(name("team-b").as_deref(), Some("team-b"));
        assert_eq!(name("default"), None);
        assert_eq!(r.set.namespaces(), vec!["team-a", "ci-a-*", "team-b"]);
    }

    #[rstest]
    #[case::later_created(10, "a", 20, "b")]
    #[case::same_time_later_name(10, "a", 10, "b")]
    fn the_later_of_two_claims_is_a_conflict_naming_the_other(
        #[case] t1: i64,
        #[case] n1: &str,
        #[case] t2: i64,
        #[case] n2: &str,
    ) {
        let r = resolve(vec![
            candidate(n2, t2, &["ci-job-7"]),
            candidate(n1, t1, &["ci-job-*"]),
        ]);
        assert_eq!(state_of(&r, n1), State::Ready);
        let v = r.verdicts.iter().find(|v| v.name == n2).expect("verdict");
        assert_eq!(v.state, State::Conflict);
        assert!(
            v.message.contains(&format!("RunnerFencePolicy {n1}")),
            "{}",
            v.message
        );
        assert!(
            v.message.starts_with("spec.match.namespaces[0]"),
            "{}",
            v.message
        );
        assert_eq!(v.enforced, Enforced::Nothing);
        assert_eq!(r.set.len(), 1);
    }

    #[test]
    fn an_invalid_edit_keeps_the_last_good_spec_serving() {
        let mut c = candidate("team-a", 10, &["team-a"]);
        c.generation = 4;
        c.spec = Err(broken());
        c.enforced = Some((policy(&["team-a"]), 3));
        let r = resolve(vec![c]);
        let v = &r.verdicts[0];
        assert_eq!(v.state, State::Invalid);
        assert_eq!(v.enforced, Enforced::LastGood(3));
        assert!(
            v.message
                .starts_with("spec.placement.default: default profile"),
            "{}",
            v.message
        );
        assert!(
            v.message.contains("still enforcing generation 3"),
            "{}",
            v.message
        );
        assert!(r.set.covering("team-a").is_some(), "the fence stays");
    }

    #[test]
    fn a_policy_covering_runner_fences_own_namespace_is_invalid() {
        let mut c = candidate("wide", 10, &["runner-*"]);
        c.enforced = Some((policy(&["runner-*"]), 1));
        let r = resolve_excluding(vec![c, candidate("ok", 20, &["team-a"])], &["runner-fence"]);
        let v = &r.verdicts[0];
        assert_eq!(v.state, State::Invalid);
        assert!(v.message.contains("covers runner-fence"), "{}", v.message);
        assert_eq!(
            v.enforced,
            Enforced::Nothing,
            "a last good spec covering it cannot serve either"
        );
        assert_eq!(
            r.verdicts[1].state,
            State::Ready,
            "the others are unaffected"
        );
        assert_eq!(r.set.len(), 1);
    }

    #[test]
    fn a_never_valid_policy_serves_nothing_and_says_so() {
        let mut c = candidate("new", 10, &["team-a"]);
        c.spec = Err(broken());
        let r = resolve(vec![c]);
        assert_eq!(r.verdicts[0].state, State::Invalid);
        assert!(r.verdicts[0].message.contains("nothing is enforced"));
        assert!(r.set.is_empty());
    }

    #[test]
    fn a_deleted_policy_is_held_until_removal_is_allowed() {
        let mut c = candidate("team-a", 10, &["team-a"]);
        c.deleting = true;
        let r = resolve(vec![c.clone()]);
        assert_eq!(r.verdicts[0].state, State::Deleting);
        assert!(r.verdicts[0].message.contains(ALLOW_REMOVAL));
        assert!(r.set.covering("team-a").is_some(), "still enforced");
        c.removal_allowed = true;
        let r = resolve(vec![c]);
        assert_eq!(r.verdicts[0].state, State::Released);
        assert!(r.set.is_empty());
    }

    #[test]
    fn within_one_second_the_policy_already_serving_keeps_its_namespaces() {
        // Created in the same second (the timestamp's precision): the new
        // policy's name sorts first, yet the one already enforcing keeps it.
        let mut serving = candidate("team-b", 10, &["team-b", "shared"]);
        serving.enforced = Some((policy(&["team-b", "shared"]), 2));
        let r = resolve(vec![serving, candidate("a-claims", 10, &["shared"])]);
        assert_eq!(state_of(&r, "team-b"), State::Ready);
        assert_eq!(state_of(&r, "a-claims"), State::Conflict);
        let name = r.set.covering("shared").map(|p| p.metadata.name.clone());
        assert_eq!(name.as_deref(), Some("team-b"));
        // Neither enforcing yet: the name decides, as before.
        let r = resolve(vec![
            candidate("team-b", 10, &["shared"]),
            candidate("a-claims", 10, &["shared"]),
        ]);
        assert_eq!(state_of(&r, "team-b"), State::Conflict);
    }

    #[test]
    fn an_older_policy_taking_a_namespace_leaves_no_namespace_open() {
        // team-b (newer) served b and shared; team-a is edited to claim shared too.
        let mut b = candidate("team-b", 20, &["team-b", "shared"]);
        b.enforced = Some((policy(&["team-b", "shared"]), 1));
        let r = resolve(vec![candidate("team-a", 10, &["team-a", "shared"]), b]);
        assert_eq!(state_of(&r, "team-b"), State::Conflict);
        let name = |ns| r.set.covering(ns).map(|p| p.metadata.name.clone());
        assert_eq!(
            name("shared").as_deref(),
            Some("team-a"),
            "the older reviews it"
        );
        assert_eq!(name("team-b").as_deref(), Some("team-b"), "still fenced");
    }

    #[test]
    fn status_keeps_the_enforced_spec_and_the_transition_time() {
        let good = candidate("team-a", 10, &["team-a"]);
        let r = resolve(vec![good.clone()]);
        let s1 = status(
            &r.verdicts[0],
            &good.spec_json,
            &Status::default(),
            r.set.first(),
            "2026-01-01T00:00:00Z",
        );
        assert_eq!(s1.enforced_spec.as_ref(), Some(&good.spec_json));
        assert_eq!(s1.enforced_generation, Some(1));
        assert_eq!(s1.namespaces.as_deref(), Some("team-a"));
        assert_eq!(s1.mode.as_deref(), Some("enforce"));
        let ready = s1.ready().expect("ready");
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("True", "Ready")
        );
        // Same verdict later: the transition time stays.
        let again = status(
            &r.verdicts[0],
            &good.spec_json,
            &s1,
            r.set.first(),
            "2026-02-01T00:00:00Z",
        );
        assert_eq!(again, s1);
        // An invalid edit: False since now, the old enforced spec kept.
        let mut bad = good.clone();
        bad.generation = 2;
        bad.spec = Err(broken());
        bad.spec_json = serde_json::json!({"broken": true});
        bad.enforced = Some((policy(&["team-a"]), 1));
        let r = resolve(vec![bad.clone()]);
        let s2 = status(
            &r.verdicts[0],
            &bad.spec_json,
            &s1,
            r.set.first(),
            "2026-03-01T00:00:00Z",
        );
        assert_eq!(s2.enforced_spec, s1.enforced_spec);
        assert_eq!(s2.enforced_generation, Some(1));
        assert_eq!(s2.observed_generation, Some(2));
        let c = s2.ready().expect("ready");
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", "Invalid"));
        assert_eq!(
            c.last_transition_time.as_deref(),
            Some("2026-03-01T00:00:00Z")
        );
        assert_eq!(c.observed_generation, Some(2));
    }

    fn pattern() -> impl Strategy<Value = String> {
        ("[a-c]{1,3}", any::<bool>())
            .prop_map(|(s, prefix)| if prefix { format!("{s}*") } else { s })
    }

    proptest! {
        /// Whatever the policies claim (each valid once, so each has a last
        /// good spec): no two Ready policies overlap, every claimed namespace
        /// stays fenced, and the oldest policy covering it reviews it.
        #[test]
        fn ready_policies_never_overlap_and_no_claim_opens(
            claims in proptest::collection::vec(proptest::collection::vec(pattern(), 1..3), 1..5),
            probe in "[a-c]{1,4}",
        ) {
            let cands: Vec<Candidate> = claims.iter().enumerate().map(|(i, ns)| {
                let ns: Vec<&str> = ns.iter().map(String::as_str).collect();
                let mut c = candidate(&format!("p{i}"), i as i64, &ns);
                c.enforced = Some((policy(&ns), 1));
                c
            }).collect();
            let r = resolve(cands);
            let ready: Vec<&Vec<String>> = r.verdicts.iter()
                .filter(|v| v.state == State::Ready)
                .map(|v| &claims[v.name[1..].parse::<usize>().unwrap_or(0)])
                .collect();
            for (i, a) in ready.iter().enumerate() {
                for b in &ready[i + 1..] {
                    for x in a.iter() {
                        for y in b.iter() {
                            prop_assert!(!overlap(x, y), "{} and {} both Ready", x, y);
                        }
                    }
                }
            }
            let covers = |ns: &Vec<String>| ns.iter().any(|p| crate::core::policy::namespace_pattern_matches(p, &probe));
            let oldest = claims.iter().position(covers);
            let reviewer = r.set.covering(&probe).map(|p| p.metadata.name.clone());
            prop_assert_eq!(reviewer, oldest.map(|i| format!("p{i}")));
        }
    }
}
