//! Checking an image against its expected digests, chunk by chunk, without doing any I/O.

use alloc::string::String;
use alloc::vec::Vec;
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

/// How one chunk is stored in the input (the package format's chunk table, FORMAT.md §3.1).
///
/// This crate does not know the format; the caller maps its records to these.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChunkEncoding {
    /// The stored bytes are the chunk.
    Raw,
    /// The stored bytes are one Zstandard frame that a [`ChunkDecoder`] turns into the chunk.
    Zstd,
}

/// One chunk as stored in the input: its encoding and its stored length, which its signed
/// digest covers. Its decompressed length is the chunk's nominal length
/// ([`ExpectedChunk::len`]), which bounds what a decoder may produce.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StoredChunk {
    /// How the chunk is stored.
    pub encoding: ChunkEncoding,
    /// Length of the stored bytes; at most the chunk's length, and equal to it when raw.
    pub stored_len: u32,
    /// The chunk's length (decompressed): in a fixed layout `chunk_size`, or the remainder for
    /// the last chunk; content-defined chunks have any length in `1..=chunk_size`, together
    /// exactly the image. A table lays out the image's chunks by these lengths.
    pub len: u32,
}

/// Why a [`ChunkDecoder`] could not turn verified stored bytes into a chunk.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The stored bytes decode (or declare that they decode) to more bytes than the output
    /// buffer, which is exactly the signed decompressed length.
    OutputOverflow,
    /// The decoder does not implement this encoding.
    UnsupportedEncoding,
    /// The stored bytes are not a valid encoding, or break a limit of the decoder (a window
    /// larger than allowed, a dictionary, more than one frame).
    Invalid {
        /// What is wrong, for the error message.
        reason: String,
    },
}

/// Turns the stored bytes of a compressed chunk into the chunk, after they matched their signed
/// digest.
///
/// The verifier calls [`decode`](Self::decode) only with stored bytes that hashed to the chunk's
/// signed digest, so a decoder never sees an unauthenticated byte. It decodes into `out`, which
/// is exactly the chunk's signed decompressed length: an implementation must never write past
/// it, must return [`DecodeError::OutputOverflow`] when the input would produce more, and
/// returns how many bytes it produced (the verifier refuses any count but `out.len()`).
/// Implementations live with the caller (veriflash-core has a Zstandard one), so this crate
/// stays free of codecs and `no_std`.
pub trait ChunkDecoder: Sync {
    /// Decodes `stored`, the verified stored bytes of `chunk`, into `out`
    /// (`out.len() == chunk.len()`).
    ///
    /// # Errors
    /// [`DecodeError::OutputOverflow`] if the data would produce more than `out.len()` bytes;
    /// [`DecodeError::UnsupportedEncoding`] for an encoding it does not implement;
    /// [`DecodeError::Invalid`] for data it cannot decode.
    fn decode(
        &self,
        chunk: &ExpectedChunk<'_>,
        stored: &[u8],
        out: &mut [u8],
    ) -> Result<usize, DecodeError>;
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
    stored_len: usize,
    encoding: ChunkEncoding,
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

    /// Length of the chunk's stored bytes, which its digest covers ([`len`](Self::len) when
    /// raw).
    #[must_use]
    pub fn stored_len(&self) -> usize {
        self.stored_len
    }

    /// How the chunk is stored.
    #[must_use]
    pub fn encoding(&self) -> ChunkEncoding {
        self.encoding
    }

