//! The policy controller (SPEC §12): watches `RunnerFencePolicy` objects,
//! judges them with the one loader (`core::fleet`), publishes the Ready set to
//! the server, and — on the replica holding the Lease — writes their status
//! and applies the webhook configurations and the backstop generated from them.

use crate::core::fleet::{PolicySet, State};

/// Where the controller publishes the policies to review with.
pub trait PolicySink: Send + Sync + 'static {
    /// The policies to serve, in precedence order.
    fn publish(&self, set: PolicySet);
    /// How many policies are in each state.
    fn states(&self, counts: &[(State, usize)]);
}
