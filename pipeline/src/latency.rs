//! Latency the appliance adds, as histograms (DESIGN.md §7, §9).
//!
//! Each intercepted flow measures, in its own sans-IO time: how long each TCP
//! leg's handshake took (the server leg: our SYN until the server's SYN-ACK;
//! the client leg: our SYN-ACK until the client's ACK), and for each
//! direction the time from the first byte in to the first byte out (for an
//! inspected flow that includes the decision and the second leg's TLS
//! start). A worker records a flow's values when the flow ends, into
//! histograms of its own behind a lock that only the metrics scrape also
//! takes, so the packet path never waits on another thread; the scrape
//! merges the workers' histograms.

use std::time::Duration;

use hdrhistogram::Histogram;

/// What one flow measured; `None` where the flow never got that far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlowTimings {
    /// Server leg: SYN sent until SYN-ACK received.
    pub server_handshake: Option<Duration>,
    /// Client leg: SYN-ACK sent until the client's ACK.
    pub client_handshake: Option<Duration>,
    /// First byte from the client until the first byte toward the server.
    pub to_server: Option<Duration>,
    /// First byte from the server until the first byte toward the client.
    pub to_client: Option<Duration>,
}

/// Histograms of microseconds, from 1 µs to 10 minutes, 3 significant digits.
#[derive(Debug, Clone)]
pub struct Latency {
    /// Server-leg handshakes.
    pub server_handshake: Histogram<u64>,
    /// Client-leg handshakes.
    pub client_handshake: Histogram<u64>,
    /// Added latency, client to server.
    pub to_server: Histogram<u64>,
    /// Added latency, server to client.
    pub to_client: Histogram<u64>,
}

const MAX_MICROS: u64 = 600_000_000;

fn histogram() -> Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts.
    Histogram::new_with_bounds(1, MAX_MICROS, 3).unwrap_or_else(|_| Histogram::new(3).unwrap())
}

impl Default for Latency {
    fn default() -> Self {
        Latency {
            server_handshake: histogram(),
            client_handshake: histogram(),
            to_server: histogram(),
            to_client: histogram(),
        }
    }
}

fn record(h: &mut Histogram<u64>, d: Option<Duration>) {
    if let Some(d) = d {
        let us = u64::try_from(d.as_micros()).unwrap_or(MAX_MICROS);
        h.saturating_record(us.clamp(1, MAX_MICROS));
    }
}

impl Latency {
    /// Adds one flow's measurements.
    pub fn record(&mut self, t: &FlowTimings) {
        record(&mut self.server_handshake, t.server_handshake);
        record(&mut self.client_handshake, t.client_handshake);
        record(&mut self.to_server, t.to_server);
        record(&mut self.to_client, t.to_client);
    }

    /// Adds another set of histograms (another worker's) to these.
    pub fn merge(&mut self, o: &Latency) {
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.server_handshake.add(&o.server_handshake);
        let _ = self.client_handshake.add(&o.client_handshake);
        let _ = self.to_server.add(&o.to_server);
        let _ = self.to_client.add(&o.to_client);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_merges() {
        let mut a = Latency::default();
        a.record(&FlowTimings {
            server_handshake: Some(Duration::from_micros(50)),
            client_handshake: None,
            to_server: Some(Duration::from_millis(2)),
            to_client: Some(Duration::from_micros(30)),
        });
        let mut b = Latency::default();
        b.record(&FlowTimings {
            server_handshake: Some(Duration::from_micros(150)),
            ..FlowTimings::default()
        });
        a.merge(&b);
        assert_eq!(a.server_handshake.len(), 2);
        assert_eq!(a.client_handshake.len(), 0);
        assert!(a.to_server.value_at_quantile(0.5) >= 1990);
        assert!(a.server_handshake.max() >= 149);
    }
}
