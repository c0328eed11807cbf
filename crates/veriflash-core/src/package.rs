//! Reading a package in the order that keeps untrusted bytes away from everything that matters
//! (docs/FORMAT.md §7): header, manifest bytes and signature block first, signatures next, the
//! manifest's contents only once they are authenticated, and the payload last, chunk by chunk,
//! each chunk compared with its signed digest before anyone sees it.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use serde::Serialize;
use std::sync::Arc;
use veriflash_format::{
    Header, ImageSpec, Manifest, PackagePrefix, SignatureBlock, SignatureEntry,
};

use veriflash_hash::{ChunkDecoder, Digest, ImageExpectation, ParallelOptions, VerifiedChunk};
use veriflash_sig::{KeyId, RotationApproval, SignatureInput, Verifier};

use crate::compress::ZstdDecoder;
use crate::convert;
use crate::error::{Error, ErrorKind, Location};
use crate::trust::AnchorSet;

/// A package whose header, manifest bytes and signature block have been read and bounded, but
/// whose signatures have not been checked. Nothing of the payload has been read.
///
/// The only way forward is [`PackageReader::verify`]; [`PackageReader::manifest_unverified`]
/// exists for inspection tools and says in its name what it is.
#[derive(Debug)]
pub struct PackageReader<R> {
    reader: R,
    prefix: PackagePrefix,
    /// The whole package's length, when the source knows it: checked against the signed
    /// layout right after the signatures, before a payload byte is read.
    len: Option<u64>,
    /// The package as a file the hashing workers read the payload from themselves, each its
    /// own chunks at their offsets (see [`veriflash_hash::verify_stored_at_parallel`]).
    file: Option<File>,
}

impl PackageReader<BufReader<Box<dyn Read + Send>>> {
    /// Opens a package and reads its header, manifest and signature block: a regular file,
    /// whose length [`PackageReader::verify`] checks against the signed layout, or a stream
    /// such as a FIFO ([`crate::source::open_package`]).
    ///
    /// # Errors
    /// [`ErrorKind::Io`] when the file cannot be opened, [`ErrorKind::InvalidInput`] when it is
    /// a directory or a FIFO nobody writes to, or any error of [`PackageReader::new`].
    pub fn open(path: &Path) -> Result<Self, Error> {
        let ((stream, len), file) = crate::source::open_package_file(path)?;
        // A small buffer: the prefix is read in a few exact reads, and the payload is read in
        // whole chunks that bypass the buffer (or by the workers, from a file).
        let reader = Self::new(BufReader::with_capacity(64 * 1024, stream))?;
        let reader = match len {
            Some(len) => reader.with_len(len),
            None => reader,
        };
        Ok(match file {
            Some(file) => reader.with_file(file),
            None => reader,
        })
    }
}

impl<R: Read> PackageReader<R> {
    /// Reads the header, manifest bytes and signature block from `reader`, checking each length
    /// against its limit before allocating for it, and leaves `reader` at the first payload byte.
    ///
    /// # Errors
    /// [`ErrorKind::Malformed`], [`ErrorKind::Truncated`], [`ErrorKind::LimitExceeded`],
    /// [`ErrorKind::UnsupportedFormat`] for a bad prefix; [`ErrorKind::Io`] when reading fails.
    pub fn new(mut reader: R) -> Result<Self, Error> {
        let prefix = veriflash_format::read_prefix(&mut reader).map_err(convert::read_error)?;
        Ok(Self {
            reader,
            prefix,
            len: None,
            file: None,
        })
    }

    /// Reads the payload through `file` instead, the package file this reader's prefix came
    /// from ([`crate::source::open_package_file`] gives both): each hashing worker reads its
    /// own chunks at their offsets and hashes them on the core that copied them (half the time
    /// of handing the bytes over from one reading thread, on 2 cores: docs/PERFORMANCE.md).
    /// Every payload byte is still read once, and hashed against its signed digest as ever:
    /// another file's bytes are refused like any tampered payload.
    #[must_use]
    pub fn with_file(mut self, file: File) -> Self {
        self.file = Some(file);
        self
    }

