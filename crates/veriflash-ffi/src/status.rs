//! A device's state: identity, active slot, anti-rollback floor, last install.

use std::ffi::{CString, c_char};

use veriflash_core::flash::device_error;
use veriflash_core::plugin::{DeviceStatus, Slot};

use crate::error::{c_text, veriflash_result};
use crate::ffi::{Handle, Out, arg_str, borrow, call, call_plain, free, into_handle};

/// A snapshot of a device's state, taken by `veriflash_device_status`.
///
/// Owned by the caller, freed with `veriflash_status_free`. Strings returned by its accessors
/// belong to it: valid until it is freed, never freed by the caller. Read-only: it may be
/// shared between threads.
pub struct veriflash_status {
    _private: [u8; 0],
}

/// An A/B slot.
pub type veriflash_slot = u32;
/// The device has no A/B slots.
pub const VERIFLASH_SLOT_NONE: veriflash_slot = 0;
/// Slot A.
pub const VERIFLASH_SLOT_A: veriflash_slot = 1;
/// Slot B.
pub const VERIFLASH_SLOT_B: veriflash_slot = 2;

pub(crate) struct Status {
    product: CString,
    chipset: CString,
    hardware_revision: CString,
    active_slot: veriflash_slot,
    security_floor: u64,
    installed_version: Option<CString>,
    last_result: Option<(veriflash_result, CString)>,
    interrupted: bool,
}

impl Handle for veriflash_status {
    type Inner = Status;
}

impl Status {
    fn new(status: &DeviceStatus) -> Self {
        let info = &status.info;
        Self {
            product: c_text(&info.product),
            chipset: c_text(&info.chipset),
            hardware_revision: c_text(&info.hardware_revision),
            active_slot: match info.active_slot {
                None => VERIFLASH_SLOT_NONE,
                Some(Slot::A) => VERIFLASH_SLOT_A,
                Some(Slot::B) => VERIFLASH_SLOT_B,
            },
            security_floor: info.security_floor,
            installed_version: info.installed_version.as_deref().map(c_text),
            last_result: status
                .last_result
                .as_ref()
                .map(|r| (veriflash_result::from(r.code), c_text(&r.message))),
            interrupted: status.interrupted_install.is_some(),
        }
    }
}

/// Reads the state of the device `target` (`"file:PATH"`, `"mdm9x07:serial:TTY"` or
/// `"mdm9x07:emulator"`, as for `veriflash_flash`) without changing it. On success `*out_status` receives a new status the caller owns and must free with
/// `veriflash_status_free`.
///
/// # Errors
/// `VERIFLASH_NULL_POINTER`, `VERIFLASH_INVALID_UTF8`; `VERIFLASH_INVALID_INPUT` for an unknown
/// target; `VERIFLASH_DEVICE_ERROR` or `VERIFLASH_TRANSPORT_ERROR` when the device cannot be
/// opened or queried.
///
/// # Safety
/// `target` is NULL or a NUL-terminated string; `out_status` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn veriflash_device_status(
    target: *const c_char,
    out_status: *mut *mut veriflash_status,
) -> veriflash_result {
    call(|| {
        // SAFETY: this function's contract.
        let target = unsafe { arg_str(target, "target") }?;
        // SAFETY: this function's contract.
        let out = unsafe { Out::new(out_status, "out_status") }?;
        let mut session = crate::registry().open(target).map_err(device_error)?;
        let status = session.status().map_err(device_error)?;
        out.write(into_handle::<veriflash_status>(Status::new(&status)));
        Ok(())
    })
}

/// Writes one borrowed string of the status to `*out`.
///
/// # Safety
/// `status` is NULL or a live status; `out` is NULL or writable.
unsafe fn string_field(
    status: *const veriflash_status,
    out: *mut *const c_char,
    field: fn(&Status) -> *const c_char,
) -> veriflash_result {
    call(|| {
        // SAFETY: the caller's contract.
        let status = unsafe { borrow(status, "status") }?;
        // SAFETY: the caller's contract.
        let out = unsafe { Out::new(out, "out") }?;
        out.write(field(status));
        Ok(())
    })
}

/// The device's product. `*out` receives a string owned by the status.
///
/// # Errors
/// `VERIFLASH_NULL_POINTER`.
///
/// # Safety
/// `status` is NULL or a live status; `out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn veriflash_status_product(
    status: *const veriflash_status,
    out: *mut *const c_char,
) -> veriflash_result {
    // SAFETY: this function's contract.
    unsafe { string_field(status, out, |s| s.product.as_ptr()) }
}

/// The device's chipset. `*out` receives a string owned by the status.
///
/// # Errors
/// `VERIFLASH_NULL_POINTER`.
///
/// # Safety
/// `status` is NULL or a live status; `out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn veriflash_status_chipset(
    status: *const veriflash_status,
    out: *mut *const c_char,
) -> veriflash_result {
    // SAFETY: this function's contract.
    unsafe { string_field(status, out, |s| s.chipset.as_ptr()) }
}

