//! Public and private keys of the supported algorithms.

use alloc::{string::String, vec::Vec};
use core::fmt;

use der::Decode;
use p256::pkcs8::{DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use zeroize::Zeroizing;

use crate::{
    ECDSA_WITH_SHA256, Error, ID_RSASSA_PSS, KeyId, ObjectIdentifier, SHA256_WITH_RSA_ENCRYPTION,
    algorithm::{PssParameters, parse_pss_parameters},
    pem,
};

/// `id-ecPublicKey` (RFC 5480): the SPKI / PKCS#8 algorithm of every EC key.
const ID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
/// `secp256r1` / `prime256v1` (RFC 5480): the named curve P-256.
const SECP256R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
/// `secp384r1` (RFC 5480): the named curve P-384, for CA keys in certificate chains.
const SECP384R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
/// `rsaEncryption` (RFC 8017): the SPKI / PKCS#8 algorithm of RSA keys.
pub(crate) const RSA_ENCRYPTION: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");

/// The largest DER `SubjectPublicKeyInfo` accepted: room for RSA-8192, far above any key this
/// crate will support, so a hostile length cannot make a parser work on megabytes.
pub const MAX_SPKI_LEN: usize = 2048;

/// The RSA modulus sizes, in bits, this crate accepts: 2048, 3072 and 4096. Smaller keys are
/// refused with [`Error::RsaKeyTooSmall`], any other size with [`Error::RsaKeySizeUnsupported`].
pub const RSA_MODULUS_BITS: [usize; 3] = [2048, 3072, 4096];

/// The RSA signature padding a [`SigningKey`] uses (verification picks the padding from the
/// signature's algorithm OID, never from the key).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RsaPadding {
    /// RSASSA-PKCS1-v1_5 with SHA-256 (`sha256WithRSAEncryption`), deterministic; the default,
    /// and what `openssl dgst -sha256 -sign` makes.
    #[default]
    Pkcs1v15,
    /// RSASSA-PSS with SHA-256, MGF1-SHA-256 and a 32-byte salt (`id-RSASSA-PSS`), what
    /// `openssl dgst -sha256 -sign key.pem -sigopt rsa_padding_mode:pss -sigopt
    /// rsa_pss_saltlen:32` makes.
    Pss,
}
/// The largest DER private key accepted (PKCS#8 or SEC1), for the same reason.
pub const MAX_PRIVATE_KEY_LEN: usize = 8192;

/// The algorithm-specific key inside a [`VerifyingKey`]. Private: RSA becomes another variant
/// without changing the public API.
#[derive(Clone, PartialEq, Eq)]
enum PublicKeyInner {
    P256(p256::ecdsa::VerifyingKey),
    /// Only for verifying certificates: packages are signed with P-256 or RSA (FORMAT.md §4).
    P384(p384::ecdsa::VerifyingKey),
    Rsa(rsa::PublicKey),
    /// An `id-RSASSA-PSS` key (RFC 4055 §1.2): usable only for PSS, and when `restriction` is
    /// present only with the parameters it names.
    RsaPss {
        key: rsa::PublicKey,
        restriction: Option<PssParameters>,
    },
}

/// A public key of a supported algorithm: what a trust anchor pins and a signature is checked
/// against.
///
/// ECDSA P-256 and P-384 keys and RSA keys of 2048, 3072 or 4096 bits ([`RSA_MODULUS_BITS`]),
/// `rsaEncryption` or `id-RSASSA-PSS` (RFC 4055); code that stores, pins or compares keys does
/// not care which. Which signatures a key can check is the algorithms' business: packages are
/// signed with P-256 or RSA only, P-384 keys appear as CA keys in certificate chains.
///
/// The key is kept together with its canonical DER `SubjectPublicKeyInfo` (for EC keys:
/// uncompressed point, named curve; for RSA: `rsaEncryption` with NULL parameters — both as
/// `openssl pkey -pubout` writes; an `id-RSASSA-PSS` key keeps its parameters as given) and its
/// [`KeyId`], computed once when the key is made, so neither can fail or cost a hash later.
#[derive(Clone, PartialEq, Eq)]
pub struct VerifyingKey {
    inner: PublicKeyInner,
    spki_der: Vec<u8>,
    pem: String,
    key_id: KeyId,
}

impl VerifyingKey {
    fn from_p256(key: p256::ecdsa::VerifyingKey) -> Result<Self, Error> {
        let document = key.to_public_key_der().map_err(|_| Error::Encoding {
            what: "SubjectPublicKeyInfo",
        })?;
        Self::from_inner(PublicKeyInner::P256(key), document.as_bytes().to_vec())
    }

