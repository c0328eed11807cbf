//! Property tests: for arbitrary valid headers, manifests and signature blocks, write -> parse
//! -> write is byte-identical and parse(write(x)) == x; arbitrary and mutated bytes never make a
//! parser panic, and whatever a parser accepts re-encodes to exactly the bytes it accepted
//! (strict DER has one encoding per value).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::cast_possible_truncation,
    missing_docs
)]
// `read_prefix` needs the `std` feature (on by default).
#![cfg(feature = "std")]

use proptest::collection::vec;
use proptest::prelude::*;
use veriflash_format::limits::{MAX_MANIFEST_LEN, MAX_PAYLOAD_LEN};
use veriflash_format::{
    BlockLen, ChunkEncoding, Extension, HEADER_LEN, Header, ImageSpec, Manifest, ObjectIdentifier,
    PackageRef, RotationAnchor, SignatureBlock, SignatureEntry, StoredChunk, TrustRotation,
    encode_prefix, read_prefix, signature_block_len, signed_message,
};

fn text() -> impl Strategy<Value = String> {
    "\\PC{1,24}".prop_filter("1..=128 bytes", |s| !s.is_empty() && s.len() <= 128)
}

fn identifier() -> impl Strategy<Value = String> {
    "[!-~]{1,24}"
}

fn oid() -> impl Strategy<Value = ObjectIdentifier> {
    (0u32..=2, 0u32..=39, vec(any::<u32>(), 0..6)).prop_map(|(a, b, rest)| {
        let arcs = [a, b].into_iter().chain(rest);
        ObjectIdentifier::from_arcs(arcs).expect("valid arcs")
    })
}

fn extensions() -> impl Strategy<Value = Vec<Extension>> {
    vec((oid(), vec(any::<u8>(), 0..40)), 0..4).prop_map(|list| {
        let mut out: Vec<Extension> = Vec::new();
        for (id, value) in list {
            if out.iter().all(|e| e.id != id) {
                out.push(Extension {
                    id,
                    critical: false,
                    value,
                });
            }
        }
        out
    })
}

fn image() -> impl Strategy<Value = ImageSpec> {
    (
        12u32..=24,
        1u64..=64,
        any::<u64>(),
        any::<[u8; 32]>(),
        any::<u8>(),
    )
        .prop_flat_map(|(shift, max_chunks, size_seed, digest, seed)| {
            let chunk_size = 1u32 << shift;
            let size = 1 + size_seed % (u64::from(chunk_size) * max_chunks);
            (
                identifier(),
                identifier(),
                Just(size),
                Just(chunk_size),
                Just(digest),
                Just(seed),
                extensions(),
            )
        })
        .prop_map(
            |(name, partition, size, chunk_size, digest, seed, extensions)| {
                let n = size.div_ceil(u64::from(chunk_size));
                let chunk_digests = (0..n).map(|i| [seed.wrapping_add(i as u8); 32]).collect();
                ImageSpec {
                    name,
                    partition,
                    size,
                    chunk_size,
                    digest,
                    chunk_digests,
                    stored_chunks: Vec::new(),
                    source: None,
                    extensions,
                }
            },
        )
}

fn manifest() -> impl Strategy<Value = Manifest> {
    (
        text(),
        text(),
        vec(text(), 0..4),
        text(),
        any::<u64>(),
        vec(image(), 1..4),
        extensions(),
        proptest::option::of(rotation()),
    )
        .prop_map(
            |(
                product,
                chipset,
                hardware_revisions,
                software_version,
                security_version,
                images,
                extensions,
                trust_rotation,
            )| {
                // Make names and partitions unique: "<index>-<base>" cannot collide.
                let images = images
                    .into_iter()
                    .enumerate()
                    .map(|(i, mut image)| {
                        image.name = format!("{i}-{}", image.name);
                        image.partition = format!("{i}-{}", image.partition);
                        image
                    })
                    .collect();
                Manifest {
                    product,
                    chipset,
                    hardware_revisions,
                    software_version,
                    security_version,
                    images,
                    extensions,
                    trust_rotation,
                }
            },
        )
}

/// A trust rotation of distinct anchors (each a SEQUENCE whose content starts with its index,
/// so no two are equal), any version and a threshold within the set.
fn rotation() -> impl Strategy<Value = TrustRotation> {
    (
        1..=u64::MAX,
        vec((any::<bool>(), vec(any::<u8>(), 0..40)), 1..5),
    )
        .prop_flat_map(|(version, anchors)| {
            let n = anchors.len() as u32;
            (Just(version), 1..=n, Just(anchors))
        })
        .prop_map(|(version, threshold, anchors)| TrustRotation {
            version,
            threshold,
            anchors: anchors
                .into_iter()
                .enumerate()
                .map(|(i, (is_cert, filler))| {
                    // SEQUENCE { OCTET STRING index || filler }
                    let mut content = vec![i as u8];
                    content.extend_from_slice(&filler);
                    let mut der = vec![0x30, content.len() as u8 + 2, 0x04, content.len() as u8];
                    der.extend_from_slice(&content);
                    if is_cert {
                        RotationAnchor::Certificate(der)
                    } else {
                        RotationAnchor::PublicKey(der)
                    }
                })
                .collect(),
        })
}

