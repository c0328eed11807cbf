//! The plugin as an embedder sets it up (`Plugin::configure` with a `PluginEnvironment`):
//! journals and protected-partition copies land in the state directory, and the user's product
//! table names the chip.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::sync::{Arc, Mutex};

use veriflash_core::sig::{PinnedKeys, SigningKey, Verifier};
use veriflash_core::{CancelToken, InstallPolicy, install};
use veriflash_mdm9x07::emulator::{DeviceFaults, Emulator, EmulatorConfig, test_programmer};
use veriflash_mdm9x07::transport::{Framing, MemoryTransport};
use veriflash_mdm9x07::{Mdm9x07Plugin, Mdm9x07Session};
use veriflash_plugin::{Plugin, PluginEnvironment};
use veriflash_test_support::{modem_package, pseudo_random};

fn images() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("programmer", test_programmer(&pseudo_random(3_000, 5))),
        ("sbl", pseudo_random(5_000, 6)),
        ("tz", pseudo_random(2_100, 7)),
        ("boot", pseudo_random(4_096, 8)),
        ("system", pseudo_random(6_001, 9)),
    ]
}

/// Installs `package` on `device` through a session made with `plugin`'s configuration.
fn flash(
    plugin: &Mdm9x07Plugin,
    device: &Arc<Mutex<Emulator>>,
    package: &[u8],
    key: &SigningKey,
) -> Result<(), veriflash_core::Error> {
    let transport = MemoryTransport::new(device.clone(), Framing::Packet);
    let mut session = Mdm9x07Session::new(transport, plugin.config().clone());
    let mut anchors = PinnedKeys::new();
    anchors.add(key.verifying_key());
    install(
        package,
        &Verifier::new(&anchors),
        &InstallPolicy::default(),
        &mut session,
        &CancelToken::new(),
        &mut |_| {},
    )
    .map(|_| ())
}

fn configured(state: Option<&Path>, config: Option<&Path>) -> Mdm9x07Plugin {
    let mut plugin = Mdm9x07Plugin::default();
    plugin
        .configure(&PluginEnvironment {
            state_dir: state.map(Path::to_owned),
            config_dir: config.map(Path::to_owned),
        })
        .unwrap();
    plugin
}

#[test]
fn a_configured_plugin_journals_in_the_state_dir_and_copies_protected_partitions_under_it() {
    let state = tempfile::tempdir().unwrap();
    let plugin = configured(Some(state.path()), None);
    let key = SigningKey::generate_p256().unwrap();
    let package = modem_package(&key, &images()).unwrap();
    let emulated = EmulatorConfig::mdm9607();
    let serial = format!("mdm9x07-{:08x}", emulated.serial);
    let page = emulated.page_size as u64;
    let device = Arc::new(Mutex::new(Emulator::new(emulated).unwrap()));
    // Power lost inside `boot`, after `sbl` and `tz` were programmed.
    let sbl_tz = 5_000u64.div_ceil(page) + 2_100u64.div_ceil(page);
    device.lock().unwrap().set_faults(DeviceFaults {
        power_cut_at_page_program: Some(sbl_tz + 1),
        ..DeviceFaults::default()
    });
    flash(&plugin, &device, &package, &key).unwrap_err();

    // The journal is in the state directory itself, one file per chip serial number.
    let journal = std::fs::read_to_string(state.path().join(format!("{serial}.journal"))).unwrap();
    assert!(
        journal.contains("done sbl") && journal.contains("done tz"),
        "{journal}"
    );
    assert!(!journal.contains("done boot"), "{journal}");
    // The copies were made before anything was erased, under backups/.
    let copies = state.path().join("backups").join(&serial);
    assert!(copies.join("efs2.bin").is_file());
    assert!(copies.join("mibib.bin").is_file());

    // The second run finishes the job and the journal goes.
    {
        let mut d = device.lock().unwrap();
        d.set_faults(DeviceFaults::default());
        d.power_on();
    }
    let before = device.lock().unwrap().nand().page_programs();
    flash(&plugin, &device, &package, &key).unwrap();
    let programs = device.lock().unwrap().nand().page_programs() - before;
    assert_eq!(
        programs,
        4_096u64.div_ceil(page) + 6_001u64.div_ceil(page),
        "sbl and tz were not programmed again"
    );
    assert!(!state.path().join(format!("{serial}.journal")).exists());
}

#[test]
fn the_users_product_table_names_the_chip() {
    let config = tempfile::tempdir().unwrap();
    std::fs::write(
        config.path().join(veriflash_mdm9x07::products::FILE),
        "[[product]]\noem_id = 0x1234\nmodel_id = 0x0001\nproduct = \"vendor-x3\"\nhardware_revision = \"r7\"\n",
    )
    .unwrap();
    let plugin = configured(None, Some(config.path()));
    let info = plugin.open("emulator").unwrap().device_info().unwrap();
    assert_eq!(
        (info.product.as_str(), info.hardware_revision.as_str()),
        ("vendor-x3", "r7")
    );
    // Unconfigured, the built-in table names it.
    let info = Mdm9x07Plugin::default()
        .open("emulator")
        .unwrap()
        .device_info()
        .unwrap();
    assert_eq!(info.product, "acme-hotspot-x1");
}
