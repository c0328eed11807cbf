//! A whole package: the in-memory splitter and the writer side (FORMAT.md §1, §5, §7).

use alloc::vec::Vec;

use crate::der_io::to_u64;
use crate::section::{HEADER, MANIFEST, PACKAGE, PAYLOAD, SIGNATURE_BLOCK};
use crate::{BlockLen, Error, HEADER_LEN, Header, Manifest, SignatureBlock, signature_block_len};

/// A whole package in memory, split into its sections and checked: the header parsed, every
/// length within its limit, the signature block parsed, the payload exactly `payload_len` bytes
/// and nothing after it.
///
/// The manifest is deliberately **not** parsed: its parser should only ever see authenticated
/// bytes, so verify the signatures over [`PackageRef::signed_message`] first, then
/// [`Manifest::from_der`] on [`PackageRef::manifest_der`] and
/// [`Manifest::check_payload_len`] against [`PackageRef::header`].
#[derive(Clone, Debug)]
pub struct PackageRef<'a> {
    header: Header,
    signed_message: &'a [u8],
    manifest_der: &'a [u8],
    signature_block: SignatureBlock,
    signature_block_der: &'a [u8],
    payload: &'a [u8],
}

fn truncated(section: &'static str, needed: u64, available: usize) -> Error {
    Error::Truncated {
        section,
        needed,
        available: to_u64(available),
    }
}

impl<'a> PackageRef<'a> {
    /// Splits and checks a whole package (FORMAT.md §7 steps 1 to 3, and the payload length).
    ///
    /// # Errors
    /// What [`Header::parse`], [`signature_block_len`] and [`SignatureBlock::from_der`] return;
    /// [`Error::Truncated`] naming the section that `bytes` ends in; [`Error::TrailingData`]
    /// (section `"package"`, offset from the package start) for bytes after the payload.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, Error> {
        let Some((header_bytes, rest)) = bytes.split_at_checked(HEADER_LEN) else {
            // Header::parse reports BadMagic or Truncated for a short input.
            return Err(Header::parse(bytes)
                .err()
                .unwrap_or_else(|| truncated(HEADER, to_u64(HEADER_LEN), bytes.len())));
        };
        let header = Header::parse(header_bytes)?;

        let manifest_len = usize::try_from(header.manifest_len).unwrap_or(usize::MAX);
        let Some((manifest_der, rest)) = rest.split_at_checked(manifest_len) else {
            return Err(truncated(
                MANIFEST,
                u64::from(header.manifest_len),
                rest.len(),
            ));
        };
        let signed_len = HEADER_LEN.saturating_add(manifest_len);
        let signed_message = bytes.get(..signed_len).unwrap_or_default();

        let block_len = match signature_block_len(rest)? {
            BlockLen::Total(total) => total,
            BlockLen::NeedMore(needed) => {
                return Err(truncated(SIGNATURE_BLOCK, to_u64(needed), rest.len()));
            }
        };
        let Some((signature_block_der, payload)) = rest.split_at_checked(block_len) else {
            return Err(truncated(SIGNATURE_BLOCK, to_u64(block_len), rest.len()));
        };
        let signature_block = SignatureBlock::from_der(signature_block_der)?;

        let payload_len = usize::try_from(header.payload_len).unwrap_or(usize::MAX);
        if payload.len() < payload_len {
            return Err(truncated(PAYLOAD, header.payload_len, payload.len()));
        }
        if payload.len() > payload_len {
            return Err(Error::TrailingData {
                section: PACKAGE,
                offset: header
                    .payload_offset(block_len)
                    .saturating_add(header.payload_len),
            });
        }
        Ok(Self {
            header,
            signed_message,
            manifest_der,
            signature_block,
            signature_block_der,
            payload,
        })
    }

    /// The parsed header.
    #[must_use]
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The bytes the signatures cover: `header || manifest`, the first `32 + manifest_len`
    /// bytes of the package.
    #[must_use]
    pub fn signed_message(&self) -> &'a [u8] {
        self.signed_message
    }

    /// The manifest's DER bytes (not yet parsed nor authenticated).
    #[must_use]
    pub fn manifest_der(&self) -> &'a [u8] {
        self.manifest_der
    }

    /// The parsed signature block.
    #[must_use]
    pub fn signature_block(&self) -> &SignatureBlock {
        &self.signature_block
    }

    /// The signature block's DER bytes.
    #[must_use]
    pub fn signature_block_der(&self) -> &'a [u8] {
        self.signature_block_der
    }

    /// The payload: the images' bytes, concatenated in manifest order.
    #[must_use]
    pub fn payload(&self) -> &'a [u8] {
        self.payload
    }

    /// Offset of the first payload byte in the package.
    #[must_use]
    pub fn payload_offset(&self) -> usize {
        self.signed_message
            .len()
            .saturating_add(self.signature_block_der.len())
    }
}

