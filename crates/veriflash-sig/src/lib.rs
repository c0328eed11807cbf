#![cfg_attr(not(feature = "std"), no_std)]
#![forbid(unsafe_code)]
#![doc = include_str!("../README.md")]

extern crate alloc;

mod algorithm;
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
        DEFAULT_ALGORITHMS, ECDSA_P256_SHA256, EcdsaP256Sha256, SignatureAlgorithm,
        ecdsa_p256_signature_to_der, ecdsa_p256_signature_to_raw,
    },
    error::Error,
    key_id::KeyId,
    keys::{MAX_PRIVATE_KEY_LEN, MAX_SPKI_LEN, SigningKey, VerifyingKey},
    policy::Policy,
    trust::{MAX_KEY_FILE_LEN, MAX_KEY_FILES, PinnedKeys, TrustAnchor, TrustStore},
    verify::{MAX_SIGNATURES, SignatureInput, VerifiedMessage, Verifier},
};

/// `ecdsa-with-SHA256` (RFC 5758, OID 1.2.840.10045.4.3.2): the algorithm of ECDSA P-256
/// signatures over SHA-256, as a package's `SignatureEntry` names it (FORMAT.md §4).
pub const ECDSA_WITH_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
