//! The manifest parser on a large manifest: one image of 10 000 chunks (4 KiB chunks,
//! 320 000 bytes of chunk digests), and reading a whole package prefix from memory.
//!
//! Run: `cargo bench --bench parser`

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::hint::black_box;

use criterion::{Throughput, criterion_group, criterion_main};
use veriflash::UnsignedPackage;
use veriflash::core::{ImageData, ImageSource, PackageSpec};
use veriflash::format::{Manifest, SignatureBlock, read_prefix};
use veriflash::sig::SigningKey;

const CHUNKS: usize = 10_000;
const CHUNK: u32 = 4096;

fn parser(c: &mut criterion::Criterion) {
    let mut image = ImageSource::new(
        "rootfs",
        "system",
        ImageData::Bytes(common::pseudo_random(CHUNKS * CHUNK as usize, 3)),
    );
    image.chunk_size = CHUNK;
    let unsigned = UnsignedPackage::prepare(PackageSpec {
        product: "bench".into(),
        chipset: "mdm9607".into(),
        hardware_revisions: vec!["r1".into(), "r2".into()],
        software_version: "1.0".into(),
        security_version: 1,
        images: vec![image],
    })
    .unwrap();
    assert_eq!(unsigned.manifest().images[0].chunk_digests.len(), CHUNKS);
    let der = unsigned.manifest().to_der().unwrap();
    let key = SigningKey::generate_p256().unwrap();
    let block = SignatureBlock {
        entries: vec![unsigned.sign(&key).unwrap()],
    };
    let mut package = Vec::new();
    unsigned.write_to(&block, &mut package).unwrap();
    let prefix_len = unsigned.signed_message().len() + 512;

    let mut group = c.benchmark_group("parser_10k_chunks");
    group.throughput(Throughput::Bytes(der.len() as u64));
    group.bench_function("manifest_from_der", |b| {
        b.iter(|| Manifest::from_der(black_box(&der)).unwrap());
    });
    group.bench_function("read_prefix", |b| {
        b.iter(|| read_prefix(&mut black_box(&package[..prefix_len])).unwrap());
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::criterion();
    targets = parser
}
criterion_main!(benches);
