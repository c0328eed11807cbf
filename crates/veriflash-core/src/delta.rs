//! Offline delta packages (FORMAT.md §3.4, format version 4): a package that carries only what
//! changed since a given old package, for the tethered-PC and local methods, where no server
//! can be asked for byte ranges.
//!
//! **Packing** ([`DeltaBase`]): the old package is read through the verifying reader (its
//! signatures must verify against the keys the packer trusts, its images against its chunk
//! digests and whole-image digests), each image into an unnamed temporary file as it is
//! verified; the packer reads the old images from there by range, never whole, and never reads
//! the old package again. Each chunk of a new image with an old counterpart (the same
//! partition) is stored as the cheapest of: copied from the old image (found by its SHA-256
//! anywhere in it: no payload byte), a Zstandard patch against a range of the old image, or as
//! a full package would store it. The manifest keeps every chunk's signed digest and declares
//! the old image (length and SHA-256) as the image's source.
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
//! The calling thread does the reading and the writing, in order; the decoding and hashing
//! run on worker threads meanwhile, on the bytes the calling thread just read.

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::mpsc;

use veriflash_format::{ChunkEncoding, ImageSpec, Manifest, SourceRef, StoredChunk};
use veriflash_hash::{
    ChunkVerifier, Digest, Error as HashError, ExpectedChunk, ImageExpectation, ParallelOptions,
    VerifiedBuffer, VerifyError,
};
use veriflash_plugin::FlashSession;
use veriflash_sig::Verifier;

use crate::compress::{ZstdDecoder, decode_frame};
use crate::convert;
use crate::delta_index::OldImage;
use crate::error::{Error, ErrorKind, Location};
use crate::flash::device_error;
use crate::pack::{Chunking, ImageData, ImageSource, PackOptions, PackageSpec, UnsignedPackage};
use crate::package::{ImageReport, PackageReader, hex, stored_table};
use crate::pipeline::{Buffers, InOrder, Pipeline};
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

    /// The digest the device recorded for the image installed in `partition` when the install
    /// that put it there committed ([`veriflash_plugin::FlashSession::installed_digest`]), or
    /// `None` (the default): what [`SourceCheck::Recorded`] compares a declared source with.
    ///
    /// # Errors
    /// When the device cannot be asked.
    fn recorded_digest(&mut self, partition: &str) -> Result<Option<Digest>, Error> {
        let _ = partition;
        Ok(None)
    }
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

    fn recorded_digest(&mut self, partition: &str) -> Result<Option<Digest>, Error> {
        self.0.installed_digest(partition).map_err(device_error)
    }
}

/// How a delta install checks, before its first write, that the device runs the image a delta
/// package applies to ([`check_sources`]; [`crate::InstallPolicy::with_source_check`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum SourceCheck {
    /// The installed image is hashed whole and compared with the declared source: nothing is
    /// written for an image that differs, whether it is another version or a damaged one. One
    /// SHA-256 pass over the image, on one core (a whole-image digest cannot be split), before
    /// anything else: the time by which a delta install is slower than a full one
    /// (docs/PERFORMANCE.md). The default.
    #[default]
    Whole,
    /// The declared source is compared with the digest the device recorded when the install
    /// that put its image there committed — after that install's read-back matched it
    /// ([`InstalledImages::recorded_digest`]); hashed whole, as [`SourceCheck::Whole`], where
    /// the device keeps no record. A device that runs another version is refused before the
    /// first write as with `Whole`. An image damaged or changed since its install is found when
    /// a range copied or patched from it fails its signed digest, right before it would be
    /// written: the install stops there with [`ErrorKind::SourceMismatch`] (the image is then
    /// hashed whole to tell this from a package that contradicts itself), on the slot being
    /// written, which is not made bootable; the slot that runs is never written. This is how
    /// Android A/B updates (the build fingerprint a device records) and Mender delta artifacts
    /// (the checksum a device's provides record) check their source.
    Recorded,
}

/// Installed images are hashed in reads of this many bytes, into one of two buffers: one is
/// read while the other is hashed, whatever the image size.
const READ_BUFFER: usize = 4 << 20;

