//! What a successful verification or flash established.

use std::ffi::{CString, c_char};

use veriflash_core::{AnchorSet, VerifyReport};

use crate::error::{FfiError, VERIFLASH_INDEX_OUT_OF_RANGE, c_text, veriflash_result};
use crate::ffi::{Handle, Out, borrow, call, call_plain, free};

/// The outcome of a successful `veriflash_package_verify` or `veriflash_flash`: what the
/// verified manifest says and each verified image.
///
/// Owned by the caller, freed with `veriflash_report_free`. Strings returned by its accessors
/// belong to the report: valid until it is freed, never freed by the caller. Read-only: it may
/// be shared between threads.
pub struct veriflash_report {
    _private: [u8; 0],
}

/// The report's strings, made once so accessors can hand out borrowed C strings.
#[derive(Debug)]
pub(crate) struct Report {
    product: CString,
    chipset: CString,
    software_version: CString,
    security_version: u64,
    package_id: CString,
    images: Vec<Image>,
    signers: Vec<CString>,
    rotation: Option<AnchorSet>,
}

#[derive(Debug)]
struct Image {
    name: CString,
    partition: CString,
    size: u64,
    chunks: u64,
    sha256: CString,
    sha256_checked: bool,
}

impl Report {
    pub(crate) fn new(report: &VerifyReport) -> Self {
        Self {
            product: c_text(&report.product),
            chipset: c_text(&report.chipset),
            software_version: c_text(&report.software_version),
            security_version: report.security_version,
            package_id: c_text(&report.package_id),
            images: report
                .images
                .iter()
                .map(|i| Image {
                    name: c_text(&i.name),
                    partition: c_text(&i.partition),
                    size: i.size,
                    chunks: i.chunks,
                    sha256: c_text(&i.sha256),
                    sha256_checked: i.sha256_checked,
                })
                .collect(),
            signers: report.signers.iter().map(|s| c_text(s)).collect(),
            rotation: report.trust_rotation.as_ref().map(|r| r.set.clone()),
        }
    }
}

impl Handle for veriflash_report {
    type Inner = Report;
}

/// One verified image, as `veriflash_report_image` describes it. The strings belong to the
/// report and are valid until it is freed.
#[repr(C)]
#[derive(Debug)]
pub struct veriflash_image_info {
    /// Image name (NUL-terminated).
    pub name: *const c_char,
    /// Target partition (NUL-terminated).
    pub partition: *const c_char,
    /// Size in bytes.
    pub size: u64,
    /// Number of chunks verified.
    pub chunks: u64,
    /// Lower-case hex SHA-256 of the whole image as the signed manifest states it (64
    /// characters, NUL-terminated).
    pub sha256: *const c_char,
    /// Whether this run found the whole image equal to `sha256`: after `veriflash_flash`,
    /// every image the device stored (its read-back matched); `veriflash_package_verify` relies
    /// on the signed chunk digests, which cover every byte, and does not check it.
    pub sha256_checked: bool,
}

/// Writes one borrowed string of the report to `*out`.
///
/// # Safety
/// `report` is NULL or a live report; `out` is NULL or writable.
unsafe fn string_field(
    report: *const veriflash_report,
    out: *mut *const c_char,
    field: fn(&Report) -> &CString,
) -> veriflash_result {
    call(|| {
        // SAFETY: the caller's contract.
        let report = unsafe { borrow(report, "report") }?;
        // SAFETY: the caller's contract.
        let out = unsafe { Out::new(out, "out") }?;
        out.write(field(report).as_ptr());
        Ok(())
    })
}

/// The product the package is for. `*out` receives a string owned by the report.
///
/// # Errors
/// `VERIFLASH_NULL_POINTER`.
///
/// # Safety
/// `report` is NULL or a live report; `out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn veriflash_report_product(
    report: *const veriflash_report,
    out: *mut *const c_char,
) -> veriflash_result {
    // SAFETY: this function's contract.
    unsafe { string_field(report, out, |r| &r.product) }
}

