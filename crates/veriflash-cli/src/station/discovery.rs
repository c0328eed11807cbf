//! Hot-plug: the station polls discovery — modems in download mode on USB (as `veriflash
//! devices` finds them), emulators that announced themselves (`crate::emulators`), and the
//! `--target`s it was given while they exist — and tells the station what it sees.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use veriflash_mdm9x07::discover::{DeviceMode, Discover, Sysfs};

use super::Station;

/// How often discovery looks.
const POLL: Duration = Duration::from_millis(500);

/// What is attached now: `(target, how it was found)`.
pub(crate) fn scan(
    sysfs: Option<&Path>,
    state_dir: Option<&Path>,
    targets: &[String],
) -> Vec<(String, &'static str)> {
    let mut found = Vec::new();
    let scanner = sysfs.map_or_else(Sysfs::default, Sysfs::new);
    // No USB bus at all (a container) is nothing found, not an error to repeat twice a second.
    for device in scanner.scan().unwrap_or_default() {
        if device.mode == DeviceMode::Edl
            && let Some(target) = crate::devices::targets(&device).into_iter().next()
        {
            found.push((target, "usb"));
        }
    }
    if let Some(dir) = state_dir {
        found.extend(
            crate::emulators::list(dir)
                .into_iter()
                .map(|t| (t, "emulator")),
        );
    }
    for target in targets {
        if exists(target) && !found.iter().any(|(t, _)| t == target) {
            found.push((target.clone(), "target"));
        }
    }
    found
}

/// Whether a `--target` is there: the file or tty it names exists (other forms always are).
fn exists(target: &str) -> bool {
    target
        .strip_prefix("file:")
        .or_else(|| target.strip_prefix("mdm9x07:serial:"))
        .is_none_or(|path| Path::new(path).exists())
}

/// Polls discovery on its own thread for as long as the station runs.
pub(crate) fn start(station: &Arc<Station>) {
    let station = Arc::clone(station);
    let state_dir = crate::plugins::environment().state_dir;
    let spawned = std::thread::Builder::new()
        .name("veriflash-discovery".into())
        .spawn(move || {
            loop {
                let found = scan(
                    station.sysfs.as_deref(),
                    state_dir.as_deref(),
                    &station.targets,
                );
                station.seen(&found);
                std::thread::sleep(POLL);
            }
        });
    if spawned.is_err() {
        eprintln!("station: no thread for discovery: devices will not appear");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_appear_while_what_they_name_exists() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("dev.img");
        let target = format!("file:{}", path.display());
        let targets = [target.clone(), "mdm9x07:emulator".to_owned()];
        let none = tmp.path().join("no-sysfs");
        let found = scan(Some(&none), Some(tmp.path()), &targets);
        assert_eq!(found, [("mdm9x07:emulator".to_owned(), "target")]);
        std::fs::write(&path, b"").unwrap();
        let found = scan(Some(&none), Some(tmp.path()), &targets);
        assert_eq!(found.len(), 2);
        assert_eq!(found[0], (target, "target"));
    }

    #[test]
    fn download_mode_modems_on_usb_and_announced_emulators_are_found() {
        let tmp = tempfile::tempdir().unwrap();
        let sysfs = tmp.path().join("sysfs");
        for (name, pid) in [("1-1.2", "9008"), ("1-1.3", "9091")] {
            let dev = sysfs.join(name);
            std::fs::create_dir_all(dev.join(format!("{name}:1.0/ttyUSB0"))).unwrap();
            std::fs::write(dev.join("idVendor"), "05c6").unwrap();
            std::fs::write(dev.join("idProduct"), pid).unwrap();
        }
        let _emulator =
            crate::emulators::Announcement::new(tmp.path(), "mdm9x07:serial:/dev/null").unwrap();
        let found = scan(Some(&sysfs), Some(tmp.path()), &[]);
        // The normal-mode modem (9091) cannot be flashed before a switch: not listed.
        assert_eq!(
            found,
            [
                ("mdm9x07:usb:1-1.2".to_owned(), "usb"),
                ("mdm9x07:serial:/dev/null".to_owned(), "emulator"),
            ]
        );
    }
}
