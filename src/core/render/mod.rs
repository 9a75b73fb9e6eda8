//! Configuration generated from the policy: one implementation each, so the
//! runner's config.toml, the webhook configurations and what `audit` checks
//! can never drift from what the engine enforces.

pub mod admission_policy;
pub mod cluster;
pub mod crd;
pub mod generated;
pub mod placement;
mod runner_config;
pub mod webhooks;

pub use runner_config::runner_config;
