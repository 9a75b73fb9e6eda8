//! Node label requirements (as in a nodeSelectorTerm's or a LabelSelector's
//! `matchExpressions`): the type, matching one node, and deciding whether a set
//! of requirements can be met by *some* node. Shared by the policy loader, lint
//! and the engine, below all of them.
//!
//! Keys are independent, so a conjunction is satisfiable exactly when the
//! requirements on each key are. For one key a node either lacks the label or
//! has one string value; `In` gives a finite candidate set, and without it a
//! fresh string (or, for `Gt`/`Lt`, an integer) always escapes a finite `NotIn`.

use std::collections::BTreeMap;
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A label requirement, as in a nodeSelectorTerm's or a LabelSelector's `matchExpressions`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Requirement {
    /// Label key.
    pub key: String,
    /// How the label is compared.
    pub operator: Operator,
    /// Values for In/NotIn (one or more) and Gt/Lt (exactly one integer).
    #[serde(default)]
    pub values: Vec<String>,
}

impl Requirement {
    /// `key In [value]`, what a nodeSelector entry or a matchLabels entry means.
    pub fn equals(key: &str, value: &str) -> Self {
        Requirement {
            key: key.to_string(),
            operator: Operator::In,
            values: vec![value.to_string()],
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        ReqRef::from(self).fmt(f)
    }
}

/// A requirement borrowed from wherever it is written: a [`Requirement`], or a
/// `matchLabels`/`nodeSelector` entry (`key In [value]`). The checks below
/// take these, so matching a policy's selectors builds nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReqRef<'a> {
    /// Label key.
    pub key: &'a str,
    /// How the label is compared.
    pub operator: Operator,
    /// The values.
    pub values: &'a [String],
}

impl<'a> ReqRef<'a> {
    /// `key In [value]`, what a matchLabels or nodeSelector entry means.
    pub fn equals(key: &'a str, value: &'a String) -> Self {
        ReqRef {
            key,
            operator: Operator::In,
            values: std::slice::from_ref(value),
        }
    }

    /// An owned copy (for a violation that reports it).
    pub fn to_requirement(self) -> Requirement {
        Requirement {
            key: self.key.to_string(),
            operator: self.operator,
            values: self.values.to_vec(),
        }
    }
}

impl<'a> From<&'a Requirement> for ReqRef<'a> {
    fn from(r: &'a Requirement) -> Self {
        ReqRef {
            key: &r.key,
            operator: r.operator,
            values: &r.values,
        }
    }
}

impl fmt::Display for ReqRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.operator {
            Operator::In if self.values.len() == 1 => write!(f, "{}={}", self.key, self.values[0]),
            Operator::Exists | Operator::DoesNotExist => {
                write!(f, "{} {}", self.key, self.operator.as_str())
            }
            op => write!(
                f,
                "{} {} [{}]",
                self.key,
                op.as_str(),
                self.values.join(", ")
            ),
        }
    }
}

/// Node selector operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, Serialize, JsonSchema)]
pub enum Operator {
    /// The label is present with one of the values.
    In,
    /// The label is absent or has none of the values.
    NotIn,
    /// The label is present.
    Exists,
    /// The label is absent.
    DoesNotExist,
    /// The label is an integer greater than the value.
    Gt,
    /// The label is an integer less than the value.
    Lt,
}

impl Operator {
    /// Parses the operator string of a Kubernetes object.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "In" => Operator::In,
            "NotIn" => Operator::NotIn,
            "Exists" => Operator::Exists,
            "DoesNotExist" => Operator::DoesNotExist,
            "Gt" => Operator::Gt,
            "Lt" => Operator::Lt,
            _ => return None,
        })
    }

    /// The operator as Kubernetes spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Operator::In => "In",
            Operator::NotIn => "NotIn",
            Operator::Exists => "Exists",
            Operator::DoesNotExist => "DoesNotExist",
            Operator::Gt => "Gt",
            Operator::Lt => "Lt",
        }
    }
}

/// Does a node with this label value (`None` = label absent) meet `r`?
fn value_ok(r: ReqRef<'_>, v: Option<&str>) -> bool {
    match r.operator {
        Operator::In => v.is_some_and(|v| r.values.iter().any(|x| x == v)),
        Operator::NotIn => v.is_none_or(|v| !r.values.iter().any(|x| x == v)),
        Operator::Exists => v.is_some(),
        Operator::DoesNotExist => v.is_none(),
        Operator::Gt | Operator::Lt => {
            let (Some(v), Some(bound)) = (v, r.values.first()) else {
                return false;
            };
            match (v.parse::<i64>(), bound.parse::<i64>()) {
                (Ok(v), Ok(b)) if r.operator == Operator::Gt => v > b,
                (Ok(v), Ok(b)) => v < b,
                _ => false,
            }
        }
    }
}

/// Does a node with these labels meet `r`?
pub fn matches_labels<'a>(labels: &BTreeMap<String, String>, r: impl Into<ReqRef<'a>>) -> bool {
    let r = r.into();
    value_ok(r, labels.get(r.key).map(String::as_str))
}

