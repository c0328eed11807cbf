//! The whole verify-and-flash pipeline as one object that every frontend embeds: the CLI, the
//! C API, a factory station, an embedder's own updater.
//!
//! An [`Updater`] is built ([`UpdaterBuilder`], as tough's `RepositoryLoader` is) from where
//! the package comes from ([`PackageSource`]: a file, a stream read once, or byte ranges of a
//! server — the OTA path), the trust configuration ([`Trust`]: the anchors, whether there is a
//! trusted clock, how many must sign), the install policy, a plugin registry and the
//! environment its plugins keep their state in, an event sink, a cancel token, and what to do
//! when a device drops off ([`Reconnect`]). Then it
//!
//! * verifies a package without a device ([`Updater::verify`]);
//! * installs it on one device ([`Updater::install`]): the device is claimed first; the package
//!   is verified (against the device's own trust anchors too, when it holds newer ones); every
//!   verified chunk goes to the device once — from a download, as it arrives and is checked;
//!   read-back, commit; then, for a device that drops off mid-way and comes back (a modem that
//!   re-enumerates, [`veriflash_plugin::Plugin::reconnects`]), the whole install runs again from
//!   a fresh verification, and a device that reboots into its new software can be waited for
//!   ([`UpdaterBuilder::wait_for_boot`]);
//! * installs it on many devices at once ([`Updater::install_all`]): the same pipeline, the
//!   package read and verified once and fanned out ([`crate::factory`]).
//!
//! Nothing here knows a chipset: what differs between devices is the plugins' business, behind
//! [`veriflash_plugin::Plugin`] and [`veriflash_plugin::FlashSession`].

use std::io::{BufReader, Read};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use veriflash_plugin::{BootWatch, FlashSession, PluginEnvironment, Registry};
use veriflash_sig::{TimePolicy, Verifier};

use crate::error::{Error, ErrorKind};
use crate::factory::{FactoryLine, FactoryReport};
use crate::flash::{CancelToken, Device, Event, InstallPolicy, Installed, Phase, device_error};
use crate::host::HostStore;
use crate::ota::{FetchStats, OtaOptions, RemotePackage};
use crate::package::{PackageReader, VerifyReport};
use crate::reuse::{Reuse, ReuseIndex, cache_prune as prune_cache, previous_manifest};
use crate::source::Source;
use crate::trust::AnchorSet;

/// Where a package comes from.
pub enum PackageSource {
    /// A package file (or a FIFO a program writes to): opened again for every run, so an
    /// install that runs again after a reconnect verifies it from scratch. A regular file's
    /// length is checked against its signed layout before the device is touched.
    File(PathBuf),
    /// A stream read once, front to back (standard input, a socket a PC tool pushes): it cannot
    /// be read again, so an install from it is not re-run after a reconnect.
    Stream(Box<dyn Read + Send>),
    /// Byte ranges of a package (an HTTP(S) server, a file, the embedder's own [`Source`]): the
    /// prefix is fetched and verified first, then each chunk as it arrives, resumed and
    /// repaired as `options` allow ([`crate::ota`]). Every byte is verified once.
    Remote(Box<dyn Source>, OtaOptions),
}

impl std::fmt::Debug for PackageSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File(path) => f.debug_tuple("File").field(path).finish(),
            Self::Stream(_) => f.write_str("Stream"),
            Self::Remote(source, _) => f.debug_tuple("Remote").field(&source.describe()).finish(),
        }
    }
}

/// What clock certificate validity dates are judged by.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TrustedTime {
    /// The system clock, trusted: a PC, a phone, a device with a secure clock. The default,
    /// the same for every frontend.
    #[default]
    System,
    /// No trusted clock (most modems): validity dates are not checked, so an expired signing
    /// certificate cannot brick a fleet's update path; `security_version` orders packages.
    None,
    /// This time, in seconds since the Unix epoch (a device's own trusted time source).
    At(u64),
}

/// The trust configuration: the anchors, the clock, how many distinct keys must sign.
#[derive(Clone, Debug)]
pub struct Trust {
    anchors: AnchorSet,
    time: TrustedTime,
    threshold: usize,
}

impl Trust {
    /// Trust in `anchors`, with the system clock trusted and the set's own threshold.
    #[must_use]
    pub fn new(anchors: AnchorSet) -> Self {
        Self {
            anchors,
            time: TrustedTime::System,
            threshold: 0,
        }
    }

