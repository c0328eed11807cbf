//! Fixtures shared by the workspace's integration tests, so each test file says what it tests
//! rather than how to build a package: deterministic image bytes and signed packages built in
//! memory. A dev-dependency only (`publish = false`); never part of a shipped crate.

#![forbid(unsafe_code)]

#[cfg(feature = "parity")]
pub mod parity;
pub mod vectors;

use veriflash_core::format::SignatureBlock;
use veriflash_core::plugin::file_device::Layout;
use veriflash_core::plugin::{PartitionInfo, StorageGeometry};
use veriflash_core::sig::SigningKey;
use veriflash_core::{Error, ImageData, ImageSource, PackageSpec, UnsignedPackage};

/// `len` deterministic, incompressible bytes (xorshift64*), different for each `seed`: image
/// contents that are the same on every run, so a failure reproduces.
#[must_use]
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed;
    let mut out = Vec::with_capacity(len.saturating_add(8));
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A reference-device layout (`FileDevice`) with the same identity as [`modem_package`]'s
/// packages (`acme-hotspot-x1`, `mdm9607`, revision `r2`), 16 KiB erase blocks and 4 KiB write
/// units, and `partitions` as `(name, size)`: A/B partitions, except those named in
/// `protected`, which have one copy and are never written.
#[must_use]
pub fn file_layout(partitions: &[(&str, u64)], protected: &[&str]) -> Layout {
    Layout {
        product: MODEM_PRODUCT.into(),
        chipset: MODEM_CHIPSET.into(),
        hardware_revision: MODEM_REVISION.into(),
        geometry: StorageGeometry {
            erase_block: 16384,
            write_unit: 4096,
        },
        partitions: partitions
            .iter()
            .map(|(name, size)| {
                let fixed = protected.contains(name);
                PartitionInfo {
                    name: (*name).into(),
                    size: *size,
                    slotted: !fixed,
                    protected: fixed,
                }
            })
            .collect(),
    }
}

/// A UBI-like image of `len` bytes: pseudo-random, with the erase-counter magic `UBI#` at the
/// start of every 128 KiB erase block, as a modem's system volume has.
#[must_use]
pub fn ubi_like(len: usize, seed: u64) -> Vec<u8> {
    let mut image = pseudo_random(len, seed);
    for at in (0..len).step_by(128 * 1024) {
        if let Some(magic) = image.get_mut(at..at.saturating_add(4)) {
            magic.copy_from_slice(b"UBI#");
        }
    }
    image
}

/// Signs `unsigned` with each of `keys` (in order) and writes the whole package to memory.
///
/// # Errors
/// A signing or writing error of the core.
pub fn sign_and_write(unsigned: &UnsignedPackage, keys: &[&SigningKey]) -> Result<Vec<u8>, Error> {
    let block = SignatureBlock {
        entries: keys
            .iter()
            .map(|key| unsigned.sign(key))
            .collect::<Result<_, _>>()?,
    };
    let mut bytes = Vec::new();
    unsigned.write_to(&block, &mut bytes)?;
    Ok(bytes)
}

/// The identity of the emulated MDM9607 (`EmulatorConfig::mdm9607` in the plugin): what a
/// package for it names.
pub const MODEM_PRODUCT: &str = "acme-hotspot-x1";
/// See [`MODEM_PRODUCT`].
pub const MODEM_CHIPSET: &str = "mdm9607";
/// See [`MODEM_PRODUCT`].
pub const MODEM_REVISION: &str = "r2";

/// What a package for the emulated MDM9607 at software `version` (security version 7) holds:
/// one image per `(partition, bytes)` in order — the programmer first, for the partition
/// `programmer` — in 16 KiB chunks.
#[must_use]
pub fn modem_spec(images: &[(&str, Vec<u8>)], version: &str) -> PackageSpec {
    PackageSpec {
        product: MODEM_PRODUCT.into(),
        chipset: MODEM_CHIPSET.into(),
        hardware_revisions: vec![MODEM_REVISION.into()],
        software_version: version.into(),
        security_version: 7,
        images: images
            .iter()
            .map(|(partition, bytes)| {
                let mut image =
                    ImageSource::new(*partition, *partition, ImageData::Bytes(bytes.clone()));
                image.chunk_size = 16 * 1024;
                image
            })
            .collect(),
    }
}

/// [`modem_spec`] at software 2.4.0, signed by `key`.
///
/// # Errors
/// A packing, signing or writing error of the core.
pub fn modem_package(key: &SigningKey, images: &[(&str, Vec<u8>)]) -> Result<Vec<u8>, Error> {
    let unsigned = UnsignedPackage::prepare(modem_spec(images, "2.4.0"))?;
    sign_and_write(&unsigned, &[key])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pseudo_random_is_deterministic_and_seeded() {
        assert_eq!(pseudo_random(1000, 7), pseudo_random(1000, 7));
        assert_ne!(pseudo_random(1000, 7), pseudo_random(1000, 8));
        assert_eq!(pseudo_random(13, 1).len(), 13);
        let ubi = ubi_like(300_000, 3);
        assert_eq!(&ubi[..4], b"UBI#");
        assert_eq!(&ubi[128 * 1024..128 * 1024 + 4], b"UBI#");
    }
}
