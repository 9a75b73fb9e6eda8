//! The command line's error type: everything that ends a verb with exit code 2.

use std::path::PathBuf;
use std::process::ExitCode;

use super::EXIT_BAD_INPUT;
use crate::core::document::InputError;
use crate::core::policy::LoadError;
use crate::core::render::webhooks::RenderError;
use crate::webhook::admission::AdmissionError;

/// Why a verb could not do its work (bad input, unreachable cluster...).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The policy does not load.
    #[error(transparent)]
    Policy(#[from] LoadError),
    /// An input document does not load.
    #[error(transparent)]
    Input(#[from] InputError),
    /// An input is not something to review.
    #[error(transparent)]
    Admission(#[from] AdmissionError),
    /// Nothing can be rendered from this policy.
    #[error(transparent)]
    Render(#[from] RenderError),
    /// The CRD schema cannot be generated from the policy model.
    #[error(transparent)]
    Crd(#[from] crate::core::render::crd::SchemaError),
    /// The generated files cannot be made.
    #[error(transparent)]
    Generate(#[from] crate::core::render::generated::GenerateError),
    /// `dev regen --root` is not a checkout of this repository.
    #[error("{}: no {} here; run from the repository root or pass --root", path.display(), crate::core::render::generated::REFERENCE_POLICY)]
    NotACheckout {
        /// The root given.
        path: PathBuf,
    },
    /// A runner configuration does not read (or could not be checked).
    #[error(transparent)]
    RunnerConfig(#[from] crate::core::runner_config::ConfigError),
    /// The webhook (or its certificates) could not be set up.
    #[error(transparent)]
    Webhook(#[from] crate::webhook::Error),
    /// The cluster could not be read or written.
    #[error(transparent)]
    Kubernetes(#[from] crate::k8s::Error),
    /// `eval --operation` other than CREATE or UPDATE.
    #[error("--operation must be CREATE or UPDATE, got {0}")]
    Operation(String),
    /// `audit --apply` without `--output policy-report`.
    #[error("--apply writes PolicyReports; use it with --output policy-report")]
    ApplyNeedsPolicyReport,
    /// `--ca-bundle` could not be read.
    #[error("--ca-bundle {}", path.display())]
    CaBundle {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `--ca-bundle` is not PEM.
    #[error("--ca-bundle is not a PEM certificate bundle")]
    CaBundleNotPem,
    /// `--url` is not HTTPS.
    #[error("--url {0:?} must start with https:// (the apiserver calls webhooks over TLS only)")]
    UrlNotHttps(String),
    /// The async runtime could not start.
    #[error("cannot start runtime")]
    Runtime(#[source] std::io::Error),
    /// `test` found no suite.
    #[error("no *.test.yaml suites found")]
    NoSuites,
    /// `audit --only NAME` names a policy the controller does not serve.
    #[error("RunnerFencePolicy {name} is not served, so it cannot be audited alone: {why}")]
    NotServed {
        /// The policy.
        name: String,
        /// Its state, or that it does not exist.
        why: String,
    },
    /// A `test` path that does not exist.
    #[error("{}: no such file or directory", path.display())]
    NoSuchPath {
        /// The path.
        path: PathBuf,
    },
    /// A file or directory could not be read.
    #[error("{}", path.display())]
    Read {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A program the verb runs could not be started (not installed, not executable).
    #[error("cannot run {program} (for {}): is it installed and on PATH?", script.display())]
    Spawn {
        /// The program.
        program: &'static str,
        /// What it was to run.
        script: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file could not be written.
    #[error("{}", path.display())]
    Write {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A suite file that does not parse; the first line of the parser's message.
    #[error("{}: {message}", path.display())]
    SuiteSyntax {
        /// The suite file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A suite file of another kind.
    #[error("{}: expected apiVersion {} kind RunnerPolicyTest", path.display(), crate::core::policy::API_VERSION)]
    SuiteKind {
        /// The suite file.
        path: PathBuf,
    },
    /// A test case whose `operation` is not an admission operation.
    #[error("unknown operation {0:?}")]
    CaseOperation(String),
    /// A test case with both or neither of `input` and `object`.
    #[error("give exactly one of input and object")]
    CaseInput,
}

impl Error {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(EXIT_BAD_INPUT)
    }
}
