//! Offline delta packages (docs/FORMAT.md §3.4, format version 4) on the A/B file device: a
//! device that runs v1 installs the delta from v1 to v2 and then holds exactly what a full
//! install of v2 gives it; a device that runs anything else is refused before a byte is
//! written; a tampered delta is refused with a stable code; and a power cut at every storage
//! operation of a delta install leaves v1 or v2 booting.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::cast_possible_truncation
)]

use std::path::{Path, PathBuf};

use veriflash_core::format::{ChunkEncoding, Manifest, SignatureBlock, SignatureEntry};
use veriflash_core::hash::ParallelOptions;
use veriflash_core::plugin::FlashSession;
use veriflash_core::plugin::file_device::{FileDevice, Layout};
use veriflash_core::sig::{PinnedKeys, SigningKey};
use veriflash_core::{
    AnchorSet, CancelToken, DeltaBase, ErrorKind, ImageData, ImageSource, InstallPolicy,
    InstalledImages, PackOptions, PackageReader, PackageSpec, SourceCheck, Trust, UnsignedPackage,
};
use veriflash_test_support::{file_layout, pseudo_random};

#[path = "support/power.rs"]
mod power;
use power::Sweep;

const CHUNK: u32 = 4096;

/// v1's images: boot (10 chunks, the last short) and rootfs, a binary-like image (60 chunks).
fn images_v1() -> Vec<Vec<u8>> {
    vec![pseudo_random(40_123, 1), pseudo_random(245_000, 2)]
}

/// v2 as a point release: two bytes of boot changed; in rootfs a few bytes changed in place,
/// 300 bytes inserted (everything after moves) and a stretch rewritten.
fn images_v2() -> Vec<Vec<u8>> {
    let mut images = images_v1();
    images[0][2 * 4096 + 17] ^= 0x5A;
    images[0][9 * 4096 + 5] ^= 0x5A;
    let rootfs = &mut images[1];
    rootfs[10 * 4096 + 1] ^= 0x5A;
    rootfs[10 * 4096 + 2000] ^= 0xA5;
    rootfs.splice(100_000..100_000, pseudo_random(300, 3));
    for b in &mut rootfs[200_000..200_064] {
        *b = b.wrapping_add(1);
    }
    images
}

fn spec(images: Vec<Vec<u8>>, version: u64) -> PackageSpec {
    let images = ["boot", "rootfs"]
        .iter()
        .zip(["boot", "system"])
        .zip(images)
        .map(|((name, partition), bytes)| {
            let mut image = ImageSource::new(*name, partition, ImageData::Bytes(bytes));
            image.chunk_size = CHUNK;
            image
        })
        .collect();
    PackageSpec {
        product: "acme-hotspot-x1".into(),
        chipset: "mdm9607".into(),
        hardware_revisions: vec![],
        software_version: format!("v{version}"),
        security_version: version,
        images,
    }
}

fn written(unsigned: &UnsignedPackage, key: &SigningKey) -> Vec<u8> {
    let block = SignatureBlock {
        entries: vec![unsigned.sign(key).unwrap()],
    };
    let mut bytes = Vec::new();
    unsigned.write_to(&block, &mut bytes).unwrap();
    bytes
}

fn trust(key: &SigningKey) -> Trust {
    let mut keys = PinnedKeys::new();
    keys.add(key.verifying_key());
    Trust::new(AnchorSet::new(keys, 1))
}

fn layout() -> Layout {
    file_layout(&[("boot", 64 << 10), ("system", 320 << 10)], &[])
}

struct Fixture {
    dir: tempfile::TempDir,
    key: SigningKey,
    v1: Vec<u8>,
    full_v2: Vec<u8>,
    delta: Vec<u8>,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::generate_p256().unwrap();
    let v1 = written(
        &UnsignedPackage::prepare(spec(images_v1(), 1)).unwrap(),
        &key,
    );
    let old = dir.path().join("v1.vfp");
    std::fs::write(&old, &v1).unwrap();
    let base = DeltaBase::from_package(&old, &trust(&key).verifier()).unwrap();
    let delta =
        UnsignedPackage::prepare_delta(spec(images_v2(), 2), &PackOptions::new(), &base).unwrap();
    let delta = written(&delta, &key);
    let full_v2 = written(
        &UnsignedPackage::prepare(spec(images_v2(), 2)).unwrap(),
        &key,
    );
    Fixture {
        dir,
        key,
        v1,
        full_v2,
        delta,
    }
}

