//! Compressed packages (format version 2): a round trip through the file-backed device, stored
//! bytes verified before any decompression, and signed chunks that decompress to another length
//! (a decompression bomb) refused within the signed bound.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::cast_possible_truncation
)]

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};

use veriflash_core::format::{
    ChunkEncoding, ImageSpec, Manifest, SignatureBlock, SignatureEntry, StoredChunk,
};
use veriflash_core::hash::{ChunkDecoder, DecodeError, ExpectedChunk, ParallelOptions};
use veriflash_core::plugin::Slot;
use veriflash_core::plugin::file_device::{FileDevice, Layout};
use veriflash_core::sig::{PinnedKeys, SigningKey, Verifier};
use veriflash_core::{
    CancelToken, ErrorKind, ImageData, ImageSource, InstallPolicy, PackOptions, PackageReader,
    PackageSpec, UnsignedPackage, ZstdDecoder, install,
};
use veriflash_test_support::{file_layout, pseudo_random};
use zstd::zstd_safe;

const MIB: usize = 1 << 20;

/// One MiB of a file-system-like image: text, tables, erased runs, and every eighth MiB
/// random (so the compressed image has raw chunks too).
fn compressible_mib(i: usize) -> Vec<u8> {
    if i % 8 == 7 {
        return pseudo_random(MIB, i as u64 + 1);
    }
    let mut out = Vec::with_capacity(MIB);
    let mut line = 0usize;
    while out.len() < MIB / 2 {
        let text = format!(
            "/usr/share/doc/package-{i}/file-{line}.txt: size {} mode 0644 owner root\n",
            line * 37 % 9973
        );
        out.extend_from_slice(text.as_bytes());
        line += 1;
    }
    out.resize(MIB * 3 / 4, 0);
    out.resize(MIB, 0xFF);
    out
}

fn trust(key: &SigningKey) -> PinnedKeys {
    let mut t = PinnedKeys::new();
    t.add(key.verifying_key());
    t
}

fn layout(system: u64) -> Layout {
    file_layout(&[("boot", 4 << 20), ("system", system)], &[])
}

fn spec(images: Vec<ImageSource>) -> PackageSpec {
    PackageSpec {
        product: "acme-hotspot-x1".into(),
        chipset: "mdm9607".into(),
        hardware_revisions: vec!["r2".into()],
        software_version: "v7".into(),
        security_version: 7,
        images,
    }
}

/// Streams `path` and partition `name` of `slot` side by side, 1 MiB at a time.
fn assert_partition_holds(device: &mut FileDevice, name: &str, slot: Slot, path: &Path) {
    let mut file = BufReader::new(File::open(path).unwrap());
    let mut offset = 0u64;
    let mut expected = vec![0u8; MIB];
    loop {
        let n = file.read(&mut expected).unwrap();
        if n == 0 {
            break;
        }
        let got = device
            .read_partition_range(name, slot, offset, n as u64)
            .unwrap();
        assert!(got == expected[..n], "{name} differs near offset {offset}");
        offset += n as u64;
    }
    assert_eq!(offset, std::fs::metadata(path).unwrap().len());
}

