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
    /// Namespace to evaluate Pod inputs in, instead of their own
    /// `metadata.namespace` (default: theirs, else the policy's first namespace).
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
        let judged = |doc: Value| -> Result<(Evaluation, String), Error> {
            let review = to_review(
                doc,
                args.namespace.as_deref(),
                operation,
                &policy,
                &format!("eval-{i}"),
            )?;
            let ev = evaluate(&policy, &review, nodes.as_ref())?;
            let namespace = review
                .pointer("/request/namespace")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            Ok((ev, namespace))
        };
        // A read error names the file itself; what is wrong inside gets the name here.
        let outcome = read_document(input)
            .map_err(|e| Report(&e).to_string())
            .and_then(|doc| judged(doc).map_err(|e| format!("{name}: {}", Report(&e))));
        match outcome {
            Ok((ev, namespace)) => {
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
                    Output::Text => print_summary(&name, &namespace, &ev),
                }
            }
            Err(message) => {
                // One bad input does not stop the others; the exit code says it.
                code = EXIT_BAD_INPUT;
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

fn print_summary(name: &str, namespace: &str, ev: &Evaluation) {
    let verdict = if ev.allowed() { "ALLOWED" } else { "DENIED" };
    if !ev.matched {
        if ev.allowed() {
            outln!(
                "{name}: namespace {namespace:?} is not covered by the policy (match.namespaces): not fenced, ALLOWED unchanged"
            );
        } else {
            outln!("{name}: not reviewable, DENIED");
        }
        // Both webhooks would say the same of a request they cannot review: once.
        let mut said: Vec<String> = Vec::new();
        for m in ev.messages() {
            if !said.contains(&m) {
                outln!("  {m}");
                said.push(m);
            }
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
