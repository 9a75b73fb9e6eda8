//! Chaos tests on 127.0.0.1, bounded in time: reloads and rotation under load,
//! SIGTERM under load, idle and slow-loris connections next to real traffic.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::fixture;
use runner_fence::webhook::ServeArgs;
use tokio::io::AsyncWriteExt;

fn args() -> ServeArgs {
    common::serve_args()
}

fn client(cas: &[&str], keep_alive: bool) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .timeout(Duration::from_secs(10));
    for ca in cas {
        b = b.add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).expect("ca"));
    }
    if !keep_alive {
        b = b.pool_max_idle_per_host(0);
    }
    b.build().expect("client")
}

fn body() -> Vec<u8> {
    serde_json::to_vec(&fixture("job-with-services.json")).expect("json")
}

/// Outcome counters of a load run.
#[derive(Default)]
struct Tally {
    ok: AtomicUsize,
    bad_status: AtomicUsize,
    connect_err: AtomicUsize,
    other_err: AtomicUsize,
}

async fn load(
    c: reqwest::Client,
    port: u16,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
    body: Arc<Vec<u8>>,
) {
    while !stop.load(Ordering::SeqCst) {
        let r = c
            .post(format!("https://localhost:{port}/validate"))
            .header("content-type", "application/json")
            .body(body.as_ref().clone())
            .send()
            .await;
        match r {
            Ok(resp) if resp.status() == reqwest::StatusCode::OK => {
                let v: serde_json::Value = match resp.json().await {
                    Ok(v) => v,
                    Err(_) => {
                        tally.other_err.fetch_add(1, Ordering::SeqCst);
                        continue;
                    }
                };
                if v["response"]["allowed"].is_boolean() {
                    tally.ok.fetch_add(1, Ordering::SeqCst);
                } else {
                    tally.bad_status.fetch_add(1, Ordering::SeqCst);
                }
            }
            Ok(_) => {
                tally.bad_status.fetch_add(1, Ordering::SeqCst);
            }
            Err(e) if e.is_connect() => {
                tally.connect_err.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err(_) => {
                tally.other_err.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
}

/// Publishes a new version the way the kubelet updates a mounted Secret or
/// ConfigMap: a new directory, then an atomic rename of the `..data` symlink.
fn publish(dir: &Path, version: usize, files: &[(&str, &str)]) {
    let v = dir.join(format!("..v{version}"));
    std::fs::create_dir_all(&v).expect("dir");
    for (name, text) in files {
        std::fs::write(v.join(name), text).expect("write");
    }
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(format!("..v{version}"), &tmp).expect("link");
    std::fs::rename(&tmp, dir.join("..data")).expect("swap");
    for (name, _) in files {
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(format!("..data/{name}"), &link).expect("link");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_and_rotation_under_load_lose_nothing() {
    let dir = tempfile::tempdir().expect("tmp");
    let names = ["localhost".to_string()];
    let certs: Vec<_> = (0..3)
        .map(|_| runner_fence::webhook::certs::generate(&names, 1).expect("certs"))
        .collect();
    let cert_files = |g: &runner_fence::webhook::certs::Generated| -> Vec<(&'static str, String)> {
        vec![
            ("tls.crt", g.cert_pem.clone()),
            ("tls.key", g.key_pem.clone()),
        ]
    };
    let secret_dir = dir.path().join("tls");
    let config_dir = dir.path().join("policy");
    let files0 = cert_files(&certs[0]);
    publish(
        &secret_dir,
        0,
        &files0
            .iter()
            .map(|(n, t)| (*n, t.as_str()))
            .collect::<Vec<_>>(),
    );
    publish(
        &config_dir,
        0,
        &[("policy.yaml", runner_fence::core::policy::EMBEDDED_POLICY)],
    );
    let policy = config_dir.join("policy.yaml");
    let mut a = args();
    a.policy = Some(policy.clone());
    a.tls_cert = Some(secret_dir.join("tls.crt"));
    a.tls_key = Some(secret_dir.join("tls.key"));
    let server = common::start(a).await;
    let port = server.addr.port();
    let state = server.state.clone();

    let cas: Vec<&str> = certs.iter().map(|c| c.ca_pem.as_str()).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let body = Arc::new(body());
    let mut workers = Vec::new();
    for i in 0..8 {
        // Half keep their connections, half reconnect every time (and so see new certificates).
        let c = client(&cas, i % 2 == 0);
        workers.push(tokio::spawn(load(
            c,
            port,
            stop.clone(),
            tally.clone(),
            body.clone(),
        )));
    }
    let audit =
        runner_fence::core::policy::EMBEDDED_POLICY.replacen("mode: enforce ", "mode: audit ", 1);
    for round in 0..6 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let text = if round % 2 == 0 {
            audit.as_str()
        } else {
            runner_fence::core::policy::EMBEDDED_POLICY
        };
        publish(&config_dir, round + 1, &[("policy.yaml", text)]);
        tokio::time::sleep(Duration::from_millis(150)).await;
        let files = cert_files(&certs[1 + round % 2]);
        publish(
            &secret_dir,
            round + 1,
            &files
                .iter()
                .map(|(n, t)| (*n, t.as_str()))
                .collect::<Vec<_>>(),
        );
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.await.expect("worker");
    }
    let ok = tally.ok.load(Ordering::SeqCst);
    assert!(ok > 50, "only {ok} reviews");
    assert_eq!(
        tally.bad_status.load(Ordering::SeqCst),
        0,
        "error responses"
    );
    assert_eq!(tally.other_err.load(Ordering::SeqCst), 0, "lost requests");
    assert_eq!(
        tally.connect_err.load(Ordering::SeqCst),
        0,
        "refused connections"
    );
    let metrics = state.metrics.encode();
    // No reload failed (other families, such as reconciliations, export a
    // zero `failed` series from the start).
    assert!(
        !metrics.contains("runner_fence_reloads_total{kind=\"policy\",result=\"failed\"}")
            && !metrics
                .contains("runner_fence_reloads_total{kind=\"certificate\",result=\"failed\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("runner_fence_reloads_total{kind=\"policy\",result=\"ok\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("runner_fence_reloads_total{kind=\"certificate\",result=\"ok\"}"),
        "{metrics}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_completes_every_accepted_request() {
    let mut server = common::start(args()).await;
    let ca = server.ca();
    let port = server.addr.port();
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let body = Arc::new(body());
    // A new connection per request: after shutdown starts, a request is either
    // answered in full or never accepted (connection refused), nothing in between.
    let workers: Vec<_> = (0..8)
        .map(|_| {
            tokio::spawn(load(
                client(&[&ca], false),
                port,
                stop.clone(),
                tally.clone(),
                body.clone(),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = tally.ok.load(Ordering::SeqCst);
    server.signal_stop();
    let exited = server.join(Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.await.expect("worker");
    }
    assert!(exited, "the server exits within the drain time");
    assert!(before > 10, "load was running ({before})");
    assert_eq!(tally.bad_status.load(Ordering::SeqCst), 0);
    assert_eq!(
        tally.other_err.load(Ordering::SeqCst),
        0,
        "a request was cut off mid-flight"
    );
    assert!(
        tally.connect_err.load(Ordering::SeqCst) > 0,
        "new connections are refused after SIGTERM"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_slow_loris_connections_do_not_starve_real_requests() {
    let server = common::start(args()).await;
    let ca = server.ca();
    let addr = server.addr;
    // 1,000 TCP connections that never start TLS.
    let mut idle = Vec::new();
    for _ in 0..1000 {
        idle.push(
            tokio::net::TcpStream::connect(addr)
                .await
                .expect("idle connect"),
        );
    }
    // 50 slow-loris clients: TLS, then a request header one byte at a time.
    let stop = Arc::new(AtomicBool::new(false));
    let mut loris = Vec::new();
    for _ in 0..50 {
        let mut tls = common::raw_tls(addr, &ca).await;
        let stop = stop.clone();
        loris.push(tokio::spawn(async move {
            for b in b"POST /validate HTTP/1.1\r\nhost: localhost\r\nx-slow: "
                .iter()
                .cycle()
            {
                if stop.load(Ordering::SeqCst) || tls.write_all(&[*b]).await.is_err() {
                    return;
                }
                let _ = tls.flush().await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }));
    }
    // Real requests still get quick answers.
    let c = client(&[&ca], true);
    let body = body();
    let mut slowest = Duration::ZERO;
    for _ in 0..50 {
        let started = Instant::now();
        let resp = c
            .post(format!("https://localhost:{}/mutate", addr.port()))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .expect("answered");
        assert_eq!(resp.status(), reqwest::StatusCode::OK);
        slowest = slowest.max(started.elapsed());
    }
    assert!(
        slowest < Duration::from_secs(2),
        "slowest real request took {slowest:?}"
    );
    stop.store(true, Ordering::SeqCst);
    for l in loris {
        let _ = l.await;
    }
    drop(idle);
    server.stop().await;
}

/// Sends the headers and half of a review body on a raw TLS connection, then waits.
async fn half_sent(
    addr: std::net::SocketAddr,
    ca: &str,
    body: &[u8],
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut tls = common::raw_tls(addr, ca).await;
    let head = format!(
        "POST /validate HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes()).await.expect("head");
    tls.write_all(&body[..body.len() / 2]).await.expect("half");
    tls.flush().await.expect("flush");
    tls
}

async fn read_status(tls: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>) -> String {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(10), tls.read(&mut buf))
        .await
        .expect("answered in time")
        .expect("read");
    String::from_utf8_lossy(&buf[..n])
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_sigterm_new_connections_are_accepted_during_the_delay_and_refused_after() {
    let mut a = args();
    a.shutdown_delay_seconds = 2;
    let mut server = common::start(a).await;
    let ca = server.ca();
    let addr = server.addr;
    let admin = server.admin;
    let body = body();
    // In flight when SIGTERM arrives: half of the body sent.
    let mut inflight = half_sent(addr, &ca, &body).await;
    server.signal_stop();
    let started = Instant::now();
    // Not ready at once...
    let ready = reqwest::get(format!("http://{admin}/readyz"))
        .await
        .expect("readyz");
    assert_eq!(ready.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);
    // ...but new connections are still answered during the delay (the apiserver may
    // still hold this endpoint).
    let c = client(&[&ca], false);
    for _ in 0..3 {
        let resp = c
            .post(format!("https://localhost:{}/validate", addr.port()))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .expect("a new connection during the delay is answered");
        assert_eq!(resp.status(), reqwest::StatusCode::OK);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "still within the delay"
    );
    // The in-flight request completes.
    inflight
        .write_all(&body[body.len() / 2..])
        .await
        .expect("rest of the body");
    inflight.flush().await.expect("flush");
    assert_eq!(read_status(&mut inflight).await, "HTTP/1.1 200 OK");
    // After the delay the listener is closed: new connections are refused.
    tokio::time::sleep(
        Duration::from_secs(2).saturating_sub(started.elapsed()) + Duration::from_millis(300),
    )
    .await;
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the listener is closed after the delay"
    );
    assert!(
        server.join(Duration::from_secs(10)).await,
        "exits within the grace period"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_body_times_out_without_holding_a_concurrency_permit() {
    let mut a = args();
    a.max_concurrency = 1;
    a.body_timeout_ms = 1500;
    let server = common::start(a).await;
    let ca = server.ca();
    let body = body();
    // One client stalls mid-body; with a single permit, a real request must still pass.
    let mut stalled = half_sent(server.addr, &ca, &body).await;
    let c = client(&[&ca], false);
    let resp = c
        .post(format!("https://localhost:{}/mutate", server.addr.port()))
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await
        .expect("answered while another body is stalled");
    assert_eq!(resp.status(), reqwest::StatusCode::OK);
    // The stalled one is told why once its deadline passes.
    assert_eq!(
        read_status(&mut stalled).await,
        "HTTP/1.1 408 Request Timeout"
    );
    server.stop().await;
}
