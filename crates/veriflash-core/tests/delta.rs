//! Delta installs by chunk reuse, against a real HTTP server (axum + tower-http's `ServeDir`)
//! on 127.0.0.1 that logs the `Range` of every request: a device that runs v1 fetches only the
//! chunks v2 changed, adjacent ones in one request; every chunk it reuses is read back from its
//! active slot and re-hashed, so a damaged slot is never copied; a chunk cache; and a power cut
//! at every storage operation of a delta install leaves the old or the new software booting.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::cast_possible_truncation
)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use veriflash_core::format::SignatureBlock;
use veriflash_core::http::{HttpOptions, HttpSource};
use veriflash_core::ota::OtaOptions;
use veriflash_core::plugin::file_device::{Cut, FileDevice, Layout};
use veriflash_core::plugin::{
    FlashSession, Plugin, PluginEnvironment, PluginError, Registry, Slot,
};
use veriflash_core::sig::{PinnedKeys, SigningKey};
use veriflash_core::source::FileSource;
use veriflash_core::{
    AnchorSet, Chunking, Event, ImageData, ImageSource, InstallReport, PackOptions, PackageSource,
    PackageSpec, Reuse, Trust, UnsignedPackage, Updater,
};
use veriflash_test_support::{file_layout, pseudo_random};

#[path = "support/power.rs"]
mod power;
use power::Sweep;

const CHUNK: usize = 4096;

/// v1's images: boot (10 chunks, the last short) and rootfs (25 chunks).
fn images_v1() -> (Vec<u8>, Vec<u8>) {
    (pseudo_random(40_123, 1), pseudo_random(100_077, 2))
}

/// v2: boot chunks 2 and 3 and rootfs chunk 10 changed, the rest as in v1.
fn images_v2() -> (Vec<u8>, Vec<u8>) {
    let (mut boot, mut rootfs) = images_v1();
    boot[2 * CHUNK + 17] ^= 0x5A;
    boot[3 * CHUNK + 99] ^= 0x5A;
    rootfs[10 * CHUNK + 1] ^= 0x5A;
    (boot, rootfs)
}

fn package(key: &SigningKey, (boot, rootfs): (Vec<u8>, Vec<u8>), version: u64) -> Vec<u8> {
    let mut images = vec![
        ImageSource::new("boot", "boot", ImageData::Bytes(boot)),
        ImageSource::new("rootfs", "system", ImageData::Bytes(rootfs)),
    ];
    for image in &mut images {
        image.chunk_size = CHUNK as u32;
    }
    let unsigned = UnsignedPackage::prepare(PackageSpec {
        product: "acme-hotspot-x1".into(),
        chipset: "mdm9607".into(),
        hardware_revisions: vec![],
        software_version: format!("v{version}"),
        security_version: version,
        images,
    })
    .unwrap();
    let block = SignatureBlock {
        entries: vec![unsigned.sign(key).unwrap()],
    };
    let mut bytes = Vec::new();
    unsigned.write_to(&block, &mut bytes).unwrap();
    bytes
}

fn payload_offset(package: &[u8]) -> u64 {
    let mut cursor = std::io::Cursor::new(package);
    veriflash_core::PackageReader::new(&mut cursor).unwrap();
    cursor.position()
}

fn layout() -> Layout {
    file_layout(&[("boot", 64 << 10), ("system", 160 << 10)], &[])
}

fn trust(key: &SigningKey) -> Trust {
    let mut keys = PinnedKeys::new();
    keys.add(key.verifying_key());
    Trust::new(AnchorSet::new(keys, 1))
}

/// The HTTP server, with the `Range` header of every request it answered.
struct Server {
    addr: SocketAddr,
    ranges: Arc<Mutex<Vec<Option<String>>>>,
    _runtime: tokio::runtime::Runtime,
}

impl Server {
    fn url(&self, name: &str) -> String {
        format!("http://{}/{name}", self.addr)
    }

    /// The ranges asked for since the last call.
    fn take_ranges(&self) -> Vec<Option<String>> {
        std::mem::take(&mut *self.ranges.lock().unwrap())
    }
}

