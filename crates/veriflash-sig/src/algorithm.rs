//! Signature algorithms as data, and ECDSA P-256 signature encodings.

use alloc::vec::Vec;
use core::fmt;

use p256::ecdsa::{DerSignature, Signature, signature::Verifier as _};

use sha2::{Digest, Sha256};

use crate::{
    ECDSA_WITH_SHA256, Error, ID_RSASSA_PSS, ObjectIdentifier, SHA256_WITH_RSA_ENCRYPTION,
    VerifyingKey,
};

/// The PSS salt length, in bytes, this crate signs with and requires when verifying: 32, the
/// SHA-256 output length (FORMAT.md §4).
pub const RSA_PSS_SALT_LEN: usize = 32;

/// A signature algorithm the verifier can check, identified by the OID a package names.
///
/// Algorithms are values, not code paths: a [`crate::Verifier`] takes a list of
/// `&dyn SignatureAlgorithm` (by default [`DEFAULT_ALGORITHMS`]) and picks the one whose
/// [`oid`](SignatureAlgorithm::oid) a signature claims, the way webpki takes a list of
/// rustls-pki-types `SignatureVerificationAlgorithm`s. Adding RSA (or Ed25519, ML-DSA) is one more
/// value in the list; restricting a device to one algorithm is a shorter list. The trait is
/// object safe, and `Send + Sync` so lists can live in `static`s.
pub trait SignatureAlgorithm: Send + Sync + fmt::Debug {
    /// The signature algorithm OID this algorithm verifies (the `algorithm` of a
    /// `SignatureEntry`, FORMAT.md §4).
    fn oid(&self) -> ObjectIdentifier;

    /// A short stable name for logs, e.g. `"ecdsa-p256-sha256"`.
    fn name(&self) -> &'static str;

    /// Checks that `signature` is a valid signature of `message` under `key`.
    ///
    /// # Errors
    /// [`Error::AlgorithmKeyMismatch`] when `key` is not of the type this algorithm uses;
    /// [`Error::MalformedSignature`] when the signature is not strictly encoded;
    /// [`Error::BadSignature`] when it does not verify. Each names `key`'s key id.
    fn verify(&self, key: &VerifyingKey, message: &[u8], signature: &[u8]) -> Result<(), Error>;
}

/// ECDSA over NIST P-256 with SHA-256 (`ecdsa-with-SHA256`, OID 1.2.840.10045.4.3.2), with
/// the signature a DER `Ecdsa-Sig-Value` (RFC 3279) as openssl writes it.
///
/// Verification is strict: the DER must be minimal with nothing after it, and `r` and `s` must
/// be in `1..n`; the bytes must be exactly the canonical encoding of `(r, s)`, so one signature
/// has one encoding. High-`s` signatures are accepted, as openssl makes and accepts them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EcdsaP256Sha256;

impl SignatureAlgorithm for EcdsaP256Sha256 {
    fn oid(&self) -> ObjectIdentifier {
        ECDSA_WITH_SHA256
    }

    fn name(&self) -> &'static str {
        "ecdsa-p256-sha256"
    }

    fn verify(&self, key: &VerifyingKey, message: &[u8], signature: &[u8]) -> Result<(), Error> {
        let key_id = key.key_id();
        let Some(public) = key.as_p256() else {
            return Err(Error::AlgorithmKeyMismatch { key_id });
        };
        let signature = parse_strict_der(signature).ok_or(Error::MalformedSignature { key_id })?;
        public
            .verify(message, &signature)
            .map_err(|_| Error::BadSignature { key_id })
    }
}

/// [`EcdsaP256Sha256`] as a trait object, the form [`crate::Verifier::with_algorithms`] takes.
pub static ECDSA_P256_SHA256: &dyn SignatureAlgorithm = &EcdsaP256Sha256;

/// RSASSA-PKCS1-v1_5 with SHA-256 (`sha256WithRSAEncryption`, OID 1.2.840.113549.1.1.11,
/// RFC 8017 §8.2), what `openssl dgst -sha256 -sign rsa.pem` makes.
///
/// The key must be RSA with a 2048-, 3072- or 4096-bit modulus (enforced when the key is made);
/// the signature must be exactly as long as the modulus and below it, and the encoded
/// `DigestInfo` must be byte-identical to the one for SHA-256 (no missing NULL parameters, no
/// garbage): the encoding is recomputed and compared, never parsed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RsaPkcs1Sha256;

