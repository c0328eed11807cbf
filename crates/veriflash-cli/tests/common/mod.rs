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
        Self::spawn(extra, None)
    }

    /// [`Emulated::start`], announced to discovery (`veriflash station`) under the state
    /// directory [`veriflash`] gives commands run in `cwd`.
    pub fn announced(extra: &[&str], cwd: &Path) -> Self {
        Self::spawn(extra, Some(cwd))
    }

    fn spawn(extra: &[&str], cwd: Option<&Path>) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_veriflash"));
        if let Some(cwd) = cwd {
            command.env("VERIFLASH_STATE_DIR", cwd.join(".veriflash-state"));
        }
        let mut child = command
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

/// A key (`vendor.pem`) and a signed MDM9607 package `update.vfp` in `dir`: the Firehose
/// programmer, `sbl`, and `boot`/`system` images of `boot_len`/`system_len` bytes (product
/// acme-hotspot-x1 r2, version 2.4.0, security version 7, 64 KiB chunks).
pub fn mdm9607_package(dir: &Path, boot_len: u32, system_len: u32) {
    std::fs::write(
        dir.join("programmer.elf"),
        veriflash_mdm9x07::emulator::test_programmer(&[0x5Au8; 6000]),
    )
    .unwrap();
    std::fs::write(dir.join("sbl.img"), vec![0x11u8; 40_000]).unwrap();
    let boot: Vec<u8> = (0..boot_len).map(|i| i.to_le_bytes()[0]).collect();
    std::fs::write(dir.join("boot.img"), boot).unwrap();
    let system: Vec<u8> = (0..system_len)
        .map(|i| (i * 7 % 251).to_le_bytes()[0])
        .collect();
    std::fs::write(dir.join("system.img"), system).unwrap();
    std::fs::write(
        dir.join("update.toml"),
        "product = \"acme-hotspot-x1\"\nchipset = \"mdm9607\"\nversion = \"2.4.0\"\n\
         security_version = 7\nhardware_revisions = [\"r2\"]\nchunk_size = 65536\n\
         [[image]]\nname = \"programmer\"\npartition = \"programmer\"\nfile = \"programmer.elf\"\n\
         [[image]]\nname = \"sbl\"\npartition = \"sbl\"\nfile = \"sbl.img\"\n\
         [[image]]\nname = \"boot\"\npartition = \"boot\"\nfile = \"boot.img\"\n\
         [[image]]\nname = \"system\"\npartition = \"system\"\nfile = \"system.img\"\n",
    )
    .unwrap();
    keygen_and_pack(dir, "update.toml", "update.vfp");
}

/// Imports the stock EC25 bundle (`veriflash-mdm9x07/tests/fixtures/ec25`: no labels, two
/// erases, the MIBIB then the SBL, 4 KiB pages and 256 KiB blocks, with a test programmer) with
/// `import-qdl` and the `extra` arguments, into `dir/out/ec25.toml`.
pub fn ec25_import(dir: &Path, extra: &[&str]) -> Output {
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../veriflash-mdm9x07/tests/fixtures/ec25");
    let bundle = dir.join("ec25");
    std::fs::create_dir_all(&bundle).unwrap();
    for f in [
        "rawprogram_nand_p4K_b256K_update.xml",
        "sbl1.mbn",
        "partition_complete_p4K_b256K.mbn",
    ] {
        std::fs::copy(fixture.join(f), bundle.join(f)).unwrap();
    }
    let code: Vec<u8> = (0..20_000u32).map(|i| (i * 31 % 251) as u8).collect();
    std::fs::write(
        bundle.join("prog_nand_firehose_9x07.mbn"),
        veriflash_mdm9x07::emulator::test_programmer(&code),
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("out")).unwrap();
    let mut args = vec![
        "import-qdl",
        "--rawprogram",
        "ec25/rawprogram_nand_p4K_b256K_update.xml",
        "--programmer",
        "ec25/prog_nand_firehose_9x07.mbn",
        "--product",
        "quectel-ec25",
        "--chipset",
        "mdm9207",
        "--version",
        "EC25EFAR06A09M4G",
        "--security-version",
        "1",
        "--out",
        "out/ec25.toml",
    ];
    args.extend_from_slice(extra);
    veriflash(&args, dir)
}

