//! `cargo bench -p usher-sim`: the simulator's cost per conversation, for a desk of 200
//! agents at 90 % load (the README's one-million-conversation figure is ten of these
//! runs in a row: `cargo run --release -p usher-sim --example speed`), and for a desk with
//! teams, skills, shifts and a routing workflow.

#![allow(clippy::unwrap_used, missing_docs)]

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use usher_core::model::Strategy;
use usher_sim::model::{Dist, Setup};

fn plain(agents: u32, conversations: f64) -> Setup {
    let per_hour = f64::from(agents) * 0.9 * 60.0;
    Setup {
        rate_per_hour: vec![per_hour],
        hours: conversations / per_hour,
        handle: Dist::Exponential { mean_seconds: 60.0 },
        agents,
        default_handle_seconds: 60,
        ..Setup::default()
    }
}

fn desk() -> Setup {
    serde_json::from_value(serde_json::json!({
        "rate_per_hour": [600], "hours": 100, "seed": 3,
        "handle": { "kind": "log_normal", "median_seconds": 300, "sigma": 0.5 },
        "handle_by_channel": { "email": { "kind": "exponential", "mean_seconds": 900 } },
        "patience": { "kind": "exponential", "mean_seconds": 300 },
        "mix": { "channels": { "whatsapp": 3, "email": 1 }, "languages": { "en": 3, "es": 1 },
                 "skills": { "billing": 0.3 } },
        "teams": [{ "name": "en", "strategy": "round_robin" }, { "name": "es" }],
        "staff": [
            { "name": "en", "count": 30, "teams": ["en"], "languages": ["en"], "max_open": 3,
              "skills": { "billing": 2 }, "daily_limit": 200,
              "shifts": [{ "start": "00:00", "end": "12:00" }, { "start": "12:00", "end": "00:00" }],
              "breaks": [{ "at": "10:00", "minutes": 15 }], "stagger_minutes": 1 },
            { "name": "es", "count": 12, "teams": ["es"], "languages": ["es"], "max_open": 3,
              "skills": { "billing": 1 } }
        ],
        "workflows": [{ "name": "By language", "trigger": { "kind": "conversation_opened" },
            "start": "b", "steps": {
              "b": { "kind": "branch", "branches": [{ "when": { "language_is": "es" }, "next": "es" }],
                     "otherwise": "en" },
              "es": { "kind": "assign", "team": 2, "match_language": true },
              "en": { "kind": "assign", "team": 1 } } }]
    }))
    .unwrap()
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("simulate");
    g.sample_size(10).measurement_time(std::time::Duration::from_secs(20));
    let setup = plain(200, 100_000.0);
    g.throughput(Throughput::Elements(100_000));
    g.bench_function("200_agents_100k_conversations", |b| {
        b.iter(|| usher_sim::compare(&setup, None, &[Some(Strategy::LeastOpen)], false, |_| {}).unwrap())
    });
    let d = desk();
    g.throughput(Throughput::Elements(60_000));
    g.bench_function("two_teams_workflow_shifts_60k_conversations", |b| {
        b.iter(|| usher_sim::compare(&d, None, &[None], false, |_| {}).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
