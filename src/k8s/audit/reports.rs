//! The report as `wgpolicyk8s.io/v1alpha2` PolicyReports, the format Kyverno
//! and Kubewarden write and Policy Reporter reads, sized for busy clusters:
//! one report per pod (and per runner ServiceAccount), as Kyverno and
//! Kubewarden moved to, so no object grows with the namespace. Each is named
//! after its object's uid, owned by its pod (the garbage collector removes it
//! with the pod), and bounded: messages are capped and a report holds at most
//! [`MAX_RESULTS`] results (more go to numbered shards). [`apply_reports`]
//! writes only what changed and deletes the reports of objects that are gone:
//! each report carries the hash of its content ([`CONTENT_HASH`]), so the
//! stored ones are compared by name and hash, listed as metadata only (as
//! whole objects, 19,000 stored reports took most of 643 MiB).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::TryStreamExt;
use kube::Client;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::{Check, Report};
use crate::core::policy::RuleId;
use crate::core::rbac::{ServiceAccountRef, Who};
use crate::k8s::{ApiError, Call, Error};

/// The PolicyReport rule of a job pod outside the fence.
pub const OUTSIDE_RULE: &str = "job-pod-outside-fence";
/// The PolicyReport rule of a runner service account reaching outside the fence.
pub const REACH_RULE: &str = "runner-reach";
/// The PolicyReport rule (result `error`) of a pod that could not be evaluated.
pub const UNREADABLE_RULE: &str = "unreadable";
/// The label every report carries; stale ones are found by it.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "runner-fence");
/// The label naming the policy a report is for (several policies may report).
pub const POLICY_LABEL: &str = "runner-fence.dev/policy";
/// The annotation with the hash of what runner-fence wrote (the report but its
/// results' timestamps), by which an unchanged stored report is known without
/// reading it. A report edited by hand keeps its hash: runner-fence's next
/// change to it overwrites the edit.
pub const CONTENT_HASH: &str = "runner-fence.dev/content-hash";
/// The longest message of one result, in bytes; the text and JSON reports
/// have the rest.
pub const MAX_MESSAGE: usize = 2048;
/// The most results in one PolicyReport object.
pub const MAX_RESULTS: usize = 200;
/// Reports written at once.
const WRITE_CONCURRENCY: usize = 8;

fn api_resource() -> ApiResource {
    ApiResource {
        group: "wgpolicyk8s.io".into(),
        version: "v1alpha2".into(),
        api_version: "wgpolicyk8s.io/v1alpha2".into(),
        kind: "PolicyReport".into(),
        plural: "policyreports".into(),
    }
}

/// A label value that stands for `s`: itself when it is one, else a hash.
pub fn label_value(s: &str) -> String {
    let valid = !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && s.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric());
    if valid {
        s.to_string()
    } else {
        format!("sha256-{}", &hex(s)[..32])
    }
}

fn hex(s: &str) -> String {
    Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// At most [`MAX_MESSAGE`] bytes, cut at a character boundary.
fn capped(message: String) -> String {
    if message.len() <= MAX_MESSAGE {
        return message;
    }
    let more = " … (cut; `runner-fence audit --output json` has the whole message)";
    let mut end = MAX_MESSAGE - more.len();
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{more}", &message[..end])
}

/// What a report is about.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Subject {
    namespace: String,
    kind: &'static str,
    name: String,
    uid: Option<String>,
}

impl Subject {
    fn reference(&self) -> Value {
        let mut r = json!({"apiVersion": "v1", "kind": self.kind, "name": self.name, "namespace": self.namespace});
        if let Some(uid) = &self.uid {
            r["uid"] = json!(uid);
        }
        r
    }

    /// A stable name: by uid when known (a pod recreated under the same name
    /// is another pod), else by name, hashed when too long.
    fn report_name(&self) -> String {
        let prefix = match self.kind {
            "Pod" => "runner-fence-pod-",
            _ => "runner-fence-sa-",
        };
        match &self.uid {
            Some(uid)
                if uid.len() <= 64
                    && uid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') =>
            {
                format!("{prefix}{}", uid.to_ascii_lowercase())
            }
            _ if prefix.len() + self.name.len() <= 240 => format!("{prefix}{}", self.name),
            _ => format!("{prefix}{}", &hex(&self.name)[..32]),
        }
    }
}

