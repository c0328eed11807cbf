//! Verification semantics through the public API: round trip, tampering, trust, policy.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers outside #[test] fns: a failure should abort the test"
)]

use veriflash_sig::{
    DEFAULT_ALGORITHMS, ECDSA_P256_SHA256, ECDSA_WITH_SHA256, EcdsaSignatureEncoding, Error, KeyId,
    MAX_SIGNATURES, ObjectIdentifier, PinnedKeys, Policy, SignatureAlgorithm, SignatureInput,
    SigningKey, TrustAnchor, TrustStore, Verifier, VerifyingKey,
};

const MESSAGE: &[u8] = b"veriflash header || manifest: the signed message of a test package";

fn key() -> SigningKey {
    SigningKey::generate_p256().unwrap()
}

fn pinned(keys: &[&SigningKey]) -> PinnedKeys {
    keys.iter().map(|k| k.verifying_key()).collect()
}

fn input<'a>(key: &SigningKey, signature: &'a [u8]) -> SignatureInput<'a> {
    SignatureInput::new(key.algorithm(), key.verifying_key().key_id(), signature)
}

#[test]
fn signature_round_trips_and_names_its_signer() {
    let key = key();
    let signature = key.sign(MESSAGE).unwrap();
    let trust = pinned(&[&key]);
    let verified = Verifier::new(&trust)
        .verify(MESSAGE, &[input(&key, &signature)])
        .unwrap();
    assert_eq!(verified.message(), MESSAGE);
    assert_eq!(verified.signers(), &[key.verifying_key().key_id()]);
    assert_eq!(key.algorithm(), ECDSA_WITH_SHA256);
    assert_eq!(
        ECDSA_WITH_SHA256,
        ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2")
    );
}

#[test]
fn signing_is_deterministic_rfc6979() {
    let key = key();
    assert_eq!(key.sign(MESSAGE).unwrap(), key.sign(MESSAGE).unwrap());
    assert_ne!(key.sign(MESSAGE).unwrap(), key.sign(b"other").unwrap());
}

#[test]
fn rejects_signature_with_any_flipped_byte() {
    let key = key();
    let signature = key.sign(MESSAGE).unwrap();
    let trust = pinned(&[&key]);
    let verifier = Verifier::new(&trust);
    let key_id = key.verifying_key().key_id();
    for index in 0..signature.len() {
        for mask in [0x01u8, 0x80, 0xff] {
            let mut bad = signature.clone();
            bad[index] ^= mask;
            let err = verifier
                .verify(MESSAGE, &[input(&key, &bad)])
                .expect_err("a flipped signature byte must be refused");
            assert!(
                matches!(
                    err,
                    Error::BadSignature { key_id: k } | Error::MalformedSignature { key_id: k }
                        if k == key_id
                ),
                "byte {index} mask {mask:#x}: {err:?}"
            );
        }
    }
}

#[test]
fn rejects_message_with_any_flipped_byte() {
    let key = key();
    let signature = key.sign(MESSAGE).unwrap();
    let trust = pinned(&[&key]);
    let verifier = Verifier::new(&trust);
    let key_id = key.verifying_key().key_id();
    for index in 0..MESSAGE.len() {
        for mask in [0x01u8, 0x80, 0xff] {
            let mut bad = MESSAGE.to_vec();
            bad[index] ^= mask;
            assert_eq!(
                verifier.verify(&bad, &[input(&key, &signature)]).err(),
                Some(Error::BadSignature { key_id }),
                "byte {index} mask {mask:#x}"
            );
        }
    }
}

#[test]
fn rejects_truncated_extended_and_empty_signatures() {
    let key = key();
    let signature = key.sign(MESSAGE).unwrap();
    let trust = pinned(&[&key]);
    let verifier = Verifier::new(&trust);
    let key_id = key.verifying_key().key_id();
    let mut extended = signature.clone();
    extended.push(0);
    for bad in [
        &signature[..signature.len() - 1],
        &extended[..],
        &[][..],
        &[0x30, 0x00][..],
    ] {
        assert_eq!(
            verifier.verify(MESSAGE, &[input(&key, bad)]).err(),
            Some(Error::MalformedSignature { key_id })
        );
    }
}

#[test]
fn rejects_raw_r_s_signature_until_canonicalised() {
    let key = key();
    let der = key.sign(MESSAGE).unwrap();
    let raw =
        veriflash_sig::ecdsa_p256_signature_to_raw(&der, EcdsaSignatureEncoding::Der).unwrap();
    let trust = pinned(&[&key]);
    let verifier = Verifier::new(&trust);
    assert!(matches!(
        verifier.verify(MESSAGE, &[input(&key, &raw)]),
        Err(Error::MalformedSignature { .. })
    ));
    let canonical =
        veriflash_sig::ecdsa_p256_signature_to_der(&raw, EcdsaSignatureEncoding::Raw).unwrap();
    assert_eq!(canonical, der);
    verifier
        .verify(MESSAGE, &[input(&key, &canonical)])
        .unwrap();
}

