//! Peek parser for the ClientHello at the start of an intercepted TCP stream.
//!
//! The worker calls [`parse`] with every byte the client has sent so far
//! (accumulated, not only the newest segment) until it gets an answer, in the
//! manner of linkerd's `parse_sni` and g3's protocol inspection:
//!
//! * `Ok(Some(hello))`: a complete, well-formed ClientHello;
//! * `Ok(None)`: these bytes are definitely not a TLS ClientHello we can
//!   work with (plain HTTP, garbage, SSLv2-style hellos, a malformed or
//!   oversized hello) — the decision treats them as `non_tls`;
//! * `Err(Incomplete { needed })`: too few bytes to tell; call again once at
//!   least `needed` more bytes have arrived.
//!
//! It is sans-IO and re-parses from the start on every call: a hello is at
//! most [`MAX_HELLO_BYTES`] long and arrives in one to three segments, so
//! keeping partial state would buy nothing and cost correctness. The hello may
//! be fragmented over any number of TLS records and any number of TCP
//! segments; records are reassembled before the handshake message is parsed.
//! Bytes after the hello (early data, a ChangeCipherSpec) are left alone.
//!
//! Every length is checked against the bytes that contain it, so hostile
//! input yields [`PeekError`] rather than a panic; [`peek`] gives the
//! detailed reason and [`parse`] folds it into `Ok(None)`.
#![warn(clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used)]

use std::borrow::Cow;
use std::fmt;

use crate::api::LeafKeyType;

/// Most bytes of the stream (record headers included) a ClientHello may
/// occupy before the parser gives up on it.
///
/// Real hellos with post-quantum key shares are about 2 KiB; 16 KiB leaves
/// ample room while bounding the memory a client can make us hold.
pub const MAX_HELLO_BYTES: usize = 16 * 1024;

/// Largest TLS plaintext record body (RFC 8446 §5.1).
const MAX_RECORD_BODY: usize = 1 << 14;
const RECORD_HEADER: usize = 5;
const HANDSHAKE_HEADER: usize = 4;
const CONTENT_HANDSHAKE: u8 = 0x16;
const HANDSHAKE_CLIENT_HELLO: u8 = 0x01;

/// Extension code points the parser looks into.
pub mod ext {
    /// server_name (RFC 6066).
    pub const SERVER_NAME: u16 = 0x0000;
    /// supported_groups (RFC 8422 / 8446).
    pub const SUPPORTED_GROUPS: u16 = 0x000a;
    /// ec_point_formats (RFC 8422).
    pub const EC_POINT_FORMATS: u16 = 0x000b;
    /// signature_algorithms (RFC 8446).
    pub const SIGNATURE_ALGORITHMS: u16 = 0x000d;
    /// application_layer_protocol_negotiation (RFC 7301).
    pub const ALPN: u16 = 0x0010;
    /// supported_versions (RFC 8446).
    pub const SUPPORTED_VERSIONS: u16 = 0x002b;
    /// encrypted_client_hello (RFC 9849).
    pub const ECH: u16 = 0xfe0d;
}

/// TLS 1.0 on the wire.
pub const TLS10: u16 = 0x0301;
/// TLS 1.1 on the wire.
pub const TLS11: u16 = 0x0302;
/// TLS 1.2 on the wire.
pub const TLS12: u16 = 0x0303;
/// TLS 1.3 on the wire.
pub const TLS13: u16 = 0x0304;

/// More bytes are needed before the parser can answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Incomplete {
    /// Lower bound of additional bytes needed before another call can answer.
    pub needed: usize,
}

/// Why the bytes are not a usable ClientHello, or that more are needed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PeekError {
    /// Too few bytes to decide yet.
    #[error("incomplete ClientHello: at least {needed} more bytes needed")]
    Incomplete {
        /// Lower bound of additional bytes needed.
        needed: usize,
    },
    /// The stream does not start with a TLS handshake record.
    #[error("not a TLS handshake")]
    NotTls,
    /// The hello would occupy more than [`MAX_HELLO_BYTES`] of the stream.
    #[error("ClientHello longer than {MAX_HELLO_BYTES} bytes")]
    TooLarge,
    /// A TLS handshake that is not a well-formed ClientHello.
    #[error("malformed ClientHello: {0}")]
    Malformed(&'static str),
}

