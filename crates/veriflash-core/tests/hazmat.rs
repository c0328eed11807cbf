//! Plugin-facing chunks are made in one place: `veriflash_plugin::hazmat::bind`, called by the
//! pipeline right after a chunk matched a digest of a verified package. A plugin trusts every
//! `Chunk` it is handed, so no other code of this workspace may make one.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            if name != "target" && !name.starts_with('.') {
                rust_files(&path, out);
            }
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

#[test]
fn only_the_pipeline_binds_plugin_chunks() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut files = Vec::new();
    for dir in ["crates", "examples", "src", "benches", "fuzz", "tests"] {
        if root.join(dir).is_dir() {
            rust_files(&root.join(dir), &mut files);
        }
    }
    assert!(files.len() > 50, "the workspace was found");
    let allowed = [
        root.join("crates/veriflash-plugin/src/hazmat.rs"),
        root.join("crates/veriflash-plugin/src/lib.rs"),
        root.join("crates/veriflash-core/src/flash.rs"),
        root.join("crates/veriflash-core/tests/hazmat.rs"),
    ];
    let offenders: Vec<_> = files
        .iter()
        .filter(|f| {
            !allowed
                .iter()
                .any(|a| a.canonicalize().ok() == f.canonicalize().ok())
        })
        .filter(|f| std::fs::read_to_string(f).unwrap().contains("hazmat"))
        .collect();
    assert!(
        offenders.is_empty(),
        "hazmat used outside the pipeline: {offenders:?}"
    );
}
