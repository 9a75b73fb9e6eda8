//! The flags of `serve`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, ValueEnum};

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
