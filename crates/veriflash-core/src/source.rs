//! Where a package comes from (DESIGN.md §6), and sources that cannot hang the pipeline.
//!
//! A [`Source`] hands out byte ranges of a package: a local file ([`FileSource`]), an HTTP(S)
//! server (`HttpSource`, feature `http`), or a stream a PC tool pushes ([`PushedSource`], read
//! once, front to back). The OTA pipeline in [`crate::ota`] reads the header, manifest and
//! signatures through it first, verifies them, and only then asks for payload ranges, checking
//! each chunk against the verified manifest before it passes it on.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::error::{Error, ErrorKind};

/// A reader over one range of a package, as a [`Source`] hands it out.
pub type RangeReader = Box<dyn Read + Send>;

/// Byte ranges of a package, however it is reached.
///
/// A source only moves bytes; it never decides whether they are good. Everything it returns is
/// checked by the caller: the prefix by its signatures, each payload chunk by its signed digest.
pub trait Source: Send {
    /// Where the package comes from (a path or URL), for messages.
    fn describe(&self) -> String;

    /// Opens a reader over bytes `start..end` of the package (`end = None`: to its end).
    /// The reader may end early or fail part way (a broken connection); the caller asks again.
    ///
    /// # Errors
    /// [`ErrorKind::Io`], [`ErrorKind::Timeout`], [`ErrorKind::ServerError`],
    /// [`ErrorKind::SourceChanged`], [`ErrorKind::TlsError`] as the source finds them;
    /// [`ErrorKind::InvalidInput`] when the source cannot go back to `start` (a pushed stream).
    fn open(&mut self, start: u64, end: Option<u64>) -> Result<RangeReader, Error>;

    /// The package's total length, when the source knows it (a file's size, the length a server
    /// reported with its first answer).
    fn total_len(&self) -> Option<u64>;

    /// Whether bytes can be asked for again (resume, chunk repair). A pushed stream cannot.
    fn can_reread(&self) -> bool {
        true
    }
}

impl<S: Source + ?Sized> Source for &mut S {
    fn describe(&self) -> String {
        (**self).describe()
    }

    fn open(&mut self, start: u64, end: Option<u64>) -> Result<RangeReader, Error> {
        (**self).open(start, end)
    }

    fn total_len(&self) -> Option<u64> {
        (**self).total_len()
    }

    fn can_reread(&self) -> bool {
        (**self).can_reread()
    }
}

/// Attached (with [`Error::with_source`]) to a source failure that another attempt cannot fix,
/// such as an HTTP 404: the download stops retrying at once.
#[derive(Debug)]
pub struct PermanentFailure(pub String);

impl std::fmt::Display for PermanentFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PermanentFailure {}

/// A package in a local file.
#[derive(Debug)]
pub struct FileSource {
    path: PathBuf,
    file: File,
    len: u64,
}

/// Opens `path` for reading without blocking (a FIFO with no writer would block the open
/// forever), with what it is.
fn open_nonblocking(path: &Path) -> Result<(File, std::fs::Metadata), Error> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits().cast_signed())
        .open(path)
        .map_err(|e| Error::io(path.display(), e))?;
    let meta = file.metadata().map_err(|e| Error::io(path.display(), e))?;
    Ok((file, meta))
}

/// Opens `path` for reading, if it is a regular file, and returns it with its length.
///
/// Images are read from regular files only: packing reads each twice (to digest, then to copy
/// and re-check) and must know its length before the first byte, so `/dev/zero` or a FIFO
/// cannot keep a run busy forever. The file is opened without blocking, so a FIFO with no
/// writer is refused at once instead of hanging the open.
///
/// # Errors
/// [`ErrorKind::InvalidInput`] when `path` is a FIFO, a device, a socket or a directory;
/// [`ErrorKind::Io`] when it cannot be opened.
pub fn open_regular(path: &Path) -> Result<(File, u64), Error> {
    let (file, meta) = open_nonblocking(path)?;
    if !meta.is_file() {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "{} is not a regular file (a FIFO, a device or a directory): give a file, whose length is known before it is read",
                path.display()
            ),
        ));
    }
    Ok((file, meta.len()))
}

/// A package opened from a path: its bytes, and its length when the path is a regular file.
pub type PackageStream = (Box<dyn Read + Send>, Option<u64>);

/// Opens the package at `path`: a regular file, whose length is then known (and checked
/// against the signed layout before anything is written), or a stream read once from its
/// start — a FIFO, a shell's `<(command)`, a character device — whose length is not.
///
/// A stream cannot run forever: its header is checked first and every later length is
/// bounded by it. A FIFO that no program is writing to is refused at once, saying so, rather
/// than waited on without end.
///
/// # Errors
/// [`ErrorKind::InvalidInput`] for a directory, a socket, or a FIFO without a writer;
/// [`ErrorKind::Io`] when `path` cannot be opened or read.
pub fn open_package(path: &Path) -> Result<PackageStream, Error> {
    open_package_file(path).map(|(stream, _)| stream)
}

