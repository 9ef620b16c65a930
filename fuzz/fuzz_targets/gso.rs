//! Fuzzes the super-frame code on hostile packets: merging a segment into a
//! frame (`gso::append`) and cutting a frame back into segments
//! (`gso::segment`) under any offload header. Nothing may panic, and a merge
//! only ever grows the frame by the segment's payload.
#![no_main]
#![forbid(unsafe_code)]

use libfuzzer_sys::fuzz_target;
use tlsinspect_pipeline::gso;
use tlsinspect_pipeline::io::Offload;

fuzz_target!(|data: &[u8]| {
    if data.len() < Offload::LEN + 2 {
        return;
    }
    let mut hdr = [0u8; Offload::LEN];
    hdr.copy_from_slice(&data[..Offload::LEN]);
    let mut offload = Offload::from_bytes(&hdr);
    let l2 = usize::from(data[Offload::LEN] % 20);
    let rest = &data[Offload::LEN + 1..];
    let split = usize::from(data[Offload::LEN + 1]) % rest.len().max(1);
    let (frame, seg) = rest.split_at(split);
    let mut buf = frame.to_vec();
    let before = buf.len();
    if gso::append(&mut buf, 0, l2, &mut offload, seg) {
        assert!(buf.len() > before && buf.len() < before + seg.len());
    }
    let cut = gso::segment(&buf, &offload, l2);
    assert!(cut.len() <= buf.len().max(1));
});
