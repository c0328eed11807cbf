//! The one place `mdm9x07:` target strings are parsed and opened:
//!
//! | target | device |
//! |---|---|
//! | `mdm9x07:emulator` | a fresh emulated MDM9607 (2 KiB pages, 128 KiB blocks) over the in-memory transport; feature `emulator` |
//! | `mdm9x07:emulator:ec25` | a fresh emulated EC25-like MDM9207 (4 KiB pages, 256 KiB blocks, [`crate::emulator::EmulatorConfig::mdm9207_ec25`]) |
//! | `mdm9x07:serial:/dev/ttyUSB0` | a download-mode device through qcserial (or the pty of `veriflash emulate mdm9x07 --pty`); feature `serial` |
//! | `mdm9x07:usb` | the first `05C6:9008` device on USB; feature `usb` |
//! | `mdm9x07:usb:1-1.2` | the `05C6:9008` device at that `BUS-PORT[.PORT…]` location |
//!
//! [`Mdm9x07Plugin`] is a [`Plugin`] for all of them; a build without a transport's (or the
//! emulator's) feature parses its target and says which feature it lacks.

use std::path::PathBuf;
#[cfg(feature = "emulator")]
use std::sync::{Arc, Mutex};

use veriflash_plugin::{BootWatch, FlashSession, Plugin, PluginEnvironment, PluginError};

use crate::backup::ModemReader;
use crate::boot_watch::Mdm9x07BootWatch;
use crate::discover::{SYSFS_USB_DEVICES, Sysfs};
#[cfg(feature = "emulator")]
use crate::emulator::{Emulator, EmulatorConfig};
use crate::error::Error;
#[cfg(any(feature = "emulator", all(unix, feature = "serial"), feature = "usb"))]
use crate::session::Mdm9x07Session;
use crate::session::SessionConfig;
#[cfg(feature = "emulator")]
use crate::transport::{Framing, MemoryTransport};

/// Which device `mdm9x07:emulator[:MODEL]` emulates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EmulatedModel {
    /// `emulator`: the MDM9607 hotspot of [`crate::emulator::EmulatorConfig::mdm9607`].
    Mdm9607,
    /// `emulator:ec25`: the MDM9207 module of [`crate::emulator::EmulatorConfig::mdm9207_ec25`].
    Ec25,
}

/// A parsed `mdm9x07:` target (the part after `mdm9x07:`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// `emulator` or `emulator:ec25`.
    Emulator(EmulatedModel),
    /// `serial:PATH`.
    Serial(PathBuf),
    /// `usb` or `usb:BUS-PORT`.
    Usb(Option<String>),
}

/// What the targets look like, for messages and [`Plugin::target_forms`].
pub const TARGET_FORMS: [&str; 3] = [
    "mdm9x07:usb[:BUS-PORT]",
    "mdm9x07:serial:TTY",
    "mdm9x07:emulator[:ec25]",
];

