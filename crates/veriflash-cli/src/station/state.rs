//! What the station knows — the verified package, the devices, the session's history — and
//! the installs it runs. Every change is sent to the pages as one JSON message (see
//! [`Station::subscribe`]); a page that connects gets a snapshot first.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tokio::sync::broadcast;
use veriflash_core::{CancelToken, Error, Event, Phase, Reconnect, Trust, Updater, VerifyReport};

use crate::events::EventLines;
use crate::output::error_json;

/// Messages a slow page may fall behind by before it is sent a fresh snapshot instead.
const BACKLOG: usize = 1024;
/// The least time between two progress messages of one device: a page redraws a bar at a
/// human pace, and eight devices streaming every chunk would only keep it busy.
const PROGRESS_EVERY: Duration = Duration::from_millis(100);
/// A pseudo-terminal (and a USB modem's boot ROM) sees a host that closes and at once reopens
/// as one connection: after identifying a device, the station leaves it this long before the
/// next session.
const SETTLE: Duration = Duration::from_millis(300);
/// The most history records a session keeps (a factory shift is a few thousand devices).
const MAX_HISTORY: usize = 100_000;

/// What the station is started with.
pub(crate) struct Setup {
    /// The package's bytes, verified.
    pub(crate) bytes: Arc<[u8]>,
    /// What their verification established.
    pub(crate) report: VerifyReport,
    pub(crate) trust: Trust,
    /// Flash every device that appears, without a click.
    pub(crate) auto: bool,
    /// Targets watched besides discovery (`--target`).
    pub(crate) targets: Vec<String>,
    /// Whether the package may rewrite an MDM9x07's partition table (`--allow-partition-table`).
    pub(crate) allow_partition_table: bool,
    /// The sysfs directory of USB devices (tests point it elsewhere).
    pub(crate) sysfs: Option<PathBuf>,
}

/// Where a device is in the station's eyes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Just appeared: its identity is being read.
    Identifying,
    /// Waiting for a click (or `--auto`).
    Ready,
    /// An install runs on it.
    Flashing,
    /// Its last install committed.
    Succeeded,
    /// Its last install failed or was refused.
    Failed,
}

impl State {
    fn name(self) -> &'static str {
        match self {
            Self::Identifying => "identifying",
            Self::Ready => "ready",
            Self::Flashing => "flashing",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
        }
    }
}

/// One device the station shows.
#[derive(Debug)]
struct Device {
    /// How discovery found it: `usb`, `emulator` or `target` (`--target`).
    found_by: &'static str,
    state: State,
    /// Whether discovery still sees it.
    present: bool,
    /// What it said about itself (chip, serial, product, version, floor), or why it did not.
    identity: Option<Value>,
    identity_error: Option<Value>,
    /// The install it is part of.
    run: Option<u64>,
    /// The current phase of that install.
    phase: Option<String>,
    /// Whether that install got as far as writing (a device stopped before was refused).
    wrote: bool,
    /// The latest progress event line.
    progress: Option<Value>,
    last_progress_sent: Option<Instant>,
    /// How its last install ended.
    result: Option<Value>,
    started_ms: u64,
    /// When its install ended (its `finished` event).
    finished_ms: u64,
}

impl Device {
    fn new(found_by: &'static str) -> Self {
        Self {
            found_by,
            state: State::Identifying,
            present: true,
            identity: None,
            identity_error: None,
            run: None,
            phase: None,
            wrote: false,
            progress: None,
            last_progress_sent: None,
            result: None,
            started_ms: 0,
            finished_ms: 0,
        }
    }

    fn json(&self, target: &str) -> Value {
        json!({
            "target": target,
            "found_by": self.found_by,
            "state": self.state.name(),
            "present": self.present,
            "identity": self.identity,
            "identity_error": self.identity_error,
            "phase": self.phase,
            "progress": self.progress,
            "result": self.result,
        })
    }
}

