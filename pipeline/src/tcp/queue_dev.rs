//! An in-memory smoltcp device for tests and benches: packets in `rx` are
//! received, transmitted packets land in `tx`.
//!
//! It names nothing of this crate, so the unit tests, the intercept testkit
//! and the criterion benches all include this one file with `#[path]`.

use std::collections::VecDeque;

use smoltcp::phy::{Device, DeviceCapabilities, Medium, RxToken, TxToken};
use smoltcp::time::Instant;

/// A `Medium::Ip` device backed by two packet queues.
pub struct QueueDev {
    /// Packets the interface will receive, in order.
    pub rx: VecDeque<Vec<u8>>,
    /// Packets the interface transmitted.
    pub tx: Vec<Vec<u8>>,
    /// The link MTU it reports.
    pub mtu: usize,
}

impl QueueDev {
    /// An empty device with the given MTU.
    pub fn new(mtu: usize) -> QueueDev {
        QueueDev {
            rx: VecDeque::new(),
            tx: Vec::new(),
            mtu,
        }
    }
}

/// A received packet.
pub struct HostRx(Vec<u8>);

/// A slot for one transmitted packet.
pub struct HostTx<'a>(&'a mut Vec<Vec<u8>>);

impl RxToken for HostRx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl TxToken for HostTx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut b = vec![0u8; len];
        let r = f(&mut b);
        self.0.push(b);
        r
    }
}

impl Device for QueueDev {
    type RxToken<'a> = HostRx;
    type TxToken<'a> = HostTx<'a>;

    fn receive(&mut self, _: Instant) -> Option<(HostRx, HostTx<'_>)> {
        let p = self.rx.pop_front()?;
        Some((HostRx(p), HostTx(&mut self.tx)))
    }

    fn transmit(&mut self, _: Instant) -> Option<HostTx<'_>> {
        Some(HostTx(&mut self.tx))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut c = DeviceCapabilities::default();
        c.medium = Medium::Ip;
        c.max_transmission_unit = self.mtu;
        c
    }
}
