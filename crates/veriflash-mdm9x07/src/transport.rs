//! How bytes reach a device in download mode, and an in-memory transport with fault hooks.
//!
//! A [`Transport`] writes and reads with a timeout on every call. USB bulk keeps the device's
//! packet boundaries ([`Framing::Packet`]: one read returns bytes of one transfer, a
//! zero-length packet reads as `Ok(0)`); a tty (qcserial) is a byte stream
//! ([`Framing::Stream`]: reads may split or join the device's writes). The protocol code above
//! works with either, because it never relies on a read returning exactly one message.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::error::Error;

/// Whether reads keep the sender's message boundaries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// USB bulk: one read returns bytes of one transfer; `Ok(0)` is a zero-length packet.
    Packet,
    /// A byte stream (tty): reads may split or join transfers.
    Stream,
}

/// A byte pipe to one device.
pub trait Transport {
    /// Writes some of `bytes`, returning how many were taken (a short write is allowed; see
    /// [`write_all`]).
    ///
    /// # Errors
    /// [`Error::Timeout`] when the device takes nothing within `timeout`;
    /// [`Error::Transport`] when the link fails.
    fn write(&mut self, bytes: &[u8], timeout: Duration) -> Result<usize, Error>;

    /// Reads into `buf`; `Ok(0)` is a zero-length packet on [`Framing::Packet`] links.
    ///
    /// # Errors
    /// [`Error::Timeout`] when nothing arrives within `timeout`; [`Error::Transport`] when the
    /// link fails.
    fn read(&mut self, buf: &mut [u8], timeout: Duration) -> Result<usize, Error>;

    /// The link's largest single transfer (USB: the bulk endpoint's max packet size).
    fn max_packet(&self) -> usize;

    /// Whether reads keep message boundaries.
    fn framing(&self) -> Framing;
}

/// The most short writes in a row [`write_all`] tolerates before giving up.
pub const MAX_SHORT_WRITES: usize = 1024;

/// Writes all of `bytes`, continuing after short writes.
///
/// # Errors
/// The transport's error, or [`Error::Transport`] when the transport keeps taking nothing.
pub fn write_all(t: &mut dyn Transport, bytes: &[u8], timeout: Duration) -> Result<(), Error> {
    let mut rest = bytes;
    let mut stalls = 0usize;
    while !rest.is_empty() {
        let n = t.write(rest, timeout)?.min(rest.len());
        if n == 0 {
            stalls += 1;
            if stalls > MAX_SHORT_WRITES {
                return Err(Error::Transport(std::io::Error::new(
                    std::io::ErrorKind::WriteZero,
                    "the transport takes no more bytes",
                )));
            }
        } else {
            stalls = 0;
        }
        rest = rest.get(n..).unwrap_or(&[]);
    }
    Ok(())
}

/// The device end of an in-memory link: takes what the host writes, queues what it answers.
pub trait Endpoint {
    /// Bytes from the host, as one transfer.
    fn receive(&mut self, bytes: &[u8]);

    /// The next transfer for the host (an empty one is a zero-length packet), if any.
    fn transmit(&mut self) -> Option<Vec<u8>>;
}

/// Faults the in-memory transport injects.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LinkFaults {
    /// After this many bytes were read by the host, every read times out (a device that
    /// stops answering mid-stream).
    pub stall_after_read_bytes: Option<u64>,
    /// The write call with this index (0-based) takes only half its bytes.
    pub short_write_at: Option<u64>,
    /// Bytes read by the host in `[start, start + len)` of the stream are lost.
    pub drop_read_bytes: Option<(u64, u64)>,
}

/// An in-memory link to an [`Endpoint`] (the emulator), with fault hooks. The endpoint runs
/// synchronously inside `write`, so a read that finds nothing queued times out at once: no
/// test ever waits.
pub struct MemoryTransport<E: Endpoint> {
    device: Arc<Mutex<E>>,
    framing: Framing,
    max_packet: usize,
    faults: LinkFaults,
    pending: VecDeque<Vec<u8>>,
    writes: u64,
    read_bytes: u64,
}

