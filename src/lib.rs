//! runner-fence: an admission webhook that keeps GitLab Runner job pods off
//! GitLab's own Kubernetes nodes.
#![forbid(unsafe_code)]

pub mod admission;
pub mod audit;
pub mod cli;
pub mod document;
pub mod engine;
pub mod eval;
pub mod kubeclient;
pub mod nodes;
pub mod policy;
pub mod quantity;
pub mod render;
pub mod report;
pub mod selector;
pub mod server;
pub mod tolerations;
