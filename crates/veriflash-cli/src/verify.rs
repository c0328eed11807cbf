//! `veriflash verify`: the whole check, with an exit status scripts can rely on.

use std::io::Read;
use std::path::Path;

use serde_json::json;
use veriflash_core::sig::{TimePolicy, Verifier};
use veriflash_core::{AnchorSet, Error, PackageReader, VerifyReport};

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

/// The verifier's time policy: the system clock as trusted time unless `no_clock`.
pub(crate) fn time_policy(no_clock: bool) -> TimePolicy {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()
        .map(|d| d.as_secs());
    match (no_clock, now) {
        (false, Some(now)) => TimePolicy::TrustedTime(now),
        // A clock before 1970 is not a trusted clock.
        _ => TimePolicy::NoClock,
    }
}

/// The verifier for an anchor set (`--trust`: PEM keys and root certificates, or an anchor-set
/// file that a rotation saved): the set's threshold or `options.threshold`, whichever is
/// higher, the set's version (so only a newer rotation is adopted), and the clock policy.
pub(crate) fn verifier<'a>(anchors: &'a AnchorSet, options: &TrustOptions) -> Verifier<'a> {
    let policy = anchors.policy();
    let threshold = policy.threshold().max(options.threshold);
    Verifier::new(anchors.anchors())
        .with_time(time_policy(options.no_clock))
        .with_policy(policy.with_threshold(threshold))
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

/// Verifies `package` with explicit trust options.
pub(crate) fn check_with_options(
    trust: &Path,
    package: &Path,
    hashing: Hashing,
    options: &TrustOptions,
) -> Result<VerifyReport, Error> {
    let anchors = AnchorSet::load(trust)?;
    let verifier = verifier(&anchors, options);
    open_package(package)?
        .verify(&verifier)?
        .with_threads(hashing.threads)
        .with_whole_image_check(hashing.whole_image)
        .verify_payload()
}

/// What [`open_package`] gives: a package whose prefix was read, over a buffered stream.
pub(crate) type OpenedPackage = PackageReader<std::io::BufReader<Box<dyn Read + Send>>>;

/// Opens `package`: a file (a regular file's length is checked against the signed layout, a
/// FIFO is read as a stream), or `-`, standard input, read once as a stream.
pub(crate) fn open_package(package: &Path) -> Result<OpenedPackage, Error> {
    if package == Path::new("-") {
        let stdin: Box<dyn Read + Send> = Box::new(std::io::stdin());
        return PackageReader::new(std::io::BufReader::with_capacity(64 * 1024, stdin));
    }
    PackageReader::open(package)
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
