//! Qualcomm vendor bundles: a bounded parser of `rawprogram*.xml` and `patch*.xml`, and the
//! plan that turns a bundle into the images of a veriflash package (`veriflash import-qdl`).
//!
//! A `rawprogram*.xml` is one root element (`<data>`) holding `<program …/>` entries — one per
//! partition image: `SECTOR_SIZE_IN_BYTES`, `file_sector_offset`, `filename`, `label`,
//! `num_partition_sectors`, `physical_partition_number`, `start_sector`, and on NAND
//! `PAGES_PER_BLOCK` (and sometimes `last_sector`) — and, in NAND bundles, `<erase …/>`
//! entries. An entry with an empty `filename` describes a partition without writing it and is
//! skipped. This follows linux-msm/qdl `src/program.c` (`program_load_xml`: the root's element
//! children, `program` and `erase` accepted, any other tag an error; `load_program_tag`: the
//! attributes above, `PAGES_PER_BLOCK`/`last_sector` only on NAND, `file_sector_offset` only
//! off NAND, a missing attribute an error) and bkerler/edl
//! `edlclient/Library/firehose_client.py` (`qfil`: `program` entries with an empty filename
//! skipped, `patch` entries applied only when `filename="DISK"`). `start_sector` is kept as
//! written: vendors put expressions in it (`NUM_DISK_SECTORS-5.`) that edl hands to Python's
//! `eval`; we never evaluate it, because on the MDM9x07 the place of every partition comes
//! from the MIBIB read from the device, by label.
//!
//! A `patch*.xml` (root `<patches>`) holds `<patch …/>` entries: `filename="DISK"` ones are
//! sent to the device as Firehose `patch` commands (qdl `src/firehose.c`
//! `firehose_apply_patch` skips all others), the others edit a host file (a GPT image) before
//! it is written. The MDM9x07 NAND programmer has **no `patch` command**, and a veriflash
//! package signs image bytes as they are, so [`plan_import`] refuses a `DISK` patch and a patch
//! of a file the package would carry, and notes (and leaves out) patches of other files.

use crate::error::Error;
use crate::firehose::{self, Element, XmlLimits};
use crate::geometry::NandGeometry;
use crate::mibib::{PROTECTED, Table};

/// The longest XML file accepted (real bundles' files are a few tens of KiB).
pub const MAX_XML_LEN: usize = 4 << 20;
/// The most entries one file may hold.
pub const MAX_ENTRIES: usize = 4096;
/// The most attributes one entry may carry.
pub const MAX_ATTRIBUTES: usize = 64;
/// The longest attribute value kept (file names, labels, `start_sector` expressions).
pub const MAX_VALUE_LEN: usize = 1024;
/// The largest sector (NAND page) size accepted.
pub const MAX_SECTOR_SIZE: u32 = 64 * 1024;
/// The partition name reserved for the Firehose programmer ([`crate::PROGRAMMER_PARTITION`]).
const PROGRAMMER: &str = crate::session::PROGRAMMER_PARTITION;

const LIMITS: XmlLimits = XmlLimits {
    max_len: MAX_XML_LEN,
    max_elements: MAX_ENTRIES,
    max_attributes: MAX_ATTRIBUTES,
    document: "rawprogram/patch XML file",
    elements: "entries in a rawprogram/patch XML file",
    attributes: "attributes on a rawprogram/patch entry",
};

/// One `<program/>` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgramEntry {
    /// `SECTOR_SIZE_IN_BYTES`: the NAND page size on NAND.
    pub sector_size: u32,
    /// `file_sector_offset`: sectors of the file skipped before the image (0 when absent, as
    /// on NAND, where qdl does not read it).
    pub file_sector_offset: u64,
    /// `filename`, relative to the XML file; empty: nothing is written.
    pub filename: String,
    /// `label`: the partition's name (a MIBIB name on NAND); empty when the entry has none, as
    /// in stock Quectel NAND bundles, which place every entry by `start_sector` alone.
    pub label: String,
    /// `num_partition_sectors`: the partition's size in sectors; 0: unknown (grows to the end).
    pub num_partition_sectors: u64,
    /// `physical_partition_number` (the LUN; 0 on NAND and eMMC user area).
    pub physical_partition_number: u32,
    /// `start_sector`, as written (may be an expression; never evaluated).
    pub start_sector: String,
    /// `PAGES_PER_BLOCK`: present on NAND bundles.
    pub pages_per_block: Option<u32>,
    /// `last_sector`, when given (NAND).
    pub last_sector: Option<u64>,
    /// `sparse="true"`: an Android sparse image.
    pub sparse: bool,
}

/// One `<erase/>` entry (NAND bundles).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EraseEntry {
    /// `label`, when given.
    pub label: Option<String>,
    /// `SECTOR_SIZE_IN_BYTES`.
    pub sector_size: u32,
    /// `num_partition_sectors`.
    pub num_partition_sectors: u64,
    /// `start_sector`, as written.
    pub start_sector: String,
    /// `PAGES_PER_BLOCK`: present on NAND bundles.
    pub pages_per_block: Option<u32>,
}

