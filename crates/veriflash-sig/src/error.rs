//! The one error type of this crate.

use alloc::{boxed::Box, string::String};
use core::fmt;

use crate::{KeyId, ObjectIdentifier};

/// Why a key could not be loaded, a signature could not be made, or a message was refused.
///
/// Every refusal has its own variant so a caller (the core's error taxonomy, a CLI, a log) can
/// tell them apart; variants about one signature name the key id it claimed. Cryptographic
/// failures stay opaque on purpose ([`Error::BadSignature`] never says *why* the maths failed).
///
/// The enum is `#[non_exhaustive]`: new algorithms and checks add variants.
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
    /// [`crate::ecdsa_p256_signature_to_der`] with [`crate::EcdsaSignatureEncoding::Raw`] first.
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

    /// A trust-anchor rotation is signed by fewer distinct anchors of the *current* set than
    /// [`crate::Policy::rotation_threshold`] requires.
    RotationNotAuthorized {
        /// Distinct current anchors required.
        required: usize,
        /// Distinct current anchors whose signatures verified.
        valid: usize,
    },

    /// A trust-anchor rotation is signed by fewer distinct anchors of the *new* set than its
    /// own threshold: adopting it could leave the device with anchors nobody can sign for.
    RotationNotProven {
        /// Distinct new anchors required (the new set's threshold).
        required: usize,
        /// Distinct new anchors whose signatures verified.
        valid: usize,
    },

    /// A trust-anchor rotation is not newer than the set the device holds
    /// ([`crate::Policy::anchor_set_version`]): a replay that could bring back retired anchors.
    RotationNotNewer {
        /// The version of the set the device holds.
        current: u64,
        /// The version the package offers.
        offered: u64,
    },

    /// A rotated anchor set is unusable: an anchor that is not a supported key or root
    /// certificate, or two anchors with the same key.
    InvalidAnchorSet {
        /// What is wrong.
        reason: &'static str,
    },

    /// The signature carries a certificate chain but the trust store offers no anchor usable for
    /// chains ([`crate::TrustStore::chain_anchors`] is empty): refused rather than ignored.
    CertificatesUnsupported {
        /// The key id the signature claimed.
        key_id: KeyId,
    },

    /// A certificate is not a strict DER X.509 certificate, or breaks a structural rule
    /// (differing inner and outer signature algorithms, a duplicated extension, ...).
    CertificateMalformed {
        /// Its position in the offered chain (0 = leaf) or 0 for a certificate being pinned.
        index: usize,
        /// What is wrong.
        reason: &'static str,
    },

    /// A certificate is signed with an algorithm (or algorithm parameters) not supported.
    UnsupportedCertificateAlgorithm {
        /// The certificate's signature algorithm OID.
        oid: ObjectIdentifier,
    },

    /// A chain offers more certificates than [`crate::MAX_INTERMEDIATES`] + 1 (a memory bound;
    /// the work of path building has its own budget).
    TooManyCertificates {
        /// How many were offered.
        count: usize,
        /// The most accepted.
        limit: usize,
    },

    /// A certificate carries a critical extension this verifier does not understand.
    UnknownCriticalExtension {
        /// The certificate's subject.
        subject: String,
        /// The extension OID.
        oid: ObjectIdentifier,
    },

    /// A certificate of the path breaks a rule of the RFC 5280 certificate profile that path
    /// validation relies on: a CA with an empty subject or a non-critical basicConstraints,
    /// keyCertSign without `cA`, a critical key identifier extension, or (strict profile,
    /// [`crate::CertificateProfile::Strict`]) a missing subject or authority key identifier.
    NonConformingCertificate {
        /// The certificate's subject (empty text for an empty subject).
        subject: String,
        /// The rule broken, naming its RFC 5280 section.
        rule: &'static str,
    },

    /// One anchor of a trust bundle (a PEM text of root keys and certificates) cannot be
    /// pinned: which one, and why.
    UnusableAnchor {
        /// The position of its PEM block in the text, counting every block from 0.
        block: usize,
        /// What the block holds: the certificate's subject, or its PEM label when the subject
        /// cannot be read.
        name: String,
        /// Why it cannot be pinned.
        source: Box<Error>,
    },

    /// The leaf certificate is a CA certificate (basicConstraints `cA` true).
    LeafIsCa {
        /// The leaf's subject.
        subject: String,
    },

    /// A certificate's keyUsage lacks the bit its role needs (digitalSignature on the leaf,
    /// keyCertSign on an issuer).
    KeyUsageNotAllowed {
        /// The certificate's subject.
        subject: String,
        /// The keyUsage bit required.
        usage: &'static str,
    },

    /// The leaf certificate lacks the extendedKeyUsage the [`crate::ChainPolicy`] requires.
    ExtendedKeyUsageMissing {
        /// The leaf's subject.
        subject: String,
        /// The purpose OID required (codeSigning by default).
        required: ObjectIdentifier,
    },

    /// A certificate's validity ended before the trusted time.
    CertificateExpired {
        /// The certificate's subject.
        subject: String,
        /// Its notAfter, seconds since the Unix epoch.
        not_after: u64,
        /// The trusted time, seconds since the Unix epoch.
        time: u64,
    },

    /// A certificate's validity starts after the trusted time.
    CertificateNotYetValid {
        /// The certificate's subject.
        subject: String,
        /// Its notBefore, seconds since the Unix epoch.
        not_before: u64,
        /// The trusted time, seconds since the Unix epoch.
        time: u64,
    },

    /// A certificate used as an issuer is not a CA (no basicConstraints, or `cA` false).
    NotCa {
        /// The would-be issuer's subject.
        subject: String,
    },

    /// An issuer's pathLenConstraint is smaller than the number of intermediates below it.
    PathLenExceeded {
        /// The issuer's subject.
        subject: String,
        /// Its pathLenConstraint.
        path_len: u8,
    },

    /// A certificate's signature does not verify under its issuer's key (a broken or forged
    /// chain).
    CertificateSignatureInvalid {
        /// The subject of the certificate whose signature failed.
        subject: String,
    },

    /// No offered intermediate and no trust anchor is the issuer of this certificate: the
    /// chain is broken (an intermediate is missing or does not belong).
    IssuerNotFound {
        /// The subject of the certificate whose issuer is missing.
        subject: String,
    },

    /// The chain ends at a self-issued root certificate that is not pinned: a chain to a root
    /// this device does not trust.
    UntrustedRoot {
        /// The root's subject.
        subject: String,
    },

    /// The only paths to an anchor hold more intermediates than
    /// [`crate::ChainPolicy::max_intermediates`] allows.
    PathTooLong {
        /// The most intermediates the policy allows.
        limit: usize,
    },

    /// Path building used up [`crate::MAX_CHAIN_SIGNATURE_CHECKS`] signature checks.
    ChainBudgetExceeded,

    /// A certificate of the signer's path has a revoked serial number.
    CertificateRevoked {
        /// The serial number, lower-case hex without leading zero bytes.
        serial: String,
    },

    /// A signature's key id is not the key id of its leaf certificate's key.
    LeafKeyIdMismatch {
        /// The key id the signature claimed.
        key_id: KeyId,
        /// The key id of the leaf certificate's public key.
        leaf_key_id: KeyId,
    },

    /// A key could not be decoded or is not a valid key of a supported type.
    InvalidKey {
        /// What is wrong with the key.
        reason: &'static str,
    },

    /// An RSA key's modulus is smaller than 2048 bits (RSA-1024 and below are breakable or
    /// nearly so, and refused whatever signs with them).
    RsaKeyTooSmall {
        /// The modulus size found, in bits.
        bits: usize,
    },

    /// An RSA key's modulus is not one of the supported sizes (2048, 3072, 4096 bits), for
    /// example RSA-8192 or an odd size such as 2047.
    RsaKeySizeUnsupported {
        /// The modulus size found, in bits.
        bits: usize,
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

    /// An externally made signature handed to [`crate::ecdsa_p256_signature_to_der`] is not a
    /// valid signature in the encoding the caller named (DER `Ecdsa-Sig-Value` or 64-byte
    /// `r||s`).
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
            Self::RotationNotAuthorized { required, valid } => write!(
                f,
                "the trust-anchor rotation is signed by {valid} distinct current anchor(s), {required} required"
            ),
            Self::RotationNotProven { required, valid } => write!(
                f,
                "the trust-anchor rotation is signed by {valid} distinct anchor(s) of the new set, its threshold is {required}"
            ),
            Self::RotationNotNewer { current, offered } => write!(
                f,
                "the trust-anchor rotation offers set version {offered}, the device holds version {current}"
            ),
            Self::InvalidAnchorSet { reason } => {
                write!(f, "the rotated trust-anchor set is unusable: {reason}")
            }
            Self::CertificatesUnsupported { key_id } => write!(
                f,
                "signature for key {key_id} carries certificates, but the trust store has no anchor for chains"
            ),
            Self::CertificateMalformed { index, reason } => {
                write!(f, "certificate {index} of the chain is malformed: {reason}")
            }
            Self::UnsupportedCertificateAlgorithm { oid } => {
                write!(f, "certificate signed with unsupported algorithm {oid}")
            }
            Self::TooManyCertificates { count, limit } => {
                write!(f, "{count} certificates offered, at most {limit} are accepted")
            }
            Self::UnknownCriticalExtension { subject, oid } => write!(
                f,
                "certificate '{subject}' has unknown critical extension {oid}"
            ),
            Self::NonConformingCertificate { subject, rule } => {
                write!(f, "certificate '{subject}' does not conform to {rule}")
            }
            Self::UnusableAnchor {
                block,
                name,
                source,
            } => write!(
                f,
                "trust anchor '{name}' (PEM block {block}) cannot be used: {source}"
            ),
            Self::LeafIsCa { subject } => {
                write!(f, "leaf certificate '{subject}' is a CA certificate")
            }
            Self::KeyUsageNotAllowed { subject, usage } => {
                write!(f, "certificate '{subject}' keyUsage lacks {usage}")
            }
            Self::ExtendedKeyUsageMissing { subject, required } => write!(
                f,
                "leaf certificate '{subject}' lacks extendedKeyUsage {required}"
            ),
            Self::CertificateExpired {
                subject,
                not_after,
                time,
            } => write!(
                f,
                "certificate '{subject}' expired (notAfter {not_after}, now {time}, Unix seconds)"
            ),
            Self::CertificateNotYetValid {
                subject,
                not_before,
                time,
            } => write!(
                f,
                "certificate '{subject}' is not yet valid (notBefore {not_before}, now {time}, Unix seconds)"
            ),
            Self::NotCa { subject } => {
                write!(f, "issuer certificate '{subject}' is not a CA")
            }
            Self::PathLenExceeded { subject, path_len } => write!(
                f,
                "issuer certificate '{subject}' allows {path_len} intermediate(s) below it; the chain has more"
            ),
            Self::CertificateSignatureInvalid { subject } => write!(
                f,
                "certificate '{subject}' is not validly signed by its issuer"
            ),
            Self::IssuerNotFound { subject } => write!(
                f,
                "no issuer found for certificate '{subject}' (broken chain)"
            ),
            Self::UntrustedRoot { subject } => {
                write!(f, "the chain ends at root '{subject}', which is not trusted")
            }
            Self::PathTooLong { limit } => write!(
                f,
                "the certificate path needs more than the {limit} intermediate(s) the policy allows"
            ),
            Self::ChainBudgetExceeded => {
                f.write_str("certificate path building exceeded its signature-check budget")
            }
            Self::CertificateRevoked { serial } => {
                write!(f, "certificate with serial {serial} is revoked")
            }
            Self::LeafKeyIdMismatch {
                key_id,
                leaf_key_id,
            } => write!(
                f,
                "signature names key {key_id} but its leaf certificate's key is {leaf_key_id}"
            ),
            Self::InvalidKey { reason } => write!(f, "invalid key: {reason}"),
            Self::RsaKeyTooSmall { bits } => write!(
                f,
                "RSA key of {bits} bits is too small (2048, 3072 or 4096 bits required)"
            ),
            Self::RsaKeySizeUnsupported { bits } => write!(
                f,
                "RSA key of {bits} bits is not supported (2048, 3072 or 4096 bits required)"
            ),
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
            Self::UnusableAnchor { source, .. } => Some(source.as_ref()),
            _ => None,
        }
    }
}