    fn from_p384(key: p384::ecdsa::VerifyingKey) -> Result<Self, Error> {
        let document = key.to_public_key_der().map_err(|_| Error::Encoding {
            what: "SubjectPublicKeyInfo",
        })?;
        Self::from_inner(PublicKeyInner::P384(key), document.as_bytes().to_vec())
    }

    fn from_rsa(key: rsa::PublicKey) -> Result<Self, Error> {
        check_rsa_bits(key_bits(&key))?;
        let document = key.to_public_key_der().map_err(|_| Error::Encoding {
            what: "SubjectPublicKeyInfo",
        })?;
        Self::from_inner(PublicKeyInner::Rsa(key), document.as_bytes().to_vec())
    }

    fn from_inner(inner: PublicKeyInner, spki_der: Vec<u8>) -> Result<Self, Error> {
        let pem = pem::encode("PUBLIC KEY", &spki_der)?;
        Ok(Self {
            inner,
            key_id: KeyId::of_spki_der(&spki_der),
            pem: String::from(pem.as_str()),
            spki_der,
        })
    }

    /// Decodes a DER `SubjectPublicKeyInfo` (RFC 5280), the form keys are pinned and hashed in.
    ///
    /// The encoding must be strict DER with nothing after it. A P-256 point may be compressed;
    /// [`VerifyingKey::to_spki_der`] and [`VerifyingKey::key_id`] always use the canonical
    /// uncompressed encoding, so one key has one id however it was supplied.
    ///
    /// An EC key must be on the named curve P-256 or P-384. An RSA key (`rsaEncryption` with
    /// NULL parameters, or `id-RSASSA-PSS` with absent parameters or `RSASSA-PSS-params` naming
    /// SHA-256/384/512 and MGF1) must have a modulus of exactly 2048, 3072 or 4096 bits and a
    /// public exponent the `rsa` crate accepts (odd, 3 ..= 2^33 - 1).
    ///
    /// # Errors
    /// [`Error::InvalidKey`] when the bytes are not a valid SPKI or the point is not on the
    /// curve, or the curve is not P-256 or P-384, or the RSA key or its PSS parameters are
    /// malformed or name another hash (SHA-1);
    /// [`Error::RsaKeyTooSmall`] for an RSA modulus under 2048 bits;
    /// [`Error::RsaKeySizeUnsupported`] for any other size not in [`RSA_MODULUS_BITS`];
    /// [`Error::UnsupportedKeyAlgorithm`] for any key type other than EC and RSA.
    pub fn from_spki_der(der: &[u8]) -> Result<Self, Error> {
        if der.len() > MAX_SPKI_LEN {
            return Err(Error::InvalidKey {
                reason: "SubjectPublicKeyInfo is too long",
            });
        }
        let spki = spki::SubjectPublicKeyInfoRef::from_der(der).map_err(|_| Error::InvalidKey {
            reason: "not a DER SubjectPublicKeyInfo",
        })?;
        if spki.algorithm.oid == RSA_ENCRYPTION {
            return Self::rsa_from_spki(spki);
        }
        if spki.algorithm.oid == ID_RSASSA_PSS {
            return Self::rsa_pss_from_spki(spki, der);
        }
        let (oid, parameters) = spki.algorithm.oids().map_err(|_| Error::InvalidKey {
            reason: "malformed key algorithm parameters",
        })?;
        if oid != ID_EC_PUBLIC_KEY {
            return Err(Error::UnsupportedKeyAlgorithm { oid });
        }
        if parameters == Some(SECP384R1) {
            let key = p384::ecdsa::VerifyingKey::from_public_key_der(der).map_err(|_| {
                Error::InvalidKey {
                    reason: "not a valid P-384 public key",
                }
            })?;
            return Self::from_p384(key);
        }
        if parameters != Some(SECP256R1) {
            return Err(Error::InvalidKey {
                reason: "EC key not on the named curve P-256 or P-384",
            });
        }
        let key =
            p256::ecdsa::VerifyingKey::from_public_key_der(der).map_err(|_| Error::InvalidKey {
                reason: "not a valid P-256 public key",
            })?;
        Self::from_p256(key)
    }