/// A parsed `rawprogram*.xml`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rawprogram {
    /// Every `<program/>` entry in file order, those with an empty filename included.
    pub programs: Vec<ProgramEntry>,
    /// Every `<erase/>` entry in file order.
    pub erases: Vec<EraseEntry>,
}

/// One `<patch/>` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PatchEntry {
    /// `filename`: `DISK` for the device, otherwise a host file to edit.
    pub filename: String,
    /// `start_sector`, as written.
    pub start_sector: String,
    /// `byte_offset` in that sector.
    pub byte_offset: u64,
    /// `size_in_bytes` of the value.
    pub size_in_bytes: u64,
    /// `value`, as written (may be an expression such as `CRC32(2,4096)`).
    pub value: String,
    /// `what`: the vendor's description.
    pub what: String,
}

fn entry_err(kind: &str, index: usize, label: Option<&str>, reason: String) -> Error {
    let entry = match label {
        Some(l) if !l.is_empty() => format!("{kind} #{} (label '{l}')", index + 1),
        _ => format!("{kind} #{}", index + 1),
    };
    Error::Bundle { entry, reason }
}

/// Reads one entry's attributes with the entry's name in every error.
struct Attrs<'a> {
    element: &'a Element,
    kind: &'static str,
    index: usize,
}

impl Attrs<'_> {
    fn err(&self, reason: String) -> Error {
        entry_err(self.kind, self.index, self.element.get("label"), reason)
    }

    fn string(&self, key: &str) -> Result<Option<String>, Error> {
        match self.element.get(key) {
            Some(v) if v.len() > MAX_VALUE_LEN => Err(self.err(format!(
                "{key} is {} bytes long, the limit is {MAX_VALUE_LEN}",
                v.len()
            ))),
            Some(v) => Ok(Some(v.to_owned())),
            None => Ok(None),
        }
    }

    fn required(&self, key: &str) -> Result<String, Error> {
        self.string(key)?
            .ok_or_else(|| self.err(format!("the {key} attribute is missing")))
    }

    /// A decimal (or `0x` hexadecimal) number; a trailing `.` (Trace32's decimal marker, as
    /// vendors write `6.`) is accepted.
    fn number(&self, key: &str) -> Result<Option<u64>, Error> {
        let Some(v) = self.element.get(key) else {
            return Ok(None);
        };
        let t = v.trim();
        let t = t.strip_suffix('.').unwrap_or(t);
        let parsed = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
            Some(hex) => u64::from_str_radix(hex, 16).ok(),
            None => t.parse::<u64>().ok(),
        };
        parsed
            .map(Some)
            .ok_or_else(|| self.err(format!("{key}=\"{}\" is not a number", clip(v))))
    }

    fn required_number(&self, key: &str) -> Result<u64, Error> {
        self.number(key)?
            .ok_or_else(|| self.err(format!("the {key} attribute is missing")))
    }

    fn u32(&self, key: &str, value: u64) -> Result<u32, Error> {
        u32::try_from(value).map_err(|_| self.err(format!("{key}={value} is too large")))
    }

    fn pages_per_block(&self) -> Result<Option<u32>, Error> {
        match self.number("PAGES_PER_BLOCK")? {
            Some(0) => Err(self.err("PAGES_PER_BLOCK=0".into())),
            Some(n) => Ok(Some(self.u32("PAGES_PER_BLOCK", n)?)),
            None => Ok(None),
        }
    }

    fn sector_size(&self) -> Result<u32, Error> {
        let v = self.required_number("SECTOR_SIZE_IN_BYTES")?;
        if v == 0 || v > u64::from(MAX_SECTOR_SIZE) {
            return Err(self.err(format!(
                "SECTOR_SIZE_IN_BYTES={v} is outside 1..={MAX_SECTOR_SIZE}"
            )));
        }
        self.u32("SECTOR_SIZE_IN_BYTES", v)
    }
}

/// The first 40 characters of an untrusted value, for messages.
fn clip(v: &str) -> String {
    v.chars().take(40).collect()
}

/// Strips a UTF-8 byte-order mark, which Windows tools write.
fn without_bom(bytes: &[u8]) -> &[u8] {
    bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes)
}

