//! `veriflash device init` and `veriflash status`: the file-backed reference device.
//!
//! A layout file describes the device:
//!
//! ```toml
//! product = "acme-hotspot-x1"
//! chipset = "mdm9607"
//! hardware_revision = "r2"
//! erase_block = 65536     # optional, default 64 KiB
//! write_unit = 4096       # optional, default 4 KiB
//!
//! [[partition]]
//! name = "boot"
//! size = 8388608
//! ab = true               # A/B copies: updatable. false: never written (calibration, EFS)
//! ```

use std::path::Path;

use serde::Deserialize;
use serde_json::json;
use veriflash_core::package::hex;
use veriflash_core::{Error, ErrorKind};
use veriflash_plugin::config::{Key, Table, UnknownKeys};
use veriflash_plugin::file_device::{FileDevice, Layout};
use veriflash_plugin::{DeviceStatus, PartitionInfo, Slot, StorageGeometry};

use crate::output::{Failure, human_size};

/// The keys of a layout, for [`veriflash_plugin::config::check`]: unknown keys are errors
/// (a misspelt `ab` would make a partition that can never be updated).
static LAYOUT: Table = Table {
    name: "",
    keys: &[
        Key::required("product"),
        Key::required("chipset"),
        Key::required("hardware_revision"),
        Key::optional("erase_block"),
        Key::optional("write_unit"),
        Key::table("partition", &PARTITION, true),
    ],
    always_strict: true,
};

static PARTITION: Table = Table {
    name: "[[partition]]",
    keys: &[
        Key::required("name"),
        Key::required("size"),
        Key::optional("ab"),
    ],
    always_strict: true,
};

#[derive(Debug, Deserialize)]
struct LayoutFile {
    product: String,
    chipset: String,
    hardware_revision: String,
    #[serde(default = "default_erase_block")]
    erase_block: u32,
    #[serde(default = "default_write_unit")]
    write_unit: u32,
    partition: Vec<PartitionEntry>,
}

#[derive(Debug, Deserialize)]
struct PartitionEntry {
    name: String,
    size: u64,
    #[serde(default)]
    ab: bool,
}

fn default_erase_block() -> u32 {
    64 * 1024
}

fn default_write_unit() -> u32 {
    4096
}

/// Parses a layout description.
pub(crate) fn parse_layout(text: &str) -> Result<Layout, Error> {
    veriflash_plugin::config::check(text, &LAYOUT, UnknownKeys::Refuse)
        .map_err(|e| Error::new(ErrorKind::InvalidInput, e.to_string()))?;
    let file: LayoutFile = toml::from_str(text)
        .map_err(|e| Error::new(ErrorKind::InvalidInput, e.to_string().trim_end().to_owned()))?;
    let layout = Layout {
        product: file.product,
        chipset: file.chipset,
        hardware_revision: file.hardware_revision,
        geometry: StorageGeometry {
            erase_block: file.erase_block,
            write_unit: file.write_unit,
        },
        partitions: file
            .partition
            .into_iter()
            .map(|p| PartitionInfo {
                name: p.name,
                size: p.size,
                slotted: p.ab,
                protected: !p.ab,
            })
            .collect(),
    };
    layout
        .validate()
        .map_err(|e| Error::new(ErrorKind::InvalidInput, e.to_string()))?;
    Ok(layout)
}

/// The path of a `file:PATH` target.
pub(crate) fn file_target(target: &str) -> Result<&Path, Error> {
    target.strip_prefix("file:").map(Path::new).ok_or_else(|| {
        Error::new(
            ErrorKind::InvalidInput,
            format!("'{target}': device init makes file-backed devices only (file:PATH)"),
        )
    })
}

/// Creates a device file from a layout description.
pub(crate) fn init(layout_path: &Path, target: &str) -> Result<(), Failure> {
    let text = std::fs::read_to_string(layout_path)
        .map_err(|e| Error::new(ErrorKind::Io, format!("{}: {e}", layout_path.display())))?;
    let layout = parse_layout(&text).map_err(|e| e.with_context(layout_path.display()))?;
    let path = file_target(target)?;
    FileDevice::create(path, &layout).map_err(veriflash_core::flash::device_error)?;
    println!(
        "created {}: {} / {} rev {}, {} partitions, slot a active, floor 0",
        path.display(),
        layout.product,
        layout.chipset,
        layout.hardware_revision,
        layout.partitions.len()
    );
    Ok(())
}

