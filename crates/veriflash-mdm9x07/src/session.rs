//! The flash session (the plugin that opens it is in [`crate::target`]): identity over Sahara, the programmer served from the
//! package, partitions from the MIBIB, erase + program in whole pages, read-back, reset.

use std::path::{Path, PathBuf};

use veriflash_plugin::{
    Chunk, DeviceInfo, DeviceStatus, Digest, FlashSession, InstallPlan, LastResult, PartitionInfo,
    PluginError, StorageGeometry,
};

use crate::driver::{Connection, DeviceMode, StorageInfo, Timeouts};
use crate::error::Error;
use crate::geometry::{GEOMETRY_PARTITION, MAX_DESCRIPTOR_LEN, NandGeometry};
use crate::installed::{self, HostCopy};
use crate::mibib::{self, Placed, Table};
use crate::sahara::{ChipIdentity, chip_name};
use crate::transport::Transport;

/// The partition name under which a package carries the Firehose programmer. Its image is
/// served to the boot ROM over Sahara, never written to NAND.
pub const PROGRAMMER_PARTITION: &str = "programmer";
/// The largest programmer image accepted.
pub const MAX_PROGRAMMER_LEN: u64 = 16 << 20;
/// The raw payload size proposed in `configure`.
pub const DEFAULT_PAYLOAD: usize = 1 << 20;
/// The partition that holds the partition table.
pub const MIBIB_PARTITION: &str = "mibib";

/// Maps a chip's OEM and model ids to the product and hardware revision a manifest names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProductId {
    /// OEM id (bits 16..32 of the hardware id).
    pub oem_id: u16,
    /// Model id (bits 0..16 of the hardware id).
    pub model_id: u16,
    /// Product identifier.
    pub product: String,
    /// Hardware revision.
    pub hardware_revision: String,
}

/// How a session behaves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionConfig {
    /// Products this tool knows, by OEM and model id.
    pub products: Vec<ProductId>,
    /// Timeouts for every wait.
    pub timeouts: Timeouts,
    /// Raw payload size proposed in `configure`.
    pub payload: usize,
    /// Where the PC-side journal lives (one file per chip serial number); `None`: no journal,
    /// an interrupted flash starts over.
    pub journal_dir: Option<PathBuf>,
    /// Where the protected partitions (EFS, calibration, the MIBIB: device-unique data no
    /// package may write) are copied before anything is erased, as
    /// `DIR/mdm9x07-SERIAL/PARTITION.bin`; `None`: no copy. The session never erases them, so
    /// the copy is for the day something else does (another tool, a failing NAND).
    ///
    /// A delta install's sources go here too, as `DIR/mdm9x07-SERIAL/installed/PARTITION.bin`
    /// (read back before the install's first write, see
    /// [`FlashSession::installed_len`](veriflash_plugin::FlashSession::installed_len)), kept
    /// until the install commits: when the run is cut off after a partition was erased, the
    /// next run of the same delta — one that finds [`SessionConfig::journal_dir`]'s journal of
    /// the interrupted install — reads its source from that copy instead of the erased NAND.
    /// `None`: the copies are temporary files, gone with the session, and a cut-off delta
    /// install is finished with the full package.
    pub backup_dir: Option<PathBuf>,
    /// Whether the chip's serial number identifies one physical device that outlives the
    /// session ([`DeviceInfo::id`], the key of the host's record of its anti-rollback floor and
    /// trust anchors). `false` for the emulator: every `mdm9x07:emulator` is a new, blank
    /// device that only shares a serial number with the last one.
    pub persistent: bool,
    /// Whether a package may rewrite the partition table (the MIBIB step: an image for the
    /// partition `mibib`). Off by default: the MIBIB is then as protected as EFS, and such a
    /// package is refused (`protected_partition`) before anything is written. When on, the
    /// step also needs [`SessionConfig::backup_dir`], where the old table is kept.
    pub allow_partition_table: bool,
    /// The product table the user edits ([`crate::products::FILE`] in the configuration
    /// directory), named in the remedy for a modem it lacks.
    pub products_file: Option<PathBuf>,
    /// How long opening a real modem (`serial:TTY`, `usb[:BUS-PORT]`) waits for it to appear
    /// in download mode, as qdl waits; zero: an absent modem fails at once.
    pub wait_for_device: std::time::Duration,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            products: vec![ProductId {
                oem_id: 0x1234,
                model_id: 0x0001,
                product: "acme-hotspot-x1".into(),
                hardware_revision: "r2".into(),
            }],
            timeouts: Timeouts::default(),
            payload: DEFAULT_PAYLOAD,
            journal_dir: None,
            backup_dir: None,
            persistent: true,
            allow_partition_table: false,
            products_file: None,
            wait_for_device: std::time::Duration::ZERO,
        }
    }
}

/// Where a session is.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Stage {
    /// Nothing exchanged yet.
    Unknown,
    /// The boot ROM identified the chip; it waits for the programmer.
    Identified,
    /// The programmer runs; storage and partitions are known.
    Ready,
    /// An install began.
    Installing,
    /// The device was reset.
    Reset,
}

/// The PC-side journal of one chip's install: which package, which partitions are fully
/// programmed. A run of the same package after an interruption skips those partitions'
/// erase and program (their read-back still runs), so a flash cut off by a pulled cable or a
/// power cut resumes instead of starting over. The file is replaced atomically.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Journal {
    package: Option<Digest>,
    done: Vec<String>,
}

/// The longest journal file read back.
const MAX_JOURNAL_LEN: u64 = 64 * 1024;

impl Journal {
    fn load(path: &Path) -> Self {
        let Ok(meta) = std::fs::metadata(path) else {
            return Self::default();
        };
        if meta.len() > MAX_JOURNAL_LEN {
            return Self::default();
        }
        let Ok(text) = std::fs::read_to_string(path) else {
            return Self::default();
        };
        let mut journal = Self::default();
        for line in text.lines() {
            match line.split_once(' ') {
                Some(("package", hex)) => journal.package = unhex(hex),
                Some(("done", name)) if journal.done.len() < 256 => {
                    journal.done.push(name.to_owned());
                }
                _ => {}
            }
        }
        journal
    }

