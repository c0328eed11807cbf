//! OTA downloads against a real HTTP server (axum + tower-http's `ServeDir`) on 127.0.0.1,
//! through a fault-injecting proxy: cut connections, flipped bytes, stalls, a file replaced
//! mid-download, a server that ignores `Range`, servers that trickle bytes or stall after their
//! headers (low-speed limit, deadline), two runs racing for one output file, HTTPS with a CA
//! made by openssl. Each run ends
//! with a verified package or an error with its code, and never with an unverified byte on the
//! target: a failed streaming install leaves the device's active slot as it was, a failed
//! staged download leaves no output file.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::cast_possible_truncation
)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::FileTypeExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use veriflash_core::format::SignatureBlock;
use veriflash_core::http::{HttpOptions, HttpSource};
use veriflash_core::ota::{OtaOptions, RemotePackage};
use veriflash_core::plugin::Slot;
use veriflash_core::plugin::file_device::{FileDevice, Layout};
use veriflash_core::sig::{PinnedKeys, SigningKey, Verifier};
use veriflash_core::source::{FileSource, PushedSource};
use veriflash_core::{ErrorKind, ImageData, ImageSource, PackageSpec, UnsignedPackage};
use veriflash_test_support::{file_layout, pseudo_random};

// ---------------------------------------------------------------------------------------------
// Packages

fn spec(images: Vec<ImageSource>, security_version: u64) -> PackageSpec {
    PackageSpec {
        product: "acme-hotspot-x1".into(),
        chipset: "mdm9607".into(),
        hardware_revisions: vec![],
        software_version: format!("v{security_version}"),
        security_version,
        images,
    }
}

fn sign(key: &SigningKey, spec: PackageSpec) -> Vec<u8> {
    let unsigned = UnsignedPackage::prepare(spec).unwrap();
    let block = SignatureBlock {
        entries: vec![unsigned.sign(key).unwrap()],
    };
    let mut bytes = Vec::new();
    unsigned.write_to(&block, &mut bytes).unwrap();
    bytes
}

/// A small package: two images in 4 KiB chunks (10 + 25 chunks).
fn small_package(key: &SigningKey, seed: u64, security_version: u64) -> Vec<u8> {
    let mut images = vec![
        ImageSource::new(
            "boot",
            "boot",
            ImageData::Bytes(pseudo_random(40_123, seed)),
        ),
        ImageSource::new(
            "rootfs",
            "system",
            ImageData::Bytes(pseudo_random(100_077, seed + 1)),
        ),
    ];
    for image in &mut images {
        image.chunk_size = 4096;
    }
    sign(key, spec(images, security_version))
}

fn trust(key: &SigningKey) -> PinnedKeys {
    let mut t = PinnedKeys::new();
    t.add(key.verifying_key());
    t
}

fn payload_offset(package: &[u8]) -> u64 {
    let mut cursor = std::io::Cursor::new(package);
    veriflash_core::PackageReader::new(&mut cursor).unwrap();
    cursor.position()
}

fn layout() -> Layout {
    file_layout(&[("boot", 64 << 10), ("system", 160 << 10)], &[])
}

// ---------------------------------------------------------------------------------------------
// The server: axum + tower-http ServeDir, on 127.0.0.1, plain or TLS.

struct Server {
    addr: SocketAddr,
    _runtime: tokio::runtime::Runtime,
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

fn serve(dir: &Path) -> Server {
    let runtime = runtime();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback_service(tower_http::services::ServeDir::new(dir));
    runtime.spawn(async move { axum::serve(listener, app).await });
    Server {
        addr,
        _runtime: runtime,
    }
}

fn serve_tls(dir: &Path, cert: &Path, key: &Path) -> Server {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = runtime();
    let config = runtime
        .block_on(axum_server::tls_rustls::RustlsConfig::from_pem_file(
            cert, key,
        ))
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback_service(tower_http::services::ServeDir::new(dir));
    runtime.spawn(async move {
        axum_server::from_tcp_rustls(listener, config)
            .serve(app.into_make_service())
            .await
    });
    Server {
        addr,
        _runtime: runtime,
    }
}

// ---------------------------------------------------------------------------------------------
// The fault-injecting proxy: one request per connection (it answers `Connection: close`),
// faults placed at absolute offsets of the served file.

type Hook = Box<dyn FnMut(u32) + Send>;

#[derive(Default)]
struct Faults {
    /// Close the connection when this file offset is reached (once).
    cut_at: Option<u64>,
    /// Flip the byte at this offset, this many times.
    flip_at: Option<(u64, u32)>,
    /// Stop sending at this offset for this long, this many times.
    stall_at: Option<(u64, Duration, u32)>,
    /// From this offset on, send this many bytes at a time with this pause before each, on
    /// this many connections (the later ones are served at full speed).
    trickle: Option<Trickle>,
    /// Strip `Range` and `If-Range`: the server answers 200 with the whole file.
    ignore_range: bool,
    /// Called with each request's number (from 1) before it is forwarded.
    on_request: Option<Hook>,
}

#[derive(Clone, Copy)]
struct Trickle {
    from: u64,
    piece: usize,
    pause: Duration,
    connections: u32,
}

struct Proxy {
    addr: SocketAddr,
    served: Arc<AtomicU64>,
    requests: Arc<AtomicU32>,
}

fn proxy(upstream: SocketAddr, faults: Faults) -> Proxy {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let served = Arc::new(AtomicU64::new(0));
    let requests = Arc::new(AtomicU32::new(0));
    let faults = Arc::new(Mutex::new(faults));
    let (s, r) = (Arc::clone(&served), Arc::clone(&requests));
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { return };
            let (faults, served, requests) = (Arc::clone(&faults), Arc::clone(&s), Arc::clone(&r));
            std::thread::spawn(move || {
                let _ = relay(client, upstream, &faults, &served, &requests);
            });
        }
    });
    Proxy {
        addr,
        served,
        requests,
    }
}

