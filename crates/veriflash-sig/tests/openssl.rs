//! Interoperability with the `openssl` command-line tool: keys it writes load here, keys we
//! write load there, and signatures verify both ways.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers outside #[test] fns: a failure should abort the test"
)]

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use veriflash_sig::{Error, KeyId, PinnedKeys, SignatureInput, SigningKey, Verifier, VerifyingKey};

const MESSAGE: &[u8] = b"header || manifest bytes, signed by openssl and by veriflash-sig\n";

fn openssl(dir: &Path, args: &[&str]) -> Output {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl CLI must be installed for the interop tests");
    assert!(
        output.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Runs openssl and returns whether it succeeded (for commands expected to fail).
fn openssl_succeeds(dir: &Path, args: &[&str]) -> bool {
    Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl CLI must be installed for the interop tests")
        .status
        .success()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, bytes).unwrap();
    path
}

/// Loads `key.pem` (written by openssl) and checks everything against openssl's own view.
fn check_openssl_key(dir: &Path) {
    let text = fs::read_to_string(dir.join("key.pem")).unwrap();
    let signing = SigningKey::from_pem(&text).unwrap();

    // Same public key, byte for byte, as openssl derives.
    let spki = openssl(
        dir,
        &["pkey", "-in", "key.pem", "-pubout", "-outform", "DER"],
    )
    .stdout;
    let public = signing.verifying_key();
    assert_eq!(public.to_spki_der(), spki);
    assert_eq!(public.key_id(), KeyId::of_spki_der(&spki));
    let pub_pem = openssl(dir, &["pkey", "-in", "key.pem", "-pubout"]).stdout;
    assert_eq!(public.to_public_key_pem().as_bytes(), &pub_pem[..]);
    assert_eq!(
        VerifyingKey::from_public_key_pem(std::str::from_utf8(&pub_pem).unwrap()).unwrap(),
        public
    );

    // openssl signs, we verify.
    write(dir, "msg.bin", MESSAGE);
    openssl(
        dir,
        &[
            "dgst", "-sha256", "-sign", "key.pem", "-out", "sig.der", "msg.bin",
        ],
    );
    let signature = fs::read(dir.join("sig.der")).unwrap();
    let trust: PinnedKeys = [public.clone()].into_iter().collect();
    let verifier = Verifier::new(&trust);
    let input = SignatureInput::new(signing.algorithm(), public.key_id(), &signature);
    let verified = verifier
        .verify(MESSAGE, std::slice::from_ref(&input))
        .unwrap();
    assert_eq!(verified.signers(), &[public.key_id()]);
    assert_eq!(
        verifier.verify(b"another message", &[input]).err(),
        Some(Error::BadSignature {
            key_id: public.key_id()
        })
    );

    // We sign, openssl verifies.
    write(dir, "ours.der", &signing.sign(MESSAGE).unwrap());
    write(dir, "pub.pem", &pub_pem);
    let out = openssl(
        dir,
        &[
            "dgst",
            "-sha256",
            "-verify",
            "pub.pem",
            "-signature",
            "ours.der",
            "msg.bin",
        ],
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("Verified OK"));
    // ...and openssl refuses it over another message, so the check above means something.
    write(dir, "other.bin", b"another message");
    assert!(!openssl_succeeds(
        dir,
        &[
            "dgst",
            "-sha256",
            "-verify",
            "pub.pem",
            "-signature",
            "ours.der",
            "other.bin"
        ]
    ));
}

#[test]
fn loads_sec1_key_from_ecparam_noout() {
    let dir = tempfile::tempdir().unwrap();
    openssl(
        dir.path(),
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            "key.pem",
        ],
    );
    let text = fs::read_to_string(dir.path().join("key.pem")).unwrap();
    assert!(text.starts_with("-----BEGIN EC PRIVATE KEY-----"));
    check_openssl_key(dir.path());
}

#[test]
fn loads_sec1_key_after_ec_parameters_block() {
    let dir = tempfile::tempdir().unwrap();
    openssl(
        dir.path(),
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-out",
            "key.pem",
        ],
    );
    let text = fs::read_to_string(dir.path().join("key.pem")).unwrap();
    assert!(text.starts_with("-----BEGIN EC PARAMETERS-----"));
    assert!(text.contains("-----BEGIN EC PRIVATE KEY-----"));
    check_openssl_key(dir.path());
}

#[test]
fn loads_pkcs8_key_from_genpkey() {
    let dir = tempfile::tempdir().unwrap();
    openssl(
        dir.path(),
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            "key.pem",
        ],
    );
    let text = fs::read_to_string(dir.path().join("key.pem")).unwrap();
    assert!(text.starts_with("-----BEGIN PRIVATE KEY-----"));
    check_openssl_key(dir.path());
}

#[test]
fn openssl_reads_our_pkcs8_key_and_derives_our_public_key() {
    let dir = tempfile::tempdir().unwrap();
    let signing = SigningKey::generate_p256().unwrap();
    write(
        dir.path(),
        "key.pem",
        signing.to_pkcs8_pem().unwrap().as_bytes(),
    );
    let pub_pem = openssl(dir.path(), &["pkey", "-in", "key.pem", "-pubout"]).stdout;
    assert_eq!(
        String::from_utf8(pub_pem).unwrap(),
        signing.verifying_key().to_public_key_pem()
    );
    let spki = openssl(
        dir.path(),
        &["pkey", "-in", "key.pem", "-pubout", "-outform", "DER"],
    )
    .stdout;
    assert_eq!(spki, signing.verifying_key().to_spki_der());
    // openssl can sign with our key file, and we verify it.
    check_openssl_key(dir.path());
}

