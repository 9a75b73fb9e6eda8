//! Building a Kubernetes client from a kubeconfig (or in-cluster config).

use std::path::Path;

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use crate::error::{Error, Result};

/// A client for `--kubeconfig`/`--context`, else the usual defaults
/// ($KUBECONFIG, ~/.kube/config, in-cluster).
pub async fn client(kubeconfig: Option<&Path>, context: Option<&str>) -> Result<Client> {
    let options = KubeConfigOptions {
        context: context.map(String::from),
        ..Default::default()
    };
    let config = match kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path)
                .map_err(|e| Error::Input(format!("{}: {e}", path.display())))?;
            Config::from_custom_kubeconfig(kc, &options)
                .await
                .map_err(|e| Error::Input(format!("{}: {e}", path.display())))?
        }
        None if context.is_some() => Config::from_kubeconfig(&options)
            .await
            .map_err(|e| Error::Input(format!("kubeconfig: {e}")))?,
        None => Config::infer().await.map_err(|e| {
            Error::Input(format!(
                "no Kubernetes configuration found (kubeconfig or in-cluster): {e}"
            ))
        })?,
    };
    Client::try_from(config).map_err(|e| Error::Other(format!("Kubernetes client: {e}")))
}
