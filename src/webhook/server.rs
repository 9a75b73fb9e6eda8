//! The server: bind (policy, certificate, listeners), then accept until the
//! shutdown signal and its delay, then drain.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::service::TowerToHyperService;
use rustls::sign::CertifiedKey;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_util::task::TaskTracker;

use super::connection::{AcceptBackoff, serve_connection};
use super::reload::reload_loop;
use super::tls::{self, CertFiles, Resolver};
use super::{Error, ServeArgs, State, certs, routes};
use crate::core::policy;

type Result<T, E = Error> = std::result::Result<T, E>;

/// A server that is bound and ready to run.
pub struct Server {
    /// Shared state (for tests and the node cache).
    pub state: Arc<State>,
    /// Where the webhook listens.
    pub addr: SocketAddr,
    /// Where the admin server listens.
    pub admin_addr: SocketAddr,
    /// The CA that signed a generated certificate, PEM (None with --tls-cert).
    pub generated_ca: Option<String>,
    listener: TcpListener,
    admin_listener: TcpListener,
    acceptor: TlsAcceptor,
    resolver: Arc<Resolver>,
    args: ServeArgs,
}

impl Server {
    /// Loads policy and certificate and binds both listeners.
    pub async fn bind(args: ServeArgs) -> Result<Server> {
        let state = if args.policies_from_cluster {
            let mut s = State::from_cluster(args.node_cache);
            if args.cluster.manage_certificates {
                s.await_certificate();
            }
            Arc::new(s)
        } else {
            Arc::new(State::new(
                policy::load(args.policy.as_deref())?,
                args.node_cache,
            ))
        };
        if let Some(path) = &args.nodes_file {
            state.set_nodes(crate::core::nodes::read_file(path)?);
        }
        if !args.node_cache && args.nodes_file.is_none() {
            state.set_node_reader(node_reader(&args.access).await);
        }
        let (key, expiry, generated_ca) = serving_certificate(&args)?;
        if let Some(e) = expiry {
            state.metrics.cert_expiry.set(e);
        }
        let resolver = Arc::new(Resolver::new(key));
        let config = tls::server_config(resolver.clone(), args.client_ca.as_deref())?;
        let bind = |addr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| Error::Listen { addr, source })
        };
        let listener = bind(args.addr).await?;
        let admin_listener = bind(args.admin_addr).await?;
        Ok(Server {
            addr: listener.local_addr().map_err(Error::LocalAddr)?,
            admin_addr: admin_listener.local_addr().map_err(Error::LocalAddr)?,
            state,
            generated_ca,
            listener,
            admin_listener,
            acceptor: TlsAcceptor::from(Arc::new(config)),
            resolver,
            args,
        })
    }

    /// Serves until `shutdown` resolves (and the shutdown delay after it has
    /// passed), then drains in-flight reviews.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()> + Send) -> Result<()> {
        let Server {
            state,
            listener,
            admin_listener,
            acceptor,
            resolver,
            args,
            ..
        } = self;
        let (stop_tx, stop_rx) = watch::channel(false);
        let background = Background::spawn(&state, resolver, admin_listener, &args, &stop_rx);
        // Every connection is tracked from the moment it is accepted, so the
        // drain also waits for ones still in their TLS handshake.
        let tracker = TaskTracker::new();
        let (drain_tx, drain_rx) = watch::channel(false);
        let app = routes::admission_service(
            state.clone(),
            args.max_concurrency,
            Duration::from_millis(args.body_timeout_ms.max(1)),
        );
        let accept = |stream| {
            let svc = TowerToHyperService::new(app.clone());
            tracker.spawn(serve_connection(
                stream,
                acceptor.clone(),
                svc,
                drain_rx.clone(),
            ));
        };
        accept_until_closed(listener, accept, shutdown, &state, &args).await;
        let _ = drain_tx.send(true);
        drain(&tracker, Duration::from_secs(args.drain_seconds)).await;
        let _ = stop_tx.send(true);
        background.stop().await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// The serving certificate: `--tls-cert`/`--tls-key`, or a self-signed one
