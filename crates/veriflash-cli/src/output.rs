//! How results and errors reach the person or the script that ran us.

use std::process::ExitCode;

use serde_json::{Value, json};
use veriflash_core::Error;

/// A failed command.
#[derive(Debug)]
pub(crate) enum Failure {
    /// A pipeline error, and whether the caller asked for JSON.
    Error { error: Error, json: bool },
    /// Something that should not happen did (exit status 1), e.g. the demo saw a tampered
    /// package pass.
    Unexpected(String),
}

impl Failure {
    /// A failure reported as text on stderr.
    pub(crate) fn text(error: Error) -> Self {
        Self::Error { error, json: false }
    }

    /// A failure reported as JSON on stdout when `json` is set.
    pub(crate) fn new(error: Error, json: bool) -> Self {
        Self::Error { error, json }
    }

    /// Prints the error (with its code and remedy) and turns it into the process exit status.
    pub(crate) fn report(self) -> ExitCode {
        match self {
            Self::Error { error, json: true } => {
                println!("{}", json!({ "ok": false, "error": error_json(&error) }));
                ExitCode::from(error.code())
            }
            Self::Error { error, json: false } => {
                eprintln!("{}", error_text(&error));
                ExitCode::from(error.code())
            }
            Self::Unexpected(message) => {
                eprintln!("error: {message}");
                ExitCode::FAILURE
            }
        }
    }
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        Self::text(error)
    }
}

/// The error as people read it: code and name, what happened, the specifics, what to do.
pub(crate) fn error_text(error: &Error) -> String {
    let kind = error.kind();
    format!(
        "error[{} {}]: {}\n  cause:  {}\n  remedy: {}",
        kind.code(),
        kind.name(),
        kind.summary(),
        error.message(),
        error.remedy()
    )
}

/// The error as scripts read it. Field names are part of the CLI's stable contract.
pub(crate) fn error_json(error: &Error) -> Value {
    let kind = error.kind();
    let location = error.location();
    json!({
        "code": kind.code(),
        "kind": kind.name(),
        "category": kind.category().name(),
        "summary": kind.summary(),
        "message": error.message(),
        "remedy": error.remedy(),
        "image": location.image,
        "chunk": location.chunk,
        "offset": location.offset,
    })
}

/// `1.5 MiB`-style sizes for people; exact byte counts go in JSON.
pub(crate) fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut unit = 0;
    let mut whole = bytes;
    let mut rem = 0;
    while whole >= 1024 && unit + 1 < UNITS.len() {
        rem = whole % 1024;
        whole /= 1024;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        // One decimal, truncated: enough to tell sizes apart.
        format!("{whole}.{} {}", rem * 10 / 1024, UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_sizes_read_naturally() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(1023), "1023 B");
        assert_eq!(human_size(1024), "1.0 KiB");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(64 << 20), "64.0 MiB");
    }
}

/// Thins progress to one line per `step` percent, for output that is not a terminal (logs,
/// CI): the first report, then one each time the next multiple of `step` is reached.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Milestones {
    next: u64,
    step: u64,
}

impl Milestones {
    /// A line every `step` percent (at least 1).
    pub(crate) fn every(step: u64) -> Self {
        Self {
            next: 0,
            step: step.max(1),
        }
    }

    /// The percentage `done` of `total` is (100 for an empty total) when it reached the next
    /// milestone, which then moves on; `None` between milestones.
    pub(crate) fn reached(&mut self, done: u64, total: u64) -> Option<u64> {
        let percent = done.saturating_mul(100).checked_div(total).unwrap_or(100);
        if percent < self.next {
            return None;
        }
        self.next = (percent / self.step + 1) * self.step;
        Some(percent)
    }
}

#[cfg(test)]
mod milestone_tests {
    use super::Milestones;

    #[test]
    fn one_report_per_step_and_always_the_first() {
        let mut m = Milestones::every(10);
        let seen: Vec<u64> = (0..=100u64)
            .step_by(3)
            .filter_map(|done| m.reached(done, 100))
            .collect();
        assert_eq!(seen, [0, 12, 21, 30, 42, 51, 60, 72, 81, 90]);
        assert_eq!(Milestones::every(10).reached(0, 0), Some(100));
    }
}
