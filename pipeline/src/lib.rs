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
pub mod io;
pub mod tcp;

pub use api::{CertMinter, FlowLog, Inspector};
