//! The package description `veriflash pack` reads (`M.toml`).
//!
//! ```toml
//! product = "acme-hotspot-x1"
//! chipset = "mdm9607"
//! version = "2.4.0"
//! security_version = 7
//! hardware_revisions = ["r2", "r3"]   # optional; empty or absent: any revision
//! chunk_size = 1048576                # optional; default 1 MiB
//!
//! [[image]]
//! name = "boot"
//! partition = "boot"
//! file = "images/boot.img"            # relative to this file
//! chunk_size = 65536                  # optional; overrides the package default
//!
//! [trust_rotation]                    # optional: devices adopt these anchors after installing
//! version = 1                         # above the version of the set the devices hold
//! threshold = 1                       # signatures a package needs under the new set
//! anchors = ["new-root.pem"]          # PEM public keys / root certificates, relative
//! ```
//!
//! A package with a `[trust_rotation]` must be signed by enough keys of the current set *and*
//! of the new one (docs/FORMAT.md §3.2).
//!
//! Keys this version does not know are allowed (so newer descriptions still pack) and are
//! reported as warnings, so a misspelt key does not go unnoticed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use veriflash_core::pack::DEFAULT_CHUNK_SIZE;
use veriflash_core::sig::PinnedKeys;
use veriflash_core::{AnchorSet, Error, ErrorKind, ImageData, ImageSource, PackageSpec};

#[derive(Debug, Deserialize)]
struct Description {
    product: String,
    chipset: String,
    version: String,
    security_version: u64,
    #[serde(default)]
    hardware_revisions: Vec<String>,
    chunk_size: Option<u32>,
    #[serde(default)]
    image: Vec<ImageEntry>,
    trust_rotation: Option<RotationEntry>,
    #[serde(flatten)]
    unknown: BTreeMap<String, toml::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RotationEntry {
    version: u64,
    threshold: usize,
    anchors: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct ImageEntry {
    name: String,
    partition: String,
    file: String,
    chunk_size: Option<u32>,
    #[serde(flatten)]
    unknown: BTreeMap<String, toml::Value>,
}

/// A parsed description: the package spec, the trust rotation it asks for, and any warnings
/// for the user.
#[derive(Debug)]
pub(crate) struct Loaded {
    pub(crate) spec: PackageSpec,
    pub(crate) rotation: Option<Rotation>,
    pub(crate) warnings: Vec<String>,
}

/// A `[trust_rotation]` table, its anchor files resolved against the description's directory.
#[derive(Debug)]
pub(crate) struct Rotation {
    pub(crate) version: u64,
    pub(crate) threshold: usize,
    pub(crate) anchors: Vec<PathBuf>,
}

impl Rotation {
    /// Loads the anchor files into the new set.
    pub(crate) fn anchor_set(&self) -> Result<AnchorSet, Error> {
        let mut keys = PinnedKeys::new();
        for path in &self.anchors {
            for anchor in AnchorSet::load(path)?.anchors().iter() {
                keys.add_anchor(anchor.clone());
            }
        }
        Ok(AnchorSet::new(keys, self.threshold).with_version(self.version))
    }
}

/// Reads and checks a description; image paths are resolved against its directory.
pub(crate) fn load(path: &Path) -> Result<Loaded, Error> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::new(ErrorKind::Io, format!("{}: {e}", path.display())))?;
    parse(&text, path.parent().unwrap_or(Path::new("."))).map_err(|e| {
        Error::new(
            ErrorKind::InvalidInput,
            format!("{}: {}", path.display(), e.message()),
        )
    })
}

fn parse(text: &str, base: &Path) -> Result<Loaded, Error> {
    let desc: Description = toml::from_str(text)
        .map_err(|e| Error::new(ErrorKind::InvalidInput, e.to_string().trim_end().to_owned()))?;
    if desc.image.is_empty() {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            "no [[image]] table: a package needs at least one image",
        ));
    }
    let mut warnings: Vec<String> = desc
        .unknown
        .keys()
        .map(|k| format!("unknown key '{k}' ignored"))
        .collect();
    let default_chunk = desc.chunk_size.unwrap_or(DEFAULT_CHUNK_SIZE);
    let images = desc
        .image
        .into_iter()
        .map(|entry| {
            warnings.extend(
                entry
                    .unknown
                    .keys()
                    .map(|k| format!("image '{}': unknown key '{k}' ignored", entry.name)),
            );
            ImageSource {
                chunk_size: entry.chunk_size.unwrap_or(default_chunk),
                data: ImageData::File(base.join(&entry.file)),
                name: entry.name,
                partition: entry.partition,
            }
        })
        .collect();
    let rotation = desc.trust_rotation.map(|r| Rotation {
        version: r.version,
        threshold: r.threshold,
        anchors: r.anchors.iter().map(|a| base.join(a)).collect(),
    });
    Ok(Loaded {
        rotation,
        spec: PackageSpec {
            product: desc.product,
            chipset: desc.chipset,
            hardware_revisions: desc.hardware_revisions,
            software_version: desc.version,
            security_version: desc.security_version,
            images,
        },
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
product = "p"
chipset = "mdm9607"
version = "1.0"
security_version = 3
colour = "blue"

[[image]]
name = "boot"
partition = "boot"
file = "boot.img"
chunk_size = 65536

[[image]]
name = "rootfs"
partition = "system"
file = "sub/rootfs.img"
"#;

    #[test]
    fn parses_images_relative_to_the_description() {
        let loaded = parse(GOOD, Path::new("/base")).unwrap();
        assert_eq!(loaded.spec.images.len(), 2);
        assert_eq!(loaded.spec.images[0].chunk_size, 65536);
        assert_eq!(loaded.spec.images[1].chunk_size, DEFAULT_CHUNK_SIZE);
        match &loaded.spec.images[1].data {
            ImageData::File(p) => assert_eq!(p, Path::new("/base/sub/rootfs.img")),
            ImageData::Bytes(_) => panic!("expected a file"),
        }
        assert_eq!(loaded.spec.security_version, 3);
        assert_eq!(
            loaded.warnings,
            vec!["unknown key 'colour' ignored".to_owned()]
        );
    }

    #[test]
    fn rejects_description_without_security_version() {
        let text = GOOD.replace("security_version = 3", "");
        let err = parse(&text, Path::new(".")).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert!(
            err.message().contains("security_version"),
            "{}",
            err.message()
        );
    }

    #[test]
    fn reads_a_trust_rotation_table_and_refuses_misspelt_keys_in_it() {
        let text = format!(
            "{GOOD}\n[trust_rotation]\nversion = 2\nthreshold = 1\nanchors = [\"keys/new.pem\"]\n"
        );
        let loaded = parse(&text, Path::new("/base")).unwrap();
        let rotation = loaded.rotation.unwrap();
        assert_eq!((rotation.version, rotation.threshold), (2, 1));
        assert_eq!(rotation.anchors, [Path::new("/base/keys/new.pem")]);
        // In the rotation, a typo must not silently change what devices will trust.
        let typo = text.replace("threshold = 1", "treshold = 1");
        assert!(parse(&typo, Path::new("/base")).is_err());
    }

    #[test]
    fn rejects_description_without_images() {
        let text = "product='p'\nchipset='c'\nversion='1'\nsecurity_version=0\n";
        let err = parse(text, Path::new(".")).unwrap_err();
        assert!(err.message().contains("[[image]]"));
    }
}
