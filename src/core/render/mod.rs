//! Configuration generated from the policy: one implementation each, so the
//! runner's config.toml, the webhook configurations and what `audit` checks
//! can never drift from what the engine enforces.
//!
//! Kubernetes objects are built typed (k8s-openapi) and turned into JSON once,
//! by [`Object::to_value`], where they leave the render layer.

pub mod admission_policy;
pub mod cluster;
pub mod crd;
pub mod generated;
pub mod placement;
mod runner_config;
pub mod webhooks;

use k8s_openapi::Resource;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
    ValidatingWebhookConfiguration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
pub use runner_config::runner_config;
use serde_json::Value;

/// One generated admission object, typed until it is written out.
#[derive(Clone, Debug, PartialEq)]
pub enum Object {
    /// `render webhooks`' first object.
    Mutating(Box<MutatingWebhookConfiguration>),
    /// `render webhooks`' second object.
    Validating(Box<ValidatingWebhookConfiguration>),
    /// A backstop policy (`render admission-policy`).
    Policy(Box<ValidatingAdmissionPolicy>),
    /// The binding of the backstop policy of the same name.
    Binding(Box<ValidatingAdmissionPolicyBinding>),
}

impl Object {
    /// `kind`, as Kubernetes spells it.
    pub fn kind(&self) -> &'static str {
        match self {
            Object::Mutating(_) => MutatingWebhookConfiguration::KIND,
            Object::Validating(_) => ValidatingWebhookConfiguration::KIND,
            Object::Policy(_) => ValidatingAdmissionPolicy::KIND,
            Object::Binding(_) => ValidatingAdmissionPolicyBinding::KIND,
        }
    }

    /// `metadata.name`.
    pub fn name(&self) -> &str {
        let meta = match self {
            Object::Mutating(o) => &o.metadata,
            Object::Validating(o) => &o.metadata,
            Object::Policy(o) => &o.metadata,
            Object::Binding(o) => &o.metadata,
        };
        meta.name.as_deref().unwrap_or_default()
    }

    /// The object as JSON, with `apiVersion` and `kind`: the one place it is serialised.
    pub fn to_value(&self) -> Value {
        let v = match self {
            Object::Mutating(o) => serde_json::to_value(o),
            Object::Validating(o) => serde_json::to_value(o),
            Object::Policy(o) => serde_json::to_value(o),
            Object::Binding(o) => serde_json::to_value(o),
        };
        // Serialising these types cannot fail (no maps with non-string keys).
        v.unwrap_or_default()
    }
}

/// A YAML stream of `objects` after a `#` comment `header`.
pub(crate) fn yaml_stream(header: &str, objects: &[Object]) -> String {
    let mut out = header.to_string();
    for o in objects {
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(&o.to_value()).unwrap_or_default());
    }
    out
}

/// The metadata of every generated object: its name and runner-fence's label.
pub(crate) fn metadata(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        labels: Some(
            [(
                "app.kubernetes.io/name".to_string(),
                "runner-fence".to_string(),
            )]
            .into(),
        ),
        ..ObjectMeta::default()
    }
}
