//! Certificate generation (rcgen) and loading (rustls).

use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};

use crate::webhook::Error;

type Result<T, E = Error> = std::result::Result<T, E>;

/// Key algorithms for generated certificates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum KeyType {
    /// ECDSA P-256 (the default; what kube-apiserver and every client speak).
    EcdsaP256,
    /// ECDSA P-384.
    EcdsaP384,
    /// Ed25519 (TLS 1.3 clients only).
    Ed25519,
}

impl KeyType {
    fn algorithm(self) -> &'static rcgen::SignatureAlgorithm {
        match self {
            KeyType::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            KeyType::EcdsaP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            KeyType::Ed25519 => &rcgen::PKCS_ED25519,
        }
    }
}

/// A CA and a serving certificate signed by it, PEM encoded.
pub struct Generated {
    /// The CA certificate (the webhook configurations' `caBundle`, base64-encoded).
    pub ca_pem: String,
    /// The CA's private key (keep it to issue the next serving certificate);
    /// `None` when the CA came from files (its key stays where it is).
    pub ca_key_pem: Option<String>,
    /// The serving certificate.
    pub cert_pem: String,
    /// The serving certificate's private key.
    pub key_pem: String,
    /// When the serving certificate expires.
    pub not_after: time::OffsetDateTime,
}

fn tls_err(what: &'static str) -> impl Fn(rcgen::Error) -> Error {
    move |source| Error::Generate { what, source }
}

/// A CA that issues serving certificates: generated now, or read from files.
pub(crate) struct Authority {
    pem: String,
    key_pem: Option<String>,
    issuer: Issuer<'static, KeyPair>,
    not_after: time::OffsetDateTime,
}

impl Authority {
    /// A new self-signed CA valid for `validity_days`.
    pub(crate) fn generate(validity_days: u32, key_type: KeyType) -> Result<Self> {
        let now = time::OffsetDateTime::now_utc();
        let until = now + time::Duration::days(i64::from(validity_days.max(1)));
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "runner-fence CA");
        params.distinguished_name = dn;
        params.not_before = now - time::Duration::minutes(5);
        params.not_after = until;
        let key = KeyPair::generate_for(key_type.algorithm()).map_err(tls_err("CA key"))?;
        let cert = params
            .self_signed(&key)
            .map_err(tls_err("CA certificate"))?;
        Ok(Authority {
            pem: cert.pem(),
            key_pem: Some(key.serialize_pem()),
            issuer: Issuer::new(params, key),
            not_after: until,
        })
    }

    /// The CA in `cert` with its private key in `key` (PEM), e.g. the
    /// `ca.crt` and `ca.key` an earlier `certs generate` wrote.
    pub(crate) fn read(cert: &Path, key: &Path) -> Result<Self> {
        let read = |path: &Path| {
            std::fs::read_to_string(path).map_err(|source| Error::Read {
                path: path.to_path_buf(),
                source,
            })
        };
        let (pem, key_pem) = (read(cert)?, read(key)?);
        let der = parse_chain(pem.as_bytes(), cert)?.remove(0);
        let (_, x509) =
            x509_parser::parse_x509_certificate(der.as_ref()).map_err(|_| Error::NotCa {
                path: cert.to_path_buf(),
                why: "not an X.509 certificate",
            })?;
        if !x509.is_ca() {
            return Err(Error::NotCa {
                path: cert.to_path_buf(),
                why: "not a CA certificate (no basicConstraints CA:TRUE)",
            });
        }
        let not_after = x509.validity().not_after.to_datetime();
        if not_after <= time::OffsetDateTime::now_utc() {
            return Err(Error::NotCa {
                path: cert.to_path_buf(),
                why: "the CA certificate has expired",
            });
        }
        let signing = KeyPair::from_pem(&key_pem).map_err(|_| Error::NotCaKey {
            path: key.to_path_buf(),
            why: "not a PEM private key rcgen can sign with (ECDSA P-256/P-384, Ed25519, RSA)",
        })?;
        if signing.public_key_raw() != x509.public_key().subject_public_key.data.as_ref() {
            return Err(Error::CaKeyMismatch {
                cert: cert.to_path_buf(),
                key: key.to_path_buf(),
            });
        }
        let issuer = Issuer::from_ca_cert_der(&der, signing).map_err(tls_err("CA from file"))?;
        Ok(Authority {
            pem,
            key_pem: None,
            issuer,
            not_after,
        })
    }

    /// A serving certificate for `names` (DNS names or IP addresses), valid
    /// for `validity_days` but never beyond the CA.
    pub(crate) fn issue(
        self,
        names: &[String],
        validity_days: u32,
        key_type: KeyType,
    ) -> Result<Generated> {
        if names.is_empty() {
            return Err(Error::NoNames);
        }
        let now = time::OffsetDateTime::now_utc();
        let until =
            (now + time::Duration::days(i64::from(validity_days.max(1)))).min(self.not_after);
        let mut params =
            CertificateParams::new(names.to_vec()).map_err(tls_err("serving names"))?;
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            names.first().cloned().unwrap_or_default(),
        );
        params.distinguished_name = dn;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        // ClientAuth too, so the same generator can issue the apiserver's client
        // certificate for `--client-ca` setups.
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_before = now - time::Duration::minutes(5);
        params.not_after = until;
        let key = KeyPair::generate_for(key_type.algorithm()).map_err(tls_err("serving key"))?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(tls_err("serving certificate"))?;
        Ok(Generated {
            ca_pem: self.pem,
            ca_key_pem: self.key_pem,
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            not_after: until,
        })
    }
}

