//! The kernel fast path's two eBPF programs, written as instructions.
//!
//! Why instructions in Rust and not C: the machines that build the appliance
//! have no clang/LLVM BPF target, and the programs are small (about sixty
//! instructions). [`Asm`] is a minimal assembler (the opcodes the programs
//! use, named labels resolved at [`Asm::finish`]); the kernel's verifier
//! still checks every program at load time, and a refusal comes back with
//! its log.
//!
//! Both programs run the same classifier over a frame whose first byte is
//! the Ethernet header (the packet socket pushes it back before its filter;
//! tc ingress does before the classifier):
//! untagged (no stripped tag either) IPv4 without options or fragments, or
//! IPv6 whose next header is TCP, carrying a segment with none of SYN, FIN,
//! RST, whose directed 5-tuple ([`MapKey`]) is in the map with action
//! [`MapValue::FORWARD`]. Everything else is "not ours": the tc program
//! returns `TC_ACT_OK` (the packet socket sees it as before) and the socket
//! filter copies it whole into the ring. For "ours", the socket filter
//! returns 0 (no copy: packet taps run before tc ingress, so without it the
//! worker would forward a second copy) and the tc program stamps the
//! entry's last-seen time, adds to its packet and byte counters (atomic:
//! several CPUs may run it at once) and redirects the frame to the other
//! port's egress.
//!
//! Headers are read with `bpf_skb_load_bytes` into the stack (allowed in
//! both program types; socket filters may not read packet memory directly),
//! so a short frame fails the load and is passed: every read is bounded by
//! construction. The copy is placed at an offset that aligns the IP header
//! to 4 bytes, as the verifier requires of stack accesses.

use super::{MapKey, MapValue};

/// An eBPF register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Reg {
    /// Return value and helper results.
    R0 = 0,
    /// First argument (the context at entry).
    R1,
    /// Second argument.
    R2,
    /// Third argument.
    R3,
    /// Fourth argument.
    R4,
    /// Fifth argument.
    R5,
    /// Callee-saved.
    R6,
    /// Callee-saved.
    R7,
    /// Callee-saved.
    R8,
    /// Callee-saved.
    R9,
    /// Frame pointer (read-only).
    R10,
}

/// A load/store width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Size {
    /// 1 byte.
    B,
    /// 2 bytes.
    H,
    /// 4 bytes.
    W,
    /// 8 bytes.
    DW,
}

impl Size {
    fn bits(self) -> u8 {
        match self {
            Size::W => 0x00,
            Size::H => 0x08,
            Size::B => 0x10,
            Size::DW => 0x18,
        }
    }
}

/// A conditional jump's comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cond {
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `&` is not zero.
    Set,
}

impl Cond {
    fn bits(self) -> u8 {
        match self {
            Cond::Eq => 0x10,
            Cond::Set => 0x40,
            Cond::Ne => 0x50,
        }
    }
}

/// An arithmetic operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alu {
    /// `dst += src`
    Add,
    /// `dst &= src`
    And,
    /// `dst = src`
    Mov,
}

impl Alu {
    fn bits(self) -> u8 {
        match self {
            Alu::Add => 0x00,
            Alu::And => 0x50,
            Alu::Mov => 0xb0,
        }
    }
}

// Instruction classes, sources and modes (include/uapi/linux/bpf_common.h, bpf.h).
const CLASS_LD: u8 = 0x00;
const CLASS_LDX: u8 = 0x01;
const CLASS_ST: u8 = 0x02;
const CLASS_STX: u8 = 0x03;
const CLASS_ALU: u8 = 0x04;
const CLASS_JMP: u8 = 0x05;
const CLASS_ALU64: u8 = 0x07;
const SRC_K: u8 = 0x00;
const SRC_X: u8 = 0x08;
const MODE_IMM: u8 = 0x00;
const MODE_MEM: u8 = 0x60;
const MODE_ATOMIC: u8 = 0xc0;
const OP_JA: u8 = 0x00;
const OP_CALL: u8 = 0x80;
const OP_EXIT: u8 = 0x90;
/// `src_reg` of a 64-bit immediate load that names a map by file descriptor.
const PSEUDO_MAP_FD: u8 = 1;
/// The atomic operation "add" (no fetch).
const ATOMIC_ADD: i32 = 0x00;

