//! End to end: signed packages flashed into the emulated MDM9607 through
//! `veriflash_core::install`, over the in-memory transport, with faults.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};

use veriflash_core::format::SignatureBlock;
use veriflash_core::sig::{PinnedKeys, SigningKey, Verifier};
use veriflash_core::{
    CancelToken, ErrorKind, Event, ImageData, ImageSource, InstallPolicy, PackageSpec, Phase,
    UnsignedPackage, install,
};
use veriflash_mdm9x07::emulator::{DeviceFaults, Emulator, EmulatorConfig, test_programmer};
use veriflash_mdm9x07::transport::{Framing, LinkFaults, MemoryTransport};
use veriflash_mdm9x07::{Mdm9x07Session, SessionConfig};
use veriflash_test_support::{modem_package, pseudo_random, ubi_like};

/// A UBI-like system image (seed 99).
fn ubi_like_99(len: usize) -> Vec<u8> {
    ubi_like(len, 99)
}

/// The package of `images`, signed by `key`, with the images kept for read-back checks.
fn package(key: &SigningKey, images: Vec<(&'static str, Vec<u8>)>) -> Pkg {
    Pkg {
        bytes: modem_package(key, &images).unwrap(),
        images,
    }
}

struct Pkg {
    bytes: Vec<u8>,
    images: Vec<(&'static str, Vec<u8>)>,
}

fn full_images() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("programmer", test_programmer(&pseudo_random(20_000, 1))),
        ("sbl", pseudo_random(300_000 + 17, 2)),
        ("tz", pseudo_random(100_000 + 5, 3)),
        ("boot", pseudo_random(1_000_000 + 123, 4)),
        ("system", ubi_like_99(2_000_000 + 77)),
    ]
}

fn small_images() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("programmer", test_programmer(&pseudo_random(3_000, 5))),
        ("sbl", pseudo_random(5_000, 6)),
        ("tz", pseudo_random(2_100, 7)),
        ("boot", pseudo_random(4_096, 8)),
        ("system", ubi_like_99(6_001)),
    ]
}

fn trust(key: &SigningKey) -> PinnedKeys {
    let mut t = PinnedKeys::new();
    t.add(key.verifying_key());
    t
}

fn device(config: EmulatorConfig) -> Arc<Mutex<Emulator>> {
    Arc::new(Mutex::new(Emulator::new(config).unwrap()))
}

fn flash(
    device: &Arc<Mutex<Emulator>>,
    framing: Framing,
    link: LinkFaults,
    pkg: &Pkg,
    key: &SigningKey,
) -> Result<Vec<Event>, veriflash_core::Error> {
    flash_with(device, framing, link, pkg, key, SessionConfig::default())
}

fn flash_with(
    device: &Arc<Mutex<Emulator>>,
    framing: Framing,
    link: LinkFaults,
    pkg: &Pkg,
    key: &SigningKey,
    config: SessionConfig,
) -> Result<Vec<Event>, veriflash_core::Error> {
    let transport = MemoryTransport::new(device.clone(), framing).with_faults(link);
    let mut session = Mdm9x07Session::new(transport, config);
    let anchors = trust(key);
    let mut events = Vec::new();
    install(
        pkg.bytes.as_slice(),
        &Verifier::new(&anchors),
        &InstallPolicy::default(),
        &mut session,
        &CancelToken::new(),
        &mut |e| events.push(e.clone()),
    )
    .map(|_| events)
}

/// Every image but the programmer is on NAND, byte for byte, with `0xFF` after it up to the
/// page end.
fn assert_flashed(device: &Arc<Mutex<Emulator>>, pkg: &Pkg) {
    let d = device.lock().unwrap();
    let page = d.config().page_size;
    for (part, bytes) in pkg.images.iter().filter(|(p, _)| *p != "programmer") {
        let raw = format!(
            "0:{}",
            if *part == "sbl" || *part == "tz" {
                part.to_ascii_uppercase()
            } else {
                (*part).to_owned()
            }
        );
        let padded = bytes.len().div_ceil(page) * page;
        let on_nand = d.partition_bytes(&raw, padded);
        assert_eq!(&on_nand[..bytes.len()], &bytes[..], "partition {part}");
        assert!(
            on_nand[bytes.len()..].iter().all(|b| *b == 0xFF),
            "padding of {part}"
        );
    }
}

