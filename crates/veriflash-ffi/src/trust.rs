//! Trust stores: the pinned public keys and root certificates packages must be signed with.

use std::ffi::c_char;
use std::path::Path;

use veriflash_core::sig::PinnedKeys;
use veriflash_core::{AnchorSet, Error, ErrorKind};

use crate::error::veriflash_result;
use crate::ffi::{Handle, Out, arg_bytes, arg_str, call, free, into_handle};

/// A set of trust anchors (pinned public keys and root certificates).
///
/// Made by `veriflash_trust_load` or `veriflash_trust_from_pem`, owned by the caller, freed
/// with `veriflash_trust_free`. Never changed after it is made: functions borrow it (`const`)
/// only for the duration of the call, and it may be shared between threads.
pub struct veriflash_trust {
    _private: [u8; 0],
}

impl Handle for veriflash_trust {
    type Inner = AnchorSet;
}

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
        out.write(into_handle::<veriflash_trust>(set));
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
        let keys = PinnedKeys::from_pem(text).map_err(|e| {
            Error::new(
                ErrorKind::InvalidKey,
                format!("trust anchors from PEM text: {e}"),
            )
            .with_source(e)
        })?;
        out.write(into_handle::<veriflash_trust>(AnchorSet::new(keys, 1)));
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
