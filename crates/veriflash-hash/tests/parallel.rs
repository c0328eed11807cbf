//! The parallel driver gives exactly the serial driver's results: same chunks to the sink, in the
//! same order, same errors (lowest bad chunk, truncation), and the reader left at the same place.

#![cfg(feature = "std")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// Test sizes are small: u64 <-> usize casts cannot truncate here.
#![allow(clippy::cast_possible_truncation)]

mod common;

use std::io::{self, Cursor, Read};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{InterruptingReader, OneByteReader, expectation, image};
use proptest::prelude::*;
use veriflash_hash::{
    ChunkDecoder, DecodeError, Digest, Error, ExpectedChunk, ImageExpectation, ParallelOptions,
    ReadAt, VerifiedChunk, VerifyError, digest_slice, verify_reader, verify_reader_parallel,
    verify_stored_at_parallel,
};

const CHUNK: u32 = 4096;

/// Every chunk the sink saw: (index, offset, bytes).
type Seen = Vec<(u64, u64, Vec<u8>)>;

fn serial<R: Read>(mut reader: R, expect: ImageExpectation<'_>) -> (Result<Digest, String>, Seen) {
    let mut seen = Vec::new();
    let result = verify_reader(&mut reader, expect, |c: VerifiedChunk<'_>| {
        seen.push((c.index(), c.offset(), c.bytes().to_vec()));
        Ok::<(), io::Error>(())
    });
    (result.map_err(|e| format!("{e:?}")), seen)
}

fn parallel<R: Read>(
    mut reader: R,
    expect: ImageExpectation<'_>,
    options: ParallelOptions,
) -> (Result<Digest, String>, Seen) {
    let mut seen = Vec::new();
    let result = verify_reader_parallel(&mut reader, expect, options, |c| {
        seen.push((c.index(), c.offset(), c.bytes().to_vec()));
        Ok::<(), io::Error>(())
    });
    (result.map_err(|e| format!("{e:?}")), seen)
}

/// The decoder of raw images: never called.
struct RawOnly;

impl ChunkDecoder for RawOnly {
    fn decode(&self, _: &ExpectedChunk<'_>, _: &[u8], _: &mut [u8]) -> Result<usize, DecodeError> {
        Err(DecodeError::UnsupportedEncoding)
    }
}

/// The workers read the image themselves from `source`, where it starts at `offset`.
fn positional(
    source: &dyn ReadAt,
    offset: u64,
    expect: ImageExpectation<'_>,
    options: ParallelOptions,
) -> (Result<Digest, String>, Seen) {
    let mut seen = Vec::new();
    let result = verify_stored_at_parallel(source, offset, expect, &[], &RawOnly, options, |c| {
        seen.push((c.index(), c.offset(), c.bytes().to_vec()));
        Ok::<(), io::Error>(())
    });
    (result.map_err(|e| format!("{e:?}")), seen)
}

fn opts(threads: usize, in_flight: usize, min_buffer: usize) -> ParallelOptions {
    ParallelOptions::new()
        .threads(threads)
        .max_in_flight(in_flight)
        .min_buffer_len(min_buffer)
        .check_whole_image(true)
}

#[test]
fn verifies_image_and_leaves_reader_after_it() {
    let data = image(37 * 4096 + 123);
    let digests = digest_slice(&data, CHUNK).unwrap();
    for options in [
        opts(1, 1, 1),
        opts(2, 4, 1),
        opts(0, 0, 0),
        opts(3, 2, 3 * 4096),
    ] {
        for whole in [false, true] {
            let mut input = Cursor::new([data.as_slice(), b"NEXT"].concat());
            let mut out = Vec::new();
            let digest = verify_reader_parallel(
                &mut input,
                expectation(&digests, CHUNK),
                options.check_whole_image(whole),
                |c| {
                    out.extend_from_slice(c.bytes());
                    Ok::<(), io::Error>(())
                },
            )
            .unwrap();
            assert_eq!(digest, digests.digest);
            assert_eq!(out, data);
            assert_eq!(input.position(), data.len() as u64, "{options:?}");
        }
    }
}

#[test]
fn empty_image_reads_nothing() {
    let digests = digest_slice(&[], CHUNK).unwrap();
    let mut input: &[u8] = b"rest";
    let digest = verify_reader_parallel(
        &mut input,
        expectation(&digests, CHUNK),
        opts(2, 2, 0),
        |_| -> Result<(), io::Error> { panic!("no chunk in an empty image") },
    )
    .unwrap();
    assert_eq!(digest, digests.digest);
    assert_eq!(input, b"rest");
}

