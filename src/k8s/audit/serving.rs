//! Does the webhook serve? The Deployment behind the Service the webhook
//! configurations call (Ready replicas), the Service's ready endpoints
//! (EndpointSlices), and the certificates: the caBundle's, and the serving
//! certificate each endpoint presents in a TLS handshake, checked against that
//! caBundle and the name the apiserver uses, as the apiserver checks it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Client;
use kube::api::{Api, ListParams};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use serde::Serialize;

use super::{Check, Unreadable};
use crate::k8s::{ApiError, Call};

/// A certificate that expires within this many days is a finding (the
/// chart's alert warns at 14 days too).
pub const EXPIRY_WARNING_DAYS: i64 = 14;

/// How long one endpoint may take to connect and complete a handshake.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// The most endpoints of one Service whose certificate is read.
const PROBED_ENDPOINTS: usize = 3;

/// Where the apiserver calls the webhook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Target {
    /// `clientConfig.service` (or `--webhook-namespace/--webhook-service`).
    Service {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// Port (443 when unset).
        port: i32,
    },
    /// `clientConfig.url`.
    Url {
        /// The URL.
        url: String,
    },
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Service {
                namespace,
                name,
                port,
            } => write!(f, "Service {namespace}/{name}:{port}"),
            Target::Url { url } => write!(f, "URL {url}"),
        }
    }
}

/// A Target and what the webhook configurations that call it trust.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Called {
    /// Where.
    pub target: Target,
    /// `configuration/webhook` of each webhook calling it.
    pub by: Vec<String>,
    /// Their caBundles (PEM), as set; empty when none is set.
    pub ca_bundles: Vec<Vec<u8>>,
}

/// A Deployment serving the webhook.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DeploymentStatus {
    /// `namespace/name`.
    pub name: String,
    /// `spec.replicas`.
    pub replicas: i32,
    /// `status.readyReplicas`.
    pub ready: i32,
}

/// A certificate audit read.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Certificate {
    /// Where it was read: `caBundle of ...` or `served by ADDRESS`.
    pub source: String,
    /// Its subject.
    pub subject: String,
    /// `notAfter`, seconds since the epoch.
    pub not_after: i64,
}

/// One target and what was found serving it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Served {
    /// Where the apiserver calls.
    pub target: Target,
    /// The Deployments whose pods the Service selects.
    pub deployments: Vec<DeploymentStatus>,
    /// Ready endpoint addresses; `None` when not read (a URL, or unreadable).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready_endpoints: Option<usize>,
    /// The certificates read.
    pub certificates: Vec<Certificate>,
    /// What could not be checked from here, and why (not findings).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// Something that keeps the webhook from answering, with what to do.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ServingIssue {
    /// What it is about, e.g. `Deployment runner-fence/runner-fence`.
    pub object: String,
    /// What is wrong.
    pub problem: String,
    /// What to do.
    pub fix: String,
}

impl std::fmt::Display for ServingIssue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}; {}", self.object, self.problem, self.fix)
    }
}

/// The webhook's serving health.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Serving {
    /// One entry per Service or URL the webhook configurations call.
    pub targets: Vec<Served>,
    /// What keeps the webhook from answering.
    pub issues: Vec<ServingIssue>,
}

/// The date of a Unix timestamp, `YYYY-MM-DD`.
pub(super) fn date(ts: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(ts)
        .map(|t| t.date().to_string())
        .unwrap_or_else(|_| ts.to_string())
}

/// A Deployment that has fewer Ready replicas than it asks for (or none).
pub fn deployment_issue(d: &DeploymentStatus) -> Option<ServingIssue> {
    let problem = if d.replicas == 0 {
        "is scaled to 0 replicas: nothing answers the webhook calls".to_string()
    } else if d.ready < d.replicas {
        format!("has {} of {} replicas Ready", d.ready, d.replicas)
    } else {
        return None;
    };
    let (ns, name) = d.name.split_once('/').unwrap_or(("", &d.name));
    Some(ServingIssue {
        object: format!("Deployment {}", d.name),
        problem,
        fix: format!(
            "kubectl -n {ns} describe deployment {name} (image, scheduling, readiness); while no replica answers, failurePolicy Fail blocks job pod creations and Ignore leaves only the backstop"
        ),
    })
}

