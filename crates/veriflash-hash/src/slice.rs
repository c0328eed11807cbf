//! Parallel verification of an image that is already in memory, with no copy.
//!
//! [`verify_reader_parallel`](crate::verify_reader_parallel) reads each chunk into a buffer on
//! the calling thread, which costs one copy of every byte. A caller that already holds the
//! image (a buffer it downloaded into, a file it mapped itself) can skip that copy: here every
//! worker hashes its chunks where they lie, and the sink receives [`VerifiedChunk`]s borrowing
//! the caller's bytes.

use alloc::vec::Vec;
use std::thread;

use crate::error::{Error, len_u64};
use crate::io::VerifyError;
use crate::parallel::ParallelOptions;
use crate::sha::{Digest, sha256};
use crate::verify::{ChunkVerifier, ImageExpectation, VerifiedChunk};

/// Chunks checked per round, per thread: enough to amortise starting the scoped workers
/// (a few µs) over milliseconds of hashing, small enough that a bad chunk early in a large
/// image stops the run early.
const ROUND_PER_THREAD: u64 = 16;

/// Verifies `data` — the whole image, already in memory — chunk by chunk on
/// [`ParallelOptions::threads`] threads, hashing each chunk in place, and hands the verified
/// chunks to `sink` in order on the calling thread. Stops at the lowest bad chunk; the sink
/// never sees it or anything after it. Uses no buffer of its own.
///
/// Returns the signed whole-image digest, or with
/// [`check_whole_image`](ParallelOptions::check_whole_image) the one computed over `data`.
///
/// # Errors
/// * [`VerifyError::Hash`]: [`Error::Truncated`] when `data` is shorter than the signed size,
///   [`Error::WrongChunkLength`] when it is longer, [`Error::ChunkMismatch`] for the lowest bad
///   chunk, [`Error::ImageDigestMismatch`] (only with `check_whole_image`), and the errors of
///   [`ChunkVerifier::new`] for inconsistent expectations.
/// * [`VerifyError::Sink`] with the sink's error; nothing more is delivered.
pub fn verify_slice_parallel<F, E>(
    data: &[u8],
    expect: ImageExpectation<'_>,
    options: ParallelOptions,
    mut sink: F,
) -> Result<Digest, VerifyError<E>>
where
    F: FnMut(VerifiedChunk<'_>) -> Result<(), E>,
{
    let verifier = ChunkVerifier::new(expect)?;
    let size = len_u64(data.len());
    if size < expect.size {
        return Err(Error::Truncated { offset: size }.into());
    }
    if size > expect.size {
        return Err(Error::WrongChunkLength {
            index: verifier.chunk_count(),
            expected: 0,
            found: size - expect.size,
        }
        .into());
    }
    let threads = u64::try_from(options.resolved_threads())
        .unwrap_or(1)
        .max(1);
    let total = verifier.chunk_count();
    let chunk_bytes = |index: u64| -> Option<(crate::ExpectedChunk<'_>, &[u8])> {
        let expected = verifier.expected_chunk(index)?;
        let start = usize::try_from(expected.offset()).ok()?;
        let bytes = data.get(start..start.checked_add(expected.len())?)?;
        Some((expected, bytes))
    };
    let mut next = 0u64;
    while next < total {
        let end = next
            .saturating_add(threads.saturating_mul(ROUND_PER_THREAD))
            .min(total);
        // Worker w checks chunks next+w, next+w+threads, ...: the lowest failure wins.
        let first_bad: Option<(u64, Error)> = thread::scope(|scope| {
            let handles: Vec<_> = (0..threads)
                .map(|w| {
                    let chunk_bytes = &chunk_bytes;
                    let work = move || {
                        let mut index = next.saturating_add(w);
                        while index < end {
                            let result = match chunk_bytes(index) {
                                Some((expected, bytes)) => expected.verify(bytes).map(drop),
                                None => Err(Error::Truncated { offset: size }),
                            };
                            if let Err(e) = result {
                                return Some((index, e));
                            }
                            index = index.saturating_add(threads);
                        }
                        None
                    };
                    // A computer out of threads checks this worker's chunks on the calling
                    // thread: slower, the same result.
                    thread::Builder::new()
                        .spawn_scoped(scope, work)
                        .map_err(|_| work())
                })
                .collect();
            handles
                .into_iter()
                .filter_map(|h| match h {
                    Ok(h) => h.join().unwrap_or(Some((
                        next,
                        Error::Incomplete {
                            checked: next,
                            total,
                        },
                    ))),
                    Err(done_here) => done_here,
                })
                .min_by_key(|(index, _)| *index)
        });
        let deliver_to = first_bad.as_ref().map_or(end, |(index, _)| *index);
        for index in next..deliver_to {
            if let Some((expected, bytes)) = chunk_bytes(index) {
                sink(VerifiedChunk::checked_elsewhere(&expected, bytes))
                    .map_err(VerifyError::Sink)?;
            }
        }
        if let Some((_, error)) = first_bad {
            return Err(error.into());
        }
        next = end;
    }
    if options.check_whole_image {
        let digest = sha256(data);
        if digest != *expect.digest {
            return Err(Error::ImageDigestMismatch.into());
        }
        return Ok(digest);
    }
    Ok(*expect.digest)
}
