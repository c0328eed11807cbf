//! One test per rule of FORMAT.md §3 (and each manifest error variant): a bad fixture each,
//! refused by the parser and, where the model can express it, by the writer too.
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
use crate::test_util::{edit_image, edit_manifest, join, sample_manifest, split, tlv};

/// Asserts both the parser (on `encode_unchecked`) and the writer refuse `m` with `expected`.
fn refused_both_ways(m: &Manifest, expected: &Error) {
    assert_eq!(m.validate().as_ref(), Err(expected));
    assert_eq!(m.to_der().as_ref(), Err(expected));
    assert_eq!(
        Manifest::from_der(&m.encode_unchecked()).as_ref(),
        Err(expected)
    );
}

fn invalid_field(field: &str, reason: &str) -> Error {
    Error::InvalidField {
        section: MANIFEST,
        field: field.into(),
        reason: reason.into(),
    }
}

fn malformed_reason(result: Result<Manifest, Error>) -> (Option<u64>, String) {
    match result {
        Err(Error::Malformed {
            section: MANIFEST,
            offset,
            reason,
        }) => (offset, reason),
        other => panic!("expected Malformed, got {other:?}"),
    }
}

#[test]
fn round_trips_the_sample_manifest() {
    let m = sample_manifest();
    let der = m.to_der().unwrap();
    assert_eq!(Manifest::from_der(&der).unwrap(), m);
}

#[test]
fn chunk_geometry_follows_the_spec() {
    let m = sample_manifest();
    let rootfs = m.image("rootfs").unwrap();
    assert_eq!(rootfs.chunk_count(), 3);
    assert_eq!(rootfs.chunk_offset(0), Some(0));
    assert_eq!(rootfs.chunk_offset(2), Some(8192));
    assert_eq!(rootfs.chunk_offset(3), None);
    assert_eq!(rootfs.chunk_len(0), Some(4096));
    assert_eq!(rootfs.chunk_len(2), Some(10_000 - 8192));
    assert_eq!(rootfs.chunk_len(3), None);
    assert_eq!(rootfs.chunk_digest(2), Some(&[3; 32]));
    assert_eq!(rootfs.chunk_digest(3), None);
    let modem = m.image("modem").unwrap();
    assert_eq!(
        modem.chunk_len(0),
        Some(8192),
        "an exact multiple has no short chunk"
    );
    assert!(m.image("nope").is_none());
    assert_eq!(chunk_count(0, 4096), Some(0));
    assert_eq!(chunk_count(u64::MAX, 1), Some(u64::MAX));
    assert_eq!(chunk_count(u64::MAX, 2), Some(u64::MAX / 2 + 1));
}

#[test]
fn payload_ranges_concatenate_images_in_order() {
    let m = sample_manifest();
    assert_eq!(m.payload_len(), Ok(18_192));
    assert_eq!(m.payload_range(0), Some(0..10_000));
    assert_eq!(m.payload_range(1), Some(10_000..18_192));
    assert_eq!(m.payload_range(2), None);
}

#[test]
fn rejects_manifest_payload_len_mismatch() {
    let m = sample_manifest();
    assert_eq!(m.check_payload_len(&Header::new(10, 18_192)), Ok(()));
    assert_eq!(
        m.check_payload_len(&Header::new(10, 18_193)),
        Err(Error::PayloadLenMismatch {
            header: 18_193,
            manifest: 18_192
        })
    );
}

#[test]
fn rejects_manifest_longer_than_the_limit() {
    let der = vec![0u8; MAX_MANIFEST_LEN as usize + 1];
    assert_eq!(
        Manifest::from_der(&der),
        Err(Error::LimitExceeded {
            what: "manifest length",
            limit: u64::from(MAX_MANIFEST_LEN),
            found: u64::from(MAX_MANIFEST_LEN) + 1
        })
    );
}

#[test]
fn writer_refuses_manifest_that_would_exceed_the_limit() {
    // 32 GiB at 64 KiB chunks is 2^19 digests: exactly 16 MiB of digests, so the manifest
    // around them is over the limit (refused after encoding).
    let mut m = sample_manifest();
    m.images.truncate(1);
    let image = &mut m.images[0];
    image.chunk_size = 64 * 1024;
    image.size = 1 << 35;
    image.chunk_digests = vec![[0; 32]; 1 << 19];
    match m.to_der() {
        Err(Error::LimitExceeded {
            what: "manifest length",
            limit,
            found,
        }) => {
            assert_eq!(limit, u64::from(MAX_MANIFEST_LEN));
            assert!(found > limit);
        }
        other => panic!("{other:?}"),
    }
    // One chunk more: refused before encoding, from the digests alone.
    let image = &mut m.images[0];
    image.size += 1;
    image.chunk_digests.push([0; 32]);
    assert_eq!(
        m.to_der(),
        Err(Error::LimitExceeded {
            what: "manifest length",
            limit: u64::from(MAX_MANIFEST_LEN),
            found: u64::from(MAX_MANIFEST_LEN) + 32
        })
    );
}

