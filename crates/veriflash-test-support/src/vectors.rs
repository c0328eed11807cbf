//! The test vectors of docs/FORMAT.md §10: small package files, each good or with exactly one
//! defect, and the result a conforming reader gives for each (`docs/test-vectors/vectors.json`).
//!
//! Packages are put together byte by byte here, not with `veriflash-format`'s writer: the
//! writer refuses to write what a reader must refuse, and a vector built from the document's
//! layout, not from the code under test, is what an independent reader is checked against.
//! Every signature is deterministic (ECDSA P-256 with RFC 6979 nonces, RSA PKCS#1 v1.5), so the
//! same keys always give the same bytes: the committed files are what [`generate`] returns, and
//! `crates/veriflash-core/tests/vectors.rs` checks both that and each file's verdict.

use std::path::Path;

use serde::Serialize;
use veriflash_core::format::MAGIC;
use veriflash_core::hash::sha256;
use veriflash_core::sig::SigningKey;
use veriflash_core::{Error, ErrorKind};

use crate::pseudo_random;

/// One vector: a package file, the trust a verifier is given, and the result it must reach.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Vector {
    /// The package file, relative to the vectors directory.
    pub file: String,
    /// The trust anchors (PEM public keys), relative to the vectors directory.
    pub anchors: Vec<String>,
    /// The package threshold (FORMAT.md §8): distinct trusted keys that must sign.
    pub threshold: usize,
    /// Whether the verifier re-computes each whole-image digest (FORMAT.md §3).
    pub whole_image_digest: bool,
    /// The expected result: 0 for accepted, else the stable error code (FORMAT.md §9).
    pub code: u8,
    /// The name of `code` (`"accepted"` for 0).
    pub kind: &'static str,
    /// The rule of FORMAT.md the vector exercises.
    pub rule: &'static str,
    /// What the file is.
    pub about: &'static str,
    /// For a delta package (FORMAT.md §3.4): the image the device runs in the partition of its
    /// image `boot`, relative to the vectors directory. The verifier streams the package against
    /// it (after checking it is the declared source); absent for every other vector.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// Every vector and every file the generator writes (packages and the public keys the
/// vectors name as anchors).
#[derive(Debug)]
pub struct VectorSet {
    /// The vectors, in the order of `vectors.json`.
    pub vectors: Vec<Vector>,
    /// `(path relative to the vectors directory, bytes)` of each generated file.
    pub files: Vec<(String, Vec<u8>)>,
}

/// The manifest file's shape.
#[derive(Serialize)]
struct Document<'a> {
    about: &'static str,
    regenerate: &'static str,
    vectors: &'a [Vector],
}

impl VectorSet {
    /// `vectors.json`: the vectors as a pretty-printed JSON document ending in a newline.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] if serialization fails (not expected).
    pub fn manifest_json(&self) -> Result<String, Error> {
        let document = Document {
            about: "veriflash package test vectors: docs/FORMAT.md §10. Verify `file` trusting \
                    exactly `anchors`, requiring `threshold` distinct trusted keys, without \
                    certificate dates, re-computing whole-image digests when \
                    `whole_image_digest`; the result must be `code` (0: accepted).",
            regenerate: "docs/test-vectors/generate.sh",
            vectors: &self.vectors,
        };
        let mut text = serde_json::to_string_pretty(&document)
            .map_err(|e| Error::new(ErrorKind::InvalidInput, e.to_string()))?;
        text.push('\n');
        Ok(text)
    }
}

/// The test keys, read from `keys/*.key.pem` (committed; made once with openssl, see
/// `docs/test-vectors/README.md`).
struct Keys {
    /// Trusted P-256 keys (which ones a vector trusts, its `anchors` say).
    a: SigningKey,
    b: SigningKey,
    c: SigningKey,
    /// A P-256 key no vector trusts.
    d: SigningKey,
    /// An RSA-2048 key (PKCS#1 v1.5 signatures).
    r: SigningKey,
}

fn load_key(dir: &Path, name: &str) -> Result<SigningKey, Error> {
    let path = dir.join("keys").join(format!("{name}.key.pem"));
    let text = std::fs::read_to_string(&path)
        .map_err(|e| Error::new(ErrorKind::Io, format!("{}: {e}", path.display())))?;
    SigningKey::from_pem(&text)
        .map_err(|e| Error::new(ErrorKind::InvalidKey, format!("{}: {e}", path.display())))
}

// ---------------------------------------------------------------------------------------------
// DER, as X.690 defines it: definite, minimal lengths.

/// A tag and a definite length of `len` in the shortest form.
fn der_header(tag: u8, len: usize) -> Vec<u8> {
    let mut out = vec![tag];
    match u8::try_from(len) {
        Ok(short) if short < 0x80 => out.push(short),
        _ => {
            let octets: Vec<u8> = len
                .to_be_bytes()
                .into_iter()
                .skip_while(|&b| b == 0)
                .collect();
            out.push(0x80 | u8::try_from(octets.len()).unwrap_or(0));
            out.extend_from_slice(&octets);
        }
    }
    out
}

fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = der_header(tag, content.len());
    out.extend_from_slice(content);
    out
}

fn seq(parts: &[&[u8]]) -> Vec<u8> {
    tlv(0x30, &parts.concat())
}

/// A non-negative INTEGER in its minimal two's complement form.
fn uint(value: u64) -> Vec<u8> {
    let mut content: Vec<u8> = value
        .to_be_bytes()
        .into_iter()
        .skip_while(|&b| b == 0)
        .collect();
    if content.first().is_none_or(|&b| b & 0x80 != 0) {
        content.insert(0, 0);
    }
    tlv(0x02, &content)
}

fn utf8(text: &str) -> Vec<u8> {
    tlv(0x0C, text.as_bytes())
}

fn octets(bytes: &[u8]) -> Vec<u8> {
    tlv(0x04, bytes)
}

/// `1.3.6.1.4.1.32473.1`: under the private enterprise number RFC 5612 reserves for
/// documentation, so no reader knows it.
const EXAMPLE_OID: &[u8] = &[0x2B, 0x06, 0x01, 0x04, 0x01, 0x81, 0xFD, 0x59, 0x01];
/// `1.3.101.112`, id-Ed25519 (RFC 8410): an algorithm no veriflash verifier supports.
const ED25519_OID: &[u8] = &[0x2B, 0x65, 0x70];
/// `1.2.840.113549.1.1.11`, sha256WithRSAEncryption.
const RSA_PKCS1_OID: &[u8] = &[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x0B];

// ---------------------------------------------------------------------------------------------
// Zstandard frames (RFC 8878), made of RLE blocks so their bytes do not depend on a compressor.

