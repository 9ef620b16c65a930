//! Feeds arbitrary text to the configuration parser and validator: any input
//! must yield a `Config` or a list of errors, never a panic.
#![no_main]
#![forbid(unsafe_code)]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match tlsinspect::config::parse(&text, Path::new("fuzz/config.toml")) {
        Ok(config) => {
            let _ = tlsinspect::cli::validate::render(&config, None);
        }
        Err(errors) => {
            assert!(!errors.is_empty());
            let _ = errors.to_string();
        }
    }
});