/// The manifest is `manifest_len` signed bytes: a SEQUENCE that does not fill them exactly is
/// a malformed manifest (code 10), not a truncated or over-long download (13, 14).
#[test]
fn rejects_manifest_whose_sequence_runs_past_its_bytes_as_malformed() {
    let der = sample_manifest().to_der().unwrap();
    for len in 0..der.len() {
        match Manifest::from_der(&der[..len]) {
            Err(Error::Malformed {
                section: MANIFEST,
                offset: Some(0),
                reason,
            }) => assert!(
                reason.starts_with("the manifest is not exactly one DER SEQUENCE: it needs"),
                "length {len}: {reason}"
            ),
            other => panic!("length {len}: {other:?}"),
        }
    }
}

#[test]
fn rejects_manifest_with_bytes_after_its_sequence_as_malformed() {
    let mut der = sample_manifest().to_der().unwrap();
    let len = der.len() as u64;
    der.push(0);
    assert_eq!(
        Manifest::from_der(&der),
        Err(Error::Malformed {
            section: MANIFEST,
            offset: Some(len),
            reason: "the manifest is not exactly one DER SEQUENCE: bytes follow it".into(),
        })
    );
}

#[test]
fn rejects_manifest_with_unsupported_version() {
    let der = edit_manifest(&sample_manifest(), |p| p[0] = tlv(0x02, &[5]));
    assert_eq!(
        Manifest::from_der(&der),
        Err(Error::UnsupportedManifestVersion { found: 5 })
    );
}

#[test]
fn rejects_manifest_that_is_not_a_sequence() {
    let mut der = sample_manifest().to_der().unwrap();
    der[0] = 0x31;
    let (offset, reason) = malformed_reason(Manifest::from_der(&der));
    assert_eq!(offset, Some(0));
    assert!(reason.contains("expected SEQUENCE"), "{reason}");
}

#[test]
fn rejects_manifest_with_indefinite_length() {
    let mut der = sample_manifest().to_der().unwrap();
    let body = split(&der).concat();
    der = [vec![0x30, 0x80], body, vec![0, 0]].concat();
    let (offset, reason) = malformed_reason(Manifest::from_der(&der));
    assert_eq!(offset, Some(1));
    assert!(reason.contains("indefinite"), "{reason}");
}

#[test]
fn rejects_manifest_with_non_minimal_length() {
    // product as 0C 81 08 "acme-lte" instead of 0C 08 "acme-lte"
    let der = edit_manifest(&sample_manifest(), |p| {
        p[1] = [&[0x0C, 0x81, 0x08][..], b"acme-lte"].concat();
    });
    let (offset, reason) = malformed_reason(Manifest::from_der(&der));
    assert!(reason.contains("minimal"), "{reason}");
    // 30 82 xx xx | 02 01 01 | 0C ...: the product's length octet is at offset 8.
    assert_eq!(offset, Some(8));
}

#[test]
fn rejects_manifest_with_non_minimal_integer() {
    let der = edit_manifest(&sample_manifest(), |p| p[5] = tlv(0x02, &[0x00, 0x07]));
    let (_, reason) = malformed_reason(Manifest::from_der(&der));
    assert!(reason.starts_with("security_version"), "{reason}");
}

#[test]
fn rejects_manifest_with_negative_security_version() {
    let der = edit_manifest(&sample_manifest(), |p| p[5] = tlv(0x02, &[0xFF]));
    let (_, reason) = malformed_reason(Manifest::from_der(&der));
    assert_eq!(reason, "security_version is a negative INTEGER");
}

#[test]
fn rejects_manifest_with_security_version_over_u64() {
    let der = edit_manifest(&sample_manifest(), |p| {
        p[5] = tlv(0x02, &[0x01, 0, 0, 0, 0, 0, 0, 0, 0]);
    });
    malformed_reason(Manifest::from_der(&der));
}

#[test]
fn accepts_the_largest_security_version() {
    let mut m = sample_manifest();
    m.security_version = u64::MAX;
    assert_eq!(Manifest::from_der(&m.to_der().unwrap()).unwrap(), m);
}

#[test]
fn rejects_manifest_with_wrong_field_type() {
    let der = edit_manifest(&sample_manifest(), |p| p[2] = tlv(0x13, b"MDM9607"));
    let (_, reason) = malformed_reason(Manifest::from_der(&der));
    assert!(
        reason.contains("expected UTF8String for chipset, found tag 0x13"),
        "{reason}"
    );
}

#[test]
fn rejects_manifest_with_missing_field() {
    let der = edit_manifest(&sample_manifest(), |p| {
        p.truncate(6);
    });
    let (_, reason) = malformed_reason(Manifest::from_der(&der));
    assert_eq!(
        reason,
        "expected images, found the end of its enclosing structure"
    );
}

