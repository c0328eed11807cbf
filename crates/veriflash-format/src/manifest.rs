//! The DER manifest (FORMAT.md §3): model, parser, writer and rules.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::ops::Range;

use crate::der_io::{
    DerCursor, TAG_BOOLEAN, TAG_CONTEXT_0, TAG_CONTEXT_1, TAG_CONTEXT_1_CONSTRUCTED,
    TAG_CONTEXT_2_CONSTRUCTED, TAG_INTEGER, TAG_OCTET_STRING, TAG_OID, TAG_SEQUENCE,
    TAG_UTF8_STRING, Tlv, decode_bool, decode_oid, decode_u64, decode_utf8, oid_is_canonical,
    push_bool, push_header, push_oid, push_tlv, push_u64, to_u64,
};
use crate::limits::{
    MAX_CHUNK_SIZE, MAX_EXTENSION_VALUE_LEN, MAX_EXTENSIONS, MAX_HW_REVISIONS, MAX_IMAGES,
    MAX_MANIFEST_LEN, MAX_NAME_LEN, MAX_PATCH_SOURCE_LEN, MAX_PAYLOAD_LEN, MIN_CHUNK_SIZE,
};
use crate::section::MANIFEST;
use crate::{Error, Header, ObjectIdentifier, TrustRotation};

/// Length of a SHA-256 digest, the only digest of format version 1.
pub const DIGEST_LEN: usize = 32;

/// The `manifestVersion` of a manifest whose chunks are all stored raw (format version 1).
pub const MANIFEST_VERSION: u64 = 1;

/// The `manifestVersion` of a manifest with at least one chunk table (format version 2,
/// FORMAT.md §3.1): chunks may be stored compressed.
pub const MANIFEST_VERSION_COMPRESSED: u64 = 2;

/// The `manifestVersion` of a manifest with at least one image whose chunk table lays out its
/// chunks itself (format version 3, FORMAT.md §3.3): content-defined, variable-length chunks.
pub const MANIFEST_VERSION_VARIABLE_CHUNKS: u64 = 3;

/// The `manifestVersion` of a manifest with at least one image that declares a source (format
/// version 4, FORMAT.md §3.4): a delta package, some of whose chunks are copied from, or
/// patched against, the image the device runs.
pub const MANIFEST_VERSION_DELTA: u64 = 4;

/// Bytes of one source reference record: source offset (8), source length (4), SHA-256 of the
/// patch frame (32, zero for a chunk copied from the source).
pub const SOURCE_REF_LEN: usize = 44;

/// Bytes of one chunk table record: encoding (1), stored length (4), decompressed length (4).
pub const CHUNK_RECORD_LEN: usize = 9;

/// How one chunk's bytes are stored in the payload (FORMAT.md §3.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChunkEncoding {
    /// Stored as is: the stored bytes are the chunk (code 0).
    Raw,
    /// Stored as exactly one Zstandard frame (RFC 8878) that decompresses to the chunk (code 1).
    Zstd,
    /// Not stored: the chunk is a range of the source image the device runs (code 2, format
    /// version 4). Its [`SourceRef`] says where; its chunk digest covers the chunk itself.
    Source,
    /// Stored as one Zstandard frame that decompresses to the chunk with a range of the source
    /// image as its reference prefix (code 3, format version 4). Its [`SourceRef`] says which
    /// range and the frame's own digest; its chunk digest covers the chunk itself.
    Patch,
}

impl ChunkEncoding {
    /// The code stored in a chunk table record.
    #[must_use]
    pub fn code(self) -> u8 {
        match self {
            Self::Raw => 0,
            Self::Zstd => 1,
            Self::Source => 2,
            Self::Patch => 3,
        }
    }

    /// The encoding with this code, if any.
    #[must_use]
    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            0 => Some(Self::Raw),
            1 => Some(Self::Zstd),
            2 => Some(Self::Source),
            3 => Some(Self::Patch),
            _ => None,
        }
    }

    /// Lower-case name, for display.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Raw => "raw",
            Self::Zstd => "zstd",
            Self::Source => "source",
            Self::Patch => "patch",
        }
    }

    /// Whether the chunk is rebuilt from the source image (format version 4), so its chunk
    /// digest covers the chunk rather than stored bytes.
    #[must_use]
    pub fn uses_source(self) -> bool {
        matches!(self, Self::Source | Self::Patch)
    }
}

/// The image a delta image applies to (FORMAT.md §3.4): what the device must run in the image's
/// partition, and where each chunk rebuilt from it comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeltaSource {
    /// Length of the whole source image, `1..=MAX_PAYLOAD_LEN`.
    pub size: u64,
    /// SHA-256 of the whole source image.
    pub digest: [u8; DIGEST_LEN],
    /// One record per chunk stored as [`ChunkEncoding::Source`] or [`ChunkEncoding::Patch`],
    /// in chunk order.
    pub references: Vec<SourceRef>,
}

/// Where one chunk rebuilt from the source comes from (FORMAT.md §3.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SourceRef {
    /// Offset of the range in the source image.
    pub offset: u64,
    /// Length of the range: the chunk's length for a copied chunk, `1..=MAX_PATCH_SOURCE_LEN`
    /// for a patch's reference prefix. The range lies within the source image.
    pub len: u32,
    /// SHA-256 of the patch frame's stored bytes (all zero for a copied chunk, which stores
    /// none): checked before the decoder sees the frame.
    pub frame_digest: [u8; DIGEST_LEN],
}

/// One record of an image's chunk table: how chunk `i` is stored (format version 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StoredChunk {
    /// How the chunk is stored.
    pub encoding: ChunkEncoding,
    /// Length of the stored bytes in the payload, which the chunk digest covers. Equal to
    /// `decompressed_len` when raw; `1..decompressed_len` when compressed.
    pub stored_len: u32,
    /// Length of the chunk once decompressed: the chunk's length in the image. In versions 1
    /// and 2 that is the fixed layout's (`chunk_size`, or the remainder for the last chunk); a
    /// version-3 table lays out its chunks itself (`1..=chunk_size` each, FORMAT.md §3.3).
    pub decompressed_len: u32,
}

/// What a package contains and what it is for: the signed description of its images.
///
/// Build one, then [`Manifest::to_der`] (or [`crate::signed_message`]) to write it; a manifest
/// that breaks a rule of the format is refused by the writer exactly as by the parser.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    /// Product the package is for (1 to [`MAX_NAME_LEN`] bytes).
    pub product: String,
    /// Chipset the package is for (1 to [`MAX_NAME_LEN`] bytes).
    pub chipset: String,
    /// Hardware revisions the package is for; empty means any revision of the product.
    pub hardware_revisions: Vec<String>,
    /// Human-readable software version (1 to [`MAX_NAME_LEN`] bytes).
    pub software_version: String,
    /// Monotonic anti-rollback counter: a device refuses a package below its stored floor.
    pub security_version: u64,
    /// The images, in payload order (1 to [`MAX_IMAGES`]).
    pub images: Vec<ImageSpec>,
    /// Manifest extensions (at most [`MAX_EXTENSIONS`]); empty means the field is absent.
    pub extensions: Vec<Extension>,
    /// A new trust-anchor set for the device to adopt after this update succeeds
    /// (FORMAT.md §3.2); `None` means the field is absent.
    pub trust_rotation: Option<TrustRotation>,
}

