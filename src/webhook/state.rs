//! What the running server shares between its tasks: the policy (swapped on
//! reload), the node snapshot (published by the node cache), readiness and metrics.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use arc_swap::{ArcSwap, ArcSwapOption};

use super::metrics::Metrics;
use crate::core::nodes::NodeSnapshot;
use crate::core::policy::Policy;
use crate::k8s::cache::NodeSink;
use crate::k8s::nodes::{Lookup, NodeReader};

/// Shared state of a running server.
pub struct State {
    /// The active policy.
    pub policy: ArcSwap<Policy>,
    /// The node cache's latest snapshot (None when disabled or not synced yet).
    pub nodes: ArcSwapOption<NodeSnapshot>,
    /// Metrics.
    pub metrics: Metrics,
    node_cache_enabled: bool,
    /// Reads a named node when there is no snapshot (None: no cluster access).
    node_reader: OnceLock<Option<NodeReader>>,
    nodes_synced: AtomicBool,
    shutting_down: AtomicBool,
}

impl State {
    /// State serving `policy`.
    pub fn new(policy: Policy, node_cache_enabled: bool) -> Self {
        let metrics = Metrics::new();
        metrics.set_policy(&policy.metadata.name, &policy.content_hash());
        State {
            policy: ArcSwap::from_pointee(policy),
            nodes: ArcSwapOption::empty(),
            metrics,
            node_cache_enabled,
            node_reader: OnceLock::new(),
            nodes_synced: AtomicBool::new(false),
            shutting_down: AtomicBool::new(false),
        }
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