fn efs2_calibration_intact(device: &Arc<Mutex<Emulator>>) -> bool {
    let d = device.lock().unwrap();
    let page = d.config().page_size;
    let cal = d.partition_bytes("0:EFS2", page);
    cal.iter()
        .enumerate()
        .all(|(i, b)| usize::from(*b) == i % 251)
}

#[test]
fn flashes_programmer_sbl_tz_boot_and_ubi_then_reads_back_and_resets() {
    let key = SigningKey::generate_p256().unwrap();
    let pkg = package(&key, full_images());
    let dev = device(EmulatorConfig::mdm9607());
    let events = flash(&dev, Framing::Packet, LinkFaults::default(), &pkg, &key).unwrap();

    assert_flashed(&dev, &pkg);
    assert!(efs2_calibration_intact(&dev));
    {
        let d = dev.lock().unwrap();
        assert_eq!(d.programmer_uploads(), 1);
        assert_eq!(d.resets(), 1, "the device was reset after the commit");
        assert!(!d.is_powered(), "it left download mode");
    }
    let phases: Vec<Phase> = events
        .iter()
        .filter_map(|e| match e {
            Event::PhaseFinished(p) => Some(*p),
            _ => None,
        })
        .collect();
    assert_eq!(
        phases,
        [
            Phase::Signature,
            Phase::Load,
            Phase::Preflight,
            Phase::Staging,
            Phase::Flash,
            Phase::ReadBack,
            Phase::Commit
        ]
    );
    // The programmer's progress comes inside the load phase, before the rest of the policy.
    let load_started = events
        .iter()
        .position(|e| *e == Event::PhaseStarted(Phase::Load))
        .unwrap();
    let load_finished = events
        .iter()
        .position(|e| *e == Event::PhaseFinished(Phase::Load))
        .unwrap();
    let programmer_progress = events
        .iter()
        .position(|e| matches!(e, Event::Progress { image, .. } if image == "programmer"))
        .unwrap();
    assert!(load_started < programmer_progress && programmer_progress < load_finished);
    assert!(events.contains(&Event::Finished(None)));
}

#[test]
fn stream_framing_coalesced_xml_zlps_and_4k_pages_with_read_data64_flash_the_same() {
    let key = SigningKey::generate_p256().unwrap();
    let pkg = package(&key, full_images());
    let mut config = EmulatorConfig::mdm9607();
    config.page_size = 4096;
    config.read_data64 = true;
    config.max_payload_to_target = 8192;
    let dev = device(config);
    dev.lock().unwrap().set_faults(DeviceFaults {
        coalesce: true,
        zlp_before_read: true,
        ..DeviceFaults::default()
    });
    flash(&dev, Framing::Stream, LinkFaults::default(), &pkg, &key).unwrap();
    assert_flashed(&dev, &pkg);

    let dev = device(EmulatorConfig::mdm9607());
    dev.lock().unwrap().set_faults(DeviceFaults {
        coalesce: true,
        zlp_before_read: true,
        ..DeviceFaults::default()
    });
    flash(&dev, Framing::Packet, LinkFaults::default(), &pkg, &key).unwrap();
    assert_flashed(&dev, &pkg);
}

#[test]
fn wrong_chip_is_refused_before_the_programmer_is_uploaded() {
    let key = SigningKey::generate_p256().unwrap();
    let pkg = package(&key, small_images());
    let mut config = EmulatorConfig::mdm9607();
    config.hw_id = 0x0070_50E1_1234_0001; // MSM8916 (bkerler/edl qualcomm_config.py msmids)
    let dev = device(config);
    let err = flash(&dev, Framing::Packet, LinkFaults::default(), &pkg, &key).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::WrongChipset, "{err}");
    assert_eq!(err.code(), 41);
    assert_eq!(dev.lock().unwrap().programmer_uploads(), 0);
    assert_eq!(
        dev.lock().unwrap().nand().page_programs(),
        4,
        "only the factory SBL, MIBIB and EFS pages"
    );
}

