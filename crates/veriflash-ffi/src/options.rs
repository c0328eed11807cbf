//! How `veriflash_flash_with_options` installs: where the plugins keep their state and read
//! their configuration (a `PluginEnvironment`), how long a device that drops off is waited
//! for (a `Reconnect`) and how a delta package's source is checked (a `SourceCheck`) — what
//! the `veriflash` command takes from its state and configuration directories, `--reconnect
//! SECS` and `--source-check HOW`.

use std::ffi::c_char;
use std::path::PathBuf;
use std::time::Duration;

use veriflash_core::plugin::PluginEnvironment;
use veriflash_core::{Reconnect, SourceCheck};

use crate::error::{FfiError, VERIFLASH_INVALID_ARGUMENT, veriflash_result};
use crate::ffi::{Handle, Out, arg_str, borrow_mut, call, call_plain, free, into_handle};

/// The longest reconnect wait `veriflash_options_set_reconnect_wait` takes, in seconds (a day,
/// as the `veriflash` command's `--reconnect`).
pub const VERIFLASH_RECONNECT_WAIT_MAX: u64 = 86_400;

/// How a delta package's source is checked before the first write
/// (`veriflash_options_set_source_check`).
pub type veriflash_source_check = u32;
/// The image the device runs is hashed whole and compared with the delta's source: nothing is
/// written for one that differs, another version or a damaged one. The default.
pub const VERIFLASH_SOURCE_CHECK_WHOLE: veriflash_source_check = 0;
/// The delta's source is compared with the digest the device recorded when it installed the
/// image it runs (hashed whole where it keeps none): one SHA-256 pass faster; another version
/// is refused before the first write, an image damaged since its install part way, on the slot
/// being written, which is never made bootable.
pub const VERIFLASH_SOURCE_CHECK_RECORDED: veriflash_source_check = 1;

/// The options of an install: the plugins' state and configuration directories, and the
/// reconnect wait.
///
/// Made by `veriflash_options_new` with the defaults below, changed with its setters, passed
/// to `veriflash_flash_with_options` (which only borrows it), owned by the caller and freed
/// with `veriflash_options_free`. Once set up it may be shared between threads; a setter must
/// not run while another call uses it.
///
/// Defaults (also what `veriflash_flash` uses):
/// - no state directory: no MDM9x07 resume journal, no backups of a modem's protected
///   partitions, and no host record of the anti-rollback floor and trust anchors of devices
///   that cannot keep their own (a modem in download mode);
/// - no configuration directory: the MDM9x07 plugin's built-in product table only;
/// - a device that drops off mid-install (a modem that resets or whose cable is re-plugged) is
///   waited for up to 60 s, at most 3 times, and the install runs again from a fresh
///   verification (for a package that can be read again: see `veriflash_flash`);
/// - a delta package's source is hashed whole before the first write
///   (`VERIFLASH_SOURCE_CHECK_WHOLE`).
pub struct veriflash_options {
    _private: [u8; 0],
}

/// What a `veriflash_options` holds.
#[derive(Clone, Debug, Default)]
pub(crate) struct Options {
    /// Where the plugins keep their state and read their configuration.
    pub(crate) environment: PluginEnvironment,
    /// What to do when a device drops off.
    pub(crate) reconnect: Reconnect,
    /// How a delta package's source is checked.
    pub(crate) source_check: SourceCheck,
}

impl Handle for veriflash_options {
    type Inner = Options;
}

/// Makes install options with the defaults (see `veriflash_options`). On success
/// `*out_options` receives new options the caller owns and must free with
/// `veriflash_options_free`.
///
/// # Errors
/// `VERIFLASH_NULL_POINTER`.
///
/// # Safety
/// `out_options` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn veriflash_options_new(
    out_options: *mut *mut veriflash_options,
) -> veriflash_result {
    call(|| {
        // SAFETY: this function's contract.
        let out = unsafe { Out::new(out_options, "out_options") }?;
        out.write(into_handle::<veriflash_options>(Options::default()));
        Ok(())
    })
}

/// Sets one of the options' directories from an argument that may be NULL (none); the options
/// are unchanged when the argument is refused.
///
/// # Safety
/// `options` is NULL or live options that no other call uses at the same time; `dir` is NULL
/// or a NUL-terminated string.
unsafe fn set_dir(
    options: *mut veriflash_options,
    dir: *const c_char,
    field: fn(&mut PluginEnvironment) -> &mut Option<PathBuf>,
) -> veriflash_result {
    call(|| {
        // SAFETY: the caller's contract.
        let options = unsafe { borrow_mut(options, "options") }?;
        let dir = if dir.is_null() {
            None
        } else {
            // SAFETY: the caller's contract; not NULL.
            let dir = unsafe { arg_str(dir, "dir") }?;
            if dir.is_empty() {
                return Err(FfiError::new(
                    VERIFLASH_INVALID_ARGUMENT,
                    "argument 'dir' is an empty path: pass NULL for none",
                ));
            }
            Some(PathBuf::from(dir))
        };
        *field(&mut options.environment) = dir;
        Ok(())
    })
}

