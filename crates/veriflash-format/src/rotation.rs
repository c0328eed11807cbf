//! The manifest's `trustRotation` (FORMAT.md §3.2): a new trust-anchor set that the package
//! asks the device to adopt once the update succeeds.
//!
//! This crate only frames the anchors (each must be one DER SEQUENCE within its limit); the
//! signature crate parses them as keys or certificates, and decides whether the rotation is
//! authorized. The same DER is the natural form to persist an anchor set on a device, so it can
//! be read back with [`TrustRotation::from_der`] outside of a manifest.

use alloc::format;
use alloc::vec::Vec;

use crate::Error;
use crate::der_io::{
    DerCursor, TAG_CONTEXT_0, TAG_INTEGER, TAG_SEQUENCE, decode_u64, push_tlv, push_u64, to_u64,
};
use crate::limits::{MAX_ANCHOR_LEN, MAX_ROTATION_ANCHORS};
use crate::section::MANIFEST;

/// One anchor of a rotated set, as DER.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RotationAnchor {
    /// A root certificate (RFC 5280 `Certificate`): its key is the anchor and its subject,
    /// basicConstraints and pathLen bind the chains that end at it.
    Certificate(Vec<u8>),
    /// A bare root key (`SubjectPublicKeyInfo`), encoded `[0] EXPLICIT` in the manifest.
    PublicKey(Vec<u8>),
}

impl RotationAnchor {
    /// The anchor's own DER (the certificate or the SubjectPublicKeyInfo, without the tag
    /// that tells them apart).
    #[must_use]
    pub fn der(&self) -> &[u8] {
        match self {
            Self::Certificate(der) | Self::PublicKey(der) => der,
        }
    }
}

/// A new trust-anchor set carried by a manifest, and the form in which a device keeps its
/// current set.
///
/// ```asn1
/// TrustRotation ::= SEQUENCE {
///     anchorSetVersion  INTEGER (0..18446744073709551615),
///     threshold         INTEGER (1..MAX_ROTATION_ANCHORS),
///     anchors           SEQUENCE SIZE (1..MAX_ROTATION_ANCHORS) OF RotationAnchor
/// }
/// RotationAnchor ::= CHOICE {
///     certificate       Certificate,
///     publicKey     [0] EXPLICIT SubjectPublicKeyInfo
/// }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustRotation {
    /// The set's version: a device adopts a set only when this is above the version of the set
    /// it holds, so an old rotation cannot be replayed to bring back retired anchors. 0 is the
    /// provisioned set, which no rotation can offer.
    pub version: u64,
    /// How many distinct anchors of the new set must sign a package once it is adopted (and
    /// must have signed the package that carries it).
    pub threshold: u32,
    /// The anchors, 1 to [`MAX_ROTATION_ANCHORS`], no two with the same DER.
    pub anchors: Vec<RotationAnchor>,
}

fn invalid(field: &str, reason: alloc::string::String) -> Error {
    Error::InvalidField {
        section: MANIFEST,
        field: format!("trust_rotation {field}"),
        reason,
    }
}

impl TrustRotation {
    /// Checks the rules of FORMAT.md §3.2 that do not need the signature crate: a threshold in
    /// `1..=anchors`, 1 to [`MAX_ROTATION_ANCHORS`] distinct anchors,
    /// each one DER SEQUENCE of at most [`MAX_ANCHOR_LEN`] bytes.
    ///
    /// # Errors
    /// [`Error::InvalidField`] or [`Error::LimitExceeded`] naming the first broken rule.
    pub fn validate(&self) -> Result<(), Error> {
        check_anchor_count(self.anchors.len())?;
        let count = u32::try_from(self.anchors.len()).unwrap_or(u32::MAX);
        if self.threshold == 0 || self.threshold > count {
            return Err(invalid(
                "threshold",
                format!(
                    "is {}, but must be 1 to {count} (the number of anchors)",
                    self.threshold
                ),
            ));
        }
        for (i, anchor) in self.anchors.iter().enumerate() {
            check_anchor_der(i, anchor.der())?;
            if self.anchors.iter().take(i).any(|a| a.der() == anchor.der()) {
                return Err(invalid(&format!("anchors[{i}]"), "is listed twice".into()));
            }
        }
        Ok(())
    }

