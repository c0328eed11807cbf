//! Firehose, the programmer's XML protocol: a writer for the self-closing commands the host
//! sends, a bounded parser for the documents either side sends, and a stream splitter that cuts
//! documents at `</data>` and keeps the bytes after it (raw sector data) for the caller.
//!
//! Every message is one document `<?xml version="1.0" ?><data>…</data>` holding self-closing
//! elements: the host sends `<configure/>`, `<program/>`, `<read/>`, `<erase/>`,
//! `<getstorageinfo/>`, `<power/>`, …; the device answers with `<log value="…"/>` lines and one
//! `<response value="ACK"|"NAK" …/>`. After an ACK with `rawmode="true"` raw sector bytes flow
//! (host → device for `program`, device → host for `read`), then a final response.

use std::fmt::Write as _;

use crate::error::Error;

/// The longest document accepted from the other side before its `</data>`.
pub const MAX_DOCUMENT_LEN: usize = 16 * 1024;
/// The most elements one document may hold.
pub const MAX_ELEMENTS: usize = 64;
/// The most attributes one element may carry.
pub const MAX_ATTRIBUTES: usize = 32;
/// The end of every document.
pub const DOCUMENT_END: &[u8] = b"</data>";
/// How every document starts.
pub const PROLOG: &str = r#"<?xml version="1.0" ?>"#;

/// A command (or a response, on the emulator side): one self-closing element.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Element {
    /// Element name, e.g. `program`.
    pub name: String,
    /// Attributes in order, values unescaped.
    pub attrs: Vec<(String, String)>,
}

impl Element {
    /// An element without attributes.
    #[must_use]
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            attrs: Vec::new(),
        }
    }

    /// Adds an attribute.
    #[must_use]
    pub fn attr(mut self, key: &str, value: impl std::fmt::Display) -> Self {
        self.attrs.push((key.to_owned(), value.to_string()));
        self
    }

    /// The value of attribute `key`, compared ignoring ASCII case as programmers do.
    #[must_use]
    pub fn get(&self, key: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }

    /// The attribute `key` as an unsigned number.
    ///
    /// # Errors
    /// [`Error::Unexpected`] when it is missing or not a decimal number.
    pub fn number(&self, key: &'static str) -> Result<u64, Error> {
        self.get(key)
            .and_then(|v| v.trim().parse::<u64>().ok())
            .ok_or_else(|| Error::Unexpected {
                expected: key,
                got: format!("<{}> without a numeric {key}", self.name),
            })
    }

    /// Whether this is `<response value="ACK"/>`.
    #[must_use]
    pub fn is_ack(&self) -> bool {
        self.name == "response" && self.get("value") == Some("ACK")
    }

    /// Whether this is a `<response/>`.
    #[must_use]
    pub fn is_response(&self) -> bool {
        self.name == "response"
    }

    /// Whether this is a `<log/>`.
    #[must_use]
    pub fn is_log(&self) -> bool {
        self.name == "log"
    }

    /// Whether `rawmode="true"`: raw bytes follow this response.
    #[must_use]
    pub fn is_rawmode(&self) -> bool {
        self.get("rawmode")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    }
}

/// Escapes `s` for an attribute value in double quotes.
fn escape_into(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
}

/// One document holding `elements`, each self-closing.
#[must_use]
pub fn document(elements: &[Element]) -> Vec<u8> {
    let mut out = String::from(PROLOG);
    out.push_str("<data>");
    for e in elements {
        out.push('<');
        out.push_str(&e.name);
        for (k, v) in &e.attrs {
            let _ = write!(out, " {k}=\"");
            escape_into(&mut out, v);
            out.push('"');
        }
        out.push_str(" />");
    }
    out.push_str("</data>");
    out.into_bytes()
}

