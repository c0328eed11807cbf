//! The C API called as C would call it: null pointers, invalid UTF-8, spent packages, read
//! callbacks that fail, a progress callback that cancels, and the documented codes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::ptr;

use veriflash_core::format::SignatureBlock;
use veriflash_core::plugin::Slot;
use veriflash_core::plugin::file_device::{FileDevice, Layout};
use veriflash_core::sig::SigningKey;
use veriflash_core::{ErrorKind, ImageData, ImageSource, PackageSpec, Phase, UnsignedPackage};
use veriflash_ffi::*;
use veriflash_test_support::file_layout;
use veriflash_test_support::parity::Pki;

// ---------------------------------------------------------------------------------------------
// Fixtures.

fn layout() -> Layout {
    file_layout(&[("boot", 64 << 10), ("system", 128 << 10)], &[])
}

fn bytes(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| u8::try_from((i * 31 + usize::from(seed)) % 251).unwrap())
        .collect()
}

/// A two-image package with 4 KiB chunks (so a flash reports many progress events), to sign.
fn unsigned_package(security_version: u64) -> UnsignedPackage {
    let mut images = vec![
        ImageSource::new("boot", "boot", ImageData::Bytes(bytes(40_000, 1))),
        ImageSource::new("rootfs", "system", ImageData::Bytes(bytes(90_000, 2))),
    ];
    for image in &mut images {
        image.chunk_size = 4096;
    }
    UnsignedPackage::prepare(PackageSpec {
        product: "acme-hotspot-x1".into(),
        chipset: "mdm9607".into(),
        hardware_revisions: vec![],
        software_version: format!("2.{security_version}.0"),
        security_version,
        images,
    })
    .unwrap()
}

/// The package with these signature entries.
fn signed(
    unsigned: &UnsignedPackage,
    entries: Vec<veriflash_core::format::SignatureEntry>,
) -> Vec<u8> {
    let block = SignatureBlock { entries };
    let mut out = Vec::new();
    unsigned.write_to(&block, &mut out).unwrap();
    out
}

/// A signed two-image package with 4 KiB chunks.
fn package_bytes(key: &SigningKey, security_version: u64) -> Vec<u8> {
    let unsigned = unsigned_package(security_version);
    let entry = unsigned.sign(key).unwrap();
    signed(&unsigned, vec![entry])
}

struct Fixture {
    dir: tempfile::TempDir,
    key: SigningKey,
    package: PathBuf,
    package_bytes: Vec<u8>,
    device: PathBuf,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::generate_p256().unwrap();
        let package_bytes = package_bytes(&key, 7);
        let package = dir.path().join("update.vfp");
        std::fs::write(&package, &package_bytes).unwrap();
        let device = dir.path().join("device.img");
        FileDevice::create(&device, &layout()).unwrap();
        std::fs::write(
            dir.path().join("vendor.pub.pem"),
            key.verifying_key().to_public_key_pem(),
        )
        .unwrap();
        Self {
            dir,
            key,
            package,
            package_bytes,
            device,
        }
    }

    fn trust(&self) -> Trust {
        trust_for(&self.key)
    }

    fn target(&self) -> CString {
        c_path_with_prefix("file:", &self.device)
    }

    /// A copy of the package with one byte flipped.
    fn tampered(&self, at: usize) -> PathBuf {
        let mut bytes = self.package_bytes.clone();
        bytes[at] ^= 0x01;
        let path = self.dir.path().join(format!("tampered-{at}.vfp"));
        std::fs::write(&path, bytes).unwrap();
        path
    }
}

fn c_path(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).unwrap()
}

fn c_path_with_prefix(prefix: &str, path: &Path) -> CString {
    let mut bytes = prefix.as_bytes().to_vec();
    bytes.extend_from_slice(path.as_os_str().as_bytes());
    CString::new(bytes).unwrap()
}

/// Owners that free their handle, as a careful C caller would.
struct Trust(*mut veriflash_trust);
impl Drop for Trust {
    fn drop(&mut self) {
        // SAFETY: a live trust store from the library, freed once.
        unsafe { veriflash_trust_free(self.0) }
    }
}
struct Package(*mut veriflash_package);
impl Drop for Package {
    fn drop(&mut self) {
        // SAFETY: a live package from the library, freed once.
        unsafe { veriflash_package_free(self.0) }
    }
}
struct Report(*mut veriflash_report);
impl Drop for Report {
    fn drop(&mut self) {
        // SAFETY: NULL or a live report from the library, freed once.
        unsafe { veriflash_report_free(self.0) }
    }
}
struct Options(*mut veriflash_options);
impl Options {
    fn new() -> Self {
        let mut options = ptr::null_mut();
        // SAFETY: a writable local.
        let rc = unsafe { veriflash_options_new(&raw mut options) };
        assert_eq!(rc, VERIFLASH_OK, "{}", last_message());
        Self(options)
    }

    /// Options with this state directory (and no other change).
    fn with_state_dir(dir: &Path) -> Self {
        let options = Self::new();
        let dir = c_path(dir);
        // SAFETY: live options and a NUL-terminated path.
        let rc = unsafe { veriflash_options_set_state_dir(options.0, dir.as_ptr()) };
        assert_eq!(rc, VERIFLASH_OK, "{}", last_message());
        options
    }
}
impl Drop for Options {
    fn drop(&mut self) {
        // SAFETY: live options from the library, freed once.
        unsafe { veriflash_options_free(self.0) }
    }
}
struct Status(*mut veriflash_status);
impl Drop for Status {
    fn drop(&mut self) {
        // SAFETY: a live status from the library, freed once.
        unsafe { veriflash_status_free(self.0) }
    }
}

/// A trust store pinning `key`, made from PEM as an updater with compiled-in anchors would.
fn trust_for(key: &SigningKey) -> Trust {
    let pem = key.verifying_key().to_public_key_pem();
    let mut trust = ptr::null_mut();
    // SAFETY: `pem` is readable for its length; `trust` is a writable local.
    let rc = unsafe { veriflash_trust_from_pem(pem.as_ptr(), pem.len(), &raw mut trust) };
    assert_eq!(rc, VERIFLASH_OK, "{}", last_message());
    Trust(trust)
}

/// Flashes `package` to `target` without a progress callback.
fn flash_to(package: &Package, trust: &Trust, target: &CStr) -> (veriflash_result, Report) {
    let mut report = ptr::null_mut();
    // SAFETY: live handles, a NUL-terminated target, no callback, a writable local.
    let rc = unsafe {
        veriflash_flash(
            package.0,
            trust.0,
            target.as_ptr(),
            None,
            ptr::null_mut(),
            &raw mut report,
        )
    };
    (rc, Report(report))
}

/// Flashes `package` to `target` with `options`, without a progress callback.
fn flash_with(
    package: &Package,
    trust: &Trust,
    options: &Options,
    target: &CStr,
) -> (veriflash_result, Report) {
    let mut report = ptr::null_mut();
    // SAFETY: live handles, a NUL-terminated target, no callback, a writable local.
    let rc = unsafe {
        veriflash_flash_with_options(
            package.0,
            trust.0,
            options.0,
            target.as_ptr(),
            None,
            ptr::null_mut(),
            &raw mut report,
        )
    };
    (rc, Report(report))
}

fn open(path: &Path) -> Package {
    let path = c_path(path);
    let mut package = ptr::null_mut();
    // SAFETY: a NUL-terminated path and a writable local.
    let rc = unsafe { veriflash_package_open(path.as_ptr(), &raw mut package) };
    assert_eq!(rc, VERIFLASH_OK, "{}", last_message());
    Package(package)
}

fn verify(package: &Package, trust: &Trust) -> (veriflash_result, Report) {
    let mut report = ptr::null_mut();
    // SAFETY: live handles and a writable local.
    let rc = unsafe { veriflash_package_verify(package.0, trust.0, &raw mut report) };
    (rc, Report(report))
}

fn status(target: &CStr) -> Status {
    let mut status = ptr::null_mut();
    // SAFETY: a NUL-terminated target and a writable local.
    let rc = unsafe { veriflash_device_status(target.as_ptr(), &raw mut status) };
    assert_eq!(rc, VERIFLASH_OK, "{}", last_message());
    Status(status)
}

fn active_slot(status: &Status) -> veriflash_slot {
    let mut slot = 99;
    // SAFETY: a live status and a writable local.
    let rc = unsafe { veriflash_status_active_slot(status.0, &raw mut slot) };
    assert_eq!(rc, VERIFLASH_OK);
    slot
}

