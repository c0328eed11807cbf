//! End-to-end checks of the verify path on real package files: a multi-image package with an
//! image over 64 MiB verifies, and every kind of damage to it is refused with the right code.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::io::{self, Read};

use veriflash_core::format::{HEADER_LEN, SignatureBlock};
use veriflash_core::sig::{PinnedKeys, SigningKey, Verifier};
use veriflash_core::{
    Error, ErrorKind, ImageData, ImageSource, PackageReader, PackageSpec, UnsignedPackage,
    verify_file,
};
use veriflash_test_support::pseudo_random;

/// 64 MiB + 12345 bytes: more than 64 MiB, and not a multiple of the chunk size.
const BIG: usize = (64 << 20) + 12_345;
const SMALL: usize = 300_001;
const BIG_CHUNK: u32 = 1 << 20;
const SMALL_CHUNK: u32 = 64 << 10;

struct Fixture {
    key: SigningKey,
    bytes: Vec<u8>,
    /// Offsets of the sections: manifest start, signature block start, payload start.
    manifest_at: usize,
    sigblock_at: usize,
    payload_at: usize,
}

fn build(key: SigningKey) -> Fixture {
    let mut boot = ImageSource::new("boot", "boot", ImageData::Bytes(pseudo_random(SMALL, 1)));
    boot.chunk_size = SMALL_CHUNK;
    let mut rootfs = ImageSource::new("rootfs", "system", ImageData::Bytes(pseudo_random(BIG, 2)));
    rootfs.chunk_size = BIG_CHUNK;
    let unsigned = UnsignedPackage::prepare(PackageSpec {
        product: "acme-hotspot-x1".into(),
        chipset: "mdm9607".into(),
        hardware_revisions: vec!["r2".into()],
        software_version: "2.4.0".into(),
        security_version: 7,
        images: vec![boot, rootfs],
    })
    .unwrap();
    let block = SignatureBlock {
        entries: vec![unsigned.sign(&key).unwrap()],
    };
    let mut bytes = Vec::new();
    unsigned.write_to(&block, &mut bytes).unwrap();
    let manifest_at = HEADER_LEN;
    let sigblock_at = unsigned.signed_message().len();
    let payload_at = bytes.len() - SMALL - BIG;
    Fixture {
        key,
        bytes,
        manifest_at,
        sigblock_at,
        payload_at,
    }
}

fn trust_of(key: &SigningKey) -> PinnedKeys {
    let mut trust = PinnedKeys::new();
    trust.add(key.verifying_key());
    trust
}

fn verify_bytes(bytes: &[u8], verifier: &Verifier<'_>) -> Result<(), Error> {
    PackageReader::new(bytes)?
        .verify(verifier)?
        .verify_payload()
        .map(drop)
}

#[test]
fn multi_image_package_file_verifies_and_every_kind_of_damage_is_refused() {
    let fx = build(SigningKey::generate_p256().unwrap());
    let trust = trust_of(&fx.key);
    let verifier = Verifier::new(&trust);
    let dir = tempfile::tempdir().unwrap();

    // The package, as a real file, verifies completely.
    let path = dir.path().join("update.vfp");
    std::fs::write(&path, &fx.bytes).unwrap();
    let report = verify_file(&path, &verifier).unwrap();
    assert_eq!(report.images.len(), 2);
    assert_eq!(report.images[1].size, BIG as u64);
    assert_eq!(report.images[1].chunks, 65);
    assert_eq!(
        report.signers,
        vec![fx.key.verifying_key().key_id().to_string()]
    );

    let mut bytes = fx.bytes;

    // Every single byte of header, manifest and signature block, flipped, is refused. These
    // failures come before the payload, so each costs microseconds.
    for at in 0..fx.payload_at {
        for mask in [0x01u8, 0x80] {
            bytes[at] ^= mask;
            let result = verify_bytes(&bytes, &verifier);
            bytes[at] ^= mask;
            let err = result.expect_err(&format!("flip at prefix byte {at} was accepted"));
            assert!(
                matches!(
                    err.kind(),
                    ErrorKind::Malformed
                        | ErrorKind::UnsupportedFormat
                        | ErrorKind::LimitExceeded
                        | ErrorKind::Truncated
                        | ErrorKind::TrailingData
                        | ErrorKind::NotAuthentic
                        | ErrorKind::UnknownSigner
                        | ErrorKind::UnsupportedAlgorithm
                ),
                "flip at {at}: unexpected {err}"
            );
            if (fx.manifest_at..fx.sigblock_at).contains(&at) {
                // A changed manifest byte can only ever be caught by the signature.
                assert_eq!(err.kind(), ErrorKind::NotAuthentic, "flip at {at}: {err}");
            }
        }
    }

    // Payload flips at sampled offsets: refused as integrity errors naming image and chunk.
    let boot_at = fx.payload_at;
    let rootfs_at = fx.payload_at + SMALL;
    let samples: Vec<(usize, &str, u64)> = vec![
        (boot_at, "boot", 0),
        (boot_at + 65_535, "boot", 0),
        (boot_at + 65_536, "boot", 1),
        (boot_at + SMALL - 1, "boot", 4),
        (rootfs_at, "rootfs", 0),
        (rootfs_at + (1 << 20), "rootfs", 1),
        (rootfs_at + (17 << 20) + 4242, "rootfs", 17),
        (rootfs_at + (64 << 20) - 1, "rootfs", 63),
        (rootfs_at + BIG - 1, "rootfs", 64),
    ];
    for (at, image, chunk) in samples {
        bytes[at] ^= 0x40;
        let result = verify_bytes(&bytes, &verifier);
        bytes[at] ^= 0x40;
        let err = result.expect_err("payload flip accepted");
        assert_eq!(
            err.kind(),
            ErrorKind::IntegrityMismatch,
            "flip at {at}: {err}"
        );
        assert_eq!(err.location().image.as_deref(), Some(image));
        assert_eq!(err.location().chunk, Some(chunk), "flip at {at}");
    }

    // Truncation at every section boundary and at sampled offsets.
    let cuts = [
        0,
        1,
        7,
        8,
        HEADER_LEN - 1,
        HEADER_LEN,
        fx.sigblock_at - 1,
        fx.sigblock_at,
        fx.sigblock_at + 1,
        fx.payload_at - 1,
        fx.payload_at,
        fx.payload_at + 1,
        rootfs_at - 1,
        rootfs_at,
        rootfs_at + (1 << 20),
        rootfs_at + (30 << 20) + 7,
        bytes.len() - 1,
    ];
    for cut in cuts {
        let err = verify_bytes(&bytes[..cut], &verifier)
            .expect_err(&format!("package cut at {cut} accepted"));
        assert!(
            matches!(err.kind(), ErrorKind::Truncated | ErrorKind::Malformed),
            "cut at {cut}: {err}"
        );
        if cut >= fx.payload_at {
            assert_eq!(err.kind(), ErrorKind::Truncated, "cut at {cut}: {err}");
        }
    }

    // Bytes after the declared end.
    bytes.push(0);
    let err = verify_bytes(&bytes, &verifier).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TrailingData);
    bytes.pop();

    // The untouched package still verifies: the sweeps above restored every byte.
    verify_bytes(&bytes, &verifier).unwrap();
}

