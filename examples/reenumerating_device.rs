//! A plugin for a second kind of device, in one file: a device that resets and re-enumerates
//! after every partition it writes. It shows what a chipset plugin gets from the pipeline.
//!
//! ```sh
//! cargo run --example reenumerating_device
//! ```
//!
//! The device (a tracker module, chipset `tk100`) is single-slot — no A/B copies — and drops
//! off its bus each time it finishes writing a partition, as a device that resets after each
//! partition would: the next command fails with a transport error, the next few opens find
//! nothing, then it answers again. Its storage is memory shared by every session (the
//! `Arc<Mutex<Hardware>>` stands for the hardware), so what it wrote survives the reset.
//!
//! The plugin needs nothing outside this file but one line on a [`Registry`] (`registry`
//! below; the CLI's is in `crates/veriflash-cli/src/plugins.rs`). It implements [`Plugin`] and
//! [`FlashSession`], and keeps only what the plugin alone can know:
//!
//! * a **resume journal** in the state directory the embedder hands every plugin
//!   ([`PluginEnvironment::state_dir`], through [`Plugin::configure`]): which partitions of
//!   which package ([`InstallPlan::package_id`]) were written completely. On `begin` of the
//!   same package it reads those partitions back and skips the ones that still match, so a
//!   resumed install programs only what is missing. The pipeline still verifies every chunk on
//!   every run; the session accepts the chunks of skipped partitions and ignores them;
//! * that the device comes back after dropping off: [`Plugin::reconnects`].
//!
//! The rest comes from the [`Updater`]: signatures, policy, chunk verification, events, the
//! wait for the device and a fresh run of the install after each drop ([`Reconnect`]; the
//! package must come from a source that can be read again, a file or byte ranges), and the
//! anti-rollback floor, which this device cannot keep ([`FlashSession::holds_trust_anchors`]
//! is `false`): the host keeps it in `STATE_DIR/devices`, keyed by [`DeviceInfo::id`].
//!
//! The program installs a three-partition package, prints the events and the device's status,
//! has an older package refused, and checks what it claims: any claim that does not hold
//! makes it exit non-zero, so CI runs it as a test.

use std::error::Error;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use veriflash::core::format::SignatureBlock;
use veriflash::core::{
    AnchorSet, Event, ImageData, ImageSource, PackageSource, PackageSpec, Phase, Reconnect, Trust,
    UnsignedPackage, Updater,
};
use veriflash::plugin::{
    Chunk, DeviceInfo, DeviceStatus, Digest, FlashSession, InstallPlan, LastResult, PartitionInfo,
    Plugin, PluginEnvironment, PluginError, Registry, StorageGeometry,
};
use veriflash::sig::{PinnedKeys, SigningKey};

/// The device's serial number: its stable identity, and the target's name (`reenum:SERIAL`).
const SERIAL: &str = "tk100-0042";
/// The device's partitions and their capacities.
const LAYOUT: [(&str, u64); 3] = [("boot", 1 << 16), ("modem", 1 << 17), ("system", 1 << 17)];
/// How many opens find nothing while the device re-enumerates after a reset.
const ENUMERATION_OPENS: u32 = 3;
/// The largest journal read back (a digest and a few partition names).
const MAX_JOURNAL_LEN: u64 = 4096;
/// The chunk size of the example's packages.
const CHUNK_SIZE: u32 = 16 << 10;

/// The device itself: what its storage holds, which survives resets, and its link to the host.
#[derive(Debug, Default)]
struct Hardware {
    /// Partition name -> contents (one copy each: single-slot).
    storage: std::collections::BTreeMap<String, Vec<u8>>,
    installed_version: Option<String>,
    last_result: Option<LastResult>,
    /// Counts resets: a connection made before the last one is gone.
    resets: u32,
    /// Opens that still find nothing while the device re-enumerates.
    enumerating: u32,
    /// Whether a session holds the device (as an OS lock on a port would).
    claimed: bool,
    /// Chunks handed to the device, and those it programmed (for the summary).
    accepted: u64,
    programmed: u64,
}

