//! One test per rule of FORMAT.md §4 and the signature block's error cases.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::cast_possible_truncation
)]

use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;

use super::*;
use crate::test_util::{join, split, tlv};

const ECDSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const RSA_PSS: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.10");

fn fake_cert(len: usize) -> Vec<u8> {
    tlv(0x30, &vec![0x05; len])
}

pub(crate) fn sample_block() -> SignatureBlock {
    SignatureBlock {
        entries: vec![
            SignatureEntry {
                algorithm: ECDSA_SHA256,
                key_id: [0x11; 32],
                signature: vec![0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x02],
                certificates: vec![],
            },
            SignatureEntry {
                algorithm: RSA_PSS,
                key_id: [0x22; 32],
                signature: vec![0xAB; 512],
                certificates: vec![fake_cert(300), fake_cert(10)],
            },
        ],
    }
}

fn refused_both_ways(block: &SignatureBlock, expected: &Error) {
    assert_eq!(block.to_der().as_ref(), Err(expected));
    assert_eq!(
        SignatureBlock::from_der(&block.encode_unchecked()).as_ref(),
        Err(expected)
    );
}

fn malformed_reason(result: Result<SignatureBlock, Error>) -> String {
    match result {
        Err(Error::Malformed {
            section: SIGNATURE_BLOCK,
            reason,
            ..
        }) => reason,
        other => panic!("expected Malformed, got {other:?}"),
    }
}

/// Re-encodes `block` after `f` edited the field TLVs of entry `index`
/// (0 algorithm, 1 key id, 2 signature, 3 certificates).
fn edit_entry(block: &SignatureBlock, index: usize, f: impl FnOnce(&mut Vec<Vec<u8>>)) -> Vec<u8> {
    let mut entries = split(&block.encode_unchecked());
    let mut fields = split(&entries[index]);
    f(&mut fields);
    entries[index] = join(0x30, &fields);
    join(0x30, &entries)
}

#[test]
fn round_trips_a_signature_block() {
    let block = sample_block();
    let der = block.to_der().unwrap();
    assert_eq!(SignatureBlock::from_der(&der).unwrap(), block);
    assert_eq!(signature_block_len(&der), Ok(BlockLen::Total(der.len())));
}

#[test]
fn rejects_empty_signature_block() {
    let block = SignatureBlock { entries: vec![] };
    refused_both_ways(
        &block,
        &Error::InvalidField {
            section: SIGNATURE_BLOCK,
            field: "entries".into(),
            reason: "is empty; a package carries at least one signature".into(),
        },
    );
}

#[test]
fn rejects_too_many_signatures() {
    let mut block = sample_block();
    block.entries = vec![block.entries[0].clone(); MAX_SIGNATURES + 1];
    refused_both_ways(
        &block,
        &Error::LimitExceeded {
            what: "number of signatures",
            limit: MAX_SIGNATURES as u64,
            found: MAX_SIGNATURES as u64 + 1,
        },
    );
}

#[test]
fn rejects_key_id_of_the_wrong_length() {
    let der = edit_entry(&sample_block(), 1, |f| f[1] = tlv(0x04, &[0; 20]));
    assert_eq!(
        SignatureBlock::from_der(&der),
        Err(Error::InvalidField {
            section: SIGNATURE_BLOCK,
            field: "signature #1 key_id".into(),
            reason: "is 20 bytes, expected 32".into()
        })
    );
}

#[test]
fn rejects_empty_signature_value() {
    let mut block = sample_block();
    block.entries[0].signature.clear();
    refused_both_ways(
        &block,
        &Error::InvalidField {
            section: SIGNATURE_BLOCK,
            field: "signature #0".into(),
            reason: "is empty".into(),
        },
    );
}

#[test]
fn rejects_overlong_signature_value() {
    let mut block = sample_block();
    block.entries[1].signature = vec![1; MAX_SIGNATURE_LEN + 1];
    refused_both_ways(
        &block,
        &Error::LimitExceeded {
            what: "signature length",
            limit: MAX_SIGNATURE_LEN as u64,
            found: MAX_SIGNATURE_LEN as u64 + 1,
        },
    );
}

#[test]
fn rejects_too_many_certificates() {
    let mut block = sample_block();
    block.entries[1].certificates = vec![fake_cert(4); MAX_CERTIFICATES + 1];
    refused_both_ways(
        &block,
        &Error::LimitExceeded {
            what: "number of certificates",
            limit: MAX_CERTIFICATES as u64,
            found: MAX_CERTIFICATES as u64 + 1,
        },
    );
}

#[test]
fn rejects_certificate_that_is_not_a_sequence() {
    let mut block = sample_block();
    block.entries[1].certificates[0] = tlv(0x04, &[1, 2, 3]);
    assert!(matches!(
        block.to_der(),
        Err(Error::InvalidField { ref field, .. }) if field == "signature #1 certificate #0"
    ));
    let reason = malformed_reason(SignatureBlock::from_der(&block.encode_unchecked()));
    assert!(
        reason.contains("expected SEQUENCE for signature #1 certificate #0"),
        "{reason}"
    );
}

