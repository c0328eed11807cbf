//! The `Updater`: one pipeline for every frontend — verify, install on one device or many, from
//! a file, a stream or byte ranges; a device that drops off is waited for and the install runs
//! again; a device's anti-rollback floor and trust anchors travel with the device (or with its
//! host record, for a device that cannot keep them), whichever updater flashes it next.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::{Image, build, pseudo_random};
use veriflash_core::format::SignatureBlock;
use veriflash_core::plugin::file_device::FileDevice;
use veriflash_core::plugin::{
    Chunk, DeviceInfo, DeviceStatus, Digest, FlashSession, InstallPlan, LastResult, PartitionInfo,
    Plugin, PluginEnvironment, PluginError, Registry, StorageGeometry,
};
use veriflash_core::sig::{PinnedKeys, SigningKey};
use veriflash_core::source::FileSource;
use veriflash_core::{
    AnchorSet, ErrorKind, Event, ImageData, ImageSource, PackageSource, PackageSpec, Reconnect,
    Trust, TrustedTime, Updater, UpdaterBuilder,
};
use veriflash_test_support::file_layout;

fn anchors(keys: &[&SigningKey], version: u64) -> AnchorSet {
    let mut pinned = PinnedKeys::new();
    for key in keys {
        pinned.add(key.verifying_key());
    }
    AnchorSet::new(pinned, 1).with_version(version)
}

/// A package of two images ("boot" and "system") at `security_version`, signed by `keys`.
fn package(keys: &[&SigningKey], security_version: u64, seed: u64) -> Vec<u8> {
    build(
        keys,
        vec![
            Image {
                name: "boot",
                bytes: pseudo_random(20_000, seed),
                chunk_size: 4096,
            },
            Image {
                name: "system",
                bytes: pseudo_random(50_000, seed + 1),
                chunk_size: 4096,
            },
        ],
        security_version,
    )
    .bytes
}

/// A package that rotates the anchors to `next`, signed by every key in `signers`.
fn rotating_package(signers: &[&SigningKey], next: &AnchorSet, security_version: u64) -> Vec<u8> {
    let images = ["boot", "system"]
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let mut image = ImageSource::new(
                *name,
                *name,
                ImageData::Bytes(pseudo_random(10_000, 40 + i as u64)),
            );
            image.chunk_size = 4096;
            image
        })
        .collect();
    let unsigned = veriflash_core::UnsignedPackage::prepare(PackageSpec {
        product: "acme-hotspot-x1".into(),
        chipset: "mdm9607".into(),
        hardware_revisions: vec![],
        software_version: format!("v{security_version}"),
        security_version,
        images,
    })
    .unwrap()
    .with_trust_rotation(next.to_rotation().unwrap())
    .unwrap();
    let block = SignatureBlock {
        entries: signers.iter().map(|k| unsigned.sign(k).unwrap()).collect(),
    };
    let mut bytes = Vec::new();
    unsigned.write_to(&block, &mut bytes).unwrap();
    bytes
}

fn file_device(dir: &Path) -> String {
    let path = dir.join("dev.img");
    let layout = file_layout(&[("boot", 64 << 10), ("system", 64 << 10)], &[]);
    drop(FileDevice::create(&path, &layout).unwrap());
    format!("file:{}", path.display())
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PackageSource {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    PackageSource::File(path)
}

type Seen = Arc<Mutex<Vec<(usize, Event)>>>;

fn updater(source: PackageSource, trust: AnchorSet) -> (UpdaterBuilder, Seen) {
    let seen: Seen = Arc::default();
    let sink = seen.clone();
    let builder = Updater::builder(source, Trust::new(trust).with_time(TrustedTime::None))
        .events(move |device, event| sink.lock().unwrap().push((device, event.clone())));
    (builder, seen)
}

#[test]
fn installs_from_a_file_and_from_byte_ranges_with_one_finished_event() {
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::generate_p256().unwrap();
    let target = file_device(dir.path());
    let source = write(dir.path(), "v5.vfp", &package(&[&key], 5, 1));
    let (builder, seen) = updater(source, anchors(&[&key], 0));
    let report = builder.build().unwrap().install(&target).unwrap();
    assert_eq!(report.report.security_version, 5);
    assert!(report.report.images.iter().all(|i| i.sha256_checked));
    assert_eq!(report.reconnects, 0);
    let finished: Vec<_> = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, e)| matches!(e, Event::Finished(_)))
        .cloned()
        .collect();
    assert_eq!(finished, [(0, Event::Finished(None))]);

    // The OTA path: byte ranges of the package (here from a file), each chunk verified once,
    // as it arrives, straight into the install.
    let v6 = dir.path().join("v6.vfp");
    std::fs::write(&v6, package(&[&key], 6, 7)).unwrap();
    let remote = PackageSource::Remote(
        Box::new(FileSource::open(&v6).unwrap()),
        veriflash_core::ota::OtaOptions::new(),
    );
    let (builder, _) = updater(remote, anchors(&[&key], 0));
    let report = builder.build().unwrap().install(&target).unwrap();
    let download = report.download.expect("a download's traffic");
    assert_eq!(
        download.bytes_fetched, 70_000,
        "every payload byte fetched once"
    );
    assert_eq!(report.report.security_version, 6);
    let path = target.strip_prefix("file:").unwrap();
    let mut device = FileDevice::open(Path::new(path)).unwrap();
    assert_eq!(device.current_status().info.security_floor, 6);
    device.boot_check().unwrap();
}

