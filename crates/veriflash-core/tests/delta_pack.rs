//! What the delta packer finds in an old image (`UnsignedPackage::prepare_delta`): content that
//! moved far, as the files after a grown one do in a rebuilt file system, is patched against
//! where it lies in the old image (found by its anchors), content edited in place against
//! where it was; and the package still installs exactly the new image, from a file or, through
//! the `Updater`, from byte ranges (downloaded whole first).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation
)]

use veriflash_core::format::ChunkEncoding;
use veriflash_core::ota::OtaOptions;
use veriflash_core::plugin::FlashSession;
use veriflash_core::plugin::file_device::FileDevice;
use veriflash_core::sig::{PinnedKeys, SigningKey};
use veriflash_core::source::FileSource;
use veriflash_core::{
    AnchorSet, CancelToken, Chunking, DeltaBase, ImageData, ImageSource, InstallPolicy,
    PackOptions, PackageSource, PackageSpec, Trust, TrustedTime, UnsignedPackage, Updater,
};
use veriflash_test_support::{file_layout, pseudo_random, sign_and_write};

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
    sign_and_write(unsigned, &[key]).unwrap()
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

/// v1's image and v2's: a "table" at the start edited in place (a byte every 4 KiB of the
/// first chunk), a stretch cut out of the middle, and one byte changed in every 16 KiB after
/// it, so no chunk after the cut is anywhere in the old image whole.
fn pair() -> (Vec<u8>, Vec<u8>) {
    let old = pseudo_random(OLD_LEN, 21);
    let mut new = old.clone();
    for at in (0..CHUNK as usize).step_by(4096) {
        new[at + 7] ^= 0x5A;
    }
    new.drain(OLD_LEN / 2..OLD_LEN / 2 + CUT);
    for at in (OLD_LEN / 2..new.len()).step_by(16 << 10) {
        new[at] ^= 0xA5;
    }
    (old, new)
}

struct Delta {
    dir: tempfile::TempDir,
    key: SigningKey,
    trust: Trust,
    v1: Vec<u8>,
    base: DeltaBase,
    delta: UnsignedPackage,
}

fn delta(old: Vec<u8>, new: Vec<u8>) -> Delta {
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::generate_p256().unwrap();
    let mut keys = PinnedKeys::new();
    keys.add(key.verifying_key());
    let trust = Trust::new(AnchorSet::new(keys, 1)).with_time(TrustedTime::None);
    let v1 = written(&UnsignedPackage::prepare(spec(old, 1)).unwrap(), &key);
    let v1_path = dir.path().join("v1.vfp");
    std::fs::write(&v1_path, &v1).unwrap();
    let base = DeltaBase::from_package(&v1_path, &trust.verifier()).unwrap();
    let delta = UnsignedPackage::prepare_delta(spec(new, 2), &PackOptions::new(), &base).unwrap();
    Delta {
        dir,
        key,
        trust,
        v1,
        base,
        delta,
    }
}

fn installed(device: &mut FileDevice) -> Vec<u8> {
    let len = FlashSession::installed_len(device, "system")
        .unwrap()
        .unwrap();
    let mut bytes = vec![0u8; len as usize];
    FlashSession::read_installed(device, "system", 0, &mut bytes).unwrap();
    bytes
}

#[test]
fn moved_and_edited_chunks_are_patched_against_where_their_content_is() {
    let (old, new) = pair();
    let Delta {
        dir,
        key,
        trust,
        v1,
        delta,
        ..
    } = delta(old, new.clone());
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
    assert_eq!(installed(&mut device), new);
}

#[test]
fn the_updater_verifies_and_installs_a_delta_from_byte_ranges_downloaded_whole_first() {
    let (old, new) = pair();
    let f = delta(old, new.clone());
    let path = f.dir.path().join("delta.vfp");
    let package = written(&f.delta, &f.key);
    std::fs::write(&path, &package).unwrap();
    let remote = || {
        PackageSource::Remote(
            Box::new(FileSource::open(&path).unwrap()),
            OtaOptions::new(),
        )
    };
    let trust = || f.trust.clone();
    // Verified: every stored byte; the chunks rebuilt from a device wait for an install.
    let report = Updater::builder(remote(), trust())
        .build()
        .unwrap()
        .verify()
        .unwrap();
    assert!(report.images.iter().all(|i| !i.sha256_checked));
    // Installed on a device that runs v1: what it then runs is v2, read back.
    let device = f.dir.path().join("device.img");
    let mut file =
        FileDevice::create(&device, &file_layout(&[("system", OLD_LEN as u64)], &[])).unwrap();
    install(&f.v1, &f.trust, &mut file);
    drop(file);
    let target = format!("file:{}", device.display());
    let report = Updater::builder(remote(), trust())
        .build()
        .unwrap()
        .install(&target)
        .unwrap();
    let stored: u64 = f
        .delta
        .manifest()
        .images
        .iter()
        .map(veriflash_core::format::ImageSpec::stored_size)
        .sum();
    assert_eq!(report.download.unwrap().bytes_fetched, stored);
    assert_eq!(report.report.security_version, 2);
    assert_eq!(installed(&mut FileDevice::open(&device).unwrap()), new);
}

#[test]
fn the_old_package_is_read_once_and_any_number_of_threads_packs_the_same_delta() {
    let (old, new) = pair();
    let f = delta(old.clone(), new.clone());
    // The old images are what was verified, kept by the packer: another v1.vfp in its place,
    // then none at all, changes nothing.
    let v1_path = f.dir.path().join("v1.vfp");
    let other = UnsignedPackage::prepare(spec(pseudo_random(OLD_LEN, 99), 1)).unwrap();
    std::fs::write(&v1_path, written(&other, &f.key)).unwrap();
    let pack = |options: &PackOptions| {
        UnsignedPackage::prepare_delta(spec(new.clone(), 2), options, &f.base).unwrap()
    };
    assert_eq!(
        pack(&PackOptions::new()).signed_message(),
        f.delta.signed_message()
    );
    std::fs::remove_file(&v1_path).unwrap();
    match &f.base.spec().unwrap().images[0].data {
        ImageData::Bytes(bytes) => assert!(*bytes == old),
        ImageData::File(path) => panic!("read from {}", path.display()),
    }
    // The signed message holds the digest of every stored chunk and patch frame: the same
    // message is the same package but for its signatures.
    for chunking in [Chunking::Fixed, Chunking::ContentDefined] {
        let options = PackOptions::new().chunking(chunking);
        let one = pack(&options.threads(1));
        for threads in [2, 3] {
            assert_eq!(
                pack(&options.threads(threads)).signed_message(),
                one.signed_message(),
                "{chunking:?} on {threads} threads"
            );
        }
    }
}