impl Hardware {
    /// SHA-256 of the first `size` bytes of `partition`, `None` if it holds fewer.
    fn digest(&self, partition: &str, size: u64) -> Option<Digest> {
        let bytes = self.storage.get(partition)?;
        Some(veriflash::hash::sha256(
            bytes.get(..usize::try_from(size).ok()?)?,
        ))
    }

    fn info(&self) -> DeviceInfo {
        DeviceInfo {
            id: Some(SERIAL.into()),
            product: "acme-tracker".into(),
            chipset: "tk100".into(),
            hardware_revision: "r1".into(),
            geometry: StorageGeometry {
                erase_block: 64 << 10,
                write_unit: 2048,
            },
            partitions: LAYOUT
                .iter()
                .map(|(name, size)| PartitionInfo {
                    name: (*name).into(),
                    size: *size,
                    slotted: false,
                    protected: false,
                })
                .collect(),
            active_slot: None,
            // It keeps no floor: the host's record (STATE_DIR/devices) is the floor.
            security_floor: 0,
            installed_version: self.installed_version.clone(),
            free_space: None,
        }
    }
}

fn lock(hardware: &Mutex<Hardware>) -> Result<MutexGuard<'_, Hardware>, PluginError> {
    hardware
        .lock()
        .map_err(|_| PluginError::Device("device state poisoned".into()))
}

/// The resume journal of the install on this device: the package's id (32 bytes), then each
/// partition written completely, one a line. `None` when there is none, or none that can be read
/// (the install then starts over, which is always safe).
fn load_journal(path: Option<&Path>) -> Option<(Digest, Vec<String>)> {
    let mut bytes = Vec::new();
    let file = std::fs::File::open(path?).ok()?;
    file.take(MAX_JOURNAL_LEN).read_to_end(&mut bytes).ok()?;
    let (package, names) = bytes.split_first_chunk::<32>()?;
    let done = std::str::from_utf8(names).ok()?.lines().map(str::to_owned);
    Some((*package, done.collect()))
}

/// Replaces the journal at `path` atomically; nothing to do without a state directory.
fn save_journal(path: Option<&Path>, package: &Digest, done: &[String]) -> Result<(), PluginError> {
    let Some(path) = path else { return Ok(()) };
    let mut bytes = package.to_vec();
    for name in done {
        bytes.extend_from_slice(name.as_bytes());
        bytes.push(b'\n');
    }
    let tmp = path.with_extension("tmp");
    let storage = |source| PluginError::Storage {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(storage)?;
    }
    std::fs::write(&tmp, bytes).map_err(storage)?;
    std::fs::rename(&tmp, path).map_err(storage)
}

/// The plugin: handles `reenum:SERIAL` targets.
struct ReenumPlugin {
    hardware: Arc<Mutex<Hardware>>,
    /// Where journals go: `STATE_DIR/reenum`, once configured with a state directory.
    journals: Option<PathBuf>,
}

impl Plugin for ReenumPlugin {
    fn name(&self) -> &'static str {
        "reenum"
    }

    fn configure(&mut self, env: &PluginEnvironment) -> Result<(), PluginError> {
        self.journals = env.state_dir.as_ref().map(|dir| dir.join("reenum"));
        Ok(())
    }

    fn reconnects(&self, _target: &str) -> bool {
        true
    }

    fn open(&self, target: &str) -> Result<Box<dyn FlashSession>, PluginError> {
        let not_found = |why: &str| {
            let message = format!("no device {target} on the bus{why}");
            PluginError::Transport(std::io::Error::new(std::io::ErrorKind::NotFound, message))
        };
        let mut hw = lock(&self.hardware)?;
        if target != SERIAL {
            return Err(not_found(""));
        }
        if hw.enumerating > 0 {
            hw.enumerating -= 1;
            return Err(not_found(" (it is re-enumerating)"));
        }
        if hw.claimed {
            let holder = format!("{target}: another session holds it");
            return Err(PluginError::Busy(holder));
        }
        hw.claimed = true;
        Ok(Box::new(ReenumSession {
            link: Link {
                hardware: Arc::clone(&self.hardware),
                at: hw.resets,
            },
            journal: self
                .journals
                .as_ref()
                .map(|d| d.join(format!("{SERIAL}.journal"))),
            plan: None,
            done: Vec::new(),
        }))
    }
}

