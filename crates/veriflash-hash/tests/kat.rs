//! Known-answer tests: SHA-256 vectors from `tests/data/` through every entry point of our API.

#![cfg(feature = "std")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::Cursor;

use common::{InterruptingReader, OneByteReader, hex_digest};
use veriflash_hash::{DIGEST_LEN, Digest, Sha256, digest_reader, digest_slice, sha256};

struct Vector {
    message: Vec<u8>,
    digest: Digest,
}

fn vectors() -> Vec<Vector> {
    let text = include_str!("data/sha256_kat.txt");
    let vectors: Vec<Vector> = text
        .lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            assert_eq!(fields.len(), 3, "bad vector line: {line}");
            let repeat: usize = fields[0].parse().unwrap();
            let unit = if fields[1] == "-" { "" } else { fields[1] };
            Vector {
                message: unit.repeat(repeat).into_bytes(),
                digest: hex_digest(fields[2]),
            }
        })
        .collect();
    assert_eq!(vectors.len(), 8, "vector file changed: update this count");
    vectors
}

#[test]
fn sha256_matches_known_answers() {
    for v in vectors() {
        assert_eq!(sha256(&v.message), v.digest, "len {}", v.message.len());
    }
}

#[test]
fn streaming_sha256_matches_known_answers_at_odd_split_points() {
    for v in vectors() {
        for split in [1, 3, 55, 63, 64, 65, 127, 1000, 4099] {
            let mut hasher = Sha256::new();
            for piece in v.message.chunks(split) {
                hasher.update(piece);
            }
            assert_eq!(hasher.finalize(), v.digest, "split {split}");
        }
        // Empty updates change nothing.
        let mut hasher = Sha256::default();
        hasher.update(&[]);
        hasher.update(&v.message);
        hasher.update(&[]);
        assert_eq!(hasher.finalize(), v.digest);
    }
}

#[test]
fn cloned_hasher_continues_independently() {
    let mut a = Sha256::new();
    a.update(b"ab");
    let mut b = a.clone();
    a.update(b"c");
    b.update(b"d");
    assert_eq!(a.finalize(), sha256(b"abc"));
    assert_eq!(b.finalize(), sha256(b"abd"));
}

#[test]
fn digest_slice_and_digest_reader_give_known_whole_image_digests() {
    for v in vectors() {
        let from_slice = digest_slice(&v.message, 4096).unwrap();
        assert_eq!(from_slice.digest, v.digest);
        assert_eq!(from_slice.size, v.message.len() as u64);

        let from_reader = digest_reader(Cursor::new(&v.message), 4096).unwrap();
        assert_eq!(from_reader, from_slice);
        if v.message.len() <= 100_000 {
            let one_byte = digest_reader(OneByteReader(Cursor::new(&v.message)), 4096).unwrap();
            assert_eq!(one_byte, from_slice);
        }
        let interrupted =
            digest_reader(InterruptingReader::new(Cursor::new(&v.message)), 4096).unwrap();
        assert_eq!(interrupted, from_slice);
    }
}

#[test]
fn digest_len_is_sha256_output_len() {
    assert_eq!(DIGEST_LEN, 32);
    assert_eq!(sha256(b"").len(), DIGEST_LEN);
}

#[test]
fn backend_names_an_implementation() {
    let name = veriflash_hash::backend();
    assert!(
        ["x86 SHA-NI", "ARMv8 SHA2", "RISC-V Zknh", "software"]
            .iter()
            .any(|known| name.starts_with(known)),
        "unexpected backend name {name:?}"
    );
}
