//! What runner-fence knows about Nodes: a plain snapshot the pure engine can
//! read, filled by the node cache when `--node-cache` is on.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::Taint;
use serde::{Deserialize, Serialize};

use crate::core::document::{InputError, read_document};

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

impl NodeInfo {
    /// The parts of a Node runner-fence keeps; None for a Node without a name.
    pub fn from_node(n: &k8s_openapi::api::core::v1::Node) -> Option<NodeInfo> {
        Some(NodeInfo {
            name: n.metadata.name.clone()?,
            labels: n.metadata.labels.clone().unwrap_or_default(),
            taints: n
                .spec
                .as_ref()
                .and_then(|s| s.taints.clone())
                .unwrap_or_default(),
        })
    }
}

/// An immutable view of the cluster's nodes at one moment, indexed by label
/// so that finding GitLab's few nodes among thousands of runner nodes is cheap.
#[derive(Clone, Debug, Default)]
pub struct NodeSnapshot {
    nodes: HashMap<String, NodeInfo>,
    by_label: HashMap<(String, String), Vec<String>>,
}

impl NodeSnapshot {
    /// A snapshot of these nodes.
    pub fn new(nodes: impl IntoIterator<Item = NodeInfo>) -> Self {
        let nodes: HashMap<String, NodeInfo> =
            nodes.into_iter().map(|n| (n.name.clone(), n)).collect();
        let mut by_label: HashMap<(String, String), Vec<String>> = HashMap::new();
        for n in nodes.values() {
            for (k, v) in &n.labels {
                by_label
                    .entry((k.clone(), v.clone()))
                    .or_default()
                    .push(n.name.clone());
            }
        }
        NodeSnapshot { nodes, by_label }
    }

    /// Nodes carrying the label `key=value`.
    pub fn with_label<'a>(&'a self, key: &str, value: &str) -> impl Iterator<Item = &'a NodeInfo> {
        self.by_label
            .get(&(key.to_string(), value.to_string()))
            .into_iter()
            .flatten()
            .filter_map(|n| self.nodes.get(n))
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

/// Reads a YAML/JSON list of `{name, labels, taints}`: a static node view for
/// `eval --nodes`, test suites and `serve --nodes-file` (offline testing, benchmarks).
pub(crate) fn read_file(path: &std::path::Path) -> Result<NodeSnapshot, InputError> {
    let doc = read_document(path)?;
    let list: Vec<NodeInfo> =
        serde_json::from_value(doc).map_err(|source| InputError::NotNodes {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(NodeSnapshot::new(list))
}
