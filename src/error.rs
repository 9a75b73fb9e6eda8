//! Crate-wide error type for everything that is not a policy decision.

use std::path::PathBuf;

/// Errors of the CLI and server plumbing.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A policy file could not be loaded.
    #[error(transparent)]
    Policy(#[from] crate::policy::LoadError),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// An input was not understood.
    #[error("{0}")]
    Input(String),
    /// TLS or certificate trouble.
    #[error("{0}")]
    Tls(String),
    /// Anything else worth a message.
    #[error("{0}")]
    Other(String),
}

/// Result alias with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
