//! A serial-port [`Transport`]: `/dev/ttyUSBn` as the Linux `qcserial` driver exposes a
//! device in emergency download mode (`05C6:9008`), or any other tty that speaks the same
//! bytes (the pseudo-terminal of `veriflash emulate mdm9x07 --pty`).
//!
//! The tty is put in raw mode (no echo, no line editing, no CR/LF translation, no XON/XOFF,
//! 8 data bits), because Sahara and Firehose are binary: a single `0x11` or `0x0D` taken by
//! the line discipline would corrupt a packet. The file is opened non-blocking and every wait
//! is a `poll` with the caller's timeout, so a device that stops answering is an
//! [`Error::Timeout`], never a hang. A hang-up (the device re-enumerated, the cable was
//! pulled, the emulator exited) is an [`Error::Transport`].
//!
//! A tty is a byte stream: reads may split or join the device's USB transfers, and a
//! zero-length packet is invisible, so this transport reports [`Framing::Stream`].

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::fs::{FlockOperation, Mode, OFlags, flock, open};
use rustix::io::Errno;
use rustix::termios::{OptionalActions, SpecialCodeIndex, isatty, tcgetattr, tcsetattr};

use crate::error::Error;
use crate::transport::{Framing, Transport};

/// The packet size reported by [`Transport::max_packet`]: a high-speed USB bulk endpoint's,
/// which is what the tty is backed by.
pub const SERIAL_MAX_PACKET: usize = 512;

/// A raw-mode tty to one device.
#[derive(Debug)]
pub struct SerialTransport {
    fd: OwnedFd,
    path: PathBuf,
}

/// Puts the terminal behind `fd` in raw mode: `cfmakeraw`, receiver on, modem control lines
/// ignored, reads return as soon as one byte is there.
///
/// # Errors
/// [`Error::Transport`] when the terminal refuses the settings.
pub fn set_raw_mode(fd: impl AsFd, what: &Path) -> Result<(), Error> {
    let fd = fd.as_fd();
    let mut t = tcgetattr(fd).map_err(|e| io_error(e, what, "read the terminal settings"))?;
    t.make_raw();
    t.control_modes |= rustix::termios::ControlModes::CREAD | rustix::termios::ControlModes::CLOCAL;
    t.special_codes[SpecialCodeIndex::VMIN] = 1;
    t.special_codes[SpecialCodeIndex::VTIME] = 0;
    // The baud rate means nothing to a USB tty; 115200 keeps tools that print it happy.
    let _ = t.set_speed(115_200);
    // TCSANOW, not TCSAFLUSH: a device's `HELLO` may already be waiting and must not be
    // discarded.
    tcsetattr(fd, OptionalActions::Now, &t)
        .map_err(|e| io_error(e, what, "set the terminal to raw mode"))
}

/// `e` as a transport error naming the file and what was being done.
pub(crate) fn io_error(e: Errno, path: &Path, doing: &str) -> Error {
    let err = std::io::Error::from(e);
    Error::Transport(std::io::Error::new(
        err.kind(),
        format!("{}: could not {doing}: {err}", path.display()),
    ))
}

/// `timeout` as a `poll` timeout (saturating at a day, far beyond any wait here).
pub(crate) fn timespec(timeout: Duration) -> Timespec {
    let capped = timeout.min(Duration::from_secs(86_400));
    Timespec {
        tv_sec: i64::try_from(capped.as_secs()).unwrap_or(86_400),
        tv_nsec: i64::from(capped.subsec_nanos()),
    }
}

/// Waits until `fd` is ready for `events` or `deadline` passes. `Ok(None)`: timed out.
pub(crate) fn wait_ready(
    fd: impl AsFd,
    events: PollFlags,
    deadline: Instant,
) -> Result<Option<PollFlags>, Errno> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut fds = [PollFd::new(&fd, events)];
        match poll(&mut fds, Some(&timespec(left))) {
            Ok(0) => {
                if left.is_zero() {
                    return Ok(None);
                }
                // Woken early with nothing ready (some kernels round down): check the clock.
                if Instant::now() >= deadline {
                    return Ok(None);
                }
            }
            Ok(_) => return Ok(Some(fds[0].revents())),
            Err(Errno::INTR) => {
                if Instant::now() >= deadline {
                    return Ok(None);
                }
            }
            Err(e) => return Err(e),
        }
    }
}

fn hung_up(path: &Path) -> Error {
    Error::Transport(std::io::Error::new(
        std::io::ErrorKind::BrokenPipe,
        format!(
            "{}: the device hung up (re-enumerated, unplugged or closed)",
            path.display()
        ),
    ))
}

