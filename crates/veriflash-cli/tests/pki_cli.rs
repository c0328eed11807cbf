//! The PKI side of the CLI: RSA keygen, packing with certificate chains made by openssl,
//! `verify --trust root.pem` with the clock / `--no-clock` / `--threshold`, `inspect` printing
//! chains, and split signing (`pack --unsigned` + `openssl dgst -sign` + `veriflash sign`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;
use common::{ok, openssl, veriflash};

use std::path::Path;

fn setup(d: &Path, leaf_days: &str) {
    std::fs::create_dir_all(d.join("images")).unwrap();
    std::fs::write(d.join("images/boot.img"), vec![7u8; 100_000]).unwrap();
    std::fs::write(
        d.join("update.toml"),
        "product = \"acme\"\nchipset = \"mdm9607\"\nversion = \"1\"\nsecurity_version = 1\n[[image]]\nname = \"boot\"\npartition = \"boot\"\nfile = \"images/boot.img\"\n",
    )
    .unwrap();
    std::fs::write(
        d.join("ca.ext"),
        "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign\n",
    )
    .unwrap();
    std::fs::write(
        d.join("leaf.ext"),
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=codeSigning\n",
    )
    .unwrap();
    openssl(
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            "root.key",
        ],
        d,
    );
    openssl(
        &[
            "req", "-new", "-key", "root.key", "-subj", "/CN=Root", "-out", "root.csr",
        ],
        d,
    );
    openssl(
        &[
            "x509", "-req", "-in", "root.csr", "-signkey", "root.key", "-extfile", "ca.ext",
            "-days", "30", "-out", "root.pem",
        ],
        d,
    );
    openssl(
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            "inter.key",
        ],
        d,
    );
    openssl(
        &[
            "req",
            "-new",
            "-key",
            "inter.key",
            "-subj",
            "/CN=Inter",
            "-out",
            "inter.csr",
        ],
        d,
    );
    openssl(
        &[
            "x509",
            "-req",
            "-in",
            "inter.csr",
            "-CA",
            "root.pem",
            "-CAkey",
            "root.key",
            "-CAcreateserial",
            "-extfile",
            "ca.ext",
            "-days",
            "30",
            "-out",
            "inter.pem",
        ],
        d,
    );
    ok(&veriflash(
        &["keygen", "--algo", "rsa3072", "--out", "leaf.pem"],
        d,
    ));
    openssl(
        &[
            "req", "-new", "-key", "leaf.pem", "-subj", "/CN=Leaf", "-out", "leaf.csr",
        ],
        d,
    );
    openssl(
        &[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "inter.pem",
            "-CAkey",
            "inter.key",
            "-CAcreateserial",
            "-extfile",
            "leaf.ext",
            "-days",
            leaf_days,
            "-out",
            "leaf.crt",
        ],
        d,
    );
    let chain = [
        std::fs::read(d.join("leaf.crt")).unwrap(),
        std::fs::read(d.join("inter.pem")).unwrap(),
    ]
    .concat();
    std::fs::write(d.join("chain.pem"), chain).unwrap();
}

#[test]
fn packs_with_an_openssl_chain_and_verifies_against_the_root_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d, "30");
    ok(&veriflash(
        &[
            "pack",
            "--manifest",
            "update.toml",
            "--key",
            "leaf.pem",
            "--cert",
            "chain.pem",
            "--out",
            "u.vfp",
        ],
        d,
    ));
    let inspect = ok(&veriflash(&["inspect", "u.vfp"], d));
    assert!(
        inspect.contains("rsa-pkcs1-sha256")
            && inspect.contains("leaf  CN=Leaf")
            && inspect.contains("chain CN=Inter"),
        "{inspect}"
    );
    ok(&veriflash(&["verify", "--trust", "root.pem", "u.vfp"], d));
    ok(&veriflash(
        &["verify", "--trust", "root.pem", "--no-clock", "u.vfp"],
        d,
    ));
    let two = veriflash(
        &["verify", "--trust", "root.pem", "--threshold", "2", "u.vfp"],
        d,
    );
    assert_eq!(two.status.code(), Some(24));
    // Another root: the chain leads nowhere trusted.
    openssl(
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            "other.key",
        ],
        d,
    );
    openssl(
        &[
            "req",
            "-new",
            "-x509",
            "-key",
            "other.key",
            "-subj",
            "/CN=Other",
            "-days",
            "30",
            "-out",
            "other.pem",
        ],
        d,
    );
    let wrong = veriflash(&["verify", "--trust", "other.pem", "u.vfp"], d);
    assert_eq!(
        wrong.status.code(),
        Some(26),
        "{}",
        String::from_utf8_lossy(&wrong.stderr)
    );
}

