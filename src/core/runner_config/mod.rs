//! What GitLab Runner's `[runners.kubernetes]` settings mean for the fence:
//! reading a runner's configuration (`config.toml`, or the gitlab-runner Helm
//! chart's values), the job pods it creates, the namespaces it reaches, and
//! `check runner-config`'s findings. Pure: text in, findings out.

mod check;
mod config;
mod finding;
mod job;
mod namespaces;

pub use check::{Options, Report, check};
pub use config::{ConfigError, ConfigFile, Format, Kubernetes, Location, Runner};
pub use finding::{Finding, FindingId, Job, Problem, RunnerRef, Severity};
pub use job::{JobPod, job_pod};
pub use namespaces::Reach;
pub(crate) use namespaces::{PER_JOB_PREFIX, covers_per_job};