fn install(
    f: &Fixture,
    package: &[u8],
    device: &mut FileDevice,
) -> Result<(), veriflash_core::Error> {
    install_checking(f, package, device, SourceCheck::Whole)
}

/// The fixture's delta installed on the device file at `path`, its source checked as `how`
/// says.
fn delta_on(f: &Fixture, path: &Path, how: SourceCheck) -> Result<(), veriflash_core::Error> {
    install_checking(f, &f.delta, &mut FileDevice::open(path).unwrap(), how)
}

/// [`install`], checking a delta's source as `how` says.
fn install_checking(
    f: &Fixture,
    package: &[u8],
    device: &mut FileDevice,
    how: SourceCheck,
) -> Result<(), veriflash_core::Error> {
    veriflash_core::install(
        package,
        &trust(&f.key).verifier(),
        &InstallPolicy::default().with_source_check(how),
        device,
        &CancelToken::new(),
        &mut |_| {},
    )
    .map(|_| ())
}

/// A device file that runs v1.
fn device_running_v1(f: &Fixture, name: &str) -> PathBuf {
    let path = f.dir.path().join(name);
    let mut device = FileDevice::create(&path, &layout()).unwrap();
    install(f, &f.v1, &mut device).unwrap();
    path
}

fn boots(path: &Path) -> Option<String> {
    FileDevice::open(path).unwrap().boot_check().unwrap()
}

/// What the device boots: each image read back from its active slot.
fn booted_images(path: &Path) -> Vec<Vec<u8>> {
    let mut device = FileDevice::open(path).unwrap();
    ["boot", "system"]
        .iter()
        .map(|partition| {
            let len = FlashSession::installed_len(&mut device, partition)
                .unwrap()
                .unwrap();
            let mut bytes = vec![0u8; len as usize];
            FlashSession::read_installed(&mut device, partition, 0, &mut bytes).unwrap();
            bytes
        })
        .collect()
}

fn verified_manifest(f: &Fixture, package: &[u8]) -> Manifest {
    PackageReader::new(package)
        .unwrap()
        .verify(&trust(&f.key).verifier())
        .unwrap()
        .manifest()
        .manifest()
        .clone()
}

#[test]
fn a_device_running_v1_installs_the_delta_and_holds_what_a_full_install_of_v2_gives() {
    let f = fixture();
    let manifest = verified_manifest(&f, &f.delta);
    assert_eq!(manifest.version(), 4);
    assert_eq!(u16::from_be_bytes([f.delta[8], f.delta[9]]), 4);
    let encodings: Vec<ChunkEncoding> = manifest
        .images
        .iter()
        .flat_map(|i| i.stored_chunks.iter().map(|c| c.encoding))
        .collect();
    for wanted in [ChunkEncoding::Source, ChunkEncoding::Patch] {
        assert!(encodings.contains(&wanted), "{wanted:?} in {encodings:?}");
    }
    // The moved part of rootfs is copied from where it sits in v1, not carried.
    assert!(
        f.delta.len() * 10 < f.full_v2.len(),
        "delta {} bytes, full {}",
        f.delta.len(),
        f.full_v2.len()
    );
    let delta_device = device_running_v1(&f, "delta.img");
    install(&f, &f.delta, &mut FileDevice::open(&delta_device).unwrap()).unwrap();
    assert_eq!(boots(&delta_device).as_deref(), Some("v2"));
    let full_device = device_running_v1(&f, "full.img");
    install(&f, &f.full_v2, &mut FileDevice::open(&full_device).unwrap()).unwrap();
    assert_eq!(booted_images(&delta_device), images_v2());
    assert_eq!(booted_images(&delta_device), booted_images(&full_device));
}

