//! Property tests for the parsers that take device bytes: the Firehose stream splitter and
//! document parser, the MIBIB partition table, Sahara packets.

#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use veriflash_mdm9x07::firehose::{self, Element, Splitter};
use veriflash_mdm9x07::mibib::{Entry, Table};
use veriflash_mdm9x07::sahara::Packet;

fn element() -> impl Strategy<Value = Element> {
    (
        prop::sample::select(vec!["log", "response", "program", "read", "configure"]),
        prop::collection::vec(("[A-Za-z_]{1,12}", "[ -~]{0,40}"), 0..5),
    )
        .prop_map(|(name, attrs)| {
            attrs
                .into_iter()
                .fold(Element::new(name), |e, (k, v)| e.attr(&k, v))
        })
}

proptest! {
    /// However a stream of documents and raw data is cut into reads, the splitter yields the
    /// same documents and leaves the raw bytes for the caller, byte for byte.
    #[test]
    fn splitter_is_independent_of_read_boundaries(
        docs in prop::collection::vec(prop::collection::vec(element(), 1..4), 1..5),
        raw in prop::collection::vec(any::<u8>(), 0..200),
        cuts in prop::collection::vec(1usize..64, 1..40),
    ) {
        let mut stream = Vec::new();
        for d in &docs {
            stream.extend(firehose::document(d));
        }
        stream.extend_from_slice(&raw);
        let mut s = Splitter::new();
        let mut got = Vec::new();
        let mut at = 0;
        let mut i = 0;
        while at < stream.len() {
            let n = cuts[i % cuts.len()].min(stream.len() - at);
            s.push(&stream[at..at + n]);
            at += n;
            i += 1;
            while got.len() < docs.len() {
                match s.next_document().unwrap() {
                    Some(d) => got.push(d),
                    None => break,
                }
            }
        }
        prop_assert_eq!(&got, &docs);
        prop_assert_eq!(s.take_raw(usize::MAX), raw);
    }

    /// Arbitrary bytes never panic the document parser or the splitter.
    #[test]
    fn firehose_parsers_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let _ = firehose::parse_document(&bytes);
        let mut s = Splitter::new();
        s.push(&bytes);
        let _ = s.next_document();
        let mut framed = b"<?xml version=\"1.0\" ?><data>".to_vec();
        framed.extend_from_slice(&bytes);
        framed.extend_from_slice(b"</data>");
        let _ = firehose::parse_document(&framed);
    }

    /// A table round-trips through its bytes; placing it never panics.
    #[test]
    fn mibib_tables_round_trip(
        entries in prop::collection::vec(
            ("0:[A-Za-z0-9_]{1,14}", any::<u32>(), any::<u32>(), any::<[u8; 3]>(), any::<u8>()),
            0..16,
        ),
        total in any::<u32>(),
    ) {
        let table = Table {
            version: 3,
            entries: entries
                .into_iter()
                .map(|(raw_name, offset, length, attrs, which_flash)| Entry {
                    raw_name, offset, length, attrs, which_flash,
                })
                .collect(),
        };
        let parsed = Table::parse(&table.encode()).unwrap();
        prop_assert_eq!(&parsed, &table);
        if let Ok(placed) = parsed.place(total) {
            for p in &placed {
                prop_assert!(u64::from(p.first_block) + u64::from(p.blocks) <= u64::from(total));
            }
        }
    }

    /// Arbitrary bytes never panic the MIBIB parser, also behind a valid header.
    #[test]
    fn mibib_parser_never_panics(
        bytes in prop::collection::vec(any::<u8>(), 0..4096),
        count in any::<u32>(),
        version in prop::sample::select(vec![3u32, 4, 5]),
    ) {
        let _ = Table::parse(&bytes);
        let mut framed = Vec::new();
        for w in [0x55EE_73AAu32, 0xE35E_BDDB, version, count % 200] {
            framed.extend_from_slice(&w.to_le_bytes());
        }
        framed.extend_from_slice(&bytes);
        if let Ok(t) = Table::parse(&framed) {
            let _ = t.place(1 << 12);
        }
    }

    /// Arbitrary bytes never panic the Sahara decoder; what decodes re-encodes the same.
    #[test]
    fn sahara_decoder_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        if let Ok(p) = Packet::decode(&bytes) {
            // Reserved words are written as zero: compare the defined prefix.
            let again = p.encode();
            prop_assert_eq!(again.len(), bytes.len());
            prop_assert_eq!(Packet::decode(&again).unwrap(), p);
        }
    }
}

/// A programmer that answers every command with an ACK in raw mode, then sends `script`'s
/// transfers: whatever a device might send as read data.
struct Scripted {
    script: std::collections::VecDeque<Vec<u8>>,
    commanded: bool,
}

impl veriflash_mdm9x07::transport::Endpoint for Scripted {
    fn receive(&mut self, _: &[u8]) {
        self.commanded = true;
    }

    fn transmit(&mut self) -> Option<Vec<u8>> {
        if std::mem::take(&mut self.commanded) {
            return Some(firehose::document(&[Element::new("response")
                .attr("value", "ACK")
                .attr("rawmode", true)]));
        }
        self.script.pop_front()
    }
}

/// One transfer a device may send while the host reads: data, a Firehose answer, or one
/// that only looks like the start of one.
fn transfer() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..300),
        prop::collection::vec(element(), 1..3).prop_map(|d| firehose::document(&d)),
        "[ -~]{0,40}".prop_map(|t| format!("<?xml{t}").into_bytes()),
    ]
}

proptest! {
    /// Whatever a device sends as read data — answers where pages should be, XML in the pages,
    /// transfers cut anywhere — a read ends (the in-memory link times out at once) without a
    /// panic, never hands out more than it asked for, and a read to the last good block ends
    /// on a page boundary.
    #[test]
    fn a_read_takes_any_device_bytes_without_panicking_or_overrunning(
        script in prop::collection::vec(transfer(), 0..8),
        pages in 1u64..4,
        to_last_good in any::<bool>(),
    ) {
        use std::sync::{Arc, Mutex};
        use veriflash_mdm9x07::driver::{Connection, Timeouts};
        use veriflash_mdm9x07::transport::{Framing, MemoryTransport};
        let page = 64u32;
        let device = Arc::new(Mutex::new(Scripted {
            script: script.into(),
            commanded: false,
        }));
        let mut conn = Connection::new(
            MemoryTransport::new(device, Framing::Packet),
            Timeouts::default(),
        );
        let mut got = 0u64;
        let mut sink = |b: &[u8]| got += b.len() as u64;
        if to_last_good {
            if let Ok(n) = conn.read_to_last_good_block(0, pages, page, &mut sink) {
                prop_assert_eq!(n % u64::from(page), 0);
                prop_assert!(n <= pages * u64::from(page));
            }
        } else if conn.read(0, pages, page, &mut sink).is_ok() {
            prop_assert_eq!(got, pages * u64::from(page));
        }
        prop_assert!(got <= pages * u64::from(page));
    }
}
