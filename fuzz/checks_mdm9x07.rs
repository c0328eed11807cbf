//! The properties the MDM9x07 plugin's fuzz targets check: the parsers of bytes a (possibly
//! hostile or broken) device sends, and of the vendor bundles (`rawprogram*.xml`) an import
//! reads. Included with `#[path]` by `fuzz_targets/{sahara,firehose,mibib,rawprogram}.rs` and by `crates/veriflash-mdm9x07/tests/fuzz_replay.rs` (stable), kept apart from
//! `checks.rs` because the core's replay test cannot see the plugin crate.

#![allow(clippy::panic)]

use veriflash_mdm9x07::firehose::{Splitter, parse_document};
use veriflash_mdm9x07::mibib::Table;
use veriflash_mdm9x07::rawprogram::{
    encode_rawprogram, parse_patch, parse_rawprogram, plan_import,
};
use veriflash_mdm9x07::sahara::Packet;

/// Every target of this file.
pub const TARGETS: &[&str] = &["sahara", "firehose", "mibib", "rawprogram"];

/// Runs the check of `target` on `data`; `false` if there is no such target.
pub fn run(target: &str, data: &[u8]) -> bool {
    match target {
        "sahara" => sahara(data),
        "firehose" => firehose(data),
        "mibib" => mibib(data),
        "rawprogram" => rawprogram(data),
        _ => return false,
    }
    true
}

/// `Packet::decode`: a decoded packet re-encodes to a packet that decodes to the same value
/// with the same length. (Not byte-identical: devices fill reserved words as they like, and the
/// decoder rightly ignores them, as qdl does.)
pub fn sahara(data: &[u8]) {
    if let Ok(packet) = Packet::decode(data) {
        let encoded = packet.encode();
        assert_eq!(encoded.len(), data.len(), "Sahara packet changes length");
        assert_eq!(
            Packet::decode(&encoded).ok(),
            Some(packet),
            "Sahara packet does not round-trip"
        );
    }
}

/// The Firehose response path: the input cut into two pushes at a point taken from its first
/// byte must give the same documents as one push, and the splitter's buffer stays bounded.
pub fn firehose(data: &[u8]) {
    let _ = parse_document(data);
    let cut = data.first().map_or(0, |b| usize::from(*b)).min(data.len());
    let drain = |pieces: &[&[u8]]| {
        let mut splitter = Splitter::new();
        let mut out = Vec::new();
        for piece in pieces {
            splitter.push(piece);
            // Each document either parses or is dropped; stop when nothing is left to take.
            for _ in 0..=data.len() {
                match splitter.next_document() {
                    Ok(Some(doc)) => out.push(Ok(doc)),
                    Ok(None) => break,
                    Err(e) => {
                        out.push(Err(e.to_string()));
                        if splitter.buffered() == 0 {
                            break;
                        }
                    }
                }
            }
        }
        (out, splitter.buffered())
    };
    let (whole, left_whole) = drain(&[data]);
    let (split, left_split) = drain(&[&data[..cut], &data[cut..]]);
    if whole.iter().all(Result::is_ok) && split.iter().all(Result::is_ok) {
        assert_eq!(whole, split, "documents depend on how the stream was cut");
        assert_eq!(left_whole, left_split);
    }
}

/// `Table::parse`: a parsed table re-encodes to a table that parses to the same value (bytes
/// after a name's NUL are ignored, as the kernel's parser does), and placing it on any device
/// size keeps every partition inside the device.
pub fn mibib(data: &[u8]) {
    let Ok(table) = Table::parse(data) else {
        return;
    };
    let encoded = table.encode();
    assert_eq!(
        Table::parse(&encoded).ok().as_ref(),
        Some(&table),
        "MIBIB does not round-trip"
    );
    for total in [0u32, 1, 64, 1024, u32::MAX] {
        if let Ok(placed) = table.place(total) {
            for p in &placed {
                assert!(
                    u64::from(p.first_block) + u64::from(p.blocks) <= u64::from(total),
                    "a placed partition leaves the device"
                );
            }
        }
    }
}

/// `parse_rawprogram`: parsed `<program/>` entries written back out parse to the same entries,
/// and an import plan made of them only names files inside the bundle. `parse_patch` never
/// panics.
pub fn rawprogram(data: &[u8]) {
    let _ = parse_patch(data);
    let Ok(raw) = parse_rawprogram(data) else {
        return;
    };
    let again = parse_rawprogram(&encode_rawprogram(&raw.programs));
    assert_eq!(
        again.ok().map(|r| r.programs),
        Some(raw.programs.clone()),
        "rawprogram entries do not round-trip"
    );
    // Entries without a label are placed through a table, as a stock bundle's are.
    let entry = |name: &str, offset, length| veriflash_mdm9x07::mibib::Entry {
        raw_name: name.into(),
        offset,
        length,
        attrs: [0xFF, 1, 0xFF],
        which_flash: 0,
    };
    let tables = [veriflash_mdm9x07::mibib::Table {
        version: 4,
        entries: vec![
            entry("0:SBL", 0, 10),
            entry("0:MIBIB", 10, 10),
            entry("0:system", 20, veriflash_mdm9x07::mibib::GROW),
        ],
    }];
    let options = veriflash_mdm9x07::rawprogram::ImportOptions {
        tables: &tables,
        partition_table: true,
    };
    if let Ok(plan) = plan_import(&raw, &[], &options) {
        for image in &plan.images {
            assert!(
                !image.file.starts_with('/') && !image.file.split('/').any(|p| p == ".."),
                "an imported file leaves the bundle"
            );
        }
    }
}
