//! Engine benchmarks: mutate + validate on realistic job pods, no I/O.
//! Run: cargo bench --bench engine

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use runner_fence::core::engine::pod::PodView;
use runner_fence::core::engine::{self, Endpoint, Operation, Request};
use runner_fence::core::nodes::{NodeInfo, NodeSnapshot};
use runner_fence::core::policy;
use runner_fence::webhook::metrics::{EndpointLabels, Metrics, ReviewLabels};
use runner_fence::webhook::{LogFormat, State, admission, log_subscriber, log_writer, routes};
use serde_json::{Value, json};
use tower::ServiceExt;

fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The decoded AdmissionRequest, as the server holds it after reading the body.
fn request(review: &Value) -> admission::RequestIn {
    admission::parse_review(&serde_json::to_vec(review).expect("json")).expect("review")
}

/// The review after the apiserver applied the mutation patch.
fn patched(p: &policy::Policy, review: &Value) -> Value {
    let m = admission::decide(p, Endpoint::Mutate, &request(review), None);
    let mut out = review.clone();
    if let Some(obj) = out.pointer_mut("/request/object") {
        let _ = json_patch::patch(obj, m.patch());
    }
    out
}

/// A job pod with `n` containers (build, helper, services).
fn wide_pod(n: usize) -> Value {
    let mut review = fixture("plain-job.json");
    let template = review["request"]["object"]["spec"]["containers"][1].clone();
    let mut containers = vec![review["request"]["object"]["spec"]["containers"][0].clone()];
    for i in 1..n {
        let mut c = template.clone();
        c["name"] = json!(if i == 1 {
            "helper".to_string()
        } else {
            format!("svc-{i}")
        });
        containers.push(c);
    }
    review["request"]["object"]["spec"]["containers"] = json!(containers);
    review
}

fn nodes(n: usize) -> NodeSnapshot {
    NodeSnapshot::new((0..n).map(|i| {
        NodeInfo {
            name: format!("ip-10-0-{}-{}.eu-west-1.compute.internal", i / 250, i % 250),
            labels: [
                (
                    "workload".to_string(),
                    if i % 100 == 0 {
                        "gitlab"
                    } else {
                        "gitlab-runner"
                    }
                    .to_string(),
                ),
                (
                    "topology.kubernetes.io/zone".to_string(),
                    format!("eu-west-1{}", ["a", "b", "c"][i % 3]),
                ),
            ]
            .into(),
            taints: vec![k8s_openapi::api::core::v1::Taint {
                key: "workload".into(),
                value: Some(
                    if i % 100 == 0 {
                        "gitlab"
                    } else {
                        "gitlab-runner"
                    }
                    .into(),
                ),
                effect: "NoSchedule".into(),
                time_added: None,
            }],
        }
    }))
}

/// Mutate then validate the patched pod: both webhooks' engine work for one pod.
fn mutate_then_validate(
    p: &policy::Policy,
    m: &admission::RequestIn,
    v: &admission::RequestIn,
    nodes: Option<&NodeSnapshot>,
) -> bool {
    let a = admission::decide(p, Endpoint::Mutate, m, nodes);
    let b = admission::decide(p, Endpoint::Validate, v, nodes);
    a.allowed() && b.allowed()
}