#[test]
fn an_unknown_chip_named_mdm9607_in_nothing_but_the_package_gets_nothing_uploaded() {
    // The session's own gate: even a package claiming "msm-0x12345678" is not served.
    let key = SigningKey::generate_p256().unwrap();
    let mut config = EmulatorConfig::mdm9607();
    config.hw_id = 0x1234_5678_1234_0001;
    let dev = device(config);
    let images = small_images();
    let spec_pkg = {
        let spec = PackageSpec {
            product: "acme-hotspot-x1".into(),
            chipset: "msm-0x12345678".into(),
            hardware_revisions: vec![],
            software_version: "1".into(),
            security_version: 1,
            images: images
                .iter()
                .map(|(p, b)| ImageSource::new(*p, *p, ImageData::Bytes(b.clone())))
                .collect(),
        };
        let unsigned = UnsignedPackage::prepare(spec).unwrap();
        let block = SignatureBlock {
            entries: vec![unsigned.sign(&key).unwrap()],
        };
        let mut bytes = Vec::new();
        unsigned.write_to(&block, &mut bytes).unwrap();
        Pkg { bytes, images }
    };
    let err = flash(
        &dev,
        Framing::Packet,
        LinkFaults::default(),
        &spec_pkg,
        &key,
    )
    .unwrap_err();
    assert!(err.to_string().contains("not an MDM9207/MDM9607"), "{err}");
    assert_eq!(dev.lock().unwrap().programmer_uploads(), 0);
}

#[test]
fn nak_with_a_logged_reason_is_a_device_error_naming_it() {
    let key = SigningKey::generate_p256().unwrap();
    let pkg = package(&key, small_images());
    let dev = device(EmulatorConfig::mdm9607());
    dev.lock().unwrap().set_faults(DeviceFaults {
        nak: Some(("program".into(), "NAND program failed at page 7".into())),
        ..DeviceFaults::default()
    });
    let err = flash(&dev, Framing::Packet, LinkFaults::default(), &pkg, &key).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DeviceError);
    assert_eq!(err.code(), 50);
    assert!(
        err.to_string().contains("NAND program failed at page 7"),
        "{err}"
    );
    assert_eq!(dev.lock().unwrap().resets(), 0, "never committed");
}

#[test]
fn a_configure_counter_proposal_is_accepted() {
    let key = SigningKey::generate_p256().unwrap();
    let pkg = package(&key, small_images());
    let mut config = EmulatorConfig::mdm9607();
    config.max_payload_to_target = 4096;
    let dev = device(config);
    flash(&dev, Framing::Packet, LinkFaults::default(), &pkg, &key).unwrap();
    assert_flashed(&dev, &pkg);
}

#[test]
fn unsupported_functions_of_the_9x07_programmer_are_refused_with_its_reason() {
    use veriflash_mdm9x07::driver::{Connection, Timeouts};
    use veriflash_mdm9x07::firehose::Element;
    let dev = device(EmulatorConfig::mdm9607());
    let link = MemoryTransport::new(dev.clone(), Framing::Packet);
    let mut conn = Connection::new(link, Timeouts::default());
    conn.identify().unwrap();
    conn.upload(&test_programmer(&[1, 2, 3])).unwrap();
    conn.configure(1 << 20).unwrap();
    assert_eq!(conn.max_payload(), 64 * 1024, "counter-proposal taken");
    for tag in ["getsha256digest", "patch"] {
        let err = conn.command(&Element::new(tag)).unwrap_err();
        assert!(err.to_string().contains("Unrecognized tag"), "{err}");
    }
}

#[test]
fn a_device_that_stalls_mid_stream_is_a_timeout() {
    let key = SigningKey::generate_p256().unwrap();
    let pkg = package(&key, small_images());
    for stall_at in [10u64, 48 + 30, 2_000, 30_000] {
        let dev = device(EmulatorConfig::mdm9607());
        let link = LinkFaults {
            stall_after_read_bytes: Some(stall_at),
            ..LinkFaults::default()
        };
        let err = flash(&dev, Framing::Packet, link, &pkg, &key).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Timeout, "stall at {stall_at}: {err}");
        assert!(err.to_string().contains("timed out"), "{err}");
        assert_eq!(dev.lock().unwrap().resets(), 0);
    }
}

