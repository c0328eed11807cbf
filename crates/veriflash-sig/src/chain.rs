//! X.509 certificate chains from a signer's leaf certificate to a pinned trust anchor.
//!
//! [`verify_chain`] is a small, strict path validator in the style of webpki: it builds a path
//! from the leaf through the offered intermediates to an anchor of a [`TrustStore`] (a pinned
//! root certificate, matched by subject name, or a pinned root key), checking on the way every
//! rule DESIGN.md §3 names, and returns a [`VerifiedPath`] — a proof token only it can make.

use alloc::{string::String, vec::Vec};
use core::fmt::Write as _;

use der::{Decode, Encode, asn1::AnyRef, asn1::BitStringRef};
use x509_cert::{
    Certificate,
    ext::pkix::{BasicConstraints, ExtendedKeyUsage, KeyUsage},
};

use crate::{
    DEFAULT_ALGORITHMS, ECDSA_WITH_SHA256, Error, ID_RSASSA_PSS, KeyId, ObjectIdentifier,
    SHA256_WITH_RSA_ENCRYPTION, SignatureAlgorithm, TrustAnchor, TrustStore, VerifyingKey,
};

/// The most intermediates one signature may offer; more is refused with
/// [`Error::TooManyCertificates`] before any parsing.
pub const MAX_INTERMEDIATES: usize = 8;
/// The most intermediates a built path may contain (leaf and anchor not counted).
pub const MAX_PATH_INTERMEDIATES: usize = 6;
/// The most signature checks one [`verify_chain`] call performs while building a path, the
/// webpki-style budget that keeps a hostile set of look-alike intermediates from making path
/// building exponential. Exhausting it is [`Error::ChainBudgetExceeded`].
pub const MAX_CHAIN_SIGNATURE_CHECKS: usize = 64;
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

/// The `RSASSA-PSS-params` openssl writes for SHA-256 / MGF1-SHA-256 / salt 32, the only PSS
/// profile accepted in certificates.
const PSS_SHA256_PARAMS: [u8; 54] = [
    0x30, 0x34, 0xa0, 0x0f, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
    0x01, 0x05, 0x00, 0xa1, 0x1c, 0x30, 0x1a, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01,
    0x01, 0x08, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0xa2, 0x03, 0x02, 0x01, 0x20,
];

/// Whether certificate validity dates are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimePolicy {
    /// The caller has a trusted clock: every certificate of the path except the anchor must be
    /// valid at this time (seconds since the Unix epoch), bounds included.
    TrustedTime(u64),
    /// No trusted clock (most modems): validity dates are not checked, so an expired signing
    /// certificate cannot brick a fleet's update path; `security_version` orders packages.
    NoClock,
}

/// The extendedKeyUsage the leaf certificate must carry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum EkuPolicy {
    /// An extendedKeyUsage extension listing `id-kp-codeSigning` (the default).
    #[default]
    RequireCodeSigning,
    /// An extendedKeyUsage extension listing this OID (a vendor's firmware-signing purpose).
    RequireOid(ObjectIdentifier),
    /// Any or no extendedKeyUsage.
    Any,
}

/// What [`verify_chain`] requires beyond signatures and structure.
///
/// ```
/// # use veriflash_sig::{ChainPolicy, EkuPolicy, ObjectIdentifier};
/// let vendor = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.55555.1");
/// let policy = ChainPolicy::default().with_eku(EkuPolicy::RequireOid(vendor));
/// assert_eq!(policy.eku(), EkuPolicy::RequireOid(vendor));
/// assert_eq!(ChainPolicy::default().eku(), EkuPolicy::RequireCodeSigning);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChainPolicy {
    eku: EkuPolicy,
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
pub(crate) struct Basic {
    ca: bool,
    path_len: Option<u8>,
}

