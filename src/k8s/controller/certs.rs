//! runner-fence's own serving CA (`--manage-certificates`): a Secret in its
//! namespace holds the CA bundle the apiserver trusts (`ca.crt`) and the
//! serving pair (`tls.crt`, `tls.key`). Every replica serves the pair it
//! reads from the Secret (a watch, so no restart and no kubelet delay); the
//! leader writes `ca.crt` into the objects it reconciles and rotates before
//! expiry in two steps, so the apiserver always trusts what is served:
//! **stage** (a new pair under `next.*`, its CA added to `ca.crt`), then, a
//! round after the bundle was applied, **promote** (`next.*` becomes `tls.*`).
//! CA certificates past their expiry leave the bundle.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::PostParams;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use tokio::sync::watch;

/// The CA bundle the apiserver trusts.
pub const CA: &str = "ca.crt";
/// The serving certificate.
pub const CERT: &str = "tls.crt";
/// The serving key.
pub const KEY: &str = "tls.key";
const NEXT_CERT: &str = "next.crt";
const NEXT_KEY: &str = "next.key";

/// A new CA and a serving pair it signed (PEM).
pub struct Issued {
    /// The CA certificate.
    pub ca_pem: String,
    /// The serving certificate.
    pub cert_pem: String,
    /// Its key.
    pub key_pem: String,
}

/// What the controller needs from the TLS layer (which sits above it).
pub trait Certificates: Send + Sync + 'static {
    /// A new CA and a serving pair for `names`, valid `days`.
    fn issue(&self, names: &[String], days: u32) -> Result<Issued, String>;
    /// `notAfter` (seconds since the epoch) of each certificate in a PEM bundle.
    fn not_after(&self, pem: &[u8]) -> Vec<i64>;
    /// Serve this pair from now on.
    fn serve(&self, cert_pem: &[u8], key_pem: &[u8]) -> Result<(), String>;
}

/// Where the Secret is and what it certifies.
#[derive(Clone, Debug)]
pub struct CertConfig {
    /// runner-fence's namespace.
    pub namespace: String,
    /// The Secret's name (`<release>-tls`).
    pub secret: String,
    /// The Service's DNS names.
    pub names: Vec<String>,
    /// Validity of a new pair.
    pub validity_days: u32,
    /// Rotate when the serving certificate expires within this.
    pub renew_before: Duration,
}

type Data = BTreeMap<String, ByteString>;

/// What the leader does with the Secret this round (pure).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// No usable pair: create one.
    Create,
    /// Nothing to do.
    Keep,
    /// The pair expires soon: stage a new one and trust its CA.
    Stage,
    /// The staged pair's CA has been applied: serve it.
    Promote,
    /// Expired CA certificates are still in the bundle: drop them.
    Prune,
}

/// Splits a PEM bundle into its certificates (PEM blocks).
pub fn pem_blocks(pem: &str) -> Vec<String> {
    const END: &str = "-----END CERTIFICATE-----";
    pem.split_inclusive(END)
        .filter(|b| b.contains("-----BEGIN CERTIFICATE-----"))
        .map(|b| format!("{}\n", b.trim()))
        .collect()
}

fn get<'a>(data: &'a Data, key: &str) -> Option<&'a [u8]> {
    data.get(key)
        .map(|b| b.0.as_slice())
        .filter(|b| !b.is_empty())
}

/// The step for `data` at `now`; `bundle_applied`: the current `ca.crt` is in the live objects.
pub fn step(
    data: Option<&Data>,
    certs: &dyn Certificates,
    cfg: &CertConfig,
    now: i64,
    bundle_applied: bool,
) -> Step {
    let Some(data) = data else {
        return Step::Create;
    };
    let (Some(ca), Some(cert), Some(_)) = (get(data, CA), get(data, CERT), get(data, KEY)) else {
        return Step::Create;
    };
    let Some(expiry) = certs.not_after(cert).first().copied() else {
        return Step::Create;
    };
    if get(data, NEXT_CERT).is_some() {
        return if bundle_applied {
            Step::Promote
        } else {
            Step::Keep
        };
    }
    let renew = i64::try_from(cfg.renew_before.as_secs()).unwrap_or(i64::MAX);
    if expiry.saturating_sub(renew) <= now {
        return Step::Stage;
    }
    if certs.not_after(ca).iter().any(|t| *t <= now) {
        return Step::Prune;
    }
    Step::Keep
}

