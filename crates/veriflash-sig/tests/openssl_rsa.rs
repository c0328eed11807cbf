//! RSA interoperability with the `openssl` CLI: RSA-2048/3072/4096 keys openssl makes sign with
//! PKCS#1 v1.5 and PSS (salt 32) and verify here; our signatures verify under
//! `openssl dgst -verify`; RSA-1024 is refused with its own error; PSS/PKCS#1 confusion fails.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers outside #[test] fns: a failure should abort the test"
)]

use std::{
    fs,
    path::Path,
    process::{Command, Output},
};

use veriflash_sig::{
    Error, ID_RSASSA_PSS, KeyId, PinnedKeys, RsaPadding, SHA256_WITH_RSA_ENCRYPTION,
    SignatureInput, SigningKey, Verifier, VerifyingKey,
};

const MESSAGE: &[u8] = b"header || manifest, RSA-signed\n";

fn run(dir: &Path, args: &[&str]) -> Output {
    Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl CLI must be installed for the interop tests")
}

fn openssl(dir: &Path, args: &[&str]) -> Output {
    let output = run(dir, args);
    assert!(
        output.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn genrsa(dir: &Path, bits: usize, name: &str) {
    let opt = format!("rsa_keygen_bits:{bits}");
    openssl(
        dir,
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            &opt,
            "-out",
            name,
        ],
    );
}

const PSS_OPTS: [&str; 4] = [
    "-sigopt",
    "rsa_padding_mode:pss",
    "-sigopt",
    "rsa_pss_saltlen:32",
];

fn check_bits(bits: usize) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    genrsa(d, bits, "key.pem");
    fs::write(d.join("msg.bin"), MESSAGE).unwrap();
    let signing = SigningKey::from_pem(&fs::read_to_string(d.join("key.pem")).unwrap()).unwrap();
    let public = signing.verifying_key();
    assert_eq!(public.rsa_bits(), Some(bits));
    assert_eq!(public.algorithm_name(), format!("rsa-{bits}"));

    // Same SPKI (and key id) as openssl derives.
    let spki = openssl(d, &["pkey", "-in", "key.pem", "-pubout", "-outform", "DER"]).stdout;
    assert_eq!(public.spki_der(), &spki[..]);
    assert_eq!(public.key_id(), KeyId::of_spki_der(&spki));
    openssl(d, &["pkey", "-in", "key.pem", "-pubout", "-out", "pub.pem"]);
    let pub_pem = fs::read_to_string(d.join("pub.pem")).unwrap();
    assert_eq!(VerifyingKey::from_public_key_pem(&pub_pem).unwrap(), public);

    let mut trust = PinnedKeys::new();
    let key_id = trust.add(public.clone());
    let verifier = Verifier::new(&trust);

    // openssl signs PKCS#1 v1.5 and PSS(32); we verify, and refuse each under the other OID.
    openssl(
        d,
        &[
            "dgst",
            "-sha256",
            "-sign",
            "key.pem",
            "-out",
            "pkcs1.sig",
            "msg.bin",
        ],
    );
    let mut pss_args = vec!["dgst", "-sha256", "-sign", "key.pem"];
    pss_args.extend(PSS_OPTS);
    pss_args.extend(["-out", "pss.sig", "msg.bin"]);
    openssl(d, &pss_args);
    let pkcs1 = fs::read(d.join("pkcs1.sig")).unwrap();
    let pss = fs::read(d.join("pss.sig")).unwrap();
    assert_eq!(pkcs1.len(), bits / 8);
    for (oid, sig, ok) in [
        (SHA256_WITH_RSA_ENCRYPTION, &pkcs1, true),
        (ID_RSASSA_PSS, &pss, true),
        (ID_RSASSA_PSS, &pkcs1, false),
        (SHA256_WITH_RSA_ENCRYPTION, &pss, false),
    ] {
        let result = verifier.verify(MESSAGE, &[SignatureInput::new(oid, key_id, sig)]);
        if ok {
            assert_eq!(result.unwrap().signers(), &[key_id]);
        } else {
            assert_eq!(result.err(), Some(Error::BadSignature { key_id }));
        }
    }
    // A flipped message byte fails.
    assert_eq!(
        verifier
            .verify(
                b"header || manifesT, RSA-signed\n",
                &[SignatureInput::new(
                    SHA256_WITH_RSA_ENCRYPTION,
                    key_id,
                    &pkcs1
                )]
            )
            .err(),
        Some(Error::BadSignature { key_id })
    );

    // We sign (PKCS#1 v1.5 by default, PSS on request); openssl verifies.
    let ours = signing.sign(MESSAGE).unwrap();
    assert_eq!(
        ours, pkcs1,
        "PKCS#1 v1.5 is deterministic: same bytes as openssl"
    );
    fs::write(d.join("ours.sig"), &ours).unwrap();
    openssl(
        d,
        &[
            "dgst",
            "-sha256",
            "-verify",
            "pub.pem",
            "-signature",
            "ours.sig",
            "msg.bin",
        ],
    );
    let pss_key = signing.with_rsa_padding(RsaPadding::Pss);
    assert_eq!(pss_key.algorithm(), ID_RSASSA_PSS);
    let ours_pss = pss_key.sign(MESSAGE).unwrap();
    fs::write(d.join("ours_pss.sig"), &ours_pss).unwrap();
    let mut verify_args = vec!["dgst", "-sha256", "-verify", "pub.pem"];
    verify_args.extend(PSS_OPTS);
    verify_args.extend(["-signature", "ours_pss.sig", "msg.bin"]);
    openssl(d, &verify_args);
    verifier
        .verify(
            MESSAGE,
            &[SignatureInput::new(ID_RSASSA_PSS, key_id, &ours_pss)],
        )
        .unwrap();
    // openssl refuses our PSS signature as PKCS#1 v1.5 too.
    let confused = run(
        d,
        &[
            "dgst",
            "-sha256",
            "-verify",
            "pub.pem",
            "-signature",
            "ours_pss.sig",
            "msg.bin",
        ],
    );
    assert!(!confused.status.success());

    // Our PKCS#8 export is read back by openssl and derives the same public key.
    let pem = pss_key.to_pkcs8_pem().unwrap();
    fs::write(d.join("ours.pem"), pem.as_bytes()).unwrap();
    let again = openssl(
        d,
        &["pkey", "-in", "ours.pem", "-pubout", "-outform", "DER"],
    )
    .stdout;
    assert_eq!(again, spki);
}

