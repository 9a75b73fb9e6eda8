//! The continuous audit (`serve --audit-interval-seconds`): every period, the
//! replica that leads audits the served policies as `runner-fence audit`
//! does and writes the PolicyReports in place. It runs on its own task: the
//! reads are paged and paced ([`Options::page_size`], [`Options::page_pause`]),
//! the judging hands the worker's other tasks (reviews) to the others, and
//! nothing of a pass is kept but its counts. Losing the Lease abandons the
//! pass under way and waits until this replica leads again.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::Client;
use tokio::sync::watch;

use super::policies::{Policies, Reports, audit_each};
use super::{Applied, ExpectedBackstop, Options, Report, now_seconds};
use crate::core::fleet::PolicySet;
use crate::k8s::Error;

/// How the continuous audit runs.
#[derive(Clone, Debug)]
pub struct Config {
    /// Time between the end of one pass and the start of the next.
    pub interval: Duration,
    /// Page size, pause between pages, the webhook's Service.
    pub options: Options,
    /// Whether to write PolicyReports (off: metrics and the log line only).
    pub write_reports: bool,
    /// The policy controller's release, whose backstop covers every served
    /// policy (None: a policy file's own backstop, `runner-fence-backstop`).
    pub release: Option<String>,
}

/// What one policy's audit found, in counts (the report itself is dropped).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// The policy.
    pub policy: String,
    /// Pods judged in its namespaces, unreadable ones included.
    pub pods_checked: u64,
    /// Findings by rule, every rule present ([`Report::findings_by_rule`]).
    pub findings: BTreeMap<&'static str, u64>,
    /// Whether `runner-fence audit` would exit 1 on it.
    pub violations: bool,
}

impl Summary {
    /// The counts of `report` for `policy`.
    pub fn of(policy: &str, report: &Report) -> Self {
        Summary {
            policy: policy.to_string(),
            pods_checked: (report.job_pods.len()
                + report.unreadable.iter().filter(|u| u.pod.is_some()).count())
                as u64,
            findings: report.findings_by_rule(),
            violations: report.has_violations(),
        }
    }
}

/// One finished pass over the served policies.
#[derive(Clone, Debug, Default)]
pub struct Pass {
    /// One per policy, in precedence order.
    pub policies: Vec<Summary>,
    /// The PolicyReports written, unchanged and deleted, over all policies.
    pub applied: Applied,
    /// How long the pass took.
    pub took: Duration,
    /// When it finished, seconds since the epoch.
    pub finished_at: i64,
}

impl Pass {
    /// Pods judged, over all policies.
    pub fn pods_checked(&self) -> u64 {
        self.policies.iter().map(|s| s.pods_checked).sum()
    }

    /// Findings by rule over all policies: summed, except `serving` (the one
    /// webhook Deployment, checked once per policy), which is the largest.
    pub fn findings(&self) -> BTreeMap<&'static str, u64> {
        let mut out: BTreeMap<&'static str, u64> = BTreeMap::new();
        for s in &self.policies {
            for (rule, n) in &s.findings {
                let e = out.entry(rule).or_default();
                *e = if *rule == "serving" {
                    (*e).max(*n)
                } else {
                    *e + n
                };
            }
        }
        out
    }

    /// Whether any policy's audit found something.
    pub fn violations(&self) -> bool {
        self.policies.iter().any(|s| s.violations)
    }
}

/// Where the continuous audit gets its policies and records its passes (the
/// webhook's state).
pub trait AuditSink: Send + Sync + 'static {
    /// The served policies; None while they are not known (the cluster's not
    /// listed yet): no pass then.
    fn audit_policies(&self) -> Option<Arc<PolicySet>>;
    /// A pass finished.
    fn audited(&self, pass: &Pass);
    /// A pass could not read the cluster or write its reports.
    fn audit_failed(&self);
}

