//! X.509 certificate chains from a signer's leaf certificate to a pinned trust anchor.
//!
//! [`verify_chain`] is a small, strict path validator in the style of webpki: it builds a path
//! from the leaf through the offered intermediates to an anchor of a [`TrustStore`] (a pinned
//! root certificate, matched by subject name, or a pinned root key), checking on the way every
//! rule DESIGN.md §3 names and the RFC 5280 profile rules docs/SIGNING.md lists, and returns a
//! [`VerifiedPath`] — a proof token only it can make.

use alloc::{string::String, vec::Vec};
use core::{cell::OnceCell, fmt::Write as _};

use der::{Decode, Encode, asn1::AnyRef, asn1::BitStringRef};
use x509_cert::{
    Certificate,
    ext::pkix::{
        AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectKeyIdentifier,
    },
};

use crate::{
    CERTIFICATE_ALGORITHMS, Error, KeyId, ObjectIdentifier, SignatureAlgorithm, TrustAnchor,
    TrustStore, VerifyingKey,
};

/// The most intermediates one [`verify_chain`] call accepts; more is refused with
/// [`Error::TooManyCertificates`] before any parsing. This bounds memory only (at most
/// [`MAX_CERTIFICATE_LEN`] each): the *work* of path building is bounded by
/// [`MAX_CHAIN_SIGNATURE_CHECKS`], however many certificates are offered, and a certificate
/// that is never a candidate issuer is never parsed beyond its names. (A package carries at
/// most 8 certificates per signature, FORMAT.md.)
pub const MAX_INTERMEDIATES: usize = 256;
/// The default most intermediates a built path may contain (leaf and anchor not counted);
/// [`ChainPolicy::with_max_intermediates`] changes it.
pub const MAX_PATH_INTERMEDIATES: usize = 6;
/// The most signature checks one [`verify_chain`] call makes while building a path (as
/// webpki's budget, 100), so a hostile pool of look-alike or cross-signed intermediates cannot
/// make path building exponential. Every (certificate, candidate issuer) visit is charged, a
/// pair met again on another path too (its result is reused, the arithmetic is not redone), and
/// the search descends only through verified signatures, so the whole search costs at most this
/// many signature checks plus `(MAX_CHAIN_SIGNATURE_CHECKS + 1) * (anchors + offered)` name
/// comparisons, however many paths the pool holds. Exhausting it is
/// [`Error::ChainBudgetExceeded`].
pub const MAX_CHAIN_SIGNATURE_CHECKS: usize = 100;
/// The largest DER certificate accepted.
pub const MAX_CERTIFICATE_LEN: usize = 16 * 1024;

/// `id-kp-codeSigning` (RFC 5280 §4.2.1.12, OID 1.3.6.1.5.5.7.3.3).
pub const ID_KP_CODE_SIGNING: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.3");

const ID_CE_BASIC_CONSTRAINTS: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.19");
const ID_CE_KEY_USAGE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.15");
const ID_CE_EXT_KEY_USAGE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.37");
const ID_CE_SUBJECT_KEY_ID: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.14");
const ID_CE_AUTHORITY_KEY_ID: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.35");
const ID_CE_SUBJECT_ALT_NAME: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.17");

/// The DER of an empty `Name` (an `RDNSequence` with no RDN).
const EMPTY_NAME_DER: [u8; 2] = [0x30, 0x00];

/// Whether certificate validity dates are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimePolicy {
    /// The caller has a trusted clock: every certificate of the path, the pinned root
    /// certificate included, must be valid at this time (seconds since the Unix epoch), bounds
    /// included.
    TrustedTime(u64),
    /// No trusted clock (most modems): validity dates are not checked, so an expired signing
    /// certificate cannot brick a fleet's update path; `security_version` orders packages.
    NoClock,
}

/// The extendedKeyUsage the leaf certificate must carry.
///
/// RFC 5280 §4.2.1.12 reads a certificate without extendedKeyUsage as unrestricted. For
/// firmware signing that is too loose by default — any certificate of the CA without the
/// extension (a TLS server's, a mail user's) could sign firmware — so the default demands the
/// extension; [`EkuPolicy::IfPresent`] is the RFC's reading, for PKIs whose signing leaves carry
/// no extendedKeyUsage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum EkuPolicy {
    /// An extendedKeyUsage extension listing `id-kp-codeSigning` (the default).
    #[default]
    RequireCodeSigning,
    /// An extendedKeyUsage extension listing this OID (a vendor's firmware-signing purpose).
    RequireOid(ObjectIdentifier),
    /// When the leaf has an extendedKeyUsage extension it must list this OID; a leaf without
    /// the extension is unrestricted (RFC 5280) and accepted.
    IfPresent(ObjectIdentifier),
    /// Any or no extendedKeyUsage.
    Any,
}

/// How strictly the RFC 5280 profile of *conforming CAs* is enforced on top of what path
/// validation (RFC 5280 §6) requires.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CertificateProfile {
    /// The default: also every CA certificate of the path (the pinned root included) carries a
    /// subjectKeyIdentifier (§4.2.1.2) and every certificate below the anchor an
    /// authorityKeyIdentifier with a keyIdentifier (§4.2.1.1). openssl 3 writes both by default,
    /// and a firmware trust store is a small PKI its vendor controls, so a certificate without
    /// them is a sign of a hand-made or foreign chain.
    #[default]
    Strict,
    /// Key identifiers may be missing (older PKIs). Every other rule still applies.
    Lenient,
}