/// A parsed, structurally checked certificate.
struct Parsed {
    subject: String,
    subject_der: Vec<u8>,
    issuer_der: Vec<u8>,
    serial: Vec<u8>,
    key: VerifyingKey,
    tbs_der: Vec<u8>,
    signature: Vec<u8>,
    signature_algorithm: ObjectIdentifier,
    basic: Option<Basic>,
    key_usage: Option<KeyUsage>,
    eku: Option<Vec<ObjectIdentifier>>,
    not_before: u64,
    not_after: u64,
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

/// Parses a DER certificate and checks everything that does not depend on its place in a path:
/// strict DER, matching inner/outer signature algorithms, a supported key, no unknown critical
/// extension, no duplicated extension.
fn parse(der: &[u8], index: usize) -> Result<Parsed, Error> {
    if der.len() > MAX_CERTIFICATE_LEN {
        return Err(malformed(index, "certificate is too long"));
    }
    let cert =
        Certificate::from_der(der).map_err(|_| malformed(index, "not a DER X.509 certificate"))?;
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
    let subject = alloc::format!("{}", tbs.subject());
    let spki_der = tbs
        .subject_public_key_info()
        .to_der()
        .map_err(|_| malformed(index, "subjectPublicKeyInfo cannot be re-encoded"))?;
    let key = VerifyingKey::from_spki_der(&spki_der)?;
    let signature_algorithm = certificate_algorithm(cert.signature_algorithm())?;
    let signature = cert
        .signature()
        .as_bytes()
        .ok_or(malformed(
            index,
            "signature bit string is not octet aligned",
        ))?
        .to_vec();
    let mut serial = cert.tbs_certificate().serial_number().as_bytes();
    while let [0, rest @ ..] = serial {
        serial = rest;
    }
    let validity = tbs.validity();
    let mut parsed = Parsed {
        subject_der: tbs
            .subject()
            .to_der()
            .map_err(|_| malformed(index, "subject cannot be re-encoded"))?,
        issuer_der: tbs
            .issuer()
            .to_der()
            .map_err(|_| malformed(index, "issuer cannot be re-encoded"))?,
        serial: serial.to_vec(),
        key,
        tbs_der,
        signature,
        signature_algorithm,
        basic: None,
        key_usage: None,
        eku: None,
        not_before: validity.not_before.to_unix_duration().as_secs(),
        not_after: validity.not_after.to_unix_duration().as_secs(),
        subject,
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
                parsed.basic = Some(Basic {
                    ca: basic.ca,
                    path_len: basic.path_len_constraint,
                });
            }
            ID_CE_KEY_USAGE => {
                parsed.key_usage = Some(
                    KeyUsage::from_der(value)
                        .map_err(|_| malformed(index, "malformed keyUsage"))?,
                );
            }
            ID_CE_EXT_KEY_USAGE => {
                parsed.eku = Some(
                    ExtendedKeyUsage::from_der(value)
                        .map_err(|_| malformed(index, "malformed extendedKeyUsage"))?
                        .0,
                );
            }
            // Identifiers only; names are not used to decide trust beyond issuer chaining.
            ID_CE_SUBJECT_KEY_ID | ID_CE_AUTHORITY_KEY_ID | ID_CE_SUBJECT_ALT_NAME => {}
            oid if ext.critical => {
                return Err(Error::UnknownCriticalExtension {
                    subject: parsed.subject,
                    oid,
                });
            }
            _ => {}
        }
    }
    Ok(parsed)
}

