//! Installing packages on the file-backed reference device: the happy path, every policy
//! refusal, power cuts at every storage operation, a source that changes under us, events.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::io::{self, Read};
use std::path::{Path, PathBuf};

use veriflash_core::format::SignatureBlock;
use veriflash_core::plugin::Slot;
use veriflash_core::plugin::file_device::{Cut, FileDevice, Layout};
use veriflash_core::sig::{PinnedKeys, SigningKey, Verifier};
use veriflash_core::{
    CancelToken, ErrorKind, Event, ImageData, ImageSource, InstallPolicy, PackageReader,
    PackageSpec, Phase, UnsignedPackage, install,
};
use veriflash_test_support::{file_layout, pseudo_random};

#[path = "support/power.rs"]
mod power;
use power::Sweep;

fn layout() -> Layout {
    file_layout(
        &[
            ("boot", 64 << 10),
            ("system", 160 << 10),
            ("efs2", 32 << 10),
        ],
        &["efs2"],
    )
}

struct Pkg {
    bytes: Vec<u8>,
    boot: Vec<u8>,
    system: Vec<u8>,
}

fn package(
    key: &SigningKey,
    edit: impl FnOnce(&mut PackageSpec),
    seed: u64,
    security_version: u64,
) -> Pkg {
    let boot = pseudo_random(40_000 + 123, seed);
    let system = pseudo_random(100_000 + 77, seed + 1);
    let mut images = vec![
        ImageSource::new("boot", "boot", ImageData::Bytes(boot.clone())),
        ImageSource::new("rootfs", "system", ImageData::Bytes(system.clone())),
    ];
    for i in &mut images {
        i.chunk_size = 4096;
    }
    let mut spec = PackageSpec {
        product: "acme-hotspot-x1".into(),
        chipset: "mdm9607".into(),
        hardware_revisions: vec!["r1".into(), "r2".into()],
        software_version: format!("v{security_version}"),
        security_version,
        images,
    };
    edit(&mut spec);
    let unsigned = UnsignedPackage::prepare(spec).unwrap();
    let block = SignatureBlock {
        entries: vec![unsigned.sign(key).unwrap()],
    };
    let mut bytes = Vec::new();
    unsigned.write_to(&block, &mut bytes).unwrap();
    Pkg {
        bytes,
        boot,
        system,
    }
}

/// A device that has had the version-5 package (seed 1) installed: slot B active, floor 5.
fn device_running_v5(dir: &Path, name: &str, key: &SigningKey, trust: &PinnedKeys) -> PathBuf {
    let path = new_device(dir, name);
    flash(
        &path,
        &package(key, |_| {}, 1, 5).bytes,
        trust,
        &InstallPolicy::default(),
    )
    .unwrap();
    path
}

fn new_device(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    FileDevice::create(&path, &layout()).unwrap();
    path
}

/// Installs from `source` on an open device with the default policy, ignoring events.
fn install_on(
    device: &mut FileDevice,
    source: impl Read,
    trust: &PinnedKeys,
) -> Result<veriflash_core::VerifyReport, veriflash_core::Error> {
    install(
        source,
        &Verifier::new(trust),
        &InstallPolicy::default(),
        device,
        &CancelToken::new(),
        &mut |_| {},
    )
}

fn flash(
    path: &Path,
    pkg: &[u8],
    trust: &PinnedKeys,
    policy: &InstallPolicy,
) -> Result<Vec<Event>, veriflash_core::Error> {
    let mut device = FileDevice::open(path).unwrap();
    let mut events = Vec::new();
    install(
        pkg,
        &Verifier::new(trust),
        policy,
        &mut device,
        &CancelToken::new(),
        &mut |e| events.push(e.clone()),
    )
    .map(|_| events)
}

fn trust(key: &SigningKey) -> PinnedKeys {
    let mut t = PinnedKeys::new();
    t.add(key.verifying_key());
    t
}

