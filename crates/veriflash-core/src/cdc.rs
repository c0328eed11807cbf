//! Content-defined chunking: where a chunk ends is decided by the bytes around the cut, not by
//! its offset, so an insertion or a deletion moves only the chunks it touches and every later
//! chunk keeps its digest (what makes a delta small when an image's files shift).
//!
//! The algorithm is FastCDC (Xia et al., "FastCDC: a Fast and Efficient Content-Defined
//! Chunking Approach for Data Deduplication", USENIX ATC 2016) with normalized chunking at
//! level 1, as docs/FORMAT.md §3.3 specifies it for writers: for a largest chunk of `max`
//! bytes (the image's `chunkSize`), chunks are at least `max / 32` and on average about
//! `max / 8` bytes. A rolling Gear hash `h = (h << 1) + GEAR[byte]` (wrapping, 64 bits) runs
//! from the minimum length on; the chunk ends after the first byte where `h & mask == 0`, with
//! a harder mask (`log2(avg) + 1` top bits) before the average length and an easier one
//! (`log2(avg) - 1` top bits) after it, or at `max`. `GEAR` is 256 outputs of SplitMix64
//! seeded with 0.
//!
//! A verifier never runs this: the manifest's chunk table says where every chunk is. The
//! packer cuts images with it, and a device looking for chunks it already holds
//! ([`crate::reuse`]) cuts its installed images the same way.

use std::io::Read;

/// SplitMix64's outputs 1 to 256 from seed 0: the Gear table.
const GEAR: [u64; 256] = gear();

const fn gear() -> [u64; 256] {
    let mut table = [0u64; 256];
    let mut state: u64 = 0;
    let mut i = 0;
    while i < 256 {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        table[i] = z ^ (z >> 31);
        i += 1;
    }
    table
}

/// The cut rule for one largest chunk size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cdc {
    min: usize,
    avg: usize,
    max: usize,
    mask_small: u64,
    mask_large: u64,
}

impl Cdc {
    /// The rule for chunks of at most `max` bytes (a power of two of at least 256, as a chunk
    /// size is): at least `max / 32`, about `max / 8` on average.
    #[must_use]
    pub fn new(max: u32) -> Self {
        let max = usize::try_from(max.max(256)).unwrap_or(usize::MAX);
        let avg = max / 8;
        let bits = avg.trailing_zeros();
        Self {
            min: max / 32,
            avg,
            max,
            mask_small: top_bits(bits + 1),
            mask_large: top_bits(bits.saturating_sub(1)),
        }
    }

    /// The largest chunk.
    #[must_use]
    pub fn max(&self) -> usize {
        self.max
    }

    /// The length of the chunk `data` starts with, where `data` holds at least
    /// [`Cdc::max`] bytes or runs to the end of the input.
    #[must_use]
    pub fn cut(&self, data: &[u8]) -> usize {
        let n = data.len();
        if n <= self.min {
            return n;
        }
        let end = n.min(self.max);
        let normal = end.min(self.avg);
        let mut hash: u64 = 0;
        // One loop per mask, so the loop over every byte carries no branch but the cut test.
        for (from, to, mask) in [
            (self.min, normal, self.mask_small),
            (normal, end, self.mask_large),
        ] {
            let found = data
                .get(from..to)
                .unwrap_or_default()
                .iter()
                .position(|&byte| {
                    hash = (hash << 1).wrapping_add(GEAR[usize::from(byte)]);
                    hash & mask == 0
                });
            if let Some(i) = found {
                return from + i + 1;
            }
        }
        end
    }

