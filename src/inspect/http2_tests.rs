//! HTTP/2 tests: requests HPACK-encoded by the test's own encoder, fed at
//! every split point, with the output re-parsed as a peer would.

use loona_hpack::{Decoder, Encoder};
use tlsinspect_pipeline::api::{ConnAction, Direction};

use super::{frame_header, PREFACE};
use crate::inspect::flow::tests::{check_all_splits, check_splits_with, drive, engines, whole};
use crate::inspect::Mode;

type Fields = Vec<(Vec<u8>, Vec<u8>)>;

fn fields(list: &[(&str, &str)]) -> Fields {
    list.iter()
        .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect()
}

fn headers_frame(
    enc: &mut Encoder<'static>,
    sid: u32,
    f: &Fields,
    end_stream: bool,
    out: &mut Vec<u8>,
) {
    let block = enc.encode(f.iter().map(|(n, v)| (n.as_slice(), v.as_slice())));
    frame_header(
        out,
        block.len(),
        1,
        0x4 | if end_stream { 1 } else { 0 },
        sid,
    );
    out.extend_from_slice(&block);
}

fn data_frame(sid: u32, data: &[u8], end_stream: bool, out: &mut Vec<u8>) {
    frame_header(out, data.len(), 0, if end_stream { 1 } else { 0 }, sid);
    out.extend_from_slice(data);
}

fn settings(out: &mut Vec<u8>) {
    frame_header(out, 0, 4, 0, 0);
}

/// A decoded frame: (type, flags, stream, decoded headers or data).
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Headers(u32, u8, Fields),
    Data(u32, u8, Vec<u8>),
    Other(u8, u32),
}

/// Parses a byte stream as a peer would, decoding every header block in order.
fn parse(mut b: &[u8], skip_preface: bool) -> Vec<Seen> {
    if skip_preface {
        assert!(b.starts_with(PREFACE));
        b = &b[PREFACE.len()..];
    }
    let mut dec = Decoder::new();
    let mut out = Vec::new();
    while !b.is_empty() {
        assert!(b.len() >= 9, "truncated frame header");
        let len = (usize::from(b[0]) << 16) | (usize::from(b[1]) << 8) | usize::from(b[2]);
        let (ty, flags) = (b[3], b[4]);
        let sid = u32::from_be_bytes([b[5], b[6], b[7], b[8]]);
        let p = &b[9..9 + len];
        match ty {
            1 => {
                let h = dec.decode(p).expect("peer decodes every header block");
                out.push(Seen::Headers(sid, flags, h));
            }
            0 => out.push(Seen::Data(sid, flags, p.to_vec())),
            t => out.push(Seen::Other(t, sid)),
        }
        b = &b[9 + len..];
    }
    out
}

fn get(path: &str, host: &str) -> Fields {
    fields(&[
        (":method", "GET"),
        (":scheme", "https"),
        (":authority", host),
        (":path", path),
        ("user-agent", "curl/8"),
    ])
}

#[test]
fn streams_are_decoded_denied_and_reencoded_in_sync() {
    let e = engines(Mode::Prevent, "");
    let mut enc = Encoder::new();
    let mut client = PREFACE.to_vec();
    settings(&mut client);
    let s1 = get("/index.html", "www.example.com");
    let s3 = fields(&[
        (":method", "POST"),
        (":scheme", "https"),
        (":authority", "www.example.com"),
        (":path", "/upload/file.bin"),
        ("content-length", "6"),
    ]);
    let s5 = get("/other", "www.example.com");
    headers_frame(&mut enc, 1, &s1, true, &mut client);
    headers_frame(&mut enc, 3, &s3, false, &mut client);
    data_frame(3, b"secret", true, &mut client);
    headers_frame(&mut enc, 5, &s5, true, &mut client);

    let mut senc = Encoder::new();
    let mut server = Vec::new();
    settings(&mut server);
    headers_frame(
        &mut senc,
        1,
        &fields(&[(":status", "200"), ("content-type", "text/html")]),
        false,
        &mut server,
    );
    data_frame(1, b"<html>hi</html>", true, &mut server);
    headers_frame(
        &mut senc,
        5,
        &fields(&[(":status", "404"), ("content-type", "text/html")]),
        true,
        &mut server,
    );

    let o = check_all_splits(
        &e,
        Some(b"h2"),
        &[(Direction::ToServer, client), (Direction::ToClient, server)],
    );
    let up = parse(&o.to_server, true);
    assert_eq!(
        up,
        vec![
            Seen::Other(4, 0),
            Seen::Headers(1, 0x5, s1),
            Seen::Headers(5, 0x5, s5),
        ],
        "the denied stream 3 and its body never reach the server"
    );
    let down = parse(&o.to_client, false);
    assert!(matches!(&down[0], Seen::Other(4, 0)));
    let status = |sid: u32| {
        down.iter().find_map(|s| match s {
            Seen::Headers(id, _, h) if *id == sid => h
                .iter()
                .find(|(n, _)| n == b":status")
                .map(|(_, v)| String::from_utf8(v.clone()).unwrap()),
            _ => None,
        })
    };
    assert_eq!(status(1).as_deref(), Some("200"));
    assert_eq!(status(3).as_deref(), Some("403"));
    assert_eq!(status(5).as_deref(), Some("404"));
    assert_eq!(o.action, ConnAction::Continue);
    assert_eq!(o.alerts.len(), 1);
    assert_eq!(o.alerts[0].engine, "webfilter");
    let statuses: Vec<Option<u16>> = o.http.iter().map(|t| t.3).collect();
    assert_eq!(statuses, [Some(200), Some(403), Some(404)]);
    assert_eq!(o.http[1].2, "/upload/file.bin");
}