/// What [`verify_chain`] requires beyond signatures and structure.
///
/// ```
/// # use veriflash_sig::{ChainPolicy, CertificateProfile, EkuPolicy, ObjectIdentifier};
/// let vendor = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.55555.1");
/// let policy = ChainPolicy::default()
///     .with_eku(EkuPolicy::RequireOid(vendor))
///     .with_max_intermediates(2)
///     .with_profile(CertificateProfile::Lenient);
/// assert_eq!(policy.eku(), EkuPolicy::RequireOid(vendor));
/// assert_eq!(policy.max_intermediates(), 2);
/// assert_eq!(ChainPolicy::default().eku(), EkuPolicy::RequireCodeSigning);
/// assert_eq!(ChainPolicy::default().profile(), CertificateProfile::Strict);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainPolicy {
    eku: EkuPolicy,
    max_intermediates: usize,
    profile: CertificateProfile,
}

impl Default for ChainPolicy {
    fn default() -> Self {
        Self {
            eku: EkuPolicy::default(),
            max_intermediates: MAX_PATH_INTERMEDIATES,
            profile: CertificateProfile::default(),
        }
    }
}

impl ChainPolicy {
    /// Replaces the extendedKeyUsage requirement on the leaf.
    #[must_use]
    pub fn with_eku(mut self, eku: EkuPolicy) -> Self {
        self.eku = eku;
        self
    }

    /// The extendedKeyUsage requirement on the leaf.
    #[must_use]
    pub fn eku(&self) -> EkuPolicy {
        self.eku
    }

    /// Sets the most intermediates a path may hold (default [`MAX_PATH_INTERMEDIATES`]); 0
    /// allows only leaves signed by an anchor. Self-issued intermediates count here (this bounds
    /// the path, not a CA's pathLenConstraint).
    #[must_use]
    pub fn with_max_intermediates(mut self, max: usize) -> Self {
        self.max_intermediates = max;
        self
    }

    /// The most intermediates a path may hold.
    #[must_use]
    pub fn max_intermediates(&self) -> usize {
        self.max_intermediates
    }

    /// Sets the certificate profile (default [`CertificateProfile::Strict`]).
    #[must_use]
    pub fn with_profile(mut self, profile: CertificateProfile) -> Self {
        self.profile = profile;
        self
    }

    /// The certificate profile.
    #[must_use]
    pub fn profile(&self) -> CertificateProfile {
        self.profile
    }
}

/// One certificate of a [`VerifiedPath`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathCertificate {
    subject: String,
    serial: Vec<u8>,
    key_id: KeyId,
}

impl PathCertificate {
    /// The subject distinguished name (RFC 4514 text).
    #[must_use]
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The serial number, big-endian, without leading zero bytes.
    #[must_use]
    pub fn serial(&self) -> &[u8] {
        &self.serial
    }

    /// The key id of the certificate's public key.
    #[must_use]
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }
}

/// Proof that a leaf certificate chains to a trust anchor under a [`ChainPolicy`] and
/// [`TimePolicy`]. Only [`verify_chain`] makes one.
#[derive(Debug, Clone)]
pub struct VerifiedPath {
    leaf_key: VerifyingKey,
    certificates: Vec<PathCertificate>,
    anchor_key_id: KeyId,
}

impl VerifiedPath {
    /// The leaf certificate's public key: what the signature over the message is checked with.
    #[must_use]
    pub fn leaf_key(&self) -> &VerifyingKey {
        &self.leaf_key
    }

    /// The path's certificates, leaf first, then the intermediates used, in order (the anchor
    /// is not included).
    #[must_use]
    pub fn certificates(&self) -> &[PathCertificate] {
        &self.certificates
    }

    /// The key id of the trust anchor the path ends at.
    #[must_use]
    pub fn anchor_key_id(&self) -> KeyId {
        self.anchor_key_id
    }
}

/// The basicConstraints extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Basic {
    ca: bool,
    path_len: Option<u8>,
    critical: bool,
}

/// What path validation reads from a certificate besides its key and signature: shared by
/// offered certificates and pinned root certificates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Facts {
    pub(crate) subject: String,
    pub(crate) subject_der: Vec<u8>,
    issuer_der: Vec<u8>,
    basic: Option<Basic>,
    key_usage: Option<KeyUsage>,
    eku: Option<Vec<ObjectIdentifier>>,
    has_subject_key_id: bool,
    has_authority_key_id: bool,
    not_before: u64,
    not_after: u64,
}

impl Facts {
    /// Self-issued (RFC 5280 §3.2): subject and issuer are the same name.
    fn self_issued(&self) -> bool {
        self.subject_der == self.issuer_der
    }

    fn non_conforming(&self, rule: &'static str) -> Error {
        Error::NonConformingCertificate {
            subject: self.subject.clone(),
            rule,
        }
    }
}

