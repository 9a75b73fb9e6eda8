//! `runner-fence certs generate`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

use super::{Error, ok};
use crate::webhook::certs::{self, KeyType};

#[derive(Subcommand, Debug)]
pub(super) enum Command {
    /// Generate a CA and a serving certificate for the webhook Service.
    Generate {
        /// Service name.
        #[arg(long, default_value = "runner-fence")]
        service: String,
        /// Service namespace.
        #[arg(long, default_value = "runner-fence")]
        namespace: String,
        /// Output directory (ca.crt, ca.key, tls.crt, tls.key, ca-bundle.txt).
        #[arg(long)]
        out: PathBuf,
        /// Validity in days.
        #[arg(long, default_value_t = 365)]
        validity_days: u32,
        /// Key algorithm.
        #[arg(long, value_enum, default_value = "ecdsa-p256")]
        key_type: KeyType,
        /// Extra subject alternative names (DNS names or IPs).
        #[arg(long = "san")]
        extra_sans: Vec<String>,
    },
}

pub(super) fn run(command: Command) -> Result<ExitCode, Error> {
    let Command::Generate {
        service,
        namespace,
        out,
        validity_days,
        key_type,
        extra_sans,
    } = command;
    let mut names = certs::service_names(&service, &namespace);
    names.extend(extra_sans);
    let g = certs::generate_with(&names, validity_days, key_type)?;
    certs::write_dir(&out, &g)?;
    outln!(
        "wrote {d}/ca.crt, ca.key, tls.crt, tls.key and ca-bundle.txt for {} (valid {validity_days} days)",
        names.join(", "),
        d = out.display()
    );
    outln!(
        "caBundle: {}/ca-bundle.txt; keep ca.key to issue the next serving certificate",
        out.display()
    );
    ok()
}
