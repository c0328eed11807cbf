//! The error taxonomy: one kind per failure a user must tell apart, each with a stable numeric
//! code, a category and a remedy.
//!
//! Codes are part of the public contract: the CLI exits with them, `--json` prints them, and the
//! C API returns them. They fit in a process exit status (1..=255); 1 and 2 are left to
//! "unexpected failure" and "usage error" as shells expect. A number is never reused: when a kind
//! is retired its number stays here as a comment.
//!
//! | range | what                                   |
//! |-------|----------------------------------------|
//! | 10–19 | the package file is not well formed    |
//! | 20–29 | authenticity: signatures and trust     |
//! | 30–39 | integrity: payload bytes vs digests    |
//! | 40–49 | policy: device match, anti-rollback, pre-flight (reserved for the flash core) |
//! | 50–59 | device and transport (reserved for plugins) |
//! | 60–69 | run control: cancelled, interrupted, deadlines |
//! | 70–79 | local input: files, keys, arguments    |
//! | 80–89 | this computer's resources: memory, threads (never a verdict on the package) |

use core::fmt;
use std::error::Error as StdError;

/// How a caller should react to an error, independent of its exact kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Category {
    /// Trying again (re-downloading, re-reading) may succeed.
    Retryable,
    /// The input is wrong and will stay wrong; trying again cannot help.
    Permanent,
    /// The package is not authentic or not allowed: treat as a possible attack and do not retry
    /// with the same package.
    Security,
    /// The device or its link failed.
    Device,
    /// Someone must act: configure trust, fix a path, free space.
    UserAction,
    /// The computer running veriflash ran out of memory or threads: says nothing about the
    /// package or the device, and must never be recorded as a verdict on either.
    Resource,
}

impl Category {
    /// Stable lower-case name used in JSON output.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Retryable => "retryable",
            Self::Permanent => "permanent",
            Self::Security => "security",
            Self::Device => "device",
            Self::UserAction => "user_action",
            Self::Resource => "resource",
        }
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

macro_rules! error_kinds {
    ($( $(#[$doc:meta])* $variant:ident = $code:literal, $name:literal, $category:ident,
        $summary:literal, $remedy:literal; )*) => {
        /// What went wrong, as a caller must tell it apart. See the module docs for the ranges.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        #[repr(u8)]
        pub enum ErrorKind {
            $( $(#[$doc])* $variant = $code, )*
        }

        impl ErrorKind {
            /// Every kind, in code order (for documentation and exhaustive tests).
            pub const ALL: &'static [ErrorKind] = &[$(Self::$variant),*];

            /// The stable numeric code; also the CLI's exit status.
            #[must_use]
            pub fn code(self) -> u8 {
                self as u8
            }

            /// Stable snake_case name, for JSON and logs.
            #[must_use]
            pub fn name(self) -> &'static str {
                match self { $(Self::$variant => $name,)* }
            }

            /// How to react to this kind of error.
            #[must_use]
            pub fn category(self) -> Category {
                match self { $(Self::$variant => Category::$category,)* }
            }

            /// One line saying what happened, for people.
            #[must_use]
            pub fn summary(self) -> &'static str {
                match self { $(Self::$variant => $summary,)* }
            }

            /// One line saying what to do next.
            #[must_use]
            pub fn remedy(self) -> &'static str {
                match self { $(Self::$variant => $remedy,)* }
            }

            /// The kind with this code, if any.
            #[must_use]
            pub fn from_code(code: u8) -> Option<Self> {
                match code { $($code => Some(Self::$variant),)* _ => None }
            }
        }
    };
}

