//! `veriflash pack`: describe, digest, sign, write.

use std::path::Path;

use veriflash_core::UnsignedPackage;
use veriflash_core::trust::load_signing_key;

use crate::manifest_toml;
use crate::output::{Failure, human_size};

pub(crate) fn run(manifest: &Path, key: &Path, out: &Path) -> Result<(), Failure> {
    let key = load_signing_key(key)?;
    let loaded = manifest_toml::load(manifest)?;
    for warning in &loaded.warnings {
        eprintln!("warning: {warning}");
    }
    let unsigned = UnsignedPackage::prepare(loaded.spec)?;
    let written = unsigned.write_signed(&[&key], out)?;
    let m = unsigned.manifest();
    println!(
        "packed {} ({}): {} {} for {} / {}, security version {}",
        out.display(),
        human_size(written),
        m.images.len(),
        if m.images.len() == 1 {
            "image"
        } else {
            "images"
        },
        m.product,
        m.chipset,
        m.security_version
    );
    println!("signed by key {}", key.verifying_key().key_id());
    Ok(())
}
