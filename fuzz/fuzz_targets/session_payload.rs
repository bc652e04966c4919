//! Arbitrary bytes as a session payload (binary format 2, JSON format 1) and a profile:
//! must never panic, and a binary payload that decodes must re-encode to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    sealgate::fuzzing::session_payload(data);
});
