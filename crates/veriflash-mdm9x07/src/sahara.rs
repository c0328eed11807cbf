//! Sahara, the boot ROM's (PBL) protocol in emergency download mode: packet codec and the host
//! side as a state machine over packets and raw bytes. No I/O happens here; the
//! [`driver`](crate::driver) moves the bytes.
//!
//! Every packet is a little-endian `u32` command id and a `u32` total length (header
//! included), then command-specific `u32` (or, for `READ_DATA64`, `u64`) fields. Lengths are
//! fixed per command; a packet whose declared length differs is refused.
//!
//! Host flow used here: answer `HELLO` asking for command mode, read the serial number
//! (`EXECUTE` 0x01) and the MSM hardware id (`EXECUTE` 0x02), switch back to image transfer
//! (`SWITCH_MODE` 0), gate on the chip, and only then answer the next `HELLO` for image
//! transfer and serve the programmer by offset and length until `END_OF_IMAGE`, `DONE`,
//! `DONE_RESP`.

use crate::error::Error;

/// Bytes of the header every packet starts with: command id and total length.
pub const HEADER_LEN: usize = 8;
/// The longest packet this implementation accepts (`HELLO`, `HELLO_RESP`).
pub const MAX_PACKET_LEN: usize = 0x30;
/// The most bytes one `READ_DATA` may ask for: a boot ROM asks for at most a few KiB.
pub const MAX_READ_LEN: u64 = 1 << 20;
/// The most bytes one command-mode answer (`EXECUTE_RESP` data length) may announce.
pub const MAX_EXECUTE_DATA_LEN: u32 = 1024;
/// The Sahara protocol version this host speaks.
pub const HOST_VERSION: u32 = 2;
/// The oldest protocol version with command mode (needed for the chip gate).
pub const MIN_DEVICE_VERSION: u32 = 2;

/// Command ids.
pub mod cmd {
    /// Device → host: start of the protocol.
    pub const HELLO: u32 = 0x01;
    /// Host → device: answer to `HELLO`, selecting the mode.
    pub const HELLO_RESP: u32 = 0x02;
    /// Device → host: send `length` bytes of the image at `offset`.
    pub const READ_DATA: u32 = 0x03;
    /// Device → host: the image transfer ended, with a status.
    pub const END_OF_IMAGE: u32 = 0x04;
    /// Host → device: the host is done.
    pub const DONE: u32 = 0x05;
    /// Device → host: answer to `DONE`.
    pub const DONE_RESP: u32 = 0x06;
    /// Host → device: reset the device.
    pub const RESET: u32 = 0x07;
    /// Device → host: answer to `RESET`.
    pub const RESET_RESP: u32 = 0x08;
    /// Device → host: command mode is ready for `EXECUTE`.
    pub const CMD_READY: u32 = 0x0B;
    /// Host → device: leave command mode for another mode.
    pub const SWITCH_MODE: u32 = 0x0C;
    /// Host → device: run a client command.
    pub const EXECUTE: u32 = 0x0D;
    /// Device → host: the client command's answer length.
    pub const EXECUTE_RESP: u32 = 0x0E;
    /// Host → device: send the client command's answer.
    pub const EXECUTE_DATA: u32 = 0x0F;
    /// Device → host: `READ_DATA` with 64-bit fields.
    pub const READ_DATA64: u32 = 0x12;
}

/// Modes in `HELLO`, `HELLO_RESP` and `SWITCH_MODE`.
pub mod mode {
    /// Image transfer pending: the device will ask for an image.
    pub const IMAGE_TX_PENDING: u32 = 0;
    /// Image transfer complete.
    pub const IMAGE_TX_COMPLETE: u32 = 1;
    /// Memory debug (RAM dump).
    pub const MEMORY_DEBUG: u32 = 2;
    /// Command mode: `EXECUTE` client commands.
    pub const COMMAND: u32 = 3;
}

/// Command-mode client commands (the `EXECUTE` argument).
pub mod exec {
    /// Read the chip serial number (4 bytes).
    pub const SERIAL_NUM_READ: u32 = 0x01;
    /// Read the MSM hardware id (8 bytes: MSM id in the upper 32 bits, OEM id, model id).
    pub const MSM_HW_ID_READ: u32 = 0x02;
    /// Read the hash of the OEM's root public key the boot ROM trusts (the SHA-256 digest,
    /// bare, repeated once per root, or zero-padded to a wider field).
    pub const OEM_PK_HASH_READ: u32 = 0x03;
    /// Read the SBL software version (4 bytes).
    pub const GET_SOFTWARE_VERSION_SBL: u32 = 0x07;
    /// Read the list of command ids the boot ROM answers (4 bytes each).
    pub const GET_COMMAND_ID_LIST: u32 = 0x08;
}

/// An OEM public-key hash as the boot ROM reports it, reduced to one digest.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PkHash {
    len: u8,
    bytes: [u8; 64],
}

