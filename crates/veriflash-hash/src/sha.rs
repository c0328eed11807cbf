//! SHA-256 over slices and in pieces, and which implementation the CPU gets.

use core::fmt;

use sha2::Digest as _;

/// Length in bytes of a SHA-256 digest.
pub const DIGEST_LEN: usize = 32;

/// A SHA-256 digest: a plain array, so it can be compared, copied and stored in a manifest
/// without conversions.
pub type Digest = [u8; DIGEST_LEN];

/// SHA-256 of `data` in one call.
///
/// For data that arrives in pieces, use [`Sha256`].
#[must_use]
pub fn sha256(data: &[u8]) -> Digest {
    sha2::Sha256::digest(data).into()
}

/// Streaming SHA-256: feed the input in pieces of any size, then [`finalize`](Self::finalize).
///
/// A thin wrapper so that the rest of veriflash does not depend on the `digest` trait machinery
/// (or its version); the hardware backend (SHA-NI, ARMv8 SHA2) is picked at run time by `sha2`.
#[derive(Clone, Default)]
pub struct Sha256 {
    inner: sha2::Sha256,
}

impl Sha256 {
    /// A hasher that has seen no input yet.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Hashes `data` as the continuation of everything fed so far. The split points do not change
    /// the digest.
    pub fn update(&mut self, data: &[u8]) {
        self.inner.update(data);
    }

    /// The digest of all input fed so far.
    #[must_use]
    pub fn finalize(self) -> Digest {
        self.inner.finalize().into()
    }
}

impl fmt::Debug for Sha256 {
    /// Does not show the internal state: it is a function of the (possibly secret) input.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sha256").finish_non_exhaustive()
    }
}

/// Which SHA-256 implementation `sha2` runs on this CPU, for `veriflash --version` and bug
/// reports: `"x86 SHA-NI"`, `"ARMv8 SHA2"`, `"RISC-V Zknh"`, or `"software"` (possibly with a
/// qualifier).
///
/// With `std` the answer comes from the same run-time CPU feature checks `sha2` makes (x86: `sha`
/// and `sse4.1`; aarch64: `sha2`). Without `std` only compile-time target features are visible;
/// where `sha2` would still choose at run time the answer says so. Backends forced with
/// `--cfg sha2_backend=...` / `--cfg sha2_256_backend=...` are reported as forced.
#[must_use]
pub fn backend() -> &'static str {
    if cfg!(any(sha2_backend = "soft", sha2_256_backend = "soft")) {
        "software (forced)"
    } else if cfg!(any(
        sha2_backend = "riscv-zknh",
        sha2_256_backend = "riscv-zknh"
    )) {
        "RISC-V Zknh"
    } else if cfg!(sha2_256_backend = "x86-sha") {
        "x86 SHA-NI"
    } else if cfg!(sha2_256_backend = "aarch64-sha2") {
        "ARMv8 SHA2"
    } else if cfg!(target_arch = "loongarch64") {
        "software (LoongArch64 assembly)"
    } else if cfg!(all(target_arch = "wasm32", target_feature = "simd128")) {
        "software (WebAssembly SIMD128)"
    } else {
        detected()
    }
}

#[cfg(all(feature = "std", any(target_arch = "x86", target_arch = "x86_64")))]
fn detected() -> &'static str {
    if std::arch::is_x86_feature_detected!("sha") && std::arch::is_x86_feature_detected!("sse4.1") {
        "x86 SHA-NI"
    } else {
        "software"
    }
}

#[cfg(all(feature = "std", target_arch = "aarch64"))]
fn detected() -> &'static str {
    if std::arch::is_aarch64_feature_detected!("sha2") {
        "ARMv8 SHA2"
    } else {
        "software"
    }
}

#[cfg(all(not(feature = "std"), any(target_arch = "x86", target_arch = "x86_64")))]
fn detected() -> &'static str {
    if cfg!(all(target_feature = "sha", target_feature = "sse4.1")) {
        "x86 SHA-NI"
    } else {
        "x86 SHA-NI or software (chosen at run time)"
    }
}

#[cfg(all(not(feature = "std"), target_arch = "aarch64"))]
fn detected() -> &'static str {
    if cfg!(target_feature = "sha2") {
        "ARMv8 SHA2"
    } else {
        "ARMv8 SHA2 or software (chosen at run time)"
    }
}

#[cfg(not(any(target_arch = "x86", target_arch = "x86_64", target_arch = "aarch64")))]
fn detected() -> &'static str {
    "software"
}
