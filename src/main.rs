#![forbid(unsafe_code)]

use std::process::ExitCode;

fn main() -> ExitCode {
    match runner_fence::cli::run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", runner_fence::core::report::Report(&e));
            e.exit_code()
        }
    }
}
