//! The symmetric flow hash that decides which worker owns a flow.
//!
//! Both directions of a connection must reach the same worker, because that
//! worker alone holds the flow's state. The kernel's own packet hash
//! (`skb->hash`) can be set by the sender and is not guaranteed symmetric, so
//! the AF_PACKET fanout group runs our classic-BPF program
//! ([`fanout_program`]) and the TUN path recomputes the same function in
//! Rust ([`symmetric_hash`]). Symmetry comes from combining the two endpoints
//! with XOR before mixing: swapping source and destination gives the same
//! input, hence the same worker. The BPF program and the Rust function are
//! kept identical by a test that runs the program in a small interpreter.

use std::net::IpAddr;

use crate::frame::{IpView, Transport};
use crate::io::afpacket::BpfInsn;

/// Multiplier of the final mix (2^32 / golden ratio, odd).
const MIX: u32 = 0x9e37_79b1;

fn mix(a: u32) -> u32 {
    let a = a.wrapping_mul(MIX);
    a ^ (a >> 16)
}

fn fold(ip: IpAddr) -> u32 {
    match ip {
        IpAddr::V4(a) => u32::from(a),
        IpAddr::V6(a) => {
            let o = a.octets();
            (0..4).fold(0, |acc, i| {
                acc ^ u32::from_be_bytes([o[4 * i], o[4 * i + 1], o[4 * i + 2], o[4 * i + 3]])
            })
        }
    }
}

/// The symmetric hash of a packet's endpoints; ports count only for TCP and UDP.
pub fn symmetric_hash(src: IpAddr, dst: IpAddr, ports: Option<(u16, u16)>) -> u32 {
    let p = ports.map_or(0, |(s, d)| u32::from(s ^ d));
    mix(fold(src) ^ fold(dst) ^ p)
}

/// The hash of a parsed IP packet, exactly as [`fanout_program`] computes it.
///
/// `raw` is the IP packet `ip` was parsed from. IPv6 ports are used only
/// when TCP or UDP follows the fixed header directly, as the BPF program
/// does not walk extension headers.
pub fn packet_hash(ip: &IpView<'_>, raw: &[u8]) -> u32 {
    let ipv6_direct_l4 = matches!(raw.get(6), Some(6 | 17));
    let ports = match (ip.transport, ip.src) {
        (_, IpAddr::V6(_)) if !ipv6_direct_l4 => None,
        (Transport::Tcp(t), _) => Some((t.src_port, t.dst_port)),
        (
            Transport::Udp {
                src_port, dst_port, ..
            },
            _,
        ) => Some((src_port, dst_port)),
        _ => None,
    };
    symmetric_hash(ip.src, ip.dst, ports)
}

/// The worker that owns a packet with this hash.
pub fn worker_of(hash: u32, workers: usize) -> usize {
    // The kernel's fanout does `hash % num_members` with the program's result.
    (hash % workers.max(1) as u32) as usize
}

// Classic BPF opcodes used by the program.
const LD_W_ABS: u16 = 0x20;
const LD_H_ABS: u16 = 0x28;
const LD_B_ABS: u16 = 0x30;
const LD_H_IND: u16 = 0x48;
const LD_IMM: u16 = 0x00;
const LDX_MEM: u16 = 0x61;
const LDX_B_MSH: u16 = 0xb1;
const ST: u16 = 0x02;
const JEQ_K: u16 = 0x15;
const JSET_K: u16 = 0x45;
const JA: u16 = 0x05;
const XOR_X: u16 = 0xac;
const MUL_K: u16 = 0x24;
const RSH_K: u16 = 0x74;
const TAX: u16 = 0x07;
const RET_A: u16 = 0x16;
const RET_K: u16 = 0x06;
/// `SKF_AD_OFF + SKF_AD_PROTOCOL`: loads `ntohs(skb->protocol)`.
const AD_PROTOCOL: u32 = 0xffff_f000;

