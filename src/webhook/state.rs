//! What the running server shares between its tasks: the policy (swapped on
//! reload), the node snapshot (published by the node cache), readiness and metrics.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use arc_swap::{ArcSwap, ArcSwapOption};
use tokio::sync::watch;

use super::metrics::Metrics;
use crate::core::fleet::{PolicySet, State as PolicyState};
use crate::core::nodes::NodeSnapshot;
use crate::core::policy::Policy;
use crate::k8s::audit::continuous::{AuditSink, Pass};
use crate::k8s::cache::NodeSink;
use crate::k8s::controller::PolicySink;
use crate::k8s::nodes::{Lookup, NodeReader};

/// Shared state of a running server.
pub struct State {
    /// The active policies (one, or the cluster's Ready ones), swapped on reload.
    pub policies: ArcSwap<PolicySet>,
    /// The node cache's latest snapshot (None when disabled or not synced yet).
    pub nodes: ArcSwapOption<NodeSnapshot>,
    /// Metrics.
    pub metrics: Metrics,
    node_cache_enabled: bool,
    /// Reads a named node when there is no snapshot (None: no cluster access).
    node_reader: OnceLock<Option<NodeReader>>,
    nodes_synced: AtomicBool,
    /// None: policies come from a file; else whether the cluster's have been read.
    policies_synced: Option<AtomicBool>,
    /// None: the certificate comes from files; else whether the Secret's pair is served.
    certificate_synced: Option<AtomicBool>,
    shutting_down: AtomicBool,
    /// Whether this replica leads: always with a policy file; with the
    /// cluster's policies while it holds the controller's Lease.
    leader: watch::Sender<bool>,
}

impl State {
    /// State serving `policy`.
    pub fn new(policy: Policy, node_cache_enabled: bool) -> Self {
        let metrics = Metrics::new();
        metrics.set_policy(&policy.metadata.name, &policy.content_hash());
        State {
            policies: ArcSwap::from_pointee(PolicySet::single(policy)),
            nodes: ArcSwapOption::empty(),
            metrics,
            node_cache_enabled,
            node_reader: OnceLock::new(),
            nodes_synced: AtomicBool::new(false),
            policies_synced: None,
            certificate_synced: None,
            shutting_down: AtomicBool::new(false),
            leader: watch::Sender::new(true),
        }
    }

    /// State serving the policies of the cluster (none until they are read).
    pub fn from_cluster(node_cache_enabled: bool) -> Self {
        State {
            policies: ArcSwap::from_pointee(PolicySet::default()),
            nodes: ArcSwapOption::empty(),
            metrics: Metrics::new(),
            node_cache_enabled,
            node_reader: OnceLock::new(),
            nodes_synced: AtomicBool::new(false),
            policies_synced: Some(AtomicBool::new(false)),
            certificate_synced: None,
            shutting_down: AtomicBool::new(false),
            leader: watch::Sender::new(false),
        }
    }

    /// Not ready until [`State::certificate_loaded`] (`--manage-certificates`).
    pub fn await_certificate(&mut self) {
        self.certificate_synced = Some(AtomicBool::new(false));
    }

    /// The managed serving certificate is in use.
    pub fn certificate_loaded(&self) {
        if let Some(s) = &self.certificate_synced {
            s.store(true, Ordering::SeqCst);
        }
    }

    /// Serves one policy (a reloaded `--policy` file).
    pub fn set_policy(&self, policy: Policy) {
        self.metrics
            .set_policy(&policy.metadata.name, &policy.content_hash());
        self.policies.store(Arc::new(PolicySet::single(policy)));
    }

    /// Why `/readyz` fails; empty when ready.
    pub fn not_ready_reasons(&self) -> Vec<&'static str> {
        let mut r = Vec::new();
        if self.shutting_down.load(Ordering::SeqCst) {
            r.push("shutting down");
        }
        if self.node_cache_enabled && !self.nodes_synced.load(Ordering::SeqCst) {
            r.push("node cache not synced");
        }
        if self
            .policies_synced
            .as_ref()
            .is_some_and(|s| !s.load(Ordering::SeqCst))
        {
            r.push("policies not read from the cluster yet");
        }
        if self
            .certificate_synced
            .as_ref()
            .is_some_and(|s| !s.load(Ordering::SeqCst))
        {
            r.push("serving certificate not read from its Secret yet");
        }
        r
    }

    /// Publishes a node snapshot; the first one makes the server ready.
    pub fn set_nodes(&self, snapshot: NodeSnapshot) {
        self.metrics.nodes.set(snapshot.len() as i64);
        self.nodes.store(Some(Arc::new(snapshot)));
        self.nodes_synced.store(true, Ordering::SeqCst);
    }

    /// Sets how named nodes are read without the node cache (once, at start).
    pub fn set_node_reader(&self, reader: Option<NodeReader>) {
        let _ = self.node_reader.set(reader);
    }

    /// A snapshot holding just the node `name`, read from the API, for a request
    /// that names it while there is no node cache. Empty when it cannot be read:
    /// the rules then treat the node as possibly protected (fail closed).
    pub async fn look_up_node(&self, name: &str) -> NodeSnapshot {
        let Some(reader) = self.node_reader.get().and_then(Option::as_ref) else {
            self.metrics.node_lookup("no-client");
            return NodeSnapshot::default();
        };
        match reader.get(name).await {
            Lookup::Found(info) => {
                self.metrics.node_lookup("found");
                NodeSnapshot::new([info])
            }
            Lookup::NotFound => {
                self.metrics.node_lookup("not-found");
                NodeSnapshot::default()
            }
            Lookup::Failed(reason) => {
                self.metrics.node_lookup("error");
                tracing::warn!(node = name, %reason, "cannot read the node a request names; treating it as protected");
                NodeSnapshot::default()
            }
        }
    }

    /// Whether this replica leads, as it changes (the continuous audit runs
    /// only then).
    pub fn leadership(&self) -> watch::Receiver<bool> {
        self.leader.subscribe()
    }

    /// Starts the drain: `/readyz` turns 503.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }
}

impl NodeSink for State {
    fn publish(&self, snapshot: NodeSnapshot) {
        self.set_nodes(snapshot);
    }

    fn watch_up(&self, up: bool) {
        self.metrics.node_watch_up.set(i64::from(up));
    }
}

impl PolicySink for State {
    fn publish(&self, set: PolicySet) {
        self.metrics.policy_info.clear();
        for p in set.iter() {
            self.metrics.add_policy(&p.metadata.name, &p.content_hash());
        }
        self.policies.store(Arc::new(set));
        if let Some(s) = &self.policies_synced {
            s.store(true, Ordering::SeqCst);
        }
    }

    fn states(&self, counts: &[(PolicyState, usize)]) {
        for (state, n) in counts {
            self.metrics.set_policies(state.as_str(), *n);
        }
    }

    fn leader(&self, leads: bool) {
        self.metrics.leader.set(i64::from(leads));
        self.leader.send_replace(leads);
    }

    fn reconciled(&self, kind: &'static str, result: &'static str) {
        self.metrics.reconciled(kind, result);
    }
}

impl AuditSink for State {
    fn audit_policies(&self) -> Option<Arc<PolicySet>> {
        let synced = self
            .policies_synced
            .as_ref()
            .is_none_or(|s| s.load(Ordering::SeqCst));
        synced.then(|| self.policies.load_full())
    }

    fn audited(&self, pass: &Pass) {
        self.metrics.audit.record(pass);
    }

    fn audit_failed(&self) {
        self.metrics.audit.failed();
    }
}
