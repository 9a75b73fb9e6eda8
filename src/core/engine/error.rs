//! Why a request could not be reviewed: the engine's error type. Such a
//! request is denied (HTTP 200, `code: 400`) with this message, because the
//! apiserver is waiting for an answer with its uid.

use std::sync::Arc;

use super::Operation;

/// A request the engine cannot judge.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ReviewError {
    /// `request.operation` is not one the apiserver sends.
    #[error("unknown operation {0:?}")]
    UnknownOperation(String),
    /// A resource the webhook configuration should never have sent.
    #[error(
        "runner-fence reviews only pods, pods/binding, bindings, pods/ephemeralcontainers and pods/resize, but was sent {group}/{resource} {kind}; fix the rules of the webhook configuration"
    )]
    UnsupportedResource {
        /// API group (`core` for the empty group).
        group: String,
        /// Resource.
        resource: String,
        /// Kind.
        kind: String,
    },
    /// CREATE or UPDATE without `object`.
    #[error("{operation} request for pod {name:?} has no object")]
    NoObject {
        /// The operation.
        operation: Operation,
        /// `request.name`.
        name: String,
    },
    /// A Pod without `spec`.
    #[error("{operation} request for pod {name:?} has no spec")]
    NoSpec {
        /// The operation.
        operation: Operation,
        /// `request.name`.
        name: String,
    },
    /// A Binding without a target node.
    #[error("binding of pod {name:?} has no target.name")]
    NoBindingTarget {
        /// `request.name`.
        name: String,
    },
    /// `object` is not a JSON object.
    #[error("object is not a JSON object")]
    NotAnObject,
    /// `object` does not decode as a Pod.
    #[error("object is not a valid Pod")]
    InvalidPod(#[source] Arc<serde_json::Error>),
    /// `oldObject` could not be decoded.
    #[error("oldObject")]
    OldObject(#[source] Box<ReviewError>),
    /// The pod could not be encoded to apply a patch (a bug).
    #[error("internal")]
    Encode(#[source] Arc<serde_json::Error>),
    /// The mutation's patch does not apply to the object (a bug).
    #[error("the mutation patch does not apply")]
    PatchDoesNotApply(#[source] Arc<json_patch::PatchError>),
}