#[test]
fn rejects_manifest_with_unknown_extra_field() {
    let der = edit_manifest(&sample_manifest(), |p| p.push(tlv(0x02, &[1])));
    let (_, reason) = malformed_reason(Manifest::from_der(&der));
    assert!(
        reason.contains("after the last field of Manifest"),
        "{reason}"
    );
}

#[test]
fn rejects_manifest_with_empty_product() {
    let mut m = sample_manifest();
    m.product.clear();
    refused_both_ways(&m, &invalid_field("product", "is empty"));
}

#[test]
fn rejects_manifest_with_overlong_chipset() {
    let mut m = sample_manifest();
    m.chipset = "x".repeat(MAX_NAME_LEN + 1);
    refused_both_ways(
        &m,
        &Error::LimitExceeded {
            what: "chipset length",
            limit: MAX_NAME_LEN as u64,
            found: MAX_NAME_LEN as u64 + 1,
        },
    );
    m.chipset = "x".repeat(MAX_NAME_LEN);
    assert!(m.to_der().is_ok());
}

#[test]
fn rejects_manifest_with_invalid_utf8() {
    let der = edit_manifest(&sample_manifest(), |p| {
        p[4] = tlv(0x0C, &[b'1', 0xC3, 0x28])
    });
    let (offset, reason) = malformed_reason(Manifest::from_der(&der));
    assert_eq!(reason, "software_version is not valid UTF-8");
    assert!(offset.is_some());
}

#[test]
fn accepts_non_ascii_product_text() {
    let mut m = sample_manifest();
    m.product = "Gerät-ü".into();
    assert_eq!(Manifest::from_der(&m.to_der().unwrap()).unwrap(), m);
}

#[test]
fn rejects_manifest_with_empty_hardware_revision() {
    let mut m = sample_manifest();
    m.hardware_revisions[1].clear();
    refused_both_ways(&m, &invalid_field("hardware_revisions[1]", "is empty"));
}

#[test]
fn rejects_manifest_with_too_many_hardware_revisions() {
    let mut m = sample_manifest();
    m.hardware_revisions = vec!["r".into(); MAX_HW_REVISIONS + 1];
    refused_both_ways(
        &m,
        &Error::LimitExceeded {
            what: "number of hardware revisions",
            limit: MAX_HW_REVISIONS as u64,
            found: MAX_HW_REVISIONS as u64 + 1,
        },
    );
}

#[test]
fn accepts_manifest_without_hardware_revisions() {
    let mut m = sample_manifest();
    m.hardware_revisions.clear();
    assert_eq!(Manifest::from_der(&m.to_der().unwrap()).unwrap(), m);
}

#[test]
fn rejects_manifest_without_images() {
    let mut m = sample_manifest();
    m.images.clear();
    refused_both_ways(
        &m,
        &invalid_field("images", "is empty; a manifest has at least one image"),
    );
}

#[test]
fn rejects_manifest_with_too_many_images() {
    let mut m = sample_manifest();
    let template = m.images[1].clone();
    m.images = (0..=MAX_IMAGES)
        .map(|i| ImageSpec {
            name: alloc::format!("img{i}"),
            partition: alloc::format!("p{i}"),
            ..template.clone()
        })
        .collect();
    refused_both_ways(
        &m,
        &Error::LimitExceeded {
            what: "number of images",
            limit: MAX_IMAGES as u64,
            found: MAX_IMAGES as u64 + 1,
        },
    );
    m.images.pop();
    assert!(m.to_der().is_ok());
}

#[test]
fn rejects_manifest_with_duplicate_image_name() {
    let mut m = sample_manifest();
    m.images[1].name = "rootfs".into();
    refused_both_ways(
        &m,
        &invalid_field("image 'rootfs' name", "is used by more than one image"),
    );
}

#[test]
fn rejects_manifest_with_duplicate_partition() {
    let mut m = sample_manifest();
    m.images[1].partition = "system".into();
    refused_both_ways(
        &m,
        &invalid_field(
            "image 'modem' partition",
            "'system' is also the partition of image 'rootfs'",
        ),
    );
}

#[test]
fn rejects_image_name_with_a_space() {
    let mut m = sample_manifest();
    m.images[0].name = "root fs".into();
    refused_both_ways(
        &m,
        &invalid_field(
            "image #0 name",
            "has byte 0x20 at position 4; names are printable ASCII without spaces (0x21..=0x7E)",
        ),
    );
}

#[test]
fn rejects_partition_name_outside_printable_ascii() {
    let mut m = sample_manifest();
    m.images[1].partition = "modem\u{e9}".into();
    refused_both_ways(
        &m,
        &invalid_field(
            "image 'modem' partition",
            "has byte 0xC3 at position 5; names are printable ASCII without spaces (0x21..=0x7E)",
        ),
    );
}

