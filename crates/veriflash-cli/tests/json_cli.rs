//! Every `--json` line the command prints, held to the published schema
//! (docs/schemas/veriflash-cli.schema.json): real runs of `verify`, `inspect`, `flash` (a file
//! device, a factory line, an emulated modem), `status`, `devices`, `fetch` (from a real HTTP
//! server on loopback, twice) and refusals, each line valid as `line` and the last one as the
//! shape its command ends with.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;
use common::{keygen_and_pack, ok, serve_dir, veriflash};

use std::path::Path;
use std::process::Output;

use serde_json::Value;
use veriflash_mdm9x07::emulator::test_programmer;

fn schema() -> Value {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/schemas/veriflash-cli.schema.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The schema's definition `name` as a schema of its own (the document, entered at `name`).
fn validator(name: &str) -> jsonschema::Validator {
    let mut root = schema();
    assert!(root["$defs"].get(name).is_some(), "no definition {name}");
    root["$ref"] = Value::String(format!("#/$defs/{name}"));
    jsonschema::validator_for(&root).unwrap()
}

/// Panics with every violation when `value` is not a valid `name`.
fn check(name: &str, value: &Value) {
    let errors: Vec<String> = validator(name)
        .iter_errors(value)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "not a valid {name}: {errors:?}\n{value}");
}

/// stdout's lines as JSON: each a valid `line`, the last a valid `last`; returns them.
fn lines(out: &Output, last: &str) -> Vec<Value> {
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(!lines.is_empty(), "no output: {out:?}");
    for line in &lines {
        check("line", line);
        if line.get("event").is_some() {
            check("event", line);
        }
    }
    check(last, lines.last().unwrap());
    lines
}

const LAYOUT: &str = "product = \"acme-hotspot-x1\"\nchipset = \"mdm9607\"\nhardware_revision = \"r2\"\n\
[[partition]]\nname = \"boot\"\nsize = 1048576\nab = true\n";

/// A key, a package `update.vfp` (300 KB boot image, 64 KiB chunks) and two file devices.
fn setup(dir: &Path) {
    let boot: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    std::fs::write(dir.join("boot.img"), boot).unwrap();
    std::fs::write(
        dir.join("update.toml"),
        "product = \"acme-hotspot-x1\"\nchipset = \"mdm9607\"\nversion = \"v3\"\n\
         security_version = 3\nchunk_size = 65536\n\
         [[image]]\nname = \"boot\"\npartition = \"boot\"\nfile = \"boot.img\"\n",
    )
    .unwrap();
    std::fs::write(dir.join("layout.toml"), LAYOUT).unwrap();
    keygen_and_pack(dir, "update.toml", "update.vfp");
    for device in ["file:a.img", "file:b.img", "file:c.img"] {
        ok(&veriflash(
            &["device", "init", "--layout", "layout.toml", device],
            dir,
        ));
    }
}

#[test]
fn verify_inspect_status_devices_and_refusals_match_the_schema() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    setup(d);

    lines(
        &veriflash(
            &[
                "verify",
                "--trust",
                "vendor.pub.pem",
                "update.vfp",
                "--json",
            ],
            d,
        ),
        "verify",
    );
    lines(
        &veriflash(&["inspect", "update.vfp", "--json"], d),
        "inspect",
    );
    // A "delta" of the package against itself: the device would hold every chunk, but a
    // package carries at least one payload byte, so its one image is carried whole.
    ok(&veriflash(
        &[
            "pack",
            "--manifest",
            "update.toml",
            "--key",
            "vendor.pem",
            "--delta-from",
            "update.vfp",
            "--out",
            "delta.vfp",
        ],
        d,
    ));
    let inspected = lines(
        &veriflash(&["inspect", "delta.vfp", "--json"], d),
        "inspect",
    );
    assert!(inspected[0]["package"]["images"][0]["source"].is_null());
    assert_eq!(inspected[0]["package"]["format_version"], 1);
    lines(
        &veriflash(
            &[
                "inspect",
                "--delta-from",
                "update.vfp",
                "--trust",
                "vendor.pub.pem",
                "update.vfp",
                "--json",
            ],
            d,
        ),
        "inspect_delta",
    );
    lines(
        &veriflash(&["status", "--target", "file:a.img", "--json"], d),
        "status",
    );
    std::fs::create_dir(d.join("usb")).unwrap();
    lines(
        &veriflash(
            &[
                "devices",
                "--json",
                "--sysfs",
                d.join("usb").to_str().unwrap(),
            ],
            d,
        ),
        "devices",
    );

    // Refusals end with the error object: a wrong key (21), a missing device (58), and a
    // command line clap refuses (2, kind `usage`, JSON too).
    ok(&veriflash(&["keygen", "--out", "other.pem"], d));
    let out = veriflash(
        &["verify", "--trust", "other.pub.pem", "update.vfp", "--json"],
        d,
    );
    assert_eq!(out.status.code(), Some(21));
    let last = lines(&out, "failure").pop().unwrap();
    assert_eq!(last["error"]["kind"], "unknown_signer");
    let out = veriflash(&["status", "--target", "file:absent.img", "--json"], d);
    assert_eq!(out.status.code(), Some(58));
    lines(&out, "failure");
    let out = veriflash(&["verify", "update.vfp", "--json", "--no-such-flag"], d);
    assert_eq!(out.status.code(), Some(2));
    let last = lines(&out, "failure").pop().unwrap();
    assert_eq!(last["error"]["kind"], "usage");
    assert!(
        last["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--no-such-flag"),
        "{last}"
    );
    // Without --json a usage error stays clap's text on stderr.
    let out = veriflash(&["verify", "update.vfp", "--no-such-flag"], d);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
}