/// Helper functions (enum bpf_func_id).
pub mod helper {
    /// `void *bpf_map_lookup_elem(map, key)`
    pub const MAP_LOOKUP_ELEM: i32 = 1;
    /// `u64 bpf_ktime_get_ns(void)` (CLOCK_MONOTONIC)
    pub const KTIME_GET_NS: i32 = 5;
    /// `long bpf_redirect(ifindex, flags)`
    pub const REDIRECT: i32 = 23;
    /// `long bpf_skb_load_bytes(skb, offset, to, len)`
    pub const SKB_LOAD_BYTES: i32 = 26;
}

/// `TC_ACT_OK`: continue as if no program ran.
pub const TC_ACT_OK: i32 = 0;

/// One eBPF instruction as the kernel reads it (`struct bpf_insn`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    /// Opcode: class | size/op | mode/source.
    pub code: u8,
    /// Destination register (low nibble) and source register (high nibble).
    pub regs: u8,
    /// Signed offset (memory access, jump).
    pub off: i16,
    /// Signed immediate.
    pub imm: i32,
}

impl Insn {
    fn new(code: u8, dst: Reg, src: u8, off: i16, imm: i32) -> Insn {
        Insn {
            code,
            regs: (src << 4) | dst as u8,
            off,
            imm,
        }
    }

    /// The destination register number.
    pub fn dst(&self) -> u8 {
        self.regs & 0x0f
    }

    /// The source register number.
    pub fn src(&self) -> u8 {
        self.regs >> 4
    }

    /// The instruction's 8 bytes in host order, as `bpf(BPF_PROG_LOAD)` takes them.
    pub fn to_bytes(&self) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[0] = self.code;
        b[1] = self.regs;
        b[2..4].copy_from_slice(&self.off.to_ne_bytes());
        b[4..8].copy_from_slice(&self.imm.to_ne_bytes());
        b
    }
}

/// A jump target, made by [`Asm::label`] and placed by [`Asm::bind`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Label(usize);

/// Why a program could not be assembled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AsmError {
    /// A jump names a label that was never bound.
    #[error("label {0} is never bound")]
    Unbound(usize),
    /// A jump's distance does not fit the 16-bit offset.
    #[error("jump at {0} is too far")]
    TooFar(usize),
}

/// A minimal eBPF assembler: emit instructions, jump to labels, resolve them at the end.
#[derive(Debug, Default)]
pub struct Asm {
    insns: Vec<Insn>,
    /// Where each label is bound.
    labels: Vec<Option<usize>>,
    /// (instruction index, label) of each jump.
    fixups: Vec<(usize, Label)>,
}

impl Asm {
    /// A new, empty program.
    pub fn new() -> Asm {
        Asm::default()
    }

    /// A new label, to be bound once.
    pub fn label(&mut self) -> Label {
        self.labels.push(None);
        Label(self.labels.len() - 1)
    }

    /// Places `l` at the next instruction.
    pub fn bind(&mut self, l: Label) {
        self.labels[l.0] = Some(self.insns.len());
    }

    fn push(&mut self, i: Insn) -> &mut Asm {
        self.insns.push(i);
        self
    }

    /// 64-bit `dst op= imm` (sign-extended).
    pub fn alu_imm(&mut self, op: Alu, dst: Reg, imm: i32) -> &mut Asm {
        self.push(Insn::new(CLASS_ALU64 | op.bits() | SRC_K, dst, 0, 0, imm))
    }

    /// 64-bit `dst op= src`.
    pub fn alu_reg(&mut self, op: Alu, dst: Reg, src: Reg) -> &mut Asm {
        self.push(Insn::new(
            CLASS_ALU64 | op.bits() | SRC_X,
            dst,
            src as u8,
            0,
            0,
        ))
    }