fn read_head(reader: &mut impl BufRead) -> std::io::Result<Vec<String>> {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let line = line.trim_end().to_owned();
        if line.is_empty() {
            return Ok(lines);
        }
        lines.push(line);
    }
}

fn relay(
    client: TcpStream,
    upstream: SocketAddr,
    faults: &Mutex<Faults>,
    served: &AtomicU64,
    requests: &AtomicU32,
) -> std::io::Result<()> {
    let mut from_client = BufReader::new(client.try_clone()?);
    let mut to_client = client;
    let head = read_head(&mut from_client)?;
    let number = requests.fetch_add(1, Ordering::SeqCst) + 1;
    let ignore_range = {
        let mut f = faults.lock().unwrap();
        if let Some(hook) = f.on_request.as_mut() {
            hook(number);
        }
        f.ignore_range
    };
    let mut request = String::new();
    for (i, line) in head.iter().enumerate() {
        let name = line.split(':').next().unwrap_or("").to_ascii_lowercase();
        if i > 0
            && (name == "connection" || (ignore_range && (name == "range" || name == "if-range")))
        {
            continue;
        }
        request.push_str(line);
        request.push_str("\r\n");
    }
    request.push_str("Connection: close\r\n\r\n");
    let mut up = TcpStream::connect(upstream)?;
    up.write_all(request.as_bytes())?;
    let mut from_up = BufReader::new(up);
    let response = read_head(&mut from_up)?;
    let mut position = 0u64;
    let mut out = String::new();
    for line in &response {
        let lower = line.to_ascii_lowercase();
        if lower.starts_with("connection:") {
            continue;
        }
        if let Some(range) = lower.strip_prefix("content-range: bytes ") {
            position = range.split('-').next().unwrap().trim().parse().unwrap();
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str("Connection: close\r\n\r\n");
    to_client.write_all(out.as_bytes())?;

    let mut buf = vec![0u8; 16 * 1024];
    // Whether this connection trickles (decided when its body reaches the trickle's offset).
    let mut trickling = None;
    loop {
        let n = from_up.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        let piece = &mut buf[..n];
        let end = position + n as u64;
        let mut f = faults.lock().unwrap();
        if let Some((at, times)) = f.flip_at.as_mut()
            && *times > 0
            && (position..end).contains(at)
        {
            piece[(*at - position) as usize] ^= 0x01;
            *times -= 1;
        }
        let mut stall = None;
        if let Some((at, pause, times)) = f.stall_at.as_mut()
            && *times > 0
            && (position..end).contains(at)
        {
            *times -= 1;
            stall = Some((*at, *pause));
        }
        let cut = f.cut_at.filter(|at| (position..end).contains(at));
        if cut.is_some() {
            f.cut_at = None;
        }
        if trickling.is_none()
            && let Some(t) = f.trickle.as_mut()
            && end > t.from
        {
            trickling = Some((t.connections > 0).then_some(*t));
            t.connections = t.connections.saturating_sub(1);
        }
        drop(f);
        if let Some(Some(t)) = trickling {
            let keep = t.from.saturating_sub(position).min(n as u64) as usize;
            to_client.write_all(&piece[..keep])?;
            served.fetch_add(keep as u64, Ordering::SeqCst);
            for bit in piece[keep..].chunks(t.piece) {
                std::thread::sleep(t.pause);
                to_client.write_all(bit)?;
                to_client.flush()?;
                served.fetch_add(bit.len() as u64, Ordering::SeqCst);
            }
            position = end;
            continue;
        }
        if let Some(at) = cut {
            let keep = (at - position) as usize;
            to_client.write_all(&piece[..keep])?;
            served.fetch_add(keep as u64, Ordering::SeqCst);
            let _ = to_client.shutdown(Shutdown::Both);
            return Ok(());
        }
        if let Some((at, pause)) = stall {
            let keep = (at - position) as usize;
            to_client.write_all(&piece[..keep])?;
            to_client.flush()?;
            served.fetch_add(keep as u64, Ordering::SeqCst);
            std::thread::sleep(pause);
            to_client.write_all(&piece[keep..])?;
            served.fetch_add((n - keep) as u64, Ordering::SeqCst);
        } else {
            to_client.write_all(piece)?;
            served.fetch_add(n as u64, Ordering::SeqCst);
        }
        position = end;
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers

/// Options for tests: short timeouts, no pauses between attempts.
fn quick() -> (HttpOptions, OtaOptions) {
    (
        HttpOptions::new()
            .with_connect_timeout(Duration::from_millis(2000))
            .with_read_timeout(Duration::from_millis(300)),
        OtaOptions::new().with_retry_delay(Duration::from_millis(10)),
    )
}

fn url(addr: SocketAddr, name: &str) -> String {
    format!("http://{addr}/{name}")
}

struct Fixture {
    dir: tempfile::TempDir,
    key: SigningKey,
    package: Vec<u8>,
    server: Server,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::generate_p256().unwrap();
    let package = small_package(&key, 1, 5);
    std::fs::create_dir(dir.path().join("www")).unwrap();
    std::fs::write(dir.path().join("www/update.vfp"), &package).unwrap();
    let server = serve(&dir.path().join("www"));
    Fixture {
        dir,
        key,
        package,
        server,
    }
}

/// Downloads `url` to `out` with the fixture's key.
fn fetch(
    key: &SigningKey,
    url: &str,
    out: &Path,
    http: &HttpOptions,
    ota: OtaOptions,
) -> Result<veriflash_core::ota::FetchStats, veriflash_core::Error> {
    let anchors = trust(key);
    let verifier = Verifier::new(&anchors);
    let source = HttpSource::new(url, http)?;
    let remote = RemotePackage::open(source, &verifier, ota)?;
    remote
        .fetch_to_file(out, &verifier, &mut |_| {})
        .map(|(_, stats)| stats)
}

/// Streams `url` onto a new file-backed device; returns the result and the device's path.
fn flash(
    dir: &Path,
    key: &SigningKey,
    url: &str,
    http: &HttpOptions,
    ota: OtaOptions,
) -> (Result<(), veriflash_core::Error>, PathBuf) {
    let device_path = dir.join(format!("device-{}.img", rand_suffix()));
    FileDevice::create(&device_path, &layout()).unwrap();
    let target = format!("file:{}", device_path.display());
    let anchors = veriflash_core::AnchorSet::new(trust(key), 1);
    let result = (|| {
        let source = HttpSource::new(url, http)?;
        // The Updater, as every frontend runs it: each chunk verified once, as it arrives.
        veriflash_core::Updater::builder(
            veriflash_core::PackageSource::Remote(Box::new(source), ota),
            veriflash_core::Trust::new(anchors),
        )
        .build()?
        .install(&target)
        .map(drop)
    })();
    (result, device_path)
}

fn rand_suffix() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::SeqCst)
}

fn active_slot(device: &Path) -> Option<Slot> {
    FileDevice::open(device)
        .unwrap()
        .current_status()
        .info
        .active_slot
}

// ---------------------------------------------------------------------------------------------
// Tests

#[test]
fn streams_a_clean_download_onto_the_device() {
    let f = fixture();
    let (http, ota) = quick();
    let (result, device) = flash(
        f.dir.path(),
        &f.key,
        &url(f.server.addr, "update.vfp"),
        &http,
        ota,
    );
    // A new device boots slot A; the install wrote B and switched to it.
    result.unwrap();
    assert_eq!(active_slot(&device), Some(Slot::B));
}

#[test]
fn fetch_writes_the_verified_package_and_removes_its_state() {
    let f = fixture();
    let (http, ota) = quick();
    let out = f.dir.path().join("update.vfp");
    let stats = fetch(&f.key, &url(f.server.addr, "update.vfp"), &out, &http, ota).unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), f.package);
    assert!(!f.dir.path().join("update.vfp.partial").exists());
    assert!(!f.dir.path().join("update.vfp.partial.state").exists());
    assert_eq!(stats.resumes, 0);
    assert_eq!(stats.repairs, 0);
    assert_eq!(
        stats.bytes_fetched,
        f.package.len() as u64 - payload_offset(&f.package)
    );
}

