//! One scenario table that every frontend must answer with the same codes: the library's
//! `Updater`, the `veriflash` command and the C API each run it (their parity tests), and each
//! is held to the expected code, so the three agree with each other.
//!
//! A scenario is a package, a device in some state, and a trust configuration; each run gets
//! its own directory (its device, its state directory), so frontends never share a device. The
//! devices are the file-backed reference device and, for the cut-and-resume scenario, an
//! emulated MDM9607 speaking Sahara and Firehose on a pseudo-terminal.

// Fixtures for tests: a fixture that cannot be made ends the test with its reason.
#![allow(clippy::panic)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use veriflash_core::plugin::file_device::FileDevice;
use veriflash_core::plugin::{PluginEnvironment, Registry};
use veriflash_core::sig::SigningKey;
use veriflash_core::{
    AnchorSet, Error, ImageData, ImageSource, PackageSource, PackageSpec, Trust, TrustedTime,
    UnsignedPackage, Updater,
};
use veriflash_mdm9x07::Mdm9x07Plugin;
use veriflash_mdm9x07::emulator::{DeviceFaults, Emulator, EmulatorConfig, test_programmer};
use veriflash_mdm9x07::pty::{PtyPeer, PtyServer};
use veriflash_mdm9x07::transport::Endpoint;

use crate::{MODEM_CHIPSET, MODEM_PRODUCT, MODEM_REVISION, file_layout, pseudo_random};

/// What a scenario does to the device before the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Device {
    /// A fresh device.
    Fresh,
    /// A device that runs security version 7 already.
    AtFloor7,
    /// A device another session holds for the whole run.
    Held,
    /// An emulated MDM9607 that loses power half-way through writing `boot` and comes back
    /// (NAND intact, in download mode) as a new tty behind the same symlink, as a real modem
    /// re-enumerates behind its `/dev/serial/by-id/...` link.
    ModemCutMidway,
}

/// What the package is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Package {
    /// Security version 7, for this product and chipset, signed by a valid leaf certificate.
    Good,
    /// The same, security version 5.
    Older,
    /// For another product.
    OtherProduct,
    /// For another chipset.
    OtherChipset,
    /// Signed by a leaf certificate that expired yesterday.
    ExpiredLeaf,
    /// The good package cut short, as a broken download leaves it.
    Truncated,
    /// Security version 7 for the emulated MDM9607: its programmer, `sbl` and `boot`.
    Modem,
}

/// One row of the table.
#[derive(Clone, Copy, Debug)]
pub struct Scenario {
    /// Its name, for messages.
    pub name: &'static str,
    /// The package.
    pub package: Package,
    /// The device.
    pub device: Device,
    /// Whether certificate dates are ignored (`--no-clock`).
    pub no_clock: bool,
    /// The code every frontend must end with (0: installed).
    pub code: u8,
}

/// The table.
pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "good",
        package: Package::Good,
        device: Device::Fresh,
        no_clock: false,
        code: 0,
    },
    Scenario {
        name: "expired leaf, trusted clock",
        package: Package::ExpiredLeaf,
        device: Device::Fresh,
        no_clock: false,
        code: 27,
    },
    Scenario {
        name: "expired leaf, no clock",
        package: Package::ExpiredLeaf,
        device: Device::Fresh,
        no_clock: true,
        code: 0,
    },
    Scenario {
        name: "wrong product",
        package: Package::OtherProduct,
        device: Device::Fresh,
        no_clock: false,
        code: 40,
    },
    Scenario {
        name: "wrong chipset",
        package: Package::OtherChipset,
        device: Device::Fresh,
        no_clock: false,
        code: 41,
    },
    Scenario {
        name: "downgrade",
        package: Package::Older,
        device: Device::AtFloor7,
        no_clock: false,
        code: 43,
    },
    Scenario {
        name: "busy device",
        package: Package::Good,
        device: Device::Held,
        no_clock: false,
        code: 57,
    },
    Scenario {
        name: "cut download",
        package: Package::Truncated,
        device: Device::Fresh,
        no_clock: false,
        code: 13,
    },
    Scenario {
        name: "power cut mid-install, resumed",
        package: Package::Modem,
        device: Device::ModemCutMidway,
        no_clock: false,
        code: 0,
    },
];

