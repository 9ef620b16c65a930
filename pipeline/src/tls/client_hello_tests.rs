//! Tests of the ClientHello peek parser over captured real hellos and hostile input.

use super::*;

const CHROMIUM: &[u8] = include_bytes!("testdata/chromium.bin");
const FIREFOX: &[u8] = include_bytes!("testdata/firefox.bin");
const CURL: &[u8] = include_bytes!("testdata/curl.bin");
const CURL_TLS12: &[u8] = include_bytes!("testdata/curl-tls12.bin");
const OPENSSL: &[u8] = include_bytes!("testdata/openssl.bin");
const OPENSSL_NOSNI: &[u8] = include_bytes!("testdata/openssl-nosni.bin");
const PYTHON: &[u8] = include_bytes!("testdata/python-urllib.bin");

/// All captured hellos with their names.
pub(crate) const ALL: &[(&str, &[u8])] = &[
    ("chromium", CHROMIUM),
    ("firefox", FIREFOX),
    ("curl", CURL),
    ("curl-tls12", CURL_TLS12),
    ("openssl", OPENSSL),
    ("openssl-nosni", OPENSSL_NOSNI),
    ("python-urllib", PYTHON),
];

struct Expect {
    name: &'static str,
    sni: Option<&'static str>,
    versions: &'static [u16],
    alpn: &'static [&'static str],
    ech: bool,
    highest: u16,
    ja4: &'static str,
}

/// The README table of the captures, plus JA4 values computed by an
/// independent script from the FoxIO spec, GREASE ignored everywhere (Chromium's cipher hash
/// `8daaf6152771` is the published Chrome value).
const EXPECT: &[Expect] = &[
    Expect {
        name: "chromium",
        sni: Some("hello.test"),
        versions: &[0x9a9a, TLS13, TLS12],
        alpn: &["h2", "http/1.1"],
        ech: true,
        highest: TLS13,
        ja4: "t13d1517h2_8daaf6152771_cb7bf5808d99",
    },
    Expect {
        name: "firefox",
        sni: Some("hello.test"),
        versions: &[TLS13, TLS12],
        alpn: &["h2", "http/1.1"],
        ech: true,
        highest: TLS13,
        ja4: "t13d1617h2_86a278354501_3cbfd9057e0d",
    },
    Expect {
        name: "curl",
        sni: Some("hello.test"),
        versions: &[TLS13, TLS12, TLS11, TLS10],
        alpn: &["h2", "http/1.1"],
        ech: false,
        highest: TLS13,
        ja4: "t13d3112h2_e8f1e7e78f70_b26ce05bbdd6",
    },
    Expect {
        name: "curl-tls12",
        sni: Some("hello.test"),
        versions: &[],
        alpn: &["h2", "http/1.1"],
        ech: false,
        highest: TLS12,
        ja4: "t12d2807h2_d943125447b4_a44c6288192a",
    },
    Expect {
        name: "openssl",
        sni: Some("hello.test"),
        versions: &[TLS13, TLS12, TLS11, TLS10],
        alpn: &[],
        ech: false,
        highest: TLS13,
        ja4: "t13d311000_e8f1e7e78f70_1f22a2ca17c4",
    },
    Expect {
        name: "openssl-nosni",
        sni: None,
        versions: &[TLS13, TLS12, TLS11, TLS10],
        alpn: &[],
        ech: false,
        highest: TLS13,
        ja4: "t13i310900_e8f1e7e78f70_1f22a2ca17c4",
    },
    Expect {
        name: "python-urllib",
        sni: Some("localhost"),
        versions: &[TLS13, TLS12],
        alpn: &["http/1.1"],
        ech: false,
        highest: TLS13,
        ja4: "t13d1813h1_85036bcba153_d339722ba4af",
    },
];

fn bytes_of(name: &str) -> &'static [u8] {
    ALL.iter()
        .find(|(n, _)| *n == name)
        .map(|(_, b)| *b)
        .unwrap()
}