/// One install's connection to the device.
struct ReenumSession {
    link: Link,
    journal: Option<PathBuf>,
    plan: Option<InstallPlan>,
    /// Partitions of the plan that are complete: resumed from an earlier run (their chunks are
    /// accepted and ignored) or written in this one. What the journal lists.
    done: Vec<String>,
}

/// A claim on the device and a connection to it, made at its `at`-th reset: the connection
/// ends when the device resets, the claim when the session is dropped.
struct Link {
    hardware: Arc<Mutex<Hardware>>,
    at: u32,
}

impl Link {
    /// The device, if this connection still reaches it.
    fn device(&self) -> Result<MutexGuard<'_, Hardware>, PluginError> {
        let hw = lock(&self.hardware)?;
        if hw.resets != self.at {
            let gone = "the device reset and left the bus";
            let gone = std::io::Error::new(std::io::ErrorKind::NotConnected, gone);
            return Err(PluginError::Transport(gone));
        }
        Ok(hw)
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        if let Ok(mut hw) = self.hardware.lock() {
            hw.claimed = false;
        }
    }
}

impl FlashSession for ReenumSession {
    fn device_info(&mut self) -> Result<DeviceInfo, PluginError> {
        Ok(self.link.device()?.info())
    }

    fn begin(&mut self, plan: &InstallPlan) -> Result<(), PluginError> {
        if plan.target_slot.is_some() {
            let why = "a single-slot device has no slots";
            return Err(PluginError::Unsupported(why.into()));
        }
        // Resume: trust the journal of this package only for partitions that read back right.
        let mut done = match load_journal(self.journal.as_deref()) {
            Some((package, done)) if package == plan.package_id => done,
            _ => Vec::new(),
        };
        let mut hw = self.link.device()?;
        done.retain(|name| {
            let image = plan.images.iter().find(|i| i.partition == *name);
            image.is_some_and(|i| hw.digest(name, i.size) == Some(i.digest))
        });
        save_journal(self.journal.as_deref(), &plan.package_id, &done)?;
        for image in plan.images.iter().filter(|i| !done.contains(&i.partition)) {
            hw.storage.insert(image.partition.clone(), Vec::new()); // erase
        }
        self.done = done;
        self.plan = Some(plan.clone());
        Ok(())
    }

    fn write(&mut self, chunk: Chunk<'_>) -> Result<(), PluginError> {
        let outside = || PluginError::Unsupported("a chunk outside the install that began".into());
        let plan = self
            .plan
            .as_ref()
            .filter(|p| p.package_id == *chunk.package_id());
        let plan = plan.ok_or_else(outside)?;
        let image = plan
            .images
            .iter()
            .find(|i| i.partition == chunk.partition());
        let image = image.ok_or_else(outside)?;
        let mut hw = self.link.device()?;
        hw.accepted += 1;
        if self.done.contains(&image.partition) {
            return Ok(()); // verified again by the pipeline, and already on the device
        }
        let offset = usize::try_from(chunk.offset())
            .map_err(|_| PluginError::Unsupported("offset beyond memory".into()))?;
        let end = offset + chunk.bytes().len();
        let part = hw.storage.entry(image.partition.clone()).or_default();
        if part.len() < end {
            part.resize(end, 0xFF);
        }
        part.get_mut(offset..end)
            .ok_or_else(|| PluginError::Device("write outside the partition".into()))?
            .copy_from_slice(chunk.bytes());
        hw.programmed += 1;
        if end as u64 == image.size {
            // The partition is complete: journal it; then the device resets, as it does.
            self.done.push(image.partition.clone());
            save_journal(self.journal.as_deref(), &plan.package_id, &self.done)?;
            hw.resets += 1;
            hw.enumerating = ENUMERATION_OPENS;
        }
        Ok(())
    }

