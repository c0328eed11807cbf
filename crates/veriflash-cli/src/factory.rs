//! `veriflash flash PKG --target A --target B …`: the factory line. The package is read and
//! verified once and flashed to every target at once (`veriflash_core::factory`), each target
//! with its own progress lines and result, then a summary table.
//!
//! Exit status: 0 when every device succeeded, otherwise the code of the first failed device in
//! `--target` order (its error is printed last, with its remedy).

use std::io::BufReader;
use std::path::Path;
use std::sync::Mutex;

use serde_json::json;
use veriflash_core::factory::MAX_DEVICES;
use veriflash_core::flash::device_error;
use veriflash_core::{AnchorSet, Error, ErrorKind, Event, FactoryLine, InstallPolicy};

use crate::output::{Failure, Milestones, error_json, human_size};

/// Runs the factory line over `targets`.
pub(crate) fn run(
    package: &Path,
    trust: &Path,
    trust_options: &crate::verify::TrustOptions,
    targets: &[String],
    json: bool,
) -> Result<(), Failure> {
    let fail = |e: Error| Failure::new(e, json);
    if package.to_str().is_some_and(crate::fetch::is_url) {
        return Err(fail(Error::new(
            ErrorKind::InvalidInput,
            "several --target take a package file: download it first with `veriflash fetch`",
        )));
    }
    if targets.len() > MAX_DEVICES {
        return Err(fail(Error::new(
            ErrorKind::InvalidInput,
            format!("at most {MAX_DEVICES} --target at once"),
        )));
    }
    let anchors = AnchorSet::load(trust).map_err(fail)?;
    let verifier = crate::verify::verifier(&anchors, trust_options);
    let (file, _) = veriflash_core::source::open_regular(package).map_err(fail)?;
    let registry = crate::flash::registry().map_err(fail)?;
    let open = |i: usize| {
        let target = targets.get(i).map_or("", String::as_str);
        registry.open(target).map_err(device_error)
    };
    // Per device: the next progress percentage worth a line.
    let milestones = Mutex::new(vec![Milestones::every(10); targets.len()]);
    let events = |i: usize, event: &Event| {
        let target = targets.get(i).map_or("", String::as_str);
        if json {
            let mut line = crate::flash::event_json(event);
            line["device"] = json!(i);
            line["target"] = json!(target);
            println!("{line}");
            return;
        }
        match event {
            Event::PhaseFinished(p) => eprintln!("[{i} {target}] {:<12} ok", p.name()),
            Event::Progress { done, total, .. } => {
                let mut all = milestones
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if let Some(percent) = all.get_mut(i).and_then(|m| m.reached(*done, *total)) {
                    eprintln!(
                        "[{i} {target}] flash        {percent:>3}%  {} of {}",
                        human_size(*done),
                        human_size(*total)
                    );
                }
            }
            Event::Warning(w) => eprintln!("[{i} {target}] warning: {w}"),
            Event::Finished(Some(code)) => eprintln!("[{i} {target}] failed with code {code}"),
            _ => {}
        }
    };
    let policy = InstallPolicy::default();
    let cancel = veriflash_core::CancelToken::new();
    crate::signals::cancel_on_interrupt(&cancel);
    let report = FactoryLine::new(&verifier, &policy)
        .with_cancel(cancel)
        .run(
            BufReader::with_capacity(64 * 1024, file),
            targets.len(),
            &open,
            &events,
        )
        .map_err(fail)?;

    if json {
        for (i, (target, result)) in targets.iter().zip(&report.results).enumerate() {
            let line = match result {
                Ok(_) => {
                    json!({"event": "device_result", "device": i, "target": target, "ok": true})
                }
                Err(e) => {
                    json!({"event": "device_result", "device": i, "target": target, "ok": false, "error": error_json(e)})
                }
            };
            println!("{line}");
        }
    } else {
        println!("{:<4} {:<28} {:<6} result", "#", "target", "code");
        for (i, (target, result)) in targets.iter().zip(&report.results).enumerate() {
            match result {
                Ok(r) => println!(
                    "{i:<4} {target:<28} {:<6} installed {} {}",
                    0, r.product, r.software_version
                ),
                Err(e) => println!(
                    "{i:<4} {target:<28} {:<6} {}: {}",
                    e.code(),
                    e.kind().name(),
                    e.message()
                ),
            }
        }
        let ok = report.results.iter().filter(|r| r.is_ok()).count();
        println!("{ok} of {} devices installed", targets.len());
    }
    match report.results.into_iter().find_map(Result::err) {
        None => Ok(()),
        Some(first) => Err(fail(first)),
    }
}