#[test]
fn rejects_image_with_overlong_name() {
    let mut m = sample_manifest();
    m.images[0].name = "n".repeat(MAX_NAME_LEN + 1);
    refused_both_ways(
        &m,
        &Error::LimitExceeded {
            what: "image name length",
            limit: MAX_NAME_LEN as u64,
            found: MAX_NAME_LEN as u64 + 1,
        },
    );
}

#[test]
fn rejects_image_of_size_zero() {
    let mut m = sample_manifest();
    m.images[0].size = 0;
    m.images[0].chunk_digests.clear();
    refused_both_ways(&m, &invalid_field("image 'rootfs' size", "is 0"));
}

#[test]
fn rejects_image_larger_than_the_payload_limit() {
    let mut m = sample_manifest();
    m.images[0].size = MAX_PAYLOAD_LEN + 1;
    refused_both_ways(
        &m,
        &Error::LimitExceeded {
            what: "image size",
            limit: MAX_PAYLOAD_LEN,
            found: MAX_PAYLOAD_LEN + 1,
        },
    );
}

#[test]
fn rejects_manifest_whose_images_add_up_past_the_payload_limit() {
    let mut m = sample_manifest();
    for image in &mut m.images {
        image.size = MAX_PAYLOAD_LEN / 2 + 1;
        image.chunk_size = MAX_CHUNK_SIZE;
        image.chunk_digests = vec![[0; 32]; image.chunk_count() as usize];
    }
    refused_both_ways(
        &m,
        &Error::LimitExceeded {
            what: "payload length",
            limit: MAX_PAYLOAD_LEN,
            found: MAX_PAYLOAD_LEN + 2,
        },
    );
}

#[test]
fn rejects_chunk_size_that_is_not_a_power_of_two() {
    let mut m = sample_manifest();
    m.images[0].chunk_size = 5000;
    m.images[0].chunk_digests.truncate(2);
    refused_both_ways(
        &m,
        &invalid_field("image 'rootfs' chunk_size", "is 5000, not a power of two"),
    );
}

#[test]
fn rejects_chunk_size_below_the_minimum() {
    let mut m = sample_manifest();
    m.images[0].chunk_size = 2048;
    refused_both_ways(
        &m,
        &invalid_field(
            "image 'rootfs' chunk_size",
            "is 2048, below the minimum of 4096",
        ),
    );
}

#[test]
fn rejects_chunk_size_above_the_maximum() {
    let mut m = sample_manifest();
    m.images[0].chunk_size = MAX_CHUNK_SIZE * 2;
    m.images[0].chunk_digests.truncate(1);
    refused_both_ways(
        &m,
        &Error::LimitExceeded {
            what: "image chunk size",
            limit: u64::from(MAX_CHUNK_SIZE),
            found: u64::from(MAX_CHUNK_SIZE) * 2,
        },
    );
}

#[test]
fn rejects_chunk_size_that_does_not_fit_u32() {
    let der = edit_image(&sample_manifest(), 0, |f| {
        f[3] = tlv(0x02, &[0x01, 0, 0, 0, 0]);
    });
    assert_eq!(
        Manifest::from_der(&der),
        Err(Error::LimitExceeded {
            what: "image chunk size",
            limit: u64::from(MAX_CHUNK_SIZE),
            found: 1 << 32
        })
    );
}

#[test]
fn rejects_digest_of_the_wrong_length() {
    let der = edit_image(&sample_manifest(), 0, |f| f[4] = tlv(0x04, &[0; 31]));
    assert_eq!(
        Manifest::from_der(&der),
        Err(invalid_field(
            "image 'rootfs' digest",
            "is 31 bytes, expected 32"
        ))
    );
}

#[test]
fn rejects_chunk_digests_of_the_wrong_length() {
    let mut m = sample_manifest();
    m.images[0].chunk_digests.pop();
    let expected = invalid_field(
        "image 'rootfs' chunk_digests",
        "is 64 bytes, expected 96 (3 chunks)",
    );
    refused_both_ways(&m, &expected);
    assert_eq!(
        expected.to_string(),
        "manifest: image 'rootfs' chunk_digests is 64 bytes, expected 96 (3 chunks)"
    );
    // Not a multiple of 32 either.
    let der = edit_image(&sample_manifest(), 1, |f| f[5] = tlv(0x04, &[0; 33]));
    assert_eq!(
        Manifest::from_der(&der),
        Err(invalid_field(
            "image 'modem' chunk_digests",
            "is 33 bytes, expected 32 (1 chunk)"
        ))
    );
}

#[test]
fn rejects_constructed_octet_string() {
    let der = edit_image(&sample_manifest(), 0, |f| {
        f[4] = join(0x24, &[tlv(0x04, &[0; 16]), tlv(0x04, &[0; 16])]);
    });
    let (_, reason) = malformed_reason(Manifest::from_der(&der));
    assert!(
        reason.contains("expected OCTET STRING for image 'rootfs' digest"),
        "{reason}"
    );
}

