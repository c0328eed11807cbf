//! Hostile headers, manifests and signature blocks that claim huge lengths and counts cost
//! memory in proportion to the bytes that actually arrive, never to what they claim.
//!
//! The documented bound (see `bound`): peak heap growth while parsing is at most
//! `3 * supplied + 192 KiB`, where `supplied` is the number of bytes the reader yields. The
//! factor 3 is `Vec` doubling: while a buffer of `n` bytes moves into one of `2n`, both are live.
//! The constant covers the first 64 KiB read piece (`READ_PIECE` in `read.rs`), reserved before
//! any byte of the section arrives, twice over, plus error messages.
//! Slice parsers (`Manifest::from_der`, `SignatureBlock::from_der`) that refuse a count or a
//! length over its limit must do so before allocating for it: at most `REFUSAL_BOUND`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::cast_possible_truncation,
    clippy::type_complexity
)]

use std::io::{self, Read};

use veriflash_format::limits::{MAX_MANIFEST_LEN, MAX_SIGNATURE_BLOCK_LEN};
use veriflash_format::{
    Error, HEADER_LEN, Header, Manifest, ReadError, SignatureBlock, read_prefix,
};
use veriflash_format_alloc_bounds::{CountingAlloc, peak, reset_peak};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

const KIB: usize = 1024;

/// The documented bound for reading a prefix from a stream that yields `supplied` bytes.
fn bound(supplied: usize) -> usize {
    3 * supplied + 192 * KIB
}

/// What a slice parser may allocate while refusing an over-limit length or count.
const REFUSAL_BOUND: usize = 16 * KIB;

/// A reader that yields its bytes a few at a time, then ends.
struct Dribble {
    data: Vec<u8>,
    pos: usize,
}

impl Read for Dribble {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(7).min(self.data.len() - self.pos);
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// A DER TLV with a definite, minimal length.
fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend(der_len(content.len()));
    out.extend_from_slice(content);
    out
}

fn der_len(len: usize) -> Vec<u8> {
    if len < 0x80 {
        return vec![len as u8];
    }
    let bytes: Vec<u8> = (len as u64)
        .to_be_bytes()
        .into_iter()
        .skip_while(|&b| b == 0)
        .collect();
    let mut out = vec![0x80 | bytes.len() as u8];
    out.extend(bytes);
    out
}

fn header_bytes(manifest_len: u32, payload_len: u64) -> Vec<u8> {
    let mut h = Header::new(1, 1).to_bytes();
    h[16..20].copy_from_slice(&manifest_len.to_be_bytes());
    h[24..32].copy_from_slice(&payload_len.to_be_bytes());
    h.to_vec()
}

/// Runs `read_prefix` over `data` (yielded a few bytes at a time); returns the result and the
/// peak heap growth during the call. `data` itself is allocated before the measurement starts.
fn read_measured(data: Vec<u8>) -> (Result<(), ReadError>, usize, usize) {
    let supplied = data.len();
    let mut reader = Dribble { data, pos: 0 };
    let base = reset_peak();
    let result = read_prefix(&mut reader).map(drop);
    let grown = peak() - base;
    (result, supplied, grown)
}

fn measured<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = reset_peak();
    let out = f();
    (out, peak() - base)
}

fn format_error(result: Result<(), ReadError>) -> Error {
    match result {
        Err(ReadError::Format(e)) => e,
        other => panic!("expected a format error, got {other:?}"),
    }
}

fn assert_within(case: &str, supplied: usize, grown: usize) {
    let limit = bound(supplied);
    assert!(
        grown <= limit,
        "{case}: peak heap growth {grown} B for {supplied} B supplied exceeds the bound {limit} B"
    );
}

