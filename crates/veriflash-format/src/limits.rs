//! Hard limits of format versions 1 to 4 (FORMAT.md §6).
//!
//! Every length or count read from a package is checked against one of these before anything is
//! allocated for it, and the writer refuses to produce anything beyond them, so a package this
//! crate writes is always one it reads.

/// Largest manifest, in bytes (16 MiB).
///
/// The manifest is read into memory whole before its signatures are checked. The bulk of it is
/// chunk digests: 16 MiB holds a little under 512 Ki of them, e.g. a 512 GiB image at 1 MiB
/// chunks, far beyond any modem.
pub const MAX_MANIFEST_LEN: u32 = 16 * 1024 * 1024;

/// Largest signature block, in bytes, counting its whole DER TLV (tag and length included)
/// (256 KiB).
///
/// Enough for [`MAX_SIGNATURES`] signatures, each with a chain of a few RSA-4096 certificates.
pub const MAX_SIGNATURE_BLOCK_LEN: usize = 256 * 1024;

/// Largest payload, in bytes (2^40 = 1 TiB), and so the largest image.
///
/// Far beyond any modem; it keeps every offset computation far from `u64` overflow.
pub const MAX_PAYLOAD_LEN: u64 = 1 << 40;

/// Most images in one manifest (64). Bounds per-image work and memory.
pub const MAX_IMAGES: usize = 64;

/// Longest product, chipset, hardware revision, software version, image name and partition
/// name, in bytes (128). These are identifiers meant to be shown and compared, not prose.
pub const MAX_NAME_LEN: usize = 128;

/// Most hardware revisions one manifest may list (64). Bounds the compatibility check.
pub const MAX_HW_REVISIONS: usize = 64;

/// Most extensions in one extension list (16), per manifest and per image.
pub const MAX_EXTENSIONS: usize = 16;

/// Largest extension value, in bytes (64 KiB). Extensions are small future fields, not data.
pub const MAX_EXTENSION_VALUE_LEN: usize = 64 * 1024;

/// Smallest chunk, in bytes (4 KiB): one NAND page. Smaller chunks only grow the manifest.
pub const MIN_CHUNK_SIZE: u32 = 4 * 1024;

/// Largest chunk, in bytes (16 MiB). Bounds the memory of one chunk in flight.
pub const MAX_CHUNK_SIZE: u32 = 16 * 1024 * 1024;

/// Largest Zstandard window, as a power of two, that a compressed chunk's frame may declare
/// (23: 8 MiB; FORMAT.md §3.1). Bounds the memory of a streaming decoder on a device; writers
/// use `min(23, log2(chunk size))`.
pub const MAX_ZSTD_WINDOW_LOG: u32 = 23;

/// Largest Zstandard window, in bytes, that a compressed chunk's frame may declare (8 MiB).
pub const MAX_ZSTD_WINDOW: u32 = 1 << MAX_ZSTD_WINDOW_LOG;

/// Longest range of the source image a patched chunk's frame may use as its reference prefix
/// (8 MiB, the largest window: FORMAT.md §3.4). Bounds the memory a device needs to rebuild one
/// patched chunk: the reference, plus the chunk.
pub const MAX_PATCH_SOURCE_LEN: u32 = MAX_ZSTD_WINDOW;

/// Most signatures in one signature block (16). Bounds the verifier's work.
pub const MAX_SIGNATURES: usize = 16;

/// Largest signature value, in bytes (1024). RSA-4096 signatures are 512 bytes.
pub const MAX_SIGNATURE_LEN: usize = 1024;

/// Most certificates attached to one signature (8): leaf first, then intermediates. Bounds
/// chain building.
pub const MAX_CERTIFICATES: usize = 8;

/// Most trust anchors in a manifest's `trustRotation` (16): the new anchor set a device is
/// asked to adopt (FORMAT.md §3.2).
pub const MAX_ROTATION_ANCHORS: usize = 16;

/// Largest DER encoding of one rotated trust anchor (16 KiB): a root certificate or a
/// SubjectPublicKeyInfo. An RSA-4096 root certificate is under 2 KiB.
pub const MAX_ANCHOR_LEN: usize = 16 * 1024;
