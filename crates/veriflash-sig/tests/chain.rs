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
    ChainPolicy, EkuPolicy, Error, ObjectIdentifier, PinnedKeys, Policy, SignatureInput,
    SigningKey, TimePolicy, Verifier, VerifyingKey, verify_chain,
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

/// `name.key`: "ec" for P-256, otherwise RSA bits.
fn key(d: &Path, name: &str, algo: &str) {
    let out = format!("{name}.key");
    if algo == "ec" {
        openssl(
            d,
            &[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
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
    key(d, name, algo);
    let subj = format!("/O=veriflash test/CN={name}");
    let (k, csr, pem, extfile) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.pem"),
        format!("{name}.ext"),
    );
    fs::write(d.join(&extfile), ext).unwrap();
    openssl(
        d,
        &["req", "-new", "-key", &k, "-subj", &subj, "-out", &csr],
    );
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
