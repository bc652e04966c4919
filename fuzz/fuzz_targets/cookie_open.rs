//! Arbitrary `Cookie` header bytes through parsing, joining and opening: must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    sealgate::fuzzing::cookie_header(data);
});
