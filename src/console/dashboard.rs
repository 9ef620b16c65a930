//! The Dashboard's data and charts.
//!
//! Throughput and new connections per second come from the data plane's
//! counters, sampled every [`SAMPLE_EVERY`] by the console's runtime (the
//! workers publish them anyway; reading them costs the packet path
//! nothing). Inspected/passed/blocked per minute, top SNIs and alerts come
//! from the traffic log, so they survive a restart and agree with the Log
//! audit page. Charts are SVG drawn here: no JavaScript, no library.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use maud::{html, Markup, PreEscaped};

use super::records::{self, LogParams, LogQuery, Record};

/// How often the counters are sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// Samples kept (one hour at five seconds).
const KEEP: usize = 720;
/// Minutes shown in the per-minute chart.
pub const MINUTES: usize = 30;

/// One reading of the data-plane counters.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: SystemTime,
    rx_bytes: u64,
    flows_started: u64,
}

/// The last hour of counter samples.
#[derive(Debug, Default)]
pub struct Samples(Mutex<VecDeque<Sample>>);

/// A rate over time: (seconds before now, value per second).
pub type Series = Vec<(f64, f64)>;

impl Samples {
    /// Records the counters now (`None` without a data plane: nothing).
    pub fn sample(&self, stats: Option<tlsinspect_pipeline::Stats>, now: SystemTime) {
        let Some(s) = stats else { return };
        let mut q = self.0.lock().unwrap_or_else(|e| e.into_inner());
        q.push_back(Sample {
            at: now,
            rx_bytes: s.total.rx_bytes,
            flows_started: s.total.flows_started,
        });
        while q.len() > KEEP {
            q.pop_front();
        }
    }

    /// Bits per second received, and new connections per second.
    pub fn rates(&self, now: SystemTime) -> (Series, Series) {
        let q = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let mut bits = Vec::new();
        let mut conns = Vec::new();
        for w in q.iter().collect::<Vec<_>>().windows(2) {
            let (a, b) = (w[0], w[1]);
            let dt = b.at.duration_since(a.at).unwrap_or_default().as_secs_f64();
            if dt <= 0.0 {
                continue;
            }
            let ago = now.duration_since(b.at).unwrap_or_default().as_secs_f64();
            bits.push((ago, b.rx_bytes.saturating_sub(a.rx_bytes) as f64 * 8.0 / dt));
            conns.push((
                ago,
                b.flows_started.saturating_sub(a.flows_started) as f64 / dt,
            ));
        }
        (bits, conns)
    }
}

/// What the traffic log says about the last [`MINUTES`] minutes.
#[derive(Debug, Default)]
pub struct LogSummary {
    /// Per minute (unix minute) the counts of inspected, passed, blocked.
    pub per_minute: Vec<(i64, [u64; 3])>,
    /// SNIs by connections, most first.
    pub top_snis: Vec<(String, u64)>,
    /// Alert messages by count, most first.
    pub top_alerts: Vec<(String, u64)>,
    /// Flow records in the window.
    pub flows: u64,
}

