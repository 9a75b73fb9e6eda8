//! `runner-fence serve`: the webhook (SPEC §8).
//!
//! One TLS listener for `/mutate` and `/validate`, one plain admin listener,
//! a poller that reloads policy and certificate files, and a drain on SIGTERM.

pub mod admission;
pub mod certs;
mod error;
pub mod eval;
pub mod metrics;
pub mod routes;
pub mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use base64::Engine as _;
use clap::{Args, ValueEnum};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::core::nodes::NodeSnapshot;
use crate::core::policy::{self, Policy};
use crate::core::report::Report;
use crate::k8s::cache::NodeSink;
use metrics::Metrics;
use tls::{CertFiles, Resolver};

pub use error::Error;

type Result<T, E = Error> = std::result::Result<T, E>;

/// Log formats.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Plain,
    /// One JSON object per line.
    Json,
}

/// Flags of `serve`; each also reads a `RUNNER_FENCE_*` variable.
#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Policy file (default: the embedded reference policy). Reloaded when it changes.
    #[arg(long, env = "RUNNER_FENCE_POLICY")]
    pub policy: Option<PathBuf>,
    /// Serving certificate (PEM). Without it a self-signed one is generated.
    #[arg(long, env = "RUNNER_FENCE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Serving key (PEM).
    #[arg(long, env = "RUNNER_FENCE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Require client certificates signed by this CA (apiserver → webhook authentication).
    #[arg(long, env = "RUNNER_FENCE_CLIENT_CA")]
    pub client_ca: Option<PathBuf>,
    /// Where to write the generated CA bundle (only without --tls-cert).
    #[arg(long, env = "RUNNER_FENCE_CA_OUT")]
    pub ca_out: Option<PathBuf>,
    /// Webhook address.
    #[arg(long, env = "RUNNER_FENCE_ADDR", default_value = "127.0.0.1:8443")]
    pub addr: SocketAddr,
    /// Admin address (/healthz, /readyz, /metrics).
    #[arg(
        long,
        env = "RUNNER_FENCE_ADMIN_ADDR",
        default_value = "127.0.0.1:8080"
    )]
    pub admin_addr: SocketAddr,
    /// Watch Nodes (kubeconfig or in-cluster) for name- and live-based protection.
    #[arg(long, env = "RUNNER_FENCE_NODE_CACHE")]
    pub node_cache: bool,
    /// A static node list instead of the watch (offline testing and benchmarks).
    #[arg(long, env = "RUNNER_FENCE_NODES_FILE", conflicts_with = "node_cache")]
    pub nodes_file: Option<PathBuf>,
    /// After SIGTERM: how long to keep accepting while `/readyz` already says 503, so
    /// the apiserver stops sending before the listener closes (at least one readiness
    /// period plus endpoint propagation; the manifests add a preStop sleep).
    #[arg(
        long,
        env = "RUNNER_FENCE_SHUTDOWN_DELAY_SECONDS",
        default_value_t = 10
    )]
    pub shutdown_delay_seconds: u64,
    /// Then: how long to wait for in-flight reviews once the listener is closed.
    #[arg(long, env = "RUNNER_FENCE_DRAIN_SECONDS", default_value_t = 10)]
    pub drain_seconds: u64,
    /// How long a client may take to send a request body, in milliseconds.
    #[arg(long, env = "RUNNER_FENCE_BODY_TIMEOUT_MS", default_value_t = 5000)]
    pub body_timeout_ms: u64,
    /// How often policy and certificate files are checked for changes, in milliseconds.
    #[arg(long, env = "RUNNER_FENCE_RELOAD_INTERVAL_MS", default_value_t = 2000)]
    pub reload_interval_ms: u64,
    /// Reviews processed at once, across /mutate and /validate; more wait.
    #[arg(long, env = "RUNNER_FENCE_MAX_CONCURRENCY", default_value_t = 512)]
    pub max_concurrency: usize,
    /// Log format.
    #[arg(
        long,
        env = "RUNNER_FENCE_LOG_FORMAT",
        value_enum,
        default_value = "plain"
    )]
    pub log_format: LogFormat,
}