    /// Sets the clock certificates are judged by.
    #[must_use]
    pub fn with_time(mut self, time: TrustedTime) -> Self {
        self.time = time;
        self
    }

    /// Requires at least `threshold` distinct trusted keys to sign (the anchor set may demand
    /// more).
    #[must_use]
    pub fn with_threshold(mut self, threshold: usize) -> Self {
        self.threshold = threshold;
        self
    }

    /// The anchors.
    #[must_use]
    pub fn anchors(&self) -> &AnchorSet {
        &self.anchors
    }

    /// The verifier this configuration means: the set's anchors, its version (so only a newer
    /// rotation is adopted), the higher of the two thresholds, and the clock read now.
    #[must_use]
    pub fn verifier(&self) -> Verifier<'_> {
        let time = match self.time {
            TrustedTime::System => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                // A clock before 1970 is not a trusted clock.
                .map_or(TimePolicy::NoClock, |d| {
                    TimePolicy::TrustedTime(d.as_secs())
                }),
            TrustedTime::None => TimePolicy::NoClock,
            TrustedTime::At(secs) => TimePolicy::TrustedTime(secs),
        };
        let policy = self.anchors.policy();
        let threshold = policy.threshold().max(self.threshold);
        Verifier::new(self.anchors.anchors())
            .with_time(time)
            .with_policy(policy.with_threshold(threshold))
    }
}

/// What an install does when its device drops off mid-way: wait for it to answer again, then
/// run the whole install once more from a fresh verification (only for devices whose plugin
/// says they come back, and sources that can be read again). A run that got further than the
/// one before does not count against [`Reconnect::attempts`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reconnect {
    /// How long one wait lasts at most; zero: never wait, fail at once.
    pub wait: Duration,
    /// How many waits in a row, each after a run that got no further than the one before, one
    /// install allows: a device that keeps dropping off at the same place has a cable or power
    /// problem that another run will not fix.
    pub attempts: u32,
    /// How often the device is tried while waiting.
    pub poll: Duration,
}

impl Default for Reconnect {
    /// Up to 3 waits of up to 60 s (a power cycle and a boot ROM's enumeration take seconds;
    /// a person re-plugging a cable most of a minute), trying twice a second.
    fn default() -> Self {
        Self {
            wait: Duration::from_secs(60),
            attempts: 3,
            poll: Duration::from_millis(500),
        }
    }
}

impl Reconnect {
    /// Never wait: a device that drops off ends the install.
    #[must_use]
    pub fn never() -> Self {
        Self {
            wait: Duration::ZERO,
            ..Self::default()
        }
    }
}

/// Hears every event of an install, with the index of the device it is about (0 for a single
/// device; the position in the target list for [`Updater::install_all`]).
pub type EventSink = Box<dyn FnMut(usize, &Event) + Send>;

/// What an install established.
#[derive(Debug)]
#[non_exhaustive]
pub struct InstallReport {
    /// What the verification established.
    pub report: VerifyReport,
    /// How many times the device dropped off and the install ran again.
    pub reconnects: u32,
    /// How to reach the device once it came back running its new software, when waited for
    /// ([`UpdaterBuilder::wait_for_boot`]).
    pub booted: Option<String>,
    /// Why the wait for the boot failed (the install itself committed): a device that did not
    /// come back in time ([`ErrorKind::Timeout`]), a cancelled wait.
    pub boot_error: Option<Error>,
    /// A download's traffic, for a [`PackageSource::Remote`].
    pub download: Option<FetchStats>,
    /// What the device runs now: its identity, slot, version and floor.
    pub installed: Installed,
    /// How long each phase of the run that committed took, in the order they finished.
    pub phases: Vec<(Phase, Duration)>,
}

/// What one run of an install that committed produced.
struct Attempt {
    report: VerifyReport,
    installed: Installed,
    download: Option<FetchStats>,
    phases: Vec<(Phase, Duration)>,
}

/// Builds an [`Updater`].
pub struct UpdaterBuilder {
    source: PackageSource,
    trust: Trust,
    policy: InstallPolicy,
    registry: Registry,
    environment: PluginEnvironment,
    events: EventSink,
    cancel: CancelToken,
    reconnect: Reconnect,
    boot_wait: Duration,
    whole_image: bool,
    reuse: Reuse,
}

