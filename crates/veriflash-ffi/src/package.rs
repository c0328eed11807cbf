//! Packages: opened from a path or a caller's read callback, verified once.

use std::cell::RefCell;
use std::ffi::{c_char, c_int, c_void};
use std::io::{self, BufReader, Cursor, Read};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use veriflash_core::{Error, PackageReader, PackageSource};

use crate::error::{FfiError, VERIFLASH_PACKAGE_SPENT, veriflash_result};
use crate::ffi::{
    CallerThread, Handle, Out, arg_str, borrow, borrow_mut, call, call_plain, free, into_handle,
};
use crate::report::{Report, veriflash_report};
use crate::trust::veriflash_trust;

/// A package opened for verification or flashing: its header, manifest and signature block
/// have been read and bounded (nothing is trusted yet), and its payload waits to be streamed.
///
/// Made by `veriflash_package_open` or `veriflash_package_open_reader`, owned by the caller,
/// freed with `veriflash_package_free` — always, also after it was verified or flashed.
/// A package is read once: `veriflash_package_verify` or `veriflash_flash` uses it up (whether
/// they succeed or fail; `veriflash_flash` not when it fails before it starts reading it), and
/// a second use returns `VERIFLASH_PACKAGE_SPENT`. Not thread-safe:
/// use one package from one thread at a time.
pub struct veriflash_package {
    _private: [u8; 0],
}

/// Reads a package from a caller: fills `buf` with up to `len` bytes and stores how many in
/// `*out_read` (0 only at the end of the package), returning 0; or returns non-zero (an errno
/// value, say) on failure, which fails the operation with `VERIFLASH_IO`.
///
/// Called on the thread that called the veriflash function, never after
/// `veriflash_package_free` returns.
pub type veriflash_read_cb = Option<
    unsafe extern "C" fn(
        userdata: *mut c_void,
        buf: *mut u8,
        len: usize,
        out_read: *mut usize,
    ) -> c_int,
>;

/// Where the payload comes from, and the prefix bytes already read from it.
pub(crate) struct Package {
    source: Option<Source>,
    /// The regular file the package was opened from, if it was: an install reads it again
    /// from its path (see [`Package::lend`]).
    file: Option<OpenedFile>,
}

/// A regular file a package was opened from: its path and which file that was.
struct OpenedFile {
    path: PathBuf,
    /// Device and inode numbers when it was opened.
    identity: (u64, u64),
}

impl OpenedFile {
    /// The identity of the file `path` names now.
    fn identity_of(path: &Path) -> Option<(u64, u64)> {
        use std::os::unix::fs::MetadataExt as _;
        std::fs::metadata(path)
            .ok()
            .filter(std::fs::Metadata::is_file)
            .map(|meta| (meta.dev(), meta.ino()))
    }

    /// Whether `path` still names the file that was opened.
    fn unchanged(&self) -> bool {
        Self::identity_of(&self.path) == Some(self.identity)
    }
}

/// A package handed to an install ([`Package::lend`]); given back with [`Package::settle`].
pub(crate) enum Lease {
    /// The install reads the package file again from its path.
    File,
    /// The install reads the stream the package was opened on, through this slot; the source
    /// is still in it as long as nothing was read.
    Stream(Rc<RefCell<Option<Source>>>),
}

/// The package's stream as an install reads it: the source is taken from the slot at the
/// first read, so until then it can be given back to the package untouched.
struct Lent {
    slot: Rc<RefCell<Option<Source>>>,
    reading: Option<Box<dyn Read>>,
}

impl Read for Lent {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.reading.is_none() {
            let source = self.slot.borrow_mut().take().ok_or_else(|| {
                io::Error::other("the package stream was given back and cannot be read")
            })?;
            self.reading = Some(Box::new(Cursor::new(source.prefix).chain(source.rest)));
        }
        match self.reading.as_mut() {
            Some(reader) => reader.read(buf),
            None => Ok(0),
        }
    }
}

impl Handle for veriflash_package {
    type Inner = Package;
}

pub(crate) struct Source {
    /// The header, manifest and signature block, as read (bounded by the format's limits).
    prefix: Vec<u8>,
    /// The rest of the package, from the first payload byte.
    rest: Box<dyn Read>,
    /// The whole package's length, when known (a file's): checked against the signed layout.
    len: Option<u64>,
    /// A second handle on the regular file the package was opened from: a verification reads
    /// the payload through it at its offsets, on every core, as `veriflash verify` does.
    at: Option<std::fs::File>,
}

impl Package {
    /// Reads and bounds the prefix from `reader`: a malformed, truncated or oversized package is
    /// refused here, before any signature work.
    pub(crate) fn open(reader: Box<dyn Read>, len: Option<u64>) -> Result<Self, Error> {
        let mut recorder = Recorder {
            inner: reader,
            seen: Vec::new(),
        };
        drop(PackageReader::new(&mut recorder)?);
        Ok(Self {
            source: Some(Source {
                prefix: recorder.seen,
                rest: recorder.inner,
                len,
                at: None,
            }),
            file: None,
        })
    }

