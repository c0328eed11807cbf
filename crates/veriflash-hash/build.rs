//! Declares the `sha2` backend-override cfgs so `backend()` can honour them without an
//! `unexpected_cfgs` warning. `sha2` reads the same `--cfg` flags (set through `RUSTFLAGS`, which
//! apply to every crate of the build), so our answer stays the one `sha2` acts on.

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rustc-check-cfg=cfg(sha2_backend, values(\"soft\", \"riscv-zknh\"))");
    println!(
        "cargo::rustc-check-cfg=cfg(sha2_256_backend, values(\"aarch64-sha2\", \"soft\", \"riscv-zknh\", \"x86-sha\"))"
    );
}