    fn save(&self, path: &Path) -> Result<(), Error> {
        let mut text = String::new();
        if let Some(p) = &self.package {
            text.push_str("package ");
            for b in p {
                text.push_str(&format!("{b:02x}"));
            }
            text.push('\n');
        }
        for d in &self.done {
            text.push_str("done ");
            text.push_str(d);
            text.push('\n');
        }
        let tmp = path.with_extension("journal.tmp");
        let io = |e: std::io::Error| Error::Storage(format!("journal {}: {e}", path.display()));
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        {
            use std::io::Write as _;
            let mut f = std::fs::File::create(&tmp).map_err(io)?;
            f.write_all(text.as_bytes()).map_err(io)?;
            f.sync_all().map_err(io)?;
        }
        std::fs::rename(&tmp, path).map_err(io)
    }
}

fn unhex(s: &str) -> Option<Digest> {
    let s = s.trim();
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut d = [0u8; 32];
    for (i, b) in d.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(d)
}

/// A partition read by [`Mdm9x07Session::read_partition`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadCopy {
    /// The partition.
    pub partition: String,
    /// Bytes read (the whole partition, bad blocks skipped as the programmer skips them).
    pub bytes: u64,
    /// SHA-256 of those bytes, the same on both reads.
    pub sha256: Digest,
}

/// A writer that hashes what it passes on to `out`.
struct Hashing<'a> {
    out: &'a mut dyn std::io::Write,
    hasher: veriflash_hash::Sha256,
}

impl<'a> Hashing<'a> {
    fn new(out: &'a mut dyn std::io::Write) -> Self {
        Self {
            out,
            hasher: veriflash_hash::Sha256::new(),
        }
    }
}

impl std::io::Write for Hashing<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let n = self.out.write(bytes)?;
        self.hasher.update(bytes.get(..n).unwrap_or_default());
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// What is being written to one partition.
#[derive(Clone, Debug)]
struct Stream {
    partition: String,
    size: u64,
    sent: u64,
    pending: Vec<u8>,
}

/// A flash session on one MDM9x07 over a [`Transport`].
///
/// The programmer comes from the package: the session names [`PROGRAMMER_PARTITION`] as its
/// loader ([`FlashSession::loader_partition`]), so the pipeline checks the chip's identity,
/// streams the verified programmer image into [`FlashSession::load`], and only then asks for
/// the partitions (read from the MIBIB by the running programmer) and checks the rest.
pub struct Mdm9x07Session<T: Transport> {
    conn: Connection<T>,
    config: SessionConfig,
    stage: Stage,
    identity: Option<ChipIdentity>,
    programmer: Vec<u8>,
    storage: Option<StorageInfo>,
    partitions: Vec<Placed>,
    plan: Option<InstallPlan>,
    stream: Option<Stream>,
    done: Vec<String>,
    resumed: Vec<String>,
    journal: Journal,
    last_result: Option<LastResult>,
    /// Whether the layout came from the copy of the table taken before a rewrite that was cut
    /// off (the device's own table is erased or torn).
    layout_from_backup: bool,
    /// Bytes of the geometry descriptor image received so far.
    descriptor: Vec<u8>,
    /// Partitions read back before the install's first write, for a delta install's source
    /// ([`crate::installed`]).
    copies: Vec<HostCopy>,
}

impl<T: Transport> std::fmt::Debug for Mdm9x07Session<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mdm9x07Session")
            .field("stage", &self.stage)
            .field("identity", &self.identity)
            .field("storage", &self.storage)
            .finish_non_exhaustive()
    }
}

impl<T: Transport> Mdm9x07Session<T> {
    /// A session over `transport`; nothing is exchanged until the first call.
    pub fn new(transport: T, config: SessionConfig) -> Self {
        let timeouts = config.timeouts;
        Self {
            conn: Connection::new(transport, timeouts),
            config,
            stage: Stage::Unknown,
            identity: None,
            programmer: Vec::new(),
            storage: None,
            partitions: Vec::new(),
            plan: None,
            stream: None,
            done: Vec::new(),
            resumed: Vec::new(),
            journal: Journal::default(),
            last_result: None,
            layout_from_backup: false,
            descriptor: Vec::new(),
            copies: Vec::new(),
        }
    }

    /// The chip's identity, once read.
    #[must_use]
    pub fn identity(&self) -> Option<ChipIdentity> {
        self.identity
    }

    /// Uploads `image` (checked: the chip must be an MDM9x07) and reads storage and partition
    /// table from it, once the chip is identified.
    fn run_programmer(&mut self, image: &[u8]) -> Result<(), Error> {
        let id = self
            .identity
            .ok_or_else(|| Error::Unsupported("the chip was not identified".into()))?;
        if !id.is_mdm9x07() {
            return Err(Error::WrongChip {
                msm_id: id.msm_id(),
            });
        }
        self.conn.upload(image)?;
        self.read_layout()
    }

    /// For reading a modem without a package (`veriflash read`, `backup`): identifies the
    /// chip over Sahara, uploads `programmer` and reads the partition table it finds.
    ///
    /// # Errors
    /// [`Error::WrongChip`] before anything is uploaded to another chip; [`Error::BadLength`]
    /// for a programmer over [`MAX_PROGRAMMER_LEN`]; the exchange's errors.
    pub fn start_programmer(&mut self, programmer: &[u8]) -> Result<(), Error> {
        if programmer.len() as u64 > MAX_PROGRAMMER_LEN {
            return Err(Error::BadLength {
                what: "programmer image",
                length: programmer.len() as u64,
                limit: MAX_PROGRAMMER_LEN,
            });
        }
        if self.stage == Stage::Unknown {
            self.identify()?;
        }
        if self.stage != Stage::Identified {
            return Err(Error::Unsupported(
                "the programmer already runs in this session".into(),
            ));
        }
        self.run_programmer(programmer)
    }

    /// The partitions of the table in force, once the programmer runs.
    #[must_use]
    pub fn partitions(&self) -> &[Placed] {
        &self.partitions
    }