/// The modem package's `sbl` and `boot` sizes.
const MODEM_SBL: usize = 60_000;
const MODEM_BOOT: usize = 200_000;

/// The vendor PKI all scenarios share: a root certificate (the trust anchor) and two
/// code-signing leaves it issued, one valid, one expired yesterday, made with the openssl CLI.
#[derive(Debug)]
pub struct Pki {
    /// The root certificate (PEM): what `--trust` names.
    pub root: PathBuf,
    valid: (SigningKey, Vec<Vec<u8>>),
    expired: (SigningKey, Vec<Vec<u8>>),
}

/// Runs openssl with `args` in `dir`.
///
/// # Panics
/// When openssl fails: the fixture cannot be made.
fn openssl(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("run openssl: {e}"));
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Pki {
    /// Makes the PKI in `dir`.
    ///
    /// # Panics
    /// When openssl or loading what it made fails.
    #[must_use]
    pub fn new(dir: &Path) -> Self {
        std::fs::write(
            dir.join("ca.ext"),
            "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign\nsubjectKeyIdentifier=hash\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(
            dir.join("leaf.ext"),
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=codeSigning\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let ec = ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"];
        openssl(
            dir,
            &[&["genpkey"][..], &ec, &["-out", "root.key"]].concat(),
        );
        openssl(
            dir,
            &[
                "req",
                "-new",
                "-x509",
                "-key",
                "root.key",
                "-subj",
                "/CN=Parity Root",
                "-days",
                "30",
                "-extensions",
                "v3_ca",
                "-out",
                "root.pem",
            ],
        );
        let leaf = |name: &str, days: &str| {
            openssl(
                dir,
                &[&["genpkey"][..], &ec, &["-out", &format!("{name}.key")]].concat(),
            );
            openssl(
                dir,
                &[
                    "req",
                    "-new",
                    "-key",
                    &format!("{name}.key"),
                    "-subj",
                    "/CN=Parity Leaf",
                    "-out",
                    &format!("{name}.csr"),
                ],
            );
            openssl(
                dir,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &format!("{name}.csr"),
                    "-CA",
                    "root.pem",
                    "-CAkey",
                    "root.key",
                    "-CAcreateserial",
                    "-extfile",
                    "leaf.ext",
                    "-days",
                    days,
                    "-out",
                    &format!("{name}.crt"),
                ],
            );
            let key = veriflash_core::trust::load_signing_key(&dir.join(format!("{name}.key")))
                .unwrap_or_else(|e| panic!("{e}"));
            let chain =
                veriflash_core::trust::load_certificate_chain(&dir.join(format!("{name}.crt")))
                    .unwrap_or_else(|e| panic!("{e}"));
            (key, chain)
        };
        Self {
            root: dir.join("root.pem"),
            valid: leaf("valid", "30"),
            expired: leaf("expired", "-1"),
        }
    }

    /// A leaf's signing key and its certificate chain: the one valid for 30 days, or (with
    /// `expired`) the one that expired yesterday.
    #[must_use]
    pub fn leaf(&self, expired: bool) -> (&SigningKey, &[Vec<u8>]) {
        let (key, chain) = if expired { &self.expired } else { &self.valid };
        (key, chain)
    }
}

/// A prepared run of a scenario: the package file, the target, the state directory, and what
/// holds or serves the device.
#[derive(Debug)]
pub struct Prepared {
    /// The package file.
    pub package: PathBuf,
    /// The device's target string (`file:PATH` or `mdm9x07:serial:LINK`).
    pub target: String,
    /// The plugins' state directory for the run (`VERIFLASH_STATE_DIR`): the modem's resume
    /// journal and the host's record of its floor.
    pub state_dir: PathBuf,
    /// The session that holds the device during the run ([`Device::Held`]).
    holder: Option<FileDevice>,
    /// The emulated modem's server ([`Device::ModemCutMidway`]).
    modem: Option<ServedModem>,
}

