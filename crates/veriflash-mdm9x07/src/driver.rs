//! The host driver: moves bytes between a [`Transport`] and the Sahara and Firehose state
//! machines, with a timeout on every wait and a bound on everything the device sends.

use std::time::Duration;

use crate::error::Error;
use crate::firehose::{self, Element, Splitter};
use crate::sahara::{self, ChipIdentity, Expect, Identify, Packet, Step, Upload};
use crate::transport::{Transport, write_all};

/// Zero-length packets tolerated in a row before the wait counts as a timeout.
pub const MAX_CONSECUTIVE_ZLPS: usize = 64;
/// Log lines tolerated before one response.
pub const MAX_LOGS_PER_RESPONSE: usize = 4096;
/// Bytes asked of the transport per read.
const READ_BUF: usize = 64 * 1024;

/// How long each kind of wait may take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// A protocol answer (Sahara packet, Firehose response).
    pub command: Duration,
    /// Raw data, an erase or a program's final answer.
    pub data: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            command: Duration::from_secs(5),
            data: Duration::from_secs(30),
        }
    }
}

/// What talks on the other end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceMode {
    /// The boot ROM, in Sahara.
    Sahara,
    /// A Firehose programmer that already runs.
    Firehose,
}

/// Storage geometry as `getstorageinfo` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StorageInfo {
    /// Page (sector) size in bytes.
    pub page_size: u32,
    /// Erase block size in bytes.
    pub block_size: u32,
    /// Erase blocks on the device.
    pub total_blocks: u32,
}

impl StorageInfo {
    /// Pages per erase block.
    #[must_use]
    pub fn pages_per_block(&self) -> u32 {
        self.block_size / self.page_size.max(1)
    }
}

/// The largest device this driver accepts, in erase blocks.
pub const MAX_TOTAL_BLOCKS: u32 = 1 << 20;

/// A host-side connection to one device.
pub struct Connection<T: Transport> {
    transport: T,
    rx: Splitter,
    timeouts: Timeouts,
    logs: Vec<String>,
    max_payload: usize,
}

impl<T: Transport> std::fmt::Debug for Connection<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("timeouts", &self.timeouts)
            .field("max_payload", &self.max_payload)
            .field("logs", &self.logs.len())
            .finish_non_exhaustive()
    }
}

impl<T: Transport> Connection<T> {
    /// A connection over `transport`.
    pub fn new(transport: T, timeouts: Timeouts) -> Self {
        Self {
            transport,
            rx: Splitter::new(),
            timeouts,
            logs: Vec::new(),
            max_payload: 0,
        }
    }

    /// Every `<log/>` line the programmer sent, in order.
    #[must_use]
    pub fn logs(&self) -> &[String] {
        &self.logs
    }

    /// The raw payload size the programmer accepted in `configure` (0 before).
    #[must_use]
    pub fn max_payload(&self) -> usize {
        self.max_payload
    }

    /// Reads once more from the transport, skipping zero-length packets.
    fn read_more(&mut self, timeout: Duration, waiting_for: &'static str) -> Result<(), Error> {
        let mut buf = vec![0u8; READ_BUF];
        for _ in 0..=MAX_CONSECUTIVE_ZLPS {
            let n = self.transport.read(&mut buf, timeout)?;
            if n > 0 {
                self.rx.push(buf.get(..n).unwrap_or(&[]));
                return Ok(());
            }
        }
        Err(Error::Timeout { waiting_for })
    }

    fn fill(&mut self, min: usize, timeout: Duration, what: &'static str) -> Result<(), Error> {
        while self.rx.buffered() < min {
            self.read_more(timeout, what)?;
        }
        Ok(())
    }

    fn send(&mut self, bytes: &[u8]) -> Result<(), Error> {
        write_all(&mut self.transport, bytes, self.timeouts.command)
    }