/// The history record of one install: the factory's traceability record.
#[derive(Clone, Debug)]
pub(crate) struct Record {
    pub(crate) device_serial: String,
    pub(crate) target: String,
    pub(crate) chip: String,
    pub(crate) package_id: String,
    pub(crate) product: String,
    pub(crate) version: String,
    /// `installed`, `refused` (stopped before anything was written) or `failed`.
    pub(crate) result: &'static str,
    /// The stable error code (0 for success).
    pub(crate) code: u8,
    pub(crate) error: String,
    pub(crate) started_ms: u64,
    pub(crate) finished_ms: u64,
}

impl Record {
    pub(crate) fn json(&self) -> Value {
        json!({
            "device_serial": self.device_serial,
            "target": self.target,
            "chip": self.chip,
            "package_id": self.package_id,
            "product": self.product,
            "version": self.version,
            "result": self.result,
            "code": self.code,
            "error": self.error,
            "started": iso8601(self.started_ms),
            "finished": iso8601(self.finished_ms),
        })
    }

    /// The CSV columns, in order.
    pub(crate) const CSV_HEADER: &'static str =
        "device_serial,target,chip,package_id,product,version,result,code,error,started,finished";

    pub(crate) fn csv_row(&self) -> String {
        [
            csv_field(&self.device_serial),
            csv_field(&self.target),
            csv_field(&self.chip),
            csv_field(&self.package_id),
            csv_field(&self.product),
            csv_field(&self.version),
            self.result.to_owned(),
            self.code.to_string(),
            csv_field(&self.error),
            iso8601(self.started_ms),
            iso8601(self.finished_ms),
        ]
        .join(",")
    }
}

/// A CSV field (RFC 4180 quoting), made inert for spreadsheets: a value a device or a message
/// supplies that starts like a formula (`=`, `+`, `-`, `@`) is prefixed with `'`.
fn csv_field(value: &str) -> String {
    let value = if value.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{value}")
    } else {
        value.to_owned()
    };
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value
    }
}

/// Milliseconds since the Unix epoch, now.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// `2026-12-06T05:15:25.123Z` for milliseconds since the Unix epoch (UTC, proleptic Gregorian;
/// the days-to-date conversion is the well-known civil-from-days algorithm).
pub(crate) fn iso8601(ms: u64) -> String {
    let secs = ms / 1000;
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

/// Why a flash request was not started.
#[derive(Debug)]
pub(crate) struct Refusal(pub(crate) String);

struct Inner {
    devices: BTreeMap<String, Device>,
    history: Vec<Record>,
    runs: BTreeMap<u64, CancelToken>,
    next_run: u64,
}

/// The station: see the module documentation.
pub(crate) struct Station {
    bytes: Arc<[u8]>,
    report: VerifyReport,
    package: Value,
    trust: Trust,
    auto: bool,
    pub(crate) targets: Vec<String>,
    allow_partition_table: bool,
    pub(crate) sysfs: Option<PathBuf>,
    inner: Mutex<Inner>,
    updates: broadcast::Sender<Arc<str>>,
}

impl std::fmt::Debug for Station {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Station")
            .field("package", &self.package)
            .finish_non_exhaustive()
    }
}

impl Station {
    pub(crate) fn new(setup: Setup) -> Self {
        let package = package_json(&setup.report, setup.allow_partition_table);
        Self {
            bytes: setup.bytes,
            report: setup.report,
            package,
            trust: setup.trust,
            auto: setup.auto,
            targets: setup.targets,
            allow_partition_table: setup.allow_partition_table,
            sysfs: setup.sysfs,
            inner: Mutex::new(Inner {
                devices: BTreeMap::new(),
                history: Vec::new(),
                runs: BTreeMap::new(),
                next_run: 1,
            }),
            updates: broadcast::channel(BACKLOG).0,
        }
    }

    pub(crate) fn product(&self) -> &str {
        &self.report.product
    }

    pub(crate) fn version(&self) -> &str {
        &self.report.software_version
    }

