//! The DER subset this format uses: a bounded TLV cursor over a borrowed slice and the matching
//! writer.
//!
//! Framing (tags and definite lengths) is parsed here so that every error carries the section
//! and the byte offset; primitive values (INTEGER, BOOLEAN, OBJECT IDENTIFIER) are decoded by
//! the `der` crate, whose decoders refuse non-canonical encodings.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

use der::Decode;

use crate::{Error, ObjectIdentifier};

pub(crate) const TAG_BOOLEAN: u8 = 0x01;
pub(crate) const TAG_INTEGER: u8 = 0x02;
pub(crate) const TAG_OCTET_STRING: u8 = 0x04;
pub(crate) const TAG_OID: u8 = 0x06;
pub(crate) const TAG_UTF8_STRING: u8 = 0x0C;
pub(crate) const TAG_SEQUENCE: u8 = 0x30;
/// `[0] IMPLICIT SEQUENCE OF ...`: context-specific, constructed, number 0.
pub(crate) const TAG_CONTEXT_0: u8 = 0xA0;
/// `[1] IMPLICIT OCTET STRING`: context-specific, primitive, number 1.
pub(crate) const TAG_CONTEXT_1: u8 = 0x81;
/// `[1] IMPLICIT SEQUENCE`: context-specific, constructed, number 1.
pub(crate) const TAG_CONTEXT_1_CONSTRUCTED: u8 = 0xA1;
/// `[2] IMPLICIT SEQUENCE`: context-specific, constructed, number 2.
pub(crate) const TAG_CONTEXT_2_CONSTRUCTED: u8 = 0xA2;

/// Widens a `usize` for error reports (saturating on hypothetical >64-bit targets).
pub(crate) fn to_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

fn tag_name(tag: u8) -> &'static str {
    match tag {
        TAG_BOOLEAN => "BOOLEAN",
        TAG_INTEGER => "INTEGER",
        TAG_OCTET_STRING => "OCTET STRING",
        TAG_OID => "OBJECT IDENTIFIER",
        TAG_UTF8_STRING => "UTF8String",
        TAG_SEQUENCE => "SEQUENCE",
        TAG_CONTEXT_0 => "[0] (constructed)",
        TAG_CONTEXT_1 => "[1] (primitive)",
        TAG_CONTEXT_1_CONSTRUCTED => "[1] (constructed)",
        TAG_CONTEXT_2_CONSTRUCTED => "[2] (constructed)",
        _ => "an unexpected tag",
    }
}

/// Outcome of decoding a TLV's tag and length from a prefix of its bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TlvHeader {
    /// The prefix is too short to decide: this many bytes (in total) are needed.
    NeedMore(usize),
    /// Tag byte, number of header bytes (tag + length), and the value length.
    Complete {
        tag: u8,
        header_len: usize,
        value_len: usize,
    },
}

/// Decodes a DER tag (low tag numbers only) and definite, minimal length (at most 4 length
/// octets after the initial one). On error, returns the offset in `prefix` and the reason.
pub(crate) fn decode_tlv_header(prefix: &[u8]) -> Result<TlvHeader, (usize, &'static str)> {
    let Some((&tag, rest)) = prefix.split_first() else {
        return Ok(TlvHeader::NeedMore(2));
    };
    if tag & 0x1F == 0x1F {
        return Err((
            0,
            "multi-byte (high tag number) tags are not used by this format",
        ));
    }
    let Some((&first, rest)) = rest.split_first() else {
        return Ok(TlvHeader::NeedMore(2));
    };
    if first < 0x80 {
        return Ok(TlvHeader::Complete {
            tag,
            header_len: 2,
            value_len: usize::from(first),
        });
    }
    if first == 0x80 {
        return Err((1, "indefinite length (BER) is not allowed in DER"));
    }
    let count = usize::from(first & 0x7F);
    if count > 4 {
        return Err((1, "length of more than 4 octets"));
    }
    let header_len = count.saturating_add(2);
    let Some(octets) = rest.get(..count) else {
        return Ok(TlvHeader::NeedMore(header_len));
    };
    let mut be = [0u8; 4];
    for (dst, src) in be.iter_mut().rev().zip(octets.iter().rev()) {
        *dst = *src;
    }
    let len = u32::from_be_bytes(be);
    // X.690 10.1: the minimum number of length octets. The short form covers 0..=127.
    let leading_zero = octets.first() == Some(&0);
    if len < 0x80 || leading_zero {
        return Err((
            1,
            "length not minimally encoded (DER requires the shortest form)",
        ));
    }
    let value_len = usize::try_from(len).map_err(|_| (1, "length does not fit in memory"))?;
    Ok(TlvHeader::Complete {
        tag,
        header_len,
        value_len,
    })
}

