//! `runner-fence lint PATH...`: policy documents in files and directories of a
//! GitOps repository, judged one by one and together as the controller does.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use rstest::rstest;
use runner_fence::k8s::controller::judge;
use runner_fence::k8s::controller::resource::RunnerFencePolicy;
use serde_json::Value;

const REPO: &str = "tests/data/policy-repo";
const TEAMS: &str = "tests/data/policy-repo/clusters/prod/runner-fence/policies.yaml";
const CONFLICT: &str = "tests/data/policy-conflict/policies.yaml";
const OBJECT: &str = "examples/runnerfencepolicy.yaml";
const PLAIN: &str = "examples/policy.yaml";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn lint(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_runner-fence"))
        .arg("lint")
        .args(args)
        .current_dir(root())
        .output()
        .expect("runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_string()
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).expect("fixture")
}

/// The reference object renamed, claiming `namespace`.
fn object(name: &str, namespace: &str) -> String {
    let src = read(OBJECT);
    assert!(
        src.contains("name: gitlab-runner-jobs") && src.contains("namespaces: [gitlab-runner]")
    );
    src.replacen("name: gitlab-runner-jobs", &format!("name: {name}"), 1)
        .replacen(
            "namespaces: [gitlab-runner]",
            &format!("namespaces: [{namespace}]"),
            1,
        )
        .replacen(
            "- namespace: gitlab-runner\n",
            &format!("- namespace: {namespace}\n"),
            1,
        )
}

const DEPLOYMENT: &str =
    "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec: {replicas: 1}\n";

