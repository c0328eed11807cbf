//! The README's tour is a script: every `sh` block of "A five-minute tour" runs here, in order,
//! in a fresh directory, with this build's `veriflash` first on `PATH`, and every `toml` block
//! is written to the file its fence names (```` ```toml update.toml ````). A block that cannot
//! run here says why in a `<!-- readme-test: skip: REASON -->` line just above it.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::path::Path;
use std::process::Command;

const README: &str = include_str!("../../../README.md");
const SKIP: &str = "<!-- readme-test: skip:";

/// One fenced block of the README.
#[derive(Debug)]
struct Block {
    /// 1-based line of the opening fence.
    line: usize,
    /// The fence's language (`sh`, `toml`, ...).
    lang: String,
    /// What follows the language on the fence line (a file name for `toml`).
    info: String,
    /// The content, without the fence's indentation.
    body: String,
    /// The reason given for not running it, if any.
    skip: Option<String>,
}

/// The fenced blocks between the heading `start` and the next `## ` heading.
fn blocks(start: &str) -> Vec<Block> {
    let lines: Vec<&str> = README.lines().collect();
    let first = lines
        .iter()
        .position(|l| *l == start)
        .unwrap_or_else(|| panic!("README has no '{start}'"));
    let mut out = Vec::new();
    let mut i = first + 1;
    while i < lines.len() && !lines[i].starts_with("## ") {
        let trimmed = lines[i].trim_start();
        if let Some(fence_info) = trimmed.strip_prefix("```") {
            let indent = lines[i].len() - trimmed.len();
            let mut words = fence_info.split_whitespace();
            let lang = words.next().unwrap_or("").to_owned();
            let info = words.collect::<Vec<_>>().join(" ");
            let skip = lines[..i]
                .iter()
                .rev()
                .find(|l| !l.trim().is_empty())
                .and_then(|l| l.trim().strip_prefix(SKIP))
                .map(|r| r.trim_end_matches("-->").trim().to_owned());
            let open = i;
            let mut body = String::new();
            i += 1;
            while !lines[i].trim_start().starts_with("```") {
                body.push_str(lines[i].get(indent..).unwrap_or("").trim_end());
                body.push('\n');
                i += 1;
            }
            out.push(Block {
                line: open + 1,
                lang,
                info,
                body,
                skip,
            });
        }
        i += 1;
    }
    out
}

#[test]
fn every_command_of_the_tour_runs() {
    let tour = blocks("## A five-minute tour");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let bin = Path::new(env!("CARGO_BIN_EXE_veriflash")).parent().unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let mut ran = String::new();
    let mut printed = String::new();
    let mut skipped = Vec::new();
    for block in &tour {
        if let Some(reason) = &block.skip {
            assert!(
                reason.len() > 10,
                "line {}: say why it is skipped",
                block.line
            );
            skipped.push(block.line);
            continue;
        }
        match block.lang.as_str() {
            "toml" => {
                assert!(
                    block.info.ends_with(".toml"),
                    "line {}: a toml block names its file (```toml NAME.toml)",
                    block.line
                );
                std::fs::write(dir.join(&block.info), &block.body).unwrap();
            }
            "sh" => {
                let out = Command::new("bash")
                    .args(["-euo", "pipefail", "-c", &block.body])
                    .current_dir(dir)
                    .env("PATH", &path)
                    .env("NO_COLOR", "1")
                    .env("VERIFLASH_STATE_DIR", dir.join(".veriflash-state"))
                    .env("VERIFLASH_CONFIG_DIR", dir.join(".veriflash-config"))
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "README line {}:\n{}\nexit {:?}\nstdout:\n{}\nstderr:\n{}",
                    block.line,
                    block.body,
                    out.status,
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
                ran.push_str(&block.body);
                printed.push_str(&String::from_utf8_lossy(&out.stdout));
            }
            other => panic!("line {}: unexpected block language '{other}'", block.line),
        }
    }
    // What the tour promises a reader is there, and ran.
    for step in [
        "veriflash keygen",
        "veriflash pack",
        "veriflash inspect",
        "veriflash verify",
        "veriflash device init",
        "--target file:",
        "--target mdm9x07:emulator",
        "veriflash status",
        "--save-rotation",
    ] {
        assert!(ran.contains(step), "the tour does not run '{step}'");
    }
    assert!(
        skipped.len() <= 3,
        "too much of the tour is not run: lines {skipped:?}"
    );
    // And the outcomes it tells the reader to expect are the ones that happened.
    for outcome in [
        "safe to flash",
        "refused with exit status 21",
        "installed on file:device.img",
        "installed on mdm9x07:emulator",
        "trust anchors rotated to version 1",
        "replay refused: exit status 28",
        "old key retired: exit status 21",
    ] {
        assert!(
            printed.contains(outcome),
            "the tour did not print '{outcome}':\n{printed}"
        );
    }
}