/// One firmware image: where it goes, how big it is, and the digests that authenticate it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageSpec {
    /// Unique image name, printable ASCII without spaces (`0x21..=0x7E`).
    pub name: String,
    /// Unique target partition, printable ASCII without spaces (`0x21..=0x7E`).
    pub partition: String,
    /// Image length in bytes, `1..=MAX_PAYLOAD_LEN`.
    pub size: u64,
    /// Chunk length in bytes: a power of two in `MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE`.
    pub chunk_size: u32,
    /// SHA-256 of the whole image.
    pub digest: [u8; DIGEST_LEN],
    /// SHA-256 of each chunk **as stored** in the payload, in order; exactly
    /// [`ImageSpec::chunk_count`] of them. For a raw chunk the stored bytes are the chunk.
    pub chunk_digests: Vec<[u8; DIGEST_LEN]>,
    /// The chunk table (format version 2): how each chunk is stored, one record per chunk.
    /// Empty means every chunk is stored raw (and the field is absent from the DER).
    pub stored_chunks: Vec<StoredChunk>,
    /// The image this one is a delta of (format version 4): `None` for a complete image.
    pub source: Option<DeltaSource>,
    /// Image extensions (at most [`MAX_EXTENSIONS`]); empty means the field is absent.
    pub extensions: Vec<Extension>,
}

/// A future field: an OID, a criticality flag and an opaque value.
///
/// Version 1 defines no extension, so a reader ignores non-critical ones and refuses critical
/// ones ([`Error::UnsupportedCriticalExtension`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Extension {
    /// `extnID`; unique within one extension list.
    pub id: ObjectIdentifier,
    /// Whether a reader that does not know `id` must refuse the package.
    pub critical: bool,
    /// `extnValue` (at most [`MAX_EXTENSION_VALUE_LEN`] bytes).
    pub value: Vec<u8>,
}

/// Number of chunks of `chunk_size` bytes that hold `size` bytes (rounded up); `None` when
/// `chunk_size` is 0.
///
/// ```
/// assert_eq!(veriflash_format::chunk_count(10_000, 4096), Some(3));
/// assert_eq!(veriflash_format::chunk_count(8192, 4096), Some(2));
/// assert_eq!(veriflash_format::chunk_count(1, 0), None);
/// ```
#[must_use]
pub fn chunk_count(size: u64, chunk_size: u32) -> Option<u64> {
    let chunk_size = u64::from(chunk_size);
    let whole = size.checked_div(chunk_size)?;
    if size.checked_rem(chunk_size)? == 0 {
        Some(whole)
    } else {
        whole.checked_add(1)
    }
}

impl ImageSpec {
    /// Whether the image's chunk table lays out its chunks itself (content-defined chunks,
    /// format version 3, FORMAT.md §3.3): it has a table whose records are not the fixed
    /// layout's (`ceil(size / chunk_size)` chunks of `chunk_size`, the last one the remainder).
    #[must_use]
    pub fn has_variable_chunks(&self) -> bool {
        if self.stored_chunks.is_empty() {
            return false;
        }
        let fixed = chunk_count(self.size, self.chunk_size).unwrap_or(0);
        to_u64(self.stored_chunks.len()) != fixed
            || (0u64..)
                .zip(&self.stored_chunks)
                .any(|(i, c)| Some(u64::from(c.decompressed_len)) != self.fixed_chunk_len(i))
    }

    /// Number of chunks: `ceil(size / chunk_size)` (0 if `chunk_size` is 0), or the chunk
    /// table's records when it lays out the chunks itself.
    #[must_use]
    pub fn chunk_count(&self) -> u64 {
        if self.has_variable_chunks() {
            return to_u64(self.stored_chunks.len());
        }
        chunk_count(self.size, self.chunk_size).unwrap_or(0)
    }

    /// Offset of chunk `index` within the image, or `None` past the last chunk. Content-defined
    /// chunks are summed up to `index`: walk them with [`ImageSpec::chunk_layout`] instead.
    #[must_use]
    pub fn chunk_offset(&self, index: u64) -> Option<u64> {
        if self.has_variable_chunks() {
            let before = self.stored_chunks.get(..usize::try_from(index).ok()?)?;
            if index >= to_u64(self.stored_chunks.len()) {
                return None;
            }
            return Some(before.iter().fold(0u64, |at, c| {
                at.saturating_add(u64::from(c.decompressed_len))
            }));
        }
        if index >= self.chunk_count() {
            return None;
        }
        index.checked_mul(u64::from(self.chunk_size))
    }

    /// Length of chunk `index` (`chunk_size`, or the remainder for the last chunk; its table
    /// record's for content-defined chunks), or `None` past the last chunk.
    #[must_use]
    pub fn chunk_len(&self, index: u64) -> Option<u64> {
        if self.has_variable_chunks() {
            let record = self.stored_chunks.get(usize::try_from(index).ok()?)?;
            return Some(u64::from(record.decompressed_len));
        }
        self.fixed_chunk_len(index)
    }

    /// Every chunk's offset and length in the image, in order.
    pub fn chunk_layout(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        let variable = self.has_variable_chunks();
        let lens = (0..self.chunk_count()).map(move |i| {
            if variable {
                self.stored_chunks
                    .get(usize::try_from(i).unwrap_or(usize::MAX))
                    .map_or(0, |c| u64::from(c.decompressed_len))
            } else {
                self.fixed_chunk_len(i).unwrap_or(0)
            }
        });
        lens.scan(0u64, |at, len| {
            let offset = *at;
            *at = at.saturating_add(len);
            Some((offset, len))
        })
    }

    /// Length of chunk `index` in the fixed layout, or `None` past its last chunk.
    fn fixed_chunk_len(&self, index: u64) -> Option<u64> {
        if index >= chunk_count(self.size, self.chunk_size)? {
            return None;
        }
        let offset = index.checked_mul(u64::from(self.chunk_size))?;
        let left = self.size.checked_sub(offset)?;
        Some(left.min(u64::from(self.chunk_size)))
    }

    /// Signed digest of chunk `index`, or `None` past the last one.
    #[must_use]
    pub fn chunk_digest(&self, index: u64) -> Option<&[u8; DIGEST_LEN]> {
        self.chunk_digests.get(usize::try_from(index).ok()?)
    }

