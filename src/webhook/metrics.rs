//! Prometheus metrics of the webhook.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use std::sync::atomic::AtomicU64;

use crate::k8s::audit::continuous::Pass as AuditPass;

/// Labels of a review.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReviewLabels {
    /// `mutate` or `validate`.
    pub endpoint: &'static str,
    /// `allowed`, `denied`, `patched`, `skipped`.
    pub decision: &'static str,
    /// `enforce` or `audit` (the policy's mode).
    pub mode: &'static str,
    /// First rule that denied or was audited, `none` otherwise.
    pub rule: &'static str,
}

/// Labels of one violation.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ViolationLabels {
    /// `mutate` or `validate`.
    pub endpoint: &'static str,
    /// Rule id.
    pub rule: &'static str,
    /// `enforce` (denied) or `audit` (reported).
    pub mode: &'static str,
}

/// Labels with just an endpoint.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    /// `mutate` or `validate`.
    pub endpoint: &'static str,
}

/// Labels of a rejected request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BadRequestLabels {
    /// Path.
    pub endpoint: &'static str,
    /// Why.
    pub reason: &'static str,
}

/// Labels of a reload.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    /// `policy` or `certificate`.
    pub kind: &'static str,
    /// `ok` or `failed`.
    pub result: &'static str,
}

/// Labels of the policy-state gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyStateLabels {
    /// `Ready`, `Invalid`, `Conflict`, `Deleting`, `Released`.
    pub state: &'static str,
}

/// Labels of a reconciliation of a generated object.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    /// The object's kind.
    pub kind: &'static str,
    /// `applied`, `drift` (a hand edit reverted), `deleted`, `failed`.
    pub result: &'static str,
}

/// The results a reconciliation is counted under.
pub const RECONCILE_RESULTS: [&str; 4] = ["applied", "drift", "deleted", "failed"];

/// Labels identifying the active policy.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyLabels {
    /// `metadata.name`.
    pub name: String,
    /// Content hash.
    pub hash: String,
}

/// Labels of an on-demand node read.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeLookupLabels {
    /// `found`, `not-found`, `error` or `no-client`.
    pub result: &'static str,
}

/// Labels of the audit's findings.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AuditFindingLabels {
    /// A policy rule id, or `job-pod-outside-fence`, `runner-reach`,
    /// `unreadable`, `coverage-gap`, `backstop`, `serving`.
    pub rule: String,
}

/// Labels of an audit pass.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AuditRunLabels {
    /// `clean`, `findings` or `failed` (the cluster could not be read).
    pub result: &'static str,
}

/// The results an audit pass is counted under.
pub const AUDIT_RESULTS: [&str; 3] = ["clean", "findings", "failed"];

/// The `runner_fence_audit_*` family: what the last audit pass found.
/// Registered by [`Metrics::new`] (every exported family has a dashboard
/// panel) and recorded by the continuous audit with [`AuditMetrics::record`].
#[derive(Clone, Debug, Default)]
pub struct AuditMetrics {
    /// Pods judged in the runner namespaces by the last pass.
    pub pods_checked: Gauge,
    /// Findings of the last pass by rule (every rule present, zero or not).
    pub findings: Family<AuditFindingLabels, Gauge>,
    /// When the last pass finished, seconds since the epoch (0: none yet).
    pub last_run: Gauge,
    /// How long the last pass took.
    pub duration: Gauge<f64, AtomicU64>,
    /// Passes by result.
    pub runs: Family<AuditRunLabels, Counter>,
    /// `--audit-interval-seconds` (0: off), for the "not run" alert.
    pub interval: Gauge,
}