    /// Who is talking: the boot ROM (its `HELLO` is buffered) or a programmer that already
    /// runs (it sent XML, or answers a `<nop/>`).
    ///
    /// # Errors
    /// [`Error::Timeout`] when the device says nothing and does not answer a `<nop/>`.
    pub fn probe(&mut self) -> Result<DeviceMode, Error> {
        match self.fill(1, self.timeouts.command, "the device's Sahara HELLO") {
            Ok(()) => {}
            Err(Error::Timeout { .. }) => {
                self.command(&Element::new("nop"))?;
                return Ok(DeviceMode::Firehose);
            }
            Err(e) => return Err(e),
        }
        if self.rx.peek().first() == Some(&b'<') {
            return Ok(DeviceMode::Firehose);
        }
        Ok(DeviceMode::Sahara)
    }

    /// Reads one Sahara packet.
    ///
    /// # Errors
    /// [`Error::Timeout`], or the codec's error for a packet that breaks its layout.
    pub fn sahara_packet(&mut self) -> Result<Packet, Error> {
        self.fill(sahara::HEADER_LEN, self.timeouts.command, "a Sahara packet")?;
        let (_, len) = sahara::peek_header(self.rx.peek())?;
        self.fill(len, self.timeouts.command, "a Sahara packet")?;
        Packet::decode(&self.rx.take_raw(len))
    }

    /// Runs command mode: serial number and hardware id, then back to image transfer.
    ///
    /// # Errors
    /// The state machine's and the transport's errors.
    pub fn identify(&mut self) -> Result<ChipIdentity, Error> {
        let mut machine = Identify::new();
        loop {
            let step = match machine.expects() {
                Expect::Packet => {
                    let p = self.sahara_packet()?;
                    machine.on_packet(&p)?
                }
                Expect::Raw(n) => {
                    self.fill(n, self.timeouts.command, "a command-mode answer")?;
                    let raw = self.rx.take_raw(n);
                    machine.on_raw(&raw)?
                }
                Expect::Nothing => Step::Finished,
            };
            match step {
                Step::Send(p) => self.send(&p.encode())?,
                Step::Finish(p) => {
                    self.send(&p.encode())?;
                    break;
                }
                Step::Finished => break,
                Step::Wait | Step::SendImage { .. } => {}
            }
        }
        machine.identity().ok_or(Error::Unexpected {
            expected: "the chip's identity",
            got: "nothing".into(),
        })
    }

    /// Serves `image` (the programmer) until the device took it.
    ///
    /// # Errors
    /// The state machine's and the transport's errors; [`Error::ImageRejected`] when the
    /// device refuses the image.
    pub fn upload(&mut self, image: &[u8]) -> Result<(), Error> {
        let mut machine = Upload::new(image.len() as u64);
        while !machine.is_finished() {
            let p = self.sahara_packet()?;
            match machine.on_packet(&p)? {
                Step::Send(p) | Step::Finish(p) => self.send(&p.encode())?,
                Step::SendImage { offset, length } => {
                    let start = usize::try_from(offset).unwrap_or(usize::MAX);
                    let end = start.saturating_add(usize::try_from(length).unwrap_or(0));
                    let bytes = image.get(start..end).ok_or(Error::ReadOutOfRange {
                        offset,
                        length,
                        image_len: image.len() as u64,
                    })?;
                    write_all(&mut self.transport, bytes, self.timeouts.data)?;
                }
                Step::Wait | Step::Finished => {}
            }
        }
        Ok(())
    }

    /// Reads documents until a `<response/>`, collecting the logs before it.
    fn response(
        &mut self,
        timeout: Duration,
        what: &'static str,
    ) -> Result<(Element, Vec<String>), Error> {
        let mut logs = Vec::new();
        loop {
            match self.rx.next_document()? {
                Some(elements) => {
                    for e in elements {
                        if e.is_log() {
                            if logs.len() >= MAX_LOGS_PER_RESPONSE {
                                return Err(Error::BadLength {
                                    what: "Firehose log lines before a response",
                                    length: logs.len() as u64,
                                    limit: MAX_LOGS_PER_RESPONSE as u64,
                                });
                            }
                            let line = e.get("value").unwrap_or("").to_owned();
                            self.logs.push(line.clone());
                            logs.push(line);
                        } else if e.is_response() {
                            return Ok((e, logs));
                        }
                    }
                }
                None => self.read_more(timeout, what)?,
            }
        }
    }