/// The device's hardware revision. `*out` receives a string owned by the status.
///
/// # Errors
/// `VERIFLASH_NULL_POINTER`.
///
/// # Safety
/// `status` is NULL or a live status; `out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn veriflash_status_hardware_revision(
    status: *const veriflash_status,
    out: *mut *const c_char,
) -> veriflash_result {
    // SAFETY: this function's contract.
    unsafe { string_field(status, out, |s| s.hardware_revision.as_ptr()) }
}

/// The version veriflash last installed, or NULL in `*out` when none was. The string is owned
/// by the status.
///
/// # Errors
/// `VERIFLASH_NULL_POINTER`.
///
/// # Safety
/// `status` is NULL or a live status; `out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn veriflash_status_installed_version(
    status: *const veriflash_status,
    out: *mut *const c_char,
) -> veriflash_result {
    // SAFETY: this function's contract.
    unsafe {
        string_field(status, out, |s| {
            s.installed_version
                .as_ref()
                .map_or(std::ptr::null(), |v| v.as_ptr())
        })
    }
}

/// The slot the device boots (`VERIFLASH_SLOT_A`, `VERIFLASH_SLOT_B`, or `VERIFLASH_SLOT_NONE`
/// for a single-slot device).
///
/// # Errors
/// `VERIFLASH_NULL_POINTER`.
///
/// # Safety
/// `status` is NULL or a live status; `out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn veriflash_status_active_slot(
    status: *const veriflash_status,
    out: *mut veriflash_slot,
) -> veriflash_result {
    call(|| {
        // SAFETY: this function's contract.
        let status = unsafe { borrow(status, "status") }?;
        // SAFETY: this function's contract.
        let out = unsafe { Out::new(out, "out") }?;
        out.write(status.active_slot);
        Ok(())
    })
}

/// The anti-rollback floor: packages with a lower security version are refused.
///
/// # Errors
/// `VERIFLASH_NULL_POINTER`.
///
/// # Safety
/// `status` is NULL or a live status; `out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn veriflash_status_security_floor(
    status: *const veriflash_status,
    out: *mut u64,
) -> veriflash_result {
    call(|| {
        // SAFETY: this function's contract.
        let status = unsafe { borrow(status, "status") }?;
        // SAFETY: this function's contract.
        let out = unsafe { Out::new(out, "out") }?;
        out.write(status.security_floor);
        Ok(())
    })
}

/// The outcome of the last install attempt: `*out_recorded` is false when the device has none
/// (then `*out_code` is `VERIFLASH_OK` and `*out_message` NULL); otherwise `*out_code` is
/// `VERIFLASH_OK` or the error's code and `*out_message` one line owned by the status.
///
/// # Errors
/// `VERIFLASH_NULL_POINTER`.
///
/// # Safety
/// `status` is NULL or a live status; each `out_*` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn veriflash_status_last_result(
    status: *const veriflash_status,
    out_recorded: *mut bool,
    out_code: *mut veriflash_result,
    out_message: *mut *const c_char,
) -> veriflash_result {
    call(|| {
        // SAFETY: this function's contract.
        let status = unsafe { borrow(status, "status") }?;
        // SAFETY: this function's contract.
        let recorded = unsafe { Out::new(out_recorded, "out_recorded") }?;
        // SAFETY: this function's contract.
        let code = unsafe { Out::new(out_code, "out_code") }?;
        // SAFETY: this function's contract.
        let message = unsafe { Out::new(out_message, "out_message") }?;
        match &status.last_result {
            Some((c, m)) => {
                recorded.write(true);
                code.write(*c);
                message.write(m.as_ptr());
            }
            None => {
                recorded.write(false);
                code.write(0);
                message.write(std::ptr::null());
            }
        }
        Ok(())
    })
}

/// Whether an install started and neither committed nor was aborted (a power cut, a crash):
/// the device still boots its previous software; run the install again.
///
/// # Errors
/// `VERIFLASH_NULL_POINTER`.
///
/// # Safety
/// `status` is NULL or a live status; `out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn veriflash_status_interrupted(
    status: *const veriflash_status,
    out: *mut bool,
) -> veriflash_result {
    call(|| {
        // SAFETY: this function's contract.
        let status = unsafe { borrow(status, "status") }?;
        // SAFETY: this function's contract.
        let out = unsafe { Out::new(out, "out") }?;
        out.write(status.interrupted);
        Ok(())
    })
}

/// Frees a status and the strings it handed out. NULL is a no-op. Freeing the same status
/// twice is undefined behaviour, as with `free()`.
///
/// # Safety
/// `status` is NULL or a status from this library, not yet freed and not in use by another
/// call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn veriflash_status_free(status: *mut veriflash_status) {
    call_plain((), || {
        // SAFETY: this function's contract.
        unsafe { free(status) }
    });
}