/// The package-level algorithm OID a certificate signature algorithm corresponds to, checking
/// its parameters.
fn certificate_algorithm(
    algorithm: &spki::AlgorithmIdentifierOwned,
) -> Result<ObjectIdentifier, Error> {
    let oid = algorithm.oid;
    let params = algorithm.parameters.as_ref();
    let ok = match oid {
        ECDSA_WITH_SHA256 => params.is_none(),
        SHA256_WITH_RSA_ENCRYPTION => params.is_none_or(der::asn1::Any::is_null),
        ID_RSASSA_PSS => params
            .and_then(|p| p.to_der().ok())
            .is_some_and(|der| der == PSS_SHA256_PARAMS),
        _ => false,
    };
    if ok {
        Ok(oid)
    } else {
        Err(Error::UnsupportedCertificateAlgorithm { oid })
    }
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
/// [`Error::UnsupportedCertificateAlgorithm`], [`Error::UnknownCriticalExtension`] or a key
/// error.
pub fn leaf_public_key(der: &[u8]) -> Result<VerifyingKey, Error> {
    parse(der, 0).map(|parsed| parsed.key)
}

/// Verifies that the leaf certificate `leaf_der` chains, through some of `intermediates`, to a
/// trust anchor of `anchors`, with the supported algorithms ([`DEFAULT_ALGORITHMS`]).
///
/// # Rules
/// * Every certificate is strict DER with the same inner and outer signature algorithm
///   (ECDSA P-256, RSA PKCS#1 v1.5 or RSA-PSS SHA-256/salt 32, each with SHA-256), a supported
///   public key, no duplicated extension and no critical extension other than basicConstraints,
///   keyUsage, extendedKeyUsage, subject/authority key identifier and subjectAltName.
/// * Leaf: not a CA (basicConstraints `cA` false or absent); keyUsage, when present, includes
///   digitalSignature (RFC 5280: absent means unrestricted); extendedKeyUsage per
///   [`ChainPolicy::eku`] (only the leaf's is checked).
/// * Each issuer: its subject equals the child's issuer name byte for byte (DER), it has
///   basicConstraints with `cA` true, its pathLenConstraint (if any) is at least the number of
///   intermediates below it, its keyUsage (if present) includes keyCertSign, and its key
///   verifies the child's signature.
/// * Anchors: a pinned root certificate is matched by subject name and its basicConstraints,
///   pathLen and keyUsage are enforced as for an issuer, but not its validity dates (it is
///   trusted by being pinned); a pinned bare key may sign the top certificate of the path
///   whatever its issuer name.
/// * Validity: with [`TimePolicy::TrustedTime`], every certificate except the anchor must be
///   valid at that time; with [`TimePolicy::NoClock`], dates are not checked.
/// * Path building: anchors are tried before intermediates, and candidates depth-first, so a
///   set holding decoys, cross-certificates or the root itself still finds a path; at most
///   [`MAX_PATH_INTERMEDIATES`] intermediates and [`MAX_CHAIN_SIGNATURE_CHECKS`] signature
///   checks.
///
/// # Errors
/// [`Error::NoTrustAnchors`], [`Error::TooManyCertificates`], [`Error::CertificateMalformed`],
/// [`Error::UnsupportedCertificateAlgorithm`], key errors of [`VerifyingKey::from_spki_der`]
/// (e.g. [`Error::RsaKeyTooSmall`]), [`Error::UnknownCriticalExtension`], [`Error::LeafIsCa`],
/// [`Error::KeyUsageNotAllowed`], [`Error::ExtendedKeyUsageMissing`],
/// [`Error::CertificateExpired`], [`Error::CertificateNotYetValid`], and when no path is found
/// the most precise reason met while searching: [`Error::NotCa`], [`Error::PathLenExceeded`],
/// [`Error::CertificateSignatureInvalid`], [`Error::ChainBudgetExceeded`], else
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
        DEFAULT_ALGORITHMS,
    )
}

/// [`verify_chain`] accepting only certificate signatures of `algorithms` (what
/// [`crate::Verifier`] uses, so a device restricted to one algorithm is restricted in chains too).
///
/// # Errors
/// As [`verify_chain`]; a certificate signed with an algorithm not in the list is
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
    let inters = intermediates
        .iter()
        .enumerate()
        .map(|(i, der)| parse(der, i.saturating_add(1)))
        .collect::<Result<Vec<_>, _>>()?;
    for cert in core::iter::once(&leaf).chain(&inters) {
        find_algorithm(algorithms, cert.signature_algorithm)?;
    }
    check_leaf(&leaf, time, policy)?;
    let mut search = Search {
        inters: &inters,
        anchors: anchors.chain_anchors(),
        algorithms,
        time,
        budget: MAX_CHAIN_SIGNATURE_CHECKS,
    };
    let mut path = Vec::new();
    let anchor = search.extend(&leaf, &mut path)?;
    let mut certificates = Vec::with_capacity(path.len().saturating_add(1));
    for cert in core::iter::once(&leaf).chain(path.iter().filter_map(|&i| inters.get(i))) {
        certificates.push(PathCertificate {
            subject: cert.subject.clone(),
            serial: cert.serial.clone(),
            key_id: cert.key.key_id(),
        });
    }
    Ok(VerifiedPath {
        leaf_key: leaf.key,
        certificates,
        anchor_key_id: anchor,
    })
}

