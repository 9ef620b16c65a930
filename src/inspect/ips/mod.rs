//! IPS: Suricata-subset rules, a multi-pattern prefilter and the matcher.
//!
//! Rules are split at load into three phases by what they inspect: the
//! request of an HTTP transaction, its response (which may also look at the
//! request's buffers), and the raw stream of either direction. Each phase has
//! its own prefilter, so a step only scans the buffers some rule in that
//! phase wants, and a large download with no response-side rules costs no
//! scanning at all.
//!
//! Loading never fails as a whole: a missing file, a malformed line or an
//! unsupported keyword is reported in the [`LoadReport`] and the other rules
//! load. `luhn;` is a tlsinspect extension: placed after a `pcre`, the pcre
//! match (its first capture group, if any) must be a 13–19 digit number that
//! passes the Luhn check, as card numbers do.

pub mod matcher;
pub mod parser;
pub mod prefilter;
pub mod rule;
pub mod state;
pub mod tls;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use matcher::{luhn_valid, Buffers};
pub use parser::{parse_rule, RuleError, Vars};
pub use prefilter::Scratch;
pub use prefilter::MATCHER;
pub use rule::{app_event, Action, Buffer, Proto, Rule};
pub use state::{Clock, FlowBits, HostState};

/// Whether drop/reject rules act or only alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Every match is only logged.
    Detect,
    /// drop and reject rules block.
    #[default]
    Prevent,
}

/// A rule that was not loaded, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedRule {
    /// `file:line`.
    pub origin: String,
    /// The sid, when it could be read.
    pub sid: Option<u64>,
    /// Why.
    pub error: RuleError,
}

impl std::fmt::Display for SkippedRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.sid {
            Some(sid) => write!(f, "{}: rule sid {sid} skipped: {}", self.origin, self.error),
            None => write!(f, "{}: rule skipped: {}", self.origin, self.error),
        }
    }
}

/// What happened while loading rule files.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    /// Rules loaded.
    pub loaded: usize,
    /// Rules skipped, with their reason.
    pub skipped: Vec<SkippedRule>,
    /// Files that could not be read: `path: error`.
    pub file_errors: Vec<String>,
    /// Per rule file read: loaded, and skipped by keyword.
    pub files: Vec<FileSummary>,
    /// Time taken by [`Ruleset::load_files`]: reading, parsing, compiling.
    pub took: std::time::Duration,
}

/// Loaded and skipped rules of one file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileSummary {
    /// The file as named in the config.
    pub path: String,
    /// Rules loaded.
    pub loaded: usize,
    /// Skipped rules by the keyword (or problem) that stopped them, most first.
    pub skipped: Vec<(String, usize)>,
}

impl FileSummary {
    /// Rules skipped in all.
    pub fn skipped_total(&self) -> usize {
        self.skipped.iter().map(|(_, n)| n).sum()
    }
}

/// What a skip is counted under: the unsupported keyword, else `invalid`
/// or `duplicate sid`.
fn skip_key(e: &RuleError) -> String {
    match e {
        RuleError::Unsupported(k) => {
            // `pcre /.../ (why)` would make every expression its own row.
            if k.starts_with("pcre /") {
                match k.rsplit_once("(error: ") {
                    Some((_, why)) => format!("pcre ({}", why),
                    None => "pcre".into(),
                }
            } else {
                k.clone()
            }
        }
        RuleError::Invalid(m) if m == "duplicate sid" => m.clone(),
        RuleError::Invalid(_) => "invalid".into(),
    }
}

impl LoadReport {
    /// One line per problem, for the operator.
    pub fn problems(&self) -> Vec<String> {
        self.file_errors
            .iter()
            .cloned()
            .chain(self.skipped.iter().map(|s| s.to_string()))
            .collect()
    }
}

/// Which step of a flow is being inspected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// A complete HTTP request (head and held body).
    Request = 0,
    /// An HTTP response head or body chunk (request buffers available too).
    Response = 1,
    /// Raw stream bytes.
    Raw = 2,
    /// A ClientHello (`tls` rules to the server).
    TlsHello = 3,
    /// The upstream certificate chain, with the ClientHello's buffers.
    TlsCert = 4,
}

