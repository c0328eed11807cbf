//! The factory line: one process flashes several devices at once, each with its own session,
//! events and result, while the package is read and verified **once**.
//!
//! The calling thread reads the package, checks its signatures once, and streams its payload
//! through the verifier exactly as [`crate::install`] does. Each verified chunk is copied once
//! into a [`SharedChunk`] (an owned token only a verified chunk can make) and the same buffer is
//! handed to every device still running, over one bounded queue per device. Each device runs on
//! its own thread the same pre-flight, staging, write, read-back and commit as a single install
//! (the code is shared: `flash::DeviceRun`), so the policy checks are the same.
//!
//! **Failure is per device.** A device that is refused (wrong chip or product, downgrade), NAKs,
//! loses power or is cancelled ends with its own error and code, its install aborted as a single
//! install would be; the others carry on. A failure of the package itself (bad signature,
//! corrupted chunk) ends every device that has not finished with that error.
//!
//! **Slow devices: the line waits for the slowest.** Each device's queue holds at most
//! [`FactoryLine::with_queue_depth`] chunks; when the slowest device's queue is full the reader
//! waits, so memory stays bounded at about `queue depth + 2` chunks in flight whatever the number
//! of devices or the package size (clones share one buffer). A device cannot hold the line
//! forever: every session's transport has timeouts, and a device whose session fails drops out
//! of the line. Dropping a merely slow device instead would leave it half-written for no gain —
//! the line's time is set by its slowest healthy device either way.

use std::io::Read;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use veriflash_format::ImageSpec;
use veriflash_hash::{SharedChunk, VerifiedChunk};
use veriflash_plugin::FlashSession;
use veriflash_sig::Verifier;

use crate::error::{Error, ErrorKind};
use crate::flash::{CancelToken, DeviceRun, Event, InstallPolicy, Phase};
use crate::host::HostStore;
use crate::package::{PackageReader, VerifiedManifest, VerifyReport};

/// The most devices one line flashes at once (one thread each).
pub const MAX_DEVICES: usize = 64;
/// Chunks queued per device by default.
pub const DEFAULT_QUEUE_DEPTH: usize = 4;
/// The deepest queue accepted.
pub const MAX_QUEUE_DEPTH: usize = 64;

/// Opens device `index`'s session. Called on that device's own thread, so the session never
/// crosses threads (a [`veriflash_plugin::Registry`] is `Sync`: `|i| registry.open(&targets[i])`).
pub type OpenSession<'a> = dyn Fn(usize) -> Result<Box<dyn FlashSession>, Error> + Sync + 'a;

/// Hears every device's events, tagged with the device's index. Called from the devices'
/// threads (and from the reading thread for the signature phase): keep it short.
pub type DeviceEvents<'a> = dyn Fn(usize, &Event) + Sync + 'a;

/// What the line hands a device.
enum Feed {
    /// The next verified chunk of image `image` (index in the manifest).
    Chunk { image: usize, chunk: SharedChunk },
    /// The payload ended and verified: read back and commit.
    End,
    /// The payload failed verification: abort with this error.
    Failed(Error),
}

/// One line's outcome: a result per device, in device order.
#[derive(Debug)]
pub struct FactoryReport {
    /// Each device's result: the verification report on success.
    pub results: Vec<Result<VerifyReport, Error>>,
}

impl FactoryReport {
    /// Whether every device succeeded.
    #[must_use]
    pub fn all_succeeded(&self) -> bool {
        self.results.iter().all(Result::is_ok)
    }

    /// The exit status the CLI uses: 0 when every device succeeded, otherwise the code of the
    /// first failed device (in device order).
    #[must_use]
    pub fn exit_code(&self) -> u8 {
        self.results
            .iter()
            .find_map(|r| r.as_ref().err().map(Error::code))
            .unwrap_or(0)
    }
}

/// Flashes one package to several devices at once. Built like an install: a verifier, a
/// policy, then options.
pub struct FactoryLine<'a> {
    verifier: &'a Verifier<'a>,
    policy: &'a InstallPolicy,
    cancel: CancelToken,
    depth: usize,
    host: Option<&'a HostStore>,
}

impl std::fmt::Debug for FactoryLine<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FactoryLine")
            .field("policy", self.policy)
            .field("depth", &self.depth)
            .finish_non_exhaustive()
    }
}

