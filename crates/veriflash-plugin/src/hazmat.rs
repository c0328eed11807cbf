//! Making a [`Chunk`]: for the pipeline (`veriflash-core`) only.
//!
//! A plugin trusts every [`Chunk`] it is handed to hold bytes that matched a signed digest of
//! the package it is installing. The pipeline calls [`bind`] exactly once per chunk, right
//! after that check, with the package's id and the image's name and partition from the verified
//! manifest. Nothing else should call it: a plugin never needs to, and a test that does is a
//! test of the plugin alone (`veriflash-core`'s test suite checks that no other crate of this
//! workspace does).

use veriflash_hash::{Digest, VerifiedChunk};

use crate::Chunk;

/// Binds a chunk that matched its signed digest to the package (`package_id`), the image and
/// the partition it was verified for.
#[must_use]
pub fn bind<'a>(
    package_id: &'a Digest,
    image: &'a str,
    partition: &'a str,
    verified: VerifiedChunk<'a>,
) -> Chunk<'a> {
    Chunk {
        package_id,
        image,
        partition,
        verified,
    }
}
