//! X.509 chains made by the openssl CLI (root CA -> intermediate -> code-signing leaf): the
//! chains we accept are accepted by `openssl verify`, and every refusal has its own error.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers outside #[test] fns: a failure should abort the test"
)]

use std::{
    fs,
    path::Path,
    process::{Command, Output},
    time::{SystemTime, UNIX_EPOCH},
};

use veriflash_sig::{
    CertificateProfile, ChainPolicy, EkuPolicy, Error, ID_KP_CODE_SIGNING, MAX_INTERMEDIATES,
    MAX_PATH_INTERMEDIATES, ObjectIdentifier, PinnedKeys, Policy, SignatureInput, SigningKey,
    TimePolicy, VerifiedPath, Verifier, VerifyingKey, verify_chain,
};

const MESSAGE: &[u8] = b"header || manifest signed by a code-signing leaf\n";
const ROOT_EXT: &str = "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\n";
const INTER_EXT: &str = "basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n";
const LEAF_EXT: &str = "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=codeSigning\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n";

fn run(dir: &Path, args: &[&str]) -> Output {
    Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl CLI must be installed for the interop tests")
}

fn openssl(dir: &Path, args: &[&str]) -> Output {
    let output = run(dir, args);
    assert!(
        output.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// `name.key`: "ec" for P-256, "ec384" for P-384, "pss" for an RSA-PSS (id-RSASSA-PSS) 2048-bit
/// key, otherwise RSA bits.
fn key(d: &Path, name: &str, algo: &str) {
    let out = format!("{name}.key");
    if let Some(curve) = match algo {
        "ec" => Some("ec_paramgen_curve:P-256"),
        "ec384" => Some("ec_paramgen_curve:P-384"),
        _ => None,
    } {
        openssl(
            d,
            &[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                curve,
                "-out",
                &out,
            ],
        );
    } else if algo == "pss" {
        openssl(
            d,
            &[
                "genpkey",
                "-algorithm",
                "RSA-PSS",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out",
                &out,
            ],
        );
    } else {
        let bits = format!("rsa_keygen_bits:{algo}");
        openssl(
            d,
            &[
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                &bits,
                "-out",
                &out,
            ],
        );
    }
}

/// Makes `name.key` and `name.pem`, signed by `issuer` (self-signed when `None`).
fn cert(d: &Path, name: &str, algo: &str, issuer: Option<&str>, ext: &str, extra: &[&str]) {
    issue(
        d,
        name,
        &format!("/O=veriflash test/CN={name}"),
        algo,
        issuer,
        ext,
        extra,
    );
}

/// [`cert`] with the subject `subj` (openssl `-subj` syntax; "/" is the empty name).
fn issue(
    d: &Path,
    name: &str,
    subj: &str,
    algo: &str,
    issuer: Option<&str>,
    ext: &str,
    extra: &[&str],
) {
    key(d, name, algo);
    issue_with_key(d, name, subj, issuer, ext, extra);
}

/// [`issue`] for an existing `name.key`.
fn issue_with_key(
    d: &Path,
    name: &str,
    subj: &str,
    issuer: Option<&str>,
    ext: &str,
    extra: &[&str],
) {
    let (k, csr, pem, extfile) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.pem"),
        format!("{name}.ext"),
    );
    fs::write(d.join(&extfile), ext).unwrap();
    openssl(d, &["req", "-new", "-key", &k, "-subj", subj, "-out", &csr]);
    let mut args = vec![
        "x509", "-req", "-in", &csr, "-extfile", &extfile, "-days", "3650", "-out", &pem,
    ];
    let (ca, cakey);
    match issuer {
        None => args.extend(["-signkey", &k]),
        Some(issuer) => {
            ca = format!("{issuer}.pem");
            cakey = format!("{issuer}.key");
            args.extend(["-CA", &ca, "-CAkey", &cakey, "-CAcreateserial"]);
        }
    }
    args.extend(extra);
    openssl(d, &args);
}

fn der(d: &Path, name: &str) -> Vec<u8> {
    openssl(
        d,
        &["x509", "-in", &format!("{name}.pem"), "-outform", "DER"],
    )
    .stdout
}

fn leaf_key(d: &Path, name: &str) -> SigningKey {
    SigningKey::from_pem(&fs::read_to_string(d.join(format!("{name}.key"))).unwrap()).unwrap()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn openssl_verify(d: &Path, root: &str, inter: &str, leaf: &str) -> bool {
    run(
        d,
        &[
            "verify",
            "-CAfile",
            &format!("{root}.pem"),
            "-untrusted",
            &format!("{inter}.pem"),
            &format!("{leaf}.pem"),
        ],
    )
    .status
    .success()
}

/// root -> inter -> leaf with the given key algorithms.
fn hierarchy(d: &Path, algos: [&str; 3]) {
    cert(d, "root", algos[0], None, ROOT_EXT, &[]);
    cert(d, "inter", algos[1], Some("root"), INTER_EXT, &[]);
    cert(d, "leaf", algos[2], Some("inter"), LEAF_EXT, &[]);
}

fn anchors(d: &Path, root: &str) -> PinnedKeys {
    PinnedKeys::load(&d.join(format!("{root}.pem"))).unwrap()
}

/// Signs MESSAGE with `leaf` and verifies it with the chain [leaf, inters...].
fn verify_signed(
    d: &Path,
    trust: &PinnedKeys,
    leaf: &str,
    inters: &[&str],
    configure: impl FnOnce(Verifier<'_>) -> Verifier<'_>,
) -> Result<(), Error> {
    let key = leaf_key(d, leaf);
    let signature = key.sign(MESSAGE).unwrap();
    let mut ders = vec![der(d, leaf)];
    ders.extend(inters.iter().map(|n| der(d, n)));
    let mut input = SignatureInput::new(key.algorithm(), key.verifying_key().key_id(), &signature);
    input.certificates = ders.iter().map(Vec::as_slice).collect();
    let verifier = configure(Verifier::new(trust));
    verifier.verify(MESSAGE, &[input]).map(|_| ())
}

#[test]
fn accepts_openssl_chains_with_rsa_and_ecdsa_anywhere() {
    for algos in [
        ["3072", "ec", "2048"],
        ["ec", "ec", "ec"],
        ["4096", "2048", "ec"],
    ] {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        hierarchy(d, algos);
        assert!(openssl_verify(d, "root", "inter", "leaf"), "{algos:?}");
        let trust = anchors(d, "root");
        verify_signed(d, &trust, "leaf", &["inter"], |v| {
            v.with_time(TimePolicy::TrustedTime(now()))
        })
        .unwrap();
        // The chain file may also hold the root itself, and the intermediates come in any order.
        verify_signed(d, &trust, "leaf", &["root", "inter"], |v| v).unwrap();
        // The path is what we expect.
        let path = verify_chain(
            &der(d, "leaf"),
            &[&der(d, "inter")],
            &trust,
            TimePolicy::NoClock,
            ChainPolicy::default(),
        )
        .unwrap();
        let subjects: Vec<_> = path
            .certificates()
            .iter()
            .map(|c| c.subject().to_owned())
            .collect();
        assert_eq!(
            subjects,
            ["CN=leaf,O=veriflash test", "CN=inter,O=veriflash test"]
        );
        assert_eq!(
            path.leaf_key().key_id(),
            leaf_key(d, "leaf").verifying_key().key_id()
        );
    }
}

#[test]
fn accepts_a_pinned_root_key_and_pss_signed_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    cert(d, "root", "3072", None, ROOT_EXT, &[]);
    let pss = [
        "-sigopt",
        "rsa_padding_mode:pss",
        "-sigopt",
        "rsa_pss_saltlen:32",
    ];
    cert(d, "inter", "2048", Some("root"), INTER_EXT, &pss);
    cert(d, "leaf", "ec", Some("inter"), LEAF_EXT, &pss);
    assert!(openssl_verify(d, "root", "inter", "leaf"));
    // Pin only the root's public key, not its certificate.
    openssl(
        d,
        &["pkey", "-in", "root.key", "-pubout", "-out", "root.pub"],
    );
    let mut trust = PinnedKeys::new();
    trust.add(
        VerifyingKey::from_public_key_pem(&fs::read_to_string(d.join("root.pub")).unwrap())
            .unwrap(),
    );
    verify_signed(d, &trust, "leaf", &["inter"], |v| v).unwrap();
}

#[test]
fn refuses_chain_to_another_root() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    hierarchy(d, ["ec", "ec", "ec"]);
    cert(d, "other", "ec", None, ROOT_EXT, &[]);
    let trust = anchors(d, "other");
    assert!(!openssl_verify(d, "other", "inter", "leaf"));
    let err = verify_signed(d, &trust, "leaf", &["inter", "root"], |v| v).unwrap_err();
    assert_eq!(
        err,
        Error::UntrustedRoot {
            subject: "CN=root,O=veriflash test".into()
        }
    );
}

#[test]
fn refuses_broken_chain() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    hierarchy(d, ["ec", "ec", "ec"]);
    cert(d, "unrelated", "ec", Some("root"), INTER_EXT, &[]);
    let trust = anchors(d, "root");
    let err = verify_signed(d, &trust, "leaf", &["unrelated"], |v| v).unwrap_err();
    assert_eq!(
        err,
        Error::IssuerNotFound {
            subject: "CN=leaf,O=veriflash test".into()
        }
    );
}

