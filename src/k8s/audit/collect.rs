//! Reading the cluster for `audit`: paged lists (one page at a time held for
//! cluster-wide pods), runner-fence's webhook configurations, the backstop,
//! the webhook's serving state and RBAC. Reads that fail with an answer from
//! the apiserver become [`Unreadable`] findings where the audit can go on;
//! nodes, pods and webhook configurations are needed and fail the run.

use std::io::{IsTerminal, Write};

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
    ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::api::{Api, ListParams, ObjectList};
use kube::{Client, Resource};
use serde_json::Value;

use super::serving::{self, Called, Target};
use super::{
    Access, Check, Inputs, LiveBackstop, PAGE, PodJudge, Report, Unreadable, WebhookInfo,
    analyze_judged, looks_like_job,
};
use crate::core::nodes::NodeInfo;
use crate::core::policy::Policy;
use crate::core::rbac::ServiceAccountRef;
use crate::core::render::webhooks::LiveWebhook;
use crate::k8s::nodes::NodeObject;
use crate::k8s::{ApiError, Call, Error};

/// What `audit` is told besides the policy.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The webhook's Service as `(namespace, name)`, when the webhook
    /// configurations call a URL or should not decide it.
    pub webhook_service: Option<(String, String)>,
    /// Objects per page of a list (0: 500).
    pub page_size: u32,
    /// A pause after each page of a list, so that a continuous audit of a
    /// large cluster spreads its reads instead of bursting.
    pub page_pause: std::time::Duration,
    /// Show list progress on stderr when it is a terminal (the CLI).
    pub progress: bool,
    /// The policy controller's backstop to expect; None: the one `render
    /// admission-policy` prints for the audited policy alone.
    pub backstop: Option<ExpectedBackstop>,
}

/// The backstop a policy controller applies: `<release>-backstop[-audit]`,
/// generated from every policy it serves (one object covers them all).
#[derive(Debug, Clone)]
pub struct ExpectedBackstop {
    /// The controller's release.
    pub release: String,
    /// What it serves.
    pub served: std::sync::Arc<crate::core::fleet::PolicySet>,
}

impl Options {
    pub(super) fn page(&self) -> u32 {
        if self.page_size == 0 {
            PAGE
        } else {
            self.page_size
        }
    }
}

/// How lists are read: page size, the pause between pages, progress.
struct Progress {
    on: bool,
    page: u32,
    pause: std::time::Duration,
}

impl Progress {
    fn new(opts: &Options) -> Self {
        Progress {
            on: opts.progress && std::io::stderr().is_terminal(),
            page: opts.page(),
            pause: opts.page_pause,
        }
    }
    fn show(&self, what: &str, n: usize) {
        if self.on {
            let mut e = std::io::stderr();
            let _ = write!(e, "\r\x1b[2Klisting {what}: {n}");
            let _ = e.flush();
        }
    }
    fn done(&self) {
        if self.on {
            let _ = write!(std::io::stderr(), "\r\x1b[2K");
        }
    }
}

async fn list_all<K>(api: &Api<K>, what: &'static str, progress: &Progress) -> Result<Vec<K>, Error>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug + Resource,
{
    list_kept(api, what, progress, Some).await
}

/// Lists every page, keeping only what `keep` makes of each object, so that a
/// cluster-wide list holds one page at a time.
async fn list_kept<K, T>(
    api: &Api<K>,
    what: &'static str,
    progress: &Progress,
    mut keep: impl FnMut(K) -> Option<T>,
) -> Result<Vec<T>, Error>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug + Resource,
{
    let mut out = Vec::new();
    let mut seen = 0;
    let first = ListParams::default().limit(progress.page);
    each_page(
        first,
        progress.pause,
        |lp| async move {
            api.list(&lp).await.map_err(|e| Error::List {
                what,
                source: ApiError::new(&e, Call::Read("list", what)),
            })
        },
        |items| {
            seen += items.len();
            out.extend(items.into_iter().filter_map(&mut keep));
            progress.show(what, seen);
        },
    )
    .await?;
    Ok(out)
}

/// Reads a list page by page: `first` (its limit the page size, its
/// selectors kept on every page), then each continue token, `pause` between
/// pages, each page handed to `on_page` as it comes. Every paged list of the
/// audit goes through here.
pub(super) async fn each_page<T, Fut>(
    first: ListParams,
    pause: std::time::Duration,
    mut fetch: impl FnMut(ListParams) -> Fut,
    mut on_page: impl FnMut(Vec<T>),
) -> Result<(), Error>
where
    T: Clone,
    Fut: std::future::Future<Output = Result<ObjectList<T>, Error>>,
{
    let mut lp = first.clone();
    loop {
        let page = fetch(lp).await?;
        on_page(page.items);
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(c) => {
                lp = first.clone().continue_token(&c);
                if !pause.is_zero() {
                    tokio::time::sleep(pause).await;
                }
            }
            None => return Ok(()),
        }
    }
}