    /// How chunk `index` is stored (raw when the image has no chunk table), or `None` past the
    /// last chunk.
    #[must_use]
    pub fn stored_chunk(&self, index: u64) -> Option<StoredChunk> {
        if self.stored_chunks.is_empty() {
            let len = u32::try_from(self.chunk_len(index)?).ok()?;
            return Some(StoredChunk {
                encoding: ChunkEncoding::Raw,
                stored_len: len,
                decompressed_len: len,
            });
        }
        self.stored_chunks
            .get(usize::try_from(index).ok()?)
            .copied()
    }

    /// Bytes the image takes in the payload: the sum of its stored chunk lengths (its `size`
    /// when it has no chunk table).
    #[must_use]
    pub fn stored_size(&self) -> u64 {
        if self.stored_chunks.is_empty() {
            return self.size;
        }
        self.stored_chunks.iter().fold(0u64, |acc, chunk| {
            acc.saturating_add(u64::from(chunk.stored_len))
        })
    }

    /// Whether any chunk of the image is stored compressed.
    #[must_use]
    pub fn is_compressed(&self) -> bool {
        self.stored_chunks
            .iter()
            .any(|chunk| chunk.encoding != ChunkEncoding::Raw)
    }

    /// Checks this image alone against the rules of FORMAT.md §3 (the cross-image rules, unique
    /// names and partitions, are [`Manifest::validate`]'s).
    ///
    /// # Errors
    /// [`Error::InvalidField`], [`Error::LimitExceeded`] or
    /// [`Error::UnsupportedCriticalExtension`] naming the first broken rule.
    pub fn validate(&self) -> Result<(), Error> {
        self.validate_at(None)
    }

    fn validate_at(&self, index: Option<usize>) -> Result<(), Error> {
        let label = ImageLabel::new(index, &self.name);
        check_image_id(&label, "name", &self.name, "image name length")?;
        check_image_id(
            &label,
            "partition",
            &self.partition,
            "partition name length",
        )?;
        check_image_size(&label, self.size)?;
        check_chunk_size(&label, self.chunk_size)?;
        let found = to_u64(self.chunk_digests.len()).saturating_mul(to_u64(DIGEST_LEN));
        check_chunk_digests_len(&label, self.chunk_count(), found)?;
        check_chunk_table(&label, self)?;
        check_source(&label, self)?;
        check_extensions(&format!("{label} extensions"), &self.extensions)
    }
}

/// The chunk table rules of FORMAT.md §3.1: one record per chunk, each decompressing to the
/// chunk's nominal length, raw chunks stored as is, compressed ones strictly smaller.
fn check_chunk_table(label: &ImageLabel<'_>, image: &ImageSpec) -> Result<(), Error> {
    if image.stored_chunks.is_empty() {
        return Ok(());
    }
    let variable = image.has_variable_chunks();
    if variable {
        check_variable_layout(label, image)?;
    }
    let chunks = image.chunk_count();
    let found = to_u64(image.stored_chunks.len());
    if found != chunks {
        return Err(invalid(
            ImageField(label, "chunk_table"),
            format!(
                "has {found} records, expected {chunks} (one {CHUNK_RECORD_LEN}-byte record per \
                 chunk)"
            ),
        ));
    }
    for (i, chunk) in (0u64..).zip(&image.stored_chunks) {
        let nominal = image.fixed_chunk_len(i).unwrap_or(0);
        if !variable && u64::from(chunk.decompressed_len) != nominal {
            return Err(invalid(
                ImageField(label, "chunk_table"),
                format!(
                    "chunk {i} decompressed length is {}, the chunk is {nominal} bytes",
                    chunk.decompressed_len
                ),
            ));
        }
        let ok = match chunk.encoding {
            ChunkEncoding::Raw => chunk.stored_len == chunk.decompressed_len,
            ChunkEncoding::Zstd | ChunkEncoding::Patch => {
                chunk.stored_len >= 1 && chunk.stored_len < chunk.decompressed_len
            }
            ChunkEncoding::Source => chunk.stored_len == 0,
        };
        if !ok {
            return Err(invalid(
                ImageField(label, "chunk_table"),
                format!(
                    "chunk {i} is {} with stored length {} for {} bytes (raw chunks are stored as \
                     is, compressed and patched ones must be smaller, copied ones store nothing)",
                    chunk.encoding.name(),
                    chunk.stored_len,
                    chunk.decompressed_len
                ),
            ));
        }
    }
    Ok(())
}

/// The source rules of FORMAT.md §3.4: a source exactly when some chunk is rebuilt from it, one
/// reference per such chunk, each range within the source image.
fn check_source(label: &ImageLabel<'_>, image: &ImageSpec) -> Result<(), Error> {
    let field = ImageField(label, "source");
    let rebuilt: Vec<(u64, &StoredChunk)> = (0u64..)
        .zip(&image.stored_chunks)
        .filter(|(_, c)| c.encoding.uses_source())
        .collect();
    let Some(source) = &image.source else {
        return match rebuilt.first() {
            None => Ok(()),
            Some((i, c)) => Err(invalid(
                field,
                format!(
                    "is absent, but chunk {i} is stored as {} (it needs one)",
                    c.encoding.name()
                ),
            )),
        };
    };
    if source.size == 0 {
        return Err(invalid(field, "declares a source image of 0 bytes".into()));
    }
    if source.size > MAX_PAYLOAD_LEN {
        return Err(Error::LimitExceeded {
            what: "source image size",
            limit: MAX_PAYLOAD_LEN,
            found: source.size,
        });
    }
    if rebuilt.is_empty() {
        return Err(invalid(
            field,
            "is present, but no chunk is copied or patched from it (write the image without one)"
                .into(),
        ));
    }
    if rebuilt.len() != source.references.len() {
        return Err(invalid(
            field,
            format!(
                "has {} references for {} chunks copied or patched from it",
                source.references.len(),
                rebuilt.len()
            ),
        ));
    }
    for ((i, chunk), reference) in rebuilt.into_iter().zip(&source.references) {
        let bad = |reason: String| invalid(&field, format!("reference of chunk {i} {reason}"));
        let zero = reference.frame_digest == [0; DIGEST_LEN];
        match chunk.encoding {
            ChunkEncoding::Source if reference.len != chunk.decompressed_len => {
                return Err(bad(format!(
                    "copies {} bytes into a chunk of {}",
                    reference.len, chunk.decompressed_len
                )));
            }
            ChunkEncoding::Source if !zero => {
                return Err(bad(
                    "has a frame digest, but the chunk stores no frame".into()
                ));
            }
            ChunkEncoding::Patch if reference.len == 0 => {
                return Err(bad("has an empty reference prefix".into()));
            }
            ChunkEncoding::Patch if reference.len > MAX_PATCH_SOURCE_LEN => {
                return Err(Error::LimitExceeded {
                    what: "patch reference length",
                    limit: u64::from(MAX_PATCH_SOURCE_LEN),
                    found: u64::from(reference.len),
                });
            }
            _ => {}
        }
        let end = reference.offset.checked_add(u64::from(reference.len));
        if end.is_none_or(|end| end > source.size) {
            return Err(bad(format!(
                "reads {} bytes at offset {}, past the source image's {} bytes",
                reference.len, reference.offset, source.size
            )));
        }
    }
    Ok(())
}

