//! Finding modems on USB: download-mode (`05C6:9008`) devices and normal-mode Qualcomm
//! modems whose DIAG port can switch them, through a [`Discover`] trait so everything above it
//! is tested without hardware. [`Sysfs`] is the Linux implementation: it reads
//! `/sys/bus/usb/devices/*/{idVendor,idProduct}` and finds the tty (`ttyUSBn` from qcserial
//! or option, `ttyACMn`) under the device's interfaces; its root is a parameter, so tests
//! point it at a fake tree.
//!
//! [`wait_for_edl`] is the "wait for the device to re-enumerate" step after a DIAG switch or
//! after an interrupted flash: it polls the scanner until the device shows up or the timeout
//! passes — a clear [`Error::Timeout`], never an endless wait.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::Error;

/// Qualcomm's USB vendor id.
pub const QUALCOMM_VID: u16 = 0x05C6;
/// The product id of the boot ROM's emergency download mode (Sahara).
pub const EDL_PID: u16 = 0x9008;
/// Vendors whose normal-mode modems expose a Qualcomm DIAG port: Qualcomm reference designs
/// and Quectel (as linux-msm/qdl's `diag_switch.h` lists them).
pub const DIAG_VENDORS: [(u16, &str); 2] = [(QUALCOMM_VID, "Qualcomm"), (0x2C7C, "Quectel")];
/// The default sysfs directory of USB devices.
pub const SYSFS_USB_DEVICES: &str = "/sys/bus/usb/devices";
/// The most directory entries a scan looks at (a bound against a strange sysfs).
pub const MAX_SCAN_ENTRIES: usize = 4096;
/// The longest sysfs attribute read.
const MAX_ATTR_LEN: u64 = 256;

/// What a found device is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceMode {
    /// Emergency download mode (`05C6:9008`): Sahara, ready to flash.
    Edl,
    /// A normal-mode modem of a DIAG vendor: its DIAG port can switch it to download mode.
    Diag,
}

impl DeviceMode {
    /// A short name (`edl`, `diag`).
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Edl => "edl",
            Self::Diag => "diag",
        }
    }
}

/// A modem found on USB.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FoundDevice {
    /// The USB location, `BUS-PORT[.PORT…]` as sysfs names it (e.g. `1-1.2`).
    pub location: String,
    /// USB vendor id.
    pub vendor_id: u16,
    /// USB product id.
    pub product_id: u16,
    /// Download mode or normal mode.
    pub mode: DeviceMode,
    /// The serial tty of its lowest-numbered interface that has one (for
    /// [`DeviceMode::Diag`]: interface 0, the DIAG port on most modems, but that is a
    /// convention, not a certainty), if a driver created one.
    pub tty: Option<PathBuf>,
    /// The USB product string, if the device has one.
    pub product: Option<String>,
    /// The USB serial number string, if the device has one.
    pub serial: Option<String>,
}

/// Something that lists the modems attached now.
pub trait Discover {
    /// The modems attached now.
    ///
    /// # Errors
    /// [`Error::Transport`] when the system's device list cannot be read.
    fn scan(&self) -> Result<Vec<FoundDevice>, Error>;
}

/// The Linux sysfs scanner.
#[derive(Clone, Debug)]
pub struct Sysfs {
    root: PathBuf,
}

impl Default for Sysfs {
    fn default() -> Self {
        Self::new(SYSFS_USB_DEVICES)
    }
}

/// Reads a small sysfs attribute, trimmed.
fn attr(dir: &Path, name: &str) -> Option<String> {
    use std::io::Read as _;
    let mut s = String::new();
    std::fs::File::open(dir.join(name))
        .ok()?
        .take(MAX_ATTR_LEN)
        .read_to_string(&mut s)
        .ok()?;
    let t = s.trim();
    (!t.is_empty()).then(|| t.to_owned())
}

fn hex_attr(dir: &Path, name: &str) -> Option<u16> {
    u16::from_str_radix(&attr(dir, name)?, 16).ok()
}

/// Whether `name` is a USB device (not a root hub `usbN`, not an interface `1-1:1.0`).
fn is_device_name(name: &str) -> bool {
    let mut parts = name.splitn(2, '-');
    let bus = parts.next().unwrap_or("");
    let ports = parts.next().unwrap_or("");
    !bus.is_empty()
        && bus.bytes().all(|b| b.is_ascii_digit())
        && !ports.is_empty()
        && ports.bytes().all(|b| b.is_ascii_digit() || b == b'.')
}

