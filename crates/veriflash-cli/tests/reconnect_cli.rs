//! `veriflash flash --reconnect` and `--wait-boot` as a user meets them: separate processes,
//! real pseudo-terminals, the modem reached through a symlink as udev's
//! `/dev/serial/by-id/...` links reach a real one.
//!
//! The package reaches the flash through a FIFO that this test feeds, so the test decides when
//! the flash is under way and cannot finish: the emulator is replaced while the flash waits for
//! package bytes, with no timing assumptions.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;
use common::{Emulated, ok, veriflash};

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc::{Sender, channel};
use std::thread::JoinHandle;

use serde_json::Value;

/// Points the symlink `link` at `to`, atomically (a new link renamed over the old one), the way
/// udev moves a `/dev/serial/by-id/...` link to the re-enumerated device's tty.
fn point(link: &Path, to: &str) {
    let next = link.with_extension("next");
    let _ = std::fs::remove_file(&next);
    std::os::unix::fs::symlink(to, &next).unwrap();
    std::fs::rename(&next, link).unwrap();
}

/// Sets up `dir`, starts an emulator behind the symlink `dir/modem` and a flash to it with
/// `args`, and returns once `boot` is on the emulated NAND (the flash then waits for more
/// package bytes): the emulator, the link and the flash.
fn cut_in_boot(dir: &Path, args: &[&str]) -> (Emulated, PathBuf, FedFlash) {
    setup(dir);
    let emulated = Emulated::start(&[]);
    let link = dir.join("modem");
    point(&link, &emulated.path);
    let target = format!("mdm9x07:serial:{}", link.display());
    let mut flash = FedFlash::start(dir, &target, args);
    flash.until_boot_is_written();
    (emulated, link, flash)
}

/// A key and a signed modem package `update.vfp` (the emulator's stand-in programmer, sbl,
/// boot, system) in `dir`.
fn setup(dir: &Path) {
    std::fs::create_dir_all(dir.join("images")).unwrap();
    ok(&veriflash(
        &[
            "emulate",
            "mdm9x07",
            "--write-programmer",
            "images/prog_nand_firehose_9x07.mbn",
        ],
        dir,
    ));
    std::fs::write(dir.join("images/sbl.img"), vec![0x11u8; 40_000]).unwrap();
    let boot: Vec<u8> = (0..150_000u32).map(|i| i.to_le_bytes()[0]).collect();
    std::fs::write(dir.join("images/boot.img"), boot).unwrap();
    let system: Vec<u8> = (0..300_000u32)
        .map(|i| (i * 7 % 251).to_le_bytes()[0])
        .collect();
    std::fs::write(dir.join("images/system.img"), system).unwrap();
    std::fs::write(
        dir.join("modem.toml"),
        "product = \"acme-hotspot-x1\"\nchipset = \"mdm9607\"\nversion = \"2.4.0\"\n\
         security_version = 7\nchunk_size = 65536\n\
         [[image]]\nname = \"programmer\"\npartition = \"programmer\"\n\
         file = \"images/prog_nand_firehose_9x07.mbn\"\n\
         [[image]]\nname = \"sbl\"\npartition = \"sbl\"\nfile = \"images/sbl.img\"\n\
         [[image]]\nname = \"boot\"\npartition = \"boot\"\nfile = \"images/boot.img\"\n\
         [[image]]\nname = \"system\"\npartition = \"system\"\nfile = \"images/system.img\"\n",
    )
    .unwrap();
    ok(&veriflash(&["keygen", "--out", "vendor.pem"], dir));
    ok(&veriflash(
        &[
            "pack",
            "--manifest",
            "modem.toml",
            "--key",
            "vendor.pem",
            "--out",
            "update.vfp",
        ],
        dir,
    ));
}

/// The bytes of `system.img` the feeder holds back until told: the flash stops half-way
/// through `system`, after `sbl` and `boot` were programmed.
const HELD_BACK: usize = 150_000;

/// A `flash` of `update.vfp` read through the FIFO `update.fifo`, whose last [`HELD_BACK`]
/// bytes are written only when `go` is sent.
struct FedFlash {
    child: Child,
    events: std::io::Lines<BufReader<ChildStdout>>,
    stderr: JoinHandle<String>,
    go: Sender<()>,
    feeder: JoinHandle<()>,
}

