//! The shipped Grafana dashboard and Prometheus alert rules
//! (`charts/runner-fence/files/`) against the server they watch: every PromQL
//! expression parses, every `runner_fence_*` metric, label and label value they
//! select is in the real `/metrics` of a running server, every legend and alert
//! annotation names a label the expression keeps, and both files are well formed.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use promql_parser::label::{MatchOp, Matchers};
use promql_parser::parser::{self, Expr, LabelModifier, VectorMatchCardinality, VectorSelector};
use rstest::rstest;
use runner_fence::webhook::routes::admission_router;
use serde::Deserialize;
use serde_json::Value;
use tower::ServiceExt;

const DASHBOARD_PATH: &str = "charts/runner-fence/files/grafana-dashboard.json";
const RULES_PATH: &str = "charts/runner-fence/files/prometheus-rules.yaml";
const DASHBOARD: &str = include_str!("../charts/runner-fence/files/grafana-dashboard.json");
const RULES: &str = include_str!("../charts/runner-fence/files/prometheus-rules.yaml");

/// Labels Prometheus attaches to every scraped series (Kubernetes service
/// discovery and the scrape itself); the server does not export them.
const TARGET_LABELS: [&str; 4] = ["namespace", "job", "instance", "pod"];

/// Values for the Grafana variables, as Grafana would substitute them.
const GRAFANA_VARIABLES: [(&str, &str); 6] = [
    ("${__rate_interval}", "1m"),
    ("$__rate_interval", "1m"),
    ("${namespace}", "runner-fence"),
    ("$namespace", "runner-fence"),
    ("${job}", "runner-fence"),
    ("$job", "runner-fence"),
];

