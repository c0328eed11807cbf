//! A small scanner over PEM text holding several blocks.
//!
//! `openssl ecparam -genkey` writes an `EC PARAMETERS` block before the `EC PRIVATE KEY`, and key
//! files may carry explanatory text; `pem-rfc7468` decodes exactly one strict block. This module
//! finds the blocks, refuses encrypted ones, and hands each to `pem-rfc7468` for the Base64.

use alloc::vec::Vec;

use der::pem;
use zeroize::Zeroizing;

use crate::Error;

/// At most this many PEM blocks are looked at in one text (a key file has one or two).
pub(crate) const MAX_PEM_BLOCKS: usize = 64;

const BEGIN: &str = "-----BEGIN ";
const END: &str = "-----END ";
const DASHES: &str = "-----";

/// One PEM block found in a text: its label and the text of the whole block.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Block<'a> {
    pub(crate) label: &'a str,
    text: &'a str,
    /// An RFC 1421 `Proc-Type: 4,ENCRYPTED` header was present.
    encrypted_header: bool,
}

impl Block<'_> {
    /// Decodes the Base64 body into a zeroizing buffer (it may hold a private key).
    pub(crate) fn decode(&self) -> Result<Zeroizing<Vec<u8>>, Error> {
        if self.encrypted_header || self.label == "ENCRYPTED PRIVATE KEY" {
            return Err(Error::EncryptedKeyUnsupported);
        }
        let mut decoder = pem::Decoder::new_detect_wrap(self.text.as_bytes()).map_err(pem_error)?;
        let mut out = Zeroizing::new(Vec::new());
        decoder.decode_to_end(&mut out).map_err(pem_error)?;
        if out.is_empty() {
            return Err(Error::Pem {
                reason: "empty PEM block",
            });
        }
        Ok(out)
    }
}

fn pem_error(err: pem::Error) -> Error {
    let reason = match err {
        pem::Error::HeaderDisallowed => "PEM headers are not supported",
        pem::Error::Base64(_) => "invalid Base64 in PEM block",
        pem::Error::CharacterEncoding => "invalid characters in PEM block",
        pem::Error::Label => "invalid PEM label",
        _ => "malformed PEM block",
    };
    Error::Pem { reason }
}

/// Finds every PEM block in `text`, in order.
///
/// # Errors
/// [`Error::Pem`] when a `BEGIN` line has no matching `END` line, or there are more than
/// [`MAX_PEM_BLOCKS`] blocks.
pub(crate) fn blocks(text: &str) -> Result<Vec<Block<'_>>, Error> {
    let mut found = Vec::new();
    let mut open: Option<(usize, &str, bool)> = None;
    let mut offset = 0usize;
    for raw_line in text.split_inclusive('\n') {
        let line_start = offset;
        offset = offset.saturating_add(raw_line.len());
        let line = raw_line.trim_end();
        match open {
            None => {
                if let Some(label) = line
                    .strip_prefix(BEGIN)
                    .and_then(|rest| rest.strip_suffix(DASHES))
                {
                    open = Some((line_start, label, false));
                }
            }
            Some((start, label, encrypted)) => {
                if let Some(end_label) = line
                    .strip_prefix(END)
                    .and_then(|rest| rest.strip_suffix(DASHES))
                {
                    if end_label != label {
                        return Err(Error::Pem {
                            reason: "END line does not match the BEGIN line",
                        });
                    }
                    if found.len() >= MAX_PEM_BLOCKS {
                        return Err(Error::Pem {
                            reason: "too many PEM blocks",
                        });
                    }
                    let block_text = text.get(start..offset).ok_or(Error::Pem {
                        reason: "malformed PEM block",
                    })?;
                    found.push(Block {
                        label,
                        text: block_text,
                        encrypted_header: encrypted,
                    });
                    open = None;
                } else if line.starts_with(BEGIN) {
                    return Err(Error::Pem {
                        reason: "BEGIN line inside a PEM block",
                    });
                } else if line.starts_with("Proc-Type:") && line.contains("ENCRYPTED") {
                    open = Some((start, label, true));
                }
            }
        }
    }
    if open.is_some() {
        return Err(Error::Pem {
            reason: "BEGIN line without a matching END line",
        });
    }
    Ok(found)
}

/// Encodes `der` as one PEM block labelled `label` (LF line endings, 64-column Base64, as
/// openssl writes); zeroizing because the DER may be a private key.
pub(crate) fn encode(label: &str, der: &[u8]) -> Result<Zeroizing<alloc::string::String>, Error> {
    pem::encode_string(label, pem::LineEnding::LF, der)
        .map(Zeroizing::new)
        .map_err(|_| Error::Encoding { what: "PEM" })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_blocks_after_preamble_and_between_text() {
        let text = "comment\n-----BEGIN A-----\nAAEC\n-----END A-----\nmid\r\n-----BEGIN B C-----\r\nAwQ=\r\n-----END B C-----\r\n";
        let found = blocks(text).unwrap();
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].label, "A");
        assert_eq!(&found[0].decode().unwrap()[..], &[0, 1, 2]);
        assert_eq!(found[1].label, "B C");
        assert_eq!(&found[1].decode().unwrap()[..], &[3, 4]);
    }

    #[test]
    fn refuses_unterminated_and_mismatched_blocks() {
        assert!(blocks("-----BEGIN A-----\nAAEC\n").is_err());
        assert!(blocks("-----BEGIN A-----\nAAEC\n-----END B-----\n").is_err());
        assert!(blocks("-----BEGIN A-----\n-----BEGIN A-----\n-----END A-----\n").is_err());
    }

    #[test]
    fn refuses_encrypted_blocks() {
        let legacy = "-----BEGIN EC PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-256-CBC,00\n\nAAEC\n-----END EC PRIVATE KEY-----\n";
        let found = blocks(legacy).unwrap();
        assert_eq!(found[0].decode(), Err(Error::EncryptedKeyUnsupported));
        let pkcs8 =
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAEC\n-----END ENCRYPTED PRIVATE KEY-----\n";
        assert_eq!(
            blocks(pkcs8).unwrap()[0].decode(),
            Err(Error::EncryptedKeyUnsupported)
        );
    }
}
