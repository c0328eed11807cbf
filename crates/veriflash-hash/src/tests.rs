//! Unit tests for internals that the public API cannot observe.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::io::alloc_buffer;

#[test]
fn chunk_buffer_is_exactly_one_chunk() {
    for len in [0, 1, 4096, 1024 * 1024] {
        let buffer = alloc_buffer(len).unwrap();
        assert_eq!(buffer.len(), len);
        assert_eq!(buffer.capacity(), len);
    }
}

#[test]
fn absurd_buffer_is_an_error_not_an_abort() {
    assert!(matches!(
        alloc_buffer(usize::MAX),
        Err(crate::Error::OutOfMemory { .. })
    ));
}
