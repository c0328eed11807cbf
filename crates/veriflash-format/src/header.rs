//! The 32-byte fixed header (FORMAT.md §2).

use alloc::format;

use crate::Error;
use crate::der_io::to_u64;
use crate::limits::{MAX_MANIFEST_LEN, MAX_PAYLOAD_LEN};
use crate::section::HEADER;

/// The 8 magic bytes that start every package: `\x89VFPK\r\n\x1a`.
///
/// The high first byte, CR LF and SUB make a text-mangling transfer fail on the first 8 bytes.
pub const MAGIC: [u8; 8] = [0x89, b'V', b'F', b'P', b'K', b'\r', b'\n', 0x1A];

/// Length of the fixed header in bytes.
pub const HEADER_LEN: usize = 32;

/// The package format version of packages whose chunks are all stored raw; this crate reads
/// and writes it, and [`Header::new`] makes it.
pub const FORMAT_VERSION: u16 = 1;

/// The package format version of packages with compressed chunks (a version-2 manifest,
/// FORMAT.md §3.1); this crate reads and writes it too.
pub const FORMAT_VERSION_COMPRESSED: u16 = 2;

/// The package format version of packages with content-defined (variable-length) chunks (a
/// version-3 manifest, FORMAT.md §3.3); this crate reads and writes it too. A reader of
/// versions 1 and 2 refuses it (`UnsupportedVersion`): it could not find those chunks.
pub const FORMAT_VERSION_VARIABLE_CHUNKS: u16 = 3;

/// The package format version of delta packages (a version-4 manifest, FORMAT.md §3.4): some
/// chunks are copied from, or patched against, the image the device runs. A reader of versions
/// 1 to 3 refuses it (`UnsupportedVersion`): it could not rebuild those chunks.
pub const FORMAT_VERSION_DELTA: u16 = 4;

/// Whether this crate reads packages of format version `version`.
fn supported(version: u16) -> bool {
    matches!(
        version,
        FORMAT_VERSION
            | FORMAT_VERSION_COMPRESSED
            | FORMAT_VERSION_VARIABLE_CHUNKS
            | FORMAT_VERSION_DELTA
    )
}

/// `HEADER_LEN` as stored in the header's `header_len` field.
const HEADER_LEN_FIELD: u16 = 32;

const OFFSET_VERSION: usize = 8;
const OFFSET_HEADER_LEN: usize = 10;
const OFFSET_FLAGS: usize = 12;
const OFFSET_MANIFEST_LEN: usize = 16;
const OFFSET_RESERVED: usize = 20;
const OFFSET_PAYLOAD_LEN: usize = 24;

/// The fixed header: what the rest of the package is, and how long its parts are.
///
/// The magic, `header_len` and `reserved` fields are constants in version 1 and so are not
/// stored here; [`Header::to_bytes`] writes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Format version: [`FORMAT_VERSION`], or [`FORMAT_VERSION_COMPRESSED`] when the manifest
    /// has chunk tables.
    pub format_version: u16,
    /// Flags; none is defined in version 1, so `0`.
    pub flags: u32,
    /// Length of the DER manifest that follows the header, `1..=MAX_MANIFEST_LEN`.
    pub manifest_len: u32,
    /// Length of the payload, `1..=MAX_PAYLOAD_LEN`; the sum of the image sizes.
    pub payload_len: u64,
}

/// Reads `N` bytes at `at` from the header (zeros if out of range, which the callers' constant
/// offsets never are).
fn field<const N: usize>(bytes: &[u8; HEADER_LEN], at: usize) -> [u8; N] {
    bytes
        .get(at..at.saturating_add(N))
        .and_then(|s| <[u8; N]>::try_from(s).ok())
        .unwrap_or([0; N])
}

impl Header {
    /// A version-1 header with no flags for a manifest of `manifest_len` bytes and a payload of
    /// `payload_len` bytes.
    #[must_use]
    pub fn new(manifest_len: u32, payload_len: u64) -> Self {
        Self {
            format_version: FORMAT_VERSION,
            flags: 0,
            manifest_len,
            payload_len,
        }
    }