/// One result: what differs between the results of a report (the rest is
/// filled in as the report is made: the policy, the time, the subject).
struct Outcome {
    rule: &'static str,
    result: &'static str,
    severity: &'static str,
    message: String,
}

impl Outcome {
    /// As the PolicyReport format has it.
    fn to_value(&self, policy: &str, timestamp: &Value, subject: &Subject) -> Value {
        json!({
            "policy": policy,
            "rule": self.rule,
            "result": self.result,
            "severity": self.severity,
            "category": "runner-fence",
            "source": "runner-fence",
            "scored": true,
            "message": self.message,
            "timestamp": timestamp,
            "resources": [subject.reference()],
        })
    }
}

/// One PolicyReport as a JSON tree, with what it is known by.
struct Tree {
    namespace: String,
    name: String,
    hash: String,
    value: Value,
}

/// A PolicyReport as it is written: compact JSON (a fifth of its size as a
/// [`Value`] tree: 5,000 reports took 79 MiB as trees, 16 MiB as JSON), its
/// namespace, name and content hash ([`CONTENT_HASH`], which its annotation
/// carries). Made by [`build_reports`] only, so the hash is its content's.
#[derive(Debug, Clone)]
pub struct BuiltReport {
    namespace: String,
    name: String,
    hash: String,
    json: Box<RawValue>,
}

impl BuiltReport {
    /// `tree` as compact JSON.
    fn of(tree: Tree) -> Result<Self, Error> {
        match serde_json::value::to_raw_value(&tree.value) {
            Ok(json) => Ok(BuiltReport {
                namespace: tree.namespace,
                name: tree.name,
                hash: tree.hash,
                json,
            }),
            Err(source) => Err(Error::ReportJson {
                namespace: tree.namespace,
                name: tree.name,
                source,
            }),
        }
    }

    /// Its namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The hash of its content, as its [`CONTENT_HASH`] annotation has it.
    pub fn hash(&self) -> &str {
        &self.hash
    }

    /// The report, as written (compact JSON).
    pub fn json(&self) -> &str {
        self.json.get()
    }

    /// The report as a JSON tree (to print it in another format).
    pub fn to_value(&self) -> Result<Value, Error> {
        serde_json::from_str(self.json.get()).map_err(|source| Error::ReportJson {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            source,
        })
    }
}

/// The report as PolicyReports: per pod in the runner namespaces one result
/// per rule (`fail` for what enforce mode denies — as created, or when its
/// scheduling gates are removed — or a pod already on a protected node, `warn`
/// for what audit mode reports, `pass` otherwise), an `error` for a pod that
/// could not be evaluated, a `fail` per job pod outside the fence (in its own
/// namespace) and per runner service account that can make pods outside it
/// (in the account's namespace). Unreadable lists name no object to report on:
/// they are in the text and JSON reports and the exit code. As JSON trees:
/// [`build_reports`] makes the same reports as they are written.
pub fn policy_reports(r: &Report, policy: &str, timestamp_seconds: i64) -> Vec<Value> {
    let outcomes = outcomes(r);
    trees(&outcomes, policy, timestamp_seconds)
        .map(|t| t.value)
        .collect()
}

/// [`policy_reports`] as they are written ([`BuiltReport`]): each report is
/// a JSON tree only while it is made.
pub fn build_reports(
    r: &Report,
    policy: &str,
    timestamp_seconds: i64,
) -> Result<Vec<BuiltReport>, Error> {
    let outcomes = outcomes(r);
    trees(&outcomes, policy, timestamp_seconds)
        .map(BuiltReport::of)
        .collect()
}