/// Parses a `rawprogram*.xml`.
///
/// # Errors
/// [`Error::BadLength`] above [`MAX_XML_LEN`], [`MAX_ENTRIES`] or [`MAX_ATTRIBUTES`];
/// [`Error::MalformedXml`] with the byte offset for XML this reader does not accept;
/// [`Error::Bundle`] naming the entry for a tag other than `program`/`erase`, a missing or
/// non-numeric attribute, a zero or oversized sector size, or a value longer than
/// [`MAX_VALUE_LEN`].
pub fn parse_rawprogram(bytes: &[u8]) -> Result<Rawprogram, Error> {
    let (_, elements) = firehose::parse_xml(without_bom(bytes), None, &LIMITS)?;
    let mut out = Rawprogram::default();
    for (index, element) in elements.iter().enumerate() {
        match element.name.as_str() {
            "program" => {
                let a = Attrs {
                    element,
                    kind: "program",
                    index,
                };
                let sparse = a
                    .string("sparse")?
                    .is_some_and(|v| v.eq_ignore_ascii_case("true"));
                let pages_per_block = a.pages_per_block()?;
                out.programs.push(ProgramEntry {
                    sector_size: a.sector_size()?,
                    file_sector_offset: a.number("file_sector_offset")?.unwrap_or(0),
                    filename: a.required("filename")?,
                    label: a.string("label")?.unwrap_or_default(),
                    num_partition_sectors: a.required_number("num_partition_sectors")?,
                    physical_partition_number: {
                        let n = a.required_number("physical_partition_number")?;
                        a.u32("physical_partition_number", n)?
                    },
                    start_sector: a.required("start_sector")?,
                    pages_per_block,
                    last_sector: a.number("last_sector")?,
                    sparse,
                });
            }
            "erase" => {
                let a = Attrs {
                    element,
                    kind: "erase",
                    index,
                };
                out.erases.push(EraseEntry {
                    label: a.string("label")?,
                    sector_size: a.sector_size()?,
                    num_partition_sectors: a.required_number("num_partition_sectors")?,
                    start_sector: a.required("start_sector")?,
                    pages_per_block: a.pages_per_block()?,
                });
            }
            other => {
                return Err(entry_err(
                    "entry",
                    index,
                    None,
                    format!(
                        "<{}> is not a rawprogram tag (program and erase are)",
                        clip(other)
                    ),
                ));
            }
        }
    }
    Ok(out)
}

/// Parses a `patch*.xml`.
///
/// # Errors
/// As [`parse_rawprogram`]; any tag but `patch` is refused.
pub fn parse_patch(bytes: &[u8]) -> Result<Vec<PatchEntry>, Error> {
    let (_, elements) = firehose::parse_xml(without_bom(bytes), None, &LIMITS)?;
    let mut out = Vec::with_capacity(elements.len());
    for (index, element) in elements.iter().enumerate() {
        if element.name != "patch" {
            return Err(entry_err(
                "entry",
                index,
                None,
                format!("<{}> is not a patch tag", clip(&element.name)),
            ));
        }
        let a = Attrs {
            element,
            kind: "patch",
            index,
        };
        out.push(PatchEntry {
            filename: a.required("filename")?,
            start_sector: a.required("start_sector")?,
            byte_offset: a.required_number("byte_offset")?,
            size_in_bytes: a.required_number("size_in_bytes")?,
            value: a.required("value")?,
            what: a.string("what")?.unwrap_or_default(),
        });
    }
    Ok(out)
}

impl ProgramEntry {
    /// The entry as an element, attributes in the order vendors' tools write them.
    #[must_use]
    pub fn to_element(&self) -> Element {
        let mut e = Element::new("program");
        if let Some(ppb) = self.pages_per_block {
            e = e.attr("PAGES_PER_BLOCK", ppb);
        }
        e = e
            .attr("SECTOR_SIZE_IN_BYTES", self.sector_size)
            .attr("file_sector_offset", self.file_sector_offset)
            .attr("filename", &self.filename);
        if !self.label.is_empty() {
            e = e.attr("label", &self.label);
        }
        if let Some(last) = self.last_sector {
            e = e.attr("last_sector", last);
        }
        e.attr("num_partition_sectors", self.num_partition_sectors)
            .attr("physical_partition_number", self.physical_partition_number)
            .attr("sparse", if self.sparse { "true" } else { "false" })
            .attr("start_sector", &self.start_sector)
    }

    /// The partition's capacity in bytes, when the entry states it (`num_partition_sectors`
    /// above 0).
    #[must_use]
    pub fn capacity(&self) -> Option<u64> {
        (self.num_partition_sectors > 0).then(|| {
            self.num_partition_sectors
                .saturating_mul(u64::from(self.sector_size))
        })
    }
}

/// Writes `programs` as a `rawprogram*.xml` (what [`parse_rawprogram`] reads).
#[must_use]
pub fn encode_rawprogram(programs: &[ProgramEntry]) -> Vec<u8> {
    let elements: Vec<Element> = programs.iter().map(ProgramEntry::to_element).collect();
    firehose::document(&elements)
}

/// The partition name a label stands for: as the MIBIB names partitions on the device
/// ([`crate::mibib::Entry::name`]), without a `0:` prefix, in lower case.
#[must_use]
pub fn partition_name(label: &str) -> String {
    label
        .strip_prefix("0:")
        .unwrap_or(label)
        .to_ascii_lowercase()
}

