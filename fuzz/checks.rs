//! The property each fuzz target checks, in one place.
//!
//! Included with `#[path]` by every target in `fuzz/fuzz_targets/` (nightly, libFuzzer) and by
//! `crates/veriflash-core/tests/fuzz_replay.rs` (stable, `cargo test`), so the corpus replay in
//! CI runs exactly the code the fuzzer runs. Depends on `veriflash-core` only (its re-exports of
//! the format and signature crates). A check returns normally for any input that is handled
//! correctly, accepted or refused; it panics when an invariant breaks.

// Panicking is how a check reports a broken invariant, to libFuzzer and to the replay test.
#![allow(clippy::panic)]

use std::sync::OnceLock;

use veriflash_core::format::{Header, Manifest, PackageRef, SignatureBlock, read_prefix};
use veriflash_core::sig::{
    ChainPolicy, PinnedKeys, SigningKey, TimePolicy, Verifier, VerifyingKey, certificate_subject,
    leaf_public_key, verify_chain,
};
use veriflash_core::{ErrorKind, PackageReader};

/// The fixed trust store of the `verify` target: one P-256 public key, committed.
///
/// Its private key is `keys/TEST-ONLY-signing-key.pem`, committed so that seeds can carry a valid
/// signature and the fuzzer can reach the payload checks. It is a test fixture: it must never be
/// trusted by anything but this harness.
pub const TRUST_ANCHOR_PEM: &str = include_str!("keys/TEST-ONLY-trust-anchor.pub.pem");

/// The private half of [`TRUST_ANCHOR_PEM`]. TEST ONLY, published on purpose.
pub const TEST_ONLY_SIGNING_KEY_PEM: &str = include_str!("keys/TEST-ONLY-signing-key.pem");

/// Every target, by the name of its binary and of its `seeds/` and `regressions/` directory.
pub const TARGETS: &[&str] = &[
    "header",
    "manifest",
    "signature_block",
    "package",
    "verify",
    "keys",
    "chain",
];

/// Runs the check of `target` on `data`; `false` if there is no such target.
pub fn run(target: &str, data: &[u8]) -> bool {
    match target {
        "header" => header(data),
        "manifest" => manifest(data),
        "signature_block" => signature_block(data),
        "package" => package(data),
        "verify" => verify(data),
        "keys" => keys(data),
        "chain" => chain(data),
        _ => return false,
    }
    true
}

/// `Header::parse`: an accepted header re-encodes to exactly the input.
pub fn header(data: &[u8]) {
    if let Ok(header) = Header::parse(data) {
        assert_eq!(
            header.to_bytes().as_slice(),
            data,
            "header does not round-trip"
        );
    }
}

/// `Manifest::from_der`: an accepted manifest re-encodes to exactly the input (DER is canonical).
pub fn manifest(data: &[u8]) {
    if let Ok(manifest) = Manifest::from_der(data) {
        let der = manifest.to_der();
        assert_eq!(der.as_deref(), Ok(data), "manifest does not round-trip");
    }
}

/// `SignatureBlock::from_der`: an accepted block re-encodes to exactly the input.
pub fn signature_block(data: &[u8]) {
    if let Ok(block) = SignatureBlock::from_der(data) {
        let der = block.to_der();
        assert_eq!(
            der.as_deref(),
            Ok(data),
            "signature block does not round-trip"
        );
    }
}

/// `PackageRef::parse` (whole package in memory) and `read_prefix` (streaming) agree: the
/// streaming reader accepts every prefix the slice parser accepts, reads exactly the prefix and
/// returns the same sections; a manifest that parses round-trips.
pub fn package(data: &[u8]) {
    let parsed = PackageRef::parse(data);
    let mut reader = data;
    let streamed = read_prefix(&mut reader);
    if let Ok(package) = &parsed {
        let prefix = match &streamed {
            Ok(prefix) => prefix,
            Err(e) => panic!("PackageRef::parse accepted what read_prefix refused: {e}"),
        };
        assert_eq!(&prefix.header, package.header());
        assert_eq!(prefix.signed_message.as_slice(), package.signed_message());
        assert_eq!(prefix.manifest_der(), package.manifest_der());
        assert_eq!(
            prefix.signature_block_der.as_slice(),
            package.signature_block_der()
        );
        assert_eq!(&prefix.signature_block, package.signature_block());
        assert_eq!(
            reader,
            package.payload(),
            "read_prefix read past the prefix"
        );
        assert_eq!(
            usize::try_from(prefix.payload_offset()).ok(),
            Some(package.payload_offset())
        );
        manifest(package.manifest_der());
    }
    if let Ok(prefix) = &streamed {
        // The stream stops at the payload; the rest of the input is the payload (whatever its
        // length: the slice parser may refuse it as truncated or trailing, never the prefix).
        let consumed = data.len() - reader.len();
        assert_eq!(u64::try_from(consumed).ok(), Some(prefix.payload_offset()));
        assert_eq!(
            data.get(..prefix.signed_message.len()),
            Some(prefix.signed_message.as_slice())
        );
    }
}

