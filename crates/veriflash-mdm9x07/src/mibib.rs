//! The NAND partition table Qualcomm boot loaders keep in the MIBIB block: page 0 carries an
//! MBN header (two magic words), page 1 the SMEM flash partition table — a header
//! (`magic1`, `magic2`, `version`, `numparts`, little-endian `u32`s) and `numparts` entries of
//! 28 bytes (`name[16]`, `offset` and `length` in erase blocks, three attribute bytes and a
//! `which_flash` byte). A length of `0xFFFFFFFF` means "to the end of the device".
//!
//! The host finds the block by scanning for the MBN header and parses the table from it; it
//! never assumes a layout.

use crate::error::Error;

/// First word of the MBN header at page 0 of the MIBIB block.
pub const MBN_MAGIC1: u32 = 0xFE56_9FAC;
/// Second word of the MBN header.
pub const MBN_MAGIC2: u32 = 0xCD7F_127A;
/// First word of the partition table.
pub const PART_MAGIC1: u32 = 0x55EE_73AA;
/// Second word of the partition table.
pub const PART_MAGIC2: u32 = 0xE35E_BDDB;
/// Table version 3 (at most [`MAX_PARTS_V3`] entries).
pub const VERSION_3: u32 = 3;
/// Table version 4 (at most [`MAX_PARTS_V4`] entries).
pub const VERSION_4: u32 = 4;
/// Entries a version 3 table may hold.
pub const MAX_PARTS_V3: u32 = 16;
/// Entries a version 4 table may hold.
pub const MAX_PARTS_V4: u32 = 128;
/// Bytes of the table header.
pub const TABLE_HEADER_LEN: usize = 16;
/// Bytes of one entry.
pub const ENTRY_LEN: usize = 28;
/// Bytes of an entry's name field.
pub const NAME_LEN: usize = 16;
/// A length meaning "the rest of the device".
pub const GROW: u32 = 0xFFFF_FFFF;
/// How many leading erase blocks the host scans for the MIBIB header.
pub const SCAN_BLOCKS: u32 = 64;

/// Partition names that hold device-unique data (calibration, EFS copies, security data, the
/// table itself): never erased or written.
pub const PROTECTED: [&str; 8] = [
    "mibib", "efs2", "fsg", "fsc", "modemst1", "modemst2", "sec", "persist",
];

/// One entry of the table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Name as stored, e.g. `0:SBL`.
    pub raw_name: String,
    /// First erase block.
    pub offset: u32,
    /// Length in erase blocks, or [`GROW`].
    pub length: u32,
    /// Attribute bytes.
    pub attrs: [u8; 3],
    /// Which flash device (0 for the boot NAND).
    pub which_flash: u8,
}

impl Entry {
    /// The name a manifest uses: the stored name without its `0:` prefix, in lower case.
    #[must_use]
    pub fn name(&self) -> String {
        self.raw_name
            .strip_prefix("0:")
            .unwrap_or(&self.raw_name)
            .to_ascii_lowercase()
    }
}

/// A parsed partition table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Table {
    /// Table version (3 or 4).
    pub version: u32,
    /// Entries in stored order.
    pub entries: Vec<Entry>,
}

/// A partition placed on a device of known size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placed {
    /// Manifest name (see [`Entry::name`]).
    pub name: String,
    /// First erase block.
    pub first_block: u32,
    /// Erase blocks.
    pub blocks: u32,
    /// Whether it must never be erased or written ([`PROTECTED`]).
    pub protected: bool,
}

fn le32(bytes: &[u8], at: usize) -> Result<u32, Error> {
    bytes
        .get(at..at.saturating_add(4))
        .and_then(|s| <[u8; 4]>::try_from(s).ok())
        .map(u32::from_le_bytes)
        .ok_or(Error::Truncated {
            what: "MIBIB field",
            need: at.saturating_add(4),
            have: bytes.len(),
        })
}

/// Whether `page` starts with the MBN header that marks the MIBIB block.
#[must_use]
pub fn is_mibib_header(page: &[u8]) -> bool {
    le32(page, 0).ok() == Some(MBN_MAGIC1) && le32(page, 4).ok() == Some(MBN_MAGIC2)
}

