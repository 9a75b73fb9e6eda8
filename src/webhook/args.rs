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
    #[command(flatten)]
    pub audit: AuditArgs,
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
    #[arg(long, env = "RUNNER_FENCE_BODY_TIMEOUT_MS", default_value_t = super::routes::DEFAULT_BODY_TIMEOUT_MS)]
    pub body_timeout_ms: u64,
    /// How often policy and certificate files are checked for changes, in milliseconds.
    #[arg(long, env = "RUNNER_FENCE_RELOAD_INTERVAL_MS", default_value_t = 2000)]
    pub reload_interval_ms: u64,
    /// Reviews processed at once, across /mutate and /validate; more wait.
    #[arg(long, env = "RUNNER_FENCE_MAX_CONCURRENCY", default_value_t = super::routes::DEFAULT_MAX_CONCURRENCY)]
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

/// Flags of the continuous audit.
#[derive(Args, Debug, Clone)]
pub struct AuditArgs {
    /// Audit the served policies every this many seconds, as `runner-fence
    /// audit` does, and write the PolicyReports in place (0: off). Default:
    /// 300 with --policies-from-cluster (only the replica holding the Lease
    /// audits), off with a policy file (every replica would audit).
    #[arg(long, env = "RUNNER_FENCE_AUDIT_INTERVAL_SECONDS")]
    pub audit_interval_seconds: Option<u64>,
    /// Objects per page of the audit's lists.
    #[arg(
        long,
        env = "RUNNER_FENCE_AUDIT_PAGE_SIZE",
        default_value_t = 500,
        value_parser = clap::value_parser!(u32).range(1..=10_000)
    )]
    pub audit_page_size: u32,
    /// Pause after each page of the audit's lists, in milliseconds (spreads
    /// the reads of a large cluster over the pass).
    #[arg(long, env = "RUNNER_FENCE_AUDIT_PAGE_PAUSE_MS", default_value_t = 100)]
    pub audit_page_pause_ms: u64,
    /// Audit into metrics and the log only; write no PolicyReports (no CRD needed).
    #[arg(long, env = "RUNNER_FENCE_AUDIT_NO_REPORTS")]
    pub audit_no_reports: bool,
}

impl Default for AuditArgs {
    /// The flags' defaults (and whatever `RUNNER_FENCE_AUDIT_*` variables say).
    fn default() -> Self {
        #[derive(clap::Parser)]
        struct Serve {
            #[command(flatten)]
            serve: ServeArgs,
        }
        <Serve as clap::Parser>::parse_from(["serve"]).serve.audit
    }
}

impl AuditArgs {
    /// Seconds between passes: the flag, else 300 in cluster mode and 0 with a file.
    pub fn interval_seconds(&self, policies_from_cluster: bool) -> u64 {
        self.audit_interval_seconds
            .unwrap_or(if policies_from_cluster { 300 } else { 0 })
    }

