//! `veriflash emulate mdm9x07 --pty`, `flash`/`status --target mdm9x07:serial:/dev/pts/N`
//! and `devices`, as a user runs them: separate processes, a real pseudo-terminal between them.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;
use common::{Emulated, mdm9607_package, ok, serve_dir, stderr, veriflash};

use std::path::Path;

use serde_json::Value;

#[test]
fn flashes_through_the_pty_emulator_then_status_identifies_it_again() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    mdm9607_package(dir, 150_000, 300_000);
    let emulated = Emulated::start(&[]);
    let target = emulated.target();
    let out = veriflash(
        &[
            "flash",
            "update.vfp",
            "--trust",
            "vendor.pub.pem",
            "--target",
            &target,
            "--json",
        ],
        dir,
    );
    let stdout = ok(&out);
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let finished = &lines[lines.len() - 2];
    assert_eq!(finished["event"], "finished", "{stdout}");
    assert_eq!(
        finished["code"],
        Value::Null,
        "success carries no error code: {stdout}"
    );
    // The last line: a single-slot modem, now at the package's version and floor.
    let last = lines.last().unwrap();
    assert_eq!(last["ok"], true, "{stdout}");
    assert_eq!(last["installed"]["slot"], Value::Null, "{stdout}");
    assert_eq!(last["installed"]["chipset"], "mdm9607", "{stdout}");
    assert_eq!(last["installed"]["security_floor"], 7, "{stdout}");
    for phase in ["flash", "read_back", "commit"] {
        assert!(
            lines
                .iter()
                .any(|l| l["event"] == "phase_finished" && l["phase"] == phase),
            "{phase}: {stdout}"
        );
    }
    emulated.saw("host left");

    let status: Value = serde_json::from_str(&ok(&veriflash(
        &["status", "--target", &target, "--json"],
        dir,
    )))
    .unwrap();
    let status = &status["status"];
    assert_eq!(status["chipset"], "mdm9607");
    assert_eq!(status["product"], "acme-hotspot-x1");
    assert_eq!(status["active_slot"], Value::Null);
}

#[test]
fn a_wrong_chip_emulated_on_the_pty_is_refused_with_code_41() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    mdm9607_package(dir, 150_000, 300_000);
    let emulated = Emulated::start(&["--chip", "msm8916"]);
    let out = veriflash(
        &[
            "flash",
            "update.vfp",
            "--trust",
            "vendor.pub.pem",
            "--target",
            &emulated.target(),
        ],
        dir,
    );
    assert_eq!(out.status.code(), Some(41), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("msm8916"),
        "{out:?}"
    );
}

#[test]
fn malformed_and_absent_mdm9x07_targets_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let out = veriflash(&["status", "--target", "mdm9x07:floppy", "--json"], dir);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["error"]["kind"], "invalid_input", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("mdm9x07:floppy"),
        "{v}"
    );
    assert!(
        v["error"]["remedy"]
            .as_str()
            .unwrap()
            .contains("mdm9x07:serial:TTY"),
        "{v}"
    );
    let out = veriflash(
        &[
            "status",
            "--target",
            "mdm9x07:serial:/dev/ttyUSB-none",
            "--json",
        ],
        dir,
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["error"]["kind"], "device_not_found", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("ttyUSB-none"),
        "{v}"
    );
    assert_download_mode_remedy(&v);
    // No download-mode device at a USB location no machine has.
    let out = veriflash(
        &["status", "--target", "mdm9x07:usb:99-9.9.9", "--json"],
        dir,
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["error"]["kind"], "device_not_found", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("05C6:9008"),
        "{v}"
    );
    assert_download_mode_remedy(&v);
    // Nothing attached, for a flash: the same, at once (no wait for a modem to appear).
    mdm9607_package(dir, 150_000, 300_000);
    let out = veriflash(
        &[
            "flash",
            "update.vfp",
            "--trust",
            "vendor.pub.pem",
            "--target",
            "mdm9x07:usb:99-9.9.9",
            "--json",
        ],
        dir,
    );
    assert_eq!(out.status.code(), Some(58), "{out:?}");
    let last = String::from_utf8_lossy(&out.stdout);
    let v: Value = serde_json::from_str(last.lines().last().unwrap()).unwrap();
    assert_download_mode_remedy(&v);
}

/// A remedy that sends the user to `veriflash devices` and download mode, and never speaks of
/// an install to run again.
fn assert_download_mode_remedy(v: &Value) {
    let remedy = v["error"]["remedy"].as_str().unwrap();
    assert!(
        remedy.contains("veriflash devices") && remedy.contains("download mode"),
        "{v}"
    );
    assert!(!remedy.contains("install"), "{v}");
}