    /// Reads partition `name` whole into `out` and then once more, and returns its SHA-256.
    ///
    /// *Verified* means: two complete reads through Firehose gave the same bytes (the same
    /// SHA-256) — the 9x07 NAND programmer has no `getsha256digest` to compare with — and
    /// what went to `out` is the first read, hashed as it was written. A NAND or link that
    /// returns different bytes twice is refused with [`Error::Storage`].
    ///
    /// # Errors
    /// [`Error::Unsupported`] for an unknown partition or before [`Self::start_programmer`];
    /// [`Error::Storage`] for reads that differ or an `out` that fails; the exchange's errors.
    pub fn read_partition(
        &mut self,
        name: &str,
        out: &mut dyn std::io::Write,
    ) -> Result<ReadCopy, Error> {
        let (p, _) = self.placed(name)?;
        let mut first = Hashing::new(out);
        let bytes = self.read_blocks(&p, &mut first, &|e| {
            Error::Storage(format!("writing the copy of '{name}': {e}"))
        })?;
        let digest = first.hasher.finalize();
        let mut sink = std::io::sink();
        let mut again = Hashing::new(&mut sink);
        self.read_blocks(&p, &mut again, &|e| {
            Error::Storage(format!("reading '{name}' again: {e}"))
        })?;
        if again.hasher.finalize() != digest {
            return Err(Error::Storage(format!(
                "two reads of '{name}' gave different bytes: the NAND or the link is unreliable; nothing is kept"
            )));
        }
        Ok(ReadCopy {
            partition: name.to_owned(),
            bytes,
            sha256: digest,
        })
    }

    /// Resets the modem (Firehose `power reset`): it boots what its NAND holds.
    ///
    /// # Errors
    /// The exchange's.
    pub fn reset(&mut self) -> Result<(), Error> {
        self.conn.power_reset()?;
        self.stage = Stage::Reset;
        Ok(())
    }

    /// The programmer's log lines so far.
    #[must_use]
    pub fn logs(&self) -> &[String] {
        self.conn.logs()
    }

    fn identify(&mut self) -> Result<(), Error> {
        match self.conn.probe()? {
            DeviceMode::Firehose => Err(Error::Unsupported(
                "a Firehose programmer already runs, so the chip cannot be identified; \
                 power-cycle the device into download mode and run again"
                    .into(),
            )),
            DeviceMode::Sahara => {
                self.identity = Some(self.conn.identify()?);
                self.stage = Stage::Identified;
                Ok(())
            }
        }
    }

    /// Reads geometry and partition table from the running programmer. A device whose table
    /// is erased or torn (a power cut during a partition-table rewrite) is laid out by the
    /// copy of its old table the rewrite made first ([`Mdm9x07Session::table_backup_path`]),
    /// so the same package can run again and finish the rewrite.
    fn read_layout(&mut self) -> Result<(), Error> {
        self.conn.configure(self.config.payload)?;
        let info = self.conn.storage_info()?;
        let scan = mibib::SCAN_BLOCKS.min(info.total_blocks);
        let mut table = None;
        let mut torn = None;
        for block in 0..scan {
            match self.table_at(&info, block)? {
                Some(Ok(t)) => {
                    table = Some(t);
                    break;
                }
                Some(Err(e)) => {
                    torn = Some(e);
                    break;
                }
                None => {}
            }
        }
        self.layout_from_backup = false;
        let table = match table {
            Some(t) => t,
            None => match self.backed_up_table(&info) {
                Some(t) => {
                    self.layout_from_backup = true;
                    t
                }
                None => {
                    return Err(torn.unwrap_or_else(|| {
                        Error::PartitionTable(format!("no MIBIB in the first {scan} blocks"))
                    }));
                }
            },
        };
        self.partitions = table.place(info.total_blocks)?;
        self.storage = Some(info);
        self.stage = Stage::Ready;
        Ok(())
    }

    /// The table in the MIBIB block `block`: `None` when the block has no MBN header,
    /// `Some(Err)` when it has one but no table that parses.
    fn table_at(
        &mut self,
        info: &StorageInfo,
        block: u32,
    ) -> Result<Option<Result<Table, Error>>, Error> {
        let ppb = u64::from(info.pages_per_block());
        let mut page = Vec::new();
        self.conn
            .read(u64::from(block) * ppb, 1, info.page_size, &mut |b| {
                page.extend_from_slice(b);
            })?;
        if !mibib::is_mibib_header(&page) {
            return Ok(None);
        }
        let pages = (mibib::TABLE_HEADER_LEN + mibib::ENTRY_LEN * mibib::MAX_PARTS_V4 as usize)
            .div_ceil(info.page_size as usize) as u64;
        let mut bytes = Vec::new();
        self.conn.read(
            u64::from(block) * ppb + 1,
            pages,
            info.page_size,
            &mut |b| {
                bytes.extend_from_slice(b);
            },
        )?;
        Ok(Some(Table::parse(&bytes)))
    }

    /// Where the table a partition-table rewrite replaces is kept, as the MIBIB partition's
    /// bytes: `BACKUP_DIR/mdm9x07-SERIAL/mibib-before-rewrite.bin`.
    fn table_backup_path(&self) -> Option<PathBuf> {
        let dir = self.config.backup_dir.as_ref()?;
        let serial = self.identity?.serial;
        Some(
            dir.join(format!("mdm9x07-{serial:08x}"))
                .join("mibib-before-rewrite.bin"),
        )
    }

    /// The table kept by an earlier rewrite, if there is one that parses and fits.
    fn backed_up_table(&self, info: &StorageInfo) -> Option<Table> {
        let path = self.table_backup_path()?;
        let len = std::fs::metadata(&path).ok()?.len();
        if len > u64::from(info.block_size).saturating_mul(u64::from(mibib::SCAN_BLOCKS)) {
            return None;
        }
        let bytes = std::fs::read(&path).ok()?;
        crate::rawprogram::find_table(&bytes, info.page_size as usize)
            .filter(|t| t.place(info.total_blocks).is_ok())
    }

    /// The device's NAND geometry, once the programmer runs.
    fn geometry(&self) -> Option<NandGeometry> {
        self.storage.map(|s| NandGeometry {
            page_size: s.page_size,
            pages_per_block: s.pages_per_block(),
        })
    }