/// One decoded TLV, borrowed from the input.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Tlv<'a> {
    /// Section offset of the tag byte.
    pub(crate) offset: u64,
    /// Section offset of the first value byte.
    pub(crate) value_offset: u64,
    /// The value bytes.
    pub(crate) value: &'a [u8],
    /// The whole TLV.
    pub(crate) raw: &'a [u8],
}

impl<'a> Tlv<'a> {
    /// A cursor over this TLV's value (for constructed types).
    pub(crate) fn cursor(&self, section: &'static str) -> DerCursor<'a> {
        DerCursor {
            rest: self.value,
            offset: self.value_offset,
            section,
        }
    }
}

/// A bounded cursor over DER bytes of one section.
#[derive(Clone, Debug)]
pub(crate) struct DerCursor<'a> {
    rest: &'a [u8],
    /// Section offset of `rest[0]`.
    offset: u64,
    section: &'static str,
}

impl<'a> DerCursor<'a> {
    pub(crate) fn new(bytes: &'a [u8], section: &'static str) -> Self {
        Self {
            rest: bytes,
            offset: 0,
            section,
        }
    }

    pub(crate) fn malformed(&self, offset: u64, reason: String) -> Error {
        Error::Malformed {
            section: self.section,
            offset: Some(offset),
            reason,
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    pub(crate) fn peek_tag(&self) -> Option<u8> {
        self.rest.first().copied()
    }

    /// Reads the next TLV whatever its tag; it must lie entirely inside this cursor.
    pub(crate) fn read_any(&mut self, what: &dyn fmt::Display) -> Result<Tlv<'a>, Error> {
        if self.rest.is_empty() {
            return Err(self.malformed(
                self.offset,
                format!("expected {what}, found the end of its enclosing structure"),
            ));
        }
        match decode_tlv_header(self.rest) {
            Err((at, reason)) => Err(self.malformed(
                self.offset.saturating_add(to_u64(at)),
                format!("{what}: {reason}"),
            )),
            Ok(TlvHeader::NeedMore(_)) => Err(self.malformed(
                self.offset,
                format!("{what}: tag and length run past the end of the enclosing structure"),
            )),
            Ok(TlvHeader::Complete {
                header_len,
                value_len,
                ..
            }) => {
                let total = header_len.checked_add(value_len);
                let Some((raw, rest)) = total.and_then(|t| self.rest.split_at_checked(t)) else {
                    return Err(self.malformed(
                        self.offset,
                        format!(
                            "{what}: length {value_len} runs past the end of the enclosing \
                             structure ({} bytes left)",
                            self.rest.len().saturating_sub(header_len)
                        ),
                    ));
                };
                let value = raw.get(header_len..).unwrap_or_default();
                let tlv = Tlv {
                    offset: self.offset,
                    value_offset: self.offset.saturating_add(to_u64(header_len)),
                    value,
                    raw,
                };
                self.rest = rest;
                self.offset = self.offset.saturating_add(to_u64(raw.len()));
                Ok(tlv)
            }
        }
    }

    /// Reads the next TLV, which must have tag `tag`.
    pub(crate) fn read(&mut self, tag: u8, what: &dyn fmt::Display) -> Result<Tlv<'a>, Error> {
        if let Some(found) = self.peek_tag()
            && found != tag
        {
            return Err(self.malformed(
                self.offset,
                format!(
                    "expected {} for {what}, found tag 0x{found:02X} ({})",
                    tag_name(tag),
                    tag_name(found)
                ),
            ));
        }
        self.read_any(what)
    }

