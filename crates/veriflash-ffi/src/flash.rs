//! Flashing a package to a device through the core's `Updater` — the pipeline the CLI and a
//! Rust updater run — with a progress callback that can cancel.

use std::cell::Cell;
use std::ffi::{CString, c_char, c_int, c_void};
use std::rc::Rc;

use veriflash_core::flash::device_error;
use veriflash_core::plugin::Registry;
use veriflash_core::{CancelToken, Event, InstallPolicy, Phase, Trust, Updater};

use crate::error::{c_text, veriflash_result};
use crate::ffi::{CallerThread, Out, arg_str, borrow, borrow_mut, call, call_plain, into_handle};
use crate::options::{Options, veriflash_options};
use crate::package::{Package, veriflash_package};
use crate::report::{Report, veriflash_report};
use crate::trust::veriflash_trust;

/// A step of an install (`veriflash_event.phase`).
pub type veriflash_phase = u32;
/// Not a phase event.
pub const VERIFLASH_PHASE_NONE: veriflash_phase = 0;
/// Checking the signatures over header and manifest.
pub const VERIFLASH_PHASE_SIGNATURE: veriflash_phase = 1;
/// Compatibility, anti-rollback and pre-flight checks.
pub const VERIFLASH_PHASE_PREFLIGHT: veriflash_phase = 2;
/// Journalling the plan and erasing the target slot.
pub const VERIFLASH_PHASE_STAGING: veriflash_phase = 3;
/// Streaming verified chunks to the device.
pub const VERIFLASH_PHASE_FLASH: veriflash_phase = 4;
/// Reading the written images back.
pub const VERIFLASH_PHASE_READ_BACK: veriflash_phase = 5;
/// Switching slots and raising the anti-rollback floor.
pub const VERIFLASH_PHASE_COMMIT: veriflash_phase = 6;
/// Streaming the device's loader (the MDM9x07 Firehose programmer), inside the pre-flight.
pub const VERIFLASH_PHASE_LOAD: veriflash_phase = 7;
/// A phase this header does not know yet (a newer library).
pub const VERIFLASH_PHASE_OTHER: veriflash_phase = 255;

/// What a `veriflash_event` reports (`veriflash_event.kind`). A newer library may add kinds:
/// ignore the ones you do not know.
pub type veriflash_event_kind = u32;
/// A phase began (`phase` says which).
pub const VERIFLASH_EVENT_PHASE_STARTED: veriflash_event_kind = 1;
/// A phase ended successfully (`phase` says which).
pub const VERIFLASH_EVENT_PHASE_FINISHED: veriflash_event_kind = 2;
/// A chunk was verified and written (`image`, `image_done`, `image_total`, `done`, `total`).
pub const VERIFLASH_EVENT_PROGRESS: veriflash_event_kind = 3;
/// Something to know that does not stop the install (`message`).
pub const VERIFLASH_EVENT_WARNING: veriflash_event_kind = 4;
/// The install ended (`code`: `VERIFLASH_OK` or the error's code). Always the last event.
pub const VERIFLASH_EVENT_FINISHED: veriflash_event_kind = 5;
/// The device dropped off mid-install (a modem that reset, a cable pulled): the install waits
/// up to `timeout_ms` for it to answer again, then runs again from a fresh verification
/// (`attempt` of at most `max_attempts`; `code` and `message`: the error that cut it off).
/// Progress starts again from 0 after the `VERIFLASH_EVENT_RECONNECTED` that follows.
/// Returning `VERIFLASH_CANCEL` here ends the install with `VERIFLASH_CANCELLED` instead of
/// waiting.
pub const VERIFLASH_EVENT_RECONNECTING: veriflash_event_kind = 6;
/// The device answered again after `VERIFLASH_EVENT_RECONNECTING` number `attempt`; the install
/// runs again, from the signature phase.
pub const VERIFLASH_EVENT_RECONNECTED: veriflash_event_kind = 7;

/// What a progress callback returns to let the install go on.
pub const VERIFLASH_CONTINUE: c_int = 0;
/// What a progress callback returns to cancel the install (any non-zero value does). The
/// install stops before its next chunk or before the commit (or instead of waiting for a
/// device that dropped off), aborts (the device keeps booting its current slot) and fails with
/// `VERIFLASH_CANCELLED`.
pub const VERIFLASH_CANCEL: c_int = 1;

