//! `veriflash fetch`: download a package over HTTP(S), verifying every chunk as it arrives,
//! resuming a previous partial download, and writing the file only once it verified.

use std::io::IsTerminal;
use std::path::Path;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use veriflash_core::http::{
    DEFAULT_LOW_SPEED_LIMIT, DEFAULT_LOW_SPEED_TIME, HttpOptions, HttpSource,
};
use veriflash_core::ota::{DEFAULT_DEADLINE, FetchProgress, OtaOptions, RemotePackage};
use veriflash_core::{CancelToken, Error, ErrorKind, PackageSource};

use crate::events::EventLines;
use crate::output::{Failure, Milestones, human_size};
use crate::verify::print_report;

/// Whether a `PACKAGE` argument names a download rather than a file.
pub(crate) fn is_url(package: &str) -> bool {
    package.starts_with("http://") || package.starts_with("https://")
}

/// How long a download may take: `--low-speed-limit`, `--low-speed-time` and `--deadline`, the
/// same for `fetch` and `flash URL`. The defaults are the library's.
#[derive(Clone, Copy, Debug, clap::Args)]
pub(crate) struct DownloadLimits {
    /// End a download attempt when the server sends fewer than BYTES per second, averaged
    /// over --low-speed-time (a server that trickles or stalls); the download resumes after
    /// its last verified chunk, at most 8 times in a row, then exits 53 (timeout). 0: no
    /// low-speed limit.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_LOW_SPEED_LIMIT)]
    pub(crate) low_speed_limit: u64,
    /// The window of --low-speed-limit, in seconds; also the longest wait for the server's
    /// answer or for any read.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = DEFAULT_LOW_SPEED_TIME.as_secs(),
        value_parser = clap::value_parser!(u64).range(1..=3600)
    )]
    pub(crate) low_speed_time: u64,
    /// Give the whole download at most SECS (12 hours by default), however steadily it is
    /// moving, then exit 62 (deadline_exceeded); `fetch` resumes in the next run. 0: no
    /// deadline.
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_DEADLINE.as_secs())]
    pub(crate) deadline: u64,
}

impl Default for DownloadLimits {
    fn default() -> Self {
        Self {
            low_speed_limit: DEFAULT_LOW_SPEED_LIMIT,
            low_speed_time: DEFAULT_LOW_SPEED_TIME.as_secs(),
            deadline: DEFAULT_DEADLINE.as_secs(),
        }
    }
}

impl DownloadLimits {
    /// `options` with the low-speed limit (a zero rate turns it off).
    fn http(&self, options: HttpOptions) -> HttpOptions {
        options.with_low_speed_limit(
            self.low_speed_limit,
            Duration::from_secs(self.low_speed_time),
        )
    }

    /// The download's options: the deadline (0: none), the library's defaults otherwise.
    fn ota(&self) -> OtaOptions {
        match self.deadline {
            0 => OtaOptions::new().without_deadline(),
            secs => OtaOptions::new().with_deadline(Duration::from_secs(secs)),
        }
    }
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

/// The package at `url`, for an updater: its byte ranges, fetched with `limits` (and `ca` for
/// an https:// one), each chunk verified as it arrives.
pub(crate) fn remote_source(
    url: &str,
    ca: Option<&Path>,
    limits: &DownloadLimits,
) -> Result<PackageSource, Error> {
    let source = HttpSource::new(url, &limits.http(http_options(ca)?))?;
    Ok(PackageSource::Remote(Box::new(source), limits.ota()))
}

/// Download progress: a bar with bytes, rate and ETA on a terminal, a line per 10 % otherwise,
/// JSON events with `--json`.
enum Display {
    Json(EventLines),
    Bar(ProgressBar),
    Lines { milestones: Milestones },
}

impl Display {
    fn new(json: bool) -> Self {
        if json {
            Self::Json(EventLines::default())
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

    /// A phase of the download began (`started`) or ended: `signature` (the signed prefix
    /// fetched and verified), then `download`.
    fn phase(&mut self, phase: &str, started: bool) {
        if let Self::Json(lines) = self {
            crate::events::print(lines.download_phase(phase, started));
        }
    }

    fn show(&mut self, progress: &FetchProgress) {
        match self {
            Self::Json(lines) => crate::events::print(lines.download(progress)),
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

/// `veriflash fetch URL --out FILE --trust ... [--ca CA.pem] [--low-speed-limit BYTES]
/// [--low-speed-time SECS] [--deadline SECS] [--json]`. The first Ctrl-C stops the download
/// after the chunk under way (exit 60, the verified chunks kept for the next run), as it stops
/// `flash`; a second one quits at once.
pub(crate) fn run(
    url: &str,
    out: &Path,
    trust: &Path,
    trust_options: &crate::verify::TrustOptions,
    ca: Option<&Path>,
    limits: &DownloadLimits,
    json: bool,
) -> Result<(), Failure> {
    let fail = |e: Error| Failure::new(e, json);
    // `fetch_to_file` checks it too, but only after the prefix came: say it before any request.
    veriflash_core::output::check_output(out, &[]).map_err(fail)?;
    let anchors = veriflash_core::AnchorSet::load(trust).map_err(fail)?;
    let trust = crate::verify::trust(anchors, trust_options);
    let verifier = trust.verifier();
    let cancel = CancelToken::new();
    crate::signals::cancel_on_interrupt(&cancel);
    let source =
        HttpSource::new(url, &limits.http(http_options(ca).map_err(fail)?)).map_err(fail)?;
    let mut display = Display::new(json);
    display.phase("signature", true);
    let remote = RemotePackage::open(source, &verifier, limits.ota())
        .map_err(fail)?
        .with_cancel(cancel);
    display.phase("signature", false);
    display.phase("download", true);
    let result = remote.fetch_to_file(out, &verifier, &mut |p| display.show(p));
    display.finish();
    let (report, stats) = result.map_err(fail)?;
    display.phase("download", false);
    if json {
        crate::events::print(json!({
            "ok": true,
            "report": report,
            "download": crate::events::download_json(&stats),
        }));
    } else if stats.already_present {
        print_report(&report);
        println!(
            "{} already holds this package and it verified again in full: nothing downloaded",
            out.display()
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