// ---- the two files ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    groups: Vec<RuleGroup>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleGroup {
    name: String,
    interval: Option<String>,
    query_offset: Option<String>,
    // Prometheus' other group fields, accepted so that a typo is what
    // deny_unknown_fields rejects.
    #[allow(dead_code)]
    limit: Option<u64>,
    #[allow(dead_code)]
    labels: Option<BTreeMap<String, String>>,
    rules: Vec<Rule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Rule {
    alert: Option<String>,
    record: Option<String>,
    expr: String,
    #[serde(rename = "for")]
    for_: Option<String>,
    keep_firing_for: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

fn rules() -> RuleFile {
    serde_saphyr::from_str(RULES).unwrap_or_else(|e| panic!("{RULES_PATH}: {e}"))
}

fn dashboard() -> Value {
    serde_json::from_str(DASHBOARD).unwrap_or_else(|e| panic!("{DASHBOARD_PATH}: {e}"))
}

/// Every panel, rows and the panels of collapsed rows included.
fn panels(dash: &Value) -> Vec<&Value> {
    fn walk<'a>(list: &'a Value, out: &mut Vec<&'a Value>) {
        for p in list.as_array().into_iter().flatten() {
            out.push(p);
            walk(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dash["panels"], &mut out);
    out
}

/// One PromQL expression of either file, with where it comes from and the
/// label templates (`{{label}}`) it is expected to fill.
#[derive(Debug)]
struct Query {
    origin: String,
    text: String,
    templated: Vec<String>,
}

/// Replaces Grafana's variables by concrete values; any `$` left is an
/// unknown variable.
fn substitute(origin: &str, expr: &str) -> String {
    let mut s = expr.to_string();
    for (var, value) in GRAFANA_VARIABLES {
        s = s.replace(var, value);
    }
    assert!(
        !s.contains('$'),
        "{origin}: unknown Grafana variable left in {s:?}"
    );
    s
}

/// The label names a text template refers to: Grafana's `{{label}}` legends,
/// or Prometheus' `{{ $labels.label }}` in alert annotations.
fn template_labels(text: &str, alert: bool) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let Some(len) = rest[start..].find("}}") else {
            break;
        };
        let inner = rest[start + 2..start + len].trim();
        if alert {
            let mut words = inner;
            while let Some(i) = words.find("$labels.") {
                let name: String = words[i + "$labels.".len()..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                out.push(name);
                words = &words[i + 1..];
            }
        } else {
            out.push(inner.to_string());
        }
        rest = &rest[start + len + 2..];
    }
    out
}

/// Every expression of the dashboard: panel targets, annotations, and the
/// metric selectors of `label_values(...)` variable queries.
fn dashboard_queries() -> Vec<Query> {
    let dash = dashboard();
    let mut out = Vec::new();
    for p in panels(&dash) {
        for t in p["targets"].as_array().into_iter().flatten() {
            let origin = format!(
                "{DASHBOARD_PATH}: panel {} {:?} target {}",
                p["id"],
                p["title"].as_str().unwrap_or(""),
                t["refId"].as_str().unwrap_or("")
            );
            let expr = t["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("{origin}: no expr"));
            let legend = t["legendFormat"].as_str().unwrap_or("");
            out.push(Query {
                text: substitute(&origin, expr),
                templated: template_labels(legend, false),
                origin,
            });
        }
    }
    for a in dash["annotations"]["list"].as_array().into_iter().flatten() {
        if let Some(expr) = a["expr"].as_str() {
            let origin = format!("{DASHBOARD_PATH}: annotation {:?}", a["name"]);
            let mut templated = Vec::new();
            for f in ["titleFormat", "textFormat"] {
                templated.extend(template_labels(a[f].as_str().unwrap_or(""), false));
            }
            out.push(Query {
                text: substitute(&origin, expr),
                templated,
                origin,
            });
        }
    }
    for v in dash["templating"]["list"].as_array().into_iter().flatten() {
        if v["type"] != "query" {
            continue;
        }
        let origin = format!("{DASHBOARD_PATH}: variable {:?}", v["name"]);
        let q = v["query"]["query"]
            .as_str()
            .or(v["query"].as_str())
            .unwrap_or_else(|| panic!("{origin}: no query"));
        // Grafana's label_values(selector, label) is not PromQL; its selector is.
        let (selector, label) = q
            .strip_prefix("label_values(")
            .and_then(|r| r.strip_suffix(')'))
            .and_then(|r| r.rsplit_once(','))
            .unwrap_or_else(|| panic!("{origin}: expected label_values(selector, label), got {q}"));
        out.push(Query {
            text: substitute(&origin, selector.trim()),
            templated: vec![label.trim().to_string()],
            origin,
        });
    }
    out
}

fn rule_queries() -> Vec<Query> {
    rules()
        .groups
        .iter()
        .flat_map(|g| g.rules.iter().map(move |r| (g, r)))
        .map(|(g, r)| {
            let name = r.alert.as_deref().or(r.record.as_deref()).unwrap_or("?");
            let severity = r.labels.get("severity").map_or("", String::as_str);
            Query {
                origin: format!("{RULES_PATH}: group {} rule {name} {severity}", g.name),
                text: r.expr.clone(),
                templated: r
                    .annotations
                    .values()
                    .flat_map(|a| template_labels(a, true))
                    .collect(),
            }
        })
        .collect()
}

fn all_queries() -> Vec<Query> {
    let mut q = dashboard_queries();
    q.extend(rule_queries());
    q
}

// ---- the AST ----

/// One metric selector found in an expression.
#[derive(Debug)]
struct Selected {
    name: String,
    matchers: Vec<(String, MatchOp, String)>,
}

fn matchers_of(m: &Matchers) -> Vec<(String, MatchOp, String)> {
    m.matchers
        .iter()
        .chain(m.or_matchers.iter().flatten())
        .map(|m| (m.name.clone(), m.op.clone(), m.value.clone()))
        .collect()
}

fn selector_name(vs: &VectorSelector) -> Option<String> {
    vs.name.clone().or_else(|| {
        vs.matchers
            .matchers
            .iter()
            .find(|m| m.name == "__name__" && m.op == MatchOp::Equal)
            .map(|m| m.value.clone())
    })
}

fn vector_selector(e: &Expr) -> Option<&VectorSelector> {
    match e {
        Expr::VectorSelector(vs) => Some(vs),
        Expr::MatrixSelector(ms) => Some(&ms.vs),
        _ => None,
    }
}

/// Every metric selector of `e`, depth first.
fn selectors(e: &Expr, out: &mut Vec<Selected>) {
    if let Some(vs) = vector_selector(e) {
        let name = selector_name(vs).unwrap_or_default();
        out.push(Selected {
            name,
            matchers: matchers_of(&vs.matchers),
        });
        return;
    }
    for child in children(e) {
        selectors(child, out);
    }
}

fn children(e: &Expr) -> Vec<&Expr> {
    match e {
        Expr::Aggregate(a) => {
            let mut c = vec![a.expr.as_ref()];
            c.extend(a.param.as_deref());
            c
        }
        Expr::Unary(u) => vec![u.expr.as_ref()],
        Expr::Binary(b) => vec![b.lhs.as_ref(), b.rhs.as_ref()],
        Expr::Paren(p) => vec![p.expr.as_ref()],
        Expr::Subquery(s) => vec![s.expr.as_ref()],
        Expr::Call(c) => c.args.args.iter().map(|a| a.as_ref()).collect(),
        Expr::Extension(x) => x.expr.children().iter().collect(),
        Expr::NumberLiteral(_)
        | Expr::StringLiteral(_)
        | Expr::VectorSelector(_)
        | Expr::MatrixSelector(_) => Vec::new(),
    }
}

fn names(ls: &promql_parser::label::Labels) -> BTreeSet<String> {
    ls.labels.iter().cloned().collect()
}

// ---- the server's exposition ----

/// The server's `/metrics`, parsed: sample name to the label sets of its samples.
struct Exposition {
    text: String,
    samples: BTreeMap<String, Vec<BTreeMap<String, String>>>,
    /// `# TYPE` families.
    families: BTreeMap<String, String>,
}

impl Exposition {
    fn parse(text: String) -> Self {
        let mut samples: BTreeMap<String, Vec<BTreeMap<String, String>>> = BTreeMap::new();
        let mut families = BTreeMap::new();
        for line in text.lines() {
            if let Some(t) = line.strip_prefix("# TYPE ") {
                let (name, kind) = t.split_once(' ').expect("# TYPE name kind");
                families.insert(name.to_string(), kind.to_string());
                continue;
            }
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            let end = line.find(['{', ' ']).expect("sample line");
            let name = &line[..end];
            let mut labels = BTreeMap::new();
            if line[end..].starts_with('{') {
                let mut chars = line[end + 1..].chars().peekable();
                loop {
                    let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
                    let key = key.trim_start_matches(',').trim().to_string();
                    if key.is_empty() || key.starts_with('}') {
                        break;
                    }
                    assert_eq!(chars.next(), Some('"'), "{line}");
                    let mut value = String::new();
                    while let Some(c) = chars.next() {
                        match c {
                            '\\' => value.push(chars.next().expect("escape")),
                            '"' => break,
                            c => value.push(c),
                        }
                    }
                    labels.insert(key, value);
                    if chars.peek() == Some(&'}') {
                        break;
                    }
                }
            }
            samples.entry(name.to_string()).or_default().push(labels);
        }
        Exposition {
            text,
            samples,
            families,
        }
    }

    /// Label names of a sample name's series.
    fn label_names(&self, name: &str) -> BTreeSet<String> {
        self.samples
            .get(name)
            .into_iter()
            .flatten()
            .flat_map(|l| l.keys().cloned())
            .collect()
    }

    /// Values a label takes in a sample name's series.
    fn label_values(&self, name: &str, label: &str) -> BTreeSet<String> {
        self.samples
            .get(name)
            .into_iter()
            .flatten()
            .filter_map(|l| l.get(label).cloned())
            .collect()
    }
}

async fn send(router: axum::Router, path: &str, ctype: &str, body: Vec<u8>) -> StatusCode {
    let req = Request::post(path)
        .header("content-type", ctype)
        .body(Body::from(body))
        .expect("request");
    router.oneshot(req).await.expect("response").status()
}

/// Rewrites `path` until `line` is in the metrics: the server's reload loop
/// may take its first look at the file only after the first write.
async fn rewrite_until(
    state: &runner_fence::webhook::State,
    path: &std::path::Path,
    content: impl Fn(usize) -> String,
    line: &str,
) {
    for i in 0..100 {
        std::fs::write(path, content(i)).expect("write");
        tokio::time::sleep(Duration::from_millis(100)).await;
        if state.metrics.encode().contains(line) {
            return;
        }
    }
    panic!("{line} never appeared in {}", state.metrics.encode());
}

/// Runs a real server and drives it through what the dashboard and the alerts
/// watch (patched, denied and errored reviews, a bad request, a good and a
/// broken policy reload), then scrapes its admin port's `/metrics`.
async fn exposition() -> Exposition {
    let dir = tempfile::tempdir().expect("tmp");
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, runner_fence::core::policy::EMBEDDED_POLICY).expect("write");
    let mut args = common::serve_args();
    args.policy = Some(policy.clone());
    let server = common::start(args).await;
    let state = server.state.clone();
    let job = serde_json::to_vec(&common::fixture("plain-job.json")).expect("json");
    let not_a_pod = {
        let mut v = common::fixture("plain-job.json");
        v["request"]["kind"]["kind"] = "Deployment".into();
        v["request"]["resource"] =
            serde_json::json!({"group": "apps", "version": "v1", "resource": "deployments"});
        serde_json::to_vec(&v).expect("json")
    };
    // A binding without the node cache: its node is read on demand (here there
    // is no cluster, so the lookup fails and the binding is denied).
    let binding = serde_json::to_vec(&serde_json::json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "b", "kind": {"group": "", "version": "v1", "kind": "Binding"},
            "resource": {"group": "", "version": "v1", "resource": "bindings"}, "name": "p", "namespace": "gitlab-runner",
            "operation": "CREATE", "object": {"kind": "Binding", "metadata": {"name": "p"}, "target": {"name": "runner-1"}}}}))
    .expect("json");
    for (path, ctype, body, want) in [
        ("/mutate", "application/json", job.clone(), StatusCode::OK),
        ("/validate", "application/json", binding, StatusCode::OK),
        // Unmutated, so the validating webhook denies it.
        ("/validate", "application/json", job.clone(), StatusCode::OK),
        ("/validate", "application/json", not_a_pod, StatusCode::OK),
        (
            "/validate",
            "text/plain",
            job.clone(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            "/mutate",
            "application/json",
            b"{not json".to_vec(),
            StatusCode::BAD_REQUEST,
        ),
    ] {
        let got = send(admission_router(state.clone()), path, ctype, body).await;
        assert_eq!(got, want, "{path} {ctype}");
    }
    let edited = |i| {
        format!(
            "{}\n# edit {i}\n",
            runner_fence::core::policy::EMBEDDED_POLICY
        )
    };
    rewrite_until(&state, &policy, edited, "kind=\"policy\",result=\"ok\"").await;
    let broken = |i| format!("mode: [broken {i}");
    rewrite_until(&state, &policy, broken, "kind=\"policy\",result=\"failed\"").await;
    let text = reqwest::get(format!("http://{}/metrics", server.admin))
        .await
        .expect("scrape")
        .text()
        .await
        .expect("body");
    server.stop().await;
    let mut exp = Exposition::parse(text);
    // The apiserver's own metrics the backstop panels and alert read: their
    // samples (not families: the server does not export them) join the check.
    let apiserver = Exposition::parse(include_str!("data/apiserver-metrics.txt").to_string());
    exp.samples.extend(apiserver.samples);
    exp
}

