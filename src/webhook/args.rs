//! The flags of `serve`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, ValueEnum};

use crate::core::render::webhooks::FailurePolicy;

/// Log formats.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Plain,
    /// One JSON object per line.
    Json,
}

/// `failurePolicy` of a generated webhook.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FailurePolicyArg {
    /// The request fails when the webhook cannot be reached.
    Fail,
    /// The request goes on without the webhook.
    Ignore,
}

impl From<FailurePolicyArg> for FailurePolicy {
    fn from(a: FailurePolicyArg) -> Self {
        match a {
            FailurePolicyArg::Fail => Self::Fail,
            FailurePolicyArg::Ignore => Self::Ignore,
        }
    }
}

/// Flags of `serve`; each also reads a `RUNNER_FENCE_*` variable.
#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Policy file (default: the embedded reference policy). Reloaded when it changes.
    #[arg(
        long,
        env = "RUNNER_FENCE_POLICY",
        conflicts_with = "policies_from_cluster"
    )]
    pub policy: Option<PathBuf>,
    /// Serve the cluster's RunnerFencePolicy objects instead of a file, and (the
    /// replica holding the Lease) write their status and apply the webhook
    /// configurations and backstop generated from them.
    #[arg(long, env = "RUNNER_FENCE_POLICIES_FROM_CLUSTER")]
    pub policies_from_cluster: bool,
    /// The cluster the node cache, on-demand node reads and the policy controller use.
    #[command(flatten)]
    pub access: crate::k8s::Access,
    #[command(flatten)]
    pub cluster: ClusterArgs,
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

/// Flags of the policy controller (`--policies-from-cluster`).
#[derive(Args, Debug, Clone)]
pub struct ClusterArgs {
    /// The release: names the Lease and the cluster-scoped objects (`0100-<release>`,
    /// `<release>`, `<release>-backstop`), so two installations coexist.
    #[arg(long, env = "RUNNER_FENCE_RELEASE", default_value = "runner-fence")]
    pub release: String,
    /// runner-fence's own namespace: the Service's and the Lease's, never reviewed.
    #[arg(long, env = "RUNNER_FENCE_NAMESPACE", default_value = "runner-fence")]
    pub namespace: String,
    /// The webhook Service the apiserver calls.
    #[arg(long, env = "RUNNER_FENCE_SERVICE", default_value = "runner-fence")]
    pub service: String,
    /// Its port.
    #[arg(long, env = "RUNNER_FENCE_SERVICE_PORT", default_value_t = 443)]
    pub service_port: i32,
    /// Have the apiserver call this URL base instead of the Service (a webhook
    /// outside the cluster, e.g. the end-to-end suite's).
    #[arg(long, env = "RUNNER_FENCE_WEBHOOK_URL")]
    pub webhook_url: Option<String>,
    /// This replica's name in the Lease (default: $HOSTNAME, the pod name).
    #[arg(long, env = "RUNNER_FENCE_POD_NAME")]
    pub pod_name: Option<String>,
    /// PEM file whose certificates go into caBundle (e.g. `ca.crt` of the mounted
    /// serving Secret from cert-manager); re-read on every round. Without it and
    /// without --manage-certificates the caBundle is left to an injector.
    #[arg(long, env = "RUNNER_FENCE_CA_BUNDLE")]
    pub ca_bundle: Option<PathBuf>,
    /// Keep runner-fence's own CA and serving certificate in the Secret
    /// `<release>-tls` (created when missing, rotated before expiry by the leader,
    /// read by every replica; caBundle written into the generated objects).
    #[arg(
        long,
        env = "RUNNER_FENCE_MANAGE_CERTIFICATES",
        conflicts_with_all = ["ca_bundle"]
    )]
    pub manage_certificates: bool,
    /// Validity of a certificate runner-fence issues.
    #[arg(long, env = "RUNNER_FENCE_CERTIFICATE_DAYS", default_value_t = 365)]
    pub certificate_days: u32,
    /// Rotate when the serving certificate expires within this many days.
    #[arg(
        long,
        env = "RUNNER_FENCE_CERTIFICATE_RENEW_DAYS",
        default_value_t = 30
    )]
    pub certificate_renew_days: u32,
    /// Only serve and report status; never apply the webhook configurations and backstop.
    #[arg(long, env = "RUNNER_FENCE_NO_WEBHOOKS")]
    pub no_webhooks: bool,
    /// failurePolicy of the mutating webhook (default: Fail while any served
    /// policy enforces, Ignore when all audit, as `render webhooks` decides).
    #[arg(long, env = "RUNNER_FENCE_MUTATE_FAILURE_POLICY", value_enum)]
    pub mutate_failure_policy: Option<FailurePolicyArg>,
    /// failurePolicy of the validating webhook (default: Fail while any served
    /// policy enforces, Ignore when all audit, as `render webhooks` decides).
    #[arg(long, env = "RUNNER_FENCE_VALIDATE_FAILURE_POLICY", value_enum)]
    pub validate_failure_policy: Option<FailurePolicyArg>,
    /// timeoutSeconds of both webhooks (1-5).
    #[arg(
        long,
        env = "RUNNER_FENCE_WEBHOOK_TIMEOUT_SECONDS",
        default_value_t = 5
    )]
    pub webhook_timeout_seconds: i32,
    /// How long the Lease holder keeps it without renewing (a new leader takes over after it).
    #[arg(long, env = "RUNNER_FENCE_LEASE_SECONDS", default_value_t = 15)]
    pub lease_seconds: u64,
    /// How often the leader re-applies the generated objects without a change.
    #[arg(long, env = "RUNNER_FENCE_RESYNC_SECONDS", default_value_t = 60)]
    pub resync_seconds: u64,
}

