//! # veriflash
//!
//! Verify and flash signed firmware update packages for terminal devices (LTE modems, hotspots,
//! handsets). This facade re-exports the workspace's public API; the pieces live in their own
//! crates so an embedded updater can take only what it needs:
//!
//! * [`hash`](mod@hash) — streaming and chunked SHA-256 verification (`veriflash-hash`, `no_std`);
//! * [`format`](mod@format) — the bounded package parser and writer (`veriflash-format`, `no_std`);
//! * [`sig`](mod@sig) — signatures against pinned trust anchors (`veriflash-sig`, `no_std`);
//! * [`core`](mod@crate::core) — the verify pipeline and the error taxonomy (`veriflash-core`).
//!
//! See `docs/FORMAT.md` in the repository for the package format. The README follows.
#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

pub use veriflash_core as core;
pub use veriflash_core::{
    Category, Error, ErrorKind, PackageReader, UnsignedPackage, VerifiedManifest, VerifyReport,
    verify_file,
};
pub use veriflash_format as format;
pub use veriflash_hash as hash;
pub use veriflash_sig as sig;
