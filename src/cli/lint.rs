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
    /// skipped). RunnerPolicy and RunnerFencePolicy documents are linted,
    /// other objects skipped.
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<PathBuf>,
}

pub(super) fn run(Args { paths }: Args) -> Result<ExitCode, Error> {
    if let [file] = paths.as_slice()
        && file.is_file()
        && plain_file(file)?
    {
        return lint_plain_file(file);
    }
    lint_paths(&paths)
}

/// Whether `file` is one plain policy (or nothing recognisable as objects):
/// linted as a single file always was, the loader's error on stderr.
fn plain_file(file: &Path) -> Result<bool, Error> {
    let text = read_text(file)?;
    Ok(match split_stream(&text).as_slice() {
        [] => true,
        [doc] => match parse_data(doc.text, "") {
            Err(_) => true,
            Ok(v) => v.get("kind").is_none() || kind_of(&v) == Some(Kind::Plain),
        },
        _ => false,
    })
}

/// One plain policy file: `FILE: ok`, or its lint warnings (exit code 1);
/// a policy that does not load is an error (exit code 2).
fn lint_plain_file(file: &Path) -> Result<ExitCode, Error> {
    let p = policy::load_file(file)?;
    let warnings = policy::lint(&p);
    for w in &warnings {
        outln!("warning: {}: {w}", file.display());
    }
    if warnings.is_empty() {
        outln!("{}: ok", file.display());
        ok()
    } else {
        outln!("{}: {} warning(s)", file.display(), warnings.len());
        Ok(ExitCode::from(EXIT_DENIED))
    }
}

/// Every policy document under `paths`, one line each, then a summary.
fn lint_paths(paths: &[PathBuf]) -> Result<ExitCode, Error> {
    let mut roots: Vec<(PathBuf, Vec<PathBuf>)> = Vec::new();
    let mut seen = BTreeSet::new();
    for root in paths {
        let mut files = Vec::new();
        if root.is_file() {
            files.push(root.clone());
        } else if root.is_dir() {
            walk(root, &mut files).map_err(|source| Error::Read {
                path: root.clone(),
                source,
            })?;
            files.sort();
        } else {
            return Err(Error::NoSuchPath { path: root.clone() });
        }
        files.retain(|f| seen.insert(f.clone()));
        roots.push((root.clone(), files));
    }
    let mut broken = false;
    let mut texts: Vec<(String, String)> = Vec::new();
    for file in roots.iter().flat_map(|(_, files)| files) {
        match read_text(file) {
            Ok(text) => texts.push((file.display().to_string(), text)),
            Err(e) => {
                eprintln!("error: {}", Report(&e));
                broken = true;
            }
        }
    }
    let sources: Vec<Source<'_>> = texts
        .iter()
        .map(|(file, text)| Source { file, text })
        .collect();
    let findings = manifests::judge(&sources);
    for f in &findings {
        outln!("{}", line(f));
    }
    for (root, files) in &roots {
        let found = |file: &PathBuf| {
            let name = file.display().to_string();
            findings.iter().any(|f| f.file == name)
        };
        if files.iter().any(found) {
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
                root.display(),
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