#[test]
fn two_images_land_in_the_inactive_slot_which_then_boots() {
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::generate_p256().unwrap();
    let pkg = package(&key, |_| {}, 1, 5);
    let path = new_device(dir.path(), "dev.img");

    let events = flash(&path, &pkg.bytes, &trust(&key), &InstallPolicy::default()).unwrap();

    let mut device = FileDevice::open(&path).unwrap();
    let status = device.current_status();
    assert_eq!(status.info.active_slot, Some(Slot::B));
    assert_eq!(status.info.security_floor, 5);
    assert_eq!(status.info.installed_version.as_deref(), Some("v5"));
    assert_eq!(status.last_result.as_ref().unwrap().code, 0);
    assert_eq!(status.interrupted_install, None);
    assert_eq!(
        device
            .read_partition("boot", Slot::B, pkg.boot.len() as u64)
            .unwrap(),
        pkg.boot
    );
    assert_eq!(
        device
            .read_partition("system", Slot::B, pkg.system.len() as u64)
            .unwrap(),
        pkg.system
    );
    // The last write unit is padded with erased bytes.
    let padded = device.read_partition("boot", Slot::B, 40_960).unwrap();
    assert!(padded[pkg.boot.len()..].iter().all(|b| *b == 0xFF));
    assert_eq!(device.boot_check().unwrap().as_deref(), Some("v5"));

    // The exact phase order.
    let phases: Vec<&Event> = events
        .iter()
        .filter(|e| !matches!(e, Event::Progress { .. }))
        .collect();
    let expected = vec![
        Event::PhaseStarted(Phase::Signature),
        Event::PhaseFinished(Phase::Signature),
        Event::PhaseStarted(Phase::Preflight),
        Event::PhaseFinished(Phase::Preflight),
        Event::PhaseStarted(Phase::Staging),
        Event::PhaseFinished(Phase::Staging),
        Event::PhaseStarted(Phase::Flash),
        Event::PhaseFinished(Phase::Flash),
        Event::PhaseStarted(Phase::ReadBack),
        Event::PhaseFinished(Phase::ReadBack),
        Event::PhaseStarted(Phase::Commit),
        Event::PhaseFinished(Phase::Commit),
        Event::Finished(None),
    ];
    assert_eq!(phases, expected.iter().collect::<Vec<_>>());
    // Progress is monotonic and ends at the total.
    let progress: Vec<(u64, u64)> = events
        .iter()
        .filter_map(|e| match e {
            Event::Progress { done, total, .. } => Some((*done, *total)),
            _ => None,
        })
        .collect();
    let total = (pkg.boot.len() + pkg.system.len()) as u64;
    assert_eq!(progress.len(), 10 + 25);
    assert!(progress.windows(2).all(|w| w[0].0 < w[1].0));
    assert_eq!(*progress.last().unwrap(), (total, total));

    // A second, newer install goes back to slot A (once this session let the device go).
    drop(device);
    let newer = package(&key, |_| {}, 9, 6);
    flash(&path, &newer.bytes, &trust(&key), &InstallPolicy::default()).unwrap();
    let mut device = FileDevice::open(&path).unwrap();
    assert_eq!(device.current_status().info.active_slot, Some(Slot::A));
    assert_eq!(device.boot_check().unwrap().as_deref(), Some("v6"));
}

