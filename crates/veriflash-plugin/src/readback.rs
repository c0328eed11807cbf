//! Read-back that keeps pace with the writes, for the file device.
//!
//! An install proves what the device holds by reading each image back and comparing its
//! SHA-256 with the signed whole-image digest. Read after the last write, that is one more
//! serial pass over the image (a full SHA-256 and a copy) that nothing overlaps: on a 1 GiB
//! image, a third of the install. Here a thread of its own reads back each range of the image
//! as soon as it was written and hashes the image in order, while the next chunks are being
//! verified and written; at read-back only the tail is left.
//!
//! What is read is what the file holds after the write, as a read after the last write would
//! see it: within an install nothing is written twice (every unit is erased at `begin` and a
//! programmed unit refuses a second write until it is erased again). The thread reads with
//! `pread`, so it never moves the file position the writes use.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread;

use veriflash_hash::{Digest, Sha256};

/// Largest single read of the read-back thread: one buffer, whatever the chunk size.
const READ_LEN: usize = 1 << 20;

/// The read-back of one image, running beside its writes.
#[derive(Debug)]
pub(crate) struct Readback {
    partition: String,
    /// Image bytes handed to the thread so far: the next range must start here.
    followed: u64,
    ranges: Option<mpsc::Sender<(u64, usize)>>,
    thread: Option<thread::JoinHandle<io::Result<Digest>>>,
    /// Tells the thread to stop at once: the read-back is no longer wanted.
    stop: Arc<AtomicBool>,
}

impl Drop for Readback {
    /// Stops the thread and waits for it: its handle shares the device file's lock, which must
    /// be released with the session, not some time after.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        drop(self.ranges.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Readback {
    /// Starts the thread for the image of `partition`, reading through its own handle on `file`.
    ///
    /// # Errors
    /// When the handle cannot be duplicated or the thread cannot start: the caller then reads
    /// the image back after the last write, as without this.
    pub(crate) fn start(file: &File, partition: &str) -> io::Result<Self> {
        let file = file.try_clone()?;
        let (ranges, queue) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = thread::Builder::new()
            .name("veriflash-readback".into())
            .spawn(move || hash_ranges(&file, &queue, &stopped))?;
        Ok(Self {
            partition: partition.to_owned(),
            followed: 0,
            ranges: Some(ranges),
            thread: Some(thread),
            stop,
        })
    }

    /// The partition whose image this reads back.
    pub(crate) fn partition(&self) -> &str {
        &self.partition
    }

    /// Hands the thread the `len` bytes just written at file offset `at`, which hold the image
    /// from byte `offset`. `false` when they do not continue what it has (or it stopped on an
    /// error): the caller drops this read-back and reads the whole image at the end.
    pub(crate) fn follow(&mut self, offset: u64, at: u64, len: usize) -> bool {
        if offset != self.followed {
            return false;
        }
        let sent = self
            .ranges
            .as_ref()
            .is_some_and(|ranges| ranges.send((at, len)).is_ok());
        if sent {
            self.followed = self.followed.saturating_add(len as u64);
        }
        sent
    }

    /// Waits for the thread and gives the SHA-256 of the image's first `size` bytes, or `None`
    /// when it did not follow exactly those (the caller reads them back itself).
    pub(crate) fn finish(mut self, size: u64) -> Option<io::Result<Digest>> {
        drop(self.ranges.take());
        let digest = self.thread.take()?.join().ok()?;
        (self.followed == size).then_some(digest)
    }
}

/// The thread: reads each range as it comes and hashes them in order.
fn hash_ranges(
    file: &File,
    ranges: &mpsc::Receiver<(u64, usize)>,
    stop: &AtomicBool,
) -> io::Result<Digest> {
    let mut buffer = Vec::new();
    buffer
        .try_reserve_exact(READ_LEN)
        .map_err(|_| io::Error::from(io::ErrorKind::OutOfMemory))?;
    buffer.resize(READ_LEN, 0);
    let mut hasher = Sha256::new();
    for (mut at, mut len) in ranges {
        while len > 0 && !stop.load(Ordering::Relaxed) {
            let piece = &mut buffer[..len.min(READ_LEN)];
            file.read_exact_at(piece, at)?;
            hasher.update(piece);
            at = at.saturating_add(piece.len() as u64);
            len -= piece.len();
        }
    }
    Ok(hasher.finalize())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::io::Write as _;

    use super::*;

    fn file_with(bytes: &[u8]) -> File {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(bytes).unwrap();
        file
    }

    #[test]
    fn follows_consecutive_ranges_and_hashes_them_in_order() {
        let bytes: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let file = file_with(&bytes);
        let mut readback = Readback::start(&file, "system").unwrap();
        // The image starts 1000 bytes into the file; ranges larger than one read too.
        assert!(readback.follow(0, 1000, 1_500_000));
        assert!(readback.follow(1_500_000, 1_501_000, 1_000_000));
        let digest = readback.finish(2_500_000).unwrap().unwrap();
        assert_eq!(digest, veriflash_hash::sha256(&bytes[1000..2_501_000]));
    }

    #[test]
    fn a_gap_or_another_length_gives_no_digest() {
        let file = file_with(&[7u8; 10_000]);
        let mut readback = Readback::start(&file, "boot").unwrap();
        assert!(readback.follow(0, 0, 4096));
        assert!(!readback.follow(8192, 8192, 4096), "a gap is refused");
        assert!(readback.finish(4096).is_some());
        let mut readback = Readback::start(&file, "boot").unwrap();
        assert!(readback.follow(0, 0, 4096));
        assert!(
            readback.finish(8192).is_none(),
            "not all of the image was followed"
        );
    }

    #[test]
    fn a_read_past_the_end_is_an_error_at_finish() {
        let file = file_with(&[1u8; 100]);
        let mut readback = Readback::start(&file, "boot").unwrap();
        assert!(readback.follow(0, 0, 200));
        assert!(readback.finish(200).unwrap().is_err());
    }
}
