//! Making packages: digest the images, build the manifest, sign `header || manifest`, write.
//!
//! Signing is split in two steps so a key that lives elsewhere (an HSM, `openssl dgst -sign`)
//! fits in: [`UnsignedPackage::signed_message`] is exactly what a signature covers, and
//! [`UnsignedPackage::write_to`] takes whatever [`SignatureBlock`] was assembled for it.

use std::fs::File;
use std::io::{BufReader, Read, Seek, Write};
use std::path::{Path, PathBuf};

use veriflash_format::{
    ChunkEncoding, DeltaSource, ImageSpec, Manifest, SignatureBlock, SignatureEntry, SourceRef,
    StoredChunk, TrustRotation,
};
use veriflash_hash::{Digest, ImageExpectation, Sha256};
use veriflash_sig::SigningKey;

use crate::convert;
use crate::delta::{DeltaBase, SourceImage};
use crate::delta_index::{AnchorIndex, SourceIndex, WantedChunks};
use crate::error::{Error, ErrorKind};
use crate::output::write_atomically;

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
    /// A reader over the image and its length, known before the first byte is read: a file
    /// must be a regular file ([`crate::source::open_regular`]), and is read only up to the
    /// length it had when opened.
    fn open(&self) -> Result<(Box<dyn Read + '_>, u64), Error> {
        Ok(match self {
            Self::File(path) => {
                let (file, len) = crate::source::open_regular(path)?;
                (
                    Box::new(BufReader::with_capacity(256 * 1024, file).take(len)),
                    len,
                )
            }
            Self::Bytes(bytes) => (Box::new(bytes.as_slice()), bytes.len() as u64),
        })
    }
}

/// An image file that ended before the length it had when it was opened.
fn changed_while_read(name: &str) -> Error {
    Error::new(
        ErrorKind::InvalidInput,
        format!("image '{name}' became shorter while it was being read: pack it again"),
    )
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

/// Where an image's chunks end.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Chunking {
    /// Every chunk is the image's chunk size, the last one the remainder: right for images
    /// whose changes stay in place (ext4, UBI and other block-aligned file systems).
    #[default]
    Fixed,
    /// Content-defined chunks (FastCDC, [`crate::cdc`]) of at most the image's chunk size, about
    /// an eighth of it on average: an insertion or a deletion moves only the chunks around it,
    /// so a delta update of a compressed or repacked image (squashfs, a kernel) stays small.
    /// Format version 3 (docs/FORMAT.md §3.3).
    ContentDefined,
}

/// How [`UnsignedPackage::prepare_with`] packs.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PackOptions {
    /// Compress chunks with Zstandard at this level (1..=22), each chunk stored raw when
    /// compression does not pay; `None` stores everything raw (a format version 1 package).
    pub compression: Option<i32>,
    /// Compression threads; `0` means one per available core.
    pub threads: usize,
    /// Where chunks end.
    pub chunking: Chunking,
    /// A delta ([`UnsignedPackage::prepare_delta`]) copies chunks from its source but stores
    /// no patch: a device then needs no decoder with a reference prefix, and no memory for a
    /// reference range (at most 8 MiB).
    pub copy_only: bool,
}

impl PackOptions {
    /// Raw chunks, as [`UnsignedPackage::prepare`] packs.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets [`compression`](Self::compression).
    #[must_use]
    pub fn compression(mut self, level: Option<i32>) -> Self {
        self.compression = level;
        self
    }

    /// Sets [`threads`](Self::threads).
    #[must_use]
    pub fn threads(mut self, threads: usize) -> Self {
        self.threads = threads;
        self
    }

    /// Sets [`chunking`](Self::chunking).
    #[must_use]
    pub fn chunking(mut self, chunking: Chunking) -> Self {
        self.chunking = chunking;
        self
    }

    /// Sets [`copy_only`](Self::copy_only).
    #[must_use]
    pub fn copy_only(mut self, copy_only: bool) -> Self {
        self.copy_only = copy_only;
        self
    }
}

