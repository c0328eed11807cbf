//! One scenario table that every frontend must answer with the same codes: the library's
//! `Updater`, the `veriflash` command and the C API each run it (their parity tests), and each
//! is held to the expected code, so the three agree with each other.
//!
//! A scenario is a package, a device in some state, and a trust configuration; each run gets
//! its own directory, so frontends never share a device.

// Fixtures for tests: a fixture that cannot be made ends the test with its reason.
#![allow(clippy::panic)]

use std::path::{Path, PathBuf};

use veriflash_core::plugin::file_device::FileDevice;
use veriflash_core::sig::SigningKey;
use veriflash_core::{
    AnchorSet, Error, ImageData, ImageSource, PackageSource, PackageSpec, Trust, TrustedTime,
    UnsignedPackage, Updater,
};

use crate::{MODEM_CHIPSET, MODEM_PRODUCT, file_layout, pseudo_random};

/// What a scenario does to the device before the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Device {
    /// A fresh device.
    Fresh,
    /// A device that runs security version 7 already.
    AtFloor7,
    /// A device another session holds for the whole run.
    Held,
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
];

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

/// A prepared run of a scenario: the package file, the target, and what holds the device.
#[derive(Debug)]
pub struct Prepared {
    /// The package file.
    pub package: PathBuf,
    /// The device's target string (`file:PATH`).
    pub target: String,
    /// The session that holds the device during the run ([`Device::Held`]).
    pub holder: Option<FileDevice>,
}

/// The package `kind` at `security_version`.
fn build(pki: &Pki, kind: Package) -> Result<Vec<u8>, Error> {
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
    })?;
    let (key, chain) = if kind == Package::ExpiredLeaf {
        &pki.expired
    } else {
        &pki.valid
    };
    let entry = unsigned.sign_with_certificates(key, chain.clone())?;
    let mut bytes = Vec::new();
    unsigned.write_to(
        &veriflash_core::format::SignatureBlock {
            entries: vec![entry],
        },
        &mut bytes,
    )?;
    if kind == Package::Truncated {
        bytes.truncate(bytes.len() - 100);
    }
    Ok(bytes)
}

impl Scenario {
    /// Prepares a run in `dir` (which it owns): the package file and the device as the
    /// scenario wants it.
    ///
    /// # Panics
    /// When the fixture cannot be made.
    #[must_use]
    pub fn prepare(&self, pki: &Pki, dir: &Path) -> Prepared {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{e}"));
        let package = dir.join("package.vfp");
        std::fs::write(
            &package,
            build(pki, self.package).unwrap_or_else(|e| panic!("{e}")),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let device = dir.join("device.img");
        let layout = file_layout(&[("boot", 64 << 10), ("system", 64 << 10)], &[]);
        drop(FileDevice::create(&device, &layout).unwrap_or_else(|e| panic!("{e}")));
        let target = format!("file:{}", device.display());
        if self.device == Device::AtFloor7 {
            let good = dir.join("good.vfp");
            std::fs::write(
                &good,
                build(pki, Package::Good).unwrap_or_else(|e| panic!("{e}")),
            )
            .unwrap_or_else(|e| panic!("{e}"));
            install(pki, &good, &target, false).unwrap_or_else(|e| panic!("{e}"));
        }
        let holder = (self.device == Device::Held)
            .then(|| FileDevice::open(&device).unwrap_or_else(|e| panic!("{e}")));
        Prepared {
            package,
            target,
            holder,
        }
    }
}

/// The library's leg: `package` installed on `target` through the `Updater`, trusting the
/// PKI's root, with or without a trusted clock.
///
/// # Errors
/// The install's error.
pub fn install(pki: &Pki, package: &Path, target: &str, no_clock: bool) -> Result<(), Error> {
    let anchors = AnchorSet::load(&pki.root)?;
    let time = if no_clock {
        TrustedTime::None
    } else {
        TrustedTime::System
    };
    Updater::builder(
        PackageSource::File(package.to_path_buf()),
        Trust::new(anchors).with_time(time),
    )
    .build()?
    .install(target)
    .map(drop)
}