fn text(ptr: *const c_char) -> String {
    assert!(!ptr.is_null());
    // SAFETY: the library hands out NUL-terminated strings that outlive this copy.
    unsafe { CStr::from_ptr(ptr) }.to_str().unwrap().to_owned()
}

fn last_text(
    f: unsafe extern "C" fn(*mut c_char, usize, *mut usize) -> veriflash_result,
) -> String {
    let mut buf = vec![0 as c_char; VERIFLASH_MESSAGE_MAX];
    let mut written = usize::MAX;
    // SAFETY: `buf` is writable for its length; `written` is a writable local.
    let rc = unsafe { f(buf.as_mut_ptr(), buf.len(), &raw mut written) };
    assert_eq!(rc, VERIFLASH_OK);
    let s = text(buf.as_ptr());
    assert_eq!(s.len(), written);
    s
}

fn last_message() -> String {
    last_text(veriflash_last_error_message)
}

fn last_remedy() -> String {
    last_text(veriflash_last_error_remedy)
}

// ---------------------------------------------------------------------------------------------
// Codes.

#[test]
fn core_codes_are_the_rust_error_kind_codes_with_the_same_names() {
    let codes: Vec<(veriflash_result, &str)> = all_codes().collect();
    for kind in ErrorKind::ALL {
        let code = veriflash_result::from(kind.code());
        let (_, name) = codes
            .iter()
            .find(|(c, _)| *c == code)
            .unwrap_or_else(|| panic!("no VERIFLASH_ constant for {kind:?} ({code})"));
        assert_eq!(*name, kind.name(), "{kind:?}");
        assert_eq!(text(veriflash_result_name(code)), kind.name());
        assert!(
            code < 200,
            "core code {code} collides with the C API's range"
        );
    }
    for (code, name) in &codes {
        let core = u8::try_from(*code).ok().and_then(ErrorKind::from_code);
        assert!(
            *code == VERIFLASH_OK || core.is_some() || (200..240).contains(code),
            "{name} ({code}) is neither a core kind nor in 200-239"
        );
    }
    assert_eq!(VERIFLASH_CANCELLED, 60);
    assert_eq!(VERIFLASH_NOT_AUTHENTIC, 20);
    assert_eq!(VERIFLASH_INTEGRITY_MISMATCH, 30);
    assert_eq!(VERIFLASH_NULL_POINTER, 200);
    assert_eq!(VERIFLASH_PANIC, 203);
    assert_eq!(text(veriflash_result_name(VERIFLASH_OK)), "ok");
    assert_eq!(text(veriflash_result_name(9999)), "unknown");
}

#[test]
fn versions_are_reported() {
    assert_eq!(text(veriflash_version()), env!("CARGO_PKG_VERSION"));
    assert_eq!(veriflash_abi_version(), VERIFLASH_ABI_VERSION);
}

#[test]
fn phase_names_match_the_cli_json_names() {
    for (code, phase) in [
        (VERIFLASH_PHASE_SIGNATURE, Phase::Signature),
        (VERIFLASH_PHASE_PREFLIGHT, Phase::Preflight),
        (VERIFLASH_PHASE_STAGING, Phase::Staging),
        (VERIFLASH_PHASE_FLASH, Phase::Flash),
        (VERIFLASH_PHASE_READ_BACK, Phase::ReadBack),
        (VERIFLASH_PHASE_COMMIT, Phase::Commit),
        (VERIFLASH_PHASE_LOAD, Phase::Load),
    ] {
        assert_eq!(text(veriflash_phase_name(code)), phase.name());
    }
    assert_eq!(text(veriflash_phase_name(1234)), "other");
}

// ---------------------------------------------------------------------------------------------
// Null pointers, free(NULL), invalid UTF-8.

#[test]
fn null_pointers_are_refused_and_outputs_left_alone() {
    let fx = Fixture::new();
    let trust = fx.trust();
    let path = c_path(&fx.package);
    let sentinel = 0x5a5a as *mut veriflash_package;
    let mut out = sentinel;
    // SAFETY: NULL where the API refuses NULL; everything else valid.
    unsafe {
        assert_eq!(
            veriflash_package_open(ptr::null(), &raw mut out),
            VERIFLASH_NULL_POINTER
        );
        assert_eq!(out, sentinel, "no output on failure");
        assert!(last_message().contains("'path'"), "{}", last_message());
        assert!(!last_remedy().is_empty());
        assert_eq!(veriflash_last_error_code(), VERIFLASH_NULL_POINTER);
        assert_eq!(
            veriflash_package_open(path.as_ptr(), ptr::null_mut()),
            VERIFLASH_NULL_POINTER
        );
        assert_eq!(
            veriflash_package_open_reader(None, ptr::null_mut(), &raw mut out),
            VERIFLASH_NULL_POINTER
        );
        let mut t = ptr::null_mut();
        assert_eq!(
            veriflash_trust_load(ptr::null(), &raw mut t),
            VERIFLASH_NULL_POINTER
        );
        assert_eq!(
            veriflash_trust_from_pem(ptr::null(), 0, &raw mut t),
            VERIFLASH_NULL_POINTER
        );
        assert!(t.is_null());

        let package = open(&fx.package);
        let mut report = ptr::null_mut();
        assert_eq!(
            veriflash_package_verify(ptr::null_mut(), trust.0, &raw mut report),
            VERIFLASH_NULL_POINTER
        );
        assert_eq!(
            veriflash_package_verify(package.0, ptr::null(), &raw mut report),
            VERIFLASH_NULL_POINTER
        );
        assert_eq!(
            veriflash_package_verify(package.0, trust.0, ptr::null_mut()),
            VERIFLASH_NULL_POINTER
        );
        let target = fx.target();
        assert_eq!(
            veriflash_flash(
                package.0,
                trust.0,
                ptr::null(),
                None,
                ptr::null_mut(),
                &raw mut report
            ),
            VERIFLASH_NULL_POINTER
        );
        assert_eq!(
            veriflash_flash(
                package.0,
                trust.0,
                target.as_ptr(),
                None,
                ptr::null_mut(),
                ptr::null_mut()
            ),
            VERIFLASH_NULL_POINTER
        );
        let mut st = ptr::null_mut();
        assert_eq!(
            veriflash_device_status(ptr::null(), &raw mut st),
            VERIFLASH_NULL_POINTER
        );
        let mut s = ptr::null();
        assert_eq!(
            veriflash_report_product(ptr::null(), &raw mut s),
            VERIFLASH_NULL_POINTER
        );
        let mut n = 0usize;
        assert_eq!(
            veriflash_report_image_count(ptr::null(), &raw mut n),
            VERIFLASH_NULL_POINTER
        );
        assert_eq!(
            veriflash_status_product(ptr::null(), &raw mut s),
            VERIFLASH_NULL_POINTER
        );
        let mut written = 0usize;
        assert_eq!(
            veriflash_last_error_message(ptr::null_mut(), 10, &raw mut written),
            VERIFLASH_NULL_POINTER
        );
        let mut buf = [0 as c_char; 8];
        assert_eq!(
            veriflash_last_error_remedy(buf.as_mut_ptr(), buf.len(), ptr::null_mut()),
            VERIFLASH_NULL_POINTER
        );

        assert_eq!(
            veriflash_trust_set_time(ptr::null_mut(), VERIFLASH_TRUSTED_TIME_NONE, 0),
            VERIFLASH_NULL_POINTER
        );
        assert_eq!(
            veriflash_trust_set_threshold(ptr::null_mut(), 2),
            VERIFLASH_NULL_POINTER
        );
        assert_eq!(
            veriflash_options_new(ptr::null_mut()),
            VERIFLASH_NULL_POINTER
        );
        assert_eq!(
            veriflash_options_set_state_dir(ptr::null_mut(), c"/tmp".as_ptr()),
            VERIFLASH_NULL_POINTER
        );
        assert_eq!(
            veriflash_options_set_config_dir(ptr::null_mut(), c"/tmp".as_ptr()),
            VERIFLASH_NULL_POINTER
        );
        assert_eq!(
            veriflash_options_set_reconnect_wait(ptr::null_mut(), 5),
            VERIFLASH_NULL_POINTER
        );
        let options = Options::new();
        assert_eq!(
            veriflash_flash_with_options(
                ptr::null_mut(),
                trust.0,
                options.0,
                target.as_ptr(),
                None,
                ptr::null_mut(),
                &raw mut report
            ),
            VERIFLASH_NULL_POINTER
        );
        assert_eq!(
            veriflash_flash_with_options(
                package.0,
                ptr::null(),
                options.0,
                target.as_ptr(),
                None,
                ptr::null_mut(),
                &raw mut report
            ),
            VERIFLASH_NULL_POINTER
        );
        assert_eq!(
            veriflash_flash_with_options(
                package.0,
                trust.0,
                options.0,
                target.as_ptr(),
                None,
                ptr::null_mut(),
                ptr::null_mut()
            ),
            VERIFLASH_NULL_POINTER
        );
        assert!(report.is_null());

        // None of the refused calls used the package up: it still verifies.
        let (rc, report) = verify(&package, &trust);
        assert_eq!(rc, VERIFLASH_OK, "{}", last_message());
        assert!(!report.0.is_null());
    }
}

