//! Root rotation from the command line: a description's `[trust_rotation]`, `inspect`,
//! `verify`, and `flash --save-rotation` adopting the new anchors only after a committed install.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;
use common::{code, ok, veriflash};

use std::path::Path;

const LAYOUT: &str = r#"
product = "acme-hotspot-x1"
chipset = "mdm9607"
hardware_revision = "r2"
erase_block = 65536
write_unit = 4096

[[partition]]
name = "boot"
size = 1048576
ab = true
"#;

/// Writes `NAME.toml` and packs it as `NAME.vfp`, signed by `keys`.
fn pack(dir: &Path, name: &str, product: &str, sv: u64, rotate_to: Option<&str>, keys: &[&str]) {
    let mut text = format!(
        "product = \"{product}\"\nchipset = \"mdm9607\"\nversion = \"v{sv}\"\nsecurity_version = {sv}\n\
         [[image]]\nname = \"boot\"\npartition = \"boot\"\nfile = \"boot.img\"\nchunk_size = 65536\n"
    );
    if let Some(anchor) = rotate_to {
        text.push_str(&format!(
            "[trust_rotation]\nversion = 1\nthreshold = 1\nanchors = [\"{anchor}\"]\n"
        ));
    }
    std::fs::write(dir.join(format!("{name}.toml")), text).unwrap();
    let toml = format!("{name}.toml");
    let out = format!("{name}.vfp");
    let mut args = vec!["pack", "--manifest", &toml, "--out", &out];
    for key in keys {
        args.extend(["--key", key]);
    }
    ok(&veriflash(&args, dir));
}

#[test]
fn flash_adopts_a_rotation_only_after_it_installed_and_the_old_key_is_then_retired() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(dir.join("layout.toml"), LAYOUT).unwrap();
    std::fs::write(dir.join("boot.img"), vec![0x42u8; 200_000]).unwrap();
    ok(&veriflash(&["keygen", "--out", "old.pem"], dir));
    ok(&veriflash(&["keygen", "--out", "new.pem"], dir));
    ok(&veriflash(
        &["device", "init", "--layout", "layout.toml", "file:dev.img"],
        dir,
    ));
    pack(
        dir,
        "rot",
        "acme-hotspot-x1",
        2,
        Some("new.pub.pem"),
        &["old.pem", "new.pem"],
    );
    pack(
        dir,
        "rot-old-only",
        "acme-hotspot-x1",
        2,
        Some("new.pub.pem"),
        &["old.pem"],
    );
    pack(
        dir,
        "rot-other",
        "other-modem",
        2,
        Some("new.pub.pem"),
        &["old.pem", "new.pem"],
    );
    pack(dir, "by-old", "acme-hotspot-x1", 3, None, &["old.pem"]);
    pack(dir, "by-new", "acme-hotspot-x1", 3, None, &["new.pem"]);

    let shown = ok(&veriflash(&["inspect", "rot.vfp"], dir));
    assert!(
        shown.contains("trust rotation to anchor set version 1 (1 of 1 must sign)"),
        "{shown}"
    );
    let checked = ok(&veriflash(
        &["verify", "--trust", "old.pub.pem", "rot.vfp"],
        dir,
    ));
    assert!(
        checked.contains("rotates the trust anchors to version 1"),
        "{checked}"
    );

    // Not proven by the new key: refused with its own code, device untouched.
    let refused = veriflash(
        &["verify", "--trust", "old.pub.pem", "rot-old-only.vfp"],
        dir,
    );
    assert_eq!(
        code(&refused),
        28,
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    // A rotation package that fails policy: nothing saved.
    let other = veriflash(
        &[
            "flash",
            "rot-other.vfp",
            "--trust",
            "old.pub.pem",
            "--target",
            "file:dev.img",
            "--save-rotation",
            "anchors.der",
        ],
        dir,
    );
    assert_eq!(code(&other), 40);
    assert!(!dir.join("anchors.der").exists());

    let flashed = ok(&veriflash(
        &[
            "flash",
            "rot.vfp",
            "--trust",
            "old.pub.pem",
            "--target",
            "file:dev.img",
            "--save-rotation",
            "anchors.der",
        ],
        dir,
    ));
    assert!(
        flashed.contains("trust anchors rotated to version 1"),
        "{flashed}"
    );
    assert!(dir.join("anchors.der").exists());

    // From now on: the old key is not trusted, the new one is, and the rotation cannot replay.
    let old = veriflash(&["verify", "--trust", "anchors.der", "by-old.vfp"], dir);
    assert_eq!(code(&old), 21);
    ok(&veriflash(
        &["verify", "--trust", "anchors.der", "by-new.vfp"],
        dir,
    ));
    let replay = veriflash(
        &[
            "flash",
            "rot.vfp",
            "--trust",
            "anchors.der",
            "--target",
            "file:dev.img",
        ],
        dir,
    );
    assert_eq!(code(&replay), 28);
    ok(&veriflash(
        &[
            "flash",
            "by-new.vfp",
            "--trust",
            "anchors.der",
            "--target",
            "file:dev.img",
        ],
        dir,
    ));
}

