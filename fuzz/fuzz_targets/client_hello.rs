//! Fuzzes the ClientHello peek parser: any bytes, whole and split in two.
#![no_main]
#![forbid(unsafe_code)]

use libfuzzer_sys::fuzz_target;
use tlsinspect_pipeline::tls::client_hello;

fuzz_target!(|data: &[u8]| {
    let whole = client_hello::parse(data);
    if let Ok(Some(h)) = &whole {
        assert!(h.len <= data.len());
        // The answer for a complete hello does not depend on trailing bytes.
        assert_eq!(
            client_hello::parse(&data[..h.len]).ok().flatten().as_ref(),
            Some(h)
        );
    }
    if let Err(inc) = whole {
        assert!(inc.needed >= 1);
    }
});
