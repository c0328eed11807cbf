//! The one error type of this crate.

#[cfg(feature = "std")]
use alloc::boxed::Box;
use core::fmt;

use crate::{KeyId, ObjectIdentifier};

/// Why a key could not be loaded, a signature could not be made, or a message was refused.
///
/// Every refusal has its own variant so a caller (the core's error taxonomy, a CLI, a log) can
/// tell them apart; variants about one signature name the key id it claimed. Cryptographic
/// failures stay opaque on purpose ([`Error::BadSignature`] never says *why* the maths failed).
///
/// The enum is `#[non_exhaustive]`: RSA and X.509 support will add variants.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The trust store holds no anchor at all. Verification is refused rather than skipped, so
    /// a device built without keys cannot be updated with anything.
    NoTrustAnchors,

    /// The message carries no signature.
    NoSignatures,

    /// The message carries more signatures than the verifier will look at
    /// ([`crate::MAX_SIGNATURES`]): a budget so a hostile package cannot make it loop.
    TooManySignatures {
        /// How many signatures were supplied.
        count: usize,
        /// The most that are accepted.
        limit: usize,
    },

    /// The verification policy cannot be satisfied as configured (for example a threshold of 0,
    /// which would accept anything).
    InvalidPolicy {
        /// What is wrong with the policy.
        reason: &'static str,
    },

    /// The signature names a key id that no trust anchor has.
    UnknownKey {
        /// The key id the signature claimed.
        key_id: KeyId,
    },

    /// The trust store returned an anchor whose key id differs from the one asked for (a faulty
    /// [`crate::TrustStore`] implementation); the signature is not counted.
    KeyIdMismatch {
        /// The key id the signature claimed.
        key_id: KeyId,
        /// The key id of the anchor the store returned.
        anchor_key_id: KeyId,
    },

    /// The signature's algorithm OID is not among the verifier's supported algorithms.
    UnsupportedAlgorithm {
        /// The algorithm OID the signature claimed.
        oid: ObjectIdentifier,
    },

    /// The signature's algorithm cannot be used with the type of the key it names (for example
    /// an ECDSA signature naming an RSA key).
    AlgorithmKeyMismatch {
        /// The key id the signature claimed.
        key_id: KeyId,
    },

    /// The signature bytes are not a strictly encoded signature of the claimed algorithm (for
    /// ECDSA: not a minimal DER `Ecdsa-Sig-Value` with nothing after it, or `r`/`s` out of
    /// range). External raw `r||s` signatures must go through
    /// [`crate::ecdsa_p256_signature_to_der`] first.
    MalformedSignature {
        /// The key id the signature claimed.
        key_id: KeyId,
    },

    /// The signature does not verify under the named key: the message or the signature was
    /// altered, or it was made by another key. Deliberately opaque.
    BadSignature {
        /// The key id the signature claimed.
        key_id: KeyId,
    },

    /// The signature names a key the policy revokes.
    KeyRevoked {
        /// The revoked key id.
        key_id: KeyId,
    },

    /// Fewer distinct trusted keys produced a valid signature than the policy requires.
    ThresholdNotMet {
        /// Distinct valid signatures required.
        required: usize,
        /// Distinct valid signatures found.
        valid: usize,
    },

    /// The signature carries a certificate chain; X.509 chains are not supported yet, and a
    /// chain is refused rather than ignored so no signer can rely on it being checked.
    CertificatesUnsupported {
        /// The key id the signature claimed.
        key_id: KeyId,
    },

    /// A key could not be decoded or is not a valid key of a supported type.
    InvalidKey {
        /// What is wrong with the key.
        reason: &'static str,
    },

    /// A public key's algorithm (the `SubjectPublicKeyInfo` algorithm OID) is not supported.
    UnsupportedKeyAlgorithm {
        /// The key algorithm OID found.
        oid: ObjectIdentifier,
    },

    /// The private key is encrypted (`ENCRYPTED PRIVATE KEY`, or a legacy `Proc-Type:
    /// 4,ENCRYPTED` header). Decrypt it first, for example with `openssl pkey -in enc.pem -out
    /// key.pem`.
    EncryptedKeyUnsupported,

    /// The text is not PEM of the expected kind.
    Pem {
        /// What is wrong with the PEM text.
        reason: &'static str,
    },

    /// A key id is not 64 hexadecimal digits.
    InvalidKeyId {
        /// What is wrong with the text.
        reason: &'static str,
    },

    /// An externally made signature handed to [`crate::ecdsa_p256_signature_to_der`] is neither
    /// a valid DER `Ecdsa-Sig-Value` nor a valid 64-byte `r||s`.
    InvalidSignatureEncoding {
        /// What is wrong with the signature.
        reason: &'static str,
    },

    /// Encoding a key or signature failed (not expected for valid keys; reported, not panicked).
    Encoding {
        /// What could not be encoded.
        what: &'static str,
    },

    /// The signing primitive failed (not expected for a valid key; reported, not panicked).
    SigningFailed,

    /// The random number generator failed while generating a key.
    Rng,

    /// Reading a key file or directory failed.
    #[cfg(feature = "std")]
    Io {
        /// The file or directory.
        path: std::path::PathBuf,
        /// The I/O error kind.
        kind: std::io::ErrorKind,
    },

    /// A key file was read but does not hold what it should.
    #[cfg(feature = "std")]
    KeyFile {
        /// The file.
        path: std::path::PathBuf,
        /// Why its content was refused.
        source: Box<Error>,
    },

    /// A key directory holds no `*.pem` or `*.pub` public key.
    #[cfg(feature = "std")]
    NoPublicKeys {
        /// The directory.
        path: std::path::PathBuf,
    },

    /// A key directory holds more key files than [`crate::MAX_KEY_FILES`].
    #[cfg(feature = "std")]
    TooManyKeyFiles {
        /// The directory.
        path: std::path::PathBuf,
        /// The most key files accepted.
        limit: usize,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoTrustAnchors => f.write_str("no trust anchors are configured"),
            Self::NoSignatures => f.write_str("the message carries no signature"),
            Self::TooManySignatures { count, limit } => {
                write!(f, "{count} signatures supplied, at most {limit} are accepted")
            }
            Self::InvalidPolicy { reason } => write!(f, "invalid verification policy: {reason}"),
            Self::UnknownKey { key_id } => write!(f, "signature by unknown key {key_id}"),
            Self::KeyIdMismatch {
                key_id,
                anchor_key_id,
            } => write!(
                f,
                "trust store returned anchor {anchor_key_id} when asked for key {key_id}"
            ),
            Self::UnsupportedAlgorithm { oid } => {
                write!(f, "unsupported signature algorithm {oid}")
            }
            Self::AlgorithmKeyMismatch { key_id } => write!(
                f,
                "signature algorithm does not match the type of key {key_id}"
            ),
            Self::MalformedSignature { key_id } => {
                write!(f, "malformed signature encoding for key {key_id}")
            }
            Self::BadSignature { key_id } => write!(f, "bad signature for key {key_id}"),
            Self::KeyRevoked { key_id } => write!(f, "key {key_id} is revoked"),
            Self::ThresholdNotMet { required, valid } => write!(
                f,
                "{valid} valid signature(s) from distinct trusted keys, {required} required"
            ),
            Self::CertificatesUnsupported { key_id } => write!(
                f,
                "signature for key {key_id} carries certificates, which are not supported yet"
            ),
            Self::InvalidKey { reason } => write!(f, "invalid key: {reason}"),
            Self::UnsupportedKeyAlgorithm { oid } => {
                write!(f, "unsupported public key algorithm {oid}")
            }
            Self::EncryptedKeyUnsupported => f.write_str(
                "the private key is encrypted; decrypt it first (openssl pkey -in enc.pem -out key.pem)",
            ),
            Self::Pem { reason } => write!(f, "invalid PEM: {reason}"),
            Self::InvalidKeyId { reason } => write!(f, "invalid key id: {reason}"),
            Self::InvalidSignatureEncoding { reason } => {
                write!(f, "invalid ECDSA signature encoding: {reason}")
            }
            Self::Encoding { what } => write!(f, "failed to encode {what}"),
            Self::SigningFailed => f.write_str("signing failed"),
            Self::Rng => f.write_str("the random number generator failed"),
            #[cfg(feature = "std")]
            Self::Io { path, kind } => write!(f, "{}: {}", path.display(), kind),
            #[cfg(feature = "std")]
            Self::KeyFile { path, source } => write!(f, "{}: {}", path.display(), source),
            #[cfg(feature = "std")]
            Self::NoPublicKeys { path } => write!(
                f,
                "{}: no public key (*.pem or *.pub) in the directory",
                path.display()
            ),
            #[cfg(feature = "std")]
            Self::TooManyKeyFiles { path, limit } => write!(
                f,
                "{}: more than {limit} key files in the directory",
                path.display()
            ),
        }
    }
}

/// `core::error::Error` is `std::error::Error`, so this serves std and no_std builds alike.
impl core::error::Error for Error {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            #[cfg(feature = "std")]
            Self::KeyFile { source, .. } => Some(source.as_ref()),
            _ => None,
        }
    }
}