/// A certificate expired or expiring within [`EXPIRY_WARNING_DAYS`] of `now`.
pub fn expiry_issue(c: &Certificate, now: i64) -> Option<ServingIssue> {
    let left = c.not_after - now;
    let problem = if left <= 0 {
        format!(
            "the certificate ({}) expired on {}: the apiserver's calls fail",
            c.subject,
            date(c.not_after)
        )
    } else if left < EXPIRY_WARNING_DAYS * 86_400 {
        let days = match left / 86_400 {
            0 => "less than a day".to_string(),
            1 => "1 day".to_string(),
            n => format!("{n} days"),
        };
        format!(
            "the certificate ({}) expires on {} (in {days})",
            c.subject,
            date(c.not_after)
        )
    } else {
        return None;
    };
    Some(ServingIssue {
        object: c.source.clone(),
        problem,
        fix: "renew it (cert-manager renews its own; see certs/README.md for the others) and update caBundle if the CA changes".into(),
    })
}

/// Subject and `notAfter` of a DER certificate.
fn describe(der: &[u8], source: String) -> Option<Certificate> {
    let (_, x) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(Certificate {
        source,
        subject: x.subject().to_string(),
        not_after: x.validity().not_after.timestamp(),
    })
}

/// Records the server's certificate and whether the caBundle trusts it, and
/// lets the handshake finish either way: audit reads, it sends nothing.
#[derive(Debug)]
struct Recorder {
    trusted: Option<Arc<rustls::client::WebPkiServerVerifier>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
    seen: Mutex<Option<Presented>>,
}

impl rustls::client::danger::ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let trust = self.trusted.as_ref().map(|v| {
            v.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
                .map(|_| ())
        });
        if let Ok(mut seen) = self.seen.lock() {
            *seen = Some(Presented {
                der: end_entity.clone().into_owned(),
                trust,
            });
        }
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// What one handshake showed.
#[derive(Debug)]
struct Presented {
    der: CertificateDer<'static>,
    /// `None`: no caBundle to check it against.
    trust: Option<Result<(), rustls::Error>>,
}

/// Connects to `addr`, completes a TLS handshake for `name` and returns the
/// certificate presented, checked against `ca_bundles`.
async fn handshake(addr: &str, name: &str, ca_bundles: &[Vec<u8>]) -> Result<Presented, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for pem in ca_bundles {
        for c in CertificateDer::pem_slice_iter(pem).flatten() {
            let _ = roots.add(c);
        }
    }
    let trusted = if roots.is_empty() {
        None
    } else {
        rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .ok()
    };
    let recorder = Arc::new(Recorder {
        trusted,
        provider: provider.clone(),
        seen: Mutex::new(None),
    });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(recorder.clone())
        .with_no_client_auth();
    let server_name = ServerName::try_from(name.to_string()).map_err(|e| e.to_string())?;
    let connect = async {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(server_name, tcp)
            .await
            .map_err(|e| e.to_string())
    };
    match tokio::time::timeout(PROBE_TIMEOUT, connect).await {
        Err(_) => return Err(format!("no answer within {}s", PROBE_TIMEOUT.as_secs())),
        Ok(Err(e)) => return Err(e),
        Ok(Ok(_stream)) => {}
    }
    let seen = recorder.seen.lock().ok().and_then(|mut s| s.take());
    seen.ok_or_else(|| "the server presented no certificate".to_string())
}

/// Whether a verification error is only the expiry (reported as such).
fn only_expired(e: &rustls::Error) -> bool {
    matches!(
        e,
        rustls::Error::InvalidCertificate(
            rustls::CertificateError::Expired | rustls::CertificateError::ExpiredContext { .. }
        )
    )
}