/// Number of [`Phase`]s.
const PHASES: usize = 5;

/// The flow facts a step's rules may read and change besides its buffers.
#[derive(Debug)]
pub struct EvalCtx<'a> {
    /// The flow's flowbits.
    pub bits: &'a mut FlowBits,
    /// Source address of the data inspected (client for requests).
    pub src: IpAddr,
    /// Its destination address.
    pub dst: IpAddr,
    /// The TLS version `tls.version` compares against (the highest the
    /// ClientHello offers), in TLS steps.
    pub tls_version: Option<u16>,
    /// The [`rule::ssl_state`] bit of the TLS step (`ssl_state` rules
    /// match only in TLS steps).
    pub ssl_state: Option<u8>,
    /// Stream bytes the client and the server have sent so far, this
    /// step's included (`stream_size`); `None` in TLS steps.
    pub stream_bytes: Option<(u64, u64)>,
    /// Size of the chunk of stream data this step inspects (`dsize`);
    /// only raw-stream steps have one.
    pub chunk_len: Option<usize>,
}

#[derive(Debug)]
struct PhaseRules {
    prefilter: prefilter::Prefilter,
    /// Rules without a positive literal: always evaluated.
    always: Vec<u32>,
    /// Buffers some rule in the phase inspects.
    wants: [bool; rule::BUFFERS],
}

impl Default for PhaseRules {
    fn default() -> Self {
        PhaseRules {
            prefilter: prefilter::Prefilter::default(),
            always: Vec::new(),
            wants: [false; rule::BUFFERS],
        }
    }
}

/// A loaded, compiled rule set.
#[derive(Debug, Default)]
pub struct Ruleset {
    rules: Vec<Rule>,
    phases: [PhaseRules; PHASES],
    /// Evaluation order key per rule: flowbit setters before checkers.
    order: Vec<u8>,
    /// Interned xbit id per (rule, xbits index).
    xbit_ids: Vec<Vec<u32>>,
    /// Alerts raised per rule, for the metrics.
    alerts: Vec<std::sync::atomic::AtomicU64>,
    /// xbits and threshold windows shared by every flow.
    hosts: HostState,
    /// Rules of the raw-stream phase (computed once: flows ask at birth).
    raw_ids: Vec<u32>,
    /// Header group of each rule (rules with identical header and `flow`).
    group_of: Arc<[u32]>,
    /// One rule id per header group.
    group_rep: Vec<u32>,
}

impl Ruleset {
    /// Loads rule files in order; problems are reported, never fatal.
    ///
    /// Logs one line with the count and the time taken (the lab benchmark
    /// reads the appliance's load time from it).
    pub fn load_files(paths: &[PathBuf], vars: &Vars) -> (Ruleset, LoadReport) {
        let started = std::time::Instant::now();
        let mut report = LoadReport::default();
        let mut rules = Vec::new();
        for p in paths {
            match std::fs::read_to_string(p) {
                Ok(text) => parse_text(
                    &text,
                    &p.display().to_string(),
                    vars,
                    &mut rules,
                    &mut report,
                ),
                Err(e) => report.file_errors.push(format!("{}: {e}", p.display())),
            }
        }
        let set = Self::compile(rules, &mut report);
        for p in paths {
            let name = p.display().to_string();
            let prefix = format!("{name}:");
            let loaded = set
                .rules
                .iter()
                .filter(|r| r.origin.starts_with(&prefix))
                .count();
            let mut by: std::collections::HashMap<String, usize> = Default::default();
            for s in report
                .skipped
                .iter()
                .filter(|s| s.origin.starts_with(&prefix))
            {
                *by.entry(skip_key(&s.error)).or_default() += 1;
            }
            let mut skipped: Vec<(String, usize)> = by.into_iter().collect();
            skipped.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            report.files.push(FileSummary {
                path: name,
                loaded,
                skipped,
            });
        }
        report.took = started.elapsed();
        if !paths.is_empty() {
            log::info!(
                "ips: {} rules loaded, {} skipped, from {} file(s) in {:.1} ms (prefilter {MATCHER})",
                report.loaded,
                report.skipped.len(),
                paths.len(),
                report.took.as_secs_f64() * 1e3
            );
        }
        (set, report)
    }