#[test]
fn resumes_after_the_connection_is_cut_from_the_last_verified_chunk() {
    let f = fixture();
    let cut = payload_offset(&f.package) + 50_000;
    let p = proxy(
        f.server.addr,
        Faults {
            cut_at: Some(cut),
            ..Faults::default()
        },
    );
    let (http, ota) = quick();
    let out = f.dir.path().join("update.vfp");
    let stats = fetch(&f.key, &url(p.addr, "update.vfp"), &out, &http, ota).unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), f.package);
    assert_eq!(stats.resumes, 1);
    // Only the chunk the cut fell in is fetched again (at most one chunk of 4 KiB).
    let payload = f.package.len() as u64 - payload_offset(&f.package);
    assert!(stats.bytes_fetched <= payload, "{stats:?}");
    assert!(p.served.load(Ordering::SeqCst) <= f.package.len() as u64 + 4096 + 200);
}

#[test]
fn repairs_a_byte_flipped_in_transit_while_streaming_to_the_device() {
    let f = fixture();
    let p = proxy(
        f.server.addr,
        Faults {
            flip_at: Some((payload_offset(&f.package) + 70_000, 1)),
            ..Faults::default()
        },
    );
    let (http, ota) = quick();
    let (result, device) = flash(f.dir.path(), &f.key, &url(p.addr, "update.vfp"), &http, ota);
    result.unwrap();
    assert_eq!(active_slot(&device), Some(Slot::B));
}

#[test]
fn a_chunk_corrupted_on_every_fetch_is_an_integrity_error_and_nothing_is_committed() {
    let f = fixture();
    let p = proxy(
        f.server.addr,
        Faults {
            flip_at: Some((payload_offset(&f.package) + 70_000, u32::MAX)),
            ..Faults::default()
        },
    );
    let (http, ota) = quick();
    let (result, device) = flash(
        f.dir.path(),
        &f.key,
        &url(p.addr, "update.vfp"),
        &http,
        ota.with_max_repairs(2),
    );
    let err = result.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::IntegrityMismatch, "{err}");
    assert_eq!(err.code(), 30);
    assert_eq!(err.location().image.as_deref(), Some("rootfs"));
    // The device still boots what it had: no slot switch.
    assert_eq!(active_slot(&device), Some(Slot::A));

    // The staged download fails the same way and leaves no output file.
    let out = f.dir.path().join("update.vfp");
    let err = fetch(
        &f.key,
        &url(p.addr, "update.vfp"),
        &out,
        &http,
        ota.with_max_repairs(2),
    )
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::IntegrityMismatch);
    assert!(!out.exists());
}

