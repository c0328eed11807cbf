//! A reference device backed by one file, so the whole pipeline runs for real without hardware.
//!
//! It behaves like a small NAND-style A/B device, not like a flat file:
//!
//! * storage is written in whole `write_unit`s (the last one padded with `0xFF`), and a unit
//!   must be erased (a whole `erase_block` at a time) before it is programmed again;
//! * every updatable partition has A and B copies; an install erases and writes the inactive
//!   copy and never touches the one that boots;
//! * the boot-control state (active slot, anti-rollback floor, installed version and digests,
//!   the install journal, the last result) lives in two alternating records, each with a
//!   sequence number and a SHA-256; a record torn by a power cut fails its hash and the other
//!   one is used. Commit is one record write, so it is atomic;
//! * a power cut can be injected after any number of storage operations (erase, program,
//!   record write), leaving a torn write behind as real flash would;
//! * a session claims the file with an exclusive OS lock (`flock`) for its whole life, so a
//!   second session — another thread or another process — is refused with
//!   [`PluginError::Busy`] before it reads or writes anything; every state-record write first
//!   re-reads the record it replaces, so no session commits over a state it did not start from
//!   (a file shared without the lock, over a network file system that ignores it, still
//!   cannot interleave two installs silently).
//!
//! File layout: `[0, 4 KiB)` superblock (magic, then the layout as `key=value` lines),
//! `[4 KiB, 8 KiB)` and `[8 KiB, 12 KiB)` state records, `[16 KiB, 40 KiB)` and
//! `[40 KiB, 64 KiB)` the two areas for the trust-anchor set the device holds (the record names
//! the one in use, with its length and SHA-256; a new set is written to the other area before
//! the commit's record write switches to it), then from 64 KiB each partition (A then B copy
//! for slotted ones), each copy rounded up to whole erase blocks.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use veriflash_hash::{Digest, Sha256, sha256};

use crate::readback::Readback;
use crate::units::Units;
use crate::{
    Chunk, DeviceInfo, DeviceStatus, FlashSession, InstallPlan, InstalledImage, LastResult,
    PartitionInfo, Plugin, PluginError, Slot, StorageGeometry,
};

const SUPERBLOCK_MAGIC: &[u8; 8] = b"VFDEVICE";
const RECORD_MAGIC: &[u8; 8] = b"VFSTATE1";
const BLOCK: u64 = 4096;
const RECORD_OFFSETS: [u64; 2] = [BLOCK, 2 * BLOCK];
const DATA_START: u64 = 64 * 1024;
/// Where the two trust-anchor areas start; each holds at most [`MAX_ANCHORS_LEN`] bytes.
const ANCHOR_AREAS: [u64; 2] = [16 * 1024, 40 * 1024];
/// The largest trust-anchor set a file device holds.
const MAX_ANCHORS_LEN: usize = 24 * 1024;
/// Largest layout text or state body that fits its 4 KiB block.
const MAX_TEXT: usize = 4096 - 8 - 8 - 4 - 32;
/// At most this many partitions: the layout must fit its block anyway.
const MAX_PARTITIONS: usize = 32;
/// Largest partition (each copy): keeps offsets far from overflow.
const MAX_PARTITION_SIZE: u64 = 1 << 40;

/// How an injected power cut hits the operation it lands on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cut {
    /// Only the first half of the operation's bytes reach the storage.
    Torn,
    /// The operation completes, then the power fails.
    After,
}

/// The plugin that opens `file:PATH` targets.
#[derive(Clone, Copy, Debug, Default)]
pub struct FilePlugin;

impl Plugin for FilePlugin {
    fn name(&self) -> &'static str {
        "file"
    }

    fn target_forms(&self) -> Vec<String> {
        vec!["file:PATH".to_owned()]
    }

    fn open(&self, target: &str) -> Result<Box<dyn FlashSession>, PluginError> {
        Ok(Box::new(FileDevice::open(Path::new(target))?))
    }
}

/// What a file-backed device is: identity, geometry and partitions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Product identifier.
    pub product: String,
    /// Chipset identifier.
    pub chipset: String,
    /// Hardware revision.
    pub hardware_revision: String,
    /// Erase and write units.
    pub geometry: StorageGeometry,
    /// Partitions, in storage order.
    pub partitions: Vec<PartitionInfo>,
}

fn bad(message: impl Into<String>) -> PluginError {
    PluginError::Device(message.into())
}

fn valid_word(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && b != b',' && b != b'=')
}

impl Layout {
    /// Checks that the layout is usable: names are plain words and unique, units are powers of
    /// two with the erase block a multiple of the write unit, sizes are within limits.
    ///
    /// # Errors
    /// [`PluginError::Unsupported`] naming the first problem.
    pub fn validate(&self) -> Result<(), PluginError> {
        let unsupported = |m: String| Err(PluginError::Unsupported(m));
        for (what, value) in [
            ("product", &self.product),
            ("chipset", &self.chipset),
            ("hardware_revision", &self.hardware_revision),
        ] {
            if !valid_word(value) {
                return unsupported(format!(
                    "{what} '{value}' must be 1-128 printable characters without spaces, ',' or '='"
                ));
            }
        }
        let StorageGeometry {
            erase_block,
            write_unit,
        } = self.geometry;
        if !write_unit.is_power_of_two()
            || !erase_block.is_power_of_two()
            || write_unit < 512
            || erase_block < write_unit
            || erase_block > (16 << 20)
        {
            return unsupported(format!(
                "geometry: write unit {write_unit} and erase block {erase_block} must be powers of two, 512 <= write unit <= erase block <= 16 MiB"
            ));
        }
        if self.partitions.is_empty() || self.partitions.len() > MAX_PARTITIONS {
            return unsupported(format!("a device needs 1 to {MAX_PARTITIONS} partitions"));
        }
        let mut names = BTreeSet::new();
        for p in &self.partitions {
            if !valid_word(&p.name) || !names.insert(p.name.as_str()) {
                return unsupported(format!(
                    "partition name '{}' is invalid or repeated",
                    p.name
                ));
            }
            if p.slotted == p.protected {
                return unsupported(format!(
                    "partition '{}': a file-backed device's partitions are either A/B or protected",
                    p.name
                ));
            }
            if p.size == 0 || p.size > MAX_PARTITION_SIZE {
                return unsupported(format!(
                    "partition '{}' size {} is out of range",
                    p.name, p.size
                ));
            }
        }
        if self.to_text().len() > MAX_TEXT {
            return unsupported("the layout is too large to store".to_owned());
        }
        Ok(())
    }

