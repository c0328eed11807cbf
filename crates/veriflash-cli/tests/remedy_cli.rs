//! The wrong file in the right place: each failure says what the file is and names the one
//! that belongs there (issue 19, "every failure names its fix").

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;
use common::{code, ok, stdout, veriflash};

use std::path::Path;

use serde_json::Value;

/// A key pair and a one-image description in `dir`.
fn setup(dir: &Path) {
    std::fs::write(dir.join("boot.img"), vec![0x42u8; 70_000]).unwrap();
    std::fs::write(
        dir.join("update.toml"),
        "product = \"acme-hotspot-x1\"\nchipset = \"mdm9607\"\nversion = \"1.0\"\n\
         security_version = 1\n[[image]]\nname = \"boot\"\npartition = \"boot\"\nfile = \"boot.img\"\n",
    )
    .unwrap();
    ok(&veriflash(&["keygen", "--out", "vendor.pem"], dir));
}

/// The `--json` error a failed run printed last.
fn json_error(out: &std::process::Output) -> Value {
    let text = stdout(out);
    let v: Value = serde_json::from_str(text.lines().last().unwrap_or_default()).unwrap();
    assert_eq!(v["ok"], false, "{v}");
    v["error"].clone()
}

#[test]
fn a_private_key_given_to_trust_names_the_public_key_beside_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    setup(dir);
    ok(&veriflash(
        &[
            "pack",
            "--manifest",
            "update.toml",
            "--key",
            "vendor.pem",
            "--out",
            "update.vfp",
        ],
        dir,
    ));
    let out = veriflash(
        &["verify", "--trust", "vendor.pem", "update.vfp", "--json"],
        dir,
    );
    assert_eq!(code(&out), 71);
    let e = json_error(&out);
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("vendor.pem holds a private key"),
        "{e}"
    );
    let remedy = e["remedy"].as_str().unwrap();
    assert!(
        remedy.contains("vendor.pub.pem") && remedy.contains("never the private key"),
        "{e}"
    );
    // What the remedy says works.
    ok(&veriflash(
        &["verify", "--trust", "vendor.pub.pem", "update.vfp"],
        dir,
    ));
}

#[test]
fn a_public_key_given_to_key_lists_the_private_key_forms_accepted() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    setup(dir);
    let out = veriflash(
        &[
            "pack",
            "--manifest",
            "update.toml",
            "--key",
            "vendor.pub.pem",
            "--out",
            "update.vfp",
        ],
        dir,
    );
    assert_eq!(code(&out), 71);
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("vendor.pub.pem holds a public key or certificate, not a private key"),
        "{text}"
    );
    for form in [
        "vendor.pem beside it",
        "PKCS#8 `PRIVATE KEY`",
        "SEC1 `EC PRIVATE KEY`",
        "PKCS#1 `RSA PRIVATE KEY`",
    ] {
        assert!(text.contains(form), "{form}: {text}");
    }
    assert!(!dir.join("update.vfp").exists());
}

#[test]
fn an_unsigned_package_says_so_and_how_to_sign_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    setup(dir);
    ok(&veriflash(
        &[
            "pack",
            "--manifest",
            "update.toml",
            "--unsigned",
            "--out",
            "update.tbs",
        ],
        dir,
    ));
    std::fs::write(
        dir.join("layout.toml"),
        "product = \"acme-hotspot-x1\"\nchipset = \"mdm9607\"\nhardware_revision = \"r1\"\n\
         [[partition]]\nname = \"boot\"\nsize = 1048576\nab = true\n",
    )
    .unwrap();
    ok(&veriflash(
        &[
            "device",
            "init",
            "--layout",
            "layout.toml",
            "file:device.img",
        ],
        dir,
    ));
    for args in [
        vec![
            "verify",
            "--trust",
            "vendor.pub.pem",
            "update.tbs",
            "--json",
        ],
        vec![
            "flash",
            "update.tbs",
            "--trust",
            "vendor.pub.pem",
            "--target",
            "file:device.img",
            "--json",
        ],
    ] {
        let out = veriflash(&args, dir);
        assert_eq!(code(&out), 10, "{args:?}");
        let e = json_error(&out);
        assert!(
            e["message"].as_str().unwrap().contains("unsigned package"),
            "{e}"
        );
        let remedy = e["remedy"].as_str().unwrap();
        assert!(
            remedy.contains("veriflash sign --manifest") && !remedy.contains("download"),
            "{e}"
        );
    }
}

