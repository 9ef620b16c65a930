//! The kernel fast path's syscalls: a BPF hash map, program loading (with
//! the verifier's log on refusal), tc ingress attachment and packet-socket
//! filters. What the programs do and which flows are listed: the
//! pipeline's `kernel_fast_path`.
//!
//! Attachment is first a tcx link (`BPF_LINK_CREATE` with
//! `BPF_TCX_INGRESS`, Linux 6.6+): a link is owned by its file descriptor,
//! so the classifier leaves the port when the appliance closes it, exits or
//! crashes, and no qdisc is involved. Kernels without tcx get a clsact
//! qdisc and a direct-action `bpf` filter made over rtnetlink
//! ([`TcFilter`], our own few-line message builder): removed on drop (and
//! the qdisc, if we made it); a filter left by a crash has a fixed
//! priority and handle and is replaced at the next start.

use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::os_err;

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_MAP_TYPE_HASH: u32 = 1;
/// Entries are allocated on insert, not all up front.
const BPF_F_NO_PREALLOC: u32 = 1;
const BPF_ANY: u64 = 0;
const BPF_PROG_TYPE_SOCKET_FILTER: u32 = 1;
const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;
const BPF_TCX_INGRESS: u32 = 46;
const SO_ATTACH_BPF: libc::c_int = 50;
/// Bytes of verifier log kept when a program is refused.
const LOG_SIZE: usize = 1 << 20;

#[repr(C)]
#[derive(Default)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
    numa_node: u32,
    map_name: [u8; 16],
}

#[repr(C)]
#[derive(Default)]
struct MapElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

#[repr(C)]
#[derive(Default)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
    relative_fd: u32,
    _pad: u32,
    expected_revision: u64,
}

/// `bpf(cmd, attr, sizeof attr)`.
///
/// # Safety
/// `attr` must be the attribute struct of `cmd`, and every pointer in it
/// must be valid for what the kernel reads or writes during the call.
unsafe fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> libc::c_long {
    // Safety: the caller's contract; the size is the struct's own.
    unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            (attr as *mut T).cast::<libc::c_void>(),
            size_of::<T>() as libc::c_uint,
        )
    }
}

fn name16(name: &str) -> [u8; 16] {
    let mut b = [0u8; 16];
    for (d, s) in b.iter_mut().zip(name.bytes().take(15)) {
        *d = if s.is_ascii_alphanumeric() { s } else { b'_' };
    }
    b
}

/// A BPF hash map from `K`-byte keys to `V`-byte values (the kernel fast
/// path's flow map).
#[derive(Debug)]
pub struct BpfMap<const K: usize, const V: usize> {
    fd: OwnedFd,
}

impl<const K: usize, const V: usize> BpfMap<K, V> {
    /// Creates a map of at most `max_entries` entries (allocated as used).
    pub fn create(name: &str, max_entries: u32) -> io::Result<BpfMap<K, V>> {
        let mut attr = MapCreateAttr {
            map_type: BPF_MAP_TYPE_HASH,
            key_size: K as u32,
            value_size: V as u32,
            max_entries,
            map_flags: BPF_F_NO_PREALLOC,
            map_name: name16(name),
            ..MapCreateAttr::default()
        };
        // Safety: a BPF_MAP_CREATE attribute without pointers.
        let r = unsafe { bpf(BPF_MAP_CREATE, &mut attr) };
        if r < 0 {
            return Err(os_err("bpf(BPF_MAP_CREATE)"));
        }
        // Safety: the kernel returned a new descriptor we now own.
        Ok(BpfMap {
            fd: unsafe { OwnedFd::from_raw_fd(r as RawFd) },
        })
    }

    /// The map's file descriptor (for the programs that use it).
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    fn elem(&self, cmd: libc::c_long, key: &[u8; K], value: u64, flags: u64) -> libc::c_long {
        let mut attr = MapElemAttr {
            map_fd: self.fd.as_raw_fd() as u32,
            key: key.as_ptr() as u64,
            value,
            flags,
            ..MapElemAttr::default()
        };
        // Safety: `key` points at K live bytes (the map's key size) and
        // `value`, where the command uses one, at V (the caller's buffer),
        // both valid for the call.
        unsafe { bpf(cmd, &mut attr) }
    }

