//! `veriflash pack`: describe, digest, sign, write — or export the bytes to sign
//! (`--unsigned`) for `veriflash sign` to attach a signature made elsewhere.

use std::path::{Path, PathBuf};

use veriflash_core::pack::check_certificate_dates;
use veriflash_core::sig::{PinnedKeys, VerifyingKey};
use veriflash_core::trust::{load_certificate_chain, load_public_key, load_signing_key};
use veriflash_core::{
    AnchorSet, Chunking, DeltaBase, Error, ErrorKind, PackOptions, Trust, UnsignedPackage,
};
use veriflash_plugin::config::UnknownKeys;

use crate::manifest_toml;
use crate::output::{Failure, human_size};

/// What `pack` and `sign` refuse unless told otherwise. Both read the description and sign,
/// so both take the same flags (`sign` must read what `pack --unsigned` read).
#[derive(Clone, Copy, Debug, Default, clap::Args)]
pub(crate) struct Strictness {
    /// Accept keys the description has that this veriflash does not know (one written for a
    /// newer version), listing them as warnings. Without it they are errors, so a misspelt key
    /// cannot change what is signed; keys in [trust_rotation] are always checked.
    #[arg(long)]
    pub(crate) allow_unknown_keys: bool,
    /// Sign even with a certificate chain that is expired or not valid yet (a warning naming
    /// its dates instead of an error): devices that judge dates by a trusted clock will refuse
    /// the package.
    #[arg(long)]
    pub(crate) force: bool,
}

impl Strictness {
    fn unknown_keys(self) -> UnknownKeys {
        if self.allow_unknown_keys {
            UnknownKeys::Warn
        } else {
            UnknownKeys::Refuse
        }
    }

    /// With `--force`, what the library would have refused about `chain`'s dates, said as a
    /// warning; nothing without it (the library refuses instead).
    fn warn_about_dates(self, chain: &[Vec<u8>]) {
        if !self.force {
            return;
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if let Err(e) = check_certificate_dates(chain, now) {
            eprintln!("warning: {} (signing anyway: --force)", e.message());
        }
    }
}

/// `--delta-from` and `--delta-trust`, the same for `pack` and `sign`.
#[derive(Clone, Debug, Default, clap::Args)]
pub(crate) struct DeltaArg {
    /// Make a delta package (format version 4) that installs only on a device running the
    /// images of OLD.vfp, a complete package: each chunk is copied from the old image on the
    /// device (found by its SHA-256 anywhere in it), stored as a Zstandard patch against the
    /// old image (where the chunk's content moved to, or where it was), or carried as without
    /// this option, whichever is smallest. The manifest's chunk_size is the delta's own: each
    /// chunk costs 85 bytes of signed tables, so 1-4 MiB chunks suit a large image changed in
    /// many small places (a rebuilt file system). OLD.vfp must
    /// verify against the public key of a --key, or of a --delta-trust key; a device running
    /// anything else refuses the delta before writing (`source_mismatch`, 34). Readers of
    /// versions 1 to 3 refuse the package.
    #[arg(long, value_name = "OLD.vfp")]
    pub(crate) delta_from: Option<PathBuf>,
    /// Trusted public keys (PEM, or a directory of them) OLD.vfp may be signed by, besides
    /// those of --key (with `sign`: of --pubkey).
    #[arg(long, value_name = "PUBKEY_OR_DIR", requires = "delta_from")]
    pub(crate) delta_trust: Vec<PathBuf>,
    /// With --delta-from: copy chunks from the old image but store no patch (chunks not found
    /// in it are carried as without --delta-from), for devices that should not decode patches.
    #[arg(long, requires = "delta_from")]
    pub(crate) copy_only: bool,
    /// With --delta-from: carry the image of PARTITION whole, as a complete package does
    /// (repeatable). For an image the device runs but does not store, so cannot read back:
    /// the loader it is sent first, such as the MDM9x07's Firehose programmer
    /// (`--delta-whole programmer`).
    #[arg(long, value_name = "PARTITION", requires = "delta_from")]
    pub(crate) delta_whole: Vec<String>,
}

impl DeltaArg {
    /// The old package, verified against `keys` and the `--delta-trust` anchors, when
    /// `--delta-from` names one.
    fn base(&self, keys: &[VerifyingKey]) -> Result<Option<DeltaBase>, Error> {
        let Some(old) = &self.delta_from else {
            return Ok(None);
        };
        let mut anchors = PinnedKeys::new();
        for key in keys {
            anchors.add(key.clone());
        }
        for path in &self.delta_trust {
            for anchor in AnchorSet::load(path)?.anchors().iter() {
                anchors.add_anchor(anchor.clone());
            }
        }
        let trust = Trust::new(AnchorSet::new(anchors, 1));
        DeltaBase::from_package(old, &trust.verifier())
            .map(|base| Some(base.carrying_whole(self.delta_whole.iter().cloned())))
    }

