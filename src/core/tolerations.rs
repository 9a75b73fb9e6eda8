//! Taints and tolerations: the policy's protected taints and injected
//! tolerations, and toleration matching as the scheduler does it. Shared by
//! lint and the engine, below both.
//!
//! The matching rule is data, [`TOLERATES`]: the engine evaluates it here
//! ([`Tol::tolerates_spec`], [`Tol::tolerates`]) and the backstop compiles the
//! same clauses to CEL (`render::admission_policy`), so the two cannot be
//! changed apart.

use std::fmt;

use k8s_openapi::api::core::v1::{Taint, Toleration};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A taint of protected nodes. Missing `value` or `effect` means "any".
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TaintSpec {
    /// Taint key.
    pub key: String,
    /// Taint value; any value when omitted.
    #[serde(default)]
    pub value: Option<String>,
    /// Taint effect; any effect when omitted.
    #[serde(default)]
    pub effect: Option<TaintEffect>,
}

impl TaintSpec {
    /// Whether a node's taint is this one (a missing value or effect matches any).
    pub fn matches(&self, taint: &Taint) -> bool {
        self.key == taint.key
            && self
                .value
                .as_deref()
                .is_none_or(|v| taint.value.as_deref().unwrap_or("") == v)
            && self.effect.is_none_or(|e| e.as_str() == taint.effect)
    }
}

impl fmt::Display for TaintSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key)?;
        if let Some(v) = &self.value {
            write!(f, "={v}")?;
        }
        if let Some(e) = &self.effect {
            write!(f, ":{}", e.as_str())?;
        }
        Ok(())
    }
}

/// Kubernetes taint effects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub enum TaintEffect {
    /// New pods are not scheduled.
    NoSchedule,
    /// The scheduler avoids the node.
    PreferNoSchedule,
    /// Running pods are evicted.
    NoExecute,
}

impl TaintEffect {
    /// The effect as Kubernetes spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            TaintEffect::NoSchedule => "NoSchedule",
            TaintEffect::PreferNoSchedule => "PreferNoSchedule",
            TaintEffect::NoExecute => "NoExecute",
        }
    }
}

/// A toleration to inject.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TolerationSpec {
    /// Taint key (empty with `Exists` tolerates everything, which lint flags).
    #[serde(default)]
    pub key: Option<String>,
    /// `Equal` (default) or `Exists`.
    #[serde(default)]
    pub operator: Option<TolerationOperator>,
    /// Value for `Equal`.
    #[serde(default)]
    pub value: Option<String>,
    /// Effect; all effects when omitted.
    #[serde(default)]
    pub effect: Option<TaintEffect>,
    /// For NoExecute: how long the pod stays after the taint appears.
    #[serde(default, deserialize_with = "crate::core::scalar::strict_i64")]
    pub toleration_seconds: Option<i64>,
}

/// Toleration operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub enum TolerationOperator {
    /// Key and value must match.
    Equal,
    /// Key must match (any value).
    Exists,
}

/// A toleration field the rule reads; absent reads as empty, as the scheduler
/// reads it (`operator` is not one: it only matters as [`Test::Exists`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    /// `key`.
    Key,
    /// `value`.
    Value,
    /// `effect`.
    Effect,
}

impl Field {
    /// The field's name in a pod's toleration (and a taint).
    pub fn name(self) -> &'static str {
        match self {
            Field::Key => "key",
            Field::Value => "value",
            Field::Effect => "effect",
        }
    }
}

/// One test of [`TOLERATES`], on a toleration and a taint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Test {
    /// The toleration's operator is `Exists`.
    Exists,
    /// The toleration's field is empty.
    Empty(Field),
    /// The toleration's field equals the taint's.
    Same(Field),
    /// The taint leaves the field open: a protected taint without `value` or
    /// `effect` stands for every value or effect (never so for a node's taint).
    Open(Field),
    /// Every one of these.
    All(&'static [Test]),
}

/// When a toleration tolerates a taint: every clause has a test that holds.
pub const TOLERATES: &[&[Test]] = &[
    // The taint's key, or every key (empty key, operator Exists).
    &[
        Test::All(&[Test::Empty(Field::Key), Test::Exists]),
        Test::Same(Field::Key),
    ],
    // Exists takes any value; Equal (the default) the taint's.
    &[
        Test::Exists,
        Test::Open(Field::Value),
        Test::Same(Field::Value),
    ],
    // An empty effect tolerates every effect.
    &[
        Test::Empty(Field::Effect),
        Test::Open(Field::Effect),
        Test::Same(Field::Effect),
    ],
];

/// A taint as [`TOLERATES`] reads it: `None` is a field the taint leaves open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaintView<'a> {
    /// Taint key.
    pub key: &'a str,
    /// Taint value (a node's missing value is empty, not open).
    pub value: Option<&'a str>,
    /// Taint effect.
    pub effect: Option<&'a str>,
}

impl<'a> TaintView<'a> {
    /// A protected taint of the policy (missing value or effect: any).
    pub fn of_spec(t: &'a TaintSpec) -> Self {
        TaintView {
            key: &t.key,
            value: t.value.as_deref(),
            effect: t.effect.map(TaintEffect::as_str),
        }
    }

    /// A node's taint: every field is set.
    pub fn of_node(t: &'a Taint) -> Self {
        TaintView {
            key: &t.key,
            value: Some(t.value.as_deref().unwrap_or("")),
            effect: Some(&t.effect),
        }
    }

    /// The taint's field; `None` when open.
    pub fn field(&self, f: Field) -> Option<&'a str> {
        match f {
            Field::Key => Some(self.key),
            Field::Value => self.value,
            Field::Effect => self.effect,
        }
    }
}

