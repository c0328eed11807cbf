//! `fetch` and `flash URL` against nginx configured with docs/serving/nginx-location.conf, the
//! configuration docs/SERVING.md tells publishers to use: the guide's commands, run. nginx comes
//! from Debian's `nginx-light` (`.ci/run` installs it).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;
use common::{Server, keygen_and_pack, ok, tool, veriflash};

use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// nginx serving `dir/www` on 127.0.0.1 with the guide's location block, in the foreground,
/// everything in `dir/nginx`.
fn start_nginx(dir: &Path) -> Server {
    let port = Server::free_port();
    let location = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../docs/serving/nginx-location.conf")
        .canonicalize()
        .unwrap();
    let prefix = dir.join("nginx");
    std::fs::create_dir_all(prefix.join("tmp")).unwrap();
    let conf = format!(
        "daemon off;\nmaster_process off;\nworker_processes 1;\npid {p}/nginx.pid;\n\
         error_log {p}/error.log;\nevents {{ worker_connections 64; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {p}/tmp;\n  proxy_temp_path {p}/tmp;\n\
         fastcgi_temp_path {p}/tmp;\n  uwsgi_temp_path {p}/tmp;\n  scgi_temp_path {p}/tmp;\n\
         server {{\n    listen 127.0.0.1:{port};\n    root {www};\n    include {location};\n  }}\n}}\n",
        p = prefix.display(),
        www = dir.join("www").display(),
        location = location.display(),
    );
    std::fs::write(prefix.join("nginx.conf"), conf).unwrap();
    let nginx = tool(
        "VERIFLASH_NGINX",
        "nginx",
        &["/usr/sbin"],
        "`apt-get install nginx-light`",
    );
    let mut command = Command::new(nginx);
    command
        .arg("-p")
        .arg(&prefix)
        .arg("-c")
        .arg(prefix.join("nginx.conf"));
    Server::start(command, port, &prefix.join("error.log"))
}

#[test]
fn packages_served_as_the_guide_says_fetch_and_flash() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let boot: Vec<u8> = (0..900_000u32).map(|i| (i * 17 % 253) as u8).collect();
    std::fs::write(d.join("boot.img"), boot).unwrap();
    std::fs::write(
        d.join("update.toml"),
        "product = \"acme-hotspot-x1\"\nchipset = \"mdm9607\"\nversion = \"v3\"\n\
         security_version = 3\nchunk_size = 65536\n\
         [[image]]\nname = \"boot\"\npartition = \"boot\"\nfile = \"boot.img\"\n",
    )
    .unwrap();
    std::fs::write(
        d.join("layout.toml"),
        "product = \"acme-hotspot-x1\"\nchipset = \"mdm9607\"\nhardware_revision = \"r2\"\n\
         [[partition]]\nname = \"boot\"\nsize = 1048576\nab = true\n",
    )
    .unwrap();
    std::fs::create_dir(d.join("www")).unwrap();
    keygen_and_pack(d, "update.toml", "www/update-v3.vfp");
    let server = start_nginx(d);
    let url = format!("http://{}/update-v3.vfp", server.addr);

    // Fetched in ranges (nginx answers 206 with a stable ETag) and verified.
    let package = std::fs::read(d.join("www/update-v3.vfp")).unwrap();
    let first = ok(&veriflash(
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
    let done: Value = serde_json::from_str(first.lines().last().unwrap()).unwrap();
    assert_eq!(done["ok"], true, "{first}");
    assert_eq!(std::fs::read(d.join("got.vfp")).unwrap(), package);

    // The same URL again: nothing downloaded.
    let again = ok(&veriflash(
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
    let done: Value = serde_json::from_str(again.lines().last().unwrap()).unwrap();
    assert_eq!(done["download"]["already_present"], true, "{again}");

    // Streamed onto a device in one pass.
    ok(&veriflash(
        &["device", "init", "--layout", "layout.toml", "file:dev.img"],
        d,
    ));
    let text = ok(&veriflash(
        &[
            "flash",
            &url,
            "--trust",
            "vendor.pub.pem",
            "--target",
            "file:dev.img",
        ],
        d,
    ));
    assert!(text.contains("installed on file:dev.img"), "{text}");

    // A name nginx does not have: 63, not retried.
    let out = veriflash(
        &[
            "fetch",
            &format!("http://{}/update-v4.vfp", server.addr),
            "--out",
            "v4.vfp",
            "--trust",
            "vendor.pub.pem",
        ],
        d,
    );
    assert_eq!(out.status.code(), Some(63), "{out:?}");
}