    fn info(&self) -> Result<DeviceInfo, Error> {
        let id = self
            .identity
            .ok_or_else(|| Error::Unsupported("the chip was not identified".into()))?;
        let known = self
            .config
            .products
            .iter()
            .find(|p| p.oem_id == id.oem_id() && p.model_id == id.model_id());
        let (product, hardware_revision) = match known {
            Some(p) => (p.product.clone(), p.hardware_revision.clone()),
            None => (
                format!("qcom-oem{:04x}-model{:04x}", id.oem_id(), id.model_id()),
                "unknown".into(),
            ),
        };
        let chipset = chip_name(id.msm_id())
            .map_or_else(|| format!("msm-{:#010x}", id.msm_id()), str::to_owned);
        let (geometry, partitions) = match &self.storage {
            Some(s) => (
                StorageGeometry {
                    erase_block: s.block_size,
                    write_unit: s.page_size,
                },
                self.partitions
                    .iter()
                    .map(|p| PartitionInfo {
                        name: p.name.clone(),
                        size: u64::from(p.blocks) * u64::from(s.block_size),
                        slotted: false,
                        protected: p.protected
                            && !(p.name == MIBIB_PARTITION && self.config.allow_partition_table),
                    })
                    .chain(std::iter::once(PartitionInfo {
                        // Not on NAND: the package's geometry descriptor is checked against
                        // the device's (crate::geometry), never written.
                        name: GEOMETRY_PARTITION.to_owned(),
                        size: MAX_DESCRIPTOR_LEN,
                        slotted: false,
                        protected: false,
                    }))
                    .collect(),
            ),
            None => (
                StorageGeometry {
                    erase_block: 0,
                    write_unit: 0,
                },
                Vec::new(),
            ),
        };
        Ok(DeviceInfo {
            id: self
                .config
                .persistent
                .then(|| format!("mdm9x07-{:08x}", id.serial)),
            product,
            chipset,
            hardware_revision,
            geometry,
            partitions,
            active_slot: None,
            security_floor: 0,
            installed_version: None,
            free_space: None,
        })
    }

    /// The journal file for this chip, if journalling is on.
    fn journal_path(&self) -> Option<PathBuf> {
        let dir = self.config.journal_dir.as_ref()?;
        let serial = self.identity?.serial;
        Some(dir.join(format!("mdm9x07-{serial:08x}.journal")))
    }

    fn save_journal(&self) -> Result<(), Error> {
        match self.journal_path() {
            Some(path) => self.journal.save(&path),
            None => Ok(()),
        }
    }

    /// Copies every protected partition to [`SessionConfig::backup_dir`], streaming each from
    /// Firehose `read` into a temporary file that is renamed into place once complete (memory
    /// stays one transfer, whatever size the device's MIBIB claims). The MIBIB is not copied
    /// over an earlier copy while the device's own table is torn ([`Self::read_layout`]).
    fn back_up_protected(&mut self) -> Result<(), Error> {
        let (Some(dir), Some(identity)) = (self.config.backup_dir.clone(), self.identity) else {
            return Ok(());
        };
        let dir = dir.join(format!("mdm9x07-{:08x}", identity.serial));
        let protected: Vec<Placed> = self
            .partitions
            .iter()
            .filter(|p| p.protected && !(self.layout_from_backup && p.name == MIBIB_PARTITION))
            .cloned()
            .collect();
        for p in protected {
            self.copy_partition(&p, &dir.join(format!("{}.bin", p.name)))?;
        }
        Ok(())
    }

