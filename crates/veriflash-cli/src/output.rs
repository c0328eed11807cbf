//! How results and errors reach the person or the script that ran us.

use std::process::ExitCode;

use serde_json::{Value, json};
use veriflash_core::{Error, Event, Phase};

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
                crate::events::print(json!({ "ok": false, "error": error_json(&error) }));
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

/// What a progress bar or line counts, so that its label and its numbers agree: while a
/// device's loader streams (the MDM9x07 Firehose programmer, phase `load`), the loader image's
/// own bytes; then (phase `flash`) the bytes of every image written to the device, which the
/// loader is not. The image being written is named beside the count, never as its label.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ProgressCount {
    loading: bool,
    /// The loader's bytes, which the pipeline's package-wide counts include but no image
    /// written to storage does.
    loaded: u64,
    milestones: Milestones,
}

/// One progress reading: the phase it belongs to, and the bytes done of the total it counts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Counted {
    /// `load` or `flash`.
    pub(crate) phase: &'static str,
    /// The image being written or loaded.
    pub(crate) image: String,
    pub(crate) done: u64,
    pub(crate) total: u64,
}

impl Counted {
    /// What is happening to which image, to show beside the count: `writing boot`.
    pub(crate) fn doing(&self) -> String {
        let verb = if self.phase == "load" {
            "loading"
        } else {
            "writing"
        };
        format!("{verb} {}", self.image)
    }
}

impl ProgressCount {
    /// Before the first event; a line every `step` percent.
    pub(crate) fn every(step: u64) -> Self {
        Self {
            loading: false,
            loaded: 0,
            milestones: Milestones::every(step),
        }
    }

    /// Follows `event`: a loader's phase starts or ends a count of its own (so lines start
    /// again from 0%), as does a reconnect (the install runs again from the start).
    pub(crate) fn follow(&mut self, event: &Event) {
        let step = self.milestones.step;
        match event {
            Event::PhaseStarted(Phase::Load) | Event::PhaseFinished(Phase::Load) => {
                self.loading = matches!(event, Event::PhaseStarted(_));
                self.milestones = Milestones::every(step);
            }
            Event::Reconnecting { .. } => *self = Self::every(step),
            Event::Progress { image_done, .. } if self.loading => self.loaded = *image_done,
            _ => {}
        }
    }

    /// What a progress event counts now.
    pub(crate) fn count(&self, event: &Event) -> Option<Counted> {
        let Event::Progress {
            image,
            image_done,
            image_total,
            done,
            total,
        } = event
        else {
            return None;
        };
        let (phase, done, total) = if self.loading {
            ("load", *image_done, *image_total)
        } else {
            (
                "flash",
                done.saturating_sub(self.loaded),
                total.saturating_sub(self.loaded),
            )
        };
        Some(Counted {
            phase,
            image: image.clone(),
            done,
            total,
        })
    }

    /// A line for `event` when it reaches the next milestone: `flash   40%  1.2 MiB of 3.0 MiB
    /// (writing boot)`.
    pub(crate) fn line(&mut self, event: &Event) -> Option<String> {
        let counted = self.count(event)?;
        let percent = self.milestones.reached(counted.done, counted.total)?;
        Some(format!(
            "{:<12} {percent:>3}%  {} of {} ({})",
            counted.phase,
            human_size(counted.done),
            human_size(counted.total),
            counted.doing()
        ))
    }
}

#[cfg(test)]
mod progress_tests {
    use super::*;

    fn progress(image: &str, image_done: u64, image_total: u64, done: u64) -> Event {
        Event::Progress {
            image: image.to_owned(),
            image_done,
            image_total,
            done,
            total: 1000,
        }
    }

    #[test]
    fn a_loader_is_counted_against_its_own_size_and_the_flash_against_the_package() {
        let mut count = ProgressCount::every(10);
        count.follow(&Event::PhaseStarted(Phase::Load));
        let loaded = progress("programmer", 100, 100, 100);
        count.follow(&loaded);
        assert_eq!(
            count.count(&loaded).map(|c| (c.phase, c.done, c.total)),
            Some(("load", 100, 100))
        );
        let line = count.line(&loaded).unwrap();
        assert!(
            line.starts_with("load") && line.contains("100%  100 B of 100 B"),
            "{line}"
        );
        count.follow(&Event::PhaseFinished(Phase::Load));
        let written = progress("boot", 90, 400, 190);
        count.follow(&written);
        // The images written to storage, which the loader is not one of.
        assert_eq!(
            count.count(&written).map(|c| (c.phase, c.done, c.total)),
            Some(("flash", 90, 900))
        );
        // A new count: its first reading is a line even though the loader reached 100%.
        let line = count.line(&written).unwrap();
        assert!(
            line.contains(" 10%  90 B of 900 B (writing boot)"),
            "{line}"
        );
        assert_eq!(count.line(&progress("boot", 100, 400, 200)), None, "11%");
        // A reconnect runs the install again: the loader is counted again.
        count.follow(&Event::Reconnecting {
            attempt: 1,
            max_attempts: 3,
            timeout: std::time::Duration::from_secs(1),
            code: 51,
            message: String::new(),
        });
        assert_eq!(
            count.count(&written).map(|c| (c.phase, c.done, c.total)),
            Some(("flash", 190, 1000))
        );
    }
}