fn certificate() -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..300).prop_map(|body| {
        let mut der = vec![0x30];
        if body.len() < 0x80 {
            der.push(body.len() as u8);
        } else if body.len() < 0x100 {
            der.extend_from_slice(&[0x81, body.len() as u8]);
        } else {
            der.extend_from_slice(&[0x82, (body.len() >> 8) as u8, body.len() as u8]);
        }
        der.extend_from_slice(&body);
        der
    })
}

fn signature_block() -> impl Strategy<Value = SignatureBlock> {
    vec(
        (
            oid(),
            any::<[u8; 32]>(),
            vec(any::<u8>(), 1..600),
            vec(certificate(), 0..4),
        ),
        1..5,
    )
    .prop_map(|entries| SignatureBlock {
        entries: entries
            .into_iter()
            .map(
                |(algorithm, key_id, signature, certificates)| SignatureEntry {
                    algorithm,
                    key_id,
                    signature,
                    certificates,
                },
            )
            .collect(),
    })
}

fn header() -> impl Strategy<Value = Header> {
    (1..=MAX_MANIFEST_LEN, 1..=MAX_PAYLOAD_LEN, 1u16..=2).prop_map(|(m, p, v)| Header {
        format_version: v,
        ..Header::new(m, p)
    })
}

/// Gives image 0 (and, by `seed`, others) a chunk table (format version 2): each chunk raw or
/// zstd with a stored length below its length.
fn with_chunk_tables(mut m: Manifest, mut seed: u64) -> Manifest {
    let mut next = move || {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        seed >> 33
    };
    for (i, image) in m.images.iter_mut().enumerate() {
        if i > 0 && next() % 2 == 0 {
            continue;
        }
        image.stored_chunks = (0..image.chunk_count())
            .map(|c| {
                let len = image.chunk_len(c).unwrap() as u32;
                if len > 1 && next() % 3 != 0 {
                    StoredChunk {
                        encoding: ChunkEncoding::Zstd,
                        stored_len: 1 + (next() as u32) % (len - 1),
                        decompressed_len: len,
                    }
                } else {
                    StoredChunk {
                        encoding: ChunkEncoding::Raw,
                        stored_len: len,
                        decompressed_len: len,
                    }
                }
            })
            .collect();
    }
    m
}

/// Keeps the payload small (at most 40 KB per image) so whole packages stay cheap to build.
fn small_images(mut m: Manifest) -> Manifest {
    for image in &mut m.images {
        image.chunk_size = 4096;
        image.size = 1 + image.size % 40_000;
        let n = image.size.div_ceil(4096) as usize;
        image.chunk_digests.resize(n, [7; 32]);
    }
    m
}

