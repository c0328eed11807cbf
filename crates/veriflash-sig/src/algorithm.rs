//! Signature algorithms as data, and ECDSA P-256 signature encodings.

use alloc::vec::Vec;
use core::fmt;

use p256::ecdsa::{
    DerSignature, Signature,
    signature::{DigestVerifier, Verifier as _, digest::Update},
};
use sha2::{Digest, Sha256, Sha384, Sha512};

use crate::{
    ECDSA_WITH_SHA256, Error, ID_RSASSA_PSS, ObjectIdentifier, SHA256_WITH_RSA_ENCRYPTION,
    VerifyingKey,
};

/// `ecdsa-with-SHA384` (RFC 5758, OID 1.2.840.10045.4.3.3).
pub const ECDSA_WITH_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");
/// `ecdsa-with-SHA512` (RFC 5758, OID 1.2.840.10045.4.3.4).
pub const ECDSA_WITH_SHA512: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.4");
/// `sha384WithRSAEncryption` (RFC 8017, OID 1.2.840.113549.1.1.12).
pub const SHA384_WITH_RSA_ENCRYPTION: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.12");
/// `sha512WithRSAEncryption` (RFC 8017, OID 1.2.840.113549.1.1.13).
pub const SHA512_WITH_RSA_ENCRYPTION: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.13");

/// The PSS salt length, in bytes, this crate signs with and requires when verifying: 32, the
/// SHA-256 output length (FORMAT.md §4).
pub const RSA_PSS_SALT_LEN: usize = 32;

/// The SHA-2 hash functions signature algorithms use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hash {
    Sha256,
    Sha384,
    Sha512,
}

impl Hash {
    /// The hash's OID (NIST, RFC 5754), as in `RSASSA-PSS-params`.
    pub(crate) fn from_oid(oid: ObjectIdentifier) -> Option<Self> {
        match oid {
            ID_SHA256 => Some(Self::Sha256),
            ID_SHA384 => Some(Self::Sha384),
            ID_SHA512 => Some(Self::Sha512),
            _ => None,
        }
    }

    /// The output length in bytes: also the PSS salt length of the matching profile.
    fn len(self) -> usize {
        match self {
            Self::Sha256 => 32,
            Self::Sha384 => 48,
            Self::Sha512 => 64,
        }
    }

    /// The digest of `message`, in a fixed buffer (no allocation on the verify path).
    fn digest(self, message: &[u8]) -> DigestBytes {
        let mut bytes = [0u8; 64];
        let len = match self {
            Self::Sha256 => copy_into(&mut bytes, &Sha256::digest(message)),
            Self::Sha384 => copy_into(&mut bytes, &Sha384::digest(message)),
            Self::Sha512 => copy_into(&mut bytes, &Sha512::digest(message)),
        };
        DigestBytes { bytes, len }
    }
}

const ID_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
const ID_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.2");
const ID_SHA512: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.3");
/// `id-mgf1` (RFC 8017).
pub(crate) const ID_MGF1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.8");

/// Copies `digest` to the front of `out`; returns how many bytes were copied.
fn copy_into(out: &mut [u8; 64], digest: &[u8]) -> usize {
    let mut copied = 0;
    for (o, d) in out.iter_mut().zip(digest) {
        *o = *d;
        copied += 1;
    }
    copied
}

/// A SHA-2 digest of at most 64 bytes.
struct DigestBytes {
    bytes: [u8; 64],
    len: usize,
}

impl DigestBytes {
    fn as_slice(&self) -> &[u8] {
        self.bytes.get(..self.len).unwrap_or(&self.bytes)
    }
}