fn trust() -> &'static PinnedKeys {
    static TRUST: OnceLock<PinnedKeys> = OnceLock::new();
    TRUST.get_or_init(|| match PinnedKeys::from_pem(TRUST_ANCHOR_PEM) {
        Ok(keys) => keys,
        Err(e) => panic!("the committed fuzz trust anchor does not load: {e}"),
    })
}

/// Full verification (prefix, signatures, manifest, every payload chunk, the end) of `data`
/// against the fixed trust store. Reading from memory never fails, so an `Io` error is a bug; an
/// accepted package is one the slice parser accepts too, with images that add up.
pub fn verify(data: &[u8]) {
    let verifier = Verifier::new(trust());
    let result = PackageReader::new(data)
        .and_then(|reader| reader.verify(&verifier))
        .and_then(|verified| verified.verify_payload());
    match result {
        Ok(report) => {
            let package = match PackageRef::parse(data) {
                Ok(package) => package,
                Err(e) => panic!("verified a package the slice parser refuses: {e}"),
            };
            // The payload holds each image's stored bytes (its size, unless some of its chunks
            // are compressed: format version 2); the report counts decompressed sizes.
            let manifest = match Manifest::from_der(package.manifest_der()) {
                Ok(manifest) => manifest,
                Err(e) => panic!("verified a package whose manifest does not parse: {e}"),
            };
            let stored: u64 = manifest
                .images
                .iter()
                .map(|image| image.stored_size())
                .sum();
            assert_eq!(stored, package.header().payload_len);
            let total: u64 = report.images.iter().map(|image| image.size).sum();
            let sizes: u64 = manifest.images.iter().map(|image| image.size).sum();
            assert_eq!(total, sizes);
            assert!(!report.signers.is_empty(), "verified without a signer");
        }
        Err(e) => assert_ne!(e.kind(), ErrorKind::Io, "I/O error reading memory: {e}"),
    }
}

/// Key parsers: `VerifyingKey::from_spki_der`, `from_public_key_pem`, `SigningKey::from_pem`.
/// An accepted key re-encodes to a form that parses back to the same key id.
pub fn keys(data: &[u8]) {
    if let Ok(key) = VerifyingKey::from_spki_der(data) {
        same_key_after_round_trip(&key);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(key) = VerifyingKey::from_public_key_pem(text) {
            same_key_after_round_trip(&key);
        }
        if let Ok(key) = SigningKey::from_pem(text) {
            same_key_after_round_trip(&key.verifying_key());
        }
    }
}

fn same_key_after_round_trip(key: &VerifyingKey) {
    let again = VerifyingKey::from_spki_der(&key.to_spki_der()).map(|k| k.key_id());
    assert_eq!(again.ok(), Some(key.key_id()), "SPKI does not round-trip");
    let again = VerifyingKey::from_public_key_pem(&key.to_public_key_pem()).map(|k| k.key_id());
    assert_eq!(again.ok(), Some(key.key_id()), "PEM does not round-trip");
}

/// The fixed root of the `chain` target: a P-256 CA certificate, committed. TEST ONLY.
pub const CHAIN_ROOT_PEM: &str = include_str!("keys/TEST-ONLY-chain-root.pem");

/// Most certificates the `chain` target cuts from one input (a leaf and intermediates).
const CHAIN_MAX_PIECES: usize = 8;

/// X.509 certificate parsing and path validation on untrusted certificates.
///
/// The input is a list of certificates, each as a big-endian `u16` length and that many DER
/// bytes: the first is the leaf, the others are offered as intermediates. The parsers must not
/// panic; a path that validates must end at the fixed root, start at the leaf's key, and be no
/// longer than what was offered.
pub fn chain(data: &[u8]) {
    let mut pieces: Vec<&[u8]> = Vec::new();
    let mut rest = data;
    while pieces.len() < CHAIN_MAX_PIECES && rest.len() >= 2 {
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
        let end = (2 + len).min(rest.len());
        pieces.push(&rest[2..end]);
        rest = &rest[end..];
    }
    let Some((leaf, intermediates)) = pieces.split_first() else {
        return;
    };
    for piece in &pieces {
        let _ = certificate_subject(piece);
        let _ = leaf_public_key(piece);
    }
    let anchors = PinnedKeys::from_pem(CHAIN_ROOT_PEM).expect("the committed root loads");
    for time in [TimePolicy::NoClock, TimePolicy::TrustedTime(1_800_000_000)] {
        if let Ok(path) = verify_chain(leaf, intermediates, &anchors, time, ChainPolicy::default())
        {
            let root = anchors.iter().next().expect("one anchor").key_id();
            assert_eq!(path.anchor_key_id(), root, "a path ended at another anchor");
            let leaf_key = leaf_public_key(leaf).expect("a validated leaf parses");
            assert_eq!(
                path.leaf_key().key_id(),
                leaf_key.key_id(),
                "path leaf is not the leaf"
            );
            assert!(
                path.certificates().len() <= pieces.len(),
                "the path uses more certificates than were offered"
            );
        }
    }
}
