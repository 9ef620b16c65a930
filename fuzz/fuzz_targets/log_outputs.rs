//! Fuzzes the parsers of the traffic-log outputs: Redis reply lines (what a
//! server, or anything listening on its port, sends back), syslog target
//! addresses, and a reply stream consumed reply by reply.
#![no_main]
#![forbid(unsafe_code)]

use libfuzzer_sys::fuzz_target;
use tlsinspect::log::output::{parse_reply, SyslogTarget};
use tlsinspect::log::record::parse_timestamp;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Ok(Some((_, used))) = parse_reply(rest) {
        assert!(used > 0 && used <= rest.len());
        rest = &rest[used..];
    }
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(t) = SyslogTarget::parse(s) {
            assert_eq!(SyslogTarget::parse(&t.to_string()), Ok(t));
        }
        let _ = parse_timestamp(s);
    }
});