    fn to_text(&self) -> String {
        let mut text = format!(
            "product={}\nchipset={}\nhardware_revision={}\nerase_block={}\nwrite_unit={}\n",
            self.product,
            self.chipset,
            self.hardware_revision,
            self.geometry.erase_block,
            self.geometry.write_unit
        );
        for p in &self.partitions {
            let _ = writeln!(
                text,
                "partition={},{},{}",
                p.name,
                p.size,
                if p.slotted { "ab" } else { "protected" }
            );
        }
        text
    }

    fn from_text(text: &str) -> Result<Self, PluginError> {
        let mut layout = Self {
            product: String::new(),
            chipset: String::new(),
            hardware_revision: String::new(),
            geometry: StorageGeometry {
                erase_block: 0,
                write_unit: 0,
            },
            partitions: Vec::new(),
        };
        for line in text.lines() {
            let (key, value) = line
                .split_once('=')
                .ok_or_else(|| bad(format!("superblock line '{line}'")))?;
            let number = |v: &str| {
                v.parse::<u32>()
                    .map_err(|_| bad(format!("superblock {key}='{v}'")))
            };
            match key {
                "product" => layout.product = value.to_owned(),
                "chipset" => layout.chipset = value.to_owned(),
                "hardware_revision" => layout.hardware_revision = value.to_owned(),
                "erase_block" => layout.geometry.erase_block = number(value)?,
                "write_unit" => layout.geometry.write_unit = number(value)?,
                "partition" => {
                    let mut parts = value.split(',');
                    let (Some(name), Some(size), Some(kind), None) =
                        (parts.next(), parts.next(), parts.next(), parts.next())
                    else {
                        return Err(bad(format!("superblock partition '{value}'")));
                    };
                    if layout.partitions.len() >= MAX_PARTITIONS {
                        return Err(bad("superblock lists too many partitions"));
                    }
                    layout.partitions.push(PartitionInfo {
                        name: name.to_owned(),
                        size: size
                            .parse()
                            .map_err(|_| bad(format!("partition size '{size}'")))?,
                        slotted: kind == "ab",
                        protected: kind != "ab",
                    });
                }
                _ => return Err(bad(format!("superblock key '{key}'"))),
            }
        }
        layout
            .validate()
            .map_err(|e| bad(format!("stored layout: {e}")))?;
        Ok(layout)
    }

    /// Bytes one copy of `p` occupies: its size rounded up to whole erase blocks.
    fn copy_len(&self, p: &PartitionInfo) -> u64 {
        let block = u64::from(self.geometry.erase_block);
        p.size.div_ceil(block) * block
    }

    /// File offset of partition `name`'s copy in `slot` (single partitions have one copy).
    pub fn offset_of(&self, name: &str, slot: Slot) -> Option<u64> {
        let mut at = DATA_START;
        for p in &self.partitions {
            let len = self.copy_len(p);
            if p.name == name {
                return Some(if p.slotted && slot == Slot::B {
                    at + len
                } else {
                    at
                });
            }
            at += if p.slotted { 2 * len } else { len };
        }
        None
    }

    /// Total file size.
    fn file_len(&self) -> u64 {
        DATA_START
            + self
                .partitions
                .iter()
                .map(|p| self.copy_len(p) * if p.slotted { 2 } else { 1 })
                .sum::<u64>()
    }
}

/// An image the state says a slot holds.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Installed {
    partition: String,
    size: u64,
    digest: Digest,
}

/// The boot-control record.
#[derive(Clone, Debug, PartialEq, Eq)]
struct State {
    seq: u64,
    active: Slot,
    floor: u64,
    version: Option<String>,
    /// What slot A and slot B hold, as committed.
    images: [Vec<Installed>; 2],
    /// Journal: an install that began and has not committed or aborted.
    pending: Option<(Digest, Slot)>,
    /// The trust-anchor set held: which area, its length and SHA-256.
    anchors: Option<(usize, usize, Digest)>,
    last: Option<LastResult>,
}

fn slot_index(slot: Slot) -> usize {
    match slot {
        Slot::A => 0,
        Slot::B => 1,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn unhex32(s: &str) -> Option<Digest> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

impl State {
    fn fresh() -> Self {
        Self {
            seq: 0,
            active: Slot::A,
            floor: 0,
            version: None,
            images: [Vec::new(), Vec::new()],
            pending: None,
            last: None,
            anchors: None,
        }
    }

    fn to_body(&self) -> String {
        let mut body = format!("active={}\nfloor={}\n", self.active, self.floor);
        if let Some(v) = &self.version {
            let _ = writeln!(body, "version={v}");
        }
        for slot in [Slot::A, Slot::B] {
            for i in &self.images[slot_index(slot)] {
                let _ = writeln!(
                    body,
                    "image.{slot}={},{},{}",
                    i.partition,
                    i.size,
                    hex(&i.digest)
                );
            }
        }
        if let Some((area, len, digest)) = &self.anchors {
            let _ = writeln!(body, "anchors={area},{len},{}", hex(digest));
        }
        if let Some((id, slot)) = &self.pending {
            let _ = writeln!(body, "pending={},{slot}", hex(id));
        }
        if let Some(last) = &self.last {
            let message: String = last
                .message
                .chars()
                .filter(|c| !c.is_control())
                .take(512)
                .collect();
            let _ = writeln!(body, "last={},{message}", last.code);
        }
        body
    }

    fn from_body(seq: u64, body: &str) -> Option<Self> {
        let mut state = Self {
            seq,
            ..Self::fresh()
        };
        let slot = |s: &str| match s {
            "a" => Some(Slot::A),
            "b" => Some(Slot::B),
            _ => None,
        };
        for line in body.lines() {
            let (key, value) = line.split_once('=')?;
            match key {
                "active" => state.active = slot(value)?,
                "floor" => state.floor = value.parse().ok()?,
                "version" => state.version = Some(value.to_owned()),
                "image.a" | "image.b" => {
                    let mut parts = value.split(',');
                    let installed = Installed {
                        partition: parts.next()?.to_owned(),
                        size: parts.next()?.parse().ok()?,
                        digest: unhex32(parts.next()?)?,
                    };
                    let which = slot(key.strip_prefix("image.")?)?;
                    state.images[slot_index(which)].push(installed);
                }
                "anchors" => {
                    let mut parts = value.split(',');
                    let area: usize = parts.next()?.parse().ok()?;
                    let len: usize = parts.next()?.parse().ok()?;
                    if area >= ANCHOR_AREAS.len() || len > MAX_ANCHORS_LEN {
                        return None;
                    }
                    state.anchors = Some((area, len, unhex32(parts.next()?)?));
                }
                "pending" => {
                    let (id, s) = value.split_once(',')?;
                    state.pending = Some((unhex32(id)?, slot(s)?));
                }
                "last" => {
                    let (code, message) = value.split_once(',')?;
                    state.last = Some(LastResult {
                        code: code.parse().ok()?,
                        message: message.to_owned(),
                    });
                }
                _ => return None,
            }
        }
        Some(state)
    }
}

/// A test's hook called before each storage operation with its number (1-based, since open).
struct OperationHook(Box<dyn FnMut(u64) + Send>);

impl std::fmt::Debug for OperationHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OperationHook")
    }
}

