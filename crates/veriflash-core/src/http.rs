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
//!
//! An error status is classified for a caller that acts on categories: 404/410
//! ([`ErrorKind::PackageNotFound`]), 401/403 ([`ErrorKind::AccessRefused`], or
//! [`ErrorKind::UrlExpired`] when the server says the URL expired — S3's `Request has
//! expired` — or the URL's own expiry, `X-Amz-Date` + `X-Amz-Expires` or `Expires=`, has
//! passed) end the download at once; 408, 429 and 5xx are [`ErrorKind::ServerError`], which
//! the download retries. The server's own error code and message (S3's `<Code>` and
//! `<Message>`) are quoted in the error.
//!
//! URLs reach messages only through [`redact_url`]: a presigned URL's signature, a token in
//! the query or a password in the authority is a credential, and error messages end up in
//! logs.

use std::io::{self, Read};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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
    /// The URL requests go to, credentials and all.
    url: String,
    /// The URL as messages show it ([`redact_url`]).
    shown: String,
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
                format!("'{}' is not an http:// or https:// URL", redact_url(url)),
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
            .user_agent(USER_AGENT)
            .tls_config(tls.build())
            .build();
        Ok(Self {
            agent: Agent::new_with_config(config),
            url: url.to_owned(),
            shown: redact_url(url),
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
                    self.shown
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

/// Maps a ureq failure to the taxonomy. Its text may quote the request's URL: that is
/// redacted too.
fn ureq_error(url: &Urls<'_>, err: ureq::Error) -> Error {
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
    Error::new(kind, url.message(&err)).with_source(err)
}

/// A request's URL, and how messages show it.
#[derive(Clone, Copy)]
struct Urls<'a> {
    raw: &'a str,
    shown: &'a str,
}

impl Urls<'_> {
    /// `SHOWN: ERR`, with any copy of the raw URL in the error's text redacted.
    fn message(&self, err: &dyn std::fmt::Display) -> String {
        let text = err.to_string().replace(self.raw, self.shown);
        format!("{}: {text}", self.shown)
    }
}

/// Maps an I/O failure on the connection: a timeout, a TLS failure, or a broken connection.
fn io_error(url: &Urls<'_>, err: io::Error) -> Error {
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
    Error::new(kind, url.message(&err)).with_source(err)
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
    /// The URL as messages show it.
    shown: String,
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
                    Err(Error::into_io(meter.too_slow(&self.shown)))
                }
            }
            (Ok(n), None) => Ok(n),
            (Err(e), meter) => {
                // The body's errors come from the connection, never quoting the URL.
                let urls = Urls {
                    raw: &self.shown,
                    shown: &self.shown,
                };
                let err = io_error(&urls, e);
                // A read cut short by the wait limit, when the low-speed window set it: say so.
                Err(Error::into_io(match meter {
                    Some(meter) if err.kind() == ErrorKind::Timeout && self.window_bounds_reads => {
                        meter.too_slow(&self.shown).with_source(err)
                    }
                    _ => err,
                }))
            }
        }
    }
}

impl Source for HttpSource {
    fn describe(&self) -> String {
        self.shown.clone()
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
        let urls = Urls {
            raw: &self.url,
            shown: &self.shown,
        };
        let response = request.call().map_err(|e| match e {
            // The wait for the answer (or the TLS handshake) ran into the wait limit.
            ureq::Error::Timeout(ureq::Timeout::RecvResponse | ureq::Timeout::PerRead) => {
                Error::new(
                    ErrorKind::Timeout,
                    format!(
                        "{}: no answer within {}",
                        self.shown,
                        describe_duration(self.wait_limit)
                    ),
                )
                .with_source(e)
            }
            e => ureq_error(&urls, e),
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
                            format!(
                                "{}: a 206 answer without a usable Content-Range",
                                self.shown
                            ),
                        )
                    })?;
                if first != start {
                    return Err(Error::new(
                        ErrorKind::ServerError,
                        format!("{}: asked for {range}, got bytes from {first}", self.shown),
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
                    format!("{}: the server has no bytes at {start} (416)", self.shown),
                ));
            }
            _ => {
                let said = server_said(response.into_body().into_reader());
                return Err(status_error(
                    status,
                    &format!("{}: HTTP status {status} for {range}{said}", self.shown),
                    said.to_ascii_lowercase().contains("expired")
                        || url_expired(&self.url, SystemTime::now()),
                ));
            }
        };
        self.check_same(validator, total)?;
        let mut body = Body {
            shown: self.shown.clone(),
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
                    format!("{}: the body ended at byte {skipped}", self.shown),
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

/// The `User-Agent` of every request: servers' logs can tell veriflash and its version.
const USER_AGENT: &str = concat!("veriflash/", env!("CARGO_PKG_VERSION"));

/// The most of an error answer's body read for its error code and message.
const MAX_ERROR_BODY: u64 = 16 * 1024;

/// The longest code or message quoted from a server.
const MAX_SAID: usize = 200;

/// `url` as it may be shown in messages, events and logs: the password of the authority and
/// the value of every query parameter (a presigned URL's signature and credential, tokens)
/// replaced by `REDACTED`, the fragment dropped. Parameter names stay, so a reader still sees
/// which kind of URL it was (`X-Amz-Signature=REDACTED`).
#[must_use]
pub fn redact_url(url: &str) -> String {
    let url = url.split_once('#').map_or(url, |(before, _)| before);
    let (before_query, query) = match url.split_once('?') {
        Some((before, query)) => (before, Some(query)),
        None => (url, None),
    };
    let mut shown = match before_query.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.find('/').map_or((rest, ""), |i| rest.split_at(i));
            let authority = match authority.rsplit_once('@') {
                Some((userinfo, host)) => {
                    let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
                    format!("{user}:REDACTED@{host}")
                }
                None => authority.to_owned(),
            };
            format!("{scheme}://{authority}{path}")
        }
        None => before_query.to_owned(),
    };
    if let Some(query) = query {
        let params: Vec<String> = query
            .split('&')
            .map(|param| match param.split_once('=') {
                Some((name, _)) => format!("{name}=REDACTED"),
                None => param.to_owned(),
            })
            .collect();
        shown.push('?');
        shown.push_str(&params.join("&"));
    }
    shown
}

