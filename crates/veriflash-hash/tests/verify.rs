//! Chunk digests, the sans-IO `ChunkVerifier`, and the `verify_reader` driver.

#![cfg(feature = "std")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// Test sizes are small: u64 <-> usize casts cannot truncate here.
#![allow(clippy::cast_possible_truncation)]

mod common;

use std::io::{self, Cursor, Read};

use common::{GeneratorReader, InterruptingReader, OneByteReader, expectation, image};
use veriflash_hash::{
    ChunkVerifier, Digest, Error, ImageDigester, ImageExpectation, VerifyError, chunk_count,
    digest_reader, digest_slice, sha256, verify_reader,
};

const CHUNK: u32 = 4096;
/// Three full chunks and a 1000-byte remainder.
const IMAGE_LEN: usize = 3 * 4096 + 1000;

fn sink_ok(_: veriflash_hash::VerifiedChunk<'_>) -> Result<(), io::Error> {
    Ok(())
}

// ---------------------------------------------------------------- chunk digests

#[test]
fn chunk_count_is_ceil_of_size_over_chunk_size() {
    assert_eq!(chunk_count(0, 4), Some(0));
    assert_eq!(chunk_count(1, 4), Some(1));
    assert_eq!(chunk_count(4, 4), Some(1));
    assert_eq!(chunk_count(5, 4), Some(2));
    assert_eq!(chunk_count(u64::MAX, 1), Some(u64::MAX));
    // 2^64 - 1 = (2^32 - 1)(2^32 + 1): exact; one byte less needs the same count, rounded up.
    assert_eq!(chunk_count(u64::MAX, u32::MAX), Some((1 << 32) + 1));
    assert_eq!(chunk_count(u64::MAX - 1, u32::MAX), Some((1 << 32) + 1));
    assert_eq!(chunk_count(10, 0), None);
    assert_eq!(chunk_count(0, 0), None);
}

#[test]
fn chunk_digests_are_sha256_of_each_slice() {
    for len in [0, 1, 4095, 4096, 4097, 8192, IMAGE_LEN] {
        let data = image(len);
        let digests = digest_slice(&data, CHUNK).unwrap();
        assert_eq!(digests.size, len as u64);
        assert_eq!(digests.digest, sha256(&data));
        let expected: Vec<_> = data.chunks(CHUNK as usize).map(sha256).collect();
        assert_eq!(digests.chunk_digests, expected, "len {len}");
        assert_eq!(
            digests.chunk_digests.len() as u64,
            chunk_count(len as u64, CHUNK).unwrap()
        );
    }
}

#[test]
fn digest_slice_rejects_zero_chunk_size() {
    assert_eq!(
        digest_slice(b"data", 0),
        Err(Error::InvalidChunkSize { chunk_size: 0 })
    );
    assert!(matches!(
        digest_reader(Cursor::new(b"data"), 0),
        Err(Error::InvalidChunkSize { chunk_size: 0 })
    ));
    assert!(ImageDigester::new(0).is_err());
}

#[test]
fn image_digester_gives_same_digests_whatever_the_pieces() {
    let data = image(IMAGE_LEN);
    let expected = digest_slice(&data, CHUNK).unwrap();
    for piece in [1, 7, 4095, 4096, 4097, 10_000] {
        let mut digester = ImageDigester::new(CHUNK).unwrap();
        for part in data.chunks(piece) {
            digester.update(part).unwrap();
        }
        digester.update(&[]).unwrap();
        assert_eq!(digester.size(), IMAGE_LEN as u64);
        assert_eq!(digester.finish().unwrap(), expected, "piece {piece}");
    }
}

#[test]
fn digest_reader_gives_same_digests_for_short_and_interrupted_reads() {
    let data = image(IMAGE_LEN);
    let expected = digest_slice(&data, CHUNK).unwrap();
    assert_eq!(digest_reader(Cursor::new(&data), CHUNK).unwrap(), expected);
    assert_eq!(
        digest_reader(OneByteReader(Cursor::new(&data)), CHUNK).unwrap(),
        expected
    );
    assert_eq!(
        digest_reader(InterruptingReader::new(Cursor::new(&data)), CHUNK).unwrap(),
        expected
    );
}

#[test]
fn digest_reader_reports_read_errors() {
    struct Failing;
    impl Read for Failing {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Err(io::Error::new(io::ErrorKind::TimedOut, "modem went away"))
        }
    }
    match digest_reader(Failing, CHUNK) {
        Err(Error::Io { kind, message }) => {
            assert_eq!(kind, io::ErrorKind::TimedOut);
            assert!(message.contains("modem went away"));
        }
        other => panic!("expected Io error, got {other:?}"),
    }
}

