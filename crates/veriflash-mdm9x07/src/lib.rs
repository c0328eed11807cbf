#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

pub mod backup;
pub mod boot_watch;
pub mod diag;
pub mod discover;
pub mod driver;
#[cfg(feature = "emulator")]
pub mod emulator;
mod error;
pub mod firehose;
pub mod geometry;
mod installed;
pub mod mibib;
pub mod products;
#[cfg(all(target_os = "linux", feature = "pty"))]
pub mod pty;
pub mod rawprogram;
pub mod sahara;
#[cfg(all(unix, feature = "serial"))]
pub mod serial;
mod session;
pub mod target;
pub mod transport;
#[cfg(feature = "usb")]
pub mod usb;

pub use error::Error;
pub use session::{
    DEFAULT_PAYLOAD, MAX_PROGRAMMER_LEN, MIBIB_PARTITION, Mdm9x07Session, PROGRAMMER_PARTITION,
    ProductId, ReadCopy, SessionConfig,
};
pub use target::Mdm9x07Plugin;