    /// The digest the chunk's stored bytes must have.
    #[must_use]
    pub fn digest(&self) -> &'a Digest {
        self.digest
    }

    /// Hashes the stored bytes and compares them with the signed digest (nothing else).
    pub(crate) fn check_stored(&self, stored: &[u8]) -> Result<(), Error> {
        self.check_stored_hashed(stored, None)
    }

    /// [`check_stored`](Self::check_stored), with the SHA-256 of `stored` when the caller
    /// already computed it from these very bytes (while reading them into their buffer).
    pub(crate) fn check_stored_hashed(
        &self,
        stored: &[u8],
        hashed: Option<&Digest>,
    ) -> Result<(), Error> {
        if stored.len() != self.stored_len {
            return Err(Error::WrongChunkLength {
                index: self.index,
                expected: len_u64(self.stored_len),
                found: len_u64(stored.len()),
            });
        }
        // Digests are public values (they are in the manifest), so a variable-time comparison
        // leaks nothing.
        let digest = hashed.copied().unwrap_or_else(|| sha256(stored));
        if digest != *self.digest {
            return Err(Error::ChunkMismatch {
                index: self.index,
                offset: self.offset,
            });
        }
        Ok(())
    }

    /// Checks a chunk that may be stored compressed: hashes `stored` and compares it with the
    /// signed digest **first**; only if it matches, and only for a compressed chunk, has
    /// `decoder` decode it into the first [`len`](Self::len) bytes of `out` (the signed
    /// decompressed length bounds the output). The token holds `stored` for a raw chunk and the
    /// decoded bytes of `out` otherwise.
    ///
    /// # Errors
    /// [`Error::WrongChunkLength`] if `stored` is not [`stored_len`](Self::stored_len) bytes or
    /// `out` is shorter than the chunk; [`Error::ChunkMismatch`] if `stored` does not hash to the
    /// digest (the decoder is not called); [`Error::DecompressedLengthMismatch`] if the chunk
    /// decodes to more or fewer bytes than its signed length; [`Error::DecodeFailed`] for any
    /// other decoder failure.
    pub fn verify_decoded<'b>(
        &self,
        stored: &'b [u8],
        decoder: &dyn ChunkDecoder,
        out: &'b mut [u8],
    ) -> Result<VerifiedChunk<'b>, Error> {
        self.check_stored(stored)?;
        if self.encoding == ChunkEncoding::Raw {
            return Ok(VerifiedChunk {
                index: self.index,
                offset: self.offset,
                bytes: stored,
            });
        }
        let found = len_u64(out.len());
        let out = out.get_mut(..self.len).ok_or(Error::WrongChunkLength {
            index: self.index,
            expected: len_u64(self.len),
            found,
        })?;
        self.decode_checked(stored, decoder, out)?;
        Ok(VerifiedChunk {
            index: self.index,
            offset: self.offset,
            bytes: out,
        })
    }

    /// Runs `decoder` on stored bytes that already matched their digest, into `out` of exactly
    /// [`len`](Self::len) bytes, and checks the produced length.
    pub(crate) fn decode_checked(
        &self,
        stored: &[u8],
        decoder: &dyn ChunkDecoder,
        out: &mut [u8],
    ) -> Result<(), Error> {
        let expected = len_u64(self.len);
        match decoder.decode(self, stored, out) {
            Ok(n) if n == self.len => Ok(()),
            Ok(n) => Err(Error::DecompressedLengthMismatch {
                index: self.index,
                offset: self.offset,
                expected,
                found: Some(len_u64(n)),
            }),
            Err(DecodeError::OutputOverflow) => Err(Error::DecompressedLengthMismatch {
                index: self.index,
                offset: self.offset,
                expected,
                found: None,
            }),
            Err(DecodeError::UnsupportedEncoding) => Err(Error::DecodeFailed {
                index: self.index,
                offset: self.offset,
                reason: alloc::format!("no decoder for {:?} chunks", self.encoding),
            }),
            Err(DecodeError::Invalid { reason }) => Err(Error::DecodeFailed {
                index: self.index,
                offset: self.offset,
                reason,
            }),
        }
    }

    /// Hashes `bytes` and compares the result with this chunk's digest. Touches no shared state,
    /// so chunks can be checked in any order and on any thread; the whole-image digest is left to
    /// the [`ChunkVerifier`].
    ///
    /// # Errors
    ///
    /// [`Error::WrongChunkLength`] if `bytes` is not [`len`](Self::len) bytes long (nothing is
    /// hashed then); [`Error::ChunkMismatch`] if it does not hash to the digest;
    /// [`Error::DecodeFailed`] if the chunk is stored compressed (use
    /// [`verify_decoded`](Self::verify_decoded)).
    pub fn verify<'b>(&self, bytes: &'b [u8]) -> Result<VerifiedChunk<'b>, Error> {
        if self.encoding != ChunkEncoding::Raw {
            return Err(Error::DecodeFailed {
                index: self.index,
                offset: self.offset,
                reason: "the chunk is stored compressed and no decoder was given".into(),
            });
        }
        self.check_stored(bytes)?;
        Ok(VerifiedChunk {
            index: self.index,
            offset: self.offset,
            bytes,
        })
    }
}

