//! Two installs racing on one device (the defect the adversarial run found: interleaved runs left
//! one version's bytes under another's record, and lowered the anti-rollback floor).
//!
//! The first install is paused before each of its storage operations in turn — and once right
//! after it opened the device — while a second install of a newer package tries the same device.
//! Whatever the moment, the second is refused with `busy` before it reads or writes anything,
//! the first completes, and the device boots exactly what its record says.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::path::Path;
use std::sync::mpsc;

use support::{Image, build, pseudo_random};
use veriflash_core::plugin::file_device::FileDevice;
use veriflash_core::plugin::{Registry, Slot};
use veriflash_core::sig::{PinnedKeys, SigningKey, Verifier};
use veriflash_core::{CancelToken, ErrorKind, InstallPolicy, install};
use veriflash_test_support::file_layout;

const BOOT: usize = 20_000;
const SYSTEM: usize = 50_000;

fn package(key: &SigningKey, security_version: u64, seed: u64) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let boot = pseudo_random(BOOT, seed);
    let system = pseudo_random(SYSTEM, seed + 1);
    let built = build(
        &[key],
        vec![
            Image {
                name: "boot",
                bytes: boot.clone(),
                chunk_size: 4096,
            },
            Image {
                name: "system",
                bytes: system.clone(),
                chunk_size: 4096,
            },
        ],
        security_version,
    );
    (built.bytes, boot, system)
}

fn new_device(path: &Path) {
    let layout = file_layout(&[("boot", 64 << 10), ("system", 64 << 10)], &[]);
    drop(FileDevice::create(path, &layout).unwrap());
}

fn install_bytes(
    device: &mut dyn veriflash_core::plugin::FlashSession,
    bytes: &[u8],
    trust: &PinnedKeys,
) -> Result<(), veriflash_core::Error> {
    install(
        bytes,
        &Verifier::new(trust),
        &InstallPolicy::default().with_threads(2),
        device,
        &CancelToken::new(),
        &mut |_| {},
    )
    .map(drop)
}

/// Where the first install waits for the second to try: right after opening, or before its
/// storage operation `n`.
#[derive(Clone, Copy, Debug)]
enum Pause {
    AfterOpen,
    BeforeOperation(u64),
}

/// Runs install `first` paused at `pause`, tries `second` on the same device from this thread
/// while it waits, then lets the first finish. Returns the second's error code (`None`: it
/// installed).
fn race(path: &Path, pause: Pause, first: &[u8], second: &[u8], trust: &PinnedKeys) -> Option<u8> {
    let (paused_tx, paused_rx) = mpsc::channel::<()>();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    std::thread::scope(|scope| {
        let runner = scope.spawn(move || {
            let mut device = FileDevice::open(path).unwrap();
            let wait = move || {
                paused_tx.send(()).unwrap();
                go_rx.recv().unwrap();
            };
            match pause {
                Pause::AfterOpen => wait(),
                Pause::BeforeOperation(n) => {
                    let mut wait = Some(wait);
                    device.on_storage_operation(move |op| {
                        if op == n
                            && let Some(wait) = wait.take()
                        {
                            wait();
                        }
                    });
                }
            }
            install_bytes(&mut device, first, trust)
        });
        paused_rx.recv().unwrap();
        // A second run, as the CLI and the C API open targets.
        let second = Registry::with_builtin()
            .open(&format!("file:{}", path.display()))
            .map_err(veriflash_core::flash::device_error)
            .and_then(|mut session| install_bytes(&mut *session, second, trust));
        go_tx.send(()).unwrap();
        runner.join().unwrap().expect("the first install completes");
        second.err().map(|e| e.code())
    })
}

#[test]
fn a_second_install_is_refused_at_every_moment_of_the_first() {
    let key = SigningKey::generate_p256().unwrap();
    let mut trust = PinnedKeys::new();
    trust.add(key.verifying_key());
    let (v10, boot, system) = package(&key, 10, 1);
    let (v20, ..) = package(&key, 20, 7);

    let dir = tempfile::tempdir().unwrap();
    let probe = dir.path().join("probe.img");
    new_device(&probe);
    let mut device = FileDevice::open(&probe).unwrap();
    install_bytes(&mut device, &v10, &trust).unwrap();
    let operations = device.operations();
    drop(device);
    assert!(operations > 10, "an install is many storage operations");

    let pauses =
        std::iter::once(Pause::AfterOpen).chain((1..=operations).map(Pause::BeforeOperation));
    for pause in pauses {
        let path = dir.path().join(format!("{pause:?}.img"));
        new_device(&path);
        let code = race(&path, pause, &v10, &v20, &trust);
        assert_eq!(
            code,
            Some(ErrorKind::Busy.code()),
            "{pause:?}: the second install must be refused as busy"
        );
        let mut device = FileDevice::open(&path).unwrap();
        let status = device.current_status();
        assert_eq!(
            status.info.security_floor, 10,
            "{pause:?}: only the first installed"
        );
        assert_eq!(status.info.active_slot, Some(Slot::B), "{pause:?}");
        assert_eq!(status.last_result.map(|r| r.code), Some(0), "{pause:?}");
        device
            .boot_check()
            .expect("the active slot matches its record");
        assert_eq!(
            device.read_partition("boot", Slot::B, BOOT as u64).unwrap(),
            boot,
            "{pause:?}"
        );
        assert_eq!(
            device
                .read_partition("system", Slot::B, SYSTEM as u64)
                .unwrap(),
            system,
            "{pause:?}"
        );
        std::fs::remove_file(&path).unwrap();
    }
}

#[test]
fn a_delayed_older_install_cannot_lower_the_floor() {
    // The adversarial run's case (b): a version-10 run delayed at its first write while a
    // version-20 package installs. The newer one must wait its turn (busy), so the floor only
    // ever rises: afterwards version 20 installs and version 10 is refused as a downgrade.
    let key = SigningKey::generate_p256().unwrap();
    let mut trust = PinnedKeys::new();
    trust.add(key.verifying_key());
    let (v10, ..) = package(&key, 10, 1);
    let (v20, ..) = package(&key, 20, 7);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dev.img");
    new_device(&path);

    let code = race(&path, Pause::BeforeOperation(2), &v10, &v20, &trust);
    assert_eq!(code, Some(ErrorKind::Busy.code()));
    let mut device = FileDevice::open(&path).unwrap();
    install_bytes(&mut device, &v20, &trust).unwrap();
    let err = install_bytes(&mut device, &v10, &trust).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DowngradeRefused);
    assert_eq!(device.current_status().info.security_floor, 20);
    device.boot_check().unwrap();
}
