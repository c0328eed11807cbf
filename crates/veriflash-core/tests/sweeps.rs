//! Corruption sweeps over a small multi-image package (chunk size 4 KiB), beyond `spine.rs`:
//! every single-byte change of the prefix under several masks, sampled payload bit flips,
//! truncation at every 4 KiB and every section boundary, trailing data of several sizes, and
//! sections swapped between validly signed packages. Each is refused with the right kind.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use veriflash_core::format::HEADER_LEN;
use veriflash_core::sig::{PinnedKeys, SigningKey, Verifier};
use veriflash_core::{Error, ErrorKind};

use support::{Built, Image, build, pseudo_random, verify_bytes};

const CHUNK: u32 = 4096;

/// Three images, about 300 KiB in all, none a multiple of the chunk size but the last.
fn images(seed: u64) -> Vec<Image> {
    vec![
        Image {
            name: "sbl",
            bytes: pseudo_random(70_001, seed),
            chunk_size: CHUNK,
        },
        Image {
            name: "modem",
            bytes: pseudo_random(217_003, seed + 1),
            chunk_size: CHUNK,
        },
        Image {
            name: "cfg",
            bytes: pseudo_random(3 * 4096, seed + 2),
            chunk_size: CHUNK,
        },
    ]
}

fn trust_of(key: &SigningKey) -> PinnedKeys {
    let mut trust = PinnedKeys::new();
    trust.add(key.verifying_key());
    trust
}

fn refused(bytes: &[u8], verifier: &Verifier<'_>, what: &str) -> Error {
    verify_bytes(bytes, verifier).expect_err(&format!("{what}: accepted"))
}

/// What a changed byte of each prefix section may be refused as.
fn allowed_kinds(fx: &Built, at: usize) -> &'static [ErrorKind] {
    use ErrorKind::*;
    match at {
        0..8 => &[Malformed], // magic
        // format version: another version this reader knows (1 to 3) is caught by the
        // signature, which covers the header
        8..10 => &[UnsupportedFormat, NotAuthentic],
        10..12 => &[Malformed],         // header_len
        12..16 => &[UnsupportedFormat], // flags
        // manifest_len: the split moves, so the sections after it no longer parse (or, if they
        // happen to, the signature no longer covers the same bytes).
        16..20 => &[
            Malformed,
            LimitExceeded,
            Truncated,
            NotAuthentic,
            UnknownSigner,
        ],
        20..24 => &[Malformed], // reserved
        24..HEADER_LEN => &[NotAuthentic, LimitExceeded, Malformed], // payload_len (signed)
        _ if at < fx.sigblock_at => &[NotAuthentic], // manifest bytes: only the signature sees them
        _ => &[
            // Structure, key id, algorithm or signature value of the signature block.
            Malformed,
            Truncated,
            LimitExceeded,
            NotAuthentic,
            UnknownSigner,
            UnsupportedAlgorithm,
        ],
    }
}

#[test]
fn every_single_byte_change_in_the_prefix_is_refused_with_its_sections_kind() {
    let key = SigningKey::generate_p256().unwrap();
    let trust = trust_of(&key);
    let verifier = Verifier::new(&trust);
    let fx = build(&[&key], images(1), 5);
    verify_bytes(&fx.bytes, &verifier).unwrap();
    let mut bytes = fx.bytes.clone();
    let mut tried = 0usize;
    for at in 0..fx.payload_at {
        // spine.rs flips 0x01 and 0x80; these add middle bits and a whole-byte inversion.
        for mask in [0x02u8, 0x10, 0x40, 0xFF] {
            bytes[at] ^= mask;
            let result = verify_bytes(&bytes, &verifier);
            bytes[at] ^= mask;
            let err = result.expect_err(&format!("byte {at} ^ {mask:#04x} accepted"));
            let allowed = allowed_kinds(&fx, at);
            assert!(
                allowed.contains(&err.kind()),
                "byte {at} ^ {mask:#04x}: {:?} ({err}) not in {allowed:?}",
                err.kind()
            );
            tried += 1;
        }
    }
    assert_eq!(tried, fx.payload_at * 4);
    assert_eq!(bytes, fx.bytes, "the sweep restored every byte");
}

