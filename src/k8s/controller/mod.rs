//! The policy controller (SPEC §12): watches `RunnerFencePolicy` objects,
//! judges them with the one loader (`core::fleet`), publishes the served set
//! to the server, and — on the replica holding the Lease — writes their
//! status, finalizers and Events and applies the webhook configurations and
//! the backstop generated from them (`core::render::cluster`).

pub mod certs;
pub mod lease;
mod reconcile;
pub mod resource;
mod uninstall;

pub use uninstall::{Removed, uninstall};

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::api::DynamicObject;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use tokio::sync::{mpsc, watch};

use crate::core::fleet::{self, PolicySet, Resolution, State, Verdict};
use crate::core::render::cluster;
use crate::core::render::webhooks::{self, FailurePolicy};
pub use reconcile::FIELD_MANAGER;
use resource::RunnerFencePolicy;

/// Where the controller publishes what it decided and did.
pub trait PolicySink: Send + Sync + 'static {
    /// The policies to serve, in precedence order.
    fn publish(&self, set: PolicySet);
    /// How many policies are in each state.
    fn states(&self, counts: &[(State, usize)]);
    /// Whether this replica leads (reconciles).
    fn leader(&self, leads: bool) {
        let _ = leads;
    }
    /// A generated object was applied, corrected, deleted or failed.
    fn reconciled(&self, kind: &'static str, result: &'static str) {
        let _ = (kind, result);
    }
}

/// Where the caBundle of the generated configurations comes from.
#[derive(Clone, Debug)]
pub enum CaBundle {
    /// None: something else injects it (cert-manager's CA injector).
    Injected,
    /// This PEM file (e.g. `ca.crt` of a mounted cert-manager or existing Secret); re-read each round.
    File(PathBuf),
    /// runner-fence's own CA in a Secret (`--manage-certificates`), rotated by the leader.
    Managed(certs::CertConfig),
}

/// What the controller needs to know about its installation.
#[derive(Clone, Debug)]
pub struct Config {
    /// The release: names the Lease and every cluster-scoped object.
    pub release: String,
    /// runner-fence's own namespace (the Service's, the Lease's; never reviewed).
    pub namespace: String,
    /// The webhook Service.
    pub service: String,
    /// Its port.
    pub port: i32,
    /// A URL base the apiserver calls instead of the Service.
    pub url: Option<String>,
    /// This replica (pod name).
    pub identity: String,
    /// Lease duration.
    pub lease_duration: Duration,
    /// Whether to apply the generated objects at all (off: only status and serving).
    pub reconcile_webhooks: bool,
    /// caBundle source.
    pub ca_bundle: CaBundle,
    /// failurePolicy of the mutating webhooks (None: each from its policies' mode).
    pub mutate_failure_policy: Option<FailurePolicy>,
    /// failurePolicy of the validating webhooks (None: each from its policies' mode).
    pub validate_failure_policy: Option<FailurePolicy>,
    /// timeoutSeconds of both.
    pub timeout_seconds: i32,
    /// How often the leader re-applies even without a change.
    pub resync: Duration,
}

impl Config {
    fn webhook_options(&self) -> webhooks::Options {
        webhooks::Options {
            client: match &self.url {
                Some(base) => webhooks::Client::Url {
                    base: base.clone(),
                    namespace: self.namespace.clone(),
                },
                None => webhooks::Client::Service {
                    name: self.service.clone(),
                    namespace: self.namespace.clone(),
                    port: self.port,
                },
            },
            ca_bundle: None,
            mutate_failure_policy: self.mutate_failure_policy,
            validate_failure_policy: self.validate_failure_policy,
            timeout_seconds: self.timeout_seconds,
            names: webhooks::Names::release(&self.release),
        }
    }
}

/// The watched objects and what they came to.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// The objects, in the order of [`Snapshot::verdicts`].
    pub objects: Vec<Arc<RunnerFencePolicy>>,
    /// One per object.
    pub verdicts: Vec<Verdict>,
    /// The served set and the verdicts.
    pub resolution: Resolution,
}

/// Judges every watched object; `own_namespace` (never reviewed) may not be covered.
pub fn judge(objects: &BTreeMap<String, Arc<RunnerFencePolicy>>, own_namespace: &str) -> Snapshot {
    let resolution = fleet::resolve_excluding(
        objects.values().map(|o| o.candidate()).collect(),
        &[own_namespace],
    );
    let objects: Vec<Arc<RunnerFencePolicy>> = resolution
        .verdicts
        .iter()
        .filter_map(|v| objects.get(&v.name).cloned())
        .collect();
    Snapshot {
        objects,
        verdicts: resolution.verdicts.clone(),
        resolution,
    }
}

