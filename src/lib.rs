//! tlsinspect: the control plane and inspection engines of the appliance.
//!
//! The data plane lives in the `tlsinspect-pipeline` crate; this crate turns
//! an operator's configuration into the data the pipeline runs on (compiled
//! scope tables, CAs, engines) and implements the pipeline's traits
//! (`CertMinter`, `Inspector`, `FlowLog`).
#![forbid(unsafe_code)]

pub mod appliance;
pub mod capture;
pub mod cli;
pub mod config;
pub mod console;
pub mod control;
pub mod demo;
pub mod inspect;
pub mod log;
pub mod pki;
pub mod runtime;