#[test]
fn rsa_2048_interoperates_with_openssl() {
    check_bits(2048);
}

#[test]
fn rsa_3072_interoperates_with_openssl() {
    check_bits(3072);
}

#[test]
fn rsa_4096_interoperates_with_openssl() {
    check_bits(4096);
}

#[test]
fn rsa_1024_is_refused_with_its_own_error() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    genrsa(d, 1024, "small.pem");
    openssl(
        d,
        &["pkey", "-in", "small.pem", "-pubout", "-out", "small.pub"],
    );
    let read = |name: &str| fs::read_to_string(d.join(name)).unwrap();
    assert_eq!(
        SigningKey::from_pem(&read("small.pem")).err(),
        Some(Error::RsaKeyTooSmall { bits: 1024 })
    );
    assert_eq!(
        VerifyingKey::from_public_key_pem(&read("small.pub")).err(),
        Some(Error::RsaKeyTooSmall { bits: 1024 })
    );
    // Traditional PKCS#1 `RSA PRIVATE KEY` too.
    openssl(
        d,
        &[
            "pkey",
            "-in",
            "small.pem",
            "-traditional",
            "-out",
            "small.rsa.pem",
        ],
    );
    assert!(read("small.rsa.pem").contains("BEGIN RSA PRIVATE KEY"));
    assert_eq!(
        SigningKey::from_pem(&read("small.rsa.pem")).err(),
        Some(Error::RsaKeyTooSmall { bits: 1024 })
    );
}

#[test]
fn odd_and_oversized_rsa_moduli_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    genrsa(d, 2560, "odd.pem");
    openssl(d, &["pkey", "-in", "odd.pem", "-pubout", "-out", "odd.pub"]);
    let read = |name: &str| fs::read_to_string(d.join(name)).unwrap();
    assert_eq!(
        VerifyingKey::from_public_key_pem(&read("odd.pub")).err(),
        Some(Error::RsaKeySizeUnsupported { bits: 2560 })
    );
    assert_eq!(
        SigningKey::generate_rsa(1024).err(),
        Some(Error::RsaKeyTooSmall { bits: 1024 })
    );
    assert_eq!(
        SigningKey::generate_rsa(8192).err(),
        Some(Error::RsaKeySizeUnsupported { bits: 8192 })
    );
}

