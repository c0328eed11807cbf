//! An emulated MDM9x07 in emergency download mode: the boot ROM's Sahara side (HELLO, command
//! mode with serial number and hardware id, serving of the programmer ELF by `READ_DATA`), then
//! a Firehose programmer with the 9x07 function list (`configure`, `getstorageinfo`, `read`,
//! `program`, `erase`, `power`, `nop`; no `getsha256digest`, no `patch`) over simulated NAND.
//!
//! It reuses the crate's codecs ([`crate::sahara::Packet`], [`crate::firehose`]) for the device side. The
//! NAND is erased to `0xFF`, programming only clears bits and refuses pages that are not
//! erased, blocks are erased whole, bad blocks are skipped by `program`, `read` and `erase`
//! alike, and a MIBIB block holds the partition table the host must read. Faults: NAK with a
//! logged reason for a chosen command, coalesced XML, a zero-length packet before read data,
//! and a power cut at any page program.
//!
//! A test device, behind the crate's feature `emulator` (off by default), so an embedder who
//! links the plugin for real modems does not compile it.
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use veriflash_mdm9x07::emulator::{Emulator, EmulatorConfig};
//! use veriflash_mdm9x07::transport::{Framing, MemoryTransport};
//! use veriflash_mdm9x07::{Mdm9x07Session, SessionConfig};
//! use veriflash_plugin::FlashSession;
//!
//! let device = Arc::new(Mutex::new(Emulator::new(EmulatorConfig::mdm9607())?));
//! let link = MemoryTransport::new(device.clone(), Framing::Packet);
//! let mut session = Mdm9x07Session::new(link, SessionConfig::default());
//!
//! // Identity over Sahara command mode; nothing has been uploaded yet.
//! let info = session.device_info()?;
//! assert_eq!(info.chipset, "mdm9607");
//! assert_eq!(info.active_slot, None);
//! assert_eq!(device.lock().unwrap().programmer_uploads(), 0);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::{BTreeSet, VecDeque};

use crate::error::Error;
use crate::firehose::{self, Element, Splitter};
use crate::mibib::{self, Entry, Table};
use crate::sahara::{Packet, exec, mode, peek_header};
use crate::transport::Endpoint;

/// The image id the emulator asks for (the Firehose programmer).
pub const PROGRAMMER_IMAGE_ID: u32 = 13;
/// The largest programmer the emulator loads.
pub const MAX_PROGRAMMER_LEN: u64 = 16 << 20;
/// Most program headers the emulator reads.
const MAX_PHDRS: u32 = 16;
/// `MaxXMLSizeInBytes` the programmer announces.
const MAX_XML_SIZE: usize = 4096;
/// The first log line of a `nop` answer.
const BUILD_DATE_LOG: &str = "INFO: Binary build date: Mar 20 2018 @ 03:13:57";
/// Sahara status for an ELF header the device cannot use.
const STATUS_INVALID_ELF_HDR: u32 = 0x13;

/// What the emulated device is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EmulatorConfig {
    /// Chip serial number.
    pub serial: u32,
    /// Hardware id: MSM id (upper 32 bits), OEM id, model id.
    pub hw_id: u64,
    /// NAND page size (2048 or 4096).
    pub page_size: usize,
    /// Pages per erase block.
    pub pages_per_block: u32,
    /// Erase blocks on the device.
    pub blocks: u32,
    /// Blocks marked bad at the factory.
    pub bad_blocks: Vec<u32>,
    /// The block holding the MIBIB.
    pub mibib_block: u32,
    /// The partition table written into the MIBIB.
    pub partitions: Vec<Entry>,
    /// The most bytes the programmer takes per raw transfer.
    pub max_payload_to_target: usize,
    /// The most bytes the programmer sends per raw transfer.
    pub max_payload_from_target: usize,
    /// Bytes per Sahara `READ_DATA` request.
    pub sahara_read_len: u32,
    /// Ask with `READ_DATA64` instead of `READ_DATA`.
    pub read_data64: bool,
    /// The SHA-256 of the OEM root key the boot ROM trusts (answered to `EXECUTE` 0x03, once
    /// per root: twice).
    pub oem_pk_hash: [u8; 32],
    /// The SBL software version (answered to `EXECUTE` 0x07).
    pub sbl_sw_version: u32,
}

/// A stand-in OEM PK hash: the SHA-256 of a name.
fn pk_hash_of(name: &str) -> [u8; 32] {
    veriflash_hash::sha256(name.as_bytes())
}

/// The `EXECUTE` commands the emulated boot ROM answers (Sahara version 2 command mode,
/// as bkerler/edl `sahara_defs.py` lists them and linux-msm/qdl `sahara_command_info`
/// reads them); the others end with `END_OF_IMAGE` status 0x1E ("unsupported client
/// command"), and the boot ROM stays in command mode.
const EXEC_COMMANDS: [u32; 5] = [
    exec::SERIAL_NUM_READ,
    exec::MSM_HW_ID_READ,
    exec::OEM_PK_HASH_READ,
    exec::GET_SOFTWARE_VERSION_SBL,
    exec::GET_COMMAND_ID_LIST,
];
/// Sahara status for an `EXECUTE` of a command the boot ROM does not have.
const STATUS_EXEC_CMD_UNSUPPORTED: u32 = 0x1E;

