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
