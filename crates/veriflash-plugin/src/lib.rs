#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

#[cfg(feature = "config")]
pub mod config;
#[cfg(feature = "file-device")]
pub mod file_device;
pub mod flock;
pub mod hazmat;
#[cfg(feature = "file-device")]
mod readback;
#[cfg(feature = "file-device")]
mod units;

use std::fmt;

pub use veriflash_hash::Digest;
use veriflash_hash::VerifiedChunk;

/// One of the two copies of an A/B partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Slot {
    /// The first copy.
    A,
    /// The second copy.
    B,
}

impl Slot {
    /// The other slot: where an update is written while this one keeps booting.
    #[must_use]
    pub fn other(self) -> Self {
        match self {
            Self::A => Self::B,
            Self::B => Self::A,
        }
    }

    /// `"a"` or `"b"`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::A => "a",
            Self::B => "b",
        }
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How the device's storage must be written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StorageGeometry {
    /// Smallest unit that can be erased (a NAND block); writes start on erased units.
    pub erase_block: u32,
    /// Smallest unit that can be written (a NAND page or an eMMC sector); every write is a whole
    /// number of these, the last one padded.
    pub write_unit: u32,
}

/// A partition as the device reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionInfo {
    /// Name as a manifest refers to it.
    pub name: String,
    /// Capacity in bytes (of each slot, for A/B partitions).
    pub size: u64,
    /// Whether the partition has A and B copies: an install writes the inactive copy and the
    /// commit switches to it.
    pub slotted: bool,
    /// Whether the partition must never be written or erased (calibration, EFS, device-unique
    /// data). A package naming it is refused before anything is written.
    pub protected: bool,
}

/// What a device says about itself before anything is written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    /// A stable identity of this very device (a chip serial number, a board id), if it has
    /// one: what the pipeline keys a device's state kept on the host by (its anti-rollback
    /// floor and trust anchors, when the device cannot hold them itself).
    pub id: Option<String>,
    /// Product identifier, compared with the manifest's.
    pub product: String,
    /// Chipset identifier, compared with the manifest's.
    pub chipset: String,
    /// Hardware revision, compared with the manifest's list.
    pub hardware_revision: String,
    /// How writes must be shaped.
    pub geometry: StorageGeometry,
    /// The device's partitions.
    pub partitions: Vec<PartitionInfo>,
    /// The slot the device boots now; `None` for a single-slot device, whose plugin makes
    /// installs resumable with a journal instead.
    pub active_slot: Option<Slot>,
    /// The anti-rollback floor: packages with a lower security version are refused.
    pub security_floor: u64,
    /// Version string of the installed software, if any was installed by veriflash.
    pub installed_version: Option<String>,
    /// Bytes the device can still take for staging an install, where it stages at all
    /// (`None`: images are written in place, nothing is staged).
    pub free_space: Option<u64>,
}

impl DeviceInfo {
    /// The partition called `name`.
    #[must_use]
    pub fn partition(&self, name: &str) -> Option<&PartitionInfo> {
        self.partitions.iter().find(|p| p.name == name)
    }
}

/// One image of an install: which partition, how many bytes, what they must hash to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedImage {
    /// Target partition.
    pub partition: String,
    /// Image size in bytes.
    pub size: u64,
    /// Signed SHA-256 of the whole image, for read-back.
    pub digest: Digest,
}

/// What an install will do, handed to the session before the first write so it can journal it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstallPlan {
    /// SHA-256 of the package's signed header and manifest: identifies the package.
    pub package_id: Digest,
    /// The slot that will be written (the inactive one); `None` on a single-slot device.
    pub target_slot: Option<Slot>,
    /// Images in the order they will be written.
    pub images: Vec<PlannedImage>,
    /// Version string of the new software.
    pub software_version: String,
    /// Security version of the new software; becomes the floor at commit.
    pub security_version: u64,
    /// A new trust-anchor set the package carries and that was authorized by the device's
    /// current one (an opaque, self-describing blob): a device that holds its anchors
    /// ([`FlashSession::holds_trust_anchors`]) stores it at commit, in the same atomic step as
    /// the slot switch and the floor.
    pub trust_anchors: Option<Vec<u8>>,
}

