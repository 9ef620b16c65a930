//! AF_PACKET device: an mmap'ed receive ring (TPACKET_V2 by default, V3 on
//! request) per worker and NIC, batched transmit with `sendmmsg`.
//!
//! Why this shape:
//! - The worker walks the ring in place (no copy, no syscall per frame) and
//!   returns each slot to the kernel. V2 by default: measured back to back
//!   against V3 (alternating A/B with a kernel bridge, `fastpath_ab` in
//!   `netns_tests`), bulk throughput and worker CPU per GB are the same
//!   within noise, but V3 adds its block-retire timeout (>= 1 ms, the
//!   kernel's granularity) to every sparse flow: 1,028 us TCP round trip
//!   against 31 us with V2 (kernel bridge 18 us). Reading V3's current,
//!   not yet retired block is not safe: the kernel publishes frames to user
//!   space only through the block status word.
//! - `PACKET_QDISC_BYPASS`: frames go straight to the driver; the worker's
//!   batch is the only queue (no measurable change on veth, whose default
//!   qdisc is `noqueue`; it saves the qdisc lock on real NICs).
//! - `PACKET_FANOUT_CBPF` spreads frames over the workers' sockets with our
//!   symmetric hash (the pipeline's `steer::fanout_program`), so both directions of
//!   a flow reach the same worker; the group's member order is the worker
//!   order because sockets join in that order.
//! - `PACKET_IGNORE_OUTGOING` keeps the frames we transmit out of our own
//!   rings (the kernel would otherwise loop them back to every packet socket
//!   bound to the NIC).
//! - Transmit copies each frame once into a reused arena and sends the whole
//!   batch with one `sendmmsg`; the kernel copies into an skb either way, and
//!   unlike a TX ring nothing has to track when the kernel is done with a slot.
//! - The ring header carries the VLAN tag the kernel stripped (the
//!   mmap equivalent of `PACKET_AUXDATA`), which the worker restores on forward.
//! - `PACKET_VNET_HDR`: every frame comes with the kernel's checksum and
//!   segmentation state ([`Offload`]) and leaves with it. With the kernel's
//!   default offloads a frame can be a 64 KiB super-frame (TSO on the sender,
//!   GRO on the port) whose checksum is only the pseudo-header sum; without
//!   the header such frames were cut by the ring and forwarded with a broken
//!   checksum. With it the fast path forwards a super-frame whole (the
//!   kernel or the NIC segments it at the far end), and the intercepted
//!   flows hand the kernel super-frames of their own. Ring slots are large
//!   enough for a 64 KiB frame for the same reason.
//! - With the kernel fast path (the pipeline's `kernel_fast_path`) every socket
//!   carries its eBPF filter (`SO_ATTACH_BPF`, set first): frames the tc
//!   program redirects are not copied into the ring. Packet taps run before
//!   tc ingress, so without the filter the worker would forward a second
//!   copy. The kernel runs the fanout's classic steering program to pick the
//!   member and then that member's filter, so the two coexist; the filter
//!   sees the whole skb (a GRO super-frame is one call) and returns its full
//!   length or 0, so the virtio header that `PACKET_VNET_HDR` adds is
//!   unaffected and nothing is truncated.
//! - Promiscuous mode is a socket membership (`PACKET_MR_PROMISC`), so the
//!   kernel drops it when the socket closes, also after a crash.

use std::io;
use std::mem::{size_of, zeroed};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr;
use std::sync::atomic::{fence, Ordering};

use super::{
    ifindex, os_err, split_macs, Coalesce, Device, Medium, Offload, RxMeta, TxBatch, VlanTag,
};

/// One classic BPF instruction (`struct sock_filter`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BpfInsn {
    /// Opcode.
    pub code: u16,
    /// Jump offset if true.
    pub jt: u8,
    /// Jump offset if false.
    pub jf: u8,
    /// Operand.
    pub k: u32,
}