impl Prepared {
    /// Ends the run: lets the device go and checks what the device saw against the scenario.
    /// A modem cut mid-install must have lost power exactly once and, after it came back,
    /// had only `boot` programmed again: the install resumed from its journal, `sbl` was not
    /// written twice.
    ///
    /// # Errors
    /// What the device saw that the scenario does not allow, for the test's message.
    pub fn finish(self) -> Result<(), String> {
        drop(self.holder);
        let Some(modem) = self.modem else {
            return Ok(());
        };
        let seen = modem.stop();
        let boot_pages = MODEM_BOOT.div_ceil(seen.page_size) as u64;
        if seen.cuts == 1 && seen.programs_after_cut == boot_pages {
            Ok(())
        } else {
            Err(format!(
                "the modem lost power {} times and had {} pages programmed after the cut \
                 (resuming programs only boot's {boot_pages})",
                seen.cuts, seen.programs_after_cut
            ))
        }
    }
}

/// What the served modem saw.
#[derive(Debug)]
struct ModemRecord {
    page_size: usize,
    cuts: u32,
    programs_after_cut: u64,
}

/// An emulated MDM9607 served on a pseudo-terminal by a thread, behind a symlink.
#[derive(Debug)]
struct ServedModem {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<ModemRecord>,
}

/// Points the symlink `link` at `to`, atomically (a new link renamed over the old one), as
/// udev moves a `/dev/serial/by-id/...` link to a re-enumerated modem's tty.
fn point(link: &Path, to: &Path) {
    let next = link.with_extension("next");
    let _ = std::fs::remove_file(&next);
    std::os::unix::fs::symlink(to, &next).unwrap_or_else(|e| panic!("{e}"));
    std::fs::rename(&next, link).unwrap_or_else(|e| panic!("{e}"));
}

/// The emulator as the pty serves it, raising `cut` when it loses power — not when the host
/// resets it (`<power value="reset"/>` after the commit), which also leaves it off.
struct Watched<'a> {
    emulator: &'a mut Emulator,
    cut: &'a AtomicBool,
    resets: u32,
}

impl Endpoint for Watched<'_> {
    fn receive(&mut self, bytes: &[u8]) {
        self.emulator.receive(bytes);
        if self.emulator.is_powered() {
            self.resets = self.emulator.resets();
        } else if self.emulator.resets() == self.resets {
            self.cut.store(true, Ordering::Relaxed);
        }
    }

    fn transmit(&mut self) -> Option<Vec<u8>> {
        self.emulator.transmit()
    }
}

impl PtyPeer for Watched<'_> {
    fn host_opened(&mut self) {
        self.emulator.host_opened();
    }
}

