//! The USB bulk [`Transport`] to a device in emergency download mode (`05C6:9008`), through
//! `nusb` (pure Rust; usbfs on Linux, WinUSB on Windows, IOKit on macOS).
//!
//! - **Interface**: the vendor-specific one (class 0xFF, subclass 0xFF, protocol 0xFF, 0x10
//!   or 0x11 — all three seen on real devices, per linux-msm/qdl `usb.c`) with one bulk IN and
//!   one bulk OUT endpoint ([`select_endpoints`]). On Linux the `qcserial` driver is detached
//!   from it first (it is re-attached by the kernel when the device re-enumerates).
//! - **Framing**: [`Framing::Packet`]: one read returns the bytes of one IN transfer, which
//!   ends at a short packet; a zero-length packet reads as `Ok(0)`.
//! - **Zero-length packets**: a write whose length is a multiple of the OUT endpoint's max
//!   packet size (512 on high-speed USB 2) is followed by a ZLP, or the device would wait for
//!   more of the transfer ([`needs_zlp`]; qdl `usb.c` `qdl_write` does the same, and our
//!   `configure` says `ZlpAwareHost="1"`).
//! - **Timeouts**: every transfer waits at most the caller's timeout, then is cancelled and
//!   reaped (bounded), and the call fails with [`Error::Timeout`]. Bytes that arrived in a
//!   cancelled IN transfer are kept and returned, not lost.
//!
//! Not tested against hardware in CI (there is none): [`needs_zlp`], [`write_plan`] and
//! [`select_endpoints`] are unit-tested on their own, the transfer code is not.

use std::time::Duration;

use nusb::descriptors::{ConfigurationDescriptor, TransferType};
use nusb::transfer::{
    Buffer, Bulk, Completion, Direction, EndpointDirection, In, Out, TransferError,
};
use nusb::{Endpoint, Interface, MaybeFuture};

use crate::discover::{EDL_PID, QUALCOMM_VID};
use crate::error::Error;
use crate::transport::{Framing, Transport};

/// The largest single OUT transfer submitted; longer writes are split (with no ZLP between
/// the pieces: they are one logical transfer).
pub const MAX_OUT_TRANSFER: usize = 1 << 20;
/// The IN transfer size asked for (rounded to the max packet size).
pub const IN_TRANSFER: usize = 64 * 1024;
/// How many one-second waits a cancelled transfer gets to come back before the endpoint is
/// declared broken.
const REAP_ATTEMPTS: u32 = 3;

/// Whether a write of `len` bytes on an endpoint with max packet size `max_packet` must be
/// followed by a zero-length packet: it ends exactly on a packet boundary, so without one the
/// device cannot tell the transfer ended. A zero-byte write is itself a ZLP.
#[must_use]
pub fn needs_zlp(len: usize, max_packet: usize) -> bool {
    max_packet > 0 && len > 0 && len.is_multiple_of(max_packet)
}

/// The OUT transfers a write of `len` bytes becomes: pieces of at most `max_transfer` bytes
/// (a multiple of `max_packet`, so only the last can be short), then a ZLP (`0`) if
/// [`needs_zlp`].
#[must_use]
pub fn write_plan(len: usize, max_packet: usize, max_transfer: usize) -> Vec<usize> {
    let mp = max_packet.max(1);
    let piece = (max_transfer / mp * mp).max(mp);
    let mut plan = Vec::with_capacity(len / piece + 2);
    let mut left = len;
    while left > 0 {
        let n = left.min(piece);
        plan.push(n);
        left -= n;
    }
    if needs_zlp(len, max_packet) {
        plan.push(0);
    }
    plan
}

/// The endpoints of the download-mode interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Endpoints {
    /// Interface number.
    pub interface: u8,
    /// Bulk IN endpoint address.
    pub bulk_in: u8,
    /// Bulk OUT endpoint address.
    pub bulk_out: u8,
    /// Max packet size of the OUT endpoint (for the ZLP rule).
    pub max_packet_out: usize,
}