    /// Sends `command` and waits for its ACK.
    ///
    /// # Errors
    /// [`Error::Nak`] with the reason from the preceding logs; transport errors.
    pub fn command(&mut self, command: &Element) -> Result<Element, Error> {
        self.command_with(command, self.timeouts.command)
    }

    fn command_with(&mut self, command: &Element, timeout: Duration) -> Result<Element, Error> {
        self.send(&firehose::document(std::slice::from_ref(command)))?;
        self.ack(&command.name, timeout)
    }

    fn ack(&mut self, command: &str, timeout: Duration) -> Result<Element, Error> {
        let (response, logs) = self.response(timeout, "a Firehose response")?;
        if response.is_ack() {
            Ok(response)
        } else {
            Err(Error::Nak {
                command: command.to_owned(),
                reason: firehose::nak_reason(&logs, &response),
            })
        }
    }

    /// Configures the programmer for NAND with `proposal` bytes per raw transfer; on a
    /// counter-proposal (a NAK naming a smaller size) configures again with it.
    ///
    /// # Errors
    /// [`Error::Nak`] when the programmer refuses both.
    pub fn configure(&mut self, proposal: usize) -> Result<usize, Error> {
        let mut size = proposal;
        for _ in 0..2 {
            let cmd = Element::new("configure")
                .attr("MemoryName", "nand")
                .attr("MaxPayloadSizeToTargetInBytes", size)
                .attr("Verbose", 0)
                .attr("ZlpAwareHost", 1)
                .attr("SkipStorageInit", 0);
            self.send(&firehose::document(&[cmd]))?;
            let (response, logs) = self.response(self.timeouts.command, "the configure answer")?;
            let offered = response
                .number("MaxPayloadSizeToTargetInBytes")
                .ok()
                .and_then(|v| usize::try_from(v).ok());
            if response.is_ack() {
                self.max_payload = offered.unwrap_or(size).min(size);
                return Ok(self.max_payload);
            }
            match offered {
                Some(counter) if counter > 0 && counter < size => size = counter,
                _ => {
                    return Err(Error::Nak {
                        command: "configure".into(),
                        reason: firehose::nak_reason(&logs, &response),
                    });
                }
            }
        }
        Err(Error::Nak {
            command: "configure".into(),
            reason: "no payload size agreed".into(),
        })
    }

    /// Asks for the storage geometry.
    ///
    /// # Errors
    /// [`Error::Nak`]; [`Error::Unsupported`] for a geometry outside what NAND allows.
    pub fn storage_info(&mut self) -> Result<StorageInfo, Error> {
        let before = self.logs.len();
        self.command(&Element::new("getstorageinfo").attr("physical_partition_number", 0))?;
        let logs = self.logs.get(before..).unwrap_or(&[]);
        let find = |key: &str| {
            logs.iter()
                .find_map(|l| firehose::storage_info_number(l, key))
                .and_then(|v| u32::try_from(v).ok())
        };
        let (Some(page_size), Some(block_size), Some(total_blocks)) =
            (find("page_size"), find("block_size"), find("total_blocks"))
        else {
            return Err(Error::Unsupported(
                "getstorageinfo gave no page_size, block_size and total_blocks".into(),
            ));
        };
        let info = StorageInfo {
            page_size,
            block_size,
            total_blocks,
        };
        let ppb = info.pages_per_block();
        if !matches!(page_size, 2048 | 4096)
            || block_size % page_size != 0
            || !matches!(ppb, 32 | 64 | 128 | 256)
            || total_blocks == 0
            || total_blocks > MAX_TOTAL_BLOCKS
        {
            return Err(Error::Unsupported(format!(
                "NAND geometry page {page_size}, block {block_size}, {total_blocks} blocks"
            )));
        }
        Ok(info)
    }

    /// Reads `count` pages from `start`, handing the bytes to `sink` as they arrive.
    ///
    /// # Errors
    /// [`Error::Nak`] (also when the programmer stops after fewer pages: see
    /// [`Self::read_to_last_good_block`]), [`Error::Timeout`], [`Error::Unexpected`] when the
    /// programmer does not switch to raw mode.
    pub fn read(
        &mut self,
        start: u64,
        count: u64,
        page_size: u32,
        sink: &mut dyn FnMut(&[u8]),
    ) -> Result<(), Error> {
        match self.read_pages(start, count, page_size, sink)? {
            None => Ok(()),
            Some(reason) => Err(Error::Nak {
                command: "read".into(),
                reason,
            }),
        }
    }

