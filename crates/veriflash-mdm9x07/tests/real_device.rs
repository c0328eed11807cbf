//! The emulator behaves as a real MDM9x07 does toward any host tool, one test per behaviour,
//! driven at the protocol level (raw Sahara packets, Firehose documents) the way
//! linux-msm/qdl and bkerler/edl drive a device; and veriflash's own host copes with each.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::sync::{Arc, Mutex};

use veriflash_mdm9x07::driver::{Connection, Timeouts};
use veriflash_mdm9x07::emulator::{Emulator, EmulatorConfig, SBL_MAGIC, test_programmer};
use veriflash_mdm9x07::firehose::{self, Element};
use veriflash_mdm9x07::mibib::{self, Table};
use veriflash_mdm9x07::sahara::{Packet, exec, mode};
use veriflash_mdm9x07::transport::{Endpoint, Framing, MemoryTransport};
use veriflash_mdm9x07::{Mdm9x07Session, SessionConfig};
use veriflash_plugin::FlashSession;

/// Sends `packet` and returns every transfer the device answers with.
fn exchange(d: &mut Emulator, packet: &Packet) -> Vec<Vec<u8>> {
    d.receive(&packet.encode());
    std::iter::from_fn(|| d.transmit()).collect()
}

fn packet(bytes: &[u8]) -> Packet {
    Packet::decode(bytes).unwrap()
}

/// Takes the boot ROM's HELLO and enters command mode.
fn command_mode(d: &mut Emulator) {
    let hello = d.transmit().unwrap();
    assert!(matches!(packet(&hello), Packet::Hello { version: 2, .. }));
    let ready = exchange(
        d,
        &Packet::HelloResponse {
            version: 2,
            version_compatible: 1,
            status: 0,
            mode: mode::COMMAND,
        },
    );
    assert_eq!(packet(&ready[0]), Packet::CommandReady);
}

/// EXECUTE then EXECUTE_DATA: the answer's bytes, or the packet that refused it.
fn execute(d: &mut Emulator, command: u32) -> Result<Vec<u8>, Packet> {
    let resp = exchange(d, &Packet::Execute { command });
    match packet(&resp[0]) {
        Packet::ExecuteResponse { data_len, .. } => {
            let data = exchange(d, &Packet::ExecuteData { command }).concat();
            assert_eq!(data.len(), data_len as usize);
            Ok(data)
        }
        other => Err(other),
    }
}

#[test]
fn sahara_command_mode_answers_the_read_commands_of_version_2() {
    let config = EmulatorConfig::mdm9207_ec25();
    let mut d = Emulator::new(config.clone()).unwrap();
    command_mode(&mut d);
    assert_eq!(
        execute(&mut d, exec::SERIAL_NUM_READ).unwrap(),
        config.serial.to_le_bytes()
    );
    assert_eq!(
        execute(&mut d, exec::MSM_HW_ID_READ).unwrap(),
        config.hw_id.to_le_bytes()
    );
    let pk = execute(&mut d, exec::OEM_PK_HASH_READ).unwrap();
    assert_eq!(pk, [config.oem_pk_hash; 2].concat(), "once per root");
    assert_eq!(
        execute(&mut d, exec::GET_SOFTWARE_VERSION_SBL)
            .unwrap()
            .len(),
        4
    );
    let list = execute(&mut d, exec::GET_COMMAND_ID_LIST).unwrap();
    let ids: Vec<u32> = list
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    assert_eq!(ids, [1, 2, 3, 7, 8]);
    // A command it does not have ends alone ("unsupported client command") ...
    assert_eq!(
        execute(&mut d, 0x06),
        Err(Packet::EndOfImage {
            image_id: 0,
            status: 0x1E
        })
    );
    // ... and the boot ROM still answers the next one.
    assert_eq!(
        execute(&mut d, exec::SERIAL_NUM_READ).unwrap(),
        config.serial.to_le_bytes()
    );
}

#[test]
fn switch_mode_returns_the_boot_rom_to_a_new_hello() {
    let mut d = Emulator::new(EmulatorConfig::mdm9607()).unwrap();
    command_mode(&mut d);
    execute(&mut d, exec::OEM_PK_HASH_READ).unwrap();
    let hello = exchange(
        &mut d,
        &Packet::SwitchMode {
            mode: mode::IMAGE_TX_PENDING,
        },
    );
    assert!(matches!(
        packet(&hello[0]),
        Packet::Hello {
            mode: mode::IMAGE_TX_PENDING,
            ..
        }
    ));
    // And the query can run again (qdl's chip info, then its flash, without a reset).
    let ready = exchange(
        &mut d,
        &Packet::HelloResponse {
            version: 2,
            version_compatible: 1,
            status: 0,
            mode: mode::COMMAND,
        },
    );
    assert_eq!(packet(&ready[0]), Packet::CommandReady);
}