#[test]
fn freeing_null_is_a_no_op() {
    // SAFETY: NULL is documented as a no-op for every *_free.
    unsafe {
        veriflash_trust_free(ptr::null_mut());
        veriflash_package_free(ptr::null_mut());
        veriflash_report_free(ptr::null_mut());
        veriflash_status_free(ptr::null_mut());
        veriflash_options_free(ptr::null_mut());
    }
}

#[test]
fn invalid_utf8_paths_and_targets_are_refused() {
    let fx = Fixture::new();
    let trust = fx.trust();
    let bad = CString::new(b"/tmp/\xff\xfe.vfp".to_vec()).unwrap();
    let bad_target = CString::new(b"file:/tmp/\xc3(".to_vec()).unwrap();
    // SAFETY: NUL-terminated strings and writable locals.
    unsafe {
        let mut package = ptr::null_mut();
        assert_eq!(
            veriflash_package_open(bad.as_ptr(), &raw mut package),
            VERIFLASH_INVALID_UTF8
        );
        assert!(package.is_null());
        assert!(last_message().contains("UTF-8"), "{}", last_message());
        let mut t = ptr::null_mut();
        assert_eq!(
            veriflash_trust_load(bad.as_ptr(), &raw mut t),
            VERIFLASH_INVALID_UTF8
        );
        let pem = b"-----BEGIN PUBLIC KEY-----\xff";
        assert_eq!(
            veriflash_trust_from_pem(pem.as_ptr(), pem.len(), &raw mut t),
            VERIFLASH_INVALID_UTF8
        );
        assert!(t.is_null());
        let mut st = ptr::null_mut();
        assert_eq!(
            veriflash_device_status(bad_target.as_ptr(), &raw mut st),
            VERIFLASH_INVALID_UTF8
        );
        let package = open(&fx.package);
        let mut report = ptr::null_mut();
        assert_eq!(
            veriflash_flash(
                package.0,
                trust.0,
                bad_target.as_ptr(),
                None,
                ptr::null_mut(),
                &raw mut report
            ),
            VERIFLASH_INVALID_UTF8
        );
        assert!(report.is_null());
    }
}

// ---------------------------------------------------------------------------------------------
// Verification.

#[test]
fn a_good_package_verifies_and_reports_its_manifest() {
    let fx = Fixture::new();
    let trust = fx.trust();
    let package = open(&fx.package);
    let (rc, report) = verify(&package, &trust);
    assert_eq!(rc, VERIFLASH_OK, "{}", last_message());
    assert_eq!(veriflash_last_error_code(), VERIFLASH_OK);
    assert_eq!(last_message(), "", "no last error after a success");
    // SAFETY: a live report and writable locals; strings are read while it lives.
    unsafe {
        let mut s = ptr::null();
        assert_eq!(veriflash_report_product(report.0, &raw mut s), VERIFLASH_OK);
        assert_eq!(text(s), "acme-hotspot-x1");
        assert_eq!(veriflash_report_chipset(report.0, &raw mut s), VERIFLASH_OK);
        assert_eq!(text(s), "mdm9607");
        assert_eq!(veriflash_report_version(report.0, &raw mut s), VERIFLASH_OK);
        assert_eq!(text(s), "2.7.0");
        assert_eq!(
            veriflash_report_package_id(report.0, &raw mut s),
            VERIFLASH_OK
        );
        assert_eq!(text(s).len(), 64);
        let mut v = 0u64;
        assert_eq!(
            veriflash_report_security_version(report.0, &raw mut v),
            VERIFLASH_OK
        );
        assert_eq!(v, 7);
        let mut n = 0usize;
        assert_eq!(
            veriflash_report_image_count(report.0, &raw mut n),
            VERIFLASH_OK
        );
        assert_eq!(n, 2);
        let mut info = std::mem::MaybeUninit::<veriflash_image_info>::uninit();
        assert_eq!(
            veriflash_report_image(report.0, 1, info.as_mut_ptr()),
            VERIFLASH_OK
        );
        let info = info.assume_init();
        assert_eq!(text(info.name), "rootfs");
        assert_eq!(text(info.partition), "system");
        assert_eq!(info.size, 90_000);
        assert_eq!(info.chunks, 90_000u64.div_ceil(4096));
        assert_eq!(text(info.sha256).len(), 64);
        assert!(
            !info.sha256_checked,
            "verify relies on the chunk digests and says so"
        );
        let mut other = std::mem::MaybeUninit::<veriflash_image_info>::uninit();
        assert_eq!(
            veriflash_report_image(report.0, 2, other.as_mut_ptr()),
            VERIFLASH_INDEX_OUT_OF_RANGE
        );
        assert_eq!(
            veriflash_report_signer_count(report.0, &raw mut n),
            VERIFLASH_OK
        );
        assert_eq!(n, 1);
        assert_eq!(
            veriflash_report_signer(report.0, 0, &raw mut s),
            VERIFLASH_OK
        );
        assert_eq!(text(s), fx.key.verifying_key().key_id().to_string());
        assert_eq!(
            veriflash_report_signer(report.0, 1, &raw mut s),
            VERIFLASH_INDEX_OUT_OF_RANGE
        );
    }
}

#[test]
fn a_package_is_read_once_then_spent() {
    let fx = Fixture::new();
    let trust = fx.trust();
    let package = open(&fx.package);
    assert_eq!(verify(&package, &trust).0, VERIFLASH_OK);
    let (rc, report) = verify(&package, &trust);
    assert_eq!(rc, VERIFLASH_PACKAGE_SPENT);
    assert!(report.0.is_null(), "no output on failure");
    let target = fx.target();
    let mut out = ptr::null_mut();
    // SAFETY: live handles, a NUL-terminated target, a writable local.
    let rc = unsafe {
        veriflash_flash(
            package.0,
            trust.0,
            target.as_ptr(),
            None,
            ptr::null_mut(),
            &raw mut out,
        )
    };
    assert_eq!(rc, VERIFLASH_PACKAGE_SPENT);
}

#[test]
fn tampered_packages_get_the_documented_codes() {
    let fx = Fixture::new();
    let trust = fx.trust();
    // A payload byte: the chunk digest catches it.
    let last = fx.package_bytes.len() - 10;
    let (rc, report) = verify(&open(&fx.tampered(last)), &trust);
    assert_eq!(rc, VERIFLASH_INTEGRITY_MISMATCH, "{}", last_message());
    assert!(report.0.is_null());
    assert!(last_message().contains("rootfs"), "{}", last_message());
    assert_eq!(last_remedy(), ErrorKind::IntegrityMismatch.remedy());

    // A manifest byte (just past the fixed header): the signature catches it, or the parser.
    let (rc, _report) = verify(&open(&fx.tampered(200)), &trust);
    assert!(
        rc == VERIFLASH_NOT_AUTHENTIC || rc == VERIFLASH_MALFORMED_PACKAGE,
        "got {rc}: {}",
        last_message()
    );

    // Signed by someone else.
    let stranger = trust_for(&SigningKey::generate_p256().unwrap());
    let (rc, _report) = verify(&open(&fx.package), &stranger);
    assert_eq!(rc, VERIFLASH_UNKNOWN_SIGNER, "{}", last_message());

    // Cut short.
    let short = fx.dir.path().join("short.vfp");
    std::fs::write(&short, &fx.package_bytes[..fx.package_bytes.len() - 100]).unwrap();
    let (rc, _report) = verify(&open(&short), &trust);
    assert_eq!(rc, VERIFLASH_TRUNCATED, "{}", last_message());
}