const TPACKET_V2: libc::c_int = 1;
const TPACKET_V3: libc::c_int = 2;
/// Frames per `sendmmsg`.
const TX_BATCH: usize = 64;
/// Bytes of the transmit arena: 64 MTU-sized frames with their headers, or
/// about 16 super-frames (a batch is flushed when the arena is full).
const TX_ARENA: usize = 1024 * 1024;
/// Socket send buffer: large enough that a burst of batches does not block.
const SNDBUF: libc::c_int = 16 * 1024 * 1024;
const SO_SNDBUFFORCE: libc::c_int = 32;

/// What a socket is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// A bridge port: every frame, promiscuous.
    Bridge,
    /// GENEVE mode's receiving socket: IPv4 UDP to this port, not promiscuous.
    Geneve(u16),
    /// Sends only.
    Sender,
}

/// The classic filter of a GENEVE socket: IPv4 UDP whose destination port
/// is `port`, and IPv4 UDP fragments (the worker counts and drops them).
fn geneve_filter(port: u16) -> Vec<BpfInsn> {
    let i = |code, jt, jf, k| BpfInsn { code, jt, jf, k };
    const LD_H_ABS: u16 = 0x28;
    const LD_B_ABS: u16 = 0x30;
    const LDX_B_MSH: u16 = 0xb1;
    const LD_H_IND: u16 = 0x48;
    const JEQ_K: u16 = 0x15;
    const JSET_K: u16 = 0x45;
    const RET_K: u16 = 0x06;
    vec![
        i(LD_H_ABS, 0, 0, 12),
        i(JEQ_K, 0, 8, 0x0800),
        i(LD_B_ABS, 0, 0, 23),
        i(JEQ_K, 0, 6, 17),
        i(LD_H_ABS, 0, 0, 20),
        i(JSET_K, 3, 0, 0x3fff),
        i(LDX_B_MSH, 0, 0, 14),
        i(LD_H_IND, 0, 0, 16),
        i(JEQ_K, 0, 1, u32::from(port)),
        i(RET_K, 0, 0, u32::MAX),
        i(RET_K, 0, 0, 0),
    ]
}

/// Attaches a classic BPF socket filter (`SO_ATTACH_FILTER`).
pub(crate) fn attach_classic(s: RawFd, program: &[BpfInsn], what: &str) -> io::Result<()> {
    set_classic(s, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, program, what)
}

/// Sets a socket option whose value is a classic BPF program (`sock_fprog`).
fn set_classic(
    s: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    program: &[BpfInsn],
    what: &str,
) -> io::Result<()> {
    let mut insns: Vec<libc::sock_filter> = program
        .iter()
        .map(|i| libc::sock_filter {
            code: i.code,
            jt: i.jt,
            jf: i.jf,
            k: i.k,
        })
        .collect();
    let prog = libc::sock_fprog {
        len: insns.len() as u16,
        filter: insns.as_mut_ptr(),
    };
    // The kernel copies the program during the call; `insns` outlives it.
    setsockopt(s, level, name, &prog, what)
}

/// The ring layout the kernel fills.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RingVersion {
    /// TPACKET_V2: fixed-size slots ([`RingConfig::frame_size`]), each
    /// handed over as soon as it is written. No added latency; frames longer
    /// than a slot are dropped (counted in `rx_dropped`).
    V2,
    /// TPACKET_V3: variable-size frames packed in blocks, a block handed
    /// over when full or after `retire_ms`. Denser, but a sparse flow (an
    /// ACK stream) waits up to `retire_ms` per hop: measured 1.1 ms per TCP
    /// round trip through the appliance against 61 us for a kernel bridge.
    V3,
}

/// Receive ring geometry.
#[derive(Debug, Clone, Copy)]
pub struct RingConfig {
    /// Layout.
    pub version: RingVersion,
    /// Bytes per block (a multiple of the page size, a power of two).
    pub block_size: u32,
    /// Number of blocks.
    pub block_count: u32,
    /// Bytes per frame slot (V2; V3 takes it as the largest frame): a
    /// multiple of 16, at most `block_size`. Must hold the ring's own header,
    /// the offload header and the largest frame the port delivers (64 KiB
    /// with GRO/TSO).
    pub frame_size: u32,
    /// V3 only: milliseconds after which the kernel hands over a partly filled block.
    pub retire_ms: u32,
}