/// A signature algorithm the verifier can check, identified by the OID a package names.
///
/// Algorithms are values, not code paths: a [`crate::Verifier`] takes a list of
/// `&dyn SignatureAlgorithm` (by default [`DEFAULT_ALGORITHMS`]) and picks the one whose
/// [`oid`](SignatureAlgorithm::oid) a signature claims, the way webpki takes a list of
/// rustls-pki-types `SignatureVerificationAlgorithm`s. Adding RSA (or Ed25519, ML-DSA) is one more
/// value in the list; restricting a device to one algorithm is a shorter list. The trait is
/// object safe, and `Send + Sync` so lists can live in `static`s.
///
/// In certificates an algorithm is named by a whole `AlgorithmIdentifier`; several algorithms
/// may share an OID (ECDSA with SHA-256 over P-256 or P-384 keys, RSA-PSS with different hashes),
/// told apart by [`SignatureAlgorithm::matches_parameters`] and by the key type
/// ([`Error::AlgorithmKeyMismatch`] from [`SignatureAlgorithm::verify`]).
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

    /// Whether a certificate's `AlgorithmIdentifier` with this algorithm's OID and the given
    /// DER `parameters` (`None` when absent) names this algorithm. The default is RFC 5758's
    /// rule for ECDSA: the parameters are absent.
    fn matches_parameters(&self, parameters: Option<&[u8]>) -> bool {
        parameters.is_none()
    }
}

/// The DER encoding of ASN.1 NULL.
const DER_NULL: [u8; 2] = [0x05, 0x00];

/// The elliptic curves of ECDSA keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Curve {
    P256,
    P384,
}

/// ECDSA over a NIST curve with a SHA-2 hash, signatures DER `Ecdsa-Sig-Value` (RFC 3279),
/// verified as strictly as [`EcdsaP256Sha256`]. These are the certificate algorithms of real CA
/// hierarchies (P-384 roots, `ecdsa-with-SHA384`); the values are the statics
/// [`ECDSA_P256_SHA384`], [`ECDSA_P256_SHA512`], [`ECDSA_P384_SHA256`], [`ECDSA_P384_SHA384`]
/// and [`ECDSA_P384_SHA512`]. A digest longer than the curve order is truncated (FIPS 186-5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ecdsa {
    curve: Curve,
    hash: Hash,
    oid: ObjectIdentifier,
    name: &'static str,
}

impl SignatureAlgorithm for Ecdsa {
    fn oid(&self) -> ObjectIdentifier {
        self.oid
    }

    fn name(&self) -> &'static str {
        self.name
    }

    fn verify(&self, key: &VerifyingKey, message: &[u8], signature: &[u8]) -> Result<(), Error> {
        let key_id = key.key_id();
        let verified = match self.curve {
            Curve::P256 => {
                let public = key
                    .as_p256()
                    .ok_or(Error::AlgorithmKeyMismatch { key_id })?;
                let signature =
                    parse_strict_der(signature).ok_or(Error::MalformedSignature { key_id })?;
                match self.hash {
                    Hash::Sha256 => verify_digest::<Sha256, _, _>(public, message, &signature),
                    Hash::Sha384 => verify_digest::<Sha384, _, _>(public, message, &signature),
                    Hash::Sha512 => verify_digest::<Sha512, _, _>(public, message, &signature),
                }
            }
            Curve::P384 => {
                let public = key
                    .as_p384()
                    .ok_or(Error::AlgorithmKeyMismatch { key_id })?;
                let signature =
                    parse_strict_der_p384(signature).ok_or(Error::MalformedSignature { key_id })?;
                match self.hash {
                    Hash::Sha256 => verify_digest::<Sha256, _, _>(public, message, &signature),
                    Hash::Sha384 => verify_digest::<Sha384, _, _>(public, message, &signature),
                    Hash::Sha512 => verify_digest::<Sha512, _, _>(public, message, &signature),
                }
            }
        };
        verified.map_err(|_| Error::BadSignature { key_id })
    }
}

/// Verifies an ECDSA `signature` of `message` hashed with `D` (the digest is truncated to the
/// curve order's size when longer, FIPS 186-5).
fn verify_digest<D, K, S>(
    key: &K,
    message: &[u8],
    signature: &S,
) -> p256::ecdsa::signature::Result<()>
where
    D: Update,
    K: DigestVerifier<D, S>,
{
    key.verify_digest(
        |digest: &mut D| {
            digest.update(message);
            Ok(())
        },
        signature,
    )
}

const fn ecdsa(curve: Curve, hash: Hash, oid: ObjectIdentifier, name: &'static str) -> Ecdsa {
    Ecdsa {
        curve,
        hash,
        oid,
        name,
    }
}

