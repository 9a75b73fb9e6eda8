//! Bulk API objects for the scale benchmark (`scripts/bench-audit.sh`): Nodes
//! shaped like EKS nodes and job pods, created with bounded concurrency against
//! the loopback control plane of `scripts/cluster/`. No kubelet: the objects are
//! API objects only.
//!
//! ```text
//! scale_objects nodes COUNT GITLAB_EVERY CONCURRENCY
//! scale_objects pods COUNT START NAMESPACE PLACE CONCURRENCY NODES GITLAB_EVERY TEMPLATE...
//! ```
//!
//! Node `i` is `node-{i:05}`; every `GITLAB_EVERY`-th is one of GitLab's
//! (`workload=gitlab`, untainted), the others runner nodes (`workload=gitlab-runner`,
//! tainted). Each node is created, made Ready through `/status`, and its taints set
//! to exactly the intended list (the `TaintNodesByCondition` plugin adds
//! `not-ready` at creation). Pods are named `job-{i:06}` from `START`, from the
//! TEMPLATE files (a Pod as JSON, round-robin), and `PLACE` is `gated` (a
//! scheduling gate: the scheduler leaves it alone), `runner` or `gitlab`
//! (`spec.nodeName` set at creation to a node of that kind, as a bound pod).
//! Bounded: at most 20,000 nodes, 100,000 pods and 64 requests in flight; the
//! kubeconfig's server must be a loopback address.

use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, Config};
use serde_json::{Value, json};

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

const REGION: &str = "eu-west-1";

fn node_name(i: usize) -> String {
    format!("node-{i:05}")
}

fn is_gitlab(i: usize, every: usize) -> bool {
    i.is_multiple_of(every)
}

/// An EKS managed node's labels, taints and status (with a few images, as a
/// real kubelet reports them).
fn node(i: usize, every: usize) -> (Value, Value, Value) {
    let name = node_name(i);
    let gitlab = is_gitlab(i, every);
    let zone = format!("{REGION}{}", ["a", "b", "c"][i % 3]);
    let (group, instance) = if gitlab {
        ("gitlab", "m6i.2xlarge")
    } else {
        ("gitlab-runner", "c6i.4xlarge")
    };
    let labels = json!({
        "beta.kubernetes.io/arch": "amd64",
        "beta.kubernetes.io/instance-type": instance,
        "beta.kubernetes.io/os": "linux",
        "eks.amazonaws.com/capacityType": if i.is_multiple_of(4) { "ON_DEMAND" } else { "SPOT" },
        "eks.amazonaws.com/nodegroup": group,
        "eks.amazonaws.com/nodegroup-image": "ami-0123456789abcdef0",
        "eks.amazonaws.com/sourceLaunchTemplateId": "lt-0123456789abcdef0",
        "failure-domain.beta.kubernetes.io/region": REGION,
        "failure-domain.beta.kubernetes.io/zone": zone,
        "k8s.io/cloud-provider-aws": "0123456789abcdef0123456789abcdef",
        "kubernetes.io/arch": "amd64",
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "node.kubernetes.io/instance-type": instance,
        "topology.ebs.csi.aws.com/zone": zone,
        "topology.kubernetes.io/region": REGION,
        "topology.kubernetes.io/zone": zone,
        "workload": group,
    });
    let taints = if gitlab {
        json!([])
    } else {
        json!([{"key": "workload", "value": "gitlab-runner", "effect": "NoSchedule"}])
    };
    let node = json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": labels}, "spec": {"taints": taints.clone()}});
    let now = "2026-11-23T00:00:00Z";
    let cond = |t: &str, s: &str, r: &str| {
        json!({"type": t, "status": s, "reason": r,
        "message": "fake node (runner-fence scale benchmark): no kubelet",
        "lastHeartbeatTime": now, "lastTransitionTime": now})
    };
    let res = json!({"cpu": "16", "memory": "32Gi", "pods": "110", "ephemeral-storage": "100Gi"});
    let images: Vec<Value> = (0..12)
        .map(|k| json!({"names": [format!("registry.example.com/ci/image-{k}@sha256:{:064x}", k), format!("registry.example.com/ci/image-{k}:v1.{k}")], "sizeBytes": 100_000_000 + k * 1_000_003}))
        .collect();
    let status = json!({"status": {
        "capacity": res, "allocatable": res,
        "conditions": [cond("Ready", "True", "KubeletReady"), cond("MemoryPressure", "False", "KubeletHasSufficientMemory"),
                       cond("DiskPressure", "False", "KubeletHasNoDiskPressure"), cond("PIDPressure", "False", "KubeletHasSufficientPID")],
        "addresses": [{"type": "InternalIP", "address": format!("10.0.{}.{}", i / 250, i % 250)}, {"type": "Hostname", "address": name}],
        "nodeInfo": {"architecture": "amd64", "operatingSystem": "linux", "kubeletVersion": "v1.36.3", "kubeProxyVersion": "",
                     "containerRuntimeVersion": "containerd://1.7.27", "osImage": "Amazon Linux 2023", "kernelVersion": "6.1.0",
                     "machineID": "", "systemUUID": "", "bootID": ""},
        "images": images,
    }});
    (node, status, json!({"spec": {"taints": taints}}))
}