fn tty_names(dir: &Path) -> Vec<String> {
    let mut names = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return names;
    };
    for e in entries.take(MAX_SCAN_ENTRIES).flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        if n.starts_with("ttyUSB") || n.starts_with("ttyACM") {
            names.push(n);
        } else if n == "tty" {
            // cdc-acm puts its tty one level down: <interface>/tty/ttyACM0.
            names.extend(tty_names(&e.path()));
        }
    }
    names.sort();
    names
}

impl Sysfs {
    /// A scanner of `root` (normally [`SYSFS_USB_DEVICES`]).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The tty of the lowest-numbered interface of device `name` that has one.
    fn tty_of(&self, name: &str) -> Option<PathBuf> {
        let mut interfaces: Vec<(u32, PathBuf)> = Vec::new();
        let prefix = format!("{name}:");
        let dir = self.root.join(name);
        // Interfaces appear both under the device and at the top level of /sys/bus/usb/devices.
        for base in [&dir, &self.root] {
            let Ok(entries) = std::fs::read_dir(base) else {
                continue;
            };
            for e in entries.take(MAX_SCAN_ENTRIES).flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if let Some(rest) = n.strip_prefix(&prefix) {
                    let number = attr(&e.path(), "bInterfaceNumber")
                        .and_then(|v| u32::from_str_radix(&v, 16).ok())
                        .or_else(|| rest.rsplit('.').next()?.parse().ok())
                        .unwrap_or(u32::MAX);
                    if !interfaces.iter().any(|(i, _)| *i == number) {
                        interfaces.push((number, e.path()));
                    }
                }
            }
        }
        interfaces.sort();
        interfaces
            .iter()
            .find_map(|(_, p)| tty_names(p).into_iter().next())
            .map(|n| Path::new("/dev").join(n))
    }
}

impl Discover for Sysfs {
    fn scan(&self) -> Result<Vec<FoundDevice>, Error> {
        let entries = match std::fs::read_dir(&self.root) {
            Ok(e) => e,
            // No USB at all (a container, a machine without the bus): nothing attached.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(Error::Transport(std::io::Error::new(
                    e.kind(),
                    format!("{}: {e}", self.root.display()),
                )));
            }
        };
        let mut found = Vec::new();
        for e in entries.take(MAX_SCAN_ENTRIES).flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !is_device_name(&name) {
                continue;
            }
            let dir = e.path();
            let (Some(vendor_id), Some(product_id)) =
                (hex_attr(&dir, "idVendor"), hex_attr(&dir, "idProduct"))
            else {
                continue;
            };
            let mode = if vendor_id == QUALCOMM_VID && product_id == EDL_PID {
                DeviceMode::Edl
            } else if DIAG_VENDORS.iter().any(|(v, _)| *v == vendor_id) {
                DeviceMode::Diag
            } else {
                continue;
            };
            found.push(FoundDevice {
                tty: self.tty_of(&name),
                location: name,
                vendor_id,
                product_id,
                mode,
                product: attr(&dir, "product"),
                serial: attr(&dir, "serial"),
            });
        }
        found.sort_by(|a, b| a.location.cmp(&b.location));
        Ok(found)
    }
}

/// Waits until a device matching `want` is attached, scanning every `interval`, for at most
/// `timeout` (a zero timeout scans once).
///
/// # Errors
/// [`Error::Timeout`] naming `waiting_for` when no such device appeared in time; the
/// scanner's error.
pub fn wait_for(
    discover: &dyn Discover,
    want: &dyn Fn(&FoundDevice) -> bool,
    timeout: Duration,
    interval: Duration,
    waiting_for: &'static str,
) -> Result<FoundDevice, Error> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(d) = discover.scan()?.into_iter().find(|d| want(d)) {
            return Ok(d);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Error::Timeout { waiting_for });
        }
        std::thread::sleep(interval.min(left));
    }
}