error_kinds! {
    /// The bytes do not follow the package format (bad magic, bad DER, inconsistent lengths).
    Malformed = 10, "malformed_package", Permanent,
        "the package is malformed",
        "Re-create the package with `veriflash pack`, or re-download it; `veriflash inspect` shows where it breaks.";
    /// A format version, flag or critical extension this build does not understand.
    UnsupportedFormat = 11, "unsupported_format", Permanent,
        "the package uses a format feature this veriflash does not support",
        "Update veriflash to a release that reads this package format.";
    /// A length or count in the package exceeds a documented limit.
    LimitExceeded = 12, "limit_exceeded", Permanent,
        "a length or count in the package exceeds a limit",
        "The package is hostile or broken; re-create it within the limits of docs/FORMAT.md.";
    /// The package ends before the end its header declares.
    Truncated = 13, "truncated", Retryable,
        "the package is incomplete",
        "Download or copy the package again: it ends early.";
    /// Bytes follow the declared end of the package.
    TrailingData = 14, "trailing_data", Permanent,
        "the package has bytes after its declared end",
        "Re-download the package; if it persists, the package was altered after packing.";
    /// No signature over the manifest verified with a trusted key.
    NotAuthentic = 20, "not_authentic", Security,
        "the package's signature is not valid",
        "Do not install this package: it was altered or not signed by your vendor. Get it again from a trusted source.";
    /// The package was signed by a key that is not among the trust anchors.
    UnknownSigner = 21, "unknown_signer", Security,
        "the package is signed by a key that is not trusted",
        "Check that --trust names your vendor's public key; otherwise do not install this package.";
    /// No trust anchors were configured: verification refuses to run rather than skip.
    NoTrustAnchors = 22, "no_trust_anchors", UserAction,
        "no trust anchors are configured",
        "Pass the vendor's public key (or a directory of keys) with --trust.";
    /// The signing key has been revoked.
    KeyRevoked = 23, "key_revoked", Security,
        "the package is signed with a revoked key",
        "Ask the vendor for a package signed with a current key.";
    /// Fewer distinct trusted keys signed than the policy requires.
    ThresholdNotMet = 24, "threshold_not_met", Security,
        "not enough distinct trusted keys signed the package",
        "Have the package signed by the required number of distinct trusted keys.";
    /// A signature algorithm this verifier does not support.
    UnsupportedAlgorithm = 25, "unsupported_algorithm", Security,
        "the package is signed with an unsupported algorithm",
        "Sign with a supported algorithm (ECDSA P-256, RSA PKCS#1 v1.5 or PSS 2048-4096, with SHA-256).";
    /// The signer's certificate chain is invalid: broken, not to a trusted root, a CA rule or
    /// key usage violated, an unknown critical extension, a malformed certificate.
    CertificateInvalid = 26, "certificate_invalid", Security,
        "the signer's certificate chain is not valid",
        "Do not install this package; ask the vendor for a package signed with a valid code-signing certificate chaining to your root.";
    /// A certificate of the signer's chain is expired or not yet valid at the trusted time.
    CertificateExpired = 27, "certificate_expired", Security,
        "a certificate of the signer's chain is expired or not yet valid",
        "Check the device clock; otherwise ask the vendor for a package signed with a current certificate (or verify with --no-clock if the device has no trusted time).";
    /// The package carries a new trust-anchor set (a root rotation) that may not be adopted:
    /// too few current anchors signed it, too few of the new anchors proved they work, it is not
    /// newer than the set the device holds, or the new set is unusable.
    RotationRefused = 28, "rotation_refused", Security,
        "the package's trust-anchor rotation is not authorized",
        "Do not install this package; a rotation must be signed by enough current anchors and enough of the new ones, and be newer than the installed set.";
    /// A payload chunk does not hash to its signed digest: corrupted in transit or tampered.
    IntegrityMismatch = 30, "integrity_mismatch", Retryable,
        "a payload chunk does not match its signed digest",
        "The download is corrupted: download the package again.";
    /// Every chunk matched but the whole-image digest did not (a packer bug or a forged manifest).
    ImageDigestMismatch = 31, "image_digest_mismatch", Security,
        "an image does not match its signed whole-image digest",
        "Do not install this package; report it to its vendor.";
    /// A compressed chunk matched its signed digest but decompresses to more or fewer bytes
    /// than its signed decompressed length (a packer bug or a decompression bomb); decoding
    /// stopped at the signed length.
    DecompressedLengthMismatch = 32, "decompressed_length_mismatch", Security,
        "a compressed chunk does not decompress to its signed length",
        "Do not install this package; report it to its vendor.";
    /// A compressed chunk matched its signed digest but is not a frame this veriflash decodes
    /// within its limits (corrupt frame, window over 8 MiB, a dictionary, several frames).
    DecompressionFailed = 33, "decompression_failed", Security,
        "a compressed chunk cannot be decompressed within the format's limits",
        "Do not install this package; report it to its vendor (re-pack with `veriflash pack --compress`).";
    /// A delta package (format version 4) applies to another image than the one the device
    /// runs in a partition (its length or SHA-256 differ), or the device cannot read back what it
    /// runs (a single-slot device): checked before anything is written, so nothing was.
    SourceMismatch = 34, "source_mismatch", UserAction,
        "the device does not run the image this delta package applies to",
        "Install the full package, or the delta made from the version the device runs (`veriflash inspect DELTA` shows the source it needs); nothing was written.";
    /// A chunk rebuilt from the device's installed image (copied from it, or a patch applied to
    /// it) does not hash to its signed digest, although that image matched the declared source:
    /// the delta package contradicts itself. Nothing of that chunk was written.
    DeltaOutputMismatch = 35, "delta_output_mismatch", Security,
        "a chunk rebuilt from the installed image does not match its signed digest",
        "Do not install this delta package; report it to its vendor and install the full package instead.";
    /// The package is for another product.
    WrongProduct = 40, "wrong_product", Permanent,
        "the package is for another product",
        "Use the package built for this device's product.";
    /// The package is for another chipset.
    WrongChipset = 41, "wrong_chipset", Permanent,
        "the package is for another chipset",
        "Use the package built for this device's chipset.";
    /// The package does not list this device's hardware revision.
    WrongHardwareRevision = 42, "wrong_hardware_revision", Permanent,
        "the package does not support this hardware revision",
        "Use a package that lists this device's hardware revision.";
    /// The package's security version is below the device's anti-rollback floor.
    DowngradeRefused = 43, "downgrade_refused", Security,
        "the package is older than the device allows (anti-rollback)",
        "Install a package whose security version is at least the device's floor.";
    /// Not enough free space where the install stages data.
    InsufficientStorage = 44, "insufficient_storage", UserAction,
        "not enough free storage for the install",
        "Free the number of bytes the message names, then run again.";
    /// The install would need more memory than its budget.
    InsufficientMemory = 45, "insufficient_memory", UserAction,
        "the install needs more memory than allowed",
        "Raise the memory budget, or use a package with smaller chunks.";
    /// A caller-supplied pre-flight check (battery, user consent) refused the install.
    PreflightRefused = 46, "preflight_refused", UserAction,
        "a pre-flight check refused the install",
        "Resolve what the message says (charge the battery, get consent), then run again.";
    /// The package names a partition the device does not have.
    UnknownPartition = 47, "unknown_partition", Permanent,
        "the package names a partition this device does not have",
        "Use the package built for this device's partition layout.";
    /// An image is larger than its partition.
    ImageTooLarge = 48, "image_too_large", Permanent,
        "an image is larger than its partition",
        "Use the package built for this device's partition layout.";
    /// The package would write a partition the device protects: device-unique data
    /// (calibration, EFS) or a partition without A/B copies.
    ProtectedPartition = 49, "protected_partition", Security,
        "the package would write a protected partition",
        "Do not install this package; protected partitions (calibration, EFS) are never updated.";
    /// The device reported a failure.
    DeviceError = 50, "device_error", Device,
        "the device reported an error",
        "Check the device and its connection, then run the command again; after a failed install an A/B device still boots its old software and a single-slot modem waits in download mode for the re-run.";
    /// The link to the device failed or timed out.
    TransportError = 51, "transport_error", Device,
        "the connection to the device failed",
        "Check the cable or port, then run the command again; after a failed install an A/B device still boots its old software and a single-slot modem waits in download mode for the re-run.";
    /// What was read back from the device differs from what was written.
    ReadBackMismatch = 52, "read_back_mismatch", Device,
        "the device did not store the image correctly",
        "Run the install again; if it repeats, the device's storage may be failing.";
    /// A source or device stopped answering within its time limit.
    Timeout = 53, "timeout", Retryable,
        "a source or device stopped responding",
        "Check the connection or the server and run again; an install that timed out was not committed.";
    /// The download server failed: it could not be reached, answered with an error status,
    /// or sent a response that does not fit the request (a wrong range).
    ServerError = 54, "server_error", Retryable,
        "the download server failed or answered wrongly",
        "Check the URL and the server, then run again; a partial download resumes where it stopped.";
    /// The package changed on the server during the download (another ETag, Last-Modified or
    /// length than when the download began).
    SourceChanged = 55, "source_changed", Retryable,
        "the package changed on the server during the download",
        "Run the download again: it starts over with the new package.";
    /// The TLS connection to the download server failed: its certificate did not verify
    /// against the trusted CAs, or the handshake failed.
    TlsError = 56, "tls_error", Security,
        "the download server's TLS certificate was not trusted or the handshake failed",
        "Check the URL and --ca (the CA that issued the server's certificate); do not disable verification.";
    /// Another run holds the device (or the output file) this one needs: a device is claimed
    /// by one session at a time, so two installs can never interleave on it.
    Busy = 57, "busy", Retryable,
        "the device or file is in use by another run",
        "Wait for the other veriflash run (or program) using it to finish, then run again; nothing was read or written.";
    /// The device named does not exist (no such file or port, or it is not connected).
    DeviceNotFound = 58, "device_not_found", UserAction,
        "the device was not found",
        "Check the path or port the message names and that the device is connected (`veriflash devices` lists what is attached).";
    /// The operating system refused access to the device or to its storage file.
    DeviceAccessDenied = 59, "device_access_denied", UserAction,
        "access to the device was denied",
        "Run as a user allowed to open the path the message names (its owner, or the dialout/plugdev group for modems), or fix its permissions.";
    /// The operation was cancelled by the caller.
    Cancelled = 60, "cancelled", UserAction,
        "the operation was cancelled",
        "Run it again when ready; nothing was committed (a single-slot modem waits in download mode for the re-run).";
    /// The install was interrupted (power loss, device gone) before it committed.
    Interrupted = 61, "interrupted", Retryable,
        "the install was interrupted before it completed",
        "Run the install again: an A/B device still boots its previous software; a single-slot modem waits in download mode for the re-run.";
    /// An overall time limit ran out (a download's deadline), although data was still moving.
    DeadlineExceeded = 62, "deadline_exceeded", Retryable,
        "the operation did not finish within its deadline",
        "Run again (a download resumes where it stopped), or allow more time with the deadline option.";
    /// The download server has no package at the URL (HTTP 404 Not Found, 410 Gone).
    PackageNotFound = 63, "package_not_found", UserAction,
        "the download server has no package at this URL",
        "Check the URL (a typo, a release that was removed) or ask for a current one; the same URL will keep failing.";
    /// The download server refused access (HTTP 401 or 403) for another reason than an
    /// expired URL.
    AccessRefused = 64, "access_refused", UserAction,
        "the download server refused access",
        "Check the credentials the URL carries (a presigned URL made with a key that may not read the object, a token for another object); the server's own code and message are in the error. The same URL will keep failing.";
    /// A time-limited URL (an S3 presigned URL, a CDN token) expired before or during the
    /// download.
    UrlExpired = 65, "url_expired", UserAction,
        "the download URL has expired",
        "Get a new URL from whoever issued this one and run again with it: `veriflash fetch` resumes a partial download after its last verified chunk.";
    /// A local file could not be read or written.
    Io = 70, "io", UserAction,
        "a file could not be read or written",
        "Check the path, its permissions and the free space.";
    /// A key file could not be used (wrong format, wrong type, encrypted).
    InvalidKey = 71, "invalid_key", UserAction,
        "a key could not be loaded",
        "Give a P-256 or RSA 2048/3072/4096 key in PEM (PKCS#8 `PRIVATE KEY`, SEC1 `EC PRIVATE KEY`, `RSA PRIVATE KEY`, SPKI `PUBLIC KEY` or a root `CERTIFICATE`), as openssl writes it.";
    /// Caller input other than the package is invalid (a manifest description, an argument).
    InvalidInput = 72, "invalid_input", UserAction,
        "the input is invalid",
        "Fix the input as the message says and run again.";
    /// A file system is full: the device file's, the output's or the download's.
    NoSpace = 73, "no_space", UserAction,
        "a file system is full",
        "Free space on the file system holding the path the message names, then run again.";
    /// This computer could not give veriflash the memory or threads it needs. Nothing is known
    /// about the package: this is never reported as, or recorded as, a verdict on it.
    ResourceExhausted = 80, "resource_exhausted", Resource,
        "this computer ran out of memory or threads",
        "Free memory or raise the process's limits (docs/PERFORMANCE.md gives the minimum), or run with fewer threads; the package was not judged.";
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.summary())
    }
}