#[test]
fn a_stall_times_out_and_the_download_resumes() {
    let f = fixture();
    let p = proxy(
        f.server.addr,
        Faults {
            stall_at: Some((
                payload_offset(&f.package) + 30_000,
                Duration::from_secs(1),
                1,
            )),
            ..Faults::default()
        },
    );
    let (http, ota) = quick();
    let out = f.dir.path().join("update.vfp");
    let stats = fetch(&f.key, &url(p.addr, "update.vfp"), &out, &http, ota).unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), f.package);
    assert!(stats.resumes >= 1, "{stats:?}");
}

#[test]
fn a_server_that_keeps_stalling_is_a_timeout_error() {
    let f = fixture();
    let p = proxy(
        f.server.addr,
        Faults {
            stall_at: Some((
                payload_offset(&f.package) + 30_000,
                Duration::from_secs(1),
                u32::MAX,
            )),
            ..Faults::default()
        },
    );
    let (http, ota) = quick();
    let (result, device) = flash(
        f.dir.path(),
        &f.key,
        &url(p.addr, "update.vfp"),
        &http,
        ota.with_max_resumes(2),
    );
    let err = result.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert_eq!(err.code(), 53);
    assert_eq!(active_slot(&device), Some(Slot::A));
}

#[test]
fn a_package_replaced_on_the_server_mid_download_is_refused() {
    let f = fixture();
    let served = f.dir.path().join("www/update.vfp");
    let newer = small_package(&f.key, 7, 6);
    let cut = payload_offset(&f.package) + 50_000;
    let replace = {
        let served = served.clone();
        let newer = newer.clone();
        // Requests 1-3 fetch the prefix, 4 the payload (cut part way): replace the file before
        // the resume, with another modification time.
        Box::new(move |n: u32| {
            if n == 5 {
                std::fs::write(&served, &newer).unwrap();
                let file = std::fs::File::options().write(true).open(&served).unwrap();
                file.set_modified(SystemTime::now() + Duration::from_secs(3600))
                    .unwrap();
            }
        })
    };
    let p = proxy(
        f.server.addr,
        Faults {
            cut_at: Some(cut),
            on_request: Some(replace),
            ..Faults::default()
        },
    );
    let (http, ota) = quick();
    let out = f.dir.path().join("update.vfp");
    let err = fetch(&f.key, &url(p.addr, "update.vfp"), &out, &http, ota).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::SourceChanged, "{err}");
    assert_eq!(err.code(), 55);
    assert!(!out.exists());
    assert!(p.requests.load(Ordering::SeqCst) >= 5);
}

#[test]
fn a_server_that_ignores_range_still_gives_a_verified_package() {
    let f = fixture();
    let p = proxy(
        f.server.addr,
        Faults {
            ignore_range: true,
            ..Faults::default()
        },
    );
    let (http, ota) = quick();
    let out = f.dir.path().join("update.vfp");
    fetch(&f.key, &url(p.addr, "update.vfp"), &out, &http, ota).unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), f.package);
}

#[test]
fn a_partial_download_resumes_from_its_state_file_in_a_later_run() {
    let f = fixture();
    let p = proxy(
        f.server.addr,
        Faults {
            cut_at: Some(payload_offset(&f.package) + 100_000),
            ..Faults::default()
        },
    );
    let (http, ota) = quick();
    let out = f.dir.path().join("update.vfp");
    // First run: no resumes allowed, so the cut ends it.
    let err = fetch(
        &f.key,
        &url(p.addr, "update.vfp"),
        &out,
        &http,
        ota.with_max_resumes(0),
    )
    .unwrap_err();
    // A connection broken for good is the server's failure (54), retryable.
    assert_eq!(err.kind(), ErrorKind::ServerError, "{err}");
    assert!(!out.exists());
    let state = std::fs::read_to_string(f.dir.path().join("update.vfp.partial.state")).unwrap();
    assert!(state.starts_with("veriflash-partial 1\n"), "{state}");
    // Second run: only the chunks the first did not verify are fetched.
    let stats = fetch(&f.key, &url(p.addr, "update.vfp"), &out, &http, ota).unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), f.package);
    assert!(stats.bytes_reused >= 90_000, "{stats:?}");
    let payload = f.package.len() as u64 - payload_offset(&f.package);
    assert_eq!(stats.bytes_fetched + stats.bytes_reused, payload);
}

#[test]
fn a_download_that_does_not_fit_is_refused_before_the_payload() {
    let f = fixture();
    let p = proxy(f.server.addr, Faults::default());
    let (http, ota) = quick();
    let out = f.dir.path().join("update.vfp");
    let err = fetch(
        &f.key,
        &url(p.addr, "update.vfp"),
        &out,
        &http,
        ota.with_staging_quota(1000),
    )
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InsufficientStorage, "{err}");
    assert_eq!(err.code(), 44);
    // Only the prefix was served.
    assert!(p.served.load(Ordering::SeqCst) < payload_offset(&f.package) + 64);
}