impl Default for RingConfig {
    fn default() -> Self {
        // V2 by default: an inline appliance must not add a block-retire
        // delay to every sparse flow (see RingVersion::V3). Slots of 68 KiB
        // hold a 64 KiB super-frame with the ring and offload headers; 15 of
        // them fill a 1 MiB block (the kernel allocates blocks in powers of
        // two pages, so a 68 KiB block would waste half of 128 KiB). 32
        // blocks: 480 slots, 32 MiB per socket.
        RingConfig {
            version: RingVersion::V2,
            block_size: 1024 * 1024,
            block_count: 32,
            retire_ms: 1,
            frame_size: 68 * 1024,
        }
    }
}

/// The fanout group a socket should join.
#[derive(Debug, Clone, Copy)]
pub enum Fanout {
    /// No fanout (a single worker).
    None,
    /// Create a new group with a kernel-chosen unique id (first worker).
    Create,
    /// Join the group with this id (later workers).
    Join(u16),
}

/// The mmap'ed receive ring.
struct Ring {
    base: *mut u8,
    len: usize,
    version: RingVersion,
    block_size: usize,
    blocks: usize,
    /// Next block (V3) or slot (V2) to look at.
    next: usize,
    /// V2: number of slots.
    frames: usize,
    /// V2: bytes per slot.
    frame_size: usize,
    /// V2: slots per block.
    per_block: usize,
}

// Safety: the ring memory is owned by this value alone (one worker); the
// kernel synchronizes through the block status words we access with fences.
unsafe impl Send for Ring {}

impl Drop for Ring {
    fn drop(&mut self) {
        // Safety: `base`/`len` are exactly what mmap returned; nothing borrows
        // the ring after drop because frames are only lent during `recv`.
        unsafe {
            libc::munmap(self.base.cast(), self.len);
        }
    }
}

/// One worker's AF_PACKET socket on one NIC.
pub struct AfPacket {
    fd: OwnedFd,
    ring: Ring,
    tx: TxBatch,
    tx_dropped: u64,
    rx_dropped: u64,
    name: String,
    fanout_id: Option<u16>,
}

impl std::fmt::Debug for AfPacket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AfPacket")
            .field("iface", &self.name)
            .field("fanout_id", &self.fanout_id)
            .finish()
    }
}

fn setsockopt<T>(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    val: &T,
    what: &str,
) -> io::Result<()> {
    // Safety: `val` points to a live `T` of the size we pass; the kernel only reads it.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (val as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(os_err(what));
    }
    Ok(())
}

impl AfPacket {
    /// Opens a socket on `iface` with its own receive ring, in promiscuous
    /// mode, joined to the fanout group as told.
    pub fn open(
        iface: &str,
        ring: RingConfig,
        fanout: Fanout,
        program: &[BpfInsn],
    ) -> io::Result<AfPacket> {
        Self::open_filtered(iface, ring, fanout, program, None)
    }

    /// As [`AfPacket::open`], with `filter` deciding which frames the ring
    /// gets (the kernel fast path's: not those it redirects at tc ingress).
    ///
    /// The filter runs after the fanout picked this socket (the group's
    /// steering program is a separate, classic one, so the two coexist) and
    /// before the frame and its virtio header are copied into the ring.
    pub fn open_filtered(
        iface: &str,
        ring: RingConfig,
        fanout: Fanout,
        program: &[BpfInsn],
        filter: Option<&crate::bpf::BpfProgram>,
    ) -> io::Result<AfPacket> {
        Self::open_as(iface, ring, fanout, program, filter, Role::Bridge)
    }

    /// Opens a socket for GENEVE mode (DESIGN.md §13) on `iface`, the
    /// interface the load balancer sends to: not promiscuous (the frames
    /// are addressed to this host), and a classic filter lets only IPv4 UDP
    /// to port `port` (and IPv4 fragments, to be counted) into the ring,
    /// so the host's own traffic (ARP, the health checks) is not copied.
    pub fn open_geneve(
        iface: &str,
        ring: RingConfig,
        fanout: Fanout,
        program: &[BpfInsn],
        port: u16,
    ) -> io::Result<AfPacket> {
        Self::open_as(iface, ring, fanout, program, None, Role::Geneve(port))
    }