/// A temporary directory with `files` (name, text) written into it.
fn tree(files: &[(&str, String)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tmp");
    for (name, body) in files {
        let p = dir.path().join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(p, body).expect("write");
    }
    dir
}

fn path(dir: &Path, name: &str) -> String {
    dir.join(name).display().to_string()
}

/// Repository layouts, the exit code and the lines expected (each line of
/// stdout, in order, `{d}` standing for the temporary directory).
#[rstest]
#[case::multi_document_file_beside_a_deployment(
    vec![], vec![TEAMS], 0,
    vec![
        format!("{TEAMS}:1: RunnerFencePolicy team-a: ok"),
        format!("{TEAMS}:3: RunnerFencePolicy team-b: ok"),
        "2 policy document(s): 2 ok, 0 with warnings, 0 broken".into(),
    ]
)]
#[case::directory_searched_recursively_hidden_skipped(
    vec![], vec![REPO], 0,
    vec![
        format!("{TEAMS}:1: RunnerFencePolicy team-a: ok"),
        format!("{TEAMS}:3: RunnerFencePolicy team-b: ok"),
        "2 policy document(s): 2 ok, 0 with warnings, 0 broken".into(),
    ]
)]
#[case::files_sorted_in_a_directory_and_plain_policies_beside_objects(
    vec![
        ("b/z.yml", object("zed", "team-z")),
        ("a.yaml", format!("{DEPLOYMENT}---\n{}", read(PLAIN))),
        ("b/notes.txt", "kind: RunnerFencePolicy\n".to_string()),
    ],
    vec!["{d}"], 0,
    vec![
        "{d}/a.yaml:2: RunnerPolicy gitlab-runner-jobs: ok".into(),
        "{d}/b/z.yml:1: RunnerFencePolicy zed: ok".into(),
        "2 policy document(s): 2 ok, 0 with warnings, 0 broken".into(),
    ]
)]
#[case::lint_warning_in_the_controllers_words(
    vec![("p.yaml", format!("{DEPLOYMENT}---\n{}", object("wide", "runner-*")))],
    vec!["{d}/p.yaml"], 1,
    vec![
        "{d}/p.yaml:2: RunnerFencePolicy wide: lint warning: spec.match.namespaces[0]: \"runner-*\" covers runner-fence, the webhook's default namespace, which the webhooks never review; `render webhooks` refuses it unless runner-fence runs elsewhere (--namespace)".into(),
        "1 policy document(s): 0 ok, 1 with warnings, 0 broken".into(),
    ]
)]
#[case::duplicate_names_across_files(
    vec![("a.yaml", object("team-a", "team-a")), ("b.yaml", object("team-a", "team-b"))],
    vec!["{d}"], 2,
    vec![
        "{d}/a.yaml:1: RunnerFencePolicy team-a: ok".into(),
        "{d}/b.yaml:1: RunnerFencePolicy team-a: Duplicate: metadata.name: RunnerFencePolicy team-a is also defined at {d}/a.yaml:1; names are unique in a cluster (applying both, the later replaces the earlier); rename one or remove one".into(),
        "2 policy document(s): 1 ok, 0 with warnings, 1 broken".into(),
    ]
)]
#[case::conflict_follows_the_order_of_the_paths(
    vec![("a.yaml", object("one", "ci-*")), ("b.yaml", object("two", "ci-7"))],
    vec!["{d}/b.yaml", "{d}/a.yaml"], 2,
    vec![
        "{d}/b.yaml:1: RunnerFencePolicy two: ok".into(),
        "{d}/a.yaml:1: RunnerFencePolicy one: Conflict: spec.match.namespaces[0]: \"ci-*\" overlaps \"ci-7\" of RunnerFencePolicy two, which is older and reviews it; give each namespace to one policy; nothing is enforced for this policy yet; lint counts a document earlier in the paths given as the older object".into(),
        "2 policy document(s): 1 ok, 0 with warnings, 1 broken".into(),
    ]
)]
#[case::broken_yaml_names_file_document_and_line(
    vec![("p.yaml", format!("{}---\n{DEPLOYMENT}---\nkind: RunnerFencePolicy\nmetadata: {{name: [x\n", object("ok", "team-a")))],
    vec!["{d}/p.yaml"], 2,
    vec![
        "{d}/p.yaml:1: RunnerFencePolicy ok: ok".into(),
        "{d}/p.yaml:3: invalid YAML (line 70:18): metadata.name: unclosed bracket '['".into(),
        "2 policy document(s): 1 ok, 0 with warnings, 1 broken".into(),
    ]
)]
#[case::invalid_spec_located_in_the_file(
    vec![("p.yaml", format!("{DEPLOYMENT}---\n{}", object("bad", "team-a").replacen("default: runner-nodes", "default: nope", 1)))],
    vec!["{d}/p.yaml"], 2,
    vec![
        "{d}/p.yaml:2: RunnerFencePolicy bad: Invalid (line 38:14): spec.placement.default: default profile \"nope\" is not defined; known profiles: fargate, runner-nodes; nothing is enforced for this policy yet".into(),
        "1 policy document(s): 0 ok, 0 with warnings, 1 broken".into(),
    ]
)]
#[case::header_error_the_apiserver_would_refuse(
    vec![("p.yaml", object("v2", "team-a").replacen("runner-fence.dev/v1alpha1", "runner-fence.dev/v2", 1))],
    vec!["{d}/p.yaml"], 2,
    vec![
        "{d}/p.yaml:1: RunnerFencePolicy v2: Invalid (line 4:13): apiVersion: must be runner-fence.dev/v1alpha1, got \"runner-fence.dev/v2\"".into(),
        "1 policy document(s): 0 ok, 0 with warnings, 1 broken".into(),
    ]
)]
#[case::nameless_object_whatever_its_spec(
    vec![("p.yaml", "apiVersion: runner-fence.dev/v1alpha1\nkind: RunnerFencePolicy\nmetadata: {labels: {a: b}}\nspec: {}\n".to_string())],
    vec!["{d}/p.yaml"], 2,
    vec![
        "{d}/p.yaml:1: RunnerFencePolicy: Invalid: metadata: must have a name".into(),
        "1 policy document(s): 0 ok, 0 with warnings, 1 broken".into(),
    ]
)]
#[case::single_object_file(
    vec![], vec![OBJECT], 0,
    vec![
        format!("{OBJECT}:1: RunnerFencePolicy gitlab-runner-jobs: ok"),
        "1 policy document(s): 1 ok, 0 with warnings, 0 broken".into(),
    ]
)]
#[case::single_plain_file_unchanged(vec![], vec![PLAIN], 0, vec![format!("{PLAIN}: ok")])]
fn lints_what_the_paths_hold(
    #[case] files: Vec<(&str, String)>,
    #[case] args: Vec<&str>,
    #[case] code: i32,
    #[case] want: Vec<String>,
) {
    let dir = tree(&files);
    let d = dir.path().display().to_string();
    let args: Vec<String> = args.iter().map(|a| a.replace("{d}", &d)).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = lint(&args);
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(code), "{out}{}", text(&o.stderr));
    let want: Vec<String> = want.iter().map(|w| w.replace("{d}", &d)).collect();
    assert_eq!(out.lines().collect::<Vec<_>>(), want);
}

