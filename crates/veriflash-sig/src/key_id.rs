//! Key identifiers: the SHA-256 of a public key's DER `SubjectPublicKeyInfo`.

use core::fmt;

use sha2::{Digest, Sha256};

use crate::Error;

/// Identifies a public key: the SHA-256 of its DER `SubjectPublicKeyInfo`.
///
/// A package names the key of each signature by its key id (FORMAT.md §4); the verifier uses it
/// only to *select* a pinned key, never as proof of anything. Hashing the whole SPKI (algorithm
/// and parameters included) rather than the bare key bits means two keys of different types can
/// never share an id.
///
/// [`Display`](fmt::Display) and [`Debug`](fmt::Debug) print 64 lowercase hex digits, the form
/// used in logs, file names and policy files; [`KeyId::from_hex`] reads it back.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyId(pub [u8; 32]);

impl KeyId {
    /// The length of a key id in bytes.
    pub const LEN: usize = 32;

    /// Computes the key id of a DER `SubjectPublicKeyInfo`.
    ///
    /// The bytes are hashed as given and not parsed; use [`crate::VerifyingKey::key_id`] to get
    /// the id of the canonical encoding of a parsed key.
    #[must_use]
    pub fn of_spki_der(spki_der: &[u8]) -> Self {
        Self(Sha256::digest(spki_der).into())
    }

    /// Parses 64 hex digits (either case; surrounding whitespace is ignored).
    ///
    /// # Errors
    /// [`Error::InvalidKeyId`] when the text is not exactly 64 hexadecimal digits.
    pub fn from_hex(text: &str) -> Result<Self, Error> {
        let text = text.trim().as_bytes();
        if text.len() != 2 * Self::LEN {
            return Err(Error::InvalidKeyId {
                reason: "expected 64 hexadecimal digits",
            });
        }
        let mut out = [0u8; 32];
        for (byte, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
            let (Some(&hi), Some(&lo)) = (pair.first(), pair.get(1)) else {
                return Err(Error::InvalidKeyId {
                    reason: "expected 64 hexadecimal digits",
                });
            };
            *byte = (hex_value(hi)? << 4) | hex_value(lo)?;
        }
        Ok(Self(out))
    }

    /// The 32 bytes of the id.
    #[must_use]
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

fn hex_value(digit: u8) -> Result<u8, Error> {
    match digit {
        b'0'..=b'9' => Ok(digit - b'0'),
        b'a'..=b'f' => Ok(digit - b'a' + 10),
        b'A'..=b'F' => Ok(digit - b'A' + 10),
        _ => Err(Error::InvalidKeyId {
            reason: "not a hexadecimal digit",
        }),
    }
}

impl From<[u8; 32]> for KeyId {
    fn from(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }
}

impl AsRef<[u8]> for KeyId {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl core::str::FromStr for KeyId {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Self::from_hex(s)
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

#[cfg(test)]
mod tests {
    use alloc::string::ToString;

    use super::*;

    #[test]
    fn display_is_64_lowercase_hex_and_round_trips() {
        let id = KeyId::of_spki_der(b"not really an spki");
        let hex = id.to_string();
        assert_eq!(hex.len(), 64);
        assert!(
            hex.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
        assert_eq!(KeyId::from_hex(&hex), Ok(id));
        assert_eq!(KeyId::from_hex(&hex.to_uppercase()), Ok(id));
    }

    #[test]
    fn of_spki_der_is_sha256() {
        // SHA-256("abc"), FIPS 180-2 appendix B.1.
        let id = KeyId::of_spki_der(b"abc");
        assert_eq!(
            id.to_string(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn rejects_bad_hex() {
        let good = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert!(KeyId::from_hex(&good[..63]).is_err());
        assert!(KeyId::from_hex(&[good, "00"].concat()).is_err());
        assert!(KeyId::from_hex(&good.replace('b', "g")).is_err());
        assert!(KeyId::from_hex("").is_err());
        // 64 bytes but multi-byte UTF-8 characters: never panics.
        assert!(KeyId::from_hex(&"é".repeat(32)).is_err());
    }
}