/// The page 0 of a MIBIB block: the MBN header, padded with `0xFF` to `page_size`.
#[must_use]
pub fn header_page(page_size: usize) -> Vec<u8> {
    let mut page = Vec::with_capacity(page_size);
    page.extend_from_slice(&MBN_MAGIC1.to_le_bytes());
    page.extend_from_slice(&MBN_MAGIC2.to_le_bytes());
    page.resize(page_size.max(8), 0xFF);
    page
}

impl Table {
    /// Parses a table from the bytes of page 1 (and following, if the table is longer).
    ///
    /// # Errors
    /// [`Error::PartitionTable`] for bad magic, an unknown version, too many entries or a name
    /// that is not printable ASCII; [`Error::Truncated`] when the entries run past `bytes`.
    pub fn parse(bytes: &[u8]) -> Result<Self, Error> {
        if le32(bytes, 0)? != PART_MAGIC1 || le32(bytes, 4)? != PART_MAGIC2 {
            return Err(Error::PartitionTable("no partition table magic".into()));
        }
        let version = le32(bytes, 8)?;
        let max = match version {
            VERSION_3 => MAX_PARTS_V3,
            VERSION_4 => MAX_PARTS_V4,
            v => {
                return Err(Error::PartitionTable(format!("unknown table version {v}")));
            }
        };
        let count = le32(bytes, 12)?;
        if count > max {
            return Err(Error::PartitionTable(format!(
                "{count} entries, version {version} holds at most {max}"
            )));
        }
        let count = usize::try_from(count).unwrap_or(usize::MAX);
        let need = TABLE_HEADER_LEN.saturating_add(count.saturating_mul(ENTRY_LEN));
        let body = bytes.get(..need).ok_or(Error::Truncated {
            what: "MIBIB partition entries",
            need,
            have: bytes.len(),
        })?;
        let mut entries = Vec::with_capacity(count);
        for i in 0..count {
            let at = TABLE_HEADER_LEN + i * ENTRY_LEN;
            let e = body.get(at..at + ENTRY_LEN).ok_or(Error::Truncated {
                what: "MIBIB partition entry",
                need: at + ENTRY_LEN,
                have: body.len(),
            })?;
            let name_field = e.get(..NAME_LEN).unwrap_or(&[]);
            let name_len = name_field.iter().position(|b| *b == 0).unwrap_or(NAME_LEN);
            let name = name_field.get(..name_len).unwrap_or(&[]);
            if name.is_empty() || !name.iter().all(|b| b.is_ascii_graphic()) {
                return Err(Error::PartitionTable(format!(
                    "entry {i} has an empty or unprintable name"
                )));
            }
            let byte = |k: usize| e.get(k).copied().unwrap_or(0);
            entries.push(Entry {
                raw_name: String::from_utf8_lossy(name).into_owned(),
                offset: le32(e, NAME_LEN)?,
                length: le32(e, NAME_LEN + 4)?,
                attrs: [byte(24), byte(25), byte(26)],
                which_flash: byte(27),
            });
        }
        Ok(Self { version, entries })
    }

    /// The table's bytes (what [`Table::parse`] reads).
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(TABLE_HEADER_LEN + self.entries.len() * ENTRY_LEN);
        for w in [
            PART_MAGIC1,
            PART_MAGIC2,
            self.version,
            u32::try_from(self.entries.len()).unwrap_or(u32::MAX),
        ] {
            out.extend_from_slice(&w.to_le_bytes());
        }
        for e in &self.entries {
            let mut name = [0u8; NAME_LEN];
            for (d, s) in name.iter_mut().zip(e.raw_name.bytes()) {
                *d = s;
            }
            out.extend_from_slice(&name);
            out.extend_from_slice(&e.offset.to_le_bytes());
            out.extend_from_slice(&e.length.to_le_bytes());
            out.extend_from_slice(&e.attrs);
            out.push(e.which_flash);
        }
        out
    }

    /// Places the entries on a device of `total_blocks` erase blocks.
    ///
    /// # Errors
    /// [`Error::PartitionTable`] for a partition outside the device, overlapping partitions,
    /// or two partitions with the same name.
    pub fn place(&self, total_blocks: u32) -> Result<Vec<Placed>, Error> {
        let mut placed: Vec<Placed> = Vec::with_capacity(self.entries.len());
        for e in &self.entries {
            let name = e.name();
            if e.offset >= total_blocks {
                return Err(Error::PartitionTable(format!(
                    "'{name}' starts at block {}, the device has {total_blocks}",
                    e.offset
                )));
            }
            let blocks = if e.length == GROW {
                total_blocks - e.offset
            } else {
                e.length
            };
            if blocks == 0
                || e.offset
                    .checked_add(blocks)
                    .is_none_or(|end| end > total_blocks)
            {
                return Err(Error::PartitionTable(format!(
                    "'{name}' ({blocks} blocks at {}) does not fit {total_blocks} blocks",
                    e.offset
                )));
            }
            if placed.iter().any(|p| p.name == name) {
                return Err(Error::PartitionTable(format!("'{name}' appears twice")));
            }
            if let Some(other) = placed
                .iter()
                .find(|p| e.offset < p.first_block + p.blocks && p.first_block < e.offset + blocks)
            {
                return Err(Error::PartitionTable(format!(
                    "'{name}' overlaps '{}'",
                    other.name
                )));
            }
            placed.push(Placed {
                protected: PROTECTED.contains(&name.as_str()),
                name,
                first_block: e.offset,
                blocks,
            });
        }
        Ok(placed)
    }
}