/// The results of `r`, by what they are about.
fn outcomes(r: &Report) -> BTreeMap<Subject, Vec<Outcome>> {
    let mut by_subject: BTreeMap<Subject, Vec<Outcome>> = BTreeMap::new();
    let mut push = |subject: Subject,
                    rule: &'static str,
                    result: &'static str,
                    severity: &'static str,
                    message: String| {
        let outcome = Outcome {
            rule,
            result,
            severity,
            message: capped(if message.is_empty() {
                "ok".to_string()
            } else {
                message
            }),
        };
        by_subject.entry(subject).or_default().push(outcome);
    };
    for p in &r.job_pods {
        let subject = Subject {
            namespace: p.namespace.clone(),
            kind: "Pod",
            name: p.name.clone(),
            uid: p.uid.clone(),
        };
        for rule in RuleId::ALL {
            let mut messages: Vec<String> = Vec::new();
            let (mut fail, mut warn) = (false, false);
            if rule == RuleId::ProtectedNodes
                && p.on_protected_node
                && let Some(n) = &p.node
            {
                fail = true;
                messages.push(format!("runs on protected node {n}"));
            }
            let findings = p.findings.iter().map(|f| (f, ""));
            let later = p
                .when_schedulable
                .iter()
                .map(|f| (f, "as stored, when it becomes schedulable: "));
            for (f, when) in findings.chain(later).filter(|(f, _)| f.rule == rule) {
                messages.push(format!("{when}{}", f.message));
                if f.enforced {
                    fail = true;
                } else {
                    warn = true;
                }
            }
            let outcome = if fail {
                "fail"
            } else if warn {
                "warn"
            } else {
                "pass"
            };
            let severity = match rule {
                RuleId::ProtectedNodes | RuleId::NodeName | RuleId::Placement => "high",
                RuleId::FargateCompat => "medium",
                RuleId::Resources => "low",
            };
            push(
                subject.clone(),
                rule.as_str(),
                outcome,
                severity,
                messages.join("; "),
            );
        }
    }
    for u in r.unreadable.iter().filter(|u| u.check == Check::Pod) {
        let Some(pod) = &u.pod else { continue };
        let subject = Subject {
            namespace: pod.namespace.clone(),
            kind: "Pod",
            name: pod.name.clone(),
            uid: pod.uid.clone(),
        };
        push(subject, UNREADABLE_RULE, "error", "high", u.to_string());
    }
    for p in &r.job_pods_outside_fence {
        let node = match (&p.node, p.on_protected_node) {
            (Some(n), true) => format!(", runs on protected node {n}"),
            (Some(n), false) => format!(", runs on {n}"),
            (None, _) => String::new(),
        };
        let subject = Subject {
            namespace: p.namespace.clone(),
            kind: "Pod",
            name: p.name.clone(),
            uid: p.uid.clone(),
        };
        let message = format!(
            "GitLab Runner job pod in namespace {}, which the policy does not cover{node}",
            p.namespace
        );
        push(subject, OUTSIDE_RULE, "fail", "high", message);
    }
    for x in &r.runner_reach {
        let accounts: Vec<&ServiceAccountRef> = match &x.who {
            Who::ServiceAccount(sa) => vec![sa],
            Who::Group { members, .. } => members.iter().collect(),
        };
        for sa in accounts {
            let subject = Subject {
                namespace: sa.namespace.clone(),
                kind: "ServiceAccount",
                name: sa.name.clone(),
                uid: None,
            };
            push(subject, REACH_RULE, "fail", "high", x.to_string());
        }
    }
    by_subject
}

/// The reports of `outcomes`, made one at a time as they are asked for: per
/// subject one, or numbered shards of [`MAX_RESULTS`] results.
fn trees<'a>(
    outcomes: &'a BTreeMap<Subject, Vec<Outcome>>,
    policy: &'a str,
    timestamp_seconds: i64,
) -> impl Iterator<Item = Tree> + 'a {
    let policy_label = label_value(policy);
    outcomes.iter().flat_map(move |(subject, results)| {
        let base = subject.report_name();
        let policy_label = policy_label.clone();
        results
            .chunks(MAX_RESULTS)
            .enumerate()
            .map(move |(i, chunk)| {
                let name = if i == 0 {
                    base.clone()
                } else {
                    format!("{base}-{}", i + 1)
                };
                report(
                    subject,
                    name,
                    chunk,
                    policy,
                    &policy_label,
                    timestamp_seconds,
                )
            })
    })
}

