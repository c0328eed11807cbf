//! The parity table (`veriflash_test_support::parity`) through the library's `Updater` and
//! through the C API, called as a C program calls it: the same code for every scenario, and
//! the one the table expects. (The command's parity test holds the CLI to the same table.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::ptr;

use veriflash_ffi::*;
use veriflash_test_support::parity::{Pki, Prepared, SCENARIOS};

fn c_path(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).unwrap()
}

/// The run's package flashed to its target through the C API with the run's state directory,
/// trusting the root certificate at `root`, with or without a trusted clock: the result code.
fn flash_in_c(root: &Path, run: &Prepared, no_clock: bool) -> veriflash_result {
    let (root, package, target, state) = (
        c_path(root),
        c_path(&run.package),
        CString::new(run.target.as_str()).unwrap(),
        c_path(&run.state_dir),
    );
    let (mut trust, mut options, mut opened, mut report) = (
        ptr::null_mut(),
        ptr::null_mut(),
        ptr::null_mut(),
        ptr::null_mut(),
    );
    // SAFETY: NUL-terminated strings and writable locals; every handle made here is freed
    // here, once, after its last use.
    unsafe {
        assert_eq!(
            veriflash_trust_load(root.as_ptr(), &raw mut trust),
            VERIFLASH_OK
        );
        let time = if no_clock {
            VERIFLASH_TRUSTED_TIME_NONE
        } else {
            VERIFLASH_TRUSTED_TIME_SYSTEM
        };
        assert_eq!(veriflash_trust_set_time(trust, time, 0), VERIFLASH_OK);
        assert_eq!(veriflash_options_new(&raw mut options), VERIFLASH_OK);
        assert_eq!(
            veriflash_options_set_state_dir(options, state.as_ptr()),
            VERIFLASH_OK
        );
        let mut rc = veriflash_package_open(package.as_ptr(), &raw mut opened);
        if rc == VERIFLASH_OK {
            rc = veriflash_flash_with_options(
                opened,
                trust,
                options,
                target.as_ptr(),
                None,
                ptr::null_mut(),
                &raw mut report,
            );
        }
        veriflash_report_free(report);
        veriflash_package_free(opened);
        veriflash_options_free(options);
        veriflash_trust_free(trust);
        rc
    }
}

#[test]
fn the_c_api_and_the_library_give_every_scenario_the_same_code() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new(tmp.path());
    for (i, scenario) in SCENARIOS.iter().enumerate() {
        let rust = scenario.run_in_library(&pki, &tmp.path().join(format!("rust{i}")));

        let run = scenario.prepare(&pki, &tmp.path().join(format!("c{i}")));
        let c = flash_in_c(&pki.root, &run, scenario.no_clock);
        run.finish()
            .unwrap_or_else(|e| panic!("{}, C: {e}", scenario.name));

        assert_eq!(
            (u32::from(rust), c),
            (u32::from(scenario.code), u32::from(scenario.code)),
            "{}: library {rust}, C {c}",
            scenario.name
        );
    }
}
