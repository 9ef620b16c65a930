//! Control plane of a running appliance: the control socket, policy edits
//! and the Prometheus endpoint.
//!
//! The configuration file is the single source of truth. `tlsinspect policy
//! enable|disable|delete` edits the file in place (comments and layout kept)
//! and then asks the running appliance, over the control socket, to reload
//! it; a reload swaps the compiled scope table atomically, so the change acts
//! on new connections at once and survives a restart. Doing it the other way
//! round — runtime toggles the file does not know about — would let a
//! restart silently undo an operator's decision.

pub mod edit;
pub mod metrics;
pub mod socket;

pub use socket::{ControlHandler, ControlServer, Request, Response};
