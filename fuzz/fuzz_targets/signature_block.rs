//! Fuzz target `signature_block`: see `checks::signature_block` (fuzz/checks.rs) for what it asserts.
#![no_main]

#[path = "../checks.rs"]
#[allow(dead_code)]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::signature_block(data));