/// The imported EC25 bundle (`ec25_import` with its partition-table step) signed into
/// `dir/ec25.vfp` with a new key `vendor.pem`, and the emulated EC25's product line in the
/// configuration directory, so `mdm9x07:emulator:ec25` takes it.
pub fn ec25_package(dir: &Path) {
    ok(&ec25_import(dir, &["--with-partition-table"]));
    keygen_and_pack(dir, "out/ec25.toml", "ec25.vfp");
    let config = dir.join(".veriflash-config");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(
        config.join("mdm9x07-products.toml"),
        "[[product]]\noem_id = 0x1234\nmodel_id = 0x0025\nproduct = \"quectel-ec25\"\nhardware_revision = \"r1\"\n",
    )
    .unwrap();
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

/// `veriflash station ARGS` in `cwd` (state and configuration directories as [`veriflash`]),
/// killed when dropped.
pub struct Station {
    child: Child,
    /// The URL it printed, with its token.
    pub url: String,
    /// Where it listens.
    pub addr: std::net::SocketAddr,
    /// Its access token.
    pub token: String,
    stderr: Receiver<String>,
}

impl Station {
    /// Starts the station and reads the URL it prints first.
    pub fn start(args: &[&str], cwd: &Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_veriflash"))
            .arg("station")
            .args(args)
            .current_dir(cwd)
            .env("VERIFLASH_STATE_DIR", cwd.join(".veriflash-state"))
            .env("VERIFLASH_CONFIG_DIR", cwd.join(".veriflash-config"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the station");
        let (tx, stderr) = channel();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line.trim().to_owned();
        let said: Vec<String> = stderr.try_iter().collect();
        let rest = url
            .strip_prefix("http://")
            .unwrap_or_else(|| panic!("line 1 is the URL: {line:?} {said:?}"));
        let (addr, token) = rest.split_once("/?token=").expect("a token in the URL");
        Self {
            addr: addr.parse().unwrap(),
            token: token.to_owned(),
            url,
            child,
            stderr,
        }
    }

    /// One HTTP/1.1 request to the station (`Host` is its address unless `headers` names
    /// one).
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> HttpResponse {
        http_request(self.addr, method, path, headers, body)
    }

    /// `GET path` with the token in the query.
    pub fn get(&self, path: &str) -> HttpResponse {
        let sep = if path.contains('?') { '&' } else { '?' };
        self.request("GET", &format!("{path}{sep}token={}", self.token), &[], "")
    }

    /// A button: `POST path` with the token header and a JSON body, as the page sends it.
    pub fn post(&self, path: &str, body: &str) -> HttpResponse {
        let origin = format!("http://{}", self.addr);
        self.request(
            "POST",
            path,
            &[
                ("X-Veriflash-Token", &self.token),
                ("Content-Type", "application/json"),
                ("Origin", &origin),
            ],
            body,
        )
    }

    /// The station's state (`/api/state`).
    pub fn state(&self) -> serde_json::Value {
        let response = self.get("/api/state");
        assert_eq!(response.status, 200, "{response:?}");
        serde_json::from_str(&response.body).unwrap()
    }

    /// Waits (up to 60 s) until the state satisfies `done`, and returns it.
    pub fn wait_for(
        &self,
        what: &str,
        done: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let start = std::time::Instant::now();
        loop {
            let state = self.state();
            if done(&state) {
                return state;
            }
            let said: Vec<String> = self.stderr.try_iter().collect();
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "the station never got to {what}: {state:#} {said:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Station {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP response: status, header lines, body.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    /// The status line and header lines, as received.
    pub head: String,
    pub body: String,
}

impl HttpResponse {
    /// The value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// One HTTP/1.1 request over a fresh connection (for an event stream, what arrived within a
/// second).
pub fn http_request(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> HttpResponse {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    let mut request = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
        request.push_str(&format!("Host: {addr}\r\n"));
    }
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => response.extend_from_slice(&buf[..n]),
            // An event stream does not end: what came within the timeout is enough.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                break;
            }
            Err(e) => panic!("reading the response: {e}"),
        }
    }
    let text = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {text:?}"));
    HttpResponse {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    }
}
