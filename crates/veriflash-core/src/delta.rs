//! Offline delta packages (FORMAT.md §3.4, format version 4): a package that carries only what
//! changed since a given old package, for the tethered-PC and local methods, where no server
//! can be asked for byte ranges.
//!
//! **Packing** ([`DeltaBase`]): the old package is read through the verifying reader (its
//! signatures must verify against the keys the packer trusts, its images against its chunk
//! digests and whole-image digests) and held in memory. Each chunk of a new image with an old
//! counterpart (the same partition) is stored as the cheapest of: copied from the old image
//! (found by its SHA-256 anywhere in it: no payload byte), a Zstandard patch against a range of
//! the old image, or as a full package would store it. The manifest keeps every chunk's signed
//! digest and declares the old image (length and SHA-256) as the image's source.
//!
//! **Installing** ([`check_sources`], then [`crate::VerifiedPackage::stream_with_source`]):
//! before anything is written, each declared source is compared with what the device runs in
//! that partition, hashed whole; a device that runs something else, or cannot read it back, gets
//! [`ErrorKind::SourceMismatch`] and nothing is written. Then every chunk goes to the device
//! in order: a copied chunk is read from the installed image right before it is used, a
//! patch's frame is hashed against its signed frame digest before the decoder sees it and its
//! reference range is read from the installed image right before it is decoded; either way the
//! chunk is hashed against its signed digest before it reaches the device
//! ([`ErrorKind::DeltaOutputMismatch`] otherwise). The bytes flashed are the bytes hashed.

use std::io::Read;
use std::path::Path;

use veriflash_format::{ChunkEncoding, ImageSpec, Manifest, SourceRef, StoredChunk};
use veriflash_hash::{ChunkVerifier, Digest, Error as HashError, ImageExpectation, VerifyError};
use veriflash_plugin::FlashSession;
use veriflash_sig::Verifier;

use crate::compress::{ZstdDecoder, decode_frame};
use crate::convert;
use crate::error::{Error, ErrorKind, Location};
use crate::flash::device_error;
use crate::pack::{Chunking, ImageData, ImageSource, PackOptions, PackageSpec, UnsignedPackage};
use crate::package::{ImageReport, PackageReader, hex, stored_table};
use crate::reuse::ReuseTarget;

/// What a device holds installed, as a delta install reads it: the image the software that
/// boots now holds in each partition.
pub trait InstalledImages {
    /// Length of the image installed in `partition`, or `None` when nothing is installed there
    /// or it cannot be read back.
    ///
    /// # Errors
    /// When the device cannot be asked.
    fn installed_len(&mut self, partition: &str) -> Result<Option<u64>, Error>;

    /// Reads `buf.len()` bytes of the image installed in `partition`, from `offset`.
    ///
    /// # Errors
    /// When the range runs past the image or the read fails.
    fn read_installed(&mut self, partition: &str, offset: u64, buf: &mut [u8])
    -> Result<(), Error>;
}

/// A plugin's session as [`InstalledImages`]: what its device runs, read back.
pub(crate) struct SessionImages<'a>(pub(crate) &'a mut dyn FlashSession);

impl InstalledImages for SessionImages<'_> {
    fn installed_len(&mut self, partition: &str) -> Result<Option<u64>, Error> {
        self.0.installed_len(partition).map_err(device_error)
    }

    fn read_installed(
        &mut self,
        partition: &str,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<(), Error> {
        self.0
            .read_installed(partition, offset, buf)
            .map_err(device_error)
    }
}

/// Installed images are hashed in reads of this many bytes: one buffer, whatever their size.
const READ_BUFFER: usize = 8 << 20;