/// The outcome of the last install attempt, kept on the device for `status`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LastResult {
    /// 0 for success, otherwise the stable error code.
    pub code: u8,
    /// One line for people.
    pub message: String,
}

/// A device's state as `veriflash status` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceStatus {
    /// Device description.
    pub info: DeviceInfo,
    /// Outcome of the last install attempt.
    pub last_result: Option<LastResult>,
    /// An install that started and neither committed nor was aborted (power loss, crash).
    pub interrupted_install: Option<Digest>,
}

/// One installed image compared with what was recorded when it was installed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstalledImage {
    /// The partition (of the active slot, on an A/B device).
    pub partition: String,
    /// Bytes recorded as installed.
    pub size: u64,
    /// Whether those bytes still hash to the recorded SHA-256.
    pub intact: bool,
}

/// Why a plugin operation failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum PluginError {
    /// The device or its storage failed; the message says how.
    Device(String),
    /// Talking to the device failed (I/O, timeout, disconnect).
    Transport(std::io::Error),
    /// The device lost power or stopped responding mid-operation.
    PowerLoss,
    /// The caller asked for something the device cannot do (unknown partition, bad alignment).
    Unsupported(String),
    /// What was read back differs from what was written.
    ReadBackMismatch {
        /// The partition.
        partition: String,
    },
    /// No plugin accepts this target string. The registry's error gives the forms its plugins
    /// accept as the remedy ([`Registry::target_forms`]).
    UnknownTarget(String),
    /// The target names something that exists but is not a device (a text file given where a
    /// device file belongs): the caller named the wrong thing. The message says what it is.
    NotADevice(String),
    /// The device is another chip than this plugin (or the package) is for, found before
    /// anything was sent to it.
    WrongChip {
        /// What was expected, with its article ("an MDM9207/MDM9607").
        expected: String,
        /// What the device is, with its article ("an msm8916").
        found: String,
    },
    /// The device is the right chip but other hardware than the package is for (another NAND
    /// geometry, another board), found before anything was written.
    WrongHardware {
        /// What the package is for ("4 KiB pages, 256 KiB blocks").
        expected: String,
        /// What the device has.
        found: String,
    },
    /// The device did not answer within its time limit (it may have reset, or lost power); the
    /// message says what was waited for, as a whole sentence.
    Timeout(String),
    /// The device answered outside its protocol: a malformed or unexpected message, a command
    /// it refused.
    Protocol(String),
    /// Another session holds the device (or changed its state under this one): a device is
    /// claimed by one session at a time, and the second claimant is refused before anything is
    /// read or written. The message names the device.
    Busy(String),
    /// The storage behind the device — a device file, a block device, a port — at `path` could
    /// not be opened, read or written. The I/O error's kind tells the caller what to fix
    /// (missing, permission denied, no space left).
    Storage {
        /// The path the operation was on.
        path: std::path::PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// `error`, with what to do about it as only the plugin knows: the command that makes a
    /// missing device file, the mode a modem must be in. The pipeline maps `error` as if it
    /// came alone and reports `remedy` instead of its kind's generic one. Made by
    /// [`PluginError::with_remedy`].
    WithRemedy {
        /// The error.
        error: Box<PluginError>,
        /// What to do, in a sentence or two.
        remedy: String,
    },
}

impl PluginError {
    /// This error with `remedy` as what to do about it (replacing an earlier one).
    #[must_use]
    pub fn with_remedy(self, remedy: impl Into<String>) -> Self {
        let error = match self {
            Self::WithRemedy { error, .. } => error,
            other => Box::new(other),
        };
        Self::WithRemedy {
            error,
            remedy: remedy.into(),
        }
    }

    /// The remedy a plugin gave with [`PluginError::with_remedy`], if any.
    #[must_use]
    pub fn remedy(&self) -> Option<&str> {
        match self {
            Self::WithRemedy { remedy, .. } => Some(remedy),
            _ => None,
        }
    }

    /// The error itself, without the remedy a plugin may have wrapped it in: what decides its
    /// kind.
    #[must_use]
    pub fn without_remedy(&self) -> &Self {
        match self {
            Self::WithRemedy { error, .. } => error,
            other => other,
        }
    }
}

