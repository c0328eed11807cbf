//! Installing a verified package on a device (DESIGN.md §2 steps 3–5, §4, §5).
//!
//! The order never changes: signatures, then policy (compatibility, anti-rollback, pre-flight),
//! then the plan is journalled on the device, then each image streams chunk by chunk — each
//! chunk hashed and compared with its signed digest before the plugin sees it — then each image
//! is read back and compared with its signed whole-image digest, and only then the commit (slot
//! switch and floor raise in one atomic step). Any failure before the commit aborts the install
//! and leaves the active slot untouched.
//!
//! A device that must run a loader before its storage can be reached (a Qualcomm modem in
//! emergency download mode runs the Firehose programmer, see
//! [`FlashSession::loader_partition`]) gets its identity checked first, then the loader image —
//! a verified package image like any other, and the package's first — streamed to
//! [`FlashSession::load`], and only then the full policy on what the running loader reports.

use std::io::Read;

use veriflash_format::{ImageSpec, Manifest};
use veriflash_hash::{DEFAULT_MIN_BUFFER_LEN, ParallelOptions, Realigner, VerifiedChunk};
use veriflash_plugin::{
    DeviceInfo, FlashSession, InstallPlan, LastResult, PlannedImage, PluginError, Slot,
};
use veriflash_sig::Verifier;

use crate::error::{Error, ErrorKind, Location};
use crate::host::{HostRecord, HostStore};
use crate::package::{PackageReader, VerifiedManifest, VerifyReport};
use crate::trust::AnchorSet;

/// The steps of an install, in the order they run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Phase {
    /// Signatures over header and manifest.
    Signature,
    /// Compatibility, anti-rollback and pre-flight checks.
    Preflight,
    /// Streaming the device's loader to it (the MDM9x07 Firehose programmer), inside the
    /// pre-flight: such a device can only describe its storage once its loader runs, so this
    /// phase starts after its identity was checked and ends before the rest of the policy.
    Load,
    /// Journalling the plan and erasing the target slot.
    Staging,
    /// Streaming verified chunks to the device.
    Flash,
    /// Reading the written images back.
    ReadBack,
    /// Switching slots and raising the anti-rollback floor.
    Commit,
}

impl Phase {
    /// Stable lower-case name for JSON events.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Signature => "signature",
            Self::Preflight => "preflight",
            Self::Load => "load",
            Self::Staging => "staging",
            Self::Flash => "flash",
            Self::ReadBack => "read_back",
            Self::Commit => "commit",
        }
    }
}

/// What the caller is told while an install runs.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A phase began.
    PhaseStarted(Phase),
    /// A phase ended successfully.
    PhaseFinished(Phase),
    /// Bytes verified and written so far.
    Progress {
        /// The image being written.
        image: String,
        /// Bytes of that image done.
        image_done: u64,
        /// That image's size.
        image_total: u64,
        /// Bytes of all images done.
        done: u64,
        /// All images' size.
        total: u64,
    },
    /// Something the caller should know that does not stop the install.
    Warning(String),
    /// The device dropped off mid-install (the error says how) and the pipeline waits for it
    /// to come back, to run the install again from a fresh verification.
    Reconnecting {
        /// This wait's number, from 1.
        attempt: u32,
        /// How many waits one install allows.
        max_attempts: u32,
        /// How long this wait lasts at most.
        timeout: std::time::Duration,
        /// The code of the error that cut the install off.
        code: u8,
        /// Its message.
        message: String,
    },
    /// The device answered again after a [`Event::Reconnecting`]; the install runs again.
    Reconnected {
        /// The wait that ended.
        attempt: u32,
    },
    /// The install committed; now the pipeline waits, at most this long, for the device to
    /// come back running its new software.
    WaitingForBoot {
        /// How long the wait lasts at most.
        timeout: std::time::Duration,
    },
    /// The device came back running its new software; how to reach it, for people.
    Booted(String),
    /// The install ended: `None` on success, otherwise the error's code.
    Finished(Option<u8>),
    /// A download's plan, before its first payload byte is requested: how much of the package
    /// the device side already holds (to be read again, re-hashed and reused) and how much is
    /// left to fetch ([`crate::reuse`]). What it cost in the end is in the install's
    /// [`crate::ota::FetchStats`].
    DeltaPlanned {
        /// Payload bytes to be reused from the installed images or the chunk cache.
        bytes_reused: u64,
        /// Payload bytes to be downloaded.
        bytes_to_fetch: u64,
        /// Bytes of installed images read and hashed to find them.
        bytes_scanned: u64,
    },
}

/// Facts a caller's pre-flight check can decide on.
#[derive(Debug)]
pub struct PreflightContext<'a> {
    /// The verified manifest.
    pub manifest: &'a Manifest,
    /// The device.
    pub device: &'a DeviceInfo,
    /// Bytes the install will write.
    pub bytes_to_write: u64,
}

/// Caller hook for checks the pipeline cannot make itself (battery level, user consent):
/// `Err(reason)` refuses the install.
pub type PreflightHook = Box<dyn Fn(&PreflightContext<'_>) -> Result<(), String> + Send + Sync>;

/// The install policy beyond signatures.
pub struct InstallPolicy {
    memory_budget: u64,
    threads: usize,
    staging_quota: Option<u64>,
    staging_dir: Option<std::path::PathBuf>,
    hook: Option<PreflightHook>,
    source_check: crate::delta::SourceCheck,
}

impl std::fmt::Debug for InstallPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstallPolicy")
            .field("memory_budget", &self.memory_budget)
            .field("threads", &self.threads)
            .field("staging_quota", &self.staging_quota)
            .field("hook", &self.hook.is_some())
            .field("source_check", &self.source_check)
            .finish()
    }
}

impl Default for InstallPolicy {
    fn default() -> Self {
        Self {
            memory_budget: DEFAULT_MEMORY_BUDGET,
            threads: 0,
            staging_quota: None,
            staging_dir: None,
            hook: None,
            source_check: crate::delta::SourceCheck::default(),
        }
    }
}