#[test]
fn the_wrong_file_gets_the_same_remedy_as_in_rust_and_the_cli() {
    let fx = Fixture::new();
    let private = fx.dir.path().join("vendor.pem");
    std::fs::write(&private, fx.key.to_pkcs8_pem().unwrap().as_bytes()).unwrap();
    // SAFETY: NUL-terminated strings, readable buffers, writable locals.
    unsafe {
        let mut trust = ptr::null_mut();
        assert_eq!(
            veriflash_trust_load(c_path(&private).as_ptr(), &raw mut trust),
            VERIFLASH_INVALID_KEY
        );
        assert!(trust.is_null());
        assert!(
            last_remedy().contains("vendor.pub.pem"),
            "{}",
            last_remedy()
        );
        let pem = fx.key.to_pkcs8_pem().unwrap();
        assert_eq!(
            veriflash_trust_from_pem(pem.as_ptr(), pem.len(), &raw mut trust),
            VERIFLASH_INVALID_KEY
        );
        assert!(
            last_remedy().contains("never the private key"),
            "{}",
            last_remedy()
        );
        let mut st = ptr::null_mut();
        assert_eq!(
            veriflash_device_status(c"device.img".as_ptr(), &raw mut st),
            VERIFLASH_INVALID_INPUT
        );
        assert!(last_remedy().contains("file:PATH"), "{}", last_remedy());
        let missing = c_path_with_prefix("file:", &fx.dir.path().join("missing.img"));
        assert_eq!(
            veriflash_device_status(missing.as_ptr(), &raw mut st),
            VERIFLASH_DEVICE_NOT_FOUND
        );
        assert!(
            last_remedy().contains("veriflash device init"),
            "{}",
            last_remedy()
        );
    }
}

#[test]
fn bad_inputs_get_the_documented_codes() {
    let fx = Fixture::new();
    // SAFETY: NUL-terminated strings, readable buffers, writable locals.
    unsafe {
        let missing = c_path(&fx.dir.path().join("missing.vfp"));
        let mut package = ptr::null_mut();
        assert_eq!(
            veriflash_package_open(missing.as_ptr(), &raw mut package),
            VERIFLASH_IO
        );
        let mut trust = ptr::null_mut();
        assert_eq!(
            veriflash_trust_load(missing.as_ptr(), &raw mut trust),
            VERIFLASH_IO
        );
        let pem_file = c_path(&fx.dir.path().join("vendor.pub.pem"));
        assert_eq!(
            veriflash_trust_load(pem_file.as_ptr(), &raw mut trust),
            VERIFLASH_OK
        );
        veriflash_trust_free(trust);
        let garbage = b"not a key";
        let mut t = ptr::null_mut();
        assert_eq!(
            veriflash_trust_from_pem(garbage.as_ptr(), garbage.len(), &raw mut t),
            VERIFLASH_INVALID_KEY
        );
        let not_a_package = c_path(&fx.dir.path().join("vendor.pub.pem"));
        assert_eq!(
            veriflash_package_open(not_a_package.as_ptr(), &raw mut package),
            VERIFLASH_MALFORMED_PACKAGE,
            "{}",
            last_message()
        );
        let mut st = ptr::null_mut();
        assert_eq!(
            veriflash_device_status(c"usb:whatever".as_ptr(), &raw mut st),
            VERIFLASH_INVALID_INPUT
        );
        assert!(st.is_null());
    }
}

#[test]
fn a_too_small_buffer_gets_nothing_and_the_last_error_stays() {
    let fx = Fixture::new();
    let trust = fx.trust();
    let (rc, _report) = verify(&open(&fx.tampered(fx.package_bytes.len() - 1)), &trust);
    assert_ne!(rc, VERIFLASH_OK);
    let mut buf = [0x11 as c_char; 4];
    let mut written = 777usize;
    // SAFETY: `buf` is writable for its length; `written` is a writable local.
    let too_small =
        unsafe { veriflash_last_error_message(buf.as_mut_ptr(), buf.len(), &raw mut written) };
    assert_eq!(too_small, VERIFLASH_BUFFER_TOO_SMALL);
    assert_eq!(buf, [0x11; 4]);
    assert_eq!(written, 777);
    assert_eq!(
        veriflash_last_error_code(),
        rc,
        "reading it does not change it"
    );
    assert!(!last_message().is_empty());
}

#[test]
fn the_last_error_belongs_to_its_thread() {
    let fx = Fixture::new();
    let trust = fx.trust();
    let (rc, _report) = verify(&open(&fx.tampered(fx.package_bytes.len() - 1)), &trust);
    assert_eq!(rc, VERIFLASH_INTEGRITY_MISMATCH);
    std::thread::spawn(|| {
        assert_eq!(veriflash_last_error_code(), VERIFLASH_OK);
        assert_eq!(last_message(), "");
    })
    .join()
    .unwrap();
    assert_eq!(veriflash_last_error_code(), VERIFLASH_INTEGRITY_MISMATCH);
}

// ---------------------------------------------------------------------------------------------
// Read callbacks.

struct Source {
    bytes: Vec<u8>,
    pos: usize,
    /// Fail once this many bytes were served.
    fail_at: usize,
    calls: usize,
}

unsafe extern "C" fn read_source(
    userdata: *mut c_void,
    buf: *mut u8,
    len: usize,
    out_read: *mut usize,
) -> c_int {
    // SAFETY: the tests pass a live `Source` as userdata, used by this thread only.
    let source = unsafe { &mut *userdata.cast::<Source>() };
    source.calls += 1;
    if source.pos >= source.fail_at {
        return 5; // EIO
    }
    let end = source.bytes.len().min(source.pos + len).min(source.fail_at);
    let n = end - source.pos;
    // SAFETY: the library passes `buf` writable for `len >= n` bytes and a writable `out_read`.
    unsafe {
        ptr::copy_nonoverlapping(source.bytes[source.pos..end].as_ptr(), buf, n);
        *out_read = n;
    }
    source.pos = end;
    0
}

fn open_reader(source: &mut Source) -> (veriflash_result, Package) {
    let mut package = ptr::null_mut();
    // SAFETY: `read_source` follows `veriflash_read_cb`; `source` outlives the package.
    let rc = unsafe {
        veriflash_package_open_reader(
            Some(read_source),
            ptr::from_mut(source).cast(),
            &raw mut package,
        )
    };
    (rc, Package(package))
}

#[test]
fn a_package_read_through_a_callback_verifies() {
    let fx = Fixture::new();
    let trust = fx.trust();
    let mut source = Source {
        bytes: fx.package_bytes.clone(),
        pos: 0,
        fail_at: usize::MAX,
        calls: 0,
    };
    let (rc, package) = open_reader(&mut source);
    assert_eq!(rc, VERIFLASH_OK, "{}", last_message());
    let (rc, report) = verify(&package, &trust);
    assert_eq!(rc, VERIFLASH_OK, "{}", last_message());
    assert!(!report.0.is_null());
    assert_eq!(source.pos, fx.package_bytes.len(), "read to the end");
}

#[test]
fn a_read_callback_that_fails_gives_the_io_code() {
    let fx = Fixture::new();
    let trust = fx.trust();
    // Fails at once: open reports it.
    let mut source = Source {
        bytes: fx.package_bytes.clone(),
        pos: 0,
        fail_at: 0,
        calls: 0,
    };
    let (rc, package) = open_reader(&mut source);
    assert_eq!(rc, VERIFLASH_IO, "{}", last_message());
    assert!(package.0.is_null());
    assert!(
        last_message().contains("read callback"),
        "{}",
        last_message()
    );

    // Fails in the payload: verify reports it.
    let mut source = Source {
        bytes: fx.package_bytes.clone(),
        pos: 0,
        fail_at: fx.package_bytes.len() / 2,
        calls: 0,
    };
    let (rc, package) = open_reader(&mut source);
    assert_eq!(rc, VERIFLASH_OK, "{}", last_message());
    let (rc, report) = verify(&package, &trust);
    assert_eq!(rc, VERIFLASH_IO, "{}", last_message());
    assert!(report.0.is_null());
    let calls = source.calls;
    drop(package);
    assert_eq!(source.calls, calls, "not called after the package is freed");
}

#[test]
fn a_read_callback_that_overstates_its_count_is_refused() {
    unsafe extern "C" fn liar(_: *mut c_void, _: *mut u8, len: usize, out: *mut usize) -> c_int {
        // SAFETY: the library passes a writable `out_read`.
        unsafe { *out = len + 1 };
        0
    }
    let mut package = ptr::null_mut();
    // SAFETY: `liar` follows the callback's signature and never touches `buf`.
    let rc =
        unsafe { veriflash_package_open_reader(Some(liar), ptr::null_mut(), &raw mut package) };
    assert_eq!(rc, VERIFLASH_IO, "{}", last_message());
    assert!(package.is_null());
}

// ---------------------------------------------------------------------------------------------
// Flashing.