#[test]
fn a_delta_is_refused_before_any_write_on_a_device_that_runs_another_version() {
    let f = fixture();
    // A device that runs v2 already, and an empty one.
    let v2_device = f.dir.path().join("v2.img");
    install(
        &f,
        &f.full_v2,
        &mut FileDevice::create(&v2_device, &layout()).unwrap(),
    )
    .unwrap();
    let empty = f.dir.path().join("empty.img");
    drop(FileDevice::create(&empty, &layout()).unwrap());
    for path in [&v2_device, &empty] {
        let before = std::fs::read(path).unwrap();
        let err = install(&f, &f.delta, &mut FileDevice::open(path).unwrap()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::SourceMismatch, "{err}");
        assert_eq!(err.code(), 34);
        assert!(err.to_string().contains("this delta applies to"), "{err}");
        assert_eq!(std::fs::read(path).unwrap(), before, "not a byte written");
    }
    assert!(
        install(&f, &f.delta, &mut FileDevice::open(&v2_device).unwrap())
            .unwrap_err()
            .to_string()
            .contains("software version v2")
    );
}

#[test]
fn checked_against_the_devices_record_a_delta_installs_alike_and_refuses_another_version_unwritten()
{
    let f = fixture();
    let device = device_running_v1(&f, "recorded.img");
    delta_on(&f, &device, SourceCheck::Recorded).unwrap();
    assert_eq!(boots(&device).as_deref(), Some("v2"));
    assert_eq!(booted_images(&device), images_v2());
    // Now it runs v2, and records it: the delta from v1 is refused before anything is written.
    let before = std::fs::read(&device).unwrap();
    let err = delta_on(&f, &device, SourceCheck::Recorded).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::SourceMismatch, "{err}");
    assert!(err.to_string().contains("recorded"), "{err}");
    assert_eq!(
        std::fs::read(&device).unwrap(),
        before,
        "not a byte written"
    );
}

#[test]
fn a_running_slot_damaged_since_its_install_is_refused_before_writing_when_hashed_whole_and_part_way_when_recorded()
 {
    let f = fixture();
    let damaged = |name: &str| {
        let path = device_running_v1(&f, name);
        // A byte of the system image in the slot that runs rots.
        let running = FileDevice::open(&path)
            .unwrap()
            .device_info()
            .unwrap()
            .active_slot;
        let at = layout().offset_of("system", running.unwrap()).unwrap() + 9 * u64::from(CHUNK);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[usize::try_from(at).unwrap() + 5] ^= 0x10;
        std::fs::write(&path, &bytes).unwrap();
        (path, bytes)
    };
    let (whole, before) = damaged("whole.img");
    let err = delta_on(&f, &whole, SourceCheck::Whole).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::SourceMismatch, "{err}");
    assert_eq!(std::fs::read(&whole).unwrap(), before, "not a byte written");

    let (recorded, before) = damaged("recorded.img");
    let err = delta_on(&f, &recorded, SourceCheck::Recorded).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::SourceMismatch, "{err}");
    assert!(err.to_string().contains("no longer the source"), "{err}");
    // Part way: the slot being written changed, the one that runs did not and still runs v1.
    let after = std::fs::read(&recorded).unwrap();
    assert_ne!(
        after, before,
        "the other slot was written up to the damaged range"
    );
    let info = FileDevice::open(&recorded).unwrap().device_info().unwrap();
    let at = usize::try_from(
        layout()
            .offset_of("system", info.active_slot.unwrap())
            .unwrap(),
    )
    .unwrap();
    let system = images_v1()[1].len();
    assert_eq!(after[at..at + system], before[at..at + system]);
    assert_eq!(
        info.installed_version.as_deref(),
        Some("v1"),
        "nothing switched"
    );
}

