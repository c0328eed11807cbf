//! Emulated modems announce themselves so discovery finds them as it finds modems on USB: a
//! pseudo-terminal is not on any bus, and opening every `/dev/pts/N` to ask would write into
//! people's terminals.
//!
//! `veriflash emulate mdm9x07 --pty` writes `STATE_DIR/emulators/PID` (the process id, then the
//! target on one line) while it serves and removes it when it ends on a signal. A file left by
//! an emulator that was killed outright is ignored: an entry counts only while its process and
//! its pseudo-terminal exist.

use std::io::Read as _;
use std::path::{Path, PathBuf};

/// The most entries looked at in the directory (a bound against a strange directory).
const MAX_ENTRIES: usize = 256;
/// The longest announcement read.
const MAX_LEN: u64 = 512;

/// The directory of announcements under the state directory.
fn dir(state_dir: &Path) -> PathBuf {
    state_dir.join("emulators")
}

/// An emulator's announcement, removed when dropped.
#[derive(Debug)]
pub(crate) struct Announcement {
    path: PathBuf,
}

impl Announcement {
    /// Announces `target` (served by this process) under `state_dir`.
    ///
    /// # Errors
    /// The directory or the file cannot be written.
    pub(crate) fn new(state_dir: &Path, target: &str) -> std::io::Result<Self> {
        let dir = dir(state_dir);
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(std::process::id().to_string());
        std::fs::write(&path, format!("{target}\n"))?;
        Ok(Self { path })
    }
}

impl Drop for Announcement {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The targets of the emulators serving now, announced under `state_dir`, sorted.
pub(crate) fn list(state_dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir(state_dir)) else {
        return Vec::new();
    };
    let mut targets: Vec<String> = entries
        .take(MAX_ENTRIES)
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let mut text = String::new();
            std::fs::File::open(entry.path())
                .ok()?
                .take(MAX_LEN)
                .read_to_string(&mut text)
                .ok()?;
            let target = text.lines().next()?.trim().to_owned();
            alive(pid, &target).then_some(target)
        })
        .collect();
    targets.sort();
    targets
}

/// Whether the emulator `pid` still runs and its pseudo-terminal still exists.
fn alive(pid: u32, target: &str) -> bool {
    let process = !cfg!(target_os = "linux") || Path::new(&format!("/proc/{pid}")).exists();
    let tty = target
        .strip_prefix("mdm9x07:serial:")
        .is_none_or(|path| Path::new(path).exists());
    process && tty
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_announcement_is_listed_while_it_lives_and_a_dead_ones_is_not() {
        let tmp = tempfile::tempdir().unwrap();
        // This process and a terminal that exists.
        let live = Announcement::new(tmp.path(), "mdm9x07:serial:/dev/null").unwrap();
        // A process that cannot exist (pid_max is at most 2^22), and a gone terminal.
        std::fs::write(
            dir(tmp.path()).join("4294967295"),
            "mdm9x07:serial:/dev/null\n",
        )
        .unwrap();
        let me = std::process::id();
        std::fs::write(dir(tmp.path()).join("junk"), "x\n").unwrap();
        assert_eq!(list(tmp.path()), ["mdm9x07:serial:/dev/null"]);
        assert!(!alive(me, "mdm9x07:serial:/dev/pts/no-such-terminal"));
        drop(live);
        assert!(list(tmp.path()).is_empty());
    }
}