impl Target {
    /// Parses the part after `mdm9x07:`.
    ///
    /// # Errors
    /// [`Error::Unsupported`] naming the accepted forms.
    pub fn parse(rest: &str) -> Result<Self, Error> {
        let bad = || {
            Error::Unsupported(format!(
                "unknown target 'mdm9x07:{rest}' (expected {})",
                TARGET_FORMS.join(", ")
            ))
        };
        match rest.split_once(':') {
            None if rest == "emulator" => Ok(Self::Emulator(EmulatedModel::Mdm9607)),
            Some(("emulator", "ec25")) => Ok(Self::Emulator(EmulatedModel::Ec25)),
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
/// build lacks the transport's (or the emulator's) feature.
// A build with no device at all (no feature) only refuses, so `config` is unused there.
#[cfg_attr(
    not(any(feature = "emulator", all(unix, feature = "serial"), feature = "usb")),
    allow(unused_variables)
)]
pub fn open(target: &Target, config: SessionConfig) -> Result<Box<dyn ModemReader>, Error> {
    match target {
        #[cfg(feature = "emulator")]
        Target::Emulator(model) => {
            let emulator = Emulator::new(match model {
                EmulatedModel::Mdm9607 => EmulatorConfig::mdm9607(),
                EmulatedModel::Ec25 => EmulatorConfig::mdm9207_ec25(),
            })?;
            let link = MemoryTransport::new(Arc::new(Mutex::new(emulator)), Framing::Packet);
            // Every `mdm9x07:emulator` is a new, blank device with the same serial number: a
            // journal of an earlier run would wrongly describe it, and its calibration is made
            // up, so there is nothing worth a backup.
            let config = SessionConfig {
                journal_dir: None,
                backup_dir: None,
                persistent: false,
                ..config
            };
            Ok(Box::new(Mdm9x07Session::new(link, config)))
        }
        #[cfg(not(feature = "emulator"))]
        Target::Emulator(_) => Err(Error::Unsupported(
            "this build has no emulator (veriflash-mdm9x07 feature `emulator`)".into(),
        )),
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

/// The `mdm9x07` plugin for every target form above.
///
/// Its sessions use the [`SessionConfig`] it was made with, completed by the embedder's
/// environment ([`Plugin::configure`]): that is where every frontend — the CLI, the C API, a
/// Rust updater — gives it the same journal and backup directories and the user's product
/// table, so all of them resume, back up and name products alike. Which targets come back
/// after a reset ([`Plugin::reconnects`]) and how to see a flashed modem boot
/// ([`Plugin::boot_watch`]) are its business too, not the frontends'.
#[derive(Clone, Debug)]
pub struct Mdm9x07Plugin {
    /// As made: what [`Plugin::configure`] starts from, each time it is called.
    made: SessionConfig,
    /// What sessions use.
    config: SessionConfig,
    /// The sysfs directory of USB devices its boot watches scan.
    sysfs: PathBuf,
}

impl Default for Mdm9x07Plugin {
    fn default() -> Self {
        Self::new(SessionConfig::default())
    }
}

impl Mdm9x07Plugin {
    /// A plugin whose sessions use `config` (until [`Plugin::configure`] adds the
    /// environment's directories and products to it).
    #[must_use]
    pub fn new(config: SessionConfig) -> Self {
        Self {
            made: config.clone(),
            config,
            sysfs: PathBuf::from(SYSFS_USB_DEVICES),
        }
    }

    /// This plugin with its boot watches scanning `root` instead of
    /// [`SYSFS_USB_DEVICES`]: a fake tree in tests, another mount of sysfs in a container.
    #[must_use]
    pub fn with_sysfs(mut self, root: impl Into<PathBuf>) -> Self {
        self.sysfs = root.into();
        self
    }

    /// The configuration its sessions use: for a session over a transport of the embedder's
    /// own, `Mdm9x07Session::new(transport, plugin.config().clone())`.
    #[must_use]
    pub fn config(&self) -> &SessionConfig {
        &self.config
    }
}

impl Plugin for Mdm9x07Plugin {
    fn name(&self) -> &'static str {
        "mdm9x07"
    }

    fn target_forms(&self) -> Vec<String> {
        TARGET_FORMS.iter().map(|form| (*form).to_owned()).collect()
    }

    /// Takes the embedder's environment:
    ///
    /// - journals in `state_dir` itself (one file per chip serial number), so a flash cut off
    ///   by a pulled cable or a reset resumes where it stopped;
    /// - copies of the protected partitions (EFS, calibration, the MIBIB) in
    ///   `state_dir/backups`, made before anything is erased;
    /// - the products of `config_dir/mdm9x07-products.toml` ([`crate::products`]) before the
    ///   plugin's own table, so the user's entries win.
    ///
    /// A directory the environment leaves `None` keeps what [`Mdm9x07Plugin::new`] was given
    /// (an embedder that set its own journal directory keeps it under an `Updater` that has
    /// no state directory). Every call starts from that, so configuring twice doubles
    /// nothing.
    ///
    /// # Errors
    /// [`PluginError::Storage`] naming the products file when it exists but cannot be read,
    /// is over its size limit or is not a products table; the plugin is left as it was.
    fn configure(&mut self, env: &PluginEnvironment) -> Result<(), PluginError> {
        let mut products = match &env.config_dir {
            Some(dir) => crate::products::load(dir)?,
            None => Vec::new(),
        };
        products.extend(self.made.products.iter().cloned());
        let made = self.made.clone();
        self.config = SessionConfig {
            products,
            products_file: env
                .config_dir
                .as_ref()
                .map(|dir| dir.join(crate::products::FILE))
                .or(made.products_file.clone()),
            backup_dir: env
                .state_dir
                .as_ref()
                .map(|dir| dir.join("backups"))
                .or(made.backup_dir),
            journal_dir: env.state_dir.clone().or(made.journal_dir),
            ..made
        };
        Ok(())
    }

    /// True for real modems (`serial:TTY`, `usb`, `usb:BUS-PORT`): one cut off by a pulled
    /// cable or a reset falls back to download mode and re-enumerates, and the journal makes
    /// the next run skip what this one finished. The emulator is a new device on every open,
    /// so it never comes back; a target that does not parse is no modem.
    fn reconnects(&self, target: &str) -> bool {
        matches!(
            Target::parse(target),
            Ok(Target::Serial(_) | Target::Usb(_))
        )
    }

    /// For a real modem, a [`Mdm9x07BootWatch`] on this plugin's sysfs root, which scans the
    /// USB bus now, before the install; `None` for the emulator and a target that does not
    /// parse.
    fn boot_watch(&self, target: &str) -> Option<Box<dyn BootWatch>> {
        match Target::parse(target).ok()? {
            Target::Emulator(_) => None,
            real @ (Target::Serial(_) | Target::Usb(_)) => Some(Box::new(Mdm9x07BootWatch::new(
                &real,
                Sysfs::new(&self.sysfs),
            ))),
        }
    }

    fn open(&self, target: &str) -> Result<Box<dyn FlashSession>, PluginError> {
        let parsed = Target::parse(target).map_err(|_| {
            PluginError::UnknownTarget(format!("mdm9x07:{target}")).with_remedy(format!(
                "Give an MDM9x07 target in one of these forms: {}.",
                TARGET_FORMS.join(", ")
            ))
        })?;
        let session: Box<dyn FlashSession> =
            open_waiting(&parsed, &self.config).map_err(|e| absent(&parsed, e))?;
        Ok(session)
    }
}

/// How often an absent modem is looked for again while [`SessionConfig::wait_for_device`]
/// runs.
const WAIT_POLL: std::time::Duration = std::time::Duration::from_millis(250);

/// [`open`], looking again for a real modem that is not there (no such tty, no `05C6:9008`
/// device) until [`SessionConfig::wait_for_device`] has passed.
///
/// # Errors
/// As [`open`]; the last "not found" when the wait ran out.
pub fn open_waiting(
    target: &Target,
    config: &SessionConfig,
) -> Result<Box<dyn ModemReader>, Error> {
    let deadline = std::time::Instant::now() + config.wait_for_device;
    let waits = matches!(target, Target::Serial(_) | Target::Usb(_));
    loop {
        match open(target, config.clone()) {
            Err(Error::Transport(e))
                if waits
                    && e.kind() == std::io::ErrorKind::NotFound
                    && std::time::Instant::now() + WAIT_POLL <= deadline =>
            {
                std::thread::sleep(WAIT_POLL);
            }
            other => return other,
        }
    }
}

/// `err` from opening `target`, with what to do when the modem is not there: a modem is only
/// found in download mode, which people forget it must be in (after
/// [`SessionConfig::wait_for_device`], `flash --wait`; `flash --reconnect` only waits for a
/// modem that dropped off mid-flash).
fn absent(target: &Target, err: Error) -> PluginError {
    let missing = matches!(&err, Error::Transport(e) if e.kind() == std::io::ErrorKind::NotFound);
    let err = PluginError::from(err);
    if !missing {
        return err;
    }
    match target {
        Target::Usb(_) => err.with_remedy(
            "Run `veriflash devices`: the modem must be listed in download mode (05C6:9008). If it is not, put it there (`veriflash switch-to-edl --port TTY` from normal mode, or its boot key or test point) and run this command again once `veriflash devices` lists it.",
        ),
        Target::Serial(path) => err.with_remedy(format!(
            "Check that {} is the port of a modem in download mode: `veriflash devices` lists such a modem with its tty. Put the modem in download mode (`veriflash switch-to-edl`) and run this command again once it is listed.",
            path.display()
        )),
        Target::Emulator(_) => err,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_target_form() {
        assert_eq!(
            Target::parse("emulator").unwrap(),
            Target::Emulator(EmulatedModel::Mdm9607)
        );
        assert_eq!(
            Target::parse("emulator:ec25").unwrap(),
            Target::Emulator(EmulatedModel::Ec25)
        );
        assert!(Target::parse("emulator:ec21").is_err());
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
                err.to_string().contains("mdm9x07:serial:TTY"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn only_real_modems_come_back() {
        let plugin = Mdm9x07Plugin::default();
        for real in [
            "serial:/dev/serial/by-id/usb-Qualcomm_QUSB",
            "serial:/dev/ttyUSB0",
            "usb",
            "usb:1-1.2",
        ] {
            assert!(plugin.reconnects(real), "{real}");
        }
        // The emulator is a fresh device on every open; the rest are no targets at all (and
        // the registry hands the plugin the part after `mdm9x07:`).
        for other in ["emulator", "floppy", "usb:", "serial:", "", "mdm9x07:usb"] {
            assert!(!plugin.reconnects(other), "{other}");
        }
    }

    /// A products file in a new configuration directory.
    fn config_dir(products: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(crate::products::FILE), products).unwrap();
        dir
    }

    const X3: &str = "[[product]]\noem_id = 0x1234\nmodel_id = 0x0001\nproduct = \"vendor-x3\"\nhardware_revision = \"r7\"\n";

    #[test]
    fn configure_puts_the_users_products_first_and_keeps_state_in_the_state_dir() {
        let config = config_dir(X3);
        let state = tempfile::tempdir().unwrap();
        let mut plugin = Mdm9x07Plugin::default();
        plugin
            .configure(&PluginEnvironment {
                state_dir: Some(state.path().to_owned()),
                config_dir: Some(config.path().to_owned()),
            })
            .unwrap();
        let used = plugin.config();
        assert_eq!(used.journal_dir.as_deref(), Some(state.path()));
        assert_eq!(used.backup_dir, Some(state.path().join("backups")));
        let names: Vec<&str> = used.products.iter().map(|p| p.product.as_str()).collect();
        // The user's entry for the same ids comes before the built-in one, so it wins.
        assert_eq!(names, ["vendor-x3", "acme-hotspot-x1"]);
        assert_eq!(
            (used.products[0].oem_id, used.products[0].model_id),
            (0x1234, 0x0001)
        );
        assert_eq!(used.timeouts, SessionConfig::default().timeouts);
        assert_eq!(used.payload, SessionConfig::default().payload);
    }

    #[test]
    fn configuring_again_starts_from_what_the_plugin_was_made_with() {
        let config = config_dir(X3);
        let own = std::path::PathBuf::from("/var/lib/own-journals");
        let mut plugin = Mdm9x07Plugin::new(SessionConfig {
            journal_dir: Some(own.clone()),
            ..SessionConfig::default()
        });
        let env = PluginEnvironment {
            state_dir: None,
            config_dir: Some(config.path().to_owned()),
        };
        plugin.configure(&env).unwrap();
        plugin.configure(&env).unwrap();
        // No state directory: the plugin's own journal directory stays, no backups appear.
        assert_eq!(plugin.config().journal_dir.as_deref(), Some(own.as_path()));
        assert_eq!(plugin.config().backup_dir, None);
        assert_eq!(plugin.config().products.len(), 2, "nothing doubled");
        // An empty environment: the built-in table only.
        plugin.configure(&PluginEnvironment::default()).unwrap();
        assert_eq!(plugin.config().products, SessionConfig::default().products);
        // No products file in the configuration directory: the same.
        let empty = tempfile::tempdir().unwrap();
        plugin
            .configure(&PluginEnvironment {
                state_dir: None,
                config_dir: Some(empty.path().to_owned()),
            })
            .unwrap();
        assert_eq!(plugin.config().products, SessionConfig::default().products);
    }

    #[test]
    fn a_malformed_products_file_is_refused_naming_it_and_changes_nothing() {
        let config = config_dir(
            "[[product]]\noem_id = 0x1234\nmodel = 1\nproduct = \"x\"\nhardware_revision = \"r\"\n",
        );
        let state = tempfile::tempdir().unwrap();
        let mut plugin = Mdm9x07Plugin::default();
        let err = plugin
            .configure(&PluginEnvironment {
                state_dir: Some(state.path().to_owned()),
                config_dir: Some(config.path().to_owned()),
            })
            .unwrap_err();
        let file = config.path().join(crate::products::FILE);
        assert!(
            matches!(&err, PluginError::Storage { path, source }
                if *path == file && source.kind() == std::io::ErrorKind::InvalidData),
            "{err:?}"
        );
        let message = err.to_string();
        assert!(message.contains(&file.display().to_string()), "{message}");
        assert!(
            message.contains("model"),
            "names the unknown key: {message}"
        );
        assert_eq!(plugin.config(), &SessionConfig::default(), "left as it was");
    }

    #[cfg(not(feature = "emulator"))]
    #[test]
    fn a_build_without_the_emulator_says_which_feature_it_lacks() {
        let err = Mdm9x07Plugin::default().open("emulator").err();
        assert!(
            matches!(&err, Some(PluginError::Unsupported(m)) if m.contains("feature `emulator`")),
            "{err:?}"
        );
    }

    #[cfg(feature = "emulator")]
    #[test]
    fn the_plugin_opens_the_emulator_and_reports_unknown_targets() {
        let plugin = Mdm9x07Plugin::default();
        let mut session = plugin.open("emulator").unwrap();
        assert_eq!(session.device_info().unwrap().chipset, "mdm9607");
        let err = plugin.open("floppy").err().unwrap();
        assert!(
            matches!(err.without_remedy(), PluginError::UnknownTarget(t) if t == "mdm9x07:floppy"),
            "{err:?}"
        );
        assert!(
            err.remedy().unwrap().contains("mdm9x07:usb[:BUS-PORT]"),
            "{err:?}"
        );
        assert_eq!(plugin.target_forms(), TARGET_FORMS);
    }
}
