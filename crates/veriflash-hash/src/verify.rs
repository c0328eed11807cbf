//! Checking an image against its expected digests, chunk by chunk, without doing any I/O.

use core::fmt;

use crate::digest::{chunk_count, chunk_size_usize};
use crate::error::{Error, len_u64};
use crate::sha::{Digest, Sha256, sha256};

/// What an image must hash to: the signed expectations for one image, borrowed from the manifest.
///
/// This crate does not know where the values come from; the caller (veriflash-core) builds this
/// only from a manifest whose signatures were verified, which is what gives a
/// [`VerifiedChunk`] its meaning.
#[derive(Clone, Copy, Debug)]
pub struct ImageExpectation<'a> {
    /// Image size in bytes.
    pub size: u64,
    /// Chunk size in bytes; every chunk but the last has exactly this length.
    pub chunk_size: u32,
    /// SHA-256 of the whole image.
    pub digest: &'a Digest,
    /// SHA-256 of each chunk, in order; must have `ceil(size / chunk_size)` entries.
    pub chunk_digests: &'a [Digest],
}

/// Where one chunk sits in the image and what it must hash to.
///
/// Handed out by [`ChunkVerifier::expected_chunk`] so that a chunk can be checked away from the
/// verifier (on another thread, in a parallel driver); it is `Copy` and `Send`. Fields are private
/// so that a [`VerifiedChunk`] can only come from the digests the verifier was given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExpectedChunk<'a> {
    index: u64,
    offset: u64,
    len: usize,
    digest: &'a Digest,
}

impl<'a> ExpectedChunk<'a> {
    /// Zero-based chunk index.
    #[must_use]
    pub fn index(&self) -> u64 {
        self.index
    }

    /// Byte offset of the chunk's first byte in the image.
    #[must_use]
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Length the chunk must have: the chunk size, or the remainder for the last chunk.
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always `false`: chunks are never empty. Present because `len` is.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The digest the chunk must have.
    #[must_use]
    pub fn digest(&self) -> &'a Digest {
        self.digest
    }

    /// Hashes `bytes` and compares the result with this chunk's digest. Touches no shared state,
    /// so chunks can be checked in any order and on any thread; the whole-image digest is left to
    /// the [`ChunkVerifier`].
    ///
    /// # Errors
    ///
    /// [`Error::WrongChunkLength`] if `bytes` is not [`len`](Self::len) bytes long (nothing is
    /// hashed then); [`Error::ChunkMismatch`] if it does not hash to the digest.
    pub fn verify<'b>(&self, bytes: &'b [u8]) -> Result<VerifiedChunk<'b>, Error> {
        if bytes.len() != self.len {
            return Err(Error::WrongChunkLength {
                index: self.index,
                expected: len_u64(self.len),
                found: len_u64(bytes.len()),
            });
        }
        // Digests are public values (they are in the manifest), so a variable-time comparison
        // leaks nothing.
        if sha256(bytes) != *self.digest {
            return Err(Error::ChunkMismatch {
                index: self.index,
                offset: self.offset,
            });
        }
        Ok(VerifiedChunk {
            index: self.index,
            offset: self.offset,
            bytes,
        })
    }
}

/// Proof token: bytes that hashed to their expected chunk digest.
///
/// It has no public constructor and its fields are private: the only way to get one is a
/// successful check, so an API that takes a `VerifiedChunk` (a plugin's write) cannot be handed
/// unchecked bytes. The bytes are the very ones that were hashed, borrowed, never copied or
/// re-read.
pub struct VerifiedChunk<'a> {
    index: u64,
    offset: u64,
    bytes: &'a [u8],
}

impl<'a> VerifiedChunk<'a> {
    /// The token for bytes that a worker thread of the parallel driver has already checked with
    /// [`ExpectedChunk::verify`] (the buffer travelled back unchanged). Crate-private: nothing
    /// outside this crate can make a token without a check.
    #[cfg(feature = "std")]
    pub(crate) fn checked_elsewhere(expected: &ExpectedChunk<'_>, bytes: &'a [u8]) -> Self {
        Self {
            index: expected.index,
            offset: expected.offset,
            bytes,
        }
    }

    /// Zero-based chunk index.
    #[must_use]
    pub fn index(&self) -> u64 {
        self.index
    }

    /// Byte offset of the chunk's first byte in the image.
    #[must_use]
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The verified bytes.
    #[must_use]
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }
}

impl fmt::Debug for VerifiedChunk<'_> {
    /// Shows where the chunk is and its length, not its (possibly megabytes of) content.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifiedChunk")
            .field("index", &self.index)
            .field("offset", &self.offset)
            .field("len", &self.bytes.len())
            .finish()
    }
}

