//! Which namespaces a runner can put job pods in, against the policy's scope.
//!
//! GitLab Runner (`executors/kubernetes`): `namespace_per_job` puts each job in
//! `ci-job-<job id>` and ignores the rest; otherwise the namespace is
//! `namespace` ("default" when empty), or `KUBERNETES_NAMESPACE_OVERWRITE` when
//! the `namespace_overwrite_allowed` regex matches it. Go's
//! `regexp.MatchString` is unanchored: `ci-.*` also matches `kube-ci-x`.

use regex_syntax::hir::literal::{ExtractKind, Extractor};
use regex_syntax::hir::{Hir, Look};

use crate::core::policy::Match;

/// The namespace GitLab Runner uses when `namespace` is empty.
pub const DEFAULT_NAMESPACE: &str = "default";
/// The prefix of `namespace_per_job` namespaces.
pub const PER_JOB_PREFIX: &str = "ci-job-";

/// How far `namespace_overwrite_allowed` reaches beyond the policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reach {
    /// Every namespace it accepts is covered.
    Covered,
    /// It accepts this namespace, which the policy does not cover.
    Example(String),
    /// It accepts names that are not provably covered (no fixed prefix the
    /// policy covers; `unanchored` when it is not anchored with `^`).
    Unproven {
        /// Not anchored at the start: a match anywhere in the name is enough.
        unanchored: bool,
    },
    /// Not a regular expression this check (RE2 syntax) understands.
    Unparsable(String),
}

/// Does the policy cover every `ci-job-<id>` namespace?
pub fn covers_per_job(m: &Match) -> bool {
    m.namespaces
        .iter()
        .filter_map(|p| p.strip_suffix('*'))
        .any(|prefix| PER_JOB_PREFIX.starts_with(prefix))
}

/// What `namespace_overwrite_allowed = regex` lets a job reach.
pub fn overwrite_reach(regex: &str, m: &Match) -> Reach {
    let hir = match regex_syntax::Parser::new().parse(regex) {
        Ok(h) => h,
        Err(e) => {
            let text = e.to_string();
            let last = text.lines().last().unwrap_or("").trim();
            return Reach::Unparsable(last.trim_start_matches("error: ").to_string());
        }
    };
    let Ok(re) = regex::Regex::new(regex) else {
        return Reach::Unparsable("too large".into());
    };
    if m.namespaces.iter().any(|p| p == "*") {
        return Reach::Covered;
    }
    if let Some(example) = examples(&hir, m)
        .into_iter()
        .find(|n| re.is_match(n) && !m.covers(n))
    {
        return Reach::Example(example);
    }
    let start = [Look::Start, Look::StartLF, Look::StartCRLF];
    let anchored = start
        .iter()
        .any(|l| hir.properties().look_set_prefix().contains(*l));
    if !anchored {
        // A name containing a match anywhere is accepted.
        return Reach::Unproven { unanchored: true };
    }
    let end = [Look::End, Look::EndLF, Look::EndCRLF];
    let anchored_end = end
        .iter()
        .any(|l| hir.properties().look_set_suffix().contains(*l));
    let seq = Extractor::new().kind(ExtractKind::Prefix).extract(&hir);
    let Some(literals) = seq.literals() else {
        return Reach::Unproven { unanchored: false };
    };
    let covered = literals.iter().all(|lit| {
        let Ok(text) = std::str::from_utf8(lit.as_bytes()) else {
            return false;
        };
        if !text.bytes().all(namespace_byte) {
            // No namespace can start with it (`(?i)` spellings, dots...).
            return true;
        }
        // Every accepted name starts with `text` (is exactly it when exact and
        // anchored at the end).
        (lit.is_exact() && anchored_end && m.covers(text))
            || m.namespaces
                .iter()
                .filter_map(|p| p.strip_suffix('*'))
                .any(|prefix| text.starts_with(prefix))
    });
    if covered {
        Reach::Covered
    } else {
        Reach::Unproven { unanchored: false }
    }
}

/// Names to try for a message: common namespaces, then names built from the
/// regex's literal prefixes.
fn examples(hir: &Hir, m: &Match) -> Vec<String> {
    let mut out: Vec<String> = [
        "default",
        "kube-system",
        "kube-public",
        "gitlab",
        "runner-fence",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let seq = Extractor::new().kind(ExtractKind::Prefix).extract(hir);
    for lit in seq.literals().into_iter().flatten() {
        if let Ok(text) = std::str::from_utf8(lit.as_bytes()) {
            let text = text.trim_matches('-');
            if text.is_empty() {
                continue;
            }
            for candidate in [
                text.to_string(),
                format!("{text}-x"),
                format!("x-{text}-x"),
                format!("x{text}x"),
            ] {
                out.push(candidate);
            }
        }
    }
    // The policy's own names with something around them reach outside it.
    for p in &m.namespaces {
        let p = p.trim_end_matches('*').trim_matches('-');
        out.extend([format!("x{p}"), format!("{p}x"), format!("x-{p}-x")]);
    }
    out.retain(|n| is_namespace_name(n));
    out
}

/// A DNS-1123 label: what a namespace can be called.
fn is_namespace_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 63
        && n.bytes().all(namespace_byte)
        && !n.starts_with('-')
        && !n.ends_with('-')
}

fn namespace_byte(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'
}

