//! `veriflash devices`: the modems on USB, found through sysfs (`veriflash_mdm9x07::discover`):
//! download-mode devices with the targets that flash them, and normal-mode modems whose DIAG
//! port can switch them to download mode; and the emulated modems that announce themselves
//! under the state directory (`veriflash emulate mdm9x07 --pty`), as the station finds them.

use std::path::Path;

use serde_json::json;
use veriflash_core::{Error, ErrorKind};
use veriflash_mdm9x07::discover::{DeviceMode, Discover, FoundDevice, Sysfs};

use crate::output::Failure;

/// The `--target` strings that reach a device.
pub(crate) fn targets(d: &FoundDevice) -> Vec<String> {
    let mut t = Vec::new();
    if d.mode == DeviceMode::Edl {
        t.push(format!("mdm9x07:usb:{}", d.location));
        if let Some(tty) = &d.tty {
            t.push(format!("mdm9x07:serial:{}", tty.display()));
        }
    }
    t
}

fn device_json(d: &FoundDevice) -> serde_json::Value {
    json!({
        "mode": d.mode.name(),
        "location": d.location,
        "vendor_id": format!("{:04x}", d.vendor_id),
        "product_id": format!("{:04x}", d.product_id),
        "tty": d.tty.as_ref().map(|t| t.display().to_string()),
        "product": d.product,
        "serial": d.serial,
        "targets": targets(d),
    })
}

/// Lists the modems under the sysfs directory `root`.
pub(crate) fn run(root: &Path, json: bool) -> Result<(), Failure> {
    let emulated = crate::plugins::environment()
        .state_dir
        .map(|dir| crate::emulators::list(&dir))
        .unwrap_or_default();
    let found = Sysfs::new(root).scan().map_err(|e| {
        Failure::new(
            Error::new(
                ErrorKind::TransportError,
                format!("listing USB devices: {e}"),
            ),
            json,
        )
    })?;
    if json {
        crate::events::print(json!({
            "ok": true,
            "devices": found.iter().map(device_json).collect::<Vec<_>>(),
            "emulators": emulated,
        }));
        return Ok(());
    }
    for target in &emulated {
        println!("emulated modem in download mode: {target}");
    }
    if found.is_empty() && !emulated.is_empty() {
        return Ok(());
    }
    if found.is_empty() {
        println!(
            "no device found: no download-mode device (05C6:9008) and no Qualcomm or Quectel modem on USB"
        );
        if !root.is_dir() {
            // A container or a machine without USB: say so rather than blame the modem.
            println!(
                "note: {} does not exist: this system shows no USB bus at all",
                root.display()
            );
        }
        println!(
            "hint: put the modem in emergency download mode (its test point or boot key, `adb reboot edl`, \
             or a DIAG switch from normal mode), check the cable (a data cable, not a charging one), \
             and run `lsusb`: it should show 05c6:9008"
        );
        return Ok(());
    }
    println!(
        "{:<5} {:<10} {:<10} {:<14} {:<20} TARGET",
        "MODE", "LOCATION", "ID", "TTY", "PRODUCT"
    );
    for d in &found {
        let tty = d
            .tty
            .as_ref()
            .map_or_else(|| "-".to_owned(), |t| t.display().to_string());
        let target = match d.mode {
            DeviceMode::Edl => targets(d).join(" or "),
            DeviceMode::Diag => "normal mode: switch it over its DIAG port first".to_owned(),
        };
        println!(
            "{:<5} {:<10} {:04x}:{:04x}  {:<14} {:<20} {target}",
            d.mode.name(),
            d.location,
            d.vendor_id,
            d.product_id,
            tty,
            d.product.as_deref().unwrap_or("-"),
        );
    }
    Ok(())
}

/// How `switch-to-edl` asks.
pub(crate) struct SwitchArgs<'a> {
    /// The modem's DIAG (or AT) port.
    pub(crate) port: &'a Path,
    /// Send the legacy `DIAG_DLOAD_F` instead of the subsystem EDL reset.
    pub(crate) dload: bool,
    /// An AT command to send instead of DIAG.
    pub(crate) at: Option<&'a str>,
    /// Seconds to wait for the 05C6:9008 device to appear (0: do not wait).
    pub(crate) wait: u64,
    /// The sysfs directory of USB devices.
    pub(crate) sysfs: &'a Path,
    pub(crate) json: bool,
}