    /// The continuous audit's configuration; None when it is off. In cluster
    /// mode the webhook's Service is the controller's (unless it calls a URL).
    pub fn config(
        &self,
        cluster: Option<&ClusterArgs>,
    ) -> Option<crate::k8s::audit::continuous::Config> {
        let seconds = self.interval_seconds(cluster.is_some());
        (seconds > 0).then(|| crate::k8s::audit::continuous::Config {
            interval: std::time::Duration::from_secs(seconds),
            options: crate::k8s::audit::Options {
                webhook_service: cluster
                    .filter(|c| c.webhook_url.is_none())
                    .map(|c| (c.namespace.clone(), c.service.clone())),
                page_size: self.audit_page_size,
                page_pause: std::time::Duration::from_millis(self.audit_page_pause_ms),
                progress: false,
                backstop: None,
            },
            release: cluster.map(|c| c.release.clone()),
            write_reports: !self.audit_no_reports,
        })
    }
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
    /// failurePolicy of the mutating webhooks (default: from the mode of the
    /// policies each serves, Fail enforcing, Ignore auditing, as `render webhooks` decides).
    #[arg(long, env = "RUNNER_FENCE_MUTATE_FAILURE_POLICY", value_enum)]
    pub mutate_failure_policy: Option<FailurePolicyArg>,
    /// failurePolicy of the validating webhooks (default: from the mode of the
    /// policies each serves, Fail enforcing, Ignore auditing, as `render webhooks` decides).
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
            names: self.serving_names(),
            validity_days: self.certificate_days.max(2),
            renew_before: std::time::Duration::from_secs(
                u64::from(
                    self.certificate_renew_days
                        .min(self.certificate_days.max(2) - 1),
                ) * 86_400,
            ),
        }
    }

    /// The names the managed serving certificate is issued for: the Service's,
    /// and the host of `--webhook-url` when the apiserver calls a URL instead
    /// (it verifies that host, an IP address or a DNS name, against the certificate).
    fn serving_names(&self) -> Vec<String> {
        let mut names = super::certs::service_names(&self.service, &self.namespace);
        if let Some(host) = self
            .webhook_url
            .as_deref()
            .and_then(|u| u.parse::<axum::http::Uri>().ok())
            .and_then(|u| u.host().map(|h| h.trim_matches(['[', ']']).to_string()))
            .filter(|h| !h.is_empty() && !names.contains(h))
        {
            names.push(host);
        }
        names
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<ServeArgs, clap::Error> {
        #[derive(clap::Parser)]
        struct Serve {
            #[command(flatten)]
            serve: ServeArgs,
        }
        let argv = std::iter::once("serve").chain(args.iter().copied());
        <Serve as clap::Parser>::try_parse_from(argv).map(|s| s.serve)
    }

    #[test]
    fn the_audit_runs_every_five_minutes_in_cluster_mode_and_only_when_asked_with_a_file() {
        let file = parse(&[]).expect("parse");
        assert!(file.audit.config(None).is_none(), "off with a policy file");
        let asked = parse(&["--audit-interval-seconds", "60"]).expect("parse");
        let cfg = asked.audit.config(None).expect("on");
        assert_eq!(cfg.interval.as_secs(), 60);
        assert_eq!(cfg.options.webhook_service, None, "from the configurations");

        let cluster = parse(&["--policies-from-cluster", "--namespace", "fence"]).expect("parse");
        let cfg = cluster.audit.config(Some(&cluster.cluster)).expect("on");
        assert_eq!(cfg.interval.as_secs(), 300);
        assert_eq!(
            cfg.options.webhook_service,
            Some(("fence".into(), "runner-fence".into()))
        );
        assert_eq!(
            (cfg.options.page_size, cfg.options.page_pause.as_millis()),
            (500, 100)
        );
        assert!(cfg.write_reports);
        let off =
            parse(&["--policies-from-cluster", "--audit-interval-seconds", "0"]).expect("parse");
        assert!(off.audit.config(Some(&off.cluster)).is_none());
        let url = parse(&[
            "--policies-from-cluster",
            "--webhook-url",
            "https://127.0.0.1:1",
        ])
        .expect("parse");
        let cfg = url.audit.config(Some(&url.cluster)).expect("on");
        assert_eq!(
            cfg.options.webhook_service, None,
            "the URL the configurations call"
        );
    }

    #[test]
    fn an_audit_page_size_of_zero_is_refused_by_name() {
        let err = parse(&["--audit-page-size", "0"]).expect_err("refused");
        assert!(err.to_string().contains("--audit-page-size"), "{err}");
    }

    #[rstest::rstest]
    #[case::service_only(None, None)]
    #[case::ip(Some("https://127.0.0.1:9443"), Some("127.0.0.1"))]
    #[case::ipv6(Some("https://[::1]:9443/base"), Some("::1"))]
    #[case::dns(Some("https://webhook.example.com"), Some("webhook.example.com"))]
    fn the_managed_certificate_names_the_webhook_url_host(
        #[case] url: Option<&str>,
        #[case] extra: Option<&str>,
    ) {
        let mut argv = vec!["--namespace", "rf", "--service", "fence"];
        if let Some(u) = url {
            argv.extend(["--webhook-url", u]);
        }
        let names = parse(&argv).expect("parse").cluster.cert_config().names;
        let mut want = crate::webhook::certs::service_names("fence", "rf");
        want.extend(extra.map(String::from));
        assert_eq!(names, want);
    }
}