#[test]
fn ips_drop_on_h2_body_resets_before_forwarding() {
    let e = engines(Mode::Prevent, "");
    let mut enc = Encoder::new();
    let mut client = PREFACE.to_vec();
    settings(&mut client);
    let h = fields(&[
        (":method", "POST"),
        (":scheme", "https"),
        (":authority", "paste.test"),
        (":path", "/api"),
    ]);
    headers_frame(&mut enc, 1, &h, false, &mut client);
    data_frame(1, b"key=AKIAIOSFODNN7EXAMPLE&x=1", false, &mut client);
    data_frame(1, b"", true, &mut client);
    check_splits_with(&e, Some(b"h2"), &[(Direction::ToServer, client)], &|o| {
        // Depending on the split, the preface and SETTINGS may be out before
        // the reset; the request never is.
        assert!(PREFACE.starts_with(&o.to_server[..o.to_server.len().min(PREFACE.len())]));
        if o.to_server.len() > PREFACE.len() {
            assert_eq!(parse(&o.to_server, true), vec![Seen::Other(4, 0)]);
        }
        assert_eq!(o.action, ConnAction::Reset);
        assert!(
            o.alerts
                .iter()
                .any(|a| a.sid == 1000054 && a.action == "drop"),
            "{:?}",
            o.alerts
        );
    });
}

#[test]
fn many_concurrent_streams_and_body_release() {
    let e = engines(Mode::Prevent, "");
    let mut enc = Encoder::new();
    let mut client = PREFACE.to_vec();
    settings(&mut client);
    let mut expect = vec![Seen::Other(4, 0)];
    for i in 0..50u32 {
        let sid = 1 + 2 * i;
        let f = get(&format!("/page/{i}"), "site.test");
        headers_frame(&mut enc, sid, &f, true, &mut client);
        expect.push(Seen::Headers(sid, 0x5, f));
    }
    // An upload whose body continues after another stream opens: decided
    // early on what it sent, then streamed.
    let up = fields(&[
        (":method", "POST"),
        (":scheme", "https"),
        (":authority", "site.test"),
        (":path", "/form"),
    ]);
    headers_frame(&mut enc, 101, &up, false, &mut client);
    data_frame(101, b"part1", false, &mut client);
    let g = get("/after", "site.test");
    headers_frame(&mut enc, 103, &g, true, &mut client);
    data_frame(101, b"part2", true, &mut client);
    let o = drive(&e, Some(b"h2"), &[(Direction::ToServer, client)], &whole);
    expect.push(Seen::Headers(101, 0x4, up));
    expect.push(Seen::Data(101, 0, b"part1".to_vec()));
    expect.push(Seen::Headers(103, 0x5, g));
    expect.push(Seen::Data(101, 1, b"part2".to_vec()));
    assert_eq!(parse(&o.to_server, true), expect);
    assert_eq!(o.http.len(), 52);
}

#[test]
fn garbage_and_truncation_never_panic() {
    let e = engines(Mode::Prevent, "");
    let mut enc = Encoder::new();
    let mut client = PREFACE.to_vec();
    headers_frame(&mut enc, 1, &get("/", "a.test"), true, &mut client);
    for i in 0..client.len() {
        let mut bad = client.clone();
        bad[i] ^= 0xff;
        let _ = drive(
            &e,
            Some(b"h2"),
            &[
                (Direction::ToServer, bad.clone()),
                (Direction::ToClient, bad),
            ],
            &whole,
        );
    }
    let mut hpack_bad = PREFACE.to_vec();
    frame_header(&mut hpack_bad, 2, 1, 0x5, 1);
    hpack_bad.extend_from_slice(&[0xff, 0xff]);
    let o = drive(&e, Some(b"h2"), &[(Direction::ToServer, hpack_bad)], &whole);
    assert_eq!(o.action, ConnAction::Reset);
    assert_eq!(o.alerts[0].engine, "http");
}

