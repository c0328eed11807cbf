//! Indexing a running slot for a delta update: how long a device takes to find which chunks of
//! a new package it already holds, by reading its installed 256 MiB image back through the
//! plugin and hashing it in the new image's chunks (fixed 64 KiB chunks, and content-defined
//! ones of at most 256 KiB), against the baseline of hashing the same bytes from memory on one
//! core; and the content-defined cuts alone, found on one thread and on two. The goal:
//! at most 0.3 s for 256 MiB on 2 cores.
//!
//! Run: `cargo bench --bench reuse_index`

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::hint::black_box;
use std::path::Path;

use criterion::{Throughput, criterion_group, criterion_main};
use veriflash::core::cdc::Cdc;
use veriflash::core::format::{Manifest, SignatureBlock};
use veriflash::core::plugin::file_device::{FileDevice, Layout};
use veriflash::core::plugin::{PartitionInfo, StorageGeometry};
use veriflash::core::reuse::ReuseIndex;
use veriflash::core::sig::{PinnedKeys, SigningKey, Verifier};
use veriflash::core::{
    CancelToken, Chunking, ImageData, ImageSource, InstallPolicy, PackOptions, PackageReader,
    PackageSpec, UnsignedPackage,
};

const IMAGE_LEN: usize = 256 << 20;

fn layout() -> Layout {
    Layout {
        product: "bench".into(),
        chipset: "mdm9607".into(),
        hardware_revision: "r1".into(),
        geometry: StorageGeometry {
            erase_block: 256 << 10,
            write_unit: 4096,
        },
        partitions: vec![PartitionInfo {
            name: "system".into(),
            size: IMAGE_LEN as u64,
            slotted: true,
            protected: false,
        }],
    }
}

/// The unsigned package of `image` for partition `system`.
fn unsigned(image: &Path, chunk_size: u32, chunking: Chunking, version: u64) -> UnsignedPackage {
    let mut source = ImageSource::new("rootfs", "system", ImageData::File(image.to_path_buf()));
    source.chunk_size = chunk_size;
    let spec = PackageSpec {
        product: "bench".into(),
        chipset: "mdm9607".into(),
        hardware_revisions: vec![],
        software_version: format!("v{version}"),
        security_version: version,
        images: vec![source],
    };
    UnsignedPackage::prepare_with(spec, &PackOptions::new().chunking(chunking)).unwrap()
}

/// A device running v1 of a 256 MiB image, and v2's manifest (16 scattered bytes changed).
fn setup(dir: &Path, chunk_size: u32, chunking: Chunking) -> (FileDevice, Manifest) {
    let key = SigningKey::generate_p256().unwrap();
    let mut keys = PinnedKeys::new();
    keys.add(key.verifying_key());
    let mut data = common::pseudo_random(IMAGE_LEN, 5);
    let v1_image = dir.join("v1.img");
    std::fs::write(&v1_image, &data).unwrap();
    let v1 = unsigned(&v1_image, chunk_size, chunking, 1);
    let package = dir.join("v1.vfp");
    let block = SignatureBlock {
        entries: vec![v1.sign(&key).unwrap()],
    };
    v1.write_with_entries(block.entries, &package).unwrap();
    let device_path = dir.join("device.img");
    drop(FileDevice::create(&device_path, &layout()).unwrap());
    let mut device = FileDevice::open(&device_path).unwrap();
    veriflash::core::install_package(
        PackageReader::open(&package).unwrap(),
        &Verifier::new(&keys),
        &InstallPolicy::default(),
        &mut device,
        &CancelToken::new(),
        &mut |_| {},
    )
    .unwrap();
    for i in 0..16 {
        data[i * (IMAGE_LEN / 16) + 12_345] ^= 0xA5;
    }
    let v2_image = dir.join("v2.img");
    std::fs::write(&v2_image, &data).unwrap();
    let v2 = unsigned(&v2_image, chunk_size, chunking, 2);
    (device, v2.manifest().clone())
}

fn reuse_index(c: &mut criterion::Criterion) {
    let mut group = c.benchmark_group("reuse_index/256MiB");
    group.throughput(Throughput::Bytes(IMAGE_LEN as u64));
    let data = common::pseudo_random(IMAGE_LEN, 5);
    group.bench_function("baseline_sha256_in_memory_1_core", |b| {
        b.iter(|| black_box(veriflash::hash::sha256(&data)));
    });
    // The content-defined cuts alone, on one thread and on two (the same cuts either way).
    let rule = Cdc::new(256 << 10);
    for threads in [1, 2] {
        group.bench_function(format!("cdc_cut_points_in_memory_{threads}_threads"), |b| {
            b.iter(|| black_box(rule.cut_points(&data, true, threads).len()));
        });
    }
    drop(data);
    for (name, chunk_size, chunking) in [
        ("fixed_64KiB", 64 << 10, Chunking::Fixed),
        ("cdc_max_256KiB", 256 << 10, Chunking::ContentDefined),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let (mut device, manifest) = setup(dir.path(), chunk_size, chunking);
        let index = ReuseIndex::build(&mut device, &manifest, None, None, &mut |_| {});
        let total: u64 = manifest.images.iter().map(|i| i.size).sum();
        let reusable = index.reusable_bytes(&manifest);
        // 16 changed bytes cost at most 16 chunks (and the cuts around them).
        assert!(
            reusable >= total - 64 * u64::from(chunk_size),
            "{name}: {reusable} of {total} reusable"
        );
        group.bench_function(format!("index_running_slot_{name}"), |b| {
            b.iter(|| {
                let index = ReuseIndex::build(&mut device, &manifest, None, None, &mut |_| {});
                black_box(index.scanned())
            });
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::criterion();
    targets = reuse_index
}
criterion_main!(benches);
