//! `veriflash pack --delta-from`, `inspect --delta-from` and `flash` of a delta package on a
//! file-backed device, as a user runs them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;
use common::{code, ok, openssl, stdout, veriflash};

use std::path::Path;

use serde_json::Value;

const LAYOUT: &str = r#"
product = "acme-hotspot-x1"
chipset = "mdm9607"
hardware_revision = "r2"
erase_block = 65536
write_unit = 4096

[[partition]]
name = "system"
size = 4194304
ab = true
"#;

fn description(version: u32) -> String {
    format!(
        "product = \"acme-hotspot-x1\"\nchipset = \"mdm9607\"\nversion = \"v{version}\"\n\
         security_version = {version}\n\
         [[image]]\nname = \"rootfs\"\npartition = \"system\"\nfile = \"rootfs-v{version}.img\"\nchunk_size = 65536\n"
    )
}

/// v1 and v2 of a 1.5 MB image: v2 has 40 bytes inserted at 500 000 and one changed at 1 000 000.
fn setup(dir: &Path) {
    std::fs::write(dir.join("layout.toml"), LAYOUT).unwrap();
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let v1: Vec<u8> = (0..1_500_000)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[0]
        })
        .collect();
    let mut v2 = v1.clone();
    v2.splice(500_000..500_000, [7u8; 40]);
    v2[1_000_000] ^= 0xFF;
    std::fs::write(dir.join("rootfs-v1.img"), &v1).unwrap();
    std::fs::write(dir.join("rootfs-v2.img"), &v2).unwrap();
    ok(&veriflash(&["keygen", "--out", "vendor.pem"], dir));
    for version in [1, 2] {
        std::fs::write(dir.join(format!("v{version}.toml")), description(version)).unwrap();
        ok(&veriflash(
            &[
                "pack",
                "--manifest",
                &format!("v{version}.toml"),
                "--key",
                "vendor.pem",
                "--out",
                &format!("v{version}.vfp"),
            ],
            dir,
        ));
    }
}

fn flash(dir: &Path, package: &str, target: &str) -> std::process::Output {
    veriflash(
        &[
            "flash",
            package,
            "--trust",
            "vendor.pub.pem",
            "--target",
            target,
        ],
        dir,
    )
}

