//! The factory line (`veriflash_core::factory`) on emulated MDM9607s: one package read and
//! verified once, flashed to several devices at once, each with its own events and result.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation
)]

use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use veriflash_core::sig::{PinnedKeys, SigningKey, Verifier};
use veriflash_core::{ErrorKind, Event, FactoryLine, InstallPolicy, Phase};
use veriflash_mdm9x07::emulator::{DeviceFaults, Emulator, EmulatorConfig, test_programmer};
use veriflash_mdm9x07::transport::{Framing, MemoryTransport};
use veriflash_mdm9x07::{Mdm9x07Session, SessionConfig};
use veriflash_plugin::FlashSession;
use veriflash_test_support::{modem_package, pseudo_random, ubi_like};

/// The package of `images`, signed by `key`.
fn package(key: &SigningKey, images: &[(&'static str, Vec<u8>)]) -> Vec<u8> {
    modem_package(key, images).unwrap()
}

fn images() -> Vec<(&'static str, Vec<u8>)> {
    let system = ubi_like(400_077, 9);
    vec![
        ("programmer", test_programmer(&pseudo_random(20_000, 1))),
        ("sbl", pseudo_random(100_017, 2)),
        ("tz", pseudo_random(50_005, 3)),
        ("boot", pseudo_random(300_123, 4)),
        ("system", system),
    ]
}

/// Counts every byte read from the package.
struct Counting<'a> {
    inner: &'a [u8],
    read: Arc<AtomicU64>,
}

impl Read for Counting<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.fetch_add(n as u64, Ordering::SeqCst);
        Ok(n)
    }
}

fn emulator(config: EmulatorConfig) -> Arc<Mutex<Emulator>> {
    Arc::new(Mutex::new(Emulator::new(config).unwrap()))
}

/// Every image but the programmer is on the device's NAND, byte for byte.
fn assert_flashed(device: &Arc<Mutex<Emulator>>, images: &[(&'static str, Vec<u8>)]) {
    let d = device.lock().unwrap();
    for (part, bytes) in images.iter().filter(|(p, _)| *p != "programmer") {
        let raw = match *part {
            "sbl" | "tz" => format!("0:{}", part.to_ascii_uppercase()),
            other => format!("0:{other}"),
        };
        assert_eq!(
            &d.partition_bytes(&raw, bytes.len())[..],
            &bytes[..],
            "partition {part}"
        );
    }
}

struct Line {
    devices: Vec<Arc<Mutex<Emulator>>>,
    events: Arc<Mutex<Vec<(usize, Event)>>>,
}

impl Line {
    fn new(configs: Vec<EmulatorConfig>) -> Self {
        Self {
            devices: configs.into_iter().map(emulator).collect(),
            events: Arc::default(),
        }
    }

    fn run(
        &self,
        pkg: &[u8],
        key: &SigningKey,
        read: &Arc<AtomicU64>,
    ) -> veriflash_core::FactoryReport {
        let mut trust = PinnedKeys::new();
        trust.add(key.verifying_key());
        let verifier = Verifier::new(&trust);
        let policy = InstallPolicy::default().with_threads(2);
        let open = |i: usize| -> Result<Box<dyn FlashSession>, veriflash_core::Error> {
            let link = MemoryTransport::new(self.devices[i].clone(), Framing::Packet);
            Ok(Box::new(Mdm9x07Session::new(
                link,
                SessionConfig::default(),
            )))
        };
        let events = |i: usize, e: &Event| self.events.lock().unwrap().push((i, e.clone()));
        FactoryLine::new(&verifier, &policy)
            .with_queue_depth(2)
            .run(
                Counting {
                    inner: pkg,
                    read: read.clone(),
                },
                self.devices.len(),
                &open,
                &events,
            )
            .unwrap()
    }

    fn events_of(&self, device: usize) -> Vec<Event> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|(i, _)| *i == device)
            .map(|(_, e)| e.clone())
            .collect()
    }
}

fn wrong_chip() -> EmulatorConfig {
    let mut config = EmulatorConfig::mdm9607();
    config.hw_id = 0x0070_50E1_1234_0001; // MSM8916 (bkerler/edl qualcomm_config.py msmids)
    config.serial = 0xBAD0_0001;
    config
}

fn mdm9607(serial: u32) -> EmulatorConfig {
    let mut config = EmulatorConfig::mdm9607();
    config.serial = serial;
    config
}

