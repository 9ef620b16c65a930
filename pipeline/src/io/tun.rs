//! TUN device: one queue of a persistent multi-queue TUN interface per worker.
//!
//! The lab or the operator creates the interfaces (`ip tuntap add dev NAME
//! mode tun multi_queue`), addresses and routes them; the appliance only
//! attaches queues (`IFF_TUN | IFF_NO_PI | IFF_MULTI_QUEUE`), so it needs no
//! say over routing. A TUN queue moves one packet per `read`/`write`, so
//! there is no batching syscall to use; `recv` reads until the queue is empty
//! or the budget is spent, into one reused buffer.
//!
//! Offloads: the queue is opened with `IFF_VNET_HDR` and the interface told
//! (`TUNSETOFFLOAD`) that we take and give checksum-partial and TSO
//! super-frames, IPv4 and IPv6. The kernel then hands us what GRO merged, or
//! what a local sender's TSO made, whole (up to 64 KiB) instead of cutting it
//! up first, and takes our super-frames and partial checksums back (see
//! [`Offload`]). Every packet read or written starts with that header.
//!
//! The kernel picks the queue a packet is delivered to (its symmetric flow
//! hash, then the queue that last wrote the flow); the worker checks
//! ownership with our own hash and hands misdelivered packets over (see
//! the pipeline's `worker`).

use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

use super::{ifindex, os_err, Coalesce, Device, Medium, Offload, RxMeta, TxBatch, VlanTag};

/// Largest IP packet a TUN queue delivers, after its offload header.
const MAX_PACKET: usize = 65536 + Offload::LEN;
/// `TUNSETIFF` flag: packets carry a `struct virtio_net_hdr`.
const IFF_VNET_HDR: libc::c_int = 0x4000;
/// `_IOW('T', 208, unsigned int)`: which offloads the reader takes.
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
const TUN_F_CSUM: libc::c_uint = 0x01;
const TUN_F_TSO4: libc::c_uint = 0x02;
const TUN_F_TSO6: libc::c_uint = 0x04;
const TUN_F_TSO_ECN: libc::c_uint = 0x08;

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
    /// One segment held back by `send_segment` so the next one of its flow
    /// can be merged into it; written by the next send or `flush`.
    held: TxBatch,
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
            flags: (libc::IFF_TUN | libc::IFF_NO_PI | libc::IFF_MULTI_QUEUE | IFF_VNET_HDR)
                as libc::c_short,
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
        let offloads = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN;
        // Safety: TUNSETOFFLOAD takes its argument by value (an unsigned int).
        let r = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETOFFLOAD as _, offloads) };
        if r < 0 {
            return Err(os_err(&format!(
                "TUN {name}: TUNSETOFFLOAD (csum, tso4, tso6)"
            )));
        }
        Ok(Tun {
            fd: OwnedFd::from(file),
            buf: vec![0u8; MAX_PACKET].into_boxed_slice(),
            name: name.to_owned(),
            tx_dropped: 0,
            held: TxBatch::new(MAX_PACKET, 1),
        })
    }

    /// Merges a flow's consecutive TCP segments in
    /// [`Device::send_segment`] with `coalesce` (see [`Coalesce`]).
    pub fn coalescing(mut self, coalesce: Coalesce) -> Tun {
        self.held = self.held.coalescing(coalesce);
        self
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Writes the segment `send_segment` held back (its offload header and
    /// packet are contiguous in the batch), if any.
    fn write_held(&mut self) -> io::Result<()> {
        let r = match self.held.frames().next() {
            None => return Ok(()),
            Some(frame) => write_iov(
                self.fd.as_raw_fd(),
                &self.name,
                &mut self.tx_dropped,
                &[frame],
            ),
        };
        self.held.clear();
        r
    }

    fn write_packet(&mut self, pkt: &[u8], offload: &Offload) -> io::Result<()> {
        let hdr = offload.to_bytes();
        write_iov(
            self.fd.as_raw_fd(),
            &self.name,
            &mut self.tx_dropped,
            &[&hdr, pkt],
        )
    }
}

/// Writes one packet made of `parts` (offload header first) to the queue
/// `fd`; a packet the kernel refuses or has no room for is dropped and
/// counted in `tx_dropped`, as a router would.
fn write_iov(fd: RawFd, name: &str, tx_dropped: &mut u64, parts: &[&[u8]]) -> io::Result<()> {
    let mut iov = [libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }; 2];
    let n = parts.len().min(iov.len());
    for (v, p) in iov.iter_mut().zip(parts) {
        *v = libc::iovec {
            iov_base: p.as_ptr() as *mut libc::c_void,
            iov_len: p.len(),
        };
    }
    loop {
        // Safety: the first `n` iovecs point at live slices of the given
        // lengths, which the kernel only reads during the call.
        let r = unsafe { libc::writev(fd, iov.as_ptr(), n as libc::c_int) };
        if r >= 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EAGAIN) | Some(libc::ENOBUFS) | Some(libc::EINVAL)
            | Some(libc::EMSGSIZE) => {
                *tx_dropped += 1;
                return Ok(());
            }
            _ => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("write to TUN {name}: {e}"),
                ))
            }
        }
    }
}

impl Device for Tun {
    fn medium(&self) -> Medium {
        Medium::Ip
    }

    fn recv<F: FnMut(&mut [u8], RxMeta)>(&mut self, budget: usize, mut f: F) -> io::Result<usize> {
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
            let r = r as usize;
            if r < Offload::LEN {
                continue;
            }
            let mut hdr = [0u8; Offload::LEN];
            hdr.copy_from_slice(&self.buf[..Offload::LEN]);
            let meta = RxMeta {
                vlan: None,
                offload: Offload::from_bytes(&hdr),
            };
            f(&mut self.buf[Offload::LEN..r], meta);
            n += 1;
        }
        Ok(n)
    }

    fn send(&mut self, frame: &[u8], offload: &Offload) -> io::Result<()> {
        self.write_held()?;
        self.write_packet(frame, offload)
    }

    fn send_segment(&mut self, frame: &[u8], offload: &Offload) -> io::Result<bool> {
        if !offload.is_gso() && self.held.append_segment(frame, 0) {
            return Ok(true);
        }
        self.write_held()?;
        if Offload::LEN + frame.len() > self.held.capacity_bytes() {
            return self.write_packet(frame, offload).map(|()| false);
        }
        self.held.push(&[&offload.to_bytes(), frame]);
        Ok(false)
    }

    fn send_tagged(&mut self, frame: &[u8], _tag: VlanTag, offload: &Offload) -> io::Result<()> {
        // An IP device has no link header to tag.
        self.write_packet(frame, offload)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.write_held()
    }

    fn tx_dropped(&self) -> u64 {
        self.tx_dropped
    }

    fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}
