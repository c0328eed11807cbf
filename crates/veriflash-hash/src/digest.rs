//! Computing an image's digests: the whole-image SHA-256 and one SHA-256 per chunk.

use alloc::vec::Vec;

use crate::error::{Error, len_u64};
use crate::sha::{Digest, Sha256};

/// Number of chunks an image of `size` bytes has when cut into `chunk_size`-byte chunks:
/// `ceil(size / chunk_size)`, so the last chunk holds the (non-empty) remainder and an empty
/// image has no chunks.
///
/// Returns `None` if `chunk_size` is zero, the one input for which no chunking exists.
#[must_use]
pub fn chunk_count(size: u64, chunk_size: u32) -> Option<u64> {
    if chunk_size == 0 {
        None
    } else {
        Some(size.div_ceil(u64::from(chunk_size)))
    }
}

/// Validates a chunk size and converts it to `usize` (it must address a buffer in memory).
pub(crate) fn chunk_size_usize(chunk_size: u32) -> Result<usize, Error> {
    match usize::try_from(chunk_size) {
        Ok(len) if len > 0 => Ok(len),
        _ => Err(Error::InvalidChunkSize { chunk_size }),
    }
}

/// Whole-image digest plus per-chunk digests, as the packer needs them for the manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageDigests {
    /// Image size in bytes.
    pub size: u64,
    /// SHA-256 of the whole image.
    pub digest: Digest,
    /// SHA-256 of each chunk, in order; `chunk_count(size, chunk_size)` entries.
    pub chunk_digests: Vec<Digest>,
}

/// Sans-IO digest computation: feed an image in pieces of any size with
/// [`update`](Self::update), then [`finish`](Self::finish).
///
/// Each byte is hashed once into its chunk's digest and once into the whole-image digest; memory
/// is one hasher state per digest plus 32 bytes per completed chunk, whatever the chunk size.
/// [`digest_slice`] and `digest_reader` are built on it; use it directly when the image arrives
/// through something other than a slice or a `Read` (a decompressor, a network callback).
#[derive(Clone, Debug)]
pub struct ImageDigester {
    chunk_size: usize,
    size: u64,
    whole: Sha256,
    chunk: Sha256,
    /// Bytes of the current (incomplete) chunk hashed so far; always `< chunk_size`.
    in_chunk: usize,
    chunk_digests: Vec<Digest>,
}

impl ImageDigester {
    /// A digester for an image cut into `chunk_size`-byte chunks.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidChunkSize`] if `chunk_size` is zero or does not fit in `usize`.
    pub fn new(chunk_size: u32) -> Result<Self, Error> {
        Ok(Self {
            chunk_size: chunk_size_usize(chunk_size)?,
            size: 0,
            whole: Sha256::new(),
            chunk: Sha256::new(),
            in_chunk: 0,
            chunk_digests: Vec::new(),
        })
    }

    /// Reserves room for the digests of `chunks` more chunks, so that feeding a known-size image
    /// does not reallocate.
    ///
    /// # Errors
    ///
    /// [`Error::OutOfMemory`] if the allocation fails.
    pub fn reserve_chunks(&mut self, chunks: usize) -> Result<(), Error> {
        self.chunk_digests
            .try_reserve_exact(chunks)
            .map_err(|_| Error::OutOfMemory {
                bytes: len_u64(chunks).saturating_mul(len_u64(crate::DIGEST_LEN)),
            })
    }

    /// Hashes `data` as the next bytes of the image.
    ///
    /// # Errors
    ///
    /// [`Error::SizeOverflow`] if the image would exceed `u64::MAX` bytes, or
    /// [`Error::OutOfMemory`] if the chunk digest list cannot grow. The digester is unchanged
    /// by a call that fails.
    pub fn update(&mut self, data: &[u8]) -> Result<(), Error> {
        let size = self
            .size
            .checked_add(len_u64(data.len()))
            .ok_or(Error::SizeOverflow)?;
        // Room for every chunk this call completes, reserved up front so a failure leaves no
        // partial state behind.
        // Amortized growth: a reader feeding many small pieces must not reallocate every call.
        let completes = self.in_chunk.saturating_add(data.len()) / self.chunk_size;
        self.chunk_digests
            .try_reserve(completes)
            .map_err(|_| Error::OutOfMemory {
                bytes: len_u64(completes).saturating_mul(len_u64(crate::DIGEST_LEN)),
            })?;

        self.whole.update(data);
        let mut rest = data;
        while !rest.is_empty() {
            let room = self.chunk_size - self.in_chunk; // in_chunk < chunk_size
            let (head, tail) = rest.split_at(room.min(rest.len()));
            self.chunk.update(head);
            self.in_chunk += head.len(); // <= chunk_size
            if self.in_chunk == self.chunk_size {
                self.chunk_digests
                    .push(core::mem::take(&mut self.chunk).finalize());
                self.in_chunk = 0;
            }
            rest = tail;
        }
        self.size = size;
        Ok(())
    }

    /// Number of image bytes fed so far.
    #[must_use]
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The digests of everything fed; the last chunk is whatever remains after the last full
    /// chunk.
    ///
    /// # Errors
    ///
    /// [`Error::OutOfMemory`] if the digest of the final partial chunk cannot be stored.
    pub fn finish(mut self) -> Result<ImageDigests, Error> {
        if self.in_chunk > 0 {
            self.reserve_chunks(1)?;
            self.chunk_digests.push(self.chunk.finalize());
        }
        Ok(ImageDigests {
            size: self.size,
            digest: self.whole.finalize(),
            chunk_digests: self.chunk_digests,
        })
    }
}

/// Digests of an image held in memory: its whole-image SHA-256 and the SHA-256 of each
/// `chunk_size`-byte chunk.
///
/// # Errors
///
/// [`Error::InvalidChunkSize`] if `chunk_size` is zero or does not fit in `usize`;
/// [`Error::OutOfMemory`] if the digest list cannot be allocated.
pub fn digest_slice(data: &[u8], chunk_size: u32) -> Result<ImageDigests, Error> {
    let mut digester = ImageDigester::new(chunk_size)?;
    digester.reserve_chunks(data.len().div_ceil(digester.chunk_size))?;
    digester.update(data)?;
    digester.finish()
}