    /// Reads up to `count` pages from `start` like [`Self::read`], and takes it as the end of
    /// the read when the programmer stops after fewer whole pages and answers NAK: the NAND
    /// programmer skips bad blocks, so a range that reaches the end of the device holds fewer
    /// good pages than it spans, and the programmer runs out of them. Returns the bytes read.
    ///
    /// # Errors
    /// As [`Self::read`], but for that NAK.
    pub fn read_to_last_good_block(
        &mut self,
        start: u64,
        count: u64,
        page_size: u32,
        sink: &mut dyn FnMut(&[u8]),
    ) -> Result<u64, Error> {
        let mut bytes = 0u64;
        self.read_pages(start, count, page_size, &mut |b| {
            bytes += b.len() as u64;
            sink(b);
        })?;
        Ok(bytes)
    }

    /// The read itself: `Some(reason)` when the programmer stopped early with a NAK.
    fn read_pages(
        &mut self,
        start: u64,
        count: u64,
        page_size: u32,
        sink: &mut dyn FnMut(&[u8]),
    ) -> Result<Option<String>, Error> {
        let cmd = Element::new("read")
            .attr("SECTOR_SIZE_IN_BYTES", page_size)
            .attr("num_partition_sectors", count)
            .attr("physical_partition_number", 0)
            .attr("start_sector", start);
        let ack = self.command(&cmd)?;
        if !ack.is_rawmode() {
            return Err(Error::Unexpected {
                expected: "rawmode=\"true\" before read data",
                got: format!("{:?}", ack.attrs),
            });
        }
        let total = count.saturating_mul(u64::from(page_size));
        let mut got = 0u64;
        while got < total {
            if self.rx.buffered() == 0 {
                self.read_more(self.timeouts.data, "read data")?;
            }
            if got.is_multiple_of(u64::from(page_size))
                && let Some((response, logs)) =
                    self.answer_instead_of_data(total - got, page_size)?
            {
                if response.is_ack() {
                    return Err(Error::Unexpected {
                        expected: "the rest of the read data",
                        got: format!("an ACK after {got} of {total} bytes"),
                    });
                }
                return Ok(Some(firehose::nak_reason(&logs, &response)));
            }
            let want = usize::try_from(total - got).unwrap_or(usize::MAX);
            let bytes = self.rx.take_raw(want);
            got += bytes.len() as u64;
            sink(&bytes);
        }
        self.ack("read", self.timeouts.data)?;
        Ok(None)
    }

    /// At a page boundary of read data: the programmer's `<response/>` (with the log lines
    /// before it) when what is buffered is its answer rather than the next page, because it
    /// stopped early; `None`, and nothing taken, when it is data. Raw data carries no framing,
    /// so the answer is recognised by what it is: bytes that start with an XML declaration and
    /// parse as whole Firehose documents holding only `<log/>` and `<response/>` elements, one
    /// after another (once one such document is whole and nothing else follows it, the
    /// response is waited for). A page that happened to hold exactly that would be taken for
    /// an answer and the read would fail: never data misread.
    fn answer_instead_of_data(
        &mut self,
        left: u64,
        page_size: u32,
    ) -> Result<Option<(Element, Vec<String>)>, Error> {
        const DECLARATION: &[u8] = b"<?xml";
        let looks_like_xml = |b: &[u8]| {
            let n = b.len().min(DECLARATION.len());
            b.get(..n) == DECLARATION.get(..n)
        };
        // A page of data comes whole; an answer is shorter than one and ends in `</data>`:
        // wait for one or the other before deciding (an answer split across transfers).
        let page = usize::try_from(left.min(u64::from(page_size))).unwrap_or(usize::MAX);
        while looks_like_xml(self.rx.peek())
            && self.rx.buffered() < page
            && !firehose::contains_document_end(self.rx.peek())
        {
            self.read_more(self.timeouts.data, "read data")?;
        }
        if !self.rx.peek().starts_with(DECLARATION) {
            return Ok(None);
        }
        let mut probe = self.rx.clone();
        let mut logs = Vec::new();
        let mut documents = 0usize;
        while let Ok(Some(elements)) = probe.next_document() {
            if elements.is_empty() || !elements.iter().all(|e| e.is_log() || e.is_response()) {
                return Ok(None);
            }
            documents += 1;
            // Firehose sends one document after another; data would go on with other bytes.
            let rest = probe.peek();
            let gap = rest
                .iter()
                .take_while(|b| b.is_ascii_whitespace() || **b == 0)
                .count();
            let next = rest.get(gap..).unwrap_or_default();
            let is_response = elements.iter().any(Element::is_response);
            if !is_response && !next.is_empty() && !looks_like_xml(next) {
                return Ok(None);
            }
            for e in elements {
                if e.is_response() {
                    self.rx = probe;
                    self.logs.extend(logs.iter().cloned());
                    return Ok(Some((e, logs)));
                }
                logs.push(e.get("value").unwrap_or("").to_owned());
            }
        }
        if documents == 0 {
            return Ok(None);
        }
        // Log lines came whole; the response is still on its way.
        self.rx = probe;
        self.logs.extend(logs.iter().cloned());
        let (response, mut more) = self.response(self.timeouts.data, "the read's answer")?;
        logs.append(&mut more);
        Ok(Some((response, logs)))
    }