    /// Opens the package file at `path` (see `veriflash_package_open`).
    pub(crate) fn open_path(path: &Path) -> Result<Self, Error> {
        let ((stream, len), at) = veriflash_core::source::open_package_file(path)?;
        let mut package = Self::open(Box::new(BufReader::with_capacity(64 * 1024, stream)), len)?;
        if let Some(source) = package.source.as_mut() {
            source.at = at;
        }
        // A regular file (a FIFO or a device is a stream, read once).
        if len.is_some() {
            package.file = OpenedFile::identity_of(path).map(|identity| OpenedFile {
                path: path.to_path_buf(),
                identity,
            });
        }
        Ok(package)
    }

    /// Hands the package to an install, as the source an `Updater` reads: the package file
    /// again from its path when it was opened from a regular file that the path still names
    /// (so an install can run again after a reconnect, as the `veriflash` command's does, and
    /// the file's length is checked against the signed layout), otherwise the stream it was
    /// opened on, read once. Give the lease back with [`Package::settle`].
    pub(crate) fn lend(&mut self) -> Result<(PackageSource, Lease), FfiError> {
        if self.source.is_none() {
            return Err(spent());
        }
        if let Some(file) = self.file.as_ref().filter(|f| f.unchanged()) {
            return Ok((PackageSource::File(file.path.clone()), Lease::File));
        }
        let slot = Rc::new(RefCell::new(self.source.take()));
        let lent = Lent {
            slot: Rc::clone(&slot),
            reading: None,
        };
        Ok((
            PackageSource::Stream(Box::new(CallerThread::new(lent))),
            Lease::Stream(slot),
        ))
    }

    /// Takes a lease back after the install: the package stays usable if the install did not
    /// start reading it (`started`, for a file read from its path; whether its stream was
    /// touched otherwise), and is spent if it did.
    pub(crate) fn settle(&mut self, lease: Lease, started: bool) {
        match lease {
            Lease::File if started => self.source = None,
            Lease::File => {}
            Lease::Stream(slot) => self.source = slot.borrow_mut().take(),
        }
    }

    /// The whole package again, from its first byte, for the core to read (the prefix from
    /// memory, parsed and verified afresh; the payload from the source, or at its offsets from
    /// the file it was opened from, read once). Uses the package up.
    pub(crate) fn take(&mut self) -> Result<PackageReader<impl Read + use<>>, FfiError> {
        let source = self.source.take().ok_or_else(spent)?;
        let reader = PackageReader::new(Cursor::new(source.prefix).chain(source.rest))?;
        let reader = match source.len {
            Some(len) => reader.with_len(len),
            None => reader,
        };
        Ok(match source.at {
            Some(file) => reader.with_file(file),
            None => reader,
        })
    }
}

/// The error for a package that was already used.
fn spent() -> FfiError {
    FfiError::new(
        VERIFLASH_PACKAGE_SPENT,
        "the package was already verified or flashed",
    )
}

/// Keeps a copy of what the format parser reads, so the prefix can be handed to the core again.
/// The parser checks each length against its limit before reading, so the copy is bounded.
struct Recorder {
    inner: Box<dyn Read>,
    seen: Vec<u8>,
}

impl Read for Recorder {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.seen
            .extend_from_slice(buf.get(..n).unwrap_or_default());
        Ok(n)
    }
}

/// A caller's read callback as a [`Read`].
struct CallbackReader {
    read: unsafe extern "C" fn(*mut c_void, *mut u8, usize, *mut usize) -> c_int,
    userdata: *mut c_void,
}

impl Read for CallbackReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let mut n = 0usize;
        // SAFETY: `veriflash_package_open_reader`'s contract: the callback may be called with
        // `userdata` until the package is freed. `buf` is writable for `buf.len()` bytes and
        // `n` is a live `usize`, both only for the duration of the call.
        let rc = unsafe { (self.read)(self.userdata, buf.as_mut_ptr(), buf.len(), &raw mut n) };
        if rc != 0 {
            return Err(io::Error::other(format!(
                "the read callback failed (returned {rc})"
            )));
        }
        if n > buf.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the read callback reported {n} bytes read into a {}-byte buffer",
                    buf.len()
                ),
            ));
        }
        Ok(n)
    }
}