/// The layout rules of FORMAT.md §3.3 for a table that lays out its chunks itself: each chunk
/// `1..=chunk_size` bytes, together exactly the image.
fn check_variable_layout(label: &ImageLabel<'_>, image: &ImageSpec) -> Result<(), Error> {
    let mut total: u64 = 0;
    for (i, chunk) in (0u64..).zip(&image.stored_chunks) {
        if chunk.decompressed_len == 0 || chunk.decompressed_len > image.chunk_size {
            return Err(invalid(
                ImageField(label, "chunk_table"),
                format!(
                    "chunk {i} is {} bytes, outside 1..={} (the chunk size)",
                    chunk.decompressed_len, image.chunk_size
                ),
            ));
        }
        total = total.saturating_add(u64::from(chunk.decompressed_len));
    }
    if total != image.size {
        return Err(invalid(
            ImageField(label, "chunk_table"),
            format!(
                "lays out {total} bytes of chunks, the image is {} bytes",
                image.size
            ),
        ));
    }
    Ok(())
}

/// How an image is named in error messages: by name once it has a valid one, else by index.
struct ImageLabel<'a> {
    index: Option<usize>,
    name: Option<&'a str>,
}

impl<'a> ImageLabel<'a> {
    fn new(index: Option<usize>, name: &'a str) -> Self {
        let valid = !name.is_empty() && name.len() <= MAX_NAME_LEN && is_identifier(name);
        Self {
            index,
            name: valid.then_some(name),
        }
    }
}

impl fmt::Display for ImageLabel<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.name, self.index) {
            (Some(name), _) => write!(f, "image '{name}'"),
            (None, Some(index)) => write!(f, "image #{index}"),
            (None, None) => f.write_str("image"),
        }
    }
}

/// `image 'x' field`, formatted only when an error needs it.
struct ImageField<'a, 'b>(&'a ImageLabel<'b>, &'static str);

impl fmt::Display for ImageField<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.0, self.1)
    }
}

fn invalid(field: impl fmt::Display, reason: String) -> Error {
    Error::InvalidField {
        section: MANIFEST,
        field: format!("{field}"),
        reason,
    }
}

/// Whether `s` is printable ASCII without spaces (`0x21..=0x7E`).
fn is_identifier(s: &str) -> bool {
    s.bytes().all(|b| (0x21..=0x7E).contains(&b))
}

/// Length rule of every text field: `1..=MAX_NAME_LEN` bytes.
fn check_text_len(field: impl fmt::Display, len: usize, what: &'static str) -> Result<(), Error> {
    if len == 0 {
        return Err(invalid(field, "is empty".into()));
    }
    if len > MAX_NAME_LEN {
        return Err(Error::LimitExceeded {
            what,
            limit: to_u64(MAX_NAME_LEN),
            found: to_u64(len),
        });
    }
    Ok(())
}

fn check_image_id(
    label: &ImageLabel<'_>,
    field: &str,
    value: &str,
    what: &'static str,
) -> Result<(), Error> {
    check_text_len(format_args!("{label} {field}"), value.len(), what)?;
    if let Some((at, byte)) = value
        .bytes()
        .enumerate()
        .find(|(_, b)| !(0x21..=0x7E).contains(b))
    {
        return Err(invalid(
            format_args!("{label} {field}"),
            format!(
                "has byte 0x{byte:02X} at position {at}; names are printable ASCII without \
                 spaces (0x21..=0x7E)"
            ),
        ));
    }
    Ok(())
}

fn check_image_size(label: &ImageLabel<'_>, size: u64) -> Result<(), Error> {
    if size == 0 {
        return Err(invalid(format_args!("{label} size"), "is 0".into()));
    }
    if size > MAX_PAYLOAD_LEN {
        return Err(Error::LimitExceeded {
            what: "image size",
            limit: MAX_PAYLOAD_LEN,
            found: size,
        });
    }
    Ok(())
}

fn check_chunk_size(label: &ImageLabel<'_>, chunk_size: u32) -> Result<(), Error> {
    if chunk_size > MAX_CHUNK_SIZE {
        return Err(Error::LimitExceeded {
            what: "image chunk size",
            limit: u64::from(MAX_CHUNK_SIZE),
            found: u64::from(chunk_size),
        });
    }
    if chunk_size < MIN_CHUNK_SIZE {
        return Err(invalid(
            format_args!("{label} chunk_size"),
            format!("is {chunk_size}, below the minimum of {MIN_CHUNK_SIZE}"),
        ));
    }
    if !chunk_size.is_power_of_two() {
        return Err(invalid(
            format_args!("{label} chunk_size"),
            format!("is {chunk_size}, not a power of two"),
        ));
    }
    Ok(())
}

/// `found_bytes` of chunk digests must be `ceil(size / chunk_size) * 32`. Call after the size
/// and chunk size were checked.
fn check_chunk_digests_len(
    label: &ImageLabel<'_>,
    chunks: u64,
    found_bytes: u64,
) -> Result<(), Error> {
    let expected = chunks.saturating_mul(to_u64(DIGEST_LEN));
    if found_bytes != expected {
        let plural = if chunks == 1 { "" } else { "s" };
        return Err(invalid(
            format_args!("{label} chunk_digests"),
            format!("is {found_bytes} bytes, expected {expected} ({chunks} chunk{plural})"),
        ));
    }
    Ok(())
}

fn check_extensions(list: &str, extensions: &[Extension]) -> Result<(), Error> {
    if extensions.len() > MAX_EXTENSIONS {
        return Err(Error::LimitExceeded {
            what: "number of extensions",
            limit: to_u64(MAX_EXTENSIONS),
            found: to_u64(extensions.len()),
        });
    }
    for (i, ext) in extensions.iter().enumerate() {
        if !oid_is_canonical(ext.id.as_bytes()) {
            return Err(invalid(
                format_args!("{list}[{i}] id"),
                "is not in canonical (shortest) DER form".into(),
            ));
        }
        if ext.value.len() > MAX_EXTENSION_VALUE_LEN {
            return Err(Error::LimitExceeded {
                what: "extension value length",
                limit: to_u64(MAX_EXTENSION_VALUE_LEN),
                found: to_u64(ext.value.len()),
            });
        }
        if extensions.iter().take(i).any(|prev| prev.id == ext.id) {
            return Err(invalid(
                list,
                format!("has extension {} more than once", ext.id),
            ));
        }
        if ext.critical {
            // Format version 1 defines no extension: every critical one is unknown.
            return Err(Error::UnsupportedCriticalExtension { oid: ext.id });
        }
    }
    Ok(())
}

impl Manifest {
    /// The image called `name`, if any.
    #[must_use]
    pub fn image(&self, name: &str) -> Option<&ImageSpec> {
        self.images.iter().find(|image| image.name == name)
    }