/// One event of an install. Fields that do not apply to `kind` are 0 or NULL. The strings are
/// owned by the library and valid only during the callback: copy what you keep.
#[repr(C)]
#[derive(Debug)]
pub struct veriflash_event {
    /// What happened (`VERIFLASH_EVENT_*`).
    pub kind: veriflash_event_kind,
    /// The phase, for phase events (`VERIFLASH_PHASE_*`).
    pub phase: veriflash_phase,
    /// The image being written, for progress events (NUL-terminated).
    pub image: *const c_char,
    /// Bytes of that image verified and written so far.
    pub image_done: u64,
    /// That image's size.
    pub image_total: u64,
    /// Bytes of all images verified and written so far.
    pub done: u64,
    /// All images' size.
    pub total: u64,
    /// For `VERIFLASH_EVENT_FINISHED`: `VERIFLASH_OK` or the error's code. For
    /// `VERIFLASH_EVENT_RECONNECTING`: the code of the error that cut the install off
    /// (`VERIFLASH_TRANSPORT_ERROR`, `VERIFLASH_TIMEOUT`, `VERIFLASH_INTERRUPTED`).
    pub code: veriflash_result,
    /// For warnings: the text; for `VERIFLASH_EVENT_RECONNECTING`: the message of the error
    /// that cut the install off (NUL-terminated).
    pub message: *const c_char,
    /// For `VERIFLASH_EVENT_RECONNECTING` and `VERIFLASH_EVENT_RECONNECTED`: which wait, from 1.
    pub attempt: u32,
    /// For `VERIFLASH_EVENT_RECONNECTING`: how many waits one install allows.
    pub max_attempts: u32,
    /// For `VERIFLASH_EVENT_RECONNECTING`: how long this wait lasts at most, in milliseconds.
    pub timeout_ms: u64,
}

/// Hears every event of an install, on the thread that called `veriflash_flash`. Returns
/// `VERIFLASH_CONTINUE` (0) to go on, or `VERIFLASH_CANCEL` (any non-zero value) to cancel.
/// `event` and its strings are valid only during the call.
pub type veriflash_progress_cb =
    Option<unsafe extern "C" fn(userdata: *mut c_void, event: *const veriflash_event) -> c_int>;

fn phase_code(phase: Phase) -> veriflash_phase {
    match phase {
        Phase::Signature => VERIFLASH_PHASE_SIGNATURE,
        Phase::Preflight => VERIFLASH_PHASE_PREFLIGHT,
        Phase::Staging => VERIFLASH_PHASE_STAGING,
        Phase::Flash => VERIFLASH_PHASE_FLASH,
        Phase::ReadBack => VERIFLASH_PHASE_READ_BACK,
        Phase::Commit => VERIFLASH_PHASE_COMMIT,
        Phase::Load => VERIFLASH_PHASE_LOAD,
        _ => VERIFLASH_PHASE_OTHER,
    }
}

/// An event for C, with the strings its pointers borrow.
struct CEvent {
    event: veriflash_event,
    _strings: Option<CString>,
}

fn to_c(event: &Event) -> Option<CEvent> {
    let blank = veriflash_event {
        kind: 0,
        phase: VERIFLASH_PHASE_NONE,
        image: std::ptr::null(),
        image_done: 0,
        image_total: 0,
        done: 0,
        total: 0,
        code: 0,
        message: std::ptr::null(),
        attempt: 0,
        max_attempts: 0,
        timeout_ms: 0,
    };
    Some(match event {
        Event::PhaseStarted(p) | Event::PhaseFinished(p) => CEvent {
            event: veriflash_event {
                kind: if matches!(event, Event::PhaseStarted(_)) {
                    VERIFLASH_EVENT_PHASE_STARTED
                } else {
                    VERIFLASH_EVENT_PHASE_FINISHED
                },
                phase: phase_code(*p),
                ..blank
            },
            _strings: None,
        },
        Event::Progress {
            image,
            image_done,
            image_total,
            done,
            total,
        } => {
            let name = c_text(image);
            CEvent {
                event: veriflash_event {
                    kind: VERIFLASH_EVENT_PROGRESS,
                    image: name.as_ptr(),
                    image_done: *image_done,
                    image_total: *image_total,
                    done: *done,
                    total: *total,
                    ..blank
                },
                _strings: Some(name),
            }
        }
        Event::Warning(text) => {
            let text = c_text(text);
            CEvent {
                event: veriflash_event {
                    kind: VERIFLASH_EVENT_WARNING,
                    message: text.as_ptr(),
                    ..blank
                },
                _strings: Some(text),
            }
        }
        Event::Reconnecting {
            attempt,
            max_attempts,
            timeout,
            code,
            message,
        } => {
            let text = c_text(message);
            CEvent {
                event: veriflash_event {
                    kind: VERIFLASH_EVENT_RECONNECTING,
                    code: veriflash_result::from(*code),
                    message: text.as_ptr(),
                    attempt: *attempt,
                    max_attempts: *max_attempts,
                    timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
                    ..blank
                },
                _strings: Some(text),
            }
        }
        Event::Reconnected { attempt } => CEvent {
            event: veriflash_event {
                kind: VERIFLASH_EVENT_RECONNECTED,
                attempt: *attempt,
                ..blank
            },
            _strings: None,
        },
        Event::Finished(code) => CEvent {
            event: veriflash_event {
                kind: VERIFLASH_EVENT_FINISHED,
                code: code.map_or(0, veriflash_result::from),
                ..blank
            },
            _strings: None,
        },
        // An event kind this API does not describe yet: not passed on.
        _ => return None,
    })
}

