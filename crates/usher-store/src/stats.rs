//! Process-wide counters and histograms for `/metrics`: decisions by strategy and outcome,
//! and how long routing transactions take. Gauges that describe the workspace (queue
//! lengths, open conversations, agents by status) are read from the database at scrape time
//! instead, so every node reports the same truth.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// How a decision picked (the strategy label).
pub const STRATEGIES: [&str; 5] = ["round_robin", "least_open", "weighted", "dedicated", "previous_agent"];
/// What a decision came to (the outcome label).
pub const OUTCOMES: [&str; 3] = ["assigned", "queued", "unassigned"];

static DECISIONS: [[AtomicU64; 3]; 5] = [const { [const { AtomicU64::new(0) }; 3] }; 5];

/// Counts one decision.
pub fn count_decision(strategy: usize, outcome: usize) {
    if let Some(row) = DECISIONS.get(strategy) {
        if let Some(c) = row.get(outcome) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Renders the decision counters in the Prometheus text format.
pub fn render_decisions(out: &mut String) {
    out.push_str("# HELP usher_decisions_total Routing decisions by strategy and outcome.\n");
    out.push_str("# TYPE usher_decisions_total counter\n");
    for (si, s) in STRATEGIES.iter().enumerate() {
        for (oi, o) in OUTCOMES.iter().enumerate() {
            let n = DECISIONS[si][oi].load(Ordering::Relaxed);
            let _ = writeln!(out, "usher_decisions_total{{strategy=\"{s}\",outcome=\"{o}\"}} {n}");
        }
    }
}

/// Upper bounds of the latency buckets, in seconds.
pub const BUCKETS: [f64; 12] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];

/// A latency histogram with fixed buckets, safe to share between threads.
#[derive(Debug)]
pub struct Histogram {
    buckets: [AtomicU64; 12],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    /// An empty histogram.
    pub const fn new() -> Histogram {
        Histogram {
            buckets: [const { AtomicU64::new(0) }; 12],
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }

    /// Records one observation.
    pub fn observe(&self, seconds: f64) {
        for (i, le) in BUCKETS.iter().enumerate() {
            if seconds <= *le {
                self.buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
    }

    /// Renders it under `name` with optional extra labels (`key="value",`).
    pub fn render(&self, out: &mut String, name: &str, labels: &str) {
        for (i, le) in BUCKETS.iter().enumerate() {
            let n = self.buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels}le=\"{le}\"}} {n}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}le=\"+Inf\"}} {count}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let trimmed = labels.trim_end_matches(',');
        let _ = writeln!(out, "{name}_sum{{{trimmed}}} {sum}");
        let _ = writeln!(out, "{name}_count{{{trimmed}}} {count}");
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram::new()
    }
}

/// How long routing transactions (open, claim, close, …) take, commit included.
pub static DECISION_LATENCY: Histogram = Histogram::new();
