//! `veriflash fetch`: download a package over HTTP(S), verifying every chunk as it arrives,
//! resuming a previous partial download, and writing the file only once it verified.

use std::io::IsTerminal;
use std::path::Path;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use veriflash_core::http::{HttpOptions, HttpSource};
use veriflash_core::ota::{FetchProgress, OtaOptions, RemotePackage};
use veriflash_core::sig::Verifier;
use veriflash_core::{Error, ErrorKind};

use crate::output::{Failure, Milestones, human_size};
use crate::verify::print_report;

/// Whether a `PACKAGE` argument names a download rather than a file.
pub(crate) fn is_url(package: &str) -> bool {
    package.starts_with("http://") || package.starts_with("https://")
}

/// The HTTP settings from the command line: `--ca` replaces Mozilla's roots.
pub(crate) fn http_options(ca: Option<&Path>) -> Result<HttpOptions, Error> {
    let options = HttpOptions::new();
    match ca {
        Some(path) => {
            let pem = std::fs::read(path)
                .map_err(|e| Error::new(ErrorKind::Io, format!("{}: {e}", path.display())))?;
            options.with_ca_pem(&pem)
        }
        None => Ok(options),
    }
}

/// Opens `url` and verifies its prefix (header, manifest, signatures) with `verifier`.
pub(crate) fn open_remote(
    url: &str,
    ca: Option<&Path>,
    verifier: &Verifier<'_>,
) -> Result<RemotePackage<HttpSource>, Error> {
    let source = HttpSource::new(url, &http_options(ca)?)?;
    RemotePackage::open(source, verifier, OtaOptions::new())
}

/// Download progress: a bar with bytes, rate and ETA on a terminal, a line per 10 % otherwise.
enum Display {
    Quiet,
    Bar(ProgressBar),
    Lines { milestones: Milestones },
}

impl Display {
    fn new(json: bool) -> Self {
        if json {
            Self::Quiet
        } else if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template(
                    "download     [{bar:40}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar.enable_steady_tick(Duration::from_millis(250));
            Self::Bar(bar)
        } else {
            Self::Lines {
                milestones: Milestones::every(10),
            }
        }
    }

    fn show(&mut self, progress: &FetchProgress) {
        match self {
            Self::Quiet => {}
            Self::Bar(bar) => {
                bar.set_length(progress.total);
                bar.set_position(progress.done);
            }
            Self::Lines { milestones } => {
                if let Some(percent) = milestones.reached(progress.done, progress.total) {
                    eprintln!(
                        "download     {percent:>3}%  {} of {}",
                        human_size(progress.done),
                        human_size(progress.total)
                    );
                }
            }
        }
    }

    fn finish(&self) {
        if let Self::Bar(bar) = self {
            bar.finish_and_clear();
        }
    }
}

/// `veriflash fetch URL --out FILE --trust ... [--ca CA.pem] [--json]`.
pub(crate) fn run(
    url: &str,
    out: &Path,
    trust: &Path,
    trust_options: &crate::verify::TrustOptions,
    ca: Option<&Path>,
    json: bool,
) -> Result<(), Failure> {
    let fail = |e: Error| Failure::new(e, json);
    let anchors = veriflash_core::AnchorSet::load(trust).map_err(fail)?;
    let verifier = crate::verify::verifier(&anchors, trust_options);
    let remote = open_remote(url, ca, &verifier).map_err(fail)?;
    let mut display = Display::new(json);
    let result = remote.fetch_to_file(out, &verifier, &mut |p| display.show(p));
    display.finish();
    let (report, stats) = result.map_err(fail)?;
    if json {
        println!(
            "{}",
            json!({
                "ok": true,
                "report": report,
                "download": {
                    "bytes_fetched": stats.bytes_fetched,
                    "bytes_reused": stats.bytes_reused,
                    "resumes": stats.resumes,
                    "repairs": stats.repairs,
                },
            })
        );
    } else {
        print_report(&report);
        println!(
            "saved to {} ({} downloaded, {} reused from a partial download, {} resumes, {} chunks re-fetched)",
            out.display(),
            human_size(stats.bytes_fetched),
            human_size(stats.bytes_reused),
            stats.resumes,
            stats.repairs
        );
    }
    Ok(())
}