/// The bytes to sign for `manifest`: `Header::new(manifest_len, payload_len)` (with
/// `format_version` 2 when the manifest has chunk tables, [`Manifest::version`]) followed by the
/// manifest's DER.
///
/// # Errors
/// What [`Manifest::to_der`] and [`Manifest::payload_len`] return.
pub fn signed_message(manifest: &Manifest) -> Result<Vec<u8>, Error> {
    let der = manifest.to_der()?;
    let payload_len = manifest.payload_len()?;
    let manifest_len = u32::try_from(der.len()).map_err(|_| Error::LimitExceeded {
        what: "manifest length",
        limit: u64::from(crate::limits::MAX_MANIFEST_LEN),
        found: to_u64(der.len()),
    })?;
    let mut header = Header::new(manifest_len, payload_len);
    header.format_version = u16::try_from(manifest.version()).unwrap_or(crate::FORMAT_VERSION);
    header.validate()?;
    let mut out = Vec::with_capacity(HEADER_LEN.saturating_add(der.len()));
    out.extend_from_slice(&header.to_bytes());
    out.extend_from_slice(&der);
    Ok(out)
}

/// Parses and fully checks a signed message (`header || manifest`): the header, the manifest
/// length, the manifest, and that the header's `payload_len` matches the images.
///
/// Use it on bytes that were authenticated (or that you are about to sign).
///
/// # Errors
/// What [`Header::parse`] and [`Manifest::from_der`] return; [`Error::Truncated`] or
/// [`Error::TrailingData`] if the message is not exactly `32 + manifest_len` bytes;
/// [`Error::PayloadLenMismatch`].
pub fn parse_signed_message(signed_message: &[u8]) -> Result<(Header, Manifest), Error> {
    let Some((header_bytes, manifest_der)) = signed_message.split_at_checked(HEADER_LEN) else {
        return Header::parse(signed_message).and(Err(truncated(
            "header",
            32,
            signed_message.len(),
        )));
    };
    let header = Header::parse(header_bytes)?;
    let manifest_len = u64::from(header.manifest_len);
    let available = to_u64(manifest_der.len());
    if available < manifest_len {
        return Err(truncated(MANIFEST, manifest_len, manifest_der.len()));
    }
    if available > manifest_len {
        return Err(Error::TrailingData {
            section: MANIFEST,
            offset: manifest_len,
        });
    }
    let manifest = Manifest::from_der(manifest_der)?;
    manifest.check_payload_len(&header)?;
    Ok((header, manifest))
}

/// The package prefix (everything before the payload): `signed_message` followed by the DER of
/// `signatures`. The signed message is checked again first ([`parse_signed_message`]), so a
/// prefix this writes is one the reader accepts.
///
/// # Errors
/// What [`parse_signed_message`] and [`SignatureBlock::to_der`] return.
pub fn encode_prefix(signed_message: &[u8], signatures: &SignatureBlock) -> Result<Vec<u8>, Error> {
    parse_signed_message(signed_message)?;
    let block = signatures.to_der()?;
    let mut out = Vec::with_capacity(signed_message.len().saturating_add(block.len()));
    out.extend_from_slice(signed_message);
    out.extend_from_slice(&block);
    Ok(out)
}