#[derive(Default)]
struct Seen {
    kinds: Vec<veriflash_event_kind>,
    phases_finished: Vec<veriflash_phase>,
    progress: usize,
    last_done: u64,
    total: u64,
    finished_code: Option<veriflash_result>,
    cancel_after_progress: Option<usize>,
    images: Vec<String>,
}

unsafe extern "C" fn on_event(userdata: *mut c_void, event: *const veriflash_event) -> c_int {
    // SAFETY: the tests pass a live `Seen` as userdata; the library passes a valid event for
    // the duration of the call.
    let (seen, event) = unsafe { (&mut *userdata.cast::<Seen>(), &*event) };
    seen.kinds.push(event.kind);
    match event.kind {
        VERIFLASH_EVENT_PHASE_FINISHED => seen.phases_finished.push(event.phase),
        VERIFLASH_EVENT_PROGRESS => {
            seen.progress += 1;
            assert!(event.done >= seen.last_done, "progress never goes back");
            seen.last_done = event.done;
            seen.total = event.total;
            let image = text(event.image);
            if seen.images.last() != Some(&image) {
                seen.images.push(image);
            }
        }
        VERIFLASH_EVENT_FINISHED => seen.finished_code = Some(event.code),
        _ => {}
    }
    match seen.cancel_after_progress {
        Some(n) if seen.progress >= n => VERIFLASH_CANCEL,
        _ => VERIFLASH_CONTINUE,
    }
}

fn flash(fx: &Fixture, trust: &Trust, seen: &mut Seen) -> (veriflash_result, Report) {
    let package = open(&fx.package);
    let target = fx.target();
    let mut report = ptr::null_mut();
    // SAFETY: live handles, a NUL-terminated target, `on_event` follows the callback's
    // signature with a live `Seen`, and a writable local.
    let rc = unsafe {
        veriflash_flash(
            package.0,
            trust.0,
            target.as_ptr(),
            Some(on_event),
            ptr::from_mut(seen).cast(),
            &raw mut report,
        )
    };
    (rc, Report(report))
}

#[test]
fn flashing_reports_progress_and_switches_the_slot() {
    let fx = Fixture::new();
    let trust = fx.trust();
    let target = fx.target();
    assert_eq!(active_slot(&status(&target)), VERIFLASH_SLOT_A);

    let mut seen = Seen::default();
    let (rc, report) = flash(&fx, &trust, &mut seen);
    assert_eq!(rc, VERIFLASH_OK, "{}", last_message());
    assert!(!report.0.is_null());
    assert_eq!(
        seen.phases_finished,
        [
            VERIFLASH_PHASE_SIGNATURE,
            VERIFLASH_PHASE_PREFLIGHT,
            VERIFLASH_PHASE_STAGING,
            VERIFLASH_PHASE_FLASH,
            VERIFLASH_PHASE_READ_BACK,
            VERIFLASH_PHASE_COMMIT
        ]
    );
    assert!(seen.progress >= 30, "one event per 4 KiB chunk");
    assert_eq!(seen.last_done, 130_000);
    assert_eq!(seen.total, 130_000);
    assert_eq!(seen.images, ["boot", "rootfs"]);
    assert_eq!(seen.finished_code, Some(VERIFLASH_OK));
    assert_eq!(seen.kinds.last(), Some(&VERIFLASH_EVENT_FINISHED));

    let st = status(&target);
    assert_eq!(active_slot(&st), VERIFLASH_SLOT_B);
    // SAFETY: a live status and writable locals.
    unsafe {
        let mut floor = 0u64;
        assert_eq!(
            veriflash_status_security_floor(st.0, &raw mut floor),
            VERIFLASH_OK
        );
        assert_eq!(floor, 7);
        let mut version = ptr::null();
        assert_eq!(
            veriflash_status_installed_version(st.0, &raw mut version),
            VERIFLASH_OK
        );
        assert_eq!(text(version), "2.7.0");
        let (mut recorded, mut code, mut message) = (false, 99, ptr::null());
        assert_eq!(
            veriflash_status_last_result(st.0, &raw mut recorded, &raw mut code, &raw mut message),
            VERIFLASH_OK
        );
        assert!(recorded);
        assert_eq!(code, VERIFLASH_OK);
        let mut interrupted = true;
        assert_eq!(
            veriflash_status_interrupted(st.0, &raw mut interrupted),
            VERIFLASH_OK
        );
        assert!(!interrupted);
        let mut s = ptr::null();
        assert_eq!(veriflash_status_product(st.0, &raw mut s), VERIFLASH_OK);
        assert_eq!(text(s), "acme-hotspot-x1");
        assert_eq!(veriflash_status_chipset(st.0, &raw mut s), VERIFLASH_OK);
        assert_eq!(text(s), "mdm9607");
        assert_eq!(
            veriflash_status_hardware_revision(st.0, &raw mut s),
            VERIFLASH_OK
        );
        assert_eq!(text(s), "r2");
    }

    // The floor is 7 now: a package at 6 is refused before anything is written.
    let older = fx.dir.path().join("older.vfp");
    std::fs::write(&older, package_bytes(&fx.key, 6)).unwrap();
    let package = open(&older);
    let mut out = ptr::null_mut();
    // SAFETY: live handles, a NUL-terminated target, no callback, a writable local.
    let rc = unsafe {
        veriflash_flash(
            package.0,
            trust.0,
            target.as_ptr(),
            None,
            ptr::null_mut(),
            &raw mut out,
        )
    };
    assert_eq!(rc, VERIFLASH_DOWNGRADE_REFUSED, "{}", last_message());
    assert!(out.is_null());
    assert_eq!(active_slot(&status(&target)), VERIFLASH_SLOT_B);
}

#[test]
fn a_progress_callback_that_cancels_leaves_the_active_slot() {
    let fx = Fixture::new();
    let trust = fx.trust();
    let target = fx.target();
    let mut seen = Seen {
        cancel_after_progress: Some(3),
        ..Seen::default()
    };
    let (rc, report) = flash(&fx, &trust, &mut seen);
    assert_eq!(rc, VERIFLASH_CANCELLED, "{}", last_message());
    assert_eq!(rc, 60);
    assert!(report.0.is_null());
    assert_eq!(seen.progress, 3, "no chunk written after the cancel");
    assert_eq!(seen.finished_code, Some(VERIFLASH_CANCELLED));
    assert!(!seen.phases_finished.contains(&VERIFLASH_PHASE_COMMIT));

    let st = status(&target);
    assert_eq!(
        active_slot(&st),
        VERIFLASH_SLOT_A,
        "the old slot still boots"
    );
    let (mut recorded, mut code, mut message) = (false, 0, ptr::null());
    // SAFETY: a live status and writable locals.
    let rc = unsafe {
        veriflash_status_last_result(st.0, &raw mut recorded, &raw mut code, &raw mut message)
    };
    assert_eq!(rc, VERIFLASH_OK);
    assert!(recorded);
    assert_eq!(code, VERIFLASH_CANCELLED);
    assert!(!text(message).is_empty());
    assert!(
        FileDevice::open(&fx.device)
            .unwrap()
            .current_status()
            .info
            .active_slot
            == Some(Slot::A)
    );
}

#[test]
fn a_cancel_at_the_first_event_still_writes_nothing() {
    let fx = Fixture::new();
    let trust = fx.trust();
    let mut seen = Seen {
        cancel_after_progress: Some(0),
        ..Seen::default()
    };
    let (rc, _report) = flash(&fx, &trust, &mut seen);
    assert_eq!(rc, VERIFLASH_CANCELLED, "{}", last_message());
    assert_eq!(seen.progress, 0);
    assert_eq!(active_slot(&status(&fx.target())), VERIFLASH_SLOT_A);
}

#[test]
fn a_tampered_package_is_never_flashed() {
    let fx = Fixture::new();
    let trust = fx.trust();
    let tampered = fx.tampered(fx.package_bytes.len() - 10);
    let target = fx.target();
    let (rc, _) = flash_to(&open(&tampered), &trust, &target);
    assert_eq!(rc, VERIFLASH_INTEGRITY_MISMATCH, "{}", last_message());
    assert_eq!(active_slot(&status(&target)), VERIFLASH_SLOT_A);
}