/// Checks, before anything is written, that the device holds the source of every image of
/// `manifest` that declares one: the same length, and the same SHA-256 over all of it — hashed
/// whole, or, as `how` allows, the digest the device recorded for it ([`SourceCheck`]).
/// `running` is the software version the device says it runs, for the message.
///
/// Each image is read on the calling thread (the device is not shared) and hashed on a thread
/// of its own, so the reads and the hash overlap; one SHA-256 over a whole image cannot be
/// split, so that thread sets the pace.
///
/// # Errors
/// [`ErrorKind::SourceMismatch`] when an installed image differs or cannot be read back; the
/// device's errors while reading.
pub fn check_sources(
    manifest: &Manifest,
    device: &mut dyn InstalledImages,
    running: Option<&str>,
    how: SourceCheck,
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
                    "the device cannot read back what it runs in '{}'{runs}, so a delta package cannot be checked against it; {wants}",
                    image.partition
                ),
            )
            .with_remedy("Install the full package: a delta needs a device that reads back its installed image before the first write (an A/B device, or a plugin that copies a single-slot device's partitions to the host first, as the MDM9x07 plugin does); nothing was written.")
            .at(at));
        };
        // A device that records no image length (single-slot NAND) answers its partition's:
        // the source is its first `source.size` bytes, and nothing after them is read.
        let len = len.min(source.size);
        let recorded = match how {
            SourceCheck::Recorded => device.recorded_digest(&image.partition)?,
            SourceCheck::Whole => None,
        };
        if let Some(recorded) = recorded {
            if len == source.size && recorded == source.digest {
                continue;
            }
            return Err(Error::new(
                ErrorKind::SourceMismatch,
                format!(
                    "the device recorded for '{}' an image with SHA-256 {} when it was installed{runs}; {wants}",
                    image.partition,
                    hex(&recorded)
                ),
            )
            .at(at));
        }
        let digest = hash_installed(
            &mut |offset, buf| device.read_installed(&image.partition, offset, buf),
            len,
        )?;
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

/// Reads `buf.len()` bytes of one installed image from `offset`.
type ReadInstalled<'a> = dyn FnMut(u64, &mut [u8]) -> Result<(), Error> + 'a;

/// SHA-256 of the first `len` bytes of an installed image, which `read(offset, buf)` reads:
/// read here, hashed on a thread of its own (here too when none can be started), two buffers
/// of [`READ_BUFFER`] taking turns.
fn hash_installed(read: &mut ReadInstalled<'_>, len: u64) -> Result<Digest, Error> {
    let buffer_len = usize::try_from(len)
        .unwrap_or(READ_BUFFER)
        .clamp(1, READ_BUFFER);
    let (full, to_hash) = mpsc::channel::<(Vec<u8>, usize)>();
    let (emptied, empty) = mpsc::channel::<Vec<u8>>();
    std::thread::scope(|s| {
        let hasher = std::thread::Builder::new()
            .name("veriflash-source".into())
            .spawn_scoped(s, move || {
                let mut hasher = veriflash_hash::Sha256::new();
                for (buffer, n) in to_hash {
                    hasher.update(buffer.get(..n).unwrap_or_default());
                    // The reader may have stopped already; then the buffer is not wanted.
                    let _ = emptied.send(buffer);
                }
                hasher.finalize()
            })
            .ok();
        let mut inline = hasher.is_none().then(veriflash_hash::Sha256::new);
        let mut spare = vec![vec![0u8; buffer_len], vec![0u8; buffer_len]];
        let mut offset = 0u64;
        while offset < len {
            let mut buffer = match spare.pop() {
                Some(buffer) => buffer,
                None => empty.recv().map_err(|_| hasher_stopped())?,
            };
            let n = usize::try_from(len - offset)
                .unwrap_or(usize::MAX)
                .min(buffer.len());
            let piece = buffer.get_mut(..n).unwrap_or_default();
            read(offset, piece)?;
            match &mut inline {
                Some(hasher) => {
                    hasher.update(piece);
                    spare.push(buffer);
                }
                None => full.send((buffer, n)).map_err(|_| hasher_stopped())?,
            }
            offset = offset.saturating_add(u64::try_from(n).unwrap_or(u64::MAX));
        }
        drop(full);
        match (inline, hasher) {
            (Some(hasher), _) => Ok(hasher.finalize()),
            (None, Some(thread)) => thread.join().map_err(|_| hasher_stopped()),
            (None, None) => Err(hasher_stopped()),
        }
    })
}