impl<'a> FactoryLine<'a> {
    /// A line that verifies with `verifier` and applies `policy` to every device.
    #[must_use]
    pub fn new(verifier: &'a Verifier<'a>, policy: &'a InstallPolicy) -> Self {
        Self {
            verifier,
            policy,
            cancel: CancelToken::new(),
            depth: DEFAULT_QUEUE_DEPTH,
            host: None,
        }
    }

    /// A token that cancels every device between chunks.
    #[must_use]
    pub fn with_cancel(mut self, cancel: CancelToken) -> Self {
        self.cancel = cancel;
        self
    }

    /// Chunks queued per device (1..=[`MAX_QUEUE_DEPTH`]): how far the fastest device may run
    /// ahead of the slowest.
    #[must_use]
    pub fn with_queue_depth(mut self, depth: usize) -> Self {
        self.depth = depth.clamp(1, MAX_QUEUE_DEPTH);
        self
    }

    /// Where the host keeps the anti-rollback floor and trust anchors of devices that cannot
    /// keep their own (see [`crate::host`]).
    #[must_use]
    pub fn with_host_store(mut self, host: &'a HostStore) -> Self {
        self.host = Some(host);
        self
    }

    /// Reads the package from `reader` once and installs it on `devices` devices, each opened
    /// by `open` on its own thread, each reporting to `events` under its index.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] for no device or more than [`MAX_DEVICES`]. Every other
    /// failure is a device's own, in [`FactoryReport::results`].
    pub fn run<R: Read>(
        &self,
        reader: R,
        devices: usize,
        open: &OpenSession<'_>,
        events: &DeviceEvents<'_>,
    ) -> Result<FactoryReport, Error> {
        check_count(devices)?;
        let all = |event: &Event| (0..devices).for_each(|i| events(i, event));
        all(&Event::PhaseStarted(Phase::Signature));
        let package = match PackageReader::new(reader).and_then(|p| p.verify(self.verifier)) {
            Ok(p) => p,
            Err(err) => return Ok(FactoryReport::failed(devices, &err, events)),
        };
        all(&Event::PhaseFinished(Phase::Signature));
        let verified = package.manifest().clone();
        let options = self.policy.stream_options(&verified);
        self.fan_out(
            &verified,
            |sink| package.with_options(options).stream(sink),
            devices,
            open,
            events,
        )
    }

    /// Installs a package whose signatures verified (its signature phase is over) on
    /// `devices` devices: `stream` hands each verified chunk to the sink it is given, once,
    /// and the line copies it to every device still running.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] for no device or more than [`MAX_DEVICES`].
    pub(crate) fn fan_out(
        &self,
        verified: &VerifiedManifest,
        stream: impl FnOnce(
            &mut dyn FnMut(&ImageSpec, VerifiedChunk<'_>) -> Result<(), Error>,
        ) -> Result<VerifyReport, Error>,
        devices: usize,
        open: &OpenSession<'_>,
        events: &DeviceEvents<'_>,
    ) -> Result<FactoryReport, Error> {
        check_count(devices)?;
        if verified.manifest().is_delta() {
            // Each device rebuilds a delta's chunks from what it runs itself: nothing to fan
            // out, and a line would stop at the first device that runs something else.
            let err = Error::new(
                ErrorKind::InvalidInput,
                "a delta package installs one device at a time (`veriflash flash`); a factory line installs the full package",
            );
            return Ok(FactoryReport::failed(devices, &err, events));
        }
        let device_side = DeviceSide {
            verified,
            verifier: self.verifier,
            policy: self.policy,
            cancel: &self.cancel,
            host: self.host,
            open,
        };
        std::thread::scope(|scope| {
            let mut feeds: Vec<Option<SyncSender<Feed>>> = Vec::with_capacity(devices);
            let mut handles = Vec::with_capacity(devices);
            for index in 0..devices {
                let (tx, rx) = sync_channel(self.depth);
                let device_side = &device_side;
                let spawned = std::thread::Builder::new()
                    .name(format!("veriflash-device-{index}"))
                    .spawn_scoped(scope, move || {
                        let mut tell = |event: &Event| events(index, event);
                        let result = device_side.run(index, rx, &mut tell);
                        tell(&Event::Finished(result.as_ref().err().map(Error::code)));
                        result
                    })
                    .map_err(|e| {
                        // This device's verdict is about the computer, not the device or the
                        // package; the others go on.
                        let err = Error::new(
                            ErrorKind::ResourceExhausted,
                            format!("no thread could be started for device {index}: {e}"),
                        );
                        events(index, &Event::Finished(Some(err.code())));
                        err
                    });
                feeds.push(spawned.is_ok().then_some(tx));
                handles.push(spawned);
            }

            let m = verified.manifest();
            let streamed = stream(&mut |image, chunk| {
                let at = m
                    .images
                    .iter()
                    .position(|i| i.name == image.name && i.partition == image.partition)
                    .ok_or_else(|| {
                        Error::new(ErrorKind::Malformed, "an image outside the manifest")
                    })?;
                let shared = chunk.to_shared();
                for feed in &mut feeds {
                    send(
                        feed,
                        Feed::Chunk {
                            image: at,
                            chunk: shared.clone(),
                        },
                    );
                }
                if feeds.iter().all(Option::is_none) {
                    // Every device dropped out: reading on would help nobody.
                    return Err(Error::new(
                        ErrorKind::Cancelled,
                        "no device left on the line",
                    ));
                }
                Ok(())
            });
            let report = match streamed {
                Ok(report) => {
                    for feed in &mut feeds {
                        send(feed, Feed::End);
                    }
                    Some(report)
                }
                Err(err) => {
                    for feed in &mut feeds {
                        send(feed, Feed::Failed(Error::copy(&err)));
                    }
                    None
                }
            };
            drop(feeds);
            let results = handles
                .into_iter()
                .map(|h| {
                    h.and_then(|h| {
                        h.join().unwrap_or_else(|_| {
                            Err(Error::new(
                                ErrorKind::DeviceError,
                                "the device's thread panicked",
                            ))
                        })
                    })
                    .and_then(|()| {
                        report.clone().ok_or_else(|| {
                            Error::new(ErrorKind::Cancelled, "the package stream ended early")
                        })
                    })
                })
                .collect();
            Ok(FactoryReport { results })
        })
    }
}

/// Refuses a line of no device or of more than [`MAX_DEVICES`].
fn check_count(devices: usize) -> Result<(), Error> {
    if devices == 0 || devices > MAX_DEVICES {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("a factory line flashes 1 to {MAX_DEVICES} devices, not {devices}"),
        ));
    }
    Ok(())
}