#[test]
fn lowest_bad_chunk_is_reported_when_workers_finish_out_of_order() {
    let data = image(64 * 4096);
    let digests = digest_slice(&data, CHUNK).unwrap();
    let mut corrupt = data.clone();
    corrupt[9 * 4096 + 5] ^= 1; // chunk 9
    corrupt[10 * 4096] ^= 1; // chunk 10
    corrupt[40 * 4096 + 100] ^= 1; // chunk 40
    for options in [
        opts(1, 1, 1),
        opts(2, 2, 1),
        opts(4, 16, 1),
        opts(2, 8, 3 * 4096),
    ] {
        // A sink that is slow at first lets later chunks finish before earlier ones are
        // delivered.
        let mut seen = Vec::new();
        let err = verify_reader_parallel(
            &mut corrupt.as_slice(),
            expectation(&digests, CHUNK),
            options,
            |c| {
                if c.index() < 3 {
                    std::thread::sleep(Duration::from_millis(5));
                }
                seen.push(c.index());
                Ok::<(), io::Error>(())
            },
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                VerifyError::Hash(Error::ChunkMismatch {
                    index: 9,
                    offset: 36_864
                })
            ),
            "{options:?}: {err:?}"
        );
        assert_eq!(seen, (0..9).collect::<Vec<_>>(), "{options:?}");
    }
}

#[test]
fn sink_error_stops_everything() {
    let data = image(50 * 4096);
    let digests = digest_slice(&data, CHUNK).unwrap();
    for options in [opts(1, 1, 1), opts(2, 4, 1), opts(2, 4, 0)] {
        let calls = AtomicUsize::new(0);
        let err = verify_reader_parallel(
            &mut data.as_slice(),
            expectation(&digests, CHUNK),
            options,
            |c| {
                calls.fetch_add(1, Ordering::Relaxed);
                if c.index() == 7 {
                    Err("device full")
                } else {
                    Ok(())
                }
            },
        )
        .unwrap_err();
        assert!(matches!(err, VerifyError::Sink("device full")), "{err:?}");
        assert_eq!(calls.load(Ordering::Relaxed), 8, "{options:?}");
    }
}

#[test]
fn truncated_input_is_reported_after_every_complete_chunk() {
    let data = image(20 * 4096);
    let digests = digest_slice(&data, CHUNK).unwrap();
    for cut in [0, 1, 4095, 4096, 5 * 4096 + 7, 20 * 4096 - 1] {
        for options in [opts(1, 1, 1), opts(2, 3, 1), opts(2, 2, 0)] {
            let (s_result, s_seen) = serial(&data[..cut], expectation(&digests, CHUNK));
            let (p_result, p_seen) = parallel(&data[..cut], expectation(&digests, CHUNK), options);
            assert_eq!(
                p_result,
                Err(format!(
                    "{:?}",
                    VerifyError::<io::Error>::Hash(Error::Truncated { offset: cut as u64 })
                ))
            );
            assert_eq!(p_result, s_result, "cut {cut} {options:?}");
            assert_eq!(p_seen, s_seen, "cut {cut} {options:?}");
        }
    }
}

#[test]
fn bad_chunk_before_truncation_wins() {
    let data = image(20 * 4096);
    let digests = digest_slice(&data, CHUNK).unwrap();
    let mut corrupt = data[..12 * 4096 + 9].to_vec();
    corrupt[3 * 4096] ^= 0x40;
    let (p, _) = parallel(
        corrupt.as_slice(),
        expectation(&digests, CHUNK),
        opts(2, 4, 0),
    );
    let (s, _) = serial(corrupt.as_slice(), expectation(&digests, CHUNK));
    assert_eq!(p, s);
    assert!(p.unwrap_err().contains("index: 3"));
}

#[test]
fn read_error_is_reported_after_earlier_chunks() {
    struct FailAfter<'a>(&'a [u8]);
    impl Read for FailAfter<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.0.is_empty() {
                return Err(io::Error::other("cable pulled"));
            }
            self.0.read(buf)
        }
    }
    let data = image(10 * 4096);
    let digests = digest_slice(&data, CHUNK).unwrap();
    let mut seen = 0;
    let err = verify_reader_parallel(
        &mut FailAfter(&data[..4 * 4096 + 10]),
        expectation(&digests, CHUNK),
        opts(2, 4, 0),
        |_| {
            seen += 1;
            Ok::<(), io::Error>(())
        },
    )
    .unwrap_err();
    assert!(
        matches!(err, VerifyError::Io(ref e) if e.to_string() == "cable pulled"),
        "{err:?}"
    );
    assert_eq!(seen, 4);
}