    /// Tells the reader the whole package's length (a file's size, a download's
    /// `Content-Length`): [`PackageReader::verify`] then refuses a package that is shorter or
    /// longer than its signed layout before a payload byte is read, so an install never erases
    /// anything for a package that cannot complete.
    #[must_use]
    pub fn with_len(mut self, len: u64) -> Self {
        self.len = Some(len);
        self
    }

    /// The package's fixed header (not yet authenticated).
    #[must_use]
    pub fn header(&self) -> &Header {
        &self.prefix.header
    }

    /// The signature block (not yet verified).
    #[must_use]
    pub fn signature_block(&self) -> &SignatureBlock {
        &self.prefix.signature_block
    }

    /// The exact bytes the signatures cover: header followed by manifest.
    #[must_use]
    pub fn signed_message(&self) -> &[u8] {
        &self.prefix.signed_message
    }

    /// Parses the manifest **without** checking any signature, for display by inspection tools.
    /// Never act on what this returns.
    ///
    /// # Errors
    /// [`ErrorKind::Malformed`] and friends when the manifest does not parse.
    pub fn manifest_unverified(&self) -> Result<Manifest, Error> {
        Manifest::from_der(self.prefix.manifest_der()).map_err(convert::format_error)
    }

    /// Verifies the signatures over header and manifest with `verifier`, then parses the
    /// authenticated manifest and checks it against the header. This is the only place a
    /// [`VerifiedManifest`] is made.
    ///
    /// Consumes the reader: a package that fails here cannot be streamed further by mistake.
    ///
    /// # Errors
    /// [`ErrorKind::NotAuthentic`], [`ErrorKind::UnknownSigner`], [`ErrorKind::NoTrustAnchors`],
    /// [`ErrorKind::KeyRevoked`], [`ErrorKind::ThresholdNotMet`],
    /// [`ErrorKind::UnsupportedAlgorithm`] from the signature check; [`ErrorKind::Malformed`] or
    /// [`ErrorKind::UnsupportedFormat`] when the authenticated manifest is unusable;
    /// [`ErrorKind::Truncated`] or [`ErrorKind::TrailingData`] when the package's known length
    /// ([`PackageReader::with_len`]) disagrees with its signed layout.
    pub fn verify(self, verifier: &Verifier<'_>) -> Result<VerifiedPackage<R>, Error> {
        let inputs = signature_inputs(&self.prefix.signature_block.entries);
        let verified = verifier
            .verify(&self.prefix.signed_message, &inputs)
            .map_err(convert::sig_error)?;
        let signers = verified.signers().to_vec();
        // From here on the manifest bytes are authenticated; only now are they parsed.
        let manifest =
            Manifest::from_der(self.prefix.manifest_der()).map_err(convert::format_error)?;
        if u64::from(self.prefix.header.format_version) != manifest.version() {
            return Err(Error::new(
                ErrorKind::Malformed,
                format!(
                    "header declares format version {}, the manifest is version {}",
                    self.prefix.header.format_version,
                    manifest.version()
                ),
            ));
        }
        let declared = manifest.payload_len().map_err(convert::format_error)?;
        if declared != self.prefix.header.payload_len {
            return Err(Error::new(
                ErrorKind::Malformed,
                format!(
                    "header declares {} payload bytes, manifest images total {declared}",
                    self.prefix.header.payload_len
                ),
            ));
        }
        if let Some(len) = self.len {
            let layout = self
                .prefix
                .payload_offset()
                .saturating_add(self.prefix.header.payload_len);
            if len < layout {
                return Err(Error::new(
                    ErrorKind::Truncated,
                    format!(
                        "the package is {len} bytes, its signed layout {layout}: it ends {} bytes early",
                        layout - len
                    ),
                ));
            }
            if len > layout {
                return Err(Error::new(
                    ErrorKind::TrailingData,
                    format!(
                        "the package is {len} bytes, its signed layout {layout}: {} bytes follow its end",
                        len - layout
                    ),
                ));
            }
        }
        // A new anchor set is checked now, with the package: a rotation that may not be
        // adopted refuses the whole package (its signer meant it to rotate), rather than
        // installing it and quietly keeping the old anchors.
        let trust_rotation = match &manifest.trust_rotation {
            None => None,
            Some(rotation) => {
                let set = AnchorSet::from_rotation(rotation)?;
                let approval = verifier
                    .verify_rotation(
                        &self.prefix.signed_message,
                        &inputs,
                        set.anchors(),
                        set.version(),
                        set.threshold(),
                    )
                    .map_err(convert::sig_error)?;
                Some(ApprovedRotation { set, approval })
            }
        };
        let manifest_digest = veriflash_hash::sha256(&self.prefix.signed_message);
        let payload_offset = self.prefix.payload_offset();
        drop(inputs);
        Ok(VerifiedPackage {
            manifest: VerifiedManifest {
                manifest,
                signers,
                manifest_digest,
                trust_rotation,
                signed: Arc::new(Signed {
                    message: self.prefix.signed_message,
                    entries: self.prefix.signature_block.entries,
                }),
            },
            file: self.file.map(|file| (file, payload_offset)),
            reader: self.reader,
            options: ParallelOptions::default(),
            decoder: DecoderSlot(Arc::new(ZstdDecoder::new())),
        })
    }
}