fn entry(name: &str, offset: u32, length: u32) -> Entry {
    Entry {
        raw_name: name.to_owned(),
        offset,
        length,
        attrs: [0xFF, 0x01, 0xFF],
        which_flash: 0,
    }
}

impl EmulatorConfig {
    /// An MDM9607 hotspot with a 1 Gbit NAND: 2 KiB pages, 64 pages per block, 1024 blocks
    /// (128 MiB), two bad blocks, the MIBIB at block 10 (sector 0x280), OEM id `0x1234` /
    /// model id `0x0001`.
    #[must_use]
    pub fn mdm9607() -> Self {
        Self {
            serial: 0x1EE7_CAFE,
            hw_id: 0x0004_A0E1_1234_0001,
            page_size: 2048,
            pages_per_block: 64,
            blocks: 1024,
            bad_blocks: vec![52, 140],
            mibib_block: 10,
            partitions: vec![
                entry("0:SBL", 0, 10),
                entry("0:MIBIB", 10, 2),
                entry("0:EFS2", 12, 28),
                entry("0:TZ", 40, 6),
                entry("0:RPM", 46, 2),
                entry("0:aboot", 48, 2),
                entry("0:boot", 50, 40),
                entry("0:modem", 90, 40),
                entry("0:system", 130, mibib::GROW),
            ],
            max_payload_to_target: 64 * 1024,
            max_payload_from_target: 16 * 1024,
            sahara_read_len: 4096,
            read_data64: false,
            oem_pk_hash: pk_hash_of("acme root"),
            sbl_sw_version: 0,
        }
    }

    /// A Quectel EC25-like module: MDM9207 with a 4 Gbit NAND of 4 KiB pages and 256 KiB
    /// blocks (2048 blocks, 512 MiB; the geometry of Quectel's `p4K_b256K` bundles), its
    /// MIBIB at block 10 (sector 640, where stock bundles write `partition_complete_p4K_b256K.mbn`
    /// and where host tools look for it), one bad block, OEM id `0x1234` / model id `0x0025`.
    #[must_use]
    pub fn mdm9207_ec25() -> Self {
        Self {
            serial: 0x0EC2_5001,
            hw_id: 0x0004_80E1_1234_0025,
            page_size: 4096,
            pages_per_block: 64,
            blocks: 2048,
            bad_blocks: vec![301],
            mibib_block: 10,
            partitions: vec![
                entry("0:SBL", 0, 10),
                entry("0:MIBIB", 10, 10),
                entry("0:EFS2", 20, 44),
                entry("0:TZ", 64, 6),
                entry("0:RPM", 70, 4),
                entry("0:aboot", 74, 4),
                entry("0:boot", 78, 60),
                entry("0:modem", 138, 200),
                entry("0:system", 338, mibib::GROW),
            ],
            max_payload_to_target: 64 * 1024,
            max_payload_from_target: 16 * 1024,
            sahara_read_len: 4096,
            read_data64: false,
            oem_pk_hash: pk_hash_of("quectel root"),
            sbl_sw_version: 0,
        }
    }

    /// Bytes per erase block.
    #[must_use]
    pub fn block_size(&self) -> usize {
        self.page_size * self.pages_per_block as usize
    }
}

/// Faults the emulated device injects.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeviceFaults {
    /// Answer this Firehose command (element name) with `<log value="ERROR: reason"/>` and a
    /// NAK: `(command, reason)`.
    pub nak: Option<(String, String)>,
    /// Send everything one host write provokes as one transfer (coalesced XML and data).
    pub coalesce: bool,
    /// Send a zero-length packet before the data of every `read`.
    pub zlp_before_read: bool,
    /// Lose power during the n-th page program (1-based): half the page lands, then the
    /// device goes silent until [`Emulator::power_on`].
    pub power_cut_at_page_program: Option<u64>,
    /// Return the data of the n-th `read` (1-based, counted from when the faults were set)
    /// with its first byte inverted: a NAND or a link that returns other bytes next time.
    pub corrupt_read: Option<u32>,
}

/// Simulated NAND. Blocks are held only once programmed (an erased block is `None`), so a
/// device of a real part's size (256 MiB, 512 MiB) costs memory only for what is written.
#[derive(Clone, Debug)]
pub struct Nand {
    page_size: usize,
    pages_per_block: u32,
    blocks: u32,
    data: Vec<Option<Box<[u8]>>>,
    erased: Vec<u8>,
    bad: BTreeSet<u32>,
    page_programs: u64,
    block_erases: u64,
    cut_at: Option<u64>,
}

impl Nand {
    /// An erased NAND of `blocks` blocks.
    #[must_use]
    pub fn new(page_size: usize, pages_per_block: u32, blocks: u32, bad: &[u32]) -> Self {
        Self {
            page_size,
            pages_per_block,
            blocks,
            data: vec![None; blocks as usize],
            erased: vec![0xFF; page_size],
            bad: bad.iter().copied().collect(),
            page_programs: 0,
            block_erases: 0,
            cut_at: None,
        }
    }

    /// Total pages.
    #[must_use]
    pub fn pages(&self) -> u64 {
        u64::from(self.blocks) * u64::from(self.pages_per_block)
    }

    /// Page programs so far.
    #[must_use]
    pub fn page_programs(&self) -> u64 {
        self.page_programs
    }

    /// Block erases so far.
    #[must_use]
    pub fn block_erases(&self) -> u64 {
        self.block_erases
    }

