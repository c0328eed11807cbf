//! Reading a package prefix from a byte stream (FORMAT.md §7 steps 1 to 3).

use std::io::{self, Read};
use std::vec::Vec;

use crate::der_io::to_u64;
use crate::section::{MANIFEST, SIGNATURE_BLOCK};
use crate::{BlockLen, Error, HEADER_LEN, Header, SignatureBlock, signature_block_len};

/// Largest piece read (and allocated) at a time, so that a header that lies about a length
/// costs no more memory than the bytes that actually arrive.
const READ_PIECE: usize = 64 * 1024;

/// Everything before the payload, read from a stream and checked (the manifest not parsed: it
/// is parsed once the signatures over [`PackagePrefix::signed_message`] verify).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackagePrefix {
    /// The parsed header.
    pub header: Header,
    /// `header || manifest`: the bytes the signatures cover.
    pub signed_message: Vec<u8>,
    /// The parsed signature block.
    pub signature_block: SignatureBlock,
    /// The signature block's DER bytes.
    pub signature_block_der: Vec<u8>,
}

impl PackagePrefix {
    /// The manifest's DER bytes (not yet parsed nor authenticated).
    #[must_use]
    pub fn manifest_der(&self) -> &[u8] {
        self.signed_message.get(HEADER_LEN..).unwrap_or_default()
    }

    /// Offset of the first payload byte in the package (the number of bytes read).
    #[must_use]
    pub fn payload_offset(&self) -> u64 {
        to_u64(self.signed_message.len()).saturating_add(to_u64(self.signature_block_der.len()))
    }
}

/// Why [`read_prefix`] failed.
#[non_exhaustive]
#[derive(Debug)]
pub enum ReadError {
    /// The reader failed (other than by ending early).
    Io(io::Error),
    /// The bytes are not a valid package prefix, or the stream ended inside it
    /// ([`Error::Truncated`] naming the section).
    Format(Error),
}

impl core::fmt::Display for ReadError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Io(e) => write!(f, "I/O error while reading the package: {e}"),
            Self::Format(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for ReadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io(e) => Some(e),
            Self::Format(e) => Some(e),
        }
    }
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

impl From<Error> for ReadError {
    fn from(e: Error) -> Self {
        Self::Format(e)
    }
}

/// Reads until `buf` is full or the stream ends; returns how many bytes were read.
fn read_full<R: Read + ?Sized>(reader: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled: usize = 0;
    while let Some(rest) = buf.get_mut(filled..) {
        if rest.is_empty() {
            break;
        }
        match reader.read(rest) {
            Ok(0) => break,
            Ok(n) => filled = filled.saturating_add(n.min(rest.len())),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Appends exactly `len` bytes of `section` to `out`, growing it piece by piece. On a short
/// stream, reports `Truncated { section, needed, available }` where `available` counts the
/// `already` bytes of the section read before this call.
fn read_section<R: Read + ?Sized>(
    reader: &mut R,
    out: &mut Vec<u8>,
    len: usize,
    section: &'static str,
    needed: usize,
    already: usize,
) -> Result<(), ReadError> {
    let mut left = len;
    let mut piece = [0u8; 4096];
    while left > 0 {
        let want = left.min(READ_PIECE);
        out.try_reserve(want)
            .map_err(|_| io::Error::from(io::ErrorKind::OutOfMemory))?;
        let mut got_piece: usize = 0;
        while got_piece < want {
            let n = want.saturating_sub(got_piece).min(piece.len());
            let buf = piece.get_mut(..n).unwrap_or_default();
            let got = read_full(reader, buf)?;
            out.extend_from_slice(buf.get(..got).unwrap_or_default());
            got_piece = got_piece.saturating_add(got);
            if got < n {
                let read_so_far = already
                    .saturating_add(len.saturating_sub(left))
                    .saturating_add(got_piece);
                return Err(ReadError::Format(Error::Truncated {
                    section,
                    needed: to_u64(needed),
                    available: to_u64(read_so_far),
                }));
            }
        }
        left = left.saturating_sub(want);
    }
    Ok(())
}

/// Reads exactly the package prefix (header, manifest, signature block) from `reader` and
/// checks it as [`crate::PackageRef::parse`] does, leaving `reader` at the first payload byte.
///
/// Not a byte of payload is read. Memory grows with the bytes that actually arrive, in pieces
/// of at most 64 KiB, and only after the section's length was checked against its limit.
/// Reading is unbuffered (`read` calls of at most 4 KiB): wrap slow readers in a
/// [`std::io::BufReader`] only if reading past the prefix is acceptable.
///
/// # Errors
/// [`ReadError::Io`] if the reader fails; [`ReadError::Format`] with
/// [`Error::Truncated`] (naming the section) if the stream ends inside the prefix, or any error
/// of [`Header::parse`], [`signature_block_len`] and [`SignatureBlock::from_der`].
pub fn read_prefix<R: Read>(reader: &mut R) -> Result<PackagePrefix, ReadError> {
    let mut header_bytes = [0u8; HEADER_LEN];
    let got = read_full(reader, &mut header_bytes)?;
    let header = Header::parse(header_bytes.get(..got).unwrap_or_default())?;

    let manifest_len = usize::try_from(header.manifest_len).map_err(|_| Error::LimitExceeded {
        what: "manifest length",
        limit: u64::from(crate::limits::MAX_MANIFEST_LEN),
        found: u64::from(header.manifest_len),
    })?;
    let mut signed_message =
        Vec::with_capacity(HEADER_LEN.saturating_add(manifest_len.min(READ_PIECE)));
    signed_message.extend_from_slice(&header_bytes);
    read_section(
        reader,
        &mut signed_message,
        manifest_len,
        MANIFEST,
        manifest_len,
        0,
    )?;

    // The signature block: its tag and length first (at most 6 bytes), then the rest.
    let mut block_der = Vec::with_capacity(6);
    let total = loop {
        match signature_block_len(&block_der)? {
            BlockLen::Total(total) => break total,
            BlockLen::NeedMore(needed) => {
                let more = needed.saturating_sub(block_der.len());
                let have = block_der.len();
                read_section(reader, &mut block_der, more, SIGNATURE_BLOCK, needed, have)?;
            }
        }
    };
    let rest = total.saturating_sub(block_der.len());
    let have = block_der.len();
    read_section(reader, &mut block_der, rest, SIGNATURE_BLOCK, total, have)?;
    let signature_block = SignatureBlock::from_der(&block_der)?;

    Ok(PackagePrefix {
        header,
        signed_message,
        signature_block,
        signature_block_der: block_der,
    })
}
