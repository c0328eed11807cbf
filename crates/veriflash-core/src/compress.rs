//! Compressed chunks (FORMAT.md §3.1): the Zstandard decoder the verifier runs on stored bytes
//! that already matched their signed digest, and the packer's per-chunk compressor.
//!
//! The decoder is the C `libzstd` (through the `zstd` crate): on a 256 MiB ext4 image it decodes
//! about 5 times faster than the pure-Rust `ruzstd` (docs/PERFORMANCE.md has the numbers), and
//! decoding must keep up with SHA-256 so compression never slows verification. A `no_std` build
//! implements [`ChunkDecoder`] over a pure-Rust decoder instead: the hash crate only knows the
//! trait.
//!
//! Limits (FORMAT.md §3.1): a stored chunk is exactly one Zstandard frame, without a dictionary,
//! whose window is at most [`MAX_WINDOW_LOG`] (8 MiB) and whose declared content size, when
//! present, is not larger than the chunk's signed decompressed length. The frame is decoded in
//! one call straight into a buffer of exactly that length, so decoding needs no window buffer of
//! its own and can never grow past the signed length.

use veriflash_hash::{ChunkDecoder, ChunkEncoding, DecodeError, ExpectedChunk};
use zstd::zstd_safe;

use crate::error::{Error, ErrorKind};

/// Largest Zstandard window a stored chunk's frame may declare, as a power of two: 2^23 =
/// 8 MiB ([`veriflash_format::limits::MAX_ZSTD_WINDOW_LOG`]). The packer uses
/// `min(23, log2(chunk size))`; the decoder refuses larger windows.
pub const MAX_WINDOW_LOG: u32 = veriflash_format::limits::MAX_ZSTD_WINDOW_LOG;

/// Default compression level of `veriflash pack --compress`: 9 of zstd's 1..=22, most of the
/// size gain of the high levels at a fraction of their packing time (docs/PERFORMANCE.md).
pub const DEFAULT_COMPRESSION_LEVEL: i32 = 9;

/// A chunk is stored compressed only if that saves at least 1/32 (about 3 %) of its bytes:
/// smaller gains are not worth a decode.
const MIN_SAVING_DIVISOR: usize = 32;

const ZSTD_MAGIC: u32 = 0xFD2F_B528;

/// The Zstandard [`ChunkDecoder`] that verification uses by default.
#[derive(Clone, Copy, Debug, Default)]
pub struct ZstdDecoder;

impl ZstdDecoder {
    /// The decoder.
    #[must_use]
    pub fn new() -> Self {
        Self
    }
}

/// What a frame header declares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FrameHeader {
    window: u64,
    content_size: Option<u64>,
    dictionary: bool,
}

fn invalid(reason: impl Into<String>) -> DecodeError {
    DecodeError::Invalid {
        reason: reason.into(),
    }
}

/// Parses a Zstandard frame header (RFC 8878 §3.1.1.1) without decoding anything.
fn frame_header(stored: &[u8]) -> Result<FrameHeader, DecodeError> {
    let magic = stored
        .get(..4)
        .and_then(|m| <[u8; 4]>::try_from(m).ok())
        .map(u32::from_le_bytes);
    if magic != Some(ZSTD_MAGIC) {
        return Err(invalid("not a Zstandard frame (bad magic number)"));
    }
    let descriptor = *stored
        .get(4)
        .ok_or_else(|| invalid("frame header truncated"))?;
    if descriptor & 0x08 != 0 {
        return Err(invalid("frame header reserved bit set"));
    }
    let fcs_flag = descriptor >> 6;
    let single_segment = descriptor & 0x20 != 0;
    let dict_len = match descriptor & 0x03 {
        0 => 0usize,
        1 => 1,
        2 => 2,
        _ => 4,
    };
    let mut at = 5usize;
    let window_descriptor = if single_segment {
        None
    } else {
        let byte = *stored
            .get(at)
            .ok_or_else(|| invalid("frame header truncated"))?;
        at = at.saturating_add(1);
        Some(byte)
    };
    let dictionary = stored
        .get(at..at.saturating_add(dict_len))
        .ok_or_else(|| invalid("frame header truncated"))?
        .iter()
        .any(|&b| b != 0);
    at = at.saturating_add(dict_len);
    let fcs_len = match (fcs_flag, single_segment) {
        (0, false) => 0usize,
        (0, true) => 1,
        (1, _) => 2,
        (2, _) => 4,
        _ => 8,
    };
    let content_size = if fcs_len == 0 {
        None
    } else {
        let field = stored
            .get(at..at.saturating_add(fcs_len))
            .ok_or_else(|| invalid("frame header truncated"))?;
        let mut le = [0u8; 8];
        for (dst, src) in le.iter_mut().zip(field) {
            *dst = *src;
        }
        let value = u64::from_le_bytes(le);
        Some(if fcs_len == 2 {
            value.saturating_add(256)
        } else {
            value
        })
    };
    let window = match window_descriptor {
        None => content_size.unwrap_or(0),
        Some(byte) => {
            let exponent = u32::from(byte >> 3);
            let base = 1u64 << (10 + exponent); // exponent <= 31: no overflow
            base.saturating_add((base / 8).saturating_mul(u64::from(byte & 0x07)))
        }
    };
    Ok(FrameHeader {
        window,
        content_size,
        dictionary,
    })
}