fn report(
    subject: &Subject,
    name: String,
    chunk: &[Outcome],
    policy: &str,
    policy_label: &str,
    timestamp_seconds: i64,
) -> Tree {
    let mut summary: BTreeMap<&str, u64> = ["pass", "fail", "warn", "error", "skip"]
        .map(|k| (k, 0))
        .into();
    for o in chunk {
        if let Some(n) = summary.get_mut(o.result) {
            *n += 1;
        }
    }
    let timestamp = json!({"seconds": timestamp_seconds, "nanos": 0});
    let results: Vec<Value> = chunk
        .iter()
        .map(|o| o.to_value(policy, &timestamp, subject))
        .collect();
    let labels = json!({MANAGED_BY.0: MANAGED_BY.1, POLICY_LABEL: policy_label});
    // Owned by its pod: deleted with it, before the next pass comes.
    let owners = match (&subject.uid, subject.kind) {
        (Some(uid), "Pod") => {
            json!([{"apiVersion": "v1", "kind": "Pod", "name": subject.name, "uid": uid}])
        }
        _ => Value::Null,
    };
    let scope = subject.reference();
    let hash = content_hash(&labels, &owners, &scope, &results);
    let mut metadata = Map::new();
    metadata.insert("name".into(), json!(name));
    metadata.insert("namespace".into(), json!(subject.namespace));
    metadata.insert("labels".into(), labels);
    metadata.insert("annotations".into(), json!({CONTENT_HASH: hash}));
    if !owners.is_null() {
        metadata.insert("ownerReferences".into(), owners);
    }
    let mut report = Map::new();
    report.insert("apiVersion".into(), json!("wgpolicyk8s.io/v1alpha2"));
    report.insert("kind".into(), json!("PolicyReport"));
    report.insert("metadata".into(), Value::Object(metadata));
    report.insert("scope".into(), scope);
    report.insert("summary".into(), json!(summary));
    report.insert("results".into(), Value::Array(results));
    Tree {
        namespace: subject.namespace.clone(),
        name,
        hash,
        value: Value::Object(report),
    }
}

/// What decides whether a stored report must be written again, hashed:
/// everything runner-fence writes but the results' timestamps (unchanged
/// results keep theirs) and the hash itself: its labels, owner (null
/// without), scope and results.
fn content_hash(labels: &Value, owners: &Value, scope: &Value, results: &[Value]) -> String {
    let results: Vec<Value> = results
        .iter()
        .map(|r| match r {
            Value::Object(o) => Value::Object(
                o.iter()
                    .filter(|(k, _)| k.as_str() != "timestamp")
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            ),
            other => other.clone(),
        })
        .collect();
    let content = json!([labels, owners, scope, results]);
    format!("sha256-{}", hex(&content.to_string()))
}

/// What runner-fence wrote of one stored report: its policy label and content hash.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Written {
    policy: Option<String>,
    hash: Option<String>,
}

/// The stored PolicyReports runner-fence manages, by namespace and name, as
/// their metadata tells (the results are never read).
#[derive(Debug, Default)]
pub(super) struct Stored(HashMap<(String, String), Written>);

