//! Loading keys and trust anchors from files, with errors in the core's taxonomy.

use std::path::{Path, PathBuf};

use veriflash_format::{RotationAnchor, TrustRotation};
use veriflash_sig::{PinnedKeys, Policy, SigningKey, TrustAnchor};
use zeroize::Zeroizing;

use crate::convert;
use crate::error::{Error, ErrorKind};

/// The public key's file beside a private key's, as `veriflash keygen` names it:
/// `vendor.pem` -> `vendor.pub.pem`.
#[must_use]
pub fn public_key_path(private: &Path) -> PathBuf {
    let name = private
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = name.strip_suffix(".pem").unwrap_or(&name);
    private.with_file_name(format!("{stem}.pub.pem"))
}

/// What a PEM text holds, by its block labels alone: enough to tell the private key given
/// where a public one belongs (and the reverse) — the most common wrong file — from a key that
/// is broken, whatever else is wrong with the text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PemHolds {
    /// A private key block (`PRIVATE KEY`, `EC PRIVATE KEY`, `RSA PRIVATE KEY`, encrypted or
    /// not), whatever else the text holds.
    PrivateKey,
    /// Public keys or certificates, and no private key.
    PublicKey,
    /// Neither.
    Other,
}

fn pem_holds(text: &str) -> PemHolds {
    let mut holds = PemHolds::Other;
    for label in text.lines().filter_map(|line| {
        line.trim()
            .strip_prefix("-----BEGIN ")?
            .strip_suffix("-----")
    }) {
        if label.ends_with("PRIVATE KEY") {
            return PemHolds::PrivateKey;
        }
        if label.ends_with("PUBLIC KEY") || label == "CERTIFICATE" {
            holds = PemHolds::PublicKey;
        }
    }
    holds
}

/// The error for `text` (from `what`: a file, or PEM text) that was wanted as a trust anchor
/// or public key but holds a private key; `None` when that is not what is wrong with it.
fn private_key_given(what: &str, text: &str, public: Option<&Path>) -> Option<Error> {
    (pem_holds(text) == PemHolds::PrivateKey).then(|| {
        let public = public.map_or_else(
            || "the public key (`openssl pkey -in KEY.pem -pubout`)".to_owned(),
            |p| {
                format!(
                    "{} (the public key `veriflash keygen` writes beside the private key; `openssl pkey -in {what} -pubout -out {}` makes it)",
                    p.display(),
                    p.display()
                )
            },
        );
        Error::new(
            ErrorKind::InvalidKey,
            format!("{what} holds a private key, not a public key or certificate"),
        )
        .with_remedy(format!(
            "A trust anchor or a signer's public key is a public key or a certificate, never the private key: give {public}. Keep the private key for signing."
        ))
    })
}

/// Loads a private signing key from a PEM file (PKCS#8 `PRIVATE KEY` or SEC1 `EC PRIVATE KEY`, as
/// openssl writes them). The file's text is wiped from memory once parsed.
///
/// # Errors
/// [`ErrorKind::Io`] when the file cannot be read; [`ErrorKind::InvalidKey`] when it holds no
/// usable key, with a remedy naming the private key files accepted when it holds a public key
/// or certificate instead.
pub fn load_signing_key(path: &Path) -> Result<SigningKey, Error> {
    let text = Zeroizing::new(
        std::fs::read_to_string(path)
            .map_err(|e| Error::io(format_args!("{}", path.display()), e))?,
    );
    SigningKey::from_pem(&text).map_err(|e| {
        if pem_holds(&text) == PemHolds::PublicKey {
            let private = path
                .to_str()
                .and_then(|p| p.strip_suffix(".pub.pem"))
                .map(|stem| format!(" ({stem}.pem beside it?)"))
                .unwrap_or_default();
            return Error::new(
                ErrorKind::InvalidKey,
                format!(
                    "{} holds a public key or certificate, not a private key",
                    path.display()
                ),
            )
            .with_remedy(format!(
                "Signing takes the private key{private}: unencrypted PEM, PKCS#8 `PRIVATE KEY`, SEC1 `EC PRIVATE KEY` (P-256) or PKCS#1 `RSA PRIVATE KEY` (2048-4096 bits), as `veriflash keygen` or openssl writes it."
            ))
            .with_source(e);
        }
        convert::key_error(e).with_context(path.display())
    })
}

