//! Mapping the component crates' errors onto the core's stable [`ErrorKind`]s.
//!
//! The component crates keep their own precise enums (with offsets, key ids, chunk indexes);
//! this is the one place that decides which stable code each of them gets.

use veriflash_format::Error as FormatError;
use veriflash_hash::{Error as HashError, VerifyError};
use veriflash_sig::Error as SigError;

use crate::error::{Error, ErrorKind, Location};
use crate::package::location_in;

/// The kind a package-format error maps to.
fn format_kind(err: &FormatError) -> ErrorKind {
    match err {
        FormatError::UnsupportedVersion { .. }
        | FormatError::UnknownFlags { .. }
        | FormatError::UnsupportedManifestVersion { .. }
        | FormatError::UnsupportedCriticalExtension { .. } => ErrorKind::UnsupportedFormat,
        FormatError::Truncated { .. } => ErrorKind::Truncated,
        FormatError::LimitExceeded { .. } => ErrorKind::LimitExceeded,
        FormatError::TrailingData { .. } => ErrorKind::TrailingData,
        _ => ErrorKind::Malformed,
    }
}

/// A format error found while reading a package.
///
/// A package that ends exactly where its signature block would start is no download cut
/// short but the first half of split signing: the bytes to sign `veriflash pack --unsigned`
/// writes, handed on before the `sign` step. It is malformed as a package (no retry can help)
/// and its remedy is that step.
pub(crate) fn format_error(err: FormatError) -> Error {
    if let FormatError::Truncated {
        section,
        available: 0,
        ..
    } = &err
        && *section == veriflash_format::section::SIGNATURE_BLOCK
    {
        return Error::new(
            ErrorKind::Malformed,
            "the file ends where the signature block starts: it is an unsigned package (the bytes to sign that `veriflash pack --unsigned` writes), not a signed one",
        )
        .with_remedy(
            "Sign it, then use the signed package: `openssl dgst -sha256 -sign KEY.pem -out sig.der PKG.tbs` (or your HSM), then `veriflash sign --manifest M.toml --tbs PKG.tbs --signature sig.der --cert CHAIN.pem --out PKG.vfp` (--pubkey PUB.pem for a pinned key); docs/SIGNING.md shows the whole split signing.",
        )
        .with_source(err);
    }
    Error::new(format_kind(&err), err.to_string()).with_source(err)
}

/// A format error found while building a package from the caller's description: the caller's
/// input is at fault, not a package.
pub(crate) fn input_error(err: FormatError) -> Error {
    Error::new(ErrorKind::InvalidInput, err.to_string()).with_source(err)
}

/// An error reading a package's prefix.
pub(crate) fn read_error(err: veriflash_format::ReadError) -> Error {
    match err {
        veriflash_format::ReadError::Io(io) => Error::io("reading the package", io),
        veriflash_format::ReadError::Format(f) => format_error(f),
        other => Error::new(ErrorKind::Malformed, other.to_string()),
    }
}

/// A signature-verification error.
pub(crate) fn sig_error(err: SigError) -> Error {
    let kind = match &err {
        SigError::NoTrustAnchors => ErrorKind::NoTrustAnchors,
        SigError::UnknownKey { .. } => ErrorKind::UnknownSigner,
        SigError::KeyRevoked { .. } => ErrorKind::KeyRevoked,
        SigError::ThresholdNotMet { .. } => ErrorKind::ThresholdNotMet,
        SigError::UnsupportedAlgorithm { .. }
        | SigError::CertificatesUnsupported { .. }
        | SigError::UnsupportedCertificateAlgorithm { .. } => ErrorKind::UnsupportedAlgorithm,
        SigError::CertificateRevoked { .. } => ErrorKind::KeyRevoked,
        SigError::UntrustedRoot { .. } => ErrorKind::UnknownSigner,
        SigError::CertificateExpired { .. } | SigError::CertificateNotYetValid { .. } => {
            ErrorKind::CertificateExpired
        }
        SigError::CertificateMalformed { .. }
        | SigError::TooManyCertificates { .. }
        | SigError::UnknownCriticalExtension { .. }
        | SigError::NonConformingCertificate { .. }
        | SigError::LeafIsCa { .. }
        | SigError::KeyUsageNotAllowed { .. }
        | SigError::ExtendedKeyUsageMissing { .. }
        | SigError::NotCa { .. }
        | SigError::PathLenExceeded { .. }
        | SigError::CertificateSignatureInvalid { .. }
        | SigError::IssuerNotFound { .. }
        | SigError::PathTooLong { .. }
        | SigError::ChainBudgetExceeded
        | SigError::LeafKeyIdMismatch { .. }
        | SigError::RsaKeyTooSmall { .. }
        | SigError::RsaKeySizeUnsupported { .. }
        | SigError::InvalidKey { .. }
        | SigError::UnsupportedKeyAlgorithm { .. } => ErrorKind::CertificateInvalid,
        SigError::InvalidPolicy { .. } => ErrorKind::InvalidInput,
        SigError::RotationNotAuthorized { .. }
        | SigError::RotationNotProven { .. }
        | SigError::RotationNotNewer { .. }
        | SigError::InvalidAnchorSet { .. } => ErrorKind::RotationRefused,
        _ => ErrorKind::NotAuthentic,
    };
    Error::new(kind, err.to_string()).with_source(err)
}