// ---------------------------------------------------------------- ChunkVerifier

#[test]
fn verifier_accepts_every_chunk_of_a_good_image() {
    let data = image(IMAGE_LEN);
    let digests = digest_slice(&data, CHUNK).unwrap();
    let mut verifier = ChunkVerifier::new(expectation(&digests, CHUNK)).unwrap();
    assert_eq!(verifier.chunk_count(), 4);

    let mut lens = Vec::new();
    for (i, chunk) in data.chunks(CHUNK as usize).enumerate() {
        lens.push(verifier.next_chunk_len().unwrap());
        let verified = verifier.check(chunk).unwrap();
        assert_eq!(verified.index(), i as u64);
        assert_eq!(verified.offset(), i as u64 * u64::from(CHUNK));
        assert_eq!(verified.bytes(), chunk);
        assert_eq!(verifier.checked(), i as u64 + 1);
    }
    assert_eq!(lens, [4096, 4096, 4096, 1000]);
    assert_eq!(verifier.next_chunk_len(), None);
    assert_eq!(verifier.finish(), Ok(digests.digest));
}

#[test]
fn expected_chunk_describes_any_chunk_in_any_order() {
    let data = image(IMAGE_LEN);
    let digests = digest_slice(&data, CHUNK).unwrap();
    let verifier = ChunkVerifier::new(expectation(&digests, CHUNK)).unwrap();
    for index in (0..4).rev() {
        let expected = verifier.expected_chunk(index).unwrap();
        assert_eq!(expected.index(), index);
        assert_eq!(expected.offset(), index * 4096);
        assert_eq!(expected.digest(), &digests.chunk_digests[index as usize]);
        let start = expected.offset() as usize;
        let chunk = &data[start..start + expected.len()];
        assert_eq!(expected.verify(chunk).unwrap().index(), index);
    }
    assert_eq!(verifier.expected_chunk(3).unwrap().len(), 1000);
    assert!(verifier.expected_chunk(4).is_none());
    assert!(verifier.expected_chunk(u64::MAX).is_none());
}

#[test]
fn verifier_rejects_flipped_byte_with_index_and_offset_and_allows_retry() {
    let data = image(IMAGE_LEN);
    let digests = digest_slice(&data, CHUNK).unwrap();
    let mut verifier = ChunkVerifier::new(expectation(&digests, CHUNK)).unwrap();
    let chunks: Vec<&[u8]> = data.chunks(CHUNK as usize).collect();
    verifier.check(chunks[0]).unwrap();

    let mut bad = chunks[1].to_vec();
    bad[17] ^= 0x80;
    assert_eq!(
        verifier.check(&bad).unwrap_err(),
        Error::ChunkMismatch {
            index: 1,
            offset: 4096
        }
    );
    // The failed check changed nothing: the re-fetched chunk is accepted and the image completes.
    assert_eq!(verifier.checked(), 1);
    for chunk in &chunks[1..] {
        verifier.check(chunk).unwrap();
    }
    assert_eq!(verifier.finish(), Ok(digests.digest));
}

#[test]
fn verifier_rejects_chunk_of_wrong_length() {
    let data = image(IMAGE_LEN);
    let digests = digest_slice(&data, CHUNK).unwrap();
    let mut verifier = ChunkVerifier::new(expectation(&digests, CHUNK)).unwrap();
    assert_eq!(
        verifier.check(&data[..4095]).unwrap_err(),
        Error::WrongChunkLength {
            index: 0,
            expected: 4096,
            found: 4095
        }
    );
    assert_eq!(
        verifier.check(&[]).unwrap_err(),
        Error::WrongChunkLength {
            index: 0,
            expected: 4096,
            found: 0
        }
    );
    for chunk in data.chunks(CHUNK as usize).take(3) {
        verifier.check(chunk).unwrap();
    }
    // The last chunk is the remainder, not a full chunk.
    assert_eq!(
        verifier.check(&[0u8; 4096]).unwrap_err(),
        Error::WrongChunkLength {
            index: 3,
            expected: 1000,
            found: 4096
        }
    );
}

#[test]
fn verifier_rejects_chunk_after_the_last() {
    let data = image(100);
    let digests = digest_slice(&data, CHUNK).unwrap();
    let mut verifier = ChunkVerifier::new(expectation(&digests, CHUNK)).unwrap();
    verifier.check(&data).unwrap();
    assert_eq!(
        verifier.check(&data).unwrap_err(),
        Error::UnexpectedChunk { total: 1 }
    );
    assert_eq!(verifier.finish(), Ok(digests.digest));
}