/// A bounded cursor over one document.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn err(&self, reason: &'static str) -> Error {
        Error::MalformedXml {
            reason,
            offset: self.at,
        }
    }

    fn rest(&self) -> &'a [u8] {
        self.bytes.get(self.at..).unwrap_or(&[])
    }

    fn skip_ws(&mut self) {
        while let Some(b) = self.bytes.get(self.at) {
            if b.is_ascii_whitespace() || *b == 0 {
                self.at += 1;
            } else {
                break;
            }
        }
    }

    fn eat(&mut self, lit: &[u8]) -> bool {
        if self.rest().starts_with(lit) {
            self.at += lit.len();
            true
        } else {
            false
        }
    }

    /// Skips past the next `end`.
    fn skip_past(&mut self, end: &[u8], reason: &'static str) -> Result<(), Error> {
        let pos = find(self.rest(), end).ok_or_else(|| self.err(reason))?;
        self.at += pos + end.len();
        Ok(())
    }

    fn name(&mut self) -> Result<String, Error> {
        let start = self.at;
        while let Some(b) = self.bytes.get(self.at) {
            if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b':' | b'.') {
                self.at += 1;
            } else {
                break;
            }
        }
        let name = self.bytes.get(start..self.at).unwrap_or(&[]);
        if name.is_empty() {
            return Err(self.err("expected a name"));
        }
        Ok(String::from_utf8_lossy(name).into_owned())
    }

    fn value(&mut self) -> Result<String, Error> {
        let quote = match self.bytes.get(self.at) {
            Some(q @ (b'"' | b'\'')) => *q,
            _ => return Err(self.err("expected a quoted attribute value")),
        };
        self.at += 1;
        let len = self
            .rest()
            .iter()
            .position(|b| *b == quote)
            .ok_or_else(|| self.err("unterminated attribute value"))?;
        let raw = self.rest().get(..len).unwrap_or(&[]);
        self.at += len + 1;
        Ok(unescape(&String::from_utf8_lossy(raw)))
    }
}

/// Resolves the five predefined entities and numeric character references; anything else
/// is kept as written.
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(rest.get(..amp).unwrap_or(""));
        let tail = rest.get(amp..).unwrap_or("");
        let semi = tail.find(';').filter(|i| *i <= 10);
        let entity = semi.and_then(|i| tail.get(1..i));
        let decoded = match entity {
            Some("amp") => Some('&'),
            Some("lt") => Some('<'),
            Some("gt") => Some('>'),
            Some("quot") => Some('"'),
            Some("apos") => Some('\''),
            Some(e) if e.starts_with("#x") => e
                .get(2..)
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .and_then(char::from_u32),
            Some(e) if e.starts_with('#') => e
                .get(1..)
                .and_then(|d| d.parse::<u32>().ok())
                .and_then(char::from_u32),
            _ => None,
        };
        match (decoded, semi) {
            (Some(c), Some(i)) => {
                out.push(c);
                rest = tail.get(i + 1..).unwrap_or("");
            }
            _ => {
                out.push('&');
                rest = tail.get(1..).unwrap_or("");
            }
        }
    }
    out.push_str(rest);
    out
}