impl ExpectedChunk<'_> {
    /// [`verify`](Self::verify) of a buffer the token then owns: for a check made on one
    /// thread whose chunk another thread hands on (the delta install's workers). The buffer
    /// comes back with [`VerifiedBuffer::into_buffer`], for the next chunk.
    ///
    /// # Errors
    /// As [`verify`](Self::verify); the buffer is dropped (a run stops at its first bad chunk).
    pub fn verify_owned(&self, bytes: Vec<u8>) -> Result<VerifiedBuffer, Error> {
        self.verify(&bytes)?;
        Ok(VerifiedBuffer {
            index: self.index,
            offset: self.offset,
            bytes,
        })
    }

    /// [`verify_decoded`](Self::verify_decoded) into buffers the token then owns: it holds
    /// `stored` for a raw chunk and the first [`len`](Self::len) bytes of `out` (truncated to
    /// them) otherwise; the buffer it does not hold is returned beside it.
    ///
    /// # Errors
    /// As [`verify_decoded`](Self::verify_decoded); the buffers are dropped.
    pub fn verify_decoded_owned(
        &self,
        stored: Vec<u8>,
        decoder: &dyn ChunkDecoder,
        mut out: Vec<u8>,
    ) -> Result<(VerifiedBuffer, Vec<u8>), Error> {
        self.verify_decoded(&stored, decoder, &mut out)?;
        let (bytes, spare) = if self.encoding == ChunkEncoding::Raw {
            (stored, out)
        } else {
            out.truncate(self.len);
            (out, stored)
        };
        Ok((
            VerifiedBuffer {
                index: self.index,
                offset: self.offset,
                bytes,
            },
            spare,
        ))
    }
}

/// A [`VerifiedChunk`] that owns its bytes, so that it can be checked on one thread and handed
/// on from another without a copy. Made only by [`ExpectedChunk::verify_owned`] and
/// [`ExpectedChunk::verify_decoded_owned`]; its bytes cannot be changed, only lent out
/// ([`as_verified`](Self::as_verified)) or given up with the proof
/// ([`into_buffer`](Self::into_buffer)).
pub struct VerifiedBuffer {
    index: u64,
    offset: u64,
    bytes: Vec<u8>,
}

impl VerifiedBuffer {
    /// The chunk as a [`VerifiedChunk`] borrowing this buffer.
    #[must_use]
    pub fn as_verified(&self) -> VerifiedChunk<'_> {
        VerifiedChunk {
            index: self.index,
            offset: self.offset,
            bytes: &self.bytes,
        }
    }

    /// The buffer, for reuse: the proof ends here.
    #[must_use]
    pub fn into_buffer(self) -> Vec<u8> {
        self.bytes
    }
}

impl fmt::Debug for VerifiedBuffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.as_verified().fmt(f)
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

#[cfg(target_has_atomic = "ptr")]
impl VerifiedChunk<'_> {
    /// A shared, owned copy of this chunk, for handing the same verified bytes to several
    /// devices on several threads (a factory line). The copy is of the verified bytes in
    /// memory — never a re-read of the source — and a [`SharedChunk`] can be made no other way.
    ///
    /// ```
    /// use veriflash_hash::{ChunkVerifier, ImageExpectation, sha256};
    ///
    /// let image = b"firmware";
    /// let digest = sha256(image);
    /// let chunks = [digest];
    /// let mut verifier = ChunkVerifier::new(ImageExpectation {
    ///     size: 8,
    ///     chunk_size: 8,
    ///     digest: &digest,
    ///     chunk_digests: &chunks,
    /// })?;
    /// let shared = verifier.check(image)?.to_shared();
    /// let for_another_device = shared.clone();
    /// assert_eq!(for_another_device.as_verified().bytes(), image);
    /// assert_eq!((shared.index(), shared.offset(), shared.len()), (0, 0, 8));
    /// # Ok::<(), veriflash_hash::Error>(())
    /// ```
    #[must_use]
    pub fn to_shared(&self) -> SharedChunk {
        SharedChunk {
            index: self.index,
            offset: self.offset,
            bytes: alloc::sync::Arc::from(self.bytes),
        }
    }
}

