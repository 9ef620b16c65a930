//! The compiled scope table: which policy and scope, if any, selects a new TCP flow.
//!
//! The control plane hands over its scopes as a slice of [`ScopeSpec`] in
//! precedence order (policy order, then scope order, enabled policies only).
//! Compilation turns that into a hash map from exact source address to the
//! candidate scopes naming it, plus a list of scopes that accept any source;
//! each candidate then checks its source ports, destination networks and
//! destination ports with structures that cost O(1) or O(log n) per lookup:
//! merged, sorted port ranges (binary search) and destination networks
//! grouped by prefix length (one hash probe per distinct length). A SYN
//! therefore costs one hash probe plus a few candidate checks, independent of
//! how many scopes exist. The table is immutable; the pipeline swaps it whole
//! (see [`crate::Pipeline::set_scopes`]), so a lookup never sees half a reload.

use std::net::IpAddr;
use std::sync::Arc;

use hashbrown::{HashMap, HashSet};
use ipnet::IpNet;

/// One scope of one enabled policy, as the control plane describes it.
///
/// An empty list means "any" for that field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeSpec {
    /// Id of the policy the scope belongs to.
    pub policy_id: Arc<str>,
    /// Id of the scope within its policy.
    pub scope_id: Arc<str>,
    /// Exact client addresses.
    pub source_ips: Vec<IpAddr>,
    /// Inclusive client port ranges.
    pub source_ports: Vec<(u16, u16)>,
    /// Server networks.
    pub destinations: Vec<IpNet>,
    /// Inclusive server port ranges.
    pub destination_ports: Vec<(u16, u16)>,
}

/// The policy and scope that selected a flow.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ScopeMatch {
    /// Id of the selecting policy.
    pub policy_id: Arc<str>,
    /// Id of the selecting scope.
    pub scope_id: Arc<str>,
}

/// Inclusive port ranges, sorted and merged so a lookup is one binary search.
#[derive(Debug, Clone, Default)]
struct PortSet {
    /// Non-overlapping, non-adjacent, ascending.
    ranges: Vec<(u16, u16)>,
}

impl PortSet {
    fn new(input: &[(u16, u16)]) -> Self {
        let mut v: Vec<(u16, u16)> = input.iter().map(|&(a, b)| (a.min(b), a.max(b))).collect();
        v.sort_unstable();
        let mut ranges: Vec<(u16, u16)> = Vec::with_capacity(v.len());
        for (s, e) in v {
            match ranges.last_mut() {
                Some(last) if u32::from(s) <= u32::from(last.1) + 1 => last.1 = last.1.max(e),
                _ => ranges.push((s, e)),
            }
        }
        PortSet { ranges }
    }

    fn contains(&self, port: u16) -> bool {
        if self.ranges.is_empty() {
            return true;
        }
        // Index of the first range starting after `port`; the one before it
        // is the only candidate.
        let i = self.ranges.partition_point(|&(s, _)| s <= port);
        i > 0 && self.ranges[i - 1].1 >= port
    }
}

/// Destination networks grouped by prefix length.
#[derive(Debug, Clone, Default)]
struct NetSet {
    /// `(prefix_len, masked network addresses)`, longest prefix first.
    v4: Vec<(u8, HashSet<u32>)>,
    v6: Vec<(u8, HashSet<u128>)>,
    any: bool,
}

fn mask4(a: u32, len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        a & (u32::MAX << (32 - u32::from(len)))
    }
}

fn mask6(a: u128, len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        a & (u128::MAX << (128 - u32::from(len)))
    }
}

