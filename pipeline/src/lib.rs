//! The tlsinspect data plane: mechanism, not policy.
//!
//! Frames come in through a [`io::Device`], are parsed into zero-copy views,
//! classified against the compiled scope table and either forwarded unchanged
//! (the fast path) or handed to the interception machinery. Everything the
//! data plane needs from the control plane — forged certificates, plaintext
//! inspection, traffic logging — it asks for through the traits in [`api`],
//! so this crate never learns how policies, CAs or engines are configured.
#![deny(unsafe_code)]

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
pub mod io;
pub mod kernel_fast_path;
pub mod latency;
pub mod run;
pub mod stats;
pub mod steer;
pub mod tcp;
pub mod tls;
mod worker;

#[cfg(test)]
mod netns_tests;

pub use api::{CertMinter, FlowLog, Inspector};
pub use classify::{ScopeMatch, ScopeSpec, ScopeTable};
pub use run::{DeviceMode, KernelFastPathMode, Pipeline, PipelineConfig, PipelineError};
pub use stats::{Counters, Stats};
