//! Replays the plugin's fuzz seeds and crash reproducers on stable, through the same checks the
//! fuzz targets run (`fuzz/checks_mdm9x07.rs`), and writes the seeds:
//! `VERIFLASH_WRITE_SEEDS=1 cargo test -p veriflash-mdm9x07 --test fuzz_replay`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

#[path = "../../../fuzz/checks_mdm9x07.rs"]
#[allow(unreachable_pub)]
mod checks_mdm9x07;

use std::path::{Path, PathBuf};

use veriflash_mdm9x07::mibib::{Entry, Table};
use veriflash_mdm9x07::sahara::Packet;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

/// Seeds as a device speaks: Sahara packets, Firehose responses, a MIBIB table.
fn generated_seeds() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let table = Table {
        version: 4,
        entries: ["0:SBL", "0:MIBIB", "0:EFS2", "0:TZ", "0:BOOT", "0:SYSTEM"]
            .iter()
            .enumerate()
            .map(|(i, name)| Entry {
                raw_name: (*name).to_owned(),
                offset: u32::try_from(i).unwrap() * 8,
                length: if i == 5 { 0xFFFF_FFFF } else { 8 },
                attrs: [0xFF, 0x01, 0x00],
                which_flash: 0,
            })
            .collect(),
    };
    vec![
        (
            "sahara",
            "hello",
            Packet::Hello { version: 2, version_compatible: 1, max_command_len: 1024, mode: 0 }
                .encode(),
        ),
        ("sahara", "read-data", Packet::ReadData { image_id: 13, offset: 0, length: 4096 }.encode()),
        ("sahara", "end-of-image", Packet::EndOfImage { image_id: 13, status: 0 }.encode()),
        ("sahara", "done-resp", Packet::DoneResponse { status: 1 }.encode()),
        (
            "firehose",
            "configure-ack",
            b"<?xml version=\"1.0\" encoding=\"UTF-8\" ?>\n<data>\n<log value=\"Binary build date: Jan 1 2020\" />\n</data>\n<?xml version=\"1.0\" encoding=\"UTF-8\" ?>\n<data>\n<response value=\"ACK\" MemoryName=\"nand\" MaxPayloadSizeToTargetInBytes=\"1048576\" />\n</data>\n".to_vec(),
        ),
        (
            "firehose",
            "nak-with-log-and-raw-tail",
            b"<?xml version=\"1.0\" ?><data><log value=\"ERROR: Failed to erase\" /></data><?xml version=\"1.0\" ?><data><response value=\"NAK\" /></data>\xff\xff\x00\x01".to_vec(),
        ),
        ("mibib", "v4-six-partitions", table.encode()),
    ]
}

#[test]
fn every_seed_and_reproducer_passes_its_check() {
    if std::env::var_os("VERIFLASH_WRITE_SEEDS").is_some() {
        for (target, name, bytes) in generated_seeds() {
            let dir = fuzz_dir().join("seeds").join(target);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(format!("{name}.bin")), bytes).unwrap();
        }
    }
    for target in checks_mdm9x07::TARGETS {
        let mut seen = 0;
        for kind in ["seeds", "regressions"] {
            let Ok(dir) = std::fs::read_dir(fuzz_dir().join(kind).join(target)) else {
                continue;
            };
            for file in dir {
                let data = std::fs::read(file.unwrap().path()).unwrap();
                assert!(checks_mdm9x07::run(target, &data));
                seen += 1;
            }
        }
        assert!(seen > 0, "fuzz target {target} has no seeds");
    }
}

#[test]
fn generated_seeds_pass_their_checks_and_parse() {
    for (target, _, bytes) in generated_seeds() {
        assert!(checks_mdm9x07::run(target, &bytes));
    }
    // The seeds reach past the parsers' first refusal.
    let table = &generated_seeds()[6].2;
    assert_eq!(Table::parse(table).unwrap().entries.len(), 6);
    assert!(Packet::decode(&generated_seeds()[0].2).is_ok());
}
