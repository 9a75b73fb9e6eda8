//! Where a request comes from, as data: what [`super::evaluate`] is asked
//! about. The webhook's AdmissionReviews (and what `eval` and `test` make of
//! their inputs) and the audit's stored pods go in through the same door, as
//! kubewarden's policy-server passes a request's origin to its one evaluate;
//! the origin only decides which request the rules judge.

use serde_json::Value;

use super::error::ReviewError;
use super::pod::PodView;
use super::{Operation, Request};

/// What the engine evaluates.
#[derive(Clone, Copy, Debug)]
pub enum Origin<'a> {
    /// An admission request as the apiserver sends it: a CREATE, an UPDATE
    /// with its old object, a binding, a subresource. `object` is
    /// `request.object` as sent: mutation's patch applies to it.
    Admission {
        /// The decoded request.
        request: Request<'a>,
        /// `request.object`, as sent.
        object: &'a Value,
    },
    /// A pod stored in the cluster, as the audit reads it, judged as the
    /// webhook would judge it at `moment`.
    Stored {
        /// The stored object.
        pod: &'a Value,
        /// Which admission request it stands for.
        moment: Moment,
    },
}

/// Which admission request a stored pod stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Moment {
    /// Created now: a CREATE of the pod without what the scheduler and the
    /// kubelet wrote (`spec.nodeName`, `status`), mutated, then validated.
    Created,
    /// When it becomes schedulable: the UPDATE that removes its scheduling
    /// gates, the stored pod as oldObject (no mutation runs on an UPDATE, and
    /// every violation counts once the last gate goes); for a pod without
    /// gates, an UPDATE without oldObject, since the scheduler may place it any
    /// moment.
    Schedulable,
}

/// A stored pod made into the admission request it stands for.
pub(super) struct AsAdmitted {
    /// The request's object.
    pub object: Value,
    decoded: Result<PodView, ReviewError>,
    old_object: Option<PodView>,
    operation: Operation,
}

impl AsAdmitted {
    /// The request `moment` makes of `pod`; an error when the stored pod,
    /// which an UPDATE compares with, does not decode.
    pub fn of(pod: &Value, moment: Moment) -> Result<Self, ReviewError> {
        let mut object = pod.clone();
        let (operation, old_object) = match moment {
            Moment::Created => {
                // Neither is the job's doing.
                if let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) {
                    spec.remove("nodeName");
                }
                if let Some(o) = object.as_object_mut() {
                    o.remove("status");
                }
                (Operation::Create, None)
            }
            Moment::Schedulable => {
                let stored = PodView::from_value(pod)?;
                if let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) {
                    spec.remove("schedulingGates");
                }
                (Operation::Update, stored.gated().then_some(stored))
            }
        };
        Ok(AsAdmitted {
            decoded: PodView::from_value(&object),
            object,
            old_object,
            operation,
        })
    }

    /// The engine's request, in the pod's own namespace.
    pub fn request(&self) -> Request<'_> {
        let namespace = self
            .object
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("");
        Request::pod(
            self.operation,
            namespace,
            &self.decoded,
            self.old_object.as_ref(),
        )
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn stored(gates: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "runner-x", "namespace": "gitlab-runner"},
            "spec": {"nodeName": "node-1", "schedulingGates": gates, "containers": [{"name": "build"}]},
            "status": {"phase": "Running"}})
    }

    #[test]
    fn created_is_a_create_without_what_the_scheduler_and_kubelet_wrote() {
        let a = AsAdmitted::of(&stored(json!([{"name": "g"}])), Moment::Created).expect("pod");
        let r = a.request();
        assert_eq!(
            (r.operation, r.namespace, r.name),
            (Operation::Create, "gitlab-runner", "runner-x")
        );
        assert!(r.old_object.is_none() && r.object.is_some());
        assert!(a.object["spec"].get("nodeName").is_none() && a.object.get("status").is_none());
        assert_eq!(a.object["spec"]["schedulingGates"], json!([{"name": "g"}]));
    }

    #[test]
    fn schedulable_is_the_update_that_removes_the_gates() {
        let gated =
            AsAdmitted::of(&stored(json!([{"name": "g"}])), Moment::Schedulable).expect("pod");
        let r = gated.request();
        assert_eq!(r.operation, Operation::Update);
        assert!(
            r.old_object.is_some_and(PodView::gated),
            "the stored pod, gated"
        );
        assert!(r.object.is_some_and(|p| !p.gated()));
        assert_eq!(gated.object["spec"]["nodeName"], "node-1");
        // Without gates: an UPDATE without oldObject, so every violation counts.
        let pending = AsAdmitted::of(&stored(json!([])), Moment::Schedulable).expect("pod");
        assert!(pending.request().old_object.is_none());
    }

    #[test]
    fn a_stored_pod_that_does_not_decode_is_an_error_or_an_invalid_object() {
        let mut bad = stored(json!([]));
        bad["spec"]["tolerations"] = json!("not a list");
        assert!(matches!(
            AsAdmitted::of(&bad, Moment::Schedulable),
            Err(ReviewError::InvalidPod(_))
        ));
        let created = AsAdmitted::of(&bad, Moment::Created).expect("decoded later");
        assert!(matches!(
            created.request().object_error,
            Some(ReviewError::InvalidPod(_))
        ));
    }
}
