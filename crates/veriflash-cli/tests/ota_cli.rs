//! `veriflash fetch URL` and `veriflash flash URL` against a real HTTP server (axum +
//! tower-http's `ServeDir`) on 127.0.0.1, as a user runs them, and against a server that
//! stalls after its headers.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;
use common::{code, ok, serve_dir, stderr, stdout, veriflash};

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::os::unix::fs::FileTypeExt as _;
use std::path::Path;

use serde_json::Value;

const LAYOUT: &str = "product = \"acme-hotspot-x1\"\nchipset = \"mdm9607\"\nhardware_revision = \"r2\"\n\
[[partition]]\nname = \"boot\"\nsize = 1048576\nab = true\n";

const DESCRIPTION: &str = "product = \"acme-hotspot-x1\"\nchipset = \"mdm9607\"\nversion = \"v3\"\n\
security_version = 3\n[[image]]\nname = \"boot\"\npartition = \"boot\"\nfile = \"boot.img\"\nchunk_size = 65536\n";

fn setup(dir: &Path) {
    let boot: Vec<u8> = (0..700_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(dir.join("boot.img"), boot).unwrap();
    std::fs::write(dir.join("update.toml"), DESCRIPTION).unwrap();
    std::fs::write(dir.join("layout.toml"), LAYOUT).unwrap();
    std::fs::create_dir(dir.join("www")).unwrap();
    ok(&veriflash(&["keygen", "--out", "vendor.pem"], dir));
    ok(&veriflash(
        &[
            "pack",
            "--manifest",
            "update.toml",
            "--key",
            "vendor.pem",
            "--out",
            "www/update.vfp",
        ],
        dir,
    ));
}

#[test]
fn fetch_downloads_and_verifies_then_flash_streams_from_the_url() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    let (_runtime, addr) = serve_dir(&d.join("www"));
    let url = format!("http://{addr}/update.vfp");

    let out = ok(&veriflash(
        &[
            "fetch",
            &url,
            "--out",
            "got.vfp",
            "--trust",
            "vendor.pub.pem",
            "--json",
        ],
        d,
    ));
    let v: Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["report"]["images"][0]["name"], "boot");
    assert_eq!(v["download"]["repairs"], 0);
    assert_eq!(
        std::fs::read(d.join("got.vfp")).unwrap(),
        std::fs::read(d.join("www/update.vfp")).unwrap()
    );

    ok(&veriflash(
        &[
            "device",
            "init",
            "--layout",
            "layout.toml",
            "file:device.img",
        ],
        d,
    ));
    let text = ok(&veriflash(
        &[
            "flash",
            &url,
            "--trust",
            "vendor.pub.pem",
            "--target",
            "file:device.img",
        ],
        d,
    ));
    assert!(text.contains("installed on file:device.img"), "{text}");
}

#[test]
fn fetch_exits_with_the_error_code() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    let (_runtime, addr) = serve_dir(&d.join("www"));
    // A key the package is not signed with: refused before any payload byte.
    ok(&veriflash(&["keygen", "--out", "other.pem"], d));
    let out = veriflash(
        &[
            "fetch",
            &format!("http://{addr}/update.vfp"),
            "--out",
            "got.vfp",
            "--trust",
            "other.pub.pem",
        ],
        d,
    );
    assert_eq!(
        out.status.code(),
        Some(21),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!d.join("got.vfp").exists());
    // A package the server does not have: package_not_found, a code of its own that tells a
    // fleet not to retry the same URL.
    let out = veriflash(
        &[
            "fetch",
            &format!("http://{addr}/missing.vfp"),
            "--out",
            "got.vfp",
            "--trust",
            "vendor.pub.pem",
            "--json",
        ],
        d,
    );
    assert_eq!(out.status.code(), Some(63));
    let v: Value = serde_json::from_str(stdout(&out).lines().last().unwrap()).unwrap();
    assert_eq!(v["error"]["kind"], "package_not_found");
    assert_eq!(v["error"]["category"], "user_action");
}