/// A parsed, structurally checked certificate.
struct Parsed {
    facts: Facts,
    serial: Vec<u8>,
    key: VerifyingKey,
    tbs_der: Vec<u8>,
    signature: Vec<u8>,
    signature_oid: ObjectIdentifier,
    signature_parameters: Option<Vec<u8>>,
}

/// The raw outer structure of a certificate, to get the exact signed `tbsCertificate` bytes.
#[derive(der::Sequence)]
struct RawCertificate<'a> {
    tbs: AnyRef<'a>,
    algorithm: AnyRef<'a>,
    signature: BitStringRef<'a>,
}

fn malformed(index: usize, reason: &'static str) -> Error {
    Error::CertificateMalformed { index, reason }
}

fn decode(der: &[u8], index: usize) -> Result<Certificate, Error> {
    if der.len() > MAX_CERTIFICATE_LEN {
        return Err(malformed(index, "certificate is too long"));
    }
    Certificate::from_der(der).map_err(|_| malformed(index, "not a DER X.509 certificate"))
}

/// Parses a DER certificate and checks everything that does not depend on its place in a path:
/// strict DER, matching inner/outer signature algorithms, a supported key, no unknown critical
/// extension, no duplicated extension, and the RFC 5280 rules that hold for every certificate
/// (key identifiers non-critical, keyCertSign only with cA). Its own signature algorithm is only
/// recorded: it matters when its issuer checks it, never for a pinned root.
fn parse(der: &[u8], index: usize) -> Result<Parsed, Error> {
    let cert = decode(der, index)?;
    let raw = RawCertificate::from_der(der)
        .map_err(|_| malformed(index, "not a DER X.509 certificate"))?;
    let tbs_der = raw
        .tbs
        .to_der()
        .map_err(|_| malformed(index, "tbsCertificate cannot be re-encoded"))?;
    let tbs = cert.tbs_certificate();
    if tbs.signature() != cert.signature_algorithm() {
        return Err(malformed(
            index,
            "inner and outer signature algorithms differ",
        ));
    }
    let spki_der = tbs
        .subject_public_key_info()
        .to_der()
        .map_err(|_| malformed(index, "subjectPublicKeyInfo cannot be re-encoded"))?;
    let key = VerifyingKey::from_spki_der(&spki_der)?;
    let algorithm = cert.signature_algorithm();
    let signature_parameters = algorithm
        .parameters
        .as_ref()
        .map(Encode::to_der)
        .transpose()
        .map_err(|_| malformed(index, "signature algorithm parameters cannot be re-encoded"))?;
    let signature = cert
        .signature()
        .as_bytes()
        .ok_or(malformed(
            index,
            "signature bit string is not octet aligned",
        ))?
        .to_vec();
    let mut serial = tbs.serial_number().as_bytes();
    while let [0, rest @ ..] = serial {
        serial = rest;
    }
    let validity = tbs.validity();
    let mut facts = Facts {
        subject: alloc::format!("{}", tbs.subject()),
        subject_der: tbs
            .subject()
            .to_der()
            .map_err(|_| malformed(index, "subject cannot be re-encoded"))?,
        issuer_der: tbs
            .issuer()
            .to_der()
            .map_err(|_| malformed(index, "issuer cannot be re-encoded"))?,
        basic: None,
        key_usage: None,
        eku: None,
        has_subject_key_id: false,
        has_authority_key_id: false,
        not_before: validity.not_before.to_unix_duration().as_secs(),
        not_after: validity.not_after.to_unix_duration().as_secs(),
    };
    let mut seen: Vec<ObjectIdentifier> = Vec::new();
    for ext in tbs.extensions().map(Vec::as_slice).unwrap_or_default() {
        if seen.contains(&ext.extn_id) {
            return Err(malformed(index, "duplicate extension"));
        }
        seen.push(ext.extn_id);
        let value = ext.extn_value.as_bytes();
        match ext.extn_id {
            ID_CE_BASIC_CONSTRAINTS => {
                let basic = BasicConstraints::from_der(value)
                    .map_err(|_| malformed(index, "malformed basicConstraints"))?;
                facts.basic = Some(Basic {
                    ca: basic.ca,
                    path_len: basic.path_len_constraint,
                    critical: ext.critical,
                });
            }
            ID_CE_KEY_USAGE => {
                facts.key_usage = Some(
                    KeyUsage::from_der(value)
                        .map_err(|_| malformed(index, "malformed keyUsage"))?,
                );
            }
            ID_CE_EXT_KEY_USAGE => {
                facts.eku = Some(
                    ExtendedKeyUsage::from_der(value)
                        .map_err(|_| malformed(index, "malformed extendedKeyUsage"))?
                        .0,
                );
            }
            ID_CE_SUBJECT_KEY_ID if ext.critical => {
                return Err(facts.non_conforming(
                    "RFC 5280 4.2.1.2: subjectKeyIdentifier must be non-critical",
                ));
            }
            ID_CE_AUTHORITY_KEY_ID if ext.critical => {
                return Err(facts.non_conforming(
                    "RFC 5280 4.2.1.1: authorityKeyIdentifier must be non-critical",
                ));
            }
            ID_CE_SUBJECT_KEY_ID => {
                SubjectKeyIdentifier::from_der(value)
                    .map_err(|_| malformed(index, "malformed subjectKeyIdentifier"))?;
                facts.has_subject_key_id = true;
            }
            ID_CE_AUTHORITY_KEY_ID => {
                let aki = AuthorityKeyIdentifier::from_der(value)
                    .map_err(|_| malformed(index, "malformed authorityKeyIdentifier"))?;
                facts.has_authority_key_id = aki.key_identifier.is_some();
            }
            // Names are not used to decide trust beyond issuer chaining.
            ID_CE_SUBJECT_ALT_NAME => {}
            oid if ext.critical => {
                return Err(Error::UnknownCriticalExtension {
                    subject: facts.subject,
                    oid,
                });
            }
            _ => {}
        }
    }
    if facts.key_usage.is_some_and(|ku| ku.key_cert_sign()) && !facts.basic.is_some_and(|b| b.ca) {
        return Err(facts.non_conforming(
            "RFC 5280 4.2.1.3: keyUsage keyCertSign requires basicConstraints cA",
        ));
    }
    Ok(Parsed {
        facts,
        serial: serial.to_vec(),
        key,
        tbs_der,
        signature,
        signature_oid: algorithm.oid,
        signature_parameters,
    })
}

