//! One accepted connection: TLS handshake, HTTP/1.1 or HTTP/2, and its part
//! of the drain; and the backoff of the accept loop.

use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

/// Exponential backoff on accept errors (e.g. file descriptors exhausted), so a
/// persistent error is logged and waited out instead of spinning a core.
#[derive(Default)]
pub(super) struct AcceptBackoff {
    current: Option<Duration>,
}

impl AcceptBackoff {
    const FIRST: Duration = Duration::from_millis(5);
    const MAX: Duration = Duration::from_secs(1);

    pub(super) fn reset(&mut self) {
        self.current = None;
    }

    fn next(&mut self) -> Duration {
        let d = self.current.map_or(Self::FIRST, |d| (d * 2).min(Self::MAX));
        self.current = Some(d);
        d
    }

    pub(super) async fn wait(&mut self, e: &std::io::Error) {
        let d = self.next();
        tracing::warn!(error = %e, backoff_ms = d.as_millis() as u64, "accept failed; backing off");
        tokio::time::sleep(d).await;
    }
}

/// How long a connection may still bring its first request once the drain started:
/// a client whose connection was accepted just before SIGTERM is answered, not reset.
const DRAIN_GRACE: Duration = Duration::from_millis(500);

pub(super) type AdmissionService = TowerToHyperService<axum::Router>;

/// The HTTP/1.1 + HTTP/2 connection settings, shared with the benchmark's
/// no-op baseline so both are measured with the same setup.
pub fn http_builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Duration::from_secs(30));
    builder
}

pub(super) async fn serve_connection(
    stream: tokio::net::TcpStream,
    acceptor: TlsAcceptor,
    svc: AdmissionService,
    mut drain: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    // A client that never finishes its handshake must not hold a task forever.
    let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => return,
    };
    let builder = http_builder();
    let conn = builder.serve_connection(TokioIo::new(tls), svc);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => return,
        _ = drain.wait_for(|d| *d) => {}
    }
    tokio::select! {
        _ = conn.as_mut() => return,
        _ = tokio::time::sleep(DRAIN_GRACE) => {}
    }
    // Finish what is in flight, accept nothing more on this connection.
    conn.as_mut().graceful_shutdown();
    let _ = conn.await;
}
