//! The per-connection decision of DESIGN.md §4: pass, block or inspect.
//!
//! A pure function over the peeked ClientHello and a small policy struct, so
//! the table can be tested row by row without a network. The control plane
//! maps its configuration onto [`TlsPolicy`]; the data plane never sees TOML.
//!
//! Rows are evaluated in the order of the design table and the first row that
//! applies decides. A row whose setting is "inspect" (`ech`, `tls13`,
//! `no_sni`) does not apply: it lets the later rows decide, so an inspected
//! flow always logs `inspected`, and an ECH hello to an excluded name is still
//! `excluded`. The reasons `ech`, `tls13` and `no_sni` therefore always come
//! with a pass.

use crate::hostglob::HostGlob;
use crate::reason::Reason;
use crate::tls::client_hello::{ClientHello, TLS12};

/// A setting whose choices are relaying untouched or refusing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PassOrBlock {
    /// Relay the original bytes unchanged.
    #[default]
    Pass,
    /// Refuse the connection.
    Block,
}

/// A setting whose choices are relaying untouched or inspecting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PassOrInspect {
    /// Relay the original bytes unchanged.
    #[default]
    Pass,
    /// Terminate both legs and inspect the plaintext.
    Inspect,
}

/// The decision settings of one policy.
#[derive(Debug, Clone, Default)]
pub struct TlsPolicy {
    /// In-scope TCP whose first bytes are not a TLS ClientHello.
    pub non_tls: PassOrBlock,
    /// Hellos carrying an encrypted_client_hello extension.
    pub ech: PassOrInspect,
    /// Server names never decrypted.
    pub exclude_sni: Vec<HostGlob>,
    /// Hellos offering nothing newer than TLS 1.1.
    pub legacy_tls: PassOrBlock,
    /// Hellos offering TLS 1.3.
    pub tls13: PassOrInspect,
    /// Hellos without a server name.
    pub no_sni: PassOrInspect,
    /// New connections beyond the memory budget or the half-open cap
    /// (DESIGN.md §12): forwarded untouched or refused with a reset.
    pub on_overload: PassOrBlock,
}

/// What to do with the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Relay the original bytes, ClientHello included, unchanged.
    Pass,
    /// Refuse: TLS alert or TCP reset.
    Block,
    /// Terminate and inspect.
    Inspect {
        /// Whether TLS 1.3 may be negotiated on the legs (else TLS 1.2 only).
        tls13: bool,
    },
}

/// The outcome of [`decide`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// What to do.
    pub action: Action,
    /// Why, for the log.
    pub reason: Reason,
}

fn pass_or_block(s: PassOrBlock, reason: Reason) -> Decision {
    let action = match s {
        PassOrBlock::Pass => Action::Pass,
        PassOrBlock::Block => Action::Block,
    };
    Decision { action, reason }
}