    /// Parses and checks a header: `bytes` must be exactly [`HEADER_LEN`] bytes.
    ///
    /// # Errors
    /// [`Error::BadMagic`] if `bytes` does not start with (a prefix of) [`MAGIC`], then
    /// [`Error::Truncated`] if `bytes` is shorter, [`Error::TrailingData`] if longer,
    /// [`Error::UnsupportedVersion`], [`Error::Malformed`] (wrong
    /// `header_len`, non-zero `reserved`, a zero length), [`Error::UnknownFlags`], and
    /// [`Error::LimitExceeded`] for a length beyond [`crate::limits`].
    ///
    /// ```
    /// use veriflash_format::{Error, Header};
    ///
    /// let mut bytes = Header::new(100, 4096).to_bytes();
    /// assert_eq!(Header::parse(&bytes)?, Header::new(100, 4096));
    /// bytes[12] = 0x80; // a flag bit
    /// assert_eq!(Header::parse(&bytes), Err(Error::UnknownFlags { flags: 0x8000_0000 }));
    /// # Ok::<(), Error>(())
    /// ```
    pub fn parse(bytes: &[u8]) -> Result<Header, Error> {
        // Input that contradicts the magic is not a package at all, whatever its length.
        if !MAGIC.starts_with(bytes.get(..MAGIC.len()).unwrap_or(bytes)) {
            return Err(Error::BadMagic);
        }
        let Some((bytes, rest)) = bytes.split_first_chunk::<HEADER_LEN>() else {
            return Err(Error::Truncated {
                section: HEADER,
                needed: to_u64(HEADER_LEN),
                available: to_u64(bytes.len()),
            });
        };
        if !rest.is_empty() {
            return Err(Error::TrailingData {
                section: HEADER,
                offset: to_u64(HEADER_LEN),
            });
        }
        let format_version = u16::from_be_bytes(field(bytes, OFFSET_VERSION));
        if !supported(format_version) {
            return Err(Error::UnsupportedVersion {
                found: format_version,
            });
        }
        let header_len = u16::from_be_bytes(field(bytes, OFFSET_HEADER_LEN));
        if header_len != HEADER_LEN_FIELD {
            return Err(Error::Malformed {
                section: HEADER,
                offset: Some(to_u64(OFFSET_HEADER_LEN)),
                reason: format!("header_len is {header_len}, expected {HEADER_LEN_FIELD}"),
            });
        }
        let reserved = u32::from_be_bytes(field(bytes, OFFSET_RESERVED));
        if reserved != 0 {
            return Err(Error::Malformed {
                section: HEADER,
                offset: Some(to_u64(OFFSET_RESERVED)),
                reason: format!("reserved field is 0x{reserved:08x}, must be 0"),
            });
        }
        let header = Header {
            format_version,
            flags: u32::from_be_bytes(field(bytes, OFFSET_FLAGS)),
            manifest_len: u32::from_be_bytes(field(bytes, OFFSET_MANIFEST_LEN)),
            payload_len: u64::from_be_bytes(field(bytes, OFFSET_PAYLOAD_LEN)),
        };
        header.validate()?;
        Ok(header)
    }

    /// Checks the fields against FORMAT.md §2 and the limits.
    ///
    /// # Errors
    /// [`Error::UnsupportedVersion`], [`Error::UnknownFlags`], [`Error::Malformed`] for a zero
    /// length, [`Error::LimitExceeded`] for a length beyond [`crate::limits`].
    pub fn validate(&self) -> Result<(), Error> {
        if !supported(self.format_version) {
            return Err(Error::UnsupportedVersion {
                found: self.format_version,
            });
        }
        if self.flags != 0 {
            return Err(Error::UnknownFlags { flags: self.flags });
        }
        if self.manifest_len == 0 {
            return Err(Error::Malformed {
                section: HEADER,
                offset: Some(to_u64(OFFSET_MANIFEST_LEN)),
                reason: "manifest_len is 0; every package has a manifest".into(),
            });
        }
        if self.manifest_len > MAX_MANIFEST_LEN {
            return Err(Error::LimitExceeded {
                what: "manifest length",
                limit: u64::from(MAX_MANIFEST_LEN),
                found: u64::from(self.manifest_len),
            });
        }
        if self.payload_len == 0 {
            return Err(Error::Malformed {
                section: HEADER,
                offset: Some(to_u64(OFFSET_PAYLOAD_LEN)),
                reason: "payload_len is 0; every package has at least one non-empty image".into(),
            });
        }
        if self.payload_len > MAX_PAYLOAD_LEN {
            return Err(Error::LimitExceeded {
                what: "payload length",
                limit: MAX_PAYLOAD_LEN,
                found: self.payload_len,
            });
        }
        Ok(())
    }