/// A server on 127.0.0.1 that answers every request with the headers of a `206` and then
/// sends nothing, holding each connection until the client gives up on it.
fn stalling_server() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for connection in listener.incoming() {
            let Ok(mut connection) = connection else {
                return;
            };
            std::thread::spawn(move || {
                let mut reader = BufReader::new(connection.try_clone().unwrap());
                let mut line = String::new();
                loop {
                    line.clear();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    if line.trim().is_empty() {
                        break;
                    }
                }
                let _ = connection.write_all(
                    b"HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 0-31/4096\r\nContent-Length: 32\r\n\r\n",
                );
                let mut sink = [0u8; 256];
                while matches!(reader.read(&mut sink), Ok(n) if n > 0) {}
            });
        }
    });
    addr
}

#[test]
fn fetch_gives_up_on_a_stalled_server_at_the_low_speed_limit() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    let url = format!("http://{}/update.vfp", stalling_server());
    // A 1 s window: 9 attempts (8 resumes) of 1 s each instead of the read timeout's 30 s.
    let out = veriflash(
        &[
            "fetch",
            &url,
            "--out",
            "got.vfp",
            "--trust",
            "vendor.pub.pem",
            "--low-speed-time",
            "1",
            "--deadline",
            "0",
        ],
        d,
    );
    assert_eq!(code(&out), 53, "{}", stderr(&out));
    assert!(stderr(&out).contains("low-speed limit"), "{}", stderr(&out));
    assert!(!d.join("got.vfp").exists());
}

#[test]
fn flash_url_ends_at_its_deadline_and_leaves_the_device_alone() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    ok(&veriflash(
        &[
            "device",
            "init",
            "--layout",
            "layout.toml",
            "file:device.img",
        ],
        d,
    ));
    let before = std::fs::read(d.join("device.img")).unwrap();
    let url = format!("http://{}/update.vfp", stalling_server());
    let out = veriflash(
        &[
            "flash",
            &url,
            "--trust",
            "vendor.pub.pem",
            "--target",
            "file:device.img",
            "--low-speed-time",
            "1",
            "--deadline",
            "2",
            "--json",
        ],
        d,
    );
    assert_eq!(code(&out), 62, "{}{}", stdout(&out), stderr(&out));
    // The event stream, then the error object.
    let last = stdout(&out).lines().last().unwrap_or_default().to_owned();
    let v: Value = serde_json::from_str(&last).unwrap();
    assert_eq!(v["error"]["kind"], "deadline_exceeded");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("deadline of 2 s"),
        "{v}"
    );
    assert_eq!(std::fs::read(d.join("device.img")).unwrap(), before);
}

