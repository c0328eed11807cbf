//! The emulated device served on a pseudo-terminal, speaking exactly the bytes a real
//! download-mode MDM9x07 speaks through `qcserial` on `/dev/ttyUSBn`: the boot ROM's Sahara
//! `HELLO` as soon as a host opens the tty, then Sahara and Firehose as a byte stream
//! (zero-length packets are invisible on a tty, as they are through `qcserial`).
//!
//! So any Sahara/Firehose host tool can be pointed at the slave path (`/dev/pts/N`), and the
//! [`SerialTransport`](crate::serial::SerialTransport) is tested through a real tty.
//!
//! Pseudo-terminal quirks this handles (Linux):
//! - Terminal settings set through the master apply to the slave, so the server puts the
//!   slave in raw mode itself, before any byte is sent and again for every host: a host that
//!   opens the slave and reads before setting raw mode still gets unmangled bytes (no echo,
//!   no CR/LF translation, no XON/XOFF eaten).
//! - A master whose slave is *not yet* opened gives no sign of it, but one whose slave was
//!   opened and closed again polls `POLLHUP` until the next open. The server opens and closes
//!   the slave once at start, so each host's arrival (`POLLHUP` clears) and departure
//!   (`POLLHUP`) is seen.
//! - Bytes written to the master that the host did not read stay queued in the slave after
//!   the host closes it, and the next host would read them. The server flushes the slave's
//!   input queue whenever a host leaves, so every host starts with a fresh `HELLO`.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::event::PollFlags;
use rustix::fs::{OFlags, fcntl_getfl, fcntl_setfl};
use rustix::io::Errno;
use rustix::pty::{OpenptFlags, grantpt, ioctl_tiocgptpeer, openpt, ptsname, unlockpt};
use rustix::termios::{QueueSelector, tcflush};

use crate::diag::DiagDevice;
use crate::emulator::Emulator;
use crate::error::Error;
use crate::serial::{io_error, set_raw_mode, wait_ready};
use crate::transport::Endpoint;

/// How long the server waits between looks at a pseudo-terminal no host has open, and the
/// longest it waits before checking the stop flag.
const IDLE: Duration = Duration::from_millis(20);
/// Bytes read from the master per call: a tty moves at most a few KiB at once, and a read this
/// small never exceeds any raw payload size a programmer negotiates.
const READ_CHUNK: usize = 4096;
/// Reads of stale bytes from a departed host, at most, before giving up draining them.
const MAX_DRAIN_READS: usize = 1024;

/// A device that can be served on a pseudo-terminal.
pub trait PtyPeer: Endpoint {
    /// A host opened the tty. A download-mode device sends its `HELLO` now (the real one sends
    /// it when it enumerates, and `qcserial` holds it until the port is opened).
    fn host_opened(&mut self);

    /// The host closed the tty.
    fn host_closed(&mut self) {}
}

impl PtyPeer for Emulator {
    fn host_opened(&mut self) {
        // A programmer that already runs keeps running (as on hardware, where closing the
        // port does not reset the chip); otherwise the boot ROM (re)starts with a `HELLO`:
        // after `power reset` it is back in download mode, NAND intact.
        if !self.programmer_running() {
            self.power_on();
        }
    }
}

impl PtyPeer for DiagDevice {
    /// A normal-mode modem's DIAG port answers requests; it sends nothing unasked.
    fn host_opened(&mut self) {}
}

/// A host arriving at or leaving the pseudo-terminal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostEvent {
    /// A host opened the slave.
    Opened,
    /// The host closed it; the device's unread output was discarded.
    Closed,
}

/// The master side of a pseudo-terminal with the device behind it.
#[derive(Debug)]
pub struct PtyServer {
    master: OwnedFd,
    slave: PathBuf,
}

fn pty_error(e: Errno, doing: &str) -> Error {
    io_error(e, Path::new("/dev/ptmx"), doing)
}

