//! Exclusive file locks taken without queueing behind their holder, for the files a run claims
//! for itself: a file device, a partial download.
//!
//! An `flock` belongs to the open file, and a fork shares the open file: a program that starts a
//! process on one thread while it holds such a lock on another (a C program embedding the
//! library, a test harness, a station) leaves the lock held by the child for the moment between
//! its fork and its `exec`, where every descriptor marked close-on-exec is closed — after the
//! run that took the lock has let it go. So a held lock is tried again for [`PATIENCE`] before
//! its file is called busy (seen as a spurious "busy" right after an install, under load, in
//! this project's own tests).

use std::fs::{File, TryLockError};
use std::io;
use std::time::{Duration, Instant};

/// How long [`lock_exclusive`] keeps trying a lock that is held: long enough for a child forked
/// while it was held to reach its `exec`, short enough that a file really in use is refused at
/// once for a person.
pub const PATIENCE: Duration = Duration::from_millis(500);

/// Takes an exclusive lock on `file`: `Ok(true)` once taken, `Ok(false)` when another open file
/// (in this process or another) still holds it after [`PATIENCE`].
///
/// # Errors
/// When the file system cannot lock.
pub fn lock_exclusive(file: &File) -> io::Result<bool> {
    let started = Instant::now();
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(true),
            Err(TryLockError::WouldBlock) if started.elapsed() < PATIENCE => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(TryLockError::WouldBlock) => return Ok(false),
            Err(TryLockError::Error(e)) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_a_child_process_keeps_for_a_moment_after_its_holder_let_go_is_waited_for() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("claimed");
        let holder = File::create(&path).unwrap();
        assert!(lock_exclusive(&holder).unwrap());
        // A child that inherited the holder's open file, as a process forked while the lock was
        // held does until its exec: the lock lives on in it after the holder closed its file.
        let mut child = std::process::Command::new("sleep")
            .arg("0.05")
            .stdin(holder.try_clone().unwrap())
            .spawn()
            .unwrap();
        drop(holder);
        let second = File::open(&path).unwrap();
        let locked = lock_exclusive(&second);
        child.wait().unwrap();
        assert!(locked.unwrap());
        // Held for good, it is refused after the patience.
        let third = File::open(&path).unwrap();
        let started = Instant::now();
        assert!(!lock_exclusive(&third).unwrap());
        assert!(started.elapsed() >= PATIENCE);
    }
}
