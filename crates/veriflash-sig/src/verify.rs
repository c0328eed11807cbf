//! The verifier: signatures + trust store + policy -> a proof that a message is authentic.

use alloc::vec::Vec;
use core::fmt;

use crate::{
    CERTIFICATE_ALGORITHMS, ChainPolicy, DEFAULT_ALGORITHMS, Error, KeyId, ObjectIdentifier,
    Policy, SignatureAlgorithm, TimePolicy, TrustStore, VerifyingKey,
};

/// The most signatures one message may carry (FORMAT.md §6 `MAX_SIGNATURES`). More is refused
/// outright with [`Error::TooManySignatures`]: a budget on the verification loop, so a hostile
/// package cannot make a device run thousands of signature checks.
pub const MAX_SIGNATURES: usize = 16;

/// One signature as it appears in a package (a `SignatureEntry`, FORMAT.md §4), borrowed from
/// the parsed signature block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureInput<'a> {
    /// The signature algorithm OID.
    pub algorithm: ObjectIdentifier,
    /// The key id of the key that made the signature; selects the trust anchor.
    pub key_id: KeyId,
    /// The signature bytes, in the algorithm's encoding (DER `Ecdsa-Sig-Value` for ECDSA).
    pub signature: &'a [u8],
    /// The signer's X.509 chain as DER certificates, leaf first, then intermediates (any order).
    /// When non-empty, the leaf must chain to an anchor ([`crate::verify_chain`]) and its key
    /// makes the signature; `key_id` must be that key's id.
    pub certificates: Vec<&'a [u8]>,
}

impl<'a> SignatureInput<'a> {
    /// A signature by a pinned key, without certificates.
    #[must_use]
    pub fn new(algorithm: ObjectIdentifier, key_id: KeyId, signature: &'a [u8]) -> Self {
        Self {
            algorithm,
            key_id,
            signature,
            certificates: Vec::new(),
        }
    }
}

/// Checks signatures over a message against a trust store, a list of algorithms and a policy.
///
/// Built from a trust store with [`Verifier::new`], then optionally
/// [`with_policy`](Verifier::with_policy) and [`with_algorithms`](Verifier::with_algorithms).
/// The only way to get a [`VerifiedMessage`] is [`Verifier::verify`].
///
/// # Semantics (fail closed)
/// 1. An empty trust store is [`Error::NoTrustAnchors`], an invalid policy
///    [`Error::InvalidPolicy`], no signature [`Error::NoSignatures`], more than
///    [`MAX_SIGNATURES`] [`Error::TooManySignatures`] — before any cryptography.
/// 2. Each signature, in order, is refused if it names an algorithm not in the list, names a
///    revoked key, or — without certificates — names a key the store does not have, or — with
///    certificates — its leaf does not chain to an anchor under the verifier's [`ChainPolicy`]
///    and [`TimePolicy`] (default: codeSigning required, [`TimePolicy::NoClock`]), its leaf key
///    id differs from the signature's key id, or a certificate or key of its path is revoked;
///    or if it does not verify strictly under the (leaf) key. A key id already counted is not
///    checked again, so the same key signing twice — directly or through two chains — counts
///    once.
/// 3. As soon as [`Policy::threshold`] distinct keys have verified, the message is accepted;
///    signatures after that point are not examined. Refused signatures do not stop the loop:
///    an unknown or unsupported one is skipped when others meet the threshold.
/// 4. Otherwise: if no signature verified, the error of the *first* signature is returned (so a
///    single-signature package reports exactly why it failed); else
///    [`Error::ThresholdNotMet`].
#[derive(Clone)]
pub struct Verifier<'a> {
    trust: &'a dyn TrustStore,
    algorithms: &'a [&'a dyn SignatureAlgorithm],
    certificate_algorithms: &'a [&'a dyn SignatureAlgorithm],
    policy: Policy,
    time: TimePolicy,
    chain_policy: ChainPolicy,
}

impl<'a> Verifier<'a> {
    /// A verifier over `trust` with every supported algorithm ([`DEFAULT_ALGORITHMS`]) and
    /// [`Policy::default`] (one valid signature from a pinned, unrevoked key).
    #[must_use]
    pub fn new(trust: &'a dyn TrustStore) -> Self {
        Self {
            trust,
            algorithms: DEFAULT_ALGORITHMS,
            certificate_algorithms: CERTIFICATE_ALGORITHMS,
            policy: Policy::default(),
            time: TimePolicy::NoClock,
            chain_policy: ChainPolicy::default(),
        }
    }