/// The caller's progress callback as the `Updater` hears events: on the calling thread only
/// (see [`CallerThread`]).
struct Listener {
    progress: veriflash_progress_cb,
    userdata: *mut c_void,
    cancel: CancelToken,
    /// Set once the install starts reading the package (its signature phase begins).
    started: Rc<Cell<bool>>,
}

impl Listener {
    fn hear(&self, event: &Event) {
        if matches!(event, Event::PhaseStarted(Phase::Signature)) {
            self.started.set(true);
        }
        let Some(progress) = self.progress else {
            return;
        };
        let Some(c_event) = to_c(event) else { return };
        // SAFETY: the contract of `veriflash_flash`: `progress` may be called with `userdata`
        // on the calling thread (`CallerThread` sees to the thread) while the call runs (the
        // updater holding this listener is dropped before it returns); the event and its
        // strings live until the call returns.
        let verdict = unsafe { progress(self.userdata, &raw const c_event.event) };
        if verdict != VERIFLASH_CONTINUE {
            self.cancel.cancel();
        }
    }
}

/// `veriflash_flash` and `veriflash_flash_with_options`, with the plugins to open `target`
/// with: builds an `Updater` for the package, the trust configuration and the options, and
/// installs.
pub(crate) fn flash(
    registry: Registry,
    package: &mut Package,
    trust: &Trust,
    options: &Options,
    target: &str,
    progress: veriflash_progress_cb,
    userdata: *mut c_void,
) -> Result<Report, crate::error::FfiError> {
    // An unknown target is refused before the package is touched.
    registry.find(target).map_err(device_error)?;
    let (source, lease) = package.lend()?;
    let cancel = CancelToken::new();
    let started = Rc::new(Cell::new(false));
    let mut listener = CallerThread::new(Listener {
        progress,
        userdata,
        cancel: cancel.clone(),
        started: Rc::clone(&started),
    });
    let result = Updater::builder(source, trust.clone())
        .registry(registry)
        .environment(options.environment.clone())
        .reconnect(options.reconnect)
        .policy(InstallPolicy::default().with_source_check(options.source_check))
        .cancel(cancel)
        .events(move |_device, event| {
            if let Some(listener) = listener.get_mut() {
                listener.hear(event);
            }
        })
        .build()
        .and_then(|mut updater| updater.install(target));
    // The updater (with the listener and the lent stream) is gone: the package can be settled.
    package.settle(lease, started.get());
    Ok(Report::new(&result?.report))
}

/// Verifies `package` against `trust` and installs it on the device `target`, with the default
/// options (see `veriflash_options`: no state or configuration directory, reconnect waits of up
/// to 60 s). The same as `veriflash_flash_with_options` with `options` NULL.
///
/// # Errors
/// As `veriflash_flash_with_options`.
///
/// # Safety
/// As `veriflash_flash_with_options`, with no options.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn veriflash_flash(
    package: *mut veriflash_package,
    trust: *const veriflash_trust,
    target: *const c_char,
    progress: veriflash_progress_cb,
    userdata: *mut c_void,
    out_report: *mut *mut veriflash_report,
) -> veriflash_result {
    // SAFETY: this function's contract, which is that of `veriflash_flash_with_options` with
    // `options` NULL.
    unsafe {
        veriflash_flash_with_options(
            package,
            trust,
            std::ptr::null(),
            target,
            progress,
            userdata,
            out_report,
        )
    }
}