/// The labels a (sub)expression's result carries; None for a scalar.
fn output_labels(e: &Expr, exp: &Exposition) -> Option<BTreeSet<String>> {
    let target: BTreeSet<String> = TARGET_LABELS.iter().map(|s| s.to_string()).collect();
    match e {
        Expr::VectorSelector(_) | Expr::MatrixSelector(_) => {
            let vs = vector_selector(e).expect("selector");
            let name = selector_name(vs).unwrap_or_default();
            Some(exp.label_names(&name).union(&target).cloned().collect())
        }
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) => None,
        Expr::Paren(p) => output_labels(&p.expr, exp),
        Expr::Unary(u) => output_labels(&u.expr, exp),
        Expr::Subquery(s) => output_labels(&s.expr, exp),
        Expr::Aggregate(a) => {
            let inner = output_labels(&a.expr, exp).unwrap_or_default();
            Some(match &a.modifier {
                Some(LabelModifier::Include(ls)) => names(ls),
                Some(LabelModifier::Exclude(ls)) => inner.difference(&names(ls)).cloned().collect(),
                None => BTreeSet::new(),
            })
        }
        Expr::Call(c) => match c.func.name {
            "time" | "scalar" | "pi" => None,
            "vector" => Some(BTreeSet::new()),
            "absent" | "absent_over_time" => Some(
                c.args
                    .args
                    .first()
                    .and_then(|a| vector_selector(a))
                    .map(|vs| {
                        vs.matchers
                            .matchers
                            .iter()
                            .filter(|m| m.op == MatchOp::Equal && m.name != "__name__")
                            .map(|m| m.name.clone())
                            .collect()
                    })
                    .unwrap_or_default(),
            ),
            name => {
                let mut out: Option<BTreeSet<String>> = None;
                for a in &c.args.args {
                    if let Some(l) = output_labels(a, exp) {
                        out.get_or_insert_default().extend(l);
                    }
                }
                if name == "histogram_quantile" {
                    out.as_mut().map(|o| o.remove("le"));
                }
                out
            }
        },
        Expr::Binary(b) => {
            let (l, r) = (output_labels(&b.lhs, exp), output_labels(&b.rhs, exp));
            match (l, r) {
                (None, r) => r,
                (l, None) => l,
                (Some(l), Some(r)) => {
                    let extra = |ls: Option<&promql_parser::label::Labels>| {
                        ls.map(names).unwrap_or_default()
                    };
                    Some(match b.modifier.as_ref().map(|m| &m.card) {
                        _ if b.op.to_string() == "or" => l.union(&r).cloned().collect(),
                        Some(VectorMatchCardinality::OneToMany(ls)) => {
                            r.union(&extra(Some(ls))).cloned().collect()
                        }
                        Some(VectorMatchCardinality::ManyToOne(ls)) => {
                            l.union(&extra(Some(ls))).cloned().collect()
                        }
                        _ => l,
                    })
                }
            }
        }
        Expr::Extension(_) => None,
    }
}