    /// Adds or replaces the entry of `key`; a full map fails with `E2BIG`
    /// (`ErrorKind::ArgumentListTooLong`).
    pub fn update(&self, key: &[u8; K], value: &[u8; V]) -> io::Result<()> {
        match self.elem(BPF_MAP_UPDATE_ELEM, key, value.as_ptr() as u64, BPF_ANY) {
            0 => Ok(()),
            _ => Err(io::Error::last_os_error()),
        }
    }

    /// The entry of `key`, if any.
    pub fn lookup(&self, key: &[u8; K]) -> Option<[u8; V]> {
        let mut value = [0u8; V];
        (self.elem(BPF_MAP_LOOKUP_ELEM, key, value.as_mut_ptr() as u64, 0) == 0).then_some(value)
    }

    /// Deletes the entry of `key`, if any.
    pub fn delete(&self, key: &[u8; K]) {
        // ENOENT (already gone) is the only expected failure.
        let _ = self.elem(BPF_MAP_DELETE_ELEM, key, 0, 0);
    }
}

/// CLOCK_MONOTONIC in nanoseconds: the clock of `bpf_ktime_get_ns`.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // Safety: `ts` is a live timespec the call fills.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

/// The type of a program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgramType {
    /// `BPF_PROG_TYPE_SCHED_CLS`, run at tc (direct action).
    SchedCls,
    /// `BPF_PROG_TYPE_SOCKET_FILTER`, run by a socket before it queues a packet.
    SocketFilter,
}

/// A program the kernel refused, with the verifier's reasons.
#[derive(Debug, thiserror::Error)]
#[error("bpf(BPF_PROG_LOAD) of {name}: {source}{}", if log.is_empty() { String::new() } else { format!("; verifier log (end):\n{log}") })]
pub struct LoadError {
    /// The program's name.
    pub name: String,
    /// The errno.
    pub source: io::Error,
    /// The last lines of the verifier's log.
    pub log: String,
}

/// A loaded eBPF program.
#[derive(Debug)]
pub struct BpfProgram {
    fd: OwnedFd,
}

impl BpfProgram {
    /// Loads `insns` (8 bytes per `struct bpf_insn`, in host order) as a
    /// GPL program named `name`; on refusal the error carries the
    /// verifier's log.
    pub fn load(kind: ProgramType, name: &str, insns: &[u8]) -> Result<BpfProgram, LoadError> {
        let license = b"GPL\0";
        let load = |log: Option<&mut Vec<u8>>| {
            let mut attr = ProgLoadAttr {
                prog_type: match kind {
                    ProgramType::SchedCls => BPF_PROG_TYPE_SCHED_CLS,
                    ProgramType::SocketFilter => BPF_PROG_TYPE_SOCKET_FILTER,
                },
                insn_cnt: (insns.len() / 8) as u32,
                insns: insns.as_ptr() as u64,
                license: license.as_ptr() as u64,
                prog_name: name16(name),
                ..ProgLoadAttr::default()
            };
            if let Some(buf) = log {
                attr.log_level = 1;
                attr.log_size = buf.len() as u32;
                attr.log_buf = buf.as_mut_ptr() as u64;
            }
            // Safety: `insns` points at insn_cnt 8-byte instructions,
            // `license` at a NUL-terminated string, `log_buf` (if set) at
            // log_size writable bytes; all outlive the call.
            let r = unsafe { bpf(BPF_PROG_LOAD, &mut attr) };
            (r, io::Error::last_os_error())
        };
        let (r, err) = load(None);
        if r >= 0 {
            // Safety: the kernel returned a new descriptor we now own.
            return Ok(BpfProgram {
                fd: unsafe { OwnedFd::from_raw_fd(r as RawFd) },
            });
        }
        // Again with the log on, for the reasons (the first try without it
        // is the cheap common case).
        let mut buf = vec![0u8; LOG_SIZE];
        let (r2, _) = load(Some(&mut buf));
        if r2 >= 0 {
            // Safety: as above. (Refused without a log, accepted with one:
            // nothing to report.)
            return Ok(BpfProgram {
                fd: unsafe { OwnedFd::from_raw_fd(r2 as RawFd) },
            });
        }
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        let text = String::from_utf8_lossy(&buf[..end]);
        let lines: Vec<&str> = text.lines().collect();
        let log = lines[lines.len().saturating_sub(25)..].join("\n");
        Err(LoadError {
            name: name.to_owned(),
            source: err,
            log,
        })
    }

