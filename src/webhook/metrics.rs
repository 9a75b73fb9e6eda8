//! Prometheus metrics of the webhook.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

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
