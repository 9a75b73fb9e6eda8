//! The documents `eval` and `test` review: an AdmissionReview as given, or a
//! Pod made into the request the apiserver would send for it.

use serde_json::{Value, json};

use super::Error;
use crate::core::document::{ReviewKind, review_kind};
use crate::core::engine::Operation;
use crate::core::policy::Policy;
use crate::webhook::admission::{self, AdmissionError};

/// Turns an input document into an AdmissionReview: reviews pass through,
/// Pods are wrapped as a request for `operation` in `namespace` (else the
/// Pod's own, else the policy's first literal namespace, else `default`).
pub(super) fn to_review(
    doc: Value,
    namespace: Option<&str>,
    operation: Operation,
    policy: &Policy,
    uid: &str,
) -> Result<Value, Error> {
    if review_kind(&doc)? == ReviewKind::AdmissionReview {
        if doc.get("request").is_none() {
            return Err(AdmissionError::NoRequest.into());
        }
        return Ok(doc);
    }
    let ns = namespace
        .map(str::to_string)
        .or_else(|| {
            doc.pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .map(String::from)
        })
        .or_else(|| {
            policy
                .matching
                .namespaces
                .iter()
                .find(|n| !n.ends_with('*'))
                .cloned()
        })
        .unwrap_or_else(|| "default".into());
    let name = doc
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let mut pod = doc;
    // The apiserver always sends metadata with the namespace set; a Pod
    // document written without any gets what the apiserver would add.
    if let Some(obj) = pod.as_object_mut() {
        let meta = obj.entry("metadata").or_insert_with(|| json!({}));
        if let Some(meta) = meta.as_object_mut() {
            meta.insert("namespace".into(), json!(ns));
        }
    }
    let old = if operation == Operation::Update {
        pod.clone()
    } else {
        Value::Null
    };
    Ok(json!({
        "apiVersion": admission::API_VERSION,
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "name": name,
            "namespace": ns,
            "operation": operation.as_str(),
            "userInfo": {"username": "runner-fence-eval"},
            "object": pod,
            "oldObject": old,
            "dryRun": true,
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::document::InputError;

    fn policy() -> Policy {
        crate::core::policy::embedded().expect("the reference policy")
    }

    #[test]
    fn a_pod_becomes_the_request_the_apiserver_would_send() {
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "runner-x"}, "spec": {}});
        let r = to_review(pod, None, Operation::Update, &policy(), "u-1").expect("review");
        let req = &r["request"];
        assert_eq!(req["uid"], "u-1");
        assert_eq!(req["operation"], "UPDATE");
        // The policy's first literal namespace, written into the object too.
        assert_eq!(req["namespace"], "gitlab-runner");
        assert_eq!(req["object"]["metadata"]["namespace"], "gitlab-runner");
        assert_eq!(
            req["oldObject"], req["object"],
            "an UPDATE that changes nothing"
        );
        let create = to_review(
            req["object"].clone(),
            Some("other"),
            Operation::Create,
            &policy(),
            "u-2",
        )
        .expect("review");
        assert_eq!(create["request"]["namespace"], "other");
        assert!(create["request"]["oldObject"].is_null());
    }

    #[test]
    fn other_documents_are_refused_by_kind() {
        let review = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"uid": "x"}});
        assert_eq!(
            to_review(review.clone(), None, Operation::Create, &policy(), "u").expect("as given"),
            review
        );
        let no_request = json!({"kind": "AdmissionReview"});
        assert!(matches!(
            to_review(no_request, None, Operation::Create, &policy(), "u"),
            Err(Error::Admission(AdmissionError::NoRequest))
        ));
        assert!(matches!(
            to_review(
                json!({"metadata": {}}),
                None,
                Operation::Create,
                &policy(),
                "u"
            ),
            Err(Error::Input(InputError::NoKind))
        ));
        match to_review(
            json!({"kind": "Deployment"}),
            None,
            Operation::Create,
            &policy(),
            "u",
        ) {
            Err(e @ Error::Input(InputError::WrongKind(_))) => {
                assert!(
                    e.to_string()
                        .starts_with("kind Deployment is not a Pod or an AdmissionReview; "),
                    "{e}"
                )
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            to_review(Value::Null, None, Operation::Create, &policy(), "u"),
            Err(Error::Input(InputError::Empty))
        ));
    }
}
