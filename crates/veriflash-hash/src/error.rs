//! The crate's one error type.

use core::fmt;

/// Why hashing or chunk verification failed.
///
/// Every variant carries the context a caller needs to report or act on the failure (which chunk,
/// at which byte offset, how many were expected). The enum is `#[non_exhaustive]` so new failure
/// kinds (the parallel verifier's, for instance) can be added without a breaking change.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    /// Chunk `index` (starting at byte `offset` of the image) does not hash to its signed digest:
    /// the data was corrupted or tampered with. Only this chunk needs to be fetched again.
    ChunkMismatch {
        /// Zero-based index of the bad chunk.
        index: u64,
        /// Byte offset of the bad chunk's first byte in the image.
        offset: u64,
    },
    /// Every chunk matched its digest but the whole image does not hash to the signed whole-image
    /// digest: the signed expectations contradict each other (a packer bug or a forged manifest
    /// whose signature was not checked).
    ImageDigestMismatch,
    /// The input ended before the image's declared size: only `offset` bytes of the image arrived.
    Truncated {
        /// Number of image bytes received before the end of the input.
        offset: u64,
    },
    /// A chunk handed to [`ChunkVerifier::check`](crate::ChunkVerifier::check) does not have the
    /// length the chunking rules give chunk `index`.
    WrongChunkLength {
        /// Zero-based index of the chunk being checked.
        index: u64,
        /// Length chunk `index` must have.
        expected: u64,
        /// Length of the slice that was offered.
        found: u64,
    },
    /// A chunk was offered after all `total` chunks of the image were checked: the input is
    /// longer than the image.
    UnexpectedChunk {
        /// Number of chunks the image has (all of them already checked).
        total: u64,
    },
    /// The number of chunk digests does not match `ceil(size / chunk_size)`.
    DigestCountMismatch {
        /// Number of chunks the image size and chunk size imply.
        expected: u64,
        /// Number of chunk digests supplied.
        found: u64,
    },
    /// The chunk size is zero, or too large to address in memory on this platform.
    InvalidChunkSize {
        /// The rejected chunk size.
        chunk_size: u32,
    },
    /// [`ChunkVerifier::finish`](crate::ChunkVerifier::finish) was called before every chunk was
    /// checked.
    Incomplete {
        /// Number of chunks checked so far.
        checked: u64,
        /// Number of chunks the image has.
        total: u64,
    },
    /// Chunk `index`'s stored bytes matched their signed digest but decode to a length other
    /// than the chunk's signed decompressed length: the signer's package is inconsistent (a
    /// packer bug or a decompression bomb). The output never grew past the signed length.
    DecompressedLengthMismatch {
        /// Zero-based index of the chunk.
        index: u64,
        /// Byte offset of the chunk's first byte in the (decompressed) image.
        offset: u64,
        /// The signed decompressed length.
        expected: u64,
        /// The length produced, or `None` when the data would produce more than `expected`
        /// (decoding stopped at the bound).
        found: Option<u64>,
    },
    /// Chunk `index`'s stored bytes matched their signed digest but could not be decoded
    /// (invalid frame, a window over the decoder's limit, an encoding it does not implement).
    DecodeFailed {
        /// Zero-based index of the chunk.
        index: u64,
        /// Byte offset of the chunk's first byte in the (decompressed) image.
        offset: u64,
        /// What the decoder reported.
        reason: alloc::string::String,
    },
    /// Chunk `index`'s storage record is inconsistent: its stored length exceeds the chunk's
    /// length, or differs from it for a raw chunk.
    InvalidStoredChunk {
        /// Zero-based index of the chunk.
        index: u64,
    },
    /// The image is larger than `u64::MAX` bytes (only reachable through a reader that never ends).
    SizeOverflow,
    /// A [`Realigner`](crate::Realigner) was given a chunk that does not start where the chunks
    /// before it ended.
    NotContiguous {
        /// Where the next chunk had to start.
        expected: u64,
        /// Where it started.
        found: u64,
    },
    /// A buffer of `bytes` bytes could not be allocated. Callers bound the chunk size (the package
    /// format does), so this means the device is short of memory.
    OutOfMemory {
        /// Size of the allocation that failed.
        bytes: u64,
    },
    /// Reading the input failed (only from [`digest_reader`](crate::digest_reader);
    /// `verify_reader` returns the [`std::io::Error`] itself). Kept as kind and message so that
    /// `Error` stays `Clone` and `Eq`.
    #[cfg(feature = "std")]
    Io {
        /// The I/O error's kind, for retry decisions.
        kind: std::io::ErrorKind,
        /// The I/O error's message.
        message: alloc::string::String,
    },
}

impl Error {
    #[cfg(feature = "std")]
    pub(crate) fn from_io(error: &std::io::Error) -> Self {
        Self::Io {
            kind: error.kind(),
            message: alloc::string::ToString::to_string(error),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ChunkMismatch { index, offset } => write!(
                f,
                "chunk {index} (at byte offset {offset}) does not match its signed digest"
            ),
            Self::ImageDigestMismatch => {
                f.write_str("image does not match its signed whole-image digest")
            }
            Self::Truncated { offset } => {
                write!(
                    f,
                    "input ended after {offset} bytes, before the end of the image"
                )
            }
            Self::WrongChunkLength {
                index,
                expected,
                found,
            } => write!(
                f,
                "chunk {index} must be {expected} bytes long, got {found} bytes"
            ),
            Self::UnexpectedChunk { total } => {
                write!(f, "chunk offered after all {total} chunks of the image")
            }
            Self::DigestCountMismatch { expected, found } => write!(
                f,
                "image needs {expected} chunk digests, {found} were supplied"
            ),
            Self::InvalidChunkSize { chunk_size } => {
                write!(f, "invalid chunk size {chunk_size}")
            }
            Self::Incomplete { checked, total } => {
                write!(f, "verification finished after {checked} of {total} chunks")
            }
            Self::DecompressedLengthMismatch {
                index,
                offset,
                expected,
                found,
            } => match found {
                Some(found) => write!(
                    f,
                    "chunk {index} (at byte offset {offset}) decompresses to {found} bytes, its \
                     signed length is {expected}"
                ),
                None => write!(
                    f,
                    "chunk {index} (at byte offset {offset}) decompresses to more than its signed \
                     length of {expected} bytes"
                ),
            },
            Self::DecodeFailed {
                index,
                offset,
                reason,
            } => write!(
                f,
                "chunk {index} (at byte offset {offset}) cannot be decompressed: {reason}"
            ),
            Self::InvalidStoredChunk { index } => write!(
                f,
                "chunk {index}: stored length is inconsistent with the chunk length"
            ),
            Self::SizeOverflow => f.write_str("image size overflows 64 bits"),
            Self::NotContiguous { expected, found } => write!(
                f,
                "a chunk at byte offset {found} follows chunks that ended at {expected}"
            ),
            Self::OutOfMemory { bytes } => write!(f, "cannot allocate a buffer of {bytes} bytes"),
            #[cfg(feature = "std")]
            Self::Io { message, .. } => write!(f, "read error: {message}"),
        }
    }
}

impl core::error::Error for Error {}

/// Converts a length to `u64`. Exact on every platform Rust supports (`usize` is at most 64 bits);
/// saturates otherwise rather than panic.
pub(crate) fn len_u64(len: usize) -> u64 {
    u64::try_from(len).unwrap_or(u64::MAX)
}