impl FedFlash {
    fn start(dir: &Path, target: &str, extra: &[&str]) -> Self {
        let package = std::fs::read(dir.join("update.vfp")).unwrap();
        let fifo = dir.join("update.fifo");
        assert!(
            Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .unwrap()
                .success()
        );
        // Opened for reading and writing, the FIFO has a writer (this test) before the flash
        // opens it, so the flash never finds it without one.
        let mut pipe = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&fifo)
            .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_veriflash"))
            .args([
                "flash",
                "update.fifo",
                "--trust",
                "vendor.pub.pem",
                "--target",
                target,
                "--json",
            ])
            .args(extra)
            .env("VERIFLASH_STATE_DIR", dir.join("state"))
            .current_dir(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (go, told) = channel::<()>();
        let feeder = std::thread::spawn(move || {
            let cut = package.len() - HELD_BACK;
            pipe.write_all(&package[..cut]).unwrap();
            if told.recv().is_ok() {
                // The flash gives up reading once the device is gone: a failed write is fine.
                let _ = pipe.write_all(&package[cut..]);
            }
        });
        let err = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                text.push_str(&l);
                text.push('\n');
            }
            text
        });
        let events = BufReader::new(child.stdout.take().unwrap()).lines();
        Self {
            child,
            events,
            stderr,
            go,
            feeder,
        }
    }

    /// Reads events until `boot` was written completely (the journal then lists it), and
    /// returns them.
    fn until_boot_is_written(&mut self) -> Vec<Value> {
        let mut seen = Vec::new();
        loop {
            let line = self.events.next().expect("events until boot").unwrap();
            let event: Value = serde_json::from_str(&line).unwrap();
            let done = event["event"] == "progress"
                && event["image"] == "boot"
                && event["image_done"] == event["image_total"];
            seen.push(event);
            if done {
                return seen;
            }
        }
    }

    /// Feeds the rest of the package, then collects the remaining events, the exit status and
    /// stderr.
    fn finish(mut self) -> (Vec<Value>, Option<i32>, String) {
        self.go.send(()).unwrap();
        let rest: Vec<Value> = self
            .events
            .by_ref()
            .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
            .collect();
        let status = self.child.wait().unwrap();
        self.feeder.join().unwrap();
        (rest, status.code(), self.stderr.join().unwrap())
    }
}

fn journals(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir.join("state"))
        .map(|entries| {
            entries
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|x| x == "journal"))
                .collect()
        })
        .unwrap_or_default()
}

fn position(events: &[Value], event: &str) -> usize {
    events
        .iter()
        .position(|e| e["event"] == event)
        .unwrap_or_else(|| panic!("no {event} event: {events:?}"))
}

#[test]
fn a_flash_cut_off_mid_way_re_finds_the_modem_and_finishes_the_job() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (first, link, flash) = cut_in_boot(dir, &[]);
    assert_eq!(journals(dir).len(), 1, "the journal records sbl and boot");

    // The modem re-enumerates: a new device (a blank emulator, same chip serial) behind the
    // same link. The link moves before the old tty dies, so no other process's pty can be
    // found there in between.
    let second = Emulated::start(&[]);
    point(&link, &second.path);
    drop(first);
    // The package path now holds the whole package: the run after the reconnect opens it again
    // and verifies it from scratch.
    std::fs::copy(dir.join("update.vfp"), dir.join("update.next")).unwrap();
    std::fs::rename(dir.join("update.next"), dir.join("update.fifo")).unwrap();
    let (rest, code, stderr) = flash.finish();

    assert_eq!(code, Some(0), "events: {rest:?}\nstderr: {stderr}");
    let reconnecting = &rest[position(&rest, "reconnecting")];
    assert_eq!(reconnecting["attempt"], 1, "{reconnecting}");
    assert_eq!(reconnecting["max_attempts"], 3, "{reconnecting}");
    assert_eq!(reconnecting["timeout_secs"], 60, "{reconnecting}");
    assert_eq!(
        reconnecting["error"]["kind"], "transport_error",
        "{reconnecting}"
    );
    assert!(
        stderr.contains("waiting up to 60 s for the device to come back (Ctrl-C to stop"),
        "{stderr}"
    );
    // The failed run's verdict is held back: the only `finished` is the last event, success,
    // followed by the report, which counts the reconnect.
    let finished: Vec<&Value> = rest.iter().filter(|e| e["event"] == "finished").collect();
    assert_eq!(finished.len(), 1, "{rest:?}");
    let verdict = &rest[rest.len() - 2];
    assert_eq!(verdict["event"], "finished", "{rest:?}");
    assert_eq!(verdict["code"], Value::Null, "{rest:?}");
    assert_eq!(rest.last().unwrap()["ok"], true, "{rest:?}");
    assert_eq!(rest.last().unwrap()["reconnects"], 1, "{rest:?}");
    // Everything after the reconnect happened on the new emulator (the old one is dead): the
    // package verified again, every partition read back as the package's image, the commit.
    let after = &rest[position(&rest, "reconnected")..];
    for phase in ["signature", "flash", "read_back", "commit"] {
        assert!(
            after
                .iter()
                .any(|e| e["event"] == "phase_finished" && e["phase"] == phase),
            "{phase}: {after:?}"
        );
    }
    let last_progress = after
        .iter()
        .rev()
        .find(|e| e["event"] == "progress")
        .unwrap();
    assert_eq!(last_progress["done"], last_progress["total"], "{after:?}");
    second.saw("host connected");
    second.saw("host left");

    // The commit removed the journal; the re-found modem answers through the same link.
    assert_eq!(journals(dir), Vec::<PathBuf>::new());
    let out = Command::new(env!("CARGO_BIN_EXE_veriflash"))
        .args([
            "status",
            "--target",
            &format!("mdm9x07:serial:{}", link.display()),
            "--json",
        ])
        .env("VERIFLASH_STATE_DIR", dir.join("state"))
        .current_dir(dir)
        .output()
        .unwrap();
    let status: Value = serde_json::from_str(&ok(&out)).unwrap();
    let status = &status["status"];
    assert_eq!(status["chipset"], "mdm9607", "{status}");
    assert_eq!(status["interrupted_install"], Value::Null, "{status}");
}