#[test]
fn a_busy_device_is_refused_before_the_stream_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::generate_p256().unwrap();
    let target = file_device(dir.path());
    let holder = FileDevice::open(Path::new(target.strip_prefix("file:").unwrap())).unwrap();
    let read = Arc::new(Mutex::new(0usize));
    struct Counting(std::io::Cursor<Vec<u8>>, Arc<Mutex<usize>>);
    impl std::io::Read for Counting {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.0.read(buf)?;
            *self.1.lock().unwrap() += n;
            Ok(n)
        }
    }
    let stream = Counting(std::io::Cursor::new(package(&[&key], 5, 1)), read.clone());
    let (builder, _) = updater(PackageSource::Stream(Box::new(stream)), anchors(&[&key], 0));
    let err = builder.build().unwrap().install(&target).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Busy);
    assert_eq!(
        *read.lock().unwrap(),
        0,
        "not a byte of the package was read"
    );
    drop(holder);
}

#[test]
fn a_device_that_adopted_a_rotation_refuses_the_retired_key_from_any_station() {
    let dir = tempfile::tempdir().unwrap();
    let old = SigningKey::generate_p256().unwrap();
    let new = SigningKey::generate_p256().unwrap();
    let target = file_device(dir.path());
    let station_trust = anchors(&[&old], 0);
    let next = anchors(&[&new], 1);

    // Station A installs a package that rotates to {new}; the device adopts it at commit.
    let source = write(
        dir.path(),
        "rotate.vfp",
        &rotating_package(&[&old, &new], &next, 2),
    );
    let (builder, _) = updater(source, station_trust.clone());
    builder.build().unwrap().install(&target).unwrap();
    let mut device = FileDevice::open(Path::new(target.strip_prefix("file:").unwrap())).unwrap();
    let held = device
        .trust_anchors()
        .unwrap()
        .expect("the device holds the new set");
    assert_eq!(AnchorSet::from_der(&held).unwrap(), next);
    drop(device);

    // Station B was never told of the rotation: it still trusts {old}. A package signed only
    // by the retired key verifies against its configuration, and the device refuses it.
    let source = write(dir.path(), "retired.vfp", &package(&[&old], 3, 9));
    let (builder, _) = updater(source, station_trust.clone());
    let err = builder.build().unwrap().install(&target).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::UnknownSigner, "{err}");
    let device = FileDevice::open(Path::new(target.strip_prefix("file:").unwrap())).unwrap();
    assert_eq!(device.current_status().info.security_floor, 2);
    drop(device);

    // Signed by the new key (and the old, for stations still on the old set), it installs.
    let source = write(dir.path(), "both.vfp", &package(&[&old, &new], 3, 11));
    let (builder, _) = updater(source, station_trust);
    builder.build().unwrap().install(&target).unwrap();
}

/// A device that keeps no state of its own (as a modem in download mode): what it holds lives
/// in memory shared by every session, so it survives a "reconnect"; it may drop off after a
/// number of writes, and then does not answer for a number of opens.
#[derive(Debug, Default)]
struct Ram {
    partitions: BTreeMap<String, Vec<u8>>,
    writes: u64,
    drop_after_writes: Option<u64>,
    /// Drops off at this write of every session, again and again.
    always_drop_at: Option<u64>,
    offline_opens: u32,
    opens: u32,
}

#[derive(Clone, Debug)]
struct RamPlugin(Arc<Mutex<Ram>>);