impl fmt::Display for PluginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Device(m) => write!(f, "device error: {m}"),
            Self::Transport(e) => write!(f, "transport error: {e}"),
            Self::PowerLoss => f.write_str("the device lost power"),
            Self::Unsupported(m) => write!(f, "not supported by this device: {m}"),
            Self::ReadBackMismatch { partition } => {
                write!(
                    f,
                    "partition '{partition}' reads back different bytes than were written"
                )
            }
            Self::UnknownTarget(t) => write!(f, "no plugin handles target '{t}'"),
            Self::NotADevice(m) => f.write_str(m),
            Self::WrongChip { expected, found } => {
                write!(f, "the device is {found}, not {expected}")
            }
            Self::WrongHardware { expected, found } => {
                write!(
                    f,
                    "the package is for {expected}, the device has {found}; nothing was written"
                )
            }
            Self::Timeout(m) => f.write_str(m),
            Self::Protocol(m) => write!(f, "protocol error: {m}"),
            Self::Busy(m) => write!(f, "in use: {m}"),
            Self::Storage { path, source } => write!(f, "{}: {source}", path.display()),
            Self::WithRemedy { error, .. } => error.fmt(f),
        }
    }
}

impl std::error::Error for PluginError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Transport(e) | Self::Storage { source: e, .. } => Some(e),
            Self::WithRemedy { error, .. } => error.source(),
            _ => None,
        }
    }
}

/// A verified chunk as a plugin receives it: bytes that matched a signed digest of a package
/// whose signatures verified, bound to that package, the image and the target partition.
///
/// Only the pipeline makes these ([`hazmat::bind`], right after the check), so a plugin can
/// rely on three things: the bytes were verified, they belong to the package of the
/// [`InstallPlan`] it was given ([`Chunk::package_id`]), and to the partition they name.
/// `veriflash_hash`'s public chunk verifier, for embedders who verify without flashing, makes
/// [`veriflash_hash::VerifiedChunk`]s, which no plugin method takes.
#[derive(Debug)]
pub struct Chunk<'a> {
    package_id: &'a Digest,
    image: &'a str,
    partition: &'a str,
    verified: VerifiedChunk<'a>,
}

impl<'a> Chunk<'a> {
    /// SHA-256 of the signed header and manifest of the package the chunk belongs to (the
    /// [`InstallPlan::package_id`]).
    #[must_use]
    pub fn package_id(&self) -> &'a Digest {
        self.package_id
    }

    /// The image's name in the manifest.
    #[must_use]
    pub fn image(&self) -> &'a str {
        self.image
    }

    /// The partition the image is for.
    #[must_use]
    pub fn partition(&self) -> &'a str {
        self.partition
    }

    /// Zero-based chunk index within the image.
    #[must_use]
    pub fn index(&self) -> u64 {
        self.verified.index()
    }

    /// Byte offset of the chunk's first byte in the image.
    #[must_use]
    pub fn offset(&self) -> u64 {
        self.verified.offset()
    }

    /// The verified bytes (decompressed, for a chunk stored compressed).
    #[must_use]
    pub fn bytes(&self) -> &'a [u8] {
        self.verified.bytes()
    }
}

/// An open connection to one device, through which one install runs.
///
/// A session holds its device **exclusively** for its whole life: two installs interleaved on
/// one device could leave a slot holding one version's bytes under another's record, or lower
/// the anti-rollback floor. [`Plugin::open`] claims the device (the file device takes an OS
/// lock on its file; serial and USB transports claim their port or interface) and refuses a
/// second claimant with [`PluginError::Busy`]; the claim ends when the session is dropped. A
/// plugin whose device cannot be locked says so in its documentation.
///
/// The pipeline calls, in order: [`FlashSession::device_info`], [`FlashSession::begin`], then
/// for each image [`FlashSession::write`] for every chunk in order and
/// [`FlashSession::read_back`], then [`FlashSession::commit`] — or [`FlashSession::abort`] on any
/// failure. A plugin may assume that every chunk it receives was verified against its signed
/// digest of the package it was given in `begin` ([`Chunk`] is made only by the pipeline) and
/// that `commit` comes only after every
/// image was written and read back.
pub trait FlashSession {
    /// Describes the device: identity, geometry, partitions, active slot, anti-rollback floor.
    ///
    /// # Errors
    /// When the device cannot be queried.
    fn device_info(&mut self) -> Result<DeviceInfo, PluginError>;