const P256_SHA384: Ecdsa = ecdsa(
    Curve::P256,
    Hash::Sha384,
    ECDSA_WITH_SHA384,
    "ecdsa-p256-sha384",
);
const P256_SHA512: Ecdsa = ecdsa(
    Curve::P256,
    Hash::Sha512,
    ECDSA_WITH_SHA512,
    "ecdsa-p256-sha512",
);
const P384_SHA256: Ecdsa = ecdsa(
    Curve::P384,
    Hash::Sha256,
    ECDSA_WITH_SHA256,
    "ecdsa-p384-sha256",
);
const P384_SHA384: Ecdsa = ecdsa(
    Curve::P384,
    Hash::Sha384,
    ECDSA_WITH_SHA384,
    "ecdsa-p384-sha384",
);
const P384_SHA512: Ecdsa = ecdsa(
    Curve::P384,
    Hash::Sha512,
    ECDSA_WITH_SHA512,
    "ecdsa-p384-sha512",
);

/// ECDSA P-256 with SHA-384 (`ecdsa-with-SHA384`).
pub static ECDSA_P256_SHA384: &dyn SignatureAlgorithm = &P256_SHA384;
/// ECDSA P-256 with SHA-512 (`ecdsa-with-SHA512`).
pub static ECDSA_P256_SHA512: &dyn SignatureAlgorithm = &P256_SHA512;
/// ECDSA P-384 with SHA-256 (`ecdsa-with-SHA256` under a P-384 key).
pub static ECDSA_P384_SHA256: &dyn SignatureAlgorithm = &P384_SHA256;
/// ECDSA P-384 with SHA-384 (`ecdsa-with-SHA384`), what P-384 CAs sign with.
pub static ECDSA_P384_SHA384: &dyn SignatureAlgorithm = &P384_SHA384;
/// ECDSA P-384 with SHA-512 (`ecdsa-with-SHA512`).
pub static ECDSA_P384_SHA512: &dyn SignatureAlgorithm = &P384_SHA512;

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

    /// The package algorithm keeps its own direct path (the verify throughput is measured on
    /// it); [`Ecdsa`] serves the certificate variants.
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

/// RSASSA-PKCS1-v1_5 with a SHA-2 hash (RFC 8017 §8.2): the statics [`RSA_PKCS1_SHA384`] and
/// [`RSA_PKCS1_SHA512`] (`sha384WithRSAEncryption`, `sha512WithRSAEncryption`), verified as
/// strictly as [`RsaPkcs1Sha256`]. A key restricted to RSASSA-PSS (`id-RSASSA-PSS`
/// SubjectPublicKeyInfo) is refused with [`Error::AlgorithmKeyMismatch`] (RFC 4055 §1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RsaPkcs1 {
    hash: Hash,
    oid: ObjectIdentifier,
    name: &'static str,
}

impl SignatureAlgorithm for RsaPkcs1 {
    fn oid(&self) -> ObjectIdentifier {
        self.oid
    }

    fn name(&self) -> &'static str {
        self.name
    }

    fn verify(&self, key: &VerifyingKey, message: &[u8], signature: &[u8]) -> Result<(), Error> {
        let key_id = key.key_id();
        if key.rsa_pss_restriction().is_some() {
            return Err(Error::AlgorithmKeyMismatch { key_id });
        }
        let digest = self.hash.digest(message);
        let scheme = match self.hash {
            Hash::Sha256 => rsa::Pkcs1v15Sign::new::<Sha256>(),
            Hash::Sha384 => rsa::Pkcs1v15Sign::new::<Sha384>(),
            Hash::Sha512 => rsa::Pkcs1v15Sign::new::<Sha512>(),
        };
        verify_rsa(key, digest.as_slice(), signature, scheme)
    }

    /// RFC 4055 §5 says NULL; absent parameters are accepted too, as every validator does.
    fn matches_parameters(&self, parameters: Option<&[u8]>) -> bool {
        parameters.is_none_or(|p| p == DER_NULL)
    }
}