#[test]
fn refuses_intermediate_with_the_right_name_and_the_wrong_key() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    hierarchy(d, ["ec", "ec", "ec"]);
    // Another "inter" (same subject, new key) replaces the real one.
    let sub = d.join("forged");
    fs::create_dir(&sub).unwrap();
    fs::copy(d.join("root.pem"), sub.join("root.pem")).unwrap();
    fs::copy(d.join("root.key"), sub.join("root.key")).unwrap();
    cert(&sub, "inter", "ec", Some("root"), INTER_EXT, &[]);
    let trust = anchors(d, "root");
    let (leaf, forged) = (der(d, "leaf"), der(&sub, "inter"));
    let err = verify_chain(
        &leaf,
        &[&forged],
        &trust,
        TimePolicy::NoClock,
        ChainPolicy::default(),
    )
    .unwrap_err();
    assert_eq!(
        err,
        Error::CertificateSignatureInvalid {
            subject: "CN=leaf,O=veriflash test".into()
        }
    );
    // Path building: with the decoy offered first, the real intermediate is still found.
    let real = der(d, "inter");
    verify_chain(
        &leaf,
        &[&forged, &real],
        &trust,
        TimePolicy::NoClock,
        ChainPolicy::default(),
    )
    .unwrap();
}

#[test]
fn extended_key_usage_policy() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    hierarchy(d, ["ec", "ec", "ec"]);
    let server = LEAF_EXT.replace("codeSigning", "serverAuth");
    cert(d, "web", "ec", Some("inter"), &server, &[]);
    let vendor_ext = LEAF_EXT.replace("codeSigning", "1.3.6.1.4.1.55555.1");
    cert(d, "vendor", "ec", Some("inter"), &vendor_ext, &[]);
    let trust = anchors(d, "root");
    let code_signing = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.3");
    let vendor = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.55555.1");
    assert_eq!(
        verify_signed(d, &trust, "web", &["inter"], |v| v).unwrap_err(),
        Error::ExtendedKeyUsageMissing {
            subject: "CN=web,O=veriflash test".into(),
            required: code_signing
        }
    );
    verify_signed(d, &trust, "web", &["inter"], |v| {
        v.with_chain_policy(ChainPolicy::default().with_eku(EkuPolicy::Any))
    })
    .unwrap();
    let custom = ChainPolicy::default().with_eku(EkuPolicy::RequireOid(vendor));
    verify_signed(d, &trust, "vendor", &["inter"], |v| {
        v.with_chain_policy(custom)
    })
    .unwrap();
    assert!(matches!(
        verify_signed(d, &trust, "leaf", &["inter"], |v| v.with_chain_policy(custom)),
        Err(Error::ExtendedKeyUsageMissing { required, .. }) if required == vendor
    ));
}

#[test]
fn refuses_issuer_that_is_not_a_ca() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    cert(d, "root", "ec", None, ROOT_EXT, &[]);
    cert(
        d,
        "inter",
        "ec",
        Some("root"),
        "basicConstraints=critical,CA:FALSE\n",
        &[],
    );
    cert(d, "leaf", "ec", Some("inter"), LEAF_EXT, &[]);
    assert!(!openssl_verify(d, "root", "inter", "leaf"));
    let err = verify_signed(d, &anchors(d, "root"), "leaf", &["inter"], |v| v).unwrap_err();
    assert_eq!(
        err,
        Error::NotCa {
            subject: "CN=inter,O=veriflash test".into()
        }
    );
}

