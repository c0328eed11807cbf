//! Result codes and the per-thread last error.
//!
//! Every fallible function returns a [`veriflash_result`]: `VERIFLASH_OK` (0) on success,
//! otherwise a code. Codes below 200 are exactly the Rust `ErrorKind::code()` numbers (the CLI's
//! exit statuses, the `code` of `--json`); codes 200–239 are the C API's own (a NULL pointer,
//! invalid UTF-8, a caught panic, …) and never collide with them, since every code fits a
//! process exit status and the core's ranges stop below 100. A number is never reused.
//!
//! After a function fails, `veriflash_last_error_message` and `veriflash_last_error_remedy`
//! on the same thread give the specifics and what to do. Every function that returns a
//! [`veriflash_result`] clears the thread's last error when it starts (except the three
//! `veriflash_last_error_*` functions, which never change it).

use std::cell::RefCell;
use std::ffi::{CStr, CString, c_char};

use veriflash_core::Error;

use crate::ffi::{Out, call_plain};

/// A result code: `VERIFLASH_OK` (0), a core error kind's code (10–199), or a C API code
/// (200–239). A `uint32_t`, so a code a newer library returns is still representable.
pub type veriflash_result = u32;

/// Success.
pub const VERIFLASH_OK: veriflash_result = 0;