#[test]
fn a_misspelt_description_key_is_refused_before_anything_is_signed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    setup(dir);
    let text = std::fs::read_to_string(dir.join("update.toml")).unwrap();
    std::fs::write(
        dir.join("typo.toml"),
        text.replace(
            "security_version = 1",
            "security_version = 1\nhardware_revision = [\"r2\"]",
        ),
    )
    .unwrap();
    let pack = |extra: &[&str]| {
        let mut args = vec![
            "pack",
            "--manifest",
            "typo.toml",
            "--key",
            "vendor.pem",
            "--out",
            "typo.vfp",
        ];
        args.extend_from_slice(extra);
        veriflash(&args, dir)
    };
    let out = pack(&[]);
    assert_eq!(code(&out), 72);
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains(
            "typo.toml: unknown key 'hardware_revision' (line 5); did you mean 'hardware_revisions'?"
        ),
        "{text}"
    );
    assert!(text.contains("--allow-unknown-keys"), "{text}");
    assert!(!dir.join("typo.vfp").exists());

    // Forward compatibility, asked for: packed, the key named as ignored.
    let out = pack(&["--allow-unknown-keys"]);
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("warning: typo.toml: unknown key 'hardware_revision' (line 5) ignored"),
        "{text}"
    );

    // `sign` reads the same description: the same rule, the same flag.
    ok(&veriflash(
        &[
            "pack",
            "--manifest",
            "typo.toml",
            "--unsigned",
            "--allow-unknown-keys",
            "--out",
            "typo.tbs",
        ],
        dir,
    ));
    let sign = [
        "sign",
        "--manifest",
        "typo.toml",
        "--tbs",
        "typo.tbs",
        "--signature",
        "typo.tbs",
        "--pubkey",
        "vendor.pub.pem",
        "--out",
        "signed.vfp",
    ];
    assert_eq!(code(&veriflash(&sign, dir)), 72);
}

#[test]
fn a_missing_description_key_names_the_misspelt_one() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    setup(dir);
    let text = std::fs::read_to_string(dir.join("update.toml")).unwrap();
    std::fs::write(
        dir.join("typo.toml"),
        text.replace("version = \"1.0\"", "verison = \"1.0\""),
    )
    .unwrap();
    for extra in [None, Some("--allow-unknown-keys")] {
        let mut args = vec![
            "pack",
            "--manifest",
            "typo.toml",
            "--key",
            "vendor.pem",
            "--out",
            "typo.vfp",
        ];
        args.extend(extra);
        let out = veriflash(&args, dir);
        assert_eq!(code(&out), 72, "{extra:?}");
        let text = String::from_utf8_lossy(&out.stderr);
        assert!(
            text.contains("missing key 'version'; did you mean 'verison' (line 3)?"),
            "{text}"
        );
    }
}

#[test]
fn a_misspelt_layout_key_is_refused_naming_the_key_meant() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(
        dir.join("layout.toml"),
        "product = \"p\"\nchipset = \"c\"\nhardware_revision = \"r1\"\nerase_blocks = 65536\n\
         [[partition]]\nname = \"boot\"\nsize = 1048576\nab = true\n",
    )
    .unwrap();
    let out = veriflash(
        &["device", "init", "--layout", "layout.toml", "file:dev.img"],
        dir,
    );
    assert_eq!(code(&out), 72);
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains(
            "layout.toml: unknown key 'erase_blocks' (line 4); did you mean 'erase_block'?"
        ),
        "{text}"
    );
    assert!(!dir.join("dev.img").exists());
}
