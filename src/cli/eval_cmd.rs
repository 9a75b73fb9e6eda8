//! `runner-fence eval`.

use std::path::PathBuf;

use serde_json::Value;

use super::{EXIT_BAD_INPUT, EXIT_DENIED, EXIT_OK, Output, load_policy};
use crate::eval::{Evaluation, evaluate, read_document, to_review};

pub struct Args {
    pub policy: Option<PathBuf>,
    pub inputs: Vec<PathBuf>,
    pub namespace: Option<String>,
    pub operation: String,
    pub nodes: Option<PathBuf>,
    pub output: Output,
}

pub fn run(args: Args) -> u8 {
    let policy = match load_policy(args.policy.as_deref()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_BAD_INPUT;
        }
    };
    let operation = args.operation.to_uppercase();
    if operation != "CREATE" && operation != "UPDATE" {
        eprintln!(
            "error: --operation must be CREATE or UPDATE, got {}",
            args.operation
        );
        return EXIT_BAD_INPUT;
    }
    let nodes = match args
        .nodes
        .as_deref()
        .map(crate::nodes::read_file)
        .transpose()
    {
        Ok(n) => n,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_BAD_INPUT;
        }
    };
    let mut code = EXIT_OK;
    let mut results = Vec::new();
    for (i, input) in args.inputs.iter().enumerate() {
        let name = input.display().to_string();
        let outcome = read_document(input).and_then(|doc| {
            let review = to_review(
                doc,
                args.namespace.as_deref(),
                &operation,
                &policy,
                &format!("eval-{i}"),
            )?;
            evaluate(&policy, &review, nodes.as_ref())
        });
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
                code = EXIT_BAD_INPUT;
                eprintln!("error: {e}");
                if args.output == Output::Json {
                    results.push(serde_json::json!({"input": name, "error": e.to_string()}));
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
    code
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
            println!("  deny: {e}");
        }
        for w in d.warnings() {
            println!("  warn: {w}");
        }
    }
}