#[test]
fn pack_delta_from_inspect_and_flash_a_delta_package() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    setup(dir);

    // What a delta would cost, before making it.
    let v: Value = serde_json::from_str(&ok(&veriflash(
        &[
            "inspect",
            "--delta-from",
            "v1.vfp",
            "--trust",
            "vendor.pub.pem",
            "v2.vfp",
            "--json",
        ],
        dir,
    )))
    .unwrap();
    let delta = &v["delta"];
    assert_eq!(delta["full_bytes"], 1_500_040);
    let image = &delta["images"][0];
    assert!(image["from_source"].as_u64().unwrap() >= 18, "{image}");
    assert_eq!(
        image["from_source"].as_u64().unwrap()
            + image["patched"].as_u64().unwrap()
            + image["carried"].as_u64().unwrap(),
        image["chunks"].as_u64().unwrap()
    );
    let cost = delta["delta_bytes"].as_u64().unwrap();
    assert!(cost < 140_000, "{cost}");
    // --delta-from needs --trust: a usage error.
    assert_eq!(
        code(&veriflash(
            &["inspect", "--delta-from", "v1.vfp", "v2.vfp"],
            dir
        )),
        2
    );

    let packed = ok(&veriflash(
        &[
            "pack",
            "--manifest",
            "v2.toml",
            "--key",
            "vendor.pem",
            "--delta-from",
            "v1.vfp",
            "--out",
            "v1-to-v2.vfp",
        ],
        dir,
    ));
    assert!(packed.contains("delta of 'rootfs'"), "{packed}");
    let size = |name: &str| std::fs::metadata(dir.join(name)).unwrap().len();
    assert!(size("v1-to-v2.vfp") * 5 < size("v2.vfp"));
    let v: Value =
        serde_json::from_str(&ok(&veriflash(&["inspect", "v1-to-v2.vfp", "--json"], dir))).unwrap();
    assert_eq!(v["package"]["format_version"], 4);
    assert_eq!(v["package"]["payload_len"].as_u64().unwrap(), cost);
    let source = &v["package"]["images"][0]["source"];
    assert_eq!(source["size"], 1_500_000);
    let shown = stdout(&veriflash(&["inspect", "v1-to-v2.vfp"], dir));
    assert!(shown.contains("delta of the image of"), "{shown}");
    // An old package signed by a key nobody trusts is never packed against.
    ok(&veriflash(&["keygen", "--out", "other.pem"], dir));
    let o = veriflash(
        &[
            "pack",
            "--manifest",
            "v2.toml",
            "--key",
            "other.pem",
            "--delta-from",
            "v1.vfp",
            "--out",
            "bad.vfp",
        ],
        dir,
    );
    assert_eq!(code(&o), 21, "{}", stdout(&o));
    // ... unless --delta-trust names its key.
    ok(&veriflash(
        &[
            "pack",
            "--manifest",
            "v2.toml",
            "--key",
            "other.pem",
            "--delta-from",
            "v1.vfp",
            "--delta-trust",
            "vendor.pub.pem",
            "--out",
            "other.vfp",
        ],
        dir,
    ));

    ok(&veriflash(
        &["device", "init", "--layout", "layout.toml", "file:dev.img"],
        dir,
    ));
    // Nothing installed yet: the delta is refused before anything is written.
    let before = std::fs::read(dir.join("dev.img")).unwrap();
    let o = flash(dir, "v1-to-v2.vfp", "file:dev.img");
    assert_eq!(code(&o), 34, "{}", common::stderr(&o));
    assert_eq!(std::fs::read(dir.join("dev.img")).unwrap(), before);
    ok(&flash(dir, "v1.vfp", "file:dev.img"));
    ok(&flash(dir, "v1-to-v2.vfp", "file:dev.img"));
    let v: Value = serde_json::from_str(&ok(&veriflash(
        &["status", "--target", "file:dev.img", "--json"],
        dir,
    )))
    .unwrap();
    assert_eq!(v["status"]["installed_version"], "v2", "{v}");
    // A device that runs v2 already gets the delta refused with the versions named.
    let o = flash(dir, "v1-to-v2.vfp", "file:dev.img");
    assert_eq!(code(&o), 34);
    assert!(
        common::stderr(&o).contains("software version v2"),
        "{}",
        common::stderr(&o)
    );
    // Checked against the device's record instead: the same refusal, from what v2's install
    // recorded, nothing written; on a device running v1 the same install.
    let flash_recorded = |target: &str| {
        veriflash(
            &[
                "flash",
                "v1-to-v2.vfp",
                "--trust",
                "vendor.pub.pem",
                "--target",
                target,
                "--source-check",
                "recorded",
            ],
            dir,
        )
    };
    let before = std::fs::read(dir.join("dev.img")).unwrap();
    let o = flash_recorded("file:dev.img");
    assert_eq!(code(&o), 34, "{}", common::stderr(&o));
    assert!(
        common::stderr(&o).contains("recorded"),
        "{}",
        common::stderr(&o)
    );
    assert_eq!(std::fs::read(dir.join("dev.img")).unwrap(), before);
    ok(&veriflash(
        &["device", "init", "--layout", "layout.toml", "file:v1.img"],
        dir,
    ));
    ok(&flash(dir, "v1.vfp", "file:v1.img"));
    ok(&flash_recorded("file:v1.img"));
    let v: Value = serde_json::from_str(&ok(&veriflash(
        &["status", "--target", "file:v1.img", "--json"],
        dir,
    )))
    .unwrap();
    assert_eq!(v["status"]["installed_version"], "v2", "{v}");
    let o = veriflash(
        &[
            "flash",
            "v1-to-v2.vfp",
            "--trust",
            "vendor.pub.pem",
            "--target",
            "file:v1.img",
            "--source-check",
            "sometimes",
        ],
        dir,
    );
    assert_eq!(code(&o), 2, "a usage error");
}