    /// 32-bit `dst = imm` (upper half zeroed).
    pub fn mov32_imm(&mut self, dst: Reg, imm: i32) -> &mut Asm {
        self.push(Insn::new(
            CLASS_ALU | Alu::Mov.bits() | SRC_K,
            dst,
            0,
            0,
            imm,
        ))
    }

    /// `dst = *(size *)(src + off)`
    pub fn load(&mut self, size: Size, dst: Reg, src: Reg, off: i16) -> &mut Asm {
        self.push(Insn::new(
            CLASS_LDX | size.bits() | MODE_MEM,
            dst,
            src as u8,
            off,
            0,
        ))
    }

    /// `*(size *)(dst + off) = src`
    pub fn store(&mut self, size: Size, dst: Reg, off: i16, src: Reg) -> &mut Asm {
        self.push(Insn::new(
            CLASS_STX | size.bits() | MODE_MEM,
            dst,
            src as u8,
            off,
            0,
        ))
    }

    /// `*(size *)(dst + off) = imm`
    pub fn store_imm(&mut self, size: Size, dst: Reg, off: i16, imm: i32) -> &mut Asm {
        self.push(Insn::new(
            CLASS_ST | size.bits() | MODE_MEM,
            dst,
            0,
            off,
            imm,
        ))
    }

    /// `lock *(u64 *)(dst + off) += src`
    pub fn atomic_add64(&mut self, dst: Reg, off: i16, src: Reg) -> &mut Asm {
        self.push(Insn::new(
            CLASS_STX | Size::DW.bits() | MODE_ATOMIC,
            dst,
            src as u8,
            off,
            ATOMIC_ADD,
        ))
    }

    /// `dst = map` (the kernel swaps the file descriptor for the map's address).
    pub fn load_map_fd(&mut self, dst: Reg, fd: i32) -> &mut Asm {
        self.push(Insn::new(
            CLASS_LD | Size::DW.bits() | MODE_IMM,
            dst,
            PSEUDO_MAP_FD,
            0,
            fd,
        ));
        // The second half of the 16-byte instruction: the upper 32 bits.
        self.push(Insn {
            code: 0,
            regs: 0,
            off: 0,
            imm: 0,
        })
    }

    /// `if dst cond imm goto to` (64-bit compare).
    pub fn jump_imm(&mut self, cond: Cond, dst: Reg, imm: i32, to: Label) -> &mut Asm {
        self.fixups.push((self.insns.len(), to));
        self.push(Insn::new(CLASS_JMP | cond.bits() | SRC_K, dst, 0, 0, imm))
    }

    /// `goto to`
    pub fn jump(&mut self, to: Label) -> &mut Asm {
        self.fixups.push((self.insns.len(), to));
        self.push(Insn::new(CLASS_JMP | OP_JA, Reg::R0, 0, 0, 0))
    }

    /// Calls helper `id` (arguments in R1..R5, result in R0; R1..R5 are clobbered).
    pub fn call(&mut self, id: i32) -> &mut Asm {
        self.push(Insn::new(CLASS_JMP | OP_CALL, Reg::R0, 0, 0, id))
    }

    /// Returns R0.
    pub fn exit(&mut self) -> &mut Asm {
        self.push(Insn::new(CLASS_JMP | OP_EXIT, Reg::R0, 0, 0, 0))
    }

    /// The program with every jump resolved.
    pub fn finish(mut self) -> Result<Vec<Insn>, AsmError> {
        for &(at, Label(l)) in &self.fixups {
            let target = self.labels[l].ok_or(AsmError::Unbound(l))?;
            let off = target as i64 - (at as i64 + 1);
            self.insns[at].off = i16::try_from(off).map_err(|_| AsmError::TooFar(at))?;
        }
        Ok(self.insns)
    }
}

/// Which of the two programs to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    /// The tc ingress classifier of one port: redirects to `to_ifindex`.
    TcIngress {
        /// The other port's interface index.
        to_ifindex: u32,
    },
    /// The packet sockets' filter: drops (does not copy) what tc redirects.
    SocketFilter,
}

