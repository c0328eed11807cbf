//! What the delta packer finds in an old image (`UnsignedPackage::prepare_delta`): content that
//! moved far, as the files after a grown one do in a rebuilt file system, is patched against
//! where it lies in the old image (found by its anchors), content edited in place against
//! where it was; and the package still installs exactly the new image.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation
)]

use veriflash_core::format::{ChunkEncoding, SignatureBlock};
use veriflash_core::plugin::FlashSession;
use veriflash_core::plugin::file_device::FileDevice;
use veriflash_core::sig::{PinnedKeys, SigningKey};
use veriflash_core::{
    AnchorSet, CancelToken, DeltaBase, ImageData, ImageSource, InstallPolicy, PackOptions,
    PackageSpec, Trust, UnsignedPackage,
};
use veriflash_test_support::{file_layout, pseudo_random};

const CHUNK: u32 = 64 << 10;
const OLD_LEN: usize = 2 << 20;
/// Bytes cut out of the middle of the old image: more than half a chunk, so the content after
/// it is not where a chunk "moved as the one before it" would look.
const CUT: usize = 300 << 10;

fn spec(image: Vec<u8>, version: u64) -> PackageSpec {
    let mut image = ImageSource::new("rootfs", "system", ImageData::Bytes(image));
    image.chunk_size = CHUNK;
    PackageSpec {
        product: "acme-hotspot-x1".into(),
        chipset: "mdm9607".into(),
        hardware_revisions: vec![],
        software_version: format!("v{version}"),
        security_version: version,
        images: vec![image],
    }
}

fn written(unsigned: &UnsignedPackage, key: &SigningKey) -> Vec<u8> {
    let block = SignatureBlock {
        entries: vec![unsigned.sign(key).unwrap()],
    };
    let mut bytes = Vec::new();
    unsigned.write_to(&block, &mut bytes).unwrap();
    bytes
}

fn install(package: &[u8], trust: &Trust, device: &mut FileDevice) {
    veriflash_core::install(
        package,
        &trust.verifier(),
        &InstallPolicy::default(),
        device,
        &CancelToken::new(),
        &mut |_| {},
    )
    .unwrap();
}

#[test]
fn moved_and_edited_chunks_are_patched_against_where_their_content_is() {
    let old = pseudo_random(OLD_LEN, 21);
    // v2: a "table" at the start edited in place (a byte every 4 KiB of the first chunk), a
    // stretch cut out of the middle, and one byte changed in every 16 KiB after it, so no
    // chunk after the cut is anywhere in the old image whole.
    let mut new = old.clone();
    for at in (0..CHUNK as usize).step_by(4096) {
        new[at + 7] ^= 0x5A;
    }
    new.drain(OLD_LEN / 2..OLD_LEN / 2 + CUT);
    for at in (OLD_LEN / 2..new.len()).step_by(16 << 10) {
        new[at] ^= 0xA5;
    }

    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::generate_p256().unwrap();
    let mut keys = PinnedKeys::new();
    keys.add(key.verifying_key());
    let trust = Trust::new(AnchorSet::new(keys, 1));
    let v1 = written(&UnsignedPackage::prepare(spec(old, 1)).unwrap(), &key);
    let v1_path = dir.path().join("v1.vfp");
    std::fs::write(&v1_path, &v1).unwrap();
    let base = DeltaBase::from_package(&v1_path, &trust.verifier()).unwrap();
    let delta =
        UnsignedPackage::prepare_delta(spec(new.clone(), 2), &PackOptions::new(), &base).unwrap();

    let image = &delta.manifest().images[0];
    let chunks = image.stored_chunks.clone();
    assert_eq!(
        chunks
            .iter()
            .filter(|c| c.encoding == ChunkEncoding::Raw)
            .count(),
        0,
        "every chunk copied or patched: {chunks:?}"
    );
    let after_cut = (OLD_LEN / 2) / CHUNK as usize + 1;
    assert!(
        chunks[after_cut..]
            .iter()
            .all(|c| c.encoding == ChunkEncoding::Patch),
        "{chunks:?}"
    );
    // A few bytes of patch per changed byte: the 16 edits of the table, one edit per 16 KiB
    // after the cut. Patches against the wrong range would carry each chunk nearly whole.
    let stored = image.stored_size();
    assert!(
        stored < (new.len() / 200) as u64,
        "{stored} bytes stored for an image of {}",
        new.len()
    );

    let path = dir.path().join("device.img");
    let mut device =
        FileDevice::create(&path, &file_layout(&[("system", OLD_LEN as u64)], &[])).unwrap();
    install(&v1, &trust, &mut device);
    install(&written(&delta, &key), &trust, &mut device);
    let len = FlashSession::installed_len(&mut device, "system")
        .unwrap()
        .unwrap();
    let mut installed = vec![0u8; len as usize];
    FlashSession::read_installed(&mut device, "system", 0, &mut installed).unwrap();
    assert_eq!(installed, new);
}
