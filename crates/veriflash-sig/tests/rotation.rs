//! Trust-anchor rotation (`Verifier::verify_rotation`): signed by a threshold of the current
//! anchors, proven by a threshold of the new ones, and only ever forward.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers outside #[test] fns: a failure should abort the test"
)]

use veriflash_sig::{
    Error, KeyId, ObjectIdentifier, PinnedKeys, Policy, SignatureInput, SigningKey, Verifier,
};

const MESSAGE: &[u8] = b"header || manifest of a package that carries a new anchor set";

fn keys<const N: usize>() -> [SigningKey; N] {
    core::array::from_fn(|_| SigningKey::generate_p256().unwrap())
}

fn pinned(keys: &[&SigningKey]) -> PinnedKeys {
    keys.iter().map(|k| k.verifying_key()).collect()
}

fn id(key: &SigningKey) -> KeyId {
    key.verifying_key().key_id()
}

/// Signatures by `keys` over MESSAGE (owned, so inputs can borrow them).
fn sign(keys: &[&SigningKey]) -> Vec<(ObjectIdentifier, KeyId, Vec<u8>)> {
    keys.iter()
        .map(|k| (k.algorithm(), id(k), k.sign(MESSAGE).unwrap()))
        .collect()
}

fn inputs(signed: &[(ObjectIdentifier, KeyId, Vec<u8>)]) -> Vec<SignatureInput<'_>> {
    signed
        .iter()
        .map(|(algorithm, key_id, sig)| SignatureInput::new(*algorithm, *key_id, sig))
        .collect()
}

#[test]
fn a_rotation_signed_by_both_sets_is_approved_and_names_who_signed() {
    let [a, b, c, d] = keys();
    let current = pinned(&[&a, &b]);
    let next = pinned(&[&c, &d]);
    let signed = sign(&[&a, &c, &d]);
    let approval = Verifier::new(&current)
        .verify_rotation(MESSAGE, &inputs(&signed), &next, 1, 2)
        .unwrap();
    assert_eq!(approval.current_signers(), &[id(&a)]);
    assert_eq!(approval.next_signers(), &[id(&c), id(&d)]);
}

#[test]
fn the_current_set_must_reach_the_rotation_threshold() {
    let [a, b, c] = keys();
    let current = pinned(&[&a, &b]);
    let next = pinned(&[&c]);
    let strict = Policy::default().with_rotation_threshold(2);
    assert_eq!(strict.threshold(), 1, "routine packages still need one");
    let verifier = Verifier::new(&current).with_policy(strict);
    // The same key twice is one vote.
    let signed = sign(&[&a, &a, &c]);
    assert_eq!(
        verifier.verify_rotation(MESSAGE, &inputs(&signed), &next, 1, 1),
        Err(Error::RotationNotAuthorized {
            required: 2,
            valid: 1
        })
    );
    let signed = sign(&[&a, &b, &c]);
    assert!(
        verifier
            .verify_rotation(MESSAGE, &inputs(&signed), &next, 1, 1)
            .is_ok()
    );
    // Signatures by keys of the new set alone authorize nothing.
    let signed = sign(&[&c]);
    assert_eq!(
        Verifier::new(&current).verify_rotation(MESSAGE, &inputs(&signed), &next, 1, 1),
        Err(Error::RotationNotAuthorized {
            required: 1,
            valid: 0
        })
    );
}

#[test]
fn the_new_set_must_prove_its_own_threshold() {
    let [a, c, d] = keys();
    let current = pinned(&[&a]);
    let next = pinned(&[&c, &d]);
    let signed = sign(&[&a, &c]);
    assert_eq!(
        Verifier::new(&current).verify_rotation(MESSAGE, &inputs(&signed), &next, 1, 2),
        Err(Error::RotationNotProven {
            required: 2,
            valid: 1
        })
    );
    // A tampered message proves nothing, for either set.
    let signed = sign(&[&a, &c, &d]);
    assert_eq!(
        Verifier::new(&current).verify_rotation(b"other", &inputs(&signed), &next, 1, 2),
        Err(Error::RotationNotAuthorized {
            required: 1,
            valid: 0
        })
    );
    // A revoked key of the new set does not count for it.
    let revoked = Verifier::new(&current).with_policy(Policy::default().with_revoked_key(id(&d)));
    assert_eq!(
        revoked.verify_rotation(MESSAGE, &inputs(&signed), &next, 1, 2),
        Err(Error::RotationNotProven {
            required: 2,
            valid: 1
        })
    );
}

#[test]
fn only_a_newer_set_is_adopted() {
    let [a, c] = keys();
    let current = pinned(&[&a]);
    let next = pinned(&[&c]);
    let signed = sign(&[&a, &c]);
    let at_five = Verifier::new(&current).with_policy(Policy::default().with_anchor_set_version(5));
    for offered in [0, 4, 5] {
        assert_eq!(
            at_five.verify_rotation(MESSAGE, &inputs(&signed), &next, offered, 1),
            Err(Error::RotationNotNewer {
                current: 5,
                offered
            })
        );
    }
    assert!(
        at_five
            .verify_rotation(MESSAGE, &inputs(&signed), &next, 6, 1)
            .is_ok()
    );
}

#[test]
fn impossible_thresholds_and_empty_sets_fail_closed() {
    let [a] = keys();
    let current = pinned(&[&a]);
    let signed = sign(&[&a]);
    let verifier = Verifier::new(&current);
    assert_eq!(
        verifier.verify_rotation(MESSAGE, &inputs(&signed), &PinnedKeys::new(), 1, 1),
        Err(Error::NoTrustAnchors)
    );
    assert!(matches!(
        verifier.verify_rotation(MESSAGE, &inputs(&signed), &current, 1, 0),
        Err(Error::InvalidPolicy { .. })
    ));
    assert!(matches!(
        Verifier::new(&current)
            .with_policy(Policy::default().with_rotation_threshold(0))
            .verify(MESSAGE, &inputs(&signed)),
        Err(Error::InvalidPolicy { .. })
    ));
    assert_eq!(
        verifier.verify_rotation(MESSAGE, &[], &current, 1, 1),
        Err(Error::NoSignatures)
    );
}