const PKCS1_SHA384: RsaPkcs1 = RsaPkcs1 {
    hash: Hash::Sha384,
    oid: SHA384_WITH_RSA_ENCRYPTION,
    name: "rsa-pkcs1-sha384",
};
const PKCS1_SHA512: RsaPkcs1 = RsaPkcs1 {
    hash: Hash::Sha512,
    oid: SHA512_WITH_RSA_ENCRYPTION,
    name: "rsa-pkcs1-sha512",
};
/// RSA PKCS#1 v1.5 with SHA-384 (`sha384WithRSAEncryption`).
pub static RSA_PKCS1_SHA384: &dyn SignatureAlgorithm = &PKCS1_SHA384;
/// RSA PKCS#1 v1.5 with SHA-512 (`sha512WithRSAEncryption`).
pub static RSA_PKCS1_SHA512: &dyn SignatureAlgorithm = &PKCS1_SHA512;

/// RSASSA-PKCS1-v1_5 with SHA-256 (`sha256WithRSAEncryption`, OID 1.2.840.113549.1.1.11,
/// RFC 8017 §8.2), what `openssl dgst -sha256 -sign rsa.pem` makes.
///
/// The key must be RSA with a 2048-, 3072- or 4096-bit modulus (enforced when the key is made);
/// the signature must be exactly as long as the modulus and below it, and the encoded
/// `DigestInfo` must be byte-identical to the one for SHA-256 (no missing NULL parameters, no
/// garbage): the encoding is recomputed and compared, never parsed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RsaPkcs1Sha256;

const RSA_PKCS1_SHA256_PROFILE: RsaPkcs1 = RsaPkcs1 {
    hash: Hash::Sha256,
    oid: SHA256_WITH_RSA_ENCRYPTION,
    name: "rsa-pkcs1-sha256",
};

impl SignatureAlgorithm for RsaPkcs1Sha256 {
    fn oid(&self) -> ObjectIdentifier {
        SHA256_WITH_RSA_ENCRYPTION
    }

    fn name(&self) -> &'static str {
        "rsa-pkcs1-sha256"
    }

    fn verify(&self, key: &VerifyingKey, message: &[u8], signature: &[u8]) -> Result<(), Error> {
        RSA_PKCS1_SHA256_PROFILE.verify(key, message, signature)
    }

    fn matches_parameters(&self, parameters: Option<&[u8]>) -> bool {
        RSA_PKCS1_SHA256_PROFILE.matches_parameters(parameters)
    }
}

/// RSASSA-PSS (`id-RSASSA-PSS`, RFC 8017 §8.1) with one SHA-2 hash for both the message and
/// MGF1, a salt exactly as long as the hash, trailer field 1: the three profiles RFC 8702 and
/// the CA/Browser Forum name. The values are [`RSA_PSS_SHA256`] (also a package algorithm),
/// [`RSA_PSS_SHA384`] and [`RSA_PSS_SHA512`]; in a certificate the `RSASSA-PSS-params` must
/// say exactly that profile.
///
/// A key whose SubjectPublicKeyInfo is `id-RSASSA-PSS` with parameters is usable only with the
/// profile it names, exactly: same hash and MGF1 hash and the same salt length (RFC 4055 §3.1
/// reads the key's `saltLength` as a minimum; one key, one profile is stricter and never
/// ambiguous); otherwise [`Error::AlgorithmKeyMismatch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RsaPss {
    hash: Hash,
    name: &'static str,
}

/// The parameters an `id-RSASSA-PSS` key or signature algorithm names (RFC 4055 §3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PssParameters {
    pub(crate) hash: Hash,
    pub(crate) mgf_hash: Hash,
    pub(crate) salt_len: usize,
}

/// Parses DER `RSASSA-PSS-params`; `None` for anything outside SHA-256/384/512 with MGF1 and
/// trailer field 1 (SHA-1, the default, included: it is not accepted anywhere here).
pub(crate) fn parse_pss_parameters(der: &[u8]) -> Option<PssParameters> {
    use der::Decode;
    let params = rsa::pkcs1::RsaPssParamsOwned::from_der(der).ok()?;
    let null_or_absent =
        |p: &Option<der::asn1::Any>| p.as_ref().is_none_or(der::asn1::Any::is_null);
    if params.trailer_field != rsa::pkcs1::TrailerField::BC
        || params.mask_gen.oid != ID_MGF1
        || !null_or_absent(&params.hash.parameters)
    {
        return None;
    }
    let mgf = params.mask_gen.parameters?;
    if !null_or_absent(&mgf.parameters) {
        return None;
    }
    Some(PssParameters {
        hash: Hash::from_oid(params.hash.oid)?,
        mgf_hash: Hash::from_oid(mgf.oid)?,
        salt_len: usize::from(params.salt_len),
    })
}

