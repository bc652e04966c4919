//! Arbitrary bytes through sealgate::fuzzing::config: must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    sealgate::fuzzing::config(data);
});