    /// Streams partition `p` whole into `path` (through `PATH.tmp`, synced, then renamed).
    fn copy_partition(&mut self, p: &Placed, path: &Path) -> Result<(), Error> {
        self.storage
            .ok_or_else(|| Error::Unsupported("the programmer is not running".into()))?;
        let io = |what: &Path, e: std::io::Error| {
            Error::Storage(format!("backup {}: {e}", what.display()))
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        }
        let mut tmp_name = path.as_os_str().to_owned();
        tmp_name.push(".tmp");
        let tmp = PathBuf::from(tmp_name);
        let mut file =
            std::io::BufWriter::new(std::fs::File::create(&tmp).map_err(|e| io(&tmp, e))?);
        self.read_blocks(p, &mut file, &|e| io(&tmp, e))?;
        let file = file.into_inner().map_err(|e| io(&tmp, e.into_error()))?;
        file.sync_all().map_err(|e| io(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| io(path, e))
    }

    /// Streams partition `p` (bad blocks skipped as the programmer skips them) into `out`: the bytes read. Memory: one transfer, whatever size
    /// the MIBIB claims. A partition that reaches the end of the NAND holds fewer good blocks
    /// than it spans when any of its blocks is bad; the programmer runs out of them and says so,
    /// and what it read by then is the whole partition.
    ///
    /// # Errors
    /// The exchange's; `out`'s first error, as `out_error` makes it.
    fn read_blocks(
        &mut self,
        p: &Placed,
        out: &mut dyn std::io::Write,
        out_error: &dyn Fn(std::io::Error) -> Error,
    ) -> Result<u64, Error> {
        let storage = self
            .storage
            .ok_or_else(|| Error::Unsupported("the programmer is not running".into()))?;
        let ppb = u64::from(storage.pages_per_block());
        let mut failed: Option<std::io::Error> = None;
        let mut sink = |b: &[u8]| {
            if failed.is_none()
                && let Err(e) = out.write_all(b)
            {
                failed = Some(e);
            }
        };
        let start = u64::from(p.first_block) * ppb;
        let count = u64::from(p.blocks) * ppb;
        let bytes = if p.first_block.saturating_add(p.blocks) >= storage.total_blocks {
            self.conn
                .read_to_last_good_block(start, count, storage.page_size, &mut sink)?
        } else {
            self.conn.read(start, count, storage.page_size, &mut sink)?;
            count * u64::from(storage.page_size)
        };
        match failed {
            Some(e) => Err(out_error(e)),
            None => Ok(bytes),
        }
    }

    /// Where a delta install's sources are kept, when the session has a backup directory:
    /// `BACKUP_DIR/mdm9x07-SERIAL/installed`.
    fn installed_dir(&self) -> Option<PathBuf> {
        let dir = self.config.backup_dir.as_ref()?;
        let serial = self.identity?.serial;
        Some(dir.join(format!("mdm9x07-{serial:08x}")).join("installed"))
    }

    /// Whether this chip's journal names an install that neither committed nor was refused
    /// before its first write.
    fn interrupted(&self) -> bool {
        self.journal_path()
            .is_some_and(|path| Journal::load(&path).package.is_some())
    }

    /// The host copy of `partition` ([`crate::installed`]): the one this session made, or one
    /// made now — only while the programmer runs and before the install began, so never of
    /// bytes this install wrote. A copy kept by an interrupted install (the journal says so) is
    /// taken as it is, since the partition may be erased by now. `None`: not a partition an
    /// image is installed in (protected, unknown), or too late to make the copy.
    fn host_copy(&mut self, partition: &str) -> Result<Option<&mut HostCopy>, Error> {
        if let Some(at) = self.copies.iter().position(|c| c.partition() == partition) {
            return Ok(self.copies.get_mut(at));
        }
        if self.stage != Stage::Ready {
            return Ok(None);
        }
        let Ok((p, storage)) = self.placed(partition) else {
            return Ok(None);
        };
        if p.protected {
            return Ok(None);
        }
        let capacity = u64::from(p.blocks) * u64::from(storage.block_size);
        let kept = self
            .installed_dir()
            .zip(installed::file_name(partition))
            .map(|(dir, name)| dir.join(name));
        let copy = match kept {
            Some(path) => {
                let resumable = self.interrupted()
                    && std::fs::metadata(&path).is_ok_and(|m| m.is_file() && m.len() <= capacity);
                if !resumable {
                    self.copy_partition(&p, &path)?;
                }
                let io = |e: std::io::Error| Error::Storage(format!("{}: {e}", path.display()));
                let file = std::fs::File::open(&path).map_err(io)?;
                let len = file.metadata().map_err(io)?.len();
                HostCopy::new(partition, file, len, resumable)
            }
            None => {
                let io = |e: std::io::Error| {
                    Error::Storage(format!("the temporary copy of '{partition}': {e}"))
                };
                let mut out = std::io::BufWriter::new(tempfile::tempfile().map_err(io)?);
                let len = self.read_blocks(&p, &mut out, &io)?;
                let file = out.into_inner().map_err(|e| io(e.into_error()))?;
                HostCopy::new(partition, file, len, false)
            }
        };
        self.copies.push(copy);
        Ok(self.copies.last_mut())
    }

    /// What the user does after a write or read-back of a delta install failed: the modem
    /// waits in download mode, and the install may have erased its source.
    fn after_delta_failure(&self, err: PluginError) -> PluginError {
        if self.copies.is_empty() {
            return err;
        }
        let sources = self
            .copies
            .iter()
            .map(|c| format!("'{}'", c.partition()))
            .collect::<Vec<_>>()
            .join(", ");
        let next = match self.installed_dir() {
            Some(dir) if self.config.journal_dir.is_some() => format!(
                "run the same delta package again: it reads its source from the copy kept in {}, once that matches the delta's signed source digest. Or install the full package",
                dir.display()
            ),
            _ => "the copy of it this run made is gone with the run, so install the full package"
                .to_owned(),
        };
        err.with_remedy(format!(
            "The modem waits in download mode (power-cycle it if it does not show as 05c6:9008). This delta install may have erased its source in {sources}: {next}."
        ))
    }

    fn placed(&self, partition: &str) -> Result<(Placed, StorageInfo), Error> {
        let storage = self
            .storage
            .ok_or_else(|| Error::Unsupported("the programmer is not running".into()))?;
        let p = self
            .partitions
            .iter()
            .find(|p| p.name == partition)
            .cloned()
            .ok_or_else(|| Error::Unsupported(format!("no partition '{partition}'")))?;
        Ok((p, storage))
    }

    /// Checks every image against the layout (the geometry descriptor against the device's
    /// geometry, the partition-table step against the policy and its place) before anything
    /// is written, copies the protected partitions (and, for a table rewrite, the old table),
    /// and resumes from the journal. Nothing is erased here: each partition is erased when
    /// its image starts, by the layout in force then (the new one after a table rewrite).
    fn do_begin(&mut self, plan: &InstallPlan) -> Result<(), Error> {
        if self.stage != Stage::Ready {
            return Err(Error::Unsupported(
                "begin before the programmer runs (the package has no 'programmer' image?)".into(),
            ));
        }
        let device = self
            .geometry()
            .ok_or_else(|| Error::Unsupported("the programmer is not running".into()))?;
        if let Some(g) = plan
            .images
            .iter()
            .find(|i| i.partition == GEOMETRY_PARTITION)
            && g.digest != device.digest()
        {
            return Err(Error::GeometryMismatch {
                package: NandGeometry::known_by_digest(&g.digest),
                device,
            });
        }
        let on_nand = |i: &&veriflash_plugin::PlannedImage| i.partition != GEOMETRY_PARTITION;
        let rewrites_table = plan.images.iter().any(|i| i.partition == MIBIB_PARTITION);
        if rewrites_table {
            if !self.config.allow_partition_table {
                return Err(Error::Unsupported(
                    "the package rewrites the partition table (MIBIB), which this session does not allow"
                        .into(),
                ));
            }
            // A device that outlives the session needs the old table kept where the next run
            // finds it, should power fail mid-rewrite; the emulator never comes back.
            if self.config.backup_dir.is_none() && self.config.persistent {
                return Err(Error::Unsupported(
                    "a partition-table rewrite needs a backup directory for the old table".into(),
                ));
            }
            if plan
                .images
                .iter()
                .find(on_nand)
                .map(|i| i.partition.as_str())
                != Some(MIBIB_PARTITION)
            {
                return Err(Error::Unsupported(
                    "the partition-table image must come before every image written to NAND: the images after it are placed by the new table"
                        .into(),
                ));
            }
        }
        // Check everything before writing anything. After a table rewrite the rest is checked
        // again against the new table (`table_rewritten`).
        for image in plan.images.iter().filter(on_nand) {
            if rewrites_table && image.partition != MIBIB_PARTITION {
                continue;
            }
            let (p, s) = self.placed(&image.partition)?;
            if p.protected && !(p.name == MIBIB_PARTITION && rewrites_table) {
                return Err(Error::Unsupported(format!(
                    "partition '{}' holds device-unique data and is never erased",
                    p.name
                )));
            }
            let capacity = u64::from(p.blocks) * u64::from(s.block_size);
            if image.size > capacity {
                return Err(Error::Unsupported(format!(
                    "{} bytes do not fit partition '{}' ({capacity} bytes)",
                    image.size, p.name
                )));
            }
        }
        // Copies first: a backup that cannot be made refuses the install before anything changes.
        self.back_up_protected()?;
        if rewrites_table
            && !self.layout_from_backup
            && let Some(path) = self.table_backup_path()
        {
            let (mibib, _) = self.placed(MIBIB_PARTITION)?;
            self.copy_partition(&mibib, &path)?;
        }
        let previous = self
            .journal_path()
            .map(|path| Journal::load(&path))
            .unwrap_or_default();
        let claimed: Vec<String> = if previous.package == Some(plan.package_id) {
            previous
                .done
                .into_iter()
                .filter(|d| plan.images.iter().any(|i| i.partition == *d))
                .collect()
        } else {
            Vec::new()
        };
        // The journal says what an earlier run finished on a chip with this serial number; the
        // chip says what it holds now. Skip only partitions that read back as the package's
        // image: another tool, a re-flashed or a swapped board must not make us skip one. The
        // partitions are those of the table in force: after a finished table rewrite, the new.
        self.resumed.clear();
        for name in claimed {
            let Some(image) = plan.images.iter().find(|i| i.partition == name) else {
                continue;
            };
            if self.placed(&name).is_ok()
                && self.partition_digest(&name, image.size)? == image.digest
            {
                self.resumed.push(name);
            }
        }
        self.journal = Journal {
            package: Some(plan.package_id),
            done: self.resumed.clone(),
        };
        self.save_journal()?;
        self.plan = Some(plan.clone());
        self.done.clear();
        self.descriptor.clear();
        self.stage = Stage::Installing;
        Ok(())
    }

    /// After the MIBIB image is programmed: reads it back (its digest must be the package's),
    /// parses the new table, and lays out the rest of the install by it — the MIBIB must stay
    /// where it was, and every remaining image must land on a partition it has, unprotected,
    /// that holds it.
    fn table_rewritten(&mut self, size: u64) -> Result<(), Error> {
        let expected = self
            .plan
            .as_ref()
            .and_then(|plan| plan.images.iter().find(|i| i.partition == MIBIB_PARTITION))
            .map(|i| i.digest);
        if Some(self.partition_digest(MIBIB_PARTITION, size)?) != expected {
            return Err(Error::Storage(
                "the partition table reads back different bytes than were written".into(),
            ));
        }
        let (old, info) = self.placed(MIBIB_PARTITION)?;
        let table = match self.table_at(&info, old.first_block)? {
            Some(Ok(t)) => t,
            Some(Err(e)) => return Err(e),
            None => {
                return Err(Error::PartitionTable(
                    "the new MIBIB image has no MBN header on its first page".into(),
                ));
            }
        };
        let placed = table.place(info.total_blocks)?;
        if !placed
            .iter()
            .any(|p| p.name == MIBIB_PARTITION && p.first_block == old.first_block)
        {
            return Err(Error::PartitionTable(format!(
                "the new table moves the MIBIB away from block {}, where it was written",
                old.first_block
            )));
        }
        let rest: Vec<(String, u64)> = self
            .plan
            .iter()
            .flat_map(|plan| plan.images.iter())
            .filter(|i| i.partition != GEOMETRY_PARTITION && i.partition != MIBIB_PARTITION)
            .map(|i| (i.partition.clone(), i.size))
            .collect();
        for (name, size) in rest {
            let Some(p) = placed.iter().find(|p| p.name == name) else {
                return Err(Error::PartitionTable(format!(
                    "the new table has no partition '{name}' for the package's image"
                )));
            };
            let capacity = u64::from(p.blocks) * u64::from(info.block_size);
            if p.protected || size > capacity {
                return Err(Error::PartitionTable(format!(
                    "the package's '{name}' ({size} bytes) cannot go to '{name}' of the new table ({capacity} bytes{})",
                    if p.protected { ", protected" } else { "" }
                )));
            }
        }
        self.partitions = placed;
        self.layout_from_backup = false;
        Ok(())
    }

    fn do_write(&mut self, partition: &str, chunk: &Chunk<'_>) -> Result<(), Error> {
        if self.stage != Stage::Installing {
            return Err(Error::Unsupported("write before begin".into()));
        }
        let size = self
            .plan
            .as_ref()
            .and_then(|plan| plan.images.iter().find(|i| i.partition == partition))
            .map(|i| i.size)
            .ok_or_else(|| Error::Unsupported(format!("'{partition}' is not in the plan")))?;
        if partition == GEOMETRY_PARTITION {
            // Checked at begin by its digest; here only its bytes are matched too, never written.
            self.descriptor.extend_from_slice(chunk.bytes());
            if self.descriptor.len() as u64 > MAX_DESCRIPTOR_LEN {
                return Err(Error::BadLength {
                    what: "geometry descriptor",
                    length: self.descriptor.len() as u64,
                    limit: MAX_DESCRIPTOR_LEN,
                });
            }
            if self.descriptor.len() as u64 >= size {
                if self.geometry().map(|g| g.descriptor()) != Some(self.descriptor.clone()) {
                    let device = self
                        .geometry()
                        .ok_or_else(|| Error::Unsupported("no geometry".into()))?;
                    return Err(Error::GeometryMismatch {
                        package: None,
                        device,
                    });
                }
                self.done.push(partition.to_owned());
            }
            return Ok(());
        }
        if self.resumed.iter().any(|r| r == partition) {
            // Programmed completely by an earlier run of this package: its read-back checks it.
            if chunk.offset() + chunk.bytes().len() as u64 >= size
                && !self.done.iter().any(|d| d == partition)
            {
                self.done.push(partition.to_owned());
            }
            return Ok(());
        }
        let (p, s) = self.placed(partition)?;
        let page = u64::from(s.page_size);
        if chunk.offset() == 0 {
            if self.stream.is_some() {
                return Err(Error::Unsupported(
                    "a new image began before the last one ended".into(),
                ));
            }
            let ppb = u64::from(s.pages_per_block());
            let start = u64::from(p.first_block) * ppb;
            let last = start + u64::from(p.blocks) * ppb - 1;
            self.conn.erase(
                start,
                u64::from(p.blocks) * ppb,
                s.page_size,
                s.pages_per_block(),
            )?;
            self.conn.start_program(
                start,
                size.div_ceil(page),
                s.page_size,
                s.pages_per_block(),
                last,
            )?;
            self.stream = Some(Stream {
                partition: partition.to_owned(),
                size,
                sent: 0,
                pending: Vec::new(),
            });
        }
        let mut stream = self
            .stream
            .take()
            .filter(|st| {
                st.partition == partition && st.sent + st.pending.len() as u64 == chunk.offset()
            })
            .ok_or_else(|| Error::Unsupported(format!("chunks of '{partition}' out of order")))?;
        stream.pending.extend_from_slice(chunk.bytes());
        let unit = self.conn.max_payload().max(1) / (s.page_size as usize) * (s.page_size as usize);
        let unit = unit.max(s.page_size as usize);
        let end = stream.sent + stream.pending.len() as u64;
        if end >= stream.size {
            // Last chunk: pad to whole pages with the erased value.
            let padded = usize::try_from(stream.size.div_ceil(page) * page - stream.sent)
                .unwrap_or(usize::MAX);
            stream.pending.resize(padded, 0xFF);
            self.conn.send_raw(&stream.pending)?;
            self.conn.finish_program()?;
            if partition == MIBIB_PARTITION {
                self.table_rewritten(size)?;
            }
            self.done.push(partition.to_owned());
            self.journal.done.push(partition.to_owned());
            self.save_journal()?;
            return Ok(());
        }
        let whole = stream.pending.len() / unit * unit;
        if whole > 0 {
            let rest = stream.pending.split_off(whole);
            self.conn.send_raw(&stream.pending)?;
            stream.sent += whole as u64;
            stream.pending = rest;
        }
        self.stream = Some(stream);
        Ok(())
    }

    fn do_read_back(&mut self, partition: &str, size: u64) -> Result<Digest, Error> {
        let digest = self.partition_digest(partition, size)?;
        let expected = self
            .plan
            .as_ref()
            .and_then(|plan| plan.images.iter().find(|i| i.partition == partition))
            .map(|i| i.digest);
        if expected.is_some_and(|e| e != digest) {
            // Not what the package holds: the next run must program it again.
            self.journal.done.retain(|d| d != partition);
            self.save_journal()?;
        }
        Ok(digest)
    }

    /// SHA-256 of the first `size` bytes of `partition`, read through Firehose.
    fn partition_digest(&mut self, partition: &str, size: u64) -> Result<Digest, Error> {
        if partition == GEOMETRY_PARTITION {
            // Nothing on NAND: what the device "holds" there is its own geometry.
            let g = self
                .geometry()
                .ok_or_else(|| Error::Unsupported("the programmer is not running".into()))?;
            let d = g.descriptor();
            return Ok(veriflash_hash::sha256(
                d.get(..usize::try_from(size).unwrap_or(usize::MAX).min(d.len()))
                    .unwrap_or(&d),
            ));
        }
        let (p, s) = self.placed(partition)?;
        let page = u64::from(s.page_size);
        let ppb = u64::from(s.pages_per_block());
        let mut hasher = veriflash_hash::Sha256::new();
        let mut left = size;
        self.conn.read(
            u64::from(p.first_block) * ppb,
            size.div_ceil(page),
            s.page_size,
            &mut |bytes| {
                let n = usize::try_from(left.min(bytes.len() as u64)).unwrap_or(0);
                hasher.update(bytes.get(..n).unwrap_or(&[]));
                left -= n as u64;
            },
        )?;
        Ok(hasher.finalize())
    }
}

impl<T: Transport> FlashSession for Mdm9x07Session<T> {
    fn device_info(&mut self) -> Result<DeviceInfo, PluginError> {
        if self.stage == Stage::Unknown {
            self.identify()?;
        }
        Ok(self.info()?)
    }