/// Retries what a busy apiserver answers with 429 or 5xx (and connection errors).
async fn retried<T, F, Fut>(what: &str, mut call: F) -> Res<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    let mut delay = Duration::from_millis(100);
    for attempt in 1.. {
        match call().await {
            Ok(v) => return Ok(v),
            Err(kube::Error::Api(s)) if s.code == 409 && s.reason == "AlreadyExists" => {
                return Err(format!("{what}: already exists").into());
            }
            Err(kube::Error::Api(s)) if attempt < 5 && (s.code == 429 || s.code >= 500) => {}
            Err(kube::Error::Api(s)) => return Err(format!("{what}: {s}").into()),
            Err(e) if attempt < 5 => {
                let _ = e;
            }
            Err(e) => return Err(format!("{what}: {e}").into()),
        }
        tokio::time::sleep(delay).await;
        delay *= 2;
    }
    Err(format!("{what}: gave up").into())
}

async fn one_node(api: &Api<Node>, i: usize, every: usize) -> Res<()> {
    let (node, status, taints) = node(i, every);
    let name = node_name(i);
    let n: Node = serde_json::from_value(node)?;
    let post = PostParams::default();
    retried(&name, || api.create(&post, &n)).await?;
    let pp = PatchParams::default();
    let (status, taints) = (Patch::Merge(&status), Patch::Merge(&taints));
    retried(&name, || api.patch_status(&name, &pp, &status)).await?;
    retried(&name, || api.patch(&name, &pp, &taints)).await?;
    Ok(())
}