#[test]
fn a_rotation_is_split_signed_by_the_current_and_the_new_key_made_elsewhere() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(dir.join("boot.img"), vec![0x42u8; 100_000]).unwrap();
    // Keys held elsewhere (here: openssl, as an HSM would hold them).
    for name in ["old", "new"] {
        common::openssl(
            &[
                "ecparam",
                "-name",
                "prime256v1",
                "-genkey",
                "-noout",
                "-out",
                &format!("{name}.pem"),
            ],
            dir,
        );
        common::openssl(
            &[
                "pkey",
                "-in",
                &format!("{name}.pem"),
                "-pubout",
                "-out",
                &format!("{name}.pub.pem"),
            ],
            dir,
        );
    }
    std::fs::write(
        dir.join("rot.toml"),
        "product = \"p\"\nchipset = \"mdm9607\"\nversion = \"1\"\nsecurity_version = 1\n\
         [[image]]\nname = \"boot\"\npartition = \"boot\"\nfile = \"boot.img\"\n\
         [trust_rotation]\nversion = 1\nthreshold = 1\nanchors = [\"new.pub.pem\"]\n",
    )
    .unwrap();
    ok(&veriflash(
        &[
            "pack",
            "--manifest",
            "rot.toml",
            "--unsigned",
            "--out",
            "rot.tbs",
        ],
        dir,
    ));
    for name in ["old", "new"] {
        common::openssl(
            &[
                "dgst",
                "-sha256",
                "-sign",
                &format!("{name}.pem"),
                "-out",
                &format!("{name}.sig"),
                "rot.tbs",
            ],
            dir,
        );
    }
    // One --pubkey per --signature.
    let short = veriflash(
        &[
            "sign",
            "--manifest",
            "rot.toml",
            "--tbs",
            "rot.tbs",
            "--signature",
            "old.sig",
            "--signature",
            "new.sig",
            "--pubkey",
            "old.pub.pem",
            "--out",
            "rot.vfp",
        ],
        dir,
    );
    assert_eq!(
        code(&short),
        72,
        "{}",
        String::from_utf8_lossy(&short.stderr)
    );
    let signed = ok(&veriflash(
        &[
            "sign",
            "--manifest",
            "rot.toml",
            "--tbs",
            "rot.tbs",
            "--signature",
            "old.sig",
            "--pubkey",
            "old.pub.pem",
            "--signature",
            "new.sig",
            "--pubkey",
            "new.pub.pem",
            "--out",
            "rot.vfp",
        ],
        dir,
    ));
    assert_eq!(signed.matches("signed by key").count(), 2, "{signed}");
    let checked = ok(&veriflash(
        &["verify", "--trust", "old.pub.pem", "rot.vfp"],
        dir,
    ));
    assert!(
        checked.contains("authorized by 1 current and proven by 1 new anchor"),
        "{checked}"
    );
}