/// Loads trust anchors: one PEM public key file, or a directory of them.
///
/// # Errors
/// [`ErrorKind::Io`] when the path cannot be read; [`ErrorKind::InvalidKey`] when a key does not
/// parse, with a remedy naming the public key when a file holds the private key instead;
/// [`ErrorKind::NoTrustAnchors`] when a directory holds no key.
pub fn load_trust_anchors(path: &Path) -> Result<PinnedKeys, Error> {
    PinnedKeys::load(path).map_err(|e| {
        let text = path
            .is_file()
            .then(|| std::fs::read_to_string(path).ok().map(Zeroizing::new))
            .flatten();
        text.and_then(|text| {
            private_key_given(
                &path.display().to_string(),
                &text,
                Some(&public_key_path(path)),
            )
        })
        .map_or_else(
            || convert::trust_error(path, e),
            |err| err.with_context("loading trust anchors"),
        )
    })
}

/// Trust anchors from PEM text (public keys and root certificates), for a caller that holds
/// them in memory (the C API's `veriflash_trust_from_pem`).
///
/// # Errors
/// [`ErrorKind::InvalidKey`] when a block does not parse or none is there, with a remedy
/// naming the public key when the text holds a private key instead.
pub fn anchors_from_pem(text: &str) -> Result<PinnedKeys, Error> {
    PinnedKeys::from_pem(text).map_err(|e| {
        private_key_given("the PEM text", text, None).unwrap_or_else(|| {
            Error::new(
                ErrorKind::InvalidKey,
                format!("trust anchors from PEM text: {e}"),
            )
            .with_source(e)
        })
    })
}

/// Loads a certificate chain file (PEM `CERTIFICATE` blocks, leaf first, then intermediates, as
/// openssl writes them) as DER certificates.
///
/// # Errors
/// [`ErrorKind::Io`] when the file cannot be read; [`ErrorKind::InvalidInput`] when it holds no
/// certificate or a malformed one.
pub fn load_certificate_chain(path: &Path) -> Result<Vec<Vec<u8>>, Error> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::io(format_args!("{}", path.display()), e))?;
    veriflash_sig::certificates_from_pem(&text).map_err(|e| {
        Error::new(ErrorKind::InvalidInput, format!("{}: {e}", path.display())).with_source(e)
    })
}

/// Loads a public key (`PUBLIC KEY` PEM) for checking a signature made elsewhere.
///
/// # Errors
/// [`ErrorKind::Io`] when the file cannot be read; [`ErrorKind::InvalidKey`] when it holds no
/// usable public key, with a remedy naming the public key when it holds the private key.
pub fn load_public_key(path: &Path) -> Result<veriflash_sig::VerifyingKey, Error> {
    let text = Zeroizing::new(
        std::fs::read_to_string(path)
            .map_err(|e| Error::io(format_args!("{}", path.display()), e))?,
    );
    veriflash_sig::VerifyingKey::from_public_key_pem(&text).map_err(|e| {
        private_key_given(
            &path.display().to_string(),
            &text,
            Some(&public_key_path(path)),
        )
        .unwrap_or_else(|| {
            Error::new(ErrorKind::InvalidKey, format!("{}: {e}", path.display())).with_source(e)
        })
    })
}

/// The largest anchor-set file [`AnchorSet::load`] reads (the format's own bound on a
/// `TrustRotation`: 16 anchors of at most 16 KiB).
const MAX_ANCHOR_SET_FILE_LEN: u64 = 300 * 1024;

/// A device's trust-anchor set: the pinned anchors, how many distinct ones must sign a package,
/// and the set's version (0 for a set that was never rotated).
///
/// A set arrives in one of two ways: configured at build or provisioning time
/// ([`AnchorSet::new`], or [`AnchorSet::load`] of PEM keys and root certificates), or adopted
/// from a package's trust rotation ([`crate::VerifiedManifest::trust_rotation`]) once that
/// package has installed. [`AnchorSet::save`] persists it atomically in the DER form of
/// docs/FORMAT.md §3.2, which [`AnchorSet::load`] reads back with its version and threshold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnchorSet {
    anchors: PinnedKeys,
    threshold: usize,
    version: u64,
}

impl AnchorSet {
    /// A set of `anchors` that requires `threshold` signatures, at version 0 (never rotated).
    #[must_use]
    pub fn new(anchors: PinnedKeys, threshold: usize) -> Self {
        Self {
            anchors,
            threshold,
            version: 0,
        }
    }