    /// An `id-RSASSA-PSS` key (RFC 4055 §1.2, §3.1): parameters absent (any PSS profile) or
    /// `RSASSA-PSS-params` that restrict it to one. The SPKI is kept as given: it is strict DER,
    /// and its parameters are part of what the key is.
    fn rsa_pss_from_spki(
        spki: spki::SubjectPublicKeyInfoRef<'_>,
        der: &[u8],
    ) -> Result<Self, Error> {
        use der::Encode;
        let restriction = match spki.algorithm.parameters {
            None => None,
            Some(params) => {
                let params_der = params.to_der().map_err(|_| Error::InvalidKey {
                    reason: "malformed key algorithm parameters",
                })?;
                Some(parse_pss_parameters(&params_der).ok_or(Error::InvalidKey {
                    reason: "id-RSASSA-PSS key parameters are not SHA-256/384/512 with MGF1",
                })?)
            }
        };
        let key = rsa_public_key(spki)?;
        check_rsa_bits(key_bits(&key))?;
        Self::from_inner(PublicKeyInner::RsaPss { key, restriction }, der.to_vec())
    }

    fn rsa_from_spki(spki: spki::SubjectPublicKeyInfoRef<'_>) -> Result<Self, Error> {
        let null_params = spki
            .algorithm
            .parameters
            .as_ref()
            .is_some_and(|params| params.is_null());
        if !null_params {
            return Err(Error::InvalidKey {
                reason: "rsaEncryption key without NULL parameters",
            });
        }
        Self::from_rsa(rsa_public_key(spki)?)
    }

    /// Decodes a `-----BEGIN PUBLIC KEY-----` PEM block, as `openssl pkey -pubout` writes.
    ///
    /// Text around the block is ignored; the text must hold exactly one `PUBLIC KEY` block.
    ///
    /// # Errors
    /// [`Error::Pem`] when there is no `PUBLIC KEY` block, more than one, or it is not valid PEM;
    /// [`Error::InvalidKey`] when the text holds a private key instead (a private key must never
    /// be pinned as a trust anchor); otherwise as [`VerifyingKey::from_spki_der`].
    pub fn from_public_key_pem(pem: &str) -> Result<Self, Error> {
        let mut keys = public_keys_from_pem(pem)?;
        match (keys.pop(), keys.is_empty()) {
            (Some(key), true) => Ok(key),
            (Some(_), false) => Err(Error::Pem {
                reason: "more than one PUBLIC KEY block",
            }),
            (None, _) => Err(Error::Pem {
                reason: "no PUBLIC KEY block",
            }),
        }
    }

    /// The canonical DER `SubjectPublicKeyInfo` of this key, byte for byte what
    /// `openssl pkey -pubout -outform DER` writes for it.
    #[must_use]
    pub fn to_spki_der(&self) -> Vec<u8> {
        self.spki_der.clone()
    }

    /// The canonical DER `SubjectPublicKeyInfo`, borrowed.
    #[must_use]
    pub fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }

    /// The key as a `PUBLIC KEY` PEM block (LF line endings), as `openssl pkey -pubout` writes.
    #[must_use]
    pub fn to_public_key_pem(&self) -> String {
        self.pem.clone()
    }

    /// The key id: SHA-256 of [`VerifyingKey::to_spki_der`].
    #[must_use]
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// A short stable name of the key's algorithm, for logs and key listings: `"ecdsa-p256"`,
    /// `"ecdsa-p384"`, `"rsa-2048"`, `"rsa-3072"`, `"rsa-4096"`, or `"rsa-pss-2048"` (and 3072,
    /// 4096) for an `id-RSASSA-PSS` key.
    #[must_use]
    pub fn algorithm_name(&self) -> &'static str {
        match &self.inner {
            PublicKeyInner::P256(_) => "ecdsa-p256",
            PublicKeyInner::P384(_) => "ecdsa-p384",
            PublicKeyInner::Rsa(key) => match key_bits(key) {
                2048 => "rsa-2048",
                3072 => "rsa-3072",
                _ => "rsa-4096",
            },
            PublicKeyInner::RsaPss { key, .. } => match key_bits(key) {
                2048 => "rsa-pss-2048",
                3072 => "rsa-pss-3072",
                _ => "rsa-pss-4096",
            },
        }
    }

    /// The RSA modulus size in bits, or `None` for a non-RSA key.
    #[must_use]
    pub fn rsa_bits(&self) -> Option<usize> {
        self.as_rsa().map(key_bits)
    }

    /// The P-256 key, if this is one; what the ECDSA algorithms verify with.
    pub(crate) fn as_p256(&self) -> Option<&p256::ecdsa::VerifyingKey> {
        match &self.inner {
            PublicKeyInner::P256(key) => Some(key),
            _ => None,
        }
    }

    /// The P-384 key, if this is one.
    pub(crate) fn as_p384(&self) -> Option<&p384::ecdsa::VerifyingKey> {
        match &self.inner {
            PublicKeyInner::P384(key) => Some(key),
            _ => None,
        }
    }

    /// The RSA key, if this is one (`rsaEncryption` or `id-RSASSA-PSS`); what the RSA
    /// algorithms verify with.
    pub(crate) fn as_rsa(&self) -> Option<&rsa::PublicKey> {
        match &self.inner {
            PublicKeyInner::Rsa(key) | PublicKeyInner::RsaPss { key, .. } => Some(key),
            _ => None,
        }
    }

    /// `Some` for an `id-RSASSA-PSS` key, holding the parameters it is restricted to, if any;
    /// `None` for every other key.
    pub(crate) fn rsa_pss_restriction(&self) -> Option<Option<PssParameters>> {
        match &self.inner {
            PublicKeyInner::RsaPss { restriction, .. } => Some(*restriction),
            _ => None,
        }
    }
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("algorithm", &self.algorithm_name())
            .field("key_id", &self.key_id)
            .finish()
    }
}