#[test]
fn traditional_rsa_private_key_loads() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    genrsa(d, 2048, "key.pem");
    openssl(
        d,
        &[
            "pkey",
            "-in",
            "key.pem",
            "-traditional",
            "-out",
            "key.rsa.pem",
        ],
    );
    let read = |name: &str| fs::read_to_string(d.join(name)).unwrap();
    let a = SigningKey::from_pem(&read("key.pem")).unwrap();
    let b = SigningKey::from_pem(&read("key.rsa.pem")).unwrap();
    assert_eq!(a.verifying_key(), b.verifying_key());
}

#[test]
fn signature_of_wrong_length_is_malformed() {
    let key = SigningKey::generate_rsa(2048).unwrap();
    let mut trust = PinnedKeys::new();
    let key_id = trust.add(key.verifying_key());
    let mut sig = key.sign(MESSAGE).unwrap();
    sig.insert(0, 0);
    let verifier = Verifier::new(&trust);
    assert_eq!(
        verifier
            .verify(
                MESSAGE,
                &[SignatureInput::new(
                    SHA256_WITH_RSA_ENCRYPTION,
                    key_id,
                    &sig
                )]
            )
            .err(),
        Some(Error::MalformedSignature { key_id })
    );
    // An ECDSA OID naming an RSA key is an algorithm/key mismatch.
    assert_eq!(
        verifier
            .verify(
                MESSAGE,
                &[SignatureInput::new(
                    veriflash_sig::ECDSA_WITH_SHA256,
                    key_id,
                    &sig[1..]
                )]
            )
            .err(),
        Some(Error::AlgorithmKeyMismatch { key_id })
    );
}

/// `id-RSASSA-PSS` keys (RFC 4055 §1.2) as `openssl genpkey -algorithm RSA-PSS` makes them,
/// without parameters (any PSS profile) and restricted to SHA-256 / MGF1-SHA-256 / salt 32:
/// both load, with openssl's SPKI as key id, verify openssl's PSS signatures, and refuse
/// PKCS#1 v1.5 (RFC 4055: a PSS key never signs v1.5).
#[test]
fn loads_rsassa_pss_keys_with_and_without_parameters() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::write(d.join("msg.bin"), MESSAGE).unwrap();
    let restricted = [
        "-pkeyopt",
        "rsa_pss_keygen_md:sha256",
        "-pkeyopt",
        "rsa_pss_keygen_mgf1_md:sha256",
        "-pkeyopt",
        "rsa_pss_keygen_saltlen:32",
    ];
    for (name, extra) in [("open", &[][..]), ("restricted", &restricted[..])] {
        let key = format!("{name}.pem");
        let mut args = vec![
            "genpkey",
            "-algorithm",
            "RSA-PSS",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
        ];
        args.extend_from_slice(extra);
        args.extend(["-out", &key]);
        openssl(d, &args);
        let spki = openssl(d, &["pkey", "-in", &key, "-pubout", "-outform", "DER"]).stdout;
        let public = VerifyingKey::from_spki_der(&spki).unwrap();
        assert_eq!(public.algorithm_name(), "rsa-pss-2048", "{name}");
        assert_eq!(public.key_id(), KeyId::of_spki_der(&spki));
        assert_eq!(public.spki_der(), &spki[..]);

        let sig = format!("{name}.sig");
        let mut sign = vec!["dgst", "-sha256", "-sign", &key];
        sign.extend(PSS_OPTS);
        sign.extend(["-out", &sig, "msg.bin"]);
        openssl(d, &sign);
        let signature = fs::read(d.join(&sig)).unwrap();
        veriflash_sig::RSA_PSS_SHA256
            .verify(&public, MESSAGE, &signature)
            .unwrap();
        assert!(
            veriflash_sig::RSA_PSS_SHA256
                .verify(&public, b"another message", &signature)
                .is_err()
        );
        assert_eq!(
            veriflash_sig::RSA_PKCS1_SHA256
                .verify(&public, MESSAGE, &signature)
                .err(),
            Some(Error::AlgorithmKeyMismatch {
                key_id: public.key_id()
            })
        );
    }
}