fn check(e: &Expect, h: &ClientHello) {
    assert_eq!(h.sni.as_deref(), e.sni, "{}: sni", e.name);
    assert_eq!(
        h.supported_versions, e.versions,
        "{}: supported_versions",
        e.name
    );
    assert_eq!(h.alpn_strings(), e.alpn, "{}: alpn", e.name);
    assert_eq!(h.ech, e.ech, "{}: ech", e.name);
    assert_eq!(h.highest_version(), e.highest, "{}: highest", e.name);
    assert_eq!(h.legacy_version, TLS12, "{}: legacy_version", e.name);
    assert_eq!(h.ja4, e.ja4, "{}: ja4", e.name);
    // Every one of these clients offers ecdsa_secp256r1_sha256.
    assert_eq!(h.leaf_key_type(), LeafKeyType::EcdsaP256, "{}", e.name);
    assert!(!h.cipher_suites.is_empty() && !h.signature_algorithms.is_empty());
    assert!(!h.supported_groups.is_empty());
}

#[test]
fn captured_hellos_give_the_readme_fields() {
    for e in EXPECT {
        let b = bytes_of(e.name);
        let h = parse(b).unwrap().unwrap();
        assert_eq!(h.len, b.len(), "{}", e.name);
        check(e, &h);
    }
    // Extension order is the wire order: curl sends server_name first.
    let curl = parse(CURL).unwrap().unwrap();
    // ec_point_formats as sent (checked against an independent parse of
    // the captures): OpenSSL offers all three formats, browsers only
    // uncompressed.
    assert_eq!(curl.ec_point_formats, [0, 1, 2]);
    assert_eq!(parse(CHROMIUM).unwrap().unwrap().ec_point_formats, [0]);
    assert_eq!(curl.extensions[0], ext::SERVER_NAME);
    assert!(curl.offers_tls13() && curl.offers_version(TLS10));
    let c12 = parse(CURL_TLS12).unwrap().unwrap();
    assert!(!c12.offers_tls13() && c12.offers_version(TLS12) && c12.offers_version(TLS10));
}

#[test]
fn every_prefix_is_incomplete_until_the_last_byte() {
    for (name, b) in ALL {
        let full = parse(b).unwrap().unwrap();
        for n in 0..b.len() {
            match parse(&b[..n]) {
                Err(Incomplete { needed }) => {
                    assert!(needed >= 1, "{name} prefix {n}");
                    assert!(
                        n + needed <= b.len(),
                        "{name} prefix {n}: needed {needed} overshoots"
                    );
                }
                other => panic!("{name}: prefix of {n} bytes gave {other:?}"),
            }
        }
        assert_eq!(parse(b).unwrap().unwrap(), full);
    }
}

#[test]
fn every_split_point_across_two_segments() {
    for (name, b) in ALL {
        let full = parse(b).unwrap().unwrap();
        for split in 1..b.len() {
            // The worker accumulates segments and re-peeks after each.
            let mut acc = Vec::new();
            acc.extend_from_slice(&b[..split]);
            assert!(parse(&acc).is_err(), "{name} split {split}");
            acc.extend_from_slice(&b[split..]);
            assert_eq!(
                parse(&acc).unwrap().as_ref(),
                Some(&full),
                "{name} split {split}"
            );
        }
    }
}

/// Re-frames the handshake message of `b` into records of at most `size` bytes.
pub(crate) fn reframe(b: &[u8], size: usize) -> Vec<u8> {
    let mut hs = Vec::new();
    let mut p = 0;
    while p < b.len() {
        let l = usize::from(u16::from_be_bytes([b[p + 3], b[p + 4]]));
        hs.extend_from_slice(&b[p + 5..p + 5 + l]);
        p += 5 + l;
    }
    let mut out = Vec::new();
    for chunk in hs.chunks(size) {
        out.extend_from_slice(&[0x16, 0x03, 0x01]);
        out.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
        out.extend_from_slice(chunk);
    }
    out
}

#[test]
fn hellos_reframed_into_small_records() {
    for (name, b) in ALL {
        let full = parse(b).unwrap().unwrap();
        for size in [1, 3, 4, 5, 100, 512] {
            let r = reframe(b, size);
            let h = parse(&r)
                .unwrap()
                .unwrap_or_else(|| panic!("{name} size {size}"));
            assert_eq!(h.len, r.len());
            assert_eq!(
                ClientHello { len: full.len, ..h },
                full,
                "{name} size {size}"
            );
        }
    }
    // Every prefix of a re-framed browser hello, too.
    let r = reframe(CHROMIUM, 7);
    for n in 0..r.len() {
        assert!(parse(&r[..n]).is_err(), "prefix {n}");
    }
    assert!(parse(&r).unwrap().is_some());
}

