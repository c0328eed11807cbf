//! The DER signature block (FORMAT.md §4).

use alloc::format;
use alloc::vec::Vec;

use crate::der_io::{
    DerCursor, TAG_CONTEXT_0, TAG_OCTET_STRING, TAG_OID, TAG_SEQUENCE, TlvHeader, decode_oid,
    decode_tlv_header, oid_is_canonical, push_oid, push_tlv, to_u64,
};
use crate::limits::{MAX_CERTIFICATES, MAX_SIGNATURE_BLOCK_LEN, MAX_SIGNATURE_LEN, MAX_SIGNATURES};
use crate::section::SIGNATURE_BLOCK;
use crate::{DIGEST_LEN, Error, ObjectIdentifier};

/// The signatures over the signed message (`header || manifest`), 1 to [`MAX_SIGNATURES`].
///
/// The format does not interpret them: algorithms, keys and certificates are the verifier's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignatureBlock {
    /// The signatures, in the order they were attached.
    pub entries: Vec<SignatureEntry>,
}

/// One signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignatureEntry {
    /// Signature algorithm (FORMAT.md §4 lists the ones a verifier may support).
    pub algorithm: ObjectIdentifier,
    /// SHA-256 of the DER `SubjectPublicKeyInfo` of the signing key. Selects a key; never
    /// trusted on its own.
    pub key_id: [u8; DIGEST_LEN],
    /// The signature value (1 to [`MAX_SIGNATURE_LEN`] bytes).
    pub signature: Vec<u8>,
    /// The signer's X.509 chain, leaf first: each one whole DER `SEQUENCE` (a certificate),
    /// at most [`MAX_CERTIFICATES`]. Empty means the field is absent.
    pub certificates: Vec<Vec<u8>>,
}

/// How long a signature block is, from its first bytes (FORMAT.md §7 step 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockLen {
    /// The prefix is too short to tell: this many bytes (in total, from the block's first
    /// byte) are needed. Never more than 6.
    NeedMore(usize),
    /// The whole block's length, tag and length octets included.
    Total(usize),
}

/// Decodes the signature block's tag (`0x30`) and DER definite length from its first bytes, so
/// a streaming reader knows how much to read, and checks the total against
/// [`MAX_SIGNATURE_BLOCK_LEN`] before anything is allocated.
///
/// # Errors
/// [`Error::Malformed`] for another tag or a non-DER length (indefinite, not minimal, more than
/// 4 length octets), [`Error::LimitExceeded`] for a block longer than
/// [`MAX_SIGNATURE_BLOCK_LEN`].
///
/// ```
/// use veriflash_format::{BlockLen, signature_block_len};
///
/// assert_eq!(signature_block_len(&[0x30])?, BlockLen::NeedMore(2));
/// assert_eq!(signature_block_len(&[0x30, 0x82, 0x01])?, BlockLen::NeedMore(4));
/// assert_eq!(signature_block_len(&[0x30, 0x82, 0x01, 0x00])?, BlockLen::Total(260));
/// assert!(signature_block_len(&[0x31, 0x00]).is_err());
/// # Ok::<(), veriflash_format::Error>(())
/// ```
pub fn signature_block_len(prefix: &[u8]) -> Result<BlockLen, Error> {
    if let Some(&tag) = prefix.first()
        && tag != TAG_SEQUENCE
    {
        return Err(Error::Malformed {
            section: SIGNATURE_BLOCK,
            offset: Some(0),
            reason: format!("expected a SEQUENCE (tag 0x30), found tag 0x{tag:02X}"),
        });
    }
    match decode_tlv_header(prefix) {
        Err((at, reason)) => Err(Error::Malformed {
            section: SIGNATURE_BLOCK,
            offset: Some(to_u64(at)),
            reason: reason.into(),
        }),
        Ok(TlvHeader::NeedMore(n)) => Ok(BlockLen::NeedMore(n)),
        Ok(TlvHeader::Complete {
            header_len,
            value_len,
            ..
        }) => {
            let total = to_u64(header_len).saturating_add(to_u64(value_len));
            match usize::try_from(total) {
                Ok(total) if total <= MAX_SIGNATURE_BLOCK_LEN => Ok(BlockLen::Total(total)),
                _ => Err(Error::LimitExceeded {
                    what: "signature block length",
                    limit: to_u64(MAX_SIGNATURE_BLOCK_LEN),
                    found: total,
                }),
            }
        }
    }
}