impl std::fmt::Debug for UpdaterBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpdaterBuilder")
            .field("source", &self.source)
            .field("registry", &self.registry)
            .field("environment", &self.environment)
            .finish_non_exhaustive()
    }
}

impl UpdaterBuilder {
    /// An updater for the package from `source`, trusting `trust`; the rest defaults: the
    /// default install policy, the built-in plugins, no state directory, no events, never
    /// cancelled, the default [`Reconnect`], no wait for the boot.
    #[must_use]
    pub fn new(source: PackageSource, trust: Trust) -> Self {
        Self {
            source,
            trust,
            policy: InstallPolicy::default(),
            registry: Registry::with_builtin(),
            environment: PluginEnvironment::default(),
            events: Box::new(|_, _| {}),
            cancel: CancelToken::new(),
            reconnect: Reconnect::default(),
            boot_wait: Duration::ZERO,
            whole_image: false,
            reuse: Reuse::default(),
        }
    }

    /// The install policy (memory, threads, staging, the caller's pre-flight hook).
    #[must_use]
    pub fn policy(mut self, policy: InstallPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// The plugins targets are opened with.
    #[must_use]
    pub fn registry(mut self, registry: Registry) -> Self {
        self.registry = registry;
        self
    }

    /// Where plugins keep their state (journals, backups) and read their configuration, and
    /// where the host keeps the anti-rollback floor and trust anchors of devices that cannot
    /// keep their own (`STATE_DIR/devices`, [`crate::host`]).
    #[must_use]
    pub fn environment(mut self, environment: PluginEnvironment) -> Self {
        self.environment = environment;
        self
    }

    /// Hears every event (see [`EventSink`]).
    #[must_use]
    pub fn events(mut self, events: impl FnMut(usize, &Event) + Send + 'static) -> Self {
        self.events = Box::new(events);
        self
    }

    /// A token that cancels the install between chunks (and a wait for a device).
    #[must_use]
    pub fn cancel(mut self, cancel: CancelToken) -> Self {
        self.cancel = cancel;
        self
    }

    /// What to do when a device drops off mid-install.
    #[must_use]
    pub fn reconnect(mut self, reconnect: Reconnect) -> Self {
        self.reconnect = reconnect;
        self
    }

    /// After a successful install, waits up to `timeout` for the device to come back running
    /// its new software, where its plugin can tell ([`veriflash_plugin::Plugin::boot_watch`]).
    #[must_use]
    pub fn wait_for_boot(mut self, timeout: Duration) -> Self {
        self.boot_wait = timeout;
        self
    }

    /// Whether and from where a download reuses chunks the device side already holds (delta
    /// updates, [`crate::reuse`]): by default from the images the device runs, when its plugin
    /// can read them back. Only a [`PackageSource::Remote`] reuses: a local package costs no
    /// traffic.
    #[must_use]
    pub fn reuse(mut self, reuse: Reuse) -> Self {
        self.reuse = reuse;
        self
    }

    /// Makes [`Updater::verify`] also hash each whole image and compare it with its signed
    /// digest (installs always do).
    #[must_use]
    pub fn check_whole_image(mut self, check: bool) -> Self {
        self.whole_image = check;
        self
    }

    /// The updater, its plugins configured with the environment.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] when a plugin's configuration file cannot be used.
    pub fn build(mut self) -> Result<Updater, Error> {
        self.registry
            .configure(&self.environment)
            .map_err(|e| Error::new(ErrorKind::InvalidInput, e.to_string()).with_source(e))?;
        let host = self
            .environment
            .state_dir
            .as_ref()
            .map(|dir| HostStore::new(dir.join("devices")));
        Ok(Updater {
            source: Some(self.source),
            trust: self.trust,
            policy: self.policy,
            registry: self.registry,
            host,
            events: Mutex::new(self.events),
            cancel: self.cancel,
            reconnect: self.reconnect,
            boot_wait: self.boot_wait,
            whole_image: self.whole_image,
            reuse: self.reuse,
        })
    }
}

/// The verify-and-flash pipeline; see the module documentation.
pub struct Updater {
    /// `None` once a stream was read.
    source: Option<PackageSource>,
    trust: Trust,
    policy: InstallPolicy,
    registry: Registry,
    host: Option<HostStore>,
    events: Mutex<EventSink>,
    cancel: CancelToken,
    reconnect: Reconnect,
    boot_wait: Duration,
    whole_image: bool,
    reuse: Reuse,
}

impl std::fmt::Debug for Updater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Updater")
            .field("source", &self.source)
            .field("registry", &self.registry)
            .field("host", &self.host)
            .finish_non_exhaustive()
    }
}