impl InstallPolicy {
    /// Hashing threads for the payload (`0`: one per core).
    #[must_use]
    pub fn with_threads(mut self, threads: usize) -> Self {
        self.threads = threads;
        self
    }

    /// How a delta package's source is checked before the first write
    /// ([`crate::SourceCheck`]; [`crate::SourceCheck::Whole`] unless set).
    #[must_use]
    pub fn with_source_check(mut self, how: crate::delta::SourceCheck) -> Self {
        self.source_check = how;
        self
    }

    /// The parallel-verification settings that keep chunk buffers within the memory budget:
    /// as many buffers in flight as the budget holds, at most two per thread, at least one
    /// (a package whose chunk alone exceeds the budget is refused by [`check_policy`]). A
    /// package with compressed chunks needs a second (decode) buffer per buffer in flight.
    fn parallel_options(&self, chunks: ChunkMemory) -> ParallelOptions {
        let options = ParallelOptions::new().threads(self.threads);
        let min_buffer = (DEFAULT_MIN_BUFFER_LEN as u64).min(self.memory_budget);
        let buffer = chunks.largest.max(min_buffer).max(1);
        let per_slot = buffer.saturating_mul(if chunks.compressed { 2 } else { 1 });
        let wanted = options.resolved_threads().saturating_mul(2);
        let fits = usize::try_from(self.memory_budget / per_slot).unwrap_or(usize::MAX);
        options
            .max_in_flight(wanted.min(fits).max(1))
            .min_buffer_len(usize::try_from(min_buffer).unwrap_or(DEFAULT_MIN_BUFFER_LEN))
    }
}

/// What one chunk in flight costs: the largest chunk, and whether decoding needs a second buffer.
#[derive(Clone, Copy, Debug)]
struct ChunkMemory {
    largest: u64,
    compressed: bool,
}

impl ChunkMemory {
    fn of(m: &Manifest) -> Self {
        Self {
            largest: m
                .images
                .iter()
                .map(|i| u64::from(i.chunk_size))
                .max()
                .unwrap_or(0),
            compressed: m.images.iter().any(ImageSpec::is_compressed),
        }
    }

    /// Bytes for one chunk in flight: its buffer, and its decode buffer when compressed.
    fn one(self) -> u64 {
        self.largest
            .saturating_mul(if self.compressed { 2 } else { 1 })
    }
}

/// Default memory budget for chunks in flight: 64 MiB.
pub const DEFAULT_MEMORY_BUDGET: u64 = 64 << 20;

impl InstallPolicy {
    /// The most memory the install may hold for chunk buffers. A package whose largest chunk
    /// does not fit is refused before anything is written.
    #[must_use]
    pub fn with_memory_budget(mut self, bytes: u64) -> Self {
        self.memory_budget = bytes;
        self
    }

    /// The most bytes the install may write to the device's staging storage, in addition to
    /// the free space the device reports (the smaller of the two counts).
    #[must_use]
    pub fn with_staging_quota(mut self, bytes: u64) -> Self {
        self.staging_quota = Some(bytes);
        self
    }

    /// A directory whose file system holds staged data (downloads, journals): its free space,
    /// as `statvfs` reports it to unprivileged users, bounds the install.
    #[must_use]
    pub fn with_staging_dir(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.staging_dir = Some(dir.into());
        self
    }

    /// A caller check run last in pre-flight.
    #[must_use]
    pub fn with_preflight_hook(mut self, hook: PreflightHook) -> Self {
        self.hook = Some(hook);
        self
    }
}

