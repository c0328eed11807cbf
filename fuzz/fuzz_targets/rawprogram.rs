//! Fuzz target `rawprogram`: see `checks_mdm9x07::rawprogram` (fuzz/checks_mdm9x07.rs) for what
//! it asserts.
#![no_main]

#[path = "../checks_mdm9x07.rs"]
#[allow(dead_code)]
mod checks_mdm9x07;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks_mdm9x07::rawprogram(data));