fn is_ours(name: &str, service: Option<&str>) -> bool {
    name.contains("runner-fence") || service.is_some_and(|s| s.contains("runner-fence"))
}

/// runner-fence's webhooks among one configuration's, with where they call.
fn ours(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    hooks: Vec<(LiveWebhook, &WebhookClientConfig)>,
) -> Vec<(WebhookInfo, LiveWebhook, WebhookClientConfig)> {
    let cname = meta.name.clone().unwrap_or_default();
    let injected = meta
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key("cert-manager.io/inject-ca-from"));
    hooks
        .into_iter()
        .filter(|(w, client)| {
            let svc = client.service.as_ref().map(|s| s.name.as_str());
            is_ours(&cname, svc) || is_ours(&w.name, None)
        })
        .map(|(w, client)| {
            let info = WebhookInfo {
                kind: w.kind.as_str().into(),
                configuration: w.configuration.clone(),
                webhook: w.name.clone(),
                failure_policy: w.failure_policy.clone(),
                ca_bundle: injected || client.ca_bundle.as_ref().is_some_and(|b| !b.0.is_empty()),
            };
            (info, w, client.clone())
        })
        .collect()
}

/// Where runner-fence's webhooks call, each with the caBundles trusted for it.
fn targets(
    hooks: &[(WebhookInfo, LiveWebhook, WebhookClientConfig)],
    opts: &Options,
) -> Vec<Called> {
    let mut out: Vec<Called> = Vec::new();
    for (info, _, client) in hooks {
        let target = match (&opts.webhook_service, &client.service, &client.url) {
            (Some((namespace, name)), _, _) => Target::Service {
                namespace: namespace.clone(),
                name: name.clone(),
                port: client.service.as_ref().and_then(|s| s.port).unwrap_or(443),
            },
            (None, Some(s), _) => Target::Service {
                namespace: s.namespace.clone(),
                name: s.name.clone(),
                port: s.port.unwrap_or(443),
            },
            (None, None, Some(url)) => Target::Url { url: url.clone() },
            (None, None, None) => continue,
        };
        let by = format!("{}/{}", info.configuration, info.webhook);
        let bundle = client
            .ca_bundle
            .as_ref()
            .map(|b| b.0.clone())
            .filter(|b| !b.is_empty());
        match out.iter_mut().find(|c| c.target == target) {
            Some(c) => {
                c.by.push(by);
                c.ca_bundles.extend(bundle);
            }
            None => out.push(Called {
                target,
                by: vec![by],
                ca_bundles: bundle.into_iter().collect(),
            }),
        }
    }
    if out.is_empty()
        && let Some((namespace, name)) = &opts.webhook_service
    {
        out.push(Called {
            target: Target::Service {
                namespace: namespace.clone(),
                name: name.clone(),
                port: 443,
            },
            by: vec!["--webhook-service".into()],
            ca_bundles: Vec::new(),
        });
    }
    out
}

/// A failed read as a finding of its own.
fn unreadable(e: Error, check: Check, verb: &'static str) -> Unreadable {
    let (what, source) = match e {
        Error::List { what, source } => (what.to_string(), source),
        other => {
            return Unreadable {
                what: "objects".into(),
                code: None,
                reason: crate::core::report::Report(&other).to_string(),
                check,
                pod: None,
                verb,
            };
        }
    };
    Unreadable {
        what,
        code: source.code,
        reason: source.message,
        check,
        pod: None,
        verb,
    }
}