/// The facts the appliance needs from a ClientHello.
///
/// Lists keep the client's order and its GREASE values (RFC 8701) exactly as
/// offered; the helper methods ignore GREASE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientHello {
    /// Bytes of the stream the hello's records occupy (headers included).
    pub len: usize,
    /// `legacy_version` of the ClientHello body.
    pub legacy_version: u16,
    /// Server name, validated as a DNS name, lower-cased, trailing dot removed.
    pub sni: Option<String>,
    /// ALPN protocol names in offer order.
    pub alpn: Vec<Vec<u8>>,
    /// supported_versions in offer order (empty when the extension is absent).
    pub supported_versions: Vec<u16>,
    /// Cipher suites in offer order.
    pub cipher_suites: Vec<u16>,
    /// Extension types in the order they appear.
    pub extensions: Vec<u16>,
    /// signature_algorithms in offer order.
    pub signature_algorithms: Vec<u16>,
    /// supported_groups in offer order.
    pub supported_groups: Vec<u16>,
    /// ec_point_formats in offer order (JA3 fingerprints them).
    pub ec_point_formats: Vec<u8>,
    /// Whether an encrypted_client_hello extension (0xfe0d) is present.
    pub ech: bool,
    /// JA4 fingerprint (FoxIO JA4 TLS client, TCP).
    pub ja4: String,
}

/// Whether `v` is a GREASE value (RFC 8701): `0x?a?a` with equal bytes.
pub fn is_grease(v: u16) -> bool {
    v & 0x0f0f == 0x0a0a && v >> 8 == v & 0xff
}

/// The log spelling of a TLS protocol version, e.g. `TLS 1.3`.
pub fn version_name(v: u16) -> String {
    match v {
        0x0300 => "SSL 3.0".into(),
        TLS10 => "TLS 1.0".into(),
        TLS11 => "TLS 1.1".into(),
        TLS12 => "TLS 1.2".into(),
        TLS13 => "TLS 1.3".into(),
        other => format!("0x{other:04x}"),
    }
}

impl ClientHello {
    /// The highest protocol version offered: the largest non-GREASE entry of
    /// supported_versions, or `legacy_version` without that extension.
    pub fn highest_version(&self) -> u16 {
        self.supported_versions
            .iter()
            .copied()
            .filter(|v| !is_grease(*v))
            .max()
            .unwrap_or(self.legacy_version)
    }

    /// Whether the client offers TLS version `v` (RFC 8446 §4.2.1 rules:
    /// supported_versions when present, else every version up to legacy_version).
    pub fn offers_version(&self, v: u16) -> bool {
        if self.supported_versions.is_empty() {
            (TLS10..=self.legacy_version).contains(&v)
        } else {
            self.supported_versions.contains(&v)
        }
    }

    /// Whether TLS 1.3 is offered.
    pub fn offers_tls13(&self) -> bool {
        self.offers_version(TLS13)
    }

    /// Key type for the forged leaf: ECDSA P-256 when the client offers
    /// `ecdsa_secp256r1_sha256` (0x0403, the only scheme a P-256 key signs
    /// with in rustls), RSA-2048 otherwise, including hellos without a
    /// signature_algorithms extension (pre-TLS 1.2 defaults are RSA).
    pub fn leaf_key_type(&self) -> LeafKeyType {
        if self.signature_algorithms.contains(&0x0403) {
            LeafKeyType::EcdsaP256
        } else {
            LeafKeyType::Rsa2048
        }
    }

    /// ALPN names that are valid UTF-8, for logging.
    pub fn alpn_strings(&self) -> Vec<String> {
        self.alpn
            .iter()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect()
    }
}

/// Parses the ClientHello at the start of `buf` (all bytes the client sent so far).
///
/// Malformed, oversized and non-TLS input all give `Ok(None)`; use [`peek`]
/// for the reason.
pub fn parse(buf: &[u8]) -> Result<Option<ClientHello>, Incomplete> {
    match peek(buf) {
        Ok(h) => Ok(Some(h)),
        Err(PeekError::Incomplete { needed }) => Err(Incomplete { needed }),
        Err(_) => Ok(None),
    }
}