impl PkHash {
    /// The digest in a command-mode answer: a copy repeated after the first is cut off,
    /// trailing zero padding stripped, and the length rounded up to the next digest size
    /// (32, 48 or 64 bytes) that the answer holds, so a digest ending in zero bytes stays
    /// whole (the shapes linux-msm/qdl `sahara_pkhash_trim` describes). `None` for an empty
    /// answer.
    #[must_use]
    pub fn from_answer(answer: &[u8]) -> Option<Self> {
        let answer = answer.get(..answer.len().min(64)).unwrap_or(answer);
        let mut len = answer.len();
        if let Some(period) = (4..=len / 2).find(|i| answer.get(..*i) == answer.get(*i..2 * *i)) {
            len = period;
        }
        while len > 0 && answer.get(len - 1) == Some(&0) {
            len -= 1;
        }
        if let Some(size) = [32, 48, 64]
            .into_iter()
            .find(|s| len <= *s && *s <= answer.len())
        {
            len = size;
        }
        if len == 0 {
            return None;
        }
        let mut bytes = [0u8; 64];
        for (d, s) in bytes.iter_mut().zip(answer.iter().take(len)) {
            *d = *s;
        }
        Some(Self {
            len: u8::try_from(len).unwrap_or(64),
            bytes,
        })
    }

    /// The digest's bytes.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..usize::from(self.len)).unwrap_or(&[])
    }
}

impl std::fmt::Display for PkHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.as_bytes()
            .iter()
            .try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl std::fmt::Debug for PkHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PkHash({self})")
    }
}

/// MSM ids (upper 32 bits of the hardware id) of the chips this plugin flashes.
pub const MDM9X07_MSM_IDS: [u32; 3] = [0x0004_80E1, 0x0004_A0E1, 0x0097_30E1];

/// A name for a known MSM id (the 9x07 family and a few neighbours, for messages).
#[must_use]
pub fn chip_name(msm_id: u32) -> Option<&'static str> {
    Some(match msm_id {
        0x0004_80E1 => "mdm9207",
        0x0004_A0E1 => "mdm9607",
        0x0097_30E1 => "mdm9206",
        0x0070_50E1 => "msm8916",
        0x0096_00E1 => "msm8909",
        0x0004_60E1 => "msm8953",
        0x0007_D0E1 => "mdm9x60",
        _ => return None,
    })
}

/// One Sahara packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Packet {
    /// `HELLO` (0x01, 0x30 bytes).
    Hello {
        /// Protocol version.
        version: u32,
        /// Oldest compatible version.
        version_compatible: u32,
        /// Longest command packet the device takes.
        max_command_len: u32,
        /// Mode the device is in.
        mode: u32,
    },
    /// `HELLO_RESP` (0x02, 0x30 bytes).
    HelloResponse {
        /// Protocol version.
        version: u32,
        /// Oldest compatible version.
        version_compatible: u32,
        /// 0 for success.
        status: u32,
        /// Mode the host selects.
        mode: u32,
    },
    /// `READ_DATA` (0x03, 0x14 bytes).
    ReadData {
        /// Image id.
        image_id: u32,
        /// Offset in the image.
        offset: u32,
        /// Bytes wanted.
        length: u32,
    },
    /// `END_OF_IMAGE` (0x04, 0x10 bytes).
    EndOfImage {
        /// Image id.
        image_id: u32,
        /// 0 for success.
        status: u32,
    },
    /// `DONE` (0x05, 0x08 bytes).
    Done,
    /// `DONE_RESP` (0x06, 0x0C bytes).
    DoneResponse {
        /// Image transfer status: 1 complete, 0 more images pending.
        status: u32,
    },
    /// `RESET` (0x07, 0x08 bytes).
    Reset,
    /// `RESET_RESP` (0x08, 0x08 bytes).
    ResetResponse,
    /// `CMD_READY` (0x0B, 0x08 bytes).
    CommandReady,
    /// `SWITCH_MODE` (0x0C, 0x0C bytes).
    SwitchMode {
        /// The mode to switch to.
        mode: u32,
    },
    /// `EXECUTE` (0x0D, 0x0C bytes).
    Execute {
        /// Client command.
        command: u32,
    },
    /// `EXECUTE_RESP` (0x0E, 0x10 bytes).
    ExecuteResponse {
        /// Client command.
        command: u32,
        /// Bytes of the answer.
        data_len: u32,
    },
    /// `EXECUTE_DATA` (0x0F, 0x0C bytes).
    ExecuteData {
        /// Client command.
        command: u32,
    },
    /// `READ_DATA64` (0x12, 0x20 bytes).
    ReadData64 {
        /// Image id.
        image_id: u64,
        /// Offset in the image.
        offset: u64,
        /// Bytes wanted.
        length: u64,
    },
}

