//! `runner-fence dev ...`: maintainer tasks on a checkout (hidden from `--help`).
//!
//! A verb rather than a script or an xtask crate: the generated files come from
//! the crate's own renderers, so the binary that ships them is the one that can
//! write them, and `cargo run -- dev regen` needs nothing but cargo.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;

use super::{EXIT_DENIED, Error, ok};
use crate::core::render::generated::{self, Inputs, REFERENCE_POLICY, REGEN, VALUES_SCHEMA};

#[derive(Subcommand, Debug)]
pub(super) enum Command {
    /// Rewrite every checked-in generated file (manifests, CRDs, the chart's values schema).
    Regen {
        /// The repository checkout.
        #[arg(long, default_value = ".")]
        root: PathBuf,
        /// Write nothing; list the stale files and exit 1 if there are any.
        #[arg(long)]
        check: bool,
    },
}

pub(super) fn run(command: Command) -> Result<ExitCode, Error> {
    let Command::Regen { root, check } = command;
    if !root.join(REFERENCE_POLICY).is_file() {
        return Err(Error::NotACheckout { path: root });
    }
    let reference_policy = read(&root.join(REFERENCE_POLICY))?;
    let values_schema = read(&root.join(VALUES_SCHEMA))?;
    let files = generated::files(Inputs {
        reference_policy: &reference_policy,
        values_schema: &values_schema,
    })?;
    let mut stale = 0;
    for file in &files {
        let path = root.join(file.path);
        // A missing file is stale too; any other read error is reported.
        let current = match std::fs::read_to_string(&path) {
            Ok(text) => Some(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(source) => return Err(Error::Read { path, source }),
        };
        if current.as_deref() == Some(file.text.as_str()) {
            continue;
        }
        stale += 1;
        if check {
            outln!("stale: {}", file.path);
        } else {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|source| Error::Write {
                    path: dir.to_path_buf(),
                    source,
                })?;
            }
            std::fs::write(&path, &file.text).map_err(|source| Error::Write {
                path: path.clone(),
                source,
            })?;
            outln!("wrote {}", file.path);
        }
    }
    outln!(
        "{} generated files, {stale} {}",
        files.len(),
        if check { "stale" } else { "rewritten" }
    );
    if check && stale > 0 {
        eprintln!("run `{REGEN}` to rewrite them");
        return Ok(ExitCode::from(EXIT_DENIED));
    }
    ok()
}

fn read(path: &Path) -> Result<String, Error> {
    std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })
}