impl FactoryReport {
    /// Every device failed with the package's own error, before any device was touched; each
    /// hears its `finished` event.
    pub(crate) fn failed(devices: usize, err: &Error, events: &DeviceEvents<'_>) -> Self {
        (0..devices).for_each(|i| events(i, &Event::Finished(Some(err.code()))));
        Self {
            results: (0..devices).map(|_| Err(Error::copy(err))).collect(),
        }
    }
}

/// What every device's thread shares: the package, how it verified, the policy.
struct DeviceSide<'l> {
    verified: &'l VerifiedManifest,
    verifier: &'l Verifier<'l>,
    policy: &'l InstallPolicy,
    cancel: &'l CancelToken,
    host: Option<&'l HostStore>,
    open: &'l OpenSession<'l>,
}

impl DeviceSide<'_> {
    /// One device's thread: open, pre-flight, then chunks from the line until it ends.
    fn run(
        &self,
        index: usize,
        feed: Receiver<Feed>,
        events: &mut dyn FnMut(&Event),
    ) -> Result<(), Error> {
        let mut session = (self.open)(index)?;
        let mut run = DeviceRun::prepare(
            self.verified,
            self.verifier,
            self.policy,
            session.as_mut(),
            self.host,
            events,
        )?;
        let m = self.verified.manifest();
        let cancel = self.cancel;
        let outcome = (|| loop {
            match feed.recv() {
                Ok(Feed::Chunk { image, chunk }) => {
                    let spec = m.images.get(image).ok_or_else(|| {
                        Error::new(ErrorKind::Malformed, "an image outside the manifest")
                    })?;
                    run.chunk(spec, chunk.as_verified(), cancel, events)?;
                }
                Ok(Feed::End) => return run.finish(cancel, events).map(drop),
                Ok(Feed::Failed(err)) => return Err(err),
                Err(_) => {
                    return Err(Error::new(
                        ErrorKind::Cancelled,
                        "the line stopped feeding this device",
                    ));
                }
            }
        })();
        if let Err(err) = &outcome {
            run.abort(err);
        }
        outcome
    }
}

/// Sends to a device still on the line; a device whose thread ended (it failed) is taken off.
/// Blocks while the device's queue is full: the line waits for its slowest device.
fn send(feed: &mut Option<SyncSender<Feed>>, item: Feed) {
    let Some(tx) = feed else {
        return;
    };
    // `send` on a full queue blocks until the device takes a chunk; it fails only once the
    // device's thread has ended (its receiver is gone).
    if tx.send(item).is_err() {
        *feed = None;
    }
}