#[test]
fn short_writes_are_completed_and_the_flash_succeeds() {
    let key = SigningKey::generate_p256().unwrap();
    let pkg = package(&key, small_images());
    for at in [0u64, 3, 9, 20, 40] {
        let dev = device(EmulatorConfig::mdm9607());
        let link = LinkFaults {
            short_write_at: Some(at),
            ..LinkFaults::default()
        };
        flash(&dev, Framing::Packet, link, &pkg, &key).unwrap();
        assert_flashed(&dev, &pkg);
    }
}

#[test]
fn dropped_bytes_never_end_in_a_false_success() {
    let key = SigningKey::generate_p256().unwrap();
    let pkg = package(&key, small_images());
    for at in [4u64, 60, 500, 3_000, 20_000, 40_000] {
        let dev = device(EmulatorConfig::mdm9607());
        let link = LinkFaults {
            drop_read_bytes: Some((at, 3)),
            ..LinkFaults::default()
        };
        let Err(err) = flash(&dev, Framing::Stream, link, &pkg, &key) else {
            // The lost bytes changed nothing that was written (a log line's text, a payload
            // size the programmer then took smaller): a success must then be true.
            assert_flashed(&dev, &pkg);
            continue;
        };
        assert!(
            matches!(err.code(), 50..=53),
            "drop at {at}: code {} {err}",
            err.code()
        );
        assert_eq!(
            dev.lock().unwrap().resets(),
            0,
            "drop at {at}: never committed"
        );
    }
}

#[test]
fn a_power_cut_at_every_page_program_is_recovered_by_flashing_again() {
    let key = SigningKey::generate_p256().unwrap();
    let pkg = package(&key, small_images());
    // Page programs of one whole flash: count them on a clean run.
    let probe = device(EmulatorConfig::mdm9607());
    let before = probe.lock().unwrap().nand().page_programs();
    flash(&probe, Framing::Packet, LinkFaults::default(), &pkg, &key).unwrap();
    let per_flash = probe.lock().unwrap().nand().page_programs() - before;
    assert!(per_flash >= 10);

    for n in 1..=per_flash {
        let dev = device(EmulatorConfig::mdm9607());
        dev.lock().unwrap().set_faults(DeviceFaults {
            power_cut_at_page_program: Some(n),
            ..DeviceFaults::default()
        });
        let err = flash(&dev, Framing::Packet, LinkFaults::default(), &pkg, &key).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Timeout, "cut at {n}: {err}");
        {
            let mut d = dev.lock().unwrap();
            assert!(!d.is_powered());
            d.set_faults(DeviceFaults::default());
            // The boot chain is incomplete: the boot ROM falls back to download mode.
            d.power_on();
        }
        flash(&dev, Framing::Packet, LinkFaults::default(), &pkg, &key)
            .unwrap_or_else(|e| panic!("re-run after a cut at page program {n}: {e}"));
        assert_flashed(&dev, &pkg);
        assert!(efs2_calibration_intact(&dev));
    }
}

#[test]
fn a_package_naming_a_protected_partition_is_refused_before_anything_is_erased() {
    let key = SigningKey::generate_p256().unwrap();
    let mut images = small_images();
    images.push(("efs2", vec![0u8; 4096]));
    let pkg = package(&key, images);
    let dev = device(EmulatorConfig::mdm9607());
    let programs = dev.lock().unwrap().nand().page_programs();
    let err = flash(&dev, Framing::Packet, LinkFaults::default(), &pkg, &key).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ProtectedPartition, "{err}");
    assert!(efs2_calibration_intact(&dev));
    assert_eq!(dev.lock().unwrap().nand().page_programs(), programs);
}

