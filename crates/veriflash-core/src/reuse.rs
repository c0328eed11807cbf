//! Delta updates by chunk reuse: a download fetches only the chunks the device does not already
//! hold, and still writes only bytes that were hashed against the package's signatures.
//!
//! The signed manifest names every chunk by its SHA-256. Before the first payload byte is
//! requested, an install builds a [`ReuseIndex`] of where the device side already holds chunks
//! with those digests:
//!
//! * the images the device runs now, read back through the plugin
//!   ([`veriflash_plugin::FlashSession::read_installed`]: the active slot of an A/B device,
//!   which the install never writes). Where the host kept the signed prefix of the package that
//!   put them there ([`crate::host::HostStore`]), that prefix is verified again and, when its
//!   software version is the one the device says it runs, its chunk table says where each
//!   digest sits, so nothing is read up front; otherwise each installed image is hashed once in
//!   the new image's chunk size;
//! * a local chunk cache ([`Reuse::with_cache_dir`]): one file per chunk, named by its digest
//!   in hex, filled with the chunks an install downloads and pruned after its commit to the
//!   chunks of what was installed.
//!
//! Then the payload is streamed as always, in order, chunk by chunk
//! ([`crate::ota::RemotePackage`]): a chunk the index names is **read again from where the
//! index found it and hashed against its signed digest right before it is written**; one that
//! does not match (a damaged installed image, a cache file changed since) is fetched instead,
//! alone. Every other chunk is fetched with HTTP `Range` requests, adjacent chunks in one
//! request. The device receives a [`veriflash_plugin::Chunk`] only from bytes that matched
//! their signed digest, wherever they came from: the bytes flashed are the bytes hashed.
//!
//! Only chunks stored raw can be reused: the digest of a chunk stored compressed covers its
//! compressed bytes, which no device holds.

use std::collections::{HashMap, HashSet};
use std::io::Read as _;
use std::path::{Path, PathBuf};

use veriflash_format::{ChunkEncoding, ImageSpec, Manifest};
use veriflash_hash::{Digest, VerifiedChunk};
use veriflash_plugin::FlashSession;
use veriflash_sig::Verifier;

use crate::error::{Error, ErrorKind};
use crate::flash::{DeviceSink, Event, device_error};
use crate::host::HostStore;
use crate::package::{PackageReader, hex};

/// Whether and from where an install reuses chunks the device side already holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reuse {
    enabled: bool,
    cache_dir: Option<PathBuf>,
}

impl Default for Reuse {
    /// Reuse from the installed images, no chunk cache.
    fn default() -> Self {
        Self {
            enabled: true,
            cache_dir: None,
        }
    }
}

impl Reuse {
    /// No reuse: every chunk is downloaded (a full install).
    #[must_use]
    pub fn off() -> Self {
        Self {
            enabled: false,
            cache_dir: None,
        }
    }

    /// Also reuse chunks kept in `dir` (one file per chunk, named by its SHA-256 in hex), and
    /// keep there the chunks an install downloads, so an interrupted install does not fetch
    /// them again. After a commit the directory keeps only the installed package's chunks.
    #[must_use]
    pub fn with_cache_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cache_dir = Some(dir.into());
        self
    }

    /// Whether any chunk may be reused.
    #[must_use]
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// The chunk cache, when one is used.
    #[must_use]
    pub fn cache_dir(&self) -> Option<&Path> {
        self.cache_dir.as_deref().filter(|_| self.enabled)
    }
}

/// Where a chunk the device side already holds can be read again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Origin {
    /// In the image installed in `partition`, from byte `offset`.
    Installed {
        /// The partition.
        partition: String,
        /// Byte offset in its installed image.
        offset: u64,
    },
    /// A file of the chunk cache.
    Cache(PathBuf),
}

/// The raw chunks a package wants, by digest, with where the device side holds each: what an
/// install reuses instead of downloading. [`crate::Updater`] builds one before a download; an
/// embedder may build one to learn what an update would cost a device
/// ([`ReuseIndex::reusable_bytes`]).
#[derive(Debug, Default)]
pub struct ReuseIndex {
    origins: HashMap<Digest, Origin>,
    /// Bytes of installed images hashed to build the index (none when a kept manifest said
    /// where each digest sits).
    scanned: u64,
}

