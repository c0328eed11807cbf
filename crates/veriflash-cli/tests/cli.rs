//! The `veriflash` binary's scripting contract: commands, exit codes, JSON, files, and interop
//! with keys made by the openssl CLI.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;
use common::{openssl, stderr, stdout, veriflash};

use std::path::{Path, PathBuf};

use serde_json::Value;

/// Two image files and a description in `dir`.
fn write_inputs(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir.join("images")).unwrap();
    let boot: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let rootfs: Vec<u8> = (0..1_500_000u32).map(|i| (i * 13 % 253) as u8).collect();
    std::fs::write(dir.join("images/boot.img"), boot).unwrap();
    std::fs::write(dir.join("images/rootfs.img"), rootfs).unwrap();
    let toml = r#"
product = "acme-hotspot-x1"
chipset = "mdm9607"
version = "2.4.0"
security_version = 7
hardware_revisions = ["r2"]

[[image]]
name = "boot"
partition = "boot"
file = "images/boot.img"
chunk_size = 65536

[[image]]
name = "rootfs"
partition = "system"
file = "images/rootfs.img"
"#;
    let path = dir.join("update.toml");
    std::fs::write(&path, toml).unwrap();
    path
}

fn pack(dir: &Path, key: &str, out: &str) {
    let o = veriflash(
        &[
            "pack",
            "--manifest",
            "update.toml",
            "--key",
            key,
            "--out",
            out,
        ],
        dir,
    );
    assert!(o.status.success(), "pack failed: {}", stderr(&o));
}

#[test]
fn keygen_pack_inspect_verify_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_inputs(dir);

    let o = veriflash(&["keygen", "--out", "vendor.pem"], dir);
    assert!(o.status.success(), "{}", stderr(&o));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.join("vendor.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "private key must be private");
    assert!(dir.join("vendor.pub.pem").exists());

    // keygen refuses to overwrite a key unless told to.
    let o = veriflash(&["keygen", "--out", "vendor.pem"], dir);
    assert_eq!(o.status.code(), Some(70));
    assert!(stderr(&o).contains("--force"));

    pack(dir, "vendor.pem", "update.vfp");

    let o = veriflash(&["inspect", "update.vfp", "--json"], dir);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["ok"], true);
    let v = &v["package"];
    assert_eq!(v["verified"], false);
    assert_eq!(v["product"], "acme-hotspot-x1");
    assert_eq!(v["security_version"], 7);
    assert_eq!(v["images"][0]["chunks"], 4);
    assert_eq!(v["images"][1]["size"], 1_500_000);
    assert_eq!(v["signatures"][0]["algorithm"], "ecdsa-p256-sha256");

    let o = veriflash(&["inspect", "update.vfp"], dir);
    assert!(stdout(&o).contains("NOT VERIFIED"));

    let o = veriflash(&["verify", "--trust", "vendor.pub.pem", "update.vfp"], dir);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).starts_with("verified:"));

    // A directory of trusted keys works too.
    std::fs::create_dir(dir.join("keys")).unwrap();
    std::fs::copy(dir.join("vendor.pub.pem"), dir.join("keys/vendor.pem")).unwrap();
    let o = veriflash(&["verify", "--trust", "keys", "update.vfp", "--json"], dir);
    assert!(o.status.success(), "{}", stdout(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["report"]["images"][1]["chunks"], 2);
}