/// [`open_package`], and for a regular file a second handle on it, through which the payload
/// is read at its offsets ([`crate::PackageReader::with_file`]): a program that keeps the
/// package's prefix itself (as the C API does) gets the parallel reads
/// [`crate::PackageReader::open`] gets, from the file it opened, never a path opened again.
///
/// # Errors
/// As [`open_package`].
pub fn open_package_file(path: &Path) -> Result<(PackageStream, Option<File>), Error> {
    use std::os::unix::fs::FileTypeExt as _;
    let (mut file, meta) = open_nonblocking(path)?;
    let kind = meta.file_type();
    if meta.is_file() {
        let at = file
            .try_clone()
            .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        return Ok(((Box::new(file), Some(meta.len())), Some(at)));
    }
    if !(kind.is_fifo() || kind.is_char_device() || kind.is_block_device()) {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "{} is a directory or a socket, not a package",
                path.display()
            ),
        ));
    }
    // From here on a stream: reads block as they should, but not before it is known that
    // something is writing. A non-blocking read says which: bytes, "would block" (a writer
    // that has not written yet), or end of file (nobody has the FIFO open for writing).
    let mut first = [0u8; 1];
    let peeked = loop {
        match file.read(&mut first) {
            Ok(0) if kind.is_fifo() => {
                return Err(Error::new(
                    ErrorKind::InvalidInput,
                    format!(
                        "{} is a FIFO that no program is writing to: start the writer first, or pipe the package to `-` (standard input)",
                        path.display()
                    ),
                ));
            }
            Ok(n) => break n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break 0,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io(path.display(), e)),
        }
    };
    rustix::fs::fcntl_setfl(&file, rustix::fs::OFlags::empty())
        .map_err(|e| Error::io(path.display(), e.into()))?;
    let head = first.get(..peeked).unwrap_or_default().to_vec();
    Ok(((Box::new(io::Cursor::new(head).chain(file)), None), None))
}

impl FileSource {
    /// Opens the package at `path`.
    ///
    /// # Errors
    /// As [`open_regular`].
    pub fn open(path: &Path) -> Result<Self, Error> {
        let (file, len) = open_regular(path)?;
        Ok(Self {
            path: path.to_owned(),
            file,
            len,
        })
    }
}

impl Source for FileSource {
    fn describe(&self) -> String {
        self.path.display().to_string()
    }

    fn open(&mut self, start: u64, end: Option<u64>) -> Result<RangeReader, Error> {
        let context = || format!("{}", self.path.display());
        let mut file = self.file.try_clone().map_err(|e| Error::io(context(), e))?;
        file.seek(SeekFrom::Start(start))
            .map_err(|e| Error::io(context(), e))?;
        let len = end.map_or(u64::MAX, |end| end.saturating_sub(start));
        Ok(Box::new(
            io::BufReader::with_capacity(64 * 1024, file).take(len),
        ))
    }

    fn total_len(&self) -> Option<u64> {
        Some(self.len)
    }
}

/// A package pushed as a stream by another program (a PC tool over USB or serial): read once,
/// front to back. Ranges must be asked for in order; a chunk that fails its digest cannot be
/// fetched again, so it ends the run with the integrity error.
pub struct PushedSource {
    stream: Arc<Mutex<Pushed>>,
}

struct Pushed {
    reader: Box<dyn Read + Send>,
    position: u64,
}

impl std::fmt::Debug for PushedSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushedSource").finish_non_exhaustive()
    }
}

impl PushedSource {
    /// A source over `reader`, whose first byte is the package's first byte.
    pub fn new(reader: impl Read + Send + 'static) -> Self {
        Self {
            stream: Arc::new(Mutex::new(Pushed {
                reader: Box::new(reader),
                position: 0,
            })),
        }
    }
}

/// One range of a pushed stream: reads through to the shared stream and moves its position.
struct PushedRange {
    stream: Arc<Mutex<Pushed>>,
    left: u64,
}

impl Read for PushedRange {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = usize::try_from(self.left)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let Some(buf) = buf.get_mut(..want) else {
            return Ok(0);
        };
        if buf.is_empty() {
            return Ok(0);
        }
        let mut stream = self.stream.lock().unwrap_or_else(PoisonError::into_inner);
        let n = stream.reader.read(buf)?;
        let n64 = u64::try_from(n).unwrap_or(u64::MAX);
        stream.position = stream.position.saturating_add(n64);
        self.left = self.left.saturating_sub(n64);
        Ok(n)
    }
}

impl Source for PushedSource {
    fn describe(&self) -> String {
        "the pushed stream".to_owned()
    }

    fn open(&mut self, start: u64, end: Option<u64>) -> Result<RangeReader, Error> {
        let position = self
            .stream
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .position;
        if start != position {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "a pushed stream is read once, in order: byte {start} was asked for at byte {position}"
                ),
            ));
        }
        Ok(Box::new(PushedRange {
            stream: Arc::clone(&self.stream),
            left: end.map_or(u64::MAX, |end| end.saturating_sub(start)),
        }))
    }

    fn total_len(&self) -> Option<u64> {
        None
    }

    fn can_reread(&self) -> bool {
        false
    }
}

/// `6 s`, `1.5 s`, `2 min`, `12 h`: durations as a person gives them.
pub(crate) fn describe_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if d.subsec_nanos() != 0 {
        format!("{:.1} s", d.as_secs_f64())
    } else if secs >= 3600 && secs.is_multiple_of(3600) {
        format!("{} h", secs / 3600)
    } else if secs >= 60 && secs.is_multiple_of(60) {
        format!("{} min", secs / 60)
    } else {
        format!("{secs} s")
    }
}

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
    fn durations_read_naturally() {
        assert_eq!(describe_duration(Duration::from_secs(6)), "6 s");
        assert_eq!(describe_duration(Duration::from_millis(1500)), "1.5 s");
        assert_eq!(describe_duration(Duration::from_secs(120)), "2 min");
        assert_eq!(describe_duration(Duration::from_secs(12 * 3600)), "12 h");
        assert_eq!(describe_duration(Duration::from_secs(90)), "90 s");
    }

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