#[test]
fn refusals_write_nothing_to_the_device() {
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::generate_p256().unwrap();
    let t = trust(&key);
    let path = device_running_v5(dir.path(), "dev.img", &key, &t);
    let before = std::fs::read(&path).unwrap();

    let cases: Vec<(&str, Pkg, InstallPolicy, ErrorKind)> = vec![
        (
            "wrong product",
            package(&key, |s| s.product = "other".into(), 2, 6),
            InstallPolicy::default(),
            ErrorKind::WrongProduct,
        ),
        (
            "wrong chipset",
            package(&key, |s| s.chipset = "mdm9207".into(), 2, 6),
            InstallPolicy::default(),
            ErrorKind::WrongChipset,
        ),
        (
            "wrong revision",
            package(&key, |s| s.hardware_revisions = vec!["r9".into()], 2, 6),
            InstallPolicy::default(),
            ErrorKind::WrongHardwareRevision,
        ),
        (
            "downgrade",
            package(&key, |_| {}, 2, 4),
            InstallPolicy::default(),
            ErrorKind::DowngradeRefused,
        ),
        (
            "unknown partition",
            package(&key, |s| s.images[1].partition = "modem".into(), 2, 6),
            InstallPolicy::default(),
            ErrorKind::UnknownPartition,
        ),
        (
            "protected partition",
            package(&key, |s| s.images[1].partition = "efs2".into(), 2, 6),
            InstallPolicy::default(),
            ErrorKind::ProtectedPartition,
        ),
        (
            "too large",
            package(
                &key,
                |s| s.images[0].data = ImageData::Bytes(vec![1; (64 << 10) + 1]),
                2,
                6,
            ),
            InstallPolicy::default(),
            ErrorKind::ImageTooLarge,
        ),
        (
            "staging quota",
            package(&key, |_| {}, 2, 6),
            InstallPolicy::default().with_staging_quota(100_000),
            ErrorKind::InsufficientStorage,
        ),
        (
            "memory budget",
            package(&key, |_| {}, 2, 6),
            InstallPolicy::default().with_memory_budget(1024),
            ErrorKind::InsufficientMemory,
        ),
        (
            "battery",
            package(&key, |_| {}, 2, 6),
            InstallPolicy::default().with_preflight_hook(Box::new(|_| Err("battery at 5%".into()))),
            ErrorKind::PreflightRefused,
        ),
    ];
    for (what, pkg, policy, kind) in cases {
        let err = flash(&path, &pkg.bytes, &t, &policy).unwrap_err();
        assert_eq!(err.kind(), kind, "{what}: {err}");
        assert_eq!(
            std::fs::read(&path).unwrap(),
            before,
            "{what}: the device was written"
        );
    }
    // The staging message says how much more is needed.
    let err = flash(
        &path,
        &package(&key, |_| {}, 2, 6).bytes,
        &t,
        &InstallPolicy::default().with_staging_quota(100_000),
    )
    .unwrap_err();
    assert!(err.message().contains("needs"), "{}", err.message());
}

#[test]
fn a_package_file_shorter_or_longer_than_its_layout_is_refused_before_the_device_is_touched() {
    // A truncated download used to be found only at its end, after the inactive slot had been
    // erased: the A/B fallback was lost to a file that could never complete.
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::generate_p256().unwrap();
    let t = trust(&key);
    let path = device_running_v5(dir.path(), "dev.img", &key, &t);
    let before = std::fs::read(&path).unwrap();
    let bytes = package(&key, |_| {}, 2, 6).bytes;
    let file = dir.path().join("pkg.vfp");
    for (what, content, kind) in [
        ("truncated", &bytes[..bytes.len() - 1], ErrorKind::Truncated),
        (
            "with trailing data",
            &[bytes.as_slice(), b"x"].concat()[..],
            ErrorKind::TrailingData,
        ),
    ] {
        std::fs::write(&file, content).unwrap();
        let mut device = FileDevice::open(&path).unwrap();
        let mut events = Vec::new();
        let err = veriflash_core::install_package(
            PackageReader::open(&file).unwrap(),
            &Verifier::new(&t),
            &InstallPolicy::default(),
            &mut device,
            &CancelToken::new(),
            &mut |e| events.push(e.clone()),
        )
        .unwrap_err();
        assert_eq!(err.kind(), kind, "{what}: {err}");
        assert_eq!(device.operations(), 0, "{what}: no storage operation ran");
        assert!(
            !events.contains(&Event::PhaseStarted(Phase::Preflight)),
            "{what}: refused with the signatures, before the pre-flight"
        );
        drop(device);
        assert_eq!(std::fs::read(&path).unwrap(), before, "{what}");
    }
}

/// `pkg` re-signed by `key` with the first image's whole-image digest changed: every chunk still
/// matches its signed digest, only the signed whole-image digest is wrong (a packer bug).
fn with_wrong_image_digest(pkg: &[u8], key: &SigningKey) -> Vec<u8> {
    let reader = PackageReader::new(pkg).unwrap();
    let payload_len = usize::try_from(reader.header().payload_len).unwrap();
    let mut manifest = reader.manifest_unverified().unwrap();
    manifest.images[0].digest[0] ^= 1;
    let signed = veriflash_core::format::signed_message(&manifest).unwrap();
    let entry = veriflash_core::format::SignatureEntry {
        algorithm: key.algorithm(),
        key_id: key.verifying_key().key_id().0,
        signature: key.sign(&signed).unwrap(),
        certificates: Vec::new(),
    };
    let block = SignatureBlock {
        entries: vec![entry],
    };
    let mut out = veriflash_core::format::encode_prefix(&signed, &block).unwrap();
    out.extend_from_slice(&pkg[pkg.len() - payload_len..]);
    out
}