/// A thread of the install stopped without an answer (it panicked): nothing more is written.
fn hasher_stopped() -> Error {
    Error::io(
        "hashing",
        std::io::Error::other("a hashing thread of the delta install stopped"),
    )
}

/// Streams a verified delta package's payload from `reader` (positioned at its first payload
/// byte) to `target`, chunk by chunk in manifest order, rebuilding copied and patched chunks
/// from the installed images `target` reads. Call [`check_sources`] first: this checks every
/// chunk, not the sources as a whole.
///
/// The calling thread reads, in order, each chunk's stored bytes from `reader` (a patch's
/// frame checked against its signed frame digest there and then) and the installed bytes it
/// is rebuilt from from `target`, right before handing the chunk to a worker; the workers
/// (`options.threads`) decode and hash batches of whole chunks (of at least
/// `options.min_buffer_len` bytes, at most `options.max_in_flight` batches read and not yet
/// handed on), and the calling thread hands the verified chunks to `target` in order, while
/// it reads the next ones. The first bad chunk in manifest order is the error, after every
/// chunk before it was handed on, as on one thread.
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
    options: ParallelOptions,
) -> Result<Vec<ImageReport>, Error> {
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
        let reading = ImageReading {
            reader: &mut *reader,
            image,
            verifier: &verifier,
            references: image.source.iter().flat_map(|s| &s.references),
            count: image.chunk_count(),
            next: 0,
            buffers: Buffers::default(),
        };
        // A shorter borrow of the target for this image (`Option` does not coerce it).
        let this_image = target.as_deref_mut().map(|t| -> &mut dyn ReuseTarget { t });
        if let Err(e) = stream_image(reading, this_image, options) {
            return Err(match target.as_deref_mut() {
                Some(target) => diagnose(e, image, target),
                None => e,
            });
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

/// A rebuilt chunk that failed its digest: either the installed image is no longer the source
/// it was checked as (damaged or changed since, or never hashed: [`SourceCheck::Recorded`]) —
/// then [`ErrorKind::SourceMismatch`], at the same chunk — or the package contradicts itself
/// (`err` as it is). The image is hashed whole to tell, only on this failure path.
fn diagnose(err: Error, image: &ImageSpec, target: &mut dyn ReuseTarget) -> Error {
    let Some(source) = &image.source else {
        return err;
    };
    if err.kind() != ErrorKind::DeltaOutputMismatch {
        return err;
    }
    let read = &mut |offset, buf: &mut [u8]| target.read_installed(&image.partition, offset, buf);
    match hash_installed(read, source.size) {
        Ok(digest) if digest != source.digest => Error::new(
            ErrorKind::SourceMismatch,
            format!(
                "the image installed in '{}' is no longer the source this delta applies to (damaged, or changed since its install or since it was checked): it hashes to {} where the delta names {}; the chunk of '{}' rebuilt from it that showed it was not written",
                image.partition,
                hex(&digest),
                hex(&source.digest),
                image.name
            ),
        )
        .at(err.location().clone()),
        _ => err,
    }
}

/// What a worker does with a chunk's bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Work {
    /// Stored raw or compressed: `stored` against its digest, then decoded into `out`.
    Stored,
    /// Copied: `out` holds the installed range.
    Copied,
    /// Patched: `stored` is the frame (already checked against its frame digest), `reference`
    /// the installed range it decodes against, into `out`.
    Patched,
}

/// One chunk read on the calling thread, for a worker to check.
struct Job<'a> {
    expected: ExpectedChunk<'a>,
    work: Work,
    stored: Vec<u8>,
    reference: Vec<u8>,
    out: Vec<u8>,
}

/// A checked chunk and the buffers it no longer needs.
type Checked = Result<(VerifiedBuffer, [Vec<u8>; 2]), Error>;

/// The calling thread's side of one image: where its chunks are read from, and the next one.
struct ImageReading<'r, 'a, R, I> {
    reader: &'r mut R,
    image: &'a ImageSpec,
    verifier: &'a ChunkVerifier<'a>,
    references: I,
    /// The image's chunks (counted once: a content-defined table is walked to count them).
    count: u64,
    next: u64,
    /// Buffers handed back, for the next chunks.
    buffers: Buffers,
}

impl<'a, R: Read, I: Iterator<Item = &'a SourceRef>> ImageReading<'_, 'a, R, I> {
    /// A buffer of `len` bytes (a signed length) from [`ImageReading::buffers`].
    fn buffer(&mut self, len: u32) -> Vec<u8> {
        self.buffers
            .take(usize::try_from(len).unwrap_or(usize::MAX))
    }

