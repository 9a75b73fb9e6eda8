//! `runner-fence render ...`: configuration generated from the policy.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

use super::{Error, PolicyArg, ok};
use crate::core::policy::Policy;
use crate::core::render::webhooks::{self, RenderError};
use crate::core::render::{admission_policy, runner_config};
use crate::webhook::FailurePolicyArg;

#[derive(Subcommand, Debug)]
pub(super) enum Command {
    /// The [runners.kubernetes] config.toml fragment matching a policy profile.
    RunnerConfig {
        #[command(flatten)]
        policy: PolicyArg,
        /// Profile (default: the policy's default profile).
        #[arg(long)]
        profile: Option<String>,
    },
    /// The Mutating/ValidatingWebhookConfiguration scoped by the policy's namespaces.
    Webhooks(WebhooksArgs),
    /// The in-tree backstop: a ValidatingAdmissionPolicy + binding compiled from the policy.
    AdmissionPolicy {
        #[command(flatten)]
        policy: PolicyArg,
        /// The webhook's own namespace (never reviewed).
        #[arg(long, default_value = "runner-fence")]
        namespace: String,
        /// Name the objects as the policy controller of this release does
        /// (`<release>-backstop`, `-backstop-audit` for an audit policy);
        /// without it they are `runner-fence-backstop`.
        #[arg(long)]
        release: Option<String>,
    },
    /// The RunnerFencePolicy CustomResourceDefinition (schema from the policy model).
    Crd,
}

/// `render webhooks` flags.
#[derive(clap::Args, Debug)]
pub(super) struct WebhooksArgs {
    #[command(flatten)]
    policy: PolicyArg,
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
    /// failurePolicy of the mutating webhook (default: fail when the policy enforces, ignore when it audits).
    #[arg(long, value_enum)]
    mutate_failure_policy: Option<FailurePolicyArg>,
    /// failurePolicy of the validating webhook (default: fail when the policy enforces, ignore when it audits).
    #[arg(long, value_enum)]
    validate_failure_policy: Option<FailurePolicyArg>,
    /// timeoutSeconds of both webhooks (1-5).
    #[arg(long, default_value_t = 5)]
    timeout_seconds: i32,
    /// Name the configurations after this release (`0100-<release>`, `<release>`), as its
    /// policy controller does.
    #[arg(long, default_value = "runner-fence")]
    release: String,
}

pub(super) fn run(command: Command) -> Result<ExitCode, Error> {
    match command {
        Command::RunnerConfig { policy, profile } => {
            render(&policy, |p| runner_config(p, profile.as_deref()))
        }
        Command::Webhooks(args) => render_webhooks(args),
        Command::AdmissionPolicy {
            policy,
            namespace,
            release: None,
        } => render(&policy, |p| admission_policy::render_yaml(p, &namespace)),
        Command::AdmissionPolicy {
            policy,
            namespace,
            release: Some(release),
        } => render(&policy, |p| {
            let name = crate::core::render::cluster::backstop_name(
                &release,
                crate::core::policy::Mode::Enforce,
            );
            admission_policy::render_yaml_named(p, &namespace, &name)
        }),
        Command::Crd => {
            out!("{}", crate::core::render::crd::render_yaml()?);
            ok()
        }
    }
}

/// Loads `--policy`, renders something from it and prints it.
fn render(
    policy: &PolicyArg,
    f: impl FnOnce(&Policy) -> Result<String, RenderError>,
) -> Result<ExitCode, Error> {
    let text = f(&policy.load()?)?;
    out!("{text}");
    ok()
}

fn render_webhooks(a: WebhooksArgs) -> Result<ExitCode, Error> {
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
        Some(base) if base.starts_with("https://") => webhooks::Client::Url {
            base,
            namespace: a.namespace,
        },
        Some(base) => return Err(Error::UrlNotHttps(base)),
        None => webhooks::Client::Service {
            name: a.service,
            namespace: a.namespace,
            port: a.port,
        },
    };
    let names = webhooks::Names::release(&a.release);
    render(&a.policy, |p| {
        // Unless asked otherwise, what the chart installs for this policy (from its mode).
        let opts = webhooks::Options {
            client: client.clone(),
            ca_bundle: ca_bundle.clone(),
            mutate_failure_policy: a.mutate_failure_policy.map(Into::into),
            validate_failure_policy: a.validate_failure_policy.map(Into::into),
            timeout_seconds: a.timeout_seconds,
            names: names.clone(),
        };
        webhooks::render_yaml(p, &opts)
    })
}