    /// The files this option reads (an output may not be one of them).
    fn inputs(&self) -> impl Iterator<Item = &Path> {
        self.delta_from
            .iter()
            .chain(&self.delta_trust)
            .map(PathBuf::as_path)
    }
}

/// Reads the manifest description and digests (and, with `compress`, compresses) the images,
/// after checking that `out` may be written: not a device node or a link, and none of the
/// run's inputs — the description, its images, or `other_inputs` (keys, signatures).
fn prepare(
    manifest: &Path,
    options: &PackOptions,
    delta: Option<&DeltaBase>,
    strictness: Strictness,
    out: &Path,
    other_inputs: &[&Path],
) -> Result<UnsignedPackage, Failure> {
    let loaded = manifest_toml::load(manifest, strictness.unknown_keys())?;
    for warning in &loaded.warnings {
        eprintln!("warning: {}: {warning}", manifest.display());
    }
    let images = loaded.spec.images.iter().filter_map(|i| match &i.data {
        veriflash_core::ImageData::File(path) => Some(path.as_path()),
        veriflash_core::ImageData::Bytes(_) => None,
    });
    let inputs: Vec<&Path> = std::iter::once(manifest)
        .chain(images)
        .chain(other_inputs.iter().copied())
        .collect();
    veriflash_core::output::check_output(out, &inputs)?;
    let unsigned = match delta {
        Some(base) => UnsignedPackage::prepare_delta(loaded.spec, options, base)?,
        None => UnsignedPackage::prepare_with(loaded.spec, options)?,
    }
    .allow_expired_certificates(strictness.force);
    Ok(match &loaded.rotation {
        Some(rotation) => unsigned.with_trust_rotation(rotation.anchor_set()?.to_rotation()?)?,
        None => unsigned,
    })
}

/// `pack --unsigned`: writes the exact bytes every signature must cover.
fn write_tbs(unsigned: &UnsignedPackage, manifest: &Path, out: &Path) -> Result<(), Failure> {
    let mut inputs = unsigned.input_files();
    inputs.push(manifest);
    veriflash_core::output::write_atomically(out, &inputs, |file| {
        std::io::Write::write_all(file, unsigned.signed_message())
            .map_err(|e| Error::new(ErrorKind::Io, format!("{}: {e}", out.display())))
    })?;
    println!(
        "wrote the {} bytes to sign to {} (sign them with SHA-256, e.g. `openssl dgst -sha256 -sign key.pem -out sig.der {}`, then run `veriflash sign`)",
        unsigned.signed_message().len(),
        out.display(),
        out.display()
    );
    Ok(())
}

/// Packs with one key and no certificates (the demo's path).
pub(crate) fn run(manifest: &Path, key: &Path, out: &Path) -> Result<(), Failure> {
    run_with(&PackArgs {
        manifest,
        keys: &[key.to_path_buf()],
        certs: &[],
        unsigned_only: false,
        compress: None,
        chunking: Chunking::Fixed,
        delta: &DeltaArg::default(),
        strictness: Strictness::default(),
        out,
    })
}

/// What `veriflash pack` was asked to do.
pub(crate) struct PackArgs<'a> {
    pub(crate) manifest: &'a Path,
    pub(crate) keys: &'a [PathBuf],
    pub(crate) certs: &'a [PathBuf],
    /// `--unsigned`: write the bytes to sign only.
    pub(crate) unsigned_only: bool,
    pub(crate) compress: Option<i32>,
    /// `--chunking`.
    pub(crate) chunking: Chunking,
    /// `--delta-from`, `--delta-trust`.
    pub(crate) delta: &'a DeltaArg,
    pub(crate) strictness: Strictness,
    pub(crate) out: &'a Path,
}

