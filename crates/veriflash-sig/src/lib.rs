#![cfg_attr(not(feature = "std"), no_std)]
#![forbid(unsafe_code)]
#![doc = include_str!("../README.md")]

extern crate alloc;

mod algorithm;
mod chain;
mod error;
mod key_id;
mod keys;
mod pem;
mod policy;
mod trust;
mod verify;

pub use der::asn1::ObjectIdentifier;

pub use crate::{
    algorithm::{
        CERTIFICATE_ALGORITHMS, DEFAULT_ALGORITHMS, ECDSA_P256_SHA256, ECDSA_P256_SHA384,
        ECDSA_P256_SHA512, ECDSA_P384_SHA256, ECDSA_P384_SHA384, ECDSA_P384_SHA512,
        ECDSA_WITH_SHA384, ECDSA_WITH_SHA512, Ecdsa, EcdsaP256Sha256, EcdsaSignatureEncoding,
        RSA_PKCS1_SHA256, RSA_PKCS1_SHA384, RSA_PKCS1_SHA512, RSA_PSS_SALT_LEN, RSA_PSS_SHA256,
        RSA_PSS_SHA384, RSA_PSS_SHA512, RsaPkcs1, RsaPkcs1Sha256, RsaPss, RsaPssSha256,
        SHA384_WITH_RSA_ENCRYPTION, SHA512_WITH_RSA_ENCRYPTION, SignatureAlgorithm,
        ecdsa_p256_signature_to_der, ecdsa_p256_signature_to_raw,
    },
    chain::{
        CertificateProfile, ChainPolicy, EkuPolicy, ID_KP_CODE_SIGNING, MAX_CERTIFICATE_LEN,
        MAX_CHAIN_SIGNATURE_CHECKS, MAX_INTERMEDIATES, MAX_PATH_INTERMEDIATES, PathCertificate,
        TimePolicy, Validity, VerifiedPath, certificate_subject, certificate_validity,
        certificates_from_pem, leaf_public_key, verify_chain, verify_chain_with_algorithms,
    },
    error::Error,
    key_id::KeyId,
    keys::{
        MAX_PRIVATE_KEY_LEN, MAX_SPKI_LEN, RSA_MODULUS_BITS, RsaPadding, SigningKey, VerifyingKey,
    },
    policy::Policy,
    trust::{MAX_KEY_FILE_LEN, MAX_KEY_FILES, PinnedKeys, TrustAnchor, TrustStore},
    verify::{MAX_SIGNATURES, RotationApproval, SignatureInput, VerifiedMessage, Verifier},
};

/// `ecdsa-with-SHA256` (RFC 5758, OID 1.2.840.10045.4.3.2): the algorithm of ECDSA P-256
/// signatures over SHA-256, as a package's `SignatureEntry` names it (FORMAT.md §4).
pub const ECDSA_WITH_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");

/// `sha256WithRSAEncryption` (RFC 8017, OID 1.2.840.113549.1.1.11): RSASSA-PKCS1-v1_5 with
/// SHA-256.
pub const SHA256_WITH_RSA_ENCRYPTION: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");

/// `id-RSASSA-PSS` (RFC 8017, OID 1.2.840.113549.1.1.10): in a package, RSASSA-PSS with
/// SHA-256, MGF1-SHA-256 and a 32-byte salt (FORMAT.md §4).
pub const ID_RSASSA_PSS: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.10");