/// The bit length of a big-endian unsigned integer.
fn modulus_bits(bytes: &[u8]) -> usize {
    let mut rest = bytes;
    while let [0, tail @ ..] = rest {
        rest = tail;
    }
    match rest.first() {
        None => 0,
        Some(&first) => rest
            .len()
            .saturating_mul(8)
            .saturating_sub(usize::try_from(first.leading_zeros()).unwrap_or(0)),
    }
}

/// The modulus size of an RSA key in bits.
fn key_bits(key: &rsa::PublicKey) -> usize {
    use rsa::traits::PublicKeyParts;
    usize::try_from(key.n().as_ref().bit_width_vartime()).unwrap_or(usize::MAX)
}

/// The RSA key in an SPKI's bit string (whatever its algorithm OID), its size checked before
/// the `rsa` crate does any arithmetic with it.
fn rsa_public_key(spki: spki::SubjectPublicKeyInfoRef<'_>) -> Result<rsa::PublicKey, Error> {
    use rsa::pkcs1::DecodeRsaPublicKey;
    let bits = spki
        .subject_public_key
        .as_bytes()
        .ok_or(Error::InvalidKey {
            reason: "RSA public key bit string is not octet aligned",
        })?;
    let pkcs1 = rsa::pkcs1::RsaPublicKeyRef::from_der(bits).map_err(|_| Error::InvalidKey {
        reason: "not a DER RSAPublicKey",
    })?;
    check_rsa_bits(modulus_bits(pkcs1.modulus.as_bytes()))?;
    rsa::PublicKey::from_pkcs1_der(bits).map_err(|_| Error::InvalidKey {
        reason: "not a valid RSA public key",
    })
}

/// Refuses RSA moduli not in [`RSA_MODULUS_BITS`].
fn check_rsa_bits(bits: usize) -> Result<(), Error> {
    if bits < 2048 {
        Err(Error::RsaKeyTooSmall { bits })
    } else if RSA_MODULUS_BITS.contains(&bits) {
        Ok(())
    } else {
        Err(Error::RsaKeySizeUnsupported { bits })
    }
}

/// Every `PUBLIC KEY` block in `text`, in order (none is not an error here).
pub(crate) fn public_keys_from_pem(text: &str) -> Result<Vec<VerifyingKey>, Error> {
    let blocks = pem::blocks(text)?;
    let mut keys = Vec::new();
    let mut saw_private = false;
    for block in &blocks {
        match block.label {
            "PUBLIC KEY" => keys.push(VerifyingKey::from_spki_der(&block.decode()?)?),
            label if label.ends_with("PRIVATE KEY") => saw_private = true,
            _ => {}
        }
    }
    if saw_private {
        return Err(Error::InvalidKey {
            reason: "found a private key where a public key was expected",
        });
    }
    Ok(keys)
}

/// The algorithm-specific secret inside a [`SigningKey`]. Both the p256 key and the RSA key
/// zeroize their secrets on drop (`ZeroizeOnDrop`); the RSA key is boxed so moving a
/// `SigningKey` never leaves a copy of its limbs behind.
enum SecretInner {
    P256(p256::ecdsa::SigningKey),
    Rsa {
        key: alloc::boxed::Box<rsa::PrivateKey>,
        padding: RsaPadding,
    },
}