/// What an error answer's body says, for the message: S3's (and its imitators')
/// `<Code>` and `<Message>`, as `: the server said AccessDenied: Request has expired`, or
/// nothing. Reads at most [`MAX_ERROR_BODY`] bytes; what it quotes is cut to printable text.
fn server_said(body: impl Read) -> String {
    let mut bytes = Vec::new();
    if body.take(MAX_ERROR_BODY).read_to_end(&mut bytes).is_err() {
        return String::new();
    }
    let text = String::from_utf8_lossy(&bytes);
    let element = |name: &str| {
        let start = text.find(&format!("<{name}>"))? + name.len() + 2;
        let len = text.get(start..)?.find(&format!("</{name}>"))?;
        let value: String = text
            .get(start..start + len)?
            .chars()
            .filter(|c| !c.is_control())
            .take(MAX_SAID)
            .collect();
        Some(value.trim().to_owned()).filter(|v| !v.is_empty())
    };
    match (element("Code"), element("Message")) {
        (Some(code), Some(message)) => format!(": the server said {code}: {message}"),
        (Some(said), None) | (None, Some(said)) => format!(": the server said {said}"),
        (None, None) => String::new(),
    }
}

/// The error for an answer with `status`: `expired` when the server or the URL itself says
/// the URL has expired.
fn status_error(status: u16, message: &str, expired: bool) -> Error {
    match status {
        404 | 410 => Error::new(ErrorKind::PackageNotFound, message),
        401 | 403 if expired => Error::new(ErrorKind::UrlExpired, message),
        401 | 403 => Error::new(ErrorKind::AccessRefused, message),
        // A timeout (408), a rate limit (429) or a server error (5xx) may pass.
        408 | 429 | 500..=599 => Error::new(ErrorKind::ServerError, message),
        // Another client error stays one.
        400..=499 => Error::new(ErrorKind::ServerError, message)
            .with_source(PermanentFailure(message.to_owned())),
        _ => Error::new(ErrorKind::ServerError, message),
    }
}

/// Whether `url` carries an expiry that `now` has passed: a SigV4 presigned URL's
/// `X-Amz-Date` (`YYYYMMDDTHHMMSSZ`) plus `X-Amz-Expires` seconds (Google Cloud Storage's
/// `X-Goog-` twins alike), or a CDN's `Expires` in Unix seconds (CloudFront).
fn url_expired(url: &str, now: SystemTime) -> bool {
    let Some(query) = url.split_once('?').map(|(_, q)| q) else {
        return false;
    };
    let query = query.split_once('#').map_or(query, |(q, _)| q);
    let param = |name: &str| {
        query.split('&').find_map(|p| {
            let (n, v) = p.split_once('=')?;
            n.eq_ignore_ascii_case(name).then_some(v)
        })
    };
    let expires_at = ["X-Amz", "X-Goog"]
        .iter()
        .find_map(|prefix| {
            let signed = sigv4_time(param(&format!("{prefix}-Date"))?)?;
            signed.checked_add(param(&format!("{prefix}-Expires"))?.parse().ok()?)
        })
        .or_else(|| param("Expires")?.parse::<u64>().ok());
    let now = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    expires_at.is_some_and(|at| now > at)
}