/// An error loading or using a key the caller supplied.
pub(crate) fn key_error(err: SigError) -> Error {
    Error::new(ErrorKind::InvalidKey, err.to_string()).with_source(err)
}

/// An error loading trust anchors from `path`.
pub(crate) fn trust_error(path: &std::path::Path, err: SigError) -> Error {
    let kind = match &err {
        SigError::Io { .. } => ErrorKind::Io,
        SigError::NoPublicKeys { .. } => ErrorKind::NoTrustAnchors,
        SigError::TooManyKeyFiles { .. } => ErrorKind::InvalidInput,
        _ => ErrorKind::InvalidKey,
    };
    Error::new(
        kind,
        format!("loading trust anchors ({}): {err}", path.display()),
    )
    .with_source(err)
}

/// An error while streaming image `image`'s payload through the chunk verifier.
pub(crate) fn verify_error(image: &str, err: VerifyError<Error>) -> Error {
    match err {
        VerifyError::Sink(e) => e,
        VerifyError::Io(io) => Error::io(format_args!("reading image '{image}'"), io)
            .at(location_in(image, None, None)),
        VerifyError::Hash(h) => {
            let (kind, location) = match &h {
                HashError::ChunkMismatch { index, offset } => (
                    ErrorKind::IntegrityMismatch,
                    location_in(image, Some(*index), Some(*offset)),
                ),
                HashError::Truncated { offset } => (
                    ErrorKind::Truncated,
                    location_in(image, None, Some(*offset)),
                ),
                HashError::ImageDigestMismatch => (
                    ErrorKind::ImageDigestMismatch,
                    location_in(image, None, None),
                ),
                HashError::DecompressedLengthMismatch { index, offset, .. } => (
                    ErrorKind::DecompressedLengthMismatch,
                    location_in(image, Some(*index), Some(*offset)),
                ),
                HashError::DecodeFailed { index, offset, .. } => (
                    ErrorKind::DecompressionFailed,
                    location_in(image, Some(*index), Some(*offset)),
                ),
                // This computer's shortage, not the package's fault.
                HashError::OutOfMemory { .. } => {
                    (ErrorKind::ResourceExhausted, location_in(image, None, None))
                }
                _ => (ErrorKind::Malformed, location_in(image, None, None)),
            };
            Error::new(kind, format!("image '{image}': {h}"))
                .with_source(h)
                .at(location)
        }
        other => {
            Error::new(ErrorKind::Malformed, format!("image '{image}': {other:?}")).at(Location {
                image: Some(image.to_owned()),
                ..Location::default()
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The chain refusals of #17 keep the stable codes of their families: a certificate that
    /// breaks a rule is 26, a date (the pinned root's too) is 27.
    #[test]
    fn chain_refusals_map_to_the_certificate_codes() {
        let subject = String::from("CN=root");
        for (err, kind) in [
            (
                SigError::NonConformingCertificate {
                    subject: subject.clone(),
                    rule: "RFC 5280 4.2.1.9",
                },
                ErrorKind::CertificateInvalid,
            ),
            (
                SigError::PathTooLong { limit: 1 },
                ErrorKind::CertificateInvalid,
            ),
            (SigError::ChainBudgetExceeded, ErrorKind::CertificateInvalid),
            (
                SigError::CertificateExpired {
                    subject,
                    not_after: 1,
                    time: 2,
                },
                ErrorKind::CertificateExpired,
            ),
        ] {
            assert_eq!(sig_error(err).kind(), kind);
        }
        assert_eq!(ErrorKind::CertificateInvalid.code(), 26);
        assert_eq!(ErrorKind::CertificateExpired.code(), 27);
    }

    #[test]
    fn a_package_ending_where_its_signatures_start_is_named_unsigned_with_the_sign_step() {
        let unsigned = format_error(FormatError::Truncated {
            section: veriflash_format::section::SIGNATURE_BLOCK,
            needed: 2,
            available: 0,
        });
        assert_eq!(unsigned.kind(), ErrorKind::Malformed);
        assert!(unsigned.message().contains("unsigned package"));
        assert!(unsigned.remedy().contains("veriflash sign --manifest"));
        // Cut inside the signature block or anywhere else: a download cut short.
        for (section, available) in [
            (veriflash_format::section::SIGNATURE_BLOCK, 1),
            (veriflash_format::section::MANIFEST, 0),
        ] {
            let cut = format_error(FormatError::Truncated {
                section,
                needed: 2,
                available,
            });
            assert_eq!(cut.kind(), ErrorKind::Truncated, "{section} {available}");
            assert_eq!(cut.remedy(), ErrorKind::Truncated.remedy());
        }
    }
}