#[test]
fn the_host_reads_the_pk_hash_and_goes_on_to_upload() {
    let config = EmulatorConfig::mdm9607();
    let device = Arc::new(Mutex::new(Emulator::new(config.clone()).unwrap()));
    let link = MemoryTransport::new(device.clone(), Framing::Packet);
    let mut session = Mdm9x07Session::new(link, SessionConfig::default());
    session.device_info().unwrap();
    let id = session.identity().unwrap();
    assert_eq!(id.pk_hash.unwrap().as_bytes(), &config.oem_pk_hash[..]);
}

/// A device with its programmer running (uploaded by the veriflash host), its queue empty.
fn firehose_device(config: EmulatorConfig) -> Arc<Mutex<Emulator>> {
    let device = Arc::new(Mutex::new(Emulator::new(config).unwrap()));
    let link = MemoryTransport::new(device.clone(), Framing::Packet);
    let mut conn = Connection::new(link, Timeouts::default());
    conn.probe().unwrap();
    conn.identify().unwrap();
    conn.upload(&test_programmer(&[7u8; 1000])).unwrap();
    assert!(device.lock().unwrap().programmer_running());
    device
}

/// Sends one command document; returns the answer, one document per transfer.
fn command(device: &Arc<Mutex<Emulator>>, e: Element) -> Vec<Vec<Element>> {
    let mut d = device.lock().unwrap();
    d.receive(&firehose::document(&[e]));
    std::iter::from_fn(|| d.transmit())
        .map(|t| firehose::parse_document(&t).unwrap())
        .collect()
}

#[test]
fn configure_answers_with_the_attributes_real_programmers_send() {
    let device = firehose_device(EmulatorConfig::mdm9607());
    let docs = command(
        &device,
        Element::new("configure")
            .attr("MemoryName", "nand")
            .attr("MaxPayloadSizeToTargetInBytes", 8192),
    );
    let ack = &docs.last().unwrap()[0];
    for (key, value) in [
        ("value", "ACK"),
        ("MemoryName", "NAND"),
        ("TargetName", "9x07"),
        ("Version", "1"),
        ("MinVersionSupported", "1"),
        ("MaxXMLSizeInBytes", "4096"),
        ("MaxPayloadSizeToTargetInBytes", "8192"),
        ("MaxPayloadSizeToTargetInBytesSupported", "65536"),
        ("MaxPayloadSizeFromTargetInBytes", "16384"),
    ] {
        assert_eq!(ack.get(key), Some(value), "{key}");
    }
    // Too large: a NAK that carries the size it takes, and no ERROR line (edl gives up on
    // one; qdl and edl configure again with the size).
    let docs = command(
        &device,
        Element::new("configure")
            .attr("MemoryName", "nand")
            .attr("MaxPayloadSizeToTargetInBytes", 1 << 20),
    );
    assert_eq!(docs.len(), 1);
    let nak = &docs[0][0];
    assert_eq!(nak.get("value"), Some("NAK"));
    assert_eq!(nak.get("MaxPayloadSizeToTargetInBytes"), Some("65536"));
    assert_eq!(nak.get("TargetName"), Some("9x07"));
}

#[test]
fn every_log_is_its_own_document_and_nop_answers_with_logs() {
    let device = firehose_device(EmulatorConfig::mdm9607());
    let docs = command(&device, Element::new("nop"));
    assert!(docs.iter().all(|d| d.len() == 1), "{docs:?}");
    let names: Vec<&str> = docs.iter().map(|d| d[0].name.as_str()).collect();
    assert_eq!(names, ["log", "log", "response"]);
    assert!(
        docs[0][0]
            .get("value")
            .unwrap()
            .contains("Binary build date")
    );
    assert!(docs[1][0].get("value").unwrap().contains("Chip serial num"));
    command(
        &device,
        Element::new("configure")
            .attr("MemoryName", "nand")
            .attr("MaxPayloadSizeToTargetInBytes", 8192),
    );
    let docs = command(
        &device,
        Element::new("getstorageinfo").attr("physical_partition_number", 0),
    );
    assert!(docs.iter().all(|d| d.len() == 1), "{docs:?}");
    assert_eq!(docs.len(), 2, "the storage-info log, then the ACK");
}

