#![doc = include_str!("../README.md")]
// C naming: handle and typedef names are the C API's (`veriflash_trust`, `veriflash_result`).
#![allow(non_camel_case_types)]

pub mod error;
mod ffi;
pub mod flash;
pub mod options;
pub mod package;
pub mod report;
pub mod status;
pub mod trust;
pub mod version;

pub use error::*;
pub use flash::*;
pub use options::*;
pub use package::*;
pub use report::*;
pub use status::*;
pub use trust::*;
pub use version::*;

/// The devices C callers reach: the file-backed reference device (`file:`) and the MDM9x07
/// plugin (`mdm9x07:emulator`, `mdm9x07:serial:TTY`). Not configured: an install gives it to
/// the `Updater`, which configures every plugin with the caller's environment
/// (`veriflash_options`).
fn registry() -> veriflash_core::plugin::Registry {
    let mut registry = veriflash_core::plugin::Registry::with_builtin();
    registry.register(Box::new(veriflash_mdm9x07::Mdm9x07Plugin::default()));
    registry
}
