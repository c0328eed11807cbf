//! The flash session (the plugin that opens it is in [`crate::target`]): identity over Sahara, the programmer served from the
//! package, partitions from the MIBIB, erase + program in whole pages, read-back, reset.

use std::path::{Path, PathBuf};

use veriflash_plugin::{
    Chunk, DeviceInfo, DeviceStatus, Digest, FlashSession, InstallPlan, LastResult, PartitionInfo,
    PluginError, StorageGeometry,
};

use crate::driver::{Connection, DeviceMode, StorageInfo, Timeouts};
use crate::error::Error;
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
    pub backup_dir: Option<PathBuf>,
    /// Whether the chip's serial number identifies one physical device that outlives the
    /// session ([`DeviceInfo::id`], the key of the host's record of its anti-rollback floor and
    /// trust anchors). `false` for the emulator: every `mdm9x07:emulator` is a new, blank
    /// device that only shares a serial number with the last one.
    pub persistent: bool,
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
        }
    }

    /// The chip's identity, once read.
    #[must_use]
    pub fn identity(&self) -> Option<ChipIdentity> {
        self.identity
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

    /// Reads geometry and partition table from the running programmer.
    fn read_layout(&mut self) -> Result<(), Error> {
        self.conn.configure(self.config.payload)?;
        let info = self.conn.storage_info()?;
        let ppb = u64::from(info.pages_per_block());
        let scan = mibib::SCAN_BLOCKS.min(info.total_blocks);
        let mut table = None;
        for block in 0..scan {
            let mut page = Vec::new();
            self.conn
                .read(u64::from(block) * ppb, 1, info.page_size, &mut |b| {
                    page.extend_from_slice(b);
                })?;
            if mibib::is_mibib_header(&page) {
                let pages = (mibib::TABLE_HEADER_LEN
                    + mibib::ENTRY_LEN * mibib::MAX_PARTS_V4 as usize)
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
                table = Some(Table::parse(&bytes)?);
                break;
            }
        }
        let table = table
            .ok_or_else(|| Error::PartitionTable(format!("no MIBIB in the first {scan} blocks")))?;
        self.partitions = table.place(info.total_blocks)?;
        self.storage = Some(info);
        self.stage = Stage::Ready;
        Ok(())
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
                        protected: p.protected,
                    })
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
    /// stays one transfer, whatever size the device's MIBIB claims).
    fn back_up_protected(&mut self) -> Result<(), Error> {
        let (Some(dir), Some(identity), Some(storage)) =
            (self.config.backup_dir.clone(), self.identity, self.storage)
        else {
            return Ok(());
        };
        let dir = dir.join(format!("mdm9x07-{:08x}", identity.serial));
        let io = |what: &Path, e: std::io::Error| {
            Error::Storage(format!("backup {}: {e}", what.display()))
        };
        std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
        let protected: Vec<Placed> = self
            .partitions
            .iter()
            .filter(|p| p.protected)
            .cloned()
            .collect();
        let ppb = u64::from(storage.pages_per_block());
        for p in protected {
            let path = dir.join(format!("{}.bin", p.name));
            let tmp = dir.join(format!("{}.bin.tmp", p.name));
            let mut file =
                std::io::BufWriter::new(std::fs::File::create(&tmp).map_err(|e| io(&tmp, e))?);
            let mut failed: Option<std::io::Error> = None;
            self.conn.read(
                u64::from(p.first_block) * ppb,
                u64::from(p.blocks) * ppb,
                storage.page_size,
                &mut |bytes| {
                    if failed.is_none()
                        && let Err(e) = std::io::Write::write_all(&mut file, bytes)
                    {
                        failed = Some(e);
                    }
                },
            )?;
            if let Some(e) = failed {
                return Err(io(&tmp, e));
            }
            let file = file.into_inner().map_err(|e| io(&tmp, e.into_error()))?;
            file.sync_all().map_err(|e| io(&tmp, e))?;
            std::fs::rename(&tmp, &path).map_err(|e| io(&path, e))?;
        }
        Ok(())
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

    fn do_begin(&mut self, plan: &InstallPlan) -> Result<(), Error> {
        if self.stage != Stage::Ready {
            return Err(Error::Unsupported(
                "begin before the programmer runs (the package has no 'programmer' image?)".into(),
            ));
        }
        // Check everything before erasing anything.
        let mut targets = Vec::with_capacity(plan.images.len());
        for image in &plan.images {
            let (p, s) = self.placed(&image.partition)?;
            if p.protected {
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
            targets.push((p, s));
        }
        // Copies first: a backup that cannot be made refuses the install before anything changes.
        self.back_up_protected()?;
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
        // image: another tool, a re-flashed or a swapped board must not make us skip one.
        self.resumed.clear();
        for name in claimed {
            let Some(image) = plan.images.iter().find(|i| i.partition == name) else {
                continue;
            };
            if self.partition_digest(&name, image.size)? == image.digest {
                self.resumed.push(name);
            }
        }
        self.journal = Journal {
            package: Some(plan.package_id),
            done: self.resumed.clone(),
        };
        self.save_journal()?;
        for (p, s) in targets {
            if self.resumed.contains(&p.name) {
                continue;
            }
            let ppb = u64::from(s.pages_per_block());
            self.conn.erase(
                u64::from(p.first_block) * ppb,
                u64::from(p.blocks) * ppb,
                s.page_size,
            )?;
        }
        self.plan = Some(plan.clone());
        self.done.clear();
        self.stage = Stage::Installing;
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
        // The HWID gate, again, right before anything leaves for the device.
        let id = self
            .identity
            .ok_or(Error::Unsupported("no identity".into()))?;
        if !id.is_mdm9x07() {
            return Err(Error::WrongChip {
                msm_id: id.msm_id(),
            }
            .into());
        }
        let image = std::mem::take(&mut self.programmer);
        self.conn.upload(&image)?;
        self.read_layout()?;
        Ok(())
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
        Ok(self.do_write(chunk.partition(), &chunk)?)
    }

    fn read_back(&mut self, partition: &str, size: u64) -> Result<Digest, PluginError> {
        Ok(self.do_read_back(partition, size)?)
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
