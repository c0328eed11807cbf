//! `std::io::Read` drivers over the sans-IO digester and verifier.

use alloc::vec::Vec;
use core::fmt;
use std::io::{self, Read};

use crate::digest::{ImageDigester, ImageDigests};
use crate::error::{Error, len_u64};
use crate::sha::Digest;
use crate::verify::{ChunkVerifier, ImageExpectation, VerifiedChunk};

/// Size of the read buffer of [`digest_reader`]. Computing digests needs no whole chunk in
/// memory, so this is independent of the chunk size: big enough to keep read calls rare, small
/// enough to stay in cache between the chunk and whole-image hash passes.
const DIGEST_READ_BUFFER_LEN: usize = 256 * 1024;

/// Why [`verify_reader`] stopped.
#[non_exhaustive]
#[derive(Debug)]
pub enum VerifyError<E> {
    /// The data failed verification (bad chunk, truncated input, inconsistent expectations).
    Hash(Error),
    /// Reading failed.
    Io(io::Error),
    /// The sink refused a verified chunk; no further chunk was read.
    Sink(E),
}

impl<E> From<Error> for VerifyError<E> {
    fn from(error: Error) -> Self {
        Self::Hash(error)
    }
}

impl<E: fmt::Display> fmt::Display for VerifyError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Hash(error) => write!(f, "verification failed: {error}"),
            Self::Io(error) => write!(f, "read error: {error}"),
            Self::Sink(error) => write!(f, "sink failed: {error}"),
        }
    }
}

impl<E: core::error::Error + 'static> core::error::Error for VerifyError<E> {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            Self::Hash(error) => Some(error),
            Self::Io(error) => Some(error),
            Self::Sink(error) => Some(error),
        }
    }
}

/// Allocates a zeroed buffer of exactly `len` bytes, reporting failure instead of aborting.
pub(crate) fn alloc_buffer(len: usize) -> Result<Vec<u8>, Error> {
    let mut buffer = Vec::new();
    buffer
        .try_reserve_exact(len)
        .map_err(|_| Error::OutOfMemory {
            bytes: len_u64(len),
        })?;
    buffer.resize(len, 0);
    Ok(buffer)
}

/// Digests of an image read from `reader` to its end, in one pass: the whole-image SHA-256 and
/// the SHA-256 of each `chunk_size`-byte chunk.
///
/// Memory is one fixed 256 KiB read buffer plus 32 bytes per chunk, whatever the chunk size.
/// Short reads and [`io::ErrorKind::Interrupted`] are handled.
///
/// # Errors
///
/// [`Error::InvalidChunkSize`] if `chunk_size` is zero or does not fit in `usize`;
/// [`Error::OutOfMemory`] if a buffer cannot be allocated; [`Error::SizeOverflow`] past
/// `u64::MAX` bytes; [`Error::Io`] if reading fails.
pub fn digest_reader<R: Read>(mut reader: R, chunk_size: u32) -> Result<ImageDigests, Error> {
    let mut digester = ImageDigester::new(chunk_size)?;
    let mut buffer = alloc_buffer(DIGEST_READ_BUFFER_LEN)?;
    loop {
        match reader.read(&mut buffer) {
            Ok(0) => break,
            // A misbehaving reader may claim more than the buffer holds: ignore the excess claim
            // rather than panic.
            Ok(n) => digester.update(buffer.get(..n).unwrap_or(&buffer))?,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::from_io(&e)),
        }
    }
    digester.finish()
}

/// Reads exactly one image of `expect.size` bytes from `reader`, checks it chunk by chunk against
/// `expect`, and hands each verified chunk to `sink`; returns the whole-image digest.
///
/// * Each chunk is read into one reusable buffer of `min(chunk_size, size)` bytes (allocated once;
///   callers bound the chunk size), hashed, and passed to `sink` only if it matches: the bytes the
///   sink gets are the bytes that were hashed. Memory is constant in the image size.
/// * Exactly `expect.size` bytes are read, never one more, so `reader` is left at the first byte
///   after the image (the next image of a package). Short reads and
///   [`io::ErrorKind::Interrupted`] are handled. Each read asks for at most one chunk: wrap an
///   unbuffered source in a [`std::io::BufReader`] when chunks are small.
/// * The run stops at the first bad chunk, before the sink sees it or any later byte is read.
///
/// # Errors
///
/// * [`VerifyError::Hash`] with [`Error::ChunkMismatch`] for the first corrupt chunk,
///   [`Error::Truncated`] if the input ends early (with the number of image bytes received),
///   [`Error::ImageDigestMismatch`] if all chunks match but the whole image does not, and the
///   errors of [`ChunkVerifier::new`] for inconsistent expectations, or
///   [`Error::OutOfMemory`] if the chunk buffer cannot be allocated.
/// * [`VerifyError::Io`] if reading fails.
/// * [`VerifyError::Sink`] with the sink's error; no further byte is read.
pub fn verify_reader<R, F, E>(
    reader: &mut R,
    expect: ImageExpectation<'_>,
    mut sink: F,
) -> Result<Digest, VerifyError<E>>
where
    R: Read + ?Sized,
    F: FnMut(VerifiedChunk<'_>) -> Result<(), E>,
{
    let mut verifier = ChunkVerifier::new(expect)?;
    let mut buffer = alloc_buffer(verifier.next_chunk_len().unwrap_or(0))?;
    let mut offset: u64 = 0;
    while let Some(len) = verifier.next_chunk_len() {
        // The buffer holds the first chunk, the longest one (every chunk but the last is
        // `chunk_size` long), so this never fails; no panic path if it did.
        let buffer_len = buffer.len();
        let chunk = buffer.get_mut(..len).ok_or(Error::WrongChunkLength {
            index: verifier.checked(),
            expected: len_u64(len),
            found: len_u64(buffer_len),
        })?;
        fill(reader, chunk, offset)?;
        let verified = verifier.check(chunk)?;
        offset = offset.saturating_add(len_u64(len));
        sink(verified).map_err(VerifyError::Sink)?;
    }
    Ok(verifier.finish()?)
}

/// Fills `buf` completely from `reader`, like [`Read::read_exact`] but reporting where the input
/// ended. `offset` is the image offset of `buf[0]`.
fn fill<R: Read + ?Sized, E>(
    reader: &mut R,
    buf: &mut [u8],
    offset: u64,
) -> Result<(), VerifyError<E>> {
    let mut filled = 0;
    while let Some(rest) = buf.get_mut(filled..).filter(|rest| !rest.is_empty()) {
        match reader.read(rest) {
            Ok(0) => {
                return Err(VerifyError::Hash(Error::Truncated {
                    offset: offset.saturating_add(len_u64(filled)),
                }));
            }
            // `min` guards against a reader claiming more than it was given room for.
            Ok(n) => filled += n.min(rest.len()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(VerifyError::Io(e)),
        }
    }
    Ok(())
}
