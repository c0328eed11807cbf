//! The power-cut sweep of the install tests (`flash.rs`, `delta.rs`, `delta_package.rs`): an
//! install is cut at every storage operation of the file device, torn and after, and the
//! device must boot the old software or the new one, never neither; an install cut before its
//! commit fails as interrupted and a second run completes it.

#![allow(dead_code, unreachable_pub)]

use std::path::Path;

use veriflash_core::plugin::file_device::{Cut, FileDevice};
use veriflash_core::{Error, ErrorKind};

/// Where power is cut: at which storage operation, and how.
pub type PowerCut = Option<(u64, Cut)>;

/// What a sweep cuts: a device file running `old`, copied to `scratch` for every cut, and
/// how many storage operations the uninterrupted install takes.
pub struct Sweep<'a> {
    pub base: &'a Path,
    pub scratch: &'a Path,
    pub operations: u64,
    pub old: &'a str,
    pub new: &'a str,
}

impl Sweep<'_> {
    /// Runs `install` on the device at its path with power cut at every operation (`Some`),
    /// and again uncut (`None`) after each cut that left the old software booting.
    /// `interrupted` may check such a device before that second run; `finished` checks every
    /// device once it boots the new software. Only a commit record that landed whole boots the
    /// new software: a torn cut never does, a cut after the last operation does.
    pub fn run(
        &self,
        install: &mut dyn FnMut(&Path, PowerCut) -> Result<(), Error>,
        interrupted: &mut dyn FnMut(&mut FileDevice, Cut, u64),
        finished: &mut dyn FnMut(&mut FileDevice),
    ) {
        for mode in [Cut::Torn, Cut::After] {
            let (mut old, mut new) = (0, 0);
            for cut in 1..=self.operations {
                std::fs::copy(self.base, self.scratch).unwrap();
                let result = install(self.scratch, Some((cut, mode)));
                // Power comes back: the old or the new software boots, never neither.
                let mut device = FileDevice::open(self.scratch).expect("device state lost");
                let booted = device
                    .boot_check()
                    .unwrap_or_else(|e| panic!("{mode:?} at {cut}: unbootable: {e}"));
                match booted.as_deref() {
                    Some(v) if v == self.old => {
                        old += 1;
                        let err = result.expect_err("an install cut before its commit");
                        assert_eq!(
                            err.kind(),
                            ErrorKind::Interrupted,
                            "{mode:?} at {cut}: {err}"
                        );
                        interrupted(&mut device, mode, cut);
                        drop(device);
                        install(self.scratch, None)
                            .unwrap_or_else(|e| panic!("{mode:?} at {cut}: re-run: {e}"));
                        device = FileDevice::open(self.scratch).unwrap();
                    }
                    Some(v) if v == self.new => new += 1,
                    other => panic!("{mode:?} at {cut}: boots {other:?}"),
                }
                assert_eq!(
                    device.boot_check().unwrap().as_deref(),
                    Some(self.new),
                    "{mode:?} at {cut}"
                );
                finished(&mut device);
            }
            let expected = if mode == Cut::Torn {
                (self.operations, 0)
            } else {
                (self.operations - 1, 1)
            };
            assert_eq!((old, new), expected, "{mode:?}");
        }
    }
}