impl Default for ClusterArgs {
    /// The flags' defaults (and whatever `RUNNER_FENCE_*` variables say, as for `serve`).
    fn default() -> Self {
        // Through all of `serve`'s flags: the cluster ones refer to others.
        #[derive(clap::Parser)]
        struct Serve {
            #[command(flatten)]
            serve: ServeArgs,
        }
        <Serve as clap::Parser>::parse_from(["serve"]).serve.cluster
    }
}

impl ClusterArgs {
    /// Where `--manage-certificates` keeps the pair.
    pub fn cert_config(&self) -> crate::k8s::controller::certs::CertConfig {
        crate::k8s::controller::certs::CertConfig {
            namespace: self.namespace.clone(),
            secret: format!("{}-tls", self.release),
            names: super::certs::service_names(&self.service, &self.namespace),
            validity_days: self.certificate_days.max(2),
            renew_before: std::time::Duration::from_secs(
                u64::from(
                    self.certificate_renew_days
                        .min(self.certificate_days.max(2) - 1),
                ) * 86_400,
            ),
        }
    }

    /// The controller's configuration.
    pub fn config(&self) -> crate::k8s::controller::Config {
        use crate::k8s::controller::{CaBundle, Config};
        let identity = self
            .pod_name
            .clone()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| format!("runner-fence-{}", std::process::id()));
        Config {
            release: self.release.clone(),
            namespace: self.namespace.clone(),
            service: self.service.clone(),
            port: self.service_port,
            url: self.webhook_url.clone(),
            identity,
            lease_duration: std::time::Duration::from_secs(self.lease_seconds.max(1)),
            reconcile_webhooks: !self.no_webhooks,
            ca_bundle: match &self.ca_bundle {
                Some(p) => CaBundle::File(p.clone()),
                None if self.manage_certificates => CaBundle::Managed(self.cert_config()),
                None => CaBundle::Injected,
            },
            mutate_failure_policy: self.mutate_failure_policy.map(Into::into),
            validate_failure_policy: self.validate_failure_policy.map(Into::into),
            timeout_seconds: self.webhook_timeout_seconds,
            resync: std::time::Duration::from_secs(self.resync_seconds.max(1)),
        }
    }
}
