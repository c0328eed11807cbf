//! The acceptance of a stock vendor bundle: the EC25's `rawprogram_nand_p4K_b256K_update.xml`
//! (no labels, erases, a MIBIB rewrite; `tests/fixtures/ec25`) is planned by `start_sector`
//! through the bundle's own MIBIB, packed with its geometry and its partition-table step,
//! and flashed into an emulated 4K/256K MDM9207 through `veriflash_core::install`; and what
//! must be refused is, before anything is written.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use veriflash_core::sig::{PinnedKeys, SigningKey, Verifier};
use veriflash_core::{
    CancelToken, ErrorKind, ImageData, ImageSource, InstallPolicy, PackageSpec, UnsignedPackage,
    install,
};
use veriflash_mdm9x07::emulator::{DeviceFaults, Emulator, EmulatorConfig, test_programmer};
use veriflash_mdm9x07::geometry::{GEOMETRY_PARTITION, NandGeometry};
use veriflash_mdm9x07::mibib::Table;
use veriflash_mdm9x07::rawprogram::{self, ImportOptions};
use veriflash_mdm9x07::transport::{Framing, MemoryTransport};
use veriflash_mdm9x07::{Mdm9x07Session, ProductId, SessionConfig};
use veriflash_test_support::{pseudo_random, sign_and_write};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/ec25")
        .join(name)
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(fixture(name)).unwrap()
}

/// The bundle's plan: images by `start_sector` through the MIBIB found among its files.
fn plan() -> (rawprogram::ImportPlan, Table) {
    let raw = rawprogram::parse_rawprogram(&read("rawprogram_nand_p4K_b256K_update.xml")).unwrap();
    let (file, table) =
        rawprogram::find_bundle_table(&raw, &mut |f| std::fs::read(fixture(f)).ok()).unwrap();
    assert_eq!(file, "partition_complete_p4K_b256K.mbn");
    let plan = rawprogram::plan_import(
        &raw,
        &[],
        &ImportOptions {
            tables: std::slice::from_ref(&table),
            partition_table: true,
        },
    )
    .unwrap();
    (plan, table)
}

/// The package `import-qdl` + `pack` make of the bundle: programmer, geometry, MIBIB, SBL.
fn package(key: &SigningKey, geometry: NandGeometry) -> Vec<u8> {
    let (plan, _) = plan();
    let mut images = vec![
        ImageSource::new(
            "programmer",
            "programmer",
            ImageData::Bytes(test_programmer(&pseudo_random(3_000, 5))),
        ),
        ImageSource::new(
            GEOMETRY_PARTITION,
            GEOMETRY_PARTITION,
            ImageData::Bytes(geometry.descriptor()),
        ),
    ];
    for image in &plan.images {
        images.push(ImageSource::new(
            image.partition.clone(),
            image.partition.clone(),
            ImageData::Bytes(read(&image.file)),
        ));
    }
    let unsigned = UnsignedPackage::prepare(PackageSpec {
        product: "quectel-ec25".into(),
        chipset: "mdm9207".into(),
        hardware_revisions: Vec::new(),
        software_version: "EC25EFAR06A09M4G".into(),
        security_version: 1,
        images,
    })
    .unwrap();
    sign_and_write(&unsigned, &[key]).unwrap()
}

fn config(state: &Path, allow: bool) -> SessionConfig {
    SessionConfig {
        products: vec![ProductId {
            oem_id: 0x1234,
            model_id: 0x0025,
            product: "quectel-ec25".into(),
            hardware_revision: "r1".into(),
        }],
        backup_dir: Some(state.join("backups")),
        journal_dir: Some(state.to_owned()),
        allow_partition_table: allow,
        ..SessionConfig::default()
    }
}

fn flash(
    device: &Arc<Mutex<Emulator>>,
    pkg: &[u8],
    key: &SigningKey,
    config: SessionConfig,
) -> Result<(), veriflash_core::Error> {
    let link = MemoryTransport::new(device.clone(), Framing::Packet);
    let mut session = Mdm9x07Session::new(link, config);
    let mut anchors = PinnedKeys::new();
    anchors.add(key.verifying_key());
    install(
        pkg,
        &Verifier::new(&anchors),
        &InstallPolicy::default(),
        &mut session,
        &CancelToken::new(),
        &mut |_| {},
    )
    .map(|_| ())
}

fn ec25() -> Arc<Mutex<Emulator>> {
    Arc::new(Mutex::new(
        Emulator::new(EmulatorConfig::mdm9207_ec25()).unwrap(),
    ))
}

const P4K_B256K: NandGeometry = NandGeometry {
    page_size: 4096,
    pages_per_block: 64,
};

/// The first `len` bytes from sector 0, as a host reads them.
fn sectors_from(device: &Arc<Mutex<Emulator>>, first: u64, len: usize) -> Vec<u8> {
    let d = device.lock().unwrap();
    let mut bytes = d.nand().read_skipping(first, len.div_ceil(4096) as u64);
    bytes.truncate(len);
    bytes
}

