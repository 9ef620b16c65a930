//! Multi-pattern prefilter: one automaton per buffer kind.
//!
//! Each rule contributes one literal (its fast pattern) to the automaton of
//! the buffer that literal lives in; scanning a buffer once nominates every
//! rule whose literal occurs, and only those are fully evaluated. Literals
//! are matched case-insensitively and deduplicated, so the automaton size
//! follows the number of distinct literals, not rules; the full evaluation
//! re-checks case.
//!
//! The matcher is chosen at build time: Vectorscan (the portable Hyperscan,
//! through the system's libhs) with the `vectorscan` cargo feature,
//! aho-corasick otherwise. Both sit behind this one [`Prefilter`] type.

use std::collections::HashMap;

use super::matcher::Buffers;
use super::rule::{Buffer, BUFFERS};

/// The multi-pattern matcher in use, for `validate` and the start-up line.
#[cfg(not(feature = "vectorscan"))]
pub const MATCHER: &str = "aho-corasick";
/// The multi-pattern matcher in use, for `validate` and the start-up line.
#[cfg(feature = "vectorscan")]
pub const MATCHER: &str = "vectorscan";

#[cfg(not(feature = "vectorscan"))]
use ac_engine as engine;
#[cfg(feature = "vectorscan")]
use hs_engine as engine;

/// Why a prefilter could not be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildError(String);

impl std::fmt::Display for BuildError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{MATCHER}: {}", self.0)
    }
}

impl std::error::Error for BuildError {}

#[derive(Debug)]
struct Index {
    matcher: engine::Matcher,
    /// Rules keyed by pattern id.
    rules: Vec<Vec<u32>>,
}

/// The automata of one inspection phase.
#[derive(Debug)]
pub struct Prefilter {
    index: [Option<Index>; BUFFERS],
    patterns: usize,
    /// Distinguishes prefilters, so per-thread matcher memory knows which
    /// ones it was sized for.
    #[cfg_attr(not(feature = "vectorscan"), allow(dead_code))]
    id: u64,
}

impl Default for Prefilter {
    fn default() -> Self {
        Prefilter {
            index: std::array::from_fn(|_| None),
            patterns: 0,
            id: next_id(),
        }
    }
}

fn next_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// Reusable per-flow memory for scans (pattern-seen bits).
#[derive(Debug, Default)]
pub struct Scratch {
    seen: Vec<u64>,
}

impl Prefilter {
    /// Builds the automata from `(rule id, buffer, literal)` triples.
    pub fn build(entries: &[(u32, Buffer, &[u8])]) -> Result<Prefilter, BuildError> {
        let mut pf = Prefilter::default();
        for b in Buffer::ALL {
            let mut ids: HashMap<Vec<u8>, usize> = HashMap::new();
            let mut pats: Vec<Vec<u8>> = Vec::new();
            let mut rules: Vec<Vec<u32>> = Vec::new();
            for &(rid, eb, lit) in entries {
                if eb != b {
                    continue;
                }
                let key = lit.to_ascii_lowercase();
                let id = *ids.entry(key.clone()).or_insert_with(|| {
                    pats.push(key);
                    rules.push(Vec::new());
                    pats.len() - 1
                });
                rules[id].push(rid);
            }
            if pats.is_empty() {
                continue;
            }
            pf.patterns = pf.patterns.max(pats.len());
            let matcher = engine::Matcher::build(&pats)?;
            pf.index[b as usize] = Some(Index { matcher, rules });
        }
        Ok(pf)
    }

    /// Whether any literal is keyed on buffer `b`.
    pub fn has(&self, b: Buffer) -> bool {
        self.index[b as usize].is_some()
    }

