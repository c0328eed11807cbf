//! Over-the-air packages: read a package from any [`Source`] (an HTTP(S) server, a file, a
//! pushed stream) in the verified order, resuming broken connections and repairing corrupted
//! chunks, without ever passing on a byte that was not checked.
//!
//! # How unverified bytes are kept away
//!
//! 1. [`RemotePackage::open`] fetches only the prefix — the 32-byte header, then the manifest
//!    and the signature block's tag and length in one range, then the rest of the signature
//!    block (HTTP `Range` requests: no payload byte is asked for) — and verifies the signatures
//!    with the same [`PackageReader::verify`] every local package goes through. The result holds
//!    the [`VerifiedManifest`] and, from it, the payload's chunk layout: where each stored chunk
//!    sits in the package and the signed SHA-256 it must have.
//! 2. The caller applies its policy to [`RemotePackage::manifest`] (anti-rollback, device match,
//!    free space) before anything else is fetched.
//! 3. The payload is fetched chunk by chunk. Each chunk is read whole into a buffer and hashed
//!    against its signed digest **in this layer**, before it is handed anywhere:
//!    - a broken, stalled or too slow connection (the source's read timeout; for HTTP also its
//!      low-speed limit, `HttpOptions::with_low_speed_limit`) is re-opened at the first byte of
//!      the chunk being read, that is just after the last verified chunk (at most
//!      [`OtaOptions::with_max_resumes`] times in a row without progress);
//!    - the whole download has a deadline ([`OtaOptions::with_deadline`], 12 h by default):
//!      once it has passed, the download ends with [`ErrorKind::DeadlineExceeded`], however
//!      steadily bytes were still arriving, so a server that trickles just above the
//!      low-speed limit cannot hold a run for days;
//!    - a chunk whose digest fails is fetched again alone, with a range of exactly that chunk,
//!      while the main connection stays where it is (bounded by
//!      [`OtaOptions::with_max_repairs`], then [`ErrorKind::IntegrityMismatch`] naming the
//!      image and chunk). A corrupted byte in transit therefore costs one extra chunk of
//!      traffic;
//!    - a package replaced on the server mid-download is refused with
//!      [`ErrorKind::SourceChanged`] (the HTTP source compares ETag / Last-Modified and the
//!      total length of every answer with the first one, and sends `If-Range`).
//! 4. Two consumers:
//!    - [`RemotePackage::stream`] hands each verified chunk straight on — to the install, in
//!      [`crate::Updater`] — so every byte of a download is verified once. Retries happen
//!      underneath; a chunk that cannot be repaired ends the stream with its error, and the
//!      install aborts before its commit.
//!    - [`RemotePackage::fetch_to_file`] stages the package in `FILE.partial`, with a
//!      verified-chunk bitmap in `FILE.partial.state` so a later run resumes; it checks the
//!      free space before the first payload byte, re-hashes chunks a previous run left on disk,
//!      verifies the complete file once more, and only then renames it to `FILE`. It holds an
//!      exclusive lock on `FILE.partial` throughout, so a second run for the same `FILE` is
//!      refused with [`ErrorKind::Busy`] instead of writing into the same partial file, and
//!      `FILE` must be absent or a regular file ([`crate::output::check_output`]).

use std::fs::{File, OpenOptions};
use std::io::{self, Cursor, Read, Write};
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use veriflash_format::{BlockLen, HEADER_LEN, Header, ImageSpec};
use veriflash_hash::{
    ChunkVerifier, Error as HashError, ExpectedChunk, ImageExpectation, Sha256, VerifiedBuffer,
    VerifiedChunk, VerifyError,
};
use veriflash_sig::Verifier;

use crate::compress::ZstdDecoder;
use crate::convert;
use crate::error::{Error, ErrorKind};
use crate::flash::CancelToken;
use crate::package::{
    ImageReport, PackageReader, VerifiedManifest, VerifyReport, hex, location_in,
};
use crate::pipeline::{Buffers, InOrder, Pipeline};
use crate::reuse::{Origin, ReuseIndex, ReuseTarget, SinkOnly};
use crate::source::{PermanentFailure, RangeReader, Source, describe_duration};

/// The signature block's tag and length take at most this many bytes (FORMAT.md §7).
const BLOCK_HEADER_MAX: u64 = 6;

/// The default deadline of a whole download: 12 hours. A 1 GiB package over a slow LTE link
/// (1 Mbit/s) takes about 2.5 hours; 12 hours still fits one averaging 200 kbit/s (25 KB/s),
/// and bounds a run against a server that keeps just above the low-speed limit (1 KiB/s would
/// take 12 days). A staged download that runs out of time resumes in the next run.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(12 * 3600);

/// How hard a download tries before it gives up.
#[derive(Clone, Copy, Debug)]
pub struct OtaOptions {
    max_resumes: u32,
    max_repairs: u32,
    retry_delay: Duration,
    staging_quota: Option<u64>,
    deadline: Option<Duration>,
}

impl Default for OtaOptions {
    fn default() -> Self {
        Self {
            max_resumes: 8,
            max_repairs: 3,
            retry_delay: Duration::from_millis(500),
            staging_quota: None,
            deadline: Some(DEFAULT_DEADLINE),
        }
    }
}

impl OtaOptions {
    /// Defaults: 8 resumes per run, 3 repairs per chunk, 500 ms between attempts, a deadline of
    /// [`DEFAULT_DEADLINE`] for the whole download.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The longest a whole download may take, from [`RemotePackage::open`] to its last byte,
    /// resumes, repairs and pauses included; then it ends with
    /// [`ErrorKind::DeadlineExceeded`] (a staged download keeps what it verified, for the next
    /// run). For a streaming install ([`RemotePackage::stream`] into a device) the time the
    /// device takes to write counts too, since download and install are one pass.
    ///
    /// The deadline is checked before each request and after each read returns, so a source
    /// that blocks overruns it by at most its own wait limit (for HTTP the low-speed window or
    /// the read timeout).
    #[must_use]
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// No deadline: a download that keeps moving (above the source's low-speed limit) may run
    /// for as long as it needs.
    #[must_use]
    pub fn without_deadline(mut self) -> Self {
        self.deadline = None;
        self
    }

    /// How many times in a row — without a verified chunk in between — a download re-opens a
    /// broken, stalled or failed connection before it gives up with the last error.
    #[must_use]
    pub fn with_max_resumes(mut self, resumes: u32) -> Self {
        self.max_resumes = resumes;
        self
    }

    /// How many times one chunk whose digest failed is fetched again before the download ends
    /// with [`ErrorKind::IntegrityMismatch`].
    #[must_use]
    pub fn with_max_repairs(mut self, repairs: u32) -> Self {
        self.max_repairs = repairs;
        self
    }

