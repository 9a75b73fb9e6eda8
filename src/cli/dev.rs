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

/// Writes the kustomize manifests from the chart (`--check`: compares).
const KUSTOMIZE_SCRIPT: &str = "scripts/update-kustomize.py";

#[derive(Subcommand, Debug)]
pub(super) enum Command {
    /// Rewrite every checked-in generated file (CRDs, the chart's values schema, the audit
    /// reference policy, the kustomize manifests).
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
    // The kustomize manifests are the chart's `helm template` output, which only Helm
    // renders: its script runs after the chart's CRD and schema above are current.
    let script = root.join(KUSTOMIZE_SCRIPT);
    if script.is_file() {
        let out = std::process::Command::new("python3")
            .arg(KUSTOMIZE_SCRIPT)
            .args(check.then_some("--check"))
            .current_dir(&root)
            .output()
            .map_err(|source| Error::Spawn {
                program: "python3",
                script: script.clone(),
                source,
            })?;
        out!("{}", String::from_utf8_lossy(&out.stdout));
        if !out.status.success() {
            eprint!("{}", String::from_utf8_lossy(&out.stderr));
            stale += 1;
            if !check {
                return Ok(ExitCode::from(EXIT_DENIED));
            }
        }
    } else {
        outln!(
            "kustomize manifests: no {KUSTOMIZE_SCRIPT} under {}, not regenerated",
            root.display()
        );
    }
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