/// The delta's manifest, changed by `edit` and signed again with the fixture's key, before the
/// delta's own payload.
fn resigned(f: &Fixture, edit: impl FnOnce(&mut Manifest)) -> Vec<u8> {
    let mut manifest = verified_manifest(f, &f.delta);
    let payload_at = {
        let mut cursor = std::io::Cursor::new(f.delta.as_slice());
        PackageReader::new(&mut cursor).unwrap();
        cursor.position() as usize
    };
    edit(&mut manifest);
    let message = veriflash_core::format::signed_message(&manifest).unwrap();
    let entry = SignatureEntry {
        algorithm: f.key.algorithm(),
        key_id: f.key.verifying_key().key_id().0,
        signature: f.key.sign(&message).unwrap(),
        certificates: vec![],
    };
    let mut bytes = veriflash_core::format::encode_prefix(
        &message,
        &SignatureBlock {
            entries: vec![entry],
        },
    )
    .unwrap();
    bytes.extend_from_slice(&f.delta[payload_at..]);
    bytes
}

#[test]
fn a_tampered_delta_is_refused_with_a_stable_code_and_v1_keeps_booting() {
    let f = fixture();
    let manifest = verified_manifest(&f, &f.delta);
    // A patch's frame changed: its signed frame digest no longer matches.
    let rootfs = &manifest.images[1];
    let patch = rootfs
        .stored_chunks
        .iter()
        .position(|c| c.encoding == ChunkEncoding::Patch)
        .unwrap();
    let payload_at = f.delta.len() - manifest.payload_len().unwrap() as usize;
    let frame_at = payload_at
        + manifest.images[0].stored_size() as usize
        + rootfs.stored_chunks[..patch]
            .iter()
            .map(|c| c.stored_len as usize)
            .sum::<usize>();
    let mut frame_changed = f.delta.clone();
    frame_changed[frame_at + 10] ^= 1;
    // A copied chunk's source offset moved by one byte, re-signed: the chunk it copies is not
    // the one the manifest names.
    let offset_moved = resigned(&f, |m| {
        let reference = m.images[1]
            .source
            .as_mut()
            .unwrap()
            .references
            .first_mut()
            .unwrap();
        reference.offset += 1;
    });
    // The same, not re-signed: the signature no longer covers the manifest.
    let mut unsigned_edit = offset_moved.clone();
    let sig_at = 32 + u32::from_be_bytes(offset_moved[16..20].try_into().unwrap()) as usize;
    unsigned_edit[..sig_at].copy_from_slice(
        &resigned(&f, |m| {
            let reference = m.images[1]
                .source
                .as_mut()
                .unwrap()
                .references
                .first_mut()
                .unwrap();
            reference.offset += 2;
        })[..sig_at],
    );
    for (name, package, kind) in [
        ("frame changed", frame_changed, ErrorKind::IntegrityMismatch),
        ("offset moved", offset_moved, ErrorKind::DeltaOutputMismatch),
        ("not re-signed", unsigned_edit, ErrorKind::NotAuthentic),
    ] {
        let path = device_running_v1(&f, &format!("{}.img", name.replace(' ', "-")));
        let err = install(&f, &package, &mut FileDevice::open(&path).unwrap()).unwrap_err();
        assert_eq!(err.kind(), kind, "{name}: {err}");
        assert_eq!(boots(&path).as_deref(), Some("v1"), "{name}");
    }
}