/// Finds the download-mode interface in a configuration: vendor-specific class and subclass,
/// protocol 0xFF, 0x10 or 0x11, with a bulk IN and a bulk OUT endpoint.
#[must_use]
pub fn select_endpoints(config: &ConfigurationDescriptor<'_>) -> Option<Endpoints> {
    config.interface_alt_settings().find_map(|intf| {
        if intf.alternate_setting() != 0
            || intf.class() != 0xFF
            || intf.subclass() != 0xFF
            || !matches!(intf.protocol(), 0xFF | 0x10 | 0x11)
        {
            return None;
        }
        let bulk = |dir: Direction| {
            intf.endpoints()
                .find(|e| e.transfer_type() == TransferType::Bulk && e.direction() == dir)
        };
        let (i, o) = (bulk(Direction::In)?, bulk(Direction::Out)?);
        Some(Endpoints {
            interface: intf.interface_number(),
            bulk_in: i.address(),
            bulk_out: o.address(),
            max_packet_out: o.max_packet_size(),
        })
    })
}

/// A device's location as `BUS-PORT[.PORT…]` (the Linux sysfs name, e.g. `1-1.2`).
fn location_of(info: &nusb::DeviceInfo) -> String {
    #[cfg(target_os = "linux")]
    {
        info.sysfs_path()
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
    #[cfg(not(target_os = "linux"))]
    {
        let ports: Vec<String> = info.port_chain().iter().map(u8::to_string).collect();
        format!("{}-{}", info.bus_id(), ports.join("."))
    }
}

fn usb_error(e: impl std::fmt::Display, doing: &str) -> Error {
    Error::Transport(std::io::Error::other(format!(
        "USB: could not {doing}: {e}"
    )))
}

fn transfer_error(e: TransferError) -> Error {
    Error::Transport(std::io::Error::from(e))
}

/// A claimed download-mode interface.
pub struct UsbTransport {
    _interface: Interface,
    ep_in: Endpoint<Bulk, In>,
    ep_out: Endpoint<Bulk, Out>,
    max_packet_out: usize,
    /// Bytes of an IN transfer the caller's buffer could not take yet.
    leftover: Vec<u8>,
    location: String,
    /// A cancelled transfer never came back: the endpoint cannot be trusted.
    broken: bool,
}

impl std::fmt::Debug for UsbTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UsbTransport")
            .field("location", &self.location)
            .field("max_packet_out", &self.max_packet_out)
            .finish_non_exhaustive()
    }
}

impl UsbTransport {
    /// Opens the first `05C6:9008` device, or the one at `location` (`BUS-PORT[.PORT…]`),
    /// and claims its download-mode interface (detaching `qcserial` on Linux).
    ///
    /// # Errors
    /// [`Error::Transport`] when no such device is attached or it cannot be opened (on Linux
    /// usually permissions: a udev rule for 05c6:9008, or root).
    pub fn open(location: Option<&str>) -> Result<Self, Error> {
        let info = nusb::list_devices()
            .wait()
            .map_err(|e| {
                Error::Transport(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!(
                        "no download-mode device (05C6:9008) found: the USB device list could \
                         not be read ({e})"
                    ),
                ))
            })?
            .find(|d| {
                d.vendor_id() == QUALCOMM_VID
                    && d.product_id() == EDL_PID
                    && location.is_none_or(|l| location_of(d) == l)
            })
            .ok_or_else(|| {
                Error::Transport(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    match location {
                        Some(l) => format!("no download-mode device (05C6:9008) at USB {l}"),
                        None => "no download-mode device (05C6:9008) on USB".to_owned(),
                    },
                ))
            })?;
        let at = location_of(&info);
        let device = info
            .open()
            .wait()
            .map_err(|e| usb_error(e, "open the device"))?;
        let config = device
            .active_configuration()
            .map_err(|e| usb_error(e, "read the active configuration"))?;
        let eps = select_endpoints(&config).ok_or_else(|| {
            Error::Unsupported(format!(
                "the 05C6:9008 device at {at} has no vendor interface with bulk IN and OUT"
            ))
        })?;
        #[cfg(target_os = "linux")]
        let claimed = device.detach_and_claim_interface(eps.interface).wait();
        #[cfg(not(target_os = "linux"))]
        let claimed = device.claim_interface(eps.interface).wait();
        let interface = claimed.map_err(|e| usb_error(e, "claim the interface"))?;
        let ep_in = interface
            .endpoint::<Bulk, In>(eps.bulk_in)
            .map_err(|e| usb_error(e, "open the bulk IN endpoint"))?;
        let ep_out = interface
            .endpoint::<Bulk, Out>(eps.bulk_out)
            .map_err(|e| usb_error(e, "open the bulk OUT endpoint"))?;
        Ok(Self {
            _interface: interface,
            max_packet_out: ep_out.max_packet_size().max(1),
            ep_in,
            ep_out,
            leftover: Vec::new(),
            location: at,
            broken: false,
        })
    }

    /// The device's USB location.
    #[must_use]
    pub fn location(&self) -> &str {
        &self.location
    }

    fn check(&self) -> Result<(), Error> {
        if self.broken {
            return Err(Error::Transport(std::io::Error::other(
                "USB: an earlier transfer could not be cancelled; reopen the device",
            )));
        }
        Ok(())
    }
}

