//! The parallel driver: chunks hashed on worker threads, read and delivered in order on the
//! calling thread, in a bounded pool of recycled buffers.
//!
//! ```text
//!            calling thread                          worker threads (N)
//!  reader ──▶ fill a free buffer (whole chunks) ──job──▶ hash each chunk, compare with its
//!            │                                           signed digest (ExpectedChunk::verify)
//!            ◀──────────────────────────────done──────────┘
//!            reorder by sequence number; deliver chunks in order to the sink;
//!            recycle the buffer
//! ```
//!
//! The calling thread does the I/O and the delivery, so neither the reader nor the sink has to
//! be `Send`; workers only hash chunks. The whole-image hash, when asked for, runs on a thread
//! of its own: each delivered buffer goes to it, in delivery order, and comes back free once
//! hashed, so that serial pass runs beside the sink's work (a device's writes) instead of
//! before it. At most `max_in_flight` buffers ever exist — wherever they are — so memory is
//! `max_in_flight × buffer_len` whatever the image size.
//!
//! A source the workers can read at an offset themselves ([`verify_stored_at_parallel`], a
//! package file): the calling thread only hands out buffers and batch positions; each worker
//! reads its own batch (`pread`) and hashes it at once, on the core whose cache the copy just
//! filled. Handing the bytes from a reading thread to a hashing one instead costs the hash a
//! cross-core transfer of every byte: measured on a 2-core Xeon, one worker behind a reader took
//! 1.25× the time of reading and hashing on one core (docs/PERFORMANCE.md).
//!
//! Compressed chunks ([`verify_stored_reader_parallel`]): the buffer holds the batch's *stored*
//! bytes; a worker hashes each chunk's stored bytes and compares them with the signed digest,
//! and only then has the [`ChunkDecoder`] decode it into a second buffer of the batch's signed
//! decompressed length (allocated only for batches with a compressed chunk, recycled the same
//! way). Memory is then at most `2 × max_in_flight × buffer_len`.

use alloc::collections::VecDeque;
use alloc::vec::Vec;
use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, mpsc};
use std::thread;

use crate::error::{Error, len_u64};
use crate::io::{VerifyError, alloc_buffer};
use crate::sha::{Digest, Sha256};
use crate::verify::{
    ChunkDecoder, ChunkEncoding, ChunkVerifier, DecodeError, ExpectedChunk, ImageExpectation,
    StoredChunk, VerifiedChunk,
};

/// The decoder of images without a chunk table: every chunk is raw, so it is never called.
struct RawOnly;

impl ChunkDecoder for RawOnly {
    fn decode(
        &self,
        _chunk: &ExpectedChunk<'_>,
        _stored: &[u8],
        _out: &mut [u8],
    ) -> Result<usize, DecodeError> {
        Err(DecodeError::UnsupportedEncoding)
    }
}

/// Default [`ParallelOptions::min_buffer_len`]: chunks smaller than this are grouped, whole, into
/// one buffer (one read, one job) of at least this many bytes. 256 KiB keeps the per-job cost
/// (a channel send and receive, a wake-up: a few microseconds) under 1 % of the ~140 µs it takes
/// to hash the buffer, and is a single chunk at the format's 1 MiB default chunk size anyway.
pub const DEFAULT_MIN_BUFFER_LEN: usize = 256 * 1024;

/// Upper bound on worker threads, whatever the caller asks for: more threads than this cannot
/// help a memory-bound hash and only cost stacks.
pub const MAX_THREADS: usize = 256;

/// How [`verify_reader_parallel`] spreads the work.
///
/// `Default` is: one hashing thread per available core, twice as many buffers in flight as
/// threads, 256 KiB minimum buffers, and no whole-image re-hash (see
/// [`check_whole_image`](Self::check_whole_image) for why that is safe and why it is the default).
#[non_exhaustive]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ParallelOptions {
    /// Hashing threads; `0` means [`std::thread::available_parallelism`]. The calling thread
    /// reads and delivers on top of these. Capped at [`MAX_THREADS`] and at the number of
    /// buffers.
    pub threads: usize,
    /// Most buffers that exist at once (being read, queued, hashed, or waiting to be delivered
    /// in order); `0` means `2 × threads`. Memory is at most `max_in_flight` × the buffer length
    /// (the larger of one chunk and [`min_buffer_len`](Self::min_buffer_len) rounded down to
    /// whole chunks, and never more than the image).
    pub max_in_flight: usize,
    /// Smallest buffer (and read) in bytes; consecutive whole chunks are grouped up to it.
    /// `0` means [`DEFAULT_MIN_BUFFER_LEN`].
    pub min_buffer_len: usize,
    /// Also hash the whole image, in order, on a thread of its own (on the calling thread if
    /// none can be started), and compare it with the signed whole-image digest.
    ///
    /// Off by default, because it is redundant for integrity and costs a full second SHA-256
    /// pass that cannot be parallelised: every chunk digest is signed, the chunk boundaries
    /// follow from the signed size and chunk size, and every byte of the image lies in exactly
    /// one chunk, so an image whose chunks all match is, byte for byte, the image the signer
    /// digested (unless SHA-256 collides, which the whole-image digest relies on just as much).
    /// A whole-image mismatch after all chunks matched can only mean that the *signer's own*
    /// manifest contradicts itself (a packer bug), not that the data was altered. The whole-image
    /// digest stays in the manifest for read-back and for tools that expect one. Turn this on to
    /// catch such packer bugs, at the cost of a core for the whole-image hash (installs turn it
    /// on: read-back compares the device with that digest, which must first be known to agree
    /// with the verified chunks).
    pub check_whole_image: bool,
}

impl ParallelOptions {
    /// The defaults: as many threads as cores, `2 × threads` buffers, no whole-image re-hash.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets [`threads`](Self::threads) (`0` = available parallelism).
    #[must_use]
    pub fn threads(mut self, threads: usize) -> Self {
        self.threads = threads;
        self
    }