    /// The most bytes a staged download ([`RemotePackage::fetch_to_file`]) may still write,
    /// in addition to the free space of the file system (the smaller of the two counts).
    #[must_use]
    pub fn with_staging_quota(mut self, bytes: u64) -> Self {
        self.staging_quota = Some(bytes);
        self
    }

    /// The pause before each new attempt.
    #[must_use]
    pub fn with_retry_delay(mut self, delay: Duration) -> Self {
        self.retry_delay = delay;
        self
    }
}

/// What a download cost: for progress displays and for tests that count traffic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FetchStats {
    /// Payload bytes received from the source, including chunks fetched again.
    pub bytes_fetched: u64,
    /// Connections re-opened after a break, a stall or a failed request.
    pub resumes: u32,
    /// Chunks fetched again because their digest did not match.
    pub repairs: u64,
    /// Payload bytes a previous run had already verified on disk (staged downloads).
    pub bytes_reused: u64,
    /// The output already held this very package, verified again in full: nothing was
    /// downloaded beyond its signed prefix (staged downloads).
    pub already_present: bool,
}

/// Progress of a staged download.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FetchProgress {
    /// Package bytes verified so far (prefix and verified chunks, reused ones included).
    pub done: u64,
    /// The package's length.
    pub total: u64,
    /// Traffic and retries so far.
    pub stats: FetchStats,
}

/// Where one stored payload chunk sits and what it must hash to (from the verified manifest).
#[derive(Clone, Copy, Debug)]
struct PlannedChunk {
    start: u64,
    len: usize,
    digest: [u8; 32],
    image: usize,
    index: u64,
}

impl PlannedChunk {
    fn end(&self) -> u64 {
        self.start
            .saturating_add(u64::try_from(self.len).unwrap_or(u64::MAX))
    }
}

/// A package on a [`Source`] whose prefix was fetched and whose signatures verified; nothing of
/// its payload has been fetched yet.
pub struct RemotePackage<S> {
    fetcher: Fetcher<S>,
    prefix: Vec<u8>,
    manifest: VerifiedManifest,
    chunks: Vec<PlannedChunk>,
    package_len: u64,
}

impl<S> std::fmt::Debug for RemotePackage<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemotePackage")
            .field("package_len", &self.package_len)
            .field("chunks", &self.chunks.len())
            .finish_non_exhaustive()
    }
}

impl<S: Source> RemotePackage<S> {
    /// Fetches the header, manifest and signature block from `source` (a few KiB, in three
    /// ranges) and verifies the signatures with `verifier`.
    ///
    /// # Errors
    /// Any error of [`PackageReader::new`] and [`PackageReader::verify`]; the source's errors
    /// once its retries are spent; [`ErrorKind::TrailingData`] or [`ErrorKind::Truncated`] when
    /// the source's length differs from the length the verified header declares.
    pub fn open(source: S, verifier: &Verifier<'_>, options: OtaOptions) -> Result<Self, Error> {
        let mut fetcher = Fetcher::new(source, options);
        let header_len = u64::try_from(HEADER_LEN).unwrap_or(32);
        let mut prefix = fetcher.fetch_prefix_range(0, header_len)?;
        let header = Header::parse(&prefix).map_err(convert::format_error)?;
        let manifest_end = header_len.saturating_add(u64::from(header.manifest_len));
        let more = fetcher.fetch_prefix_range(header_len, manifest_end + BLOCK_HEADER_MAX)?;
        prefix.extend_from_slice(&more);
        let block_start = usize::try_from(manifest_end).unwrap_or(usize::MAX);
        if let Some(block_head) = prefix.get(block_start..)
            && let Ok(BlockLen::Total(total)) = veriflash_format::signature_block_len(block_head)
        {
            let have = u64::try_from(prefix.len()).unwrap_or(u64::MAX);
            let end = manifest_end.saturating_add(u64::try_from(total).unwrap_or(u64::MAX));
            if end > have {
                let rest = fetcher.fetch_prefix_range(have, end)?;
                prefix.extend_from_slice(&rest);
            }
        }
        // The bytes arrived; everything from here is the local path's checking, unchanged.
        let mut cursor = Cursor::new(prefix);
        let verified = PackageReader::new(&mut cursor)?.verify(verifier)?;
        let manifest = verified.manifest().clone();
        let payload_offset = cursor.position();
        let mut prefix = cursor.into_inner();
        prefix.truncate(usize::try_from(payload_offset).unwrap_or(usize::MAX));
        let chunks = plan(&manifest, payload_offset)?;
        let package_len = payload_offset.saturating_add(header.payload_len);
        if let Some(found) = fetcher.source.total_len() {
            if found > package_len {
                return Err(Error::new(
                    ErrorKind::TrailingData,
                    format!(
                        "{} is {found} bytes; the package declares {package_len}",
                        fetcher.source.describe()
                    ),
                ));
            }
            if found < package_len {
                return Err(Error::new(
                    ErrorKind::Truncated,
                    format!(
                        "{} is {found} bytes; the package declares {package_len}",
                        fetcher.source.describe()
                    ),
                ));
            }
        }
        Ok(Self {
            fetcher,
            prefix,
            manifest,
            chunks,
            package_len,
        })
    }

    /// Stops the download between chunks once `cancel` is cancelled, with
    /// [`ErrorKind::Cancelled`] (a staged download keeps what it verified, for the next run).
    #[must_use]
    pub fn with_cancel(mut self, cancel: CancelToken) -> Self {
        self.fetcher.cancel = Some(cancel);
        self
    }

    /// The verified manifest: apply policy to it before fetching the payload.
    #[must_use]
    pub fn manifest(&self) -> &VerifiedManifest {
        &self.manifest
    }

    /// The package's length in bytes.
    #[must_use]
    pub fn package_len(&self) -> u64 {
        self.package_len
    }

    /// Traffic so far.
    #[must_use]
    pub fn stats(&self) -> FetchStats {
        self.fetcher.stats
    }