/// A package whose manifest is complete and whose signed message is fixed, waiting for
/// signatures.
#[derive(Debug)]
pub struct UnsignedPackage {
    manifest: Manifest,
    signed_message: Vec<u8>,
    sources: Vec<ImageData>,
    /// For each image with compressed chunks, an unnamed temporary file holding its stored
    /// bytes, written once by `prepare_with` and copied (and re-checked) by `write_to`.
    spools: Vec<Option<File>>,
    /// Whether a certificate chain outside its validity period may sign
    /// ([`UnsignedPackage::allow_expired_certificates`]).
    allow_expired: bool,
}

impl UnsignedPackage {
    /// Digests every image (one pass over each) and builds the manifest and the signed message.
    ///
    /// # Errors
    /// [`ErrorKind::Io`] when an image cannot be read; [`ErrorKind::InvalidInput`] when the
    /// result would break a rule of the format (empty image, duplicate partition, bad name,
    /// chunk size out of range, ...).
    pub fn prepare(spec: PackageSpec) -> Result<Self, Error> {
        Self::prepare_with(spec, &PackOptions::new())
    }

    /// [`prepare`](Self::prepare) with options: with
    /// [`compression`](PackOptions::compression), every chunk is compressed as one Zstandard
    /// frame (on [`threads`](PackOptions::threads) threads) and stored compressed when that
    /// saves at least 1/32 of it, raw otherwise; the stored bytes are spooled to a temporary
    /// file, digested as stored, and the manifest gets a chunk table (format version 2). An
    /// image none of whose chunks pays is packed exactly as without compression, and a package
    /// with no compressed chunk at all is a byte-identical format version 1 package.
    ///
    /// # Errors
    /// As [`prepare`](Self::prepare); [`ErrorKind::InvalidInput`] for a compression level zstd
    /// refuses; [`ErrorKind::Io`] when the temporary file fails.
    pub fn prepare_with(spec: PackageSpec, options: &PackOptions) -> Result<Self, Error> {
        Self::prepare_from(spec, options, None)
    }

    /// [`prepare_with`](Self::prepare_with) as a delta of `base`, an old package verified
    /// when it was read ([`DeltaBase::from_package`]): each image with an old counterpart (the
    /// same partition) declares that old image as its source, and each of its chunks is stored
    /// as the cheapest of copied from the source (found by its SHA-256 anywhere in it), a
    /// Zstandard patch against the range of the source its content lies in or the range
    /// where it was, or as `options` would store it (docs/FORMAT.md §3.4). A package with such
    /// an image is format version 4; one whose images share nothing with `base` is packed as
    /// without it.
    ///
    /// The chunk size is the delta's own (a device rebuilds each chunk from its installed
    /// image, whatever the old package's chunks were), and every chunk costs 85 bytes of
    /// signed tables: for a large image that changed in many small places, 1 to 4 MiB chunks
    /// make the smallest delta (docs/PERFORMANCE.md, the ext4 pair).
    ///
    /// # Errors
    /// As [`prepare_with`](Self::prepare_with).
    pub fn prepare_delta(
        spec: PackageSpec,
        options: &PackOptions,
        base: &DeltaBase,
    ) -> Result<Self, Error> {
        Self::prepare_from(spec, options, Some(base))
    }