/// `veriflash pack` with every option.
pub(crate) fn run_with(args: &PackArgs<'_>) -> Result<(), Failure> {
    let PackArgs {
        manifest,
        keys,
        certs,
        compress,
        chunking,
        delta,
        strictness,
        out,
        ..
    } = *args;
    let options = PackOptions::new()
        .compression(compress)
        .chunking(chunking)
        .copy_only(delta.copy_only);
    let delta_inputs: Vec<&Path> = delta.inputs().collect();
    if args.unsigned_only {
        if !keys.is_empty() || !certs.is_empty() {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "--unsigned takes no --key or --cert: it writes the bytes to sign",
            )
            .into());
        }
        let base = delta.base(&[])?;
        return write_tbs(
            &prepare(
                manifest,
                &options,
                base.as_ref(),
                strictness,
                out,
                &delta_inputs,
            )?,
            manifest,
            out,
        );
    }
    if keys.is_empty() {
        return Err(Error::new(ErrorKind::InvalidInput, "give --key (or --unsigned)").into());
    }
    if !certs.is_empty() && certs.len() != keys.len() {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            "give one --cert per --key (the i-th chain goes with the i-th key), or none",
        )
        .into());
    }
    let keys_paths = keys;
    let keys = keys
        .iter()
        .map(|k| load_signing_key(k))
        .collect::<Result<Vec<_>, _>>()?;
    let chains = certs
        .iter()
        .map(|c| load_certificate_chain(c))
        .collect::<Result<Vec<_>, _>>()?;
    let key_files: Vec<&Path> = keys_paths
        .iter()
        .chain(certs)
        .map(PathBuf::as_path)
        .chain(delta_inputs)
        .collect();
    let public: Vec<VerifyingKey> = keys.iter().map(|k| k.verifying_key()).collect();
    let base = delta.base(&public)?;
    let unsigned = prepare(
        manifest,
        &options,
        base.as_ref(),
        strictness,
        out,
        &key_files,
    )?;
    let mut entries = Vec::with_capacity(keys.len());
    for (i, key) in keys.iter().enumerate() {
        let chain = chains.get(i).cloned().unwrap_or_default();
        strictness.warn_about_dates(&chain);
        entries.push(unsigned.sign_with_certificates(key, chain)?);
    }
    let written = unsigned.write_with_entries(entries, out)?;
    report(&unsigned, out, written);
    for key in &keys {
        println!("signed by key {}", key.verifying_key().key_id());
    }
    Ok(())
}

fn report(unsigned: &UnsignedPackage, out: &Path, written: u64) {
    let m = unsigned.manifest();
    println!(
        "packed {} ({}): {} {} for {} / {}, security version {}",
        out.display(),
        human_size(written),
        m.images.len(),
        if m.images.len() == 1 {
            "image"
        } else {
            "images"
        },
        m.product,
        m.chipset,
        m.security_version
    );
    if let Some(r) = &m.trust_rotation {
        println!(
            "trust rotation: devices adopt anchor set version {} ({} of {} anchors must sign) after installing; sign with enough current AND new keys",
            r.version,
            r.threshold,
            r.anchors.len()
        );
    }
    if m.images
        .iter()
        .any(veriflash_core::format::ImageSpec::has_variable_chunks)
    {
        let chunks: u64 = m.images.iter().map(|i| i.chunk_count()).sum();
        let image: u64 = m.images.iter().map(|i| i.size).sum();
        println!(
            "content-defined chunks: {chunks}, {} on average (format version 3)",
            human_size(image / chunks.max(1))
        );
    }
    for image in m.images.iter().filter(|i| i.source.is_some()) {
        let cost = veriflash_core::ImageCost::of(image, image.size);
        println!(
            "delta of '{}': {} chunks copied from the old image, {} patched, {} carried; {} of {} stored (format version 4)",
            image.name,
            cost.from_source,
            cost.patched,
            cost.carried,
            human_size(cost.delta_bytes),
            human_size(cost.size)
        );
    }
    let zstd = |i: &veriflash_core::format::ImageSpec| {
        i.stored_chunks
            .iter()
            .any(|c| c.encoding == veriflash_core::format::ChunkEncoding::Zstd)
    };
    if m.images.iter().any(zstd) {
        let image: u64 = m.images.iter().map(|i| i.size).sum();
        let stored: u64 = m.images.iter().map(|i| i.stored_size()).sum();
        println!(
            "compressed: {} of images stored in {} ({})",
            human_size(image),
            human_size(stored),
            ratio(stored, image)
        );
    }
}

/// `stored / image` as a percentage, for display.
pub(crate) fn ratio(stored: u64, image: u64) -> String {
    if image == 0 {
        return "100.0%".to_owned();
    }
    // Display only: f64 precision is ample for a percentage.
    #[allow(clippy::cast_precision_loss)]
    let percent = stored as f64 * 100.0 / image as f64;
    format!("{percent:.1}%")
}