#[test]
fn bytes_after_the_hello_are_left_alone() {
    let mut b = CURL.to_vec();
    b.extend_from_slice(&[0x14, 0x03, 0x03, 0x00, 0x01, 0x01]); // ChangeCipherSpec
    b.extend_from_slice(b"\x17\x03\x03\x00\x05early");
    let h = parse(&b).unwrap().unwrap();
    assert_eq!(h.len, CURL.len());
    assert_eq!(h.sni.as_deref(), Some("hello.test"));
}

#[test]
fn non_tls_bytes_are_recognised_early() {
    for input in [
        &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        b"G",
        b"SSH-2.0-OpenSSH_9.2\r\n",
        b"\x00\x00\x00\x00\x00\x00",
        b"\x80\x2e\x01\x00\x02\x00\x15", // SSLv2-compatible hello
        b"\x16\x02",                     // record version 2.x
        b"\x16\x03\x09",                 // record version 3.9
        b"\x17\x03\x03\x00\x10",         // application data first
        b"\x16\x03\x01\x00\x04\x02",     // a ServerHello, not a ClientHello
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    ] {
        assert_eq!(parse(input), Ok(None), "{input:?}");
    }
    assert_eq!(peek(b"GET /"), Err(PeekError::NotTls));
    assert_eq!(parse(b""), Err(Incomplete { needed: 5 }));
    assert_eq!(parse(b"\x16\x03"), Err(Incomplete { needed: 3 }));
}

/// Builds a one-record ClientHello with the given extensions.
fn build(exts: &[(u16, Vec<u8>)]) -> Vec<u8> {
    let mut body = vec![0x03, 0x03];
    body.extend_from_slice(&[7u8; 32]);
    body.push(0); // session id
    body.extend_from_slice(&[0x00, 0x02, 0x13, 0x01]);
    body.extend_from_slice(&[0x01, 0x00]);
    let mut e = Vec::new();
    for (ty, data) in exts {
        e.extend_from_slice(&ty.to_be_bytes());
        e.extend_from_slice(&(data.len() as u16).to_be_bytes());
        e.extend_from_slice(data);
    }
    body.extend_from_slice(&(e.len() as u16).to_be_bytes());
    body.extend_from_slice(&e);
    let mut hs = vec![0x01];
    hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend_from_slice(&body);
    let mut rec = vec![0x16, 0x03, 0x01];
    rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    rec.extend_from_slice(&hs);
    rec
}

fn sni_ext(name: &[u8]) -> Vec<u8> {
    let mut v = ((name.len() + 3) as u16).to_be_bytes().to_vec();
    v.push(0);
    v.extend_from_slice(&(name.len() as u16).to_be_bytes());
    v.extend_from_slice(name);
    v
}

#[test]
fn synthetic_hellos() {
    let ok = build(&[(0, sni_ext(b"WWW.Example.COM."))]);
    let h = parse(&ok).unwrap().unwrap();
    assert_eq!(h.sni.as_deref(), Some("www.example.com"));
    assert_eq!(h.leaf_key_type(), LeafKeyType::Rsa2048); // no signature_algorithms
    assert_eq!(h.highest_version(), TLS12);
    assert!(h.ja4.starts_with("t12d0101"), "{}", h.ja4);

    // ec_point_formats is read for JA3; a malformed one is ignored, as
    // before it was read.
    let pf = parse(&build(&[(11, vec![0x02, 0x00, 0x01])]))
        .unwrap()
        .unwrap();
    assert_eq!(pf.ec_point_formats, [0, 1]);
    for bad in [vec![0x05, 0x00], vec![0x01, 0x00, 0x01], vec![]] {
        let h = parse(&build(&[(11, bad.clone())])).unwrap().unwrap();
        assert!(h.ec_point_formats.is_empty(), "{bad:?}");
        assert_eq!(h.extensions, [11]);
    }

    // Hostile: duplicate extension, invalid names, lying inner lengths.
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            build(&[(0, sni_ext(b"a.test")), (0, sni_ext(b"b.test"))]),
            "duplicate extension",
        ),
        (build(&[(0, sni_ext(b"bad name.test"))]), "space in name"),
        (build(&[(0, sni_ext(b"192.0.2.1"))]), "ip literal"),
        (build(&[(0, sni_ext(b"\xff\xfe"))]), "non ascii"),
        (
            build(&[(0, vec![0x00, 0x09, 0x00, 0x00, 0x03, b'a'])]),
            "sni list longer than ext",
        ),
        (
            build(&[(16, vec![0x00, 0x03, 0x00, b'h', b'2'])]),
            "empty alpn name",
        ),
        (
            build(&[(16, vec![0x00, 0x04, 0x05, b'h', b'2', b'x'])]),
            "alpn name too long",
        ),
        (
            build(&[(43, vec![0x03, 0x03, 0x04, 0x03])]),
            "odd supported_versions",
        ),
        (build(&[(43, vec![0x00])]), "empty supported_versions"),
        (
            build(&[(13, vec![0x00, 0x04, 0x04, 0x03])]),
            "short sigalgs",
        ),
        (
            build(&[(10, vec![0xff, 0xff])]),
            "groups length beyond bounds",
        ),
    ];
    for (b, what) in cases {
        assert!(
            matches!(peek(&b), Err(PeekError::Malformed(_))),
            "{what}: {:?}",
            peek(&b)
        );
        assert_eq!(parse(&b), Ok(None), "{what}");
    }
}