impl SignatureAlgorithm for RsaPkcs1Sha256 {
    fn oid(&self) -> ObjectIdentifier {
        SHA256_WITH_RSA_ENCRYPTION
    }

    fn name(&self) -> &'static str {
        "rsa-pkcs1-sha256"
    }

    fn verify(&self, key: &VerifyingKey, message: &[u8], signature: &[u8]) -> Result<(), Error> {
        verify_rsa(key, message, signature, rsa::Pkcs1v15Sign::new::<Sha256>())
    }
}

/// RSASSA-PSS with SHA-256, MGF1 with SHA-256 and a salt of exactly [`RSA_PSS_SALT_LEN`] (32)
/// bytes, trailer field 1 (`id-RSASSA-PSS`, OID 1.2.840.113549.1.1.10, RFC 8017 §8.1), what
/// `openssl dgst -sha256 -sign rsa.pem -sigopt rsa_padding_mode:pss -sigopt rsa_pss_saltlen:32`
/// makes (openssl 3's default salt for signing is the maximum, so `rsa_pss_saltlen:32` — or
/// `digest` — must be given).
///
/// The salt length is not auto-detected: a PSS signature with any other salt length is refused
/// with [`Error::BadSignature`], so one message and key admit one PSS profile, the one FORMAT.md
/// names. A PKCS#1 v1.5 signature presented as PSS (or the reverse) fails the same way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RsaPssSha256;

impl SignatureAlgorithm for RsaPssSha256 {
    fn oid(&self) -> ObjectIdentifier {
        ID_RSASSA_PSS
    }

    fn name(&self) -> &'static str {
        "rsa-pss-sha256"
    }

    fn verify(&self, key: &VerifyingKey, message: &[u8], signature: &[u8]) -> Result<(), Error> {
        verify_rsa(
            key,
            message,
            signature,
            rsa::Pss::<Sha256>::new_with_salt(RSA_PSS_SALT_LEN),
        )
    }
}

/// The RSA verification both paddings share: the key must be RSA, the signature as long as the
/// modulus, and `scheme` must accept it over the message's SHA-256 (failures stay opaque).
fn verify_rsa(
    key: &VerifyingKey,
    message: &[u8],
    signature: &[u8],
    scheme: impl rsa::traits::SignatureScheme,
) -> Result<(), Error> {
    let key_id = key.key_id();
    let Some(public) = key.as_rsa() else {
        return Err(Error::AlgorithmKeyMismatch { key_id });
    };
    check_rsa_signature_len(public, signature, key)?;
    public
        .verify(scheme, &Sha256::digest(message), signature)
        .map_err(|_| Error::BadSignature { key_id })
}

/// An RSA signature is an octet string exactly as long as the modulus (RFC 8017 §8.1.2 step 1,
/// §8.2.2 step 1); anything else is a malformed signature, refused before any arithmetic.
fn check_rsa_signature_len(
    public: &rsa::PublicKey,
    signature: &[u8],
    key: &VerifyingKey,
) -> Result<(), Error> {
    use rsa::traits::PublicKeyParts;
    if signature.len() == public.size() {
        Ok(())
    } else {
        Err(Error::MalformedSignature {
            key_id: key.key_id(),
        })
    }
}

/// [`RsaPkcs1Sha256`] as a trait object.
pub static RSA_PKCS1_SHA256: &dyn SignatureAlgorithm = &RsaPkcs1Sha256;

/// [`RsaPssSha256`] as a trait object.
pub static RSA_PSS_SHA256: &dyn SignatureAlgorithm = &RsaPssSha256;

/// Every algorithm this crate supports, what [`crate::Verifier::new`] uses: ECDSA P-256,
/// RSA PKCS#1 v1.5 and RSA PSS, all with SHA-256.
pub static DEFAULT_ALGORITHMS: &[&dyn SignatureAlgorithm] =
    &[&EcdsaP256Sha256, &RsaPkcs1Sha256, &RsaPssSha256];

/// Parses a strict DER `Ecdsa-Sig-Value` for P-256: minimal DER, nothing trailing, `r` and `s`
/// in range, and byte-identical to the re-encoding of `(r, s)`.
fn parse_strict_der(bytes: &[u8]) -> Option<Signature> {
    let der = DerSignature::from_bytes(bytes).ok()?;
    let signature = Signature::try_from(der).ok()?;
    (signature.to_der().as_bytes() == bytes).then_some(signature)
}

