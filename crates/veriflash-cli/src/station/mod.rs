//! `veriflash station`: a flashing station for technicians — a local web page with the
//! package, every connected modem as it appears and disappears, each one's progress and
//! result, and the session's history.
//!
//! It is a frontend on `veriflash_core::Updater`, like `flash`: the package is read into memory
//! and verified once at start (signatures, every chunk, every whole image), and those verified
//! bytes are what every install streams (each install checks them again on their way to the
//! device, as the updater always does); the file is never read again, so replacing it on disk
//! changes nothing, and the page has no way to send another. Devices are flashed by the
//! updater's factory line (`Updater::install_all`), one device or many at once; their events
//! are the CLI's `--json` event lines (`crate::events::EventLines`), sent to the page as
//! Server-Sent Events.
//!
//! The page is served on loopback by default, and every request — the page, its script, the
//! event stream, the buttons — needs the random token of the URL the station prints; requests
//! another origin makes are refused (see [`http`]).

mod discovery;
mod http;
mod state;

use std::io::Read as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use veriflash_core::{AnchorSet, Error, ErrorKind, PackageSource, Updater};

use crate::output::Failure;
use crate::verify::TrustOptions;

pub(crate) use state::Station;

/// The largest package the station holds in memory (it keeps the verified bytes, never the
/// file).
pub(crate) const MAX_PACKAGE_LEN: u64 = 4 << 30;

/// How `veriflash station` was asked to run.
#[derive(Debug)]
pub(crate) struct StationArgs<'a> {
    pub(crate) package: &'a Path,
    pub(crate) trust: &'a Path,
    pub(crate) trust_options: &'a TrustOptions,
    pub(crate) listen: Option<&'a str>,
    pub(crate) auto: bool,
    pub(crate) targets: &'a [String],
    pub(crate) allow_partition_table: bool,
    pub(crate) sysfs: Option<&'a Path>,
}

/// Where the page is served: `127.0.0.1` on a free port unless `--listen` names an address.
///
/// A loopback address is served as asked. Any other must be one IP address of this computer,
/// named: never a host name (which may resolve to anything) and never every interface at once
/// (`0.0.0.0`, `[::]`), so a station reachable from the network is always one a person chose.
///
/// # Errors
/// [`ErrorKind::InvalidInput`] for a name, a wildcard or something that is no `IP:PORT`.
pub(crate) fn listen_address(listen: Option<&str>) -> Result<SocketAddr, Error> {
    let Some(text) = listen else {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0));
    };
    let addr: SocketAddr = text.parse().map_err(|_| {
        Error::new(
            ErrorKind::InvalidInput,
            format!(
                "--listen {text}: give an IP address and a port (127.0.0.1:8080, [::1]:8080, or one address of this computer), not a host name"
            ),
        )
    })?;
    if addr.ip().is_unspecified() {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "--listen {text}: refusing to serve the station on every interface; name the one address it should be reachable at"
            ),
        ));
    }
    Ok(addr)
}

/// A fresh access token: 32 bytes from the operating system's CSPRNG, in hex.
///
/// # Errors
/// [`ErrorKind::ResourceExhausted`] when the system has no randomness to give.
pub(crate) fn new_token() -> Result<String, Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| {
        Error::new(
            ErrorKind::ResourceExhausted,
            format!("no randomness for the access token: {e}"),
        )
    })?;
    Ok(veriflash_core::package::hex(&bytes))
}

/// Reads the package file once, whole, refusing one larger than [`MAX_PACKAGE_LEN`].
fn read_package(path: &Path) -> Result<Arc<[u8]>, Error> {
    let io = |e: std::io::Error| Error::new(ErrorKind::Io, format!("{}: {e}", path.display()));
    let file = std::fs::File::open(path).map_err(io)?;
    let mut bytes = Vec::new();
    file.take(MAX_PACKAGE_LEN + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > MAX_PACKAGE_LEN {
        return Err(Error::new(
            ErrorKind::ResourceExhausted,
            format!(
                "{}: larger than the {} GiB a station holds in memory",
                path.display(),
                MAX_PACKAGE_LEN >> 30
            ),
        ));
    }
    Ok(bytes.into())
}

/// The package as an updater source: the verified bytes in memory, read once per install.
pub(crate) fn source(bytes: &Arc<[u8]>) -> PackageSource {
    PackageSource::Stream(Box::new(std::io::Cursor::new(Arc::clone(bytes))))
}

/// Runs the station until interrupted.
pub(crate) fn run(args: &StationArgs<'_>) -> Result<(), Failure> {
    let fail = |e: Error| Failure::text(e);
    let listen = listen_address(args.listen).map_err(fail)?;
    let anchors = AnchorSet::load(args.trust).map_err(fail)?;
    let trust = crate::verify::trust(anchors, args.trust_options);
    let bytes = read_package(args.package).map_err(fail)?;
    let report = Updater::builder(source(&bytes), trust.clone())
        .check_whole_image(true)
        .build()
        .and_then(|mut updater| updater.verify())
        .map_err(fail)?;
    let token = new_token().map_err(fail)?;
    let station = Arc::new(Station::new(state::Setup {
        bytes,
        report,
        trust,
        auto: args.auto,
        targets: args.targets.to_vec(),
        allow_partition_table: args.allow_partition_table,
        sysfs: args.sysfs.map(PathBuf::from),
    }));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("veriflash-station")
        .enable_all()
        .build()
        .map_err(|e| {
            fail(Error::new(
                ErrorKind::ResourceExhausted,
                format!("no runtime for the station's server: {e}"),
            ))
        })?;
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(listen))
        .and_then(|l| Ok((l.local_addr()?, l)))
        .map_err(|e| {
            fail(Error::new(
                ErrorKind::Io,
                format!("cannot listen on {listen}: {e}"),
            ))
        });
    let (addr, listener) = listener?;
    if !addr.ip().is_loopback() {
        eprintln!(
            "warning: the station is reachable from the network at {addr}; anyone with the URL below can flash the devices of this computer"
        );
    }
    println!("http://{addr}/?token={token}");
    eprintln!(
        "station: {} {} (package {}), open the URL above; Ctrl-C stops",
        station.product(),
        station.version(),
        station.package_id()
    );
    discovery::start(&station);
    crate::signals::stop_on_interrupt(Arc::clone(&station));
    let app = http::router(Arc::clone(&station), addr, token);
    runtime
        .block_on(async move { axum::serve(listener, app).await })
        .map_err(|e| {
            fail(Error::new(
                ErrorKind::Io,
                format!("the station's server: {e}"),
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_loopback_and_wildcards_and_names_are_refused() {
        let default = listen_address(None).unwrap();
        assert!(default.ip().is_loopback());
        assert_eq!(default.port(), 0);
        for refused in [
            "0.0.0.0:8080",
            "[::]:8080",
            "localhost:8080",
            "example.org:80",
            "8080",
        ] {
            let err = listen_address(Some(refused)).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidInput, "{refused}");
        }
        // Named explicitly, an address of the network is served (with a warning at start).
        assert_eq!(
            listen_address(Some("192.0.2.7:8080")).unwrap(),
            "192.0.2.7:8080".parse::<SocketAddr>().unwrap()
        );
        assert!(listen_address(Some("[::1]:9")).unwrap().ip().is_loopback());
    }

    #[test]
    fn tokens_are_64_hex_digits_and_differ() {
        let a = new_token().unwrap();
        let b = new_token().unwrap();
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