/// Checks, before anything is written, that the device holds the source of every image of
/// `manifest` that declares one: the same length, and the same SHA-256 over all of it.
/// `running` is the software version the device says it runs, for the message.
///
/// # Errors
/// [`ErrorKind::SourceMismatch`] when an installed image differs or cannot be read back; the
/// device's errors while reading.
pub fn check_sources(
    manifest: &Manifest,
    device: &mut dyn InstalledImages,
    running: Option<&str>,
) -> Result<(), Error> {
    let runs = running.map_or_else(String::new, |v| format!(" (software version {v})"));
    for image in &manifest.images {
        let Some(source) = &image.source else {
            continue;
        };
        let wants = format!(
            "this delta applies to the image of {} bytes with SHA-256 {}",
            source.size,
            hex(&source.digest)
        );
        let at = Location {
            image: Some(image.name.clone()),
            ..Location::default()
        };
        let Some(len) = device.installed_len(&image.partition)? else {
            return Err(Error::new(
                ErrorKind::SourceMismatch,
                format!(
                    "the device cannot read back what it runs in '{}' (a single-slot device overwrites its only copy){runs}, so a delta package cannot be checked against it; {wants}",
                    image.partition
                ),
            )
            .with_remedy("Install the full package: a delta needs a device that reads back its installed image (an A/B device); nothing was written.")
            .at(at));
        };
        // A device that records no image length (single-slot NAND) answers its partition's:
        // the source is its first `source.size` bytes, and nothing after them is read.
        let len = len.min(source.size);
        let mut hasher = veriflash_hash::Sha256::new();
        let mut buffer = vec![0u8; usize::try_from(len).unwrap_or(READ_BUFFER).min(READ_BUFFER)];
        let mut offset = 0u64;
        while offset < len {
            let n = usize::try_from(len - offset)
                .unwrap_or(usize::MAX)
                .min(buffer.len());
            let piece = buffer.get_mut(..n).unwrap_or_default();
            device.read_installed(&image.partition, offset, piece)?;
            hasher.update(piece);
            offset = offset.saturating_add(u64::try_from(n).unwrap_or(u64::MAX));
        }
        let digest = hasher.finalize();
        if len != source.size || digest != source.digest {
            return Err(Error::new(
                ErrorKind::SourceMismatch,
                format!(
                    "the device runs in '{}' an image of {len} bytes with SHA-256 {}{runs}; {wants}",
                    image.partition,
                    hex(&digest)
                ),
            )
            .at(at));
        }
    }
    Ok(())
}

/// Streams a verified delta package's payload from `reader` (positioned at its first payload
/// byte) to `target`, chunk by chunk in manifest order, rebuilding copied and patched chunks
/// from the installed images `target` reads. Call [`check_sources`] first: this checks every
/// chunk, not the sources as a whole.
///
/// Without a target (a verification with no device), every stored byte is still checked —
/// chunks stored raw or compressed against their digests (and decoded), patches against their
/// frame digests — and the chunks rebuilt from a source, which only a device can rebuild, are
/// skipped: the report counts only the chunks whose stored bytes were checked, and says the
/// images' digests were not checked.
pub(crate) fn stream<R: Read>(
    reader: &mut R,
    manifest: &Manifest,
    mut target: Option<&mut dyn ReuseTarget>,
) -> Result<Vec<ImageReport>, Error> {
    let decoder = ZstdDecoder::new();
    let (mut stored, mut out, mut reference) = (Vec::new(), Vec::new(), Vec::new());
    let mut reports = Vec::with_capacity(manifest.images.len());
    for image in &manifest.images {
        let table = stored_table(image);
        let verifier = ChunkVerifier::with_storage(
            ImageExpectation {
                size: image.size,
                chunk_size: image.chunk_size,
                digest: &image.digest,
                chunk_digests: &image.chunk_digests,
            },
            &table,
        )
        .map_err(|e| convert::verify_error(&image.name, VerifyError::Hash(e)))?;
        let mut references = image.source.iter().flat_map(|s| &s.references);
        for index in 0..image.chunk_count() {
            let (Some(record), Some(expected)) =
                (image.stored_chunk(index), verifier.expected_chunk(index))
            else {
                return Err(Error::new(
                    ErrorKind::Malformed,
                    format!("image '{}' has no record for chunk {index}", image.name),
                ));
            };
            let hash_error = |e| convert::verify_error(&image.name, VerifyError::Hash(e));
            let len = usize::try_from(record.decompressed_len).unwrap_or(usize::MAX);
            out.resize(len, 0);
            if !record.encoding.uses_source() {
                read_stored(reader, &record, &mut stored)?;
                let chunk = expected
                    .verify_decoded(&stored, &decoder, &mut out)
                    .map_err(hash_error)?;
                if let Some(target) = target.as_deref_mut() {
                    target.chunk(image, chunk)?;
                }
                continue;
            }
            let Some(source_ref) = references.next() else {
                return Err(Error::new(
                    ErrorKind::Malformed,
                    format!(
                        "image '{}' chunk {index} has no source reference",
                        image.name
                    ),
                ));
            };
            let Some(target) = target.as_deref_mut() else {
                if record.encoding == ChunkEncoding::Patch {
                    read_frame(reader, image, index, &record, source_ref, &mut stored)?;
                }
                continue;
            };
            rebuild(
                reader,
                image,
                index,
                &record,
                source_ref,
                target,
                (&mut stored, &mut reference, &mut out),
            )?;
            let chunk = expected.verify(&out).map_err(|e| match e {
                HashError::ChunkMismatch { .. } => output_mismatch(image, index, &record),
                other => hash_error(other),
            })?;
            target.chunk(image, chunk)?;
        }
        let mut report = ImageReport::new(image, image.digest, false);
        if target.is_none() {
            report.chunks = image
                .stored_chunks
                .iter()
                .filter(|c| c.encoding != ChunkEncoding::Source)
                .map(|_| 1)
                .sum();
        }
        reports.push(report);
    }
    Ok(reports)
}

