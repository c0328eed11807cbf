//! `veriflash keygen`: a P-256 or RSA key pair as openssl would write it.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use veriflash_core::sig::SigningKey;
use veriflash_core::trust::public_key_path;
use veriflash_core::{Error, ErrorKind};

use crate::output::Failure;

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

/// The key types `keygen --algo` makes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum KeyAlgo {
    /// ECDSA P-256 (the default).
    #[default]
    P256,
    /// RSA, 3072-bit modulus (signs PKCS#1 v1.5 with SHA-256).
    Rsa3072,
    /// RSA, 4096-bit modulus (signs PKCS#1 v1.5 with SHA-256).
    Rsa4096,
}

/// Generates a P-256 key, writes both halves, and returns the key for callers such as the demo.
pub(crate) fn generate(out: &Path, force: bool) -> Result<SigningKey, Error> {
    generate_with(out, force, KeyAlgo::P256)
}

/// Generates a key of `algo`, writes both halves, and returns the key.
pub(crate) fn generate_with(out: &Path, force: bool, algo: KeyAlgo) -> Result<SigningKey, Error> {
    let key = match algo {
        KeyAlgo::P256 => SigningKey::generate_p256(),
        KeyAlgo::Rsa3072 => SigningKey::generate_rsa(3072),
        KeyAlgo::Rsa4096 => SigningKey::generate_rsa(4096),
    }
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
    run_with(out, force, KeyAlgo::P256)
}

/// `veriflash keygen --algo ALGO`.
pub(crate) fn run_with(out: &Path, force: bool, algo: KeyAlgo) -> Result<(), Failure> {
    let key = generate_with(out, force, algo)?;
    println!("private key  {} (mode 0600; keep it secret)", out.display());
    println!("public key   {}", public_key_path(out).display());
    println!("algorithm    {}", key.verifying_key().algorithm_name());
    println!("key id       {}", key.verifying_key().key_id());
    Ok(())
}