fn invalid(field: core::fmt::Arguments<'_>, reason: alloc::string::String) -> Error {
    Error::InvalidField {
        section: SIGNATURE_BLOCK,
        field: format!("{field}"),
        reason,
    }
}

fn check_count(count: usize) -> Result<(), Error> {
    if count == 0 {
        return Err(Error::InvalidField {
            section: SIGNATURE_BLOCK,
            field: "entries".into(),
            reason: "is empty; a package carries at least one signature".into(),
        });
    }
    if count > MAX_SIGNATURES {
        return Err(Error::LimitExceeded {
            what: "number of signatures",
            limit: to_u64(MAX_SIGNATURES),
            found: to_u64(count),
        });
    }
    Ok(())
}

fn check_signature_len(index: usize, len: usize) -> Result<(), Error> {
    if len == 0 {
        return Err(invalid(
            format_args!("signature #{index}"),
            "is empty".into(),
        ));
    }
    if len > MAX_SIGNATURE_LEN {
        return Err(Error::LimitExceeded {
            what: "signature length",
            limit: to_u64(MAX_SIGNATURE_LEN),
            found: to_u64(len),
        });
    }
    Ok(())
}

fn check_certificate_count(count: usize) -> Result<(), Error> {
    if count > MAX_CERTIFICATES {
        return Err(Error::LimitExceeded {
            what: "number of certificates",
            limit: to_u64(MAX_CERTIFICATES),
            found: to_u64(count),
        });
    }
    Ok(())
}

impl SignatureEntry {
    /// Checks this entry against FORMAT.md §4 and the limits (`index` names it in errors).
    fn validate_at(&self, index: usize) -> Result<(), Error> {
        if !oid_is_canonical(self.algorithm.as_bytes()) {
            return Err(invalid(
                format_args!("signature #{index} algorithm"),
                "is not in canonical (shortest) DER form".into(),
            ));
        }
        check_signature_len(index, self.signature.len())?;
        check_certificate_count(self.certificates.len())?;
        for (c, cert) in self.certificates.iter().enumerate() {
            let what = "certificate";
            DerCursor::read_outer(cert, TAG_SEQUENCE, SIGNATURE_BLOCK, &what).map_err(|e| {
                invalid(
                    format_args!("signature #{index} certificate #{c}"),
                    match e {
                        Error::Truncated { .. } => "is not one DER SEQUENCE: its length runs \
                                                   past its end"
                            .into(),
                        Error::TrailingData { offset, .. } => {
                            format!("is not one DER SEQUENCE: extra bytes from byte {offset}")
                        }
                        Error::Malformed { reason, .. } => {
                            format!("is not one DER SEQUENCE: {reason}")
                        }
                        other => format!("is not one DER SEQUENCE: {other}"),
                    },
                )
            })?;
        }
        Ok(())
    }
}

impl SignatureBlock {
    /// Checks the block against FORMAT.md §4 and the limits (except the encoded length, which
    /// [`SignatureBlock::to_der`] checks).
    ///
    /// # Errors
    /// [`Error::InvalidField`] or [`Error::LimitExceeded`] naming the first broken rule.
    pub fn validate(&self) -> Result<(), Error> {
        check_count(self.entries.len())?;
        for (i, entry) in self.entries.iter().enumerate() {
            entry.validate_at(i)?;
        }
        Ok(())
    }

    /// Parses a signature block: exactly one DER `SignatureBlock`, no trailing bytes.
    ///
    /// # Errors
    /// [`Error::LimitExceeded`] if `der` is longer than [`MAX_SIGNATURE_BLOCK_LEN`] or a count
    /// or length is over its limit; [`Error::Truncated`] if the outer SEQUENCE runs past `der`;
    /// [`Error::TrailingData`] after it; [`Error::Malformed`] (with the offset) for any DER
    /// problem; [`Error::InvalidField`] for a rule of §4 (no signature, a key id that is not 32
    /// bytes, an empty signature, a certificate that is not a SEQUENCE).
    pub fn from_der(der: &[u8]) -> Result<Self, Error> {
        if der.len() > MAX_SIGNATURE_BLOCK_LEN {
            return Err(Error::LimitExceeded {
                what: "signature block length",
                limit: to_u64(MAX_SIGNATURE_BLOCK_LEN),
                found: to_u64(der.len()),
            });
        }
        let outer = DerCursor::read_outer(der, TAG_SEQUENCE, SIGNATURE_BLOCK, &"SignatureBlock")?;
        let mut r = outer.cursor(SIGNATURE_BLOCK);
        let count = r.count(&"signature")?;
        check_count(count)?;
        let mut entries = Vec::with_capacity(count);
        for i in 0..count {
            entries.push(read_entry(&mut r, i)?);
        }
        let block = SignatureBlock { entries };
        block.validate()?;
        Ok(block)
    }

