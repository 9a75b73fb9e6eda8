//! TLS: a certificate resolver whose key can be swapped while serving, so
//! rotated certificates apply to new handshakes without a restart.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::crypto::ring;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};

use super::Error;
use super::certs;

type Result<T, E = Error> = std::result::Result<T, E>;

/// Serves whatever certificate was loaded last.
pub struct Resolver {
    current: ArcSwap<CertifiedKey>,
}

impl fmt::Debug for Resolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Resolver")
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

impl Resolver {
    /// A resolver serving `key`.
    pub fn new(key: CertifiedKey) -> Self {
        Resolver {
            current: ArcSwap::from_pointee(key),
        }
    }

    /// Serves `key` from the next handshake on.
    pub fn swap(&self, key: CertifiedKey) {
        self.current.store(Arc::new(key));
    }
}

/// Where the serving certificate comes from.
#[derive(Clone, Debug)]
pub(crate) struct CertFiles {
    /// PEM chain.
    pub cert: PathBuf,
    /// PEM key.
    pub key: PathBuf,
}

/// Builds a certified key from PEM bytes, checking that key and certificate match.
pub fn certified_key(
    cert_pem: &[u8],
    key_pem: &[u8],
    cert_path: &Path,
    key_path: &Path,
) -> Result<(CertifiedKey, Option<i64>)> {
    let chain = certs::parse_chain(cert_pem, cert_path)?;
    let key = certs::parse_key(key_pem, key_path)?;
    let expiry = certs::not_after(&chain[0]);
    let provider = ring::default_provider();
    let ck = CertifiedKey::from_der(chain, key, &provider).map_err(|source| Error::KeyPair {
        cert: cert_path.to_path_buf(),
        key: key_path.to_path_buf(),
        source,
    })?;
    Ok((ck, expiry))
}

/// Reads a certificate and key pair from files.
pub(crate) fn load(files: &CertFiles) -> Result<(CertifiedKey, Option<i64>)> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| Error::Read {
            path: path.to_path_buf(),
            source,
        })
    };
    let cert = read(&files.cert)?;
    let key = read(&files.key)?;
    certified_key(&cert, &key, &files.cert, &files.key)
}

/// A rustls server config: TLS 1.2 and 1.3, h2 and http/1.1, optional client certificates.
pub fn server_config(resolver: Arc<Resolver>, client_ca: Option<&Path>) -> Result<ServerConfig> {
    let provider = Arc::new(ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(Error::TlsVersions)?;
    let mut config = match client_ca {
        None => builder.with_no_client_auth().with_cert_resolver(resolver),
        Some(path) => {
            let pem = std::fs::read(path).map_err(|source| Error::Read {
                path: path.to_path_buf(),
                source,
            })?;
            let mut roots = RootCertStore::empty();
            for c in certs::parse_chain(&pem, path)? {
                roots.add(c).map_err(|source| Error::ClientCa {
                    path: path.to_path_buf(),
                    source,
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|source| Error::ClientVerifier {
                    path: path.to_path_buf(),
                    source,
                })?;
            builder
                .with_client_cert_verifier(verifier)
                .with_cert_resolver(resolver)
        }
    };
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}
