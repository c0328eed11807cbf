//! Ctrl-C during `veriflash flash`: the install stops between chunks, the device is aborted and
//! keeps its old slot, and the exit status is 60 (`cancelled`).
//!
//! The package arrives on standard input (`flash -`), which this test feeds, so the test
//! decides exactly when the flash is half-way: no timing assumptions.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;
use common::{ok, veriflash};

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;

use serde_json::Value;

const LAYOUT: &str = "product = \"acme-hotspot-x1\"\nchipset = \"mdm9607\"\nhardware_revision = \"r2\"\n\
    [[partition]]\nname = \"system\"\nsize = 8388608\nab = true\n";

const DESCRIPTION: &str = "product = \"acme-hotspot-x1\"\nchipset = \"mdm9607\"\nversion = \"v4\"\n\
    security_version = 4\n[[image]]\nname = \"rootfs\"\npartition = \"system\"\n\
    file = \"rootfs.img\"\nchunk_size = 65536\n";

#[test]
fn an_interrupt_cancels_the_flash_between_chunks_and_the_old_slot_stays() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(dir.join("layout.toml"), LAYOUT).unwrap();
    std::fs::write(dir.join("update.toml"), DESCRIPTION).unwrap();
    let rootfs: Vec<u8> = (0..4_000_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(dir.join("rootfs.img"), rootfs).unwrap();
    ok(&veriflash(&["keygen", "--out", "vendor.pem"], dir));
    ok(&veriflash(
        &[
            "pack",
            "--manifest",
            "update.toml",
            "--key",
            "vendor.pem",
            "--out",
            "u.vfp",
        ],
        dir,
    ));
    ok(&veriflash(
        &["device", "init", "--layout", "layout.toml", "file:dev.img"],
        dir,
    ));
    let package = std::fs::read(dir.join("u.vfp")).unwrap();

    let mut child = Command::new(env!("CARGO_BIN_EXE_veriflash"))
        .args([
            "flash",
            "-",
            "--trust",
            "vendor.pub.pem",
            "--target",
            "file:dev.img",
            "--json",
        ])
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    // The feeder writes what it is told to, then closes the pipe when told to stop.
    let (feed, orders) = mpsc::channel::<Option<std::ops::Range<usize>>>();
    let mut pipe = child.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || {
        while let Ok(Some(range)) = orders.recv() {
            // The reader may be gone once it gave up: a failed write ends the feeding.
            if pipe.write_all(&package[range]).is_err() {
                return;
            }
        }
    });
    let half = usize::try_from(std::fs::metadata(dir.join("u.vfp")).unwrap().len()).unwrap() / 2;
    feed.send(Some(0..half)).unwrap();

    // Wait until chunks are being written to the device.
    let mut events = BufReader::new(child.stdout.take().unwrap()).lines();
    loop {
        let line = events.next().expect("events until progress").unwrap();
        let event: Value = serde_json::from_str(&line).unwrap();
        if event["event"] == "progress" && event["done"].as_u64().unwrap() > 0 {
            break;
        }
    }
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let mut notes = BufReader::new(child.stderr.take().unwrap()).lines();
    let note = notes.next().expect("a note on stderr").unwrap();
    assert!(note.starts_with("interrupted:"), "{note}");

    // More bytes arrive; the next chunk is where the install notices and stops.
    feed.send(Some(half..half + 256 * 1024)).unwrap();
    feed.send(None).unwrap();
    let rest: Vec<String> = events.map(Result::unwrap).collect();
    let status = child.wait().unwrap();
    feeder.join().unwrap();
    assert_eq!(status.code(), Some(60), "events: {rest:?}");
    // The event stream ends with the install's verdict, then the command's error object.
    let [.., finished, result] = rest.as_slice() else {
        panic!("events: {rest:?}")
    };
    let finished: Value = serde_json::from_str(finished).unwrap();
    assert_eq!(finished["event"], "finished");
    assert_eq!(finished["code"], 60);
    let result: Value = serde_json::from_str(result).unwrap();
    assert_eq!(result["ok"], false);
    assert_eq!(result["error"]["code"], 60);

    let v: Value = serde_json::from_str(&ok(&veriflash(
        &["status", "--target", "file:dev.img", "--json"],
        dir,
    )))
    .unwrap();
    let v = &v["status"];
    assert_eq!(v["active_slot"], "a");
    assert_eq!(v["security_floor"], 0);
    assert_eq!(v["last_result"]["code"], 60);
}