/// A file-backed device: one open, exclusively locked file, its layout and its current state.
#[derive(Debug)]
pub struct FileDevice {
    path: PathBuf,
    file: File,
    layout: Layout,
    state: State,
    /// Storage operations performed since open (erase block, program, record write).
    operations: u64,
    /// Inject a power cut at this operation number (1-based): it is torn, and every later
    /// operation fails.
    power_cut_at: Option<(u64, Cut)>,
    powered: bool,
    /// Write units programmed since their last erase, as unit indexes in the file. Unknown after
    /// reopening, which is why `begin` erases what it will write.
    programmed: Units,
    plan: Option<InstallPlan>,
    hook: Option<OperationHook>,
    /// This device's identity, made when it was created (`None` for a file made before ids).
    id: Option<String>,
    /// The read-back of the image being written, running beside its writes.
    readback: Option<Readback>,
}

/// The error for an I/O failure on the device file at `path`.
fn storage(path: &Path, source: std::io::Error) -> PluginError {
    PluginError::Storage {
        path: path.to_path_buf(),
        source,
    }
}

/// The error for a file at `path` that is not a device file, `head` being its first bytes:
/// people hand the layout description to `--target` (both are "the device" to them), so a
/// layout is named as one, with the command that makes a device from it.
fn not_a_device(path: &Path, head: &[u8]) -> PluginError {
    let looks_like_layout = std::str::from_utf8(head)
        .is_ok_and(|text| text.contains("[[partition]]") || text.contains("hardware_revision"));
    if looks_like_layout {
        PluginError::NotADevice(format!(
            "{} is not a device file: it looks like a layout description (TOML)",
            path.display()
        ))
        .with_remedy(format!(
            "Make a device from it with `veriflash device init --layout {} file:device.img`, then give --target file:device.img.",
            path.display()
        ))
    } else {
        PluginError::NotADevice(format!(
            "{} is not a veriflash device file (no device superblock)",
            path.display()
        ))
        .with_remedy(
            "Name the file `veriflash device init` made, or make one with `veriflash device init --layout LAYOUT.toml file:PATH`.",
        )
    }
}

/// An empty buffer with room for exactly `len` bytes, or an out-of-memory error (which the
/// pipeline reports as this computer's shortage, not the device's or the package's fault).
fn buffer(path: &Path, len: u64) -> Result<Vec<u8>, PluginError> {
    let mut v = Vec::new();
    usize::try_from(len)
        .ok()
        .and_then(|len| v.try_reserve_exact(len).ok())
        .ok_or_else(|| storage(path, std::io::ErrorKind::OutOfMemory.into()))?;
    Ok(v)
}

/// Takes the exclusive lock that makes `file` this session's alone; refuses if another session
/// (in this process or any other) holds it ([`crate::flock::lock_exclusive`]: after a moment's
/// patience, for a lock a forked child still holds).
fn claim(file: &File, path: &Path) -> Result<(), PluginError> {
    match crate::flock::lock_exclusive(file) {
        Ok(true) => Ok(()),
        Ok(false) => Err(PluginError::Busy(format!(
            "{} is held by another session (another veriflash run, or this program's own)",
            path.display()
        ))),
        Err(e) => Err(storage(path, e)),
    }
}

