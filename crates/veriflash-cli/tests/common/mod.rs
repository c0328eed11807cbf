//! Helpers shared by the CLI's integration tests: run the built `veriflash` (and `openssl`) in
//! a directory and read what it printed. Each test binary uses a subset.

#![allow(
    dead_code,
    unreachable_pub,
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used
)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::Duration;

/// Runs the `veriflash` binary of this build with `args` in `cwd`. Its state directory (the
/// MDM9x07 journals and backups) is `cwd/.veriflash-state` and its configuration directory
/// `cwd/.veriflash-config`, never the user's own.
pub fn veriflash(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_veriflash"))
        .args(args)
        .current_dir(cwd)
        .env("VERIFLASH_STATE_DIR", cwd.join(".veriflash-state"))
        .env("VERIFLASH_CONFIG_DIR", cwd.join(".veriflash-config"))
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

/// `veriflash emulate mdm9x07 --pty`, killed when dropped.
pub struct Emulated {
    child: Child,
    /// The pseudo-terminal's path (`/dev/pts/N`).
    pub path: String,
    stderr: Receiver<String>,
}

impl Emulated {
    /// Starts `veriflash emulate mdm9x07 --pty` with `extra` arguments and reads its path.
    pub fn start(extra: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_veriflash"))
            .args(["emulate", "mdm9x07", "--pty"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the emulator");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let path = line.trim().to_owned();
        assert!(path.starts_with("/dev/pts/"), "line 1 is the pty: {line:?}");
        let (tx, stderr) = channel();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        Self {
            child,
            path,
            stderr,
        }
    }

    /// `mdm9x07:serial:PATH`.
    pub fn target(&self) -> String {
        format!("mdm9x07:serial:{}", self.path)
    }

    /// Waits until the emulator printed `line` (synchronisation with the other process; the
    /// bound only keeps a broken emulator from hanging the test).
    pub fn saw(&self, line: &str) {
        loop {
            match self.stderr.recv_timeout(Duration::from_secs(60)) {
                Ok(l) if l == line => return,
                Ok(_) => {}
                Err(e) => panic!("the emulator never printed {line:?}: {e}"),
            }
        }
    }
}

impl Drop for Emulated {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