/// A private key that signs packages: for the packing tools, never needed on a device.
///
/// Secrets are kept in types that zeroize on drop (the p256 and RSA keys, and
/// [`zeroize::Zeroizing`] buffers for every intermediate DER or PEM encoding). There is no `Clone`, so a key is not
/// copied around by accident, and `Debug` prints only the algorithm and key id.
///
/// Keys load from the files openssl writes (see [`SigningKey::from_pem`]) and save as PKCS#8
/// ([`SigningKey::to_pkcs8_pem`]), so one key works with both this crate and
/// `openssl dgst -sign`.
pub struct SigningKey {
    inner: SecretInner,
    public: VerifyingKey,
}

impl SigningKey {
    fn from_p256(key: p256::ecdsa::SigningKey) -> Result<Self, Error> {
        let public = VerifyingKey::from_p256(*key.verifying_key())?;
        Ok(Self {
            inner: SecretInner::P256(key),
            public,
        })
    }

    fn from_rsa(key: rsa::PrivateKey) -> Result<Self, Error> {
        let public = VerifyingKey::from_rsa(key.to_public_key())?;
        Ok(Self {
            inner: SecretInner::Rsa {
                key: alloc::boxed::Box::new(key),
                padding: RsaPadding::default(),
            },
            public,
        })
    }

    /// Generates a new random RSA key of `bits` (2048, 3072 or 4096) with public exponent
    /// 65537 from the operating system's RNG; it signs with [`RsaPadding::Pkcs1v15`] until
    /// [`SigningKey::with_rsa_padding`] says otherwise. Takes seconds for 4096 bits.
    ///
    /// # Errors
    /// [`Error::RsaKeyTooSmall`] / [`Error::RsaKeySizeUnsupported`] for another size;
    /// [`Error::Rng`] when the OS RNG fails.
    #[cfg(feature = "std")]
    pub fn generate_rsa(bits: usize) -> Result<Self, Error> {
        Self::generate_rsa_with_rng(&mut getrandom::SysRng, bits)
    }

    /// Generates a new random RSA key of `bits` from `rng` (see [`SigningKey::generate_rsa`]).
    ///
    /// # Errors
    /// As [`SigningKey::generate_rsa`].
    pub fn generate_rsa_with_rng<R>(rng: &mut R, bits: usize) -> Result<Self, Error>
    where
        R: rand_core::TryCryptoRng + ?Sized,
    {
        check_rsa_bits(bits)?;
        let key = rsa::PrivateKey::new(rng, bits).map_err(|_| Error::Rng)?;
        Self::from_rsa(key)
    }

    /// Chooses the padding an RSA key signs with (no effect on a P-256 key).
    #[must_use]
    pub fn with_rsa_padding(mut self, padding: RsaPadding) -> Self {
        if let SecretInner::Rsa {
            padding: current, ..
        } = &mut self.inner
        {
            *current = padding;
        }
        self
    }

    /// Decodes a DER PKCS#1 `RSAPrivateKey` (the `RSA PRIVATE KEY` PEM of
    /// `openssl genrsa -traditional`).
    ///
    /// # Errors
    /// [`Error::InvalidKey`] when the bytes are not a valid two-prime RSA private key;
    /// [`Error::RsaKeyTooSmall`] / [`Error::RsaKeySizeUnsupported`] for a modulus not in
    /// [`RSA_MODULUS_BITS`].
    pub fn from_pkcs1_der(der: &[u8]) -> Result<Self, Error> {
        use rsa::pkcs1::DecodeRsaPrivateKey;
        if der.len() > MAX_PRIVATE_KEY_LEN {
            return Err(Error::InvalidKey {
                reason: "private key is too long",
            });
        }
        let pkcs1 = rsa::pkcs1::RsaPrivateKeyRef::from_der(der).map_err(|_| Error::InvalidKey {
            reason: "not a DER PKCS#1 RSAPrivateKey",
        })?;
        check_rsa_bits(modulus_bits(pkcs1.modulus.as_bytes()))?;
        let key = rsa::PrivateKey::from_pkcs1_der(der).map_err(|_| Error::InvalidKey {
            reason: "not a valid RSA private key",
        })?;
        Self::from_rsa(key)
    }

    /// Generates a new random P-256 key from the operating system's RNG.
    ///
    /// # Errors
    /// [`Error::Rng`] when the OS RNG fails.
    #[cfg(feature = "std")]
    pub fn generate_p256() -> Result<Self, Error> {
        Self::generate_p256_with_rng(&mut getrandom::SysRng)
    }