    fn block_of(&self, page: u64) -> u32 {
        u32::try_from(page / u64::from(self.pages_per_block)).unwrap_or(u32::MAX)
    }

    /// The block of `page` and the page's byte range in it.
    fn range(&self, page: u64) -> Option<(usize, std::ops::Range<usize>)> {
        if page >= self.pages() {
            return None;
        }
        let ppb = u64::from(self.pages_per_block);
        let block = usize::try_from(page / ppb).ok()?;
        let start = usize::try_from(page % ppb).ok()? * self.page_size;
        Some((block, start..start + self.page_size))
    }

    /// Whether `block` is bad.
    #[must_use]
    pub fn is_bad(&self, block: u32) -> bool {
        self.bad.contains(&block)
    }

    /// Erases one block.
    ///
    /// # Errors
    /// [`Error::Storage`] for a bad or absent block.
    pub fn erase_block(&mut self, block: u32) -> Result<(), Error> {
        if block >= self.blocks || self.is_bad(block) {
            return Err(Error::Storage(format!("block {block} is bad or absent")));
        }
        if let Some(b) = self.data.get_mut(block as usize) {
            *b = None;
        }
        self.block_erases += 1;
        Ok(())
    }

    /// Programs one page: only erased pages, only clearing bits.
    ///
    /// # Errors
    /// [`Error::Storage`] for a page that is not erased, in a bad block or absent;
    /// [`Error::PowerLoss`] when the injected cut lands on this program (half the page
    /// landed).
    pub fn program_page(&mut self, page: u64, bytes: &[u8]) -> Result<(), Error> {
        let (block, range) = self
            .range(page)
            .ok_or_else(|| Error::Storage(format!("page {page} is outside the device")))?;
        if self.is_bad(self.block_of(page)) {
            return Err(Error::Storage(format!("page {page} is in a bad block")));
        }
        let block_len = self.page_size * self.pages_per_block as usize;
        let cells = self
            .data
            .get_mut(block)
            .map(|b| b.get_or_insert_with(|| vec![0xFF; block_len].into_boxed_slice()))
            .and_then(|b| b.get_mut(range))
            .unwrap_or_default();
        if cells.iter().any(|b| *b != 0xFF) {
            return Err(Error::Storage(format!(
                "page {page} is programmed again without an erase"
            )));
        }
        self.page_programs += 1;
        let torn = self.cut_at == Some(self.page_programs);
        let n = if torn { bytes.len() / 2 } else { bytes.len() };
        for (c, b) in cells.iter_mut().zip(bytes.iter().take(n)) {
            *c &= *b;
        }
        if torn {
            return Err(Error::PowerLoss);
        }
        Ok(())
    }

    /// One page's bytes.
    #[must_use]
    pub fn page(&self, page: u64) -> &[u8] {
        match self.range(page) {
            Some((block, r)) => match self.data.get(block) {
                Some(Some(b)) => b.get(r).unwrap_or(&[]),
                Some(None) => &self.erased,
                None => &[],
            },
            None => &[],
        }
    }

    /// The physical page after `page` in the bad-block-skipping order, starting the walk at
    /// `page` itself when `first`.
    fn next_good(&self, page: u64) -> Option<u64> {
        let mut p = page;
        while p < self.pages() {
            let block = self.block_of(p);
            if !self.is_bad(block) {
                return Some(p);
            }
            p = (u64::from(block) + 1) * u64::from(self.pages_per_block);
        }
        None
    }

    /// Reads `count` pages starting at `start`, skipping bad blocks.
    #[must_use]
    pub fn read_skipping(&self, start: u64, count: u64) -> Vec<u8> {
        let mut out = Vec::new();
        let mut p = start;
        for _ in 0..count {
            let Some(good) = self.next_good(p) else { break };
            out.extend_from_slice(self.page(good));
            p = good + 1;
        }
        out
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SaharaStep {
    AwaitHelloResp,
    Command,
    CommandData(u32),
    /// Waiting for `len` raw image bytes at `offset`.
    Image {
        offset: u64,
        len: usize,
    },
    AwaitDone,
    Failed,
}

/// What the emulator is doing with the programmer image.
#[derive(Clone, Debug, Default)]
struct ImageLoad {
    /// Bytes received, by offset (the ELF header, program headers, segments).
    header: Vec<u8>,
    segments: Vec<(u64, u64)>,
    next_segment: usize,
    seg_done: u64,
    received: u64,
}

struct RawProgram {
    command: String,
    cursor: u64,
    last: u64,
    remaining: u64,
    page: Vec<u8>,
    error: Option<String>,
}

enum State {
    Sahara(SaharaStep),
    Firehose,
    Off,
}

/// The emulated device (an [`Endpoint`] for [`crate::transport::MemoryTransport`]).
pub struct Emulator {
    config: EmulatorConfig,
    faults: DeviceFaults,
    nand: Nand,
    state: State,
    rx: Vec<u8>,
    splitter: Splitter,
    out: VecDeque<Vec<u8>>,
    image: ImageLoad,
    raw: Option<RawProgram>,
    configured: Option<usize>,
    /// The Firehose command being answered (its name goes into a NAK's error line).
    current: String,
    /// `read` commands answered.
    reads: u32,
    uploads: u32,
    resets: u32,
}

impl std::fmt::Debug for Emulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emulator")
            .field("config", &self.config)
            .field("faults", &self.faults)
            .field("uploads", &self.uploads)
            .field("resets", &self.resets)
            .finish_non_exhaustive()
    }
}