/// Shared state of a running server.
pub struct State {
    /// The active policy.
    pub policy: ArcSwap<Policy>,
    /// The node cache's latest snapshot (None when disabled or not synced yet).
    pub nodes: ArcSwapOption<NodeSnapshot>,
    /// Metrics.
    pub metrics: Metrics,
    node_cache_enabled: bool,
    nodes_synced: AtomicBool,
    shutting_down: AtomicBool,
}

impl State {
    /// State serving `policy`.
    pub fn new(policy: Policy, node_cache_enabled: bool) -> Self {
        let metrics = Metrics::new();
        metrics.set_policy(&policy.metadata.name, &policy.content_hash());
        State {
            policy: ArcSwap::from_pointee(policy),
            nodes: ArcSwapOption::empty(),
            metrics,
            node_cache_enabled,
            nodes_synced: AtomicBool::new(false),
            shutting_down: AtomicBool::new(false),
        }
    }

    /// Why `/readyz` fails; empty when ready.
    pub fn not_ready_reasons(&self) -> Vec<&'static str> {
        let mut r = Vec::new();
        if self.shutting_down.load(Ordering::SeqCst) {
            r.push("shutting down");
        }
        if self.node_cache_enabled && !self.nodes_synced.load(Ordering::SeqCst) {
            r.push("node cache not synced");
        }
        r
    }

    /// Publishes a node snapshot; the first one makes the server ready.
    pub fn set_nodes(&self, snapshot: NodeSnapshot) {
        self.metrics.nodes.set(snapshot.len() as i64);
        self.nodes.store(Some(Arc::new(snapshot)));
        self.nodes_synced.store(true, Ordering::SeqCst);
    }

    /// Starts the drain: `/readyz` turns 503.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }
}

impl NodeSink for State {
    fn publish(&self, snapshot: NodeSnapshot) {
        self.set_nodes(snapshot);
    }

    fn watch_up(&self, up: bool) {
        self.metrics.node_watch_up.set(i64::from(up));
    }
}

