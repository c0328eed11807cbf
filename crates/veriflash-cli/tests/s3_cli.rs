//! `veriflash fetch` from a real S3-compatible server that enforces AWS Signature Version 4 and
//! presigned-URL expiry: `s3s-fs` (crates.io, `cargo install --locked s3s-fs@0.14.1 --features
//! binary`; `.ci/run` installs it), started by the test on loopback over a directory.
//!
//! The presigned URLs are made here as the AWS SDKs make them (SigV4 query authentication,
//! `UNSIGNED-PAYLOAD`, only `host` signed, so the client's `Range` headers are free). Covered:
//! a presigned GET read in ranges; a download whose link drops and comes back only after its
//! URL expired (65, the server's own words quoted, the partial kept), resumed with a fresh URL;
//! a refused signature (64) and a missing object (63) with S3's code and message; no
//! credential of the URL in any output.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;
use common::{Server, keygen_and_pack, tool, veriflash};

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

const ACCESS_KEY: &str = "VERIFLASHTESTKEY";
const SECRET_KEY: &str = "veriflash/test/secret+key";
const REGION: &str = "us-east-1";

/// An `s3s-fs` serving `root` (each directory a bucket) on 127.0.0.1 with the test's
/// credentials.
fn start_s3(root: &Path) -> Server {
    let s3s_fs = tool(
        "VERIFLASH_S3S_FS",
        "s3s-fs",
        &[],
        "`cargo install --locked s3s-fs@0.14.1 --features binary`",
    );
    // s3s-fs takes no port 0.
    let port = Server::free_port();
    let mut command = Command::new(s3s_fs);
    command
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
        .arg(root);
    Server::start(command, port, Path::new("/dev/null"))
}

/// A presigned GET URL for `bucket/key` on the server the client reaches at `host` (the
/// signature covers that name), signed at `signed_at` (Unix seconds) with `secret`, valid for
/// `expires` seconds.
fn presign(
    host: SocketAddr,
    bucket: &str,
    key: &str,
    signed_at: u64,
    expires: u64,
    secret: &str,
) -> String {
    let date = amz_date(signed_at);
    let day = &date[..8];
    let scope = format!("{day}/{REGION}/s3/aws4_request");
    let path = format!("/{bucket}/{key}");
    let host = host.to_string();
    let mut query = [
        ("X-Amz-Algorithm", "AWS4-HMAC-SHA256".to_owned()),
        ("X-Amz-Credential", format!("{ACCESS_KEY}/{scope}")),
        ("X-Amz-Date", date.clone()),
        ("X-Amz-Expires", expires.to_string()),
        ("X-Amz-SignedHeaders", "host".to_owned()),
    ]
    .map(|(name, value)| format!("{}={}", encode(name), encode(&value)));
    query.sort();
    let query = query.join("&");
    let canonical = format!("GET\n{path}\n{query}\nhost:{host}\n\nhost\nUNSIGNED-PAYLOAD");
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{date}\n{scope}\n{}",
        hex(&veriflash_hash::sha256(canonical.as_bytes()))
    );
    let mut key = hmac(format!("AWS4{secret}").as_bytes(), day.as_bytes());
    for part in [REGION, "s3", "aws4_request"] {
        key = hmac(&key, part.as_bytes());
    }
    let signature = hex(&hmac(&key, to_sign.as_bytes()));
    format!("http://{host}{path}?{query}&X-Amz-Signature={signature}")
}

/// HMAC-SHA-256 (RFC 2104).
fn hmac(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&veriflash_hash::sha256(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.iter().map(|b| b ^ byte).collect::<Vec<u8>>();
    let inner = veriflash_hash::sha256(&[pad(0x36), message.to_vec()].concat());
    veriflash_hash::sha256(&[pad(0x5c), inner.to_vec()].concat())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// URI encoding as SigV4 wants it: every byte but the unreserved ones.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `YYYYMMDDTHHMMSSZ` for Unix seconds `secs`.
fn amz_date(secs: u64) -> String {
    let days = secs / 86_400;
    let rest = secs % 86_400;
    // Civil from days (Gregorian), for dates after 1970.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A key and a 1.2 MB package in `dir`, published as `s3/firmware/update.vfp`.
fn setup(dir: &Path) {
    let boot: Vec<u8> = (0..1_200_000u32).map(|i| (i * 31 % 251) as u8).collect();
    std::fs::write(dir.join("boot.img"), boot).unwrap();
    std::fs::write(
        dir.join("update.toml"),
        "product = \"acme-hotspot-x1\"\nchipset = \"mdm9607\"\nversion = \"v3\"\n\
         security_version = 3\nchunk_size = 65536\n\
         [[image]]\nname = \"boot\"\npartition = \"boot\"\nfile = \"boot.img\"\n",
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("s3/firmware")).unwrap();
    keygen_and_pack(dir, "update.toml", "s3/firmware/update.vfp");
}

fn fetch(dir: &Path, url: &str) -> std::process::Output {
    veriflash(
        &[
            "fetch",
            url,
            "--out",
            "got.vfp",
            "--trust",
            "vendor.pub.pem",
            "--json",
        ],
        dir,
    )
}

fn last_line(out: &std::process::Output) -> Value {
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().last().unwrap()).unwrap()
}

/// Nothing the command printed shows the URL's signature or credential.
fn assert_redacted(out: &std::process::Output, url: &str) {
    let signature = url.rsplit_once("X-Amz-Signature=").unwrap().1;
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for secret in [signature, ACCESS_KEY] {
        assert!(!printed.contains(secret), "{secret} printed: {printed}");
    }
}

#[test]
fn a_presigned_url_is_fetched_in_ranges_and_a_refused_one_says_why() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    setup(d);
    let s3 = start_s3(&d.join("s3"));

    let url = presign(s3.addr, "firmware", "update.vfp", now(), 300, SECRET_KEY);
    let out = fetch(d, &url);
    let done = last_line(&out);
    assert_eq!(done["ok"], true, "{done}");
    assert_eq!(
        std::fs::read(d.join("got.vfp")).unwrap(),
        std::fs::read(d.join("s3/firmware/update.vfp")).unwrap()
    );
    assert_redacted(&out, &url);
    std::fs::remove_file(d.join("got.vfp")).unwrap();

    // Signed with the wrong secret: 403, S3's code quoted, not retried.
    let url = presign(
        s3.addr,
        "firmware",
        "update.vfp",
        now(),
        300,
        "not-the-secret",
    );
    let out = fetch(d, &url);
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    let error = &last_line(&out)["error"];
    assert_eq!(error["kind"], "access_refused");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("SignatureDoesNotMatch"),
        "{error}"
    );
    assert_redacted(&out, &url);

    // No such object: 404, NoSuchKey quoted.
    let url = presign(s3.addr, "firmware", "missing.vfp", now(), 300, SECRET_KEY);
    let out = fetch(d, &url);
    assert_eq!(out.status.code(), Some(63), "{out:?}");
    let error = &last_line(&out)["error"];
    assert!(
        error["message"].as_str().unwrap().contains("NoSuchKey"),
        "{error}"
    );
    assert!(!d.join("got.vfp").exists());
}