    /// Reads the next chunks, in order, until they hold `at_least` bytes or the image ends:
    /// the batch, and the error that stopped it early (the batch then holds every chunk
    /// before the failing one).
    fn batch(
        &mut self,
        target: &mut Option<&mut dyn ReuseTarget>,
        at_least: usize,
    ) -> (Vec<Job<'a>>, Option<Error>) {
        let mut jobs = Vec::new();
        let mut bytes = 0usize;
        while bytes < at_least && self.next < self.count {
            let index = self.next;
            self.next += 1;
            match self.read(index, target) {
                Ok(Some(job)) => {
                    bytes = bytes.saturating_add(job.expected.len());
                    jobs.push(job);
                }
                Ok(None) => {}
                Err(e) => return (jobs, Some(e)),
            }
        }
        (jobs, None)
    }

    /// Reads chunk `index`'s bytes: stored ones from the payload, installed ones from
    /// `target`, now. `None` for a chunk with nothing left to check here (rebuilt from a
    /// source, with no device to read it from).
    fn read(
        &mut self,
        index: u64,
        target: &mut Option<&mut dyn ReuseTarget>,
    ) -> Result<Option<Job<'a>>, Error> {
        let image = self.image;
        let (Some(record), Some(expected)) = (
            image.stored_chunk(index),
            self.verifier.expected_chunk(index),
        ) else {
            return Err(Error::new(
                ErrorKind::Malformed,
                format!("image '{}' has no record for chunk {index}", image.name),
            ));
        };
        if !record.encoding.uses_source() {
            let mut stored = self.buffer(record.stored_len);
            read_stored(self.reader, &record, &mut stored)?;
            let out = if record.encoding == ChunkEncoding::Raw {
                Vec::new()
            } else {
                self.buffer(record.decompressed_len)
            };
            return Ok(Some(Job {
                expected,
                work: Work::Stored,
                stored,
                reference: Vec::new(),
                out,
            }));
        }
        let Some(source_ref) = self.references.next() else {
            return Err(Error::new(
                ErrorKind::Malformed,
                format!(
                    "image '{}' chunk {index} has no source reference",
                    image.name
                ),
            ));
        };
        let patched = record.encoding == ChunkEncoding::Patch;
        let mut stored = Vec::new();
        if patched {
            stored = self.buffer(record.stored_len);
            read_frame(self.reader, image, index, &record, source_ref, &mut stored)?;
        }
        let Some(target) = target.as_deref_mut() else {
            self.buffers.keep(stored);
            return Ok(None);
        };
        let mut out = self.buffer(record.decompressed_len);
        if !patched {
            target.read_installed(&image.partition, source_ref.offset, &mut out)?;
            return Ok(Some(Job {
                expected,
                work: Work::Copied,
                stored,
                reference: Vec::new(),
                out,
            }));
        }
        let mut reference = self.buffer(source_ref.len);
        target.read_installed(&image.partition, source_ref.offset, &mut reference)?;
        Ok(Some(Job {
            expected,
            work: Work::Patched,
            stored,
            reference,
            out,
        }))
    }
}

/// Streams one image's chunks (see [`stream`]): reads here, checks on the workers, hands on
/// here in order.
fn stream_image<'a, R: Read, I: Iterator<Item = &'a SourceRef>>(
    reading: ImageReading<'_, 'a, R, I>,
    target: Option<&mut dyn ReuseTarget>,
    options: ParallelOptions,
) -> Result<(), Error> {
    let image = reading.image;
    let threads = options.resolved_threads();
    let pipeline = Pipeline {
        threads,
        in_flight: match options.max_in_flight {
            0 => threads.saturating_mul(2),
            n => n,
        },
    };
    let mut io = DeltaIo {
        reading,
        target,
        at_least: match options.min_buffer_len {
            0 => veriflash_hash::DEFAULT_MIN_BUFFER_LEN,
            n => n,
        },
        stopped: None,
    };
    let decoder = ZstdDecoder::new();
    pipeline.run(&mut io, |batch| check_batch(batch, image, &decoder))
}

