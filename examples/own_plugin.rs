//! Write a plugin for your own device, and install a signed package into it.
//!
//! ```sh
//! cargo run --example own_plugin
//! ```
//!
//! The device here is a toy: an A/B device whose storage is in memory. A real plugin talks to
//! its device through a transport (USB, serial, a driver's ioctls) but has the same shape:
//!
//! * [`Plugin`] recognises a target string (`toy:...`) and opens a [`FlashSession`];
//! * the session describes the device (`device_info`), journals the plan (`begin`), writes
//!   [`Chunk`]s — the only kind of bytes it can be handed: only the pipeline makes them, right
//!   after they matched a digest of the verified package they are bound to —, reads back what
//!   it wrote, and commits atomically;
//! * everything else — signatures, product/chipset/revision checks, anti-rollback, partition
//!   sizes, hashing, events — is done by `veriflash::core::install` before and around it.
//!
//! The program makes its own signing key and packages in a temporary directory, installs one,
//! then shows a corrupted package and a downgrade being refused without the device changing.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use veriflash::core::format::SignatureBlock;
use veriflash::core::{
    CancelToken, ErrorKind, Event, ImageData, ImageSource, InstallPolicy, PackageSpec,
    UnsignedPackage, install,
};
use veriflash::plugin::{
    Chunk, DeviceInfo, DeviceStatus, Digest, FlashSession, InstallPlan, LastResult, PartitionInfo,
    Plugin, PluginError, Registry, Slot, StorageGeometry,
};
use veriflash::sig::{PinnedKeys, SigningKey, Verifier};

/// The toy device's state: two copies of each partition, which one boots, the rollback floor.
#[derive(Debug)]
struct RamDevice {
    /// Partition name -> capacity.
    partitions: BTreeMap<String, u64>,
    /// Partition name -> contents of slot A and slot B.
    storage: BTreeMap<String, [Vec<u8>; 2]>,
    active: Slot,
    floor: u64,
    version: Option<String>,
    last: Option<LastResult>,
    /// The install in progress (what `begin` journaled).
    plan: Option<InstallPlan>,
}

impl RamDevice {
    fn new(partitions: &[(&str, u64)]) -> Self {
        Self {
            partitions: partitions
                .iter()
                .map(|(name, size)| ((*name).to_owned(), *size))
                .collect(),
            storage: partitions
                .iter()
                .map(|(name, _)| ((*name).to_owned(), [Vec::new(), Vec::new()]))
                .collect(),
            active: Slot::A,
            floor: 0,
            version: None,
            last: None,
            plan: None,
        }
    }

    fn info(&self) -> DeviceInfo {
        DeviceInfo {
            id: None,
            product: "acme-thermostat".into(),
            chipset: "toy-soc".into(),
            hardware_revision: "r1".into(),
            geometry: StorageGeometry {
                erase_block: 4096,
                write_unit: 512,
            },
            partitions: self
                .partitions
                .iter()
                .map(|(name, size)| PartitionInfo {
                    name: name.clone(),
                    size: *size,
                    slotted: true,
                    protected: false,
                })
                .collect(),
            active_slot: Some(self.active),
            security_floor: self.floor,
            installed_version: self.version.clone(),
            free_space: None, // images are written in place, nothing is staged
        }
    }

    /// The copy of `partition` an install writes: the inactive slot's.
    fn target(&mut self, partition: &str) -> Result<&mut Vec<u8>, PluginError> {
        let planned = self
            .plan
            .as_ref()
            .is_some_and(|plan| plan.images.iter().any(|i| i.partition == partition));
        if !planned {
            // A plugin must never write outside the planned partitions.
            return Err(PluginError::Unsupported(format!(
                "'{partition}' is not part of the install"
            )));
        }
        let slot = slot_index(self.active.other());
        self.storage
            .get_mut(partition)
            .map(|copies| &mut copies[slot])
            .ok_or_else(|| PluginError::Unsupported(format!("no partition '{partition}'")))
    }
}

