//! Arbitrary bytes through sealgate::fuzzing::callback_query: must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    sealgate::fuzzing::callback_query(data);
});
