//! SHA-256 throughput of each candidate backend on one core, per block size: the numbers behind
//! veriflash's choice of backend (docs/PERFORMANCE.md, "Which SHA-256").
//!
//! veriflash hashes chunks of 64 KiB to 1 MiB (the format's default chunk size) on each core, so
//! those block sizes decide; 4 KiB shows the per-call overhead a backend adds.

#![allow(missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sha2::Digest as _;

fn backends(c: &mut Criterion) {
    let data: Vec<u8> = (0..(1u32 << 20))
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    for len in [4usize << 10, 64 << 10, 1 << 20] {
        let block = &data[..len];
        let mut group = c.benchmark_group(format!("sha256/{}KiB", len >> 10));
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_function("openssl", |b| {
            b.iter(|| openssl::sha::sha256(black_box(block)));
        });
        group.bench_function("sha2", |b| {
            b.iter(|| sha2::Sha256::digest(black_box(block)));
        });
        group.bench_function("ring", |b| {
            b.iter(|| ring::digest::digest(&ring::digest::SHA256, black_box(block)));
        });
        group.bench_function("aws-lc-rs", |b| {
            b.iter(|| aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, black_box(block)));
        });
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    targets = backends
}
criterion_main!(benches);
