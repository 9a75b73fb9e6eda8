//! The policy and everything decided from it: pure, no async, no network.

pub mod document;
pub mod engine;
pub mod nodes;
pub mod policy;
pub mod quantity;
pub mod render;
pub mod report;
pub mod selector;
pub mod tolerations;
