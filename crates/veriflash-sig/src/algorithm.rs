//! Signature algorithms as data, and ECDSA P-256 signature encodings.

use alloc::vec::Vec;
use core::fmt;

use p256::ecdsa::{DerSignature, Signature, signature::Verifier as _};

use crate::{ECDSA_WITH_SHA256, Error, ObjectIdentifier, VerifyingKey};

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

/// Every algorithm this crate supports; what [`crate::Verifier::new`] uses.
pub static DEFAULT_ALGORITHMS: &[&dyn SignatureAlgorithm] = &[&EcdsaP256Sha256];

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