/// Decides an in-scope connection from its peeked ClientHello.
///
/// `hello` is `None` when the peek said the bytes are not TLS. `in_bypass`
/// is asked about (SNI, destination) only when the table reaches that row,
/// so the shared cache's lock is taken only when it matters.
pub fn decide(
    hello: Option<&ClientHello>,
    policy: &TlsPolicy,
    in_bypass: impl FnOnce(Option<&str>) -> bool,
) -> Decision {
    let Some(h) = hello else {
        return pass_or_block(policy.non_tls, Reason::NonTls);
    };
    let pass = |reason| Decision {
        action: Action::Pass,
        reason,
    };
    if h.ech && policy.ech == PassOrInspect::Pass {
        return pass(Reason::Ech);
    }
    if let Some(sni) = h.sni.as_deref() {
        if policy.exclude_sni.iter().any(|g| g.matches(sni)) {
            return pass(Reason::Excluded);
        }
    }
    if in_bypass(h.sni.as_deref()) {
        return pass(Reason::BypassCache);
    }
    if h.highest_version() < TLS12 {
        return pass_or_block(policy.legacy_tls, Reason::LegacyTls);
    }
    let tls13 = h.offers_tls13();
    if tls13 && policy.tls13 == PassOrInspect::Pass {
        return pass(Reason::Tls13);
    }
    if h.sni.is_none() && policy.no_sni == PassOrInspect::Pass {
        return pass(Reason::NoSni);
    }
    Decision {
        action: Action::Inspect { tls13 },
        reason: Reason::Inspected,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::client_hello::{parse, TLS10, TLS11, TLS13};

    fn hello(name: &str) -> ClientHello {
        let b: &[u8] = match name {
            "chromium" => include_bytes!("testdata/chromium.bin"),
            "curl" => include_bytes!("testdata/curl.bin"),
            "curl-tls12" => include_bytes!("testdata/curl-tls12.bin"),
            "openssl-nosni" => include_bytes!("testdata/openssl-nosni.bin"),
            _ => unreachable!("unknown capture {name}"),
        };
        parse(b).unwrap().unwrap()
    }

    fn legacy(mut h: ClientHello, v: u16) -> ClientHello {
        h.supported_versions.clear();
        h.legacy_version = v;
        h
    }

    /// Everything inspected: only the non-optional rows can stop a hello.
    fn inspect_all() -> TlsPolicy {
        TlsPolicy {
            non_tls: PassOrBlock::Pass,
            ech: PassOrInspect::Inspect,
            exclude_sni: vec![HostGlob::new("*.bank.example").unwrap()],
            legacy_tls: PassOrBlock::Block,
            tls13: PassOrInspect::Inspect,
            no_sni: PassOrInspect::Inspect,
            on_overload: PassOrBlock::Pass,
        }
    }

    fn with_sni(mut h: ClientHello, sni: Option<&str>) -> ClientHello {
        h.sni = sni.map(str::to_string);
        h
    }

    #[test]
    fn every_row_of_the_table() {
        use Action::*;
        let base = inspect_all();
        let defaults = TlsPolicy::default(); // seed defaults: everything pass
        let no = |_: Option<&str>| false;
        let yes = |_: Option<&str>| true;
        let block_non_tls = TlsPolicy {
            non_tls: PassOrBlock::Block,
            ..base.clone()
        };
        let ech_pass = TlsPolicy {
            ech: PassOrInspect::Pass,
            ..base.clone()
        };
        let legacy_pass = TlsPolicy {
            legacy_tls: PassOrBlock::Pass,
            ..base.clone()
        };
        let tls13_pass = TlsPolicy {
            tls13: PassOrInspect::Pass,
            ..base.clone()
        };
        let no_sni_pass = TlsPolicy {
            no_sni: PassOrInspect::Pass,
            ..base.clone()
        };
        let bank = with_sni(hello("curl"), Some("www.bank.example"));
        let tls11 = legacy(hello("curl"), TLS11);
        let tls10_nosni = legacy(hello("openssl-nosni"), TLS10);
        let tls12_nosni = with_sni(hello("curl-tls12"), None);

        #[allow(clippy::type_complexity)]
        let rows: Vec<(&str, Option<ClientHello>, &TlsPolicy, bool, Action, &str)> = vec![
            ("garbage, non_tls pass", None, &base, false, Pass, "non_tls"),
            (
                "garbage, non_tls block",
                None,
                &block_non_tls,
                false,
                Block,
                "non_tls",
            ),
            (
                "ech, pass",
                Some(hello("chromium")),
                &ech_pass,
                false,
                Pass,
                "ech",
            ),
            (
                "ech, seed defaults",
                Some(hello("chromium")),
                &defaults,
                false,
                Pass,
                "ech",
            ),
            (
                "ech, inspect",
                Some(hello("chromium")),
                &base,
                false,
                Inspect { tls13: true },
                "inspected",
            ),
            (
                "excluded",
                Some(bank.clone()),
                &base,
                false,
                Pass,
                "excluded",
            ),
            (
                "bypass cache",
                Some(hello("curl")),
                &base,
                true,
                Pass,
                "bypass_cache",
            ),
            (
                "legacy block",
                Some(tls11.clone()),
                &base,
                false,
                Block,
                "legacy_tls",
            ),
            (
                "legacy pass",
                Some(tls11),
                &legacy_pass,
                false,
                Pass,
                "legacy_tls",
            ),
            (
                "legacy before no_sni",
                Some(tls10_nosni),
                &base,
                false,
                Block,
                "legacy_tls",
            ),
            (
                "tls13 pass",
                Some(hello("curl")),
                &tls13_pass,
                false,
                Pass,
                "tls13",
            ),
            (
                "tls13 seed defaults",
                Some(hello("curl")),
                &defaults,
                false,
                Pass,
                "tls13",
            ),
            (
                "tls13 inspect",
                Some(hello("curl")),
                &base,
                false,
                Inspect { tls13: true },
                "inspected",
            ),
            (
                "no sni pass",
                Some(tls12_nosni.clone()),
                &no_sni_pass,
                false,
                Pass,
                "no_sni",
            ),
            (
                "no sni inspect",
                Some(tls12_nosni),
                &base,
                false,
                Inspect { tls13: false },
                "inspected",
            ),
            (
                "tls13 before no_sni",
                Some(hello("openssl-nosni")),
                &defaults,
                false,
                Pass,
                "tls13",
            ),
            (
                "no sni with tls13 inspect",
                Some(hello("openssl-nosni")),
                &no_sni_pass,
                false,
                Pass,
                "no_sni",
            ),
            (
                "tls12 inspected",
                Some(hello("curl-tls12")),
                &base,
                false,
                Inspect { tls13: false },
                "inspected",
            ),
        ];
        for (what, h, policy, bypassed, action, reason) in rows {
            let d = decide(h.as_ref(), policy, if bypassed { yes } else { no });
            assert_eq!(d.action, action, "{what}");
            assert_eq!(d.reason.as_str(), reason, "{what}");
        }
        // With the seed defaults a TLS 1.2 hello with SNI is inspected.
        let d = decide(Some(&hello("curl-tls12")), &defaults, no);
        assert_eq!(
            (d.action, d.reason),
            (Inspect { tls13: false }, Reason::Inspected)
        );
    }

    #[test]
    fn order_of_rows() {
        let base = inspect_all();
        // ECH (pass) beats excluded, bypass and legacy.
        let ech_pass = TlsPolicy {
            ech: PassOrInspect::Pass,
            ..base.clone()
        };
        let mut h = legacy(with_sni(hello("chromium"), Some("x.bank.example")), TLS10);
        h.ech = true;
        assert_eq!(decide(Some(&h), &ech_pass, |_| true).reason, Reason::Ech);
        // Excluded beats bypass and legacy; the cache is not even asked.
        assert_eq!(
            decide(Some(&h), &base, |_| panic!("cache consulted")).reason,
            Reason::Excluded
        );
        // Bypass beats legacy, and is asked with the hello's SNI.
        let h = legacy(with_sni(hello("curl"), Some("shop.test")), TLS10);
        let mut asked = None;
        let d = decide(Some(&h), &base, |s| {
            asked = s.map(str::to_string);
            true
        });
        assert_eq!(d.reason, Reason::BypassCache);
        assert_eq!(asked.as_deref(), Some("shop.test"));
        // Legacy beats tls13 and no_sni.
        assert_eq!(decide(Some(&h), &base, |_| false).reason, Reason::LegacyTls);
        // A hello offering 1.3 with highest version 1.3 is not legacy.
        assert_eq!(hello("curl").highest_version(), TLS13);
    }
}
