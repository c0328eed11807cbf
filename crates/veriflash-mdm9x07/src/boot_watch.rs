//! Seeing a flashed modem come back in normal mode after the commit's `power reset`: the
//! [`veriflash_plugin::BootWatch`] of [`crate::Mdm9x07Plugin`] (`Plugin::boot_watch`).
//!
//! A modem that boots its new software re-enumerates on USB as a normal-mode modem of a DIAG
//! vendor ([`DeviceMode::Diag`]: Qualcomm or Quectel); one whose new software does not start
//! stays in, or falls back to, download mode (`05C6:9008`). The watch scans the bus
//! ([`crate::discover::Sysfs`]) before the install, to learn which modems were already running
//! and — for a tty target — at which USB location the flashed one sits, then polls every
//! [`POLL_INTERVAL`] until ours is back or the timeout passes.
//!
//! The decisions are pure functions and the waiting loop takes its clock as a parameter, so
//! every branch is tested here without sleeping.

use std::path::Path;
use std::time::{Duration, Instant};

use veriflash_plugin::{BootWatch, PluginError};

use crate::discover::{DIAG_VENDORS, DeviceMode, Discover, FoundDevice, Sysfs};
use crate::target::Target;

/// How often the bus is scanned while waiting: often enough that a re-enumerated modem is
/// found within a second, rarely enough not to load the bus or the log.
pub const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// What a scan that found no booted modem says (a scanner error says something else).
const NOT_YET: &str = "no normal-mode modem yet";

/// Time, as the waiting loop sees it.
pub(crate) trait Clock {
    /// Now.
    fn now(&self) -> Instant;
    /// Waits `duration`.
    fn sleep(&self, duration: Duration);
}

/// The real clock.
pub(crate) struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn sleep(&self, duration: Duration) {
        std::thread::sleep(duration);
    }
}

/// How a wait ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Waited<T> {
    /// What the probe found.
    Found(T),
    /// The timeout passed; the probe's last complaint.
    TimedOut(String),
    /// The caller cancelled.
    Cancelled,
}

/// Calls `probe` every `interval` until it finds something, `timeout` passes or `cancelled`
/// says so. The probe runs at least once, also with a zero timeout; a probe that is itself
/// slow counts against `timeout`.
pub(crate) fn wait_until<T>(
    probe: &mut dyn FnMut() -> Result<T, String>,
    timeout: Duration,
    interval: Duration,
    clock: &dyn Clock,
    cancelled: &dyn Fn() -> bool,
) -> Waited<T> {
    let start = clock.now();
    loop {
        if cancelled() {
            return Waited::Cancelled;
        }
        let last = match probe() {
            Ok(found) => return Waited::Found(found),
            Err(e) => e,
        };
        let elapsed = clock.now().saturating_duration_since(start);
        let Some(left) = timeout.checked_sub(elapsed).filter(|l| !l.is_zero()) else {
            return Waited::TimedOut(last);
        };
        if cancelled() {
            return Waited::Cancelled;
        }
        clock.sleep(interval.min(left));
    }
}

/// Where the flashed modem is expected to reappear in normal mode: the USB location the target
/// names, or — for a tty — the location of the download-mode device whose tty it is (a udev
/// `/dev/serial/by-id/…` link resolved by the caller into `tty`), when the scan before the
/// flash saw it. `None`: anywhere.
pub(crate) fn boot_location(
    target: &Target,
    tty: Option<&Path>,
    before: &[FoundDevice],
) -> Option<String> {
    match target {
        Target::Usb(Some(location)) => Some(location.clone()),
        Target::Serial(_) => {
            let tty = tty?;
            before
                .iter()
                .find(|d| d.mode == DeviceMode::Edl && d.tty.as_deref() == Some(tty))
                .map(|d| d.location.clone())
        }
        Target::Usb(None) | Target::Emulator(_) => None,
    }
}

/// Whether `d` is the flashed modem back in normal mode: a Qualcomm or Quectel modem
/// ([`DeviceMode::Diag`]) at `location`, or — when the location is unknown — at a location
/// where no normal-mode modem was before the flash (one that was is another modem, already
/// running: ours was in download mode).
pub(crate) fn is_booted(d: &FoundDevice, location: Option<&str>, before: &[FoundDevice]) -> bool {
    d.mode == DeviceMode::Diag
        && match location {
            Some(l) => d.location == l,
            None => !before
                .iter()
                .any(|b| b.mode == DeviceMode::Diag && b.location == d.location),
        }
}