    fn prepare_from(
        spec: PackageSpec,
        options: &PackOptions,
        base: Option<&DeltaBase>,
    ) -> Result<Self, Error> {
        let mut images = Vec::with_capacity(spec.images.len());
        let mut sources = Vec::with_capacity(spec.images.len());
        let mut spools = Vec::with_capacity(spec.images.len());
        let last = base.and(spec.images.last().cloned());
        for source in spec.images {
            let old = base.and_then(|b| b.image(&source.partition));
            if options.compression.is_some()
                || options.chunking == Chunking::ContentDefined
                || old.is_some()
            {
                let (image, spool) = tabled_image(&source, options, old)?;
                images.push(image);
                sources.push(source.data);
                spools.push(spool);
                continue;
            }
            spools.push(None);
            let (reader, len) = source.data.open()?;
            let digests =
                veriflash_hash::digest_reader(reader, source.chunk_size).map_err(|e| {
                    Error::new(
                        ErrorKind::InvalidInput,
                        format!("image '{}': {e}", source.name),
                    )
                })?;
            if digests.size != len {
                return Err(changed_while_read(&source.name));
            }
            images.push(ImageSpec {
                name: source.name,
                partition: source.partition,
                size: digests.size,
                chunk_size: source.chunk_size,
                digest: digests.digest,
                chunk_digests: digests.chunk_digests,
                stored_chunks: Vec::new(),
                source: None,
                extensions: Vec::new(),
            });
            sources.push(source.data);
        }
        // A package carries at least one payload byte (docs/FORMAT.md §2): a delta whose every
        // chunk the device already holds carries its last image whole.
        if let Some(last) = last
            && images.iter().map(ImageSpec::stored_size).sum::<u64>() == 0
            && let (Some(image), Some(spool)) = (images.last_mut(), spools.last_mut())
        {
            (*image, *spool) = tabled_image(&last, options, None)?;
        }
        let manifest = Manifest {
            product: spec.product,
            chipset: spec.chipset,
            hardware_revisions: spec.hardware_revisions,
            software_version: spec.software_version,
            security_version: spec.security_version,
            images,
            extensions: Vec::new(),
            trust_rotation: None,
        };
        let signed_message =
            veriflash_format::signed_message(&manifest).map_err(convert::input_error)?;
        Ok(Self {
            manifest,
            signed_message,
            sources,
            spools,
            allow_expired: false,
        })
    }

    /// Whether [`sign_with_certificates`](Self::sign_with_certificates) and
    /// [`attach`](Self::attach) accept a certificate chain that is expired or not valid yet
    /// now. Refused by default: devices that judge dates by a trusted clock refuse such a
    /// package, so a signer must mean it (`veriflash pack --force`), and can tell people what
    /// [`check_certificate_dates`] says.
    #[must_use]
    pub fn allow_expired_certificates(mut self, allow: bool) -> Self {
        self.allow_expired = allow;
        self
    }

