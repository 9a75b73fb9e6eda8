//! `runner-fence uninstall`: removes what the controller created, for a
//! Helm pre-delete hook or by hand. It first takes the Lease for itself, so
//! the running replicas stop reconciling (and cannot re-create anything),
//! then deletes the generated objects, releases the finalizers (the policies
//! themselves are the user's and stay), and deletes the Lease and the
//! managed certificate Secret.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

use super::reconcile::{FINALIZER_MANAGER, resource};
use super::resource::RunnerFencePolicy;
use crate::core::policy::{API_VERSION, OBJECT_KIND};
use crate::core::render::cluster;
use crate::k8s::Error;

/// Who holds the Lease while uninstalling.
const HOLDER: &str = "runner-fence-uninstall";

/// What was removed, for the report.
#[derive(Debug, Default)]
pub struct Removed {
    /// Generated objects deleted (kind/name).
    pub objects: Vec<String>,
    /// Policies whose finalizer was released.
    pub released: Vec<String>,
}

fn err(what: &'static str) -> impl Fn(kube::Error) -> Error {
    move |source| Error::Uninstall { what, source }
}

/// Uninstalls release `release` in `namespace`; `settle`: how long the
/// replicas may take to notice the Lease is gone (their lease duration).
pub async fn uninstall(
    client: Client,
    release: &str,
    namespace: &str,
    settle: Duration,
) -> Result<Removed, Error> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), namespace);
    let name = format!("{release}-controller");
    let spec = LeaseSpec {
        holder_identity: Some(HOLDER.into()),
        lease_duration_seconds: Some(600),
        acquire_time: Some(MicroTime(Timestamp::now())),
        renew_time: Some(MicroTime(Timestamp::now())),
        ..LeaseSpec::default()
    };
    match leases
        .get_opt(&name)
        .await
        .map_err(err("reading the Lease"))?
    {
        Some(mut l) => {
            l.spec = Some(spec);
            leases
                .replace(&name, &PostParams::default(), &l)
                .await
                .map_err(err("taking the Lease"))?;
        }
        None => {
            let l = Lease {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(namespace.into()),
                    ..ObjectMeta::default()
                },
                spec: Some(spec),
            };
            leases
                .create(&PostParams::default(), &l)
                .await
                .map_err(err("taking the Lease"))?;
        }
    }
    // The leader renews at a third of its lease duration and steps down when it
    // sees another holder; after that nothing re-creates what follows.
    tokio::time::sleep(settle).await;
    let mut removed = Removed::default();
    for id in cluster::all_names(release) {
        let Some(ar) = resource(id.kind) else {
            continue;
        };
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
        match api.delete(&id.name, &DeleteParams::default()).await {
            Ok(_) => removed.objects.push(format!("{}/{}", id.kind, id.name)),
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(err("deleting a generated object")(e)),
        }
    }
    let policies: Api<RunnerFencePolicy> = Api::all(client.clone());
    let list = match policies.list(&ListParams::default()).await {
        Ok(l) => l.items,
        // No CRD: no policies.
        Err(kube::Error::Api(s)) if s.code == 404 => Vec::new(),
        Err(e) => return Err(err("listing RunnerFencePolicies")(e)),
    };
    for p in list.iter().filter(|p| p.has_finalizer()) {
        let patch = json!({
            "apiVersion": API_VERSION,
            "kind": OBJECT_KIND,
            "metadata": {"name": p.name(), "finalizers": []},
        });
        policies
            .patch(
                p.name(),
                &PatchParams::apply(FINALIZER_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await
            .map_err(err("releasing a finalizer"))?;
        removed.released.push(p.name().to_string());
    }
    let secrets: Api<Secret> = Api::namespaced(client, namespace);
    for (what, result) in [
        (
            "the Lease",
            leases
                .delete(&name, &DeleteParams::default())
                .await
                .map(|_| ()),
        ),
        (
            "the certificate Secret",
            secrets
                .delete(&format!("{release}-tls"), &DeleteParams::default())
                .await
                .map(|_| ()),
        ),
    ] {
        match result {
            Ok(()) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(Error::Uninstall { what, source: e }),
        }
    }
    Ok(removed)
}