    /// Erases `count` pages (whole blocks) from `start`. `PAGES_PER_BLOCK` goes with it: the
    /// NAND programmer checks it against the device (bkerler/edl issue 522).
    ///
    /// # Errors
    /// [`Error::Nak`], [`Error::Timeout`].
    pub fn erase(
        &mut self,
        start: u64,
        count: u64,
        page_size: u32,
        pages_per_block: u32,
    ) -> Result<(), Error> {
        let cmd = Element::new("erase")
            .attr("PAGES_PER_BLOCK", pages_per_block)
            .attr("SECTOR_SIZE_IN_BYTES", page_size)
            .attr("num_partition_sectors", count)
            .attr("physical_partition_number", 0)
            .attr("start_sector", start);
        self.command_with(&cmd, self.timeouts.data)?;
        Ok(())
    }

    /// Starts a `program` of `count` pages at `start` bounded by `last_sector`; raw bytes go
    /// with [`Connection::send_raw`], the answer with [`Connection::finish_program`].
    ///
    /// # Errors
    /// [`Error::Nak`], [`Error::Unexpected`] when the programmer does not switch to raw mode.
    pub fn start_program(
        &mut self,
        start: u64,
        count: u64,
        page_size: u32,
        pages_per_block: u32,
        last_sector: u64,
    ) -> Result<(), Error> {
        let cmd = Element::new("program")
            .attr("SECTOR_SIZE_IN_BYTES", page_size)
            .attr("num_partition_sectors", count)
            .attr("physical_partition_number", 0)
            .attr("start_sector", start)
            .attr("PAGES_PER_BLOCK", pages_per_block)
            .attr("last_sector", last_sector);
        let ack = self.command(&cmd)?;
        if !ack.is_rawmode() {
            return Err(Error::Unexpected {
                expected: "rawmode=\"true\" before program data",
                got: format!("{:?}", ack.attrs),
            });
        }
        Ok(())
    }

    /// Sends raw program bytes, in transfers of at most the negotiated payload size.
    ///
    /// # Errors
    /// Transport errors.
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<(), Error> {
        let max = self.max_payload.max(1);
        for piece in bytes.chunks(max) {
            write_all(&mut self.transport, piece, self.timeouts.data)?;
        }
        Ok(())
    }

    /// Waits for the answer that ends a `program`.
    ///
    /// # Errors
    /// [`Error::Nak`] with the programmer's reason, [`Error::Timeout`].
    pub fn finish_program(&mut self) -> Result<(), Error> {
        self.ack("program", self.timeouts.data)?;
        Ok(())
    }

    /// `<power value="reset"/>`: the device leaves download mode.
    ///
    /// # Errors
    /// [`Error::Nak`], [`Error::Timeout`].
    pub fn power_reset(&mut self) -> Result<(), Error> {
        self.command(&Element::new("power").attr("value", "reset"))?;
        Ok(())
    }
}
