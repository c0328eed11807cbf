//! [`HttpSource`]: package ranges over HTTP(S) with `ureq` (rustls, ring, webpki-roots).
//!
//! Every request carries a `Range`; from the second one on also `If-Range` with the validator
//! (ETag, else Last-Modified) of the first answer. Each answer's validator and total length are
//! compared with the first one's, so a package replaced on the server mid-download is refused
//! with [`ErrorKind::SourceChanged`] whether or not the server honours `If-Range`. A server that
//! ignores `Range` (a `200` with the whole file) still works: the bytes before the wanted start
//! are skipped, at the cost of their traffic.
//!
//! Every read of an answer goes through one meter, the low-speed limit
//! ([`HttpOptions::with_low_speed_limit`]): a server that trickles bytes or stalls after its
//! headers ends the attempt with [`ErrorKind::Timeout`] within the limit's window, and the
//! download resumes from its last verified chunk (see [`crate::ota`]). Without it a server that
//! sends one byte just inside every read timeout would hold a download forever.

use std::io::{self, Read};
use std::time::{Duration, Instant};

use ureq::Agent;
use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig};

use crate::error::{Error, ErrorKind};
use crate::source::{PermanentFailure, RangeReader, Source, describe_duration};

/// The default low-speed limit in bytes per second (1 KiB/s, averaged over
/// [`DEFAULT_LOW_SPEED_TIME`]): far below the slowest LTE link a package is fetched over, far
/// above a server that trickles a byte now and then.
pub const DEFAULT_LOW_SPEED_LIMIT: u64 = 1024;

/// The default window of the low-speed limit: 6 s. It is also the longest wait for an answer or
/// a read, so a server that stalls for good costs one window per attempt: with the 8 resumes
/// [`crate::ota::OtaOptions`] allows by default, a download gives up on it after about a minute
/// (9 windows and 8 pauses of 0.5 s) with [`ErrorKind::Timeout`]. A radio outage shorter than
/// the window costs nothing; a longer one costs one resume.
pub const DEFAULT_LOW_SPEED_TIME: Duration = Duration::from_secs(6);

/// Connection settings for [`HttpSource`].
#[derive(Clone, Debug)]
pub struct HttpOptions {
    connect_timeout: Duration,
    read_timeout: Duration,
    low_speed: Option<LowSpeedLimit>,
    ca: Option<Vec<Certificate<'static>>>,
}

/// Fewer than `bytes_per_second × time` bytes in `time` of waiting ends an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct LowSpeedLimit {
    bytes_per_second: u64,
    time: Duration,
}

impl LowSpeedLimit {
    /// The bytes that must arrive within each window (at least one).
    fn min_bytes(self) -> u64 {
        let bytes = u128::from(self.bytes_per_second).saturating_mul(self.time.as_millis()) / 1000;
        u64::try_from(bytes).unwrap_or(u64::MAX).max(1)
    }
}

impl Default for HttpOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(15),
            read_timeout: Duration::from_secs(30),
            low_speed: Some(LowSpeedLimit {
                bytes_per_second: DEFAULT_LOW_SPEED_LIMIT,
                time: DEFAULT_LOW_SPEED_TIME,
            }),
            ca: None,
        }
    }
}

impl HttpOptions {
    /// Defaults: 15 s to connect, 30 s per read, a low-speed limit of
    /// [`DEFAULT_LOW_SPEED_LIMIT`] bytes per second over [`DEFAULT_LOW_SPEED_TIME`] (which also
    /// caps the wait for any answer or read), Mozilla's roots (webpki-roots) for HTTPS.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The longest wait for a connection (TCP and TLS handshake).
    #[must_use]
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The longest wait for any read from the server: a stalled server is a
    /// [`ErrorKind::Timeout`], after which the download resumes (see [`crate::ota`]). The
    /// low-speed window, when shorter, caps it.
    #[must_use]
    pub fn with_read_timeout(mut self, timeout: Duration) -> Self {
        self.read_timeout = timeout;
        self
    }

