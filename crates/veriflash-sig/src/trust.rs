//! Trust anchors and the stores that hold them.

use alloc::{collections::BTreeMap, string::String, vec::Vec};

use crate::{Error, KeyId, VerifyingKey, chain::AnchorCertificate};

/// The most key files [`PinnedKeys::load`] reads from one directory.
pub const MAX_KEY_FILES: usize = 256;
/// The largest key file [`PinnedKeys::load`] reads.
pub const MAX_KEY_FILE_LEN: u64 = 64 * 1024;

/// A pinned root of trust: a public key whose signatures are accepted, either bare or as the
/// key of a pinned root certificate.
///
/// A bare key signs packages directly, or signs the top certificate of a chain. A root
/// certificate's key does the same, and the certificate's subject name, basicConstraints,
/// pathLen and keyUsage also bind the chains that end at it (see [`crate::verify_chain`]).
/// Either way a signature is only ever accepted because it chains to an anchor, never because of
/// anything the package itself says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustAnchor {
    key: VerifyingKey,
    name: Option<String>,
    certificate: Option<AnchorCertificate>,
}

impl TrustAnchor {
    /// An anchor for `key`, without a name.
    #[must_use]
    pub fn new(key: VerifyingKey) -> Self {
        Self {
            key,
            name: None,
            certificate: None,
        }
    }

    /// An anchor for a DER root certificate (as `openssl x509 -outform DER` writes). Its
    /// self-signature, and the algorithm of it, are never checked: pinning is what makes it
    /// trusted. Its validity dates are checked when a chain is verified with a trusted time,
    /// and its CA rules (basicConstraints, keyUsage, pathLen, the RFC 5280 profile) whenever a
    /// chain ends at it.
    ///
    /// # Errors
    /// [`Error::CertificateMalformed`], [`Error::UnknownCriticalExtension`],
    /// [`Error::NonConformingCertificate`] or a key error of [`VerifyingKey::from_spki_der`].
    pub fn from_certificate_der(der: &[u8]) -> Result<Self, Error> {
        let (key, certificate) = crate::chain::parse_anchor(der)?;
        Ok(Self {
            key,
            name: None,
            certificate: Some(certificate),
        })
    }

    /// The DER root certificate, when this anchor is one.
    #[must_use]
    pub fn certificate_der(&self) -> Option<&[u8]> {
        self.certificate.as_ref().map(|c| c.der.as_slice())
    }

    /// The root certificate's subject (RFC 4514 text), when this anchor is one.
    #[must_use]
    pub fn subject(&self) -> Option<&str> {
        self.certificate.as_ref().map(|c| c.facts.subject.as_str())
    }

    pub(crate) fn certificate(&self) -> Option<&AnchorCertificate> {
        self.certificate.as_ref()
    }

    /// Gives the anchor a human-readable name (for logs and `inspect` output; never used to
    /// decide trust).
    #[must_use]
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// The anchor's public key.
    #[must_use]
    pub fn key(&self) -> &VerifyingKey {
        &self.key
    }

    /// The key id of the anchor's key.
    #[must_use]
    pub fn key_id(&self) -> KeyId {
        self.key.key_id()
    }

    /// The anchor's name, if it has one.
    #[must_use]
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }
}

/// Where the verifier finds trust anchors by key id.
///
/// [`PinnedKeys`] is the in-memory implementation; a TEE- or HSM-backed store implements this
/// trait instead. The trait is object safe: the verifier holds a `&dyn TrustStore`, which is
/// `Send + Sync` so that one verifier serves the devices of a factory line on their threads.
pub trait TrustStore: Send + Sync {
    /// The anchor whose key id is `key_id`, if any. An implementation must return only an
    /// anchor whose [`TrustAnchor::key_id`] equals `key_id` (the verifier checks, and refuses
    /// with [`Error::KeyIdMismatch`] otherwise).
    fn anchor(&self, key_id: &KeyId) -> Option<&TrustAnchor>;

    /// Whether the store holds no anchor at all. An empty store makes every verification fail
    /// with [`Error::NoTrustAnchors`], so misconfiguration is never a silent skip.
    fn is_empty(&self) -> bool;

    /// Every anchor that may end a certificate chain (root certificates and root keys). The
    /// default is none: a store that does not implement this refuses every chained signature
    /// with [`Error::CertificatesUnsupported`] rather than accepting it unchecked.
    fn chain_anchors(&self) -> Vec<&TrustAnchor> {
        Vec::new()
    }
}