/// A package opened from its source, verified or not yet.
enum Opened<'s> {
    Local(PackageReader<BufReader<Box<dyn Read + Send>>>),
    Remote(&'s mut dyn Source, OtaOptions),
}

impl Updater {
    /// Starts building an updater for the package from `source`, trusting `trust`.
    #[must_use]
    pub fn builder(source: PackageSource, trust: Trust) -> UpdaterBuilder {
        UpdaterBuilder::new(source, trust)
    }

    /// The plugins, configured.
    #[must_use]
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    fn emit(&self, device: usize, event: &Event) {
        if let Ok(mut events) = self.events.lock() {
            events(device, event);
        }
    }

    /// Whether the package can be read again for another run.
    fn rereadable(&self) -> bool {
        match &self.source {
            Some(PackageSource::File(_)) => true,
            Some(PackageSource::Remote(source, _)) => source.can_reread(),
            Some(PackageSource::Stream(_)) | None => false,
        }
    }

    /// Verifies the package completely — signatures, manifest, every payload chunk, its end —
    /// without a device.
    ///
    /// # Errors
    /// Any error of the verification.
    pub fn verify(&mut self) -> Result<VerifyReport, Error> {
        self.emit(0, &Event::PhaseStarted(Phase::Signature));
        let result = self.verify_inner();
        self.emit(0, &Event::Finished(result.as_ref().err().map(Error::code)));
        result
    }

    fn verify_inner(&mut self) -> Result<VerifyReport, Error> {
        let verifier = self.trust.verifier();
        let (policy, whole_image) = (&self.policy, self.whole_image);
        let report = match open(&mut self.source)? {
            Opened::Local(package) => {
                let package = package.verify(&verifier)?;
                let options = policy
                    .stream_options(package.manifest())
                    .check_whole_image(whole_image);
                package.with_options(options).verify_payload()?
            }
            Opened::Remote(source, options) => {
                let remote = RemotePackage::open(source, &verifier, options)?
                    .with_cancel(self.cancel.clone());
                if remote.manifest().manifest().is_delta() {
                    // Its stored bytes, each checked as it arrives; the chunks rebuilt from a
                    // device's image are checked when it is installed (as for a local file).
                    stage_delta(remote, &verifier)?.2
                } else {
                    remote.stream(whole_image, |_, _| Ok(()))?.0
                }
            }
        };
        Ok(report)
    }

    /// Installs the package on the device at `target` (`file:PATH`, `mdm9x07:usb`, ...).
    ///
    /// The device is claimed first, so a busy device is refused before the package is read.
    /// Every event goes to the sink with device index 0, ending with one
    /// [`Event::Finished`]. A device that drops off mid-way is waited for and the install runs
    /// again, as [`Reconnect`] says, when its plugin says it comes back and the package can be
    /// read again.
    ///
    /// # Errors
    /// Any error of verification, policy, streaming or the device; a device that did not come
    /// back in time ends with the error that cut it off, saying so.
    pub fn install(&mut self, target: &str) -> Result<InstallReport, Error> {
        let result = self.install_inner(target);
        self.emit(0, &Event::Finished(result.as_ref().err().map(Error::code)));
        let (mut report, watch) = result?;
        if let Some(mut watch) = watch {
            // The install committed: whatever the wait finds is reported beside it.
            self.emit(
                0,
                &Event::WaitingForBoot {
                    timeout: self.boot_wait,
                },
            );
            let cancel = self.cancel.clone();
            match watch.wait(self.boot_wait, &|| cancel.is_cancelled()) {
                Ok(device) => {
                    self.emit(0, &Event::Booted(device.clone()));
                    report.booted = Some(device);
                }
                Err(e) if cancel.is_cancelled() => {
                    report.boot_error = Some(Error::new(
                        ErrorKind::Cancelled,
                        format!(
                            "stopped waiting for the device to come back ({e}); the install itself committed"
                        ),
                    ));
                }
                Err(e) => report.boot_error = Some(device_error(e)),
            }
        }
        Ok(report)
    }

