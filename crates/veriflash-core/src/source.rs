//! Package sources that cannot hang the pipeline.

use std::io::{self, Read};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::time::Duration;

/// Bytes read ahead per message from the reader thread.
const PIECE: usize = 64 * 1024;
/// Pieces buffered ahead: bounds the memory a fast source can fill (2 × 64 KiB).
const AHEAD: usize = 2;

/// A reader that fails with [`io::ErrorKind::TimedOut`] instead of waiting forever when its
/// source stalls (a dead network peer, a stuck USB endpoint, a hung NFS mount).
///
/// The source is read on its own thread, at most `2 × 64 KiB` ahead; each `read` waits at most
/// `timeout` for the next piece. After a timeout the reader stays failed. A source blocked
/// forever keeps its thread until the blocked read returns; the thread then sees the reader
/// gone and ends.
#[derive(Debug)]
pub struct TimeoutReader {
    rx: Receiver<io::Result<Vec<u8>>>,
    piece: Vec<u8>,
    pos: usize,
    timeout: Duration,
    failed: bool,
}

impl TimeoutReader {
    /// Starts reading `source` on a background thread.
    ///
    /// # Errors
    /// When the thread cannot be started.
    pub fn new<R: Read + Send + 'static>(source: R, timeout: Duration) -> io::Result<Self> {
        let (tx, rx) = sync_channel(AHEAD);
        std::thread::Builder::new()
            .name("veriflash-source".into())
            .spawn(move || pump(source, &tx))?;
        Ok(Self {
            rx,
            piece: Vec::new(),
            pos: 0,
            timeout,
            failed: false,
        })
    }
}

fn pump<R: Read>(mut source: R, tx: &SyncSender<io::Result<Vec<u8>>>) {
    loop {
        let mut buf = vec![0u8; PIECE];
        let message = loop {
            match source.read(&mut buf) {
                Ok(n) => {
                    buf.truncate(n);
                    break Ok(buf);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        let last = !matches!(&message, Ok(b) if !b.is_empty());
        if tx.send(message).is_err() || last {
            return;
        }
    }
}

impl Read for TimeoutReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.failed {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the source stalled earlier",
            ));
        }
        if self.pos == self.piece.len() {
            match self.rx.recv_timeout(self.timeout) {
                Ok(Ok(piece)) => {
                    self.piece = piece;
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                // The thread ended after end of input (it sends an empty piece first).
                Err(RecvTimeoutError::Disconnected) => return Ok(0),
                Err(RecvTimeoutError::Timeout) => {
                    self.failed = true;
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("no data from the source for {:?}", self.timeout),
                    ));
                }
            }
        }
        let available = self.piece.get(self.pos..).unwrap_or_default();
        let n = available.len().min(buf.len());
        buf[..n].copy_from_slice(&available[..n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_every_byte_through() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let mut reader =
            TimeoutReader::new(io::Cursor::new(data.clone()), Duration::from_secs(5)).unwrap();
        let mut out = Vec::new();
        reader.read_to_end(&mut out).unwrap();
        assert_eq!(out, data);
    }

    /// A source that delivers a little, then stops answering (for longer than the test waits).
    struct Stall(bool);
    impl Read for Stall {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.0 {
                std::thread::sleep(Duration::from_secs(30));
                return Ok(0);
            }
            self.0 = true;
            buf[..4].copy_from_slice(b"VFPK");
            Ok(4)
        }
    }

    #[test]
    fn a_stalled_source_times_out_instead_of_hanging() {
        let mut reader = TimeoutReader::new(Stall(false), Duration::from_millis(100)).unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(reader.read(&mut buf).unwrap(), 4);
        let err = reader.read(&mut buf).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        // And it stays failed.
        assert_eq!(
            reader.read(&mut buf).unwrap_err().kind(),
            io::ErrorKind::TimedOut
        );
    }

    #[test]
    fn source_errors_are_passed_on() {
        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("cable pulled"))
            }
        }
        let mut reader = TimeoutReader::new(Broken, Duration::from_secs(5)).unwrap();
        let err = reader.read(&mut [0u8; 8]).unwrap_err();
        assert_eq!(err.to_string(), "cable pulled");
    }
}
