//! `veriflash demo`: the whole story in one command, in a temporary directory: keys, a package,
//! refusals of corrupted, tampered and forged copies, a flash to a file-backed device, and a
//! flash of a modem package (Firehose programmer, sbl, tz, boot, UBI system) to an emulated
//! MDM9607.

use std::path::Path;

use veriflash_core::format::HEADER_LEN;
use veriflash_core::{ErrorKind, PackageReader};

use crate::output::{Failure, error_text, human_size};
use crate::{device, flash, keygen, pack, verify};

const BOOT_SIZE: usize = 3 << 20;
const ROOTFS_SIZE: usize = 24 << 20;

/// Deterministic, incompressible-looking bytes (xorshift64*), so the demo needs no input files.
fn pseudo_random(len: usize, mut state: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), Failure> {
    std::fs::write(path, bytes).map_err(|e| {
        Failure::text(veriflash_core::Error::new(
            ErrorKind::Io,
            format!("{}: {e}", path.display()),
        ))
    })
}

fn read(path: &Path) -> Result<Vec<u8>, Failure> {
    std::fs::read(path).map_err(|e| {
        Failure::text(veriflash_core::Error::new(
            ErrorKind::Io,
            format!("{}: {e}", path.display()),
        ))
    })
}

/// Verifies `package` and insists that it is refused with `expected`.
fn expect_refusal(trust: &Path, package: &Path, expected: ErrorKind) -> Result<(), Failure> {
    match verify::check(trust, package) {
        Ok(_) => Err(Failure::Unexpected(format!(
            "{} verified, but it should have been refused",
            package.display()
        ))),
        Err(e) if e.kind() == expected => {
            println!("refused, as it must be:");
            for line in error_text(&e).lines() {
                println!("    {line}");
            }
            println!();
            Ok(())
        }
        Err(e) => Err(Failure::Unexpected(format!(
            "{} was refused with code {} ({}) instead of {} ({})",
            package.display(),
            e.code(),
            e.kind().name(),
            expected.code(),
            expected.name()
        ))),
    }
}

