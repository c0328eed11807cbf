//! Reading a modem without a package, as a technician does with `edl r` and `edl rs`: one
//! partition to a file, or every partition of its MIBIB to a directory, each copy verified.
//!
//! A copy is *verified* when two complete reads of the partition through Firehose gave the
//! same SHA-256 ([`crate::Mdm9x07Session::read_partition`]; the 9x07 NAND programmer has no
//! `getsha256digest`) and the file, synced and read back from disk, hashes to it too. Only
//! then is it renamed into place, so a file at the name asked for is always a whole,
//! verified copy.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};

use veriflash_plugin::FlashSession;

use crate::error::Error;
use crate::mibib::Placed;
use crate::sahara::ChipIdentity;
use crate::session::ReadCopy;

/// A session that can also read a modem without a package; every `mdm9x07:` target opens
/// one ([`crate::target::open`]).
pub trait ModemReader: FlashSession {
    /// See [`crate::Mdm9x07Session::start_programmer`].
    ///
    /// # Errors
    /// As there.
    fn start_programmer(&mut self, programmer: &[u8]) -> Result<(), Error>;
    /// The partitions of the table in force.
    fn placed_partitions(&self) -> Vec<Placed>;
    /// See [`crate::Mdm9x07Session::read_partition`].
    ///
    /// # Errors
    /// As there.
    fn read_partition(
        &mut self,
        name: &str,
        out: &mut dyn std::io::Write,
    ) -> Result<ReadCopy, Error>;
    /// The chip's identity, once read.
    fn chip(&self) -> Option<ChipIdentity>;
    /// See [`crate::Mdm9x07Session::reset`].
    ///
    /// # Errors
    /// As there.
    fn reset_modem(&mut self) -> Result<(), Error>;
}

impl<T: crate::transport::Transport> ModemReader for crate::Mdm9x07Session<T> {
    fn start_programmer(&mut self, programmer: &[u8]) -> Result<(), Error> {
        Self::start_programmer(self, programmer)
    }

    fn placed_partitions(&self) -> Vec<Placed> {
        self.partitions().to_vec()
    }

    fn read_partition(
        &mut self,
        name: &str,
        out: &mut dyn std::io::Write,
    ) -> Result<ReadCopy, Error> {
        Self::read_partition(self, name, out)
    }

    fn chip(&self) -> Option<ChipIdentity> {
        self.identity()
    }

    fn reset_modem(&mut self) -> Result<(), Error> {
        self.reset()
    }
}

fn io(path: &Path, e: &std::io::Error) -> Error {
    Error::Storage(format!("{}: {e}", path.display()))
}

/// Reads partition `name` into `path`: through `PATH.part`, synced, read back from disk and
/// compared with the device's SHA-256, then renamed. An existing `path` is replaced only by
/// a verified copy.
///
/// # Errors
/// [`Error::Storage`] for reads that differ, a file that cannot be written or reads back
/// otherwise; the session's errors.
pub fn read_to_file(
    reader: &mut dyn ModemReader,
    name: &str,
    path: &Path,
) -> Result<ReadCopy, Error> {
    let mut part = path.as_os_str().to_owned();
    part.push(".part");
    let part = PathBuf::from(part);
    let file = std::fs::File::create(&part).map_err(|e| io(&part, &e))?;
    let mut out = std::io::BufWriter::new(file);
    let copy = reader.read_partition(name, &mut out)?;
    out.flush().map_err(|e| io(&part, &e))?;
    let file = out.into_inner().map_err(|e| io(&part, e.error()))?;
    file.sync_all().map_err(|e| io(&part, &e))?;
    drop(file);
    if file_digest(&part)? != copy.sha256 {
        return Err(Error::Storage(format!(
            "{} reads back other bytes than the device gave: the disk is unreliable",
            part.display()
        )));
    }
    std::fs::rename(&part, path).map_err(|e| io(path, &e))?;
    Ok(copy)
}

/// SHA-256 of a file, streamed.
fn file_digest(path: &Path) -> Result<veriflash_plugin::Digest, Error> {
    let mut file = std::fs::File::open(path).map_err(|e| io(path, &e))?;
    let mut hasher = veriflash_hash::Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf).map_err(|e| io(path, &e))?;
        if n == 0 {
            break;
        }
        hasher.update(buf.get(..n).unwrap_or(&[]));
    }
    Ok(hasher.finalize())
}

/// The name of the checksum file [`back_up`] writes (`sha256sum -c` reads it).
pub const CHECKSUMS: &str = "SHA256SUMS";

/// Reads every partition of the table in force into `dir/NAME.bin` ([`read_to_file`]), then
/// writes `dir/SHA256SUMS` (one `DIGEST  NAME.bin` line each, as `sha256sum` writes) and
/// `dir/partitions.txt` (name, first block, blocks). The protected partitions (EFS,
/// calibration, the MIBIB) are read like the others: a full backup is what restores them.
///
/// # Errors
/// As [`read_to_file`], for the first partition that fails (the copies made before it stay).
pub fn back_up(reader: &mut dyn ModemReader, dir: &Path) -> Result<Vec<ReadCopy>, Error> {
    std::fs::create_dir_all(dir).map_err(|e| io(dir, &e))?;
    let mut copies = Vec::new();
    let mut sums = String::new();
    let mut layout = String::new();
    for p in reader.placed_partitions() {
        let file = format!("{}.bin", p.name);
        let copy = read_to_file(reader, &p.name, &dir.join(&file))?;
        for b in copy.sha256 {
            sums.push_str(&format!("{b:02x}"));
        }
        sums.push_str(&format!("  {file}\n"));
        layout.push_str(&format!("{} {} {}\n", p.name, p.first_block, p.blocks));
        copies.push(copy);
    }
    for (name, text) in [(CHECKSUMS, &sums), ("partitions.txt", &layout)] {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|e| io(&path, &e))?;
    }
    Ok(copies)
}
