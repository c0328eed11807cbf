//! `veriflash pack --compress[=LEVEL]` and what `inspect` shows of a compressed package.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;
use common::veriflash;

use std::process::Command;

use serde_json::Value;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn pack_compress_makes_a_smaller_version_2_package_that_inspects_and_verifies() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // A compressible image (text) and an incompressible one (xorshift bytes).
    let rootfs: Vec<u8> = (0..600_000u32)
        .flat_map(|i| format!("line {} of the root file system\n", i % 977).into_bytes())
        .take(2_000_000)
        .collect();
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let modem: Vec<u8> = (0..300_000)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[0]
        })
        .collect();
    std::fs::write(dir.join("rootfs.img"), &rootfs).unwrap();
    std::fs::write(dir.join("modem.img"), &modem).unwrap();
    std::fs::write(
        dir.join("update.toml"),
        r#"
product = "acme-hotspot-x1"
chipset = "mdm9607"
version = "2.4.0"
security_version = 7

[[image]]
name = "modem"
partition = "modem"
file = "modem.img"
chunk_size = 65536

[[image]]
name = "rootfs"
partition = "system"
file = "rootfs.img"
"#,
    )
    .unwrap();
    let o = veriflash(&["keygen", "--out", "vendor.pem"], dir);
    assert!(o.status.success(), "{}", text(&o.stderr));

    let pack = |extra: &[&str], out: &str| {
        let mut args = vec![
            "pack",
            "--manifest",
            "update.toml",
            "--key",
            "vendor.pem",
            "--out",
            out,
        ];
        args.extend_from_slice(extra);
        veriflash(&args, dir)
    };
    let o = pack(&[], "raw.vfp");
    assert!(o.status.success(), "{}", text(&o.stderr));
    let o = pack(&["--compress"], "small.vfp");
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        text(&o.stdout).contains("compressed:"),
        "{}",
        text(&o.stdout)
    );
    let o = pack(&["--compress=19"], "smaller.vfp");
    assert!(o.status.success(), "{}", text(&o.stderr));
    let raw = std::fs::metadata(dir.join("raw.vfp")).unwrap().len();
    let small = std::fs::metadata(dir.join("small.vfp")).unwrap().len();
    assert!(small < raw / 4, "{small} vs {raw}");

    // A level outside zstd's 1..=22 is a usage error.
    let o = pack(&["--compress=23"], "bad.vfp");
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));

    let o = veriflash(&["inspect", "small.vfp", "--json"], dir);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let v: Value = serde_json::from_str(&text(&o.stdout)).unwrap();
    let v = &v["package"];
    assert_eq!(v["format_version"], 2);
    assert_eq!(v["images"][0]["stored_size"], 300_000);
    assert_eq!(v["images"][0]["compressed_chunks"], 0);
    assert_eq!(v["images"][1]["size"], 2_000_000);
    assert!(v["images"][1]["stored_size"].as_u64().unwrap() < 500_000);
    assert_eq!(v["images"][1]["compressed_chunks"], 2);

    let o = veriflash(&["inspect", "small.vfp"], dir);
    let shown = text(&o.stdout);
    assert!(shown.contains("format     version 2"), "{shown}");
    assert!(shown.contains("2 of 2 chunks zstd"), "{shown}");
    assert!(shown.contains("stored     "), "{shown}");

    // Content-defined chunks: a version-3 package, alone or compressed too.
    let o = pack(&["--chunking", "cdc"], "cdc.vfp");
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        text(&o.stdout).contains("content-defined chunks:"),
        "{}",
        text(&o.stdout)
    );
    let o = pack(&["--chunking", "cdc", "--compress"], "cdc-small.vfp");
    assert!(o.status.success(), "{}", text(&o.stderr));
    let o = pack(&["--chunking", "rolling"], "bad.vfp");
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    let o = veriflash(&["inspect", "cdc.vfp", "--json"], dir);
    let v: Value = serde_json::from_str(&text(&o.stdout)).unwrap();
    assert_eq!(v["package"]["format_version"], 3);
    // The 2 MB rootfs in 1 MiB chunks at most: about 128 KiB each, so many more than 2.
    assert!(
        v["package"]["images"][1]["chunks"].as_u64().unwrap() > 8,
        "{v}"
    );

    for package in [
        "raw.vfp",
        "small.vfp",
        "smaller.vfp",
        "cdc.vfp",
        "cdc-small.vfp",
    ] {
        let o = veriflash(&["verify", "--trust", "vendor.pub.pem", package], dir);
        assert!(o.status.success(), "{package}: {}", text(&o.stderr));
    }
}

#[test]
fn split_signing_a_compressed_package_needs_the_same_compress_level_on_both_steps() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let rootfs: Vec<u8> = (0..400_000u32)
        .flat_map(|i| format!("entry {}\n", i % 313).into_bytes())
        .take(1_500_000)
        .collect();
    std::fs::write(dir.join("rootfs.img"), &rootfs).unwrap();
    std::fs::write(
        dir.join("update.toml"),
        "product = \"p\"\nchipset = \"c\"\nversion = \"1\"\nsecurity_version = 1\n\
         [[image]]\nname = \"rootfs\"\npartition = \"system\"\nfile = \"rootfs.img\"\n",
    )
    .unwrap();
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            text(&out.stderr)
        );
    };
    openssl(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        "k.pem",
    ]);
    openssl(&["pkey", "-in", "k.pem", "-pubout", "-out", "k.pub.pem"]);
    let out = veriflash(
        &[
            "pack",
            "--manifest",
            "update.toml",
            "--unsigned",
            "--compress=3",
            "--out",
            "u.tbs",
        ],
        dir,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    openssl(&[
        "dgst", "-sha256", "-sign", "k.pem", "-out", "sig.der", "u.tbs",
    ]);
    let sign = |compress: Option<&str>| {
        let mut args = vec![
            "sign",
            "--manifest",
            "update.toml",
            "--tbs",
            "u.tbs",
            "--signature",
            "sig.der",
            "--pubkey",
            "k.pub.pem",
            "--out",
            "u.vfp",
        ];
        args.extend(compress);
        veriflash(&args, dir)
    };
    // Without the level the images pack differently, and `sign` says so instead of attaching.
    let out = sign(None);
    assert!(
        !out.status.success(),
        "sign without --compress accepted a compressed .tbs"
    );
    let out = sign(Some("--compress=3"));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = veriflash(&["verify", "--trust", "k.pub.pem", "u.vfp"], dir);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let size = std::fs::metadata(dir.join("u.vfp")).unwrap().len();
    assert!(
        size < rootfs.len() as u64 / 2,
        "the signed package is compressed ({size} bytes)"
    );
}