impl FileDevice {
    /// Creates a new device file at `path` with `layout`: superblock, a fresh state (slot A
    /// active, floor 0, nothing installed) and erased-size storage. Refuses to replace a file.
    ///
    /// # Errors
    /// When the layout is invalid or the file cannot be created.
    pub fn create(path: &Path, layout: &Layout) -> Result<Self, PluginError> {
        layout.validate()?;
        // Built under a temporary name beside `path` and linked into place only when every
        // block is written: a full disk or a crash leaves no half-made device behind to block
        // the next `create` or confuse `status`.
        let name = path
            .file_name()
            .ok_or_else(|| PluginError::Unsupported(format!("{} names no file", path.display())))?;
        let mut temporary = name.to_os_string();
        temporary.push(format!(".{}.creating", std::process::id()));
        let temporary = path.with_file_name(temporary);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&temporary)
            .map_err(|e| storage(&temporary, e))?;
        let made = Self::fill(file, &temporary, layout).and_then(|device| {
            publish(&temporary, path)?;
            Ok(device)
        });
        let _ = std::fs::remove_file(&temporary);
        let mut device = made?;
        device.path = path.to_path_buf();
        Ok(device)
    }

    /// Writes a new device into `file` (locked first, so it is claimed before it has a name):
    /// superblock, both state records' blocks, the fresh state and erased storage, every
    /// block written out so that no later write can find the disk full.
    fn fill(mut file: File, path: &Path, layout: &Layout) -> Result<Self, PluginError> {
        claim(&file, path)?;
        // An identity no other device file has: its first path, the time and this process.
        let mut seed = path.as_os_str().as_encoded_bytes().to_vec();
        seed.extend_from_slice(
            &format!("{:?}{}", std::time::SystemTime::now(), std::process::id()).into_bytes(),
        );
        let id = hex(&sha256(&seed)[..16]);
        let text = format!("{}id={id}\n", layout.to_text());
        if text.len() > MAX_TEXT {
            return Err(bad("layout too large"));
        }
        let mut head = vec![0u8; usize::try_from(DATA_START).unwrap_or(0)];
        head[..8].copy_from_slice(SUPERBLOCK_MAGIC);
        let len = u32::try_from(text.len()).map_err(|_| bad("layout too large"))?;
        head[8..12].copy_from_slice(&len.to_be_bytes());
        head[12..12 + text.len()].copy_from_slice(text.as_bytes());
        file.write_all(&head).map_err(|e| storage(path, e))?;
        // Storage starts erased (all ones), as NAND does.
        let ones = vec![0xFFu8; 1 << 20];
        let mut left = layout.file_len() - DATA_START;
        while left > 0 {
            let n = usize::try_from(left.min(1 << 20)).unwrap_or(1 << 20);
            file.write_all(&ones[..n]).map_err(|e| storage(path, e))?;
            left -= n as u64;
        }
        let mut device = Self {
            path: path.to_path_buf(),
            file,
            layout: layout.clone(),
            state: State::fresh(),
            operations: 0,
            power_cut_at: None,
            powered: true,
            programmed: Units::default(),
            plan: None,
            hook: None,
            id: Some(id),
            readback: None,
        };
        device.write_state(State::fresh())?;
        device.file.sync_all().map_err(|e| storage(path, e))?;
        device.operations = 0;
        Ok(device)
    }

    /// Opens an existing device file.
    ///
    /// # Errors
    /// When the file is not a device (bad superblock) or has no valid state record.
    pub fn open(path: &Path) -> Result<Self, PluginError> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => storage(path, e).with_remedy(format!(
                    "There is no device file at {}: make one with `veriflash device init --layout LAYOUT.toml file:{}`, or name the file it made.",
                    path.display(),
                    path.display()
                )),
                _ => storage(path, e),
            })?;
        claim(&file, path)?;
        let mut block = Vec::with_capacity(4096);
        Read::by_ref(&mut file)
            .take(4096)
            .read_to_end(&mut block)
            .map_err(|e| storage(path, e))?;
        if block.len() < 4096 || &block[..8] != SUPERBLOCK_MAGIC {
            return Err(not_a_device(path, &block));
        }
        let len = usize::try_from(u32::from_be_bytes([
            block[8], block[9], block[10], block[11],
        ]))
        .unwrap_or(usize::MAX);
        let text = block
            .get(12..12usize.saturating_add(len))
            .filter(|_| len <= MAX_TEXT)
            .and_then(|b| std::str::from_utf8(b).ok())
            .ok_or_else(|| bad("corrupt superblock"))?;
        let id = text
            .lines()
            .find_map(|line| line.strip_prefix("id="))
            .map(str::to_owned);
        let layout_text: String = text
            .lines()
            .filter(|line| !line.starts_with("id="))
            .map(|line| format!("{line}\n"))
            .collect();
        let layout = Layout::from_text(&layout_text)?;
        let metadata = file.metadata().map_err(|e| storage(path, e))?;
        if metadata.is_file() && metadata.len() < layout.file_len() {
            return Err(bad(format!(
                "{} is {} bytes, its layout needs {}: the device file was truncated",
                path.display(),
                metadata.len(),
                layout.file_len()
            )));
        }
        let state = current_state(&mut file, path)?
            .ok_or_else(|| bad("no valid boot-control record: the device state is lost"))?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
            layout,
            state,
            operations: 0,
            power_cut_at: None,
            powered: true,
            programmed: Units::default(),
            plan: None,
            hook: None,
            id,
            readback: None,
        })
    }

    /// Calls `hook` before each storage operation (erase, program, record write) with the
    /// operation's number since open: fault-injection tests pause a session there to race
    /// another against it.
    pub fn on_storage_operation(&mut self, hook: impl FnMut(u64) + Send + 'static) {
        self.hook = Some(OperationHook(Box::new(hook)));
    }

    /// Arranges for the power to fail at storage operation `n` (1-based) from now, either
    /// tearing it (half of it reaches the storage) or just after it completed; every later
    /// operation fails.
    pub fn cut_power_at(&mut self, n: u64, cut: Cut) {
        self.power_cut_at = Some((self.operations.saturating_add(n), cut));
    }

    /// Storage operations performed since the device was opened.
    #[must_use]
    pub fn operations(&self) -> u64 {
        self.operations
    }

    /// The device file's path.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The layout.
    #[must_use]
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The state `veriflash status` shows.
    #[must_use]
    pub fn current_status(&self) -> DeviceStatus {
        DeviceStatus {
            info: self.info(),
            last_result: self.state.last.clone(),
            interrupted_install: self.state.pending.map(|(id, _)| id),
        }
    }

    /// What a bootloader would do: check that every image the active slot is recorded to hold
    /// hashes to its recorded digest. Returns the version that boots.
    ///
    /// # Errors
    /// [`PluginError::Device`] when the active slot does not hold what its record says — the
    /// device would not boot.
    pub fn boot_check(&mut self) -> Result<Option<String>, PluginError> {
        let slot = self.state.active;
        if let Some(broken) = self.installed_images()?.into_iter().find(|i| !i.intact) {
            return Err(bad(format!(
                "slot {slot} partition '{}' does not match its record: unbootable",
                broken.partition
            )));
        }
        Ok(self.state.version.clone())
    }

    /// Each image the active slot is recorded to hold, re-hashed and compared with its record.
    fn installed_images(&mut self) -> Result<Vec<InstalledImage>, PluginError> {
        let slot = self.state.active;
        let mut checked = Vec::new();
        for image in self.state.images[slot_index(slot)].clone() {
            let digest = self.digest_of(&image.partition, slot, image.size)?;
            checked.push(InstalledImage {
                intact: digest == image.digest,
                partition: image.partition,
                size: image.size,
            });
        }
        Ok(checked)
    }

    /// Reads `len` bytes of partition `name` in `slot`.
    ///
    /// # Errors
    /// When the partition does not exist or the read fails.
    pub fn read_partition(
        &mut self,
        name: &str,
        slot: Slot,
        len: u64,
    ) -> Result<Vec<u8>, PluginError> {
        let (offset, part) = self.locate(name, slot)?;
        if len > part.size {
            return Err(PluginError::Unsupported(format!(
                "read past the end of '{name}'"
            )));
        }
        let mut out = vec![0u8; usize::try_from(len).map_err(|_| bad("read too large"))?];
        self.file
            .seek(SeekFrom::Start(offset))
            .and_then(|_| self.file.read_exact(&mut out))
            .map_err(|e| storage(&self.path, e))?;
        Ok(out)
    }

    /// Reads `len` bytes of partition `name` in `slot`, starting `offset` bytes into it (for
    /// comparing large images piece by piece).
    ///
    /// # Errors
    /// When the partition does not exist, the range runs past its end, or the read fails.
    pub fn read_partition_range(
        &mut self,
        name: &str,
        slot: Slot,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>, PluginError> {
        let (start, part) = self.locate(name, slot)?;
        if offset.checked_add(len).is_none_or(|end| end > part.size) {
            return Err(PluginError::Unsupported(format!(
                "read past the end of '{name}'"
            )));
        }
        let mut out = vec![0u8; usize::try_from(len).map_err(|_| bad("read too large"))?];
        self.file
            .seek(SeekFrom::Start(start.saturating_add(offset)))
            .and_then(|_| self.file.read_exact(&mut out))
            .map_err(|e| storage(&self.path, e))?;
        Ok(out)
    }

    fn info(&self) -> DeviceInfo {
        DeviceInfo {
            id: self.id.clone(),
            product: self.layout.product.clone(),
            chipset: self.layout.chipset.clone(),
            hardware_revision: self.layout.hardware_revision.clone(),
            geometry: self.layout.geometry,
            partitions: self.layout.partitions.clone(),
            active_slot: Some(self.state.active),
            security_floor: self.state.floor,
            installed_version: self.state.version.clone(),
            free_space: None,
        }
    }

    fn locate(&self, name: &str, slot: Slot) -> Result<(u64, PartitionInfo), PluginError> {
        let part = self
            .layout
            .partitions
            .iter()
            .find(|p| p.name == name)
            .cloned()
            .ok_or_else(|| {
                PluginError::Unsupported(format!("the device has no partition '{name}'"))
            })?;
        let offset = self
            .layout
            .offset_of(name, slot)
            .ok_or_else(|| bad("layout"))?;
        Ok((offset, part))
    }

    fn digest_of(&mut self, name: &str, slot: Slot, len: u64) -> Result<Digest, PluginError> {
        let (offset, part) = self.locate(name, slot)?;
        if len > part.size {
            return Err(PluginError::Unsupported(format!(
                "read past the end of '{name}'"
            )));
        }
        self.file
            .seek(SeekFrom::Start(offset))
            .map_err(|e| storage(&self.path, e))?;
        let mut hasher = Sha256::new();
        let mut buf = buffer(&self.path, 1 << 20)?;
        buf.resize(1 << 20, 0);
        let mut left = len;
        while left > 0 {
            let n = usize::try_from(left.min(1 << 20)).unwrap_or(1 << 20);
            self.file
                .read_exact(&mut buf[..n])
                .map_err(|e| storage(&self.path, e))?;
            hasher.update(&buf[..n]);
            left -= n as u64;
        }
        Ok(hasher.finalize())
    }

    /// One storage operation: counts it and applies the injected power cut.
    fn storage_write(&mut self, offset: u64, bytes: &[u8]) -> Result<(), PluginError> {
        if !self.powered {
            return Err(PluginError::PowerLoss);
        }
        self.operations += 1;
        if let Some(OperationHook(hook)) = &mut self.hook {
            hook(self.operations);
        }
        let cut = self
            .power_cut_at
            .filter(|(at, _)| *at == self.operations)
            .map(|(_, cut)| cut);
        let data = if cut == Some(Cut::Torn) {
            &bytes[..bytes.len() / 2]
        } else {
            bytes
        };
        self.file
            .seek(SeekFrom::Start(offset))
            .and_then(|_| self.file.write_all(data))
            .map_err(|e| storage(&self.path, e))?;
        if cut.is_some() {
            self.powered = false;
            let _ = self.file.sync_data();
            return Err(PluginError::PowerLoss);
        }
        Ok(())
    }

    /// Hands the `len` bytes just written at `offset` in `partition` (whose copy starts at
    /// `base` in the file) to the read-back running beside the writes: an image's first write
    /// starts one, and a write that does not continue it stops it (the image is then read back
    /// whole after its last write, as [`FlashSession::read_back`] always could).
    fn follow_readback(&mut self, partition: &str, offset: u64, base: u64, len: usize) {
        if offset == 0 {
            self.readback = Readback::start(&self.file, partition).ok();
        }
        let followed = self.readback.as_mut().is_some_and(|r| {
            r.partition() == partition && r.follow(offset, base.saturating_add(offset), len)
        });
        if !followed {
            self.readback = None;
        }
    }

    fn write_state(&mut self, mut state: State) -> Result<(), PluginError> {
        // Compare and swap: the record this write replaces must still be the one this session
        // read. The lock makes this hold; the check keeps it true where a lock is not honoured.
        // (A fresh device being created has no record yet; records are compared as stored.)
        let on_disk = current_state(&mut self.file, &self.path)?.map(|s| (s.seq, s.to_body()));
        let expected = (self.state.seq != 0).then(|| (self.state.seq, self.state.to_body()));
        if self.powered && on_disk != expected {
            return Err(PluginError::Busy(format!(
                "the state of {} changed since this session read it: another session wrote it",
                self.path.display()
            )));
        }
        state.seq = self.state.seq + 1;
        let body = state.to_body();
        if body.len() > MAX_TEXT {
            return Err(bad("device state too large"));
        }
        let mut record = Vec::with_capacity(4096);
        record.extend_from_slice(RECORD_MAGIC);
        record.extend_from_slice(&state.seq.to_be_bytes());
        record.extend_from_slice(&u32::try_from(body.len()).unwrap_or(0).to_be_bytes());
        record.extend_from_slice(body.as_bytes());
        let digest = sha256(&record);
        record.extend_from_slice(&digest);
        // Only the record's own bytes are programmed, so a torn write cuts into its body or
        // hash, as it would on flash; bytes after it are ignored (the length bounds the body).
        let offset = RECORD_OFFSETS[usize::from(state.seq % 2 == 1)];
        self.storage_write(offset, &record)?;
        self.file.sync_data().map_err(|e| storage(&self.path, e))?;
        self.state = state;
        Ok(())
    }

    fn erase(&mut self, offset: u64, len: u64) -> Result<(), PluginError> {
        let block = u64::from(self.layout.geometry.erase_block);
        let ones = vec![0xFFu8; usize::try_from(block).unwrap_or(0)];
        let unit = u64::from(self.layout.geometry.write_unit);
        let mut at = offset;
        while at < offset + len {
            self.storage_write(at, &ones)?;
            let first = at / unit;
            self.programmed.remove(&(first..first + block / unit));
            at += block;
        }
        Ok(())
    }
}