// Package format (10–19).
/// The bytes do not follow the package format.
pub const VERIFLASH_MALFORMED_PACKAGE: veriflash_result = 10;
/// A format version, flag or critical extension this library does not understand.
pub const VERIFLASH_UNSUPPORTED_FORMAT: veriflash_result = 11;
/// A length or count in the package exceeds a documented limit.
pub const VERIFLASH_LIMIT_EXCEEDED: veriflash_result = 12;
/// The package ends before the end its header declares.
pub const VERIFLASH_TRUNCATED: veriflash_result = 13;
/// Bytes follow the declared end of the package.
pub const VERIFLASH_TRAILING_DATA: veriflash_result = 14;
// Authenticity (20–29).
/// No signature over the manifest verified with a trusted key.
pub const VERIFLASH_NOT_AUTHENTIC: veriflash_result = 20;
/// The package was signed by a key that is not a trust anchor.
pub const VERIFLASH_UNKNOWN_SIGNER: veriflash_result = 21;
/// No trust anchors were configured.
pub const VERIFLASH_NO_TRUST_ANCHORS: veriflash_result = 22;
/// The signing key has been revoked.
pub const VERIFLASH_KEY_REVOKED: veriflash_result = 23;
/// Fewer distinct trusted keys signed than the policy requires.
pub const VERIFLASH_THRESHOLD_NOT_MET: veriflash_result = 24;
/// A signature algorithm this library does not support.
pub const VERIFLASH_UNSUPPORTED_ALGORITHM: veriflash_result = 25;
/// The signer's certificate chain is invalid.
pub const VERIFLASH_CERTIFICATE_INVALID: veriflash_result = 26;
/// A certificate of the signer's chain is expired or not yet valid.
pub const VERIFLASH_CERTIFICATE_EXPIRED: veriflash_result = 27;
/// The package's trust-anchor rotation may not be adopted: too few current or new anchors
/// signed it, or it is not newer than the installed set.
pub const VERIFLASH_ROTATION_REFUSED: veriflash_result = 28;
// Integrity (30–39).
/// A payload chunk does not hash to its signed digest: corrupted or tampered.
pub const VERIFLASH_INTEGRITY_MISMATCH: veriflash_result = 30;
/// Every chunk matched but the whole-image digest did not.
pub const VERIFLASH_IMAGE_DIGEST_MISMATCH: veriflash_result = 31;
/// A compressed chunk does not decompress to its signed length.
pub const VERIFLASH_DECOMPRESSED_LENGTH_MISMATCH: veriflash_result = 32;
/// A compressed chunk cannot be decompressed within the format's limits.
pub const VERIFLASH_DECOMPRESSION_FAILED: veriflash_result = 33;
/// A delta package applies to another image than the one the device runs (or the device
/// cannot read back what it runs): refused before anything is written.
pub const VERIFLASH_SOURCE_MISMATCH: veriflash_result = 34;
/// A chunk rebuilt from the installed image does not match its signed digest: the delta
/// package contradicts itself; that chunk was not written.
pub const VERIFLASH_DELTA_OUTPUT_MISMATCH: veriflash_result = 35;
// Policy (40–49).
/// The package is for another product.
pub const VERIFLASH_WRONG_PRODUCT: veriflash_result = 40;
/// The package is for another chipset.
pub const VERIFLASH_WRONG_CHIPSET: veriflash_result = 41;
/// The package does not list the device's hardware revision.
pub const VERIFLASH_WRONG_HARDWARE_REVISION: veriflash_result = 42;
/// The package is below the device's anti-rollback floor.
pub const VERIFLASH_DOWNGRADE_REFUSED: veriflash_result = 43;
/// Not enough free storage for the install.
pub const VERIFLASH_INSUFFICIENT_STORAGE: veriflash_result = 44;
/// The install needs more memory than its budget.
pub const VERIFLASH_INSUFFICIENT_MEMORY: veriflash_result = 45;
/// A pre-flight check refused the install.
pub const VERIFLASH_PREFLIGHT_REFUSED: veriflash_result = 46;
/// The package names a partition the device does not have.
pub const VERIFLASH_UNKNOWN_PARTITION: veriflash_result = 47;
/// An image is larger than its partition.
pub const VERIFLASH_IMAGE_TOO_LARGE: veriflash_result = 48;
/// The package would write a protected partition.
pub const VERIFLASH_PROTECTED_PARTITION: veriflash_result = 49;
// Device and transport (50–59).
/// The device reported an error.
pub const VERIFLASH_DEVICE_ERROR: veriflash_result = 50;
/// The connection to the device failed.
pub const VERIFLASH_TRANSPORT_ERROR: veriflash_result = 51;
/// What was read back from the device differs from what was written.
pub const VERIFLASH_READ_BACK_MISMATCH: veriflash_result = 52;
/// A source or device stopped answering within its time limit.
pub const VERIFLASH_TIMEOUT: veriflash_result = 53;
/// The download server failed or answered wrongly.
pub const VERIFLASH_SERVER_ERROR: veriflash_result = 54;
/// The package changed on the server during the download.
pub const VERIFLASH_SOURCE_CHANGED: veriflash_result = 55;
/// The download server's TLS certificate was not trusted or the handshake failed.
pub const VERIFLASH_TLS_ERROR: veriflash_result = 56;
/// Another run holds the device (or the output file): nothing was read or written.
pub const VERIFLASH_BUSY: veriflash_result = 57;
/// The device was not found (no such file or port, or not connected).
pub const VERIFLASH_DEVICE_NOT_FOUND: veriflash_result = 58;
/// The operating system refused access to the device or its storage file.
pub const VERIFLASH_DEVICE_ACCESS_DENIED: veriflash_result = 59;
// Run control (60–69).
/// The operation was cancelled (the progress callback returned `VERIFLASH_CANCEL`).
pub const VERIFLASH_CANCELLED: veriflash_result = 60;
/// The install was interrupted before it committed.
pub const VERIFLASH_INTERRUPTED: veriflash_result = 61;
/// An overall time limit ran out although data was still moving.
pub const VERIFLASH_DEADLINE_EXCEEDED: veriflash_result = 62;
// The download server's refusals that another attempt with the same URL cannot change (63–65).
/// The download server has no package at the URL (HTTP 404, 410).
pub const VERIFLASH_PACKAGE_NOT_FOUND: veriflash_result = 63;
/// The download server refused access (HTTP 401, 403) for another reason than an expired URL.
pub const VERIFLASH_ACCESS_REFUSED: veriflash_result = 64;
/// A time-limited URL (an S3 presigned URL, a CDN token) expired.
pub const VERIFLASH_URL_EXPIRED: veriflash_result = 65;
// Local input (70–79).
/// A file could not be read or written, or a read callback failed.
pub const VERIFLASH_IO: veriflash_result = 70;
/// A key or trust anchor could not be used.
pub const VERIFLASH_INVALID_KEY: veriflash_result = 71;
/// Caller input other than the package is invalid (e.g. an unknown target).
pub const VERIFLASH_INVALID_INPUT: veriflash_result = 72;
/// A file system is full (the device file's, the output's, the download's).
pub const VERIFLASH_NO_SPACE: veriflash_result = 73;
// This computer's resources (80–89).
/// This computer ran out of memory or threads; nothing is known about the package.
pub const VERIFLASH_RESOURCE_EXHAUSTED: veriflash_result = 80;