    pub(crate) fn package_id(&self) -> &str {
        &self.report.package_id
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent enough data to show: keep serving.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Hears every change as a JSON message.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Arc<str>> {
        self.updates.subscribe()
    }

    fn send(&self, message: &Value) {
        // No page listening is no error.
        let _ = self.updates.send(message.to_string().into());
    }

    /// Everything a page shows, as one message.
    pub(crate) fn snapshot(&self) -> Value {
        let inner = self.lock();
        json!({
            "type": "snapshot",
            "package": self.package,
            "auto": self.auto,
            "devices": inner.devices.iter().map(|(t, d)| d.json(t)).collect::<Vec<_>>(),
            "history": inner.history.iter().map(Record::json).collect::<Vec<_>>(),
        })
    }

    /// The session's history.
    pub(crate) fn history(&self) -> Vec<Record> {
        self.lock().history.clone()
    }

    fn device_changed(&self, inner: &Inner, target: &str, event: Option<&Value>) {
        if let Some(device) = inner.devices.get(target) {
            self.send(&json!({"type": "device", "device": device.json(target), "event": event}));
        }
    }

    /// What discovery sees now: `(target, how it was found)`. New devices are identified (and
    /// flashed, with `--auto`); devices gone are removed unless an install still runs on them.
    pub(crate) fn seen(self: &Arc<Self>, found: &[(String, &'static str)]) {
        let mut inner = self.lock();
        let mut appeared = Vec::new();
        for (target, found_by) in found {
            match inner.devices.get_mut(target) {
                Some(device) => device.present = true,
                None => {
                    inner.devices.insert(target.clone(), Device::new(found_by));
                    appeared.push(target.clone());
                }
            }
        }
        let gone: Vec<String> = inner
            .devices
            .iter()
            .filter(|(t, d)| {
                !found.iter().any(|(f, _)| f == *t)
                    && !matches!(d.state, State::Flashing | State::Identifying)
            })
            .map(|(t, _)| t.clone())
            .collect();
        for target in gone {
            inner.devices.remove(&target);
            self.send(&json!({"type": "removed", "target": target}));
        }
        for target in &appeared {
            self.device_changed(&inner, target, None);
        }
        drop(inner);
        for target in appeared {
            let station = Arc::clone(self);
            let spawned = std::thread::Builder::new()
                .name("veriflash-identify".into())
                .spawn(move || {
                    station.identify(&target);
                    if station.auto {
                        let _ = station.flash(Some(std::slice::from_ref(&target)));
                    }
                });
            if spawned.is_err() {
                eprintln!("station: no thread to identify a device; it stays unidentified");
            }
        }
    }

    /// Reads `target`'s identity through its plugin, then leaves it ready.
    fn identify(&self, target: &str) {
        let registry = crate::plugins::configured_with(self.sysfs.as_deref());
        let identity = registry
            .and_then(|registry| {
                let mut session = registry
                    .open(target)
                    .map_err(veriflash_core::flash::device_error)?;
                session
                    .device_info()
                    .map_err(veriflash_core::flash::device_error)
            })
            .map(|info| {
                json!({
                    "chip": info.chipset,
                    "serial": info.id,
                    "product": info.product,
                    "hardware_revision": info.hardware_revision,
                    "version": info.installed_version,
                    "floor": info.security_floor,
                })
            });
        std::thread::sleep(SETTLE);
        let mut inner = self.lock();
        let Some(device) = inner.devices.get_mut(target) else {
            return;
        };
        match identity {
            Ok(identity) => {
                device.identity = Some(identity);
                device.identity_error = None;
            }
            Err(e) => device.identity_error = Some(error_json(&e)),
        }
        if device.state == State::Identifying {
            device.state = State::Ready;
        }
        self.device_changed(&inner, target, None);
    }

    /// Starts one install on `targets` (every device waiting when `None`: flash all).
    ///
    /// # Errors
    /// A [`Refusal`] naming the device that is unknown, gone or busy, or saying none waits.
    pub(crate) fn flash(
        self: &Arc<Self>,
        targets: Option<&[String]>,
    ) -> Result<Vec<String>, Refusal> {
        let mut inner = self.lock();
        let chosen: Vec<String> = match targets {
            Some(list) => {
                for target in list {
                    let Some(device) = inner.devices.get(target) else {
                        return Err(Refusal(format!("no device {target} is connected")));
                    };
                    if matches!(device.state, State::Flashing | State::Identifying) {
                        return Err(Refusal(format!(
                            "{target} is busy ({})",
                            device.state.name()
                        )));
                    }
                    if !device.present {
                        return Err(Refusal(format!("{target} is gone")));
                    }
                }
                list.to_vec()
            }
            None => inner
                .devices
                .iter()
                .filter(|(_, d)| d.present && matches!(d.state, State::Ready | State::Failed))
                .map(|(t, _)| t.clone())
                .collect(),
        };
        if chosen.is_empty() {
            return Err(Refusal("no device is waiting to be flashed".into()));
        }
        if chosen.len() > veriflash_core::factory::MAX_DEVICES {
            return Err(Refusal(format!(
                "at most {} devices at once",
                veriflash_core::factory::MAX_DEVICES
            )));
        }
        let run = inner.next_run;
        inner.next_run += 1;
        let cancel = CancelToken::new();
        inner.runs.insert(run, cancel.clone());
        let started = now_ms();
        for target in &chosen {
            if let Some(device) = inner.devices.get_mut(target) {
                device.state = State::Flashing;
                device.run = Some(run);
                device.phase = None;
                device.wrote = false;
                device.progress = None;
                device.result = None;
                device.started_ms = started;
                device.finished_ms = 0;
            }
            self.device_changed(&inner, target, None);
        }
        drop(inner);
        let station = Arc::clone(self);
        let targets = chosen.clone();
        std::thread::Builder::new()
            .name(format!("veriflash-run-{run}"))
            .spawn(move || station.install(run, &targets, cancel))
            .map_err(|e| {
                let mut inner = self.lock();
                inner.runs.remove(&run);
                for target in &chosen {
                    if let Some(device) = inner.devices.get_mut(target) {
                        device.state = State::Ready;
                    }
                }
                Refusal(format!("no thread to run the install: {e}"))
            })?;
        Ok(chosen)
    }

    /// Cancels the install `target` is part of, or every install.
    pub(crate) fn cancel(&self, target: Option<&str>) -> usize {
        let inner = self.lock();
        let runs: Vec<u64> = match target {
            Some(t) => inner
                .devices
                .get(t)
                .and_then(|d| (d.state == State::Flashing).then_some(d.run).flatten())
                .into_iter()
                .collect(),
            None => inner.runs.keys().copied().collect(),
        };
        for run in &runs {
            if let Some(token) = inner.runs.get(run) {
                token.cancel();
            }
        }
        runs.len()
    }

    /// Whether an install still runs.
    pub(crate) fn busy(&self) -> bool {
        !self.lock().runs.is_empty()
    }

    /// One install over `targets`: the updater's factory line, from the verified bytes.
    fn install(self: Arc<Self>, run: u64, targets: &[String], cancel: CancelToken) {
        let station = Arc::clone(&self);
        let labels = targets.to_vec();
        let mut lines = EventLines::default();
        let events = move |i: usize, event: &Event| {
            let Some(target) = labels.get(i) else {
                return;
            };
            let line = lines.event(i, event);
            station.on_event(target, event, line);
        };
        let report = Updater::builder(super::source(&self.bytes), self.trust.clone())
            .registry(crate::plugins::registry(
                self.sysfs.as_deref(),
                self.allow_partition_table,
                std::time::Duration::ZERO,
            ))
            .environment(crate::plugins::environment())
            .cancel(cancel)
            .reconnect(Reconnect::never())
            .events(events)
            .build()
            .and_then(|mut updater| updater.install_all(targets));
        let results: Vec<Result<(), Error>> = match report {
            Ok(report) => report.results.into_iter().map(|r| r.map(drop)).collect(),
            Err(e) => targets.iter().map(|_| Err(Error::copy(&e))).collect(),
        };
        let finished = now_ms();
        let mut inner = self.lock();
        inner.runs.remove(&run);
        for (target, result) in targets.iter().zip(&results) {
            let Some(device) = inner.devices.get_mut(target) else {
                continue;
            };
            let identity = |key: &str| {
                device
                    .identity
                    .as_ref()
                    .and_then(|i| i[key].as_str())
                    .unwrap_or("")
                    .to_owned()
            };
            let record = Record {
                device_serial: identity("serial"),
                target: target.clone(),
                chip: identity("chip"),
                package_id: self.report.package_id.clone(),
                product: self.report.product.clone(),
                version: self.report.software_version.clone(),
                result: match result {
                    Ok(()) => "installed",
                    Err(_) if !device.wrote => "refused",
                    Err(_) => "failed",
                },
                code: result.as_ref().err().map_or(0, Error::code),
                error: result
                    .as_ref()
                    .err()
                    .map_or_else(String::new, |e| e.message().to_owned()),
                started_ms: device.started_ms,
                finished_ms: if device.finished_ms == 0 {
                    finished
                } else {
                    device.finished_ms
                },
            };
            device.state = if result.is_ok() {
                State::Succeeded
            } else {
                State::Failed
            };
            device.phase = None;
            device.result = Some(match result {
                Ok(()) => json!({"ok": true, "result": record.result, "code": 0}),
                Err(e) => json!({"ok": false, "result": record.result, "error": error_json(e)}),
            });
            device.run = None;
            let message = json!({"type": "history", "record": record.json()});
            if inner.history.len() < MAX_HISTORY {
                inner.history.push(record);
            }
            self.send(&message);
            self.device_changed(&inner, target, None);
        }
    }

    /// One event of `target`'s install, with the CLI's JSON line for it.
    fn on_event(&self, target: &str, event: &Event, line: Value) {
        let mut inner = self.lock();
        let Some(device) = inner.devices.get_mut(target) else {
            return;
        };
        match event {
            Event::PhaseStarted(phase) => {
                device.phase = Some(phase.name().to_owned());
                // Storage is touched from staging on; a device stopped before was refused.
                if matches!(
                    phase,
                    Phase::Staging | Phase::Flash | Phase::ReadBack | Phase::Commit
                ) {
                    device.wrote = true;
                }
            }
            Event::Finished(_) => device.finished_ms = now_ms(),
            Event::Progress { done, total, .. } => {
                let due = device
                    .last_progress_sent
                    .is_none_or(|at| at.elapsed() >= PROGRESS_EVERY);
                device.progress = Some(line.clone());
                if !due && done < total {
                    return;
                }
                device.last_progress_sent = Some(Instant::now());
            }
            _ => {}
        }
        self.device_changed(&inner, target, Some(&line));
    }
}

/// The package as the page shows it: what it is, who signed it, each verification step, and
/// whether this station lets it rewrite a modem's partition table (a technician should see
/// that before a click, not learn it from a refusal).
fn package_json(report: &VerifyReport, allow_partition_table: bool) -> Value {
    let chunks: u64 = report.images.iter().map(|i| i.chunks).sum();
    let bytes: u64 = report.images.iter().map(|i| i.size).sum();
    let whole = report.images.iter().all(|i| i.sha256_checked);
    json!({
        "product": report.product,
        "chipset": report.chipset,
        "hardware_revisions": report.hardware_revisions,
        "version": report.software_version,
        "security_version": report.security_version,
        "package_id": report.package_id,
        "signers": report.signers,
        "partition_table_rewrites": allow_partition_table,
        "images": report.images.iter().map(|i| json!({
            "name": i.name, "partition": i.partition, "size": i.size, "chunks": i.chunks,
        })).collect::<Vec<_>>(),
        "steps": [
            {"step": "signature", "ok": true,
             "detail": format!("signed by {} trusted key(s)", report.signers.len())},
            {"step": "integrity", "ok": true,
             "detail": format!(
                 "{chunks} chunk(s) of {} image(s), {bytes} bytes, match their signed digests{}",
                 report.images.len(),
                 if whole { "; every whole image's SHA-256 too" } else { "" })},
            {"step": "verified", "ok": true,
             "detail": "these verified bytes are what every device gets"},
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_iso_8601_utc() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(iso8601(1_796_534_125_000), "2026-12-06T05:15:25.000Z");
    }

    #[test]
    fn csv_fields_are_quoted_and_formulas_made_inert() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("=cmd|' /C calc'!A0"), "'=cmd|' /C calc'!A0");
        assert_eq!(csv_field("-1,2"), "\"'-1,2\"");
    }
}
