//! `runner-fence audit`.

use std::process::ExitCode;

use clap::ValueEnum;

use super::{EXIT_DENIED, EXIT_OK, Error, PolicyArg};
use crate::core::fleet::{PolicySet, State};
use crate::k8s::{self, audit, controller};

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
    /// Audit the cluster's RunnerFencePolicy objects instead of a file: each one the
    /// controller serves, for the namespaces it reviews; the others are reported
    /// (Invalid, Conflict) as the controller judges them.
    #[arg(long, conflicts_with = "policy")]
    policies_from_cluster: bool,
    /// With --policies-from-cluster: audit only this RunnerFencePolicy (repeatable).
    /// The others still decide which namespaces are fenced; with --apply, their
    /// PolicyReports are left as they are.
    #[arg(long, value_name = "NAME", requires = "policies_from_cluster")]
    only: Vec<String>,
    /// With --policies-from-cluster: runner-fence's own namespace, which no policy may cover.
    #[arg(
        long,
        default_value = "runner-fence",
        requires = "policies_from_cluster"
    )]
    namespace: String,
    /// With --policies-from-cluster: the controller's release, whose backstop
    /// (`<release>-backstop[-audit]`, generated from every served policy) is checked.
    #[arg(
        long,
        default_value = "runner-fence",
        requires = "policies_from_cluster"
    )]
    release: String,
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
    let several = a.policies_from_cluster;
    let file = if several {
        None
    } else {
        Some(a.policy.load()?)
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Error::Runtime)?;
    let (audited, refused) = rt.block_on(async {
        let client = a.cluster.client().await?;
        // Each policy's audit, and the policies not served.
        let mut audited: Vec<audit::Audited> = Vec::new();
        let mut refused = Vec::new();
        let set = match &file {
            Some(p) => PolicySet::single(p.clone()),
            None => {
                let snap = controller::live(client.clone(), &a.namespace).await?;
                // With --only, the others' state is theirs to report.
                let named = |n: &str| a.only.is_empty() || a.only.iter().any(|o| o == n);
                for v in snap.verdicts.iter().filter(|v| named(&v.name)) {
                    if matches!(v.state, State::Invalid | State::Conflict) {
                        refused.push(format!(
                            "RunnerFencePolicy {}: {}: {}",
                            v.name,
                            v.state.as_str(),
                            v.message
                        ));
                    }
                }
                for name in &a.only {
                    if snap.resolution.set.iter().any(|p| &p.metadata.name == name) {
                        continue;
                    }
                    let why = match snap.verdicts.iter().find(|v| &v.name == name) {
                        Some(v) => format!("{}: {}", v.state.as_str(), v.message),
                        None => {
                            "there is no such object (kubectl get runnerfencepolicies)".to_string()
                        }
                    };
                    return Err(Error::NotServed {
                        name: name.clone(),
                        why,
                    });
                }
                snap.resolution.set.clone()
            }
        };
        let set = std::sync::Arc::new(set);
        let opts = audit::Options {
            webhook_service: a.webhook_namespace.clone().zip(a.webhook_service.clone()),
            progress: true,
            backstop: several.then(|| audit::ExpectedBackstop {
                release: a.release.clone(),
                served: set.clone(),
            }),
            ..audit::Options::default()
        };
        // Only when they are printed or written: 20,000 pods' reports as
        // JSON trees are most of a text or JSON audit's memory otherwise.
        let reports = match (a.output, a.apply) {
            (AuditOutput::PolicyReport, true) => audit::Reports::Apply,
            (AuditOutput::PolicyReport, false) => audit::Reports::Build,
            _ => audit::Reports::None,
        };
        let served = audit::Policies {
            set,
            all_of_the_cluster: several,
            only: a.only.clone(),
        };
        let unserved = audit::audit_each(&client, &served, &opts, reports, |done| {
            if let Some(applied) = done.applied {
                let of = if several {
                    format!(" of {}", done.policy)
                } else {
                    String::new()
                };
                let skipped = if applied.skipped > 0 {
                    format!(
                        ", {} not written (namespace being deleted)",
                        applied.skipped
                    )
                } else {
                    String::new()
                };
                eprintln!(
                    "PolicyReports{of}: {} written, {} unchanged, {} deleted{skipped}",
                    applied.written, applied.unchanged, applied.deleted
                );
            }
            audited.push(done);
        })
        .await?;
        if unserved > 0 {
            eprintln!("PolicyReports of policies no longer served: {unserved} deleted");
        }
        Ok::<_, Error>((audited, refused))
    })?;
    for line in &refused {
        eprintln!("{line}");
    }
    if several && audited.is_empty() {
        eprintln!(
            "no RunnerFencePolicy is served: nothing is fenced (kubectl get runnerfencepolicies)"
        );
    }
    match a.output {
        AuditOutput::Json if several => {
            let all: Vec<serde_json::Value> = audited
                .iter()
                .map(|x| serde_json::json!({"policy": x.policy, "report": x.report}))
                .collect();
            outln!("{}", serde_json::to_string_pretty(&all).unwrap_or_default())
        }
        AuditOutput::Json => {
            for x in &audited {
                outln!(
                    "{}",
                    serde_json::to_string_pretty(&x.report).unwrap_or_default()
                )
            }
        }
        AuditOutput::Text => {
            for x in &audited {
                if several {
                    outln!("== RunnerFencePolicy {}", x.policy);
                }
                out!("{}", audit::table(&x.report));
            }
        }
        AuditOutput::PolicyReport => {
            for rep in audited.iter().flat_map(|x| &x.reports) {
                outln!("---");
                let rep = rep.to_value()?;
                out!("{}", serde_saphyr::to_string(&rep).unwrap_or_default());
            }
        }
    }
    let bad = !refused.is_empty()
        || (several && audited.is_empty())
        || audited.iter().any(|x| x.report.has_violations());
    Ok(ExitCode::from(if bad { EXIT_DENIED } else { EXIT_OK }))
}
