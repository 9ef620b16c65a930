//! Fuzzes CA file parsing: any bytes as a private-key file and as a certificate file.
#![no_main]
#![forbid(unsafe_code)]

use libfuzzer_sys::fuzz_target;
use tlsinspect::pki::fuzzing;

fuzz_target!(|data: &[u8]| {
    let _ = fuzzing::key_file(data);
    let n = fuzzing::cert_file(data);
    assert!(n <= data.len());
});
