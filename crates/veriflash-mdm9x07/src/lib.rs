#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

pub mod driver;
pub mod emulator;
mod error;
pub mod firehose;
pub mod mibib;
pub mod sahara;
mod session;
pub mod transport;

pub use error::Error;
pub use session::{
    DEFAULT_PAYLOAD, MAX_PROGRAMMER_LEN, Mdm9x07Plugin, Mdm9x07Session, PROGRAMMER_PARTITION,
    ProductId, SessionConfig,
};
