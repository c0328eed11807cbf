//! Helpers shared by the reliability tests (`sweeps.rs`, `fuzz_replay.rs`): deterministic image
//! bytes, building a signed package in memory with its section offsets, verifying bytes.

#![allow(dead_code, unreachable_pub)]

use veriflash_core::format::{HEADER_LEN, SignatureBlock};
use veriflash_core::sig::{SigningKey, Verifier};
use veriflash_core::{Error, ImageData, ImageSource, PackageReader, PackageSpec, UnsignedPackage};
pub use veriflash_test_support::pseudo_random;

/// One image of a package to build: name (also the partition), bytes, chunk size.
pub struct Image {
    pub name: &'static str,
    pub bytes: Vec<u8>,
    pub chunk_size: u32,
}

/// A signed package in memory and where its sections start.
pub struct Built {
    pub bytes: Vec<u8>,
    /// Start of the manifest (= the header's length).
    pub manifest_at: usize,
    /// Start of the signature block (= the length of the signed message).
    pub sigblock_at: usize,
    /// Start of the payload.
    pub payload_at: usize,
    /// Each image: name, offset of its first byte in the package, size, chunk size.
    pub images: Vec<(&'static str, usize, usize, u32)>,
}

impl Built {
    pub fn header(&self) -> &[u8] {
        &self.bytes[..self.manifest_at]
    }
    pub fn manifest(&self) -> &[u8] {
        &self.bytes[self.manifest_at..self.sigblock_at]
    }
    pub fn signature_block(&self) -> &[u8] {
        &self.bytes[self.sigblock_at..self.payload_at]
    }
    pub fn payload(&self) -> &[u8] {
        &self.bytes[self.payload_at..]
    }
}

/// Builds and signs (with every key in `keys`) a package of `images` for product
/// `acme-hotspot-x1`, chipset `mdm9607`.
pub fn build(keys: &[&SigningKey], images: Vec<Image>, security_version: u64) -> Built {
    let sizes: Vec<(&'static str, usize, u32)> = images
        .iter()
        .map(|i| (i.name, i.bytes.len(), i.chunk_size))
        .collect();
    let sources = images
        .into_iter()
        .map(|i| {
            let mut source = ImageSource::new(i.name, i.name, ImageData::Bytes(i.bytes));
            source.chunk_size = i.chunk_size;
            source
        })
        .collect();
    let unsigned = UnsignedPackage::prepare(PackageSpec {
        product: "acme-hotspot-x1".into(),
        chipset: "mdm9607".into(),
        hardware_revisions: vec!["r2".into(), "r3".into()],
        software_version: "2.4.0".into(),
        security_version,
        images: sources,
    })
    .expect("package spec is valid");
    let block = SignatureBlock {
        entries: keys
            .iter()
            .map(|key| unsigned.sign(key).expect("signing works"))
            .collect(),
    };
    let mut bytes = Vec::new();
    unsigned
        .write_to(&block, &mut bytes)
        .expect("writing to memory works");
    let total: usize = sizes.iter().map(|(_, size, _)| size).sum();
    let payload_at = bytes.len() - total;
    let mut at = payload_at;
    let images = sizes
        .into_iter()
        .map(|(name, size, chunk)| {
            let image = (name, at, size, chunk);
            at += size;
            image
        })
        .collect();
    Built {
        manifest_at: HEADER_LEN,
        sigblock_at: unsigned.signed_message().len(),
        payload_at,
        images,
        bytes,
    }
}

/// Reads, verifies and streams `bytes` completely.
pub fn verify_bytes(bytes: &[u8], verifier: &Verifier<'_>) -> Result<(), Error> {
    PackageReader::new(bytes)?
        .verify(verifier)?
        .verify_payload()
        .map(drop)
}