/// Parses the ClientHello at the start of `buf`, with the reason on failure.
pub fn peek(buf: &[u8]) -> Result<ClientHello, PeekError> {
    let (body, len) = reassemble(buf)?;
    let mut hello = parse_body(&body)?;
    hello.len = len;
    hello.ja4 = ja4(&hello);
    Ok(hello)
}

/// Collects the handshake message carried by the leading records.
///
/// Returns the ClientHello body (without the handshake header) and the
/// number of stream bytes its records occupy.
fn reassemble(buf: &[u8]) -> Result<(Cow<'_, [u8]>, usize), PeekError> {
    // Check the header bytes that are there before asking for more, so
    // plain text is recognised from its first byte.
    let check_header = |h: &[u8]| -> Result<(), PeekError> {
        if h.first().is_some_and(|b| *b != CONTENT_HANDSHAKE) {
            return Err(PeekError::NotTls);
        }
        if h.get(1).is_some_and(|b| *b != 0x03) || h.get(2).is_some_and(|b| *b > 0x04) {
            return Err(PeekError::NotTls);
        }
        Ok(())
    };

    let mut pos = 0;
    // Handshake bytes from complete records; single-record hellos borrow.
    let mut joined: Option<Vec<u8>> = None;
    let mut first: &[u8] = &[];
    let mut records = 0usize;
    loop {
        let rest = buf.get(pos..).unwrap_or(&[]);
        let Some((&[content, _, _, l0, l1], body)) = rest.split_first_chunk::<RECORD_HEADER>()
        else {
            check_header(rest)?;
            // The partial record cannot complete a hello, but its first body
            // byte may already rule TLS out.
            return Err(PeekError::Incomplete {
                needed: RECORD_HEADER - rest.len(),
            });
        };
        // A non-handshake record in the middle of the hello is a protocol
        // violation; before any record it means "not TLS".
        if records > 0 && content != CONTENT_HANDSHAKE {
            return Err(PeekError::Malformed(
                "non-handshake record inside the ClientHello",
            ));
        }
        check_header(rest)?;
        let rec_len = usize::from(u16::from_be_bytes([l0, l1]));
        if rec_len == 0 {
            return Err(PeekError::Malformed("empty handshake record"));
        }
        if rec_len > MAX_RECORD_BODY {
            return Err(PeekError::Malformed("record longer than 2^14 bytes"));
        }
        if pos + RECORD_HEADER + rec_len > MAX_HELLO_BYTES {
            return Err(PeekError::TooLarge);
        }
        let avail = body.get(..rec_len).unwrap_or(body);

        // Look at what is known of the handshake so far (complete records
        // plus the available part of this one) to fail early.
        let known_len = joined.as_ref().map_or(first.len(), Vec::len);
        let mut head = [0u8; HANDSHAKE_HEADER];
        let mut n = 0;
        for (h, b) in head
            .iter_mut()
            .zip(joined.as_deref().unwrap_or(first).iter().chain(avail))
        {
            *h = *b;
            n += 1;
        }
        let [kind, l0, l1, l2] = head;
        if n >= 1 && kind != HANDSHAKE_CLIENT_HELLO {
            return Err(if records == 0 && known_len == 0 {
                PeekError::NotTls
            } else {
                PeekError::Malformed("handshake message is not a ClientHello")
            });
        }
        let mut msg_total = None;
        if n == HANDSHAKE_HEADER {
            let body_len = usize::from(l0) << 16 | usize::from(l1) << 8 | usize::from(l2);
            let total = HANDSHAKE_HEADER + body_len;
            // Each further record adds at least a header and one byte, so
            // the hello cannot fit when its bytes alone exceed the cap.
            if pos + RECORD_HEADER + total > MAX_HELLO_BYTES {
                return Err(PeekError::TooLarge);
            }
            msg_total = Some(total);
        }

        if avail.len() < rec_len {
            return Err(PeekError::Incomplete {
                needed: rec_len - avail.len(),
            });
        }
        // The record is complete: append it.
        match (&mut joined, records) {
            (None, 0) => first = avail,
            (None, _) => {
                let mut v = Vec::with_capacity(msg_total.unwrap_or(first.len() + avail.len()));
                v.extend_from_slice(first);
                v.extend_from_slice(avail);
                joined = Some(v);
            }
            (Some(v), _) => v.extend_from_slice(avail),
        }
        records += 1;
        pos += RECORD_HEADER + rec_len;

        let have = joined.as_ref().map_or(first.len(), Vec::len);
        if let Some(total) = msg_total {
            if have >= total {
                // Bytes of a following handshake message in the same record
                // are ignored: the hello is all the peek needs.
                let body = match joined {
                    Some(mut v) => {
                        v.truncate(total);
                        v.drain(..HANDSHAKE_HEADER);
                        Cow::Owned(v)
                    }
                    None => Cow::Borrowed(first.get(HANDSHAKE_HEADER..total).unwrap_or(&[])),
                };
                return Ok((body, pos));
            }
        }
    }
}