impl NetSet {
    fn new(nets: &[IpNet]) -> Self {
        let mut s = NetSet {
            any: nets.is_empty(),
            ..Default::default()
        };
        for n in nets {
            match n {
                IpNet::V4(n) => {
                    let len = n.prefix_len();
                    let key = mask4(u32::from(n.addr()), len);
                    match s.v4.iter_mut().find(|(l, _)| *l == len) {
                        Some((_, set)) => {
                            set.insert(key);
                        }
                        None => s.v4.push((len, HashSet::from_iter([key]))),
                    }
                }
                IpNet::V6(n) => {
                    let len = n.prefix_len();
                    let key = mask6(u128::from(n.addr()), len);
                    match s.v6.iter_mut().find(|(l, _)| *l == len) {
                        Some((_, set)) => {
                            set.insert(key);
                        }
                        None => s.v6.push((len, HashSet::from_iter([key]))),
                    }
                }
            }
        }
        s.v4.sort_by_key(|b| std::cmp::Reverse(b.0));
        s.v6.sort_by_key(|b| std::cmp::Reverse(b.0));
        s
    }

    fn contains(&self, ip: IpAddr) -> bool {
        if self.any {
            return true;
        }
        match ip {
            IpAddr::V4(a) => {
                let a = u32::from(a);
                self.v4
                    .iter()
                    .any(|(len, set)| set.contains(&mask4(a, *len)))
            }
            IpAddr::V6(a) => {
                let a = u128::from(a);
                self.v6
                    .iter()
                    .any(|(len, set)| set.contains(&mask6(a, *len)))
            }
        }
    }
}

/// One compiled scope.
#[derive(Debug, Clone)]
struct Compiled {
    matched: ScopeMatch,
    source_ports: PortSet,
    destinations: NetSet,
    destination_ports: PortSet,
}

impl Compiled {
    fn accepts(&self, sport: u16, dst: IpAddr, dport: u16) -> bool {
        self.destination_ports.contains(dport)
            && self.source_ports.contains(sport)
            && self.destinations.contains(dst)
    }
}

/// The compiled, immutable scope table.
#[derive(Debug, Clone, Default)]
pub struct ScopeTable {
    scopes: Vec<Compiled>,
    /// Source address -> indices into `scopes`, ascending (= precedence).
    by_source: HashMap<IpAddr, Vec<u32>>,
    /// Scopes without a source list, ascending.
    any_source: Vec<u32>,
}

impl ScopeTable {
    /// Compiles scopes given in precedence order (the first match wins).
    pub fn compile(specs: &[ScopeSpec]) -> ScopeTable {
        let mut t = ScopeTable::default();
        for (i, spec) in specs.iter().enumerate() {
            let idx = i as u32;
            t.scopes.push(Compiled {
                matched: ScopeMatch {
                    policy_id: spec.policy_id.clone(),
                    scope_id: spec.scope_id.clone(),
                },
                source_ports: PortSet::new(&spec.source_ports),
                destinations: NetSet::new(&spec.destinations),
                destination_ports: PortSet::new(&spec.destination_ports),
            });
            if spec.source_ips.is_empty() {
                t.any_source.push(idx);
            }
            for ip in &spec.source_ips {
                let list = t.by_source.entry(canonical(*ip)).or_default();
                // A source listed twice in one scope is one candidate.
                if list.last() != Some(&idx) {
                    list.push(idx);
                }
            }
        }
        t
    }

    /// An empty table: nothing is in scope.
    pub fn empty() -> ScopeTable {
        ScopeTable::default()
    }

    /// Number of compiled scopes.
    pub fn len(&self) -> usize {
        self.scopes.len()
    }

    /// Whether the table has no scopes.
    pub fn is_empty(&self) -> bool {
        self.scopes.is_empty()
    }

