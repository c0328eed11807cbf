//! Hostile and malformed input never panics and is refused (a cheap, deterministic fuzz).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers outside #[test] fns: a failure should abort the test"
)]

use veriflash_sig::{
    EcdsaSignatureEncoding, Error, KeyId, PinnedKeys, SigningKey, VerifyingKey,
    ecdsa_p256_signature_to_der,
};

/// xorshift64*: deterministic, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % u64::try_from(n).unwrap()).unwrap()
    }
}

const PIECES: &[&str] = &[
    "-----BEGIN ",
    "-----END ",
    "-----",
    "PUBLIC KEY",
    "PRIVATE KEY",
    "EC PRIVATE KEY",
    "EC PARAMETERS",
    "ENCRYPTED PRIVATE KEY",
    "Proc-Type: 4,ENCRYPTED",
    "\n",
    "\r\n",
    " ",
    ":",
    "=",
    "==",
    "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE",
    "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg",
    "AAAA",
    "////",
    "é",
    "\0",
];

fn garbage(rng: &mut Rng) -> String {
    let mut text = String::new();
    for _ in 0..rng.below(24) {
        text.push_str(PIECES[rng.below(PIECES.len())]);
    }
    text
}

fn all_parsers_refuse_or_survive(text: &str) {
    // Each call must return (Ok or Err), never panic.
    let _ = SigningKey::from_pem(text);
    let _ = VerifyingKey::from_public_key_pem(text);
    let _ = PinnedKeys::from_pem(text);
    let _ = KeyId::from_hex(text);
    let bytes = text.as_bytes();
    let _ = VerifyingKey::from_spki_der(bytes);
    let _ = SigningKey::from_pkcs8_der(bytes);
    let _ = SigningKey::from_sec1_der(bytes);
    let _ = ecdsa_p256_signature_to_der(bytes, EcdsaSignatureEncoding::Der);
    let _ = ecdsa_p256_signature_to_der(bytes, EcdsaSignatureEncoding::Raw);
}

#[test]
fn random_pem_like_text_never_panics() {
    let mut rng = Rng(0x5eed_1234_abcd_ef01);
    for _ in 0..3000 {
        let text = garbage(&mut rng);
        all_parsers_refuse_or_survive(&text);
    }
}

#[test]
fn random_bytes_never_panic_der_parsers() {
    let mut rng = Rng(0x0ddb_a11c_afe0_0001);
    for _ in 0..3000 {
        let len = rng.below(200);
        let bytes: Vec<u8> = (0..len).map(|_| rng.next().to_le_bytes()[0]).collect();
        let _ = VerifyingKey::from_spki_der(&bytes);
        let _ = SigningKey::from_pkcs8_der(&bytes);
        let _ = SigningKey::from_sec1_der(&bytes);
        let _ = ecdsa_p256_signature_to_der(&bytes, EcdsaSignatureEncoding::Der);
        let _ = ecdsa_p256_signature_to_der(&bytes, EcdsaSignatureEncoding::Raw);
    }
}

#[test]
fn every_truncation_of_a_key_pem_is_refused() {
    let signing = SigningKey::generate_p256().unwrap();
    let private = signing.to_pkcs8_pem().unwrap();
    let public = signing.verifying_key().to_public_key_pem();
    // Cutting inside the END line or earlier always loses data or the boundary.
    let private_end = private.trim_end().len();
    for cut in 0..private_end {
        assert!(
            SigningKey::from_pem(&private[..cut]).is_err(),
            "private PEM cut at {cut} accepted"
        );
    }
    let public_end = public.trim_end().len();
    for cut in 0..public_end {
        assert!(
            VerifyingKey::from_public_key_pem(&public[..cut]).is_err(),
            "public PEM cut at {cut} accepted"
        );
    }
}

#[test]
fn every_byte_flip_of_a_public_key_pem_is_refused_or_yields_another_key() {
    let public = SigningKey::generate_p256().unwrap().verifying_key();
    let pem = public.to_public_key_pem().into_bytes();
    for index in 0..pem.len() {
        let mut bad = pem.clone();
        bad[index] ^= 0x01;
        let Ok(text) = String::from_utf8(bad) else {
            continue;
        };
        // Base64 is strict (no ignored padding bits), so any flip that still parses must
        // decode to different key bytes, never silently to the original key.
        if let Ok(key) = VerifyingKey::from_public_key_pem(&text) {
            assert_ne!(key, public, "flip at {index} parsed as the same key");
        }
    }
}

#[test]
fn empty_and_whitespace_text_is_a_pem_error() {
    for text in ["", "\n", "   \r\n", "hello"] {
        assert!(matches!(SigningKey::from_pem(text), Err(Error::Pem { .. })));
        assert!(matches!(
            VerifyingKey::from_public_key_pem(text),
            Err(Error::Pem { .. })
        ));
    }
}