impl Emulator {
    /// A device with its partition table written and its EFS2 filled with calibration data,
    /// powered on in download mode (its `HELLO` queued).
    ///
    /// # Errors
    /// [`Error::Storage`] when the MIBIB block is bad or the table does not fit a page.
    pub fn new(config: EmulatorConfig) -> Result<Self, Error> {
        let mut nand = Nand::new(
            config.page_size,
            config.pages_per_block,
            config.blocks,
            &config.bad_blocks,
        );
        // The table as the device holds it: the last partition's "to the end" (0xFFFFFFFF in
        // a bundle's partition.mbn) is the blocks that remain.
        let table = Table {
            version: mibib::VERSION_4,
            entries: config
                .partitions
                .iter()
                .map(|e| Entry {
                    length: if e.length == mibib::GROW {
                        config.blocks.saturating_sub(e.offset)
                    } else {
                        e.length
                    },
                    ..e.clone()
                })
                .collect(),
        }
        .encode();
        if table.len() > config.page_size {
            return Err(Error::Storage(
                "the partition table does not fit a page".into(),
            ));
        }
        let ppb = u64::from(config.pages_per_block);
        let first = u64::from(config.mibib_block) * ppb;
        nand.program_page(first, &mibib::header_page(config.page_size))?;
        let mut page = table;
        page.resize(config.page_size, 0xFF);
        nand.program_page(first + 1, &page)?;
        if config
            .partitions
            .iter()
            .any(|e| e.offset == 0 && e.raw_name.eq_ignore_ascii_case("0:SBL"))
        {
            nand.program_page(0, &stand_in_sbl_page(config.page_size))?;
        }
        if let Some(efs) = config
            .partitions
            .iter()
            .find(|e| e.raw_name.eq_ignore_ascii_case("0:EFS2"))
        {
            let cal: Vec<u8> = (0..config.page_size)
                .map(|i| u8::try_from(i % 251).unwrap_or(0))
                .collect();
            let p = u64::from(efs.offset) * ppb;
            if let Some(good) = nand.next_good(p) {
                nand.program_page(good, &cal)?;
            }
        }
        let mut emulator = Self {
            config,
            faults: DeviceFaults::default(),
            nand,
            state: State::Off,
            rx: Vec::new(),
            splitter: Splitter::new(),
            out: VecDeque::new(),
            image: ImageLoad::default(),
            raw: None,
            configured: None,
            current: String::new(),
            reads: 0,
            uploads: 0,
            resets: 0,
        };
        emulator.power_on();
        Ok(emulator)
    }

    /// Injects `faults` (replacing earlier ones).
    pub fn set_faults(&mut self, faults: DeviceFaults) {
        self.nand.cut_at = faults
            .power_cut_at_page_program
            .map(|n| self.nand.page_programs + n);
        self.faults = faults;
        self.reads = 0;
    }

    /// Powers the device (back) on in download mode: the boot ROM queues its `HELLO`. NAND
    /// content survives.
    pub fn power_on(&mut self) {
        self.rx.clear();
        self.splitter = Splitter::new();
        self.out.clear();
        self.image = ImageLoad::default();
        self.raw = None;
        self.configured = None;
        self.state = State::Sahara(SaharaStep::AwaitHelloResp);
        self.emit(
            Packet::Hello {
                version: 2,
                version_compatible: 1,
                max_command_len: 0x400,
                mode: mode::IMAGE_TX_PENDING,
            }
            .encode(),
        );
    }

    /// Whether the device is on (not cut off, not reset).
    #[must_use]
    pub fn is_powered(&self) -> bool {
        !matches!(self.state, State::Off)
    }

    /// Whether the Firehose programmer runs.
    #[must_use]
    pub fn programmer_running(&self) -> bool {
        matches!(self.state, State::Firehose)
    }

    /// How many times a programmer was uploaded and started.
    #[must_use]
    pub fn programmer_uploads(&self) -> u32 {
        self.uploads
    }

    /// How many `power reset` commands the device obeyed.
    #[must_use]
    pub fn resets(&self) -> u32 {
        self.resets
    }

    /// The NAND.
    #[must_use]
    pub fn nand(&self) -> &Nand {
        &self.nand
    }

    /// The device's configuration.
    #[must_use]
    pub fn config(&self) -> &EmulatorConfig {
        &self.config
    }

    /// The first `len` bytes of partition `raw_name` (e.g. `0:boot`), read the way the
    /// programmer reads (bad blocks skipped).
    #[must_use]
    pub fn partition_bytes(&self, raw_name: &str, len: usize) -> Vec<u8> {
        let Some(e) = self
            .config
            .partitions
            .iter()
            .find(|e| e.raw_name == raw_name)
        else {
            return Vec::new();
        };
        let ps = self.config.page_size;
        let pages = len.div_ceil(ps) as u64;
        let start = u64::from(e.offset) * u64::from(self.config.pages_per_block);
        let mut bytes = self.nand.read_skipping(start, pages);
        bytes.truncate(len);
        bytes
    }

    fn emit(&mut self, frame: Vec<u8>) {
        self.out.push_back(frame);
    }

