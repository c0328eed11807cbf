//! The only ways a raw pointer from C becomes a Rust reference or value: null- and
//! alignment-checking helpers, one ownership kind (`Box`) per handle, and the panic boundary
//! every exported function runs its body in (after rustls-ffi's `ffi.rs` and `panic.rs`).

use std::any::Any;
use std::ffi::{CStr, c_char};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::ptr::NonNull;

use crate::error::{
    FfiError, VERIFLASH_INVALID_ARGUMENT, VERIFLASH_INVALID_UTF8, VERIFLASH_NULL_POINTER,
    VERIFLASH_OK, VERIFLASH_PANIC, clear_last_error, set_last_error, veriflash_result,
};

/// Ties an opaque C handle type to the Rust value it stands for. Every handle is a
/// `Box<Self::Inner>` handed to C with [`into_handle`] and taken back only by [`free`]: one
/// ownership kind per handle, so a handle can never be freed the wrong way.
pub(crate) trait Handle {
    /// The Rust value behind the handle.
    type Inner;
}

/// Gives `value` to C as a handle it must free with the handle's `*_free` function.
pub(crate) fn into_handle<H: Handle>(value: H::Inner) -> *mut H {
    Box::into_raw(Box::new(value)).cast::<H>()
}

/// Refuses a NULL or misaligned pointer to a `T`.
fn check<T>(ptr: *const T, arg: &'static str) -> Result<(), FfiError> {
    if ptr.is_null() {
        return Err(FfiError::new(
            VERIFLASH_NULL_POINTER,
            format!("argument '{arg}' is NULL"),
        ));
    }
    if !ptr.is_aligned() {
        return Err(FfiError::new(
            VERIFLASH_INVALID_ARGUMENT,
            format!("argument '{arg}' is not a valid pointer (misaligned)"),
        ));
    }
    Ok(())
}

/// Borrows the value behind a handle, refusing NULL.
///
/// # Safety
/// `ptr` is NULL or a handle of type `H` made by [`into_handle`] and not yet freed, and no other
/// thread mutates it for `'a`.
pub(crate) unsafe fn borrow<'a, H: Handle>(
    ptr: *const H,
    arg: &'static str,
) -> Result<&'a H::Inner, FfiError> {
    let inner = ptr.cast::<H::Inner>();
    check(inner, arg)?;
    // SAFETY: not NULL and aligned (checked above); by this function's contract it points to a
    // live `H::Inner` boxed by `into_handle` that nobody mutates for 'a.
    Ok(unsafe { &*inner })
}

/// Borrows the value behind a handle mutably, refusing NULL.
///
/// # Safety
/// `ptr` is NULL or a handle of type `H` made by [`into_handle`] and not yet freed, and nothing
/// else uses it for `'a` (C callers must not share a mutable handle between threads).
pub(crate) unsafe fn borrow_mut<'a, H: Handle>(
    ptr: *mut H,
    arg: &'static str,
) -> Result<&'a mut H::Inner, FfiError> {
    let inner = ptr.cast::<H::Inner>();
    check(inner, arg)?;
    // SAFETY: not NULL and aligned (checked above); by this function's contract it points to a
    // live `H::Inner` boxed by `into_handle` with no other reference to it for 'a.
    Ok(unsafe { &mut *inner })
}

/// Drops the value behind a handle. NULL is a no-op (so is a misaligned pointer, which cannot
/// have come from [`into_handle`]).
///
/// # Safety
/// `ptr` is NULL or a handle of type `H` made by [`into_handle`], not yet freed and not in use;
/// it must not be used again.
pub(crate) unsafe fn free<H: Handle>(ptr: *mut H) {
    let inner = ptr.cast::<H::Inner>();
    if inner.is_null() || !inner.is_aligned() {
        return;
    }
    // SAFETY: by this function's contract `inner` came from `Box::into_raw` in `into_handle`
    // and ownership comes back here exactly once.
    drop(unsafe { Box::from_raw(inner) });
}

/// An output parameter, checked for NULL before any work is done and written once, at the end,
/// only on success.
pub(crate) struct Out<T>(NonNull<T>);

