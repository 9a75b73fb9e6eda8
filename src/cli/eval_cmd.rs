//! `runner-fence eval`.

use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::Value;

use super::{EXIT_BAD_INPUT, EXIT_DENIED, EXIT_OK, Error, Output, load_policy};
use crate::core::document::read_document;
use crate::core::engine::Operation;
use crate::core::report::Report;
use crate::webhook::eval::{Evaluation, evaluate, to_review};

pub struct Args {
    pub policy: Option<PathBuf>,
    pub inputs: Vec<PathBuf>,
    pub namespace: Option<String>,
    pub operation: String,
    pub nodes: Option<PathBuf>,
    pub output: Output,
}

pub fn run(args: Args) -> Result<ExitCode, Error> {
    let policy = load_policy(args.policy.as_deref())?;
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
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    }
    Ok(ExitCode::from(code))
}

fn print_summary(name: &str, ev: &Evaluation) {
    let verdict = if ev.allowed() { "ALLOWED" } else { "DENIED" };
    if !ev.matched {
        println!("{name}: not a job pod, {verdict} unchanged");
        for m in ev.messages() {
            println!("  {m}");
        }
        return;
    }
    println!(
        "{name}: job pod, profile {}: {verdict}",
        ev.profile.as_deref().unwrap_or("?")
    );
    for c in &ev.mutate_decision.changes {
        println!("  patch: {c}");
    }
    for d in [&ev.mutate_decision, &ev.validate_decision] {
        for v in &d.denials {
            println!("  deny: {v}");
        }
        if let Some(e) = &d.error {
            println!("  deny: {}", Report(e));
        }
        for w in d.warnings() {
            println!("  warn: {w}");
        }
    }
}