/// The chipset the package is for. `*out` receives a string owned by the report.
///
/// # Errors
/// `VERIFLASH_NULL_POINTER`.
///
/// # Safety
/// `report` is NULL or a live report; `out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn veriflash_report_chipset(
    report: *const veriflash_report,
    out: *mut *const c_char,
) -> veriflash_result {
    // SAFETY: this function's contract.
    unsafe { string_field(report, out, |r| &r.chipset) }
}

/// The human-readable software version. `*out` receives a string owned by the report.
///
/// # Errors
/// `VERIFLASH_NULL_POINTER`.
///
/// # Safety
/// `report` is NULL or a live report; `out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn veriflash_report_version(
    report: *const veriflash_report,
    out: *mut *const c_char,
) -> veriflash_result {
    // SAFETY: this function's contract.
    unsafe { string_field(report, out, |r| &r.software_version) }
}

/// The package id: lower-case hex SHA-256 of its signed header and manifest. `*out` receives a
/// string owned by the report.
///
/// # Errors
/// `VERIFLASH_NULL_POINTER`.
///
/// # Safety
/// `report` is NULL or a live report; `out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn veriflash_report_package_id(
    report: *const veriflash_report,
    out: *mut *const c_char,
) -> veriflash_result {
    // SAFETY: this function's contract.
    unsafe { string_field(report, out, |r| &r.package_id) }
}

/// The anti-rollback security version.
///
/// # Errors
/// `VERIFLASH_NULL_POINTER`.
///
/// # Safety
/// `report` is NULL or a live report; `out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn veriflash_report_security_version(
    report: *const veriflash_report,
    out: *mut u64,
) -> veriflash_result {
    call(|| {
        // SAFETY: this function's contract.
        let report = unsafe { borrow(report, "report") }?;
        // SAFETY: this function's contract.
        let out = unsafe { Out::new(out, "out") }?;
        out.write(report.security_version);
        Ok(())
    })
}

/// The number of verified images.
///
/// # Errors
/// `VERIFLASH_NULL_POINTER`.
///
/// # Safety
/// `report` is NULL or a live report; `out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn veriflash_report_image_count(
    report: *const veriflash_report,
    out: *mut usize,
) -> veriflash_result {
    call(|| {
        // SAFETY: this function's contract.
        let report = unsafe { borrow(report, "report") }?;
        // SAFETY: this function's contract.
        let out = unsafe { Out::new(out, "out") }?;
        out.write(report.images.len());
        Ok(())
    })
}

/// Describes image `index` (in manifest order) in `*out`; its strings belong to the report.
///
/// # Errors
/// `VERIFLASH_NULL_POINTER`; `VERIFLASH_INDEX_OUT_OF_RANGE` when `index` is not below
/// `veriflash_report_image_count`.
///
/// # Safety
/// `report` is NULL or a live report; `out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn veriflash_report_image(
    report: *const veriflash_report,
    index: usize,
    out: *mut veriflash_image_info,
) -> veriflash_result {
    call(|| {
        // SAFETY: this function's contract.
        let report = unsafe { borrow(report, "report") }?;
        // SAFETY: this function's contract.
        let out = unsafe { Out::new(out, "out") }?;
        let image = report.images.get(index).ok_or_else(|| {
            FfiError::new(
                VERIFLASH_INDEX_OUT_OF_RANGE,
                format!(
                    "image index {index}, the report has {} images",
                    report.images.len()
                ),
            )
        })?;
        out.write(veriflash_image_info {
            name: image.name.as_ptr(),
            partition: image.partition.as_ptr(),
            size: image.size,
            chunks: image.chunks,
            sha256: image.sha256.as_ptr(),
            sha256_checked: image.sha256_checked,
        });
        Ok(())
    })
}

