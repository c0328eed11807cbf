//! Flashing a package to a device, with a progress callback that can cancel.

use std::ffi::{CString, c_char, c_int, c_void};

use veriflash_core::flash::device_error;
use veriflash_core::sig::Verifier;
use veriflash_core::{CancelToken, Event, InstallPolicy, Phase, install_package};

use crate::error::{c_text, veriflash_result};
use crate::ffi::{Out, arg_str, borrow, borrow_mut, call, call_plain, into_handle};
use crate::package::veriflash_package;
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

/// What a `veriflash_event` reports (`veriflash_event.kind`).
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

/// What a progress callback returns to let the install go on.
pub const VERIFLASH_CONTINUE: c_int = 0;
/// What a progress callback returns to cancel the install (any non-zero value does). The
/// install stops before its next chunk or before the commit, aborts (the device keeps booting
/// its current slot) and fails with `VERIFLASH_CANCELLED`.
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
    /// For `VERIFLASH_EVENT_FINISHED`: `VERIFLASH_OK` or the error's code.
    pub code: veriflash_result,
    /// For warnings: the text (NUL-terminated).
    pub message: *const c_char,
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

/// Verifies `package` against `trust` and installs it on the device `target`:
/// `"file:/path/device.img"` (the file-backed reference device), `"mdm9x07:serial:/dev/ttyUSB0"`
/// (an MDM9x07 in download mode through qcserial) or `"mdm9x07:emulator"`: signatures, policy (product,
/// chipset, hardware revision, anti-rollback, partitions, sizes), the inactive slot written
/// chunk by verified chunk, read back, then one atomic commit. Any failure before the commit
/// leaves the device booting its current slot.
///
/// `progress` (may be NULL) is called with `userdata` for every event, on this thread; when it
/// returns non-zero the install is cancelled before its next chunk (or before the commit) and
/// this function returns `VERIFLASH_CANCELLED`. On success `*out_report` receives a new report
/// the caller owns and must free with `veriflash_report_free`.
///
/// Uses the package up (see `veriflash_package`), unless the arguments are refused or the
/// device cannot be opened: free it afterwards either way. `trust` is only borrowed.
///
/// # Errors
/// `VERIFLASH_NULL_POINTER`, `VERIFLASH_INVALID_UTF8`, `VERIFLASH_PACKAGE_SPENT`;
/// `VERIFLASH_INVALID_INPUT` for an unknown target; any code of verification (10–31), policy
/// (40–49), the device (50–53), `VERIFLASH_CANCELLED`, `VERIFLASH_INTERRUPTED`.
///
/// # Safety
/// `package` is NULL or a live package not in use elsewhere; `trust` is NULL or a live trust
/// store; `target` is NULL or a NUL-terminated string; `progress` is NULL or callable as
/// documented for `veriflash_progress_cb` with `userdata`; `out_report` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn veriflash_flash(
    package: *mut veriflash_package,
    trust: *const veriflash_trust,
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
        // SAFETY: this function's contract.
        let target = unsafe { arg_str(target, "target") }?;
        // SAFETY: this function's contract.
        let out = unsafe { Out::new(out_report, "out_report") }?;
        let mut session = crate::registry().open(target).map_err(device_error)?;
        let reader = package.take()?;
        let cancel = CancelToken::new();
        let mut on_event = |event: &Event| {
            let Some(progress) = progress else { return };
            let Some(c_event) = to_c(event) else { return };
            // SAFETY: this function's contract: `progress` may be called with `userdata`;
            // the event and its strings live until the call returns.
            let verdict = unsafe { progress(userdata, &raw const c_event.event) };
            if verdict != VERIFLASH_CONTINUE {
                cancel.cancel();
            }
        };
        let report = install_package(
            reader,
            &Verifier::new(trust.anchors()).with_policy(trust.policy()),
            &InstallPolicy::default(),
            session.as_mut(),
            &cancel,
            &mut on_event,
        )?;
        out.write(into_handle::<veriflash_report>(Report::new(&report)));
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
