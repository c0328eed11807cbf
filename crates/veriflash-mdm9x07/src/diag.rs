//! Getting a modem from normal mode into emergency download mode: Qualcomm DIAG (QCDM)
//! commands in async-HDLC framing over the modem's DIAG port, or a vendor AT command, behind
//! the [`EdlSwitch`] trait; and [`DiagDevice`], the device side of the DIAG switch for tests
//! and for `veriflash emulate mdm9x07 --pty --diag`.
//!
//! Framing (async HDLC as DIAG uses it): the payload, then its CRC-16/X.25 (a.k.a.
//! CRC-16/IBM-SDLC: polynomial 0x1021 reflected = 0x8408, initial value 0xFFFF, final XOR
//! 0xFFFF) little-endian, then every `0x7E` and `0x7D` in payload and CRC escaped as `0x7D`
//! followed by the byte XOR `0x20`, then a closing `0x7E` flag. No opening flag is sent
//! (bkerler/edl `edlclient/Library/hdlc.py`; linux-msm/qdl `diag_switch.c` sends exactly
//! `4b 65 01 00 54 0f 7e`); a decoder ignores empty frames, so one is tolerated.
//!
//! The switch command is `DIAG_SUBSYS_CMD_F` (0x4B), subsystem 0x65 (system operations),
//! subsystem command 0x0001 (little-endian) — "reset to EDL": bkerler/edl
//! `edlclient/Tools/qc_diag.py` `enter_saharamode` sends `4b 65 01 00` and takes a reply
//! starting with `0x4b` as success; qdl's `diag_switch.c` waits for the echo of the framed
//! command. Older firmware knows only `DIAG_DLOAD_F` (0x3A, `enter_downloadmode` in the same
//! file), which [`DiagEdlCommand::Dload`] sends. A modem that refuses answers with one of the
//! DIAG error codes (0x13 bad command, 0x14 bad parameter, 0x15 bad length, 0x18 bad mode,
//! 0x47 security mode: `qc_diag.py` `decodestatus`) followed by the request.

use std::collections::VecDeque;
use std::time::Duration;

use crate::error::Error;
use crate::transport::{Endpoint, Transport, write_all};

/// The HDLC flag that ends a frame.
pub const FLAG: u8 = 0x7E;
/// The HDLC escape byte.
pub const ESCAPE: u8 = 0x7D;
/// What an escaped byte is XORed with.
pub const ESCAPE_XOR: u8 = 0x20;
/// The longest frame payload (CRC excluded) the decoder accepts; DIAG packets are at most a
/// few KiB (QPST's `DIAG_MAX_PACKET_SIZE` is 4 KiB), so a longer one is garbage.
pub const MAX_FRAME_LEN: usize = 16 * 1024;

/// `DIAG_SUBSYS_CMD_F`: a subsystem command follows.
pub const DIAG_SUBSYS_CMD_F: u8 = 0x4B;
/// `DIAG_DLOAD_F`: the legacy "go to download mode" command.
pub const DIAG_DLOAD_F: u8 = 0x3A;
/// The system-operations subsystem id.
pub const SUBSYS_SYSTEM_OPERATIONS: u8 = 0x65;
/// Its "reset to emergency download" command.
pub const SYSTEM_OPS_EDL_RESET: u16 = 0x0001;
/// DIAG error responses: bad command, bad parameter, bad length, bad mode, security mode.
pub const DIAG_ERROR_CODES: [u8; 5] = [0x13, 0x14, 0x15, 0x18, 0x47];

/// The most frames [`DiagSwitch`] reads past (unsolicited logs, events) before giving up.
pub const MAX_FRAMES_BEFORE_ANSWER: usize = 256;
/// The most bytes [`DiagSwitch`] reads waiting for the answer (a port that streams logs
/// forever must not keep it waiting forever: each read has a timeout, the whole has this).
pub const MAX_BYTES_BEFORE_ANSWER: usize = 1 << 20;
/// The most bytes [`AtSwitch`] reads looking for the final result code.
pub const MAX_AT_RESPONSE: usize = 4096;