#[test]
fn accepts_unknown_non_critical_extensions() {
    let m = sample_manifest();
    assert!(!m.extensions.is_empty() && !m.images[1].extensions.is_empty());
    assert_eq!(Manifest::from_der(&m.to_der().unwrap()).unwrap(), m);
}

#[test]
fn rejects_unknown_critical_extension_in_the_manifest() {
    let mut m = sample_manifest();
    m.extensions[0].critical = true;
    let oid = m.extensions[0].id;
    refused_both_ways(&m, &Error::UnsupportedCriticalExtension { oid });
}

#[test]
fn rejects_unknown_critical_extension_in_an_image() {
    let mut m = sample_manifest();
    m.images[1].extensions[0].critical = true;
    let oid = m.images[1].extensions[0].id;
    refused_both_ways(&m, &Error::UnsupportedCriticalExtension { oid });
    let der = m.encode_unchecked();
    // The encoding of a critical extension carries an explicit TRUE.
    assert!(der.windows(3).any(|w| w == [0x01, 0x01, 0xFF]));
}

#[test]
fn rejects_duplicate_extension_id() {
    let mut m = sample_manifest();
    let dup = m.extensions[0].clone();
    m.extensions.push(Extension {
        value: vec![9],
        ..dup
    });
    refused_both_ways(
        &m,
        &invalid_field(
            "manifest extensions",
            "has extension 1.3.6.1.4.1.99999.2 more than once",
        ),
    );
}

#[test]
fn rejects_too_many_extensions() {
    let mut m = sample_manifest();
    m.images[0].extensions = (0..=MAX_EXTENSIONS as u32)
        .map(|i| Extension {
            id: ObjectIdentifier::from_arcs([1, 3, 6, 1, 4, 1, 99999, i]).unwrap(),
            critical: false,
            value: vec![],
        })
        .collect();
    refused_both_ways(
        &m,
        &Error::LimitExceeded {
            what: "number of extensions",
            limit: MAX_EXTENSIONS as u64,
            found: MAX_EXTENSIONS as u64 + 1,
        },
    );
}

#[test]
fn rejects_overlong_extension_value() {
    let mut m = sample_manifest();
    m.extensions[0].value = vec![0; MAX_EXTENSION_VALUE_LEN + 1];
    refused_both_ways(
        &m,
        &Error::LimitExceeded {
            what: "extension value length",
            limit: MAX_EXTENSION_VALUE_LEN as u64,
            found: MAX_EXTENSION_VALUE_LEN as u64 + 1,
        },
    );
}

#[test]
fn rejects_explicit_false_critical_flag() {
    let der = edit_manifest(&sample_manifest(), |p| {
        let mut list = split(&p[7]);
        let mut ext = split(&list[0]);
        ext.insert(1, tlv(0x01, &[0x00]));
        list[0] = join(0x30, &ext);
        p[7] = join(0xA0, &list);
    });
    let (_, reason) = malformed_reason(Manifest::from_der(&der));
    assert!(reason.contains("explicit FALSE"), "{reason}");
}

#[test]
fn rejects_non_der_boolean() {
    let der = edit_manifest(&sample_manifest(), |p| {
        let mut list = split(&p[7]);
        let mut ext = split(&list[0]);
        ext.insert(1, tlv(0x01, &[0x01]));
        list[0] = join(0x30, &ext);
        p[7] = join(0xA0, &list);
    });
    malformed_reason(Manifest::from_der(&der));
}

#[test]
fn rejects_present_but_empty_extension_list() {
    let der = edit_manifest(&sample_manifest(), |p| p[7] = tlv(0xA0, &[]));
    let (_, reason) = malformed_reason(Manifest::from_der(&der));
    assert!(reason.contains("present but empty"), "{reason}");
}

#[test]
fn rejects_non_canonical_extension_oid() {
    let der = edit_manifest(&sample_manifest(), |p| {
        let mut list = split(&p[7]);
        let mut ext = split(&list[0]);
        ext[0] = tlv(0x06, &[0x2B, 0x80, 0x06]);
        list[0] = join(0x30, &ext);
        p[7] = join(0xA0, &list);
    });
    let (_, reason) = malformed_reason(Manifest::from_der(&der));
    assert!(reason.contains("canonical"), "{reason}");
    // The writer refuses such an OID built in memory.
    let mut m = sample_manifest();
    m.extensions[0].id = ObjectIdentifier::from_bytes(&[0x2B, 0x80, 0x06]).unwrap();
    assert_eq!(
        m.to_der(),
        Err(invalid_field(
            "manifest extensions[0] id",
            "is not in canonical (shortest) DER form",
        ))
    );
}

#[test]
fn rejects_element_whose_length_runs_past_its_parent() {
    let der = edit_manifest(&sample_manifest(), |p| {
        // hardware_revisions SEQUENCE claiming one more byte than it holds
        let mut seq = p[3].clone();
        seq[1] += 1;
        seq.push(0); // keep the outer lengths consistent: the extra byte is the next field's
        p[3] = seq;
    });
    assert!(Manifest::from_der(&der).is_err());
}

