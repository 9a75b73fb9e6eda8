//! Talking to the Kubernetes API: the client, the node cache, on-demand node
//! reads and `audit`.

pub mod audit;
pub mod cache;
mod client;
pub mod controller;
pub mod nodes;

pub use client::{Access, ApiError, Call, Error, client};
