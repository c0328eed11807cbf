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

use serde::Deserialize;
use veriflash_core::{Error, ErrorKind};
use veriflash_mdm9x07::ProductId;

/// The file name in the configuration directory.
pub(crate) const FILE: &str = "mdm9x07-products.toml";
/// The largest products file read: a table of a few thousand entries.
const MAX_LEN: u64 = 1024 * 1024;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Table {
    #[serde(default)]
    product: Vec<Entry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    oem_id: u16,
    model_id: u16,
    product: String,
    hardware_revision: String,
}

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

/// The products of `dir/mdm9x07-products.toml`, none when the file does not exist.
///
/// # Errors
/// [`ErrorKind::Io`] when it cannot be read, [`ErrorKind::InvalidInput`] when it is not a
/// products table (a misspelt key included: a silently ignored entry would flash a product
/// under the wrong name), [`ErrorKind::LimitExceeded`] when it is over 1 MiB.
pub(crate) fn load(dir: &Path) -> Result<Vec<ProductId>, Error> {
    let path = dir.join(FILE);
    let io = |e: std::io::Error| Error::new(ErrorKind::Io, format!("{}: {e}", path.display()));
    let len = match std::fs::metadata(&path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(e)),
    };
    if len > MAX_LEN {
        return Err(Error::new(
            ErrorKind::LimitExceeded,
            format!("{}: {len} bytes, at most {MAX_LEN}", path.display()),
        ));
    }
    let text = std::fs::read_to_string(&path).map_err(io)?;
    let table: Table = toml::from_str(&text).map_err(|e| {
        Error::new(
            ErrorKind::InvalidInput,
            format!("{}: {}", path.display(), e.to_string().trim_end()),
        )
    })?;
    Ok(table
        .product
        .into_iter()
        .map(|e| ProductId {
            oem_id: e.oem_id,
            model_id: e.model_id,
            product: e.product,
            hardware_revision: e.hardware_revision,
        })
        .collect())
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
