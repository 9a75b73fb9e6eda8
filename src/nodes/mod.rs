//! What runner-fence knows about Nodes: a plain snapshot the pure engine can
//! read, filled by the node cache when `--node-cache` is on.

pub mod cache;

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::Taint;
use serde::{Deserialize, Serialize};

/// The parts of a Node the `protected-nodes` rule needs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.labels`.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// `spec.taints`.
    #[serde(default)]
    pub taints: Vec<Taint>,
}

/// An immutable view of the cluster's nodes at one moment.
#[derive(Clone, Debug, Default)]
pub struct NodeSnapshot {
    nodes: HashMap<String, NodeInfo>,
}

impl NodeSnapshot {
    /// A snapshot of these nodes.
    pub fn new(nodes: impl IntoIterator<Item = NodeInfo>) -> Self {
        NodeSnapshot {
            nodes: nodes.into_iter().map(|n| (n.name.clone(), n)).collect(),
        }
    }

    /// A node by name.
    pub fn get(&self, name: &str) -> Option<&NodeInfo> {
        self.nodes.get(name)
    }

    /// Every node, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &NodeInfo> {
        self.nodes.values()
    }

    /// How many nodes are known.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether no node is known.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}
