//! `veriflash fetch URL` and `veriflash flash URL` against a real HTTP server (axum +
//! tower-http's `ServeDir`) on 127.0.0.1, as a user runs them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;
use common::{ok, veriflash};

use std::net::SocketAddr;
use std::path::Path;

use serde_json::Value;

const LAYOUT: &str = "product = \"acme-hotspot-x1\"\nchipset = \"mdm9607\"\nhardware_revision = \"r2\"\n\
[[partition]]\nname = \"boot\"\nsize = 1048576\nab = true\n";

const DESCRIPTION: &str = "product = \"acme-hotspot-x1\"\nchipset = \"mdm9607\"\nversion = \"v3\"\n\
security_version = 3\n[[image]]\nname = \"boot\"\npartition = \"boot\"\nfile = \"boot.img\"\nchunk_size = 65536\n";

/// Serves `dir` on 127.0.0.1 until the returned runtime is dropped.
fn serve(dir: &Path) -> (tokio::runtime::Runtime, SocketAddr) {
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
    let (_runtime, addr) = serve(&d.join("www"));
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
    let v: Value = serde_json::from_str(out.trim()).unwrap();
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
    let (_runtime, addr) = serve(&d.join("www"));
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
    // A package the server does not have: server_error.
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
    assert_eq!(out.status.code(), Some(54));
    let v: Value = serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).unwrap();
    assert_eq!(v["error"]["kind"], "server_error");
}