/// The calling thread's side of [`stream_image`].
struct DeltaIo<'r, 'a, 't, R, I> {
    reading: ImageReading<'r, 'a, R, I>,
    target: Option<&'t mut dyn ReuseTarget>,
    /// Bytes of chunks a batch holds at least (one chunk at least).
    at_least: usize,
    /// The read error after the chunks of the last batch: reported once they were handed on.
    stopped: Option<Error>,
}

impl<'a, R: Read, I: Iterator<Item = &'a SourceRef>> InOrder for DeltaIo<'_, 'a, '_, R, I> {
    type Job = Vec<Job<'a>>;
    type Checked = Vec<Checked>;

    fn read(&mut self) -> Option<Result<Vec<Job<'a>>, Error>> {
        if let Some(e) = self.stopped.take() {
            return Some(Err(e));
        }
        while self.reading.next < self.reading.count {
            let (batch, error) = self.reading.batch(&mut self.target, self.at_least);
            match error {
                Some(e) if batch.is_empty() => return Some(Err(e)),
                error => self.stopped = error,
            }
            if !batch.is_empty() {
                return Some(Ok(batch));
            }
        }
        None
    }

    fn hand_on(&mut self, checked: Vec<Checked>) -> Result<(), Error> {
        for chunk in checked {
            let (chunk, buffers) = chunk?;
            if let Some(target) = self.target.as_deref_mut() {
                target.chunk(self.reading.image, chunk.as_verified())?;
            }
            self.reading.buffers.keep(chunk.into_buffer());
            buffers
                .into_iter()
                .for_each(|b| self.reading.buffers.keep(b));
        }
        Ok(())
    }
}

/// Checks a batch's chunks in order, up to the first bad one (the run ends there).
fn check_batch(batch: Vec<Job<'_>>, image: &ImageSpec, decoder: &ZstdDecoder) -> Vec<Checked> {
    let mut checked = Vec::with_capacity(batch.len());
    for job in batch {
        let result = check(job, image, decoder);
        let bad = result.is_err();
        checked.push(result);
        if bad {
            break;
        }
    }
    checked
}

/// Checks one chunk: a stored one against its digest (decoded when compressed), a rebuilt one
/// — a patch decoded against its reference range first — against its digest.
fn check(job: Job<'_>, image: &ImageSpec, decoder: &ZstdDecoder) -> Checked {
    let Job {
        expected,
        work,
        stored,
        reference,
        mut out,
    } = job;
    let index = expected.index();
    let hash_error = |e| convert::verify_error(&image.name, VerifyError::Hash(e));
    if work == Work::Stored {
        let (chunk, spare) = expected
            .verify_decoded_owned(stored, decoder, out)
            .map_err(hash_error)?;
        return Ok((chunk, [spare, reference]));
    }
    if work == Work::Patched {
        decode_patch(image, index, &stored, &reference, &mut out)?;
    }
    let chunk = expected.verify_owned(out).map_err(|e| match e {
        HashError::ChunkMismatch { .. } => output_mismatch(image, index, work),
        other => hash_error(other),
    })?;
    Ok((chunk, [stored, reference]))
}

