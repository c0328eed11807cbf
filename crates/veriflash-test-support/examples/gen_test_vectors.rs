//! Writes the package test vectors of docs/FORMAT.md §10 into a directory (normally
//! `docs/test-vectors`, through its `generate.sh`): every `*.vfp` file, the public keys the
//! vectors trust, and `vectors.json`. The private test keys in `DIR/keys` are its input.
//!
//! ```sh
//! cargo run -p veriflash-test-support --example gen_test_vectors -- docs/test-vectors
//! ```

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use veriflash_test_support::vectors::generate;

fn main() -> ExitCode {
    let Some(dir) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: gen_test_vectors DIR");
        return ExitCode::from(2);
    };
    match write(&dir) {
        Ok(count) => {
            println!("wrote {count} vectors to {}", dir.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("gen_test_vectors: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Writes the vectors and removes `*.vfp` files no vector names any more.
fn write(dir: &Path) -> Result<usize, Box<dyn std::error::Error>> {
    let set = generate(dir)?;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let stale = path.extension().is_some_and(|ext| ext == "vfp")
            && !set.files.iter().any(|(name, _)| dir.join(name) == path);
        if stale {
            std::fs::remove_file(&path)?;
        }
    }
    for (name, bytes) in &set.files {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(path, bytes)?;
    }
    std::fs::write(dir.join("vectors.json"), set.manifest_json()?)?;
    Ok(set.vectors.len())
}