#[test]
fn refuses_path_longer_than_path_len() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    cert(d, "root", "ec", None, ROOT_EXT, &[]);
    cert(d, "inter", "ec", Some("root"), INTER_EXT, &[]); // pathlen:0
    cert(
        d,
        "sub",
        "ec",
        Some("inter"),
        &INTER_EXT.replace(",pathlen:0", ""),
        &[],
    );
    cert(d, "leaf", "ec", Some("sub"), LEAF_EXT, &[]);
    let err = verify_signed(d, &anchors(d, "root"), "leaf", &["sub", "inter"], |v| v).unwrap_err();
    assert_eq!(
        err,
        Error::PathLenExceeded {
            subject: "CN=inter,O=veriflash test".into(),
            path_len: 0
        }
    );
    fs::write(
        d.join("both.pem"),
        [
            fs::read(d.join("sub.pem")).unwrap(),
            fs::read(d.join("inter.pem")).unwrap(),
        ]
        .concat(),
    )
    .unwrap();
    assert!(!openssl_verify(d, "root", "both", "leaf"));
}

#[test]
fn validity_dates_are_checked_only_with_a_trusted_clock() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    cert(d, "root", "ec", None, ROOT_EXT, &[]);
    cert(d, "inter", "ec", Some("root"), INTER_EXT, &[]);
    cert(d, "leaf", "ec", Some("inter"), LEAF_EXT, &["-days", "1"]);
    let trust = anchors(d, "root");
    let later = now() + 10 * 86_400;
    assert!(matches!(
        verify_signed(d, &trust, "leaf", &["inter"], |v| v.with_time(TimePolicy::TrustedTime(later))),
        Err(Error::CertificateExpired { subject, time, .. }) if subject == "CN=leaf,O=veriflash test" && time == later
    ));
    let earlier = now() - 86_400;
    assert!(matches!(
        verify_signed(d, &trust, "leaf", &["inter"], |v| v.with_time(TimePolicy::TrustedTime(earlier))),
        Err(Error::CertificateNotYetValid { subject, .. }) if subject == "CN=leaf,O=veriflash test"
    ));
    verify_signed(d, &trust, "leaf", &["inter"], |v| {
        v.with_time(TimePolicy::NoClock)
    })
    .unwrap();
    verify_signed(d, &trust, "leaf", &["inter"], |v| {
        v.with_time(TimePolicy::TrustedTime(now()))
    })
    .unwrap();
}

#[test]
fn refuses_revoked_serial_and_revoked_intermediate_key() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    hierarchy(d, ["ec", "ec", "ec"]);
    let trust = anchors(d, "root");
    let text =
        String::from_utf8(openssl(d, &["x509", "-in", "leaf.pem", "-noout", "-serial"]).stdout)
            .unwrap();
    let hex = text
        .trim()
        .trim_start_matches("serial=")
        .to_ascii_lowercase();
    let serial: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    let policy = Policy::default().with_revoked_serial(&serial);
    let err = verify_signed(d, &trust, "leaf", &["inter"], |v| v.with_policy(policy)).unwrap_err();
    assert_eq!(
        err,
        Error::CertificateRevoked {
            serial: hex.trim_start_matches("00").to_owned()
        }
    );
    // Revoking the intermediate's key refuses every leaf under it.
    let inter_key = leaf_key(d, "inter").verifying_key().key_id();
    let err = verify_signed(d, &trust, "leaf", &["inter"], |v| {
        v.with_policy(Policy::default().with_revoked_key(inter_key))
    })
    .unwrap_err();
    assert_eq!(err, Error::KeyRevoked { key_id: inter_key });
}

#[test]
fn refuses_unknown_critical_extension() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    cert(d, "root", "ec", None, ROOT_EXT, &[]);
    cert(d, "inter", "ec", Some("root"), INTER_EXT, &[]);
    let ext = format!("{LEAF_EXT}1.2.3.4.5=critical,ASN1:NULL\n");
    cert(d, "leaf", "ec", Some("inter"), &ext, &[]);
    assert!(!openssl_verify(d, "root", "inter", "leaf"));
    let err = verify_signed(d, &anchors(d, "root"), "leaf", &["inter"], |v| v).unwrap_err();
    assert_eq!(
        err,
        Error::UnknownCriticalExtension {
            subject: "CN=leaf,O=veriflash test".into(),
            oid: ObjectIdentifier::new_unwrap("1.2.3.4.5")
        }
    );
}

#[test]
fn threshold_counts_distinct_leaf_keys_and_key_id_must_match_the_leaf() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    hierarchy(d, ["ec", "ec", "ec"]);
    cert(d, "leaf2", "2048", Some("inter"), LEAF_EXT, &[]);
    let trust = anchors(d, "root");
    let inter = der(d, "inter");
    let (k1, k2) = (leaf_key(d, "leaf"), leaf_key(d, "leaf2"));
    let (c1, c2) = (der(d, "leaf"), der(d, "leaf2"));
    let (s1, s2) = (k1.sign(MESSAGE).unwrap(), k2.sign(MESSAGE).unwrap());
    let input = |k: &SigningKey, s: &'static [u8], c: &'static [u8], i: &'static [u8]| {
        let mut input = SignatureInput::new(k.algorithm(), k.verifying_key().key_id(), s);
        input.certificates = vec![c, i];
        input
    };
    let leak = |v: Vec<u8>| -> &'static [u8] { Box::leak(v.into_boxed_slice()) };
    let (s1, s2, c1, c2, inter) = (leak(s1), leak(s2), leak(c1), leak(c2), leak(inter));
    let two = Verifier::new(&trust).with_policy(Policy::default().with_threshold(2));
    let ok = two
        .verify(
            MESSAGE,
            &[input(&k1, s1, c1, inter), input(&k2, s2, c2, inter)],
        )
        .unwrap();
    assert_eq!(ok.signers().len(), 2);
    assert_eq!(
        two.verify(
            MESSAGE,
            &[input(&k1, s1, c1, inter), input(&k1, s1, c1, inter)]
        )
        .err(),
        Some(Error::ThresholdNotMet {
            required: 2,
            valid: 1
        })
    );
    // A signature naming another key than its leaf's.
    let mut wrong = input(&k1, s1, c1, inter);
    wrong.key_id = k2.verifying_key().key_id();
    assert_eq!(
        Verifier::new(&trust).verify(MESSAGE, &[wrong]).err(),
        Some(Error::LeafKeyIdMismatch {
            key_id: k2.verifying_key().key_id(),
            leaf_key_id: k1.verifying_key().key_id()
        })
    );
}