#[test]
fn reconnect_0_ends_a_cut_off_flash_with_the_transport_error_as_before() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (emulated, _link, flash) = cut_in_boot(dir, &["--reconnect", "0"]);
    drop(emulated);
    let (rest, code, stderr) = flash.finish();

    assert_eq!(code, Some(51), "events: {rest:?}\nstderr: {stderr}");
    assert!(
        !rest.iter().any(|e| e["event"] == "reconnecting"),
        "{rest:?}"
    );
    assert!(!stderr.contains("waiting up to"), "{stderr}");
    let [.., finished, result] = rest.as_slice() else {
        panic!("events: {rest:?}")
    };
    assert_eq!(finished["event"], "finished");
    assert_eq!(finished["code"], 51);
    assert_eq!(result["ok"], false);
    assert_eq!(result["error"]["kind"], "transport_error", "{result}");
    // The journal stays for the re-run.
    assert_eq!(journals(dir).len(), 1);
}

#[test]
fn a_modem_that_does_not_come_back_ends_with_the_original_code_and_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (emulated, link, flash) = cut_in_boot(dir, &["--reconnect", "1"]);
    // Unplugged for good, its by-id link gone with it as udev removes one. (A link left
    // dangling at /dev/pts/N is found again by the wait as soon as a test running beside this
    // one opens a pseudo-terminal that reuses N: the "unplugged" modem then answers.)
    drop(emulated);
    std::fs::remove_file(&link).unwrap();
    let (rest, code, stderr) = flash.finish();

    assert_eq!(code, Some(51), "events: {rest:?}\nstderr: {stderr}");
    let [.., reconnecting, finished, result] = rest.as_slice() else {
        panic!("events: {rest:?}")
    };
    assert_eq!(reconnecting["event"], "reconnecting", "{rest:?}");
    assert_eq!(reconnecting["timeout_secs"], 1, "{reconnecting}");
    assert_eq!(finished["event"], "finished");
    assert_eq!(finished["code"], 51);
    assert_eq!(result["error"]["kind"], "transport_error", "{result}");
    let message = result["error"]["message"].as_str().unwrap();
    assert!(message.contains("hung up"), "{message}");
    assert!(
        message.contains("did not come back within 1 s"),
        "{message}"
    );
    assert!(stderr.contains("connection lost"), "{stderr}");
}

/// A fake USB device in a sysfs-like tree, built beside it and renamed in, so a scan never sees
/// it half made.
fn fake_usb_device(root: &Path, name: &str, vid: &str, pid: &str, tty: &str) {
    let staging = root.with_extension("staging").join(name);
    std::fs::create_dir_all(staging.join(format!("{name}:1.0/{tty}"))).unwrap();
    std::fs::write(staging.join("idVendor"), format!("{vid}\n")).unwrap();
    std::fs::write(staging.join("idProduct"), format!("{pid}\n")).unwrap();
    std::fs::write(staging.join("product"), "Qualcomm CDMA Technologies MSM\n").unwrap();
    std::fs::rename(&staging, root.join(name)).unwrap();
}