/// The caller names the encoding of an external ECDSA signature, never guessed: these 64 bytes
/// are a strict DER `Ecdsa-Sig-Value` (29-byte `r` and `s`) and also a valid `r || s`, two
/// different signatures; each reading is the one asked for.
#[test]
fn raw_signature_that_parses_as_der_is_read_as_the_caller_says() {
    use EcdsaSignatureEncoding::{Der, Raw};
    let mut both = [0x11u8; 64];
    both[..4].copy_from_slice(&[0x30, 0x3e, 0x02, 0x1d]);
    both[33..35].copy_from_slice(&[0x02, 0x1d]);
    // Read as DER it is canonical DER already: returned unchanged.
    assert_eq!(
        veriflash_sig::ecdsa_p256_signature_to_der(&both, Der).unwrap(),
        both
    );
    // Read as r || s it is another signature, whose DER is 70 bytes.
    let from_raw = veriflash_sig::ecdsa_p256_signature_to_der(&both, Raw).unwrap();
    assert_eq!(from_raw.len(), 70);
    assert_eq!(
        veriflash_sig::ecdsa_p256_signature_to_raw(&from_raw, Der).unwrap(),
        both
    );
    assert_ne!(
        veriflash_sig::ecdsa_p256_signature_to_raw(&both, Der).unwrap(),
        both
    );
}

#[test]
fn rejects_signature_by_unknown_key() {
    let pinned_key = key();
    let stranger = key();
    let signature = stranger.sign(MESSAGE).unwrap();
    let trust = pinned(&[&pinned_key]);
    assert_eq!(
        Verifier::new(&trust)
            .verify(MESSAGE, &[input(&stranger, &signature)])
            .err(),
        Some(Error::UnknownKey {
            key_id: stranger.verifying_key().key_id()
        })
    );
}

#[test]
fn rejects_signature_by_other_key_under_pinned_key_id() {
    // Claims the pinned key's id but was made by another key: the id only selects, never proves.
    let pinned_key = key();
    let stranger = key();
    let signature = stranger.sign(MESSAGE).unwrap();
    let trust = pinned(&[&pinned_key]);
    let key_id = pinned_key.verifying_key().key_id();
    assert_eq!(
        Verifier::new(&trust)
            .verify(
                MESSAGE,
                &[SignatureInput::new(ECDSA_WITH_SHA256, key_id, &signature)]
            )
            .err(),
        Some(Error::BadSignature { key_id })
    );
}

#[test]
fn rejects_revoked_key_even_when_pinned() {
    let key = key();
    let signature = key.sign(MESSAGE).unwrap();
    let trust = pinned(&[&key]);
    let key_id = key.verifying_key().key_id();
    let verifier = Verifier::new(&trust).with_policy(Policy::default().with_revoked_key(key_id));
    assert_eq!(
        verifier.verify(MESSAGE, &[input(&key, &signature)]).err(),
        Some(Error::KeyRevoked { key_id })
    );
}

#[test]
fn revoked_signature_does_not_count_toward_threshold() {
    let (a, b) = (key(), key());
    let (sig_a, sig_b) = (a.sign(MESSAGE).unwrap(), b.sign(MESSAGE).unwrap());
    let trust = pinned(&[&a, &b]);
    let policy = Policy::default()
        .with_threshold(2)
        .with_revoked_key(a.verifying_key().key_id());
    assert_eq!(
        Verifier::new(&trust)
            .with_policy(policy)
            .verify(MESSAGE, &[input(&a, &sig_a), input(&b, &sig_b)])
            .err(),
        Some(Error::ThresholdNotMet {
            required: 2,
            valid: 1
        })
    );
}

#[test]
fn accepts_two_of_three_distinct_keys() {
    let (a, b, c) = (key(), key(), key());
    let trust = pinned(&[&a, &b, &c]);
    let (sig_a, sig_c) = (a.sign(MESSAGE).unwrap(), c.sign(MESSAGE).unwrap());
    let verified = Verifier::new(&trust)
        .with_policy(Policy::default().with_threshold(2))
        .verify(MESSAGE, &[input(&a, &sig_a), input(&c, &sig_c)])
        .unwrap();
    assert_eq!(
        verified.signers(),
        &[a.verifying_key().key_id(), c.verifying_key().key_id()]
    );
}