#[test]
fn a_tampered_manifest_is_refused_before_any_payload_is_requested() {
    let f = fixture();
    let p = proxy(
        f.server.addr,
        Faults {
            flip_at: Some((40, u32::MAX)),
            ..Faults::default()
        },
    );
    let (http, ota) = quick();
    let (result, device) = flash(f.dir.path(), &f.key, &url(p.addr, "update.vfp"), &http, ota);
    let err = result.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotAuthentic, "{err}");
    assert_eq!(err.code(), 20);
    assert_eq!(active_slot(&device), Some(Slot::A));
    assert!(p.served.load(Ordering::SeqCst) < payload_offset(&f.package) + 64);
}

/// A server on 127.0.0.1 that answers every request with `status` and `body` (XML), counting
/// the requests and keeping the last one's head.
struct StatusServer {
    addr: SocketAddr,
    requests: Arc<AtomicU32>,
    last_head: Arc<Mutex<Vec<String>>>,
}

fn status_server(status: &'static str, body: &'static str) -> StatusServer {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let requests = Arc::new(AtomicU32::new(0));
    let last_head = Arc::new(Mutex::new(Vec::new()));
    let (counted, kept) = (Arc::clone(&requests), Arc::clone(&last_head));
    std::thread::spawn(move || {
        for connection in listener.incoming() {
            let Ok(mut connection) = connection else {
                return;
            };
            let Ok(head) = read_head(&mut BufReader::new(connection.try_clone().unwrap())) else {
                continue;
            };
            counted.fetch_add(1, Ordering::SeqCst);
            *kept.lock().unwrap() = head;
            let _ = connection.write_all(
                format!(
                    "HTTP/1.1 {status}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            );
        }
    });
    StatusServer {
        addr,
        requests,
        last_head,
    }
}

#[test]
fn error_statuses_are_classified_quoted_redacted_and_not_retried_when_permanent() {
    let f = fixture();
    let (http, ota) = quick();
    let out = f.dir.path().join("x.vfp");
    let expired = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>";
    let denied = "<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>";
    let missing =
        "<Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message></Error>";
    for (status, body, kind, code, said) in [
        (
            "404 Not Found",
            missing,
            ErrorKind::PackageNotFound,
            63,
            "NoSuchKey: The specified key does not exist.",
        ),
        ("410 Gone", "", ErrorKind::PackageNotFound, 63, ""),
        (
            "403 Forbidden",
            denied,
            ErrorKind::AccessRefused,
            64,
            "AccessDenied: Access Denied",
        ),
        ("401 Unauthorized", "", ErrorKind::AccessRefused, 64, ""),
        (
            "403 Forbidden",
            expired,
            ErrorKind::UrlExpired,
            65,
            "AccessDenied: Request has expired",
        ),
    ] {
        let server = status_server(status, body);
        let secret = "X-Amz-Signature=0123456789abcdef";
        let err = fetch(
            &f.key,
            &format!(
                "http://user:hunter2@{}/update.vfp?{secret}&X-Amz-Credential=AKIA",
                server.addr
            ),
            &out,
            &http,
            ota,
        )
        .unwrap_err();
        assert_eq!((err.kind(), err.code()), (kind, code), "{status}: {err}");
        // One request: another attempt cannot help.
        assert_eq!(server.requests.load(Ordering::SeqCst), 1, "{status}");
        let message = err.message();
        assert!(message.contains(said), "{status}: {message}");
        assert!(message.contains("X-Amz-Signature=REDACTED"), "{message}");
        for leak in ["0123456789abcdef", "hunter2", "AKIA"] {
            assert!(!message.contains(leak), "{status} leaks {leak}: {message}");
        }
        assert!(!out.exists());
        // Servers can tell veriflash and its version from the request.
        let head = server.last_head.lock().unwrap().join("\n");
        assert!(
            head.to_ascii_lowercase().contains(&format!(
                "user-agent: veriflash/{}",
                env!("CARGO_PKG_VERSION")
            )),
            "{head}"
        );
    }

    // A URL whose own expiry has passed is expired, whatever the 403 body says.
    let server = status_server("403 Forbidden", "");
    let err = fetch(
        &f.key,
        &format!(
            "http://{}/update.vfp?X-Amz-Date=20200101T000000Z&X-Amz-Expires=60&X-Amz-Signature=s",
            server.addr
        ),
        &out,
        &http,
        ota,
    )
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::UrlExpired, "{err}");

    // A server error is worth retrying: every resume is used, then the error stays 54.
    let server = status_server("503 Service Unavailable", "");
    let err = fetch(
        &f.key,
        &url(server.addr, "update.vfp"),
        &out,
        &http,
        ota.with_max_resumes(2),
    )
    .unwrap_err();
    assert_eq!(
        (err.kind(), err.code()),
        (ErrorKind::ServerError, 54),
        "{err}"
    );
    assert_eq!(server.requests.load(Ordering::SeqCst), 3);
}

#[test]
fn a_missing_package_is_not_found() {
    let f = fixture();
    let (http, ota) = quick();
    let out = f.dir.path().join("x.vfp");
    let err = fetch(
        &f.key,
        &url(f.server.addr, "missing.vfp"),
        &out,
        &http,
        ota.with_max_resumes(1),
    )
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PackageNotFound, "{err}");
    assert_eq!(err.code(), 63);
}

