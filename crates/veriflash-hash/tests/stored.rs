//! Images whose chunks are stored encoded: the stored bytes are hashed and compared before the
//! decoder runs, the decoder writes into a buffer of exactly the signed length, and a chunk that
//! decodes to another length stops the run. The decoder here is a toy run-length code (one
//! stored byte `b` stands for a whole chunk of `b`), so these tests need no codec.

#![cfg(feature = "std")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation
)]

use std::io;
use std::sync::Mutex;

use veriflash_hash::{
    ChunkDecoder, ChunkEncoding, DecodeError, Error, ExpectedChunk, ImageExpectation,
    ParallelOptions, StoredChunk, VerifyError, sha256, verify_stored_reader_parallel,
};

const CHUNK: usize = 4096;

/// `[b]` decodes to the whole chunk filled with `b`; `[b, n_hi, n_lo]` to `n` bytes of `b`
/// (for wrong lengths). Records (index, output length) of every call.
#[derive(Default)]
struct Toy {
    calls: Mutex<Vec<(u64, usize)>>,
}

impl ChunkDecoder for Toy {
    fn decode(
        &self,
        chunk: &ExpectedChunk<'_>,
        stored: &[u8],
        out: &mut [u8],
    ) -> Result<usize, DecodeError> {
        self.calls.lock().unwrap().push((chunk.index(), out.len()));
        let n = match stored {
            [_] => out.len(),
            [_, hi, lo] => usize::from(*hi) << 8 | usize::from(*lo),
            _ => {
                return Err(DecodeError::Invalid {
                    reason: "toy".into(),
                });
            }
        };
        let Some(target) = out.get_mut(..n) else {
            return Err(DecodeError::OutputOverflow);
        };
        target.fill(stored[0]);
        Ok(n)
    }
}

/// Eight chunks: even ones stored as one toy byte, odd ones raw.
fn image() -> (Vec<u8>, Vec<u8>, Vec<StoredChunk>) {
    let mut image = Vec::new();
    let mut stored = Vec::new();
    let mut table = Vec::new();
    for i in 0..8u8 {
        if i % 2 == 0 {
            image.extend(std::iter::repeat_n(i, CHUNK));
            stored.push(i);
            table.push(StoredChunk {
                encoding: ChunkEncoding::Zstd,
                stored_len: 1,
                len: CHUNK as u32,
            });
        } else {
            let raw: Vec<u8> = (0..CHUNK).map(|j| (j as u8) ^ i).collect();
            image.extend_from_slice(&raw);
            stored.extend_from_slice(&raw);
            table.push(StoredChunk {
                encoding: ChunkEncoding::Raw,
                stored_len: CHUNK as u32,
                len: CHUNK as u32,
            });
        }
    }
    (image, stored, table)
}

fn chunk_digests(stored: &[u8], table: &[StoredChunk]) -> Vec<[u8; 32]> {
    let mut at = 0;
    table
        .iter()
        .map(|c| {
            let end = at + c.stored_len as usize;
            let d = sha256(&stored[at..end]);
            at = end;
            d
        })
        .collect()
}

fn run(
    stored: &[u8],
    table: &[StoredChunk],
    digests: &[[u8; 32]],
    whole: &[u8; 32],
    toy: &Toy,
    threads: usize,
) -> (Result<[u8; 32], VerifyError<io::Error>>, Vec<u8>) {
    let expect = ImageExpectation {
        size: (table.len() * CHUNK) as u64,
        chunk_size: CHUNK as u32,
        digest: whole,
        chunk_digests: digests,
    };
    let mut out = Vec::new();
    let options = ParallelOptions::new()
        .threads(threads)
        .min_buffer_len(3 * CHUNK)
        .check_whole_image(true);
    let result =
        verify_stored_reader_parallel(&mut &stored[..], expect, table, toy, options, |chunk| {
            assert_eq!(chunk.offset(), out.len() as u64);
            out.extend_from_slice(chunk.bytes());
            Ok::<(), io::Error>(())
        });
    (result, out)
}

#[test]
fn mixed_stored_chunks_are_delivered_decoded_in_order() {
    let (image, stored, table) = image();
    let digests = chunk_digests(&stored, &table);
    let whole = sha256(&image);
    for threads in [1, 2, 4] {
        let toy = Toy::default();
        let (result, out) = run(&stored, &table, &digests, &whole, &toy, threads);
        assert_eq!(result.unwrap(), whole);
        assert_eq!(out, image);
        let mut calls = toy.calls.lock().unwrap().clone();
        calls.sort_unstable();
        assert_eq!(calls, vec![(0, CHUNK), (2, CHUNK), (4, CHUNK), (6, CHUNK)]);
    }
}

