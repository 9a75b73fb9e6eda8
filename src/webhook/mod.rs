//! `runner-fence serve`: the webhook (SPEC §8).
//!
//! One TLS listener for `/mutate` and `/validate`, one plain admin listener,
//! a poller that reloads policy and certificate files, and a drain on SIGTERM.

pub mod admission;
mod args;
pub mod certs;
mod connection;
mod error;
pub mod eval;
mod logging;
pub mod metrics;
mod reload;
pub mod routes;
mod server;
mod signals;
mod state;
pub mod tls;

use base64::Engine as _;

pub use args::{AuditArgs, ClusterArgs, FailurePolicyArg, LogFormat, ServeArgs};
pub use connection::http_builder;
pub use error::Error;
pub use logging::{
    BUFFERED_BYTES as LOG_BUFFERED_BYTES, LogWriter, Logs, buffered as log_writer,
    subscriber as log_subscriber,
};
pub use server::Server;
pub use signals::shutdown_signal;
pub use state::State;

/// `runner-fence serve`.
pub fn serve(args: ServeArgs) -> Result<(), Error> {
    // Held to the end: dropping it writes out every queued log line.
    let logs = std::sync::Arc::new(logging::init_logging(args.log_format));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(Error::Runtime)?;
    let served = rt.block_on(async {
        let reporter = logs.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(logging::DROP_REPORT_INTERVAL);
            loop {
                tick.tick().await;
                reporter.report_dropped();
            }
        });
        let ca_out = args.ca_out.clone();
        let server = Server::bind(args).await?;
        if let Some(ca) = &server.generated_ca {
            let path = ca_out.unwrap_or_else(|| std::env::temp_dir().join("runner-fence-ca.crt"));
            std::fs::write(&path, ca).map_err(|source| Error::Write {
                path: path.clone(),
                source,
            })?;
            println!("runner-fence: serving a generated self-signed certificate for localhost, 127.0.0.1 and ::1");
            println!("runner-fence: CA certificate written to {}", path.display());
            println!(
                "runner-fence: caBundle: {}",
                base64::engine::general_purpose::STANDARD.encode(ca)
            );
        }
        println!(
            "runner-fence: webhook on https://{} (/mutate, /validate), admin on http://{} (/healthz, /readyz, /metrics)",
            server.addr, server.admin_addr
        );
        tracing::info!(addr = %server.addr, admin = %server.admin_addr, "serving");
        server.run(shutdown_signal()).await
    });
    drop(rt);
    logs.report_dropped();
    served
}
