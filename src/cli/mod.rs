//! `runner-fence <verb>`: the command line (SPEC §7).

mod error;
mod eval_cmd;
mod suite;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::core::policy::{self, Policy};
use crate::core::render::webhooks::RenderError;
pub use error::Error;

/// Exit code: everything allowed / passed.
const EXIT_OK: u8 = 0;
/// Exit code: a denial, a failed test, a lint warning.
const EXIT_DENIED: u8 = 1;
/// Exit code: bad input (unreadable file, broken policy, wrong kind).
const EXIT_BAD_INPUT: u8 = 2;

/// Keeps GitLab Runner job pods off GitLab's own Kubernetes nodes.
#[derive(Parser, Debug)]
#[command(name = "runner-fence", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Output formats.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
enum Output {
    /// For people.
    Text,
    /// For scripts.
    Json,
}

/// `audit` output formats.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
enum AuditOutput {
    /// Tables for people.
    Text,
    /// The report as JSON.
    Json,
    /// PolicyReport objects (YAML), as Kyverno and Kubewarden write them.
    PolicyReport,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the webhook (HTTPS /mutate and /validate, admin /healthz /readyz /metrics).
    Serve(crate::webhook::ServeArgs),
    /// Run mutate then validate offline on Pods or AdmissionReviews.
    Eval {
        /// Policy file (default: the embedded reference policy).
        #[arg(long, env = "RUNNER_FENCE_POLICY")]
        policy: Option<PathBuf>,
        /// Pod or AdmissionReview files, YAML or JSON; `-` reads stdin.
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
        /// Namespace for Pod inputs without one.
        #[arg(long)]
        namespace: Option<String>,
        /// Operation for Pod inputs (CREATE or UPDATE).
        #[arg(long, default_value = "CREATE")]
        operation: String,
        /// Nodes (a YAML/JSON list of {name, labels, taints}) to evaluate live checks against.
        #[arg(long)]
        nodes: Option<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
    /// Run policy test suites; prints `N passed, N failed`.
    Test {
        /// Suite files or directories searched for `*.test.yaml` (default: current directory).
        paths: Vec<PathBuf>,
        /// Write a JUnit XML report (for GitLab CI `artifacts:reports:junit`).
        #[arg(long)]
        junit: Option<PathBuf>,
    },
    /// Check a policy file and warn about likely mistakes.
    Lint {
        /// The policy file.
        file: PathBuf,
    },
    /// Print the JSON Schema of the policy format.
    Schema,
    /// Scan a live cluster: job pods on protected nodes, pods the policy would deny or patch.
    Audit {
        /// Kubeconfig file (default: $KUBECONFIG, ~/.kube/config or in-cluster).
        #[arg(long)]
        kubeconfig: Option<PathBuf>,
        /// Kubeconfig context.
        #[arg(long)]
        context: Option<String>,
        /// Policy file (default: the embedded reference policy).
        #[arg(long, env = "RUNNER_FENCE_POLICY")]
        policy: Option<PathBuf>,
        /// Output format: text, json, or policy-report (wgpolicyk8s.io/v1alpha2 PolicyReports, YAML).
        #[arg(long, value_enum, default_value = "text")]
        output: AuditOutput,
        /// With policy-report: also write the reports to the cluster (server-side apply).
        #[arg(long, requires = "output")]
        apply: bool,
    },
    /// Certificates for the webhook.
    #[command(subcommand)]
    Certs(CertsCommand),
    /// Render configuration that matches the policy.
    #[command(subcommand)]
    Render(RenderCommand),
}

#[derive(Subcommand, Debug)]
enum CertsCommand {
    /// Generate a CA and a serving certificate for the webhook Service.
    Generate {
        /// Service name.
        #[arg(long, default_value = "runner-fence")]
        service: String,
        /// Service namespace.
        #[arg(long, default_value = "runner-fence")]
        namespace: String,
        /// Output directory (ca.crt, ca.key, tls.crt, tls.key, ca-bundle.txt).
        #[arg(long)]
        out: PathBuf,
        /// Validity in days.
        #[arg(long, default_value_t = 365)]
        validity_days: u32,
        /// Key algorithm.
        #[arg(long, value_enum, default_value = "ecdsa-p256")]
        key_type: crate::webhook::certs::KeyType,
        /// Extra subject alternative names (DNS names or IPs).
        #[arg(long = "san")]
        extra_sans: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
enum RenderCommand {
    /// The [runners.kubernetes] config.toml fragment matching a policy profile.
    RunnerConfig {
        /// Policy file (default: the embedded reference policy).
        #[arg(long, env = "RUNNER_FENCE_POLICY")]
        policy: Option<PathBuf>,
        /// Profile (default: the policy's default profile).
        #[arg(long)]
        profile: Option<String>,
    },
    /// The Mutating/ValidatingWebhookConfiguration scoped by the policy's namespaces.
    Webhooks(WebhooksArgs),
    /// The in-tree backstop: a ValidatingAdmissionPolicy + binding compiled from the policy.
    AdmissionPolicy {
        /// Policy file (default: the embedded reference policy).
        #[arg(long, env = "RUNNER_FENCE_POLICY")]
        policy: Option<PathBuf>,
        /// The webhook's own namespace (never reviewed).
        #[arg(long, default_value = "runner-fence")]
        namespace: String,
    },
    /// Values for the Helm chart: the policy and what is generated from it.
    HelmValues {
        /// Policy file (default: the embedded reference policy).
        #[arg(long, env = "RUNNER_FENCE_POLICY")]
        policy: Option<PathBuf>,
        /// The release namespace (the webhook's own, never reviewed).
        #[arg(long, default_value = "runner-fence")]
        namespace: String,
        /// Name of the webhook Service.
        #[arg(long, default_value = "runner-fence")]
        service: String,
    },
}

/// `failurePolicy` of a rendered webhook.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum FailurePolicyArg {
    /// The request fails when the webhook cannot be reached.
    Fail,
    /// The request goes on without the webhook.
    Ignore,
}

impl From<FailurePolicyArg> for crate::core::render::webhooks::FailurePolicy {
    fn from(a: FailurePolicyArg) -> Self {
        match a {
            FailurePolicyArg::Fail => Self::Fail,
            FailurePolicyArg::Ignore => Self::Ignore,
        }
    }
}

/// `render webhooks` flags.
#[derive(clap::Args, Debug)]
struct WebhooksArgs {
    /// Policy file (default: the embedded reference policy).
    #[arg(long, env = "RUNNER_FENCE_POLICY")]
    policy: Option<PathBuf>,
    /// Service name the apiserver calls (ignored with --url).
    #[arg(long, default_value = "runner-fence")]
    service: String,
    /// The webhook's own namespace: the Service's, and never reviewed.
    #[arg(long, default_value = "runner-fence")]
    namespace: String,
    /// Service port.
    #[arg(long, default_value_t = 443)]
    port: i32,
    /// Call the webhook at this URL base instead of a Service (e.g. https://127.0.0.1:18443).
    #[arg(long)]
    url: Option<String>,
    /// PEM CA bundle file to put in caBundle (omit when cert-manager or kustomize injects it).
    #[arg(long)]
    ca_bundle: Option<PathBuf>,
    /// failurePolicy of the mutating webhook.
    #[arg(long, value_enum, default_value = "fail")]
    mutate_failure_policy: FailurePolicyArg,
    /// failurePolicy of the validating webhook.
    #[arg(long, value_enum, default_value = "fail")]
    validate_failure_policy: FailurePolicyArg,
    /// timeoutSeconds of both webhooks (1-5).
    #[arg(long, default_value_t = 5)]
    timeout_seconds: i32,
}

/// Parses the command line and runs the verb: the exit code of a verb that
/// ran (0, or 1 for a denial, a failed test, a finding), or why it could not.
pub fn run() -> Result<ExitCode, Error> {
    let cli = Cli::parse();
    run_command(cli.command)
}

fn ok() -> Result<ExitCode, Error> {
    Ok(ExitCode::from(EXIT_OK))
}

fn run_command(command: Command) -> Result<ExitCode, Error> {
    match command {
        Command::Serve(args) => {
            crate::webhook::serve(args)?;
            ok()
        }
        Command::Eval {
            policy,
            inputs,
            namespace,
            operation,
            nodes,
            output,
        } => eval_cmd::run(eval_cmd::Args {
            policy,
            inputs,
            namespace,
            operation,
            nodes,
            output,
        }),
        Command::Test { paths, junit } => suite::run(&paths, junit.as_deref()),
        Command::Lint { file } => lint(&file),
        Command::Certs(CertsCommand::Generate {
            service,
            namespace,
            out,
            validity_days,
            key_type,
            extra_sans,
        }) => {
            let mut names = crate::webhook::certs::service_names(&service, &namespace);
            names.extend(extra_sans);
            let g = crate::webhook::certs::generate_with(&names, validity_days, key_type)?;
            crate::webhook::certs::write_dir(&out, &g)?;
            println!(
                "wrote {d}/ca.crt, ca.key, tls.crt, tls.key and ca-bundle.txt for {} (valid {validity_days} days)",
                names.join(", "),
                d = out.display()
            );
            println!(
                "caBundle: {}/ca-bundle.txt; keep ca.key to issue the next serving certificate",
                out.display()
            );
            ok()
        }
        Command::Render(RenderCommand::RunnerConfig { policy, profile }) => {
            render(policy.as_deref(), |p| {
                crate::core::render::runner_config(p, profile.as_deref())
            })
        }
        Command::Render(RenderCommand::Webhooks(args)) => render_webhooks(args),
        Command::Render(RenderCommand::HelmValues {
            policy,
            namespace,
            service,
        }) => render_helm_values(policy.as_deref(), namespace, service),
        Command::Render(RenderCommand::AdmissionPolicy { policy, namespace }) => {
            render(policy.as_deref(), |p| {
                crate::core::render::admission_policy::render_yaml(p, &namespace)
            })
        }
        Command::Audit {
            kubeconfig,
            context,
            policy,
            output,
            apply,
        } => audit(kubeconfig, context, policy, output, apply),
        Command::Schema => {
            println!("{}", schema_json());
            ok()
        }
    }
}

/// Loads `--policy` or the embedded reference policy.
fn load_policy(path: Option<&std::path::Path>) -> Result<Policy, policy::LoadError> {
    match path {
        Some(p) => policy::load_file(p),
        None => policy::embedded(),
    }
}

fn audit(
    kubeconfig: Option<PathBuf>,
    context: Option<String>,
    policy: Option<PathBuf>,
    output: AuditOutput,
    apply: bool,
) -> Result<ExitCode, Error> {
    if apply && output != AuditOutput::PolicyReport {
        return Err(Error::ApplyNeedsPolicyReport);
    }
    let p = load_policy(policy.as_deref())?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Error::Runtime)?;
    let (r, reports) = rt.block_on(async {
        let client = crate::k8s::client(kubeconfig.as_deref(), context.as_deref()).await?;
        let r = crate::k8s::audit::collect(client.clone(), &p).await?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let reports = crate::k8s::audit::policy_reports(&r, &p.metadata.name, now);
        if apply {
            crate::k8s::audit::apply_policy_reports(client, &reports).await?;
        }
        Ok::<_, crate::k8s::Error>((r, reports))
    })?;
    match output {
        AuditOutput::Json => {
            println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default())
        }
        AuditOutput::Text => print!("{}", crate::k8s::audit::table(&r)),
        AuditOutput::PolicyReport => {
            for rep in &reports {
                println!("---");
                print!("{}", serde_saphyr::to_string(rep).unwrap_or_default());
            }
        }
    }
    Ok(ExitCode::from(if r.has_violations() {
        EXIT_DENIED
    } else {
        EXIT_OK
    }))
}