fn status_json(status: &DeviceStatus) -> serde_json::Value {
    let info = &status.info;
    json!({
        "product": info.product,
        "chipset": info.chipset,
        "hardware_revision": info.hardware_revision,
        "active_slot": info.active_slot.map(Slot::name),
        "security_floor": info.security_floor,
        "installed_version": info.installed_version,
        "partitions": info.partitions.iter().map(|p| json!({"name": p.name, "size": p.size, "ab": p.slotted})).collect::<Vec<_>>(),
        "last_result": status.last_result.as_ref().map(|r| json!({"code": r.code, "message": r.message})),
        "interrupted_install": status.interrupted_install.map(|id| hex(&id)),
    })
}

/// Prints a device's state.
pub(crate) fn status(target: &str, check: bool, json: bool) -> Result<(), Failure> {
    let fail = |e: Error| Failure::new(e, json);
    let mut session = crate::plugins::configured()
        .map_err(fail)?
        .open(target)
        .map_err(|e| fail(veriflash_core::flash::device_error(e)))?;
    let status = session
        .status()
        .map_err(|e| fail(veriflash_core::flash::device_error(e)))?;
    let checked = if check {
        let checked = veriflash_core::flash::check_installed(session.as_mut()).map_err(fail)?;
        if checked.is_none() {
            return Err(fail(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "{target} cannot read its installed images back: --check is not available for it"
                ),
            )));
        }
        checked
    } else {
        None
    };
    if json {
        let mut v = status_json(&status);
        if let Some(images) = &checked {
            v["checked"] = json!(
                images
                    .iter()
                    .map(|i| json!({"partition": i.partition, "size": i.size, "intact": i.intact}))
                    .collect::<Vec<_>>()
            );
        }
        crate::events::print(json!({ "ok": true, "status": v }));
        return Ok(());
    }
    let info = &status.info;
    println!("device          {target}");
    println!(
        "product         {} / {} rev {}",
        info.product, info.chipset, info.hardware_revision
    );
    match info.active_slot {
        Some(slot) => println!("active slot     {slot}"),
        None => println!("active slot     (single-slot device)"),
    }
    println!(
        "installed       {}",
        info.installed_version
            .as_deref()
            .unwrap_or("(nothing installed by veriflash)")
    );
    println!("rollback floor  {}", info.security_floor);
    match &status.last_result {
        Some(r) if r.code == 0 => println!("last result     success: {}", r.message),
        Some(r) => println!("last result     error {}: {}", r.code, r.message),
        None => println!("last result     (none)"),
    }
    if let Some(id) = status.interrupted_install {
        println!(
            "INTERRUPTED     an install of package {} did not finish; run the flash again",
            hex(&id)
        );
    }
    if let Some(images) = &checked {
        let names: Vec<&str> = images.iter().map(|i| i.partition.as_str()).collect();
        println!(
            "checked         every installed image reads back as installed ({})",
            if names.is_empty() {
                "none installed".to_owned()
            } else {
                names.join(", ")
            }
        );
    }
    println!("partitions");
    for p in &info.partitions {
        println!(
            "  {:<16} {:>10}  {}",
            p.name,
            human_size(p.size),
            if p.protected {
                "protected"
            } else if p.slotted {
                "A/B"
            } else {
                "single copy"
            }
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_layout_with_defaults() {
        let layout = parse_layout(
            "product='p'\nchipset='c'\nhardware_revision='r1'\n[[partition]]\nname='boot'\nsize=65536\nab=true\n[[partition]]\nname='efs2'\nsize=65536\n",
        )
        .unwrap();
        assert_eq!(layout.geometry.erase_block, 65536);
        assert!(layout.partitions[0].slotted);
        assert!(!layout.partitions[1].slotted);
    }

    #[test]
    fn rejects_misspelt_keys_and_bad_geometry() {
        let base = "product='p'\nchipset='c'\nhardware_revision='r1'\n[[partition]]\nname='boot'\nsize=65536\n";
        let err = parse_layout(&format!("{base}sloted=true\n")).unwrap_err();
        assert_eq!(
            err.message(),
            "[[partition]] #1: unknown key 'sloted' (line 7)"
        );
        let err = parse_layout(&base.replace("hardware_revision", "hardware_revison")).unwrap_err();
        assert_eq!(
            err.message(),
            "missing key 'hardware_revision'; did you mean 'hardware_revison' (line 3)?"
        );
        let err = parse_layout(&format!("{base}sise=1\n")).unwrap_err();
        assert!(
            err.message().ends_with("did you mean 'size'?"),
            "{}",
            err.message()
        );
        assert!(
            parse_layout(&base.replace("product='p'", "product='p'\nwrite_unit=1000")).is_err()
        );
    }
}