// The C API's own codes (200–239).
/// A pointer argument that must not be NULL was NULL.
pub const VERIFLASH_NULL_POINTER: veriflash_result = 200;
/// A string argument (path, target, PEM text) is not valid UTF-8.
pub const VERIFLASH_INVALID_UTF8: veriflash_result = 201;
/// An argument is invalid: a misaligned pointer, a length beyond the largest object size.
pub const VERIFLASH_INVALID_ARGUMENT: veriflash_result = 202;
/// The library caught a panic (a bug in veriflash). Free the handles passed to the call and
/// do not use them again.
pub const VERIFLASH_PANIC: veriflash_result = 203;
/// The package handle was already used by `veriflash_package_verify` or `veriflash_flash`: a
/// package handle is read once. Open the package again.
pub const VERIFLASH_PACKAGE_SPENT: veriflash_result = 204;
/// The caller's buffer is too small; `VERIFLASH_MESSAGE_MAX` bytes always suffice.
pub const VERIFLASH_BUFFER_TOO_SMALL: veriflash_result = 205;
/// An index is not below the matching count.
pub const VERIFLASH_INDEX_OUT_OF_RANGE: veriflash_result = 206;

/// Longest last-error message or remedy, including its terminating NUL: a buffer of this many
/// bytes always receives the whole text (longer messages are cut at a UTF-8 boundary).
pub const VERIFLASH_MESSAGE_MAX: usize = 1024;