    /// Ends an attempt with [`ErrorKind::Timeout`] when fewer than `bytes_per_second × time`
    /// bytes arrive within `time` (curl's `--speed-limit` and `--speed-time`), after which the
    /// download resumes from its last verified chunk, within [`crate::ota::OtaOptions`]'s
    /// resume budget. `time` also caps the wait for an answer's headers and for each read,
    /// since nothing arriving in it is below any limit. A zero rate or time turns the limit off
    /// (the read timeout alone then bounds a stall, and nothing bounds a trickle but the
    /// download's deadline).
    ///
    /// Only time spent waiting for the server counts: a consumer that stops reading for a
    /// while (a device erasing a partition during a streaming install) is not the server's
    /// slowness. The window is counted afresh after each `bytes_per_second × time` bytes, so a
    /// connection fails between one and two windows after its last such batch began.
    #[must_use]
    pub fn with_low_speed_limit(mut self, bytes_per_second: u64, time: Duration) -> Self {
        self.low_speed = (bytes_per_second > 0 && !time.is_zero()).then_some(LowSpeedLimit {
            bytes_per_second,
            time,
        });
        self
    }

    /// No low-speed limit: only the read timeout ends a stalled attempt.
    #[must_use]
    pub fn without_low_speed_limit(mut self) -> Self {
        self.low_speed = None;
        self
    }

    /// The longest wait for the server's answer or for one read: the read timeout, or the
    /// low-speed window when that is shorter.
    fn wait_limit(&self) -> Duration {
        self.low_speed
            .map_or(self.read_timeout, |l| l.time.min(self.read_timeout))
    }

    /// Trusts exactly the CA certificates in `pem` (the device's trust store) for HTTPS,
    /// instead of Mozilla's roots.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] when `pem` holds no certificate or a broken one.
    pub fn with_ca_pem(mut self, pem: &[u8]) -> Result<Self, Error> {
        let mut certs = Vec::new();
        for item in ureq::tls::parse_pem(pem) {
            match item {
                Ok(PemItem::Certificate(cert)) => certs.push(cert),
                Ok(_) => {}
                Err(e) => {
                    return Err(Error::new(
                        ErrorKind::InvalidInput,
                        format!("the CA file is not valid PEM: {e}"),
                    ));
                }
            }
        }
        if certs.is_empty() {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "the CA file holds no CERTIFICATE",
            ));
        }
        self.ca = Some(certs);
        Ok(self)
    }
}

/// A package on an HTTP(S) server, read in ranges.
#[derive(Debug)]
pub struct HttpSource {
    agent: Agent,
    url: String,
    low_speed: Option<LowSpeedLimit>,
    wait_limit: Duration,
    validator: Option<String>,
    total: Option<u64>,
}

impl HttpSource {
    /// A source for `url` (`http://` or `https://`). Nothing is sent yet.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] for another scheme.
    pub fn new(url: &str, options: &HttpOptions) -> Result<Self, Error> {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!("'{url}' is not an http:// or https:// URL"),
            ));
        }
        let mut tls = TlsConfig::builder();
        if let Some(ca) = &options.ca {
            tls = tls.root_certs(RootCerts::new_with_certs(ca));
        }
        let wait_limit = options.wait_limit();
        let config = Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(options.connect_timeout))
            .timeout_per_read(Some(wait_limit))
            .timeout_recv_response(Some(wait_limit))
            .max_redirects(5)
            .tls_config(tls.build())
            .build();
        Ok(Self {
            agent: Agent::new_with_config(config),
            url: url.to_owned(),
            low_speed: options.low_speed,
            wait_limit,
            validator: None,
            total: None,
        })
    }

    /// Checks an answer's validator and total length against the first answer's.
    fn check_same(&mut self, validator: Option<String>, total: Option<u64>) -> Result<(), Error> {
        let changed = |what: &str, was: &str, now: &str| {
            Error::new(
                ErrorKind::SourceChanged,
                format!(
                    "{} changed during the download: {what} was {was}, is now {now}",
                    self.url
                ),
            )
        };
        match (&self.validator, validator) {
            (Some(was), Some(now)) if *was != now => {
                return Err(changed("the validator", was, &now));
            }
            (None, Some(now)) => self.validator = Some(now),
            _ => {}
        }
        match (self.total, total) {
            (Some(was), Some(now)) if was != now => {
                return Err(changed("the length", &was.to_string(), &now.to_string()));
            }
            (None, Some(now)) => self.total = Some(now),
            _ => {}
        }
        Ok(())
    }
}