    /// The 32 header bytes, big-endian, with the constant fields (magic, `header_len`,
    /// `reserved`) filled in.
    ///
    /// This writes the fields as they are; a header that fails [`Header::validate`] gives bytes
    /// that [`Header::parse`] refuses.
    #[must_use]
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let version = self.format_version.to_be_bytes();
        let header_len = HEADER_LEN_FIELD.to_be_bytes();
        let flags = self.flags.to_be_bytes();
        let manifest_len = self.manifest_len.to_be_bytes();
        let reserved = 0u32.to_be_bytes();
        let payload_len = self.payload_len.to_be_bytes();
        let parts: [&[u8]; 7] = [
            &MAGIC,
            &version,
            &header_len,
            &flags,
            &manifest_len,
            &reserved,
            &payload_len,
        ];
        let mut out = [0u8; HEADER_LEN];
        for (dst, src) in out.iter_mut().zip(parts.iter().flat_map(|p| p.iter())) {
            *dst = *src;
        }
        out
    }

    /// Offset of the first payload byte for a signature block of `signature_block_len` bytes:
    /// `32 + manifest_len + signature_block_len`.
    #[must_use]
    pub fn payload_offset(&self, signature_block_len: usize) -> u64 {
        to_u64(HEADER_LEN)
            .saturating_add(u64::from(self.manifest_len))
            .saturating_add(to_u64(signature_block_len))
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]
mod tests {
    use super::*;

    fn sample() -> Header {
        Header::new(1234, 5_000_000)
    }

    #[test]
    fn round_trips_a_header() {
        let h = sample();
        let bytes = h.to_bytes();
        assert_eq!(&bytes[..8], &MAGIC);
        assert_eq!(Header::parse(&bytes).unwrap(), h);
    }

    #[test]
    fn header_layout_is_big_endian_at_the_documented_offsets() {
        let bytes = Header::new(0x0102_0304, 0x0000_00AA_BBCC_DDEE).to_bytes();
        assert_eq!(
            bytes,
            [
                0x89, 0x56, 0x46, 0x50, 0x4B, 0x0D, 0x0A, 0x1A, // magic
                0x00, 0x01, // format_version
                0x00, 0x20, // header_len
                0x00, 0x00, 0x00, 0x00, // flags
                0x01, 0x02, 0x03, 0x04, // manifest_len
                0x00, 0x00, 0x00, 0x00, // reserved
                0x00, 0x00, 0x00, 0xAA, 0xBB, 0xCC, 0xDD, 0xEE, // payload_len
            ]
        );
    }

    #[test]
    fn rejects_short_header_as_truncated() {
        let bytes = sample().to_bytes();
        for len in 0..HEADER_LEN {
            assert_eq!(
                Header::parse(&bytes[..len]),
                Err(Error::Truncated {
                    section: HEADER,
                    needed: 32,
                    available: len as u64
                })
            );
        }
    }

    #[test]
    fn short_input_that_is_not_a_package_is_bad_magic() {
        assert_eq!(Header::parse(b"hello"), Err(Error::BadMagic));
        assert_eq!(
            Header::parse(b"{\"json\": true, \"padding\": \"..........\"}"),
            Err(Error::BadMagic)
        );
    }

    #[test]
    fn rejects_header_with_extra_bytes() {
        let mut bytes = sample().to_bytes().to_vec();
        bytes.push(0);
        assert_eq!(
            Header::parse(&bytes),
            Err(Error::TrailingData {
                section: HEADER,
                offset: 32
            })
        );
    }