    /// Fetches the payload chunk by chunk, checks each against its signed digest, and hands
    /// only verified chunks to `sink`, in order: the one verification of every byte, whether
    /// the sink installs them or not (decompressed, for chunks stored compressed, after their
    /// stored bytes matched). A broken connection is resumed after the last verified chunk and a
    /// corrupted chunk fetched again alone, a bounded number of times. With `check_whole_image`,
    /// each image is also hashed whole as it goes by and compared with its signed digest (as
    /// `verify --whole-image-digest` asks; an install proves it by reading the device back).
    ///
    /// # Errors
    /// The fetch errors; [`ErrorKind::IntegrityMismatch`] for a chunk that still does not match
    /// after its repairs; [`ErrorKind::DecompressedLengthMismatch`],
    /// [`ErrorKind::DecompressionFailed`], [`ErrorKind::ImageDigestMismatch`]; whatever `sink`
    /// returns.
    pub fn stream<F>(
        self,
        check_whole_image: bool,
        sink: F,
    ) -> Result<(VerifyReport, FetchStats), Error>
    where
        F: FnMut(&ImageSpec, VerifiedChunk<'_>) -> Result<(), Error>,
    {
        self.stream_reusing(
            check_whole_image,
            &ReuseIndex::empty(),
            None,
            &mut SinkOnly(sink),
        )
    }

    /// What a download with `index` would cost: payload bytes to reuse and to fetch.
    pub(crate) fn reuse_plan(&self, index: &ReuseIndex) -> (u64, u64) {
        self.chunks.iter().fold((0, 0), |(reused, fetched), chunk| {
            let len = u64::try_from(chunk.len).unwrap_or(u64::MAX);
            if index.origin(&chunk.digest).is_some() {
                (reused.saturating_add(len), fetched)
            } else {
                (reused, fetched.saturating_add(len))
            }
        })
    }

    /// [`RemotePackage::stream`] for a delta install ([`crate::reuse`]): a chunk `index` names
    /// is read again from where the device side holds it and hashed against its signed digest
    /// right before it goes to `target` (a mismatch: fetched instead, alone); the others are
    /// fetched, adjacent ones in one range request. With `cache`, every chunk fetched raw is
    /// kept there too.
    ///
    /// The calling thread reads the chunks in order (from the device side or the download), a
    /// few ahead; worker threads hash (and decode) them; the calling thread hands them to
    /// `target` in order ([`crate::pipeline`]). A chunk that does not match is read again and
    /// checked on the calling thread, in its turn, before any chunk after it is handed on.
    pub(crate) fn stream_reusing(
        mut self,
        check_whole_image: bool,
        index: &ReuseIndex,
        cache: Option<&Path>,
        target: &mut dyn ReuseTarget,
    ) -> Result<(VerifyReport, FetchStats), Error> {
        let manifest = self.manifest.clone();
        let images = &manifest.manifest().images;
        refuse_streamed_delta(manifest.manifest())?;
        let tables: Vec<_> = images.iter().map(crate::package::stored_table).collect();
        let verifiers = images
            .iter()
            .zip(&tables)
            .map(|(image, table)| {
                ChunkVerifier::with_storage(
                    ImageExpectation {
                        size: image.size,
                        chunk_size: image.chunk_size,
                        digest: &image.digest,
                        chunk_digests: &image.chunk_digests,
                    },
                    table,
                )
                .map_err(|e| convert::verify_error(&image.name, VerifyError::Hash(e)))
            })
            .collect::<Result<Vec<_>, Error>>()?;
        let decoder = ZstdDecoder::new();
        let chunks = std::mem::take(&mut self.chunks);
        let origins: Vec<Option<&Origin>> =
            chunks.iter().map(|c| index.origin(&c.digest)).collect();
        let ends = range_ends(&chunks, &origins, self.package_len);
        let threads = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        let mut io = ReuseIo {
            fetcher: &mut self.fetcher,
            manifest: &manifest,
            verifiers: &verifiers,
            chunks: &chunks,
            origins: &origins,
            ends: &ends,
            target,
            cache,
            decoder: &decoder,
            whole: images
                .iter()
                .map(|_| check_whole_image.then(Sha256::new))
                .collect(),
            next: 0,
            buffers: Buffers::default(),
        };
        Pipeline {
            threads,
            in_flight: threads.saturating_mul(2),
        }
        .run(&mut io, |read| {
            let ReadChunk {
                at,
                expected,
                reused,
                stored,
                decoded,
            } = read;
            let checked = expected.verify_decoded_owned(stored, &decoder, decoded);
            (at, reused, checked)
        })?;
        let mut reports = Vec::with_capacity(images.len());
        for (image, hasher) in images.iter().zip(io.whole) {
            if let Some(hasher) = hasher
                && hasher.finalize() != image.digest
            {
                return Err(convert::verify_error(
                    &image.name,
                    VerifyError::Hash(HashError::ImageDigestMismatch),
                ));
            }
            reports.push(ImageReport::new(image, image.digest, check_whole_image));
        }
        Ok((VerifyReport::new(&manifest, reports), self.fetcher.stats))
    }

    /// `out`'s report when it is this package (the same length and signed prefix) and
    /// verifies in full; `None` otherwise, whatever the reason: then it is downloaded again.
    fn already_at(&self, out: &Path, verifier: &Verifier<'_>) -> Option<VerifyReport> {
        let mut file = std::fs::File::open(out).ok()?;
        let meta = file.metadata().ok()?;
        if !meta.is_file() || meta.len() != self.package_len {
            return None;
        }
        let mut prefix = vec![0u8; self.prefix.len()];
        file.read_exact(&mut prefix).ok()?;
        if prefix != self.prefix {
            return None;
        }
        crate::verify_file(out, verifier).ok()
    }

    /// Downloads the package to `out`: into `out.partial` first, with the verified-chunk bitmap
    /// in `out.partial.state` (so a later run resumes where this one stopped), after checking
    /// that the file system holds the bytes still missing. The calling thread reads the chunks
    /// in order and writes each one once it matched its signed digest; hashing runs on a
    /// thread per core beside the reading. When every chunk is in, the file is renamed to
    /// `out`. `progress` hears after every chunk.
    ///
    /// When `out` already holds this package (the same signed prefix and length) and it
    /// verifies in full, nothing more is downloaded and `out` is left as it is: the stats say
    /// [`FetchStats::already_present`]. A copy that does not verify is replaced.
    ///
    /// `out` must be absent or a regular file ([`crate::output::check_output`]), checked before
    /// the first payload byte and again just before the rename, so a device node, FIFO,
    /// directory or symbolic link is never replaced. `out.partial` is locked (an exclusive,
    /// non-blocking OS lock) before it or its state is used and until `out` has its name: two
    /// runs for one `out` would otherwise write into one file and rename it under each other.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] when `out` (or `out.partial`) is not absent or a regular
    /// file; [`ErrorKind::Busy`] at once when another run holds `out.partial`;
    /// [`ErrorKind::InsufficientStorage`] before the first payload byte when the space is
    /// short; [`ErrorKind::Io`] for local files; the fetch errors, among them
    /// [`ErrorKind::Timeout`] and [`ErrorKind::DeadlineExceeded`] (with the partial download
    /// and its state kept for the next run), and [`ErrorKind::IntegrityMismatch`] for a chunk
    /// that still does not match after its re-fetches.
    pub fn fetch_to_file(
        mut self,
        out: &Path,
        verifier: &Verifier<'_>,
        progress: &mut dyn FnMut(&FetchProgress),
    ) -> Result<(VerifyReport, FetchStats), Error> {
        crate::output::check_output(out, &[])?;
        let partial = with_suffix(out, ".partial");
        let state_path = with_suffix(out, ".partial.state");
        crate::output::check_output(&partial, &[])?;
        // Held until `out` has its name (dropped with `file`).
        let file = lock_partial(&partial)?;
        if let Some(report) = self.already_at(out, verifier) {
            self.fetcher.stats.already_present = true;
            return Ok((report, self.fetcher.stats));
        }
        let id = hex(self.manifest.package_id());
        let mut done = PartialState::load(&state_path, &id, self.package_len, self.chunks.len())
            .unwrap_or_else(|| PartialState::new(&id, self.package_len, self.chunks.len()));
        // Chunks a previous run verified are hashed again from disk: the bitmap saves traffic,
        // it is not trusted.
        let mut buffer = Vec::new();
        for (i, chunk) in self.chunks.iter().enumerate() {
            if done.is_set(i) {
                let good = read_at(&file, chunk.start, chunk.len, &mut buffer).is_ok()
                    && veriflash_hash::sha256(&buffer) == chunk.digest;
                if good {
                    let len = u64::try_from(chunk.len).unwrap_or(u64::MAX);
                    self.fetcher.stats.bytes_reused =
                        self.fetcher.stats.bytes_reused.saturating_add(len);
                } else {
                    done.clear(i);
                }
            }
        }
        let missing: u64 = self
            .chunks
            .iter()
            .enumerate()
            .filter(|(i, _)| !done.is_set(*i))
            .map(|(_, c)| u64::try_from(c.len).unwrap_or(u64::MAX))
            .sum();
        check_space(&partial, missing, self.fetcher.options.staging_quota)?;
        file.set_len(self.package_len)
            .map_err(|e| Error::io(partial.display(), e))?;
        write_at(&file, 0, &self.prefix).map_err(|e| Error::io(partial.display(), e))?;

        let prefix_len = u64::try_from(self.prefix.len()).unwrap_or(u64::MAX);
        let mut verified = prefix_len.saturating_add(self.fetcher.stats.bytes_reused);
        let mut unsaved = 0u64;
        let wanted: Vec<(usize, PlannedChunk)> = self
            .chunks
            .iter()
            .copied()
            .enumerate()
            .filter(|(i, _)| !done.is_set(*i))
            .collect();
        let total = self.package_len;
        let (fetcher, manifest) = (&mut self.fetcher, &self.manifest);
        let (flush, flushes) = std::sync::mpsc::channel::<()>();
        let result = std::thread::scope(|scope| {
            // Written chunks go on to the disk while the download goes on, so the flush before
            // the rename below finds little left to write (it took 0.4 s for 1 GiB otherwise).
            scope.spawn(|| {
                for () in flushes {
                    let _ = file.sync_data();
                }
            });
            let result = fetcher.fetch_verified(
                &wanted,
                manifest,
                &|chunk, bytes| {
                    write_at(&file, chunk.start, bytes).map_err(|e| Error::io(partial.display(), e))
                },
                &mut |(i, chunk)| {
                    done.set(*i);
                    let len = u64::try_from(chunk.len).unwrap_or(u64::MAX);
                    verified = verified.saturating_add(len);
                    unsaved = unsaved.saturating_add(len);
                    if unsaved >= STATE_SAVE_EVERY {
                        done.save(None, &state_path)?;
                        let _ = flush.send(());
                        unsaved = 0;
                    }
                    Ok(verified)
                },
                &mut |done, stats| {
                    progress(&FetchProgress { done, total, stats });
                },
            );
            // The flushing thread ends with its queue.
            drop(flush);
            result
        });
        // Keep what was verified for the next run, whatever happened.
        let saved = done.save(Some(&file), &state_path);
        result?;
        saved?;
        // Every byte of the file is verified: the signed prefix, and each chunk hashed in the
        // buffer it was then written from (or, from an earlier run, read back from the file
        // and hashed). Reading it all once more would only re-check the disk, which whoever
        // uses the package verifies again anyway.
        let reports = self
            .manifest
            .manifest()
            .images
            .iter()
            .map(|image| ImageReport::new(image, image.digest, false))
            .collect();
        let report = VerifyReport::new(&self.manifest, reports);
        // The download may have taken hours: what is at `out` now is what the rename replaces.
        crate::output::check_output(out, &[])?;
        std::fs::rename(&partial, out).map_err(|e| Error::io(out.display(), e))?;
        let _ = std::fs::remove_file(&state_path);
        if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty())
            && let Ok(dir) = File::open(dir)
        {
            let _ = dir.sync_all();
        }
        drop(file);
        Ok((report, self.fetcher.stats))
    }
}

