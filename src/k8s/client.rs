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
        source: ApiError,
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
    /// A PolicyReport could not be written or removed.
    #[error("{action} PolicyReport {namespace}/{name}")]
    WriteReport {
        /// `writing` or `deleting`.
        action: &'static str,
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// Why.
        #[source]
        source: ApiError,
    },
    /// A PolicyReport could not be made into JSON or read back from it.
    #[error("PolicyReport {namespace}/{name} as JSON")]
    ReportJson {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
}

/// A failed API call on one line: the apiserver's own message (never kube's
/// debug dump of its `Status`) and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status code, when the apiserver answered.
    pub code: Option<u16>,
    /// `CODE Reason: message`, or why there was no answer.
    pub message: String,
    /// What to do, when the code says.
    pub fix: Option<String>,
}

/// What was being read or written, for the advice of an [`ApiError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// Reading (get or list) a resource, e.g. `pods` or `deployments.apps`.
    Read(&'static str, &'static str),
    /// Writing PolicyReports.
    Reports(&'static str),
}

impl ApiError {
    /// The error of a call that did `access`.
    pub fn new(e: &kube::Error, call: Call) -> Self {
        let (code, message) = match e {
            kube::Error::Api(s) if s.reason == "Failed to parse error data" => {
                // Not a Status: a plain-text body such as `404 page not found`.
                (Some(s.code), s.message.clone())
            }
            kube::Error::Api(s) => {
                let text = [s.reason.as_str(), s.message.as_str()]
                    .into_iter()
                    .filter(|t| !t.is_empty())
                    .collect::<Vec<_>>()
                    .join(": ");
                (Some(s.code), format!("{} {text}", s.code))
            }
            other => (None, crate::core::report::Report(other).to_string()),
        };
        let fix = match (code, call) {
            (Some(404), Call::Reports(_)) => Some(
                "install the PolicyReport CRD: kubectl apply -f manifests/extras/policyreport-crd.yaml"
                    .to_string(),
            ),
            (Some(403), Call::Read(verb, what)) => Some(format!(
                "grant {verb} on {what} to whoever runs audit (manifests/extras/audit-rbac.yaml)"
            )),
            (Some(403), Call::Reports(verb)) => Some(format!(
                "grant {verb} on policyreports.wgpolicyk8s.io to whoever runs audit (manifests/extras/audit-rbac.yaml)"
            )),
            (Some(401), _) => {
                Some("the apiserver rejected the credentials: renew the kubeconfig's".to_string())
            }
            (Some(413), _) => Some("the object is too large for the apiserver".to_string()),
            (None, _) => Some(
                "check that the apiserver of the kubeconfig (--kubeconfig, --context) is reachable"
                    .to_string(),
            ),
            _ => None,
        };
        ApiError { code, message, fix }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)?;
        if let Some(fix) = &self.fix {
            write!(f, "; {fix}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ApiError {}

/// `--kubeconfig` and `--context`: how every verb that talks to a cluster reaches it.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct Access {
    /// Kubeconfig file (default: $KUBECONFIG, ~/.kube/config or in-cluster).
    #[arg(long)]
    pub kubeconfig: Option<std::path::PathBuf>,
    /// Kubeconfig context.
    #[arg(long)]
    pub context: Option<String>,
}

impl Access {
    /// A client for these flags (see [`client`]).
    pub async fn client(&self) -> Result<Client, Error> {
        client(self.kubeconfig.as_deref(), self.context.as_deref()).await
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16, reason: &str, message: &str) -> kube::Error {
        kube::Error::Api(Box::new(kube::core::Status {
            code,
            reason: reason.into(),
            message: message.into(),
            ..Default::default()
        }))
    }

    #[test]
    fn api_errors_are_one_line_with_what_to_do() {
        // A missing CRD: no Status, only the apiserver's plain text.
        let e = status(404, "Failed to parse error data", "404 page not found");
        assert_eq!(
            ApiError::new(&e, Call::Reports("patch")).to_string(),
            "404 page not found; install the PolicyReport CRD: kubectl apply -f manifests/extras/policyreport-crd.yaml"
        );
        // A Status prints its message, not its Debug dump.
        let e = status(500, "InternalError", "etcdserver: request is too large");
        let text = ApiError::new(&e, Call::Reports("patch")).to_string();
        assert_eq!(text, "500 InternalError: etcdserver: request is too large");
        let e = status(
            403,
            "Forbidden",
            "pods is forbidden: User \"x\" cannot list resource \"pods\"",
        );
        let a = ApiError::new(&e, Call::Read("list", "pods"));
        assert_eq!(a.code, Some(403));
        assert_eq!(
            a.to_string(),
            "403 Forbidden: pods is forbidden: User \"x\" cannot list resource \"pods\"; grant list on pods to whoever runs audit (manifests/extras/audit-rbac.yaml)"
        );
        // Wrapped, the whole chain is still one line.
        let listing = Error::List {
            what: "pods",
            source: a,
        };
        let line = crate::core::report::Report(&listing).to_string();
        assert!(line.starts_with("listing pods: 403 Forbidden: "), "{line}");
        assert!(!line.contains('\n') && !line.contains("Status {"), "{line}");
    }
}