/// Cancels an install between chunks: cheap to clone and to check, safe to share with a signal
/// handler thread.
#[derive(Clone, Debug, Default)]
pub struct CancelToken(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl CancelToken {
    /// A token that is not cancelled.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Requests cancellation; the install stops before its next chunk and aborts.
    pub fn cancel(&self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Whether cancellation was requested.
    #[must_use]
    pub fn is_cancelled(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Maps a plugin failure to the taxonomy: a device another run holds, storage or a port that
/// is missing, forbidden or full (by the operating system's error), transport failures,
/// timeouts, power loss (the install was interrupted), read-back mismatches, a target that is
/// not a device, and other device errors. A remedy the plugin gave
/// ([`PluginError::with_remedy`]) replaces the kind's.
pub fn device_error(err: PluginError) -> Error {
    let kind = match err.without_remedy() {
        PluginError::Transport(e) => device_io_kind(e).unwrap_or(ErrorKind::TransportError),
        PluginError::Storage { source, .. } => {
            device_io_kind(source).unwrap_or(ErrorKind::DeviceError)
        }
        PluginError::Busy(_) => ErrorKind::Busy,
        PluginError::WrongChip { .. } => ErrorKind::WrongChipset,
        PluginError::WrongHardware { .. } => ErrorKind::WrongHardwareRevision,
        PluginError::Timeout(_) => ErrorKind::Timeout,
        PluginError::PowerLoss => ErrorKind::Interrupted,
        PluginError::ReadBackMismatch { .. } => ErrorKind::ReadBackMismatch,
        PluginError::UnknownTarget(_) | PluginError::NotADevice(_) => ErrorKind::InvalidInput,
        _ => ErrorKind::DeviceError,
    };
    let error = Error::new(kind, err.to_string());
    match err.remedy().map(str::to_owned) {
        Some(remedy) => error.with_remedy(remedy),
        None => error,
    }
    .with_source(err)
}

/// The kind an operating-system error on a device's path or port says more precisely than
/// "device" or "transport" error, if any.
fn device_io_kind(err: &std::io::Error) -> Option<ErrorKind> {
    use std::io::ErrorKind as Io;
    Some(match err.kind() {
        Io::NotFound | Io::IsADirectory | Io::NotADirectory => ErrorKind::DeviceNotFound,
        Io::PermissionDenied | Io::ReadOnlyFilesystem => ErrorKind::DeviceAccessDenied,
        Io::WouldBlock => ErrorKind::Busy,
        _ => return crate::error::io_kind(err),
    })
}

/// Checks that the device still holds what it records as installed in the software it boots
/// ([`FlashSession::check_installed`]): every such image is read back and compared with the
/// digest recorded when it was installed. `Ok(None)`: the device cannot be checked this way.
///
/// # Errors
/// [`ErrorKind::ReadBackMismatch`] naming every image that no longer matches (the device would
/// not boot it: flash again); the device's errors as [`device_error`] maps them.
pub fn check_installed(
    session: &mut dyn FlashSession,
) -> Result<Option<Vec<veriflash_plugin::InstalledImage>>, Error> {
    let Some(images) = session.check_installed().map_err(device_error)? else {
        return Ok(None);
    };
    let broken: Vec<&str> = images
        .iter()
        .filter(|i| !i.intact)
        .map(|i| i.partition.as_str())
        .collect();
    if !broken.is_empty() {
        return Err(Error::new(
            ErrorKind::ReadBackMismatch,
            format!(
                "installed partition{} {} no longer hold{} what was installed: the device would not boot it; flash the package again",
                if broken.len() == 1 { "" } else { "s" },
                broken.join(", "),
                if broken.len() == 1 { "s" } else { "" },
            ),
        ));
    }
    Ok(Some(images))
}

/// The staging bytes the policy allows: the smaller of the quota and the staging directory's
/// free space.
fn staging_limit(policy: &InstallPolicy) -> Result<Option<u64>, Error> {
    let free = match &policy.staging_dir {
        Some(dir) => {
            let st = rustix::fs::statvfs(dir).map_err(|e| {
                Error::io(format_args!("{}", dir.display()), std::io::Error::from(e))
            })?;
            Some(st.f_bavail.saturating_mul(st.f_frsize))
        }
        None => None,
    };
    Ok(match (free, policy.staging_quota) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    })
}

/// Checks a verified manifest against a device: identity, anti-rollback, partitions, sizes,
/// memory and space, then the caller's hook. Nothing is written.
///
/// # Errors
/// The policy kinds: [`ErrorKind::WrongProduct`], [`ErrorKind::WrongChipset`],
/// [`ErrorKind::WrongHardwareRevision`], [`ErrorKind::DowngradeRefused`],
/// [`ErrorKind::UnknownPartition`], [`ErrorKind::ProtectedPartition`],
/// [`ErrorKind::ImageTooLarge`], [`ErrorKind::InsufficientMemory`],
/// [`ErrorKind::InsufficientStorage`], [`ErrorKind::PreflightRefused`].
pub fn check_policy(
    manifest: &VerifiedManifest,
    device: &DeviceInfo,
    policy: &InstallPolicy,
) -> Result<(), Error> {
    check_policy_except(manifest, device, policy, None)
}

/// [`check_policy`], leaving out the image for the device's loader partition (see
/// [`FlashSession::loader_partition`]): it is run by the device, never written to storage.
fn check_policy_except(
    manifest: &VerifiedManifest,
    device: &DeviceInfo,
    policy: &InstallPolicy,
    loader: Option<&str>,
) -> Result<(), Error> {
    let m = manifest.manifest();
    check_identity(m, device)?;
    let unit = u64::from(device.geometry.write_unit.max(1));
    let mut bytes_to_write = 0u64;
    for image in m
        .images
        .iter()
        .filter(|i| Some(i.partition.as_str()) != loader)
    {
        let at = Location {
            image: Some(image.name.clone()),
            ..Location::default()
        };
        let part = device.partition(&image.partition).ok_or_else(|| {
            Error::new(
                ErrorKind::UnknownPartition,
                format!(
                    "image '{}' targets partition '{}', which the device lacks",
                    image.name, image.partition
                ),
            )
            .at(at.clone())
        })?;
        if part.protected {
            return Err(Error::new(
                ErrorKind::ProtectedPartition,
                format!(
                    "image '{}' targets '{}', which the device protects (device-unique data such as calibration or EFS, or a partition without A/B copies): it is never written",
                    image.name, image.partition
                ),
            )
            .at(at));
        }
        if image.size > part.size {
            return Err(Error::new(
                ErrorKind::ImageTooLarge,
                format!(
                    "image '{}' is {} bytes, partition '{}' holds {}",
                    image.name, image.size, part.name, part.size
                ),
            )
            .at(at));
        }
        bytes_to_write =
            bytes_to_write.saturating_add(image.size.div_ceil(unit).saturating_mul(unit));
    }
    let chunks = ChunkMemory::of(m);
    if chunks.one() > policy.memory_budget {
        return Err(Error::new(
            ErrorKind::InsufficientMemory,
            format!(
                "one chunk in flight needs {} bytes{}, over the memory budget of {} bytes",
                chunks.one(),
                if chunks.compressed {
                    " (stored and decoded)"
                } else {
                    ""
                },
                policy.memory_budget
            ),
        ));
    }
    let available = match (device.free_space, staging_limit(policy)?) {
        (Some(free), Some(quota)) => Some(free.min(quota)),
        (free, quota) => free.or(quota),
    };
    if let Some(available) = available
        && bytes_to_write > available
    {
        return Err(Error::new(
            ErrorKind::InsufficientStorage,
            format!(
                "the install writes {bytes_to_write} bytes, {available} are available: needs {} bytes more",
                bytes_to_write - available
            ),
        ));
    }
    if let Some(hook) = &policy.hook {
        hook(&PreflightContext {
            manifest: m,
            device,
            bytes_to_write,
        })
        .map_err(|reason| Error::new(ErrorKind::PreflightRefused, reason))?;
    }
    Ok(())
}

/// The identity part of the policy: product, chipset, hardware revision, anti-rollback floor.
/// [`check_identity`], with the session's own remedy for a product or revision it got
/// wrong ([`FlashSession::identity_remedy`]).
fn check_identity_of(
    m: &Manifest,
    device: &DeviceInfo,
    session: &dyn FlashSession,
) -> Result<(), Error> {
    check_identity(m, device).map_err(|e| {
        let remedy = matches!(
            e.kind(),
            ErrorKind::WrongProduct | ErrorKind::WrongHardwareRevision
        )
        .then(|| {
            session.identity_remedy(&m.product, m.hardware_revisions.first().map(String::as_str))
        })
        .flatten();
        match remedy {
            Some(r) => e.with_remedy(r),
            None => e,
        }
    })
}

fn check_identity(m: &Manifest, device: &DeviceInfo) -> Result<(), Error> {
    if m.product != device.product {
        return Err(Error::new(
            ErrorKind::WrongProduct,
            format!(
                "package is for '{}', device is '{}'",
                m.product, device.product
            ),
        ));
    }
    if m.chipset != device.chipset {
        return Err(Error::new(
            ErrorKind::WrongChipset,
            format!(
                "package is for chipset '{}', device is '{}'",
                m.chipset, device.chipset
            ),
        ));
    }
    if !m.hardware_revisions.is_empty() && !m.hardware_revisions.contains(&device.hardware_revision)
    {
        return Err(Error::new(
            ErrorKind::WrongHardwareRevision,
            format!(
                "package supports revisions {}, device is '{}'",
                m.hardware_revisions.join(", "),
                device.hardware_revision
            ),
        ));
    }
    if m.security_version < device.security_floor {
        return Err(Error::new(
            ErrorKind::DowngradeRefused,
            format!(
                "package security version {} is below the device's floor {}",
                m.security_version, device.security_floor
            ),
        ));
    }
    Ok(())
}

/// Installs a package from `reader` on the device behind `session`.
///
/// `events` hears every phase, progress after every chunk, and the final result. On any
/// failure after the install began, the session is aborted with the error's code recorded on
/// the device, and the active slot is untouched.
///
/// # Errors
/// Any error of verification, policy, streaming or the device.
pub fn install<R: Read>(
    reader: R,
    verifier: &Verifier<'_>,
    policy: &InstallPolicy,
    session: &mut dyn FlashSession,
    cancel: &CancelToken,
    events: &mut dyn FnMut(&Event),
) -> Result<VerifyReport, Error> {
    reported(
        PackageReader::new(reader),
        verifier,
        policy,
        session,
        cancel,
        events,
    )
}

/// [`install`] from a package whose prefix was already read, such as one from
/// [`PackageReader::open`], which knows the file's length: a package shorter or longer than
/// its signed layout is refused right after its signatures, before the device is touched.
///
/// # Errors
/// As [`install`].
pub fn install_package<R: Read>(
    package: PackageReader<R>,
    verifier: &Verifier<'_>,
    policy: &InstallPolicy,
    session: &mut dyn FlashSession,
    cancel: &CancelToken,
    events: &mut dyn FnMut(&Event),
) -> Result<VerifyReport, Error> {
    reported(Ok(package), verifier, policy, session, cancel, events)
}

/// An install between its first event and its last, [`Event::Finished`] with the verdict.
fn reported<R: Read>(
    package: Result<PackageReader<R>, Error>,
    verifier: &Verifier<'_>,
    policy: &InstallPolicy,
    session: &mut dyn FlashSession,
    cancel: &CancelToken,
    events: &mut dyn FnMut(&Event),
) -> Result<VerifyReport, Error> {
    events(&Event::PhaseStarted(Phase::Signature));
    let result =
        package.and_then(|package| run(package, verifier, policy, session, cancel, events));
    events(&Event::Finished(result.as_ref().err().map(Error::code)));
    result
}

fn run<R: Read>(
    package: PackageReader<R>,
    verifier: &Verifier<'_>,
    policy: &InstallPolicy,
    session: &mut dyn FlashSession,
    cancel: &CancelToken,
    events: &mut dyn FnMut(&Event),
) -> Result<VerifyReport, Error> {
    let package = package.verify(verifier)?;
    events(&Event::PhaseFinished(Phase::Signature));
    let verified = package.manifest().clone();
    let package = package.with_options(policy.stream_options(&verified));
    let device = Device {
        verifier,
        policy,
        session,
        host: None,
        cancel,
    };
    device
        .install(&verified, |sink| package.stream_to(sink), events)
        .map(|(report, _)| report)
}

/// What a committed install left on its device, for the caller's report and records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Installed {
    /// The device's own identity ([`DeviceInfo::id`]), if it has one.
    pub device_id: Option<String>,
    /// The device's product, chipset and hardware revision.
    pub product: String,
    /// See `product`.
    pub chipset: String,
    /// See `product`.
    pub hardware_revision: String,
    /// The slot the device boots from now; `None` for a single-slot device.
    pub slot: Option<Slot>,
    /// The software version it ran before, when it had one installed by veriflash.
    pub previous_version: Option<String>,
    /// The software version it runs now (the package's).
    pub version: String,
    /// The anti-rollback floor now in force: the package's security version, or the higher
    /// floor the device (or its host record) already had.
    pub floor: u64,
}

/// A device an install runs on, and what it runs under.
pub(crate) struct Device<'d, 'v> {
    pub(crate) verifier: &'d Verifier<'v>,
    pub(crate) policy: &'d InstallPolicy,
    pub(crate) session: &'d mut dyn FlashSession,
    pub(crate) host: Option<&'d HostStore>,
    pub(crate) cancel: &'d CancelToken,
}

impl Device<'_, '_> {
    /// Installs the package `verified` describes, whose signatures verified (its signature
    /// phase is over), from `stream`: pre-flight, staging, every verified chunk to the device,
    /// read-back and commit — or an abort that records the error on the device.
    pub(crate) fn install(
        self,
        verified: &VerifiedManifest,
        stream: impl FnOnce(&mut DeviceSink<'_, '_>) -> Result<VerifyReport, Error>,
        events: &mut dyn FnMut(&Event),
    ) -> Result<(VerifyReport, Installed), Error> {
        let cancel = self.cancel;
        let mut device = DeviceRun::prepare(
            verified,
            self.verifier,
            self.policy,
            self.session,
            self.host,
            events,
        )?;
        let streamed = stream(&mut DeviceSink {
            run: &mut device,
            cancel,
            events,
        });
        let outcome = streamed.and_then(|mut report| {
            let installed = device.finish(cancel, events)?;
            // Read back equal to their signed whole-image digests: checked, every image the
            // device stored (not a loader it only ran).
            for image in &mut report.images {
                image.sha256_checked |= !device.is_loader(&image.partition);
            }
            Ok((report, installed))
        });
        if let Err(err) = &outcome {
            device.abort(err);
        }
        outcome
    }
}

/// Where a package's payload goes during an install on one device, after its pre-flight and
/// staging: each verified chunk to the device, and, for a download that reuses what the
/// device already holds ([`crate::reuse`]), the device's installed images read back.
pub(crate) struct DeviceSink<'s, 'a> {
    run: &'s mut DeviceRun<'a>,
    cancel: &'s CancelToken,
    events: &'s mut dyn FnMut(&Event),
}

impl DeviceSink<'_, '_> {
    /// Hands one verified chunk of `image` to the device.
    pub(crate) fn chunk(
        &mut self,
        image: &ImageSpec,
        chunk: VerifiedChunk<'_>,
    ) -> Result<(), Error> {
        self.run.chunk(image, chunk, self.cancel, self.events)
    }

    /// The device's session, to read back what it runs.
    pub(crate) fn session(&mut self) -> &mut dyn FlashSession {
        self.run.session
    }

    /// The device's session, to read back what it runs in `partition` while the install
    /// streams: begun first, so that a device with a loader has the whole policy and a delta's
    /// source check run before the first installed byte is read to rebuild a chunk (what it
    /// reads then is what was checked). Not for the loader's own partition, which is read
    /// before the loader runs, or refused.
    pub(crate) fn installed(&mut self, partition: &str) -> Result<&mut dyn FlashSession, Error> {
        if !self.run.is_loader(partition) {
            self.run.ensure_begun(self.events)?;
        }
        Ok(self.run.session)
    }

    /// The device's identity as it described itself.
    pub(crate) fn device_id(&self) -> Option<&str> {
        self.run.device.id.as_deref()
    }

    /// The software version the device says it runs.
    pub(crate) fn installed_version(&self) -> Option<&str> {
        self.run.device.installed_version.as_deref()
    }

    /// Tells the caller.
    pub(crate) fn event(&mut self, event: &Event) {
        (self.events)(event);
    }
}

impl InstallPolicy {
    /// How a package's payload is verified for an install under this policy (threads, buffers
    /// in flight). No whole-image pass: read-back proves the whole-image digest (see
    /// `DeviceRun::finish`).
    pub(crate) fn stream_options(&self, verified: &VerifiedManifest) -> ParallelOptions {
        self.parallel_options(ChunkMemory::of(verified.manifest()))
    }
}

/// One device's side of an install, after the package's signatures verified: pre-flight,
/// staging, each verified chunk, read-back and commit. [`install`] drives one from the
/// package stream; the factory line ([`crate::factory`]) drives one per device from chunks
/// verified once and shared.
pub(crate) struct DeviceRun<'a> {
    verified: &'a VerifiedManifest,
    policy: &'a InstallPolicy,
    session: &'a mut dyn FlashSession,
    loader: Option<String>,
    begun: bool,
    total: u64,
    trust: DeviceTrust<'a>,
    /// The device as it last described itself (before the loader ran, then after).
    device: DeviceInfo,
    /// For each image, whether its chunks are content-defined and end anywhere, so they are
    /// re-cut into whole write units before they reach the device.
    variable: Vec<bool>,
    /// The re-cutting of the image being written, when its chunks are content-defined.
    realigner: Option<Realigner>,
}

/// A device's own trust state, and what an install changes in it.
struct DeviceTrust<'a> {
    /// Where the host keeps the state of devices that cannot keep their own.
    host: Option<&'a HostStore>,
    /// The device's identity, the key of its host record.
    id: Option<String>,
    /// Whether the device keeps its floor and anchors itself.
    holds_itself: bool,
    /// The host's record of it (the default for a device that holds its own state).
    record: HostRecord,
    /// The anchor set the device adopts at commit: the package's rotation, authorized by the
    /// device's own set.
    adopt: Option<AnchorSet>,
}