/// Where the range request for each chunk to fetch ends: the end of the run of adjacent
/// chunks to fetch it starts, so a run comes in one request; `None` for a run that reaches the
/// package's end (an open-ended range, as a full download asks). Reused chunks get `None`.
fn range_ends(
    chunks: &[PlannedChunk],
    origins: &[Option<&Origin>],
    package_len: u64,
) -> Vec<Option<u64>> {
    let mut ends = vec![None; chunks.len()];
    let mut run_end = None;
    for (i, (chunk, origin)) in chunks.iter().zip(origins).enumerate().rev() {
        if origin.is_some() {
            run_end = Some(chunk.start);
            continue;
        }
        let end = run_end.filter(|&e| e < package_len);
        if let Some(slot) = ends.get_mut(i) {
            *slot = end;
        }
    }
    ends
}

/// One chunk read on the calling thread, for a worker to check: its position in the plan, and
/// whether it was read from the device side.
struct ReadChunk<'a> {
    at: usize,
    expected: ExpectedChunk<'a>,
    reused: bool,
    stored: Vec<u8>,
    decoded: Vec<u8>,
}

/// A chunk as a worker checked it: its position, whether it was reused, and the check.
type CheckedChunk = (usize, bool, Result<(VerifiedBuffer, Vec<u8>), HashError>);

/// The calling thread's side of [`RemotePackage::stream_reusing`].
struct ReuseIo<'s, 'a, S> {
    fetcher: &'s mut Fetcher<S>,
    manifest: &'a VerifiedManifest,
    verifiers: &'a [ChunkVerifier<'a>],
    chunks: &'a [PlannedChunk],
    origins: &'a [Option<&'a Origin>],
    ends: &'a [Option<u64>],
    target: &'s mut dyn ReuseTarget,
    cache: Option<&'s Path>,
    decoder: &'a ZstdDecoder,
    whole: Vec<Option<Sha256>>,
    next: usize,
    /// Buffers handed back, for the next chunks.
    buffers: Buffers,
}

