//! Delta packages on a single-slot modem: the emulated MDM9607 runs a package's images, a delta
//! made against them installs through `veriflash_core::install` — its sources read back through
//! Firehose into host copies before the first erase — and leaves the NAND exactly as the full
//! package does.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::sync::{Arc, Mutex};

use veriflash_core::sig::{PinnedKeys, SigningKey, Verifier};
use veriflash_core::{
    CancelToken, DeltaBase, Error, ErrorKind, Event, InstallPolicy, PackOptions, UnsignedPackage,
    install,
};
use veriflash_mdm9x07::emulator::{DeviceFaults, Emulator, EmulatorConfig, test_programmer};
use veriflash_mdm9x07::transport::{Framing, MemoryTransport};
use veriflash_mdm9x07::{Mdm9x07Session, SessionConfig};
use veriflash_test_support::{modem_spec, pseudo_random, sign_and_write, ubi_like};

type Images = Vec<(&'static str, Vec<u8>)>;

/// What the modem runs first: the programmer, then sbl, tz, boot and a UBI-like system.
fn v1() -> Images {
    vec![
        ("programmer", test_programmer(&pseudo_random(20_000, 1))),
        ("sbl", pseudo_random(300_017, 2)),
        ("tz", pseudo_random(100_005, 3)),
        ("boot", pseudo_random(1_000_123, 4)),
        ("system", ubi_like(2_000_077, 99)),
    ]
}

/// The update: the same programmer and sbl, a new tz, boot patched in place and grown, and 40 KB
/// inserted into system (everything after it moves).
fn v2() -> Images {
    let mut images = v1();
    images[2].1 = pseudo_random(100_005, 33);
    let boot = &mut images[3].1;
    boot[500_000..500_100].copy_from_slice(&pseudo_random(100, 44));
    boot.extend_from_slice(&pseudo_random(5_000, 45));
    let system = &mut images[4].1;
    let tail = system.split_off(700_000);
    system.extend_from_slice(&pseudo_random(40_000, 46));
    system.extend_from_slice(&tail);
    images
}

fn full(key: &SigningKey, images: &[(&str, Vec<u8>)], version: &str) -> Vec<u8> {
    sign_and_write(
        &UnsignedPackage::prepare(modem_spec(images, version)).unwrap(),
        &[key],
    )
    .unwrap()
}

fn trust(key: &SigningKey) -> PinnedKeys {
    let mut t = PinnedKeys::new();
    t.add(key.verifying_key());
    t
}

/// The delta from `old`'s images to `new`'s, packed against the whole package of `old`: with
/// `nand_only` as a modem needs it (`carrying_whole("programmer")`: the modem never stores
/// its programmer, so the new one is carried whole), else with the programmer as a source too.
fn delta(key: &SigningKey, old: &Images, new: &Images, nand_only: bool, dir: &Path) -> Vec<u8> {
    let path = dir.join("base.vfp");
    std::fs::write(&path, full(key, old, "2.4.0")).unwrap();
    let anchors = trust(key);
    let mut base = DeltaBase::from_package(&path, &Verifier::new(&anchors)).unwrap();
    if nand_only {
        base = base.carrying_whole(["programmer".to_owned()]);
    }
    let unsigned =
        UnsignedPackage::prepare_delta(modem_spec(new, "2.5.0"), &PackOptions::default(), &base)
            .unwrap();
    sign_and_write(&unsigned, &[key]).unwrap()
}

/// A 200-block MDM9607 (its system partition, to the end of the NAND, 70 blocks or 8.75 MiB),
/// so that reading partitions back whole stays quick; bad blocks in boot and in system.
fn modem() -> Arc<Mutex<Emulator>> {
    let mut config = EmulatorConfig::mdm9607();
    config.blocks = 200;
    Arc::new(Mutex::new(Emulator::new(config).unwrap()))
}

fn flash(
    device: &Arc<Mutex<Emulator>>,
    package: &[u8],
    key: &SigningKey,
    config: SessionConfig,
) -> Result<Vec<Event>, Error> {
    let transport = MemoryTransport::new(device.clone(), Framing::Packet);
    let mut session = Mdm9x07Session::new(transport, config);
    let anchors = trust(key);
    let mut events = Vec::new();
    let result = install(
        package,
        &Verifier::new(&anchors),
        &InstallPolicy::default(),
        &mut session,
        &CancelToken::new(),
        &mut |e| events.push(e.clone()),
    );
    // A committed flash resets the modem; an interrupted one leaves it unpowered. Either way
    // the next run finds it in download mode.
    device.lock().unwrap().set_faults(DeviceFaults::default());
    device.lock().unwrap().power_on();
    result.map(|_| events)
}

/// A modem that runs `images`, installed from their full package.
fn running(key: &SigningKey, images: &Images) -> Arc<Mutex<Emulator>> {
    let device = modem();
    flash(
        &device,
        &full(key, images, "2.4.0"),
        key,
        SessionConfig::default(),
    )
    .unwrap();
    device
}

/// Every page of the NAND.
fn nand(device: &Arc<Mutex<Emulator>>) -> Vec<u8> {
    let d = device.lock().unwrap();
    (0..d.nand().pages())
        .flat_map(|p| d.nand().page(p).to_vec())
        .collect()
}

/// The NAND of a modem running `old` after a full install of `new`: what every delta from
/// `old` to `new` must leave.
fn nand_after_full_install(key: &SigningKey, old: &Images, new: &Images) -> Vec<u8> {
    let reference = running(key, old);
    flash(
        &reference,
        &full(key, new, "2.5.0"),
        key,
        SessionConfig::default(),
    )
    .unwrap();
    nand(&reference)
}

fn page_programs(device: &Arc<Mutex<Emulator>>) -> u64 {
    device.lock().unwrap().nand().page_programs()
}

/// Bytes written, by the install's progress events.
fn bytes_done(events: &[Event]) -> u64 {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Progress { done, .. } => Some(*done),
            _ => None,
        })
        .max()
        .unwrap_or(0)
}