    /// Whether any image is a delta of the image a device runs (declares a `source`, FORMAT.md
    /// §3.4): such a package installs only on a device that runs that source, from a file.
    #[must_use]
    pub fn is_delta(&self) -> bool {
        self.images.iter().any(|image| image.source.is_some())
    }

    /// The `manifestVersion` (and header `format_version`) this manifest is written with:
    /// [`MANIFEST_VERSION_DELTA`] when any image declares a source, else
    /// [`MANIFEST_VERSION_VARIABLE_CHUNKS`] when any image's chunk table lays out its chunks
    /// itself, else [`MANIFEST_VERSION_COMPRESSED`] when any image has a chunk table, else
    /// [`MANIFEST_VERSION`].
    #[must_use]
    pub fn version(&self) -> u64 {
        if self.is_delta() {
            MANIFEST_VERSION_DELTA
        } else if self.images.iter().any(ImageSpec::has_variable_chunks) {
            MANIFEST_VERSION_VARIABLE_CHUNKS
        } else if self
            .images
            .iter()
            .any(|image| !image.stored_chunks.is_empty())
        {
            MANIFEST_VERSION_COMPRESSED
        } else {
            MANIFEST_VERSION
        }
    }

    /// Byte range of image `index`'s stored bytes within the payload (images are concatenated
    /// in manifest order), or `None` if there is no such image or the sizes overflow.
    #[must_use]
    pub fn payload_range(&self, index: usize) -> Option<Range<u64>> {
        let mut start: u64 = 0;
        for image in self.images.get(..index)? {
            start = start.checked_add(image.stored_size())?;
        }
        let end = start.checked_add(self.images.get(index)?.stored_size())?;
        Some(start..end)
    }

    /// The payload length this manifest describes: the sum of the images' stored sizes
    /// ([`ImageSpec::stored_size`]).
    ///
    /// # Errors
    /// [`Error::LimitExceeded`] if the sum is over [`MAX_PAYLOAD_LEN`].
    pub fn payload_len(&self) -> Result<u64, Error> {
        let mut total: u64 = 0;
        for image in &self.images {
            total = total.saturating_add(image.stored_size());
        }
        if total > MAX_PAYLOAD_LEN {
            return Err(Error::LimitExceeded {
                what: "payload length",
                limit: MAX_PAYLOAD_LEN,
                found: total,
            });
        }
        Ok(total)
    }

    /// Checks that `header.payload_len` is this manifest's payload length (FORMAT.md §5) and
    /// that `header.format_version` is this manifest's version (FORMAT.md §2).
    ///
    /// # Errors
    /// [`Error::PayloadLenMismatch`], [`Error::InvalidField`] for a version mismatch, or what
    /// [`Manifest::payload_len`] returns.
    pub fn check_payload_len(&self, header: &Header) -> Result<(), Error> {
        if u64::from(header.format_version) != self.version() {
            return Err(invalid(
                "manifest_version",
                format!(
                    "is {}, but the header's format_version is {}",
                    self.version(),
                    header.format_version
                ),
            ));
        }
        let manifest = self.payload_len()?;
        if manifest != header.payload_len {
            return Err(Error::PayloadLenMismatch {
                header: header.payload_len,
                manifest,
            });
        }
        Ok(())
    }

    /// Checks every rule of FORMAT.md §3 and the limits of §6 (except the encoded length,
    /// which [`Manifest::to_der`] checks).
    ///
    /// # Errors
    /// [`Error::InvalidField`], [`Error::LimitExceeded`] or
    /// [`Error::UnsupportedCriticalExtension`] naming the first broken rule, in field order.
    pub fn validate(&self) -> Result<(), Error> {
        check_text_len("product", self.product.len(), "product length")?;
        check_text_len("chipset", self.chipset.len(), "chipset length")?;
        if self.hardware_revisions.len() > MAX_HW_REVISIONS {
            return Err(Error::LimitExceeded {
                what: "number of hardware revisions",
                limit: to_u64(MAX_HW_REVISIONS),
                found: to_u64(self.hardware_revisions.len()),
            });
        }
        for (i, revision) in self.hardware_revisions.iter().enumerate() {
            check_text_len(
                format_args!("hardware_revisions[{i}]"),
                revision.len(),
                "hardware revision length",
            )?;
        }
        check_text_len(
            "software_version",
            self.software_version.len(),
            "software version length",
        )?;
        check_image_count(self.images.len())?;
        for (i, image) in self.images.iter().enumerate() {
            image.validate_at(Some(i))?;
            for earlier in self.images.iter().take(i) {
                let label = ImageLabel::new(Some(i), &image.name);
                if earlier.name == image.name {
                    return Err(invalid(
                        format_args!("{label} name"),
                        "is used by more than one image".into(),
                    ));
                }
                if earlier.partition == image.partition {
                    return Err(invalid(
                        format_args!("{label} partition"),
                        format!(
                            "'{}' is also the partition of image '{}'",
                            image.partition, earlier.name
                        ),
                    ));
                }
            }
        }
        self.payload_len()?;
        check_extensions("manifest extensions", &self.extensions)?;
        self.trust_rotation
            .as_ref()
            .map_or(Ok(()), TrustRotation::validate)
    }