impl<'a, S: Source> ReuseIo<'_, 'a, S> {
    /// Chunk `at` of the plan: its image and what it must hash to.
    fn expected(&self, at: usize) -> Result<(&'a ImageSpec, ExpectedChunk<'a>), Error> {
        let images = &self.manifest.manifest().images;
        self.chunks
            .get(at)
            .and_then(|chunk| {
                let image = images.get(chunk.image)?;
                let expected = self
                    .verifiers
                    .get(chunk.image)?
                    .expected_chunk(chunk.index)?;
                Some((image, expected))
            })
            .ok_or_else(|| Error::new(ErrorKind::Malformed, "a chunk outside the manifest"))
    }

    /// Hands verified chunk `at` on: counts it, keeps it in the cache when it was fetched
    /// raw, hashes it into its image when asked, and gives it to the target.
    fn deliver(
        &mut self,
        at: usize,
        reused: bool,
        verified: VerifiedChunk<'_>,
    ) -> Result<(), Error> {
        let (image, expected) = self.expected(at)?;
        let Some(chunk) = self.chunks.get(at) else {
            return Err(Error::new(
                ErrorKind::Malformed,
                "a chunk outside the manifest",
            ));
        };
        let len = u64::try_from(chunk.len).unwrap_or(u64::MAX);
        if reused {
            self.fetcher.stats.bytes_reused = self.fetcher.stats.bytes_reused.saturating_add(len);
        } else {
            self.fetcher.failures = 0;
            if let Some(dir) = self.cache
                && expected.encoding() == veriflash_hash::ChunkEncoding::Raw
            {
                crate::reuse::cache_store(dir, &chunk.digest, verified.bytes());
            }
        }
        if let Some(Some(hasher)) = self.whole.get_mut(chunk.image) {
            hasher.update(verified.bytes());
        }
        self.target.chunk(image, verified)
    }

    /// Chunk `at`, which did not match its signed digest as first read: a reused one is
    /// fetched instead, alone; a fetched one is repaired (fetched again alone, a bounded
    /// number of times); then checked here and handed on.
    fn read_again(&mut self, at: usize, mut reused: bool) -> Result<(), Error> {
        let (image, expected) = self.expected(at)?;
        let Some(chunk) = self.chunks.get(at).copied() else {
            return Err(Error::new(
                ErrorKind::Malformed,
                "a chunk outside the manifest",
            ));
        };
        let mut stored = self.buffers.take(chunk.len);
        let mut decoded = self.buffers.take(expected.len());
        let mut repairs = 0;
        let mut mismatch = true;
        loop {
            if mismatch && reused {
                self.target.warn(format!(
                    "image '{}' chunk {} read from the device side does not match its signed digest: fetched instead",
                    image.name, chunk.index
                ));
                reused = false;
                self.fetcher.check_cancelled()?;
                self.fetcher
                    .read_chunk(&chunk, Some(chunk.end()), &mut stored)?;
            } else if mismatch && !self.fetcher.repair(&chunk, &mut repairs, &mut stored)? {
                return Err(self.fetcher.unrepaired(&chunk, self.manifest, repairs));
            }
            match expected.verify_decoded(&stored, self.decoder, &mut decoded) {
                Ok(verified) => return self.deliver(at, reused, verified),
                Err(HashError::ChunkMismatch { .. }) => mismatch = true,
                Err(e) => return Err(convert::verify_error(&image.name, VerifyError::Hash(e))),
            }
        }
    }
}

impl<'a, S: Source> InOrder for ReuseIo<'_, 'a, S> {
    type Job = ReadChunk<'a>;
    type Checked = CheckedChunk;

    /// Reads the next chunk: a reused one again from where the device side holds it, right
    /// now; any other (or a reused one that cannot be read) from the download.
    fn read(&mut self) -> Option<Result<ReadChunk<'a>, Error>> {
        let at = self.next;
        let chunk = *self.chunks.get(at)?;
        self.next += 1;
        let origin = self.origins.get(at).copied().flatten();
        let end = self.ends.get(at).copied().flatten();
        let read = self.expected(at).and_then(|(_, expected)| {
            let mut stored = self.buffers.take(chunk.len);
            let decoded = if expected.encoding() == veriflash_hash::ChunkEncoding::Raw {
                Vec::new()
            } else {
                self.buffers.take(expected.len())
            };
            let reused = origin.is_some_and(|origin| origin.read(self.target, &mut stored).is_ok());
            if !reused {
                self.fetcher.check_cancelled()?;
                // A chunk meant to be reused and fetched after all comes alone.
                let end = if origin.is_some() {
                    Some(chunk.end())
                } else {
                    end
                };
                self.fetcher.read_chunk(&chunk, end, &mut stored)?;
            }
            Ok(ReadChunk {
                at,
                expected,
                reused,
                stored,
                decoded,
            })
        });
        Some(read)
    }

    fn hand_on(&mut self, (at, reused, checked): CheckedChunk) -> Result<(), Error> {
        match checked {
            Ok((verified, spare)) => {
                self.deliver(at, reused, verified.as_verified())?;
                self.buffers.keep(verified.into_buffer());
                self.buffers.keep(spare);
                Ok(())
            }
            Err(HashError::ChunkMismatch { .. }) => self.read_again(at, reused),
            Err(e) => {
                let (image, _) = self.expected(at)?;
                Err(convert::verify_error(&image.name, VerifyError::Hash(e)))
            }
        }
    }
}

/// Verified payload bytes are flushed and the bitmap saved after this many.
const STATE_SAVE_EVERY: u64 = 16 << 20;

/// Refuses to stream a delta package into an install: its chunks are rebuilt from the device's
/// own image after the whole source is checked (docs/FORMAT.md §3.4), which a download does
/// from a file. Checked before the device is touched.
pub(crate) fn refuse_streamed_delta(manifest: &veriflash_format::Manifest) -> Result<(), Error> {
    match manifest.images.iter().find(|i| i.source.is_some()) {
        None => Ok(()),
        Some(image) => Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "image '{}' is a delta (format version 4): it is installed from a file, not streamed",
                image.name
            ),
        )
        .with_remedy("Download it first (`veriflash fetch URL --out FILE`, every stored byte checked), then `veriflash flash FILE`; or serve the full package, of which a download fetches only the chunks the device lacks; nothing was written.")),
    }
}