#[test]
fn a_delta_for_another_installed_version_gets_the_source_mismatch_code_and_writes_nothing() {
    let fx = Fixture::new();
    let trust = fx.trust();
    // A delta from the fixture's package (version 7) to version 8, whose rootfs changed.
    let base = veriflash_core::DeltaBase::from_package(
        &fx.package,
        &veriflash_core::Trust::new(veriflash_core::AnchorSet::new(
            std::iter::once(fx.key.verifying_key()).collect(),
            1,
        ))
        .verifier(),
    )
    .unwrap();
    let mut spec = unsigned_package(7).manifest().clone();
    spec.software_version = "2.8.0".into();
    let mut rootfs = bytes(90_000, 2);
    rootfs[50_000] ^= 0xFF;
    let mut images = vec![
        ImageSource::new("boot", "boot", ImageData::Bytes(bytes(40_000, 1))),
        ImageSource::new("rootfs", "system", ImageData::Bytes(rootfs)),
    ];
    for image in &mut images {
        image.chunk_size = 4096;
    }
    let unsigned = UnsignedPackage::prepare_delta(
        PackageSpec {
            product: spec.product,
            chipset: spec.chipset,
            hardware_revisions: vec![],
            software_version: spec.software_version,
            security_version: 8,
            images,
        },
        &veriflash_core::PackOptions::new(),
        &base,
    )
    .unwrap();
    let entry = unsigned.sign(&fx.key).unwrap();
    let delta = fx.dir.path().join("delta.vfp");
    std::fs::write(&delta, signed(&unsigned, vec![entry])).unwrap();
    // The device runs nothing yet: refused before a byte is written, with the remedy.
    let target = fx.target();
    let before = std::fs::read(&fx.device).unwrap();
    let (rc, _) = flash_to(&open(&delta), &trust, &target);
    assert_eq!(rc, VERIFLASH_SOURCE_MISMATCH, "{}", last_message());
    assert_eq!(rc, u32::from(ErrorKind::SourceMismatch.code()));
    assert!(last_remedy().contains("full package"), "{}", last_remedy());
    assert_eq!(std::fs::read(&fx.device).unwrap(), before);
    // Running version 7, the delta installs.
    assert_eq!(
        flash_to(&open(&fx.package), &trust, &target).0,
        VERIFLASH_OK
    );
    let (rc, _) = flash_to(&open(&delta), &trust, &target);
    assert_eq!(rc, VERIFLASH_OK, "{}", last_message());
    // Checked against the device's record (as `--source-check recorded`): the device runs 2.8.0
    // now, and records it, so the delta from 7 is refused before a byte is written.
    let recorded = Options::new();
    // SAFETY: live options.
    let rc =
        unsafe { veriflash_options_set_source_check(recorded.0, VERIFLASH_SOURCE_CHECK_RECORDED) };
    assert_eq!(rc, VERIFLASH_OK);
    let before = std::fs::read(&fx.device).unwrap();
    let (rc, _) = flash_with(&open(&delta), &trust, &recorded, &target);
    assert_eq!(rc, VERIFLASH_SOURCE_MISMATCH, "{}", last_message());
    assert!(last_message().contains("recorded"), "{}", last_message());
    assert_eq!(std::fs::read(&fx.device).unwrap(), before);
}

#[test]
fn an_unknown_target_does_not_spend_the_package() {
    let fx = Fixture::new();
    let trust = fx.trust();
    let package = open(&fx.package);
    let (rc, _) = flash_to(&package, &trust, c"nope:/dev/null");
    assert_eq!(rc, VERIFLASH_INVALID_INPUT, "{}", last_message());
    assert_eq!(verify(&package, &trust).0, VERIFLASH_OK);
    let mut bytes = Vec::new();
    std::fs::File::open(&fx.package)
        .unwrap()
        .read_to_end(&mut bytes)
        .unwrap();
    assert_eq!(bytes, fx.package_bytes);
}

// ---------------------------------------------------------------------------------------------
// Trust rotation.

#[test]
fn a_flashed_rotation_is_saved_and_then_the_only_trust() {
    let f = Fixture::new();
    let new_key = SigningKey::generate_p256().unwrap();
    let next =
        veriflash_core::AnchorSet::new(std::iter::once(new_key.verifying_key()).collect(), 1)
            .with_version(4);
    // A package rotating to `next`, signed by the current key and the new one.
    let mut image = ImageSource::new("boot", "boot", ImageData::Bytes(bytes(10_000, 3)));
    image.chunk_size = 4096;
    let unsigned = UnsignedPackage::prepare(PackageSpec {
        product: "acme-hotspot-x1".into(),
        chipset: "mdm9607".into(),
        hardware_revisions: vec![],
        software_version: "3.0".into(),
        security_version: 8,
        images: vec![image],
    })
    .unwrap()
    .with_trust_rotation(next.to_rotation().unwrap())
    .unwrap();
    let block = SignatureBlock {
        entries: vec![
            unsigned.sign(&f.key).unwrap(),
            unsigned.sign(&new_key).unwrap(),
        ],
    };
    let mut pkg = Vec::new();
    unsigned.write_to(&block, &mut pkg).unwrap();
    let rotating = f.dir.path().join("rotate.vfp");
    std::fs::write(&rotating, &pkg).unwrap();
    let anchors = c_path(&f.dir.path().join("anchors.der"));

    // A report without a rotation says 0 and has nothing to save.
    let (rc, plain) = verify(&open(&f.package), &f.trust());
    assert_eq!(rc, VERIFLASH_OK);
    let mut version = u64::MAX;
    // SAFETY: a live report and a writable local / a NUL-terminated path.
    unsafe {
        assert_eq!(
            veriflash_report_rotation_version(plain.0, &raw mut version),
            VERIFLASH_OK
        );
        assert_eq!(
            veriflash_report_save_rotation(plain.0, anchors.as_ptr()),
            VERIFLASH_INVALID_INPUT
        );
    }
    assert_eq!(version, 0);

    let (rc, report) = flash_to(&open(&rotating), &f.trust(), &f.target());
    assert_eq!(rc, VERIFLASH_OK, "{}", last_message());
    // SAFETY: a live report, a writable local, a NUL-terminated path.
    unsafe {
        assert_eq!(
            veriflash_report_rotation_version(report.0, &raw mut version),
            VERIFLASH_OK
        );
        assert_eq!(
            veriflash_report_save_rotation(report.0, anchors.as_ptr()),
            VERIFLASH_OK,
            "{}",
            last_message()
        );
    }
    assert_eq!(version, 4);

    // The saved set loads as the trust store: the old key's package is no longer trusted,
    // and the rotation cannot be replayed.
    let mut saved = ptr::null_mut();
    // SAFETY: a NUL-terminated path and a writable local.
    let rc = unsafe { veriflash_trust_load(anchors.as_ptr(), &raw mut saved) };
    assert_eq!(rc, VERIFLASH_OK, "{}", last_message());
    let saved = Trust(saved);
    assert_eq!(
        verify(&open(&f.package), &saved).0,
        VERIFLASH_UNKNOWN_SIGNER
    );
    assert_eq!(
        verify(&open(&rotating), &saved).0,
        VERIFLASH_ROTATION_REFUSED
    );
}

// ---------------------------------------------------------------------------------------------
// MDM9x07 targets.

#[test]
fn a_modem_package_flashes_to_the_emulated_mdm9607_through_the_c_api() {
    use veriflash_mdm9x07::emulator::test_programmer;
    use veriflash_test_support::{modem_package, pseudo_random};

    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::generate_p256().unwrap();
    let pkg = modem_package(
        &key,
        &[
            ("programmer", test_programmer(&pseudo_random(9_000, 1))),
            ("sbl", pseudo_random(100_000, 2)),
            ("boot", pseudo_random(300_000, 3)),
        ],
    )
    .unwrap();
    let path = dir.path().join("modem.vfp");
    std::fs::write(&path, &pkg).unwrap();
    let target = CString::new("mdm9x07:emulator").unwrap();
    let (rc, report) = flash_to(&open(&path), &trust_for(&key), &target);
    assert_eq!(rc, VERIFLASH_OK, "{}", last_message());
    let mut images = 0;
    // SAFETY: a live report and a writable local.
    let rc = unsafe { veriflash_report_image_count(report.0, &raw mut images) };
    assert_eq!((rc, images), (VERIFLASH_OK, 3));

    // A fresh emulator answers status; an unknown mdm9x07 form is refused with a message.
    let st = status(&target);
    assert_eq!(active_slot(&st), VERIFLASH_SLOT_NONE);
    let bad = CString::new("mdm9x07:bluetooth").unwrap();
    let mut out = ptr::null_mut();
    // SAFETY: a NUL-terminated target and a writable local.
    let rc = unsafe { veriflash_device_status(bad.as_ptr(), &raw mut out) };
    assert_ne!(rc, VERIFLASH_OK);
    assert!(out.is_null());
    assert!(last_message().contains("mdm9x07:"), "{}", last_message());
}