    /// Sets [`max_in_flight`](Self::max_in_flight) (`0` = `2 × threads`).
    #[must_use]
    pub fn max_in_flight(mut self, buffers: usize) -> Self {
        self.max_in_flight = buffers;
        self
    }

    /// Sets [`min_buffer_len`](Self::min_buffer_len) (`0` = [`DEFAULT_MIN_BUFFER_LEN`]).
    #[must_use]
    pub fn min_buffer_len(mut self, bytes: usize) -> Self {
        self.min_buffer_len = bytes;
        self
    }

    /// Sets [`check_whole_image`](Self::check_whole_image).
    #[must_use]
    pub fn check_whole_image(mut self, check: bool) -> Self {
        self.check_whole_image = check;
        self
    }

    /// The number of hashing threads these options give on this machine.
    #[must_use]
    pub fn resolved_threads(&self) -> usize {
        let threads = if self.threads == 0 {
            thread::available_parallelism().map_or(1, core::num::NonZeroUsize::get)
        } else {
            self.threads
        };
        threads.clamp(1, MAX_THREADS)
    }
}

/// What one run did, for the tests of the memory bound.
#[derive(Debug)]
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) struct Run {
    pub(crate) digest: Digest,
    /// Chunk buffers allocated over the whole run.
    pub(crate) buffers_allocated: usize,
    /// Length of each buffer.
    pub(crate) buffer_len: usize,
}

/// A batch of consecutive whole chunks in one buffer, on its way to a worker.
struct Job {
    /// Position of the batch in reading order (0, 1, 2, ...).
    seq: u64,
    /// Index of the batch's first chunk.
    first: u64,
    /// Number of chunks in the batch (at least 1).
    count: u64,
    buffer: Vec<u8>,
    /// Bytes of `buffer` that hold the batch (its stored bytes).
    len: usize,
    /// Where compressed chunks are decoded, at their offsets within the batch; empty when the
    /// batch has none.
    decoded: Vec<u8>,
    /// Offset of the batch's stored bytes in the image's stored bytes.
    at: u64,
    /// The SHA-256 of each chunk's stored bytes, when a worker computed them piece by piece as
    /// it read them into `buffer` (a positional input); empty otherwise.
    hashed: Vec<Digest>,
}

/// A hashed batch on its way back.
struct Done {
    job: Job,
    /// Chunks at the start of the batch that matched.
    matched: u64,
    /// The first bad chunk's error, if any (it is chunk `first + matched`), or why the batch's
    /// positional read stopped short after `matched` whole chunks.
    outcome: Result<(), Failure>,
}

/// Why a batch failed.
enum Failure {
    /// A chunk did not verify, or the input ended early.
    Hash(Error),
    /// A worker's positional read failed.
    Io(io::Error),
}

impl<E> From<Failure> for VerifyError<E> {
    fn from(failure: Failure) -> Self {
        match failure {
            Failure::Hash(error) => Self::Hash(error),
            Failure::Io(error) => Self::Io(error),
        }
    }
}

/// An input the workers read at an offset themselves, without a shared position.
pub trait ReadAt: Sync {
    /// Reads up to `buf.len()` bytes at `offset`, as `pread` does: fewer at the end of the
    /// input, `0` past it.
    ///
    /// # Errors
    /// When reading fails.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
}

#[cfg(unix)]
impl ReadAt for std::fs::File {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        std::os::unix::fs::FileExt::read_at(self, buf, offset)
    }
}

/// An image in memory, for tests and callers that hold the package already.
impl ReadAt for Vec<u8> {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(self.len());
        let rest = self.get(start..).unwrap_or_default();
        let n = rest.len().min(buf.len());
        buf.get_mut(..n)
            .unwrap_or_default()
            .copy_from_slice(rest.get(..n).unwrap_or_default());
        Ok(n)
    }
}

/// Where an image's stored bytes are read from.
pub(crate) enum Input<'r, R: ?Sized> {
    /// In order, by the calling thread.
    Stream(&'r mut R),
    /// By the workers, each its own batch, the image starting at `base`.
    At {
        /// The input.
        source: &'r dyn ReadAt,
        /// Offset of the image's first stored byte in it.
        base: u64,
    },
}

/// A positional input as the workers see it.
#[derive(Clone, Copy)]
struct Positional<'r> {
    source: &'r dyn ReadAt,
    base: u64,
}

/// What comes back to the calling thread: a batch a worker checked, or a batch whose delivered
/// chunks the whole-image hasher has hashed (its buffers free again).
enum Back {
    Checked(Done),
    Hashed(Job),
}

/// Where the whole-image hash runs, when it is asked for.
enum Whole {
    /// Not asked for.
    No,
    /// On the calling thread, as each chunk is delivered (no thread could be started for it).
    Here(Sha256),
    /// On its own thread, in delivery order, while the calling thread writes the next chunks:
    /// each delivered batch travels there with the number of its chunks that were delivered.
    Thread(mpsc::Sender<(Job, u64)>),
}

