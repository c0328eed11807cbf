//! Readers and helpers shared by the integration tests.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{self, Read};

use veriflash_hash::{Digest, ImageDigests, ImageExpectation};

/// Parses a 64-digit hex digest.
pub(crate) fn hex_digest(hex: &str) -> Digest {
    assert_eq!(hex.len(), 64, "digest must be 64 hex digits: {hex}");
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap();
    }
    out
}

/// The expectation a packer would sign for `digests`.
pub(crate) fn expectation(digests: &ImageDigests, chunk_size: u32) -> ImageExpectation<'_> {
    ImageExpectation {
        size: digests.size,
        chunk_size,
        digest: &digests.digest,
        chunk_digests: &digests.chunk_digests,
    }
}

/// Deterministic test image with no period shorter than the image (so all chunks differ).
pub(crate) fn image(len: usize) -> Vec<u8> {
    let mut state: u32 = 0x9e37_79b9;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state.to_le_bytes()[0]
        })
        .collect()
}

/// Returns at most one byte per `read` call: the shortest reads a `Read` may legally do.
pub(crate) struct OneByteReader<R>(pub(crate) R);

impl<R: Read> Read for OneByteReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let len = buf.len().min(1);
        self.0.read(&mut buf[..len])
    }
}

/// Fails every other `read` call with `Interrupted`, and returns short reads otherwise.
pub(crate) struct InterruptingReader<R> {
    pub(crate) inner: R,
    pub(crate) interrupt_next: bool,
}

impl<R> InterruptingReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        Self {
            inner,
            interrupt_next: true,
        }
    }
}

impl<R: Read> Read for InterruptingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.interrupt_next = !self.interrupt_next;
        if !self.interrupt_next {
            return Err(io::Error::from(io::ErrorKind::Interrupted));
        }
        let len = buf.len().min(777);
        self.inner.read(&mut buf[..len])
    }
}

/// Generates `len` bytes of a fixed pattern on the fly, without holding the stream in memory.
/// The pattern period is a prime (65 521 bytes), so chunks of a power-of-two size all differ.
pub(crate) struct GeneratorReader {
    pattern: Vec<u8>,
    pos: u64,
    len: u64,
}

impl GeneratorReader {
    pub(crate) fn new(len: u64) -> Self {
        Self {
            pattern: image(65_521),
            pos: 0,
            len,
        }
    }

    /// Bytes handed out so far.
    pub(crate) fn position(&self) -> u64 {
        self.pos
    }
}

impl Read for GeneratorReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let period = self.pattern.len() as u64;
        let start = usize::try_from(self.pos % period).unwrap();
        let left = usize::try_from(self.len - self.pos).unwrap_or(usize::MAX);
        let n = buf.len().min(left).min(self.pattern.len() - start);
        buf[..n].copy_from_slice(&self.pattern[start..start + n]);
        self.pos += n as u64;
        Ok(n)
    }
}