// Stack layout (offsets from R10, the frame pointer). The key sits at the
// top; the frame copy starts at an address that is 2 modulo 4, so the IP
// header (14 bytes in) is 4-aligned.
const KEY: i16 = -(MapKey::LEN as i16);
const FRAME: i16 = -130;
const IP: i16 = FRAME + 14;
const V4_HEADERS: i32 = 14 + 20 + 20;
const V6_HEADERS: i32 = 14 + 40 + 20;
/// `struct __sk_buff` fields the programs read.
const SKB_LEN: i16 = 0;
const SKB_VLAN_PRESENT: i16 = 20;
/// TCP flags that keep a segment with the worker.
const SYN_FIN_RST: i32 = 0x07;

/// Builds the program for `hook` over the map with file descriptor `map_fd`.
pub fn build(hook: Hook, map_fd: i32) -> Vec<Insn> {
    use Reg::*;
    let mut a = Asm::new();
    let pass = a.label();
    let v4 = a.label();
    let v6 = a.label();
    let lookup = a.label();

    a.alu_reg(Alu::Mov, R6, R1);
    // A tag the kernel stripped: the frame belongs to a VLAN; user space
    // restores the tag on forward.
    a.load(Size::W, R0, R6, SKB_VLAN_PRESENT)
        .jump_imm(Cond::Ne, R0, 0, pass);
    load_headers(&mut a, V4_HEADERS, pass);
    // EtherType, read as a little- or big-endian u16 alike by comparing both byte orders.
    a.load(Size::H, R0, R10, FRAME + 12);
    let (ipv4, ipv6) = (
        u16::from_ne_bytes([0x08, 0x00]),
        u16::from_ne_bytes([0x86, 0xdd]),
    );
    a.jump_imm(Cond::Eq, R0, i32::from(ipv4), v4)
        .jump_imm(Cond::Eq, R0, i32::from(ipv6), v6)
        .jump(pass);

    // IPv4: version 4, a 20-byte header, not a fragment, TCP.
    a.bind(v4);
    a.load(Size::B, R0, R10, IP)
        .jump_imm(Cond::Ne, R0, 0x45, pass)
        .load(Size::B, R0, R10, IP + 9)
        .jump_imm(Cond::Ne, R0, 6, pass)
        .load(Size::H, R0, R10, IP + 6)
        // MF and the fragment offset: all but the top two bits of the 16-bit field.
        .jump_imm(
            Cond::Set,
            R0,
            i32::from(u16::from_ne_bytes([0x3f, 0xff])),
            pass,
        )
        .load(Size::B, R7, R10, IP + 20 + 13)
        .jump_imm(Cond::Set, R7, SYN_FIN_RST, pass);
    zero_key(&mut a);
    a.store_imm(Size::B, R10, KEY, 4)
        .store_imm(Size::B, R10, KEY + 1, 6);
    copy_words(&mut a, IP + 20, KEY + MapKey::PORTS as i16, 1);
    copy_words(&mut a, IP + 12, KEY + MapKey::SRC as i16, 1);
    copy_words(&mut a, IP + 16, KEY + MapKey::DST as i16, 1);
    a.jump(lookup);

    // IPv6: next header TCP (extension headers go to user space).
    a.bind(v6);
    load_headers(&mut a, V6_HEADERS, pass);
    a.load(Size::B, R0, R10, IP + 6)
        .jump_imm(Cond::Ne, R0, 6, pass)
        .load(Size::B, R7, R10, IP + 40 + 13)
        .jump_imm(Cond::Set, R7, SYN_FIN_RST, pass);
    zero_key(&mut a);
    a.store_imm(Size::B, R10, KEY, 6)
        .store_imm(Size::B, R10, KEY + 1, 6);
    copy_words(&mut a, IP + 40, KEY + MapKey::PORTS as i16, 1);
    copy_words(&mut a, IP + 8, KEY + MapKey::SRC as i16, 4);
    copy_words(&mut a, IP + 24, KEY + MapKey::DST as i16, 4);

    a.bind(lookup);
    a.load_map_fd(R1, map_fd)
        .alu_reg(Alu::Mov, R2, R10)
        .alu_imm(Alu::Add, R2, i32::from(KEY))
        .call(helper::MAP_LOOKUP_ELEM)
        .jump_imm(Cond::Eq, R0, 0, pass)
        .load(Size::W, R1, R0, MapValue::ACTION as i16)
        .jump_imm(Cond::Ne, R1, MapValue::FORWARD as i32, pass);
    match hook {
        Hook::SocketFilter => {
            // Not copied into the ring: tc ingress redirects it.
            a.mov32_imm(R0, 0).exit();
            a.bind(pass);
            a.mov32_imm(R0, -1).exit();
        }
        Hook::TcIngress { to_ifindex } => {
            a.alu_reg(Alu::Mov, R8, R0)
                .call(helper::KTIME_GET_NS)
                .store(Size::DW, R8, MapValue::LAST_SEEN as i16, R0)
                .mov32_imm(R1, 1)
                .atomic_add64(R8, MapValue::PACKETS as i16, R1)
                .load(Size::W, R1, R6, SKB_LEN)
                .atomic_add64(R8, MapValue::BYTES as i16, R1)
                .mov32_imm(R1, to_ifindex as i32)
                .mov32_imm(R2, 0)
                .call(helper::REDIRECT)
                .exit();
            a.bind(pass);
            a.mov32_imm(R0, TC_ACT_OK).exit();
        }
    }
    a.finish()
        .expect("the programs' labels are all bound and near")
}