/// Waits for a download-mode device (at `location`, when given) to appear: after a DIAG
/// switch, or after a reset that left the device in download mode.
///
/// # Errors
/// [`Error::Timeout`] when none appeared within `timeout`.
pub fn wait_for_edl(
    discover: &dyn Discover,
    location: Option<&str>,
    timeout: Duration,
    interval: Duration,
) -> Result<FoundDevice, Error> {
    wait_for(
        discover,
        &|d| d.mode == DeviceMode::Edl && location.is_none_or(|l| l == d.location),
        timeout,
        interval,
        "the modem to re-enumerate in download mode (05C6:9008)",
    )
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    /// Writes a fake USB device into a sysfs-like tree.
    fn device(root: &Path, name: &str, vid: &str, pid: &str, tty: Option<&str>) {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("idVendor"), format!("{vid}\n")).unwrap();
        std::fs::write(dir.join("idProduct"), format!("{pid}\n")).unwrap();
        std::fs::write(dir.join("product"), "QUSB__BULK\n").unwrap();
        let intf = dir.join(format!("{name}:1.0"));
        std::fs::create_dir_all(&intf).unwrap();
        std::fs::write(intf.join("bInterfaceNumber"), "00\n").unwrap();
        if let Some(t) = tty {
            std::fs::create_dir_all(intf.join(t)).unwrap();
        }
    }

    #[test]
    fn finds_edl_and_diag_devices_with_their_ttys_and_skips_the_rest() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        device(root, "1-1.2", "05c6", "9008", Some("ttyUSB3"));
        device(root, "2-4", "2c7c", "0125", Some("ttyUSB0"));
        device(root, "1-3", "046d", "c52b", None); // a mouse
        std::fs::create_dir_all(root.join("usb1")).unwrap(); // a root hub
        std::fs::write(root.join("usb1/idVendor"), "1d6b").unwrap();
        let found = Sysfs::new(root).scan().unwrap();
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(found[0].location, "1-1.2");
        assert_eq!(found[0].mode, DeviceMode::Edl);
        assert_eq!(found[0].tty.as_deref(), Some(Path::new("/dev/ttyUSB3")));
        assert_eq!(found[0].product.as_deref(), Some("QUSB__BULK"));
        assert_eq!(found[1].mode, DeviceMode::Diag);
        assert_eq!(found[1].vendor_id, 0x2C7C);
    }

    #[test]
    fn a_cdc_acm_tty_one_level_down_is_found() {
        let tmp = tempfile::tempdir().unwrap();
        device(tmp.path(), "3-1", "05c6", "9008", None);
        std::fs::create_dir_all(tmp.path().join("3-1/3-1:1.0/tty/ttyACM1")).unwrap();
        let found = Sysfs::new(tmp.path()).scan().unwrap();
        assert_eq!(found[0].tty.as_deref(), Some(Path::new("/dev/ttyACM1")));
    }

    #[test]
    fn no_usb_bus_is_no_device_not_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(
            Sysfs::new(tmp.path().join("absent"))
                .scan()
                .unwrap()
                .is_empty()
        );
    }

    /// A bus where the modem shows up in download mode at the third scan.
    struct Reenumerating {
        scans: Cell<u32>,
    }
    impl Discover for Reenumerating {
        fn scan(&self) -> Result<Vec<FoundDevice>, Error> {
            self.scans.set(self.scans.get() + 1);
            let mode = if self.scans.get() >= 3 {
                DeviceMode::Edl
            } else {
                DeviceMode::Diag
            };
            Ok(vec![FoundDevice {
                location: "1-2".into(),
                vendor_id: QUALCOMM_VID,
                product_id: if mode == DeviceMode::Edl {
                    EDL_PID
                } else {
                    0x9025
                },
                mode,
                tty: None,
                product: None,
                serial: None,
            }])
        }
    }

    #[test]
    fn waits_until_the_modem_re_enumerates_in_download_mode() {
        let bus = Reenumerating {
            scans: Cell::new(0),
        };
        let d = wait_for_edl(&bus, Some("1-2"), Duration::from_secs(3600), Duration::ZERO).unwrap();
        assert_eq!(d.product_id, EDL_PID);
        assert_eq!(bus.scans.get(), 3);
    }

    #[test]
    fn a_device_that_never_comes_back_is_a_timeout() {
        let bus = Reenumerating {
            scans: Cell::new(0),
        };
        let err = wait_for_edl(&bus, None, Duration::ZERO, Duration::ZERO).unwrap_err();
        assert!(matches!(err, Error::Timeout { .. }));
        assert_eq!(bus.scans.get(), 1);
        // At another location it never matches either.
        let err = wait_for_edl(&bus, Some("9-9"), Duration::ZERO, Duration::ZERO).unwrap_err();
        assert!(err.to_string().contains("05C6:9008"));
    }
}