#[test]
fn a_pushed_stream_is_verified_but_cannot_repair_a_bad_chunk() {
    let key = SigningKey::generate_p256().unwrap();
    let package = small_package(&key, 3, 5);
    let anchors = trust(&key);
    let verifier = Verifier::new(&anchors);
    let remote = RemotePackage::open(
        PushedSource::new(std::io::Cursor::new(package.clone())),
        &verifier,
        OtaOptions::new(),
    )
    .unwrap();
    let mut out = Vec::new();
    remote
        .stream(false, |_, chunk| {
            out.extend_from_slice(chunk.bytes());
            Ok(())
        })
        .unwrap();
    assert_eq!(out, package[payload_offset(&package) as usize..]);

    let mut bad = package.clone();
    let at = payload_offset(&package) as usize + 9000;
    bad[at] ^= 0x80;
    let remote = RemotePackage::open(
        PushedSource::new(std::io::Cursor::new(bad)),
        &verifier,
        OtaOptions::new(),
    )
    .unwrap();
    let mut out = Vec::new();
    let err = remote
        .stream(false, |_, chunk| {
            out.extend_from_slice(chunk.bytes());
            Ok(())
        })
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::IntegrityMismatch);
    // Only the chunks before the bad one came out (two 4 KiB chunks of boot).
    assert_eq!(out.len(), 8192);
}

#[test]
fn a_local_file_source_verifies_the_same_way() {
    let f = fixture();
    let anchors = trust(&f.key);
    let verifier = Verifier::new(&anchors);
    let source = FileSource::open(&f.dir.path().join("www/update.vfp")).unwrap();
    let remote = RemotePackage::open(source, &verifier, OtaOptions::new()).unwrap();
    let out = f.dir.path().join("copy.vfp");
    remote.fetch_to_file(&out, &verifier, &mut |_| {}).unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), f.package);
}

/// Writes a file as fast as the disk takes it: 1 MiB of pseudo-random bytes, varied per MiB.
fn big_image(path: &Path, mib: u64, seed: u64) {
    let block = pseudo_random(1 << 20, seed);
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut copy = block.clone();
    for i in 0..mib {
        copy[..8].copy_from_slice(&i.to_le_bytes());
        file.write_all(&copy).unwrap();
    }
    file.flush().unwrap();
}

#[test]
fn a_256_mib_package_with_one_flipped_byte_costs_at_most_one_extra_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::generate_p256().unwrap();
    big_image(&dir.path().join("a.img"), 128, 11);
    big_image(&dir.path().join("b.img"), 128, 12);
    let images = vec![
        ImageSource::new("a", "a", ImageData::File(dir.path().join("a.img"))),
        ImageSource::new("b", "b", ImageData::File(dir.path().join("b.img"))),
    ];
    std::fs::create_dir(dir.path().join("www")).unwrap();
    let served_path = dir.path().join("www/big.vfp");
    let unsigned = UnsignedPackage::prepare(spec(images, 1)).unwrap();
    let len = unsigned.write_signed(&[&key], &served_path).unwrap();
    std::fs::remove_file(dir.path().join("a.img")).unwrap();
    std::fs::remove_file(dir.path().join("b.img")).unwrap();
    assert!(len > 256 << 20);

    let server = serve(&dir.path().join("www"));
    let p = proxy(
        server.addr,
        Faults {
            flip_at: Some((len / 2 + 12_345, 1)),
            ..Faults::default()
        },
    );
    let (http, ota) = quick();
    let http = http.with_read_timeout(Duration::from_secs(10));
    let out = dir.path().join("big.vfp");
    let stats = fetch(&key, &url(p.addr, "big.vfp"), &out, &http, ota).unwrap();
    assert_eq!(stats.repairs, 1);
    let served = p.served.load(Ordering::SeqCst);
    let chunk = 1u64 << 20;
    // The whole package once, plus the prefix fetched in small ranges, plus the one chunk.
    assert!(served >= len + chunk, "served {served}, package {len}");
    assert!(
        served <= len + chunk + 64 * 1024,
        "served {served}, package {len}"
    );
    assert_eq!(std::fs::metadata(&out).unwrap().len(), len);
}

#[test]
fn https_with_a_ca_made_by_openssl_and_refused_without_it() {
    let f = fixture();
    let pki = f.dir.path().join("pki");
    std::fs::create_dir(&pki).unwrap();
    let run = |args: &[&str]| {
        let status = std::process::Command::new("openssl")
            .args(args)
            .current_dir(&pki)
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "openssl {args:?}");
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=veriflash test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign",
    ]);
    run(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(
        pki.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
    let server = serve_tls(
        &f.dir.path().join("www"),
        &pki.join("server.pem"),
        &pki.join("server.key"),
    );
    let https = format!("https://127.0.0.1:{}/update.vfp", server.addr.port());
    let (http, ota) = quick();
    let http = http.with_read_timeout(Duration::from_secs(5));

    let with_ca = http
        .clone()
        .with_ca_pem(&std::fs::read(pki.join("ca.pem")).unwrap())
        .unwrap();
    let out = f.dir.path().join("tls.vfp");
    fetch(&f.key, &https, &out, &with_ca, ota).unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), f.package);

    // Mozilla's roots do not include the test CA.
    let out = f.dir.path().join("untrusted.vfp");
    let err = fetch(&f.key, &https, &out, &http, ota.with_max_resumes(0)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TlsError, "{err}");
    assert_eq!(err.code(), 56);
    assert!(!out.exists());
}

