#![forbid(unsafe_code)]

use std::process::ExitCode;

/// mimalloc rather than the system allocator: a review allocates and frees a few
/// hundred small objects across worker threads, and glibc's malloc (with its
/// fastbin consolidation on every 30 KB body) was ~12 % of the server's CPU;
/// docs/performance.md has the measurement.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    match runner_fence::cli::run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", runner_fence::core::report::Report(&e));
            e.exit_code()
        }
    }
}