#[test]
fn whole_image_mismatch_is_caught_only_when_asked() {
    let data = image(5 * 4096);
    let digests = digest_slice(&data, CHUNK).unwrap();
    let wrong = [0u8; 32];
    let expect = ImageExpectation {
        digest: &wrong,
        ..expectation(&digests, CHUNK)
    };
    let (checked, _) = parallel(data.as_slice(), expect, opts(2, 2, 0));
    assert_eq!(
        checked,
        Err(format!(
            "{:?}",
            VerifyError::<io::Error>::Hash(Error::ImageDigestMismatch)
        ))
    );
    let (unchecked, seen) = parallel(
        data.as_slice(),
        expect,
        opts(2, 2, 0).check_whole_image(false),
    );
    assert_eq!(unchecked, Ok(wrong));
    assert_eq!(seen.len(), 5);
}

#[test]
fn inconsistent_expectations_are_refused_before_reading() {
    let data = image(3 * 4096);
    let digests = digest_slice(&data, CHUNK).unwrap();
    let expect = ImageExpectation {
        chunk_digests: &digests.chunk_digests[..2],
        ..expectation(&digests, CHUNK)
    };
    let mut input = data.as_slice();
    let (result, _) = parallel(&mut input, expect, opts(2, 2, 0));
    assert!(result.unwrap_err().contains("DigestCountMismatch"));
    assert_eq!(input.len(), data.len());
    let zero = ImageExpectation {
        chunk_size: 0,
        ..expectation(&digests, CHUNK)
    };
    let (result, _) = parallel(data.as_slice(), zero, opts(2, 2, 0));
    assert!(result.unwrap_err().contains("InvalidChunkSize"));
}

#[test]
fn short_and_interrupted_reads_are_handled() {
    let data = image(9 * 4096 + 1);
    let digests = digest_slice(&data, CHUNK).unwrap();
    let (a, seen_a) = parallel(
        InterruptingReader::new(Cursor::new(&data)),
        expectation(&digests, CHUNK),
        opts(2, 3, 1),
    );
    let (b, seen_b) = parallel(
        OneByteReader(Cursor::new(&data)),
        expectation(&digests, CHUNK),
        opts(2, 3, 0),
    );
    assert_eq!(a, Ok(digests.digest));
    assert_eq!(b, Ok(digests.digest));
    assert_eq!(seen_a, seen_b);
    assert_eq!(seen_a.len(), 10);
}

fn case() -> impl Strategy<Value = (Vec<u8>, u32, usize, usize, usize, Vec<usize>, Option<usize>)> {
    (
        prop::collection::vec(any::<u8>(), 0..6000),
        1u32..900,
        0usize..5,
        0usize..7,
        prop_oneof![Just(0usize), 1usize..3000],
        prop::collection::vec(any::<usize>(), 0..3),
        prop::option::of(any::<usize>()),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn parallel_matches_serial((data, chunk_size, threads, in_flight, min_buffer, flips, cut) in case()) {
        let digests = digest_slice(&data, chunk_size).unwrap();
        let mut input = data.clone();
        for flip in flips {
            if !input.is_empty() {
                let at = flip % input.len();
                input[at] ^= 0x01;
            }
        }
        if let Some(cut) = cut.filter(|_| !input.is_empty()) {
            input.truncate(cut % input.len());
        }
        let options = ParallelOptions::new()
            .threads(threads)
            .max_in_flight(in_flight)
            .min_buffer_len(min_buffer)
            .check_whole_image(true);
        let (s, s_seen) = serial(input.as_slice(), expectation(&digests, chunk_size));
        let (p, p_seen) = parallel(input.as_slice(), expectation(&digests, chunk_size), options);
        prop_assert_eq!(&p, &s);
        prop_assert_eq!(&p_seen, &s_seen);
        // Read by the workers at offsets, the image behind other bytes: the same again.
        let mut file = b"prefix!".to_vec();
        file.extend_from_slice(&input);
        let (a, a_seen) = positional(&file, 7, expectation(&digests, chunk_size), options);
        prop_assert_eq!(a, s);
        prop_assert_eq!(a_seen, s_seen);
    }
}

/// A file whose reads fail from `fail_at` on.
struct FailingAt {
    data: Vec<u8>,
    fail_at: u64,
}

impl ReadAt for FailingAt {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        if offset + buf.len() as u64 > self.fail_at {
            return Err(io::Error::other("medium error"));
        }
        self.data.read_at(buf, offset)
    }
}