#[test]
fn a_streaming_install_resumes_a_cut_connection_underneath() {
    let f = fixture();
    let p = proxy(
        f.server.addr,
        Faults {
            cut_at: Some(payload_offset(&f.package) + 60_000),
            ..Faults::default()
        },
    );
    let (http, ota) = quick();
    let (result, device) = flash(f.dir.path(), &f.key, &url(p.addr, "update.vfp"), &http, ota);
    result.unwrap();
    assert_eq!(active_slot(&device), Some(Slot::B));
}

#[test]
fn a_state_file_for_another_package_or_garbage_starts_over() {
    let f = fixture();
    let (http, ota) = quick();
    let out = f.dir.path().join("update.vfp");
    std::fs::write(f.dir.path().join("update.vfp.partial"), vec![0xAA; 5000]).unwrap();
    std::fs::write(
        f.dir.path().join("update.vfp.partial.state"),
        "veriflash-partial 1\npackage 00\nlength 1\nchunks 1\ndone ff\n",
    )
    .unwrap();
    let stats = fetch(&f.key, &url(f.server.addr, "update.vfp"), &out, &http, ota).unwrap();
    assert_eq!(stats.bytes_reused, 0);
    assert_eq!(std::fs::read(&out).unwrap(), f.package);
}

// ---------------------------------------------------------------------------------------------
// Low-speed limit and deadline: servers that trickle or stall, measured against short limits
// (1 KiB/s over 1 s, a 2 s deadline) with margins of 4x or more either way.

/// Options with the low-speed limit at 1 KiB/s over 1 s.
fn slow_limits() -> (HttpOptions, OtaOptions) {
    let (http, ota) = quick();
    (http.with_low_speed_limit(1024, Duration::from_secs(1)), ota)
}

fn trickle(from: u64, piece: usize, pause_ms: u64, connections: u32) -> Faults {
    Faults {
        trickle: Some(Trickle {
            from,
            piece,
            pause: Duration::from_millis(pause_ms),
            connections,
        }),
        ..Faults::default()
    }
}

#[test]
fn a_server_trickling_below_the_low_speed_limit_is_a_timeout() {
    let f = fixture();
    // One byte every 200 ms: 5 bytes/s, against a limit of 1 KiB/s. Without the limit each
    // read returns well within the read timeout and the download would take hours.
    let p = proxy(
        f.server.addr,
        trickle(payload_offset(&f.package), 1, 200, u32::MAX),
    );
    let (http, ota) = slow_limits();
    let out = f.dir.path().join("update.vfp");
    let err = fetch(
        &f.key,
        &url(p.addr, "update.vfp"),
        &out,
        &http,
        ota.without_deadline().with_max_resumes(1),
    )
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert_eq!(err.code(), 53);
    assert!(err.message().contains("low-speed limit"), "{err}");
    assert!(!out.exists());
    // Two attempts (one resume), each given up after its window.
    assert_eq!(p.requests.load(Ordering::SeqCst), 3 + 2);
}

#[test]
fn a_server_that_stalls_after_its_headers_is_a_timeout_within_the_low_speed_window() {
    let f = fixture();
    let p = proxy(
        f.server.addr,
        Faults {
            stall_at: Some((
                payload_offset(&f.package),
                Duration::from_secs(30),
                u32::MAX,
            )),
            ..Faults::default()
        },
    );
    // The read timeout alone would wait a minute per attempt: the 1 s window ends it.
    let (http, ota) = slow_limits();
    let http = http.with_read_timeout(Duration::from_secs(60));
    let (result, device) = flash(
        f.dir.path(),
        &f.key,
        &url(p.addr, "update.vfp"),
        &http,
        ota.without_deadline().with_max_resumes(1),
    );
    let err = result.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert!(err.message().contains("low-speed limit"), "{err}");
    assert_eq!(active_slot(&device), Some(Slot::A));
}

#[test]
fn a_server_trickling_above_the_low_speed_limit_completes() {
    let f = fixture();
    // 8 KiB every 100 ms: 80 KiB/s against a limit of 1 KiB/s.
    let p = proxy(
        f.server.addr,
        trickle(payload_offset(&f.package), 8192, 100, u32::MAX),
    );
    let (http, ota) = slow_limits();
    let out = f.dir.path().join("update.vfp");
    let stats = fetch(&f.key, &url(p.addr, "update.vfp"), &out, &http, ota).unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), f.package);
    assert_eq!(stats.resumes, 0, "{stats:?}");
}

#[test]
fn a_download_still_moving_at_its_deadline_is_deadline_exceeded_and_resumes_later() {
    let f = fixture();
    // 4 KiB every 250 ms: 16 KiB/s, well above the low-speed limit, but the 140 KB payload
    // needs over 8 s and the deadline is 2 s.
    let p = proxy(
        f.server.addr,
        trickle(payload_offset(&f.package), 4096, 250, u32::MAX),
    );
    let (http, ota) = slow_limits();
    let out = f.dir.path().join("update.vfp");
    let err = fetch(
        &f.key,
        &url(p.addr, "update.vfp"),
        &out,
        &http,
        ota.with_deadline(Duration::from_secs(2)),
    )
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DeadlineExceeded, "{err}");
    assert_eq!(err.code(), 62);
    assert!(err.message().contains("deadline of 2 s"), "{err}");
    assert!(!out.exists());
    assert!(f.dir.path().join("update.vfp.partial.state").exists());
    // What arrived before the deadline is kept: the next run fetches only the rest.
    let (http, ota) = quick();
    let stats = fetch(&f.key, &url(f.server.addr, "update.vfp"), &out, &http, ota).unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), f.package);
    assert!(stats.bytes_reused > 0, "{stats:?}");
}