    fn read_back(&mut self, partition: &str, size: u64) -> Result<Digest, PluginError> {
        let partition = partition.to_owned();
        let digest = self.link.device()?.digest(&partition, size);
        digest.ok_or(PluginError::ReadBackMismatch { partition })
    }

    fn commit(&mut self) -> Result<(), PluginError> {
        let mut hw = self.link.device()?;
        let begun = self.plan.take();
        let plan = begun.ok_or_else(|| PluginError::Unsupported("commit before begin".into()))?;
        hw.installed_version = Some(plan.software_version.clone());
        hw.last_result = Some(LastResult {
            code: 0,
            message: format!("installed {}", plan.software_version),
        });
        if let Some(path) = &self.journal {
            // Best effort: a stale journal only lets a re-run of this very package skip the
            // partitions that read back as its images.
            let _ = std::fs::remove_file(path);
        }
        Ok(())
    }

    fn status(&mut self) -> Result<DeviceStatus, PluginError> {
        let hw = self.link.device()?;
        Ok(DeviceStatus {
            info: hw.info(),
            last_result: hw.last_result.clone(),
            interrupted_install: load_journal(self.journal.as_deref()).map(|(package, _)| package),
        })
    }

    fn holds_trust_anchors(&self) -> bool {
        false // nowhere to keep them: the host keeps its anchors and floor, by `DeviceInfo::id`
    }

    fn abort(&mut self, result: &LastResult) -> Result<(), PluginError> {
        // A device that left the bus records nothing; the journal stays for the next run.
        self.link.device()?.last_result = Some(result.clone());
        self.plan = None;
        Ok(())
    }
}

/// The plugins targets are opened with: the built-in ones and this one — the one line a new
/// plugin adds to a frontend.
fn registry(hardware: &Arc<Mutex<Hardware>>) -> Registry {
    let mut registry = Registry::with_builtin();
    registry.register(Box::new(ReenumPlugin {
        hardware: Arc::clone(hardware),
        journals: None,
    }));
    registry
}

/// A signed package of `images` (partition, bytes) at `security_version`, written to `path`.
fn make_package(
    key: &SigningKey,
    images: &[(&str, Vec<u8>)],
    version: &str,
    security_version: u64,
    path: PathBuf,
) -> Result<PathBuf, Box<dyn Error>> {
    let images = images
        .iter()
        .map(|(partition, bytes)| {
            let mut image =
                ImageSource::new(*partition, *partition, ImageData::Bytes(bytes.clone()));
            image.chunk_size = CHUNK_SIZE;
            image
        })
        .collect();
    let unsigned = UnsignedPackage::prepare(PackageSpec {
        product: "acme-tracker".into(),
        chipset: "tk100".into(),
        hardware_revisions: vec!["r1".into()],
        software_version: version.into(),
        security_version,
        images,
    })?;
    let signatures = SignatureBlock {
        entries: vec![unsigned.sign(key)?],
    };
    unsigned.write_to(&signatures, &mut std::fs::File::create(&path)?)?;
    Ok(path)
}

/// Prints an install's events, a line for each run of it (it runs again after a reconnect).
fn printer() -> impl FnMut(usize, &Event) + Send + 'static {
    let mut run = 0;
    move |_device, event| match event {
        Event::PhaseStarted(Phase::Signature) => {
            run += 1;
            print!("  run {run}:");
        }
        Event::PhaseFinished(phase) => print!(" {}", phase.name()),
        Event::Progress {
            image,
            image_done,
            image_total,
            done,
            total,
        } if image_done == image_total => {
            print!(
                " [{image} {}%]",
                (done * 100).checked_div(*total).unwrap_or(100)
            );
        }
        Event::Reconnecting {
            attempt,
            code,
            message,
            ..
        } => println!("\n  lost the device (error {code}: {message}); waiting for it ({attempt})"),
        Event::Reconnected { .. } => println!("  the device answers again: the install runs again"),
        Event::Finished(code) => println!(
            "\n  finished: {}",
            code.map_or("ok".into(), |c| format!("error {c}"))
        ),
        _ => {}
    }
}