#[test]
fn a_signed_image_digest_that_contradicts_the_chunks_is_never_reported_as_checked_nor_flashed() {
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::generate_p256().unwrap();
    let t = trust(&key);
    let path = device_running_v5(dir.path(), "dev.img", &key, &t);
    let bad = with_wrong_image_digest(&package(&key, |_| {}, 2, 6).bytes, &key);

    // Verification by chunks passes (they cover every byte) and says the digest is unchecked.
    let report = PackageReader::new(bad.as_slice())
        .unwrap()
        .verify(&Verifier::new(&t))
        .unwrap()
        .verify_payload()
        .unwrap();
    assert!(report.images.iter().all(|i| !i.sha256_checked));
    // Asked to, it hashes the whole image and refuses.
    let err = PackageReader::new(bad.as_slice())
        .unwrap()
        .verify(&Verifier::new(&t))
        .unwrap()
        .with_whole_image_check(true)
        .verify_payload()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ImageDigestMismatch, "{err}");

    // An install always checks it, before read-back: the package is refused as such (31), not
    // blamed on the device (52), and nothing is committed.
    let err = flash(&path, &bad, &t, &InstallPolicy::default()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ImageDigestMismatch, "{err}");
    let mut device = FileDevice::open(&path).unwrap();
    let status = device.current_status();
    assert_eq!(status.info.active_slot, Some(Slot::B));
    assert_eq!(status.info.security_floor, 5);
    assert_eq!(status.last_result.unwrap().code, 31);
    assert_eq!(device.boot_check().unwrap().as_deref(), Some("v5"));
    drop(device);

    // A consistent package installs, and its report says the digests were re-computed.
    let mut device = FileDevice::open(&path).unwrap();
    let report = install_on(
        &mut device,
        package(&key, |_| {}, 2, 6).bytes.as_slice(),
        &t,
    )
    .unwrap();
    assert!(report.images.iter().all(|i| i.sha256_checked));
}

#[test]
fn corrupt_chunk_in_image_two_commits_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::generate_p256().unwrap();
    let t = trust(&key);
    let path = device_running_v5(dir.path(), "dev.img", &key, &t);
    let mut pkg = package(&key, |_| {}, 2, 6);
    let len = pkg.bytes.len();
    pkg.bytes[len - 50_000] ^= 0x10; // in the middle of rootfs
    let err = flash(&path, &pkg.bytes, &t, &InstallPolicy::default()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::IntegrityMismatch);
    assert_eq!(err.location().image.as_deref(), Some("rootfs"));
    let mut device = FileDevice::open(&path).unwrap();
    let status = device.current_status();
    assert_eq!(
        status.info.active_slot,
        Some(Slot::B),
        "the active slot must not change"
    );
    assert_eq!(status.info.security_floor, 5);
    assert_eq!(
        status.last_result.unwrap().code,
        ErrorKind::IntegrityMismatch.code()
    );
    assert_eq!(device.boot_check().unwrap().as_deref(), Some("v5"));
}

#[test]
fn power_cut_at_every_storage_operation_never_bricks() {
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::generate_p256().unwrap();
    let t = trust(&key);
    let base = device_running_v5(dir.path(), "base.img", &key, &t);
    let update = package(&key, |_| {}, 2, 6);

    // Count the operations of an uninterrupted install.
    let probe = dir.path().join("probe.img");
    std::fs::copy(&base, &probe).unwrap();
    let mut device = FileDevice::open(&probe).unwrap();
    install_on(&mut device, update.bytes.as_slice(), &t).unwrap();
    let operations = device.operations();
    assert!(
        operations > 40,
        "an install of two images takes many operations ({operations})"
    );

    let scratch = dir.path().join("cut.img");
    Sweep {
        base: &base,
        scratch: &scratch,
        operations,
        old: "v5",
        new: "v6",
    }
    .run(
        &mut |path, cut| {
            let mut device = FileDevice::open(path).unwrap();
            if let Some((at, mode)) = cut {
                device.cut_power_at(at, mode);
            }
            install_on(&mut device, update.bytes.as_slice(), &t).map(|_| ())
        },
        &mut |device, mode, cut| {
            // The journal shows the interrupted install (unless the journal write itself was
            // cut) until a re-run completes it.
            let journalled = device.current_status().interrupted_install.is_some();
            assert!(
                journalled || (cut == 1 && mode == Cut::Torn),
                "{mode:?} cut at {cut}"
            );
        },
        &mut |device| assert_eq!(device.current_status().info.security_floor, 6),
    );
}