    /// When the delta's source was read from copies an interrupted install kept: they are
    /// what does not match (damaged, or from before another tool re-flashed the modem), and
    /// only the full package or fresh copies get past them.
    fn source_mismatch_remedy(&self) -> Option<String> {
        let resumed: Vec<String> = self
            .copies
            .iter()
            .filter(|c| c.resumed())
            .map(|c| format!("'{}'", c.partition()))
            .collect();
        if resumed.is_empty() {
            return None;
        }
        let dir = self.installed_dir()?;
        Some(format!(
            "The source of {} was read from the copy an interrupted install kept in {}, and that copy is not the image this delta applies to: damaged, or kept from before the modem was flashed by other means. Install the full package (it also ends the kept copies); or, if the modem still runs the delta's source, delete {} and run the delta again, which copies the modem afresh. Nothing was written.",
            resumed.join(", "),
            dir.display(),
            dir.display()
        ))
    }

    /// For a chip the product table lacks: the exact `[[product]]` entry that names it as the
    /// package's product, and where it goes.
    fn identity_remedy(&self, product: &str, hardware_revision: Option<&str>) -> Option<String> {
        let id = self.identity?;
        let known = self
            .config
            .products
            .iter()
            .any(|p| p.oem_id == id.oem_id() && p.model_id == id.model_id());
        if known {
            return None;
        }
        let file = self.config.products_file.as_ref().map_or_else(
            || crate::products::FILE.to_owned(),
            |p| p.display().to_string(),
        );
        Some(format!(
            "This modem (HWID {:#018x}{}) is in no product table. If it is a {product}, add these lines to {file} and run again:\n\n[[product]]\noem_id = {:#06x}\nmodel_id = {:#06x}\nproduct = \"{product}\"\nhardware_revision = \"{}\"\n",
            id.hw_id,
            id.pk_hash
                .map(|h| format!(", OEM PK hash {h}"))
                .unwrap_or_default(),
            id.oem_id(),
            id.model_id(),
            hardware_revision.unwrap_or("r1"),
        ))
    }

