//! The plugins this command opens targets with, and where they keep their state: the one place
//! of the CLI that lists plugins. Everything a plugin does — which targets come back after a
//! reset, how a device is waited for after its flash, journals, backups, product tables — is
//! the plugin's own business, behind `veriflash_plugin::Plugin`, and the same for every
//! frontend (`veriflash_core::Updater`).

use std::path::{Path, PathBuf};

use veriflash_plugin::{PluginEnvironment, Registry};

/// The built-in file device (`file:`) and the MDM9x07 plugin with every transport
/// (`mdm9x07:emulator`, `mdm9x07:serial:PATH`, `mdm9x07:usb[:BUS-PORT]`); `sysfs` is where the
/// MDM9x07 plugin looks for USB devices (the real `/sys/bus/usb/devices/` unless a test says
/// otherwise); `allow_partition_table` lets MDM9x07 packages rewrite the partition table
/// (`flash --allow-partition-table`), `wait_device` is how long opening a real modem waits
/// for it (`flash --wait`). The plugins are configured by the updater, from [`environment`].
pub(crate) fn registry(
    sysfs: Option<&Path>,
    allow_partition_table: bool,
    wait_device: std::time::Duration,
) -> Registry {
    let mut registry = Registry::with_builtin();
    let mdm9x07 = veriflash_mdm9x07::Mdm9x07Plugin::new(veriflash_mdm9x07::SessionConfig {
        allow_partition_table,
        wait_for_device: wait_device,
        ..veriflash_mdm9x07::SessionConfig::default()
    });
    registry.register(Box::new(match sysfs {
        Some(dir) => mdm9x07.with_sysfs(dir),
        None => mdm9x07,
    }));
    registry
}

/// Where plugins keep state and read configuration: `$VERIFLASH_STATE_DIR` (else
/// `$XDG_STATE_HOME/veriflash`, else `~/.local/state/veriflash`) and `$VERIFLASH_CONFIG_DIR`
/// (else `$XDG_CONFIG_HOME/veriflash`, else `~/.config/veriflash`), the XDG base-directory
/// defaults; `None` without a home.
pub(crate) fn environment() -> PluginEnvironment {
    PluginEnvironment {
        state_dir: dir("VERIFLASH_STATE_DIR", "XDG_STATE_HOME", ".local/state"),
        config_dir: dir("VERIFLASH_CONFIG_DIR", "XDG_CONFIG_HOME", ".config"),
    }
}

/// `$OWN`, else `$XDG/veriflash`, else `~/HOME_DEFAULT/veriflash`.
fn dir(own: &str, xdg: &str, home_default: &str) -> Option<PathBuf> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(dir) = var(own) {
        return Some(dir.into());
    }
    let base = var(xdg)
        .map(PathBuf::from)
        .or_else(|| var("HOME").map(|h| Path::new(&h).join(home_default)))?;
    Some(base.join("veriflash"))
}

/// The registry of [`registry`], configured with [`environment`]: for commands that open a
/// target without an updater (`status`).
///
/// # Errors
/// A plugin's configuration file that cannot be used.
pub(crate) fn configured() -> Result<Registry, veriflash_core::Error> {
    configured_with(None)
}

/// [`configured`], with the MDM9x07 plugin looking for USB devices under `sysfs`.
///
/// # Errors
/// A plugin's configuration file that cannot be used.
pub(crate) fn configured_with(sysfs: Option<&Path>) -> Result<Registry, veriflash_core::Error> {
    let mut registry = registry(sysfs, false, std::time::Duration::ZERO);
    registry.configure(&environment()).map_err(|e| {
        veriflash_core::Error::new(veriflash_core::ErrorKind::InvalidInput, e.to_string())
            .with_source(e)
    })?;
    Ok(registry)
}