/// `YYYYMMDDTHHMMSSZ` in Unix seconds.
fn sigv4_time(text: &str) -> Option<u64> {
    let digits = |range: std::ops::Range<usize>| -> Option<u64> {
        let part = text.get(range)?;
        part.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    if text.len() != 16 || text.get(8..9)? != "T" || text.get(15..)? != "Z" {
        return None;
    }
    let (year, month, day) = (digits(0..4)?, digits(4..6)?, digits(6..8)?);
    let (hour, minute, second) = (digits(9..11)?, digits(11..13)?, digits(13..15)?);
    if !(1970..=9999).contains(&year)
        || !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    Some(days_since_epoch(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second)
}

/// Days from 1970-01-01 to the given date of the proleptic Gregorian calendar (year ≥ 1970).
fn days_since_epoch(year: u64, month: u64, day: u64) -> u64 {
    // Years counted from March, so the leap day ends a year.
    let (y, m) = if month <= 2 {
        (year - 1, month + 9)
    } else {
        (year, month - 3)
    };
    let era_days = y * 365 + y / 4 - y / 100 + y / 400;
    let day_of_year = (153 * m + 2) / 5 + day - 1;
    // 1970-01-01 in the same count.
    era_days + day_of_year - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_shown_without_credentials() {
        assert_eq!(
            redact_url(
                "https://bucket.s3.example/pkg.vfp?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIA%2F20261206&X-Amz-Signature=abc123#frag"
            ),
            "https://bucket.s3.example/pkg.vfp?X-Amz-Algorithm=REDACTED&X-Amz-Credential=REDACTED&X-Amz-Signature=REDACTED"
        );
        assert_eq!(
            redact_url("http://user:secret@host:8080/a/b.vfp"),
            "http://user:REDACTED@host:8080/a/b.vfp"
        );
        assert_eq!(
            redact_url("http://token@host/x?flag"),
            "http://token:REDACTED@host/x?flag"
        );
        assert_eq!(redact_url("http://host/x.vfp"), "http://host/x.vfp");
        assert_eq!(redact_url("http://host"), "http://host");
    }

    #[test]
    fn sigv4_dates_are_unix_seconds() {
        assert_eq!(sigv4_time("19700101T000000Z"), Some(0));
        // `date -u -d 2026-12-06T04:15:30Z +%s`
        assert_eq!(sigv4_time("20261206T041530Z"), Some(1_796_530_530));
        // A leap day.
        assert_eq!(sigv4_time("20240229T120000Z"), Some(1_709_208_000));
        for bad in [
            "2026-12-06T04:15:30Z",
            "20261306T000000Z",
            "20261206T041530",
            "x",
        ] {
            assert_eq!(sigv4_time(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_url_past_its_own_expiry_is_expired() {
        let at = |secs| UNIX_EPOCH + Duration::from_secs(secs);
        let presigned =
            "https://h/o?X-Amz-Date=20261206T041530Z&X-Amz-Expires=900&X-Amz-Signature=s";
        assert!(!url_expired(presigned, at(1_796_530_530 + 900)));
        assert!(url_expired(presigned, at(1_796_530_530 + 901)));
        let google = "https://h/o?x-goog-date=20261206T041530Z&x-goog-expires=60";
        assert!(url_expired(google, at(1_796_530_530 + 61)));
        let cdn = "https://h/o?Expires=1000&Signature=s&Key-Pair-Id=k";
        assert!(url_expired(cdn, at(1001)));
        assert!(!url_expired(cdn, at(999)));
        assert!(!url_expired("https://h/o", at(u64::from(u32::MAX))));
        assert!(!url_expired("https://h/o?Expires=soon", at(5)));
    }

    #[test]
    fn the_servers_code_and_message_are_quoted_and_bounded() {
        let s3 = b"<?xml version=\"1.0\"?><Error><Code>AccessDenied</Code><Message>Request has expired</Message><RequestId>1</RequestId></Error>";
        assert_eq!(
            server_said(&s3[..]),
            ": the server said AccessDenied: Request has expired"
        );
        assert_eq!(server_said(&b"<html>404</html>"[..]), "");
        let long = format!("<Code>{}\u{7}</Code>", "x".repeat(10_000));
        assert_eq!(
            server_said(long.as_bytes()).len(),
            ": the server said ".len() + MAX_SAID
        );
        // A body larger than the bound is read only up to it.
        let mut huge = vec![b' '; usize::try_from(MAX_ERROR_BODY).unwrap()];
        huge.extend_from_slice(b"<Code>Late</Code>");
        assert_eq!(server_said(&huge[..]), "");
    }

    #[test]
    fn statuses_map_to_what_a_fleet_can_act_on() {
        let kind = |status, expired| status_error(status, "m", expired).kind();
        assert_eq!(kind(404, false), ErrorKind::PackageNotFound);
        assert_eq!(kind(410, false), ErrorKind::PackageNotFound);
        assert_eq!(kind(403, false), ErrorKind::AccessRefused);
        assert_eq!(kind(401, false), ErrorKind::AccessRefused);
        assert_eq!(kind(403, true), ErrorKind::UrlExpired);
        for retryable in [408, 429, 500, 503] {
            let err = status_error(retryable, "m", false);
            assert_eq!(err.kind(), ErrorKind::ServerError);
            assert!(std::error::Error::source(&err).is_none(), "{retryable}");
        }
        let err = status_error(400, "m", false);
        assert!(std::error::Error::source(&err).is_some_and(|s| s.is::<PermanentFailure>()));
    }

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