#[test]
fn refuses_encrypted_keys_from_openssl() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    openssl(
        d,
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-aes256",
            "-pass",
            "pass:secret",
            "-out",
            "pkcs8.pem",
        ],
    );
    openssl(
        d,
        &[
            "pkey",
            "-in",
            "pkcs8.pem",
            "-passin",
            "pass:secret",
            "-aes256",
            "-passout",
            "pass:secret",
            "-traditional",
            "-out",
            "legacy.pem",
        ],
    );
    for name in ["pkcs8.pem", "legacy.pem"] {
        let text = fs::read_to_string(d.join(name)).unwrap();
        assert_eq!(
            SigningKey::from_pem(&text).err(),
            Some(Error::EncryptedKeyUnsupported),
            "{name}"
        );
    }
    let der = openssl(
        d,
        &[
            "pkcs8",
            "-topk8",
            "-in",
            "pkcs8.pem",
            "-passin",
            "pass:secret",
            "-v2",
            "aes256",
            "-passout",
            "pass:secret",
            "-outform",
            "DER",
        ],
    )
    .stdout;
    assert_eq!(
        SigningKey::from_pkcs8_der(&der).err(),
        Some(Error::EncryptedKeyUnsupported)
    );
}

#[test]
fn refuses_other_curves_and_key_types() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for curve in ["P-384", "P-521"] {
        let (key, public) = (format!("{curve}.pem"), format!("{curve}.pub"));
        let paramgen = format!("ec_paramgen_curve:{curve}");
        openssl(
            d,
            &[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                &paramgen,
                "-out",
                &key,
            ],
        );
        openssl(d, &["pkey", "-in", &key, "-pubout", "-out", &public]);
    }
    openssl(d, &["genpkey", "-algorithm", "ED25519", "-out", "ed.pem"]);
    openssl(d, &["pkey", "-in", "ed.pem", "-pubout", "-out", "ed.pub"]);

    let read = |name: &str| fs::read_to_string(d.join(name)).unwrap();
    // Packages are signed with P-256 or RSA: no other curve signs.
    for curve in ["P-384", "P-521"] {
        assert!(matches!(
            SigningKey::from_pem(&read(&format!("{curve}.pem"))),
            Err(Error::InvalidKey { .. })
        ));
    }
    // A P-384 public key loads (CA keys in chains), with openssl's SPKI as its key id ...
    let p384 = VerifyingKey::from_public_key_pem(&read("P-384.pub")).unwrap();
    assert_eq!(p384.algorithm_name(), "ecdsa-p384");
    let spki = openssl(
        d,
        &["pkey", "-pubin", "-in", "P-384.pub", "-outform", "DER"],
    )
    .stdout;
    assert_eq!(p384.spki_der(), spki);
    assert_eq!(p384.key_id(), KeyId::of_spki_der(&spki));
    // ... but it signs no package: the package algorithms are P-256 and RSA only.
    assert_eq!(
        veriflash_sig::ECDSA_P256_SHA256
            .verify(
                &p384,
                MESSAGE,
                &[0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01]
            )
            .err(),
        Some(Error::AlgorithmKeyMismatch {
            key_id: p384.key_id()
        })
    );
    assert!(matches!(
        VerifyingKey::from_public_key_pem(&read("P-521.pub")),
        Err(Error::InvalidKey { .. })
    ));
    let ed25519 = veriflash_sig::ObjectIdentifier::new_unwrap("1.3.101.112");
    assert_eq!(
        SigningKey::from_pem(&read("ed.pem")).err(),
        Some(Error::UnsupportedKeyAlgorithm { oid: ed25519 })
    );
    assert_eq!(
        VerifyingKey::from_public_key_pem(&read("ed.pub")).err(),
        Some(Error::UnsupportedKeyAlgorithm { oid: ed25519 })
    );
}

#[test]
fn compressed_point_key_has_the_canonical_key_id() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let signing = SigningKey::generate_p256().unwrap();
    write(
        d,
        "pub.pem",
        signing.verifying_key().to_public_key_pem().as_bytes(),
    );
    let compressed = openssl(
        d,
        &[
            "ec",
            "-pubin",
            "-in",
            "pub.pem",
            "-pubout",
            "-conv_form",
            "compressed",
            "-outform",
            "DER",
        ],
    )
    .stdout;
    assert_ne!(compressed, signing.verifying_key().to_spki_der());
    let key = VerifyingKey::from_spki_der(&compressed).unwrap();
    assert_eq!(key, signing.verifying_key());
    assert_eq!(key.key_id(), signing.verifying_key().key_id());
}

#[test]
fn hsm_style_raw_signature_canonicalises_to_openssl_der() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let signing = SigningKey::generate_p256().unwrap();
    let der = signing.sign(MESSAGE).unwrap();
    let raw = veriflash_sig::ecdsa_p256_signature_to_raw(
        &der,
        veriflash_sig::EcdsaSignatureEncoding::Der,
    )
    .unwrap();
    // What a PKCS#11 token would return, made into what openssl accepts.
    write(
        d,
        "sig.der",
        &veriflash_sig::ecdsa_p256_signature_to_der(
            &raw,
            veriflash_sig::EcdsaSignatureEncoding::Raw,
        )
        .unwrap(),
    );
    write(d, "msg.bin", MESSAGE);
    write(
        d,
        "pub.pem",
        signing.verifying_key().to_public_key_pem().as_bytes(),
    );
    let out = openssl(
        d,
        &[
            "dgst",
            "-sha256",
            "-verify",
            "pub.pem",
            "-signature",
            "sig.der",
            "msg.bin",
        ],
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("Verified OK"));
}