impl PtyServer {
    /// Opens a new pseudo-terminal, puts its slave in raw mode and prepares it so the first
    /// host's arrival is seen.
    ///
    /// # Errors
    /// [`Error::Transport`] when no pseudo-terminal can be had.
    pub fn open() -> Result<Self, Error> {
        let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)
            .map_err(|e| pty_error(e, "open a pseudo-terminal"))?;
        grantpt(&master).map_err(|e| pty_error(e, "grant the pseudo-terminal"))?;
        unlockpt(&master).map_err(|e| pty_error(e, "unlock the pseudo-terminal"))?;
        let name = ptsname(&master, Vec::new()).map_err(|e| pty_error(e, "name the slave"))?;
        let slave =
            PathBuf::from(name.into_string().map_err(|_| {
                Error::Unsupported("the pseudo-terminal's name is not UTF-8".into())
            })?);
        let flags = fcntl_getfl(&master).map_err(|e| pty_error(e, "read the master's flags"))?;
        fcntl_setfl(&master, flags | OFlags::NONBLOCK)
            .map_err(|e| pty_error(e, "make the master non-blocking"))?;
        set_raw_mode(&master, &slave)?;
        let server = Self { master, slave };
        // Open and close the slave once: from now on the master polls POLLHUP exactly while
        // no host has the slave open.
        server.flush_slave_input()?;
        Ok(server)
    }

    /// The slave's path (`/dev/pts/N`) for hosts to open.
    #[must_use]
    pub fn slave_path(&self) -> &Path {
        &self.slave
    }

    /// Opens the slave through the master (no path race), drops whatever it holds for a host
    /// to read, and closes it again.
    fn flush_slave_input(&self) -> Result<(), Error> {
        let peer = ioctl_tiocgptpeer(
            &self.master,
            OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC,
        )
        .map_err(|e| io_error(e, &self.slave, "open the slave"))?;
        tcflush(&peer, QueueSelector::IFlush)
            .map_err(|e| io_error(e, &self.slave, "flush the slave"))?;
        drop(peer);
        Ok(())
    }

    /// Reads and discards what a departed host wrote last.
    fn drain_master(&self) {
        let mut buf = [0u8; READ_CHUNK];
        for _ in 0..MAX_DRAIN_READS {
            match rustix::io::read(&self.master, &mut buf) {
                Ok(n) if n > 0 => {}
                _ => return,
            }
        }
    }

    /// Serves `peer` to one host after another until `stop` returns true (checked at least
    /// every 20 ms), telling `events` when a host arrives and leaves.
    ///
    /// A host's departure is seen when the master polls `POLLHUP`; a host that closes and
    /// reopens the tty faster than the server is scheduled looks like one connection, and gets
    /// no new `HELLO` — as a real device, which sends it only once per enumeration, would
    /// not either. Tools that reconnect at once can wait for [`HostEvent::Closed`].
    ///
    /// # Errors
    /// [`Error::Transport`] when the pseudo-terminal itself fails.
    pub fn serve(
        &self,
        peer: &mut dyn PtyPeer,
        stop: &dyn Fn() -> bool,
        events: &mut dyn FnMut(HostEvent),
    ) -> Result<(), Error> {
        let mut out: Vec<u8> = Vec::new();
        let mut sent = 0usize;
        let mut connected = false;
        let mut buf = vec![0u8; READ_CHUNK];
        while !stop() {
            let mut wanted = PollFlags::IN;
            if sent < out.len() {
                wanted |= PollFlags::OUT;
            }
            let revents = wait_ready(&self.master, wanted, Instant::now() + IDLE)
                .map_err(|e| io_error(e, &self.slave, "wait on the master"))?
                .unwrap_or(PollFlags::empty());
            if revents.contains(PollFlags::HUP) {
                if connected {
                    connected = false;
                    out.clear();
                    sent = 0;
                    self.drain_master();
                    self.flush_slave_input()?;
                    peer.host_closed();
                    events(HostEvent::Closed);
                }
                std::thread::sleep(IDLE);
                continue;
            }
            if !connected {
                connected = true;
                // Raw mode again: a host before may have changed the settings.
                set_raw_mode(&self.master, &self.slave)?;
                peer.host_opened();
                events(HostEvent::Opened);
                pull(peer, &mut out);
            }
            if revents.contains(PollFlags::IN) {
                match rustix::io::read(&self.master, &mut buf) {
                    Ok(n) if n > 0 => {
                        peer.receive(buf.get(..n).unwrap_or(&[]));
                        pull(peer, &mut out);
                    }
                    // EIO: the host just left; the next poll says HUP.
                    Ok(_) | Err(Errno::AGAIN) | Err(Errno::INTR) | Err(Errno::IO) => {}
                    Err(e) => return Err(io_error(e, &self.slave, "read the master")),
                }
            }
            if sent < out.len() {
                match rustix::io::write(&self.master, out.get(sent..).unwrap_or(&[])) {
                    Ok(n) => sent += n,
                    Err(Errno::AGAIN) | Err(Errno::INTR) | Err(Errno::IO) => {}
                    Err(e) => return Err(io_error(e, &self.slave, "write the master")),
                }
                if sent == out.len() {
                    out.clear();
                    sent = 0;
                } else if sent > (1 << 20) {
                    out.drain(..sent);
                    sent = 0;
                }
            }
        }
        Ok(())
    }
}

/// Moves everything the device has to send into `out`. Zero-length packets vanish, as they do
/// through `qcserial`.
fn pull(peer: &mut dyn PtyPeer, out: &mut Vec<u8>) {
    while let Some(frame) = peer.transmit() {
        out.extend_from_slice(&frame);
    }
}