impl ChunkDecoder for ZstdDecoder {
    fn decode(
        &self,
        chunk: &ExpectedChunk<'_>,
        stored: &[u8],
        out: &mut [u8],
    ) -> Result<usize, DecodeError> {
        if chunk.encoding() != ChunkEncoding::Zstd {
            return Err(DecodeError::UnsupportedEncoding);
        }
        decode_frame(stored, None, out)
    }
}

/// Decodes `stored`, exactly one frame within the rules of FORMAT.md §3.1, into `out` (the
/// signed length bounds the output); with `prefix`, a patch frame (§3.4) whose reference prefix
/// is that range of the source image. Returns the bytes produced.
pub(crate) fn decode_frame(
    stored: &[u8],
    prefix: Option<&[u8]>,
    out: &mut [u8],
) -> Result<usize, DecodeError> {
    let header = frame_header(stored)?;
    let limit = u64::try_from(out.len()).unwrap_or(u64::MAX);
    if header.content_size.is_some_and(|size| size > limit) {
        // Declares more than the signed length: refused before anything is decoded.
        return Err(DecodeError::OutputOverflow);
    }
    if header.window > 1u64 << MAX_WINDOW_LOG {
        return Err(invalid(format!(
            "frame window of {} bytes exceeds the limit of {} bytes",
            header.window,
            1u64 << MAX_WINDOW_LOG
        )));
    }
    if header.dictionary {
        return Err(invalid("frame needs a dictionary"));
    }
    match zstd_safe::find_frame_compressed_size(stored) {
        Ok(n) if n == stored.len() => {}
        Ok(_) => return Err(invalid("bytes follow the frame (one frame per chunk)")),
        Err(code) => return Err(invalid(zstd_safe::get_error_name(code))),
    }
    let mut dctx = zstd_safe::DCtx::create();
    dctx.set_parameter(zstd_safe::DParameter::WindowLogMax(MAX_WINDOW_LOG))
        .map_err(|code| invalid(zstd_safe::get_error_name(code)))?;
    if let Some(prefix) = prefix {
        dctx.ref_prefix(prefix)
            .map_err(|code| invalid(zstd_safe::get_error_name(code)))?;
    }
    dctx.decompress(out, stored).map_err(|code| {
        // ZSTD_error_dstSize_tooSmall: the frame produces more than the signed length;
        // decoding stopped at the end of `out`.
        if zstd_safe::get_error_name(code) == "Destination buffer is too small" {
            DecodeError::OutputOverflow
        } else {
            invalid(zstd_safe::get_error_name(code))
        }
    })
}

/// Compresses one chunk as a single Zstandard frame at `level`, with the content size recorded,
/// no checksum (the signed SHA-256 covers the stored bytes), and a window of
/// `min(MAX_WINDOW_LOG, log2(chunk length))`. Returns `None` when compression does not pay
/// (it would save less than 1/32 of the chunk): the chunk is then stored raw.
///
/// # Errors
/// [`ErrorKind::InvalidInput`] for a level zstd refuses.
pub fn compress_chunk(chunk: &[u8], level: i32) -> Result<Option<Vec<u8>>, Error> {
    let worth = chunk
        .len()
        .saturating_sub(chunk.len() / MIN_SAVING_DIVISOR)
        .saturating_sub(1);
    compress_frame(chunk, None, level, worth)
}

/// Compresses `chunk` as a patch (FORMAT.md §3.4): one frame whose reference prefix is
/// `reference`, a range of the source image, with a window that reaches over all of it (at most
/// [`MAX_WINDOW_LOG`]). Returns `None` unless the frame is smaller than the chunk.
///
/// # Errors
/// [`ErrorKind::InvalidInput`] for a level zstd refuses.
pub fn patch_chunk(chunk: &[u8], reference: &[u8], level: i32) -> Result<Option<Vec<u8>>, Error> {
    compress_frame(chunk, Some(reference), level, chunk.len().saturating_sub(1))
}