fn slot_index(slot: Slot) -> usize {
    match slot {
        Slot::A => 0,
        Slot::B => 1,
    }
}

fn lock(device: &Mutex<RamDevice>) -> Result<MutexGuard<'_, RamDevice>, PluginError> {
    device
        .lock()
        .map_err(|_| PluginError::Device("device state poisoned".into()))
}

/// The plugin: handles `toy:NAME` targets. All names open the same device here.
struct ToyPlugin {
    device: Arc<Mutex<RamDevice>>,
}

impl Plugin for ToyPlugin {
    fn name(&self) -> &'static str {
        "toy"
    }

    fn open(&self, _target: &str) -> Result<Box<dyn FlashSession>, PluginError> {
        Ok(Box::new(ToySession {
            device: Arc::clone(&self.device),
        }))
    }
}

/// One open connection to the device.
struct ToySession {
    device: Arc<Mutex<RamDevice>>,
}

impl FlashSession for ToySession {
    fn device_info(&mut self) -> Result<DeviceInfo, PluginError> {
        Ok(lock(&self.device)?.info())
    }

    fn begin(&mut self, plan: &InstallPlan) -> Result<(), PluginError> {
        let mut device = lock(&self.device)?;
        if plan.target_slot != Some(device.active.other()) {
            return Err(PluginError::Unsupported(
                "writes go to the inactive slot".into(),
            ));
        }
        device.plan = Some(plan.clone());
        // "Erase" the target copies of the planned partitions.
        for image in &plan.images {
            device.target(&image.partition)?.clear();
        }
        Ok(())
    }

    fn write(&mut self, chunk: Chunk<'_>) -> Result<(), PluginError> {
        let partition = chunk.partition();
        let mut device = lock(&self.device)?;
        let offset = usize::try_from(chunk.offset())
            .map_err(|_| PluginError::Unsupported("offset beyond memory".into()))?;
        let bytes = chunk.bytes();
        let end = offset + bytes.len();
        let copy = device.target(partition)?;
        if copy.len() < end {
            copy.resize(end, 0xFF);
        }
        copy[offset..end].copy_from_slice(bytes);
        Ok(())
    }

    fn read_back(&mut self, partition: &str, size: u64) -> Result<Digest, PluginError> {
        let mut device = lock(&self.device)?;
        let size = usize::try_from(size)
            .map_err(|_| PluginError::Unsupported("size beyond memory".into()))?;
        let copy = device.target(partition)?;
        let written = copy
            .get(..size)
            .ok_or_else(|| PluginError::ReadBackMismatch {
                partition: partition.to_owned(),
            })?;
        Ok(veriflash::hash::sha256(written))
    }

    fn commit(&mut self) -> Result<(), PluginError> {
        let mut device = lock(&self.device)?;
        let plan = device
            .plan
            .take()
            .ok_or_else(|| PluginError::Unsupported("commit before begin".into()))?;
        // A real device makes these three changes in one atomic write (a boot-control record).
        device.active = device.active.other();
        device.floor = device.floor.max(plan.security_version);
        device.version = Some(plan.software_version.clone());
        device.last = Some(LastResult {
            code: 0,
            message: format!("installed {}", plan.software_version),
        });
        Ok(())
    }

    fn status(&mut self) -> Result<DeviceStatus, PluginError> {
        let device = lock(&self.device)?;
        Ok(DeviceStatus {
            info: device.info(),
            last_result: device.last.clone(),
            interrupted_install: device.plan.as_ref().map(|plan| plan.package_id),
        })
    }

    fn abort(&mut self, result: &LastResult) -> Result<(), PluginError> {
        let mut device = lock(&self.device)?;
        device.plan = None;
        device.last = Some(result.clone());
        Ok(())
    }
}

