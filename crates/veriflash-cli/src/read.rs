//! `veriflash read` and `veriflash backup`: copy one partition, or every partition, of an
//! MDM9x07 in download mode to files, as `edl r` and `edl rs` do — with the programmer the
//! technician gives, no package. Everything is the plugin's (`veriflash_mdm9x07::backup`):
//! identification, the upload, reading each partition twice, checking the file on disk.

use std::path::Path;
use std::time::Duration;

use veriflash_core::{Error, ErrorKind};
use veriflash_mdm9x07::backup::{self, ModemReader};
use veriflash_mdm9x07::target::{self, Target};
use veriflash_mdm9x07::{MAX_PROGRAMMER_LEN, Mdm9x07Plugin, SessionConfig};
use veriflash_plugin::{Plugin, PluginError};

use crate::output::{Failure, human_size};

/// Where to read from and with what.
#[derive(Debug)]
pub(crate) struct ReadArgs<'a> {
    pub(crate) target: &'a str,
    pub(crate) programmer: &'a Path,
    pub(crate) wait: Duration,
}

fn modem_error(e: veriflash_mdm9x07::Error) -> Error {
    veriflash_core::flash::device_error(PluginError::from(e))
}

/// Opens the modem, uploads the programmer and reads its partition table.
fn open(args: &ReadArgs<'_>) -> Result<Box<dyn ModemReader>, Error> {
    let rest = args.target.strip_prefix("mdm9x07:").ok_or_else(|| {
        Error::new(
            ErrorKind::InvalidInput,
            format!(
                "'{}' is no MDM9x07 target: read and backup take {}",
                args.target,
                target::TARGET_FORMS.join(", ")
            ),
        )
    })?;
    let parsed = Target::parse(rest).map_err(modem_error)?;
    let len = std::fs::metadata(args.programmer)
        .map_err(|e| Error::new(ErrorKind::Io, format!("{}: {e}", args.programmer.display())))?
        .len();
    if len == 0 || len > MAX_PROGRAMMER_LEN {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "{}: {len} bytes; a programmer has 1 to {MAX_PROGRAMMER_LEN} bytes",
                args.programmer.display()
            ),
        ));
    }
    let programmer = std::fs::read(args.programmer)
        .map_err(|e| Error::new(ErrorKind::Io, format!("{}: {e}", args.programmer.display())))?;
    let mut plugin = Mdm9x07Plugin::new(SessionConfig {
        wait_for_device: args.wait,
        ..SessionConfig::default()
    });
    plugin
        .configure(&crate::plugins::environment())
        .map_err(veriflash_core::flash::device_error)?;
    let mut reader = target::open_waiting(&parsed, plugin.config()).map_err(modem_error)?;
    reader.start_programmer(&programmer).map_err(modem_error)?;
    Ok(reader)
}

/// `veriflash read PARTITION --out FILE`.
pub(crate) fn read(args: &ReadArgs<'_>, partition: &str, out: &Path) -> Result<(), Failure> {
    let mut reader = open(args)?;
    let copy = backup::read_to_file(&mut *reader, partition, out).map_err(modem_error)?;
    reader.reset_modem().map_err(modem_error)?;
    println!(
        "{partition}: {} to {} (read twice, sha256 {})",
        human_size(copy.bytes),
        out.display(),
        veriflash_core::package::hex(&copy.sha256)
    );
    println!("the modem was reset");
    Ok(())
}

/// `veriflash backup --out-dir DIR`.
pub(crate) fn back_up(args: &ReadArgs<'_>, dir: &Path) -> Result<(), Failure> {
    let mut reader = open(args)?;
    let copies = backup::back_up(&mut *reader, dir).map_err(modem_error)?;
    reader.reset_modem().map_err(modem_error)?;
    for copy in &copies {
        println!(
            "  {:<12} {:>10}  sha256 {}",
            copy.partition,
            human_size(copy.bytes),
            veriflash_core::package::hex(&copy.sha256)
        );
    }
    println!(
        "backed up {} partitions to {} (each read twice; check with `sha256sum -c {}`); the modem was reset",
        copies.len(),
        dir.display(),
        backup::CHECKSUMS
    );
    Ok(())
}