    /// Parses a manifest: strict DER, exactly one `Manifest` with no trailing bytes, then every
    /// rule of [`Manifest::validate`].
    ///
    /// Nothing is allocated for a field before its length or count was checked against its
    /// limit, so memory use is a small multiple of `der.len()`.
    ///
    /// # Errors
    /// [`Error::LimitExceeded`] if `der` is longer than [`MAX_MANIFEST_LEN`] or a count or
    /// length is over its limit; [`Error::Malformed`] (with the offset) for any DER problem,
    /// including `der` not being exactly one SEQUENCE (its length runs past `der`, or bytes
    /// follow it); [`Error::UnsupportedManifestVersion`]; and what [`Manifest::validate`]
    /// returns.
    pub fn from_der(der: &[u8]) -> Result<Manifest, Error> {
        if to_u64(der.len()) > u64::from(MAX_MANIFEST_LEN) {
            return Err(Error::LimitExceeded {
                what: "manifest length",
                limit: u64::from(MAX_MANIFEST_LEN),
                found: to_u64(der.len()),
            });
        }
        let outer = read_manifest_sequence(der)?;
        let mut r = outer.cursor(MANIFEST);

        let version_tlv = r.read(TAG_INTEGER, &"manifest_version")?;
        let version = decode_u64(MANIFEST, &version_tlv, &"manifest_version")?;
        if !(MANIFEST_VERSION..=MANIFEST_VERSION_DELTA).contains(&version) {
            return Err(Error::UnsupportedManifestVersion { found: version });
        }
        let product = read_text(&mut r, &"product", "product length")?;
        let chipset = read_text(&mut r, &"chipset", "chipset length")?;

        let revisions_tlv = r.read(TAG_SEQUENCE, &"hardware_revisions")?;
        let mut rr = revisions_tlv.cursor(MANIFEST);
        let count = rr.count(&"hardware_revisions")?;
        if count > MAX_HW_REVISIONS {
            return Err(Error::LimitExceeded {
                what: "number of hardware revisions",
                limit: to_u64(MAX_HW_REVISIONS),
                found: to_u64(count),
            });
        }
        let mut hardware_revisions = Vec::with_capacity(count);
        for i in 0..count {
            hardware_revisions.push(read_text(
                &mut rr,
                &format_args!("hardware_revisions[{i}]"),
                "hardware revision length",
            )?);
        }

        let software_version = read_text(&mut r, &"software_version", "software version length")?;
        let security_tlv = r.read(TAG_INTEGER, &"security_version")?;
        let security_version = decode_u64(MANIFEST, &security_tlv, &"security_version")?;

        let images_tlv = r.read(TAG_SEQUENCE, &"images")?;
        let mut ir = images_tlv.cursor(MANIFEST);
        let count = ir.count(&"images")?;
        check_image_count(count)?;
        let mut images = Vec::with_capacity(count);
        for i in 0..count {
            images.push(read_image(&mut ir, i, version)?);
        }

        let extensions = read_extensions(&mut r, "manifest extensions")?;
        let trust_rotation = match r.read_optional(TAG_CONTEXT_1_CONSTRUCTED, &"trust_rotation")? {
            Some(tlv) => Some(TrustRotation::from_body(&mut tlv.cursor(MANIFEST))?),
            None => None,
        };
        r.finish(&"Manifest")?;

        let manifest = Manifest {
            product,
            chipset,
            hardware_revisions,
            software_version,
            security_version,
            images,
            extensions,
            trust_rotation,
        };
        manifest.validate()?;
        if manifest.version() != version {
            // Canonical form: version 3 exactly when some image's chunk table lays out its
            // chunks itself, else version 2 exactly when some image has a chunk table.
            let found = match manifest.version() {
                MANIFEST_VERSION => "have no chunk table",
                MANIFEST_VERSION_COMPRESSED => "have chunk tables in the fixed layout only",
                MANIFEST_VERSION_VARIABLE_CHUNKS => {
                    "have a chunk table that lays out its chunks itself, and no source"
                }
                _ => "declare a source",
            };
            return Err(invalid(
                "manifest_version",
                format!(
                    "is {version}, but the images {found} (write version {})",
                    manifest.version()
                ),
            ));
        }
        Ok(manifest)
    }

    /// Writes the manifest as DER, after [`Manifest::validate`], so that it never emits what
    /// [`Manifest::from_der`] would refuse.
    ///
    /// # Errors
    /// What [`Manifest::validate`] returns, and [`Error::LimitExceeded`] if the encoding is
    /// longer than [`MAX_MANIFEST_LEN`].
    pub fn to_der(&self) -> Result<Vec<u8>, Error> {
        self.validate()?;
        let digest_bytes = self.images.iter().fold(0u64, |acc, image| {
            acc.saturating_add(to_u64(image.chunk_digests.len()).saturating_mul(to_u64(DIGEST_LEN)))
        });
        let limit = u64::from(MAX_MANIFEST_LEN);
        if digest_bytes > limit {
            return Err(Error::LimitExceeded {
                what: "manifest length",
                limit,
                found: digest_bytes,
            });
        }

        let out = self.encode_unchecked();
        if to_u64(out.len()) > limit {
            return Err(Error::LimitExceeded {
                what: "manifest length",
                limit,
                found: to_u64(out.len()),
            });
        }
        Ok(out)
    }
}

impl Manifest {
    /// The DER encoding, without any check (the writer half of [`Manifest::to_der`]; tests use
    /// it to build fixtures that break a rule).
    pub(crate) fn encode_unchecked(&self) -> Vec<u8> {
        let mut body = Vec::new();
        push_u64(&mut body, self.version());
        push_tlv(&mut body, TAG_UTF8_STRING, self.product.as_bytes());
        push_tlv(&mut body, TAG_UTF8_STRING, self.chipset.as_bytes());
        let mut revisions = Vec::new();
        for revision in &self.hardware_revisions {
            push_tlv(&mut revisions, TAG_UTF8_STRING, revision.as_bytes());
        }
        push_tlv(&mut body, TAG_SEQUENCE, &revisions);
        push_tlv(&mut body, TAG_UTF8_STRING, self.software_version.as_bytes());
        push_u64(&mut body, self.security_version);
        let mut images = Vec::new();
        for image in &self.images {
            push_tlv(&mut images, TAG_SEQUENCE, &encode_image(image));
        }
        push_tlv(&mut body, TAG_SEQUENCE, &images);
        drop(images);
        push_extensions(&mut body, &self.extensions);
        if let Some(rotation) = &self.trust_rotation {
            push_tlv(
                &mut body,
                TAG_CONTEXT_1_CONSTRUCTED,
                &rotation.encode_body(),
            );
        }

        let mut out = Vec::new();
        push_tlv(&mut out, TAG_SEQUENCE, &body);
        out
    }
}

/// The manifest's one outer SEQUENCE, which must fill its bytes exactly (FORMAT.md §3).
///
/// The manifest is a section of fixed length, `manifest_len` bytes read whole before this is
/// called, and it is signed: a SEQUENCE whose length runs past those bytes, or bytes after it,
/// make a manifest that is not one DER value. That is `Malformed`, never `Truncated` or
/// `TrailingData`, whose remedy (download again) cannot help a package that was signed so.
fn read_manifest_sequence(der: &[u8]) -> Result<Tlv<'_>, Error> {
    let not_one = |offset: u64, what: String| Error::Malformed {
        section: MANIFEST,
        offset: Some(offset),
        reason: format!("the manifest is not exactly one DER SEQUENCE: {what}"),
    };
    DerCursor::read_outer(der, TAG_SEQUENCE, MANIFEST, &"Manifest").map_err(|e| match e {
        Error::Truncated { needed, .. } => not_one(
            0,
            format!(
                "it needs {needed} bytes, manifest_len is {}",
                to_u64(der.len())
            ),
        ),
        Error::TrailingData { offset, .. } => not_one(offset, "bytes follow it".into()),
        other => other,
    })
}

fn check_image_count(count: usize) -> Result<(), Error> {
    if count == 0 {
        return Err(invalid(
            "images",
            "is empty; a manifest has at least one image".into(),
        ));
    }
    if count > MAX_IMAGES {
        return Err(Error::LimitExceeded {
            what: "number of images",
            limit: to_u64(MAX_IMAGES),
            found: to_u64(count),
        });
    }
    Ok(())
}