/// Verifies `package` against `trust` and installs it on the device `target`, through the
/// same pipeline as the `veriflash` command and a Rust `veriflash_core::Updater`:
/// `"file:/path/device.img"` (the file-backed reference device), `"mdm9x07:serial:/dev/ttyUSB0"`
/// (an MDM9x07 in download mode through qcserial) or `"mdm9x07:emulator"`. The device is
/// claimed first (a busy or missing device is refused before the package is read); then
/// signatures (with `trust`'s anchors, clock and threshold), policy (product, chipset, hardware
/// revision, anti-rollback, partitions, sizes), the inactive slot written chunk by verified
/// chunk, read back, then one atomic commit. Any failure before the commit leaves the device
/// booting its current slot.
///
/// `options` (may be NULL: the defaults, see `veriflash_options`) gives the state and
/// configuration directories the plugins and the host's per-device records use, and how long
/// a device that drops off is waited for. A device that drops off mid-way (an MDM9x07 modem)
/// is waited for and the install runs again from a fresh verification — only for a package
/// that can be read again: one opened from a regular file by `veriflash_package_open` (read
/// again from its path), not one read through a callback.
///
/// `progress` (may be NULL) is called with `userdata` for every event, on this thread; when it
/// returns non-zero the install is cancelled before its next chunk (or before the commit, or
/// instead of a reconnect wait) and this function returns `VERIFLASH_CANCELLED`. The last event
/// is always `VERIFLASH_EVENT_FINISHED`, unless the call failed before the install began (the
/// arguments, an unknown target, an unusable configuration file: then there is no event). On
/// success `*out_report` receives a new report the caller owns and must free with
/// `veriflash_report_free`.
///
/// Uses the package up (see `veriflash_package`) once the install starts reading it; a call
/// refused before that (the arguments, an unknown target, a configuration file, a busy or
/// missing device) leaves it usable: free it afterwards either way. `trust` and `options` are
/// only borrowed.
///
/// # Errors
/// `VERIFLASH_NULL_POINTER`, `VERIFLASH_INVALID_UTF8`, `VERIFLASH_PACKAGE_SPENT`;
/// `VERIFLASH_INVALID_INPUT` for an unknown target or a configuration file a plugin cannot
/// use; any code of verification (10–35, among them `VERIFLASH_SOURCE_MISMATCH` for a delta
/// package whose source the device does not run), policy (40–49), the device (50–59),
/// `VERIFLASH_CANCELLED`, `VERIFLASH_INTERRUPTED`, `VERIFLASH_IO`.
///
/// # Safety
/// `package` is NULL or a live package not in use elsewhere; `trust` is NULL or a live trust
/// store; `options` is NULL or live options; `target` is NULL or a NUL-terminated string;
/// `progress` is NULL or callable as documented for `veriflash_progress_cb` with `userdata`;
/// `out_report` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn veriflash_flash_with_options(
    package: *mut veriflash_package,
    trust: *const veriflash_trust,
    options: *const veriflash_options,
    target: *const c_char,
    progress: veriflash_progress_cb,
    userdata: *mut c_void,
    out_report: *mut *mut veriflash_report,
) -> veriflash_result {
    call(|| {
        // SAFETY: this function's contract.
        let package = unsafe { borrow_mut(package, "package") }?;
        // SAFETY: this function's contract.
        let trust = unsafe { borrow(trust, "trust") }?;
        let defaults = Options::default();
        let options = if options.is_null() {
            &defaults
        } else {
            // SAFETY: this function's contract; not NULL.
            unsafe { borrow(options, "options") }?
        };
        // SAFETY: this function's contract.
        let target = unsafe { arg_str(target, "target") }?;
        // SAFETY: this function's contract.
        let out = unsafe { Out::new(out_report, "out_report") }?;
        let report = flash(
            crate::registry(),
            package,
            trust,
            options,
            target,
            progress,
            userdata,
        )?;
        out.write(into_handle::<veriflash_report>(report));
        Ok(())
    })
}