// ---- the tests ----

#[rstest]
#[case::dashboard(dashboard_queries(), 10)]
#[case::rules(rule_queries(), 5)]
fn every_expression_parses(#[case] queries: Vec<Query>, #[case] at_least: usize) {
    assert!(
        queries.len() >= at_least,
        "only {} expressions found: {queries:#?}",
        queries.len()
    );
    let failed: Vec<String> = queries
        .iter()
        .filter_map(|q| {
            parser::parse(&q.text)
                .err()
                .map(|e| format!("{}: {e}\n    {}", q.origin, q.text))
        })
        .collect();
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

#[tokio::test]
async fn every_metric_label_and_value_used_is_exported_by_the_server() {
    let exp = exposition().await;
    let mut problems = Vec::new();
    let mut used = BTreeSet::new();
    for q in all_queries() {
        let e = parser::parse(&q.text).unwrap_or_else(|e| panic!("{}: {e}", q.origin));
        let mut found = Vec::new();
        selectors(&e, &mut found);
        // Metric names, the labels matched on, and the values matched exactly.
        for s in &found {
            if !(s.name.starts_with("runner_fence_") || s.name.starts_with("apiserver_")) {
                continue;
            }
            used.insert(s.name.clone());
            if !exp.samples.contains_key(&s.name) {
                problems.push(format!("{}: {} is not exported", q.origin, s.name));
                continue;
            }
            for (label, op, value) in &s.matchers {
                if label == "__name__" || TARGET_LABELS.contains(&label.as_str()) {
                    continue;
                }
                let values = exp.label_values(&s.name, label);
                if values.is_empty() {
                    problems.push(format!("{}: {} has no label {label}", q.origin, s.name));
                } else if *op == MatchOp::Equal && !values.contains(value) {
                    problems.push(format!(
                        "{}: {}{{{label}={value:?}}} never seen; the server exported {values:?}",
                        q.origin, s.name
                    ));
                }
            }
        }
        // Labels grouped or matched on exist below the aggregation or binary operator.
        check_groupings(&e, &q, &exp, &mut problems);
        // Legends and annotations name labels the result keeps.
        let kept = output_labels(&e, &exp).unwrap_or_default();
        for l in &q.templated {
            if !kept.contains(l) {
                problems.push(format!(
                    "{}: the template names label {l:?}, the result has only {kept:?}",
                    q.origin
                ));
            }
        }
    }
    // And the other way: every family the server exports is on the dashboard.
    let shown: BTreeSet<String> = dashboard_queries()
        .iter()
        .flat_map(|q| {
            let mut found = Vec::new();
            selectors(&parser::parse(&q.text).expect("parsed above"), &mut found);
            found.into_iter().map(|s| s.name)
        })
        .collect();
    for (family, kind) in &exp.families {
        let suffixes: &[&str] = match kind.as_str() {
            "counter" => &["_total"],
            "histogram" => &["_bucket", "_sum", "_count"],
            _ => &[""],
        };
        if !suffixes
            .iter()
            .any(|s| shown.contains(&format!("{family}{s}")))
        {
            problems.push(format!(
                "{DASHBOARD_PATH}: no panel shows {family} ({kind})"
            ));
        }
    }
    assert!(!used.is_empty(), "no runner_fence_ metric used");
    assert!(
        problems.is_empty(),
        "{}\n\nused: {used:?}\n\n/metrics:\n{}",
        problems.join("\n"),
        exp.text
    );
}

fn check_groupings(e: &Expr, q: &Query, exp: &Exposition, problems: &mut Vec<String>) {
    let below = |e: &Expr| output_labels(e, exp).unwrap_or_default();
    match e {
        Expr::Aggregate(a) => {
            if let Some(m) = &a.modifier {
                let have = below(&a.expr);
                for l in names(m.labels()).difference(&have) {
                    problems.push(format!(
                        "{}: grouping by {l:?}, not a label of {}",
                        q.origin, a.expr
                    ));
                }
            }
        }
        Expr::Binary(b) => {
            if let Some(m) = b.modifier.as_ref().and_then(|m| m.matching.as_ref()) {
                let have: BTreeSet<String> = below(&b.lhs).union(&below(&b.rhs)).cloned().collect();
                for l in names(m.labels()).difference(&have) {
                    problems.push(format!(
                        "{}: matching on {l:?}, a label of neither side",
                        q.origin
                    ));
                }
            }
        }
        _ => {}
    }
    for c in children(e) {
        check_groupings(c, q, exp, problems);
    }
}

#[test]
fn every_alert_has_a_severity_a_summary_and_a_description() {
    let file = rules();
    assert!(
        file.groups.iter().any(|g| g.name == "runner-fence"),
        "no group runner-fence in {RULES_PATH}"
    );
    let mut problems = Vec::new();
    let mut seen = BTreeSet::new();
    let mut alerts = 0;
    for g in &file.groups {
        for (what, d) in [("interval", &g.interval), ("query_offset", &g.query_offset)] {
            if let Some(d) = d {
                check_duration(&format!("group {} {what}", g.name), d, &mut problems);
            }
        }
        for r in &g.rules {
            let name = match (&r.alert, &r.record) {
                (Some(a), None) => a,
                (None, Some(_)) => continue,
                _ => {
                    problems.push(format!(
                        "a rule of {} has not exactly one of alert and record",
                        g.name
                    ));
                    continue;
                }
            };
            alerts += 1;
            let severity = r.labels.get("severity").map_or("", String::as_str);
            if !["critical", "warning", "info"].contains(&severity) {
                problems.push(format!("{name}: severity {severity:?}"));
            }
            if !seen.insert((name.clone(), severity.to_string())) {
                problems.push(format!("{name}: two alerts with severity {severity:?}"));
            }
            for a in ["summary", "description"] {
                if r.annotations.get(a).is_none_or(|v| v.trim().is_empty()) {
                    problems.push(format!("{name}: no {a} annotation"));
                }
            }
            for (what, d) in [("for", &r.for_), ("keep_firing_for", &r.keep_firing_for)] {
                if let Some(d) = d {
                    check_duration(&format!("{name} {what}"), d, &mut problems);
                }
            }
        }
    }
    assert!(alerts > 0, "no alert in {RULES_PATH}");
    assert!(
        problems.is_empty(),
        "{RULES_PATH}:\n{}",
        problems.join("\n")
    );
}

fn check_duration(what: &str, d: &str, problems: &mut Vec<String>) {
    if let Err(e) = promql_parser::util::parse_duration(d) {
        problems.push(format!("{what}: {d:?} is not a duration: {e}"));
    }
}

fn uses_datasource_variable(ds: &Value) -> bool {
    ds == "${datasource}" || (ds["uid"] == "${datasource}" && ds["type"] == "prometheus")
}

#[test]
fn dashboard_panels_have_unique_ids_and_use_the_datasource_variable() {
    let dash = dashboard();
    let mut problems = Vec::new();
    let vars = dash["templating"]["list"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if !vars.iter().any(|v| {
        v["name"] == "datasource" && v["type"] == "datasource" && v["query"] == "prometheus"
    }) {
        problems.push("no Prometheus datasource variable named datasource".to_string());
    }
    for v in vars.iter().filter(|v| v["type"] == "query") {
        if !uses_datasource_variable(&v["datasource"]) {
            problems.push(format!(
                "variable {}: datasource {}",
                v["name"], v["datasource"]
            ));
        }
    }
    for a in dash["annotations"]["list"].as_array().into_iter().flatten() {
        if a["expr"].is_string() && !uses_datasource_variable(&a["datasource"]) {
            problems.push(format!(
                "annotation {}: datasource {}",
                a["name"], a["datasource"]
            ));
        }
    }
    let mut ids = BTreeSet::new();
    let all = panels(&dash);
    assert!(!all.is_empty(), "no panels");
    for p in all {
        let id = &p["id"];
        if !id.is_u64() || !ids.insert(id.to_string()) {
            problems.push(format!(
                "panel {:?}: id {id} missing or not unique",
                p["title"]
            ));
        }
        if p["type"] == "row" {
            continue;
        }
        if !uses_datasource_variable(&p["datasource"]) {
            problems.push(format!(
                "panel {id} {:?}: datasource {}",
                p["title"], p["datasource"]
            ));
        }
        let targets = p["targets"].as_array().cloned().unwrap_or_default();
        if targets.is_empty() {
            problems.push(format!("panel {id} {:?}: no targets", p["title"]));
        }
        for t in targets {
            if !t["datasource"].is_null() && !uses_datasource_variable(&t["datasource"]) {
                problems.push(format!(
                    "panel {id} target {}: datasource {}",
                    t["refId"], t["datasource"]
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{DASHBOARD_PATH}:\n{}",
        problems.join("\n")
    );
}

/// Every dashboard description and alert annotation about the latency
/// histogram's buckets names its real range (from the server's histogram).
#[test]
fn latency_texts_name_the_real_buckets() {
    let m = runner_fence::webhook::metrics::Metrics::new();
    m.latency
        .get_or_create(&runner_fence::webhook::metrics::EndpointLabels {
            endpoint: "validate",
        })
        .observe(0.001);
    let les: Vec<f64> = m
        .encode()
        .lines()
        .filter(|l| l.starts_with("runner_fence_review_duration_seconds_bucket"))
        .filter_map(|l| l.split("le=\"").nth(1)?.split('"').next()?.parse().ok())
        .filter(|le: &f64| le.is_finite())
        .collect();
    let largest = format!("{:.2} s", les.iter().copied().fold(0.0, f64::max));
    let smallest = format!(
        "{:.0} µs",
        les.iter().copied().fold(f64::MAX, f64::min) * 1e6
    );
    let dash = dashboard();
    let mut texts: Vec<(String, String)> = panels(&dash)
        .into_iter()
        .filter_map(|p| {
            Some((
                format!("panel {}", p["title"]),
                p["description"].as_str()?.to_string(),
            ))
        })
        .collect();
    for g in rules().groups {
        for r in g.rules {
            for (k, v) in r.annotations {
                texts.push((format!("{:?} {k}", r.alert), v));
            }
        }
    }
    let about: Vec<&(String, String)> = texts
        .iter()
        .filter(|(_, t)| t.replace("_bucket", "").contains("bucket"))
        .collect();
    assert!(about.len() >= 2, "texts about the buckets: {about:?}");
    for (origin, text) in about {
        assert!(
            text.contains(&largest),
            "{origin} does not say the buckets reach {largest}: {text}"
        );
        if origin.starts_with("panel") {
            assert!(
                text.contains(&smallest),
                "{origin} does not say the buckets start at {smallest}: {text}"
            );
        }
    }
}
