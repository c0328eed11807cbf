//! `veriflash`: make, sign, inspect and verify firmware update packages.
//!
//! Exit status: 0 on success; otherwise the stable error code of the failure (see
//! `veriflash --help` and the README), 2 for a usage error.

#![forbid(unsafe_code)]

mod demo;
mod inspect;
mod keygen;
mod manifest_toml;
mod output;
mod pack;
mod verify;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

const EXIT_CODES: &str = "\
Exit status:
  0   success (for verify: every signature, chunk and image checked)
  10  malformed package            11  unsupported format feature
  12  limit exceeded               13  truncated package (re-download)
  14  trailing data
  20  not authentic (bad signature) 21  signed by an untrusted key
  22  no trust anchors given       23  signing key revoked
  24  signature threshold not met  25  unsupported signature algorithm
  30  payload chunk corrupted (re-download)
  31  image digest mismatch
  60  cancelled
  70  file error                   71  invalid key      72  invalid input
  2   usage error";

/// Verify and flash signed firmware update packages.
#[derive(Debug, Parser)]
#[command(name = "veriflash", after_help = EXIT_CODES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Generate a P-256 signing key (PKCS#8 PEM, mode 0600) and its public key beside it.
    #[command(
        after_help = "Example:\n  veriflash keygen --out vendor.pem   # writes vendor.pem and vendor.pub.pem"
    )]
    Keygen {
        /// Where to write the private key; the public key goes to the same name ending in
        /// `.pub.pem`.
        #[arg(long, value_name = "KEY.pem")]
        out: PathBuf,
        /// Overwrite existing files.
        #[arg(long)]
        force: bool,
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
        /// Private signing key (PEM, as `veriflash keygen` or openssl writes it).
        #[arg(long, value_name = "KEY.pem")]
        key: PathBuf,
        /// Where to write the package.
        #[arg(long, value_name = "PKG")]
        out: PathBuf,
    },
    /// Show what a package claims, without verifying it (no payload byte is read).
    #[command(after_help = "Example:\n  veriflash inspect update.vfp --json")]
    Inspect {
        /// The package file.
        package: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Verify a package completely: signatures against trusted keys, then every payload chunk.
    #[command(
        after_help = "Example:\n  veriflash verify --trust vendor.pub.pem update.vfp && echo authentic"
    )]
    Verify {
        /// Trusted public key (PEM), or a directory of them.
        #[arg(long, value_name = "PUBKEY_OR_DIR")]
        trust: PathBuf,
        /// The package file.
        package: PathBuf,
        /// Print the result (or the error with its code and remedy) as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Make a key and a package in a temporary directory, verify it, then show how tampered and
    /// corrupted copies are refused.
    Demo,
}

fn main() -> ExitCode {
    let version = format!(
        "{} (sha256 backend: {})",
        env!("CARGO_PKG_VERSION"),
        veriflash_core::hash::backend()
    );
    let matches = Cli::command().version(version).get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let result = match cli.command {
        Command::Keygen { out, force } => keygen::run(&out, force),
        Command::Pack { manifest, key, out } => pack::run(&manifest, &key, &out),
        Command::Inspect { package, json } => inspect::run(&package, json),
        Command::Verify {
            trust,
            package,
            json,
        } => verify::run(&trust, &package, json),
        Command::Demo => demo::run(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => failure.report(),
    }
}
