#![doc = include_str!("../README.md")]
#![cfg_attr(not(feature = "std"), no_std)]
#![forbid(unsafe_code)]
// zerocopy's strictest pair: no panicking index/slice and no unchecked arithmetic anywhere in
// the parser or writer. Tests relax them locally.
#![deny(clippy::indexing_slicing, clippy::arithmetic_side_effects)]

extern crate alloc;

mod der_io;
mod error;
mod header;
mod manifest;
mod package;
#[cfg(feature = "std")]
mod read;
mod rotation;
mod signature;
#[cfg(test)]
mod test_util;

pub mod limits;

pub use der::asn1::ObjectIdentifier;

pub use error::Error;
pub use header::{
    FORMAT_VERSION, FORMAT_VERSION_COMPRESSED, FORMAT_VERSION_DELTA,
    FORMAT_VERSION_VARIABLE_CHUNKS, HEADER_LEN, Header, MAGIC,
};
pub use manifest::{
    CHUNK_RECORD_LEN, ChunkEncoding, DIGEST_LEN, DeltaSource, Extension, ImageSpec,
    MANIFEST_VERSION, MANIFEST_VERSION_COMPRESSED, MANIFEST_VERSION_DELTA,
    MANIFEST_VERSION_VARIABLE_CHUNKS, Manifest, SOURCE_REF_LEN, SourceRef, StoredChunk,
    chunk_count,
};
pub use package::{PackageRef, encode_prefix, parse_signed_message, signed_message};
#[cfg(feature = "std")]
pub use read::{PackagePrefix, ReadError, read_prefix};
pub use rotation::{RotationAnchor, TrustRotation};
pub use signature::{BlockLen, SignatureBlock, SignatureEntry, signature_block_len};

/// Section names carried by [`Error`] values, so callers can compare against them.
pub mod section {
    /// The 32-byte fixed header (FORMAT.md §2).
    pub const HEADER: &str = "header";
    /// The DER manifest (FORMAT.md §3).
    pub const MANIFEST: &str = "manifest";
    /// The DER signature block (FORMAT.md §4).
    pub const SIGNATURE_BLOCK: &str = "signature block";
    /// The payload (FORMAT.md §5).
    pub const PAYLOAD: &str = "payload";
    /// The package as a whole; offsets in this section are from the first byte of the package.
    pub const PACKAGE: &str = "package";
}
