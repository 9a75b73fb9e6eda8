//! The policy and everything decided from it: the model, loading and lint,
//! the engine, the generated configuration, node snapshots. No async, no
//! network and no Kubernetes client: files are read only where a policy, a
//! node list or an input document is loaded, and everything else is a pure
//! function of its arguments. Every other layer builds on this one.

pub mod document;
pub mod engine;
pub mod fleet;
pub mod manifests;
pub mod nodes;
pub mod policy;
pub mod quantity;
pub mod rbac;
pub mod render;
pub mod report;
pub mod runner_config;
pub(crate) mod scalar;
pub(crate) mod selector;
pub(crate) mod tolerations;