/// The fixed total length of each command's packet.
#[must_use]
pub fn packet_len(command: u32) -> Option<usize> {
    Some(match command {
        cmd::HELLO | cmd::HELLO_RESP => 0x30,
        cmd::READ_DATA => 0x14,
        cmd::END_OF_IMAGE | cmd::EXECUTE_RESP => 0x10,
        cmd::DONE | cmd::RESET | cmd::RESET_RESP | cmd::CMD_READY => 0x08,
        cmd::DONE_RESP | cmd::SWITCH_MODE | cmd::EXECUTE | cmd::EXECUTE_DATA => 0x0C,
        cmd::READ_DATA64 => 0x20,
        _ => return None,
    })
}

/// Reads a little-endian `u32` at `at`.
fn le32(bytes: &[u8], at: usize) -> Result<u32, Error> {
    let field = bytes
        .get(at..at.saturating_add(4))
        .and_then(|s| <[u8; 4]>::try_from(s).ok())
        .ok_or(Error::Truncated {
            what: "Sahara u32 field",
            need: at.saturating_add(4),
            have: bytes.len(),
        })?;
    Ok(u32::from_le_bytes(field))
}

/// Reads a little-endian `u64` at `at`.
fn le64(bytes: &[u8], at: usize) -> Result<u64, Error> {
    let field = bytes
        .get(at..at.saturating_add(8))
        .and_then(|s| <[u8; 8]>::try_from(s).ok())
        .ok_or(Error::Truncated {
            what: "Sahara u64 field",
            need: at.saturating_add(8),
            have: bytes.len(),
        })?;
    Ok(u64::from_le_bytes(field))
}

/// Reads a packet header: the command id and the declared total length, checked against the
/// command's fixed length.
///
/// # Errors
/// [`Error::Truncated`] for fewer than 8 bytes, [`Error::UnknownCommand`], or
/// [`Error::BadLength`] when the declared length is not the command's.
pub fn peek_header(bytes: &[u8]) -> Result<(u32, usize), Error> {
    let command = le32(bytes, 0)?;
    let declared = le32(bytes, 4)?;
    let expected = packet_len(command).ok_or(Error::UnknownCommand(command))?;
    if usize::try_from(declared).ok() != Some(expected) {
        return Err(Error::BadLength {
            what: "Sahara packet",
            length: u64::from(declared),
            limit: expected as u64,
        });
    }
    Ok((command, expected))
}

impl Packet {
    /// The command id.
    #[must_use]
    pub fn command(&self) -> u32 {
        match self {
            Self::Hello { .. } => cmd::HELLO,
            Self::HelloResponse { .. } => cmd::HELLO_RESP,
            Self::ReadData { .. } => cmd::READ_DATA,
            Self::EndOfImage { .. } => cmd::END_OF_IMAGE,
            Self::Done => cmd::DONE,
            Self::DoneResponse { .. } => cmd::DONE_RESP,
            Self::Reset => cmd::RESET,
            Self::ResetResponse => cmd::RESET_RESP,
            Self::CommandReady => cmd::CMD_READY,
            Self::SwitchMode { .. } => cmd::SWITCH_MODE,
            Self::Execute { .. } => cmd::EXECUTE,
            Self::ExecuteResponse { .. } => cmd::EXECUTE_RESP,
            Self::ExecuteData { .. } => cmd::EXECUTE_DATA,
            Self::ReadData64 { .. } => cmd::READ_DATA64,
        }
    }