    /// Scans every present buffer and appends the nominated rule ids.
    pub fn scan(&self, bufs: &Buffers<'_>, scratch: &mut Scratch, out: &mut Vec<u32>) {
        for b in Buffer::ALL {
            let (Some(ix), Some(data)) = (&self.index[b as usize], bufs.get(b)) else {
                continue;
            };
            let words = ix.rules.len().div_ceil(64);
            scratch.seen.clear();
            scratch.seen.resize(words, 0);
            let seen = &mut scratch.seen;
            let mut on = |p: usize| {
                let (w, bit) = (p / 64, 1u64 << (p % 64));
                if seen[w] & bit == 0 {
                    seen[w] |= bit;
                    out.extend_from_slice(&ix.rules[p]);
                }
            };
            if !ix.matcher.scan(self.id, &self.index, data, &mut on) {
                // The matcher failed (it cannot, short of memory): nominate
                // every rule of the buffer rather than miss one.
                for p in 0..ix.rules.len() {
                    on(p);
                }
            }
        }
    }
}

#[cfg(not(feature = "vectorscan"))]
mod ac_engine {
    use aho_corasick::{AhoCorasick, AhoCorasickBuilder, AhoCorasickKind, MatchKind};

    use super::{BuildError, Index};

    /// Total literal bytes up to which the prefilter is a DFA (memory grows
    /// with states x byte classes: ~20k states stays within a few MiB).
    const DFA_MAX_PATTERN_BYTES: usize = 20_000;

    #[derive(Debug)]
    pub(super) struct Matcher(AhoCorasick);

    impl Matcher {
        pub(super) fn build(pats: &[Vec<u8>]) -> Result<Matcher, BuildError> {
            // A DFA (one transition per byte, no prefilter) when it stays
            // small: AC's rare-byte prefilter degrades badly on text when
            // literals are matched case-insensitively, while a DFA scans at a
            // steady rate whatever the data. Large sets use the contiguous NFA.
            let bytes: usize = pats.iter().map(Vec::len).sum();
            let kind = if bytes <= DFA_MAX_PATTERN_BYTES {
                AhoCorasickKind::DFA
            } else {
                AhoCorasickKind::ContiguousNFA
            };
            AhoCorasickBuilder::new()
                .ascii_case_insensitive(true)
                .match_kind(MatchKind::Standard)
                .kind(Some(kind))
                .prefilter(false)
                .byte_classes(true)
                .build(pats)
                .map(Matcher)
                .map_err(|e| BuildError(e.to_string()))
        }

        /// Calls `on` with the id of every literal found (repeats allowed).
        pub(super) fn scan(
            &self,
            _pf: u64,
            _all: &[Option<Index>],
            data: &[u8],
            on: &mut dyn FnMut(usize),
        ) -> bool {
            for m in self.0.find_overlapping_iter(data) {
                on(m.pattern().as_usize());
            }
            true
        }
    }
}

#[cfg(feature = "vectorscan")]
mod hs_engine {
    use std::cell::RefCell;
    use std::fmt::Write as _;

    use hyperscan::{
        BlockDatabase, BlockMode, Builder as _, Matching, Pattern, PatternFlags, Patterns, Scratch,
    };

    use super::{BuildError, Index};

    pub(super) struct Matcher(BlockDatabase);