/// Every code with its stable snake_case name (the core kinds' names, as in the CLI's `--json`).
const CODES: &[(veriflash_result, &CStr)] = &[
    (VERIFLASH_OK, c"ok"),
    (VERIFLASH_MALFORMED_PACKAGE, c"malformed_package"),
    (VERIFLASH_UNSUPPORTED_FORMAT, c"unsupported_format"),
    (VERIFLASH_LIMIT_EXCEEDED, c"limit_exceeded"),
    (VERIFLASH_TRUNCATED, c"truncated"),
    (VERIFLASH_TRAILING_DATA, c"trailing_data"),
    (VERIFLASH_NOT_AUTHENTIC, c"not_authentic"),
    (VERIFLASH_UNKNOWN_SIGNER, c"unknown_signer"),
    (VERIFLASH_NO_TRUST_ANCHORS, c"no_trust_anchors"),
    (VERIFLASH_KEY_REVOKED, c"key_revoked"),
    (VERIFLASH_THRESHOLD_NOT_MET, c"threshold_not_met"),
    (VERIFLASH_UNSUPPORTED_ALGORITHM, c"unsupported_algorithm"),
    (VERIFLASH_CERTIFICATE_INVALID, c"certificate_invalid"),
    (VERIFLASH_CERTIFICATE_EXPIRED, c"certificate_expired"),
    (VERIFLASH_ROTATION_REFUSED, c"rotation_refused"),
    (VERIFLASH_INTEGRITY_MISMATCH, c"integrity_mismatch"),
    (VERIFLASH_IMAGE_DIGEST_MISMATCH, c"image_digest_mismatch"),
    (
        VERIFLASH_DECOMPRESSED_LENGTH_MISMATCH,
        c"decompressed_length_mismatch",
    ),
    (VERIFLASH_DECOMPRESSION_FAILED, c"decompression_failed"),
    (VERIFLASH_SOURCE_MISMATCH, c"source_mismatch"),
    (VERIFLASH_DELTA_OUTPUT_MISMATCH, c"delta_output_mismatch"),
    (VERIFLASH_WRONG_PRODUCT, c"wrong_product"),
    (VERIFLASH_WRONG_CHIPSET, c"wrong_chipset"),
    (
        VERIFLASH_WRONG_HARDWARE_REVISION,
        c"wrong_hardware_revision",
    ),
    (VERIFLASH_DOWNGRADE_REFUSED, c"downgrade_refused"),
    (VERIFLASH_INSUFFICIENT_STORAGE, c"insufficient_storage"),
    (VERIFLASH_INSUFFICIENT_MEMORY, c"insufficient_memory"),
    (VERIFLASH_PREFLIGHT_REFUSED, c"preflight_refused"),
    (VERIFLASH_UNKNOWN_PARTITION, c"unknown_partition"),
    (VERIFLASH_IMAGE_TOO_LARGE, c"image_too_large"),
    (VERIFLASH_PROTECTED_PARTITION, c"protected_partition"),
    (VERIFLASH_DEVICE_ERROR, c"device_error"),
    (VERIFLASH_TRANSPORT_ERROR, c"transport_error"),
    (VERIFLASH_READ_BACK_MISMATCH, c"read_back_mismatch"),
    (VERIFLASH_TIMEOUT, c"timeout"),
    (VERIFLASH_SERVER_ERROR, c"server_error"),
    (VERIFLASH_SOURCE_CHANGED, c"source_changed"),
    (VERIFLASH_TLS_ERROR, c"tls_error"),
    (VERIFLASH_BUSY, c"busy"),
    (VERIFLASH_DEVICE_NOT_FOUND, c"device_not_found"),
    (VERIFLASH_DEVICE_ACCESS_DENIED, c"device_access_denied"),
    (VERIFLASH_CANCELLED, c"cancelled"),
    (VERIFLASH_INTERRUPTED, c"interrupted"),
    (VERIFLASH_DEADLINE_EXCEEDED, c"deadline_exceeded"),
    (VERIFLASH_PACKAGE_NOT_FOUND, c"package_not_found"),
    (VERIFLASH_ACCESS_REFUSED, c"access_refused"),
    (VERIFLASH_URL_EXPIRED, c"url_expired"),
    (VERIFLASH_IO, c"io"),
    (VERIFLASH_INVALID_KEY, c"invalid_key"),
    (VERIFLASH_INVALID_INPUT, c"invalid_input"),
    (VERIFLASH_NO_SPACE, c"no_space"),
    (VERIFLASH_RESOURCE_EXHAUSTED, c"resource_exhausted"),
    (VERIFLASH_NULL_POINTER, c"null_pointer"),
    (VERIFLASH_INVALID_UTF8, c"invalid_utf8"),
    (VERIFLASH_INVALID_ARGUMENT, c"invalid_argument"),
    (VERIFLASH_PANIC, c"panic"),
    (VERIFLASH_PACKAGE_SPENT, c"package_spent"),
    (VERIFLASH_BUFFER_TOO_SMALL, c"buffer_too_small"),
    (VERIFLASH_INDEX_OUT_OF_RANGE, c"index_out_of_range"),
];

/// Every code this library defines, with its name, in code order (for tests and bindings).
pub fn all_codes() -> impl Iterator<Item = (veriflash_result, &'static str)> {
    CODES
        .iter()
        .map(|(code, name)| (*code, name.to_str().unwrap_or("")))
}

/// A failure on its way to C: the code, the message, and the remedy.
#[derive(Debug)]
pub(crate) struct FfiError {
    pub(crate) code: veriflash_result,
    pub(crate) message: String,
    remedy: String,
}

