//! Benchmarks only: see `benches/backends.rs`.