/// An in-memory set of pinned trust anchors, keyed and iterated by key id (so its order is
/// deterministic, whatever order keys were added or files listed in).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PinnedKeys {
    anchors: BTreeMap<KeyId, TrustAnchor>,
}

impl PinnedKeys {
    /// An empty set. Add keys before verifying: an empty set refuses everything.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Pins `key` and returns its key id. If the key is already pinned, the existing anchor
    /// (and its name) is kept.
    pub fn add(&mut self, key: VerifyingKey) -> KeyId {
        self.add_anchor(TrustAnchor::new(key))
    }

    /// Pins `anchor` and returns its key id. If its key is already pinned, the existing anchor
    /// is kept.
    pub fn add_anchor(&mut self, anchor: TrustAnchor) -> KeyId {
        let key_id = anchor.key_id();
        self.anchors.entry(key_id).or_insert(anchor);
        key_id
    }

    /// Unpins the key with `key_id`, returning its anchor if it was pinned.
    pub fn remove(&mut self, key_id: &KeyId) -> Option<TrustAnchor> {
        self.anchors.remove(key_id)
    }

    /// Whether a key with `key_id` is pinned.
    #[must_use]
    pub fn contains(&self, key_id: &KeyId) -> bool {
        self.anchors.contains_key(key_id)
    }

    /// The number of pinned keys.
    #[must_use]
    pub fn len(&self) -> usize {
        self.anchors.len()
    }