fn benches(c: &mut Criterion) {
    let p = policy::embedded().expect("policy");
    let mut g = c.benchmark_group("engine");
    let cases = [
        ("typical", fixture("job-with-services.json")), // build, helper, init, two services
        ("plain", fixture("plain-job.json")),
        (
            "deny-tolerations",
            fixture("job-with-toleration-overwrite.json"),
        ),
        (
            "deny-node-selector",
            fixture("job-with-node-selector-overwrite.json"),
        ),
        ("10-containers", wide_pod(10)),
        ("100-containers", wide_pod(100)),
    ];
    for (name, review) in &cases {
        let m = request(review);
        let v = request(&patched(&p, review));
        g.bench_function(format!("mutate+validate/{name}"), |b| {
            b.iter(|| mutate_then_validate(&p, black_box(&m), black_box(&v), None))
        });
    }
    let typical = &cases[0].1;
    let m = request(typical);
    let v = request(&patched(&p, typical));
    g.bench_function("mutate/typical", |b| {
        b.iter(|| admission::decide(&p, Endpoint::Mutate, black_box(&m), None))
    });
    g.bench_function("validate/typical", |b| {
        b.iter(|| admission::decide(&p, Endpoint::Validate, black_box(&v), None))
    });
    // Policy size: 50 extra profiles and 50 extra protected-node names.
    let mut big = p.clone();
    for i in 0..50 {
        let mut prof = big.placement.profiles["runner-nodes"].clone();
        prof.pod_labels.insert("team".into(), format!("t{i}"));
        big.placement.profiles.insert(format!("team-{i}"), prof);
        big.protected_nodes.names.push(format!("gitlab-node-{i}"));
    }
    g.bench_function("mutate+validate/typical-big-policy", |b| {
        b.iter(|| mutate_then_validate(&big, black_box(&m), black_box(&v), None))
    });
    // The split: decoding the pod from the request's JSON text, and the rules on the decoded pod.
    let text = serde_json::to_string(&typical["request"]["object"]).expect("json");
    g.bench_function("decode/typical", |b| {
        b.iter(|| PodView::decode(black_box(&text)).map(|p| p.spec.is_some()))
    });
    let (mpod, vpod) = (
        Ok(m.object().expect("object").clone()),
        Ok(v.object().expect("object").clone()),
    );
    let (mreq, vreq) = (
        Request::pod(Operation::Create, "gitlab-runner", &mpod, None),
        Request::pod(Operation::Create, "gitlab-runner", &vpod, None),
    );
    g.bench_function("logic/mutate+validate/typical", |b| {
        b.iter(|| {
            let a = engine::review(&p, Endpoint::Mutate, black_box(&mreq), None);
            let c = engine::review(&p, Endpoint::Validate, black_box(&vreq), None);
            (a.outcome(), c.outcome())
        })
    });
    // The audit's origin: a stored pod as created now, mutate then validate.
    let stored = typical["request"]["object"].clone();
    let origin = engine::Origin::Stored {
        pod: &stored,
        moment: engine::Moment::Created,
    };
    g.bench_function("evaluate/stored-typical", |b| {
        b.iter(|| engine::evaluate(&p, black_box(&origin), None).map(|e| e.allowed()))
    });
    // Out of scope: a job pod in a namespace the policy does not cover.
    let skipped = request(&fixture("job-pod-other-namespace.json"));
    g.bench_function("validate/skipped", |b| {
        b.iter(|| admission::decide(&p, Endpoint::Validate, black_box(&skipped), None))
    });
    for n in [500, 5000] {
        let cluster = nodes(n);
        g.bench_function(format!("validate/typical-{n}-nodes"), |b| {
            b.iter(|| admission::decide(&p, Endpoint::Validate, black_box(&v), Some(&cluster)))
        });
    }
    // Whole body in, AdmissionReview bytes out: JSON parsing and response included.
    // Compact JSON, as the apiserver sends it.
    let body = serde_json::to_vec(typical).expect("json");
    g.bench_function("parse/typical", |b| {
        b.iter(|| admission::parse_review(black_box(&body)).map(|r| r.object().is_some()))
    });
    g.bench_function("handle/mutate-typical", |b| {
        b.iter(|| {
            admission::handle(&p, Endpoint::Mutate, black_box(&body), None)
                .map(|r| serde_json::to_vec(&r.response).map(|v| v.len()))
        })
    });
    let vbody = serde_json::to_vec(&patched(&p, typical)).expect("json");
    g.bench_function("handle/validate-typical", |b| {
        b.iter(|| {
            admission::handle(&p, Endpoint::Validate, black_box(&vbody), None)
                .map(|r| serde_json::to_vec(&r.response).map(|v| v.len()))
        })
    });
    stages(&mut g, &p, &body, &vbody);
    g.finish();
}