#[test]
fn a_delta_installs_on_a_modem_running_its_source_and_leaves_what_the_full_package_does() {
    let key = SigningKey::generate_p256().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = (v1(), v2());
    let delta = delta(&key, &old, &new, true, dir.path());
    let full_v2 = full(&key, &new, "2.5.0");
    assert!(
        delta.len() < full_v2.len() / 5,
        "the delta carries little: {} of {} bytes",
        delta.len(),
        full_v2.len()
    );

    let by_delta = running(&key, &old);
    let events = flash(&by_delta, &delta, &key, SessionConfig::default()).unwrap();
    assert!(
        nand(&by_delta) == nand_after_full_install(&key, &old, &new),
        "the same NAND, page for page"
    );
    let total: u64 = new.iter().map(|(_, b)| b.len() as u64).sum();
    assert_eq!(
        bytes_done(&events),
        total,
        "every byte verified and written"
    );
    assert_eq!(
        events.last(),
        Some(&Event::Finished(None)),
        "committed: {events:?}"
    );
}

#[test]
fn a_delta_on_a_modem_running_something_else_is_refused_with_nothing_written() {
    let key = SigningKey::generate_p256().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = (v1(), v2());
    let delta = delta(&key, &old, &new, true, dir.path());
    // One modem runs the new version already, one was never flashed.
    for device in [running(&key, &new), modem()] {
        let (nand_before, programs) = (nand(&device), page_programs(&device));
        let erases = device.lock().unwrap().nand().block_erases();
        let err = flash(&device, &delta, &key, SessionConfig::default()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::SourceMismatch, "{err}");
        assert_eq!(err.code(), 34);
        assert!(err.to_string().contains("this delta applies to"), "{err}");
        assert_eq!(page_programs(&device), programs, "nothing programmed");
        assert_eq!(
            device.lock().unwrap().nand().block_erases(),
            erases,
            "nothing erased"
        );
        assert!(nand(&device) == nand_before);
    }
}

#[test]
fn a_delta_that_copies_the_programmer_is_refused_before_anything_is_uploaded() {
    let key = SigningKey::generate_p256().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = (v1(), v2());
    // Packed against the whole old package: the unchanged programmer becomes copies of a
    // programmer the modem never stored.
    let delta = delta(&key, &old, &new, false, dir.path());
    let device = running(&key, &old);
    let (programs, uploads) = (
        page_programs(&device),
        device.lock().unwrap().programmer_uploads(),
    );
    let err = flash(&device, &delta, &key, SessionConfig::default()).unwrap_err();
    assert!(err.to_string().contains("never stored"), "{err}");
    assert!(err.remedy().contains("full package"), "{}", err.remedy());
    assert_eq!(page_programs(&device), programs);
    assert_eq!(device.lock().unwrap().programmer_uploads(), uploads);
}

/// A journal and a backup directory under `dir`, as the CLI sets them for a real modem.
fn kept(dir: &Path) -> SessionConfig {
    SessionConfig {
        journal_dir: Some(dir.join("state")),
        backup_dir: Some(dir.join("backups")),
        ..SessionConfig::default()
    }
}