    /// Parses a `TrustRotation` on its own (a device's persisted anchor set): strict DER,
    /// exactly one value with no trailing bytes, then [`TrustRotation::validate`].
    ///
    /// # Errors
    /// [`Error::Truncated`], [`Error::TrailingData`], [`Error::Malformed`],
    /// [`Error::LimitExceeded`] or [`Error::InvalidField`].
    pub fn from_der(der: &[u8]) -> Result<Self, Error> {
        let limit = MAX_ROTATION_ANCHORS
            .saturating_mul(MAX_ANCHOR_LEN.saturating_add(8))
            .saturating_add(64);
        if der.len() > limit {
            return Err(Error::LimitExceeded {
                what: "trust rotation length",
                limit: to_u64(limit),
                found: to_u64(der.len()),
            });
        }
        let outer = DerCursor::read_outer(der, TAG_SEQUENCE, MANIFEST, &"TrustRotation")?;
        Self::from_body(&mut outer.cursor(MANIFEST))
    }

    /// Parses the fields of a `TrustRotation` from the cursor over its body.
    pub(crate) fn from_body(r: &mut DerCursor<'_>) -> Result<Self, Error> {
        let version_tlv = r.read(TAG_INTEGER, &"trust_rotation version")?;
        let version = decode_u64(MANIFEST, &version_tlv, &"trust_rotation version")?;
        let threshold_tlv = r.read(TAG_INTEGER, &"trust_rotation threshold")?;
        let threshold = decode_u64(MANIFEST, &threshold_tlv, &"trust_rotation threshold")?;
        let threshold = u32::try_from(threshold).map_err(|_| Error::LimitExceeded {
            what: "trust rotation threshold",
            limit: to_u64(MAX_ROTATION_ANCHORS),
            found: threshold,
        })?;
        let list = r.read(TAG_SEQUENCE, &"trust_rotation anchors")?;
        let mut lr = list.cursor(MANIFEST);
        let count = lr.count(&"trust_rotation anchors")?;
        check_anchor_count(count)?;
        let mut anchors = Vec::with_capacity(count);
        for i in 0..count {
            let what = format!("trust_rotation anchors[{i}]");
            let anchor = match lr.peek_tag() {
                Some(TAG_CONTEXT_0) => {
                    let wrapper = lr.read(TAG_CONTEXT_0, &what)?;
                    let mut w = wrapper.cursor(MANIFEST);
                    let spki = w.read(TAG_SEQUENCE, &what)?;
                    w.finish(&what)?;
                    check_anchor_der(i, spki.raw)?;
                    RotationAnchor::PublicKey(spki.raw.to_vec())
                }
                _ => {
                    let cert = lr.read(TAG_SEQUENCE, &what)?;
                    check_anchor_der(i, cert.raw)?;
                    RotationAnchor::Certificate(cert.raw.to_vec())
                }
            };
            anchors.push(anchor);
        }
        r.finish(&"TrustRotation")?;
        let rotation = Self {
            version,
            threshold,
            anchors,
        };
        rotation.validate()?;
        Ok(rotation)
    }

    /// Writes the rotation as DER, after [`TrustRotation::validate`].
    ///
    /// # Errors
    /// What [`TrustRotation::validate`] returns.
    pub fn to_der(&self) -> Result<Vec<u8>, Error> {
        self.validate()?;
        let mut out = Vec::new();
        push_tlv(&mut out, TAG_SEQUENCE, &self.encode_body());
        Ok(out)
    }

    /// The fields of the SEQUENCE, without its tag and length (the manifest writes them under
    /// `[1] IMPLICIT`).
    pub(crate) fn encode_body(&self) -> Vec<u8> {
        let mut body = Vec::new();
        push_u64(&mut body, self.version);
        push_u64(&mut body, u64::from(self.threshold));
        let mut anchors = Vec::new();
        for anchor in &self.anchors {
            match anchor {
                RotationAnchor::Certificate(der) => anchors.extend_from_slice(der),
                RotationAnchor::PublicKey(der) => push_tlv(&mut anchors, TAG_CONTEXT_0, der),
            }
        }
        push_tlv(&mut body, TAG_SEQUENCE, &anchors);
        body
    }
}

fn check_anchor_count(count: usize) -> Result<(), Error> {
    if count == 0 {
        return Err(invalid(
            "anchors",
            "is empty; a new set needs an anchor".into(),
        ));
    }
    if count > MAX_ROTATION_ANCHORS {
        return Err(Error::LimitExceeded {
            what: "number of rotated trust anchors",
            limit: to_u64(MAX_ROTATION_ANCHORS),
            found: to_u64(count),
        });
    }
    Ok(())
}

