//! Property tests: what the packer digests, the verifier accepts, and any single flipped byte is
//! caught in the chunk that holds it.

#![cfg(feature = "std")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// Test sizes are small: u64 <-> usize casts cannot truncate here.
#![allow(clippy::cast_possible_truncation)]

mod common;

use std::io::{self, Cursor};

use common::{OneByteReader, expectation};
use proptest::prelude::*;
use veriflash_hash::{
    ChunkVerifier, Error, VerifyError, digest_reader, digest_slice, verify_reader,
};

fn image_and_chunk_size() -> impl Strategy<Value = (Vec<u8>, u32)> {
    (prop::collection::vec(any::<u8>(), 1..3000), 1u32..700)
}

proptest! {
    #[test]
    fn digested_image_verifies((data, chunk_size) in image_and_chunk_size()) {
        let digests = digest_slice(&data, chunk_size).unwrap();
        prop_assert_eq!(&digest_reader(OneByteReader(Cursor::new(&data)), chunk_size).unwrap(), &digests);

        let mut verifier = ChunkVerifier::new(expectation(&digests, chunk_size)).unwrap();
        for chunk in data.chunks(chunk_size as usize) {
            prop_assert_eq!(verifier.next_chunk_len(), Some(chunk.len()));
            verifier.check(chunk).unwrap();
        }
        prop_assert_eq!(verifier.finish().unwrap(), digests.digest);

        let mut out = Vec::new();
        let digest = verify_reader(&mut Cursor::new(&data), expectation(&digests, chunk_size), |c| {
            out.extend_from_slice(c.bytes());
            Ok::<(), io::Error>(())
        })
        .unwrap();
        prop_assert_eq!(digest, digests.digest);
        prop_assert_eq!(out, data);
    }

    #[test]
    fn any_single_flip_fails_at_its_chunk(
        (data, chunk_size) in image_and_chunk_size(),
        pos_seed in any::<prop::sample::Index>(),
        mask in 1u8..=255,
    ) {
        let digests = digest_slice(&data, chunk_size).unwrap();
        let pos = pos_seed.index(data.len());
        let mut corrupt = data.clone();
        corrupt[pos] ^= mask;
        let bad_index = (pos / chunk_size as usize) as u64;
        let expected = Error::ChunkMismatch {
            index: bad_index,
            offset: bad_index * u64::from(chunk_size),
        };

        let mut calls = 0u64;
        let result = verify_reader(&mut Cursor::new(&corrupt), expectation(&digests, chunk_size), |_| {
            calls += 1;
            Ok::<(), io::Error>(())
        });
        match result {
            Err(VerifyError::Hash(error)) => prop_assert_eq!(error, expected.clone()),
            other => prop_assert!(false, "expected a hash error, got {:?}", other),
        }
        prop_assert_eq!(calls, bad_index);

        let mut verifier = ChunkVerifier::new(expectation(&digests, chunk_size)).unwrap();
        let mut first_error = None;
        for chunk in corrupt.chunks(chunk_size as usize) {
            if let Err(e) = verifier.check(chunk) {
                first_error = Some(e);
                break;
            }
        }
        prop_assert_eq!(first_error, Some(expected));
    }
}
