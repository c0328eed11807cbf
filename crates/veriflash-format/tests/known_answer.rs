//! Known-answer test: a small manifest whose exact DER was checked by hand and with
//! `openssl asn1parse -inform DER` (see `tests/data/kat_manifest.md`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use veriflash_format::{Extension, ImageSpec, Manifest, ObjectIdentifier};

fn kat_manifest() -> Manifest {
    Manifest {
        product: "acme".into(),
        chipset: "MDM9607".into(),
        hardware_revisions: vec!["r2".into()],
        software_version: "1.0".into(),
        security_version: 200,
        images: vec![ImageSpec {
            name: "boot".into(),
            partition: "sbl1".into(),
            size: 5000,
            chunk_size: 4096,
            digest: [0x11; 32],
            chunk_digests: vec![[0x22; 32], [0x33; 32]],
            stored_chunks: Vec::new(),
            source: None,
            extensions: vec![],
        }],
        extensions: vec![Extension {
            id: ObjectIdentifier::new_unwrap("1.3.6.1.4.1.99999.1"),
            critical: false,
            value: b"hi".to_vec(),
        }],
        trust_rotation: None,
    }
}

/// The hex of `tests/data/kat_manifest.der.hex`, whitespace and `#` comments ignored.
fn expected_der() -> Vec<u8> {
    let text = include_str!("data/kat_manifest.der.hex");
    let digits: String = text
        .lines()
        .map(|line| line.split('#').next().unwrap_or(""))
        .flat_map(|line| line.chars().filter(char::is_ascii_hexdigit))
        .collect();
    assert_eq!(digits.len() % 2, 0, "odd number of hex digits");
    (0..digits.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&digits[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn kat_manifest_encodes_to_the_checked_der() {
    let der = kat_manifest().to_der().unwrap();
    assert_eq!(der, expected_der());
}

#[test]
fn kat_der_parses_to_the_manifest() {
    assert_eq!(Manifest::from_der(&expected_der()).unwrap(), kat_manifest());
}