    /// Sends each element as its own document, as the real programmer does (a `<log/>` is
    /// written the moment it is logged; qdl `firehose.c` and edl `firehose.py` read one
    /// document per transfer).
    fn send_doc(&mut self, elements: &[Element]) {
        for e in elements {
            self.emit(firehose::document(std::slice::from_ref(e)));
        }
    }

    fn ack(&mut self, rawmode: bool) {
        self.send_doc(&[Element::new("response")
            .attr("value", "ACK")
            .attr("rawmode", rawmode)]);
    }

    /// A refusal as the MDM9x07 NAND programmer words it: the reason as one log line, then
    /// `ERROR 21: Line N: HANDLE_<COMMAND>_FAILURE` (the shape of a real MDM9207
    /// programmer's log, bkerler/edl issue 522: `Attribute 'PAGES_PER_BLOCK'=2048 must be
    /// equal to disk pages per block 64`, then `ERROR 21: Line 2459: HANDLE_PROGRAM_FAILURE`),
    /// then the NAK.
    fn nak(&mut self, reason: &str) {
        let line = match self.current.as_str() {
            "program" => 2459,
            "erase" => 2561,
            "read" => 2303,
            "configure" => 1817,
            _ => 1402,
        };
        self.send_doc(&[
            Element::new("log").attr("value", reason),
            Element::new("log").attr(
                "value",
                format!(
                    "ERROR 21: Line {line}: HANDLE_{}_FAILURE",
                    self.current.to_ascii_uppercase()
                ),
            ),
            Element::new("response")
                .attr("value", "NAK")
                .attr("rawmode", false),
        ]);
    }

    /// The attributes a real programmer's `configure` answer carries (edl `firehose.py`
    /// `configure` reads each; qdl `firehose_configure_response_parser` reads the payload
    /// sizes).
    fn configure_response(&self, value: &str, to_target: usize) -> Element {
        Element::new("response")
            .attr("value", value)
            .attr("MinVersionSupported", 1)
            .attr("MemoryName", "NAND")
            .attr(
                "MaxPayloadSizeFromTargetInBytes",
                self.config.max_payload_from_target,
            )
            .attr("MaxPayloadSizeToTargetInBytes", to_target)
            .attr(
                "MaxPayloadSizeToTargetInBytesSupported",
                self.config.max_payload_to_target,
            )
            .attr("MaxXMLSizeInBytes", MAX_XML_SIZE)
            .attr("Version", 1)
            .attr("TargetName", "9x07")
    }

    fn cut_power(&mut self) {
        self.state = State::Off;
        self.raw = None;
        self.out.clear();
    }

    // ---- Sahara ----

    fn request(&mut self, offset: u64, len: usize) {
        let packet = if self.config.read_data64 {
            Packet::ReadData64 {
                image_id: u64::from(PROGRAMMER_IMAGE_ID),
                offset,
                length: len as u64,
            }
        } else {
            Packet::ReadData {
                image_id: PROGRAMMER_IMAGE_ID,
                offset: u32::try_from(offset).unwrap_or(u32::MAX),
                length: u32::try_from(len).unwrap_or(u32::MAX),
            }
        };
        self.emit(packet.encode());
        self.state = State::Sahara(SaharaStep::Image { offset, len });
    }

    fn image_failed(&mut self, status: u32) {
        self.emit(
            Packet::EndOfImage {
                image_id: PROGRAMMER_IMAGE_ID,
                status,
            }
            .encode(),
        );
        self.state = State::Sahara(SaharaStep::Failed);
    }

    /// The next request after `bytes` arrived for `offset`.
    fn on_image_bytes(&mut self, offset: u64, bytes: &[u8]) {
        self.image.received += bytes.len() as u64;
        if offset == 0 {
            // ELF32 header: e_phoff at 0x1C, e_phentsize at 0x2A, e_phnum at 0x2C.
            self.image.header = bytes.to_vec();
            let h = &self.image.header;
            let u16_at = |at: usize| {
                h.get(at..at + 2)
                    .map(|b| u16::from_le_bytes([b[0], b[1]]))
                    .unwrap_or(0)
            };
            let ok = h.get(..5) == Some(b"\x7fELF\x01");
            let phoff = h
                .get(0x1C..0x20)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .unwrap_or(0);
            let phentsize = u16_at(0x2A);
            let phnum = u16_at(0x2C);
            if !ok || phentsize != 32 || phnum == 0 || u32::from(phnum) > MAX_PHDRS {
                self.image_failed(STATUS_INVALID_ELF_HDR);
                return;
            }
            self.request(u64::from(phoff), usize::from(phnum) * 32);
            return;
        }
        if self.image.segments.is_empty() && self.image.next_segment == 0 {
            // Program headers: PT_LOAD (1) segments with file bytes.
            let mut total = 0u64;
            for ph in bytes.chunks_exact(32) {
                let w = |at: usize| {
                    ph.get(at..at + 4)
                        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                        .unwrap_or(0)
                };
                if w(0) == 1 && w(16) > 0 {
                    self.image
                        .segments
                        .push((u64::from(w(4)), u64::from(w(16))));
                    total += u64::from(w(16));
                }
            }
            if self.image.segments.is_empty() || total > MAX_PROGRAMMER_LEN {
                self.image_failed(STATUS_INVALID_ELF_HDR);
                return;
            }
        } else {
            self.image.seg_done += bytes.len() as u64;
        }
        // Next piece of the current segment, or the next segment, or the end.
        while let Some(&(seg_off, seg_len)) = self.image.segments.get(self.image.next_segment) {
            if self.image.seg_done < seg_len {
                let left = seg_len - self.image.seg_done;
                let len = left.min(u64::from(self.config.sahara_read_len));
                self.request(
                    seg_off + self.image.seg_done,
                    usize::try_from(len).unwrap_or(0),
                );
                return;
            }
            self.image.next_segment += 1;
            self.image.seg_done = 0;
        }
        self.emit(
            Packet::EndOfImage {
                image_id: PROGRAMMER_IMAGE_ID,
                status: 0,
            }
            .encode(),
        );
        self.state = State::Sahara(SaharaStep::AwaitDone);
    }