/// Decodes patch `frame` (checked against its signed frame digest) against `reference` into
/// `out`, which it must fill exactly.
fn decode_patch(
    image: &ImageSpec,
    index: u64,
    frame: &[u8],
    reference: &[u8],
    out: &mut [u8],
) -> Result<(), Error> {
    let at = Location {
        image: Some(image.name.clone()),
        chunk: Some(index),
        offset: None,
    };
    match decode_frame(frame, Some(reference), out) {
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

fn output_mismatch(image: &ImageSpec, index: u64, work: Work) -> Error {
    let how = if work == Work::Copied {
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
    spool: Spool,
}

/// An old image, verified into an unnamed temporary file of its own (gone with the file
/// handle), read back by position: the packer's memory does not grow with the old images, and
/// the old package is read only once, through the verifying reader.
#[derive(Debug)]
struct Spool {
    file: File,
    len: u64,
}

impl Spool {
    fn new() -> Result<Self, Error> {
        let file = tempfile::tempfile()
            .map_err(|e| Error::io("creating a temporary file for an old image", e))?;
        Ok(Self { file, len: 0 })
    }

    /// The image it holds, to read by range.
    fn image(&self) -> OldImage<'_> {
        OldImage::new(&self.file, self.len)
    }
}

impl DeltaBase {
    /// Reads the package at `path` through the verifying reader: its signatures must verify with
    /// `verifier`, every chunk against its signed digest and every image against its signed
    /// whole-image digest. Each image is written to an unnamed temporary file as it is
    /// verified (disk: the old images; memory: a chunk), which the packer reads by range.
    ///
    /// # Errors
    /// Any error of [`PackageReader::open`], [`PackageReader::verify`] or the payload's
    /// verification; [`ErrorKind::InvalidInput`] when it is itself a delta package (its images
    /// cannot be rebuilt without its own source); [`ErrorKind::Io`] (or
    /// [`ErrorKind::NoSpace`]) when a temporary file cannot be created or written.
    pub fn from_package(path: &Path, verifier: &Verifier<'_>) -> Result<Self, Error> {
        let package = PackageReader::open(path)?
            .verify(verifier)
            .map_err(|e| e.with_context(format_args!("old package {}", path.display())))?;
        let manifest = package.manifest().manifest().clone();
        if manifest.is_delta() {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "{} is itself a delta package: make the delta from the full package of that version",
                    path.display()
                ),
            ));
        }
        let mut images = manifest
            .images
            .iter()
            .map(|i| {
                Ok(BaseImage {
                    partition: i.partition.clone(),
                    digest: i.digest,
                    spool: Spool::new()?,
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        package
            .with_whole_image_check(true)
            .stream(|image, chunk| {
                if let Some(base) = manifest
                    .images
                    .iter()
                    .position(|i| i.name == image.name)
                    .and_then(|i| images.get_mut(i))
                {
                    let bytes = chunk.bytes();
                    base.spool.file.write_all(bytes).map_err(|e| {
                        Error::io(
                            format_args!(
                                "writing the old image '{}' to a temporary file",
                                image.name
                            ),
                            e,
                        )
                    })?;
                    base.spool.len = base.spool.len.saturating_add(bytes.len() as u64);
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
    /// images again, as a delta of another package. Its images are read into memory from
    /// their temporary files.
    ///
    /// # Errors
    /// [`ErrorKind::Io`] when a temporary file cannot be read back.
    pub fn spec(&self) -> Result<PackageSpec, Error> {
        let m = &self.manifest;
        Ok(PackageSpec {
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
                    let mut bytes =
                        vec![0u8; usize::try_from(base.spool.len).unwrap_or(usize::MAX)];
                    base.spool
                        .image()
                        .read_exact_at(0, &mut bytes)
                        .map_err(|e| {
                            Error::io(
                                format_args!(
                                    "reading image '{}' back from its temporary file",
                                    spec.name
                                ),
                                e,
                            )
                        })?;
                    let mut image = ImageSource::new(
                        spec.name.clone(),
                        spec.partition.clone(),
                        ImageData::Bytes(bytes),
                    );
                    image.chunk_size = spec.chunk_size;
                    Ok(image)
                })
                .collect::<Result<_, Error>>()?,
        })
    }

    /// The old image for `partition`, if the old package has one.
    pub(crate) fn image(&self, partition: &str) -> Option<SourceImage<'_>> {
        if self.whole.iter().any(|p| p == partition) {
            return None;
        }
        self.images
            .iter()
            .find(|i| i.partition == partition)
            .map(BaseImage::source)
    }
}

impl BaseImage {
    fn source(&self) -> SourceImage<'_> {
        SourceImage {
            image: self.spool.image(),
            partition: &self.partition,
            digest: self.digest,
        }
    }
}

/// One old image a new image is packed against, read by range.
#[derive(Clone, Copy)]
pub(crate) struct SourceImage<'a> {
    pub(crate) image: OldImage<'a>,
    pub(crate) partition: &'a str,
    pub(crate) digest: Digest,
}

impl SourceImage<'_> {
    /// A failure to read this old image back from its temporary file.
    pub(crate) fn read_error(&self, e: std::io::Error) -> Error {
        Error::io(
            format_args!(
                "reading the old image of partition '{}' back from its temporary file",
                self.partition
            ),
            e,
        )
    }
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
/// compression when `new` compresses. Memory: `new`'s images (`old`'s are read from temporary
/// files by range, as `pack --delta-from` reads them).
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
    let delta = UnsignedPackage::prepare_delta(new.spec()?, &options, &old)?;
    Ok(delta
        .manifest()
        .images
        .iter()
        .zip(images)
        .map(|(image, full)| ImageCost::of(image, full.stored_size()))
        .collect())
}
