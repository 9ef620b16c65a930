//! Frame devices: the workspace's only crate that may use `unsafe` (every
//! other one forbids it). Raw sockets, mmap'ed rings, BPF and ioctls live
//! here, each block with a `// Safety:` comment; what the frames mean is the
//! pipeline's business (`tlsinspect-pipeline`), which depends on this crate.
//!
//! Every device is driven the same way by a worker: `recv` hands a batch of
//! frames to a closure as slices borrowed from the device's own memory (an
//! mmap'ed ring for AF_PACKET, a reused buffer for TUN), `send` queues a copy
//! for transmission, and `flush` pushes the queued batch out with as few
//! syscalls as the device allows. Devices are non-blocking; the worker waits
//! for readiness on [`Device::fd`] with `mio`.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::RawFd;

pub mod afpacket;
pub mod bpf;
pub mod tun;

/// An 802.1Q/802.1ad tag that the kernel removed from a received frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VlanTag {
    /// Tag protocol identifier (0x8100 or 0x88a8).
    pub tpid: u16,
    /// Tag control information (PCP, DEI, VID).
    pub tci: u16,
}

/// Facts about a received frame that are not in its bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RxMeta {
    /// The outer VLAN tag the NIC or the kernel stripped, to be restored on forward.
    pub vlan: Option<VlanTag>,
    /// The kernel's checksum and segmentation state of the frame.
    pub offload: Offload,
}

/// The checksum and segmentation state of a frame, as the kernel's
/// `struct virtio_net_hdr` carries it (AF_PACKET with `PACKET_VNET_HDR`, TUN
/// with `IFF_VNET_HDR`).
///
/// Why the appliance needs it: with the kernel's default offloads (TSO/GSO on
/// the senders, GRO on the ports) a frame may be a "super-frame" of up to
/// 64 KiB that stands for many MTU-sized segments (`gso_type`/`gso_size`),
/// and its TCP checksum may be only the pseudo-header sum, to be completed by
/// whoever transmits it (`NEEDS_CSUM` at `csum_start + csum_offset`).
/// Forwarding a frame with its header unchanged keeps both promises; a frame
/// sent with the default value has a complete checksum and is one segment.
/// Fields are in host order (the legacy virtio header on a little-endian or a
/// native-endian host alike).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Offload {
    /// `NEEDS_CSUM` and/or `DATA_VALID`.
    pub flags: u8,
    /// `GSO_NONE`, `GSO_TCPV4`, `GSO_UDP`, `GSO_TCPV6`, possibly with `GSO_ECN`.
    pub gso_type: u8,
    /// Bytes of headers (link, IP, TCP) before the payload of each segment.
    pub hdr_len: u16,
    /// Payload bytes per segment when the frame is cut up.
    pub gso_size: u16,
    /// Where the checksummed region starts, from the frame's first byte.
    pub csum_start: u16,
    /// Where, from `csum_start`, the checksum goes.
    pub csum_offset: u16,
}

impl Offload {
    /// The checksum field holds the pseudo-header sum only; the transmitter completes it.
    pub const NEEDS_CSUM: u8 = 1;
    /// The kernel (or the NIC) verified the checksum.
    pub const DATA_VALID: u8 = 2;
    /// Not a super-frame.
    pub const GSO_NONE: u8 = 0;
    /// A TCP/IPv4 super-frame.
    pub const GSO_TCPV4: u8 = 1;
    /// A TCP/IPv6 super-frame.
    pub const GSO_TCPV6: u8 = 4;
    /// Segments carry the ECN CWR bit as the kernel's `SKB_GSO_TCP_ECN`.
    pub const GSO_ECN: u8 = 0x80;
    /// Bytes of the header on the wire of the device.
    pub const LEN: usize = 10;

    /// Whether the transport checksum needs no verification by us: the
    /// kernel verified it, or it comes from this host's own stack.
    pub fn checksum_trusted(&self) -> bool {
        self.flags & (Self::NEEDS_CSUM | Self::DATA_VALID) != 0
    }