#[test]
fn verify_exit_codes_and_json_errors_are_the_stable_codes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_inputs(dir);
    assert!(
        veriflash(&["keygen", "--out", "vendor.pem"], dir)
            .status
            .success()
    );
    assert!(
        veriflash(&["keygen", "--out", "other.pem"], dir)
            .status
            .success()
    );
    pack(dir, "vendor.pem", "update.vfp");
    let good = std::fs::read(dir.join("update.vfp")).unwrap();

    // A flipped byte near the end: a corrupted download.
    let mut corrupt = good.clone();
    let last = corrupt.len() - 10;
    corrupt[last] ^= 0xff;
    std::fs::write(dir.join("corrupt.vfp"), &corrupt).unwrap();
    let o = veriflash(
        &[
            "verify",
            "--trust",
            "vendor.pub.pem",
            "corrupt.vfp",
            "--json",
        ],
        dir,
    );
    assert_eq!(o.status.code(), Some(30));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["error"]["code"], 30);
    assert_eq!(v["error"]["kind"], "integrity_mismatch");
    assert_eq!(v["error"]["category"], "retryable");
    assert_eq!(v["error"]["image"], "rootfs");
    assert_eq!(v["error"]["chunk"], 1);
    assert!(v["error"]["remedy"].as_str().unwrap().contains("download"));

    // Text errors go to stderr with code, cause and remedy.
    let o = veriflash(&["verify", "--trust", "vendor.pub.pem", "corrupt.vfp"], dir);
    assert_eq!(o.status.code(), Some(30));
    assert!(
        stderr(&o).starts_with("error[30 integrity_mismatch]"),
        "{}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("remedy:"));

    // Wrong trusted key.
    let o = veriflash(&["verify", "--trust", "other.pub.pem", "update.vfp"], dir);
    assert_eq!(o.status.code(), Some(21));

    // A manifest byte changed.
    let mut tampered = good.clone();
    tampered[40] ^= 0x01;
    std::fs::write(dir.join("tampered.vfp"), &tampered).unwrap();
    let o = veriflash(
        &["verify", "--trust", "vendor.pub.pem", "tampered.vfp"],
        dir,
    );
    assert_eq!(o.status.code(), Some(20), "{}", stderr(&o));

    // Cut short.
    std::fs::write(dir.join("short.vfp"), &good[..good.len() / 2]).unwrap();
    let o = veriflash(&["verify", "--trust", "vendor.pub.pem", "short.vfp"], dir);
    assert_eq!(o.status.code(), Some(13));

    // Not a package at all.
    std::fs::write(
        dir.join("notes.txt"),
        b"hello, this is not a package at all",
    )
    .unwrap();
    let o = veriflash(&["verify", "--trust", "vendor.pub.pem", "notes.txt"], dir);
    assert_eq!(o.status.code(), Some(10));

    // No such file.
    let o = veriflash(&["verify", "--trust", "vendor.pub.pem", "missing.vfp"], dir);
    assert_eq!(o.status.code(), Some(70));

    // A usage error is 2, as shells expect.
    let o = veriflash(&["verify", "update.vfp"], dir);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn openssl_made_keys_sign_packages_that_verify() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_inputs(dir);
    // The classic recipe: an EC key from ecparam, converted to PKCS#8 by pkey.
    let ec = openssl(&["ecparam", "-name", "prime256v1", "-genkey"], dir);
    std::fs::write(dir.join("ec.pem"), &ec.stdout).unwrap();
    openssl(&["pkey", "-in", "ec.pem", "-out", "pkcs8.pem"], dir);
    openssl(
        &["pkey", "-in", "pkcs8.pem", "-pubout", "-out", "pub.pem"],
        dir,
    );

    for key in ["pkcs8.pem", "ec.pem"] {
        let out = format!("{key}.vfp");
        pack(dir, key, &out);
        let o = veriflash(&["verify", "--trust", "pub.pem", &out], dir);
        assert!(o.status.success(), "key {key}: {}", stderr(&o));
    }
}

#[test]
fn veriflash_keys_are_readable_by_openssl() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    assert!(
        veriflash(&["keygen", "--out", "k.pem"], dir)
            .status
            .success()
    );
    let text = openssl(&["pkey", "-in", "k.pem", "-noout", "-text"], dir);
    assert!(stdout(&text).contains("prime256v1") || stdout(&text).contains("P-256"));
    // openssl derives the same public key we wrote beside it.
    let public = openssl(&["pkey", "-in", "k.pem", "-pubout"], dir);
    assert_eq!(
        stdout(&public),
        std::fs::read_to_string(dir.join("k.pub.pem")).unwrap()
    );
    openssl(&["pkey", "-pubin", "-in", "k.pub.pem", "-noout"], dir);
}