/// Rebuilds chunk `index` (copied or patched) into `out`, reading its reference range from the
/// installed image right now, and a patch's frame from `reader`, checked against its signed
/// frame digest before it is decoded.
fn rebuild<R: Read>(
    reader: &mut R,
    image: &ImageSpec,
    index: u64,
    record: &StoredChunk,
    source_ref: &SourceRef,
    target: &mut dyn ReuseTarget,
    (stored, reference, out): (&mut Vec<u8>, &mut Vec<u8>, &mut Vec<u8>),
) -> Result<(), Error> {
    let at = Location {
        image: Some(image.name.clone()),
        chunk: Some(index),
        offset: None,
    };
    if record.encoding == ChunkEncoding::Source {
        return target.read_installed(&image.partition, source_ref.offset, out);
    }
    read_frame(reader, image, index, record, source_ref, stored)?;
    reference.resize(usize::try_from(source_ref.len).unwrap_or(usize::MAX), 0);
    target.read_installed(&image.partition, source_ref.offset, reference)?;
    match decode_frame(stored, Some(reference), out) {
        Ok(n) if n == out.len() => Ok(()),
        Ok(_) | Err(veriflash_hash::DecodeError::OutputOverflow) => Err(Error::new(
            ErrorKind::DecompressedLengthMismatch,
            format!(
                "image '{}' chunk {index}: its patch does not decode to its signed length of {} bytes",
                image.name,
                out.len()
            ),
        )
        .at(at)),
        Err(e) => Err(Error::new(
            ErrorKind::DecompressionFailed,
            format!("image '{}' chunk {index}: its patch: {e:?}", image.name),
        )
        .at(at)),
    }
}

/// Reads a patch's frame from the payload and checks it against its signed frame digest.
fn read_frame<R: Read>(
    reader: &mut R,
    image: &ImageSpec,
    index: u64,
    record: &StoredChunk,
    source_ref: &SourceRef,
    stored: &mut Vec<u8>,
) -> Result<(), Error> {
    read_stored(reader, record, stored)?;
    if veriflash_hash::sha256(stored) != source_ref.frame_digest {
        return Err(Error::new(
            ErrorKind::IntegrityMismatch,
            format!(
                "image '{}' chunk {index}: its patch does not match its signed frame digest",
                image.name
            ),
        )
        .at(Location {
            image: Some(image.name.clone()),
            chunk: Some(index),
            offset: None,
        }));
    }
    Ok(())
}

/// Reads a chunk's stored bytes (its signed stored length) from the payload.
fn read_stored<R: Read>(
    reader: &mut R,
    record: &StoredChunk,
    stored: &mut Vec<u8>,
) -> Result<(), Error> {
    stored.resize(usize::try_from(record.stored_len).unwrap_or(usize::MAX), 0);
    reader.read_exact(stored).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            Error::new(
                ErrorKind::Truncated,
                "the payload ends before its last chunk",
            )
        } else {
            Error::io("reading the payload", e)
        }
    })
}

