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

/// Makes the key `vendor.pem` (and `vendor.pub.pem`) in `dir` and signs the package
/// description `manifest` (a path in `dir`) into `out`.
pub fn keygen_and_pack(dir: &Path, manifest: &str, out: &str) {
    ok(&veriflash(&["keygen", "--out", "vendor.pem"], dir));
    ok(&veriflash(
        &[
            "pack",
            "--manifest",
            manifest,
            "--key",
            "vendor.pem",
            "--out",
            out,
        ],
        dir,
    ));
}

/// Serves the files of `dir` over HTTP on 127.0.0.1 (axum + tower-http's `ServeDir`, with
/// `Range`) until the returned runtime is dropped.
pub fn serve_dir(dir: &Path) -> (tokio::runtime::Runtime, std::net::SocketAddr) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback_service(tower_http::services::ServeDir::new(dir));
    runtime.spawn(async move { axum::serve(listener, app).await });
    (runtime, addr)
}

/// A program the tests need: `$ENV_VAR`, else `name` in `PATH` or in `also`; a test without it
/// fails with `install`, the way to get it.
pub fn tool(env_var: &str, name: &str, also: &[&str], install: &str) -> std::path::PathBuf {
    if let Some(path) = std::env::var_os(env_var) {
        return path.into();
    }
    let path_dirs = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    path_dirs
        .into_iter()
        .chain(also.iter().map(std::path::PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| panic!("this test needs {name}: {install} (or set {env_var})"))
}

/// A server process the test started, listening on 127.0.0.1; killed on drop.
pub struct Server {
    child: Child,
    pub addr: std::net::SocketAddr,
}

impl Server {
    /// A port of 127.0.0.1 that was free a moment ago, for servers that take no port 0.
    pub fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    /// Starts `command` (quiet) and waits until it accepts connections on `port`; `log` is read
    /// for the message when it never does.
    pub fn start(mut command: Command, port: u16, log: &Path) -> Self {
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let start = std::time::Instant::now();
        while std::net::TcpStream::connect(addr).is_err() {
            let said = std::fs::read_to_string(log).unwrap_or_default();
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "{command:?} did not start: {said}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child, addr }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
