//! The parts of a Pod (and Binding) the engine reads, decoded with
//! k8s-openapi types. `managedFields`, `status` and unknown fields are never
//! decoded: they are not the engine's business and the patch never touches them.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, NodeSelectorTerm, PodSpec};
use serde::Deserialize;
use serde_json::Value;

use crate::policy::{Operator, Requirement};

/// Pod metadata fields used for matching and mutation.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetaView {
    /// `metadata.name` (empty at CREATE for generateName pods).
    #[serde(default)]
    pub name: Option<String>,
    /// `metadata.generateName`.
    #[serde(default)]
    pub generate_name: Option<String>,
    /// `metadata.namespace`.
    #[serde(default)]
    pub namespace: Option<String>,
    /// `metadata.labels`.
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
    /// `metadata.annotations`.
    #[serde(default)]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// A pod as the engine sees it.
#[derive(Debug, Default, Deserialize)]
pub struct PodView {
    /// Metadata subset.
    #[serde(default)]
    pub metadata: MetaView,
    /// The typed spec.
    #[serde(default)]
    pub spec: Option<PodSpec>,
}

impl PodView {
    /// Decodes a pod from the raw object without copying it.
    pub fn decode(raw: &Value) -> Result<Self, String> {
        if !raw.is_object() {
            return Err("object is not a JSON object".into());
        }
        PodView::deserialize(raw).map_err(|e| format!("object is not a valid Pod: {e}"))
    }

    /// The name to match prefixes against: the name, or generateName while it is empty.
    pub fn match_name(&self) -> &str {
        match self.metadata.name.as_deref() {
            Some(n) if !n.is_empty() => n,
            _ => self.metadata.generate_name.as_deref().unwrap_or(""),
        }
    }

    /// Pod labels (empty when none).
    pub fn labels(&self) -> &BTreeMap<String, String> {
        static EMPTY: BTreeMap<String, String> = BTreeMap::new();
        self.metadata.labels.as_ref().unwrap_or(&EMPTY)
    }

    /// The spec, or an empty one.
    pub fn spec(&self) -> &PodSpec {
        static EMPTY: std::sync::OnceLock<PodSpec> = std::sync::OnceLock::new();
        self.spec
            .as_ref()
            .unwrap_or_else(|| EMPTY.get_or_init(PodSpec::default))
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

    /// Every container with its JSON path prefix and whether it is an init container.
    pub fn containers(&self) -> impl Iterator<Item = (String, &Container, bool)> {
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

/// A term's label requirements, or `None` when the term can match no node
/// (empty, or an operator the engine does not know).
pub fn term_requirements(term: &NodeSelectorTerm) -> Option<Vec<Requirement>> {
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
pub fn term_node_names(term: &NodeSelectorTerm) -> impl Iterator<Item = (usize, &str)> {
    term.match_fields
        .iter()
        .flatten()
        .enumerate()
        .filter(|(_, f)| f.key == "metadata.name" && f.operator == "In")
        .flat_map(|(j, f)| f.values.iter().flatten().map(move |v| (j, v.as_str())))
}

/// Whether a node name meets a term's `matchFields`.
pub fn fields_match(term: &NodeSelectorTerm, node_name: &str) -> bool {
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
pub const TERMS_PATH: &str =
    "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms";