    /// Opens a socket on `iface` that only sends: bound to protocol 0, so
    /// the kernel delivers it nothing (GENEVE mode's second port, the same
    /// interface as the first).
    pub fn open_sender(iface: &str) -> io::Result<AfPacket> {
        let ring = RingConfig {
            version: RingVersion::V2,
            block_size: 4096,
            block_count: 1,
            frame_size: 4096,
            retire_ms: 0,
        };
        Self::open_as(iface, ring, Fanout::None, &[], None, Role::Sender)
    }

    fn open_as(
        iface: &str,
        ring: RingConfig,
        fanout: Fanout,
        program: &[BpfInsn],
        filter: Option<&crate::bpf::BpfProgram>,
        role: Role,
    ) -> io::Result<AfPacket> {
        let idx = ifindex(iface)?;
        let ctx = |what: &str| format!("AF_PACKET on {iface}: {what}");
        // Protocol 0: receive nothing until the ring is set up and we bind.
        // Safety: plain syscall with constant arguments.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                0,
            )
        };
        if raw < 0 {
            return Err(os_err(&ctx("socket")));
        }
        // Safety: `raw` is a fresh descriptor we own from here on.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let s = fd.as_raw_fd();
        // First: no frame may reach the socket unfiltered.
        if let Some(f) = filter {
            f.attach_to_socket(s)
                .map_err(|e| io::Error::new(e.kind(), ctx(&e.to_string())))?;
        }
        if let Role::Geneve(port) = role {
            attach_classic(s, &geneve_filter(port), &ctx("SO_ATTACH_FILTER (GENEVE)"))?;
        }
        let version = match ring.version {
            RingVersion::V2 => TPACKET_V2,
            RingVersion::V3 => TPACKET_V3,
        };
        setsockopt(
            s,
            libc::SOL_PACKET,
            libc::PACKET_VERSION,
            &version,
            &ctx("PACKET_VERSION v3"),
        )?;
        let one: libc::c_int = 1;
        // Before the ring: the kernel refuses to change it once a ring exists.
        setsockopt(
            s,
            libc::SOL_PACKET,
            PACKET_VNET_HDR,
            &one,
            &ctx("PACKET_VNET_HDR"),
        )?;
        setsockopt(
            s,
            libc::SOL_PACKET,
            libc::PACKET_IGNORE_OUTGOING,
            &one,
            &ctx("PACKET_IGNORE_OUTGOING"),
        )?;
        // Transmit straight to the driver: the appliance is the queue (it
        // drops a batch the NIC refuses), a qdisc in between only adds a lock
        // and an enqueue/dequeue per frame. Best effort (kernel >= 3.14).
        let _ = setsockopt(
            s,
            libc::SOL_PACKET,
            libc::PACKET_QDISC_BYPASS,
            &one,
            "PACKET_QDISC_BYPASS",
        );
        // Best effort: without FORCE the kernel caps at wmem_max.
        if setsockopt(
            s,
            libc::SOL_SOCKET,
            SO_SNDBUFFORCE,
            &SNDBUF,
            "SO_SNDBUFFORCE",
        )
        .is_err()
        {
            let _ = setsockopt(s, libc::SOL_SOCKET, libc::SO_SNDBUF, &SNDBUF, "SO_SNDBUF");
        }
        if ring.frame_size < 2048 || ring.frame_size % 16 != 0 || ring.block_size < ring.frame_size
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                ctx("ring frame size must be a multiple of 16 from 2048 up to the block size"),
            ));
        }
        let per_block = ring.block_size / ring.frame_size;
        let frames = per_block * ring.block_count;
        match ring.version {
            RingVersion::V2 => {
                let req = libc::tpacket_req {
                    tp_block_size: ring.block_size,
                    tp_block_nr: ring.block_count,
                    tp_frame_size: ring.frame_size,
                    tp_frame_nr: frames,
                };
                setsockopt(
                    s,
                    libc::SOL_PACKET,
                    libc::PACKET_RX_RING,
                    &req,
                    &ctx("PACKET_RX_RING v2"),
                )?;
            }
            RingVersion::V3 => {
                let req = libc::tpacket_req3 {
                    tp_block_size: ring.block_size,
                    tp_block_nr: ring.block_count,
                    tp_frame_size: ring.frame_size,
                    tp_frame_nr: frames,
                    tp_retire_blk_tov: ring.retire_ms,
                    tp_sizeof_priv: 0,
                    tp_feature_req_word: 0,
                };
                setsockopt(
                    s,
                    libc::SOL_PACKET,
                    libc::PACKET_RX_RING,
                    &req,
                    &ctx("PACKET_RX_RING v3"),
                )?;
            }
        }
        let len = ring.block_size as usize * ring.block_count as usize;
        // Safety: maps the ring the kernel just allocated for this socket; the
        // length is the one we configured and the mapping is checked below.
        let base = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                s,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(os_err(&ctx("mmap rx ring")));
        }
        let ring = Ring {
            base: base.cast(),
            len,
            version: ring.version,
            block_size: ring.block_size as usize,
            blocks: ring.block_count as usize,
            next: 0,
            frames: frames as usize,
            frame_size: ring.frame_size as usize,
            per_block: per_block as usize,
        };
        // Safety: sockaddr_ll is plain old data; all-zero is a valid value.
        let mut sll: libc::sockaddr_ll = unsafe { zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = match role {
            Role::Sender => 0,
            _ => (libc::ETH_P_ALL as u16).to_be(),
        };
        sll.sll_ifindex = idx as i32;
        // Safety: `sll` is a valid sockaddr_ll and we pass its exact size.
        let r = unsafe {
            libc::bind(
                s,
                (&sll as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(os_err(&ctx("bind")));
        }
        if role == Role::Bridge {
            // Safety: packet_mreq is plain old data; all-zero is a valid value.
            let mut mreq: libc::packet_mreq = unsafe { zeroed() };
            mreq.mr_ifindex = idx as i32;
            mreq.mr_type = libc::PACKET_MR_PROMISC as u16;
            setsockopt(
                s,
                libc::SOL_PACKET,
                libc::PACKET_ADD_MEMBERSHIP,
                &mreq,
                &ctx("promiscuous mode"),
            )?;
        }
        let mut dev = AfPacket {
            fd,
            ring,
            tx: TxBatch::new(TX_ARENA, TX_BATCH),
            tx_dropped: 0,
            rx_dropped: 0,
            name: iface.to_owned(),
            fanout_id: None,
        };
        match fanout {
            Fanout::None => {}
            Fanout::Create => dev.join_fanout(0, libc::PACKET_FANOUT_FLAG_UNIQUEID, program)?,
            Fanout::Join(id) => dev.join_fanout(id, 0, program)?,
        }
        Ok(dev)
    }

    fn join_fanout(&mut self, id: u16, flags: libc::c_uint, program: &[BpfInsn]) -> io::Result<()> {
        let s = self.fd.as_raw_fd();
        let ctx = |what: &str| format!("AF_PACKET on {}: {what}", self.name);
        let arg: libc::c_int =
            (u32::from(id) | ((libc::PACKET_FANOUT_CBPF | flags) << 16)) as libc::c_int;
        setsockopt(
            s,
            libc::SOL_PACKET,
            libc::PACKET_FANOUT,
            &arg,
            &ctx("PACKET_FANOUT"),
        )?;
        let mut got: libc::c_int = 0;
        let mut len = size_of::<libc::c_int>() as libc::socklen_t;
        // Safety: `got`/`len` are live and sized for the int the kernel writes.
        let r = unsafe {
            libc::getsockopt(
                s,
                libc::SOL_PACKET,
                libc::PACKET_FANOUT,
                (&mut got as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        if r < 0 {
            return Err(os_err(&ctx("read back fanout id")));
        }
        self.fanout_id = Some((got & 0xffff) as u16);
        set_classic(
            s,
            libc::SOL_PACKET,
            libc::PACKET_FANOUT_DATA,
            program,
            &ctx("PACKET_FANOUT_DATA (steering program)"),
        )
    }

    /// Merges a flow's consecutive TCP segments in
    /// [`Device::send_segment`] with `coalesce` (see [`Coalesce`]).
    pub fn coalescing(mut self, coalesce: Coalesce) -> AfPacket {
        self.tx = self.tx.coalescing(coalesce);
        self
    }

    /// The fanout group id, for the next worker to join.
    pub fn fanout_id(&self) -> Option<u16> {
        self.fanout_id
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// `SOL_PACKET` option: frames carry a `struct virtio_net_hdr` both ways.
const PACKET_VNET_HDR: libc::c_int = 15;

/// Smallest frame offset in a slot that leaves room for the offload header.
const HDR_ROOM: usize = Offload::LEN;

/// Reads the offload header at `p`.
///
/// # Safety
/// `p` must point to `Offload::LEN` readable bytes.
unsafe fn read_offload(p: *const u8) -> Offload {
    let mut b = [0u8; Offload::LEN];
    // Safety: the caller guarantees `p` has `Offload::LEN` readable bytes;
    // `b` is a distinct local buffer.
    unsafe { ptr::copy_nonoverlapping(p, b.as_mut_ptr(), Offload::LEN) };
    Offload::from_bytes(&b)
}

impl AfPacket {
    fn recv_v2<F: FnMut(&mut [u8], RxMeta)>(&mut self, budget: usize, mut f: F) -> usize {
        let r = &mut self.ring;
        let slot_size = r.frame_size;
        let mut delivered = 0;
        while delivered < budget {
            let at = (r.next / r.per_block) * r.block_size + (r.next % r.per_block) * slot_size;
            // Safety: `next < frames`, so the slot lies inside its block and
            // the block inside the mapping; slots are 16-byte aligned.
            let slot = unsafe { r.base.add(at) };
            let hdr = slot.cast::<libc::tpacket2_hdr>();
            // Safety: the header is inside the mapping; the kernel writes the
            // status word concurrently, hence the volatile read.
            let status = unsafe { ptr::read_volatile(ptr::addr_of!((*hdr).tp_status)) };
            if status & libc::TP_STATUS_USER == 0 {
                break;
            }
            // The slot's contents are published before its status.
            fence(Ordering::Acquire);
            // Safety: the slot is ours until we hand it back below.
            let h = unsafe { &*hdr };
            let (mac, snap) = (h.tp_mac as usize, h.tp_snaplen as usize);
            if h.tp_len as usize != snap || mac + snap > slot_size || mac < HDR_ROOM {
                // Longer than a slot: forwarding it cut short would corrupt it.
                self.rx_dropped += 1;
            } else {
                // Safety: the frame lies inside the slot (checked above), which
                // the kernel does not touch until we release it.
                let frame = unsafe { std::slice::from_raw_parts_mut(slot.add(mac), snap) };
                let vlan = (status & libc::TP_STATUS_VLAN_VALID != 0).then_some(VlanTag {
                    tpid: if status & libc::TP_STATUS_VLAN_TPID_VALID != 0 {
                        h.tp_vlan_tpid
                    } else {
                        0x8100
                    },
                    tci: h.tp_vlan_tci,
                });
                // Safety: the kernel writes the offload header just before
                // the frame (`mac >= HDR_ROOM`, checked above), inside the slot.
                let offload = unsafe { read_offload(slot.add(mac - Offload::LEN)) };
                f(frame, RxMeta { vlan, offload });
                delivered += 1;
            }
            fence(Ordering::Release);
            // Safety: the status word is inside the mapping; writing KERNEL
            // hands the slot back, and no slice into it survives this point.
            unsafe {
                ptr::write_volatile(ptr::addr_of_mut!((*hdr).tp_status), libc::TP_STATUS_KERNEL)
            };
            r.next = (r.next + 1) % r.frames;
        }
        delivered
    }

    fn recv_v3<F: FnMut(&mut [u8], RxMeta)>(&mut self, budget: usize, mut f: F) -> usize {
        let r = &mut self.ring;
        let mut delivered = 0;
        while delivered < budget {
            // Safety: `next < blocks`, so the block lies inside the mapping,
            // which is page aligned and so aligned for the block descriptor.
            let block = unsafe { r.base.add(r.next * r.block_size) };
            let desc = block.cast::<libc::tpacket_block_desc>();
            // Safety: the descriptor is inside the mapping; the kernel writes
            // the status word concurrently, hence the volatile read.
            let status = unsafe { ptr::read_volatile(ptr::addr_of!((*desc).hdr.bh1.block_status)) };
            if status & libc::TP_STATUS_USER == 0 {
                break;
            }
            // The block's contents are published before its status.
            fence(Ordering::Acquire);
            // Safety: as above; the block is ours until we hand it back.
            let (num, first) = unsafe {
                let bh = ptr::addr_of!((*desc).hdr.bh1);
                ((*bh).num_pkts as usize, (*bh).offset_to_first_pkt as usize)
            };
            let mut off = first;
            for _ in 0..num {
                if off + size_of::<libc::tpacket3_hdr>() > r.block_size {
                    break; // a corrupt offset would point outside the block
                }
                // Safety: `off` plus the header size is inside this block
                // (checked above); TPACKET_V3 aligns headers to 16 bytes.
                let hdr = unsafe { &*block.add(off).cast::<libc::tpacket3_hdr>() };
                let mac = hdr.tp_mac as usize;
                let snap = hdr.tp_snaplen as usize;
                if hdr.tp_len as usize != snap {
                    // Cut short by the ring: forwarding it would corrupt it.
                    self.rx_dropped += 1;
                } else if off + mac + snap <= r.block_size && mac >= HDR_ROOM {
                    // Safety: the frame lies inside the block (checked), which
                    // the kernel does not touch until we release it below.
                    let frame =
                        unsafe { std::slice::from_raw_parts_mut(block.add(off + mac), snap) };
                    let vlan =
                        (hdr.tp_status & libc::TP_STATUS_VLAN_VALID != 0).then_some(VlanTag {
                            tpid: if hdr.tp_status & libc::TP_STATUS_VLAN_TPID_VALID != 0 {
                                hdr.hv1.tp_vlan_tpid
                            } else {
                                0x8100
                            },
                            tci: hdr.hv1.tp_vlan_tci as u16,
                        });
                    // Safety: the offload header sits just before the frame
                    // (`mac >= HDR_ROOM`, checked above), inside the block.
                    let offload = unsafe { read_offload(block.add(off + mac - Offload::LEN)) };
                    f(frame, RxMeta { vlan, offload });
                    delivered += 1;
                }
                if hdr.tp_next_offset == 0 {
                    break;
                }
                off += hdr.tp_next_offset as usize;
            }
            // Everything we read from the block happens before we return it.
            fence(Ordering::Release);
            // Safety: the status word is inside the mapping; writing KERNEL
            // hands the block back, and no slice into it survives this call.
            unsafe {
                ptr::write_volatile(
                    ptr::addr_of_mut!((*desc).hdr.bh1.block_status),
                    libc::TP_STATUS_KERNEL,
                );
            }
            r.next = (r.next + 1) % r.blocks;
        }
        delivered
    }
}

impl Device for AfPacket {
    fn medium(&self) -> Medium {
        Medium::Ethernet
    }

    fn recv<F: FnMut(&mut [u8], RxMeta)>(&mut self, budget: usize, f: F) -> io::Result<usize> {
        match self.ring.version {
            RingVersion::V2 => Ok(self.recv_v2(budget, f)),
            RingVersion::V3 => Ok(self.recv_v3(budget, f)),
        }
    }

    fn send(&mut self, frame: &[u8], offload: &Offload) -> io::Result<()> {
        let len = Offload::LEN + frame.len();
        if !self.tx.fits(len) {
            self.flush()?;
            if len > self.tx.capacity_bytes() {
                self.tx_dropped += 1;
                return Ok(());
            }
        }
        self.tx.push(&[&offload.to_bytes(), frame]);
        Ok(())
    }

    fn send_segment(&mut self, frame: &[u8], offload: &Offload) -> io::Result<bool> {
        // The last frame's 14-byte link header (MACs, EtherType) must match.
        if !offload.is_gso() && self.tx.append_segment(frame, 14) {
            return Ok(true);
        }
        self.send(frame, offload).map(|()| false)
    }

    fn send_tagged(&mut self, frame: &[u8], tag: VlanTag, offload: &Offload) -> io::Result<()> {
        let Some((macs, rest)) = split_macs(frame) else {
            self.tx_dropped += 1;
            return Ok(());
        };
        let len = Offload::LEN + frame.len() + 4;
        if !self.tx.fits(len) {
            self.flush()?;
            if len > self.tx.capacity_bytes() {
                self.tx_dropped += 1;
                return Ok(());
            }
        }
        let mut t = [0u8; 4];
        t[..2].copy_from_slice(&tag.tpid.to_be_bytes());
        t[2..].copy_from_slice(&tag.tci.to_be_bytes());
        self.tx
            .push(&[&offload.shifted(4).to_bytes(), macs, &t, rest]);
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.tx.is_empty() {
            return Ok(());
        }
        let mut iov: [libc::iovec; TX_BATCH] = [libc::iovec {
            iov_base: ptr::null_mut(),
            iov_len: 0,
        }; TX_BATCH];
        // Safety: mmsghdr is plain old data; all-zero is a valid value.
        let mut msgs: [libc::mmsghdr; TX_BATCH] = unsafe { zeroed() };
        let n = self.tx.frames().len();
        for (i, frame) in self.tx.frames().enumerate() {
            iov[i] = libc::iovec {
                iov_base: frame.as_ptr() as *mut libc::c_void,
                iov_len: frame.len(),
            };
            msgs[i].msg_hdr.msg_iov = &mut iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
        }
        let mut sent = 0;
        while sent < n {
            // Safety: `msgs[sent..n]` are initialised and point at iovecs that
            // point into `self.tx`, all alive and unmoved during the call; no
            // address is given, so the socket's bound interface is used.
            let r = unsafe {
                libc::sendmmsg(
                    self.fd.as_raw_fd(),
                    msgs.as_mut_ptr().add(sent),
                    (n - sent) as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            if r > 0 {
                sent += r as usize;
                continue;
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                // Queue full: drop the rest of the batch, like a switch would.
                Some(libc::EAGAIN) | Some(libc::ENOBUFS) => {
                    self.tx_dropped += (n - sent) as u64;
                    break;
                }
                // This frame is refused (e.g. larger than the MTU): drop it alone.
                Some(libc::EMSGSIZE) | Some(libc::EINVAL) => {
                    self.tx_dropped += 1;
                    sent += 1;
                }
                _ => {
                    self.tx_dropped += (n - sent) as u64;
                    self.tx.clear();
                    return Err(io::Error::new(
                        e.kind(),
                        format!("sendmmsg on {}: {e}", self.name),
                    ));
                }
            }
        }
        self.tx.clear();
        Ok(())
    }

    fn tx_dropped(&self) -> u64 {
        self.tx_dropped
    }

    fn rx_dropped(&mut self) -> u64 {
        // Safety: tpacket_stats_v3 is plain old data; all-zero is valid.
        let mut st: libc::tpacket_stats_v3 = unsafe { zeroed() };
        let mut len = size_of::<libc::tpacket_stats_v3>() as libc::socklen_t;
        // Safety: `st`/`len` are live and sized for the struct the kernel
        // writes; reading the statistics also resets them, so we accumulate.
        let r = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                (&mut st as *mut libc::tpacket_stats_v3).cast(),
                &mut len,
            )
        };
        if r == 0 {
            self.rx_dropped += u64::from(st.tp_drops);
        }
        self.rx_dropped
    }

    fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}