/// The payload's stored chunks in package order, from the verified manifest, each with the
/// signed digest of its stored bytes: a chunk's digest, or for a delta image's patch its
/// reference's frame digest (docs/FORMAT.md §3.4). A chunk rebuilt from the device's own image
/// (`source`) stores nothing and is not planned: a staged download of a delta package holds
/// exactly its stored bytes, each checked, and the install rebuilds the rest.
fn plan(manifest: &VerifiedManifest, payload_offset: u64) -> Result<Vec<PlannedChunk>, Error> {
    let mut chunks = Vec::new();
    let mut at = payload_offset;
    for (image_index, image) in manifest.manifest().images.iter().enumerate() {
        let mut references = image.source.iter().flat_map(|s| &s.references);
        for index in 0..image.chunk_count() {
            let (Some(stored), Some(digest)) =
                (image.stored_chunk(index), image.chunk_digest(index))
            else {
                return Err(Error::new(
                    ErrorKind::Malformed,
                    format!("image '{}' has no record for chunk {index}", image.name),
                ));
            };
            let digest = if stored.encoding.uses_source() {
                let Some(reference) = references.next() else {
                    return Err(Error::new(
                        ErrorKind::Malformed,
                        format!(
                            "image '{}' chunk {index} has no source reference",
                            image.name
                        ),
                    ));
                };
                if stored.encoding == veriflash_format::ChunkEncoding::Source {
                    continue;
                }
                &reference.frame_digest
            } else {
                digest
            };
            let len = usize::try_from(stored.stored_len).unwrap_or(usize::MAX);
            chunks.push(PlannedChunk {
                start: at,
                len,
                digest: *digest,
                image: image_index,
                index,
            });
            at = at.saturating_add(u64::from(stored.stored_len));
        }
    }
    Ok(chunks)
}

/// Opens `partial` (creating it, never following a symbolic link) and locks it exclusively
/// without queueing behind another run ([`veriflash_plugin::flock`]): the lock, not the name,
/// says which run owns a partial download.
///
/// The run that held the lock renames the file to its final name before it lets go, so a lock
/// won on a file that no longer has the name `partial` is on a finished download: the name is
/// opened again.
fn lock_partial(partial: &Path) -> Result<File, Error> {
    let busy = || {
        Error::new(
            ErrorKind::Busy,
            format!(
                "{} is being downloaded by another run (it holds the file's lock); wait for that run to finish, or download to another file",
                partial.display()
            ),
        )
    };
    let no_follow = i32::try_from(rustix::fs::OFlags::NOFOLLOW.bits()).unwrap_or(0);
    for _ in 0..3 {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .custom_flags(no_follow)
            .open(partial)
            .map_err(|e| Error::io(partial.display(), e))?;
        match veriflash_plugin::flock::lock_exclusive(&file) {
            Ok(true) => {}
            Ok(false) => return Err(busy()),
            Err(e) => return Err(Error::io(partial.display(), e)),
        }
        let locked = file
            .metadata()
            .map_err(|e| Error::io(partial.display(), e))?;
        if !locked.is_file() {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!("{} is not a regular file", partial.display()),
            ));
        }
        let named = std::fs::symlink_metadata(partial)
            .is_ok_and(|m| m.dev() == locked.dev() && m.ino() == locked.ino());
        if named {
            return Ok(file);
        }
    }
    Err(busy())
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Pre-flight: the file system of `partial` must hold `needed` more bytes.
fn check_space(partial: &Path, needed: u64, quota: Option<u64>) -> Result<(), Error> {
    let dir = match partial.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let st = rustix::fs::statvfs(&dir).map_err(|e| Error::io(dir.display(), io::Error::from(e)))?;
    let free = st.f_bavail.saturating_mul(st.f_frsize);
    let available = quota.map_or(free, |quota| quota.min(free));
    if needed > available {
        return Err(Error::new(
            ErrorKind::InsufficientStorage,
            format!(
                "the download needs {needed} bytes in {}, {available} are available: needs {} bytes more",
                dir.display(),
                needed - available
            ),
        ));
    }
    Ok(())
}

fn read_at(file: &File, offset: u64, len: usize, buffer: &mut Vec<u8>) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    buffer.resize(len, 0);
    file.read_exact_at(buffer, offset)
}

fn write_at(file: &File, offset: u64, bytes: &[u8]) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    file.write_all_at(bytes, offset)
}

/// The verified-chunk bitmap of a partial download, saved beside it.
struct PartialState {
    header: String,
    bits: Vec<u8>,
}

impl PartialState {
    fn new(id: &str, len: u64, chunks: usize) -> Self {
        Self {
            header: format!("veriflash-partial 1\npackage {id}\nlength {len}\nchunks {chunks}\n"),
            bits: vec![0; chunks.div_ceil(8)],
        }
    }

    /// The saved state, if it is for this exact package (same signed manifest); `None` starts
    /// over.
    fn load(path: &Path, id: &str, len: u64, chunks: usize) -> Option<Self> {
        let text = std::fs::read_to_string(path).ok()?;
        let mut state = Self::new(id, len, chunks);
        let rest = text.strip_prefix(&state.header)?;
        let bits = rest.trim().strip_prefix("done ")?;
        if bits.len() != state.bits.len() * 2 {
            return None;
        }
        for (slot, pair) in state.bits.iter_mut().zip(bits.as_bytes().chunks(2)) {
            *slot = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
        }
        Some(state)
    }

    fn is_set(&self, i: usize) -> bool {
        self.bits
            .get(i / 8)
            .is_some_and(|b| b & (1 << (i % 8)) != 0)
    }

    fn set(&mut self, i: usize) {
        if let Some(b) = self.bits.get_mut(i / 8) {
            *b |= 1 << (i % 8);
        }
    }

    fn clear(&mut self, i: usize) {
        if let Some(b) = self.bits.get_mut(i / 8) {
            *b &= !(1 << (i % 8));
        }
    }

    /// Replaces the state file atomically (a new file renamed over it). With `data`, the
    /// download is flushed first and the state file too, so both survive a power cut.
    ///
    /// Without: a crash may leave the state marking chunks whose bytes never reached the disk,
    /// or no usable state at all. Both are safe, because the next run hashes every marked chunk
    /// again from the file and fetches what does not match (the state saves traffic, it is not
    /// trusted); flushing on every save would instead make the download wait for the disk
    /// every few megabytes.
    fn save(&self, data: Option<&File>, path: &Path) -> Result<(), Error> {
        if let Some(data) = data {
            data.sync_data()
                .map_err(|e| Error::io("syncing the download", e))?;
        }
        let tmp = with_suffix(path, ".tmp");
        let write = || -> io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(self.header.as_bytes())?;
            f.write_all(format!("done {}\n", hex(&self.bits)).as_bytes())?;
            if data.is_some() {
                f.sync_all()?;
            }
            std::fs::rename(&tmp, path)
        };
        write().map_err(|e| Error::io(path.display(), e))
    }
}

/// The fetch loop: one main connection moving forward, re-opened after breaks, and one-off
/// ranges for chunk repairs.
struct Fetcher<S> {
    source: S,
    /// The main connection: a reader, where it is in the package, and where its range ends
    /// (`None`: at the package's end).
    connection: Option<(RangeReader, u64, Option<u64>)>,
    options: OtaOptions,
    stats: FetchStats,
    /// Resumes since the last verified chunk.
    failures: u32,
    /// When the whole download must have ended.
    deadline: Option<Deadline>,
    /// Asked between chunks: a cancelled download stops there.
    cancel: Option<CancelToken>,
}