/// One pass: each served policy's audit ([`audit_each`]: reads paced, each
/// page of pods judged and the reports built with the worker's other tasks
/// handed off) and its PolicyReports written
/// in place; with the policy controller's set, the reports of policies no
/// longer served are deleted.
pub async fn pass(client: &Client, set: Arc<PolicySet>, cfg: &Config) -> Result<Pass, Error> {
    let started = Instant::now();
    // The controller's backstop covers every served policy: compare with that.
    let options = Options {
        backstop: cfg.release.clone().map(|release| ExpectedBackstop {
            release,
            served: set.clone(),
        }),
        ..cfg.options.clone()
    };
    let served = Policies {
        set,
        all_of_the_cluster: cfg.release.is_some(),
        only: Vec::new(),
    };
    let reports = if cfg.write_reports {
        Reports::Apply
    } else {
        Reports::None
    };
    let mut out = Pass::default();
    let unserved = audit_each(client, &served, &options, reports, |a| {
        if let Some(a) = a.applied {
            out.applied.written += a.written;
            out.applied.unchanged += a.unchanged;
            out.applied.deleted += a.deleted;
            out.applied.skipped += a.skipped;
        }
        out.policies.push(Summary::of(&a.policy, &a.report));
    })
    .await?;
    out.applied.deleted += unserved;
    out.took = started.elapsed();
    out.finished_at = now_seconds();
    Ok(out)
}

/// The nonzero findings, `rule=N,...`, for the log line.
fn nonzero(findings: &BTreeMap<&'static str, u64>) -> String {
    let parts: Vec<String> = findings
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(r, n)| format!("{r}={n}"))
        .collect();
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(",")
    }
}

/// Runs a pass every `cfg.interval` while `leader` is true, until `stop`.
/// The first pass starts when this replica starts leading; losing the Lease
/// abandons the pass under way (nothing more is written).
pub async fn run<S: AuditSink>(
    client: Client,
    cfg: Config,
    sink: Arc<S>,
    mut leader: watch::Receiver<bool>,
    mut stop: watch::Receiver<bool>,
) {
    let interval = cfg.interval.max(Duration::from_secs(1));
    loop {
        tokio::select! {
            r = leader.wait_for(|l| *l) => if r.is_err() { return },
            _ = stop.wait_for(|s| *s) => return,
        }
        let Some(set) = sink.audit_policies() else {
            // Not synced yet: never report on an empty view.
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                _ = stop.wait_for(|s| *s) => return,
            }
        };
        // With no policy served, a pass only removes the PolicyReports of
        // deleted ones, which only the controller's set can tell.
        let cleanup_only = set.is_empty();
        if cleanup_only && !(cfg.write_reports && cfg.release.is_some()) {
            tracing::debug!("audit: no policy is served; nothing to audit");
        } else {
            tokio::select! {
                r = pass(&client, set, &cfg) => match r {
                    Ok(p) if cleanup_only => tracing::info!(
                        reports_deleted = p.applied.deleted,
                        "audit: no policy is served; nothing to audit"
                    ),
                    Ok(p) => {
                        sink.audited(&p);
                        tracing::info!(
                            policies = p.policies.len(),
                            pods_checked = p.pods_checked(),
                            findings = %nonzero(&p.findings()),
                            reports_written = p.applied.written,
                            reports_unchanged = p.applied.unchanged,
                            reports_deleted = p.applied.deleted,
                            reports_skipped = p.applied.skipped,
                            duration_ms = p.took.as_millis() as u64,
                            "audit pass"
                        );
                    }
                    Err(e) => {
                        sink.audit_failed();
                        tracing::warn!(
                            error = %crate::core::report::Report(&e),
                            "audit pass failed; the next one is in --audit-interval-seconds"
                        );
                    }
                },
                r = leader.wait_for(|l| !*l) => {
                    if r.is_err() { return }
                    tracing::info!("audit: lost the Lease; pass abandoned");
                    continue;
                }
                _ = stop.wait_for(|s| *s) => return,
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            r = leader.wait_for(|l| !*l) => if r.is_err() { return },
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn findings_add_up_over_policies_but_serving_counts_once() {
        let s = |policy: &str, unreadable: u64, serving: u64| Summary {
            policy: policy.into(),
            pods_checked: 3,
            findings: [("unreadable", unreadable), ("serving", serving)].into(),
            violations: unreadable + serving > 0,
        };
        let pass = Pass {
            policies: vec![s("a", 1, 2), s("b", 2, 2)],
            ..Pass::default()
        };
        assert_eq!(pass.pods_checked(), 6);
        let f = pass.findings();
        assert_eq!(f["unreadable"], 3);
        assert_eq!(f["serving"], 2);
        assert!(pass.violations());
        assert_eq!(nonzero(&f), "serving=2,unreadable=3");
        assert_eq!(nonzero(&BTreeMap::from([("x", 0)])), "none");
    }
}
