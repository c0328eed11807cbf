//! What the host keeps for a device that cannot keep it itself.
//!
//! A device's anti-rollback floor and trust-anchor set belong with the device: then whichever
//! station or updater flashes it next, the device refuses an older package or one signed only
//! by a retired key. The file device keeps both in its own boot-control record
//! ([`veriflash_plugin::FlashSession::holds_trust_anchors`]). A modem in emergency download
//! mode has nowhere to keep them (its boot ROM exposes no such state), so the host keeps them
//! for it, keyed by the device's identity ([`veriflash_plugin::DeviceInfo::id`], the chip's
//! serial number): a floor file and an anchor-set file per device in one directory. This
//! protects the devices one host flashes; a device flashed by another host is protected only
//! by that host's record, which is why a device that can keep its own state should.

use std::path::{Path, PathBuf};

use crate::error::{Error, ErrorKind};
use crate::trust::AnchorSet;

/// The largest floor file read (a number and a newline).
const MAX_FLOOR_FILE: u64 = 64;

/// A directory of per-device records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostStore {
    dir: PathBuf,
}

/// What the host knows of one device.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct HostRecord {
    /// The anti-rollback floor: the highest security version installed through this host.
    pub(crate) floor: u64,
    /// The trust-anchor set the device adopted from a package's rotation, if any.
    pub(crate) anchors: Option<AnchorSet>,
}

impl HostStore {
    /// Records in `dir` (created on the first write).
    #[must_use]
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file name stem for device `id`: its characters that are safe in a file name, so an
    /// identity a device reports can never point outside the directory.
    fn stem(id: &str) -> Result<String, Error> {
        let stem: String = id
            .chars()
            .take(128)
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        if stem.is_empty() {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "the device reported an empty identity",
            ));
        }
        Ok(stem)
    }

    /// The record of device `id` (a default one when there is none yet).
    ///
    /// # Errors
    /// [`ErrorKind::Io`] when a record exists but cannot be read; [`ErrorKind::Malformed`]
    /// when it is damaged (refused rather than read as "no floor").
    pub(crate) fn load(&self, id: &str) -> Result<HostRecord, Error> {
        let stem = Self::stem(id)?;
        let floor_path = self.dir.join(format!("{stem}.floor"));
        let floor = match std::fs::File::open(&floor_path) {
            Ok(file) => {
                let mut text = String::new();
                std::io::Read::read_to_string(
                    &mut std::io::Read::take(file, MAX_FLOOR_FILE),
                    &mut text,
                )
                .map_err(|e| Error::io(floor_path.display(), e))?;
                text.trim().parse().map_err(|_| {
                    Error::new(
                        ErrorKind::Malformed,
                        format!(
                            "{}: not an anti-rollback floor; restore it or remove it knowingly",
                            floor_path.display()
                        ),
                    )
                })?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(Error::io(floor_path.display(), e)),
        };
        let anchors_path = self.dir.join(format!("{stem}.anchors"));
        let anchors = if anchors_path.exists() {
            Some(AnchorSet::load(&anchors_path)?)
        } else {
            None
        };
        Ok(HostRecord { floor, anchors })
    }

    /// Replaces the record of device `id`, each file atomically (the anchors first, so a crash
    /// in between leaves a floor that is at worst too low by one install, never anchors the
    /// device did not adopt).
    ///
    /// # Errors
    /// [`ErrorKind::Io`] or [`ErrorKind::NoSpace`] when a file cannot be written.
    pub(crate) fn save(&self, id: &str, record: &HostRecord) -> Result<(), Error> {
        let stem = Self::stem(id)?;
        std::fs::create_dir_all(&self.dir).map_err(|e| Error::io(self.dir.display(), e))?;
        if let Some(anchors) = &record.anchors {
            anchors.save(&self.dir.join(format!("{stem}.anchors")))?;
        }
        crate::output::write_atomically(&self.dir.join(format!("{stem}.floor")), &[], |file| {
            std::io::Write::write_all(file, format!("{}\n", record.floor).as_bytes())
                .map_err(|e| Error::io("writing the floor", e))
        })
    }
}

/// The folder of the store where the signed prefixes of installed packages are kept, each once,
/// named by its SHA-256: a device's record names one, so a station that flashes a thousand
/// modems with one package keeps its prefix once, not a thousand times.
const PREFIXES: &str = "installed-packages";

/// How a device's record names its prefix: this, then the prefix's SHA-256 in hex.
const NAMED: &str = "sha256:";