impl<E: Endpoint> std::fmt::Debug for MemoryTransport<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryTransport")
            .field("framing", &self.framing)
            .field("faults", &self.faults)
            .field("writes", &self.writes)
            .field("read_bytes", &self.read_bytes)
            .finish_non_exhaustive()
    }
}

impl<E: Endpoint> MemoryTransport<E> {
    /// A link to `device` with the given framing.
    #[must_use]
    pub fn new(device: Arc<Mutex<E>>, framing: Framing) -> Self {
        Self {
            device,
            framing,
            max_packet: 512,
            faults: LinkFaults::default(),
            pending: VecDeque::new(),
            writes: 0,
            read_bytes: 0,
        }
    }

    /// Injects `faults`.
    #[must_use]
    pub fn with_faults(mut self, faults: LinkFaults) -> Self {
        self.faults = faults;
        self
    }

    fn pull(&mut self) -> Result<(), Error> {
        let mut device = self
            .device
            .lock()
            .map_err(|_| Error::Unsupported("the emulated device panicked".into()))?;
        while let Some(frame) = device.transmit() {
            self.pending.push_back(frame);
        }
        Ok(())
    }

    /// Applies the read-side faults to `n` bytes just copied into `buf`.
    fn filter(&mut self, buf: &mut [u8], n: usize) -> usize {
        let start = self.read_bytes;
        self.read_bytes = start.saturating_add(n as u64);
        let Some((drop_at, drop_len)) = self.faults.drop_read_bytes else {
            return n;
        };
        let drop_end = drop_at.saturating_add(drop_len);
        let mut kept = 0usize;
        for i in 0..n {
            let pos = start + i as u64;
            if pos >= drop_at && pos < drop_end {
                continue;
            }
            if let (Some(src), true) = (buf.get(i).copied(), kept < buf.len()) {
                if let Some(d) = buf.get_mut(kept) {
                    *d = src;
                }
                kept += 1;
            }
        }
        kept
    }
}

impl<E: Endpoint> Transport for MemoryTransport<E> {
    fn write(&mut self, bytes: &[u8], _timeout: Duration) -> Result<usize, Error> {
        let index = self.writes;
        self.writes += 1;
        let take = if self.faults.short_write_at == Some(index) && bytes.len() > 1 {
            bytes.len() / 2
        } else {
            bytes.len()
        };
        let part = bytes.get(..take).unwrap_or(bytes);
        self.device
            .lock()
            .map_err(|_| Error::Unsupported("the emulated device panicked".into()))?
            .receive(part);
        Ok(take)
    }

    fn read(&mut self, buf: &mut [u8], _timeout: Duration) -> Result<usize, Error> {
        if self
            .faults
            .stall_after_read_bytes
            .is_some_and(|limit| self.read_bytes >= limit)
        {
            return Err(Error::Timeout {
                waiting_for: "the device (stalled mid-stream)",
            });
        }
        self.pull()?;
        let budget = match self.faults.stall_after_read_bytes {
            Some(limit) => usize::try_from(limit - self.read_bytes).unwrap_or(usize::MAX),
            None => usize::MAX,
        };
        let want = buf.len().min(budget);
        let mut n = 0usize;
        while let Some(front) = self.pending.front_mut() {
            if front.is_empty() {
                self.pending.pop_front();
                if self.framing == Framing::Packet && n == 0 {
                    return Ok(0);
                }
                continue;
            }
            let take = front.len().min(want - n);
            if let (Some(dst), Some(src)) = (buf.get_mut(n..n + take), front.get(..take)) {
                dst.copy_from_slice(src);
            }
            front.drain(..take);
            if front.is_empty() {
                self.pending.pop_front();
            }
            n += take;
            if n == want || self.framing == Framing::Packet {
                break;
            }
        }
        if n == 0 {
            return Err(Error::Timeout {
                waiting_for: "the device",
            });
        }
        let kept = self.filter(buf, n);
        if kept == 0 {
            return Err(Error::Timeout {
                waiting_for: "the device (bytes lost)",
            });
        }
        Ok(kept)
    }

    fn max_packet(&self) -> usize {
        self.max_packet
    }

    fn framing(&self) -> Framing {
        self.framing
    }
}