    fn loader_partition(&self) -> Option<&str> {
        Some(PROGRAMMER_PARTITION)
    }

    fn load(&mut self, image_size: u64, chunk: Chunk<'_>) -> Result<(), PluginError> {
        if image_size > MAX_PROGRAMMER_LEN {
            return Err(Error::BadLength {
                what: "programmer image",
                length: image_size,
                limit: MAX_PROGRAMMER_LEN,
            }
            .into());
        }
        if self.stage != Stage::Identified {
            return Err(Error::Unsupported("load before the chip was identified".into()).into());
        }
        if chunk.offset() != self.programmer.len() as u64 {
            return Err(Error::Unsupported("programmer chunks out of order".into()).into());
        }
        self.programmer.extend_from_slice(chunk.bytes());
        if (self.programmer.len() as u64) < image_size {
            return Ok(());
        }
        // The HWID gate, again, right before anything leaves for the device (run_programmer).
        let image = std::mem::take(&mut self.programmer);
        Ok(self.run_programmer(&image)?)
    }

    fn begin(&mut self, plan: &InstallPlan) -> Result<(), PluginError> {
        Ok(self.do_begin(plan)?)
    }

    fn write(&mut self, chunk: Chunk<'_>) -> Result<(), PluginError> {
        if self
            .plan
            .as_ref()
            .is_some_and(|plan| plan.package_id != *chunk.package_id())
        {
            return Err(PluginError::Unsupported(format!(
                "a chunk of image '{}' belongs to another package than the install that began",
                chunk.image()
            )));
        }
        self.do_write(chunk.partition(), &chunk)
            .map_err(|e| self.after_delta_failure(e.into()))
    }