fn find_algorithm<'a>(
    algorithms: &[&'a dyn SignatureAlgorithm],
    oid: ObjectIdentifier,
) -> Result<&'a dyn SignatureAlgorithm, Error> {
    algorithms
        .iter()
        .copied()
        .find(|a| a.oid() == oid)
        .ok_or(Error::UnsupportedCertificateAlgorithm { oid })
}

fn check_time(cert: &Parsed, time: TimePolicy) -> Result<(), Error> {
    let TimePolicy::TrustedTime(now) = time else {
        return Ok(());
    };
    if now < cert.not_before {
        return Err(Error::CertificateNotYetValid {
            subject: cert.subject.clone(),
            not_before: cert.not_before,
            time: now,
        });
    }
    if now > cert.not_after {
        return Err(Error::CertificateExpired {
            subject: cert.subject.clone(),
            not_after: cert.not_after,
            time: now,
        });
    }
    Ok(())
}

fn check_leaf(leaf: &Parsed, time: TimePolicy, policy: ChainPolicy) -> Result<(), Error> {
    if leaf.basic.is_some_and(|b| b.ca) {
        return Err(Error::LeafIsCa {
            subject: leaf.subject.clone(),
        });
    }
    if leaf.key_usage.is_some_and(|ku| !ku.digital_signature()) {
        return Err(Error::KeyUsageNotAllowed {
            subject: leaf.subject.clone(),
            usage: "digitalSignature",
        });
    }
    let required = match policy.eku {
        EkuPolicy::Any => None,
        EkuPolicy::RequireCodeSigning => Some(ID_KP_CODE_SIGNING),
        EkuPolicy::RequireOid(oid) => Some(oid),
    };
    if let Some(required) = required
        && !leaf.eku.as_ref().is_some_and(|eku| eku.contains(&required))
    {
        return Err(Error::ExtendedKeyUsageMissing {
            subject: leaf.subject.clone(),
            required,
        });
    }
    check_time(leaf, time)
}

/// The issuer-side rules shared by intermediates and anchor certificates.
fn check_issuer_constraints(
    subject: &str,
    basic: Option<Basic>,
    key_usage: Option<KeyUsage>,
    below: usize,
) -> Result<(), Error> {
    let Some(basic) = basic.filter(|b| b.ca) else {
        return Err(Error::NotCa {
            subject: String::from(subject),
        });
    };
    if let Some(path_len) = basic.path_len
        && below > usize::from(path_len)
    {
        return Err(Error::PathLenExceeded {
            subject: String::from(subject),
            path_len,
        });
    }
    if key_usage.is_some_and(|ku| !ku.key_cert_sign()) {
        return Err(Error::KeyUsageNotAllowed {
            subject: String::from(subject),
            usage: "keyCertSign",
        });
    }
    Ok(())
}

struct Search<'s> {
    inters: &'s [Parsed],
    anchors: Vec<&'s TrustAnchor>,
    algorithms: &'s [&'s dyn SignatureAlgorithm],
    time: TimePolicy,
    budget: usize,
}

/// Whether an error means "no issuer here" (so a more precise error found elsewhere wins).
fn is_not_found(err: &Error) -> bool {
    matches!(
        err,
        Error::IssuerNotFound { .. } | Error::UntrustedRoot { .. }
    )
}

fn keep(best: &mut Option<Error>, err: Error) {
    match best {
        Some(current) if !is_not_found(current) => {}
        _ if is_not_found(&err) && best.is_some() => {}
        _ => *best = Some(err),
    }
}