/// The signature entries of a package as the verifier takes them.
fn signature_inputs(entries: &[SignatureEntry]) -> Vec<SignatureInput<'_>> {
    entries
        .iter()
        .map(|entry| SignatureInput {
            algorithm: entry.algorithm,
            key_id: KeyId(entry.key_id),
            signature: &entry.signature,
            certificates: entry.certificates.iter().map(Vec::as_slice).collect(),
        })
        .collect()
}

/// A manifest whose signatures verified against the trust anchors.
///
/// There is no public constructor: a value of this type is proof that
/// [`PackageReader::verify`] succeeded, so code that takes one cannot be handed unverified data.
#[derive(Clone, Debug)]
pub struct VerifiedManifest {
    manifest: Manifest,
    signers: Vec<KeyId>,
    manifest_digest: Digest,
    trust_rotation: Option<ApprovedRotation>,
    /// What the signatures covered and the signatures, kept to check them again against a
    /// device's own anchors ([`VerifiedManifest::verify_for_device`]).
    signed: Arc<Signed>,
}

/// The signed message (header and manifest) and the signature entries over it.
#[derive(Debug)]
struct Signed {
    message: Vec<u8>,
    entries: Vec<SignatureEntry>,
}

/// A trust rotation that met the rotation rule, with who signed it.
#[derive(Clone, Debug)]
struct ApprovedRotation {
    set: AnchorSet,
    approval: RotationApproval,
}

impl VerifiedManifest {
    /// The authenticated manifest.
    #[must_use]
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The distinct trusted keys whose signatures verified.
    #[must_use]
    pub fn signers(&self) -> &[KeyId] {
        &self.signers
    }

    /// The new trust-anchor set this package carries, already checked against the rotation
    /// rule ([`veriflash_sig::Verifier::verify_rotation`]: newer than the current set, signed
    /// by enough current anchors and by enough of the new ones). `None` when the package
    /// rotates nothing.
    ///
    /// Persist it ([`AnchorSet::save`]) only after the package has installed and committed:
    /// a device that adopted the anchors of an update that then failed could be left trusting
    /// a set its running software was never tested with.
    #[must_use]
    pub fn trust_rotation(&self) -> Option<&AnchorSet> {
        self.trust_rotation.as_ref().map(|r| &r.set)
    }

    /// SHA-256 of the signed message (header and manifest): identifies this exact package, for
    /// journals and logs.
    #[must_use]
    pub fn package_id(&self) -> &Digest {
        &self.manifest_digest
    }

