//! `runner-fence test`: policy test suites, in the spirit of `kyverno test`.
//!
//! A suite file (`*.test.yaml`) names a policy and lists cases; each case is
//! an input (Pod or AdmissionReview), evaluated mutate-then-validate, and the
//! expectations it must meet. Paths are relative to the suite file.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde::Deserialize;
use serde_json::Value;

use super::inputs::to_review;
use super::{EXIT_BAD_INPUT, EXIT_DENIED, EXIT_OK, Error};
use crate::core::document::read_document;
use crate::core::engine::Operation;
use crate::core::nodes::{NodeInfo, NodeSnapshot};
use crate::core::policy::{self, RuleId};
use crate::core::report::Report;
use crate::webhook::eval::{Evaluation, evaluate};

/// A test suite file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Suite {
    /// `runner-fence.dev/v1alpha1`
    pub api_version: String,
    /// `RunnerPolicyTest`
    pub kind: String,
    /// Suite name.
    #[serde(default)]
    pub metadata: Option<SuiteMeta>,
    /// Policy file, relative to the suite (default: the embedded reference policy).
    #[serde(default)]
    pub policy: Option<PathBuf>,
    /// Nodes for live checks (as the node cache would see them).
    #[serde(default)]
    pub nodes: Vec<NodeInfo>,
    /// The cases.
    pub cases: Vec<Case>,
}

/// Suite metadata.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SuiteMeta {
    /// Name used in reports.
    pub name: String,
}

/// One test case.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Case {
    /// Shown in PASS/FAIL lines.
    pub name: String,
    /// Input file (Pod or AdmissionReview), relative to the suite.
    #[serde(default)]
    pub input: Option<PathBuf>,
    /// Inline input instead of a file.
    #[serde(default)]
    pub object: Option<Value>,
    /// Namespace for Pod inputs.
    #[serde(default)]
    pub namespace: Option<String>,
    /// CREATE (default) or UPDATE, for Pod inputs.
    #[serde(default)]
    pub operation: Option<String>,
    /// What must hold.
    pub expect: Expect,
}

/// Expectations of a case; omitted fields are not checked.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Expect {
    /// Whether the input is a job pod.
    #[serde(default)]
    pub matched: Option<bool>,
    /// Profile used.
    #[serde(default)]
    pub profile: Option<String>,
    /// Admitted by both webhooks.
    #[serde(default)]
    pub allowed: Option<bool>,
    /// Whether mutation sent a patch.
    #[serde(default)]
    pub patched: Option<bool>,
    /// Exactly these rules denied (enforced).
    #[serde(default)]
    pub rules: Option<Vec<RuleId>>,
    /// Exactly these rules reported in audit mode.
    #[serde(default)]
    pub audit_rules: Option<Vec<RuleId>>,
    /// Fragments that must each appear in a denial message or warning.
    #[serde(default)]
    pub messages: Vec<String>,
    /// A subset of the final pod (objects: listed keys; arrays: each listed item matches some item).
    #[serde(default)]
    pub pod: Option<Value>,
}

/// The result of one case.
pub struct CaseResult {
    /// Suite name.
    pub suite: String,
    /// Case name.
    pub name: String,
    /// Empty when passed.
    pub failures: Vec<String>,
}

/// Loads a suite file.
pub fn load_suite(path: &Path) -> Result<Suite, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let suite: Suite = serde_saphyr::from_str(&text).map_err(|e| Error::SuiteSyntax {
        path: path.to_path_buf(),
        message: e
            .to_string()
            .lines()
            .next()
            .unwrap_or("invalid suite")
            .to_string(),
    })?;
    if suite.kind != "RunnerPolicyTest" || suite.api_version != policy::API_VERSION {
        return Err(Error::SuiteKind {
            path: path.to_path_buf(),
        });
    }
    Ok(suite)
}

/// Runs one suite file.
pub fn run_suite(path: &Path) -> Result<Vec<CaseResult>, Error> {
    let suite = load_suite(path)?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let policy = policy::load(suite.policy.as_ref().map(|p| dir.join(p)).as_deref())?;
    let nodes = (!suite.nodes.is_empty()).then(|| NodeSnapshot::new(suite.nodes.clone()));
    let suite_name = suite
        .metadata
        .as_ref()
        .map(|m| m.name.clone())
        .unwrap_or_else(|| path.display().to_string());
    let mut results = Vec::new();
    for (i, case) in suite.cases.iter().enumerate() {
        let failures = match run_case(&policy, dir, case, nodes.as_ref(), i) {
            Ok(ev) => check(&case.expect, &ev),
            Err(e) => vec![format!("input error: {}", Report(&e))],
        };
        results.push(CaseResult {
            suite: suite_name.clone(),
            name: case.name.clone(),
            failures,
        });
    }
    Ok(results)
}