// ---------------------------------------------------------------------------------------------
// The trust configuration: clock and threshold, as the CLI's `--no-clock` and `--threshold`.

/// The fixture's package signed by the parity PKI's leaf certificate (valid for 30 days, or
/// with `expired` expired yesterday) instead, and the trust store of its root certificate.
fn certified_package(fx: &Fixture, expired: bool) -> (PathBuf, Trust) {
    let pki_dir = fx.dir.path().join(format!("pki-{expired}"));
    std::fs::create_dir(&pki_dir).unwrap();
    let pki = Pki::new(&pki_dir);
    let (key, chain) = pki.leaf(expired);
    // The expired one is made on purpose, for the verifier to refuse.
    let unsigned = unsigned_package(7).allow_expired_certificates(expired);
    let entry = unsigned
        .sign_with_certificates(key, chain.to_vec())
        .unwrap();
    let path = fx.dir.path().join(format!("certified-{expired}.vfp"));
    std::fs::write(&path, signed(&unsigned, vec![entry])).unwrap();
    let root = c_path(&pki.root);
    let mut trust = ptr::null_mut();
    // SAFETY: a NUL-terminated path and a writable local.
    let rc = unsafe { veriflash_trust_load(root.as_ptr(), &raw mut trust) };
    assert_eq!(rc, VERIFLASH_OK, "{}", last_message());
    (path, Trust(trust))
}

fn set_time(trust: &Trust, time: veriflash_trusted_time, unix_seconds: u64) -> veriflash_result {
    // SAFETY: a live trust store no other call uses.
    unsafe { veriflash_trust_set_time(trust.0, time, unix_seconds) }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn an_expired_leaf_is_refused_by_default_and_accepted_without_a_clock() {
    let fx = Fixture::new();
    let (package, trust) = certified_package(&fx, true);
    let target = fx.target();

    // The default is the system clock, as for `veriflash verify` and `flash`: 27, nothing
    // written.
    let (rc, report) = verify(&open(&package), &trust);
    assert_eq!(rc, VERIFLASH_CERTIFICATE_EXPIRED, "{}", last_message());
    assert_eq!(rc, 27);
    assert!(report.0.is_null());
    let (rc, report) = flash_to(&open(&package), &trust, &target);
    assert_eq!(rc, VERIFLASH_CERTIFICATE_EXPIRED, "{}", last_message());
    assert!(report.0.is_null());
    assert_eq!(active_slot(&status(&target)), VERIFLASH_SLOT_A);

    // No trusted clock (`--no-clock`): the dates are not checked.
    assert_eq!(
        set_time(&trust, VERIFLASH_TRUSTED_TIME_NONE, 0),
        VERIFLASH_OK
    );
    let (rc, _report) = verify(&open(&package), &trust);
    assert_eq!(rc, VERIFLASH_OK, "{}", last_message());
    let (rc, _report) = flash_to(&open(&package), &trust, &target);
    assert_eq!(rc, VERIFLASH_OK, "{}", last_message());
    assert_eq!(active_slot(&status(&target)), VERIFLASH_SLOT_B);

    // And back to the system clock.
    assert_eq!(
        set_time(&trust, VERIFLASH_TRUSTED_TIME_SYSTEM, 0),
        VERIFLASH_OK
    );
    assert_eq!(
        verify(&open(&package), &trust).0,
        VERIFLASH_CERTIFICATE_EXPIRED
    );
}

#[test]
fn a_given_trusted_time_judges_the_certificate_dates() {
    let fx = Fixture::new();
    let (package, trust) = certified_package(&fx, false);
    assert_eq!(
        verify(&open(&package), &trust).0,
        VERIFLASH_OK,
        "{}",
        last_message()
    );
    let day = 24 * 3600;
    for (at, expected) in [
        (now(), VERIFLASH_OK),
        (now() + 60 * day, VERIFLASH_CERTIFICATE_EXPIRED),
        (now() - 60 * day, VERIFLASH_CERTIFICATE_EXPIRED),
    ] {
        assert_eq!(
            set_time(&trust, VERIFLASH_TRUSTED_TIME_AT, at),
            VERIFLASH_OK
        );
        let (rc, _report) = verify(&open(&package), &trust);
        assert_eq!(rc, expected, "at {at}: {}", last_message());
    }

    // Refused settings leave the store as it was (still 60 days ago).
    assert_eq!(
        set_time(&trust, VERIFLASH_TRUSTED_TIME_NONE, 5),
        VERIFLASH_INVALID_ARGUMENT
    );
    assert!(
        last_message().contains("unix_seconds"),
        "{}",
        last_message()
    );
    assert_eq!(set_time(&trust, 3, 0), VERIFLASH_INVALID_ARGUMENT);
    assert!(last_message().contains("'time'"), "{}", last_message());
    assert_eq!(
        verify(&open(&package), &trust).0,
        VERIFLASH_CERTIFICATE_EXPIRED
    );
}

#[test]
fn a_threshold_above_the_signers_is_refused() {
    let fx = Fixture::new();
    let trust = fx.trust();
    let set_threshold = |k: usize| {
        // SAFETY: a live trust store no other call uses.
        unsafe { veriflash_trust_set_threshold(trust.0, k) }
    };
    assert_eq!(set_threshold(2), VERIFLASH_OK);
    let (rc, _report) = verify(&open(&fx.package), &trust);
    assert_eq!(rc, VERIFLASH_THRESHOLD_NOT_MET, "{}", last_message());
    let (rc, _report) = flash_to(&open(&fx.package), &trust, &fx.target());
    assert_eq!(rc, VERIFLASH_THRESHOLD_NOT_MET, "{}", last_message());
    assert_eq!(active_slot(&status(&fx.target())), VERIFLASH_SLOT_A);

    // Signed by two trusted keys, it passes.
    let second = SigningKey::generate_p256().unwrap();
    let pem = format!(
        "{}{}",
        fx.key.verifying_key().to_public_key_pem(),
        second.verifying_key().to_public_key_pem()
    );
    let mut both = ptr::null_mut();
    // SAFETY: `pem` is readable for its length; `both` is a writable local.
    let rc = unsafe { veriflash_trust_from_pem(pem.as_ptr(), pem.len(), &raw mut both) };
    assert_eq!(rc, VERIFLASH_OK);
    let both = Trust(both);
    // SAFETY: a live trust store no other call uses.
    let rc = unsafe { veriflash_trust_set_threshold(both.0, 2) };
    assert_eq!(rc, VERIFLASH_OK);
    let unsigned = unsigned_package(7);
    let entries = vec![
        unsigned.sign(&fx.key).unwrap(),
        unsigned.sign(&second).unwrap(),
    ];
    let two = fx.dir.path().join("two.vfp");
    std::fs::write(&two, signed(&unsigned, entries)).unwrap();
    assert_eq!(
        verify(&open(&two), &both).0,
        VERIFLASH_OK,
        "{}",
        last_message()
    );
    assert_eq!(
        verify(&open(&fx.package), &both).0,
        VERIFLASH_THRESHOLD_NOT_MET
    );

    // 0: the set's own threshold again (one signature).
    assert_eq!(set_threshold(0), VERIFLASH_OK);
    assert_eq!(verify(&open(&fx.package), &trust).0, VERIFLASH_OK);
}

// ---------------------------------------------------------------------------------------------
// Install options: state and configuration directories, reconnect wait.

#[test]
fn options_refuse_bad_arguments() {
    let options = Options::new();
    let bad = CString::new(b"/tmp/\xff".to_vec()).unwrap();
    // SAFETY: live options and NUL-terminated strings (or NULL where allowed).
    unsafe {
        assert_eq!(
            veriflash_options_set_state_dir(options.0, c"".as_ptr()),
            VERIFLASH_INVALID_ARGUMENT
        );
        assert!(last_message().contains("NULL"), "{}", last_message());
        assert_eq!(
            veriflash_options_set_config_dir(options.0, bad.as_ptr()),
            VERIFLASH_INVALID_UTF8
        );
        assert_eq!(
            veriflash_options_set_state_dir(options.0, ptr::null()),
            VERIFLASH_OK,
            "NULL: no state directory"
        );
        assert_eq!(
            veriflash_options_set_config_dir(options.0, ptr::null()),
            VERIFLASH_OK
        );
        assert_eq!(
            veriflash_options_set_reconnect_wait(options.0, VERIFLASH_RECONNECT_WAIT_MAX + 1),
            VERIFLASH_INVALID_ARGUMENT
        );
        assert_eq!(
            veriflash_options_set_reconnect_wait(options.0, VERIFLASH_RECONNECT_WAIT_MAX),
            VERIFLASH_OK
        );
        assert_eq!(
            veriflash_options_set_reconnect_wait(options.0, 0),
            VERIFLASH_OK,
            "0: never wait"
        );
        assert_eq!(
            veriflash_options_set_source_check(options.0, 2),
            VERIFLASH_INVALID_ARGUMENT
        );
        assert_eq!(
            veriflash_options_set_source_check(ptr::null_mut(), VERIFLASH_SOURCE_CHECK_WHOLE),
            VERIFLASH_NULL_POINTER
        );
        assert_eq!(
            veriflash_options_set_source_check(options.0, VERIFLASH_SOURCE_CHECK_RECORDED),
            VERIFLASH_OK
        );
    }
    // Options with every setting flash a file device as the defaults do.
    let fx = Fixture::new();
    let (rc, report) = flash_with(&open(&fx.package), &fx.trust(), &options, &fx.target());
    assert_eq!(rc, VERIFLASH_OK, "{}", last_message());
    assert!(!report.0.is_null());
}

/// A package for the emulated MDM9607 at `security_version`.
fn modem_package_at(key: &SigningKey, security_version: u64) -> Vec<u8> {
    use veriflash_mdm9x07::emulator::test_programmer;
    use veriflash_test_support::pseudo_random;

    let images = [
        ("programmer", test_programmer(&pseudo_random(9_000, 1))),
        ("sbl", pseudo_random(100_000, 2)),
        ("boot", pseudo_random(300_000, security_version)),
    ]
    .into_iter()
    .map(|(partition, bytes)| {
        let mut image = ImageSource::new(partition, partition, ImageData::Bytes(bytes));
        image.chunk_size = 16 * 1024;
        image
    })
    .collect();
    let unsigned = UnsignedPackage::prepare(PackageSpec {
        product: veriflash_test_support::MODEM_PRODUCT.into(),
        chipset: veriflash_test_support::MODEM_CHIPSET.into(),
        hardware_revisions: vec![veriflash_test_support::MODEM_REVISION.into()],
        software_version: format!("2.{security_version}.0"),
        security_version,
        images,
    })
    .unwrap();
    veriflash_test_support::sign_and_write(&unsigned, &[key]).unwrap()
}

/// An emulated MDM9607 served on a pseudo-terminal by a thread, reached as a real modem's
/// qcserial tty is (`mdm9x07:serial:PATH`): unlike `mdm9x07:emulator`, a device with a lasting
/// identity, its chip serial.
struct ServedModem {
    target: std::ffi::CString,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl ServedModem {
    fn start() -> Self {
        use veriflash_mdm9x07::emulator::{Emulator, EmulatorConfig};
        let server = veriflash_mdm9x07::pty::PtyServer::open().unwrap();
        let target =
            std::ffi::CString::new(format!("mdm9x07:serial:{}", server.slave_path().display()))
                .unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut emulator = Emulator::new(EmulatorConfig::mdm9607()).unwrap();
            let _ = server.serve(
                &mut emulator,
                &|| flag.load(std::sync::atomic::Ordering::Relaxed),
                &mut |_| {},
            );
        });
        Self {
            target,
            stop,
            thread,
        }
    }

    fn stop(self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap();
    }
}