#[test]
fn demo_runs_and_shows_the_refusals() {
    let tmp = tempfile::tempdir().unwrap();
    let o = veriflash(&["demo"], tmp.path());
    assert!(o.status.success(), "{}\n{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("verified:"));
    assert!(out.contains("error[30 integrity_mismatch]"));
    assert!(out.contains("error[20 not_authentic]"));
    assert!(out.contains("error[21 unknown_signer]"));
    assert!(
        out.contains("active slot     b"),
        "the demo flashes the file-backed device"
    );
    assert!(out.contains("byte-for-byte unchanged"));
    // The modem part: a programmer + sbl + tz + boot + system package flashed into the
    // emulated MDM9607 with progress, read back, then its status.
    assert!(out.contains("flash        100%"), "{out}");
    assert!(out.contains("(system)"), "{out}");
    assert!(out.contains("read_back    ok"), "{out}");
    assert!(out.contains("chipset         mdm9607"), "{out}");
    assert!(out.contains("efs2 (protected)"), "{out}");
    assert!(out.contains("last result     success (0)"), "{out}");
    assert!(out.contains("demo complete"));
}

#[test]
fn version_names_the_sha256_backend() {
    let tmp = tempfile::tempdir().unwrap();
    let o = veriflash(&["--version"], tmp.path());
    assert!(o.status.success());
    assert!(stdout(&o).contains("sha256 backend:"), "{}", stdout(&o));
}

#[test]
fn pack_refuses_outputs_that_are_not_files_or_are_its_own_inputs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_inputs(dir);
    assert!(
        veriflash(&["keygen", "--out", "vendor.pem"], dir)
            .status
            .success()
    );
    let fifo = std::process::Command::new("mkfifo")
        .arg(dir.join("pipe"))
        .status()
        .unwrap();
    assert!(fifo.success());
    std::os::unix::fs::symlink("images/boot.img", dir.join("link.vfp")).unwrap();
    let before: Vec<Vec<u8>> = ["images/boot.img", "update.toml", "vendor.pem"]
        .iter()
        .map(|f| std::fs::read(dir.join(f)).unwrap())
        .collect();
    for out in [
        "pipe",
        "link.vfp",
        "images",
        "images/boot.img",
        "images/../images/rootfs.img",
        "update.toml",
        "vendor.pem",
    ] {
        let o = veriflash(
            &[
                "pack",
                "--manifest",
                "update.toml",
                "--key",
                "vendor.pem",
                "--out",
                out,
            ],
            dir,
        );
        assert_eq!(o.status.code(), Some(72), "--out {out}: {}", stderr(&o));
        assert!(stderr(&o).contains("output"), "--out {out}: {}", stderr(&o));
    }
    let after: Vec<Vec<u8>> = ["images/boot.img", "update.toml", "vendor.pem"]
        .iter()
        .map(|f| std::fs::read(dir.join(f)).unwrap())
        .collect();
    assert!(before == after, "no input was touched");
    let meta = std::fs::symlink_metadata(dir.join("pipe")).unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_fifo(&meta.file_type()));
    assert!(
        std::fs::symlink_metadata(dir.join("link.vfp"))
            .unwrap()
            .is_symlink()
    );
}