    /// Reads the next TLV if it has tag `tag`.
    pub(crate) fn read_optional(
        &mut self,
        tag: u8,
        what: &dyn fmt::Display,
    ) -> Result<Option<Tlv<'a>>, Error> {
        if self.peek_tag() == Some(tag) {
            self.read(tag, what).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Reads the outermost TLV of a section: the input must hold exactly this TLV. A length
    /// that runs past the input is `Truncated`, bytes after it are `TrailingData`.
    pub(crate) fn read_outer(
        bytes: &'a [u8],
        tag: u8,
        section: &'static str,
        what: &dyn fmt::Display,
    ) -> Result<Tlv<'a>, Error> {
        let available = to_u64(bytes.len());
        let truncated = |needed: usize| Error::Truncated {
            section,
            needed: to_u64(needed),
            available,
        };
        let mut cursor = DerCursor::new(bytes, section);
        if bytes.first().is_some_and(|&first| first != tag) {
            // A wrong tag says more than a length that does not fit: report it first.
            return Err(cursor
                .read(tag, what)
                .err()
                .unwrap_or_else(|| cursor.malformed(0, format!("expected {}", tag_name(tag)))));
        }
        match decode_tlv_header(bytes) {
            Ok(TlvHeader::NeedMore(needed)) => return Err(truncated(needed)),
            Ok(TlvHeader::Complete {
                header_len,
                value_len,
                ..
            }) => {
                let total = header_len.saturating_add(value_len);
                if total > bytes.len() {
                    return Err(truncated(total));
                }
            }
            Err(_) => {} // reported by `read` below, with its offset
        }
        let tlv = cursor.read(tag, what)?;
        if !cursor.is_empty() {
            return Err(Error::TrailingData {
                section,
                offset: cursor.offset,
            });
        }
        Ok(tlv)
    }

    /// Counts the TLVs left in this cursor, checking their framing, without allocating.
    pub(crate) fn count(&self, what: &dyn fmt::Display) -> Result<usize, Error> {
        let mut probe = self.clone();
        let mut n: usize = 0;
        while !probe.is_empty() {
            probe.read_any(what)?;
            n = n.saturating_add(1);
        }
        Ok(n)
    }

    /// Checks that nothing is left after the last expected field of `what`.
    pub(crate) fn finish(&self, what: &dyn fmt::Display) -> Result<(), Error> {
        match self.peek_tag() {
            None => Ok(()),
            Some(tag) => Err(self.malformed(
                self.offset,
                format!("unexpected field (tag 0x{tag:02X}) after the last field of {what}"),
            )),
        }
    }
}

fn der_error(
    section: &'static str,
    tlv: &Tlv<'_>,
    what: &dyn fmt::Display,
    e: der::Error,
) -> Error {
    let at = e
        .position()
        .map(|p| tlv.offset.saturating_add(u64::from(u32::from(p))))
        .unwrap_or(tlv.offset);
    Error::Malformed {
        section,
        offset: Some(at),
        reason: format!("{what}: {}", e.kind()),
    }
}

/// Decodes a non-negative INTEGER that fits in a `u64` (canonical DER only).
pub(crate) fn decode_u64(
    section: &'static str,
    tlv: &Tlv<'_>,
    what: &dyn fmt::Display,
) -> Result<u64, Error> {
    if tlv.value.first().is_some_and(|b| b & 0x80 != 0) {
        return Err(Error::Malformed {
            section,
            offset: Some(tlv.value_offset),
            reason: format!("{what} is a negative INTEGER"),
        });
    }
    u64::from_der(tlv.raw).map_err(|e| der_error(section, tlv, what, e))
}

/// Decodes a DER BOOLEAN (`00` or `FF` only).
pub(crate) fn decode_bool(
    section: &'static str,
    tlv: &Tlv<'_>,
    what: &dyn fmt::Display,
) -> Result<bool, Error> {
    bool::from_der(tlv.raw).map_err(|e| der_error(section, tlv, what, e))
}

/// Whether an OID's content octets use the shortest form for every sub-identifier (X.690
/// 8.19.2: no leading `0x80` octet).
pub(crate) fn oid_is_canonical(content: &[u8]) -> bool {
    let mut at_start = true;
    for &byte in content {
        if at_start && byte == 0x80 {
            return false;
        }
        at_start = byte & 0x80 == 0;
    }
    at_start && !content.is_empty()
}

/// Decodes an OBJECT IDENTIFIER (canonical DER only).
pub(crate) fn decode_oid(
    section: &'static str,
    tlv: &Tlv<'_>,
    what: &dyn fmt::Display,
) -> Result<ObjectIdentifier, Error> {
    if !oid_is_canonical(tlv.value) {
        return Err(Error::Malformed {
            section,
            offset: Some(tlv.value_offset),
            reason: format!("{what}: OBJECT IDENTIFIER not in canonical (shortest) form"),
        });
    }
    ObjectIdentifier::from_der(tlv.raw).map_err(|e| der_error(section, tlv, what, e))
}

