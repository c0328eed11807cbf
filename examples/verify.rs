//! Verify a package against a trusted public key, and print what was verified.
//!
//! ```sh
//! cargo run --example verify -- vendor.pub.pem update.vfp
//! ```
//!
//! The exit status is 0 when the package is authentic and intact, otherwise the error's stable
//! code — the same numbers as `veriflash verify`.

use std::path::Path;
use std::process::ExitCode;

use veriflash::sig::Verifier;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [trust, package] = args.as_slice() else {
        eprintln!("usage: verify PUBLIC_KEY_OR_DIR PACKAGE");
        return ExitCode::from(2);
    };
    match verify(Path::new(trust), Path::new(package)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error[{} {}]: {err}", err.code(), err.kind().name());
            eprintln!("  remedy: {}", err.remedy());
            ExitCode::from(err.code())
        }
    }
}

fn verify(trust: &Path, package: &Path) -> Result<(), veriflash::Error> {
    // Pinned public keys (PEM, as `veriflash keygen` or `openssl pkey -pubout` writes them) or
    // root certificates: one file, or a directory of them.
    let anchors = veriflash::core::trust::load_trust_anchors(trust)?;
    // Signatures over header and manifest first, then every payload chunk against its digest.
    let report = veriflash::verify_file(package, &Verifier::new(&anchors))?;

    println!(
        "verified: {} {} for {} (security version {})",
        report.product, report.software_version, report.chipset, report.security_version
    );
    for image in &report.images {
        println!(
            "  {:<12} -> {:<12} {:>10} bytes in {} chunks, sha256 {}",
            image.name, image.partition, image.size, image.chunks, image.sha256
        );
    }
    for signer in &report.signers {
        println!("  signed by key {signer}");
    }
    Ok(())
}
