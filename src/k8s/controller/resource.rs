//! The `RunnerFencePolicy` custom resource as the controller reads it.
//!
//! `spec` and `status` stay JSON here: whatever is stored (a broken spec, a
//! status written by hand) must never break the watch; the one loader judges
//! the spec, and a status that does not parse counts as empty.

use std::borrow::Cow;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::ClusterResourceScope;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::core::fleet::{self, ALLOW_REMOVAL, Candidate, Status};
use crate::core::policy::{API_VERSION, GROUP, OBJECT_KIND, PLURAL, VERSION};

/// A `RunnerFencePolicy` (`runner-fence.dev/v1alpha1`, cluster-scoped).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RunnerFencePolicy {
    /// `runner-fence.dev/v1alpha1` (the apiserver needs it in what is written back).
    #[serde(rename = "apiVersion", default = "api_version")]
    pub api_version: String,
    /// `RunnerFencePolicy`.
    #[serde(default = "kind")]
    pub kind: String,
    /// Standard object metadata.
    pub metadata: ObjectMeta,
    /// The policy, as stored.
    #[serde(default)]
    pub spec: Value,
    /// What runner-fence wrote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Value>,
}

fn api_version() -> String {
    API_VERSION.into()
}

fn kind() -> String {
    OBJECT_KIND.into()
}

impl kube::Resource for RunnerFencePolicy {
    type DynamicType = ();
    type Scope = ClusterResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        OBJECT_KIND.into()
    }
    fn group(_: &()) -> Cow<'_, str> {
        GROUP.into()
    }
    fn version(_: &()) -> Cow<'_, str> {
        VERSION.into()
    }
    fn plural(_: &()) -> Cow<'_, str> {
        PLURAL.into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

impl RunnerFencePolicy {
    /// `metadata.name`.
    pub fn name(&self) -> &str {
        self.metadata.name.as_deref().unwrap_or("")
    }

    /// The stored status; one that does not parse counts as none.
    pub fn parsed_status(&self) -> Status {
        self.status
            .clone()
            .and_then(|s| serde_json::from_value(s).ok())
            .unwrap_or_default()
    }

    /// Whether runner-fence's finalizer is on it.
    pub fn has_finalizer(&self) -> bool {
        self.metadata
            .finalizers
            .iter()
            .flatten()
            .any(|f| f == fleet::FINALIZER)
    }

    /// The object judged by the one loader, with its last valid spec.
    pub fn candidate(&self) -> Candidate {
        let name = self.name().to_string();
        let status = self.parsed_status();
        let enforced = status.enforced_spec.as_ref().and_then(|s| {
            fleet::load_object(&name, s)
                .ok()
                .map(|p| (p, status.enforced_generation.unwrap_or(0)))
        });
        Candidate {
            created: self
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.as_second())
                .unwrap_or(i64::MAX),
            generation: self.metadata.generation.unwrap_or(0),
            spec: fleet::load_object(&name, &self.spec),
            spec_json: self.spec.clone(),
            enforced,
            enforced_json: status.enforced_spec,
            deleting: self.metadata.deletion_timestamp.is_some(),
            removal_allowed: self
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(ALLOW_REMOVAL))
                .is_some_and(|v| v == "true"),
            name,
        }
    }
}