/// Where the session keeps the sources of the emulated modem's delta install.
fn sources_dir(dir: &Path) -> std::path::PathBuf {
    dir.join("backups")
        .join(format!("mdm9x07-{:08x}", EmulatorConfig::mdm9607().serial))
        .join("installed")
}

/// Page programs of a delta install from `old` to `new` on a modem running `old`: where a power
/// cut can land.
fn programs_of_delta(key: &SigningKey, old: &Images, delta: &[u8]) -> u64 {
    let probe = running(key, old);
    let before = page_programs(&probe);
    flash(&probe, delta, key, SessionConfig::default()).unwrap();
    page_programs(&probe) - before
}

#[test]
fn a_delta_cut_off_by_a_power_loss_runs_again_from_the_copy_kept_in_the_backup_dir() {
    let key = SigningKey::generate_p256().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = (v1(), v2());
    let delta = delta(&key, &old, &new, true, dir.path());
    let expected = nand_after_full_install(&key, &old, &new);
    let per_install = programs_of_delta(&key, &old, &delta);

    // Cuts in sbl, in tz, early and late in boot, in system: each erased part of the source.
    for n in [1, 150, 300, 500, per_install - 1] {
        let work = tempfile::tempdir().unwrap();
        let config = kept(work.path());
        let device = running(&key, &old);
        device.lock().unwrap().set_faults(DeviceFaults {
            power_cut_at_page_program: Some(n),
            ..DeviceFaults::default()
        });
        let err = flash(&device, &delta, &key, config.clone()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Timeout, "cut at {n}: {err}");
        let remedy = err.remedy();
        assert!(
            remedy.contains("run the same delta package again")
                && remedy.contains(&sources_dir(work.path()).display().to_string()),
            "cut at {n}: {remedy}"
        );
        assert!(sources_dir(work.path()).join("boot.bin").is_file());
        flash(&device, &delta, &key, config)
            .unwrap_or_else(|e| panic!("re-run after a cut at page program {n}: {e}"));
        assert!(nand(&device) == expected, "cut at {n}: as the full package");
        assert!(
            !sources_dir(work.path()).exists(),
            "the copies are gone after the commit"
        );
    }
}

#[test]
fn a_damaged_kept_copy_is_refused_before_anything_is_written() {
    let key = SigningKey::generate_p256().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = (v1(), v2());
    let delta = delta(&key, &old, &new, true, dir.path());
    let config = kept(dir.path());
    let device = running(&key, &old);
    // Cut inside system: sbl, tz and boot already hold the new images.
    let per_install = programs_of_delta(&key, &old, &delta);
    device.lock().unwrap().set_faults(DeviceFaults {
        power_cut_at_page_program: Some(per_install - 10),
        ..DeviceFaults::default()
    });
    flash(&device, &delta, &key, config.clone()).unwrap_err();
    let copy = sources_dir(dir.path()).join("system.bin");
    let mut bytes = std::fs::read(&copy).unwrap();
    bytes[1_000_000] ^= 1;
    std::fs::write(&copy, bytes).unwrap();
    let programs = page_programs(&device);
    let err = flash(&device, &delta, &key, config.clone()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::SourceMismatch, "{err}");
    assert_eq!(page_programs(&device), programs, "nothing programmed");
    // The remedy names the kept copies, and the two ways on.
    let remedy = err.remedy();
    let kept_dir = sources_dir(dir.path()).display().to_string();
    assert!(
        remedy.contains(&kept_dir) && remedy.contains("full package") && remedy.contains("delete"),
        "{remedy}"
    );
    // The full package makes the modem whole, and ends the kept copies.
    flash(&device, &full(&key, &new, "2.5.0"), &key, config).unwrap();
    assert!(!sources_dir(dir.path()).exists());
}

