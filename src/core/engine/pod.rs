//! The parts of a Pod (and Binding) the engine reads, decoded with
//! k8s-openapi types in the same pass that reads the AdmissionReview.
//!
//! Only the fields the rules look at are decoded; everything else (env,
//! volume mounts, `managedFields`, `status`, fields unknown to k8s-openapi) is
//! skipped without allocating, and the patch never touches it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, ContainerPort, HostPathVolumeSource, NodeSelectorTerm, PodSchedulingGate,
    ResourceRequirements, SecurityContext, Toleration,
};
use serde::{Deserialize, Serialize};

use super::ReviewError;
use crate::core::policy::{Operator, Requirement};

/// Pod metadata fields used for matching and mutation.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MetaView {
    /// `metadata.name` (empty at CREATE for generateName pods).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `metadata.generateName`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generate_name: Option<String>,
    /// `metadata.labels`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    /// `metadata.annotations`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// A container, as far as placement, resources and Fargate are concerned.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerView {
    /// `name` (decides the role: build, helper, service).
    #[serde(default)]
    pub name: String,
    /// `resources`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// `securityContext`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<SecurityContext>,
    /// `ports`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<ContainerPort>>,
}

/// A volume: only whether it is a hostPath matters.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeView {
    /// `name`.
    #[serde(default)]
    pub name: String,
    /// `hostPath`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_path: Option<HostPathVolumeSource>,
}

/// The pod spec fields the rules read.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SpecView {
    /// `nodeSelector`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    /// `affinity`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// `tolerations`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,
    /// `nodeName`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// `containers`.
    #[serde(default)]
    pub containers: Vec<ContainerView>,
    /// `initContainers`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_containers: Option<Vec<ContainerView>>,
    /// `ephemeralContainers`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ephemeral_containers: Option<Vec<ContainerView>>,
    /// `hostNetwork`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_network: Option<bool>,
    /// `hostPID`.
    #[serde(default, rename = "hostPID", skip_serializing_if = "Option::is_none")]
    pub host_pid: Option<bool>,
    /// `hostIPC`.
    #[serde(default, rename = "hostIPC", skip_serializing_if = "Option::is_none")]
    pub host_ipc: Option<bool>,
    /// `volumes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<Vec<VolumeView>>,
    /// Pod-level `resources` (Kubernetes 1.32+).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// `schedulingGates`: while any is set the scheduler leaves the pod alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduling_gates: Option<Vec<PodSchedulingGate>>,
}

/// A pod as the engine sees it (or, for `pods/binding`, a Binding: then only
/// `metadata` and `target` are set).
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
pub struct PodView {
    /// Metadata subset.
    #[serde(default)]
    pub metadata: MetaView,
    /// Spec subset.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "object_only"
    )]
    pub spec: Option<SpecView>,
    /// A Binding's target node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<BindingTarget>,
}

/// `target` of a Binding.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
pub struct BindingTarget {
    /// Node name.
    #[serde(default)]
    pub name: String,
}

/// An optional struct that must be a JSON object (or null): serde's derive would
/// also accept an array, filling fields by position, which no apiserver sends.
pub(crate) fn object_only<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct V<T>(std::marker::PhantomData<T>);
    impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for V<T> {
        type Value = Option<T>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a JSON object or null")
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D2: serde::Deserializer<'de>>(self, d: D2) -> Result<Self::Value, D2::Error> {
            d.deserialize_any(self)
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            T::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(Some)
        }
    }
    d.deserialize_option(V(std::marker::PhantomData))
}

fn decode_err(e: serde_json::Error) -> ReviewError {
    ReviewError::InvalidPod(e.into())
}

impl PodView {
    /// Decodes a pod from JSON text.
    pub fn decode(text: &str) -> Result<Self, ReviewError> {
        if !text.trim_start().starts_with('{') {
            return Err(ReviewError::NotAnObject);
        }
        serde_json::from_str(text).map_err(decode_err)
    }

    /// Decodes a pod from a JSON value (audit mode, after applying a patch).
    pub fn from_value(v: &serde_json::Value) -> Result<Self, ReviewError> {
        if !v.is_object() {
            return Err(ReviewError::NotAnObject);
        }
        PodView::deserialize(v).map_err(decode_err)
    }