/// `Quectel 2c7c:0125` for messages.
pub(crate) fn describe(d: &FoundDevice) -> String {
    let vendor = DIAG_VENDORS
        .iter()
        .find(|(v, _)| *v == d.vendor_id)
        .map_or("USB", |(_, name)| name);
    format!("{vendor} {:04x}:{:04x}", d.vendor_id, d.product_id)
}

/// The wait for a flashed modem to reappear in normal mode, started before the install.
#[derive(Clone, Debug)]
pub struct Mdm9x07BootWatch {
    scanner: Sysfs,
    /// Where it should reappear, when known.
    location: Option<String>,
    /// The modems on the bus before the flash.
    before: Vec<FoundDevice>,
}

impl Mdm9x07BootWatch {
    /// Looks at the bus through `scanner` before the flash of `target`. An unreadable bus is an
    /// empty one here: the wait itself reports the scanner's error if it persists.
    #[must_use]
    pub fn new(target: &Target, scanner: Sysfs) -> Self {
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

    /// The USB location (`BUS-PORT[.PORT…]`) where the modem is expected back, when known;
    /// otherwise any location where no normal-mode modem was before the flash counts.
    #[must_use]
    pub fn location(&self) -> Option<&str> {
        self.location.as_deref()
    }

    /// [`BootWatch::wait`] on `clock`, scanning every `interval`.
    fn wait_with(
        &self,
        timeout: Duration,
        interval: Duration,
        clock: &dyn Clock,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<String, PluginError> {
        let location = self.location.as_deref();
        let mut probe = || -> Result<FoundDevice, String> {
            self.scanner
                .scan()
                .map_err(|e| e.to_string())?
                .into_iter()
                .find(|d| is_booted(d, location, &self.before))
                .ok_or_else(|| NOT_YET.to_owned())
        };
        let found = match wait_until(&mut probe, timeout, interval, clock, cancelled) {
            Waited::Found(d) => d,
            Waited::TimedOut(last) => return Err(self.not_back(timeout, last)),
            Waited::Cancelled => {
                return Err(PluginError::Transport(std::io::Error::new(
                    std::io::ErrorKind::Interrupted,
                    "stopped waiting for the modem to come back in normal mode; the install itself completed",
                )));
            }
        };
        let tty = found.tty.as_ref().map(|t| t.display().to_string());
        Ok(format!(
            "{} at USB {}, DIAG port {}",
            describe(&found),
            found.location,
            tty.as_deref()
                .unwrap_or("(no tty: is the qcserial or option driver loaded?)")
        ))
    }

    /// The timeout error, with what the bus shows now and what to do: the install had
    /// committed, which a timeout's usual remedy cannot know.
    fn not_back(&self, timeout: Duration, last: String) -> PluginError {
        let location = self.location.as_deref();
        let at = location.map(|l| format!(" at USB {l}")).unwrap_or_default();
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
        PluginError::Timeout(format!(
            "the package was installed and the modem reset, but it did not come back in normal mode{at} within {} s{seen}. \
             Check `veriflash devices` or `lsusb`; power-cycle the modem, and if it stays in download mode run the flash again (docs/MDM9X07.md §8)",
            timeout.as_secs()
        ))
    }
}

impl BootWatch for Mdm9x07BootWatch {
    fn wait(
        &mut self,
        timeout: Duration,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<String, PluginError> {
        self.wait_with(timeout, POLL_INTERVAL, &SystemClock, cancelled)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use std::cell::Cell;
    use std::path::PathBuf;

    use super::*;

    /// A clock that moves only when slept on, and runs `on_sleep` with the number of the sleep
    /// (from 1) each time: what happens on the bus while the watch waits.
    struct FakeClock<'a> {
        start: Instant,
        elapsed: Cell<Duration>,
        sleeps: Cell<u32>,
        on_sleep: &'a dyn Fn(u32),
    }

    impl<'a> FakeClock<'a> {
        fn new() -> Self {
            Self::with(&|_| {})
        }

        fn with(on_sleep: &'a dyn Fn(u32)) -> Self {
            Self {
                start: Instant::now(),
                elapsed: Cell::new(Duration::ZERO),
                sleeps: Cell::new(0),
                on_sleep,
            }
        }
    }

    impl Clock for FakeClock<'_> {
        fn now(&self) -> Instant {
            self.start + self.elapsed.get()
        }
        fn sleep(&self, duration: Duration) {
            self.elapsed.set(self.elapsed.get() + duration);
            self.sleeps.set(self.sleeps.get() + 1);
            (self.on_sleep)(self.sleeps.get());
        }
    }

    fn never() -> bool {
        false
    }

    fn found(location: &str, mode: DeviceMode, tty: Option<&str>) -> FoundDevice {
        FoundDevice {
            location: location.into(),
            vendor_id: 0x05C6,
            product_id: if mode == DeviceMode::Edl {
                0x9008
            } else {
                0x9025
            },
            mode,
            tty: tty.map(PathBuf::from),
            product: None,
            serial: None,
        }
    }

    /// Puts a USB device into a sysfs-like tree (replacing what was at `name`), with its tty
    /// under interface 0.
    fn plug(root: &Path, name: &str, vid: &str, pid: &str, tty: Option<&str>) {
        let dir = root.join(name);
        let _ = std::fs::remove_dir_all(&dir);
        let intf = dir.join(format!("{name}:1.0"));
        std::fs::create_dir_all(&intf).unwrap();
        std::fs::write(dir.join("idVendor"), format!("{vid}\n")).unwrap();
        std::fs::write(dir.join("idProduct"), format!("{pid}\n")).unwrap();
        std::fs::write(intf.join("bInterfaceNumber"), "00\n").unwrap();
        if let Some(t) = tty {
            std::fs::create_dir_all(intf.join(t)).unwrap();
        }
    }

    #[test]
    fn waits_until_the_probe_finds_the_device() {
        let clock = FakeClock::new();
        let mut tries = 0;
        let waited = wait_until(
            &mut || {
                tries += 1;
                if tries < 4 {
                    Err(format!("absent {tries}"))
                } else {
                    Ok("modem")
                }
            },
            Duration::from_secs(60),
            POLL_INTERVAL,
            &clock,
            &never,
        );
        assert_eq!(waited, Waited::Found("modem"));
        assert_eq!(tries, 4);
        assert_eq!(clock.sleeps.get(), 3);
        assert_eq!(clock.elapsed.get(), POLL_INTERVAL * 3);
    }

    #[test]
    fn a_device_that_never_answers_times_out_with_the_last_complaint() {
        let clock = FakeClock::new();
        let mut tries = 0u32;
        let waited: Waited<()> = wait_until(
            &mut || {
                tries += 1;
                Err(format!("no such file ({tries})"))
            },
            Duration::from_millis(1200),
            POLL_INTERVAL,
            &clock,
            &never,
        );
        // Tries at 0, 500 and 1000 ms, then a last short sleep to 1200 ms and a final try.
        assert_eq!(waited, Waited::TimedOut("no such file (4)".into()));
        assert_eq!(clock.elapsed.get(), Duration::from_millis(1200));
    }

    #[test]
    fn a_zero_timeout_tries_once() {
        let clock = FakeClock::new();
        let mut tries = 0;
        let waited: Waited<()> = wait_until(
            &mut || {
                tries += 1;
                Err("gone".into())
            },
            Duration::ZERO,
            POLL_INTERVAL,
            &clock,
            &never,
        );
        assert_eq!(waited, Waited::TimedOut("gone".into()));
        assert_eq!((tries, clock.sleeps.get()), (1, 0));
    }

    #[test]
    fn a_slow_probe_counts_against_the_timeout() {
        let clock = FakeClock::new();
        let mut tries = 0;
        let waited: Waited<()> = wait_until(
            &mut || {
                tries += 1;
                // A scan that takes 5 s (a hung sysfs read).
                clock
                    .elapsed
                    .set(clock.elapsed.get() + Duration::from_secs(5));
                Err("slow".into())
            },
            Duration::from_secs(12),
            POLL_INTERVAL,
            &clock,
            &never,
        );
        assert!(matches!(waited, Waited::TimedOut(_)));
        assert_eq!(tries, 3);
    }

    #[test]
    fn cancelling_ends_the_wait() {
        let clock = FakeClock::new();
        let cancel = Cell::new(false);
        let mut tries = 0;
        let waited: Waited<()> = wait_until(
            &mut || {
                tries += 1;
                if tries == 2 {
                    cancel.set(true);
                }
                Err("absent".into())
            },
            Duration::from_secs(60),
            POLL_INTERVAL,
            &clock,
            &|| cancel.get(),
        );
        assert_eq!(waited, Waited::Cancelled);
        assert_eq!(tries, 2);
        // Already cancelled: the bus is not even scanned.
        let waited: Waited<()> = wait_until(
            &mut || panic!("probed after cancel"),
            Duration::from_secs(60),
            POLL_INTERVAL,
            &clock,
            &|| cancel.get(),
        );
        assert_eq!(waited, Waited::Cancelled);
    }

    #[test]
    fn the_boot_location_comes_from_the_target_or_the_tty_seen_before_the_flash() {
        let before = [
            found("1-1.2", DeviceMode::Edl, Some("/dev/ttyUSB3")),
            found("2-1", DeviceMode::Diag, Some("/dev/ttyUSB0")),
        ];
        assert_eq!(
            boot_location(&Target::Usb(Some("3-4".into())), None, &before).as_deref(),
            Some("3-4")
        );
        let serial = Target::Serial("/dev/serial/by-id/usb-Qualcomm".into());
        assert_eq!(
            boot_location(&serial, Some(Path::new("/dev/ttyUSB3")), &before).as_deref(),
            Some("1-1.2")
        );
        // The tty of a normal-mode modem is not the flashed device's.
        assert_eq!(
            boot_location(&serial, Some(Path::new("/dev/ttyUSB0")), &before),
            None
        );
        assert_eq!(boot_location(&serial, None, &before), None);
        assert_eq!(boot_location(&Target::Usb(None), None, &before), None);
    }

    #[test]
    fn the_booted_modem_is_a_normal_mode_one_at_its_location_or_a_new_one() {
        let other = found("2-1", DeviceMode::Diag, Some("/dev/ttyUSB0"));
        let before = [found("1-1.2", DeviceMode::Edl, None), other.clone()];
        let back = found("1-1.2", DeviceMode::Diag, Some("/dev/ttyUSB4"));
        let still_edl = found("1-1.2", DeviceMode::Edl, None);
        assert!(is_booted(&back, Some("1-1.2"), &before));
        assert!(!is_booted(&still_edl, Some("1-1.2"), &before));
        assert!(!is_booted(&other, Some("1-1.2"), &before));
        // Location unknown: a modem that was already running is not ours.
        assert!(is_booted(&back, None, &before));
        assert!(!is_booted(&other, None, &before));
        assert_eq!(describe(&back), "Qualcomm 05c6:9025");
        let quectel = FoundDevice {
            vendor_id: 0x2C7C,
            product_id: 0x0125,
            ..back
        };
        assert_eq!(describe(&quectel), "Quectel 2c7c:0125");
    }

    #[test]
    fn finds_the_modem_when_it_reappears_in_normal_mode_on_the_bus() {
        let bus = tempfile::tempdir().unwrap();
        let root = bus.path();
        plug(root, "1-1.2", "05c6", "9008", Some("ttyUSB3"));
        // Another modem, already running: not ours, although it is in normal mode.
        plug(root, "2-1", "2c7c", "0125", Some("ttyUSB0"));
        let watch = Mdm9x07BootWatch::new(&Target::Usb(Some("1-1.2".into())), Sysfs::new(root));
        assert_eq!(watch.location(), Some("1-1.2"));
        // The reset: gone from the bus at the first sleep, back in normal mode at the third.
        let bus_changes = |sleep: u32| match sleep {
            1 => std::fs::remove_dir_all(root.join("1-1.2")).unwrap(),
            3 => plug(root, "1-1.2", "05c6", "9025", Some("ttyUSB4")),
            _ => {}
        };
        let clock = FakeClock::with(&bus_changes);
        let back = watch
            .wait_with(Duration::from_secs(60), POLL_INTERVAL, &clock, &never)
            .unwrap();
        assert_eq!(
            back,
            "Qualcomm 05c6:9025 at USB 1-1.2, DIAG port /dev/ttyUSB4"
        );
        assert_eq!(clock.sleeps.get(), 3);
        assert_eq!(clock.elapsed.get(), POLL_INTERVAL * 3);
    }

    #[test]
    fn a_modem_at_an_unknown_location_is_the_one_that_was_not_running_before() {
        let bus = tempfile::tempdir().unwrap();
        let root = bus.path();
        plug(root, "2-1", "2c7c", "0125", Some("ttyUSB0"));
        let watch = Mdm9x07BootWatch::new(&Target::Usb(None), Sysfs::new(root));
        assert_eq!(watch.location(), None);
        let bus_changes = |sleep: u32| {
            if sleep == 2 {
                // qcserial not loaded: no tty.
                plug(root, "3-1", "05c6", "9025", None);
            }
        };
        let clock = FakeClock::with(&bus_changes);
        let back = watch
            .wait_with(Duration::from_secs(60), POLL_INTERVAL, &clock, &never)
            .unwrap();
        assert!(
            back.starts_with("Qualcomm 05c6:9025 at USB 3-1, DIAG port (no tty"),
            "{back}"
        );
    }

    #[test]
    fn a_modem_that_stays_in_download_mode_times_out_and_says_so() {
        let bus = tempfile::tempdir().unwrap();
        let root = bus.path();
        plug(root, "1-1.2", "05c6", "9008", Some("ttyUSB3"));
        let watch = Mdm9x07BootWatch::new(&Target::Usb(Some("1-1.2".into())), Sysfs::new(root));
        let clock = FakeClock::new();
        let err = watch
            .wait_with(Duration::from_secs(3), POLL_INTERVAL, &clock, &never)
            .unwrap_err();
        let PluginError::Timeout(message) = &err else {
            panic!("not a timeout: {err:?}");
        };
        assert!(
            message.contains("did not come back in normal mode at USB 1-1.2 within 3 s"),
            "{message}"
        );
        assert!(
            message.contains("a download-mode device (05C6:9008) is at USB 1-1.2"),
            "{message}"
        );
        // Scanned at 0, 0.5, …, 3 s.
        assert_eq!(clock.elapsed.get(), Duration::from_secs(3));
        assert_eq!(clock.sleeps.get(), 6);
    }

    #[test]
    fn a_bus_that_cannot_be_read_times_out_with_the_scanners_error() {
        let bus = tempfile::tempdir().unwrap();
        // A file where the directory of USB devices should be.
        let root = bus.path().join("devices");
        std::fs::write(&root, b"").unwrap();
        let watch = Mdm9x07BootWatch::new(&Target::Usb(None), Sysfs::new(&root));
        let err = watch
            .wait_with(Duration::ZERO, POLL_INTERVAL, &FakeClock::new(), &never)
            .unwrap_err();
        assert!(
            matches!(&err, PluginError::Timeout(m) if m.contains("(last scan: ")),
            "{err}"
        );
    }

    #[test]
    fn the_plugin_watches_real_modems_on_its_sysfs_root() {
        use veriflash_plugin::Plugin as _;

        let bus = tempfile::tempdir().unwrap();
        let root = bus.path();
        plug(root, "1-1.2", "05c6", "9008", Some("ttyUSB3"));
        let plugin = crate::Mdm9x07Plugin::default().with_sysfs(root);
        assert!(plugin.boot_watch("emulator").is_none());
        assert!(plugin.boot_watch("floppy").is_none());
        // Started before the install: it has seen the modem in download mode at 1-1.2.
        let mut watch = plugin.boot_watch("usb:1-1.2").unwrap();
        // A zero timeout scans once: still in download mode.
        let err = watch.wait(Duration::ZERO, &never).unwrap_err();
        assert!(
            matches!(&err, PluginError::Timeout(m) if m.contains("download-mode device (05C6:9008) is at USB 1-1.2")),
            "{err:?}"
        );
        // Booted: back at its location in normal mode.
        plug(root, "1-1.2", "05c6", "9025", Some("ttyUSB4"));
        assert_eq!(
            watch.wait(Duration::ZERO, &never).unwrap(),
            "Qualcomm 05c6:9025 at USB 1-1.2, DIAG port /dev/ttyUSB4"
        );
        // Another location is not ours.
        let mut elsewhere = plugin.boot_watch("usb:3-1").unwrap();
        assert!(matches!(
            elsewhere.wait(Duration::ZERO, &never),
            Err(PluginError::Timeout(_))
        ));
    }

    #[test]
    fn a_cancelled_wait_says_the_install_completed() {
        let bus = tempfile::tempdir().unwrap();
        let watch = Mdm9x07BootWatch::new(&Target::Usb(None), Sysfs::new(bus.path()));
        let err = watch
            .wait_with(
                Duration::from_secs(60),
                POLL_INTERVAL,
                &FakeClock::new(),
                &|| true,
            )
            .unwrap_err();
        assert!(
            matches!(&err, PluginError::Transport(e) if e.kind() == std::io::ErrorKind::Interrupted),
            "{err:?}"
        );
        assert!(
            err.to_string().contains("the install itself completed"),
            "{err}"
        );
    }
}
