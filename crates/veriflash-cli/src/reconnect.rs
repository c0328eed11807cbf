//! Getting a real modem back: re-finding it in download mode after the connection was lost
//! mid-flash (`flash --reconnect`), and seeing it come back in normal mode after the flash
//! (`flash --wait-boot`).
//!
//! A single-slot MDM9x07 cut off by a pulled cable or a reset falls back to emergency download
//! mode and re-enumerates; the PC-side journal (`veriflash_mdm9x07` session, `begin`) makes a
//! second run skip what the first one finished. So instead of leaving the user to notice and
//! re-run, `flash` waits for the device to answer again and runs the whole install once more.
//!
//! The decisions are pure functions and the waiting loop takes its [`Clock`] as a parameter,
//! so every branch is tested here without sleeping; `flash.rs` does the I/O.

use std::path::Path;
use std::time::{Duration, Instant};

use veriflash_core::{CancelToken, ErrorKind};
use veriflash_mdm9x07::discover::{DIAG_VENDORS, DeviceMode, FoundDevice};
use veriflash_mdm9x07::target::Target;

/// How many times one `flash` re-finds the device. A modem that keeps dropping off the bus is
/// a cable or power problem a fourth run will not fix; the user is told instead.
pub(crate) const MAX_RECONNECTS: u32 = 3;

/// How often the target is tried while waiting: often enough that a re-enumerated modem is
/// found within a second, rarely enough not to load the bus or the log.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// The default of `flash --reconnect`, in seconds: a power cycle and the boot ROM's
/// enumeration take seconds; a person re-plugging a cable may need most of a minute.
pub(crate) const DEFAULT_RECONNECT_SECS: u64 = 60;

/// The longest wait either flag accepts (a day): a bound, so no arithmetic on a deadline can
/// overflow and a typo cannot make the tool wait for years.
pub(crate) const MAX_WAIT_SECS: u64 = 86_400;

/// The target when it is a real modem reached over USB or its qcserial tty: the only targets
/// that can drop off and come back. `file:` devices and `mdm9x07:emulator` (a fresh in-memory
/// device on every open) never do.
pub(crate) fn real_modem(target: &str) -> Option<Target> {
    let rest = target.strip_prefix("mdm9x07:")?;
    match Target::parse(rest).ok()? {
        Target::Emulator => None,
        t @ (Target::Serial(_) | Target::Usb(_)) => Some(t),
    }
}

/// Whether a failed install should wait for the device and run again.
///
/// Only a lost link (`transport_error`, `timeout`, `interrupted`) is worth waiting for, and only
/// once the device had answered as a download-mode modem: a tty that never was one (a typo, the
/// modem's normal-mode port) must fail at once as before, not after a minute of polling. The
/// number of reconnects is bounded by [`MAX_RECONNECTS`].
pub(crate) fn should_reconnect(kind: ErrorKind, device_answered: bool, reconnects: u32) -> bool {
    matches!(
        kind,
        ErrorKind::TransportError | ErrorKind::Timeout | ErrorKind::Interrupted
    ) && device_answered
        && reconnects < MAX_RECONNECTS
}

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
    /// The user pressed Ctrl-C.
    Cancelled,
}

/// Calls `probe` every `interval` until it finds something, `timeout` passes or `cancel` is
/// set. The probe runs at least once, also with a zero timeout; a probe that is itself slow
/// (a tty that takes its whole protocol timeout to stay silent) counts against `timeout`.
pub(crate) fn wait_until<T>(
    probe: &mut dyn FnMut() -> Result<T, String>,
    timeout: Duration,
    interval: Duration,
    clock: &dyn Clock,
    cancel: &CancelToken,
) -> Waited<T> {
    let start = clock.now();
    loop {
        if cancel.is_cancelled() {
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
        if cancel.is_cancelled() {
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
        Target::Usb(None) | Target::Emulator => None,
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use std::cell::Cell;
    use std::path::PathBuf;

    use super::*;

    /// A clock that moves only when slept on.
    struct FakeClock {
        start: Instant,
        elapsed: Cell<Duration>,
        sleeps: Cell<u32>,
    }

    impl FakeClock {
        fn new() -> Self {
            Self {
                start: Instant::now(),
                elapsed: Cell::new(Duration::ZERO),
                sleeps: Cell::new(0),
            }
        }
    }

    impl Clock for FakeClock {
        fn now(&self) -> Instant {
            self.start + self.elapsed.get()
        }
        fn sleep(&self, duration: Duration) {
            self.elapsed.set(self.elapsed.get() + duration);
            self.sleeps.set(self.sleeps.get() + 1);
        }
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

    #[test]
    fn only_real_modems_can_come_back() {
        assert_eq!(
            real_modem("mdm9x07:serial:/dev/serial/by-id/usb-Qualcomm_QUSB"),
            Some(Target::Serial("/dev/serial/by-id/usb-Qualcomm_QUSB".into()))
        );
        assert_eq!(real_modem("mdm9x07:usb"), Some(Target::Usb(None)));
        assert_eq!(
            real_modem("mdm9x07:usb:1-1.2"),
            Some(Target::Usb(Some("1-1.2".into())))
        );
        for other in [
            "mdm9x07:emulator",
            "file:device.img",
            "mdm9x07:floppy",
            "usb",
        ] {
            assert_eq!(real_modem(other), None, "{other}");
        }
    }

    #[test]
    fn reconnects_only_after_a_lost_link_to_a_device_that_had_answered() {
        for kind in [
            ErrorKind::TransportError,
            ErrorKind::Timeout,
            ErrorKind::Interrupted,
        ] {
            assert!(should_reconnect(kind, true, 0), "{kind:?}");
            assert!(should_reconnect(kind, true, MAX_RECONNECTS - 1), "{kind:?}");
            assert!(!should_reconnect(kind, true, MAX_RECONNECTS), "{kind:?}");
            // A port that never spoke Sahara: fail at once, as before.
            assert!(!should_reconnect(kind, false, 0), "{kind:?}");
        }
        for kind in [
            ErrorKind::Cancelled,
            ErrorKind::ReadBackMismatch,
            ErrorKind::DeviceError,
            ErrorKind::WrongChipset,
            ErrorKind::NotAuthentic,
            ErrorKind::Io,
        ] {
            assert!(!should_reconnect(kind, true, 0), "{kind:?}");
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
            &CancelToken::new(),
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
            &CancelToken::new(),
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
            &CancelToken::new(),
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
                // A tty that stays silent for its whole protocol timeout.
                clock
                    .elapsed
                    .set(clock.elapsed.get() + Duration::from_secs(5));
                Err("no HELLO".into())
            },
            Duration::from_secs(12),
            POLL_INTERVAL,
            &clock,
            &CancelToken::new(),
        );
        assert!(matches!(waited, Waited::TimedOut(_)));
        assert_eq!(tries, 3);
    }

    #[test]
    fn ctrl_c_ends_the_wait() {
        let clock = FakeClock::new();
        let cancel = CancelToken::new();
        let mut tries = 0;
        let waited: Waited<()> = wait_until(
            &mut || {
                tries += 1;
                if tries == 2 {
                    cancel.cancel();
                }
                Err("absent".into())
            },
            Duration::from_secs(60),
            POLL_INTERVAL,
            &clock,
            &cancel,
        );
        assert_eq!(waited, Waited::Cancelled);
        assert_eq!(tries, 2);
        // Already cancelled: the device is not even tried.
        let waited: Waited<()> = wait_until(
            &mut || panic!("probed after Ctrl-C"),
            Duration::from_secs(60),
            POLL_INTERVAL,
            &clock,
            &cancel,
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
    }
}
