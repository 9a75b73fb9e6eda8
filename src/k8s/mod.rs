//! Talking to the Kubernetes API: the client, the node cache and `audit`.

pub mod audit;
pub mod cache;
mod client;
pub mod controller;

pub use client::{Error, client};
