//! The package test vectors of docs/FORMAT.md §10 (`docs/test-vectors`): the committed files
//! are exactly what the generator writes from the committed test keys, and the library — the
//! `Updater` that `veriflash verify` runs — gives every vector the result `vectors.json` says.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::Value;
use veriflash_core::sig::PinnedKeys;
use veriflash_core::{
    AnchorSet, ErrorKind, InstalledImages, PackageReader, PackageSource, Trust, TrustedTime,
    Updater,
};
use veriflash_test_support::vectors::generate;

fn vectors_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/test-vectors")
}

fn vfp_files(names: impl Iterator<Item = String>) -> BTreeSet<String> {
    names.filter(|name| name.ends_with(".vfp")).collect()
}

#[test]
fn committed_vectors_are_exactly_what_the_generator_writes() {
    let dir = vectors_dir();
    let set = generate(&dir).unwrap();
    for (name, bytes) in &set.files {
        let committed = std::fs::read(dir.join(name)).unwrap_or_default();
        assert!(
            committed == *bytes,
            "{name} differs from what the generator writes: run docs/test-vectors/generate.sh"
        );
    }
    assert_eq!(
        std::fs::read_to_string(dir.join("vectors.json")).unwrap(),
        set.manifest_json().unwrap(),
        "vectors.json: run docs/test-vectors/generate.sh"
    );
    let committed = vfp_files(
        std::fs::read_dir(&dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned()),
    );
    let generated = vfp_files(set.files.iter().map(|(name, _)| name.clone()));
    assert_eq!(committed, generated, "stray or missing vector files");
}

/// Verifies one vector as `veriflash verify --no-clock --threshold K [--whole-image-digest]`
/// does, trusting exactly its anchors; returns the code (0: accepted) and, when accepted, each
/// image's `sha256_checked`.
fn run(dir: &Path, vector: &Value) -> (u8, Vec<bool>) {
    let mut keys = PinnedKeys::new();
    for anchor in vector["anchors"].as_array().unwrap() {
        let set = AnchorSet::load(&dir.join(anchor.as_str().unwrap())).unwrap();
        for anchor in set.anchors().iter() {
            keys.add_anchor(anchor.clone());
        }
    }
    let threshold = usize::try_from(vector["threshold"].as_u64().unwrap()).unwrap();
    let trust = Trust::new(AnchorSet::new(keys, 1))
        .with_time(TrustedTime::None)
        .with_threshold(threshold);
    let file = dir.join(vector["file"].as_str().unwrap());
    if let Some(source) = vector["source"].as_str() {
        let mut installed = Source(std::fs::read(dir.join(source)).unwrap());
        let result = PackageReader::open(&file)
            .and_then(|reader| reader.verify(&trust.verifier()))
            .and_then(|package| package.stream_with_source(&mut installed, |_, _| Ok(())));
        return match result {
            Ok(report) => (0, report.images.iter().map(|i| i.sha256_checked).collect()),
            Err(err) => (err.code(), Vec::new()),
        };
    }
    let result = Updater::builder(PackageSource::File(file), trust)
        .check_whole_image(vector["whole_image_digest"].as_bool().unwrap())
        .build()
        .and_then(|mut updater| updater.verify());
    match result {
        Ok(report) => (0, report.images.iter().map(|i| i.sha256_checked).collect()),
        Err(err) => (err.code(), Vec::new()),
    }
}

/// The image a delta vector's device runs in partition `boot` (its `source`).
struct Source(Vec<u8>);

impl InstalledImages for Source {
    fn installed_len(&mut self, partition: &str) -> Result<Option<u64>, veriflash_core::Error> {
        Ok((partition == "boot").then_some(self.0.len() as u64))
    }

    fn read_installed(
        &mut self,
        _: &str,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<(), veriflash_core::Error> {
        let start = usize::try_from(offset).unwrap();
        buf.copy_from_slice(self.0.get(start..start + buf.len()).unwrap());
        Ok(())
    }
}

#[test]
fn every_vector_gets_its_expected_code_from_the_library() {
    let dir = vectors_dir();
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("vectors.json")).unwrap()).unwrap();
    let vectors = manifest["vectors"].as_array().unwrap();
    assert!(vectors.len() >= 70, "only {} vectors", vectors.len());
    let mut wrong = Vec::new();
    for vector in vectors {
        let expected = u8::try_from(vector["code"].as_u64().unwrap()).unwrap();
        let kind = ErrorKind::from_code(expected).map_or("accepted", ErrorKind::name);
        assert_eq!(vector["kind"], kind, "{vector}");
        let (code, checked) = run(&dir, vector);
        if code != expected {
            wrong.push(format!(
                "{} ({}): expected {expected}, got {code}",
                vector["file"], vector["rule"]
            ));
        }
        // FORMAT.md §3: a report says the whole-image digest was checked only when it was.
        let whole = vector["whole_image_digest"].as_bool().unwrap();
        assert!(
            checked.iter().all(|&c| c == whole),
            "{}: sha256_checked {checked:?} without whole_image_digest = {whole}",
            vector["file"]
        );
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// FORMAT.md §9 gives each refusal a code and a kind: they must be the library's.
#[test]
fn format_md_error_table_matches_the_error_kinds() {
    let format = std::fs::read_to_string(vectors_dir().join("../FORMAT.md")).unwrap();
    let section = format
        .split("## 9. Errors and codes")
        .nth(1)
        .and_then(|rest| rest.split("## 10.").next())
        .expect("FORMAT.md has a §9");
    let mut rows = 0;
    for line in section.lines().filter(|line| line.starts_with("| `")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let code: u8 = cells[2].parse().unwrap();
        let kind = cells[3].trim_matches('`');
        assert_eq!(
            ErrorKind::from_code(code).map(ErrorKind::name),
            Some(kind),
            "{line}"
        );
        rows += 1;
    }
    assert!(rows >= 20, "only {rows} rows in FORMAT.md §9");
}