/// What to do when `switch-to-edl` cannot open its port.
const PORT_REMEDY: &str = "Give --port the DIAG port of a modem in normal mode (`veriflash devices` lists it as the TTY of a normal-mode modem), or its AT port with --at; a modem already in download mode needs no switch.";

/// What to do when the modem does not take the switch.
const SWITCH_REMEDY: &str = "Check that --port is the modem's DIAG port (`veriflash devices` lists it; the other ttyUSB ports of the modem are AT or NMEA ports), try --dload for older firmware or the vendor's command with --at, and run switch-to-edl again.";

/// What to do when the modem does not come back in download mode within `--wait`.
const WAIT_REMEDY: &str = "Run `veriflash devices` to see whether the modem came back in download mode (05C6:9008) or is still in normal mode; give it more time with a longer --wait.";

/// Asks a normal-mode modem to reboot into emergency download mode over its DIAG port (or
/// with a vendor AT command), then optionally waits for it to re-enumerate.
#[cfg(unix)]
pub(crate) fn switch(args: &SwitchArgs<'_>) -> Result<(), Failure> {
    use std::time::Duration;
    use veriflash_mdm9x07::diag::{AtSwitch, DiagEdlCommand, DiagSwitch, EdlSwitch};
    use veriflash_mdm9x07::serial::SerialTransport;

    // Each failure with the fix for this command (the kinds' remedies speak of installs). A
    // port that cannot be opened is mapped as `flash` and `status` map it (missing: 58,
    // forbidden: 59); a switch the modem does not take is a transport error, or a device error
    // when the modem refuses it.
    let fail = |kind: ErrorKind, e: veriflash_mdm9x07::Error, remedy: &str| {
        Failure::new(
            Error::new(kind, e.to_string()).with_remedy(remedy),
            args.json,
        )
    };
    let kind_of = |e: &veriflash_mdm9x07::Error| match e {
        veriflash_mdm9x07::Error::Unsupported(_) => ErrorKind::DeviceError,
        _ => ErrorKind::TransportError,
    };
    let timeout = Duration::from_secs(5);
    let link = SerialTransport::open(args.port).map_err(|e| {
        let err = veriflash_core::flash::device_error(e.into()).with_remedy(PORT_REMEDY);
        Failure::new(err, args.json)
    })?;
    let mut switch: Box<dyn EdlSwitch> = match args.at {
        Some(cmd) => Box::new(AtSwitch::new(link, cmd, timeout).map_err(|e| {
            Failure::new(
                Error::new(ErrorKind::InvalidInput, e.to_string()),
                args.json,
            )
        })?),
        None => Box::new(DiagSwitch::new(
            link,
            if args.dload {
                DiagEdlCommand::Dload
            } else {
                DiagEdlCommand::SubsysEdlReset
            },
            timeout,
        )),
    };
    switch
        .switch_to_edl()
        .map_err(|e| fail(kind_of(&e), e, SWITCH_REMEDY))?;
    drop(switch);
    let found = if args.wait > 0 {
        let d = veriflash_mdm9x07::discover::wait_for_edl(
            &Sysfs::new(args.sysfs),
            None,
            Duration::from_secs(args.wait),
            Duration::from_millis(250),
        )
        .map_err(|e| fail(ErrorKind::TransportError, e, WAIT_REMEDY))?;
        Some(d)
    } else {
        None
    };
    if args.json {
        crate::events::print(
            json!({"ok": true, "port": args.port.display().to_string(), "device": found.as_ref().map(device_json)}),
        );
    } else {
        println!(
            "{}: the modem took the switch to emergency download mode",
            args.port.display()
        );
        match found {
            Some(d) => println!(
                "it is back as 05C6:9008 at USB {}: flash with --target {}",
                d.location,
                targets(&d).join(" or ")
            ),
            None => {
                println!("it re-enumerates as 05C6:9008 in a few seconds: see `veriflash devices`")
            }
        }
    }
    Ok(())
}

#[cfg(not(unix))]
pub(crate) fn switch(args: &SwitchArgs<'_>) -> Result<(), Failure> {
    Err(Failure::new(
        Error::new(
            ErrorKind::InvalidInput,
            "switch-to-edl needs a Unix serial port",
        ),
        args.json,
    ))
}
