//! `veriflash flash`: verify and install a package on one device or several, with progress.
//!
//! Everything that happens is the library's [`Updater`]: this module turns the command line
//! into one and its events into a progress bar, lines, or JSON.

use std::io::IsTerminal;
use std::path::Path;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use veriflash_core::{
    AnchorSet, CancelToken, Error, ErrorKind, Event, InstallPolicy, InstallReport, PackageSource,
    Reconnect, Reuse, SourceCheck, Updater,
};

use crate::events::EventLines;
use crate::output::{Failure, ProgressCount};
use crate::verify::print_report;

/// The default of `flash --reconnect`, in seconds (the library's default wait).
pub(crate) const DEFAULT_RECONNECT_SECS: u64 = 60;

/// The longest wait `--reconnect` and `--wait-boot` accept (a day): a bound, so a typo cannot
/// make the tool wait for years.
pub(crate) const MAX_WAIT_SECS: u64 = 86_400;

/// What `flash` was asked to do.
#[derive(Debug)]
pub(crate) struct FlashArgs<'a> {
    pub(crate) package: &'a Path,
    pub(crate) trust: &'a Path,
    pub(crate) trust_options: &'a crate::verify::TrustOptions,
    pub(crate) targets: &'a [String],
    pub(crate) ca: Option<&'a Path>,
    pub(crate) download: &'a crate::fetch::DownloadLimits,
    pub(crate) save_rotation: Option<&'a Path>,
    /// How long to wait for a device that dropped off mid-flash; zero: fail at once.
    pub(crate) reconnect: Duration,
    /// How long to wait after the flash for the device to come back running its new software.
    pub(crate) wait_boot: Duration,
    /// Whether a package may rewrite an MDM9x07's partition table.
    pub(crate) allow_partition_table: bool,
    /// How long to wait for a real modem to appear before the flash.
    pub(crate) wait_device: Duration,
    /// Where USB devices are looked for (tests point it at a fake tree).
    pub(crate) sysfs: Option<&'a Path>,
    /// Whether and from where a download reuses chunks the device already holds.
    pub(crate) reuse: Reuse,
    /// How a delta package's source is checked before the first write.
    pub(crate) source_check: SourceCheck,
    pub(crate) json: bool,
}

/// `--source-check`: [`SourceCheck`] as the command line names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum SourceCheckArg {
    /// [`SourceCheck::Whole`].
    Whole,
    /// [`SourceCheck::Recorded`].
    Recorded,
}

impl From<SourceCheckArg> for SourceCheck {
    fn from(arg: SourceCheckArg) -> Self {
        match arg {
            SourceCheckArg::Whole => Self::Whole,
            SourceCheckArg::Recorded => Self::Recorded,
        }
    }
}

/// What `--no-reuse` and `--chunk-cache` ask for.
pub(crate) fn reuse(no_reuse: bool, cache: Option<std::path::PathBuf>) -> Reuse {
    match (no_reuse, cache) {
        (true, _) => Reuse::off(),
        (false, Some(dir)) => Reuse::default().with_cache_dir(dir),
        (false, None) => Reuse::default(),
    }
}

/// How events reach a person: a progress bar on a terminal, plain lines otherwise; both count
/// what their label says ([`ProgressCount`]); JSON lines with `--json`.
enum Display {
    Json(EventLines),
    Bar {
        bar: ProgressBar,
        count: ProgressCount,
    },
    Lines(ProgressCount),
}

impl Display {
    fn new(json: bool) -> Self {
        if json {
            Self::Json(EventLines::default())
        } else if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix:<12} [{bar:40}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}  {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            Self::Bar {
                bar,
                count: ProgressCount::every(10),
            }
        } else {
            Self::Lines(ProgressCount::every(10))
        }
    }

    fn show(&mut self, event: &Event) {
        // What people read on stderr whatever the display (with --json too: stdout stays
        // the machine's).
        match event {
            Event::Reconnecting {
                attempt,
                max_attempts,
                timeout,
                message,
                ..
            } => eprintln!(
                "connection lost ({message}): waiting up to {} s for the device to come back (Ctrl-C to stop; reconnect {attempt} of {max_attempts})",
                timeout.as_secs()
            ),
            Event::Reconnected { .. } => eprintln!(
                "the device answers again: running the install again from the start of the package, verified anew"
            ),
            Event::DeltaPlanned {
                bytes_reused,
                bytes_to_fetch,
                ..
            } if !matches!(self, Self::Json(_)) && *bytes_reused > 0 => eprintln!(
                "the device holds {bytes_reused} bytes of the package (each chunk re-read and checked before it is written): downloading {bytes_to_fetch} bytes"
            ),
            Event::WaitingForBoot { timeout } => eprintln!(
                "waiting up to {} s for the device to come back running its new software",
                timeout.as_secs()
            ),
            _ => {}
        }
        if let Self::Bar { count, .. } | Self::Lines(count) = self {
            count.follow(event);
        }
        match (self, event) {
            (Self::Json(lines), e) => crate::events::print(lines.event(0, e)),
            (Self::Bar { bar, .. }, Event::PhaseStarted(p)) => bar.set_prefix(p.name()),
            (Self::Bar { bar, .. }, Event::PhaseFinished(p)) => {
                bar.println(format!("{:<12} ok", p.name()));
            }
            (Self::Bar { bar, count }, Event::Progress { .. }) => {
                if let Some(counted) = count.count(event) {
                    bar.set_prefix(counted.phase);
                    bar.set_length(counted.total);
                    bar.set_position(counted.done);
                    bar.set_message(counted.doing());
                }
            }
            (Self::Bar { bar, .. }, Event::Reconnecting { .. }) => bar.reset(),
            (Self::Bar { bar, .. }, Event::Finished(_)) => bar.finish_and_clear(),
            (Self::Bar { bar, .. }, Event::Warning(w)) => bar.println(format!("warning: {w}")),
            (Self::Lines(_), Event::PhaseFinished(p)) => eprintln!("{:<12} ok", p.name()),
            (Self::Lines(count), Event::Progress { .. }) => {
                if let Some(line) = count.line(event) {
                    eprintln!("{line}");
                }
            }
            (Self::Lines(_), Event::Warning(w)) => eprintln!("warning: {w}"),
            _ => {}
        }
    }
}

