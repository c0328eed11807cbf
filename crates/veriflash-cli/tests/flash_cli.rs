//! `veriflash device init`, `flash` and `status` on a file-backed device, as a user runs them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;
use common::{ok, veriflash};

use std::path::Path;

use serde_json::Value;

const LAYOUT: &str = r#"
product = "acme-hotspot-x1"
chipset = "mdm9607"
hardware_revision = "r2"
erase_block = 65536
write_unit = 4096

[[partition]]
name = "boot"
size = 1048576
ab = true

[[partition]]
name = "system"
size = 4194304
ab = true

[[partition]]
name = "efs2"
size = 262144
"#;

fn description(security_version: u64, product: &str) -> String {
    format!(
        "product = \"{product}\"\nchipset = \"mdm9607\"\nversion = \"v{security_version}\"\n\
         security_version = {security_version}\n\
         [[image]]\nname = \"boot\"\npartition = \"boot\"\nfile = \"boot.img\"\nchunk_size = 65536\n\
         [[image]]\nname = \"rootfs\"\npartition = \"system\"\nfile = \"rootfs.img\"\nchunk_size = 65536\n"
    )
}

fn setup(dir: &Path) {
    std::fs::write(dir.join("layout.toml"), LAYOUT).unwrap();
    std::fs::write(dir.join("boot.img"), vec![0x11u8; 300_000]).unwrap();
    let rootfs: Vec<u8> = (0..3_000_000u32).map(|i| (i % 241) as u8).collect();
    std::fs::write(dir.join("rootfs.img"), rootfs).unwrap();
    ok(&veriflash(&["keygen", "--out", "vendor.pem"], dir));
    for (name, sv, product) in [
        ("v3", 3, "acme-hotspot-x1"),
        ("v2", 2, "acme-hotspot-x1"),
        ("other", 4, "other-modem"),
    ] {
        std::fs::write(dir.join(format!("{name}.toml")), description(sv, product)).unwrap();
        ok(&veriflash(
            &[
                "pack",
                "--manifest",
                &format!("{name}.toml"),
                "--key",
                "vendor.pem",
                "--out",
                &format!("{name}.vfp"),
            ],
            dir,
        ));
    }
}

#[test]
fn init_flash_status_and_refusals() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    setup(dir);
    ok(&veriflash(
        &["device", "init", "--layout", "layout.toml", "file:dev.img"],
        dir,
    ));

    let v: Value = serde_json::from_str(&ok(&veriflash(
        &["status", "--target", "file:dev.img", "--json"],
        dir,
    )))
    .unwrap();
    let v = &v["status"];
    assert_eq!(v["active_slot"], "a");
    assert_eq!(v["security_floor"], 0);

    // Flash with JSON events: one object per line, phases in order, ending in success.
    let out = ok(&veriflash(
        &[
            "flash",
            "v3.vfp",
            "--trust",
            "vendor.pub.pem",
            "--target",
            "file:dev.img",
            "--json",
        ],
        dir,
    ));
    let events: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let phases: Vec<&str> = events
        .iter()
        .filter(|e| e["event"] == "phase_finished")
        .map(|e| e["phase"].as_str().unwrap())
        .collect();
    assert_eq!(
        phases,
        [
            "signature",
            "preflight",
            "staging",
            "flash",
            "read_back",
            "commit"
        ]
    );
    // The verdict, then the last line: the full report of what the device runs now, with how
    // long each phase took.
    let finished = &events[events.len() - 2];
    assert_eq!(finished["event"], "finished");
    assert!(finished["code"].is_null());
    let last = events.last().unwrap();
    assert_eq!(last["ok"], true, "{last}");
    assert_eq!(last["target"], "file:dev.img");
    assert_eq!(last["report"]["software_version"], "v3");
    assert_eq!(last["installed"]["slot"], "b");
    assert_eq!(last["installed"]["security_floor"], 3);
    assert_eq!(last["installed"]["version"], "v3");
    assert_eq!(last["installed"]["previous_version"], Value::Null);
    let timed: Vec<&str> = last["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["phase"].as_str().unwrap())
        .collect();
    assert_eq!(timed, phases, "{last}");
    // Every line carries its time; progress lines their rate and the time left.
    assert!(events.iter().all(|e| e["time_ms"].as_u64().is_some()));
    let progress = events.iter().rfind(|e| e["event"] == "progress").unwrap();
    assert!(
        progress["rate_bytes_per_sec"].as_u64().unwrap() > 0,
        "{progress}"
    );
    assert_eq!(progress["eta_secs"], 0, "{progress}");

    let v: Value = serde_json::from_str(&ok(&veriflash(
        &["status", "--target", "file:dev.img", "--json"],
        dir,
    )))
    .unwrap();
    let v = &v["status"];
    assert_eq!(v["active_slot"], "b");
    assert_eq!(v["security_floor"], 3);
    assert_eq!(v["installed_version"], "v3");
    assert_eq!(v["last_result"]["code"], 0);

    // Refusals: a downgrade and another product's package, with their codes; nothing written.
    let before = std::fs::read(dir.join("dev.img")).unwrap();
    let out = veriflash(
        &[
            "flash",
            "v2.vfp",
            "--trust",
            "vendor.pub.pem",
            "--target",
            "file:dev.img",
        ],
        dir,
    );
    assert_eq!(
        out.status.code(),
        Some(43),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("downgrade_refused"));
    let out = veriflash(
        &[
            "flash",
            "other.vfp",
            "--trust",
            "vendor.pub.pem",
            "--target",
            "file:dev.img",
        ],
        dir,
    );
    assert_eq!(out.status.code(), Some(40));
    assert_eq!(std::fs::read(dir.join("dev.img")).unwrap(), before);

    // Plain progress lines when stderr is not a terminal.
    ok(&veriflash(
        &["device", "init", "--layout", "layout.toml", "file:dev2.img"],
        dir,
    ));
    let out = veriflash(
        &[
            "flash",
            "v3.vfp",
            "--trust",
            "vendor.pub.pem",
            "--target",
            "file:dev2.img",
        ],
        dir,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("100%"), "{stderr}");
    assert!(stderr.contains("commit       ok"), "{stderr}");

    // Human status.
    let text = ok(&veriflash(&["status", "--target", "file:dev2.img"], dir));
    assert!(text.contains("active slot     b"), "{text}");
    assert!(text.contains("protected"), "{text}");
}

