//! The `--json` output of every command, in one place: one JSON object per line, each stamped
//! with the time it was made (`time_ms`, milliseconds since the Unix epoch).
//!
//! * `flash` (one device or a factory line) and `fetch` print events as they happen; a progress
//!   event also carries the rate over the current phase and an estimate of the time left, so a
//!   script or a station can show what a person sees on the progress bar.
//! * Every command's last line says how it ended: `{"ok": true, ...}` with what it produced, or
//!   `{"ok": false, "error": {...}}` (see `output::Failure`).
//!
//! The shapes are the CLI's stable contract; docs/schemas/ describes each one and a test holds
//! real output to those schemas.

use std::collections::BTreeMap;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use veriflash_core::ota::{FetchProgress, FetchStats};
use veriflash_core::{Error, ErrorKind, Event, InstallReport, Installed};

use crate::output::error_json;

/// Milliseconds since the Unix epoch, now (0 on a clock before 1970).
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Prints `line` with its `time_ms`.
pub(crate) fn print(mut line: Value) {
    if let Some(object) = line.as_object_mut() {
        object.insert("time_ms".to_owned(), json!(now_ms()));
    }
    println!("{line}");
}

/// The pace of one device's (or one download's) current phase.
#[derive(Clone, Copy, Debug)]
struct Pace {
    started: Instant,
    /// Progress when the phase started.
    base: u64,
    /// The latest progress seen.
    last: u64,
}

impl Pace {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            base: 0,
            last: 0,
        }
    }

    /// A new phase begins now, from the progress seen last.
    fn restart(&mut self) {
        self.started = Instant::now();
        self.base = self.last;
    }

    /// The rate in bytes per second over the phase and the seconds left at that rate (`None`
    /// until a byte moved).
    fn measure(&mut self, done: u64, total: u64) -> (u64, Option<u64>) {
        // Progress that went back (a device re-found, the install run again) starts afresh.
        if done < self.base {
            self.restart();
            self.base = 0;
        }
        self.last = done;
        let moved = done.saturating_sub(self.base);
        let millis = self.started.elapsed().as_millis().max(1);
        let rate = u64::try_from(u128::from(moved) * 1000 / millis).unwrap_or(u64::MAX);
        let eta = (rate > 0).then(|| total.saturating_sub(done).div_ceil(rate));
        (rate, eta)
    }
}

/// The event lines of one run: the pace of each device (index 0 for a single device or a
/// download).
#[derive(Debug, Default)]
pub(crate) struct EventLines {
    paces: BTreeMap<usize, Pace>,
}

impl EventLines {
    fn pace(&mut self, device: usize) -> &mut Pace {
        self.paces.entry(device).or_insert_with(Pace::new)
    }

    /// The line for `event` of `device`.
    pub(crate) fn event(&mut self, device: usize, event: &Event) -> Value {
        match event {
            Event::PhaseStarted(p) => {
                self.pace(device).restart();
                json!({"event": "phase_started", "phase": p.name()})
            }
            Event::PhaseFinished(p) => json!({"event": "phase_finished", "phase": p.name()}),
            Event::Progress {
                image,
                image_done,
                image_total,
                done,
                total,
            } => {
                let (rate, eta) = self.pace(device).measure(*done, *total);
                json!({
                    "event": "progress", "image": image, "image_done": image_done,
                    "image_total": image_total, "done": done, "total": total,
                    "rate_bytes_per_sec": rate, "eta_secs": eta,
                })
            }
            Event::Warning(w) => json!({"event": "warning", "message": w}),
            Event::Reconnecting {
                attempt,
                max_attempts,
                timeout,
                code,
                message,
            } => json!({
                "event": "reconnecting", "attempt": attempt, "max_attempts": max_attempts,
                "timeout_secs": timeout.as_secs(), "error": coded_json(*code, message),
            }),
            Event::Reconnected { attempt } => json!({"event": "reconnected", "attempt": attempt}),
            Event::WaitingForBoot { timeout } => {
                json!({"event": "waiting_for_boot", "timeout_secs": timeout.as_secs()})
            }
            Event::Booted(device) => json!({"event": "booted", "device": device}),
            Event::Finished(code) => json!({"event": "finished", "code": code}),
            Event::DeltaPlanned {
                bytes_reused,
                bytes_to_fetch,
                bytes_scanned,
            } => json!({
                "event": "delta_planned", "bytes_reused": bytes_reused,
                "bytes_to_fetch": bytes_to_fetch, "bytes_scanned": bytes_scanned,
            }),
            _ => json!({"event": "other"}),
        }
    }