    /// Generates a new random P-256 key from `rng`, for no_std targets or tests that bring
    /// their own cryptographic RNG.
    ///
    /// # Errors
    /// [`Error::Rng`] when the RNG fails.
    pub fn generate_p256_with_rng<R>(rng: &mut R) -> Result<Self, Error>
    where
        R: rand_core::TryCryptoRng + ?Sized,
    {
        use p256::elliptic_curve::Generate;
        let key = p256::ecdsa::SigningKey::try_generate_from_rng(rng).map_err(|_| Error::Rng)?;
        Self::from_p256(key)
    }

    /// Decodes a DER PKCS#8 `PrivateKeyInfo` (RFC 5208 / 5958), as `openssl genpkey` writes
    /// with `-outform DER`.
    ///
    /// # Errors
    /// [`Error::EncryptedKeyUnsupported`] for an `EncryptedPrivateKeyInfo`;
    /// [`Error::UnsupportedKeyAlgorithm`] for a key type other than EC and RSA;
    /// [`Error::InvalidKey`] when the bytes are not PKCS#8, the curve is not P-256 or the key is
    /// invalid; [`Error::RsaKeyTooSmall`] / [`Error::RsaKeySizeUnsupported`] for an RSA
    /// modulus not in [`RSA_MODULUS_BITS`].
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, Error> {
        if der.len() > MAX_PRIVATE_KEY_LEN {
            return Err(Error::InvalidKey {
                reason: "private key is too long",
            });
        }
        let info = match pkcs8::PrivateKeyInfoRef::from_der(der) {
            Ok(info) => info,
            Err(_) if looks_like_encrypted_pkcs8(der) => {
                return Err(Error::EncryptedKeyUnsupported);
            }
            Err(_) => {
                return Err(Error::InvalidKey {
                    reason: "not a DER PKCS#8 PrivateKeyInfo",
                });
            }
        };
        if info.algorithm.oid == RSA_ENCRYPTION {
            return Self::from_pkcs1_der(info.private_key.as_bytes());
        }
        let (oid, parameters) = info.algorithm.oids().map_err(|_| Error::InvalidKey {
            reason: "malformed key algorithm parameters",
        })?;
        if oid != ID_EC_PUBLIC_KEY {
            return Err(Error::UnsupportedKeyAlgorithm { oid });
        }
        if parameters != Some(SECP256R1) {
            return Err(Error::InvalidKey {
                reason: "EC key not on the named curve P-256",
            });
        }
        let secret = p256::SecretKey::try_from(info).map_err(|_| Error::InvalidKey {
            reason: "not a valid P-256 private key",
        })?;
        Self::from_p256(p256::ecdsa::SigningKey::from(secret))
    }

    /// Decodes a DER SEC1 `ECPrivateKey` (RFC 5915), as `openssl ecparam -genkey -outform DER`
    /// writes. When the key names its curve, it must be P-256; when it carries its public key,
    /// that must match the private scalar.
    ///
    /// # Errors
    /// [`Error::InvalidKey`] when the bytes are not a valid SEC1 P-256 private key.
    pub fn from_sec1_der(der: &[u8]) -> Result<Self, Error> {
        if der.len() > MAX_PRIVATE_KEY_LEN {
            return Err(Error::InvalidKey {
                reason: "private key is too long",
            });
        }
        let secret = p256::SecretKey::from_sec1_der(der).map_err(|_| Error::InvalidKey {
            reason: "not a valid SEC1 P-256 private key",
        })?;
        Self::from_p256(p256::ecdsa::SigningKey::from(secret))
    }

