#!/usr/bin/env python3
"""Writes the packet seeds of the `tcp_segment` target (also read by `frame`):
IPv4 and IPv6 TCP segments of one connection, 192.0.2.10:40000 <->
203.0.113.5:443 (2001:db8:1::10 <-> 2001:db8:2::5), the data segments
carrying the start of a captured ClientHello from pipeline/src/tls/testdata
(the files of ../shared/testdata/client-hellos).

Run from the repository root: python3 fuzz/seeds/make_packet_seeds.py
"""
import ipaddress
import os
import struct

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "fuzz", "seeds", "tcp_segment")
HELLOS = os.path.join(ROOT, "pipeline", "src", "tls", "testdata")

C4, S4 = "192.0.2.10", "203.0.113.5"
C6, S6 = "2001:db8:1::10", "2001:db8:2::5"
FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10
SYN_OPTS = bytes([2, 4, 0x05, 0xB4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7])


def csum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s > 0xFFFF:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


def tcp(src, dst, sport, dport, seq, ack, flags, opts=b"", payload=b"", v6_ext=None):
    opts += b"\0" * (-len(opts) % 4)
    hdr = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, (20 + len(opts)) // 4 << 4,
                      flags, 64240, 0, 0) + opts
    seg = hdr + payload
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    if s.version == 4:
        pseudo = s.packed + d.packed + struct.pack("!BBH", 0, 6, len(seg))
    else:
        pseudo = s.packed + d.packed + struct.pack("!IxxxB", len(seg), 6)
    seg = seg[:16] + struct.pack("!H", csum(pseudo + seg)) + seg[18:]
    if s.version == 4:
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(seg), 0, 0x4000, 64, 6, 0,
                         s.packed, d.packed)
        ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
        return ip + seg
    if v6_ext is None:
        return struct.pack("!IHBB", 6 << 28, len(seg), 6, 64) + s.packed + d.packed + seg
    # A hop-by-hop header (PadN) in front of TCP.
    ext = bytes([6, 0, 1, 4, 0, 0, 0, 0])
    return (struct.pack("!IHBB", 6 << 28, len(ext) + len(seg), 0, 64) + s.packed + d.packed
            + ext + seg)


def main():
    os.makedirs(OUT, exist_ok=True)
    hello = open(os.path.join(HELLOS, "curl.bin"), "rb").read()
    chromium = open(os.path.join(HELLOS, "chromium.bin"), "rb").read()
    seeds = {
        "v4-syn": tcp(C4, S4, 40000, 443, 4096, 0, SYN, SYN_OPTS),
        "v4-synack": tcp(S4, C4, 443, 40000, 77, 4097, SYN | ACK, SYN_OPTS),
        "v4-ack": tcp(C4, S4, 40000, 443, 4097, 78, ACK),
        "v4-hello": tcp(C4, S4, 40000, 443, 4097, 78, PSH | ACK, payload=hello),
        "v4-chromium-part": tcp(C4, S4, 40000, 443, 4097, 78, ACK, payload=chromium[:1400]),
        "v4-fin": tcp(S4, C4, 443, 40000, 78, 4097 + len(hello), FIN | ACK),
        "v4-rst": tcp(C4, S4, 40000, 443, 4097, 0, RST),
        "v6-syn": tcp(C6, S6, 40000, 443, 4096, 0, SYN, SYN_OPTS),
        "v6-hello": tcp(C6, S6, 40000, 443, 4097, 78, PSH | ACK, payload=hello),
        "v6-hopbyhop": tcp(C6, S6, 40000, 443, 4097, 78, ACK, v6_ext=True),
    }
    for name, data in seeds.items():
        with open(os.path.join(OUT, name + ".bin"), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    main()
