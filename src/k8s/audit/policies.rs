//! Each served policy's audit, as `audit` and the continuous audit run it:
//! read and judge the cluster ([`run_once`]), keep what the policy reviews
//! ([`restrict`]), build its PolicyReports and write them in place. One
//! sequence for both; the CLI prints what it returns, the pass counts it.

use std::sync::Arc;

use kube::Client;

use super::collect::off_the_runtime;
use super::reports::{self, BuiltReport, Stored};
use super::{Applied, Check, Options, Report, build_reports, now_seconds, run_once};
use crate::core::fleet::PolicySet;
use crate::core::policy::Policy;
use crate::core::rbac::Scope;
use crate::k8s::Error;

/// What becomes of each policy's PolicyReports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reports {
    /// Not built (text and JSON output, a pass without reports).
    None,
    /// Built and returned (printed).
    Build,
    /// Built, returned and written in place: new and changed ones applied,
    /// the policy's stale ones deleted.
    Apply,
}

/// The policies to audit and what they are.
#[derive(Clone, Debug)]
pub struct Policies {
    /// The policies, in precedence order.
    pub set: Arc<PolicySet>,
    /// Whether they are every policy the cluster serves (the policy
    /// controller's): then the PolicyReports of any other policy are a
    /// deleted policy's, and go.
    pub all_of_the_cluster: bool,
    /// Audit only these of `set` (all when empty); the others still decide
    /// which namespaces are fenced, and their PolicyReports are left alone.
    pub only: Vec<String>,
}

/// One policy's audit.
#[derive(Debug)]
pub struct Audited {
    /// The policy.
    pub policy: String,
    /// What it found, restricted to what the policy reviews.
    pub report: Report,
    /// Its PolicyReports (empty with [`Reports::None`]).
    pub reports: Vec<BuiltReport>,
    /// What writing them did ([`Reports::Apply`]).
    pub applied: Option<Applied>,
}

/// Keeps only what `policy` reviews in `set`: where two policies cover a
/// namespace the first reviews it, and a pod or grant in a namespace another
/// served policy covers is fenced, not outside the fence. The job pods outside
/// every policy's namespaces are the cluster's, not a policy's: only the
/// first policy's report lists them (the others name it), so each such pod
/// has one PolicyReport result and counts once in the findings.
pub fn restrict(report: &mut Report, policy: &Policy, set: &PolicySet) {
    let reviews = |ns: &str| {
        set.covering(ns)
            .is_none_or(|p| p.metadata.name == policy.metadata.name)
    };
    let fenced = |ns: &str| set.covering(ns).is_some();
    report.job_pods.retain(|p| reviews(&p.namespace));
    report
        .delete_or_fix_before_enforcing
        .retain(|p| reviews(&p.namespace));
    report.unreadable.retain(|u| match (&u.check, &u.pod) {
        (Check::Pod, Some(p)) => reviews(&p.namespace),
        _ => true,
    });
    report
        .job_pods_outside_fence
        .retain(|p| !fenced(&p.namespace));
    report.job_pods_outside_fence_listed_by = None;
    if let Some(first) = set.iter().next()
        && first.metadata.name != policy.metadata.name
    {
        report.job_pods_outside_fence.clear();
        report.job_pods_outside_fence_listed_by = Some(first.metadata.name.clone());
    }
    report.runner_reach.retain(|r| match &r.scope {
        Scope::Namespace(ns) => !fenced(ns),
        Scope::EveryNamespace | Scope::Cluster => true,
    });
}

/// Audits each policy of `served` in turn and hands `each` its result before
/// the next one starts (what `each` does not keep is dropped). Pods are
/// judged page by page as they are read ([`run_once`]), and restricting and
/// building the reports, like judging, hands a server's reviews to the other
/// workers first (on the worker's own thread: built on the blocking pool, the
/// reports' memory sat in another allocator arena). With [`Reports::Apply`], the stored reports are listed
/// once (metadata only), and where `served` is all of the cluster's policies
/// (and none is singled out by `only`), those of any other policy are deleted
/// at the end: how many is returned.
pub async fn audit_each(
    client: &Client,
    served: &Policies,
    opts: &Options,
    reports: Reports,
    mut each: impl FnMut(Audited),
) -> Result<usize, Error> {
    let set = &served.set;
    let mut stored: Option<Stored> = None;
    let audited = |name: &str| served.only.is_empty() || served.only.iter().any(|o| o == name);
    for policy in set.iter().filter(|p| audited(&p.metadata.name)) {
        let mut report = run_once(client.clone(), policy, opts).await?;
        let at = now_seconds();
        let name = policy.metadata.name.clone();
        let objects = off_the_runtime(|| {
            restrict(&mut report, policy, set);
            match reports {
                Reports::None => Ok(Vec::new()),
                Reports::Build | Reports::Apply => build_reports(&report, &name, at),
            }
        })?;
        let applied = match reports {
            Reports::Apply => {
                let listed = match stored.as_mut() {
                    Some(s) => s,
                    None => stored.insert(Stored::list(client, opts).await?),
                };
                Some(reports::apply_listed(client, listed, &objects, &name).await?)
            }
            Reports::None | Reports::Build => None,
        };
        each(Audited {
            policy: name,
            report,
            reports: objects,
            applied,
        });
    }
    if reports != Reports::Apply || !served.all_of_the_cluster || !served.only.is_empty() {
        return Ok(0);
    }
    // Also when no policy is served any more: the last one's reports go too.
    let stored = match stored {
        Some(s) => s,
        None => Stored::list(client, opts).await?,
    };
    let names: Vec<&str> = set.iter().map(|p| p.metadata.name.as_str()).collect();
    reports::delete_unserved(client, &stored, &names).await
}