/// CRC-16/X.25 of `data` (check value for `b"123456789"`: 0x906E).
#[must_use]
pub fn crc16_x25(data: &[u8]) -> u16 {
    let mut crc = 0xFFFFu16;
    for &byte in data {
        crc ^= u16::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x8408
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn push_escaped(out: &mut Vec<u8>, byte: u8) {
    if byte == FLAG || byte == ESCAPE {
        out.push(ESCAPE);
        out.push(byte ^ ESCAPE_XOR);
    } else {
        out.push(byte);
    }
}

/// Frames `payload`: payload and CRC (little-endian) escaped, then the closing flag.
#[must_use]
pub fn encode(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + payload.len() / 8 + 4);
    for &b in payload {
        push_escaped(&mut out, b);
    }
    for b in crc16_x25(payload).to_le_bytes() {
        push_escaped(&mut out, b);
    }
    out.push(FLAG);
    out
}

/// A streaming HDLC decoder: feed it bytes as they come, get whole checked frames out. Its
/// memory is bounded by [`MAX_FRAME_LEN`] whatever the input; a bad frame is reported once and
/// the decoder resynchronises on the next flag.
#[derive(Clone, Debug, Default)]
pub struct Decoder {
    frame: Vec<u8>,
    escaped: bool,
    /// The current frame broke a rule; skip to the next flag.
    discarding: Option<&'static str>,
}

impl Decoder {
    /// A decoder between frames.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes one byte; at a closing flag returns the frame's payload (CRC checked and
    /// removed), or why the frame was bad.
    ///
    /// # Errors
    /// [`Error::BadLength`] for a frame longer than [`MAX_FRAME_LEN`];
    /// [`Error::Unexpected`] for a CRC mismatch, an escape before the flag, or a frame too
    /// short to hold a CRC.
    pub fn push(&mut self, byte: u8) -> Option<Result<Vec<u8>, Error>> {
        if byte == FLAG {
            let frame = std::mem::take(&mut self.frame);
            let escaped = std::mem::replace(&mut self.escaped, false);
            if let Some(reason) = self.discarding.take() {
                return Some(Err(if reason == "too long" {
                    Error::BadLength {
                        what: "DIAG HDLC frame",
                        length: MAX_FRAME_LEN as u64 + 1,
                        limit: MAX_FRAME_LEN as u64,
                    }
                } else {
                    bad_frame(reason)
                }));
            }
            if escaped {
                return Some(Err(bad_frame("an escape byte right before the flag")));
            }
            if frame.is_empty() {
                // Back-to-back flags (an opening flag): nothing to report.
                return None;
            }
            return Some(check(frame));
        }
        if self.discarding.is_some() {
            return None;
        }
        let value = if self.escaped {
            self.escaped = false;
            byte ^ ESCAPE_XOR
        } else if byte == ESCAPE {
            self.escaped = true;
            return None;
        } else {
            byte
        };
        // Payload plus the two CRC bytes.
        if self.frame.len() >= MAX_FRAME_LEN + 2 {
            self.frame = Vec::new();
            self.discarding = Some("too long");
            return None;
        }
        self.frame.push(value);
        None
    }

    /// Bytes of the frame in progress.
    #[must_use]
    pub fn buffered(&self) -> usize {
        self.frame.len()
    }
}

fn bad_frame(reason: &'static str) -> Error {
    Error::Unexpected {
        expected: "a DIAG HDLC frame with a valid CRC-16/X.25",
        got: reason.to_owned(),
    }
}

fn check(mut frame: Vec<u8>) -> Result<Vec<u8>, Error> {
    if frame.len() < 3 {
        return Err(bad_frame("a frame too short to hold a command and a CRC"));
    }
    let split = frame.len() - 2;
    let crc = frame
        .get(split..)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .unwrap_or(0);
    frame.truncate(split);
    if crc16_x25(&frame) != crc {
        return Err(bad_frame("a CRC mismatch"));
    }
    Ok(frame)
}

/// Decodes the frames in `bytes` (convenience over [`Decoder`]); bytes after the last flag
/// are ignored.
#[must_use]
pub fn decode_all(bytes: &[u8]) -> Vec<Result<Vec<u8>, Error>> {
    let mut d = Decoder::new();
    bytes.iter().filter_map(|&b| d.push(b)).collect()
}

/// Which DIAG command asks for emergency download mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DiagEdlCommand {
    /// `4B 65 01 00`: subsystem "system operations", "reset to EDL" (current firmware).
    #[default]
    SubsysEdlReset,
    /// `3A`: `DIAG_DLOAD_F`, for older firmware.
    Dload,
}

