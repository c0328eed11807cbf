//! Reading a modem without a package (`veriflash read`, `backup`): a partition to a file and
//! every partition to a directory, each copy read twice and checked on disk.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::sync::{Arc, Mutex};

use veriflash_mdm9x07::backup::{self, CHECKSUMS, ModemReader};
use veriflash_mdm9x07::emulator::{
    DeviceFaults, Emulator, EmulatorConfig, stand_in_sbl_page, test_programmer,
};
use veriflash_mdm9x07::transport::{Framing, MemoryTransport};
use veriflash_mdm9x07::{Error, Mdm9x07Session, SessionConfig};

/// A small MDM9607 (140 blocks, so a full backup reads 17.5 MiB twice) with its programmer
/// running.
fn reader() -> (Arc<Mutex<Emulator>>, Box<dyn ModemReader>) {
    let mut config = EmulatorConfig::mdm9607();
    config.blocks = 140;
    let device = Arc::new(Mutex::new(Emulator::new(config).unwrap()));
    let link = MemoryTransport::new(device.clone(), Framing::Packet);
    let mut session: Box<dyn ModemReader> =
        Box::new(Mdm9x07Session::new(link, SessionConfig::default()));
    session
        .start_programmer(&test_programmer(&[9u8; 2000]))
        .unwrap();
    (device, session)
}

#[test]
fn a_partition_is_read_twice_into_a_file_that_is_checked_on_disk() {
    let (_device, mut session) = reader();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sbl.bin");
    let copy = backup::read_to_file(&mut *session, "sbl", &path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(copy.bytes, 10 * 128 * 1024);
    assert_eq!(bytes.len() as u64, copy.bytes);
    assert_eq!(&bytes[..2048], &stand_in_sbl_page(2048)[..]);
    assert!(bytes[2048..].iter().all(|b| *b == 0xFF));
    assert_eq!(veriflash_hash::sha256(&bytes), copy.sha256);
    assert!(!dir.path().join("sbl.bin.part").exists());
    let err = backup::read_to_file(&mut *session, "nvram", &dir.path().join("x")).unwrap_err();
    assert!(err.to_string().contains("no partition 'nvram'"), "{err}");
}

#[test]
fn reads_that_differ_keep_no_file() {
    let (device, mut session) = reader();
    device.lock().unwrap().set_faults(DeviceFaults {
        corrupt_read: Some(2),
        ..DeviceFaults::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tz.bin");
    let err = backup::read_to_file(&mut *session, "tz", &path).unwrap_err();
    assert!(matches!(err, Error::Storage(_)), "{err}");
    assert!(err.to_string().contains("two reads of 'tz'"), "{err}");
    assert!(!path.exists());
}

#[test]
fn a_full_backup_copies_every_partition_with_its_checksums() {
    let (_device, mut session) = reader();
    let dir = tempfile::tempdir().unwrap();
    let copies = backup::back_up(&mut *session, dir.path()).unwrap();
    let names: Vec<&str> = copies.iter().map(|c| c.partition.as_str()).collect();
    assert_eq!(
        names,
        [
            "sbl", "mibib", "efs2", "tz", "rpm", "aboot", "boot", "modem", "system"
        ]
    );
    let sums = std::fs::read_to_string(dir.path().join(CHECKSUMS)).unwrap();
    assert_eq!(sums.lines().count(), copies.len());
    for (line, copy) in sums.lines().zip(&copies) {
        let (digest, file) = line.split_once("  ").unwrap();
        let bytes = std::fs::read(dir.path().join(file)).unwrap();
        let hex: String = veriflash_hash::sha256(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(digest, hex, "{file}");
        assert_eq!(bytes.len() as u64, copy.bytes);
    }
    // The calibration in EFS2 is in its copy: a full backup is what restores it.
    let efs = std::fs::read(dir.path().join("efs2.bin")).unwrap();
    assert!(
        efs[..2048]
            .iter()
            .enumerate()
            .all(|(i, b)| usize::from(*b) == i % 251)
    );
    let layout = std::fs::read_to_string(dir.path().join("partitions.txt")).unwrap();
    assert!(layout.starts_with("sbl 0 10\nmibib 10 2\n"), "{layout}");
    session.reset_modem().unwrap();
}