fn serve(dir: &Path) -> Server {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let ranges = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&ranges);
    let app = axum::Router::new()
        .fallback_service(tower_http::services::ServeDir::new(dir))
        .layer(axum::middleware::from_fn(
            move |request: axum::extract::Request, next: axum::middleware::Next| {
                let range = request
                    .headers()
                    .get("range")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                log.lock().unwrap().push(range);
                next.run(request)
            },
        ));
    runtime.spawn(async move { axum::serve(listener, app).await });
    Server {
        addr,
        ranges,
        _runtime: runtime,
    }
}

struct Fixture {
    dir: tempfile::TempDir,
    key: SigningKey,
    v2: Vec<u8>,
    server: Server,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::generate_p256().unwrap();
    let v1 = package(&key, images_v1(), 1);
    let v2 = package(&key, images_v2(), 2);
    std::fs::create_dir(dir.path().join("www")).unwrap();
    std::fs::write(dir.path().join("www/v1.vfp"), &v1).unwrap();
    std::fs::write(dir.path().join("www/v2.vfp"), &v2).unwrap();
    let server = serve(&dir.path().join("www"));
    Fixture {
        dir,
        key,
        v2,
        server,
    }
}

fn http_source(url: &str) -> PackageSource {
    let http = HttpOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_read_timeout(Duration::from_secs(2));
    PackageSource::Remote(
        Box::new(HttpSource::new(url, &http).unwrap()),
        OtaOptions::new().with_retry_delay(Duration::from_millis(10)),
    )
}

/// Installs from `source` on `target` with `reuse`, keeping host records in `state` when
/// given; the report and every event.
fn install(
    f: &Fixture,
    source: PackageSource,
    target: &str,
    reuse: Reuse,
    state: Option<&Path>,
    registry: Option<Registry>,
) -> (Result<InstallReport, veriflash_core::Error>, Vec<Event>) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let heard = Arc::clone(&events);
    let mut builder = Updater::builder(source, trust(&f.key))
        .reuse(reuse)
        .environment(PluginEnvironment {
            state_dir: state.map(Path::to_path_buf),
            config_dir: None,
        })
        .events(move |_, e| heard.lock().unwrap().push(e.clone()));
    if let Some(registry) = registry {
        builder = builder.registry(registry);
    }
    let result = builder.build().unwrap().install(target);
    let events = events.lock().unwrap().clone();
    (result, events)
}

/// A device running v1, installed from the server in full.
fn device_running_v1(f: &Fixture, name: &str, state: Option<&Path>) -> PathBuf {
    let path = f.dir.path().join(name);
    drop(FileDevice::create(&path, &layout()).unwrap());
    let target = format!("file:{}", path.display());
    let (result, _) = install(
        f,
        http_source(&f.server.url("v1.vfp")),
        &target,
        Reuse::default(),
        state,
        None,
    );
    result.unwrap();
    assert_eq!(boots(&path).as_deref(), Some("v1"));
    f.server.take_ranges();
    path
}

fn boots(path: &Path) -> Option<String> {
    FileDevice::open(path).unwrap().boot_check().unwrap()
}

fn planned(events: &[Event]) -> (u64, u64, u64) {
    events
        .iter()
        .find_map(|e| match e {
            Event::DeltaPlanned {
                bytes_reused,
                bytes_to_fetch,
                bytes_scanned,
            } => Some((*bytes_reused, *bytes_to_fetch, *bytes_scanned)),
            _ => None,
        })
        .expect("a download plans its reuse")
}

/// The payload ranges v2's changed chunks take: boot chunks 2-3 in one range, rootfs chunk 10.
fn changed_ranges(v2: &[u8]) -> Vec<Option<String>> {
    let payload = payload_offset(v2);
    let boot = payload + 2 * CHUNK as u64;
    let rootfs = payload + 40_123 + 10 * CHUNK as u64;
    vec![
        Some(format!("bytes={boot}-{}", boot + 2 * CHUNK as u64 - 1)),
        Some(format!("bytes={rootfs}-{}", rootfs + CHUNK as u64 - 1)),
    ]
}

const TOTAL: u64 = 40_123 + 100_077;
const CHANGED: u64 = 3 * CHUNK as u64;

