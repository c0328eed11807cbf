//! Trust stores: the pinned public keys and root certificates packages must be signed with,
//! the clock certificates are judged by, and how many keys must sign — a
//! `veriflash_core::Trust`, the same configuration the CLI and a Rust updater use.

use std::ffi::c_char;
use std::path::Path;

use veriflash_core::{AnchorSet, Trust, TrustedTime};

use crate::error::{FfiError, VERIFLASH_INVALID_ARGUMENT, veriflash_result};
use crate::ffi::{Handle, Out, arg_bytes, arg_str, borrow_mut, call, free, into_handle};

/// The trust configuration packages are verified against: a set of trust anchors (pinned
/// public keys and root certificates), the clock certificate validity dates are judged by, and
/// the least number of distinct trusted keys that must sign.
///
/// Made by `veriflash_trust_load` or `veriflash_trust_from_pem` with the defaults of the
/// `veriflash` command and of the Rust `Trust::new`: the system clock is trusted (an expired or
/// not yet valid certificate is refused with `VERIFLASH_CERTIFICATE_EXPIRED`), and the anchor
/// set's own threshold applies (one signature, or what a saved anchor set demands). Change them
/// with `veriflash_trust_set_time` and `veriflash_trust_set_threshold` before use. Owned by the
/// caller, freed with `veriflash_trust_free`. The functions that verify borrow it (`const`)
/// only for the duration of the call, so once configured it may be shared between threads; a
/// setter must not run while another call uses the store.
pub struct veriflash_trust {
    _private: [u8; 0],
}

impl Handle for veriflash_trust {
    type Inner = Trust;
}

/// What clock certificate validity dates are judged by (`veriflash_trust_set_time`).
pub type veriflash_trusted_time = u32;
/// The system clock, trusted: a PC, a phone, a device with a secure clock. The default, as for
/// the `veriflash` command.
pub const VERIFLASH_TRUSTED_TIME_SYSTEM: veriflash_trusted_time = 0;
/// No trusted clock (most modems): validity dates are not checked, so an expired signing
/// certificate cannot block a fleet's updates; `security_version` orders packages. The
/// `veriflash` command's `--no-clock`.
pub const VERIFLASH_TRUSTED_TIME_NONE: veriflash_trusted_time = 1;
/// A time the caller trusts, in seconds since the Unix epoch (a device's own secure clock).
pub const VERIFLASH_TRUSTED_TIME_AT: veriflash_trusted_time = 2;

/// Loads trust anchors from `path`: one PEM file holding `PUBLIC KEY` and/or `CERTIFICATE`
/// blocks, or a directory whose `*.pem`, `*.pub` and `*.crt` files hold them (as
/// `veriflash verify --trust` reads them), or an anchor-set file that
/// `veriflash_report_save_rotation` wrote (with its own threshold and version). On success `*out_trust` receives a new trust store
/// the caller owns and must free with `veriflash_trust_free`.
///
/// # Errors
/// `VERIFLASH_NULL_POINTER`, `VERIFLASH_INVALID_UTF8` (the path must be UTF-8);
/// `VERIFLASH_IO` when the path cannot be read; `VERIFLASH_INVALID_KEY` when a file holds no
/// usable key; `VERIFLASH_NO_TRUST_ANCHORS` for a directory without key files;
/// `VERIFLASH_INVALID_INPUT` for a directory with too many; `VERIFLASH_MALFORMED_PACKAGE` or
/// `VERIFLASH_ROTATION_REFUSED` for a damaged anchor-set file.
///
/// # Safety
/// `path` is NULL or a NUL-terminated string; `out_trust` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn veriflash_trust_load(
    path: *const c_char,
    out_trust: *mut *mut veriflash_trust,
) -> veriflash_result {
    call(|| {
        // SAFETY: this function's contract.
        let path = unsafe { arg_str(path, "path") }?;
        // SAFETY: this function's contract.
        let out = unsafe { Out::new(out_trust, "out_trust") }?;
        let set = AnchorSet::load(Path::new(path))?;
        out.write(into_handle::<veriflash_trust>(Trust::new(set)));
        Ok(())
    })
}