/// Spawns `flash update.vfp` to the pty emulator with `extra` arguments.
fn spawn_flash(dir: &Path, emulated: &Emulated, extra: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_veriflash"))
        .args([
            "flash",
            "update.vfp",
            "--trust",
            "vendor.pub.pem",
            "--target",
            &format!("mdm9x07:serial:{}", emulated.path),
        ])
        .args(extra)
        .env("VERIFLASH_STATE_DIR", dir.join("state"))
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn wait_boot_finds_the_modem_back_in_normal_mode_and_not_one_that_was_already_running() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    setup(dir);
    let root = dir.join("usb");
    std::fs::create_dir_all(&root).unwrap();
    // Another modem, running before the flash began: not the one being flashed (and listed
    // first by a scan, so taking it would show).
    fake_usb_device(&root, "1-1", "2c7c", "0125", "ttyUSB0");
    let emulated = Emulated::start(&[]);
    let mut child = spawn_flash(
        dir,
        &emulated,
        &[
            "--json",
            "--wait-boot",
            "60",
            "--sysfs",
            root.to_str().unwrap(),
        ],
    );
    let mut events = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    for line in events.by_ref() {
        let event: Value = serde_json::from_str(&line.unwrap()).unwrap();
        let read_back = event["event"] == "phase_finished" && event["phase"] == "read_back";
        seen.push(event);
        if read_back {
            break;
        }
    }
    // Read back: the modem is reset next, and comes back running its new software.
    fake_usb_device(&root, "1-4", "05c6", "9025", "ttyUSB5");
    seen.extend(events.map(|l| serde_json::from_str::<Value>(&l.unwrap()).unwrap()));
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{seen:?}");
    let waiting = &seen[position(&seen, "waiting_for_boot")];
    assert_eq!(waiting["timeout_secs"], 60, "{waiting}");
    assert!(position(&seen, "finished") < position(&seen, "waiting_for_boot"));
    let booted = &seen[position(&seen, "booted")];
    // The report comes last and says where the modem came back.
    assert_eq!(seen.last().unwrap()["booted"], booted["device"], "{seen:?}");
    // Where the modem came back (a pty is no USB device, so that was not known in advance):
    // not the modem at 1-1, which was running before the flash.
    let device = booted["device"].as_str().unwrap();
    for part in ["05c6:9025", "USB 1-4", "/dev/ttyUSB5"] {
        assert!(device.contains(part), "{device}");
    }
}

#[test]
fn wait_boot_times_out_with_code_53_when_the_modem_does_not_come_back() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    setup(dir);
    let root = dir.join("usb");
    std::fs::create_dir_all(&root).unwrap();
    fake_usb_device(&root, "2-1", "2c7c", "0125", "ttyUSB0");
    let emulated = Emulated::start(&[]);
    let out = spawn_flash(
        dir,
        &emulated,
        &["--wait-boot", "1", "--sysfs", root.to_str().unwrap()],
    )
    .wait_with_output()
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(53), "{stdout}\n{stderr}");
    // The install itself succeeded, and the message says so and what to do.
    assert!(stdout.contains("installed on mdm9x07:serial:"), "{stdout}");
    assert!(stderr.contains("error[53 timeout]"), "{stderr}");
    assert!(
        stderr.contains("did not come back in normal mode within 1 s"),
        "{stderr}"
    );
    assert!(stderr.contains("veriflash devices"), "{stderr}");
}

#[test]
fn wait_boot_is_refused_for_targets_that_are_no_usb_modem() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    setup(dir);
    for targets in [
        &["--target", "mdm9x07:emulator"][..],
        &["--target", "file:device.img"][..],
        &["--target", "mdm9x07:usb:1-1", "--target", "mdm9x07:usb:1-2"][..],
    ] {
        let mut args = vec![
            "flash",
            "update.vfp",
            "--trust",
            "vendor.pub.pem",
            "--wait-boot",
            "5",
            "--json",
        ];
        args.extend_from_slice(targets);
        let out = veriflash(&args, dir);
        assert_eq!(out.status.code(), Some(72), "{targets:?}: {out:?}");
        // The last line is the error object (after the run's events, if it began).
        let last = String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .unwrap_or_default()
            .to_owned();
        let v: Value = serde_json::from_str(&last).unwrap();
        let message = v["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("--wait-boot") || message.contains("wait for the boot"),
            "{v}"
        );
    }
}