impl AuditMetrics {
    /// Creates the family and registers it (names get the registry's prefix).
    /// Every rule's and result's series exists from the start, at 0.
    pub fn register(registry: &mut Registry) -> Self {
        let m = AuditMetrics::default();
        registry.register(
            "audit_pods_checked",
            "Pods in the runner namespaces the last audit pass judged",
            m.pods_checked.clone(),
        );
        registry.register(
            "audit_findings",
            "Findings of the last audit pass, by rule",
            m.findings.clone(),
        );
        registry.register(
            "audit_last_run_timestamp_seconds",
            "When the last audit pass finished (0: none yet on this replica)",
            m.last_run.clone(),
        );
        registry.register(
            "audit_duration_seconds",
            "How long the last audit pass took",
            m.duration.clone(),
        );
        registry.register("audit_runs", "Audit passes, by result", m.runs.clone());
        registry.register(
            "audit_interval_seconds",
            "Seconds between audit passes (0: the continuous audit is off)",
            m.interval.clone(),
        );
        for rule in crate::k8s::audit::finding_rules() {
            m.findings
                .get_or_create(&AuditFindingLabels { rule: rule.into() })
                .set(0);
        }
        for result in AUDIT_RESULTS {
            let _ = m.runs.get_or_create(&AuditRunLabels { result });
        }
        m
    }