impl DiagEdlCommand {
    /// The unframed DIAG request.
    #[must_use]
    pub fn request(self) -> Vec<u8> {
        match self {
            Self::SubsysEdlReset => {
                let [lo, hi] = SYSTEM_OPS_EDL_RESET.to_le_bytes();
                vec![DIAG_SUBSYS_CMD_F, SUBSYS_SYSTEM_OPERATIONS, lo, hi]
            }
            Self::Dload => vec![DIAG_DLOAD_F],
        }
    }
}

/// Asks a modem in normal mode to reboot into emergency download mode. After `Ok`, the modem
/// leaves the bus and comes back as `05C6:9008` (see [`crate::discover::wait_for_edl`]).
pub trait EdlSwitch {
    /// Sends the request and waits for the modem to take it.
    ///
    /// # Errors
    /// [`Error::Timeout`] when the modem does not answer; [`Error::Unsupported`] when it
    /// refuses; [`Error::Transport`] when the port fails.
    fn switch_to_edl(&mut self) -> Result<(), Error>;
}

/// Whether an error is the port going away, which after a switch request means the modem is
/// rebooting as asked (some firmware resets before its answer leaves).
fn is_hangup(e: &Error) -> bool {
    matches!(e, Error::Transport(io) if matches!(
        io.kind(),
        std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionAborted | std::io::ErrorKind::UnexpectedEof
    ))
}

/// The DIAG switch over a modem's DIAG port (a tty, or USB bulk).
#[derive(Debug)]
pub struct DiagSwitch<T: Transport> {
    transport: T,
    command: DiagEdlCommand,
    timeout: Duration,
}

impl<T: Transport> DiagSwitch<T> {
    /// A switch sending `command` over `transport`, waiting `timeout` for each read.
    pub fn new(transport: T, command: DiagEdlCommand, timeout: Duration) -> Self {
        Self {
            transport,
            command,
            timeout,
        }
    }

    /// The transport back.
    pub fn into_inner(self) -> T {
        self.transport
    }
}

impl<T: Transport> EdlSwitch for DiagSwitch<T> {
    fn switch_to_edl(&mut self) -> Result<(), Error> {
        let request = self.command.request();
        write_all(&mut self.transport, &encode(&request), self.timeout)?;
        let mut decoder = Decoder::new();
        let mut frames = 0usize;
        let mut buf = [0u8; 512];
        let mut zlps = 0usize;
        let mut total = 0usize;
        loop {
            let n = match self.transport.read(&mut buf, self.timeout) {
                Ok(n) => n,
                Err(e) if is_hangup(&e) => return Ok(()),
                Err(e) => return Err(e),
            };
            if n == 0 {
                zlps += 1;
                if zlps > crate::driver::MAX_CONSECUTIVE_ZLPS {
                    return Err(Error::Timeout {
                        waiting_for: "the modem's answer to the DIAG switch",
                    });
                }
                continue;
            }
            zlps = 0;
            total = total.saturating_add(n);
            if total > MAX_BYTES_BEFORE_ANSWER {
                return Err(Error::BadLength {
                    what: "DIAG bytes before the switch answer",
                    length: total as u64,
                    limit: MAX_BYTES_BEFORE_ANSWER as u64,
                });
            }
            for &b in buf.get(..n).unwrap_or(&[]) {
                let Some(frame) = decoder.push(b) else {
                    continue;
                };
                frames += 1;
                if frames > MAX_FRAMES_BEFORE_ANSWER {
                    return Err(Error::BadLength {
                        what: "DIAG frames before the switch answer",
                        length: frames as u64,
                        limit: MAX_FRAMES_BEFORE_ANSWER as u64,
                    });
                }
                // A damaged frame may be an unsolicited log: keep listening.
                let Ok(payload) = frame else { continue };
                if payload.starts_with(&request) {
                    return Ok(());
                }
                if let Some((&code, rest)) = payload.split_first()
                    && DIAG_ERROR_CODES.contains(&code)
                    && rest.starts_with(&request)
                {
                    return Err(Error::Unsupported(format!(
                        "the modem refused the DIAG switch to download mode: {} ({code:#04x})",
                        diag_error_name(code)
                    )));
                }
            }
        }
    }
}

