#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

pub mod cdc;
pub mod compress;
mod convert;
pub mod delta;
mod delta_index;
pub mod error;
pub mod factory;
pub mod flash;
pub mod host;
#[cfg(feature = "http")]
pub mod http;
pub mod ota;
pub mod output;
pub mod pack;
pub mod package;
mod pipeline;
pub mod reuse;
pub mod source;
pub mod trust;
pub mod updater;

pub use compress::ZstdDecoder;
pub use delta::{DeltaBase, ImageCost, InstalledImages, SourceCheck, check_sources, delta_cost};
pub use error::{Category, Error, ErrorKind, Location};
pub use factory::{FactoryLine, FactoryReport};
pub use flash::{
    CancelToken, Event, InstallPolicy, Installed, Phase, check_policy, install, install_package,
};
pub use pack::{Chunking, ImageData, ImageSource, PackOptions, PackageSpec, UnsignedPackage};
pub use package::{
    ImageReport, PackageReader, RotationReport, VerifiedManifest, VerifiedPackage, VerifyReport,
    verify_file,
};
pub use reuse::Reuse;
pub use trust::AnchorSet;
pub use updater::{
    InstallReport, PackageSource, Reconnect, Trust, TrustedTime, Updater, UpdaterBuilder,
};

/// The component crates, re-exported so one dependency gives the whole API.
pub use veriflash_format as format;
pub use veriflash_hash as hash;
pub use veriflash_plugin as plugin;
pub use veriflash_sig as sig;