/// Reads a UTF8String of `1..=MAX_NAME_LEN` bytes (the length is checked before allocating).
fn read_text(
    r: &mut DerCursor<'_>,
    field: &dyn fmt::Display,
    what: &'static str,
) -> Result<String, Error> {
    let tlv = r.read(TAG_UTF8_STRING, field)?;
    check_text_len(field, tlv.value.len(), what)?;
    decode_utf8(MANIFEST, &tlv, field)
}

fn read_u32_field(
    tlv: &Tlv<'_>,
    field: &dyn fmt::Display,
    what: &'static str,
    limit: u32,
) -> Result<u32, Error> {
    let value = decode_u64(MANIFEST, tlv, field)?;
    u32::try_from(value).map_err(|_| Error::LimitExceeded {
        what,
        limit: u64::from(limit),
        found: value,
    })
}

fn read_image(r: &mut DerCursor<'_>, index: usize, version: u64) -> Result<ImageSpec, Error> {
    let label = ImageLabel::new(Some(index), "");
    let tlv = r.read(TAG_SEQUENCE, &label)?;
    let mut f = tlv.cursor(MANIFEST);

    let name = read_text(&mut f, &format_args!("{label} name"), "image name length")?;
    check_image_id(&label, "name", &name, "image name length")?;
    let label = ImageLabel::new(Some(index), &name);
    let partition = read_text(
        &mut f,
        &format_args!("{label} partition"),
        "partition name length",
    )?;

    let field = ImageField(&label, "size");
    let size_tlv = f.read(TAG_INTEGER, &field)?;
    let size = decode_u64(MANIFEST, &size_tlv, &field)?;
    check_image_size(&label, size)?;

    let field = ImageField(&label, "chunk_size");
    let chunk_tlv = f.read(TAG_INTEGER, &field)?;
    let chunk_size = read_u32_field(&chunk_tlv, &field, "image chunk size", MAX_CHUNK_SIZE)?;
    check_chunk_size(&label, chunk_size)?;

    let field = ImageField(&label, "digest");
    let digest_tlv = f.read(TAG_OCTET_STRING, &field)?;
    let digest = <[u8; DIGEST_LEN]>::try_from(digest_tlv.value).map_err(|_| {
        invalid(
            field,
            format!("is {} bytes, expected {DIGEST_LEN}", digest_tlv.value.len()),
        )
    })?;

    let field = ImageField(&label, "chunk_digests");
    let digests_tlv = f.read(TAG_OCTET_STRING, &field)?;
    let found = to_u64(digests_tlv.value.len());
    if version >= MANIFEST_VERSION_VARIABLE_CHUNKS {
        // The chunk table, read next, lays out as many chunks as there are digests (at least
        // one); `validate` checks the layout against the size.
        if found == 0 || !found.is_multiple_of(to_u64(DIGEST_LEN)) {
            return Err(invalid(
                field,
                format!("is {found} bytes, not a whole number of {DIGEST_LEN}-byte digests"),
            ));
        }
    } else {
        check_chunk_digests_len(&label, chunk_count(size, chunk_size).unwrap_or(0), found)?;
    }
    let chunk_digests: Vec<[u8; DIGEST_LEN]> = digests_tlv
        .value
        .chunks_exact(DIGEST_LEN)
        .filter_map(|c| <[u8; DIGEST_LEN]>::try_from(c).ok())
        .collect();

    // A version-1 manifest has no chunk table: a [1] field there is an unexpected field, which
    // `finish` reports.
    let stored_chunks = if version >= MANIFEST_VERSION_COMPRESSED {
        read_chunk_table(&mut f, &label, chunk_digests.len(), version)?
    } else {
        Vec::new()
    };
    // Before version 4 a [2] field is an unexpected field, which `finish` reports.
    let source = if version >= MANIFEST_VERSION_DELTA {
        read_source(&mut f, &label, &stored_chunks)?
    } else {
        None
    };

    let extensions = read_extensions(&mut f, &format!("{label} extensions"))?;
    f.finish(&label)?;
    Ok(ImageSpec {
        name,
        partition,
        size,
        chunk_size,
        digest,
        chunk_digests,
        stored_chunks,
        source,
        extensions,
    })
}

/// Reads an optional `source [2] IMPLICIT DeltaSource` (FORMAT.md §3.4). The references' length
/// is checked against the chunks that use the source (themselves bounded by the digests already
/// read) before anything is allocated; the rules are [`check_source`]'s.
fn read_source(
    r: &mut DerCursor<'_>,
    label: &ImageLabel<'_>,
    stored_chunks: &[StoredChunk],
) -> Result<Option<DeltaSource>, Error> {
    let field = ImageField(label, "source");
    let Some(tlv) = r.read_optional(TAG_CONTEXT_2_CONSTRUCTED, &field)? else {
        return Ok(None);
    };
    let mut s = tlv.cursor(MANIFEST);
    let size_field = ImageField(label, "source size");
    let size_tlv = s.read(TAG_INTEGER, &size_field)?;
    let size = decode_u64(MANIFEST, &size_tlv, &size_field)?;
    let digest_field = ImageField(label, "source digest");
    let digest_tlv = s.read(TAG_OCTET_STRING, &digest_field)?;
    let digest = <[u8; DIGEST_LEN]>::try_from(digest_tlv.value).map_err(|_| {
        invalid(
            &digest_field,
            format!("is {} bytes, expected {DIGEST_LEN}", digest_tlv.value.len()),
        )
    })?;
    let refs_field = ImageField(label, "source references");
    let refs_tlv = s.read(TAG_OCTET_STRING, &refs_field)?;
    s.finish(&field)?;
    let rebuilt = stored_chunks
        .iter()
        .filter(|c| c.encoding.uses_source())
        .count();
    let expected = rebuilt.saturating_mul(SOURCE_REF_LEN);
    if refs_tlv.value.len() != expected {
        return Err(invalid(
            refs_field,
            format!(
                "is {} bytes, expected {expected} ({rebuilt} records of {SOURCE_REF_LEN} bytes)",
                refs_tlv.value.len()
            ),
        ));
    }
    let references = refs_tlv
        .value
        .chunks_exact(SOURCE_REF_LEN)
        .map(|record| {
            let (offset, rest) = record.split_first_chunk::<8>().unwrap_or((&[0; 8], &[]));
            let (len, rest) = rest.split_first_chunk::<4>().unwrap_or((&[0; 4], &[]));
            SourceRef {
                offset: u64::from_be_bytes(*offset),
                len: u32::from_be_bytes(*len),
                frame_digest: <[u8; DIGEST_LEN]>::try_from(rest).unwrap_or([0; DIGEST_LEN]),
            }
        })
        .collect();
    Ok(Some(DeltaSource {
        size,
        digest,
        references,
    }))
}

