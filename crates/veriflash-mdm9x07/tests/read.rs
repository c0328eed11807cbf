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
    reader_with(&[52, 140])
}

/// [`reader`] with these bad blocks.
fn reader_with(bad_blocks: &[u32]) -> (Arc<Mutex<Emulator>>, Box<dyn ModemReader>) {
    let mut config = EmulatorConfig::mdm9607();
    config.blocks = 140;
    config.bad_blocks = bad_blocks.to_vec();
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

#[test]
fn a_last_partition_with_a_bad_block_is_read_to_its_last_good_block() {
    // 'system' (blocks 130..140) has a bad block: it holds nine good blocks, and a read of
    // all ten runs out of them at the end of the NAND.
    let (device, mut session) = reader_with(&[52, 135]);
    let block = 128 * 1024;
    let held = device
        .lock()
        .unwrap()
        .nand()
        .read_skipping(130 * 64, 10 * 64);
    assert_eq!(held.len(), 9 * block, "the emulator skips the bad block");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("system.bin");
    let copy = backup::read_to_file(&mut *session, "system", &path).unwrap();
    assert_eq!(copy.bytes, 9 * block as u64);
    assert_eq!(std::fs::read(&path).unwrap(), held);
    // The whole backup too, and the session goes on talking to the programmer after it.
    let copies = backup::back_up(&mut *session, &dir.path().join("all")).unwrap();
    let system = copies.iter().find(|c| c.partition == "system").unwrap();
    assert_eq!(system.sha256, copy.sha256);
    session.reset_modem().unwrap();
}

/// The programmer with its payload size configured, over a packet link.
fn connection(
    device: &Arc<Mutex<Emulator>>,
) -> veriflash_mdm9x07::driver::Connection<MemoryTransport<Emulator>> {
    use veriflash_mdm9x07::driver::{Connection, Timeouts};
    let link = MemoryTransport::new(device.clone(), Framing::Packet);
    let mut conn = Connection::new(link, Timeouts::default());
    conn.identify().unwrap();
    conn.upload(&test_programmer(&[3u8; 500])).unwrap();
    conn.configure(64 * 1024).unwrap();
    conn
}

#[test]
fn a_read_the_programmer_ends_early_is_its_nak_unless_asked_to_the_last_good_block() {
    let mut config = EmulatorConfig::mdm9607();
    config.blocks = 140;
    config.bad_blocks = vec![135];
    let device = Arc::new(Mutex::new(Emulator::new(config).unwrap()));
    let mut conn = connection(&device);
    let mut got = 0usize;
    let err = conn
        .read(130 * 64, 10 * 64, 2048, &mut |b| got += b.len())
        .unwrap_err();
    assert!(matches!(err, Error::Nak { .. }), "{err}");
    assert!(
        err.to_string().contains("past the last good block"),
        "{err}"
    );
    assert_eq!(got, 9 * 64 * 2048, "every good page came before the answer");
    let mut bytes = Vec::new();
    let n = conn
        .read_to_last_good_block(130 * 64, 10 * 64, 2048, &mut |b| bytes.extend_from_slice(b))
        .unwrap();
    assert_eq!(n, 9 * 64 * 2048);
    assert_eq!(
        bytes,
        device.lock().unwrap().nand().read_skipping(130 * 64, 640)
    );
    // A read that fits is answered ACK and the connection goes on.
    conn.read(0, 1, 2048, &mut |_| {}).unwrap();
}

#[test]
fn pages_that_hold_xml_are_read_as_data() {
    let mut config = EmulatorConfig::mdm9607();
    config.blocks = 140;
    let device = Arc::new(Mutex::new(Emulator::new(config).unwrap()));
    let mut conn = connection(&device);
    let page = |text: &str| {
        let mut p = text.as_bytes().to_vec();
        p.resize(2048, 0xFF);
        p
    };
    let pages = [
        // Firehose-looking documents followed by other bytes on the same page.
        page("<?xml version=\"1.0\" ?><data><log value=\"a log line kept in a file\"/></data>"),
        page("<?xml version=\"1.0\" ?><data><program SECTOR_SIZE_IN_BYTES=\"2048\"/></data>"),
        page("<?xml version=\"1.0\" encoding=\"UTF-8\"?><config><item/></config>"),
        page("<?xml"),
    ];
    let bytes = pages.concat();
    conn.erase(100 * 64, 64, 2048, 64).unwrap();
    conn.start_program(100 * 64, 4, 2048, 64, 101 * 64 - 1)
        .unwrap();
    conn.send_raw(&bytes).unwrap();
    conn.finish_program().unwrap();
    let mut read = Vec::new();
    conn.read(100 * 64, 4, 2048, &mut |b| read.extend_from_slice(b))
        .unwrap();
    assert_eq!(read, bytes);
}