/// The subject distinguished name of a DER certificate, as RFC 4514 text, for display
/// (`veriflash inspect`). Nothing is verified.
///
/// # Errors
/// [`Error::CertificateMalformed`] when the bytes are not a DER certificate.
pub fn certificate_subject(der: &[u8]) -> Result<String, Error> {
    let cert =
        Certificate::from_der(der).map_err(|_| malformed(0, "not a DER X.509 certificate"))?;
    Ok(alloc::format!("{}", cert.tbs_certificate().subject()))
}

/// When a certificate is valid: its notBefore and notAfter, in seconds since the Unix epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validity {
    /// The first second it is valid.
    pub not_before: u64,
    /// The last second it is valid.
    pub not_after: u64,
}

impl Validity {
    /// Whether `time` (seconds since the Unix epoch) is inside the period, both ends included
    /// as [`verify_chain`] judges them.
    #[must_use]
    pub fn contains(&self, time: u64) -> bool {
        self.not_before <= time && time <= self.not_after
    }
}

/// The validity period of a DER certificate, for a signer to check before it signs (a chain
/// that has expired makes packages that devices with a trusted clock refuse). Nothing is
/// verified.
///
/// # Errors
/// [`Error::CertificateMalformed`] when the bytes are not a DER certificate.
pub fn certificate_validity(der: &[u8]) -> Result<Validity, Error> {
    let cert =
        Certificate::from_der(der).map_err(|_| malformed(0, "not a DER X.509 certificate"))?;
    let validity = cert.tbs_certificate().validity();
    Ok(Validity {
        not_before: validity.not_before.to_unix_duration().as_secs(),
        not_after: validity.not_after.to_unix_duration().as_secs(),
    })
}

/// Every `CERTIFICATE` block of a PEM text as DER, in order (a chain file as openssl writes
/// it: leaf first, then intermediates). Each is checked to parse as a certificate.
///
/// # Errors
/// [`Error::Pem`] for malformed PEM or no `CERTIFICATE` block; [`Error::CertificateMalformed`]
/// (with the block's index) for a block that is not a DER certificate.
pub fn certificates_from_pem(text: &str) -> Result<Vec<Vec<u8>>, Error> {
    let mut out = Vec::new();
    for block in crate::pem::blocks(text)? {
        if block.label == "CERTIFICATE" {
            let der = block.decode()?.to_vec();
            Certificate::from_der(&der)
                .map_err(|_| malformed(out.len(), "not a DER X.509 certificate"))?;
            out.push(der);
        }
    }
    if out.is_empty() {
        return Err(Error::Pem {
            reason: "no CERTIFICATE block",
        });
    }
    Ok(out)
}

/// The public key of a DER certificate, e.g. to check that a signing key matches the leaf
/// certificate it is packed with. Nothing is verified.
///
/// # Errors
/// As [`verify_chain`] for one certificate: [`Error::CertificateMalformed`],
/// [`Error::UnknownCriticalExtension`], [`Error::NonConformingCertificate`] or a key error.
pub fn leaf_public_key(der: &[u8]) -> Result<VerifyingKey, Error> {
    parse(der, 0).map(|parsed| parsed.key)
}