#[test]
fn a_low_speed_timeout_is_followed_by_a_resume_that_completes() {
    let f = fixture();
    // The first payload connection trickles one byte every 200 ms; the server then recovers.
    let p = proxy(
        f.server.addr,
        trickle(payload_offset(&f.package), 1, 200, 1),
    );
    let (http, ota) = slow_limits();
    let out = f.dir.path().join("update.vfp");
    let stats = fetch(&f.key, &url(p.addr, "update.vfp"), &out, &http, ota).unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), f.package);
    assert_eq!(stats.resumes, 1, "{stats:?}");

    // And a streaming install through the same kind of server commits.
    let p = proxy(
        f.server.addr,
        trickle(payload_offset(&f.package), 1, 200, 1),
    );
    let (result, device) = flash(f.dir.path(), &f.key, &url(p.addr, "update.vfp"), &http, ota);
    result.unwrap();
    assert_eq!(active_slot(&device), Some(Slot::B));
}

#[test]
fn a_deadline_that_has_passed_ends_the_download_before_any_request() {
    let f = fixture();
    let anchors = trust(&f.key);
    let verifier = Verifier::new(&anchors);
    let source = FileSource::open(&f.dir.path().join("www/update.vfp")).unwrap();
    let err = RemotePackage::open(
        source,
        &verifier,
        OtaOptions::new().with_deadline(Duration::ZERO),
    )
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DeadlineExceeded, "{err}");
}

// ---------------------------------------------------------------------------------------------
// One output, one run at a time; outputs that are not files.

#[test]
fn a_second_fetch_to_the_same_file_is_busy_while_the_first_completes() {
    let f = fixture();
    let (entered_tx, entered_rx) = std::sync::mpsc::channel();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    // Requests 1-3 fetch the prefix; the first run's payload request (4) waits for the test.
    let hold = Box::new(move |n: u32| {
        if n == 4 {
            entered_tx.send(()).unwrap();
            go_rx.recv().unwrap();
        }
    });
    let p = proxy(
        f.server.addr,
        Faults {
            on_request: Some(hold),
            ..Faults::default()
        },
    );
    let out = f.dir.path().join("update.vfp");
    let first = {
        let key = SigningKey::from_pkcs8_der(&f.key.to_pkcs8_der().unwrap()).unwrap();
        let (url, out) = (url(p.addr, "update.vfp"), out.clone());
        // No time limit of ours may end the first run while the test holds it.
        let http = HttpOptions::new()
            .with_read_timeout(Duration::from_secs(120))
            .without_low_speed_limit();
        std::thread::spawn(move || fetch(&key, &url, &out, &http, OtaOptions::new()))
    };
    // The first run holds out.partial (locked before its first payload request).
    entered_rx.recv().unwrap();
    let (http, ota) = quick();
    let err = fetch(&f.key, &url(f.server.addr, "update.vfp"), &out, &http, ota).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Busy, "{err}");
    assert_eq!(err.code(), 57);
    assert!(err.message().contains("update.vfp.partial"), "{err}");
    assert!(err.message().contains("another run"), "{err}");
    assert!(!out.exists());

    go_tx.send(()).unwrap();
    let stats = first.join().unwrap().unwrap();
    assert_eq!(stats.resumes, 0);
    assert_eq!(std::fs::read(&out).unwrap(), f.package);
    assert!(!f.dir.path().join("update.vfp.partial").exists());
    assert!(!f.dir.path().join("update.vfp.partial.state").exists());
    // The lock went with the first run: a third run may download to the same file again.
    let (http, ota) = quick();
    fetch(&f.key, &url(f.server.addr, "update.vfp"), &out, &http, ota).unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), f.package);
}

#[test]
fn fetch_refuses_an_output_that_is_a_symlink_or_a_fifo_before_the_payload() {
    let f = fixture();
    let p = proxy(f.server.addr, Faults::default());
    let (http, ota) = quick();
    let target = f.dir.path().join("precious");
    std::fs::write(&target, b"keep me").unwrap();
    let link = f.dir.path().join("link.vfp");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let fifo = f.dir.path().join("fifo.vfp");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(status.success());
    for out in [&link, &fifo, &f.dir.path().join("www")] {
        let err = fetch(&f.key, &url(p.addr, "update.vfp"), out, &http, ota).unwrap_err();
        assert_eq!(
            err.kind(),
            ErrorKind::InvalidInput,
            "{}: {err}",
            out.display()
        );
        assert!(!Path::new(&format!("{}.partial", out.display())).exists());
    }
    // Only prefixes were served, and nothing was written through the link.
    assert!(p.served.load(Ordering::SeqCst) < 3 * (payload_offset(&f.package) + 64));
    assert_eq!(std::fs::read(&target).unwrap(), b"keep me");
    assert!(std::fs::symlink_metadata(&link).unwrap().is_symlink());
    assert!(
        std::fs::symlink_metadata(&fifo)
            .unwrap()
            .file_type()
            .is_fifo()
    );
}