    /// The package's signed prefix as it is laid out in the package (header, manifest,
    /// signature block): what the host keeps of an installed package, so the next install can
    /// verify it again and reuse its chunks ([`crate::reuse`]).
    pub(crate) fn signed_prefix(&self) -> Result<Vec<u8>, Error> {
        let block = SignatureBlock {
            entries: self.signed.entries.clone(),
        }
        .to_der()
        .map_err(convert::format_error)?;
        let mut prefix = self.signed.message.clone();
        prefix.extend_from_slice(&block);
        Ok(prefix)
    }

    /// Checks the signatures once more, with `verifier` built on the trust-anchor set a device
    /// holds (version `held_version`), when that set is newer than the one the package was
    /// verified with: a device that adopted a rotation no longer accepts its retired keys,
    /// whichever station flashes it. Returns the package's own rotation when it is newer than
    /// the device's set and authorized by it: the set this device adopts at commit.
    ///
    /// # Errors
    /// The signature errors of [`PackageReader::verify`], and [`ErrorKind::RotationRefused`]
    /// for a rotation the device's set does not authorize.
    pub fn verify_for_device(
        &self,
        verifier: &Verifier<'_>,
        held_version: u64,
    ) -> Result<Option<AnchorSet>, Error> {
        let inputs = signature_inputs(&self.signed.entries);
        verifier
            .verify(&self.signed.message, &inputs)
            .map_err(convert::sig_error)?;
        let Some(rotation) = &self.trust_rotation else {
            return Ok(None);
        };
        if rotation.set.version() <= held_version {
            // The device holds this set (or a newer one) already: nothing to adopt.
            return Ok(None);
        }
        verifier
            .verify_rotation(
                &self.signed.message,
                &inputs,
                rotation.set.anchors(),
                rotation.set.version(),
                rotation.set.threshold(),
            )
            .map_err(convert::sig_error)?;
        Ok(Some(rotation.set.clone()))
    }
}

/// A shared [`ChunkDecoder`], as the install policy and the package hold it.
pub type SharedDecoder = Arc<dyn ChunkDecoder + Send + Sync>;

/// The decoder a package uses for compressed chunks (shown by name only in `Debug`).
#[derive(Clone)]
struct DecoderSlot(SharedDecoder);

impl std::fmt::Debug for DecoderSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChunkDecoder")
    }
}

/// A package whose manifest is verified and whose payload is ready to be streamed.
#[derive(Debug)]
pub struct VerifiedPackage<R> {
    manifest: VerifiedManifest,
    reader: R,
    /// The package file and its payload's offset, when the workers read the payload from it.
    file: Option<(File, u64)>,
    options: ParallelOptions,
    decoder: DecoderSlot,
}

impl<R: Read> VerifiedPackage<R> {
    /// The verified manifest.
    #[must_use]
    pub fn manifest(&self) -> &VerifiedManifest {
        &self.manifest
    }

    /// How the payload is verified: hashing threads, buffers in flight, whole-image re-hash
    /// (see [`ParallelOptions`]; the default uses every core and relies on the signed chunk
    /// digests, which cover every byte).
    #[must_use]
    pub fn with_options(mut self, options: ParallelOptions) -> Self {
        self.options = options;
        self
    }

    /// Replaces the decoder of compressed chunks ([`ZstdDecoder`] by default). The verifier
    /// calls it only with stored bytes that matched their signed digest, into a buffer of the
    /// chunk's signed decompressed length; tests use this to watch what it is given.
    #[must_use]
    pub fn with_decoder(mut self, decoder: SharedDecoder) -> Self {
        self.decoder = DecoderSlot(decoder);
        self
    }

    /// Sets the number of hashing threads (`0`: one per available core, the default).
    #[must_use]
    pub fn with_threads(mut self, threads: usize) -> Self {
        self.options = self.options.threads(threads);
        self
    }

    /// Also hashes each whole image as it streams (one more SHA-256 pass, on a thread of its
    /// own) and compares it with the signed whole-image digest: without a device, the only way
    /// to know that digest agrees with the chunks. A report then says the digest was checked
    /// ([`ImageReport::sha256_checked`]). Installs need no such pass: a read-back equal to the
    /// digest proves it.
    #[must_use]
    pub fn with_whole_image_check(mut self, check: bool) -> Self {
        self.options = self.options.check_whole_image(check);
        self
    }

