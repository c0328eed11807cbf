//! The serial transport against the emulator served on a real pseudo-terminal: the bytes go
//! through the kernel's tty layer exactly as they would through qcserial's `/dev/ttyUSBn`.
//! Needs features `serial` and `pty` (Linux).

#![cfg(all(target_os = "linux", feature = "pty"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use veriflash_core::sig::{PinnedKeys, SigningKey, Verifier};
use veriflash_core::{CancelToken, ErrorKind, InstallPolicy, install};
use veriflash_mdm9x07::diag::{DiagDevice, DiagEdlCommand, DiagSwitch, EdlSwitch};
use veriflash_mdm9x07::emulator::{Emulator, EmulatorConfig, test_programmer};
use veriflash_mdm9x07::pty::{HostEvent, PtyPeer, PtyServer};
use veriflash_mdm9x07::serial::SerialTransport;
use veriflash_mdm9x07::transport::{Endpoint, Framing, Transport, write_all};
use veriflash_mdm9x07::{Error, Mdm9x07Session, SessionConfig};
use veriflash_plugin::FlashSession;
use veriflash_test_support::{modem_package, pseudo_random};

/// The package of `images`, signed by `key`.
fn package(key: &SigningKey, images: &[(&'static str, Vec<u8>)]) -> Vec<u8> {
    modem_package(key, images).unwrap()
}

/// A device served on a pty by a thread, stopped and handed back by `finish`.
struct Served<P: PtyPeer + Send + 'static> {
    path: std::path::PathBuf,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<P>,
    events: std::sync::mpsc::Receiver<HostEvent>,
}

fn serve<P: PtyPeer + Send + 'static>(mut peer: P) -> Served<P> {
    let server = PtyServer::open().unwrap();
    let path = server.slave_path().to_owned();
    assert!(path.starts_with("/dev/pts"), "{}", path.display());
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let (tx, events) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        server
            .serve(&mut peer, &|| flag.load(Ordering::Relaxed), &mut |e| {
                let _ = tx.send(e);
            })
            .unwrap();
        peer
    });
    Served {
        path,
        stop,
        thread,
        events,
    }
}

impl<P: PtyPeer + Send + 'static> Served<P> {
    /// Waits until the server saw `event` (a synchronisation, not a timing assertion: the
    /// bound only keeps a broken server from hanging the test).
    fn saw(&self, event: HostEvent) {
        loop {
            match self.events.recv_timeout(Duration::from_secs(60)) {
                Ok(e) if e == event => return,
                Ok(_) => {}
                Err(e) => panic!("the server never reported {event:?}: {e}"),
            }
        }
    }

    fn finish(self) -> P {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

fn images() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("programmer", test_programmer(&pseudo_random(9_000, 1))),
        ("sbl", pseudo_random(70_000 + 3, 2)),
        ("tz", pseudo_random(20_000, 3)),
        // Every byte value, many times: XON/XOFF, CR, LF, ^C, ^D, DEL must all pass a raw tty.
        (
            "boot",
            (0..300_000u32).map(|i| i.to_le_bytes()[0]).collect(),
        ),
        ("system", pseudo_random(200_001, 5)),
    ]
}

fn flash_over_serial(
    path: &std::path::Path,
    pkg: &[u8],
    key: &SigningKey,
) -> Result<(), veriflash_core::Error> {
    let mut trust = PinnedKeys::new();
    trust.add(key.verifying_key());
    let link = SerialTransport::open(path).unwrap();
    assert_eq!(link.framing(), Framing::Stream);
    let mut session = Mdm9x07Session::new(link, SessionConfig::default());
    install(
        pkg,
        &Verifier::new(&trust),
        &InstallPolicy::default(),
        &mut session,
        &CancelToken::new(),
        &mut |_| {},
    )
    .map(|_| ())
}

#[test]
fn flashes_a_package_through_a_real_pty_into_the_emulator_and_it_reads_back() {
    let key = SigningKey::generate_p256().unwrap();
    let images = images();
    let pkg = package(&key, &images);
    let served = serve(Emulator::new(EmulatorConfig::mdm9607()).unwrap());

    flash_over_serial(&served.path, &pkg, &key).unwrap();
    served.saw(HostEvent::Closed);

    // A second host on the same tty after the reset: a fresh HELLO, no stale bytes, and the
    // chip identifies again (as `veriflash status` would).
    let link = SerialTransport::open(&served.path).unwrap();
    let mut session = Mdm9x07Session::new(link, SessionConfig::default());
    assert_eq!(session.device_info().unwrap().chipset, "mdm9607");
    drop(session);

    let device = served.finish();
    assert_eq!(device.programmer_uploads(), 1);
    assert_eq!(device.resets(), 1);
    for (part, bytes) in images.iter().skip(1) {
        let raw = format!("0:{}", part.to_uppercase());
        let raw = if *part == "boot" || *part == "system" {
            format!("0:{part}")
        } else {
            raw
        };
        assert_eq!(
            &device.partition_bytes(&raw, bytes.len()),
            bytes,
            "{part} differs on the NAND"
        );
    }
}

