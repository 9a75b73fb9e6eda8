//! `runner-fence check runner-config`: GitLab Runner configurations against the policy.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;
use serde_json::{Value, json};

use super::eval::Output;
use super::{EXIT_BAD_INPUT, EXIT_DENIED, EXIT_OK, Error, PolicyArg};
use crate::core::document::read_text;
use crate::core::policy::Policy;
use crate::core::report::Report as ErrorReport;
use crate::core::runner_config::{self, ConfigFile, Finding, Location, Options, Report, Severity};

#[derive(Subcommand, Debug)]
pub(super) enum Command {
    /// Settings of GitLab Runner config.toml files (or gitlab-runner chart values) that let jobs leave or fight the fence.
    RunnerConfig(RunnerConfigArgs),
}

/// `check runner-config` flags.
#[derive(clap::Args, Debug)]
pub(super) struct RunnerConfigArgs {
    #[command(flatten)]
    policy: PolicyArg,
    /// config.toml files, or gitlab-runner Helm chart values files (`-` reads stdin).
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// The namespace the gitlab-runner chart is installed in (`{{ .Release.Namespace }}` in values).
    #[arg(long)]
    release_namespace: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    output: Output,
}

pub(super) fn run(Command::RunnerConfig(args): Command) -> Result<ExitCode, Error> {
    let policy = args.policy.load()?;
    let opts = Options {
        release_namespace: args.release_namespace.clone(),
    };
    let mut code = EXIT_OK;
    let (mut findings, mut skipped, mut errors) = (Vec::new(), Vec::new(), Vec::new());
    for path in &args.files {
        let name = if path == Path::new("-") {
            "<stdin>".to_string()
        } else {
            path.display().to_string()
        };
        match check_file(&policy, path, &name, &opts) {
            Ok(report) => {
                if report.has_errors() {
                    code = code.max(EXIT_DENIED);
                }
                match args.output {
                    Output::Text => print_text(&name, &report),
                    Output::Json => {
                        findings.extend(report.findings.iter().map(|f| finding_json(&name, f)));
                        skipped.extend(report.skipped.iter().map(|(r, executor)| {
                            json!({"file": name, "runner": r.name, "runnerIndex": r.index, "executor": executor})
                        }));
                    }
                }
            }
            Err(e) => {
                // One unreadable file does not stop the others; the exit code says it.
                code = EXIT_BAD_INPUT;
                let message = ErrorReport(&e).to_string();
                eprintln!("error: {message}");
                errors.push(json!({"file": name, "message": message}));
            }
        }
    }
    if args.output == Output::Json {
        let out = json!({"findings": findings, "skipped": skipped, "errors": errors});
        outln!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    }
    Ok(ExitCode::from(code))
}

fn check_file(policy: &Policy, path: &Path, name: &str, opts: &Options) -> Result<Report, Error> {
    let text = read_text(path)?;
    let file = ConfigFile::parse(&text, name)?;
    Ok(runner_config::check(policy, &file, opts)?)
}

/// `config.toml:12`, or `values.yaml:runners.config:3` when the values line is unknown.
fn place(file: &str, at: &Location) -> String {
    match at.line {
        Some(l) => format!("{file}:{l}"),
        None => format!("{file}:runners.config:{}", at.toml_line),
    }
}

fn print_text(name: &str, report: &Report) {
    for f in &report.findings {
        outln!("{} {}: {f}", f.runner, place(name, &f.at));
    }
    for (r, executor) in &report.skipped {
        if executor.is_empty() {
            outln!("note: {r} {name}: no executor and no [runners.kubernetes], not checked");
        } else {
            outln!("note: {r} {name}: executor {executor:?}, not checked");
        }
    }
    let count = |s: Severity| report.findings.iter().filter(|f| f.severity == s).count();
    let (errors, warnings) = (count(Severity::Error), count(Severity::Warning));
    if errors + warnings == 0 {
        outln!("{name}: ok");
    } else {
        outln!("{name}: {errors} error(s), {warnings} warning(s)");
    }
}

fn finding_json(file: &str, f: &Finding) -> Value {
    json!({
        "file": file,
        "runner": f.runner.name,
        "runnerIndex": f.runner.index,
        "line": f.at.line,
        "tomlLine": f.at.toml_line,
        "key": f.at.key,
        "id": f.id,
        "severity": f.severity,
        "message": f.message(),
        "fix": f.fix(),
    })
}