pub(crate) fn run() -> Result<(), Failure> {
    let tmp = tempfile::tempdir().map_err(|e| {
        Failure::text(veriflash_core::Error::new(
            ErrorKind::Io,
            format!("creating a temporary directory: {e}"),
        ))
    })?;
    let dir = tmp.path();
    println!("veriflash demo, working in {}\n", dir.display());

    println!("1. A vendor signing key (veriflash keygen --out vendor.pem)");
    let key_path = dir.join("vendor.pem");
    keygen::run(&key_path, false)?;
    let trust = veriflash_core::trust::public_key_path(&key_path);
    println!();

    println!(
        "2. Two images, boot ({}) and rootfs ({}), packed and signed (veriflash pack)",
        human_size(BOOT_SIZE as u64),
        human_size(ROOTFS_SIZE as u64)
    );
    write(
        &dir.join("boot.img"),
        &pseudo_random(BOOT_SIZE, 0x9E37_79B9_7F4A_7C15),
    )?;
    write(
        &dir.join("rootfs.img"),
        &pseudo_random(ROOTFS_SIZE, 0xD1B5_4A32_D192_ED03),
    )?;
    let description = "product = \"acme-hotspot-x1\"\nchipset = \"mdm9607\"\nversion = \"2.4.0\"\n\
        security_version = 7\nhardware_revisions = [\"r2\", \"r3\"]\n\n\
        [[image]]\nname = \"boot\"\npartition = \"boot\"\nfile = \"boot.img\"\n\n\
        [[image]]\nname = \"rootfs\"\npartition = \"system\"\nfile = \"rootfs.img\"\n";
    let manifest = dir.join("update.toml");
    write(&manifest, description.as_bytes())?;
    let package = dir.join("update.vfp");
    pack::run(&manifest, &key_path, &package)?;
    println!();

    println!(
        "3. Verify it against the vendor's public key (veriflash verify --trust vendor.pub.pem update.vfp)"
    );
    let report = verify::check(&trust, &package).map_err(Failure::text)?;
    verify::print_report(&report);
    println!();

    let original = read(&package)?;
    let prefix = PackageReader::open(&package).map_err(Failure::text)?;
    let manifest_len = usize::try_from(prefix.header().manifest_len).unwrap_or(usize::MAX);
    let payload_len = usize::try_from(prefix.header().payload_len).unwrap_or(usize::MAX);
    let payload_start = original.len().saturating_sub(payload_len);

    println!(
        "4. A copy with one payload byte flipped in the middle of rootfs, as a bad download would have"
    );
    let mut corrupt = original.clone();
    let at = payload_start + BOOT_SIZE + ROOTFS_SIZE / 2;
    if let Some(byte) = corrupt.get_mut(at) {
        *byte ^= 0x01;
    }
    let corrupt_path = dir.join("corrupted.vfp");
    write(&corrupt_path, &corrupt)?;
    expect_refusal(&trust, &corrupt_path, ErrorKind::IntegrityMismatch)?;

    println!("5. A copy whose manifest was edited (one byte), as an attacker would");
    let mut tampered = original.clone();
    if let Some(byte) = tampered.get_mut(HEADER_LEN + manifest_len - 1) {
        *byte ^= 0x80;
    }
    let tampered_path = dir.join("tampered.vfp");
    write(&tampered_path, &tampered)?;
    expect_refusal(&trust, &tampered_path, ErrorKind::NotAuthentic)?;

    println!("6. The same images signed by someone else's key");
    let other_key = dir.join("attacker.pem");
    keygen::generate(&other_key, false)?;
    let forged = dir.join("forged.vfp");
    let loaded =
        crate::manifest_toml::load(&manifest, veriflash_plugin::config::UnknownKeys::Refuse)?;
    let other = veriflash_core::trust::load_signing_key(&other_key)?;
    veriflash_core::UnsignedPackage::prepare(loaded.spec)?.write_signed(&[&other], &forged)?;
    expect_refusal(&trust, &forged, ErrorKind::UnknownSigner)?;

    println!("7. Flash it to a file-backed device (veriflash device init / flash / status)");
    let layout = "product = \"acme-hotspot-x1\"\nchipset = \"mdm9607\"\nhardware_revision = \"r2\"\n\
        [[partition]]\nname = \"boot\"\nsize = 4194304\nab = true\n\
        [[partition]]\nname = \"system\"\nsize = 33554432\nab = true\n\
        [[partition]]\nname = \"efs2\"\nsize = 1048576\n";
    let layout_path = dir.join("layout.toml");
    write(&layout_path, layout.as_bytes())?;
    let target = format!("file:{}", dir.join("device.img").display());
    device::init(&layout_path, &target)?;
    flash::run_simple(&package, &trust, &target)?;
    println!();
    device::status(&target, false, false)?;
    println!();

    println!("8. The tampered copy, flashed to the same device");
    let before = read(&dir.join("device.img"))?;
    match flash::run_simple(&tampered_path, &trust, &target) {
        Err(Failure::Error { error, .. }) if error.kind() == ErrorKind::NotAuthentic => {
            println!("refused, as it must be:");
            for line in error_text(&error).lines() {
                println!("    {line}");
            }
        }
        Err(other) => return Err(other),
        Ok(()) => return Err(Failure::Unexpected("a tampered package was flashed".into())),
    }
    if read(&dir.join("device.img"))? != before {
        return Err(Failure::Unexpected(
            "a refused package changed the device".into(),
        ));
    }
    println!("    the device file is byte-for-byte unchanged\n");

    mdm9607(dir, &key_path, &trust)?;

    println!(
        "demo complete: the authentic package verified and installed; the corrupted, tampered and forged ones were refused."
    );
    Ok(())
}

/// Sizes of the emulated MDM9607's images: small, so the whole flash takes well under a second.
const MDM_IMAGES: [(&str, usize); 4] = [
    ("sbl", 300_017),
    ("tz", 100_005),
    ("boot", 1_000_123),
    ("system", 2_000_077),
];

/// A UBI-like image: an erase-counter header (`UBI#`) at the start of every 128 KiB block.
fn ubi_like(len: usize, seed: u64) -> Vec<u8> {
    let mut image = pseudo_random(len, seed);
    for at in (0..len).step_by(128 * 1024) {
        if let Some(header) = image.get_mut(at..at + 4) {
            header.copy_from_slice(b"UBI#");
        }
    }
    image
}