/// A source whose bytes change after they were first read, as a file rewritten under us.
#[derive(Debug)]
struct ShiftySource {
    bytes: Vec<u8>,
    pos: usize,
}

impl Read for ShiftySource {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(self.bytes.len() - self.pos);
        buf[..n].copy_from_slice(&self.bytes[self.pos..self.pos + n]);
        // Everything served is now changed in the "file": a second read would see other bytes.
        for b in &mut self.bytes[self.pos..self.pos + n] {
            *b ^= 0xA5;
        }
        self.pos += n;
        Ok(n)
    }
}

#[test]
fn a_source_that_changes_after_reading_cannot_get_other_bytes_onto_the_device() {
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::generate_p256().unwrap();
    let t = trust(&key);
    let path = new_device(dir.path(), "dev.img");
    let pkg = package(&key, |_| {}, 3, 5);
    let mut device = FileDevice::open(&path).unwrap();
    let source = ShiftySource {
        bytes: pkg.bytes.clone(),
        pos: 0,
    };
    install_on(&mut device, source, &t).unwrap();
    // Exactly the signed images landed: every byte was read once, checked, and written as read.
    assert_eq!(
        device
            .read_partition("boot", Slot::B, pkg.boot.len() as u64)
            .unwrap(),
        pkg.boot
    );
    assert_eq!(
        device
            .read_partition("system", Slot::B, pkg.system.len() as u64)
            .unwrap(),
        pkg.system
    );
}

#[test]
fn cancellation_between_chunks_aborts_and_keeps_the_old_slot() {
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::generate_p256().unwrap();
    let t = trust(&key);
    let path = new_device(dir.path(), "dev.img");
    let pkg = package(&key, |_| {}, 3, 5);
    let mut device = FileDevice::open(&path).unwrap();
    let cancel = CancelToken::new();
    let mut seen = 0;
    let err = install(
        pkg.bytes.as_slice(),
        &Verifier::new(&t),
        &InstallPolicy::default(),
        &mut device,
        &cancel,
        &mut |e| {
            if matches!(e, Event::Progress { .. }) {
                seen += 1;
                if seen == 3 {
                    cancel.cancel();
                }
            }
        },
    )
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Cancelled);
    assert_eq!(seen, 3, "no chunk after the cancel");
    drop(device);
    let status = FileDevice::open(&path).unwrap().current_status();
    assert_eq!(status.info.active_slot, Some(Slot::A));
    assert_eq!(
        status.last_result.unwrap().code,
        ErrorKind::Cancelled.code()
    );
}

/// Serves the first `limit` bytes, then never answers again (within any test's patience).
#[derive(Debug)]
struct Stalls {
    bytes: Vec<u8>,
    pos: usize,
    limit: usize,
}

impl Read for Stalls {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.limit {
            std::thread::sleep(std::time::Duration::from_secs(60));
            return Err(io::Error::other("gave up"));
        }
        let n = buf.len().min(self.limit - self.pos);
        buf[..n].copy_from_slice(&self.bytes[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[test]
fn a_stalled_source_times_out_and_the_old_slot_stays() {
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::generate_p256().unwrap();
    let t = trust(&key);
    let path = new_device(dir.path(), "dev.img");
    let pkg = package(&key, |_| {}, 3, 5);
    let limit = pkg.bytes.len() - 60_000;
    let source = veriflash_core::source::TimeoutReader::new(
        Stalls {
            bytes: pkg.bytes.clone(),
            pos: 0,
            limit,
        },
        std::time::Duration::from_millis(200),
    )
    .unwrap();
    let mut device = FileDevice::open(&path).unwrap();
    let err = install_on(&mut device, source, &t).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    drop(device);
    let status = FileDevice::open(&path).unwrap().current_status();
    assert_eq!(status.info.active_slot, Some(Slot::A));
    assert_eq!(status.last_result.unwrap().code, ErrorKind::Timeout.code());
}