/// `bytes START-END/TOTAL` → (START, TOTAL).
fn content_range(value: &str) -> Option<(u64, Option<u64>)> {
    let rest = value.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (start, _) = range.split_once('-')?;
    Some((start.trim().parse().ok()?, total.trim().parse().ok()))
}

/// Maps a ureq failure to the taxonomy.
fn ureq_error(url: &str, err: ureq::Error) -> Error {
    let err = match err {
        ureq::Error::Io(io) => return io_error(url, io),
        other => other,
    };
    let kind = match &err {
        ureq::Error::Timeout(_) => ErrorKind::Timeout,
        ureq::Error::Tls(_) | ureq::Error::Rustls(_) | ureq::Error::Pem(_) => ErrorKind::TlsError,
        ureq::Error::BadUri(_) => ErrorKind::InvalidInput,
        _ => ErrorKind::ServerError,
    };
    Error::new(kind, format!("{url}: {err}")).with_source(err)
}

/// Maps an I/O failure on the connection: a timeout, a TLS failure, or a broken connection.
fn io_error(url: &str, err: io::Error) -> Error {
    let inner = err.get_ref();
    let kind = if err.kind() == io::ErrorKind::TimedOut
        || err.kind() == io::ErrorKind::WouldBlock
        || inner
            .and_then(|e| e.downcast_ref::<ureq::Error>())
            .is_some_and(|e| matches!(e, ureq::Error::Timeout(_)))
    {
        ErrorKind::Timeout
    } else if inner.is_some_and(|e| e.is::<rustls::Error>())
        || inner
            .and_then(|e| e.downcast_ref::<ureq::Error>())
            .is_some_and(|e| matches!(e, ureq::Error::Rustls(_) | ureq::Error::Tls(_)))
    {
        ErrorKind::TlsError
    } else {
        ErrorKind::ServerError
    };
    Error::new(kind, format!("{url}: {err}")).with_source(err)
}

/// The low-speed limit of one answer: at least `min_bytes` must arrive within each `window` of
/// time spent waiting in reads, counted afresh each time they did.
#[derive(Clone, Copy, Debug)]
struct SpeedMeter {
    limit: LowSpeedLimit,
    min_bytes: u64,
    /// Waiting time and bytes since the window began.
    waited: Duration,
    bytes: u64,
}

impl SpeedMeter {
    fn new(limit: LowSpeedLimit) -> Self {
        Self {
            limit,
            min_bytes: limit.min_bytes(),
            waited: Duration::ZERO,
            bytes: 0,
        }
    }

    /// Records a read that waited `waited` for `n` bytes; `false` when the window ran out
    /// before enough bytes came (bytes that arrive after the window closed do not save it).
    fn record(&mut self, n: u64, waited: Duration) -> bool {
        let waited = self.waited.saturating_add(waited);
        if waited > self.limit.time {
            return false;
        }
        self.bytes = self.bytes.saturating_add(n);
        if self.bytes >= self.min_bytes {
            self.bytes = 0;
            self.waited = Duration::ZERO;
        } else {
            self.waited = waited;
        }
        true
    }