fn output_mismatch(image: &ImageSpec, index: u64, record: &StoredChunk) -> Error {
    let how = if record.encoding == ChunkEncoding::Source {
        "copied from"
    } else {
        "patched against"
    };
    Error::new(
        ErrorKind::DeltaOutputMismatch,
        format!(
            "image '{}' chunk {index} {how} the installed image does not match its signed digest: not written",
            image.name
        ),
    )
    .at(Location {
        image: Some(image.name.clone()),
        chunk: Some(index),
        offset: None,
    })
}

/// [`InstalledImages`] and a chunk sink as the delta stream's target.
pub(crate) struct SourceAndSink<'a, F> {
    pub(crate) images: &'a mut dyn InstalledImages,
    pub(crate) sink: F,
}

impl<F> ReuseTarget for SourceAndSink<'_, F>
where
    F: FnMut(&ImageSpec, veriflash_hash::VerifiedChunk<'_>) -> Result<(), Error>,
{
    fn chunk(
        &mut self,
        image: &ImageSpec,
        chunk: veriflash_hash::VerifiedChunk<'_>,
    ) -> Result<(), Error> {
        (self.sink)(image, chunk)
    }

    fn read_installed(
        &mut self,
        partition: &str,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<(), Error> {
        self.images.read_installed(partition, offset, buf)
    }

    fn warn(&mut self, _: String) {}
}

/// The images of an old, complete package, verified, that a delta is packed against.
#[derive(Debug)]
pub struct DeltaBase {
    images: Vec<BaseImage>,
    manifest: Manifest,
    whole: Vec<String>,
}

#[derive(Debug)]
struct BaseImage {
    partition: String,
    digest: Digest,
    bytes: Vec<u8>,
}

impl DeltaBase {
    /// Reads the package at `path` through the verifying reader: its signatures must verify with
    /// `verifier`, every chunk against its signed digest and every image against its signed
    /// whole-image digest. Its images are held in memory while the delta is packed.
    ///
    /// # Errors
    /// Any error of [`PackageReader::open`], [`PackageReader::verify`] or the payload's
    /// verification; [`ErrorKind::InvalidInput`] when it is itself a delta package (its images
    /// cannot be rebuilt without its own source).
    pub fn from_package(path: &Path, verifier: &Verifier<'_>) -> Result<Self, Error> {
        let package = PackageReader::open(path)?
            .verify(verifier)
            .map_err(|e| e.with_context(format_args!("old package {}", path.display())))?;
        let manifest = package.manifest().manifest().clone();
        if manifest.images.iter().any(|i| i.source.is_some()) {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "{} is itself a delta package: make the delta from the full package of that version",
                    path.display()
                ),
            ));
        }
        let mut images: Vec<BaseImage> = manifest
            .images
            .iter()
            .map(|i| BaseImage {
                partition: i.partition.clone(),
                digest: i.digest,
                bytes: Vec::new(),
            })
            .collect();
        package
            .with_whole_image_check(true)
            .stream(|image, chunk| {
                if let Some(base) = manifest
                    .images
                    .iter()
                    .position(|i| i.name == image.name)
                    .and_then(|i| images.get_mut(i))
                {
                    base.bytes.extend_from_slice(chunk.bytes());
                }
                Ok(())
            })
            .map_err(|e| e.with_context(format_args!("old package {}", path.display())))?;
        Ok(Self {
            images,
            manifest,
            whole: Vec::new(),
        })
    }

    /// Packs the images of `partitions` whole, without this package as their source: for an
    /// image a device runs but does not store, so cannot read back (a loader sent to it
    /// first, such as the MDM9x07's Firehose programmer), which a delta could not rebuild.
    #[must_use]
    pub fn carrying_whole(mut self, partitions: impl IntoIterator<Item = String>) -> Self {
        self.whole.extend(partitions);
        self
    }

    /// The old package's verified manifest.
    #[must_use]
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The package's images as a packer takes them (its chunk sizes, its bytes): to pack its
    /// images again, as a delta of another package.
    #[must_use]
    pub fn spec(&self) -> PackageSpec {
        let m = &self.manifest;
        PackageSpec {
            product: m.product.clone(),
            chipset: m.chipset.clone(),
            hardware_revisions: m.hardware_revisions.clone(),
            software_version: m.software_version.clone(),
            security_version: m.security_version,
            images: m
                .images
                .iter()
                .zip(&self.images)
                .map(|(spec, base)| {
                    let mut image = ImageSource::new(
                        spec.name.clone(),
                        spec.partition.clone(),
                        ImageData::Bytes(base.bytes.clone()),
                    );
                    image.chunk_size = spec.chunk_size;
                    image
                })
                .collect(),
        }
    }

    /// The old image for `partition`, if the old package has one.
    pub(crate) fn image(&self, partition: &str) -> Option<SourceImage<'_>> {
        if self.whole.iter().any(|p| p == partition) {
            return None;
        }
        self.images
            .iter()
            .find(|i| i.partition == partition)
            .map(|i| SourceImage {
                bytes: &i.bytes,
                digest: i.digest,
            })
    }
}