impl Search<'_> {
    /// Checks `issuer_key`'s signature on `child`, charging the budget.
    fn check_signature(&mut self, child: &Parsed, issuer_key: &VerifyingKey) -> Result<(), Error> {
        self.budget = self
            .budget
            .checked_sub(1)
            .ok_or(Error::ChainBudgetExceeded)?;
        let algorithm = find_algorithm(self.algorithms, child.signature_algorithm)?;
        algorithm
            .verify(issuer_key, &child.tbs_der, &child.signature)
            .map_err(|_| Error::CertificateSignatureInvalid {
                subject: child.subject.clone(),
            })
    }

    /// Finds an issuer for `child` (the leaf or `inters[path.last()]`), extending `path` with
    /// the intermediates used; returns the anchor's key id.
    fn extend(&mut self, child: &Parsed, path: &mut Vec<usize>) -> Result<KeyId, Error> {
        let below = path.len();
        let mut best: Option<Error> = None;
        let anchors = self.anchors.clone();
        for anchor in anchors {
            if let Some(cert) = anchor.certificate() {
                if cert.subject_der != child.issuer_der {
                    continue;
                }
                if let Err(err) =
                    check_issuer_constraints(&cert.subject, cert.basic, cert.key_usage, below)
                {
                    keep(&mut best, err);
                    continue;
                }
            }
            match self.check_signature(child, anchor.key()) {
                Ok(()) => return Ok(anchor.key_id()),
                Err(Error::ChainBudgetExceeded) => return Err(Error::ChainBudgetExceeded),
                // A bare key that did not sign is no evidence against the chain.
                Err(_) if anchor.certificate().is_none() => {}
                Err(err) => keep(&mut best, err),
            }
        }
        if path.len() < MAX_PATH_INTERMEDIATES {
            for (index, issuer) in self.inters.iter().enumerate() {
                if issuer.subject_der != child.issuer_der || path.contains(&index) {
                    continue;
                }
                let checked = check_issuer_constraints(
                    &issuer.subject,
                    issuer.basic,
                    issuer.key_usage,
                    below,
                )
                .and_then(|()| check_time(issuer, self.time))
                .and_then(|()| self.check_signature(child, &issuer.key));
                match checked {
                    Ok(()) => {}
                    Err(Error::ChainBudgetExceeded) => return Err(Error::ChainBudgetExceeded),
                    Err(err) => {
                        keep(&mut best, err);
                        continue;
                    }
                }
                path.push(index);
                match self.extend(issuer, path) {
                    Ok(anchor) => return Ok(anchor),
                    Err(Error::ChainBudgetExceeded) => return Err(Error::ChainBudgetExceeded),
                    Err(err) => {
                        keep(&mut best, err);
                        path.pop();
                    }
                }
            }
        }
        Err(best.unwrap_or_else(|| {
            if child.issuer_der == child.subject_der {
                Error::UntrustedRoot {
                    subject: child.subject.clone(),
                }
            } else {
                Error::IssuerNotFound {
                    subject: child.subject.clone(),
                }
            }
        }))
    }
}

/// The parts of a pinned root certificate that path validation uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AnchorCertificate {
    pub(crate) der: Vec<u8>,
    pub(crate) subject: String,
    pub(crate) subject_der: Vec<u8>,
    pub(crate) basic: Option<Basic>,
    pub(crate) key_usage: Option<KeyUsage>,
}

/// Parses a root certificate to pin: its key, subject and issuer-side extensions. The root's
/// own signature and dates are not checked (it is trusted by being pinned).
pub(crate) fn parse_anchor(der: &[u8]) -> Result<(VerifyingKey, AnchorCertificate), Error> {
    let parsed = parse(der, 0)?;
    Ok((
        parsed.key,
        AnchorCertificate {
            der: der.to_vec(),
            subject: parsed.subject,
            subject_der: parsed.subject_der,
            basic: parsed.basic,
            key_usage: parsed.key_usage,
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