impl RsaPss {
    fn profile(&self) -> PssParameters {
        PssParameters {
            hash: self.hash,
            mgf_hash: self.hash,
            salt_len: self.hash.len(),
        }
    }
}

impl SignatureAlgorithm for RsaPss {
    fn oid(&self) -> ObjectIdentifier {
        ID_RSASSA_PSS
    }

    fn name(&self) -> &'static str {
        self.name
    }

    fn verify(&self, key: &VerifyingKey, message: &[u8], signature: &[u8]) -> Result<(), Error> {
        let profile = self.profile();
        if let Some(Some(restriction)) = key.rsa_pss_restriction()
            && restriction != profile
        {
            return Err(Error::AlgorithmKeyMismatch {
                key_id: key.key_id(),
            });
        }
        let digest = self.hash.digest(message);
        let salt = profile.salt_len;
        match self.hash {
            Hash::Sha256 => verify_rsa(
                key,
                digest.as_slice(),
                signature,
                rsa::Pss::<Sha256>::new_with_salt(salt),
            ),
            Hash::Sha384 => verify_rsa(
                key,
                digest.as_slice(),
                signature,
                rsa::Pss::<Sha384>::new_with_salt(salt),
            ),
            Hash::Sha512 => verify_rsa(
                key,
                digest.as_slice(),
                signature,
                rsa::Pss::<Sha512>::new_with_salt(salt),
            ),
        }
    }

    fn matches_parameters(&self, parameters: Option<&[u8]>) -> bool {
        parameters.and_then(parse_pss_parameters) == Some(self.profile())
    }
}

const PSS_SHA384: RsaPss = RsaPss {
    hash: Hash::Sha384,
    name: "rsa-pss-sha384",
};
const PSS_SHA512: RsaPss = RsaPss {
    hash: Hash::Sha512,
    name: "rsa-pss-sha512",
};
/// RSA-PSS with SHA-384, MGF1-SHA-384, salt 48.
pub static RSA_PSS_SHA384: &dyn SignatureAlgorithm = &PSS_SHA384;
/// RSA-PSS with SHA-512, MGF1-SHA-512, salt 64.
pub static RSA_PSS_SHA512: &dyn SignatureAlgorithm = &PSS_SHA512;

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

const RSA_PSS_SHA256_PROFILE: RsaPss = RsaPss {
    hash: Hash::Sha256,
    name: "rsa-pss-sha256",
};

impl SignatureAlgorithm for RsaPssSha256 {
    fn oid(&self) -> ObjectIdentifier {
        ID_RSASSA_PSS
    }

    fn name(&self) -> &'static str {
        "rsa-pss-sha256"
    }

    fn verify(&self, key: &VerifyingKey, message: &[u8], signature: &[u8]) -> Result<(), Error> {
        RSA_PSS_SHA256_PROFILE.verify(key, message, signature)
    }

    fn matches_parameters(&self, parameters: Option<&[u8]>) -> bool {
        RSA_PSS_SHA256_PROFILE.matches_parameters(parameters)
    }
}