    /// Loads rules from text; `origin` names it in reports (e.g. a file name).
    pub fn from_text(text: &str, origin: &str, vars: &Vars) -> (Ruleset, LoadReport) {
        let mut report = LoadReport::default();
        let mut rules = Vec::new();
        parse_text(text, origin, vars, &mut rules, &mut report);
        let set = Self::compile(rules, &mut report);
        (set, report)
    }

    /// Builds a rule set from already parsed rules (duplicates by sid skipped).
    pub fn compile(rules: Vec<Rule>, report: &mut LoadReport) -> Ruleset {
        let mut kept: Vec<Rule> = Vec::with_capacity(rules.len());
        let mut sids = std::collections::HashSet::new();
        for r in rules {
            if !sids.insert(r.sid) {
                report.skipped.push(SkippedRule {
                    origin: r.origin.clone(),
                    sid: Some(r.sid),
                    error: RuleError::Invalid("duplicate sid".into()),
                });
                continue;
            }
            kept.push(r);
        }
        let mut set = Ruleset::default();
        let mut groups: std::collections::HashMap<String, u32> = std::collections::HashMap::new();
        let mut group_of = Vec::with_capacity(kept.len());
        let mut entries: [Vec<(u32, Buffer, Vec<u8>)>; PHASES] = Default::default();
        let mut bit_ids: std::collections::HashMap<String, u32> = Default::default();
        let mut xbit_names: std::collections::HashMap<String, u32> = Default::default();
        let mut int_ids: std::collections::HashMap<String, u32> = Default::default();
        for mut r in kept {
            for fi in &mut r.flowints {
                let mut intern = |n: &str| {
                    let next = int_ids.len() as u32;
                    *int_ids.entry(n.to_string()).or_insert(next)
                };
                let mut ids = vec![intern(&fi.name)];
                if let Some(rule::IntValue::Var(v)) = &fi.value {
                    ids.push(intern(v));
                }
                fi.ids = ids;
            }
            for fb in &mut r.flowbits {
                fb.ids = fb
                    .names
                    .iter()
                    .map(|n| {
                        let next = bit_ids.len() as u32;
                        *bit_ids.entry(n.clone()).or_insert(next)
                    })
                    .collect();
            }
            let xids = r
                .xbits
                .iter()
                .map(|x| {
                    let next = xbit_names.len() as u32;
                    *xbit_names.entry(x.name.clone()).or_insert(next)
                })
                .collect();
            set.xbit_ids.push(xids);
            let sets = r.flowbits.iter().any(|f| !f.cmd.is_check())
                || r.xbits.iter().any(|x| !x.cmd.is_check())
                || r.flowints.iter().any(|f| !f.op.is_check());
            let checks = r.flowbits.iter().any(|f| f.cmd.is_check())
                || r.xbits.iter().any(|x| x.cmd.is_check())
                || r.flowints.iter().any(|f| f.op.is_check());
            set.order.push(match (sets, checks) {
                (true, false) => 0,
                (false, true) => 2,
                _ => 1,
            });
            set.alerts.push(std::sync::atomic::AtomicU64::new(0));
            let phase = phase_of(&r) as usize;
            let id = set.rules.len() as u32;
            match &r.fast_pattern {
                Some((b, lit)) => entries[phase].push((id, *b, lit.clone())),
                None => set.phases[phase].always.push(id),
            }
            for g in &r.groups {
                set.phases[phase].wants[g.buffer as usize] = true;
            }
            let key = format!(
                "{:?}|{:?}|{:?}|{:?}|{}|{:?}",
                r.src, r.sport, r.dst, r.dport, r.bidirectional, r.flow
            );
            let next = set.group_rep.len() as u32;
            let g = *groups.entry(key).or_insert_with(|| {
                set.group_rep.push(id);
                next
            });
            group_of.push(g);
            set.rules.push(r);
        }
        for (i, e) in entries.iter().enumerate() {
            let refs: Vec<(u32, Buffer, &[u8])> =
                e.iter().map(|(r, b, l)| (*r, *b, l.as_slice())).collect();
            match prefilter::Prefilter::build(&refs) {
                Ok(pf) => set.phases[i].prefilter = pf,
                Err(err) => {
                    // Only reachable when the automaton would be too large;
                    // evaluate those rules unfiltered rather than drop them.
                    report.file_errors.push(format!(
                        "prefilter could not be built ({err}); rules run unfiltered"
                    ));
                    set.phases[i].always.extend(e.iter().map(|(r, _, _)| *r));
                }
            }
        }
        set.raw_ids = (0..set.rules.len() as u32)
            .filter(|&i| phase_of(&set.rules[i as usize]) == Phase::Raw)
            .collect();
        set.group_of = group_of.into();
        report.loaded = set.rules.len();
        set
    }

