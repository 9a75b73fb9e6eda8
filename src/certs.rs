//! Certificate generation (rcgen) and loading (rustls).

use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};

use crate::error::{Error, Result};

/// A CA and a serving certificate signed by it, PEM encoded.
pub struct Generated {
    /// The CA certificate (the webhook configurations' `caBundle`, base64-encoded).
    pub ca_pem: String,
    /// The serving certificate.
    pub cert_pem: String,
    /// The serving certificate's private key.
    pub key_pem: String,
}

fn tls_err(what: &str) -> impl Fn(rcgen::Error) -> Error + '_ {
    move |e| Error::Tls(format!("{what}: {e}"))
}

/// Generates a CA and a serving certificate for `names` (DNS names or IP addresses).
pub fn generate(names: &[String], validity_days: u32) -> Result<Generated> {
    let now = time::OffsetDateTime::now_utc();
    let until = now + time::Duration::days(i64::from(validity_days.max(1)));

    let mut ca_params = CertificateParams::default();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "runner-fence CA");
    ca_params.distinguished_name = dn;
    ca_params.not_before = now - time::Duration::minutes(5);
    ca_params.not_after = until;
    let ca_key = KeyPair::generate().map_err(tls_err("CA key"))?;
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key).map_err(tls_err("CA certificate"))?;

    let mut params = CertificateParams::new(names.to_vec()).map_err(tls_err("serving names"))?;
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
    let key = KeyPair::generate().map_err(tls_err("serving key"))?;
    let cert = params
        .signed_by(&key, &ca)
        .map_err(tls_err("serving certificate"))?;
    Ok(Generated {
        ca_pem: ca.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Parses a PEM certificate chain; errors name the file.
pub fn parse_chain(pem: &[u8], origin: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| {
            Error::Tls(format!(
                "{}: not a PEM certificate chain: {e}",
                origin.display()
            ))
        })?;
    if certs.is_empty() {
        return Err(Error::Tls(format!(
            "{}: no certificate found",
            origin.display()
        )));
    }
    Ok(certs)
}

/// Parses a PEM private key; errors name the file.
pub fn parse_key(pem: &[u8], origin: &Path) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_slice(pem)
        .map_err(|e| Error::Tls(format!("{}: not a PEM private key: {e}", origin.display())))
}

/// The `notAfter` of a DER certificate, in seconds since the epoch.
pub fn not_after(cert: &CertificateDer<'_>) -> Option<i64> {
    let (_, x) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    Some(x.validity().not_after.timestamp())
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
    fn garbage_is_named() {
        let e = parse_chain(b"hello", Path::new("/x/tls.crt")).expect_err("garbage");
        assert!(e.to_string().contains("/x/tls.crt"), "{e}");
        let e = parse_key(b"hello", Path::new("/x/tls.key")).expect_err("garbage");
        assert!(e.to_string().contains("/x/tls.key"), "{e}");
    }
}