impl FfiError {
    /// A C API error (codes 200+), whose remedy follows from its code.
    pub(crate) fn new(code: veriflash_result, message: impl Into<String>) -> Self {
        let remedy = match code {
            VERIFLASH_NULL_POINTER => {
                "Pass a valid pointer: see the function's documentation in veriflash.h for which arguments may be NULL."
            }
            VERIFLASH_INVALID_UTF8 => "Pass paths, targets and PEM text as UTF-8.",
            VERIFLASH_INVALID_ARGUMENT => {
                "Pass the pointers and lengths the function's documentation in veriflash.h asks for."
            }
            VERIFLASH_PANIC => {
                "This is a bug in veriflash: report it with this message. Free the handles passed to the call and do not use them again."
            }
            VERIFLASH_PACKAGE_SPENT => {
                "Open the package again: a package handle is verified or flashed once."
            }
            VERIFLASH_BUFFER_TOO_SMALL => "Pass a buffer of VERIFLASH_MESSAGE_MAX bytes.",
            VERIFLASH_INDEX_OUT_OF_RANGE => {
                "Pass an index below the count the matching *_count function returns."
            }
            _ => "",
        };
        Self {
            code,
            message: message.into(),
            remedy: remedy.to_owned(),
        }
    }
}

impl From<Error> for FfiError {
    fn from(err: Error) -> Self {
        let mut message = err.to_string();
        let at = err.location();
        let mut parts = Vec::new();
        if let Some(image) = &at.image {
            parts.push(format!("image '{image}'"));
        }
        if let Some(chunk) = at.chunk {
            parts.push(format!("chunk {chunk}"));
        }
        if let Some(offset) = at.offset {
            parts.push(format!("offset {offset}"));
        }
        if !parts.is_empty() {
            message.push_str(&format!(" [{}]", parts.join(", ")));
        }
        Self {
            code: veriflash_result::from(err.code()),
            message,
            remedy: err.remedy().to_owned(),
        }
    }
}

/// The last error of one thread, ready to be copied out.
struct LastError {
    code: veriflash_result,
    message: CString,
    remedy: CString,
}

thread_local! {
    static LAST_ERROR: RefCell<Option<LastError>> = const { RefCell::new(None) };
}

/// `text` as a C string of at most `VERIFLASH_MESSAGE_MAX - 1` bytes: NUL bytes become `?`, and
/// longer text is cut at a character boundary.
pub(crate) fn c_text(text: &str) -> CString {
    let mut end = text.len().min(VERIFLASH_MESSAGE_MAX - 1);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let bytes: Vec<u8> = text
        .bytes()
        .take(end)
        .map(|b| if b == 0 { b'?' } else { b })
        .collect();
    CString::new(bytes).unwrap_or_default()
}

/// Records `error` as this thread's last error.
pub(crate) fn set_last_error(error: FfiError) {
    let last = LastError {
        code: error.code,
        message: c_text(&error.message),
        remedy: c_text(&error.remedy),
    };
    // `try_with`: during thread teardown there is no last error to keep.
    let _ = LAST_ERROR.try_with(|cell| cell.replace(Some(last)));
}

/// Forgets this thread's last error.
pub(crate) fn clear_last_error() {
    let _ = LAST_ERROR.try_with(|cell| cell.replace(None));
}

/// This thread's last error code, `VERIFLASH_OK` if none.
pub(crate) fn last_error_code() -> veriflash_result {
    LAST_ERROR
        .try_with(|cell| cell.borrow().as_ref().map_or(VERIFLASH_OK, |e| e.code))
        .unwrap_or(VERIFLASH_OK)
}

/// Which text of the last error to copy.
#[derive(Clone, Copy)]
enum Text {
    Message,
    Remedy,
}