/// Summarises the traffic log at `path` for the last [`MINUTES`] minutes.
pub fn summarise(path: &Path, now: SystemTime) -> std::io::Result<LogSummary> {
    let q = LogQuery::new(
        &LogParams {
            since: Some(format!("{MINUTES}m")),
            ..Default::default()
        },
        now,
    )
    .map_err(std::io::Error::other)?;
    let (recs, _) = records::matching(path, &q)?;
    let minute = |t: SystemTime| {
        t.duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64 / 60)
    };
    let this = minute(now);
    let mut buckets: BTreeMap<i64, [u64; 3]> = ((this - MINUTES as i64 + 1)..=this)
        .map(|m| (m, [0; 3]))
        .collect();
    let mut snis: HashMap<String, u64> = HashMap::new();
    let mut alerts: HashMap<String, u64> = HashMap::new();
    let mut flows = 0;
    for rec in &recs {
        let r = Record(rec);
        for a in r.alerts() {
            *alerts.entry(a).or_default() += 1;
        }
        if !r.is_flow() {
            continue;
        }
        flows += 1;
        if let Some(sni) = r.sni() {
            *snis.entry(sni.to_ascii_lowercase()).or_default() += 1;
        }
        let slot = match r.action().as_str() {
            "inspected" => 0,
            "pass" => 1,
            "blocked" => 2,
            _ => continue,
        };
        if let Some(b) = r.time().and_then(|t| buckets.get_mut(&minute(t))) {
            b[slot] += 1;
        }
    }
    let top = |m: HashMap<String, u64>| {
        let mut v: Vec<(String, u64)> = m.into_iter().collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v.truncate(10);
        v
    };
    Ok(LogSummary {
        per_minute: buckets.into_iter().collect(),
        top_snis: top(snis),
        top_alerts: top(alerts),
        flows,
    })
}

const W: f64 = 600.0;
const H: f64 = 160.0;
const PAD: f64 = 40.0;

/// `1.2 k`, `3.4 M`: a value in engineering units.
pub fn si(v: f64) -> String {
    let (d, s) = if v >= 1e9 {
        (1e9, " G")
    } else if v >= 1e6 {
        (1e6, " M")
    } else if v >= 1e3 {
        (1e3, " k")
    } else {
        (1.0, " ")
    };
    let x = v / d;
    if x >= 100.0 || d == 1.0 && x.fract() == 0.0 {
        format!("{x:.0}{s}")
    } else {
        format!("{x:.1}{s}")
    }
}

/// A line chart of `series` over the last hour.
pub fn line_chart(id: &str, title: &str, unit: &str, series: &Series) -> Markup {
    let max = series.iter().map(|p| p.1).fold(0.0f64, f64::max).max(1.0);
    let span = 3600.0;
    let mut pts = String::new();
    for (ago, v) in series {
        let x = PAD + (W - PAD) * (1.0 - (ago / span).min(1.0));
        let y = H - 20.0 - (H - 30.0) * (v / max);
        let _ = write!(pts, "{x:.1},{y:.1} ");
    }
    let last = series.last().map_or(0.0, |p| p.1);
    html! {
        figure.chart {
            figcaption { (title) ": " strong { (si(last)) (unit) } " now" }
            svg viewBox=(format!("0 0 {W} {H}")) role="img" aria-labelledby=(format!("{id}-t")) {
                title id=(format!("{id}-t")) { (title) ", last hour; now " (si(last)) (unit) }
                line.axis x1=(PAD) y1=(H - 20.0) x2=(W) y2=(H - 20.0) {}
                line.axis x1=(PAD) y1="10" x2=(PAD) y2=(H - 20.0) {}
                text.tick x="2" y="16" { (si(max)) }
                text.tick x="2" y=(H - 22.0) { "0" }
                text.tick x=(PAD) y=(H - 4.0) { "-60 min" }
                text.tick x=(W - 30.0) y=(H - 4.0) { "now" }
                @if series.is_empty() {
                    text.empty x=(W / 2.0 - 80.0) y=(H / 2.0) { "no samples yet" }
                } @else {
                    polyline.series points=(pts.trim_end()) {}
                }
            }
        }
    }
}