/// One frame of `chunk` (with `prefix` as its reference prefix, if any), or `None` when it is
/// longer than `worth` bytes.
fn compress_frame(
    chunk: &[u8],
    prefix: Option<&[u8]>,
    level: i32,
    worth: usize,
) -> Result<Option<Vec<u8>>, Error> {
    let fail = |code: zstd_safe::ErrorCode| {
        Error::new(
            ErrorKind::InvalidInput,
            format!(
                "zstd compression (level {level}): {}",
                zstd_safe::get_error_name(code)
            ),
        )
    };
    let mut cctx = zstd_safe::CCtx::create();
    let reach = chunk.len().saturating_add(prefix.map_or(0, <[u8]>::len));
    let window_log = reach
        .checked_next_power_of_two()
        .map_or(MAX_WINDOW_LOG, usize::trailing_zeros)
        .clamp(10, MAX_WINDOW_LOG);
    cctx.set_parameter(zstd_safe::CParameter::CompressionLevel(level))
        .map_err(fail)?;
    cctx.set_parameter(zstd_safe::CParameter::WindowLog(window_log))
        .map_err(fail)?;
    cctx.set_parameter(zstd_safe::CParameter::ChecksumFlag(false))
        .map_err(fail)?;
    cctx.set_parameter(zstd_safe::CParameter::ContentSizeFlag(true))
        .map_err(fail)?;
    if let Some(prefix) = prefix {
        cctx.ref_prefix(prefix).map_err(fail)?;
    }
    let mut out: Vec<u8> = Vec::with_capacity(zstd_safe::compress_bound(chunk.len()));
    match cctx.compress2(&mut out, chunk) {
        Ok(n) if n <= worth && n > 0 => {
            out.truncate(n);
            Ok(Some(out))
        }
        Ok(_) => Ok(None),
        Err(code) => Err(fail(code)),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;

    #[test]
    fn frame_header_reads_what_the_compressor_writes() {
        let data = vec![7u8; 1 << 20];
        let frame = compress_chunk(&data, 3).unwrap().unwrap();
        let header = frame_header(&frame).unwrap();
        assert_eq!(header.content_size, Some(1 << 20));
        assert!(header.window <= 1 << MAX_WINDOW_LOG);
        assert!(!header.dictionary);
    }

    #[test]
    fn incompressible_chunks_are_not_worth_compressing() {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let data: Vec<u8> = (0..65_536)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state.to_le_bytes()[0]
            })
            .collect();
        assert_eq!(compress_chunk(&data, 19).unwrap(), None);
    }

    #[test]
    fn a_single_segment_frame_has_its_content_size_as_window() {
        // RFC 8878 §3.1.1.1.2: Single_Segment_flag set means no Window_Descriptor, and the
        // window is Frame_Content_Size. Descriptor 0xA0: a 4-byte content size, single segment.
        let mut frame = vec![0x28, 0xB5, 0x2F, 0xFD, 0xA0];
        frame.extend_from_slice(&(9u32 << 20).to_le_bytes());
        let header = frame_header(&frame).unwrap();
        assert_eq!(header.content_size, Some(9 << 20));
        assert_eq!(header.window, 9 << 20);
        assert!(
            header.window > 1 << MAX_WINDOW_LOG,
            "refused by the window limit"
        );
    }

    #[test]
    fn compressor_writes_no_single_segment_frame_for_a_chunk_over_the_window_limit() {
        let frame = compress_chunk(&vec![0u8; 12 << 20], 1).unwrap().unwrap();
        assert_eq!(frame[4] & 0x20, 0, "Single_Segment_flag set");
        let header = frame_header(&frame).unwrap();
        assert_eq!(header.content_size, Some(12 << 20));
        assert!(header.window <= 1 << MAX_WINDOW_LOG);
    }

    #[test]
    fn rejects_frames_with_a_window_over_the_limit() {
        // Window_Descriptor 0x68: exponent 13 -> 2^23 base, mantissa 0 -> exactly 8 MiB: fine;
        // 0x69 adds 1/8: over the limit.
        let mut frame = vec![0x28, 0xB5, 0x2F, 0xFD, 0x00, 0x68];
        assert_eq!(frame_header(&frame).unwrap().window, 1 << 23);
        frame[5] = 0x69;
        assert!(frame_header(&frame).unwrap().window > 1 << MAX_WINDOW_LOG);
    }
}