    /// Starts an install: journals the plan and prepares (erases) the target areas.
    ///
    /// # Errors
    /// When the plan does not fit the device or the device fails.
    fn begin(&mut self, plan: &InstallPlan) -> Result<(), PluginError>;

    /// Writes one verified chunk of an image at the chunk's offset in its partition
    /// ([`Chunk::partition`]).
    ///
    /// # Errors
    /// When the write fails, or the chunk is not of the package and partitions the plan named.
    fn write(&mut self, chunk: Chunk<'_>) -> Result<(), PluginError>;

    /// Reads back the first `size` bytes written to `partition` in the target slot and returns
    /// their SHA-256 (or asks the device for it).
    ///
    /// # Errors
    /// When the read fails.
    fn read_back(&mut self, partition: &str, size: u64) -> Result<Digest, PluginError>;

    /// Whether [`FlashSession::read_back_chunks`] is available. The pipeline uses it only to
    /// tell, after a read-back that differs from the signed whole-image digest, a device that
    /// stored other bytes from a package that contradicts itself.
    fn reads_back_chunks(&self) -> bool {
        false
    }

    /// Reads back the first `size` bytes of `partition` in the target slot as consecutive
    /// `chunk_size` pieces (the last one shorter) and returns each piece's SHA-256.
    ///
    /// # Errors
    /// When the read fails; the default refuses, for a session that does not
    /// [`FlashSession::reads_back_chunks`].
    fn read_back_chunks(
        &mut self,
        partition: &str,
        size: u64,
        chunk_size: u32,
    ) -> Result<Vec<Digest>, PluginError> {
        let _ = (partition, size, chunk_size);
        Err(PluginError::Unsupported(
            "this device reads back whole images only".to_owned(),
        ))
    }

    /// How many bytes of the image the software that boots now holds in `partition` can be
    /// read back with [`FlashSession::read_installed`]: what an install may reuse chunks from
    /// instead of downloading them (delta updates). `None` (the default): nothing is installed
    /// there, or the session cannot read it.
    ///
    /// What is read here must stay readable, unchanged, for the whole install, which may ask
    /// for it after writing began (a delta rebuilds each chunk from it right before writing
    /// the chunk). An A/B device reads the active slot while the install writes the other one.
    /// A single-slot device, whose install overwrites its only copy, may answer only from a
    /// copy it made on the host before the install's first write — the MDM9x07 session reads
    /// the partition back through its programmer into a file the first time it is asked here,
    /// before [`FlashSession::begin`] — and answers `None` for a partition it holds no such
    /// copy of. The pipeline hashes everything it reads against signed digests before using
    /// it (a delta's source whole, before anything is written; each rebuilt chunk before it is
    /// written), so a damaged or stale copy is refused, never flashed.
    ///
    /// The length may exceed the installed image's on a device that records no image length
    /// (NAND holds a partition's bytes, not how many of them an image filled): such a device
    /// answers how much of the partition it can read back, and a delta's source is then the
    /// first bytes of that.
    ///
    /// # Errors
    /// When the device cannot be queried.
    fn installed_len(&mut self, partition: &str) -> Result<Option<u64>, PluginError> {
        let _ = partition;
        Ok(None)
    }

    /// The SHA-256 of the image installed in `partition` as the device recorded it when the
    /// install that put it there committed — after its read-back matched that digest — or
    /// `None` for a device that keeps no such record (the default). A delta install checks its
    /// declared source against this record instead of hashing the installed image whole when
    /// the install policy asks for it (`SourceCheck::Recorded`); every range it copies is still
    /// hashed against its signed digest right before it is written.
    ///
    /// # Errors
    /// When the device cannot be queried.
    fn installed_digest(&mut self, partition: &str) -> Result<Option<Digest>, PluginError> {
        let _ = partition;
        Ok(None)
    }

    /// Reads `buf.len()` bytes of the image installed in `partition`, from byte `offset` (see
    /// [`FlashSession::installed_len`], whose answer says what may be read, and from where:
    /// the device, or the host copy a single-slot device made before its install's first
    /// write). The pipeline hashes what it reads against a signed chunk digest before any of
    /// it is written, so a damaged installed image (or copy) is never copied.
    ///
    /// # Errors
    /// When the range runs past [`FlashSession::installed_len`] or the read fails; the default
    /// refuses, for a session that reads nothing back.
    fn read_installed(
        &mut self,
        partition: &str,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<(), PluginError> {
        let _ = (partition, offset, buf);
        Err(PluginError::Unsupported(
            "this device cannot read back what it runs".to_owned(),
        ))
    }

    /// Makes the new software the one that boots and raises the anti-rollback floor, as one
    /// atomic step: after a power loss the device boots either the old or the new software.
    ///
    /// # Errors
    /// When the commit fails; the old software then still boots.
    fn commit(&mut self) -> Result<(), PluginError>;

    /// The device's state for display: its description, the last install's outcome, and any
    /// install that was interrupted.
    ///
    /// # Errors
    /// When the device cannot be queried.
    fn status(&mut self) -> Result<DeviceStatus, PluginError>;

    /// Re-reads every image the device records as installed in what it boots (the active slot)
    /// and compares it with the digest recorded at install time — what a bootloader's check
    /// would find. Costs a read of every installed byte. `None` (the default): the device keeps
    /// no such record, or cannot read its storage back this way.
    ///
    /// # Errors
    /// When the storage cannot be read.
    fn check_installed(&mut self) -> Result<Option<Vec<InstalledImage>>, PluginError> {
        Ok(None)
    }

    /// What the user can do when a delta package's source is not the image this session
    /// answers [`FlashSession::read_installed`] with, when only the plugin knows why: a
    /// single-slot modem that serves a copy kept by an interrupted install names it and says
    /// how to go on. `None` (the default): the generic remedy of the error's kind.
    fn source_mismatch_remedy(&self) -> Option<String> {
        None
    }

    /// What the user can do when the device's product or hardware revision is not the
    /// package's (`product`, and its first accepted revision if it names any), when only the
    /// plugin knows: a device whose product comes from a table the user configures (an
    /// MDM9x07 reports only OEM and model ids) returns the exact entry to add. `None` (the
    /// default): the generic remedy of the error's kind.
    fn identity_remedy(&self, product: &str, hardware_revision: Option<&str>) -> Option<String> {
        let _ = (product, hardware_revision);
        None
    }

    /// Whether the device keeps its own trust-anchor set (read with
    /// [`FlashSession::trust_anchors`], replaced at commit from [`InstallPlan::trust_anchors`]).
    /// A device that does not (the default) has its set kept by the host, keyed by
    /// [`DeviceInfo::id`].
    fn holds_trust_anchors(&self) -> bool {
        false
    }

    /// The trust-anchor set the device holds, as it was stored (`None`: none yet). Only called
    /// when [`FlashSession::holds_trust_anchors`].
    ///
    /// # Errors
    /// When the device cannot be read.
    fn trust_anchors(&mut self) -> Result<Option<Vec<u8>>, PluginError> {
        Ok(None)
    }

    /// Abandons the install and records `result` as the outcome. An A/B device's active slot is
    /// untouched. A single-slot device keeps what lets the next run resume (its journal) when
    /// the link was lost — `result.code` 51, 53, 58 or 61 — since the pipeline may wait for
    /// the device and run the install again ([`Plugin::reconnects`]).
    ///
    /// # Errors
    /// When the device cannot record it.
    fn abort(&mut self, result: &LastResult) -> Result<(), PluginError>;

    /// The partition name under which a package carries a *loader* this device must run before
    /// its storage can be reached and described — Qualcomm's Firehose programmer, served over
    /// Sahara. `None` (the default): the device needs no loader.
    ///
    /// When a session names a loader and the package has an image for that partition, the
    /// pipeline changes in one way: after the signatures and the identity part of the policy
    /// (product, chipset, hardware revision, anti-rollback — checked on the first
    /// [`FlashSession::device_info`]), the loader image, which must be the package's first
    /// image, is streamed chunk by verified chunk to [`FlashSession::load`]; then
    /// `device_info` is called again, and the whole policy (partitions, sizes) runs on that
    /// answer before [`FlashSession::begin`]. The loader image is neither written to storage
    /// nor read back, and is not part of the [`InstallPlan`].
    fn loader_partition(&self) -> Option<&str> {
        None
    }

    /// Receives one verified chunk of the loader image, in order; `image_size` is the
    /// image's signed size, so the chunk with `offset + len == image_size` is the last one,
    /// after which the session starts the loader. Only called when
    /// [`FlashSession::loader_partition`] names a partition.
    ///
    /// # Errors
    /// When the device refuses or fails to run the loader; the default refuses, since a
    /// session that names no loader is never asked to load one.
    fn load(&mut self, image_size: u64, chunk: Chunk<'_>) -> Result<(), PluginError> {
        let _ = (image_size, chunk);
        Err(PluginError::Unsupported(
            "this device takes no loader image".to_owned(),
        ))
    }
}

/// Where plugins keep what outlives one run, as the embedder sets it up. Every frontend hands
/// its plugins the same: the CLI its state and configuration directories, the C API what its
/// caller gives, a Rust updater its own.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PluginEnvironment {
    /// A directory for state that must survive a run: journals that let an interrupted install
    /// resume, copies of device-unique data taken before anything is erased. `None`: keep none.
    pub state_dir: Option<std::path::PathBuf>,
    /// A directory of the user's configuration files, where a plugin reads its own (the
    /// MDM9x07 product table). `None`: built-in defaults only.
    pub config_dir: Option<std::path::PathBuf>,
}

/// A wait, started before an install, for the device to come back running its new software
/// after the commit (a modem that re-enumerates in normal mode).
pub trait BootWatch: Send {
    /// Waits up to `timeout`, asking `cancelled` between polls, for the device to come back;
    /// returns how to reach it now, for people (a USB location and a port).
    ///
    /// # Errors
    /// [`PluginError::Timeout`] when it does not come back in time; the plugin's errors.
    fn wait(
        &mut self,
        timeout: std::time::Duration,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<String, PluginError>;
}

/// A chipset plugin: recognises the targets it handles and opens sessions on them.
pub trait Plugin: Send + Sync {
    /// Short name, also the target prefix (`file`, `mdm9x07`).
    fn name(&self) -> &'static str;

