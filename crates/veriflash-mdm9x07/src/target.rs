//! The one place `mdm9x07:` target strings are parsed and opened:
//!
//! | target | device |
//! |---|---|
//! | `mdm9x07:emulator` | a fresh emulated MDM9607 over the in-memory transport |
//! | `mdm9x07:serial:/dev/ttyUSB0` | a download-mode device through qcserial (or the pty of `veriflash emulate mdm9x07 --pty`); feature `serial` |
//! | `mdm9x07:usb` | the first `05C6:9008` device on USB; feature `usb` |
//! | `mdm9x07:usb:1-1.2` | the `05C6:9008` device at that `BUS-PORT[.PORT…]` location |
//!
//! [`Mdm9x07Plugin`] is a [`Plugin`] for all of them; a build without a transport's feature
//! parses its target and says which feature it lacks.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use veriflash_plugin::{FlashSession, Plugin, PluginError};

use crate::emulator::{Emulator, EmulatorConfig};
use crate::error::Error;
use crate::session::{Mdm9x07Session, SessionConfig};
use crate::transport::{Framing, MemoryTransport};

/// A parsed `mdm9x07:` target (the part after `mdm9x07:`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// `emulator`.
    Emulator,
    /// `serial:PATH`.
    Serial(PathBuf),
    /// `usb` or `usb:BUS-PORT`.
    Usb(Option<String>),
}

/// What the targets look like, for messages.
pub const TARGET_FORMS: &str =
    "mdm9x07:emulator, mdm9x07:serial:/dev/ttyUSB0, mdm9x07:usb or mdm9x07:usb:BUS-PORT";

impl Target {
    /// Parses the part after `mdm9x07:`.
    ///
    /// # Errors
    /// [`Error::Unsupported`] naming the accepted forms.
    pub fn parse(rest: &str) -> Result<Self, Error> {
        let bad = || {
            Error::Unsupported(format!(
                "unknown target 'mdm9x07:{rest}' (expected {TARGET_FORMS})"
            ))
        };
        match rest.split_once(':') {
            None if rest == "emulator" => Ok(Self::Emulator),
            None if rest == "usb" => Ok(Self::Usb(None)),
            Some(("serial", path)) if !path.is_empty() => Ok(Self::Serial(PathBuf::from(path))),
            Some(("usb", location)) if is_location(location) => {
                Ok(Self::Usb(Some(location.to_owned())))
            }
            _ => Err(bad()),
        }
    }
}

/// Whether `s` is a USB location `BUS-PORT[.PORT…]` (sysfs naming, e.g. `1-1.2`).
#[must_use]
pub fn is_location(s: &str) -> bool {
    match s.split_once('-') {
        Some((bus, ports)) => {
            !bus.is_empty()
                && bus.bytes().all(|b| b.is_ascii_digit())
                && !ports.is_empty()
                && ports
                    .split('.')
                    .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        }
        None => false,
    }
}

/// Opens a session on `target`.
///
/// # Errors
/// The transport's error when the device cannot be opened; [`Error::Unsupported`] when this
/// build lacks the transport's feature.
pub fn open(target: &Target, config: SessionConfig) -> Result<Box<dyn FlashSession>, Error> {
    match target {
        Target::Emulator => {
            let emulator = Emulator::new(EmulatorConfig::mdm9607())?;
            let link = MemoryTransport::new(Arc::new(Mutex::new(emulator)), Framing::Packet);
            // Every `mdm9x07:emulator` is a new, blank device with the same serial number: a
            // journal of an earlier run would wrongly describe it, and its calibration is made
            // up, so there is nothing worth a backup.
            let config = SessionConfig {
                journal_dir: None,
                backup_dir: None,
                ..config
            };
            Ok(Box::new(Mdm9x07Session::new(link, config)))
        }
        #[cfg(all(unix, feature = "serial"))]
        Target::Serial(path) => {
            let link = crate::serial::SerialTransport::open(path)?;
            Ok(Box::new(Mdm9x07Session::new(link, config)))
        }
        #[cfg(not(all(unix, feature = "serial")))]
        Target::Serial(_) => Err(Error::Unsupported(
            "this build has no serial transport (veriflash-mdm9x07 feature `serial`)".into(),
        )),
        #[cfg(feature = "usb")]
        Target::Usb(location) => {
            let link = crate::usb::UsbTransport::open(location.as_deref())?;
            Ok(Box::new(Mdm9x07Session::new(link, config)))
        }
        #[cfg(not(feature = "usb"))]
        Target::Usb(_) => Err(Error::Unsupported(
            "this build has no USB transport (veriflash-mdm9x07 feature `usb`)".into(),
        )),
    }
}

/// The `mdm9x07` plugin for every target form above, with `config` for its sessions.
#[derive(Clone, Debug, Default)]
pub struct Mdm9x07Plugin {
    config: SessionConfig,
}

impl Mdm9x07Plugin {
    /// A plugin whose sessions use `config`.
    #[must_use]
    pub fn new(config: SessionConfig) -> Self {
        Self { config }
    }
}

impl Plugin for Mdm9x07Plugin {
    fn name(&self) -> &'static str {
        "mdm9x07"
    }

    fn open(&self, target: &str) -> Result<Box<dyn FlashSession>, PluginError> {
        let parsed = Target::parse(target)
            .map_err(|e| PluginError::UnknownTarget(format!("mdm9x07:{target} ({e})")))?;
        Ok(open(&parsed, self.config.clone())?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_target_form() {
        assert_eq!(Target::parse("emulator").unwrap(), Target::Emulator);
        assert_eq!(
            Target::parse("serial:/dev/ttyUSB0").unwrap(),
            Target::Serial("/dev/ttyUSB0".into())
        );
        assert_eq!(Target::parse("usb").unwrap(), Target::Usb(None));
        assert_eq!(
            Target::parse("usb:1-1.2").unwrap(),
            Target::Usb(Some("1-1.2".into()))
        );
    }

    #[test]
    fn refuses_malformed_targets_naming_the_forms() {
        for bad in [
            "",
            "serial",
            "serial:",
            "usb:",
            "usb:1",
            "usb:a-1",
            "usb:1-",
            "usb:1-1..2",
            "tty",
        ] {
            let err = Target::parse(bad).unwrap_err();
            assert!(
                err.to_string().contains("mdm9x07:serial:/dev/ttyUSB0"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn the_plugin_opens_the_emulator_and_reports_unknown_targets() {
        let plugin = Mdm9x07Plugin::default();
        let mut session = plugin.open("emulator").unwrap();
        assert_eq!(session.device_info().unwrap().chipset, "mdm9607");
        assert!(matches!(
            plugin.open("floppy"),
            Err(PluginError::UnknownTarget(t)) if t.contains("mdm9x07:floppy")
        ));
    }
}