#[test]
fn rejects_same_key_twice_toward_threshold_of_two() {
    let (a, b, c) = (key(), key(), key());
    let trust = pinned(&[&a, &b, &c]);
    let sig_a = a.sign(MESSAGE).unwrap();
    assert_eq!(
        Verifier::new(&trust)
            .with_policy(Policy::default().with_threshold(2))
            .verify(MESSAGE, &[input(&a, &sig_a), input(&a, &sig_a)])
            .err(),
        Some(Error::ThresholdNotMet {
            required: 2,
            valid: 1
        })
    );
}

#[test]
fn skips_unknown_and_unsupported_signatures_when_threshold_met() {
    let (a, stranger) = (key(), key());
    let trust = pinned(&[&a]);
    let sig_a = a.sign(MESSAGE).unwrap();
    let sig_s = stranger.sign(MESSAGE).unwrap();
    let rsa = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");
    let verified = Verifier::new(&trust)
        .verify(
            MESSAGE,
            &[
                input(&stranger, &sig_s),
                SignatureInput::new(rsa, a.verifying_key().key_id(), &sig_a),
                input(&a, &sig_a),
            ],
        )
        .unwrap();
    assert_eq!(verified.signers(), &[a.verifying_key().key_id()]);
}

#[test]
fn reports_first_signatures_error_when_none_verifies() {
    let (a, stranger) = (key(), key());
    let trust = pinned(&[&a]);
    let sig_s = stranger.sign(MESSAGE).unwrap();
    let ed25519 = ObjectIdentifier::new_unwrap("1.3.101.112");
    let err = Verifier::new(&trust)
        .verify(
            MESSAGE,
            &[
                SignatureInput::new(ed25519, a.verifying_key().key_id(), &sig_s),
                input(&stranger, &sig_s),
            ],
        )
        .err();
    assert_eq!(err, Some(Error::UnsupportedAlgorithm { oid: ed25519 }));
}

#[test]
fn rejects_everything_with_empty_trust_store() {
    let key = key();
    let signature = key.sign(MESSAGE).unwrap();
    let trust = PinnedKeys::new();
    assert!(TrustStore::is_empty(&trust));
    assert_eq!(
        Verifier::new(&trust)
            .verify(MESSAGE, &[input(&key, &signature)])
            .err(),
        Some(Error::NoTrustAnchors)
    );
    assert_eq!(
        Verifier::new(&trust).verify(MESSAGE, &[]).err(),
        Some(Error::NoTrustAnchors)
    );
}

#[test]
fn rejects_message_without_signatures() {
    let trust = pinned(&[&key()]);
    assert_eq!(
        Verifier::new(&trust).verify(MESSAGE, &[]).err(),
        Some(Error::NoSignatures)
    );
}

#[test]
fn rejects_more_than_max_signatures() {
    let key = key();
    let signature = key.sign(MESSAGE).unwrap();
    let trust = pinned(&[&key]);
    let inputs = vec![input(&key, &signature); MAX_SIGNATURES + 1];
    assert_eq!(
        Verifier::new(&trust).verify(MESSAGE, &inputs).err(),
        Some(Error::TooManySignatures {
            count: MAX_SIGNATURES + 1,
            limit: MAX_SIGNATURES
        })
    );
    // Exactly the limit is fine.
    Verifier::new(&trust)
        .verify(MESSAGE, &inputs[..MAX_SIGNATURES])
        .unwrap();
}

#[test]
fn rejects_malformed_certificate_chain() {
    let key = key();
    let signature = key.sign(MESSAGE).unwrap();
    let trust = pinned(&[&key]);
    let mut with_chain = input(&key, &signature);
    with_chain.certificates = vec![&[0x30, 0x00]];
    assert!(matches!(
        Verifier::new(&trust)
            .verify(MESSAGE, &[with_chain.clone()])
            .err(),
        Some(Error::CertificateMalformed { index: 0, .. })
    ));
    // A store without chain anchors refuses chains outright.
    let store = LyingStore(TrustAnchor::new(key.verifying_key()));
    assert_eq!(
        Verifier::new(&store).verify(MESSAGE, &[with_chain]).err(),
        Some(Error::CertificatesUnsupported {
            key_id: key.verifying_key().key_id()
        })
    );
}

#[test]
fn rejects_impossible_policies() {
    let key = key();
    let signature = key.sign(MESSAGE).unwrap();
    let trust = pinned(&[&key]);
    for threshold in [0, MAX_SIGNATURES + 1] {
        assert!(matches!(
            Verifier::new(&trust)
                .with_policy(Policy::default().with_threshold(threshold))
                .verify(MESSAGE, &[input(&key, &signature)]),
            Err(Error::InvalidPolicy { .. })
        ));
    }
}