/// The Secret's data after `step` (None: unchanged).
pub fn apply_step(
    step: &Step,
    data: Option<&Data>,
    certs: &dyn Certificates,
    cfg: &CertConfig,
    now: i64,
) -> Result<Option<Data>, String> {
    let bytes = |s: &str| ByteString(s.as_bytes().to_vec());
    let mut out = data.cloned().unwrap_or_default();
    match step {
        Step::Keep => return Ok(None),
        Step::Create => {
            let i = certs.issue(&cfg.names, cfg.validity_days)?;
            out = Data::from([
                (CA.into(), bytes(&i.ca_pem)),
                (CERT.into(), bytes(&i.cert_pem)),
                (KEY.into(), bytes(&i.key_pem)),
            ]);
        }
        Step::Stage => {
            let i = certs.issue(&cfg.names, cfg.validity_days)?;
            let old = get(&out, CA)
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            out.insert(CA.into(), bytes(&format!("{}{old}", i.ca_pem)));
            out.insert(NEXT_CERT.into(), bytes(&i.cert_pem));
            out.insert(NEXT_KEY.into(), bytes(&i.key_pem));
        }
        Step::Promote => {
            if let (Some(c), Some(k)) = (out.remove(NEXT_CERT), out.remove(NEXT_KEY)) {
                out.insert(CERT.into(), c);
                out.insert(KEY.into(), k);
            }
        }
        Step::Prune => {
            let ca = get(&out, CA)
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            let kept: String = pem_blocks(&ca)
                .into_iter()
                .filter(|b| {
                    certs
                        .not_after(b.as_bytes())
                        .first()
                        .is_some_and(|t| *t > now)
                })
                .collect();
            out.insert(CA.into(), bytes(&kept));
        }
    }
    Ok(Some(out))
}

fn now() -> i64 {
    k8s_openapi::jiff::Timestamp::now().as_second()
}

/// The leader's round: creates or rotates the pair; returns the CA bundle to
/// write into the generated objects (None: the Secret could not be read).
/// `applied_ca`: the bundle the live objects last got.
pub async fn rotate(
    client: &Client,
    cfg: &CertConfig,
    certs: &dyn Certificates,
    applied_ca: Option<&[u8]>,
) -> Option<Vec<u8>> {
    let api: Api<Secret> = Api::namespaced(client.clone(), &cfg.namespace);
    let secret = match api.get_opt(&cfg.secret).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(secret = %cfg.secret, error = %e, "cannot read the serving certificate Secret");
            return None;
        }
    };
    let data = secret.as_ref().and_then(|s| s.data.clone());
    let bundle_applied =
        applied_ca.is_some() && data.as_ref().and_then(|d| get(d, CA)) == applied_ca;
    let step = step(data.as_ref(), certs, cfg, now(), bundle_applied);
    let new = match apply_step(&step, data.as_ref(), certs, cfg, now()) {
        Ok(n) => n,
        Err(e) => {
            tracing::error!(error = %e, "cannot issue a serving certificate");
            None
        }
    };
    let Some(new) = new else {
        return data.as_ref().and_then(|d| get(d, CA)).map(<[u8]>::to_vec);
    };
    let ca = get(&new, CA).map(<[u8]>::to_vec);
    let written = match secret {
        Some(mut s) => {
            s.data = Some(new);
            api.replace(&cfg.secret, &PostParams::default(), &s).await
        }
        None => {
            api.create(&PostParams::default(), &secret_with(cfg, new))
                .await
        }
    };
    match written {
        Ok(_) => {
            tracing::info!(secret = %cfg.secret, step = ?step, "serving certificate Secret updated");
            ca
        }
        Err(e) => {
            tracing::warn!(secret = %cfg.secret, error = %e, step = ?step, "cannot write the serving certificate Secret; next round");
            None
        }
    }
}

fn secret_with(cfg: &CertConfig, data: Data) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(cfg.secret.clone()),
            namespace: Some(cfg.namespace.clone()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/name".to_string(),
                "runner-fence".to_string(),
            )])),
            ..ObjectMeta::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(data),
        ..Secret::default()
    }
}