impl<'a> DeviceTrust<'a> {
    /// Reads the device's trust state (its own, or the host's record of it), and checks the
    /// package against the device's anchor set when that set is newer than the verifier's: a
    /// device that adopted a rotation refuses packages signed only by retired keys, whichever
    /// station flashes it.
    fn read(
        verified: &VerifiedManifest,
        verifier: &Verifier<'_>,
        session: &mut dyn FlashSession,
        device: &DeviceInfo,
        host: Option<&'a HostStore>,
    ) -> Result<Self, Error> {
        let holds_itself = session.holds_trust_anchors();
        let (record, held) = if holds_itself {
            let held = session
                .trust_anchors()
                .map_err(device_error)?
                .map(|der| AnchorSet::from_der(&der))
                .transpose()?;
            (HostRecord::default(), held)
        } else {
            let record = match (host, &device.id) {
                (Some(host), Some(id)) => host.load(id)?,
                _ => HostRecord::default(),
            };
            let held = record.anchors.clone();
            (record, held)
        };
        let configured = verifier.policy().anchor_set_version();
        let adopt = match &held {
            Some(set) if set.version() > configured => verified.verify_for_device(
                &verifier.with_trust(set.anchors(), set.threshold(), set.version()),
                set.version(),
            )?,
            _ => verified
                .trust_rotation()
                .filter(|rotation| {
                    held.as_ref()
                        .is_none_or(|h| rotation.version() > h.version())
                })
                .cloned(),
        };
        Ok(Self {
            host,
            id: device.id.clone(),
            holds_itself,
            record,
            adopt,
        })
    }

