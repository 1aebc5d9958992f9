//! Times one long run: `cargo run --release -p usher-sim --example speed -- AGENTS CONVERSATIONS`.
#![allow(clippy::unwrap_used)]
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let agents: u32 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(200);
    let n: f64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(1_000_000.0);
    // 90 % load: each agent handles a conversation a minute on average.
    let load: f64 = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(0.9);
    let seed: u64 = args.get(4).and_then(|a| a.parse().ok()).unwrap_or(1);
    let per_minute = f64::from(agents) * load;
    let setup = usher_sim::model::Setup {
        rate_per_hour: vec![per_minute * 60.0],
        hours: n / (per_minute * 60.0),
        handle: usher_sim::model::Dist::Exponential { mean_seconds: 60.0 },
        agents,
        default_handle_seconds: 60,
        seed,
        ..usher_sim::model::Setup::default()
    };
    let started = std::time::Instant::now();
    let r = usher_sim::compare(&setup, None, &[Some(usher_core::model::Strategy::LeastOpen)], false, |_| {})
        .unwrap();
    let secs = started.elapsed().as_secs_f64();
    let o = &r.strategies[0].outcome;
    println!(
        "P(wait) {:.4} (Erlang C {:.4}), mean wait {:.2} s (Erlang C {:.2} s)",
        o.probability_of_waiting,
        r.theory.probability_of_waiting,
        o.wait_mean_seconds,
        r.theory.wait_mean_seconds
    );
    println!(
        "{} conversations, {agents} agents: {secs:.2} s ({:.2} µs each)",
        r.strategies[0].outcome.arrived,
        secs * 1e6 / r.strategies[0].outcome.arrived as f64
    );
}