#[test]
fn expired_leaf_is_refused_with_the_clock_and_accepted_without() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // -days -1: notAfter is yesterday.
    setup(d, "-1");
    let pack = [
        "pack",
        "--manifest",
        "update.toml",
        "--key",
        "leaf.pem",
        "--cert",
        "chain.pem",
        "--out",
        "u.vfp",
    ];
    // The signer hears it first: refused, naming the dates and the time now.
    let refused = veriflash(&pack, d);
    assert_eq!(refused.status.code(), Some(27));
    let text = String::from_utf8_lossy(&refused.stderr);
    for part in [
        "the signing certificate 'CN=Leaf' has expired: notBefore ",
        ", notAfter ",
        ", now ",
        "--force",
    ] {
        assert!(text.contains(part), "{part}: {text}");
    }
    assert!(!d.join("u.vfp").exists());
    // --force: signed, with the same words as a warning.
    let forced = veriflash(&[&pack[..], &["--force"]].concat(), d);
    ok(&forced);
    let text = String::from_utf8_lossy(&forced.stderr);
    assert!(
        text.contains("warning: the signing certificate 'CN=Leaf' has expired"),
        "{text}"
    );
    let out = veriflash(&["verify", "--trust", "root.pem", "u.vfp"], d);
    assert_eq!(
        out.status.code(),
        Some(27),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    ok(&veriflash(
        &["verify", "--trust", "root.pem", "--no-clock", "u.vfp"],
        d,
    ));
    // flash judges the chain exactly as verify does: refused with the clock, nothing written.
    std::fs::write(
        d.join("layout.toml"),
        "product = \"acme\"\nchipset = \"mdm9607\"\nhardware_revision = \"r1\"\n\
         [[partition]]\nname = \"boot\"\nsize = 1048576\nab = true\n",
    )
    .unwrap();
    ok(&veriflash(
        &["device", "init", "--layout", "layout.toml", "file:dev.img"],
        d,
    ));
    let before = std::fs::read(d.join("dev.img")).unwrap();
    let flash = [
        "flash",
        "u.vfp",
        "--trust",
        "root.pem",
        "--target",
        "file:dev.img",
    ];
    assert_eq!(veriflash(&flash, d).status.code(), Some(27));
    assert_eq!(std::fs::read(d.join("dev.img")).unwrap(), before);
    ok(&veriflash(&[&flash[..], &["--no-clock"]].concat(), d));
}