/// A name for a DIAG error response code.
#[must_use]
pub fn diag_error_name(code: u8) -> &'static str {
    match code {
        0x13 => "bad command",
        0x14 => "bad parameter",
        0x15 => "bad length",
        0x18 => "not allowed in this mode",
        0x47 => "security privileges required",
        _ => "unknown error",
    }
}

/// The AT alternative: a vendor command on the modem's AT port. The command differs between
/// vendors and firmware (check the modem's AT manual), so it is configuration, never guessed.
#[derive(Debug)]
pub struct AtSwitch<T: Transport> {
    transport: T,
    command: String,
    timeout: Duration,
}

impl<T: Transport> AtSwitch<T> {
    /// A switch sending `command` (without the trailing CR) over `transport`.
    ///
    /// # Errors
    /// [`Error::Unsupported`] for a command that does not start with `AT` or holds a CR/LF.
    pub fn new(transport: T, command: &str, timeout: Duration) -> Result<Self, Error> {
        let ok = command.len() > 2
            && command.len() < 256
            && command
                .get(..2)
                .is_some_and(|p| p.eq_ignore_ascii_case("at"))
            && command.bytes().all(|b| (0x20..0x7F).contains(&b));
        if !ok {
            return Err(Error::Unsupported(format!(
                "'{command}' is not a single-line AT command"
            )));
        }
        Ok(Self {
            transport,
            command: command.to_owned(),
            timeout,
        })
    }
}

impl<T: Transport> EdlSwitch for AtSwitch<T> {
    fn switch_to_edl(&mut self) -> Result<(), Error> {
        let line = format!("{}\r", self.command);
        write_all(&mut self.transport, line.as_bytes(), self.timeout)?;
        let mut seen: Vec<u8> = Vec::new();
        let mut buf = [0u8; 256];
        loop {
            let n = match self.transport.read(&mut buf, self.timeout) {
                Ok(n) => n,
                Err(e) if is_hangup(&e) => return Ok(()),
                Err(e) => return Err(e),
            };
            seen.extend_from_slice(buf.get(..n).unwrap_or(&[]));
            let text = String::from_utf8_lossy(&seen);
            for line in text.lines().map(str::trim) {
                if line == "OK" {
                    return Ok(());
                }
                if line == "ERROR" || line.starts_with("+CME ERROR") {
                    return Err(Error::Unsupported(format!(
                        "the modem answered '{line}' to '{}'",
                        self.command
                    )));
                }
            }
            if seen.len() > MAX_AT_RESPONSE {
                return Err(Error::BadLength {
                    what: "AT response without OK or ERROR",
                    length: seen.len() as u64,
                    limit: MAX_AT_RESPONSE as u64,
                });
            }
        }
    }
}

/// The DIAG side of a modem in normal mode, for tests and the pty emulator: answers the EDL
/// switch commands with their echo (as firmware does) and then stops talking (it reboots),
/// answers anything else with `0x13` (bad command) and the request, and ignores frames with a
/// bad CRC, as firmware does.
#[derive(Clone, Debug, Default)]
pub struct DiagDevice {
    decoder: Decoder,
    out: VecDeque<Vec<u8>>,
    switched: Option<DiagEdlCommand>,
    refuse: bool,
    chatter: bool,
}

/// An unsolicited DIAG extended message (`0x79`) as a modem streams them, sent before answers
/// when [`DiagDevice::with_chatter`] is set.
const CHATTER: &[u8] = &[0x79, 0x00, 0x00, 0x00, 0x7E, 0x7D, b'h', b'i'];

impl DiagDevice {
    /// A modem in normal mode.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// A modem whose firmware refuses the switch (answers `0x13` and the request).
    #[must_use]
    pub fn refusing(mut self) -> Self {
        self.refuse = true;
        self
    }