#[test]
fn error_offsets_point_into_the_manifest() {
    // The security_version INTEGER is replaced by a BOOLEAN: the offset is where it starts.
    let m = sample_manifest();
    let good = m.encode_unchecked();
    let parts = split(&good);
    let header_len = good.len() - parts.concat().len();
    let at: usize = header_len + parts[..5].iter().map(Vec::len).sum::<usize>();
    let der = edit_manifest(&m, |p| p[5] = tlv(0x01, &[0xFF]));
    let (offset, _) = malformed_reason(Manifest::from_der(&der));
    assert_eq!(offset, Some(at as u64));
}

// ---------------------------------------------------------------------------------------------
// Format version 2: chunk tables (FORMAT.md §3.1)

/// The sample manifest with a chunk table on `rootfs` (chunks 0 and 2 zstd, 1 raw).
fn compressed_manifest() -> Manifest {
    let mut m = sample_manifest();
    let image = &mut m.images[0];
    image.stored_chunks = vec![
        StoredChunk {
            encoding: ChunkEncoding::Zstd,
            stored_len: 100,
            decompressed_len: 4096,
        },
        StoredChunk {
            encoding: ChunkEncoding::Raw,
            stored_len: 4096,
            decompressed_len: 4096,
        },
        StoredChunk {
            encoding: ChunkEncoding::Zstd,
            stored_len: 1000,
            decompressed_len: 1808,
        },
    ];
    m
}

#[test]
fn round_trips_a_version_2_manifest_with_its_chunk_table() {
    let m = compressed_manifest();
    assert_eq!(m.version(), 2);
    let der = m.to_der().unwrap();
    // manifestVersion 2 is the first field.
    assert_eq!(&der[4..7], &[0x02, 0x01, 0x02]);
    let parsed = Manifest::from_der(&der).unwrap();
    assert_eq!(parsed, m);
    assert_eq!(parsed.to_der().unwrap(), der);
    let rootfs = parsed.image("rootfs").unwrap();
    assert_eq!(rootfs.stored_size(), 100 + 4096 + 1000);
    assert_eq!(parsed.payload_len().unwrap(), 100 + 4096 + 1000 + 8192);
    assert_eq!(parsed.payload_range(1), Some(5196..5196 + 8192));
    assert_eq!(rootfs.stored_chunk(1).unwrap().encoding, ChunkEncoding::Raw);
    // An image without a table is all raw.
    let modem = parsed.image("modem").unwrap();
    assert_eq!(modem.stored_chunk(0).unwrap().stored_len, 8192);
    assert!(!modem.is_compressed());
}

#[test]
fn rejects_a_chunk_table_whose_decompressed_length_is_not_the_chunk_length() {
    // A table whose lengths are not the fixed layout lays out its chunks itself (version 3),
    // and then they must make up the image exactly.
    let mut m = compressed_manifest();
    m.images[0].stored_chunks[2].decompressed_len = 1000;
    assert!(m.images[0].has_variable_chunks());
    refused_both_ways(
        &m,
        &invalid_field(
            "image 'rootfs' chunk_table",
            "lays out 9192 bytes of chunks, the image is 10000 bytes",
        ),
    );
}

#[test]
fn a_table_that_lays_out_its_own_chunks_is_version_3_and_only_version_3() {
    let mut m = compressed_manifest();
    // 4096 + 4096 + 1808 laid out as 4000 + 4192 + 1808: raw records, the chunks' own lengths.
    for (record, len) in m.images[0].stored_chunks.iter_mut().zip([4000, 4096, 1904]) {
        *record = StoredChunk {
            encoding: ChunkEncoding::Raw,
            stored_len: len,
            decompressed_len: len,
        };
    }
    assert_eq!(m.version(), crate::MANIFEST_VERSION_VARIABLE_CHUNKS);
    let der = m.to_der().unwrap();
    let back = Manifest::from_der(&der).unwrap();
    assert_eq!(back, m);
    let image = &back.images[0];
    assert_eq!(
        image.chunk_layout().collect::<Vec<_>>(),
        [(0, 4000), (4000, 4096), (8096, 1904)]
    );
    assert_eq!(image.chunk_offset(2), Some(8096));
    assert_eq!(image.chunk_len(1), Some(4096));
    assert_eq!(image.chunk_offset(3), None);
    // The same bytes declared as version 2 are refused: a version-2 reader would take the
    // fixed layout.
    let as_v2 = edit_manifest(&m, |p| p[0] = tlv(0x02, &[2]));
    assert!(matches!(
        Manifest::from_der(&as_v2),
        Err(Error::InvalidField { field, .. }) if field == "manifest_version"
    ));
    // A chunk longer than the chunk size is refused.
    let mut long = m.clone();
    long.images[0].stored_chunks[0].decompressed_len = 4097;
    long.images[0].stored_chunks[0].stored_len = 4097;
    long.images[0].stored_chunks[1].decompressed_len = 3999;
    long.images[0].stored_chunks[1].stored_len = 3999;
    assert!(matches!(long.validate(), Err(Error::InvalidField { .. })));
}