#[test]
fn split_signing_attaches_openssl_signatures() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d, "30");
    ok(&veriflash(
        &[
            "pack",
            "--manifest",
            "update.toml",
            "--unsigned",
            "--out",
            "u.tbs",
        ],
        d,
    ));
    openssl(
        &[
            "dgst", "-sha256", "-sign", "leaf.pem", "-out", "sig.der", "u.tbs",
        ],
        d,
    );
    ok(&veriflash(
        &[
            "sign",
            "--manifest",
            "update.toml",
            "--tbs",
            "u.tbs",
            "--signature",
            "sig.der",
            "--cert",
            "chain.pem",
            "--out",
            "u.vfp",
        ],
        d,
    ));
    ok(&veriflash(&["verify", "--trust", "root.pem", "u.vfp"], d));
    openssl(
        &[
            "dgst",
            "-sha256",
            "-sign",
            "leaf.pem",
            "-sigopt",
            "rsa_padding_mode:pss",
            "-sigopt",
            "rsa_pss_saltlen:32",
            "-out",
            "pss.der",
            "u.tbs",
        ],
        d,
    );
    ok(&veriflash(
        &[
            "sign",
            "--manifest",
            "update.toml",
            "--tbs",
            "u.tbs",
            "--signature",
            "pss.der",
            "--cert",
            "chain.pem",
            "--pss",
            "--out",
            "p.vfp",
        ],
        d,
    ));
    ok(&veriflash(&["verify", "--trust", "root.pem", "p.vfp"], d));
    // PSS presented as PKCS#1 v1.5 is refused before anything is written.
    let confused = veriflash(
        &[
            "sign",
            "--manifest",
            "update.toml",
            "--tbs",
            "u.tbs",
            "--signature",
            "pss.der",
            "--cert",
            "chain.pem",
            "--out",
            "c.vfp",
        ],
        d,
    );
    assert_eq!(confused.status.code(), Some(72));
    assert!(!d.join("c.vfp").exists());
    // ECDSA from an HSM as 64-byte r||s, checked against the public key.
    openssl(
        &["pkey", "-in", "inter.key", "-pubout", "-out", "inter.pub"],
        d,
    );
    openssl(
        &[
            "dgst",
            "-sha256",
            "-sign",
            "inter.key",
            "-out",
            "ec.der",
            "u.tbs",
        ],
        d,
    );
    let der = std::fs::read(d.join("ec.der")).unwrap();
    let raw = veriflash_core::sig::ecdsa_p256_signature_to_raw(
        &der,
        veriflash_core::sig::EcdsaSignatureEncoding::Der,
    )
    .unwrap();
    std::fs::write(d.join("ec.raw"), raw).unwrap();
    ok(&veriflash(
        &[
            "sign",
            "--manifest",
            "update.toml",
            "--tbs",
            "u.tbs",
            "--signature",
            "ec.raw",
            "--pubkey",
            "inter.pub",
            "--out",
            "e.vfp",
        ],
        d,
    ));
    ok(&veriflash(&["verify", "--trust", "inter.pub", "e.vfp"], d));
    // The images changed since `pack --unsigned`: refused.
    std::fs::write(d.join("images/boot.img"), vec![8u8; 100_000]).unwrap();
    let stale = veriflash(
        &[
            "sign",
            "--manifest",
            "update.toml",
            "--tbs",
            "u.tbs",
            "--signature",
            "sig.der",
            "--cert",
            "chain.pem",
            "--out",
            "s.vfp",
        ],
        d,
    );
    assert_eq!(stale.status.code(), Some(72));
}

#[test]
fn sign_refuses_an_expired_chain_as_pack_does_unless_forced() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d, "-1");
    ok(&veriflash(
        &[
            "pack",
            "--manifest",
            "update.toml",
            "--unsigned",
            "--out",
            "u.tbs",
        ],
        d,
    ));
    openssl(
        &[
            "dgst", "-sha256", "-sign", "leaf.pem", "-out", "sig.der", "u.tbs",
        ],
        d,
    );
    let sign = [
        "sign",
        "--manifest",
        "update.toml",
        "--tbs",
        "u.tbs",
        "--signature",
        "sig.der",
        "--cert",
        "chain.pem",
        "--out",
        "u.vfp",
    ];
    let refused = veriflash(&sign, d);
    assert_eq!(refused.status.code(), Some(27));
    let text = String::from_utf8_lossy(&refused.stderr);
    assert!(
        text.contains("has expired: notBefore ") && text.contains("--force"),
        "{text}"
    );
    assert!(!d.join("u.vfp").exists());
    let forced = veriflash(&[&sign[..], &["--force"]].concat(), d);
    ok(&forced);
    assert!(
        String::from_utf8_lossy(&forced.stderr).contains("warning: the signing certificate"),
        "{forced:?}"
    );
    ok(&veriflash(
        &["verify", "--trust", "root.pem", "--no-clock", "u.vfp"],
        d,
    ));
}