/// Moves `temporary` to `path`, refusing to replace anything there.
fn publish(temporary: &Path, path: &Path) -> Result<(), PluginError> {
    match std::fs::hard_link(temporary, path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(storage(path, e)),
        // A file system without hard links (FAT): the check and the rename are two steps.
        Err(_) if std::fs::symlink_metadata(path).is_err() => {
            std::fs::rename(temporary, path).map_err(|e| storage(path, e))
        }
        Err(e) => Err(storage(path, e)),
    }
}

/// The newest valid state record in `file`, if any.
fn current_state(file: &mut File, path: &Path) -> Result<Option<State>, PluginError> {
    let mut best: Option<State> = None;
    for offset in RECORD_OFFSETS {
        if let Some(state) = read_record(file, offset).map_err(|e| storage(path, e))?
            && best.as_ref().is_none_or(|b| state.seq > b.seq)
        {
            best = Some(state);
        }
    }
    Ok(best)
}

fn read_record(file: &mut File, offset: u64) -> Result<Option<State>, std::io::Error> {
    let mut record = vec![0u8; 4096];
    file.seek(SeekFrom::Start(offset))
        .and_then(|_| file.read_exact(&mut record))?;
    if &record[..8] != RECORD_MAGIC {
        return Ok(None);
    }
    let seq = u64::from_be_bytes(record[8..16].try_into().unwrap_or([0; 8]));
    let len = usize::try_from(u32::from_be_bytes(
        record[16..20].try_into().unwrap_or([0; 4]),
    ))
    .unwrap_or(usize::MAX);
    if len > MAX_TEXT {
        return Ok(None);
    }
    let (signed, rest) = record.split_at(20 + len);
    if sha256(signed)[..] != rest[..32] {
        return Ok(None);
    }
    Ok(std::str::from_utf8(&signed[20..])
        .ok()
        .and_then(|body| State::from_body(seq, body)))
}