/// Generates a CA and a serving certificate for `names` (DNS names or IP addresses).
pub fn generate(names: &[String], validity_days: u32) -> Result<Generated> {
    generate_with(names, validity_days, KeyType::EcdsaP256)
}

/// [`generate`] with a chosen key type.
pub(crate) fn generate_with(
    names: &[String],
    validity_days: u32,
    key_type: KeyType,
) -> Result<Generated> {
    Authority::generate(validity_days, key_type)?.issue(names, validity_days, key_type)
}

/// Parses a PEM certificate chain; errors name the file.
pub fn parse_chain(pem: &[u8], origin: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<std::result::Result<_, _>>()
        .map_err(|source| Error::NotPemChain {
            path: origin.to_path_buf(),
            source,
        })?;
    if certs.is_empty() {
        return Err(Error::NoCertificate {
            path: origin.to_path_buf(),
        });
    }
    Ok(certs)
}

/// Parses a PEM private key; errors name the file.
pub(crate) fn parse_key(pem: &[u8], origin: &Path) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|source| Error::NotPemKey {
        path: origin.to_path_buf(),
        source,
    })
}

/// The `notAfter` of a DER certificate, in seconds since the epoch.
pub(crate) fn not_after(cert: &CertificateDer<'_>) -> Option<i64> {
    let (_, x) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    Some(x.validity().not_after.timestamp())
}

/// The names a webhook Service is reached by.
pub(crate) fn service_names(service: &str, namespace: &str) -> Vec<String> {
    vec![
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
        format!("{service}.{namespace}"),
        service.to_string(),
    ]
}

/// Writes a file, private (0600) when `secret`, through a temporary file and
/// a rename: a server polling the directory never reads half a file.
fn write_file(path: &Path, contents: &str, secret: bool) -> Result<()> {
    use std::io::Write;
    let write = |source| Error::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(if secret { 0o600 } else { 0o644 });
    }
    let mut f = opts.open(&tmp).map_err(write)?;
    #[cfg(unix)]
    if secret {
        // A leftover temporary file keeps its mode on open; tighten it explicitly.
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(write)?;
    }
    f.write_all(contents.as_bytes()).map_err(write)?;
    f.sync_all().map_err(write)?;
    std::fs::rename(&tmp, path).map_err(write)
}

