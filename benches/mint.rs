//! Leaf minting: cache miss (parse, encode, sign) and cache hit, per key type.

use std::sync::Arc;
use std::time::SystemTime;

use criterion::{criterion_group, criterion_main, Criterion};
use rustls::pki_types::CertificateDer;
use tlsinspect::pki::{trial, KeyKind, Minter, PolicyCa};
use tlsinspect_pipeline::api::{CertMinter, LeafKeyType, MintRequest};

fn upstream() -> CertificateDer<'static> {
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p = rcgen::CertificateParams::new(vec![
        "www.example.test".to_string(),
        "example.test".to_string(),
        "*.cdn.example.test".to_string(),
    ])
    .unwrap();
    p.distinguished_name
        .push(rcgen::DnType::CommonName, "www.example.test");
    p.self_signed(&kp).unwrap().der().clone()
}

fn minter(dir: &std::path::Path, kind: KeyKind, cache: usize) -> Minter {
    let sub = dir.join(format!("{kind:?}"));
    let (cert, key) = trial::create(&sub, kind, SystemTime::now()).unwrap();
    let ca = Arc::new(PolicyCa::load(&cert, &key, &[], SystemTime::now()).unwrap());
    Minter::new(vec![(Arc::from("pol"), ca)], cache).unwrap()
}

fn bench(c: &mut Criterion) {
    // The floor: one P-256 signature over a leaf-sized message, which every miss pays.
    {
        use aws_lc_rs::rand::SystemRandom;
        use aws_lc_rs::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};
        let key = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_ASN1_SIGNING).unwrap();
        let rng = SystemRandom::new();
        let msg = [0x5au8; 600];
        c.bench_function("mint/baseline/p256-sign-only", |b| {
            b.iter(|| key.sign(&rng, &msg).unwrap())
        });
    }
    let dir = tempfile::tempdir().unwrap();
    let up = upstream();
    let uncached_ec = minter(dir.path(), KeyKind::EcdsaP256, 0);
    let cached_ec = minter(&dir.path().join("c"), KeyKind::EcdsaP256, 1000);
    let uncached_rsa_ca = minter(&dir.path().join("r"), KeyKind::Rsa2048, 0);
    for (leaf, kt) in [
        ("ecdsa", LeafKeyType::EcdsaP256),
        ("rsa", LeafKeyType::Rsa2048),
    ] {
        let req = MintRequest {
            policy_id: "pol",
            sni: Some("www.example.test"),
            upstream_leaf: &up,
            upstream_verified: true,
            key_type: kt,
        };
        c.bench_function(&format!("mint/miss/ecdsa-ca/{leaf}-leaf"), |b| {
            b.iter(|| uncached_ec.mint(&req).unwrap())
        });
        cached_ec.mint(&req).unwrap();
        c.bench_function(&format!("mint/hit/ecdsa-ca/{leaf}-leaf"), |b| {
            b.iter(|| cached_ec.mint(&req).unwrap())
        });
        c.bench_function(&format!("mint/miss/rsa-ca/{leaf}-leaf"), |b| {
            b.iter(|| uncached_rsa_ca.mint(&req).unwrap())
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
