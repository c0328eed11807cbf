//! Helpers for unit tests: build, split and re-join DER by hand to make bad fixtures.
#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]

use alloc::vec;
use alloc::vec::Vec;

use crate::der_io::{DerCursor, push_tlv};
use crate::{Extension, ImageSpec, Manifest, ObjectIdentifier};

/// A TLV.
pub(crate) fn tlv(tag: u8, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    push_tlv(&mut out, tag, value);
    out
}

/// The TLVs inside a constructed TLV.
pub(crate) fn split(der: &[u8]) -> Vec<Vec<u8>> {
    let outer = DerCursor::read_outer(der, der[0], "test", &"test").unwrap();
    let mut c = outer.cursor("test");
    let mut parts = Vec::new();
    while !c.is_empty() {
        parts.push(c.read_any(&"part").unwrap().raw.to_vec());
    }
    parts
}

/// A constructed TLV from parts.
pub(crate) fn join(tag: u8, parts: &[Vec<u8>]) -> Vec<u8> {
    tlv(tag, &parts.concat())
}

/// A valid manifest with two images, hardware revisions and a non-critical extension.
pub(crate) fn sample_manifest() -> Manifest {
    Manifest {
        product: "acme-lte".into(),
        chipset: "MDM9607".into(),
        hardware_revisions: vec!["r1".into(), "r2".into()],
        software_version: "2.0.1 (build 77)".into(),
        security_version: 7,
        images: vec![
            ImageSpec {
                name: "rootfs".into(),
                partition: "system".into(),
                size: 10_000,
                chunk_size: 4096,
                digest: [0xAA; 32],
                chunk_digests: vec![[1; 32], [2; 32], [3; 32]],
                stored_chunks: Vec::new(),
                source: None,
                extensions: vec![],
            },
            ImageSpec {
                name: "modem".into(),
                partition: "modem_a".into(),
                size: 8192,
                chunk_size: 8192,
                digest: [0xBB; 32],
                chunk_digests: vec![[4; 32]],
                stored_chunks: Vec::new(),
                source: None,
                extensions: vec![Extension {
                    id: ObjectIdentifier::new_unwrap("1.3.6.1.4.1.99999.1"),
                    critical: false,
                    value: vec![1, 2, 3],
                }],
            },
        ],
        extensions: vec![Extension {
            id: ObjectIdentifier::new_unwrap("1.3.6.1.4.1.99999.2"),
            critical: false,
            value: vec![],
        }],
        trust_rotation: None,
    }
}

/// Re-encodes `manifest` after `f` edited the top-level field TLVs
/// (0 version, 1 product, 2 chipset, 3 revisions, 4 software version, 5 security version,
/// 6 images, 7 extensions).
pub(crate) fn edit_manifest(manifest: &Manifest, f: impl FnOnce(&mut Vec<Vec<u8>>)) -> Vec<u8> {
    let mut parts = split(&manifest.encode_unchecked());
    f(&mut parts);
    join(0x30, &parts)
}

/// Re-encodes `manifest` after `f` edited the field TLVs of image `index`
/// (0 name, 1 partition, 2 size, 3 chunk size, 4 digest, 5 chunk digests, 6 extensions).
pub(crate) fn edit_image(
    manifest: &Manifest,
    index: usize,
    f: impl FnOnce(&mut Vec<Vec<u8>>),
) -> Vec<u8> {
    edit_manifest(manifest, |parts| {
        let mut images = split(&parts[6]);
        let mut fields = split(&images[index]);
        f(&mut fields);
        images[index] = join(0x30, &fields);
        parts[6] = join(0x30, &images);
    })
}