    /// The anti-rollback floor that applies: the device's, or the host's record if higher.
    fn floor(&self, device: &DeviceInfo) -> u64 {
        device.security_floor.max(self.record.floor)
    }

    /// After the commit: the host's record of a device that cannot keep its own state moves
    /// on with the install (floor raised, rotation adopted).
    fn committed(&mut self, security_version: u64) -> Result<(), Error> {
        if self.holds_itself {
            return Ok(());
        }
        let (Some(host), Some(id)) = (self.host, &self.id) else {
            return Ok(());
        };
        self.record.floor = self.record.floor.max(security_version);
        if let Some(set) = self.adopt.take() {
            self.record.anchors = Some(set);
        }
        host.save(id, &self.record)
    }
}

impl<'a> DeviceRun<'a> {
    /// Pre-flight: reads the device and its trust state, then either checks its identity (a
    /// device that runs a loader first, [`FlashSession::loader_partition`]) or runs the whole
    /// policy and begins. `verifier` is the one the package verified with; `host` keeps the
    /// state of devices that cannot keep their own.
    pub(crate) fn prepare(
        verified: &'a VerifiedManifest,
        verifier: &Verifier<'_>,
        policy: &'a InstallPolicy,
        session: &'a mut dyn FlashSession,
        host: Option<&'a HostStore>,
        events: &mut dyn FnMut(&Event),
    ) -> Result<Self, Error> {
        events(&Event::PhaseStarted(Phase::Preflight));
        let mut device = session.device_info().map_err(device_error)?;
        let trust = DeviceTrust::read(verified, verifier, session, &device, host)?;
        device.security_floor = trust.floor(&device);
        let m = verified.manifest();
        // A device that must run a loader first (FlashSession::loader_partition) can describe its
        // storage only once the loader runs: check its identity now, stream the loader image (the
        // package's first) to it, and run the whole policy on what it says then.
        let loader = session
            .loader_partition()
            .map(str::to_owned)
            .filter(|l| m.images.iter().any(|i| i.partition == *l));
        let mut run = Self {
            verified,
            policy,
            session,
            loader,
            begun: false,
            total: m.images.iter().map(|i| i.size).sum(),
            trust,
            device,
            variable: m
                .images
                .iter()
                .map(ImageSpec::has_variable_chunks)
                .collect(),
            realigner: None,
        };
        if let Some(l) = &run.loader {
            check_identity_of(m, &run.device, &*run.session)?;
            if m.images.first().map(|i| i.partition.as_str()) != Some(l.as_str()) {
                return Err(Error::new(
                    ErrorKind::InvalidInput,
                    format!(
                        "the device runs the image for partition '{l}' as its loader: it must be the package's first image"
                    ),
                ));
            }
            events(&Event::PhaseStarted(Phase::Load));
        } else {
            start(
                run.verified,
                &run.device,
                policy,
                None,
                run.new_anchors()?,
                run.session,
                events,
            )?;
            run.begun = true;
        }
        Ok(run)
    }