#[test]
fn compressible_and_incompressible_images_pack_verify_and_flash_to_the_original_bytes() {
    let dir = tempfile::tempdir().unwrap();
    // A compressible 256 MiB image, written 1 MiB at a time (the test never holds it whole).
    let rootfs = dir.path().join("rootfs.img");
    let mut out = BufWriter::new(File::create(&rootfs).unwrap());
    for i in 0..256 {
        out.write_all(&compressible_mib(i)).unwrap();
    }
    out.flush().unwrap();
    drop(out);
    // An incompressible one, not a multiple of the chunk size.
    let modem = dir.path().join("modem.img");
    std::fs::write(&modem, pseudo_random(3 * MIB + 123, 99)).unwrap();

    let key = SigningKey::generate_p256().unwrap();
    let unsigned = UnsignedPackage::prepare_with(
        spec(vec![
            ImageSource::new("modem", "boot", ImageData::File(modem.clone())),
            ImageSource::new("rootfs", "system", ImageData::File(rootfs.clone())),
        ]),
        &PackOptions::new().compression(Some(3)),
    )
    .unwrap();
    let m = unsigned.manifest();
    assert_eq!(m.version(), 2);
    let (modem_spec, rootfs_spec) = (&m.images[0], &m.images[1]);
    // Nothing of the random image pays: it is stored exactly as without compression.
    assert!(modem_spec.stored_chunks.is_empty());
    assert_eq!(modem_spec.stored_size(), modem_spec.size);
    assert_eq!(rootfs_spec.size, 256 * MIB as u64);
    assert!(rootfs_spec.is_compressed());
    assert!(rootfs_spec.stored_size() < rootfs_spec.size / 2);
    let raw_chunks = rootfs_spec
        .stored_chunks
        .iter()
        .filter(|c| c.encoding == ChunkEncoding::Raw)
        .count();
    assert_eq!(raw_chunks, 32, "every random MiB is stored raw");

    let package = dir.path().join("update.vfp");
    let written = unsigned.write_signed(&[&key], &package).unwrap();
    assert_eq!(written, std::fs::metadata(&package).unwrap().len());
    assert!(written < 256 * MIB as u64 / 2);

    let pinned = trust(&key);
    let report = veriflash_core::verify_file(&package, &Verifier::new(&pinned)).unwrap();
    assert_eq!(report.images[1].size, 256 * MIB as u64);

    let device_path = dir.path().join("dev.img");
    FileDevice::create(&device_path, &layout(256 << 20)).unwrap();
    let mut device = FileDevice::open(&device_path).unwrap();
    install(
        BufReader::new(File::open(&package).unwrap()),
        &Verifier::new(&pinned),
        &InstallPolicy::default(),
        &mut device,
        &CancelToken::new(),
        &mut |_| {},
    )
    .unwrap();
    drop(device);
    let mut device = FileDevice::open(&device_path).unwrap();
    assert_eq!(device.current_status().info.active_slot, Some(Slot::B));
    assert_partition_holds(&mut device, "boot", Slot::B, &modem);
    assert_partition_holds(&mut device, "system", Slot::B, &rootfs);
}

#[test]
fn a_package_without_compressible_chunks_is_a_byte_identical_version_1_package() {
    let key = SigningKey::generate_p256().unwrap();
    let images = || {
        let mut image =
            ImageSource::new("modem", "boot", ImageData::Bytes(pseudo_random(40_000, 5)));
        image.chunk_size = 4096;
        vec![image]
    };
    let plain = UnsignedPackage::prepare(spec(images())).unwrap();
    let compressed =
        UnsignedPackage::prepare_with(spec(images()), &PackOptions::new().compression(Some(19)))
            .unwrap();
    assert_eq!(plain.signed_message(), compressed.signed_message());
    assert_eq!(plain.manifest().version(), 1);
    let block = SignatureBlock {
        entries: vec![plain.sign(&key).unwrap()],
    };
    let (mut a, mut b) = (Vec::new(), Vec::new());
    plain.write_to(&block, &mut a).unwrap();
    compressed.write_to(&block, &mut b).unwrap();
    assert_eq!(a, b);
}

/// Wraps the real decoder: records every call (chunk index, output buffer length) and refuses to
/// run on the chunk it was told must never reach it.
struct Watch {
    forbidden: Option<u64>,
    calls: Mutex<Vec<(u64, usize)>>,
}

impl Watch {
    fn new(forbidden: Option<u64>) -> Arc<Self> {
        Arc::new(Self {
            forbidden,
            calls: Mutex::new(Vec::new()),
        })
    }
}

impl ChunkDecoder for Watch {
    fn decode(
        &self,
        chunk: &ExpectedChunk<'_>,
        stored: &[u8],
        out: &mut [u8],
    ) -> Result<usize, DecodeError> {
        self.calls.lock().unwrap().push((chunk.index(), out.len()));
        if Some(chunk.index()) == self.forbidden {
            return Err(DecodeError::Invalid {
                reason: "the decoder ran on an altered chunk".into(),
            });
        }
        ZstdDecoder::new().decode(chunk, stored, out)
    }
}