/// `bpf_skb_load_bytes(skb, 0, FRAME, len)`, to `pass` if the frame is shorter.
fn load_headers(a: &mut Asm, len: i32, pass: Label) {
    use Reg::*;
    a.alu_reg(Alu::Mov, R1, R6)
        .mov32_imm(R2, 0)
        .alu_reg(Alu::Mov, R3, R10)
        .alu_imm(Alu::Add, R3, i32::from(FRAME))
        .mov32_imm(R4, len)
        .call(helper::SKB_LOAD_BYTES)
        .jump_imm(Cond::Ne, R0, 0, pass);
}

fn zero_key(a: &mut Asm) {
    for i in 0..(MapKey::LEN / 8) as i16 {
        a.store_imm(Size::DW, Reg::R10, KEY + 8 * i, 0);
    }
}

/// Copies `n` 32-bit words from stack offset `from` to `to`.
fn copy_words(a: &mut Asm, from: i16, to: i16, n: i16) {
    for i in 0..n {
        a.load(Size::W, Reg::R0, Reg::R10, from + 4 * i).store(
            Size::W,
            Reg::R10,
            to + 4 * i,
            Reg::R0,
        );
    }
}

/// The program as the bytes `BPF_PROG_LOAD` takes.
pub fn to_bytes(insns: &[Insn]) -> Vec<u8> {
    insns.iter().flat_map(|i| i.to_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_match_the_kernel_headers() {
        // Values from the kernel's own macros (BPF_MOV64_REG(BPF_REG_6,
        // BPF_REG_1) = 0xbf 0x16, BPF_EXIT_INSN() = 0x95, ...).
        let mut a = Asm::new();
        a.alu_reg(Alu::Mov, Reg::R6, Reg::R1)
            .alu_imm(Alu::Add, Reg::R3, -130)
            .mov32_imm(Reg::R0, -1)
            .load(Size::H, Reg::R0, Reg::R10, -118)
            .store(Size::W, Reg::R10, -36, Reg::R0)
            .store_imm(Size::DW, Reg::R10, -40, 0)
            .atomic_add64(Reg::R8, 8, Reg::R1)
            .call(helper::REDIRECT)
            .exit();
        let p = a.finish().unwrap();
        let codes: Vec<(u8, u8)> = p.iter().map(|i| (i.code, i.regs)).collect();
        assert_eq!(
            codes,
            [
                (0xbf, 0x16),
                (0x07, 0x03),
                (0xb4, 0x00),
                (0x69, 0xa0),
                (0x63, 0x0a),
                (0x7a, 0x0a),
                (0xdb, 0x18),
                (0x85, 0x00),
                (0x95, 0x00),
            ]
        );
        assert_eq!(p[1].imm, -130);
        assert_eq!(p[3].off, -118);
        assert_eq!(p[7].imm, 23);
        assert_eq!(p[0].dst(), 6);
        assert_eq!(p[0].src(), 1);
        assert_eq!(
            p[1].to_bytes(),
            [0x07, 0x03, 0, 0, 0x7e, 0xff, 0xff, 0xff],
            "little-endian host: imm -130"
        );
    }

    #[test]
    fn map_fd_load_is_two_slots_and_jumps_resolve_both_ways() {
        let mut a = Asm::new();
        let top = a.label();
        let end = a.label();
        a.bind(top);
        a.jump_imm(Cond::Eq, Reg::R0, 0, end); // 0
        a.load_map_fd(Reg::R1, 7); // 1, 2
        a.jump(top); // 3
        a.bind(end);
        a.exit(); // 4
        let p = a.finish().unwrap();
        assert_eq!(p.len(), 5);
        assert_eq!((p[0].code, p[0].off), (0x15, 3));
        assert_eq!((p[1].code, p[1].regs, p[1].imm), (0x18, 0x11, 7));
        assert_eq!(
            p[2],
            Insn {
                code: 0,
                regs: 0,
                off: 0,
                imm: 0
            }
        );
        assert_eq!((p[3].code, p[3].off), (0x05, -4));
    }

    #[test]
    fn unbound_labels_are_an_error() {
        let mut a = Asm::new();
        let l = a.label();
        a.jump(l);
        assert_eq!(a.finish(), Err(AsmError::Unbound(0)));
    }

    /// Every jump lands inside the program and never on the second slot of
    /// a 16-byte load; the last instruction is an exit; the stack stays in
    /// its 512 bytes and R10 is never written.
    #[test]
    fn both_programs_are_well_formed() {
        for hook in [Hook::SocketFilter, Hook::TcIngress { to_ifindex: 42 }] {
            let p = build(hook, 3);
            let second_slots: Vec<usize> = p
                .iter()
                .enumerate()
                .filter(|(_, i)| i.code == 0x18)
                .map(|(n, _)| n + 1)
                .collect();
            assert_eq!(second_slots.len(), 1);
            for (n, i) in p.iter().enumerate() {
                let class = i.code & 0x07;
                if class == CLASS_JMP && i.code != 0x85 && i.code != 0x95 {
                    let t = n as i64 + 1 + i64::from(i.off);
                    assert!(t >= 0 && (t as usize) < p.len(), "{hook:?}: jump at {n}");
                    assert!(!second_slots.contains(&(t as usize)));
                }
                if matches!(class, CLASS_LDX | CLASS_ST | CLASS_STX) {
                    let base = if class == CLASS_LDX { i.src() } else { i.dst() };
                    if base == 10 {
                        assert!((-512..0).contains(&i.off), "{hook:?}: stack at {n}");
                        let width = match i.code & 0x18 {
                            0x00 => 4,
                            0x08 => 2,
                            0x10 => 1,
                            _ => 8,
                        };
                        assert_eq!(i.off.rem_euclid(width), 0, "{hook:?}: misaligned at {n}");
                    }
                }
                if matches!(class, CLASS_ALU | CLASS_ALU64 | CLASS_LDX) {
                    assert_ne!(i.dst(), 10, "{hook:?}: R10 written at {n}");
                }
            }
            assert_eq!(p.last().unwrap().code, 0x95);
            let redirect = p
                .iter()
                .any(|i| i.code == 0x85 && i.imm == helper::REDIRECT);
            assert_eq!(redirect, matches!(hook, Hook::TcIngress { .. }));
        }
    }

    #[test]
    fn the_ifindex_and_map_fd_are_in_the_program() {
        let p = build(Hook::TcIngress { to_ifindex: 42 }, 9);
        assert!(p
            .iter()
            .any(|i| i.code == 0xb4 && i.dst() == 1 && i.imm == 42));
        assert!(p.iter().any(|i| i.code == 0x18 && i.imm == 9));
        assert_eq!(to_bytes(&p).len(), 8 * p.len());
    }
}