fn run_case(
    policy: &policy::Policy,
    dir: &Path,
    case: &Case,
    nodes: Option<&NodeSnapshot>,
    i: usize,
) -> Result<Evaluation, Error> {
    let doc = match (&case.input, &case.object) {
        (Some(p), None) => read_document(&dir.join(p))?,
        (None, Some(o)) => o.clone(),
        _ => return Err(Error::CaseInput),
    };
    let op = match case.operation.as_deref() {
        None => Operation::Create,
        Some(s) => Operation::parse(&s.to_uppercase())
            .ok_or_else(|| Error::CaseOperation(s.to_string()))?,
    };
    let review = to_review(
        doc,
        case.namespace.as_deref(),
        op,
        policy,
        &format!("test-{i}"),
    )?;
    Ok(evaluate(policy, &review, nodes)?)
}

fn sorted(mut v: Vec<RuleId>) -> String {
    v.sort();
    v.dedup();
    let ids: Vec<&str> = v.iter().map(|r| r.as_str()).collect();
    format!("[{}]", ids.join(", "))
}

/// Compares an evaluation with the expectations; one line per difference.
pub fn check(exp: &Expect, ev: &Evaluation) -> Vec<String> {
    let mut f = Vec::new();
    let mut cmp = |what: &str, want: String, got: String| {
        if want != got {
            f.push(format!("{what}: expected {want}, got {got}"));
        }
    };
    if let Some(m) = exp.matched {
        cmp("matched", m.to_string(), ev.matched.to_string());
    }
    if let Some(p) = &exp.profile {
        cmp(
            "profile",
            p.clone(),
            ev.profile.clone().unwrap_or_else(|| "none".into()),
        );
    }
    if let Some(a) = exp.allowed {
        cmp("allowed", a.to_string(), ev.allowed().to_string());
    }
    if let Some(p) = exp.patched {
        let got = !ev.mutate_decision.patch().is_empty();
        cmp("patched", p.to_string(), got.to_string());
    }
    let denied: Vec<RuleId> = [&ev.mutate_decision, &ev.validate_decision]
        .iter()
        .flat_map(|d| d.denials().iter().map(|v| v.rule))
        .collect();
    let audited: Vec<RuleId> = [&ev.mutate_decision, &ev.validate_decision]
        .iter()
        .flat_map(|d| d.audited().iter().map(|v| v.rule))
        .collect();
    if let Some(r) = &exp.rules {
        cmp("denied rules", sorted(r.clone()), sorted(denied));
    }
    if let Some(r) = &exp.audit_rules {
        cmp("audit rules", sorted(r.clone()), sorted(audited));
    }
    let messages = ev.messages();
    for frag in &exp.messages {
        if !messages.iter().any(|m| m.contains(frag.as_str())) {
            f.push(format!(
                "message: expected a denial or warning containing {frag:?}, got:\n{}",
                if messages.is_empty() {
                    "      (none)".to_string()
                } else {
                    messages
                        .iter()
                        .map(|m| format!("      {m}"))
                        .collect::<Vec<_>>()
                        .join("\n")
                }
            ));
        }
    }
    if let Some(want) = &exp.pod {
        subset_diff("pod", want, &ev.pod, &mut f);
    }
    f
}

/// Records where `got` does not contain `want`.
pub fn subset_diff(path: &str, want: &Value, got: &Value, out: &mut Vec<String>) {
    match (want, got) {
        (Value::Object(w), Value::Object(g)) => {
            for (k, wv) in w {
                let p = format!("{path}.{k}");
                match g.get(k) {
                    Some(gv) => subset_diff(&p, wv, gv, out),
                    None if wv.is_null() => {}
                    None => out.push(format!("{p}: expected {}, but it is missing", compact(wv))),
                }
            }
        }
        (Value::Array(w), Value::Array(g)) => {
            for (i, wv) in w.iter().enumerate() {
                let found = g.iter().any(|gv| {
                    let mut tmp = Vec::new();
                    subset_diff("", wv, gv, &mut tmp);
                    tmp.is_empty()
                });
                if !found {
                    out.push(format!(
                        "{path}[{i}]: expected an item matching {}\n      got {}",
                        compact(wv),
                        compact(got)
                    ));
                }
            }
        }
        (w, g) if w == g => {}
        (w, g) => out.push(format!(
            "{path}:\n      - expected {}\n      + got      {}",
            compact(w),
            compact(g)
        )),
    }
}

fn compact(v: &Value) -> String {
    let s = serde_json::to_string(v).unwrap_or_default();
    if s.len() > 400 {
        format!("{}…", &s[..s.floor_char_boundary(400)])
    } else {
        s
    }
}

/// Suite files under the given paths (files as given, directories searched).
pub fn discover(paths: &[PathBuf]) -> Result<Vec<PathBuf>, Error> {
    let roots: Vec<PathBuf> = if paths.is_empty() {
        vec![PathBuf::from(".")]
    } else {
        paths.to_vec()
    };
    let mut out = Vec::new();
    for root in roots {
        if root.is_file() {
            out.push(root);
        } else if root.is_dir() {
            walk(&root, &mut out).map_err(|source| Error::Read {
                path: root.clone(),
                source,
            })?;
        } else {
            return Err(Error::NoSuchPath { path: root });
        }
    }
    out.sort();
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if path.is_dir() {
            if !name.starts_with('.') && name != "target" {
                walk(&path, out)?;
            }
        } else if name.ends_with(".test.yaml") || name.ends_with(".test.yml") {
            out.push(path);
        }
    }
    Ok(())
}