#[test]
fn fetch_refuses_an_output_that_is_a_fifo_or_a_symlink_and_leaves_it_alone() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    let (_runtime, addr) = serve_dir(&d.join("www"));
    let url = format!("http://{addr}/update.vfp");
    let status = std::process::Command::new("mkfifo")
        .arg(d.join("fifo"))
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::write(d.join("precious"), b"keep me").unwrap();
    std::os::unix::fs::symlink("precious", d.join("link")).unwrap();
    for out in ["fifo", "link"] {
        let run = veriflash(
            &[
                "fetch",
                &url,
                "--out",
                out,
                "--trust",
                "vendor.pub.pem",
                "--json",
            ],
            d,
        );
        assert_eq!(code(&run), 72, "{out}: {}", stdout(&run));
        let v: Value = serde_json::from_str(stdout(&run).lines().last().unwrap()).unwrap();
        assert_eq!(v["error"]["kind"], "invalid_input");
        assert!(!d.join(format!("{out}.partial")).exists());
    }
    assert!(
        std::fs::symlink_metadata(d.join("fifo"))
            .unwrap()
            .file_type()
            .is_fifo()
    );
    assert!(
        std::fs::symlink_metadata(d.join("link"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(std::fs::read(d.join("precious")).unwrap(), b"keep me");

    // Refused before any request: a server that is not there makes no difference.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let gone = format!("http://{}/update.vfp", closed.local_addr().unwrap());
    drop(closed);
    let run = veriflash(
        &["fetch", &gone, "--out", "fifo", "--trust", "vendor.pub.pem"],
        d,
    );
    assert_eq!(code(&run), 72, "{}", stderr(&run));
}

#[test]
fn fetch_and_flash_document_the_download_limits() {
    let dir = tempfile::tempdir().unwrap();
    for command in ["fetch", "flash"] {
        let help = ok(&veriflash(&[command, "--help"], dir.path()));
        for flag in ["--low-speed-limit", "--low-speed-time", "--deadline"] {
            assert!(help.contains(flag), "{command} --help lacks {flag}");
        }
    }
}

/// A server on 127.0.0.1 for `package` that honours `Range` and, for any request reaching past
/// `stall_from`, sends at most `send` bytes beyond `stall_from` (or beyond its start, if later)
/// and then nothing more, holding the connection.
fn stalling_after(package: Vec<u8>, stall_from: usize, send: usize) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let package = std::sync::Arc::new(package);
    std::thread::spawn(move || {
        for connection in listener.incoming() {
            let Ok(mut connection) = connection else {
                return;
            };
            let package = std::sync::Arc::clone(&package);
            std::thread::spawn(move || {
                let mut reader = BufReader::new(connection.try_clone().unwrap());
                let mut range = None;
                let mut line = String::new();
                loop {
                    line.clear();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    if line.trim().is_empty() {
                        break;
                    }
                    if let Some(spec) = line.to_ascii_lowercase().strip_prefix("range: bytes=") {
                        let (a, b) = spec.trim().split_once('-').unwrap();
                        let end = b.parse::<usize>().map_or(package.len(), |b| b + 1);
                        range = Some((a.parse::<usize>().unwrap(), end.min(package.len())));
                    }
                }
                let (start, end) = range.unwrap_or((0, package.len()));
                let head = format!(
                    "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {start}-{}/{}\r\nContent-Length: {}\r\n\r\n",
                    end - 1,
                    package.len(),
                    end - start
                );
                // Past `stall_from`, at most `send` bytes per request: a request that began
                // before it (the payload's first) stalls too, so the download cannot finish
                // before the test's Ctrl-C on a fast machine.
                let body = &package[start..end.min(start.max(stall_from) + send)];
                if connection.write_all(head.as_bytes()).is_err()
                    || connection.write_all(body).is_err()
                {
                    return;
                }
                let mut sink = [0u8; 256];
                while matches!(reader.read(&mut sink), Ok(n) if n > 0) {}
            });
        }
    });
    addr
}

#[test]
fn ctrl_c_stops_a_fetch_like_a_flash_and_the_next_run_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    let package = std::fs::read(d.join("www/update.vfp")).unwrap();
    // The payload begins within the first 4 KiB; two 64 KiB chunks come, then the server stalls.
    let addr = stalling_after(package, 4096, 2 * 65_536 + 1000);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_veriflash"))
        .args([
            "fetch",
            &format!("http://{addr}/update.vfp"),
            "--out",
            "got.vfp",
            "--trust",
            "vendor.pub.pem",
            "--low-speed-time",
            "1",
            "--json",
        ])
        .current_dir(d)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut events = BufReader::new(child.stdout.take().unwrap()).lines();
    // Interrupted once a chunk verified.
    loop {
        let line = events.next().expect("a progress event").unwrap();
        if serde_json::from_str::<Value>(&line).unwrap()["event"] == "progress" {
            break;
        }
    }
    let killed = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let rest: Vec<String> = events.map(Result::unwrap).collect();
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    // The same word and code as `flash`: 60, cancelled, the verified chunks kept.
    assert_eq!(status.code(), Some(60), "{rest:?}\n{stderr}");
    assert!(
        stderr.contains("interrupted: stopping at the next safe point"),
        "{stderr}"
    );
    let last: Value = serde_json::from_str(rest.last().unwrap()).unwrap();
    assert_eq!(last["error"]["kind"], "cancelled", "{last}");
    assert!(d.join("got.vfp.partial.state").exists());
    assert!(!d.join("got.vfp").exists());

    // The next run, from a server that serves everything, fetches only what was missing.
    let (_runtime, good) = serve_dir(&d.join("www"));
    let out = ok(&veriflash(
        &[
            "fetch",
            &format!("http://{good}/update.vfp"),
            "--out",
            "got.vfp",
            "--trust",
            "vendor.pub.pem",
            "--json",
        ],
        d,
    ));
    let done: Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert!(
        done["download"]["bytes_reused"].as_u64().unwrap() >= 65_536,
        "{done}"
    );
}