impl Stored {
    /// Lists every report labelled [`MANAGED_BY`], metadata only, paged as
    /// `opts` says.
    pub(super) async fn list(client: &Client, opts: &super::Options) -> Result<Self, Error> {
        let all = &Api::<DynamicObject>::all_with(client.clone(), &api_resource());
        let selector = format!("{}={}", MANAGED_BY.0, MANAGED_BY.1);
        let first = ListParams::default().labels(&selector).limit(opts.page());
        let fetch = |lp: ListParams| async move {
            all.list_metadata(&lp).await.map_err(|e| Error::List {
                what: "policyreports.wgpolicyk8s.io",
                source: ApiError::new(&e, Call::Reports("list")),
            })
        };
        let mut out = HashMap::new();
        super::collect::each_page(first, opts.page_pause, fetch, |items| {
            for o in items {
                let m = o.metadata;
                let label = |map: &Option<BTreeMap<String, String>>, k: &str| {
                    map.as_ref().and_then(|l| l.get(k).cloned())
                };
                let written = Written {
                    policy: label(&m.labels, POLICY_LABEL),
                    hash: label(&m.annotations, CONTENT_HASH),
                };
                out.insert(
                    (m.namespace.unwrap_or_default(), m.name.unwrap_or_default()),
                    written,
                );
            }
        })
        .await?;
        Ok(Stored(out))
    }

    /// The stored reports whose policy is not among `served` (by
    /// [`label_value`]); those without the policy label are another
    /// policy's to judge.
    fn of_other_policies(&self, served: &[String]) -> Vec<(String, String)> {
        self.0
            .iter()
            .filter(|(_, w)| w.policy.as_ref().is_some_and(|p| !served.contains(p)))
            .map(|(k, _)| k.clone())
            .collect()
    }
}

/// What [`apply_reports`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Applied {
    /// Created or changed (server-side apply).
    pub written: usize,
    /// Already as they are.
    pub unchanged: usize,
    /// Reports of this policy whose object is gone, deleted.
    pub deleted: usize,
    /// New reports not written because their namespace is being deleted: the
    /// apiserver creates nothing there, and the namespace's pods go with it.
    pub skipped: usize,
}

/// Writes the reports to the cluster: server-side apply (field manager
/// `runner-fence`) of each new or changed one (by its content hash), and
/// deletion of this policy's reports (by [`MANAGED_BY`] and [`POLICY_LABEL`],
/// or without the policy label: written by an older version) that name no
/// current object. Needs the PolicyReport CRD and list/create/patch/delete on
/// policyreports.
pub async fn apply_reports(
    client: &Client,
    reports: &[BuiltReport],
    policy: &str,
) -> Result<Applied, Error> {
    apply_reports_with(client, reports, policy, &super::Options::default()).await
}

/// [`apply_reports`], listing the stored reports with the page size and the
/// pause between pages of `opts` (the continuous audit's rate limit).
pub async fn apply_reports_with(
    client: &Client,
    reports: &[BuiltReport],
    policy: &str,
    opts: &super::Options,
) -> Result<Applied, Error> {
    let mut stored = Stored::list(client, opts).await?;
    apply_listed(client, &mut stored, reports, policy).await
}

/// Writes the new and changed reports of `policy` and deletes its stored
/// ones (or unlabelled ones: an older version's) that are not among
/// `reports`. What it wrote, left alone or deleted leaves `stored`.
pub(super) async fn apply_listed(
    client: &Client,
    stored: &mut Stored,
    reports: &[BuiltReport],
    policy: &str,
) -> Result<Applied, Error> {
    let mut applied = Applied::default();
    let mut todo = Vec::new();
    for r in reports {
        match stored.0.remove(&(r.namespace.clone(), r.name.clone())) {
            Some(w) if w.hash.as_ref() == Some(&r.hash) => applied.unchanged += 1,
            _ => todo.push(r),
        }
    }
    let todo_len = todo.len();
    let skipped = AtomicUsize::new(0);
    let ar = api_resource();
    let pp = PatchParams::apply("runner-fence").force();
    futures::stream::iter(todo.into_iter().map(Ok))
        .try_for_each_concurrent(WRITE_CONCURRENCY, |r| {
            let api = Api::<DynamicObject>::namespaced_with(client.clone(), &r.namespace, &ar);
            let pp = pp.clone();
            let skipped = &skipped;
            async move {
                match api.patch(&r.name, &pp, &Patch::Apply(&*r.json)).await {
                    Ok(_) => Ok(()),
                    // A pod listed while its namespace is deleted: the report would go
                    // with the namespace anyway, so this is no failure of the pass.
                    Err(kube::Error::Api(s)) if namespace_terminating(&s) => {
                        skipped.fetch_add(1, Ordering::Relaxed);
                        Ok(())
                    }
                    Err(e) => Err(Error::WriteReport {
                        action: "writing",
                        namespace: r.namespace.clone(),
                        name: r.name.clone(),
                        source: ApiError::new(&e, Call::Reports("patch")),
                    }),
                }
            }
        })
        .await?;
    applied.skipped = skipped.into_inner();
    applied.written = todo_len - applied.skipped;
    let ours = label_value(policy);
    let stale: Vec<(String, String)> = stored
        .0
        .iter()
        .filter(|(_, w)| w.policy.as_deref().is_none_or(|l| l == ours))
        .map(|(k, _)| k.clone())
        .collect();
    for k in &stale {
        stored.0.remove(k);
    }
    applied.deleted = delete(client, stale).await?;
    Ok(applied)
}