#[path = "../examples/common/raw_review.rs"]
mod raw_review;
use raw_review::RawReview;

/// The server's stages around the engine: what a review costs beyond the
/// no-op's parse, one stage at a time.
fn stages(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    p: &policy::Policy,
    body: &[u8],
    vbody: &[u8],
) {
    g.bench_function("parse/raw-baseline", |b| {
        b.iter(|| {
            serde_json::from_slice::<RawReview>(black_box(body))
                .map(|r| (r.request.uid.len(), r.request.object.is_some()))
        })
    });
    let m = admission::parse_review(body).expect("review");
    let decision = admission::decide(p, Endpoint::Mutate, &m, None);
    g.bench_function("respond/mutate-typical", |b| {
        b.iter(|| {
            serde_json::to_vec(&admission::response(m.uid(), black_box(&decision))).map(|v| v.len())
        })
    });
    let metrics = Metrics::new();
    g.bench_function("metrics/review", |b| {
        b.iter(|| {
            metrics
                .reviews
                .get_or_create(&ReviewLabels {
                    endpoint: "mutate",
                    decision: "patched",
                    mode: "enforce",
                    rule: "none",
                })
                .inc();
            metrics
                .latency
                .get_or_create(&EndpointLabels { endpoint: "mutate" })
                .observe(black_box(0.000_05));
        })
    });
    // The handler as `serve` runs it (routing, review, metrics, the log line,
    // the response), without TLS and HTTP: no log, then each format formatted
    // only (to a sink), written with a write(2) per line (to /dev/null, as the
    // server wrote to stderr) and queued for the writer thread.
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let app = routes::admission_router(Arc::new(State::new(p.clone(), false)));
    let (body, vbody) = (
        axum::body::Bytes::from(body.to_vec()),
        axum::body::Bytes::from(vbody.to_vec()),
    );
    let call = |path: &str, body: &axum::body::Bytes| {
        let req = axum::http::Request::post(path)
            .header("content-type", "application/json")
            .body(axum::body::Body::from(body.clone()))
            .expect("request");
        rt.block_on(app.clone().oneshot(req))
            .map(|r| r.status().as_u16())
    };
    for (ep, body) in [("mutate", &body), ("validate", &vbody)] {
        let path = format!("/{ep}");
        g.bench_function(format!("serve/{ep}-typical/no-log"), |b| {
            b.iter(|| call(&path, black_box(body)))
        });
    }
    let filter = || tracing_subscriber::EnvFilter::new("info");
    for (name, format) in [("plain", LogFormat::Plain), ("json", LogFormat::Json)] {
        let sub = log_subscriber(format, filter(), false, std::io::sink);
        tracing::subscriber::with_default(sub, || {
            g.bench_function(format!("serve/mutate-typical/{name}-formatted"), |b| {
                b.iter(|| call("/mutate", black_box(&body)))
            });
        });
        let null = Arc::new(std::fs::File::create("/dev/null").expect("/dev/null"));
        let sub = log_subscriber(format, filter(), false, null);
        tracing::subscriber::with_default(sub, || {
            g.bench_function(format!("serve/mutate-typical/{name}-written"), |b| {
                b.iter(|| call("/mutate", black_box(&body)))
            });
        });
        let null = std::fs::File::create("/dev/null").expect("/dev/null");
        let (writer, logs) = log_writer(null, runner_fence::webhook::LOG_BUFFERED_BYTES);
        let sub = log_subscriber(format, filter(), false, writer);
        tracing::subscriber::with_default(sub, || {
            g.bench_function(format!("serve/mutate-typical/{name}-queued"), |b| {
                b.iter(|| call("/mutate", black_box(&body)))
            });
        });
        drop(logs);
    }
}

criterion_group! {
    name = engine_benches;
    config = Criterion::default().sample_size(50).measurement_time(std::time::Duration::from_secs(3)).warm_up_time(std::time::Duration::from_secs(1));
    targets = benches
}
criterion_main!(engine_benches);