/// The backstop objects of both names. A read that fails (403: the auditor
/// may not read them) is an `unreadable` finding; the objects then count as
/// absent, so a fail-open webhook is reported (the backstop only ever relaxes
/// that finding with positive evidence).
async fn backstop(client: &Client, names: [String; 2]) -> (Vec<LiveBackstop>, Vec<Unreadable>) {
    let mut out = Vec::new();
    let mut unread = Vec::new();
    let policies = Api::<ValidatingAdmissionPolicy>::all(client.clone());
    let bindings = Api::<ValidatingAdmissionPolicyBinding>::all(client.clone());
    let failed = |e: &kube::Error, what: &'static str, name: &str| {
        let a = ApiError::new(e, Call::Read("get", what));
        Unreadable {
            what: format!("{what} {name}"),
            code: a.code,
            reason: a.message,
            check: Check::Backstop,
            pod: None,
            verb: "get",
        }
    };
    for name in &names {
        let name = name.as_str();
        let mut live = LiveBackstop {
            name: name.into(),
            ..LiveBackstop::default()
        };
        match policies.get_opt(name).await {
            Ok(p) => live.policy = p.and_then(|p| serde_json::to_value(p.spec?).ok()),
            Err(e) => unread.push(failed(
                &e,
                "validatingadmissionpolicies.admissionregistration.k8s.io",
                name,
            )),
        }
        match bindings.get_opt(name).await {
            Ok(b) => live.binding = b.and_then(|b| serde_json::to_value(b.spec?).ok()),
            Err(e) => unread.push(failed(
                &e,
                "validatingadmissionpolicybindings.admissionregistration.k8s.io",
                name,
            )),
        }
        out.push(live);
    }
    (out, unread)
}

/// One cluster-wide list of pods, page by page, handing `on_page` each
/// page's runner-namespace pods and job pods the runner put elsewhere (the rest
/// dropped at once) before the next page is read. As plain JSON: a pod that
/// does not decode cannot fail the list or vanish from it; the engine's decoder
/// judges it, or it is reported.
async fn list_pods(
    client: &Client,
    policy: &Policy,
    progress: &Progress,
    mut on_page: impl FnMut(Vec<Value>),
) -> Result<(), Error> {
    let failed = |e: kube::Error| Error::List {
        what: "pods",
        source: ApiError::new(&e, Call::Read("list", "pods")),
    };
    let mut seen = 0;
    let fetch = |lp: ListParams| async move {
        let request = kube::core::Request::new("/api/v1/pods")
            .list(&lp)
            .map_err(|e| failed(kube::Error::BuildRequest(e)))?;
        client
            .request::<ObjectList<Value>>(request)
            .await
            .map_err(failed)
    };
    let first = ListParams::default().limit(progress.page);
    each_page(first, progress.pause, fetch, |items| {
        seen += items.len();
        let mut kept = Vec::new();
        for mut p in items {
            let ns = p
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or("");
            if !policy.matching.covers(ns) && !looks_like_job(&p) {
                continue;
            }
            // Managed fields are the largest part of a pod and never judged.
            if let Some(m) = p.get_mut("metadata").and_then(Value::as_object_mut) {
                m.remove("managedFields");
            }
            kept.push(p);
        }
        on_page(kept);
        progress.show("pods", seen);
    })
    .await
}

/// CPU work inside a read: on a multi-threaded runtime (the server's) the
/// worker hands its other tasks (reviews) to the others first; the CLI's
/// single-threaded runtime has nothing else to run.
pub(super) fn off_the_runtime<T>(work: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(work)
        }
        _ => work(),
    }
}

async fn list_nodes(client: &Client, progress: &Progress) -> Result<Vec<NodeInfo>, Error> {
    list_kept(
        &Api::<NodeObject>::all(client.clone()),
        "nodes",
        progress,
        NodeObject::into_info,
    )
    .await
}

/// Lists nodes, pods and webhook configurations and analyzes them: the audit
/// as `runner-fence audit` runs it, with the defaults.
pub async fn collect(client: Client, policy: &Policy) -> Result<Report, Error> {
    run_once(client, policy, &Options::default()).await
}

/// One audit pass: reads the cluster and analyzes it. What a continuous audit
/// calls each period; [`super::build_reports`] and [`super::apply_reports`]
/// write its results.
///
/// Each page of pods is judged as it comes and dropped ([`PodJudge`]): held
/// as JSON trees, 20,000 job pods took 2.6 GiB.
pub async fn run_once(client: Client, policy: &Policy, opts: &Options) -> Result<Report, Error> {
    let progress = Progress::new(opts);
    let nodes = list_nodes(&client, &progress).await?;
    let mut judge = PodJudge::new(policy, &nodes);
    list_pods(&client, policy, &progress, |page| {
        off_the_runtime(|| page.iter().for_each(|p| judge.judge(p)))
    })
    .await?;
    let inputs = read_rest(&client, policy, opts, &progress, nodes, Vec::new()).await?;
    Ok(off_the_runtime(|| analyze_judged(policy, &inputs, judge)))
}