    /// Returns the first scope, in precedence order, that selects the flow.
    pub fn lookup(&self, src: IpAddr, sport: u16, dst: IpAddr, dport: u16) -> Option<&ScopeMatch> {
        let src = canonical(src);
        let dst = canonical(dst);
        let exact: &[u32] = self.by_source.get(&src).map_or(&[], |v| v.as_slice());
        let any = self.any_source.as_slice();
        // Merge the two ascending candidate lists so precedence is slice order.
        let (mut i, mut j) = (0, 0);
        loop {
            let next = match (exact.get(i), any.get(j)) {
                (Some(&a), Some(&b)) if a < b => {
                    i += 1;
                    a
                }
                (_, Some(&b)) => {
                    j += 1;
                    b
                }
                (Some(&a), None) => {
                    i += 1;
                    a
                }
                (None, None) => return None,
            };
            let c = &self.scopes[next as usize];
            if c.accepts(sport, dst, dport) {
                return Some(&c.matched);
            }
        }
    }
}

/// Maps IPv4-mapped IPv6 addresses to IPv4 so both spellings match alike.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => ip,
        },
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(
        p: &str,
        s: &str,
        src: &[&str],
        sp: &[(u16, u16)],
        dst: &[&str],
        dp: &[(u16, u16)],
    ) -> ScopeSpec {
        ScopeSpec {
            policy_id: p.into(),
            scope_id: s.into(),
            source_ips: src.iter().map(|a| a.parse().unwrap()).collect(),
            source_ports: sp.to_vec(),
            destinations: dst.iter().map(|a| a.parse().unwrap()).collect(),
            destination_ports: dp.to_vec(),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn ids(m: Option<&ScopeMatch>) -> Option<(&str, &str)> {
        m.map(|m| (&*m.policy_id, &*m.scope_id))
    }

    #[test]
    fn ipv4_exact_source_ports_and_cidr() {
        let t = ScopeTable::compile(&[spec(
            "corp",
            "web",
            &["192.0.2.10"],
            &[(1024, 65535)],
            &["203.0.113.0/25"],
            &[(443, 443), (8443, 8443)],
        )]);
        let hit = |s, sp, d, dp| ids(t.lookup(ip(s), sp, ip(d), dp));
        assert_eq!(
            hit("192.0.2.10", 40000, "203.0.113.5", 443),
            Some(("corp", "web"))
        );
        assert_eq!(
            hit("192.0.2.10", 40000, "203.0.113.127", 8443),
            Some(("corp", "web"))
        );
        assert_eq!(
            hit("192.0.2.11", 40000, "203.0.113.5", 443),
            None,
            "other source"
        );
        assert_eq!(
            hit("192.0.2.10", 80, "203.0.113.5", 443),
            None,
            "source port"
        );
        assert_eq!(
            hit("192.0.2.10", 40000, "203.0.113.128", 443),
            None,
            "outside /25"
        );
        assert_eq!(
            hit("192.0.2.10", 40000, "203.0.113.5", 444),
            None,
            "dest port"
        );
    }

    #[test]
    fn ipv6_and_mapped_addresses() {
        let t = ScopeTable::compile(&[
            spec(
                "p",
                "v6",
                &["2001:db8::10"],
                &[],
                &["2001:db8:ff::/48"],
                &[(443, 443)],
            ),
            spec("p", "v4", &["192.0.2.1"], &[], &["203.0.113.0/24"], &[]),
        ]);
        assert_eq!(
            ids(t.lookup(ip("2001:db8::10"), 5, ip("2001:db8:ff:1::1"), 443)),
            Some(("p", "v6"))
        );
        assert_eq!(
            t.lookup(ip("2001:db8::10"), 5, ip("2001:db8:fe::1"), 443),
            None
        );
        assert_eq!(
            ids(t.lookup(ip("::ffff:192.0.2.1"), 5, ip("::ffff:203.0.113.9"), 1)),
            Some(("p", "v4"))
        );
        // An IPv4 source never matches an IPv6 destination list.
        assert_eq!(
            t.lookup(ip("2001:db8::10"), 5, ip("203.0.113.1"), 443),
            None
        );
    }

    #[test]
    fn ranges_merge_and_bounds() {
        let ps = PortSet::new(&[(10, 20), (21, 30), (5, 7), (100, 90), (25, 26)]);
        assert_eq!(ps.ranges, vec![(5, 7), (10, 30), (90, 100)]);
        for (p, want) in [
            (4, false),
            (5, true),
            (7, true),
            (8, false),
            (10, true),
            (30, true),
            (31, false),
            (90, true),
            (100, true),
            (101, false),
            (0, false),
            (65535, false),
        ] {
            assert_eq!(ps.contains(p), want, "port {p}");
        }
        let full = PortSet::new(&[(0, 65535)]);
        assert!(full.contains(0) && full.contains(65535));
        assert!(PortSet::new(&[]).contains(1234));
    }

    #[test]
    fn first_spec_in_slice_order_wins() {
        let t = ScopeTable::compile(&[
            spec(
                "a",
                "narrow",
                &["192.0.2.1"],
                &[],
                &["203.0.113.5/32"],
                &[(443, 443)],
            ),
            spec("b", "any-src", &[], &[], &["203.0.113.0/24"], &[(443, 443)]),
            spec("c", "wide", &["192.0.2.1", "192.0.2.2"], &[], &[], &[]),
        ]);
        let look = |s, d, dp| ids(t.lookup(ip(s), 1000, ip(d), dp));
        assert_eq!(look("192.0.2.1", "203.0.113.5", 443), Some(("a", "narrow")));
        assert_eq!(
            look("192.0.2.1", "203.0.113.6", 443),
            Some(("b", "any-src"))
        );
        assert_eq!(look("192.0.2.1", "203.0.113.6", 80), Some(("c", "wide")));
        assert_eq!(
            look("192.0.2.2", "203.0.113.6", 443),
            Some(("b", "any-src"))
        );
        assert_eq!(
            look("192.0.2.9", "203.0.113.6", 443),
            Some(("b", "any-src"))
        );
        assert_eq!(look("192.0.2.9", "203.0.113.6", 80), None);
        // Reversing the order changes the winner.
        let t2 = ScopeTable::compile(&[
            spec("c", "wide", &["192.0.2.1"], &[], &[], &[]),
            spec(
                "a",
                "narrow",
                &["192.0.2.1"],
                &[],
                &["203.0.113.5/32"],
                &[(443, 443)],
            ),
        ]);
        assert_eq!(
            ids(t2.lookup(ip("192.0.2.1"), 1, ip("203.0.113.5"), 443)),
            Some(("c", "wide"))
        );
    }

    #[test]
    fn mixed_prefix_lengths() {
        let t = ScopeTable::compile(&[spec(
            "p",
            "s",
            &["192.0.2.1"],
            &[],
            &[
                "203.0.113.0/28",
                "203.0.113.64/26",
                "198.51.100.7/32",
                "0.0.0.0/0",
            ],
            &[(443, 443)],
        )]);
        assert!(
            t.lookup(ip("192.0.2.1"), 1, ip("10.9.8.7"), 443).is_some(),
            "0/0 matches all"
        );
        let t = ScopeTable::compile(&[spec(
            "p",
            "s",
            &["192.0.2.1"],
            &[],
            &["203.0.113.0/28", "203.0.113.64/26", "198.51.100.7/32"],
            &[],
        )]);
        for (d, want) in [
            ("203.0.113.15", true),
            ("203.0.113.16", false),
            ("203.0.113.100", true),
            ("203.0.113.128", false),
            ("198.51.100.7", true),
            ("198.51.100.8", false),
        ] {
            assert_eq!(
                t.lookup(ip("192.0.2.1"), 1, ip(d), 1).is_some(),
                want,
                "{d}"
            );
        }
    }

    #[test]
    fn empty_table_selects_nothing() {
        let t = ScopeTable::empty();
        assert!(t.is_empty());
        assert_eq!(t.lookup(ip("192.0.2.1"), 1, ip("203.0.113.1"), 443), None);
    }
}