/// Installed images are hashed in reads of at most this many bytes (rounded up to whole
/// chunks): one buffer, whatever the image size.
const SCAN_BUFFER: usize = 8 << 20;

impl ReuseIndex {
    /// An index that reuses nothing.
    #[must_use]
    pub fn empty() -> Self {
        Self::default()
    }

    /// Bytes of `manifest`'s images the index holds, by chunk (what a download would not
    /// fetch).
    #[must_use]
    pub fn reusable_bytes(&self, manifest: &Manifest) -> u64 {
        manifest
            .images
            .iter()
            .flat_map(|image| image.chunk_digests.iter().zip(image.chunk_layout()))
            .filter(|(digest, _)| self.origins.contains_key(*digest))
            .fold(0u64, |sum, (_, (_, len))| sum.saturating_add(len))
    }

    /// Where chunk `digest` can be read again, if anywhere.
    pub(crate) fn origin(&self, digest: &Digest) -> Option<&Origin> {
        self.origins.get(digest)
    }

    /// Bytes of installed images read and hashed to build the index.
    #[must_use]
    pub fn scanned(&self) -> u64 {
        self.scanned
    }

    /// Indexes what the device behind `session` and the cache in `cache` hold of the raw
    /// chunks `manifest` wants. `previous` is the verified manifest of the package installed
    /// before, when the host kept it. A device that cannot read back what it runs, or fails
    /// to, contributes nothing (a warning says why): reuse only saves traffic, it never
    /// decides an install. Memory: one read buffer of at most 8 MiB and an entry per wanted
    /// chunk found.
    pub fn build(
        session: &mut dyn FlashSession,
        manifest: &Manifest,
        previous: Option<&Manifest>,
        cache: Option<&Path>,
        warn: &mut dyn FnMut(String),
    ) -> Self {
        let wanted: HashSet<Digest> = manifest.images.iter().flat_map(raw_chunks).collect();
        let mut index = Self::default();
        for image in &manifest.images {
            if let Err(e) = index.add_installed(session, image, previous, &wanted) {
                warn(format!(
                    "the image installed in '{}' is not reused: {e}",
                    image.partition
                ));
            }
        }
        if let Some(dir) = cache {
            index.add_cache(dir, manifest, &wanted);
        }
        index
    }

    /// Indexes the image installed in `image`'s partition: from the kept manifest when it
    /// describes an image of the installed length, else by hashing it in `image`'s chunks.
    fn add_installed(
        &mut self,
        session: &mut dyn FlashSession,
        image: &ImageSpec,
        previous: Option<&Manifest>,
        wanted: &HashSet<Digest>,
    ) -> Result<(), Error> {
        let partition = &image.partition;
        let Some(len) = session.installed_len(partition).map_err(device_error)? else {
            return Ok(());
        };
        let known = previous
            .and_then(|m| m.images.iter().find(|i| i.partition == *partition))
            .filter(|old| old.size == len);
        if let Some(old) = known {
            for ((index, digest), (offset, _)) in
                (0u64..).zip(&old.chunk_digests).zip(old.chunk_layout())
            {
                let raw = old
                    .stored_chunk(index)
                    .is_some_and(|c| c.encoding == ChunkEncoding::Raw);
                if raw && wanted.contains(digest) {
                    self.insert(*digest, partition, offset);
                }
            }
            return Ok(());
        }
        if image.has_variable_chunks() {
            return self.scan_content_defined(session, partition, len, image.chunk_size, wanted);
        }
        self.scan(session, partition, len, image.chunk_size, wanted)
    }

