//! Reading one Node on demand, for the requests that name a node while the
//! node cache is off (`pods/binding`, `bindings`, `pods/ephemeralcontainers`
//! on a bound pod): without it only `protectedNodes.names` could tell whether
//! the node is GitLab's, and a binding of a pod created before enforcement
//! would be admitted onto any GitLab node not listed by name.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Taint;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Api, Client};
use serde::Deserialize;

use crate::core::nodes::NodeInfo;

/// A Node as runner-fence reads it (the cache's watch, `audit`'s list, the
/// lookup): name, labels and taints, and the metadata the watch needs. A
/// Node's status (images, conditions, addresses) and its managed fields are
/// most of its JSON and are skipped while it is read, never held: 5,000 full
/// Nodes decoded 500 a page were most of the node cache's memory.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct NodeObject {
    #[serde(deserialize_with = "lean_meta")]
    metadata: ObjectMeta,
    #[serde(default)]
    spec: NodeSpec,
}

#[derive(Clone, Debug, Default, Deserialize)]
struct NodeSpec {
    #[serde(default)]
    taints: Option<Vec<Taint>>,
}

/// The metadata fields kept: identity, the watch's resourceVersion, labels.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LeanMeta {
    name: Option<String>,
    uid: Option<String>,
    resource_version: Option<String>,
    labels: Option<BTreeMap<String, String>>,
}

fn lean_meta<'de, D: serde::Deserializer<'de>>(d: D) -> Result<ObjectMeta, D::Error> {
    let m = LeanMeta::deserialize(d)?;
    Ok(ObjectMeta {
        name: m.name,
        uid: m.uid,
        resource_version: m.resource_version,
        labels: m.labels,
        ..ObjectMeta::default()
    })
}

impl NodeObject {
    /// What the rules see of it; None for a Node without a name.
    pub(crate) fn into_info(self) -> Option<NodeInfo> {
        Some(NodeInfo {
            name: self.metadata.name?,
            labels: self.metadata.labels.unwrap_or_default(),
            taints: self.spec.taints.unwrap_or_default(),
        })
    }

    /// `metadata.name`.
    pub(crate) fn name(&self) -> Option<&str> {
        self.metadata.name.as_deref()
    }
}

impl kube::Resource for NodeObject {
    type DynamicType = ();
    type Scope = k8s_openapi::ClusterResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        "Node".into()
    }
    fn group(_: &()) -> Cow<'_, str> {
        "".into()
    }
    fn version(_: &()) -> Cow<'_, str> {
        "v1".into()
    }
    fn plural(_: &()) -> Cow<'_, str> {
        "nodes".into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// How long a review may wait for the Node (the apiserver's webhook timeout is at most 5 s).
const TIMEOUT: Duration = Duration::from_secs(2);

/// Reads Nodes by name through the API.
#[derive(Clone)]
pub struct NodeReader {
    api: Api<NodeObject>,
}

/// What a lookup found.
#[derive(Debug)]
pub enum Lookup {
    /// The node, as the rules see it.
    Found(NodeInfo),
    /// No such node.
    NotFound,
    /// The API did not answer in time or refused (RBAC, network): the reason.
    Failed(String),
}

impl NodeReader {
    /// A reader on this client.
    pub fn new(client: Client) -> Self {
        NodeReader {
            api: Api::all(client),
        }
    }

    /// A reader on the cluster `access` names (kubeconfig or in-cluster), if it can be reached.
    pub async fn from_access(access: &super::Access) -> Result<Self, super::Error> {
        Ok(Self::new(access.client().await?))
    }

    /// Reads one node, within [`TIMEOUT`].
    pub async fn get(&self, name: &str) -> Lookup {
        match tokio::time::timeout(TIMEOUT, self.api.get_opt(name)).await {
            Ok(Ok(Some(node))) => node
                .into_info()
                .map(Lookup::Found)
                .unwrap_or(Lookup::NotFound),
            Ok(Ok(None)) => Lookup::NotFound,
            Ok(Err(e)) => Lookup::Failed(e.to_string()),
            Err(_) => Lookup::Failed(format!("no answer within {} s", TIMEOUT.as_secs())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_is_read_as_name_labels_and_taints_and_its_status_is_not_kept() {
        let json = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": "gitlab-1",
                "uid": "u-1",
                "resourceVersion": "42",
                "labels": {"workload": "gitlab"},
                "annotations": {"big": "x"},
                "managedFields": [{"manager": "kubelet", "fieldsV1": {"f:status": {}}}]
            },
            "spec": {
                "podCIDR": "10.0.0.0/24",
                "taints": [{"key": "dedicated", "value": "gitlab", "effect": "NoSchedule"}]
            },
            "status": {"images": [{"names": ["a"], "sizeBytes": 1}], "conditions": []}
        });
        let n: NodeObject = serde_json::from_value(json.clone()).expect("node");
        // What the watch needs of its metadata stays.
        use kube::Resource as _;
        assert_eq!(n.meta().resource_version.as_deref(), Some("42"));
        assert!(n.meta().annotations.is_none() && n.meta().managed_fields.is_none());
        // The same NodeInfo as from the full typed Node.
        let full: k8s_openapi::api::core::v1::Node = serde_json::from_value(json).expect("node");
        assert_eq!(n.into_info(), NodeInfo::from_node(&full));
        // A Node without spec or labels is read too.
        let bare: NodeObject =
            serde_json::from_value(serde_json::json!({"metadata": {"name": "n"}})).expect("bare");
        let info = bare.into_info().expect("named");
        assert!(info.labels.is_empty() && info.taints.is_empty());
        assert_eq!(
            <NodeObject as kube::Resource>::url_path(&(), None),
            "/api/v1/nodes"
        );
    }
}