/// Records the certificate `addr` presented for `name` (the result of
/// [`handshake`]) in `served`, with its issues.
fn record(
    served: &mut Served,
    issues: &mut Vec<ServingIssue>,
    (addr, name): (&str, &str),
    called: &Called,
    now: i64,
    presented: Result<Presented, String>,
) {
    match presented {
        Err(e) => served.notes.push(format!(
            "the serving certificate at {addr} was not read: {e} (pod addresses are often reachable only from inside the cluster: run audit there to check it)"
        )),
        Ok(p) => {
            let Some(cert) = describe(&p.der, format!("{} (served by {addr})", served.target))
            else {
                issues.push(ServingIssue {
                    object: format!("{} (served by {addr})", served.target),
                    problem: "presents a certificate that is not valid X.509".into(),
                    fix: "check the webhook's --tls-cert".into(),
                });
                return;
            };
            if let Some(Err(e)) = &p.trust
                && !only_expired(e)
            {
                issues.push(ServingIssue {
                    object: cert.source.clone(),
                    problem: format!(
                        "the certificate ({}) is not accepted for {name} with the caBundle of {}: {e}: the apiserver's calls fail",
                        cert.subject,
                        called.by.join(", ")
                    ),
                    fix: "set caBundle to the CA that signed the serving certificate, or issue the certificate for the Service's name (runner-fence certs generate --service S --namespace N)".into(),
                });
            }
            issues.extend(expiry_issue(&cert, now));
            served.certificates.push(cert);
        }
    }
}

/// The caBundle certificates of the webhooks calling a target.
fn ca_certificates(called: &Called) -> Vec<Certificate> {
    let mut out = Vec::new();
    let mut seen: Vec<&[u8]> = Vec::new();
    for pem in &called.ca_bundles {
        if seen.contains(&pem.as_slice()) {
            continue;
        }
        seen.push(pem);
        for der in CertificateDer::pem_slice_iter(pem).flatten() {
            out.extend(describe(
                der.as_ref(),
                format!("caBundle of {}", called.by.join(", ")),
            ));
        }
    }
    out
}

fn unreadable(
    e: &kube::Error,
    what: String,
    verb: &'static str,
    resource: &'static str,
) -> Unreadable {
    let a = ApiError::new(e, Call::Read(verb, resource));
    Unreadable {
        what,
        code: a.code,
        reason: a.message,
        check: Check::Serving,
        pod: None,
        verb,
    }
}

/// `host:port` of an `https://` URL, and the host (the name its certificate must carry).
fn url_address(url: &str) -> Option<(String, String)> {
    let rest = url.strip_prefix("https://")?;
    let authority = rest.split(['/', '?']).next()?;
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => {
            let (h, after) = v6.split_once(']')?;
            (
                h.to_string(),
                after.strip_prefix(':').unwrap_or("443").to_string(),
            )
        }
        None => match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p.to_string()),
            None => (authority.to_string(), "443".to_string()),
        },
    };
    let addr = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    Some((addr, host))
}

/// Checks every target: Service, Deployment, endpoints and certificates.
pub(super) async fn check(
    client: &Client,
    called: &[Called],
    now: i64,
) -> (Serving, Vec<Unreadable>) {
    let mut out = Serving::default();
    let mut unread = Vec::new();
    for c in called {
        let mut served = Served {
            target: c.target.clone(),
            deployments: Vec::new(),
            ready_endpoints: None,
            certificates: ca_certificates(c),
            notes: Vec::new(),
        };
        for cert in &served.certificates {
            out.issues.extend(expiry_issue(cert, now));
        }
        match &c.target {
            Target::Url { url } => {
                served.notes.push(
                    "called by URL: its Deployment and endpoints are not checked (pass --webhook-namespace and --webhook-service to check them)".into(),
                );
                match url_address(url) {
                    Some((addr, host)) => {
                        let presented = handshake(&addr, &host, &c.ca_bundles).await;
                        record(
                            &mut served,
                            &mut out.issues,
                            (&addr, &host),
                            c,
                            now,
                            presented,
                        )
                    }
                    None => served.notes.push(format!("{url} is not an https:// URL")),
                }
            }
            Target::Service {
                namespace,
                name,
                port,
            } => {
                service(
                    client,
                    &mut served,
                    &mut out.issues,
                    &mut unread,
                    c,
                    (namespace, name, *port),
                    now,
                )
                .await
            }
        }
        out.targets.push(served);
    }
    (out, unread)
}