/// Decodes a UTF8String's value (length limits are checked by the caller first).
pub(crate) fn decode_utf8(
    section: &'static str,
    tlv: &Tlv<'_>,
    what: &dyn fmt::Display,
) -> Result<String, Error> {
    core::str::from_utf8(tlv.value)
        .map(ToString::to_string)
        .map_err(|e| Error::Malformed {
            section,
            offset: Some(tlv.value_offset.saturating_add(to_u64(e.valid_up_to()))),
            reason: format!("{what} is not valid UTF-8"),
        })
}

// ---------------------------------------------------------------------------------------------
// Writer

/// Appends a tag and a minimal definite length.
pub(crate) fn push_header(out: &mut Vec<u8>, tag: u8, len: usize) {
    out.push(tag);
    if let Ok(short) = u8::try_from(len)
        && short < 0x80
    {
        out.push(short);
        return;
    }
    let bytes = len.to_be_bytes();
    let significant: Vec<u8> = bytes.iter().copied().skip_while(|&b| b == 0).collect();
    let count = u8::try_from(significant.len()).unwrap_or(0);
    out.push(0x80 | count);
    out.extend_from_slice(&significant);
}

/// Appends a whole TLV.
pub(crate) fn push_tlv(out: &mut Vec<u8>, tag: u8, value: &[u8]) {
    push_header(out, tag, value.len());
    out.extend_from_slice(value);
}

/// Appends a non-negative INTEGER in its minimal two's complement form.
pub(crate) fn push_u64(out: &mut Vec<u8>, value: u64) {
    let bytes = value.to_be_bytes();
    let mut significant: Vec<u8> = bytes.iter().copied().skip_while(|&b| b == 0).collect();
    if significant.first().is_none_or(|&b| b & 0x80 != 0) {
        significant.insert(0, 0);
    }
    push_tlv(out, TAG_INTEGER, &significant);
}

/// Appends a BOOLEAN.
pub(crate) fn push_bool(out: &mut Vec<u8>, value: bool) {
    push_tlv(out, TAG_BOOLEAN, &[if value { 0xFF } else { 0x00 }]);
}

/// Appends an OBJECT IDENTIFIER.
pub(crate) fn push_oid(out: &mut Vec<u8>, oid: &ObjectIdentifier) {
    push_tlv(out, TAG_OID, oid.as_bytes());
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]
mod tests {
    use super::*;
    use der::Encode;

    #[test]
    fn integer_encoding_matches_der_crate() {
        for v in [
            0u64,
            1,
            0x7F,
            0x80,
            0xFF,
            0x100,
            0x7FFF_FFFF,
            u64::MAX / 2,
            u64::MAX,
        ] {
            let mut ours = Vec::new();
            push_u64(&mut ours, v);
            assert_eq!(ours, v.to_der().unwrap(), "value {v}");
        }
    }

    #[test]
    fn length_encoding_matches_der_crate() {
        for len in [0usize, 1, 127, 128, 255, 256, 65_535, 65_536, 16 << 20] {
            let mut ours = Vec::new();
            push_header(&mut ours, TAG_OCTET_STRING, len);
            let theirs =
                der::Header::new(der::Tag::OctetString, der::Length::try_from(len).unwrap())
                    .to_der()
                    .unwrap();
            assert_eq!(ours, theirs, "len {len}");
            let decoded = decode_tlv_header(&ours).unwrap();
            assert_eq!(
                decoded,
                TlvHeader::Complete {
                    tag: TAG_OCTET_STRING,
                    header_len: ours.len(),
                    value_len: len
                }
            );
        }
    }

    #[test]
    fn rejects_non_minimal_and_indefinite_lengths() {
        assert!(decode_tlv_header(&[0x30, 0x80]).is_err());
        assert!(decode_tlv_header(&[0x30, 0x81, 0x05]).is_err());
        assert!(decode_tlv_header(&[0x30, 0x82, 0x00, 0xFF]).is_err());
        assert!(decode_tlv_header(&[0x30, 0x85, 1, 1, 1, 1, 1]).is_err());
        assert!(decode_tlv_header(&[0x1F, 0x01]).is_err());
        assert_eq!(
            decode_tlv_header(&[0x30, 0x82, 0x01]),
            Ok(TlvHeader::NeedMore(4))
        );
    }

    #[test]
    fn oid_canonical_form() {
        assert!(oid_is_canonical(&[0x2A, 0x86, 0x48]));
        assert!(!oid_is_canonical(&[0x2A, 0x80, 0x01]));
        assert!(!oid_is_canonical(&[0x2A, 0x86]));
        assert!(!oid_is_canonical(&[]));
    }
}
