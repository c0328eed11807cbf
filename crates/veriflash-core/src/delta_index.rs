//! Where an old image holds a new image's content, for the delta packer
//! ([`crate::UnsignedPackage::prepare_delta`]): whole chunks to copy ([`SourceIndex`]), and the
//! range a changed chunk's old version lies in, to patch it against ([`AnchorIndex`]).
//!
//! Both run on the packer's computer; neither is needed by a device (a delta package names
//! every range it reads). The old image is read by position ([`OldImage`]: the temporary file
//! it was verified into), never whole: each scan reads it in segments of a few MiB, one buffer
//! per thread, so the packer's memory does not grow with the image. Both are built on every
//! core with the result one thread would give, so two packs of the same pair are the same
//! package.

use std::collections::{HashMap, HashSet};
use std::io;

use veriflash_hash::{Digest, ReadAt};

use crate::cdc::Cdc;

/// An old image as the delta packer reads it: a range at a time, by position (the temporary
/// file the old package's image was verified into; bytes in memory in tests).
#[derive(Clone, Copy)]
pub(crate) struct OldImage<'a> {
    data: &'a dyn ReadAt,
    len: u64,
}

impl<'a> OldImage<'a> {
    /// The `len` bytes `data` holds from offset 0.
    pub(crate) fn new(data: &'a dyn ReadAt, len: u64) -> Self {
        Self { data, len }
    }