/// Opens the package file at `path` and reads its header, manifest and signature block
/// (a few KiB, each length checked against its limit; nothing is trusted yet). On success
/// `*out_package` receives a new package the caller owns and must free with
/// `veriflash_package_free`.
///
/// `veriflash_package_verify` reads the file opened here. `veriflash_flash` reads a regular
/// file again from `path` — verified from its first byte, as every install is — so that an
/// install cut off by a device that drops off can run again, as the `veriflash` command's
/// does; when `path` no longer names the file opened here (it was replaced or removed), it
/// reads the opened file, once. A FIFO or a device is read once, as a stream.
///
/// # Errors
/// `VERIFLASH_NULL_POINTER`, `VERIFLASH_INVALID_UTF8` (the path must be UTF-8); `VERIFLASH_IO`
/// when the file cannot be opened or read; `VERIFLASH_MALFORMED_PACKAGE`,
/// `VERIFLASH_UNSUPPORTED_FORMAT`, `VERIFLASH_LIMIT_EXCEEDED`, `VERIFLASH_TRUNCATED` for a bad
/// prefix.
///
/// # Safety
/// `path` is NULL or a NUL-terminated string; `out_package` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn veriflash_package_open(
    path: *const c_char,
    out_package: *mut *mut veriflash_package,
) -> veriflash_result {
    call(|| {
        // SAFETY: this function's contract.
        let path = unsafe { arg_str(path, "path") }?;
        // SAFETY: this function's contract.
        let out = unsafe { Out::new(out_package, "out_package") }?;
        let package = Package::open_path(Path::new(path))?;
        out.write(into_handle::<veriflash_package>(package));
        Ok(())
    })
}

/// Opens a package read through `read` (called with `userdata`), and reads its header,
/// manifest and signature block. The callback is called during this call and during
/// `veriflash_package_verify` / `veriflash_flash`; `userdata` must stay valid until the package
/// is freed. On success `*out_package` receives a new package the caller owns and must free
/// with `veriflash_package_free`.
///
/// # Errors
/// `VERIFLASH_NULL_POINTER` when `read` or `out_package` is NULL (`userdata` may be NULL);
/// `VERIFLASH_IO` when the callback fails; the format errors of `veriflash_package_open`.
///
/// # Safety
/// `read` is NULL or a function that can be called as documented for `veriflash_read_cb` with
/// `userdata` until the package is freed; `out_package` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn veriflash_package_open_reader(
    read: veriflash_read_cb,
    userdata: *mut c_void,
    out_package: *mut *mut veriflash_package,
) -> veriflash_result {
    call(|| {
        let read = read.ok_or_else(|| {
            FfiError::new(
                crate::error::VERIFLASH_NULL_POINTER,
                "argument 'read' is NULL",
            )
        })?;
        // SAFETY: this function's contract.
        let out = unsafe { Out::new(out_package, "out_package") }?;
        let package = Package::open(Box::new(CallbackReader { read, userdata }), None)?;
        out.write(into_handle::<veriflash_package>(package));
        Ok(())
    })
}

/// Verifies a package completely against `trust` — its anchors, its clock (by default the
/// system clock: an expired certificate is refused) and its threshold, exactly as
/// `veriflash verify` and a Rust `Trust` judge it: the signatures over header and manifest,
/// then every payload chunk against its signed digest, then that the package ends where it
/// declares. Nothing is written anywhere. On success `*out_report` receives a new report the
/// caller owns and must free with `veriflash_report_free`.
///
/// Uses the package up (see `veriflash_package`): free it afterwards either way. `trust` is
/// only borrowed.
///
/// # Errors
/// `VERIFLASH_NULL_POINTER`; `VERIFLASH_PACKAGE_SPENT`; the authenticity codes (20–28, among
/// them `VERIFLASH_CERTIFICATE_EXPIRED` and `VERIFLASH_THRESHOLD_NOT_MET`), the integrity codes
/// (30–33), `VERIFLASH_TRUNCATED`, `VERIFLASH_TRAILING_DATA`, `VERIFLASH_IO`.
///
/// # Safety
/// `package` is NULL or a live package not in use elsewhere; `trust` is NULL or a live trust
/// store; `out_report` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn veriflash_package_verify(
    package: *mut veriflash_package,
    trust: *const veriflash_trust,
    out_report: *mut *mut veriflash_report,
) -> veriflash_result {
    call(|| {
        // SAFETY: this function's contract.
        let package = unsafe { borrow_mut(package, "package") }?;
        // SAFETY: this function's contract.
        let trust = unsafe { borrow(trust, "trust") }?;
        // SAFETY: this function's contract.
        let out = unsafe { Out::new(out_report, "out_report") }?;
        let report = package
            .take()?
            .verify(&trust.verifier())?
            .verify_payload()?;
        out.write(into_handle::<veriflash_report>(Report::new(&report)));
        Ok(())
    })
}

/// Frees a package (and closes its file; a read callback is not called again). NULL is a
/// no-op. Freeing the same package twice is undefined behaviour, as with `free()`.
///
/// # Safety
/// `package` is NULL or a package from this library, not yet freed and not in use by another
/// call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn veriflash_package_free(package: *mut veriflash_package) {
    call_plain((), || {
        // SAFETY: this function's contract.
        unsafe { free(package) }
    });
}