#[test]
fn payload_bit_flips_are_integrity_mismatches_naming_image_and_chunk() {
    let key = SigningKey::generate_p256().unwrap();
    let trust = trust_of(&key);
    let verifier = Verifier::new(&trust);
    let fx = build(&[&key], images(2), 5);
    let mut bytes = fx.bytes.clone();
    let mut samples = 0;
    for &(name, start, size, chunk) in &fx.images {
        let chunk = chunk as usize;
        // Every chunk's first and last byte, plus a stride through the middle.
        let mut offsets: Vec<usize> = (0..size)
            .step_by(chunk)
            .flat_map(|c| [c, (c + chunk).min(size) - 1])
            .collect();
        offsets.extend((0..size).step_by(1_009));
        for off in offsets {
            for bit in [0x01u8, 0x80] {
                bytes[start + off] ^= bit;
                let err = refused(&bytes, &verifier, &format!("{name}+{off} ^ {bit:#x}"));
                bytes[start + off] ^= bit;
                assert_eq!(
                    err.kind(),
                    ErrorKind::IntegrityMismatch,
                    "{name}+{off}: {err}"
                );
                assert_eq!(err.location().image.as_deref(), Some(name), "{name}+{off}");
                assert_eq!(
                    err.location().chunk,
                    Some((off / chunk) as u64),
                    "{name}+{off}: {err}"
                );
                samples += 1;
            }
        }
    }
    assert!(samples > 300, "only {samples} samples");
    verify_bytes(&bytes, &verifier).unwrap();
}

#[test]
fn truncation_at_every_4_kib_and_every_section_boundary_is_refused() {
    let key = SigningKey::generate_p256().unwrap();
    let trust = trust_of(&key);
    let verifier = Verifier::new(&trust);
    let fx = build(&[&key], images(3), 5);
    let mut cuts: Vec<usize> = (0..fx.bytes.len()).step_by(4096).collect();
    let mut boundaries = vec![
        0,
        8,
        HEADER_LEN,
        fx.sigblock_at,
        fx.payload_at,
        fx.bytes.len(),
    ];
    boundaries.extend(fx.images.iter().map(|&(_, start, _, _)| start));
    for b in boundaries {
        cuts.extend([b.saturating_sub(1), b, b + 1]);
    }
    cuts.retain(|&c| c < fx.bytes.len());
    cuts.sort_unstable();
    cuts.dedup();
    for cut in cuts {
        let err = refused(&fx.bytes[..cut], &verifier, &format!("cut at {cut}"));
        let expected: &[ErrorKind] = if cut >= fx.payload_at {
            &[ErrorKind::Truncated]
        } else {
            &[ErrorKind::Truncated, ErrorKind::Malformed]
        };
        assert!(expected.contains(&err.kind()), "cut at {cut}: {err}");
        if cut >= fx.payload_at {
            // The payload is cut: the error names the image being streamed.
            let image = fx
                .images
                .iter()
                .rfind(|&&(_, start, _, _)| start <= cut)
                .map(|&(name, ..)| name);
            assert_eq!(err.location().image.as_deref(), image, "cut at {cut}");
        }
    }
}

#[test]
fn trailing_bytes_of_any_length_are_refused() {
    let key = SigningKey::generate_p256().unwrap();
    let trust = trust_of(&key);
    let verifier = Verifier::new(&trust);
    let fx = build(&[&key], images(4), 5);
    for extra in [1usize, 4096, 1 << 20] {
        for fill in [0x00u8, 0xFF] {
            let mut bytes = fx.bytes.clone();
            bytes.resize(fx.bytes.len() + extra, fill);
            let err = refused(&bytes, &verifier, &format!("{extra} trailing bytes"));
            assert_eq!(err.kind(), ErrorKind::TrailingData, "{extra}: {err}");
        }
        // A whole second package appended is trailing data too.
        let mut bytes = fx.bytes.clone();
        bytes.extend_from_slice(&fx.bytes[..extra.min(fx.bytes.len())]);
        let err = refused(&bytes, &verifier, "package appended");
        assert_eq!(err.kind(), ErrorKind::TrailingData, "{err}");
    }
}