/// The name of a phase (`"signature"`, `"preflight"`, `"staging"`, `"flash"`, `"read_back"`,
/// `"commit"`, as in the CLI's `--json` events), `"none"` or `"other"`. Static: never free it.
#[unsafe(no_mangle)]
pub extern "C" fn veriflash_phase_name(phase: veriflash_phase) -> *const c_char {
    call_plain(c"other".as_ptr(), || {
        match phase {
            VERIFLASH_PHASE_NONE => c"none",
            VERIFLASH_PHASE_SIGNATURE => c"signature",
            VERIFLASH_PHASE_PREFLIGHT => c"preflight",
            VERIFLASH_PHASE_STAGING => c"staging",
            VERIFLASH_PHASE_FLASH => c"flash",
            VERIFLASH_PHASE_READ_BACK => c"read_back",
            VERIFLASH_PHASE_COMMIT => c"commit",
            VERIFLASH_PHASE_LOAD => c"load",
            _ => c"other",
        }
        .as_ptr()
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    //! `veriflash_flash` with plugins the C registry does not have: a device that drops off
    //! and comes back (to see the reconnect events a C callback gets), and plugins that show
    //! the environment reaching them and a configuration error stopping the install.

    use std::path::PathBuf;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use veriflash_core::plugin::file_device::{FileDevice, FilePlugin};
    use veriflash_core::plugin::{
        Chunk, DeviceInfo, DeviceStatus, Digest, FlashSession, InstallPlan, InstalledImage,
        LastResult, Plugin, PluginEnvironment, PluginError, Slot,
    };
    use veriflash_core::sig::SigningKey;
    use veriflash_core::{AnchorSet, Reconnect, TrustedTime};
    use veriflash_test_support::{file_layout, pseudo_random};

    use super::*;
    use crate::error::{
        VERIFLASH_CANCELLED, VERIFLASH_INVALID_INPUT, VERIFLASH_OK, VERIFLASH_TRANSPORT_ERROR,
    };

    // -----------------------------------------------------------------------------------------
    // The mapping itself.

    #[test]
    fn reconnect_events_map_to_their_c_kinds_and_fields() {
        let event = to_c(&Event::Reconnecting {
            attempt: 2,
            max_attempts: 3,
            timeout: Duration::from_millis(60_500),
            code: 51,
            message: "the connection was lost".into(),
        })
        .unwrap();
        let e = &event.event;
        assert_eq!(e.kind, VERIFLASH_EVENT_RECONNECTING);
        assert_eq!((e.attempt, e.max_attempts, e.timeout_ms), (2, 3, 60_500));
        assert_eq!(e.code, VERIFLASH_TRANSPORT_ERROR);
        // SAFETY: the event's message lives as long as `event`.
        let message = unsafe { std::ffi::CStr::from_ptr(e.message) };
        assert_eq!(message.to_str().unwrap(), "the connection was lost");
        assert!(e.image.is_null());
        assert_eq!(e.phase, VERIFLASH_PHASE_NONE);

        let event = to_c(&Event::Reconnected { attempt: 2 }).unwrap();
        let e = &event.event;
        assert_eq!(
            (e.kind, e.attempt, e.max_attempts),
            (VERIFLASH_EVENT_RECONNECTED, 2, 0)
        );
        assert!(e.message.is_null());
        assert_eq!(e.code, VERIFLASH_OK);

        // A wait too long for milliseconds in 64 bits saturates.
        let event = to_c(&Event::Reconnecting {
            attempt: 1,
            max_attempts: 1,
            timeout: Duration::MAX,
            code: 53,
            message: String::new(),
        })
        .unwrap();
        assert_eq!(event.event.timeout_ms, u64::MAX);
    }

    // -----------------------------------------------------------------------------------------
    // A device that drops off.

    /// The file plugin under the name `flaky`, whose device drops off (a broken pipe) once,
    /// at write number `drop_at`, and answers again at the next open.
    struct Flaky {
        writes: Arc<Mutex<(u64, Option<u64>)>>,
    }

    impl Plugin for Flaky {
        fn name(&self) -> &'static str {
            "flaky"
        }

        fn reconnects(&self, _target: &str) -> bool {
            true
        }

        fn open(&self, target: &str) -> Result<Box<dyn FlashSession>, PluginError> {
            Ok(Box::new(FlakySession {
                inner: FilePlugin.open(target)?,
                writes: Arc::clone(&self.writes),
            }))
        }
    }

    struct FlakySession {
        inner: Box<dyn FlashSession>,
        writes: Arc<Mutex<(u64, Option<u64>)>>,
    }

    impl FlashSession for FlakySession {
        fn device_info(&mut self) -> Result<DeviceInfo, PluginError> {
            self.inner.device_info()
        }
        fn begin(&mut self, plan: &InstallPlan) -> Result<(), PluginError> {
            self.inner.begin(plan)
        }
        fn write(&mut self, chunk: Chunk<'_>) -> Result<(), PluginError> {
            {
                let mut writes = self.writes.lock().unwrap();
                writes.0 += 1;
                if writes.1 == Some(writes.0) {
                    writes.1 = None;
                    return Err(PluginError::Transport(
                        std::io::ErrorKind::BrokenPipe.into(),
                    ));
                }
            }
            self.inner.write(chunk)
        }
        fn read_back(&mut self, partition: &str, size: u64) -> Result<Digest, PluginError> {
            self.inner.read_back(partition, size)
        }
        fn commit(&mut self) -> Result<(), PluginError> {
            self.inner.commit()
        }
        fn status(&mut self) -> Result<DeviceStatus, PluginError> {
            self.inner.status()
        }
        fn check_installed(&mut self) -> Result<Option<Vec<InstalledImage>>, PluginError> {
            self.inner.check_installed()
        }
        fn holds_trust_anchors(&self) -> bool {
            self.inner.holds_trust_anchors()
        }
        fn trust_anchors(&mut self) -> Result<Option<Vec<u8>>, PluginError> {
            self.inner.trust_anchors()
        }
        fn abort(&mut self, result: &LastResult) -> Result<(), PluginError> {
            self.inner.abort(result)
        }
    }

    struct Fixture {
        dir: tempfile::TempDir,
        key: SigningKey,
        package: PathBuf,
        device: PathBuf,
    }

    impl Fixture {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let key = SigningKey::generate_p256().unwrap();
            let mut images: Vec<_> = [("boot", 20_000, 1), ("system", 50_000, 2)]
                .into_iter()
                .map(|(name, len, seed)| {
                    veriflash_core::ImageSource::new(
                        name,
                        name,
                        veriflash_core::ImageData::Bytes(pseudo_random(len, seed)),
                    )
                })
                .collect();
            for image in &mut images {
                image.chunk_size = 4096;
            }
            let unsigned = veriflash_core::UnsignedPackage::prepare(veriflash_core::PackageSpec {
                product: "acme-hotspot-x1".into(),
                chipset: "mdm9607".into(),
                hardware_revisions: vec![],
                software_version: "5.0".into(),
                security_version: 5,
                images,
            })
            .unwrap();
            let bytes = veriflash_test_support::sign_and_write(&unsigned, &[&key]).unwrap();
            let package = dir.path().join("update.vfp");
            std::fs::write(&package, bytes).unwrap();
            let device = dir.path().join("device.img");
            let layout = file_layout(&[("boot", 64 << 10), ("system", 64 << 10)], &[]);
            drop(FileDevice::create(&device, &layout).unwrap());
            Self {
                dir,
                key,
                package,
                device,
            }
        }

        fn trust(&self) -> Trust {
            let anchors = AnchorSet::new(std::iter::once(self.key.verifying_key()).collect(), 1);
            Trust::new(anchors).with_time(TrustedTime::None)
        }

        fn target(&self, plugin: &str) -> String {
            format!("{plugin}:{}", self.device.display())
        }

        fn active_slot(&self) -> Option<Slot> {
            FileDevice::open(&self.device)
                .unwrap()
                .current_status()
                .info
                .active_slot
        }
    }

    fn flaky_registry(drop_at: u64) -> Registry {
        let mut registry = Registry::new();
        registry.register(Box::new(Flaky {
            writes: Arc::new(Mutex::new((0, Some(drop_at)))),
        }));
        registry
    }

    fn options(wait: Duration) -> Options {
        Options {
            environment: PluginEnvironment::default(),
            reconnect: Reconnect {
                wait,
                attempts: 3,
                poll: Duration::from_millis(1),
            },
            ..Options::default()
        }
    }

    /// Every event a C callback heard, copied out of the callback.
    #[derive(Debug, Default)]
    struct Heard {
        events: Vec<(
            veriflash_event_kind,
            veriflash_result,
            u32,
            u32,
            u64,
            String,
        )>,
        cancel_on_reconnecting: bool,
    }

    unsafe extern "C" fn hear(userdata: *mut c_void, event: *const veriflash_event) -> c_int {
        // SAFETY: the tests pass a live `Heard`; the library a valid event for the call.
        let (heard, e) = unsafe { (&mut *userdata.cast::<Heard>(), &*event) };
        let message = if e.message.is_null() {
            String::new()
        } else {
            // SAFETY: a NUL-terminated string that lives during the call.
            unsafe { std::ffi::CStr::from_ptr(e.message) }
                .to_string_lossy()
                .into_owned()
        };
        heard.events.push((
            e.kind,
            e.code,
            e.attempt,
            e.max_attempts,
            e.timeout_ms,
            message,
        ));
        if heard.cancel_on_reconnecting && e.kind == VERIFLASH_EVENT_RECONNECTING {
            VERIFLASH_CANCEL
        } else {
            VERIFLASH_CONTINUE
        }
    }

    fn run(
        registry: Registry,
        package: &mut Package,
        trust: &Trust,
        options: &Options,
        target: &str,
        heard: &mut Heard,
    ) -> Result<Report, crate::error::FfiError> {
        flash(
            registry,
            package,
            trust,
            options,
            target,
            Some(hear),
            std::ptr::from_mut(heard).cast(),
        )
    }

    fn kinds(heard: &Heard) -> Vec<veriflash_event_kind> {
        heard.events.iter().map(|e| e.0).collect()
    }

    #[test]
    fn a_device_that_drops_off_is_waited_for_and_the_callback_hears_the_reconnect() {
        let fx = Fixture::new();
        let mut package = Package::open_path(&fx.package).unwrap();
        let mut heard = Heard::default();
        run(
            flaky_registry(6),
            &mut package,
            &fx.trust(),
            &options(Duration::from_secs(10)),
            &fx.target("flaky"),
            &mut heard,
        )
        .unwrap();
        let reconnecting = heard
            .events
            .iter()
            .position(|e| e.0 == VERIFLASH_EVENT_RECONNECTING)
            .expect("a reconnecting event");
        let (_, code, attempt, max_attempts, timeout_ms, message) = &heard.events[reconnecting];
        assert_eq!(*code, VERIFLASH_TRANSPORT_ERROR);
        assert_eq!((*attempt, *max_attempts, *timeout_ms), (1, 3, 10_000));
        assert!(!message.is_empty());
        let reconnected = &heard.events[reconnecting + 1];
        assert_eq!(
            (reconnected.0, reconnected.2),
            (VERIFLASH_EVENT_RECONNECTED, 1)
        );
        // The run after the reconnect starts from the signatures again.
        assert_eq!(
            heard.events[reconnecting + 2].0,
            VERIFLASH_EVENT_PHASE_STARTED
        );
        let finished: Vec<_> = heard
            .events
            .iter()
            .filter(|e| e.0 == VERIFLASH_EVENT_FINISHED)
            .collect();
        assert_eq!(finished.len(), 1, "one verdict");
        assert_eq!(finished[0].1, VERIFLASH_OK);
        assert_eq!(kinds(&heard).last(), Some(&VERIFLASH_EVENT_FINISHED));
        assert_eq!(fx.active_slot(), Some(Slot::B));
    }

    #[test]
    fn a_callback_that_cancels_a_reconnect_wait_gets_cancelled() {
        let fx = Fixture::new();
        let mut package = Package::open_path(&fx.package).unwrap();
        let mut heard = Heard {
            cancel_on_reconnecting: true,
            ..Heard::default()
        };
        let err = run(
            flaky_registry(6),
            &mut package,
            &fx.trust(),
            &options(Duration::from_secs(600)),
            &fx.target("flaky"),
            &mut heard,
        )
        .unwrap_err();
        assert_eq!(err.code, VERIFLASH_CANCELLED, "{}", err.message);
        assert!(!kinds(&heard).contains(&VERIFLASH_EVENT_RECONNECTED));
        assert_eq!(
            heard.events.last().map(|e| (e.0, e.1)),
            Some((VERIFLASH_EVENT_FINISHED, VERIFLASH_CANCELLED))
        );
        assert_eq!(fx.active_slot(), Some(Slot::A));
    }

    #[test]
    fn a_zero_wait_or_a_stream_read_once_ends_the_install_with_the_lost_connection() {
        let fx = Fixture::new();
        // No wait: the transport error at once. A package read through a stream (as through a
        // read callback) cannot be read again: no wait either.
        let file = std::fs::File::open(&fx.package).unwrap();
        for (mut package, wait) in [
            (Package::open_path(&fx.package).unwrap(), Duration::ZERO),
            (
                Package::open(Box::new(file), None).unwrap(),
                Duration::from_secs(10),
            ),
        ] {
            let mut heard = Heard::default();
            let err = run(
                flaky_registry(6),
                &mut package,
                &fx.trust(),
                &options(wait),
                &fx.target("flaky"),
                &mut heard,
            )
            .unwrap_err();
            assert_eq!(err.code, VERIFLASH_TRANSPORT_ERROR, "{}", err.message);
            assert!(!kinds(&heard).contains(&VERIFLASH_EVENT_RECONNECTING));
        }
        assert_eq!(fx.active_slot(), Some(Slot::A));
    }

    // -----------------------------------------------------------------------------------------
    // The environment.

    /// A plugin that keeps the environment it is configured with and refuses a `bad.toml` in
    /// the configuration directory, as a plugin refuses a configuration file it cannot use.
    struct Configured {
        seen: Arc<Mutex<Option<PluginEnvironment>>>,
    }

    impl Plugin for Configured {
        fn name(&self) -> &'static str {
            "configured"
        }

        fn configure(&mut self, env: &PluginEnvironment) -> Result<(), PluginError> {
            *self.seen.lock().unwrap() = Some(env.clone());
            match &env.config_dir {
                Some(dir) if dir.join("bad.toml").exists() => Err(PluginError::Device(format!(
                    "{}: not a configuration file",
                    dir.join("bad.toml").display()
                ))),
                _ => Ok(()),
            }
        }

        fn open(&self, target: &str) -> Result<Box<dyn FlashSession>, PluginError> {
            FilePlugin.open(target)
        }
    }

    fn configured_registry(seen: &Arc<Mutex<Option<PluginEnvironment>>>) -> Registry {
        let mut registry = Registry::new();
        registry.register(Box::new(Configured {
            seen: Arc::clone(seen),
        }));
        registry
    }

    #[test]
    fn the_options_environment_reaches_the_plugins_and_a_bad_file_stops_the_install() {
        let fx = Fixture::new();
        let config = fx.dir.path().join("config");
        std::fs::create_dir(&config).unwrap();
        let mut opts = options(Duration::ZERO);
        opts.environment = PluginEnvironment {
            state_dir: Some(fx.dir.path().join("state")),
            config_dir: Some(config.clone()),
        };
        let seen = Arc::default();
        let mut package = Package::open_path(&fx.package).unwrap();
        let mut heard = Heard::default();
        run(
            configured_registry(&seen),
            &mut package,
            &fx.trust(),
            &opts,
            &fx.target("configured"),
            &mut heard,
        )
        .unwrap();
        assert_eq!(seen.lock().unwrap().as_ref(), Some(&opts.environment));

        // A configuration file the plugin cannot use: refused before anything is read or
        // written, with no event, and the package is still usable.
        std::fs::write(config.join("bad.toml"), "nonsense").unwrap();
        let mut package = Package::open_path(&fx.package).unwrap();
        let mut heard = Heard::default();
        let err = run(
            configured_registry(&seen),
            &mut package,
            &fx.trust(),
            &opts,
            &fx.target("configured"),
            &mut heard,
        )
        .unwrap_err();
        assert_eq!(err.code, VERIFLASH_INVALID_INPUT, "{}", err.message);
        assert!(err.message.contains("bad.toml"), "{}", err.message);
        assert!(heard.events.is_empty());
        assert!(package.take().is_ok(), "the package was not used");
    }

    #[test]
    fn a_package_file_replaced_after_opening_is_flashed_from_what_was_opened() {
        let fx = Fixture::new();
        let mut package = Package::open_path(&fx.package).unwrap();
        // Another file renamed over the path: the install reads the file that was opened.
        let other = fx.dir.path().join("other.vfp");
        std::fs::write(&other, b"not a package").unwrap();
        std::fs::rename(&other, &fx.package).unwrap();
        let mut heard = Heard::default();
        run(
            Registry::with_builtin(),
            &mut package,
            &fx.trust(),
            &options(Duration::ZERO),
            &fx.target("file"),
            &mut heard,
        )
        .unwrap();
        assert_eq!(fx.active_slot(), Some(Slot::B));
        assert!(package.take().is_err(), "spent");
    }

    #[test]
    fn a_package_is_not_spent_until_the_install_reads_it() {
        let fx = Fixture::new();
        let holder = FileDevice::open(&fx.device).unwrap();
        // From a path and from a stream: the device is busy, nothing is read.
        let file = std::fs::File::open(&fx.package).unwrap();
        for mut package in [
            Package::open_path(&fx.package).unwrap(),
            Package::open(Box::new(file), None).unwrap(),
        ] {
            let mut heard = Heard::default();
            let err = run(
                Registry::with_builtin(),
                &mut package,
                &fx.trust(),
                &options(Duration::ZERO),
                &fx.target("file"),
                &mut heard,
            )
            .unwrap_err();
            assert_eq!(err.code, crate::error::VERIFLASH_BUSY, "{}", err.message);
            let reader = package.take().expect("still usable");
            let verified = reader.verify(&fx.trust().verifier()).unwrap();
            verified.verify_payload().unwrap();
        }
        drop(holder);
    }
}