#[test]
fn an_altered_stored_chunk_is_refused_before_its_decompression_runs() {
    let key = SigningKey::generate_p256().unwrap();
    let data: Vec<u8> = (0..64)
        .flat_map(|i| compressible_mib(i)[..4096].to_vec())
        .collect();
    let mut image = ImageSource::new("rootfs", "system", ImageData::Bytes(data));
    image.chunk_size = 4096;
    let unsigned =
        UnsignedPackage::prepare_with(spec(vec![image]), &PackOptions::new().compression(Some(3)))
            .unwrap();
    let block = SignatureBlock {
        entries: vec![unsigned.sign(&key).unwrap()],
    };
    let mut bytes = Vec::new();
    unsigned.write_to(&block, &mut bytes).unwrap();
    let spec = &unsigned.manifest().images[0];
    let bad = 40u64;
    assert_eq!(
        spec.stored_chunks[bad as usize].encoding,
        ChunkEncoding::Zstd
    );
    let payload_start = bytes.len() - spec.stored_size() as usize;
    let before: u64 = spec.stored_chunks[..bad as usize]
        .iter()
        .map(|c| u64::from(c.stored_len))
        .sum();
    // A byte in the middle of chunk 40's compressed frame.
    let at =
        payload_start + before as usize + spec.stored_chunks[bad as usize].stored_len as usize / 2;
    bytes[at] ^= 0x01;

    let pinned = trust(&key);
    for threads in [1, 2] {
        let watch = Watch::new(Some(bad));
        let err = PackageReader::new(bytes.as_slice())
            .unwrap()
            .verify(&Verifier::new(&pinned))
            .unwrap()
            .with_options(ParallelOptions::new().threads(threads).min_buffer_len(1))
            .with_decoder(watch.clone())
            .verify_payload()
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::IntegrityMismatch, "{err}");
        assert_eq!(err.location().chunk, Some(bad));
        let calls = watch.calls.lock().unwrap();
        assert!(
            calls.iter().all(|(index, _)| *index != bad),
            "the decoder saw the altered chunk"
        );
        // Compressed chunks before it were decoded (so the decoder was in use).
        assert!(calls.iter().any(|(index, _)| *index < bad));
    }

    // Unaltered, every compressed chunk is decoded exactly once, into its signed length.
    bytes[at] ^= 0x01;
    let watch = Watch::new(None);
    PackageReader::new(bytes.as_slice())
        .unwrap()
        .verify(&Verifier::new(&pinned))
        .unwrap()
        .with_decoder(watch.clone())
        .verify_payload()
        .unwrap();
    let calls = watch.calls.lock().unwrap();
    let compressed = spec
        .stored_chunks
        .iter()
        .filter(|c| c.encoding == ChunkEncoding::Zstd)
        .count();
    assert_eq!(calls.len(), compressed);
    assert!(calls.iter().all(|(_, len)| *len == 4096));
}

/// Signs a one-image package whose chunk table the test writes itself: the "test signer".
fn signed_package(key: &SigningKey, image: ImageSpec, payload: &[u8]) -> Vec<u8> {
    let manifest = Manifest {
        product: "acme-hotspot-x1".into(),
        chipset: "mdm9607".into(),
        hardware_revisions: vec![],
        software_version: "v7".into(),
        security_version: 7,
        images: vec![image],
        extensions: vec![],
        trust_rotation: None,
    };
    let message = veriflash_core::format::signed_message(&manifest).unwrap();
    let entry = SignatureEntry {
        algorithm: key.algorithm(),
        key_id: key.verifying_key().key_id().0,
        signature: key.sign(&message).unwrap(),
        certificates: vec![],
    };
    let mut bytes = veriflash_core::format::encode_prefix(
        &message,
        &SignatureBlock {
            entries: vec![entry],
        },
    )
    .unwrap();
    bytes.extend_from_slice(payload);
    bytes
}