#[test]
fn flash_one_device_and_a_factory_line_match_the_schema() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    setup(d);
    let out = veriflash(
        &[
            "flash",
            "update.vfp",
            "--trust",
            "vendor.pub.pem",
            "--target",
            "file:a.img",
            "--json",
        ],
        d,
    );
    let flash = lines(&out, "flash");
    assert!(flash.iter().any(|l| l["event"] == "progress"));
    lines(
        &veriflash(
            &["status", "--target", "file:a.img", "--check", "--json"],
            d,
        ),
        "status",
    );

    let out = veriflash(
        &[
            "flash",
            "update.vfp",
            "--trust",
            "vendor.pub.pem",
            "--target",
            "file:b.img",
            "--target",
            "file:c.img",
            "--json",
        ],
        d,
    );
    let factory = lines(&out, "factory");
    let results: Vec<&Value> = factory
        .iter()
        .filter(|l| l["event"] == "device_result")
        .collect();
    assert_eq!(results.len(), 2);
    // Each device's events carry its index and target.
    assert!(
        factory
            .iter()
            .filter(|l| l["event"] == "progress")
            .all(|l| l["device"].is_u64() && l["target"].is_string())
    );

    // A device another session holds: refused (57), the error object last.
    let holder = veriflash_core::plugin::file_device::FileDevice::open(&d.join("a.img")).unwrap();
    let out = veriflash(
        &[
            "flash",
            "update.vfp",
            "--trust",
            "vendor.pub.pem",
            "--target",
            "file:a.img",
            "--json",
        ],
        d,
    );
    drop(holder);
    assert_eq!(out.status.code(), Some(57));
    lines(&out, "failure");
}

#[test]
fn a_modem_flash_matches_the_schema() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::write(d.join("programmer.elf"), test_programmer(&[0x5Au8; 6000])).unwrap();
    std::fs::write(d.join("sbl.img"), vec![0x11u8; 40_000]).unwrap();
    std::fs::write(
        d.join("update.toml"),
        "product = \"acme-hotspot-x1\"\nchipset = \"mdm9607\"\nversion = \"2.4.0\"\n\
         security_version = 7\nhardware_revisions = [\"r2\"]\n\
         [[image]]\nname = \"programmer\"\npartition = \"programmer\"\nfile = \"programmer.elf\"\n\
         [[image]]\nname = \"sbl\"\npartition = \"sbl\"\nfile = \"sbl.img\"\n",
    )
    .unwrap();
    keygen_and_pack(d, "update.toml", "update.vfp");
    let out = veriflash(
        &[
            "flash",
            "update.vfp",
            "--trust",
            "vendor.pub.pem",
            "--target",
            "mdm9x07:emulator",
            "--json",
        ],
        d,
    );
    let modem = lines(&out, "flash");
    assert!(
        modem
            .iter()
            .any(|l| l["event"] == "phase_finished" && l["phase"] == "load")
    );
}