    fn on_sahara_packet(&mut self, step: SaharaStep, packet: Packet) {
        match (step, packet) {
            (_, Packet::Reset) => {
                self.emit(Packet::ResetResponse.encode());
                self.resets += 1;
                self.state = State::Off;
            }
            (SaharaStep::AwaitHelloResp, Packet::HelloResponse { mode: m, .. }) => {
                if m == mode::COMMAND {
                    self.emit(Packet::CommandReady.encode());
                    self.state = State::Sahara(SaharaStep::Command);
                } else {
                    self.image = ImageLoad::default();
                    self.request(0, 52);
                }
            }
            (SaharaStep::Command, Packet::Execute { command }) => {
                let Some(answer) = self.exec_answer(command) else {
                    self.emit(
                        Packet::EndOfImage {
                            image_id: 0,
                            status: STATUS_EXEC_CMD_UNSUPPORTED,
                        }
                        .encode(),
                    );
                    return;
                };
                self.emit(
                    Packet::ExecuteResponse {
                        command,
                        data_len: u32::try_from(answer.len()).unwrap_or(0),
                    }
                    .encode(),
                );
                self.state = State::Sahara(SaharaStep::CommandData(command));
            }
            (SaharaStep::CommandData(c), Packet::ExecuteData { command }) if c == command => {
                let data = self.exec_answer(c).unwrap_or_default();
                self.emit(data);
                self.state = State::Sahara(SaharaStep::Command);
            }
            (SaharaStep::Command, Packet::SwitchMode { .. }) => {
                self.power_on_hello();
            }
            (SaharaStep::AwaitDone, Packet::Done) => {
                self.emit(Packet::DoneResponse { status: 1 }.encode());
                self.uploads += 1;
                self.state = State::Firehose;
            }
            _ => self.image_failed(0x01),
        }
    }

    /// The answer to a command-mode `EXECUTE`, `None` for one the boot ROM does not have.
    fn exec_answer(&self, command: u32) -> Option<Vec<u8>> {
        Some(match command {
            exec::SERIAL_NUM_READ => self.config.serial.to_le_bytes().to_vec(),
            exec::MSM_HW_ID_READ => self.config.hw_id.to_le_bytes().to_vec(),
            exec::OEM_PK_HASH_READ => [self.config.oem_pk_hash; 2].concat(),
            exec::GET_SOFTWARE_VERSION_SBL => self.config.sbl_sw_version.to_le_bytes().to_vec(),
            exec::GET_COMMAND_ID_LIST => {
                EXEC_COMMANDS.iter().flat_map(|c| c.to_le_bytes()).collect()
            }
            _ => return None,
        })
    }

    fn power_on_hello(&mut self) {
        self.state = State::Sahara(SaharaStep::AwaitHelloResp);
        self.emit(
            Packet::Hello {
                version: 2,
                version_compatible: 1,
                max_command_len: 0x400,
                mode: mode::IMAGE_TX_PENDING,
            }
            .encode(),
        );
    }

    fn sahara_input(&mut self) {
        loop {
            let State::Sahara(step) = self.state else {
                return;
            };
            if let SaharaStep::Image { offset, len } = step {
                if self.rx.len() < len {
                    return;
                }
                let bytes: Vec<u8> = self.rx.drain(..len).collect();
                self.on_image_bytes(offset, &bytes);
                continue;
            }
            if self.rx.len() < 8 {
                return;
            }
            let Ok((_, len)) = peek_header(&self.rx) else {
                self.rx.clear();
                self.image_failed(0x04);
                return;
            };
            if self.rx.len() < len {
                return;
            }
            let bytes: Vec<u8> = self.rx.drain(..len).collect();
            match Packet::decode(&bytes) {
                Ok(p) => self.on_sahara_packet(step, p),
                Err(_) => self.image_failed(0x04),
            }
        }
    }

    // ---- Firehose ----

    fn geometry_check(&mut self, e: &Element) -> Result<(u64, u64), String> {
        if let Ok(ppb) = e.number("PAGES_PER_BLOCK")
            && ppb != u64::from(self.config.pages_per_block)
        {
            // The real MDM9207 programmer's words (bkerler/edl issue 522).
            return Err(format!(
                "Attribute 'PAGES_PER_BLOCK'={ppb} must be equal to disk pages per block {}",
                self.config.pages_per_block
            ));
        }
        let size = e
            .number("SECTOR_SIZE_IN_BYTES")
            .map_err(|x| x.to_string())?;
        if size != self.config.page_size as u64 {
            return Err(format!(
                "SECTOR_SIZE_IN_BYTES {size} is not the page size {}",
                self.config.page_size
            ));
        }
        let start = e.number("start_sector").map_err(|x| x.to_string())?;
        let count = e
            .number("num_partition_sectors")
            .map_err(|x| x.to_string())?;
        if start
            .checked_add(count)
            .is_none_or(|end| end > self.nand.pages())
        {
            return Err(format!("sectors {start}+{count} are outside the device"));
        }
        Ok((start, count))
    }