/// The RSA verification both paddings share: the key must be RSA, the signature as long as the
/// modulus, and `scheme` must accept it over the message's `digest` (failures stay opaque).
fn verify_rsa(
    key: &VerifyingKey,
    digest: &[u8],
    signature: &[u8],
    scheme: impl rsa::traits::SignatureScheme,
) -> Result<(), Error> {
    let key_id = key.key_id();
    let Some(public) = key.as_rsa() else {
        return Err(Error::AlgorithmKeyMismatch { key_id });
    };
    check_rsa_signature_len(public, signature, key)?;
    public
        .verify(scheme, digest, signature)
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

/// Every algorithm a package signature may use (FORMAT.md §4), what [`crate::Verifier::new`]
/// uses: ECDSA P-256, RSA PKCS#1 v1.5 and RSA PSS, all with SHA-256.
pub static DEFAULT_ALGORITHMS: &[&dyn SignatureAlgorithm] =
    &[&EcdsaP256Sha256, &RsaPkcs1Sha256, &RsaPssSha256];

/// Every algorithm a certificate of a chain may be signed with, what [`crate::verify_chain`]
/// and [`crate::Verifier::new`] use for chains: [`DEFAULT_ALGORITHMS`] plus the SHA-384 and
/// SHA-512 variants and P-384 keys that real CA hierarchies use (RSA PKCS#1 v1.5 and PSS with
/// SHA-384/512; ECDSA P-256 and P-384 with SHA-256/384/512). Package signatures stay
/// [`DEFAULT_ALGORITHMS`]: the format names only those.
pub static CERTIFICATE_ALGORITHMS: &[&dyn SignatureAlgorithm] = &[
    &EcdsaP256Sha256,
    &RsaPkcs1Sha256,
    &RsaPssSha256,
    &P256_SHA384,
    &P256_SHA512,
    &P384_SHA256,
    &P384_SHA384,
    &P384_SHA512,
    &PKCS1_SHA384,
    &PKCS1_SHA512,
    &PSS_SHA384,
    &PSS_SHA512,
];

/// Parses a strict DER `Ecdsa-Sig-Value` for P-256: minimal DER, nothing trailing, `r` and `s`
/// in range, and byte-identical to the re-encoding of `(r, s)`.
fn parse_strict_der(bytes: &[u8]) -> Option<Signature> {
    let der = DerSignature::from_bytes(bytes).ok()?;
    let signature = Signature::try_from(der).ok()?;
    (signature.to_der().as_bytes() == bytes).then_some(signature)
}

/// [`parse_strict_der`] for P-384.
fn parse_strict_der_p384(bytes: &[u8]) -> Option<p384::ecdsa::Signature> {
    let der = p384::ecdsa::DerSignature::from_bytes(bytes).ok()?;
    let signature = p384::ecdsa::Signature::try_from(der).ok()?;
    (signature.to_der().as_bytes() == bytes).then_some(signature)
}

/// How an externally made ECDSA P-256 signature is encoded. The caller says which: the two
/// forms overlap (a 64-byte `r || s` can happen to parse as DER), so guessing could misread a
/// valid signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EcdsaSignatureEncoding {
    /// A DER `Ecdsa-Sig-Value` (RFC 3279), what `openssl dgst -sign` writes.
    Der,
    /// The fixed 64-byte big-endian `r || s` (IEEE P1363), what PKCS#11 `CKM_ECDSA` returns.
    Raw,
}

/// Canonicalises an externally made ECDSA P-256 signature in `encoding` to the DER form
/// packages carry.
///
/// # Errors
/// [`Error::InvalidSignatureEncoding`] when the input is not a strict DER `Ecdsa-Sig-Value`
/// ([`EcdsaSignatureEncoding::Der`]) or not 64 bytes ([`EcdsaSignatureEncoding::Raw`]), or `r`
/// or `s` is zero or not below the group order.
///
/// # Example
/// ```
/// use veriflash_sig::{EcdsaSignatureEncoding::{Der, Raw}, ecdsa_p256_signature_to_der};
/// # fn main() -> Result<(), veriflash_sig::Error> {
/// let mut raw = [0u8; 64];
/// raw[31] = 1; // r = 1
/// raw[63] = 2; // s = 2
/// let der = ecdsa_p256_signature_to_der(&raw, Raw)?;
/// assert_eq!(der, [0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x02]);
/// // Already DER: returned unchanged.
/// assert_eq!(ecdsa_p256_signature_to_der(&der, Der)?, der);
/// // DER is not read as r || s, nor the reverse.
/// assert!(ecdsa_p256_signature_to_der(&der, Raw).is_err());
/// assert!(ecdsa_p256_signature_to_der(&raw, Der).is_err());
/// // r = s = 0 is not a signature.
/// assert!(ecdsa_p256_signature_to_der(&[0u8; 64], Raw).is_err());
/// # Ok(())
/// # }
/// ```
pub fn ecdsa_p256_signature_to_der(
    sig: &[u8],
    encoding: EcdsaSignatureEncoding,
) -> Result<Vec<u8>, Error> {
    let signature = match encoding {
        EcdsaSignatureEncoding::Der => {
            parse_strict_der(sig).ok_or(Error::InvalidSignatureEncoding {
                reason: "not a strict DER Ecdsa-Sig-Value with r and s in range",
            })?
        }
        EcdsaSignatureEncoding::Raw => {
            if sig.len() != 64 {
                return Err(Error::InvalidSignatureEncoding {
                    reason: "an r||s signature must be exactly 64 bytes",
                });
            }
            Signature::from_slice(sig).map_err(|_| Error::InvalidSignatureEncoding {
                reason: "r or s is zero or not below the P-256 group order",
            })?
        }
    };
    Ok(signature.to_der().as_bytes().to_vec())
}