/// A `namespace_overwrite_allowed` that accepts exactly the policy's namespaces.
pub fn suggested_regex(m: &Match) -> String {
    // Namespace names are [a-z0-9-]: only odd policy entries need escaping.
    let escape = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c.to_string()
                } else {
                    format!("\\{c}")
                }
            })
            .collect()
    };
    let alternatives: Vec<String> = m
        .namespaces
        .iter()
        .map(|p| match p.strip_suffix('*') {
            Some(prefix) => format!("{}.*", escape(prefix)),
            None => escape(p),
        })
        .collect();
    format!("^({})$", alternatives.join("|"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn scope(namespaces: &[&str]) -> Match {
        Match {
            namespaces: namespaces.iter().map(|s| s.to_string()).collect(),
            pod_name_prefixes: None,
            require_labels: None,
            exclude: None,
        }
    }

    #[rstest]
    #[case("^gitlab-runner$", &["gitlab-runner"], Reach::Covered)]
    #[case("^(gitlab-runner|ci-job-.*)$", &["gitlab-runner", "ci-job-*"], Reach::Covered)]
    #[case("^ci-job-[0-9]+$", &["gitlab-runner", "ci-job-*"], Reach::Covered)]
    #[case("^ci-job-", &["ci-job-*"], Reach::Covered)]
    #[case("(?i)^GITLAB-RUNNER$", &["gitlab-runner"], Reach::Unproven { unanchored: false })]
    #[case(".*", &["gitlab-runner"], Reach::Example("default".into()))]
    #[case("gitlab-runner", &["gitlab-runner"], Reach::Example("gitlab-runner-x".into()))]
    #[case("^gitlab-runner", &["gitlab-runner"], Reach::Example("gitlab-runner-x".into()))]
    #[case("ci-job-.*", &["ci-job-*"], Reach::Example("x-ci-job-x".into()))]
    #[case("^ci-.*$", &["ci-job-*"], Reach::Example("ci-x".into()))]
    #[case("^[a-z]+-runner$", &["gitlab-runner"], Reach::Example("xgitlab-runner".into()))]
    #[case("^[a-z]{3}$", &["gitlab-runner"], Reach::Unproven { unanchored: false })]
    #[case("^[a-z]{3}", &["*"], Reach::Covered)]
    #[case("[a-z]{3}", &["gitlab-runner"], Reach::Example("default".into()))]
    #[case("[0-9]{3}", &["gitlab-runner"], Reach::Unproven { unanchored: true })]
    #[case("^(gitlab-runner", &["gitlab-runner"], Reach::Unparsable("unclosed group".into()))]
    fn overwrite_regexes(#[case] regex: &str, #[case] ns: &[&str], #[case] want: Reach) {
        assert_eq!(overwrite_reach(regex, &scope(ns)), want, "{regex}");
    }

    const PIECES: [&str; 10] = [
        "gitlab-runner",
        "ci-job-",
        "ci-",
        "team-",
        ".*",
        "[0-9]+",
        "[a-z]+",
        "-",
        "x",
        "(gitlab-runner|ci-job-[0-9]+)",
    ];

    fn regex() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        (
            any::<bool>(),
            proptest::collection::vec(proptest::sample::select(PIECES.to_vec()), 1..4),
            any::<bool>(),
        )
            .prop_map(|(start, pieces, end)| {
                format!(
                    "{}{}{}",
                    if start { "^" } else { "" },
                    pieces.concat(),
                    if end { "$" } else { "" }
                )
            })
    }

    fn name() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        (
            "[a-z0-9-]{0,3}",
            proptest::sample::select(PIECES[..4].to_vec()),
            "[a-z0-9-]{0,6}",
        )
            .prop_map(|(a, p, b)| format!("{a}{p}{b}"))
    }

    proptest::proptest! {
        /// Covered is a proof: no name the regex accepts is outside the policy.
        #[test]
        fn covered_regexes_accept_only_fenced_namespaces(
            r in regex(),
            names in proptest::collection::vec(name(), 1..40),
        ) {
            let m = scope(&["gitlab-runner", "ci-job-*"]);
            let re = regex::Regex::new(&r).expect("regex");
            match overwrite_reach(&r, &m) {
                Reach::Covered => {
                    for n in names.iter().filter(|n| re.is_match(n)) {
                        proptest::prop_assert!(m.covers(n), "{r} accepts {n}");
                    }
                }
                Reach::Example(n) => {
                    proptest::prop_assert!(re.is_match(&n) && !m.covers(&n), "{r}: {n}");
                }
                _ => {}
            }
        }
    }

    #[test]
    fn per_job_namespaces_need_a_prefix() {
        assert!(covers_per_job(&scope(&["gitlab-runner", "ci-job-*"])));
        assert!(covers_per_job(&scope(&["ci-*"])));
        assert!(!covers_per_job(&scope(&["gitlab-runner", "ci-job-1"])));
        assert!(!covers_per_job(&scope(&["ci-job-1*"])));
    }

    #[test]
    fn the_suggested_regex_is_covered_and_matches_the_policy() {
        let m = scope(&["gitlab-runner", "ci-job-*"]);
        let s = suggested_regex(&m);
        assert_eq!(s, "^(gitlab-runner|ci-job-.*)$");
        assert_eq!(overwrite_reach(&s, &m), Reach::Covered);
        let re = regex::Regex::new(&s).expect("regex");
        assert!(re.is_match("gitlab-runner") && re.is_match("ci-job-7"));
        assert!(!re.is_match("default") && !re.is_match("gitlab-runner-2"));
    }
}