impl ServedModem {
    /// Serves a fresh emulated MDM9607 behind `link` that loses power on the page program
    /// `cut_at_page` (1-based), once.
    fn start(link: &Path, cut_at_page: u64) -> Self {
        let mut emulator =
            Emulator::new(EmulatorConfig::mdm9607()).unwrap_or_else(|e| panic!("{e}"));
        emulator.set_faults(DeviceFaults {
            power_cut_at_page_program: Some(cut_at_page),
            ..DeviceFaults::default()
        });
        let mut server = PtyServer::open().unwrap_or_else(|e| panic!("{e}"));
        point(link, server.slave_path());
        let link = link.to_path_buf();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut record = ModemRecord {
                page_size: emulator.config().page_size,
                cuts: 0,
                programs_after_cut: 0,
            };
            let mut programs_at_cut = 0;
            loop {
                let cut = AtomicBool::new(false);
                let resets = emulator.resets();
                let mut peer = Watched {
                    emulator: &mut emulator,
                    cut: &cut,
                    resets,
                };
                server
                    .serve(
                        &mut peer,
                        &|| stopped.load(Ordering::Relaxed) || cut.load(Ordering::Relaxed),
                        &mut |_| {},
                    )
                    .unwrap_or_else(|e| panic!("{e}"));
                if !cut.load(Ordering::Relaxed) {
                    break;
                }
                // The power comes back: the modem enumerates as a new tty, the link moves to
                // it, then the old tty goes (the host's open port hangs up).
                record.cuts += 1;
                programs_at_cut = emulator.nand().page_programs();
                emulator.set_faults(DeviceFaults::default());
                let next = PtyServer::open().unwrap_or_else(|e| panic!("{e}"));
                point(&link, next.slave_path());
                server = next;
            }
            if record.cuts > 0 {
                record.programs_after_cut = emulator.nand().page_programs() - programs_at_cut;
            }
            record
        });
        Self { stop, thread }
    }

    fn stop(self) -> ModemRecord {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .join()
            .unwrap_or_else(|_| panic!("the modem thread"))
    }
}

/// The package `kind` at `security_version`.
fn build(pki: &Pki, kind: Package) -> Result<Vec<u8>, Error> {
    if kind == Package::Modem {
        return build_modem(pki);
    }
    let (product, chipset, security_version) = match kind {
        Package::OtherProduct => ("other-product", MODEM_CHIPSET, 7),
        Package::OtherChipset => (MODEM_PRODUCT, "mdm9207", 7),
        Package::Older => (MODEM_PRODUCT, MODEM_CHIPSET, 5),
        _ => (MODEM_PRODUCT, MODEM_CHIPSET, 7),
    };
    let images = ["boot", "system"]
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let mut image = ImageSource::new(
                *name,
                *name,
                ImageData::Bytes(pseudo_random(30_000, security_version + i as u64)),
            );
            image.chunk_size = 4096;
            image
        })
        .collect();
    let unsigned = UnsignedPackage::prepare(PackageSpec {
        product: product.into(),
        chipset: chipset.into(),
        hardware_revisions: vec![],
        software_version: format!("v{security_version}"),
        security_version,
        images,
    })?
    // The expired leaf's package is made on purpose, for devices to refuse.
    .allow_expired_certificates(kind == Package::ExpiredLeaf);
    let (key, chain) = pki.leaf(kind == Package::ExpiredLeaf);
    let mut bytes = sign(&unsigned, key, chain)?;
    if kind == Package::Truncated {
        bytes.truncate(bytes.len() - 100);
    }
    Ok(bytes)
}

/// The modem package, signed by the valid leaf.
fn build_modem(pki: &Pki) -> Result<Vec<u8>, Error> {
    let images = [
        ("programmer", test_programmer(&pseudo_random(9_000, 1))),
        ("sbl", pseudo_random(MODEM_SBL, 2)),
        ("boot", pseudo_random(MODEM_BOOT, 3)),
    ]
    .into_iter()
    .map(|(partition, bytes)| {
        let mut image = ImageSource::new(partition, partition, ImageData::Bytes(bytes));
        image.chunk_size = 16 * 1024;
        image
    })
    .collect();
    let unsigned = UnsignedPackage::prepare(PackageSpec {
        product: MODEM_PRODUCT.into(),
        chipset: MODEM_CHIPSET.into(),
        hardware_revisions: vec![MODEM_REVISION.into()],
        software_version: "2.7.0".into(),
        security_version: 7,
        images,
    })?;
    let (key, chain) = pki.leaf(false);
    sign(&unsigned, key, chain)
}

/// `unsigned` signed by `key`, its certificate `chain` attached: the package's bytes.
fn sign(unsigned: &UnsignedPackage, key: &SigningKey, chain: &[Vec<u8>]) -> Result<Vec<u8>, Error> {
    let entry = unsigned.sign_with_certificates(key, chain.to_vec())?;
    let mut bytes = Vec::new();
    unsigned.write_to(
        &veriflash_core::format::SignatureBlock {
            entries: vec![entry],
        },
        &mut bytes,
    )?;
    Ok(bytes)
}