    /// Streams every image in manifest order, checking each chunk against its signed digest and
    /// handing only verified chunks to `sink`, then checks that the package ends where declared.
    ///
    /// Each chunk is read once into a buffer, hashed (on worker threads, see
    /// [`with_options`](Self::with_options)), compared, and the same bytes are passed on, in
    /// order, on the calling thread: nothing is re-read after it was checked. A chunk stored
    /// compressed is hashed as stored and compared first; only then does a worker decompress it,
    /// into a buffer of its signed decompressed length, and the sink gets the decompressed
    /// bytes. The run stops at the first bad chunk; memory is a fixed number of chunk buffers
    /// (twice as many for compressed images), whatever the image size.
    ///
    /// A delta package (format version 4) cannot be streamed so: some of its chunks are
    /// rebuilt from the images a device runs ([`VerifiedPackage::stream_with_source`]).
    ///
    /// # Errors
    /// [`ErrorKind::IntegrityMismatch`] naming the image and chunk,
    /// [`ErrorKind::DecompressedLengthMismatch`], [`ErrorKind::DecompressionFailed`],
    /// [`ErrorKind::Truncated`],
    /// [`ErrorKind::TrailingData`], [`ErrorKind::ImageDigestMismatch`], [`ErrorKind::Io`], or
    /// whatever `sink` returns; [`ErrorKind::SourceMismatch`] for a delta package.
    pub fn stream<F>(mut self, mut sink: F) -> Result<VerifyReport, Error>
    where
        F: FnMut(&ImageSpec, VerifiedChunk<'_>) -> Result<(), Error>,
    {
        if self.is_delta() {
            return Err(Error::new(
                ErrorKind::SourceMismatch,
                "a delta package is installed on a device that runs its source image, not streamed alone",
            ));
        }
        let mut images = Vec::with_capacity(self.manifest.manifest.images.len());
        for image in &self.manifest.manifest.images {
            let expect = ImageExpectation {
                size: image.size,
                chunk_size: image.chunk_size,
                digest: &image.digest,
                chunk_digests: &image.chunk_digests,
            };
            let stored = stored_table(image);
            let decoder = &*self.decoder.0;
            let digest = match &mut self.file {
                Some((file, offset)) => {
                    let at = *offset;
                    *offset = at.saturating_add(image.stored_size());
                    veriflash_hash::verify_stored_at_parallel(
                        file,
                        at,
                        expect,
                        &stored,
                        decoder,
                        self.options,
                        |chunk| sink(image, chunk),
                    )
                }
                None => veriflash_hash::verify_stored_reader_parallel(
                    &mut self.reader,
                    expect,
                    &stored,
                    decoder,
                    self.options,
                    |chunk| sink(image, chunk),
                ),
            }
            .map_err(|e| convert::verify_error(&image.name, e))?;
            images.push(ImageReport::new(
                image,
                digest,
                self.options.check_whole_image,
            ));
        }
        match &self.file {
            Some((file, end)) => {
                let mut probe = [0u8; 1];
                let extra = veriflash_hash::ReadAt::read_at(file, &mut probe, *end)
                    .map_err(|e| Error::io("reading past the payload", e))?;
                if extra != 0 {
                    return Err(trailing_data());
                }
            }
            None => check_end(&mut self.reader)?,
        }
        Ok(VerifyReport::new(&self.manifest, images))
    }

    /// Whether this is a delta package (format version 4): some images declare a source.
    #[must_use]
    pub fn is_delta(&self) -> bool {
        self.manifest.manifest.is_delta()
    }

    /// Streams a package, delta or complete, against the images `installed` holds: first every
    /// declared source is compared with the installed image, whole ([`crate::check_sources`]);
    /// then each chunk is checked against its signed digest and handed to `sink` in order, the
    /// chunks of a delta rebuilt from the installed images right before (FORMAT.md §3.4).
    ///
    /// # Errors
    /// As [`VerifiedPackage::stream`]; [`ErrorKind::SourceMismatch`] when an installed image
    /// is not a declared source; [`ErrorKind::DeltaOutputMismatch`] for a rebuilt chunk that
    /// does not match its digest.
    pub fn stream_with_source<F>(
        self,
        installed: &mut dyn crate::InstalledImages,
        sink: F,
    ) -> Result<VerifyReport, Error>
    where
        F: FnMut(&ImageSpec, VerifiedChunk<'_>) -> Result<(), Error>,
    {
        crate::check_sources(
            self.manifest.manifest(),
            installed,
            None,
            crate::SourceCheck::Whole,
        )?;
        self.stream_to(&mut crate::delta::SourceAndSink {
            images: installed,
            sink,
        })
    }

    /// Streams every chunk to `target`, rebuilding a delta package's chunks from the installed
    /// images `target` reads (whose sources the caller checked).
    pub(crate) fn stream_to(
        mut self,
        target: &mut dyn crate::reuse::ReuseTarget,
    ) -> Result<VerifyReport, Error> {
        if !self.is_delta() {
            return self.stream(|image, chunk| target.chunk(image, chunk));
        }
        let images = crate::delta::stream(
            &mut self.reader,
            self.manifest.manifest(),
            Some(target),
            self.options,
        )?;
        check_end(&mut self.reader)?;
        Ok(VerifyReport::new(&self.manifest, images))
    }

    /// Verifies every payload byte without writing anything anywhere. Of a delta package, the
    /// bytes it stores (chunks, and patches against their frame digests): its chunks rebuilt
    /// from a source are checked when it is installed.
    ///
    /// # Errors
    /// As [`VerifiedPackage::stream`].
    pub fn verify_payload(mut self) -> Result<VerifyReport, Error> {
        if !self.is_delta() {
            return self.stream(|_, _| Ok(()));
        }
        let images = crate::delta::stream(
            &mut self.reader,
            self.manifest.manifest(),
            None,
            self.options,
        )?;
        check_end(&mut self.reader)?;
        Ok(VerifyReport::new(&self.manifest, images))
    }
}

/// After the last image: any byte more is [`ErrorKind::TrailingData`].
fn check_end(reader: &mut impl Read) -> Result<(), Error> {
    let mut probe = [0u8; 1];
    let extra = loop {
        match reader.read(&mut probe) {
            Ok(n) => break n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io("reading past the payload", e)),
        }
    };
    if extra != 0 {
        return Err(trailing_data());
    }
    Ok(())
}

/// The error for bytes after the last image's declared end.
fn trailing_data() -> Error {
    Error::new(
        ErrorKind::TrailingData,
        "bytes follow the last image's declared end",
    )
}

/// The hash crate's view of an image's chunk table (empty: all raw). A chunk rebuilt from the
/// source (format version 4) is checked as a raw chunk of its own length: its digest covers the
/// chunk, which [`crate::delta`] rebuilds before handing it to the check.
pub(crate) fn stored_table(image: &ImageSpec) -> Vec<veriflash_hash::StoredChunk> {
    image
        .stored_chunks
        .iter()
        .map(|chunk| {
            let (encoding, stored_len) = match chunk.encoding {
                veriflash_format::ChunkEncoding::Raw => {
                    (veriflash_hash::ChunkEncoding::Raw, chunk.stored_len)
                }
                veriflash_format::ChunkEncoding::Zstd => {
                    (veriflash_hash::ChunkEncoding::Zstd, chunk.stored_len)
                }
                veriflash_format::ChunkEncoding::Source
                | veriflash_format::ChunkEncoding::Patch => {
                    (veriflash_hash::ChunkEncoding::Raw, chunk.decompressed_len)
                }
            };
            veriflash_hash::StoredChunk {
                encoding,
                stored_len,
                len: chunk.decompressed_len,
            }
        })
        .collect()
}

/// Verifies a package file completely: signatures, manifest, every payload chunk, its end.
///
/// # Errors
/// Any error of [`PackageReader::open`], [`PackageReader::verify`] or
/// [`VerifiedPackage::stream`].
pub fn verify_file(path: &Path, verifier: &Verifier<'_>) -> Result<VerifyReport, Error> {
    PackageReader::open(path)?
        .verify(verifier)?
        .verify_payload()
}

/// What a successful verification established, for display and for `--json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// Product the package is for.
    pub product: String,
    /// Chipset the package is for.
    pub chipset: String,
    /// Hardware revisions it accepts (empty: any).
    pub hardware_revisions: Vec<String>,
    /// Human-readable software version.
    pub software_version: String,
    /// Anti-rollback version.
    pub security_version: u64,
    /// Hex SHA-256 of header and manifest.
    pub package_id: String,
    /// Hex key ids of the trusted keys that signed.
    pub signers: Vec<String>,
    /// Each verified image.
    pub images: Vec<ImageReport>,
    /// The new trust-anchor set the package carries, if any (absent from JSON when none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trust_rotation: Option<RotationReport>,
}