#[test]
fn verifier_reports_incomplete_image() {
    let data = image(IMAGE_LEN);
    let digests = digest_slice(&data, CHUNK).unwrap();
    let mut verifier = ChunkVerifier::new(expectation(&digests, CHUNK)).unwrap();
    verifier.check(&data[..4096]).unwrap();
    assert_eq!(
        verifier.finish(),
        Err(Error::Incomplete {
            checked: 1,
            total: 4
        })
    );
}

#[test]
fn verifier_rejects_whole_image_digest_that_contradicts_chunk_digests() {
    let data = image(IMAGE_LEN);
    let digests = digest_slice(&data, CHUNK).unwrap();
    let wrong = sha256(b"another image");
    let expect = ImageExpectation {
        digest: &wrong,
        ..expectation(&digests, CHUNK)
    };
    let mut verifier = ChunkVerifier::new(expect).unwrap();
    for chunk in data.chunks(CHUNK as usize) {
        verifier.check(chunk).unwrap();
    }
    assert_eq!(verifier.finish(), Err(Error::ImageDigestMismatch));
}

#[test]
fn verifier_rejects_inconsistent_expectations() {
    let data = image(IMAGE_LEN);
    let digests = digest_slice(&data, CHUNK).unwrap();
    let short = ImageExpectation {
        chunk_digests: &digests.chunk_digests[..3],
        ..expectation(&digests, CHUNK)
    };
    assert_eq!(
        ChunkVerifier::new(short).unwrap_err(),
        Error::DigestCountMismatch {
            expected: 4,
            found: 3
        }
    );
    let bigger_chunks = expectation(&digests, 8192);
    assert_eq!(
        ChunkVerifier::new(bigger_chunks).unwrap_err(),
        Error::DigestCountMismatch {
            expected: 2,
            found: 4
        }
    );
    let zero = expectation(&digests, 0);
    assert_eq!(
        ChunkVerifier::new(zero).unwrap_err(),
        Error::InvalidChunkSize { chunk_size: 0 }
    );
    let huge = ImageExpectation {
        size: u64::MAX,
        ..expectation(&digests, 1)
    };
    assert!(matches!(
        ChunkVerifier::new(huge),
        Err(Error::DigestCountMismatch { .. })
    ));
}

#[test]
fn verifier_accepts_empty_image_with_no_chunks() {
    let digests = digest_slice(&[], CHUNK).unwrap();
    assert!(digests.chunk_digests.is_empty());
    let verifier = ChunkVerifier::new(expectation(&digests, CHUNK)).unwrap();
    assert_eq!(verifier.next_chunk_len(), None);
    assert_eq!(verifier.finish(), Ok(sha256(b"")));

    let mut empty: &[u8] = &[];
    assert_eq!(
        verify_reader(&mut empty, expectation(&digests, CHUNK), sink_ok).unwrap(),
        sha256(b"")
    );
}

// ---------------------------------------------------------------- verify_reader

/// What the sink saw of one chunk: index, offset, bytes.
type Seen = (u64, u64, Vec<u8>);

/// Runs `verify_reader` and records what the sink saw.
fn run<R: Read>(
    reader: &mut R,
    expect: ImageExpectation<'_>,
) -> (Result<Digest, VerifyError<io::Error>>, Vec<Seen>) {
    let mut seen = Vec::new();
    let result = verify_reader(reader, expect, |chunk| {
        seen.push((chunk.index(), chunk.offset(), chunk.bytes().to_vec()));
        Ok(())
    });
    (result, seen)
}

#[test]
fn verify_reader_hands_every_verified_chunk_to_the_sink_in_order() {
    let data = image(IMAGE_LEN);
    let digests = digest_slice(&data, CHUNK).unwrap();
    let (result, seen) = run(&mut Cursor::new(&data), expectation(&digests, CHUNK));
    assert_eq!(result.unwrap(), digests.digest);
    assert_eq!(seen.len(), 4);
    for (i, (index, offset, bytes)) in seen.iter().enumerate() {
        assert_eq!(*index, i as u64);
        assert_eq!(*offset, i as u64 * 4096);
        assert_eq!(bytes.as_slice(), data.chunks(4096).nth(i).unwrap());
    }
}