#[test]
fn an_altered_stored_chunk_never_reaches_the_decoder() {
    let (image, mut stored, table) = image();
    let digests = chunk_digests(&stored, &table);
    // Chunk 4 is stored as one byte, right after chunks 0..=3 (1 + 4096 + 1 + 4096 bytes).
    let at = 1 + CHUNK + 1 + CHUNK;
    stored[at] ^= 0xFF;
    let toy = Toy::default();
    let (result, out) = run(&stored, &table, &digests, &sha256(&image), &toy, 2);
    assert!(matches!(
        result,
        Err(VerifyError::Hash(Error::ChunkMismatch { index: 4, .. }))
    ));
    assert_eq!(out, image[..4 * CHUNK]);
    assert!(toy.calls.lock().unwrap().iter().all(|(i, _)| *i != 4));
}

#[test]
fn a_chunk_decoding_to_another_length_stops_the_run() {
    let (image, mut stored, mut table) = image();
    // Chunk 2 decodes to 100 bytes instead of 4096, then (second run) to 5000.
    for (n, found) in [(100usize, Some(100u64)), (5000, None)] {
        let at = 1 + CHUNK;
        let (mut s, mut t) = (stored.clone(), table.clone());
        s.splice(at..=at, [2u8, (n >> 8) as u8, n as u8]);
        t[2].stored_len = 3;
        let digests = chunk_digests(&s, &t);
        let toy = Toy::default();
        let (result, out) = run(&s, &t, &digests, &sha256(&image), &toy, 2);
        match result {
            Err(VerifyError::Hash(Error::DecompressedLengthMismatch {
                index: 2,
                expected,
                found: got,
                ..
            })) => {
                assert_eq!(expected, CHUNK as u64);
                assert_eq!(got, found);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(out, image[..2 * CHUNK]);
        assert!(
            toy.calls
                .lock()
                .unwrap()
                .iter()
                .all(|(_, len)| *len == CHUNK)
        );
    }
    // A stored length longer than the chunk is refused before anything is read.
    table[1].stored_len = CHUNK as u32 + 1;
    stored.clear();
    let digests = chunk_digests(&[0u8; 9 * CHUNK], &table);
    let toy = Toy::default();
    let (result, _) = run(&stored, &table, &digests, &[0; 32], &toy, 1);
    assert!(matches!(
        result,
        Err(VerifyError::Hash(Error::InvalidStoredChunk { index: 1 }))
    ));
}

#[test]
fn verify_decoded_checks_the_digest_first_and_verify_refuses_encoded_chunks() {
    let (_, stored, table) = image();
    let digests = chunk_digests(&stored, &table);
    let whole = [0u8; 32];
    let expect = ImageExpectation {
        size: (8 * CHUNK) as u64,
        chunk_size: CHUNK as u32,
        digest: &whole,
        chunk_digests: &digests,
    };
    let verifier = veriflash_hash::ChunkVerifier::with_storage(expect, &table).unwrap();
    let chunk = verifier.expected_chunk(0).unwrap();
    assert_eq!(chunk.stored_len(), 1);
    assert!(matches!(
        chunk.verify(&[0]),
        Err(Error::DecodeFailed { index: 0, .. })
    ));
    let toy = Toy::default();
    let mut out = vec![0xAAu8; CHUNK];
    assert!(matches!(
        chunk.verify_decoded(&[9], &toy, &mut out),
        Err(Error::ChunkMismatch { index: 0, .. })
    ));
    assert!(toy.calls.lock().unwrap().is_empty());
    let verified = chunk.verify_decoded(&[0], &toy, &mut out).unwrap();
    assert_eq!(verified.bytes(), &[0u8; CHUNK][..]);
}

#[test]
fn owned_checks_keep_the_verified_buffer_and_hand_back_the_other() {
    let (image, stored, table) = image();
    let digests = chunk_digests(&stored, &table);
    let whole = [0u8; 32];
    let expect = ImageExpectation {
        size: (8 * CHUNK) as u64,
        chunk_size: CHUNK as u32,
        digest: &whole,
        chunk_digests: &digests,
    };
    let verifier = veriflash_hash::ChunkVerifier::with_storage(expect, &table).unwrap();
    let toy = Toy::default();
    // Encoded: the token owns the decoded bytes (cut to the chunk), the stored ones come back.
    let encoded = verifier.expected_chunk(2).unwrap();
    let (chunk, spare) = encoded
        .verify_decoded_owned(vec![2], &toy, vec![0xAA; CHUNK + 10])
        .unwrap();
    assert_eq!(spare, vec![2]);
    let verified = chunk.as_verified();
    assert_eq!((verified.index(), verified.offset()), (2, 2 * CHUNK as u64));
    assert_eq!(verified.bytes(), &image[2 * CHUNK..3 * CHUNK]);
    assert_eq!(chunk.into_buffer().len(), CHUNK);
    // Raw: the token owns the stored bytes, the decode buffer comes back untouched.
    let raw = verifier.expected_chunk(1).unwrap();
    let bytes = image[CHUNK..2 * CHUNK].to_vec();
    let (chunk, spare) = raw
        .verify_decoded_owned(bytes.clone(), &toy, vec![7; 3])
        .unwrap();
    assert_eq!(
        (chunk.as_verified().bytes(), spare),
        (&bytes[..], vec![7; 3])
    );
    assert_eq!(
        raw.verify_owned(bytes.clone()).unwrap().into_buffer(),
        bytes
    );
    // A changed byte is refused, owned or not; an encoded chunk needs its decoder.
    let mut bad = bytes;
    bad[9] ^= 1;
    assert!(matches!(
        raw.verify_owned(bad),
        Err(Error::ChunkMismatch { index: 1, .. })
    ));
    assert!(matches!(
        encoded.verify_owned(vec![2]),
        Err(Error::DecodeFailed { index: 2, .. })
    ));
}

#[test]
fn a_table_lays_out_chunks_of_their_own_lengths() {
    // Raw chunks of 1000, 4096, 1, 3000 bytes: content-defined chunks, at most CHUNK each.
    let lens = [1000u32, 4096, 1, 3000];
    let image: Vec<u8> = (0..lens.iter().sum::<u32>())
        .map(|i| (i * 7) as u8)
        .collect();
    let table: Vec<StoredChunk> = lens
        .iter()
        .map(|&len| StoredChunk {
            encoding: ChunkEncoding::Raw,
            stored_len: len,
            len,
        })
        .collect();
    let digests = chunk_digests(&image, &table);
    let whole = sha256(&image);
    let expect = ImageExpectation {
        size: image.len() as u64,
        chunk_size: CHUNK as u32,
        digest: &whole,
        chunk_digests: &digests,
    };
    for threads in [1, 2] {
        let mut seen = Vec::new();
        let options = ParallelOptions::new()
            .threads(threads)
            .check_whole_image(true);
        let toy = Toy::default();
        let result =
            verify_stored_reader_parallel(&mut &image[..], expect, &table, &toy, options, |c| {
                seen.push((c.offset(), c.bytes().len()));
                Ok::<(), io::Error>(())
            });
        assert_eq!(result.unwrap(), whole);
        assert_eq!(seen, [(0, 1000), (1000, 4096), (5096, 1), (5097, 3000)]);
    }
    // Records that do not add up to the image, or a chunk over the chunk size, are refused.
    let mut short = table.clone();
    short[3].len = 2999;
    short[3].stored_len = 2999;
    let verifier = veriflash_hash::ChunkVerifier::with_storage(expect, &short);
    assert!(matches!(
        verifier,
        Err(Error::InvalidStoredChunk { index: 3 })
    ));
    let mut long = table.clone();
    long[1].len = CHUNK as u32 + 1;
    assert!(matches!(
        veriflash_hash::ChunkVerifier::with_storage(expect, &long),
        Err(Error::InvalidStoredChunk { index: 1 })
    ));
}

#[test]
fn a_realigner_hands_out_verified_whole_units_in_order() {
    let lens = [1000u32, 4096, 1, 3000];
    let image: Vec<u8> = (0..lens.iter().sum::<u32>())
        .map(|i| (i * 3) as u8)
        .collect();
    let table: Vec<StoredChunk> = lens
        .iter()
        .map(|&len| StoredChunk {
            encoding: ChunkEncoding::Raw,
            stored_len: len,
            len,
        })
        .collect();
    let digests = chunk_digests(&image, &table);
    let whole = sha256(&image);
    let expect = ImageExpectation {
        size: image.len() as u64,
        chunk_size: CHUNK as u32,
        digest: &whole,
        chunk_digests: &digests,
    };
    let mut realigner = veriflash_hash::Realigner::new(1024);
    let mut pieces = Vec::new();
    let toy = Toy::default();
    verify_stored_reader_parallel(
        &mut &image[..],
        expect,
        &table,
        &toy,
        ParallelOptions::new().threads(1),
        |chunk| {
            if let Some(piece) = realigner.push(chunk).unwrap() {
                pieces.push((piece.index(), piece.offset(), piece.bytes().to_vec()));
            }
            Ok::<(), io::Error>(())
        },
    )
    .unwrap();
    if let Some(piece) = realigner.finish() {
        pieces.push((piece.index(), piece.offset(), piece.bytes().to_vec()));
    }
    let shape: Vec<(u64, u64, usize)> = pieces.iter().map(|(i, o, b)| (*i, *o, b.len())).collect();
    assert_eq!(shape, [(0, 0, 4096), (1, 4096, 3072), (2, 7168, 929)]);
    assert_eq!(
        pieces.iter().flat_map(|p| p.2.clone()).collect::<Vec<_>>(),
        image
    );
}