/// Paths that hold no policy, or none at all: exit code 2, stderr naming them.
#[rstest]
#[case::file_with_other_objects_only(vec![("k.yaml", format!("{DEPLOYMENT}---\n{DEPLOYMENT}"))], "{d}/k.yaml", "{d}/k.yaml: no RunnerPolicy or RunnerFencePolicy document (apiVersion runner-fence.dev/v1alpha1)")]
#[case::single_document_of_another_kind(vec![("k.yaml", DEPLOYMENT.to_string())], "{d}/k.yaml", "{d}/k.yaml: no RunnerPolicy or RunnerFencePolicy document")]
#[case::directory_without_policies(vec![("a/k.yml", DEPLOYMENT.to_string()), ("p.json", read(PLAIN))], "{d}", "{d}: no RunnerPolicy or RunnerFencePolicy document in any *.yaml or *.yml file")]
#[case::empty_directory(vec![], "{d}", "{d}: no RunnerPolicy or RunnerFencePolicy document in any *.yaml or *.yml file")]
#[case::missing_path(vec![], "{d}/nope", "{d}/nope: no such file or directory")]
fn paths_without_a_policy_are_errors(
    #[case] files: Vec<(&str, String)>,
    #[case] arg: &str,
    #[case] want: &str,
) {
    let dir = tree(&files);
    let d = dir.path().display().to_string();
    let arg = arg.replace("{d}", &d);
    // Alone, and after a path that does hold policies: exit code 2 all the same.
    for args in [vec![arg.as_str()], vec![REPO, arg.as_str()]] {
        let o = lint(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o.stdout));
        let err = text(&o.stderr);
        assert!(err.contains(&want.replace("{d}", &d)), "{args:?}: {err}");
    }
}

/// A single plain policy file keeps today's output: warnings one per line,
/// a policy that does not load on stderr with file:line:column.
#[rstest]
#[case::warnings(
    "namespaces: [gitlab-runner]",
    "namespaces: [gitlab-runner, runner-fence]",
    1,
    "warning: {f}: match.namespaces[1]: \"runner-fence\" covers runner-fence",
    "{f}: 1 warning(s)"
)]
#[case::broken("default: runner-nodes", "default: nope", 2, "", "error: {f}:")]
fn a_single_plain_file_is_linted_as_before(
    #[case] from: &str,
    #[case] to: &str,
    #[case] code: i32,
    #[case] out_has: &str,
    #[case] last: &str,
) {
    let src = read(PLAIN);
    assert!(src.contains(from));
    let dir = tree(&[("p.yaml", src.replacen(from, to, 1))]);
    let f = path(dir.path(), "p.yaml");
    let o = lint(&[&f]);
    assert_eq!(o.status.code(), Some(code));
    let (out, err) = (text(&o.stdout), text(&o.stderr));
    assert!(out.contains(&out_has.replace("{f}", &f)), "{out}");
    let last = last.replace("{f}", &f);
    if code == 2 {
        assert!(out.is_empty(), "{out}");
        assert!(err.starts_with(&last), "{err}");
        assert!(
            err.contains("placement.default: default profile \"nope\""),
            "{err}"
        );
    } else {
        assert_eq!(out.lines().last(), Some(last.as_str()), "{out}");
    }
}

/// The lint's verdicts on a set of objects are the controller's: the same
/// objects through `k8s::controller::judge`, created in file order, give the
/// same reasons and condition messages.
#[rstest]
#[case::conflict(CONFLICT)]
#[case::teams(TEAMS)]
fn verdicts_are_the_controllers(#[case] file: &str) {
    let mut objects = BTreeMap::new();
    let mut order = Vec::new();
    for (i, doc) in read(file).split("\n---\n").enumerate() {
        let mut v: Value = serde_saphyr::from_str(doc).expect("yaml");
        if v["kind"] != "RunnerFencePolicy" {
            continue;
        }
        v["metadata"]["creationTimestamp"] = Value::from(format!("2026-01-01T00:00:{i:02}Z"));
        v["metadata"]["generation"] = Value::from(1);
        let o: RunnerFencePolicy = serde_json::from_value(v).expect("object");
        order.push((i + 1, o.name().to_string()));
        objects.insert(o.name().to_string(), Arc::new(o));
    }
    assert!(order.len() >= 2, "{file}");
    let snap = judge(&objects, "runner-fence");
    let o = lint(&[file]);
    let out = text(&o.stdout);
    let broken = snap.verdicts.iter().any(|v| v.state.as_str() != "Ready");
    assert_eq!(o.status.code(), Some(if broken { 2 } else { 0 }), "{out}");
    for (doc, name) in &order {
        let v = snap
            .verdicts
            .iter()
            .find(|v| &v.name == name)
            .expect("verdict");
        let prefix = format!("{file}:{doc}: RunnerFencePolicy {name}: ");
        let line = out
            .lines()
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_else(|| panic!("no line for {name}: {out}"));
        match v.state.as_str() {
            "Ready" => assert_eq!(line, format!("{prefix}ok")),
            reason => assert!(
                line.starts_with(&format!("{prefix}{reason}: {}", v.message)),
                "{line}\nvs the controller's {reason}: {}",
                v.message
            ),
        }
    }
}