/// Sets up `tracing` in the chosen format (RUST_LOG filters, default info).
pub(crate) fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Plain => builder.try_init(),
    };
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

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
        let policy = policy::load(args.policy.as_deref())?;
        let state = Arc::new(State::new(policy, args.node_cache));
        if let Some(path) = &args.nodes_file {
            state.set_nodes(crate::core::nodes::read_file(path)?);
        }
        let (key, expiry, generated_ca) = match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => {
                let (k, e) = tls::load(&CertFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                })?;
                (k, e, None)
            }
            _ => {
                let mut names: Vec<String> =
                    vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
                // Also the address it listens on, so a non-loopback test setup verifies.
                let ip = args.addr.ip();
                if !ip.is_unspecified() && !names.contains(&ip.to_string()) {
                    names.push(ip.to_string());
                }
                let g = certs::generate(&names, 365)?;
                let (k, e) = tls::certified_key(
                    g.cert_pem.as_bytes(),
                    g.key_pem.as_bytes(),
                    std::path::Path::new("<generated certificate>"),
                    std::path::Path::new("<generated key>"),
                )?;
                (k, e, Some(g.ca_pem))
            }
        };
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

    /// Serves until `shutdown` resolves, then drains in-flight reviews.
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
        let reloader = tokio::spawn(reload_loop(
            state.clone(),
            resolver,
            args.clone(),
            stop_rx.clone(),
        ));
        let node_task = if args.node_cache {
            Some(tokio::spawn(crate::k8s::cache::run(
                state.clone(),
                stop_rx.clone(),
            )))
        } else {
            None
        };
        let admin = {
            let mut stop = stop_rx.clone();
            let app = routes::admin_router(state.clone());
            tokio::spawn(async move {
                let _ = axum::serve(admin_listener, app)
                    .with_graceful_shutdown(async move {
                        let _ = stop.wait_for(|s| *s).await;
                    })
                    .await;
            })
        };
        let app = routes::admission_service(
            state.clone(),
            args.max_concurrency,
            Duration::from_millis(args.body_timeout_ms.max(1)),
        );
        // Every connection is tracked from the moment it is accepted, so the
        // drain also waits for ones still in their TLS handshake.
        let tracker = tokio_util::task::TaskTracker::new();
        let (drain_tx, drain_rx) = watch::channel(false);
        let accept = |stream| {
            let acceptor = acceptor.clone();
            let svc = TowerToHyperService::new(app.clone());
            tracker.spawn(serve_connection(stream, acceptor, svc, drain_rx.clone()));
        };
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
                    // Not ready first; keep accepting until the apiserver has stopped
                    // sending (it still holds this endpoint for up to a readiness
                    // period), then close.
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
        drop(listener);
        let _ = drain_tx.send(true);
        tracker.close();
        let drained =
            tokio::time::timeout(Duration::from_secs(args.drain_seconds), tracker.wait()).await;
        if drained.is_err() {
            tracing::warn!("drain time exceeded; closing remaining connections");
        }
        let _ = stop_tx.send(true);
        let _ = admin.await;
        reloader.abort();
        if let Some(t) = node_task {
            t.abort();
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// Exponential backoff on accept errors (e.g. file descriptors exhausted), so a
/// persistent error is logged and waited out instead of spinning a core.
#[derive(Default)]
struct AcceptBackoff {
    current: Option<Duration>,
}

impl AcceptBackoff {
    const FIRST: Duration = Duration::from_millis(5);
    const MAX: Duration = Duration::from_secs(1);

    fn reset(&mut self) {
        self.current = None;
    }

    fn next(&mut self) -> Duration {
        let d = self.current.map_or(Self::FIRST, |d| (d * 2).min(Self::MAX));
        self.current = Some(d);
        d
    }

    async fn wait(&mut self, e: &std::io::Error) {
        let d = self.next();
        tracing::warn!(error = %e, backoff_ms = d.as_millis() as u64, "accept failed; backing off");
        tokio::time::sleep(d).await;
    }
}

/// How long a connection may still bring its first request once the drain started:
/// a client whose connection was accepted just before SIGTERM is answered, not reset.
const DRAIN_GRACE: Duration = Duration::from_millis(500);

type AdmissionService = TowerToHyperService<axum::Router>;

/// The HTTP/1.1 + HTTP/2 connection settings, shared with the benchmark's
/// no-op baseline so both are measured with the same setup.
pub fn http_builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Duration::from_secs(30));
    builder
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    acceptor: TlsAcceptor,
    svc: AdmissionService,
    mut drain: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    // A client that never finishes its handshake must not hold a task forever.
    let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => return,
    };
    let builder = http_builder();
    let conn = builder.serve_connection(TokioIo::new(tls), svc);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => return,
        _ = drain.wait_for(|d| *d) => {}
    }
    tokio::select! {
        _ = conn.as_mut() => return,
        _ = tokio::time::sleep(DRAIN_GRACE) => {}
    }
    // Finish what is in flight, accept nothing more on this connection.
    conn.as_mut().graceful_shutdown();
    let _ = conn.await;
}