    /// Makes the package carry a new trust-anchor set for the devices to adopt once they have
    /// installed it (docs/FORMAT.md §3.2). Sign the result with enough keys of the *current*
    /// set and enough of the *new* one: a device refuses a rotation that either set did not
    /// sign, so a typo in the new set cannot lock devices out of updates.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] when the rotation breaks a rule of the format (version 0,
    /// threshold out of range, duplicate or oversized anchors).
    pub fn with_trust_rotation(mut self, rotation: TrustRotation) -> Result<Self, Error> {
        self.manifest.trust_rotation = Some(rotation);
        self.signed_message =
            veriflash_format::signed_message(&self.manifest).map_err(convert::input_error)?;
        Ok(self)
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
    /// `key`'s public key; [`ErrorKind::CertificateExpired`] as [`attach`](Self::attach).
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
    /// certificate does not hold `key`; [`ErrorKind::CertificateExpired`] when a certificate of
    /// the chain is expired or not valid yet by this computer's clock
    /// ([`check_certificate_dates`]), unless
    /// [`allowed`](UnsignedPackage::allow_expired_certificates).
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
        let scheme = veriflash_sig::DEFAULT_ALGORITHMS
            .iter()
            .find(|a| a.oid() == algorithm)
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::InvalidInput,
                    format!("unsupported signature algorithm {algorithm}"),
                )
            })?;
        // An ECDSA signature from outside is DER (openssl) or r || s (PKCS#11), and the file
        // does not say which: each reading is tried and the one that verifies is kept, so an
        // r || s that happens to parse as DER is never misread.
        let (signature, alternative) = if algorithm == veriflash_sig::ECDSA_WITH_SHA256 {
            use veriflash_sig::EcdsaSignatureEncoding::{Der, Raw};
            let der = veriflash_sig::ecdsa_p256_signature_to_der(&signature, Der);
            let raw = veriflash_sig::ecdsa_p256_signature_to_der(&signature, Raw);
            match (der, raw) {
                (Ok(der), raw) => (der, raw.ok()),
                (Err(_), Ok(raw)) => (raw, None),
                (Err(e), Err(_)) => return Err(invalid("the signature", e)),
            }
        } else {
            (signature, None)
        };
        let signature = match scheme.verify(key, &self.signed_message, &signature) {
            Ok(()) => signature,
            Err(e) => match alternative {
                Some(other) if scheme.verify(key, &self.signed_message, &other).is_ok() => other,
                _ => return Err(invalid("the signature does not verify over the package", e)),
            },
        };
        if let Some(leaf) = certificates.first() {
            let leaf_key = veriflash_sig::leaf_public_key(leaf)
                .map_err(|e| invalid("the leaf certificate", e))?;
            if leaf_key.key_id() != key.key_id() {
                return Err(Error::new(
                    ErrorKind::InvalidKey,
                    "the leaf certificate (first in the chain file) does not hold the signing key",
                ));
            }
            if !self.allow_expired {
                check_certificate_dates(&certificates, unix_now())?;
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
        write_atomically(path, &self.input_files(), |file| {
            self.write_to(&block, file)
        })
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
        for ((image, source), spool) in self
            .manifest
            .images
            .iter()
            .zip(&self.sources)
            .zip(&self.spools)
        {
            if let Some(spool) = spool {
                copy_stored(image, spool, out)?;
                written = written.saturating_add(image.stored_size());
                continue;
            }
            let (mut reader, _) = source.open()?;
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

    /// The image files this package is made from: an output may never be one of them.
    #[must_use]
    pub fn input_files(&self) -> Vec<&Path> {
        self.sources
            .iter()
            .filter_map(|source| match source {
                ImageData::File(path) => Some(path.as_path()),
                ImageData::Bytes(_) => None,
            })
            .collect()
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
        write_atomically(path, &self.input_files(), |file| {
            self.write_to(&block, file)
        })
    }
}

/// Seconds since the Unix epoch by this computer's clock (0 for a clock set before 1970, which
/// then finds every certificate not valid yet).
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Checks that every certificate of a signer's chain (DER, leaf first) is valid at `now`
/// (seconds since the Unix epoch): what a device with a trusted clock will check, found before
/// the package is made rather than on the devices.
///
/// # Errors
/// [`ErrorKind::CertificateExpired`] naming the first certificate that is expired or not valid
/// yet, its notBefore and notAfter, and the time now, with what to do;
/// [`ErrorKind::InvalidInput`] for a certificate that does not parse.
pub fn check_certificate_dates(certificates: &[Vec<u8>], now: u64) -> Result<(), Error> {
    for (i, der) in certificates.iter().enumerate() {
        let validity = veriflash_sig::certificate_validity(der).map_err(|e| {
            Error::new(
                ErrorKind::InvalidInput,
                format!("certificate {}: {e}", i + 1),
            )
            .with_source(e)
        })?;
        if validity.contains(now) {
            continue;
        }
        let which = if i == 0 {
            "the signing certificate".to_owned()
        } else {
            format!("certificate {} of the signer's chain", i + 1)
        };
        let subject = veriflash_sig::certificate_subject(der).unwrap_or_default();
        let state = if now < validity.not_before {
            "is not valid yet"
        } else {
            "has expired"
        };
        return Err(Error::new(
            ErrorKind::CertificateExpired,
            format!(
                "{which} '{subject}' {state}: notBefore {}, notAfter {}, now {}",
                utc(validity.not_before),
                utc(validity.not_after),
                utc(now)
            ),
        )
        .with_remedy(
            "Sign with a certificate that is valid now (renew it), or set this computer's clock right if it is wrong. To sign anyway (`veriflash pack --force`, `veriflash sign --force`), know that devices judging dates by a trusted clock will refuse the package.",
        ));
    }
    Ok(())
}

/// `secs` since the Unix epoch as `YYYY-MM-DD HH:MM:SS UTC` (the proleptic Gregorian
/// calendar, as X.509 times are), for people.
fn utc(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days, for days since 1970-01-01 (never negative here).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Copies a compressed image's stored bytes from its spool, checking each chunk against its
/// signed (stored-bytes) digest on the way.
fn copy_stored<W: Write>(image: &ImageSpec, spool: &File, out: &mut W) -> Result<(), Error> {
    let mut spool = spool;
    let spool_error = |e| Error::io(format_args!("image '{}' spool", image.name), e);
    spool.rewind().map_err(spool_error)?;
    let mut buffer = Vec::new();
    let mut references = image.source.iter().flat_map(|s| &s.references);
    for (chunk, digest) in image.stored_chunks.iter().zip(&image.chunk_digests) {
        // A chunk rebuilt from the source: its digest covers the chunk, a patch's frame digest
        // its stored bytes; a copied chunk stores none.
        let reference = chunk
            .encoding
            .uses_source()
            .then(|| references.next())
            .flatten();
        let digest = match (chunk.encoding, reference) {
            (ChunkEncoding::Source, _) => continue,
            (ChunkEncoding::Patch, Some(reference)) => &reference.frame_digest,
            _ => digest,
        };
        buffer.resize(usize::try_from(chunk.stored_len).unwrap_or(usize::MAX), 0);
        spool.read_exact(&mut buffer).map_err(spool_error)?;
        if veriflash_hash::sha256(&buffer) != *digest {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "image '{}': its spooled stored bytes changed while it was being packed",
                    image.name
                ),
            ));
        }
        out.write_all(&buffer)
            .map_err(|e| Error::io("writing the package", e))?;
    }
    Ok(())
}