impl Plugin for RamPlugin {
    fn name(&self) -> &'static str {
        "ram"
    }

    fn open(&self, _target: &str) -> Result<Box<dyn FlashSession>, PluginError> {
        let mut ram = self.0.lock().unwrap();
        ram.opens += 1;
        if ram.offline_opens > 0 {
            ram.offline_opens -= 1;
            return Err(PluginError::Timeout("not on the bus yet".into()));
        }
        Ok(Box::new(RamSession {
            ram: self.0.clone(),
            plan: None,
            writes: 0,
        }))
    }

    fn reconnects(&self, _target: &str) -> bool {
        true
    }
}

struct RamSession {
    ram: Arc<Mutex<Ram>>,
    plan: Option<InstallPlan>,
    writes: u64,
}

impl FlashSession for RamSession {
    fn device_info(&mut self) -> Result<DeviceInfo, PluginError> {
        Ok(DeviceInfo {
            id: Some("ram-0001".into()),
            product: "acme-hotspot-x1".into(),
            chipset: "mdm9607".into(),
            hardware_revision: "r2".into(),
            geometry: StorageGeometry {
                erase_block: 4096,
                write_unit: 4096,
            },
            partitions: ["boot", "system"]
                .iter()
                .map(|name| PartitionInfo {
                    name: (*name).into(),
                    size: 1 << 20,
                    slotted: false,
                    protected: false,
                })
                .collect(),
            active_slot: None,
            // Nothing kept on the device: the host's record is the floor.
            security_floor: 0,
            installed_version: None,
            free_space: None,
        })
    }

    fn begin(&mut self, plan: &InstallPlan) -> Result<(), PluginError> {
        self.plan = Some(plan.clone());
        Ok(())
    }

    fn write(&mut self, chunk: Chunk<'_>) -> Result<(), PluginError> {
        let mut ram = self.ram.lock().unwrap();
        ram.writes += 1;
        self.writes += 1;
        if ram.always_drop_at == Some(self.writes) {
            ram.offline_opens = 1;
            return Err(PluginError::Transport(
                std::io::ErrorKind::BrokenPipe.into(),
            ));
        }
        if ram.drop_after_writes == Some(ram.writes) {
            ram.drop_after_writes = None;
            ram.offline_opens = 2;
            return Err(PluginError::Transport(
                std::io::ErrorKind::BrokenPipe.into(),
            ));
        }
        let part = ram
            .partitions
            .entry(chunk.partition().to_owned())
            .or_default();
        let end = usize::try_from(chunk.offset()).unwrap() + chunk.bytes().len();
        if part.len() < end {
            part.resize(end, 0xFF);
        }
        part[end - chunk.bytes().len()..end].copy_from_slice(chunk.bytes());
        Ok(())
    }

    fn read_back(&mut self, partition: &str, size: u64) -> Result<Digest, PluginError> {
        let ram = self.ram.lock().unwrap();
        let bytes = ram.partitions.get(partition).cloned().unwrap_or_default();
        Ok(veriflash_core::hash::sha256(
            bytes
                .get(..usize::try_from(size).unwrap())
                .unwrap_or(&bytes),
        ))
    }

    fn commit(&mut self) -> Result<(), PluginError> {
        Ok(())
    }

    fn status(&mut self) -> Result<DeviceStatus, PluginError> {
        Ok(DeviceStatus {
            info: self.device_info()?,
            last_result: None,
            interrupted_install: None,
        })
    }

    fn abort(&mut self, _result: &LastResult) -> Result<(), PluginError> {
        Ok(())
    }
}

fn ram_registry(ram: &Arc<Mutex<Ram>>) -> Registry {
    let mut registry = Registry::new();
    registry.register(Box::new(RamPlugin(ram.clone())));
    registry
}