#[test]
fn a_delta_cut_off_without_a_backup_dir_is_finished_with_the_full_package() {
    let key = SigningKey::generate_p256().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = (v1(), v2());
    let delta = delta(&key, &old, &new, true, dir.path());
    let device = running(&key, &old);
    device.lock().unwrap().set_faults(DeviceFaults {
        power_cut_at_page_program: Some(300),
        ..DeviceFaults::default()
    });
    let err = flash(&device, &delta, &key, SessionConfig::default()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert!(
        err.remedy().contains("install the full package"),
        "{}",
        err.remedy()
    );
    // Its source is partly erased now: the delta no longer applies, and writes nothing.
    let programs = page_programs(&device);
    let err = flash(&device, &delta, &key, SessionConfig::default()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::SourceMismatch, "{err}");
    assert_eq!(page_programs(&device), programs);
    flash(
        &device,
        &full(&key, &new, "2.5.0"),
        &key,
        SessionConfig::default(),
    )
    .unwrap();
    assert!(nand(&device) == nand_after_full_install(&key, &old, &new));
}

#[test]
fn the_session_answers_only_from_copies_made_before_the_install_began() {
    use veriflash_plugin::{FlashSession, InstallPlan, PlannedImage};
    let device = modem();
    let transport = MemoryTransport::new(device.clone(), Framing::Packet);
    let mut session = Mdm9x07Session::new(transport, SessionConfig::default());
    session.device_info().unwrap();
    // Before the programmer runs (when a download plans its reuse) the NAND cannot be read.
    assert_eq!(session.installed_len("boot").unwrap(), None);
    session
        .start_programmer(&test_programmer(&pseudo_random(3_000, 5)))
        .unwrap();
    let block = EmulatorConfig::mdm9607().block_size() as u64;
    let reads = |s: &mut dyn FlashSession, p| s.installed_len(p).unwrap();
    assert_eq!(
        reads(&mut session, "boot"),
        Some(40 * block),
        "the whole partition"
    );
    // system reaches the end of the 200-block NAND, with bad block 140 in it: read to the
    // programmer's last good block, its 69 good ones.
    assert_eq!(reads(&mut session, "system"), Some((70 - 1) * block));
    assert_eq!(
        reads(&mut session, "efs2"),
        None,
        "protected: never a source"
    );
    assert_eq!(reads(&mut session, "nosuch"), None);
    let descriptor = b"page_size=2048\npages_per_block=64\n";
    assert_eq!(
        reads(&mut session, "nand-geometry"),
        Some(descriptor.len() as u64)
    );
    let mut buf = [0u8; 9];
    session
        .read_installed("nand-geometry", 0, &mut buf)
        .unwrap();
    assert_eq!(&buf, b"page_size");

    session
        .begin(&InstallPlan {
            package_id: [7; 32],
            target_slot: None,
            images: vec![PlannedImage {
                partition: "tz".into(),
                size: 4096,
                digest: [0; 32],
            }],
            software_version: "2.5.0".into(),
            security_version: 7,
            trust_anchors: None,
        })
        .unwrap();
    // Once the install began, a partition not copied yet may hold what it wrote.
    assert_eq!(reads(&mut session, "tz"), None);
    assert!(session.read_installed("tz", 0, &mut buf).is_err());
    // What was copied before stays readable, past its end refused.
    assert_eq!(reads(&mut session, "boot"), Some(40 * block));
    session
        .read_installed("boot", 40 * block - 9, &mut buf)
        .unwrap();
    assert!(
        session
            .read_installed("boot", 40 * block - 8, &mut buf)
            .is_err()
    );
}

#[test]
fn a_power_cut_at_every_page_program_of_a_small_delta_is_recovered_by_running_it_again() {
    let key = SigningKey::generate_p256().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let old: Images = vec![
        ("programmer", test_programmer(&pseudo_random(3_000, 5))),
        ("sbl", pseudo_random(5_000, 6)),
        ("tz", pseudo_random(2_100, 7)),
        ("boot", pseudo_random(4_096, 8)),
        ("system", ubi_like(6_001, 99)),
    ];
    let mut new = old.clone();
    new[3].1[1_000..1_010].fill(0);
    new[4].1.splice(3_000..3_000, pseudo_random(500, 9));
    let delta = delta(&key, &old, &new, true, dir.path());
    let expected = nand_after_full_install(&key, &old, &new);
    let per_install = programs_of_delta(&key, &old, &delta);
    assert!(per_install >= 10, "{per_install}");
    for n in 1..=per_install {
        let work = tempfile::tempdir().unwrap();
        let device = running(&key, &old);
        device.lock().unwrap().set_faults(DeviceFaults {
            power_cut_at_page_program: Some(n),
            ..DeviceFaults::default()
        });
        let err = flash(&device, &delta, &key, kept(work.path())).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Timeout, "cut at {n}: {err}");
        flash(&device, &delta, &key, kept(work.path()))
            .unwrap_or_else(|e| panic!("re-run after a cut at page program {n}: {e}"));
        assert!(nand(&device) == expected, "cut at {n}: as the full package");
    }
}
