//! The webhook layer's error: what keeps `serve` (and certificate
//! generation) from starting, or a reload from applying.

use std::net::SocketAddr;
use std::path::PathBuf;

use rustls::pki_types::pem;

use crate::core::document::InputError;
use crate::core::policy::LoadError;

/// Why the webhook cannot serve.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The policy does not load.
    #[error(transparent)]
    Policy(#[from] LoadError),
    /// `--nodes-file` does not load.
    #[error(transparent)]
    Nodes(#[from] InputError),
    /// A file could not be read.
    #[error("{}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file or directory could not be written.
    #[error("{}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A certificate file that is not PEM.
    #[error("{}: not a PEM certificate chain", path.display())]
    NotPemChain {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: pem::Error,
    },
    /// A PEM file without a certificate.
    #[error("{}: no certificate found", path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// A key file that is not a PEM private key.
    #[error("{}: not a PEM private key", path.display())]
    NotPemKey {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: pem::Error,
    },
    /// Certificate and key do not belong together (or are unusable).
    #[error("{} and {}", cert.display(), key.display())]
    KeyPair {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// Why.
        #[source]
        source: rustls::Error,
    },
    /// The TLS configuration could not be built.
    #[error("TLS versions")]
    TlsVersions(#[source] rustls::Error),
    /// A `--client-ca` certificate rustls does not accept.
    #[error("{}", path.display())]
    ClientCa {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: rustls::Error,
    },
    /// No client certificate verifier for `--client-ca`.
    #[error("{}", path.display())]
    ClientVerifier {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: rustls::server::VerifierBuilderError,
    },
    /// A key or certificate that would be overwritten.
    #[error("{} exists; pass --force to replace it (a CA key issues every later serving certificate: keep it, and use `certs rotate` for a new serving certificate)", path.display())]
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// `--ca-cert` that cannot issue certificates.
    #[error("{}: {why}", path.display())]
    NotCa {
        /// The file.
        path: PathBuf,
        /// Why.
        why: &'static str,
    },
    /// `--ca-key` that is not a usable key.
    #[error("{}: {why}", path.display())]
    NotCaKey {
        /// The file.
        path: PathBuf,
        /// Why.
        why: &'static str,
    },
    /// `--ca-key` that does not belong to `--ca-cert`.
    #[error("{} is not the key of the CA certificate {}", key.display(), cert.display())]
    CaKeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// A certificate needs a name.
    #[error("a certificate needs at least one name")]
    NoNames,
    /// Certificate generation failed.
    #[error("{what}")]
    Generate {
        /// What was being generated.
        what: &'static str,
        /// Why.
        #[source]
        source: rcgen::Error,
    },
    /// A listener could not be bound.
    #[error("cannot listen on {addr}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A bound listener has no local address.
    #[error("listener address")]
    LocalAddr(#[source] std::io::Error),
    /// The async runtime could not start.
    #[error("cannot start runtime")]
    Runtime(#[source] std::io::Error),
    /// A blocking task (a reload) panicked or was cancelled.
    #[error("background task failed")]
    Task(#[source] tokio::task::JoinError),
}