    /// The anchor set for the device to store at commit, when it holds its own.
    fn new_anchors(&self) -> Result<Option<Vec<u8>>, Error> {
        match &self.trust.adopt {
            Some(set) if self.trust.holds_itself => set.to_der().map(Some),
            _ => Ok(None),
        }
    }

    fn is_loader(&self, partition: &str) -> bool {
        self.loader.as_deref() == Some(partition)
    }

    /// Runs the policy on what the running loader reports and begins, once.
    fn ensure_begun(&mut self, events: &mut dyn FnMut(&Event)) -> Result<(), Error> {
        if !self.begun {
            if self.loader.is_some() {
                events(&Event::PhaseFinished(Phase::Load));
            }
            let mut device = self.session.device_info().map_err(device_error)?;
            device.security_floor = self.trust.floor(&device);
            let anchors = self.new_anchors()?;
            start(
                self.verified,
                &device,
                self.policy,
                self.loader.as_deref(),
                anchors,
                self.session,
                events,
            )?;
            self.device = device;
            self.begun = true;
        }
        Ok(())
    }

    /// Hands one verified chunk of `image` to the device (its loader, or its storage).
    pub(crate) fn chunk(
        &mut self,
        image: &ImageSpec,
        chunk: VerifiedChunk<'_>,
        cancel: &CancelToken,
        events: &mut dyn FnMut(&Event),
    ) -> Result<(), Error> {
        if cancel.is_cancelled() {
            return Err(Error::new(ErrorKind::Cancelled, "cancelled between chunks"));
        }
        let variable = self
            .verified
            .manifest()
            .images
            .iter()
            .position(|i| i.name == image.name)
            .and_then(|i| self.variable.get(i).copied())
            .unwrap_or(false);
        if !variable || self.is_loader(&image.partition) {
            return self.write_verified(image, chunk, events);
        }
        // Content-defined chunks end anywhere; a device writes whole units from aligned
        // offsets: the chunks are re-cut (all verified bytes, in order) before they go.
        self.ensure_begun(events)?;
        let unit = usize::try_from(self.device.geometry.write_unit.max(1)).unwrap_or(1);
        let last = chunk.offset().saturating_add(chunk.bytes().len() as u64) == image.size;
        let mut realigner = match self.realigner.take() {
            Some(r) if chunk.offset() != 0 => r,
            _ => Realigner::new(unit),
        };
        let piece = realigner.push(chunk).map_err(|e| {
            crate::convert::verify_error(&image.name, veriflash_hash::VerifyError::Hash(e))
        })?;
        if let Some(piece) = piece {
            self.write_verified(image, piece, events)?;
        }
        if last {
            if let Some(rest) = realigner.finish() {
                self.write_verified(image, rest, events)?;
            }
        } else {
            self.realigner = Some(realigner);
        }
        Ok(())
    }

