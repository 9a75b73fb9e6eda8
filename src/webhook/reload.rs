//! Reloading policy and certificate files while serving.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::sync::watch;

use super::tls::{self, CertFiles, Resolver};
use super::{Error, ServeArgs, State};
use crate::core::policy;
use crate::core::report::Report;

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Re-reads policy and certificate files when their content changes. Polling
/// (rather than inotify) also sees Kubernetes' atomic `..data` symlink swap.
pub(super) async fn reload_loop(
    state: Arc<State>,
    resolver: Arc<Resolver>,
    args: ServeArgs,
    mut stop: watch::Receiver<bool>,
) {
    let interval = Duration::from_millis(args.reload_interval_ms.max(50));
    let cert_files = match (&args.tls_cert, &args.tls_key) {
        (Some(c), Some(k)) => Some(CertFiles {
            cert: c.clone(),
            key: k.clone(),
        }),
        _ => None,
    };
    let mut policy_seen = match &args.policy {
        Some(p) => file_digest(vec![p.clone()]).await,
        None => None,
    };
    let cert_paths = cert_files
        .as_ref()
        .map(|f| vec![f.cert.clone(), f.key.clone()]);
    let mut cert_seen = match &cert_paths {
        Some(p) => file_digest(p.clone()).await,
        None => None,
    };
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        if let Some(path) = &args.policy
            && let Some(d) = file_digest(vec![path.clone()]).await
            && policy_seen != Some(d)
        {
            policy_seen = Some(d);
            reload_policy(&state, path).await;
        }
        if let (Some(files), Some(paths)) = (&cert_files, &cert_paths)
            && let Some(d) = file_digest(paths.clone()).await
            && cert_seen != Some(d)
        {
            cert_seen = Some(d);
            reload_certificate(&state, &resolver, files).await;
        }
    }
}

/// Loads the changed policy file and serves it; a broken one keeps the old policy.
async fn reload_policy(state: &State, path: &Path) {
    // The same loader as start-up (size cap, errors with file:line:column),
    // off the async runtime: file reads block.
    let p = path.to_path_buf();
    let loaded = tokio::task::spawn_blocking(move || policy::load_file(&p))
        .await
        .map_err(Error::Task)
        .and_then(|r| r.map_err(Error::Policy));
    match loaded {
        Ok(p) => {
            let hash = p.content_hash();
            state.set_policy(p);
            state.metrics.reload("policy", true);
            tracing::info!(policy = %path.display(), hash, "policy reloaded");
        }
        Err(e) => {
            state.metrics.reload("policy", false);
            tracing::error!(error = %Report(&e), "policy reload failed; keeping the previous policy");
        }
    }
}

/// Loads the changed certificate and key for new handshakes; a broken pair
/// keeps the old one.
async fn reload_certificate(state: &State, resolver: &Resolver, files: &CertFiles) {
    let f = files.clone();
    let loaded = tokio::task::spawn_blocking(move || tls::load(&f))
        .await
        .map_err(Error::Task)
        .and_then(|r| r);
    match loaded {
        Ok((key, expiry)) => {
            resolver.swap(key);
            if let Some(e) = expiry {
                state.metrics.cert_expiry.set(e);
            }
            state.metrics.reload("certificate", true);
            tracing::info!(cert = %files.cert.display(), "certificate reloaded");
        }
        Err(e) => {
            state.metrics.reload("certificate", false);
            tracing::error!(error = %Report(&e), "certificate reload failed; keeping the previous certificate");
        }
    }
}

/// The digest of the files' contents together, read off the runtime; None when
/// one cannot be read (a symlink swap in progress: try again next time).
async fn file_digest(paths: Vec<PathBuf>) -> Option<[u8; 32]> {
    tokio::task::spawn_blocking(move || {
        let mut all = Vec::new();
        for p in &paths {
            all.extend(std::fs::read(p).ok()?);
        }
        Some(digest(&all))
    })
    .await
    .ok()
    .flatten()
}
