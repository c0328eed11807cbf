//! Signing with a certificate chain outside its validity period: refused by the library
//! unless the signer allows it, naming the certificate's dates and the time now.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::path::Path;

use veriflash_core::pack::check_certificate_dates;
use veriflash_core::trust::{load_certificate_chain, load_signing_key};
use veriflash_core::{ErrorKind, ImageData, ImageSource, PackageSpec, UnsignedPackage};

fn openssl(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A self-signed P-256 code-signing certificate valid for `days` from now (negative: it
/// expired that long ago) and its key, in `dir`.
fn certificate(dir: &Path, days: &str) -> (veriflash_core::sig::SigningKey, Vec<Vec<u8>>) {
    openssl(
        dir,
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            "leaf.key",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-key",
            "leaf.key",
            "-subj",
            "/CN=Dated Leaf",
            "-out",
            "leaf.csr",
        ],
    );
    // `x509 -req` takes a negative -days (`req -x509` does not).
    openssl(
        dir,
        &[
            "x509", "-req", "-in", "leaf.csr", "-signkey", "leaf.key", "-days", days, "-out",
            "leaf.crt",
        ],
    );
    (
        load_signing_key(&dir.join("leaf.key")).unwrap(),
        load_certificate_chain(&dir.join("leaf.crt")).unwrap(),
    )
}

fn unsigned() -> UnsignedPackage {
    UnsignedPackage::prepare(PackageSpec {
        product: "p".into(),
        chipset: "c".into(),
        hardware_revisions: vec![],
        software_version: "1".into(),
        security_version: 1,
        images: vec![ImageSource::new(
            "boot",
            "boot",
            ImageData::Bytes(vec![1u8; 5000]),
        )],
    })
    .unwrap()
}

#[test]
fn an_expired_chain_is_refused_naming_its_dates_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let (key, chain) = certificate(dir.path(), "-1");
    let err = unsigned()
        .sign_with_certificates(&key, chain.clone())
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::CertificateExpired);
    let message = err.message();
    for part in [
        "the signing certificate 'CN=Dated Leaf' has expired",
        "notBefore ",
        "notAfter ",
        "now ",
        " UTC",
    ] {
        assert!(message.contains(part), "{part}: {message}");
    }
    assert!(err.remedy().contains("--force"), "{}", err.remedy());

    // A signature made elsewhere with the same chain: the same refusal.
    let package = unsigned();
    let signature = key.sign(package.signed_message()).unwrap();
    let err = package
        .attach(
            key.algorithm(),
            &key.verifying_key(),
            signature.clone(),
            chain.clone(),
        )
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::CertificateExpired);

    // Allowed: signed, and the check still says what is wrong, for the warning.
    let package = unsigned().allow_expired_certificates(true);
    assert!(package.sign_with_certificates(&key, chain.clone()).is_ok());
    assert!(
        package
            .attach(key.algorithm(), &key.verifying_key(), signature, chain)
            .is_ok()
    );
}

#[test]
fn a_chain_not_valid_yet_is_refused_and_a_valid_one_signs() {
    let dir = tempfile::tempdir().unwrap();
    let (key, chain) = certificate(dir.path(), "30");
    unsigned()
        .sign_with_certificates(&key, chain.clone())
        .unwrap();
    // An hour before its notBefore (openssl sets it to now).
    let an_hour_ago = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 3600;
    let err = check_certificate_dates(&chain, an_hour_ago).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::CertificateExpired);
    assert!(
        err.message().contains("is not valid yet"),
        "{}",
        err.message()
    );
    // A bare key signs as before: no chain, no dates.
    assert!(unsigned().sign_with_certificates(&key, Vec::new()).is_ok());
}