    /// The name to match prefixes against: the name, or generateName while it is empty.
    pub fn match_name(&self) -> &str {
        self.metadata.match_name()
    }

    /// Pod labels (empty when none).
    pub fn labels(&self) -> &BTreeMap<String, String> {
        self.metadata.labels()
    }

    /// The spec, or an empty one.
    pub fn spec(&self) -> &SpecView {
        static EMPTY: std::sync::OnceLock<SpecView> = std::sync::OnceLock::new();
        self.spec
            .as_ref()
            .unwrap_or_else(|| EMPTY.get_or_init(SpecView::default))
    }

    /// `spec.nodeSelector` as requirements.
    pub fn node_selector(&self) -> Vec<Requirement> {
        self.spec()
            .node_selector
            .iter()
            .flatten()
            .map(|(k, v)| Requirement::equals(k, v))
            .collect()
    }

    /// The required nodeSelectorTerms (empty when there are none).
    pub fn required_terms(&self) -> &[NodeSelectorTerm] {
        self.spec()
            .affinity
            .as_ref()
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|n| {
                n.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .map(|r| r.node_selector_terms.as_slice())
            .unwrap_or(&[])
    }

    /// Whether the scheduler is held off by a scheduling gate.
    pub fn gated(&self) -> bool {
        self.spec()
            .scheduling_gates
            .as_ref()
            .is_some_and(|g| !g.is_empty())
    }

    /// Every container with its JSON path prefix and whether it is an init container.
    pub fn containers(&self) -> impl Iterator<Item = (String, &ContainerView, bool)> {
        let spec = self.spec();
        let init = spec
            .init_containers
            .iter()
            .flatten()
            .enumerate()
            .map(|(i, c)| (format!("spec.initContainers[{i}]"), c, true));
        let main = spec
            .containers
            .iter()
            .enumerate()
            .map(|(i, c)| (format!("spec.containers[{i}]"), c, false));
        init.chain(main)
    }
}

impl MetaView {
    /// The name, or generateName while the name is empty.
    pub fn match_name(&self) -> &str {
        match self.name.as_deref() {
            Some(n) if !n.is_empty() => n,
            _ => self.generate_name.as_deref().unwrap_or(""),
        }
    }

    /// Labels (empty when none).
    pub fn labels(&self) -> &BTreeMap<String, String> {
        static EMPTY: BTreeMap<String, String> = BTreeMap::new();
        self.labels.as_ref().unwrap_or(&EMPTY)
    }
}

/// A term's label requirements, or `None` when the term can match no node
/// (empty, or an operator the engine does not know).
pub(crate) fn term_requirements(term: &NodeSelectorTerm) -> Option<Vec<Requirement>> {
    let exprs = term.match_expressions.as_deref().unwrap_or(&[]);
    let fields = term.match_fields.as_deref().unwrap_or(&[]);
    if exprs.is_empty() && fields.is_empty() {
        // Kubernetes: an empty term matches no objects.
        return None;
    }
    exprs
        .iter()
        .map(|e| {
            Some(Requirement {
                key: e.key.clone(),
                operator: Operator::parse(&e.operator)?,
                values: e.values.clone().unwrap_or_default(),
            })
        })
        .collect()
}

/// The node names a term's `matchFields` pins it to (`metadata.name In [...]`).
pub(crate) fn term_node_names(term: &NodeSelectorTerm) -> impl Iterator<Item = (usize, &str)> {
    term.match_fields
        .iter()
        .flatten()
        .enumerate()
        .filter(|(_, f)| f.key == "metadata.name" && f.operator == "In")
        .flat_map(|(j, f)| f.values.iter().flatten().map(move |v| (j, v.as_str())))
}

/// Whether a node name meets a term's `matchFields`.
pub(crate) fn fields_match(term: &NodeSelectorTerm, node_name: &str) -> bool {
    term.match_fields.iter().flatten().all(|f| {
        let in_values = f.values.iter().flatten().any(|v| v == node_name);
        match (f.key.as_str(), f.operator.as_str()) {
            ("metadata.name", "In") => in_values,
            ("metadata.name", "NotIn") => !in_values,
            _ => false,
        }
    })
}

/// Pointer-free path of the required terms, for messages.
pub(crate) const TERMS_PATH: &str =
    "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms";