/// Loads `--policy`, renders something from it and prints it.
fn render(
    policy: Option<&std::path::Path>,
    f: impl FnOnce(&Policy) -> Result<String, RenderError>,
) -> Result<ExitCode, Error> {
    let text = f(&load_policy(policy)?)?;
    print!("{text}");
    ok()
}

fn render_helm_values(
    policy: Option<&std::path::Path>,
    namespace: String,
    service: String,
) -> Result<ExitCode, Error> {
    use crate::core::render::helm_values::{Target, render};
    let (text, file) = match policy {
        Some(p) => (policy::read_file(p)?, p.display().to_string()),
        None => (
            policy::EMBEDDED_POLICY.to_string(),
            "the embedded reference policy".to_string(),
        ),
    };
    print!("{}", render(&text, &file, &Target { namespace, service })?);
    ok()
}

fn render_webhooks(a: WebhooksArgs) -> Result<ExitCode, Error> {
    use crate::core::render::webhooks::{Client, Options, render_yaml};
    let ca_bundle = match a.ca_bundle {
        Some(path) => {
            Some(std::fs::read(&path).map_err(|source| Error::CaBundle { path, source })?)
        }
        None => None,
    };
    if let Some(ca) = &ca_bundle
        && !String::from_utf8_lossy(ca).contains("-----BEGIN CERTIFICATE-----")
    {
        return Err(Error::CaBundleNotPem);
    }
    let client = match a.url {
        Some(base) if base.starts_with("https://") => Client::Url {
            base,
            namespace: a.namespace,
        },
        Some(base) => return Err(Error::UrlNotHttps(base)),
        None => Client::Service {
            name: a.service,
            namespace: a.namespace,
            port: a.port,
        },
    };
    let opts = Options {
        client,
        ca_bundle,
        mutate_failure_policy: a.mutate_failure_policy.into(),
        validate_failure_policy: a.validate_failure_policy.into(),
        timeout_seconds: a.timeout_seconds,
    };
    render(a.policy.as_deref(), |p| render_yaml(p, &opts))
}

fn lint(file: &std::path::Path) -> Result<ExitCode, Error> {
    let p = policy::load_file(file)?;
    let warnings = policy::lint(&p);
    for w in &warnings {
        println!("warning: {}: {w}", file.display());
    }
    if warnings.is_empty() {
        println!("{}: ok", file.display());
        ok()
    } else {
        println!("{}: {} warning(s)", file.display(), warnings.len());
        Ok(ExitCode::from(EXIT_DENIED))
    }
}

/// The JSON Schema of a policy document.
fn schema_json() -> String {
    let schema = schemars::schema_for!(Policy);
    serde_json::to_string_pretty(&schema).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}