/// The images v1 installs, as a delta's stream reads them without a device.
struct Images(Vec<(&'static str, Vec<u8>)>);

impl InstalledImages for Images {
    fn installed_len(&mut self, partition: &str) -> Result<Option<u64>, veriflash_core::Error> {
        Ok(self
            .0
            .iter()
            .find(|(p, _)| *p == partition)
            .map(|(_, b)| b.len() as u64))
    }

    fn read_installed(
        &mut self,
        partition: &str,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<(), veriflash_core::Error> {
        let (_, bytes) = self.0.iter().find(|(p, _)| *p == partition).unwrap();
        buf.copy_from_slice(&bytes[offset as usize..offset as usize + buf.len()]);
        Ok(())
    }
}

#[test]
fn a_delta_streams_against_its_source_and_verifies_its_stored_bytes_alone() {
    let f = fixture();
    let anchors = trust(&f.key);
    let verifier = anchors.verifier();
    let v1 = images_v1();
    let mut installed = Images(vec![("boot", v1[0].clone()), ("system", v1[1].clone())]);
    let mut rebuilt = vec![Vec::new(), Vec::new()];
    PackageReader::new(f.delta.as_slice())
        .unwrap()
        .verify(&verifier)
        .unwrap()
        .stream_with_source(&mut installed, |image, chunk| {
            let i = usize::from(image.name != "boot");
            rebuilt[i].extend_from_slice(chunk.bytes());
            Ok(())
        })
        .unwrap();
    assert_eq!(rebuilt, images_v2());
    // Without a device, every stored byte is checked; the rebuilt chunks wait for the install.
    let report = PackageReader::new(f.delta.as_slice())
        .unwrap()
        .verify(&verifier)
        .unwrap()
        .verify_payload()
        .unwrap();
    assert!(report.images.iter().all(|i| !i.sha256_checked));
    // Against v2's images it is not its source.
    let v2 = images_v2();
    let mut wrong = Images(vec![("boot", v2[0].clone()), ("system", v2[1].clone())]);
    let err = PackageReader::new(f.delta.as_slice())
        .unwrap()
        .verify(&verifier)
        .unwrap()
        .stream_with_source(&mut wrong, |_, _| Ok(()))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::SourceMismatch);
    // A device that cannot read back what it runs (a single-slot device) cannot take a delta.
    let mut unreadable = Images(vec![]);
    let err = PackageReader::new(f.delta.as_slice())
        .unwrap()
        .verify(&verifier)
        .unwrap()
        .stream_with_source(&mut unreadable, |_, _| Ok(()))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::SourceMismatch);
    assert!(err.remedy().contains("full package"), "{}", err.remedy());
    assert!(err.to_string().contains("cannot read back"), "{err}");
    // A delta is installed from a file: a staged download checks each stored byte against the
    // digest that covers it (a patch's frame digest) and leaves the very package; streaming it
    // into an install (which reuses what the device holds without one) refuses it by name.
    let path = f.dir.path().join("delta.vfp");
    std::fs::write(&path, &f.delta).unwrap();
    let remote = || {
        veriflash_core::ota::RemotePackage::open(
            veriflash_core::source::FileSource::open(&path).unwrap(),
            &verifier,
            veriflash_core::ota::OtaOptions::new(),
        )
        .unwrap()
    };
    let err = remote().stream(false, |_, _| Ok(())).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(err.to_string().contains("installed from a file"), "{err}");
    assert!(err.remedy().contains("veriflash fetch"), "{}", err.remedy());
    let fetched = f.dir.path().join("fetched.vfp");
    let (_, stats) = remote()
        .fetch_to_file(&fetched, &verifier, &mut |_| {})
        .unwrap();
    assert_eq!(std::fs::read(&fetched).unwrap(), f.delta);
    let payload: u64 = verified_manifest(&f, &f.delta)
        .images
        .iter()
        .map(veriflash_core::format::ImageSpec::stored_size)
        .sum();
    assert_eq!(stats.bytes_fetched, payload);
    // A patch frame altered on the server is caught against its frame digest.
    let manifest = verified_manifest(&f, &f.delta);
    let (patched_image, patched_chunk) = manifest
        .images
        .iter()
        .enumerate()
        .find_map(|(i, image)| {
            (0..image.chunk_count())
                .find(|&c| image.stored_chunk(c).unwrap().encoding == ChunkEncoding::Patch)
                .map(|c| (i, c))
        })
        .unwrap();
    let mut offset = f.delta.len() as u64
        - manifest
            .images
            .iter()
            .map(veriflash_core::format::ImageSpec::stored_size)
            .sum::<u64>();
    for image in &manifest.images[..patched_image] {
        offset += image.stored_size();
    }
    for c in 0..patched_chunk {
        offset += u64::from(
            manifest.images[patched_image]
                .stored_chunk(c)
                .unwrap()
                .stored_len,
        );
    }
    let mut tampered = f.delta.clone();
    tampered[offset as usize] ^= 1;
    std::fs::write(&path, &tampered).unwrap();
    let err = remote()
        .fetch_to_file(&f.dir.path().join("tampered.vfp"), &verifier, &mut |_| {})
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::IntegrityMismatch, "{err}");
    // The old package must verify with the keys given: an unverified old package is never
    // packed against.
    let old = f.dir.path().join("v1.vfp");
    let other = trust(&SigningKey::generate_p256().unwrap());
    let err = DeltaBase::from_package(&old, &other.verifier()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::UnknownSigner, "{err}");
}