#[test]
fn late_frames_of_denied_streams_stay_away_from_the_server() {
    let e = engines(Mode::Prevent, "");
    let mut enc = Encoder::new();
    let mut client = PREFACE.to_vec();
    settings(&mut client);
    let denied = fields(&[
        (":method", "PUT"),
        (":scheme", "https"),
        (":authority", "a.example.com"),
        (":path", "/upload/x"),
    ]);
    headers_frame(&mut enc, 1, &denied, false, &mut client);
    data_frame(1, b"body", true, &mut client);
    // Trailers-like HEADERS and a WINDOW_UPDATE for the closed, denied stream.
    let trailers = fields(&[("x-checksum", "abc")]);
    headers_frame(&mut enc, 1, &trailers, true, &mut client);
    frame_header(&mut client, 4, 8, 0, 1);
    client.extend_from_slice(&100u32.to_be_bytes());
    let g = get("/ok", "a.example.com");
    headers_frame(&mut enc, 3, &g, true, &mut client);
    let o = check_all_splits(&e, Some(b"h2"), &[(Direction::ToServer, client)]);
    assert_eq!(
        parse(&o.to_server, true),
        vec![Seen::Other(4, 0), Seen::Headers(3, 0x5, g)]
    );
}

#[test]
fn held_upload_is_released_before_the_servers_window_runs_out() {
    let e = engines(Mode::Prevent, "");
    let mut server = Vec::new();
    frame_header(&mut server, 6, 4, 0, 0);
    server.extend_from_slice(&[0, 4, 0, 0, 0x03, 0xe8]); // INITIAL_WINDOW_SIZE = 1000
    let mut enc = Encoder::new();
    let mut client = PREFACE.to_vec();
    settings(&mut client);
    let h = fields(&[
        (":method", "POST"),
        (":scheme", "https"),
        (":authority", "site.test"),
        (":path", "/upload-ok"),
    ]);
    headers_frame(&mut enc, 1, &h, false, &mut client);
    data_frame(1, &[b'a'; 1000], false, &mut client);
    // The client is now blocked on flow control: the request must be out.
    let o = drive(
        &e,
        Some(b"h2"),
        &[(Direction::ToClient, server), (Direction::ToServer, client)],
        &whole,
    );
    assert_eq!(
        parse(&o.to_server, true),
        vec![
            Seen::Other(4, 0),
            Seen::Headers(1, 0x4, h),
            Seen::Data(1, 0, vec![b'a'; 1000])
        ]
    );
    assert_eq!(o.alerts.len(), 1, "{:?}", o.alerts);
    assert_eq!(o.alerts[0].engine, "http");
}

#[test]
fn streams_beyond_the_cap_are_refused_not_forwarded() {
    use crate::inspect::{AppControl, AppTable, EngineLimits, Engines, Ruleset, WebFilter};
    use std::sync::Arc;
    let e = Engines::with_limits(
        WebFilter::default(),
        AppTable::default(),
        AppControl::default(),
        Arc::new(Ruleset::default()),
        Mode::Prevent,
        EngineLimits {
            max_h2_streams: 2,
            ..EngineLimits::default()
        },
    );
    let mut enc = Encoder::new();
    let mut client = PREFACE.to_vec();
    settings(&mut client);
    let (a, b, c) = (
        get("/1", "s.test"),
        get("/2", "s.test"),
        get("/3", "s.test"),
    );
    headers_frame(&mut enc, 1, &a, true, &mut client);
    headers_frame(&mut enc, 3, &b, true, &mut client);
    headers_frame(&mut enc, 5, &c, true, &mut client);
    let mut server = Vec::new();
    settings(&mut server);
    let o = check_all_splits(
        &e,
        Some(b"h2"),
        &[(Direction::ToServer, client), (Direction::ToClient, server)],
    );
    assert_eq!(
        parse(&o.to_server, true),
        vec![
            Seen::Other(4, 0),
            Seen::Headers(1, 0x5, a),
            Seen::Headers(3, 0x5, b)
        ]
    );
    assert_eq!(
        parse(&o.to_client, false),
        vec![Seen::Other(4, 0), Seen::Other(3, 5)]
    );
    assert_eq!(o.alerts.len(), 1);
}

/// (type, stream, payload) of every frame in a byte stream.
fn raw_frames(mut b: &[u8]) -> Vec<(u8, u32, Vec<u8>)> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let len = (usize::from(b[0]) << 16) | (usize::from(b[1]) << 8) | usize::from(b[2]);
        let sid = u32::from_be_bytes([b[5], b[6], b[7], b[8]]);
        out.push((b[3], sid, b[9..9 + len].to_vec()));
        b = &b[9 + len..];
    }
    out
}