impl Scenario {
    /// Prepares a run in `dir` (which it owns): the package file, the state directory and the
    /// device as the scenario wants it.
    ///
    /// # Panics
    /// When the fixture cannot be made.
    #[must_use]
    pub fn prepare(&self, pki: &Pki, dir: &Path) -> Prepared {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{e}"));
        let write_package = |name: &str, kind: Package| {
            let path = dir.join(name);
            std::fs::write(&path, build(pki, kind).unwrap_or_else(|e| panic!("{e}")))
                .unwrap_or_else(|e| panic!("{e}"));
            path
        };
        let mut run = Prepared {
            package: write_package("package.vfp", self.package),
            target: String::new(),
            state_dir: dir.join("state"),
            holder: None,
            modem: None,
        };
        if self.device == Device::ModemCutMidway {
            let link = dir.join("modem");
            let page = EmulatorConfig::mdm9607().page_size;
            // Half-way through `boot`, after all of `sbl` was programmed.
            let cut = (MODEM_SBL.div_ceil(page) + MODEM_BOOT.div_ceil(page) / 2) as u64;
            run.modem = Some(ServedModem::start(&link, cut));
            run.target = format!("mdm9x07:serial:{}", link.display());
            return run;
        }
        let device = dir.join("device.img");
        let layout = file_layout(&[("boot", 64 << 10), ("system", 64 << 10)], &[]);
        drop(FileDevice::create(&device, &layout).unwrap_or_else(|e| panic!("{e}")));
        run.target = format!("file:{}", device.display());
        if self.device == Device::AtFloor7 {
            let good = Prepared {
                package: write_package("good.vfp", Package::Good),
                target: run.target.clone(),
                state_dir: run.state_dir.clone(),
                holder: None,
                modem: None,
            };
            install(pki, &good, false).unwrap_or_else(|e| panic!("{e}"));
        }
        run.holder = (self.device == Device::Held)
            .then(|| FileDevice::open(&device).unwrap_or_else(|e| panic!("{e}")));
        run
    }

    /// The library's leg of the scenario, in `dir`: prepared, installed through the `Updater`
    /// ([`install`]) and finished; the code it ended with (0: installed).
    ///
    /// # Panics
    /// When the fixture cannot be made, or the device saw what the scenario does not allow.
    #[must_use]
    pub fn run_in_library(&self, pki: &Pki, dir: &Path) -> u8 {
        let run = self.prepare(pki, dir);
        let code = install(pki, &run, self.no_clock)
            .err()
            .map_or(0, |e| e.code());
        run.finish()
            .unwrap_or_else(|e| panic!("{}, library: {e}", self.name));
        code
    }
}

/// The devices every frontend reaches: the file device and the MDM9x07 plugin.
#[must_use]
pub fn registry() -> Registry {
    let mut registry = Registry::with_builtin();
    registry.register(Box::new(Mdm9x07Plugin::default()));
    registry
}

/// The library's leg: the run's package installed on its target through the `Updater`, with
/// the run's state directory, trusting the PKI's root, with or without a trusted clock.
///
/// # Errors
/// The install's error.
pub fn install(pki: &Pki, run: &Prepared, no_clock: bool) -> Result<(), Error> {
    let anchors = AnchorSet::load(&pki.root)?;
    let time = if no_clock {
        TrustedTime::None
    } else {
        TrustedTime::System
    };
    Updater::builder(
        PackageSource::File(run.package.clone()),
        Trust::new(anchors).with_time(time),
    )
    .registry(registry())
    .environment(PluginEnvironment {
        state_dir: Some(run.state_dir.clone()),
        config_dir: None,
    })
    .build()?
    .install(&run.target)
    .map(drop)
}
