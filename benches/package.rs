//! Full verification of an in-memory package (signature, manifest, every chunk), and the
//! refusal of a package whose manifest was tampered with.
//!
//! Run: `cargo bench --bench package`

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod common;

use criterion::{Throughput, criterion_group, criterion_main};
use veriflash::core::{ImageData, ImageSource, PackageSpec};
use veriflash::format::{HEADER_LEN, SignatureBlock};
use veriflash::sig::{PinnedKeys, SigningKey, Verifier};
use veriflash::{PackageReader, UnsignedPackage};

const IMAGE_LEN: usize = 64 << 20;

fn package(c: &mut criterion::Criterion) {
    let key = SigningKey::generate_p256().unwrap();
    let unsigned = UnsignedPackage::prepare(PackageSpec {
        product: "bench".into(),
        chipset: "mdm9607".into(),
        hardware_revisions: Vec::new(),
        software_version: "1.0".into(),
        security_version: 1,
        images: vec![ImageSource::new(
            "rootfs",
            "system",
            ImageData::Bytes(common::pseudo_random(IMAGE_LEN, 2)),
        )],
    })
    .unwrap();
    let block = SignatureBlock {
        entries: vec![unsigned.sign(&key).unwrap()],
    };
    let mut bytes = Vec::new();
    unsigned.write_to(&block, &mut bytes).unwrap();
    let mut trust = PinnedKeys::new();
    trust.add(key.verifying_key());
    let verifier = Verifier::new(&trust);

    let mut group = c.benchmark_group("package_64MiB");
    group.throughput(Throughput::Bytes(IMAGE_LEN as u64));
    for threads in [0usize, 1] {
        group.bench_function(format!("verify_threads_{threads}"), |b| {
            b.iter(|| {
                PackageReader::new(bytes.as_slice())
                    .unwrap()
                    .verify(&verifier)
                    .unwrap()
                    .with_threads(threads)
                    .verify_payload()
                    .unwrap()
            });
        });
    }
    group.finish();

    // One byte of the manifest flipped: refused at the signature, no payload byte read.
    let mut tampered = bytes.clone();
    tampered[HEADER_LEN + 40] ^= 1;
    c.bench_function("package_64MiB/refuse_tampered_manifest", |b| {
        b.iter(|| {
            PackageReader::new(tampered.as_slice())
                .unwrap()
                .verify(&verifier)
                .unwrap_err()
        });
    });
}

criterion_group! {
    name = benches;
    config = common::criterion();
    targets = package
}
criterion_main!(benches);
