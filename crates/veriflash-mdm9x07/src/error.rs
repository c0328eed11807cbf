//! The crate's one error type, and its mapping onto the plugin taxonomy.

use std::fmt;

use veriflash_plugin::PluginError;

/// Why a Sahara or Firehose exchange, a partition table or the emulated device failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// Fewer bytes than a field or a packet needs.
    Truncated {
        /// What was being read.
        what: &'static str,
        /// Bytes needed.
        need: usize,
        /// Bytes there were.
        have: usize,
    },
    /// A length the device (or host) declared breaks a named limit or the packet's fixed size.
    BadLength {
        /// What the length was for.
        what: &'static str,
        /// The length declared.
        length: u64,
        /// The limit or the expected length.
        limit: u64,
    },
    /// A Sahara command id this implementation does not know.
    UnknownCommand(u32),
    /// A packet or document arrived that the protocol state does not allow.
    Unexpected {
        /// What the state machine waited for.
        expected: &'static str,
        /// What came instead.
        got: String,
    },
    /// The device reported a failed image transfer (Sahara END_OF_IMAGE status).
    ImageRejected {
        /// The Sahara status code.
        status: u32,
    },
    /// The device asked for bytes outside the image being served.
    ReadOutOfRange {
        /// Offset asked for.
        offset: u64,
        /// Length asked for.
        length: u64,
        /// The image's length.
        image_len: u64,
    },
    /// The chip's MSM hardware id is not an MDM9x07: nothing was uploaded to it.
    WrongChip {
        /// The MSM id read over Sahara command mode.
        msm_id: u32,
    },
    /// The Firehose programmer answered NAK.
    Nak {
        /// The command that was refused.
        command: String,
        /// The reason, from the log lines that preceded the NAK.
        reason: String,
    },
    /// Bytes that should be a Firehose XML document are not one we accept.
    MalformedXml {
        /// What is wrong.
        reason: &'static str,
        /// Byte offset in the document.
        offset: usize,
    },
    /// The device did not answer in time.
    Timeout {
        /// What the host waited for.
        waiting_for: &'static str,
    },
    /// The transport failed.
    Transport(std::io::Error),
    /// The (emulated) device lost power.
    PowerLoss,
    /// The partition table read from the device is unusable.
    PartitionTable(String),
    /// The storage refused an operation (erase-before-write, bad block, out of range).
    Storage(String),
    /// The operation is not possible on this device or in this state.
    Unsupported(String),
    /// A vendor bundle (`rawprogram*.xml`, `patch*.xml`) holds an entry that cannot become
    /// part of a veriflash package.
    Bundle {
        /// Which entry: `program #3 (label 'boot')`, `patch #1`, or the file.
        entry: String,
        /// What is wrong, and what to do.
        reason: String,
    },
    /// The package was made for another NAND geometry than the device has
    /// ([`crate::geometry`]): nothing was written.
    GeometryMismatch {
        /// The package's geometry, as far as it is known (`None`: a descriptor of no known
        /// geometry).
        package: Option<crate::geometry::NandGeometry>,
        /// The device's.
        device: crate::geometry::NandGeometry,
    },
    /// A configuration file of the plugin's (the product table, [`crate::products`]) exists
    /// but cannot be used.
    Config {
        /// The file.
        path: std::path::PathBuf,
        /// Why: the operating system's error when it cannot be read;
        /// [`std::io::ErrorKind::FileTooLarge`] over its size limit;
        /// [`std::io::ErrorKind::InvalidData`] when it is not in its format (the parser's
        /// message, with the line).
        source: std::io::Error,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated { what, need, have } => {
                write!(f, "{what}: needs {need} bytes, has {have}")
            }
            Self::BadLength {
                what,
                length,
                limit,
            } => write!(f, "{what}: length {length} breaks the limit {limit}"),
            Self::UnknownCommand(c) => write!(f, "unknown Sahara command {c:#x}"),
            Self::Unexpected { expected, got } => write!(f, "expected {expected}, got {got}"),
            Self::ImageRejected { status } => {
                write!(
                    f,
                    "the device rejected the programmer image (Sahara status {status:#x})"
                )
            }
            Self::ReadOutOfRange {
                offset,
                length,
                image_len,
            } => write!(
                f,
                "the device asked for {length} bytes at {offset} of a {image_len}-byte image"
            ),
            Self::WrongChip { msm_id } => write!(
                f,
                "the chip's MSM id {msm_id:#010x} ({}) is not an MDM9207/MDM9607; nothing was uploaded",
                crate::sahara::chip_name(*msm_id).unwrap_or("unknown chip")
            ),
            Self::Nak { command, reason } => {
                write!(f, "the programmer refused '{command}': {reason}")
            }
            Self::MalformedXml { reason, offset } => {
                write!(f, "malformed Firehose XML at byte {offset}: {reason}")
            }
            Self::Timeout { waiting_for } => {
                write!(f, "timed out waiting for {waiting_for}")
            }
            Self::Transport(e) => write!(f, "transport: {e}"),
            Self::PowerLoss => f.write_str("the device lost power"),
            Self::PartitionTable(m) => write!(f, "partition table: {m}"),
            Self::Storage(m) => write!(f, "storage: {m}"),
            Self::Unsupported(m) => write!(f, "unsupported: {m}"),
            Self::Bundle { entry, reason } => write!(f, "{entry}: {reason}"),
            Self::Config { path, source } => write!(f, "{}: {source}", path.display()),
            Self::GeometryMismatch { package, device } => write!(
                f,
                "the package is for {}, the device's NAND has {device} ({}); nothing was written",
                package.map_or_else(
                    || "another NAND geometry".to_owned(),
                    |p| format!("{p} ({})", p.tag())
                ),
                device.tag()
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Transport(e) | Self::Config { source: e, .. } => Some(e),
            _ => None,
        }
    }
}

impl From<Error> for PluginError {
    fn from(err: Error) -> Self {
        match err {
            // The port is flocked by another program (serial::SerialPort::open).
            Error::Transport(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                Self::Busy(e.to_string())
            }
            Error::Transport(e) => Self::Transport(e),
            Error::Timeout { .. } => Self::Timeout(err.to_string()),
            Error::PowerLoss => Self::PowerLoss,
            Error::WrongChip { msm_id } => Self::WrongChip {
                expected: "an MDM9207/MDM9607 (MDM9x07)".into(),
                found: crate::sahara::chip_name(msm_id).map_or_else(
                    || format!("a chip with MSM id {msm_id:#010x}"),
                    |name| format!("an {name}"),
                ),
            },
            Error::Unsupported(_) => Self::Unsupported(err.to_string()),
            Error::GeometryMismatch { package, device } => Self::WrongHardware {
                expected: package.map_or_else(
                    || "another NAND geometry".to_owned(),
                    |p| format!("a NAND of {p} ({})", p.tag()),
                ),
                found: format!("a NAND of {device} ({})", device.tag()),
            },
            // The contract has no variant for a configuration file; this one names the path
            // and keeps the I/O error's kind (not found, permission denied, invalid data).
            Error::Config { path, source } => Self::Storage { path, source },
            Error::Truncated { .. }
            | Error::BadLength { .. }
            | Error::UnknownCommand(_)
            | Error::Unexpected { .. }
            | Error::Nak { .. }
            | Error::MalformedXml { .. } => Self::Protocol(err.to_string()),
            other => Self::Device(other.to_string()),
        }
    }
}