/// A bounds-checked cursor over untrusted bytes.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], PeekError> {
        let (head, tail) = self
            .buf
            .split_at_checked(n)
            .ok_or(PeekError::Malformed(what))?;
        self.buf = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], PeekError> {
        let (head, tail) = self
            .buf
            .split_first_chunk::<N>()
            .ok_or(PeekError::Malformed(what))?;
        self.buf = tail;
        Ok(*head)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, PeekError> {
        Ok(u8::from_be_bytes(self.array(what)?))
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, PeekError> {
        Ok(u16::from_be_bytes(self.array(what)?))
    }

    /// A vector with a one-byte length prefix.
    fn vec8(&mut self, what: &'static str) -> Result<&'a [u8], PeekError> {
        let n = self.u8(what)?;
        self.take(usize::from(n), what)
    }

    /// A vector with a two-byte length prefix.
    fn vec16(&mut self, what: &'static str) -> Result<&'a [u8], PeekError> {
        let n = self.u16(what)?;
        self.take(usize::from(n), what)
    }
}

/// Reads a list of u16 values that must fill `b` exactly.
fn u16_list(b: &[u8], what: &'static str) -> Result<Vec<u16>, PeekError> {
    if b.len() % 2 != 0 {
        return Err(PeekError::Malformed(what));
    }
    Ok(b.chunks_exact(2)
        .filter_map(|c| <[u8; 2]>::try_from(c).ok())
        .map(u16::from_be_bytes)
        .collect())
}

/// Parses a ClientHello body (RFC 8446 §4.1.2).
fn parse_body(body: &[u8]) -> Result<ClientHello, PeekError> {
    let mut r = Reader::new(body);
    let legacy_version = r.u16("legacy_version")?;
    if legacy_version >> 8 != 0x03 {
        return Err(PeekError::Malformed("legacy_version is not 3.x"));
    }
    r.take(32, "random")?;
    let session_id = r.vec8("legacy_session_id")?;
    if session_id.len() > 32 {
        return Err(PeekError::Malformed(
            "legacy_session_id longer than 32 bytes",
        ));
    }
    let suites = r.vec16("cipher_suites")?;
    if suites.is_empty() {
        return Err(PeekError::Malformed("no cipher suites"));
    }
    let cipher_suites = u16_list(suites, "cipher_suites has odd length")?;
    let compression = r.vec8("legacy_compression_methods")?;
    if compression.is_empty() {
        return Err(PeekError::Malformed("no compression methods"));
    }

    let mut hello = ClientHello {
        len: 0,
        legacy_version,
        sni: None,
        alpn: Vec::new(),
        supported_versions: Vec::new(),
        cipher_suites,
        extensions: Vec::new(),
        signature_algorithms: Vec::new(),
        supported_groups: Vec::new(),
        ec_point_formats: Vec::new(),
        ech: false,
        ja4: String::new(),
    };
    // Pre-TLS-1.2 hellos may end here without an extensions block.
    if r.is_empty() {
        return Ok(hello);
    }
    let exts = r.vec16("extensions")?;
    if !r.is_empty() {
        return Err(PeekError::Malformed("bytes after the extensions"));
    }
    let mut er = Reader::new(exts);
    while !er.is_empty() {
        let ty = er.u16("extension type")?;
        let data = er.vec16("extension data")?;
        // RFC 8446 §4.2: no two extensions of the same type. A hello has at
        // most a few dozen, so the linear scan is cheaper than a set.
        if hello.extensions.contains(&ty) {
            return Err(PeekError::Malformed("duplicate extension"));
        }
        hello.extensions.push(ty);
        match ty {
            ext::SERVER_NAME => hello.sni = parse_sni(data)?,
            ext::ALPN => hello.alpn = parse_alpn(data)?,
            ext::SUPPORTED_VERSIONS => {
                let mut d = Reader::new(data);
                let list = d.vec8("supported_versions")?;
                if !d.is_empty() || list.is_empty() {
                    return Err(PeekError::Malformed("supported_versions length"));
                }
                hello.supported_versions = u16_list(list, "supported_versions has odd length")?;
            }
            ext::SIGNATURE_ALGORITHMS => {
                hello.signature_algorithms = u16_vec16(data, "signature_algorithms")?;
            }
            ext::SUPPORTED_GROUPS => {
                hello.supported_groups = u16_vec16(data, "supported_groups")?;
            }
            ext::EC_POINT_FORMATS => {
                // Only fingerprinted (JA3): a malformed list leaves it
                // empty rather than refusing a hello the decision accepted
                // before the list was read.
                let mut d = Reader::new(data);
                if let Ok(list) = d.vec8("ec_point_formats") {
                    if d.is_empty() {
                        hello.ec_point_formats = list.to_vec();
                    }
                }
            }
            ext::ECH => hello.ech = true,
            _ => {}
        }
    }
    Ok(hello)
}

/// Reads an extension body that is exactly one u16-length list of u16s.
fn u16_vec16(data: &[u8], what: &'static str) -> Result<Vec<u16>, PeekError> {
    let mut d = Reader::new(data);
    let list = d.vec16(what)?;
    if !d.is_empty() {
        return Err(PeekError::Malformed(what));
    }
    u16_list(list, what)
}

/// Parses server_name (RFC 6066 §3): the host_name entry, validated.
fn parse_sni(data: &[u8]) -> Result<Option<String>, PeekError> {
    let mut d = Reader::new(data);
    let list = d.vec16("server_name list")?;
    if !d.is_empty() {
        return Err(PeekError::Malformed("bytes after the server_name list"));
    }
    let mut l = Reader::new(list);
    let mut name = None;
    while !l.is_empty() {
        let ty = l.u8("server_name type")?;
        let v = l.vec16("server_name entry")?;
        if ty != 0 {
            continue;
        }
        if name.is_some() {
            return Err(PeekError::Malformed("two host_name entries"));
        }
        let s =
            std::str::from_utf8(v).map_err(|_| PeekError::Malformed("server_name is not ASCII"))?;
        let s = s.strip_suffix('.').unwrap_or(s);
        // IP literals are not allowed in SNI (RFC 6066 §3); DnsName
        // enforces label syntax and lengths.
        if s.parse::<std::net::IpAddr>().is_ok() || rustls::pki_types::DnsName::try_from(s).is_err()
        {
            return Err(PeekError::Malformed("server_name is not a valid DNS name"));
        }
        name = Some(s.to_ascii_lowercase());
    }
    Ok(name)
}

/// Parses the ALPN protocol list (RFC 7301 §3.1).
fn parse_alpn(data: &[u8]) -> Result<Vec<Vec<u8>>, PeekError> {
    let mut d = Reader::new(data);
    let list = d.vec16("alpn list")?;
    if !d.is_empty() {
        return Err(PeekError::Malformed("bytes after the ALPN list"));
    }
    let mut l = Reader::new(list);
    let mut out = Vec::new();
    while !l.is_empty() {
        let p = l.vec8("alpn protocol")?;
        if p.is_empty() {
            return Err(PeekError::Malformed("empty ALPN protocol name"));
        }
        out.push(p.to_vec());
    }
    Ok(out)
}

/// The lower-case hex digit of the low nibble of `n`.
fn hex_digit(n: u8) -> char {
    char::from_digit(u32::from(n & 0xf), 16).unwrap_or('0')
}

/// Appends a lower-case hex rendering of a u16 list joined by commas.
///
/// Hand-rolled rather than `format!` per value: this runs for every
/// peeked hello and a browser hello has some sixty values.
fn push_hex_list(s: &mut String, vals: impl Iterator<Item = u16>) {
    for (i, v) in vals.enumerate() {
        if i > 0 {
            s.push(',');
        }
        for shift in [12, 8, 4, 0] {
            s.push(hex_digit((v >> shift) as u8));
        }
    }
}

/// First 12 hex characters of SHA-256 of `s`, or twelve zeros for an empty list.
fn hash12(s: &str) -> String {
    if s.is_empty() {
        return "000000000000".into();
    }
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, s.as_bytes());
    let mut out = String::with_capacity(12);
    for b in d.as_ref().iter().take(6) {
        out.push(hex_digit(b >> 4));
        out.push(hex_digit(*b));
    }
    out
}

/// Computes the JA4 fingerprint (FoxIO JA4 TLS client spec, TCP `t`).
fn ja4(h: &ClientHello) -> String {
    let version = match h.highest_version() {
        TLS13 => "13",
        TLS12 => "12",
        TLS11 => "11",
        TLS10 => "10",
        0x0300 => "s3",
        0x0002 => "s2",
        0xfeff => "d1",
        0xfefd => "d2",
        0xfefc => "d3",
        _ => "00",
    };
    let sni = if h.sni.is_some() { 'd' } else { 'i' };
    let mut ciphers: Vec<u16> = h
        .cipher_suites
        .iter()
        .copied()
        .filter(|v| !is_grease(*v))
        .collect();
    let exts: Vec<u16> = h
        .extensions
        .iter()
        .copied()
        .filter(|v| !is_grease(*v))
        .collect();
    // The first protocol's first and last characters, or else the first
    // hex digit of the first byte and the last of the last.
    let alpn = match h.alpn.first().and_then(|p| Some((*p.first()?, *p.last()?))) {
        Some((a, b)) if a.is_ascii_alphanumeric() && b.is_ascii_alphanumeric() => {
            format!("{}{}", a as char, b as char)
        }
        Some((a, b)) => format!("{}{}", hex_digit(a >> 4), hex_digit(b)),
        None => "00".into(),
    };
    let a = format!(
        "t{version}{sni}{:02}{:02}{alpn}",
        ciphers.len().min(99),
        exts.len().min(99)
    );
    ciphers.sort_unstable();
    let mut b_in = String::with_capacity(ciphers.len() * 5);
    push_hex_list(&mut b_in, ciphers.into_iter());
    let b = hash12(&b_in);
    let mut sorted_exts: Vec<u16> = exts
        .into_iter()
        .filter(|e| *e != ext::SERVER_NAME && *e != ext::ALPN)
        .collect();
    sorted_exts.sort_unstable();
    let mut c_in =
        String::with_capacity((sorted_exts.len() + h.signature_algorithms.len()) * 5 + 1);
    push_hex_list(&mut c_in, sorted_exts.into_iter());
    let sigs: Vec<u16> = h
        .signature_algorithms
        .iter()
        .copied()
        .filter(|v| !is_grease(*v))
        .collect();
    if !sigs.is_empty() && !c_in.is_empty() {
        c_in.push('_');
        push_hex_list(&mut c_in, sigs.into_iter());
    }
    let c = hash12(&c_in);
    format!("{a}_{b}_{c}")
}

impl fmt::Display for Incomplete {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "incomplete ClientHello: at least {} more bytes needed",
            self.needed
        )
    }
}

impl std::error::Error for Incomplete {}

#[cfg(test)]
#[path = "client_hello_tests.rs"]
#[allow(clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used)]
pub(crate) mod tests;