    fn install_inner(
        &mut self,
        target: &str,
    ) -> Result<(InstallReport, Option<Box<dyn BootWatch>>), Error> {
        let (plugin, rest) = self.registry.find(target).map_err(device_error)?;
        let comes_back = plugin.reconnects(rest) && !self.reconnect.wait.is_zero();
        let boot_watch = if self.boot_wait.is_zero() {
            None
        } else {
            Some(plugin.boot_watch(rest).ok_or_else(|| {
                Error::new(
                    ErrorKind::InvalidInput,
                    format!(
                        "a wait for the boot needs a device its plugin can watch come back (a real modem on USB), not '{target}'"
                    ),
                )
            })?)
        };
        let mut session = self.registry.open(target).map_err(device_error)?;
        let mut reconnects = 0;
        // Reconnects in a row that got no further than the run before: what the limit counts,
        // so a device that drops off by design (a reset after each partition) is followed
        // through, while one that keeps failing at the same place is given up on.
        let mut stalled = 0;
        let mut furthest = 0u64;
        let done = loop {
            let mut answered = false;
            let mut reached = 0u64;
            let outcome = self.attempt(session.as_mut(), &mut answered, &mut reached);
            let err = match outcome {
                Ok(done) => break done,
                Err(err) => err,
            };
            // The link was lost: broken, silent, the device gone from the bus.
            let lost = matches!(
                err.kind(),
                ErrorKind::TransportError
                    | ErrorKind::Timeout
                    | ErrorKind::Interrupted
                    | ErrorKind::DeviceNotFound
            );
            if !(comes_back && answered && lost && self.rereadable()) {
                return Err(err);
            }
            if reached > furthest {
                furthest = reached;
                stalled = 0;
            }
            if stalled >= self.reconnect.attempts {
                return Err(err.noted(
                    &format!(
                        "gave up after {} reconnects without progress (check the cable, the hub and the device's power)",
                        self.reconnect.attempts
                    ),
                ));
            }
            stalled += 1;
            reconnects += 1;
            self.emit(
                0,
                &Event::Reconnecting {
                    attempt: reconnects,
                    max_attempts: self.reconnect.attempts,
                    timeout: self.reconnect.wait,
                    code: err.code(),
                    message: err.message().to_owned(),
                },
            );
            // Close the port (and its lock) first: the device that comes back is opened anew.
            drop(session);
            session = self.wait_for_device(target, &err)?;
            self.emit(
                0,
                &Event::Reconnected {
                    attempt: reconnects,
                },
            );
        };
        drop(session);
        Ok((
            InstallReport {
                report: done.report,
                reconnects,
                booted: None,
                boot_error: None,
                download: done.download,
                installed: done.installed,
                phases: done.phases,
            },
            boot_watch,
        ))
    }