/// Waits for the one pending transfer on `ep`; on timeout cancels it and reaps it, so the
/// endpoint is idle again either way. `Ok((completion, timed_out))`; `Err(())` when the
/// cancelled transfer did not come back (the endpoint must not be used again).
fn complete_or_cancel<D: EndpointDirection>(
    ep: &mut Endpoint<Bulk, D>,
    timeout: Duration,
) -> Result<(Completion, bool), ()> {
    if let Some(c) = ep.wait_next_complete(timeout) {
        return Ok((c, false));
    }
    ep.cancel_all();
    for _ in 0..REAP_ATTEMPTS {
        if let Some(c) = ep.wait_next_complete(Duration::from_secs(1)) {
            return Ok((c, true));
        }
    }
    Err(())
}

impl UsbTransport {
    fn lost(&mut self) -> Error {
        self.broken = true;
        Error::Transport(std::io::Error::other(
            "USB: a timed-out transfer did not come back after cancelling",
        ))
    }
}

impl Transport for UsbTransport {
    fn write(&mut self, bytes: &[u8], timeout: Duration) -> Result<usize, Error> {
        self.check()?;
        let mut at = 0usize;
        for piece in write_plan(bytes.len(), self.max_packet_out, MAX_OUT_TRANSFER) {
            let data = bytes.get(at..at + piece).unwrap_or(&[]);
            self.ep_out.submit(Buffer::from(data.to_vec()));
            let (c, timed_out) =
                complete_or_cancel(&mut self.ep_out, timeout).map_err(|()| self.lost())?;
            if timed_out {
                return Err(Error::Timeout {
                    waiting_for: "the device to take a USB transfer",
                });
            }
            c.status.map_err(transfer_error)?;
            at += piece;
        }
        Ok(bytes.len())
    }

    fn read(&mut self, buf: &mut [u8], timeout: Duration) -> Result<usize, Error> {
        self.check()?;
        if !self.leftover.is_empty() {
            let n = self.leftover.len().min(buf.len());
            if let (Some(dst), Some(src)) = (buf.get_mut(..n), self.leftover.get(..n)) {
                dst.copy_from_slice(src);
            }
            self.leftover.drain(..n);
            return Ok(n);
        }
        let mp = self.ep_in.max_packet_size().max(1);
        let len = (IN_TRANSFER / mp * mp).max(mp);
        self.ep_in.submit(Buffer::new(len));
        let (c, timed_out) =
            complete_or_cancel(&mut self.ep_in, timeout).map_err(|()| self.lost())?;
        let got = c
            .buffer
            .get(..c.actual_len.min(c.buffer.len()))
            .unwrap_or(&[]);
        if timed_out && got.is_empty() {
            return Err(Error::Timeout {
                waiting_for: "the device (USB bulk IN)",
            });
        }
        if !timed_out {
            c.status.map_err(transfer_error)?;
        }
        let n = got.len().min(buf.len());
        if let (Some(dst), Some(src)) = (buf.get_mut(..n), got.get(..n)) {
            dst.copy_from_slice(src);
        }
        self.leftover.extend_from_slice(got.get(n..).unwrap_or(&[]));
        Ok(n)
    }

