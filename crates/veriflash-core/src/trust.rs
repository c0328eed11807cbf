//! Loading keys and trust anchors from files, with errors in the core's taxonomy.

use std::path::Path;

use veriflash_sig::{PinnedKeys, SigningKey};
use zeroize::Zeroizing;

use crate::convert;
use crate::error::{Error, ErrorKind};

/// Loads a private signing key from a PEM file (PKCS#8 `PRIVATE KEY` or SEC1 `EC PRIVATE KEY`, as
/// openssl writes them). The file's text is wiped from memory once parsed.
///
/// # Errors
/// [`ErrorKind::Io`] when the file cannot be read; [`ErrorKind::InvalidKey`] when it holds no
/// usable key.
pub fn load_signing_key(path: &Path) -> Result<SigningKey, Error> {
    let text = Zeroizing::new(
        std::fs::read_to_string(path)
            .map_err(|e| Error::io(format_args!("{}", path.display()), e))?,
    );
    SigningKey::from_pem(&text).map_err(|e| {
        let err = convert::key_error(e);
        Error::new(
            ErrorKind::InvalidKey,
            format!("{}: {}", path.display(), err.message()),
        )
    })
}

/// Loads trust anchors: one PEM public key file, or a directory of them.
///
/// # Errors
/// [`ErrorKind::Io`] when the path cannot be read; [`ErrorKind::InvalidKey`] when a key does not
/// parse; [`ErrorKind::NoTrustAnchors`] when a directory holds no key.
pub fn load_trust_anchors(path: &Path) -> Result<PinnedKeys, Error> {
    PinnedKeys::load(path).map_err(|e| convert::trust_error(path, e))
}

/// Loads a certificate chain file (PEM `CERTIFICATE` blocks, leaf first, then intermediates, as
/// openssl writes them) as DER certificates.
///
/// # Errors
/// [`ErrorKind::Io`] when the file cannot be read; [`ErrorKind::InvalidInput`] when it holds no
/// certificate or a malformed one.
pub fn load_certificate_chain(path: &Path) -> Result<Vec<Vec<u8>>, Error> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::io(format_args!("{}", path.display()), e))?;
    veriflash_sig::certificates_from_pem(&text).map_err(|e| {
        Error::new(ErrorKind::InvalidInput, format!("{}: {e}", path.display())).with_source(e)
    })
}

/// Loads a public key (`PUBLIC KEY` PEM) for checking a signature made elsewhere.
///
/// # Errors
/// [`ErrorKind::Io`] when the file cannot be read; [`ErrorKind::InvalidKey`] when it holds no
/// usable public key.
pub fn load_public_key(path: &Path) -> Result<veriflash_sig::VerifyingKey, Error> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::io(format_args!("{}", path.display()), e))?;
    veriflash_sig::VerifyingKey::from_public_key_pem(&text).map_err(|e| {
        Error::new(ErrorKind::InvalidKey, format!("{}: {e}", path.display())).with_source(e)
    })
}