    /// The packet's bytes: header, fields, reserved words as zeros.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let command = self.command();
        let len = packet_len(command).unwrap_or(HEADER_LEN);
        let mut out = Vec::with_capacity(len);
        out.extend_from_slice(&command.to_le_bytes());
        out.extend_from_slice(&u32::try_from(len).unwrap_or(0).to_le_bytes());
        let words: &[u32] = match self {
            Self::Hello {
                version,
                version_compatible,
                max_command_len,
                mode,
            } => &[*version, *version_compatible, *max_command_len, *mode],
            Self::HelloResponse {
                version,
                version_compatible,
                status,
                mode,
            } => &[*version, *version_compatible, *status, *mode],
            Self::ReadData {
                image_id,
                offset,
                length,
            } => &[*image_id, *offset, *length],
            Self::EndOfImage { image_id, status } => &[*image_id, *status],
            Self::DoneResponse { status } => &[*status],
            Self::SwitchMode { mode } => &[*mode],
            Self::Execute { command } | Self::ExecuteData { command } => &[*command],
            Self::ExecuteResponse { command, data_len } => &[*command, *data_len],
            Self::ReadData64 {
                image_id,
                offset,
                length,
            } => {
                for v in [image_id, offset, length] {
                    out.extend_from_slice(&v.to_le_bytes());
                }
                &[]
            }
            Self::Done | Self::Reset | Self::ResetResponse | Self::CommandReady => &[],
        };
        for w in words {
            out.extend_from_slice(&w.to_le_bytes());
        }
        out.resize(len, 0);
        out
    }

    /// Decodes exactly one packet; `bytes` must be the whole packet and nothing more.
    ///
    /// # Errors
    /// As [`peek_header`], and [`Error::Truncated`] / [`Error::BadLength`] when `bytes` is not
    /// exactly the declared length.
    pub fn decode(bytes: &[u8]) -> Result<Self, Error> {
        let (command, len) = peek_header(bytes)?;
        if bytes.len() != len {
            return Err(if bytes.len() < len {
                Error::Truncated {
                    what: "Sahara packet",
                    need: len,
                    have: bytes.len(),
                }
            } else {
                Error::BadLength {
                    what: "Sahara packet (trailing bytes)",
                    length: bytes.len() as u64,
                    limit: len as u64,
                }
            });
        }
        let w = |i: usize| le32(bytes, HEADER_LEN + 4 * i);
        Ok(match command {
            cmd::HELLO => Self::Hello {
                version: w(0)?,
                version_compatible: w(1)?,
                max_command_len: w(2)?,
                mode: w(3)?,
            },
            cmd::HELLO_RESP => Self::HelloResponse {
                version: w(0)?,
                version_compatible: w(1)?,
                status: w(2)?,
                mode: w(3)?,
            },
            cmd::READ_DATA => Self::ReadData {
                image_id: w(0)?,
                offset: w(1)?,
                length: w(2)?,
            },
            cmd::END_OF_IMAGE => Self::EndOfImage {
                image_id: w(0)?,
                status: w(1)?,
            },
            cmd::DONE => Self::Done,
            cmd::DONE_RESP => Self::DoneResponse { status: w(0)? },
            cmd::RESET => Self::Reset,
            cmd::RESET_RESP => Self::ResetResponse,
            cmd::CMD_READY => Self::CommandReady,
            cmd::SWITCH_MODE => Self::SwitchMode { mode: w(0)? },
            cmd::EXECUTE => Self::Execute { command: w(0)? },
            cmd::EXECUTE_RESP => Self::ExecuteResponse {
                command: w(0)?,
                data_len: w(1)?,
            },
            cmd::EXECUTE_DATA => Self::ExecuteData { command: w(0)? },
            cmd::READ_DATA64 => Self::ReadData64 {
                image_id: le64(bytes, 8)?,
                offset: le64(bytes, 16)?,
                length: le64(bytes, 24)?,
            },
            other => return Err(Error::UnknownCommand(other)),
        })
    }
}

/// What the chip said about itself in command mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChipIdentity {
    /// Chip serial number.
    pub serial: u32,
    /// The 64-bit hardware id: MSM id (upper 32 bits), OEM id, model id.
    pub hw_id: u64,
    /// The OEM public-key hash, when the boot ROM answers for it (which programmer a
    /// secure-boot chip accepts is decided by it).
    pub pk_hash: Option<PkHash>,
}

impl ChipIdentity {
    /// The MSM id: which chip this is.
    #[must_use]
    pub fn msm_id(&self) -> u32 {
        u32::try_from(self.hw_id >> 32).unwrap_or(u32::MAX)
    }

    /// The OEM id (bits 16..32 of the hardware id).
    #[must_use]
    pub fn oem_id(&self) -> u16 {
        u16::try_from((self.hw_id >> 16) & 0xFFFF).unwrap_or(0)
    }

    /// The model id (bits 0..16 of the hardware id).
    #[must_use]
    pub fn model_id(&self) -> u16 {
        u16::try_from(self.hw_id & 0xFFFF).unwrap_or(0)
    }

    /// Whether the chip is one of the MDM9x07 family.
    #[must_use]
    pub fn is_mdm9x07(&self) -> bool {
        MDM9X07_MSM_IDS.contains(&self.msm_id())
    }
}

/// What the state machine needs next from the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// One packet.
    Packet,
    /// Exactly this many raw bytes (a command-mode answer).
    Raw(usize),
    /// Nothing: the machine finished.
    Nothing,
}

/// What the host must do after feeding the state machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Send this packet.
    Send(Packet),
    /// Send these bytes of the image being served.
    SendImage {
        /// Offset in the image.
        offset: u64,
        /// Bytes to send.
        length: u64,
    },
    /// Nothing to send; read what [`Expect`] says.
    Wait,
    /// Send this packet; the machine is then finished.
    Finish(Packet),
    /// The machine is finished and nothing is to be sent.
    Finished,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum IdState {
    Hello,
    CommandReady,
    ExecResponse(u32),
    ExecData(u32, usize),
    Done,
}

/// Host side of the identification: command mode, serial number, hardware id, then back to
/// image transfer. Feed it what [`Identify::expects`] says; do what each [`Step`] says.
#[derive(Clone, Debug)]
pub struct Identify {
    state: IdState,
    version: u32,
    serial: Option<u32>,
    identity: Option<ChipIdentity>,
}

impl Default for Identify {
    fn default() -> Self {
        Self::new()
    }
}

impl Identify {
    /// A machine waiting for the device's `HELLO`.
    #[must_use]
    pub fn new() -> Self {
        Self {
            state: IdState::Hello,
            version: HOST_VERSION,
            serial: None,
            identity: None,
        }
    }

    /// What to read next.
    #[must_use]
    pub fn expects(&self) -> Expect {
        match self.state {
            IdState::ExecData(_, n) => Expect::Raw(n),
            IdState::Done => Expect::Nothing,
            _ => Expect::Packet,
        }
    }