/// Verifies that the leaf certificate `leaf_der` chains, through some of `intermediates`, to a
/// trust anchor of `anchors`, with the certificate algorithms [`CERTIFICATE_ALGORITHMS`].
///
/// # Rules
/// Path validation as RFC 5280 §6 does it, for the certificates of the path that is built
/// (certificates offered but not on it are never looked at beyond their names), plus the
/// profile rules docs/SIGNING.md lists:
/// * Every certificate is strict DER with the same inner and outer signature algorithm, a
///   supported public key (P-256, P-384, RSA 2048/3072/4096 incl. `id-RSASSA-PSS`), no
///   duplicated extension, no critical extension other than basicConstraints, keyUsage,
///   extendedKeyUsage and subjectAltName (subject/authority key identifiers must be
///   non-critical, §4.2.1.1-2), and keyCertSign only together with `cA` (§4.2.1.3).
/// * Leaf: not a CA; keyUsage, when present, includes digitalSignature (absent means
///   unrestricted); extendedKeyUsage per [`ChainPolicy::eku`] (only the leaf's is checked).
/// * Each issuer, intermediate or pinned root certificate: its subject equals the child's
///   issuer name byte for byte (DER) and is not empty (§4.1.2.6), its key verifies the child's
///   signature, it has a *critical* basicConstraints with `cA` true (§4.2.1.9), its
///   pathLenConstraint (if any) is at least the number of non-self-issued intermediates below
///   it (§6.1.4 (l)-(m)), and its keyUsage (if present) includes keyCertSign. A pinned bare key
///   may sign the top certificate of the path whatever its issuer name. A pinned root's own
///   signature is never checked (it is trusted by being pinned).
/// * [`CertificateProfile::Strict`] (default): CA certificates carry a subjectKeyIdentifier,
///   certificates below the anchor an authorityKeyIdentifier keyIdentifier.
/// * Validity: with [`TimePolicy::TrustedTime`], every certificate of the path *and the pinned
///   root certificate* must be valid at that time; with [`TimePolicy::NoClock`], dates are not
///   checked.
/// * Path building: anchors are tried before intermediates, and candidates depth-first, so a
///   set holding decoys, cross-certificates or the root itself still finds a path; at most
///   [`ChainPolicy::max_intermediates`] intermediates, [`MAX_INTERMEDIATES`] offered and
///   [`MAX_CHAIN_SIGNATURE_CHECKS`] signature checks. When no path is found the error is that
///   of the candidate path that got furthest (most verified signatures).
///
/// # Errors
/// [`Error::NoTrustAnchors`], [`Error::TooManyCertificates`], and for the leaf or a certificate
/// of the best candidate path: [`Error::CertificateMalformed`],
/// [`Error::UnsupportedCertificateAlgorithm`], key errors of [`VerifyingKey::from_spki_der`]
/// (e.g. [`Error::RsaKeyTooSmall`]), [`Error::UnknownCriticalExtension`],
/// [`Error::NonConformingCertificate`], [`Error::LeafIsCa`], [`Error::KeyUsageNotAllowed`],
/// [`Error::ExtendedKeyUsageMissing`], [`Error::CertificateExpired`],
/// [`Error::CertificateNotYetValid`], [`Error::NotCa`], [`Error::PathLenExceeded`],
/// [`Error::CertificateSignatureInvalid`], [`Error::PathTooLong`], [`Error::ChainBudgetExceeded`],
/// else
/// [`Error::UntrustedRoot`] (the path ends at a self-issued certificate that is not pinned) or
/// [`Error::IssuerNotFound`].
///
/// # Example
/// ```
/// # use veriflash_sig::{verify_chain, ChainPolicy, Error, PinnedKeys, SigningKey, TimePolicy};
/// # fn main() -> Result<(), Error> {
/// let mut anchors = PinnedKeys::new();
/// anchors.add(SigningKey::generate_p256()?.verifying_key());
/// // Not a certificate at all:
/// assert!(matches!(
///     verify_chain(b"junk", &[], &anchors, TimePolicy::NoClock, ChainPolicy::default()),
///     Err(Error::CertificateMalformed { index: 0, .. })
/// ));
/// # Ok(())
/// # }
/// ```
pub fn verify_chain(
    leaf_der: &[u8],
    intermediates: &[&[u8]],
    anchors: &dyn TrustStore,
    time: TimePolicy,
    policy: ChainPolicy,
) -> Result<VerifiedPath, Error> {
    verify_chain_with_algorithms(
        leaf_der,
        intermediates,
        anchors,
        time,
        policy,
        CERTIFICATE_ALGORITHMS,
    )
}