impl FlashSession for FileDevice {
    fn device_info(&mut self) -> Result<DeviceInfo, PluginError> {
        Ok(self.info())
    }

    fn status(&mut self) -> Result<DeviceStatus, PluginError> {
        Ok(self.current_status())
    }

    fn begin(&mut self, plan: &InstallPlan) -> Result<(), PluginError> {
        let target = self.state.active.other();
        if plan.target_slot != Some(target) {
            return Err(PluginError::Unsupported(format!(
                "slot {} is active; only slot {target} can be written",
                self.state.active
            )));
        }
        let mut areas = Vec::with_capacity(plan.images.len());
        for image in &plan.images {
            let (offset, part) = self.locate(&image.partition, target)?;
            if !part.slotted || part.protected {
                return Err(PluginError::Unsupported(format!(
                    "partition '{}' is protected: it has no A/B copies and is never written",
                    part.name
                )));
            }
            if image.size > part.size {
                return Err(PluginError::Unsupported(format!(
                    "image for '{}' is {} bytes, the partition holds {}",
                    part.name, image.size, part.size
                )));
            }
            areas.push((offset, image.size));
        }
        // A slot switch boots only what the new slot holds: a package that leaves out an
        // installed image would leave the new slot without it.
        if let Some(missing) = self.state.images[slot_index(self.state.active)]
            .iter()
            .find(|i| !plan.images.iter().any(|p| p.partition == i.partition))
        {
            return Err(PluginError::Unsupported(format!(
                "partition '{}' is installed but not in the package: an A/B install must carry every installed image",
                missing.partition
            )));
        }
        if plan
            .trust_anchors
            .as_ref()
            .is_some_and(|a| a.len() > MAX_ANCHORS_LEN)
        {
            return Err(PluginError::Unsupported(format!(
                "the package's trust-anchor set is larger than the {MAX_ANCHORS_LEN} bytes a file device holds"
            )));
        }
        // Journal first: from here on, the target slot's contents are not to be trusted.
        let mut state = self.state.clone();
        state.pending = Some((plan.package_id, target));
        state.images[slot_index(target)].clear();
        self.write_state(state)?;
        for (offset, size) in areas {
            self.erase(offset, size)?;
        }
        self.plan = Some(plan.clone());
        self.readback = None;
        Ok(())
    }

