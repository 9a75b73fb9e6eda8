//! runner-fence: an admission webhook that keeps GitLab Runner job pods off
//! GitLab's own Kubernetes nodes.
#![forbid(unsafe_code)]

pub mod cli;
pub mod core;
pub mod k8s;
pub mod webhook;