/// Where in a package an error was found, when that is known.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Location {
    /// The image being processed.
    pub image: Option<String>,
    /// The chunk index within that image.
    pub chunk: Option<u64>,
    /// The byte offset (within the image when `image` is set, within the package otherwise).
    pub offset: Option<u64>,
}

/// An error from the verify-and-flash pipeline: a kind (with code, category and remedy), a
/// message with the specifics, where it happened, and the underlying cause.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    /// What to do when the kind's own remedy would point at the wrong fix (a private key
    /// given as a trust anchor is an `invalid_key` like any other, but its fix is the public
    /// key beside it). A boxed `str`, not a `String`: every `Result` in the pipeline carries an
    /// `Error`, which must stay small.
    remedy: Option<Box<str>>,
    location: Location,
    source: Option<Box<dyn StdError + Send + Sync + 'static>>,
}

impl Error {
    /// An error of `kind` with a specific message.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            remedy: None,
            location: Location::default(),
            source: None,
        }
    }

    /// Replaces the kind's generic remedy with one for this very failure: the command that
    /// makes the missing file, the key the option wants. The kind, its code and category stay.
    #[must_use]
    pub fn with_remedy(mut self, remedy: impl Into<String>) -> Self {
        self.remedy = Some(remedy.into().into_boxed_str());
        self
    }

    /// Attaches the underlying cause.
    #[must_use]
    pub fn with_source(mut self, source: impl StdError + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// Puts `context` (the file, the target) before the message; the kind and any remedy stay.
    #[must_use]
    pub fn with_context(mut self, context: impl fmt::Display) -> Self {
        self.message = format!("{context}: {}", self.message);
        self
    }

    /// The same kind, message, remedy and location, without the underlying cause (which need
    /// not be `Clone`): one failure reported in two places, such as every device of a factory
    /// line that a shared step failed for.
    #[must_use]
    pub fn copy(&self) -> Self {
        Self {
            kind: self.kind,
            message: self.message.clone(),
            remedy: self.remedy.clone(),
            location: self.location.clone(),
            source: None,
        }
    }

    /// [`Error::copy`] with `note` appended to the message.
    pub(crate) fn noted(&self, note: &str) -> Self {
        let mut copy = self.copy();
        copy.message = format!("{}; {note}", self.message);
        copy
    }

    /// Attaches where the error was found.
    #[must_use]
    pub fn at(mut self, location: Location) -> Self {
        self.location = location;
        self
    }

    /// The kind of error.
    #[must_use]
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Shorthand for `self.kind().code()`.
    #[must_use]
    pub fn code(&self) -> u8 {
        self.kind.code()
    }

    /// Shorthand for `self.kind().category()`.
    #[must_use]
    pub fn category(&self) -> Category {
        self.kind.category()
    }

    /// What to do next: the remedy given with [`Error::with_remedy`], else the kind's.
    #[must_use]
    pub fn remedy(&self) -> &str {
        self.remedy.as_deref().unwrap_or(self.kind.remedy())
    }

    /// The specifics: which field, which image, which key.
    #[must_use]
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Where in the package the error was found.
    #[must_use]
    pub fn location(&self) -> &Location {
        &self.location
    }

    /// An I/O failure; a timed-out read is a [`ErrorKind::Timeout`], anything else
    /// [`ErrorKind::Io`].
    ///
    /// An `io::Error` that carries an [`Error`] (a source that verifies and classifies its own
    /// failures, such as an OTA download) gives that error back unchanged.
    pub(crate) fn io(context: impl fmt::Display, err: std::io::Error) -> Self {
        if err.get_ref().is_some_and(|inner| inner.is::<Self>()) {
            if let Some(inner) = err.into_inner()
                && let Ok(ours) = inner.downcast::<Self>()
            {
                return *ours;
            }
            return Self::new(ErrorKind::Io, format!("{context}: an I/O error was lost"));
        }
        let kind = io_kind(&err).unwrap_or(ErrorKind::Io);
        Self::new(kind, format!("{context}: {err}")).with_source(err)
    }
}