/// One test function on purpose: the counters are process-wide, and test functions run on
/// parallel threads.
#[test]
fn hostile_lengths_and_counts_cost_memory_in_proportion_to_the_bytes_supplied() {
    // The counter sees this thread's allocations: a 1 MiB buffer shows up as 1 MiB.
    let (buf, grown) = measured(|| vec![1u8; 1 << 20]);
    assert!(
        grown >= 1 << 20,
        "the counting allocator does not count ({grown})"
    );
    drop(buf);

    // 1. manifest_len at its limit (16 MiB), and only a few bytes of manifest arrive.
    for extra in [0usize, 10, 4096, 100 * KIB, 1 << 20] {
        let mut data = header_bytes(MAX_MANIFEST_LEN, 1);
        data.extend(std::iter::repeat_n(0x30, extra));
        let (result, supplied, grown) = read_measured(data);
        let err = format_error(result);
        assert!(matches!(err, Error::Truncated { .. }), "{err}");
        assert_within(
            &format!("manifest_len = MAX, {extra} bytes"),
            supplied,
            grown,
        );
    }

    // 2. manifest_len = u32::MAX: refused by the header, before any allocation for it.
    let (result, supplied, grown) = read_measured(header_bytes(u32::MAX, 1));
    assert!(matches!(format_error(result), Error::LimitExceeded { .. }));
    assert_within("manifest_len = u32::MAX", supplied, grown);
    assert!(grown <= REFUSAL_BOUND, "manifest_len = u32::MAX: {grown} B");

    // 3. Signature block lengths: 2^32 (5 length bytes), 2^32 - 1, just over the limit, and
    //    at the limit with only a few bytes present.
    let manifest = vec![0x30, 0x00];
    let over = MAX_SIGNATURE_BLOCK_LEN; // content length: the TLV is then over the limit
    let at_limit = MAX_SIGNATURE_BLOCK_LEN - 1 - der_len(MAX_SIGNATURE_BLOCK_LEN).len();
    //    (A 5-octet length is not DER the format allows: refused as malformed.)
    let cases: Vec<(&str, Vec<u8>, fn(&Error) -> bool)> = vec![
        (
            "DER length 2^32",
            vec![0x30, 0x85, 0x01, 0x00, 0x00, 0x00, 0x00],
            |e| matches!(e, Error::Malformed { .. }),
        ),
        (
            "DER length 2^32 - 1",
            vec![0x30, 0x84, 0xFF, 0xFF, 0xFF, 0xFF],
            |e| matches!(e, Error::LimitExceeded { .. }),
        ),
        (
            "just over the limit",
            [vec![0x30], der_len(over)].concat(),
            |e| matches!(e, Error::LimitExceeded { .. }),
        ),
        (
            "at the limit, 3 bytes present",
            [vec![0x30], der_len(at_limit), vec![0x30, 0x00, 0x30]].concat(),
            |e| matches!(e, Error::Truncated { .. }),
        ),
    ];
    for (case, block, expected) in cases {
        let mut data = header_bytes(manifest.len() as u32, 1);
        data.extend_from_slice(&manifest);
        data.extend_from_slice(&block);
        let (result, supplied, grown) = read_measured(data);
        let err = format_error(result);
        assert!(expected(&err), "{case}: {err}");
        assert_within(case, supplied, grown);
    }

    // 4. Manifests (slices) whose counts run into the millions: refused on the count, before
    //    a vector of that many elements exists.
    let one_revision = tlv(0x0C, b"a");
    let million_revisions = tlv(0x30, &one_revision.repeat(1_000_000));
    let der = tlv(
        0x30,
        &[
            tlv(0x02, &[1]),
            tlv(0x0C, b"p"),
            tlv(0x0C, b"c"),
            million_revisions,
        ]
        .concat(),
    );
    assert!(der.len() <= MAX_MANIFEST_LEN as usize);
    let (result, grown) = measured(|| Manifest::from_der(&der).map(drop));
    assert!(
        grown <= REFUSAL_BOUND,
        "a million hardware revisions: {grown} B"
    );
    assert!(
        matches!(result, Err(Error::LimitExceeded { .. })),
        "{result:?}"
    );

    let million_images = tlv(0x30, &[0x30, 0x00].repeat(1_000_000));
    let der = tlv(
        0x30,
        &[
            tlv(0x02, &[1]),
            tlv(0x0C, b"p"),
            tlv(0x0C, b"c"),
            tlv(0x30, &[]),
            tlv(0x0C, b"1"),
            tlv(0x02, &[0]),
            million_images,
        ]
        .concat(),
    );
    let (result, grown) = measured(|| Manifest::from_der(&der).map(drop));
    assert!(grown <= REFUSAL_BOUND, "a million images: {grown} B");
    assert!(
        matches!(result, Err(Error::LimitExceeded { .. })),
        "{result:?}"
    );

    // A manifest claiming 2^32 bytes, of which a few are present.
    let claims = [
        vec![0x30, 0x84, 0xFF, 0xFF, 0xFF, 0xFF],
        vec![0x02, 0x01, 0x01],
    ]
    .concat();
    let (result, grown) = measured(|| Manifest::from_der(&claims).map(drop));
    assert!(result.is_err());
    assert!(grown <= REFUSAL_BOUND, "manifest claiming 4 GiB: {grown} B");

    // 5. A signature block (at its size limit) holding 80 000 empty entries: refused on the
    //    count without 80 000 entries being built.
    let entries = [0x30, 0x00].repeat((MAX_SIGNATURE_BLOCK_LEN - 8) / 2);
    let block = tlv(0x30, &entries);
    assert!(block.len() <= MAX_SIGNATURE_BLOCK_LEN);
    let (result, grown) = measured(|| SignatureBlock::from_der(&block).map(drop));
    assert!(
        grown <= REFUSAL_BOUND,
        "80 000 signature entries: {grown} B"
    );
    assert!(
        matches!(result, Err(Error::LimitExceeded { .. })),
        "{result:?}"
    );

    // The same block streamed after a valid header and manifest: within the read bound.
    let mut data = header_bytes(2, 1);
    data.extend_from_slice(&[0x30, 0x00]);
    data.extend_from_slice(&block);
    assert!(data.len() > HEADER_LEN);
    let (result, supplied, grown) = read_measured(data);
    assert!(matches!(format_error(result), Error::LimitExceeded { .. }));
    assert_within("80 000 signature entries, streamed", supplied, grown);
}
