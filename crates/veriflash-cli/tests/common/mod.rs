//! Helpers shared by the CLI's integration tests: run the built `veriflash` (and `openssl`) in
//! a directory and read what it printed. Each test binary uses a subset.

#![allow(dead_code, unreachable_pub)]

use std::path::Path;
use std::process::{Command, Output};

/// Runs the `veriflash` binary of this build with `args` in `cwd`. Its state directory (the
/// MDM9x07 journals and backups) is `cwd/.veriflash-state`, never the user's own.
pub fn veriflash(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_veriflash"))
        .args(args)
        .current_dir(cwd)
        .env("VERIFLASH_STATE_DIR", cwd.join(".veriflash-state"))
        .output()
        .expect("run veriflash")
}

/// The stdout of a run that must have succeeded (otherwise fails the test, showing both
/// streams).
pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed ({:?}): {}\n{}",
        out.status,
        stdout(out),
        stderr(out)
    );
    stdout(out)
}

/// The exit status of a run that ended normally (not by a signal).
pub fn code(out: &Output) -> i32 {
    out.status.code().expect("exited normally")
}

/// What a run printed on stdout.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What a run printed on stderr.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs the openssl CLI in `cwd`; it must succeed.
pub fn openssl(args: &[&str], cwd: &Path) -> Output {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        stderr(&out)
    );
    out
}

/// Both streams, stdout then stderr: for assertions on what a person would see.
pub fn text(out: &Output) -> String {
    format!("{}\n{}", stdout(out), stderr(out))
}