#[test]
fn lengths_beyond_bounds_and_huge_inputs() {
    // Record longer than 2^14.
    assert!(matches!(
        peek(b"\x16\x03\x01\x40\x01\x01"),
        Err(PeekError::Malformed(_))
    ));
    // Zero-length record.
    assert!(matches!(
        peek(b"\x16\x03\x01\x00\x00"),
        Err(PeekError::Malformed(_))
    ));
    // A handshake length that cannot fit the cap is refused before its bytes arrive.
    assert_eq!(
        peek(b"\x16\x03\x01\x40\x00\x01\x00\x40\x00"),
        Err(PeekError::TooLarge)
    );
    assert_eq!(
        peek(b"\x16\x03\x01\x40\x00\x01\xff\xff\xff"),
        Err(PeekError::TooLarge)
    );
    // Endless tiny records of a hello that claims 16 000 bytes.
    let mut b = vec![0x16, 0x03, 0x01, 0x00, 0x04, 0x01, 0x00, 0x3e, 0x80];
    while b.len() < 64 * 1024 {
        b.extend_from_slice(&[0x16, 0x03, 0x01, 0x00, 0x01, 0x00]);
    }
    assert_eq!(peek(&b), Err(PeekError::TooLarge));
    // A record of the wrong type in the middle of the hello.
    let mut r = reframe(CURL, 100);
    r[105] = 0x17;
    assert!(matches!(peek(&r), Err(PeekError::Malformed(_))));
    // Handshake length shorter than the hello: the body parse runs out.
    let mut c = CURL.to_vec();
    c[8] -= 40;
    assert!(parse(&c).unwrap().is_none());
    // One megabyte of garbage after a handshake header.
    let mut g = vec![0x16, 0x03, 0x03, 0x3f, 0xff];
    g.resize(1 << 20, 0xff);
    assert_eq!(parse(&g), Ok(None));
}

#[test]
fn every_single_byte_corruption_is_handled() {
    for (name, b) in [("curl", CURL), ("openssl-nosni", OPENSSL_NOSNI)] {
        for i in 0..b.len() {
            for v in [0x00, 0x01, 0x7f, 0xff, b[i] ^ 0x01] {
                let mut c = b.to_vec();
                c[i] = v;
                // Any answer is fine; a panic or a wrong length is not.
                if let Ok(Some(h)) = parse(&c) {
                    assert!(h.len <= c.len(), "{name} byte {i}");
                }
            }
        }
    }
}

#[test]
fn random_mutations_never_panic() {
    // A deterministic poor man's fuzzer over every capture: flips, splices
    // and length-field overwrites, re-framed or not.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for (_, b) in ALL {
        for round in 0..3000 {
            let mut c = if round % 3 == 0 {
                reframe(b, 1 + (next() % 300) as usize)
            } else {
                b.to_vec()
            };
            for _ in 0..1 + next() % 4 {
                let i = (next() as usize) % c.len();
                match next() % 4 {
                    0 => c[i] = next() as u8,
                    1 => c[i] ^= 1 << (next() % 8),
                    2 => {
                        let v = (next() as u16).to_be_bytes();
                        c[i] = v[0];
                        if i + 1 < c.len() {
                            c[i + 1] = v[1];
                        }
                    }
                    _ => c.truncate(i.max(1)),
                }
            }
            match parse(&c) {
                Ok(Some(h)) => assert!(h.len <= c.len() && h.ja4.len() == 36),
                Ok(None) => {}
                Err(Incomplete { needed }) => assert!(needed >= 1),
            }
        }
    }
}
