//! Inspection engines on decrypted plaintext (under construction).

pub mod appid;
pub mod http1;
pub mod ips;
pub mod text;
pub mod webfilter;