/// The cluster's RunnerFencePolicy objects judged as the controller judges them
/// (`runner-fence audit --policies-from-cluster`): what the replicas serve, and why
/// the others are not served.
pub async fn live(client: Client, own_namespace: &str) -> Result<Snapshot, crate::k8s::Error> {
    use crate::k8s::{ApiError, Call};
    const WHAT: &str = "runnerfencepolicies.runner-fence.dev";
    let api: Api<RunnerFencePolicy> = Api::all(client);
    let list = api
        .list(&kube::api::ListParams::default())
        .await
        .map_err(|e| crate::k8s::Error::List {
            what: WHAT,
            source: ApiError::new(&e, Call::Read("list", WHAT)),
        })?;
    let objects = list
        .items
        .into_iter()
        .map(|o| (kube::ResourceExt::name_any(&o), Arc::new(o)))
        .collect();
    Ok(judge(&objects, own_namespace))
}

/// Runs the controller until `stop`: the policy watch on every replica, the
/// Lease and the reconciler beside it.
pub async fn run<S: PolicySink>(
    access: crate::k8s::Access,
    sink: Arc<S>,
    cfg: Config,
    tls: Option<Arc<dyn certs::Certificates>>,
    stop: watch::Receiver<bool>,
) {
    let client = match access.client().await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %crate::core::report::Report(&e), "policy controller: no Kubernetes client (kubeconfig or in-cluster); staying not ready");
            return;
        }
    };
    run_with(client, sink, cfg, tls, stop).await;
}

/// [`run`] with a given client (tests point it at a fake API server).
pub async fn run_with<S: PolicySink>(
    client: Client,
    sink: Arc<S>,
    cfg: Config,
    tls: Option<Arc<dyn certs::Certificates>>,
    stop: watch::Receiver<bool>,
) {
    let serving = match (&cfg.ca_bundle, &tls) {
        (CaBundle::Managed(c), Some(t)) => Some(tokio::spawn(certs::serve_from_secret(
            client.clone(),
            c.clone(),
            t.clone(),
            stop.clone(),
        ))),
        _ => None,
    };
    let (snap_tx, snap_rx) = watch::channel::<Option<Arc<Snapshot>>>(None);
    let (leader_tx, leader_rx) = watch::channel(false);
    let own = cfg.namespace.clone();
    let lease = tokio::spawn(lease::run(
        client.clone(),
        lease::LeaseConfig {
            namespace: cfg.namespace.clone(),
            name: format!("{}-controller", cfg.release),
            identity: cfg.identity.clone(),
            duration: cfg.lease_duration,
        },
        leader_tx,
        stop.clone(),
    ));
    // Leadership reaches the sink at once (the continuous audit stops on
    // losing the Lease), not after the reconciler's round under way.
    let forward = {
        let sink = sink.clone();
        let mut leader = leader_rx.clone();
        tokio::spawn(async move {
            while leader.changed().await.is_ok() {
                let leads = *leader.borrow_and_update();
                sink.leader(leads);
            }
        })
    };
    let (drift_tx, drift_rx) = mpsc::channel(16);
    let mut drift_watches = Vec::new();
    if cfg.reconcile_webhooks {
        for id in cluster::all_names(&cfg.release) {
            drift_watches.push(tokio::spawn(watch_generated(
                client.clone(),
                id,
                drift_tx.clone(),
            )));
        }
    }
    let reconciler = tokio::spawn(reconcile_loop(
        reconcile::Reconciler {
            client: client.clone(),
            recorder: Recorder::new(
                client.clone(),
                Reporter {
                    controller: "runner-fence".into(),
                    instance: Some(cfg.identity.clone()),
                },
            ),
            cfg,
            sink: sink.clone(),
            applied: BTreeMap::new(),
            applied_ca: None,
            tls,
        },
        snap_rx,
        leader_rx,
        drift_rx,
        stop.clone(),
    ));
    watch_policies(Api::all(client), sink, own, snap_tx, stop).await;
    for t in drift_watches {
        t.abort();
    }
    if let Some(t) = serving {
        t.abort();
    }
    // The reconciler and the Lease end on `stop` (the Lease is released on the way out).
    let _ = reconciler.await;
    let _ = lease.await;
    // The Lease task is gone, so the channel is closed once its last value is forwarded.
    let _ = forward.await;
}