    /// Its length in bytes.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Fills `buf` with its bytes from `offset`.
    ///
    /// # Errors
    /// [`io::ErrorKind::UnexpectedEof`] when they run past its end; a failed read's error.
    pub(crate) fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        if offset
            .checked_add(buf.len() as u64)
            .is_none_or(|end| end > self.len)
        {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let mut filled = 0usize;
        while let Some(rest) = buf.get_mut(filled..).filter(|r| !r.is_empty()) {
            match self
                .data
                .read_at(rest, offset.saturating_add(filled as u64))
            {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => filled = filled.saturating_add(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// Bytes of the old image each thread of a scan reads at a time (plus the overlap a window or
/// a chunk needs past them): large enough that a read costs little against the scan of its
/// bytes, small enough that a few threads hold a few MiB each.
const SEGMENT: usize = 4 << 20;

/// A stretch of an old image read into a buffer of one scan's own, moved forward as the scan
/// goes.
struct Segment<'a> {
    old: OldImage<'a>,
    old_len: usize,
    /// Where `bytes` starts in the old image.
    base: usize,
    bytes: Vec<u8>,
    /// Bytes read at a time, as far as the image goes.
    span: usize,
}

impl<'a> Segment<'a> {
    fn new(old: OldImage<'a>, span: usize) -> Self {
        Self {
            old,
            old_len: usize::try_from(old.len()).unwrap_or(usize::MAX),
            base: 0,
            bytes: Vec::new(),
            span,
        }
    }

    /// The bytes of the old image the buffer holds from `from` on: at least `at_least` of them
    /// (all the image has left when that is fewer), read with the rest of a span from `from`
    /// when the buffer holds fewer.
    fn from(&mut self, from: usize, at_least: usize) -> io::Result<&[u8]> {
        let held_to = self.base.saturating_add(self.bytes.len());
        if from < self.base || (held_to.saturating_sub(from) < at_least && held_to < self.old_len) {
            let n = self
                .span
                .max(at_least)
                .min(self.old_len.saturating_sub(from));
            self.base = from;
            self.bytes.resize(n, 0);
            self.old
                .read_exact_at(u64::try_from(from).unwrap_or(u64::MAX), &mut self.bytes)?;
        }
        Ok(self
            .bytes
            .get(from.saturating_sub(self.base)..)
            .unwrap_or_default())
    }
}

/// Calls `each(base, piece, start, end)` for every chunk `cdc` cuts from the start of `old`,
/// in order, the chunk being `piece[start..end]` and `piece` the old image's bytes from
/// `base`: pieces of `segment` bytes per thread (and a largest chunk) are read one after
/// another, each cut on `threads` threads ([`Cdc::cut_points`]), the next one read from the
/// last cut the piece decided. Each cut depends only on the largest chunk after where the
/// chunk starts, so the cuts are those of the whole image.
fn for_each_chunk(
    old: OldImage<'_>,
    cdc: Cdc,
    threads: usize,
    segment: usize,
    mut each: impl FnMut(u64, &[u8], usize, usize),
) -> io::Result<()> {
    let threads = threads.max(1);
    let span = segment
        .max(1)
        .saturating_mul(threads)
        .saturating_add(cdc.max());
    let mut piece = Vec::new();
    let mut base = 0u64;
    loop {
        let n = usize::try_from(old.len().saturating_sub(base))
            .unwrap_or(usize::MAX)
            .min(span);
        piece.resize(n, 0);
        old.read_exact_at(base, &mut piece)?;
        let last = base.saturating_add(n as u64) >= old.len();
        let mut start = 0;
        for end in cdc.cut_points(&piece, last, threads) {
            each(base, &piece, start, end);
            start = end;
        }
        // A piece longer than a largest chunk always decides one: `start == 0` would only
        // read the same piece again.
        if last || start == 0 {
            return Ok(());
        }
        base = base.saturating_add(start as u64);
    }
}

/// Where the old image holds chunks of the new one, by SHA-256.
#[derive(Debug, Default)]
pub(crate) struct SourceIndex {
    at: HashMap<Digest, u64>,
}

/// Base of the polynomial rolling hash that finds fixed-size chunks at any offset.
const ROLL_BASE: u64 = 0x100_0000_01B3;

/// Weak hash of `window`: the polynomial the rolling hash keeps, which finds candidates for a
/// SHA-256 comparison.
pub(crate) fn weak_hash(window: &[u8]) -> u64 {
    window.iter().fold(0u64, |h, &b| {
        h.wrapping_mul(ROLL_BASE).wrapping_add(u64::from(b))
    })
}

/// The fixed-size chunks a rolling search looks for: each weak hash with the SHA-256s of the
/// chunks that have it.
#[derive(Debug, Default)]
pub(crate) struct WantedChunks {
    by_weak: HashMap<u64, HashSet<Digest>>,
}

impl WantedChunks {
    /// Adds the chunk `chunk`.
    pub(crate) fn insert(&mut self, chunk: &[u8]) {
        self.by_weak
            .entry(weak_hash(chunk))
            .or_default()
            .insert(veriflash_hash::sha256(chunk));
    }
}

/// Bits of the filter that turns away most windows before a hash-map lookup.
const FILTER_BITS: u32 = 22;

impl SourceIndex {
    /// Indexes where `old` holds the `len`-byte chunks of `wanted`, at any offset, on up to
    /// `threads` threads: a rolling weak hash over every window of `old`, each candidate
    /// confirmed by SHA-256 (fixed chunking). Each chunk is taken where it first occurs.
    ///
    /// A weak hash stops being a candidate once every chunk that has it is found: a chunk of
    /// zeros (or of any one repeated pattern) matches at every offset of such a run in the old
    /// image, and hashing a whole window at each of them would take hours on a file system
    /// image.
    ///
    /// # Errors
    /// When `old` cannot be read.
    pub(crate) fn rolling(
        old: OldImage<'_>,
        len: usize,
        wanted: &WantedChunks,
        threads: usize,
    ) -> io::Result<Self> {
        Self::rolling_in(old, len, wanted, threads, SEGMENT)
    }

    /// [`SourceIndex::rolling`], each thread reading `segment` bytes of windows at a time.
    fn rolling_in(
        old: OldImage<'_>,
        len: usize,
        wanted: &WantedChunks,
        threads: usize,
        segment: usize,
    ) -> io::Result<Self> {
        let old_len = usize::try_from(old.len()).unwrap_or(usize::MAX);
        let windows = old_len.saturating_add(1).saturating_sub(len);
        if len == 0 || windows == 0 || wanted.by_weak.is_empty() {
            return Ok(Self::default());
        }
        let mut filter = vec![0u64; 1 << (FILTER_BITS - 6)];
        for &weak in wanted.by_weak.keys() {
            let bit = weak >> (64 - FILTER_BITS);
            if let Some(word) = filter.get_mut(usize::try_from(bit >> 6).unwrap_or(0)) {
                *word |= 1 << (bit & 63);
            }
        }
        let segments = threads.clamp(1, windows);
        let bounds: Vec<usize> = (0..=segments).map(|k| windows * k / segments).collect();
        let scan = |from: usize, to: usize| {
            let mut old = Segment::new(old, segment.max(1).saturating_add(len));
            scan_windows(&mut old, len, from, to, wanted, &filter)
        };
        let parts: Vec<io::Result<HashMap<Digest, usize>>> = if segments == 1 {
            vec![scan(0, windows)]
        } else {
            std::thread::scope(|s| {
                let workers: Vec<_> = bounds
                    .windows(2)
                    .map(|w| {
                        let (from, to) = (w[0], w[1]);
                        s.spawn(move || scan(from, to))
                    })
                    .collect();
                workers
                    .into_iter()
                    .zip(bounds.windows(2))
                    // A lost thread is only work to redo, on this one.
                    .map(|(w, b)| w.join().unwrap_or_else(|_| scan(b[0], b[1])))
                    .collect()
            })
        };
        let mut index = Self::default();
        for part in parts {
            for (digest, at) in part? {
                let at = u64::try_from(at).unwrap_or(u64::MAX);
                index
                    .at
                    .entry(digest)
                    .and_modify(|first| *first = (*first).min(at))
                    .or_insert(at);
            }
        }
        Ok(index)
    }

    /// Indexes every content-defined chunk of `old`, cut as the packer cuts the new image
    /// ([`crate::cdc`], the same largest chunk, on up to `threads` threads): unchanged
    /// stretches give the same chunks wherever they moved.
    ///
    /// # Errors
    /// When `old` cannot be read.
    pub(crate) fn content_defined(
        old: OldImage<'_>,
        chunk_size: u32,
        threads: usize,
    ) -> io::Result<Self> {
        Self::content_defined_in(old, chunk_size, threads, SEGMENT)
    }

    /// [`SourceIndex::content_defined`], cutting `segment` bytes per thread at a time.
    fn content_defined_in(
        old: OldImage<'_>,
        chunk_size: u32,
        threads: usize,
        segment: usize,
    ) -> io::Result<Self> {
        let mut index = Self::default();
        let cdc = Cdc::new(chunk_size);
        for_each_chunk(old, cdc, threads, segment, |base, piece, start, end| {
            if let Some(chunk) = piece.get(start..end) {
                index
                    .at
                    .entry(veriflash_hash::sha256(chunk))
                    .or_insert(base.saturating_add(start as u64));
            }
        })?;
        Ok(index)
    }

    /// Where the old image holds the `len`-byte chunk whose SHA-256 is `digest`: found by the
    /// index, or at one of `hints` (offsets where it would be if nothing moved, or moved as
    /// the chunk before it did), each read into `scratch` and hashed.
    ///
    /// # Errors
    /// When `old` cannot be read.
    pub(crate) fn find(
        &self,
        old: OldImage<'_>,
        len: usize,
        digest: &Digest,
        hints: &[u64],
        scratch: &mut Vec<u8>,
    ) -> io::Result<Option<u64>> {
        if let Some(&at) = self.at.get(digest) {
            return Ok(Some(at));
        }
        for &hint in hints {
            if hint
                .checked_add(len as u64)
                .is_some_and(|end| end <= old.len())
            {
                scratch.resize(len, 0);
                old.read_exact_at(hint, scratch)?;
                if veriflash_hash::sha256(scratch) == *digest {
                    return Ok(Some(hint));
                }
            }
        }
        Ok(None)
    }
}

/// The first offset in `[from, to)` of each chunk of `wanted` that `old` holds there.
fn scan_windows(
    old: &mut Segment<'_>,
    len: usize,
    from: usize,
    to: usize,
    wanted: &WantedChunks,
    filter: &[u64],
) -> io::Result<HashMap<Digest, usize>> {
    let mut found: HashMap<Digest, usize> = HashMap::new();
    // Chunks still looked for, by weak hash.
    let mut open: HashMap<u64, usize> = wanted
        .by_weak
        .iter()
        .map(|(&weak, digests)| (weak, digests.len()))
        .collect();
    // The window at `p` and the byte after it (none after the image's last window) are
    // `held[p - base..]`.
    let end = old.old_len;
    let mut base = from;
    let mut held = old.from(from, len.saturating_add(1))?;
    let Some(first) = held.get(..len) else {
        return Ok(found);
    };
    let mut h = weak_hash(first);
    // ROLL_BASE^(len - 1): the weight of the byte that leaves the window.
    let top = (1..len).fold(1u64, |p, _| p.wrapping_mul(ROLL_BASE));
    let mut p = from;
    while p < to {
        let mut i = p - base;
        if i.saturating_add(len) >= held.len() && base.saturating_add(held.len()) < end {
            base = p;
            i = 0;
            held = old.from(p, len.saturating_add(1))?;
        }
        let bit = h >> (64 - FILTER_BITS);
        let maybe = filter
            .get(usize::try_from(bit >> 6).unwrap_or(0))
            .is_some_and(|word| word & (1 << (bit & 63)) != 0);
        if maybe
            && let Some(left) = open.get_mut(&h)
            && let Some(window) = held.get(i..i.saturating_add(len))
        {
            let digest = veriflash_hash::sha256(window);
            if wanted.by_weak.get(&h).is_some_and(|d| d.contains(&digest))
                && !found.contains_key(&digest)
            {
                found.insert(digest, p);
                *left = left.saturating_sub(1);
                if *left == 0 {
                    open.remove(&h);
                }
            }
        }
        let (Some(&out), Some(&next)) = (held.get(i), held.get(i.saturating_add(len))) else {
            break;
        };
        h = h
            .wrapping_sub(u64::from(out).wrapping_mul(top))
            .wrapping_mul(ROLL_BASE)
            .wrapping_add(u64::from(next));
        p = p.saturating_add(1);
    }
    Ok(found)
}

/// Anchors are cut as content-defined chunks of at most this many bytes (about 512 on
/// average): dense enough that a few land in any changed chunk, sparse enough that the index
/// of a 256 MiB image holds about half a million.
const ANCHOR_SPACING: u32 = 4096;

/// Bytes after a cut that name an anchor.
const ANCHOR_LEN: usize = 32;

/// Where short stretches of the old image are, found by content: the 32 bytes after each
/// content-defined cut (about every 512 bytes), by a 64-bit hash of them, at their first
/// occurrence. A changed chunk of the new image cut the same way finds where its content lies
/// in the old image (moved with the files around it, as in a rebuilt file system), so its patch
/// is made against that range instead of against where the chunk was.
#[derive(Debug, Default)]
pub(crate) struct AnchorIndex {
    at: HashMap<u64, u64>,
}

impl AnchorIndex {
    /// Indexes `old` on up to `threads` threads.
    ///
    /// # Errors
    /// When `old` cannot be read.
    pub(crate) fn new(old: OldImage<'_>, threads: usize) -> io::Result<Self> {
        Self::new_in(old, threads, SEGMENT)
    }

    /// [`AnchorIndex::new`], cutting `segment` bytes per thread at a time.
    fn new_in(old: OldImage<'_>, threads: usize, segment: usize) -> io::Result<Self> {
        let mut at = HashMap::new();
        let cdc = Cdc::new(ANCHOR_SPACING);
        // Every cut but the image's end starts a chunk, and a chunk's piece holds the
        // [`ANCHOR_LEN`] bytes after its start unless the image ends first.
        for_each_chunk(old, cdc, threads, segment, |base, piece, start, _| {
            let cut = base.saturating_add(start as u64);
            if cut > 0
                && let Some(key) = anchor_key(piece, start)
            {
                at.entry(key).or_insert(cut);
            }
        })?;
        Ok(Self { at })
    }

    /// The range of the old image (of `old_len` bytes) to patch `chunk`, at offset `at` of the
    /// new image, against: at most `cap` bytes around the old positions its anchors point to,
    /// where most of them agree. `None` when no anchor of the chunk is in the old image.
    ///
    /// Each anchor found says how far its stretch moved (old offset minus new offset); the
    /// moves are sorted and the range is the one that covers the most anchors within `cap`
    /// bytes (the chunk, the spread of its moves, and a margin on each side), so a stray match
    /// elsewhere in the image does not stretch it.
    pub(crate) fn reference(
        &self,
        old_len: usize,
        chunk: &[u8],
        at: u64,
        cap: usize,
    ) -> Option<(u64, usize)> {
        let len = chunk.len();
        let margin = (len / 8).max(4096);
        let spread = cap.checked_sub(len.saturating_add(margin.saturating_mul(2)))?;
        let at = i128::from(at);
        let mut moves: Vec<i128> = Cdc::new(ANCHOR_SPACING)
            .cut_points(chunk, true, 1)
            .into_iter()
            .filter_map(|cut| {
                let old = *self.at.get(&anchor_key(chunk, cut)?)?;
                Some(i128::from(old) - (at + i128::try_from(cut).ok()?))
            })
            .collect();
        moves.sort_unstable();
        let spread = i128::try_from(spread).ok()?;
        // The longest run of moves within `spread` of each other; the first when runs tie.
        let (mut best, mut lo) = ((0usize, 0usize), 0usize);
        for hi in 0..moves.len() {
            while moves.get(hi)? - moves.get(lo)? > spread {
                lo += 1;
            }
            if hi - lo > best.1 - best.0 {
                best = (lo, hi);
            }
        }
        let (first, last) = (*moves.get(best.0)?, *moves.get(best.1)?);
        let margin = i128::try_from(margin).ok()?;
        let start = (at + first - margin).max(0);
        let end =
            (at + last + i128::try_from(len).ok()? + margin).min(i128::try_from(old_len).ok()?);
        let span = usize::try_from(end - start).ok().filter(|&n| n > 0)?;
        Some((u64::try_from(start).ok()?, span.min(cap)))
    }
}

/// The anchor at `cut` of `data`: a hash of the [`ANCHOR_LEN`] bytes from there, unless they
/// run past the end or are one byte repeated (free space, padding: anchors that would point
/// everywhere).
fn anchor_key(data: &[u8], cut: usize) -> Option<u64> {
    let bytes = data.get(cut..cut.checked_add(ANCHOR_LEN)?)?;
    let first = *bytes.first()?;
    if bytes.iter().all(|&b| b == first) {
        return None;
    }
    Some(bytes.chunks(8).fold(0u64, |h, word| {
        let mut w = [0u8; 8];
        w.get_mut(..word.len())
            .unwrap_or_default()
            .copy_from_slice(word);
        (h ^ u64::from_le_bytes(w))
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .rotate_left(29)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use veriflash_test_support::pseudo_random as noise;

    fn at(bytes: &Vec<u8>) -> OldImage<'_> {
        OldImage::new(bytes, bytes.len() as u64)
    }

    fn wanted(chunks: &[&[u8]]) -> WantedChunks {
        let mut wanted = WantedChunks::default();
        for chunk in chunks {
            wanted.insert(chunk);
        }
        wanted
    }

    #[test]
    fn rolling_finds_each_chunk_at_its_first_offset_on_any_number_of_threads_and_segments() {
        let mut old = noise(300_000, 1);
        let a = noise(4096, 2);
        let b = noise(4096, 3);
        // `a` twice (the first wins), `b` once, at offsets no chunk boundary would be.
        for (at, chunk) in [(1001, &a), (250_003, &a), (77_777, &b)] {
            old.get_mut(at..at + 4096).unwrap().copy_from_slice(chunk);
        }
        let absent = noise(4096, 4);
        let wanted = wanted(&[&a, &b, &absent]);
        // Segments of one window (a read per offset), of windows across `a` and `b`, and the
        // packer's own.
        for segment in [1, 3000, SEGMENT] {
            for threads in [1, 2, 3, 7] {
                let index =
                    SourceIndex::rolling_in(at(&old), 4096, &wanted, threads, segment).unwrap();
                assert_eq!(index.at.len(), 2, "{threads} threads, segment {segment}");
                assert_eq!(index.at.get(&veriflash_hash::sha256(&a)), Some(&1001));
                assert_eq!(index.at.get(&veriflash_hash::sha256(&b)), Some(&77_777));
            }
        }
    }

    #[test]
    fn rolling_over_a_long_run_of_zeros_hashes_its_zero_chunk_once() {
        // 64 MiB of zeros against a wanted chunk of zeros: one SHA-256 of 1 MiB per offset
        // would be 64 Ti bytes hashed; found at the first offset, the run costs one pass.
        let old = vec![0u8; 64 << 20];
        let zeros = vec![0u8; 1 << 20];
        let index = SourceIndex::rolling(at(&old), 1 << 20, &wanted(&[&zeros]), 2).unwrap();
        assert_eq!(index.at.get(&veriflash_hash::sha256(&zeros)), Some(&0));
    }

    #[test]
    fn content_defined_index_is_the_same_on_any_number_of_threads() {
        let old = noise(1 << 20, 5);
        let one = SourceIndex::content_defined(at(&old), 65536, 1).unwrap();
        let two = SourceIndex::content_defined(at(&old), 65536, 2).unwrap();
        assert!(one.at.len() > 8);
        assert_eq!(one.at, two.at);
    }

    #[test]
    fn a_changed_chunk_finds_its_old_content_where_it_moved() {
        // The new chunk is an old stretch, moved by 123 457 bytes and edited in a few places.
        let old = noise(4 << 20, 6);
        let from = 1_500_000usize;
        let mut chunk = old.get(from..from + 65536).unwrap().to_vec();
        for at in [100, 20_000, 40_000] {
            chunk[at] ^= 0xFF;
        }
        let new_at = (from - 123_457) as u64;
        let index = AnchorIndex::new(at(&old), 2).unwrap();
        let (start, len) = index
            .reference(old.len(), &chunk, new_at, 4 * 65536)
            .expect("anchors in the chunk");
        let start = usize::try_from(start).unwrap();
        assert!(
            start <= from && from + chunk.len() <= start + len,
            "{start} + {len}"
        );
        assert!(len <= 4 * 65536);
    }

    #[test]
    fn a_stray_anchor_far_away_does_not_stretch_the_reference() {
        let mut old = noise(8 << 20, 7);
        let from = 5_000_000usize;
        let chunk = old.get(from..from + 65536).unwrap().to_vec();
        // A copy of the chunk's first 2 KiB far before it: one stray anchor or a few.
        let stray = chunk.get(..2048).unwrap().to_vec();
        old.get_mut(100..2148).unwrap().copy_from_slice(&stray);
        let index = AnchorIndex::new(at(&old), 1).unwrap();
        let (start, len) = index
            .reference(old.len(), &chunk, from as u64, 4 * 65536)
            .unwrap();
        let start = usize::try_from(start).unwrap();
        assert!(
            start <= from && from + chunk.len() <= start + len,
            "{start} + {len}"
        );
    }

    #[test]
    fn a_chunk_with_nothing_in_common_with_the_old_image_has_no_reference() {
        let index = AnchorIndex::new(at(&noise(1 << 20, 8)), 2).unwrap();
        assert_eq!(
            index.reference(1 << 20, &noise(65536, 9), 0, 4 * 65536),
            None
        );
        // Runs of one byte name no anchor.
        assert_eq!(
            AnchorIndex::new(at(&vec![0xFF; 1 << 20]), 2)
                .unwrap()
                .reference(1 << 20, &[0xFF; 65536], 0, 1 << 20),
            None
        );
    }

    /// An old image with stretches that cut everywhere and a run of zeros, where cut chains
    /// started anywhere never meet.
    fn mixed_image() -> Vec<u8> {
        let mut old = noise(1 << 20, 10);
        old.extend(vec![0u8; 300_000]);
        old.extend(noise(500_000, 11));
        old.extend(old.get(1000..200_000).unwrap().to_vec());
        old
    }

    #[test]
    fn content_defined_index_read_in_segments_is_the_whole_image_cut_at_once() {
        let old = mixed_image();
        let mut whole: HashMap<Digest, u64> = HashMap::new();
        let mut start = 0;
        for end in Cdc::new(65536).cut_points(&old, true, 1) {
            whole
                .entry(veriflash_hash::sha256(&old[start..end]))
                .or_insert(start as u64);
            start = end;
        }
        for segment in [1, 50_000, SEGMENT] {
            for threads in [1, 2, 3] {
                let index =
                    SourceIndex::content_defined_in(at(&old), 65536, threads, segment).unwrap();
                assert_eq!(index.at, whole, "{threads} threads, segment {segment}");
            }
        }
    }

    #[test]
    fn anchors_read_in_segments_are_the_whole_image_cut_at_once() {
        let old = mixed_image();
        let mut whole: HashMap<u64, u64> = HashMap::new();
        for cut in Cdc::new(ANCHOR_SPACING).cut_points(&old, true, 1) {
            if let Some(key) = anchor_key(&old, cut) {
                whole.entry(key).or_insert(cut as u64);
            }
        }
        assert!(whole.len() > 1000);
        for segment in [1, 50_000, SEGMENT] {
            for threads in [1, 2, 3] {
                let index = AnchorIndex::new_in(at(&old), threads, segment).unwrap();
                assert_eq!(index.at, whole, "{threads} threads, segment {segment}");
            }
        }
    }

    #[test]
    fn a_hint_past_the_end_of_the_old_image_is_not_read() {
        let old = noise(10_000, 12);
        let chunk = old.get(6000..10_000).unwrap();
        let digest = veriflash_hash::sha256(chunk);
        let mut scratch = Vec::new();
        let index = SourceIndex::default();
        let find = |hints: &[u64], scratch: &mut Vec<u8>| {
            index.find(at(&old), chunk.len(), &digest, hints, scratch)
        };
        assert_eq!(
            find(&[6001, u64::MAX, 6000], &mut scratch).unwrap(),
            Some(6000)
        );
        assert_eq!(find(&[6001, 9000], &mut scratch).unwrap(), None);
    }

    /// An old image whose reads fail, or end early, from `from` on.
    struct Failing {
        bytes: Vec<u8>,
        from: u64,
        short: bool,
    }

    impl ReadAt for Failing {
        fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
            if offset.saturating_add(buf.len() as u64) <= self.from {
                return self.bytes.read_at(buf, offset);
            }
            if self.short {
                Ok(0)
            } else {
                Err(io::Error::other("the disk went away"))
            }
        }
    }

    #[test]
    fn a_read_of_the_old_image_that_fails_or_ends_early_is_an_error_of_every_scan() {
        let bytes = noise(1 << 20, 13);
        let chunk = bytes.get(900_000..900_000 + 4096).unwrap().to_vec();
        for short in [false, true] {
            let failing = Failing {
                bytes: bytes.clone(),
                from: 600_000,
                short,
            };
            let old = OldImage::new(&failing, bytes.len() as u64);
            let wanted_kind = if short {
                io::ErrorKind::UnexpectedEof
            } else {
                io::ErrorKind::Other
            };
            for threads in [1, 2] {
                let rolling = SourceIndex::rolling_in(old, 4096, &wanted(&[&chunk]), threads, 1000);
                assert_eq!(rolling.unwrap_err().kind(), wanted_kind);
                let cut = SourceIndex::content_defined_in(old, 65536, threads, 1000);
                assert_eq!(cut.unwrap_err().kind(), wanted_kind);
                let anchors = AnchorIndex::new_in(old, threads, 1000);
                assert_eq!(anchors.unwrap_err().kind(), wanted_kind);
            }
            let digest = veriflash_hash::sha256(&chunk);
            let found =
                SourceIndex::default().find(old, 4096, &digest, &[900_000], &mut Vec::new());
            assert_eq!(found.unwrap_err().kind(), wanted_kind);
        }
    }
}