impl HostStore {
    /// Keeps the signed prefix of the package just installed on device `id` (a few KiB, or
    /// more for a manifest of many chunks, kept once per package in [`PREFIXES`]): the next
    /// install verifies it again and learns, without reading the device, which chunk digests
    /// the device's installed images are made of ([`crate::reuse`]).
    ///
    /// # Errors
    /// [`ErrorKind::Io`] or [`ErrorKind::NoSpace`] when a file cannot be written.
    pub(crate) fn save_installed(&self, id: &str, prefix: &[u8]) -> Result<(), Error> {
        let stem = Self::stem(id)?;
        let digest = crate::package::hex(&veriflash_hash::sha256(prefix));
        let prefixes = self.dir.join(PREFIXES);
        std::fs::create_dir_all(&prefixes).map_err(|e| Error::io(prefixes.display(), e))?;
        let kept = prefixes.join(format!("{digest}.prefix"));
        if !kept.is_file() {
            crate::output::write_atomically(&kept, &[], |file| {
                std::io::Write::write_all(file, prefix)
                    .map_err(|e| Error::io("writing the installed package's prefix", e))
            })?;
        }
        let path = self.dir.join(format!("{stem}.installed"));
        crate::output::write_atomically(&path, &[], |file| {
            std::io::Write::write_all(file, format!("{NAMED}{digest}\n").as_bytes())
                .map_err(|e| Error::io("writing the installed package's record", e))
        })
    }

    /// The signed prefix kept by [`HostStore::save_installed`] for device `id`, unverified;
    /// `None` when there is none, it cannot be read, or the kept prefix is not the one the
    /// record names (it is only a hint: whatever it names is checked again). A record written
    /// before prefixes were kept once per package holds the prefix itself, and is read as one.
    pub(crate) fn load_installed(&self, id: &str) -> Option<Vec<u8>> {
        let stem = Self::stem(id).ok()?;
        let record = read_bounded(&self.dir.join(format!("{stem}.installed")))?;
        let Some(named) = record.strip_prefix(NAMED.as_bytes()) else {
            return Some(record);
        };
        let digest = std::str::from_utf8(named).ok()?.trim_end();
        if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let prefix = read_bounded(&self.dir.join(PREFIXES).join(format!("{digest}.prefix")))?;
        (crate::package::hex(&veriflash_hash::sha256(&prefix)) == digest).then_some(prefix)
    }
}

/// A file of at most one package prefix's length (header, largest manifest and signature
/// block), or `None` when it cannot be read.
fn read_bounded(path: &Path) -> Option<Vec<u8>> {
    let limit = u64::try_from(veriflash_format::HEADER_LEN).unwrap_or(u64::MAX)
        + u64::from(veriflash_format::limits::MAX_MANIFEST_LEN)
        + u64::try_from(veriflash_format::limits::MAX_SIGNATURE_BLOCK_LEN).unwrap_or(u64::MAX);
    let file = std::fs::File::open(path).ok()?;
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut std::io::Read::take(file, limit), &mut bytes).ok()?;
    Some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_identities_stay_inside_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let store = HostStore::new(dir.path().join("devices"));
        assert_eq!(
            store.load("mdm9x07-0000abcd").unwrap(),
            HostRecord::default()
        );
        let record = HostRecord {
            floor: 7,
            anchors: None,
        };
        store.save("mdm9x07-0000abcd", &record).unwrap();
        assert_eq!(store.load("mdm9x07-0000abcd").unwrap(), record);
        store.save("../../etc/passwd", &record).unwrap();
        assert!(dir.path().join("devices/______etc_passwd.floor").exists());
        assert!(store.load("").is_err());
        std::fs::write(dir.path().join("devices/bad.floor"), "seven").unwrap();
        assert_eq!(
            store.load("bad").unwrap_err().kind(),
            ErrorKind::Malformed,
            "a damaged floor is not read as 0"
        );
    }

    #[test]
    fn an_installed_package_is_kept_once_whatever_the_number_of_devices() {
        let dir = tempfile::tempdir().unwrap();
        let store = HostStore::new(dir.path());
        let prefix = b"signed prefix of package one".to_vec();
        for serial in 0..5 {
            store
                .save_installed(&format!("mdm9x07-{serial:08x}"), &prefix)
                .unwrap();
        }
        store.save_installed("other", b"package two").unwrap();
        let kept = std::fs::read_dir(dir.path().join(PREFIXES))
            .unwrap()
            .count();
        assert_eq!(kept, 2, "one prefix per package");
        assert_eq!(
            store.load_installed("mdm9x07-00000003"),
            Some(prefix.clone())
        );
        assert_eq!(
            store.load_installed("other").as_deref(),
            Some(&b"package two"[..])
        );
        assert_eq!(store.load_installed("never-installed"), None);
        // A record from before: the prefix itself.
        std::fs::write(dir.path().join("old.installed"), &prefix).unwrap();
        assert_eq!(store.load_installed("old"), Some(prefix.clone()));
        // A kept prefix that changed is not the one the records name.
        let named = crate::package::hex(&veriflash_hash::sha256(&prefix));
        std::fs::write(
            dir.path().join(PREFIXES).join(format!("{named}.prefix")),
            b"something else",
        )
        .unwrap();
        assert_eq!(store.load_installed("mdm9x07-00000003"), None);
        // A record that names no digest is none.
        std::fs::write(dir.path().join("bad.installed"), "sha256:../../etc\n").unwrap();
        assert_eq!(store.load_installed("bad"), None);
    }
}