#[test]
fn refuses_rsa_1024_leaf_and_ca_leaf() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    hierarchy(d, ["ec", "ec", "ec"]);
    cert(d, "small", "1024", Some("inter"), LEAF_EXT, &[]);
    cert(
        d,
        "caleaf",
        "ec",
        Some("inter"),
        &LEAF_EXT.replace("CA:FALSE", "CA:TRUE"),
        &[],
    );
    let trust = anchors(d, "root");
    let inter = der(d, "inter");
    assert_eq!(
        verify_chain(
            &der(d, "small"),
            &[&inter],
            &trust,
            TimePolicy::NoClock,
            ChainPolicy::default()
        )
        .err(),
        Some(Error::RsaKeyTooSmall { bits: 1024 })
    );
    assert_eq!(
        verify_chain(
            &der(d, "caleaf"),
            &[&inter],
            &trust,
            TimePolicy::NoClock,
            ChainPolicy::default()
        )
        .err(),
        Some(Error::LeafIsCa {
            subject: "CN=caleaf,O=veriflash test".into()
        })
    );
}

#[test]
fn rotation_counts_anchors_not_leaves() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    hierarchy(d, ["ec", "ec", "ec"]);
    cert(d, "leaf2", "ec", Some("inter"), LEAF_EXT, &[]);
    let trust = anchors(d, "root");
    let (k1, k2) = (leaf_key(d, "leaf"), leaf_key(d, "leaf2"));
    let (s1, s2) = (k1.sign(MESSAGE).unwrap(), k2.sign(MESSAGE).unwrap());
    let (c1, c2, inter) = (der(d, "leaf"), der(d, "leaf2"), der(d, "inter"));
    let mut i1 = SignatureInput::new(k1.algorithm(), k1.verifying_key().key_id(), &s1);
    i1.certificates = vec![&c1, &inter];
    let mut i2 = SignatureInput::new(k2.algorithm(), k2.verifying_key().key_id(), &s2);
    i2.certificates = vec![&c2, &inter];
    // Two signers, so a 2-of-n package threshold is met ...
    let two = Verifier::new(&trust).with_policy(
        Policy::default()
            .with_threshold(2)
            .with_rotation_threshold(2),
    );
    assert!(two.verify(MESSAGE, &[i1.clone(), i2.clone()]).is_ok());
    // ... but both chain to the one root: one vote for replacing the roots.
    assert_eq!(
        two.verify_rotation(MESSAGE, &[i1.clone(), i2.clone()], &trust, 1, 1),
        Err(Error::RotationNotAuthorized {
            required: 2,
            valid: 1
        })
    );
    let one = Verifier::new(&trust);
    let approval = one
        .verify_rotation(MESSAGE, &[i1, i2], &trust, 1, 1)
        .unwrap();
    assert_eq!(approval.current_signers().len(), 1);
}

// ---------------------------------------------------------------------------------------------
// RFC 5280 path validation as the reference validators (OpenSSL, Go crypto/x509, rustls-webpki)
// do it (issue 17): each case made with openssl, through the public API, citing its section.
// ---------------------------------------------------------------------------------------------

fn subject(name: &str) -> String {
    format!("CN={name},O=veriflash test")
}

/// `verify_chain` of `leaf` with `inters` offered (in that order) against `trust`.
fn chain(
    d: &Path,
    trust: &PinnedKeys,
    leaf: &str,
    inters: &[&str],
    time: TimePolicy,
    policy: ChainPolicy,
) -> Result<VerifiedPath, Error> {
    let leaf = der(d, leaf);
    let inters: Vec<Vec<u8>> = inters.iter().map(|n| der(d, n)).collect();
    let offered: Vec<&[u8]> = inters.iter().map(Vec::as_slice).collect();
    verify_chain(&leaf, &offered, trust, time, policy)
}

/// Whether `openssl verify` (with `extra` options) accepts `leaf` against `root` with `inters`
/// offered as untrusted certificates.
fn openssl_accepts(d: &Path, root: &str, inters: &[&str], leaf: &str, extra: &[&str]) -> bool {
    let bundle: Vec<u8> = inters
        .iter()
        .flat_map(|n| fs::read(d.join(format!("{n}.pem"))).unwrap())
        .collect();
    fs::write(d.join("untrusted.pem"), bundle).unwrap();
    let ca = format!("{root}.pem");
    let leaf = format!("{leaf}.pem");
    let mut args = vec!["verify", "-CAfile", &ca];
    if !inters.is_empty() {
        args.extend(["-untrusted", "untrusted.pem"]);
    }
    args.extend(extra);
    args.push(&leaf);
    run(d, &args).status.success()
}

fn non_conforming(result: Result<VerifiedPath, Error>, who: &str, section: &str) {
    match result {
        Err(Error::NonConformingCertificate { subject, rule }) => {
            assert_eq!(subject, who);
            assert!(rule.contains(section), "{rule}");
        }
        other => panic!("expected a non-conforming {who} ({section}), got {other:?}"),
    }
}

/// RFC 5280 §4.1.2.5 (validity) applied to the trust anchor, as OpenSSL and Go do: a pinned
/// root certificate that expired before the trusted time ends no path. Without a clock nothing
/// changes.
#[test]
fn refuses_chain_whose_pinned_root_expired_at_the_trusted_time() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    cert(d, "root", "ec", None, ROOT_EXT, &["-days", "1"]);
    cert(d, "inter", "ec", Some("root"), INTER_EXT, &[]);
    cert(d, "leaf", "ec", Some("inter"), LEAF_EXT, &[]);
    let trust = anchors(d, "root");
    let later = now() + 10 * 86_400;
    let attime = later.to_string();
    assert!(openssl_accepts(d, "root", &["inter"], "leaf", &[]));
    assert!(!openssl_accepts(
        d,
        "root",
        &["inter"],
        "leaf",
        &["-attime", &attime]
    ));
    let err = chain(
        d,
        &trust,
        "leaf",
        &["inter"],
        TimePolicy::TrustedTime(later),
        ChainPolicy::default(),
    )
    .unwrap_err();
    assert!(
        matches!(&err, Error::CertificateExpired { subject: s, time, .. } if *s == subject("root") && *time == later),
        "{err:?}"
    );
    // The same through the Verifier; no clock, or a time inside the root's validity: accepted.
    assert_eq!(
        verify_signed(d, &trust, "leaf", &["inter"], |v| v
            .with_time(TimePolicy::TrustedTime(later))),
        Err(err)
    );
    for time in [TimePolicy::NoClock, TimePolicy::TrustedTime(now())] {
        chain(d, &trust, "leaf", &["inter"], time, ChainPolicy::default()).unwrap();
    }
}

