//! The NAND geometry a package was made for, carried in the package as a signed image.
//!
//! A vendor bundle is made for one geometry (Quectel names theirs in the file name:
//! `rawprogram_nand_p4K_b256K_update.xml` is 4 KiB pages, 256 KiB blocks), and its images —
//! the SBL's page layout, the MIBIB, UBI volumes — are only valid on a NAND of that geometry.
//! `veriflash import-qdl` therefore keeps the geometry in the package, as the image
//! [`GEOMETRY_PARTITION`] whose bytes are [`NandGeometry::descriptor`] (two text lines). The
//! manifest signs its digest like every image's, and the session compares that digest with
//! the digest of *its device's* descriptor before anything is erased: a package for another
//! geometry is refused with [`crate::Error::GeometryMismatch`] (stable code 42,
//! `wrong_hardware_revision`: a 2K/128K and a 4K/256K EC25 are different hardware). The
//! image is never written to NAND.
//!
//! A descriptor rather than a manifest field keeps the package format untouched: the
//! format has no field for storage geometry, and no registered OID arc for an extension.

use veriflash_plugin::Digest;

/// The pseudo-partition whose image is the package's [`NandGeometry::descriptor`].
pub const GEOMETRY_PARTITION: &str = "nand-geometry";

/// The largest descriptor the session reports room for (it is a few tens of bytes).
pub const MAX_DESCRIPTOR_LEN: u64 = 256;

/// A NAND geometry: page size and pages per erase block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NandGeometry {
    /// Bytes per page (the Firehose sector).
    pub page_size: u32,
    /// Pages per erase block.
    pub pages_per_block: u32,
}

/// The geometries of the NAND parts MDM9x07 modules ship with: 2 KiB pages with 128 KiB
/// blocks (e.g. 1 Gbit/2 Gbit SLC NAND of EC21/EC25 "…2K" variants, the MDM9607 reference
/// board) and 4 KiB pages with 256 KiB blocks (4 Gbit parts, the EC25's
/// `p4K_b256K` bundles). Used to name the geometry of a package that does not match.
pub const KNOWN: [NandGeometry; 2] = [
    NandGeometry {
        page_size: 2048,
        pages_per_block: 64,
    },
    NandGeometry {
        page_size: 4096,
        pages_per_block: 64,
    },
];

impl NandGeometry {
    /// Bytes per erase block.
    #[must_use]
    pub fn block_size(&self) -> u64 {
        u64::from(self.page_size) * u64::from(self.pages_per_block)
    }

    /// The image bytes that carry this geometry in a package:
    /// `page_size=4096\npages_per_block=64\n`.
    #[must_use]
    pub fn descriptor(&self) -> Vec<u8> {
        format!(
            "page_size={}\npages_per_block={}\n",
            self.page_size, self.pages_per_block
        )
        .into_bytes()
    }

    /// SHA-256 of [`NandGeometry::descriptor`]: what a package's signed digest for
    /// [`GEOMETRY_PARTITION`] must be.
    #[must_use]
    pub fn digest(&self) -> Digest {
        veriflash_hash::sha256(&self.descriptor())
    }

    /// The known geometry whose descriptor has `digest`, if any.
    #[must_use]
    pub fn known_by_digest(digest: &Digest) -> Option<Self> {
        KNOWN.into_iter().find(|g| g.digest() == *digest)
    }

    /// Quectel's tag: `p4K_b256K`.
    #[must_use]
    pub fn tag(&self) -> String {
        format!("p{}K_b{}K", self.page_size / 1024, self.block_size() / 1024)
    }
}

impl std::fmt::Display for NandGeometry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} KiB pages, {} KiB blocks",
            self.page_size / 1024,
            self.block_size() / 1024
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptor_digest_and_tag() {
        let g = KNOWN[1];
        assert_eq!(g.descriptor(), b"page_size=4096\npages_per_block=64\n");
        assert_eq!(g.tag(), "p4K_b256K");
        assert_eq!(g.to_string(), "4 KiB pages, 256 KiB blocks");
        assert_eq!(NandGeometry::known_by_digest(&g.digest()), Some(g));
        assert_ne!(KNOWN[0].digest(), g.digest());
        assert_eq!(NandGeometry::known_by_digest(&[0; 32]), None);
    }
}
