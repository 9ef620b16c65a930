//! The tlsinspect data plane: mechanism, not policy.
//!
//! Frames come in through a [`io::Device`], are parsed into zero-copy views,
//! classified against the compiled scope table and either forwarded unchanged
//! (the fast path) or handed to the interception machinery. Everything the
//! data plane needs from the control plane — forged certificates, plaintext
//! inspection, traffic logging — it asks for through the traits in [`api`],
//! so this crate never learns how policies, CAs or engines are configured.
#![forbid(unsafe_code)]

pub mod api;
pub mod classify;
pub mod conn;
pub mod dispatch;
pub mod fault;
pub mod flow;
pub mod frame;
pub mod framing;
pub mod geneve;
pub mod gso;
pub mod hostglob;
pub mod kernel_fast_path;
pub mod latency;
pub mod reason;
pub mod run;
pub mod stats;
pub mod steer;
pub mod tcp;
pub mod tls;
mod worker;

#[cfg(test)]
mod netns_tests;
#[cfg(test)]
pub(crate) mod testkit;

/// The frame devices, in their own crate: the only code that uses `unsafe`.
pub use tlsinspect_io as io;

pub use api::{CertMinter, FlowLog, Inspector};
pub use classify::{ScopeMatch, ScopeSpec, ScopeTable};
pub use run::{DeviceMode, KernelFastPathMode, Pipeline, PipelineConfig, PipelineError};
pub use stats::{Counters, Stats};