/// [`verify_chain`] accepting only certificate signatures of `algorithms` (what
/// [`crate::Verifier`] uses for chains, so a device restricted to some algorithms is
/// restricted in chains too).
///
/// # Errors
/// As [`verify_chain`]; a certificate of the path signed with an algorithm not in the list is
/// [`Error::UnsupportedCertificateAlgorithm`].
pub fn verify_chain_with_algorithms(
    leaf_der: &[u8],
    intermediates: &[&[u8]],
    anchors: &dyn TrustStore,
    time: TimePolicy,
    policy: ChainPolicy,
    algorithms: &[&dyn SignatureAlgorithm],
) -> Result<VerifiedPath, Error> {
    if anchors.is_empty() {
        return Err(Error::NoTrustAnchors);
    }
    if intermediates.len() > MAX_INTERMEDIATES {
        return Err(Error::TooManyCertificates {
            count: intermediates.len().saturating_add(1),
            limit: MAX_INTERMEDIATES.saturating_add(1),
        });
    }
    let leaf = parse(leaf_der, 0)?;
    check_leaf(&leaf, time, policy)?;
    let offered: Vec<Offered<'_>> = intermediates
        .iter()
        .enumerate()
        .map(|(i, der)| Offered::new(der, i.saturating_add(1)))
        .collect();
    let mut search = Search {
        offered: &offered,
        anchors: anchors.chain_anchors(),
        algorithms,
        time,
        policy,
        budget: MAX_CHAIN_SIGNATURE_CHECKS,
        checked: Vec::new(),
    };
    let mut path = Vec::new();
    let anchor = match search.extend(&leaf, Node::Leaf, &mut path) {
        Ok(anchor) => anchor,
        // Nothing matched by name: an offered certificate that could not even be decoded may
        // have been the missing issuer, and is the more useful thing to report.
        Err(failure) if failure.rank == Rank::NotFound => {
            return Err(offered
                .iter()
                .find_map(|o| o.names.as_ref().err().cloned())
                .unwrap_or(failure.error));
        }
        Err(failure) => return Err(failure.error),
    };
    let mut certificates = Vec::with_capacity(path.len().saturating_add(1));
    certificates.push(PathCertificate::of(&leaf));
    for &index in &path {
        if let Some(Ok(cert)) = offered.get(index).and_then(|o| o.parsed.get()) {
            certificates.push(PathCertificate::of(cert));
        }
    }
    Ok(VerifiedPath {
        leaf_key: leaf.key,
        certificates,
        anchor_key_id: anchor,
    })
}

impl PathCertificate {
    fn of(cert: &Parsed) -> Self {
        Self {
            subject: cert.facts.subject.clone(),
            serial: cert.serial.clone(),
            key_id: cert.key.key_id(),
        }
    }
}

fn check_time(facts: &Facts, time: TimePolicy) -> Result<(), Error> {
    let TimePolicy::TrustedTime(now) = time else {
        return Ok(());
    };
    if now < facts.not_before {
        return Err(Error::CertificateNotYetValid {
            subject: facts.subject.clone(),
            not_before: facts.not_before,
            time: now,
        });
    }
    if now > facts.not_after {
        return Err(Error::CertificateExpired {
            subject: facts.subject.clone(),
            not_after: facts.not_after,
            time: now,
        });
    }
    Ok(())
}

/// RFC 5280 §4.2.1.1: certificates below the anchor name their issuer's key (strict profile).
/// The RFC exempts self-signed certificates; self-issued ones (a root offered in the chain) are
/// exempted here, since whether they are self-signed is never checked.
fn check_authority_key_id(facts: &Facts, policy: ChainPolicy) -> Result<(), Error> {
    if policy.profile == CertificateProfile::Strict
        && !facts.has_authority_key_id
        && !facts.self_issued()
    {
        return Err(facts.non_conforming(
            "RFC 5280 4.2.1.1: authorityKeyIdentifier with a keyIdentifier is required (strict profile)",
        ));
    }
    Ok(())
}

fn check_leaf(leaf: &Parsed, time: TimePolicy, policy: ChainPolicy) -> Result<(), Error> {
    let facts = &leaf.facts;
    if facts.basic.is_some_and(|b| b.ca) {
        return Err(Error::LeafIsCa {
            subject: facts.subject.clone(),
        });
    }
    if facts.key_usage.is_some_and(|ku| !ku.digital_signature()) {
        return Err(Error::KeyUsageNotAllowed {
            subject: facts.subject.clone(),
            usage: "digitalSignature",
        });
    }
    let (required, if_present) = match policy.eku {
        EkuPolicy::Any => (None, false),
        EkuPolicy::RequireCodeSigning => (Some(ID_KP_CODE_SIGNING), false),
        EkuPolicy::RequireOid(oid) => (Some(oid), false),
        EkuPolicy::IfPresent(oid) => (Some(oid), true),
    };
    if let Some(required) = required {
        let allowed = match &facts.eku {
            Some(eku) => eku.contains(&required),
            None => if_present,
        };
        if !allowed {
            return Err(Error::ExtendedKeyUsageMissing {
                subject: facts.subject.clone(),
                required,
            });
        }
    }
    check_authority_key_id(facts, policy)?;
    check_time(facts, time)
}

/// The rules for a certificate acting as an issuer, intermediate or pinned root; `below` is the
/// number of non-self-issued intermediates under it in the path.
fn check_issuer(
    facts: &Facts,
    below: usize,
    time: TimePolicy,
    policy: ChainPolicy,
) -> Result<(), Error> {
    if facts.subject_der == EMPTY_NAME_DER {
        return Err(facts
            .non_conforming("RFC 5280 4.1.2.6: a CA certificate must have a non-empty subject"));
    }
    let Some(basic) = facts.basic.filter(|b| b.ca) else {
        return Err(Error::NotCa {
            subject: facts.subject.clone(),
        });
    };
    if !basic.critical {
        return Err(facts.non_conforming(
            "RFC 5280 4.2.1.9: a CA certificate's basicConstraints must be critical",
        ));
    }
    if let Some(path_len) = basic.path_len
        && below > usize::from(path_len)
    {
        return Err(Error::PathLenExceeded {
            subject: facts.subject.clone(),
            path_len,
        });
    }
    if facts.key_usage.is_some_and(|ku| !ku.key_cert_sign()) {
        return Err(Error::KeyUsageNotAllowed {
            subject: facts.subject.clone(),
            usage: "keyCertSign",
        });
    }
    if policy.profile == CertificateProfile::Strict && !facts.has_subject_key_id {
        return Err(facts.non_conforming(
            "RFC 5280 4.2.1.2: a CA certificate must carry a subjectKeyIdentifier (strict profile)",
        ));
    }
    check_time(facts, time)
}