#[test]
fn a_delta_install_fetches_only_the_changed_chunks_in_coalesced_ranges() {
    let f = fixture();
    let device = device_running_v1(&f, "dev.img", None);
    let target = format!("file:{}", device.display());
    let (result, events) = install(
        &f,
        http_source(&f.server.url("v2.vfp")),
        &target,
        Reuse::default(),
        None,
        None,
    );
    let report = result.unwrap();
    assert_eq!(boots(&device).as_deref(), Some("v2"));
    // The prefix in its three requests, then exactly the changed chunks: nothing else.
    let ranges = f.server.take_ranges();
    assert_eq!(ranges.len(), 5, "{ranges:?}");
    assert_eq!(ranges[3..], changed_ranges(&f.v2)[..], "{ranges:?}");
    let download = report.download.unwrap();
    assert_eq!(download.bytes_fetched, CHANGED);
    assert_eq!(download.bytes_reused, TOTAL - CHANGED);
    // Without a record of what was installed, the installed images were hashed once.
    assert_eq!(planned(&events), (TOTAL - CHANGED, CHANGED, TOTAL));
    // v1 went to slot B of the new device, v2 to A: it holds v2's images.
    let mut dev = FileDevice::open(&device).unwrap();
    let (boot, rootfs) = images_v2();
    assert!(dev.read_partition("boot", Slot::A, 40_123).unwrap() == boot);
    assert!(dev.read_partition("system", Slot::A, 100_077).unwrap() == rootfs);
}

#[test]
fn the_installed_packages_record_spares_reading_the_slot_up_front() {
    let f = fixture();
    let state = f.dir.path().join("state");
    let device = device_running_v1(&f, "dev.img", Some(&state));
    let target = format!("file:{}", device.display());
    let (result, events) = install(
        &f,
        http_source(&f.server.url("v2.vfp")),
        &target,
        Reuse::default(),
        Some(&state),
        None,
    );
    result.unwrap();
    assert_eq!(boots(&device).as_deref(), Some("v2"));
    assert_eq!(planned(&events), (TOTAL - CHANGED, CHANGED, 0));
    assert_eq!(f.server.take_ranges()[3..], changed_ranges(&f.v2)[..]);
}

#[test]
fn a_record_of_software_the_device_no_longer_runs_is_not_used() {
    let f = fixture();
    let state = f.dir.path().join("state");
    let device = device_running_v1(&f, "dev.img", Some(&state));
    let running_v1 = std::fs::read(&device).unwrap();
    let target = format!("file:{}", device.display());
    let v2 = || http_source(&f.server.url("v2.vfp"));
    install(&f, v2(), &target, Reuse::default(), Some(&state), None)
        .0
        .unwrap();
    // The device goes back to v1 behind this host's back (another tool re-flashed it): the
    // host's record still says v2.
    std::fs::write(&device, &running_v1).unwrap();
    assert_eq!(boots(&device).as_deref(), Some("v1"));
    f.server.take_ranges();
    let (result, events) = install(&f, v2(), &target, Reuse::default(), Some(&state), None);
    let download = result.unwrap().download.unwrap();
    assert_eq!(boots(&device).as_deref(), Some("v2"));
    // The record is set aside and the slot hashed: the plan is right, and kept.
    assert_eq!(planned(&events), (TOTAL - CHANGED, CHANGED, TOTAL));
    assert_eq!(download.bytes_fetched, CHANGED);
    assert_eq!(f.server.take_ranges()[3..], changed_ranges(&f.v2)[..]);
    assert!(
        !events.iter().any(|e| matches!(e, Event::Warning(_))),
        "{events:?}"
    );
}