    /// The set a package's trust rotation describes: each anchor parsed as a root certificate
    /// or a public key, no two with the same key.
    ///
    /// # Errors
    /// [`ErrorKind::RotationRefused`] when an anchor is not a supported key or certificate, or
    /// two anchors share a key.
    pub fn from_rotation(rotation: &TrustRotation) -> Result<Self, Error> {
        let refused = |i: usize, e: veriflash_sig::Error| {
            Error::new(
                ErrorKind::RotationRefused,
                format!("the rotated trust-anchor set is unusable: anchor {i}: {e}"),
            )
            .with_source(e)
        };
        let mut anchors = PinnedKeys::new();
        for (i, anchor) in rotation.anchors.iter().enumerate() {
            let anchor = match anchor {
                RotationAnchor::Certificate(der) => {
                    TrustAnchor::from_certificate_der(der).map_err(|e| refused(i, e))?
                }
                RotationAnchor::PublicKey(der) => TrustAnchor::new(
                    veriflash_sig::VerifyingKey::from_spki_der(der).map_err(|e| refused(i, e))?,
                ),
            };
            let key_id = anchor.key_id();
            if anchors.contains(&key_id) {
                return Err(Error::new(
                    ErrorKind::RotationRefused,
                    format!(
                        "the rotated trust-anchor set is unusable: anchor {i} repeats key {key_id}"
                    ),
                ));
            }
            anchors.add_anchor(anchor);
        }
        Ok(Self {
            anchors,
            threshold: usize::try_from(rotation.threshold).unwrap_or(usize::MAX),
            version: rotation.version,
        })
    }