/// Re-reads policy and certificate files when their content changes. Polling
/// (rather than inotify) also sees Kubernetes' atomic `..data` symlink swap.
async fn reload_loop(
    state: Arc<State>,
    resolver: Arc<Resolver>,
    args: ServeArgs,
    mut stop: watch::Receiver<bool>,
) {
    let interval = Duration::from_millis(args.reload_interval_ms.max(50));
    let cert_files = match (&args.tls_cert, &args.tls_key) {
        (Some(c), Some(k)) => Some(CertFiles {
            cert: c.clone(),
            key: k.clone(),
        }),
        _ => None,
    };
    let mut policy_seen = match &args.policy {
        Some(p) => file_digest(vec![p.clone()]).await,
        None => None,
    };
    let cert_paths = cert_files
        .as_ref()
        .map(|f| vec![f.cert.clone(), f.key.clone()]);
    let mut cert_seen = match &cert_paths {
        Some(p) => file_digest(p.clone()).await,
        None => None,
    };
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        if let Some(path) = &args.policy
            && let Some(d) = file_digest(vec![path.clone()]).await
            && policy_seen != Some(d)
        {
            policy_seen = Some(d);
            // The same loader as start-up (size cap, errors with file:line:column),
            // off the async runtime: file reads block.
            let p = path.clone();
            let loaded = tokio::task::spawn_blocking(move || policy::load_file(&p))
                .await
                .map_err(Error::Task)
                .and_then(|r| r.map_err(Error::Policy));
            match loaded {
                Ok(p) => {
                    let hash = p.content_hash();
                    state.metrics.set_policy(&p.metadata.name, &hash);
                    state.policy.store(Arc::new(p));
                    state.metrics.reload("policy", true);
                    tracing::info!(policy = %path.display(), hash, "policy reloaded");
                }
                Err(e) => {
                    state.metrics.reload("policy", false);
                    tracing::error!(error = %Report(&e), "policy reload failed; keeping the previous policy");
                }
            }
        }
        if let (Some(files), Some(paths)) = (&cert_files, &cert_paths)
            && let Some(d) = file_digest(paths.clone()).await
            && cert_seen != Some(d)
        {
            cert_seen = Some(d);
            let f = files.clone();
            let loaded = tokio::task::spawn_blocking(move || tls::load(&f))
                .await
                .map_err(Error::Task)
                .and_then(|r| r);
            match loaded {
                Ok((key, expiry)) => {
                    resolver.swap(key);
                    if let Some(e) = expiry {
                        state.metrics.cert_expiry.set(e);
                    }
                    state.metrics.reload("certificate", true);
                    tracing::info!(cert = %files.cert.display(), "certificate reloaded");
                }
                Err(e) => {
                    state.metrics.reload("certificate", false);
                    tracing::error!(error = %Report(&e), "certificate reload failed; keeping the previous certificate");
                }
            }
        }
    }
}

/// The digest of the files' contents together, read off the runtime; None when
/// one cannot be read (a symlink swap in progress: try again next time).
async fn file_digest(paths: Vec<PathBuf>) -> Option<[u8; 32]> {
    tokio::task::spawn_blocking(move || {
        let mut all = Vec::new();
        for p in &paths {
            all.extend(std::fs::read(p).ok()?);
        }
        Some(digest(&all))
    })
    .await
    .ok()
    .flatten()
}

/// Waits for SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {},
                    _ = tokio::signal::ctrl_c() => {},
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// `runner-fence serve`.
pub fn serve(args: ServeArgs) -> Result<()> {
    init_logging(args.log_format);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(Error::Runtime)?;
    rt.block_on(async move {
        let ca_out = args.ca_out.clone();
        let server = Server::bind(args).await?;
        if let Some(ca) = &server.generated_ca {
            let path = ca_out.unwrap_or_else(|| std::env::temp_dir().join("runner-fence-ca.crt"));
            std::fs::write(&path, ca).map_err(|source| Error::Write {
                path: path.clone(),
                source,
            })?;
            println!("runner-fence: serving a generated self-signed certificate for localhost, 127.0.0.1 and ::1");
            println!("runner-fence: CA certificate written to {}", path.display());
            println!(
                "runner-fence: caBundle: {}",
                base64::engine::general_purpose::STANDARD.encode(ca)
            );
        }
        println!(
            "runner-fence: webhook on https://{} (/mutate, /validate), admin on http://{} (/healthz, /readyz, /metrics)",
            server.addr, server.admin_addr
        );
        tracing::info!(addr = %server.addr, admin = %server.admin_addr, "serving");
        server.run(shutdown_signal()).await
    })
}