#[test]
fn a_damaged_running_slot_is_never_copied() {
    let f = fixture();
    let device = device_running_v1(&f, "dev.img", None);
    // Flip a byte of rootfs chunk 5 in the slot that runs (A is the new device's first slot,
    // so v1 went to B).
    let offset = layout().offset_of("system", Slot::B).unwrap() + 5 * CHUNK as u64 + 7;
    let mut bytes = std::fs::read(&device).unwrap();
    bytes[offset as usize] ^= 0x01;
    std::fs::write(&device, &bytes).unwrap();
    let target = format!("file:{}", device.display());
    let (result, events) = install(
        &f,
        http_source(&f.server.url("v2.vfp")),
        &target,
        Reuse::default(),
        None,
        None,
    );
    let download = result.unwrap().download.unwrap();
    assert_eq!(boots(&device).as_deref(), Some("v2"));
    // Hashing the slot found no chunk 5 there; the plan fetches it.
    assert_eq!(download.bytes_fetched, CHANGED + CHUNK as u64);
    assert_eq!(download.bytes_reused, TOTAL - CHANGED - CHUNK as u64);
    assert!(!events.iter().any(|e| matches!(e, Event::Warning(_))));
}

#[test]
fn a_slot_damaged_after_the_index_is_fetched_instead_with_a_warning() {
    let f = fixture();
    let state = f.dir.path().join("state");
    let device = device_running_v1(&f, "dev.img", Some(&state));
    // With the record, the index believes chunk 5 is there; the read-back finds otherwise.
    let offset = layout().offset_of("system", Slot::B).unwrap() + 5 * CHUNK as u64 + 7;
    let mut bytes = std::fs::read(&device).unwrap();
    bytes[offset as usize] ^= 0x01;
    std::fs::write(&device, &bytes).unwrap();
    let target = format!("file:{}", device.display());
    let (result, events) = install(
        &f,
        http_source(&f.server.url("v2.vfp")),
        &target,
        Reuse::default(),
        Some(&state),
        None,
    );
    let download = result.unwrap().download.unwrap();
    assert_eq!(boots(&device).as_deref(), Some("v2"));
    assert_eq!(download.bytes_fetched, CHANGED + CHUNK as u64);
    let chunk5 = payload_offset(&f.v2) + 40_123 + 5 * CHUNK as u64;
    let ranges = f.server.take_ranges();
    assert!(
        ranges.contains(&Some(format!(
            "bytes={chunk5}-{}",
            chunk5 + CHUNK as u64 - 1
        ))),
        "chunk 5 fetched alone: {ranges:?}"
    );
    assert!(
        events.iter().any(
            |e| matches!(e, Event::Warning(w) if w.contains("rootfs") && w.contains("chunk 5"))
        )
    );
}

#[test]
fn no_reuse_fetches_the_whole_payload() {
    let f = fixture();
    let device = device_running_v1(&f, "dev.img", None);
    let target = format!("file:{}", device.display());
    let (result, events) = install(
        &f,
        http_source(&f.server.url("v2.vfp")),
        &target,
        Reuse::off(),
        None,
        None,
    );
    let download = result.unwrap().download.unwrap();
    assert_eq!(download.bytes_fetched, TOTAL);
    assert_eq!(download.bytes_reused, 0);
    assert_eq!(planned(&events), (0, TOTAL, 0));
    let ranges = f.server.take_ranges();
    assert_eq!(
        ranges[3],
        Some(format!("bytes={}-", payload_offset(&f.v2))),
        "{ranges:?}"
    );
}

#[test]
fn a_chunk_cache_serves_a_device_that_holds_nothing() {
    let f = fixture();
    let cache = f.dir.path().join("chunks");
    let first = f.dir.path().join("first.img");
    drop(FileDevice::create(&first, &layout()).unwrap());
    let (result, _) = install(
        &f,
        http_source(&f.server.url("v2.vfp")),
        &format!("file:{}", first.display()),
        Reuse::default().with_cache_dir(&cache),
        None,
        None,
    );
    assert_eq!(result.unwrap().download.unwrap().bytes_fetched, TOTAL);
    assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 35);
    f.server.take_ranges();
    // A second, empty device: everything comes from the cache, re-hashed.
    let second = f.dir.path().join("second.img");
    drop(FileDevice::create(&second, &layout()).unwrap());
    let (result, _) = install(
        &f,
        http_source(&f.server.url("v2.vfp")),
        &format!("file:{}", second.display()),
        Reuse::default().with_cache_dir(&cache),
        None,
        None,
    );
    let download = result.unwrap().download.unwrap();
    assert_eq!((download.bytes_fetched, download.bytes_reused), (0, TOTAL));
    assert_eq!(f.server.take_ranges().len(), 3, "only the prefix");
    assert_eq!(boots(&second).as_deref(), Some("v2"));
}