/// Can one label key meet all of `reqs` (all on the same key) at once?
fn key_satisfiable(reqs: &[ReqRef<'_>]) -> bool {
    let needs_present = reqs.iter().any(|r| {
        matches!(
            r.operator,
            Operator::In | Operator::Exists | Operator::Gt | Operator::Lt
        )
    });
    let needs_absent = reqs.iter().any(|r| r.operator == Operator::DoesNotExist);
    if needs_present && needs_absent {
        return false;
    }
    if !needs_present {
        // An absent label meets NotIn and DoesNotExist.
        return true;
    }
    let all_ok = |v: &str| reqs.iter().all(|r| value_ok(*r, Some(v)));
    if let Some(first_in) = reqs.iter().find(|r| r.operator == Operator::In) {
        return first_in.values.iter().any(|v| all_ok(v));
    }
    let mut lo: Option<i64> = None;
    let mut hi: Option<i64> = None;
    for r in reqs {
        if matches!(r.operator, Operator::Gt | Operator::Lt) {
            let Some(b) = r.values.first().and_then(|b| b.parse::<i64>().ok()) else {
                return false;
            };
            if r.operator == Operator::Gt {
                lo = Some(lo.map_or(b, |l| l.max(b)));
            } else {
                hi = Some(hi.map_or(b, |h| h.min(b)));
            }
        }
    }
    if lo.is_none() && hi.is_none() {
        // Exists with NotIn: some string outside the finite NotIn lists.
        return true;
    }
    // Label values cannot start with `-`, so only integers >= 0 are
    // reachable; each has many spellings (`7`, `07`), so NotIn cannot exclude it.
    let lo = lo.unwrap_or(-1).max(-1);
    match hi {
        Some(h) => (lo as i128) + 1 < h as i128,
        None => lo < i64::MAX,
    }
}

/// The label key whose requirements no single value can meet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conflict<'a> {
    /// The key.
    pub key: &'a str,
}

/// Whether some node's labels could meet every requirement; on failure, the
/// first key (in sorted order) whose requirements conflict.
pub fn satisfiable<'a, I, R>(reqs: I) -> Result<(), Conflict<'a>>
where
    I: IntoIterator<Item = R>,
    R: Into<ReqRef<'a>>,
{
    let mut by_key: BTreeMap<&str, Vec<ReqRef<'a>>> = BTreeMap::new();
    for r in reqs {
        let r = r.into();
        by_key.entry(r.key).or_default().push(r);
    }
    for (k, group) in by_key {
        if !key_satisfiable(&group) {
            return Err(Conflict { key: k });
        }
    }
    Ok(())
}