    /// Whether the frame stands for several segments.
    pub fn is_gso(&self) -> bool {
        self.gso_type & !Self::GSO_ECN != Self::GSO_NONE
    }

    /// The header to transmit a received frame with, unchanged but for
    /// `DATA_VALID`, which means nothing on transmit.
    pub fn for_forward(&self) -> Offload {
        Offload {
            flags: self.flags & Self::NEEDS_CSUM,
            ..*self
        }
    }

    /// The header after `n` bytes were inserted before the network header (a VLAN tag).
    pub fn shifted(&self, n: u16) -> Offload {
        let mut o = *self;
        if o.flags & Self::NEEDS_CSUM != 0 {
            o.csum_start = o.csum_start.saturating_add(n);
        }
        if o.hdr_len != 0 {
            o.hdr_len = o.hdr_len.saturating_add(n);
        }
        o
    }

    /// Reads the header from its wire form.
    pub fn from_bytes(b: &[u8; Self::LEN]) -> Offload {
        let u = |i: usize| u16::from_ne_bytes([b[i], b[i + 1]]);
        Offload {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u(2),
            gso_size: u(4),
            csum_start: u(6),
            csum_offset: u(8),
        }
    }

    /// The header's wire form.
    pub fn to_bytes(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_ne_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_ne_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_ne_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_ne_bytes());
        b
    }
}

/// What a device carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Medium {
    /// Ethernet frames (AF_PACKET).
    Ethernet,
    /// Bare IP packets (TUN).
    Ip,
}

/// One queue of a frame device, owned by one worker.
pub trait Device: Send {
    /// What the frames are.
    fn medium(&self) -> Medium;

    /// Receives what is ready, up to about `budget` frames, without blocking.
    ///
    /// Each frame is passed to `f` as a slice valid only during the call.
    /// Returns the number of frames delivered; a result `>= budget` means more
    /// may be ready and the caller should call again before waiting.
    fn recv<F: FnMut(&mut [u8], RxMeta)>(&mut self, budget: usize, f: F) -> io::Result<usize>;

    /// Queues a copy of `frame` for transmission with its checksum and
    /// segmentation state `offload` (the default: complete checksum, one
    /// segment), flushing first if the batch is full.
    fn send(&mut self, frame: &[u8], offload: &Offload) -> io::Result<()>;

    /// Queues `frame` with `tag` inserted after the two MAC addresses;
    /// `offload` describes the frame before the insertion.
    fn send_tagged(&mut self, frame: &[u8], tag: VlanTag, offload: &Offload) -> io::Result<()>;

    /// Like [`send`](Device::send), but first tries to merge `frame`, a TCP
    /// segment, into the frame queued last when it continues it (the same
    /// flow's next segment, merged by the device's [`Coalesce`]), so a burst
    /// leaves as one super-frame. Returns whether it was merged. Devices
    /// that cannot hold a queued frame open, or have no `Coalesce`, just
    /// send it.
    fn send_segment(&mut self, frame: &[u8], offload: &Offload) -> io::Result<bool> {
        self.send(frame, offload).map(|()| false)
    }

    /// Transmits everything queued. Frames the kernel refuses are dropped and counted.
    fn flush(&mut self) -> io::Result<()>;

    /// Frames dropped on transmit so far (kernel refused or queue full).
    fn tx_dropped(&self) -> u64;

    /// Frames lost on receive so far: ring overflow reported by the kernel,
    /// or frames truncated by the ring (never forwarded cut short).
    /// May make a syscall; the worker calls it during housekeeping only.
    fn rx_dropped(&mut self) -> u64 {
        0
    }

    /// The descriptor to wait on for readability.
    fn fd(&self) -> RawFd;

    /// When a frame the device holds back (a fault-injecting middleware) is due,
    /// so the worker wakes up for it without new traffic.
    fn next_due(&self) -> Option<std::time::Instant> {
        None
    }