#[test]
fn power_cut_at_every_storage_operation_of_a_delta_package_install_never_bricks() {
    let f = fixture();
    let base = device_running_v1(&f, "base.img");
    let operations = {
        let copy = f.dir.path().join("count.img");
        std::fs::copy(&base, &copy).unwrap();
        let mut device = FileDevice::open(&copy).unwrap();
        install(&f, &f.delta, &mut device).unwrap();
        device.operations()
    };
    assert!(operations > 20, "{operations} operations");
    let scratch = f.dir.path().join("cut.img");
    Sweep {
        base: &base,
        scratch: &scratch,
        operations,
        old: "v1",
        new: "v2",
    }
    .run(
        &mut |path, cut| {
            let mut device = FileDevice::open(path).unwrap();
            if let Some((at, mode)) = cut {
                device.cut_power_at(at, mode);
            }
            // Cut or not, the delta applies: the active slot is never written.
            install(&f, &f.delta, &mut device)
        },
        &mut |_, _, _| {},
        &mut |_| {},
    );
}

#[test]
fn a_copy_only_delta_stores_no_patch_and_installs_the_same_bytes() {
    let f = fixture();
    let old = f.dir.path().join("v1.vfp");
    let base = DeltaBase::from_package(&old, &trust(&f.key).verifier()).unwrap();
    let copy_only = UnsignedPackage::prepare_delta(
        spec(images_v2(), 2),
        &PackOptions::new().copy_only(true),
        &base,
    )
    .unwrap();
    let encodings: Vec<ChunkEncoding> = copy_only
        .manifest()
        .images
        .iter()
        .flat_map(|i| i.stored_chunks.iter().map(|c| c.encoding))
        .collect();
    assert!(encodings.contains(&ChunkEncoding::Source));
    assert!(!encodings.contains(&ChunkEncoding::Patch));
    let package = written(&copy_only, &f.key);
    // Patches pay on this pair: the delta with them is smaller.
    assert!(
        f.delta.len() < package.len(),
        "{} vs {}",
        f.delta.len(),
        package.len()
    );
    let device = device_running_v1(&f, "copy-only.img");
    install(&f, &package, &mut FileDevice::open(&device).unwrap()).unwrap();
    assert_eq!(booted_images(&device), images_v2());
}

/// A chunk as the sink got it: image, index, offset, bytes.
type Handed = (String, u64, u64, Vec<u8>);

/// The chunks a delta streams against `installed` with `options`, in the order they were
/// handed on, and how the stream ended.
fn streamed(
    f: &Fixture,
    installed: &mut dyn InstalledImages,
    options: ParallelOptions,
) -> (Vec<Handed>, Result<(), veriflash_core::Error>) {
    let mut chunks = Vec::new();
    let result = PackageReader::new(f.delta.as_slice())
        .unwrap()
        .verify(&trust(&f.key).verifier())
        .unwrap()
        .with_options(options)
        .stream_with_source(installed, |image, chunk| {
            chunks.push((
                image.name.clone(),
                chunk.index(),
                chunk.offset(),
                chunk.bytes().to_vec(),
            ));
            Ok(())
        })
        .map(|_| ());
    (chunks, result)
}

fn v1_images() -> Images {
    let v1 = images_v1();
    Images(vec![("boot", v1[0].clone()), ("system", v1[1].clone())])
}

