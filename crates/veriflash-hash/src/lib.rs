#![doc = include_str!("../README.md")]
#![cfg_attr(not(feature = "std"), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

mod digest;
mod error;
#[cfg(feature = "std")]
mod io;
#[cfg(feature = "std")]
mod parallel;
mod sha;
#[cfg(feature = "std")]
mod slice;
mod verify;

pub use digest::{ImageDigester, ImageDigests, chunk_count, digest_slice};
pub use error::Error;
#[cfg(feature = "std")]
pub use io::{VerifyError, digest_reader, verify_reader};
#[cfg(feature = "std")]
pub use parallel::{
    DEFAULT_MIN_BUFFER_LEN, MAX_THREADS, ParallelOptions, ReadAt, verify_reader_parallel,
    verify_stored_at_parallel, verify_stored_reader_parallel,
};
pub use sha::{DIGEST_LEN, Digest, Sha256, backend, sha256};
#[cfg(feature = "std")]
pub use slice::verify_slice_parallel;
#[cfg(target_has_atomic = "ptr")]
pub use verify::SharedChunk;
pub use verify::{
    ChunkDecoder, ChunkEncoding, ChunkVerifier, DecodeError, ExpectedChunk, ImageExpectation,
    Realigner, StoredChunk, VerifiedBuffer, VerifiedChunk,
};

#[cfg(all(test, feature = "std"))]
mod tests;