/// An offered intermediate: its names are decoded up front (to find candidates), the rest only
/// when it becomes a candidate issuer, at most once.
struct Offered<'a> {
    der: &'a [u8],
    index: usize,
    /// (subject, issuer) DER, or why the certificate cannot be decoded.
    names: Result<(Vec<u8>, Vec<u8>), Error>,
    parsed: OnceCell<Result<Parsed, Error>>,
}

impl<'a> Offered<'a> {
    fn new(der: &'a [u8], index: usize) -> Self {
        let names = decode(der, index).and_then(|cert| {
            let tbs = cert.tbs_certificate();
            let name = |n: &x509_cert::name::Name| {
                n.to_der()
                    .map_err(|_| malformed(index, "name cannot be re-encoded"))
            };
            Ok((name(tbs.subject())?, name(tbs.issuer())?))
        });
        Self {
            der,
            index,
            names,
            parsed: OnceCell::new(),
        }
    }

    fn subject_der(&self) -> Option<&[u8]> {
        self.names
            .as_ref()
            .ok()
            .map(|(subject, _)| subject.as_slice())
    }

    fn self_issued(&self) -> bool {
        matches!(&self.names, Ok((subject, issuer)) if subject == issuer)
    }

    fn parsed(&self) -> &Result<Parsed, Error> {
        self.parsed.get_or_init(|| parse(self.der, self.index))
    }
}

/// A certificate whose issuer is being looked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Node {
    Leaf,
    Offered(usize),
}

/// A candidate issuer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Issuer {
    Anchor(usize),
    Offered(usize),
}

/// How telling a failure is, among those at the same depth: a missing issuer says least, a
/// candidate whose signature did not verify (maybe a decoy) more, a rule broken by a candidate
/// that did sign most.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Rank {
    NotFound,
    Signature,
    Rule,
}

/// Why one candidate path failed: the number of certificates whose signatures verified before
/// it failed, how telling the failure is, and the error.
struct Failure {
    progress: usize,
    rank: Rank,
    error: Error,
}

impl Failure {
    fn at(progress: usize, error: Error) -> Self {
        let rank = match error {
            Error::IssuerNotFound { .. } | Error::UntrustedRoot { .. } => Rank::NotFound,
            Error::CertificateSignatureInvalid { .. } => Rank::Signature,
            _ => Rank::Rule,
        };
        Self {
            progress,
            rank,
            error,
        }
    }
}

/// Keeps the failure of the candidate path that got furthest (the first one among equals).
fn keep(best: &mut Option<Failure>, failure: Failure) {
    if best
        .as_ref()
        .is_none_or(|b| (failure.progress, failure.rank) > (b.progress, b.rank))
    {
        *best = Some(failure);
    }
}

struct Search<'s> {
    offered: &'s [Offered<'s>],
    anchors: Vec<&'s TrustAnchor>,
    algorithms: &'s [&'s dyn SignatureAlgorithm],
    time: TimePolicy,
    policy: ChainPolicy,
    budget: usize,
    /// Signature checks already made: a (certificate, issuer) pair is verified once per call.
    checked: Vec<(Node, Issuer, Result<(), Error>)>,
}

