//! `runner-fence uninstall`: removes what the policy controller created.

use std::process::ExitCode;
use std::time::Duration;

use super::{Error, ok};
use crate::k8s;

#[derive(clap::Args, Debug)]
pub(super) struct Args {
    #[command(flatten)]
    cluster: k8s::Access,
    /// The release whose objects go (`0100-<release>`, `<release>`, `<release>-backstop`...).
    #[arg(long, env = "RUNNER_FENCE_RELEASE", default_value = "runner-fence")]
    release: String,
    /// runner-fence's namespace (the Lease and the certificate Secret).
    #[arg(long, env = "RUNNER_FENCE_NAMESPACE", default_value = "runner-fence")]
    namespace: String,
    /// The replicas' lease duration: how long to wait for them to stop reconciling.
    #[arg(long, env = "RUNNER_FENCE_LEASE_SECONDS", default_value_t = 15)]
    lease_seconds: u64,
}

pub(super) fn run(a: Args) -> Result<ExitCode, Error> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Error::Runtime)?;
    let removed = rt.block_on(async {
        let client = a.cluster.client().await?;
        k8s::controller::uninstall(
            client,
            &a.release,
            &a.namespace,
            Duration::from_secs(a.lease_seconds),
        )
        .await
    })?;
    for o in &removed.objects {
        outln!("deleted {o}");
    }
    for p in &removed.released {
        outln!("released the finalizer of RunnerFencePolicy {p} (the policy stays)");
    }
    outln!(
        "runner-fence release {} uninstalled: {} objects deleted, {} finalizers released",
        a.release,
        removed.objects.len(),
        removed.released.len()
    );
    ok()
}
