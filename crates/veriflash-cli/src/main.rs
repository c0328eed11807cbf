//! `veriflash`: make, sign, inspect and verify firmware update packages.
//!
//! Exit status: 0 on success; otherwise the stable error code of the failure (see
//! `veriflash --help` and the README), 2 for a usage error.

#![forbid(unsafe_code)]

mod demo;
mod device;
mod devices;
mod emulate;
mod emulators;
mod events;
mod factory;
mod fetch;
mod flash;
mod import_qdl;
mod inspect;
mod keygen;
mod manifest_toml;
mod manual;
mod output;
mod pack;
mod plugins;
mod read;
mod signals;
mod station;
mod verify;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

/// The exit-status table for `--help`, made from the error kinds themselves so it can never
/// disagree with them.
fn exit_codes_help() -> String {
    let mut text =
        String::from("Exit status:\n  0   success\n  1   unexpected failure\n  2   usage error\n");
    for kind in veriflash_core::ErrorKind::ALL {
        text.push_str(&format!(
            "  {:<3} {:<24} {}\n",
            kind.code(),
            kind.name(),
            kind.summary()
        ));
    }
    text
}

/// Verify and flash signed firmware update packages.
#[derive(Debug, Parser)]
#[command(name = "veriflash")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Generate a signing key (ECDSA P-256 by default, or RSA 3072/4096 with --algo) as
    /// PKCS#8 PEM (mode 0600), and its public key beside it.
    #[command(
        after_help = "Examples:\n  veriflash keygen --out vendor.pem                  # P-256: writes vendor.pem and vendor.pub.pem\n  veriflash keygen --algo rsa3072 --out vendor.pem   # RSA 3072, signs PKCS#1 v1.5 with SHA-256"
    )]
    Keygen {
        /// Where to write the private key; the public key goes to the same name ending in
        /// `.pub.pem`.
        #[arg(long, value_name = "KEY.pem")]
        out: PathBuf,
        /// Overwrite existing files.
        #[arg(long)]
        force: bool,
        /// Key type: p256 (default), rsa3072 or rsa4096.
        #[arg(long, value_enum, default_value = "p256")]
        algo: keygen::KeyAlgo,
    },
    /// Build and sign a package from a manifest description (TOML) and image files.
    #[command(
        after_help = "Example:\n  veriflash pack --manifest update.toml --key vendor.pem --out update.vfp"
    )]
    Pack {
        /// The package description: product, chipset, version, security_version and
        /// `[[image]]` tables with name, partition and file (relative to this file).
        #[arg(long, value_name = "M.toml")]
        manifest: PathBuf,
        /// Private signing key (PEM, as `veriflash keygen` or openssl writes it); repeat for
        /// several signatures.
        #[arg(long, value_name = "KEY.pem")]
        key: Vec<PathBuf>,
        /// The signer's certificate chain (PEM: leaf first, then intermediates); repeat once
        /// per --key, in the same order, or leave out for keys pinned directly.
        #[arg(long, value_name = "CHAIN.pem")]
        cert: Vec<PathBuf>,
        /// Write only the exact bytes to sign (header || manifest) to --out, for a signature
        /// made elsewhere (`openssl dgst -sha256 -sign`, an HSM) and attached by `veriflash sign`.
        #[arg(long)]
        unsigned: bool,
        #[command(flatten)]
        compress: CompressArg,
        #[command(flatten)]
        delta: pack::DeltaArg,
        #[command(flatten)]
        strictness: pack::Strictness,
        /// Where to write the package (or, with --unsigned, the bytes to sign).
        #[arg(long, value_name = "PKG")]
        out: PathBuf,
    },
    /// Attach a signature made elsewhere over the bytes `pack --unsigned` wrote, and write the
    /// package (the images are digested again and must be unchanged).
    #[command(
        after_help = "Example:\n  veriflash pack --manifest update.toml --unsigned --out update.tbs\n  openssl dgst -sha256 -sign key.pem -out sig.der update.tbs\n  veriflash sign --manifest update.toml --tbs update.tbs --signature sig.der --cert chain.pem --out update.vfp"
    )]
    Sign {
        /// The same package description `pack --unsigned` was given.
        #[arg(long, value_name = "M.toml")]
        manifest: PathBuf,
        /// The bytes to sign that `pack --unsigned` wrote.
        #[arg(long, value_name = "PKG.tbs")]
        tbs: PathBuf,
        /// A signature: RSA (PKCS#1 v1.5, or PSS with --pss), or ECDSA P-256 as DER or
        /// 64-byte r||s. Repeat for several signers (k of n, a trust rotation signed by the
        /// current and the new keys).
        #[arg(long, value_name = "SIG", required = true)]
        signature: Vec<PathBuf>,
        /// The signer's public key (PEM), when not given by --cert; one per --signature, in
        /// the same order.
        #[arg(long, value_name = "PUB.pem")]
        pubkey: Vec<PathBuf>,
        /// The signer's certificate chain (PEM: leaf first, then intermediates); one per
        /// --signature, in the same order.
        #[arg(long, value_name = "CHAIN.pem")]
        cert: Vec<PathBuf>,
        /// Every RSA signature is PSS (SHA-256, MGF1-SHA-256, salt 32).
        #[arg(long)]
        pss: bool,
        /// The same --compress level `pack --unsigned` was given, if any.
        #[command(flatten)]
        compress: CompressArg,
        /// The same --delta-from package `pack --unsigned` was given, if any.
        #[command(flatten)]
        delta: pack::DeltaArg,
        #[command(flatten)]
        strictness: pack::Strictness,
        /// Where to write the package.
        #[arg(long, value_name = "PKG")]
        out: PathBuf,
    },
    /// Show what a package claims, without verifying it (no payload byte is read); with
    /// --delta-from, what a delta package from an old package to this one would cost.
    #[command(
        after_help = "Examples:\n  veriflash inspect update.vfp --json\n  veriflash inspect --delta-from v1.vfp --trust vendor.pub.pem v2.vfp"
    )]
    Inspect {
        /// The package file.
        package: PathBuf,
        /// Show, image by image, what `pack --delta-from OLD.vfp` would make of this package's
        /// images: payload bytes carried against the full package's, and chunks copied from
        /// the old image, patched against it, or carried. Both packages are verified in full
        /// (with --trust) and read into memory.
        #[arg(long, value_name = "OLD.vfp", requires = "trust")]
        delta_from: Option<PathBuf>,
        /// Trusted public keys (PEM, or a directory of them) both packages must verify
        /// against; needed by --delta-from.
        #[arg(long, value_name = "PUBKEY_OR_DIR")]
        trust: Option<PathBuf>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Verify a package completely: signatures against trusted keys, then every payload chunk.
    #[command(
        after_help = "Example:\n  veriflash verify --trust vendor.pub.pem update.vfp && echo authentic"
    )]
    Verify {
        /// Trusted public keys and/or root certificates (PEM), a directory of them, or an
        /// anchor-set file written by `flash --save-rotation`.
        #[arg(long, value_name = "PUBKEY_OR_DIR")]
        trust: PathBuf,
        /// The package file, or `-` to read it from standard input.
        package: PathBuf,
        /// Print the result (or the error with its code and remedy) as JSON on stdout.
        #[arg(long)]
        json: bool,
        /// Hashing threads for the payload (0: one per available core).
        #[arg(long, value_name = "N", default_value_t = 0)]
        threads: usize,
        /// Also hash each whole image and compare it with its signed SHA-256 (one more pass
        /// over the payload, on one core; the signed chunk digests already cover every byte).
        /// Without it the image's SHA-256 is reported as signed, not as re-computed; `flash`
        /// always checks it.
        #[arg(long)]
        whole_image_digest: bool,
        #[command(flatten)]
        trust_options: verify::TrustOptions,
    },
    /// Verify a package and install it on a device: the inactive slot is written, read back,
    /// and switched to only when every image matches.
    #[command(
        after_help = "Example:\n  veriflash flash update.vfp --trust vendor.pub.pem --target file:device.img"
    )]
    Flash {
        /// The package file, `-` to read it from standard input, or an http:// or https:// URL
        /// to download, verify and flash in one streaming pass (every chunk checked before it
        /// is written).
        package: PathBuf,
        /// Trusted public keys and/or root certificates (PEM), a directory of them, or an
        /// anchor-set file written by --save-rotation (with its own threshold and version).
        #[arg(long, value_name = "PUBKEY_OR_DIR")]
        trust: PathBuf,
        /// If the package rotates the trust anchors (a new set signed by the current and the
        /// new anchors), write the new set here once the install has committed; pass it as
        /// --trust from then on. Without it a rotation is reported, not adopted.
        #[arg(long, value_name = "ANCHORS")]
        save_rotation: Option<PathBuf>,
        #[command(flatten)]
        trust_options: verify::TrustOptions,
        /// The device: `file:PATH` for a file-backed device; for an MDM9x07 in download
        /// mode `mdm9x07:serial:/dev/ttyUSB0`, `mdm9x07:usb` (first 05C6:9008 device),
        /// `mdm9x07:usb:BUS-PORT` (see `veriflash devices`) or `mdm9x07:emulator`.
        /// Repeat it to flash several devices at once (factory line): the package is read and
        /// verified once, each device gets its own progress and result, then a summary; the
        /// exit status is 0 if all succeeded, otherwise the first failed device's code.
        #[arg(long, value_name = "TARGET", required = true)]
        target: Vec<String>,
        /// For an https:// PACKAGE: trust the CA certificates in this PEM file (the device's
        /// trust store) instead of Mozilla's roots.
        #[arg(long, value_name = "CA.pem")]
        ca: Option<PathBuf>,
        #[command(flatten)]
        download: fetch::DownloadLimits,
        /// For a real modem (`mdm9x07:serial:TTY`, `mdm9x07:usb[:BUS-PORT]`; one --target, a package
        /// file): when the connection is lost mid-flash (cable pulled, modem reset), wait up to
        /// SECS for it to answer again in download mode and run the install again from the
        /// package file (the journal skips partitions already done), at most 3 times.
        /// 0: fail at once.
        #[arg(
            long,
            value_name = "SECS",
            default_value_t = flash::DEFAULT_RECONNECT_SECS,
            value_parser = clap::value_parser!(u64).range(0..=flash::MAX_WAIT_SECS)
        )]
        reconnect: u64,
        /// For a real modem: after the flash, wait up to SECS for it to reappear on USB in
        /// normal mode (a Qualcomm or Quectel modem, at the same USB location when known) and
        /// print where and its DIAG port; exit 53 (`timeout`) if it does not. 0: do not wait.
        #[arg(
            long,
            value_name = "SECS",
            default_value_t = 0,
            value_parser = clap::value_parser!(u64).range(0..=flash::MAX_WAIT_SECS)
        )]
        wait_boot: u64,
        /// Let a package rewrite an MDM9x07's partition table (its MIBIB step, imported with
        /// `import-qdl --with-partition-table`): the old table is copied to the state
        /// directory's backups first, the new one read back before the other images are
        /// placed by it. Without it such a package is refused (protected_partition).
        #[arg(long)]
        allow_partition_table: bool,
        /// For a real modem (`mdm9x07:serial:TTY`, `mdm9x07:usb[:BUS-PORT]`): wait up to SECS
        /// for it to appear in download mode before the flash, as qdl does. 0: fail at once.
        #[arg(long = "wait", value_name = "SECS", default_value_t = 0,
              value_parser = clap::value_parser!(u64).range(0..=flash::MAX_WAIT_SECS))]
        wait_device: u64,
        /// The sysfs directory of USB devices that --wait-boot watches (for tests).
        #[arg(long, value_name = "DIR", hide = true)]
        sysfs: Option<PathBuf>,
        /// For an http(s):// PACKAGE: download every chunk, even those the device already
        /// holds. By default a device that can read back what it runs (the file device's
        /// active slot) has only the chunks it lacks downloaded; each one it holds is read
        /// again and checked against its signed digest right before it is written.
        #[arg(long, conflicts_with = "chunk_cache")]
        no_reuse: bool,
        /// For an http(s):// PACKAGE: also reuse chunks kept in DIR (one file per chunk, named
        /// by its SHA-256), keep there the chunks downloaded (an interrupted flash does not
        /// fetch them again), and after the commit keep only the installed package's.
        #[arg(long, value_name = "DIR")]
        chunk_cache: Option<PathBuf>,
        /// How a delta package's source is checked before the first write: `whole` hashes the
        /// image the device runs, all of it, so nothing is written when it is not the delta's
        /// source, damaged or not; `recorded` compares the source with the digest the device
        /// recorded when it installed that image (hashing it whole where it keeps none): as
        /// safe for the slot that runs, one SHA-256 pass faster, but an image damaged since its
        /// install is found part way, with the other slot written up to there and not made
        /// bootable.
        #[arg(long, value_enum, value_name = "HOW", default_value_t = flash::SourceCheckArg::Whole)]
        source_check: flash::SourceCheckArg,
        /// Print events and the result as JSON lines on stdout.
        #[arg(long)]
        json: bool,
    },
    /// A flashing station: a local web page that shows the package and its verification,
    /// every modem as it is plugged in and out, each one's progress and result, and the
    /// session's history (CSV, JSON). The package is verified once at start; the page flashes
    /// those verified bytes, one device or all at once, and cannot replace them.
    #[command(
        after_help = "Example:\n  veriflash station --package update.vfp --trust vendor.pub.pem\n  # prints http://127.0.0.1:PORT/?token=...: open it in a browser on this computer\n\nThe page is served on loopback unless --listen names another address of this computer\n(never a host name or every interface); every request needs the token of the printed URL."
    )]
    Station {
        /// The package file: read once and verified at start.
        #[arg(long, value_name = "PKG")]
        package: PathBuf,
        /// Trusted public keys and/or root certificates (PEM), a directory of them, or an
        /// anchor-set file.
        #[arg(long, value_name = "PUBKEY_OR_DIR")]
        trust: PathBuf,
        #[command(flatten)]
        trust_options: verify::TrustOptions,
        /// Where to serve the page, IP:PORT (default 127.0.0.1 on a free port). An address
        /// that is not loopback must be named exactly: never a host name or 0.0.0.0.
        #[arg(long, value_name = "IP:PORT")]
        listen: Option<String>,
        /// Flash every device as soon as it appears, without a click (a factory line).
        #[arg(long)]
        auto: bool,
        /// A device to watch besides discovery (USB download-mode modems and emulators):
        /// `file:PATH`, `mdm9x07:serial:TTY`, ...; shown while what it names exists.
        #[arg(long, value_name = "TARGET")]
        target: Vec<String>,
        /// Let the package rewrite an MDM9x07's partition table (its MIBIB step), as
        /// `flash --allow-partition-table` does: the old table is backed up first. Without it
        /// such a package is refused on every modem (protected_partition).
        #[arg(long)]
        allow_partition_table: bool,
        /// The sysfs directory of USB devices discovery reads (for tests).
        #[arg(long, value_name = "DIR", hide = true)]
        sysfs: Option<PathBuf>,
    },
    /// Download a package over HTTP(S) and verify it: the header, manifest and signatures
    /// first, then each chunk as it arrives (broken connections resume, corrupted chunks are
    /// fetched again). A partial download is kept as OUT.partial and resumed by the next run;
    /// OUT appears only once the whole package verified.
    #[command(
        after_help = "Example:\n  veriflash fetch https://updates.example.com/x1/2.4.0.vfp --out update.vfp --trust vendor.pub.pem"
    )]
    Fetch {
        /// The package's http:// or https:// URL.
        url: String,
        /// Where to write the verified package.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Trusted public keys and/or root certificates (PEM), a directory of them, or an
        /// anchor-set file written by `flash --save-rotation`.
        #[arg(long, value_name = "PUBKEY_OR_DIR")]
        trust: PathBuf,
        #[command(flatten)]
        trust_options: verify::TrustOptions,
        /// For https://: trust the CA certificates in this PEM file instead of Mozilla's roots.
        #[arg(long, value_name = "CA.pem")]
        ca: Option<PathBuf>,
        #[command(flatten)]
        download: fetch::DownloadLimits,
        /// Print the result (or the error with its code and remedy) as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Show a device's state: active slot, installed version, rollback floor, last result.
    #[command(after_help = "Example:\n  veriflash status --target file:device.img --json")]
    Status {
        /// The device: `file:PATH`, `mdm9x07:serial:/dev/ttyUSB0`, `mdm9x07:usb[:BUS-PORT]`
        /// or `mdm9x07:emulator` (as for `flash`).
        #[arg(long, value_name = "TARGET")]
        target: String,
        /// Also read back every installed image of the active slot and compare it with what
        /// was recorded at install time (reads every installed byte); exits 52 if one differs.
        #[arg(long)]
        check: bool,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Copy one partition of an MDM9x07 in download mode to a file (as `edl r`), with the
    /// Firehose programmer you give: the partition is read twice and kept only if both reads
    /// and the file on disk have the same SHA-256. The modem is reset afterwards.
    #[command(
        after_help = "Example:\n  veriflash read efs2 --target mdm9x07:usb --programmer prog_nand_firehose_9x07.mbn --out efs2.bin"
    )]
    Read {
        /// The partition, as the modem's MIBIB names it (`sbl`, `efs2`, `mibib`, ...).
        partition: String,
        /// The modem: `mdm9x07:usb[:BUS-PORT]`, `mdm9x07:serial:TTY` or `mdm9x07:emulator[:ec25]`.
        #[arg(long, value_name = "TARGET")]
        target: String,
        /// The Firehose programmer (ELF), e.g. prog_nand_firehose_9x07.mbn.
        #[arg(long, value_name = "PROG.mbn")]
        programmer: PathBuf,
        /// Where to write the copy.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Wait up to SECS for the modem to appear in download mode. 0: fail at once.
        #[arg(long = "wait", value_name = "SECS", default_value_t = 0,
              value_parser = clap::value_parser!(u64).range(0..=flash::MAX_WAIT_SECS))]
        wait: u64,
    },
    /// Copy every partition of an MDM9x07's MIBIB to a directory (as `edl rs`), each read twice
    /// and checked on disk, with SHA256SUMS and partitions.txt beside them. The modem is reset
    /// afterwards.
    #[command(
        after_help = "Example:\n  veriflash backup --target mdm9x07:usb --programmer prog_nand_firehose_9x07.mbn --out-dir ec25-backup"
    )]
    Backup {
        /// The modem, as for `read`.
        #[arg(long, value_name = "TARGET")]
        target: String,
        /// The Firehose programmer (ELF).
        #[arg(long, value_name = "PROG.mbn")]
        programmer: PathBuf,
        /// The directory to write (created if missing).
        #[arg(long, value_name = "DIR")]
        out_dir: PathBuf,
        /// Wait up to SECS for the modem to appear in download mode. 0: fail at once.
        #[arg(long = "wait", value_name = "SECS", default_value_t = 0,
              value_parser = clap::value_parser!(u64).range(0..=flash::MAX_WAIT_SECS))]
        wait: u64,
    },
    /// Manage file-backed reference devices.
    #[command(subcommand)]
    Device(DeviceCommand),
    /// List modems on USB: MDM9x07 and other Qualcomm chips in emergency download mode
    /// (05C6:9008), ready to flash, and normal-mode Qualcomm/Quectel modems whose DIAG port
    /// can switch them there.
    #[command(after_help = "Example:\n  veriflash devices --json")]
    Devices {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// The sysfs directory of USB devices (for tests).
        #[arg(long, value_name = "DIR", default_value = veriflash_mdm9x07::discover::SYSFS_USB_DEVICES, hide = true)]
        sysfs: PathBuf,
    },
    /// Ask a modem in normal mode to reboot into emergency download mode (05C6:9008) over its
    /// DIAG port (Qualcomm DIAG, HDLC-framed), or with a vendor AT command on its AT port.
    #[command(
        name = "switch-to-edl",
        after_help = "Example:\n  veriflash switch-to-edl --port /dev/ttyUSB0 --wait 30\n  veriflash switch-to-edl --port /dev/ttyUSB2 --at 'AT+VENDOR_EDL_COMMAND'"
    )]
    SwitchToEdl {
        /// The modem's DIAG port (or, with --at, its AT port), e.g. /dev/ttyUSB0.
        #[arg(long, value_name = "TTY")]
        port: PathBuf,
        /// Send the legacy DIAG_DLOAD_F (0x3A) instead of the subsystem EDL reset, for old
        /// firmware.
        #[arg(long, conflicts_with = "at")]
        dload: bool,
        /// Send this AT command instead of DIAG (vendor-specific: see the modem's AT manual).
        #[arg(long, value_name = "COMMAND")]
        at: Option<String>,
        /// Wait up to this many seconds for the device to re-enumerate as 05C6:9008.
        #[arg(long, value_name = "SECS", default_value_t = 0)]
        wait: u64,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
        /// The sysfs directory of USB devices (for tests).
        #[arg(long, value_name = "DIR", default_value = veriflash_mdm9x07::discover::SYSFS_USB_DEVICES, hide = true)]
        sysfs: PathBuf,
    },
    /// Serve an emulated device, e.g. an MDM9607 in download mode on a pseudo-terminal, for
    /// this or any other Sahara/Firehose tool.
    #[command(subcommand)]
    Emulate(emulate::EmulateCommand),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) to stdout.
    #[command(
        after_help = "Examples:\n  veriflash completions bash > ~/.local/share/bash-completion/completions/veriflash\n  veriflash completions zsh > ~/.zfunc/_veriflash\n  veriflash completions fish > ~/.config/fish/completions/veriflash.fish"
    )]
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) to stdout, or write one page per subcommand into a directory.
    #[command(
        after_help = "Examples:\n  veriflash man | man -l -\n  veriflash man --out-dir /usr/local/share/man/man1"
    )]
    Man {
        /// Write veriflash.1 and veriflash-SUBCOMMAND.1 here instead of printing veriflash.1.
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
    /// Make a key and a package in a temporary directory, verify it, then show how tampered and
    /// corrupted copies are refused, flash it to a file-backed device, and flash a modem
    /// package to an emulated MDM9607.
    Demo,
    /// Turn a Qualcomm vendor bundle (rawprogram*.xml, optional patch*.xml, the image files
    /// beside them) and its Firehose programmer into a package description for `veriflash pack`:
    /// the programmer first, then the bundle's images, paths relative to --out.
    #[command(
        name = "import-qdl",
        after_help = "Example:\n  veriflash import-qdl --rawprogram bundle/rawprogram_nand_p2K_b128K.xml --programmer bundle/prog_nand_firehose_9x07.mbn \\\n      --product acme-hotspot-x1 --version 2.4.0 --security-version 7 --out update.toml\n  veriflash pack --manifest update.toml --key vendor.pem --out update.vfp\n\nStock NAND bundles without labels (Quectel's rawprogram_nand_p4K_b256K_update.xml) are placed by\nstart_sector through the MIBIB image the bundle carries; --with-partition-table keeps its table\nrewrite. The bundle's NAND geometry goes into the package and is checked against the device."
    )]
    ImportQdl {
        /// The bundle's rawprogram XML; image files are found relative to it.
        #[arg(long, value_name = "rawprogram0.xml")]
        rawprogram: PathBuf,
        /// The bundle's patch XML, if any (repeatable). The MDM9x07 programmer has no `patch`
        /// command: a patch of the device (`DISK`) or of an imported file is refused.
        #[arg(long, value_name = "patch0.xml")]
        patch: Vec<PathBuf>,
        /// The Firehose programmer (ELF), e.g. prog_nand_firehose_9x07.mbn.
        #[arg(long, value_name = "PROG.mbn")]
        programmer: PathBuf,
        /// The product the package is for.
        #[arg(long)]
        product: String,
        /// The chipset the package is for.
        #[arg(long, default_value = "mdm9607")]
        chipset: String,
        /// A hardware revision the package accepts (repeatable; none: any).
        #[arg(long = "hardware-revision", value_name = "REV")]
        hardware_revisions: Vec<String>,
        /// The software version.
        #[arg(long)]
        version: String,
        /// The anti-rollback version.
        #[arg(long, value_name = "N")]
        security_version: u64,
        /// Where to write the description (TOML).
        #[arg(long, value_name = "M.toml")]
        out: PathBuf,
        /// Import the bundle's partition table (MIBIB) as the package's first image, a step
        /// that rewrites the device's table; flashing it also needs `flash
        /// --allow-partition-table`. Without it the MIBIB is left out, and an `<erase>` of it
        /// is refused.
        #[arg(long)]
        with_partition_table: bool,
        /// The device's MIBIB (a copy made with `veriflash read mibib`, or the MIBIB image of
        /// another bundle for the same device): entries without a label that the bundle's own
        /// table does not place are placed through it.
        #[arg(long, value_name = "FILE")]
        device_mibib: Option<PathBuf>,
    },
}