/// One image of the package an import makes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportImage {
    /// The partition (see [`partition_name`]); also the image's name.
    pub partition: String,
    /// The file, as the XML names it (relative to the XML file).
    pub file: String,
    /// The partition's capacity the bundle states, in bytes (`None`: not stated).
    pub capacity: Option<u64>,
    /// The erase block size the bundle states (`PAGES_PER_BLOCK` × sector size), if any.
    pub block_size: Option<u64>,
}

/// What a bundle becomes: the images in bundle order, and notes for the user about what was
/// left out and why.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImportPlan {
    /// Images to pack, in the order the bundle programs them; with a partition-table step
    /// ([`ImportOptions::partition_table`]), the MIBIB image (partition `mibib`) comes first.
    pub images: Vec<ImportImage>,
    /// The bundle's partition-table image (label `mibib`, or the entry placed on the `mibib`
    /// partition), which lets labels be checked ([`ImportPlan::check_against_table`]).
    pub partition_table_file: Option<String>,
    /// Whether the first image rewrites the device's partition table (the MIBIB step).
    pub rewrites_partition_table: bool,
    /// The NAND geometry every entry agrees on (`SECTOR_SIZE_IN_BYTES`, `PAGES_PER_BLOCK`),
    /// when the bundle states pages per block.
    pub geometry: Option<NandGeometry>,
    /// What was skipped or left out, one line each.
    pub notes: Vec<String>,
}

/// How [`plan_import`] places and filters entries.
#[derive(Clone, Copy, Debug, Default)]
pub struct ImportOptions<'a> {
    /// Partition tables an entry without a label is placed through by its `start_sector`, in
    /// order: the bundle's own MIBIB image first, then the device's (for entries outside the
    /// bundle's table).
    pub tables: &'a [Table],
    /// Import the bundle's MIBIB image as the package's partition-table step instead of
    /// leaving it out.
    pub partition_table: bool,
}

/// Whether `file` is a plain relative path inside the bundle: not absolute, no `..`, no
/// drive letter or backslash games.
fn is_plain_relative(file: &str) -> bool {
    !file.is_empty()
        && !file.starts_with('/')
        && !file.contains('\\')
        && !file.contains(':')
        && !file.contains('\0')
        && file.split('/').all(|part| part != "..")
}

/// The partition an entry without a label lands on: the erase block `start_sector` names
/// must be the first block of a partition of one of `tables` (tried in order), and the entry
/// must cover exactly its blocks (`num_partition_sectors` 0 or any size for a partition that
/// grows to the end). The reason why not, otherwise.
fn locate(
    tables: &[Table],
    start_sector: &str,
    sectors: u64,
    pages_per_block: Option<u32>,
) -> Result<String, String> {
    let t = start_sector.trim();
    let t = t.strip_suffix('.').unwrap_or(t);
    let start: u64 = t.parse().map_err(|_| {
        format!(
            "it has no label and start_sector=\"{}\" is not a number: give it a label",
            clip(start_sector)
        )
    })?;
    let ppb = u64::from(pages_per_block.ok_or_else(|| {
        "it has no label and no PAGES_PER_BLOCK to place it by: give it a label".to_owned()
    })?);
    if tables.is_empty() {
        return Err(
            "it has no label and there is no partition table (the bundle's MIBIB image, or the device's) to place it by"
                .into(),
        );
    }
    if !start.is_multiple_of(ppb) {
        return Err(format!(
            "start_sector {start} is not the first sector of an erase block ({ppb} sectors each), so it lands on no partition"
        ));
    }
    let block = start / ppb;
    for table in tables {
        for e in &table.entries {
            let first = u64::from(e.offset);
            let blocks = u64::from(e.length);
            if first == block {
                if e.length == crate::mibib::GROW
                    || sectors == blocks.saturating_mul(ppb)
                    || sectors == 0
                {
                    return Ok(e.name());
                }
                return Err(format!(
                    "it covers {sectors} sectors at block {block}; partition '{}' there has {} ({blocks} blocks)",
                    e.name(),
                    blocks.saturating_mul(ppb)
                ));
            }
            if e.length != crate::mibib::GROW && block > first && block < first + blocks {
                return Err(format!(
                    "start_sector {start} (block {block}) lands inside partition '{}' (blocks {first}-{}), not at its start",
                    e.name(),
                    first + blocks - 1
                ));
            }
        }
    }
    Err(format!(
        "no partition starts at block {block} (start_sector {start}) in the partition table{}",
        if tables.len() > 1 { "s" } else { "" }
    ))
}