/// Reads everything [`analyze`] judges for `policy`, every pod included (for
/// tests that change what was read; [`run_once`] holds one page of pods at a
/// time).
pub async fn read(client: Client, policy: &Policy, opts: &Options) -> Result<Inputs, Error> {
    let progress = Progress::new(opts);
    let nodes = list_nodes(&client, &progress).await?;
    let mut pods = Vec::new();
    list_pods(&client, policy, &progress, |page| pods.extend(page)).await?;
    read_rest(&client, policy, opts, &progress, nodes, pods).await
}

/// Everything after the nodes and pods: webhook configurations, the
/// backstop, the webhook's serving state, RBAC.
async fn read_rest(
    client: &Client,
    policy: &Policy,
    opts: &Options,
    progress: &Progress,
    nodes: Vec<NodeInfo>,
    pods: Vec<Value>,
) -> Result<Inputs, Error> {
    let mut hooks = Vec::new();
    let mwcs = list_all(
        &Api::<MutatingWebhookConfiguration>::all(client.clone()),
        "mutatingwebhookconfigurations.admissionregistration.k8s.io",
        progress,
    )
    .await?;
    for c in &mwcs {
        hooks.extend(ours(&c.metadata, LiveWebhook::of_mutating(c)));
    }
    let vwcs = list_all(
        &Api::<ValidatingWebhookConfiguration>::all(client.clone()),
        "validatingwebhookconfigurations.admissionregistration.k8s.io",
        progress,
    )
    .await?;
    for c in &vwcs {
        hooks.extend(ours(&c.metadata, LiveWebhook::of_validating(c)));
    }
    let called = targets(&hooks, opts);
    let own_namespace = called.iter().find_map(|c| match &c.target {
        Target::Service { namespace, .. } => Some(namespace.clone()),
        Target::Url { .. } => None,
    });
    let names = super::backstop::names(opts.backstop.as_ref());
    let (backstop, mut unread) = backstop(client, names).await;
    let (serving, serving_unread) = serving::check(client, &called, super::now_seconds()).await;
    unread.extend(serving_unread);
    let access = access(client, policy, progress).await;
    progress.done();
    Ok(Inputs {
        nodes,
        pods,
        webhooks: hooks.into_iter().map(|(i, l, _)| (i, l)).collect(),
        backstop,
        expected_backstop: opts.backstop.clone(),
        own_namespace,
        serving,
        access,
        unreadable: unread,
    })
}

/// RBAC objects and the runner namespaces' ServiceAccounts. A list that fails
/// (403: the auditor may not read RBAC) becomes an `unreadable` finding and
/// the check goes on with what could be read.
async fn access(client: &Client, policy: &Policy, progress: &Progress) -> Access {
    let mut a = Access::default();
    let covers = |ns: Option<&str>| policy.matching.covers(ns.unwrap_or(""));
    fn ok<T>(r: Result<Vec<T>, Error>, a: &mut Access) -> Vec<T> {
        r.unwrap_or_else(|e| {
            a.unreadable.push(unreadable(e, Check::RunnerReach, "list"));
            Vec::new()
        })
    }
    let r = list_all(
        &Api::<ClusterRole>::all(client.clone()),
        "clusterroles.rbac.authorization.k8s.io",
        progress,
    )
    .await;
    a.cluster_roles = ok(r, &mut a);
    let r = list_all(
        &Api::<ClusterRoleBinding>::all(client.clone()),
        "clusterrolebindings.rbac.authorization.k8s.io",
        progress,
    )
    .await;
    a.cluster_role_bindings = ok(r, &mut a);
    // Grants inside the runner namespaces are fenced: only the others matter.
    let r = list_kept(
        &Api::<Role>::all(client.clone()),
        "roles.rbac.authorization.k8s.io",
        progress,
        |r: Role| (!covers(r.metadata.namespace.as_deref())).then_some(r),
    )
    .await;
    a.roles = ok(r, &mut a);
    let r = list_kept(
        &Api::<RoleBinding>::all(client.clone()),
        "rolebindings.rbac.authorization.k8s.io",
        progress,
        |b: RoleBinding| (!covers(b.metadata.namespace.as_deref())).then_some(b),
    )
    .await;
    a.role_bindings = ok(r, &mut a);
    let r = list_kept(
        &Api::<ServiceAccount>::all(client.clone()),
        "serviceaccounts",
        progress,
        |sa: ServiceAccount| {
            let namespace = sa.metadata.namespace.filter(|ns| covers(Some(ns)))?;
            Some(ServiceAccountRef {
                namespace,
                name: sa.metadata.name?,
            })
        },
    )
    .await;
    a.service_accounts = ok(r, &mut a);
    a
}