/// Where the package comes from: `-` (standard input), an http(s):// URL, or a file.
pub(crate) fn source(args: &FlashArgs<'_>) -> Result<PackageSource, Error> {
    if args.package == Path::new("-") {
        return Ok(PackageSource::Stream(Box::new(std::io::stdin())));
    }
    match args.package.to_str().filter(|p| crate::fetch::is_url(p)) {
        Some(url) => crate::fetch::remote_source(url, args.ca, args.download),
        None => Ok(PackageSource::File(args.package.to_path_buf())),
    }
}

/// The updater the command line describes, reporting to `events`.
fn updater(
    args: &FlashArgs<'_>,
    anchors: AnchorSet,
    cancel: CancelToken,
    events: impl FnMut(usize, &Event) + Send + 'static,
) -> Result<Updater, Error> {
    let reconnect = if args.reconnect.is_zero() {
        Reconnect::never()
    } else {
        Reconnect {
            wait: args.reconnect,
            ..Reconnect::default()
        }
    };
    Updater::builder(
        source(args)?,
        crate::verify::trust(anchors, args.trust_options),
    )
    .registry(crate::plugins::registry(
        args.sysfs,
        args.allow_partition_table,
        args.wait_device,
    ))
    .environment(crate::plugins::environment())
    .cancel(cancel)
    .reconnect(reconnect)
    .wait_for_boot(args.wait_boot)
    .reuse(args.reuse.clone())
    .policy(InstallPolicy::default().with_source_check(args.source_check))
    .events(events)
    .build()
}

/// `veriflash flash`: one target, or a factory line for several.
pub(crate) fn run(args: &FlashArgs<'_>) -> Result<(), Failure> {
    let fail = |e: Error| Failure::new(e, args.json);
    let [target] = args.targets else {
        if args.save_rotation.is_some() || !args.wait_boot.is_zero() {
            return Err(fail(Error::new(
                ErrorKind::InvalidInput,
                "--save-rotation and --wait-boot take one --target",
            )));
        }
        return crate::factory::run(args);
    };
    let anchors = AnchorSet::load(args.trust).map_err(fail)?;
    let cancel = CancelToken::new();
    crate::signals::cancel_on_interrupt(&cancel);
    let mut display = Display::new(args.json);
    let mut updater =
        updater(args, anchors, cancel, move |_, event| display.show(event)).map_err(fail)?;
    let report = updater.install(target).map_err(fail)?;
    finish(&report, target, args)
}

/// After a committed install: the report, the rotation the device adopted (and, with
/// `--save-rotation`, this station's copy of it), and where the device came back.
fn finish(report: &InstallReport, target: &str, args: &FlashArgs<'_>) -> Result<(), Failure> {
    if !args.json {
        print_report(&report.report);
        println!("installed on {target}; it boots the new software now");
        if let Some(device) = &report.booted {
            println!("back running its new software: {device}");
        }
    }
    crate::verify::adopt_rotation(&report.report, args.save_rotation, args.json)
        .map_err(|e| Failure::new(e, args.json))?;
    if let Some(boot_error) = &report.boot_error {
        return Err(Failure::new(boot_error.copy(), args.json));
    }
    if args.json {
        crate::events::print(crate::events::installed_line(target, report));
    }
    Ok(())
}

/// `flash` for the demo: one target, no waits, text output.
pub(crate) fn run_simple(package: &Path, trust: &Path, target: &str) -> Result<(), Failure> {
    let targets = [target.to_owned()];
    run(&FlashArgs {
        package,
        trust,
        trust_options: &crate::verify::TrustOptions::default(),
        targets: &targets,
        ca: None,
        download: &crate::fetch::DownloadLimits::default(),
        save_rotation: None,
        reconnect: Duration::ZERO,
        wait_boot: Duration::ZERO,
        allow_partition_table: false,
        wait_device: Duration::ZERO,
        sysfs: None,
        reuse: Reuse::default(),
        source_check: SourceCheck::default(),
        json: false,
    })
}