    fn write(&mut self, chunk: Chunk<'_>) -> Result<(), PluginError> {
        let partition = chunk.partition();
        let plan = self
            .plan
            .as_ref()
            .ok_or_else(|| bad("write before begin"))?;
        if *chunk.package_id() != plan.package_id {
            return Err(PluginError::Unsupported(format!(
                "a chunk of image '{}' belongs to another package than the install that began",
                chunk.image()
            )));
        }
        // The active slot changes only at commit, so the target is always the other one.
        let target = self.state.active.other();
        if !plan.images.iter().any(|i| i.partition == partition) {
            return Err(PluginError::Unsupported(format!(
                "'{partition}' is not in the install plan"
            )));
        }
        let (base, part) = self.locate(partition, target)?;
        let unit = u64::from(self.layout.geometry.write_unit);
        if !chunk.offset().is_multiple_of(unit) {
            return Err(PluginError::Unsupported(format!(
                "write at {} is not aligned to the {unit}-byte write unit",
                chunk.offset()
            )));
        }
        let len = chunk.bytes().len() as u64;
        let padded = len.div_ceil(unit) * unit;
        if chunk.offset() + padded > self.layout.copy_len(&part) {
            return Err(PluginError::Unsupported(format!(
                "write past the end of '{partition}'"
            )));
        }
        let first = (base + chunk.offset()) / unit;
        let count = padded / unit;
        if self.programmed.any_in(&(first..first + count)) {
            return Err(bad(format!(
                "write to '{partition}' at {} hits pages not erased since they were programmed",
                chunk.offset()
            )));
        }
        let data: std::borrow::Cow<'_, [u8]> = if padded == len {
            chunk.bytes().into()
        } else {
            let mut v = buffer(&self.path, padded)?;
            v.extend_from_slice(chunk.bytes());
            v.resize(usize::try_from(padded).unwrap_or(0), 0xFF);
            v.into()
        };
        self.storage_write(base + chunk.offset(), &data)?;
        self.programmed.insert(first..first + count);
        self.follow_readback(partition, chunk.offset(), base, chunk.bytes().len());
        Ok(())
    }

    fn read_back(&mut self, partition: &str, size: u64) -> Result<Digest, PluginError> {
        if self.plan.is_none() {
            return Err(bad("read-back before begin"));
        }
        let target = self.state.active.other();
        self.file.sync_data().map_err(|e| storage(&self.path, e))?;
        let followed = self
            .readback
            .take_if(|r| r.partition() == partition)
            .and_then(|r| r.finish(size));
        match followed {
            Some(digest) => digest.map_err(|e| storage(&self.path, e)),
            None => self.digest_of(partition, target, size),
        }
    }

    fn reads_back_chunks(&self) -> bool {
        true
    }

    fn read_back_chunks(
        &mut self,
        partition: &str,
        size: u64,
        chunk_size: u32,
    ) -> Result<Vec<Digest>, PluginError> {
        use std::os::unix::fs::FileExt as _;
        if self.plan.is_none() {
            return Err(bad("read-back before begin"));
        }
        let (offset, part) = self.locate(partition, self.state.active.other())?;
        if size > part.size || chunk_size == 0 {
            return Err(PluginError::Unsupported(format!(
                "read past the end of '{partition}'"
            )));
        }
        let mut buf = buffer(&self.path, u64::from(chunk_size))?;
        let mut digests = Vec::new();
        let mut at = 0;
        while at < size {
            let n = (size - at).min(u64::from(chunk_size));
            buf.resize(usize::try_from(n).unwrap_or(0), 0);
            self.file
                .read_exact_at(&mut buf, offset + at)
                .map_err(|e| storage(&self.path, e))?;
            digests.push(sha256(&buf));
            at += n;
        }
        Ok(digests)
    }

    fn installed_len(&mut self, partition: &str) -> Result<Option<u64>, PluginError> {
        Ok(self.state.images[slot_index(self.state.active)]
            .iter()
            .find(|i| i.partition == partition)
            .map(|i| i.size))
    }

    fn installed_digest(&mut self, partition: &str) -> Result<Option<Digest>, PluginError> {
        Ok(self.state.images[slot_index(self.state.active)]
            .iter()
            .find(|i| i.partition == partition)
            .map(|i| i.digest))
    }

    fn read_installed(
        &mut self,
        partition: &str,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<(), PluginError> {
        use std::os::unix::fs::FileExt as _;
        // The active slot: an install writes the other one, so this never reads its own output.
        let installed = self.installed_len(partition)?.unwrap_or(0);
        let len = buf.len() as u64;
        if offset.checked_add(len).is_none_or(|end| end > installed) {
            return Err(PluginError::Unsupported(format!(
                "read past the end of the image installed in '{partition}'"
            )));
        }
        let (start, _) = self.locate(partition, self.state.active)?;
        self.file
            .read_exact_at(buf, start + offset)
            .map_err(|e| storage(&self.path, e))
    }

    fn commit(&mut self) -> Result<(), PluginError> {
        let plan = self.plan.take().ok_or_else(|| bad("commit before begin"))?;
        self.file.sync_all().map_err(|e| storage(&self.path, e))?;
        let mut state = self.state.clone();
        let target = self.state.active.other();
        state.images[slot_index(target)] = plan
            .images
            .iter()
            .map(|i| Installed {
                partition: i.partition.clone(),
                size: i.size,
                digest: i.digest,
            })
            .collect();
        state.active = target;
        state.floor = state.floor.max(plan.security_version);
        state.version = Some(plan.software_version.clone());
        state.pending = None;
        state.last = Some(LastResult {
            code: 0,
            message: format!("installed {} in slot {target}", plan.software_version),
        });
        if let Some(anchors) = &plan.trust_anchors {
            // Into the area the record does not name; only the record write below switches.
            let area = self.state.anchors.map_or(0, |(area, ..)| 1 - area.min(1));
            self.storage_write(ANCHOR_AREAS[area], anchors)?;
            state.anchors = Some((area, anchors.len(), sha256(anchors)));
        }
        // One record write: atomic. Before it lands the old slot boots, after it the new one.
        self.write_state(state)
    }

    fn holds_trust_anchors(&self) -> bool {
        true
    }

    fn trust_anchors(&mut self) -> Result<Option<Vec<u8>>, PluginError> {
        let Some((area, len, digest)) = self.state.anchors else {
            return Ok(None);
        };
        let mut anchors = vec![0u8; len];
        self.file
            .seek(SeekFrom::Start(ANCHOR_AREAS[area.min(1)]))
            .and_then(|_| self.file.read_exact(&mut anchors))
            .map_err(|e| storage(&self.path, e))?;
        if sha256(&anchors) != digest {
            return Err(bad(
                "the trust-anchor set the device holds does not match its record",
            ));
        }
        Ok(Some(anchors))
    }

    fn check_installed(&mut self) -> Result<Option<Vec<InstalledImage>>, PluginError> {
        self.installed_images().map(Some)
    }

    fn abort(&mut self, result: &LastResult) -> Result<(), PluginError> {
        self.plan = None;
        self.readback = None;
        let mut state = self.state.clone();
        state.pending = None;
        state.last = Some(result.clone());
        self.write_state(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> Layout {
        Layout {
            product: "acme".into(),
            chipset: "mdm9607".into(),
            hardware_revision: "r2".into(),
            geometry: StorageGeometry {
                erase_block: 65536,
                write_unit: 4096,
            },
            partitions: vec![
                PartitionInfo {
                    name: "boot".into(),
                    size: 200_000,
                    slotted: true,
                    protected: false,
                },
                PartitionInfo {
                    name: "efs2".into(),
                    size: 65536,
                    slotted: false,
                    protected: true,
                },
            ],
        }
    }

    #[test]
    fn layout_round_trips_through_the_superblock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dev.img");
        FileDevice::create(&path, &layout()).unwrap();
        let dev = FileDevice::open(&path).unwrap();
        assert_eq!(dev.layout(), &layout());
        assert_eq!(dev.current_status().info.active_slot, Some(Slot::A));
        assert_eq!(dev.current_status().info.security_floor, 0);
    }

    #[test]
    fn state_survives_a_torn_record_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dev.img");
        let mut dev = FileDevice::create(&path, &layout()).unwrap();
        let mut s = dev.state.clone();
        s.floor = 5;
        dev.write_state(s.clone()).unwrap();
        dev.cut_power_at(1, Cut::Torn);
        s.floor = 9;
        assert!(matches!(dev.write_state(s), Err(PluginError::PowerLoss)));
        drop(dev);
        let dev = FileDevice::open(&path).unwrap();
        assert_eq!(
            dev.current_status().info.security_floor,
            5,
            "the torn record must be ignored"
        );
    }

    #[test]
    fn reads_back_only_the_image_the_active_slot_holds() {
        use std::os::unix::fs::FileExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dev.img");
        let mut dev = FileDevice::create(&path, &layout()).unwrap();
        assert_eq!(
            dev.installed_len("boot").unwrap(),
            None,
            "nothing installed"
        );
        let image: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let (start, _) = dev.locate("boot", Slot::A).unwrap();
        dev.file.write_all_at(&image, start).unwrap();
        let (other, _) = dev.locate("boot", Slot::B).unwrap();
        dev.file.write_all_at(&[0xEE; 4096], other).unwrap();
        let mut s = dev.state.clone();
        s.images[slot_index(Slot::A)].push(Installed {
            partition: "boot".into(),
            size: image.len() as u64,
            digest: sha256(&image),
        });
        dev.write_state(s).unwrap();
        assert_eq!(dev.installed_len("boot").unwrap(), Some(10_000));
        assert_eq!(dev.installed_digest("boot").unwrap(), Some(sha256(&image)));
        assert_eq!(dev.installed_digest("efs2").unwrap(), None);
        let mut buf = [0u8; 300];
        dev.read_installed("boot", 4096, &mut buf).unwrap();
        assert_eq!(buf[..], image[4096..4396]);
        assert!(dev.read_installed("boot", 9_800, &mut buf).is_err());
        assert!(dev.read_installed("efs2", 0, &mut buf).is_err());
    }

    #[test]
    fn rejects_layouts_that_cannot_work() {
        let mut l = layout();
        l.geometry.write_unit = 3000;
        assert!(l.validate().is_err());
        let mut l = layout();
        l.partitions.push(l.partitions[0].clone());
        assert!(l.validate().is_err());
        let mut l = layout();
        l.product = "has space".into();
        assert!(l.validate().is_err());
    }

    #[test]
    fn a_file_that_is_not_a_device_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x");
        std::fs::write(&path, vec![0u8; 10_000]).unwrap();
        let err = FileDevice::open(&path).err().unwrap();
        assert!(
            matches!(err.without_remedy(), PluginError::NotADevice(_)),
            "{err:?}"
        );
        assert!(err.remedy().unwrap().contains("veriflash device init"));
    }

    #[test]
    fn a_layout_given_as_the_device_is_named_as_one_with_the_command_that_makes_a_device() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("layout.toml");
        std::fs::write(
            &path,
            "product = \"p\"\nchipset = \"c\"\nhardware_revision = \"r1\"\n[[partition]]\nname = \"boot\"\nsize = 65536\n",
        )
        .unwrap();
        let err = FileDevice::open(&path).err().unwrap();
        assert!(err.to_string().contains("looks like a layout"), "{err}");
        let remedy = err.remedy().unwrap();
        assert!(
            remedy.contains(&format!("--layout {}", path.display())),
            "{remedy}"
        );
    }

    #[test]
    fn a_second_session_on_one_device_is_refused_until_the_first_ends() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dev.img");
        let first = FileDevice::create(&path, &layout()).unwrap();
        assert!(
            matches!(FileDevice::open(&path), Err(PluginError::Busy(_))),
            "create claims the device it made"
        );
        drop(first);
        let second = FileDevice::open(&path).unwrap();
        let third = std::thread::scope(|s| s.spawn(|| FileDevice::open(&path)).join().unwrap());
        assert!(matches!(third, Err(PluginError::Busy(_))));
        drop(second);
        FileDevice::open(&path).unwrap();
    }

    #[test]
    fn a_state_changed_behind_the_lock_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dev.img");
        let mut first = FileDevice::create(&path, &layout()).unwrap();
        // As if the lock were not honoured (a network file system): another session commits.
        first.file.unlock().unwrap();
        let mut second = FileDevice::open(&path).unwrap();
        let mut s = second.state.clone();
        s.floor = 20;
        second.write_state(s).unwrap();
        let mut s = first.state.clone();
        s.floor = 10;
        assert!(matches!(first.write_state(s), Err(PluginError::Busy(_))));
        drop((first, second));
        let dev = FileDevice::open(&path).unwrap();
        assert_eq!(dev.current_status().info.security_floor, 20);
    }

    #[test]
    fn create_refuses_an_existing_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dev.img");
        std::fs::write(&path, b"precious").unwrap();
        let err = FileDevice::create(&path, &layout()).unwrap_err();
        assert!(
            matches!(&err, PluginError::Storage { source, .. } if source.kind() == std::io::ErrorKind::AlreadyExists),
            "{err}"
        );
        assert_eq!(std::fs::read(&path).unwrap(), b"precious");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["dev.img"], "the temporary file is gone");
    }

    #[test]
    fn a_created_device_has_every_block_allocated() {
        use std::os::unix::fs::MetadataExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dev.img");
        drop(FileDevice::create(&path, &layout()).unwrap());
        let meta = std::fs::metadata(&path).unwrap();
        // st_blocks counts 512-byte units actually allocated: no sparse holes anywhere.
        assert!(
            meta.blocks() * 512 >= meta.len(),
            "{} bytes allocated of {}",
            meta.blocks() * 512,
            meta.len()
        );
    }

    #[test]
    fn a_truncated_device_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dev.img");
        drop(FileDevice::create(&path, &layout()).unwrap());
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(12 * 1024)
            .unwrap();
        let err = FileDevice::open(&path).unwrap_err();
        assert!(err.to_string().contains("truncated"), "{err}");
    }

    #[test]
    fn a_missing_device_file_names_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent.img");
        let err = FileDevice::open(&path).unwrap_err();
        assert!(
            matches!(err.without_remedy(), PluginError::Storage { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
        );
        assert!(err.to_string().contains("absent.img"), "{err}");
        assert!(
            err.remedy().unwrap().contains("veriflash device init"),
            "{err:?}"
        );
    }
}