/// `--compress[=LEVEL]`, shared by `pack` and `sign` (which must pack the images the same way).
#[derive(Debug, clap::Args)]
struct CompressArg {
    /// Compress each chunk with Zstandard at LEVEL (1-22; 9 when only --compress is given),
    /// keeping a chunk raw when compression does not save at least 1/32 of it. Makes a
    /// format version 2 package (version 1 if no chunk compresses).
    #[arg(
        long,
        value_name = "LEVEL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "9",
        value_parser = clap::value_parser!(i32).range(1..=22)
    )]
    compress: Option<i32>,
    /// Where chunks end: `fixed` (the default: every chunk the description's chunk_size, right
    /// for block-aligned images such as ext4 or UBI) or `cdc` (content-defined, FastCDC: chunks
    /// of at most chunk_size, about an eighth of it on average, so an insertion moves only the
    /// chunks around it and a delta update of a squashfs or a kernel stays small; a format
    /// version 3 package, which readers of versions 1 and 2 only refuse).
    #[arg(long, value_name = "fixed|cdc", default_value = "fixed", value_parser = parse_chunking)]
    chunking: veriflash_core::Chunking,
}

/// `--chunking`'s values.
fn parse_chunking(value: &str) -> Result<veriflash_core::Chunking, String> {
    match value {
        "fixed" => Ok(veriflash_core::Chunking::Fixed),
        "cdc" => Ok(veriflash_core::Chunking::ContentDefined),
        other => Err(format!("'{other}' is not fixed or cdc")),
    }
}

