//! Multi-pattern prefilter: one Aho-Corasick automaton per buffer kind.
//!
//! Each rule contributes one literal (its fast pattern) to the automaton of
//! the buffer that literal lives in; scanning a buffer once nominates every
//! rule whose literal occurs, and only those are fully evaluated. Literals
//! are matched case-insensitively and deduplicated, so the automaton size
//! follows the number of distinct literals, not rules; the full evaluation
//! re-checks case.

use std::collections::HashMap;

/// The multi-pattern matcher in use, for `validate` and the start-up line.
pub const MATCHER: &str = "aho-corasick";

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, AhoCorasickKind, MatchKind};

/// Total literal bytes up to which the prefilter is a DFA (memory grows
/// with states x byte classes: ~20k states stays within a few MiB).
const DFA_MAX_PATTERN_BYTES: usize = 20_000;

use super::matcher::Buffers;
use super::rule::{Buffer, BUFFERS};

#[derive(Debug)]
struct Index {
    ac: AhoCorasick,
    /// Rules keyed by pattern id.
    rules: Vec<Vec<u32>>,
}

/// The automata of one inspection phase.
#[derive(Debug)]
pub struct Prefilter {
    index: [Option<Index>; BUFFERS],
    patterns: usize,
}

impl Default for Prefilter {
    fn default() -> Self {
        Prefilter {
            index: std::array::from_fn(|_| None),
            patterns: 0,
        }
    }
}

/// Reusable per-flow memory for scans (pattern-seen bits).
#[derive(Debug, Default)]
pub struct Scratch {
    seen: Vec<u64>,
}

impl Prefilter {
    /// Builds the automata from `(rule id, buffer, literal)` triples.
    pub fn build(entries: &[(u32, Buffer, &[u8])]) -> Result<Prefilter, aho_corasick::BuildError> {
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
            let ac = AhoCorasickBuilder::new()
                .ascii_case_insensitive(true)
                .match_kind(MatchKind::Standard)
                .kind(Some(kind))
                .prefilter(false)
                .byte_classes(true)
                .build(&pats)?;
            pf.index[b as usize] = Some(Index { ac, rules });
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
            for m in ix.ac.find_overlapping_iter(data) {
                let p = m.pattern().as_usize();
                let (w, bit) = (p / 64, 1u64 << (p % 64));
                if scratch.seen[w] & bit == 0 {
                    scratch.seen[w] |= bit;
                    out.extend_from_slice(&ix.rules[p]);
                }
            }
        }
    }
}