/// A zstd frame of `len` zero bytes, with or without its content size in the header.
fn zeros_frame(len: usize, content_size: bool) -> Vec<u8> {
    let mut cctx = zstd_safe::CCtx::create();
    cctx.set_parameter(zstd_safe::CParameter::CompressionLevel(3))
        .unwrap();
    cctx.set_parameter(zstd_safe::CParameter::ContentSizeFlag(content_size))
        .unwrap();
    cctx.set_parameter(zstd_safe::CParameter::WindowLog(20))
        .unwrap();
    let zeros = vec![0u8; len];
    let mut out = Vec::with_capacity(zstd_safe::compress_bound(len));
    cctx.compress2(&mut out, &zeros).unwrap();
    out
}

#[test]
fn a_signed_chunk_that_decompresses_to_another_length_is_refused_within_its_bound() {
    const CHUNK: usize = 64 * 1024;
    let key = SigningKey::generate_p256().unwrap();
    let pinned = trust(&key);
    let first = zeros_frame(CHUNK, true);
    // The signed image is two chunks of zeros; the second chunk's frame is what varies.
    let cases = [
        // A bomb: 16 MiB of zeros in a few hundred bytes, no content size declared, so only
        // the bounded output buffer stops it.
        ("bomb without content size", zeros_frame(16 * MIB, false)),
        // The same bomb declaring its size: refused from the frame header.
        ("bomb with content size", zeros_frame(16 * MIB, true)),
        // One byte too many, and half the signed length.
        ("one byte more", zeros_frame(CHUNK + 1, true)),
        ("half", zeros_frame(CHUNK / 2, false)),
    ];
    for (name, second) in cases {
        assert!(
            second.len() < CHUNK,
            "{name}: the frame must be smaller than the chunk"
        );
        let image = ImageSpec {
            name: "rootfs".into(),
            partition: "system".into(),
            size: 2 * CHUNK as u64,
            chunk_size: CHUNK as u32,
            digest: veriflash_core::hash::sha256(&vec![0u8; 2 * CHUNK]),
            chunk_digests: vec![
                veriflash_core::hash::sha256(&first),
                veriflash_core::hash::sha256(&second),
            ],
            stored_chunks: [&first, &second]
                .iter()
                .map(|frame| StoredChunk {
                    encoding: ChunkEncoding::Zstd,
                    stored_len: frame.len() as u32,
                    decompressed_len: CHUNK as u32,
                })
                .collect(),
            source: None,
            extensions: vec![],
        };
        let payload = [first.as_slice(), second.as_slice()].concat();
        let bytes = signed_package(&key, image, &payload);

        let watch = Watch::new(None);
        let err = PackageReader::new(bytes.as_slice())
            .unwrap()
            .verify(&Verifier::new(&pinned))
            .unwrap()
            .with_decoder(watch.clone())
            .verify_payload()
            .unwrap_err();
        assert_eq!(
            err.kind(),
            ErrorKind::DecompressedLengthMismatch,
            "{name}: {err}"
        );
        assert_eq!(err.code(), 32);
        assert_eq!(err.location().chunk, Some(1), "{name}");
        // The decoder only ever had a buffer of the signed length to write into.
        let calls = watch.calls.lock().unwrap();
        assert!(calls.iter().any(|(index, _)| *index == 1), "{name}");
        assert!(
            calls.iter().all(|(_, len)| *len == CHUNK),
            "{name}: {calls:?}"
        );
    }
}