    /// One run of an install on an open session.
    fn attempt(
        &mut self,
        session: &mut dyn FlashSession,
        answered: &mut bool,
        reached: &mut u64,
    ) -> Result<Attempt, Error> {
        // The device first: one that does not answer is found before the package is read.
        session.device_info().map_err(device_error)?;
        *answered = true;
        let mut started = vec![(Phase::Signature, Instant::now())];
        let mut phases = Vec::new();
        self.emit(0, &Event::PhaseStarted(Phase::Signature));
        let Self {
            source,
            trust,
            policy,
            host,
            events,
            cancel,
            reuse,
            ..
        } = self;
        let verifier = trust.verifier();
        let mut tell = |event: &Event| {
            match event {
                Event::Progress { done, .. } => *reached = (*reached).max(*done),
                Event::PhaseStarted(phase) => started.push((*phase, Instant::now())),
                Event::PhaseFinished(phase) => {
                    if let Some((_, at)) = started.iter().rev().find(|(p, _)| p == phase) {
                        phases.push((*phase, at.elapsed()));
                    }
                }
                _ => {}
            }
            if let Ok(sink) = events.get_mut() {
                sink(0, event);
            }
        };
        let device = Device {
            verifier: &verifier,
            policy,
            session,
            host: host.as_ref(),
            cancel,
        };
        let (report, installed, download, verified) = match open(source)? {
            Opened::Local(package) => {
                let package = package.verify(&verifier)?;
                tell(&Event::PhaseFinished(Phase::Signature));
                let verified = package.manifest().clone();
                let package = package.with_options(policy.stream_options(&verified));
                let (report, installed) =
                    device.install(&verified, |sink| package.stream_to(sink), &mut tell)?;
                (report, installed, None, verified)
            }
            Opened::Remote(source, options) => {
                let remote =
                    RemotePackage::open(source, &verifier, options)?.with_cancel(cancel.clone());
                tell(&Event::PhaseFinished(Phase::Signature));
                let verified = remote.manifest().clone();
                if verified.manifest().is_delta() {
                    // A delta package: downloaded whole first (every stored byte checked as
                    // it arrives), then installed from that file like any local package,
                    // which checks the device's source before its first write.
                    let (_staging, path, _, stats) = stage_delta(remote, &verifier)?;
                    let package = PackageReader::open(&path)?.verify(&verifier)?;
                    let package = package.with_options(policy.stream_options(&verified));
                    let (report, installed) =
                        device.install(&verified, |sink| package.stream_to(sink), &mut tell)?;
                    (report, installed, Some(stats), verified)
                } else {
                    let mut stats = None;
                    let (report, installed) = device.install(
                        &verified,
                        |sink| {
                            let index = if reuse.is_enabled() {
                                let previous = previous_manifest(
                                    host.as_ref(),
                                    sink.device_id(),
                                    sink.installed_version(),
                                    &verifier,
                                );
                                let mut warnings = Vec::new();
                                let index = ReuseIndex::build(
                                    sink.session(),
                                    verified.manifest(),
                                    previous.as_ref(),
                                    reuse.cache_dir(),
                                    &mut |w| warnings.push(w),
                                );
                                for w in warnings {
                                    sink.event(&Event::Warning(w));
                                }
                                index
                            } else {
                                ReuseIndex::empty()
                            };
                            let (bytes_reused, bytes_to_fetch) = remote.reuse_plan(&index);
                            sink.event(&Event::DeltaPlanned {
                                bytes_reused,
                                bytes_to_fetch,
                                bytes_scanned: index.scanned(),
                            });
                            let (report, fetched) =
                                remote.stream_reusing(false, &index, reuse.cache_dir(), sink)?;
                            stats = Some(fetched);
                            Ok(report)
                        },
                        &mut tell,
                    )?;
                    (report, installed, stats, verified)
                }
            }
        };
        // What the device runs now, for the next install to reuse (a hint: whatever it names
        // is read again and re-hashed), and the chunk cache trimmed to it.
        if let (Some(host), Some(id)) = (host.as_ref(), installed.device_id.as_deref()) {
            let kept = verified
                .signed_prefix()
                .and_then(|prefix| host.save_installed(id, &prefix));
            if let Err(e) = kept {
                tell(&Event::Warning(format!(
                    "the installed package's record for the next delta install was not kept: {e}"
                )));
            }
        }
        if let Some(dir) = reuse.cache_dir() {
            prune_cache(dir, verified.manifest());
        }
        Ok(Attempt {
            report,
            installed,
            download,
            phases,
        })
    }

    /// Waits for the device at `target` to answer again after `lost` cut it off: opens it every
    /// [`Reconnect::poll`] until it describes itself, the wait ends, or the token is cancelled.
    fn wait_for_device(&self, target: &str, lost: &Error) -> Result<Box<dyn FlashSession>, Error> {
        let start = Instant::now();
        loop {
            if self.cancel.is_cancelled() {
                return Err(Error::new(
                    ErrorKind::Cancelled,
                    format!(
                        "cancelled while waiting for the device to come back (the connection had been lost: {})",
                        lost.message()
                    ),
                ));
            }
            let last = match self.registry.open(target).and_then(|mut session| {
                session.device_info()?;
                Ok(session)
            }) {
                Ok(session) => return Ok(session),
                Err(e) => e.to_string(),
            };
            let left = self.reconnect.wait.saturating_sub(start.elapsed());
            if left.is_zero() {
                return Err(lost.noted(&format!(
                    "the device did not come back within {} s (last try: {last})",
                    self.reconnect.wait.as_secs()
                )));
            }
            std::thread::sleep(self.reconnect.poll.min(left));
        }
    }