/// An owned, cheaply cloned [`VerifiedChunk`]: made only by [`VerifiedChunk::to_shared`], so it
/// carries the same proof; [`as_verified`](Self::as_verified) lends it back as a
/// `VerifiedChunk` for a plugin's write. Clones share one immutable buffer. (Only on targets
/// with atomic pointers, which `Arc` needs.)
#[cfg(target_has_atomic = "ptr")]
#[derive(Clone)]
pub struct SharedChunk {
    index: u64,
    offset: u64,
    bytes: alloc::sync::Arc<[u8]>,
}

#[cfg(target_has_atomic = "ptr")]
impl SharedChunk {
    /// The chunk as a [`VerifiedChunk`] borrowing this buffer.
    #[must_use]
    pub fn as_verified(&self) -> VerifiedChunk<'_> {
        VerifiedChunk {
            index: self.index,
            offset: self.offset,
            bytes: &self.bytes,
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

    /// The chunk's length in bytes.
    #[must_use]
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether the chunk is empty (never, for a chunk of an image).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

#[cfg(target_has_atomic = "ptr")]
impl fmt::Debug for SharedChunk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedChunk")
            .field("index", &self.index)
            .field("offset", &self.offset)
            .field("len", &self.bytes.len())
            .finish()
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

/// Re-cuts the verified chunks of one image, given in order, into verified pieces that each
/// start on a multiple of `unit` bytes (and are whole units long but for the image's last),
/// numbered from 0:
/// what a device that writes in pages or sectors needs when chunks are content-defined and end
/// anywhere. Every byte it hands out came from a [`VerifiedChunk`], so the pieces are verified
/// too; it holds at most one chunk and one unit of bytes.
#[derive(Debug)]
pub struct Realigner {
    unit: usize,
    buffer: Vec<u8>,
    /// Image offset of `buffer[0]`.
    start: u64,
    /// Bytes at the front of `buffer` handed out by the last call, dropped by the next.
    handed: usize,
    /// The next piece's index: pieces are numbered from 0 as they are handed out.
    index: u64,
}

impl Realigner {
    /// Pieces aligned to `unit` bytes (at least 1).
    #[must_use]
    pub fn new(unit: usize) -> Self {
        Self {
            unit: unit.max(1),
            buffer: Vec::new(),
            start: 0,
            handed: 0,
            index: 0,
        }
    }

    /// Takes the next chunk; returns the whole units now complete, if any, as one piece.
    ///
    /// # Errors
    /// [`Error::NotContiguous`] for a chunk that does not start where the last one ended.
    pub fn push(&mut self, chunk: VerifiedChunk<'_>) -> Result<Option<VerifiedChunk<'_>>, Error> {
        self.drop_handed();
        let end = self.start.saturating_add(len_u64(self.buffer.len()));
        if chunk.offset != end {
            return Err(Error::NotContiguous {
                expected: end,
                found: chunk.offset,
            });
        }
        self.buffer.extend_from_slice(chunk.bytes);
        let whole = self.buffer.len() - self.buffer.len() % self.unit;
        Ok(self.hand_out(whole))
    }

    /// The bytes left after the last chunk (the image's end, shorter than a unit), if any.
    pub fn finish(&mut self) -> Option<VerifiedChunk<'_>> {
        self.drop_handed();
        self.hand_out(self.buffer.len())
    }

    fn drop_handed(&mut self) {
        self.buffer.drain(..self.handed);
        self.start = self.start.saturating_add(len_u64(self.handed));
        self.handed = 0;
    }

    fn hand_out(&mut self, len: usize) -> Option<VerifiedChunk<'_>> {
        if len == 0 {
            return None;
        }
        self.handed = len;
        let index = self.index;
        self.index = self.index.saturating_add(1);
        Some(VerifiedChunk {
            index,
            offset: self.start,
            bytes: self.buffer.get(..len)?,
        })
    }
}

/// Sans-IO chunk checker: feed it each chunk of an image in order with [`check`](Self::check),
/// then call [`finish`](Self::finish).
///
/// It does no I/O and allocates nothing beyond one offset per record of a chunk table, so any
/// driver can use it: the serial
/// `verify_reader`, a download loop, or a parallel driver that checks chunks on worker threads
/// through [`expected_chunk`](Self::expected_chunk). Each chunk is compared with its digest as it
/// is offered, so the first corrupt chunk is reported before any later byte is looked at. A
/// failed check leaves the verifier unchanged: a caller that can fetch the chunk again (a resumed
/// download) may offer it again.
pub struct ChunkVerifier<'a> {
    expect: ImageExpectation<'a>,
    /// The chunk table; empty means every chunk is stored raw, in the fixed layout.
    stored: &'a [StoredChunk],
    /// Where each chunk of the table starts in the image (empty without a table).
    offsets: Vec<u64>,
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
        Self::with_storage(expect, &[])
    }

    /// A verifier for one image whose chunks are stored as `stored` says (one record per chunk,
    /// laying out the image by the records' lengths; empty means all raw, in the fixed
    /// layout). [`check`](Self::check) accepts raw chunks only; compressed ones are checked
    /// with [`ExpectedChunk::verify_decoded`] or the parallel driver. With a table, the
    /// verifier holds each chunk's offset (8 bytes a chunk).
    ///
    /// # Errors
    ///
    /// Those of [`new`](Self::new), with a table's record count in place of
    /// `ceil(size / chunk_size)`; [`Error::InvalidStoredChunk`] for a record of length 0 or
    /// over the chunk size, records that do not add up to the image's size (reported at the
    /// last record), or a stored length that exceeds the chunk's length, or differs from it for
    /// a raw chunk.
    pub fn with_storage(
        expect: ImageExpectation<'a>,
        stored: &'a [StoredChunk],
    ) -> Result<Self, Error> {
        let chunk_size = chunk_size_usize(expect.chunk_size)?;
        let fixed = chunk_count(expect.size, expect.chunk_size).ok_or(Error::InvalidChunkSize {
            chunk_size: expect.chunk_size,
        })?;
        let total = if stored.is_empty() {
            fixed
        } else {
            len_u64(stored.len())
        };
        let found = len_u64(expect.chunk_digests.len());
        if found != total {
            return Err(Error::DigestCountMismatch {
                expected: total,
                found,
            });
        }
        let mut offsets = Vec::new();
        let mut at: u64 = 0;
        for (index, record) in (0u64..).zip(stored) {
            if record.len == 0 || record.len > expect.chunk_size {
                return Err(Error::InvalidStoredChunk { index });
            }
            offsets.push(at);
            at = at.saturating_add(u64::from(record.len));
        }
        if !stored.is_empty() && at != expect.size {
            return Err(Error::InvalidStoredChunk {
                index: total.saturating_sub(1),
            });
        }
        let verifier = Self {
            expect,
            stored,
            offsets,
            chunk_size,
            total,
            checked: 0,
            whole: Sha256::new(),
        };
        if !stored.is_empty() {
            for index in 0..total {
                let chunk = verifier
                    .expected_chunk(index)
                    .ok_or(Error::InvalidStoredChunk { index })?;
                let raw = chunk.encoding == ChunkEncoding::Raw;
                if chunk.stored_len > chunk.len || (raw && chunk.stored_len != chunk.len) {
                    return Err(Error::InvalidStoredChunk { index });
                }
            }
        }
        Ok(verifier)
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
        let (offset, len, encoding, stored_len) = if self.stored.is_empty() {
            // index < ceil(size / chunk_size), so offset < size: neither step can fail.
            let offset = index.checked_mul(u64::from(self.expect.chunk_size))?;
            let remaining = self.expect.size.checked_sub(offset)?;
            // A remainder that does not fit in usize is certainly longer than a chunk.
            let len =
                usize::try_from(remaining).map_or(self.chunk_size, |r| r.min(self.chunk_size));
            (offset, len, ChunkEncoding::Raw, len)
        } else {
            let i = usize::try_from(index).ok()?;
            let record = self.stored.get(i)?;
            (
                *self.offsets.get(i)?,
                usize::try_from(record.len).ok()?,
                record.encoding,
                usize::try_from(record.stored_len).ok()?,
            )
        };
        Some(ExpectedChunk {
            index,
            offset,
            len,
            stored_len,
            encoding,
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