    /// Streams an unsolicited log frame before every answer, as busy modems do.
    #[must_use]
    pub fn with_chatter(mut self) -> Self {
        self.chatter = true;
        self
    }

    /// Which switch command the modem obeyed, if any.
    #[must_use]
    pub fn switched(&self) -> Option<DiagEdlCommand> {
        self.switched
    }

    /// Answers one decoded request.
    fn answer(&mut self, request: &[u8]) {
        if self.chatter {
            self.out.push_back(encode(CHATTER));
        }
        let command = [DiagEdlCommand::SubsysEdlReset, DiagEdlCommand::Dload]
            .into_iter()
            .find(|c| request == c.request().as_slice());
        match command {
            Some(c) if !self.refuse => {
                self.out.push_back(encode(request));
                self.switched = Some(c);
            }
            _ => {
                let mut answer = vec![0x13];
                answer.extend_from_slice(request.get(..request.len().min(64)).unwrap_or(&[]));
                self.out.push_back(encode(&answer));
            }
        }
    }
}

impl Endpoint for DiagDevice {
    fn receive(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if self.switched.is_some() {
                // Rebooting into download mode: the DIAG port is gone.
                return;
            }
            if let Some(Ok(request)) = self.decoder.push(b) {
                self.answer(&request);
            }
        }
    }

    fn transmit(&mut self) -> Option<Vec<u8>> {
        self.out.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::transport::{Framing, MemoryTransport};

    #[test]
    fn crc16_x25_check_value() {
        // The catalogue check value of CRC-16/IBM-SDLC (= X.25).
        assert_eq!(crc16_x25(b"123456789"), 0x906E);
        assert_eq!(crc16_x25(b""), 0x0000);
    }

    #[test]
    fn the_switch_frame_is_byte_exact() {
        // linux-msm/qdl diag_switch.c: {0x4b, 0x65, 0x01, 0x00, 0x54, 0x0f, 0x7e}.
        assert_eq!(
            encode(&DiagEdlCommand::SubsysEdlReset.request()),
            [0x4B, 0x65, 0x01, 0x00, 0x54, 0x0F, 0x7E]
        );
        // DIAG_DLOAD_F alone: CRC 0x6EA1, little-endian.
        assert_eq!(
            encode(&DiagEdlCommand::Dload.request()),
            [0x3A, 0xA1, 0x6E, 0x7E]
        );
    }

    #[test]
    fn flag_and_escape_bytes_are_escaped_and_restored() {
        let payload = [0x7E, 0x7D, 0x00, 0x5E, 0x5D];
        let framed = encode(&payload);
        assert_eq!(&framed[..4], &[0x7D, 0x5E, 0x7D, 0x5D]);
        assert_eq!(framed.iter().filter(|&&b| b == FLAG).count(), 1);
        let frames = decode_all(&framed);
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].as_ref().unwrap(), &payload);
    }

    #[test]
    fn a_flipped_bit_is_a_crc_error_and_the_next_frame_still_decodes() {
        let mut bytes = encode(&[0x4B, 0x65, 0x01, 0x00]);
        bytes[1] ^= 0x01;
        bytes.extend_from_slice(&encode(&[0x00]));
        let frames = decode_all(&bytes);
        assert!(matches!(&frames[0], Err(Error::Unexpected { got, .. }) if got.contains("CRC")));
        assert_eq!(frames[1].as_ref().unwrap(), &[0x00]);
    }

    #[test]
    fn an_endless_frame_is_refused_with_bounded_memory() {
        let mut d = Decoder::new();
        for _ in 0..(MAX_FRAME_LEN * 4) {
            assert!(d.push(0x41).is_none());
            assert!(d.buffered() <= MAX_FRAME_LEN + 2);
        }
        assert!(matches!(d.push(FLAG), Some(Err(Error::BadLength { .. }))));
        // Resynchronised.
        let ok: Vec<_> = encode(&[1, 2, 3])
            .into_iter()
            .filter_map(|b| d.push(b))
            .collect();
        assert_eq!(ok.len(), 1);
        assert_eq!(ok[0].as_ref().unwrap(), &[1, 2, 3]);
    }

    fn switch_over(device: DiagDevice, command: DiagEdlCommand) -> (Result<(), Error>, DiagDevice) {
        let device = Arc::new(Mutex::new(device));
        let link = MemoryTransport::new(device.clone(), Framing::Stream);
        let mut switch = DiagSwitch::new(link, command, Duration::from_secs(1));
        let result = switch.switch_to_edl();
        let d = device.lock().unwrap().clone();
        (result, d)
    }

    #[test]
    fn the_diag_switch_is_answered_by_the_modem_and_it_leaves() {
        for command in [DiagEdlCommand::SubsysEdlReset, DiagEdlCommand::Dload] {
            let (result, device) = switch_over(DiagDevice::new().with_chatter(), command);
            result.unwrap();
            assert_eq!(device.switched(), Some(command));
        }
    }

    #[test]
    fn a_refused_switch_names_the_diag_error() {
        let (result, device) = switch_over(DiagDevice::new().refusing(), DiagEdlCommand::default());
        let err = result.unwrap_err();
        assert!(err.to_string().contains("bad command (0x13)"), "{err}");
        assert_eq!(device.switched(), None);
    }

    #[test]
    fn a_silent_port_times_out() {
        // A modem that got something it does not know and a CRC it does not like: silence.
        struct Silent;
        impl Endpoint for Silent {
            fn receive(&mut self, _: &[u8]) {}
            fn transmit(&mut self) -> Option<Vec<u8>> {
                None
            }
        }
        let link = MemoryTransport::new(Arc::new(Mutex::new(Silent)), Framing::Stream);
        let mut switch = DiagSwitch::new(link, DiagEdlCommand::default(), Duration::ZERO);
        assert!(matches!(switch.switch_to_edl(), Err(Error::Timeout { .. })));
    }

    /// A port that streams bytes without a flag forever (a transfer for every read).
    struct Babbler {
        sent: bool,
    }
    impl Endpoint for Babbler {
        fn receive(&mut self, _: &[u8]) {}
        fn transmit(&mut self) -> Option<Vec<u8>> {
            self.sent = !self.sent;
            self.sent.then(|| vec![0x41; 512])
        }
    }

    #[test]
    fn a_port_that_never_stops_talking_is_refused_after_a_bound() {
        let link = MemoryTransport::new(
            Arc::new(Mutex::new(Babbler { sent: false })),
            Framing::Packet,
        );
        let mut switch = DiagSwitch::new(link, DiagEdlCommand::default(), Duration::ZERO);
        assert!(matches!(
            switch.switch_to_edl(),
            Err(Error::BadLength { limit, .. }) if limit == MAX_BYTES_BEFORE_ANSWER as u64
        ));
    }

    /// An AT port answering a fixed text to every line.
    struct AtPort {
        heard: Vec<u8>,
        answer: &'static [u8],
        out: VecDeque<Vec<u8>>,
    }
    impl Endpoint for AtPort {
        fn receive(&mut self, bytes: &[u8]) {
            self.heard.extend_from_slice(bytes);
            if bytes.ends_with(b"\r") {
                self.out.push_back(self.answer.to_vec());
            }
        }
        fn transmit(&mut self) -> Option<Vec<u8>> {
            self.out.pop_front()
        }
    }

    #[test]
    fn the_at_switch_sends_the_configured_line_and_reads_the_result_code() {
        for (answer, ok) in [
            (&b"\r\nOK\r\n"[..], true),
            (&b"\r\nERROR\r\n"[..], false),
            (&b"\r\n+CME ERROR: 4\r\n"[..], false),
        ] {
            let port = Arc::new(Mutex::new(AtPort {
                heard: Vec::new(),
                answer,
                out: VecDeque::new(),
            }));
            let link = MemoryTransport::new(port.clone(), Framing::Stream);
            let mut switch = AtSwitch::new(link, "AT+QDOWNLOAD=1", Duration::ZERO).unwrap();
            assert_eq!(switch.switch_to_edl().is_ok(), ok);
            assert_eq!(port.lock().unwrap().heard, b"AT+QDOWNLOAD=1\r");
        }
        let link = MemoryTransport::new(Arc::new(Mutex::new(DiagDevice::new())), Framing::Stream);
        assert!(AtSwitch::new(link, "reboot\r\nAT", Duration::ZERO).is_err());
    }
}