#[test]
fn rejects_compressed_chunks_that_are_not_smaller_and_raw_chunks_that_differ() {
    let mut m = compressed_manifest();
    m.images[0].stored_chunks[0].stored_len = 4096;
    assert!(matches!(m.validate(), Err(Error::InvalidField { .. })));
    assert!(matches!(
        Manifest::from_der(&m.encode_unchecked()),
        Err(Error::InvalidField { .. })
    ));
    let mut m = compressed_manifest();
    m.images[0].stored_chunks[0].stored_len = 0;
    assert!(matches!(m.validate(), Err(Error::InvalidField { .. })));
    let mut m = compressed_manifest();
    m.images[0].stored_chunks[1].stored_len = 4000;
    assert!(matches!(m.validate(), Err(Error::InvalidField { .. })));
}

#[test]
fn rejects_a_chunk_table_with_the_wrong_number_of_records() {
    let mut m = compressed_manifest();
    m.images[0].stored_chunks.pop();
    // Two records for a 3-chunk image do not follow the fixed layout: they lay out 2 chunks,
    // and the 3 digests are one too many.
    let expected = invalid_field(
        "image 'rootfs' chunk_digests",
        "is 96 bytes, expected 64 (2 chunks)",
    );
    assert_eq!(m.validate(), Err(expected.clone()));
    assert_eq!(m.to_der(), Err(expected));
    assert_eq!(
        Manifest::from_der(&m.encode_unchecked()),
        Err(invalid_field(
            "image 'rootfs' chunk_table",
            "is 18 bytes, expected 27 (3 records of 9 bytes)",
        ))
    );
    // On the wire: a table of 26 bytes is not 3 records.
    let der = edit_image(&compressed_manifest(), 0, |fields| {
        let table = &mut fields[6];
        table.pop();
        table[1] -= 1;
    });
    assert!(matches!(
        Manifest::from_der(&der),
        Err(Error::InvalidField { .. })
    ));
}

#[test]
fn rejects_an_unknown_chunk_encoding() {
    let der = edit_image(&compressed_manifest(), 0, |fields| {
        fields[6][2] = 7; // chunk 0's encoding byte
    });
    let (_, reason) = malformed_reason(Manifest::from_der(&der));
    assert!(reason.contains("unknown encoding 7"), "{reason}");
}

#[test]
fn rejects_a_chunk_table_in_a_version_1_manifest_and_version_2_without_one() {
    // Version 1 with a table: the table is an unexpected field.
    let der = edit_manifest(&compressed_manifest(), |p| p[0] = tlv(0x02, &[1]));
    let (_, reason) = malformed_reason(Manifest::from_der(&der));
    assert!(reason.contains("unexpected field"), "{reason}");
    // Version 2 without any table is not canonical: it must be written as version 1.
    let der = edit_manifest(&sample_manifest(), |p| p[0] = tlv(0x02, &[2]));
    assert!(matches!(
        Manifest::from_der(&der),
        Err(Error::InvalidField { .. })
    ));
}

#[test]
fn header_format_version_must_match_the_manifest_version() {
    let m = compressed_manifest();
    let payload = m.payload_len().unwrap();
    let v1 = Header::new(10, payload);
    assert!(matches!(
        m.check_payload_len(&v1),
        Err(Error::InvalidField { .. })
    ));
    let v2 = Header {
        format_version: crate::FORMAT_VERSION_COMPRESSED,
        ..v1
    };
    assert_eq!(m.check_payload_len(&v2), Ok(()));
    let signed = crate::signed_message(&m).unwrap();
    assert_eq!(&signed[8..10], &[0, 2]);
    assert!(crate::parse_signed_message(&signed).is_ok());
    // The sample (all raw) still writes format version 1.
    let signed = crate::signed_message(&sample_manifest()).unwrap();
    assert_eq!(&signed[8..10], &[0, 1]);
}

/// `compressed_manifest` as a delta of a 20 000-byte source: chunk 0 patched against the
/// source's first 4096 bytes, chunk 1 copied from offset 8192.
fn delta_manifest() -> Manifest {
    let mut m = compressed_manifest();
    let image = &mut m.images[0];
    image.stored_chunks[0].encoding = ChunkEncoding::Patch;
    image.stored_chunks[1] = StoredChunk {
        encoding: ChunkEncoding::Source,
        stored_len: 0,
        decompressed_len: 4096,
    };
    image.source = Some(DeltaSource {
        size: 20_000,
        digest: [0xCC; 32],
        references: vec![
            SourceRef {
                offset: 0,
                len: 4096,
                frame_digest: [7; 32],
            },
            SourceRef {
                offset: 8192,
                len: 4096,
                frame_digest: [0; 32],
            },
        ],
    });
    m
}