fn fake_usb_device(root: &Path, name: &str, vid: &str, pid: &str, tty: &str) {
    let dev = root.join(name);
    std::fs::create_dir_all(dev.join(format!("{name}:1.0/{tty}"))).unwrap();
    std::fs::write(dev.join("idVendor"), vid).unwrap();
    std::fs::write(dev.join("idProduct"), pid).unwrap();
    std::fs::write(dev.join("product"), "QUSB__BULK").unwrap();
}

#[test]
fn devices_lists_edl_and_diag_modems_with_their_targets_or_says_none() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("usb");
    std::fs::create_dir_all(&root).unwrap();
    let none = ok(&veriflash(
        &["devices", "--sysfs", root.to_str().unwrap()],
        tmp.path(),
    ));
    assert!(none.contains("no device found"), "{none}");
    assert!(none.contains("hint:"), "{none}");
    assert!(!none.contains("no USB bus"), "{none}");
    let no_bus = ok(&veriflash(
        &[
            "devices",
            "--sysfs",
            tmp.path().join("absent").to_str().unwrap(),
        ],
        tmp.path(),
    ));
    assert!(no_bus.contains("no USB bus at all"), "{no_bus}");

    fake_usb_device(&root, "1-1.2", "05c6\n", "9008\n", "ttyUSB3");
    fake_usb_device(&root, "2-1", "2c7c\n", "0125\n", "ttyUSB0");
    fake_usb_device(&root, "2-2", "046d\n", "c52b\n", "ttyUSB9");
    let v: Value = serde_json::from_str(&ok(&veriflash(
        &["devices", "--json", "--sysfs", root.to_str().unwrap()],
        tmp.path(),
    )))
    .unwrap();
    let devices = v["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 2, "{v}");
    assert_eq!(devices[0]["mode"], "edl");
    assert_eq!(devices[0]["location"], "1-1.2");
    assert_eq!(devices[0]["tty"], "/dev/ttyUSB3");
    assert_eq!(devices[0]["targets"][0], "mdm9x07:usb:1-1.2");
    assert_eq!(devices[0]["targets"][1], "mdm9x07:serial:/dev/ttyUSB3");
    assert_eq!(devices[1]["mode"], "diag");
    assert_eq!(devices[1]["vendor_id"], "2c7c");

    let text = ok(&veriflash(
        &["devices", "--sysfs", root.to_str().unwrap()],
        tmp.path(),
    ));
    assert!(text.contains("mdm9x07:usb:1-1.2"), "{text}");
    assert!(text.contains("DIAG"), "{text}");

    // An emulator announced under the state directory is listed too, with its target, as the
    // station finds it; with no USB modem, it is not "no device found".
    let emulated = Emulated::announced(&[], tmp.path());
    let target = format!("mdm9x07:serial:{}", emulated.path);
    let empty = tmp.path().join("empty-usb");
    std::fs::create_dir_all(&empty).unwrap();
    let text = ok(&veriflash(
        &["devices", "--sysfs", empty.to_str().unwrap()],
        tmp.path(),
    ));
    assert!(text.contains(&target), "{text}");
    assert!(!text.contains("no device found"), "{text}");
    let v: Value = serde_json::from_str(&ok(&veriflash(
        &["devices", "--json", "--sysfs", empty.to_str().unwrap()],
        tmp.path(),
    )))
    .unwrap();
    assert_eq!(v["emulators"], serde_json::json!([target]), "{v}");
}

#[test]
fn switch_to_edl_over_the_diag_port_then_flash_the_re_enumerated_device() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    mdm9607_package(dir, 150_000, 300_000);
    let emulated = Emulated::start(&["--diag"]);
    // Normal mode: the boot ROM is not there yet, so a flash cannot identify the chip.
    let v: Value = serde_json::from_str(&ok(&veriflash(
        &["switch-to-edl", "--port", &emulated.path, "--json"],
        dir,
    )))
    .unwrap();
    assert_eq!(v["ok"], true, "{v}");
    emulated.saw("switched to emergency download mode (05C6:9008)");
    emulated.saw("host left");
    ok(&veriflash(
        &[
            "flash",
            "update.vfp",
            "--trust",
            "vendor.pub.pem",
            "--target",
            &emulated.target(),
        ],
        dir,
    ));
}

