//! Replays the fuzz corpus on stable: every file under `fuzz/seeds/<target>/` and
//! `fuzz/regressions/<target>/` goes through the same check the fuzz target runs
//! (`fuzz/checks.rs`, included here), so CI catches a regression without nightly or libFuzzer.
//!
//! Also the seed generator: `VERIFLASH_WRITE_SEEDS=1 cargo test -p veriflash-core --test
//! fuzz_replay` rewrites the package-derived seeds from real packages signed with the fuzz
//! harness's test-only key.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

#[path = "../../../fuzz/checks.rs"]
#[allow(unreachable_pub)]
mod checks;
mod support;

use std::path::{Path, PathBuf};

use veriflash_core::format::{SignatureBlock, SignatureEntry};
use veriflash_core::sig::{PinnedKeys, SigningKey, Verifier};

use support::{Image, build, pseudo_random, verify_bytes};

/// Targets of `fuzz/checks_mdm9x07.rs`: replayed by the plugin crate's own test
/// (`crates/veriflash-mdm9x07/tests/fuzz_replay.rs`), which can see the plugin.
const PLUGIN_TARGETS: &[&str] = &["sahara", "firehose", "mibib", "rawprogram"];

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

/// `(target directory, file)` for every file under `fuzz/<kind>/`.
fn corpus_files(kind: &str) -> Vec<(String, PathBuf)> {
    let root = fuzz_dir().join(kind);
    let Ok(dirs) = std::fs::read_dir(&root) else {
        return Vec::new();
    };
    let mut files = Vec::new();
    for dir in dirs {
        let dir = dir.unwrap().path();
        let target = dir.file_name().unwrap().to_string_lossy().into_owned();
        if PLUGIN_TARGETS.contains(&target.as_str()) {
            continue;
        }
        assert!(
            checks::TARGETS.contains(&target.as_str()),
            "{}: not a fuzz target (one of {:?})",
            dir.display(),
            checks::TARGETS
        );
        for file in std::fs::read_dir(&dir).unwrap() {
            let file = file.unwrap().path();
            if file.is_file() {
                files.push((target.clone(), file));
            }
        }
    }
    files.sort();
    files
}

/// Runs each file through its target's check, catching panics so every failure is listed.
fn replay(files: &[(String, PathBuf)]) -> Vec<String> {
    let mut failures = Vec::new();
    for (target, file) in files {
        let data = std::fs::read(file).unwrap();
        let outcome = std::panic::catch_unwind(|| checks::run(target, &data));
        match outcome {
            Ok(true) => {}
            Ok(false) => failures.push(format!("{}: unknown target {target}", file.display())),
            Err(_) => failures.push(format!("{}: check `{target}` panicked", file.display())),
        }
    }
    failures
}

#[test]
fn every_seed_passes_its_fuzz_target_check() {
    let files = corpus_files("seeds");
    for target in checks::TARGETS {
        assert!(
            files.iter().any(|(t, _)| t == target),
            "no seed for fuzz target {target} under fuzz/seeds/{target}/"
        );
    }
    assert!(!checks::run("no_such_target", b""));
    let failures = replay(&files);
    assert!(
        failures.is_empty(),
        "seed failures:\n{}",
        failures.join("\n")
    );
}

#[test]
fn every_crash_reproducer_is_fixed() {
    let files = corpus_files("regressions");
    let failures = replay(&files);
    assert!(failures.is_empty(), "regressions:\n{}", failures.join("\n"));
}

fn small_images() -> Vec<Image> {
    vec![
        Image {
            name: "boot",
            bytes: pseudo_random(5_000, 11),
            chunk_size: 4096,
        },
        Image {
            name: "modem",
            bytes: pseudo_random(9_000, 12),
            chunk_size: 4096,
        },
    ]
}

/// The package-derived seeds: `(target, file name, bytes)`.
fn generated_seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let key = SigningKey::from_pem(checks::TEST_ONLY_SIGNING_KEY_PEM).unwrap();
    let other = SigningKey::generate_p256().unwrap();
    let packages = [
        ("two-images", build(&[&key], small_images(), 3)),
        (
            "one-byte-image",
            build(
                &[&key],
                vec![Image {
                    name: "cfg",
                    bytes: vec![0x5A],
                    chunk_size: 4096,
                }],
                0,
            ),
        ),
        ("two-signers", build(&[&other, &key], small_images(), 4)),
    ];
    let mut seeds = Vec::new();
    for (name, fx) in &packages {
        seeds.push(("header", format!("{name}.bin"), fx.header().to_vec()));
        seeds.push(("manifest", format!("{name}.der"), fx.manifest().to_vec()));
        seeds.push((
            "signature_block",
            format!("{name}.der"),
            fx.signature_block().to_vec(),
        ));
        seeds.push(("package", format!("{name}.vfp"), fx.bytes.clone()));
        seeds.push(("verify", format!("{name}.vfp"), fx.bytes.clone()));
    }
    // A block with a certificate chain (opaque DER SEQUENCEs to the format).
    let entry = SignatureEntry {
        algorithm: key.algorithm(),
        key_id: key.verifying_key().key_id().0,
        signature: key.sign(b"message").unwrap(),
        certificates: vec![vec![0x30, 0x03, 0x02, 0x01, 0x01], vec![0x30, 0x00]],
    };
    let block = SignatureBlock {
        entries: vec![entry],
    };
    seeds.push((
        "signature_block",
        "with-certificates.der".into(),
        block.to_der().unwrap(),
    ));
    seeds
}

#[test]
fn generated_seeds_are_real_packages_that_pass_the_checks() {
    let seeds = generated_seeds();
    let trust = PinnedKeys::from_pem(checks::TRUST_ANCHOR_PEM).unwrap();
    let verifier = Verifier::new(&trust);
    for (target, name, bytes) in &seeds {
        assert!(checks::run(target, bytes), "{target}/{name}");
        if *target == "verify" {
            // The verify seeds must pass verification, or the fuzzer never reaches the payload.
            verify_bytes(bytes, &verifier).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
    if std::env::var_os("VERIFLASH_WRITE_SEEDS").is_some() {
        for (target, name, bytes) in &seeds {
            let dir = fuzz_dir().join("seeds").join(target);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }
}

#[test]
fn the_chain_seed_is_a_valid_path_so_the_fuzzer_starts_past_the_parsers() {
    use veriflash_core::sig::{ChainPolicy, PinnedKeys, TimePolicy, verify_chain};
    let seed = std::fs::read(fuzz_dir().join("seeds/chain/leaf-intermediate.bin")).unwrap();
    let leaf_len = usize::from(u16::from_be_bytes([seed[0], seed[1]]));
    let leaf = &seed[2..2 + leaf_len];
    let rest = &seed[2 + leaf_len..];
    let inter = &rest[2..];
    let anchors = PinnedKeys::from_pem(checks::CHAIN_ROOT_PEM).unwrap();
    let path = verify_chain(
        leaf,
        &[inter],
        &anchors,
        TimePolicy::NoClock,
        ChainPolicy::default(),
    )
    .unwrap();
    assert_eq!(path.certificates().len(), 2);
}