#[derive(clap::Args, Debug)]
pub(super) struct Args {
    /// Suite files or directories searched for `*.test.yaml` (default: current directory).
    paths: Vec<PathBuf>,
    /// Write a JUnit XML report (for GitLab CI `artifacts:reports:junit`).
    #[arg(long)]
    junit: Option<PathBuf>,
}

/// `runner-fence test`: runs suites, prints results, writes JUnit.
pub(super) fn run(Args { paths, junit }: Args) -> Result<ExitCode, Error> {
    let files = discover(&paths)?;
    if files.is_empty() {
        return Err(Error::NoSuites);
    }
    let mut all = Vec::new();
    let mut broken = false;
    for file in &files {
        match run_suite(file) {
            Ok(r) => all.extend(r),
            Err(e) => {
                // A broken suite is reported with the others; the exit code says it.
                let message = Report(&e).to_string();
                eprintln!("error: {message}");
                broken = true;
                all.push(CaseResult {
                    suite: file.display().to_string(),
                    name: "load suite".into(),
                    failures: vec![message],
                });
            }
        }
    }
    for r in &all {
        if r.failures.is_empty() {
            outln!("PASS {} / {}", r.suite, r.name);
        } else {
            outln!("FAIL {} / {}", r.suite, r.name);
            for f in &r.failures {
                outln!("    {f}");
            }
        }
    }
    let failed = all.iter().filter(|r| !r.failures.is_empty()).count();
    let passed = all.len() - failed;
    if let Some(path) = junit {
        std::fs::write(&path, junit_xml(&all)).map_err(|source| Error::Write { path, source })?;
    }
    outln!("{passed} passed, {failed} failed");
    Ok(ExitCode::from(if broken {
        EXIT_BAD_INPUT
    } else if failed > 0 {
        EXIT_DENIED
    } else {
        EXIT_OK
    }))
}

fn xml_escape(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control() || matches!(c, '\n' | '\t'))
        .fold(String::new(), |mut acc, c| {
            match c {
                '&' => acc.push_str("&amp;"),
                '<' => acc.push_str("&lt;"),
                '>' => acc.push_str("&gt;"),
                '"' => acc.push_str("&quot;"),
                '\'' => acc.push_str("&apos;"),
                c => acc.push(c),
            }
            acc
        })
}

/// [`xml_escape`] for attribute values: whitespace other than a space is kept as
/// a character reference, since XML parsers normalise raw tabs and newlines in
/// attributes to spaces.
fn attr_escape(s: &str) -> String {
    xml_escape(s)
        .replace('\n', "&#10;")
        .replace('\t', "&#9;")
        .replace('\r', "&#13;")
}

/// A JUnit XML report, one testsuite per suite (the junit-10 format GitLab reads).
pub fn junit_xml(results: &[CaseResult]) -> String {
    let mut by_suite: BTreeMap<&str, Vec<&CaseResult>> = BTreeMap::new();
    for r in results {
        by_suite.entry(&r.suite).or_default().push(r);
    }
    let failures = results.iter().filter(|r| !r.failures.is_empty()).count();
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        x,
        "<testsuites name=\"runner-fence\" tests=\"{}\" failures=\"{failures}\" errors=\"0\">",
        results.len()
    );
    for (suite, cases) in by_suite {
        let f = cases.iter().filter(|r| !r.failures.is_empty()).count();
        let _ = writeln!(
            x,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{f}\" errors=\"0\">",
            attr_escape(suite),
            cases.len()
        );
        for c in cases {
            let _ = write!(
                x,
                "    <testcase classname=\"{}\" name=\"{}\"",
                attr_escape(suite),
                attr_escape(&c.name)
            );
            if c.failures.is_empty() {
                x.push_str("/>\n");
            } else {
                let first = c.failures[0].lines().next().unwrap_or("");
                let _ = writeln!(
                    x,
                    ">\n      <failure message=\"{}\">{}</failure>\n    </testcase>",
                    attr_escape(first),
                    xml_escape(&c.failures.join("\n"))
                );
            }
        }
        x.push_str("  </testsuite>\n");
    }
    x.push_str("</testsuites>\n");
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn junit_attributes_keep_tabs_and_newlines_and_count_errors() {
        let xml = junit_xml(&[CaseResult {
            suite: "s".into(),
            name: "a\tb\nc & <d>".into(),
            failures: vec!["line one\n\tline two".into()],
        }]);
        assert!(
            xml.contains("name=\"a&#9;b&#10;c &amp; &lt;d&gt;\""),
            "{xml}"
        );
        // The failure's message attribute is its first line; the body keeps all.
        assert!(
            xml.contains("message=\"line one\">line one\n\tline two</failure>"),
            "{xml}"
        );
        assert!(xml.contains("<testsuite name=\"s\" tests=\"1\" failures=\"1\" errors=\"0\">"));
    }
}