#[cfg(test)]
mod tests {
    //! Layout from public sources: Linux `drivers/mtd/parsers/qcomsmempart.c`
    //! (`SMEM_FLASH_PART_MAGIC1` 0x55ee73aa, `SMEM_FLASH_PART_MAGIC2` 0xe35ebddb, versions 3/4,
    //! 16 entries for v3, `struct smem_flash_pentry` name[16] + offset + length in blocks +
    //! attr, 0xffffffff growing to the end, the `0:` name prefix) and linux-msm/qdl's NAND
    //! support (`src/gpt.c`: MBN header magics 0xFE569FAC/0xCD7F127A at page 0 of the MIBIB
    //! block, the table at page 1, `attr2`, `attr3`, `which_flash` completing a 28-byte
    //! entry).
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn entry(name: &str, offset: u32, length: u32) -> Entry {
        Entry {
            raw_name: name.into(),
            offset,
            length,
            attrs: [0xFF, 1, 0xFF],
            which_flash: 0,
        }
    }

    #[test]
    fn header_and_entry_bytes_match_the_published_layout() {
        let t = Table {
            version: 4,
            entries: vec![entry("0:SBL", 0, 10)],
        };
        let b = t.encode();
        assert_eq!(
            &b[..16],
            &[
                0xAA, 0x73, 0xEE, 0x55, 0xDB, 0xBD, 0x5E, 0xE3, 4, 0, 0, 0, 1, 0, 0, 0
            ]
        );
        assert_eq!(&b[16..21], b"0:SBL");
        assert_eq!(&b[32..40], &[0, 0, 0, 0, 10, 0, 0, 0]);
        assert_eq!(&b[40..44], &[0xFF, 1, 0xFF, 0]);
        assert_eq!(b.len(), 16 + 28);
        assert_eq!(Table::parse(&b).unwrap(), t);
    }

    #[test]
    fn grow_takes_the_rest_and_names_lose_their_prefix() {
        let t = Table {
            version: 4,
            entries: vec![
                entry("0:SBL", 0, 10),
                entry("0:EFS2", 10, 4),
                entry("0:system", 14, GROW),
            ],
        };
        let p = t.place(100).unwrap();
        assert_eq!(p[2].name, "system");
        assert_eq!(p[2].blocks, 86);
        assert!(p[1].protected && !p[0].protected);
    }

    #[test]
    fn refuses_bad_tables() {
        let good = Table {
            version: 3,
            entries: vec![entry("0:A", 0, 4), entry("0:B", 2, 4)],
        };
        assert!(good.place(100).is_err(), "overlap");
        assert!(
            Table {
                version: 3,
                entries: vec![entry("0:A", 99, 2)]
            }
            .place(100)
            .is_err()
        );
        let mut b = good.encode();
        b[12] = 17; // 17 entries in a v3 table
        assert!(Table::parse(&b).is_err());
        let mut b = good.encode();
        b[8] = 9;
        assert!(Table::parse(&b).is_err());
        let b = good.encode();
        assert!(matches!(
            Table::parse(&b[..40]),
            Err(Error::Truncated { .. })
        ));
        let mut b = good.encode();
        b[16] = 0x07;
        assert!(Table::parse(&b).is_err());
    }
}
