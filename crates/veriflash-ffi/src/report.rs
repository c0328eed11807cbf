//! What a successful verification or flash established.

use std::ffi::{CString, c_char};

use veriflash_core::VerifyReport;

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
}

#[derive(Debug)]
struct Image {
    name: CString,
    partition: CString,
    size: u64,
    chunks: u64,
    sha256: CString,
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
                })
                .collect(),
            signers: report.signers.iter().map(|s| c_text(s)).collect(),
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
    /// Lower-case hex SHA-256 of the whole image (64 characters, NUL-terminated).
    pub sha256: *const c_char,
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