#[test]
fn verify_reader_leaves_reader_just_after_the_image() {
    let data = image(IMAGE_LEN);
    let digests = digest_slice(&data, CHUNK).unwrap();
    let mut package = data.clone();
    package.extend_from_slice(b"NEXT IMAGE");

    let mut plain = Cursor::new(&package);
    run(&mut plain, expectation(&digests, CHUNK)).0.unwrap();
    assert_eq!(plain.position(), IMAGE_LEN as u64);

    let mut one_byte = OneByteReader(Cursor::new(&package));
    run(&mut one_byte, expectation(&digests, CHUNK)).0.unwrap();
    let mut rest = Vec::new();
    one_byte.read_to_end(&mut rest).unwrap();
    assert_eq!(rest, b"NEXT IMAGE");

    let mut interrupting = InterruptingReader::new(Cursor::new(&package));
    run(&mut interrupting, expectation(&digests, CHUNK))
        .0
        .unwrap();
    let mut rest = Vec::new();
    interrupting.inner.read_to_end(&mut rest).unwrap();
    assert_eq!(rest, b"NEXT IMAGE");
}

#[test]
fn verify_reader_gives_same_results_for_short_and_interrupted_reads() {
    let data = image(IMAGE_LEN);
    let digests = digest_slice(&data, CHUNK).unwrap();
    let expect = expectation(&digests, CHUNK);
    let (plain_result, plain_seen) = run(&mut Cursor::new(&data), expect);
    let (one_result, one_seen) = run(&mut OneByteReader(Cursor::new(&data)), expect);
    let (int_result, int_seen) = run(&mut InterruptingReader::new(Cursor::new(&data)), expect);
    assert_eq!(plain_result.unwrap(), digests.digest);
    assert_eq!(one_result.unwrap(), digests.digest);
    assert_eq!(int_result.unwrap(), digests.digest);
    assert_eq!(one_seen, plain_seen);
    assert_eq!(int_seen, plain_seen);
}

#[test]
fn verify_reader_stops_at_flipped_byte_in_chunk_k() {
    let data = image(IMAGE_LEN);
    let digests = digest_slice(&data, CHUNK).unwrap();
    for k in 0..4u64 {
        for within in [0usize, 1, 999] {
            let pos = k as usize * 4096 + within;
            let mut corrupt = data.clone();
            corrupt[pos] ^= 0x01;
            let mut reader = OneByteReader(Cursor::new(&corrupt));
            let (result, seen) = run(&mut reader, expectation(&digests, CHUNK));
            match result {
                Err(VerifyError::Hash(Error::ChunkMismatch { index, offset })) => {
                    assert_eq!(index, k);
                    assert_eq!(offset, k * 4096);
                }
                other => panic!("flip at {pos}: expected ChunkMismatch, got {other:?}"),
            }
            assert_eq!(seen.len() as u64, k, "sink calls before chunk {k}");
            // Nothing after the bad chunk was read.
            let read = reader.0.position();
            assert_eq!(read, ((k + 1) * 4096).min(IMAGE_LEN as u64));
        }
    }
}

#[test]
fn verify_reader_reports_truncated_input_with_offset() {
    let data = image(IMAGE_LEN);
    let digests = digest_slice(&data, CHUNK).unwrap();
    for available in [0, 1, 4095, 4096, 5000, IMAGE_LEN - 1] {
        let mut short = OneByteReader(&data[..available]);
        let (result, seen) = run(&mut short, expectation(&digests, CHUNK));
        match result {
            Err(VerifyError::Hash(Error::Truncated { offset })) => {
                assert_eq!(offset, available as u64);
            }
            other => panic!("{available} bytes: expected Truncated, got {other:?}"),
        }
        // Only the complete chunks were handed on.
        assert_eq!(seen.len(), available / 4096);
    }
}

#[test]
fn verify_reader_stops_when_the_sink_fails() {
    let stream_len = 20 * 4096;
    let data = image(stream_len);
    let digests = digest_slice(&data, CHUNK).unwrap();
    let mut reader = Cursor::new(&data);
    let mut calls = 0;
    let result = verify_reader(&mut reader, expectation(&digests, CHUNK), |chunk| {
        calls += 1;
        if chunk.index() == 2 {
            Err("flash full")
        } else {
            Ok(())
        }
    });
    assert!(matches!(result, Err(VerifyError::Sink("flash full"))));
    assert_eq!(calls, 3);
    assert_eq!(
        reader.position(),
        3 * 4096,
        "no chunk read after the failure"
    );
}

