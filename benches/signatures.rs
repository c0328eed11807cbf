//! Signature verifications per second through our `SignatureAlgorithm` API: ECDSA P-256 and
//! RSA-2048/3072/4096 PKCS#1 v1.5 (and PSS), all SHA-256 over a 4 KiB message (a manifest's
//! size), for comparison with `openssl speed ecdsap256 rsa2048 rsa3072 rsa4096`.
//!
//! Run: `cargo bench --bench signatures`

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use criterion::{Throughput, criterion_group, criterion_main};
use veriflash::sig::{DEFAULT_ALGORITHMS, RsaPadding, SignatureAlgorithm, SigningKey};

fn algorithm(oid: veriflash::sig::ObjectIdentifier) -> &'static dyn SignatureAlgorithm {
    *DEFAULT_ALGORITHMS.iter().find(|a| a.oid() == oid).unwrap()
}

fn signatures(c: &mut criterion::Criterion) {
    let message = vec![0x5a_u8; 4096];
    let mut keys = vec![("ecdsa-p256", SigningKey::generate_p256().unwrap())];
    for bits in [2048, 3072, 4096] {
        let key = SigningKey::generate_rsa(bits).unwrap();
        keys.push((["rsa", &bits.to_string(), "pkcs1"].join("-").leak(), key));
    }
    keys.push((
        "rsa-2048-pss",
        SigningKey::generate_rsa(2048)
            .unwrap()
            .with_rsa_padding(RsaPadding::Pss),
    ));
    let mut group = c.benchmark_group("verify");
    group.throughput(Throughput::Elements(1));
    for (name, key) in &keys {
        let signature = key.sign(&message).unwrap();
        let public = key.verifying_key();
        let alg = algorithm(key.algorithm());
        alg.verify(&public, &message, &signature).unwrap();
        group.bench_function(*name, |b| {
            b.iter(|| {
                alg.verify(
                    black_box(&public),
                    black_box(&message),
                    black_box(&signature),
                )
                .unwrap();
            });
        });
    }
    group.finish();
}

criterion_group!(benches, signatures);
criterion_main!(benches);
