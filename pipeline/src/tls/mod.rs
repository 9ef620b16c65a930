//! TLS handling of intercepted connections: peek, decide, intercept.
//!
//! Everything here is sans-IO. The worker feeds the client's first bytes to
//! [`client_hello::parse`], takes the [`decision::decide`] for them (consulting
//! the shared [`bypass::BypassCache`]), and for an inspected flow drives an
//! [`intercept::TlsPair`] with bytes from and to both TCP legs. No socket,
//! clock or thread is touched in this module, which is what lets the tests
//! run a real rustls client and server through it entirely in memory.

pub mod bypass;
pub mod client_hello;
pub mod decision;
pub mod pair;
mod rustls_parts;
pub use client_hello::{ClientHello, Incomplete};
