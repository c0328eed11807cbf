//! `PinnedKeys::load`: one file, a bundle, a directory, and the ways they are refused.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers outside #[test] fns: a failure should abort the test"
)]

use std::fs;

use veriflash_sig::{Error, MAX_KEY_FILE_LEN, PinnedKeys, SigningKey, TrustStore, VerifyingKey};

fn public() -> VerifyingKey {
    SigningKey::generate_p256().unwrap().verifying_key()
}

#[test]
fn loads_a_single_key_file_named_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let key = public();
    let path = dir.path().join("root.pem");
    fs::write(&path, key.to_public_key_pem()).unwrap();
    let keys = PinnedKeys::load(&path).unwrap();
    assert_eq!(keys.len(), 1);
    let anchor = keys.anchor(&key.key_id()).unwrap();
    assert_eq!(anchor.key(), &key);
    assert_eq!(anchor.name(), Some("root.pem"));
}

#[test]
fn loads_pem_and_pub_files_from_a_directory_and_skips_others() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = (public(), public(), public());
    fs::write(dir.path().join("a.pem"), a.to_public_key_pem()).unwrap();
    fs::write(
        dir.path().join("b.pub"),
        [b.to_public_key_pem(), c.to_public_key_pem()].concat(),
    )
    .unwrap();
    fs::write(dir.path().join("README.txt"), "not a key").unwrap();
    fs::create_dir(dir.path().join("sub.pem")).unwrap();
    let keys = PinnedKeys::load(dir.path()).unwrap();
    assert_eq!(keys.len(), 3);
    for key in [&a, &b, &c] {
        assert!(keys.contains(&key.key_id()));
    }
    assert_eq!(keys.anchor(&c.key_id()).unwrap().name(), Some("b.pub"));
    // Deterministic: loading again gives the same set in the same order.
    assert_eq!(PinnedKeys::load(dir.path()).unwrap(), keys);
}

#[test]
fn refuses_directory_without_keys() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("notes.txt"), "x").unwrap();
    assert!(matches!(
        PinnedKeys::load(dir.path()),
        Err(Error::NoPublicKeys { .. })
    ));
}

#[test]
fn refuses_private_key_in_key_directory() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("a.pem"), public().to_public_key_pem()).unwrap();
    let private = SigningKey::generate_p256().unwrap().to_pkcs8_pem().unwrap();
    fs::write(dir.path().join("oops.pem"), private.as_bytes()).unwrap();
    match PinnedKeys::load(dir.path()) {
        Err(Error::KeyFile { path, source }) => {
            assert!(path.ends_with("oops.pem"));
            assert!(matches!(*source, Error::InvalidKey { .. }));
        }
        other => panic!("expected KeyFile error, got {other:?}"),
    }
}

#[test]
fn refuses_missing_oversized_and_non_utf8_files() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        PinnedKeys::load(&dir.path().join("missing.pem")),
        Err(Error::Io { .. })
    ));
    let big = dir.path().join("big.pem");
    fs::write(
        &big,
        vec![b'A'; usize::try_from(MAX_KEY_FILE_LEN).unwrap() + 1],
    )
    .unwrap();
    assert!(matches!(PinnedKeys::load(&big), Err(Error::KeyFile { .. })));
    let binary = dir.path().join("bin.pem");
    fs::write(&binary, [0xff, 0xfe, 0x00]).unwrap();
    assert!(matches!(
        PinnedKeys::load(&binary),
        Err(Error::KeyFile { .. })
    ));
    let empty = dir.path().join("empty.pem");
    fs::write(&empty, "").unwrap();
    let err = PinnedKeys::load(&empty).unwrap_err();
    assert!(err.to_string().contains("empty.pem"), "{err}");
}
