//! Making packages: digest the images, build the manifest, sign `header || manifest`, write.
//!
//! Signing is split in two steps so a key that lives elsewhere (an HSM, `openssl dgst -sign`)
//! fits in: [`UnsignedPackage::signed_message`] is exactly what a signature covers, and
//! [`UnsignedPackage::write_to`] takes whatever [`SignatureBlock`] was assembled for it.

use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};

use veriflash_format::{ImageSpec, Manifest, SignatureBlock, SignatureEntry};
use veriflash_hash::ImageExpectation;
use veriflash_sig::SigningKey;

use crate::convert;
use crate::error::{Error, ErrorKind};

/// Default chunk size: 1 MiB keeps the manifest at 32 bytes of digest per MiB of image and one
/// chunk's buffer small enough for a modem, while each chunk is large enough to hash at full
/// speed.
pub const DEFAULT_CHUNK_SIZE: u32 = 1 << 20;

/// Where an image's bytes come from.
#[derive(Clone, Debug)]
pub enum ImageData {
    /// A file, read twice: once to digest, once to copy (and re-check) into the package.
    File(PathBuf),
    /// Bytes already in memory.
    Bytes(Vec<u8>),
}

impl ImageData {
    fn open(&self) -> Result<Box<dyn Read + '_>, Error> {
        Ok(match self {
            Self::File(path) => Box::new(BufReader::with_capacity(
                256 * 1024,
                File::open(path).map_err(|e| Error::io(format_args!("{}", path.display()), e))?,
            )),
            Self::Bytes(bytes) => Box::new(bytes.as_slice()),
        })
    }
}

/// One image to pack.
#[derive(Clone, Debug)]
pub struct ImageSource {
    /// Image name, unique in the package.
    pub name: String,
    /// Partition it is written to, unique in the package.
    pub partition: String,
    /// Chunk size (a power of two within the format's limits).
    pub chunk_size: u32,
    /// Its bytes.
    pub data: ImageData,
}

impl ImageSource {
    /// An image with the default chunk size.
    pub fn new(name: impl Into<String>, partition: impl Into<String>, data: ImageData) -> Self {
        Self {
            name: name.into(),
            partition: partition.into(),
            chunk_size: DEFAULT_CHUNK_SIZE,
            data,
        }
    }
}

/// Everything a package says about itself, before digests are known.
#[derive(Clone, Debug)]
pub struct PackageSpec {
    /// Product identifier the package is for.
    pub product: String,
    /// Chipset identifier.
    pub chipset: String,
    /// Hardware revisions accepted (empty: any).
    pub hardware_revisions: Vec<String>,
    /// Human-readable software version.
    pub software_version: String,
    /// Monotonic anti-rollback version.
    pub security_version: u64,
    /// The images, in payload order.
    pub images: Vec<ImageSource>,
}

/// A package whose manifest is complete and whose signed message is fixed, waiting for
/// signatures.
#[derive(Debug)]
pub struct UnsignedPackage {
    manifest: Manifest,
    signed_message: Vec<u8>,
    sources: Vec<ImageData>,
}

impl UnsignedPackage {
    /// Digests every image (one pass over each) and builds the manifest and the signed message.
    ///
    /// # Errors
    /// [`ErrorKind::Io`] when an image cannot be read; [`ErrorKind::InvalidInput`] when the
    /// result would break a rule of the format (empty image, duplicate partition, bad name,
    /// chunk size out of range, ...).
    pub fn prepare(spec: PackageSpec) -> Result<Self, Error> {
        let mut images = Vec::with_capacity(spec.images.len());
        let mut sources = Vec::with_capacity(spec.images.len());
        for source in spec.images {
            let reader = source.data.open()?;
            let digests =
                veriflash_hash::digest_reader(reader, source.chunk_size).map_err(|e| {
                    Error::new(
                        ErrorKind::InvalidInput,
                        format!("image '{}': {e}", source.name),
                    )
                })?;
            images.push(ImageSpec {
                name: source.name,
                partition: source.partition,
                size: digests.size,
                chunk_size: source.chunk_size,
                digest: digests.digest,
                chunk_digests: digests.chunk_digests,
                extensions: Vec::new(),
            });
            sources.push(source.data);
        }
        let manifest = Manifest {
            product: spec.product,
            chipset: spec.chipset,
            hardware_revisions: spec.hardware_revisions,
            software_version: spec.software_version,
            security_version: spec.security_version,
            images,
            extensions: Vec::new(),
        };
        let signed_message =
            veriflash_format::signed_message(&manifest).map_err(convert::input_error)?;
        Ok(Self {
            manifest,
            signed_message,
            sources,
        })
    }

