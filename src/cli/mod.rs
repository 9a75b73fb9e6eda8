//! `runner-fence <verb>`: the command line (SPEC §7), one file per verb.

/// `print!` to stdout that never panics: when the reader has gone away
/// (`runner-fence eval ... | head`), the rest of the output is dropped.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout(), $($arg)*);
    }};
}

/// `println!` to stdout that never panics (see [`out!`]).
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

mod audit;
mod certs;
mod check;
mod dev;
mod error;
mod eval;
mod inputs;
mod lint;
mod render;
mod schema;
mod serve;
mod test;
mod uninstall;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub use error::Error;

/// Exit code: everything allowed / passed.
const EXIT_OK: u8 = 0;
/// Exit code: a denial, a failed test, a lint warning.
const EXIT_DENIED: u8 = 1;
/// Exit code: bad input (unreadable file, broken policy, wrong kind).
const EXIT_BAD_INPUT: u8 = 2;

/// Keeps GitLab Runner job pods off GitLab's own Kubernetes nodes.
#[derive(Parser, Debug)]
#[command(name = "runner-fence", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the webhook (HTTPS /mutate and /validate, admin /healthz /readyz /metrics).
    Serve(Box<crate::webhook::ServeArgs>),
    /// Run mutate then validate offline on Pods or AdmissionReviews.
    Eval(eval::Args),
    /// Run policy test suites; prints `N passed, N failed`.
    Test(test::Args),
    /// Check a policy file and warn about likely mistakes.
    Lint(lint::Args),
    /// Print the JSON Schema of the policy format.
    Schema,
    /// Scan a live cluster: job pods on protected nodes, pods the policy would deny or patch.
    Audit(audit::Args),
    /// Certificates for the webhook.
    #[command(subcommand)]
    Certs(certs::Command),
    /// Render configuration that matches the policy.
    #[command(subcommand)]
    Render(render::Command),
    /// Remove what the policy controller created (a Helm pre-delete hook).
    Uninstall(uninstall::Args),
    /// Check configuration against the policy.
    #[command(subcommand)]
    Check(check::Command),
    /// Maintainer tasks on a checkout of this repository.
    #[command(subcommand, hide = true)]
    Dev(dev::Command),
}

/// Parses the command line and runs the verb: the exit code of a verb that
/// ran (0, or 1 for a denial, a failed test, a finding), or why it could not.
pub fn run() -> Result<ExitCode, Error> {
    match Cli::parse().command {
        Command::Serve(args) => serve::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Test(args) => test::run(args),
        Command::Lint(args) => lint::run(args),
        Command::Schema => schema::run(),
        Command::Audit(args) => audit::run(args),
        Command::Certs(c) => certs::run(c),
        Command::Render(c) => render::run(c),
        Command::Uninstall(a) => uninstall::run(a),
        Command::Check(c) => check::run(c),
        Command::Dev(c) => dev::run(c),
    }
}

/// `--policy`, as every verb that judges or renders from one policy takes it
/// (`serve` has its own: it conflicts with `--policies-from-cluster`).
#[derive(clap::Args, Debug, Clone)]
struct PolicyArg {
    /// Policy file (default: the embedded reference policy).
    #[arg(long, env = "RUNNER_FENCE_POLICY")]
    policy: Option<std::path::PathBuf>,
}

impl PolicyArg {
    /// The policy `--policy` names, or the embedded reference policy.
    fn load(&self) -> Result<crate::core::policy::Policy, Error> {
        Ok(crate::core::policy::load(self.policy.as_deref())?)
    }
}

fn ok() -> Result<ExitCode, Error> {
    Ok(ExitCode::from(EXIT_OK))
}