    /// Binds one verified chunk (or a re-cut piece of verified chunks) of `image` and hands it
    /// to the device (its loader, or its storage); reports progress.
    fn write_verified(
        &mut self,
        image: &ImageSpec,
        chunk: VerifiedChunk<'_>,
        events: &mut dyn FnMut(&Event),
    ) -> Result<(), Error> {
        let at = || Location {
            image: Some(image.name.clone()),
            ..Location::default()
        };
        let image_done = chunk.offset() + chunk.bytes().len() as u64;
        // The one place a plugin-facing chunk is made: it matched a digest of this verified
        // package, and is bound to it, its image and its partition.
        let chunk = veriflash_plugin::hazmat::bind(
            self.verified.package_id(),
            &image.name,
            &image.partition,
            chunk,
        );
        if self.is_loader(&image.partition) {
            self.session
                .load(image.size, chunk)
                .map_err(|e| device_error(e).at(at()))?;
        } else {
            self.ensure_begun(events)?;
            self.session
                .write(chunk)
                .map_err(|e| device_error(e).at(at()))?;
        }
        let before: u64 = self
            .verified
            .manifest()
            .images
            .iter()
            .take_while(|i| i.name != image.name)
            .map(|i| i.size)
            .sum();
        events(&Event::Progress {
            image: image.name.clone(),
            image_done,
            image_total: image.size,
            done: before + image_done,
            total: self.total,
        });
        Ok(())
    }

    /// After the last chunk: read-back of every written image, then the commit; what the
    /// device runs now.
    pub(crate) fn finish(
        &mut self,
        cancel: &CancelToken,
        events: &mut dyn FnMut(&Event),
    ) -> Result<Installed, Error> {
        // Only the loader was in the package.
        self.ensure_begun(events)?;
        events(&Event::PhaseFinished(Phase::Flash));

        events(&Event::PhaseStarted(Phase::ReadBack));
        let m = self.verified.manifest();
        let loader = self.loader.clone();
        for image in m
            .images
            .iter()
            .filter(|i| loader.as_deref() != Some(i.partition.as_str()))
        {
            let digest = self
                .session
                .read_back(&image.partition, image.size)
                .map_err(device_error)?;
            // Equal, the device holds bytes that hash to the signed whole-image digest; since
            // it was sent only bytes that matched their signed chunk digests, it holds exactly
            // those, and the whole-image digest agrees with them (anything else would take a
            // SHA-256 collision): read-back proves both at no extra pass over the image.
            if digest != image.digest {
                return Err(self.read_back_mismatch(image));
            }
        }
        events(&Event::PhaseFinished(Phase::ReadBack));

        if cancel.is_cancelled() {
            return Err(Error::new(ErrorKind::Cancelled, "cancelled before commit"));
        }
        events(&Event::PhaseStarted(Phase::Commit));
        self.session.commit().map_err(device_error)?;
        let m = self.verified.manifest();
        self.trust.committed(m.security_version)?;
        events(&Event::PhaseFinished(Phase::Commit));
        let device = &self.device;
        Ok(Installed {
            device_id: device.id.clone(),
            product: device.product.clone(),
            chipset: device.chipset.clone(),
            hardware_revision: device.hardware_revision.clone(),
            slot: device.active_slot.map(Slot::other),
            previous_version: device.installed_version.clone(),
            version: m.software_version.clone(),
            floor: device.security_floor.max(m.security_version),
        })
    }

    /// Why an image's read-back differs from its signed whole-image digest: the device stored
    /// other bytes (52), or — when the device can read back chunk by chunk and every chunk
    /// matches its signed digest — the package's whole-image digest contradicts its own chunks
    /// (31, a packer bug: nothing is committed either way).
    fn read_back_mismatch(&mut self, image: &ImageSpec) -> Error {
        let at = Location {
            image: Some(image.name.clone()),
            ..Location::default()
        };
        let raw = image.stored_chunks.is_empty();
        let chunks = if raw && self.session.reads_back_chunks() {
            self.session
                .read_back_chunks(&image.partition, image.size, image.chunk_size)
                .ok()
        } else {
            None
        };
        match chunks {
            Some(chunks) if chunks == image.chunk_digests => Error::new(
                ErrorKind::ImageDigestMismatch,
                format!(
                    "partition '{}' holds exactly the verified chunks of image '{}', which do not hash to the package's signed whole-image digest: the package contradicts itself",
                    image.partition, image.name
                ),
            )
            .at(at),
            Some(chunks) => {
                let bad = chunks
                    .iter()
                    .zip(&image.chunk_digests)
                    .position(|(held, signed)| held != signed)
                    .unwrap_or(chunks.len());
                Error::new(
                    ErrorKind::ReadBackMismatch,
                    format!(
                        "partition '{}' reads back differently from image '{}', from chunk {bad} on",
                        image.partition, image.name
                    ),
                )
                .at(Location {
                    chunk: u64::try_from(bad).ok(),
                    ..at
                })
            }
            None => Error::new(
                ErrorKind::ReadBackMismatch,
                format!(
                    "partition '{}' reads back differently from image '{}' (or the package's whole-image digest contradicts its chunks: `veriflash verify --whole-image-digest` tells which)",
                    image.partition, image.name
                ),
            )
            .at(at),
        }
    }

    /// After a failure: from the begin on the device holds a journal, so the install is
    /// aborted with the error's code. Best effort: a device that lost power cannot record
    /// anything; the journal it kept tells the next run what happened.
    pub(crate) fn abort(&mut self, err: &Error) {
        if self.begun {
            let _ = self.session.abort(&LastResult {
                code: err.code(),
                message: err.to_string(),
            });
        }
    }
}

