//! The node cache: a watch on Nodes that keeps name, labels and taints.
//!
//! Reviews never wait on it: they read whatever snapshot was published last
//! into a [`NodeSink`] (the webhook's state).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::Api;
use kube::runtime::watcher::{self, Event};
use tokio::sync::watch;

use super::client::Access;
use super::nodes::NodeObject;
use crate::core::nodes::{NodeInfo, NodeSnapshot};
use crate::core::report::Report;

/// How long the watch waits after a failure: doubling from [`Backoff::FIRST`] up
/// to [`Backoff::MAX`], so an unreachable apiserver is not hammered, and back to
/// the first delay once an event arrives.
#[derive(Debug)]
struct Backoff {
    next: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_secs(1);
    const MAX: Duration = Duration::from_secs(30);

    fn new() -> Self {
        Backoff { next: Self::FIRST }
    }

    /// The delay before the next attempt, and doubles the one after.
    fn failed(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        d
    }

    fn reset(&mut self) {
        self.next = Self::FIRST;
    }
}

/// Where the cache publishes what it sees.
pub trait NodeSink: Send + Sync + 'static {
    /// A new view of the cluster's nodes.
    fn publish(&self, snapshot: NodeSnapshot);
    /// Whether the watch is currently up (it retries while down).
    fn watch_up(&self, up: bool);
}

/// Watches Nodes until `stop`, publishing snapshots into `state`; the cluster
/// is the one `access` (`serve --kubeconfig/--context`) names.
pub async fn run<S: NodeSink>(access: Access, state: Arc<S>, stop: watch::Receiver<bool>) {
    let client = match access.client().await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %Report(&e), "node cache: no Kubernetes client (kubeconfig or in-cluster); staying not ready");
            return;
        }
    };
    watch_nodes(client, state, stop).await;
}

/// The watch loop, separate from client construction so tests can point it at a fake API.
pub async fn watch_nodes<S: NodeSink>(
    client: kube::Client,
    state: Arc<S>,
    mut stop: watch::Receiver<bool>,
) {
    let api = Api::<NodeObject>::all(client);
    let mut nodes: HashMap<String, NodeInfo> = HashMap::new();
    let mut pending: Option<HashMap<String, NodeInfo>> = None;
    let stream = watcher::watcher(api, watcher::Config::default().page_size(500));
    tokio::pin!(stream);
    let mut backoff = Backoff::new();
    loop {
        let next = tokio::select! {
            n = stream.next() => n,
            _ = stop.wait_for(|s| *s) => return,
        };
        let Some(event) = next else { return };
        if event.is_ok() {
            backoff.reset();
        }
        match event {
            Ok(Event::Init) => pending = Some(HashMap::new()),
            Ok(Event::InitApply(n)) => {
                if let (Some(p), Some(i)) = (pending.as_mut(), n.into_info()) {
                    p.insert(i.name.clone(), i);
                }
            }
            Ok(Event::InitDone) => {
                if let Some(p) = pending.take() {
                    nodes = p;
                }
                state.watch_up(true);
                state.publish(NodeSnapshot::new(nodes.values().cloned()));
                tracing::info!(nodes = nodes.len(), "node cache synced");
            }
            Ok(Event::Apply(n)) => {
                if let Some(i) = n.into_info()
                    && nodes.get(&i.name) != Some(&i)
                {
                    nodes.insert(i.name.clone(), i);
                    state.publish(NodeSnapshot::new(nodes.values().cloned()));
                }
            }
            Ok(Event::Delete(n)) => {
                if let Some(name) = n.name()
                    && nodes.remove(name).is_some()
                {
                    state.publish(NodeSnapshot::new(nodes.values().cloned()));
                }
            }
            Err(e) => {
                // Keep serving from the last snapshot; the watcher retries.
                state.watch_up(false);
                let delay = backoff.failed();
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "node watch failed; serving the last known nodes");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watch_backs_off_exponentially_up_to_a_cap_and_resets_on_an_event() {
        let mut b = Backoff::new();
        let delays: Vec<u64> = (0..7).map(|_| b.failed().as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 30, 30]);
        b.reset();
        assert_eq!(b.failed(), Backoff::FIRST);
    }
}