/// Position of `needle` in `hay`.
/// Whether `bytes` hold a `</data>`, the end of a Firehose document.
#[must_use]
pub fn contains_document_end(bytes: &[u8]) -> bool {
    find(bytes, DOCUMENT_END).is_some()
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Parses one whole document (prolog optional, `<data>` root, self-closing elements,
/// comments skipped).
///
/// # Errors
/// [`Error::BadLength`] above [`MAX_DOCUMENT_LEN`], [`MAX_ELEMENTS`] or [`MAX_ATTRIBUTES`];
/// [`Error::MalformedXml`] with the byte offset otherwise.
pub fn parse_document(bytes: &[u8]) -> Result<Vec<Element>, Error> {
    parse_xml(bytes, Some("data"), &FIREHOSE_LIMITS).map(|(_, elements)| elements)
}

/// The bounds [`parse_xml`] applies, and the names its length errors carry.
#[derive(Clone, Copy, Debug)]
pub(crate) struct XmlLimits {
    /// The longest document.
    pub(crate) max_len: usize,
    /// The most elements under the root.
    pub(crate) max_elements: usize,
    /// The most attributes on one element.
    pub(crate) max_attributes: usize,
    /// What a document is called in errors.
    pub(crate) document: &'static str,
    /// What its elements are called in errors.
    pub(crate) elements: &'static str,
    /// What an element's attributes are called in errors.
    pub(crate) attributes: &'static str,
}

/// The bounds of one Firehose document.
const FIREHOSE_LIMITS: XmlLimits = XmlLimits {
    max_len: MAX_DOCUMENT_LEN,
    max_elements: MAX_ELEMENTS,
    max_attributes: MAX_ATTRIBUTES,
    document: "Firehose document",
    elements: "Firehose elements in a document",
    attributes: "Firehose attributes on an element",
};

/// The bounded reader behind [`parse_document`], shared with the rawprogram/patch importer
/// ([`crate::rawprogram`]): an optional prolog and comments, one root element (named `root`
/// if given; its name is returned), self-closing children (or written long-hand without
/// content), comments skipped, nothing after the root's end tag.
pub(crate) fn parse_xml(
    bytes: &[u8],
    root: Option<&str>,
    limits: &XmlLimits,
) -> Result<(String, Vec<Element>), Error> {
    if bytes.len() > limits.max_len {
        return Err(Error::BadLength {
            what: limits.document,
            length: bytes.len() as u64,
            limit: limits.max_len as u64,
        });
    }
    let mut c = Cursor { bytes, at: 0 };
    c.skip_ws();
    if c.eat(b"<?xml") {
        c.skip_past(b"?>", "unterminated XML declaration")?;
    }
    loop {
        c.skip_ws();
        if c.eat(b"<!--") {
            c.skip_past(b"-->", "unterminated comment")?;
        } else {
            break;
        }
    }
    if !c.eat(b"<") {
        return Err(c.err("expected the root element"));
    }
    let root_at = c.at;
    let root_name = c.name().map_err(|_| Error::MalformedXml {
        reason: "expected the root element",
        offset: root_at,
    })?;
    if root.is_some_and(|r| r != root_name) {
        return Err(Error::MalformedXml {
            reason: if root == Some("data") {
                "expected <data>"
            } else {
                "unexpected root element"
            },
            offset: root_at,
        });
    }
    c.skip_ws();
    if !c.eat(b">") {
        return Err(c.err("expected '>' after the root element's name"));
    }
    let root_end = format!("</{root_name}");
    let mut elements = Vec::new();
    loop {
        c.skip_ws();
        if c.eat(root_end.as_bytes()) {
            c.skip_ws();
            if !c.eat(b">") {
                return Err(c.err("expected '>' closing the root element"));
            }
            c.skip_ws();
            if !c.rest().is_empty() {
                return Err(c.err("bytes after the root element"));
            }
            return Ok((root_name, elements));
        }
        if c.eat(b"<!--") {
            c.skip_past(b"-->", "unterminated comment")?;
            continue;
        }
        if !c.eat(b"<") {
            return Err(c.err("expected an element"));
        }
        if elements.len() >= limits.max_elements {
            return Err(Error::BadLength {
                what: limits.elements,
                length: elements.len() as u64 + 1,
                limit: limits.max_elements as u64,
            });
        }
        let name = c.name()?;
        let mut attrs = Vec::new();
        loop {
            c.skip_ws();
            if c.eat(b"/>") {
                break;
            }
            if c.eat(b">") {
                // <name ...></name>: accept an empty element written long-hand.
                c.skip_ws();
                let close = format!("</{name}");
                if !c.eat(close.as_bytes()) {
                    return Err(c.err("element content is not supported"));
                }
                c.skip_ws();
                if !c.eat(b">") {
                    return Err(c.err("expected '>' closing the element"));
                }
                break;
            }
            if attrs.len() >= limits.max_attributes {
                return Err(Error::BadLength {
                    what: limits.attributes,
                    length: attrs.len() as u64 + 1,
                    limit: limits.max_attributes as u64,
                });
            }
            let key = c.name()?;
            c.skip_ws();
            if !c.eat(b"=") {
                return Err(c.err("expected '=' after an attribute name"));
            }
            c.skip_ws();
            let value = c.value()?;
            attrs.push((key, value));
        }
        elements.push(Element { name, attrs });
    }
}

/// Splits a byte stream into documents at `</data>`, keeping whatever follows for the next
/// document or for raw data. Bounded: a stream that goes [`MAX_DOCUMENT_LEN`] bytes without a
/// `</data>` is refused.
#[derive(Clone, Debug, Default)]
pub struct Splitter {
    buf: Vec<u8>,
}

impl Splitter {
    /// An empty splitter.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends bytes from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes buffered and not yet taken.
    #[must_use]
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next whole document's elements, or `None` when no `</data>` is buffered yet.
    ///
    /// # Errors
    /// [`Error::BadLength`] when [`MAX_DOCUMENT_LEN`] bytes hold no `</data>`; the document's
    /// parse error otherwise (the bad document is dropped from the buffer).
    pub fn next_document(&mut self) -> Result<Option<Vec<Element>>, Error> {
        // Bytes a ZLP-unaware path or a line-oriented tty may leave between documents.
        let lead = self
            .buf
            .iter()
            .take_while(|b| b.is_ascii_whitespace() || **b == 0)
            .count();
        self.buf.drain(..lead);
        let window = self.buf.len().min(MAX_DOCUMENT_LEN + DOCUMENT_END.len());
        let Some(pos) = find(self.buf.get(..window).unwrap_or(&[]), DOCUMENT_END) else {
            if self.buf.len() > MAX_DOCUMENT_LEN {
                return Err(Error::BadLength {
                    what: "Firehose document without </data>",
                    length: self.buf.len() as u64,
                    limit: MAX_DOCUMENT_LEN as u64,
                });
            }
            return Ok(None);
        };
        let end = pos + DOCUMENT_END.len();
        let doc: Vec<u8> = self.buf.drain(..end).collect();
        parse_document(&doc).map(Some)
    }

    /// The buffered bytes, not taken.
    #[must_use]
    pub fn peek(&self) -> &[u8] {
        &self.buf
    }

    /// Takes up to `max` buffered bytes as raw data.
    pub fn take_raw(&mut self, max: usize) -> Vec<u8> {
        let n = max.min(self.buf.len());
        self.buf.drain(..n).collect()
    }
}

/// The NAK reason from the log lines that preceded it: the last line saying `ERROR`, else the
/// last line, else the response's own attributes. The MDM9x07 NAND programmer logs the
/// reason first and then a bare `ERROR 21: Line 2459: HANDLE_PROGRAM_FAILURE`; the line
/// before such an error line is kept with it (`reason (error line)`).
#[must_use]
pub fn nak_reason(logs: &[String], response: &Element) -> String {
    let error = logs
        .iter()
        .rposition(|l| l.to_ascii_uppercase().contains("ERROR"));
    if let Some(at) = error
        && let (Some(line), Some(before)) = (logs.get(at), at.checked_sub(1))
        && line.contains("_FAILURE")
        && let Some(reason) = logs
            .get(before)
            .filter(|r| !r.to_ascii_uppercase().starts_with("INFO"))
    {
        return format!("{reason} ({line})");
    }
    error
        .and_then(|at| logs.get(at))
        .or_else(|| logs.last())
        .cloned()
        .unwrap_or_else(|| {
            response
                .attrs
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ")
        })
}

/// Pulls a JSON-ish number `"key":N` out of a `getstorageinfo` log line.
#[must_use]
pub fn storage_info_number(log: &str, key: &str) -> Option<u64> {
    let pat = format!("\"{key}\":");
    let at = log.find(&pat)? + pat.len();
    let digits: String = log
        .get(at..)?
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .take(20)
        .collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    //! Document shapes as linux-msm/qdl `src/firehose.c` writes and reads them
    //! (`firehose_send_configure`: `MemoryName`, `MaxPayloadSizeToTargetInBytes`,
    //! `ZlpAwareHost`, `SkipStorageInit`; `firehose_read` bounding each message on
    //! `</data>`; `firehose_configure_response_parser`: the counter-proposal in
    //! `MaxPayloadSizeToTargetInBytes` of a NAK, `…Supported` on an ACK;
    //! `firehose_getstorageinfo_parser`: `storage_info` JSON inside a `<log value>`;
    //! program with `PAGES_PER_BLOCK` and `last_sector` on NAND) and bkerler/edl
    //! `edlclient/Library/firehose.py`.
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn writes_self_closing_commands_with_escaped_values() {
        let doc = document(&[Element::new("configure")
            .attr("MemoryName", "nand")
            .attr("MaxPayloadSizeToTargetInBytes", 1_048_576)
            .attr("note", "a<b & \"c\"")]);
        assert_eq!(
            String::from_utf8(doc.clone()).unwrap(),
            r#"<?xml version="1.0" ?><data><configure MemoryName="nand" MaxPayloadSizeToTargetInBytes="1048576" note="a&lt;b &amp; &quot;c&quot;" /></data>"#
        );
        let parsed = parse_document(&doc).unwrap();
        assert_eq!(parsed[0].get("note"), Some("a<b & \"c\""));
        assert_eq!(
            parsed[0].number("MaxPayloadSizeToTargetInBytes").unwrap(),
            1 << 20
        );
    }

    #[test]
    fn parses_logs_and_responses_in_one_document() {
        let doc = br#"<?xml version="1.0" encoding="UTF-8" ?>
<data>
<!-- a comment -->
<log value="ERROR: Only nop and sig tag can be recevied before authentication." />
<response value="NAK" rawmode='false'></response>
</data>"#;
        let e = parse_document(doc).unwrap();
        assert!(e[0].is_log());
        assert!(e[1].is_response() && !e[1].is_ack());
        assert_eq!(
            nak_reason(&[e[0].get("value").unwrap().to_owned()], &e[1]),
            "ERROR: Only nop and sig tag can be recevied before authentication."
        );
    }

    #[test]
    fn splitter_handles_coalesced_documents_and_keeps_raw_tail() {
        let mut s = Splitter::new();
        let mut stream = document(&[Element::new("log").attr("value", "x")]);
        stream.extend(document(&[Element::new("response")
            .attr("value", "ACK")
            .attr("rawmode", "true")]));
        stream.extend_from_slice(b"\x01\x02</data>raw");
        for piece in stream.chunks(7) {
            s.push(piece);
        }
        assert!(s.next_document().unwrap().unwrap()[0].is_log());
        assert!(s.next_document().unwrap().unwrap()[0].is_rawmode());
        assert_eq!(s.take_raw(12), b"\x01\x02</data>raw");
    }

    #[test]
    fn rejects_unbounded_and_malformed_input() {
        let mut s = Splitter::new();
        s.push(&vec![b'a'; MAX_DOCUMENT_LEN + 1]);
        assert!(matches!(s.next_document(), Err(Error::BadLength { .. })));
        for bad in [
            &b"<data><x a=1/></data>"[..],
            b"<data><x a=\"1/></data>",
            b"<dat></data>",
            b"<data><x></y></data>",
            b"<data></data>junk",
        ] {
            assert!(parse_document(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn storage_info_numbers_come_out_of_the_log_json() {
        let log = r#"INFO: {"storage_info": {"total_blocks":1024, "block_size":131072,"page_size":2048}}"#;
        assert_eq!(storage_info_number(log, "block_size"), Some(131_072));
        assert_eq!(storage_info_number(log, "page_size"), Some(2048));
        assert_eq!(storage_info_number(log, "absent"), None);
    }
}