/// The table the device's MIBIB block (sector 640) holds now.
fn device_table(device: &Arc<Mutex<Emulator>>) -> Table {
    Table::parse(&sectors_from(device, 641, 4096)).unwrap()
}

#[test]
fn the_stock_bundle_is_placed_by_start_sector_through_its_own_mibib() {
    let raw = rawprogram::parse_rawprogram(&read("rawprogram_nand_p4K_b256K_update.xml")).unwrap();
    assert_eq!((raw.programs.len(), raw.erases.len()), (2, 2));
    assert!(raw.programs.iter().all(|p| p.label.is_empty()));
    let (plan, table) = plan();
    let names: Vec<String> = table.entries.iter().map(|e| e.name()).collect();
    assert_eq!(names, ["sbl", "mibib"]);
    let parts: Vec<&str> = plan.images.iter().map(|i| i.partition.as_str()).collect();
    assert_eq!(parts, ["mibib", "sbl"], "the table step first");
    assert!(plan.rewrites_partition_table);
    assert_eq!(plan.geometry, Some(P4K_B256K));
    assert_eq!(
        plan.notes
            .iter()
            .filter(|n| n.contains("is implied"))
            .count(),
        2,
        "{:?}",
        plan.notes
    );

    // Without --with-partition-table, the erase of the MIBIB cannot be expressed.
    let err = rawprogram::plan_import(
        &raw,
        &[],
        &ImportOptions {
            tables: std::slice::from_ref(&table),
            partition_table: false,
        },
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("erase #2") && err.contains("--with-partition-table"),
        "{err}"
    );
    // Without a table, an entry with no label lands nowhere.
    let err = rawprogram::plan_import(&raw, &[], &ImportOptions::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("no partition table"), "{err}");
}

#[test]
fn entries_that_do_not_land_exactly_on_a_partition_are_refused() {
    let (_, table) = plan();
    let xml = String::from_utf8(read("rawprogram_nand_p4K_b256K_update.xml")).unwrap();
    for (from, to, want) in [
        (
            r#"num_partition_sectors="640" physical_partition_number="0" start_sector="0"/>
</data>"#,
            r#"num_partition_sectors="640" physical_partition_number="0" start_sector="64"/>
</data>"#,
            "lands inside partition 'sbl'",
        ),
        (
            r#"num_partition_sectors="640" physical_partition_number="0" start_sector="0"/>
</data>"#,
            r#"num_partition_sectors="600" physical_partition_number="0" start_sector="0"/>
</data>"#,
            "covers 600 sectors",
        ),
        (
            r#"num_partition_sectors="640" physical_partition_number="0" start_sector="0"/>
</data>"#,
            r#"num_partition_sectors="640" physical_partition_number="0" start_sector="1280"/>
</data>"#,
            "no partition starts at block 20",
        ),
        (
            r#"num_partition_sectors="640" physical_partition_number="0" start_sector="0"/>
</data>"#,
            r#"num_partition_sectors="640" physical_partition_number="0" start_sector="3"/>
</data>"#,
            "not the first sector of an erase block",
        ),
        (
            r#"PAGES_PER_BLOCK="64" SECTOR_SIZE_IN_BYTES="4096" filename="sbl1.mbn""#,
            r#"PAGES_PER_BLOCK="32" SECTOR_SIZE_IN_BYTES="4096" filename="sbl1.mbn""#,
            "one NAND geometry",
        ),
    ] {
        let bad = xml.replace(from, to);
        assert_ne!(bad, xml);
        let raw = rawprogram::parse_rawprogram(bad.as_bytes()).unwrap();
        let err = rawprogram::plan_import(
            &raw,
            &[],
            &ImportOptions {
                tables: std::slice::from_ref(&table),
                partition_table: true,
            },
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains(want), "{want}: {err}");
    }
}

#[test]
fn the_stock_bundle_flashes_an_ec25_including_its_mibib_step() {
    let key = SigningKey::generate_p256().unwrap();
    let pkg = package(&key, P4K_B256K);
    let state = tempfile::tempdir().unwrap();
    let dev = ec25();
    let old = device_table(&dev);
    assert_eq!(old.entries.len(), 9);
    flash(&dev, &pkg, &key, config(state.path(), true)).unwrap();

    let sbl1 = read("sbl1.mbn");
    assert_eq!(
        sectors_from(&dev, 0, sbl1.len()),
        sbl1,
        "sector 0 holds sbl1"
    );
    assert_eq!(&sectors_from(&dev, 0, 4), &0x844B_DCD1u32.to_le_bytes());
    let mibib = read("partition_complete_p4K_b256K.mbn");
    assert_eq!(sectors_from(&dev, 640, mibib.len()), mibib);
    let names: Vec<String> = device_table(&dev)
        .entries
        .iter()
        .map(|e| e.name())
        .collect();
    assert_eq!(names, ["sbl", "mibib"], "the device runs the new table");
    // The old table was kept before it was replaced.
    let kept = std::fs::read(
        state
            .path()
            .join("backups/mdm9x07-0ec25001/mibib-before-rewrite.bin"),
    )
    .unwrap();
    assert_eq!(rawprogram::find_table(&kept, 4096), Some(old));
    assert_eq!(dev.lock().unwrap().resets(), 1, "reset after the commit");
}