    fn max_packet(&self) -> usize {
        self.max_packet_out
    }

    fn framing(&self) -> Framing {
        Framing::Packet
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zlp_follows_writes_ending_on_a_packet_boundary() {
        assert!(needs_zlp(512, 512));
        assert!(needs_zlp(64 * 1024, 512));
        assert!(!needs_zlp(511, 512));
        assert!(!needs_zlp(513, 512));
        assert!(!needs_zlp(0, 512), "a zero-byte write is a ZLP already");
        assert!(
            needs_zlp(64, 64),
            "full-speed endpoints have 64-byte packets"
        );
        assert!(!needs_zlp(100, 0));
    }

    #[test]
    fn long_writes_split_into_whole_packets_with_one_final_zlp() {
        assert_eq!(write_plan(48, 512, MAX_OUT_TRANSFER), vec![48]);
        assert_eq!(write_plan(1024, 512, MAX_OUT_TRANSFER), vec![1024, 0]);
        assert_eq!(write_plan(2500, 512, 1000), vec![512, 512, 512, 512, 452]);
        assert_eq!(write_plan(2048, 512, 1024), vec![1024, 1024, 0]);
        assert!(write_plan(0, 512, 1024).is_empty());
    }

    /// A configuration with a CDC-like interface 0 (class 2) and the EDL interface 1
    /// (ff/ff/`protocol`) with bulk IN 0x81 and bulk OUT 0x01 of 512 bytes.
    fn config_bytes(protocol: u8, with_out: bool) -> Vec<u8> {
        let mut d = vec![9, 2, 0, 0, 2, 1, 0, 0x80, 50];
        d.extend_from_slice(&[9, 4, 0, 0, 1, 0x02, 0x02, 0x01, 0]);
        d.extend_from_slice(&[7, 5, 0x83, 0x03, 0x08, 0x00, 9]); // interrupt IN
        d.extend_from_slice(&[
            9,
            4,
            1,
            0,
            if with_out { 2 } else { 1 },
            0xFF,
            0xFF,
            protocol,
            0,
        ]);
        d.extend_from_slice(&[7, 5, 0x81, 0x02, 0x00, 0x02, 0]);
        if with_out {
            d.extend_from_slice(&[7, 5, 0x01, 0x02, 0x00, 0x02, 0]);
        }
        let total = u16::try_from(d.len()).unwrap().to_le_bytes();
        d[2..4].copy_from_slice(&total);
        d
    }

    #[test]
    fn selects_the_vendor_interface_and_its_bulk_endpoints() {
        for protocol in [0xFF, 0x10, 0x11] {
            let bytes = config_bytes(protocol, true);
            let config = ConfigurationDescriptor::new(&bytes).unwrap();
            assert_eq!(
                select_endpoints(&config),
                Some(Endpoints {
                    interface: 1,
                    bulk_in: 0x81,
                    bulk_out: 0x01,
                    max_packet_out: 512
                })
            );
        }
    }

    #[test]
    fn refuses_interfaces_of_another_protocol_or_without_bulk_out() {
        let bytes = config_bytes(0x30, true);
        assert_eq!(
            select_endpoints(&ConfigurationDescriptor::new(&bytes).unwrap()),
            None
        );
        let bytes = config_bytes(0xFF, false);
        assert_eq!(
            select_endpoints(&ConfigurationDescriptor::new(&bytes).unwrap()),
            None
        );
    }
}