/// RFC 5280 §4.1.2.6: a CA certificate's subject MUST be a non-empty distinguished name.
#[test]
fn refuses_ca_with_an_empty_subject() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    cert(d, "root", "ec", None, ROOT_EXT, &[]);
    issue(d, "inter", "/", "ec", Some("root"), INTER_EXT, &[]);
    cert(d, "leaf", "ec", Some("inter"), LEAF_EXT, &[]);
    let trust = anchors(d, "root");
    let result = chain(
        d,
        &trust,
        "leaf",
        &["inter"],
        TimePolicy::NoClock,
        ChainPolicy::default(),
    );
    non_conforming(result, "", "4.1.2.6");
}

/// RFC 5280 §4.2.1.9: a CA's basicConstraints MUST be critical — the pinned root's included
/// (openssl refuses it with -x509_strict).
#[test]
fn refuses_root_whose_basic_constraints_is_not_critical() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let lax = ROOT_EXT.replace("critical,CA:TRUE", "CA:TRUE");
    cert(d, "root", "ec", None, &lax, &[]);
    cert(d, "inter", "ec", Some("root"), INTER_EXT, &[]);
    cert(d, "leaf", "ec", Some("inter"), LEAF_EXT, &[]);
    assert!(!openssl_accepts(
        d,
        "root",
        &["inter"],
        "leaf",
        &["-x509_strict"]
    ));
    let trust = anchors(d, "root");
    let result = chain(
        d,
        &trust,
        "leaf",
        &["inter"],
        TimePolicy::NoClock,
        ChainPolicy::default(),
    );
    non_conforming(result, &subject("root"), "4.2.1.9");
}

/// RFC 5280 §4.2.1.3: keyCertSign asserted requires basicConstraints cA — a leaf with
/// keyCertSign and cA FALSE is not conforming.
#[test]
fn refuses_leaf_with_key_cert_sign_but_not_ca() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    hierarchy(d, ["ec", "ec", "ec"]);
    let ext = LEAF_EXT.replace("digitalSignature", "digitalSignature,keyCertSign");
    cert(d, "signer", "ec", Some("inter"), &ext, &[]);
    let trust = anchors(d, "root");
    let result = chain(
        d,
        &trust,
        "signer",
        &["inter"],
        TimePolicy::NoClock,
        ChainPolicy::default(),
    );
    non_conforming(result, &subject("signer"), "4.2.1.3");
}

/// RFC 5280 §4.2.1.1 and §4.2.1.2: authority and subject key identifiers MUST be non-critical.
#[test]
fn refuses_critical_key_identifiers() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    hierarchy(d, ["ec", "ec", "ec"]);
    let critical_ski = INTER_EXT.replace(
        "subjectKeyIdentifier=hash",
        "subjectKeyIdentifier=critical,hash",
    );
    cert(d, "inter2", "ec", Some("root"), &critical_ski, &[]);
    cert(d, "leaf2", "ec", Some("inter2"), LEAF_EXT, &[]);
    let critical_aki = LEAF_EXT.replace(
        "authorityKeyIdentifier=keyid",
        "authorityKeyIdentifier=critical,keyid",
    );
    cert(d, "leaf3", "ec", Some("inter"), &critical_aki, &[]);
    let trust = anchors(d, "root");
    let policy = ChainPolicy::default();
    let result = chain(d, &trust, "leaf2", &["inter2"], TimePolicy::NoClock, policy);
    non_conforming(result, &subject("inter2"), "4.2.1.2");
    let result = chain(d, &trust, "leaf3", &["inter"], TimePolicy::NoClock, policy);
    non_conforming(result, &subject("leaf3"), "4.2.1.1");
}

/// RFC 5280 §4.2.1.2 (CA certificates MUST carry a subjectKeyIdentifier) and §4.2.1.1
/// (certificates of conforming CAs MUST carry an authorityKeyIdentifier keyIdentifier): refused
/// by the strict profile, the default; the lenient profile accepts such older PKIs.
#[test]
fn strict_profile_requires_key_identifiers_and_lenient_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    hierarchy(d, ["ec", "ec", "ec"]);
    let no_ids = "basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign\nsubjectKeyIdentifier=none\nauthorityKeyIdentifier=none\n";
    cert(d, "bare", "ec", Some("root"), no_ids, &[]);
    // openssl cannot derive a keyIdentifier from an issuer without SKI: the leaf names one
    // (any 20 bytes: key identifiers only help path building, they are not matched).
    let key_id = format!("2.5.29.35=DER:30:16:80:14{}\n", ":01".repeat(20));
    let leaf2 = LEAF_EXT.replace("authorityKeyIdentifier=keyid\n", &key_id);
    cert(d, "leaf2", "ec", Some("bare"), &leaf2, &[]);
    let no_aki = LEAF_EXT.replace(
        "authorityKeyIdentifier=keyid\n",
        "authorityKeyIdentifier=none\n",
    );
    cert(d, "leaf3", "ec", Some("inter"), &no_aki, &[]);
    let trust = anchors(d, "root");
    let strict = ChainPolicy::default();
    assert_eq!(strict.profile(), CertificateProfile::Strict);
    let result = chain(d, &trust, "leaf2", &["bare"], TimePolicy::NoClock, strict);
    non_conforming(result, &subject("bare"), "4.2.1.2");
    let result = chain(d, &trust, "leaf3", &["inter"], TimePolicy::NoClock, strict);
    non_conforming(result, &subject("leaf3"), "4.2.1.1");
    let lenient = strict.with_profile(CertificateProfile::Lenient);
    chain(d, &trust, "leaf2", &["bare"], TimePolicy::NoClock, lenient).unwrap();
    chain(d, &trust, "leaf3", &["inter"], TimePolicy::NoClock, lenient).unwrap();
}

