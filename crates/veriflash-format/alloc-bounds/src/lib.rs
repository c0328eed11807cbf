//! Test-only: a global allocator that counts live heap bytes and their peak, for the
//! allocation-bound tests in `tests/alloc_bounds.rs`.
//!
//! The counters are process-wide, so measure from one thread at a time.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

/// [`System`], counting the bytes it has handed out and not yet taken back.
#[derive(Debug)]
pub struct CountingAlloc;

fn grew(by: usize) {
    let now = CURRENT.fetch_add(by, Ordering::SeqCst).saturating_add(by);
    PEAK.fetch_max(now, Ordering::SeqCst);
}

fn shrank(by: usize) {
    CURRENT.fetch_sub(by, Ordering::SeqCst);
}

// The only unsafe code: the trait is unsafe to implement, and each method forwards to `System`
// with the caller's own arguments, so `System`'s guarantees are passed through unchanged.
#[allow(unsafe_code)]
// SAFETY: every method delegates to `System` with the same layout and pointers; the counters
// have no effect on the memory returned.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, which `System` requires.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            grew(layout.size());
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            grew(layout.size());
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by this allocator (so by `System`) with `layout`.
        unsafe { System.dealloc(ptr, layout) };
        shrank(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr`/`layout` come from this allocator and the caller upholds `realloc`'s
        // contract for `new_size`.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            grew(new_size);
            shrank(layout.size());
        }
        new
    }
}

/// Bytes currently allocated.
#[must_use]
pub fn current() -> usize {
    CURRENT.load(Ordering::SeqCst)
}

/// Starts a new measurement: the peak becomes the current level, which is returned.
pub fn reset_peak() -> usize {
    let now = current();
    PEAK.store(now, Ordering::SeqCst);
    now
}

/// The highest level reached since the last [`reset_peak`].
#[must_use]
pub fn peak() -> usize {
    PEAK.load(Ordering::SeqCst)
}
