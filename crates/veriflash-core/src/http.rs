//! [`HttpSource`]: package ranges over HTTP(S) with `ureq` (rustls, ring, webpki-roots).
//!
//! Every request carries a `Range`; from the second one on also `If-Range` with the validator
//! (ETag, else Last-Modified) of the first answer. Each answer's validator and total length are
//! compared with the first one's, so a package replaced on the server mid-download is refused
//! with [`ErrorKind::SourceChanged`] whether or not the server honours `If-Range`. A server that
//! ignores `Range` (a `200` with the whole file) still works: the bytes before the wanted start
//! are skipped, at the cost of their traffic.

use std::io::{self, Read};
use std::time::Duration;

use ureq::Agent;
use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig};

use crate::error::{Error, ErrorKind};
use crate::source::{PermanentFailure, RangeReader, Source};

/// Connection settings for [`HttpSource`].
#[derive(Clone, Debug)]
pub struct HttpOptions {
    connect_timeout: Duration,
    read_timeout: Duration,
    ca: Option<Vec<Certificate<'static>>>,
}

impl Default for HttpOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(15),
            read_timeout: Duration::from_secs(30),
            ca: None,
        }
    }
}

impl HttpOptions {
    /// Defaults: 15 s to connect, 30 s per read, Mozilla's roots (webpki-roots) for HTTPS.
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
    /// [`ErrorKind::Timeout`], after which the download resumes (see [`crate::ota`]).
    #[must_use]
    pub fn with_read_timeout(mut self, timeout: Duration) -> Self {
        self.read_timeout = timeout;
        self
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
        let config = Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(options.connect_timeout))
            .timeout_per_read(Some(options.read_timeout))
            .timeout_recv_response(Some(options.read_timeout))
            .max_redirects(5)
            .tls_config(tls.build())
            .build();
        Ok(Self {
            agent: Agent::new_with_config(config),
            url: url.to_owned(),
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

/// The body of an answer, with failures classified (they travel inside the `io::Error`).
struct Body {
    url: String,
    reader: Box<dyn Read + Send>,
}

impl Read for Body {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.reader.read(buf).map_err(|e| {
            let err = io_error(&self.url, e);
            let kind = if err.kind() == ErrorKind::Timeout {
                io::ErrorKind::TimedOut
            } else {
                io::ErrorKind::Other
            };
            io::Error::new(kind, err)
        })
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
        let response = request.call().map_err(|e| ureq_error(&self.url, e))?;
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

    #[test]
    fn refuses_other_schemes_and_empty_ca_files() {
        let err = HttpSource::new("ftp://example.invalid/x", &HttpOptions::new()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        let err = HttpOptions::new().with_ca_pem(b"no pem here").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
    }
}
