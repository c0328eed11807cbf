//! The package layer through the public API: `PackageRef::parse`, the writer side, and
//! `read_prefix` on streams.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::cast_possible_truncation,
    missing_docs
)]
// `read_prefix` needs the `std` feature (on by default).
#![cfg(feature = "std")]

use std::io::{self, Read};

use veriflash_format::{
    Error, HEADER_LEN, Header, ImageSpec, Manifest, ObjectIdentifier, PackageRef, ReadError,
    SignatureBlock, SignatureEntry, encode_prefix, parse_signed_message, read_prefix,
    signed_message,
};

fn manifest() -> Manifest {
    Manifest {
        product: "acme-lte".into(),
        chipset: "MDM9207".into(),
        hardware_revisions: vec![],
        software_version: "3.1".into(),
        security_version: 12,
        images: vec![
            ImageSpec {
                name: "sbl".into(),
                partition: "sbl1".into(),
                size: 5000,
                chunk_size: 4096,
                digest: [1; 32],
                chunk_digests: vec![[2; 32], [3; 32]],
                stored_chunks: Vec::new(),
                source: None,
                extensions: vec![],
            },
            ImageSpec {
                name: "modem".into(),
                partition: "modem".into(),
                size: 100,
                chunk_size: 4096,
                digest: [4; 32],
                chunk_digests: vec![[5; 32]],
                stored_chunks: Vec::new(),
                source: None,
                extensions: vec![],
            },
        ],
        extensions: vec![],
        trust_rotation: None,
    }
}

fn signatures() -> SignatureBlock {
    SignatureBlock {
        entries: vec![SignatureEntry {
            algorithm: ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11"),
            key_id: [9; 32],
            signature: vec![0x5A; 256],
            certificates: vec![vec![0x30, 0x03, 0x02, 0x01, 0x01]],
        }],
    }
}

struct Built {
    package: Vec<u8>,
    manifest_len: usize,
    block_len: usize,
}

fn build() -> Built {
    let message = signed_message(&manifest()).unwrap();
    let prefix = encode_prefix(&message, &signatures()).unwrap();
    let manifest_len = message.len() - HEADER_LEN;
    let block_len = prefix.len() - message.len();
    let mut package = prefix;
    package.extend((0..5100u32).map(|i| i as u8));
    Built {
        package,
        manifest_len,
        block_len,
    }
}

#[test]
fn parses_a_package_into_its_sections() {
    let b = build();
    let p = PackageRef::parse(&b.package).unwrap();
    let message = signed_message(&manifest()).unwrap();
    assert_eq!(p.signed_message(), &message[..]);
    assert_eq!(p.header(), &Header::new(b.manifest_len as u32, 5100));
    assert_eq!(p.manifest_der(), &message[HEADER_LEN..]);
    assert_eq!(p.signature_block(), &signatures());
    assert_eq!(p.signature_block_der(), &signatures().to_der().unwrap()[..]);
    assert_eq!(
        p.payload_offset(),
        HEADER_LEN + b.manifest_len + b.block_len
    );
    assert_eq!(p.payload(), &b.package[p.payload_offset()..]);
    assert_eq!(p.payload().len(), 5100);
    let m = Manifest::from_der(p.manifest_der()).unwrap();
    m.check_payload_len(p.header()).unwrap();
    assert_eq!(m, manifest());
}

#[test]
fn signed_message_is_header_then_manifest() {
    let m = manifest();
    let der = m.to_der().unwrap();
    let message = signed_message(&m).unwrap();
    assert_eq!(
        &message[..HEADER_LEN],
        &Header::new(der.len() as u32, 5100).to_bytes()
    );
    assert_eq!(&message[HEADER_LEN..], &der[..]);
    assert_eq!(parse_signed_message(&message).unwrap().1, m);
}

#[test]
fn rejects_package_with_trailing_data() {
    let mut b = build();
    let len = b.package.len() as u64;
    b.package.push(0);
    assert_eq!(
        PackageRef::parse(&b.package).unwrap_err(),
        Error::TrailingData {
            section: "package",
            offset: len
        }
    );
}

