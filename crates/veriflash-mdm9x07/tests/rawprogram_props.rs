//! Property tests for the rawprogram/patch importer: generated entries survive a write and a
//! parse unchanged, and no input makes the parsers panic.

#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use veriflash_mdm9x07::rawprogram::{
    ProgramEntry, encode_rawprogram, parse_patch, parse_rawprogram, plan_import,
};

/// Attribute text as vendors write it, including characters that must be escaped.
fn text() -> impl Strategy<Value = String> {
    "[ -~]{0,24}"
}

fn entry() -> impl Strategy<Value = ProgramEntry> {
    (
        (1u32..=65_536, any::<u64>(), text(), text(), any::<u64>()),
        (
            any::<u32>(),
            text(),
            prop::option::of(1u32..=1024),
            prop::option::of(any::<u64>()),
            any::<bool>(),
        ),
    )
        .prop_map(
            |(
                (sector_size, file_sector_offset, filename, label, num_partition_sectors),
                (physical_partition_number, start_sector, pages_per_block, last_sector, sparse),
            )| ProgramEntry {
                sector_size,
                file_sector_offset,
                filename,
                label,
                num_partition_sectors,
                physical_partition_number,
                start_sector,
                pages_per_block,
                last_sector,
                sparse,
            },
        )
}

proptest! {
    /// Every generated entry list is written and read back to the same entries, in order.
    #[test]
    fn generated_entries_round_trip(entries in prop::collection::vec(entry(), 0..20)) {
        let xml = encode_rawprogram(&entries);
        let parsed = parse_rawprogram(&xml).unwrap();
        prop_assert_eq!(parsed.programs, entries);
        prop_assert!(parsed.erases.is_empty());
    }

    /// Arbitrary bytes never panic either parser or the planner.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        if let Ok(raw) = parse_rawprogram(&bytes) {
            let _ = plan_import(&raw, &[], &veriflash_mdm9x07::rawprogram::ImportOptions::default());
        }
        let _ = parse_patch(&bytes);
    }

    /// Mutating one byte of a valid file never panics, and whatever still parses plans or is
    /// refused with an error.
    #[test]
    fn mutated_files_never_panic(
        entries in prop::collection::vec(entry(), 1..6),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let mut xml = encode_rawprogram(&entries);
        let i = at.index(xml.len());
        xml[i] = byte;
        if let Ok(raw) = parse_rawprogram(&xml) {
            let _ = plan_import(&raw, &[], &veriflash_mdm9x07::rawprogram::ImportOptions::default());
        }
    }
}
