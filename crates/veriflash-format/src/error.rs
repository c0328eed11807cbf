//! The one error type of this crate.

use alloc::string::String;
use core::fmt;

use crate::ObjectIdentifier;

/// Why a package, or a part of one, was refused (or could not be written).
///
/// Every variant that concerns a part of the package names it with a `section`: one of the
/// constants in [`crate::section`] (`"header"`, `"manifest"`, `"signature block"`, `"payload"`,
/// or `"package"` for the file as a whole). Offsets are in bytes from the first byte of that
/// section (for `"package"`, of the package).
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    /// The first 8 bytes are not [`crate::MAGIC`]: this is not a veriflash package, or it was
    /// mangled in transfer (e.g. by newline conversion).
    BadMagic,
    /// The header's `format_version` is not one this reader knows.
    UnsupportedVersion {
        /// The version found in the header.
        found: u16,
    },
    /// The header has a flag bit set; no flag is defined in format version 1.
    UnknownFlags {
        /// The flags found in the header.
        flags: u32,
    },
    /// The manifest's `manifestVersion` is not one this reader knows.
    UnsupportedManifestVersion {
        /// The version found in the manifest.
        found: u64,
    },
    /// The input ended before the section did.
    Truncated {
        /// The section that was cut short.
        section: &'static str,
        /// Bytes the section needs (at least).
        needed: u64,
        /// Bytes that were available.
        available: u64,
    },
    /// A length or count is beyond one of the hard limits in [`crate::limits`].
    LimitExceeded {
        /// What was counted or measured, e.g. `"manifest length"` or `"number of images"`.
        what: &'static str,
        /// The limit (inclusive).
        limit: u64,
        /// The value found.
        found: u64,
    },
    /// Bytes that do not follow the format: a bad DER encoding, an unexpected tag, a reserved
    /// field that is not zero.
    Malformed {
        /// The section that holds the bad bytes.
        section: &'static str,
        /// Where, from the start of the section, when known.
        offset: Option<u64>,
        /// What is wrong, for a human.
        reason: String,
    },
    /// Bytes after the declared end of a section or of the package.
    TrailingData {
        /// The section (or `"package"`) that should have ended.
        section: &'static str,
        /// Offset of the first extra byte, from the start of that section.
        offset: u64,
    },
    /// The header's `payload_len` is not the sum of the manifest's image sizes.
    PayloadLenMismatch {
        /// `payload_len` from the header.
        header: u64,
        /// The sum of the image sizes in the manifest.
        manifest: u64,
    },
    /// A critical extension this reader does not know (format version 1 defines none).
    UnsupportedCriticalExtension {
        /// The extension's `extnID`.
        oid: ObjectIdentifier,
    },
    /// A field that is well encoded but breaks a rule of the format (a duplicate image name, a
    /// chunk size that is not a power of two, a digest of the wrong length, ...).
    InvalidField {
        /// The section that holds the field.
        section: &'static str,
        /// The field, with enough context to find it, e.g. `image 'rootfs' chunk_digests`.
        field: String,
        /// What is wrong with it, e.g. `is 64 bytes, expected 96 (3 chunks)`.
        reason: String,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadMagic => {
                f.write_str("header: bad magic: not a veriflash package (or mangled in transfer)")
            }
            Self::UnsupportedVersion { found } => write!(
                f,
                "header: unsupported format version {found} (this reader supports versions {} \
                 to {})",
                crate::FORMAT_VERSION,
                crate::FORMAT_VERSION_DELTA
            ),
            Self::UnknownFlags { flags } => write!(
                f,
                "header: unknown flags 0x{flags:08x} (no flag is defined in format versions 1 to 4)"
            ),
            Self::UnsupportedManifestVersion { found } => write!(
                f,
                "manifest: unsupported manifestVersion {found} (this reader supports versions {} \
                 to {})",
                crate::MANIFEST_VERSION,
                crate::MANIFEST_VERSION_DELTA
            ),
            Self::Truncated {
                section,
                needed,
                available,
            } => write!(
                f,
                "{section}: truncated: needs {needed} bytes, only {available} available"
            ),
            Self::LimitExceeded { what, limit, found } => {
                write!(f, "{what} is {found}, over the limit of {limit}")
            }
            Self::Malformed {
                section,
                offset: Some(offset),
                reason,
            } => write!(f, "{section}: malformed at byte {offset}: {reason}"),
            Self::Malformed {
                section,
                offset: None,
                reason,
            } => write!(f, "{section}: malformed: {reason}"),
            Self::TrailingData { section, offset } => write!(
                f,
                "{section}: unexpected data at byte {offset}, after its declared end"
            ),
            Self::PayloadLenMismatch { header, manifest } => write!(
                f,
                "header payload_len is {header} bytes but the manifest's images add up to \
                 {manifest} bytes"
            ),
            Self::UnsupportedCriticalExtension { oid } => {
                write!(f, "manifest: unsupported critical extension {oid}")
            }
            Self::InvalidField {
                section,
                field,
                reason,
            } => write!(f, "{section}: {field} {reason}"),
        }
    }
}

impl core::error::Error for Error {}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn every_variant_displays_its_context() {
        let oid = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.99999.7");
        let cases = [
            (
                Error::BadMagic,
                "header: bad magic: not a veriflash package (or mangled in transfer)",
            ),
            (
                Error::UnsupportedVersion { found: 5 },
                "header: unsupported format version 5 (this reader supports versions 1 to 4)",
            ),
            (
                Error::UnknownFlags { flags: 0x10 },
                "header: unknown flags 0x00000010 (no flag is defined in format versions 1 to 4)",
            ),
            (
                Error::UnsupportedManifestVersion { found: 5 },
                "manifest: unsupported manifestVersion 5 (this reader supports versions 1 to 4)",
            ),
            (
                Error::Truncated {
                    section: "payload",
                    needed: 100,
                    available: 7,
                },
                "payload: truncated: needs 100 bytes, only 7 available",
            ),
            (
                Error::LimitExceeded {
                    what: "number of images",
                    limit: 64,
                    found: 65,
                },
                "number of images is 65, over the limit of 64",
            ),
            (
                Error::Malformed {
                    section: "manifest",
                    offset: Some(17),
                    reason: "bad".into(),
                },
                "manifest: malformed at byte 17: bad",
            ),
            (
                Error::Malformed {
                    section: "header",
                    offset: None,
                    reason: "bad".into(),
                },
                "header: malformed: bad",
            ),
            (
                Error::TrailingData {
                    section: "package",
                    offset: 4242,
                },
                "package: unexpected data at byte 4242, after its declared end",
            ),
            (
                Error::PayloadLenMismatch {
                    header: 10,
                    manifest: 11,
                },
                "header payload_len is 10 bytes but the manifest's images add up to 11 bytes",
            ),
            (
                Error::UnsupportedCriticalExtension { oid },
                "manifest: unsupported critical extension 1.3.6.1.4.1.99999.7",
            ),
            (
                Error::InvalidField {
                    section: "manifest",
                    field: "image 'rootfs' chunk_digests".into(),
                    reason: "is 64 bytes, expected 96 (3 chunks)".into(),
                },
                "manifest: image 'rootfs' chunk_digests is 64 bytes, expected 96 (3 chunks)",
            ),
        ];
        for (error, text) in cases {
            assert_eq!(error.to_string(), text);
        }
    }
}