/// The 8-certificate cap is gone (RFC 5280 §6 puts no bound on the certificates offered): a
/// short valid path is found among many offered intermediates — unrelated CAs and look-alikes
/// with the issuer's name but another key — as openssl finds it.
#[test]
fn finds_a_short_path_in_a_large_pool_of_offered_intermediates() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    hierarchy(d, ["ec", "ec", "ec"]);
    let decoys = d.join("decoys");
    fs::create_dir(&decoys).unwrap();
    fs::copy(d.join("root.pem"), decoys.join("root.pem")).unwrap();
    fs::copy(d.join("root.key"), decoys.join("root.key")).unwrap();
    let mut pool = Vec::new();
    for i in 0..12 {
        // Same subject as the real intermediate, another key.
        issue(
            &decoys,
            &format!("d{i}"),
            "/O=veriflash test/CN=inter",
            "ec",
            Some("root"),
            INTER_EXT,
            &[],
        );
        pool.push(der(&decoys, &format!("d{i}")));
    }
    for i in 0..20 {
        cert(d, &format!("other{i}"), "ec", Some("root"), INTER_EXT, &[]);
        pool.push(der(d, &format!("other{i}")));
    }
    pool.push(der(d, "inter"));
    let offered: Vec<&[u8]> = pool.iter().map(Vec::as_slice).collect();
    assert!(offered.len() > 8 * 4);
    let trust = anchors(d, "root");
    let path = verify_chain(
        &der(d, "leaf"),
        &offered,
        &trust,
        TimePolicy::NoClock,
        ChainPolicy::default(),
    )
    .unwrap();
    assert_eq!(path.certificates().len(), 2);
    assert_eq!(path.certificates()[1].subject(), subject("inter"));
    // Without the real one, every look-alike fails its signature check: the reason is a
    // signature failure, not a budget or a cap.
    let without_real = &offered[..offered.len() - 1];
    assert_eq!(
        verify_chain(
            &der(d, "leaf"),
            without_real,
            &trust,
            TimePolicy::NoClock,
            ChainPolicy::default()
        )
        .err(),
        Some(Error::CertificateSignatureInvalid {
            subject: subject("leaf")
        })
    );
    // The memory bound is far above any real chain, and still refuses before parsing.
    let junk = vec![&b"not a certificate"[..]; MAX_INTERMEDIATES + 1];
    assert_eq!(
        verify_chain(
            &der(d, "leaf"),
            &junk,
            &trust,
            TimePolicy::NoClock,
            ChainPolicy::default()
        )
        .err(),
        Some(Error::TooManyCertificates {
            count: MAX_INTERMEDIATES + 2,
            limit: MAX_INTERMEDIATES + 1
        })
    );
}

/// RFC 5280 §6 leaves path building to the implementation (RFC 4158 describes it); its cost is
/// ours to bound. CVE-2024-0567-style pools: CAs that all share one name and cross-sign each
/// other make the number of candidate paths exponential. The work stays bounded by the
/// signature-check budget (MAX_CHAIN_SIGNATURE_CHECKS): the search ends with
/// ChainBudgetExceeded.
#[test]
fn cross_signed_pool_is_bounded_by_the_signature_budget() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    cert(d, "root", "ec", None, ROOT_EXT, &[]);
    let ca = INTER_EXT.replace(",pathlen:0", "");
    let keys = 6;
    // Placeholders: one self-signed "loop" certificate per key, to issue from.
    for k in 0..keys {
        issue(
            d,
            &format!("k{k}"),
            "/O=veriflash test/CN=loop",
            "ec",
            None,
            &ca,
            &[],
        );
    }
    let mut pool = Vec::new();
    for k in 0..keys {
        for by in (0..keys).filter(|&by| by != k) {
            let name = format!("c{k}by{by}");
            fs::copy(d.join(format!("k{k}.key")), d.join(format!("{name}.key"))).unwrap();
            issue_with_key(
                d,
                &name,
                "/O=veriflash test/CN=loop",
                Some(&format!("k{by}")),
                &ca,
                &[],
            );
            pool.push(der(d, &name));
        }
    }
    cert(d, "leaf", "ec", Some("k0"), LEAF_EXT, &[]);
    let offered: Vec<&[u8]> = pool.iter().map(Vec::as_slice).collect();
    let trust = anchors(d, "root");
    let policy = ChainPolicy::default().with_max_intermediates(offered.len());
    let err = verify_chain(
        &der(d, "leaf"),
        &offered,
        &trust,
        TimePolicy::NoClock,
        policy,
    )
    .unwrap_err();
    assert_eq!(err, Error::ChainBudgetExceeded);
}

/// RFC 5280 §6 (path building left to the implementation, RFC 4158): the budget bounds the
/// paths walked, not only the distinct signatures verified: a ladder of
/// seven layers, each two certificates with one name and one key signed by the layer above,
/// holds 2^7 paths over only 30 distinct (certificate, issuer) pairs. Ending at an issuer no
/// one has, walking them all would revisit verified pairs hundreds of times; every visit is
/// charged, so the search stops at the budget. Pinned at the top, the first path is taken.
#[test]
fn revisited_pairs_are_charged_to_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    cert(d, "root", "ec", None, ROOT_EXT, &[]);
    cert(d, "top", "ec", None, ROOT_EXT, &[]);
    let ca = INTER_EXT.replace(",pathlen:0", "");
    let layers = 7;
    let mut pool = Vec::new();
    for layer in (0..layers).rev() {
        let subj = format!("/O=veriflash test/CN=layer{layer}");
        let above = if layer + 1 == layers {
            String::from("top")
        } else {
            format!("a{}", layer + 1)
        };
        issue(d, &format!("a{layer}"), &subj, "ec", Some(&above), &ca, &[]);
        fs::copy(
            d.join(format!("a{layer}.key")),
            d.join(format!("b{layer}.key")),
        )
        .unwrap();
        issue_with_key(d, &format!("b{layer}"), &subj, Some(&above), &ca, &[]);
        pool.extend([der(d, &format!("a{layer}")), der(d, &format!("b{layer}"))]);
    }
    cert(d, "leaf", "ec", Some("a0"), LEAF_EXT, &[]);
    let offered: Vec<&[u8]> = pool.iter().map(Vec::as_slice).collect();
    let policy = ChainPolicy::default().with_max_intermediates(offered.len());
    let leaf = der(d, "leaf");
    assert_eq!(
        verify_chain(
            &leaf,
            &offered,
            &anchors(d, "root"),
            TimePolicy::NoClock,
            policy
        )
        .err(),
        Some(Error::ChainBudgetExceeded)
    );
    let path = verify_chain(
        &leaf,
        &offered,
        &anchors(d, "top"),
        TimePolicy::NoClock,
        policy,
    )
    .unwrap();
    assert_eq!(path.certificates().len(), 1 + layers);
}

