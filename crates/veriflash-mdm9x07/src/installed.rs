//! Host copies of what a single-slot modem runs, so that a delta install can read its source
//! after the install began overwriting the only copy of it on NAND.
//!
//! An MDM9x07 has one copy of each partition: an install erases the partition its image goes to
//! and programs the new image there. A delta package (FORMAT.md §3.4) rebuilds each new image
//! from the old one, chunk by chunk, *while* it is written, so the old bytes must still be
//! readable after the erase. The session therefore reads a partition back through Firehose the
//! first time the pipeline asks what it holds ([`veriflash_plugin::FlashSession::installed_len`],
//! which `veriflash_core::check_sources` calls before `begin`), into a file on the host, and
//! serves every later [`veriflash_plugin::FlashSession::read_installed`] from that file.
//!
//! Nothing here is trusted: the pipeline hashes the copy against the delta's signed source
//! digest before anything is written, and every chunk rebuilt from it against its signed chunk
//! digest right before it is written, so a copy damaged on the link, on disk, or left over from
//! another install is never flashed — it ends the install with `source_mismatch` (nothing
//! written) or `delta_output_mismatch`.
//!
//! The copy is on disk, never in memory, and as large as the partition: in
//! `BACKUP_DIR/mdm9x07-SERIAL/installed/PARTITION.bin` when the session has a backup directory
//! (kept until the install commits, so that a run cut off after the erase can be run again, see
//! [`crate::SessionConfig::backup_dir`]), else in an unnamed temporary file the system deletes
//! when the session ends.

use std::io::{Read as _, Seek as _, SeekFrom};

use crate::error::Error;

/// One partition's bytes as the modem held them before the install's first write.
#[derive(Debug)]
pub(crate) struct HostCopy {
    partition: String,
    file: std::fs::File,
    len: u64,
    /// Kept by an interrupted install and taken as it was, not read from the modem now.
    resumed: bool,
}

impl HostCopy {
    /// The copy of `partition` in `file`, `len` bytes from its start; `resumed` when an
    /// interrupted install kept it and it was not read from the modem now.
    pub(crate) fn new(partition: &str, file: std::fs::File, len: u64, resumed: bool) -> Self {
        Self {
            partition: partition.to_owned(),
            file,
            len,
            resumed,
        }
    }

    /// Whether an interrupted install kept it (see [`HostCopy::new`]).
    pub(crate) fn resumed(&self) -> bool {
        self.resumed
    }

    /// The partition it is a copy of.
    pub(crate) fn partition(&self) -> &str {
        &self.partition
    }

    /// Its length: the partition's, as the programmer read it.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Fills `buf` from byte `offset` of the copy.
    ///
    /// # Errors
    /// [`Error::Unsupported`] for a range past the copy's end; [`Error::Storage`] when the file
    /// cannot be read.
    pub(crate) fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), Error> {
        let past = offset
            .checked_add(buf.len() as u64)
            .is_none_or(|end| end > self.len);
        if past {
            return Err(Error::Unsupported(format!(
                "{} bytes at {offset} run past the {} bytes of '{}' read back",
                buf.len(),
                self.len,
                self.partition
            )));
        }
        self.file
            .seek(SeekFrom::Start(offset))
            .and_then(|_| self.file.read_exact(buf))
            .map_err(|e| {
                Error::Storage(format!(
                    "reading the host copy of '{}': {e}",
                    self.partition
                ))
            })
    }
}

/// The file name of `partition`'s kept copy, when its name is safe as one: the MIBIB names
/// partitions with any printable ASCII (`/` and `..` too), and a name that is not a plain word
/// keeps its copy in a temporary file instead.
pub(crate) fn file_name(partition: &str) -> Option<String> {
    let plain = !partition.is_empty()
        && partition
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    plain.then(|| format!("{partition}.bin"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::io::Write as _;

    use super::*;

    #[test]
    fn reads_inside_the_copy_and_refuses_past_its_end() {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(b"0123456789").unwrap();
        let mut copy = HostCopy::new("boot", file, 10, false);
        let mut buf = [0u8; 4];
        copy.read_at(6, &mut buf).unwrap();
        assert_eq!(&buf, b"6789");
        copy.read_at(0, &mut buf).unwrap();
        assert_eq!(&buf, b"0123");
        assert!(matches!(
            copy.read_at(7, &mut buf),
            Err(Error::Unsupported(_))
        ));
        assert!(matches!(
            copy.read_at(u64::MAX, &mut buf),
            Err(Error::Unsupported(_))
        ));
        // A copy that shrank on disk under the session is an error, not short data.
        let mut short = HostCopy::new("boot", tempfile::tempfile().unwrap(), 10, false);
        assert!(matches!(short.read_at(0, &mut buf), Err(Error::Storage(_))));
    }

    #[test]
    fn only_plain_partition_names_become_file_names() {
        assert_eq!(file_name("boot").as_deref(), Some("boot.bin"));
        assert_eq!(file_name("modem_a-1").as_deref(), Some("modem_a-1.bin"));
        for bad in ["", "..", "../etc", "a/b", "a.b", "a\\b"] {
            assert_eq!(file_name(bad), None, "{bad:?}");
        }
    }
}