/// What a package's approved trust rotation changes, for reports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RotationReport {
    /// The new set's version.
    pub version: u64,
    /// Distinct anchors of the new set a package must be signed by.
    pub threshold: usize,
    /// Hex key ids of the new anchors.
    pub anchors: Vec<String>,
    /// Hex key ids of the current anchors that signed the rotation.
    pub authorized_by: Vec<String>,
    /// Hex key ids of the new anchors that signed it.
    pub proven_by: Vec<String>,
    /// The new set itself, to persist with [`AnchorSet::save`] once the install committed
    /// (not serialized: reports show key ids).
    #[serde(skip)]
    pub set: AnchorSet,
}

impl VerifyReport {
    pub(crate) fn new(manifest: &VerifiedManifest, images: Vec<ImageReport>) -> Self {
        let m = &manifest.manifest;
        Self {
            product: m.product.clone(),
            chipset: m.chipset.clone(),
            hardware_revisions: m.hardware_revisions.clone(),
            software_version: m.software_version.clone(),
            security_version: m.security_version,
            package_id: hex(manifest.package_id()),
            signers: manifest.signers.iter().map(ToString::to_string).collect(),
            images,
            trust_rotation: manifest.trust_rotation.as_ref().map(|r| RotationReport {
                version: r.set.version(),
                threshold: r.set.threshold(),
                anchors: r
                    .set
                    .anchors()
                    .iter()
                    .map(|a| a.key_id().to_string())
                    .collect(),
                authorized_by: r
                    .approval
                    .current_signers()
                    .iter()
                    .map(ToString::to_string)
                    .collect(),
                proven_by: r
                    .approval
                    .next_signers()
                    .iter()
                    .map(ToString::to_string)
                    .collect(),
                set: r.set.clone(),
            }),
        }
    }
}

