//! `veriflash emulate mdm9x07 --pty`: the emulated MDM9x07 in download mode on a
//! pseudo-terminal, speaking what a real one speaks through qcserial, until killed. The slave's
//! path is the first line on stdout; host arrivals and departures go to stderr.
//!
//! With `--diag` the modem starts in normal mode: its DIAG port answers the switch to
//! emergency download, and the next host to open the tty finds the boot ROM (the real modem
//! re-enumerates as 05C6:9008; here the same tty changes personality).

use std::io::Write as _;

use clap::Subcommand;
use veriflash_core::{Error, ErrorKind};
use veriflash_mdm9x07::emulator::{Emulator, EmulatorConfig};

use crate::output::Failure;

#[derive(Debug, Subcommand)]
pub(crate) enum EmulateCommand {
    /// An MDM9x07 (MDM9607 by default) in emergency download mode: Sahara, then a Firehose
    /// programmer over simulated NAND with a MIBIB, two bad blocks and calibration in EFS2.
    #[command(
        after_help = "Example:\n  veriflash emulate mdm9x07 --pty &      # prints /dev/pts/N\n  veriflash flash update.vfp --trust vendor.pub.pem --target mdm9x07:serial:/dev/pts/N"
    )]
    Mdm9x07 {
        /// Serve on a new pseudo-terminal (the only way to serve it outside the test suite).
        #[arg(long)]
        pty: bool,
        /// The chip it claims to be: mdm9607, mdm9207, mdm9206, another known name
        /// (msm8916, msm8909, msm8953) or an MSM id in hex (0x007050E1), e.g. to see a
        /// wrong-chip refusal.
        #[arg(long, default_value = "mdm9607")]
        chip: String,
        /// Start in normal mode, answering the DIAG switch to download mode.
        #[arg(long)]
        diag: bool,
        /// The chip serial number it reports (hex), so several emulated modems tell apart.
        #[arg(long, value_name = "HEX", value_parser = parse_serial)]
        serial: Option<u32>,
        /// Instead of serving: write a stand-in Firehose programmer that the emulator accepts
        /// (an ELF32 image; the emulator runs no code, a real modem would need its vendor's
        /// signed programmer) to FILE, for packages meant for `--target mdm9x07:emulator`.
        #[arg(long, value_name = "FILE", conflicts_with_all = ["pty", "diag"])]
        write_programmer: Option<std::path::PathBuf>,
    },
}

/// A serial number in hex, with or without `0x`.
fn parse_serial(text: &str) -> Result<u32, String> {
    let hex = text
        .strip_prefix("0x")
        .or_else(|| text.strip_prefix("0X"))
        .unwrap_or(text);
    u32::from_str_radix(hex, 16).map_err(|e| format!("not a hex serial number: {e}"))
}

/// The MSM id (upper 32 bits of the hardware id) for a chip name or a hex id.
fn msm_id(chip: &str) -> Option<u32> {
    if let Some(hex) = chip.strip_prefix("0x").or_else(|| chip.strip_prefix("0X")) {
        return u32::from_str_radix(hex, 16).ok();
    }
    [
        0x0004_A0E1u32,
        0x0004_80E1,
        0x0097_30E1,
        0x0070_50E1,
        0x0096_00E1,
        0x0004_60E1,
    ]
    .into_iter()
    .find(|id| veriflash_mdm9x07::sahara::chip_name(*id) == Some(chip))
}

pub(crate) fn run(command: &EmulateCommand) -> Result<(), Failure> {
    let EmulateCommand::Mdm9x07 {
        pty,
        chip,
        diag,
        serial,
        write_programmer,
    } = command;
    let usage = |m: String| Failure::text(Error::new(ErrorKind::InvalidInput, m));
    if let Some(path) = write_programmer {
        let payload = b"veriflash emulator stand-in programmer\n".repeat(400);
        std::fs::write(path, veriflash_mdm9x07::emulator::test_programmer(&payload)).map_err(
            |e| {
                Failure::text(Error::new(
                    ErrorKind::Io,
                    format!("{}: {e}", path.display()),
                ))
            },
        )?;
        println!(
            "wrote a stand-in programmer for the emulator to {}",
            path.display()
        );
        return Ok(());
    }
    if !pty {
        return Err(usage(
            "emulate needs --pty (the emulator is served on a pseudo-terminal) or --write-programmer FILE".into(),
        ));
    }
    let msm = msm_id(chip).ok_or_else(|| {
        usage(format!(
            "unknown chip '{chip}' (mdm9607, mdm9207, mdm9206, msm8916, msm8909, msm8953 or a hex MSM id)"
        ))
    })?;
    let mut config = EmulatorConfig::mdm9607();
    // Keep the OEM and model ids (the product the default session config knows).
    config.hw_id = (u64::from(msm) << 32) | (config.hw_id & 0xFFFF_FFFF);
    if let Some(serial) = serial {
        config.serial = *serial;
    }
    let device = Emulator::new(config)
        .map_err(|e| Failure::text(Error::new(ErrorKind::DeviceError, e.to_string())))?;
    serve(device, *diag)
}

