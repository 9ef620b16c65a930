//! TUN device: one queue of a persistent multi-queue TUN interface per worker.
//!
//! The lab or the operator creates the interfaces (`ip tuntap add dev NAME
//! mode tun multi_queue`), addresses and routes them; the appliance only
//! attaches queues (`IFF_TUN | IFF_NO_PI | IFF_MULTI_QUEUE`), so it needs no
//! say over routing. A TUN queue moves one packet per `read`/`write`, so
//! there is no batching syscall to use; `recv` reads until the queue is empty
//! or the budget is spent, into one reused buffer.
//!
//! The kernel picks the queue a packet is delivered to (its symmetric flow
//! hash, then the queue that last wrote the flow); the worker checks
//! ownership with our own hash and hands misdelivered packets over (see
//! `crate::worker`).

use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

use super::{ifindex, os_err, Device, Medium, RxMeta, VlanTag};

/// Largest IP packet a TUN queue delivers.
const MAX_PACKET: usize = 65536;

/// `struct ifreq` as used by `TUNSETIFF`: the name and the flags word.
#[repr(C)]
struct IfReqFlags {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// One queue of a multi-queue TUN interface.
pub struct Tun {
    fd: OwnedFd,
    buf: Box<[u8]>,
    name: String,
    tx_dropped: u64,
}

impl std::fmt::Debug for Tun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tun").field("iface", &self.name).finish()
    }
}

impl Tun {
    /// Attaches a new queue to the existing multi-queue TUN interface `name`.
    pub fn attach(name: &str) -> io::Result<Tun> {
        if name.is_empty() || name.len() >= libc::IFNAMSIZ {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("TUN name {name:?} is empty or too long"),
            ));
        }
        // TUNSETIFF would create a missing device; the appliance only
        // attaches to the ones the operator made (and routed).
        if ifindex(name).is_err() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("TUN {name} does not exist; create it with `ip tuntap add dev {name} mode tun multi_queue`"),
            ));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .map_err(|e| io::Error::new(e.kind(), format!("TUN {name}: open /dev/net/tun: {e}")))?;
        let mut req = IfReqFlags {
            name: [0; libc::IFNAMSIZ],
            flags: (libc::IFF_TUN | libc::IFF_NO_PI | libc::IFF_MULTI_QUEUE) as libc::c_short,
            _pad: [0; 22],
        };
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        // Safety: TUNSETIFF reads and writes a `struct ifreq`; `req` has its
        // layout (16-byte name, then the flags in the union) and size (40).
        let r = unsafe {
            libc::ioctl(
                file.as_raw_fd(),
                libc::TUNSETIFF,
                &mut req as *mut IfReqFlags,
            )
        };
        if r < 0 {
            return Err(os_err(&format!(
                "TUN {name}: attach queue (TUNSETIFF multi_queue; create it with `ip tuntap add dev {name} mode tun multi_queue`)"
            )));
        }
        Ok(Tun {
            fd: OwnedFd::from(file),
            buf: vec![0u8; MAX_PACKET].into_boxed_slice(),
            name: name.to_owned(),
            tx_dropped: 0,
        })
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn write_packet(&mut self, pkt: &[u8]) -> io::Result<()> {
        loop {
            // Safety: `pkt` is a live slice; the kernel reads `pkt.len()` bytes.
            let r = unsafe { libc::write(self.fd.as_raw_fd(), pkt.as_ptr().cast(), pkt.len()) };
            if r >= 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                // Queue full, or a packet the stack refuses (bad header):
                // dropped and counted, as a router would.
                Some(libc::EAGAIN) | Some(libc::ENOBUFS) | Some(libc::EINVAL)
                | Some(libc::EMSGSIZE) => {
                    self.tx_dropped += 1;
                    return Ok(());
                }
                _ => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!("write to TUN {}: {e}", self.name),
                    ))
                }
            }
        }
    }
}

impl Device for Tun {
    fn medium(&self) -> Medium {
        Medium::Ip
    }

    fn recv<F: FnMut(&[u8], RxMeta)>(&mut self, budget: usize, mut f: F) -> io::Result<usize> {
        let mut n = 0;
        while n < budget {
            // Safety: `buf` is a live, writable buffer of `buf.len()` bytes.
            let r = unsafe {
                libc::read(
                    self.fd.as_raw_fd(),
                    self.buf.as_mut_ptr().cast(),
                    self.buf.len(),
                )
            };
            if r < 0 {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EAGAIN) => break,
                    Some(libc::EINTR) => continue,
                    _ => {
                        return Err(io::Error::new(
                            e.kind(),
                            format!("read from TUN {}: {e}", self.name),
                        ))
                    }
                }
            }
            f(&self.buf[..r as usize], RxMeta::default());
            n += 1;
        }
        Ok(n)
    }

    fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        self.write_packet(frame)
    }

    fn send_tagged(&mut self, frame: &[u8], _tag: VlanTag) -> io::Result<()> {
        // An IP device has no link header to tag.
        self.write_packet(frame)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }

    fn tx_dropped(&self) -> u64 {
        self.tx_dropped
    }

    fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}