    /// Decodes a PEM private key as openssl writes it: `PRIVATE KEY` (PKCS#8, from
    /// `openssl genpkey -algorithm EC|RSA` or `openssl pkey`), `EC PRIVATE KEY` (SEC1, from
    /// `openssl ecparam -name prime256v1 -genkey`, which may put an `EC PARAMETERS` block first)
    /// or `RSA PRIVATE KEY` (PKCS#1, `openssl genrsa -traditional`). RSA keys sign with
    /// [`RsaPadding::Pkcs1v15`] until [`SigningKey::with_rsa_padding`] says otherwise.
    ///
    /// Other blocks (`EC PARAMETERS`, `PUBLIC KEY`) and text around them are ignored; exactly
    /// one private key block must be present, so a file is never ambiguous about which key it
    /// holds.
    ///
    /// # Errors
    /// [`Error::EncryptedKeyUnsupported`] for `ENCRYPTED PRIVATE KEY` or a legacy encrypted
    /// `EC PRIVATE KEY` (`Proc-Type: 4,ENCRYPTED`); [`Error::Pem`] when there is no private key
    /// block, more than one, or the PEM is malformed; otherwise as
    /// [`SigningKey::from_pkcs8_der`], [`SigningKey::from_sec1_der`] and
    /// [`SigningKey::from_pkcs1_der`].
    pub fn from_pem(pem: &str) -> Result<Self, Error> {
        let blocks = pem::blocks(pem)?;
        let mut private_blocks = blocks
            .iter()
            .filter(|block| block.label.ends_with("PRIVATE KEY"));
        let (Some(block), None) = (private_blocks.next(), private_blocks.next()) else {
            let reason = if blocks.iter().any(|b| b.label.ends_with("PRIVATE KEY")) {
                "more than one private key block"
            } else {
                "no PRIVATE KEY or EC PRIVATE KEY block"
            };
            return Err(Error::Pem { reason });
        };
        match block.label {
            "PRIVATE KEY" | "ENCRYPTED PRIVATE KEY" => Self::from_pkcs8_der(&block.decode()?),
            "EC PRIVATE KEY" => Self::from_sec1_der(&block.decode()?),
            "RSA PRIVATE KEY" => Self::from_pkcs1_der(&block.decode()?),
            _ => Err(Error::Pem {
                reason: "unsupported private key PEM label",
            }),
        }
    }

    /// Encodes the key as DER PKCS#8 (with its public key), in a buffer zeroized on drop.
    ///
    /// # Errors
    /// [`Error::Encoding`] if encoding fails (not expected for a valid key).
    pub fn to_pkcs8_der(&self) -> Result<Zeroizing<Vec<u8>>, Error> {
        let document = match &self.inner {
            SecretInner::P256(key) => key.to_pkcs8_der(),
            SecretInner::Rsa { key, .. } => key.to_pkcs8_der(),
        }
        .map_err(|_| Error::Encoding { what: "PKCS#8" })?;
        Ok(Zeroizing::new(document.as_bytes().to_vec()))
    }

    /// Encodes the key as a `PRIVATE KEY` PEM block (PKCS#8, LF line endings), the form
    /// `openssl genpkey` writes and every openssl command reads.
    ///
    /// # Errors
    /// [`Error::Encoding`] if encoding fails (not expected for a valid key).
    pub fn to_pkcs8_pem(&self) -> Result<Zeroizing<String>, Error> {
        pem::encode("PRIVATE KEY", &self.to_pkcs8_der()?)
    }

    /// The public half of this key, to pin on devices.
    #[must_use]
    pub fn verifying_key(&self) -> VerifyingKey {
        self.public.clone()
    }

    /// The signature algorithm OID this key's signatures carry in a package
    /// ([`ECDSA_WITH_SHA256`] for P-256, [`SHA256_WITH_RSA_ENCRYPTION`] or [`ID_RSASSA_PSS`]
    /// for RSA, by its [`RsaPadding`]).
    #[must_use]
    pub fn algorithm(&self) -> ObjectIdentifier {
        match &self.inner {
            SecretInner::P256(_) => ECDSA_WITH_SHA256,
            SecretInner::Rsa {
                padding: RsaPadding::Pkcs1v15,
                ..
            } => SHA256_WITH_RSA_ENCRYPTION,
            SecretInner::Rsa {
                padding: RsaPadding::Pss,
                ..
            } => ID_RSASSA_PSS,
        }
    }