/// Turns a parsed bundle into the images of a package.
///
/// Each entry names its partition by `label`, or — as stock Quectel NAND bundles do, without
/// labels — by `start_sector`, placed through [`ImportOptions::tables`]: the sector must be
/// the first of a partition's first erase block and the entry must cover exactly its blocks
/// (any size for the partition that grows to the end); any other entry is refused. Entries with an empty
/// filename are skipped; partitions veriflash never writes (device-unique data,
/// [`PROTECTED`]) are left out with a note, and so is the MIBIB unless
/// [`ImportOptions::partition_table`] makes it the package's first image. Every entry must
/// agree on the geometry (sector size and pages per block), which the plan keeps. Refused,
/// naming the entry: a label that is `programmer` (reserved for the Firehose programmer), two
/// entries for one partition, a `file_sector_offset` other than 0 or a sparse image (a
/// package carries whole files as they are), a physical partition other than 0 (9x07 NAND
/// has one), a file name that is absolute or leaves the bundle (`..`), an `<erase/>` of a
/// partition the bundle does not program (a package only writes images; programming a
/// partition erases it first), a `DISK` patch (the 9x07 programmer has no `patch` command)
/// and a patch of a file the package would carry (its signed bytes would not be what the
/// vendor meant to write).
///
/// # Errors
/// [`Error::Bundle`] as above.
pub fn plan_import(
    raw: &Rawprogram,
    patches: &[PatchEntry],
    options: &ImportOptions<'_>,
) -> Result<ImportPlan, Error> {
    let mut plan = ImportPlan::default();
    let mut table_image = None;
    let mut sector_size: Option<u32> = None;
    let mut geometry_of = |kind: &str,
                           index: usize,
                           label: Option<&str>,
                           size: u32,
                           ppb: Option<u32>|
     -> Result<(), Error> {
        let bad = |what: String| {
            entry_err(
                kind,
                index,
                label,
                format!("{what}: every entry of a bundle is for one NAND geometry"),
            )
        };
        if sector_size.is_some_and(|s| s != size) {
            return Err(bad(format!(
                "SECTOR_SIZE_IN_BYTES={size}, an earlier entry has {}",
                sector_size.unwrap_or(0)
            )));
        }
        sector_size = Some(size);
        if let Some(ppb) = ppb {
            let g = NandGeometry {
                page_size: size,
                pages_per_block: ppb,
            };
            match plan.geometry {
                Some(prev) if prev != g => {
                    return Err(bad(format!("{g}, an earlier entry has {prev}")));
                }
                _ => plan.geometry = Some(g),
            }
        }
        Ok(())
    };
    for (index, p) in raw.programs.iter().enumerate() {
        let label = (!p.label.is_empty()).then_some(p.label.as_str());
        let err = |reason: String| entry_err("program", index, label, reason);
        geometry_of("program", index, label, p.sector_size, p.pages_per_block)?;
        if p.filename.is_empty() {
            plan.notes.push(format!(
                "skipped '{}': no filename (the bundle does not write it)",
                label.unwrap_or(&p.start_sector)
            ));
            continue;
        }
        let name = match label {
            Some(l) => partition_name(l),
            None => locate(
                options.tables,
                &p.start_sector,
                p.num_partition_sectors,
                p.pages_per_block,
            )
            .map_err(&err)?,
        };
        let shown = label.map_or_else(|| name.clone(), str::to_owned);
        if !is_plain_relative(&p.filename) {
            return Err(err(format!(
                "filename '{}' is not a relative path inside the bundle",
                clip(&p.filename)
            )));
        }
        if name == PROGRAMMER {
            return Err(err(format!(
                "the label '{PROGRAMMER}' is reserved for the Firehose programmer (give it with --programmer)"
            )));
        }
        if p.physical_partition_number != 0 {
            return Err(err(format!(
                "physical_partition_number {}: MDM9x07 NAND has one physical partition (0)",
                p.physical_partition_number
            )));
        }
        if p.file_sector_offset != 0 {
            return Err(err(format!(
                "file_sector_offset {}: only whole files are imported; cut the image out of '{}' first",
                p.file_sector_offset, p.filename
            )));
        }
        if p.sparse {
            return Err(err(
                "sparse images are not supported on MDM9x07 NAND; unsparse it first".into(),
            ));
        }
        if plan.images.iter().any(|i| i.partition == name)
            || (name == "mibib" && plan.partition_table_file.is_some())
        {
            return Err(err(format!(
                "a second entry for partition '{name}': a package writes each partition once"
            )));
        }
        let image = ImportImage {
            partition: name.clone(),
            file: p.filename.clone(),
            capacity: p.capacity(),
            block_size: p
                .pages_per_block
                .map(|ppb| u64::from(ppb) * u64::from(p.sector_size)),
        };
        if name == "mibib" {
            plan.partition_table_file = Some(p.filename.clone());
            if options.partition_table {
                table_image = Some(image);
                continue;
            }
            plan.notes.push(format!(
                "left out '{shown}' ({}): the partition table is rewritten only when asked (--with-partition-table)",
                p.filename
            ));
            continue;
        }
        if PROTECTED.contains(&name.as_str()) {
            plan.notes.push(format!(
                "left out '{shown}' ({}): veriflash never writes device-unique data; the device keeps its own",
                p.filename
            ));
            continue;
        }
        plan.images.push(image);
    }
    if let Some(image) = table_image {
        plan.images.insert(0, image);
        plan.rewrites_partition_table = true;
    }
    for (index, e) in raw.erases.iter().enumerate() {
        let label = e.label.as_deref().filter(|l| !l.is_empty());
        geometry_of("erase", index, label, e.sector_size, e.pages_per_block)?;
        let name = match label {
            Some(l) => partition_name(l),
            None => locate(
                options.tables,
                &e.start_sector,
                e.num_partition_sectors,
                e.pages_per_block,
            )
            .map_err(|reason| entry_err("erase", index, None, reason))?,
        };
        if plan.images.iter().any(|i| i.partition == name) {
            plan.notes.push(format!(
                "erase of '{name}' is implied: every partition is erased before it is programmed"
            ));
            continue;
        }
        let hint = if name == "mibib" {
            " (import the partition table with --with-partition-table)"
        } else {
            ""
        };
        return Err(entry_err(
            "erase",
            index,
            label,
            format!(
                "an erase of '{name}', which the bundle does not program, cannot be expressed in a package (a package only writes images){hint}"
            ),
        ));
    }
    for (index, patch) in patches.iter().enumerate() {
        let err = |reason: String| entry_err("patch", index, None, reason);
        if patch.filename == "DISK" {
            return Err(err(format!(
                "a patch of the device ('{}'): the MDM9x07 NAND programmer has no 'patch' command, so it cannot be applied",
                clip(&patch.what)
            )));
        }
        if let Some(image) = plan.images.iter().find(|i| i.file == patch.filename) {
            return Err(err(format!(
                "it edits '{}', which would be flashed to '{}': a package carries image bytes as signed; apply the patch to the file first",
                patch.filename, image.partition
            )));
        }
        plan.notes.push(format!(
            "ignored a patch of '{}', which is not imported",
            clip(&patch.filename)
        ));
    }
    Ok(plan)
}