/// One chunk after compression: how it is stored, its stored bytes when it is a frame (zstd or
/// patch), and where in the source it comes from when it is rebuilt from one.
struct Packed {
    encoding: ChunkEncoding,
    stored: Option<Vec<u8>>,
    reference: Option<SourceRef>,
}

/// What the packer tries for one chunk of a delta image.
#[derive(Clone, Copy)]
enum Plan {
    /// Store it as a full package would.
    Carry,
    /// Copy it from the source, at this offset.
    Copy(u64),
    /// Also try a patch against each of these ranges of the source.
    Patch([Option<(u64, usize)>; 2]),
}

/// A delta image being packed: the old image, where it holds the new image's chunks and
/// (unless only copies are wanted) its anchors, how far the last chunk found in it had moved,
/// and a buffer for the old bytes a chunk is compared with.
struct DeltaPacking<'a> {
    old: SourceImage<'a>,
    index: SourceIndex,
    anchors: Option<AnchorIndex>,
    shift: i128,
    scratch: Vec<u8>,
}

impl DeltaPacking<'_> {
    /// What to try for the chunk `raw` (SHA-256 `digest`) at offset `at` of the new image:
    /// a copy when the old image holds it (where the index found it, at the same offset, or
    /// moved as the chunk before it), else patches against two ranges: where the chunk's
    /// anchors point (at most four times its length: content that moved, as file data does
    /// in a rebuilt file system), and the old bytes around where the chunk would be if it
    /// moved as the chunk before it did (twice its length: content edited in place, as the
    /// inode tables and bitmaps at fixed places of a file system are).
    ///
    /// The old bytes at the two offsets are read from the old image to be compared; nothing
    /// else of it is read here.
    fn plan(&mut self, raw: &[u8], digest: &Digest, at: u64) -> Result<Plan, Error> {
        let moved = u64::try_from(i128::from(at).saturating_add(self.shift)).unwrap_or(0);
        let old = self.old;
        let found = self
            .index
            .find(
                old.image,
                raw.len(),
                digest,
                &[at, moved],
                &mut self.scratch,
            )
            .map_err(|e| old.read_error(e))?;
        if let Some(found) = found {
            self.shift = i128::from(found).saturating_sub(i128::from(at));
            return Ok(Plan::Copy(found));
        }
        let Some(anchors) = &self.anchors else {
            return Ok(Plan::Carry);
        };
        let len = raw.len();
        let old_len = usize::try_from(old.image.len()).unwrap_or(usize::MAX);
        let limit = veriflash_format::limits::MAX_PATCH_SOURCE_LEN as usize;
        let found = anchors.reference(old_len, raw, at, len.saturating_mul(4).min(limit));
        let reach = len.saturating_mul(2).min(limit).min(old_len);
        let start = usize::try_from(moved)
            .unwrap_or(usize::MAX)
            .saturating_sub(len / 2)
            .min(old_len.saturating_sub(reach));
        let near = (reach > 0).then(|| (u64::try_from(start).unwrap_or(u64::MAX), reach));
        Ok(match (found, near) {
            (None, None) => Plan::Carry,
            (found, near) if found == near => Plan::Patch([found, None]),
            (found, near) => Plan::Patch([found, near]),
        })
    }
}