    /// The attempt's failure, naming the limit.
    fn too_slow(&self, url: &str) -> Error {
        Error::new(
            ErrorKind::Timeout,
            format!(
                "{url}: the server sent fewer than {} bytes in {}, below the low-speed limit of {} bytes/s",
                self.min_bytes,
                describe_duration(self.limit.time),
                self.limit.bytes_per_second,
            ),
        )
    }
}

/// The body of an answer: every read is measured against the low-speed limit, and failures
/// are classified (they travel inside the `io::Error`).
struct Body {
    url: String,
    reader: Box<dyn Read + Send>,
    meter: Option<SpeedMeter>,
    /// Whether the low-speed window (not the longer read timeout) bounds each read.
    window_bounds_reads: bool,
}

impl Read for Body {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let started = Instant::now();
        let result = self.reader.read(buf);
        let waited = started.elapsed();
        match (result, &mut self.meter) {
            (Ok(n), Some(meter)) => {
                if meter.record(u64::try_from(n).unwrap_or(u64::MAX), waited) {
                    Ok(n)
                } else {
                    Err(Error::into_io(meter.too_slow(&self.url)))
                }
            }
            (Ok(n), None) => Ok(n),
            (Err(e), meter) => {
                let err = io_error(&self.url, e);
                // A read cut short by the wait limit, when the low-speed window set it: say so.
                Err(Error::into_io(match meter {
                    Some(meter) if err.kind() == ErrorKind::Timeout && self.window_bounds_reads => {
                        meter.too_slow(&self.url).with_source(err)
                    }
                    _ => err,
                }))
            }
        }
    }
}

impl Source for HttpSource {
    fn describe(&self) -> String {
        self.url.clone()
    }

    fn open(&mut self, start: u64, end: Option<u64>) -> Result<RangeReader, Error> {
        let range = match end {
            Some(end) => format!("bytes={start}-{}", end.saturating_sub(1)),
            None => format!("bytes={start}-"),
        };
        let mut request = self.agent.get(&self.url).header("Range", &range);
        // If-Range takes a strong validator only; a weak ETag is still compared below.
        if let Some(validator) = self.validator.as_ref().filter(|v| !v.starts_with("W/")) {
            request = request.header("If-Range", validator);
        }
        let response = request.call().map_err(|e| match e {
            // The wait for the answer (or the TLS handshake) ran into the wait limit.
            ureq::Error::Timeout(ureq::Timeout::RecvResponse | ureq::Timeout::PerRead) => {
                Error::new(
                    ErrorKind::Timeout,
                    format!(
                        "{}: no answer within {}",
                        self.url,
                        describe_duration(self.wait_limit)
                    ),
                )
                .with_source(e)
            }
            e => ureq_error(&self.url, e),
        })?;
        let status = response.status().as_u16();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let validator = header("etag").or_else(|| header("last-modified"));
        let (skip, total) = match status {
            206 => {
                let (first, total) = header("content-range")
                    .as_deref()
                    .and_then(content_range)
                    .ok_or_else(|| {
                        Error::new(
                            ErrorKind::ServerError,
                            format!("{}: a 206 answer without a usable Content-Range", self.url),
                        )
                    })?;
                if first != start {
                    return Err(Error::new(
                        ErrorKind::ServerError,
                        format!("{}: asked for {range}, got bytes from {first}", self.url),
                    ));
                }
                (0, total)
            }
            // The server ignored Range (or If-Range found the file changed: then the validator
            // differs and check_same refuses it).
            200 => (start, header("content-length").and_then(|v| v.parse().ok())),
            416 => {
                return Err(Error::new(
                    ErrorKind::Truncated,
                    format!("{}: the server has no bytes at {start} (416)", self.url),
                ));
            }
            _ => {
                let message = format!("{}: HTTP status {status} for {range}", self.url);
                let err = Error::new(ErrorKind::ServerError, message.clone());
                // A client error (404, 403) stays one; a server error (5xx), a timeout (408)
                // or a rate limit (429) may pass.
                let permanent = (400..500).contains(&status) && status != 408 && status != 429;
                return Err(if permanent {
                    err.with_source(PermanentFailure(message))
                } else {
                    err
                });
            }
        };
        self.check_same(validator, total)?;
        let mut body = Body {
            url: self.url.clone(),
            reader: Box::new(response.into_body().into_reader()),
            meter: self.low_speed.map(SpeedMeter::new),
            window_bounds_reads: self
                .low_speed
                .is_some_and(|limit| limit.time <= self.wait_limit),
        };
        if skip > 0 {
            let skipped = io::copy(&mut (&mut body).take(skip), &mut io::sink())
                .map_err(|e| crate::error::Error::io("skipping to the range", e))?;
            if skipped < skip {
                return Err(Error::new(
                    ErrorKind::Truncated,
                    format!("{}: the body ended at byte {skipped}", self.url),
                ));
            }
        }
        let len = end.map_or(u64::MAX, |end| end.saturating_sub(start));
        Ok(Box::new(body.take(len)))
    }