    /// The manifest that will be signed.
    #[must_use]
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The exact bytes every signature must cover (header followed by manifest).
    #[must_use]
    pub fn signed_message(&self) -> &[u8] {
        &self.signed_message
    }

    /// Signs the signed message with `key`, returning the entry for the signature block.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidKey`] when the key cannot sign.
    pub fn sign(&self, key: &SigningKey) -> Result<SignatureEntry, Error> {
        let signature = key.sign(&self.signed_message).map_err(convert::key_error)?;
        Ok(SignatureEntry {
            algorithm: key.algorithm(),
            key_id: key.verifying_key().key_id().0,
            signature,
            certificates: Vec::new(),
        })
    }

    /// Signs the signed message with `key` and attaches the signer's certificate chain
    /// (`certificates`: DER, leaf first, then intermediates; empty for a bare pinned key).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidKey`] when the key cannot sign, or the leaf certificate's key is not
    /// `key`'s public key.
    pub fn sign_with_certificates(
        &self,
        key: &SigningKey,
        certificates: Vec<Vec<u8>>,
    ) -> Result<SignatureEntry, Error> {
        let entry = self.sign(key)?;
        self.attach(
            entry.algorithm,
            &key.verifying_key(),
            entry.signature,
            certificates,
        )
    }

    /// Builds the signature entry for a signature made elsewhere (an HSM,
    /// `openssl dgst -sha256 -sign`) over [`UnsignedPackage::signed_message`], after checking
    /// it: the signature must verify under `key` with `algorithm`, and the leaf certificate
    /// (when `certificates` is not empty) must hold `key`. ECDSA P-256 signatures may be DER or
    /// 64-byte `r || s`; they are stored as canonical DER.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] when the signature does not verify or cannot be
    /// canonicalised, or the algorithm is not supported; [`ErrorKind::InvalidKey`] when the leaf
    /// certificate does not hold `key`.
    pub fn attach(
        &self,
        algorithm: veriflash_sig::ObjectIdentifier,
        key: &veriflash_sig::VerifyingKey,
        signature: Vec<u8>,
        certificates: Vec<Vec<u8>>,
    ) -> Result<SignatureEntry, Error> {
        let invalid = |what: &str, e: veriflash_sig::Error| {
            Error::new(ErrorKind::InvalidInput, format!("{what}: {e}")).with_source(e)
        };
        let signature = if algorithm == veriflash_sig::ECDSA_WITH_SHA256 {
            veriflash_sig::ecdsa_p256_signature_to_der(&signature)
                .map_err(|e| invalid("the signature", e))?
        } else {
            signature
        };
        let scheme = veriflash_sig::DEFAULT_ALGORITHMS
            .iter()
            .find(|a| a.oid() == algorithm)
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::InvalidInput,
                    format!("unsupported signature algorithm {algorithm}"),
                )
            })?;
        scheme
            .verify(key, &self.signed_message, &signature)
            .map_err(|e| invalid("the signature does not verify over the package", e))?;
        if let Some(leaf) = certificates.first() {
            let leaf_key = veriflash_sig::leaf_public_key(leaf)
                .map_err(|e| invalid("the leaf certificate", e))?;
            if leaf_key.key_id() != key.key_id() {
                return Err(Error::new(
                    ErrorKind::InvalidKey,
                    "the leaf certificate (first in the chain file) does not hold the signing key",
                ));
            }
        }
        Ok(SignatureEntry {
            algorithm,
            key_id: key.key_id().0,
            signature,
            certificates,
        })
    }

    /// Writes the package with `entries` as its signature block to `path` atomically.
    ///
    /// # Errors
    /// As [`UnsignedPackage::write_to`]; [`ErrorKind::InvalidInput`] when `entries` is empty.
    pub fn write_with_entries(
        &self,
        entries: Vec<SignatureEntry>,
        path: &Path,
    ) -> Result<u64, Error> {
        if entries.is_empty() {
            return Err(Error::new(ErrorKind::InvalidInput, "no signature given"));
        }
        let block = SignatureBlock { entries };
        write_atomically(path, |file| self.write_to(&block, file))
    }

    /// Writes the package: signed message, `signatures`, then every image. Each image is read
    /// again and checked chunk by chunk against the digests in the manifest while it is copied,
    /// so a source file that changed since [`UnsignedPackage::prepare`] cannot produce a package
    /// whose payload disagrees with its signed manifest. Returns the bytes written.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] when `signatures` is not a valid block or an image changed;
    /// [`ErrorKind::Io`] when reading or writing fails.
    pub fn write_to<W: Write>(
        &self,
        signatures: &SignatureBlock,
        out: &mut W,
    ) -> Result<u64, Error> {
        let prefix = veriflash_format::encode_prefix(&self.signed_message, signatures)
            .map_err(convert::input_error)?;
        out.write_all(&prefix)
            .map_err(|e| Error::io("writing the package", e))?;
        let mut written = u64::try_from(prefix.len()).unwrap_or(u64::MAX);
        for (image, source) in self.manifest.images.iter().zip(&self.sources) {
            let mut reader = source.open()?;
            let expect = ImageExpectation {
                size: image.size,
                chunk_size: image.chunk_size,
                digest: &image.digest,
                chunk_digests: &image.chunk_digests,
            };
            veriflash_hash::verify_reader(&mut reader, expect, |chunk| {
                out.write_all(chunk.bytes())
            })
            .map_err(|e| match e {
                veriflash_hash::VerifyError::Sink(io) => Error::io("writing the package", io),
                veriflash_hash::VerifyError::Io(io) => {
                    Error::io(format_args!("reading image '{}'", image.name), io)
                }
                other => Error::new(
                    ErrorKind::InvalidInput,
                    format!(
                        "image '{}' changed while it was being packed: {other:?}",
                        image.name
                    ),
                ),
            })?;
            written = written.saturating_add(image.size);
        }
        out.flush()
            .map_err(|e| Error::io("writing the package", e))?;
        Ok(written)
    }

    /// Signs with every key in `keys` and writes the package to `path` atomically (a temporary
    /// file in the same directory, synced, then renamed), so a crash never leaves half a
    /// package under the final name.
    ///
    /// # Errors
    /// As [`UnsignedPackage::sign`] and [`UnsignedPackage::write_to`]; [`ErrorKind::InvalidInput`]
    /// when `keys` is empty.
    pub fn write_signed(&self, keys: &[&SigningKey], path: &Path) -> Result<u64, Error> {
        if keys.is_empty() {
            return Err(Error::new(ErrorKind::InvalidInput, "no signing key given"));
        }
        let entries = keys
            .iter()
            .map(|key| self.sign(key))
            .collect::<Result<Vec<_>, _>>()?;
        let block = SignatureBlock { entries };
        write_atomically(path, |file| self.write_to(&block, file))
    }
}

/// Creates `path` through a temporary file in the same directory that is renamed into place only
/// after `write` succeeded and the data reached the disk.
///
/// # Errors
/// Whatever `write` returns; [`ErrorKind::Io`] when the file cannot be created, synced or renamed.
pub fn write_atomically<T>(
    path: &Path,
    write: impl FnOnce(&mut std::io::BufWriter<&File>) -> Result<T, Error>,
) -> Result<T, Error> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.partial-{}", std::process::id()));
    let result = (|| {
        let file =
            File::create(&tmp).map_err(|e| Error::io(format_args!("{}", tmp.display()), e))?;
        let mut buffered = std::io::BufWriter::with_capacity(256 * 1024, &file);
        let value = write(&mut buffered)?;
        buffered
            .flush()
            .map_err(|e| Error::io(format_args!("{}", tmp.display()), e))?;
        drop(buffered);
        file.sync_all()
            .map_err(|e| Error::io(format_args!("{}", tmp.display()), e))?;
        std::fs::rename(&tmp, path)
            .map_err(|e| Error::io(format_args!("{}", path.display()), e))?;
        Ok(value)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