/// RFC 5280 §6.1.4 (l): a self-issued intermediate (a CA's key rollover: same name, new key)
/// does not count against pathLenConstraint. The root allows no intermediate below the one it
/// signed (pathlen:0), the rollover certificate sits under it, and the leaf under the new key.
#[test]
fn self_issued_intermediate_is_not_counted_against_path_len() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    cert(d, "root", "ec", None, ROOT_EXT, &[]);
    cert(d, "inter", "ec", Some("root"), INTER_EXT, &[]); // pathlen:0
    issue(
        d,
        "rollover",
        "/O=veriflash test/CN=inter",
        "ec",
        Some("inter"),
        INTER_EXT,
        &[],
    );
    cert(d, "leaf", "ec", Some("rollover"), LEAF_EXT, &[]);
    assert!(openssl_accepts(
        d,
        "root",
        &["rollover", "inter"],
        "leaf",
        &[]
    ));
    let trust = anchors(d, "root");
    let path = chain(
        d,
        &trust,
        "leaf",
        &["inter", "rollover"],
        TimePolicy::NoClock,
        ChainPolicy::default(),
    )
    .unwrap();
    assert_eq!(path.certificates().len(), 3);
    let key = |n: &str| leaf_key(d, n).verifying_key().key_id();
    let keys: Vec<_> = path.certificates().iter().map(|c| c.key_id()).collect();
    assert_eq!(keys, [key("leaf"), key("rollover"), key("inter")]);
}

/// RFC 5280 §6.1.4 (l)-(m): when no path is valid, the reason given is that of the candidate
/// path that got furthest — here the root's pathLenConstraint, two verified signatures up —
/// not the signature failure of the first look-alike candidate tried for the leaf.
#[test]
fn reports_the_reason_of_the_best_candidate_path() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    cert(
        d,
        "root",
        "ec",
        None,
        &ROOT_EXT.replace("CA:TRUE", "CA:TRUE,pathlen:0"),
        &[],
    );
    cert(
        d,
        "inter",
        "ec",
        Some("root"),
        &INTER_EXT.replace(",pathlen:0", ""),
        &[],
    );
    cert(d, "sub", "ec", Some("inter"), INTER_EXT, &[]);
    issue(
        d,
        "rollover",
        "/O=veriflash test/CN=sub",
        "ec",
        Some("sub"),
        INTER_EXT,
        &[],
    );
    cert(d, "leaf", "ec", Some("rollover"), LEAF_EXT, &[]);
    assert!(!openssl_accepts(
        d,
        "root",
        &["sub", "rollover", "inter"],
        "leaf",
        &[]
    ));
    let trust = anchors(d, "root");
    // "sub" is offered first: it has the leaf's issuer name but did not sign it.
    let err = chain(
        d,
        &trust,
        "leaf",
        &["sub", "rollover", "inter"],
        TimePolicy::NoClock,
        ChainPolicy::default(),
    )
    .unwrap_err();
    assert_eq!(
        err,
        Error::PathLenExceeded {
            subject: subject("root"),
            path_len: 0
        }
    );
}

/// RFC 5280 §6.1: validation runs over the certificates of the path. An offered intermediate
/// that is not on it — with an unknown critical extension, or not even DER — changes nothing;
/// on the path, the same extension refuses the chain.
#[test]
fn certificates_not_on_the_path_do_not_matter() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    hierarchy(d, ["ec", "ec", "ec"]);
    let odd = format!("{INTER_EXT}1.2.3.4.5=critical,ASN1:NULL\n");
    cert(d, "odd", "ec", Some("root"), &odd, &[]);
    let trust = anchors(d, "root");
    let (leaf, inter, odd_der) = (der(d, "leaf"), der(d, "inter"), der(d, "odd"));
    let garbage = b"\x30\x03\x02\x01\x00".as_slice();
    let policy = ChainPolicy::default();
    for offered in [
        vec![&odd_der[..], &inter],
        vec![garbage, &inter],
        vec![&inter, &odd_der, garbage],
    ] {
        verify_chain(&leaf, &offered, &trust, TimePolicy::NoClock, policy).unwrap();
    }
    assert!(openssl_accepts(d, "root", &["odd", "inter"], "leaf", &[]));
    // On the path it matters.
    cert(d, "leaf2", "ec", Some("odd"), LEAF_EXT, &[]);
    assert_eq!(
        chain(
            d,
            &trust,
            "leaf2",
            &["inter", "odd"],
            TimePolicy::NoClock,
            policy
        )
        .err(),
        Some(Error::UnknownCriticalExtension {
            subject: subject("odd"),
            oid: ObjectIdentifier::new_unwrap("1.2.3.4.5")
        })
    );
    // With no path at all, an undecodable offered certificate is reported (it may have been
    // the missing issuer).
    assert!(matches!(
        verify_chain(&leaf, &[garbage], &trust, TimePolicy::NoClock, policy),
        Err(Error::CertificateMalformed { index: 1, .. })
    ));
}

/// RFC 5280 §4.2.1.12: a certificate without extendedKeyUsage is unrestricted. The default
/// policy still demands the extension (a firmware signer must say so); IfPresent is the RFC's
/// reading; Any checks nothing. A serverAuth leaf is refused by both requiring policies.
#[test]
fn eku_absent_means_unrestricted_only_when_the_policy_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    hierarchy(d, ["ec", "ec", "ec"]);
    cert(
        d,
        "plain",
        "ec",
        Some("inter"),
        &LEAF_EXT.replace("extendedKeyUsage=codeSigning\n", ""),
        &[],
    );
    cert(
        d,
        "web",
        "ec",
        Some("inter"),
        &LEAF_EXT.replace("codeSigning", "serverAuth"),
        &[],
    );
    let trust = anchors(d, "root");
    let run = |leaf: &str, eku: EkuPolicy| {
        chain(
            d,
            &trust,
            leaf,
            &["inter"],
            TimePolicy::NoClock,
            ChainPolicy::default().with_eku(eku),
        )
    };
    let required = ID_KP_CODE_SIGNING;
    assert_eq!(
        run("plain", EkuPolicy::RequireCodeSigning).err(),
        Some(Error::ExtendedKeyUsageMissing {
            subject: subject("plain"),
            required
        })
    );
    run("plain", EkuPolicy::IfPresent(required)).unwrap();
    run("plain", EkuPolicy::Any).unwrap();
    run("leaf", EkuPolicy::IfPresent(required)).unwrap();
    for eku in [
        EkuPolicy::RequireCodeSigning,
        EkuPolicy::IfPresent(required),
    ] {
        assert_eq!(
            run("web", eku).err(),
            Some(Error::ExtendedKeyUsageMissing {
                subject: subject("web"),
                required
            })
        );
    }
    let server_auth = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.1");
    run("web", EkuPolicy::IfPresent(server_auth)).unwrap();
    run("plain", EkuPolicy::IfPresent(server_auth)).unwrap();
}