    /// This set as a `TrustRotation` (root certificates as certificates, bare keys as
    /// SubjectPublicKeyInfo), for a package that rotates to it or for [`AnchorSet::save`].
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] when the set cannot be one (no anchor, more than the
    /// format's limit, a threshold out of range).
    pub fn to_rotation(&self) -> Result<TrustRotation, Error> {
        let rotation = TrustRotation {
            version: self.version,
            threshold: u32::try_from(self.threshold).unwrap_or(u32::MAX),
            anchors: self
                .anchors
                .iter()
                .map(|a| match a.certificate_der() {
                    Some(der) => RotationAnchor::Certificate(der.to_vec()),
                    None => RotationAnchor::PublicKey(a.key().to_spki_der()),
                })
                .collect(),
        };
        rotation.validate().map_err(convert::input_error)?;
        Ok(rotation)
    }

    /// This set in the DER form of docs/FORMAT.md §3.2 (what [`AnchorSet::save`] writes and a
    /// device that holds its anchors stores).
    ///
    /// # Errors
    /// As [`AnchorSet::to_rotation`].
    pub fn to_der(&self) -> Result<Vec<u8>, Error> {
        self.to_rotation()?.to_der().map_err(convert::input_error)
    }

    /// A set from the DER form [`AnchorSet::to_der`] writes, bounded like a package's
    /// rotation.
    ///
    /// # Errors
    /// [`ErrorKind::Malformed`] or [`ErrorKind::LimitExceeded`] for damaged bytes;
    /// [`ErrorKind::RotationRefused`] for an unusable anchor.
    pub fn from_der(der: &[u8]) -> Result<Self, Error> {
        Self::from_rotation(&TrustRotation::from_der(der).map_err(convert::format_error)?)
    }

    /// The same anchors and threshold, at `version`: how a signer prepares the set a package
    /// will rotate to.
    #[must_use]
    pub fn with_version(mut self, version: u64) -> Self {
        self.version = version;
        self
    }

    /// The anchors.
    #[must_use]
    pub fn anchors(&self) -> &PinnedKeys {
        &self.anchors
    }

    /// Distinct anchors that must sign a package.
    #[must_use]
    pub fn threshold(&self) -> usize {
        self.threshold
    }

    /// The set's version: 0 for a set never rotated, else the version of the rotation that
    /// installed it.
    #[must_use]
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The verification policy this set implies: its threshold, and its version so that only a
    /// newer rotation is adopted. Add revocations and a stricter rotation threshold to it.
    #[must_use]
    pub fn policy(&self) -> Policy {
        Policy::default()
            .with_threshold(self.threshold)
            .with_anchor_set_version(self.version)
    }

    /// Loads a set: a file [`AnchorSet::save`] wrote (DER, with its version and threshold), or
    /// PEM public keys and root certificates — one file or a directory of them — as version 0
    /// with threshold 1.
    ///
    /// # Errors
    /// [`ErrorKind::Io`]; [`ErrorKind::Malformed`] or [`ErrorKind::LimitExceeded`] for a
    /// damaged anchor-set file; [`ErrorKind::RotationRefused`] for an unusable anchor in it; the
    /// errors of [`load_trust_anchors`] for PEM.
    pub fn load(path: &Path) -> Result<Self, Error> {
        if path.is_file() {
            let file = std::fs::File::open(path)
                .map_err(|e| Error::io(format_args!("{}", path.display()), e))?;
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(
                &mut std::io::Read::take(file, MAX_ANCHOR_SET_FILE_LEN + 1),
                &mut bytes,
            )
            .map_err(|e| Error::io(format_args!("{}", path.display()), e))?;
            // DER starts with a SEQUENCE tag; PEM with text.
            if bytes.first() == Some(&0x30) {
                if u64::try_from(bytes.len()).unwrap_or(u64::MAX) > MAX_ANCHOR_SET_FILE_LEN {
                    return Err(Error::new(
                        ErrorKind::LimitExceeded,
                        format!(
                            "{}: an anchor-set file is at most {MAX_ANCHOR_SET_FILE_LEN} bytes",
                            path.display()
                        ),
                    ));
                }
                return Self::from_der(&bytes).map_err(|err| err.with_context(path.display()));
            }
        }
        Ok(Self::new(load_trust_anchors(path)?, 1))
    }

    /// Writes the set to `path` atomically (a temporary file beside it, flushed to disk, then
    /// renamed over `path`, then the directory flushed), so a power cut leaves either the old
    /// set or the new one, never a torn file.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] as [`AnchorSet::to_rotation`]; [`ErrorKind::Io`].
    pub fn save(&self, path: &Path) -> Result<(), Error> {
        let der = self.to_der()?;
        let io = |e: std::io::Error| Error::io(format_args!("{}", path.display()), e);
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => std::path::PathBuf::from("."),
        };
        let mut name = path.file_name().unwrap_or_default().to_os_string();
        name.push(".tmp");
        let tmp = dir.join(name);
        {
            let mut file = std::fs::File::create(&tmp).map_err(io)?;
            std::io::Write::write_all(&mut file, &der).map_err(io)?;
            file.sync_all().map_err(io)?;
        }
        std::fs::rename(&tmp, path).map_err(io)?;
        std::fs::File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(io)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_public_key_sits_beside_the_private_key() {
        assert_eq!(
            public_key_path(Path::new("/k/vendor.pem")),
            Path::new("/k/vendor.pub.pem")
        );
        assert_eq!(public_key_path(Path::new("key")), Path::new("key.pub.pem"));
    }

    /// A fresh key pair written as `veriflash keygen` writes it, in `dir`.
    fn key_pair(dir: &Path) -> (PathBuf, PathBuf) {
        let key = SigningKey::generate_p256().unwrap();
        let private = dir.join("vendor.pem");
        std::fs::write(&private, key.to_pkcs8_pem().unwrap().as_bytes()).unwrap();
        let public = public_key_path(&private);
        std::fs::write(&public, key.verifying_key().to_public_key_pem()).unwrap();
        (private, public)
    }

    #[test]
    fn a_private_key_given_as_a_trust_anchor_names_the_public_key_beside_it() {
        let dir = tempfile::tempdir().unwrap();
        let (private, public) = key_pair(dir.path());
        for err in [
            load_trust_anchors(&private).unwrap_err(),
            AnchorSet::load(&private).unwrap_err(),
            load_public_key(&private).unwrap_err(),
        ] {
            assert_eq!(err.kind(), ErrorKind::InvalidKey);
            assert!(err.message().contains("holds a private key"), "{err}");
            assert!(
                err.remedy().contains(&public.display().to_string()),
                "{}",
                err.remedy()
            );
        }
        let text = std::fs::read_to_string(&private).unwrap();
        let err = anchors_from_pem(&text).unwrap_err();
        assert!(
            err.remedy().contains("never the private key"),
            "{}",
            err.remedy()
        );
        // The right files load.
        assert!(load_trust_anchors(&public).is_ok());
        assert!(load_signing_key(&private).is_ok());
    }

    #[test]
    fn a_public_key_given_for_signing_lists_the_private_key_forms_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let (private, public) = key_pair(dir.path());
        let err = load_signing_key(&public).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidKey);
        assert!(err.message().contains("holds a public key"), "{err}");
        let remedy = err.remedy();
        for form in ["PRIVATE KEY", "EC PRIVATE KEY", "RSA PRIVATE KEY"] {
            assert!(remedy.contains(form), "{remedy}");
        }
        assert!(
            remedy.contains(&private.display().to_string()),
            "names the private key beside it: {remedy}"
        );
        // A file that is no key at all keeps the generic remedy.
        std::fs::write(dir.path().join("junk.pem"), "not a key").unwrap();
        let err = load_signing_key(&dir.path().join("junk.pem")).unwrap_err();
        assert_eq!(err.remedy(), ErrorKind::InvalidKey.remedy());
    }
}