/// A small compressed package (format version 2): 24 chunks of 4 KiB, text and random mixed,
/// signed with `key`.
fn small_compressed_package(key: &SigningKey) -> (Vec<u8>, Manifest) {
    let data: Vec<u8> = (0..24)
        .flat_map(|i| compressible_mib(i)[MIB / 2 - 2048..MIB / 2 + 2048].to_vec())
        .collect();
    let mut image = ImageSource::new("rootfs", "system", ImageData::Bytes(data));
    image.chunk_size = 4096;
    let unsigned =
        UnsignedPackage::prepare_with(spec(vec![image]), &PackOptions::new().compression(Some(3)))
            .unwrap();
    assert_eq!(unsigned.manifest().version(), 2);
    let block = SignatureBlock {
        entries: vec![unsigned.sign(key).unwrap()],
    };
    let mut bytes = Vec::new();
    unsigned.write_to(&block, &mut bytes).unwrap();
    (bytes, unsigned.manifest().clone())
}

#[test]
fn every_payload_byte_change_in_a_compressed_package_is_an_integrity_mismatch_of_its_chunk() {
    let key = SigningKey::generate_p256().unwrap();
    let pinned = trust(&key);
    let (mut bytes, manifest) = small_compressed_package(&key);
    let image = &manifest.images[0];
    assert!(image.is_compressed());
    let payload_start = bytes.len() - image.stored_size() as usize;
    // Chunk of every stored byte.
    let owner: Vec<u64> = image
        .stored_chunks
        .iter()
        .enumerate()
        .flat_map(|(i, c)| std::iter::repeat_n(i as u64, c.stored_len as usize))
        .collect();
    // Every byte of compressed chunks, every 97th byte of raw ones (they are big).
    for (k, chunk) in owner.iter().enumerate() {
        if image.stored_chunks[*chunk as usize].encoding == ChunkEncoding::Raw && k % 97 != 0 {
            continue;
        }
        let at = payload_start + k;
        bytes[at] ^= 0x20;
        let err = PackageReader::new(bytes.as_slice())
            .unwrap()
            .verify(&Verifier::new(&pinned))
            .unwrap()
            .with_threads(1)
            .verify_payload()
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::IntegrityMismatch, "byte {k}: {err}");
        assert_eq!(err.location().chunk, Some(*chunk), "byte {k}");
        bytes[at] ^= 0x20;
    }
    // And the header/manifest of a version-2 package: every byte change is refused.
    for at in 0..payload_start {
        bytes[at] ^= 0x01;
        let refused = PackageReader::new(bytes.as_slice())
            .and_then(|r| r.verify(&Verifier::new(&pinned)))
            .and_then(veriflash_core::VerifiedPackage::verify_payload);
        assert!(refused.is_err(), "prefix byte {at} change accepted");
        bytes[at] ^= 0x01;
    }
}

/// `VERIFLASH_WRITE_SEEDS=1 cargo test -p veriflash-core --test compressed` writes compressed
/// (version 2) seeds for the `package`, `verify` and `manifest` fuzz targets, signed with the
/// fuzz harness's test-only key; otherwise checks that they exist and still verify.
#[test]
fn compressed_fuzz_seeds_are_current() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let key_pem = std::fs::read_to_string(fuzz.join("keys/TEST-ONLY-signing-key.pem")).unwrap();
    let key = SigningKey::from_pem(&key_pem).unwrap();
    let package = fuzz.join("seeds/package/compressed-v2.vfp");
    let verify = fuzz.join("seeds/verify/compressed-v2.vfp");
    let manifest = fuzz.join("seeds/manifest/compressed-v2.der");
    if std::env::var_os("VERIFLASH_WRITE_SEEDS").is_some() {
        let (bytes, m) = small_compressed_package(&key);
        std::fs::write(&package, &bytes).unwrap();
        std::fs::write(&verify, &bytes).unwrap();
        std::fs::write(&manifest, m.to_der().unwrap()).unwrap();
    }
    let pinned = trust(&key);
    for seed in [&package, &verify] {
        let bytes = std::fs::read(seed).unwrap();
        let report = PackageReader::new(bytes.as_slice())
            .unwrap()
            .verify(&Verifier::new(&pinned))
            .unwrap()
            .verify_payload()
            .unwrap();
        assert_eq!(report.images.len(), 1);
    }
    let m = Manifest::from_der(&std::fs::read(&manifest).unwrap()).unwrap();
    assert_eq!(m.version(), 2);
}