/// The whole policy on `device`, then the plan is handed to the session (`begin`): ends the
/// pre-flight phase, runs staging and starts the flash phase.
fn start(
    verified: &VerifiedManifest,
    device: &DeviceInfo,
    policy: &InstallPolicy,
    loader: Option<&str>,
    trust_anchors: Option<Vec<u8>>,
    session: &mut dyn FlashSession,
    events: &mut dyn FnMut(&Event),
) -> Result<(), Error> {
    check_identity_of(verified.manifest(), device, &*session)?;
    check_policy_except(verified, device, policy, loader)?;
    // A delta package applies to what the device runs: checked whole, before anything is
    // written (nothing is, on a mismatch).
    crate::check_sources(
        verified.manifest(),
        &mut crate::delta::SessionImages(&mut *session),
        device.installed_version.as_deref(),
        policy.source_check,
    )
    .map_err(|e| match (e.kind(), session.source_mismatch_remedy()) {
        (ErrorKind::SourceMismatch, Some(remedy)) => e.with_remedy(remedy),
        _ => e,
    })?;
    events(&Event::PhaseFinished(Phase::Preflight));
    let m = verified.manifest();
    let plan = InstallPlan {
        package_id: *verified.package_id(),
        target_slot: device.active_slot.map(|slot| slot.other()),
        images: m
            .images
            .iter()
            .filter(|i| Some(i.partition.as_str()) != loader)
            .map(|i| PlannedImage {
                partition: i.partition.clone(),
                size: i.size,
                digest: i.digest,
            })
            .collect(),
        software_version: m.software_version.clone(),
        security_version: m.security_version,
        trust_anchors,
    };
    events(&Event::PhaseStarted(Phase::Staging));
    session.begin(&plan).map_err(device_error)?;
    events(&Event::PhaseFinished(Phase::Staging));
    events(&Event::PhaseStarted(Phase::Flash));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_dir_limit_is_the_file_systems_free_space() {
        let dir = std::env::temp_dir();
        let limit = staging_limit(&InstallPolicy::default().with_staging_dir(&dir))
            .unwrap()
            .unwrap();
        // `df` asks the same question through another program.
        let out = std::process::Command::new("df")
            .args(["--output=avail", "-B1"])
            .arg(&dir)
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let df: u64 = text.lines().nth(1).unwrap().trim().parse().unwrap();
        // Other processes write meanwhile: allow 64 MiB of drift either way.
        assert!(limit.abs_diff(df) < 64 << 20, "statvfs {limit} vs df {df}");
        // A quota below it wins.
        let quota = staging_limit(
            &InstallPolicy::default()
                .with_staging_dir(&dir)
                .with_staging_quota(1000),
        )
        .unwrap();
        assert_eq!(quota, Some(1000));
    }

    #[test]
    fn buffers_in_flight_fit_the_memory_budget() {
        let policy = InstallPolicy::default()
            .with_threads(4)
            .with_memory_budget(3 << 20);
        let raw = |largest| ChunkMemory {
            largest,
            compressed: false,
        };
        let options = policy.parallel_options(raw(1 << 20));
        assert_eq!(options.max_in_flight, 3, "3 MiB holds three 1 MiB chunks");
        let roomy = InstallPolicy::default()
            .with_threads(2)
            .parallel_options(raw(1 << 20));
        assert_eq!(
            roomy.max_in_flight, 4,
            "two per thread when the budget allows"
        );
        let tight = InstallPolicy::default()
            .with_threads(2)
            .with_memory_budget(64 << 10)
            .parallel_options(raw(4096));
        assert_eq!(tight.min_buffer_len, 64 << 10);
        assert_eq!(tight.max_in_flight, 1);
        // Compressed chunks need a decode buffer beside each stored one.
        let compressed = policy.parallel_options(ChunkMemory {
            largest: 1 << 20,
            compressed: true,
        });
        assert_eq!(
            compressed.max_in_flight, 1,
            "3 MiB holds one 2 x 1 MiB slot"
        );
    }

    #[test]
    fn device_failures_map_by_what_the_operating_system_said() {
        use std::io::ErrorKind as Io;
        let storage = |kind: Io| PluginError::Storage {
            path: "/dev/sdz".into(),
            source: kind.into(),
        };
        for (err, kind) in [
            (storage(Io::NotFound), ErrorKind::DeviceNotFound),
            (storage(Io::IsADirectory), ErrorKind::DeviceNotFound),
            (storage(Io::PermissionDenied), ErrorKind::DeviceAccessDenied),
            (
                storage(Io::ReadOnlyFilesystem),
                ErrorKind::DeviceAccessDenied,
            ),
            (storage(Io::StorageFull), ErrorKind::NoSpace),
            (storage(Io::OutOfMemory), ErrorKind::ResourceExhausted),
            (storage(Io::Other), ErrorKind::DeviceError),
            (
                PluginError::Transport(Io::TimedOut.into()),
                ErrorKind::Timeout,
            ),
            (
                PluginError::Transport(Io::BrokenPipe.into()),
                ErrorKind::TransportError,
            ),
            (PluginError::Busy("held".into()), ErrorKind::Busy),
        ] {
            let text = err.to_string();
            let mapped = device_error(err);
            assert_eq!(mapped.kind(), kind, "{text}");
            assert!(
                !text.contains("/dev/sdz") || mapped.message().contains("/dev/sdz"),
                "the path stays in the message"
            );
        }
    }

    #[test]
    fn a_plugins_remedy_replaces_the_kinds_and_the_kind_comes_from_the_error_under_it() {
        let err = PluginError::Storage {
            path: "dev.img".into(),
            source: std::io::ErrorKind::NotFound.into(),
        }
        .with_remedy("make it with `veriflash device init`");
        let mapped = device_error(err);
        assert_eq!(mapped.kind(), ErrorKind::DeviceNotFound);
        assert_eq!(mapped.remedy(), "make it with `veriflash device init`");
        assert!(mapped.message().contains("dev.img"), "{}", mapped.message());
        let plain = device_error(PluginError::NotADevice("layout.toml is text".into()));
        assert_eq!(plain.kind(), ErrorKind::InvalidInput);
        assert_eq!(plain.remedy(), ErrorKind::InvalidInput.remedy());
    }

    #[test]
    fn a_missing_staging_dir_is_an_io_error_not_unlimited_space() {
        let err = staging_limit(&InstallPolicy::default().with_staging_dir("/nonexistent/dir"))
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Io);
    }
}