/// Sans-IO chunk checker: feed it each chunk of an image in order with [`check`](Self::check),
/// then call [`finish`](Self::finish).
///
/// It does no I/O and allocates nothing, so any driver can use it: the serial
/// `verify_reader`, a download loop, or a parallel driver that checks chunks on worker threads
/// through [`expected_chunk`](Self::expected_chunk). Each chunk is compared with its digest as it
/// is offered, so the first corrupt chunk is reported before any later byte is looked at. A
/// failed check leaves the verifier unchanged: a caller that can fetch the chunk again (a resumed
/// download) may offer it again.
pub struct ChunkVerifier<'a> {
    expect: ImageExpectation<'a>,
    chunk_size: usize,
    total: u64,
    checked: u64,
    whole: Sha256,
}

impl<'a> ChunkVerifier<'a> {
    /// A verifier for one image.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidChunkSize`] if the chunk size is zero or does not fit in `usize`;
    /// [`Error::DigestCountMismatch`] if there are not exactly `ceil(size / chunk_size)` chunk
    /// digests.
    pub fn new(expect: ImageExpectation<'a>) -> Result<Self, Error> {
        let chunk_size = chunk_size_usize(expect.chunk_size)?;
        let total = chunk_count(expect.size, expect.chunk_size).ok_or(Error::InvalidChunkSize {
            chunk_size: expect.chunk_size,
        })?;
        let found = len_u64(expect.chunk_digests.len());
        if found != total {
            return Err(Error::DigestCountMismatch {
                expected: total,
                found,
            });
        }
        Ok(Self {
            expect,
            chunk_size,
            total,
            checked: 0,
            whole: Sha256::new(),
        })
    }

    /// The expectations this verifier checks against.
    #[must_use]
    pub fn expectation(&self) -> ImageExpectation<'a> {
        self.expect
    }

    /// Number of chunks in the image.
    #[must_use]
    pub fn chunk_count(&self) -> u64 {
        self.total
    }

    /// Number of chunks checked successfully so far; also the index of the next chunk.
    #[must_use]
    pub fn checked(&self) -> u64 {
        self.checked
    }

    /// Length of the next chunk [`check`](Self::check) expects, or `None` when all chunks were
    /// checked. A reading driver reads exactly this many bytes, so it never reads past the image.
    #[must_use]
    pub fn next_chunk_len(&self) -> Option<usize> {
        self.expected_chunk(self.checked).map(|chunk| chunk.len)
    }

    /// Position, length and digest of chunk `index`, or `None` past the last chunk. Any index may
    /// be asked for, in any order: this is what a parallel driver hands to its workers.
    #[must_use]
    pub fn expected_chunk(&self, index: u64) -> Option<ExpectedChunk<'a>> {
        if index >= self.total {
            return None;
        }
        let digest = self
            .expect
            .chunk_digests
            .get(usize::try_from(index).ok()?)?;
        // index < ceil(size / chunk_size), so offset < size: neither step can fail.
        let offset = index.checked_mul(u64::from(self.expect.chunk_size))?;
        let remaining = self.expect.size.checked_sub(offset)?;
        // A remainder that does not fit in usize is certainly longer than a chunk.
        let len = usize::try_from(remaining).map_or(self.chunk_size, |r| r.min(self.chunk_size));
        Some(ExpectedChunk {
            index,
            offset,
            len,
            digest,
        })
    }

    /// Checks the next chunk and, if it matches, adds it to the whole-image digest.
    ///
    /// # Errors
    ///
    /// [`Error::UnexpectedChunk`] if all chunks were already checked;
    /// [`Error::WrongChunkLength`] if `chunk` is not [`next_chunk_len`](Self::next_chunk_len)
    /// bytes long; [`Error::ChunkMismatch`] (with the chunk's index and byte offset) if it does not
    /// hash to its digest. On error the verifier is unchanged.
    pub fn check<'b>(&mut self, chunk: &'b [u8]) -> Result<VerifiedChunk<'b>, Error> {
        let expected = self
            .expected_chunk(self.checked)
            .ok_or(Error::UnexpectedChunk { total: self.total })?;
        let verified = expected.verify(chunk)?;
        self.whole.update(chunk);
        self.checked += 1; // checked < total <= u64::MAX
        Ok(verified)
    }

    /// Ends verification and returns the whole-image digest.
    ///
    /// # Errors
    ///
    /// [`Error::Incomplete`] if not every chunk was checked; [`Error::ImageDigestMismatch`] if the
    /// image does not hash to the expected whole-image digest.
    pub fn finish(self) -> Result<Digest, Error> {
        if self.checked != self.total {
            return Err(Error::Incomplete {
                checked: self.checked,
                total: self.total,
            });
        }
        let digest = self.whole.finalize();
        if digest == *self.expect.digest {
            Ok(digest)
        } else {
            Err(Error::ImageDigestMismatch)
        }
    }
}

impl fmt::Debug for ChunkVerifier<'_> {
    /// Shows progress, not the (possibly half a million) chunk digests.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChunkVerifier")
            .field("size", &self.expect.size)
            .field("chunk_size", &self.expect.chunk_size)
            .field("checked", &self.checked)
            .field("total", &self.total)
            .finish_non_exhaustive()
    }
}