/// Opens `file:` targets with a power cut injected at one storage operation.
struct CutPlugin {
    at: u64,
    mode: Cut,
}

impl Plugin for CutPlugin {
    fn name(&self) -> &'static str {
        "file"
    }

    fn open(&self, target: &str) -> Result<Box<dyn FlashSession>, PluginError> {
        let mut device = FileDevice::open(Path::new(target))?;
        device.cut_power_at(self.at, self.mode);
        Ok(Box::new(device))
    }
}

#[test]
fn power_cut_at_every_storage_operation_of_a_delta_install_never_bricks() {
    let f = fixture();
    let base = device_running_v1(&f, "base.img", None);
    let package = f.dir.path().join("v2.vfp");
    std::fs::write(&package, &f.v2).unwrap();
    let source = || {
        PackageSource::Remote(
            Box::new(FileSource::open(&package).unwrap()),
            OtaOptions::new(),
        )
    };
    // Count the storage operations of an uninterrupted delta install.
    let probe = f.dir.path().join("probe.img");
    std::fs::copy(&base, &probe).unwrap();
    let mut registry = Registry::new();
    registry.register(Box::new(CutPlugin {
        at: u64::MAX,
        mode: Cut::After,
    }));
    let (result, _) = install(
        &f,
        source(),
        &format!("file:{}", probe.display()),
        Reuse::default(),
        None,
        Some(registry),
    );
    assert_eq!(result.unwrap().download.unwrap().bytes_fetched, CHANGED);
    let operations = {
        let copy = f.dir.path().join("count.img");
        std::fs::copy(&base, &copy).unwrap();
        let mut device = FileDevice::open(&copy).unwrap();
        let anchors = trust(&f.key);
        veriflash_core::install(
            f.v2.as_slice(),
            &anchors.verifier(),
            &veriflash_core::InstallPolicy::default(),
            &mut device,
            &veriflash_core::CancelToken::new(),
            &mut |_| {},
        )
        .unwrap();
        // A delta install writes what a full one writes: only where the bytes come from differs.
        device.operations()
    };
    assert!(operations > 20, "{operations} operations");
    let scratch = f.dir.path().join("cut.img");
    Sweep {
        base: &base,
        scratch: &scratch,
        operations,
        old: "v1",
        new: "v2",
    }
    .run(
        &mut |path, cut| {
            // A second delta install, after a cut, completes the first.
            let registry = cut.map(|(at, mode)| {
                let mut registry = Registry::new();
                registry.register(Box::new(CutPlugin { at, mode }));
                registry
            });
            let target = format!("file:{}", path.display());
            let (result, _) = install(&f, source(), &target, Reuse::default(), None, registry);
            result.map(|_| ())
        },
        &mut |_, _, _| {},
        &mut |_| {},
    );
}

/// A one-image package of `rootfs` for partition `system`, chunked and compressed as `options`
/// say, in chunks of at most `chunk_size`.
fn rootfs_package(
    key: &SigningKey,
    rootfs: Vec<u8>,
    version: u64,
    chunk_size: u32,
    options: &PackOptions,
) -> Vec<u8> {
    let mut image = ImageSource::new("rootfs", "system", ImageData::Bytes(rootfs));
    image.chunk_size = chunk_size;
    let unsigned = UnsignedPackage::prepare_with(
        PackageSpec {
            product: "acme-hotspot-x1".into(),
            chipset: "mdm9607".into(),
            hardware_revisions: vec![],
            software_version: format!("v{version}"),
            security_version: version,
            images: vec![image],
        },
        options,
    )
    .unwrap();
    let block = SignatureBlock {
        entries: vec![unsigned.sign(key).unwrap()],
    };
    let mut bytes = Vec::new();
    unsigned.write_to(&block, &mut bytes).unwrap();
    bytes
}