/// Sets the state directory (`dir`, or NULL for none, the default): state that must survive a
/// run goes there, created when first needed — the MDM9x07 plugin's resume journals and its
/// copies of a modem's protected partitions (EFS, calibration) taken before anything is
/// erased, and in `DIR/devices` the host's record of the anti-rollback floor and trust anchors
/// of each device that cannot keep its own (a modem in download mode). The `veriflash` command
/// uses `$VERIFLASH_STATE_DIR` or `~/.local/state/veriflash`; give the same directory to share
/// its records. A relative path is taken from the working directory at each flash.
///
/// # Errors
/// `VERIFLASH_NULL_POINTER` when `options` is NULL; `VERIFLASH_INVALID_UTF8`;
/// `VERIFLASH_INVALID_ARGUMENT` for an empty path. The options are unchanged on failure.
///
/// # Safety
/// `options` is NULL or live options that no other call uses at the same time; `dir` is NULL
/// or a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn veriflash_options_set_state_dir(
    options: *mut veriflash_options,
    dir: *const c_char,
) -> veriflash_result {
    // SAFETY: this function's contract.
    unsafe { set_dir(options, dir, |environment| &mut environment.state_dir) }
}

/// Sets the configuration directory (`dir`, or NULL for none, the default), where plugins read
/// their configuration files: the MDM9x07 plugin's `mdm9x07-products.toml`, which names real
/// modems' products by their OEM and model ids (its entries come before the built-in table).
/// The `veriflash` command uses `$VERIFLASH_CONFIG_DIR` or `~/.config/veriflash`. A file a
/// plugin cannot use makes `veriflash_flash_with_options` fail with `VERIFLASH_INVALID_INPUT`
/// before anything is read or written.
///
/// # Errors
/// `VERIFLASH_NULL_POINTER` when `options` is NULL; `VERIFLASH_INVALID_UTF8`;
/// `VERIFLASH_INVALID_ARGUMENT` for an empty path. The options are unchanged on failure.
///
/// # Safety
/// `options` is NULL or live options that no other call uses at the same time; `dir` is NULL
/// or a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn veriflash_options_set_config_dir(
    options: *mut veriflash_options,
    dir: *const c_char,
) -> veriflash_result {
    // SAFETY: this function's contract.
    unsafe { set_dir(options, dir, |environment| &mut environment.config_dir) }
}

/// Sets how long a device that drops off mid-install is waited for, in seconds (at most
/// `VERIFLASH_RECONNECT_WAIT_MAX`), as `veriflash flash --reconnect SECS`: 0 never waits (the
/// install fails with the error that cut it off); the default is 60. Only devices whose plugin
/// says they come back are waited for (MDM9x07 modems; not `file:` devices), at most 3 times
/// per install; each wait is announced by a `VERIFLASH_EVENT_RECONNECTING` event, and the
/// progress callback may cancel it.
///
/// # Errors
/// `VERIFLASH_NULL_POINTER`; `VERIFLASH_INVALID_ARGUMENT` for more than
/// `VERIFLASH_RECONNECT_WAIT_MAX`. The options are unchanged on failure.
///
/// # Safety
/// `options` is NULL or live options that no other call uses at the same time.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn veriflash_options_set_reconnect_wait(
    options: *mut veriflash_options,
    seconds: u64,
) -> veriflash_result {
    call(|| {
        // SAFETY: this function's contract.
        let options = unsafe { borrow_mut(options, "options") }?;
        if seconds > VERIFLASH_RECONNECT_WAIT_MAX {
            return Err(FfiError::new(
                VERIFLASH_INVALID_ARGUMENT,
                format!(
                    "argument 'seconds' is {seconds}: a reconnect wait is at most {VERIFLASH_RECONNECT_WAIT_MAX} s"
                ),
            ));
        }
        options.reconnect.wait = Duration::from_secs(seconds);
        Ok(())
    })
}

/// Sets how a delta package's source is checked before the first write, as `veriflash flash
/// --source-check HOW`: `VERIFLASH_SOURCE_CHECK_WHOLE` (the default) or
/// `VERIFLASH_SOURCE_CHECK_RECORDED` (see each).
///
/// # Errors
/// `VERIFLASH_NULL_POINTER`; `VERIFLASH_INVALID_ARGUMENT` for another value. The options are
/// unchanged on failure.
///
/// # Safety
/// `options` is NULL or live options that no other call uses at the same time.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn veriflash_options_set_source_check(
    options: *mut veriflash_options,
    how: veriflash_source_check,
) -> veriflash_result {
    call(|| {
        // SAFETY: this function's contract.
        let options = unsafe { borrow_mut(options, "options") }?;
        options.source_check = match how {
            VERIFLASH_SOURCE_CHECK_WHOLE => SourceCheck::Whole,
            VERIFLASH_SOURCE_CHECK_RECORDED => SourceCheck::Recorded,
            other => {
                return Err(FfiError::new(
                    VERIFLASH_INVALID_ARGUMENT,
                    format!("argument 'how' is {other}: not a VERIFLASH_SOURCE_CHECK_ value"),
                ));
            }
        };
        Ok(())
    })
}

/// Frees install options. NULL is a no-op. Freeing the same options twice is undefined
/// behaviour, as with `free()`.
///
/// # Safety
/// `options` is NULL or options from this library, not yet freed and not in use by another
/// call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn veriflash_options_free(options: *mut veriflash_options) {
    call_plain((), || {
        // SAFETY: this function's contract.
        unsafe { free(options) }
    });
}