#[test]
fn naks_are_worded_as_the_nand_programmer_words_them() {
    let device = firehose_device(EmulatorConfig::mdm9607());
    command(
        &device,
        Element::new("configure")
            .attr("MemoryName", "nand")
            .attr("MaxPayloadSizeToTargetInBytes", 8192),
    );
    let docs = command(
        &device,
        Element::new("program")
            .attr("PAGES_PER_BLOCK", 2048)
            .attr("SECTOR_SIZE_IN_BYTES", 2048)
            .attr("num_partition_sectors", 1)
            .attr("physical_partition_number", 0)
            .attr("start_sector", 640 * 64),
    );
    let lines: Vec<&str> = docs
        .iter()
        .filter(|d| d[0].is_log())
        .map(|d| d[0].get("value").unwrap())
        .collect();
    assert_eq!(
        lines,
        [
            "Attribute 'PAGES_PER_BLOCK'=2048 must be equal to disk pages per block 64",
            "ERROR 21: Line 2459: HANDLE_PROGRAM_FAILURE"
        ]
    );
    assert_eq!(docs.last().unwrap()[0].get("value"), Some("NAK"));
    // veriflash reports both lines: the reason and the programmer's error.
    let owned: Vec<String> = lines.iter().map(|l| (*l).to_owned()).collect();
    assert_eq!(
        firehose::nak_reason(&owned, &docs.last().unwrap()[0]),
        "Attribute 'PAGES_PER_BLOCK'=2048 must be equal to disk pages per block 64 (ERROR 21: Line 2459: HANDLE_PROGRAM_FAILURE)"
    );
}

#[test]
fn page_0_holds_an_sbl_with_its_magic_and_the_mibib_is_where_tools_look() {
    for config in [EmulatorConfig::mdm9607(), EmulatorConfig::mdm9207_ec25()] {
        let d = Emulator::new(config).unwrap();
        assert_eq!(&d.nand().page(0)[..4], &SBL_MAGIC.to_le_bytes());
        // bkerler/edl scans sectors 0x280, 0x400 and 0x800 for the MIBIB's MBN header.
        assert!(mibib::is_mibib_header(d.nand().page(0x280)));
        assert!(Table::parse(d.nand().page(0x281)).is_ok());
    }
}

#[test]
fn the_grow_partition_holds_the_blocks_that_remain() {
    let config = EmulatorConfig::mdm9207_ec25();
    let blocks = config.blocks;
    assert_eq!(config.partitions.last().unwrap().length, mibib::GROW);
    let d = Emulator::new(config).unwrap();
    let table = Table::parse(d.nand().page(10 * 64 + 1)).unwrap();
    let system = table.entries.last().unwrap();
    assert_eq!(system.name(), "system");
    assert_eq!(system.length, blocks - system.offset, "not 0xFFFFFFFF");
}

#[test]
fn the_host_renegotiates_the_payload_size_a_configure_nak_names() {
    let device = Arc::new(Mutex::new(
        Emulator::new(EmulatorConfig::mdm9607()).unwrap(),
    ));
    let link = MemoryTransport::new(device.clone(), Framing::Packet);
    let mut conn = Connection::new(link, Timeouts::default());
    conn.probe().unwrap();
    conn.identify().unwrap();
    conn.upload(&test_programmer(&[7u8; 1000])).unwrap();
    assert_eq!(conn.configure(1 << 20).unwrap(), 65536);
    assert!(conn.logs().is_empty(), "the NAK carried no log line");
}

#[test]
fn real_geometries_and_part_sizes() {
    let ec25 = EmulatorConfig::mdm9207_ec25();
    assert_eq!((ec25.page_size, ec25.block_size()), (4096, 256 * 1024));
    assert_eq!(
        ec25.blocks as usize * ec25.block_size(),
        512 << 20,
        "4 Gbit"
    );
    let hotspot = EmulatorConfig::mdm9607();
    assert_eq!(
        (hotspot.page_size, hotspot.block_size()),
        (2048, 128 * 1024)
    );
    assert_eq!(
        hotspot.blocks as usize * hotspot.block_size(),
        128 << 20,
        "1 Gbit"
    );
    // A real part's size costs memory only for what is written.
    let d = Emulator::new(ec25).unwrap();
    assert_eq!(d.nand().pages(), 2048 * 64);
}
