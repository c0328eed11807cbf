//! Which product an MDM9x07 in download mode is. The boot ROM only reports its chip's OEM and
//! model ids; the vendor knows which product those mean. [`FILE`] in the embedder's
//! configuration directory ([`veriflash_plugin::PluginEnvironment::config_dir`]) says so, so
//! packages can name products as the vendor does:
//!
//! ```toml
//! [[product]]
//! oem_id = 0x0051              # bits 16..32 of the hardware id (`veriflash status` shows them)
//! model_id = 0x0102            # bits 0..16
//! product = "acme-hotspot-x1"
//! hardware_revision = "r3"
//! ```
//!
//! [`Mdm9x07Plugin::configure`](crate::Mdm9x07Plugin) puts its entries before the plugin's own
//! table, so they win; a chip in neither is reported as `qcom-oemXXXX-modelYYYY`.
//!
//! The file is parsed here, in the plugin, so every frontend (the CLI, the C API, a Rust
//! embedder) reads the same file the same way.

use std::io::Read as _;
use std::path::Path;

use serde::Deserialize;
use veriflash_plugin::config;

use crate::error::Error;
use crate::session::ProductId;

/// The file name in the configuration directory.
pub const FILE: &str = "mdm9x07-products.toml";
/// The largest products file read: a table of a few thousand entries.
pub const MAX_LEN: u64 = 1024 * 1024;

/// The keys of the file, for [`veriflash_plugin::config::check`].
static FILE_KEYS: config::Table = config::Table {
    name: "",
    keys: &[config::Key::table("product", &PRODUCT_KEYS, false)],
    always_strict: true,
};

static PRODUCT_KEYS: config::Table = config::Table {
    name: "[[product]]",
    keys: &[
        config::Key::required("oem_id"),
        config::Key::required("model_id"),
        config::Key::required("product"),
        config::Key::required("hardware_revision"),
    ],
    always_strict: true,
};

#[derive(Debug, Deserialize)]
struct Table {
    #[serde(default)]
    product: Vec<Entry>,
}

#[derive(Debug, Deserialize)]
struct Entry {
    oem_id: u16,
    model_id: u16,
    product: String,
    hardware_revision: String,
}