#[test]
fn a_delta_streams_the_same_chunks_in_the_same_order_on_one_thread_and_on_many() {
    let f = fixture();
    let one = ParallelOptions::new().threads(1).max_in_flight(1);
    let (serial, result) = streamed(&f, &mut v1_images(), one);
    result.unwrap();
    let images: Vec<Vec<u8>> = ["boot", "rootfs"]
        .iter()
        .map(|name| {
            serial
                .iter()
                .filter(|c| c.0 == *name)
                .flat_map(|c| c.3.clone())
                .collect()
        })
        .collect();
    assert_eq!(images, images_v2());
    for options in [
        ParallelOptions::new(),
        ParallelOptions::new()
            .threads(4)
            .max_in_flight(8)
            .min_buffer_len(1),
        ParallelOptions::new()
            .threads(3)
            .max_in_flight(2)
            .min_buffer_len(3 * 4096),
    ] {
        let (parallel, result) = streamed(&f, &mut v1_images(), options);
        result.unwrap();
        assert!(parallel == serial, "{options:?}");
    }
}

/// v1's images, read right once per partition (the source check reads each image whole, in
/// one read here), and damaged in `partition` from byte `from` on for every read after that.
struct DamagedAfterCheck {
    images: Images,
    partition: &'static str,
    from: u64,
    reads: usize,
}

impl InstalledImages for DamagedAfterCheck {
    fn installed_len(&mut self, partition: &str) -> Result<Option<u64>, veriflash_core::Error> {
        self.images.installed_len(partition)
    }

    fn read_installed(
        &mut self,
        partition: &str,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<(), veriflash_core::Error> {
        self.images.read_installed(partition, offset, buf)?;
        self.reads += 1;
        if self.reads > 2 && partition == self.partition {
            for (at, b) in (offset..).zip(buf.iter_mut()) {
                if at >= self.from {
                    *b ^= 0x5A;
                }
            }
        }
        Ok(())
    }
}

#[test]
fn the_first_rebuilt_chunk_that_fails_is_the_error_after_every_chunk_before_it_was_handed_on_and_a_changed_source_is_named()
 {
    let f = fixture();
    const FROM: u64 = 120_000;
    let rootfs = verified_manifest(&f, &f.delta).images[1].clone();
    // The rebuilt chunks and the installed range each is read from, in order.
    let rebuilt: Vec<(u64, u64)> = (0..rootfs.chunk_count())
        .filter(|&i| rootfs.stored_chunk(i).unwrap().encoding.uses_source())
        .zip(&rootfs.source.as_ref().unwrap().references)
        .map(|(i, r)| (i, r.offset + u64::from(r.len)))
        .collect();
    let damaged: Vec<u64> = rebuilt
        .iter()
        .filter(|(_, end)| *end > FROM)
        .map(|(i, _)| *i)
        .collect();
    let first = damaged[0];
    assert!(first > 4 && damaged.len() > 4, "chunk {first}, {damaged:?}");
    for options in [
        ParallelOptions::new().threads(1).max_in_flight(1),
        ParallelOptions::new()
            .threads(4)
            .max_in_flight(8)
            .min_buffer_len(1),
        ParallelOptions::new(),
    ] {
        let mut damaged = DamagedAfterCheck {
            images: v1_images(),
            partition: "system",
            from: FROM,
            reads: 0,
        };
        let (chunks, result) = streamed(&f, &mut damaged, options);
        let err = result.unwrap_err();
        // The installed image changed after it was checked: said so (hashed again on this
        // failure path), not blamed on the package.
        assert_eq!(err.kind(), ErrorKind::SourceMismatch, "{options:?}: {err}");
        assert!(err.to_string().contains("no longer the source"), "{err}");
        assert_eq!(err.location().chunk, Some(first), "{options:?}: {err}");
        assert_eq!(err.location().image.as_deref(), Some("rootfs"));
        let handed_on: Vec<(&str, u64)> = chunks.iter().map(|c| (c.0.as_str(), c.1)).collect();
        let boot_chunks = verified_manifest(&f, &f.delta).images[0].chunk_count();
        let expected: Vec<(&str, u64)> = (0..boot_chunks)
            .map(|i| ("boot", i))
            .chain((0..first).map(|i| ("rootfs", i)))
            .collect();
        assert_eq!(handed_on, expected, "{options:?}");
    }
}