#[test]
fn positional_read_error_is_reported_after_every_earlier_chunk() {
    let data = image(16 * 4096);
    let digests = digest_slice(&data, CHUNK).unwrap();
    let source = FailingAt {
        data: data.clone(),
        fail_at: 9 * 4096 + 10,
    };
    for threads in [0, 1, 3] {
        let (result, seen) = positional(
            &source,
            0,
            expectation(&digests, CHUNK),
            // One chunk per read: the failing read is chunk 9's.
            opts(threads, 4, CHUNK as usize),
        );
        assert!(result.unwrap_err().contains("medium error"));
        let indexes: Vec<u64> = seen.iter().map(|(i, _, _)| *i).collect();
        assert_eq!(indexes, (0..9).collect::<Vec<_>>(), "threads {threads}");
    }
}

#[test]
fn positional_reads_of_a_real_file_stop_at_the_image_end() {
    let data = image(50 * 4096 + 77);
    let digests = digest_slice(&data, CHUNK).unwrap();
    let dir = std::env::temp_dir().join(format!("veriflash-hash-at-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("package");
    // Header bytes before the image and another image after it, as in a package.
    let mut bytes = vec![0xAA; 100];
    bytes.extend_from_slice(&data);
    bytes.extend_from_slice(&[0x55; 5000]);
    std::fs::write(&path, &bytes).unwrap();
    let file = std::fs::File::open(&path).unwrap();
    let (result, seen) = positional(&file, 100, expectation(&digests, CHUNK), opts(2, 4, 0));
    assert_eq!(result, Ok(digests.digest));
    let delivered: Vec<u8> = seen.iter().flat_map(|(_, _, b)| b.clone()).collect();
    assert_eq!(delivered, data);
    // The same image cut short by the end of the file: every whole chunk, then where it ended.
    std::fs::write(&path, &bytes[..100 + 20 * 4096 + 5]).unwrap();
    let file = std::fs::File::open(&path).unwrap();
    let (result, seen) = positional(&file, 100, expectation(&digests, CHUNK), opts(2, 4, 0));
    assert!(result.unwrap_err().contains("Truncated { offset: 81925 }"));
    assert_eq!(seen.len(), 20);
    std::fs::remove_dir_all(&dir).unwrap();
}

mod slice {
    use super::*;
    use veriflash_hash::verify_slice_parallel;

    fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut state = seed | 1;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state.to_le_bytes()[0]
            })
            .collect()
    }

    #[test]
    fn slice_path_delivers_every_chunk_in_order_from_the_callers_bytes() {
        let data = noise(1_000_003, 7);
        let digests = digest_slice(&data, 4096).unwrap();
        for threads in [1, 2, 3] {
            let expect = ImageExpectation {
                size: digests.size,
                chunk_size: 4096,
                digest: &digests.digest,
                chunk_digests: &digests.chunk_digests,
            };
            let mut next = 0u64;
            let digest = verify_slice_parallel(
                &data,
                expect,
                ParallelOptions::new()
                    .threads(threads)
                    .check_whole_image(true),
                |chunk| {
                    assert_eq!(chunk.index(), next);
                    let start = usize::try_from(chunk.offset()).unwrap();
                    // Borrowed in place: the very bytes of the caller's buffer, no copy.
                    assert!(std::ptr::eq(chunk.bytes().as_ptr(), data[start..].as_ptr()));
                    next += 1;
                    Ok::<(), ()>(())
                },
            )
            .unwrap();
            assert_eq!(digest, digests.digest);
            assert_eq!(next, digests.chunk_digests.len() as u64);
        }
    }

    #[test]
    fn slice_path_reports_the_lowest_bad_chunk_and_delivers_nothing_after_it() {
        let mut data = noise(300_000, 9);
        let digests = digest_slice(&data, 4096).unwrap();
        data[5 * 4096 + 1] ^= 1;
        data[60 * 4096] ^= 1;
        let expect = ImageExpectation {
            size: digests.size,
            chunk_size: 4096,
            digest: &digests.digest,
            chunk_digests: &digests.chunk_digests,
        };
        let mut delivered = 0;
        let err = verify_slice_parallel(&data, expect, ParallelOptions::new().threads(2), |_| {
            delivered += 1;
            Ok::<(), ()>(())
        })
        .unwrap_err();
        assert!(matches!(
            err,
            VerifyError::Hash(Error::ChunkMismatch { index: 5, .. })
        ));
        assert_eq!(delivered, 5);
        // Too short and too long are refused before any hashing.
        let short = verify_slice_parallel(&data[1..], expect, ParallelOptions::new(), |_| {
            Ok::<(), ()>(())
        });
        assert!(matches!(
            short,
            Err(VerifyError::Hash(Error::Truncated { .. }))
        ));
        let mut long = data.clone();
        long.push(0);
        let long =
            verify_slice_parallel(&long, expect, ParallelOptions::new(), |_| Ok::<(), ()>(()));
        assert!(matches!(
            long,
            Err(VerifyError::Hash(Error::WrongChunkLength { .. }))
        ));
    }
}