    /// Cuts the installed image of `partition` (`len` bytes) into content-defined chunks as
    /// the packer cut the new image ([`crate::cdc`], the same largest chunk) and hashes them:
    /// the parts of the image that did not change give the same chunks wherever they moved.
    fn scan_content_defined(
        &mut self,
        session: &mut dyn FlashSession,
        partition: &str,
        len: u64,
        chunk_size: u32,
        wanted: &HashSet<Digest>,
    ) -> Result<(), Error> {
        let rule = crate::cdc::Cdc::new(chunk_size);
        let block = SCAN_BUFFER.max(rule.max());
        // Bytes read but not cut yet (less than a largest chunk, but at the end), then a block.
        let mut buffer: Vec<u8> = Vec::new();
        let mut read = 0u64;
        let mut offset = 0u64;
        while offset < len {
            let carried = buffer.len();
            let want = usize::try_from(len - read).unwrap_or(usize::MAX).min(block);
            buffer.resize(carried + want, 0);
            let fresh = buffer.get_mut(carried..).unwrap_or_default();
            session
                .read_installed(partition, read, fresh)
                .map_err(device_error)?;
            read += u64::try_from(want).unwrap_or(u64::MAX);
            let ended = read >= len;
            // Cut on every core (the same cuts as one core makes), then hash the pieces on
            // every core.
            let ends = rule.cut_points(&buffer, ended, cores());
            let at = ends.last().copied().unwrap_or(0);
            let spans: Vec<(usize, usize)> = std::iter::once(0)
                .chain(ends.iter().copied())
                .zip(ends.iter().copied())
                .collect();
            let pieces: Vec<&[u8]> = spans
                .iter()
                .map(|&(start, end)| buffer.get(start..end).unwrap_or_default())
                .collect();
            for (digest, (start, _)) in hash_pieces(&pieces).into_iter().zip(spans) {
                if wanted.contains(&digest) {
                    let start = u64::try_from(start).unwrap_or(u64::MAX);
                    self.insert(digest, partition, offset.saturating_add(start));
                }
            }
            offset = offset.saturating_add(u64::try_from(at).unwrap_or(u64::MAX));
            buffer.drain(..at);
            if ended {
                break;
            }
        }
        self.scanned = self.scanned.saturating_add(read);
        Ok(())
    }

    /// Hashes the installed image of `partition` (`len` bytes) in `chunk_size` pieces.
    fn scan(
        &mut self,
        session: &mut dyn FlashSession,
        partition: &str,
        len: u64,
        chunk_size: u32,
        wanted: &HashSet<Digest>,
    ) -> Result<(), Error> {
        let chunk = usize::try_from(chunk_size).unwrap_or(usize::MAX).max(1);
        let per_read = (SCAN_BUFFER / chunk).max(1);
        let mut buffer = Vec::new();
        let mut at = 0u64;
        while at < len {
            let want = u64::try_from(per_read * chunk)
                .unwrap_or(u64::MAX)
                .min(len - at);
            let n = usize::try_from(want).unwrap_or(usize::MAX);
            buffer.resize(n, 0);
            session
                .read_installed(partition, at, &mut buffer)
                .map_err(device_error)?;
            let digests = hash_chunks(&buffer, chunk);
            for (digest, offset) in digests
                .into_iter()
                .zip((at..).step_by(chunk))
                .filter(|(d, _)| wanted.contains(d))
            {
                self.insert(digest, partition, offset);
            }
            self.scanned = self.scanned.saturating_add(want);
            at += want;
        }
        Ok(())
    }

    fn insert(&mut self, digest: Digest, partition: &str, offset: u64) {
        self.origins
            .entry(digest)
            .or_insert_with(|| Origin::Installed {
                partition: partition.to_owned(),
                offset,
            });
    }

    /// Indexes the cache files of wanted digests not found yet, of the right length.
    fn add_cache(&mut self, dir: &Path, manifest: &Manifest, wanted: &HashSet<Digest>) {
        let lengths: HashMap<Digest, u64> = manifest
            .images
            .iter()
            .flat_map(|image| {
                image
                    .chunk_digests
                    .iter()
                    .zip(image.chunk_layout())
                    .map(|(digest, (_, len))| (*digest, len))
            })
            .collect();
        for digest in wanted {
            if self.origins.contains_key(digest) {
                continue;
            }
            let path = cache_path(dir, digest);
            let fits = std::fs::symlink_metadata(&path)
                .is_ok_and(|m| m.is_file() && Some(&m.len()) == lengths.get(digest));
            if fits {
                self.origins.insert(*digest, Origin::Cache(path));
            }
        }
    }
}