fn pod(template: &Value, i: usize, node: Option<String>) -> Res<Pod> {
    let mut p = template.clone();
    let meta = p["metadata"]
        .as_object_mut()
        .ok_or("template has no metadata")?;
    for k in [
        "namespace",
        "uid",
        "resourceVersion",
        "creationTimestamp",
        "managedFields",
        "generateName",
    ] {
        meta.remove(k);
    }
    meta.insert("name".into(), json!(format!("job-{i:06}")));
    if let Some(o) = p.as_object_mut() {
        o.remove("status");
    }
    let spec = p["spec"].as_object_mut().ok_or("template has no spec")?;
    spec.remove("nodeName");
    spec.remove("schedulingGates");
    match node {
        Some(n) => {
            spec.insert("nodeName".into(), json!(n));
        }
        None => {
            spec.insert(
                "schedulingGates".into(),
                json!([{"name": "runner-fence.dev/bench"}]),
            );
        }
    }
    // The ServiceAccount plugin adds its own token volume.
    for list in ["containers", "initContainers"] {
        for c in spec
            .get_mut(list)
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            if let Some(m) = c.get_mut("volumeMounts").and_then(Value::as_array_mut) {
                m.retain(|v| {
                    !v["name"]
                        .as_str()
                        .unwrap_or("")
                        .starts_with("kube-api-access")
                });
            }
        }
    }
    if let Some(v) = spec.get_mut("volumes").and_then(Value::as_array_mut) {
        v.retain(|v| {
            !v["name"]
                .as_str()
                .unwrap_or("")
                .starts_with("kube-api-access")
        });
    }
    Ok(serde_json::from_value(p)?)
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize, what: &str) -> Res<T> {
    args.get(i)
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| format!("argument {i} ({what}) missing or invalid").into())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let config = Config::infer().await?;
    let host = config.cluster_url.host().unwrap_or("");
    if !matches!(host, "127.0.0.1" | "localhost" | "[::1]" | "::1") {
        return Err(format!("refusing a non-loopback apiserver {}", config.cluster_url).into());
    }
    let client = Client::try_from(config)?;
    let started = Instant::now();
    let (what, results): (&str, Vec<Res<()>>) = match args.first().map(String::as_str) {
        Some("nodes") => {
            let count: usize = arg(&args, 1, "COUNT")?;
            let every: usize = arg(&args, 2, "GITLAB_EVERY")?;
            let conc: usize = arg(&args, 3, "CONCURRENCY")?;
            if count > 20_000 || every == 0 || conc == 0 || conc > 64 {
                return Err("COUNT ≤ 20000, GITLAB_EVERY ≥ 1, CONCURRENCY 1..=64".into());
            }
            let api: Api<Node> = Api::all(client);
            let api = &api;
            let r = futures::stream::iter(0..count)
                .map(|i| async move { one_node(api, i, every).await })
                .buffer_unordered(conc)
                .collect()
                .await;
            ("nodes", r)
        }
        Some("pods") => {
            let count: usize = arg(&args, 1, "COUNT")?;
            let start: usize = arg(&args, 2, "START")?;
            let ns: String = arg(&args, 3, "NAMESPACE")?;
            let place: String = arg(&args, 4, "PLACE")?;
            let conc: usize = arg(&args, 5, "CONCURRENCY")?;
            let nodes: usize = arg(&args, 6, "NODES")?;
            let every: usize = arg(&args, 7, "GITLAB_EVERY")?;
            if count > 100_000 || conc == 0 || conc > 64 || every == 0 {
                return Err("COUNT ≤ 100000, CONCURRENCY 1..=64, GITLAB_EVERY ≥ 1".into());
            }
            let templates: Vec<Value> = args[8.min(args.len())..]
                .iter()
                .map(|f| -> Res<Value> {
                    let v: Value = serde_json::from_str(&std::fs::read_to_string(f)?)?;
                    // An AdmissionReview fixture or a bare Pod.
                    Ok(match v.pointer("/request/object") {
                        Some(o) => o.clone(),
                        None => v,
                    })
                })
                .collect::<Res<_>>()?;
            if templates.is_empty() {
                return Err("no TEMPLATE given".into());
            }
            // The nodes of the kind asked for, taken round-robin.
            let of_kind: Vec<usize> = (0..nodes)
                .filter(|&i| is_gitlab(i, every) == (place == "gitlab"))
                .collect();
            let placed = |k: usize| -> Res<Option<String>> {
                match place.as_str() {
                    "gated" => Ok(None),
                    "runner" | "gitlab" if !of_kind.is_empty() => {
                        Ok(Some(node_name(of_kind[k % of_kind.len()])))
                    }
                    "runner" | "gitlab" => Err(format!("no {place} node among {nodes}").into()),
                    other => Err(format!("PLACE {other:?}: gated, runner or gitlab").into()),
                }
            };
            let mut pods = Vec::with_capacity(count);
            for k in 0..count {
                pods.push(pod(&templates[k % templates.len()], start + k, placed(k)?)?);
            }
            let api: Api<Pod> = Api::namespaced(client, &ns);
            let (api, post) = (&api, &PostParams::default());
            let r = futures::stream::iter(pods)
                .map(|p| async move {
                    let name = p.metadata.name.clone().unwrap_or_default();
                    retried(&name, || api.create(post, &p)).await.map(|_| ())
                })
                .buffer_unordered(conc)
                .collect()
                .await;
            ("pods", r)
        }
        _ => return Err("usage: scale_objects nodes|pods ... (see the doc comment)".into()),
    };
    let failed: Vec<String> = results
        .iter()
        .filter_map(|r| r.as_ref().err().map(ToString::to_string))
        .collect();
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{what}: {} created, {} failed in {secs:.1} s ({:.0}/s)",
        results.len() - failed.len(),
        failed.len(),
        (results.len() - failed.len()) as f64 / secs
    );
    for f in failed.iter().take(5) {
        eprintln!("  {f}");
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!("{} of {what} failed", failed.len()).into())
    }
}
