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
        for (i, &byte) in data.iter().enumerate().take(end).skip(self.min) {
            hash = (hash << 1).wrapping_add(GEAR[usize::from(byte)]);
            let mask = if i < normal {
                self.mask_small
            } else {
                self.mask_large
            };
            if hash & mask == 0 {
                return i + 1;
            }
        }
        end
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
    use super::*;

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