/// Label-resolving assembler for the few jumps the program needs.
struct Asm {
    insns: Vec<(BpfInsn, Option<&'static str>, Option<&'static str>)>,
    labels: Vec<(&'static str, usize)>,
}

impl Asm {
    fn op(&mut self, code: u16, k: u32) {
        self.insns.push((
            BpfInsn {
                code,
                jt: 0,
                jf: 0,
                k,
            },
            None,
            None,
        ));
    }
    fn jmp(&mut self, code: u16, k: u32, t: Option<&'static str>, f: Option<&'static str>) {
        self.insns.push((
            BpfInsn {
                code,
                jt: 0,
                jf: 0,
                k,
            },
            t,
            f,
        ));
    }
    fn label(&mut self, name: &'static str) {
        self.labels.push((name, self.insns.len()));
    }
    fn finish(self) -> Vec<BpfInsn> {
        let find = |name: &str| {
            self.labels
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, at)| *at)
                .expect("label defined in fanout_program")
        };
        self.insns
            .iter()
            .enumerate()
            .map(|(pc, (insn, t, f))| {
                let mut insn = *insn;
                let rel = |target: usize| (target - pc - 1) as u32;
                if insn.code == JA {
                    if let Some(t) = t {
                        insn.k = rel(find(t));
                    }
                } else {
                    if let Some(t) = t {
                        insn.jt = rel(find(t)) as u8;
                    }
                    if let Some(f) = f {
                        insn.jf = rel(find(f)) as u8;
                    }
                }
                insn
            })
            .collect()
    }
}