/// Steps 9 and 10: a package with the Firehose programmer, sbl, tz, boot and a UBI-like system
/// image, flashed through the `mdm9x07:emulator` target (Sahara identity and HWID gate, the
/// programmer served from the verified package, MIBIB, erase, program, read-back, reset), then
/// the same device's status.
fn mdm9607(dir: &Path, key: &Path, trust: &Path) -> Result<(), Failure> {
    println!(
        "9. An MDM9607 modem package: the Firehose programmer first, then sbl, tz, boot and a UBI system image"
    );
    let mdm = dir.join("mdm9607");
    std::fs::create_dir_all(&mdm).map_err(|e| {
        Failure::text(veriflash_core::Error::new(
            ErrorKind::Io,
            format!("{}: {e}", mdm.display()),
        ))
    })?;
    write(
        &mdm.join("prog_nand_firehose_9x07.mbn"),
        &veriflash_mdm9x07::emulator::test_programmer(&pseudo_random(20_000, 11)),
    )?;
    let mut description = String::from(
        "product = \"acme-hotspot-x1\"\nchipset = \"mdm9607\"\nversion = \"2.4.0\"\n\
         security_version = 7\nhardware_revisions = [\"r2\"]\nchunk_size = 65536\n\n\
         [[image]]\nname = \"programmer\"\npartition = \"programmer\"\nfile = \"prog_nand_firehose_9x07.mbn\"\n",
    );
    for (i, (name, len)) in (12u64..).zip(MDM_IMAGES) {
        let bytes = if name == "system" {
            ubi_like(len, i)
        } else {
            pseudo_random(len, i)
        };
        write(&mdm.join(format!("{name}.img")), &bytes)?;
        description.push_str(&format!(
            "\n[[image]]\nname = \"{name}\"\npartition = \"{name}\"\nfile = \"{name}.img\"\n"
        ));
    }
    let manifest = mdm.join("update.toml");
    write(&manifest, description.as_bytes())?;
    let package = mdm.join("mdm9607.vfp");
    pack::run(&manifest, key, &package)?;
    println!();

    println!(
        "10. Flash it to an emulated MDM9607 in download mode (veriflash flash --target mdm9x07:emulator)"
    );
    let anchors = veriflash_core::trust::load_trust_anchors(trust)?;
    let verifier = veriflash_core::sig::Verifier::new(&anchors);
    let mut session = crate::plugins::configured()
        .map_err(Failure::text)?
        .open("mdm9x07:emulator")
        .map_err(|e| Failure::text(veriflash_core::flash::device_error(e)))?;
    let reader = veriflash_core::PackageReader::open(&package).map_err(Failure::text)?;
    let mut milestones = crate::output::Milestones::every(25);
    let mut phase = "flash";
    veriflash_core::install_package(
        reader,
        &verifier,
        &veriflash_core::InstallPolicy::default(),
        session.as_mut(),
        &veriflash_core::CancelToken::new(),
        &mut |event| match event {
            veriflash_core::Event::PhaseStarted(veriflash_core::Phase::Load) => phase = "load",
            veriflash_core::Event::PhaseFinished(p) => {
                phase = "flash";
                println!("    {:<12} ok", p.name());
            }
            veriflash_core::Event::Progress {
                image, done, total, ..
            } => {
                if let Some(percent) = milestones.reached(*done, *total) {
                    println!(
                        "    {phase:<12} {percent:>3}%  {} of {}  ({image})",
                        human_size(*done),
                        human_size(*total)
                    );
                }
            }
            _ => {}
        },
    )?;
    println!("    every image was read back through Firehose and matched; the modem was reset\n");

    println!("    the same modem's status, as its session reports it after the reset:");
    let status = session
        .status()
        .map_err(|e| Failure::text(veriflash_core::flash::device_error(e)))?;
    let info = &status.info;
    println!("    product         {}", info.product);
    println!(
        "    chipset         {} (hardware revision {})",
        info.chipset, info.hardware_revision
    );
    println!(
        "    storage         NAND, {} pages, {} erase blocks",
        human_size(u64::from(info.geometry.write_unit)),
        human_size(u64::from(info.geometry.erase_block))
    );
    let partitions: Vec<String> = info
        .partitions
        .iter()
        .map(|p| {
            if p.protected {
                format!("{} (protected)", p.name)
            } else {
                p.name.clone()
            }
        })
        .collect();
    println!("    partitions      {}", partitions.join(", "));
    match &status.last_result {
        Some(r) => println!("    last result     {} ({})", r.message, r.code),
        None => println!("    last result     none"),
    }
    println!();
    Ok(())
}