/// A stacked bar chart of inspected/passed/blocked per minute.
pub fn actions_chart(per_minute: &[(i64, [u64; 3])]) -> Markup {
    let max = per_minute
        .iter()
        .map(|(_, c)| c.iter().sum::<u64>())
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let n = per_minute.len().max(1) as f64;
    let bw = (W - PAD) / n;
    let mut bars = String::new();
    for (i, (_, c)) in per_minute.iter().enumerate() {
        let x = PAD + bw * i as f64;
        let mut y = H - 20.0;
        for (slot, class) in ["inspected", "pass", "blocked"].iter().enumerate() {
            let h = (H - 30.0) * c[slot] as f64 / max;
            if h > 0.0 {
                y -= h;
                let _ = write!(
                    bars,
                    r#"<rect class="bar {class}" x="{x:.1}" y="{y:.1}" width="{:.1}" height="{h:.1}"><title>{} {class}</title></rect>"#,
                    (bw - 2.0).max(1.0),
                    c[slot]
                );
            }
        }
    }
    let totals = per_minute.iter().fold([0u64; 3], |mut a, (_, c)| {
        for i in 0..3 {
            a[i] += c[i];
        }
        a
    });
    html! {
        figure.chart {
            figcaption {
                "Connections per minute, last " (MINUTES) " minutes: "
                span.key.inspected { "inspected " (totals[0]) } " "
                span.key.pass { "passed " (totals[1]) } " "
                span.key.blocked { "blocked " (totals[2]) }
            }
            svg viewBox=(format!("0 0 {W} {H}")) role="img" aria-labelledby="apm-t" {
                title id="apm-t" {
                    "Inspected " (totals[0]) ", passed " (totals[1]) ", blocked " (totals[2]) " in the last " (MINUTES) " minutes"
                }
                line.axis x1=(PAD) y1=(H - 20.0) x2=(W) y2=(H - 20.0) {}
                text.tick x="2" y="16" { (max) }
                text.tick x="2" y=(H - 22.0) { "0" }
                text.tick x=(PAD) y=(H - 4.0) { "-" (MINUTES) " min" }
                text.tick x=(W - 30.0) y=(H - 4.0) { "now" }
                (PreEscaped(bars))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_counts_actions_per_minute_and_top_snis() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("t.jsonl");
        let now = SystemTime::now();
        let ts = crate::log::record::format_timestamp(now - Duration::from_secs(5));
        let old = crate::log::record::format_timestamp(now - Duration::from_secs(7200));
        let line = |ts: &str, action: &str, sni: &str| {
            format!(
                r#"{{"timestamp":"{ts}","event_type":"flow","tlsinspect":{{"action":"{action}"}},"tls":{{"sni":"{sni}"}}}}"#
            )
        };
        let text = [
            line(&ts, "inspected", "a.example"),
            line(&ts, "inspected", "A.example"),
            line(&ts, "pass", "b.example"),
            line(&ts, "blocked", "b.example"),
            line(&old, "blocked", "old.example"),
            format!(
                r#"{{"timestamp":"{ts}","event_type":"alert","alert":{{"signature":"path traversal"}}}}"#
            ),
        ]
        .join("\n");
        std::fs::write(&f, text).unwrap();
        let s = summarise(&f, now).unwrap();
        assert_eq!(s.per_minute.len(), MINUTES);
        let totals = s.per_minute.iter().fold([0; 3], |mut a, (_, c)| {
            (0..3).for_each(|i| a[i] += c[i]);
            a
        });
        assert_eq!(totals, [2, 1, 1]);
        assert_eq!(s.top_snis[0], ("a.example".to_owned(), 2));
        assert_eq!(s.top_alerts, vec![("path traversal".to_owned(), 1)]);
        assert_eq!(s.flows, 4);
    }

    #[test]
    fn rates_come_from_counter_differences() {
        let s = Samples::default();
        let t0 = SystemTime::now();
        let mut st = tlsinspect_pipeline::Stats::default();
        s.sample(Some(st.clone()), t0);
        st.total.rx_bytes = 1_000;
        st.total.flows_started = 10;
        s.sample(Some(st), t0 + Duration::from_secs(5));
        let (bits, conns) = s.rates(t0 + Duration::from_secs(5));
        assert_eq!(bits, vec![(0.0, 1600.0)]);
        assert_eq!(conns, vec![(0.0, 2.0)]);
        assert!(si(1600.0).starts_with("1.6 k"));
    }
}
