//! `runner-fence eval`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::ValueEnum;
use serde_json::Value;

use super::inputs::to_review;
use super::{EXIT_BAD_INPUT, EXIT_DENIED, EXIT_OK, Error, PolicyArg};
use crate::core::document::read_document;
use crate::core::engine::Operation;
use crate::core::report::Report;
use crate::webhook::eval::{Evaluation, evaluate};

/// Output formats.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub(super) enum Output {
    /// For people.
    Text,
    /// For scripts.
    Json,
}

#[derive(clap::Args, Debug)]
pub(super) struct Args {
    #[command(flatten)]
    policy: PolicyArg,
    /// Pod or AdmissionReview files, YAML or JSON; `-` reads stdin.
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// Namespace for Pod inputs without one.
    #[arg(long)]
    namespace: Option<String>,
    /// Operation for Pod inputs (CREATE or UPDATE).
    #[arg(long, default_value = "CREATE")]
    operation: String,
    /// Nodes (a YAML/JSON list of {name, labels, taints}) to evaluate live checks against.
    #[arg(long)]
    nodes: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    output: Output,
}

pub(super) fn run(args: Args) -> Result<ExitCode, Error> {
    let policy = args.policy.load()?;
    let operation = match Operation::parse(&args.operation.to_uppercase()) {
        Some(op @ (Operation::Create | Operation::Update)) => op,
        _ => return Err(Error::Operation(args.operation)),
    };
    let nodes = args
        .nodes
        .as_deref()
        .map(crate::core::nodes::read_file)
        .transpose()?;
    let mut code = EXIT_OK;
    let mut results = Vec::new();
    for (i, input) in args.inputs.iter().enumerate() {
        let name = input.display().to_string();
        let outcome = (|| -> Result<Evaluation, Error> {
            let doc = read_document(input)?;
            let review = to_review(
                doc,
                args.namespace.as_deref(),
                operation,
                &policy,
                &format!("eval-{i}"),
            )?;
            Ok(evaluate(&policy, &review, nodes.as_ref())?)
        })();
        match outcome {
            Ok(ev) => {
                if !ev.allowed() {
                    code = code.max(EXIT_DENIED);
                }
                match args.output {
                    Output::Json => {
                        let mut j = ev.to_json();
                        if let Some(o) = j.as_object_mut() {
                            o.insert("input".into(), Value::String(name));
                        }
                        results.push(j);
                    }
                    Output::Text => print_summary(&name, &ev),
                }
            }
            Err(e) => {
                // One bad input does not stop the others; the exit code says it.
                code = EXIT_BAD_INPUT;
                let message = Report(&e).to_string();
                eprintln!("error: {message}");
                if args.output == Output::Json {
                    results.push(serde_json::json!({"input": name, "error": message}));
                }
            }
        }
    }
    if args.output == Output::Json {
        let out = if args.inputs.len() == 1 && results.len() == 1 {
            results.remove(0)
        } else {
            Value::Array(results)
        };
        outln!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    }
    Ok(ExitCode::from(code))
}

fn print_summary(name: &str, ev: &Evaluation) {
    let verdict = if ev.allowed() { "ALLOWED" } else { "DENIED" };
    if !ev.matched {
        outln!("{name}: not a job pod, {verdict} unchanged");
        for m in ev.messages() {
            outln!("  {m}");
        }
        return;
    }
    outln!(
        "{name}: job pod, profile {}: {verdict}",
        ev.profile.as_deref().unwrap_or("?")
    );
    for c in ev.mutate_decision.changes() {
        outln!("  patch: {c}");
    }
    for d in [&ev.mutate_decision, &ev.validate_decision] {
        for v in d.denials() {
            outln!("  deny: {v}");
        }
        if let Some(e) = d.error() {
            outln!("  deny: {}", Report(e));
        }
        for w in d.warnings() {
            outln!("  warn: {w}");
        }
    }
}