/// The instant a download must end by, and how long it was given (for the message).
#[derive(Clone, Copy, Debug)]
struct Deadline {
    at: Instant,
    allowed: Duration,
}

impl Deadline {
    fn passed(self) -> bool {
        Instant::now() >= self.at
    }

    fn exceeded(self, what: &str) -> Error {
        Error::new(
            ErrorKind::DeadlineExceeded,
            format!(
                "the download of {what} did not finish within its deadline of {}",
                describe_duration(self.allowed)
            ),
        )
    }
}

/// A range reader that fails with [`ErrorKind::DeadlineExceeded`] once the download's deadline
/// has passed: before a read, and instead of the error of a read that failed after it (a read
/// that blocked until its timeout).
struct DeadlineReader {
    inner: RangeReader,
    deadline: Deadline,
    what: String,
}

impl Read for DeadlineReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.deadline.passed() {
            return Err(Error::into_io(self.deadline.exceeded(&self.what)));
        }
        match self.inner.read(buf) {
            Err(e) if self.deadline.passed() => Err(Error::into_io(
                self.deadline.exceeded(&self.what).with_source(e),
            )),
            other => other,
        }
    }
}

/// Failures worth another attempt: the connection, the server, a stall.
fn retryable(err: &Error) -> bool {
    let permanent = std::error::Error::source(err).is_some_and(|s| s.is::<PermanentFailure>());
    !permanent
        && matches!(
            err.kind(),
            ErrorKind::Timeout
                | ErrorKind::Truncated
                | ErrorKind::ServerError
                | ErrorKind::TransportError
                | ErrorKind::Io
        )
}

/// Reads exactly `len` bytes into `buffer`; an early end is [`ErrorKind::Truncated`].
fn read_exact(
    reader: &mut RangeReader,
    len: usize,
    buffer: &mut Vec<u8>,
    at: u64,
) -> Result<(), Error> {
    buffer.clear();
    buffer.resize(len, 0);
    let mut filled = 0;
    while let Some(rest) = buffer.get_mut(filled..) {
        if rest.is_empty() {
            break;
        }
        match reader.read(rest) {
            Ok(0) => {
                return Err(Error::new(
                    ErrorKind::Truncated,
                    format!(
                        "the source ended at byte {}",
                        at.saturating_add(u64::try_from(filled).unwrap_or(u64::MAX))
                    ),
                ));
            }
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io(format_args!("reading byte {at} on"), e)),
        }
    }
    Ok(())
}

impl<S: Source> Fetcher<S> {
    fn new(source: S, options: OtaOptions) -> Self {
        // The clock starts now, just before the first request; a deadline too far away to
        // represent is none.
        let deadline = options.deadline.and_then(|allowed| {
            Some(Deadline {
                at: Instant::now().checked_add(allowed)?,
                allowed,
            })
        });
        Self {
            source,
            connection: None,
            options,
            stats: FetchStats::default(),
            failures: 0,
            deadline,
            cancel: None,
        }
    }

    /// Opens a range of the source, unless the deadline has passed; the reader fails once it
    /// passes. Every request of the download goes through here.
    fn open(&mut self, start: u64, end: Option<u64>) -> Result<RangeReader, Error> {
        let Some(deadline) = self.deadline else {
            return self.source.open(start, end);
        };
        let what = self.source.describe();
        if deadline.passed() {
            return Err(deadline.exceeded(&what));
        }
        match self.source.open(start, end) {
            Ok(inner) => Ok(Box::new(DeadlineReader {
                inner,
                deadline,
                what,
            })),
            Err(e) if deadline.passed() => Err(deadline.exceeded(&what).with_source(e)),
            Err(e) => Err(e),
        }
    }

    /// [`ErrorKind::Cancelled`] once the download's token is cancelled: asked before each
    /// chunk and before each resume, so a stalled server does not hold a cancelled download.
    fn check_cancelled(&self) -> Result<(), Error> {
        if self.cancel.as_ref().is_some_and(CancelToken::is_cancelled) {
            return Err(Error::new(
                ErrorKind::Cancelled,
                format!(
                    "the download of {} was cancelled; the chunks verified so far are kept for the next run",
                    self.source.describe()
                ),
            ));
        }
        Ok(())
    }

    /// Spends one resume on `err`, or gives it back when none are left (or the source cannot
    /// go back).
    fn resume(&mut self, err: Error) -> Result<(), Error> {
        self.connection = None;
        self.check_cancelled()?;
        if !retryable(&err)
            || !self.source.can_reread()
            || self.failures >= self.options.max_resumes
        {
            return Err(err);
        }
        self.failures += 1;
        self.stats.resumes += 1;
        // No pause past the deadline: the next request reports it.
        let pause = self.deadline.map_or(self.options.retry_delay, |d| {
            self.options
                .retry_delay
                .min(d.at.saturating_duration_since(Instant::now()))
        });
        std::thread::sleep(pause);
        Ok(())
    }

    /// Bytes `start..end` of the prefix, fewer only when the source ends first.
    fn fetch_prefix_range(&mut self, start: u64, end: u64) -> Result<Vec<u8>, Error> {
        let end = self
            .source
            .total_len()
            .map_or(end, |len| end.min(len))
            .max(start);
        loop {
            let attempt = (|| {
                let mut reader = self.open(start, Some(end))?;
                let mut out = Vec::new();
                let len = end.saturating_sub(start);
                (&mut reader)
                    .take(len)
                    .read_to_end(&mut out)
                    .map_err(|e| Error::io("reading the package prefix", e))?;
                Ok(out)
            })();
            match attempt {
                Ok(out) => return Ok(out),
                Err(e) => self.resume(e)?,
            }
        }
    }

    /// Reads chunk `chunk` into `buffer` over the main connection, resuming it as needed (at
    /// most [`OtaOptions::with_max_resumes`] times in a row without progress). A new
    /// connection asks for the range from the chunk to `end` (`None`: the package's end), so
    /// adjacent chunks to fetch come in one request.
    fn read_chunk(
        &mut self,
        chunk: &PlannedChunk,
        end: Option<u64>,
        buffer: &mut Vec<u8>,
    ) -> Result<(), Error> {
        loop {
            let connection = match self.connection.take() {
                Some((reader, at, until))
                    if at == chunk.start && until.is_none_or(|u| chunk.end() <= u) =>
                {
                    (reader, until)
                }
                _ => match self.open(chunk.start, end) {
                    Ok(reader) => (reader, end),
                    Err(e) => {
                        self.resume(e)?;
                        continue;
                    }
                },
            };
            let (mut connection, until) = connection;
            match read_exact(&mut connection, chunk.len, buffer, chunk.start) {
                Ok(()) => {
                    self.connection = Some((connection, chunk.end(), until));
                    self.count(chunk.len);
                    return Ok(());
                }
                Err(e) => self.resume(e)?,
            }
        }
    }

