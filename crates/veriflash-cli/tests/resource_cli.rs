//! A computer short of memory is not a bad package: `verify` and `flash` under an address-space
//! limit (`prlimit --as`) end with 80 (`resource_exhausted`, category `resource`), never with a
//! package verdict (10 `malformed`, as they once did) and never with a panic; the device keeps
//! its old slot and records 80, not a verdict on the package.
//!
//! The limit is placed well away from the edge where any allocation could fail: first the
//! smallest limit under which this build verifies a small package is found, then a package
//! whose one chunk buffer needs 16 MiB more is run a few MiB above it, where only that buffer
//! cannot be had.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;
use common::{ok, stdout, veriflash};

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

const MIB: u64 = 1 << 20;

/// `veriflash args` in `dir` with its address space limited to `limit` bytes.
fn limited(limit: u64, args: &[&str], dir: &Path) -> Output {
    Command::new("prlimit")
        .arg(format!("--as={limit}"))
        .arg(env!("CARGO_BIN_EXE_veriflash"))
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_BACKTRACE")
        .output()
        .unwrap()
}

fn pack(dir: &Path, name: &str, len: usize, chunk_size: u64) {
    std::fs::write(dir.join(format!("{name}.img")), vec![0x5au8; len]).unwrap();
    std::fs::write(
        dir.join(format!("{name}.toml")),
        format!(
            "product = \"acme-hotspot-x1\"\nchipset = \"mdm9607\"\nversion = \"{name}\"\n\
             security_version = 1\n[[image]]\nname = \"system\"\npartition = \"system\"\n\
             file = \"{name}.img\"\nchunk_size = {chunk_size}\n"
        ),
    )
    .unwrap();
    ok(&veriflash(
        &[
            "pack",
            "--manifest",
            &format!("{name}.toml"),
            "--key",
            "vendor.pem",
            "--out",
            &format!("{name}.vfp"),
        ],
        dir,
    ));
}

#[test]
fn out_of_memory_is_a_resource_error_never_a_verdict_on_the_package() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    ok(&veriflash(&["keygen", "--out", "vendor.pem"], dir));
    pack(dir, "small", 100_000, 65_536);
    pack(dir, "large", 20 << 20, 16 << 20);
    let verify = |limit, package: &str| {
        limited(
            limit,
            &["verify", "--trust", "vendor.pub.pem", package, "--json"],
            dir,
        )
    };

    // The smallest limit (to 1 MiB) under which a small package verifies.
    let (mut low, mut high) = (4 * MIB, 256 * MIB);
    assert!(verify(high, "small.vfp").status.success());
    while high - low > MIB {
        let mid = (low + high) / 2;
        if verify(mid, "small.vfp").status.success() {
            high = mid;
        } else {
            low = mid;
        }
    }
    let tight = high + 6 * MIB;

    let out = verify(tight, "large.vfp");
    assert_eq!(out.status.code(), Some(80), "{out:?}");
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["error"]["kind"], "resource_exhausted", "{v}");
    assert_eq!(v["error"]["category"], "resource", "{v}");
    // With room for its buffer, the same package verifies.
    assert!(verify(tight + 40 * MIB, "large.vfp").status.success());

    std::fs::write(
        dir.join("layout.toml"),
        "product = \"acme-hotspot-x1\"\nchipset = \"mdm9607\"\nhardware_revision = \"r2\"\n\
         [[partition]]\nname = \"system\"\nsize = 25165824\nab = true\n",
    )
    .unwrap();
    ok(&veriflash(
        &["device", "init", "--layout", "layout.toml", "file:dev.img"],
        dir,
    ));
    let flash = |limit| {
        limited(
            limit,
            &[
                "flash",
                "large.vfp",
                "--trust",
                "vendor.pub.pem",
                "--target",
                "file:dev.img",
                "--json",
            ],
            dir,
        )
    };
    let out = flash(tight);
    assert_eq!(out.status.code(), Some(80), "{out:?}");
    let status: Value = serde_json::from_str(&ok(&veriflash(
        &["status", "--target", "file:dev.img", "--json"],
        dir,
    )))
    .unwrap();
    let status = &status["status"];
    assert_eq!(status["active_slot"], "a", "the old slot still boots");
    assert_eq!(status["last_result"]["code"], 80, "{status}");
    assert!(flash(tight + 40 * MIB).status.success());
}