#[test]
fn a_refused_or_unanswered_switch_is_an_error_not_a_success() {
    let tmp = tempfile::tempdir().unwrap();
    // A download-mode device does not speak DIAG: its HELLO is no answer to the switch.
    let emulated = Emulated::start(&[]);
    let out = veriflash(
        &["switch-to-edl", "--port", &emulated.path, "--json"],
        tmp.path(),
    );
    assert!(!out.status.success(), "{out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["error"]["kind"], "transport_error", "{v}");
    let remedy = v["error"]["remedy"].as_str().unwrap();
    assert!(
        remedy.contains("DIAG port") && remedy.contains("--dload"),
        "{v}"
    );
    assert!(!remedy.contains("install"), "{v}");
    // A port that is not there: not found, and which port to give.
    let out = veriflash(
        &["switch-to-edl", "--port", "/dev/ttyUSB-none", "--json"],
        tmp.path(),
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["error"]["kind"], "device_not_found", "{v}");
    let remedy = v["error"]["remedy"].as_str().unwrap();
    assert!(
        remedy.contains("DIAG port") && remedy.contains("veriflash devices"),
        "{v}"
    );
    assert!(!remedy.contains("install"), "{v}");
}

#[test]
fn a_products_file_names_the_modem_as_the_vendor_does() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    mdm9607_package(dir, 150_000, 300_000);
    // The same images, for the product name the vendor uses.
    let text = std::fs::read_to_string(dir.join("update.toml"))
        .unwrap()
        .replace("acme-hotspot-x1", "my-router")
        .replace("[\"r2\"]", "[\"rev-b\"]");
    std::fs::write(dir.join("mine.toml"), text).unwrap();
    ok(&veriflash(
        &[
            "pack",
            "--manifest",
            "mine.toml",
            "--key",
            "vendor.pem",
            "--out",
            "mine.vfp",
        ],
        dir,
    ));
    let flash = [
        "flash",
        "mine.vfp",
        "--trust",
        "vendor.pub.pem",
        "--target",
        "mdm9x07:emulator",
    ];
    // The emulated chip's OEM/model ids (0x1234/0x0001) are the built-in table's product.
    assert_eq!(veriflash(&flash, dir).status.code(), Some(40));

    let config = dir.join(".veriflash-config");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(
        config.join("mdm9x07-products.toml"),
        "[[product]]\noem_id = 0x1234\nmodel_id = 0x0001\nproduct = \"my-router\"\n\
         hardware_revision = \"rev-b\"\n",
    )
    .unwrap();
    assert!(ok(&veriflash(&flash, dir)).contains("installed on mdm9x07:emulator"));

    // A misspelt key is an error, not an ignored entry.
    std::fs::write(
        config.join("mdm9x07-products.toml"),
        "[[product]]\noem = 0x1234\nmodel_id = 1\nproduct = \"my-router\"\nhardware_revision = \"b\"\n",
    )
    .unwrap();
    let out = veriflash(&flash, dir);
    assert_eq!(out.status.code(), Some(72));
    assert!(
        stderr(&out).contains("missing key 'oem_id'; did you mean 'oem' (line 2)?"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn progress_counts_the_programmer_against_itself_and_the_flash_against_the_images_written() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    mdm9607_package(dir, 150_000, 300_000);
    let out = veriflash(
        &[
            "flash",
            "update.vfp",
            "--trust",
            "vendor.pub.pem",
            "--target",
            "mdm9x07:emulator",
        ],
        dir,
    );
    ok(&out);
    let lines = stderr(&out);
    let load: Vec<&str> = lines
        .lines()
        .filter(|l| l.starts_with("load") && l.contains('%'))
        .collect();
    // The programmer is one chunk: one line, all of it, of its own size.
    let [load] = load.as_slice() else {
        panic!("one load line: {lines}")
    };
    assert!(load.ends_with("(loading programmer)"), "{load}");
    let (done, total) = load
        .split_once("100%  ")
        .and_then(|(_, rest)| rest.split_once(" (")?.0.split_once(" of "))
        .unwrap_or_else(|| panic!("{load}"));
    assert_eq!(done, total, "{load}");
    // sbl + boot + system = 490,000 bytes, without the programmer.
    let flash: Vec<&str> = lines
        .lines()
        .filter(|l| l.starts_with("flash") && l.contains('%'))
        .collect();
    assert!(
        flash.iter().all(|l| l.contains(" of 478.5 KiB (writing ")),
        "{lines}"
    );
    assert!(
        flash.first().is_some_and(|l| l.ends_with("(writing sbl)")),
        "{lines}"
    );
    assert!(
        flash.last().is_some_and(|l| l.contains("100%  478.5 KiB")),
        "{lines}"
    );
}

#[test]
fn a_delta_installs_on_the_pty_emulator_running_its_source_then_refuses_with_34() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    mdm9607_package(dir, 150_000, 300_000);
    let description = std::fs::read_to_string(dir.join("update.toml")).unwrap();
    // What the delta is packed against: the old programmer, sbl and boot (system is left out
    // to keep the read-back short). The programmer is never stored on the modem, so the delta
    // carries the new one whole (`--delta-whole programmer`).
    let (head, images) = description.split_once("[[image]]").unwrap();
    let stored: Vec<&str> = images
        .split("[[image]]")
        .filter(|i| {
            ["\"programmer\"", "\"sbl\"", "\"boot\""]
                .iter()
                .any(|p| i.contains(p))
        })
        .collect();
    assert_eq!(stored.len(), 3, "{description}");
    std::fs::write(
        dir.join("base.toml"),
        format!("{head}[[image]]{}", stored.join("[[image]]")),
    )
    .unwrap();
    ok(&veriflash(
        &[
            "pack",
            "--manifest",
            "base.toml",
            "--key",
            "vendor.pem",
            "--out",
            "base.vfp",
        ],
        dir,
    ));
    // Version 2.5.0: boot changed in one place.
    let mut boot = std::fs::read(dir.join("boot.img")).unwrap();
    boot[70_000..70_100].fill(0xA5);
    std::fs::write(dir.join("boot.img"), boot).unwrap();
    std::fs::write(
        dir.join("v2.toml"),
        description.replace("version = \"2.4.0\"", "version = \"2.5.0\""),
    )
    .unwrap();
    ok(&veriflash(
        &[
            "pack",
            "--manifest",
            "v2.toml",
            "--key",
            "vendor.pem",
            "--delta-from",
            "base.vfp",
            "--delta-whole",
            "programmer",
            "--out",
            "delta.vfp",
        ],
        dir,
    ));

    let emulated = Emulated::start(&[]);
    let target = emulated.target();
    let flash = |package: &str| {
        let out = veriflash(
            &[
                "flash",
                package,
                "--trust",
                "vendor.pub.pem",
                "--target",
                &target,
            ],
            dir,
        );
        emulated.saw("host left");
        out
    };
    // The modem runs 2.4.0, then the delta takes it to 2.5.0.
    ok(&flash("update.vfp"));
    ok(&flash("delta.vfp"));
    let copies = dir.join(".veriflash-state/backups/mdm9x07-1ee7cafe/installed");
    assert!(
        !copies.exists(),
        "the copies of the sources went with the commit"
    );
    // It runs 2.5.0 now, not the delta's source: refused, nothing written.
    let out = flash("delta.vfp");
    assert_eq!(out.status.code(), Some(34), "{}", stderr(&out));
    assert!(stderr(&out).contains("source_mismatch"), "{}", stderr(&out));
}

#[test]
fn a_download_to_the_modem_reuses_its_chunk_cache_and_never_reads_its_nand() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    mdm9607_package(dir, 150_000, 300_000);
    std::fs::create_dir(dir.join("www")).unwrap();
    std::fs::copy(dir.join("update.vfp"), dir.join("www/update.vfp")).unwrap();
    let (_runtime, addr) = serve_dir(&dir.join("www"));
    let url = format!("http://{addr}/update.vfp");
    let emulated = Emulated::start(&[]);
    let target = emulated.target();
    // (reused, fetched, scanned) as the download planned them.
    let flash = |extra: &[&str]| {
        let mut args = vec![
            "flash",
            url.as_str(),
            "--trust",
            "vendor.pub.pem",
            "--target",
            &target,
            "--json",
        ];
        args.extend_from_slice(extra);
        let out = ok(&veriflash(&args, dir));
        emulated.saw("host left");
        let planned: Value = out
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .find(|l| l["event"] == "delta_planned")
            .unwrap();
        (
            planned["bytes_reused"].as_u64().unwrap(),
            planned["bytes_to_fetch"].as_u64().unwrap(),
            planned["bytes_scanned"].as_u64().unwrap(),
        )
    };
    let payload: u64 = ["programmer.elf", "sbl.img", "boot.img", "system.img"]
        .iter()
        .map(|f| std::fs::metadata(dir.join(f)).unwrap().len())
        .sum();
    let cache = ["--chunk-cache", "cache"];
    assert_eq!(flash(&cache), (0, payload, 0), "a new modem: all of it");
    // The modem runs this very package now, but a download plans its reuse before the
    // programmer runs, when the NAND cannot be read: nothing of it is read or reused.
    assert_eq!(flash(&[]), (0, payload, 0));
    // The chunk cache is on the PC: all of it is reused from there.
    assert_eq!(flash(&cache), (payload, 0, 0));
}
