//! Transparent TCP termination of intercepted connections, sans-IO.
//!
//! A [`Splice`] splices one intercepted connection into two TCP
//! legs, each a smoltcp socket in its own tiny `Medium::Ip` interface with
//! AnyIP on (a shared `SocketSet` would cost O(sockets) per packet):
//!
//! ```text
//!  client ──(client leg: we are the server)──▶ [flow] ──(server leg: we are the client)──▶ server
//! ```
//!
//! Every packet toward the client carries the server's address and port as
//! its source, every packet toward the server the client's: no address of the
//! appliance ever appears on the wire. The server leg connects first; the
//! client's SYN is held ("pause SYN-ACK") and answered only once the server
//! has answered. A server RST is mirrored to the client at once as an RST for
//! its SYN; a silent server leaves the client unanswered until it gives up,
//! as it would without us. The SYN toward the server mirrors the client's MSS
//! and timestamps option; smoltcp always offers window scaling and SACK.
//!
//! It is built quinn-style: no clock, no sockets, no allocation per packet on
//! the steady path beyond the packet itself. The owner (the worker, and the
//! TLS state machine above it) drives it.
//!
//! # Call order
//!
//! 1. On a client SYN selected for interception:
//!    [`Splice::from_syn`]`(packet, &cfg, random_seed, now)`.
//! 2. For every IP packet of the flow: [`handle_packet`](Splice::handle_packet)`(from, packet, now)`.
//! 3. When the instant from [`poll_timeout`](Splice::poll_timeout)
//!    has passed: [`handle_timeout`](Splice::handle_timeout)`(now)`.
//! 4. Stream work, once [`FlowEvent::Connected`] was seen: `recv`/`peek`/`send`/
//!    [`splice`](Splice::splice)/`close`/`abort` on either [`Leg`].
//! 5. [`poll_transmit`](Splice::poll_transmit)`(now)` until `None`,
//!    writing each packet toward its [`Transmit::side`] (re-applying that
//!    side's L2 header).
//! 6. [`poll_event`](Splice::poll_event) until `None`, reacting to
//!    `Finished`/`Reset` (half-close / abort the other leg, then back to 4).
//! 7. Re-arm the timer with `poll_timeout()`; drop the flow when
//!    [`is_finished`](Splice::is_finished).
//!
//! Steps 4–6 may repeat; anything that changes a socket (a packet, a read
//! that opens the window, a write, a close) must be followed by step 5.
//!
//! # Memory
//!
//! smoltcp buffers are fixed-size rings allocated up front, so a flow holds
//! `2 × (rx_buffer + tx_buffer)` bytes plus about 3 KiB of interface and
//! socket state (see [`Splice::memory_bytes`]); the client leg's
//! half is only allocated once the server answered, so a SYN toward a silent
//! host costs one leg. The rx buffer is also the largest window a leg
//! advertises, so it bounds throughput at window/RTT. Measured with 10,000
//! idle established flows (`TCP_BENCH_MEMORY` in `benches/tcp.rs`): 35.7 KB
//! RSS per flow at 8 KiB buffers, 68.4 KB at the default 16 KiB, 133.9 KB at
//! 32 KiB. The 16 KiB default leaves ~28 KiB for the two TLS legs within the
//! 96 KiB-per-connection target; operators trading memory for long-RTT
//! throughput raise `tcp_buffer_bytes`.

pub(crate) mod checksum;
mod leg;
pub mod release;
pub mod segment;
mod splice;

pub use checksum::fill_checksums;
pub use release::{Release, Rewrite, TcpFacts};
pub use segment::{PacketError, Segment};
pub use splice::{FlowConfig, FlowError, FlowEvent, Leg, Phase, Splice, StreamError, Transmit};

#[cfg(test)]
pub(crate) mod queue_dev;
#[cfg(test)]
mod tests;
