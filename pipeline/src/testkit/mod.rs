//! The pipeline's one test kit, shared by its unit tests (and, for
//! [`lab`], by `benches/intercept.rs`): a test PKI and certificate minter,
//! inspectors, an in-memory log sink, smoltcp hosts with rustls
//! applications ([`lab`]), and packet crafting ([`packets`]).

pub mod lab;
pub mod packets;

pub use lab::*;