#[test]
fn rejects_algorithm_left_out_of_the_list() {
    let key = key();
    let signature = key.sign(MESSAGE).unwrap();
    let trust = pinned(&[&key]);
    assert_eq!(
        Verifier::new(&trust)
            .with_algorithms(&[])
            .verify(MESSAGE, &[input(&key, &signature)])
            .err(),
        Some(Error::UnsupportedAlgorithm {
            oid: ECDSA_WITH_SHA256
        })
    );
    let only_ecdsa: &[&dyn SignatureAlgorithm] = &[ECDSA_P256_SHA256];
    Verifier::new(&trust)
        .with_algorithms(only_ecdsa)
        .verify(MESSAGE, &[input(&key, &signature)])
        .unwrap();
    assert_eq!(DEFAULT_ALGORITHMS.len(), 3);
    assert_eq!(DEFAULT_ALGORITHMS[0].oid(), ECDSA_WITH_SHA256);
    assert_eq!(DEFAULT_ALGORITHMS[1].name(), "rsa-pkcs1-sha256");
    assert_eq!(DEFAULT_ALGORITHMS[2].name(), "rsa-pss-sha256");
    assert_eq!(ECDSA_P256_SHA256.name(), "ecdsa-p256-sha256");
}

/// A trust store that answers with the wrong anchor: the verifier must notice.
struct LyingStore(TrustAnchor);

impl TrustStore for LyingStore {
    fn anchor(&self, _key_id: &KeyId) -> Option<&TrustAnchor> {
        Some(&self.0)
    }
    fn is_empty(&self) -> bool {
        false
    }
}

#[test]
fn rejects_anchor_with_other_key_id_from_faulty_store() {
    let (a, b) = (key(), key());
    let signature = b.sign(MESSAGE).unwrap();
    let store = LyingStore(TrustAnchor::new(b.verifying_key()));
    let claimed = a.verifying_key().key_id();
    assert_eq!(
        Verifier::new(&store)
            .verify(
                MESSAGE,
                &[SignatureInput::new(ECDSA_WITH_SHA256, claimed, &signature)]
            )
            .err(),
        Some(Error::KeyIdMismatch {
            key_id: claimed,
            anchor_key_id: b.verifying_key().key_id()
        })
    );
}

#[test]
fn pinned_keys_are_deduplicated_and_ordered() {
    let (a, b) = (key(), key());
    let mut trust = PinnedKeys::new();
    let id_a = trust.add_anchor(TrustAnchor::new(a.verifying_key()).with_name("first"));
    assert_eq!(trust.add(a.verifying_key()), id_a);
    let id_b = trust.add(b.verifying_key());
    assert_eq!(trust.len(), 2);
    assert_eq!(trust.anchor(&id_a).unwrap().name(), Some("first"));
    let ids: Vec<KeyId> = trust.iter().map(TrustAnchor::key_id).collect();
    let mut sorted = vec![id_a, id_b];
    sorted.sort();
    assert_eq!(ids, sorted);
    assert!(trust.remove(&id_a).is_some());
    assert!(!trust.contains(&id_a));
}

#[test]
fn verifying_key_pem_round_trips() {
    let public = key().verifying_key();
    let pem = public.to_public_key_pem();
    assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----\n"));
    assert_eq!(VerifyingKey::from_public_key_pem(&pem).unwrap(), public);
    assert_eq!(public.algorithm_name(), "ecdsa-p256");
    let bundle =
        PinnedKeys::from_pem(&[pem.clone(), key().verifying_key().to_public_key_pem()].concat())
            .unwrap();
    assert_eq!(bundle.len(), 2);
    assert!(matches!(
        VerifyingKey::from_public_key_pem(&[pem.clone(), pem].concat()),
        Err(Error::Pem { .. })
    ));
}

#[test]
fn signing_key_pem_round_trips_and_refuses_to_be_pinned() {
    let signing = key();
    let pem = signing.to_pkcs8_pem().unwrap();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
    let again = SigningKey::from_pem(&pem).unwrap();
    assert_eq!(again.verifying_key(), signing.verifying_key());
    assert_eq!(again.sign(MESSAGE).unwrap(), signing.sign(MESSAGE).unwrap());
    assert!(matches!(
        VerifyingKey::from_public_key_pem(&pem),
        Err(Error::InvalidKey { .. })
    ));
    assert!(matches!(
        PinnedKeys::from_pem(&pem),
        Err(Error::InvalidKey { .. })
    ));
}

#[test]
fn errors_display_their_context() {
    let key_id = KeyId([0xab; 32]);
    let text = Error::BadSignature { key_id }.to_string();
    assert!(text.contains(&"ab".repeat(32)), "{text}");
    let text = Error::ThresholdNotMet {
        required: 2,
        valid: 1,
    }
    .to_string();
    assert!(text.contains('2') && text.contains('1'), "{text}");
}