    /// The program's file descriptor.
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Attaches this (socket filter) program to socket `sock`: the socket
    /// queues only what the program returns a non-zero length for.
    pub fn attach_to_socket(&self, sock: RawFd) -> io::Result<()> {
        let fd: libc::c_int = self.fd.as_raw_fd();
        // Safety: `fd` is a live int of the size passed.
        let r = unsafe {
            libc::setsockopt(
                sock,
                libc::SOL_SOCKET,
                SO_ATTACH_BPF,
                (&fd as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(os_err("setsockopt(SO_ATTACH_BPF)"));
        }
        Ok(())
    }

    /// Attaches this (tc classifier) program at ingress of `ifindex` as a
    /// tcx link; it runs until the returned link is dropped.
    pub fn attach_tc_ingress(&self, ifindex: u32) -> io::Result<TcLink> {
        let mut attr = LinkCreateAttr {
            prog_fd: self.fd.as_raw_fd() as u32,
            target_ifindex: ifindex,
            attach_type: BPF_TCX_INGRESS,
            ..LinkCreateAttr::default()
        };
        // Safety: a BPF_LINK_CREATE attribute without pointers.
        let r = unsafe { bpf(BPF_LINK_CREATE, &mut attr) };
        if r < 0 {
            return Err(os_err("bpf(BPF_LINK_CREATE, tcx ingress)"));
        }
        // Safety: the kernel returned a new descriptor we now own.
        Ok(TcLink {
            _fd: unsafe { OwnedFd::from_raw_fd(r as RawFd) },
        })
    }
}

/// A classifier attached at a port's tc ingress; dropping it detaches it.
#[derive(Debug)]
pub struct TcLink {
    _fd: OwnedFd,
}

// rtnetlink (include/uapi/linux/netlink.h, rtnetlink.h, pkt_sched.h, pkt_cls.h).
const RTM_NEWQDISC: u16 = 36;
const RTM_DELQDISC: u16 = 37;
const RTM_NEWTFILTER: u16 = 44;
const RTM_DELTFILTER: u16 = 45;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 0x01;
const NLM_F_ACK: u16 = 0x04;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const TCA_KIND: u16 = 1;
const TCA_OPTIONS: u16 = 2;
const TCA_BPF_FD: u16 = 6;
const TCA_BPF_NAME: u16 = 7;
const TCA_BPF_FLAGS: u16 = 8;
const TCA_BPF_FLAG_ACT_DIRECT: u32 = 1;
const NLA_F_NESTED: u16 = 0x8000;
const TC_H_CLSACT: u32 = 0xffff_fff1;
const TC_H_CLSACT_INGRESS: u32 = 0xffff_fff2;
/// The clsact qdisc's handle (`ffff:`).
const CLSACT_HANDLE: u32 = 0xffff_0000;
/// Our filter's priority and handle at clsact ingress: fixed, so a start
/// after a crash finds and replaces a filter the crashed process left.
const FILTER_PRIO: u32 = 0xc0de;
const FILTER_HANDLE: u32 = 1;

/// An rtnetlink request: header, `struct tcmsg`, attributes.
struct TcRequest {
    buf: Vec<u8>,
    /// Start offsets of the open nested attributes.
    nests: Vec<usize>,
}

impl TcRequest {
    fn new(kind: u16, flags: u16, ifindex: u32, handle: u32, parent: u32, info: u32) -> TcRequest {
        let mut buf = Vec::with_capacity(128);
        buf.extend_from_slice(&0u32.to_ne_bytes()); // length, set by finish
        buf.extend_from_slice(&kind.to_ne_bytes());
        buf.extend_from_slice(&(flags | NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        buf.extend_from_slice(&1u32.to_ne_bytes()); // sequence
        buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel's
        buf.extend_from_slice(&[0u8; 4]); // family AF_UNSPEC, padding
        buf.extend_from_slice(&(ifindex as i32).to_ne_bytes());
        buf.extend_from_slice(&handle.to_ne_bytes());
        buf.extend_from_slice(&parent.to_ne_bytes());
        buf.extend_from_slice(&info.to_ne_bytes());
        TcRequest {
            buf,
            nests: Vec::new(),
        }
    }

    fn attr(&mut self, kind: u16, payload: &[u8]) -> &mut TcRequest {
        let len = (4 + payload.len()) as u16;
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(payload);
        while self.buf.len() % 4 != 0 {
            self.buf.push(0);
        }
        self
    }

    fn attr_str(&mut self, kind: u16, s: &str) -> &mut TcRequest {
        let mut b = s.as_bytes().to_vec();
        b.push(0);
        self.attr(kind, &b)
    }

    fn begin_nest(&mut self, kind: u16) -> &mut TcRequest {
        self.nests.push(self.buf.len());
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf
            .extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
        self
    }

    fn end_nest(&mut self) -> &mut TcRequest {
        if let Some(at) = self.nests.pop() {
            let len = (self.buf.len() - at) as u16;
            self.buf[at..at + 2].copy_from_slice(&len.to_ne_bytes());
        }
        self
    }

    fn finish(&mut self) -> &[u8] {
        let len = self.buf.len() as u32;
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        &self.buf
    }
}

/// Sends one request on a fresh rtnetlink socket and returns the kernel's answer (0 or an errno).
fn rtnetlink(req: &mut TcRequest) -> io::Result<i32> {
    // Safety: plain syscall with constant arguments.
    let raw = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if raw < 0 {
        return Err(os_err("socket(AF_NETLINK)"));
    }
    // Safety: `raw` is a fresh descriptor we own from here on.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let msg = req.finish();
    // Safety: sockaddr_nl is plain old data; all-zero (pid 0: the kernel) is valid.
    let mut to: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    to.nl_family = libc::AF_NETLINK as u16;
    // Safety: `msg` and `to` are live for the call, with their exact sizes.
    let r = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            msg.as_ptr().cast(),
            msg.len(),
            0,
            (&to as *const libc::sockaddr_nl).cast(),
            size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(os_err("sendto(rtnetlink)"));
    }
    let mut answer = [0u8; 8192];
    loop {
        // Safety: `answer` is a live buffer of the length passed.
        let n = unsafe { libc::recv(fd.as_raw_fd(), answer.as_mut_ptr().cast(), answer.len(), 0) };
        if n < 0 {
            return Err(os_err("recv(rtnetlink)"));
        }
        let mut at = 0usize;
        let n = n as usize;
        while at + 20 <= n {
            let len =
                u32::from_ne_bytes(answer[at..at + 4].try_into().unwrap_or_default()) as usize;
            let kind = u16::from_ne_bytes([answer[at + 4], answer[at + 5]]);
            if kind == NLMSG_ERROR {
                let e = i32::from_ne_bytes(answer[at + 16..at + 20].try_into().unwrap_or_default());
                return Ok(-e);
            }
            if len < 16 {
                break;
            }
            at += (len + 3) & !3;
        }
    }
}

fn errno_error(what: &str, errno: i32) -> io::Error {
    let e = io::Error::from_raw_os_error(errno);
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

fn check(what: &str, errno: i32) -> io::Result<()> {
    match errno {
        0 => Ok(()),
        e => Err(errno_error(what, e)),
    }
}

fn filter_request(kind: u16, flags: u16, ifindex: u32) -> TcRequest {
    let eth_p_all = (libc::ETH_P_ALL as u16).to_be();
    let info = (FILTER_PRIO << 16) | u32::from(eth_p_all);
    let mut r = TcRequest::new(
        kind,
        flags,
        ifindex,
        FILTER_HANDLE,
        TC_H_CLSACT_INGRESS,
        info,
    );
    r.attr_str(TCA_KIND, "bpf");
    r
}

/// A classifier attached as a `bpf` filter (direct action) at ingress of a
/// clsact qdisc, made over rtnetlink: the way for kernels without tcx
/// (before 6.6). Dropping it deletes the filter, and the qdisc if this
/// made it.
///
/// Unlike a tcx link it outlives a crashed process; the filter has a fixed
/// priority and handle, so the next start replaces it (and the map it
/// used, and so every stale entry, goes with it).
#[derive(Debug)]
pub struct TcFilter {
    ifindex: u32,
    made_qdisc: bool,
}

impl TcFilter {
    /// Attaches `prog` at clsact ingress of `ifindex`, making the qdisc if there is none.
    pub fn attach(prog: &BpfProgram, ifindex: u32, name: &str) -> io::Result<TcFilter> {
        let mut q = TcRequest::new(
            RTM_NEWQDISC,
            NLM_F_CREATE | NLM_F_EXCL,
            ifindex,
            CLSACT_HANDLE,
            TC_H_CLSACT,
            0,
        );
        q.attr_str(TCA_KIND, "clsact");
        let made_qdisc = match rtnetlink(&mut q)? {
            0 => true,
            libc::EEXIST => false,
            e => return Err(errno_error("creating the clsact qdisc", e)),
        };
        let f = TcFilter {
            ifindex,
            made_qdisc,
        };
        // A filter a crashed appliance left.
        let _ = rtnetlink(&mut filter_request(RTM_DELTFILTER, 0, ifindex));
        let mut add = filter_request(RTM_NEWTFILTER, NLM_F_CREATE | NLM_F_EXCL, ifindex);
        add.begin_nest(TCA_OPTIONS)
            .attr(TCA_BPF_FD, &(prog.fd() as u32).to_ne_bytes())
            .attr_str(TCA_BPF_NAME, name)
            .attr(TCA_BPF_FLAGS, &TCA_BPF_FLAG_ACT_DIRECT.to_ne_bytes())
            .end_nest();
        // On failure `f` is dropped, which takes the qdisc back if we made it.
        rtnetlink(&mut add).and_then(|e| check("adding the bpf filter at clsact ingress", e))?;
        Ok(f)
    }

    fn detach(&mut self) {
        let _ = rtnetlink(&mut filter_request(RTM_DELTFILTER, 0, self.ifindex));
        if std::mem::take(&mut self.made_qdisc) {
            let mut q =
                TcRequest::new(RTM_DELQDISC, 0, self.ifindex, CLSACT_HANDLE, TC_H_CLSACT, 0);
            q.attr_str(TCA_KIND, "clsact");
            let _ = rtnetlink(&mut q);
        }
    }
}

impl Drop for TcFilter {
    fn drop(&mut self) {
        self.detach();
    }
}

/// Whether this process runs as root (the tests that load programs need it).
pub fn is_root() -> bool {
    // Safety: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

impl BpfProgram {
    /// Runs the program once over `frame` (`BPF_PROG_TEST_RUN`) and returns
    /// its result: how the tests check a program against the kernel.
    ///
    /// A classifier sees `frame` from its Ethernet header on, as at tc
    /// ingress; a socket filter is run from past the first 14 bytes (the
    /// test run pulls an Ethernet header for it), so callers prepend 14.
    pub fn test_run(&self, frame: &[u8]) -> io::Result<u32> {
        #[repr(C)]
        #[derive(Default)]
        struct TestRunAttr {
            prog_fd: u32,
            retval: u32,
            data_size_in: u32,
            data_size_out: u32,
            data_in: u64,
            data_out: u64,
            repeat: u32,
            duration: u32,
        }
        let mut attr = TestRunAttr {
            prog_fd: self.fd.as_raw_fd() as u32,
            data_size_in: frame.len() as u32,
            data_in: frame.as_ptr() as u64,
            repeat: 1,
            ..TestRunAttr::default()
        };
        // Safety: `data_in` points at data_size_in live bytes; no output buffer.
        let r = unsafe { bpf(10, &mut attr) };
        if r < 0 {
            return Err(os_err("bpf(BPF_PROG_TEST_RUN)"));
        }
        Ok(attr.retval)
    }
}