#[test]
fn a_wrong_chip_on_the_pty_gets_nothing_uploaded() {
    let key = SigningKey::generate_p256().unwrap();
    let pkg = package(&key, &images());
    let mut config = EmulatorConfig::mdm9607();
    config.hw_id = 0x0070_50E1_1234_0001; // MSM8916
    let served = serve(Emulator::new(config).unwrap());
    let err = flash_over_serial(&served.path, &pkg, &key).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::WrongChipset, "{err}");
    assert_eq!(served.finish().programmer_uploads(), 0);
}

/// Echoes every byte back.
#[derive(Default)]
struct Echo {
    out: Vec<Vec<u8>>,
}
impl Endpoint for Echo {
    fn receive(&mut self, bytes: &[u8]) {
        self.out.push(bytes.to_vec());
    }
    fn transmit(&mut self) -> Option<Vec<u8>> {
        if self.out.is_empty() {
            None
        } else {
            Some(self.out.remove(0))
        }
    }
}
impl PtyPeer for Echo {
    fn host_opened(&mut self) {}
}

#[test]
fn every_byte_value_crosses_the_tty_unchanged_both_ways() {
    let served = serve(Echo::default());
    let mut link = SerialTransport::open(&served.path).unwrap();
    let sent: Vec<u8> = (0..16).flat_map(|_| 0..=255u8).collect();
    write_all(&mut link, &sent, Duration::from_secs(10)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while got.len() < sent.len() {
        let n = link.read(&mut buf, Duration::from_secs(10)).unwrap();
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(got, sent, "the tty translated or ate bytes");
    // Nothing more: no echo of our own bytes by the line discipline.
    assert!(matches!(
        link.read(&mut buf, Duration::from_millis(50)),
        Err(Error::Timeout { .. })
    ));
    drop(link);
    served.finish();
}

#[test]
fn a_silent_device_times_out_and_a_vanished_one_is_a_transport_error() {
    let served = serve(Echo::default());
    let mut link = SerialTransport::open(&served.path).unwrap();
    let mut buf = [0u8; 16];
    assert!(matches!(
        link.read(&mut buf, Duration::from_millis(20)),
        Err(Error::Timeout { .. })
    ));
    served.finish(); // the master closes: the device is gone
    let err = link.read(&mut buf, Duration::from_secs(5)).unwrap_err();
    assert!(matches!(err, Error::Transport(_)), "{err}");
}

#[test]
fn the_diag_switch_crosses_the_pty_as_hdlc_frames() {
    let served = serve(DiagDevice::new().with_chatter());
    let link = SerialTransport::open(&served.path).unwrap();
    let mut switch = DiagSwitch::new(link, DiagEdlCommand::SubsysEdlReset, Duration::from_secs(5));
    switch.switch_to_edl().unwrap();
    drop(switch);
    assert_eq!(
        served.finish().switched(),
        Some(DiagEdlCommand::SubsysEdlReset)
    );
}

#[test]
fn a_second_tool_on_the_same_port_is_refused() {
    let served = serve(Echo::default());
    let first = SerialTransport::open(&served.path).unwrap();
    let err = SerialTransport::open(&served.path).unwrap_err();
    assert!(err.to_string().contains("in use"), "{err}");
    drop(first);
    served.finish();
}

/// `wait_for_device`: a modem whose tty appears only after the open began is waited for (as
/// qdl waits); without the wait, the absent tty fails at once.
#[test]
fn opening_a_serial_target_waits_for_the_modem_to_appear() {
    use veriflash_mdm9x07::Mdm9x07Plugin;
    use veriflash_plugin::Plugin;

    let served = serve(Emulator::new(EmulatorConfig::mdm9607()).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("ttyUSB0");
    let target = format!("serial:{}", link.display());
    let at_once = Mdm9x07Plugin::new(SessionConfig::default());
    assert!(matches!(
        at_once.open(&target),
        Err(e) if e.to_string().contains("No such file")
    ));
    let waiting = Mdm9x07Plugin::new(SessionConfig {
        wait_for_device: Duration::from_secs(60),
        ..SessionConfig::default()
    });
    let (from, to) = (served.path.clone(), link.clone());
    let appear = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(600));
        std::os::unix::fs::symlink(from, to).unwrap();
    });
    let mut session = waiting.open(&target).unwrap();
    assert_eq!(session.device_info().unwrap().chipset, "mdm9607");
    appear.join().unwrap();
    drop(session);
    served.finish();
}