#[cfg(target_os = "linux")]
fn serve(device: Emulator, diag: bool) -> Result<(), Failure> {
    use veriflash_mdm9x07::diag::DiagDevice;
    use veriflash_mdm9x07::pty::{HostEvent, PtyPeer, PtyServer};
    use veriflash_mdm9x07::transport::Endpoint;

    /// A modem that may start in normal mode (DIAG) and re-enumerates in download mode once
    /// switched and closed.
    struct Modem {
        diag: Option<DiagDevice>,
        edl: Emulator,
    }
    impl Endpoint for Modem {
        fn receive(&mut self, bytes: &[u8]) {
            match &mut self.diag {
                Some(d) => d.receive(bytes),
                None => self.edl.receive(bytes),
            }
        }
        fn transmit(&mut self) -> Option<Vec<u8>> {
            match &mut self.diag {
                Some(d) => d.transmit(),
                None => self.edl.transmit(),
            }
        }
    }
    impl PtyPeer for Modem {
        fn host_opened(&mut self) {
            match &mut self.diag {
                Some(d) => d.host_opened(),
                None => self.edl.host_opened(),
            }
        }
        fn host_closed(&mut self) {
            if self.diag.as_ref().is_some_and(|d| d.switched().is_some()) {
                self.diag = None;
                eprintln!("switched to emergency download mode (05C6:9008)");
            }
        }
    }

    let transport = |e: veriflash_mdm9x07::Error| {
        Failure::text(Error::new(ErrorKind::TransportError, e.to_string()))
    };
    let server = PtyServer::open().map_err(transport)?;
    // Announced to discovery (`veriflash station`) while it serves; a signal ends the serving
    // loop so the announcement goes with it.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // Without a handler the signal ends the process as before, leaving a file discovery
        // ignores once the process is gone.
        let _ = signal_hook::flag::register(signal, std::sync::Arc::clone(&stop));
    }
    let target = format!("mdm9x07:serial:{}", server.slave_path().display());
    let _announced = crate::plugins::environment()
        .state_dir
        .and_then(|dir| crate::emulators::Announcement::new(&dir, &target).ok());
    println!("{}", server.slave_path().display());
    let _ = std::io::stdout().flush();
    eprintln!(
        "serving an emulated {} on {} until killed",
        if diag {
            "modem in normal mode (DIAG)"
        } else {
            "MDM9x07 in download mode"
        },
        server.slave_path().display()
    );
    let mut modem = Modem {
        diag: diag.then(DiagDevice::new),
        edl: device,
    };
    server
        .serve(
            &mut modem,
            &|| stop.load(std::sync::atomic::Ordering::Relaxed),
            &mut |event| match event {
                HostEvent::Opened => eprintln!("host connected"),
                HostEvent::Closed => eprintln!("host left"),
            },
        )
        .map_err(transport)
}

#[cfg(not(target_os = "linux"))]
fn serve(_device: Emulator, _diag: bool) -> Result<(), Failure> {
    Err(Failure::text(Error::new(
        ErrorKind::InvalidInput,
        "emulate --pty needs Linux pseudo-terminals",
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chip_names_and_hex_ids_map_to_msm_ids() {
        assert_eq!(msm_id("mdm9607"), Some(0x0004_A0E1));
        assert_eq!(msm_id("mdm9207"), Some(0x0004_80E1));
        assert_eq!(msm_id("msm8916"), Some(0x0070_50E1));
        assert_eq!(msm_id("0x007050E1"), Some(0x0070_50E1));
        assert_eq!(msm_id("pentium"), None);
        assert_eq!(msm_id("0xZZ"), None);
    }
}
