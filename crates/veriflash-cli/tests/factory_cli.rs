//! `veriflash flash PKG --target A --target B …`: the factory line from the command line —
//! per-device progress lines, a summary table, and the exit status of the first failure.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation
)]

mod common;
use common::{text, veriflash};

use std::path::Path;

use veriflash_mdm9x07::emulator::test_programmer;

/// A signed MDM9607 package (programmer, sbl, boot) in `dir/update.vfp`, key `dir/k.pem`.
fn modem_package(dir: &Path) {
    std::fs::write(dir.join("prog.mbn"), test_programmer(&[0x5A; 9000])).unwrap();
    let image = |len: usize, seed: u8| -> Vec<u8> {
        (0..len)
            .map(|i| (i as u32).wrapping_mul(2_654_435_761) as u8 ^ seed)
            .collect()
    };
    std::fs::write(dir.join("sbl.img"), image(70_001, 1)).unwrap();
    std::fs::write(dir.join("boot.img"), image(250_003, 2)).unwrap();
    std::fs::write(
        dir.join("update.toml"),
        "product = \"acme-hotspot-x1\"\nchipset = \"mdm9607\"\nversion = \"2.4.0\"\nsecurity_version = 7\nchunk_size = 32768\n\
         [[image]]\nname = \"programmer\"\npartition = \"programmer\"\nfile = \"prog.mbn\"\n\
         [[image]]\nname = \"sbl\"\npartition = \"sbl\"\nfile = \"sbl.img\"\n\
         [[image]]\nname = \"boot\"\npartition = \"boot\"\nfile = \"boot.img\"\n",
    )
    .unwrap();
    let o = veriflash(&["keygen", "--out", "k.pem"], dir);
    assert!(o.status.success(), "{}", text(&o));
    let o = veriflash(
        &[
            "pack",
            "--manifest",
            "update.toml",
            "--key",
            "k.pem",
            "--out",
            "update.vfp",
        ],
        dir,
    );
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn three_emulated_modems_are_flashed_at_once_with_a_summary() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    modem_package(dir);
    let target = "mdm9x07:emulator";
    let o = veriflash(
        &[
            "flash",
            "update.vfp",
            "--trust",
            "k.pub.pem",
            "--target",
            target,
            "--target",
            target,
            "--target",
            target,
        ],
        dir,
    );
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    for i in 0..3 {
        assert!(
            out.contains(&format!("[{i} {target}] flash        100%")),
            "{out}"
        );
        assert!(
            out.contains(&format!("[{i} {target}] commit       ok")),
            "{out}"
        );
    }
    assert!(out.contains("3 of 3 devices installed"), "{out}");
}

#[test]
fn one_refused_device_sets_the_exit_status_and_the_others_install() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    modem_package(dir);
    // A file-backed device of another product: refused by the policy, nothing written.
    std::fs::write(
        dir.join("layout.toml"),
        "product = \"acme-router-z9\"\nchipset = \"mdm9607\"\nhardware_revision = \"r2\"\n\
         [[partition]]\nname = \"boot\"\nsize = 1048576\nab = true\n",
    )
    .unwrap();
    let o = veriflash(
        &["device", "init", "--layout", "layout.toml", "file:dev.img"],
        dir,
    );
    assert!(o.status.success(), "{}", text(&o));
    let before = std::fs::read(dir.join("dev.img")).unwrap();
    let o = veriflash(
        &[
            "flash",
            "update.vfp",
            "--trust",
            "k.pub.pem",
            "--target",
            "mdm9x07:emulator",
            "--target",
            "file:dev.img",
            "--target",
            "mdm9x07:emulator",
            "--json",
        ],
        dir,
    );
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(o.status.code(), Some(40), "{}", text(&o));
    let results: Vec<serde_json::Value> = out
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == "device_result")
        .collect();
    assert_eq!(results.len(), 3, "{out}");
    assert_eq!(results[0]["ok"], true);
    assert_eq!(results[1]["ok"], false);
    assert_eq!(results[1]["error"]["kind"], "wrong_product");
    assert_eq!(results[2]["ok"], true);
    // Every event line names its device.
    assert!(
        out.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["event"] == "progress")
            .all(|v| v["device"] == 0 || v["device"] == 2),
        "the refused device got no chunk: {out}"
    );
    assert_eq!(std::fs::read(dir.join("dev.img")).unwrap(), before);
}
