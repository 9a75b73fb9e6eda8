//! `runner-fence lint`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::{EXIT_BAD_INPUT, EXIT_DENIED, EXIT_OK, Error, ok};
use crate::core::document::{read_text, split_stream};
use crate::core::manifests::{self, Finding, Kind, Outcome, Source, kind_of};
use crate::core::policy::{self, parse_data};
use crate::core::report::Report;

#[derive(clap::Args, Debug)]
pub(super) struct Args {
    /// Policy files, or directories searched for *.yaml and *.yml (hidden ones
    /// skipped); `-` reads stdin. RunnerPolicy and RunnerFencePolicy documents
    /// are linted, other objects skipped.
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<PathBuf>,
}

pub(super) fn run(Args { paths }: Args) -> Result<ExitCode, Error> {
    if let [file] = paths.as_slice()
        && (is_stdin(file) || file.is_file())
    {
        // Read once: stdin cannot be read a second time.
        let text = read_text(file)?;
        if plain_text(&text) {
            return lint_plain(&text, &display(file));
        }
        return lint_texts(&paths, vec![(file.clone(), Ok(text))]);
    }
    lint_paths(&paths)
}

/// `-`, stdin.
fn is_stdin(path: &Path) -> bool {
    path == Path::new("-")
}

/// How a path is named in output: stdin as `<stdin>`.
fn display(path: &Path) -> String {
    if is_stdin(path) {
        "<stdin>".to_string()
    } else {
        path.display().to_string()
    }
}

/// Whether `text` is one plain policy (or nothing recognisable as objects):
/// linted as a single file always was, the loader's error on stderr.
fn plain_text(text: &str) -> bool {
    match split_stream(text).as_slice() {
        [] => true,
        [doc] => match parse_data(doc.text, "") {
            Err(_) => true,
            Ok(v) => v.get("kind").is_none() || kind_of(&v) == Some(Kind::Plain),
        },
        _ => false,
    }
}

/// One plain policy: `FILE: ok`, or its lint warnings (exit code 1); a
/// policy that does not load is an error (exit code 2).
fn lint_plain(text: &str, name: &str) -> Result<ExitCode, Error> {
    let p = policy::parse(text, name)?;
    let warnings = policy::lint(&p);
    for w in &warnings {
        outln!("warning: {name}: {w}");
    }
    if warnings.is_empty() {
        outln!("{name}: ok");
        ok()
    } else {
        outln!("{name}: {} warning(s)", warnings.len());
        Ok(ExitCode::from(EXIT_DENIED))
    }
}

/// Every policy document under `paths`, one line each, then a summary.
fn lint_paths(paths: &[PathBuf]) -> Result<ExitCode, Error> {
    let mut files = Vec::new();
    let mut seen = BTreeSet::new();
    for root in paths {
        let mut found = Vec::new();
        if is_stdin(root) || root.is_file() {
            found.push(root.clone());
        } else if root.is_dir() {
            walk(root, &mut found).map_err(|source| Error::Read {
                path: root.clone(),
                source,
            })?;
            found.sort();
        } else {
            return Err(Error::NoSuchPath { path: root.clone() });
        }
        files.extend(found.into_iter().filter(|f| seen.insert(f.clone())));
    }
    let texts = files
        .into_iter()
        .map(|f| {
            let text = read_text(&f);
            (f, text)
        })
        .collect();
    lint_texts(paths, texts)
}

/// The documents of `texts` (each file found under one of `roots`, read or
/// not), one line each, then a summary; a root none of whose files holds a
/// policy document is an error.
fn lint_texts(
    roots: &[PathBuf],
    texts: Vec<(PathBuf, Result<String, crate::core::document::InputError>)>,
) -> Result<ExitCode, Error> {
    let mut broken = false;
    let mut read: Vec<(PathBuf, String, String)> = Vec::new();
    for (file, text) in texts {
        match text {
            Ok(text) => read.push((file.clone(), display(&file), text)),
            Err(e) => {
                eprintln!("error: {}", Report(&e));
                broken = true;
            }
        }
    }
    let sources: Vec<Source<'_>> = read
        .iter()
        .map(|(_, file, text)| Source { file, text })
        .collect();
    let findings = manifests::judge(&sources);
    for f in &findings {
        outln!("{}", line(f));
    }
    for root in roots {
        let under = |f: &PathBuf| f == root || (root.is_dir() && f.starts_with(root));
        let found = read
            .iter()
            .filter(|(f, _, _)| under(f))
            .any(|(_, name, _)| findings.iter().any(|x| &x.file == name));
        if found {
            continue;
        }
        broken = true;
        if root.is_dir() {
            eprintln!(
                "error: {}: no {} or {} document in any *.yaml or *.yml file",
                root.display(),
                policy::KIND,
                policy::OBJECT_KIND
            );
        } else {
            eprintln!(
                "error: {}: no {} or {} document (apiVersion {})",
                display(root),
                policy::KIND,
                policy::OBJECT_KIND,
                policy::API_VERSION
            );
        }
    }
    let count = |want: fn(&Outcome) -> bool| findings.iter().filter(|f| want(&f.outcome)).count();
    let warned = count(|o| matches!(o, Outcome::Warnings(_)));
    let failed = count(|o| matches!(o, Outcome::Broken(_)));
    outln!(
        "{} policy document(s): {} ok, {warned} with warnings, {failed} broken",
        findings.len(),
        findings.len() - warned - failed
    );
    Ok(ExitCode::from(if broken || failed > 0 {
        EXIT_BAD_INPUT
    } else if warned > 0 {
        EXIT_DENIED
    } else {
        EXIT_OK
    }))
}

/// `*.yaml` and `*.yml` files under `dir`; hidden files and directories
/// (`.git`, `.gitlab-ci.yml`) are skipped, symbolic links to directories
/// are not followed (no cycles).
fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') {
            continue;
        }
        if entry.file_type()?.is_dir() {
            walk(&path, out)?;
        } else if (name.ends_with(".yaml") || name.ends_with(".yml")) && path.is_file() {
            out.push(path);
        }
    }
    Ok(())
}

/// `file:doc: Kind name: ok`, its lint warnings, or what is wrong.
fn line(f: &Finding) -> String {
    let what = match (f.kind, f.name.as_str()) {
        (Some(k), "") => format!("{}: ", k.as_str()),
        (Some(k), name) => format!("{} {name}: ", k.as_str()),
        (None, _) => String::new(),
    };
    let said = match &f.outcome {
        Outcome::Ok => "ok".to_string(),
        Outcome::Warnings(w) => w
            .iter()
            .map(|w| format!("lint warning: {w}"))
            .collect::<Vec<_>>()
            .join("; "),
        Outcome::Broken(p) => {
            let at = match (p.line, p.column) {
                (Some(l), Some(c)) => format!(" (line {l}:{c})"),
                (Some(l), None) => format!(" (line {l})"),
                _ => String::new(),
            };
            format!("{}{at}: {}", p.reason.as_str(), p.message)
        }
    };
    format!("{}:{}: {what}{said}", f.file, f.doc)
}