#[test]
fn fetch_events_match_the_schema_and_a_second_fetch_downloads_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    setup(d);
    std::fs::create_dir(d.join("www")).unwrap();
    std::fs::copy(d.join("update.vfp"), d.join("www/update.vfp")).unwrap();
    let (_runtime, addr) = serve_dir(&d.join("www"));
    let url = format!("http://{addr}/update.vfp");
    let fetch = || {
        veriflash(
            &[
                "fetch",
                &url,
                "--out",
                "got.vfp",
                "--trust",
                "vendor.pub.pem",
                "--json",
            ],
            d,
        )
    };

    let first = lines(&fetch(), "fetch");
    let phases: Vec<(&str, &str)> = first
        .iter()
        .filter(|l| l["event"] == "phase_started" || l["event"] == "phase_finished")
        .map(|l| (l["event"].as_str().unwrap(), l["phase"].as_str().unwrap()))
        .collect();
    assert_eq!(
        phases,
        [
            ("phase_started", "signature"),
            ("phase_finished", "signature"),
            ("phase_started", "download"),
            ("phase_finished", "download"),
        ]
    );
    let progress: Vec<&Value> = first.iter().filter(|l| l["event"] == "progress").collect();
    assert_eq!(progress.len(), 5, "one per 64 KiB chunk of 300 KB");
    let done = first.last().unwrap();
    assert_eq!(done["download"]["already_present"], false);
    assert_eq!(done["download"]["bytes_fetched"], 300_000);

    // The same package again: verified in place, nothing downloaded, exit 0.
    let again = lines(&fetch(), "fetch");
    let done = again.last().unwrap();
    assert_eq!(done["download"]["already_present"], true, "{done}");
    assert_eq!(done["download"]["bytes_fetched"], 0, "{done}");
    assert!(again.iter().all(|l| l["event"] != "progress"));
    let text = ok(&veriflash(
        &[
            "fetch",
            &url,
            "--out",
            "got.vfp",
            "--trust",
            "vendor.pub.pem",
        ],
        d,
    ));
    assert!(text.contains("already holds this package"), "{text}");
}

#[test]
fn a_flash_from_a_url_reuses_what_the_device_holds_and_says_so_in_the_schema() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    setup(d);
    std::fs::create_dir(d.join("www")).unwrap();
    std::fs::copy(d.join("update.vfp"), d.join("www/update.vfp")).unwrap();
    let (_runtime, addr) = serve_dir(&d.join("www"));
    let url = format!("http://{addr}/update.vfp");
    let flash = |extra: &[&str]| {
        let mut args = vec![
            "flash",
            url.as_str(),
            "--trust",
            "vendor.pub.pem",
            "--target",
            "file:a.img",
            "--json",
        ];
        args.extend_from_slice(extra);
        lines(&veriflash(&args, d), "flash")
    };
    let planned = |lines: &[Value]| {
        let line = lines
            .iter()
            .find(|l| l["event"] == "delta_planned")
            .unwrap()
            .clone();
        (line["bytes_reused"].clone(), line["bytes_to_fetch"].clone())
    };
    let traffic = |lines: &[Value]| {
        let download = &lines.last().unwrap()["download"];
        (
            download["bytes_fetched"].clone(),
            download["bytes_reused"].clone(),
        )
    };
    // A new device holds nothing: all of it is downloaded.
    let first = flash(&[]);
    assert_eq!(planned(&first), (0.into(), 300_000.into()));
    assert_eq!(traffic(&first), (300_000.into(), 0.into()));
    // The same package again: every chunk is in the slot that runs, nothing is downloaded.
    let again = flash(&[]);
    assert_eq!(planned(&again), (300_000.into(), 0.into()));
    assert_eq!(traffic(&again), (0.into(), 300_000.into()));
    // --no-reuse downloads it all.
    let full = flash(&["--no-reuse"]);
    assert_eq!(traffic(&full), (300_000.into(), 0.into()));
}

#[test]
fn the_schema_refuses_what_the_command_does_not_print() {
    let good = serde_json::json!({
        "ok": false, "time_ms": 1,
        "error": {"code": 21, "kind": "unknown_signer", "category": "security", "summary": "s",
                  "message": "m", "remedy": "r", "image": null, "chunk": null, "offset": null},
    });
    check("failure", &good);
    let mut no_code = good.clone();
    no_code["error"].as_object_mut().unwrap().remove("code");
    let mut stray = good.clone();
    stray["extra"] = Value::Bool(true);
    let mut bad_category = good;
    bad_category["error"]["category"] = Value::String("maybe".into());
    for value in [no_code, stray, bad_category] {
        assert!(!validator("failure").is_valid(&value), "{value}");
    }
    let progress = serde_json::json!({"event": "progress", "time_ms": 1, "image": "boot",
        "image_done": 1, "image_total": 2, "done": 1, "total": 2, "rate_bytes_per_sec": 5,
        "eta_secs": null});
    check("event", &progress);
    let mut no_rate = progress;
    no_rate
        .as_object_mut()
        .unwrap()
        .remove("rate_bytes_per_sec");
    assert!(!validator("event").is_valid(&no_rate));
}