#[test]
fn the_state_dir_keeps_the_floor_of_a_modem_that_cannot() {
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::generate_p256().unwrap();
    let trust = trust_for(&key);
    let write = |name: &str, security_version| {
        let path = dir.path().join(name);
        std::fs::write(&path, modem_package_at(&key, security_version)).unwrap();
        path
    };
    let (v7, v6) = (write("v7.vfp", 7), write("v6.vfp", 6));
    let state = dir.path().join("state");
    let options = Options::with_state_dir(&state);
    let floors = || -> Vec<std::path::PathBuf> {
        std::fs::read_dir(state.join("devices"))
            .map(|entries| {
                entries
                    .map(|e| e.unwrap().path())
                    .filter(|p| p.extension().is_some_and(|e| e == "floor"))
                    .collect()
            })
            .unwrap_or_default()
    };

    // `mdm9x07:emulator` is a new, blank device at every open: nothing to remember.
    let (rc, _report) = flash_with(&open(&v7), &trust, &options, c"mdm9x07:emulator");
    assert_eq!(rc, VERIFLASH_OK, "{}", last_message());
    assert!(floors().is_empty(), "{:?}", floors());

    // A modem on a tty keeps no floor in download mode: the host does, in STATE_DIR/devices,
    // under the chip's serial number.
    let modem = ServedModem::start();
    let (rc, _report) = flash_with(&open(&v7), &trust, &options, &modem.target);
    modem.stop();
    assert_eq!(rc, VERIFLASH_OK, "{}", last_message());
    let records = floors();
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(std::fs::read_to_string(&records[0]).unwrap().trim(), "7");

    // The same modem again (same serial): an older package is a downgrade with the record;
    // without a state directory (the defaults) nothing remembers the floor.
    let modem = ServedModem::start();
    let (rc, _report) = flash_with(&open(&v6), &trust, &options, &modem.target);
    modem.stop();
    assert_eq!(rc, VERIFLASH_DOWNGRADE_REFUSED, "{}", last_message());
    let modem = ServedModem::start();
    let (rc, _report) = flash_to(&open(&v6), &trust, &modem.target);
    modem.stop();
    assert_eq!(rc, VERIFLASH_OK, "{}", last_message());
}

/// The products table the MDM9x07 plugin reads from the configuration directory.
const PRODUCTS: &str = "mdm9x07-products.toml";

#[test]
fn a_config_dir_is_accepted_and_a_modem_flashes_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::generate_p256().unwrap();
    let config = dir.path().join("config");
    std::fs::create_dir(&config).unwrap();
    std::fs::write(
        config.join(PRODUCTS),
        "[[product]]\noem_id = 0x0051\nmodel_id = 0x0102\nproduct = \"acme-router-z9\"\nhardware_revision = \"r3\"\n",
    )
    .unwrap();
    let options = Options::with_state_dir(&dir.path().join("state"));
    let c_config = c_path(&config);
    // SAFETY: live options and a NUL-terminated path.
    let rc = unsafe { veriflash_options_set_config_dir(options.0, c_config.as_ptr()) };
    assert_eq!(rc, VERIFLASH_OK);
    let path = dir.path().join("modem.vfp");
    std::fs::write(&path, modem_package_at(&key, 7)).unwrap();
    let (rc, _report) = flash_with(
        &open(&path),
        &trust_for(&key),
        &options,
        c"mdm9x07:emulator",
    );
    assert_eq!(rc, VERIFLASH_OK, "{}", last_message());
}

#[test]
fn a_malformed_products_table_fails_the_flash_before_the_package_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::generate_p256().unwrap();
    let config = dir.path().join("config");
    std::fs::create_dir(&config).unwrap();
    std::fs::write(config.join(PRODUCTS), "[[product]]\noem = \"misspelt\"\n").unwrap();
    let options = Options::new();
    let c_config = c_path(&config);
    // SAFETY: live options and a NUL-terminated path.
    let rc = unsafe { veriflash_options_set_config_dir(options.0, c_config.as_ptr()) };
    assert_eq!(rc, VERIFLASH_OK);
    let path = dir.path().join("modem.vfp");
    std::fs::write(&path, modem_package_at(&key, 7)).unwrap();
    let trust = trust_for(&key);
    let package = open(&path);
    let (rc, report) = flash_with(&package, &trust, &options, c"mdm9x07:emulator");
    assert_eq!(rc, VERIFLASH_INVALID_INPUT, "{}", last_message());
    assert!(last_message().contains(PRODUCTS), "{}", last_message());
    assert!(report.0.is_null());
    assert_eq!(
        verify(&package, &trust).0,
        VERIFLASH_OK,
        "the package was not used"
    );
}

#[test]
fn a_busy_device_does_not_spend_the_package() {
    let fx = Fixture::new();
    let trust = fx.trust();
    let package = open(&fx.package);
    let holder = FileDevice::open(&fx.device).unwrap();
    let (rc, _report) = flash_to(&package, &trust, &fx.target());
    assert_eq!(rc, VERIFLASH_BUSY, "{}", last_message());
    drop(holder);
    let (rc, _report) = flash_to(&package, &trust, &fx.target());
    assert_eq!(rc, VERIFLASH_OK, "{}", last_message());
    assert_eq!(
        flash_to(&package, &trust, &fx.target()).0,
        VERIFLASH_PACKAGE_SPENT
    );
}
