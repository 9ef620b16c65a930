//! Fuzzes the IPS rule loader with arbitrary rule text, then runs whatever
//! loaded against the input itself as a raw buffer.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tlsinspect::inspect::ips::{Buffer, Buffers, Phase, Ruleset, Scratch, Vars};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (set, report) = Ruleset::from_text(text, "fuzz.rules", &Vars::default());
    let _ = report.problems();
    let mut bufs = Buffers::default();
    for b in Buffer::ALL {
        bufs.set(b, data);
    }
    let mut hits = Vec::new();
    let mut scratch = Scratch::default();
    for phase in [Phase::Request, Phase::Response, Phase::Raw] {
        set.eval(phase, &bufs, &|_| true, &mut scratch, &mut hits);
    }
});