#[test]
fn device_init_refuses_to_overwrite_and_unknown_targets_are_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(dir.join("layout.toml"), LAYOUT).unwrap();
    ok(&veriflash(
        &["device", "init", "--layout", "layout.toml", "file:dev.img"],
        dir,
    ));
    let out = veriflash(
        &["device", "init", "--layout", "layout.toml", "file:dev.img"],
        dir,
    );
    assert!(!out.status.success());
    let out = veriflash(&["status", "--target", "usb:1-2"], dir);
    assert_eq!(out.status.code(), Some(72));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no plugin handles target"));
}

#[test]
fn help_lists_every_exit_code() {
    let tmp = tempfile::tempdir().unwrap();
    let help = ok(&veriflash(&["--help"], tmp.path()));
    for code in ["10", "20", "30", "43", "61", "72"] {
        assert!(
            help.lines().any(|l| l.trim_start().starts_with(code)),
            "code {code} missing:\n{help}"
        );
    }
}

/// `veriflash flash --json` on `dev.img`, started now.
fn flash_process(dir: &Path, package: &str) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_veriflash"))
        .args([
            "flash",
            package,
            "--trust",
            "vendor.pub.pem",
            "--target",
            "file:dev.img",
            "--json",
        ])
        .current_dir(dir)
        .env("VERIFLASH_STATE_DIR", dir.join(".veriflash-state"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn a_flash_process_is_refused_while_another_install_holds_the_device() {
    use veriflash_core::plugin::file_device::FileDevice;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    setup(dir);
    ok(&veriflash(
        &["device", "init", "--layout", "layout.toml", "file:dev.img"],
        dir,
    ));
    let trust = veriflash_core::trust::load_trust_anchors(&dir.join("vendor.pub.pem")).unwrap();
    let v2 = std::fs::read(dir.join("v2.vfp")).unwrap();

    // This process installs v2 and stops before its third storage operation (the journal is
    // written, the inactive slot half erased) while another process tries to flash v3.
    let (paused_tx, paused_rx) = std::sync::mpsc::channel();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let mut device = FileDevice::open(&dir.join("dev.img")).unwrap();
    device.on_storage_operation(move |op| {
        if op == 3 {
            paused_tx.send(()).unwrap();
            go_rx.recv().unwrap();
        }
    });
    let first = std::thread::spawn(move || {
        veriflash_core::install(
            v2.as_slice(),
            &veriflash_core::sig::Verifier::new(&trust),
            &veriflash_core::InstallPolicy::default(),
            &mut device,
            &veriflash_core::CancelToken::new(),
            &mut |_| {},
        )
        .map(drop)
    });
    paused_rx.recv().unwrap();
    let second = flash_process(dir, "v3.vfp").wait_with_output().unwrap();
    assert_eq!(second.status.code(), Some(57), "{second:?}");
    let last: Value = serde_json::from_str(
        String::from_utf8_lossy(&second.stdout)
            .lines()
            .last()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(last["error"]["kind"], "busy", "{last}");
    let status = veriflash(&["status", "--target", "file:dev.img"], dir);
    assert_eq!(status.status.code(), Some(57), "status waits its turn too");
    go_tx.send(()).unwrap();
    first.join().unwrap().unwrap();

    let v: Value = serde_json::from_str(&ok(&veriflash(
        &["status", "--target", "file:dev.img", "--json"],
        dir,
    )))
    .unwrap();
    let v = &v["status"];
    assert_eq!(
        v["installed_version"], "v2",
        "only the first install happened"
    );
    assert_eq!(v["security_floor"], 2);
    assert_eq!(v["last_result"]["code"], 0);
    FileDevice::open(&dir.join("dev.img"))
        .unwrap()
        .boot_check()
        .unwrap();
}

#[test]
fn flash_processes_started_together_leave_one_consistent_install() {
    use veriflash_core::plugin::file_device::FileDevice;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    setup(dir);
    for round in 0..6 {
        let _ = std::fs::remove_file(dir.join("dev.img"));
        ok(&veriflash(
            &["device", "init", "--layout", "layout.toml", "file:dev.img"],
            dir,
        ));
        // Alternate which one starts first; the second follows within microseconds.
        let (a, b) = if round % 2 == 0 {
            ("v2.vfp", "v3.vfp")
        } else {
            ("v3.vfp", "v2.vfp")
        };
        let first = flash_process(dir, a);
        let second = flash_process(dir, b);
        let codes = [
            (a, first.wait_with_output().unwrap().status.code()),
            (b, second.wait_with_output().unwrap().status.code()),
        ];
        // Each run installed (0), found the device held (57, busy), or came second to a newer
        // package (43, downgrade): never anything else, and never both on top of each other.
        let mut floor = 0;
        for (package, code) in codes {
            match code {
                Some(0) => floor = floor.max(if package == "v3.vfp" { 3 } else { 2 }),
                Some(57 | 43) => {}
                other => panic!("round {round}: {package} exited {other:?}"),
            }
        }
        assert!(floor > 0, "round {round}: one of {codes:?} installed");
        let mut device = FileDevice::open(&dir.join("dev.img")).unwrap();
        let status = device.current_status();
        assert_eq!(
            status.info.security_floor, floor,
            "round {round}: {codes:?}"
        );
        assert_eq!(
            status.info.installed_version.as_deref(),
            Some(if floor == 3 { "v3" } else { "v2" }),
            "round {round}"
        );
        assert_eq!(
            device.boot_check().unwrap().as_deref(),
            Some(if floor == 3 { "v3" } else { "v2" }),
            "round {round}: the active slot holds what its record says"
        );
    }
}

#[test]
fn status_check_finds_an_installed_image_that_no_longer_matches() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    setup(dir);
    ok(&veriflash(
        &["device", "init", "--layout", "layout.toml", "file:dev.img"],
        dir,
    ));
    ok(&veriflash(
        &[
            "flash",
            "v3.vfp",
            "--trust",
            "vendor.pub.pem",
            "--target",
            "file:dev.img",
        ],
        dir,
    ));
    let v: Value = serde_json::from_str(&ok(&veriflash(
        &["status", "--target", "file:dev.img", "--check", "--json"],
        dir,
    )))
    .unwrap();
    let v = &v["status"];
    assert_eq!(v["active_slot"], "b");
    assert_eq!(v["checked"][0]["partition"], "boot");
    assert_eq!(v["checked"][0]["intact"], true);
    assert_eq!(v["checked"][1]["intact"], true);

    // One bit of slot b's boot copy flips (it starts after the 64 KiB header and boot's A copy).
    let mut bytes = std::fs::read(dir.join("dev.img")).unwrap();
    bytes[(64 << 10) + (1 << 20) + 1000] ^= 1;
    std::fs::write(dir.join("dev.img"), bytes).unwrap();
    let out = veriflash(&["status", "--target", "file:dev.img", "--check"], dir);
    assert_eq!(out.status.code(), Some(52), "{out:?}");
    assert!(common::stderr(&out).contains("boot"), "{out:?}");
    // Without --check, status reads only the record.
    ok(&veriflash(&["status", "--target", "file:dev.img"], dir));
}

#[test]
fn missing_unusable_and_full_device_files_have_codes_of_their_own() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    setup(dir);
    for (target, code) in [("file:absent.img", 58), ("file:.", 58)] {
        let out = veriflash(&["status", "--target", target, "--json"], dir);
        assert_eq!(out.status.code(), Some(code), "{target}: {out:?}");
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["error"]["kind"], "device_not_found", "{v}");
        let path = target.trim_start_matches("file:");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(path),
            "names the path: {v}"
        );
    }
    // A disk that fills up while the device file is made (a file-size limit gives the same
    // error, EFBIG, without filling a real disk): 73, and nothing left behind to block the next
    // init or to be mistaken for a device.
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "trap '' XFSZ; ulimit -f 2048; exec {} device init --layout layout.toml file:dev.img",
            env!("CARGO_BIN_EXE_veriflash")
        ))
        .current_dir(dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(73), "{out:?}");
    assert!(!dir.join("dev.img").exists());
    let leftovers: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("dev.img"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    ok(&veriflash(
        &["device", "init", "--layout", "layout.toml", "file:dev.img"],
        dir,
    ));
}