/// One old image a new image is packed against.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SourceImage<'a> {
    pub(crate) bytes: &'a [u8],
    pub(crate) digest: Digest,
}

/// What a delta costs, image by image: how its chunks are stored and how many payload bytes
/// it carries, against what the full package stores.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ImageCost {
    /// The image.
    pub name: String,
    /// Its partition.
    pub partition: String,
    /// The image's length.
    pub size: u64,
    /// Payload bytes of the image in the full package.
    pub full_bytes: u64,
    /// Payload bytes of the image in the delta.
    pub delta_bytes: u64,
    /// Chunks in all.
    pub chunks: u64,
    /// Chunks copied from the source (no payload byte).
    pub from_source: u64,
    /// Chunks stored as a patch against the source.
    pub patched: u64,
    /// Chunks carried whole (raw or compressed).
    pub carried: u64,
    /// The source it applies to (none for a complete image).
    pub source: Option<SourceSummary>,
}

/// The image a delta image applies to, for display.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SourceSummary {
    /// Its length.
    pub size: u64,
    /// Its SHA-256, in hex.
    pub sha256: String,
}

impl ImageCost {
    /// The cost of `image` (as a delta package stores it), against `full_bytes` in the full
    /// package.
    #[must_use]
    pub fn of(image: &ImageSpec, full_bytes: u64) -> Self {
        let count = |wanted: ChunkEncoding| -> u64 {
            (0..image.chunk_count())
                .filter(|&i| image.stored_chunk(i).is_some_and(|c| c.encoding == wanted))
                .map(|_| 1)
                .sum()
        };
        let (from_source, patched) = (count(ChunkEncoding::Source), count(ChunkEncoding::Patch));
        Self {
            name: image.name.clone(),
            partition: image.partition.clone(),
            size: image.size,
            full_bytes,
            delta_bytes: image.stored_size(),
            chunks: image.chunk_count(),
            from_source,
            patched,
            carried: image
                .chunk_count()
                .saturating_sub(from_source)
                .saturating_sub(patched),
            source: image.source.as_ref().map(|s| SourceSummary {
                size: s.size,
                sha256: hex(&s.digest),
            }),
        }
    }
}

/// What a delta from the package at `old` to the package at `new` would cost, image by image:
/// both are read through the verifying reader with `verifier` (and must be complete packages),
/// and `new`'s images packed as a delta of `old`'s, with `new`'s chunk sizes, its chunking, and
/// compression when `new` compresses. Memory: both packages' images.
///
/// # Errors
/// What [`DeltaBase::from_package`] and [`UnsignedPackage::prepare_delta`] return.
pub fn delta_cost(
    old: &Path,
    new: &Path,
    verifier: &Verifier<'_>,
) -> Result<Vec<ImageCost>, Error> {
    let old = DeltaBase::from_package(old, verifier)?;
    let new = DeltaBase::from_package(new, verifier)?;
    let images = &new.manifest().images;
    let mut options = PackOptions::new();
    if images.iter().any(ImageSpec::has_variable_chunks) {
        options = options.chunking(Chunking::ContentDefined);
    }
    if images.iter().any(ImageSpec::is_compressed) {
        options = options.compression(Some(crate::compress::DEFAULT_COMPRESSION_LEVEL));
    }
    let delta = UnsignedPackage::prepare_delta(new.spec(), &options, &old)?;
    Ok(delta
        .manifest()
        .images
        .iter()
        .zip(images)
        .map(|(image, full)| ImageCost::of(image, full.stored_size()))
        .collect())
}