#[test]
fn a_mibib_rewrite_is_refused_unless_the_policy_allows_it() {
    let key = SigningKey::generate_p256().unwrap();
    let pkg = package(&key, P4K_B256K);
    let state = tempfile::tempdir().unwrap();
    let dev = ec25();
    let programs = dev.lock().unwrap().nand().page_programs();
    let err = flash(&dev, &pkg, &key, config(state.path(), false)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ProtectedPartition, "{err}");
    assert_eq!(dev.lock().unwrap().nand().page_programs(), programs);
    assert_eq!(dev.lock().unwrap().nand().block_erases(), 0);
}

#[test]
fn a_package_for_another_geometry_is_refused_before_anything_is_written() {
    let key = SigningKey::generate_p256().unwrap();
    let two_k = NandGeometry {
        page_size: 2048,
        pages_per_block: 64,
    };
    let pkg = package(&key, two_k);
    let state = tempfile::tempdir().unwrap();
    let dev = ec25();
    let programs = dev.lock().unwrap().nand().page_programs();
    let err = flash(&dev, &pkg, &key, config(state.path(), true)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::WrongHardwareRevision, "{err}");
    assert_eq!(err.code(), 42);
    let message = err.to_string();
    assert!(
        message.contains("p2K_b128K") && message.contains("p4K_b256K"),
        "{message}"
    );
    assert_eq!(dev.lock().unwrap().nand().page_programs(), programs);
    assert_eq!(dev.lock().unwrap().nand().block_erases(), 0);
}

#[test]
fn a_power_cut_at_every_page_program_of_the_mibib_step_leaves_a_recoverable_device() {
    let key = SigningKey::generate_p256().unwrap();
    let pkg = package(&key, P4K_B256K);
    let probe_state = tempfile::tempdir().unwrap();
    let probe = ec25();
    let before = probe.lock().unwrap().nand().page_programs();
    flash(&probe, &pkg, &key, config(probe_state.path(), true)).unwrap();
    let per_flash = probe.lock().unwrap().nand().page_programs() - before;
    // 2 MIBIB pages, then 11 SBL pages.
    assert_eq!(per_flash, 13);
    let sbl1 = read("sbl1.mbn");
    let mibib = read("partition_complete_p4K_b256K.mbn");
    for n in 1..=per_flash {
        let state = tempfile::tempdir().unwrap();
        let dev = ec25();
        dev.lock().unwrap().set_faults(DeviceFaults {
            power_cut_at_page_program: Some(n),
            ..DeviceFaults::default()
        });
        let err = flash(&dev, &pkg, &key, config(state.path(), true)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Timeout, "cut at {n}: {err}");
        {
            let mut d = dev.lock().unwrap();
            d.set_faults(DeviceFaults::default());
            // Whatever NAND holds, the boot ROM's download mode answers: EDL recovers it.
            d.power_on();
        }
        flash(&dev, &pkg, &key, config(state.path(), true))
            .unwrap_or_else(|e| panic!("re-run after a cut at page program {n}: {e}"));
        assert_eq!(sectors_from(&dev, 0, sbl1.len()), sbl1, "cut at {n}");
        assert_eq!(sectors_from(&dev, 640, mibib.len()), mibib, "cut at {n}");
    }
}

#[test]
fn an_unknown_modem_is_refused_with_the_product_table_lines_to_add() {
    let key = SigningKey::generate_p256().unwrap();
    let pkg = package(&key, P4K_B256K);
    let state = tempfile::tempdir().unwrap();
    let dev = ec25();
    let config = SessionConfig {
        products: Vec::new(),
        products_file: Some(PathBuf::from("/etc/veriflash/mdm9x07-products.toml")),
        ..config(state.path(), true)
    };
    let err = flash(&dev, &pkg, &key, config).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::WrongProduct, "{err}");
    let remedy = err.remedy();
    assert!(
        remedy.contains("add these lines to /etc/veriflash/mdm9x07-products.toml"),
        "{remedy}"
    );
    assert!(
        remedy.contains(
            "[[product]]\noem_id = 0x1234\nmodel_id = 0x0025\nproduct = \"quectel-ec25\"\nhardware_revision = \"r1\"\n"
        ),
        "{remedy}"
    );
    assert!(remedy.contains("HWID 0x000480e112340025"), "{remedy}");
    assert!(remedy.contains("OEM PK hash "), "{remedy}");
    // The lines parse as the product table they are meant for.
    let lines = remedy.split_once("run again:\n\n").unwrap().1;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(veriflash_mdm9x07::products::FILE), lines).unwrap();
    let products = veriflash_mdm9x07::products::load(dir.path()).unwrap();
    assert_eq!(products[0].product, "quectel-ec25");
    assert_eq!((products[0].oem_id, products[0].model_id), (0x1234, 0x0025));
}