/// The kind an I/O error has whatever path it happened on: a time limit, a full file system,
/// memory this computer could not give.
pub(crate) fn io_kind(err: &std::io::Error) -> Option<ErrorKind> {
    use std::io::ErrorKind as Io;
    Some(match err.kind() {
        Io::TimedOut => ErrorKind::Timeout,
        Io::StorageFull | Io::QuotaExceeded | Io::FileTooLarge => ErrorKind::NoSpace,
        Io::OutOfMemory => ErrorKind::ResourceExhausted,
        _ => return None,
    })
}

impl Error {
    /// This error inside an `io::Error` of the matching kind, so that it survives a trip
    /// through `io::Read` (a verifying download read by the install) and a timeout still reads
    /// as one; [`Error::io`] gives it back unchanged.
    pub(crate) fn into_io(self) -> std::io::Error {
        let kind = if self.kind == ErrorKind::Timeout {
            std::io::ErrorKind::TimedOut
        } else {
            std::io::ErrorKind::Other
        };
        std::io::Error::new(kind, self)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.kind.summary(), self.message)
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn codes_are_unique_and_fit_an_exit_status() {
        let mut seen = HashSet::new();
        for kind in ErrorKind::ALL {
            assert!(seen.insert(kind.code()), "duplicate code {}", kind.code());
            assert!(kind.code() >= 10, "codes 1 and 2 belong to the shell");
            assert_eq!(ErrorKind::from_code(kind.code()), Some(*kind));
        }
        assert_eq!(ErrorKind::from_code(0), None);
    }

    #[test]
    fn codes_are_stable() {
        // These numbers are a public contract: changing one breaks scripts and C callers.
        assert_eq!(ErrorKind::Malformed.code(), 10);
        assert_eq!(ErrorKind::NotAuthentic.code(), 20);
        assert_eq!(ErrorKind::UnknownSigner.code(), 21);
        assert_eq!(ErrorKind::CertificateInvalid.code(), 26);
        assert_eq!(ErrorKind::CertificateExpired.code(), 27);
        assert_eq!(ErrorKind::IntegrityMismatch.code(), 30);
        assert_eq!(ErrorKind::Io.code(), 70);
    }

    #[test]
    fn names_are_unique_snake_case_and_remedies_present() {
        let mut seen = HashSet::new();
        for kind in ErrorKind::ALL {
            assert!(seen.insert(kind.name()));
            assert!(
                kind.name()
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'_')
            );
            assert!(!kind.remedy().is_empty() && !kind.summary().is_empty());
        }
    }
}