impl Search<'_> {
    /// Checks that `issuer_key` signed `child`, charging the budget for the visit; a pair met
    /// again reuses its result without the arithmetic.
    fn check_signature(
        &mut self,
        child: &Parsed,
        node: Node,
        issuer: Issuer,
        issuer_key: &VerifyingKey,
    ) -> Result<(), Error> {
        let mut candidates = self.algorithms.iter().filter(|a| {
            a.oid() == child.signature_oid
                && a.matches_parameters(child.signature_parameters.as_deref())
        });
        let Some(first) = candidates.next() else {
            return Err(Error::UnsupportedCertificateAlgorithm {
                oid: child.signature_oid,
            });
        };
        // Every visit is charged, a repeated one too: only a verified signature leads deeper,
        // so charging each visit bounds the number of paths walked, not just the arithmetic.
        self.budget = self
            .budget
            .checked_sub(1)
            .ok_or(Error::ChainBudgetExceeded)?;
        if let Some((_, _, result)) = self
            .checked
            .iter()
            .find(|(n, i, _)| *n == node && *i == issuer)
        {
            return result.clone();
        }
        let invalid = || Error::CertificateSignatureInvalid {
            subject: child.facts.subject.clone(),
        };
        // Algorithms sharing an AlgorithmIdentifier differ by key type (ECDSA over P-256 or
        // P-384): the one for this key decides.
        let mut result = Err(invalid());
        for algorithm in core::iter::once(first).chain(candidates) {
            match algorithm.verify(issuer_key, &child.tbs_der, &child.signature) {
                Err(Error::AlgorithmKeyMismatch { .. }) => {}
                Ok(()) => {
                    result = Ok(());
                    break;
                }
                Err(_) => break,
            }
        }
        self.checked.push((node, issuer, result.clone()));
        result
    }

    /// The number of non-self-issued intermediates in `path` (RFC 5280 §6.1.4 (l)).
    fn counted(&self, path: &[usize]) -> usize {
        path.iter()
            .filter(|&&i| self.offered.get(i).is_some_and(|o| !o.self_issued()))
            .count()
    }

    /// Finds an issuer for `child` (the leaf or `offered[path.last()]`), extending `path` with
    /// the intermediates used; returns the anchor's key id, or the failure of the candidate path
    /// that got furthest. Recursion only follows verified signatures, so its depth is bounded by
    /// the budget.
    fn extend(
        &mut self,
        child: &Parsed,
        node: Node,
        path: &mut Vec<usize>,
    ) -> Result<KeyId, Failure> {
        let depth = path.len();
        let below = self.counted(path);
        let mut best: Option<Failure> = None;
        let anchors = self.anchors.clone();
        for (index, anchor) in anchors.iter().enumerate() {
            let certificate = anchor.certificate();
            if certificate.is_some_and(|c| c.facts.subject_der != child.facts.issuer_der) {
                continue;
            }
            match self.check_signature(child, node, Issuer::Anchor(index), anchor.key()) {
                Ok(()) => {}
                Err(Error::ChainBudgetExceeded) => {
                    return Err(Failure::at(depth, Error::ChainBudgetExceeded));
                }
                // A bare key that did not sign is no evidence against the chain.
                Err(_) if certificate.is_none() => continue,
                Err(err) => {
                    keep(&mut best, Failure::at(depth, err));
                    continue;
                }
            }
            let Some(certificate) = certificate else {
                return Ok(anchor.key_id());
            };
            match check_issuer(&certificate.facts, below, self.time, self.policy) {
                Ok(()) => return Ok(anchor.key_id()),
                Err(err) => keep(&mut best, Failure::at(depth.saturating_add(1), err)),
            }
        }
        let offered = self.offered;
        if depth >= self.policy.max_intermediates {
            // An issuer by name among the offered certificates would make the path too long.
            if offered.iter().enumerate().any(|(index, candidate)| {
                candidate.subject_der() == Some(child.facts.issuer_der.as_slice())
                    && !path.contains(&index)
            }) {
                keep(
                    &mut best,
                    Failure::at(
                        depth,
                        Error::PathTooLong {
                            limit: self.policy.max_intermediates,
                        },
                    ),
                );
            }
        } else {
            for (index, candidate) in offered.iter().enumerate() {
                if candidate.subject_der() != Some(child.facts.issuer_der.as_slice())
                    || path.contains(&index)
                {
                    continue;
                }
                let issuer = match candidate.parsed() {
                    Ok(issuer) => issuer,
                    Err(err) => {
                        keep(&mut best, Failure::at(depth, err.clone()));
                        continue;
                    }
                };
                match self.check_signature(child, node, Issuer::Offered(index), &issuer.key) {
                    Ok(()) => {}
                    Err(Error::ChainBudgetExceeded) => {
                        return Err(Failure::at(depth, Error::ChainBudgetExceeded));
                    }
                    Err(err) => {
                        keep(&mut best, Failure::at(depth, err));
                        continue;
                    }
                }
                let checked = check_issuer(&issuer.facts, below, self.time, self.policy)
                    .and_then(|()| check_authority_key_id(&issuer.facts, self.policy));
                if let Err(err) = checked {
                    keep(&mut best, Failure::at(depth.saturating_add(1), err));
                    continue;
                }
                path.push(index);
                match self.extend(issuer, Node::Offered(index), path) {
                    Ok(anchor) => return Ok(anchor),
                    Err(failure) if failure.error == Error::ChainBudgetExceeded => {
                        return Err(failure);
                    }
                    Err(failure) => {
                        keep(&mut best, failure);
                        path.pop();
                    }
                }
            }
        }
        Err(best.unwrap_or_else(|| {
            let subject = child.facts.subject.clone();
            let error = if child.facts.self_issued() {
                Error::UntrustedRoot { subject }
            } else {
                Error::IssuerNotFound { subject }
            };
            Failure::at(depth, error)
        }))
    }
}

/// The parts of a pinned root certificate that path validation uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AnchorCertificate {
    pub(crate) der: Vec<u8>,
    pub(crate) facts: Facts,
}

/// Parses a root certificate to pin: its key, subject and issuer-side extensions. The root's
/// own signature (and its algorithm) is never checked: it is trusted by being pinned. Its dates
/// and CA rules are checked when a path is built to it.
pub(crate) fn parse_anchor(der: &[u8]) -> Result<(VerifyingKey, AnchorCertificate), Error> {
    let parsed = parse(der, 0)?;
    Ok((
        parsed.key,
        AnchorCertificate {
            der: der.to_vec(),
            facts: parsed.facts,
        },
    ))
}

/// Lower-case hex of `bytes` (serial numbers in errors).
pub(crate) fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().saturating_mul(2));
    for byte in bytes {
        let _ = write!(out, "{byte:02x}");
    }
    out
}