impl<T> Out<T> {
    /// Checks an output pointer.
    ///
    /// # Safety
    /// `ptr` is NULL or valid for a write of one `T` until [`Out::write`] is called.
    pub(crate) unsafe fn new(ptr: *mut T, arg: &'static str) -> Result<Self, FfiError> {
        check(ptr, arg)?;
        NonNull::new(ptr).map(Self).ok_or_else(|| {
            FfiError::new(VERIFLASH_NULL_POINTER, format!("argument '{arg}' is NULL"))
        })
    }

    /// Writes the output (without reading or dropping what was there).
    pub(crate) fn write(self, value: T) {
        // SAFETY: `Out::new`'s contract: the pointer is valid for a write of one `T`; it is
        // non-NULL and aligned (checked there). `write` does not drop the old contents, which
        // may be uninitialised.
        unsafe { self.0.as_ptr().write(value) }
    }
}

/// A value that must stay on the thread that made it — a C caller's callback and its
/// `userdata`, a package read through a callback — handed to library code whose types demand
/// `Send` (the core's event sink and package stream are `Send` so a Rust embedder can move an
/// updater between threads).
///
/// The value is reached only through [`CallerThread::get_mut`], which answers `None` on any
/// other thread, and dropped only on its own thread (leaked, never dropped, elsewhere). So
/// whatever the library does with the wrapper, the C callbacks run on the thread that called
/// the veriflash function, as the header promises, and nothing that is not `Send` is used or
/// dropped on another thread.
pub(crate) struct CallerThread<T> {
    owner: std::thread::ThreadId,
    value: std::mem::ManuallyDrop<T>,
}

// SAFETY: moving a `CallerThread` to another thread moves only its bytes: the value inside is
// never touched there — `get_mut` refuses every thread but `owner`, and `Drop` leaks the value
// instead of dropping it off `owner`. What `Send` guards against (using a `!Send` value, such
// as a raw pointer, an `Rc` or a C callback, from two threads) cannot happen.
unsafe impl<T> Send for CallerThread<T> {}

impl<T> CallerThread<T> {
    /// Binds `value` to the calling thread.
    pub(crate) fn new(value: T) -> Self {
        Self {
            owner: std::thread::current().id(),
            value: std::mem::ManuallyDrop::new(value),
        }
    }

    /// The value, on the thread that made it; `None` on any other.
    pub(crate) fn get_mut(&mut self) -> Option<&mut T> {
        (std::thread::current().id() == self.owner).then_some(&mut *self.value)
    }
}

impl<T> Drop for CallerThread<T> {
    fn drop(&mut self) {
        if std::thread::current().id() == self.owner {
            // SAFETY: `value` is dropped here once and never used again (this is `drop`).
            unsafe { std::mem::ManuallyDrop::drop(&mut self.value) }
        }
        // On another thread the value is leaked: dropping it there could run a `!Send`
        // destructor off its thread.
    }
}

impl<R: std::io::Read> std::io::Read for CallerThread<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.get_mut().map_or_else(
            || {
                Err(std::io::Error::other(
                    "the package was read from another thread than the caller's",
                ))
            },
            |reader| reader.read(buf),
        )
    }
}

/// A NUL-terminated UTF-8 string argument.
///
/// # Safety
/// `ptr` is NULL or points to a NUL-terminated string that stays valid and unchanged for `'a`.
pub(crate) unsafe fn arg_str<'a>(
    ptr: *const c_char,
    arg: &'static str,
) -> Result<&'a str, FfiError> {
    check(ptr, arg)?;
    // SAFETY: not NULL (checked above); by this function's contract a NUL-terminated string
    // valid for 'a.
    let text = unsafe { CStr::from_ptr(ptr) };
    text.to_str()
        .map_err(|e| invalid_utf8(arg, e.valid_up_to()))
}

/// The error for a string argument that is not UTF-8.
pub(crate) fn invalid_utf8(arg: &'static str, valid_up_to: usize) -> FfiError {
    FfiError::new(
        VERIFLASH_INVALID_UTF8,
        format!("argument '{arg}' is not valid UTF-8 (invalid byte at offset {valid_up_to})"),
    )
}