    /// What a fault-injecting middleware did so far (nothing for a real device).
    fn faults(&self) -> Injected {
        Injected::default()
    }
}

/// What a device's middleware injected so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Injected {
    /// Frames dropped.
    pub lost: u64,
    /// Extra copies delivered.
    pub duplicated: u64,
    /// Frames held back so that later ones overtook them.
    pub reordered: u64,
    /// Frames with a changed byte.
    pub corrupted: u64,
}

impl std::ops::Add for Injected {
    type Output = Injected;
    fn add(self, o: Injected) -> Injected {
        Injected {
            lost: self.lost + o.lost,
            duplicated: self.duplicated + o.duplicated,
            reordered: self.reordered + o.reordered,
            corrupted: self.corrupted + o.corrupted,
        }
    }
}

/// A UDP socket on `port` (all IPv4 addresses) that takes nothing: its
/// socket filter drops every datagram before it is queued.
///
/// GENEVE mode reads the load balancer's packets from a packet socket;
/// without a socket on the port the host's stack would answer each of
/// them with an ICMP port unreachable. A socket whose filter drops all
/// keeps the stack quiet at the cost of a lookup per packet, and holds no
/// memory.
pub fn udp_sink(port: u16) -> io::Result<std::net::UdpSocket> {
    use std::os::fd::AsRawFd;
    let sock = std::net::UdpSocket::bind((std::net::Ipv4Addr::UNSPECIFIED, port))
        .map_err(|e| io::Error::new(e.kind(), format!("binding UDP port {port}: {e}")))?;
    let drop_all = [afpacket::BpfInsn {
        code: 0x06, // ret #0
        jt: 0,
        jf: 0,
        k: 0,
    }];
    afpacket::attach_classic(sock.as_raw_fd(), &drop_all, "SO_ATTACH_FILTER (UDP sink)")?;
    Ok(sock)
}

/// The last OS error as an `io::Error` with context.
fn os_err(what: &str) -> io::Error {
    let e = io::Error::last_os_error();
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// Gives the allocator's free memory back to the OS (glibc's `malloc_trim`).
///
/// glibc keeps freed small blocks in its arenas, so after a burst of
/// intercepted flows ended (a SYN storm, a wave of clients) the process
/// would keep its peak RSS. Workers call this when many of their flows
/// ended since the last call; it walks the arenas, so not per packet.
pub fn trim_heap() {
    #[cfg(target_env = "gnu")]
    // Safety: malloc_trim takes no pointers and is thread-safe.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Resolves an interface name to its index.
pub fn ifindex(name: &str) -> io::Result<u32> {
    let c = std::ffi::CString::new(name).map_err(|_| {
        io::Error::new(io::ErrorKind::InvalidInput, "interface name has a NUL byte")
    })?;
    // Safety: `c` is a valid NUL-terminated string that outlives the call.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("interface {name:?}: {}", io::Error::last_os_error()),
        ));
    }
    Ok(idx)
}

/// Merges the IP packet `seg` into the frame that ends `buf` at `start`
/// (`buf[start..]`, preceded by `l2` bytes of link header) when it
/// continues it, updating that frame's `offload`; returns whether it did
/// (otherwise nothing changed). The pipeline's `gso::append` is one; a
/// device given one ([`afpacket::AfPacket::coalescing`],
/// [`tun::Tun::coalescing`]) merges in [`Device::send_segment`].
pub type Coalesce =
    fn(buf: &mut Vec<u8>, start: usize, l2: usize, offload: &mut Offload, seg: &[u8]) -> bool;

/// A fixed arena of frames waiting to be transmitted, reused across batches.
#[derive(Debug)]
pub struct TxBatch {
    buf: Vec<u8>,
    frames: Vec<(usize, usize)>,
    max_frames: usize,
    /// How a segment merges into the last frame; none: it never does.
    coalesce: Option<Coalesce>,
}

