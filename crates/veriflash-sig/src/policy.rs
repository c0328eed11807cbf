//! What the verifier requires beyond "the signature verifies".

use alloc::{collections::BTreeSet, vec::Vec};

use crate::{Error, KeyId, MAX_SIGNATURES};

/// The verification policy: how many distinct trusted keys must sign, and which keys are revoked.
///
/// Built with setters from [`Policy::default`] (threshold 1, nothing revoked):
///
/// ```
/// # use veriflash_sig::{KeyId, Policy};
/// let policy = Policy::default()
///     .with_threshold(2)
///     .with_revoked_key(KeyId([7; 32]));
/// assert_eq!(policy.threshold(), 2);
/// assert!(policy.is_revoked(&KeyId([7; 32])));
/// ```
///
/// The setters cannot fail; an impossible policy (threshold 0, or above [`MAX_SIGNATURES`]) is
/// refused by [`Policy::validate`], which the verifier calls on every verification, so a bad
/// policy fails closed rather than accepting everything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    threshold: usize,
    rotation_threshold: Option<usize>,
    anchor_set_version: u64,
    revoked: BTreeSet<KeyId>,
    revoked_serials: BTreeSet<Vec<u8>>,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            threshold: 1,
            rotation_threshold: None,
            anchor_set_version: 0,
            revoked: BTreeSet::new(),
            revoked_serials: BTreeSet::new(),
        }
    }
}

impl Policy {
    /// Requires valid signatures from at least `threshold` distinct trusted keys (k of n).
    #[must_use]
    pub fn with_threshold(mut self, threshold: usize) -> Self {
        self.threshold = threshold;
        self
    }

    /// Requires a trust-anchor rotation to be signed by at least `threshold` distinct anchors of
    /// the current set (default: [`Policy::threshold`]). Raise it when routine releases need
    /// one signature but replacing the roots should need several, as TUF's root role does.
    #[must_use]
    pub fn with_rotation_threshold(mut self, threshold: usize) -> Self {
        self.rotation_threshold = Some(threshold);
        self
    }

    /// Declares the version of the anchor set in the trust store (default 0: a set never
    /// rotated). A rotation is adopted only when it offers a higher version.
    #[must_use]
    pub fn with_anchor_set_version(mut self, version: u64) -> Self {
        self.anchor_set_version = version;
        self
    }

    /// The number of distinct current anchors that must sign a trust-anchor rotation.
    #[must_use]
    pub fn rotation_threshold(&self) -> usize {
        self.rotation_threshold.unwrap_or(self.threshold)
    }

    /// The version of the anchor set in the trust store.
    #[must_use]
    pub fn anchor_set_version(&self) -> u64 {
        self.anchor_set_version
    }

    /// Revokes `key_id`: its signatures never count, even if the key is still pinned.
    #[must_use]
    pub fn with_revoked_key(mut self, key_id: KeyId) -> Self {
        self.revoked.insert(key_id);
        self
    }

    /// Revokes every key id in `key_ids`.
    #[must_use]
    pub fn with_revoked_keys(mut self, key_ids: impl IntoIterator<Item = KeyId>) -> Self {
        self.revoked.extend(key_ids);
        self
    }

    /// Revokes certificates with serial number `serial` (big-endian bytes as in the
    /// certificate; leading zero bytes are ignored): a signature whose path (leaf or
    /// intermediate) holds such a certificate never counts. Serials are matched whatever the
    /// issuer, so a vendor PKI must not reuse serials across its CAs.
    #[must_use]
    pub fn with_revoked_serial(mut self, serial: &[u8]) -> Self {
        self.revoked_serials
            .insert(normalize_serial(serial).to_vec());
        self
    }

    /// Whether certificate serial `serial` is revoked.
    #[must_use]
    pub fn is_serial_revoked(&self, serial: &[u8]) -> bool {
        self.revoked_serials.contains(normalize_serial(serial))
    }

    /// The number of distinct trusted keys that must sign.
    #[must_use]
    pub fn threshold(&self) -> usize {
        self.threshold
    }

    /// The revoked key ids.
    #[must_use]
    pub fn revoked(&self) -> &BTreeSet<KeyId> {
        &self.revoked
    }

    /// Whether `key_id` is revoked.
    #[must_use]
    pub fn is_revoked(&self, key_id: &KeyId) -> bool {
        self.revoked.contains(key_id)
    }

    /// Checks that the policy can be met at all.
    ///
    /// # Errors
    /// [`Error::InvalidPolicy`] when the threshold is 0 (would accept unsigned data) or above
    /// [`MAX_SIGNATURES`] (could never be met), and the same for the rotation threshold.
    pub fn validate(&self) -> Result<(), Error> {
        for threshold in [self.threshold, self.rotation_threshold()] {
            if threshold == 0 {
                return Err(Error::InvalidPolicy {
                    reason: "threshold must be at least 1",
                });
            }
            if threshold > MAX_SIGNATURES {
                return Err(Error::InvalidPolicy {
                    reason: "threshold exceeds the maximum number of signatures",
                });
            }
        }
        Ok(())
    }
}

fn normalize_serial(mut serial: &[u8]) -> &[u8] {
    while let [0, rest @ ..] = serial {
        serial = rest;
    }
    serial
}