    /// The line for a download's progress (`fetch`): the package bytes verified so far, the
    /// traffic, the rate over the download and the time left.
    pub(crate) fn download(&mut self, progress: &FetchProgress) -> Value {
        let (rate, eta) = self.pace(0).measure(progress.done, progress.total);
        json!({
            "event": "progress", "phase": "download", "done": progress.done,
            "total": progress.total, "rate_bytes_per_sec": rate, "eta_secs": eta,
            "download": download_json(&progress.stats),
        })
    }

    /// A phase of a download (`fetch`), which has no device phases: `signature` (the signed
    /// prefix fetched and verified) and `download`.
    pub(crate) fn download_phase(&mut self, phase: &str, started: bool) -> Value {
        if started {
            self.pace(0).restart();
            json!({"event": "phase_started", "phase": phase})
        } else {
            json!({"event": "phase_finished", "phase": phase})
        }
    }
}

/// An error known by its code and message, as `--json` shows errors.
fn coded_json(code: u8, message: &str) -> Value {
    match ErrorKind::from_code(code) {
        Some(kind) => error_json(&Error::new(kind, message)),
        None => json!({"code": code, "message": message}),
    }
}

/// A download's traffic.
pub(crate) fn download_json(stats: &FetchStats) -> Value {
    json!({
        "bytes_fetched": stats.bytes_fetched,
        "bytes_reused": stats.bytes_reused,
        "resumes": stats.resumes,
        "repairs": stats.repairs,
        "already_present": stats.already_present,
    })
}

/// What the device runs after a committed install.
fn installed_json(installed: &Installed) -> Value {
    json!({
        "device_id": installed.device_id,
        "product": installed.product,
        "chipset": installed.chipset,
        "hardware_revision": installed.hardware_revision,
        "slot": installed.slot.map(veriflash_core::plugin::Slot::name),
        "previous_version": installed.previous_version,
        "version": installed.version,
        "security_floor": installed.floor,
    })
}

/// `flash`'s last line after a committed install on `target`.
pub(crate) fn installed_line(target: &str, report: &InstallReport) -> Value {
    let phases: Vec<Value> = report
        .phases
        .iter()
        .map(|(phase, took)| json!({"phase": phase.name(), "seconds": took.as_secs_f64()}))
        .collect();
    json!({
        "ok": true,
        "target": target,
        "report": report.report,
        "installed": installed_json(&report.installed),
        "phases": phases,
        "reconnects": report.reconnects,
        "download": report.download.as_ref().map(download_json),
        "booted": report.booted,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pace_is_measured_over_the_phase_and_restarts_when_progress_goes_back() {
        let mut pace = Pace::new();
        pace.started = Instant::now()
            .checked_sub(std::time::Duration::from_secs(2))
            .unwrap_or_else(Instant::now);
        let (rate, eta) = pace.measure(2_000, 10_000);
        assert!((900..=1000).contains(&rate), "{rate}");
        assert!(eta.is_some_and(|s| (8..=9).contains(&s)), "{eta:?}");
        // Nothing moved yet in a new phase: no estimate.
        pace.restart();
        assert_eq!(pace.measure(2_000, 10_000).1, None);
        // Progress that went back starts from zero.
        let (_, eta) = pace.measure(0, 10_000);
        assert_eq!(eta, None);
        assert_eq!(pace.base, 0);
    }
}