fn splice(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

#[test]
fn sections_swapped_between_two_signed_packages_are_refused() {
    let key = SigningKey::generate_p256().unwrap();
    let stranger = SigningKey::generate_p256().unwrap();
    let trust = trust_of(&key);
    let verifier = Verifier::new(&trust);
    // `a` and `b`: same layout (same image sizes, so the same lengths everywhere), different
    // bytes and security version. `c`: a different layout. `d`: `a`'s images, untrusted signer.
    let a = build(&[&key], images(10), 5);
    let b = build(&[&key], images(20), 6);
    let c = build(
        &[&key],
        vec![Image {
            name: "modem",
            bytes: pseudo_random(50_000, 30),
            chunk_size: CHUNK,
        }],
        5,
    );
    let d = build(&[&stranger], images(10), 5);
    verify_bytes(&a.bytes, &verifier).unwrap();
    verify_bytes(&b.bytes, &verifier).unwrap();
    verify_bytes(&c.bytes, &verifier).unwrap();
    assert_eq!(a.sigblock_at, b.sigblock_at, "a and b share a layout");
    assert_eq!(a.header(), b.header(), "same lengths, so the same header");

    let cases: Vec<(&str, Vec<u8>, &[ErrorKind])> = vec![
        // Prefix of one, payload of the other.
        (
            "prefix a + payload b",
            splice(&[&a.bytes[..a.payload_at], b.payload()]),
            &[ErrorKind::IntegrityMismatch],
        ),
        (
            "prefix b + payload a",
            splice(&[&b.bytes[..b.payload_at], a.payload()]),
            &[ErrorKind::IntegrityMismatch],
        ),
        // Manifest of one, signature block of the other: a valid signature, but not over this.
        (
            "signed message a + signature block b",
            splice(&[&a.bytes[..a.sigblock_at], b.signature_block(), a.payload()]),
            &[ErrorKind::NotAuthentic],
        ),
        (
            "header a + manifest b + signature block a",
            splice(&[a.header(), b.manifest(), a.signature_block(), b.payload()]),
            &[ErrorKind::NotAuthentic],
        ),
        // A signature block from an untrusted signer over the very same message.
        (
            "signed message a + signature block d",
            splice(&[&a.bytes[..a.sigblock_at], d.signature_block(), a.payload()]),
            &[ErrorKind::UnknownSigner],
        ),
        // Different layouts: the lengths no longer line up.
        (
            "prefix c + payload a",
            splice(&[&c.bytes[..c.payload_at], a.payload()]),
            &[ErrorKind::IntegrityMismatch, ErrorKind::TrailingData],
        ),
        (
            "prefix a + payload c",
            splice(&[&a.bytes[..a.payload_at], c.payload()]),
            &[ErrorKind::IntegrityMismatch, ErrorKind::Truncated],
        ),
        (
            "header c + manifest a + signature block a",
            splice(&[c.header(), a.manifest(), a.signature_block(), a.payload()]),
            &[
                ErrorKind::Malformed,
                ErrorKind::Truncated,
                ErrorKind::LimitExceeded,
                ErrorKind::NotAuthentic,
            ],
        ),
        (
            "signed message c + signature block a",
            splice(&[&c.bytes[..c.sigblock_at], a.signature_block(), c.payload()]),
            &[ErrorKind::NotAuthentic],
        ),
        (
            "manifest c in a's package",
            splice(&[a.header(), c.manifest(), a.signature_block(), a.payload()]),
            &[
                ErrorKind::Malformed,
                ErrorKind::Truncated,
                ErrorKind::LimitExceeded,
                ErrorKind::NotAuthentic,
            ],
        ),
        // Two signature blocks back to back: the second is read as payload.
        (
            "two signature blocks",
            splice(&[&a.bytes[..a.payload_at], b.signature_block(), a.payload()]),
            &[ErrorKind::IntegrityMismatch],
        ),
    ];
    for (what, bytes, expected) in cases {
        let err = refused(&bytes, &verifier, what);
        assert!(
            expected.contains(&err.kind()),
            "{what}: {:?} ({err}) not in {expected:?}",
            err.kind()
        );
    }
}