/// `veriflash sign`: attaches a signature made elsewhere over the bytes `pack --unsigned` wrote.
pub(crate) struct SignArgs<'a> {
    pub(crate) manifest: &'a Path,
    pub(crate) tbs: &'a Path,
    /// The signatures made elsewhere, in order.
    pub(crate) signatures: &'a [PathBuf],
    /// One public key per signature (same order), or none when `certs` gives the keys.
    pub(crate) pubkeys: &'a [PathBuf],
    /// One certificate chain per signature (same order), or none for pinned keys.
    pub(crate) certs: &'a [PathBuf],
    /// Every RSA signature is PSS.
    pub(crate) pss: bool,
    /// The `--compress` level `pack --unsigned` was given (the images are packed the same way
    /// again, and zstd is deterministic, so the bytes to sign match).
    pub(crate) compress: Option<i32>,
    /// The `--chunking` `pack --unsigned` was given (the cuts depend only on the bytes).
    pub(crate) chunking: Chunking,
    /// The `--delta-from` `pack --unsigned` was given (a delta depends only on the bytes).
    pub(crate) delta: &'a DeltaArg,
    pub(crate) strictness: Strictness,
    pub(crate) out: &'a Path,
}

pub(crate) fn sign(args: &SignArgs<'_>) -> Result<(), Failure> {
    let inputs: Vec<&Path> = std::iter::once(args.tbs)
        .chain(args.signatures.iter().map(PathBuf::as_path))
        .chain(args.pubkeys.iter().map(PathBuf::as_path))
        .chain(args.certs.iter().map(PathBuf::as_path))
        .chain(args.delta.inputs())
        .collect();
    let pubkeys = args
        .pubkeys
        .iter()
        .map(|p| load_public_key(p))
        .collect::<Result<Vec<_>, _>>()?;
    let base = args.delta.base(&pubkeys)?;
    let unsigned = prepare(
        args.manifest,
        &PackOptions::new()
            .compression(args.compress)
            .chunking(args.chunking)
            .copy_only(args.delta.copy_only),
        base.as_ref(),
        args.strictness,
        args.out,
        &inputs,
    )?;
    let tbs = std::fs::read(args.tbs)
        .map_err(|e| Error::new(ErrorKind::Io, format!("{}: {e}", args.tbs.display())))?;
    if tbs != unsigned.signed_message() {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "{} is not what {} describes now (an image or the description changed since `pack --unsigned`)",
                args.tbs.display(),
                args.manifest.display()
            ),
        )
        .into());
    }
    let n = args.signatures.len();
    let usage = |m: &str| -> Failure { Error::new(ErrorKind::InvalidInput, m.to_owned()).into() };
    if n == 0 {
        return Err(usage("give at least one --signature"));
    }
    for (list, flag) in [(args.pubkeys, "--pubkey"), (args.certs, "--cert")] {
        if !list.is_empty() && list.len() != n {
            return Err(usage(&format!(
                "{n} --signature but {} {flag}: give one {flag} per --signature, in the same order",
                list.len()
            )));
        }
    }
    let mut entries = Vec::with_capacity(n);
    let mut keys = Vec::with_capacity(n);
    for (i, signature_path) in args.signatures.iter().enumerate() {
        let chain = match args.certs.get(i) {
            Some(path) => load_certificate_chain(path)?,
            None => Vec::new(),
        };
        let key = match (args.pubkeys.get(i), chain.first()) {
            (Some(path), _) => load_public_key(path)?,
            (None, Some(leaf)) => veriflash_core::sig::leaf_public_key(leaf).map_err(|e| {
                Error::new(
                    ErrorKind::InvalidInput,
                    format!("the leaf certificate of {}: {e}", signature_path.display()),
                )
            })?,
            (None, None) => {
                return Err(usage(
                    "give --pubkey or --cert for each --signature: the key that made it",
                ));
            }
        };
        let algorithm = match (key.rsa_bits(), args.pss) {
            (None, _) => veriflash_core::sig::ECDSA_WITH_SHA256,
            (Some(_), false) => veriflash_core::sig::SHA256_WITH_RSA_ENCRYPTION,
            (Some(_), true) => veriflash_core::sig::ID_RSASSA_PSS,
        };
        let signature = std::fs::read(signature_path)
            .map_err(|e| Error::new(ErrorKind::Io, format!("{}: {e}", signature_path.display())))?;
        // `attach` checks the signature over the signed message (and the chain's dates)
        // before accepting it.
        args.strictness.warn_about_dates(&chain);
        entries.push(unsigned.attach(algorithm, &key, signature, chain)?);
        keys.push(key);
    }
    if args.pss && keys.iter().all(|k| k.rsa_bits().is_none()) {
        return Err(usage("--pss needs an RSA key"));
    }
    let written = unsigned.write_with_entries(entries, args.out)?;
    report(&unsigned, args.out, written);
    for key in &keys {
        println!("signed by key {}", key.key_id());
    }
    Ok(())
}
