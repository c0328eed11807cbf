//! Public and private keys of the supported algorithms.

use alloc::{string::String, vec::Vec};
use core::fmt;

use der::Decode;
use p256::pkcs8::{DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use zeroize::Zeroizing;

use crate::{ECDSA_WITH_SHA256, Error, KeyId, ObjectIdentifier, pem};

/// `id-ecPublicKey` (RFC 5480): the SPKI / PKCS#8 algorithm of every EC key.
const ID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
/// `secp256r1` / `prime256v1` (RFC 5480): the named curve P-256.
const SECP256R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
/// `rsaEncryption` (RFC 8017), named in the error for RSA keys until RSA lands.
const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");

/// The largest DER `SubjectPublicKeyInfo` accepted: room for RSA-8192, far above any key this
/// crate will support, so a hostile length cannot make a parser work on megabytes.
pub const MAX_SPKI_LEN: usize = 2048;
/// The largest DER private key accepted (PKCS#8 or SEC1), for the same reason.
pub const MAX_PRIVATE_KEY_LEN: usize = 8192;

/// The algorithm-specific key inside a [`VerifyingKey`]. Private: RSA becomes another variant
/// without changing the public API.
#[derive(Clone, Copy, PartialEq, Eq)]
enum PublicKeyInner {
    P256(p256::ecdsa::VerifyingKey),
}

/// A public key of a supported algorithm: what a trust anchor pins and a signature is checked
/// against.
///
/// Only ECDSA P-256 keys exist today; RSA keys will be another kind of `VerifyingKey`, so code
/// that stores, pins or compares keys does not change when they arrive.
///
/// The key is kept together with its canonical DER `SubjectPublicKeyInfo` (uncompressed point,
/// named curve, as `openssl pkey -pubout` writes) and its [`KeyId`], computed once when the key
/// is made, so neither can fail or cost a hash later.
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
        let spki_der = document.as_bytes().to_vec();
        let pem = pem::encode("PUBLIC KEY", &spki_der)?;
        Ok(Self {
            inner: PublicKeyInner::P256(key),
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
    /// # Errors
    /// [`Error::InvalidKey`] when the bytes are not a valid SPKI or the point is not on the
    /// curve, or the curve is not P-256; [`Error::UnsupportedKeyAlgorithm`] for any key type
    /// other than EC.
    pub fn from_spki_der(der: &[u8]) -> Result<Self, Error> {
        if der.len() > MAX_SPKI_LEN {
            return Err(Error::InvalidKey {
                reason: "SubjectPublicKeyInfo is too long",
            });
        }
        let spki = spki::SubjectPublicKeyInfoRef::from_der(der).map_err(|_| Error::InvalidKey {
            reason: "not a DER SubjectPublicKeyInfo",
        })?;
        let (oid, parameters) = spki.algorithm.oids().map_err(|_| Error::InvalidKey {
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
        let key =
            p256::ecdsa::VerifyingKey::from_public_key_der(der).map_err(|_| Error::InvalidKey {
                reason: "not a valid P-256 public key",
            })?;
        Self::from_p256(key)
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

    /// A short stable name of the key's algorithm, for logs and key listings: `"ecdsa-p256"`.
    #[must_use]
    pub fn algorithm_name(&self) -> &'static str {
        match self.inner {
            PublicKeyInner::P256(_) => "ecdsa-p256",
        }
    }

    /// The P-256 key, if this is one; what the ECDSA algorithm verifies with.
    pub(crate) fn as_p256(&self) -> Option<&p256::ecdsa::VerifyingKey> {
        match &self.inner {
            PublicKeyInner::P256(key) => Some(key),
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

/// The algorithm-specific secret inside a [`SigningKey`]. The p256 key zeroizes its scalar on
/// drop (`ZeroizeOnDrop`).
enum SecretInner {
    P256(p256::ecdsa::SigningKey),
}

/// A private key that signs packages: for the packing tools, never needed on a device.
///
/// Secrets are kept in types that zeroize on drop (the p256 key, and [`zeroize::Zeroizing`]
/// buffers for every intermediate DER or PEM encoding). There is no `Clone`, so a key is not
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
    /// [`Error::UnsupportedKeyAlgorithm`] for a key type other than EC; [`Error::InvalidKey`]
    /// when the bytes are not PKCS#8, the curve is not P-256 or the key is invalid.
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
    /// `openssl genpkey` or `openssl pkey`) or `EC PRIVATE KEY` (SEC1, from
    /// `openssl ecparam -name prime256v1 -genkey`, which may put an `EC PARAMETERS` block first).
    ///
    /// Other blocks (`EC PARAMETERS`, `PUBLIC KEY`) and text around them are ignored; exactly
    /// one private key block must be present, so a file is never ambiguous about which key it
    /// holds.
    ///
    /// # Errors
    /// [`Error::EncryptedKeyUnsupported`] for `ENCRYPTED PRIVATE KEY` or a legacy encrypted
    /// `EC PRIVATE KEY` (`Proc-Type: 4,ENCRYPTED`); [`Error::Pem`] when there is no private key
    /// block, more than one, or the PEM is malformed; [`Error::UnsupportedKeyAlgorithm`] for an
    /// `RSA PRIVATE KEY`; otherwise as [`SigningKey::from_pkcs8_der`] and
    /// [`SigningKey::from_sec1_der`].
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
            "RSA PRIVATE KEY" => Err(Error::UnsupportedKeyAlgorithm {
                oid: RSA_ENCRYPTION,
            }),
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
    /// ([`ECDSA_WITH_SHA256`] for P-256).
    #[must_use]
    pub fn algorithm(&self) -> ObjectIdentifier {
        match self.inner {
            SecretInner::P256(_) => ECDSA_WITH_SHA256,
        }
    }

    /// Signs `message`: SHA-256, then ECDSA with a deterministic nonce (RFC 6979), encoded as a
    /// DER `Ecdsa-Sig-Value` — exactly what
    /// `openssl dgst -sha256 -verify pub.pem -signature sig.der message` accepts.
    ///
    /// # Errors
    /// [`Error::SigningFailed`] if the signing primitive fails (not expected for a valid key).
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, Error> {
        match &self.inner {
            SecretInner::P256(key) => {
                let signature: p256::ecdsa::DerSignature =
                    p256::ecdsa::signature::Signer::try_sign(key, message)
                        .map_err(|_| Error::SigningFailed)?;
                Ok(signature.as_bytes().to_vec())
            }
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