/// Sum of the WINDOW_UPDATE increments on stream 0, and the RST_STREAM
/// error codes per stream, that the client was sent.
fn refunds_and_resets(to_client: &[u8]) -> (u64, Vec<(u32, u32)>) {
    let mut refund = 0;
    let mut resets = Vec::new();
    for (ty, sid, p) in raw_frames(to_client) {
        let v = || u32::from_be_bytes([p[0], p[1], p[2], p[3]]);
        match ty {
            8 if sid == 0 => refund += u64::from(v()),
            3 => resets.push((sid, v())),
            _ => {}
        }
    }
    (refund, resets)
}

fn upload(path: &str) -> Fields {
    fields(&[
        (":method", "POST"),
        (":scheme", "https"),
        (":authority", "www.example.com"),
        (":path", path),
    ])
}

#[test]
fn denied_small_upload_finishes_and_its_window_is_refunded() {
    // curl 7.88 fails a transfer whose stream is reset while it still
    // uploads, even after a complete 403: a small body is let finish.
    let e = engines(Mode::Prevent, "");
    let mut enc = Encoder::new();
    let mut client = PREFACE.to_vec();
    settings(&mut client);
    headers_frame(&mut enc, 1, &upload("/upload/a"), false, &mut client);
    data_frame(1, b"secret", false, &mut client);
    data_frame(1, b"-part2", true, &mut client);
    let s3 = get("/index.html", "www.example.com");
    headers_frame(&mut enc, 3, &s3, true, &mut client);
    let mut server = Vec::new();
    settings(&mut server);
    let o = check_all_splits(
        &e,
        Some(b"h2"),
        &[(Direction::ToServer, client), (Direction::ToClient, server)],
    );
    assert_eq!(
        parse(&o.to_server, true),
        vec![Seen::Other(4, 0), Seen::Headers(3, 0x5, s3)]
    );
    assert_eq!(statuses_of(&o.to_client), vec![(1, "403".to_string())]);
    assert_eq!(refunds_and_resets(&o.to_client), (12, vec![]));
}

/// (stream, :status) of every response HEADERS frame toward the client.
fn statuses_of(to_client: &[u8]) -> Vec<(u32, String)> {
    parse(to_client, false)
        .into_iter()
        .filter_map(|s| match s {
            Seen::Headers(sid, _, h) => h
                .iter()
                .find(|(n, _)| n == b":status")
                .map(|(_, v)| (sid, String::from_utf8_lossy(v).into_owned())),
            _ => None,
        })
        .collect()
}

#[test]
fn denied_upload_expecting_100_continue_is_answered_at_once() {
    let e = engines(Mode::Prevent, "");
    let mut enc = Encoder::new();
    let mut client = PREFACE.to_vec();
    settings(&mut client);
    let mut h = upload("/upload/a");
    h.push((b"expect".to_vec(), b"100-continue".to_vec()));
    headers_frame(&mut enc, 1, &h, false, &mut client);
    let mut server = Vec::new();
    settings(&mut server);
    let o = check_all_splits(
        &e,
        Some(b"h2"),
        &[(Direction::ToServer, client), (Direction::ToClient, server)],
    );
    assert_eq!(parse(&o.to_server, true), vec![Seen::Other(4, 0)]);
    assert_eq!(statuses_of(&o.to_client), vec![(1, "403".to_string())]);
    assert_eq!(refunds_and_resets(&o.to_client), (0, vec![(1, 0)]));
}

#[test]
fn denied_large_upload_is_reset_and_every_discarded_byte_refunded() {
    let e = engines(Mode::Prevent, "");
    let mut enc = Encoder::new();
    let mut client = PREFACE.to_vec();
    settings(&mut client);
    headers_frame(&mut enc, 1, &upload("/upload/big"), false, &mut client);
    // 20 KiB in flight before the client sees the reset.
    for i in 0..20 {
        data_frame(1, &[b'x'; 1024], i == 19, &mut client);
    }
    let mut server = Vec::new();
    settings(&mut server);
    let script = [(Direction::ToServer, client), (Direction::ToClient, server)];
    let check = |o: &super::super::flow::tests::Outcome| {
        assert_eq!(parse(&o.to_server, true), vec![Seen::Other(4, 0)]);
        assert_eq!(
            refunds_and_resets(&o.to_client),
            (20 * 1024, vec![(1, 0)]),
            "one RST_STREAM NO_ERROR, the whole body refunded"
        );
        assert_eq!(statuses_of(&o.to_client), vec![(1, "403".to_string())]);
    };
    check(&drive(&e, Some(b"h2"), &script, &whole));
    let bytewise = |_: usize, b: &[u8]| b.iter().map(|x| vec![*x]).collect();
    check(&drive(&e, Some(b"h2"), &script, &bytewise));
}