/// RFC 5280 §4.1.1.2 and §6.1.3 (a)(1) (each certificate's signature verified with the
/// algorithm it names), with RFC 5758 §3.2 (ecdsa-with-SHA384/512), RFC 8017 / RFC 4055 §5
/// (sha384/512WithRSAEncryption) and RFC 4055 §3 (RSASSA-PSS with SHA-384): chains as real CA
/// hierarchies sign them, with P-384 CA keys and an id-RSASSA-PSS intermediate key, accepted as
/// openssl accepts them. A root self-signed with SHA-1 still loads and anchors: its own
/// signature is never checked (RFC 5280 §6.1.1 (d): the anchor is an input, not a path
/// certificate).
#[test]
fn accepts_sha384_sha512_p384_and_pss_signed_chains() {
    let pss384 = [
        "-sha384",
        "-sigopt",
        "rsa_padding_mode:pss",
        "-sigopt",
        "rsa_pss_saltlen:digest",
    ];
    /// What, the key of root / intermediate / leaf, and the options each is signed with.
    type Case<'a> = (&'a str, [&'a str; 3], [&'a [&'a str]; 3]);
    let cases: [Case<'_>; 5] = [
        (
            "P-384 root, SHA-384",
            ["ec384", "ec384", "ec"],
            [&["-sha384"], &["-sha384"], &["-sha384"]],
        ),
        (
            "SHA-512 everywhere",
            ["ec384", "ec", "ec"],
            [&["-sha512"], &["-sha512"], &["-sha512"]],
        ),
        (
            "RSA SHA-384/512",
            ["3072", "2048", "ec"],
            [&["-sha512"], &["-sha384"], &["-sha512"]],
        ),
        (
            "PSS SHA-384, PSS key",
            ["4096", "pss", "ec"],
            [&[], &pss384, &pss384],
        ),
        (
            "SHA-1 self-signed root",
            ["2048", "ec384", "ec"],
            [&["-sha1"], &["-sha256"], &["-sha256"]],
        ),
    ];
    for (what, algos, digests) in cases {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        cert(d, "root", algos[0], None, ROOT_EXT, digests[0]);
        cert(d, "inter", algos[1], Some("root"), INTER_EXT, digests[1]);
        cert(d, "leaf", algos[2], Some("inter"), LEAF_EXT, digests[2]);
        let trust = anchors(d, "root");
        let time = TimePolicy::TrustedTime(now());
        chain(d, &trust, "leaf", &["inter"], time, ChainPolicy::default())
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        verify_signed(d, &trust, "leaf", &["inter"], |v| v.with_time(time))
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        if !digests[0].contains(&"-sha1") {
            assert!(
                openssl_accepts(d, "root", &["inter"], "leaf", &[]),
                "{what}"
            );
        }
    }
}

/// RFC 5280 §6.1.1 (k), max_path_length, as a caller's input: a configurable maximum path
/// length (intermediates between leaf and anchor); a path longer than the policy allows is
/// refused with its own error.
#[test]
fn maximum_path_length_is_configurable() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = INTER_EXT.replace(",pathlen:0", "");
    cert(d, "root", "ec", None, ROOT_EXT, &[]);
    cert(d, "i1", "ec", Some("root"), &ca, &[]);
    cert(d, "i2", "ec", Some("i1"), &ca, &[]);
    cert(d, "leaf", "ec", Some("i2"), LEAF_EXT, &[]);
    let trust = anchors(d, "root");
    let policy = ChainPolicy::default();
    assert_eq!(policy.max_intermediates(), MAX_PATH_INTERMEDIATES);
    chain(
        d,
        &trust,
        "leaf",
        &["i1", "i2"],
        TimePolicy::NoClock,
        policy,
    )
    .unwrap();
    chain(
        d,
        &trust,
        "leaf",
        &["i1", "i2"],
        TimePolicy::NoClock,
        policy.with_max_intermediates(2),
    )
    .unwrap();
    assert_eq!(
        chain(
            d,
            &trust,
            "leaf",
            &["i1", "i2"],
            TimePolicy::NoClock,
            policy.with_max_intermediates(1)
        )
        .err(),
        Some(Error::PathTooLong { limit: 1 })
    );
}

/// RFC 5280 §6.1.1 (d), the trust anchor information: a trust bundle (root keys and
/// certificates in one PEM) says which anchor cannot be used and why, instead of only why.
#[test]
fn trust_bundle_names_the_unusable_anchor() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    cert(d, "root", "ec", None, ROOT_EXT, &[]);
    cert(d, "weak", "1024", None, ROOT_EXT, &[]);
    openssl(
        d,
        &["pkey", "-in", "root.key", "-pubout", "-out", "root.pub"],
    );
    let bundle = [
        fs::read_to_string(d.join("root.pub")).unwrap(),
        fs::read_to_string(d.join("root.pem")).unwrap(),
        fs::read_to_string(d.join("weak.pem")).unwrap(),
    ]
    .concat();
    assert_eq!(
        PinnedKeys::from_pem(&bundle).err(),
        Some(Error::UnusableAnchor {
            block: 2,
            name: subject("weak"),
            source: Box::new(Error::RsaKeyTooSmall { bits: 1024 })
        })
    );
    let err = PinnedKeys::from_pem(&bundle).unwrap_err();
    assert!(err.to_string().contains("CN=weak"), "{err}");
    assert!(std::error::Error::source(&err).is_some());
}