#[test]
fn verify_reader_reports_io_errors() {
    struct FailAfter(usize);
    impl Read for FailAfter {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.0 == 0 {
                return Err(io::Error::new(io::ErrorKind::ConnectionReset, "reset"));
            }
            let n = buf.len().min(self.0);
            buf[..n].fill(0);
            self.0 -= n;
            Ok(n)
        }
    }
    let digests = digest_slice(&[0u8; 10_000], CHUNK).unwrap();
    let (result, seen) = run(&mut FailAfter(5000), expectation(&digests, CHUNK));
    match result {
        Err(VerifyError::Io(e)) => assert_eq!(e.kind(), io::ErrorKind::ConnectionReset),
        other => panic!("expected Io error, got {other:?}"),
    }
    assert_eq!(seen.len(), 1);
}

#[test]
fn verify_reader_rejects_inconsistent_expectations_before_reading() {
    let data = image(IMAGE_LEN);
    let digests = digest_slice(&data, CHUNK).unwrap();
    let mut reader = Cursor::new(&data);
    let expect = ImageExpectation {
        chunk_digests: &digests.chunk_digests[1..],
        ..expectation(&digests, CHUNK)
    };
    let (result, _) = run(&mut reader, expect);
    assert!(matches!(
        result,
        Err(VerifyError::Hash(Error::DigestCountMismatch {
            expected: 4,
            found: 3
        }))
    ));
    assert_eq!(reader.position(), 0);
}

#[test]
fn verify_reader_reports_whole_digest_mismatch_after_all_chunks() {
    let data = image(IMAGE_LEN);
    let digests = digest_slice(&data, CHUNK).unwrap();
    let wrong = [0u8; 32];
    let expect = ImageExpectation {
        digest: &wrong,
        ..expectation(&digests, CHUNK)
    };
    let (result, seen) = run(&mut Cursor::new(&data), expect);
    assert!(matches!(
        result,
        Err(VerifyError::Hash(Error::ImageDigestMismatch))
    ));
    assert_eq!(seen.len(), 4);
}

/// 256 MiB streamed from a generator (never held in memory) in 1 MiB chunks: every chunk reaches
/// the sink from the same buffer, so memory is one chunk whatever the image size.
#[test]
fn verifies_256_mib_stream_through_one_reused_chunk_buffer() {
    const SIZE: u64 = 256 * 1024 * 1024;
    const CHUNK_1M: u32 = 1024 * 1024;
    let digests = digest_reader(GeneratorReader::new(SIZE), CHUNK_1M).unwrap();
    assert_eq!(digests.size, SIZE);
    assert_eq!(digests.chunk_digests.len(), 256);

    // The generator is longer than the image: exactly SIZE bytes must be consumed.
    let mut reader = GeneratorReader::new(SIZE + 12_345);
    let mut buffer_addr = None;
    let mut chunks = 0u64;
    let digest = verify_reader(&mut reader, expectation(&digests, CHUNK_1M), |chunk| {
        assert_eq!(chunk.bytes().len(), CHUNK_1M as usize);
        let addr = chunk.bytes().as_ptr() as usize;
        assert_eq!(
            *buffer_addr.get_or_insert(addr),
            addr,
            "chunk buffer reallocated"
        );
        chunks += 1;
        Ok::<(), io::Error>(())
    })
    .unwrap();
    assert_eq!(digest, digests.digest);
    assert_eq!(chunks, 256);
    assert_eq!(reader.position(), SIZE);
}

#[test]
fn errors_display_their_context() {
    let cases = [
        (
            Error::ChunkMismatch {
                index: 7,
                offset: 28_672,
            },
            "28672",
        ),
        (Error::ImageDigestMismatch, "whole-image"),
        (Error::Truncated { offset: 99 }, "99"),
        (
            Error::WrongChunkLength {
                index: 1,
                expected: 4096,
                found: 12,
            },
            "12 bytes",
        ),
        (Error::UnexpectedChunk { total: 3 }, "3 chunks"),
        (
            Error::DigestCountMismatch {
                expected: 4,
                found: 3,
            },
            "4 chunk digests",
        ),
        (Error::InvalidChunkSize { chunk_size: 0 }, "chunk size 0"),
        (
            Error::Incomplete {
                checked: 1,
                total: 4,
            },
            "1 of 4",
        ),
        (Error::SizeOverflow, "64 bits"),
        (Error::OutOfMemory { bytes: 5 }, "5 bytes"),
    ];
    for (error, needle) in cases {
        let text = error.to_string();
        assert!(text.contains(needle), "{text:?} lacks {needle:?}");
    }
    let wrapped: VerifyError<io::Error> = VerifyError::Hash(Error::ImageDigestMismatch);
    assert!(std::error::Error::source(&wrapped).is_some());
    assert!(wrapped.to_string().contains("whole-image"));
}
