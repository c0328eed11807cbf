//! Raw SHA-256 per block size: RustCrypto `sha2` called directly vs this crate's `sha256` and
//! `Sha256` wrappers (which should cost nothing). Lives here rather than in the workspace's
//! `benches/` because `sha2` is this crate's dependency, not the facade's.
//!
//! Run: `cargo bench -p veriflash-hash --bench sha256`

#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sha2::Digest as _;

fn sha256(c: &mut Criterion) {
    let data: Vec<u8> = (0..(1u32 << 20))
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    for len in [64usize, 1024, 16 << 10, 256 << 10, 1 << 20] {
        let block = &data[..len];
        let mut group = c.benchmark_group(format!("sha256/{len}B"));
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_function("sha2_direct", |b| {
            b.iter(|| sha2::Sha256::digest(black_box(block)));
        });
        group.bench_function("veriflash_sha256", |b| {
            b.iter(|| veriflash_hash::sha256(black_box(block)));
        });
        group.bench_function("veriflash_Sha256_update", |b| {
            b.iter(|| {
                let mut h = veriflash_hash::Sha256::new();
                h.update(black_box(block));
                h.finalize()
            });
        });
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = sha256
}
criterion_main!(benches);