    /// The ends of the chunks [`Cdc::cut`] cuts from the start of `data`, one after another,
    /// for as long as `data` decides them: to its end when it is `last` (runs to the end of
    /// the input), else while at least [`Cdc::max`] bytes are left. The last end returned is
    /// where cutting resumes (none when no chunk is decided yet).
    ///
    /// Found on up to `segments` threads with the same result as on one, as a packer and a
    /// device must cut alike: each thread cuts from the start of its own segment of `data`,
    /// which is not a cut in general; then, segment by segment, the true cuts are continued
    /// past the segment's start until one lands on a cut of that segment's own chain. From
    /// there both chains are the same (each cut depends only on where the chunk starts), so
    /// the rest of the segment's chain is adopted. Content-defined cuts meet within a few
    /// chunks; where they never do (data without cut points, such as runs of zeros, cut every
    /// largest chunk from wherever they start), the continuation cuts the segment itself.
    #[must_use]
    pub fn cut_points(&self, data: &[u8], last: bool, segments: usize) -> Vec<usize> {
        // Chunks start before `stop`.
        let stop = if last {
            data.len()
        } else {
            (data.len() + 1).saturating_sub(self.max)
        };
        let segments = segments.clamp(1, stop.max(1));
        if segments == 1 {
            // One core (many a modem has no more): no thread, the chain from the start.
            return self.chain(data, 0, stop);
        }
        let bounds: Vec<usize> = (0..=segments)
            .map(|k| stop / segments * k + (stop % segments) * k / segments)
            .collect();
        let chains: Vec<Vec<usize>> = std::thread::scope(|s| {
            let workers: Vec<_> = bounds
                .windows(2)
                .map(|w| {
                    let (from, to) = (w[0], w[1]);
                    s.spawn(move || self.chain(data, from, to))
                })
                .collect();
            // A chain that is lost is only work to redo: the continuation cuts its segment.
            workers
                .into_iter()
                .map(|w| w.join().unwrap_or_default())
                .collect()
        });
        let mut ends: Vec<usize> = Vec::new();
        let mut at = 0;
        for (chain, w) in chains.iter().zip(bounds.windows(2)) {
            let (from, to) = (w[0], w[1]);
            // Where this segment's chain cuts, its start included.
            let mut own = std::iter::once(from)
                .chain(chain.iter().copied())
                .enumerate()
                .peekable();
            while at < to {
                while own.next_if(|&(_, p)| p < at).is_some() {}
                if let Some((i, _)) = own.next_if(|&(_, p)| p == at) {
                    // The chains met: the rest of this one is the true cuts (its last cut
                    // ends at or after `to`).
                    ends.extend(chain.get(i..).unwrap_or_default());
                    at = ends.last().copied().unwrap_or(at);
                } else {
                    at += self.cut(data.get(at..).unwrap_or_default());
                    ends.push(at);
                }
            }
        }
        ends
    }

    /// The ends of the chunks cut one after another from `from`, up to the first that ends at
    /// or after `to`.
    fn chain(&self, data: &[u8], from: usize, to: usize) -> Vec<usize> {
        let mut ends = Vec::new();
        let mut at = from;
        while at < to {
            at += self.cut(data.get(at..).unwrap_or_default());
            ends.push(at);
        }
        ends
    }
}

/// A mask of the `n` most significant bits (the ones that depend on the most bytes).
fn top_bits(n: u32) -> u64 {
    match n {
        0 => 0,
        64.. => u64::MAX,
        n => u64::MAX << (64 - n),
    }
}

/// Cuts a stream into content-defined chunks, holding at most two largest chunks in memory.
pub struct Chunker<R> {
    reader: R,
    rule: Cdc,
    buffer: Vec<u8>,
    start: usize,
    ended: bool,
}

impl<R: Read> Chunker<R> {
    /// Chunks of `reader` by `rule`.
    pub fn new(reader: R, rule: Cdc) -> Self {
        Self {
            reader,
            rule,
            buffer: Vec::new(),
            start: 0,
            ended: false,
        }
    }

    /// The next chunk, or `None` at the end of the input.
    ///
    /// # Errors
    /// The reader's.
    pub fn next_chunk(&mut self) -> std::io::Result<Option<&[u8]>> {
        if self.buffer.len() - self.start < self.rule.max && !self.ended {
            self.buffer.drain(..self.start);
            self.start = 0;
            let want = self.rule.max.saturating_mul(2);
            let mut filled = self.buffer.len();
            self.buffer.resize(want, 0);
            while filled < want {
                let rest = self.buffer.get_mut(filled..).unwrap_or_default();
                match self.reader.read(rest) {
                    Ok(0) => {
                        self.ended = true;
                        break;
                    }
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        self.buffer.truncate(filled);
                        return Err(e);
                    }
                }
            }
            self.buffer.truncate(filled);
        }
        let data = self.buffer.get(self.start..).unwrap_or_default();
        if data.is_empty() {
            return Ok(None);
        }
        let len = self.rule.cut(data);
        let chunk = self.start..self.start + len;
        self.start += len;
        Ok(self.buffer.get(chunk))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The cuts one core makes, one after another, as the index made them before it cut in
    /// parallel.
    fn sequential(rule: &Cdc, data: &[u8], last: bool) -> Vec<usize> {
        let mut ends = Vec::new();
        let mut at = 0;
        while at < data.len() && (last || data.len() - at >= rule.max()) {
            at += rule.cut(&data[at..]);
            ends.push(at);
        }
        ends
    }