    impl std::fmt::Debug for Matcher {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("Matcher(vectorscan)")
        }
    }

    /// Scratch space is per thread (Vectorscan needs one per concurrent
    /// scan), grown for every prefilter the thread scans with; the ids of
    /// the prefilters it already fits are remembered.
    struct ThreadScratch {
        scratch: Option<Scratch>,
        fits: Vec<u64>,
    }

    thread_local! {
        static SCRATCH: RefCell<ThreadScratch> =
            const { RefCell::new(ThreadScratch { scratch: None, fits: Vec::new() }) };
    }

    impl Matcher {
        pub(super) fn build(pats: &[Vec<u8>]) -> Result<Matcher, BuildError> {
            // Every byte escaped: literals may hold any byte, NUL included.
            let flags = PatternFlags::CASELESS | PatternFlags::SINGLEMATCH;
            let list: Vec<Pattern> = pats
                .iter()
                .enumerate()
                .map(|(i, lit)| {
                    let mut expr = String::with_capacity(lit.len() * 4);
                    for b in lit {
                        let _ = write!(expr, "\\x{b:02x}");
                    }
                    Pattern {
                        id: Some(i),
                        ..Pattern::with_flags(expr, flags).expect("with_flags never fails")
                    }
                })
                .collect();
            Patterns(list)
                .build::<BlockMode>()
                .map(Matcher)
                .map_err(|e| BuildError(e.to_string()))
        }

        /// Calls `on` with the id of every literal found (each once).
        /// False when Vectorscan fails (scratch allocation).
        pub(super) fn scan(
            &self,
            pf: u64,
            all: &[Option<Index>],
            data: &[u8],
            on: &mut dyn FnMut(usize),
        ) -> bool {
            SCRATCH.with(|cell| {
                let mut ts = cell.borrow_mut();
                if !ts.fits.contains(&pf) {
                    // Grow the thread's scratch for every database of this
                    // prefilter at once, so later buffers skip this step.
                    for ix in all.iter().flatten() {
                        let db = &ix.matcher.0;
                        let grown = match ts.scratch.as_mut() {
                            Some(s) => db.realloc_scratch(s).map(|_| ()),
                            None => db.alloc_scratch().map(|s| ts.scratch = Some(s)),
                        };
                        if grown.is_err() {
                            return false;
                        }
                    }
                    if ts.fits.len() >= 16 {
                        // Reloaded rule sets: the scratch still fits the
                        // old ones (it only grows), the list stays short.
                        ts.fits.clear();
                    }
                    ts.fits.push(pf);
                }
                let Some(s) = ts.scratch.as_ref() else {
                    return false;
                };
                self.0
                    .scan(data, s, |id: u32, _from: u64, _to: u64, _flags: u32| {
                        on(id as usize);
                        Matching::Continue
                    })
                    .is_ok()
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(pf: &Prefilter, b: Buffer, data: &[u8]) -> Vec<u32> {
        let mut bufs = Buffers::default();
        bufs.set(b, data);
        let mut out = Vec::new();
        pf.scan(&bufs, &mut Scratch::default(), &mut out);
        out.sort_unstable();
        out
    }

    #[test]
    fn nominates_rules_by_literal_any_case_any_byte() {
        let entries: Vec<(u32, Buffer, &[u8])> = vec![
            (0, Buffer::Raw, b"Needle"),
            (1, Buffer::Raw, b"needle"),
            (2, Buffer::Raw, b"\x00\xffbin|"),
            (3, Buffer::Uri, b"/admin"),
            (4, Buffer::Raw, b"absent"),
            (5, Buffer::Raw, b"a.b*c"),
        ];
        let pf = Prefilter::build(&entries).unwrap();
        assert!(pf.has(Buffer::Raw) && pf.has(Buffer::Uri) && !pf.has(Buffer::Host));
        let data = b"xx NEEDLE yy \x00\xffBIN| needle a.b*c";
        assert_eq!(scan(&pf, Buffer::Raw, data), [0, 1, 2, 5]);
        // A literal of another buffer is not found in this one.
        assert_eq!(scan(&pf, Buffer::Raw, b"/admin"), Vec::<u32>::new());
        assert_eq!(scan(&pf, Buffer::Uri, b"/ADMIN/x"), [3]);
        // Regex metacharacters are literal: `a.b*c` needs those bytes.
        assert_eq!(scan(&pf, Buffer::Raw, b"axbbc"), Vec::<u32>::new());
        // Two prefilters on one thread (one per phase, or a reload).
        let other = Prefilter::build(&[(9, Buffer::Raw, b"other")]).unwrap();
        assert_eq!(scan(&other, Buffer::Raw, b"an OTHER one"), [9]);
        assert_eq!(scan(&pf, Buffer::Raw, b"needle"), [0, 1]);
    }
}