/// Converts a P-256 signature in `encoding` to the fixed 64-byte `r || s` form, for tools that
/// hand signatures to systems expecting it (JOSE, PKCS#11).
///
/// # Errors
/// As [`ecdsa_p256_signature_to_der`].
pub fn ecdsa_p256_signature_to_raw(
    sig: &[u8],
    encoding: EcdsaSignatureEncoding,
) -> Result<[u8; 64], Error> {
    let der = ecdsa_p256_signature_to_der(sig, encoding)?;
    let signature = parse_strict_der(&der).ok_or(Error::InvalidSignatureEncoding {
        reason: "not a strict DER Ecdsa-Sig-Value with r and s in range",
    })?;
    Ok(signature.to_bytes().into())
}

#[cfg(test)]
mod tests {
    use super::EcdsaSignatureEncoding::{Der, Raw};
    use super::*;

    #[test]
    fn raw_and_der_round_trip() {
        let mut raw = [0u8; 64];
        raw[0] = 0x80; // r needs a leading zero in DER
        raw[31] = 7;
        raw[32] = 0x01;
        raw[63] = 9;
        let der = ecdsa_p256_signature_to_der(&raw, Raw).unwrap();
        assert_eq!(der[0], 0x30);
        assert_eq!(&der[2..5], &[0x02, 0x21, 0x00]);
        assert_eq!(ecdsa_p256_signature_to_raw(&der, Der).unwrap(), raw);
        assert_eq!(ecdsa_p256_signature_to_raw(&raw, Raw).unwrap(), raw);
        assert_eq!(ecdsa_p256_signature_to_der(&der, Der).unwrap(), der);
    }

    #[test]
    fn non_minimal_and_trailing_der_is_refused() {
        // r = 1 encoded with a superfluous leading zero.
        let non_minimal = [0x30, 0x07, 0x02, 0x02, 0x00, 0x01, 0x02, 0x01, 0x02];
        assert!(parse_strict_der(&non_minimal).is_none());
        let trailing = [0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x02, 0x00];
        assert!(parse_strict_der(&trailing).is_none());
        assert!(ecdsa_p256_signature_to_der(&trailing, Der).is_err());
        let good = [0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x02];
        assert!(parse_strict_der(&good).is_some());
    }

    #[test]
    fn out_of_range_scalars_are_refused() {
        assert!(ecdsa_p256_signature_to_der(&[0xff; 64], Raw).is_err());
        assert!(ecdsa_p256_signature_to_der(&[0u8; 64], Raw).is_err());
        assert!(ecdsa_p256_signature_to_der(&[], Raw).is_err());
        assert!(ecdsa_p256_signature_to_der(&[], Der).is_err());
        assert!(ecdsa_p256_signature_to_der(&[0u8; 63], Raw).is_err());
    }

    #[test]
    fn pss_parameters_name_exactly_one_profile() {
        // What openssl writes for SHA-256 / MGF1-SHA-256 / salt 32.
        let sha256 = [
            0x30, 0x34, 0xa0, 0x0f, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03,
            0x04, 0x02, 0x01, 0x05, 0x00, 0xa1, 0x1c, 0x30, 0x1a, 0x06, 0x09, 0x2a, 0x86, 0x48,
            0x86, 0xf7, 0x0d, 0x01, 0x01, 0x08, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01,
            0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0xa2, 0x03, 0x02, 0x01, 0x20,
        ];
        assert!(RSA_PSS_SHA256.matches_parameters(Some(&sha256)));
        assert!(!RSA_PSS_SHA384.matches_parameters(Some(&sha256)));
        assert!(!RSA_PSS_SHA256.matches_parameters(None));
        // The empty SEQUENCE: all defaults, SHA-1.
        assert!(!RSA_PSS_SHA256.matches_parameters(Some(&[0x30, 0x00])));
    }
}