    /// The chunk ends the packer's [`Chunker`] cuts.
    fn packer_ends(data: &[u8], max: u32) -> Vec<usize> {
        chunks(data, max)
            .iter()
            .scan(0, |end, chunk| {
                *end += chunk.len();
                Some(*end)
            })
            .collect()
    }

    proptest! {
        #[test]
        fn cut_points_on_any_number_of_segments_are_the_sequential_cuts(
            random in prop::collection::vec(any::<u8>(), 0..12_000),
            zeros in (0usize..12_000, 0usize..8_000),
            max in prop::sample::select(vec![256u32, 512, 1024, 4096]),
            segments in 1usize..40,
            last in any::<bool>(),
        ) {
            // A run of zeros has no cut point: chains that start in it at different offsets
            // never meet there.
            let mut data = random;
            let from = zeros.0.min(data.len());
            let to = (from + zeros.1).min(data.len());
            data[from..to].fill(0);
            let rule = Cdc::new(max);
            let expected = sequential(&rule, &data, last);
            prop_assert_eq!(rule.cut_points(&data, last, segments), expected.clone());
            if last {
                prop_assert_eq!(packer_ends(&data, max), expected);
            }
        }
    }

    #[test]
    fn cut_points_where_segments_never_meet_are_every_largest_chunk() {
        // Zeros: no cut point, so every chunk is a largest one, counted from the start, and a
        // segment chain that starts elsewhere never meets it.
        let data = vec![0u8; 100_000];
        let rule = Cdc::new(1024);
        let ends = rule.cut_points(&data, true, 7);
        assert_eq!(ends, sequential(&rule, &data, true));
        assert!(
            ends.windows(2)
                .all(|w| w[1] - w[0] == 1024 || w[1] == data.len())
        );
    }

    #[test]
    fn cut_points_with_segments_shorter_than_a_smallest_chunk_are_the_sequential_cuts() {
        let data = veriflash_test_support::pseudo_random(3_000, 11);
        let rule = Cdc::new(4096);
        // 64 segments of about 47 bytes, smallest chunk 128 bytes.
        for last in [true, false] {
            assert_eq!(
                rule.cut_points(&data, last, 64),
                sequential(&rule, &data, last)
            );
        }
        assert_eq!(rule.cut_points(&data, false, 64), Vec::<usize>::new());
    }

    fn chunks(data: &[u8], max: u32) -> Vec<Vec<u8>> {
        let mut chunker = Chunker::new(data, Cdc::new(max));
        let mut out = Vec::new();
        while let Some(chunk) = chunker.next_chunk().unwrap() {
            out.push(chunk.to_vec());
        }
        out
    }

    #[test]
    fn the_gear_table_is_splitmix64_from_zero() {
        // SplitMix64's first output for seed 0, as its reference implementation gives it.
        assert_eq!(GEAR[0], 0xE220_A839_7B1D_CDAF);
        assert_eq!(
            GEAR.iter().collect::<std::collections::HashSet<_>>().len(),
            256
        );
    }

    #[test]
    fn chunks_cover_the_input_within_their_bounds_and_average_near_an_eighth_of_max() {
        let data = veriflash_test_support::pseudo_random(4 << 20, 7);
        let out = chunks(&data, 64 << 10);
        assert_eq!(out.concat(), data);
        let (min, max) = (2 << 10, 64 << 10);
        assert!(
            out[..out.len() - 1]
                .iter()
                .all(|c| (min..=max).contains(&c.len()))
        );
        let avg = data.len() / out.len();
        assert!((6 << 10..=14 << 10).contains(&avg), "average {avg}");
    }

    #[test]
    fn an_insertion_moves_only_the_chunks_around_it() {
        let data = veriflash_test_support::pseudo_random(2 << 20, 9);
        let mut edited = data.clone();
        edited.splice(1_000_000..1_000_000, b"twelve bytes".iter().copied());
        let before = chunks(&data, 64 << 10);
        let after = chunks(&edited, 64 << 10);
        let kept = after.iter().filter(|c| before.contains(c)).count();
        assert!(
            kept + 3 >= after.len(),
            "{kept} of {} chunks kept",
            after.len()
        );
    }
}