/// The `--json` error of a failed run (the last line on stdout).
fn json_error(out: &std::process::Output) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default()).unwrap();
    assert_eq!(v["ok"], false, "{v}");
    v["error"].clone()
}

#[test]
fn a_target_that_is_no_device_says_what_it_is_and_how_to_make_one() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    setup(dir);
    let flash = |target: &str| {
        veriflash(
            &[
                "flash",
                "v3.vfp",
                "--trust",
                "vendor.pub.pem",
                "--target",
                target,
                "--json",
            ],
            dir,
        )
    };

    // A device file that does not exist: not found, and the command that makes one.
    let out = flash("file:missing.img");
    assert_eq!(out.status.code(), Some(58));
    let e = json_error(&out);
    assert!(
        e["message"].as_str().unwrap().contains("missing.img"),
        "{e}"
    );
    let remedy = e["remedy"].as_str().unwrap();
    assert!(
        remedy.contains("veriflash device init --layout LAYOUT.toml file:missing.img"),
        "{e}"
    );
    assert!(!remedy.contains("cable"), "{e}");
    // `status` says the same.
    let out = veriflash(&["status", "--target", "file:missing.img", "--json"], dir);
    assert_eq!(out.status.code(), Some(58));
    assert_eq!(json_error(&out)["remedy"], e["remedy"]);

    // No plugin prefix: every form a target may take.
    let out = flash("device.img");
    assert_eq!(out.status.code(), Some(72));
    let e = json_error(&out);
    let remedy = e["remedy"].as_str().unwrap();
    for form in [
        "file:PATH",
        "mdm9x07:usb[:BUS-PORT]",
        "mdm9x07:serial:TTY",
        "mdm9x07:emulator",
    ] {
        assert!(remedy.contains(form), "{form}: {e}");
    }

    // The layout description where the device file belongs.
    let out = flash("file:layout.toml");
    assert_eq!(out.status.code(), Some(72));
    let e = json_error(&out);
    assert!(
        e["message"].as_str().unwrap().contains("not a device file"),
        "{e}"
    );
    assert!(
        e["remedy"]
            .as_str()
            .unwrap()
            .contains("veriflash device init --layout layout.toml file:device.img"),
        "{e}"
    );
    // Any other file: not a device, and which file is.
    std::fs::write(dir.join("notes.txt"), "hello\n").unwrap();
    let e = json_error(&flash("file:notes.txt"));
    assert_eq!(e["kind"], "invalid_input", "{e}");
    assert!(
        e["remedy"]
            .as_str()
            .unwrap()
            .contains("veriflash device init"),
        "{e}"
    );
}