    /// The target strings this plugin opens, for people: each with its `NAME:` prefix and a
    /// placeholder in capitals for what the user fills in (`file:PATH`,
    /// `mdm9x07:usb[:BUS-PORT]`). An error for a target no plugin takes lists every plugin's
    /// forms ([`Registry::target_forms`]), so a plugin that gives none here is shown as
    /// `NAME:...` (the default).
    fn target_forms(&self) -> Vec<String> {
        vec![format!("{}:...", self.name())]
    }

    /// Takes the embedder's environment, before any target is opened: where journals and
    /// backups go, where the user's configuration is.
    ///
    /// # Errors
    /// A configuration file of the plugin's that exists but cannot be used.
    fn configure(&mut self, env: &PluginEnvironment) -> Result<(), PluginError> {
        let _ = env;
        Ok(())
    }

    /// Whether the device at `target` may drop off mid-install and come back (re-enumerate
    /// after a reset or a re-plugged cable). The pipeline then waits for it — opening `target`
    /// again until it answers — and runs the install once more from a fresh verification.
    /// `false` (the default): a lost device ends the install.
    fn reconnects(&self, target: &str) -> bool {
        let _ = target;
        false
    }

    /// A watch for the device at `target` to come back running its new software after the
    /// commit, started before the install (so it knows what was there before). `None` (the
    /// default): the plugin cannot tell.
    fn boot_watch(&self, target: &str) -> Option<Box<dyn BootWatch>> {
        let _ = target;
        None
    }