    /// Installs the package on every device of `targets` at once: read and verified once, each
    /// verified chunk handed to every device still running (see [`crate::factory`]). Each
    /// device's events carry its index in `targets`; each ends with its own
    /// [`Event::Finished`]. Devices are not waited for when they drop off.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] for no target or more than [`crate::factory::MAX_DEVICES`];
    /// every other failure is a device's own, in [`FactoryReport::results`].
    pub fn install_all(&mut self, targets: &[String]) -> Result<FactoryReport, Error> {
        let Self {
            source,
            trust,
            policy,
            registry,
            host,
            events,
            cancel,
            ..
        } = self;
        let verifier = trust.verifier();
        let registry = &*registry;
        let events = &*events;
        let tell = |device: usize, event: &Event| {
            if let Ok(mut sink) = events.lock() {
                sink(device, event);
            }
        };
        let mut line = FactoryLine::new(&verifier, policy).with_cancel(cancel.clone());
        if let Some(host) = host.as_ref() {
            line = line.with_host_store(host);
        }
        let open_device = |i: usize| {
            let target = targets.get(i).map_or("", String::as_str);
            registry.open(target).map_err(device_error)
        };
        let devices = targets.len();
        (0..devices).for_each(|i| tell(i, &Event::PhaseStarted(Phase::Signature)));
        let verified_stream = open(source).and_then(|opened| match opened {
            Opened::Local(package) => {
                let package = package.verify(&verifier)?;
                let verified = package.manifest().clone();
                let package = package.with_options(policy.stream_options(&verified));
                Ok((verified, Payload::Local(package)))
            }
            Opened::Remote(source, options) => {
                let remote =
                    RemotePackage::open(source, &verifier, options)?.with_cancel(cancel.clone());
                Ok((remote.manifest().clone(), Payload::Remote(remote)))
            }
        });
        let (verified, payload) = match verified_stream {
            Ok(pair) => pair,
            Err(err) => return Ok(FactoryReport::failed(devices, &err, &tell)),
        };
        (0..devices).for_each(|i| tell(i, &Event::PhaseFinished(Phase::Signature)));
        line.fan_out(
            &verified,
            |sink| match payload {
                Payload::Local(package) => package.stream(sink),
                Payload::Remote(remote) => remote.stream(false, sink).map(|(report, _)| report),
            },
            devices,
            &open_device,
            &tell,
        )
    }
}

/// Downloads a delta package whole into a new temporary directory (removed when the returned
/// guard drops), every stored byte checked against the digest that covers it as it arrives: a
/// delta is installed from a file, since its chunks are rebuilt from the device's image only
/// after that whole image was checked (docs/FORMAT.md §3.4).
fn stage_delta(
    remote: RemotePackage<&mut dyn Source>,
    verifier: &Verifier<'_>,
) -> Result<
    (
        tempfile::TempDir,
        std::path::PathBuf,
        VerifyReport,
        FetchStats,
    ),
    Error,
> {
    let staging =
        tempfile::tempdir().map_err(|e| Error::io("a directory for the downloaded delta", e))?;
    let path = staging.path().join("delta.vfp");
    let (report, stats) = remote.fetch_to_file(&path, verifier, &mut |_| {})?;
    Ok((staging, path, report, stats))
}

/// Opens the package for one run (taking a stream, which is read once).
fn open(source: &mut Option<PackageSource>) -> Result<Opened<'_>, Error> {
    if matches!(source, Some(PackageSource::Stream(_))) {
        let Some(PackageSource::Stream(stream)) = source.take() else {
            return Err(spent());
        };
        return Ok(Opened::Local(PackageReader::new(
            BufReader::with_capacity(64 * 1024, stream),
        )?));
    }
    match source.as_mut() {
        Some(PackageSource::File(path)) => Ok(Opened::Local(PackageReader::open(path)?)),
        Some(PackageSource::Remote(source, options)) => {
            Ok(Opened::Remote(source.as_mut(), *options))
        }
        Some(PackageSource::Stream(_)) | None => Err(spent()),
    }
}

/// A verified package's payload, ready to stream.
enum Payload<'s> {
    Local(crate::package::VerifiedPackage<BufReader<Box<dyn Read + Send>>>),
    Remote(RemotePackage<&'s mut dyn Source>),
}

/// The error for a package whose one-time stream was already read.
fn spent() -> Error {
    Error::new(
        ErrorKind::InvalidInput,
        "the package stream was already read: a stream is verified or installed once",
    )
}