/// The index of `old` for a new image cut as `options` say, on `threads` threads:
/// content-defined chunks cut the old image the same way; fixed chunks are looked for at every
/// offset of it (a first pass over the new image gives their weak hashes and digests).
fn index_source(
    source: &ImageSource,
    options: &PackOptions,
    old: SourceImage<'_>,
    threads: usize,
) -> Result<SourceIndex, Error> {
    if options.chunking == Chunking::ContentDefined {
        return SourceIndex::content_defined(old.image, source.chunk_size, threads)
            .map_err(|e| old.read_error(e));
    }
    let chunk_size = usize::try_from(source.chunk_size).unwrap_or(usize::MAX);
    let (mut reader, _) = source.data.open()?;
    let mut wanted = WantedChunks::default();
    let mut chunk = vec![0u8; chunk_size];
    loop {
        let n = read_full(&mut reader, &mut chunk)
            .map_err(|e| Error::io(format_args!("reading image '{}'", source.name), e))?;
        if n < chunk_size {
            break;
        }
        wanted.insert(&chunk);
    }
    SourceIndex::rolling(old.image, chunk_size, &wanted, threads).map_err(|e| old.read_error(e))
}

/// Where the next chunk of an image being packed comes from: fixed lengths, or cut by content.
enum Chunks<'r> {
    Fixed(Box<dyn Read + 'r>, usize),
    ContentDefined(crate::cdc::Chunker<Box<dyn Read + 'r>>),
}

impl Chunks<'_> {
    /// The next chunk, empty at the end of the image.
    fn next(&mut self) -> std::io::Result<Vec<u8>> {
        match self {
            Self::Fixed(reader, chunk_size) => {
                let mut chunk = vec![0u8; *chunk_size];
                let n = read_full(reader, &mut chunk)?;
                chunk.truncate(n);
                Ok(chunk)
            }
            Self::ContentDefined(chunker) => Ok(chunker.next_chunk()?.unwrap_or_default().to_vec()),
        }
    }
}

