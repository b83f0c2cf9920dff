//! The proxy's TUN device, opened with `IFF_VNET_HDR` and TSO / checksum offloads: every read
//! returns a `virtio_net_hdr` ([`crate::proxy::frame::Offload`]) and then a packet of up to
//! 64 KB, every write takes the same. `tokio-tun` cannot open a device this way, hence these
//! two `ioctl`s — the only `unsafe` in the workspace, kept to this module.
#![allow(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;

use nix::libc;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// A TUN device with offloads; the device goes when this is dropped.
#[derive(Debug)]
pub struct OffloadTun {
    fd: AsyncFd<File>,
}

impl OffloadTun {
    /// Creates (or attaches to) the TUN device `name` with `virtio_net_hdr`s and TCP
    /// segmentation and checksum offloads. The device is down; bring it up through netlink.
    pub fn open(name: &str) -> io::Result<Self> {
        if name.is_empty() || name.len() >= libc::IFNAMSIZ {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("TUN device name {name:?} must have 1 to 15 bytes"),
            ));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")?;
        // SAFETY: `ifreq` is a plain C struct (a name array and a union of integers), for which
        // all-zero bytes are a valid value.
        let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
        for (dst, src) in request.ifr_name.iter_mut().zip(name.bytes()) {
            *dst = src as libc::c_char;
        }
        request.ifr_ifru.ifru_flags =
            (libc::IFF_TUN | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as libc::c_short;
        // SAFETY: TUNSETIFF reads (and writes back the name of) the `ifreq` we pass, which lives
        // for the whole call; the descriptor is an open /dev/net/tun.
        if unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut request) } < 0 {
            return Err(io::Error::last_os_error());
        }
        let offloads = libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6 | libc::TUN_F_TSO_ECN;
        // SAFETY: TUNSETOFFLOAD takes its argument by value; no memory is shared.
        if unsafe {
            libc::ioctl(
                file.as_raw_fd(),
                libc::TUNSETOFFLOAD,
                libc::c_ulong::from(offloads),
            )
        } < 0
        {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the `File` owns its descriptor, which nothing else closes or replaces while
        // the `AsyncFd` holds it.
        let fd = unsafe { AsyncFd::register(file)? };
        Ok(Self { fd })
    }

    /// Reads one `virtio_net_hdr` + packet into `buf`; returns their length.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.fd
            .async_io(Interest::READABLE, |mut file| file.read(buf))
            .await
    }

    /// Writes one `virtio_net_hdr` + packet.
    pub async fn send(&self, buf: &[u8]) -> io::Result<usize> {
        self.fd
            .async_io(Interest::WRITABLE, |mut file| file.write(buf))
            .await
    }
}
