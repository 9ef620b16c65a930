//! How the packets an intercepted flow makes are framed toward each side.
//!
//! A flow's legs produce bare IP packets; what goes in front of them is what
//! the flow's own frames came with, kept per flow and direction:
//!
//! - TUN: nothing.
//! - AF_PACKET: the Ethernet header of the client's SYN, as it was toward the
//!   server and with its MACs swapped toward the client.
//! - GENEVE: the load balancer's encapsulation of the client's SYN (outer
//!   addresses swapped, so it returns to the load balancer) toward
//!   the server; toward the client that of the first packet the server sent
//!   through the load balancer, until then the SYN's.

use crate::api::TunnelInfo;
use crate::dispatch::Port;
use crate::geneve::{Encap, Tunnel};

/// What a received packet came with, borrowed from its frame.
#[derive(Debug, Clone, Copy)]
pub enum Received<'a> {
    /// A bare IP packet (TUN).
    Ip,
    /// An Ethernet frame's MACs (destination, source).
    Ethernet([u8; 12]),
    /// A GENEVE frame as received from its load balancer: its
    /// encapsulation and where the parts are.
    Geneve(&'a [u8], Tunnel),
}

/// The framing of one flow's packets, owned by the flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Framing {
    /// Bare IP packets (TUN).
    Ip,
    /// The MACs of the client's SYN frame (destination, source).
    Ethernet([u8; 12]),
    /// The load balancer's encapsulation per direction.
    Geneve {
        /// Toward the server (the client's SYN's).
        to_server: Encap,
        /// Toward the client, once the server sent something.
        to_client: Option<Encap>,
        /// The tunnel, for the flow's log records.
        info: TunnelInfo,
    },
}

impl Framing {
    /// The framing of a flow whose first packet (the client's SYN) came with `r`.
    pub fn of(r: Received<'_>) -> Framing {
        match r {
            Received::Ip => Framing::Ip,
            Received::Ethernet(m) => Framing::Ethernet(m),
            Received::Geneve(frame, t) => match Encap::of(frame, &t) {
                Some(to_server) => Framing::Geneve {
                    to_server,
                    to_client: None,
                    info: TunnelInfo {
                        vni: t.vni,
                        peer: t.peer.into(),
                    },
                },
                None => Framing::Ip,
            },
        }
    }

    /// Takes note of a packet from the server: its encapsulation becomes
    /// the one toward the client (the first such packet's; the load
    /// balancer's header of a direction does not change within a flow).
    pub fn learn_from_server(&mut self, r: Received<'_>) {
        if let (
            Framing::Geneve {
                to_client: slot @ None,
                ..
            },
            Received::Geneve(frame, t),
        ) = (self, r)
        {
            *slot = Encap::of(frame, &t);
        }
    }

    /// The tunnel a flow was seen through, if any.
    pub fn tunnel(&self) -> Option<TunnelInfo> {
        match self {
            Framing::Geneve { info, .. } => Some(*info),
            _ => None,
        }
    }

    /// Bytes put in front of a packet toward `side`.
    pub fn header_len(&self, side: Port) -> usize {
        match self {
            Framing::Ip => 0,
            Framing::Ethernet(_) => 14,
            Framing::Geneve { .. } => self.encap(side).map_or(0, Encap::len),
        }
    }

    /// The encapsulation toward `side` (GENEVE only): the server's own
    /// toward the client once it is known, the client SYN's otherwise.
    fn encap(&self, side: Port) -> Option<&Encap> {
        match (self, side) {
            (Framing::Geneve { to_server, .. }, Port::Wan) => Some(to_server),
            (
                Framing::Geneve {
                    to_server,
                    to_client,
                    ..
                },
                Port::Lan,
            ) => Some(to_client.as_ref().unwrap_or(to_server)),
            _ => None,
        }
    }

    /// Whether the packets go inside a tunnel. Then consecutive TCP
    /// segments are not merged into super-frames (the kernel cannot segment
    /// TCP inside UDP from a packet socket's offload header) and checksums
    /// are complete (see [`crate::geneve::complete_checksum`]).
    pub fn tunnelled(&self) -> bool {
        matches!(self, Framing::Geneve { .. })
    }

    /// Appends `packet` framed toward `side` to `out`.
    pub fn write(&self, side: Port, packet: &[u8], out: &mut Vec<u8>) {
        match self {
            Framing::Ip => out.extend_from_slice(packet),
            Framing::Ethernet(m) => {
                match side {
                    // Toward the server: as the client's SYN frame was addressed.
                    Port::Wan => out.extend_from_slice(m),
                    // Toward the client: from the gateway's MAC to the client's.
                    Port::Lan => {
                        out.extend_from_slice(&m[6..12]);
                        out.extend_from_slice(&m[0..6]);
                    }
                }
                let ethertype: u16 = if packet.first().map(|b| b >> 4) == Some(6) {
                    0x86dd
                } else {
                    0x0800
                };
                out.extend_from_slice(&ethertype.to_be_bytes());
                out.extend_from_slice(packet);
            }
            Framing::Geneve { .. } => {
                if let Some(e) = self.encap(side) {
                    e.write(packet, out);
                }
            }
        }
    }
}