    #[test]
    fn rejects_header_with_bad_magic() {
        for i in 0..8 {
            let mut bytes = sample().to_bytes();
            bytes[i] ^= 0x20;
            assert_eq!(Header::parse(&bytes), Err(Error::BadMagic));
        }
        // newline conversion CR LF -> LF
        let mut bytes = sample().to_bytes().to_vec();
        bytes.remove(5);
        bytes.push(0);
        assert_eq!(Header::parse(&bytes), Err(Error::BadMagic));
    }

    #[test]
    fn rejects_header_with_unsupported_version() {
        let mut bytes = sample().to_bytes();
        bytes[9] = 5;
        assert_eq!(
            Header::parse(&bytes),
            Err(Error::UnsupportedVersion { found: 5 })
        );
        bytes[9] = 0;
        assert_eq!(
            Header::parse(&bytes),
            Err(Error::UnsupportedVersion { found: 0 })
        );
        // Version 2 (compressed chunks) is read.
        bytes[9] = 2;
        assert_eq!(Header::parse(&bytes).unwrap().format_version, 2);
    }

    #[test]
    fn rejects_header_with_wrong_header_len() {
        let mut bytes = sample().to_bytes();
        bytes[11] = 33;
        assert!(matches!(
            Header::parse(&bytes),
            Err(Error::Malformed {
                section: HEADER,
                offset: Some(10),
                ..
            })
        ));
    }

    #[test]
    fn rejects_header_with_unknown_flags() {
        let mut bytes = sample().to_bytes();
        bytes[15] = 1;
        assert_eq!(Header::parse(&bytes), Err(Error::UnknownFlags { flags: 1 }));
    }

    #[test]
    fn rejects_header_with_nonzero_reserved() {
        let mut bytes = sample().to_bytes();
        bytes[23] = 1;
        assert!(matches!(
            Header::parse(&bytes),
            Err(Error::Malformed {
                offset: Some(20),
                ..
            })
        ));
    }

    #[test]
    fn rejects_header_with_zero_lengths() {
        assert!(matches!(
            Header::parse(&Header::new(0, 1).to_bytes()),
            Err(Error::Malformed {
                offset: Some(16),
                ..
            })
        ));
        assert!(matches!(
            Header::parse(&Header::new(1, 0).to_bytes()),
            Err(Error::Malformed {
                offset: Some(24),
                ..
            })
        ));
    }

    #[test]
    fn rejects_header_with_lengths_over_the_limits() {
        assert_eq!(
            Header::parse(&Header::new(MAX_MANIFEST_LEN + 1, 1).to_bytes()),
            Err(Error::LimitExceeded {
                what: "manifest length",
                limit: u64::from(MAX_MANIFEST_LEN),
                found: u64::from(MAX_MANIFEST_LEN) + 1
            })
        );
        assert!(Header::parse(&Header::new(MAX_MANIFEST_LEN, MAX_PAYLOAD_LEN).to_bytes()).is_ok());
        assert!(matches!(
            Header::parse(&Header::new(1, MAX_PAYLOAD_LEN + 1).to_bytes()),
            Err(Error::LimitExceeded {
                what: "payload length",
                ..
            })
        ));
    }

    #[test]
    fn every_byte_flip_is_refused_or_gives_a_different_valid_header() {
        let h = sample();
        let bytes = h.to_bytes();
        for i in 0..HEADER_LEN {
            for mask in [1u8, 2, 4, 8, 16, 32, 64, 128, 0xFF] {
                let mut flipped = bytes;
                flipped[i] ^= mask;
                match Header::parse(&flipped) {
                    Err(_) => {}
                    Ok(other) => {
                        assert_ne!(
                            other, h,
                            "byte {i} mask {mask:#x} parsed to the same header"
                        );
                        // A length, or the version (1 to 4: the manifest's own version must
                        // then agree, and the signatures cover the header).
                        assert!(
                            (16..20).contains(&i) || (24..32).contains(&i) || i == 9,
                            "byte {i} is not a length or version field but its flip was accepted"
                        );
                        assert_eq!(other.to_bytes(), flipped);
                    }
                }
            }
        }
    }
}