/// Prints `claim`, or fails the program (and so CI) when it does not hold.
fn check(holds: bool, claim: String) -> Result<(), Box<dyn Error>> {
    if !holds {
        return Err(format!("not so: {claim}").into());
    }
    println!("  {claim}");
    Ok(())
}

fn main() -> Result<(), Box<dyn Error>> {
    let dir = tempfile::tempdir()?;
    let key = SigningKey::generate_p256()?;
    let mut keys = PinnedKeys::new();
    keys.add(key.verifying_key());
    let trust = Trust::new(AnchorSet::new(keys, 1));
    // Where plugins keep their state (this one, its journals) and the host its device records.
    let environment = PluginEnvironment {
        state_dir: Some(dir.path().join("state")),
        config_dir: None,
    };
    let pattern = |len, step| (0..=250u8).step_by(step).cycle().take(len).collect();
    let images: [(&str, Vec<u8>); 3] = [
        ("boot", pattern(40_000, 1)),
        ("modem", pattern(100_000, 2)),
        ("system", pattern(60_000, 3)),
    ];
    let new = make_package(&key, &images, "2.0", 7, dir.path().join("tracker-2.0.vfp"))?;
    let old = make_package(&key, &images, "1.4", 5, dir.path().join("tracker-1.4.vfp"))?;
    let hardware = Arc::new(Mutex::new(Hardware::default()));
    let target = format!("reenum:{SERIAL}");

    println!("install tracker 2.0 (security version 7; boot, modem, system) on {target}:");
    let mut updater = Updater::builder(PackageSource::File(new), trust.clone())
        .registry(registry(&hardware))
        .environment(environment.clone())
        .reconnect(Reconnect {
            wait: Duration::from_secs(2),
            attempts: 5,
            poll: Duration::from_millis(10),
        })
        .events(printer())
        .build()?;
    let report = updater.install(&target)?;
    let status = updater.registry().open(&target)?.status()?;
    let last = status.last_result.as_ref();
    check(
        last.is_some_and(|r| r.code == 0) && status.interrupted_install.is_none(),
        format!(
            "status: version {}, floor {} (it keeps none), last result: {}, interrupted install: none",
            status.info.installed_version.as_deref().unwrap_or("-"),
            status.info.security_floor,
            last.map_or("-".into(), |r| format!("{} {}", r.code, r.message)),
        ),
    )?;

    println!("install tracker 1.4 (security version 5) on {target}:");
    let programmed = lock(&hardware)?.programmed;
    let refused = Updater::builder(PackageSource::File(old), trust)
        .registry(registry(&hardware))
        .environment(environment)
        .events(printer())
        .build()?
        .install(&target)
        .err()
        .ok_or("the older package was installed")?;
    let floor_file = dir.path().join(format!("state/devices/{SERIAL}.floor"));
    let host_floor = std::fs::read_to_string(&floor_file)?;

    println!("summary:");
    let hw = lock(&hardware)?;
    let chunks = |bytes: &Vec<u8>| (bytes.len() as u64).div_ceil(CHUNK_SIZE.into());
    let straight: u64 = images.iter().map(|(_, bytes)| chunks(bytes)).sum();
    let reconnects = report.reconnects;
    check(
        reconnects == 3,
        format!("reconnected {reconnects} times, after each partition"),
    )?;
    check(
        programmed == straight && hw.accepted > straight,
        format!(
            "the device accepted {} verified chunks in {} runs and programmed {programmed}, \
             as many as a straight install ({straight}): no partition was written twice",
            hw.accepted,
            reconnects + 1
        ),
    )?;
    let holds = |(name, bytes): &(&str, Vec<u8>)| hw.storage.get(*name) == Some(bytes);
    let exact = hw.storage.len() == images.len() && images.iter().all(holds);
    check(
        exact,
        "the device holds exactly the package's images".into(),
    )?;
    check(
        refused.code() == 43 && host_floor.trim() == "7" && hw.programmed == programmed,
        format!(
            "the older package: refused with {} {} ({}), from the host's record {}; nothing written",
            refused.code(),
            refused.kind().name(),
            refused.message(),
            floor_file.strip_prefix(dir.path())?.display(),
        ),
    )
}
