//! What the leader writes: each policy's status, finalizer and Events, and
//! the generated webhook configurations and backstop (server-side apply with
//! field manager `runner-fence`; a hand edit is reverted and logged).

use std::collections::BTreeMap;

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
    ValidatingWebhookConfiguration,
};
use k8s_openapi::jiff::{Timestamp, Unit};
use kube::api::{ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Api, Client, Resource as _};
use serde_json::{Value, json};

use super::resource::RunnerFencePolicy;
use super::{Config, PolicySink, Snapshot};
use crate::core::fleet::{self, FINALIZER, State};
use crate::core::policy::{API_VERSION, OBJECT_KIND};
use crate::core::render::cluster::{self, ObjectName};

/// Field manager of everything runner-fence applies.
pub const FIELD_MANAGER: &str = "runner-fence";
/// Field manager that owns only runner-fence's finalizer entry.
pub(super) const FINALIZER_MANAGER: &str = "runner-fence-finalizer";

/// The API of a generated object's kind.
pub(super) fn resource(kind: &str) -> Option<ApiResource> {
    Some(match kind {
        "MutatingWebhookConfiguration" => ApiResource::erase::<MutatingWebhookConfiguration>(&()),
        "ValidatingWebhookConfiguration" => {
            ApiResource::erase::<ValidatingWebhookConfiguration>(&())
        }
        "ValidatingAdmissionPolicy" => ApiResource::erase::<ValidatingAdmissionPolicy>(&()),
        "ValidatingAdmissionPolicyBinding" => {
            ApiResource::erase::<ValidatingAdmissionPolicyBinding>(&())
        }
        _ => return None,
    })
}

/// The leader's reconciler state: what it last applied (resourceVersion per object).
pub(super) struct Reconciler<S> {
    pub client: Client,
    pub cfg: Config,
    pub sink: std::sync::Arc<S>,
    pub recorder: Recorder,
    pub applied: BTreeMap<ObjectName, String>,
    /// The caBundle every generated object got in the last complete round.
    pub applied_ca: Option<Vec<u8>>,
    /// The TLS layer, with `--manage-certificates`.
    pub tls: Option<std::sync::Arc<dyn super::certs::Certificates>>,
}

