//! `veriflash keygen`: a P-256 key pair as openssl would write it.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use veriflash_core::sig::SigningKey;
use veriflash_core::{Error, ErrorKind};

use crate::output::Failure;

/// The public key's path for a private key path: `vendor.pem` -> `vendor.pub.pem`.
pub(crate) fn public_key_path(private: &Path) -> PathBuf {
    let name = private
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = name.strip_suffix(".pem").unwrap_or(&name);
    private.with_file_name(format!("{stem}.pub.pem"))
}

/// Writes `contents` to `path` with `mode`, refusing to replace a file unless `force`.
fn write_new(path: &Path, contents: &[u8], mode: u32, force: bool) -> Result<(), Error> {
    let mut options = OpenOptions::new();
    options.write(true).mode(mode);
    if force {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    let mut file = options.open(path).map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::AlreadyExists {
            " (use --force to overwrite)"
        } else {
            ""
        };
        Error::new(ErrorKind::Io, format!("{}: {e}{hint}", path.display()))
    })?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::new(ErrorKind::Io, format!("{}: {e}", path.display())))
}

/// Generates a key, writes both halves, and returns the key for callers such as the demo.
pub(crate) fn generate(out: &Path, force: bool) -> Result<SigningKey, Error> {
    let key = SigningKey::generate_p256()
        .map_err(|e| Error::new(ErrorKind::InvalidKey, format!("generating a key: {e}")))?;
    let pem = key
        .to_pkcs8_pem()
        .map_err(|e| Error::new(ErrorKind::InvalidKey, format!("encoding the key: {e}")))?;
    write_new(out, pem.as_bytes(), 0o600, force)?;
    let public = key.verifying_key().to_public_key_pem();
    write_new(&public_key_path(out), public.as_bytes(), 0o644, force)?;
    Ok(key)
}

pub(crate) fn run(out: &Path, force: bool) -> Result<(), Failure> {
    let key = generate(out, force)?;
    println!("private key  {} (mode 0600; keep it secret)", out.display());
    println!("public key   {}", public_key_path(out).display());
    println!("key id       {}", key.verifying_key().key_id());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_key_sits_beside_the_private_key() {
        assert_eq!(
            public_key_path(Path::new("/k/vendor.pem")),
            Path::new("/k/vendor.pub.pem")
        );
        assert_eq!(public_key_path(Path::new("key")), Path::new("key.pub.pem"));
    }
}
