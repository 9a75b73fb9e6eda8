//! `runner-fence certs generate` and `certs rotate`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::{Error, ok};
use crate::webhook::certs::{self, Authority, KeyType, Replace};

#[derive(Subcommand, Debug)]
pub(super) enum Command {
    /// Generate a CA (or use an existing one) and a serving certificate for the
    /// webhook Service. Never replaces an existing key or certificate without --force.
    Generate {
        #[command(flatten)]
        serving: Serving,
        /// Issue from this existing CA certificate (PEM) instead of making a new CA.
        #[arg(long, requires = "ca_key")]
        ca_cert: Option<PathBuf>,
        /// The private key of --ca-cert (PEM); it is read, never copied.
        #[arg(long, requires = "ca_cert")]
        ca_key: Option<PathBuf>,
        /// Validity of a new CA in days (it issues every later serving certificate).
        #[arg(long, default_value_t = 3650, conflicts_with = "ca_cert")]
        ca_validity_days: u32,
        /// Replace existing files in --out.
        #[arg(long)]
        force: bool,
    },
    /// Issue a new serving certificate from the CA in --out (ca.crt, ca.key) and
    /// replace tls.crt and tls.key; the CA, and so the caBundle, stay.
    Rotate {
        #[command(flatten)]
        serving: Serving,
    },
}

/// The serving certificate's settings, shared by both verbs.
#[derive(Args, Debug)]
pub(super) struct Serving {
    /// Service name.
    #[arg(long, default_value = "runner-fence")]
    service: String,
    /// Service namespace.
    #[arg(long, default_value = "runner-fence")]
    namespace: String,
    /// Output directory (ca.crt, ca.key, tls.crt, tls.key, ca-bundle.txt).
    #[arg(long)]
    out: PathBuf,
    /// Validity in days (never beyond the CA's).
    #[arg(long, default_value_t = 365)]
    validity_days: u32,
    /// Key algorithm.
    #[arg(long, value_enum, default_value = "ecdsa-p256")]
    key_type: KeyType,
    /// Extra subject alternative names (DNS names or IPs).
    #[arg(long = "san")]
    extra_sans: Vec<String>,
}

pub(super) fn run(command: Command) -> Result<ExitCode, Error> {
    let (serving, ca, replace, verb) = match command {
        Command::Generate {
            serving,
            ca_cert: Some(cert),
            ca_key: Some(key),
            force,
            ..
        } => (
            serving,
            Authority::read(&cert, &key)?,
            if force {
                Replace::Everything
            } else {
                Replace::Nothing
            },
            "issued from the CA in --ca-cert",
        ),
        Command::Generate {
            serving,
            ca_validity_days,
            force,
            ..
        } => {
            let ca = Authority::generate(ca_validity_days, serving.key_type)?;
            let replace = if force {
                Replace::Everything
            } else {
                Replace::Nothing
            };
            (serving, ca, replace, "with a new CA")
        }
        Command::Rotate { serving } => {
            let ca = Authority::read(&serving.out.join("ca.crt"), &serving.out.join("ca.key"))?;
            (
                serving,
                ca,
                Replace::Serving,
                "issued from the CA kept in --out",
            )
        }
    };
    let mut names = certs::service_names(&serving.service, &serving.namespace);
    names.extend(serving.extra_sans);
    let g = ca.issue(&names, serving.validity_days, serving.key_type)?;
    certs::write_dir(&serving.out, &g, replace)?;
    let d = serving.out.display();
    outln!(
        "wrote {d}/tls.crt and tls.key for {} ({verb}, valid until {}), ca.crt and ca-bundle.txt{}",
        names.join(", "),
        g.not_after.date(),
        if g.ca_key_pem.is_some() {
            ", ca.key"
        } else {
            ""
        }
    );
    outln!(
        "caBundle: {d}/ca-bundle.txt; `runner-fence certs rotate --out {d}` issues the next serving certificate from the same CA (keep its key)"
    );
    ok()
}