    fn on_firehose_command(&mut self, e: &Element) {
        self.current.clone_from(&e.name);
        if let Some((cmd_name, reason)) = self.faults.nak.clone()
            && e.name == cmd_name
        {
            self.nak(&reason);
            return;
        }
        if e.name != "configure" && e.name != "nop" && self.configured.is_none() {
            self.nak("send <configure> first");
            return;
        }
        match e.name.as_str() {
            "nop" => {
                let serial = self.config.serial;
                self.send_doc(&[
                    Element::new("log").attr("value", BUILD_DATE_LOG),
                    Element::new("log").attr(
                        "value",
                        format!("INFO: Chip serial num: {serial} (0x{serial:x})"),
                    ),
                ]);
                self.ack(false);
            }
            "configure" => {
                let memory = e.get("MemoryName").unwrap_or("");
                if !memory.eq_ignore_ascii_case("nand") {
                    self.nak(&format!("Not support configure MemoryName {memory}"));
                    return;
                }
                let max = self.config.max_payload_to_target;
                let want = e
                    .number("MaxPayloadSizeToTargetInBytes")
                    .ok()
                    .and_then(|v| usize::try_from(v).ok())
                    .unwrap_or(max);
                if want > max || want == 0 {
                    // The size it takes, in a NAK without an ERROR line: qdl and edl both
                    // configure again with it (edl gives up on an ERROR line here).
                    let nak = self.configure_response("NAK", max);
                    self.send_doc(&[nak]);
                    return;
                }
                self.configured = Some(want);
                let ack = self.configure_response("ACK", want).attr("rawmode", false);
                self.send_doc(&[ack]);
            }
            "getstorageinfo" => {
                let info = format!(
                    "INFO: {{\"storage_info\": {{\"total_blocks\":{},\"block_size\":{},\"page_size\":{},\"num_physical\":1,\"mem_type\":\"NAND\",\"prod_name\":\"emulated\"}}}}",
                    self.config.blocks,
                    self.config.block_size(),
                    self.config.page_size
                );
                self.send_doc(&[
                    Element::new("log").attr("value", info),
                    Element::new("response")
                        .attr("value", "ACK")
                        .attr("rawmode", false),
                ]);
            }
            "erase" => match self.geometry_check(e) {
                Err(reason) => self.nak(&reason),
                Ok((start, count)) => {
                    let ppb = u64::from(self.config.pages_per_block);
                    if start % ppb != 0 || count % ppb != 0 {
                        self.nak("erase must cover whole blocks");
                        return;
                    }
                    let first = start / ppb;
                    for b in first..first + count / ppb {
                        let b = u32::try_from(b).unwrap_or(u32::MAX);
                        if !self.nand.is_bad(b) {
                            let _ = self.nand.erase_block(b);
                        }
                    }
                    self.ack(false);
                }
            },
            "program" => match self.geometry_check(e) {
                Err(reason) => self.nak(&reason),
                Ok((start, count)) => {
                    let last = e
                        .number("last_sector")
                        .unwrap_or_else(|_| self.nand.pages().saturating_sub(1));
                    self.raw = Some(RawProgram {
                        command: "program".into(),
                        cursor: start,
                        last,
                        remaining: count,
                        page: Vec::new(),
                        error: None,
                    });
                    self.ack(true);
                    if count == 0 {
                        self.finish_program();
                    }
                }
            },
            "read" => match self.geometry_check(e) {
                Err(reason) => self.nak(&reason),
                Ok((start, count)) => {
                    self.ack(true);
                    if self.faults.zlp_before_read {
                        self.emit(Vec::new());
                    }
                    let mut data = self.nand.read_skipping(start, count);
                    self.reads += 1;
                    if self.faults.corrupt_read == Some(self.reads)
                        && let Some(b) = data.first_mut()
                    {
                        *b = !*b;
                    }
                    if data.len() as u64 != count * self.config.page_size as u64 {
                        // Ran out of good blocks: the data ends short, the response says so.
                        for piece in data.chunks(self.config.max_payload_from_target.max(1)) {
                            self.emit(piece.to_vec());
                        }
                        self.nak("read ran past the last good block");
                        return;
                    }
                    for piece in data.chunks(self.config.max_payload_from_target.max(1)) {
                        self.emit(piece.to_vec());
                    }
                    self.ack(false);
                }
            },
            "power" => {
                self.ack(false);
                if e.get("value")
                    .is_some_and(|v| v.eq_ignore_ascii_case("reset"))
                {
                    // The device leaves download mode once the ACK is out; it takes nothing
                    // more until it is powered on (re-enters download mode) again.
                    self.resets += 1;
                    self.state = State::Off;
                }
            }
            other => self.nak(&format!("Unrecognized tag '{other}'")),
        }
    }

    fn finish_program(&mut self) {
        if let Some(raw) = self.raw.take() {
            match raw.error {
                Some(reason) => self.nak(&format!("{}: {reason}", raw.command)),
                None => self.ack(false),
            }
        }
    }

