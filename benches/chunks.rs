//! Chunk verification throughput: raw SHA-256 of the same bytes vs the serial driver vs the
//! parallel driver on 1 and N threads (the bytes are copied from memory into the chunk buffers,
//! as they would be from the page cache).
//!
//! Run: `cargo bench --bench chunks`

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::hint::black_box;
use std::io;

use criterion::{Throughput, criterion_group, criterion_main};
use veriflash::hash::{
    ChunkDecoder, DecodeError, ExpectedChunk, ImageExpectation, ParallelOptions, digest_slice,
    sha256, verify_reader, verify_reader_parallel, verify_slice_parallel,
    verify_stored_at_parallel,
};

/// Raw images only: never called.
struct RawOnly;

impl ChunkDecoder for RawOnly {
    fn decode(&self, _: &ExpectedChunk<'_>, _: &[u8], _: &mut [u8]) -> Result<usize, DecodeError> {
        Err(DecodeError::UnsupportedEncoding)
    }
}

const IMAGE_LEN: usize = 64 << 20;

fn chunks(c: &mut criterion::Criterion) {
    let data = common::pseudo_random(IMAGE_LEN, 1);
    let cores = ParallelOptions::new().resolved_threads();
    for chunk_size in [1u32 << 20, 64 << 10] {
        let digests = digest_slice(&data, chunk_size).unwrap();
        let expect = ImageExpectation {
            size: digests.size,
            chunk_size,
            digest: &digests.digest,
            chunk_digests: &digests.chunk_digests,
        };
        let mut group = c.benchmark_group(format!("chunks/{}KiB", chunk_size >> 10));
        group.throughput(Throughput::Bytes(IMAGE_LEN as u64));
        group.bench_function("raw_sha256", |b| {
            b.iter(|| {
                for chunk in data.chunks(chunk_size as usize) {
                    black_box(sha256(chunk));
                }
            });
        });
        group.bench_function("serial_verify_reader", |b| {
            b.iter(|| {
                verify_reader(&mut data.as_slice(), expect, |c| {
                    black_box(c.bytes().len());
                    Ok::<(), io::Error>(())
                })
                .unwrap()
            });
        });
        let mut configs = vec![(1, false), (2, false)];
        if cores > 2 {
            configs.push((cores, false));
        }
        configs.push((cores, true));
        for (threads, whole) in configs {
            let options = ParallelOptions::new()
                .threads(threads)
                .check_whole_image(whole);
            let name = if whole {
                format!("parallel_{threads}t_whole_image")
            } else {
                format!("parallel_{threads}t")
            };
            group.bench_function(name, |b| {
                b.iter(|| {
                    verify_reader_parallel(&mut data.as_slice(), expect, options, |c| {
                        black_box(c.bytes().len());
                        Ok::<(), io::Error>(())
                    })
                    .unwrap()
                });
            });
        }
        // The positional path (a package file): each worker copies its own batch into its
        // buffer and hashes it there, as from the page cache.
        for threads in [1, 2] {
            let options = ParallelOptions::new().threads(threads);
            group.bench_function(format!("at_{threads}t"), |b| {
                b.iter(|| {
                    verify_stored_at_parallel(&data, 0, expect, &[], &RawOnly, options, |c| {
                        black_box(c.bytes().len());
                        Ok::<(), io::Error>(())
                    })
                    .unwrap()
                });
            });
        }
        // The zero-copy path: chunks hashed where they lie in the caller's buffer.
        for threads in [1, 2] {
            let options = ParallelOptions::new().threads(threads);
            group.bench_function(format!("slice_{threads}t"), |b| {
                b.iter(|| {
                    verify_slice_parallel(&data, expect, options, |c| {
                        black_box(c.bytes().len());
                        Ok::<(), io::Error>(())
                    })
                    .unwrap()
                });
            });
        }
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = common::criterion();
    targets = chunks
}
criterion_main!(benches);