/// A byte buffer argument.
///
/// # Safety
/// `ptr` is NULL or valid for reads of `len` bytes that stay unchanged for `'a`.
pub(crate) unsafe fn arg_bytes<'a>(
    ptr: *const u8,
    len: usize,
    arg: &'static str,
) -> Result<&'a [u8], FfiError> {
    check(ptr, arg)?;
    if isize::try_from(len).is_err() {
        return Err(FfiError::new(
            VERIFLASH_INVALID_ARGUMENT,
            format!("length of '{arg}' ({len}) exceeds the largest object size"),
        ));
    }
    // SAFETY: not NULL (checked above), `len` fits `isize`, and by this function's contract the
    // bytes are readable and unchanged for 'a.
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// Runs an exported function's body: clears the thread's last error, catches any panic, and
/// turns the outcome into a result code, recording the error for `veriflash_last_error_*`.
pub(crate) fn call(body: impl FnOnce() -> Result<(), FfiError>) -> veriflash_result {
    clear_last_error();
    let error = match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => return VERIFLASH_OK,
        Ok(Err(error)) => error,
        Err(payload) => panic_error(payload),
    };
    let code = error.code;
    set_last_error(error);
    code
}

/// Runs a body that returns a plain value (a free function, a version query) inside the panic
/// boundary, returning `fallback` if it panics. Leaves the last error alone.
pub(crate) fn call_plain<T>(fallback: T, body: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(value) => value,
        Err(payload) => {
            discard(payload);
            fallback
        }
    }
}

/// The error a caught panic becomes.
fn panic_error(payload: Box<dyn Any + Send>) -> FfiError {
    let detail = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".to_owned());
    discard(payload);
    FfiError::new(
        VERIFLASH_PANIC,
        format!("internal error (a panic was caught at the C boundary): {detail}"),
    )
}

/// Drops a panic payload without letting a panic in its destructor escape.
fn discard(payload: Box<dyn Any + Send>) {
    if catch_unwind(AssertUnwindSafe(move || drop(payload))).is_err() {
        // A payload whose destructor panics: its second payload is leaked on purpose.
    }
}

#[cfg(test)]
#[allow(clippy::panic, clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::error::last_error_code;

    #[test]
    fn a_panic_in_a_body_becomes_the_panic_code_and_a_message() {
        let code = call(|| panic!("boom"));
        assert_eq!(code, VERIFLASH_PANIC);
        assert_eq!(last_error_code(), VERIFLASH_PANIC);
        let code = call(|| std::panic::panic_any(42u8));
        assert_eq!(code, VERIFLASH_PANIC);
        assert_eq!(call(|| Ok(())), VERIFLASH_OK);
        assert_eq!(
            last_error_code(),
            VERIFLASH_OK,
            "success clears the last error"
        );
    }

    #[test]
    fn plain_bodies_fall_back_on_panic() {
        assert_eq!(call_plain(7u32, || panic!("boom")), 7);
        assert_eq!(call_plain(7u32, || 3), 3);
    }

    #[test]
    fn a_caller_thread_value_is_reached_and_dropped_only_on_its_thread() {
        use std::io::Read as _;
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};

        struct Counted(Arc<AtomicUsize>);
        impl Drop for Counted {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let drops = Arc::new(AtomicUsize::new(0));

        let mut here = CallerThread::new(Counted(Arc::clone(&drops)));
        assert!(here.get_mut().is_some());
        drop(here);
        assert_eq!(drops.load(Ordering::SeqCst), 1, "dropped on its own thread");

        let mut there = CallerThread::new(Counted(Arc::clone(&drops)));
        let mut reader = CallerThread::new(std::io::Cursor::new(vec![1u8, 2, 3]));
        std::thread::spawn(move || {
            assert!(there.get_mut().is_none());
            let mut buf = [0u8; 3];
            assert!(reader.read(&mut buf).is_err(), "not read off its thread");
            drop(there);
        })
        .join()
        .unwrap();
        assert_eq!(
            drops.load(Ordering::SeqCst),
            1,
            "leaked, not dropped, on another thread"
        );

        let mut reader = CallerThread::new(std::io::Cursor::new(vec![1u8, 2, 3]));
        let mut buf = Vec::new();
        reader.read_to_end(&mut buf).unwrap();
        assert_eq!(buf, [1, 2, 3]);
    }

    #[test]
    fn misaligned_pointers_are_refused() {
        let word = [0u64; 2];
        let odd = word.as_ptr().cast::<u8>().wrapping_add(1).cast::<u64>();
        let err = check(odd, "x").unwrap_err();
        assert_eq!(err.code, VERIFLASH_INVALID_ARGUMENT);
        let err = check(std::ptr::null::<u64>(), "x").unwrap_err();
        assert_eq!(err.code, VERIFLASH_NULL_POINTER);
    }
}