#[derive(Debug, Subcommand)]
enum DeviceCommand {
    /// Create a file-backed device from a layout description (TOML).
    #[command(
        after_help = "Example:\n  veriflash device init --layout layout.toml file:device.img"
    )]
    Init {
        /// Product, chipset, hardware revision, geometry and `[[partition]]` tables.
        #[arg(long, value_name = "LAYOUT.toml")]
        layout: PathBuf,
        /// Where to create it: `file:PATH`.
        target: String,
    },
}

/// The whole command line: the derived definition plus what is computed at run time (the
/// version with the SHA-256 backend, the exit-status table). Help, completions and man pages
/// all come from this one value.
fn command() -> clap::Command {
    let version = format!(
        "{} (sha256 backend: {})",
        env!("CARGO_PKG_VERSION"),
        veriflash_core::hash::backend()
    );
    Cli::command()
        .version(version)
        .after_help(exit_codes_help())
}

/// Ends the process for a command line clap refused (or help and version, which clap reports
/// the same way): with `--json` anywhere on the line, a refusal is the JSON error object every
/// `--json` command ends with (code 2, kind `usage`), so a script never has to parse clap's text.
fn usage_error(e: &clap::Error) -> ! {
    use clap::error::ErrorKind as Clap;
    let informational = matches!(
        e.kind(),
        Clap::DisplayHelp | Clap::DisplayVersion | Clap::DisplayHelpOnMissingArgumentOrSubcommand
    );
    if informational || !std::env::args_os().any(|a| a == "--json") {
        e.exit()
    }
    let rendered = e.render().to_string();
    let message = rendered
        .lines()
        .next()
        .unwrap_or_default()
        .trim_start_matches("error: ");
    events::print(serde_json::json!({
        "ok": false,
        "error": {
            "code": 2,
            "kind": "usage",
            "category": veriflash_core::Category::UserAction.name(),
            "summary": "the command line is invalid",
            "message": message,
            "remedy": "Fix the command line; `veriflash help COMMAND` lists what each command takes.",
            "image": null,
            "chunk": null,
            "offset": null,
        },
    }));
    std::process::exit(2)
}

