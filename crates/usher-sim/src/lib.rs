//! # usher-sim: choose a strategy and a staffing level on evidence
//!
//! [`compare`] runs the routing core (`usher_core::memory`, the very decide, queue and drain
//! the server runs) in virtual time against synthetic traffic ([`model::Setup`]: Poisson
//! arrivals with a rate per hour of the week, handling and patience drawn from distributions,
//! agents holding one or several conversations with handling slowing as they do), once per
//! strategy, and reports what customers and agents would live through
//! ([`report::Outcome`]). [`erlang`] gives the classical M/M/N answer, against which the
//! simulation is validated, and the staffing advice: the fewest agents Erlang C says meet the
//! service goal, confirmed by simulating that many and one fewer.
//!
//! Everything is deterministic: the same setup and seed give the same report, byte for byte.

pub mod engine;
pub mod erlang;
pub mod model;
pub mod report;
pub mod rng;

use model::Setup;
use report::Outcome;
use serde::Serialize;
use std::fmt::Write;
use usher_core::model::Strategy;

/// One strategy's run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StrategyRun {
    /// The strategy.
    pub strategy: Strategy,
    /// What it gave.
    pub outcome: Outcome,
}

/// What Erlang C predicts for the setup (single-conversation agents, no abandonment; only a
/// guide otherwise).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Theory {
    /// Offered load, Erlangs.
    pub erlangs: f64,
    /// Probability of waiting.
    pub probability_of_waiting: f64,
    /// Mean wait, seconds.
    pub wait_mean_seconds: f64,
    /// Service level within the target.
    pub service_level: f64,
    /// Whether the setup is the model's (one conversation each, exponential handling, nobody
    /// leaving, one rate), so that the numbers above should match the simulation.
    pub exact: bool,
}

/// The staffing advice.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Staffing {
    /// The service goal (share within the target).
    pub goal: f64,
    /// The fewest agents Erlang C says meet it in the busiest hour (each agent counted as
    /// max_open servers): where the search starts.
    pub erlang_c_agents: u32,
    /// The fewest agents the simulation confirms meet it (first strategy): Erlang C's answer,
    /// raised while the simulated service level falls short (patience, several conversations
    /// at once and slowdown are outside Erlang C's model).
    pub recommended_agents: u32,
    /// The service level simulated with the recommendation.
    pub simulated_service_level: f64,
    /// And with one fewer.
    pub simulated_service_level_one_fewer: f64,
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// The setup.
    pub setup: Setup,
    /// Theory.
    pub theory: Theory,
    /// One run per strategy, in the order asked.
    pub strategies: Vec<StrategyRun>,
    /// The staffing advice, when asked for.
    pub staffing: Option<Staffing>,
}

/// The theory for a setup.
pub fn theory(setup: &Setup) -> Theory {
    let rate = setup.mean_rate_per_second();
    let mu = 1.0 / setup.handle.mean_seconds();
    let servers = setup.agents * setup.max_open;
    let exact = setup.max_open == 1
        && setup.patience.is_none()
        && setup.rate_per_hour.len() == 1
        && matches!(setup.handle, model::Dist::Exponential { .. });
    Theory {
        erlangs: rate / mu,
        probability_of_waiting: erlang::probability_of_waiting(servers, rate / mu),
        wait_mean_seconds: erlang::mean_wait(servers, rate, mu),
        service_level: erlang::service_level(servers, rate, mu, setup.target_seconds),
        exact,
    }
}

/// Runs every strategy on the setup (and the staffing advice when `advise`), telling
/// `progress` the share done.
pub fn compare(
    setup: &Setup,
    strategies: &[Strategy],
    advise: bool,
    mut progress: impl FnMut(f64),
) -> Report {
    let runs = strategies.len() + if advise { 2 } else { 0 };
    let mut done = 0usize;
    let step = |done: usize| move |p: f64| (done as f64 + p) / runs.max(1) as f64;
    let mut out = Vec::new();
    for s in strategies {
        let share = step(done);
        let outcome = engine::run(setup, *s, setup.agents, |p| progress(share(p)));
        out.push(StrategyRun { strategy: *s, outcome });
        done += 1;
    }
    let staffing = if advise {
        let busiest = setup.rate_per_hour.iter().copied().fold(0.0, f64::max) / 3600.0;
        let mu = 1.0 / setup.handle.mean_seconds();
        let slots = erlang::staffing(busiest, mu, setup.target_seconds, setup.service_goal);
        let start = slots.div_ceil(setup.max_open).max(1);
        let first = strategies.first().copied().unwrap_or(Strategy::LeastOpen);
        let mut n = start;
        let mut level = engine::run(setup, first, n, |p| progress(step(done)(p))).service_level;
        while level < setup.service_goal && n < start + 20 {
            n += 1;
            level = engine::run(setup, first, n, |p| progress(step(done)(p))).service_level;
        }
        let below = if n > 1 {
            engine::run(setup, first, n - 1, |p| progress(step(done + 1)(p))).service_level
        } else {
            0.0
        };
        Some(Staffing {
            goal: setup.service_goal,
            erlang_c_agents: start,
            recommended_agents: n,
            simulated_service_level: level,
            simulated_service_level_one_fewer: below,
        })
    } else {
        None
    };
    Report { setup: setup.clone(), theory: theory(setup), strategies: out, staffing }
}

/// The report as a table for the terminal.
pub fn table(r: &Report) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "{} agents (max_open {}), {:.1} Erlangs offered, {:.0} h simulated, seed {}",
        r.setup.agents, r.setup.max_open, r.theory.erlangs, r.setup.hours, r.setup.seed
    );
    let _ = writeln!(
        t,
        "{:<12} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7} {:>7} {:>6} {:>9} {:>8}",
        "strategy",
        "answered",
        "mean s",
        "median",
        "p90",
        "p99",
        "P(wait)",
        "SL",
        "aband.",
        "occ.",
        "gini conv",
        "est. MAE"
    );
    for s in &r.strategies {
        let o = &s.outcome;
        let _ = writeln!(
            t,
            "{:<12} {:>9} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>8.3} {:>7.3} {:>7.3} {:>6.3} {:>9.3} {:>8.1}",
            s.strategy.as_str(),
            o.answered,
            o.wait_mean_seconds,
            o.wait_median_seconds,
            o.wait_p90_seconds,
            o.wait_p99_seconds,
            o.probability_of_waiting,
            o.service_level,
            o.abandonment,
            o.occupancy,
            o.gini_conversations,
            o.estimate_mean_absolute_error_seconds
        );
    }
    let th = &r.theory;
    let _ = writeln!(
        t,
        "{:<12} {:>9} {:>8.1} {:>8} {:>8} {:>8} {:>8.3} {:>7.3}{}",
        "Erlang C",
        "",
        th.wait_mean_seconds,
        "",
        "",
        "",
        th.probability_of_waiting,
        th.service_level,
        if th.exact { "" } else { "   (a guide: the setup is not M/M/N)" }
    );
    if let Some(s) = &r.staffing {
        let _ = writeln!(
            t,
            "staffing for {:.0} % within {:.0} s: Erlang C says {} in the busiest hour; simulated, {} agents give {:.1} % and {} give {:.1} %: recommend {}",
            s.goal * 100.0,
            r.setup.target_seconds,
            s.erlang_c_agents,
            s.recommended_agents,
            s.simulated_service_level * 100.0,
            s.recommended_agents.saturating_sub(1),
            s.simulated_service_level_one_fewer * 100.0,
            s.recommended_agents
        );
    }
    t
}