/// Watches the policies; after the first complete list and on every change,
/// publishes the served set and a new snapshot for the reconciler.
pub async fn watch_policies<S: PolicySink>(
    api: Api<RunnerFencePolicy>,
    sink: Arc<S>,
    own_namespace: String,
    snap_tx: watch::Sender<Option<Arc<Snapshot>>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut objects: BTreeMap<String, Arc<RunnerFencePolicy>> = BTreeMap::new();
    let mut pending: Option<BTreeMap<String, Arc<RunnerFencePolicy>>> = None;
    let mut synced = false;
    let stream = watcher::watcher(api, watcher::Config::default());
    tokio::pin!(stream);
    loop {
        let next = tokio::select! {
            n = stream.next() => n,
            _ = stop.wait_for(|s| *s) => return,
        };
        let Some(event) = next else { return };
        let changed = match event {
            Ok(Event::Init) => {
                pending = Some(BTreeMap::new());
                false
            }
            Ok(Event::InitApply(o)) => {
                if let Some(p) = pending.as_mut() {
                    p.insert(o.name().to_string(), Arc::new(o));
                }
                false
            }
            Ok(Event::InitDone) => {
                if let Some(p) = pending.take() {
                    objects = p;
                }
                synced = true;
                true
            }
            Ok(Event::Apply(o)) => {
                objects.insert(o.name().to_string(), Arc::new(o));
                synced
            }
            Ok(Event::Delete(o)) => {
                objects.remove(o.name());
                synced
            }
            Err(e) => {
                // Keep serving what was judged last; the watcher retries.
                tracing::warn!(error = %e, "policy watch failed; serving the last judged policies");
                tokio::time::sleep(Duration::from_secs(1)).await;
                false
            }
        };
        if changed {
            let snap = judge(&objects, &own_namespace);
            sink.states(&fleet::counts(&snap.verdicts));
            sink.publish(snap.resolution.set.clone());
            tracing::debug!(
                policies = objects.len(),
                served = snap.resolution.set.len(),
                "policies judged"
            );
            snap_tx.send_replace(Some(Arc::new(snap)));
        }
    }
}

/// Watches one generated object by name and says when it changes.
async fn watch_generated(client: Client, id: cluster::ObjectName, tx: mpsc::Sender<()>) {
    let Some(ar) = reconcile::resource(id.kind) else {
        return;
    };
    let api: Api<DynamicObject> = Api::all_with(client, &ar);
    let cfg = watcher::Config::default().fields(&format!("metadata.name={}", id.name));
    let stream = watcher::watcher(api, cfg);
    tokio::pin!(stream);
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(Event::Apply(_) | Event::Delete(_)) => {
                let _ = tx.try_send(());
            }
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(kind = id.kind, name = %id.name, error = %e, "watch of a generated object failed; retrying");
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        }
    }
}

/// The leader's loop: on a new snapshot, a change of the generated objects,
/// gaining the Lease or the resync period, reconcile.
async fn reconcile_loop<S: PolicySink>(
    mut r: reconcile::Reconciler<S>,
    mut snaps: watch::Receiver<Option<Arc<Snapshot>>>,
    mut leader: watch::Receiver<bool>,
    mut drift: mpsc::Receiver<()>,
    mut stop: watch::Receiver<bool>,
) {
    let resync = r.cfg.resync.max(Duration::from_secs(1));
    loop {
        tokio::select! {
            c = snaps.changed() => if c.is_err() { return },
            c = leader.changed() => {
                if c.is_err() { return }
                if !*leader.borrow() { r.applied.clear() }
            },
            _ = drift.recv() => {},
            _ = tokio::time::sleep(resync) => {},
            _ = stop.wait_for(|s| *s) => return,
        }
        if !*leader.borrow() {
            continue;
        }
        let Some(snap) = snaps.borrow().clone() else {
            // Not synced yet: never act on an empty view.
            continue;
        };
        r.policies(&snap).await;
        if r.cfg.reconcile_webhooks {
            let ca = match &r.cfg.ca_bundle {
                CaBundle::Injected => None,
                CaBundle::File(path) => match read_ca(path).await {
                    Some(ca) => Some(ca),
                    None => continue,
                },
                CaBundle::Managed(c) => {
                    let Some(t) = r.tls.clone() else { continue };
                    match certs::rotate(&r.client, c, t.as_ref(), r.applied_ca.as_deref()).await {
                        Some(ca) => Some(ca),
                        None => continue,
                    }
                }
            };
            if r.objects(&snap, ca.as_deref()).await {
                r.applied_ca = ca;
            }
        }
    }
}

async fn read_ca(path: &std::path::Path) -> Option<Vec<u8>> {
    match tokio::fs::read(path).await {
        Ok(b) if String::from_utf8_lossy(&b).contains("-----BEGIN CERTIFICATE-----") => Some(b),
        Ok(_) => {
            tracing::error!(path = %path.display(), "caBundle file is not a PEM certificate; not applying");
            None
        }
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "cannot read the caBundle file; not applying");
            None
        }
    }
}
