//! Which product an MDM9x07 in download mode is. The boot ROM only reports its chip's OEM and
//! model ids; the vendor knows which product those mean. `mdm9x07-products.toml` in the
//! configuration directory says so, so packages can name products as the vendor does:
//!
//! ```toml
//! [[product]]
//! oem_id = 0x0051              # bits 16..32 of the hardware id (`veriflash status` shows them)
//! model_id = 0x0102            # bits 0..16
//! product = "acme-hotspot-x1"
//! hardware_revision = "r3"
//! ```
//!
//! Entries come before the plugin's built-in table, so they win; a chip in neither is reported
//! as `qcom-oemXXXX-modelYYYY`.

use std::path::{Path, PathBuf};

use veriflash_core::{Error, ErrorKind};
use veriflash_mdm9x07::ProductId;
#[cfg(test)]
use veriflash_mdm9x07::products::FILE;

/// The configuration directory: `$VERIFLASH_CONFIG_DIR`, else `$XDG_CONFIG_HOME/veriflash`,
/// else `~/.config/veriflash`; `None` without a home.
pub(crate) fn config_dir() -> Option<PathBuf> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(dir) = var("VERIFLASH_CONFIG_DIR") {
        return Some(dir.into());
    }
    let base = var("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| var("HOME").map(|h| Path::new(&h).join(".config")))?;
    Some(base.join("veriflash"))
}

/// The products of `dir/mdm9x07-products.toml`, none when the file does not exist. The plugin
/// parses the file (`veriflash_mdm9x07::products`), so every frontend reads it alike.
///
/// # Errors
/// [`ErrorKind::Io`] when it cannot be read, [`ErrorKind::InvalidInput`] when it is not a
/// products table (a misspelt key included: a silently ignored entry would flash a product
/// under the wrong name), [`ErrorKind::LimitExceeded`] when it is over 1 MiB.
pub(crate) fn load(dir: &Path) -> Result<Vec<ProductId>, Error> {
    veriflash_mdm9x07::products::load(dir).map_err(|e| {
        let kind = match &e {
            veriflash_mdm9x07::Error::Config { source, .. } => match source.kind() {
                std::io::ErrorKind::InvalidData => ErrorKind::InvalidInput,
                std::io::ErrorKind::FileTooLarge => ErrorKind::LimitExceeded,
                _ => ErrorKind::Io,
            },
            _ => ErrorKind::Io,
        };
        Error::new(kind, e.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_hex_ids_and_refuses_misspelt_keys() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path()).unwrap().is_empty(), "no file: no entries");
        std::fs::write(
            dir.path().join(FILE),
            "[[product]]\noem_id = 0x0051\nmodel_id = 0x0102\nproduct = \"x1\"\nhardware_revision = \"r3\"\n",
        )
        .unwrap();
        let products = load(dir.path()).unwrap();
        assert_eq!((products[0].oem_id, products[0].model_id), (0x51, 0x102));
        assert_eq!(products[0].product, "x1");
        std::fs::write(
            dir.path().join(FILE),
            "[[product]]\noem = 0x0051\nmodel_id = 1\nproduct = \"x1\"\nhardware_revision = \"r3\"\n",
        )
        .unwrap();
        assert_eq!(
            load(dir.path()).unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
    }
}