/// SHA-256 of each `chunk`-byte piece of `data` (the last may be shorter), on every core.
pub(crate) fn hash_chunks(data: &[u8], chunk: usize) -> Vec<Digest> {
    let pieces: Vec<&[u8]> = data.chunks(chunk.max(1)).collect();
    hash_pieces(&pieces)
}

/// SHA-256 of each of `pieces`, in order, on every core.
fn hash_pieces(pieces: &[&[u8]]) -> Vec<Digest> {
    let threads = cores().min(pieces.len()).max(1);
    if threads == 1 {
        return pieces.iter().map(|p| veriflash_hash::sha256(p)).collect();
    }
    let per = pieces.len().div_ceil(threads);
    std::thread::scope(|s| {
        let workers: Vec<_> = pieces
            .chunks(per)
            .map(|group| {
                s.spawn(move || {
                    group
                        .iter()
                        .map(|p| veriflash_hash::sha256(p))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_default())
            .collect()
    })
}

/// How many threads the index runs on: one per core.
fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
}

/// The digests of `image`'s chunks that are stored raw (the only ones a device can hold).
fn raw_chunks(image: &ImageSpec) -> impl Iterator<Item = Digest> + '_ {
    (0..image.chunk_count()).filter_map(|i| {
        let raw = image.stored_chunk(i)?.encoding == ChunkEncoding::Raw;
        raw.then(|| image.chunk_digest(i).copied()).flatten()
    })
}

/// The cache file of chunk `digest`.
fn cache_path(dir: &Path, digest: &Digest) -> PathBuf {
    dir.join(hex(digest))
}

/// The device side of a streaming install, as the download sees it: where verified chunks go,
/// and where reused chunks are read again from.
pub(crate) trait ReuseTarget {
    /// Hands one verified chunk on (to the device).
    ///
    /// # Errors
    /// The device's.
    fn chunk(&mut self, image: &ImageSpec, chunk: VerifiedChunk<'_>) -> Result<(), Error>;

    /// Reads `buf.len()` bytes of the image installed in `partition`, from `offset`.
    ///
    /// # Errors
    /// The device's.
    fn read_installed(&mut self, partition: &str, offset: u64, buf: &mut [u8])
    -> Result<(), Error>;

    /// Tells the caller something that does not stop the install.
    fn warn(&mut self, message: String);
}

/// A plain chunk sink, which holds nothing to reuse.
pub(crate) struct SinkOnly<F>(pub(crate) F);

impl<F> ReuseTarget for SinkOnly<F>
where
    F: FnMut(&ImageSpec, VerifiedChunk<'_>) -> Result<(), Error>,
{
    fn chunk(&mut self, image: &ImageSpec, chunk: VerifiedChunk<'_>) -> Result<(), Error> {
        (self.0)(image, chunk)
    }

    fn read_installed(&mut self, partition: &str, _: u64, _: &mut [u8]) -> Result<(), Error> {
        Err(Error::new(
            ErrorKind::InvalidInput,
            format!("nothing installed in '{partition}' can be read here"),
        ))
    }

    fn warn(&mut self, _: String) {}
}

impl ReuseTarget for DeviceSink<'_, '_> {
    fn chunk(&mut self, image: &ImageSpec, chunk: VerifiedChunk<'_>) -> Result<(), Error> {
        DeviceSink::chunk(self, image, chunk)
    }

    fn read_installed(
        &mut self,
        partition: &str,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<(), Error> {
        self.installed(partition)?
            .read_installed(partition, offset, buf)
            .map_err(device_error)
    }

    fn warn(&mut self, message: String) {
        self.event(&Event::Warning(message));
    }
}

impl Origin {
    /// Reads the chunk again from where it was found into `buf` (exactly its signed length).
    pub(crate) fn read(&self, target: &mut dyn ReuseTarget, buf: &mut [u8]) -> Result<(), Error> {
        match self {
            Self::Installed { partition, offset } => target.read_installed(partition, *offset, buf),
            Self::Cache(path) => {
                let file = std::fs::File::open(path).map_err(|e| Error::io(path.display(), e))?;
                let want = u64::try_from(buf.len()).unwrap_or(u64::MAX);
                // One byte more than the chunk: a file that grew since is not this chunk.
                let mut limited = file.take(want.saturating_add(1));
                limited
                    .read_exact(buf)
                    .map_err(|e| Error::io(path.display(), e))?;
                let mut probe = [0u8; 1];
                match limited.read(&mut probe) {
                    Ok(0) => Ok(()),
                    Ok(_) => Err(Error::new(
                        ErrorKind::Io,
                        format!("{} is longer than its chunk", path.display()),
                    )),
                    Err(e) => Err(Error::io(path.display(), e)),
                }
            }
        }
    }
}

/// Keeps a verified raw chunk in the cache (best effort: a cache that cannot be written only
/// costs traffic later). Written to a temporary name and renamed, so a file named by a digest
/// is always complete.
pub(crate) fn cache_store(dir: &Path, digest: &Digest, bytes: &[u8]) {
    let path = cache_path(dir, digest);
    if path.exists() {
        return;
    }
    let tmp = dir.join(format!(".{}.tmp", hex(digest)));
    let stored = std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::write(&tmp, bytes))
        .and_then(|()| std::fs::rename(&tmp, &path));
    if stored.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
}

/// After a commit: removes every cache file that is not a chunk of `manifest`, so the cache
/// holds at most one package's chunks. Only files named like a digest are touched.
pub(crate) fn cache_prune(dir: &Path, manifest: &Manifest) {
    let keep: HashSet<String> = manifest
        .images
        .iter()
        .flat_map(|i| i.chunk_digests.iter().map(|d| hex(d)))
        .collect();
    prune_except(dir, &keep);
}

/// Removes the files of `dir` named like a digest and not in `keep`.
fn prune_except(dir: &Path, keep: &HashSet<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let digest_like = name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit());
        if digest_like && !keep.contains(name) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// The manifest of the package the host recorded as installed on device `id`, verified again
/// with `verifier`; `None` when there is no record, it no longer verifies, or the device says
/// it runs another software version than `running` (then the installed images are hashed
/// instead).
pub(crate) fn previous_manifest(
    host: Option<&HostStore>,
    id: Option<&str>,
    running: Option<&str>,
    verifier: &Verifier<'_>,
) -> Option<Manifest> {
    let prefix = host?.load_installed(id?)?;
    let verified = PackageReader::new(std::io::Cursor::new(prefix))
        .ok()?
        .verify(verifier)
        .ok()?;
    let manifest = verified.manifest().manifest();
    // A device re-flashed since by other means (another host, an update it installed itself)
    // runs other software than this host's record says: the record would place chunks where
    // they are not, each found wrong on re-hash and fetched alone. Its images are hashed then.
    running
        .is_none_or(|v| v == manifest.software_version)
        .then(|| manifest.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_pieces_in_order_on_every_core() {
        let data = veriflash_test_support::pseudo_random(100_003, 3);
        let digests = hash_chunks(&data, 4096);
        let expected: Vec<Digest> = data.chunks(4096).map(veriflash_hash::sha256).collect();
        assert_eq!(digests, expected);
        assert_eq!(digests.len(), 25);
    }

    #[test]
    fn the_cache_keeps_complete_chunks_and_prunes_to_a_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = b"chunk bytes".to_vec();
        let digest = veriflash_hash::sha256(&bytes);
        cache_store(dir.path(), &digest, &bytes);
        let origin = Origin::Cache(cache_path(dir.path(), &digest));
        let mut buf = vec![0u8; bytes.len()];
        let mut target = SinkOnly(|_: &ImageSpec, _: VerifiedChunk<'_>| Ok(()));
        origin.read(&mut target, &mut buf).unwrap();
        assert_eq!(buf, bytes);
        // A shorter buffer than the file: the file is not that chunk.
        let mut short = vec![0u8; 4];
        assert!(origin.read(&mut target, &mut short).is_err());
        std::fs::write(dir.path().join("notes.txt"), b"kept").unwrap();
        prune_except(dir.path(), &HashSet::new());
        assert!(!cache_path(dir.path(), &digest).exists());
        assert!(dir.path().join("notes.txt").exists(), "only digest names");
    }
}
