//! `veriflash flash`: verify and install a package on a device, with progress.

use std::io::{BufReader, IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use veriflash_core::AnchorSet;
use veriflash_core::flash::device_error;
use veriflash_core::{
    CancelToken, Error, ErrorKind, Event, InstallPolicy, PackageReader, Phase, install_package,
};
use veriflash_mdm9x07::discover::{DeviceMode, Discover, FoundDevice, SYSFS_USB_DEVICES, Sysfs};
use veriflash_mdm9x07::target::Target;
use veriflash_plugin::{FlashSession, Registry};

use crate::output::{Failure, Milestones, error_json, human_size};
use crate::reconnect::{
    MAX_RECONNECTS, POLL_INTERVAL, SystemClock, Waited, boot_location, describe, is_booted,
    real_modem, should_reconnect, wait_until,
};
use crate::verify::print_report;

/// The plugins the CLI opens targets with: the built-in file device (`file:`) and the
/// MDM9x07 plugin with every transport (`mdm9x07:emulator`, `mdm9x07:serial:PATH`,
/// `mdm9x07:usb[:BUS-PORT]`), whose target strings are parsed in one place,
/// `veriflash_mdm9x07::target`.
///
/// Real modems keep a PC-side journal in [`journal_dir`], so a flash cut off by a pulled cable
/// or a reset resumes where it stopped when run again, and their protected partitions (EFS,
/// calibration, the MIBIB) are copied to its `backups/` before anything is erased. The
/// products the user configured (`crate::products`) come before the plugin's own table.
///
/// # Errors
/// A products file that cannot be read or is malformed.
pub(crate) fn registry() -> Result<Registry, Error> {
    let mut registry = Registry::with_builtin();
    let state = journal_dir();
    let defaults = veriflash_mdm9x07::SessionConfig::default();
    let mut products = match crate::products::config_dir() {
        Some(dir) => crate::products::load(&dir)?,
        None => Vec::new(),
    };
    products.extend(defaults.products.iter().cloned());
    let config = veriflash_mdm9x07::SessionConfig {
        backup_dir: state.as_ref().map(|dir| dir.join("backups")),
        journal_dir: state,
        products,
        ..defaults
    };
    registry.register(Box::new(veriflash_mdm9x07::Mdm9x07Plugin::new(config)));
    Ok(registry)
}

/// Where the MDM9x07 journals live: `$VERIFLASH_STATE_DIR`, else `$XDG_STATE_HOME/veriflash`,
/// else `~/.local/state/veriflash` (the XDG base-directory default); `None` without a home.
pub(crate) fn journal_dir() -> Option<std::path::PathBuf> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(dir) = var("VERIFLASH_STATE_DIR") {
        return Some(dir.into());
    }
    let base = var("XDG_STATE_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| var("HOME").map(|h| std::path::Path::new(&h).join(".local/state")))?;
    Some(base.join("veriflash"))
}

/// One event as a JSON line: the `--json` event stream's stable shape.
pub(crate) fn event_json(event: &Event) -> serde_json::Value {
    match event {
        Event::PhaseStarted(p) => json!({"event": "phase_started", "phase": p.name()}),
        Event::PhaseFinished(p) => json!({"event": "phase_finished", "phase": p.name()}),
        Event::Progress {
            image,
            image_done,
            image_total,
            done,
            total,
        } => json!({
            "event": "progress", "image": image, "image_done": image_done,
            "image_total": image_total, "done": done, "total": total,
        }),
        Event::Warning(w) => json!({"event": "warning", "message": w}),
        Event::Finished(code) => json!({"event": "finished", "code": code}),
        _ => json!({"event": "other"}),
    }
}

/// How events reach a person: a progress bar on a terminal, plain lines otherwise.
enum Display {
    Json,
    Bar(ProgressBar),
    /// Plain lines; `phase` labels the progress lines (`load` for a device's loader, else
    /// `flash`).
    Lines {
        milestones: Milestones,
        phase: &'static str,
    },
}

impl Display {
    fn new(json: bool) -> Self {
        if json {
            Self::Json
        } else if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template(
                    "{msg:<12} [{bar:40}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            Self::Bar(bar)
        } else {
            Self::Lines {
                milestones: Milestones::every(10),
                phase: "flash",
            }
        }
    }

    fn show(&mut self, event: &Event) {
        match (self, event) {
            (Self::Json, e) => println!("{}", event_json(e)),
            (Self::Bar(bar), Event::PhaseStarted(p)) => bar.set_message(p.name()),
            (Self::Bar(bar), Event::PhaseFinished(p)) => {
                bar.println(format!("{:<12} ok", p.name()))
            }
            (
                Self::Bar(bar),
                Event::Progress {
                    image, done, total, ..
                },
            ) => {
                bar.set_length(*total);
                bar.set_position(*done);
                bar.set_message(image.clone());
            }
            (Self::Bar(bar), Event::Finished(_)) => bar.finish_and_clear(),
            (Self::Bar(bar), Event::Warning(w)) => bar.println(format!("warning: {w}")),
            (Self::Lines { phase, .. }, Event::PhaseStarted(Phase::Load)) => *phase = "load",
            (Self::Lines { phase, .. }, Event::PhaseFinished(p)) => {
                if *p == Phase::Load {
                    *phase = "flash";
                }
                eprintln!("{:<12} ok", p.name());
            }
            (Self::Lines { milestones, phase }, Event::Progress { done, total, .. }) => {
                if let Some(percent) = milestones.reached(*done, *total) {
                    eprintln!(
                        "{phase:<12} {percent:>3}%  {} of {}",
                        human_size(*done),
                        human_size(*total)
                    );
                }
            }
            (Self::Lines { .. }, Event::Warning(w)) => eprintln!("warning: {w}"),
            _ => {}
        }
    }

    /// Ends one run of the install with its held-back `finished` event. When the install runs
    /// again after a reconnect, a JSON stream leaves it out (the `reconnecting` event carries
    /// the error; the last `finished` stays the verdict) and a progress bar is cleared.
    fn end_run(&mut self, finished: Option<&Event>, retrying: bool) {
        if let Some(event) = finished
            && !(retrying && matches!(self, Self::Json))
        {
            self.show(event);
        }
    }
}

/// What `flash` does around the install for a real modem (`mdm9x07:serial:…`,
/// `mdm9x07:usb…`): wait for it to come back after a lost connection, and after the flash.
#[derive(Clone, Debug)]
pub(crate) struct ModemOptions {
    /// How long to wait for a modem that dropped off mid-flash to answer again in download
    /// mode before running the install once more; zero: fail at once, as before.
    pub(crate) reconnect: Duration,
    /// How long to wait after a successful flash for the modem to reappear in normal mode;
    /// zero: do not wait.
    pub(crate) wait_boot: Duration,
    /// The sysfs directory of USB devices that `wait_boot` scans.
    pub(crate) sysfs: PathBuf,
}

impl ModemOptions {
    /// No waiting of either kind (the demo, tests of other commands).
    pub(crate) fn none() -> Self {
        Self {
            reconnect: Duration::ZERO,
            wait_boot: Duration::ZERO,
            sysfs: PathBuf::from(SYSFS_USB_DEVICES),
        }
    }
}

pub(crate) fn run(package: &Path, trust: &Path, target: &str, json: bool) -> Result<(), Failure> {
    let options = crate::verify::TrustOptions::default();
    run_with_ca(
        package,
        trust,
        &options,
        target,
        None,
        &crate::fetch::DownloadLimits::default(),
        None,
        &ModemOptions::none(),
        json,
    )
}

/// `error` with `note` appended to its message, keeping its kind (so its exit code) and where
/// it happened.
fn noted(error: &Error, note: &str) -> Error {
    Error::new(error.kind(), format!("{}; {note}", error.message())).at(error.location().clone())
}

/// `flash`, where `package` may be an http(s):// URL, with `ca` the CA for an https:// one and
/// `limits` the download's time limits.
#[allow(clippy::too_many_arguments)] // the command line's options, passed through once
pub(crate) fn run_with_ca(
    package: &Path,
    trust: &Path,
    trust_options: &crate::verify::TrustOptions,
    target: &str,
    ca: Option<&Path>,
    limits: &crate::fetch::DownloadLimits,
    save_rotation: Option<&Path>,
    modem: &ModemOptions,
    json: bool,
) -> Result<(), Failure> {
    let fail = |e: Error| Failure::new(e, json);
    let modem_target = real_modem(target);
    if !modem.wait_boot.is_zero() && modem_target.is_none() {
        return Err(fail(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "--wait-boot watches the USB bus for a real modem (mdm9x07:serial:TTY or mdm9x07:usb[:BUS-PORT]), not '{target}'"
            ),
        )));
    }
    let anchors = AnchorSet::load(trust).map_err(fail)?;
    let verifier = crate::verify::verifier(&anchors, trust_options);
    // A URL: the prefix is fetched and verified here, then the payload streams into the
    // install through a reader that yields only chunks matching their signed digests.
    let url = package.to_str().filter(|p| crate::fetch::is_url(p));
    let mut reader = match url {
        Some(url) => {
            let download: Box<dyn Read + Send> = Box::new(
                crate::fetch::open_remote(url, ca, limits, &verifier)
                    .map_err(fail)?
                    .into_reader(),
            );
            PackageReader::new(BufReader::new(download)).map_err(fail)?
        }
        None => crate::verify::open_package(package).map_err(fail)?,
    };
    // Before the flash: which modems are on the bus, to recognise ours when it comes back.
    let boot_watch = match &modem_target {
        Some(t) if !modem.wait_boot.is_zero() => Some(BootWatch::before(t, &modem.sysfs)),
        _ => None,
    };
    // A streamed URL or standard input cannot be re-read from its start, and only a real
    // modem comes back.
    let reconnect = if url.is_none() && package != Path::new("-") && modem_target.is_some() {
        modem.reconnect
    } else {
        Duration::ZERO
    };
    let mut session = registry()
        .map_err(fail)?
        .open(target)
        .map_err(|e| fail(device_error(e)))?;
    let cancel = CancelToken::new();
    crate::signals::cancel_on_interrupt(&cancel);
    let mut reconnects = 0u32;
    // Whether the device answered as a download-mode modem before this run: set once it was
    // re-found, since the re-finding asks it who it is.
    let mut answered = false;
    let report = loop {
        let mut display = Display::new(json);
        let mut progressed = false;
        // Held back until it is known whether this run is the last one: with --json a
        // `finished` event is the end of the stream (only the result object follows it).
        let mut finished = None;
        let result = install_package(
            reader,
            &verifier,
            &InstallPolicy::default(),
            session.as_mut(),
            &cancel,
            &mut |event| match event {
                Event::Finished(_) => finished = Some(event.clone()),
                Event::Progress { .. } => {
                    // A chunk reached the device: it had identified itself in download mode.
                    progressed = true;
                    display.show(event);
                }
                _ => display.show(event),
            },
        );
        let error = match result {
            Ok(report) => {
                display.end_run(finished.as_ref(), false);
                break report;
            }
            Err(error) => error,
        };
        let device_answered = answered || progressed;
        if reconnect.is_zero() || !should_reconnect(error.kind(), device_answered, reconnects) {
            display.end_run(finished.as_ref(), false);
            let error = if !reconnect.is_zero()
                && device_answered
                && should_reconnect(error.kind(), true, 0)
            {
                noted(
                    &error,
                    &format!(
                        "gave up after {MAX_RECONNECTS} reconnects (check the cable, the hub and the modem's power)"
                    ),
                )
            } else {
                error
            };
            return Err(fail(error));
        }
        display.end_run(finished.as_ref(), true);
        reconnects += 1;
        // Close the tty (and its lock) or the USB interface first: the device that comes back
        // is opened anew.
        drop(session);
        let secs = reconnect.as_secs();
        eprintln!(
            "connection lost ({}): waiting up to {secs} s for the modem to come back in download mode (Ctrl-C to stop; reconnect {reconnects} of {MAX_RECONNECTS})",
            error.message()
        );
        if json {
            println!(
                "{}",
                json!({
                    "event": "reconnecting", "attempt": reconnects, "max_attempts": MAX_RECONNECTS,
                    "timeout_secs": secs, "target": target, "error": error_json(&error),
                })
            );
        }
        // Back means: the target opens again (USB: a re-scan finds a 05C6:9008 device; a tty:
        // its path exists again, as udev's /dev/serial/by-id links do) and the boot ROM
        // identifies the chip. That session is the one the next run uses: closing and
        // re-opening at once could lose the boot ROM's HELLO.
        let mut probe = || -> Result<Box<dyn FlashSession>, String> {
            let mut s = registry()
                .map_err(|e| e.to_string())?
                .open(target)
                .map_err(|e| e.to_string())?;
            s.device_info().map_err(|e| e.to_string())?;
            Ok(s)
        };
        // The verdict of a wait that ends the flash: a JSON stream still ends with `finished`
        // and the result object, as without a reconnect.
        let end = |e: Error| {
            if json {
                println!("{}", event_json(&Event::Finished(Some(e.code()))));
            }
            fail(e)
        };
        match wait_until(&mut probe, reconnect, POLL_INTERVAL, &SystemClock, &cancel) {
            Waited::Found(s) => session = s,
            Waited::TimedOut(last) => {
                return Err(end(noted(
                    &error,
                    &format!(
                        "the modem did not come back in download mode within {secs} s (last try: {last})"
                    ),
                )));
            }
            Waited::Cancelled => {
                return Err(end(Error::new(
                    ErrorKind::Cancelled,
                    format!(
                        "cancelled while waiting for the modem to come back in download mode (the connection had been lost: {})",
                        error.message()
                    ),
                )));
            }
        }
        answered = true;
        eprintln!(
            "the modem answers again in download mode: running the install again from the start of the package (partitions it already holds are read back, not written again)"
        );
        if json {
            println!(
                "{}",
                json!({"event": "reconnected", "attempt": reconnects, "target": target})
            );
        }
        // The package is opened again, so this run verifies it from scratch: nothing read before
        // the device dropped off is trusted.
        reader = crate::verify::open_package(package).map_err(fail)?;
    };
    if !json {
        print_report(&report);
        println!("installed on {target}; it boots the new software now");
    }
    // Only now, with the install committed, may a rotation the package carried be adopted —
    // before the wait for the boot, whose timeout must not keep the new anchors unsaved.
    crate::verify::adopt_rotation(&report, save_rotation, json).map_err(fail)?;
    match boot_watch {
        Some(watch) => watch.wait(modem.wait_boot, &cancel, json).map_err(fail),
        None => Ok(()),
    }
}