    /// Opens a session on `target` (the part after `NAME:`), claiming the device exclusively
    /// (see [`FlashSession`]).
    ///
    /// # Errors
    /// [`PluginError::Busy`] when another session holds the device; otherwise when the device
    /// cannot be opened.
    fn open(&self, target: &str) -> Result<Box<dyn FlashSession>, PluginError>;
}

/// Chooses the plugin for a target string `NAME:REST`.
#[derive(Default)]
pub struct Registry {
    plugins: Vec<Box<dyn Plugin>>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.plugins.iter().map(|p| p.name()))
            .finish()
    }
}

impl Registry {
    /// An empty registry.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// A registry with the plugins built into this crate: the file-backed reference device
    /// (`file:`), with feature `file-device`; none without it.
    #[must_use]
    pub fn with_builtin() -> Self {
        #[allow(unused_mut)] // registers nothing without feature `file-device`
        let mut registry = Self::new();
        #[cfg(feature = "file-device")]
        registry.register(Box::new(file_device::FilePlugin));
        registry
    }

    /// Adds a plugin; a later plugin with the same name replaces the earlier one.
    pub fn register(&mut self, plugin: Box<dyn Plugin>) {
        self.plugins.retain(|p| p.name() != plugin.name());
        self.plugins.push(plugin);
    }

