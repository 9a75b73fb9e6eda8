//! Pod CREATE latency through a real kube-apiserver, side by side (SPEC §10).
//!
//! `cargo run --release --example apiserver_latency -- N NAMESPACE[=POD.json]...`
//! creates N pods in each namespace, round-robin (so every configuration sees the
//! same apiserver, etcd and machine load over the same minutes), and prints
//! p50/p90/p99 per namespace as JSON. Each namespace is scoped to one admission
//! setup by `scripts/bench-apiserver.sh`. The pods are a realistic job pod (the
//! plain-job fixture, or the Pod in `POD.json`: the backstop alone needs the pod
//! as runner-fence's mutation leaves it) held by a scheduling gate, so the
//! scheduler does no work during the run. With `BURST=C` the creations come as
//! bursts: each namespace in turn gets [`ROUND`] creations with C in flight (the
//! latency of each, and the pods per second of the bursts, are reported).
//! Bounded: N is capped at 5,000, C at 64, and the requests go to the kubeconfig's
//! loopback server.

use std::time::{Duration, Instant};

use futures::StreamExt;

use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::{Value, json};

/// Creations per namespace and round in a burst run.
const ROUND: usize = 100;

/// The Pod of `text`: an AdmissionReview fixture's object, or a bare Pod.
fn job_pod(text: &str) -> Value {
    let v: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    let mut pod = match v.pointer("/request/object") {
        Some(o) => o.clone(),
        None => v,
    };
    if let Some(m) = pod["metadata"].as_object_mut() {
        for k in [
            "name",
            "namespace",
            "generateName",
            "uid",
            "resourceVersion",
            "creationTimestamp",
            "managedFields",
        ] {
            m.remove(k);
        }
        m.insert(
            "generateName".into(),
            json!("runner-bench-project-1-concurrent-"),
        );
    }
    if let Some(o) = pod.as_object_mut() {
        o.remove("status");
    }
    if let Some(spec) = pod["spec"].as_object_mut() {
        spec.remove("nodeName");
        spec.insert(
            "schedulingGates".into(),
            json!([{"name": "runner-fence.dev/bench"}]),
        );
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
    }
    pod
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(n), specs) = (
        args.first().and_then(|n| n.parse::<usize>().ok()),
        &args[1.min(args.len())..],
    ) else {
        return Err("usage: apiserver_latency N NAMESPACE[=POD.json]...".into());
    };
    if specs.is_empty() || n == 0 || n > 5000 {
        return Err("N must be 1..=5000 and at least one namespace given".into());
    }
    let burst: usize = match std::env::var("BURST") {
        Ok(b) => b
            .parse()
            .map_err(|_| format!("BURST={b:?} is not a number"))?,
        Err(_) => 1,
    };
    if burst == 0 || burst > 64 {
        return Err("BURST must be 1..=64".into());
    }
    let client = Client::try_default().await?;
    let plain = include_str!("../tests/data/plain-job.json");
    let mut namespaces = Vec::new();
    let mut apis: Vec<(Api<Pod>, Pod)> = Vec::new();
    for spec in specs {
        let (ns, file) = spec.split_once('=').unwrap_or((spec, ""));
        let text = if file.is_empty() {
            plain.to_string()
        } else {
            std::fs::read_to_string(file).map_err(|e| format!("{file}: {e}"))?
        };
        let pod: Pod = serde_json::from_value(job_pod(&text))?;
        namespaces.push(ns.to_string());
        apis.push((Api::namespaced(client.clone(), ns), pod));
    }
    // Warm-up: connections, webhook TLS sessions, CEL compilation.
    for (api, pod) in &apis {
        for _ in 0..20 {
            api.create(&PostParams::default(), pod).await?;
        }
    }
    let mut samples: Vec<Vec<Duration>> = vec![Vec::with_capacity(n); apis.len()];
    let mut busy = vec![Duration::ZERO; apis.len()];
    let round = if burst == 1 { 1 } else { ROUND };
    let mut done = 0;
    while done < n {
        let k = round.min(n - done);
        for (i, (api, pod)) in apis.iter().enumerate() {
            let started = Instant::now();
            let took: Vec<Result<Duration, kube::Error>> = futures::stream::iter(0..k)
                .map(|_| async move {
                    let t = Instant::now();
                    api.create(&PostParams::default(), pod).await?;
                    Ok(t.elapsed())
                })
                .buffer_unordered(burst)
                .collect()
                .await;
            busy[i] += started.elapsed();
            for t in took {
                samples[i].push(t?);
            }
        }
        done += k;
    }
    let mut out = serde_json::Map::new();
    for ((ns, mut s), busy) in namespaces.iter().zip(samples).zip(busy) {
        s.sort();
        out.insert(
            ns.clone(),
            json!({"n": s.len(), "in_flight": burst, "p50_ms": percentile(&s, 0.50), "p90_ms": percentile(&s, 0.90),
                   "p99_ms": percentile(&s, 0.99), "pods_per_s": s.len() as f64 / busy.as_secs_f64()}),
        );
    }
    println!("{}", serde_json::to_string_pretty(&Value::Object(out))?);
    // Gated pods never ran: remove them at once.
    let dp = DeleteParams {
        grace_period_seconds: Some(0),
        ..DeleteParams::default()
    };
    for (api, _) in &apis {
        api.delete_collection(&dp, &ListParams::default()).await?;
    }
    Ok(())
}