#[test]
fn rejects_package_truncated_anywhere_naming_the_section() {
    let b = build();
    let manifest_end = HEADER_LEN + b.manifest_len;
    let block_end = manifest_end + b.block_len;
    for len in 0..b.package.len() {
        let expected_section = if len < HEADER_LEN {
            "header"
        } else if len < manifest_end {
            "manifest"
        } else if len < block_end {
            "signature block"
        } else {
            "payload"
        };
        match PackageRef::parse(&b.package[..len]) {
            Err(Error::Truncated {
                section,
                needed,
                available,
            }) => {
                assert_eq!(section, expected_section, "length {len}");
                assert!(needed > available, "length {len}");
            }
            other => panic!("length {len}: {other:?}"),
        }
    }
}

#[test]
fn truncation_reports_exact_section_sizes() {
    let b = build();
    let manifest_end = HEADER_LEN + b.manifest_len;
    assert_eq!(
        PackageRef::parse(&b.package[..manifest_end - 1]).unwrap_err(),
        Error::Truncated {
            section: "manifest",
            needed: b.manifest_len as u64,
            available: b.manifest_len as u64 - 1
        }
    );
    let block_end = manifest_end + b.block_len;
    assert_eq!(
        PackageRef::parse(&b.package[..block_end + 10]).unwrap_err(),
        Error::Truncated {
            section: "payload",
            needed: 5100,
            available: 10
        }
    );
}

#[test]
fn package_parse_checks_the_header_first() {
    let mut b = build();
    b.package[0] = b'P';
    assert_eq!(PackageRef::parse(&b.package).unwrap_err(), Error::BadMagic);
    assert_eq!(PackageRef::parse(b"%PDF-1.7").unwrap_err(), Error::BadMagic);
}

#[test]
fn package_parse_checks_the_signature_block() {
    let b = build();
    let at = HEADER_LEN + b.manifest_len;
    let mut bad = b.package.clone();
    bad[at] = 0x31;
    assert!(matches!(
        PackageRef::parse(&bad),
        Err(Error::Malformed {
            section: "signature block",
            offset: Some(0),
            ..
        })
    ));
}

#[test]
fn rejects_signed_message_with_payload_len_mismatch() {
    let mut message = signed_message(&manifest()).unwrap();
    message[31] ^= 1;
    assert_eq!(
        parse_signed_message(&message).unwrap_err(),
        Error::PayloadLenMismatch {
            header: 5101,
            manifest: 5100
        }
    );
    assert_eq!(
        encode_prefix(&message, &signatures()).unwrap_err(),
        Error::PayloadLenMismatch {
            header: 5101,
            manifest: 5100
        }
    );
}

#[test]
fn encode_prefix_rechecks_the_signed_message() {
    let message = signed_message(&manifest()).unwrap();
    let sigs = signatures();
    assert!(matches!(
        encode_prefix(&message[..message.len() - 1], &sigs),
        Err(Error::Truncated {
            section: "manifest",
            ..
        })
    ));
    let mut longer = message.clone();
    longer.push(0);
    assert!(matches!(
        encode_prefix(&longer, &sigs),
        Err(Error::TrailingData {
            section: "manifest",
            ..
        })
    ));
    assert!(matches!(
        encode_prefix(&message[..20], &sigs),
        Err(Error::Truncated {
            section: "header",
            ..
        })
    ));
    let mut flagged = message.clone();
    flagged[15] = 1;
    assert_eq!(
        encode_prefix(&flagged, &sigs).unwrap_err(),
        Error::UnknownFlags { flags: 1 }
    );
    assert!(encode_prefix(&message, &SignatureBlock { entries: vec![] }).is_err());
}

// ---------------------------------------------------------------------------------------------
// read_prefix

/// A reader over `data` that fails any read that asks for a byte at or beyond `limit`,
/// optionally handing out one byte at a time and interrupting every other call.
struct Guarded<'a> {
    data: &'a [u8],
    pos: usize,
    limit: usize,
    trickle: bool,
    calls: usize,
}