/// Copies the last error's message or remedy into `buf`. Never changes the last error.
///
/// # Safety
/// As `veriflash_last_error_message`.
unsafe fn copy_last_error(
    which: Text,
    buf: *mut c_char,
    len: usize,
    out_written: *mut usize,
) -> veriflash_result {
    call_plain(VERIFLASH_PANIC, || {
        if buf.is_null() {
            return VERIFLASH_NULL_POINTER;
        }
        // SAFETY: the caller guarantees `out_written` is NULL or writable.
        let out = match unsafe { Out::new(out_written, "out_written") } {
            Ok(out) => out,
            Err(err) => return err.code,
        };
        let text = LAST_ERROR
            .try_with(|cell| {
                cell.borrow().as_ref().map(|e| match which {
                    Text::Message => e.message.clone(),
                    Text::Remedy => e.remedy.clone(),
                })
            })
            .ok()
            .flatten()
            .unwrap_or_default();
        let bytes = text.as_bytes_with_nul();
        if bytes.len() > len {
            return VERIFLASH_BUFFER_TOO_SMALL;
        }
        // SAFETY: `buf` is not NULL, the caller guarantees it is writable for `len` bytes, and
        // `bytes.len() <= len`; `bytes` is our own allocation, so the two cannot overlap.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), buf.cast::<u8>(), bytes.len()) };
        out.write(bytes.len() - 1);
        VERIFLASH_OK
    })
}

/// Copies the calling thread's last error message (what failed, with specifics such as the
/// image and chunk) into `buf` as a NUL-terminated string, and its length without the NUL into
/// `*out_written`. With no last error the string is empty.
///
/// Never changes the last error. Outputs are written only on success.
///
/// # Errors
/// `VERIFLASH_NULL_POINTER` if `buf` or `out_written` is NULL; `VERIFLASH_BUFFER_TOO_SMALL` if
/// `len` cannot hold the text and its NUL (`VERIFLASH_MESSAGE_MAX` always can).
///
/// # Safety
/// `buf` is NULL or writable for `len` bytes; `out_written` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn veriflash_last_error_message(
    buf: *mut c_char,
    len: usize,
    out_written: *mut usize,
) -> veriflash_result {
    // SAFETY: the same contract as this function's.
    unsafe { copy_last_error(Text::Message, buf, len, out_written) }
}

/// Copies the calling thread's last error remedy (one line saying what to do next) into `buf`
/// as a NUL-terminated string, and its length without the NUL into `*out_written`. With no last
/// error the string is empty.
///
/// Never changes the last error. Outputs are written only on success.
///
/// # Errors
/// `VERIFLASH_NULL_POINTER` if `buf` or `out_written` is NULL; `VERIFLASH_BUFFER_TOO_SMALL` if
/// `len` cannot hold the text and its NUL (`VERIFLASH_MESSAGE_MAX` always can).
///
/// # Safety
/// `buf` is NULL or writable for `len` bytes; `out_written` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn veriflash_last_error_remedy(
    buf: *mut c_char,
    len: usize,
    out_written: *mut usize,
) -> veriflash_result {
    // SAFETY: the same contract as this function's.
    unsafe { copy_last_error(Text::Remedy, buf, len, out_written) }
}

/// The code of the calling thread's last error: `VERIFLASH_OK` if the last call that returned a
/// `veriflash_result` succeeded. Never changes the last error.
#[unsafe(no_mangle)]
pub extern "C" fn veriflash_last_error_code() -> veriflash_result {
    call_plain(VERIFLASH_PANIC, last_error_code)
}

/// The stable snake_case name of a result code (`"ok"`, `"not_authentic"`, `"cancelled"`,
/// `"null_pointer"`, …; the same names as the CLI's `--json` `kind`), or `"unknown"`.
///
/// The string is static: never free it.
#[unsafe(no_mangle)]
pub extern "C" fn veriflash_result_name(code: veriflash_result) -> *const c_char {
    call_plain(c"unknown".as_ptr(), || {
        CODES
            .iter()
            .find(|(c, _)| *c == code)
            .map_or(c"unknown".as_ptr(), |(_, name)| name.as_ptr())
    })
}