    /// Sets how certificate validity dates are checked (default [`TimePolicy::NoClock`]: a
    /// device without a trusted clock; pass [`TimePolicy::TrustedTime`] when it has one).
    #[must_use]
    pub fn with_time(mut self, time: TimePolicy) -> Self {
        self.time = time;
        self
    }

    /// Sets the certificate chain policy (default: the leaf must allow codeSigning).
    #[must_use]
    pub fn with_chain_policy(mut self, chain_policy: ChainPolicy) -> Self {
        self.chain_policy = chain_policy;
        self
    }

    /// Replaces the policy (threshold, revoked keys).
    #[must_use]
    pub fn with_policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// Replaces the list of accepted algorithms, e.g. to allow only one on a device. A signature
    /// whose algorithm is not in the list fails with [`Error::UnsupportedAlgorithm`]. Chains are
    /// restricted to the same list; [`Verifier::with_certificate_algorithms`] (called after this)
    /// allows others in certificates.
    #[must_use]
    pub fn with_algorithms(mut self, algorithms: &'a [&'a dyn SignatureAlgorithm]) -> Self {
        self.algorithms = algorithms;
        self.certificate_algorithms = algorithms;
        self
    }

    /// Replaces the list of algorithms certificates of a chain may be signed with (default
    /// [`CERTIFICATE_ALGORITHMS`]: the package algorithms plus SHA-384/512 and P-384, as real CA
    /// hierarchies use).
    #[must_use]
    pub fn with_certificate_algorithms(
        mut self,
        algorithms: &'a [&'a dyn SignatureAlgorithm],
    ) -> Self {
        self.certificate_algorithms = algorithms;
        self
    }

    /// The policy in force.
    #[must_use]
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The same verifier — algorithms, time, chain policy, revocations — over another trust
    /// store, an anchor set of version `anchor_set_version` that requires `threshold`
    /// signatures (or this verifier's threshold, if higher): for checking a package again
    /// against the anchors a device holds itself.
    #[must_use]
    pub fn with_trust<'b>(
        &self,
        trust: &'b dyn TrustStore,
        threshold: usize,
        anchor_set_version: u64,
    ) -> Verifier<'b>
    where
        'a: 'b,
    {
        Verifier {
            trust,
            algorithms: self.algorithms,
            certificate_algorithms: self.certificate_algorithms,
            policy: self
                .policy
                .clone()
                .with_threshold(self.policy.threshold().max(threshold))
                .with_anchor_set_version(anchor_set_version),
            time: self.time,
            chain_policy: self.chain_policy,
        }
    }

    /// Verifies `signatures` over `message` (see the type's documentation for the exact rules).
    ///
    /// # Errors
    /// [`Error::NoTrustAnchors`], [`Error::InvalidPolicy`], [`Error::NoSignatures`],
    /// [`Error::TooManySignatures`] up front; then, when the threshold is not met, the first
    /// signature's own error ([`Error::UnsupportedAlgorithm`], any error of
    /// [`crate::verify_chain`], [`Error::LeafKeyIdMismatch`], [`Error::CertificateRevoked`], [`Error::KeyRevoked`], [`Error::UnknownKey`],
    /// [`Error::KeyIdMismatch`], [`Error::AlgorithmKeyMismatch`],
    /// [`Error::MalformedSignature`], [`Error::BadSignature`]) if none verified, else
    /// [`Error::ThresholdNotMet`].
    pub fn verify<'m>(
        &self,
        message: &'m [u8],
        signatures: &[SignatureInput<'_>],
    ) -> Result<VerifiedMessage<'m>, Error> {
        self.check_up_front(signatures)?;
        let required = self.policy.threshold();
        let mut signers: Vec<KeyId> = Vec::with_capacity(required);
        let mut first_error: Option<Error> = None;
        for input in signatures {
            if signers.contains(&input.key_id) {
                continue;
            }
            match self.check_one(message, input) {
                Ok(_) => signers.push(input.key_id),
                Err(err) => {
                    first_error.get_or_insert(err);
                }
            }
            if signers.len() >= required {
                return Ok(VerifiedMessage { message, signers });
            }
        }
        match (signers.is_empty(), first_error) {
            (true, Some(err)) => Err(err),
            _ => Err(Error::ThresholdNotMet {
                required,
                valid: signers.len(),
            }),
        }
    }

    /// Decides whether `message`, whose signatures are `signatures`, may replace the trust
    /// anchors with `next` (an anchor set of version `next_version` that asks for
    /// `next_threshold` signatures), following TUF's root rotation rule:
    ///
    /// 1. `next_version` is above [`Policy::anchor_set_version`] (else
    ///    [`Error::RotationNotNewer`]: an old rotation replayed cannot bring back retired
    ///    anchors);
    /// 2. at least [`Policy::rotation_threshold`] distinct anchors of the *current* store signed
    ///    (else [`Error::RotationNotAuthorized`]);
    /// 3. at least `next_threshold` distinct anchors of `next` signed, under the same
    ///    algorithms, chain and time policies and revocations (else
    ///    [`Error::RotationNotProven`]): the new set demonstrably works, so a mistake in it
    ///    cannot lock devices out of every later update.
    ///
    /// Anchors are counted, not signers: two leaf certificates under one root are one vote.
    /// Every signature is examined (no early exit), at most [`MAX_SIGNATURES`] of them.
    ///
    /// # Errors
    /// The up-front errors of [`Verifier::verify`], [`Error::InvalidPolicy`] for a
    /// `next_threshold` of 0 or above [`MAX_SIGNATURES`], [`Error::NoTrustAnchors`] for an
    /// empty `next`, and the three rotation errors above.
    pub fn verify_rotation(
        &self,
        message: &[u8],
        signatures: &[SignatureInput<'_>],
        next: &dyn TrustStore,
        next_version: u64,
        next_threshold: usize,
    ) -> Result<RotationApproval, Error> {
        if next_version <= self.policy.anchor_set_version() {
            return Err(Error::RotationNotNewer {
                current: self.policy.anchor_set_version(),
                offered: next_version,
            });
        }
        let current = self.signing_anchors(message, signatures)?;
        let required = self.policy.rotation_threshold();
        if current.len() < required {
            return Err(Error::RotationNotAuthorized {
                required,
                valid: current.len(),
            });
        }
        let next_verifier = Verifier {
            trust: next,
            algorithms: self.algorithms,
            certificate_algorithms: self.certificate_algorithms,
            policy: self.policy.clone().with_threshold(next_threshold),
            time: self.time,
            chain_policy: self.chain_policy,
        };
        let proven = next_verifier.signing_anchors(message, signatures)?;
        if proven.len() < next_threshold {
            return Err(Error::RotationNotProven {
                required: next_threshold,
                valid: proven.len(),
            });
        }
        Ok(RotationApproval {
            current,
            next: proven,
        })
    }

    /// The checks made before any cryptography: a store with anchors, a policy that can be met,
    /// 1 to [`MAX_SIGNATURES`] signatures.
    fn check_up_front(&self, signatures: &[SignatureInput<'_>]) -> Result<(), Error> {
        if self.trust.is_empty() {
            return Err(Error::NoTrustAnchors);
        }
        self.policy.validate()?;
        if signatures.is_empty() {
            return Err(Error::NoSignatures);
        }
        if signatures.len() > MAX_SIGNATURES {
            return Err(Error::TooManySignatures {
                count: signatures.len(),
                limit: MAX_SIGNATURES,
            });
        }
        Ok(())
    }

    /// The distinct anchors of this verifier's store that valid signatures chain to (every
    /// signature examined; refused ones simply do not count).
    fn signing_anchors(
        &self,
        message: &[u8],
        signatures: &[SignatureInput<'_>],
    ) -> Result<Vec<KeyId>, Error> {
        self.check_up_front(signatures)?;
        let mut anchors: Vec<KeyId> = Vec::new();
        let mut signers: Vec<KeyId> = Vec::new();
        for input in signatures {
            if signers.contains(&input.key_id) {
                continue;
            }
            if let Ok(anchor) = self.check_one(message, input) {
                signers.push(input.key_id);
                if !anchors.contains(&anchor) {
                    anchors.push(anchor);
                }
            }
        }
        Ok(anchors)
    }

    /// Checks one signature; `Ok` means it counts toward the threshold, and holds the key id of
    /// the anchor it chains to (the signing key itself when pinned directly).
    fn check_one(&self, message: &[u8], input: &SignatureInput<'_>) -> Result<KeyId, Error> {
        let key_id = input.key_id;
        let algorithm = self
            .algorithms
            .iter()
            .find(|algorithm| algorithm.oid() == input.algorithm)
            .ok_or(Error::UnsupportedAlgorithm {
                oid: input.algorithm,
            })?;
        if self.policy.is_revoked(&key_id) {
            return Err(Error::KeyRevoked { key_id });
        }
        if let Some((leaf, intermediates)) = input.certificates.split_first() {
            let (key, anchor) = self.check_chain(key_id, leaf, intermediates)?;
            return algorithm
                .verify(&key, message, input.signature)
                .map(|()| anchor);
        }
        let anchor = self
            .trust
            .anchor(&key_id)
            .ok_or(Error::UnknownKey { key_id })?;
        let anchor_key_id = anchor.key_id();
        if anchor_key_id != key_id {
            return Err(Error::KeyIdMismatch {
                key_id,
                anchor_key_id,
            });
        }
        algorithm
            .verify(anchor.key(), message, input.signature)
            .map(|()| key_id)
    }

    /// Verifies a signature's chain and returns the leaf key it must be checked with and the
    /// key id of the anchor the chain ends at.
    fn check_chain(
        &self,
        key_id: KeyId,
        leaf: &[u8],
        intermediates: &[&[u8]],
    ) -> Result<(VerifyingKey, KeyId), Error> {
        if self.trust.chain_anchors().is_empty() {
            return Err(Error::CertificatesUnsupported { key_id });
        }
        let path = crate::verify_chain_with_algorithms(
            leaf,
            intermediates,
            self.trust,
            self.time,
            self.chain_policy,
            self.certificate_algorithms,
        )?;
        let leaf_key_id = path.leaf_key().key_id();
        if leaf_key_id != key_id {
            return Err(Error::LeafKeyIdMismatch {
                key_id,
                leaf_key_id,
            });
        }
        for cert in path.certificates() {
            if self.policy.is_serial_revoked(cert.serial()) {
                return Err(Error::CertificateRevoked {
                    serial: crate::chain::hex(cert.serial()),
                });
            }
            if self.policy.is_revoked(&cert.key_id()) {
                return Err(Error::KeyRevoked {
                    key_id: cert.key_id(),
                });
            }
        }
        if self.policy.is_revoked(&path.anchor_key_id()) {
            return Err(Error::KeyRevoked {
                key_id: path.anchor_key_id(),
            });
        }
        Ok((path.leaf_key().clone(), path.anchor_key_id()))
    }
}

impl fmt::Debug for Verifier<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("algorithms", &self.algorithms)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

/// Proof that a message carries valid signatures from enough distinct trusted keys.
///
/// Only [`Verifier::verify`] makes one: there is no public constructor and the fields are
/// private, so code that takes a `VerifiedMessage` (the core's `VerifiedManifest`) cannot be
/// handed unverified bytes.
#[derive(Debug)]
pub struct VerifiedMessage<'m> {
    message: &'m [u8],
    signers: Vec<KeyId>,
}

impl<'m> VerifiedMessage<'m> {
    /// The verified message bytes (the same slice that was passed to [`Verifier::verify`]).
    #[must_use]
    pub fn message(&self) -> &'m [u8] {
        self.message
    }

    /// The distinct key ids whose signatures verified, in signature order.
    #[must_use]
    pub fn signers(&self) -> &[KeyId] {
        &self.signers
    }
}

/// Proof that a trust-anchor rotation met [`Verifier::verify_rotation`]'s rule. Only that
/// method makes one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationApproval {
    current: Vec<KeyId>,
    next: Vec<KeyId>,
}

impl RotationApproval {
    /// The distinct anchors of the current set that signed, in signature order.
    #[must_use]
    pub fn current_signers(&self) -> &[KeyId] {
        &self.current
    }

    /// The distinct anchors of the new set that signed, in signature order.
    #[must_use]
    pub fn next_signers(&self) -> &[KeyId] {
        &self.next
    }
}