#[test]
fn three_mdm9607s_and_a_wrong_chip_are_flashed_at_once_from_one_read() {
    let key = SigningKey::generate_p256().unwrap();
    let images = images();
    let pkg = package(&key, &images);
    let line = Line::new(vec![mdm9607(1), mdm9607(2), wrong_chip(), mdm9607(3)]);
    let read = Arc::new(AtomicU64::new(0));
    let report = line.run(&pkg, &key, &read);

    // The package was read exactly once, not once per device.
    assert_eq!(read.load(Ordering::SeqCst), pkg.len() as u64);

    for i in [0, 1, 3] {
        let r = report.results[i].as_ref().unwrap();
        assert_eq!(r.images.len(), 5);
        assert_flashed(&line.devices[i], &images);
        let d = line.devices[i].lock().unwrap();
        assert_eq!(d.programmer_uploads(), 1);
        assert_eq!(d.resets(), 1, "device {i} committed with a power reset");
        drop(d);
        let events = line.events_of(i);
        assert_eq!(events.first(), Some(&Event::PhaseStarted(Phase::Signature)));
        assert!(events.contains(&Event::PhaseFinished(Phase::ReadBack)));
        assert!(events.contains(&Event::PhaseFinished(Phase::Commit)));
        assert_eq!(events.last(), Some(&Event::Finished(None)));
        let last_progress = events
            .iter()
            .rev()
            .find_map(|e| match e {
                Event::Progress { done, total, .. } => Some((*done, *total)),
                _ => None,
            })
            .unwrap();
        assert_eq!(
            last_progress.0, last_progress.1,
            "device {i} got every byte"
        );
    }

    // The wrong chip: refused with its code before the programmer, nothing written.
    let err = report.results[2].as_ref().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::WrongChipset, "{err}");
    let bad = line.devices[2].lock().unwrap();
    assert_eq!(bad.programmer_uploads(), 0);
    assert_eq!(
        bad.nand().page_programs(),
        4,
        "only the factory SBL, MIBIB and EFS pages"
    );
    assert_eq!(bad.resets(), 0);
    drop(bad);
    let events = line.events_of(2);
    assert_eq!(events.last(), Some(&Event::Finished(Some(err.code()))));
    assert!(!events.iter().any(|e| matches!(e, Event::Progress { .. })));

    assert!(!report.all_succeeded());
    assert_eq!(report.exit_code(), err.code());
}

#[test]
fn a_device_that_naks_mid_flash_fails_alone() {
    let key = SigningKey::generate_p256().unwrap();
    let images = images();
    let pkg = package(&key, &images);
    let line = Line::new(vec![mdm9607(1), mdm9607(2)]);
    line.devices[1].lock().unwrap().set_faults(DeviceFaults {
        nak: Some(("program".into(), "Failed to program page".into())),
        ..DeviceFaults::default()
    });
    let read = Arc::new(AtomicU64::new(0));
    let report = line.run(&pkg, &key, &read);
    assert!(report.results[0].is_ok(), "{:?}", report.results[0]);
    assert_flashed(&line.devices[0], &images);
    let err = report.results[1].as_ref().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DeviceError, "{err}");
    assert!(err.to_string().contains("Failed to program page"), "{err}");
    assert_eq!(
        line.devices[1].lock().unwrap().resets(),
        0,
        "never committed"
    );
    assert_eq!(report.exit_code(), err.code());
    assert_eq!(read.load(Ordering::SeqCst), pkg.len() as u64);
}

#[test]
fn a_corrupted_payload_fails_every_device_before_commit() {
    let key = SigningKey::generate_p256().unwrap();
    let images = images();
    let mut pkg = package(&key, &images);
    let at = pkg.len() - 1000; // inside the system image
    pkg[at] ^= 0x01;
    let line = Line::new(vec![mdm9607(1), mdm9607(2)]);
    let read = Arc::new(AtomicU64::new(0));
    let report = line.run(&pkg, &key, &read);
    for (i, r) in report.results.iter().enumerate() {
        let err = r.as_ref().unwrap_err();
        assert_eq!(
            err.kind(),
            ErrorKind::IntegrityMismatch,
            "device {i}: {err}"
        );
        assert_eq!(line.devices[i].lock().unwrap().resets(), 0, "device {i}");
    }
    assert_eq!(report.exit_code(), ErrorKind::IntegrityMismatch.code());
}

#[test]
fn a_package_signed_by_someone_else_is_refused_for_every_device_unread() {
    let key = SigningKey::generate_p256().unwrap();
    let other = SigningKey::generate_p256().unwrap();
    let pkg = package(&other, &images());
    let line = Line::new(vec![mdm9607(1), mdm9607(2)]);
    let read = Arc::new(AtomicU64::new(0));
    let report = line.run(&pkg, &key, &read);
    for (i, r) in report.results.iter().enumerate() {
        assert_eq!(r.as_ref().unwrap_err().kind(), ErrorKind::UnknownSigner);
        assert_eq!(line.devices[i].lock().unwrap().programmer_uploads(), 0);
    }
    assert!(
        read.load(Ordering::SeqCst) < 64 * 1024,
        "no payload was read: {}",
        read.load(Ordering::SeqCst)
    );
}
