#![doc = include_str!("../README.md")]
// C naming: handle and typedef names are the C API's (`veriflash_trust`, `veriflash_result`).
#![allow(non_camel_case_types)]

pub mod error;
mod ffi;
pub mod flash;
pub mod package;
pub mod report;
pub mod status;
pub mod trust;
pub mod version;

pub use error::*;
pub use flash::*;
pub use package::*;
pub use report::*;
pub use status::*;
pub use trust::*;
pub use version::*;