/// Makes a trust store from PEM text in memory (`len` bytes at `pem`, UTF-8, no NUL needed):
/// every `PUBLIC KEY` and `CERTIFICATE` block is pinned. For anchors compiled into an updater.
/// On success `*out_trust` receives a new trust store the caller owns and must free with
/// `veriflash_trust_free`.
///
/// # Errors
/// `VERIFLASH_NULL_POINTER` (also for `pem` NULL with `len` 0), `VERIFLASH_INVALID_UTF8`;
/// `VERIFLASH_INVALID_KEY` when the text holds no public key or root certificate, a malformed
/// one, or a private key.
///
/// # Safety
/// `pem` is NULL or readable for `len` bytes; `out_trust` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn veriflash_trust_from_pem(
    pem: *const u8,
    len: usize,
    out_trust: *mut *mut veriflash_trust,
) -> veriflash_result {
    call(|| {
        // SAFETY: this function's contract.
        let bytes = unsafe { arg_bytes(pem, len, "pem") }?;
        // SAFETY: this function's contract.
        let out = unsafe { Out::new(out_trust, "out_trust") }?;
        let text = std::str::from_utf8(bytes)
            .map_err(|e| crate::ffi::invalid_utf8("pem", e.valid_up_to()))?;
        let keys = veriflash_core::trust::anchors_from_pem(text)?;
        out.write(into_handle::<veriflash_trust>(Trust::new(AnchorSet::new(
            keys, 1,
        ))));
        Ok(())
    })
}

/// Sets the clock certificate validity dates are judged by: `VERIFLASH_TRUSTED_TIME_SYSTEM`
/// (the default: the system clock, read at each verification), `VERIFLASH_TRUSTED_TIME_NONE`
/// (no dates checked, as `veriflash --no-clock`), or `VERIFLASH_TRUSTED_TIME_AT` with
/// `unix_seconds`, a time the caller trusts. `unix_seconds` must be 0 for the other two.
///
/// # Errors
/// `VERIFLASH_NULL_POINTER`; `VERIFLASH_INVALID_ARGUMENT` for an unknown `time`, or a non-zero
/// `unix_seconds` with a `time` other than `VERIFLASH_TRUSTED_TIME_AT`. The store is unchanged
/// on failure.
///
/// # Safety
/// `trust` is NULL or a live trust store that no other call uses at the same time.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn veriflash_trust_set_time(
    trust: *mut veriflash_trust,
    time: veriflash_trusted_time,
    unix_seconds: u64,
) -> veriflash_result {
    call(|| {
        // SAFETY: this function's contract.
        let trust = unsafe { borrow_mut(trust, "trust") }?;
        let time = match (time, unix_seconds) {
            (VERIFLASH_TRUSTED_TIME_SYSTEM, 0) => TrustedTime::System,
            (VERIFLASH_TRUSTED_TIME_NONE, 0) => TrustedTime::None,
            (VERIFLASH_TRUSTED_TIME_AT, secs) => TrustedTime::At(secs),
            (VERIFLASH_TRUSTED_TIME_SYSTEM | VERIFLASH_TRUSTED_TIME_NONE, secs) => {
                return Err(FfiError::new(
                    VERIFLASH_INVALID_ARGUMENT,
                    format!(
                        "argument 'unix_seconds' is {secs}: a time is given only with VERIFLASH_TRUSTED_TIME_AT"
                    ),
                ));
            }
            (other, _) => {
                return Err(FfiError::new(
                    VERIFLASH_INVALID_ARGUMENT,
                    format!("argument 'time' is {other}, not a VERIFLASH_TRUSTED_TIME_* value"),
                ));
            }
        };
        *trust = trust.clone().with_time(time);
        Ok(())
    })
}

/// Requires at least `threshold` distinct trusted keys to sign each package, as
/// `veriflash --threshold K` does; an anchor set that demands more (a saved rotation) keeps its
/// own. 0 (the default) leaves the set's own threshold: one signature, or what a saved anchor
/// set demands. A package signed by fewer is refused with `VERIFLASH_THRESHOLD_NOT_MET`.
///
/// # Errors
/// `VERIFLASH_NULL_POINTER`.
///
/// # Safety
/// `trust` is NULL or a live trust store that no other call uses at the same time.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn veriflash_trust_set_threshold(
    trust: *mut veriflash_trust,
    threshold: usize,
) -> veriflash_result {
    call(|| {
        // SAFETY: this function's contract.
        let trust = unsafe { borrow_mut(trust, "trust") }?;
        *trust = trust.clone().with_threshold(threshold);
        Ok(())
    })
}

/// Frees a trust store. NULL is a no-op. Freeing the same store twice is undefined behaviour,
/// as with `free()`.
///
/// # Safety
/// `trust` is NULL or a trust store from this library, not yet freed and not in use by another
/// call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn veriflash_trust_free(trust: *mut veriflash_trust) {
    crate::ffi::call_plain((), || {
        // SAFETY: this function's contract.
        unsafe { free(trust) }
    });
}
