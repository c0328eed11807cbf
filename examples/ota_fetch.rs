//! Download a package over HTTP(S), verifying it as it arrives, resuming a broken connection
//! and re-fetching a corrupted chunk.
//!
//! ```sh
//! cargo run --example ota_fetch --features http                        # self-contained demo
//! cargo run --example ota_fetch --features http -- URL KEY.pub.pem OUT  # a real server
//! ```
//!
//! Without arguments it makes a key and an 8 MiB package, serves it on 127.0.0.1 from a tiny
//! `std::net` HTTP server that honours `Range` — and misbehaves on purpose: it cuts the first
//! payload answer half way and flips one byte in the second — then downloads it with
//! `veriflash::core::ota::RemotePackage`:
//!
//! 1. `RemotePackage::open` fetches only the header, manifest and signature block (HTTP
//!    `Range`) and verifies the signatures: an unauthentic package is refused before any
//!    payload byte is asked for. Policy (is it for this device? not a downgrade?) can be
//!    applied to `remote.manifest()` at this point.
//! 2. `fetch_to_file` stages the payload in `OUT.partial`, checking each chunk against its
//!    signed digest as it arrives; a broken connection resumes after the last verified chunk,
//!    a corrupted chunk is fetched again alone, and the verified-chunk bitmap in
//!    `OUT.partial.state` lets a later run resume. `OUT` appears only once all of it verified.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use veriflash::core::format::SignatureBlock;
use veriflash::core::http::{HttpOptions, HttpSource};
use veriflash::core::ota::{OtaOptions, RemotePackage};
use veriflash::core::{ImageData, ImageSource, PackageSpec, UnsignedPackage};
use veriflash::sig::{PinnedKeys, SigningKey, Verifier};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = tempfile::tempdir()?;
    let (url, trust, out) = match args.as_slice() {
        [url, trust, out] => (
            url.clone(),
            veriflash::core::trust::load_trust_anchors(Path::new(trust))?,
            PathBuf::from(out),
        ),
        [] => {
            let (package, trust) = make_package()?;
            let url = serve(package)?;
            (url, trust, dir.path().join("update.vfp"))
        }
        _ => return Err("usage: ota_fetch [URL KEY.pub.pem OUT]".into()),
    };
    let verifier = Verifier::new(&trust);

    // 1. Prefix only: header, manifest, signatures — verified before any payload request.
    let source = HttpSource::new(&url, &HttpOptions::new())?;
    let remote = RemotePackage::open(source, &verifier, OtaOptions::new())?;
    let manifest = remote.manifest().manifest();
    println!(
        "{url}: {} {} for {} (security version {}), {} bytes, signatures verified",
        manifest.product,
        manifest.software_version,
        manifest.chipset,
        manifest.security_version,
        remote.package_len()
    );

    // 2. The payload, chunk by verified chunk, into OUT.partial, then renamed to OUT.
    let mut shown = 0;
    let (report, stats) = remote.fetch_to_file(&out, &verifier, &mut |progress| {
        let percent = progress
            .done
            .saturating_mul(100)
            .checked_div(progress.total)
            .unwrap_or(100);
        if percent >= shown {
            println!(
                "  {percent:>3}%  {} / {} KiB  (resumes {}, repaired chunks {})",
                progress.done / 1024,
                progress.total / 1024,
                progress.stats.resumes,
                progress.stats.repairs
            );
            shown = percent + 25;
        }
    })?;
    println!(
        "verified {} images into {}: {} payload bytes fetched, {} resume(s), {} chunk(s) repaired",
        report.images.len(),
        out.display(),
        stats.bytes_fetched,
        stats.resumes,
        stats.repairs
    );
    Ok(())
}

/// A signed 8 MiB package in memory, and the trust store that accepts it.
fn make_package() -> Result<(Vec<u8>, PinnedKeys), Box<dyn std::error::Error>> {
    let key = SigningKey::generate_p256()?;
    let rootfs: Vec<u8> = (0..=250u8).cycle().take(8 << 20).collect();
    let mut image = ImageSource::new("rootfs", "system", ImageData::Bytes(rootfs));
    image.chunk_size = 256 * 1024;
    let unsigned = UnsignedPackage::prepare(PackageSpec {
        product: "acme-hotspot-x1".into(),
        chipset: "mdm9607".into(),
        hardware_revisions: vec![],
        software_version: "2.4.0".into(),
        security_version: 7,
        images: vec![image],
    })?;
    let signatures = SignatureBlock {
        entries: vec![unsigned.sign(&key)?],
    };
    let mut package = Vec::new();
    unsigned.write_to(&signatures, &mut package)?;
    let mut trust = PinnedKeys::new();
    trust.add(key.verifying_key());
    Ok((package, trust))
}

/// Serves `package` on a loopback port (one thread per connection, `Connection: close`) and
/// returns its URL. The first answer that carries payload bytes is cut half way, the second
/// has one byte flipped.
fn serve(package: Vec<u8>) -> std::io::Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let url = format!("http://{}/update.vfp", listener.local_addr()?);
    // The payload starts `payload_len` (header bytes 24..32, big-endian) before the end.
    let payload_len = package
        .get(24..32)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map_or(0, u64::from_be_bytes);
    let payload_start = u64::try_from(package.len()).unwrap_or(u64::MAX) - payload_len;
    let package = Arc::new(package);
    let payload_answers = Arc::new(AtomicU32::new(0));
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let package = Arc::clone(&package);
            let payload_answers = Arc::clone(&payload_answers);
            std::thread::spawn(move || {
                let _ = answer(stream, &package, payload_start, &payload_answers);
            });
        }
    });
    Ok(url)
}

/// Answers one request: 206 with the asked range (or 200 with everything without `Range`).
fn answer(
    stream: TcpStream,
    package: &[u8],
    payload_start: u64,
    payload_answers: &AtomicU32,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut range = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
        if let Some(value) = line.to_ascii_lowercase().strip_prefix("range: bytes=") {
            let (start, end) = value.trim().split_once('-').unwrap_or(("0", ""));
            range = Some((start.parse::<u64>().unwrap_or(0), end.parse::<u64>().ok()));
        }
    }
    let total = u64::try_from(package.len()).unwrap_or(u64::MAX);
    let (start, end) = match range {
        Some((start, end)) => (start, end.map_or(total, |e| (e + 1).min(total))),
        None => (0, total),
    };
    let body = package
        .get(usize::try_from(start).unwrap_or(usize::MAX)..usize::try_from(end).unwrap_or(0))
        .unwrap_or_default();
    let mut out = stream;
    let status = if range.is_some() {
        format!(
            "206 Partial Content\r\nContent-Range: bytes {start}-{}/{total}",
            end.saturating_sub(1)
        )
    } else {
        "200 OK".to_owned()
    };
    write!(
        out,
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nETag: \"v1\"\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    // Misbehave on the first two answers that carry payload bytes.
    if start >= payload_start && body.len() > 4096 {
        match payload_answers.fetch_add(1, Ordering::SeqCst) {
            0 => return out.write_all(body.get(..body.len() / 2).unwrap_or_default()),
            1 => {
                let mut flipped = body.to_vec();
                if let Some(byte) = flipped.get_mut(body.len() / 2) {
                    *byte ^= 0x01;
                }
                return out.write_all(&flipped);
            }
            _ => {}
        }
    }
    out.write_all(body)?;
    // Let the client read everything before the socket closes.
    let _ = reader.read(&mut [0; 1]);
    Ok(())
}