/// Reads an image chunk by chunk (fixed or content-defined, as `options` say), compresses
/// batches of chunks on `threads` threads when asked to, spools the stored bytes and builds the
/// image's manifest entry with a chunk table. Memory: one batch of raw and compressed chunks
/// (`2 × threads` chunks).
fn tabled_image(
    source: &ImageSource,
    options: &PackOptions,
    old: Option<SourceImage<'_>>,
) -> Result<(ImageSpec, Option<File>), Error> {
    let threads = if options.threads == 0 {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    } else {
        options.threads
    };
    let chunk_size = usize::try_from(source.chunk_size).unwrap_or(usize::MAX);
    if chunk_size == 0 || source.chunk_size > veriflash_format::limits::MAX_CHUNK_SIZE {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "image '{}': chunk size {} is out of range",
                source.name, source.chunk_size
            ),
        ));
    }
    let mut delta = match old {
        Some(old) => Some(DeltaPacking {
            old,
            index: index_source(source, options, old, threads)?,
            anchors: if options.copy_only {
                None
            } else {
                Some(AnchorIndex::new(old.image, threads).map_err(|e| old.read_error(e))?)
            },
            shift: 0,
            scratch: Vec::new(),
        }),
        None => None,
    };
    let patch_level = options
        .compression
        .unwrap_or(crate::compress::DEFAULT_COMPRESSION_LEVEL);
    let mut references: Vec<SourceRef> = Vec::new();
    let (reader, len) = source.data.open()?;
    let mut chunks = match options.chunking {
        Chunking::Fixed => Chunks::Fixed(reader, chunk_size),
        Chunking::ContentDefined => Chunks::ContentDefined(crate::cdc::Chunker::new(
            reader,
            crate::cdc::Cdc::new(source.chunk_size),
        )),
    };
    let io_error = |e| Error::io(format_args!("reading image '{}'", source.name), e);
    let spool_error = |e| Error::io(format_args!("image '{}' spool", source.name), e);
    let mut spool = tempfile::tempfile().map_err(spool_error)?;
    let mut spooled = std::io::BufWriter::with_capacity(256 * 1024, &mut spool);
    let mut whole = Sha256::new();
    let mut size: u64 = 0;
    let mut chunk_digests: Vec<Digest> = Vec::new();
    let mut stored_chunks: Vec<StoredChunk> = Vec::new();
    let mut ended = false;
    while !ended {
        let mut batch: Vec<Vec<u8>> = Vec::with_capacity(threads);
        while batch.len() < threads.saturating_mul(2) {
            let chunk = chunks.next().map_err(io_error)?;
            let n = chunk.len();
            if n > 0 {
                whole.update(&chunk);
                size = size.saturating_add(u64::try_from(n).unwrap_or(u64::MAX));
                batch.push(chunk);
            }
            // A fixed chunk shorter than the chunk size is the last one.
            let last = match chunks {
                Chunks::Fixed(..) => n < chunk_size,
                Chunks::ContentDefined(_) => n == 0,
            };
            if last {
                ended = true;
                break;
            }
        }
        let digests: Vec<Digest> = batch
            .iter()
            .map(|raw| veriflash_hash::sha256(raw))
            .collect();
        let mut plans = Vec::with_capacity(batch.len());
        let mut at = size.saturating_sub(batch.iter().map(|raw| raw.len() as u64).sum());
        for (raw, digest) in batch.iter().zip(&digests) {
            let plan = match delta.as_mut() {
                Some(d) => d.plan(raw, digest, at)?,
                None => Plan::Carry,
            };
            plans.push(plan);
            at = at.saturating_add(raw.len() as u64);
        }
        let old_image = delta.as_ref().map(|d| d.old);
        let packed = compress_batch(
            &batch,
            &plans,
            |raw, plan| pack_chunk(raw, plan, options.compression, patch_level, old_image),
            threads,
        )?;
        for ((raw, packed), digest) in batch.iter().zip(packed).zip(digests) {
            let stored: &[u8] = match packed.encoding {
                ChunkEncoding::Source => &[],
                ChunkEncoding::Raw => raw,
                ChunkEncoding::Zstd | ChunkEncoding::Patch => {
                    packed.stored.as_deref().unwrap_or_default()
                }
            };
            spooled.write_all(stored).map_err(spool_error)?;
            // A chunk rebuilt from the source is named by its own digest (what the device must
            // end up with); the others by their stored bytes'.
            chunk_digests.push(if packed.encoding.uses_source() {
                digest
            } else {
                veriflash_hash::sha256(stored)
            });
            references.extend(packed.reference);
            let to_u32 = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
            stored_chunks.push(StoredChunk {
                encoding: packed.encoding,
                stored_len: to_u32(stored.len()),
                decompressed_len: to_u32(raw.len()),
            });
        }
    }
    if size != len {
        return Err(changed_while_read(&source.name));
    }
    spooled.flush().map_err(spool_error)?;
    drop(spooled);
    let compressed = stored_chunks
        .iter()
        .any(|c| c.encoding != ChunkEncoding::Raw);
    let mut image = ImageSpec {
        name: source.name.clone(),
        partition: source.partition.clone(),
        size,
        chunk_size: source.chunk_size,
        digest: whole.finalize(),
        chunk_digests,
        stored_chunks,
        source: match delta {
            Some(delta) if !references.is_empty() => Some(DeltaSource {
                size: delta.old.image.len(),
                digest: delta.old.digest,
                references,
            }),
            _ => None,
        },
        extensions: Vec::new(),
    };
    // No chunk paid and the cuts fell where fixed chunks end (an image of one chunk): the image
    // is packed exactly as with fixed chunks and no compression.
    let tabled = compressed || image.has_variable_chunks();
    if !tabled {
        image.stored_chunks = Vec::new();
    }
    Ok((image, tabled.then_some(spool)))
}

