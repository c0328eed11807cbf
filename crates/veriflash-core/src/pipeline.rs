//! Reading in order on the calling thread, checking on worker threads, handing on in order on
//! the calling thread again: the shape of the installs that read what they check from a device
//! or a download, which the calling thread alone may touch (a delta package's install, a
//! download that reuses installed chunks).
//!
//! The calling thread reads job after job, at most `in_flight` ahead of the last one handed on,
//! while the workers check the jobs read before, so reads, checks and hand-offs overlap. Results
//! are handed on in the order the jobs were read, whatever order the workers finish in; a read
//! that fails is reported after every job read before it was handed on, and a hand-off that
//! fails ends the run at once. Memory: `in_flight` jobs and their results.

use std::collections::BTreeMap;
use std::sync::{Mutex, mpsc};

use crate::error::Error;

/// How many workers check, and how many jobs may be read and not yet handed on.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Pipeline {
    /// Worker threads (at least one is wanted; with none started, the calling thread checks).
    pub(crate) threads: usize,
    /// Jobs read and not yet handed on, at most (at least one).
    pub(crate) in_flight: usize,
}

/// The buffers the calling thread reads jobs into, handed back after their results were handed
/// on: as many are kept as were in use at once (so memory follows the jobs in flight), and a
/// buffer is resized, not allocated, for the next job.
#[derive(Debug, Default)]
pub(crate) struct Buffers(Vec<Vec<u8>>);

impl Buffers {
    /// A buffer of `len` bytes (their content is overwritten by a read).
    pub(crate) fn take(&mut self, len: usize) -> Vec<u8> {
        let mut buffer = self.0.pop().unwrap_or_default();
        buffer.resize(len, 0);
        buffer
    }

    /// Keeps a buffer handed back, unless it holds no memory.
    pub(crate) fn keep(&mut self, buffer: Vec<u8>) {
        if buffer.capacity() > 0 {
            self.0.push(buffer);
        }
    }
}

/// What the calling thread does: reads the next job, and hands on a checked one.
pub(crate) trait InOrder {
    /// A job read, for a worker to check.
    type Job: Send;
    /// A job checked, to be handed on.
    type Checked: Send;

    /// The next job; `None` after the last.
    ///
    /// # Errors
    /// Reading stops: the error is reported once every job read before was handed on.
    fn read(&mut self) -> Option<Result<Self::Job, Error>>;

    /// Hands one checked job on, in the order the jobs were read.
    ///
    /// # Errors
    /// The run stops with this error.
    fn hand_on(&mut self, checked: Self::Checked) -> Result<(), Error>;
}

impl Pipeline {
    /// Runs `io`'s jobs through `check` on the workers (see the module).
    ///
    /// # Errors
    /// The first error of `io` in job order; [`ErrorKind::Io`](crate::ErrorKind::Io) when a
    /// worker stopped without an answer (it panicked).
    pub(crate) fn run<T: InOrder>(
        self,
        io: &mut T,
        check: impl Fn(T::Job) -> T::Checked + Sync,
    ) -> Result<(), Error> {
        let in_flight = u64::try_from(self.in_flight.max(1)).unwrap_or(u64::MAX);
        let (jobs, queue) = mpsc::channel::<(u64, T::Job)>();
        let queue = Mutex::new(queue);
        // `None`: the worker panicked on that job.
        let (checked, results) = mpsc::channel::<(u64, Option<T::Checked>)>();
        let check = &check;
        std::thread::scope(|s| {
            let jobs = jobs;
            let mut workers = 0usize;
            for _ in 0..self.threads.min(self.in_flight.max(1)) {
                let (queue, checked) = (&queue, checked.clone());
                let worker = std::thread::Builder::new()
                    .name("veriflash-check".into())
                    .spawn_scoped(s, move || {
                        while let Ok((seq, job)) = next_job(queue) {
                            let result =
                                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                    check(job)
                                }));
                            let failed = result.is_err();
                            if checked.send((seq, result.ok())).is_err() || failed {
                                break;
                            }
                        }
                    });
                workers += usize::from(worker.is_ok());
            }
            drop(checked);
            let mut arrived: BTreeMap<u64, T::Checked> = BTreeMap::new();
            let (mut read, mut handed_on) = (0u64, 0u64);
            let (mut ended, mut stopped) = (false, None);
            loop {
                while !ended && stopped.is_none() && read - handed_on < in_flight {
                    match io.read() {
                        None => ended = true,
                        Some(Err(e)) => stopped = Some(e),
                        Some(Ok(job)) if workers == 0 => {
                            arrived.insert(read, check(job));
                            read += 1;
                        }
                        Some(Ok(job)) => {
                            jobs.send((read, job)).map_err(|_| worker_stopped())?;
                            read += 1;
                        }
                    }
                }
                if handed_on == read {
                    break;
                }
                if !arrived.contains_key(&handed_on) {
                    let (seq, result) = results.recv().map_err(|_| worker_stopped())?;
                    arrived.insert(seq, result.ok_or_else(worker_stopped)?);
                }
                while let Some(result) = arrived.remove(&handed_on) {
                    handed_on += 1;
                    io.hand_on(result)?;
                }
            }
            stopped.map_or(Ok(()), Err)
        })
    }
}