fn main() -> ExitCode {
    signals::die_on_broken_pipe();
    let cli = match command()
        .try_get_matches()
        .and_then(|matches| Cli::from_arg_matches(&matches))
    {
        Ok(cli) => cli,
        Err(e) => usage_error(&e),
    };
    let result = match cli.command {
        Command::Keygen { out, force, algo } => keygen::run_with(&out, force, algo),
        Command::Pack {
            manifest,
            key,
            cert,
            unsigned,
            compress,
            delta,
            strictness,
            out,
        } => pack::run_with(&pack::PackArgs {
            manifest: &manifest,
            keys: &key,
            certs: &cert,
            unsigned_only: unsigned,
            compress: compress.compress,
            chunking: compress.chunking,
            delta: &delta,
            strictness,
            out: &out,
        }),
        Command::Sign {
            manifest,
            tbs,
            signature,
            pubkey,
            cert,
            pss,
            compress,
            delta,
            strictness,
            out,
        } => pack::sign(&pack::SignArgs {
            manifest: &manifest,
            tbs: &tbs,
            signatures: &signature,
            pubkeys: &pubkey,
            certs: &cert,
            pss,
            compress: compress.compress,
            chunking: compress.chunking,
            delta: &delta,
            strictness,
            out: &out,
        }),
        Command::Inspect {
            package,
            delta_from,
            trust,
            json,
        } => match (delta_from, trust) {
            (Some(old), Some(trust)) => inspect::delta(&old, &package, &trust, json),
            _ => inspect::run(&package, json),
        },
        Command::Verify {
            trust,
            package,
            json,
            threads,
            whole_image_digest,
            trust_options,
        } => verify::run(
            &trust,
            &package,
            json,
            verify::Hashing {
                threads,
                whole_image: whole_image_digest,
            },
            &trust_options,
        ),
        Command::Flash {
            package,
            trust,
            target,
            ca,
            download,
            save_rotation,
            trust_options,
            reconnect,
            wait_boot,
            allow_partition_table,
            wait_device,
            sysfs,
            no_reuse,
            chunk_cache,
            source_check,
            json,
        } => flash::run(&flash::FlashArgs {
            package: &package,
            trust: &trust,
            trust_options: &trust_options,
            targets: &target,
            ca: ca.as_deref(),
            download: &download,
            save_rotation: save_rotation.as_deref(),
            reconnect: std::time::Duration::from_secs(reconnect),
            wait_boot: std::time::Duration::from_secs(wait_boot),
            allow_partition_table,
            wait_device: std::time::Duration::from_secs(wait_device),
            sysfs: sysfs.as_deref(),
            reuse: flash::reuse(no_reuse, chunk_cache),
            source_check: source_check.into(),
            json,
        }),
        Command::Station {
            package,
            trust,
            trust_options,
            listen,
            auto,
            target,
            allow_partition_table,
            sysfs,
        } => station::run(&station::StationArgs {
            package: &package,
            trust: &trust,
            trust_options: &trust_options,
            listen: listen.as_deref(),
            auto,
            targets: &target,
            allow_partition_table,
            sysfs: sysfs.as_deref(),
        }),
        Command::Fetch {
            url,
            out,
            trust,
            trust_options,
            ca,
            download,
            json,
        } => fetch::run(
            &url,
            &out,
            &trust,
            &trust_options,
            ca.as_deref(),
            &download,
            json,
        ),
        Command::Status {
            target,
            check,
            json,
        } => device::status(&target, check, json),
        Command::Read {
            partition,
            target,
            programmer,
            out,
            wait,
        } => read::read(
            &read::ReadArgs {
                target: &target,
                programmer: &programmer,
                wait: std::time::Duration::from_secs(wait),
            },
            &partition,
            &out,
        ),
        Command::Backup {
            target,
            programmer,
            out_dir,
            wait,
        } => read::back_up(
            &read::ReadArgs {
                target: &target,
                programmer: &programmer,
                wait: std::time::Duration::from_secs(wait),
            },
            &out_dir,
        ),
        Command::Device(DeviceCommand::Init { layout, target }) => device::init(&layout, &target),
        Command::Devices { json, sysfs } => devices::run(&sysfs, json),
        Command::Emulate(command) => emulate::run(&command),
        Command::SwitchToEdl {
            port,
            dload,
            at,
            wait,
            json,
            sysfs,
        } => devices::switch(&devices::SwitchArgs {
            port: &port,
            dload,
            at: at.as_deref(),
            wait,
            sysfs: &sysfs,
            json,
        }),
        Command::Demo => demo::run(),
        Command::Completions { shell } => manual::completions(shell),
        Command::Man { out_dir } => manual::man(out_dir.as_deref()),
        Command::ImportQdl {
            rawprogram,
            patch,
            programmer,
            product,
            chipset,
            hardware_revisions,
            version,
            security_version,
            out,
            with_partition_table,
            device_mibib,
        } => import_qdl::run(&import_qdl::ImportArgs {
            rawprogram: &rawprogram,
            patches: &patch,
            programmer: &programmer,
            product: &product,
            chipset: &chipset,
            hardware_revisions: &hardware_revisions,
            version: &version,
            security_version,
            out: &out,
            with_partition_table,
            device_mibib: device_mibib.as_deref(),
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => failure.report(),
    }
}