fn now() -> String {
    Timestamp::now()
        .round(Unit::Second)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

impl<S: PolicySink> Reconciler<S> {
    /// Status, finalizers and Events of every policy.
    pub async fn policies(&mut self, snap: &Snapshot) {
        let api: Api<RunnerFencePolicy> = Api::all(self.client.clone());
        for (obj, verdict) in snap.objects.iter().zip(&snap.verdicts) {
            let name = obj.name().to_string();
            if verdict.state == State::Released {
                if obj.has_finalizer() {
                    self.finalizer(&api, &name, false).await;
                    tracing::info!(policy = %name, "policy removal allowed: no longer enforced, finalizer removed");
                }
                continue;
            }
            if !obj.has_finalizer() && obj.metadata.deletion_timestamp.is_none() {
                self.finalizer(&api, &name, true).await;
            }
            let previous = obj.parsed_status();
            let enforced = snap.resolution.set.iter().find(|p| p.metadata.name == name);
            let status = fleet::status(verdict, &obj.spec, &previous, enforced, &now());
            if status == previous {
                continue;
            }
            let changed = previous.ready().map(|c| (&c.reason, &c.message))
                != status.ready().map(|c| (&c.reason, &c.message));
            let mut updated = (**obj).clone();
            updated.status = serde_json::to_value(&status).ok();
            match api
                .replace_status(&name, &PostParams::default(), &updated)
                .await
            {
                Ok(_) => {}
                // Stale: the watch brings the newer object and another round.
                Err(kube::Error::Api(s)) if s.code == 409 => continue,
                Err(e) => {
                    tracing::warn!(policy = %name, error = %e, "cannot write policy status");
                    continue;
                }
            }
            if changed {
                let ok = matches!(verdict.state, State::Ready);
                if ok {
                    tracing::info!(policy = %name, state = verdict.state.as_str(), message = %verdict.message, "policy judged");
                } else {
                    tracing::warn!(policy = %name, state = verdict.state.as_str(), message = %verdict.message, "policy judged");
                }
                let ev = Event {
                    type_: if ok {
                        EventType::Normal
                    } else {
                        EventType::Warning
                    },
                    reason: verdict.state.as_str().into(),
                    note: Some(truncate(&verdict.message, 1000)),
                    action: "Validate".into(),
                    secondary: None,
                };
                if let Err(e) = self.recorder.publish(&ev, &obj.object_ref(&())).await {
                    tracing::warn!(policy = %name, error = %e, "cannot publish event");
                }
            }
        }
    }

    /// Adds or removes runner-fence's finalizer (its own field manager owns only that entry).
    async fn finalizer(&self, api: &Api<RunnerFencePolicy>, name: &str, on: bool) {
        let finalizers: Vec<&str> = if on { vec![FINALIZER] } else { vec![] };
        let patch = json!({
            "apiVersion": API_VERSION,
            "kind": OBJECT_KIND,
            "metadata": {"name": name, "finalizers": finalizers},
        });
        let pp = PatchParams::apply(FINALIZER_MANAGER).force();
        if let Err(e) = api.patch(name, &pp, &Patch::Apply(&patch)).await {
            tracing::warn!(policy = %name, error = %e, on, "cannot set the finalizer");
        }
    }

    /// Applies the generated objects for the served set and removes the ones
    /// no longer wanted; true when every object was written.
    pub async fn objects(&mut self, snap: &Snapshot, ca_bundle: Option<&[u8]>) -> bool {
        let mut opts = self.cfg.webhook_options();
        opts.ca_bundle = ca_bundle.map(<[u8]>::to_vec);
        let desired = match cluster::desired(&snap.resolution.set, &opts, &self.cfg.release) {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(error = %e, "cannot generate the webhook configurations; leaving the live ones as they are");
                return false;
            }
        };
        let mut wanted = Vec::new();
        let mut ok = true;
        for obj in &desired {
            let Some(id) = cluster::object_name(obj) else {
                continue;
            };
            wanted.push(id.clone());
            ok &= self.apply(&id, obj).await;
        }
        for id in cluster::all_names(&self.cfg.release) {
            if !wanted.contains(&id) {
                ok &= self.remove(&id).await;
            }
        }
        ok
    }

    fn api(&self, id: &ObjectName) -> Option<Api<DynamicObject>> {
        resource(id.kind).map(|ar| Api::all_with(self.client.clone(), &ar))
    }

    async fn apply(&mut self, id: &ObjectName, want: &Value) -> bool {
        let Some(api) = self.api(id) else {
            return false;
        };
        let before = match api.get_opt(&id.name).await {
            Ok(b) => b.and_then(|o| o.metadata.resource_version),
            Err(e) => {
                self.failed(id, &e);
                return false;
            }
        };
        let pp = PatchParams::apply(FIELD_MANAGER).force();
        let live = match api.patch(&id.name, &pp, &Patch::Apply(want)).await {
            Ok(l) => l,
            Err(e) => {
                self.failed(id, &e);
                return false;
            }
        };
        let mut rv = live.metadata.resource_version.clone().unwrap_or_default();
        let live_json = serde_json::to_value(&live).unwrap_or_default();
        // Fields another manager added (an objectSelector, say) survive an apply: replace.
        if let Some(why) = cluster::drift(want, &live_json) {
            let mut replacement: DynamicObject = match serde_json::from_value(want.clone()) {
                Ok(r) => r,
                Err(_) => return false,
            };
            replacement.metadata.resource_version = Some(rv.clone());
            match api
                .replace(
                    &id.name,
                    &PostParams {
                        field_manager: Some(FIELD_MANAGER.into()),
                        ..PostParams::default()
                    },
                    &replacement,
                )
                .await
            {
                Ok(r) => {
                    tracing::warn!(kind = id.kind, name = %id.name, drift = %why, "reverted a hand edit of a generated object");
                    self.sink.reconciled(id.kind, "drift");
                    rv = r.metadata.resource_version.unwrap_or_default();
                }
                Err(e) => {
                    self.failed(id, &e);
                    return false;
                }
            }
        } else if before.as_deref() != Some(rv.as_str()) {
            let ours = self.applied.get(id);
            if before.is_some() && ours.is_some() && ours != before.as_ref() {
                tracing::warn!(kind = id.kind, name = %id.name, "reverted a hand edit of a generated object");
                self.sink.reconciled(id.kind, "drift");
            } else {
                tracing::info!(kind = id.kind, name = %id.name, "applied");
                self.sink.reconciled(id.kind, "applied");
            }
        }
        self.applied.insert(id.clone(), rv);
        true
    }

    async fn remove(&mut self, id: &ObjectName) -> bool {
        let Some(api) = self.api(id) else {
            return false;
        };
        match api.delete(&id.name, &DeleteParams::default()).await {
            Ok(_) => {
                tracing::info!(kind = id.kind, name = %id.name, "deleted: no served policy needs it");
                self.sink.reconciled(id.kind, "deleted");
                self.applied.remove(id);
                true
            }
            Err(kube::Error::Api(s)) if s.code == 404 => {
                self.applied.remove(id);
                true
            }
            Err(e) => {
                self.failed(id, &e);
                false
            }
        }
    }

    fn failed(&self, id: &ObjectName, e: &kube::Error) {
        tracing::warn!(kind = id.kind, name = %id.name, error = %e, "cannot reconcile a generated object; retrying");
        self.sink.reconciled(id.kind, "failed");
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}