/// A proxy on 127.0.0.1 to `upstream` that cuts the first connection once `cut_after` bytes
/// of answers went through it, and holds every connection that arrives after the cut until
/// `hold_until` (Unix seconds) before passing it on: a link that drops mid-download and comes
/// back only after the URL has expired.
fn cutting_proxy(upstream: SocketAddr, cut_after: usize, hold_until: u64) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let cut = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { return };
            let cut = std::sync::Arc::clone(&cut);
            std::thread::spawn(move || {
                if cut.load(std::sync::atomic::Ordering::SeqCst) {
                    while now() <= hold_until {
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
                let Ok(server) = TcpStream::connect(upstream) else {
                    return;
                };
                let (mut from_client, mut to_server) =
                    (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut from_client, &mut to_server);
                });
                let (mut from_server, mut to_client) = (server, client);
                let mut passed = 0usize;
                let mut buf = [0u8; 16 * 1024];
                loop {
                    let n = match from_server.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    let first_connection = !cut.load(std::sync::atomic::Ordering::SeqCst);
                    if first_connection && passed + n > cut_after {
                        cut.store(true, std::sync::atomic::Ordering::SeqCst);
                        break;
                    }
                    passed += n;
                    if std::io::Write::write_all(&mut to_client, &buf[..n]).is_err() {
                        break;
                    }
                }
                let _ = to_client.shutdown(std::net::Shutdown::Both);
                let _ = from_server.shutdown(std::net::Shutdown::Both);
            });
        }
    });
    addr
}

#[test]
fn a_url_that_expires_mid_download_stops_it_and_a_fresh_url_resumes_it() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    setup(d);
    let s3 = start_s3(&d.join("s3"));

    // A URL valid for 4 seconds, reached through a link that drops after 300 KB and comes back
    // only once the URL has expired (the low-speed window is widened so the wait is not what
    // ends the attempt).
    let signed_at = now();
    let expires = 4;
    let proxy = cutting_proxy(s3.addr, 300_000, signed_at + expires + 1);
    // The signature covers the host the client names: the proxy's address.
    let url = presign(
        proxy,
        "firmware",
        "update.vfp",
        signed_at,
        expires,
        SECRET_KEY,
    );
    let out = veriflash(
        &[
            "fetch",
            &url,
            "--out",
            "got.vfp",
            "--trust",
            "vendor.pub.pem",
            "--low-speed-time",
            "30",
            "--json",
        ],
        d,
    );
    // Refused with 65 and S3's own words; the verified chunks kept for the next run.
    assert_eq!(out.status.code(), Some(65), "{out:?}");
    let error = &last_line(&out)["error"];
    assert_eq!(error["kind"], "url_expired", "{error}");
    assert_eq!(error["category"], "user_action");
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("Request has expired"), "{message}");
    assert!(message.contains("X-Amz-Signature=REDACTED"), "{message}");
    assert_redacted(&out, &url);
    assert!(d.join("got.vfp.partial.state").exists());
    assert!(!d.join("got.vfp").exists());

    // A fresh URL: the download resumes after its last verified chunk.
    let fresh = presign(s3.addr, "firmware", "update.vfp", now(), 300, SECRET_KEY);
    let out = fetch(d, &fresh);
    let done = last_line(&out);
    assert_eq!(done["ok"], true, "{done}");
    assert!(
        done["download"]["bytes_reused"].as_u64().unwrap() >= 4 * 65_536,
        "{done}"
    );
    assert_eq!(
        std::fs::read(d.join("got.vfp")).unwrap(),
        std::fs::read(d.join("s3/firmware/update.vfp")).unwrap()
    );
}