/// Canonicalises an externally made ECDSA P-256 signature to the DER form packages carry.
///
/// Accepts a DER `Ecdsa-Sig-Value` (what `openssl dgst -sign` writes) or a fixed 64-byte
/// big-endian `r || s` (what PKCS#11 HSMs return for `CKM_ECDSA`), and returns the canonical
/// DER. DER is tried first; a 64-byte input that is not strict DER is read as `r || s` (a
/// 64-byte string that is both is astronomically unlikely, and would encode the same `r, s` only
/// by accident, so the DER reading is the safe one).
///
/// # Errors
/// [`Error::InvalidSignatureEncoding`] when the input is neither, or `r` or `s` is zero or not
/// below the group order.
///
/// # Example
/// ```
/// # fn main() -> Result<(), veriflash_sig::Error> {
/// let mut raw = [0u8; 64];
/// raw[31] = 1; // r = 1
/// raw[63] = 2; // s = 2
/// let der = veriflash_sig::ecdsa_p256_signature_to_der(&raw)?;
/// assert_eq!(der, [0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x02]);
/// // Already DER: returned unchanged.
/// assert_eq!(veriflash_sig::ecdsa_p256_signature_to_der(&der)?, der);
/// // r = s = 0 is not a signature.
/// assert!(veriflash_sig::ecdsa_p256_signature_to_der(&[0u8; 64]).is_err());
/// # Ok(())
/// # }
/// ```
pub fn ecdsa_p256_signature_to_der(sig: &[u8]) -> Result<Vec<u8>, Error> {
    if let Some(signature) = parse_strict_der(sig) {
        return Ok(signature.to_der().as_bytes().to_vec());
    }
    if sig.len() != 64 {
        return Err(Error::InvalidSignatureEncoding {
            reason: "neither a strict DER Ecdsa-Sig-Value nor a 64-byte r||s",
        });
    }
    let signature = Signature::from_slice(sig).map_err(|_| Error::InvalidSignatureEncoding {
        reason: "r or s is zero or not below the P-256 group order",
    })?;
    Ok(signature.to_der().as_bytes().to_vec())
}

/// Converts a P-256 signature (DER or 64-byte `r || s`) to the fixed 64-byte `r || s` form, for
/// tools that hand signatures to systems expecting it (JOSE, PKCS#11).
///
/// # Errors
/// As [`ecdsa_p256_signature_to_der`].
pub fn ecdsa_p256_signature_to_raw(sig: &[u8]) -> Result<[u8; 64], Error> {
    let der = ecdsa_p256_signature_to_der(sig)?;
    let signature = parse_strict_der(&der).ok_or(Error::InvalidSignatureEncoding {
        reason: "neither a strict DER Ecdsa-Sig-Value nor a 64-byte r||s",
    })?;
    Ok(signature.to_bytes().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_and_der_round_trip() {
        let mut raw = [0u8; 64];
        raw[0] = 0x80; // r needs a leading zero in DER
        raw[31] = 7;
        raw[32] = 0x01;
        raw[63] = 9;
        let der = ecdsa_p256_signature_to_der(&raw).unwrap();
        assert_eq!(der[0], 0x30);
        assert_eq!(&der[2..5], &[0x02, 0x21, 0x00]);
        assert_eq!(ecdsa_p256_signature_to_raw(&der).unwrap(), raw);
        assert_eq!(ecdsa_p256_signature_to_der(&der).unwrap(), der);
    }

    #[test]
    fn non_minimal_and_trailing_der_is_refused() {
        // r = 1 encoded with a superfluous leading zero.
        let non_minimal = [0x30, 0x07, 0x02, 0x02, 0x00, 0x01, 0x02, 0x01, 0x02];
        assert!(parse_strict_der(&non_minimal).is_none());
        let trailing = [0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x02, 0x00];
        assert!(parse_strict_der(&trailing).is_none());
        assert!(ecdsa_p256_signature_to_der(&trailing).is_err());
        let good = [0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x02];
        assert!(parse_strict_der(&good).is_some());
    }

    #[test]
    fn out_of_range_scalars_are_refused() {
        assert!(ecdsa_p256_signature_to_der(&[0xff; 64]).is_err());
        assert!(ecdsa_p256_signature_to_der(&[0u8; 64]).is_err());
        assert!(ecdsa_p256_signature_to_der(&[]).is_err());
        assert!(ecdsa_p256_signature_to_der(&[0u8; 63]).is_err());
    }
}
