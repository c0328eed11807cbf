//! # veriflash
//!
//! Verify and flash signed firmware update packages for terminal devices (LTE modems, hotspots,
//! handsets). This facade re-exports the workspace's public API; the pieces live in their own
//! crates so an embedded updater can take only what it needs:
//!
//! * [`hash`](mod@hash) — streaming and chunked SHA-256 verification (`veriflash-hash`, `no_std`);
//! * [`format`](mod@format) — the bounded package parser and writer (`veriflash-format`, `no_std`);
//! * [`sig`](mod@sig) — signatures against pinned trust anchors (`veriflash-sig`, `no_std`);
//! * [`core`](mod@crate::core) — the verify pipeline and the error taxonomy (`veriflash-core`);
//! * [`plugin`](mod@plugin) — the traits a device plugin implements, and the file-backed
//!   reference device (`veriflash-plugin`).
//!
//! Feature `http` (off by default) turns on `veriflash-core/http`: HTTP(S) downloads with
//! resume (`core::http::HttpSource` for [`core::ota::RemotePackage`]).
//!
//! The `examples/` directory of the repository has runnable programs: `verify` (a package in 30
//! lines), `own_plugin` (a plugin for your own device), `flash_progress` (an install with a
//! progress display) and `ota_fetch` (a resumable download; `--features http`).
//!
//! ```
//! use veriflash::core::format::SignatureBlock;
//! use veriflash::core::{ImageData, ImageSource, PackageSpec};
//! use veriflash::sig::{PinnedKeys, SigningKey, Verifier};
//! use veriflash::{ErrorKind, PackageReader, UnsignedPackage};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Vendor side (normally `veriflash keygen` and `veriflash pack`): a key, a signed package.
//! let key = SigningKey::generate_p256()?;
//! let unsigned = UnsignedPackage::prepare(PackageSpec {
//!     product: "acme-hotspot-x1".into(),
//!     chipset: "mdm9607".into(),
//!     hardware_revisions: vec![],
//!     software_version: "2.4.0".into(),
//!     security_version: 7,
//!     images: vec![ImageSource::new("boot", "boot", ImageData::Bytes(vec![7; 10_000]))],
//! })?;
//! let mut package = Vec::new();
//! unsigned.write_to(&SignatureBlock { entries: vec![unsigned.sign(&key)?] }, &mut package)?;
//!
//! // Device side: the pinned public key decides; then every chunk is checked.
//! let mut trust = PinnedKeys::new();
//! trust.add(key.verifying_key());
//! let report = PackageReader::new(package.as_slice())?
//!     .verify(&Verifier::new(&trust))?
//!     .verify_payload()?;
//! assert_eq!(report.software_version, "2.4.0");
//!
//! // Trusting another key only, the same package is refused before its payload is read.
//! let mut other = PinnedKeys::new();
//! other.add(SigningKey::generate_p256()?.verifying_key());
//! let refused = PackageReader::new(package.as_slice())?.verify(&Verifier::new(&other));
//! assert_eq!(refused.err().map(|e| e.kind()), Some(ErrorKind::UnknownSigner));
//! # Ok(())
//! # }
//! ```
//!
//! See `docs/FORMAT.md` in the repository for the package format. The README follows.
#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

pub use veriflash_core as core;
pub use veriflash_core::plugin;
pub use veriflash_core::{
    Category, Error, ErrorKind, PackageReader, UnsignedPackage, VerifiedManifest, VerifyReport,
    verify_file,
};
pub use veriflash_format as format;
pub use veriflash_hash as hash;
pub use veriflash_sig as sig;