/// The bundle's own partition table: the first file a `<program/>` entry names whose start
/// (or whose second page, after the MBN header page) is a MIBIB partition table. `head`
/// returns the first bytes of a file (`None`: unreadable, absent, or too large to be a
/// MIBIB image); entries whose filename is not a plain relative path are not opened.
pub fn find_bundle_table(
    raw: &Rawprogram,
    head: &mut dyn FnMut(&str) -> Option<Vec<u8>>,
) -> Option<(String, Table)> {
    raw.programs
        .iter()
        .filter(|p| is_plain_relative(&p.filename))
        .find_map(|p| {
            let bytes = head(&p.filename)?;
            find_table(&bytes, p.sector_size as usize).map(|t| (p.filename.clone(), t))
        })
}

/// Why an image does not fit the bundle's own partition table.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TableMismatch {
    /// The table has no partition of that name.
    UnknownPartition {
        /// The image's partition.
        partition: String,
        /// The partitions the table has.
        known: Vec<String>,
    },
    /// The image is larger than the blocks the table gives its partition.
    TooLarge {
        /// The image's partition.
        partition: String,
        /// The image's size in bytes.
        size: u64,
        /// The partition's size in bytes.
        capacity: u64,
    },
}

impl std::fmt::Display for TableMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::UnknownPartition { partition, known } => write!(
                f,
                "the bundle's partition table has no '{partition}' (it has {})",
                known.join(", ")
            ),
            Self::TooLarge {
                partition,
                size,
                capacity,
            } => write!(
                f,
                "image '{partition}': {size} bytes do not fit the {capacity} bytes the partition table gives it"
            ),
        }
    }
}

impl From<TableMismatch> for Error {
    fn from(m: TableMismatch) -> Self {
        let partition = match &m {
            TableMismatch::UnknownPartition { partition, .. }
            | TableMismatch::TooLarge { partition, .. } => partition.clone(),
        };
        Self::Bundle {
            entry: format!("image '{partition}'"),
            reason: m.to_string(),
        }
    }
}

impl ImportPlan {
    /// Checks every image against a partition table (the bundle's MIBIB image, parsed): its
    /// partition must be there, and its size (from `sizes`, by partition) must fit the blocks
    /// the table gives it (a partition that grows to the end of the device is checked on the
    /// device). Returns the first mismatch.
    #[must_use]
    pub fn table_mismatch(&self, table: &Table, sizes: &[(String, u64)]) -> Option<TableMismatch> {
        for image in &self.images {
            let Some(entry) = table.entries.iter().find(|e| e.name() == image.partition) else {
                return Some(TableMismatch::UnknownPartition {
                    partition: image.partition.clone(),
                    known: table
                        .entries
                        .iter()
                        .map(crate::mibib::Entry::name)
                        .collect(),
                });
            };
            let size = sizes
                .iter()
                .find(|(p, _)| *p == image.partition)
                .map(|(_, s)| *s);
            if let (Some(block), Some(size)) = (image.block_size, size)
                && entry.length != crate::mibib::GROW
            {
                let capacity = u64::from(entry.length).saturating_mul(block);
                if size > capacity {
                    return Some(TableMismatch::TooLarge {
                        partition: image.partition.clone(),
                        size,
                        capacity,
                    });
                }
            }
        }
        None
    }