    /// The identity, once the machine finished.
    #[must_use]
    pub fn identity(&self) -> Option<ChipIdentity> {
        self.identity
    }

    /// Feeds one packet.
    ///
    /// # Errors
    /// [`Error::Unexpected`] for a packet the state does not allow (a device that refuses
    /// command mode answers `END_OF_IMAGE`), [`Error::BadLength`] for an announced answer
    /// longer than [`MAX_EXECUTE_DATA_LEN`] or shorter than its field, and
    /// [`Error::Unsupported`] for a device too old for command mode.
    pub fn on_packet(&mut self, packet: &Packet) -> Result<Step, Error> {
        match (self.state, packet) {
            (IdState::Hello, Packet::Hello { version, .. }) => {
                if *version < MIN_DEVICE_VERSION {
                    return Err(Error::Unsupported(format!(
                        "Sahara version {version} has no command mode to identify the chip"
                    )));
                }
                self.version = (*version).min(HOST_VERSION);
                self.state = IdState::CommandReady;
                Ok(Step::Send(Packet::HelloResponse {
                    version: self.version,
                    version_compatible: 1,
                    status: 0,
                    mode: mode::COMMAND,
                }))
            }
            (IdState::CommandReady, Packet::CommandReady) => {
                self.state = IdState::ExecResponse(exec::SERIAL_NUM_READ);
                Ok(Step::Send(Packet::Execute {
                    command: exec::SERIAL_NUM_READ,
                }))
            }
            (IdState::ExecResponse(want), Packet::ExecuteResponse { command, data_len })
                if *command == want =>
            {
                let need: u32 = match want {
                    exec::SERIAL_NUM_READ => 4,
                    exec::MSM_HW_ID_READ => 8,
                    _ => 1,
                };
                if *data_len < need || *data_len > MAX_EXECUTE_DATA_LEN {
                    return Err(Error::BadLength {
                        what: "Sahara command-mode answer",
                        length: u64::from(*data_len),
                        limit: u64::from(MAX_EXECUTE_DATA_LEN),
                    });
                }
                let len = usize::try_from(*data_len).unwrap_or(usize::MAX);
                self.state = IdState::ExecData(want, len);
                Ok(Step::Send(Packet::ExecuteData { command: want }))
            }
            // A boot ROM that does not give its PK hash ends that command alone and stays in
            // command mode: the identity is complete without it.
            (IdState::ExecResponse(exec::OEM_PK_HASH_READ), Packet::EndOfImage { .. }) => {
                self.state = IdState::Done;
                Ok(Step::Finish(Packet::SwitchMode {
                    mode: mode::IMAGE_TX_PENDING,
                }))
            }
            (state, other) => Err(Error::Unexpected {
                expected: match state {
                    IdState::Hello => "Sahara HELLO",
                    IdState::CommandReady => "Sahara CMD_READY",
                    IdState::ExecResponse(_) => "Sahara EXECUTE_RESP",
                    IdState::ExecData(..) => "command-mode answer bytes",
                    IdState::Done => "nothing",
                },
                got: format!("{other:?}"),
            }),
        }
    }

