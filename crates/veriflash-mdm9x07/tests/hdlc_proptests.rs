//! Property tests of the DIAG HDLC framing: every payload round-trips, frames survive any
//! split of the byte stream, and the decoder never panics and stays bounded on garbage.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use proptest::prelude::*;
use veriflash_mdm9x07::diag::{
    Decoder, ESCAPE, FLAG, MAX_FRAME_LEN, crc16_x25, decode_all, encode,
};

proptest! {
    #[test]
    fn every_payload_round_trips(payload in proptest::collection::vec(any::<u8>(), 1..2048)) {
        let framed = encode(&payload);
        // Exactly one flag, at the end; no raw flag inside.
        prop_assert_eq!(framed.iter().filter(|&&b| b == FLAG).count(), 1);
        prop_assert_eq!(framed.last(), Some(&FLAG));
        let frames = decode_all(&framed);
        prop_assert_eq!(frames.len(), 1);
        prop_assert_eq!(frames[0].as_ref().unwrap(), &payload);
    }

    #[test]
    fn frames_survive_any_split_of_the_stream(
        payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..300), 1..8),
        cuts in proptest::collection::vec(1usize..64, 0..64),
    ) {
        let mut stream: Vec<u8> = vec![FLAG]; // an opening flag is tolerated
        for p in &payloads {
            stream.extend_from_slice(&encode(p));
        }
        let mut d = Decoder::new();
        let mut got = Vec::new();
        let mut rest = stream.as_slice();
        let mut cut = cuts.iter().cycle();
        while !rest.is_empty() {
            let n = (*cut.next().unwrap_or(&usize::MAX)).min(rest.len());
            for &b in &rest[..n] {
                if let Some(f) = d.push(b) {
                    got.push(f.unwrap());
                }
            }
            rest = &rest[n..];
        }
        prop_assert_eq!(got, payloads);
    }

    #[test]
    fn the_decoder_never_panics_and_stays_bounded(bytes in proptest::collection::vec(any::<u8>(), 0..40_000)) {
        let mut d = Decoder::new();
        for b in bytes {
            let _ = d.push(b);
            prop_assert!(d.buffered() <= MAX_FRAME_LEN + 2);
        }
    }

    #[test]
    fn a_single_flipped_bit_is_never_accepted_as_the_original(
        payload in proptest::collection::vec(any::<u8>(), 1..256),
        at in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let mut framed = encode(&payload);
        let body = framed.len() - 1; // not the closing flag
        let i = at.index(body);
        framed[i] ^= 1 << bit;
        for p in decode_all(&framed).into_iter().flatten() {
            prop_assert_ne!(p, payload.clone());
        }
    }
}

#[test]
fn crc_of_payload_and_its_crc_leaves_the_x25_residue() {
    // A property of CRC-16/X.25: the CRC over data followed by its own CRC (little-endian)
    // is the constant residue 0x0F47 (after the final XOR), whatever the data.
    for data in [&b"123456789"[..], b"\x4b\x65\x01\x00", b"\x7e\x7d"] {
        let mut with = data.to_vec();
        with.extend_from_slice(&crc16_x25(data).to_le_bytes());
        assert_eq!(crc16_x25(&with), 0x0F47);
    }
    assert_eq!(ESCAPE, 0x7D);
}