/// What a scan that found no booted modem says (a scanner error says something else).
const NOT_YET: &str = "no normal-mode modem yet";

/// The wait for a flashed modem to reappear in normal mode (`flash --wait-boot`).
struct BootWatch {
    scanner: Sysfs,
    /// Where it should reappear, when known.
    location: Option<String>,
    /// The modems on the bus before the flash.
    before: Vec<FoundDevice>,
}

impl BootWatch {
    /// Looks at the bus before the flash. An unreadable bus is an empty one here: the wait
    /// itself reports the scanner's error if it persists.
    fn before(target: &Target, sysfs: &Path) -> Self {
        let scanner = Sysfs::new(sysfs);
        let before = scanner.scan().unwrap_or_default();
        // A udev link (/dev/serial/by-id/…) names the same tty as sysfs once resolved.
        let tty = match target {
            Target::Serial(path) => std::fs::canonicalize(path).ok(),
            _ => None,
        };
        let location = boot_location(target, tty.as_deref(), &before);
        Self {
            scanner,
            location,
            before,
        }
    }

    /// Waits up to `timeout` for the modem in normal mode and says where it is.
    fn wait(&self, timeout: Duration, cancel: &CancelToken, json: bool) -> Result<(), Error> {
        let at = self
            .location
            .as_ref()
            .map(|l| format!(" at USB {l}"))
            .unwrap_or_default();
        let secs = timeout.as_secs();
        eprintln!("waiting up to {secs} s for the modem to come back in normal mode{at}");
        if json {
            println!(
                "{}",
                json!({"event": "waiting_for_boot", "timeout_secs": secs, "location": self.location})
            );
        }
        let location = self.location.as_deref();
        let mut probe = || -> Result<FoundDevice, String> {
            self.scanner
                .scan()
                .map_err(|e| e.to_string())?
                .into_iter()
                .find(|d| is_booted(d, location, &self.before))
                .ok_or_else(|| NOT_YET.to_owned())
        };
        let found = match wait_until(&mut probe, timeout, POLL_INTERVAL, &SystemClock, cancel) {
            Waited::Found(d) => d,
            Waited::TimedOut(last) => return Err(self.not_back(secs, &at, last)),
            Waited::Cancelled => {
                return Err(Error::new(
                    ErrorKind::Cancelled,
                    "stopped waiting for the modem to come back in normal mode; the install itself completed",
                ));
            }
        };
        let tty = found.tty.as_ref().map(|t| t.display().to_string());
        if json {
            println!(
                "{}",
                json!({
                    "event": "booted", "location": found.location,
                    "vendor_id": format!("{:04x}", found.vendor_id),
                    "product_id": format!("{:04x}", found.product_id),
                    "tty": tty, "product": found.product,
                })
            );
        } else {
            println!(
                "back in normal mode: {} at USB {}, DIAG port {}",
                describe(&found),
                found.location,
                tty.as_deref()
                    .unwrap_or("(no tty: is the qcserial or option driver loaded?)")
            );
        }
        Ok(())
    }

    /// The `timeout` error, with what the bus shows now and what to do: the exit code says the
    /// wait failed, but the install had committed, which the kind's own remedy cannot know.
    fn not_back(&self, secs: u64, at: &str, last: String) -> Error {
        let location = self.location.as_deref();
        let still_edl = self.scanner.scan().ok().and_then(|now| {
            now.into_iter()
                .find(|d| d.mode == DeviceMode::Edl && location.is_none_or(|l| l == d.location))
        });
        let seen = match (still_edl, last) {
            (Some(d), _) => format!(
                "; a download-mode device (05C6:9008) is at USB {}: the new software did not start",
                d.location
            ),
            (None, l) if l != NOT_YET => format!(" (last scan: {l})"),
            _ => String::new(),
        };
        Error::new(
            ErrorKind::Timeout,
            format!(
                "the package was installed and the modem reset, but it did not come back in normal mode{at} within {secs} s{seen}. \
                 Check `veriflash devices` or `lsusb`; power-cycle the modem, and if it stays in download mode run the flash again (docs/MDM9X07.md §8)"
            ),
        )
    }
}
