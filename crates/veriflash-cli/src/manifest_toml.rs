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
//! A key this version does not know is an error, named with its line and the key it most
//! resembles ([`veriflash_plugin::config`]): a misspelt `hardware_revision` would otherwise
//! sign a package for any hardware. `pack --allow-unknown-keys` lets keys of a newer
//! description through as warnings — except in `[trust_rotation]`, where every key decides
//! what devices will trust.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use veriflash_core::pack::DEFAULT_CHUNK_SIZE;
use veriflash_core::sig::PinnedKeys;
use veriflash_core::{AnchorSet, Error, ErrorKind, ImageData, ImageSource, PackageSpec};
use veriflash_plugin::config::{Key, Table, UnknownKeys};

/// The keys of a description, for [`veriflash_plugin::config::check`].
static DESCRIPTION: Table = Table {
    name: "",
    keys: &[
        Key::required("product"),
        Key::required("chipset"),
        Key::required("version"),
        Key::required("security_version"),
        Key::optional("hardware_revisions"),
        Key::optional("chunk_size"),
        // Required, but said better than "missing key" when absent: see `parse`.
        Key::table("image", &IMAGE, false),
        Key::table("trust_rotation", &ROTATION, false),
    ],
    always_strict: false,
};

static IMAGE: Table = Table {
    name: "[[image]]",
    keys: &[
        Key::required("name"),
        Key::required("partition"),
        Key::required("file"),
        Key::optional("chunk_size"),
    ],
    always_strict: false,
};

static ROTATION: Table = Table {
    name: "[trust_rotation]",
    keys: &[
        Key::required("version"),
        Key::required("threshold"),
        Key::required("anchors"),
    ],
    always_strict: true,
};

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
}

#[derive(Debug, Deserialize)]
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

/// Reads and checks a description; image paths are resolved against its directory. Unknown
/// keys are errors unless `unknown` lets them through as warnings.
pub(crate) fn load(path: &Path, unknown: UnknownKeys) -> Result<Loaded, Error> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::new(ErrorKind::Io, format!("{}: {e}", path.display())))?;
    parse(&text, path.parent().unwrap_or(Path::new(".")), unknown)
        .map_err(|e| e.with_context(path.display()))
}

fn parse(text: &str, base: &Path, unknown: UnknownKeys) -> Result<Loaded, Error> {
    let warnings = veriflash_plugin::config::check(text, &DESCRIPTION, unknown).map_err(|e| {
        let err = Error::new(ErrorKind::InvalidInput, e.to_string());
        if e.has_unknown_keys() {
            err.with_remedy(
                "Correct the key names (each error says which key was probably meant). A description written for a newer veriflash packs with --allow-unknown-keys, its unknown keys then listed as warnings and ignored.",
            )
        } else {
            err
        }
    })?;
    let desc: Description = toml::from_str(text)
        .map_err(|e| Error::new(ErrorKind::InvalidInput, e.to_string().trim_end().to_owned()))?;
    if desc.image.is_empty() {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            "no [[image]] table: a package needs at least one image",
        ));
    }
    let default_chunk = desc.chunk_size.unwrap_or(DEFAULT_CHUNK_SIZE);
    let images = desc
        .image
        .into_iter()
        .map(|entry| ImageSource {
            chunk_size: entry.chunk_size.unwrap_or(default_chunk),
            data: ImageData::File(base.join(&entry.file)),
            name: entry.name,
            partition: entry.partition,
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

    fn strict(text: &str) -> Result<Loaded, Error> {
        parse(text, Path::new("/base"), UnknownKeys::Refuse)
    }

    #[test]
    fn parses_images_relative_to_the_description() {
        let loaded = strict(GOOD).unwrap();
        assert_eq!(loaded.spec.images.len(), 2);
        assert_eq!(loaded.spec.images[0].chunk_size, 65536);
        assert_eq!(loaded.spec.images[1].chunk_size, DEFAULT_CHUNK_SIZE);
        match &loaded.spec.images[1].data {
            ImageData::File(p) => assert_eq!(p, Path::new("/base/sub/rootfs.img")),
            ImageData::Bytes(_) => panic!("expected a file"),
        }
        assert_eq!(loaded.spec.security_version, 3);
        assert!(loaded.warnings.is_empty());
    }

    #[test]
    fn a_misspelt_key_is_an_error_naming_the_key_meant_unless_unknown_keys_are_allowed() {
        let text = GOOD.replace(
            "security_version = 3",
            "security_version = 3\nhardware_revision = [\"r2\"]",
        );
        let err = strict(&text).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert_eq!(
            err.message(),
            "unknown key 'hardware_revision' (line 6); did you mean 'hardware_revisions'?"
        );
        assert!(
            err.remedy().contains("--allow-unknown-keys"),
            "{}",
            err.remedy()
        );
        let loaded = parse(&text, Path::new("."), UnknownKeys::Warn).unwrap();
        assert_eq!(
            loaded.warnings,
            [
                "unknown key 'hardware_revision' (line 6) ignored; did you mean 'hardware_revisions'?"
            ]
        );
        assert!(loaded.spec.hardware_revisions.is_empty());
    }

    #[test]
    fn a_missing_key_names_the_misspelt_one_beside_it() {
        let text = GOOD.replace("version = \"1.0\"", "verison = \"1.0\"");
        let err = parse(&text, Path::new("."), UnknownKeys::Warn).unwrap_err();
        assert_eq!(
            err.message(),
            "missing key 'version'; did you mean 'verison' (line 4)?"
        );
        let text = GOOD.replace("security_version = 3", "");
        let err = strict(&text).unwrap_err();
        assert_eq!(err.message(), "missing key 'security_version'");
    }

    #[test]
    fn reads_a_trust_rotation_table_and_refuses_misspelt_keys_in_it_whatever_is_allowed() {
        let text = format!(
            "{GOOD}\n[trust_rotation]\nversion = 2\nthreshold = 1\nanchors = [\"keys/new.pem\"]\n"
        );
        let loaded = strict(&text).unwrap();
        let rotation = loaded.rotation.unwrap();
        assert_eq!((rotation.version, rotation.threshold), (2, 1));
        assert_eq!(rotation.anchors, [Path::new("/base/keys/new.pem")]);
        // In the rotation, a typo must not silently change what devices will trust.
        let typo = text.replace("threshold = 1", "threshold = 1\nthresold = 2");
        let err = parse(&typo, Path::new("/base"), UnknownKeys::Warn).unwrap_err();
        assert!(
            err.message()
                .starts_with("[trust_rotation]: unknown key 'thresold'"),
            "{}",
            err.message()
        );
        // A misspelt table: the rotation would silently not happen.
        let typo = text.replace("[trust_rotation]", "[trust_rotaton]");
        let err = strict(&typo).unwrap_err();
        assert!(
            err.message().ends_with("did you mean 'trust_rotation'?"),
            "{}",
            err.message()
        );
    }

    #[test]
    fn rejects_description_without_images() {
        let text = "product='p'\nchipset='c'\nversion='1'\nsecurity_version=0\n";
        let err = strict(text).unwrap_err();
        assert!(err.message().contains("[[image]]"));
    }
}
