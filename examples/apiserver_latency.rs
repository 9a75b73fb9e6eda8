//! Pod CREATE latency through a real kube-apiserver, side by side (SPEC §10).
//!
//! `cargo run --release --example apiserver_latency -- N NAMESPACE...` creates N
//! pods in each namespace, round-robin (so every configuration sees the same
//! apiserver, etcd and machine load over the same minutes), and prints p50/p90/p99
//! per namespace as JSON. Each namespace is scoped to one admission setup by
//! `scripts/bench-apiserver.sh`. The pods are a realistic job pod (the plain-job
//! fixture) held by a scheduling gate, so the scheduler does no work during the run.
//! Bounded: N is capped at 5,000, and the requests go to the kubeconfig's loopback server.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::{Value, json};

fn job_pod() -> Value {
    let text = include_str!("../tests/data/plain-job.json");
    let review: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    let mut pod = review["request"]["object"].clone();
    if let Some(m) = pod["metadata"].as_object_mut() {
        for k in [
            "name",
            "namespace",
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
    let (Some(n), namespaces) = (
        args.first().and_then(|n| n.parse::<usize>().ok()),
        &args[1.min(args.len())..],
    ) else {
        return Err("usage: apiserver_latency N NAMESPACE...".into());
    };
    if namespaces.is_empty() || n == 0 || n > 5000 {
        return Err("N must be 1..=5000 and at least one namespace given".into());
    }
    let client = Client::try_default().await?;
    let pod: Pod = serde_json::from_value(job_pod())?;
    let apis: Vec<Api<Pod>> = namespaces
        .iter()
        .map(|ns| Api::namespaced(client.clone(), ns))
        .collect();
    // Warm-up: connections, webhook TLS sessions, CEL compilation.
    for api in &apis {
        for _ in 0..20 {
            api.create(&PostParams::default(), &pod).await?;
        }
    }
    let mut samples: Vec<Vec<Duration>> = vec![Vec::with_capacity(n); apis.len()];
    for _ in 0..n {
        for (i, api) in apis.iter().enumerate() {
            let t = Instant::now();
            api.create(&PostParams::default(), &pod).await?;
            samples[i].push(t.elapsed());
        }
    }
    let mut out = serde_json::Map::new();
    for (ns, mut s) in namespaces.iter().zip(samples) {
        s.sort();
        out.insert(
            ns.clone(),
            json!({"n": s.len(), "p50_ms": percentile(&s, 0.50), "p90_ms": percentile(&s, 0.90), "p99_ms": percentile(&s, 0.99)}),
        );
    }
    println!("{}", serde_json::to_string_pretty(&Value::Object(out))?);
    // Gated pods never ran: remove them at once.
    let dp = DeleteParams {
        grace_period_seconds: Some(0),
        ..DeleteParams::default()
    };
    for api in &apis {
        api.delete_collection(&dp, &ListParams::default()).await?;
    }
    Ok(())
}