    /// Hands every plugin the embedder's environment ([`Plugin::configure`]).
    ///
    /// # Errors
    /// The first plugin's error.
    pub fn configure(&mut self, env: &PluginEnvironment) -> Result<(), PluginError> {
        self.plugins
            .iter_mut()
            .try_for_each(|plugin| plugin.configure(env))
    }

    /// Every registered plugin's target forms ([`Plugin::target_forms`]), in registration
    /// order.
    #[must_use]
    pub fn target_forms(&self) -> Vec<String> {
        self.plugins.iter().flat_map(|p| p.target_forms()).collect()
    }

    /// The plugin for `target` and the rest of the target string after `NAME:`.
    ///
    /// # Errors
    /// [`PluginError::UnknownTarget`] when no plugin has the target's prefix, with the forms
    /// the registered plugins accept as its remedy.
    pub fn find<'t>(&self, target: &'t str) -> Result<(&dyn Plugin, &'t str), PluginError> {
        target
            .split_once(':')
            .and_then(|(name, rest)| {
                let plugin = self.plugins.iter().find(|p| p.name() == name)?;
                Some((plugin.as_ref(), rest))
            })
            .ok_or_else(|| {
                let forms = self.target_forms();
                let remedy = if forms.is_empty() {
                    "This build has no device plugin registered: no target can be opened."
                        .to_owned()
                } else {
                    format!(
                        "Give the target in one of these forms: {}.",
                        forms.join(", ")
                    )
                };
                PluginError::UnknownTarget(target.to_owned()).with_remedy(remedy)
            })
    }

    /// Opens a session on `target`, e.g. `file:/tmp/device.img`.
    ///
    /// # Errors
    /// [`PluginError::UnknownTarget`] when no plugin has the target's prefix; otherwise the
    /// plugin's error.
    pub fn open(&self, target: &str) -> Result<Box<dyn FlashSession>, PluginError> {
        let (plugin, rest) = self.find(target)?;
        plugin.open(rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plugin that opens nothing and gives its forms.
    struct Disk;

    impl Plugin for Disk {
        fn name(&self) -> &'static str {
            "disk"
        }

        fn target_forms(&self) -> Vec<String> {
            vec!["disk:PATH".into()]
        }

        fn open(&self, _target: &str) -> Result<Box<dyn FlashSession>, PluginError> {
            Err(PluginError::Unsupported("opens nothing".into()))
        }
    }

    /// A plugin that opens nothing and keeps the default forms.
    struct Radio;

    impl Plugin for Radio {
        fn name(&self) -> &'static str {
            "radio"
        }

        fn open(&self, _target: &str) -> Result<Box<dyn FlashSession>, PluginError> {
            Err(PluginError::Unsupported("opens nothing".into()))
        }
    }

    #[test]
    fn an_unknown_target_lists_the_forms_of_every_registered_plugin() {
        let mut registry = Registry::new();
        registry.register(Box::new(Disk));
        registry.register(Box::new(Radio));
        assert_eq!(registry.target_forms(), ["disk:PATH", "radio:..."]);
        for target in ["device.img", "tape:0"] {
            let err = registry.find(target).err().unwrap();
            assert!(
                matches!(err.without_remedy(), PluginError::UnknownTarget(t) if t == target),
                "{err:?}"
            );
            let remedy = err.remedy().unwrap();
            assert!(remedy.contains("disk:PATH, radio:..."), "{remedy}");
        }
        assert!(registry.find("radio:x").is_ok());
    }

    #[test]
    fn a_remedy_wraps_once_and_keeps_the_message() {
        let err = PluginError::Busy("dev".into())
            .with_remedy("first")
            .with_remedy("second");
        assert_eq!(err.remedy(), Some("second"));
        assert!(matches!(err.without_remedy(), PluginError::Busy(_)));
        assert_eq!(err.to_string(), "in use: dev");
        assert_eq!(PluginError::PowerLoss.remedy(), None);
    }
}