#[test]
fn a_device_that_drops_off_is_waited_for_and_the_install_runs_again() {
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::generate_p256().unwrap();
    let ram = Arc::new(Mutex::new(Ram {
        drop_after_writes: Some(8),
        ..Ram::default()
    }));
    let source = write(dir.path(), "v5.vfp", &package(&[&key], 5, 1));
    let (builder, seen) = updater(source, anchors(&[&key], 0));
    let report = builder
        .registry(ram_registry(&ram))
        .reconnect(Reconnect {
            wait: Duration::from_secs(10),
            attempts: 3,
            poll: Duration::from_millis(1),
        })
        .build()
        .unwrap()
        .install("ram:0")
        .unwrap();
    assert_eq!(report.reconnects, 1);
    let events: Vec<Event> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|(_, e)| e.clone())
        .collect();
    let reconnecting = events
        .iter()
        .position(|e| {
            matches!(
                e,
                Event::Reconnecting {
                    attempt: 1,
                    code: 51,
                    ..
                }
            )
        })
        .expect("a reconnecting event with the transport error's code");
    let reconnected = events
        .iter()
        .position(|e| matches!(e, Event::Reconnected { attempt: 1 }))
        .unwrap();
    assert!(reconnecting < reconnected);
    // The run after the reconnect verified the package again, from the start.
    let signatures = events
        .iter()
        .filter(|e| matches!(e, Event::PhaseFinished(veriflash_core::Phase::Signature)))
        .count();
    assert_eq!(signatures, 2);
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, Event::Finished(_)))
            .count(),
        1,
        "one verdict, at the end"
    );
    assert_eq!(
        ram.lock().unwrap().opens,
        4,
        "open, two unanswered, the one that answered"
    );

    // Without reconnects the same cut ends the install with the transport error.
    let ram = Arc::new(Mutex::new(Ram {
        drop_after_writes: Some(8),
        ..Ram::default()
    }));
    let source = write(dir.path(), "v5b.vfp", &package(&[&key], 5, 1));
    let (builder, _) = updater(source, anchors(&[&key], 0));
    let err = builder
        .registry(ram_registry(&ram))
        .reconnect(Reconnect::never())
        .build()
        .unwrap()
        .install("ram:0")
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TransportError);
}

#[test]
fn a_device_that_keeps_dropping_off_at_the_same_place_is_given_up_on() {
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::generate_p256().unwrap();
    let ram = Arc::new(Mutex::new(Ram {
        always_drop_at: Some(3),
        ..Ram::default()
    }));
    let source = write(dir.path(), "v5.vfp", &package(&[&key], 5, 1));
    let (builder, seen) = updater(source, anchors(&[&key], 0));
    let err = builder
        .registry(ram_registry(&ram))
        .reconnect(Reconnect {
            wait: Duration::from_secs(10),
            attempts: 2,
            poll: Duration::from_millis(1),
        })
        .build()
        .unwrap()
        .install("ram:0")
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TransportError);
    assert!(err.message().contains("without progress"), "{err}");
    let reconnects = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, e)| matches!(e, Event::Reconnecting { .. }))
        .count();
    assert_eq!(
        reconnects, 2,
        "the first wait, then the one stalled wait allowed"
    );
}

#[test]
fn the_host_keeps_the_floor_of_a_device_that_cannot() {
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::generate_p256().unwrap();
    let ram = Arc::new(Mutex::new(Ram::default()));
    let env = PluginEnvironment {
        state_dir: Some(dir.path().join("state")),
        config_dir: None,
    };
    let install = |name: &str, security_version: u64| {
        let source = write(dir.path(), name, &package(&[&key], security_version, 3));
        let (builder, _) = updater(source, anchors(&[&key], 0));
        builder
            .registry(ram_registry(&ram))
            .environment(env.clone())
            .build()
            .unwrap()
            .install("ram:0")
    };
    install("v10.vfp", 10).unwrap();
    assert!(dir.path().join("state/devices/ram-0001.floor").exists());
    // The device reports a floor of 0; the host remembers 10.
    let err = install("v4.vfp", 4).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DowngradeRefused, "{err}");
    install("v10b.vfp", 10).unwrap();
}

#[test]
fn verify_needs_no_device_and_a_stream_is_read_once() {
    let key = SigningKey::generate_p256().unwrap();
    let bytes = package(&[&key], 5, 1);
    let (builder, _) = updater(
        PackageSource::Stream(Box::new(std::io::Cursor::new(bytes))),
        anchors(&[&key], 0),
    );
    let mut updater = builder.check_whole_image(true).build().unwrap();
    let report = updater.verify().unwrap();
    assert!(report.images.iter().all(|i| i.sha256_checked));
    let err = updater.verify().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
}

#[test]
fn many_devices_at_once_share_one_verification() {
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::generate_p256().unwrap();
    let targets: Vec<String> = (0..3)
        .map(|i| {
            let sub = dir.path().join(format!("d{i}"));
            std::fs::create_dir(&sub).unwrap();
            file_device(&sub)
        })
        .collect();
    let source = write(dir.path(), "v5.vfp", &package(&[&key], 5, 1));
    let (builder, seen) = updater(source, anchors(&[&key], 0));
    let report = builder.build().unwrap().install_all(&targets).unwrap();
    assert!(report.all_succeeded(), "{report:?}");
    let seen = seen.lock().unwrap();
    for device in 0..3 {
        assert_eq!(
            seen.iter()
                .filter(|(d, e)| *d == device && matches!(e, Event::Finished(None)))
                .count(),
            1
        );
    }
}
