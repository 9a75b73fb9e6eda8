//! `runner-fence audit`.

use std::process::ExitCode;

use clap::ValueEnum;

use super::{EXIT_DENIED, EXIT_OK, Error, PolicyArg};
use crate::k8s::{self, audit};

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

#[derive(clap::Args, Debug)]
pub(super) struct Args {
    #[command(flatten)]
    cluster: k8s::Access,
    #[command(flatten)]
    policy: PolicyArg,
    /// Output format: text, json, or policy-report (wgpolicyk8s.io/v1alpha2 PolicyReports, YAML).
    #[arg(long, value_enum, default_value = "text")]
    output: AuditOutput,
    /// With policy-report: also write the reports to the cluster (server-side
    /// apply of what changed; reports of objects that are gone are deleted).
    #[arg(long, requires = "output")]
    apply: bool,
    /// Namespace of the webhook's Service (default: the one the webhook configurations call).
    #[arg(long, requires = "webhook_service")]
    webhook_namespace: Option<String>,
    /// Name of the webhook's Service, whose Deployment, endpoints and certificate are checked.
    #[arg(long, requires = "webhook_namespace")]
    webhook_service: Option<String>,
}

pub(super) fn run(a: Args) -> Result<ExitCode, Error> {
    if a.apply && a.output != AuditOutput::PolicyReport {
        return Err(Error::ApplyNeedsPolicyReport);
    }
    let p = a.policy.load()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Error::Runtime)?;
    let opts = audit::Options {
        webhook_service: a.webhook_namespace.zip(a.webhook_service),
    };
    let (r, reports) = rt.block_on(async {
        let client = a.cluster.client().await?;
        let r = audit::run_once(client.clone(), &p, &opts).await?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let reports = audit::policy_reports(&r, &p.metadata.name, now);
        if a.apply {
            let done = audit::apply_reports(&client, &reports, &p.metadata.name).await?;
            eprintln!(
                "PolicyReports: {} written, {} unchanged, {} deleted",
                done.written, done.unchanged, done.deleted
            );
        }
        Ok::<_, k8s::Error>((r, reports))
    })?;
    match a.output {
        AuditOutput::Json => {
            outln!("{}", serde_json::to_string_pretty(&r).unwrap_or_default())
        }
        AuditOutput::Text => out!("{}", audit::table(&r)),
        AuditOutput::PolicyReport => {
            for rep in &reports {
                outln!("---");
                out!("{}", serde_saphyr::to_string(rep).unwrap_or_default());
            }
        }
    }
    Ok(ExitCode::from(if r.has_violations() {
        EXIT_DENIED
    } else {
        EXIT_OK
    }))
}