/// The Service, the Deployments it selects, its ready endpoints and their certificates.
async fn service(
    client: &Client,
    served: &mut Served,
    issues: &mut Vec<ServingIssue>,
    unread: &mut Vec<Unreadable>,
    called: &Called,
    (namespace, name, port): (&str, &str, i32),
    now: i64,
) {
    let object = format!("Service {namespace}/{name}");
    let svc = match Api::<Service>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await
    {
        Err(e) => {
            unread.push(unreadable(
                &e,
                format!("service {namespace}/{name}"),
                "get",
                "services",
            ));
            return;
        }
        Ok(None) => {
            issues.push(ServingIssue {
                object,
                problem: format!(
                    "does not exist, but {} call it: every call fails",
                    called.by.join(", ")
                ),
                fix: "install runner-fence's Service (chart or manifests), or regenerate the webhook configurations for the Service it has (render webhooks --service --namespace)".into(),
            });
            return;
        }
        Ok(Some(s)) => s,
    };
    let spec = svc.spec.unwrap_or_default();
    let selector = spec.selector.unwrap_or_default();
    let selector_text = selector
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    if selector.is_empty() {
        served.notes.push(format!(
            "{object} has no selector: its Deployment is not known"
        ));
    } else {
        match Api::<Deployment>::namespaced(client.clone(), namespace)
            .list(&ListParams::default())
            .await
        {
            Err(e) => unread.push(unreadable(
                &e,
                format!("deployments.apps in {namespace}"),
                "list",
                "deployments.apps",
            )),
            Ok(list) => {
                for d in list.items {
                    let labels = d
                        .spec
                        .as_ref()
                        .and_then(|s| s.template.metadata.as_ref())
                        .and_then(|m| m.labels.clone())
                        .unwrap_or_default();
                    if !selector.iter().all(|(k, v)| labels.get(k) == Some(v)) {
                        continue;
                    }
                    let status = DeploymentStatus {
                        name: format!("{namespace}/{}", d.metadata.name.unwrap_or_default()),
                        replicas: d.spec.and_then(|s| s.replicas).unwrap_or(1),
                        ready: d.status.and_then(|s| s.ready_replicas).unwrap_or(0),
                    };
                    issues.extend(deployment_issue(&status));
                    served.deployments.push(status);
                }
                if served.deployments.is_empty() {
                    issues.push(ServingIssue {
                        object: object.clone(),
                        problem: format!(
                            "no Deployment in {namespace} runs the pods it selects ({selector_text})"
                        ),
                        fix: "install runner-fence's Deployment, or fix the Service's selector"
                            .into(),
                    });
                }
            }
        }
    }
    // Which port of the endpoints the Service port forwards to.
    let port_name = spec
        .ports
        .iter()
        .flatten()
        .find(|p| p.port == port)
        .map(|p| p.name.clone().unwrap_or_default());
    let slices = match Api::<EndpointSlice>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().labels(&format!("kubernetes.io/service-name={name}")))
        .await
    {
        Err(e) => {
            unread.push(unreadable(
                &e,
                format!("endpointslices.discovery.k8s.io in {namespace}"),
                "list",
                "endpointslices.discovery.k8s.io",
            ));
            return;
        }
        Ok(l) => l.items,
    };
    let mut ready: Vec<String> = Vec::new();
    for s in &slices {
        let target_port = s
            .ports
            .iter()
            .flatten()
            .find(|p| {
                port_name
                    .as_deref()
                    .is_none_or(|n| p.name.clone().unwrap_or_default() == n)
            })
            .and_then(|p| p.port);
        for e in &s.endpoints {
            // Unset means ready (EndpointConditions).
            if e.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
                continue;
            }
            for a in &e.addresses {
                ready.push(match (target_port, a.contains(':')) {
                    (Some(p), true) => format!("[{a}]:{p}"),
                    (Some(p), false) => format!("{a}:{p}"),
                    (None, _) => a.clone(),
                });
            }
        }
    }
    ready.sort();
    ready.dedup();
    served.ready_endpoints = Some(ready.len());
    if ready.is_empty() {
        issues.push(ServingIssue {
            object,
            problem: "has no ready endpoints: the apiserver cannot reach the webhook".into(),
            fix: format!(
                "kubectl -n {namespace} get pods -l {selector_text} (the webhook's pods are not Ready: see their readiness probe on /readyz)"
            ),
        });
        return;
    }
    // The name the apiserver checks the certificate for. All at once, so that
    // addresses unreachable from here cost one timeout, not one each.
    let sni = format!("{name}.{namespace}.svc");
    let addrs: Vec<&String> = ready
        .iter()
        .filter(|a| a.contains(':'))
        .take(PROBED_ENDPOINTS)
        .collect();
    let presented =
        futures::future::join_all(addrs.iter().map(|a| handshake(a, &sni, &called.ca_bundles)))
            .await;
    for (addr, p) in addrs.into_iter().zip(presented) {
        record(served, issues, (addr, &sni), called, now, p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400;

    #[test]
    fn replicas_that_are_not_ready_are_issues() {
        let d = |replicas, ready| DeploymentStatus {
            name: "runner-fence/runner-fence".into(),
            replicas,
            ready,
        };
        assert_eq!(deployment_issue(&d(2, 2)), None);
        assert_eq!(
            deployment_issue(&d(2, 0)).map(|i| i.to_string()),
            Some("Deployment runner-fence/runner-fence: has 0 of 2 replicas Ready; kubectl -n runner-fence describe deployment runner-fence (image, scheduling, readiness); while no replica answers, failurePolicy Fail blocks job pod creations and Ignore leaves only the backstop".into())
        );
        assert!(
            deployment_issue(&d(0, 0))
                .is_some_and(|i| i.problem.starts_with("is scaled to 0 replicas"))
        );
    }

    #[test]
    fn certificates_expiring_soon_or_expired_are_issues() {
        let now = 1_800_000_000;
        let c = |left: i64| Certificate {
            source: "caBundle of runner-fence/pods.validate.runner-fence.dev".into(),
            subject: "CN=runner-fence CA".into(),
            not_after: now + left,
        };
        assert_eq!(expiry_issue(&c(EXPIRY_WARNING_DAYS * DAY), now), None);
        let soon = expiry_issue(&c(3 * DAY + 5), now).expect("soon");
        assert_eq!(
            soon.problem,
            "the certificate (CN=runner-fence CA) expires on 2027-01-18 (in 3 days)"
        );
        assert!(expiry_issue(&c(DAY + 1), now).is_some_and(|i| i.problem.ends_with("(in 1 day)")));
        assert!(
            expiry_issue(&c(60), now).is_some_and(|i| i.problem.ends_with("(in less than a day)"))
        );
        let gone = expiry_issue(&c(-DAY), now).expect("expired");
        assert!(gone.problem.contains("expired on 2027-01-14"), "{gone}");
    }

    #[test]
    fn url_addresses() {
        assert_eq!(
            url_address("https://127.0.0.1:18443/validate"),
            Some(("127.0.0.1:18443".into(), "127.0.0.1".into()))
        );
        assert_eq!(
            url_address("https://webhook.example.com/mutate"),
            Some((
                "webhook.example.com:443".into(),
                "webhook.example.com".into()
            ))
        );
        assert_eq!(
            url_address("https://[::1]:8443/x"),
            Some(("[::1]:8443".into(), "::1".into()))
        );
        assert_eq!(url_address("http://x"), None);
    }
}