    fn read_back(&mut self, partition: &str, size: u64) -> Result<Digest, PluginError> {
        self.do_read_back(partition, size)
            .map_err(|e| self.after_delta_failure(e.into()))
    }

    /// The partition's length, once the session holds a host copy of it made before the
    /// install's first write (kept as [`SessionConfig::backup_dir`] says): the first call for a
    /// partition, while the programmer runs and before `begin`, reads it back through Firehose
    /// into that copy. NAND records no image length, so this is the partition's (a delta's
    /// source is its first bytes; a partition that reaches the end of the NAND is as long as
    /// its good blocks). `None` before the programmer runs (a download
    /// plans its reuse then, so it reuses no NAND: see the crate's docs), after `begin` for a
    /// partition not copied yet, and for protected or unknown partitions. The geometry
    /// descriptor is the device's own.
    fn installed_len(&mut self, partition: &str) -> Result<Option<u64>, PluginError> {
        if partition == GEOMETRY_PARTITION {
            return Ok(self.geometry().map(|g| g.descriptor().len() as u64));
        }
        Ok(self.host_copy(partition)?.map(|c| c.len()))
    }

    fn read_installed(
        &mut self,
        partition: &str,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<(), PluginError> {
        if partition == PROGRAMMER_PARTITION {
            return Err(PluginError::Unsupported(
                "the Firehose programmer is served to the modem, never stored on it, so a delta cannot copy it from the modem".into(),
            )
            .with_remedy(
                "Install the full package. (For its packager: a delta package for an MDM9x07 must carry the 'programmer' image whole: `veriflash pack --delta-from OLD.vfp --delta-whole programmer`.)",
            ));
        }
        if partition == GEOMETRY_PARTITION {
            let descriptor = self.geometry().map(|g| g.descriptor()).unwrap_or_default();
            let range = usize::try_from(offset)
                .ok()
                .and_then(|at| descriptor.get(at..at.checked_add(buf.len())?));
            return match range {
                Some(bytes) => {
                    buf.copy_from_slice(bytes);
                    Ok(())
                }
                None => Err(PluginError::Unsupported(format!(
                    "{} bytes at {offset} of the {}-byte geometry descriptor",
                    buf.len(),
                    descriptor.len()
                ))),
            };
        }
        match self.host_copy(partition)? {
            Some(copy) => Ok(copy.read_at(offset, buf)?),
            None => Err(Error::Unsupported(format!(
                "'{partition}' was not read back before the install began writing"
            ))
            .into()),
        }
    }

    fn commit(&mut self) -> Result<(), PluginError> {
        let complete = self
            .plan
            .as_ref()
            .is_some_and(|plan| plan.images.iter().all(|i| self.done.contains(&i.partition)));
        if self.stage != Stage::Installing || !complete {
            return Err(Error::Unsupported("commit before every image was written".into()).into());
        }
        self.conn.power_reset()?;
        self.stage = Stage::Reset;
        if let Some(path) = self.journal_path() {
            // Best effort: a stale journal of a committed package only skips programs whose
            // read-back still checks them.
            let _ = std::fs::remove_file(path);
        }
        // The sources of a delta are what the modem ran before; best effort too: a stale copy
        // is used only after an interrupted install, and only bytes that match signed
        // digests are ever written from it.
        self.copies.clear();
        if let Some(dir) = self.installed_dir() {
            let _ = std::fs::remove_dir_all(dir);
        }
        self.last_result = Some(LastResult {
            code: 0,
            message: "success".into(),
        });
        Ok(())
    }

    fn status(&mut self) -> Result<DeviceStatus, PluginError> {
        let info = self.device_info()?;
        Ok(DeviceStatus {
            info,
            last_result: self.last_result.clone(),
            interrupted_install: self
                .journal_path()
                .and_then(|path| Journal::load(&path).package),
        })
    }

    fn abort(&mut self, result: &LastResult) -> Result<(), PluginError> {
        self.last_result = Some(result.clone());
        self.stream = None;
        Ok(())
    }
}