    /// [`ImportPlan::table_mismatch`] as an error.
    ///
    /// # Errors
    /// [`Error::Bundle`] naming the image for an unknown partition or an image too large.
    pub fn check_against_table(&self, table: &Table, sizes: &[(String, u64)]) -> Result<(), Error> {
        self.table_mismatch(table, sizes)
            .map_or(Ok(()), |m| Err(m.into()))
    }
}

/// Finds the partition table in a MIBIB image (`partition.mbn`): at its start, or after the
/// MBN header page (one sector of `sector_size`), as the MIBIB block holds it.
#[must_use]
pub fn find_table(bytes: &[u8], sector_size: usize) -> Option<Table> {
    [0, sector_size]
        .iter()
        .filter_map(|at| bytes.get(*at..))
        .find_map(|b| Table::parse(b).ok())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;

    /// Shaped like an MDM9x07 NAND bundle's rawprogram (qdl `program.c` reads these
    /// attributes; NAND entries carry PAGES_PER_BLOCK), with a comment, an unwritten partition
    /// and a long-hand element.
    const NAND: &str = r#"<?xml version="1.0" ?>
<data>
  <!--NOTE: This is an ** Autogenerated file **-->
  <program PAGES_PER_BLOCK="64" SECTOR_SIZE_IN_BYTES="2048" filename="partition.mbn" label="0:MIBIB" num_partition_sectors="128" physical_partition_number="0" start_sector="640"/>
  <program PAGES_PER_BLOCK="64" SECTOR_SIZE_IN_BYTES="2048" file_sector_offset="0" filename="sbl1.mbn" label="sbl" num_partition_sectors="640" physical_partition_number="0" start_sector="0" />
  <program PAGES_PER_BLOCK="64" SECTOR_SIZE_IN_BYTES="2048" filename="" label="efs2" num_partition_sectors="1792" physical_partition_number="0" start_sector="768"/>
  <program PAGES_PER_BLOCK="64" SECTOR_SIZE_IN_BYTES="2048" filename="tz.mbn" label="tz" num_partition_sectors="384" physical_partition_number="0" start_sector="2560" last_sector="2943"></program>
  <program PAGES_PER_BLOCK="64" SECTOR_SIZE_IN_BYTES="2048" filename="images/system.ubi" label="system" num_partition_sectors="0" physical_partition_number="0" start_sector="8320" sparse="false"/>
</data>
"#;

    #[test]
    fn parses_a_nand_bundle_and_plans_its_images() {
        let raw = parse_rawprogram(NAND.as_bytes()).unwrap();
        assert_eq!(raw.programs.len(), 5);
        assert_eq!(raw.programs[1].pages_per_block, Some(64));
        assert_eq!(raw.programs[3].last_sector, Some(2943));
        assert_eq!(raw.programs[4].capacity(), None, "num_partition_sectors=0");
        let plan = plan_import(&raw, &[], &ImportOptions::default()).unwrap();
        let parts: Vec<&str> = plan.images.iter().map(|i| i.partition.as_str()).collect();
        assert_eq!(parts, ["sbl", "tz", "system"]);
        assert_eq!(plan.images[0].capacity, Some(640 * 2048));
        assert_eq!(plan.images[0].block_size, Some(64 * 2048));
        assert_eq!(plan.partition_table_file.as_deref(), Some("partition.mbn"));
        assert!(plan.notes.iter().any(|n| n.contains("skipped 'efs2'")));
        assert!(plan.notes.iter().any(|n| n.contains("left out '0:MIBIB'")));
    }

    #[test]
    fn reads_a_bom_hex_numbers_and_trace32_decimals() {
        let xml = "\u{feff}<data><program SECTOR_SIZE_IN_BYTES=\"0x800\" filename=\"a\" label=\"a\" num_partition_sectors=\"6.\" physical_partition_number=\"0\" start_sector=\"NUM_DISK_SECTORS-5.\"/></data>";
        let raw = parse_rawprogram(xml.as_bytes()).unwrap();
        assert_eq!(raw.programs[0].sector_size, 2048);
        assert_eq!(raw.programs[0].num_partition_sectors, 6);
        assert_eq!(raw.programs[0].start_sector, "NUM_DISK_SECTORS-5.");
    }

    #[test]
    fn refuses_entries_it_cannot_import_naming_them() {
        let base = r#"SECTOR_SIZE_IN_BYTES="2048" label="boot" num_partition_sectors="8" physical_partition_number="0" start_sector="0""#;
        for (attrs, want) in [
            (
                r#"filename="../boot.img" "#,
                "not a relative path inside the bundle",
            ),
            (r#"filename="/etc/boot.img" "#, "not a relative path"),
            (
                r#"filename="boot.img" file_sector_offset="3" "#,
                "only whole files",
            ),
            (r#"filename="boot.img" sparse="true" "#, "sparse"),
        ] {
            let xml = format!("<data><program {attrs}{base}/></data>");
            let raw = parse_rawprogram(xml.as_bytes()).unwrap();
            let err = plan_import(&raw, &[], &ImportOptions::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains("program #1 (label 'boot')"), "{err}");
            assert!(err.contains(want), "{err}");
        }
        let missing = "<data><program SECTOR_SIZE_IN_BYTES=\"2048\" filename=\"a\" label=\"a\" physical_partition_number=\"0\" start_sector=\"0\"/></data>";
        let err = parse_rawprogram(missing.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("num_partition_sectors attribute is missing"),
            "{err}"
        );
        let unknown = "<data><read SECTOR_SIZE_IN_BYTES=\"2048\"/></data>";
        assert!(matches!(
            parse_rawprogram(unknown.as_bytes()),
            Err(Error::Bundle { .. })
        ));
        for bad in ["<data><program a=1/></data>", "<data>", "", "<data></dat>"] {
            assert!(matches!(
                parse_rawprogram(bad.as_bytes()),
                Err(Error::MalformedXml { .. })
            ));
        }
    }

    #[test]
    fn patches_for_the_device_or_a_flashed_file_are_refused_others_noted() {
        let raw = parse_rawprogram(NAND.as_bytes()).unwrap();
        let patch = |file: &str| {
            format!(
                r#"<?xml version="1.0" ?><patches><patch SECTOR_SIZE_IN_BYTES="2048" byte_offset="48" filename="{file}" physical_partition_number="0" size_in_bytes="8" start_sector="1" value="NUM_DISK_SECTORS-6." what="Update LastUseableLBA."/></patches>"#
            )
        };
        let disk = parse_patch(patch("DISK").as_bytes()).unwrap();
        let err = plan_import(&raw, &disk, &ImportOptions::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("no 'patch' command"), "{err}");
        let flashed = parse_patch(patch("tz.mbn").as_bytes()).unwrap();
        let err = plan_import(&raw, &flashed, &ImportOptions::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("would be flashed to 'tz'"), "{err}");
        let other = parse_patch(patch("gpt_main0.bin").as_bytes()).unwrap();
        let plan = plan_import(&raw, &other, &ImportOptions::default()).unwrap();
        assert!(plan.notes.iter().any(|n| n.contains("gpt_main0.bin")));
        assert!(parse_patch(b"<patches></patches>").unwrap().is_empty());
    }

    #[test]
    fn erase_of_an_unprogrammed_partition_is_refused() {
        let xml = NAND.replace(
            "</data>",
            r#"<erase PAGES_PER_BLOCK="64" SECTOR_SIZE_IN_BYTES="2048" label="modem" num_partition_sectors="10" physical_partition_number="0" start_sector="0"/></data>"#,
        );
        let raw = parse_rawprogram(xml.as_bytes()).unwrap();
        let err = plan_import(&raw, &[], &ImportOptions::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("erase #"), "{err}");
        let ok = NAND.replace(
            "</data>",
            r#"<erase SECTOR_SIZE_IN_BYTES="2048" label="tz" num_partition_sectors="10" start_sector="0"/></data>"#,
        );
        assert!(
            plan_import(
                &parse_rawprogram(ok.as_bytes()).unwrap(),
                &[],
                &ImportOptions::default()
            )
            .is_ok()
        );
    }

    #[test]
    fn labels_and_sizes_are_checked_against_the_bundles_mibib() {
        use crate::mibib::Entry;
        let raw = parse_rawprogram(NAND.as_bytes()).unwrap();
        let plan = plan_import(&raw, &[], &ImportOptions::default()).unwrap();
        let entry = |n: &str, offset, length| Entry {
            raw_name: n.into(),
            offset,
            length,
            attrs: [0xFF, 1, 0xFF],
            which_flash: 0,
        };
        let table = Table {
            version: 4,
            entries: vec![
                entry("0:SBL", 0, 10),
                entry("0:TZ", 40, 6),
                entry("0:SYSTEM", 130, crate::mibib::GROW),
            ],
        };
        let mut file = crate::mibib::header_page(2048);
        file.extend(table.encode());
        let found = find_table(&file, 2048).unwrap();
        assert_eq!(found, table);
        let fits = [("tz".to_owned(), 6 * 64 * 2048)];
        plan.check_against_table(&found, &fits).unwrap();
        let big = [("tz".to_owned(), 6 * 64 * 2048 + 1)];
        let err = plan.check_against_table(&found, &big).unwrap_err();
        assert!(err.to_string().contains("do not fit"), "{err}");
        let mut no_tz = table.clone();
        no_tz.entries.remove(1);
        let err = plan.check_against_table(&no_tz, &[]).unwrap_err();
        assert!(err.to_string().contains("has no 'tz'"), "{err}");
    }
}
