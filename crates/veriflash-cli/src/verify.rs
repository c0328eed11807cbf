//! `veriflash verify`: the whole check, with an exit status scripts can rely on.

use std::path::Path;

use serde_json::json;
use veriflash_core::{AnchorSet, Error, PackageSource, Trust, TrustedTime, Updater, VerifyReport};

use crate::output::{Failure, human_size};

/// Verifies `package` against the anchors at `trust`, hashing on every core.
pub(crate) fn check(trust: &Path, package: &Path) -> Result<VerifyReport, Error> {
    check_with_options(trust, package, Hashing::default(), &TrustOptions::default())
}

/// How the payload is hashed.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Hashing {
    /// Hashing threads (0: one per core).
    pub(crate) threads: usize,
    /// Also hash each whole image against its signed digest.
    pub(crate) whole_image: bool,
}

/// How certificate chains and thresholds are judged: the same flags for `verify`, `flash` and
/// `fetch`, so a package one accepts the others accept.
#[derive(Debug, Clone, Copy, clap::Args)]
pub(crate) struct TrustOptions {
    /// Do not check certificate validity dates (by default the system clock is trusted).
    #[arg(long)]
    pub(crate) no_clock: bool,
    /// Distinct trusted keys that must have signed, at least (an anchor-set file may demand
    /// more).
    #[arg(long, value_name = "K", default_value_t = 1)]
    pub(crate) threshold: usize,
}

impl Default for TrustOptions {
    fn default() -> Self {
        Self {
            no_clock: false,
            threshold: 1,
        }
    }
}

/// The library's trust configuration for an anchor set (`--trust`: PEM keys and root
/// certificates, or an anchor-set file that a rotation saved): the system clock as trusted time
/// unless `--no-clock`, and at least `--threshold` distinct signers (the set may demand more).
pub(crate) fn trust(anchors: AnchorSet, options: &TrustOptions) -> Trust {
    Trust::new(anchors)
        .with_time(if options.no_clock {
            TrustedTime::None
        } else {
            TrustedTime::System
        })
        .with_threshold(options.threshold)
}

/// After a committed install: saves the trust-anchor set the package rotated to at `save`, or
/// tells the user how to, when the package carried one.
pub(crate) fn adopt_rotation(
    report: &VerifyReport,
    save: Option<&Path>,
    json: bool,
) -> Result<(), Error> {
    let Some(rotation) = &report.trust_rotation else {
        return Ok(());
    };
    match save {
        Some(path) => {
            rotation.set.save(path)?;
            if !json {
                println!(
                    "trust anchors rotated to version {}: saved to {} (use it as --trust from now on)",
                    rotation.version,
                    path.display()
                );
            }
        }
        None if !json => eprintln!(
            "note: the package rotates the trust anchors to version {}; pass --save-rotation FILE to adopt them",
            rotation.version
        ),
        None => {}
    }
    Ok(())
}

/// Verifies `package` with explicit trust options, through the library's updater (the same
/// pipeline `flash` and the C API use).
pub(crate) fn check_with_options(
    trust: &Path,
    package: &Path,
    hashing: Hashing,
    options: &TrustOptions,
) -> Result<VerifyReport, Error> {
    let anchors = AnchorSet::load(trust)?;
    let source = if package == Path::new("-") {
        PackageSource::Stream(Box::new(std::io::stdin()))
    } else {
        PackageSource::File(package.to_path_buf())
    };
    Updater::builder(source, self::trust(anchors, options))
        .policy(veriflash_core::InstallPolicy::default().with_threads(hashing.threads))
        .check_whole_image(hashing.whole_image)
        .build()?
        .verify()
}

pub(crate) fn run(
    trust: &Path,
    package: &Path,
    json: bool,
    hashing: Hashing,
    options: &TrustOptions,
) -> Result<(), Failure> {
    let report =
        check_with_options(trust, package, hashing, options).map_err(|e| Failure::new(e, json))?;
    if json {
        crate::events::print(json!({ "ok": true, "report": report }));
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
            "  {:<16} -> {:<16} {:>10}  {} chunks ok  sha256 {} ({})",
            image.name,
            image.partition,
            human_size(image.size),
            image.chunks,
            image.sha256,
            if image.sha256_checked {
                "re-computed"
            } else {
                "as signed"
            }
        );
    }
    for signer in &report.signers {
        println!("  signed by key {signer}");
    }
    if let Some(rotation) = &report.trust_rotation {
        println!(
            "  rotates the trust anchors to version {} ({} of {} must sign), authorized by {} current and proven by {} new anchor(s):",
            rotation.version,
            rotation.threshold,
            rotation.anchors.len(),
            rotation.authorized_by.len(),
            rotation.proven_by.len()
        );
        for anchor in &rotation.anchors {
            println!("    new anchor {anchor}");
        }
    }
}