    /// Signs `message` with SHA-256. P-256: ECDSA with a deterministic nonce (RFC 6979), a DER
    /// `Ecdsa-Sig-Value`. RSA: PKCS#1 v1.5 or PSS (MGF1-SHA-256, 32-byte salt) by the key's
    /// [`RsaPadding`], as many bytes as the modulus, the private operation blinded with the OS
    /// RNG. Exactly what `openssl dgst -sha256 -verify pub.pem -signature sig message` (with
    /// `-sigopt rsa_padding_mode:pss` for PSS) accepts.
    ///
    /// Without the `std` feature there is no OS RNG: RSA keys must sign with
    /// [`SigningKey::sign_with_rng`].
    ///
    /// # Errors
    /// [`Error::SigningFailed`] if the signing primitive fails (not expected for a valid key);
    /// [`Error::Rng`] for an RSA key without the `std` feature.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, Error> {
        match &self.inner {
            SecretInner::P256(_) => self.sign_p256(message),
            #[cfg(feature = "std")]
            SecretInner::Rsa { .. } => self.sign_with_rng(&mut getrandom::SysRng, message),
            #[cfg(not(feature = "std"))]
            SecretInner::Rsa { .. } => Err(Error::Rng),
        }
    }

    /// Signs `message` as [`SigningKey::sign`] does, taking the randomness RSA needs (blinding,
    /// the PSS salt) from `rng`; P-256 signatures stay deterministic and ignore it.
    ///
    /// # Errors
    /// [`Error::SigningFailed`] if the signing primitive or the RNG fails.
    pub fn sign_with_rng<R>(&self, rng: &mut R, message: &[u8]) -> Result<Vec<u8>, Error>
    where
        R: rand_core::TryCryptoRng + ?Sized,
    {
        use sha2::{Digest, Sha256};
        match &self.inner {
            SecretInner::P256(_) => self.sign_p256(message),
            SecretInner::Rsa { key, padding } => {
                let digest = Sha256::digest(message);
                match padding {
                    RsaPadding::Pkcs1v15 => {
                        key.sign_with_rng(rng, rsa::Pkcs1v15Sign::new::<Sha256>(), &digest)
                    }
                    RsaPadding::Pss => key.sign_with_rng(
                        rng,
                        rsa::Pss::<Sha256>::new_with_salt(crate::algorithm::RSA_PSS_SALT_LEN),
                        &digest,
                    ),
                }
                .map_err(|_| Error::SigningFailed)
            }
        }
    }

    fn sign_p256(&self, message: &[u8]) -> Result<Vec<u8>, Error> {
        match &self.inner {
            SecretInner::P256(key) => {
                let signature: p256::ecdsa::DerSignature =
                    p256::ecdsa::signature::Signer::try_sign(key, message)
                        .map_err(|_| Error::SigningFailed)?;
                Ok(signature.as_bytes().to_vec())
            }
            SecretInner::Rsa { .. } => Err(Error::SigningFailed),
        }
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("algorithm", &self.public.algorithm_name())
            .field("key_id", &self.public.key_id())
            .finish_non_exhaustive()
    }
}

/// Whether `der` has the shape of a PKCS#8 `EncryptedPrivateKeyInfo`: a SEQUENCE whose first
/// element is a SEQUENCE (the encryption algorithm), where `PrivateKeyInfo` starts with an
/// INTEGER version. Used only to choose the error message.
fn looks_like_encrypted_pkcs8(der: &[u8]) -> bool {
    use der::{SliceReader, Tag};
    let Ok(mut reader) = SliceReader::new(der) else {
        return false;
    };
    let Ok(outer) = der::Header::decode(&mut reader) else {
        return false;
    };
    outer.tag() == Tag::Sequence && matches!(Tag::peek(&reader), Ok(Tag::Sequence))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SigningKey {
        SigningKey::generate_p256().unwrap()
    }

    #[test]
    fn spki_is_91_bytes_and_key_id_is_its_hash() {
        let public = key().verifying_key();
        let spki = public.to_spki_der();
        assert_eq!(spki.len(), 91);
        assert_eq!(public.key_id(), KeyId::of_spki_der(&spki));
        assert_eq!(VerifyingKey::from_spki_der(&spki).unwrap(), public);
    }

    #[test]
    fn spki_with_trailing_byte_is_refused() {
        let mut spki = key().verifying_key().to_spki_der();
        spki.push(0);
        assert!(matches!(
            VerifyingKey::from_spki_der(&spki),
            Err(Error::InvalidKey { .. })
        ));
    }

    #[test]
    fn pkcs8_der_round_trips() {
        let signing = key();
        let der = signing.to_pkcs8_der().unwrap();
        let again = SigningKey::from_pkcs8_der(&der).unwrap();
        assert_eq!(again.verifying_key(), signing.verifying_key());
    }

    #[test]
    fn debug_prints_only_algorithm_and_key_id() {
        let signing = key();
        let debug = alloc::format!("{signing:?}");
        let expected = alloc::format!(
            "SigningKey {{ algorithm: \"ecdsa-p256\", key_id: {:?}, .. }}",
            signing.verifying_key().key_id()
        );
        assert_eq!(debug, expected);
    }

    #[test]
    fn encrypted_pkcs8_shape_is_recognised() {
        // SEQUENCE { SEQUENCE { OID 1.2.840.113549.1.5.13 }, OCTET STRING 00 }
        let enc = [
            0x30, 0x10, 0x30, 0x0b, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x05,
            0x0d, 0x04, 0x01, 0x00,
        ];
        assert_eq!(
            SigningKey::from_pkcs8_der(&enc).err(),
            Some(Error::EncryptedKeyUnsupported)
        );
    }
}