/// The classic-BPF program for `PACKET_FANOUT_CBPF`, computing [`symmetric_hash`].
///
/// It runs on received frames with the data pointer at the network header
/// (the link header and an offloaded VLAN tag are already pulled), so loads
/// are relative to the IP header. Non-IP frames return 0 (worker 0).
pub fn fanout_program() -> Vec<BpfInsn> {
    let mut a = Asm {
        insns: Vec::new(),
        labels: Vec::new(),
    };
    a.op(LD_IMM, 0);
    a.op(ST, 0); // M[0] = ports xor
    a.op(LD_W_ABS, AD_PROTOCOL);
    a.jmp(JEQ_K, 0x0800, Some("v4"), None);
    a.jmp(JEQ_K, 0x86dd, Some("v6"), Some("other"));
    // IPv4: ports only for unfragmented TCP/UDP.
    a.label("v4");
    a.op(LD_H_ABS, 6);
    a.jmp(JSET_K, 0x3fff, Some("v4addr"), None);
    a.op(LD_B_ABS, 9);
    a.jmp(JEQ_K, 6, Some("v4ports"), None);
    a.jmp(JEQ_K, 17, Some("v4ports"), Some("v4addr"));
    a.label("v4ports");
    a.op(LDX_B_MSH, 0);
    a.op(LD_H_IND, 0);
    a.op(ST, 1);
    a.op(LD_H_IND, 2);
    a.op(LDX_MEM, 1);
    a.op(XOR_X, 0);
    a.op(ST, 0);
    a.label("v4addr");
    a.op(LD_W_ABS, 12);
    a.op(ST, 1);
    a.op(LD_W_ABS, 16);
    a.op(LDX_MEM, 1);
    a.op(XOR_X, 0);
    a.op(LDX_MEM, 0);
    a.op(XOR_X, 0);
    a.jmp(JA, 0, Some("mix"), None);
    // IPv6: ports only when TCP/UDP directly follows the fixed header.
    a.label("v6");
    a.op(LD_B_ABS, 6);
    a.jmp(JEQ_K, 6, Some("v6ports"), None);
    a.jmp(JEQ_K, 17, Some("v6ports"), Some("v6addr"));
    a.label("v6ports");
    a.op(LD_H_ABS, 40);
    a.op(ST, 1);
    a.op(LD_H_ABS, 42);
    a.op(LDX_MEM, 1);
    a.op(XOR_X, 0);
    a.op(ST, 0);
    a.label("v6addr");
    for off in (8..40).step_by(4) {
        a.op(LD_W_ABS, off);
        a.op(LDX_MEM, 0);
        a.op(XOR_X, 0);
        a.op(ST, 0);
    }
    a.label("mix");
    a.op(MUL_K, MIX);
    a.op(TAX, 0);
    a.op(RSH_K, 16);
    a.op(XOR_X, 0);
    a.op(RET_A, 0);
    a.label("other");
    a.op(RET_K, 0);
    a.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::parse_ip;
    use crate::testkit::packets as ft;

    /// Runs the subset of classic BPF the program uses, like the kernel does
    /// for a packet whose data starts at the network header. An out-of-bounds
    /// load ends the program with 0, as in the kernel.
    fn run(prog: &[BpfInsn], protocol: u16, pkt: &[u8]) -> u32 {
        let (mut a, mut x, mut m) = (0u32, 0u32, [0u32; 16]);
        let mut pc = 0usize;
        let load = |off: usize, n: usize| -> Option<u32> {
            let b = pkt.get(off..off + n)?;
            Some(b.iter().fold(0u32, |acc, &v| (acc << 8) | u32::from(v)))
        };
        loop {
            let i = prog[pc];
            pc += 1;
            match i.code {
                LD_IMM => a = i.k,
                LD_W_ABS if i.k == AD_PROTOCOL => a = u32::from(protocol),
                LD_W_ABS => match load(i.k as usize, 4) {
                    Some(v) => a = v,
                    None => return 0,
                },
                LD_H_ABS => match load(i.k as usize, 2) {
                    Some(v) => a = v,
                    None => return 0,
                },
                LD_B_ABS => match load(i.k as usize, 1) {
                    Some(v) => a = v,
                    None => return 0,
                },
                LD_H_IND => match load(x as usize + i.k as usize, 2) {
                    Some(v) => a = v,
                    None => return 0,
                },
                LDX_B_MSH => match load(i.k as usize, 1) {
                    Some(v) => x = 4 * (v & 0xf),
                    None => return 0,
                },
                LDX_MEM => x = m[i.k as usize],
                ST => m[i.k as usize] = a,
                XOR_X => a ^= x,
                MUL_K => a = a.wrapping_mul(i.k),
                RSH_K => a >>= i.k,
                TAX => x = a,
                RET_A => return a,
                RET_K => return i.k,
                JA => pc += i.k as usize,
                JEQ_K => pc += usize::from(if a == i.k { i.jt } else { i.jf }),
                JSET_K => pc += usize::from(if a & i.k != 0 { i.jt } else { i.jf }),
                other => panic!("opcode {other:#x} not modelled"),
            }
        }
    }

    fn ether_proto(pkt: &[u8]) -> u16 {
        if pkt[0] >> 4 == 4 {
            0x0800
        } else {
            0x86dd
        }
    }

    fn reversed_pairs() -> Vec<(Vec<u8>, Vec<u8>)> {
        let v6a = "2001:db8::1".parse().unwrap();
        let v6b = "2001:db8:77::2".parse().unwrap();
        let mut v = Vec::new();
        for i in 0..200u16 {
            let c = [192, 0, 2, (i % 250) as u8 + 1];
            let s = [203, 0, 113, (i * 7 % 250) as u8 + 1];
            v.push((
                ft::ipv4_tcp(c, 30000 + i, s, 443, 2, b""),
                ft::ipv4_tcp(s, 443, c, 30000 + i, 0x12, b"x"),
            ));
            v.push((
                ft::ipv6_udp(v6a, 4000 + i, v6b, 443),
                ft::ipv6_udp(v6b, 443, v6a, 4000 + i),
            ));
        }
        v.push((
            ft::ipv6_tcp_hbh(v6a, 1, v6b, 2),
            ft::ipv6_tcp_hbh(v6b, 2, v6a, 1),
        ));
        let mut frag = ft::ipv4_tcp([192, 0, 2, 1], 1, [203, 0, 113, 1], 2, 2, b"abcdefgh");
        frag[6] = 0x20;
        let mut frag_r = ft::ipv4_tcp([203, 0, 113, 1], 9, [192, 0, 2, 1], 9, 2, b"abcdefgh");
        frag_r[7] = 0x10;
        v.push((frag, frag_r));
        v
    }

    #[test]
    fn rust_hash_is_symmetric_on_reversed_tuples() {
        for (fwd, rev) in reversed_pairs() {
            let (f, r) = (parse_ip(&fwd).unwrap(), parse_ip(&rev).unwrap());
            assert_eq!(packet_hash(&f, &fwd), packet_hash(&r, &rev));
            for n in 1..=8 {
                assert_eq!(
                    worker_of(packet_hash(&f, &fwd), n),
                    worker_of(packet_hash(&r, &rev), n)
                );
            }
        }
    }

    #[test]
    fn bpf_program_equals_rust_hash_and_is_symmetric() {
        let prog = fanout_program();
        assert!(prog.len() < 100);
        for (fwd, rev) in reversed_pairs() {
            let hf = run(&prog, ether_proto(&fwd), &fwd);
            let hr = run(&prog, ether_proto(&rev), &rev);
            assert_eq!(hf, hr, "program not symmetric");
            assert_eq!(hf, packet_hash(&parse_ip(&fwd).unwrap(), &fwd));
        }
        assert_eq!(run(&prog, 0x0806, &[0; 28]), 0, "ARP goes to worker 0");
        assert_eq!(
            run(&prog, 0x0800, &[0x45; 10]),
            0,
            "truncated: kernel returns 0"
        );
    }

    #[test]
    fn hash_spreads_flows_over_workers() {
        let mut counts = [0usize; 4];
        for i in 0..4000u16 {
            let h = symmetric_hash(
                "192.0.2.10".parse().unwrap(),
                "203.0.113.5".parse().unwrap(),
                Some((20000 + i, 443)),
            );
            counts[worker_of(h, 4)] += 1;
        }
        for c in counts {
            assert!((700..1300).contains(&c), "unbalanced: {counts:?}");
        }
    }
}