/// The requirement met by exactly the nodes that do not meet `r`, where one exists.
pub(crate) fn negate(r: ReqRef<'_>) -> Option<ReqRef<'_>> {
    let operator = match r.operator {
        Operator::In => Operator::NotIn,
        Operator::NotIn => Operator::In,
        Operator::Exists => Operator::DoesNotExist,
        Operator::DoesNotExist => Operator::Exists,
        Operator::Gt | Operator::Lt => return None,
    };
    Some(ReqRef { operator, ..r })
}

/// Does every node meeting `reqs` also meet `r`?
pub fn implies(reqs: &[Requirement], r: &Requirement) -> bool {
    if reqs.contains(r) {
        return true;
    }
    let all = || reqs.iter().map(ReqRef::from);
    match negate(r.into()) {
        Some(not_r) => satisfiable(all().chain(std::iter::once(not_r))).is_err(),
        // Gt/Lt have no single-requirement negation; only an identical
        // requirement (checked above) or an unsatisfiable set implies them.
        None => satisfiable(all()).is_err(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn req(s: &str) -> Requirement {
        // "key Op v1,v2" or "key=value"
        if let Some((k, v)) = s.split_once('=') {
            return Requirement::equals(k, v);
        }
        let mut it = s.split_whitespace();
        let key = it.next().unwrap_or_default().to_string();
        let operator = Operator::parse(it.next().unwrap_or_default()).expect("operator");
        let values = it
            .next()
            .map(|v| v.split(',').map(String::from).collect())
            .unwrap_or_default();
        Requirement {
            key,
            operator,
            values,
        }
    }

    fn reqs(list: &[&str]) -> Vec<Requirement> {
        list.iter().map(|s| req(s)).collect()
    }

    /// How a requirement reads in every message: `key=value` only for exactly
    /// one value, never a list cut to its first entry.
    #[rstest]
    #[case("workload=gitlab", "workload=gitlab")]
    #[case("compute-type In fargate,auto", "compute-type In [fargate, auto]")]
    #[case("workload NotIn gitlab", "workload NotIn [gitlab]")]
    #[case("workload Exists", "workload Exists")]
    #[case("cpu Gt 4", "cpu Gt [4]")]
    fn requirements_read_as_written(#[case] r: &str, #[case] shown: &str) {
        assert_eq!(ReqRef::from(&req(r)).to_string(), shown);
    }

    #[rstest]
    #[case(&["workload=gitlab", "workload In gitlab-runner"], false)]
    #[case(&["workload=gitlab", "zone In a"], true)]
    #[case(&["workload=gitlab", "workload NotIn gitlab"], false)]
    #[case(&["workload=gitlab", "workload NotIn gitlab-runner"], true)]
    #[case(&["workload=gitlab", "workload Exists"], true)]
    #[case(&["workload=gitlab", "workload DoesNotExist"], false)]
    #[case(&["workload=gitlab", "other DoesNotExist"], true)]
    #[case(&["workload=gitlab", "workload In gitlab,gitlab-runner"], true)]
    #[case(&["workload In a,b", "workload In b,c", "workload NotIn b"], false)]
    #[case(&["workload In a,b", "workload In b,c"], true)]
    #[case(&["cpu Gt 4", "cpu Lt 5"], false)]
    #[case(&["cpu Gt 4", "cpu Lt 6"], true)]
    #[case(&["cpu Gt 4", "cpu NotIn 5", "cpu Lt 6"], true)]
    #[case(&["cpu Lt 0"], false)]
    // 0 is a label value: Lt 1 is met by it alone, whatever a negative Gt says.
    #[case(&["cpu Lt 1"], true)]
    #[case(&["cpu Gt -5", "cpu Lt 1"], true)]
    #[case(&["cpu Gt 0", "cpu Lt 2"], true)]
    #[case(&["cpu Gt 0", "cpu Lt 1"], false)]
    // No integer label is above the largest one.
    #[case(&["cpu Gt 9223372036854775807"], false)]
    #[case(&["cpu Gt 9223372036854775806"], true)]
    #[case(&["cpu Gt x"], false)]
    #[case(&["cpu In 7", "cpu Gt 6"], true)]
    #[case(&["cpu In 7", "cpu Gt 7"], false)]
    #[case(&["cpu Exists", "cpu DoesNotExist"], false)]
    #[case(&["cpu NotIn 1", "cpu DoesNotExist"], true)]
    #[case(&[], true)]
    fn satisfiability(#[case] list: &[&str], #[case] want: bool) {
        assert_eq!(satisfiable(&reqs(list)).is_ok(), want, "{list:?}");
    }

    #[test]
    fn reports_conflicting_key() {
        let r = reqs(&["a=1", "b=1", "b=2"]);
        assert_eq!(satisfiable(&r), Err(Conflict { key: "b" }));
    }

    #[rstest]
    #[case(&["workload=gitlab-runner"], "workload In gitlab-runner", true)]
    #[case(&["workload In gitlab-runner,gitlab"], "workload In gitlab-runner", false)]
    #[case(&["workload=gitlab-runner"], "workload NotIn gitlab", true)]
    #[case(&["workload=gitlab-runner"], "workload Exists", true)]
    #[case(&["zone=a"], "workload In gitlab-runner", false)]
    #[case(&["workload=x", "workload=y"], "workload In gitlab-runner", true)]
    #[case(&["cpu Gt 3"], "cpu Gt 3", true)]
    #[case(&["cpu Gt 4"], "cpu Gt 3", false)]
    fn implication(#[case] have: &[&str], #[case] r: &str, #[case] want: bool) {
        assert_eq!(implies(&reqs(have), &req(r)), want, "{have:?} => {r}");
    }

    #[test]
    fn matching_a_node() {
        let labels: BTreeMap<String, String> = [
            ("workload".to_string(), "gitlab".to_string()),
            ("n".to_string(), "007".to_string()),
        ]
        .into_iter()
        .collect();
        assert!(matches_labels(&labels, &req("workload=gitlab")));
        assert!(!matches_labels(&labels, &req("workload NotIn gitlab")));
        assert!(matches_labels(&labels, &req("zone NotIn a")));
        assert!(matches_labels(&labels, &req("n Gt 6")));
        assert!(!matches_labels(&labels, &req("n Lt 7")));
        assert!(!matches_labels(&labels, &req("zone Exists")));
    }

    /// Gt and Lt on a node's label: integers, strictly, each its own direction;
    /// a value or bound that is not an integer, or no label, matches neither.
    #[rstest]
    #[case("n Gt 6", true)]
    #[case("n Gt 7", false)]
    #[case("n Gt 8", false)]
    #[case("n Lt 8", true)]
    #[case("n Lt 7", false)]
    #[case("n Lt 6", false)]
    #[case("n Lt x", false)]
    #[case("word Gt 1", false)]
    #[case("word Lt 1", false)]
    #[case("absent Lt 100", false)]
    fn numeric_comparison_on_a_node(#[case] r: &str, #[case] want: bool) {
        let labels: BTreeMap<String, String> = [
            ("n".to_string(), "007".to_string()),
            ("word".to_string(), "seven".to_string()),
        ]
        .into_iter()
        .collect();
        assert_eq!(matches_labels(&labels, &req(r)), want, "{r}");
    }
}