#[test]
fn round_trips_a_version_4_manifest_with_its_source() {
    let m = delta_manifest();
    assert_eq!(m.version(), MANIFEST_VERSION_DELTA);
    let der = m.to_der().unwrap();
    assert_eq!(&der[4..7], &[0x02, 0x01, 0x04]);
    let parsed = Manifest::from_der(&der).unwrap();
    assert_eq!(parsed, m);
    // Copied chunks store nothing: 100 (patch frame) + 0 + 1000.
    assert_eq!(parsed.images[0].stored_size(), 1100);
    // The same bytes as version 3 are refused: the source is an unexpected field there, and the
    // encodings 2 and 3 unknown.
    let as_v3 = edit_manifest(&m, |p| p[0] = tlv(0x02, &[3]));
    assert!(matches!(
        Manifest::from_der(&as_v3),
        Err(Error::Malformed { .. })
    ));
}

#[test]
fn a_version_4_manifest_needs_a_source_and_a_source_needs_rebuilt_chunks() {
    let m = delta_manifest();
    let mut no_source = m.clone();
    no_source.images[0].source = None;
    let expected = invalid_field(
        "image 'rootfs' source",
        "is absent, but chunk 0 is stored as patch (it needs one)",
    );
    assert_eq!(no_source.validate(), Err(expected.clone()));
    assert_eq!(no_source.to_der(), Err(expected));
    // Without a source it is written as version 2, where encoding 3 is unknown.
    let (_, reason) = malformed_reason(Manifest::from_der(&no_source.encode_unchecked()));
    assert_eq!(
        reason,
        "image 'rootfs' chunk_table: chunk 0 has unknown encoding 3"
    );
    let mut unused = compressed_manifest();
    unused.images[0].source = m.images[0].source.clone();
    unused.images[0].source.as_mut().unwrap().references.clear();
    refused_both_ways(
        &unused,
        &invalid_field(
            "image 'rootfs' source",
            "is present, but no chunk is copied or patched from it (write the image without one)",
        ),
    );
    // A version-4 manifest without any source must be written as the lower version.
    let as_v4 = edit_manifest(&compressed_manifest(), |p| p[0] = tlv(0x02, &[4]));
    assert!(matches!(
        Manifest::from_der(&as_v4),
        Err(Error::InvalidField { field, .. }) if field == "manifest_version"
    ));
}

#[test]
fn rejects_source_references_out_of_range_or_inconsistent() {
    let mut past = delta_manifest();
    past.images[0].source.as_mut().unwrap().references[1].offset = 20_000 - 4095;
    refused_both_ways(
        &past,
        &invalid_field(
            "image 'rootfs' source",
            "reference of chunk 1 reads 4096 bytes at offset 15905, past the source image's 20000 bytes",
        ),
    );
    let mut wrapping = delta_manifest();
    wrapping.images[0].source.as_mut().unwrap().references[1].offset = u64::MAX;
    assert!(matches!(
        wrapping.validate(),
        Err(Error::InvalidField { .. })
    ));
    let mut short_copy = delta_manifest();
    short_copy.images[0].source.as_mut().unwrap().references[1].len = 4095;
    refused_both_ways(
        &short_copy,
        &invalid_field(
            "image 'rootfs' source",
            "reference of chunk 1 copies 4095 bytes into a chunk of 4096",
        ),
    );
    let mut copy_with_digest = delta_manifest();
    copy_with_digest.images[0]
        .source
        .as_mut()
        .unwrap()
        .references[1]
        .frame_digest = [1; 32];
    assert!(matches!(
        copy_with_digest.validate(),
        Err(Error::InvalidField { .. })
    ));
    let mut huge = delta_manifest();
    let source = huge.images[0].source.as_mut().unwrap();
    source.size = 1 << 30;
    source.references[0].len = MAX_PATCH_SOURCE_LEN + 1;
    refused_both_ways(
        &huge,
        &Error::LimitExceeded {
            what: "patch reference length",
            limit: u64::from(MAX_PATCH_SOURCE_LEN),
            found: u64::from(MAX_PATCH_SOURCE_LEN) + 1,
        },
    );
    let mut missing = delta_manifest();
    missing.images[0].source.as_mut().unwrap().references.pop();
    assert!(matches!(
        missing.validate(),
        Err(Error::InvalidField { .. })
    ));
    // The parser checks the references' length against the rebuilt chunks before reading them.
    assert!(matches!(
        Manifest::from_der(&missing.encode_unchecked()),
        Err(Error::InvalidField { field, .. }) if field == "image 'rootfs' source references"
    ));
    let mut copied_with_bytes = delta_manifest();
    copied_with_bytes.images[0].stored_chunks[1].stored_len = 4096;
    assert!(matches!(
        copied_with_bytes.validate(),
        Err(Error::InvalidField { .. })
    ));
}
