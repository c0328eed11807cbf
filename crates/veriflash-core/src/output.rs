//! Writing output files (packages, the bytes to sign, descriptions, downloads) without
//! destroying anything on the way.
//!
//! An output path is checked before the first byte is written and again just before the new
//! file takes its name: it must be absent or a regular file — never a device node, a FIFO, a
//! directory or a symbolic link, which a rename would silently replace (`--out /dev/null` run as
//! root would break the system) — and never one of the run's own inputs (`pack --out boot.img`
//! where `boot.img` is an image would replace it with the package). The file is written under a
//! temporary name in the same directory, synced, and renamed into place, so a crash or a full
//! disk never leaves half a file under the final name.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use crate::error::{Error, ErrorKind};

/// Checks that `path` may receive an output: absent or a regular file, and none of `inputs`
/// (compared as files, so another name for the same file is caught too).
///
/// # Errors
/// [`ErrorKind::InvalidInput`] naming the path and what it is; [`ErrorKind::Io`] when it cannot
/// be examined.
pub fn check_output(path: &Path, inputs: &[&Path]) -> Result<(), Error> {
    let refuse = |what: &str| {
        Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "{} {what}: an output must be a new or a regular file, written by replacing it",
                path.display()
            ),
        ))
    };
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(path.display(), e)),
    };
    let kind = meta.file_type();
    if kind.is_symlink() {
        return refuse("is a symbolic link (give the path it points to)");
    }
    if kind.is_dir() {
        return refuse("is a directory");
    }
    if !kind.is_file() {
        return refuse("is a device node, FIFO or socket, not a file");
    }
    for input in inputs {
        if std::fs::metadata(input)
            .is_ok_and(|other| other.dev() == meta.dev() && other.ino() == meta.ino())
        {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "{} is also an input of this run ({}): writing it would destroy that input; choose another output",
                    path.display(),
                    input.display()
                ),
            ));
        }
    }
    Ok(())
}

/// Creates `path` through a temporary file in the same directory that is renamed into place only
/// after `write` succeeded and the data reached the disk. `path` is checked with
/// [`check_output`] against `inputs` before anything is written and again before the rename.
///
/// # Errors
/// Whatever `write` returns; those of [`check_output`]; [`ErrorKind::Io`] (or
/// [`ErrorKind::NoSpace`]) when the file cannot be created, written, synced or renamed.
pub fn write_atomically<T>(
    path: &Path,
    inputs: &[&Path],
    write: impl FnOnce(&mut std::io::BufWriter<&File>) -> Result<T, Error>,
) -> Result<T, Error> {
    check_output(path, inputs)?;
    let tmp = temporary_beside(path);
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .map_err(|e| Error::io(tmp.display(), e))?;
    let result = (|| {
        let mut buffered = std::io::BufWriter::with_capacity(256 * 1024, &file);
        let value = write(&mut buffered)?;
        buffered.flush().map_err(|e| Error::io(tmp.display(), e))?;
        drop(buffered);
        file.sync_all().map_err(|e| Error::io(tmp.display(), e))?;
        // The run may have taken long: what is at `path` now is what the rename replaces.
        check_output(path, inputs)?;
        std::fs::rename(&tmp, path).map_err(|e| Error::io(path.display(), e))?;
        Ok(value)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// A temporary name in `path`'s directory (so the rename stays on one file system), hidden and
/// unique to this call: the process id and a counter, so that threads writing the same output
/// at once (devices of a factory line recording their floors) never share one.
fn temporary_beside(path: &Path) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    path.with_file_name(format!(".{name}.partial-{}-{n}", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_device_nodes_symlinks_directories_and_inputs() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("boot.img");
        std::fs::write(&input, b"image").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&input, &link).unwrap();
        for (path, inputs) in [
            (Path::new("/dev/null"), vec![]),
            (link.as_path(), vec![]),
            (dir.path(), vec![]),
            (input.as_path(), vec![input.as_path()]),
        ] {
            let err = write_atomically(path, &inputs, |f| {
                f.write_all(b"package").map_err(|e| Error::io("test", e))
            })
            .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidInput, "{path:?}: {err}");
        }
        assert_eq!(std::fs::read(&input).unwrap(), b"image");
        assert!(std::fs::symlink_metadata(&link).unwrap().is_symlink());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn an_input_under_another_name_is_caught() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("a.img");
        std::fs::write(&input, b"image").unwrap();
        let alias = dir.path().join("b.img");
        std::fs::hard_link(&input, &alias).unwrap();
        let err = check_output(&alias, &[&input]).unwrap_err();
        assert!(err.message().contains("also an input"), "{err}");
        let via_dots = dir.path().join(".").join("a.img");
        assert!(check_output(&via_dots, &[&input]).is_err());
    }

    #[test]
    fn replaces_a_regular_file_and_leaves_nothing_behind_on_failure() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.vfp");
        std::fs::write(&out, b"old").unwrap();
        write_atomically(&out, &[], |f| {
            f.write_all(b"new").map_err(|e| Error::io("test", e))
        })
        .unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), b"new");
        let err = write_atomically(&out, &[], |_| -> Result<(), Error> {
            Err(Error::new(ErrorKind::InvalidInput, "stop"))
        })
        .unwrap_err();
        assert_eq!(err.message(), "stop");
        assert_eq!(std::fs::read(&out).unwrap(), b"new");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