/// generated now. Returns the key, its expiry and the generated CA (PEM).
fn serving_certificate(args: &ServeArgs) -> Result<(CertifiedKey, Option<i64>, Option<String>)> {
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        let (k, e) = tls::load(&CertFiles {
            cert: cert.clone(),
            key: key.clone(),
        })?;
        return Ok((k, e, None));
    }
    let mut names: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
    // Also the address it listens on, so a non-loopback test setup verifies.
    let ip = args.addr.ip();
    if !ip.is_unspecified() && !names.contains(&ip.to_string()) {
        names.push(ip.to_string());
    }
    let g = certs::generate(&names, 365)?;
    let (k, e) = tls::certified_key(
        g.cert_pem.as_bytes(),
        g.key_pem.as_bytes(),
        Path::new("<generated certificate>"),
        Path::new("<generated key>"),
    )?;
    // With --manage-certificates this only bridges until the Secret's pair is read
    // (the server is not ready before), so its CA is of no use to anyone.
    let managed = args.policies_from_cluster && args.cluster.manage_certificates;
    Ok((k, e, (!managed).then_some(g.ca_pem)))
}

/// The TLS side of `--manage-certificates`: issues pairs for the controller and
/// serves the Secret's pair.
struct ManagedTls {
    state: Arc<State>,
    resolver: Arc<Resolver>,
}

impl crate::k8s::controller::certs::Certificates for ManagedTls {
    fn issue(
        &self,
        names: &[String],
        days: u32,
    ) -> std::result::Result<crate::k8s::controller::certs::Issued, String> {
        let g = certs::generate(names, days)
            .map_err(|e| crate::core::report::Report(&e).to_string())?;
        Ok(crate::k8s::controller::certs::Issued {
            ca_pem: g.ca_pem,
            cert_pem: g.cert_pem,
            key_pem: g.key_pem,
        })
    }

    fn not_after(&self, pem: &[u8]) -> Vec<i64> {
        certs::parse_chain(pem, Path::new("<bundle>"))
            .map(|chain| chain.iter().filter_map(certs::not_after).collect())
            .unwrap_or_default()
    }

    fn serve(&self, cert_pem: &[u8], key_pem: &[u8]) -> std::result::Result<(), String> {
        let (key, expiry) = tls::certified_key(
            cert_pem,
            key_pem,
            Path::new("<Secret tls.crt>"),
            Path::new("<Secret tls.key>"),
        )
        .map_err(|e| crate::core::report::Report(&e).to_string())?;
        self.resolver.swap(key);
        if let Some(e) = expiry {
            self.state.metrics.cert_expiry.set(e);
        }
        self.state.metrics.reload("certificate", true);
        self.state.certificate_loaded();
        tracing::info!("serving the certificate from its Secret");
        Ok(())
    }
}

/// Without the node cache, nodes that bindings and ephemeral containers name
/// are read on demand; with no cluster access at all they count as protected.
async fn node_reader(access: &crate::k8s::Access) -> Option<crate::k8s::nodes::NodeReader> {
    match crate::k8s::nodes::NodeReader::from_access(access).await {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::warn!(
                error = %crate::core::report::Report(&e),
                "no Kubernetes client (kubeconfig or in-cluster) and no node cache: bindings and ephemeral containers in runner namespaces will be denied unless their node is read (fail closed)"
            );
            None
        }
    }
}

/// The tasks beside the accept loop: the admin server, the reloader and the
/// node cache; they stop when the stop channel turns true.
struct Background {
    admin: JoinHandle<()>,
    reloader: JoinHandle<()>,
    node_cache: Option<JoinHandle<()>>,
    controller: Option<JoinHandle<()>>,
    audit: Option<JoinHandle<()>>,
}