/// One verified image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ImageReport {
    /// Image name.
    pub name: String,
    /// Target partition.
    pub partition: String,
    /// Size in bytes.
    pub size: u64,
    /// Number of chunks checked.
    pub chunks: u64,
    /// Hex SHA-256 of the whole image as the signed manifest states it. Authentic (it is
    /// signed) but, unless [`sha256_checked`](Self::sha256_checked), not known to agree with
    /// the chunks: the chunk digests are what verified every byte.
    pub sha256: String,
    /// Whether this run found the whole image equal to [`sha256`](Self::sha256): hashed while
    /// it streamed ([`VerifiedPackage::with_whole_image_check`]), or read back from the device
    /// after an install (every image the device stored).
    pub sha256_checked: bool,
}

impl ImageReport {
    pub(crate) fn new(image: &ImageSpec, digest: Digest, checked: bool) -> Self {
        Self {
            name: image.name.clone(),
            partition: image.partition.clone(),
            size: image.size,
            chunks: image.chunk_count(),
            sha256: hex(&digest),
            sha256_checked: checked,
        }
    }
}

/// Lower-case hex of a byte string.
#[must_use]
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

pub(crate) fn location_in(image: &str, chunk: Option<u64>, offset: Option<u64>) -> Location {
    Location {
        image: Some(image.to_owned()),
        chunk,
        offset,
    }
}