impl Read for Guarded<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.calls += 1;
        if self.trickle && self.calls.is_multiple_of(2) {
            return Err(io::ErrorKind::Interrupted.into());
        }
        if self.pos + buf.len() > self.limit {
            return Err(io::Error::other(format!(
                "read of {} bytes at {} goes past the prefix ({})",
                buf.len(),
                self.pos,
                self.limit
            )));
        }
        let n = if self.trickle {
            1.min(buf.len())
        } else {
            buf.len()
        };
        let n = n.min(self.data.len().saturating_sub(self.pos));
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[test]
fn read_prefix_never_reads_a_payload_byte() {
    let b = build();
    let prefix_len = HEADER_LEN + b.manifest_len + b.block_len;
    for trickle in [false, true] {
        let mut reader = Guarded {
            data: &b.package,
            pos: 0,
            limit: prefix_len,
            trickle,
            calls: 0,
        };
        let prefix = read_prefix(&mut reader).unwrap();
        assert_eq!(reader.pos, prefix_len, "left at the first payload byte");
        let p = PackageRef::parse(&b.package).unwrap();
        assert_eq!(prefix.header, *p.header());
        assert_eq!(prefix.signed_message, p.signed_message());
        assert_eq!(prefix.manifest_der(), p.manifest_der());
        assert_eq!(&prefix.signature_block, p.signature_block());
        assert_eq!(prefix.signature_block_der, p.signature_block_der());
        assert_eq!(prefix.payload_offset(), p.payload_offset() as u64);
    }
}

#[test]
fn read_prefix_reports_truncation_naming_the_section() {
    let b = build();
    let manifest_end = HEADER_LEN + b.manifest_len;
    let block_end = manifest_end + b.block_len;
    for len in 0..block_end {
        let mut reader = &b.package[..len];
        let expected_section = if len < HEADER_LEN {
            "header"
        } else if len < manifest_end {
            "manifest"
        } else {
            "signature block"
        };
        match read_prefix(&mut reader) {
            Err(ReadError::Format(Error::Truncated {
                section,
                needed,
                available,
            })) => {
                assert_eq!(section, expected_section, "length {len}");
                assert!(needed > available, "length {len}");
                let section_start = match section {
                    "header" => 0,
                    "manifest" => HEADER_LEN,
                    _ => manifest_end,
                };
                assert_eq!(available, (len - section_start) as u64, "length {len}");
            }
            other => panic!("length {len}: {other:?}"),
        }
    }
}

#[test]
fn read_prefix_passes_io_errors_through() {
    struct Broken;
    impl Read for Broken {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Err(io::ErrorKind::ConnectionReset.into())
        }
    }
    match read_prefix(&mut Broken) {
        Err(ReadError::Io(e)) => assert_eq!(e.kind(), io::ErrorKind::ConnectionReset),
        other => panic!("{other:?}"),
    }
}

#[test]
fn read_prefix_refuses_a_bad_header_before_reading_more() {
    let mut b = build();
    b.package[12] = 0x40;
    let mut reader = Guarded {
        data: &b.package,
        pos: 0,
        limit: HEADER_LEN,
        trickle: false,
        calls: 0,
    };
    match read_prefix(&mut reader) {
        Err(ReadError::Format(Error::UnknownFlags { flags })) => assert_eq!(flags, 0x4000_0000),
        other => panic!("{other:?}"),
    }
}

#[test]
fn read_prefix_with_a_lying_manifest_len_stops_at_the_end_of_the_stream() {
    let header = Header::new(veriflash_format::limits::MAX_MANIFEST_LEN, 1).to_bytes();
    let mut stream = header.to_vec();
    stream.extend_from_slice(&[0x30; 100]);
    match read_prefix(&mut &stream[..]) {
        Err(ReadError::Format(Error::Truncated {
            section: "manifest",
            needed,
            available: 100,
        })) => assert_eq!(
            needed,
            u64::from(veriflash_format::limits::MAX_MANIFEST_LEN)
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn read_error_displays_and_chains() {
    let e = ReadError::Format(Error::BadMagic);
    assert!(e.to_string().contains("bad magic"));
    assert!(std::error::Error::source(&e).is_some());
}
