//! Where an old image holds a new image's content, for the delta packer
//! ([`crate::UnsignedPackage::prepare_delta`]): whole chunks to copy ([`SourceIndex`]), and the
//! range a changed chunk's old version lies in, to patch it against ([`AnchorIndex`]).
//!
//! Both run on the packer's computer over old images held in memory; neither is needed by a
//! device (a delta package names every range it reads). Both are built on every core with the
//! result one thread would give, so two packs of the same pair are the same package.

use std::collections::{HashMap, HashSet};

use veriflash_hash::Digest;

use crate::cdc::Cdc;

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
    pub(crate) fn rolling(old: &[u8], len: usize, wanted: &WantedChunks, threads: usize) -> Self {
        let windows = (old.len() + 1).saturating_sub(len);
        if len == 0 || windows == 0 || wanted.by_weak.is_empty() {
            return Self::default();
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
        let scan = |from: usize, to: usize| scan_windows(old, len, from, to, wanted, &filter);
        let parts: Vec<HashMap<Digest, usize>> = if segments == 1 {
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
            for (digest, at) in part {
                let at = u64::try_from(at).unwrap_or(u64::MAX);
                index
                    .at
                    .entry(digest)
                    .and_modify(|first| *first = (*first).min(at))
                    .or_insert(at);
            }
        }
        index
    }

    /// Indexes every content-defined chunk of `old`, cut as the packer cuts the new image
    /// ([`crate::cdc`], the same largest chunk, on up to `threads` threads): unchanged
    /// stretches give the same chunks wherever they moved.
    pub(crate) fn content_defined(old: &[u8], chunk_size: u32, threads: usize) -> Self {
        let mut index = Self::default();
        let mut start = 0usize;
        for end in Cdc::new(chunk_size).cut_points(old, true, threads) {
            if let Some(piece) = old.get(start..end) {
                index
                    .at
                    .entry(veriflash_hash::sha256(piece))
                    .or_insert(u64::try_from(start).unwrap_or(u64::MAX));
            }
            start = end;
        }
        index
    }

    /// Where the old image holds the chunk `chunk` (whose SHA-256 is `digest`): found by the
    /// index, or at one of `hints` (offsets where it would be if nothing moved, or moved as
    /// the chunk before it did).
    pub(crate) fn find(
        &self,
        old: &[u8],
        chunk: &[u8],
        digest: &Digest,
        hints: &[u64],
    ) -> Option<u64> {
        self.at.get(digest).copied().or_else(|| {
            hints.iter().copied().find(|&hint| {
                let start = usize::try_from(hint).unwrap_or(usize::MAX);
                old.get(start..start.saturating_add(chunk.len()))
                    .is_some_and(|w| w.len() == chunk.len() && veriflash_hash::sha256(w) == *digest)
            })
        })
    }
}

/// The first offset in `[from, to)` of each chunk of `wanted` that `old` holds there.
fn scan_windows(
    old: &[u8],
    len: usize,
    from: usize,
    to: usize,
    wanted: &WantedChunks,
    filter: &[u64],
) -> HashMap<Digest, usize> {
    let mut found: HashMap<Digest, usize> = HashMap::new();
    // Chunks still looked for, by weak hash.
    let mut open: HashMap<u64, usize> = wanted
        .by_weak
        .iter()
        .map(|(&weak, digests)| (weak, digests.len()))
        .collect();
    let Some(first) = old.get(from..from.saturating_add(len)) else {
        return found;
    };
    let mut h = weak_hash(first);
    // ROLL_BASE^(len - 1): the weight of the byte that leaves the window.
    let top = (1..len).fold(1u64, |p, _| p.wrapping_mul(ROLL_BASE));
    let mut p = from;
    while p < to {
        let bit = h >> (64 - FILTER_BITS);
        let maybe = filter
            .get(usize::try_from(bit >> 6).unwrap_or(0))
            .is_some_and(|word| word & (1 << (bit & 63)) != 0);
        if maybe
            && let Some(left) = open.get_mut(&h)
            && let Some(window) = old.get(p..p.saturating_add(len))
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
        let (Some(&out), Some(&next)) = (old.get(p), old.get(p.saturating_add(len))) else {
            break;
        };
        h = h
            .wrapping_sub(u64::from(out).wrapping_mul(top))
            .wrapping_mul(ROLL_BASE)
            .wrapping_add(u64::from(next));
        p = p.saturating_add(1);
    }
    found
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
    pub(crate) fn new(old: &[u8], threads: usize) -> Self {
        let mut at = HashMap::new();
        for cut in Cdc::new(ANCHOR_SPACING).cut_points(old, true, threads) {
            if let Some(key) = anchor_key(old, cut) {
                at.entry(key)
                    .or_insert(u64::try_from(cut).unwrap_or(u64::MAX));
            }
        }
        Self { at }
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

    fn wanted(chunks: &[&[u8]]) -> WantedChunks {
        let mut wanted = WantedChunks::default();
        for chunk in chunks {
            wanted.insert(chunk);
        }
        wanted
    }

    #[test]
    fn rolling_finds_each_chunk_at_its_first_offset_on_any_number_of_threads() {
        let mut old = noise(300_000, 1);
        let a = noise(4096, 2);
        let b = noise(4096, 3);
        // `a` twice (the first wins), `b` once, at offsets no chunk boundary would be.
        for (at, chunk) in [(1001, &a), (250_003, &a), (77_777, &b)] {
            old.get_mut(at..at + 4096).unwrap().copy_from_slice(chunk);
        }
        let absent = noise(4096, 4);
        let wanted = wanted(&[&a, &b, &absent]);
        for threads in [1, 2, 3, 7] {
            let index = SourceIndex::rolling(&old, 4096, &wanted, threads);
            assert_eq!(index.at.len(), 2, "{threads} threads");
            assert_eq!(index.at.get(&veriflash_hash::sha256(&a)), Some(&1001));
            assert_eq!(index.at.get(&veriflash_hash::sha256(&b)), Some(&77_777));
        }
    }

    #[test]
    fn rolling_over_a_long_run_of_zeros_hashes_its_zero_chunk_once() {
        // 64 MiB of zeros against a wanted chunk of zeros: one SHA-256 of 1 MiB per offset
        // would be 64 Ti bytes hashed; found at the first offset, the run costs one pass.
        let old = vec![0u8; 64 << 20];
        let zeros = vec![0u8; 1 << 20];
        let index = SourceIndex::rolling(&old, 1 << 20, &wanted(&[&zeros]), 2);
        assert_eq!(index.at.get(&veriflash_hash::sha256(&zeros)), Some(&0));
    }

    #[test]
    fn content_defined_index_is_the_same_on_any_number_of_threads() {
        let old = noise(1 << 20, 5);
        let one = SourceIndex::content_defined(&old, 65536, 1);
        let two = SourceIndex::content_defined(&old, 65536, 2);
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
        let index = AnchorIndex::new(&old, 2);
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
        let index = AnchorIndex::new(&old, 1);
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
        let index = AnchorIndex::new(&noise(1 << 20, 8), 2);
        assert_eq!(
            index.reference(1 << 20, &noise(65536, 9), 0, 4 * 65536),
            None
        );
        // Runs of one byte name no anchor.
        assert_eq!(
            AnchorIndex::new(&vec![0xFF; 1 << 20], 2).reference(
                1 << 20,
                &[0xFF; 65536],
                0,
                1 << 20
            ),
            None
        );
    }
}
