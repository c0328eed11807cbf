//! The CLI fits into a Unix system: completions that the shell accepts, man pages that groff
//! renders without warnings, `NO_COLOR`, and a quiet end on a closed pipe.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;
use common::{ok, veriflash};

use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};

/// The visible subcommands, from `--help`'s command list.
fn subcommands() -> Vec<String> {
    let help = ok(&veriflash(&["--help"], Path::new(".")));
    let list = help
        .split("Commands:")
        .nth(1)
        .unwrap()
        .split("\n\n")
        .next()
        .unwrap();
    let names: Vec<String> = list
        .lines()
        // "  name  summary"; wrapped summaries are indented further.
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| *n != "help")
        .map(str::to_owned)
        .collect();
    assert!(names.len() >= 10, "{names:?}");
    names
}

#[test]
fn bash_completion_is_valid_bash_and_knows_every_subcommand() {
    let script = ok(&veriflash(&["completions", "bash"], Path::new(".")));
    for name in subcommands() {
        assert!(script.contains(&name), "bash completion lacks {name}");
    }
    assert!(script.contains("--save-rotation"));
    let mut bash = Command::new("bash")
        .arg("-n")
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("bash is installed");
    bash.stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let checked = bash.wait_with_output().unwrap();
    assert!(
        checked.status.success(),
        "bash -n: {}",
        String::from_utf8_lossy(&checked.stderr)
    );
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let script = ok(&veriflash(&["completions", shell], Path::new(".")));
        for name in subcommands() {
            assert!(script.contains(&name), "{shell} completion lacks {name}");
        }
    }
    assert_eq!(
        veriflash(&["completions", "tcsh"], Path::new("."))
            .status
            .code(),
        Some(2)
    );
}

/// Renders roff with groff's warnings on; returns the text and groff's complaints.
fn groff(page: &[u8]) -> (String, String) {
    let mut groff = Command::new("groff")
        .args(["-man", "-Tutf8", "-ww"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("groff is installed (.ci/run installs groff-base)");
    groff.stdin.take().unwrap().write_all(page).unwrap();
    let out = groff.wait_with_output().unwrap();
    assert!(out.status.success());
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn man_pages_render_cleanly_and_carry_the_exit_codes() {
    let page = ok(&veriflash(&["man"], Path::new(".")));
    assert!(page.contains(".TH veriflash 1"), "{page}");
    let (text, warnings) = groff(page.as_bytes());
    assert_eq!(warnings, "");
    assert!(text.contains("rotation_refused"), "exit table missing");

    let dir = tempfile::tempdir().unwrap();
    ok(&veriflash(
        &["man", "--out-dir", dir.path().to_str().unwrap()],
        Path::new("."),
    ));
    for name in subcommands() {
        let path = dir.path().join(format!("veriflash-{name}.1"));
        let page = std::fs::read(&path).unwrap_or_else(|_| panic!("no {}", path.display()));
        let (_, warnings) = groff(&page);
        assert_eq!(warnings, "", "{}", path.display());
    }
    let flash = std::fs::read_to_string(dir.path().join("veriflash-flash.1")).unwrap();
    assert!(flash.contains("save\\-rotation"), "{flash}");
}

#[test]
fn no_color_wins_over_a_forced_color() {
    let forced = Command::new(env!("CARGO_BIN_EXE_veriflash"))
        .arg("--help")
        .env("CLICOLOR_FORCE", "1")
        .env_remove("NO_COLOR")
        .output()
        .unwrap();
    assert!(ok(&forced).contains("\x1b["), "help is styled when forced");
    let plain = Command::new(env!("CARGO_BIN_EXE_veriflash"))
        .arg("--help")
        .env("CLICOLOR_FORCE", "1")
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(!ok(&plain).contains('\x1b'));
}

#[test]
fn a_closed_pipe_ends_the_process_quietly_by_sigpipe() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_veriflash"))
        .args(["completions", "bash"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Close the reading end before the first write, as `| head -0` would.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.signal(), Some(13), "{:?}", out.status);
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
}