    /// Reads chunk `chunk` again, alone (a range of exactly that chunk), into `buffer`, after
    /// its bytes did not match their digest; the main connection stays where it is. `Ok(false)`
    /// when no repair is left (or the source cannot go back).
    fn repair(
        &mut self,
        chunk: &PlannedChunk,
        repairs: &mut u32,
        buffer: &mut Vec<u8>,
    ) -> Result<bool, Error> {
        while *repairs < self.options.max_repairs && self.source.can_reread() {
            *repairs += 1;
            self.stats.repairs += 1;
            let attempt = self
                .open(chunk.start, Some(chunk.end()))
                .and_then(|mut reader| read_exact(&mut reader, chunk.len, buffer, chunk.start));
            match attempt {
                Ok(()) => {
                    self.count(chunk.len);
                    return Ok(true);
                }
                Err(e) => {
                    // Keep the main connection: only the repair range failed.
                    let main = self.connection.take();
                    self.resume(e)?;
                    self.connection = main;
                }
            }
        }
        Ok(false)
    }

    /// The error for a chunk that still does not match after `repairs` re-fetches.
    fn unrepaired(&self, chunk: &PlannedChunk, manifest: &VerifiedManifest, repairs: u32) -> Error {
        let image = manifest.manifest().images.get(chunk.image);
        let name = image.map_or("?", |i| i.name.as_str());
        let offset = image.and_then(|i| i.chunk_offset(chunk.index));
        Error::new(
            ErrorKind::IntegrityMismatch,
            format!(
                "image '{name}' chunk {} does not match its signed digest after {repairs} re-fetches from {}",
                chunk.index,
                self.source.describe()
            ),
        )
        .at(location_in(name, Some(chunk.index), offset))
    }

    /// Fetches the chunks of `wanted` in order over the main connection; each one's bytes go
    /// to `store` once they matched their signed digest, and then, in order, the chunk to
    /// `sink`, which returns the bytes done so far for `progress` (with the stats).
    ///
    /// The calling thread reads (and runs the sink); a thread per core hashes each chunk and
    /// stores it, so that work overlaps reading the next ones. At most two chunks per thread are
    /// in memory. A chunk that does not match is fetched again alone ([`Fetcher::repair`]), on the
    /// calling thread, before anything after it reaches the sink.
    fn fetch_verified<T, Store, Sink, Progress>(
        &mut self,
        wanted: &[(T, PlannedChunk)],
        manifest: &VerifiedManifest,
        store: &Store,
        sink: &mut Sink,
        progress: &mut Progress,
    ) -> Result<(), Error>
    where
        T: Sync,
        Store: Fn(&PlannedChunk, &[u8]) -> Result<(), Error> + Sync,
        Sink: FnMut(&(T, PlannedChunk)) -> Result<u64, Error>,
        Progress: FnMut(u64, FetchStats),
    {
        let threads = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        let window = threads.saturating_mul(2);
        let stopped = || Error::io("hashing", io::Error::other("the hashing threads stopped"));
        let (jobs, queue) = std::sync::mpsc::channel::<(usize, Vec<u8>)>();
        let queue = std::sync::Mutex::new(queue);
        // Back from a thread: the chunk's position, its buffer, and whether it matched and was
        // stored (`Some(Ok)`), matched and could not be stored, or did not match (`None`).
        type Checked = (usize, Vec<u8>, Option<Result<(), Error>>);
        let (checked, results) = std::sync::mpsc::channel::<Checked>();
        std::thread::scope(|scope| {
            for _ in 0..threads {
                let (queue, checked) = (&queue, checked.clone());
                scope.spawn(move || {
                    loop {
                        let job = match queue.lock() {
                            Ok(queue) => queue.recv(),
                            Err(_) => return,
                        };
                        let Ok((k, bytes)) = job else { return };
                        let stored = wanted
                            .get(k)
                            .filter(|(_, chunk)| veriflash_hash::sha256(&bytes) == chunk.digest)
                            .map(|(_, chunk)| store(chunk, &bytes));
                        if checked.send((k, bytes, stored)).is_err() {
                            return;
                        }
                    }
                });
            }
            drop(checked);
            let mut free: Vec<Vec<u8>> = Vec::new();
            let mut arrived = std::collections::BTreeMap::new();
            let (mut next_read, mut next_sink) = (0usize, 0usize);
            // Why reading stopped early: reported once every chunk read before it is stored and
            // handed to the sink, so the next run does not fetch them again.
            let mut stop = None;
            let result = (|| {
                while next_sink < next_read || (stop.is_none() && next_sink < wanted.len()) {
                    let reading = stop.is_none()
                        && next_read < wanted.len()
                        && next_read - next_sink < window;
                    if let Some((_, chunk)) = wanted.get(next_read).filter(|_| reading) {
                        let mut buffer = free.pop().unwrap_or_default();
                        let read = self
                            .check_cancelled()
                            .and_then(|()| self.read_chunk(chunk, None, &mut buffer));
                        if let Err(e) = read {
                            stop = Some(e);
                            continue;
                        }
                        jobs.send((next_read, buffer)).map_err(|_| stopped())?;
                        next_read += 1;
                        while let Ok((k, bytes, stored)) = results.try_recv() {
                            arrived.insert(k, (bytes, stored));
                        }
                    } else {
                        let (k, bytes, stored) = results.recv().map_err(|_| stopped())?;
                        arrived.insert(k, (bytes, stored));
                    }
                    while let Some((mut bytes, stored)) = arrived.remove(&next_sink) {
                        let Some(item) = wanted.get(next_sink) else {
                            break;
                        };
                        let chunk = &item.1;
                        match stored {
                            Some(stored) => stored?,
                            None => {
                                let mut repairs = 0;
                                loop {
                                    if !self.repair(chunk, &mut repairs, &mut bytes)? {
                                        return Err(self.unrepaired(chunk, manifest, repairs));
                                    }
                                    if veriflash_hash::sha256(&bytes) == chunk.digest {
                                        break;
                                    }
                                }
                                store(chunk, &bytes)?;
                            }
                        }
                        self.failures = 0;
                        let done = sink(item)?;
                        progress(done, self.stats);
                        free.push(bytes);
                        next_sink += 1;
                    }
                }
                stop.map_or(Ok(()), Err)
            })();
            // Closing the queue ends the hashing threads.
            drop(jobs);
            result
        })
    }

    fn count(&mut self, len: usize) {
        self.stats.bytes_fetched = self
            .stats
            .bytes_fetched
            .saturating_add(u64::try_from(len).unwrap_or(u64::MAX));
    }
}