const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];
/// Frame_Header_Descriptor: a 4-byte Frame_Content_Size, Single_Segment_flag set.
const SINGLE_SEGMENT: u8 = 0xA0;
/// Frame_Header_Descriptor: a 4-byte Frame_Content_Size and a Window_Descriptor.
const WITH_WINDOW: u8 = 0x80;
/// Window_Descriptor: exponent 13, mantissa 0: 2^23 = 8 MiB, the limit.
const WINDOW_8_MIB: u8 = 0x68;
/// Window_Descriptor: exponent 13, mantissa 1: 9 MiB, over the limit.
const WINDOW_9_MIB: u8 = 0x69;
/// The largest block (Block_Maximum_Size, RFC 8878 §3.1.1.2.4).
const MAX_BLOCK: u32 = 128 * 1024;

/// A frame header: magic, `descriptor`, `between` (Window_Descriptor and/or Dictionary_ID, as
/// the descriptor says) and a 4-byte `content_size`.
fn zstd_header(descriptor: u8, between: &[u8], content_size: u32) -> Vec<u8> {
    [
        &ZSTD_MAGIC[..],
        &[descriptor],
        between,
        &content_size.to_le_bytes(),
    ]
    .concat()
}

/// `header` followed by RLE blocks that regenerate `len` bytes of `byte`.
fn rle_frame(header: Vec<u8>, len: u32, byte: u8) -> Vec<u8> {
    let mut frame = header;
    let mut left = len;
    while left > 0 {
        let size = left.min(MAX_BLOCK);
        left -= size;
        // Block_Header: Last_Block (bit 0), Block_Type 1 = RLE (bits 1-2), Block_Size.
        let block_header = (size << 3) | (1 << 1) | u32::from(left == 0);
        frame.extend_from_slice(&block_header.to_le_bytes()[..3]);
        frame.push(byte);
    }
    frame
}

// ---------------------------------------------------------------------------------------------
// Manifests and packages (FORMAT.md §1-§5).

const RAW: u8 = 0;
const ZSTD: u8 = 1;

/// One chunk as stored: encoding, stored bytes, decompressed length.
struct Stored {
    encoding: u8,
    bytes: Vec<u8>,
    len: u32,
}

/// An `ImageSpec` (image `boot` for partition `boot`) and its stored bytes.
#[derive(Clone)]
struct Image {
    size: u64,
    chunk_size: u64,
    digest: [u8; 32],
    chunk_digests: Vec<u8>,
    /// The `chunkTable` content, when present.
    table: Option<Vec<u8>>,
    /// The `source [2]` content (FORMAT.md §3.4), when present.
    source: Option<Vec<u8>>,
    stored: Vec<u8>,
}

impl Image {
    /// An image stored raw, without a chunk table.
    fn raw(data: &[u8], chunk_size: usize) -> Self {
        Self {
            size: u64::try_from(data.len()).unwrap_or(u64::MAX),
            chunk_size: u64::try_from(chunk_size).unwrap_or(u64::MAX),
            digest: sha256(data),
            chunk_digests: data.chunks(chunk_size).flat_map(sha256).collect(),
            table: None,
            source: None,
            stored: data.to_vec(),
        }
    }

    /// An image of `chunks` in `chunk_size` chunks, with a chunk table, whose decompressed bytes
    /// hash to `digest`.
    fn tabled(chunk_size: u32, chunks: &[Stored], digest: [u8; 32]) -> Self {
        let mut table = Vec::new();
        for chunk in chunks {
            table.push(chunk.encoding);
            let stored_len = u32::try_from(chunk.bytes.len()).unwrap_or(u32::MAX);
            table.extend_from_slice(&stored_len.to_be_bytes());
            table.extend_from_slice(&chunk.len.to_be_bytes());
        }
        Self {
            size: chunks.iter().map(|chunk| u64::from(chunk.len)).sum(),
            chunk_size: u64::from(chunk_size),
            digest,
            chunk_digests: chunks
                .iter()
                .flat_map(|chunk| sha256(&chunk.bytes))
                .collect(),
            table: Some(table),
            source: None,
            stored: chunks
                .iter()
                .flat_map(|chunk| chunk.bytes.clone())
                .collect(),
        }
    }

    fn der(&self) -> Vec<u8> {
        let table = self
            .table
            .as_ref()
            .map(|table| tlv(0x81, table))
            .unwrap_or_default();
        let source = self
            .source
            .as_ref()
            .map(|source| tlv(0xA2, source))
            .unwrap_or_default();
        seq(&[
            &utf8("boot"),
            &utf8("boot"),
            &uint(self.size),
            &uint(self.chunk_size),
            &octets(&self.digest),
            &octets(&self.chunk_digests),
            &table,
            &source,
        ])
    }
}

/// A `Manifest`, each field kept as its DER so a vector can replace one with bytes the writer
/// would never produce.
#[derive(Clone)]
struct Manifest {
    version: Vec<u8>,
    product: Vec<u8>,
    chipset: Vec<u8>,
    revisions: Vec<u8>,
    software: Vec<u8>,
    security: Vec<u8>,
    images: Vec<Image>,
    /// Encoded optional fields after `images` (extensions, trust rotation).
    tail: Vec<u8>,
    /// The header's `format_version`.
    header_version: u16,
}

impl Manifest {
    /// Version 1, one raw image.
    fn new(image: Image) -> Self {
        Self {
            version: uint(1),
            product: utf8("vector-modem"),
            chipset: utf8("mdm9607"),
            revisions: seq(&[&utf8("r1")]),
            software: utf8("1.0.0"),
            security: uint(1),
            images: vec![image],
            tail: Vec::new(),
            header_version: 1,
        }
    }

    /// The same, as version 2 (header and manifest).
    fn v2(mut self) -> Self {
        self.version = uint(2);
        self.header_version = 2;
        self
    }

    /// The same, as version `version` (header and manifest).
    fn version(mut self, version: u16) -> Self {
        self.version = uint(u64::from(version));
        self.header_version = version;
        self
    }

    fn body(&self) -> Vec<u8> {
        let images: Vec<u8> = self.images.iter().flat_map(Image::der).collect();
        [
            &self.version[..],
            &self.product,
            &self.chipset,
            &self.revisions,
            &self.software,
            &self.security,
            &tlv(0x30, &images),
            &self.tail,
        ]
        .concat()
    }

    fn der(&self) -> Vec<u8> {
        tlv(0x30, &self.body())
    }

    fn payload(&self) -> Vec<u8> {
        self.images
            .iter()
            .flat_map(|image| image.stored.clone())
            .collect()
    }
}