/// Reads an optional `chunkTable [1] IMPLICIT OCTET STRING` of `chunks` 9-byte records. Its
/// length is checked against the chunk count (itself bounded by the digests already read) before
/// anything is allocated; the record rules are [`check_chunk_table`]'s.
fn read_chunk_table(
    r: &mut DerCursor<'_>,
    label: &ImageLabel<'_>,
    chunks: usize,
    version: u64,
) -> Result<Vec<StoredChunk>, Error> {
    let field = ImageField(label, "chunk_table");
    let Some(tlv) = r.read_optional(TAG_CONTEXT_1, &field)? else {
        return Ok(Vec::new());
    };
    let expected = chunks.saturating_mul(CHUNK_RECORD_LEN);
    if tlv.value.len() != expected {
        return Err(invalid(
            field,
            format!(
                "is {} bytes, expected {expected} ({chunks} records of {CHUNK_RECORD_LEN} bytes)",
                tlv.value.len()
            ),
        ));
    }
    let mut table = Vec::with_capacity(chunks);
    for (i, record) in tlv.value.chunks_exact(CHUNK_RECORD_LEN).enumerate() {
        let Ok([code, s0, s1, s2, s3, d0, d1, d2, d3]) = <[u8; CHUNK_RECORD_LEN]>::try_from(record)
        else {
            return Err(invalid(field, "has a short record".into()));
        };
        // Chunks rebuilt from a source exist from version 4 on: before, codes 2 and 3 are as
        // unknown as any other.
        let known = ChunkEncoding::from_code(code)
            .filter(|e| version >= MANIFEST_VERSION_DELTA || !e.uses_source());
        let encoding = known.ok_or_else(|| Error::Malformed {
            section: MANIFEST,
            offset: Some(
                tlv.value_offset
                    .saturating_add(to_u64(i.saturating_mul(CHUNK_RECORD_LEN))),
            ),
            reason: format!("{field}: chunk {i} has unknown encoding {code}"),
        })?;
        table.push(StoredChunk {
            encoding,
            stored_len: u32::from_be_bytes([s0, s1, s2, s3]),
            decompressed_len: u32::from_be_bytes([d0, d1, d2, d3]),
        });
    }
    Ok(table)
}

/// Reads an optional `[0] IMPLICIT SEQUENCE SIZE (1..MAX_EXTENSIONS) OF Extension`.
fn read_extensions(r: &mut DerCursor<'_>, list: &str) -> Result<Vec<Extension>, Error> {
    let Some(tlv) = r.read_optional(TAG_CONTEXT_0, &list)? else {
        return Ok(Vec::new());
    };
    let mut er = tlv.cursor(MANIFEST);
    let count = er.count(&list)?;
    if count == 0 {
        return Err(Error::Malformed {
            section: MANIFEST,
            offset: Some(tlv.offset),
            reason: format!("{list} is present but empty (DER omits an empty list)"),
        });
    }
    if count > MAX_EXTENSIONS {
        return Err(Error::LimitExceeded {
            what: "number of extensions",
            limit: to_u64(MAX_EXTENSIONS),
            found: to_u64(count),
        });
    }
    let mut extensions = Vec::with_capacity(count);
    for i in 0..count {
        let what = format_args!("{list}[{i}]");
        let ext_tlv = er.read(TAG_SEQUENCE, &what)?;
        let mut x = ext_tlv.cursor(MANIFEST);
        let id_tlv = x.read(TAG_OID, &format_args!("{what} id"))?;
        let id = decode_oid(MANIFEST, &id_tlv, &format_args!("{what} id"))?;
        let critical = match x.read_optional(TAG_BOOLEAN, &format_args!("{what} critical"))? {
            None => false,
            Some(b) => {
                if !decode_bool(MANIFEST, &b, &format_args!("{what} critical"))? {
                    return Err(Error::Malformed {
                        section: MANIFEST,
                        offset: Some(b.offset),
                        reason: format!(
                            "{what} critical is an explicit FALSE (DER omits the default)"
                        ),
                    });
                }
                true
            }
        };
        let value_tlv = x.read(TAG_OCTET_STRING, &format_args!("{what} value"))?;
        if value_tlv.value.len() > MAX_EXTENSION_VALUE_LEN {
            return Err(Error::LimitExceeded {
                what: "extension value length",
                limit: to_u64(MAX_EXTENSION_VALUE_LEN),
                found: to_u64(value_tlv.value.len()),
            });
        }
        x.finish(&what)?;
        extensions.push(Extension {
            id,
            critical,
            value: value_tlv.value.to_vec(),
        });
    }
    Ok(extensions)
}

fn encode_image(image: &ImageSpec) -> Vec<u8> {
    let mut out = Vec::new();
    push_tlv(&mut out, TAG_UTF8_STRING, image.name.as_bytes());
    push_tlv(&mut out, TAG_UTF8_STRING, image.partition.as_bytes());
    push_u64(&mut out, image.size);
    push_u64(&mut out, u64::from(image.chunk_size));
    push_tlv(&mut out, TAG_OCTET_STRING, &image.digest);
    let digests_len = image.chunk_digests.len().saturating_mul(DIGEST_LEN);
    push_header(&mut out, TAG_OCTET_STRING, digests_len);
    for digest in &image.chunk_digests {
        out.extend_from_slice(digest);
    }
    if !image.stored_chunks.is_empty() {
        let table_len = image.stored_chunks.len().saturating_mul(CHUNK_RECORD_LEN);
        push_header(&mut out, TAG_CONTEXT_1, table_len);
        for chunk in &image.stored_chunks {
            out.push(chunk.encoding.code());
            out.extend_from_slice(&chunk.stored_len.to_be_bytes());
            out.extend_from_slice(&chunk.decompressed_len.to_be_bytes());
        }
    }
    if let Some(source) = &image.source {
        let mut body = Vec::new();
        push_u64(&mut body, source.size);
        push_tlv(&mut body, TAG_OCTET_STRING, &source.digest);
        let refs_len = source.references.len().saturating_mul(SOURCE_REF_LEN);
        push_header(&mut body, TAG_OCTET_STRING, refs_len);
        for reference in &source.references {
            body.extend_from_slice(&reference.offset.to_be_bytes());
            body.extend_from_slice(&reference.len.to_be_bytes());
            body.extend_from_slice(&reference.frame_digest);
        }
        push_tlv(&mut out, TAG_CONTEXT_2_CONSTRUCTED, &body);
    }
    push_extensions(&mut out, &image.extensions);
    out
}

/// Appends `[0] IMPLICIT SEQUENCE OF Extension`, or nothing for an empty list.
fn push_extensions(out: &mut Vec<u8>, extensions: &[Extension]) {
    if extensions.is_empty() {
        return;
    }
    let mut list = Vec::new();
    for ext in extensions {
        let mut body = Vec::new();
        push_oid(&mut body, &ext.id);
        if ext.critical {
            push_bool(&mut body, true);
        }
        push_tlv(&mut body, TAG_OCTET_STRING, &ext.value);
        push_tlv(&mut list, TAG_SEQUENCE, &body);
    }
    push_tlv(out, TAG_CONTEXT_0, &list);
}

#[cfg(test)]
#[path = "manifest_tests.rs"]
mod tests;