/// The cheapest way to store `raw` that `plan` allows: copied from the source, else the
/// smallest of raw, a zstd frame at `level` (when compressing) and a patch at `patch_level`
/// against each planned range of `old`, read from it into a buffer of its own (at most
/// [`veriflash_format::limits::MAX_PATCH_SOURCE_LEN`] bytes).
fn pack_chunk(
    raw: &[u8],
    plan: Plan,
    level: Option<i32>,
    patch_level: i32,
    old: Option<SourceImage<'_>>,
) -> Result<Packed, Error> {
    let carried = |encoding, stored| Packed {
        encoding,
        stored,
        reference: None,
    };
    if let Plan::Copy(offset) = plan {
        return Ok(Packed {
            encoding: ChunkEncoding::Source,
            stored: None,
            reference: Some(SourceRef {
                offset,
                len: u32::try_from(raw.len()).unwrap_or(u32::MAX),
                frame_digest: [0; 32],
            }),
        });
    }
    let mut best = match level {
        Some(level) => match crate::compress::compress_chunk(raw, level)? {
            Some(frame) => carried(ChunkEncoding::Zstd, Some(frame)),
            None => carried(ChunkEncoding::Raw, None),
        },
        None => carried(ChunkEncoding::Raw, None),
    };
    let ranges = match plan {
        Plan::Patch(ranges) => ranges,
        Plan::Carry | Plan::Copy(_) => [None, None],
    };
    let mut reference = Vec::new();
    for (offset, len) in ranges.into_iter().flatten() {
        let Some(old) = old.filter(|old| {
            offset
                .checked_add(len as u64)
                .is_some_and(|end| end <= old.image.len())
        }) else {
            continue;
        };
        reference.resize(len, 0);
        old.image
            .read_exact_at(offset, &mut reference)
            .map_err(|e| old.read_error(e))?;
        if let Some(frame) = crate::compress::patch_chunk(raw, &reference, patch_level)?
            && frame.len() < best.stored.as_ref().map_or(raw.len(), Vec::len)
        {
            best = Packed {
                encoding: ChunkEncoding::Patch,
                reference: Some(SourceRef {
                    offset,
                    len: u32::try_from(reference.len()).unwrap_or(u32::MAX),
                    frame_digest: veriflash_hash::sha256(&frame),
                }),
                stored: Some(frame),
            };
        }
    }
    Ok(best)
}

/// Packs each chunk of `batch` with `work` (and its plan) on up to `threads` scoped threads,
/// in order.
fn compress_batch(
    batch: &[Vec<u8>],
    plans: &[Plan],
    work: impl Fn(&[u8], Plan) -> Result<Packed, Error> + Sync,
    threads: usize,
) -> Result<Vec<Packed>, Error> {
    let per_thread = batch.len().div_ceil(threads.max(1)).max(1);
    let work = &work;
    std::thread::scope(|scope| {
        let parts: Vec<_> = batch
            .chunks(per_thread)
            .zip(plans.chunks(per_thread))
            .map(|(part, plans)| {
                let work = move || {
                    part.iter()
                        .zip(plans)
                        .map(|(raw, plan)| work(raw, *plan))
                        .collect::<Result<Vec<_>, Error>>()
                };
                // A computer out of threads compresses this part on the calling thread.
                std::thread::Builder::new()
                    .spawn_scoped(scope, work)
                    .map_err(|_| work())
            })
            .collect();
        let mut out = Vec::with_capacity(batch.len());
        for part in parts {
            let part = match part {
                Ok(handle) => handle
                    .join()
                    .map_err(|_| Error::new(ErrorKind::Io, "a compression thread failed"))??,
                Err(done_here) => done_here?,
            };
            out.extend(part);
        }
        Ok(out)
    })
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
fn read_full(reader: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while let Some(rest) = buf.get_mut(filled..).filter(|r| !r.is_empty()) {
        match reader.read(rest) {
            Ok(0) => break,
            Ok(n) => filled = filled.saturating_add(n.min(rest.len())),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod date_tests {
    use super::utc;

    #[test]
    fn utc_dates_read_as_calendars_do() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(1_700_000_000), "2023-11-14 22:13:20 UTC");
        assert_eq!(utc(253_402_300_799), "9999-12-31 23:59:59 UTC");
    }
}