/// What may be replaced when writing a certificate directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Replace {
    /// Nothing: an existing key or certificate is an error (`certs generate`).
    Nothing,
    /// The serving certificate and key (`certs rotate`), never the CA.
    Serving,
    /// Everything (`certs generate --force`).
    Everything,
}

/// Writes `tls.crt`, `tls.key`, `ca.crt`, `ca-bundle.txt` and, for a
/// generated CA, `ca.key` into `dir`. Checks every file first, so a refusal
/// leaves the directory as it was; a file that already holds exactly what
/// would be written is not a conflict.
pub(crate) fn write_dir(dir: &Path, g: &Generated, replace: Replace) -> Result<()> {
    use base64::Engine as _;
    let bundle = format!(
        "{}\n",
        base64::engine::general_purpose::STANDARD.encode(&g.ca_pem)
    );
    let mut files = vec![
        ("ca.crt", g.ca_pem.as_str(), false, false),
        ("tls.crt", g.cert_pem.as_str(), false, true),
        ("tls.key", g.key_pem.as_str(), true, true),
        ("ca-bundle.txt", bundle.as_str(), false, false),
    ];
    if let Some(k) = &g.ca_key_pem {
        files.insert(1, ("ca.key", k.as_str(), true, false));
    }
    for (name, contents, _, serving) in &files {
        let path = dir.join(name);
        let may = replace == Replace::Everything || (*serving && replace == Replace::Serving);
        let same = std::fs::read_to_string(&path).is_ok_and(|old| old == *contents);
        if path.exists() && !may && !same {
            return Err(Error::Exists { path });
        }
    }
    std::fs::create_dir_all(dir).map_err(|source| Error::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    // The key before its certificate: a reload that sees the new certificate
    // with the old key fails and keeps serving; the next poll takes the pair.
    files.sort_by_key(|(name, ..)| *name != "tls.key");
    for (name, contents, secret, _) in files {
        write_file(&dir.join(name), contents, secret)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_chain_parses_and_expires_in_the_future() {
        let g = generate(&["localhost".into(), "127.0.0.1".into()], 30).expect("generate");
        let chain = parse_chain(g.cert_pem.as_bytes(), Path::new("c")).expect("chain");
        parse_key(g.key_pem.as_bytes(), Path::new("k")).expect("key");
        let exp = not_after(&chain[0]).expect("notAfter");
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        assert!(exp > now + 29 * 86400 && exp < now + 31 * 86400);
    }

    #[test]
    fn writes_private_keys_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tmp");
        for kt in [KeyType::EcdsaP256, KeyType::EcdsaP384, KeyType::Ed25519] {
            let g = generate_with(&service_names("runner-fence", "runner-fence"), 10, kt)
                .expect("generate");
            write_dir(dir.path(), &g, Replace::Everything).expect("write");
        }
        for (f, mode) in [
            ("ca.key", 0o600),
            ("tls.key", 0o600),
            ("tls.crt", 0o644),
            ("ca.crt", 0o644),
        ] {
            let m = std::fs::metadata(dir.path().join(f))
                .expect("file")
                .permissions()
                .mode()
                & 0o777;
            assert_eq!(m, mode, "{f}");
        }
        let pem = std::fs::read(dir.path().join("tls.crt")).expect("crt");
        let chain = parse_chain(&pem, Path::new("tls.crt")).expect("chain");
        let (_, x) = x509_parser::parse_x509_certificate(chain[0].as_ref()).expect("x509");
        let sans = format!("{:?}", x.subject_alternative_name());
        assert!(
            sans.contains("runner-fence.runner-fence.svc")
                && sans.contains("runner-fence.runner-fence.svc.cluster.local"),
            "{sans}"
        );
    }

    #[test]
    fn garbage_is_named() {
        let e = parse_chain(b"hello", Path::new("/x/tls.crt")).expect_err("garbage");
        assert!(e.to_string().contains("/x/tls.crt"), "{e}");
        let e = parse_key(b"hello", Path::new("/x/tls.key")).expect_err("garbage");
        assert!(e.to_string().contains("/x/tls.key"), "{e}");
    }
}
