//! `runner-fence lint`.

use std::path::PathBuf;
use std::process::ExitCode;

use super::{EXIT_DENIED, Error, ok};
use crate::core::policy;

#[derive(clap::Args, Debug)]
pub(super) struct Args {
    /// The policy file.
    file: PathBuf,
}

pub(super) fn run(Args { file }: Args) -> Result<ExitCode, Error> {
    let p = policy::load_file(&file)?;
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