/// The number of distinct trusted keys whose signatures verified.
///
/// # Errors
/// `VERIFLASH_NULL_POINTER`.
///
/// # Safety
/// `report` is NULL or a live report; `out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn veriflash_report_signer_count(
    report: *const veriflash_report,
    out: *mut usize,
) -> veriflash_result {
    call(|| {
        // SAFETY: this function's contract.
        let report = unsafe { borrow(report, "report") }?;
        // SAFETY: this function's contract.
        let out = unsafe { Out::new(out, "out") }?;
        out.write(report.signers.len());
        Ok(())
    })
}

/// The key id (lower-case hex) of signer `index`. `*out` receives a string owned by the report.
///
/// # Errors
/// `VERIFLASH_NULL_POINTER`; `VERIFLASH_INDEX_OUT_OF_RANGE` when `index` is not below
/// `veriflash_report_signer_count`.
///
/// # Safety
/// `report` is NULL or a live report; `out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn veriflash_report_signer(
    report: *const veriflash_report,
    index: usize,
    out: *mut *const c_char,
) -> veriflash_result {
    call(|| {
        // SAFETY: this function's contract.
        let report = unsafe { borrow(report, "report") }?;
        // SAFETY: this function's contract.
        let out = unsafe { Out::new(out, "out") }?;
        let signer = report.signers.get(index).ok_or_else(|| {
            FfiError::new(
                VERIFLASH_INDEX_OUT_OF_RANGE,
                format!(
                    "signer index {index}, the report has {} signers",
                    report.signers.len()
                ),
            )
        })?;
        out.write(signer.as_ptr());
        Ok(())
    })
}

/// The version of the trust-anchor set the package rotates to: `*out` receives it, or 0 when
/// the package carries no rotation (a rotation is always to a version above 0). A rotation in
/// a report has passed the rotation rule (signed by enough current anchors and enough of the
/// new ones, newer than the trust store's set).
///
/// # Errors
/// `VERIFLASH_NULL_POINTER`.
///
/// # Safety
/// `report` is NULL or a live report; `out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn veriflash_report_rotation_version(
    report: *const veriflash_report,
    out: *mut u64,
) -> veriflash_result {
    call(|| {
        // SAFETY: this function's contract.
        let report = unsafe { borrow(report, "report") }?;
        // SAFETY: this function's contract.
        let out = unsafe { Out::new(out, "out") }?;
        out.write(report.rotation.as_ref().map_or(0, AnchorSet::version));
        Ok(())
    })
}

/// Persists the trust-anchor set the package rotates to at `path` (atomically: a temporary
/// file, flushed, renamed over `path`), for `veriflash_trust_load` to read from then on. Call
/// it only with the report of a `veriflash_flash` that succeeded: the set must be adopted only
/// after the install committed.
///
/// # Errors
/// `VERIFLASH_NULL_POINTER`, `VERIFLASH_INVALID_UTF8`; `VERIFLASH_INVALID_INPUT` when the
/// package carries no rotation; `VERIFLASH_IO`.
///
/// # Safety
/// `report` is NULL or a live report; `path` is NULL or a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn veriflash_report_save_rotation(
    report: *const veriflash_report,
    path: *const c_char,
) -> veriflash_result {
    call(|| {
        // SAFETY: this function's contract.
        let report = unsafe { borrow(report, "report") }?;
        // SAFETY: this function's contract.
        let path = unsafe { crate::ffi::arg_str(path, "path") }?;
        let set = report.rotation.as_ref().ok_or_else(|| {
            veriflash_core::Error::new(
                veriflash_core::ErrorKind::InvalidInput,
                "the package carries no trust-anchor rotation",
            )
        })?;
        set.save(std::path::Path::new(path))?;
        Ok(())
    })
}

/// Frees a report and the strings it handed out. NULL is a no-op. Freeing the same report
/// twice is undefined behaviour, as with `free()`.
///
/// # Safety
/// `report` is NULL or a report from this library, not yet freed and not in use by another
/// call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn veriflash_report_free(report: *mut veriflash_report) {
    call_plain((), || {
        // SAFETY: this function's contract.
        unsafe { free(report) }
    });
}