/// Reads exactly one image of `expect.size` bytes from `reader`, verifies its chunks on
/// `options.threads` worker threads while the calling thread reads ahead, and hands each verified
/// chunk, **in order and on the calling thread**, to `sink`; returns the whole-image digest.
///
/// The same contract as [`verify_reader`](crate::verify_reader), with these differences:
///
/// * Chunks are hashed in parallel, and reading overlaps hashing: the calling thread fills the
///   next buffer while workers hash the previous ones. The sink is called from the calling thread
///   only, so it may be a device writer that is not `Send`; while it runs, no read is issued.
/// * Memory is bounded by `max_in_flight` buffers (see [`ParallelOptions`]), allocated on demand
///   and recycled, independent of the image size.
/// * On failure, the error is the one the serial driver would report: the **lowest** bad chunk
///   (workers may finish out of order; the driver waits for every earlier chunk before deciding),
///   or the truncation / read error if every chunk before it matched. The sink has then received
///   every chunk before the failure and none after. Up to `max_in_flight` buffers past the failure
///   may have been read, so the reader's position after an error is unspecified; after success it
///   is exactly `expect.size` bytes further.
/// * The whole-image digest is re-computed and compared only with
///   [`ParallelOptions::check_whole_image`]; otherwise the signed digest `expect.digest` is
///   returned, which the verified chunks imply (see that option for the argument).
///
/// # Errors
///
/// * [`VerifyError::Hash`]: [`Error::ChunkMismatch`] for the lowest corrupt chunk,
///   [`Error::Truncated`] if the input ends early, [`Error::ImageDigestMismatch`] (only with
///   `check_whole_image`), the errors of [`ChunkVerifier::new`] for inconsistent expectations,
///   [`Error::OutOfMemory`] if a buffer cannot be allocated.
/// * [`VerifyError::Io`] if reading fails. (If not even one worker thread can be started, the
///   calling thread hashes every chunk itself: slower, never an error.)
/// * [`VerifyError::Sink`] with the sink's error; nothing more is delivered and reading stops.
pub fn verify_reader_parallel<R, F, E>(
    reader: &mut R,
    expect: ImageExpectation<'_>,
    options: ParallelOptions,
    sink: F,
) -> Result<Digest, VerifyError<E>>
where
    R: Read + ?Sized,
    F: FnMut(VerifiedChunk<'_>) -> Result<(), E>,
{
    run(Input::Stream(reader), expect, &[], &RawOnly, options, sink).map(|run| run.digest)
}

/// [`verify_reader_parallel`] for an image whose chunks may be stored compressed: `stored` has
/// one record per chunk (empty: all raw), and the input holds each chunk's stored bytes.
///
/// Each chunk's stored bytes are hashed and compared with the signed digest on a worker thread
/// **before** anything else looks at them; only a chunk that matched is handed to `decoder`,
/// which decodes it into a buffer of exactly the chunk's signed decompressed length (its
/// nominal length). A chunk that decodes to more or fewer bytes stops the run. The sink receives
/// [`VerifiedChunk`]s holding the decoded (or raw) chunk bytes at their image offsets, in order.
/// Memory is at most twice that of [`verify_reader_parallel`] (a decode buffer per buffer in
/// flight, only for batches with a compressed chunk).
///
/// # Errors
///
/// Those of [`verify_reader_parallel`] ([`Error::Truncated`] then counts stored bytes), and
/// [`Error::InvalidStoredChunk`] or [`Error::DigestCountMismatch`] for an inconsistent `stored`,
/// [`Error::DecompressedLengthMismatch`] and [`Error::DecodeFailed`] for a chunk whose verified
/// stored bytes do not decode to exactly its signed length.
pub fn verify_stored_reader_parallel<R, F, E>(
    reader: &mut R,
    expect: ImageExpectation<'_>,
    stored: &[StoredChunk],
    decoder: &dyn ChunkDecoder,
    options: ParallelOptions,
    sink: F,
) -> Result<Digest, VerifyError<E>>
where
    R: Read + ?Sized,
    F: FnMut(VerifiedChunk<'_>) -> Result<(), E>,
{
    run(
        Input::Stream(reader),
        expect,
        stored,
        decoder,
        options,
        sink,
    )
    .map(|run| run.digest)
}

/// [`verify_stored_reader_parallel`] for an input the workers read themselves at offsets (a
/// file: [`ReadAt`]), the image's stored bytes starting at `offset`: each worker reads its
/// batch and hashes it on the same core, so the copy out of the page cache is spread over the
/// workers and the bytes are hashed while they are still in that core's cache. Every byte is
/// read once, into the buffer that is checked and then delivered.
///
/// The calling thread delivers the verified chunks in order to `sink`, as
/// [`verify_reader_parallel`] does; nothing is read past the image's stored bytes.
///
/// # Errors
/// Those of [`verify_stored_reader_parallel`]: [`Error::Truncated`] when the input ends before
/// the image does, [`VerifyError::Io`] when a read fails.
pub fn verify_stored_at_parallel<F, E>(
    source: &dyn ReadAt,
    offset: u64,
    expect: ImageExpectation<'_>,
    stored: &[StoredChunk],
    decoder: &dyn ChunkDecoder,
    options: ParallelOptions,
    sink: F,
) -> Result<Digest, VerifyError<E>>
where
    F: FnMut(VerifiedChunk<'_>) -> Result<(), E>,
{
    let input: Input<'_, io::Empty> = Input::At {
        source,
        base: offset,
    };
    run(input, expect, stored, decoder, options, sink).map(|run| run.digest)
}

/// [`verify_stored_reader_parallel`], also reporting how many buffers it allocated.
pub(crate) fn run<R, F, E>(
    input: Input<'_, R>,
    expect: ImageExpectation<'_>,
    stored: &[StoredChunk],
    decoder: &dyn ChunkDecoder,
    options: ParallelOptions,
    mut sink: F,
) -> Result<Run, VerifyError<E>>
where
    R: Read + ?Sized,
    F: FnMut(VerifiedChunk<'_>) -> Result<(), E>,
{
    let verifier = ChunkVerifier::with_storage(expect, stored)?;
    let total = verifier.chunk_count();
    let (reader, positional) = match input {
        Input::Stream(reader) => (Some(reader), None),
        Input::At { source, base } => (None, Some(Positional { source, base })),
    };
    // The longest a chunk can be: the chunk size, or the whole image when it is shorter (a
    // table's content-defined chunks are each at most the chunk size too).
    let chunk_size = usize::try_from(expect.chunk_size)
        .unwrap_or(usize::MAX)
        .min(usize::try_from(expect.size).unwrap_or(usize::MAX))
        .max(1);
    let min_buffer_len = match options.min_buffer_len {
        0 => DEFAULT_MIN_BUFFER_LEN,
        n => n,
    };
    // Whole chunks per buffer: at least one, at most as many as the image has.
    let per_batch = len_u64((min_buffer_len / chunk_size).max(1)).min(total.max(1));
    // per_batch * chunk_size <= max(chunk_size, min_buffer_len), so this cannot overflow; the
    // buffer never exceeds the image either.
    let buffer_len = usize::try_from(per_batch)
        .ok()
        .and_then(|n| n.checked_mul(chunk_size))
        .ok_or(Error::SizeOverflow)?;
    let buffer_len = usize::try_from(expect.size).map_or(buffer_len, |size| buffer_len.min(size));
    let batches = total.div_ceil(per_batch);

    let threads = options.resolved_threads();
    let in_flight = match options.max_in_flight {
        0 => threads.saturating_mul(2),
        n => n,
    };
    let workers = threads
        .min(in_flight)
        .min(usize::try_from(batches).unwrap_or(usize::MAX))
        .max(1);

    let mut driver = Driver {
        verifier: &verifier,
        total,
        per_batch,
        buffer_len,
        in_flight,
        whole: if options.check_whole_image {
            Whole::Here(Sha256::new())
        } else {
            Whole::No
        },
        free: Vec::new(),
        free_decoded: Vec::new(),
        allocated: 0,
        stored_pos: 0,
        pending: VecDeque::new(),
        next_chunk: 0,
        next_seq: 0,
        delivered_seq: 0,
        stop: None,
        failed: false,
    };

    if total == 0 {
        // An empty image: nothing to read or hash.
        return driver.finish(expect.digest, None);
    }

    let (job_tx, job_rx) = mpsc::channel::<Job>();
    let job_rx = Mutex::new(job_rx);
    let cancel = AtomicBool::new(false);
    let (outcome, hashed) = thread::scope(|scope| {
        let (done_tx, done_rx) = mpsc::channel::<Back>();
        let (ready_tx, ready_rx) = mpsc::channel::<()>();
        let mut started = 0usize;
        for n in 0..workers {
            let (verifier, jobs, cancel, done) = (&verifier, &job_rx, &cancel, done_tx.clone());
            let ready = ready_tx.clone();
            let spawned = thread::Builder::new()
                .name(alloc::format!("veriflash-hash-{n}"))
                .stack_size(WORKER_STACK)
                .spawn_scoped(scope, move || {
                    let _ = ready.send(());
                    worker(verifier, decoder, positional, jobs, cancel, &done);
                });
            if spawned.is_err() || spawn_refused() {
                // Fewer workers than asked for still verify everything.
                break;
            }
            // Each worker is running before the next starts and before any buffer is
            // allocated: a new thread maps its own memory (the runtime's signal stack) as it
            // starts, and must not race this thread's allocations for the last free memory.
            let _ = ready_rx.recv();
            started += 1;
        }
        // The whole-image hash, when asked for, runs beside the deliveries (a device's writes)
        // rather than before each of them; without a thread for it, it runs on this one.
        let hasher = if matches!(driver.whole, Whole::Here(_)) && started > 0 {
            let (tx, rx) = mpsc::channel::<(Job, u64)>();
            let (verifier, back) = (&verifier, done_tx.clone());
            let spawned = thread::Builder::new()
                .name("veriflash-hash-whole".into())
                .stack_size(WORKER_STACK)
                .spawn_scoped(scope, move || whole_worker(verifier, &rx, &back));
            spawned.ok().inspect(|_| driver.whole = Whole::Thread(tx))
        } else {
            None
        };
        drop(done_tx);
        // Not one thread could be started (this computer is out of threads, or of memory for
        // their stacks): the calling thread hashes each batch itself — slower, the same checks.
        let hashing = if started == 0 {
            Hashing::Inline(decoder, positional)
        } else {
            Hashing::Workers(&job_tx)
        };
        let outcome = driver.drive(reader, &hashing, &done_rx, &mut sink);
        if outcome.is_err() {
            // Workers skip whatever is still queued; each finishes at most its current batch.
            cancel.store(true, Ordering::Relaxed);
        }
        drop(job_tx);
        // Closing its queue lets the hasher finish what it has and give its digest.
        if matches!(driver.whole, Whole::Thread(_)) {
            driver.whole = Whole::No;
        }
        let hashed = hasher.map(|h| h.join().ok().flatten());
        (outcome, hashed)
    });
    outcome?;
    driver.finish(expect.digest, hashed)
}

/// The whole-image hasher's thread: hashes the delivered chunks of each batch, in the order
/// the batches come (delivery order), and hands each batch's buffers back. Returns the digest,
/// or `None` if a batch did not hold the chunks it claimed (a bug, reported as a mismatch).
fn whole_worker(
    verifier: &ChunkVerifier<'_>,
    jobs: &mpsc::Receiver<(Job, u64)>,
    back: &mpsc::Sender<Back>,
) -> Option<Digest> {
    let mut hasher = Sha256::new();
    let mut consistent = true;
    while let Ok((job, delivered)) = jobs.recv() {
        for bytes in delivered_chunks(verifier, &job, delivered) {
            match bytes {
                Ok((_, bytes)) => hasher.update(bytes),
                Err(_) => consistent = false,
            }
        }
        // The calling thread may have finished: then nobody needs the buffers back.
        let _ = back.send(Back::Hashed(job));
    }
    consistent.then(|| hasher.finalize())
}

/// The first `count` chunks of a checked batch: each one's expectation and its bytes (the
/// stored bytes of a raw chunk, the decoded bytes of a compressed one).
fn delivered_chunks<'j, 'v>(
    verifier: &'j ChunkVerifier<'v>,
    job: &'j Job,
    count: u64,
) -> impl Iterator<Item = Result<(ExpectedChunk<'v>, &'j [u8]), Error>> + 'j {
    let total = verifier.chunk_count();
    let (mut at, mut at_decoded) = (0usize, 0usize);
    (job.first..job.first.saturating_add(count.min(job.count))).map(move |index| {
        let expected = verifier
            .expected_chunk(index)
            .ok_or(Error::UnexpectedChunk { total })?;
        let end = at.saturating_add(expected.stored_len());
        let bytes = if expected.encoding() == ChunkEncoding::Raw {
            job.buffer.get(at..end)
        } else {
            let end_decoded = at_decoded.saturating_add(expected.len());
            let decoded = job.decoded.get(at_decoded..end_decoded);
            at_decoded = end_decoded;
            decoded
        }
        .ok_or(Error::UnexpectedChunk { total })?;
        at = end;
        Ok((expected, bytes))
    })
}

/// A worker: takes batches until the job channel closes, checks every chunk of each, and sends
/// the batch back with the first failure.
fn worker(
    verifier: &ChunkVerifier<'_>,
    decoder: &dyn ChunkDecoder,
    positional: Option<Positional<'_>>,
    jobs: &Mutex<mpsc::Receiver<Job>>,
    cancel: &AtomicBool,
    done: &mpsc::Sender<Back>,
) {
    loop {
        let job = {
            let Ok(jobs) = jobs.lock() else { return };
            match jobs.recv() {
                Ok(job) => job,
                Err(mpsc::RecvError) => return,
            }
        };
        if cancel.load(Ordering::Relaxed) {
            continue;
        }
        if done
            .send(Back::Checked(process(verifier, decoder, positional, job)))
            .is_err()
        {
            return;
        }
    }
}

/// Reads a batch when its input is positional, then checks it.
fn process(
    verifier: &ChunkVerifier<'_>,
    decoder: &dyn ChunkDecoder,
    positional: Option<Positional<'_>>,
    mut job: Job,
) -> Done {
    let loaded = positional.map_or(Ok(()), |p| load(verifier, p, &mut job));
    let (matched, checked) = check_batch(verifier, decoder, &mut job);
    // A bad chunk comes before the point where the read stopped: it is the error.
    let outcome = checked.map_err(Failure::Hash).and(loaded);
    Done {
        job,
        matched,
        outcome,
    }
}

/// Reads a batch's stored bytes at their offset, chunk by chunk in pieces of [`READ_PIECE`],
/// hashing each piece right after it was read (while it is in this core's cache) into its
/// chunk's digest. When the input ends or fails first, the batch is cut to the whole chunks
/// that arrived (they are still checked and delivered, as the calling thread's reads would) and
/// the reason is returned.
fn load(verifier: &ChunkVerifier<'_>, p: Positional<'_>, job: &mut Job) -> Result<(), Failure> {
    let start = p.base.saturating_add(job.at);
    job.hashed.clear();
    let mut filled = 0usize;
    let mut failure = None;
    'chunks: for index in job.first..job.first.saturating_add(job.count) {
        let Some(chunk) = verifier.expected_chunk(index) else {
            break;
        };
        let end = filled.saturating_add(chunk.stored_len()).min(job.len);
        let mut hasher = Sha256::new();
        while filled < end {
            let piece_end = end.min(filled.saturating_add(READ_PIECE));
            let Some(piece) = job.buffer.get_mut(filled..piece_end) else {
                break 'chunks;
            };
            match p
                .source
                .read_at(piece, start.saturating_add(len_u64(filled)))
            {
                Ok(0) => {
                    failure = Some(Failure::Hash(Error::Truncated {
                        offset: job.at.saturating_add(len_u64(filled)),
                    }));
                    break 'chunks;
                }
                Ok(n) => {
                    let n = n.min(piece.len());
                    hasher.update(piece.get(..n).unwrap_or_default());
                    filled = filled.saturating_add(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    failure = Some(Failure::Io(e));
                    break 'chunks;
                }
            }
        }
        job.hashed.push(hasher.finalize());
    }
    match failure {
        None => Ok(()),
        Some(failure) => {
            (job.count, job.len) = whole_chunks_in(verifier, job.first, job.count, filled);
            Err(failure)
        }
    }
}

/// What a worker reads from a positional input at once: a piece is hashed right after it was
/// read, while it is still in the core's L2 cache, and the `pread` calls stay few.
const READ_PIECE: usize = 256 * 1024;

/// Checks each chunk of a batch in order; the first failure ends the check. Returns how many
/// chunks matched before it.
fn check_batch(
    verifier: &ChunkVerifier<'_>,
    decoder: &dyn ChunkDecoder,
    job: &mut Job,
) -> (u64, Result<(), Error>) {
    let mut matched = 0;
    let mut at = (0usize, 0usize);
    for index in job.first..job.first.saturating_add(job.count) {
        match check_one(verifier, decoder, job, index, at) {
            Ok(end) => at = end,
            Err(error) => return (matched, Err(error)),
        }
        matched += 1; // at most job.count
    }
    (matched, Ok(()))
}

/// Checks chunk `index`, whose stored bytes start at `at.0` in the batch's buffer and whose
/// decoded bytes go at `at.1` in its decode buffer; returns where both end. The stored bytes are
/// hashed and compared first; a compressed chunk is decoded only after they matched.
fn check_one(
    verifier: &ChunkVerifier<'_>,
    decoder: &dyn ChunkDecoder,
    job: &mut Job,
    index: u64,
    (at, at_decoded): (usize, usize),
) -> Result<(usize, usize), Error> {
    let expected = verifier
        .expected_chunk(index)
        .ok_or(Error::UnexpectedChunk {
            total: verifier.chunk_count(),
        })?;
    let end = at.saturating_add(expected.stored_len());
    let stored =
        job.buffer
            .get(at..end)
            .filter(|_| end <= job.len)
            .ok_or(Error::WrongChunkLength {
                index,
                expected: len_u64(expected.stored_len()),
                found: len_u64(job.len.saturating_sub(at)),
            })?;
    let hashed = index
        .checked_sub(job.first)
        .and_then(|i| usize::try_from(i).ok())
        .and_then(|i| job.hashed.get(i));
    expected.check_stored_hashed(stored, hashed)?;
    if expected.encoding() == ChunkEncoding::Raw {
        return Ok((end, at_decoded));
    }
    let end_decoded = at_decoded.saturating_add(expected.len());
    let out = job
        .decoded
        .get_mut(at_decoded..end_decoded)
        .ok_or(Error::OutOfMemory {
            bytes: len_u64(end_decoded),
        })?;
    expected.decode_checked(stored, decoder, out)?;
    Ok((end, end_decoded))
}

/// A worker's stack: hashing and decoding keep their state on the heap, so a small stack
/// leaves room to start workers on a computer short of memory (the default is 2 MiB).
const WORKER_STACK: usize = 256 * 1024;

/// Who hashes the batches the calling thread reads.
enum Hashing<'a> {
    /// Worker threads, fed over this channel.
    Workers(&'a mpsc::Sender<Job>),
    /// The calling thread itself, right after reading each batch (no worker could be started).
    Inline(&'a dyn ChunkDecoder, Option<Positional<'a>>),
}

/// The calling thread's state.
struct Driver<'v, 'a, E> {
    verifier: &'v ChunkVerifier<'a>,
    total: u64,
    per_batch: u64,
    buffer_len: usize,
    in_flight: usize,
    whole: Whole,
    /// Buffers ready to be filled again.
    free: Vec<Vec<u8>>,
    /// Decode buffers ready to be used again.
    free_decoded: Vec<Vec<u8>>,
    /// Buffers allocated so far; never more than `in_flight` (decode buffers not counted; they
    /// are as many at most).
    allocated: usize,
    /// Stored bytes read so far (the reader's position in the image's stored bytes).
    stored_pos: u64,
    /// Batches sent and not yet delivered, in reading order; `Some` once hashed.
    pending: VecDeque<Option<Done>>,
    next_chunk: u64,
    next_seq: u64,
    /// Sequence number of `pending.front()`.
    delivered_seq: u64,
    /// A read failure (truncation, I/O), reported once every batch before it is delivered.
    stop: Option<VerifyError<E>>,
    /// Some batch failed: read nothing more, deliver what comes before it.
    failed: bool,
}

impl<E> Driver<'_, '_, E> {
    fn drive<R, F>(
        &mut self,
        mut reader: Option<&mut R>,
        jobs: &Hashing<'_>,
        done: &mpsc::Receiver<Back>,
        sink: &mut F,
    ) -> Result<(), VerifyError<E>>
    where
        R: Read + ?Sized,
        F: FnMut(VerifiedChunk<'_>) -> Result<(), E>,
    {
        loop {
            self.deliver_ready(sink)?;
            let reading = self.stop.is_none() && !self.failed && self.next_chunk < self.total;
            if self.pending.is_empty() && !reading {
                return match self.stop.take() {
                    Some(error) => Err(error),
                    None => Ok(()),
                };
            }
            if reading && (!self.free.is_empty() || self.allocated < self.in_flight) {
                self.read_batch(reader.as_deref_mut(), jobs)?;
                // Pick up whatever finished meanwhile, without waiting.
                while let Ok(back) = done.try_recv() {
                    self.take_back(back)?;
                }
                continue;
            }
            // Every buffer is in flight (or reading is over): wait for a worker.
            let back = done
                .recv()
                .map_err(|_| VerifyError::Io(io::Error::other("hash worker threads stopped")))?;
            self.take_back(back)?;
        }
    }

    /// Fills one buffer with the next batch of whole chunks and sends it to the workers (from
    /// `reader`; without one, the input is positional and the worker reads the batch itself).
    fn read_batch<R: Read + ?Sized>(
        &mut self,
        reader: Option<&mut R>,
        jobs: &Hashing<'_>,
    ) -> Result<(), VerifyError<E>> {
        let first = self.next_chunk;
        let count = self.per_batch.min(self.total.saturating_sub(first));
        let start = self.stored_pos;
        let mut len = 0usize;
        let mut compressed = false;
        for index in first..first.saturating_add(count) {
            let chunk = self
                .verifier
                .expected_chunk(index)
                .ok_or(Error::UnexpectedChunk { total: self.total })?;
            len = len
                .checked_add(chunk.stored_len())
                .ok_or(Error::SizeOverflow)?;
            compressed |= chunk.encoding() != ChunkEncoding::Raw;
        }

        let mut buffer = match self.free.pop() {
            Some(buffer) => buffer,
            None => match alloc_buffer(self.buffer_len) {
                Ok(buffer) => {
                    self.allocated = self.allocated.saturating_add(1);
                    buffer
                }
                // Out of memory with buffers already in flight: go on with those alone (less
                // overlap, the same checks) rather than fail on a computer that is merely tight.
                Err(_) if self.allocated > 0 => {
                    self.in_flight = self.allocated;
                    return Ok(());
                }
                Err(e) => return Err(e.into()),
            },
        };
        let target = buffer.get_mut(..len).ok_or(Error::WrongChunkLength {
            index: first,
            expected: len_u64(len),
            found: len_u64(self.buffer_len),
        })?;
        let (filled, failure) = match reader {
            Some(reader) => fill(reader, target),
            None => (len, None),
        };
        // On a short read, the whole chunks that did arrive are still checked and delivered
        // before the failure is reported, exactly as the serial driver does.
        let (count, len) = match failure {
            None => (count, len),
            Some(failure) => {
                self.stop = Some(match failure {
                    None => VerifyError::Hash(Error::Truncated {
                        offset: start.saturating_add(len_u64(filled)),
                    }),
                    Some(e) => VerifyError::Io(e),
                });
                whole_chunks_in(self.verifier, first, count, filled)
            }
        };
        if count == 0 {
            self.free.push(buffer);
            return Ok(());
        }
        let decoded = if compressed {
            match self.free_decoded.pop() {
                Some(decoded) => decoded,
                None => alloc_buffer(self.buffer_len)?,
            }
        } else {
            Vec::new()
        };
        let job = Job {
            seq: self.next_seq,
            first,
            count,
            buffer,
            len,
            decoded,
            at: start,
            hashed: Vec::new(),
        };
        self.pending.push_back(None);
        self.next_seq = self.next_seq.saturating_add(1);
        self.next_chunk = first.saturating_add(count);
        self.stored_pos = self.stored_pos.saturating_add(len_u64(len));
        match jobs {
            Hashing::Workers(jobs) => jobs
                .send(job)
                .map_err(|_| VerifyError::Io(io::Error::other("hash worker threads stopped"))),
            Hashing::Inline(decoder, positional) => {
                self.place(process(self.verifier, *decoder, *positional, job))
            }
        }
    }

    /// A checked batch goes to its place in reading order; a hashed one's buffers are free.
    fn take_back(&mut self, back: Back) -> Result<(), VerifyError<E>> {
        match back {
            Back::Checked(done) => self.place(done),
            Back::Hashed(job) => {
                self.recycle(job);
                Ok(())
            }
        }
    }

    /// Makes a delivered batch's buffers free for the next batches.
    fn recycle(&mut self, job: Job) {
        self.free.push(job.buffer);
        if !job.decoded.is_empty() {
            self.free_decoded.push(job.decoded);
        }
    }

    /// Files a finished batch at its place in reading order.
    fn place(&mut self, finished: Done) -> Result<(), VerifyError<E>> {
        if finished.outcome.is_err() {
            self.failed = true;
        }
        let slot = finished
            .job
            .seq
            .checked_sub(self.delivered_seq)
            .and_then(|i| usize::try_from(i).ok())
            .and_then(|i| self.pending.get_mut(i))
            .ok_or(Error::UnexpectedChunk { total: self.total })?;
        *slot = Some(finished);
        Ok(())
    }

    /// Hands every batch at the front that is hashed to the sink, in order, chunk by chunk;
    /// the first failed batch ends the run with its (lowest) bad chunk.
    fn deliver_ready<F>(&mut self, sink: &mut F) -> Result<(), VerifyError<E>>
    where
        F: FnMut(VerifiedChunk<'_>) -> Result<(), E>,
    {
        while let Some(Some(_)) = self.pending.front() {
            let Some(Some(Done {
                job,
                matched,
                outcome,
            })) = self.pending.pop_front()
            else {
                break;
            };
            self.delivered_seq = self.delivered_seq.saturating_add(1);
            // The chunks before a bad one are delivered, as the serial driver would have.
            let delivered = matched.min(job.count);
            for chunk in delivered_chunks(self.verifier, &job, delivered) {
                let (expected, bytes) = chunk?;
                if let Whole::Here(whole) = &mut self.whole {
                    whole.update(bytes);
                }
                // The worker checked exactly these stored bytes (and decoded a compressed chunk
                // from them only after they matched); both buffers came back untouched.
                sink(VerifiedChunk::checked_elsewhere(&expected, bytes))
                    .map_err(VerifyError::Sink)?;
            }
            outcome?;
            match &self.whole {
                Whole::Thread(hasher) => {
                    if let Err(mpsc::SendError((job, _))) = hasher.send((job, delivered)) {
                        // The hasher is gone (it cannot be, while this thread holds its
                        // queue): the digest will not match, and the buffers are free.
                        self.whole = Whole::No;
                        self.recycle(job);
                    }
                }
                Whole::No | Whole::Here(_) => self.recycle(job),
            }
        }
        Ok(())
    }

    /// The run's result: the whole-image digest, re-computed here or by the hasher thread
    /// (`hashed`: `Some(None)` when that thread failed) and compared with the signed one, or the
    /// signed one when no re-computation was asked for.
    fn finish(
        self,
        signed: &Digest,
        hashed: Option<Option<Digest>>,
    ) -> Result<Run, VerifyError<E>> {
        let computed = match (self.whole, hashed) {
            (_, Some(from_thread)) => from_thread,
            (Whole::Here(whole), None) => Some(whole.finalize()),
            (Whole::No | Whole::Thread(_), None) => None,
        };
        let checked = hashed.is_some() || computed.is_some();
        let digest = match computed {
            Some(digest) if digest == *signed => digest,
            None if !checked => *signed,
            _ => return Err(VerifyError::Hash(Error::ImageDigestMismatch)),
        };
        Ok(Run {
            digest,
            buffers_allocated: self.allocated,
            buffer_len: self.buffer_len,
        })
    }
}

/// How many of the `count` chunks from `first` have their stored bytes completely in the
/// first `filled` bytes of the batch, and how many bytes those take.
fn whole_chunks_in(
    verifier: &ChunkVerifier<'_>,
    first: u64,
    count: u64,
    filled: usize,
) -> (u64, usize) {
    let mut whole = 0u64;
    let mut len = 0usize;
    for index in first..first.saturating_add(count) {
        let Some(chunk) = verifier.expected_chunk(index) else {
            break;
        };
        let end = len.saturating_add(chunk.stored_len());
        if end > filled {
            break;
        }
        len = end;
        whole = whole.saturating_add(1);
    }
    (whole, len)
}

/// Reads into `buf` until it is full, the input ends, or reading fails. Returns the bytes read
/// and, if the buffer is not full, why: `Some(None)` for the end of the input,
/// `Some(Some(error))` for a read error.
#[allow(clippy::option_option)]
fn fill<R: Read + ?Sized>(reader: &mut R, buf: &mut [u8]) -> (usize, Option<Option<io::Error>>) {
    let mut filled = 0;
    while let Some(rest) = buf.get_mut(filled..).filter(|rest| !rest.is_empty()) {
        match reader.read(rest) {
            Ok(0) => return (filled, Some(None)),
            // `min` guards against a reader claiming more than it was given room for.
            Ok(n) => filled = filled.saturating_add(n.min(rest.len())),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (filled, Some(Some(e))),
        }
    }
    (filled, None)
}

/// Whether a test made this thread's spawns fail: never, outside this crate's own tests.
#[cfg(not(test))]
fn spawn_refused() -> bool {
    false
}
#[cfg(test)]
use tests::spawn_refused;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use crate::digest::digest_slice;

    std::thread_local! {
        /// Set by a test to act as a computer that cannot start another thread.
        static REFUSE_SPAWN: core::cell::Cell<bool> = const { core::cell::Cell::new(false) };
    }

    /// Whether this test made the calling thread's spawns fail.
    pub(super) fn spawn_refused() -> bool {
        REFUSE_SPAWN.with(core::cell::Cell::get)
    }

    #[test]
    fn no_thread_to_spare_still_verifies_on_the_calling_thread() {
        let data = image(50 * 4096 + 100);
        let digests = digest_slice(&data, 4096).unwrap();
        let expect = ImageExpectation {
            size: digests.size,
            chunk_size: 4096,
            digest: &digests.digest,
            chunk_digests: &digests.chunk_digests,
        };
        REFUSE_SPAWN.with(|r| r.set(true));
        let options = ParallelOptions::new().threads(2).min_buffer_len(1);
        let mut seen = Vec::new();
        run(
            Input::Stream(&mut data.as_slice()),
            expect,
            &[],
            &RawOnly,
            options,
            |chunk| {
                seen.extend_from_slice(chunk.bytes());
                Ok::<(), io::Error>(())
            },
        )
        .unwrap();
        assert_eq!(seen, data);
        let mut bad = data.clone();
        bad[20 * 4096 + 5] ^= 1;
        let mut delivered = 0u64;
        let err = run(
            Input::Stream(&mut bad.as_slice()),
            expect,
            &[],
            &RawOnly,
            options,
            |chunk| {
                delivered += 1;
                assert!(chunk.index() < 20);
                Ok::<(), io::Error>(())
            },
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                VerifyError::Hash(Error::ChunkMismatch { index: 20, .. })
            ),
            "{err:?}"
        );
        assert_eq!(delivered, 20, "every chunk before the bad one, none after");
        // A positional input is read by the calling thread then, batch by batch.
        let mut seen_at = Vec::new();
        let input: Input<'_, io::Empty> = Input::At {
            source: &bad,
            base: 0,
        };
        let err = run(input, expect, &[], &RawOnly, options, |chunk| {
            seen_at.extend_from_slice(chunk.bytes());
            Ok::<(), io::Error>(())
        })
        .unwrap_err();
        assert!(matches!(
            err,
            VerifyError::Hash(Error::ChunkMismatch { index: 20, .. })
        ));
        assert_eq!(seen_at, data[..20 * 4096]);
        // The whole-image hash, without a thread for it either, runs on the calling thread.
        let checked = options.check_whole_image(true);
        let run_ok = run(
            Input::Stream(&mut data.as_slice()),
            expect,
            &[],
            &RawOnly,
            checked,
            |_| Ok::<(), io::Error>(()),
        );
        assert_eq!(run_ok.unwrap().digest, digests.digest);
        let wrong = [0u8; 32];
        let lying = ImageExpectation {
            digest: &wrong,
            ..expect
        };
        let err = run(
            Input::Stream(&mut data.as_slice()),
            lying,
            &[],
            &RawOnly,
            checked,
            |_| Ok::<(), io::Error>(()),
        )
        .unwrap_err();
        REFUSE_SPAWN.with(|r| r.set(false));
        assert!(
            matches!(err, VerifyError::Hash(Error::ImageDigestMismatch)),
            "{err:?}"
        );
    }

    #[test]
    fn the_whole_image_hasher_thread_holds_no_more_buffers_than_allowed() {
        // The hasher keeps delivered buffers until it has hashed them: they count against
        // max_in_flight like any other.
        let data = image(100 * 4096 + 1);
        let digests = digest_slice(&data, 4096).unwrap();
        let expect = ImageExpectation {
            size: digests.size,
            chunk_size: 4096,
            digest: &digests.digest,
            chunk_digests: &digests.chunk_digests,
        };
        for in_flight in [1, 2, 5] {
            let options = ParallelOptions::new()
                .threads(2)
                .max_in_flight(in_flight)
                .min_buffer_len(1)
                .check_whole_image(true);
            let run = run(
                Input::Stream(&mut data.as_slice()),
                expect,
                &[],
                &RawOnly,
                options,
                |_| Ok::<(), io::Error>(()),
            )
            .unwrap();
            assert_eq!(run.digest, digests.digest);
            assert!(run.buffers_allocated <= in_flight, "{in_flight}");
        }
    }

    fn image(len: usize) -> Vec<u8> {
        let mut state: u32 = 0x1234_5678;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                state.to_le_bytes()[0]
            })
            .collect()
    }

    #[test]
    fn buffers_allocated_never_exceed_max_in_flight() {
        // 200 chunks of 4 KiB, one chunk per buffer, with a slow sink so that workers run ahead.
        let data = image(200 * 4096 + 17);
        let digests = digest_slice(&data, 4096).unwrap();
        let expect = ImageExpectation {
            size: digests.size,
            chunk_size: 4096,
            digest: &digests.digest,
            chunk_digests: &digests.chunk_digests,
        };
        for (threads, in_flight) in [(1, 1), (1, 2), (2, 2), (2, 3), (4, 8), (8, 3)] {
            let options = ParallelOptions::new()
                .threads(threads)
                .max_in_flight(in_flight)
                .min_buffer_len(1);
            let mut pointers = std::collections::HashSet::new();
            let run = run(
                Input::Stream(&mut data.as_slice()),
                expect,
                &[],
                &RawOnly,
                options,
                |chunk| {
                    pointers.insert(chunk.bytes().as_ptr() as usize);
                    std::thread::yield_now();
                    Ok::<(), io::Error>(())
                },
            )
            .unwrap();
            assert!(run.buffers_allocated <= in_flight, "{threads}/{in_flight}");
            assert!(run.buffers_allocated >= 1);
            assert!(pointers.len() <= in_flight, "{threads}/{in_flight}");
            assert_eq!(run.buffer_len, 4096);
        }
    }

    #[test]
    fn small_chunks_are_grouped_and_buffers_never_exceed_the_image() {
        let data = image(10 * 4096);
        let digests = digest_slice(&data, 4096).unwrap();
        let expect = ImageExpectation {
            size: digests.size,
            chunk_size: 4096,
            digest: &digests.digest,
            chunk_digests: &digests.chunk_digests,
        };
        let options = ParallelOptions::new().threads(2).max_in_flight(2);
        let run = run(
            Input::Stream(&mut data.as_slice()),
            expect,
            &[],
            &RawOnly,
            options,
            |_| Ok::<(), io::Error>(()),
        )
        .unwrap();
        // 256 KiB default grouping, capped at the 40 KiB image: one buffer holds it all.
        assert_eq!(run.buffer_len, 10 * 4096);
        assert_eq!(run.buffers_allocated, 1);
    }
}