/// The products of `dir/mdm9x07-products.toml`, none when the file does not exist.
///
/// Unknown keys are refused, not skipped: a misspelt key silently ignored would flash a
/// product under the wrong name. The error names the key's line and the key it most resembles
/// ([`veriflash_plugin::config`], which every description veriflash reads is checked with).
///
/// # Errors
/// [`Error::Config`] naming the file, with the operating system's error when it cannot be read,
/// [`std::io::ErrorKind::FileTooLarge`] when it is over [`MAX_LEN`] bytes, and
/// [`std::io::ErrorKind::InvalidData`] when it is not a products table.
pub fn load(dir: &Path) -> Result<Vec<ProductId>, Error> {
    let path = dir.join(FILE);
    let bad = |source: std::io::Error| Error::Config {
        path: path.clone(),
        source,
    };
    let file = match std::fs::File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(bad(e)),
    };
    let too_large = |len: u64| {
        bad(std::io::Error::new(
            std::io::ErrorKind::FileTooLarge,
            format!("{len} bytes, at most {MAX_LEN}"),
        ))
    };
    let len = file.metadata().map_err(bad)?.len();
    if len > MAX_LEN {
        return Err(too_large(len));
    }
    // Bounded by the read itself too: the file may grow after its length was looked at.
    let mut text = String::new();
    file.take(MAX_LEN + 1)
        .read_to_string(&mut text)
        .map_err(bad)?;
    if text.len() as u64 > MAX_LEN {
        return Err(too_large(text.len() as u64));
    }
    let invalid = |message: String| {
        bad(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            message,
        ))
    };
    config::check(&text, &FILE_KEYS, config::UnknownKeys::Refuse)
        .map_err(|e| invalid(e.to_string()))?;
    let table: Table =
        toml::from_str(&text).map_err(|e| invalid(e.to_string().trim_end().to_owned()))?;
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
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn kind(err: &Error) -> Option<std::io::ErrorKind> {
        match err {
            Error::Config { source, .. } => Some(source.kind()),
            _ => None,
        }
    }

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
        assert_eq!(products[0].hardware_revision, "r3");
        std::fs::write(
            dir.path().join(FILE),
            "[[product]]\noem = 0x0051\nmodel_id = 1\nproduct = \"x1\"\nhardware_revision = \"r3\"\n",
        )
        .unwrap();
        let err = load(dir.path()).unwrap_err();
        assert_eq!(kind(&err), Some(std::io::ErrorKind::InvalidData));
        let message = err.to_string();
        assert!(message.contains(FILE), "{message}");
        assert!(
            message.ends_with("[[product]] #1: missing key 'oem_id'; did you mean 'oem' (line 2)?"),
            "names the misspelt key and its line: {message}"
        );
        std::fs::write(
            dir.path().join(FILE),
            "[[product]]\noem_id = 1\nmodel_id = 1\nproduct = \"x1\"\nhardware_revision = \"r3\"\nhw_rev = \"r4\"\n[[prodcut]]\n",
        )
        .unwrap();
        let message = load(dir.path()).unwrap_err().to_string();
        assert!(
            message.contains("[[product]] #1: unknown key 'hw_rev' (line 6)")
                && message.contains("unknown key 'prodcut' (line 7); did you mean 'product'?"),
            "{message}"
        );
    }

    #[test]
    fn an_empty_file_is_an_empty_table_and_entries_keep_their_order() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE), "").unwrap();
        assert!(load(dir.path()).unwrap().is_empty());
        std::fs::write(
            dir.path().join(FILE),
            "[[product]]\noem_id = 1\nmodel_id = 2\nproduct = \"b\"\nhardware_revision = \"r1\"\n\
             [[product]]\noem_id = 1\nmodel_id = 2\nproduct = \"a\"\nhardware_revision = \"r1\"\n",
        )
        .unwrap();
        let names: Vec<String> = load(dir.path())
            .unwrap()
            .into_iter()
            .map(|p| p.product)
            .collect();
        assert_eq!(names, ["b", "a"]);
    }

    #[test]
    fn refuses_ids_out_of_range_and_missing_fields() {
        let dir = tempfile::tempdir().unwrap();
        for bad in [
            // An OEM id is 16 bits.
            "[[product]]\noem_id = 0x10000\nmodel_id = 1\nproduct = \"x\"\nhardware_revision = \"r\"\n",
            "[[product]]\noem_id = 1\nmodel_id = 1\nproduct = \"x\"\n",
            "[product]\noem_id = 1\n",
            "not toml at all [",
        ] {
            std::fs::write(dir.path().join(FILE), bad).unwrap();
            let err = load(dir.path()).unwrap_err();
            assert_eq!(
                kind(&err),
                Some(std::io::ErrorKind::InvalidData),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn refuses_a_file_over_the_limit_before_parsing_it() {
        let dir = tempfile::tempdir().unwrap();
        let len = usize::try_from(MAX_LEN).unwrap() + 1;
        // Valid TOML (a comment) of one byte too many.
        let mut text = vec![b'#'; len];
        text[len - 1] = b'\n';
        std::fs::write(dir.path().join(FILE), text).unwrap();
        let err = load(dir.path()).unwrap_err();
        assert_eq!(kind(&err), Some(std::io::ErrorKind::FileTooLarge), "{err}");
        assert!(err.to_string().contains("at most 1048576"), "{err}");
    }

    #[test]
    fn a_products_path_that_cannot_be_read_is_the_operating_systems_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(FILE)).unwrap();
        let err = load(dir.path()).unwrap_err();
        assert!(
            matches!(&err, Error::Config { path, .. } if path.ends_with(FILE)),
            "{err}"
        );
    }
}
