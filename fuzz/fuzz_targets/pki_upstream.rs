//! Fuzzes minting from an upstream certificate: any bytes as the server's leaf.
#![no_main]
#![forbid(unsafe_code)]

use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use libfuzzer_sys::fuzz_target;
use rustls_pki_types::CertificateDer;
use tlsinspect::pki::{trial, KeyKind, Minter, PolicyCa};
use tlsinspect_pipeline::api::{CertMinter, LeafKeyType, MintRequest};

fn minter() -> &'static Minter {
    static M: OnceLock<Minter> = OnceLock::new();
    M.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("tlsinspect-fuzz-{}", std::process::id()));
        let (cert, key) = trial::create(&dir, KeyKind::EcdsaP256, SystemTime::now()).unwrap();
        let ca = PolicyCa::load(&cert, &key, &[], SystemTime::now()).unwrap();
        Minter::new(vec![(Arc::from("fuzz"), Arc::new(ca))], 16).unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    let der = CertificateDer::from(data.to_vec());
    let req = MintRequest {
        policy_id: "fuzz",
        sni: Some("fuzz.example.test"),
        upstream_leaf: &der,
        upstream_verified: data.first().is_some_and(|b| b & 1 == 0),
        key_type: LeafKeyType::EcdsaP256,
    };
    if let Ok(ck) = minter().mint(&req) {
        assert!(!ck.cert.is_empty());
    }
});