impl TxBatch {
    /// An arena of `bytes` bytes for at most `max_frames` frames.
    pub fn new(bytes: usize, max_frames: usize) -> TxBatch {
        TxBatch {
            buf: Vec::with_capacity(bytes),
            frames: Vec::with_capacity(max_frames),
            max_frames,
            coalesce: None,
        }
    }

    /// Merges segments with `coalesce` from now on (see [`TxBatch::append_segment`]).
    pub fn coalescing(mut self, coalesce: Coalesce) -> TxBatch {
        self.coalesce = Some(coalesce);
        self
    }

    /// Whether `len` more bytes fit as one more frame.
    pub fn fits(&self, len: usize) -> bool {
        self.frames.len() < self.max_frames && self.buf.len() + len <= self.buf.capacity()
    }

    /// Whether no frame is queued.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Appends a frame made of `parts`, concatenated.
    pub fn push(&mut self, parts: &[&[u8]]) {
        let start = self.buf.len();
        for p in parts {
            self.buf.extend_from_slice(p);
        }
        self.frames.push((start, self.buf.len() - start));
    }

    /// The queued frames, in order.
    pub fn frames(&self) -> impl ExactSizeIterator<Item = &[u8]> + '_ {
        self.frames.iter().map(|&(s, l)| &self.buf[s..s + l])
    }

    /// Drops every queued frame, keeping the memory.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.frames.clear();
    }

    /// Bytes the arena holds.
    pub fn capacity_bytes(&self) -> usize {
        self.buf.capacity()
    }

    /// Merges the segment `seg` (a frame with `l2` bytes of link header)
    /// into the last frame, which starts with its offload header, when it
    /// continues it and has the same link header; see [`Coalesce`].
    pub fn append_segment(&mut self, seg: &[u8], l2: usize) -> bool {
        let (Some(coalesce), Some(&(start, len))) = (self.coalesce, self.frames.last()) else {
            return false;
        };
        let frame = start + Offload::LEN;
        let (Some(head), Some(tail)) = (self.buf.get(frame..frame + l2), seg.get(..l2)) else {
            return false;
        };
        if head != tail || seg.len() - l2 > self.buf.capacity() - self.buf.len() {
            return false;
        }
        let mut hdr = [0u8; Offload::LEN];
        hdr.copy_from_slice(&self.buf[start..frame]);
        let mut offload = Offload::from_bytes(&hdr);
        if !coalesce(&mut self.buf, frame, l2, &mut offload, &seg[l2..]) {
            return false;
        }
        self.buf[start..frame].copy_from_slice(&offload.to_bytes());
        let grown = self.buf.len() - start;
        debug_assert!(grown > len);
        if let Some(last) = self.frames.last_mut() {
            last.1 = grown;
        }
        true
    }
}

/// Splits an Ethernet frame for tag insertion: `(MACs, rest)`.
pub(crate) fn split_macs(frame: &[u8]) -> Option<(&[u8], &[u8])> {
    (frame.len() >= 12).then(|| frame.split_at(12))
}

/// Moves the calling thread into the network namespace `name` (`ip netns add NAME`).
///
/// Devices are bound to the namespace of the thread that opens them, so a
/// test or the lab can run the appliance inside a namespace by calling this
/// on a dedicated thread before the pipeline starts. Other threads of
/// the process stay where they are.
pub fn enter_netns(name: &str) -> io::Result<()> {
    let path = format!("/var/run/netns/{name}");
    let f =
        std::fs::File::open(&path).map_err(|e| io::Error::new(e.kind(), format!("{path}: {e}")))?;
    // Safety: `f` is an open namespace file for the duration of the call;
    // setns only changes the calling thread's network namespace.
    let r = unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&f), libc::CLONE_NEWNET) };
    if r < 0 {
        return Err(os_err(&format!("setns into {name}")));
    }
    Ok(())
}