/// How one signature entry is made.
enum Entry<'a> {
    /// A valid signature by the key.
    Good(&'a SigningKey),
    /// A well-formed signature by the key over other bytes: it does not verify.
    Bad(&'a SigningKey),
    /// Whatever the vector says.
    Raw {
        algorithm: Vec<u8>,
        key_id: [u8; 32],
        signature: Vec<u8>,
    },
}

/// A package: header, manifest bytes and payload; signed when written.
struct Package {
    header: [u8; 32],
    manifest: Vec<u8>,
    payload: Vec<u8>,
}

impl Package {
    fn new(manifest: &Manifest) -> Self {
        Self::from_parts(manifest.header_version, manifest.der(), manifest.payload())
    }

    /// A header for `manifest` and `payload` (FORMAT.md §2).
    fn from_parts(version: u16, manifest: Vec<u8>, payload: Vec<u8>) -> Self {
        let manifest_len = u32::try_from(manifest.len()).unwrap_or(u32::MAX);
        let payload_len = u64::try_from(payload.len()).unwrap_or(u64::MAX);
        let mut header = [0u8; 32];
        let fields: [&[u8]; 7] = [
            &MAGIC,
            &version.to_be_bytes(),
            &32u16.to_be_bytes(),
            &0u32.to_be_bytes(),
            &manifest_len.to_be_bytes(),
            &0u32.to_be_bytes(),
            &payload_len.to_be_bytes(),
        ];
        for (dst, src) in header.iter_mut().zip(fields.concat()) {
            *dst = src;
        }
        Self {
            header,
            manifest,
            payload,
        }
    }

    fn with_header(mut self, edit: impl FnOnce(&mut [u8; 32])) -> Self {
        edit(&mut self.header);
        self
    }

    /// `header || manifest`, the bytes every signature covers.
    fn signed_message(&self) -> Vec<u8> {
        [&self.header[..], &self.manifest].concat()
    }

    /// The signature block of `entries`.
    fn block(&self, entries: &[Entry<'_>]) -> Result<Vec<u8>, Error> {
        let message = self.signed_message();
        let mut other = message.clone();
        if let Some(last) = other.last_mut() {
            *last ^= 1;
        }
        let mut body = Vec::new();
        for entry in entries {
            let (algorithm, key_id, signature) = match entry {
                Entry::Good(key) => (
                    key.algorithm().as_bytes().to_vec(),
                    key.verifying_key().key_id().0,
                    sign(key, &message)?,
                ),
                Entry::Bad(key) => (
                    key.algorithm().as_bytes().to_vec(),
                    key.verifying_key().key_id().0,
                    sign(key, &other)?,
                ),
                Entry::Raw {
                    algorithm,
                    key_id,
                    signature,
                } => (algorithm.clone(), *key_id, signature.clone()),
            };
            body.extend(seq(&[
                &tlv(0x06, &algorithm),
                &octets(&key_id),
                &octets(&signature),
            ]));
        }
        Ok(tlv(0x30, &body))
    }

    /// The whole package file, signed by `entries`.
    fn signed(&self, entries: &[Entry<'_>]) -> Result<Vec<u8>, Error> {
        Ok([
            self.signed_message(),
            self.block(entries)?,
            self.payload.clone(),
        ]
        .concat())
    }
}

fn sign(key: &SigningKey, message: &[u8]) -> Result<Vec<u8>, Error> {
    key.sign(message)
        .map_err(|e| Error::new(ErrorKind::InvalidKey, e.to_string()))
}

/// The DER SubjectPublicKeyInfo of a P-256 key with its point compressed (`02`/`03` || X): the
/// same key as the canonical 91-byte form, another encoding (FORMAT.md §4 keyId).
fn compressed_spki(key: &SigningKey) -> Result<Vec<u8>, Error> {
    let canonical = key.verifying_key().to_spki_der();
    // SEQUENCE { AlgorithmIdentifier (21 bytes from offset 2), BIT STRING 00 04 X Y }.
    let (Some(algorithm), Some(x), Some(&y_last)) = (
        canonical.get(2..23),
        canonical.get(27..59),
        canonical.get(90),
    ) else {
        return Err(Error::new(ErrorKind::InvalidKey, "not a P-256 key"));
    };
    let point = [&[0x02 | (y_last & 1)][..], x].concat();
    Ok(seq(&[algorithm, &tlv(0x03, &[&[0][..], &point].concat())]))
}

// ---------------------------------------------------------------------------------------------
// The vectors.

/// Who verifies: anchors (names of `keys/NAME.pub.pem`), threshold, whole-image check.
#[derive(Clone, Copy)]
struct Trust {
    anchors: &'static [&'static str],
    threshold: usize,
    whole_image_digest: bool,
}

const TRUST_A: Trust = Trust {
    anchors: &["a"],
    threshold: 1,
    whole_image_digest: false,
};

/// A row of a table of vectors: file name, what varies, trust (or whether the new anchors
/// sign), code, rule, description.
type Case<T, W = Trust> = (&'static str, T, W, u8, &'static str, &'static str);

/// A change to a good header.
type HeaderEdit = fn(&mut [u8; 32]);

struct Out {
    vectors: Vec<Vector>,
    files: Vec<(String, Vec<u8>)>,
}

impl Out {
    /// A vector over a new file `name` (`NAME.vfp`).
    fn add(
        &mut self,
        name: &str,
        bytes: Vec<u8>,
        trust: Trust,
        code: u8,
        rule: &'static str,
        about: &'static str,
    ) {
        self.files.push((format!("{name}.vfp"), bytes));
        self.again(name, trust, code, rule, about);
    }

    /// Another vector over the file `name` added before.
    fn again(
        &mut self,
        name: &str,
        trust: Trust,
        code: u8,
        rule: &'static str,
        about: &'static str,
    ) {
        self.vectors.push(Vector {
            file: format!("{name}.vfp"),
            anchors: trust
                .anchors
                .iter()
                .map(|anchor| {
                    if anchor.ends_with(".pem") {
                        format!("keys/{anchor}")
                    } else {
                        format!("keys/{anchor}.pub.pem")
                    }
                })
                .collect(),
            threshold: trust.threshold,
            whole_image_digest: trust.whole_image_digest,
            code,
            kind: ErrorKind::from_code(code).map_or("accepted", ErrorKind::name),
            rule,
            about,
            source: None,
        });
    }

    /// The last vector added streams against the source image `name` (`sources/NAME`).
    fn against(&mut self, name: &str) {
        if let Some(last) = self.vectors.last_mut() {
            last.source = Some(format!("sources/{name}"));
        }
    }
}

/// Generates every vector from the keys in `dir/keys` (`a`, `b`, `c`, `d` P-256, `r` RSA).
///
/// # Errors
/// [`ErrorKind::Io`] or [`ErrorKind::InvalidKey`] when a key cannot be read; a signing error.
pub fn generate(dir: &Path) -> Result<VectorSet, Error> {
    let keys = Keys {
        a: load_key(dir, "a")?,
        b: load_key(dir, "b")?,
        c: load_key(dir, "c")?,
        d: load_key(dir, "d")?,
        r: load_key(dir, "r")?,
    };
    let mut out = Out {
        vectors: Vec::new(),
        files: Vec::new(),
    };
    let named = [
        ("a", &keys.a),
        ("b", &keys.b),
        ("c", &keys.c),
        ("d", &keys.d),
        ("r", &keys.r),
    ];
    for (name, key) in named {
        out.files.push((
            format!("keys/{name}.pub.pem"),
            key.verifying_key().to_public_key_pem().into_bytes(),
        ));
    }
    header_vectors(&mut out, &keys)?;
    manifest_vectors(&mut out, &keys)?;
    end_vectors(&mut out, &keys)?;
    signature_vectors(&mut out, &keys)?;
    zstd_vectors(&mut out, &keys)?;
    variable_chunk_vectors(&mut out, &keys)?;
    delta_vectors(&mut out, &keys)?;
    rotation_vectors(&mut out, &keys)?;
    Ok(VectorSet {
        vectors: out.vectors,
        files: out.files,
    })
}

/// The image most vectors carry: 1000 bytes, one chunk.
fn base_image() -> Image {
    Image::raw(&pseudo_random(1000, 23), 4096)
}

fn base_manifest() -> Manifest {
    Manifest::new(base_image())
}

fn header_vectors(out: &mut Out, k: &Keys) -> Result<(), Error> {
    let good = Package::new(&base_manifest()).signed(&[Entry::Good(&k.a)])?;
    out.add(
        "good-p256",
        good.clone(),
        TRUST_A,
        0,
        "§1-§8",
        "a good package: one raw image, one ECDSA P-256 signature",
    );
    out.again(
        "good-p256",
        Trust {
            anchors: &["a-compressed.pub.pem"],
            ..TRUST_A
        },
        0,
        "§4 keyId",
        "the anchor is given with a compressed point: its key id is still that of the canonical \
         (uncompressed) encoding, which the entry names",
    );
    out.add(
        "good-rsa-pkcs1",
        Package::new(&base_manifest()).signed(&[Entry::Good(&k.r)])?,
        Trust {
            anchors: &["r"],
            ..TRUST_A
        },
        0,
        "§4 algorithm",
        "a good package signed with RSA-2048 PKCS#1 v1.5",
    );
    out.add(
        "header-empty",
        Vec::new(),
        TRUST_A,
        13,
        "§2 magic",
        "an empty file: nothing contradicts the magic, so it is truncated",
    );
    out.add(
        "header-magic-prefix",
        MAGIC[..5].to_vec(),
        TRUST_A,
        13,
        "§2 magic",
        "the first 5 bytes of the magic: truncated, not bad magic",
    );
    out.add(
        "header-short-not-magic",
        b"VFPK\n".to_vec(),
        TRUST_A,
        10,
        "§2 magic",
        "5 bytes that contradict the magic: bad magic whatever the length",
    );
    let mut mangled = good.clone();
    mangled.remove(5); // CR LF -> LF, as a text-mode transfer does
    out.add(
        "header-bad-magic",
        mangled,
        TRUST_A,
        10,
        "§2 magic",
        "the package after a CR LF -> LF conversion: bad magic",
    );
    out.add(
        "header-short-after-magic",
        [&MAGIC[..], &[0; 10]].concat(),
        TRUST_A,
        13,
        "§2 magic",
        "the magic and 10 more bytes: truncated",
    );
    let header_cases: [(&str, HeaderEdit, u8, &'static str); 8] = [
        (
            "header-version-5",
            |h| h[9] = 5,
            11,
            "format_version 5: unsupported",
        ),
        (
            "header-len-33",
            |h| h[11] = 33,
            10,
            "header_len 33: malformed",
        ),
        (
            "header-flags",
            |h| h[15] = 1,
            11,
            "a flag bit set: unknown flags",
        ),
        (
            "header-reserved",
            |h| h[23] = 1,
            10,
            "reserved is not zero: malformed",
        ),
        (
            "header-manifest-len-0",
            |h| h[16..20].copy_from_slice(&[0; 4]),
            10,
            "manifest_len 0: malformed",
        ),
        (
            "header-manifest-len-over-limit",
            |h| h[16..20].copy_from_slice(&0x0100_0001u32.to_be_bytes()),
            12,
            "manifest_len MAX_MANIFEST_LEN + 1: limit exceeded before anything is read",
        ),
        (
            "header-payload-len-0",
            |h| h[24..32].copy_from_slice(&[0; 8]),
            10,
            "payload_len 0: malformed",
        ),
        (
            "header-payload-len-over-limit",
            |h| h[24..32].copy_from_slice(&((1u64 << 40) + 1).to_be_bytes()),
            12,
            "payload_len MAX_PAYLOAD_LEN + 1: limit exceeded",
        ),
    ];
    for (name, edit, code, about) in header_cases {
        let bytes = Package::new(&base_manifest())
            .with_header(edit)
            .signed(&[Entry::Good(&k.a)])?;
        out.add(name, bytes, TRUST_A, code, "§2 header fields", about);
    }
    Ok(())
}

fn manifest_vectors(out: &mut Out, k: &Keys) -> Result<(), Error> {
    let signed = |package: Package| package.signed(&[Entry::Good(&k.a)]);
    let m = base_manifest();
    let payload = m.payload();
    let body = m.body();

    let past_end = [der_header(0x30, body.len() + 1), body.clone()].concat();
    out.add(
        "manifest-length-past-end",
        signed(Package::from_parts(1, past_end, payload.clone()))?,
        TRUST_A,
        10,
        "§3 one SEQUENCE",
        "the manifest SEQUENCE's length runs one byte past manifest_len (signed so): malformed, \
         not truncated",
    );
    let after = [m.der(), vec![0]].concat();
    out.add(
        "manifest-bytes-after-sequence",
        signed(Package::from_parts(1, after, payload.clone()))?,
        TRUST_A,
        10,
        "§3 one SEQUENCE",
        "a byte after the manifest SEQUENCE, inside manifest_len: malformed, not trailing data",
    );
    let not_seq = tlv(0x31, &body);
    out.add(
        "manifest-not-a-sequence",
        signed(Package::from_parts(1, not_seq, payload.clone()))?,
        TRUST_A,
        10,
        "§3 one SEQUENCE",
        "the manifest is a SET: malformed",
    );

    let integers: [(&str, &[u8], u8, &'static str); 3] = [
        (
            "manifest-security-version-2-64",
            &[0x01, 0, 0, 0, 0, 0, 0, 0, 0],
            10,
            "securityVersion 2^64: does not fit 64 bits, malformed (not limit exceeded)",
        ),
        (
            "manifest-security-version-negative",
            &[0xFF],
            10,
            "securityVersion -1: malformed",
        ),
        (
            "manifest-security-version-max",
            &[0x00, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF],
            0,
            "securityVersion 2^64 - 1: the largest value, accepted",
        ),
    ];
    for (name, content, code, about) in integers {
        let mut m = base_manifest();
        m.security = tlv(0x02, content);
        out.add(
            name,
            signed(Package::new(&m))?,
            TRUST_A,
            code,
            "§3 INTEGERs",
            about,
        );
    }
    let mut long_name = base_manifest();
    long_name.product = utf8(&"p".repeat(129));
    out.add(
        "manifest-product-too-long",
        signed(Package::new(&long_name))?,
        TRUST_A,
        12,
        "§6 limits",
        "a product name of 129 bytes (MAX_NAME_LEN + 1): limit exceeded",
    );
    let mut non_minimal = base_manifest();
    non_minimal.chipset = [&[0x0C, 0x81, 0x07][..], b"mdm9607"].concat();
    out.add(
        "manifest-non-minimal-length",
        signed(Package::new(&non_minimal))?,
        TRUST_A,
        10,
        "§3 DER is canonical",
        "the chipset's length in the long form (81 07): BER, malformed",
    );

    let mut v5 = base_manifest();
    v5.version = uint(5);
    out.add(
        "manifest-version-5",
        signed(Package::new(&v5))?,
        TRUST_A,
        11,
        "§3 version rule",
        "manifestVersion 5: unsupported",
    );
    let data = pseudo_random(1000, 23);
    let all_raw = Image::tabled(
        4096,
        &[Stored {
            encoding: RAW,
            bytes: data.clone(),
            len: 1000,
        }],
        sha256(&data),
    );
    out.add(
        "manifest-v2-all-raw-table",
        signed(Package::new(&Manifest::new(all_raw.clone()).v2()))?,
        TRUST_A,
        0,
        "§3 version rule",
        "version 2 with a chunk table whose only record is raw: valid, accepted",
    );
    out.add(
        "manifest-v1-with-table",
        signed(Package::new(&Manifest::new(all_raw)))?,
        TRUST_A,
        10,
        "§3 version rule",
        "version 1 with a chunk table: an unexpected field, malformed",
    );
    out.add(
        "manifest-v2-without-table",
        signed(Package::new(&base_manifest().v2()))?,
        TRUST_A,
        10,
        "§3 version rule",
        "version 2 without any chunk table: invalid (must be written as version 1)",
    );
    out.add(
        "header-v2-manifest-v1",
        signed(Package::new(&base_manifest()).with_header(|h| h[9] = 2))?,
        TRUST_A,
        10,
        "§3 version rule",
        "header format_version 2 over a version-1 manifest: invalid",
    );

    for (name, critical, code, about) in [
        (
            "manifest-unknown-critical-extension",
            true,
            11,
            "a critical extension no reader knows: unsupported",
        ),
        (
            "manifest-unknown-extension",
            false,
            0,
            "a non-critical extension no reader knows: ignored, accepted",
        ),
    ] {
        let flag = if critical {
            tlv(0x01, &[0xFF])
        } else {
            Vec::new()
        };
        let mut m = base_manifest();
        m.tail = tlv(
            0xA0,
            &seq(&[&tlv(0x06, EXAMPLE_OID), &flag, &octets(b"future")]),
        );
        out.add(
            name,
            signed(Package::new(&m))?,
            TRUST_A,
            code,
            "§3 extensions",
            about,
        );
    }

    let mut lying = base_manifest();
    if let Some(image) = lying.images.first_mut() {
        image.digest[0] ^= 1;
    }
    out.add(
        "image-digest-wrong",
        signed(Package::new(&lying))?,
        TRUST_A,
        0,
        "§3 whole-image digest",
        "every chunk matches but the signed whole-image digest does not: accepted by a \
         verifier that does not re-compute it, which reports the digest as signed, unchecked",
    );
    out.again(
        "image-digest-wrong",
        Trust {
            whole_image_digest: true,
            ..TRUST_A
        },
        31,
        "§3 whole-image digest",
        "the same package, verified with the whole-image digest re-computed: refused",
    );
    out.again(
        "good-p256",
        Trust {
            whole_image_digest: true,
            ..TRUST_A
        },
        0,
        "§3 whole-image digest",
        "the good package with the whole-image digest re-computed: accepted",
    );
    Ok(())
}

fn end_vectors(out: &mut Out, k: &Keys) -> Result<(), Error> {
    let package = Package::new(&base_manifest());
    let good = package.signed(&[Entry::Good(&k.a)])?;
    let message_len = package.signed_message().len();

    out.add(
        "package-trailing-byte",
        [good.clone(), vec![0]].concat(),
        TRUST_A,
        14,
        "§7 length",
        "one byte after 32 + M + S + P: trailing data",
    );
    out.add(
        "package-payload-cut",
        good.get(..good.len() - 1).unwrap_or_default().to_vec(),
        TRUST_A,
        13,
        "§7 length",
        "the last payload byte missing: truncated",
    );
    let mut corrupt = good.clone();
    if let Some(byte) = corrupt.last_mut() {
        *byte ^= 0x01;
    }
    out.add(
        "payload-chunk-corrupt",
        corrupt,
        TRUST_A,
        30,
        "§5 payload",
        "one payload bit flipped: the chunk does not match its signed digest",
    );
    let mut longer = Package::new(&base_manifest()).with_header(|h| {
        h[24..32].copy_from_slice(&1001u64.to_be_bytes());
    });
    longer.payload.push(0);
    out.add(
        "manifest-payload-len-mismatch",
        longer.signed(&[Entry::Good(&k.a)])?,
        TRUST_A,
        10,
        "§5 payload",
        "payload_len is one more than the images' stored sizes (and the file that long): \
         malformed",
    );
    out.add(
        "sigblock-over-limit",
        [package.signed_message(), vec![0x30, 0x83, 0x04, 0x00, 0x01]].concat(),
        TRUST_A,
        12,
        "§7 step 3",
        "a signature block declaring 262145 bytes: limit exceeded from its first 5 bytes",
    );
    out.add(
        "sigblock-cut",
        good.get(..message_len + 10).unwrap_or_default().to_vec(),
        TRUST_A,
        13,
        "§7 step 3",
        "the file ends inside the signature block: truncated",
    );
    out.add(
        "sigblock-empty",
        [
            package.signed_message(),
            vec![0x30, 0x00],
            package.payload.clone(),
        ]
        .concat(),
        TRUST_A,
        10,
        "§4",
        "a signature block with no entry: invalid",
    );
    let seventeen: Vec<Entry<'_>> = (0..17).map(|_| Entry::Good(&k.a)).collect();
    out.add(
        "sigblock-17-entries",
        package.signed(&seventeen)?,
        TRUST_A,
        12,
        "§6 limits",
        "17 signatures (MAX_SIGNATURES + 1): limit exceeded",
    );
    Ok(())
}

fn signature_vectors(out: &mut Out, k: &Keys) -> Result<(), Error> {
    let package = Package::new(&base_manifest());
    let abc = Trust {
        anchors: &["a", "b", "c"],
        threshold: 2,
        ..TRUST_A
    };
    let ab2 = Trust {
        anchors: &["a", "b"],
        threshold: 2,
        ..TRUST_A
    };
    let a_id = k.a.verifying_key().key_id().0;
    let message = package.signed_message();
    let ed25519 = |key_id| Entry::Raw {
        algorithm: ED25519_OID.to_vec(),
        key_id,
        signature: vec![0x5A; 64],
    };
    let cases: Vec<Case<Vec<Entry<'_>>>> = vec![
        (
            "sig-bad",
            vec![Entry::Bad(&k.a)],
            TRUST_A,
            20,
            "§8 step 2e",
            "the only signature, by a trusted key, does not verify",
        ),
        (
            "sig-unknown-key",
            vec![Entry::Good(&k.d)],
            TRUST_A,
            21,
            "§8 step 2d",
            "the only signature is by a key that is not trusted",
        ),
        (
            "sig-unknown-key-skipped",
            vec![Entry::Good(&k.d), Entry::Good(&k.a)],
            TRUST_A,
            0,
            "§8 step 2d",
            "an entry by an unknown key, then a good one: the first is skipped, accepted",
        ),
        (
            "sig-unsupported-algorithm",
            vec![ed25519(a_id)],
            TRUST_A,
            25,
            "§4 algorithm",
            "the only entry names Ed25519 (1.3.101.112), which no verifier here supports",
        ),
        (
            "sig-unsupported-algorithm-skipped",
            vec![ed25519(a_id), Entry::Good(&k.a)],
            TRUST_A,
            0,
            "§4 algorithm",
            "an Ed25519 entry, then a good ECDSA one by the same key: the first is skipped, \
             accepted (forward compatibility)",
        ),
        (
            "sig-2of3-one-bad",
            vec![Entry::Bad(&k.a), Entry::Good(&k.b), Entry::Good(&k.c)],
            abc,
            0,
            "§8 step 3",
            "2 of 3 required; the first trusted signature is bad, the other two verify: a bad \
             signature is not fatal when others meet the threshold, accepted",
        ),
        (
            "sig-2of3-two-bad",
            vec![Entry::Bad(&k.a), Entry::Bad(&k.b), Entry::Good(&k.c)],
            abc,
            24,
            "§8 step 4",
            "2 of 3 required, only one verifies: threshold not met",
        ),
        (
            "sig-same-key-twice",
            vec![Entry::Good(&k.a), Entry::Good(&k.a)],
            ab2,
            24,
            "§8 step 2a",
            "2 required, two valid signatures by the same key: it counts once, threshold not met",
        ),
        (
            "sig-two-distinct-keys",
            vec![Entry::Good(&k.a), Entry::Good(&k.b)],
            ab2,
            0,
            "§8 step 3",
            "2 required, valid signatures by two distinct trusted keys: accepted",
        ),
        (
            "sig-rsa-and-p256",
            vec![Entry::Good(&k.r), Entry::Good(&k.a)],
            Trust {
                anchors: &["r", "a"],
                threshold: 2,
                ..TRUST_A
            },
            0,
            "§8 step 3",
            "2 required, an RSA and a P-256 signature: accepted",
        ),
        (
            "sig-bad-then-good-same-key",
            vec![Entry::Bad(&k.a), Entry::Good(&k.a)],
            TRUST_A,
            0,
            "§8 step 2a",
            "a bad then a good signature by one key: only a key whose signature verified is \
             counted, so the second entry is checked, accepted",
        ),
        (
            "sig-first-failure-unknown-key",
            vec![Entry::Good(&k.d), Entry::Bad(&k.a)],
            TRUST_A,
            21,
            "§8 step 4",
            "nothing verifies: the code is the first entry's (unknown key), not the second's",
        ),
        (
            "sig-first-failure-bad",
            vec![Entry::Bad(&k.a), Entry::Good(&k.d)],
            TRUST_A,
            20,
            "§8 step 4",
            "nothing verifies: the code is the first entry's (bad signature)",
        ),
        (
            "sig-ecdsa-raw-r-s",
            vec![Entry::Raw {
                algorithm: k.a.algorithm().as_bytes().to_vec(),
                key_id: a_id,
                signature: raw_r_s(&sign(&k.a, &message)?)?,
            }],
            TRUST_A,
            20,
            "§4 signature encoding",
            "a valid ECDSA signature as 64-byte r || s instead of DER: not authentic",
        ),
        (
            "sig-algorithm-key-mismatch",
            vec![Entry::Raw {
                algorithm: RSA_PKCS1_OID.to_vec(),
                key_id: a_id,
                signature: sign(&k.a, &message)?,
            }],
            TRUST_A,
            20,
            "§8 step 2e",
            "an ECDSA signature by a P-256 key labelled sha256WithRSAEncryption: not authentic",
        ),
        (
            "sig-keyid-of-compressed-spki",
            vec![Entry::Raw {
                algorithm: k.a.algorithm().as_bytes().to_vec(),
                key_id: sha256(&compressed_spki(&k.a)?),
                signature: sign(&k.a, &message)?,
            }],
            TRUST_A,
            21,
            "§4 keyId",
            "a valid signature by the trusted key, but its keyId hashes the compressed-point \
             SubjectPublicKeyInfo: no anchor has that id, unknown key",
        ),
    ];
    for (name, entries, trust, code, rule, about) in cases {
        out.add(name, package.signed(&entries)?, trust, code, rule, about);
    }
    Ok(())
}

/// A DER `Ecdsa-Sig-Value` as the fixed 64-byte `r || s` (PKCS#11's form).
fn raw_r_s(der: &[u8]) -> Result<Vec<u8>, Error> {
    let bad = || Error::new(ErrorKind::InvalidInput, "not an Ecdsa-Sig-Value");
    let mut out = Vec::with_capacity(64);
    // SEQUENCE { INTEGER r, INTEGER s }, each at most 33 bytes: short-form lengths.
    let mut at = 2;
    for _ in 0..2 {
        let len = usize::from(*der.get(at + 1).ok_or_else(bad)?);
        let value = der.get(at + 2..at + 2 + len).ok_or_else(bad)?;
        let value = value.strip_prefix(&[0]).unwrap_or(value);
        out.extend(std::iter::repeat_n(0, 32usize.saturating_sub(value.len())));
        out.extend_from_slice(value);
        at += 2 + len;
    }
    Ok(out)
}

fn zstd_vectors(out: &mut Out, k: &Keys) -> Result<(), Error> {
    let sign = |m: &Manifest| Package::new(m).signed(&[Entry::Good(&k.a)]);
    // A 1000-byte image: chunk 0 is 4096 bytes of 0xAA, stored as a frame; chunk 1 is raw.
    let tail = pseudo_random(904, 29);
    let first = vec![0xAA; 4096];
    let digest = sha256(&[first.as_slice(), &tail].concat());
    let two_chunks = |frame: Vec<u8>| {
        Manifest::new(Image::tabled(
            4096,
            &[
                Stored {
                    encoding: ZSTD,
                    bytes: frame,
                    len: 4096,
                },
                Stored {
                    encoding: RAW,
                    bytes: tail.clone(),
                    len: 904,
                },
            ],
            digest,
        ))
        .v2()
    };
    let rule = "§3.1 zstd frame";
    let small: Vec<(&str, Vec<u8>, u8, &'static str)> = vec![
        (
            "zstd-good",
            rle_frame(zstd_header(SINGLE_SEGMENT, &[], 4096), 4096, 0xAA),
            0,
            "a compressed chunk (one single-segment frame of 4096 bytes) and a raw one",
        ),
        (
            "zstd-window-over-limit",
            rle_frame(zstd_header(WITH_WINDOW, &[WINDOW_9_MIB], 4096), 4096, 0xAA),
            33,
            "a frame whose Window_Descriptor declares 9 MiB: refused from its header",
        ),
        (
            "zstd-content-size-over",
            rle_frame(zstd_header(SINGLE_SEGMENT, &[], 4097), 4097, 0xAA),
            32,
            "a frame declaring 4097 bytes for a 4096-byte chunk: refused from its header",
        ),
        (
            "zstd-short-output",
            rle_frame(zstd_header(SINGLE_SEGMENT, &[], 4095), 4095, 0xAA),
            32,
            "a frame that decodes to 4095 bytes for a 4096-byte chunk",
        ),
        (
            "zstd-dictionary",
            rle_frame(
                zstd_header(SINGLE_SEGMENT | 0x01, &[0x07], 4096),
                4096,
                0xAA,
            ),
            33,
            "a frame declaring Dictionary_ID 7: refused from its header",
        ),
        (
            "zstd-two-frames",
            [
                rle_frame(zstd_header(SINGLE_SEGMENT, &[], 2048), 2048, 0xAA),
                rle_frame(zstd_header(SINGLE_SEGMENT, &[], 2048), 2048, 0xAA),
            ]
            .concat(),
            33,
            "two frames of 2048 bytes for one chunk: not exactly one frame",
        ),
    ];
    for (name, frame, code, about) in small {
        out.add(name, sign(&two_chunks(frame))?, TRUST_A, code, rule, about);
    }

    // A chunk over the 8 MiB window: 9 MiB of zeros in one 16 MiB chunk, as RLE blocks.
    let nine: u32 = 9 << 20;
    let big = |frame: Vec<u8>| {
        Manifest::new(Image::tabled(
            16 << 20,
            &[Stored {
                encoding: ZSTD,
                bytes: frame,
                len: nine,
            }],
            sha256(&vec![0; 9 << 20]),
        ))
        .v2()
    };
    out.add(
        "zstd-9mib-window-8mib",
        sign(&big(rle_frame(
            zstd_header(WITH_WINDOW, &[WINDOW_8_MIB], nine),
            nine,
            0,
        )))?,
        TRUST_A,
        0,
        rule,
        "a 9 MiB chunk as a frame with an 8 MiB window: accepted",
    );
    out.add(
        "zstd-9mib-single-segment",
        sign(&big(rle_frame(
            zstd_header(SINGLE_SEGMENT, &[], nine),
            nine,
            0,
        )))?,
        TRUST_A,
        33,
        rule,
        "the same 9 MiB chunk as a single-segment frame, whose window is its content size \
         (RFC 8878): over 8 MiB, refused from its header",
    );

    let table_rule = "§3.1 chunk table";
    let frame = rle_frame(zstd_header(SINGLE_SEGMENT, &[], 4096), 4096, 0xAA);
    let mut unknown = two_chunks(frame);
    if let Some(table) = unknown.images.first_mut().and_then(|i| i.table.as_mut()) {
        table[0] = 2;
    }
    out.add(
        "chunk-table-unknown-encoding",
        sign(&unknown)?,
        TRUST_A,
        10,
        table_rule,
        "a chunk table record with encoding 2: malformed",
    );
    let not_smaller = Manifest::new(Image::tabled(
        4096,
        &[Stored {
            encoding: ZSTD,
            bytes: pseudo_random(1000, 23),
            len: 1000,
        }],
        sha256(&pseudo_random(1000, 23)),
    ))
    .v2();
    out.add(
        "chunk-table-zstd-not-smaller",
        sign(&not_smaller)?,
        TRUST_A,
        10,
        table_rule,
        "a zstd record whose stored length equals its decompressed length: invalid",
    );
    Ok(())
}

/// Format version 3 (FORMAT.md §3.3): a chunk table that lays out content-defined chunks.
fn variable_chunk_vectors(out: &mut Out, k: &Keys) -> Result<(), Error> {
    let sign = |m: &Manifest| Package::new(m).signed(&[Entry::Good(&k.a)]);
    let rule = "§3.3 content-defined chunks";
    let data = pseudo_random(9000, 31);
    // Raw chunks of 1500, 4096 and 3404 bytes: not the fixed layout of 4096-byte chunks.
    let image = |lens: &[u32]| {
        let mut at = 0usize;
        let chunks: Vec<Stored> = lens
            .iter()
            .map(|&len| {
                let end = at.saturating_add(usize::try_from(len).unwrap_or(usize::MAX));
                let bytes = data
                    .get(at..end.min(data.len()))
                    .unwrap_or_default()
                    .to_vec();
                at = end;
                Stored {
                    encoding: RAW,
                    bytes,
                    len,
                }
            })
            .collect();
        Image::tabled(4096, &chunks, sha256(&data))
    };
    let good = Manifest::new(image(&[1500, 4096, 3404])).version(3);
    out.add(
        "cdc-good",
        sign(&good)?,
        TRUST_A,
        0,
        rule,
        "version 3: raw chunks of 1500, 4096 and 3404 bytes laid out by the chunk table",
    );
    out.add(
        "cdc-as-version-2",
        sign(&Manifest::new(image(&[1500, 4096, 3404])).v2())?,
        TRUST_A,
        10,
        rule,
        "the same chunks declared as version 2, whose chunks are in the fixed layout: a version-2 \
         reader would find other chunks, so the version is invalid",
    );
    out.add(
        "cdc-chunk-over-chunk-size",
        sign(&Manifest::new(image(&[1500, 4097, 3403])).version(3))?,
        TRUST_A,
        10,
        rule,
        "a chunk of 4097 bytes where the chunk size (the largest chunk) is 4096",
    );
    let short = Manifest::new(image(&[1500, 4096, 3404])).version(3);
    let mut short = short;
    if let Some(first) = short.images.first_mut() {
        first.size = 9001;
    }
    out.add(
        "cdc-layout-short-of-size",
        sign(&short)?,
        TRUST_A,
        10,
        rule,
        "chunks laying out 9000 bytes for an image of 9001",
    );
    Ok(())
}

/// The source image of the delta vectors: three 4096-byte chunks.
fn delta_source() -> Vec<u8> {
    pseudo_random(3 * 4096, 41)
}

/// A delta image (FORMAT.md §3.4) of three chunks against [`delta_source`]: chunk 0 copied from
/// the source at `copy_offset`; chunk 1 a patch against the source's last 4096 bytes, whose
/// frame (RLE blocks, so its bytes do not depend on a compressor) decodes to 4096 bytes of 0x5A
/// and whose signed digest is `patched_digest`'s; chunk 2 1000 raw bytes.
fn delta_image(copy_offset: u64, patched_digest: &[u8]) -> Image {
    let source = delta_source();
    let copied = source.get(4096..8192).unwrap_or_default().to_vec();
    let patched = vec![0x5A; 4096];
    let frame = rle_frame(zstd_header(SINGLE_SEGMENT, &[], 4096), 4096, 0x5A);
    let raw = pseudo_random(1000, 43);
    let mut table = Vec::new();
    for (encoding, stored, len) in [(2u8, 0u32, 4096u32), (3, 0, 4096), (RAW, 1000, 1000)] {
        let stored = if encoding == 3 {
            u32::try_from(frame.len()).unwrap_or(u32::MAX)
        } else {
            stored
        };
        table.push(encoding);
        table.extend_from_slice(&stored.to_be_bytes());
        table.extend_from_slice(&len.to_be_bytes());
    }
    let references = [
        &copy_offset.to_be_bytes()[..],
        &4096u32.to_be_bytes(),
        &[0; 32],
        &8192u64.to_be_bytes(),
        &4096u32.to_be_bytes(),
        &sha256(&frame),
    ]
    .concat();
    let image = [copied.as_slice(), &patched, &raw].concat();
    Image {
        size: u64::try_from(image.len()).unwrap_or(u64::MAX),
        chunk_size: 4096,
        digest: sha256(&image),
        chunk_digests: [sha256(&copied), sha256(patched_digest), sha256(&raw)].concat(),
        table: Some(table),
        source: Some(
            [
                uint(u64::try_from(source.len()).unwrap_or(u64::MAX)),
                octets(&sha256(&source)),
                octets(&references),
            ]
            .concat(),
        ),
        stored: [frame, raw].concat(),
    }
}

fn delta_vectors(out: &mut Out, k: &Keys) -> Result<(), Error> {
    let sign = |m: &Manifest| Package::new(m).signed(&[Entry::Good(&k.a)]);
    let rule = "§3.4 delta packages";
    out.files
        .push(("sources/delta-source.bin".into(), delta_source()));
    let mut other = delta_source();
    if let Some(byte) = other.get_mut(100) {
        *byte ^= 1;
    }
    out.files.push(("sources/delta-other.bin".into(), other));
    let good = Manifest::new(delta_image(4096, &[0x5A; 4096])).version(4);
    let good_bytes = sign(&good)?;
    out.add(
        "delta-good",
        good_bytes.clone(),
        TRUST_A,
        0,
        rule,
        "version 4, streamed against its source: a chunk copied from the source, a patch, a raw \
         chunk (readers of versions 1 to 3 refuse it from the header: unsupported_format)",
    );
    out.against("delta-source.bin");
    out.again(
        "delta-good",
        TRUST_A,
        34,
        rule,
        "the same package streamed against an image that is not its declared source (one byte \
         differs): refused before any chunk",
    );
    out.against("delta-other.bin");
    out.add(
        "delta-patch-output-mismatch",
        sign(&Manifest::new(delta_image(4096, &[0x5B; 4096])).version(4))?,
        TRUST_A,
        35,
        rule,
        "the patch decodes (its frame matches its frame digest), but not to the chunk's signed \
         digest",
    );
    out.against("delta-source.bin");
    out.add(
        "delta-source-offset-out-of-range",
        sign(&Manifest::new(delta_image(8193, &[0x5A; 4096])).version(4))?,
        TRUST_A,
        10,
        rule,
        "a chunk copied from offset 8193 of a 12288-byte source: it would read past its end",
    );
    out.against("delta-source.bin");
    let mut frame_changed = good_bytes;
    // The payload's first 13 bytes are the patch frame; the last 1000 the raw chunk.
    let at = frame_changed.len().saturating_sub(1000 + 12);
    if let Some(byte) = frame_changed.get_mut(at) {
        *byte ^= 0x01;
    }
    out.add(
        "delta-patch-frame-corrupt",
        frame_changed,
        TRUST_A,
        30,
        rule,
        "a byte of the patch frame changed: it no longer matches its signed frame digest, and \
         the decoder never sees it",
    );
    out.against("delta-source.bin");
    out.add(
        "delta-declared-version-3",
        sign(&Manifest::new(delta_image(4096, &[0x5A; 4096])).version(3))?,
        TRUST_A,
        10,
        rule,
        "the delta's manifest declared as version 3, as a version-3 reader would take it: chunk \
         encoding 2 is unknown there",
    );
    Ok(())
}

fn rotation_vectors(out: &mut Out, k: &Keys) -> Result<(), Error> {
    let c_spki = k.c.verifying_key().to_spki_der();
    let public_key = |spki: &[u8]| tlv(0xA0, spki);
    // A SEQUENCE of `len` bytes in all that no reader can take for a key or a certificate.
    let filler = |len: usize| {
        let header = der_header(0x30, len - 4);
        [header, vec![0; len - 4]].concat()
    };
    let rotation = |anchors: &[Vec<u8>]| {
        let list: Vec<u8> = anchors.concat();
        tlv(0xA1, &[uint(1), uint(1), tlv(0x30, &list)].concat())
    };
    let rule = "§3.2 anchors";
    let cases: Vec<Case<Vec<Vec<u8>>, bool>> = vec![
        (
            "rotation-good",
            vec![public_key(&c_spki)],
            true,
            0,
            "§3.2 rotation rule",
            "rotates to {C} (version 1, threshold 1), signed by current A and new C: accepted",
        ),
        (
            "rotation-not-proven",
            vec![public_key(&c_spki)],
            false,
            28,
            "§3.2 rotation rule",
            "rotates to {C}, signed by A only: the new set did not sign, refused",
        ),
        (
            "rotation-bare-spki",
            vec![c_spki.clone()],
            true,
            28,
            rule,
            "C's SubjectPublicKeyInfo without the [0] wrapper: read as a certificate, which it \
             is not, refused",
        ),
        (
            "rotation-same-key-two-encodings",
            vec![public_key(&c_spki), public_key(&compressed_spki(&k.c)?)],
            true,
            28,
            rule,
            "C twice, with an uncompressed and a compressed point: not byte-identical, but one \
             key, refused",
        ),
        (
            "rotation-byte-identical-anchors",
            vec![public_key(&c_spki), public_key(&c_spki)],
            true,
            10,
            rule,
            "the same [0] anchor twice: invalid",
        ),
        (
            "rotation-anchor-16384",
            vec![public_key(&filler(16 * 1024)), public_key(&c_spki)],
            true,
            28,
            rule,
            "an anchor whose inner SEQUENCE is exactly MAX_ANCHOR_LEN (its [0] wrapper 4 more): \
             within the format's limit, but not a key, refused",
        ),
        (
            "rotation-anchor-16385",
            vec![public_key(&filler(16 * 1024 + 1)), public_key(&c_spki)],
            true,
            12,
            rule,
            "an anchor whose inner SEQUENCE is MAX_ANCHOR_LEN + 1: limit exceeded",
        ),
    ];
    for (name, anchors, new_signs, code, rule, about) in cases {
        let mut m = base_manifest();
        m.tail = rotation(&anchors);
        let mut entries = vec![Entry::Good(&k.a)];
        if new_signs {
            entries.push(Entry::Good(&k.c));
        }
        out.add(
            name,
            Package::new(&m).signed(&entries)?,
            TRUST_A,
            code,
            rule,
            about,
        );
    }
    Ok(())
}
