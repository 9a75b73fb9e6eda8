//! Reading one Node on demand, for the requests that name a node while the
//! node cache is off (`pods/binding`, `bindings`, `pods/ephemeralcontainers`
//! on a bound pod): without it only `protectedNodes.names` could tell whether
//! the node is GitLab's, and a binding of a pod created before enforcement
//! would be admitted onto any GitLab node not listed by name.

use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::{Api, Client};

use crate::core::nodes::NodeInfo;

/// How long a review may wait for the Node (the apiserver's webhook timeout is at most 5 s).
const TIMEOUT: Duration = Duration::from_secs(2);

/// Reads Nodes by name through the API.
#[derive(Clone)]
pub struct NodeReader {
    api: Api<Node>,
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
            Ok(Ok(Some(node))) => NodeInfo::from_node(&node)
                .map(Lookup::Found)
                .unwrap_or(Lookup::NotFound),
            Ok(Ok(None)) => Lookup::NotFound,
            Ok(Err(e)) => Lookup::Failed(e.to_string()),
            Err(_) => Lookup::Failed(format!("no answer within {} s", TIMEOUT.as_secs())),
        }
    }
}