    /// Feeds the raw answer to a command-mode command.
    ///
    /// # Errors
    /// [`Error::Unexpected`] when no raw answer is expected, [`Error::Truncated`] when it is
    /// not the announced length.
    pub fn on_raw(&mut self, bytes: &[u8]) -> Result<Step, Error> {
        let IdState::ExecData(command, len) = self.state else {
            return Err(Error::Unexpected {
                expected: "a Sahara packet",
                got: format!("{} raw bytes", bytes.len()),
            });
        };
        if bytes.len() != len {
            return Err(Error::Truncated {
                what: "Sahara command-mode answer",
                need: len,
                have: bytes.len(),
            });
        }
        match command {
            exec::SERIAL_NUM_READ => {
                self.serial = Some(le32(bytes, 0)?);
                self.state = IdState::ExecResponse(exec::MSM_HW_ID_READ);
                Ok(Step::Send(Packet::Execute {
                    command: exec::MSM_HW_ID_READ,
                }))
            }
            exec::MSM_HW_ID_READ => {
                self.identity = Some(ChipIdentity {
                    serial: self.serial.unwrap_or(0),
                    hw_id: le64(bytes, 0)?,
                    pk_hash: None,
                });
                self.state = IdState::ExecResponse(exec::OEM_PK_HASH_READ);
                Ok(Step::Send(Packet::Execute {
                    command: exec::OEM_PK_HASH_READ,
                }))
            }
            _ => {
                if let Some(identity) = self.identity.as_mut() {
                    identity.pk_hash = PkHash::from_answer(bytes);
                }
                self.state = IdState::Done;
                Ok(Step::Finish(Packet::SwitchMode {
                    mode: mode::IMAGE_TX_PENDING,
                }))
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum UpState {
    Hello,
    Serving,
    DoneResponse,
    Done,
}

/// Host side of the image transfer: answers `HELLO` for image transfer, serves
/// `READ_DATA`/`READ_DATA64` within the image, ends on `END_OF_IMAGE` + `DONE`/`DONE_RESP`.
#[derive(Clone, Debug)]
pub struct Upload {
    state: UpState,
    image_len: u64,
    version: u32,
    served: u64,
}

/// How many times over its length an image may be asked for before the transfer is
/// refused: a boot ROM reads headers twice at most, so this only stops a device that asks
/// forever.
pub const MAX_SERVE_FACTOR: u64 = 4;

impl Upload {
    /// A machine serving an image of `image_len` bytes.
    #[must_use]
    pub fn new(image_len: u64) -> Self {
        Self {
            state: UpState::Hello,
            image_len,
            version: HOST_VERSION,
            served: 0,
        }
    }

    /// Whether the device took the image and the transfer ended.
    #[must_use]
    pub fn is_finished(&self) -> bool {
        self.state == UpState::Done
    }

    fn serve(&mut self, offset: u64, length: u64) -> Result<Step, Error> {
        if length == 0 || length > MAX_READ_LEN {
            return Err(Error::BadLength {
                what: "Sahara READ_DATA length",
                length,
                limit: MAX_READ_LEN,
            });
        }
        let budget = self
            .image_len
            .saturating_mul(MAX_SERVE_FACTOR)
            .max(MAX_READ_LEN);
        self.served = self.served.saturating_add(length);
        if self.served > budget {
            return Err(Error::BadLength {
                what: "Sahara bytes served for one image",
                length: self.served,
                limit: budget,
            });
        }
        match offset.checked_add(length) {
            Some(end) if end <= self.image_len => Ok(Step::SendImage { offset, length }),
            _ => Err(Error::ReadOutOfRange {
                offset,
                length,
                image_len: self.image_len,
            }),
        }
    }

    /// Feeds one packet.
    ///
    /// # Errors
    /// [`Error::Unexpected`], [`Error::ReadOutOfRange`] / [`Error::BadLength`] for a read
    /// outside the image or above [`MAX_READ_LEN`], [`Error::ImageRejected`] for a failed
    /// `END_OF_IMAGE`.
    pub fn on_packet(&mut self, packet: &Packet) -> Result<Step, Error> {
        match (self.state, packet) {
            (UpState::Hello, Packet::Hello { version, .. }) => {
                self.version = (*version).clamp(1, HOST_VERSION);
                self.state = UpState::Serving;
                Ok(Step::Send(Packet::HelloResponse {
                    version: self.version,
                    version_compatible: 1,
                    status: 0,
                    mode: mode::IMAGE_TX_PENDING,
                }))
            }
            (UpState::Serving, Packet::ReadData { offset, length, .. }) => {
                self.serve(u64::from(*offset), u64::from(*length))
            }
            (UpState::Serving, Packet::ReadData64 { offset, length, .. }) => {
                self.serve(*offset, *length)
            }
            (UpState::Serving, Packet::EndOfImage { status, .. }) => {
                if *status != 0 {
                    return Err(Error::ImageRejected { status: *status });
                }
                self.state = UpState::DoneResponse;
                Ok(Step::Send(Packet::Done))
            }
            (UpState::DoneResponse, Packet::DoneResponse { .. }) => {
                self.state = UpState::Done;
                Ok(Step::Finished)
            }
            (state, other) => Err(Error::Unexpected {
                expected: match state {
                    UpState::Hello => "Sahara HELLO",
                    UpState::Serving => "Sahara READ_DATA or END_OF_IMAGE",
                    UpState::DoneResponse => "Sahara DONE_RESP",
                    UpState::Done => "nothing",
                },
                got: format!("{other:?}"),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    //! Byte-level layouts checked against public sources:
    //! - linux-msm/qdl `src/sahara.c`: command ids (`SAHARA_HELLO_CMD` 0x1 ...
    //!   `SAHARA_READ_DATA64_CMD` 0x12), the packet lengths (`SAHARA_HELLO_LENGTH` 0x30,
    //!   `SAHARA_READ_DATA_LENGTH` 0x14, `SAHARA_READ_DATA64_LENGTH` 0x20,
    //!   `SAHARA_END_OF_IMAGE_LENGTH` 0x10, `SAHARA_DONE_LENGTH` 0x8,
    //!   `SAHARA_DONE_RESP_LENGTH` 0xc, `SAHARA_RESET_LENGTH` 0x8, `SAHARA_EXECUTE_LENGTH` 0xc,
    //!   `SAHARA_SWITCH_MODE_LENGTH` 0xc), `struct sahara_pkt` field order, and the
    //!   command-mode exchange in `sahara_command_exec` (EXECUTE, EXECUTE_RESP with
    //!   `data_length`, EXECUTE_DATA, raw answer) and `hwid >> 32` as the MSM id.
    //! - bkerler/edl `edlclient/Library/sahara_defs.py`: `cmd_t` ids, `exec_cmd_t`
    //!   (`SERIAL_NUM_READ` 1, `MSM_HW_ID_READ` 2), `sahara_mode_t`, the dword layouts of
    //!   `pkt_hello_req` (12 dwords), `pkt_read_data` (5), `pkt_read_data_64` (2 dwords +
    //!   3 qwords), `pkt_execute_rsp_cmd` (4), `pkt_image_end` (4), `pkt_done` (3).
    //! - bkerler/edl `edlclient/Config/qualcomm_config.py` `msmids`: 0x0480E1 MDM9207,
    //!   0x04A0E1 MDM9607, 0x9730E1 MDM9206/MDM9607tx, 0x7050E1 MSM8916.
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn words(ws: &[u32]) -> Vec<u8> {
        ws.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    #[test]
    fn hello_is_0x30_bytes_of_le_words() {
        let p = Packet::Hello {
            version: 2,
            version_compatible: 1,
            max_command_len: 0x400,
            mode: mode::IMAGE_TX_PENDING,
        };
        let want = words(&[1, 0x30, 2, 1, 0x400, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(p.encode(), want);
        assert_eq!(Packet::decode(&want).unwrap(), p);
    }

    #[test]
    fn hello_resp_carries_status_then_mode() {
        let p = Packet::HelloResponse {
            version: 2,
            version_compatible: 1,
            status: 0,
            mode: mode::COMMAND,
        };
        assert_eq!(p.encode(), words(&[2, 0x30, 2, 1, 0, 3, 0, 0, 0, 0, 0, 0]));
    }

    #[test]
    fn read_data_is_image_offset_length() {
        let b = words(&[3, 0x14, 13, 0x1000, 0x200]);
        assert_eq!(
            Packet::decode(&b).unwrap(),
            Packet::ReadData {
                image_id: 13,
                offset: 0x1000,
                length: 0x200
            }
        );
        assert_eq!(Packet::decode(&b).unwrap().encode(), b);
    }

    #[test]
    fn read_data64_has_three_u64_fields() {
        let mut b = words(&[0x12, 0x20]);
        for v in [13u64, 0x1_0000_0000, 0x1000] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        let p = Packet::decode(&b).unwrap();
        assert_eq!(
            p,
            Packet::ReadData64 {
                image_id: 13,
                offset: 0x1_0000_0000,
                length: 0x1000
            }
        );
        assert_eq!(p.encode(), b);
    }

    #[test]
    fn end_of_image_done_and_done_resp_layouts() {
        assert_eq!(
            Packet::decode(&words(&[4, 0x10, 13, 0])).unwrap(),
            Packet::EndOfImage {
                image_id: 13,
                status: 0
            }
        );
        assert_eq!(Packet::Done.encode(), words(&[5, 8]));
        assert_eq!(
            Packet::decode(&words(&[6, 0xC, 1])).unwrap(),
            Packet::DoneResponse { status: 1 }
        );
    }

    #[test]
    fn reset_and_reset_resp_are_bare_headers() {
        assert_eq!(Packet::Reset.encode(), words(&[7, 8]));
        assert_eq!(
            Packet::decode(&words(&[8, 8])).unwrap(),
            Packet::ResetResponse
        );
    }

    #[test]
    fn command_mode_packets_layouts() {
        assert_eq!(
            Packet::decode(&words(&[0xB, 8])).unwrap(),
            Packet::CommandReady
        );
        assert_eq!(
            Packet::SwitchMode { mode: 0 }.encode(),
            words(&[0xC, 0xC, 0])
        );
        assert_eq!(
            Packet::Execute {
                command: exec::MSM_HW_ID_READ
            }
            .encode(),
            words(&[0xD, 0xC, 2])
        );
        assert_eq!(
            Packet::decode(&words(&[0xE, 0x10, 2, 8])).unwrap(),
            Packet::ExecuteResponse {
                command: 2,
                data_len: 8
            }
        );
        assert_eq!(
            Packet::ExecuteData { command: 1 }.encode(),
            words(&[0xF, 0xC, 1])
        );
    }

    #[test]
    fn rejects_wrong_declared_length_and_unknown_commands() {
        assert!(matches!(
            Packet::decode(&words(&[3, 0x18, 0, 0, 0, 0])),
            Err(Error::BadLength { .. })
        ));
        assert!(matches!(
            Packet::decode(&words(&[0x99, 8])),
            Err(Error::UnknownCommand(0x99))
        ));
        assert!(matches!(
            Packet::decode(&words(&[3, 0x14, 0])),
            Err(Error::Truncated { .. })
        ));
        assert!(matches!(
            Packet::decode(&[1, 0, 0]),
            Err(Error::Truncated { .. })
        ));
    }

    #[test]
    fn identify_reads_serial_and_hwid_then_switches_mode() {
        let mut m = Identify::new();
        let step = m
            .on_packet(&Packet::Hello {
                version: 2,
                version_compatible: 1,
                max_command_len: 0x400,
                mode: 0,
            })
            .unwrap();
        assert!(matches!(
            step,
            Step::Send(Packet::HelloResponse {
                mode: mode::COMMAND,
                ..
            })
        ));
        assert_eq!(
            m.on_packet(&Packet::CommandReady).unwrap(),
            Step::Send(Packet::Execute { command: 1 })
        );
        assert_eq!(
            m.on_packet(&Packet::ExecuteResponse {
                command: 1,
                data_len: 4
            })
            .unwrap(),
            Step::Send(Packet::ExecuteData { command: 1 })
        );
        assert_eq!(m.expects(), Expect::Raw(4));
        m.on_raw(&0xCAFE_F00Du32.to_le_bytes()).unwrap();
        m.on_packet(&Packet::ExecuteResponse {
            command: 2,
            data_len: 8,
        })
        .unwrap();
        let hwid = 0x0004_A0E1_0000_0001u64;
        assert_eq!(
            m.on_raw(&hwid.to_le_bytes()).unwrap(),
            Step::Send(Packet::Execute { command: 3 })
        );
        let mut other = m.clone();
        // The PK hash, repeated once per root as many boot ROMs send it.
        let digest: Vec<u8> = (1..=32).collect();
        m.on_packet(&Packet::ExecuteResponse {
            command: 3,
            data_len: 64,
        })
        .unwrap();
        assert_eq!(
            m.on_raw(&[digest.clone(), digest.clone()].concat())
                .unwrap(),
            Step::Finish(Packet::SwitchMode { mode: 0 })
        );
        let id = m.identity().unwrap();
        assert_eq!(id.serial, 0xCAFE_F00D);
        assert_eq!(id.msm_id(), 0x0004_A0E1);
        assert!(id.is_mdm9x07());
        assert_eq!(id.pk_hash.unwrap().as_bytes(), &digest[..]);
        // A boot ROM that refuses the PK hash query: the identity stands without it.
        assert_eq!(
            other
                .on_packet(&Packet::EndOfImage {
                    image_id: 0,
                    status: 0x1E
                })
                .unwrap(),
            Step::Finish(Packet::SwitchMode { mode: 0 })
        );
        assert_eq!(other.identity().unwrap().pk_hash, None);
    }

    #[test]
    fn pk_hash_answers_reduce_to_one_digest() {
        let d: Vec<u8> = (0x80..0xA0).collect();
        for answer in [
            d.clone(),
            [d.clone(), d.clone()].concat(),
            [d.clone(), vec![0; 32]].concat(),
        ] {
            assert_eq!(PkHash::from_answer(&answer).unwrap().as_bytes(), &d[..]);
        }
        // A digest whose last bytes are zero keeps them.
        let mut z = d.clone();
        z[30] = 0;
        z[31] = 0;
        assert_eq!(PkHash::from_answer(&z).unwrap().as_bytes(), &z[..]);
        assert_eq!(PkHash::from_answer(&[]), None);
        assert_eq!(
            PkHash::from_answer(&d).unwrap().to_string(),
            "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f"
        );
    }

    #[test]
    fn identify_refuses_oversized_answers() {
        let mut m = Identify::new();
        m.on_packet(&Packet::Hello {
            version: 2,
            version_compatible: 1,
            max_command_len: 0,
            mode: 0,
        })
        .unwrap();
        m.on_packet(&Packet::CommandReady).unwrap();
        assert!(matches!(
            m.on_packet(&Packet::ExecuteResponse {
                command: 1,
                data_len: u32::MAX
            }),
            Err(Error::BadLength { .. })
        ));
    }

    #[test]
    fn upload_stops_a_device_that_asks_forever() {
        let mut m = Upload::new(MAX_READ_LEN);
        m.on_packet(&Packet::Hello {
            version: 2,
            version_compatible: 1,
            max_command_len: 0,
            mode: 0,
        })
        .unwrap();
        let ask = Packet::ReadData {
            image_id: 13,
            offset: 0,
            length: 4096,
        };
        let mut refused = false;
        for _ in 0..=(MAX_SERVE_FACTOR * MAX_READ_LEN / 4096) {
            if m.on_packet(&ask).is_err() {
                refused = true;
                break;
            }
        }
        assert!(refused);
    }

    #[test]
    fn upload_serves_only_inside_the_image() {
        let mut m = Upload::new(100);
        m.on_packet(&Packet::Hello {
            version: 2,
            version_compatible: 1,
            max_command_len: 0,
            mode: 0,
        })
        .unwrap();
        assert_eq!(
            m.on_packet(&Packet::ReadData {
                image_id: 13,
                offset: 90,
                length: 10
            })
            .unwrap(),
            Step::SendImage {
                offset: 90,
                length: 10
            }
        );
        assert!(matches!(
            m.on_packet(&Packet::ReadData64 {
                image_id: 13,
                offset: u64::MAX,
                length: 2
            }),
            Err(Error::ReadOutOfRange { .. })
        ));
        assert!(matches!(
            m.on_packet(&Packet::EndOfImage {
                image_id: 13,
                status: 0x22
            }),
            Err(Error::ImageRejected { status: 0x22 })
        ));
    }
}
