//! Building a Kubernetes client from a kubeconfig (or in-cluster config), and
//! the error type of everything that talks to the API server.

use std::path::{Path, PathBuf};

use kube::config::{InferConfigError, KubeConfigOptions, Kubeconfig, KubeconfigError};
use kube::{Client, Config};

/// Why the API server could not be reached or answered with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `--kubeconfig` could not be used.
    #[error("{}", path.display())]
    Kubeconfig {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: KubeconfigError,
    },
    /// The default kubeconfig could not be used with `--context`.
    #[error("kubeconfig")]
    Context(#[source] KubeconfigError),
    /// Neither a kubeconfig nor the in-cluster configuration.
    #[error("no Kubernetes configuration found (kubeconfig or in-cluster)")]
    NoConfig(#[source] InferConfigError),
    /// The client could not be built from the configuration.
    #[error("Kubernetes client")]
    Client(#[source] kube::Error),
    /// A list request failed.
    #[error("listing {what}")]
    List {
        /// What was listed.
        what: &'static str,
        /// Why.
        #[source]
        source: kube::Error,
    },
    /// `uninstall` could not remove something.
    #[error("uninstall: {what}")]
    Uninstall {
        /// What it was doing.
        what: &'static str,
        /// Why.
        #[source]
        source: kube::Error,
    },
    /// A PolicyReport could not be written.
    #[error("writing PolicyReport {namespace}/{name}")]
    WriteReport {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// Why.
        #[source]
        source: kube::Error,
    },
}

/// A client for `--kubeconfig`/`--context`, else the usual defaults
/// ($KUBECONFIG, ~/.kube/config, in-cluster).
pub async fn client(kubeconfig: Option<&Path>, context: Option<&str>) -> Result<Client, Error> {
    let options = KubeConfigOptions {
        context: context.map(String::from),
        ..Default::default()
    };
    let config = match kubeconfig {
        Some(path) => {
            let file = |source| Error::Kubeconfig {
                path: path.to_path_buf(),
                source,
            };
            let kc = Kubeconfig::read_from(path).map_err(file)?;
            Config::from_custom_kubeconfig(kc, &options)
                .await
                .map_err(file)?
        }
        None if context.is_some() => Config::from_kubeconfig(&options)
            .await
            .map_err(Error::Context)?,
        None => Config::infer().await.map_err(Error::NoConfig)?,
    };
    Client::try_from(config).map_err(Error::Client)
}