    /// The loaded rules.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Whether any rule of `phase` inspects buffer `b`.
    pub fn wants(&self, phase: Phase, b: Buffer) -> bool {
        self.phases[phase as usize].wants[b as usize]
    }

    /// Whether `phase` has any rules at all.
    pub fn phase_empty(&self, phase: Phase) -> bool {
        let p = &self.phases[phase as usize];
        p.always.is_empty() && !p.wants.iter().any(|w| *w)
    }

    /// Evaluates `phase` over `bufs`; matching rule ids go to `hits`.
    ///
    /// `active(id)` filters rules by the flow's addresses and direction.
    /// Rules that set flowbits run before rules that check them, as in
    /// Suricata, and a matching rule's set/unset/toggle takes effect at once.
    pub fn eval(
        &self,
        phase: Phase,
        bufs: &Buffers<'_>,
        active: &dyn Fn(u32) -> bool,
        scratch: &mut Scratch,
        ctx: &mut EvalCtx<'_>,
        hits: &mut Vec<u32>,
    ) {
        let p = &self.phases[phase as usize];
        let mut cands = Vec::new();
        p.prefilter.scan(bufs, scratch, &mut cands);
        cands.extend_from_slice(&p.always);
        cands.sort_unstable_by_key(|&id| (self.order[id as usize], id));
        cands.dedup();
        for id in cands {
            let r = &self.rules[id as usize];
            if active(id) && self.state_checks(id, r, ctx) && matcher::rule_matches(r, bufs) {
                self.state_effects(id, r, ctx);
                hits.push(id);
            }
        }
    }

    fn state_checks(&self, id: u32, r: &Rule, ctx: &EvalCtx<'_>) -> bool {
        let bits_ok = r.flowbits.iter().all(|f| {
            let test = |i: &u32| ctx.bits.get(*i);
            let set = if f.any {
                f.ids.iter().any(test)
            } else {
                f.ids.iter().all(test)
            };
            match f.cmd {
                rule::BitCmd::IsSet => set,
                // `isnotset,a|b`: some bit is not set; `a&b`: none is set.
                rule::BitCmd::IsNotSet if f.any => !f.ids.iter().all(test),
                rule::BitCmd::IsNotSet => !f.ids.iter().any(test),
                _ => true,
            }
        });
        let version_ok = match (&r.tls_version, ctx.tls_version) {
            (None, _) => true,
            (Some(v), Some(have)) => v.versions.is_empty() || v.versions.contains(&have),
            (Some(_), None) => false,
        };
        let ints_ok = r.flowints.iter().all(|f| flowint_holds(f, ctx.bits));
        let ssl_ok = match (r.ssl_state, ctx.ssl_state) {
            (None, _) => true,
            (Some(s), Some(cur)) => s.holds(cur),
            (Some(_), None) => false,
        };
        let stream_ok = match (r.stream_size, ctx.stream_bytes) {
            (None, _) => true,
            (Some(s), Some((client, server))) => s.holds(client, server),
            (Some(_), None) => false,
        };
        let dsize_ok = match (r.dsize, ctx.chunk_len) {
            (None, _) => true,
            (Some(c), Some(n)) => c.holds(n as u64),
            (Some(_), None) => false,
        };
        bits_ok
            && ints_ok
            && version_ok
            && ssl_ok
            && stream_ok
            && dsize_ok
            && r.xbits.iter().enumerate().all(|(i, x)| {
                let xid = self.xbit_ids[id as usize][i];
                match x.cmd {
                    rule::BitCmd::IsSet => self.hosts.xbit_isset(xid, x.track, ctx.src, ctx.dst),
                    rule::BitCmd::IsNotSet => {
                        !self.hosts.xbit_isset(xid, x.track, ctx.src, ctx.dst)
                    }
                    _ => true,
                }
            })
    }