#[test]
fn writer_rejects_certificate_with_trailing_or_missing_bytes() {
    let mut block = sample_block();
    let mut cert = fake_cert(5);
    cert.push(0);
    block.entries[1].certificates[1] = cert;
    let err = block.to_der().unwrap_err();
    assert_eq!(
        err.to_string(),
        "signature block: signature #1 certificate #1 is not one DER SEQUENCE: extra bytes from \
         byte 7"
    );
    block.entries[1].certificates[1] = fake_cert(5)[..6].to_vec();
    assert!(matches!(block.to_der(), Err(Error::InvalidField { .. })));
    block.entries[1].certificates[1] = vec![];
    assert!(matches!(block.to_der(), Err(Error::InvalidField { .. })));
}

#[test]
fn rejects_present_but_empty_certificate_list() {
    let der = edit_entry(&sample_block(), 0, |f| f.push(tlv(0xA0, &[])));
    let reason = malformed_reason(SignatureBlock::from_der(&der));
    assert!(reason.contains("present but empty"), "{reason}");
}

#[test]
fn rejects_unknown_field_in_an_entry() {
    let der = edit_entry(&sample_block(), 1, |f| f.push(tlv(0x05, &[])));
    let reason = malformed_reason(SignatureBlock::from_der(&der));
    assert!(
        reason.contains("after the last field of signature #1"),
        "{reason}"
    );
}

#[test]
fn rejects_non_canonical_algorithm_oid() {
    let der = edit_entry(&sample_block(), 0, |f| f[0] = tlv(0x06, &[0x80, 0x01]));
    malformed_reason(SignatureBlock::from_der(&der));
    let der = edit_entry(&sample_block(), 0, |f| f[0] = tlv(0x06, &[]));
    malformed_reason(SignatureBlock::from_der(&der));
}

#[test]
fn rejects_signature_block_with_trailing_bytes() {
    let mut der = sample_block().to_der().unwrap();
    let len = der.len() as u64;
    der.extend_from_slice(&[0, 0]);
    assert_eq!(
        SignatureBlock::from_der(&der),
        Err(Error::TrailingData {
            section: SIGNATURE_BLOCK,
            offset: len
        })
    );
}

#[test]
fn rejects_truncated_signature_block() {
    let der = sample_block().to_der().unwrap();
    for len in 0..der.len() {
        assert!(
            matches!(
                SignatureBlock::from_der(&der[..len]),
                Err(Error::Truncated {
                    section: SIGNATURE_BLOCK,
                    ..
                })
            ),
            "length {len}"
        );
    }
}

#[test]
fn rejects_signature_block_longer_than_the_limit() {
    let der = vec![0x30; MAX_SIGNATURE_BLOCK_LEN + 1];
    assert!(matches!(
        SignatureBlock::from_der(&der),
        Err(Error::LimitExceeded {
            what: "signature block length",
            ..
        })
    ));
    let mut block = sample_block();
    block.entries = vec![block.entries[1].clone(); MAX_SIGNATURES];
    for entry in &mut block.entries {
        entry.certificates = vec![fake_cert(3000); MAX_CERTIFICATES];
    }
    assert!(matches!(
        block.to_der(),
        Err(Error::LimitExceeded {
            what: "signature block length",
            ..
        })
    ));
}

#[test]
fn block_len_needs_at_most_six_bytes() {
    assert_eq!(signature_block_len(&[]), Ok(BlockLen::NeedMore(2)));
    assert_eq!(signature_block_len(&[0x30]), Ok(BlockLen::NeedMore(2)));
    assert_eq!(signature_block_len(&[0x30, 0x05]), Ok(BlockLen::Total(7)));
    assert_eq!(
        signature_block_len(&[0x30, 0x81]),
        Ok(BlockLen::NeedMore(3))
    );
    assert_eq!(
        signature_block_len(&[0x30, 0x81, 0x80]),
        Ok(BlockLen::Total(131))
    );
    assert_eq!(
        signature_block_len(&[0x30, 0x83, 0x04, 0x00, 0x00]),
        Ok(BlockLen::Total(MAX_SIGNATURE_BLOCK_LEN + 5)).and(Err(Error::LimitExceeded {
            what: "signature block length",
            limit: MAX_SIGNATURE_BLOCK_LEN as u64,
            found: MAX_SIGNATURE_BLOCK_LEN as u64 + 5
        }))
    );
    assert_eq!(
        signature_block_len(&[0x30, 0x83, 0x03, 0xFF, 0xFB]),
        Ok(BlockLen::Total(MAX_SIGNATURE_BLOCK_LEN))
    );
    assert_eq!(
        signature_block_len(&[0x30, 0x84, 1, 2]),
        Ok(BlockLen::NeedMore(6))
    );
    assert!(matches!(
        signature_block_len(&[0x30, 0x84, 0xFF, 0xFF, 0xFF, 0xFF]),
        Err(Error::LimitExceeded {
            found: 0x1_0000_0005,
            ..
        })
    ));
}

#[test]
fn block_len_rejects_other_tags_and_ber_lengths() {
    for prefix in [
        &[0x31, 0x00][..],
        &[0x00],
        &[0x30, 0x80],
        &[0x30, 0x81, 0x7F],
        &[0x30, 0x82, 0x00, 0x80],
        &[0x30, 0x85],
        &[0x30, 0xFF],
    ] {
        assert!(
            matches!(
                signature_block_len(prefix),
                Err(Error::Malformed {
                    section: SIGNATURE_BLOCK,
                    ..
                })
            ),
            "{prefix:02X?}"
        );
    }
}