    /// Whether no key is pinned.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.anchors.is_empty()
    }

    /// The anchors, in key id order.
    pub fn iter(&self) -> impl Iterator<Item = &TrustAnchor> {
        self.anchors.values()
    }

    /// Pins every `PUBLIC KEY` and `CERTIFICATE` block in `pem` (a bundle of root keys and root
    /// certificates), for anchors compiled into an updater with `include_str!`.
    ///
    /// A bundle is all or nothing: one unusable anchor refuses the whole text, naming it.
    ///
    /// # Errors
    /// [`Error::Pem`] when the text holds neither block or malformed PEM;
    /// [`Error::InvalidKey`] when it holds a private key; [`Error::UnusableAnchor`] (which block,
    /// which subject, and the error of [`VerifyingKey::from_spki_der`] or
    /// [`TrustAnchor::from_certificate_der`]) for a block that cannot be pinned.
    pub fn from_pem(pem: &str) -> Result<Self, Error> {
        let blocks = crate::pem::blocks(pem)?;
        if blocks.iter().any(|b| b.label.ends_with("PRIVATE KEY")) {
            return Err(Error::InvalidKey {
                reason: "found a private key where a public key was expected",
            });
        }
        let mut anchors = Self::new();
        for (index, block) in blocks.iter().enumerate() {
            let unusable = |source: Error, name: String| Error::UnusableAnchor {
                block: index,
                name,
                source: alloc::boxed::Box::new(source),
            };
            match block.label {
                "PUBLIC KEY" => {
                    let key = block
                        .decode()
                        .and_then(|der| VerifyingKey::from_spki_der(&der))
                        .map_err(|e| unusable(e, String::from("PUBLIC KEY")))?;
                    anchors.add(key);
                }
                "CERTIFICATE" => {
                    let der = block
                        .decode()
                        .map_err(|e| unusable(e, String::from("CERTIFICATE")))?;
                    let anchor = TrustAnchor::from_certificate_der(&der).map_err(|e| {
                        let name = crate::certificate_subject(&der)
                            .unwrap_or_else(|_| String::from("CERTIFICATE"));
                        unusable(e, name)
                    })?;
                    anchors.add_anchor(anchor);
                }
                _ => {}
            }
        }
        if anchors.is_empty() {
            return Err(Error::Pem {
                reason: "no PUBLIC KEY or CERTIFICATE block",
            });
        }
        Ok(anchors)
    }

    /// Loads pinned keys and root certificates from `path`: either one PEM file holding one or
    /// more `PUBLIC KEY` / `CERTIFICATE` blocks, or a directory whose `*.pem`, `*.pub` and
    /// `*.crt` files each hold some (other files are skipped). Files are read in sorted name order, so the first error reported is always
    /// the same; each anchor is named after its file.
    ///
    /// A `.pem` file in the directory that is not a public key (a private key put there by
    /// mistake, say) is an error, not skipped.
    ///
    /// # Errors
    /// [`Error::Io`] when `path` or an entry cannot be read; [`Error::KeyFile`] (wrapping the
    /// parse error, or [`Error::Pem`] for a file over [`MAX_KEY_FILE_LEN`] or not UTF-8) when a
    /// file's content is refused; [`Error::NoPublicKeys`] for a directory without key files;
    /// [`Error::TooManyKeyFiles`] past [`MAX_KEY_FILES`].
    #[cfg(feature = "std")]
    pub fn load(path: &std::path::Path) -> Result<Self, Error> {
        let metadata = std::fs::metadata(path).map_err(|e| io_error(path, &e))?;
        let mut keys = Self::new();
        if !metadata.is_dir() {
            keys.load_file(path)?;
            return Ok(keys);
        }
        let mut files = alloc::vec::Vec::new();
        for entry in std::fs::read_dir(path).map_err(|e| io_error(path, &e))? {
            let entry = entry.map_err(|e| io_error(path, &e))?;
            let file = entry.path();
            let is_key_file = file
                .extension()
                .is_some_and(|ext| ext == "pem" || ext == "pub" || ext == "crt");
            if !is_key_file {
                continue;
            }
            // Follows symlinks: a link to a key file is a key file.
            let is_file = std::fs::metadata(&file)
                .map_err(|e| io_error(&file, &e))?
                .is_file();
            if !is_file {
                continue;
            }
            if files.len() >= MAX_KEY_FILES {
                return Err(Error::TooManyKeyFiles {
                    path: path.to_path_buf(),
                    limit: MAX_KEY_FILES,
                });
            }
            files.push(file);
        }
        if files.is_empty() {
            return Err(Error::NoPublicKeys {
                path: path.to_path_buf(),
            });
        }
        files.sort();
        for file in &files {
            keys.load_file(file)?;
        }
        Ok(keys)
    }

    #[cfg(feature = "std")]
    fn load_file(&mut self, path: &std::path::Path) -> Result<(), Error> {
        use std::io::Read;

        let key_file_error = |source: Error| Error::KeyFile {
            path: path.to_path_buf(),
            source: alloc::boxed::Box::new(source),
        };
        let file = std::fs::File::open(path).map_err(|e| io_error(path, &e))?;
        let mut bytes = alloc::vec::Vec::new();
        file.take(MAX_KEY_FILE_LEN.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(|e| io_error(path, &e))?;
        if u64::try_from(bytes.len()).map_or(true, |len| len > MAX_KEY_FILE_LEN) {
            return Err(key_file_error(Error::Pem {
                reason: "key file is larger than MAX_KEY_FILE_LEN",
            }));
        }
        let text = core::str::from_utf8(&bytes).map_err(|_| {
            key_file_error(Error::Pem {
                reason: "key file is not UTF-8 text",
            })
        })?;
        let found = Self::from_pem(text).map_err(key_file_error)?;
        let name = path
            .file_name()
            .map(|name| name.to_string_lossy().into_owned());
        for anchor in found.anchors.into_values() {
            let anchor = match &name {
                Some(name) => anchor.with_name(name.clone()),
                None => anchor,
            };
            self.add_anchor(anchor);
        }
        Ok(())
    }
}

#[cfg(feature = "std")]
fn io_error(path: &std::path::Path, err: &std::io::Error) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        kind: err.kind(),
    }
}

impl TrustStore for PinnedKeys {
    fn anchor(&self, key_id: &KeyId) -> Option<&TrustAnchor> {
        self.anchors.get(key_id)
    }

    fn is_empty(&self) -> bool {
        self.anchors.is_empty()
    }

    fn chain_anchors(&self) -> Vec<&TrustAnchor> {
        self.anchors.values().collect()
    }
}

impl FromIterator<VerifyingKey> for PinnedKeys {
    fn from_iter<I: IntoIterator<Item = VerifyingKey>>(iter: I) -> Self {
        let mut keys = Self::new();
        keys.extend(iter);
        keys
    }
}

impl Extend<VerifyingKey> for PinnedKeys {
    fn extend<I: IntoIterator<Item = VerifyingKey>>(&mut self, iter: I) {
        for key in iter {
            self.add(key);
        }
    }
}

impl FromIterator<TrustAnchor> for PinnedKeys {
    fn from_iter<I: IntoIterator<Item = TrustAnchor>>(iter: I) -> Self {
        let mut keys = Self::new();
        for anchor in iter {
            keys.add_anchor(anchor);
        }
        keys
    }
}