/// The apiserver's refusal to create an object in a namespace being deleted
/// (the NamespaceLifecycle admission plugin's `NamespaceTerminating` cause).
fn namespace_terminating(s: &kube::core::Status) -> bool {
    s.code == 403
        && s.details
            .as_ref()
            .is_some_and(|d| d.causes.iter().any(|c| c.reason == "NamespaceTerminating"))
}

/// Deletes the stored reports of policies not in `served` (their names):
/// a RunnerFencePolicy that is deleted, or no longer served, leaves none
/// behind. Only where `served` is every policy the cluster serves.
pub(super) async fn delete_unserved(
    client: &Client,
    stored: &Stored,
    served: &[&str],
) -> Result<usize, Error> {
    let labels: Vec<String> = served.iter().map(|p| label_value(p)).collect();
    delete(client, stored.of_other_policies(&labels)).await
}

/// Deletes these reports, 404s included (the garbage collector removed it
/// with its pod); how many.
async fn delete(client: &Client, reports: Vec<(String, String)>) -> Result<usize, Error> {
    let n = reports.len();
    let ar = api_resource();
    futures::stream::iter(reports.into_iter().map(Ok))
        .try_for_each_concurrent(WRITE_CONCURRENCY, |(ns, name)| {
            let api = Api::<DynamicObject>::namespaced_with(client.clone(), &ns, &ar);
            async move {
                match api.delete(&name, &DeleteParams::default()).await {
                    Ok(_) => Ok(()),
                    Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
                    Err(e) => Err(Error::WriteReport {
                        action: "deleting",
                        namespace: ns.clone(),
                        name: name.clone(),
                        source: ApiError::new(&e, Call::Reports("delete")),
                    }),
                }
            }
        })
        .await?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_stand_for_any_policy_name() {
        assert_eq!(label_value("gitlab-runner-jobs"), "gitlab-runner-jobs");
        let long = "a".repeat(64);
        let v = label_value(&long);
        assert!(v.len() <= 63 && v.starts_with("sha256-"), "{v}");
        assert_eq!(v, label_value(&long), "stable");
        assert_ne!(label_value("x.y/z"), "x.y/z");
    }

    #[test]
    fn messages_are_capped_at_a_character_boundary() {
        let m = "é".repeat(MAX_MESSAGE);
        let c = capped(m);
        assert!(c.len() <= MAX_MESSAGE, "{}", c.len());
        assert!(c.ends_with("has the whole message)"));
        assert_eq!(capped("short".into()), "short");
    }

    #[test]
    fn report_names_are_stable_and_valid() {
        let s = |name: &str, uid: Option<&str>| Subject {
            namespace: "gitlab-runner".into(),
            kind: "Pod",
            name: name.into(),
            uid: uid.map(String::from),
        };
        assert_eq!(
            s("runner-x", Some("5E1B-77")).report_name(),
            "runner-fence-pod-5e1b-77"
        );
        assert_eq!(
            s("runner-x", None).report_name(),
            "runner-fence-pod-runner-x"
        );
        let long = s(&"r".repeat(253), None).report_name();
        assert_eq!(long.len(), "runner-fence-pod-".len() + 32);
    }
}