#[test]
fn a_package_without_the_programmer_cannot_reach_the_storage() {
    let key = SigningKey::generate_p256().unwrap();
    let images: Vec<_> = small_images()
        .into_iter()
        .filter(|(p, _)| *p != "programmer")
        .collect();
    let pkg = package(&key, images);
    let dev = device(EmulatorConfig::mdm9607());
    let err = flash(&dev, Framing::Packet, LinkFaults::default(), &pkg, &key).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::UnknownPartition, "{err}");
    assert_eq!(dev.lock().unwrap().programmer_uploads(), 0);
}

#[test]
fn the_programmer_must_be_the_first_image() {
    let key = SigningKey::generate_p256().unwrap();
    let mut images = small_images();
    images.rotate_left(1);
    let pkg = package(&key, images);
    let dev = device(EmulatorConfig::mdm9607());
    let err = flash(&dev, Framing::Packet, LinkFaults::default(), &pkg, &key).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert_eq!(dev.lock().unwrap().programmer_uploads(), 0);
}

#[test]
fn bad_blocks_inside_a_partition_are_skipped_on_write_and_read() {
    let key = SigningKey::generate_p256().unwrap();
    let pkg = package(&key, full_images());
    let mut config = EmulatorConfig::mdm9607();
    // boot starts at block 50; make its third block bad, and a system block too.
    config.bad_blocks = vec![52, 131];
    let dev = device(config);
    flash(&dev, Framing::Packet, LinkFaults::default(), &pkg, &key).unwrap();
    assert_flashed(&dev, &pkg);
    let d = dev.lock().unwrap();
    let ppb = u64::from(d.config().pages_per_block);
    assert!(
        d.nand().page(52 * ppb).iter().all(|b| *b == 0xFF),
        "bad block untouched"
    );
}

/// A flash of the full images, journalled in `dir`, cut by a power loss inside `boot` (after
/// `sbl` and `tz` were programmed): the key, the package, the device and the session config.
fn cut_inside_boot(
    dir: &std::path::Path,
) -> (SigningKey, Pkg, Arc<Mutex<Emulator>>, SessionConfig) {
    let key = SigningKey::generate_p256().unwrap();
    let pkg = package(&key, full_images());
    let config = SessionConfig {
        journal_dir: Some(dir.to_owned()),
        ..SessionConfig::default()
    };
    let page = EmulatorConfig::mdm9607().page_size as u64;
    // sbl and tz take ceil(300017/2048) + ceil(100005/2048) page programs; cut inside boot.
    let sbl_tz = 300_017u64.div_ceil(page) + 100_005u64.div_ceil(page);
    let dev = device(EmulatorConfig::mdm9607());
    dev.lock().unwrap().set_faults(DeviceFaults {
        power_cut_at_page_program: Some(sbl_tz + 100),
        ..DeviceFaults::default()
    });
    let err = flash_with(
        &dev,
        Framing::Packet,
        LinkFaults::default(),
        &pkg,
        &key,
        config.clone(),
    )
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    (key, pkg, dev, config)
}

