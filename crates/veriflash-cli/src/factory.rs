//! `veriflash flash PKG --target A --target B …`: the factory line. The package is read and
//! verified once and flashed to every target at once (`Updater::install_all`), each target
//! with its own progress lines and result, then a summary table.
//!
//! Exit status: 0 when every device succeeded, otherwise the code of the first failed device in
//! `--target` order (its error is printed last, with its remedy).

use serde_json::json;
use veriflash_core::factory::MAX_DEVICES;
use veriflash_core::{AnchorSet, CancelToken, Error, ErrorKind, Event, Reconnect, Updater};

use crate::flash::FlashArgs;
use crate::output::{Failure, ProgressCount, error_json};

/// Runs the factory line over `args.targets`.
pub(crate) fn run(args: &FlashArgs<'_>) -> Result<(), Failure> {
    let json = args.json;
    let fail = |e: Error| Failure::new(e, json);
    if args.targets.len() > MAX_DEVICES {
        return Err(fail(Error::new(
            ErrorKind::InvalidInput,
            format!("at most {MAX_DEVICES} --target at once"),
        )));
    }
    let anchors = AnchorSet::load(args.trust).map_err(fail)?;
    let targets = args.targets.to_vec();
    // Per device: what its progress lines count, and the next percentage worth a line.
    let mut counts = vec![ProgressCount::every(10); targets.len()];
    let labels = targets.clone();
    let mut lines = crate::events::EventLines::default();
    let events = move |i: usize, event: &Event| {
        let target = labels.get(i).map_or("", String::as_str);
        if json {
            let mut line = lines.event(i, event);
            line["device"] = json!(i);
            line["target"] = json!(target);
            crate::events::print(line);
            return;
        }
        let Some(count) = counts.get_mut(i) else {
            return;
        };
        count.follow(event);
        match event {
            Event::PhaseFinished(p) => eprintln!("[{i} {target}] {:<12} ok", p.name()),
            Event::Progress { .. } => {
                if let Some(line) = count.line(event) {
                    eprintln!("[{i} {target}] {line}");
                }
            }
            Event::Warning(w) => eprintln!("[{i} {target}] warning: {w}"),
            Event::Finished(Some(code)) => eprintln!("[{i} {target}] failed with code {code}"),
            _ => {}
        }
    };
    let cancel = CancelToken::new();
    crate::signals::cancel_on_interrupt(&cancel);
    let source = crate::flash::source(args).map_err(fail)?;
    // A factory line never waits for a device that drops off: the others would wait with it.
    let report = Updater::builder(source, crate::verify::trust(anchors, args.trust_options))
        .registry(crate::plugins::registry(
            args.sysfs,
            args.allow_partition_table,
            args.wait_device,
        ))
        .environment(crate::plugins::environment())
        .cancel(cancel)
        .reconnect(Reconnect::never())
        .events(events)
        .build()
        .and_then(|mut updater| updater.install_all(&targets))
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
            crate::events::print(line);
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
        None => {
            if json {
                crate::events::print(json!({"ok": true, "devices": targets.len()}));
            }
            Ok(())
        }
        Some(first) => Err(fail(first)),
    }
}