impl Test {
    /// Whether the test holds for toleration `tol` and taint `taint`.
    pub fn holds(&self, tol: &Tol<'_>, taint: &TaintView<'_>) -> bool {
        match *self {
            Test::Exists => tol.exists,
            Test::Empty(f) => tol.field(f).is_empty(),
            Test::Same(f) => taint.field(f) == Some(tol.field(f)),
            Test::Open(f) => taint.field(f).is_none(),
            Test::All(tests) => tests.iter().all(|t| t.holds(tol, taint)),
        }
    }
}

/// A toleration with Kubernetes defaults applied (`operator: ""` is Equal).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tol<'a> {
    /// Empty with `exists` tolerates every key.
    pub key: &'a str,
    /// Operator Exists.
    pub exists: bool,
    /// Compared when not `exists`.
    pub value: &'a str,
    /// Empty tolerates every effect.
    pub effect: &'a str,
}

impl<'a> Tol<'a> {
    /// From a pod's toleration.
    pub fn of(t: &'a Toleration) -> Self {
        Tol {
            key: t.key.as_deref().unwrap_or(""),
            exists: t.operator.as_deref() == Some("Exists"),
            value: t.value.as_deref().unwrap_or(""),
            effect: t.effect.as_deref().unwrap_or(""),
        }
    }

    /// From a policy's toleration.
    pub fn of_spec(t: &'a TolerationSpec) -> Self {
        Tol {
            key: t.key.as_deref().unwrap_or(""),
            exists: t.operator == Some(TolerationOperator::Exists),
            value: t.value.as_deref().unwrap_or(""),
            effect: t.effect.map(|e| e.as_str()).unwrap_or(""),
        }
    }

    /// The field [`TOLERATES`] reads.
    pub fn field(&self, f: Field) -> &'a str {
        match f {
            Field::Key => self.key,
            Field::Value => self.value,
            Field::Effect => self.effect,
        }
    }

    /// Whether this tolerates `taint` by [`TOLERATES`].
    fn tolerates_view(&self, taint: &TaintView<'_>) -> bool {
        TOLERATES
            .iter()
            .all(|clause| clause.iter().any(|t| t.holds(self, taint)))
    }

    /// Whether this tolerates a protected taint. A taint spec without value or
    /// effect stands for every value or effect, so matching any one counts.
    pub fn tolerates_spec(&self, taint: &TaintSpec) -> bool {
        self.tolerates_view(&TaintView::of_spec(taint))
    }

    /// Whether this tolerates a real node taint.
    pub fn tolerates(&self, taint: &Taint) -> bool {
        self.tolerates_view(&TaintView::of_node(taint))
    }

    /// Human form for messages: `workload=gitlab:NoSchedule`, `workload:*`, `*`.
    pub fn describe(&self) -> String {
        if self.key.is_empty() && self.exists {
            return "every taint (empty key, operator Exists)".into();
        }
        let mut s = self.key.to_string();
        if self.exists {
            s.push_str(" (any value)");
        } else {
            s.push('=');
            s.push_str(self.value);
        }
        if self.effect.is_empty() {
            s.push_str(" with any effect");
        } else {
            s.push(':');
            s.push_str(self.effect);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn tol(
        key: Option<&str>,
        op: Option<&str>,
        value: Option<&str>,
        effect: Option<&str>,
    ) -> Toleration {
        Toleration {
            key: key.map(String::from),
            operator: op.map(String::from),
            value: value.map(String::from),
            effect: effect.map(String::from),
            toleration_seconds: None,
        }
    }

    fn gitlab_taint() -> TaintSpec {
        TaintSpec {
            key: "workload".into(),
            value: Some("gitlab".into()),
            effect: Some(TaintEffect::NoSchedule),
        }
    }

    #[rstest]
    #[case::equal(
        tol(Some("workload"), Some("Equal"), Some("gitlab"), Some("NoSchedule")),
        true
    )]
    #[case::default_operator(tol(Some("workload"), None, Some("gitlab"), Some("NoSchedule")), true)]
    #[case::other_value(
        tol(
            Some("workload"),
            Some("Equal"),
            Some("gitlab-runner"),
            Some("NoSchedule")
        ),
        false
    )]
    #[case::key_only_exists(tol(Some("workload"), Some("Exists"), None, None), true)]
    #[case::empty_key_exists(tol(None, Some("Exists"), None, None), true)]
    #[case::other_effect(
        tol(Some("workload"), Some("Equal"), Some("gitlab"), Some("NoExecute")),
        false
    )]
    #[case::any_effect(tol(Some("workload"), Some("Equal"), Some("gitlab"), None), true)]
    #[case::other_key(
        tol(
            Some("node.kubernetes.io/not-ready"),
            Some("Exists"),
            None,
            Some("NoExecute")
        ),
        false
    )]
    fn protected_taint(#[case] t: Toleration, #[case] want: bool) {
        assert_eq!(Tol::of(&t).tolerates_spec(&gitlab_taint()), want, "{t:?}");
        let real = Taint {
            key: "workload".into(),
            value: Some("gitlab".into()),
            effect: "NoSchedule".into(),
            time_added: None,
        };
        assert_eq!(Tol::of(&t).tolerates(&real), want, "{t:?} vs real taint");
    }

    #[test]
    fn spec_without_value_or_effect_means_any() {
        let spec = TaintSpec {
            key: "workload".into(),
            value: None,
            effect: None,
        };
        let t = tol(
            Some("workload"),
            Some("Equal"),
            Some("x"),
            Some("NoExecute"),
        );
        assert!(Tol::of(&t).tolerates_spec(&spec));
    }
}