#[test]
fn an_interrupted_flash_resumes_from_the_journal_without_reprogramming_finished_partitions() {
    use veriflash_plugin::FlashSession;
    let dir = tempfile::tempdir().unwrap();
    let (key, pkg, dev, config) = cut_inside_boot(dir.path());
    let page = EmulatorConfig::mdm9607().page_size as u64;
    {
        let mut d = dev.lock().unwrap();
        d.set_faults(DeviceFaults::default());
        d.power_on();
    }
    // The journal names the interrupted package.
    let mut probe = Mdm9x07Session::new(
        MemoryTransport::new(dev.clone(), Framing::Packet),
        config.clone(),
    );
    assert!(probe.status().unwrap().interrupted_install.is_some());
    {
        let mut d = dev.lock().unwrap();
        d.power_on();
    }
    let before = dev.lock().unwrap().nand().page_programs();
    flash_with(
        &dev,
        Framing::Packet,
        LinkFaults::default(),
        &pkg,
        &key,
        config.clone(),
    )
    .unwrap();
    let programs = dev.lock().unwrap().nand().page_programs() - before;
    let boot_system = 1_000_123u64.div_ceil(page) + 2_000_077u64.div_ceil(page);
    assert_eq!(
        programs, boot_system,
        "sbl and tz were not programmed again"
    );
    assert_flashed(&dev, &pkg);
    // Committed: the journal is gone.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn a_journal_is_trusted_only_for_partitions_that_read_back_as_the_package() {
    let dir = tempfile::tempdir().unwrap();
    let (key, pkg, _, config) = cut_inside_boot(dir.path());
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "a journal was left"
    );

    // Another board with the same serial number (or this one re-flashed by another tool):
    // blank NAND, so the journal's "sbl and tz are done" is false. One run programs everything.
    let blank = device(EmulatorConfig::mdm9607());
    flash_with(
        &blank,
        Framing::Packet,
        LinkFaults::default(),
        &pkg,
        &key,
        config,
    )
    .unwrap();
    let programs = blank.lock().unwrap().nand().page_programs();
    // As many page programs as a flash of a blank board without any journal.
    let reference = device(EmulatorConfig::mdm9607());
    flash(
        &reference,
        Framing::Packet,
        LinkFaults::default(),
        &pkg,
        &key,
    )
    .unwrap();
    let all = reference.lock().unwrap().nand().page_programs();
    assert_eq!(programs, all, "every partition was programmed");
    assert_flashed(&blank, &pkg);
}

#[test]
fn protected_partitions_are_backed_up_before_anything_is_erased() {
    let key = SigningKey::generate_p256().unwrap();
    let pkg = package(&key, small_images());
    let dir = tempfile::tempdir().unwrap();
    let config = SessionConfig {
        backup_dir: Some(dir.path().to_owned()),
        ..SessionConfig::default()
    };
    let emulator = EmulatorConfig::mdm9607();
    let block = emulator.page_size * emulator.pages_per_block as usize;
    let dev = device(emulator.clone());
    let before = dev.lock().unwrap().nand().block_erases();
    flash_with(
        &dev,
        Framing::Packet,
        LinkFaults::default(),
        &pkg,
        &key,
        config,
    )
    .unwrap();
    assert!(dev.lock().unwrap().nand().block_erases() > before);

    let copies = dir.path().join(format!("mdm9x07-{:08x}", emulator.serial));
    let efs2 = std::fs::read(copies.join("efs2.bin")).unwrap();
    assert_eq!(
        efs2.len(),
        28 * block,
        "the whole partition, as the MIBIB places it"
    );
    assert_eq!(
        efs2,
        dev.lock().unwrap().partition_bytes("0:EFS2", efs2.len())
    );
    assert!(efs2_calibration_intact(&dev));
    let mibib = std::fs::read(copies.join("mibib.bin")).unwrap();
    assert_eq!(mibib.len(), 2 * block);
    assert!(
        !copies.join("boot.bin").exists(),
        "only protected partitions are copied"
    );
    let leftovers: Vec<_> = std::fs::read_dir(&copies)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn a_backup_that_cannot_be_written_refuses_the_install_before_any_erase() {
    let key = SigningKey::generate_p256().unwrap();
    let pkg = package(&key, small_images());
    let dir = tempfile::tempdir().unwrap();
    // A file where the backup directory should be: nothing can be created under it.
    let blocked = dir.path().join("not-a-dir");
    std::fs::write(&blocked, b"x").unwrap();
    let config = SessionConfig {
        backup_dir: Some(blocked),
        ..SessionConfig::default()
    };
    let dev = device(EmulatorConfig::mdm9607());
    let (erases, programs) = {
        let d = dev.lock().unwrap();
        (d.nand().block_erases(), d.nand().page_programs())
    };
    let err = flash_with(
        &dev,
        Framing::Packet,
        LinkFaults::default(),
        &pkg,
        &key,
        config,
    )
    .unwrap_err();
    assert!(err.to_string().contains("backup"), "{err}");
    let d = dev.lock().unwrap();
    assert_eq!(d.nand().block_erases(), erases, "nothing was erased");
    assert_eq!(d.nand().page_programs(), programs, "nothing was programmed");
}