#[test]
fn package_signed_by_an_unknown_key_is_not_authentic() {
    let fx = build(SigningKey::generate_p256().unwrap());
    let stranger = SigningKey::generate_p256().unwrap();
    let trust = trust_of(&stranger);
    let err = verify_bytes(&fx.bytes, &Verifier::new(&trust)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::UnknownSigner);
    assert_eq!(err.category(), veriflash_core::Category::Security);
}

#[test]
fn empty_trust_store_refuses_instead_of_skipping() {
    let fx = build(SigningKey::generate_p256().unwrap());
    let trust = PinnedKeys::new();
    let err = verify_bytes(&fx.bytes, &Verifier::new(&trust)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NoTrustAnchors);
}

/// A reader over a package that fails the test if anything past the signature block is read.
#[derive(Debug)]
struct PayloadTripwire<'a> {
    bytes: &'a [u8],
    pos: usize,
    limit: usize,
}

impl Read for PayloadTripwire<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let allowed = self.limit - self.pos;
        if allowed == 0 && !buf.is_empty() {
            return Err(io::Error::other("tripwire: a payload byte was requested"));
        }
        let n = buf.len().min(allowed);
        buf[..n].copy_from_slice(&self.bytes[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[test]
fn tampered_manifest_is_refused_without_reading_the_payload() {
    let fx = build(SigningKey::generate_p256().unwrap());
    let trust = trust_of(&fx.key);
    let mut bytes = fx.bytes.clone();
    // Raise the security version's last byte, say, or any manifest byte: the signature breaks.
    bytes[fx.sigblock_at - 40] ^= 0x01;
    let tripwire = PayloadTripwire {
        bytes: &bytes,
        pos: 0,
        limit: fx.payload_at,
    };
    let err = PackageReader::new(tripwire)
        .unwrap()
        .verify(&Verifier::new(&trust))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotAuthentic, "{err}");

    // The tripwire itself works: streaming the untampered package trips it.
    let tripwire = PayloadTripwire {
        bytes: &fx.bytes,
        pos: 0,
        limit: fx.payload_at,
    };
    let err = PackageReader::new(tripwire)
        .unwrap()
        .verify(&Verifier::new(&trust))
        .unwrap()
        .verify_payload()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io);
}

#[test]
fn streamed_chunks_are_exactly_the_images() {
    let fx = build(SigningKey::generate_p256().unwrap());
    let trust = trust_of(&fx.key);
    let mut seen: Vec<(String, u64, Vec<u8>)> = Vec::new();
    let mut rootfs_bytes = 0u64;
    PackageReader::new(fx.bytes.as_slice())
        .unwrap()
        .verify(&Verifier::new(&trust))
        .unwrap()
        .stream(|image, chunk| {
            if image.name == "boot" {
                seen.push((image.name.clone(), chunk.offset(), chunk.bytes().to_vec()));
            } else {
                rootfs_bytes += chunk.bytes().len() as u64;
            }
            Ok(())
        })
        .unwrap();
    let boot: Vec<u8> = seen.iter().flat_map(|(_, _, b)| b.clone()).collect();
    assert_eq!(boot, pseudo_random(SMALL, 1));
    assert_eq!(rootfs_bytes, BIG as u64);
}

#[test]
fn a_sink_error_stops_the_stream_and_is_returned() {
    let fx = build(SigningKey::generate_p256().unwrap());
    let trust = trust_of(&fx.key);
    let mut calls = 0;
    let err = PackageReader::new(fx.bytes.as_slice())
        .unwrap()
        .verify(&Verifier::new(&trust))
        .unwrap()
        .stream(|_, _| {
            calls += 1;
            if calls == 3 {
                Err(Error::new(ErrorKind::Cancelled, "stop"))
            } else {
                Ok(())
            }
        })
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Cancelled);
    assert_eq!(calls, 3);
}