/// Runs `veriflash args` in `dir` with `stdin`, failing the test instead of hanging if it has
/// not ended within a minute (what this file's endless-input tests guard against).
fn veriflash_bounded(
    args: &[&str],
    dir: &Path,
    stdin: std::process::Stdio,
) -> std::process::Output {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_veriflash"))
        .args(args)
        .current_dir(dir)
        .stdin(stdin)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    for _ in 0..600 {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    child.kill().unwrap();
    panic!("veriflash {args:?} did not end: it is reading an endless input");
}

#[test]
fn endless_or_blocking_inputs_are_refused_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_inputs(dir);
    assert!(
        veriflash(&["keygen", "--out", "vendor.pem"], dir)
            .status
            .success()
    );
    let mkfifo = |name: &str| {
        let made = std::process::Command::new("mkfifo")
            .arg(dir.join(name))
            .status()
            .unwrap();
        assert!(made.success());
    };
    mkfifo("images/fifo.img");
    mkfifo("fifo.vfp");
    for image in ["/dev/zero", "images/fifo.img"] {
        let toml = std::fs::read_to_string(dir.join("update.toml"))
            .unwrap()
            .replace("images/boot.img", image);
        std::fs::write(dir.join("endless.toml"), toml).unwrap();
        let o = veriflash_bounded(
            &[
                "pack",
                "--manifest",
                "endless.toml",
                "--key",
                "vendor.pem",
                "--out",
                "endless.vfp",
            ],
            dir,
            std::process::Stdio::null(),
        );
        assert_eq!(o.status.code(), Some(72), "{image}: {}", stderr(&o));
        assert!(stderr(&o).contains("not a regular file"), "{}", stderr(&o));
    }
    // A FIFO as the package, with no writer: refused, saying so, not waited on.
    let o = veriflash_bounded(
        &["verify", "--trust", "vendor.pub.pem", "fifo.vfp", "--json"],
        dir,
        std::process::Stdio::null(),
    );
    assert_eq!(o.status.code(), Some(72), "{}", stderr(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no program is writing"),
        "{v}"
    );
    // /dev/zero as the package is a stream whose header is wrong at once.
    let o = veriflash_bounded(
        &["verify", "--trust", "vendor.pub.pem", "/dev/zero", "--json"],
        dir,
        std::process::Stdio::null(),
    );
    assert_eq!(o.status.code(), Some(10), "{}", stderr(&o));
    // A stream is read from a FIFO that a program writes to (as a shell's `<(cat update.vfp)`
    // is), and from standard input when asked for with `-`.
    pack(dir, "vendor.pem", "update.vfp");
    // Opened for reading and writing, the FIFO has its writer before verify opens it.
    let mut fifo = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dir.join("fifo.vfp"))
        .unwrap();
    let package = std::fs::read(dir.join("update.vfp")).unwrap();
    let writer = std::thread::spawn(move || {
        std::io::Write::write_all(&mut fifo, &package).unwrap();
    });
    let o = veriflash_bounded(
        &["verify", "--trust", "vendor.pub.pem", "fifo.vfp", "--json"],
        dir,
        std::process::Stdio::null(),
    );
    writer.join().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let o = veriflash_bounded(
        &["verify", "--trust", "vendor.pub.pem", "-", "--json"],
        dir,
        std::fs::File::open(dir.join("update.vfp")).unwrap().into(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["ok"], true, "{v}");
}

#[test]
fn verify_says_whether_the_whole_image_digest_was_re_computed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_inputs(dir);
    assert!(
        veriflash(&["keygen", "--out", "vendor.pem"], dir)
            .status
            .success()
    );
    pack(dir, "vendor.pem", "update.vfp");
    for (extra, checked, label) in [
        (None, false, "(as signed)"),
        (Some("--whole-image-digest"), true, "(re-computed)"),
    ] {
        let mut args = vec!["verify", "--trust", "vendor.pub.pem", "update.vfp"];
        args.extend(extra);
        let o = veriflash(&args, dir);
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(stdout(&o).contains(label), "{}", stdout(&o));
        args.push("--json");
        let v: Value = serde_json::from_str(&stdout(&veriflash(&args, dir))).unwrap();
        for image in v["report"]["images"].as_array().unwrap() {
            assert_eq!(image["sha256_checked"], checked, "{v}");
            assert_eq!(image["sha256"].as_str().unwrap().len(), 64);
        }
    }
}

#[test]
fn keygen_help_names_every_key_type_keygen_makes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let top = stdout(&veriflash(&["--help"], dir));
    let line = top
        .lines()
        .find(|l| l.trim_start().starts_with("keygen"))
        .unwrap();
    assert!(line.contains("P-256") && line.contains("RSA"), "{line}");
    let help = stdout(&veriflash(&["keygen", "--help"], dir));
    for algo in ["p256", "rsa3072", "rsa4096"] {
        assert!(help.contains(algo), "{algo}: {help}");
    }
    // What the help promises is what keygen makes.
    let out = veriflash(&["keygen", "--algo", "rsa3072", "--out", "rsa.pem"], dir);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("algorithm    rsa-3072"),
        "{}",
        stdout(&out)
    );
    let out = veriflash(&["keygen", "--out", "ec.pem"], dir);
    assert!(
        stdout(&out).contains("algorithm    ecdsa-p256"),
        "{}",
        stdout(&out)
    );
}