    /// Records a finished pass.
    pub fn record(&self, pass: &AuditPass) {
        self.pods_checked
            .set(i64::try_from(pass.pods_checked()).unwrap_or(i64::MAX));
        for (rule, n) in pass.findings() {
            self.findings
                .get_or_create(&AuditFindingLabels { rule: rule.into() })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        self.last_run.set(pass.finished_at);
        self.duration.set(pass.took.as_secs_f64());
        let result = if pass.violations() {
            "findings"
        } else {
            "clean"
        };
        self.runs.get_or_create(&AuditRunLabels { result }).inc();
    }

    /// Records a pass that could not read the cluster or write its reports
    /// (the last results stay).
    pub fn failed(&self) {
        self.runs
            .get_or_create(&AuditRunLabels { result: "failed" })
            .inc();
    }
}

type HistogramFamily = Family<EndpointLabels, Histogram, fn() -> Histogram>;

/// Every metric, registered in one registry.
pub struct Metrics {
    /// The registry `/metrics` encodes.
    pub registry: Registry,
    /// Reviews by endpoint, decision, mode, rule.
    pub reviews: Family<ReviewLabels, Counter>,
    /// Violations by rule and mode.
    pub violations: Family<ViolationLabels, Counter>,
    /// Review latency.
    pub latency: HistogramFamily,
    /// Requests answered with a 4xx before review.
    pub bad_requests: Family<BadRequestLabels, Counter>,
    /// Policy and certificate reloads.
    pub reloads: Family<ReloadLabels, Counter>,
    /// 1 for the active policy.
    pub policy_info: Family<PolicyLabels, Gauge>,
    /// Serving certificate `notAfter`, seconds since the epoch.
    pub cert_expiry: Gauge,
    /// Nodes in the node cache.
    pub nodes: Gauge,
    /// 1 when the node cache's watch is healthy.
    pub node_watch_up: Gauge,
    /// RunnerFencePolicy objects by state.
    pub policies: Family<PolicyStateLabels, Gauge>,
    /// 1 while this replica holds the reconciliation lease.
    pub leader: Gauge,
    /// Server-side applies and deletions of the generated objects.
    pub reconciles: Family<ReconcileLabels, Counter>,
    /// Nodes read on demand (no node cache), by result.
    pub node_lookups: Family<NodeLookupLabels, Counter>,
    /// The continuous audit's `runner_fence_audit_*` family.
    pub audit: AuditMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Buckets of the review latency histogram (doubling from 25 µs).
const LATENCY_BUCKETS: u16 = 19;

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("runner_fence");
        let reviews = Family::<ReviewLabels, Counter>::default();
        registry.register("reviews", "Admission reviews answered", reviews.clone());
        let violations = Family::<ViolationLabels, Counter>::default();
        registry.register(
            "violations",
            "Rule violations found, by rule and mode",
            violations.clone(),
        );
        // 25 µs to 6.5 s: the apiserver gives up after timeoutSeconds (at most 5 s),
        // so the p99 alert and dashboard can see anything up to that.
        let latency: HistogramFamily = Family::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.000_025, 2.0, LATENCY_BUCKETS))
        });
        registry.register(
            "review_duration_seconds",
            "Time to decide a review, body parsing included",
            latency.clone(),
        );
        let bad_requests = Family::<BadRequestLabels, Counter>::default();
        registry.register(
            "bad_requests",
            "Requests rejected before review",
            bad_requests.clone(),
        );
        let reloads = Family::<ReloadLabels, Counter>::default();
        registry.register("reloads", "Policy and certificate reloads", reloads.clone());
        let policy_info = Family::<PolicyLabels, Gauge>::default();
        registry.register("policy_info", "The active policy", policy_info.clone());
        let cert_expiry = Gauge::default();
        registry.register(
            "certificate_expiry_timestamp_seconds",
            "notAfter of the serving certificate",
            cert_expiry.clone(),
        );
        let nodes = Gauge::default();
        registry.register("node_cache_nodes", "Nodes in the node cache", nodes.clone());
        let node_watch_up = Gauge::default();
        registry.register(
            "node_cache_watch_up",
            "1 while the node watch is healthy",
            node_watch_up.clone(),
        );
        let policies = Family::<PolicyStateLabels, Gauge>::default();
        registry.register(
            "policies",
            "RunnerFencePolicy objects by state",
            policies.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica reconciles the generated objects",
            leader.clone(),
        );
        let reconciles = Family::<ReconcileLabels, Counter>::default();
        registry.register(
            "reconciles",
            "Applies and deletions of the generated webhook configurations and backstop",
            reconciles.clone(),
        );
        let node_lookups = Family::<NodeLookupLabels, Counter>::default();
        registry.register(
            "node_lookups",
            "Nodes read on demand for bindings and ephemeral containers without the node cache, by result",
            node_lookups.clone(),
        );
        let audit = AuditMetrics::register(&mut registry);
        // Every series exists from the start, at 0: dashboards and alerts see the
        // labels before the first policy or reconciliation.
        for state in crate::core::fleet::State::ALL {
            policies
                .get_or_create(&PolicyStateLabels {
                    state: state.as_str(),
                })
                .set(0);
        }
        for kind in crate::core::render::cluster::KINDS {
            for result in RECONCILE_RESULTS {
                let _ = reconciles.get_or_create(&ReconcileLabels { kind, result });
            }
        }
        Metrics {
            registry,
            policies,
            leader,
            reconciles,
            reviews,
            violations,
            latency,
            bad_requests,
            reloads,
            policy_info,
            cert_expiry,
            nodes,
            node_watch_up,
            node_lookups,
            audit,
        }
    }

    /// Counts an on-demand node read.
    pub fn node_lookup(&self, result: &'static str) {
        self.node_lookups
            .get_or_create(&NodeLookupLabels { result })
            .inc();
    }

    /// Counts a reload.
    pub fn reload(&self, kind: &'static str, ok: bool) {
        self.reloads
            .get_or_create(&ReloadLabels {
                kind,
                result: if ok { "ok" } else { "failed" },
            })
            .inc();
    }

    /// Marks the active policy (the only one).
    pub fn set_policy(&self, name: &str, hash: &str) {
        self.policy_info.clear();
        self.add_policy(name, hash);
    }

    /// Marks one more active policy.
    pub fn add_policy(&self, name: &str, hash: &str) {
        self.policy_info
            .get_or_create(&PolicyLabels {
                name: name.into(),
                hash: hash.into(),
            })
            .set(1);
    }

    /// How many policies are in `state`.
    pub fn set_policies(&self, state: &'static str, n: usize) {
        self.policies
            .get_or_create(&PolicyStateLabels { state })
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Counts a reconciliation of a generated object.
    pub fn reconciled(&self, kind: &'static str, result: &'static str) {
        self.reconciles
            .get_or_create(&ReconcileLabels { kind, result })
            .inc();
    }

    /// Counts a request rejected before review.
    pub fn bad_request(&self, endpoint: &'static str, reason: &'static str) {
        self.bad_requests
            .get_or_create(&BadRequestLabels { endpoint, reason })
            .inc();
    }

    /// Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_audit_family_reports_the_last_pass() {
        use crate::k8s::audit::continuous::{Pass, Summary};
        let m = Metrics::new();
        // Registered from the start: every rule and result at 0, no pass yet.
        let text = m.encode();
        for line in [
            "runner_fence_audit_findings{rule=\"unreadable\"} 0",
            "runner_fence_audit_findings{rule=\"placement\"} 0",
            "runner_fence_audit_runs_total{result=\"failed\"} 0",
            "runner_fence_audit_last_run_timestamp_seconds 0",
            "runner_fence_audit_interval_seconds 0",
        ] {
            assert!(text.contains(line), "no {line} in\n{text}");
        }
        let policy = crate::core::policy::embedded().expect("policy");
        // Bound to a runner node: judged as created (a pending one without the
        // profile's affinity would also be judged as it stands).
        let pod = |name: &str, tolerations: serde_json::Value| {
            serde_json::json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": "gitlab-runner", "uid": name},
                "spec": {"nodeName": "runner-1", "containers": [{"name": "build", "image": "alpine"}], "tolerations": tolerations}})
        };
        let inputs = crate::k8s::audit::Inputs {
            pods: vec![
                pod("ok", serde_json::json!([])),
                pod("bad", serde_json::json!([{"operator": "Exists"}])),
                serde_json::json!({"metadata": {"name": "broken", "namespace": "gitlab-runner"}, "spec": "not a pod spec"}),
            ],
            ..Default::default()
        };
        let report = crate::k8s::audit::analyze(&policy, &inputs);
        let pass = Pass {
            policies: vec![Summary::of("p", &report)],
            took: std::time::Duration::from_millis(1500),
            finished_at: 1_800_000_000,
            ..Pass::default()
        };
        m.audit.record(&pass);
        let text = m.encode();
        let value = |line: &str| {
            text.lines()
                .find(|l| l.starts_with(line))
                .unwrap_or_else(|| panic!("no {line} in\n{text}"))
                .rsplit(' ')
                .next()
                .unwrap_or("")
                .to_string()
        };
        assert_eq!(value("runner_fence_audit_pods_checked "), "3");
        assert_eq!(
            value("runner_fence_audit_findings{rule=\"protected-nodes\"}"),
            "1"
        );
        assert_eq!(
            value("runner_fence_audit_findings{rule=\"unreadable\"}"),
            "1"
        );
        assert_eq!(
            value("runner_fence_audit_findings{rule=\"resources\"}"),
            "0"
        );
        // No webhooks registered: both are gaps.
        assert_eq!(
            value("runner_fence_audit_findings{rule=\"coverage-gap\"}"),
            "2"
        );
        assert_eq!(
            value("runner_fence_audit_last_run_timestamp_seconds "),
            "1800000000"
        );
        assert_eq!(value("runner_fence_audit_duration_seconds "), "1.5");
        assert_eq!(
            value("runner_fence_audit_runs_total{result=\"findings\"}"),
            "1"
        );
        m.audit.failed();
        assert!(
            m.encode()
                .contains("runner_fence_audit_runs_total{result=\"failed\"} 1")
        );
    }

    #[test]
    fn latency_buckets_reach_the_apiserver_timeout() {
        let m = Metrics::new();
        m.latency
            .get_or_create(&EndpointLabels {
                endpoint: "validate",
            })
            .observe(4.0);
        let text = m.encode();
        let les: Vec<f64> = text
            .lines()
            .filter(|l| l.starts_with("runner_fence_review_duration_seconds_bucket"))
            .filter_map(|l| l.split("le=\"").nth(1)?.split('"').next()?.parse().ok())
            .filter(|le: &f64| le.is_finite())
            .collect();
        let largest = les.iter().copied().fold(0.0, f64::max);
        // timeoutSeconds is at most 5: a slow review must land in a finite bucket.
        assert!(largest >= 5.0, "largest bucket {largest}: {les:?}");
        assert!(les.iter().copied().fold(f64::MAX, f64::min) <= 0.000_025);
    }
}
