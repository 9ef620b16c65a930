//! Warnings: settings that are valid but probably not what the operator wants.

use std::collections::HashSet;
use std::hash::Hash;
use std::net::IpAddr;

use super::*;

/// Scope pairs are compared for shadowing only up to this many scopes, so
/// the check stays cheap (it is quadratic).
const MAX_SCOPES_FOR_SHADOW_CHECK: usize = 1_000;

fn at(p: &Policy, s: Option<&Scope>) -> String {
    match s {
        Some(s) => format!("policy \"{}\" scope #{} \"{}\"", p.id, s.index, s.id),
        None => format!("policy \"{}\"", p.id),
    }
}

fn first_duplicate<T: Eq + Hash + Copy>(items: &[T]) -> Option<(T, usize)> {
    let mut seen = HashSet::with_capacity(items.len());
    let mut dup = None;
    let mut count = 0usize;
    for &i in items {
        if !seen.insert(i) {
            count += 1;
            dup.get_or_insert(i);
        }
    }
    dup.map(|d| (d, count))
}

/// Merged, sorted port intervals.
fn merged(ranges: &[PortRange]) -> Vec<(u32, u32)> {
    let mut v: Vec<(u32, u32)> = ranges
        .iter()
        .map(|r| (u32::from(r.start), u32::from(r.end)))
        .collect();
    v.sort_unstable();
    let mut out: Vec<(u32, u32)> = Vec::with_capacity(v.len());
    for (s, e) in v {
        match out.last_mut() {
            Some(last) if s <= last.1 + 1 => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

fn ports_covered(outer: &[(u32, u32)], inner: &[PortRange]) -> bool {
    inner.iter().all(|r| {
        outer
            .iter()
            .any(|&(s, e)| s <= u32::from(r.start) && u32::from(r.end) <= e)
    })
}

/// Whether every connection `b` selects is selected by `a` first.
fn shadows(a: &Scope, a_src: &HashSet<IpAddr>, b: &Scope) -> bool {
    b.source_ips.iter().all(|ip| a_src.contains(ip))
        && ports_covered(&merged(&a.source_ports), &b.source_ports)
        && b.destinations
            .iter()
            .all(|bn| a.destinations.iter().any(|an| an.contains(bn)))
        && ports_covered(&merged(&a.destination_ports), &b.destination_ports)
}

pub(super) fn warnings(c: &Config) -> Vec<String> {
    let mut w = Vec::new();
    if !c.faults.is_none() {
        w.push(
            "[faults] is set: frames are dropped, duplicated, reordered, corrupted or delayed on purpose; a lab setting, never for production".to_string(),
        );
    }
    if c.policies.is_empty() {
        w.push("no [[policy]] is configured: every connection passes uninspected".to_string());
    }
    for p in c.policies.iter() {
        if !p.enabled {
            w.push(format!(
                "{} is disabled: its scopes select no connection until it is enabled",
                at(p, None)
            ));
        }
        if p.scopes.is_empty() {
            w.push(format!(
                "{} has no scope: it selects no connection",
                at(p, None)
            ));
        }
        if let Some(k) = &p.keylog {
            w.push(format!(
                "{}: keylog is on: the TLS secrets of both legs of its inspected connections are written to {}; anyone who can read that file can decrypt captured traffic",
                at(p, None),
                k.display()
            ));
        }
        if p.tls13 == PassOrInspect::Passthrough {
            w.push(format!(
                "{}: tls13 = \"passthrough\": every client offering TLS 1.3 (all current browsers, curl, openssl) passes uninspected; set tls13 = \"inspect\" to inspect them",
                at(p, None)
            ));
        }
        if p.ech == PassOrInspect::Passthrough {
            w.push(format!(
                "{}: ech = \"passthrough\": Chrome and Firefox put a GREASE ECH extension in nearly every ClientHello, so their traffic passes uninspected; set ech = \"inspect\" (see the reference config)",
                at(p, None)
            ));
        }
        if p.exclude_sni.iter().any(|g| g.as_str() == "*") {
            w.push(format!(
                "{}: exclude_sni contains \"*\": no connection with SNI is ever inspected",
                at(p, None)
            ));
        }
        for s in &p.scopes {
            let dups = [
                (
                    "source_ips",
                    first_duplicate(&s.source_ips).map(|(d, n)| (d.to_string(), n)),
                ),
                (
                    "source_ports",
                    first_duplicate(&s.source_ports).map(|(d, n)| (d.to_string(), n)),
                ),
                (
                    "destinations",
                    first_duplicate(&s.destinations).map(|(d, n)| (d.to_string(), n)),
                ),
                (
                    "destination_ports",
                    first_duplicate(&s.destination_ports).map(|(d, n)| (d.to_string(), n)),
                ),
            ];
            for (field, dup) in dups {
                if let Some((first, n)) = dup {
                    w.push(format!(
                        "{}: {field} has {n} duplicate entr{} (first: {first}); duplicates still count against the quota",
                        at(p, Some(s)),
                        if n == 1 { "y" } else { "ies" }
                    ));
                }
            }
        }
    }

    let all: Vec<(&Policy, &Scope)> = c.scopes().collect();
    if all.len() <= MAX_SCOPES_FOR_SHADOW_CHECK {
        let src_sets: Vec<HashSet<IpAddr>> = all
            .iter()
            .map(|(_, s)| s.source_ips.iter().copied().collect())
            .collect();
        for (j, (pb, b)) in all.iter().enumerate() {
            // A disabled policy's scopes do not select flows, so they shadow nothing.
            let by = all[..j]
                .iter()
                .zip(&src_sets)
                .find(|((pa, a), a_src)| pa.enabled && shadows(a, a_src, b));
            if let Some(((pa, a), _)) = by {
                w.push(format!(
                    "{} is shadowed entirely by {}, which comes first: it never selects a connection",
                    at(pb, Some(b)),
                    at(pa, Some(a))
                ));
            }
        }
    }

    let mut catch_all = None;
    for (i, r) in c.webfilter.iter().enumerate() {
        if let Some(first) = catch_all {
            w.push(format!(
                "webfilter.rule #{} is never reached: rule #{first} matches every request",
                i + 1
            ));
        } else if r.host.as_str() == "*" && r.path == "*" && r.methods.is_empty() {
            catch_all = Some(i + 1);
        }
    }
    for (i, r) in c.appcontrol.rules.iter().enumerate() {
        let earlier = c.appcontrol.rules[..i]
            .iter()
            .position(|e| e.app == r.app && (e.action.is_none() || e.action == r.action));
        if let Some(e) = earlier {
            w.push(format!(
                "appcontrol.rule #{} is never reached: rule #{} matches the same app and action first",
                i + 1,
                e + 1
            ));
        }
    }
    if let Some(m) = c.appliance.metrics {
        if !m.ip().is_loopback() {
            w.push(format!(
                "appliance.metrics listens on {m}, not a loopback address: the metrics are reachable from the network"
            ));
        }
    }
    if let Some(console) = &c.console {
        if !console.listen.ip().is_loopback() {
            w.push(format!(
                "console.listen is {}, not a loopback address: the console's login page is reachable from the network",
                console.listen
            ));
        }
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pr(start: u16, end: u16) -> PortRange {
        PortRange { start, end }
    }

    #[test]
    fn adjacent_ranges_cover_a_range_spanning_both() {
        let outer = merged(&[pr(1024, 65535), pr(0, 1023)]);
        assert_eq!(outer, vec![(0, 65535)]);
        assert!(ports_covered(&outer, &[pr(1000, 2000)]));
        let gap = merged(&[pr(0, 99), pr(101, 200)]);
        assert!(!ports_covered(&gap, &[pr(50, 150)]));
        assert!(ports_covered(&gap, &[pr(101, 150), pr(0, 0)]));
    }

    #[test]
    fn duplicates_are_counted() {
        assert_eq!(first_duplicate(&[1, 2, 1, 3, 2, 1]), Some((1, 3)));
        assert_eq!(first_duplicate(&[1, 2, 3]), None);
    }
}