    fn program_bytes(&mut self, bytes: &[u8]) -> usize {
        let ps = self.config.page_size;
        let mut used = 0usize;
        while let Some(raw) = self.raw.as_mut() {
            if raw.remaining == 0 {
                break;
            }
            let need = ps - raw.page.len();
            let take = need.min(bytes.len() - used);
            if take == 0 {
                break;
            }
            raw.page
                .extend_from_slice(bytes.get(used..used + take).unwrap_or(&[]));
            used += take;
            if raw.page.len() < ps {
                break;
            }
            let page = std::mem::take(&mut raw.page);
            raw.remaining -= 1;
            if raw.error.is_none() {
                match self.nand.next_good(raw.cursor) {
                    Some(p) if p <= raw.last => {
                        raw.cursor = p + 1;
                        match self.nand.program_page(p, &page) {
                            Ok(()) => {}
                            Err(Error::PowerLoss) => {
                                self.cut_power();
                                return bytes.len();
                            }
                            Err(e) => raw.error = Some(e.to_string()),
                        }
                    }
                    _ => raw.error = Some("the partition has no good block left".into()),
                }
            }
            if raw.remaining == 0 {
                self.finish_program();
                break;
            }
        }
        used
    }

    fn firehose_input(&mut self, bytes: &[u8]) {
        let mut rest = bytes;
        if let Some(raw) = self.raw.as_mut()
            && let Some(limit) = self.configured
            && bytes.len() > limit
            && raw.error.is_none()
        {
            raw.error = Some(format!(
                "a raw transfer of {} bytes exceeds the negotiated {limit}",
                bytes.len()
            ));
        }
        if self.raw.is_some() {
            let used = self.program_bytes(rest);
            rest = rest.get(used..).unwrap_or(&[]);
        }
        if !matches!(self.state, State::Firehose) {
            return;
        }
        self.splitter.push(rest);
        loop {
            match self.splitter.next_document() {
                Ok(Some(elements)) => {
                    for e in &elements {
                        self.on_firehose_command(e);
                        if self.raw.is_some() || !matches!(self.state, State::Firehose) {
                            break;
                        }
                    }
                    if self.raw.is_some() {
                        let left = self.splitter.take_raw(usize::MAX);
                        if !left.is_empty() {
                            self.firehose_input(&left);
                        }
                        return;
                    }
                }
                Ok(None) => return,
                Err(e) => {
                    self.nak(&format!("XML: {e}"));
                    return;
                }
            }
        }
    }
}

impl Endpoint for Emulator {
    fn receive(&mut self, bytes: &[u8]) {
        let before = self.out.len();
        match self.state {
            State::Off => return,
            State::Sahara(_) => {
                self.rx.extend_from_slice(bytes);
                self.sahara_input();
                if matches!(self.state, State::Firehose) && !self.rx.is_empty() {
                    let left = std::mem::take(&mut self.rx);
                    self.firehose_input(&left);
                }
            }
            State::Firehose => self.firehose_input(bytes),
        }
        if self.faults.coalesce && self.out.len() > before + 1 {
            let merged: Vec<u8> = self.out.drain(before..).flatten().collect();
            self.out.push_back(merged);
        }
    }

    fn transmit(&mut self) -> Option<Vec<u8>> {
        self.out.pop_front()
    }
}

/// The first word of an SBL on MDM9x07 NAND (little-endian at byte 0 of page 0): host tools
/// (bkerler/edl `firehose.py` `get_gpt`) read sector 0, take this magic as "NAND storage",
/// then look for the MIBIB at sectors 0x280, 0x400 and 0x800.
pub const SBL_MAGIC: u32 = 0x844B_DCD1;

/// The first page of a stand-in SBL, as a real device holds one: [`SBL_MAGIC`], then bytes
/// that are not erased.
#[must_use]
pub fn stand_in_sbl_page(page_size: usize) -> Vec<u8> {
    let mut page: Vec<u8> = (0..page_size)
        .map(|i| u8::try_from(i % 239).unwrap_or(0))
        .collect();
    if let Some(head) = page.get_mut(..4) {
        head.copy_from_slice(&SBL_MAGIC.to_le_bytes());
    }
    page
}

/// A minimal ELF32 programmer image for the emulator: one loadable segment holding `payload`.
#[must_use]
pub fn test_programmer(payload: &[u8]) -> Vec<u8> {
    let mut elf = vec![0u8; 52];
    elf[..7].copy_from_slice(b"\x7fELF\x01\x01\x01");
    elf[0x10..0x12].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    elf[0x12..0x14].copy_from_slice(&40u16.to_le_bytes()); // EM_ARM
    elf[0x14..0x18].copy_from_slice(&1u32.to_le_bytes());
    elf[0x1C..0x20].copy_from_slice(&52u32.to_le_bytes()); // e_phoff
    elf[0x28..0x2A].copy_from_slice(&52u16.to_le_bytes()); // e_ehsize
    elf[0x2A..0x2C].copy_from_slice(&32u16.to_le_bytes()); // e_phentsize
    elf[0x2C..0x2E].copy_from_slice(&1u16.to_le_bytes()); // e_phnum
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    let mut ph = Vec::with_capacity(32);
    for w in [1u32, 84, 0x0800_0000, 0x0800_0000, len, len, 7, 4] {
        ph.extend_from_slice(&w.to_le_bytes());
    }
    elf.extend_from_slice(&ph);
    elf.extend_from_slice(payload);
    elf
}