#[test]
fn split_signing_a_delta_needs_the_same_delta_from_on_both_steps() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    setup(dir);
    // Step 1 has no private key: the old package verifies against --delta-trust.
    ok(&veriflash(
        &[
            "pack",
            "--manifest",
            "v2.toml",
            "--unsigned",
            "--delta-from",
            "v1.vfp",
            "--delta-trust",
            "vendor.pub.pem",
            "--out",
            "delta.tbs",
        ],
        dir,
    ));
    openssl(
        &[
            "dgst",
            "-sha256",
            "-sign",
            "vendor.pem",
            "-out",
            "sig.der",
            "delta.tbs",
        ],
        dir,
    );
    let sign = |extra: &[&str], out: &str| {
        let mut args = vec![
            "sign",
            "--manifest",
            "v2.toml",
            "--tbs",
            "delta.tbs",
            "--signature",
            "sig.der",
            "--pubkey",
            "vendor.pub.pem",
            "--out",
            out,
        ];
        args.extend_from_slice(extra);
        veriflash(&args, dir)
    };
    // Without --delta-from the bytes to sign are another package's: refused.
    assert_eq!(code(&sign(&[], "full.vfp")), 72);
    // With it (the old package verifies against the signer's --pubkey), the delta is written.
    ok(&sign(&["--delta-from", "v1.vfp"], "delta.vfp"));
    ok(&veriflash(
        &["verify", "--trust", "vendor.pub.pem", "delta.vfp"],
        dir,
    ));
    ok(&veriflash(
        &["device", "init", "--layout", "layout.toml", "file:dev.img"],
        dir,
    ));
    ok(&flash(dir, "v1.vfp", "file:dev.img"));
    ok(&flash(dir, "delta.vfp", "file:dev.img"));
}

#[test]
fn a_delta_package_is_installed_from_a_plain_http_server() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    setup(dir);
    std::fs::create_dir(dir.join("www")).unwrap();
    ok(&veriflash(
        &[
            "pack",
            "--manifest",
            "v2.toml",
            "--key",
            "vendor.pem",
            "--delta-from",
            "v1.vfp",
            "--out",
            "www/delta.vfp",
        ],
        dir,
    ));
    let (_runtime, addr) = common::serve_dir(&dir.join("www"));
    let url = format!("http://{addr}/delta.vfp");
    ok(&veriflash(
        &["device", "init", "--layout", "layout.toml", "file:dev.img"],
        dir,
    ));
    // On a device that does not run its source, `flash URL` downloads it and refuses it with
    // 34 before anything is written.
    let before = std::fs::read(dir.join("dev.img")).unwrap();
    let o = flash(dir, &url, "file:dev.img");
    assert_eq!(code(&o), 34, "{}", common::stderr(&o));
    assert_eq!(std::fs::read(dir.join("dev.img")).unwrap(), before);
    // On one that runs v1, `flash URL` installs it in one step, ...
    ok(&flash(dir, "v1.vfp", "file:dev.img"));
    ok(&flash(dir, &url, "file:dev.img"));
    let status = || -> Value {
        serde_json::from_str(&ok(&veriflash(
            &["status", "--target", "file:dev.img", "--json"],
            dir,
        )))
        .unwrap()
    };
    assert_eq!(status()["status"]["installed_version"], "v2");
    // ... and `fetch` then `flash FILE` does the same in two.
    ok(&veriflash(
        &["device", "init", "--layout", "layout.toml", "file:dev2.img"],
        dir,
    ));
    ok(&flash(dir, "v1.vfp", "file:dev2.img"));
    // Downloaded, every stored byte checked, it is the very package; installed, v2 runs.
    let fetched: Value = serde_json::from_str(
        ok(&veriflash(
            &[
                "fetch",
                &url,
                "--out",
                "got.vfp",
                "--trust",
                "vendor.pub.pem",
                "--json",
            ],
            dir,
        ))
        .lines()
        .last()
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        std::fs::read(dir.join("got.vfp")).unwrap(),
        std::fs::read(dir.join("www/delta.vfp")).unwrap(),
        "{fetched}"
    );
    ok(&flash(dir, "got.vfp", "file:dev2.img"));
    let v: Value = serde_json::from_str(&ok(&veriflash(
        &["status", "--target", "file:dev2.img", "--json"],
        dir,
    )))
    .unwrap();
    assert_eq!(v["status"]["installed_version"], "v2", "{v}");
}