/// Applies a few byte edits (set, insert, remove) to `bytes`.
fn mutate(mut bytes: Vec<u8>, edits: &[(usize, u8, u8)]) -> Vec<u8> {
    for &(at, value, kind) in edits {
        if bytes.is_empty() {
            break;
        }
        let at = at % bytes.len();
        match kind % 3 {
            0 => bytes[at] = value,
            1 => bytes.insert(at, value),
            _ => {
                bytes.remove(at);
            }
        }
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig {
        // Failures are saved next to this file (tests/proptest_roundtrip.proptest-regressions)
        // and committed, so they are replayed first on every run.
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::WithSource("proptest-regressions"),
        )),
        ..ProptestConfig::default()
    })]

    #[test]
    fn header_round_trips(h in header()) {
        let bytes = h.to_bytes();
        prop_assert_eq!(Header::parse(&bytes).unwrap(), h);
        prop_assert_eq!(Header::parse(&bytes).unwrap().to_bytes(), bytes);
    }

    #[test]
    fn manifest_round_trips(m in manifest()) {
        let der = m.to_der().unwrap();
        let parsed = Manifest::from_der(&der).unwrap();
        prop_assert_eq!(&parsed, &m);
        prop_assert_eq!(parsed.to_der().unwrap(), der);
    }

    #[test]
    fn version_2_manifest_round_trips(
        m in (manifest().prop_map(small_images), any::<u64>())
            .prop_map(|(m, seed)| with_chunk_tables(m, seed))
    ) {
        prop_assert_eq!(m.version(), 2);
        let der = m.to_der().unwrap();
        let parsed = Manifest::from_der(&der).unwrap();
        prop_assert_eq!(&parsed, &m);
        prop_assert_eq!(parsed.to_der().unwrap(), der);
    }

    #[test]
    fn version_2_package_round_trips(
        m in (manifest().prop_map(small_images), any::<u64>())
            .prop_map(|(m, seed)| with_chunk_tables(m, seed)),
        b in signature_block(),
    ) {
        let message = signed_message(&m).unwrap();
        prop_assert_eq!(Header::parse(&message[..HEADER_LEN]).unwrap().format_version, 2);
        let mut package = encode_prefix(&message, &b).unwrap();
        let prefix_len = package.len();
        let payload_len = m.payload_len().unwrap();
        let stored: u64 = m.images.iter().map(ImageSpec::stored_size).sum();
        prop_assert_eq!(payload_len, stored);
        package.resize(prefix_len + payload_len as usize, 0xEE);
        let p = PackageRef::parse(&package).unwrap();
        prop_assert_eq!(p.signed_message(), &message[..]);
        prop_assert_eq!(Manifest::from_der(p.manifest_der()).unwrap(), m);
    }

    #[test]
    fn signature_block_round_trips(b in signature_block()) {
        let der = b.to_der().unwrap();
        prop_assert_eq!(signature_block_len(&der[..2.min(der.len())]).is_ok(), true);
        prop_assert_eq!(signature_block_len(&der).unwrap(), BlockLen::Total(der.len()));
        let parsed = SignatureBlock::from_der(&der).unwrap();
        prop_assert_eq!(&parsed, &b);
        prop_assert_eq!(parsed.to_der().unwrap(), der);
    }

    #[test]
    fn package_round_trips(m in manifest().prop_map(small_images), b in signature_block()) {
        let message = signed_message(&m).unwrap();
        let mut package = encode_prefix(&message, &b).unwrap();
        let prefix_len = package.len();
        let payload_len = m.payload_len().unwrap();
        package.resize(prefix_len + payload_len as usize, 0xEE);
        let p = PackageRef::parse(&package).unwrap();
        prop_assert_eq!(p.signed_message(), &message[..]);
        prop_assert_eq!(p.signature_block(), &b);
        prop_assert_eq!(p.payload_offset(), prefix_len);
        prop_assert_eq!(Manifest::from_der(p.manifest_der()).unwrap(), m);
        let prefix = read_prefix(&mut &package[..]).unwrap();
        prop_assert_eq!(prefix.payload_offset(), prefix_len as u64);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..512)) {
        let _ = Header::parse(&bytes);
        let _ = Manifest::from_der(&bytes);
        let _ = SignatureBlock::from_der(&bytes);
        let _ = signature_block_len(&bytes);
        let _ = PackageRef::parse(&bytes);
        let _ = read_prefix(&mut &bytes[..]);
        let _ = veriflash_format::parse_signed_message(&bytes);
    }

    #[test]
    fn arbitrary_bytes_after_a_valid_header_never_panic(
        m in 1u32..600, p in 1u64..600, rest in vec(any::<u8>(), 0..1200),
    ) {
        let mut bytes = Header::new(m, p).to_bytes().to_vec();
        bytes.extend_from_slice(&rest);
        let _ = PackageRef::parse(&bytes);
        let _ = read_prefix(&mut &bytes[..]);
        let _ = veriflash_format::parse_signed_message(&bytes);
    }

    #[test]
    fn mutated_manifests_are_refused_or_canonical(
        m in manifest(),
        edits in vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..4),
    ) {
        let der = mutate(m.to_der().unwrap(), &edits);
        if let Ok(parsed) = Manifest::from_der(&der) {
            prop_assert_eq!(parsed.to_der().unwrap(), der);
        }
    }

    #[test]
    fn mutated_signature_blocks_are_refused_or_canonical(
        b in signature_block(),
        edits in vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..4),
    ) {
        let der = mutate(b.to_der().unwrap(), &edits);
        if let Ok(parsed) = SignatureBlock::from_der(&der) {
            prop_assert_eq!(parsed.to_der().unwrap(), der);
        }
    }

    #[test]
    fn mutated_packages_never_panic(
        m in manifest(),
        b in signature_block(),
        edits in vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..4),
    ) {
        let message = signed_message(&m).unwrap();
        let mut package = encode_prefix(&message, &b).unwrap();
        package.extend_from_slice(&[0xEE; 64]);
        let package = mutate(package, &edits);
        if let Ok(p) = PackageRef::parse(&package) {
            prop_assert!(p.payload_offset() >= HEADER_LEN);
            let _ = Manifest::from_der(p.manifest_der());
        }
        let _ = read_prefix(&mut &package[..]);
    }
}