/// A signed package for the toy device, written to `path`.
fn make_package(
    key: &SigningKey,
    version: &str,
    security_version: u64,
    path: &std::path::Path,
) -> Result<(), Box<dyn std::error::Error>> {
    let firmware: Vec<u8> = (0..=250u8).cycle().take(200_000).collect();
    let mut images = vec![
        ImageSource::new("firmware", "firmware", ImageData::Bytes(firmware)),
        ImageSource::new(
            "config",
            "config",
            ImageData::Bytes(b"setpoint=21\n".to_vec()),
        ),
    ];
    for image in &mut images {
        image.chunk_size = 64 * 1024;
    }
    let unsigned = UnsignedPackage::prepare(PackageSpec {
        product: "acme-thermostat".into(),
        chipset: "toy-soc".into(),
        hardware_revisions: vec!["r1".into()],
        software_version: version.into(),
        security_version,
        images,
    })?;
    let signatures = SignatureBlock {
        entries: vec![unsigned.sign(key)?],
    };
    unsigned.write_to(&signatures, &mut std::fs::File::create(path)?)?;
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let key = SigningKey::generate_p256()?;
    let mut trust = PinnedKeys::new();
    trust.add(key.verifying_key());
    let verifier = Verifier::new(&trust);

    let device = Arc::new(Mutex::new(RamDevice::new(&[
        ("firmware", 1 << 20),
        ("config", 4096),
    ])));
    let mut registry = Registry::new();
    registry.register(Box::new(ToyPlugin {
        device: Arc::clone(&device),
    }));
    let mut session = registry.open("toy:thermostat-1")?;

    // 1. An authentic package: installed into slot B, which then boots.
    let v2 = dir.path().join("thermostat-2.0.vfp");
    make_package(&key, "2.0", 5, &v2)?;
    let report = install(
        std::fs::File::open(&v2)?,
        &verifier,
        &InstallPolicy::default(),
        session.as_mut(),
        &CancelToken::new(),
        &mut |event| {
            if let Event::PhaseFinished(phase) = event {
                println!("  {:<10} ok", phase.name());
            }
        },
    )?;
    println!("installed {} {}", report.product, report.software_version);
    let status = session.status()?;
    println!(
        "device: slot {} active, version {}, rollback floor {}",
        status.info.active_slot.map_or("-", Slot::name),
        status.info.installed_version.as_deref().unwrap_or("-"),
        status.info.security_floor
    );

    // 2. The same package with one payload byte flipped: refused while streaming, before the
    //    bad chunk reaches `write`; the device keeps booting slot B.
    let mut corrupted = std::fs::read(&v2)?;
    if let Some(last) = corrupted.last_mut() {
        *last ^= 0x01;
    }
    let err = install(
        corrupted.as_slice(),
        &verifier,
        &InstallPolicy::default(),
        session.as_mut(),
        &CancelToken::new(),
        &mut |_| {},
    )
    .err()
    .ok_or("the corrupted package was installed")?;
    println!(
        "corrupted package: error[{} {}]",
        err.code(),
        err.kind().name()
    );
    assert_eq!(err.kind(), ErrorKind::IntegrityMismatch);

    // 3. An older release (security version 4 < floor 5): refused before anything is written.
    let v1 = dir.path().join("thermostat-1.9.vfp");
    make_package(&key, "1.9", 4, &v1)?;
    let err = install(
        std::fs::File::open(&v1)?,
        &verifier,
        &InstallPolicy::default(),
        session.as_mut(),
        &CancelToken::new(),
        &mut |_| {},
    )
    .err()
    .ok_or("the downgrade was installed")?;
    println!("older package: error[{} {}]", err.code(), err.kind().name());
    assert_eq!(err.kind(), ErrorKind::DowngradeRefused);

    let status = session.status()?;
    assert_eq!(status.info.active_slot, Some(Slot::B));
    assert_eq!(status.info.installed_version.as_deref(), Some("2.0"));
    println!(
        "device: still slot {}, version {}; last result: {}",
        status.info.active_slot.map_or("-", Slot::name),
        status.info.installed_version.as_deref().unwrap_or("-"),
        status.last_result.map_or_else(String::new, |r| r.message)
    );
    Ok(())
}