    fn total_len(&self) -> Option<u64> {
        self.total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_content_range() {
        assert_eq!(content_range("bytes 10-19/100"), Some((10, Some(100))));
        assert_eq!(content_range("bytes 0-0/*"), Some((0, None)));
        assert_eq!(content_range("items 0-1/2"), None);
    }

    fn meter(bytes_per_second: u64, millis: u64) -> SpeedMeter {
        SpeedMeter::new(LowSpeedLimit {
            bytes_per_second,
            time: Duration::from_millis(millis),
        })
    }

    #[test]
    fn the_low_speed_window_needs_rate_times_time_bytes() {
        assert_eq!(meter(1024, 1000).min_bytes, 1024);
        assert_eq!(meter(1024, 6000).min_bytes, 6144);
        assert_eq!(meter(1, 10).min_bytes, 1, "at least one byte");
    }

    #[test]
    fn a_trickle_below_the_limit_fails_when_its_window_runs_out() {
        // 1 KiB per 1 s; one byte every 200 ms of waiting.
        let mut m = meter(1024, 1000);
        for _ in 0..5 {
            assert!(m.record(1, Duration::from_millis(200)));
        }
        assert!(!m.record(1, Duration::from_millis(200)));
    }

    #[test]
    fn enough_bytes_start_a_new_window() {
        let mut m = meter(1024, 1000);
        // 512 bytes every 400 ms of waiting: 1 KiB per 800 ms, above the limit, for ever.
        for _ in 0..100 {
            assert!(m.record(512, Duration::from_millis(400)));
        }
        // Bytes that come only after the window closed do not count for it.
        let mut m = meter(1024, 1000);
        assert!(m.record(10, Duration::from_millis(900)));
        assert!(!m.record(4096, Duration::from_millis(200)));
    }

    #[test]
    fn a_zero_rate_or_time_turns_the_limit_off_and_the_window_caps_the_read_timeout() {
        let options = HttpOptions::new().with_read_timeout(Duration::from_secs(30));
        assert_eq!(options.wait_limit(), DEFAULT_LOW_SPEED_TIME);
        assert_eq!(
            options
                .clone()
                .with_low_speed_limit(0, Duration::from_secs(1))
                .wait_limit(),
            Duration::from_secs(30)
        );
        assert!(
            options
                .clone()
                .with_low_speed_limit(100, Duration::ZERO)
                .low_speed
                .is_none()
        );
        assert_eq!(
            options.without_low_speed_limit().wait_limit(),
            Duration::from_secs(30)
        );
    }

    #[test]
    fn refuses_other_schemes_and_empty_ca_files() {
        let err = HttpSource::new("ftp://example.invalid/x", &HttpOptions::new()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        let err = HttpOptions::new().with_ca_pem(b"no pem here").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
    }
}
