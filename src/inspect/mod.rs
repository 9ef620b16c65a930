//! Inspection engines on decrypted plaintext (under construction).

pub mod http1;
pub mod ips;
pub mod text;
