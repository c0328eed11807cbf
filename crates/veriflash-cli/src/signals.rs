//! Unix signals the way a command-line tool should treat them, without `unsafe` in this crate
//! (`signal-hook` keeps the async-signal-safe part).
//!
//! * `SIGPIPE`: Rust ignores it, so `veriflash inspect x | head -1` would panic on the next
//!   write; instead the process ends the way every Unix tool does, silently, by the signal.
//! * `SIGINT` / `SIGTERM` during an install: the first one cancels it between chunks (the device
//!   is aborted and nothing is committed: an A/B device keeps booting its old software, a
//!   single-slot modem waits in download mode for the re-run; exit status 60 `cancelled`); a
//!   second one ends the process at once, for a device that stopped answering.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use signal_hook::consts::{SIGINT, SIGPIPE, SIGTERM};
use veriflash_core::CancelToken;

/// Restores the default action of `SIGPIPE`: a write to a closed pipe ends the process.
pub(crate) fn die_on_broken_pipe() {
    // `true`: always take the default action once the signal arrived. Registration fails only
    // for signals that cannot be handled at all, which SIGPIPE is not; if it ever did, the
    // tool would merely keep Rust's behaviour (an error on the write).
    let _ =
        signal_hook::flag::register_conditional_default(SIGPIPE, Arc::new(AtomicBool::new(true)));
}

/// Cancels `cancel` on the first SIGINT or SIGTERM and exits with status 130 on the second.
///
/// Returns without watching if the handler cannot be installed (the install then simply
/// cannot be interrupted gracefully, as before).
pub(crate) fn cancel_on_interrupt(cancel: &CancelToken) {
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM]) else {
        return;
    };
    let cancel = cancel.clone();
    // A computer out of threads cannot watch: the install then cannot be interrupted
    // gracefully (as without a handler), which is no reason to refuse it.
    let _ = std::thread::Builder::new().name("veriflash-signals".into()).spawn(move || {
        let mut seen = 0u32;
        for _ in signals.forever() {
            seen = seen.saturating_add(1);
            if seen == 1 {
                cancel.cancel();
                eprintln!(
                    "interrupted: stopping at the next safe point, before anything more is written (interrupt again to quit now)"
                );
            } else {
                std::process::exit(130);
            }
        }
    });
}

/// For `veriflash station`: the first SIGINT or SIGTERM cancels every install (each device is
/// aborted safely, as `flash` does) and ends the station once they stopped; a second one ends
/// it at once with status 130.
pub(crate) fn stop_on_interrupt(station: Arc<crate::station::Station>) {
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM]) else {
        return;
    };
    let _ = std::thread::Builder::new().name("veriflash-signals".into()).spawn(move || {
        let mut seen = 0u32;
        for _ in signals.forever() {
            seen = seen.saturating_add(1);
            if seen > 1 {
                std::process::exit(130);
            }
            if station.cancel(None) > 0 {
                eprintln!(
                    "interrupted: stopping the installs at the next safe point (interrupt again to quit now)"
                );
            }
            let station = Arc::clone(&station);
            let _ = std::thread::Builder::new().name("veriflash-stop".into()).spawn(move || {
                while station.busy() {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                std::process::exit(0);
            });
        }
    });
}