impl Background {
    fn spawn(
        state: &Arc<State>,
        resolver: Arc<Resolver>,
        admin_listener: TcpListener,
        args: &ServeArgs,
        stop: &watch::Receiver<bool>,
    ) -> Self {
        let reloader = tokio::spawn(reload_loop(
            state.clone(),
            resolver.clone(),
            args.clone(),
            stop.clone(),
        ));
        let node_cache = args.node_cache.then(|| {
            tokio::spawn(crate::k8s::cache::run(
                args.access.clone(),
                state.clone(),
                stop.clone(),
            ))
        });
        let controller = args.policies_from_cluster.then(|| {
            let tls: Option<Arc<dyn crate::k8s::controller::certs::Certificates>> =
                args.cluster.manage_certificates.then(|| {
                    Arc::new(ManagedTls {
                        state: state.clone(),
                        resolver: resolver.clone(),
                    }) as Arc<dyn crate::k8s::controller::certs::Certificates>
                });
            tokio::spawn(crate::k8s::controller::run(
                args.access.clone(),
                state.clone(),
                args.cluster.config(),
                tls,
                stop.clone(),
            ))
        });
        let cluster = args.policies_from_cluster.then_some(&args.cluster);
        state
            .metrics
            .audit
            .interval
            .set(i64::try_from(args.audit.interval_seconds(cluster.is_some())).unwrap_or(0));
        let audit = args.audit.config(cluster).map(|cfg| {
            let state = state.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let client = match kube::Client::try_default().await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::error!(error = %e, "continuous audit: no Kubernetes client (kubeconfig or in-cluster); not auditing");
                        return;
                    }
                };
                let leader = state.leadership();
                crate::k8s::audit::continuous::run(client, cfg, state, leader, stop).await;
            })
        });
        let admin = {
            let mut stop = stop.clone();
            let app = routes::admin_router(state.clone());
            tokio::spawn(async move {
                let _ = axum::serve(admin_listener, app)
                    .with_graceful_shutdown(async move {
                        let _ = stop.wait_for(|s| *s).await;
                    })
                    .await;
            })
        };
        Background {
            admin,
            reloader,
            node_cache,
            controller,
            audit,
        }
    }

    /// Waits for the admin server to finish and stops the rest.
    async fn stop(self) {
        let _ = self.admin.await;
        self.reloader.abort();
        if let Some(t) = self.node_cache {
            t.abort();
        }
        // A pass under way is abandoned: nothing of it is needed to stop.
        if let Some(t) = self.audit {
            t.abort();
        }
        // The controller ends on the stop signal (releasing its Lease); bounded.
        if let Some(t) = self.controller {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(3), t).await;
        }
    }
}

/// Accepts connections until `shutdown` resolves and, after it, the shutdown
/// delay has passed: readiness turns 503 at once, but the apiserver still holds
/// this endpoint for up to a readiness period, so the listener stays open.
async fn accept_until_closed(
    listener: TcpListener,
    mut accept: impl FnMut(TcpStream),
    shutdown: impl std::future::Future<Output = ()>,
    state: &State,
    args: &ServeArgs,
) {
    let mut backoff = AcceptBackoff::default();
    tokio::pin!(shutdown);
    // Set by the shutdown signal: until then, and during the delay after it, accept.
    let close_at = tokio::time::sleep(Duration::MAX);
    tokio::pin!(close_at);
    let mut shutting_down = false;
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => { backoff.reset(); accept(stream) }
                Err(e) => backoff.wait(&e).await,
            },
            _ = &mut shutdown, if !shutting_down => {
                shutting_down = true;
                state.begin_shutdown();
                tracing::info!(
                    delay_seconds = args.shutdown_delay_seconds,
                    drain_seconds = args.drain_seconds,
                    "shutting down: not ready; still accepting during the delay, then draining"
                );
                close_at.as_mut().reset(
                    tokio::time::Instant::now() + Duration::from_secs(args.shutdown_delay_seconds),
                );
            }
            _ = &mut close_at, if shutting_down => break,
        }
    }
}

/// Waits up to `within` for the tracked connections to finish what is in flight.
async fn drain(tracker: &TaskTracker, within: Duration) {
    tracker.close();
    if tokio::time::timeout(within, tracker.wait()).await.is_err() {
        tracing::warn!("drain time exceeded; closing remaining connections");
    }
}