/// An anchor is exactly one DER SEQUENCE (a certificate or a SubjectPublicKeyInfo) of at most
/// [`MAX_ANCHOR_LEN`] bytes; what is inside is the signature crate's to judge.
fn check_anchor_der(index: usize, der: &[u8]) -> Result<(), Error> {
    if der.len() > MAX_ANCHOR_LEN {
        return Err(Error::LimitExceeded {
            what: "trust anchor length",
            limit: to_u64(MAX_ANCHOR_LEN),
            found: to_u64(der.len()),
        });
    }
    let what = format!("trust_rotation anchors[{index}]");
    let mut cursor = DerCursor::new(der, MANIFEST);
    cursor.read(TAG_SEQUENCE, &what)?;
    cursor.finish(&what)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(content: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        push_tlv(&mut out, TAG_SEQUENCE, content);
        out
    }

    fn sample() -> TrustRotation {
        TrustRotation {
            version: 7,
            threshold: 2,
            anchors: vec![
                RotationAnchor::Certificate(seq(&[0x02, 0x01, 0x05])),
                RotationAnchor::PublicKey(seq(&[0x02, 0x01, 0x06])),
            ],
        }
    }

    #[test]
    fn round_trips_both_anchor_kinds_with_the_documented_encoding() {
        let rotation = sample();
        let der = rotation.to_der().unwrap();
        // SEQUENCE { INTEGER 7, INTEGER 2, SEQUENCE { cert, [0] { spki } } }
        assert_eq!(
            der,
            [
                0x30, 0x14, 0x02, 0x01, 0x07, 0x02, 0x01, 0x02, 0x30, 0x0C, 0x30, 0x03, 0x02, 0x01,
                0x05, 0xA0, 0x05, 0x30, 0x03, 0x02, 0x01, 0x06
            ]
        );
        assert_eq!(TrustRotation::from_der(&der).unwrap(), rotation);
    }

    #[test]
    fn refuses_what_would_make_the_set_unusable_or_ambiguous() {
        let mut r = sample();
        r.threshold = 3;
        assert!(matches!(r.to_der(), Err(Error::InvalidField { .. })));
        r.threshold = 0;
        assert!(matches!(r.to_der(), Err(Error::InvalidField { .. })));
        let mut r = sample();
        r.anchors.push(r.anchors[0].clone());
        assert!(matches!(r.to_der(), Err(Error::InvalidField { .. })));
        let mut r = sample();
        r.anchors.clear();
        assert!(matches!(r.to_der(), Err(Error::InvalidField { .. })));
        let mut r = sample();
        r.anchors = vec![RotationAnchor::PublicKey(seq(&[1])); MAX_ROTATION_ANCHORS + 1];
        assert!(matches!(r.to_der(), Err(Error::LimitExceeded { .. })));
        let mut r = sample();
        r.anchors[0] = RotationAnchor::Certificate(vec![0x04, 0x00]);
        assert!(matches!(r.to_der(), Err(Error::Malformed { .. })));
        let mut r = sample();
        r.anchors[1] = RotationAnchor::PublicKey(seq(&vec![0; MAX_ANCHOR_LEN]));
        assert!(matches!(r.to_der(), Err(Error::LimitExceeded { .. })));
    }

    #[test]
    fn parser_refuses_truncation_trailing_bytes_and_stray_tags() {
        let der = sample().to_der().unwrap();
        for cut in 0..der.len() {
            assert!(
                TrustRotation::from_der(&der[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        let mut long = der.clone();
        long.push(0);
        assert!(matches!(
            TrustRotation::from_der(&long),
            Err(Error::TrailingData { .. })
        ));
        // A [0] wrapper holding two values, or something other than a SEQUENCE.
        let mut bad = der.clone();
        let at = bad.iter().position(|&b| b == 0xA0).unwrap();
        bad[at + 2] = 0x04;
        assert!(TrustRotation::from_der(&bad).is_err());
        // Every single-byte flip is either refused or parses to a valid set (never a panic).
        for i in 0..der.len() {
            let mut flipped = der.clone();
            flipped[i] ^= 0x41;
            if let Ok(r) = TrustRotation::from_der(&flipped) {
                r.validate().unwrap();
            }
        }
    }
}