    fn state_effects(&self, id: u32, r: &Rule, ctx: &mut EvalCtx<'_>) {
        for f in &r.flowbits {
            for &b in &f.ids {
                ctx.bits.apply(f.cmd, b);
            }
        }
        for f in &r.flowints {
            flowint_apply(f, ctx.bits);
        }
        for (i, x) in r.xbits.iter().enumerate() {
            let xid = self.xbit_ids[id as usize][i];
            self.hosts
                .xbit_apply(xid, x.cmd, x.track, x.expire, ctx.src, ctx.dst);
        }
    }

    /// Whether a match of rule `id` raises an alert (and acts): not
    /// `noalert`, and allowed by its threshold. Counts the alert.
    pub fn should_alert(&self, id: u32, src: IpAddr, dst: IpAddr) -> bool {
        let r = &self.rules[id as usize];
        if r.noalert {
            return false;
        }
        let ok = match &r.threshold {
            Some(th) => self.hosts.threshold_alerts(id, th, src, dst),
            None => true,
        };
        if ok {
            if let Some(c) = self.alerts.get(id as usize) {
                c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
        ok
    }

    /// Alerts raised so far per sid (rules that raised none are left out).
    pub fn alert_counts(&self) -> Vec<(u64, u64)> {
        self.rules
            .iter()
            .zip(&self.alerts)
            .map(|(r, c)| (r.sid, c.load(std::sync::atomic::Ordering::Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    /// Replaces the clock of the host-tracked state (tests drive time).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.hosts = HostState::new(clock, 100_000);
        self
    }

    /// Whether a rule of `phase` could match once buffer `body` is added to
    /// `bufs`: some rule keys its fast pattern on `body`, has no fast
    /// pattern, or was already nominated by the other buffers.
    pub fn could_need(
        &self,
        phase: Phase,
        body: Buffer,
        bufs: &Buffers<'_>,
        scratch: &mut Scratch,
    ) -> bool {
        let p = &self.phases[phase as usize];
        if !p.wants[body as usize] {
            return false;
        }
        if p.prefilter.has(body) || !p.always.is_empty() {
            return true;
        }
        let mut cands = Vec::new();
        p.prefilter.scan(bufs, scratch, &mut cands);
        cands.iter().any(|&id| {
            self.rules[id as usize]
                .groups
                .iter()
                .any(|g| g.buffer == body)
        })
    }

    /// Ids of the raw-stream rules of inspected plaintext.
    pub fn raw_rule_ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.raw_ids.iter().copied()
    }

    /// The rule with id `id` (as returned in hits).
    pub fn rule(&self, id: u32) -> &Rule {
        &self.rules[id as usize]
    }

    /// Per-direction activity of every rule for one flow.
    pub fn activity(&self, client: (IpAddr, u16), server: (IpAddr, u16)) -> Activity {
        // Rules share a handful of distinct headers, so activity is computed
        // per header group: a flow costs bits per group, not per rule.
        let n = self.group_rep.len();
        let mut a = Activity {
            group_of: self.group_of.clone(),
            to_server: vec![0; n.div_ceil(64)],
            to_client: vec![0; n.div_ceil(64)],
        };
        for (g, &rep) in self.group_rep.iter().enumerate() {
            let r = &self.rules[rep as usize];
            let (w, bit) = (g / 64, 1u64 << (g % 64));
            if r.applies(client, server, true) {
                a.to_server[w] |= bit;
            }
            if r.applies(server, client, false) {
                a.to_client[w] |= bit;
            }
        }
        a
    }
}

/// Which rules apply to each direction of one flow (by header group).
#[derive(Debug, Clone, Default)]
pub struct Activity {
    group_of: Arc<[u32]>,
    to_server: Vec<u64>,
    to_client: Vec<u64>,
}

impl Activity {
    fn bit(bits: &[u64], group_of: &[u32], id: u32) -> bool {
        let Some(&g) = group_of.get(id as usize) else {
            return false;
        };
        let g = g as usize;
        bits.get(g / 64).is_some_and(|w| w & (1 << (g % 64)) != 0)
    }

    /// Whether rule `id` applies to data travelling toward the server.
    pub fn to_server(&self, id: u32) -> bool {
        Self::bit(&self.to_server, &self.group_of, id)
    }

    /// Whether rule `id` applies to data travelling toward the client.
    pub fn to_client(&self, id: u32) -> bool {
        Self::bit(&self.to_client, &self.group_of, id)
    }
}

/// The operand of `f`: its number, or the other flowint's value (`None`
/// when that one is not set).
fn flowint_operand(f: &rule::FlowInt, bits: &FlowBits) -> Option<u32> {
    match &f.value {
        Some(rule::IntValue::Number(n)) => Some(*n),
        Some(rule::IntValue::Var(_)) => bits.int(*f.ids.get(1)?),
        None => None,
    }
}

/// Whether a `flowint` condition holds (changes always hold: they act
/// when the rule matches), as Suricata's `DetectFlowintMatch`.
fn flowint_holds(f: &rule::FlowInt, bits: &FlowBits) -> bool {
    use rule::IntOp::*;
    let have = f.ids.first().and_then(|&i| bits.int(i));
    match f.op {
        Set | Add | Sub => true,
        IsSet => have.is_some(),
        NotSet => have.is_none(),
        op => {
            let (Some(a), Some(b)) = (have, flowint_operand(f, bits)) else {
                return false;
            };
            match op {
                Lt => a < b,
                Le => a <= b,
                Gt => a > b,
                Ge => a >= b,
                Eq => a == b,
                _ => a != b,
            }
        }
    }
}

/// Applies a `flowint` change of a matched rule: `=` sets, `+` adds (an
/// unset integer starts at the operand), `-` subtracts from a set one;
/// arithmetic wraps at 32 bits as Suricata's `uint32_t`. An operand naming
/// an unset flowint changes nothing.
fn flowint_apply(f: &rule::FlowInt, bits: &mut FlowBits) {
    use rule::IntOp::*;
    let (Some(&id), Some(v)) = (f.ids.first(), flowint_operand(f, bits)) else {
        return;
    };
    let new = match (f.op, bits.int(id)) {
        (Set, _) | (Add, None) => v,
        (Add, Some(a)) => a.wrapping_add(v),
        (Sub, Some(a)) => a.wrapping_sub(v),
        _ => return,
    };
    bits.set_int(id, new);
}

fn phase_of(r: &Rule) -> Phase {
    if r.uses_tls() {
        if r.uses_cert() {
            Phase::TlsCert
        } else {
            Phase::TlsHello
        }
    } else if r.uses_raw() && !r.uses_http() && r.app_events == 0 {
        // Raw content beside HTTP buffers is matched with them, on the raw
        // bytes of the message (see `inspect::verdict::head_buffers`).
        Phase::Raw
    } else if r.uses_response() {
        Phase::Response
    } else {
        Phase::Request
    }
}

fn parse_text(
    text: &str,
    origin: &str,
    vars: &Vars,
    rules: &mut Vec<Rule>,
    report: &mut LoadReport,
) {
    let mut logical = String::new();
    let mut start_line = 0usize;
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if logical.is_empty() {
            if t.is_empty() || t.starts_with('#') {
                continue;
            }
            start_line = i + 1;
        }
        // A trailing backslash continues the rule on the next line.
        if let Some(cont) = t.strip_suffix('\\') {
            logical.push_str(cont);
            logical.push(' ');
            continue;
        }
        logical.push_str(t);
        let where_ = format!("{origin}:{start_line}");
        match parse_rule(&logical, vars, &where_) {
            Ok(r) => rules.push(r),
            Err((sid, error)) => report.skipped.push(SkippedRule {
                origin: where_,
                sid,
                error,
            }),
        }
        logical.clear();
    }
    if !logical.is_empty() {
        report.skipped.push(SkippedRule {
            origin: format!("{origin}:{start_line}"),
            sid: None,
            error: RuleError::Invalid("file ends inside a continued rule".into()),
        });
    }
}

/// Loads the rule files named in a config, resolving nothing: paths as given.
pub fn load(paths: &[&Path], vars: &Vars) -> (Ruleset, LoadReport) {
    let owned: Vec<PathBuf> = paths.iter().map(|p| p.to_path_buf()).collect();
    Ruleset::load_files(&owned, vars)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broken_lines_and_files_are_reported_and_the_rest_loads() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.rules");
        std::fs::write(
            &good,
            "# comment\n\nalert tcp any any -> any any (msg:\"a\"; content:\"aaa\"; sid:1;)\n\
             alert tcp any any -> any any (msg:\"b\"; tag:session,5,packets; content:\"b\"; sid:2;)\n\
             this is not a rule\n\
             alert tcp any any -> any any (msg:\"c\"; \\\n  content:\"ccc\"; sid:3;)\n\
             alert tcp any any -> any any (msg:\"dup\"; content:\"d\"; sid:1;)\n",
        )
        .unwrap();
        let missing = dir.path().join("missing.rules");
        let (set, rep) = Ruleset::load_files(&[missing.clone(), good.clone()], &Vars::default());
        assert_eq!(set.rules().len(), 2);
        assert_eq!(rep.loaded, 2);
        assert_eq!(rep.file_errors.len(), 1);
        assert!(rep.file_errors[0].starts_with(&missing.display().to_string()));
        let probs = rep.problems();
        let g = good.display().to_string();
        assert!(
            probs.contains(&format!(
                "{g}:4: rule sid 2 skipped: unsupported keyword `tag`"
            )),
            "{probs:?}"
        );
        assert!(
            probs
                .iter()
                .any(|p| p.starts_with(&format!("{g}:5: rule skipped:"))),
            "{probs:?}"
        );
        assert!(
            probs.contains(&format!("{g}:8: rule sid 1 skipped: duplicate sid")),
            "{probs:?}"
        );
        assert_eq!(set.rules()[1].origin, format!("{g}:6"));
    }

    #[test]
    fn prefilter_nominates_and_matcher_confirms() {
        let (set, rep) = Ruleset::from_text(
            r#"alert tcp any any -> any any (msg:"a"; content:"Needle"; sid:1;)
alert tcp any any -> any any (msg:"b"; content:"needle"; nocase; content:"tail"; distance:0; sid:2;)
alert tcp any any -> any any (msg:"c"; pcre:"/ab+c/"; sid:3;)
alert http any any -> any any (msg:"d"; http.uri; content:"/x"; sid:4;)"#,
            "t",
            &Vars::default(),
        );
        assert!(rep.skipped.is_empty(), "{:?}", rep.skipped);
        let mut b = Buffers::default();
        b.set(Buffer::Raw, b"xx NEEDLE yy tail abbbc");
        let mut hits = Vec::new();
        let mut bits = FlowBits::default();
        let mut ctx = EvalCtx {
            bits: &mut bits,
            src: "192.0.2.1".parse().unwrap(),
            dst: "203.0.113.1".parse().unwrap(),
            tls_version: None,
            ssl_state: None,
            stream_bytes: None,
            chunk_len: None,
        };
        set.eval(
            Phase::Raw,
            &b,
            &|_| true,
            &mut Scratch::default(),
            &mut ctx,
            &mut hits,
        );
        let sids: Vec<u64> = hits.iter().map(|&h| set.rule(h).sid).collect();
        assert_eq!(sids, [2, 3]);
        assert!(set.wants(Phase::Request, Buffer::Uri));
        assert!(!set.wants(Phase::Request, Buffer::RequestBody));
        assert!(set.phase_empty(Phase::Response));
    }

    #[test]
    fn flowint_counts_matches_within_a_flow() {
        // ET's shape: each DLL download adds one; a third rule fires from
        // the second download on, and `-`, `=` and a variable operand act
        // as Suricata's.
        let (set, rep) = Ruleset::from_text(
            r#"alert tcp any any -> any any (content:"dll"; flowint:dl, +, 1; sid:1;)
alert tcp any any -> any any (content:"dll"; flowint:dl, >=, 2; sid:2;)
alert tcp any any -> any any (content:"reset"; flowint:dl, isset; flowint:dl, =, 0; sid:3;)
alert tcp any any -> any any (content:"undo"; flowint:dl, -, 1; sid:4;)
alert tcp any any -> any any (content:"limit"; flowint:max, =, 1; sid:5;)
alert tcp any any -> any any (content:"over"; flowint:dl, >, max; sid:6;)
alert tcp any any -> any any (content:"fresh"; flowint:dl, notset; sid:7;)"#,
            "t",
            &Vars::default(),
        );
        assert!(rep.skipped.is_empty(), "{:?}", rep.skipped);
        let mut bits = FlowBits::default();
        let step = |data: &[u8], bits: &mut FlowBits| {
            let mut b = Buffers::default();
            b.set(Buffer::Raw, data);
            let mut ctx = EvalCtx {
                bits,
                src: "192.0.2.1".parse().unwrap(),
                dst: "203.0.113.1".parse().unwrap(),
                tls_version: None,
                ssl_state: None,
                stream_bytes: None,
                chunk_len: None,
            };
            let mut hits = Vec::new();
            set.eval(
                Phase::Raw,
                &b,
                &|_| true,
                &mut Scratch::default(),
                &mut ctx,
                &mut hits,
            );
            let mut sids: Vec<u64> = hits.iter().map(|&h| set.rule(h).sid).collect();
            sids.sort();
            sids
        };
        assert_eq!(
            step(b"fresh over", &mut bits),
            [7],
            "unset: no comparison holds"
        );
        // The adder runs first (it sets), so the second download reaches 2.
        assert_eq!(step(b"a.dll", &mut bits), [1]);
        assert_eq!(step(b"b.dll", &mut bits), [1, 2]);
        assert!(step(b"over", &mut bits).is_empty(), "max is not set");
        assert_eq!(step(b"limit", &mut bits), [5]);
        assert_eq!(step(b"over", &mut bits), [6], "dl 2 > max 1");
        assert_eq!(step(b"undo undo", &mut bits), [4]);
        assert!(step(b"over fresh", &mut bits).is_empty(), "dl 1, set");
        assert_eq!(step(b"reset", &mut bits), [3]);
        assert_eq!(step(b"c.dll", &mut bits), [1], "0 + 1 = 1 < 2");
        // Another flow starts from nothing.
        assert_eq!(step(b"c.dll", &mut FlowBits::default()), [1]);
        // Subtracting from 0 wraps as Suricata's uint32_t.
        let mut bits = FlowBits::default();
        step(b"reset", &mut bits);
        assert_eq!(step(b"a.dll", &mut bits), [1]);
        step(b"reset", &mut bits);
        assert_eq!(bits.int(0), Some(0));
        step(b"undo", &mut bits);
        assert_eq!(bits.int(0), Some(u32::MAX));
    }

    #[test]
    fn activity_follows_header_and_flow() {
        let (set, _) = Ruleset::from_text(
            r#"alert tcp $HOME_NET any -> $EXTERNAL_NET 443 (content:"a"; sid:1;)
alert tcp any any -> any any (flow:to_client; content:"a"; sid:2;)
alert tcp any 443 <> any any (content:"a"; sid:3;)"#,
            "t",
            &Vars::default(),
        );
        let client = ("10.0.0.5".parse().unwrap(), 40000);
        let server = ("203.0.113.7".parse().unwrap(), 443);
        let a = set.activity(client, server);
        assert!(a.to_server(0) && !a.to_client(0));
        assert!(!a.to_server(1) && a.to_client(1));
        assert!(a.to_server(2) && a.to_client(2));
        let a = set.activity(server, client);
        assert!(!a.to_server(0));
    }
}

#[cfg(test)]
mod default_rules {
    use super::*;

    #[test]
    fn shipped_default_rules_all_load() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/rules/default.rules");
        let (set, rep) = Ruleset::load_files(&[path], &Vars::default());
        assert!(rep.problems().is_empty(), "{:#?}", rep.problems());
        assert!(set.rules().len() >= 30, "{}", set.rules().len());
        for r in set.rules() {
            assert!(
                r.sid > 0 && r.rev > 0 && !r.msg.is_empty() && r.classtype.is_some(),
                "{}",
                r.sid
            );
        }
    }
}
