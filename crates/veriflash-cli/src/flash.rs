//! `veriflash flash`: verify and install a package on a device, with progress.

use std::fs::File;
use std::io::{BufReader, IsTerminal};
use std::path::Path;

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use veriflash_core::AnchorSet;
use veriflash_core::flash::device_error;
use veriflash_core::{CancelToken, Error, ErrorKind, Event, InstallPolicy, install};
use veriflash_plugin::Registry;

use crate::output::{Failure, human_size};
use crate::verify::print_report;

/// The plugins the CLI opens targets with: the built-in file device (`file:`) and the
/// MDM9x07 plugin with every transport (`mdm9x07:emulator`, `mdm9x07:serial:PATH`,
/// `mdm9x07:usb[:BUS-PORT]`), whose target strings are parsed in one place,
/// `veriflash_mdm9x07::target`.
///
/// Real modems keep a PC-side journal in [`journal_dir`], so a flash cut off by a pulled cable
/// or a reset resumes where it stopped when run again.
pub(crate) fn registry() -> Registry {
    let mut registry = Registry::with_builtin();
    let config = veriflash_mdm9x07::SessionConfig {
        journal_dir: journal_dir(),
        ..veriflash_mdm9x07::SessionConfig::default()
    };
    registry.register(Box::new(veriflash_mdm9x07::Mdm9x07Plugin::new(config)));
    registry
}

/// Where the MDM9x07 journals live: `$VERIFLASH_STATE_DIR`, else `$XDG_STATE_HOME/veriflash`,
/// else `~/.local/state/veriflash` (the XDG base-directory default); `None` without a home.
pub(crate) fn journal_dir() -> Option<std::path::PathBuf> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(dir) = var("VERIFLASH_STATE_DIR") {
        return Some(dir.into());
    }
    let base = var("XDG_STATE_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| var("HOME").map(|h| std::path::Path::new(&h).join(".local/state")))?;
    Some(base.join("veriflash"))
}

/// One event as a JSON line: the `--json` event stream's stable shape.
pub(crate) fn event_json(event: &Event) -> serde_json::Value {
    match event {
        Event::PhaseStarted(p) => json!({"event": "phase_started", "phase": p.name()}),
        Event::PhaseFinished(p) => json!({"event": "phase_finished", "phase": p.name()}),
        Event::Progress {
            image,
            image_done,
            image_total,
            done,
            total,
        } => json!({
            "event": "progress", "image": image, "image_done": image_done,
            "image_total": image_total, "done": done, "total": total,
        }),
        Event::Warning(w) => json!({"event": "warning", "message": w}),
        Event::Finished(code) => json!({"event": "finished", "code": code}),
        _ => json!({"event": "other"}),
    }
}

/// How events reach a person: a progress bar on a terminal, plain lines otherwise.
enum Display {
    Json,
    Bar(ProgressBar),
    Lines { next_percent: u64 },
}

impl Display {
    fn new(json: bool) -> Self {
        if json {
            Self::Json
        } else if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template(
                    "{msg:<12} [{bar:40}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            Self::Bar(bar)
        } else {
            Self::Lines { next_percent: 0 }
        }
    }

    fn show(&mut self, event: &Event) {
        match (self, event) {
            (Self::Json, e) => println!("{}", event_json(e)),
            (Self::Bar(bar), Event::PhaseStarted(p)) => bar.set_message(p.name()),
            (Self::Bar(bar), Event::PhaseFinished(p)) => {
                bar.println(format!("{:<12} ok", p.name()))
            }
            (
                Self::Bar(bar),
                Event::Progress {
                    image, done, total, ..
                },
            ) => {
                bar.set_length(*total);
                bar.set_position(*done);
                bar.set_message(image.clone());
            }
            (Self::Bar(bar), Event::Finished(_)) => bar.finish_and_clear(),
            (Self::Bar(bar), Event::Warning(w)) => bar.println(format!("warning: {w}")),
            (Self::Lines { .. }, Event::PhaseFinished(p)) => eprintln!("{:<12} ok", p.name()),
            (Self::Lines { next_percent }, Event::Progress { done, total, .. }) => {
                let percent = if *total == 0 {
                    100
                } else {
                    done.saturating_mul(100) / total
                };
                if percent >= *next_percent {
                    eprintln!(
                        "flash        {percent:>3}%  {} of {}",
                        human_size(*done),
                        human_size(*total)
                    );
                    *next_percent = (percent / 10 + 1) * 10;
                }
            }
            (Self::Lines { .. }, Event::Warning(w)) => eprintln!("warning: {w}"),
            _ => {}
        }
    }
}

pub(crate) fn run(package: &Path, trust: &Path, target: &str, json: bool) -> Result<(), Failure> {
    let options = crate::verify::TrustOptions::default();
    run_with_ca(package, trust, &options, target, None, None, json)
}

/// `flash`, where `package` may be an http(s):// URL and `ca` the CA for an https:// one.
pub(crate) fn run_with_ca(
    package: &Path,
    trust: &Path,
    trust_options: &crate::verify::TrustOptions,
    target: &str,
    ca: Option<&Path>,
    save_rotation: Option<&Path>,
    json: bool,
) -> Result<(), Failure> {
    let fail = |e: Error| Failure::new(e, json);
    let anchors = AnchorSet::load(trust).map_err(fail)?;
    let verifier = crate::verify::verifier(&anchors, trust_options);
    // A URL: the prefix is fetched and verified here, then the payload streams into the
    // install through a reader that yields only chunks matching their signed digests.
    let url = package.to_str().filter(|p| crate::fetch::is_url(p));
    let reader: Box<dyn std::io::Read> = match url {
        Some(url) => Box::new(
            crate::fetch::open_remote(url, ca, &verifier)
                .map_err(fail)?
                .into_reader(),
        ),
        None => {
            let file = File::open(package).map_err(|e| {
                fail(Error::new(
                    ErrorKind::Io,
                    format!("{}: {e}", package.display()),
                ))
            })?;
            Box::new(BufReader::with_capacity(64 * 1024, file))
        }
    };
    let mut session = registry().open(target).map_err(|e| fail(device_error(e)))?;
    let mut display = Display::new(json);
    let cancel = CancelToken::new();
    crate::signals::cancel_on_interrupt(&cancel);
    let report = install(
        reader,
        &verifier,
        &InstallPolicy::default(),
        session.as_mut(),
        &cancel,
        &mut |event| display.show(event),
    )
    .map_err(fail)?;
    if !json {
        print_report(&report);
        println!("installed on {target}; it boots the new software now");
    }
    // Only now, with the install committed, may a rotation the package carried be adopted.
    crate::verify::adopt_rotation(&report, save_rotation, json).map_err(fail)
}
