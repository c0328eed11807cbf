//! Library and ABI versions.

use std::ffi::c_char;

/// The ABI version this header describes. It changes whenever a function's signature, a
/// struct's layout or a constant's meaning changes incompatibly; compare it with
/// `veriflash_abi_version()` at start-up to catch a header/library mismatch.
///
/// 2: `veriflash_event` grew `attempt`, `max_attempts` and `timeout_ms` (the reconnect
/// events), and a trust store judges certificate dates by the system clock unless told
/// otherwise (`veriflash_trust_set_time`), as the `veriflash` command does.
pub const VERIFLASH_ABI_VERSION: u32 = 2;

static VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), "\0");

/// The library's version (`"0.1.0"`), a static NUL-terminated string: never free it.
#[unsafe(no_mangle)]
pub extern "C" fn veriflash_version() -> *const c_char {
    VERSION.as_ptr().cast::<c_char>()
}

/// The ABI version the library implements: equal to `VERIFLASH_ABI_VERSION` for the header it
/// was built with.
#[unsafe(no_mangle)]
pub extern "C" fn veriflash_abi_version() -> u32 {
    VERIFLASH_ABI_VERSION
}
