//! Flash a package to the file-backed reference device from your own program, showing progress.
//!
//! ```sh
//! cargo run --example flash_progress                                   # self-contained demo
//! cargo run --example flash_progress -- KEY.pub.pem PKG file:DEVICE.img  # your own files
//! ```
//!
//! Without arguments it makes a signing key, a 6 MiB two-image package and a device (a file
//! that behaves like a small NAND A/B device) in a temporary directory. With arguments it
//! flashes `PKG` to an existing device (`veriflash device init --layout ... file:DEVICE.img`).
//!
//! `veriflash::core::install` runs the whole order — signatures, policy, verified chunks to the
//! device, read-back, atomic commit — and reports each step as an [`Event`]: phases starting
//! and finishing, and progress in bytes, weighted over all images so one bar tells the truth
//! from start to end. The callback runs on the calling thread; a [`CancelToken`] (cancelled
//! from another thread, a signal handler, a UI button) stops the install between two chunks,
//! leaving the device on its current slot.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use veriflash::core::format::SignatureBlock;
use veriflash::core::{
    CancelToken, Event, ImageData, ImageSource, InstallPolicy, PackageSpec, Phase, UnsignedPackage,
    install,
};
use veriflash::plugin::file_device::{FileDevice, Layout};
use veriflash::plugin::{PartitionInfo, Registry, Slot, StorageGeometry};
use veriflash::sig::{PinnedKeys, SigningKey, Verifier};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = tempfile::tempdir()?;
    let (trust, package, target) = match args.as_slice() {
        [trust, package, target] => (
            veriflash::core::trust::load_trust_anchors(Path::new(trust))?,
            PathBuf::from(package),
            target.clone(),
        ),
        [] => demo_setup(dir.path())?,
        _ => return Err("usage: flash_progress [KEY.pub.pem PKG file:DEVICE.img]".into()),
    };

    // The registry picks the plugin from the target's prefix; `with_builtin` has `file:`.
    let mut session = Registry::with_builtin().open(&target)?;
    let before = session.device_info()?;
    println!(
        "{target}: {} / {}, slot {} active, rollback floor {}",
        before.product,
        before.chipset,
        before.active_slot.map_or("-", Slot::name),
        before.security_floor
    );

    let started = Instant::now();
    let mut last_percent = None;
    let mut on_event = |event: &Event| match event {
        Event::PhaseStarted(Phase::Flash) => println!("flash"),
        Event::PhaseFinished(phase) => {
            if *phase == Phase::Flash {
                println!();
            }
            println!("  {:<10} ok  ({:.2?})", phase.name(), started.elapsed());
        }
        Event::Progress {
            image, done, total, ..
        } => {
            let percent = done.saturating_mul(100).checked_div(*total).unwrap_or(100);
            if last_percent != Some(percent) {
                last_percent = Some(percent);
                let filled = usize::try_from(percent / 5).unwrap_or(20);
                print!(
                    "\r  [{:<20}] {percent:>3}%  {} / {} KiB  {image:<10}",
                    "#".repeat(filled),
                    done / 1024,
                    total / 1024
                );
                let _ = std::io::stdout().flush();
            }
        }
        Event::Warning(text) => println!("  warning: {text}"),
        Event::Finished(code) => println!(
            "finished: {}",
            code.map_or("ok".into(), |c| format!("error {c}"))
        ),
        _ => {}
    };

    let report = install(
        std::fs::File::open(&package)?,
        &Verifier::new(&trust),
        &InstallPolicy::default(),
        session.as_mut(),
        &CancelToken::new(),
        &mut on_event,
    )?;

    let after = session.status()?;
    println!(
        "installed {} {}: slot {} active, rollback floor {}, last result: {}",
        report.product,
        report.software_version,
        after.info.active_slot.map_or("-", Slot::name),
        after.info.security_floor,
        after.last_result.map_or_else(String::new, |r| r.message)
    );
    Ok(())
}

/// A key, a signed two-image package and a fresh file-backed device in `dir`.
fn demo_setup(dir: &Path) -> Result<(PinnedKeys, PathBuf, String), Box<dyn std::error::Error>> {
    let key = SigningKey::generate_p256()?;
    let boot: Vec<u8> = (0..=250u8).cycle().take(1 << 20).collect();
    let rootfs: Vec<u8> = (0..=200u8).rev().cycle().take(5 << 20).collect();
    let mut images = vec![
        ImageSource::new("boot", "boot", ImageData::Bytes(boot)),
        ImageSource::new("rootfs", "system", ImageData::Bytes(rootfs)),
    ];
    for image in &mut images {
        image.chunk_size = 256 * 1024;
    }
    let unsigned = UnsignedPackage::prepare(PackageSpec {
        product: "acme-hotspot-x1".into(),
        chipset: "mdm9607".into(),
        hardware_revisions: vec!["r2".into()],
        software_version: "2.4.0".into(),
        security_version: 7,
        images,
    })?;
    let package = dir.join("update.vfp");
    let signatures = SignatureBlock {
        entries: vec![unsigned.sign(&key)?],
    };
    unsigned.write_to(&signatures, &mut std::fs::File::create(&package)?)?;

    let device = dir.join("device.img");
    let partition = |name: &str, size: u64| PartitionInfo {
        name: name.into(),
        size,
        slotted: true,
        protected: false,
    };
    FileDevice::create(
        &device,
        &Layout {
            product: "acme-hotspot-x1".into(),
            chipset: "mdm9607".into(),
            hardware_revision: "r2".into(),
            geometry: StorageGeometry {
                erase_block: 65536,
                write_unit: 4096,
            },
            partitions: vec![partition("boot", 2 << 20), partition("system", 8 << 20)],
        },
    )?;

    let mut trust = PinnedKeys::new();
    trust.add(key.verifying_key());
    Ok((trust, package, format!("file:{}", device.display())))
}