/// Every replica: serves the pair in the Secret and follows its changes;
/// creates the Secret when there is none yet (the first replica to start).
pub async fn serve_from_secret(
    client: Client,
    cfg: CertConfig,
    certs: Arc<dyn Certificates>,
    mut stop: watch::Receiver<bool>,
) {
    let api: Api<Secret> = Api::namespaced(client.clone(), &cfg.namespace);
    let wcfg = watcher::Config::default().fields(&format!("metadata.name={}", cfg.secret));
    let stream = watcher::watcher(api, wcfg);
    tokio::pin!(stream);
    let mut seen = false;
    loop {
        let next = tokio::select! {
            n = stream.next() => n,
            _ = stop.wait_for(|s| *s) => return,
        };
        let Some(ev) = next else { return };
        match ev {
            Ok(Event::Apply(s) | Event::InitApply(s)) => {
                seen = true;
                let data = s.data.unwrap_or_default();
                if let (Some(c), Some(k)) = (get(&data, CERT), get(&data, KEY))
                    && let Err(e) = certs.serve(c, k)
                {
                    tracing::error!(secret = %cfg.secret, error = %e, "the Secret's serving pair does not load; keeping the previous one");
                }
            }
            Ok(Event::InitDone) if !seen => {
                // No Secret yet: make one (another replica may race; then its pair arrives here).
                let _ = rotate(&client, &cfg, certs.as_ref(), None).await;
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(secret = %cfg.secret, error = %e, "watch of the serving certificate Secret failed; retrying");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Certificates with readable fake PEM: `CERT <name> <notAfter>`.
    struct Fake {
        issued: Mutex<u32>,
        now: i64,
    }

    fn pem(name: &str, not_after: i64) -> String {
        format!("-----BEGIN CERTIFICATE-----\n{name} {not_after}\n-----END CERTIFICATE-----\n")
    }

    impl Certificates for Fake {
        fn issue(&self, _: &[String], days: u32) -> Result<Issued, String> {
            let mut n = self.issued.lock().map_err(|e| e.to_string())?;
            *n += 1;
            let until = self.now + i64::from(days) * 86_400;
            Ok(Issued {
                ca_pem: pem(&format!("ca{n}"), until),
                cert_pem: pem(&format!("cert{n}"), until),
                key_pem: format!("key{n}"),
            })
        }
        fn not_after(&self, pem: &[u8]) -> Vec<i64> {
            pem_blocks(&String::from_utf8_lossy(pem))
                .iter()
                .filter_map(|b| b.lines().nth(1)?.split(' ').nth(1)?.parse().ok())
                .collect()
        }
        fn serve(&self, _: &[u8], _: &[u8]) -> Result<(), String> {
            Ok(())
        }
    }

    fn cfg() -> CertConfig {
        CertConfig {
            namespace: "runner-fence".into(),
            secret: "runner-fence-tls".into(),
            names: vec!["runner-fence.runner-fence.svc".into()],
            validity_days: 365,
            renew_before: Duration::from_secs(30 * 86_400),
        }
    }

    fn text(d: &Data, k: &str) -> String {
        d.get(k)
            .map(|b| String::from_utf8_lossy(&b.0).into_owned())
            .unwrap_or_default()
    }

    #[test]
    fn rotation_trusts_the_new_ca_before_serving_its_certificate() {
        let day = 86_400;
        let mut fake = Fake {
            issued: Mutex::new(0),
            now: 0,
        };
        let c = cfg();
        assert_eq!(step(None, &fake, &c, 0, false), Step::Create);
        let d = apply_step(&Step::Create, None, &fake, &c, 0)
            .expect("ok")
            .expect("data");
        assert!(text(&d, CERT).contains("cert1"));
        assert_eq!(step(Some(&d), &fake, &c, 10 * day, true), Step::Keep);
        // 30 days before expiry: stage, both CAs trusted, still serving the old pair.
        let t = 336 * day;
        fake.now = t;
        assert_eq!(step(Some(&d), &fake, &c, t, true), Step::Stage);
        let d = apply_step(&Step::Stage, Some(&d), &fake, &c, t)
            .expect("ok")
            .expect("data");
        assert!(text(&d, CERT).contains("cert1"));
        assert_eq!(pem_blocks(&text(&d, CA)).len(), 2);
        // Not promoted until the new bundle is in the live objects.
        assert_eq!(step(Some(&d), &fake, &c, t, false), Step::Keep);
        assert_eq!(step(Some(&d), &fake, &c, t, true), Step::Promote);
        let d = apply_step(&Step::Promote, Some(&d), &fake, &c, t)
            .expect("ok")
            .expect("data");
        assert!(text(&d, CERT).contains("cert2"));
        assert!(!d.contains_key(NEXT_CERT));
        // Once the old CA has expired it leaves the bundle.
        let later = 366 * day;
        assert_eq!(step(Some(&d), &fake, &c, later, true), Step::Prune);
        let d = apply_step(&Step::Prune, Some(&d), &fake, &c, later)
            .expect("ok")
            .expect("data");
        let bundle = text(&d, CA);
        assert!(
            bundle.contains("ca2") && !bundle.contains("ca1"),
            "{bundle}"
        );
    }

    #[test]
    fn a_secret_without_a_usable_pair_is_recreated() {
        let fake = Fake {
            issued: Mutex::new(0),
            now: 0,
        };
        let d = Data::from([(CA.to_string(), ByteString(b"x".to_vec()))]);
        assert_eq!(step(Some(&d), &fake, &cfg(), 0, true), Step::Create);
    }
}