/// A worker's next job; an error when the calling thread reads no more.
fn next_job<J>(queue: &Mutex<mpsc::Receiver<(u64, J)>>) -> Result<(u64, J), mpsc::RecvError> {
    queue
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .recv()
}

/// A worker stopped without an answer (it panicked): nothing more is handed on.
fn worker_stopped() -> Error {
    Error::io(
        "checking",
        std::io::Error::other("a checking thread stopped without an answer"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    /// Jobs 0..n; job `bad_read` fails to read, results of `bad_check` fail to hand on.
    struct Numbers {
        n: u64,
        next: u64,
        bad_read: Option<u64>,
        bad_check: Option<u64>,
        handed_on: Vec<u64>,
    }

    impl InOrder for Numbers {
        type Job = u64;
        type Checked = Result<u64, u64>;

        fn read(&mut self) -> Option<Result<u64, Error>> {
            let job = self.next;
            if job == self.n {
                return None;
            }
            self.next += 1;
            if Some(job) == self.bad_read {
                return Some(Err(Error::new(ErrorKind::Truncated, format!("read {job}"))));
            }
            Some(Ok(job))
        }

        fn hand_on(&mut self, checked: Result<u64, u64>) -> Result<(), Error> {
            let job = checked
                .map_err(|job| Error::new(ErrorKind::IntegrityMismatch, format!("check {job}")))?;
            self.handed_on.push(job);
            Ok(())
        }
    }

    fn run(threads: usize, in_flight: usize, numbers: &mut Numbers) -> Result<(), Error> {
        let bad = numbers.bad_check;
        Pipeline { threads, in_flight }.run(numbers, |job| {
            // Later jobs finish first: workers answer out of order.
            std::thread::sleep(std::time::Duration::from_micros((50 - job % 50) * 20));
            if Some(job) == bad { Err(job) } else { Ok(job) }
        })
    }

    fn numbers(bad_read: Option<u64>, bad_check: Option<u64>) -> Numbers {
        Numbers {
            n: 200,
            next: 0,
            bad_read,
            bad_check,
            handed_on: Vec::new(),
        }
    }

    #[test]
    fn results_are_handed_on_in_read_order_whatever_order_workers_finish_in() {
        for (threads, in_flight) in [(1, 1), (4, 8), (3, 2), (8, 64)] {
            let mut all = numbers(None, None);
            run(threads, in_flight, &mut all).unwrap();
            assert_eq!(all.handed_on, (0..200).collect::<Vec<_>>());
        }
    }

    #[test]
    fn the_earliest_failure_wins_after_every_job_before_it_was_handed_on() {
        for (threads, in_flight) in [(1, 1), (4, 8), (8, 64)] {
            // A failed check before a failed read: the check's error.
            let mut both = numbers(Some(120), Some(100));
            let err = run(threads, in_flight, &mut both).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::IntegrityMismatch, "{err}");
            assert_eq!(both.handed_on, (0..100).collect::<Vec<_>>());
            // A failed read before a failed check: every job before the read is handed on.
            let mut read = numbers(Some(90), Some(100));
            let err = run(threads, in_flight, &mut read).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Truncated, "{err}");
            assert_eq!(read.handed_on, (0..90).collect::<Vec<_>>());
            assert!(read.next <= 91, "nothing is read after a failed read");
        }
    }

    #[test]
    fn a_worker_that_panics_ends_the_run_with_an_error_not_a_hang() {
        let mut all = numbers(None, None);
        let err = Pipeline {
            threads: 2,
            in_flight: 4,
        }
        .run(&mut all, |job| {
            assert!(job != 7, "a bug on job 7");
            Ok(job)
        })
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Io, "{err}");
        assert!(all.handed_on.len() <= 7);
    }
}
