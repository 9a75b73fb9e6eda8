//! The benchmark baseline: a no-op admission webhook with the same stack and TLS
//! setup as runner-fence (axum on hyper-util, rustls, generated ECDSA P-256
//! certificate, h1 and h2). It parses the AdmissionReview the way a typical
//! kube-rs webhook does and answers `allowed: true`.
//!
//! cargo run --release --example noop_webhook -- 127.0.0.1:19443 /tmp/noop-ca.crt [dynamic|raw]
//!
//! `dynamic` (default) decodes the object into a kube `DynamicObject`, as the
//! kube-rs admission example does; `raw` only checks that the object is valid
//! JSON and keeps it as text, the cheapest parse a webhook can do.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};

#[path = "common/raw_review.rs"]
mod raw_review;
use raw_review::RawReview;

async fn review_raw(body: Bytes) -> Response {
    match serde_json::from_slice::<RawReview>(&body) {
        Ok(r) => {
            let out = serde_json::json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                "response": {"uid": r.request.uid, "allowed": true}});
            (
                [(header::CONTENT_TYPE, "application/json")],
                serde_json::to_vec(&out).unwrap_or_default(),
            )
                .into_response()
        }
        Err(e) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    }
}

async fn review(body: Bytes) -> Response {
    let parsed: Result<AdmissionReview<DynamicObject>, _> = serde_json::from_slice(&body);
    let req: Result<AdmissionRequest<DynamicObject>, _> = match parsed {
        Ok(r) => r.try_into(),
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    match req {
        Ok(req) => {
            let out = AdmissionResponse::from(&req).into_review();
            (
                [(header::CONTENT_TYPE, "application/json")],
                serde_json::to_vec(&out).unwrap_or_default(),
            )
                .into_response()
        }
        Err(e) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:19443".into());
    let ca_out = args.next().unwrap_or_else(|| "/tmp/noop-ca.crt".into());
    let g = runner_fence::webhook::certs::generate(&["localhost".into(), "127.0.0.1".into()], 7)?;
    std::fs::write(&ca_out, &g.ca_pem)?;
    let (key, _) = runner_fence::webhook::tls::certified_key(
        g.cert_pem.as_bytes(),
        g.key_pem.as_bytes(),
        std::path::Path::new("cert"),
        std::path::Path::new("key"),
    )?;
    let resolver = Arc::new(runner_fence::webhook::tls::Resolver::new(key));
    let config = runner_fence::webhook::tls::server_config(resolver, None)?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let raw = args.next().as_deref() == Some("raw");
    let app = if raw {
        Router::new()
            .route("/validate", post(review_raw))
            .route("/mutate", post(review_raw))
    } else {
        Router::new()
            .route("/validate", post(review))
            .route("/mutate", post(review))
    }
    .layer(DefaultBodyLimit::max(3 << 20));
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("noop webhook on https://{addr}, CA in {ca_out}");
    loop {
        let (stream, _) = listener.accept().await?;
        let acceptor = acceptor.clone();
        let svc = TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            let Ok(Ok(tls)) =
                tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await
            else {
                return;
            };
            let builder = runner_fence::webhook::http_builder();
            let _ = builder.serve_connection(TokioIo::new(tls), svc).await;
        });
    }
}