impl SerialTransport {
    /// Opens `path` (e.g. `/dev/ttyUSB0`) for exclusive use and puts it in raw mode.
    ///
    /// # Errors
    /// [`Error::Transport`] when the file cannot be opened, another program holds it, or the
    /// terminal refuses raw mode; [`Error::Unsupported`] when it is not a terminal.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        let fd = open(
            path,
            OFlags::RDWR | OFlags::NOCTTY | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io_error(e, path, "open it"))?;
        if !isatty(&fd) {
            return Err(Error::Unsupported(format!(
                "{} is not a terminal (expected a qcserial tty such as /dev/ttyUSB0)",
                path.display()
            )));
        }
        // Two tools on one download-mode port corrupt each other's packets: refuse a port
        // another process (using flock, as pyserial's `exclusive` and ModemManager do) holds.
        flock(&fd, FlockOperation::NonBlockingLockExclusive).map_err(|e| {
            if e == Errno::WOULDBLOCK {
                Error::Transport(std::io::Error::new(
                    std::io::ErrorKind::WouldBlock,
                    format!(
                        "{} is in use by another program (ModemManager? another flasher?)",
                        path.display()
                    ),
                ))
            } else {
                io_error(e, path, "lock it")
            }
        })?;
        set_raw_mode(&fd, path)?;
        Ok(Self {
            fd,
            path: path.to_owned(),
        })
    }

    /// The tty's path.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Transport for SerialTransport {
    fn write(&mut self, bytes: &[u8], timeout: Duration) -> Result<usize, Error> {
        if bytes.is_empty() {
            return Ok(0);
        }
        let deadline = Instant::now() + timeout;
        loop {
            match rustix::io::write(&self.fd, bytes) {
                Ok(n) if n > 0 => return Ok(n),
                Ok(_) | Err(Errno::AGAIN) | Err(Errno::INTR) => {}
                Err(Errno::IO) | Err(Errno::PIPE) | Err(Errno::NODEV) => {
                    return Err(hung_up(&self.path));
                }
                Err(e) => return Err(io_error(e, &self.path, "write")),
            }
            match wait_ready(&self.fd, PollFlags::OUT, deadline) {
                Ok(None) => {
                    return Err(Error::Timeout {
                        waiting_for: "the serial port to take bytes",
                    });
                }
                Ok(Some(r)) if r.intersects(PollFlags::HUP | PollFlags::ERR | PollFlags::NVAL) => {
                    return Err(hung_up(&self.path));
                }
                Ok(Some(_)) => {}
                Err(e) => return Err(io_error(e, &self.path, "wait to write")),
            }
        }
    }

    fn read(&mut self, buf: &mut [u8], timeout: Duration) -> Result<usize, Error> {
        if buf.is_empty() {
            return Ok(0);
        }
        let deadline = Instant::now() + timeout;
        loop {
            match rustix::io::read(&self.fd, &mut *buf) {
                // End of file on a tty: the other end is gone. Never `Ok(0)`, which a caller
                // could take for a zero-length packet and wait on forever.
                Ok(0) => return Err(hung_up(&self.path)),
                Ok(n) => return Ok(n),
                Err(Errno::AGAIN) | Err(Errno::INTR) => {}
                Err(Errno::IO) | Err(Errno::NODEV) => return Err(hung_up(&self.path)),
                Err(e) => return Err(io_error(e, &self.path, "read")),
            }
            match wait_ready(&self.fd, PollFlags::IN, deadline) {
                Ok(None) => {
                    return Err(Error::Timeout {
                        waiting_for: "the device (serial read)",
                    });
                }
                Ok(Some(r))
                    if !r.contains(PollFlags::IN)
                        && r.intersects(PollFlags::ERR | PollFlags::NVAL | PollFlags::HUP) =>
                {
                    return Err(hung_up(&self.path));
                }
                Ok(Some(_)) => {}
                Err(e) => return Err(io_error(e, &self.path, "wait to read")),
            }
        }
    }

    fn max_packet(&self) -> usize {
        SERIAL_MAX_PACKET
    }

    fn framing(&self) -> Framing {
        Framing::Stream
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_that_is_not_a_terminal_is_refused() {
        let dir = std::env::temp_dir();
        let path = dir.join(format!("veriflash-serial-{}.bin", std::process::id()));
        std::fs::write(&path, b"not a tty").unwrap();
        let err = SerialTransport::open(&path).unwrap_err();
        let _ = std::fs::remove_file(&path);
        assert!(
            matches!(err, Error::Unsupported(ref m) if m.contains("not a terminal")),
            "{err}"
        );
    }

    #[test]
    fn a_missing_port_is_a_transport_error_naming_it() {
        let err = SerialTransport::open("/dev/ttyUSB-veriflash-none").unwrap_err();
        assert!(
            matches!(err, Error::Transport(ref e) if e.to_string().contains("ttyUSB-veriflash-none")),
            "{err}"
        );
    }

    #[test]
    fn timespec_saturates_and_keeps_nanoseconds() {
        let t = timespec(Duration::from_millis(1500));
        assert_eq!((t.tv_sec, t.tv_nsec), (1, 500_000_000));
        assert_eq!(timespec(Duration::MAX).tv_sec, 86_400);
    }
}