#[test]
fn content_defined_chunks_keep_their_digests_after_an_insertion() {
    let f = fixture();
    let old = pseudo_random(600_000, 41);
    let mut new = old.clone();
    new.splice(
        300_000..300_000,
        b"a 37-byte insertion in the middle....".iter().copied(),
    );
    let cdc = PackOptions::new().chunking(Chunking::ContentDefined);
    let fixed = PackOptions::new();
    let mut fetched = Vec::new();
    for (name, options, chunk_size) in [("cdc", &cdc, 16 << 10), ("fixed", &fixed, 4 << 10)] {
        let v1 = rootfs_package(&f.key, old.clone(), 1, chunk_size, options);
        let v2 = rootfs_package(&f.key, new.clone(), 2, chunk_size, options);
        // Content-defined chunks are format version 3; fixed ones stay version 1.
        let version = if name == "cdc" { 3 } else { 1 };
        assert_eq!(u16::from_be_bytes([v2[8], v2[9]]), version, "{name}");
        std::fs::write(f.dir.path().join(format!("www/{name}-v1.vfp")), &v1).unwrap();
        std::fs::write(f.dir.path().join(format!("www/{name}-v2.vfp")), &v2).unwrap();
        let device = f.dir.path().join(format!("{name}.img"));
        drop(FileDevice::create(&device, &file_layout(&[("system", 1 << 20)], &[])).unwrap());
        let target = format!("file:{}", device.display());
        for package in ["v1", "v2"] {
            let url = f.server.url(&format!("{name}-{package}.vfp"));
            let (result, _) = install(&f, http_source(&url), &target, Reuse::default(), None, None);
            let download = result.unwrap().download.unwrap();
            if package == "v2" {
                fetched.push(download.bytes_fetched);
            }
        }
        assert_eq!(boots(&device).as_deref(), Some("v2"), "{name}");
        let mut dev = FileDevice::open(&device).unwrap();
        assert!(
            dev.read_partition("system", Slot::A, new.len() as u64)
                .unwrap()
                == new
        );
    }
    let (cdc_bytes, fixed_bytes) = (fetched[0], fetched[1]);
    // Fixed chunks: everything after the insertion moved. Content-defined: a chunk or two.
    assert!(fixed_bytes > 250_000, "fixed chunks fetched {fixed_bytes}");
    assert!(
        cdc_bytes < 20_000,
        "content-defined chunks fetched {cdc_bytes}"
    );
}

#[test]
fn content_defined_and_compressed_chunks_verify_and_install() {
    let f = fixture();
    let key = &f.key;
    // Compressible: runs of one byte between random stretches.
    let rootfs: Vec<u8> = (0..300_000u32)
        .map(|i| {
            if (i / 5000) % 2 == 0 {
                (i % 7) as u8
            } else {
                (i * 31 % 251) as u8
            }
        })
        .collect();
    let options = PackOptions::new()
        .chunking(Chunking::ContentDefined)
        .compression(Some(3));
    let package = rootfs_package(key, rootfs.clone(), 1, 32 << 10, &options);
    let path = f.dir.path().join("cdc-zstd.vfp");
    std::fs::write(&path, &package).unwrap();
    let anchors = trust(key);
    let report = veriflash_core::verify_file(&path, &anchors.verifier()).unwrap();
    assert_eq!(report.images.len(), 1);
    let reader = veriflash_core::PackageReader::open(&path).unwrap();
    let manifest = reader
        .verify(&anchors.verifier())
        .unwrap()
        .manifest()
        .manifest()
        .clone();
    let image = &manifest.images[0];
    assert!(image.has_variable_chunks() && image.is_compressed());
    assert!(image.stored_size() < image.size);
    let device = f.dir.path().join("z.img");
    drop(FileDevice::create(&device, &file_layout(&[("system", 1 << 20)], &[])).unwrap());
    let mut dev = FileDevice::open(&device).unwrap();
    veriflash_core::install(
        package.as_slice(),
        &anchors.verifier(),
        &veriflash_core::InstallPolicy::default(),
        &mut dev,
        &veriflash_core::CancelToken::new(),
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(dev.boot_check().unwrap().as_deref(), Some("v1"));
    assert!(
        dev.read_partition("system", Slot::B, rootfs.len() as u64)
            .unwrap()
            == rootfs
    );
}