    /// Writes the block as DER, after [`SignatureBlock::validate`].
    ///
    /// # Errors
    /// What [`SignatureBlock::validate`] returns, and [`Error::LimitExceeded`] if the encoding
    /// is longer than [`MAX_SIGNATURE_BLOCK_LEN`].
    pub fn to_der(&self) -> Result<Vec<u8>, Error> {
        self.validate()?;
        let out = self.encode_unchecked();
        if out.len() > MAX_SIGNATURE_BLOCK_LEN {
            return Err(Error::LimitExceeded {
                what: "signature block length",
                limit: to_u64(MAX_SIGNATURE_BLOCK_LEN),
                found: to_u64(out.len()),
            });
        }
        Ok(out)
    }

    /// The DER encoding, without any check (the writer half of [`SignatureBlock::to_der`]).
    pub(crate) fn encode_unchecked(&self) -> Vec<u8> {
        let mut body = Vec::new();
        for entry in &self.entries {
            let mut e = Vec::new();
            push_oid(&mut e, &entry.algorithm);
            push_tlv(&mut e, TAG_OCTET_STRING, &entry.key_id);
            push_tlv(&mut e, TAG_OCTET_STRING, &entry.signature);
            if !entry.certificates.is_empty() {
                let certs: Vec<u8> = entry.certificates.concat();
                push_tlv(&mut e, TAG_CONTEXT_0, &certs);
            }
            push_tlv(&mut body, TAG_SEQUENCE, &e);
        }
        let mut out = Vec::new();
        push_tlv(&mut out, TAG_SEQUENCE, &body);
        out
    }
}

fn read_entry(r: &mut DerCursor<'_>, index: usize) -> Result<SignatureEntry, Error> {
    let tlv = r.read(TAG_SEQUENCE, &format_args!("signature #{index}"))?;
    let mut f = tlv.cursor(SIGNATURE_BLOCK);

    let alg_tlv = f.read(TAG_OID, &format_args!("signature #{index} algorithm"))?;
    let algorithm = decode_oid(
        SIGNATURE_BLOCK,
        &alg_tlv,
        &format_args!("signature #{index} algorithm"),
    )?;

    let key_tlv = f.read(TAG_OCTET_STRING, &format_args!("signature #{index} key_id"))?;
    let key_id = <[u8; DIGEST_LEN]>::try_from(key_tlv.value).map_err(|_| {
        invalid(
            format_args!("signature #{index} key_id"),
            format!("is {} bytes, expected {DIGEST_LEN}", key_tlv.value.len()),
        )
    })?;

    let sig_tlv = f.read(
        TAG_OCTET_STRING,
        &format_args!("signature #{index} signature"),
    )?;
    check_signature_len(index, sig_tlv.value.len())?;

    let mut certificates = Vec::new();
    if let Some(list) = f.read_optional(
        TAG_CONTEXT_0,
        &format_args!("signature #{index} certificates"),
    )? {
        let mut cr = list.cursor(SIGNATURE_BLOCK);
        let count = cr.count(&format_args!("signature #{index} certificates"))?;
        if count == 0 {
            return Err(Error::Malformed {
                section: SIGNATURE_BLOCK,
                offset: Some(list.offset),
                reason: format!(
                    "signature #{index} certificates is present but empty (DER omits an empty \
                     list)"
                ),
            });
        }
        check_certificate_count(count)?;
        certificates.reserve_exact(count);
        for c in 0..count {
            let cert = cr.read(
                TAG_SEQUENCE,
                &format_args!("signature #{index} certificate #{c}"),
            )?;
            certificates.push(cert.raw.to_vec());
        }
    }
    f.finish(&format_args!("signature #{index}"))?;
    Ok(SignatureEntry {
        algorithm,
        key_id,
        signature: sig_tlv.value.to_vec(),
        certificates,
    })
}

#[cfg(test)]
#[path = "signature_tests.rs"]
mod tests;
