//! `veriflash verify`: the whole check, with an exit status scripts can rely on.

use std::path::Path;

use serde_json::json;
use veriflash_core::sig::Verifier;
use veriflash_core::trust::load_trust_anchors;
use veriflash_core::{Error, VerifyReport, verify_file};

use crate::output::{Failure, human_size};

/// Verifies `package` against the anchors at `trust`.
pub(crate) fn check(trust: &Path, package: &Path) -> Result<VerifyReport, Error> {
    let anchors = load_trust_anchors(trust)?;
    verify_file(package, &Verifier::new(&anchors))
}

pub(crate) fn run(trust: &Path, package: &Path, json: bool) -> Result<(), Failure> {
    let report = check(trust, package).map_err(|e| Failure::new(e, json))?;
    if json {
        println!("{}", json!({ "ok": true, "report": report }));
    } else {
        print_report(&report);
    }
    Ok(())
}

/// The human summary of a successful verification.
pub(crate) fn print_report(report: &VerifyReport) {
    println!(
        "verified: {} {} for chipset {} (security version {})",
        report.product, report.software_version, report.chipset, report.security_version
    );
    for image in &report.images {
        println!(
            "  {:<16} -> {:<16} {:>10}  {} chunks ok  sha256 {}",
            image.name,
            image.partition,
            human_size(image.size),
            image.chunks,
            image.sha256
        );
    }
    for signer in &report.signers {
        println!("  signed by key {signer}");
    }
}
