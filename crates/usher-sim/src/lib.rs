//! # usher-sim: choose a strategy and a staffing level on evidence
//!
//! [`compare`] runs the routing core (`usher_core::memory`, the very decide, queue and drain
//! the server runs) and the workflow engine (`usher_workflow::engine`, whose assign steps make
//! the requests) in virtual time against synthetic traffic ([`model::Setup`]: Poisson
//! arrivals with a rate per hour of the week and a mix of channels, languages, priorities and
//! needed skills; handling per channel and patience drawn from distributions) or a recorded
//! [`trace`], on a desk of teams and agents with caps, daily limits, weights, skills,
//! languages, shifts and breaks ([`desk`]), in the desk's time zone with its business hours
//! and calendars read on the simulated dates ([`clock`]), once as configured or once per
//! strategy compared, and reports what customers and agents would live through, for the desk
//! and each team ([`report::Outcome`]). [`erlang`] gives the classical M/M/N answer, against which the
//! simulation is validated, and the staffing advice: the fewest agents Erlang C says meet the
//! service goal, confirmed by simulating that many and one fewer.
//!
//! Everything is deterministic: the same setup and seed give the same report, byte for byte.

pub mod clock;
pub mod desk;
pub mod engine;
pub mod erlang;
pub mod model;
pub mod report;
pub mod rng;
pub mod trace;

use desk::Desk;
use model::{Dist, Setup, SetupError};
use report::Outcome;
use serde::Serialize;
use std::fmt::Write;
use trace::Trace;
use usher_core::model::Strategy;

/// One run: the desk as configured, or with every team on one strategy.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StrategyRun {
    /// The strategy every team used (none: each its own, as configured).
    pub strategy: Option<Strategy>,
    /// What the run is called: the strategy's name, or "configured".
    pub name: String,
    /// What it gave, for the whole desk.
    pub outcome: Outcome,
    /// And for each team, when there are several.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub teams: Vec<TeamRun>,
}

/// One team's share of a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TeamRun {
    /// The team's name.
    pub team: String,
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
    /// its average number of slots): where the search starts for agents alike.
    pub erlang_c_agents: u32,
    /// The staff group varied (`staffing_group`, or the largest), when the setup has groups: its count is searched,
    /// the others kept, and the counts below are that group's.
    pub group: Option<String>,
    /// The fewest agents (of the group) the simulation confirms meet the goal (first
    /// strategy): the search starts from Erlang C's answer (or the group's count) and goes
    /// up while the simulated service level falls short (patience, several conversations at
    /// once, slowdown, shifts and skills are outside Erlang C's model) or down while one
    /// fewer still meets it.
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
    /// Arrivals replayed from a trace (none: drawn).
    pub trace_arrivals: Option<u64>,
    /// The agents' names, in id order (the load charts' bars).
    pub agents: Vec<String>,
    /// Theory.
    pub theory: Theory,
    /// One run per strategy, in the order asked.
    pub strategies: Vec<StrategyRun>,
    /// The staffing advice, when asked for.
    pub staffing: Option<Staffing>,
}

/// The mean handling time of the traffic, seconds: the recorded times and the channels'
/// distributions over a trace, the channel mix's weighted mean otherwise.
fn mean_handle_seconds(setup: &Setup, trace: Option<&Trace>) -> f64 {
    match trace {
        Some(t) if !t.arrivals.is_empty() => {
            let total: f64 = t
                .arrivals
                .iter()
                .map(|a| {
                    a.handle_millis.map_or_else(|| setup.handle_for(a.channel).mean_seconds(), |m| m / 1000.0)
                })
                .sum();
            total / t.arrivals.len() as f64
        }
        _ => {
            let shares: f64 = setup.mix.channels.values().sum();
            if shares > 0.0 {
                setup.mix.channels.iter().map(|(c, s)| s * setup.handle_for(*c).mean_seconds()).sum::<f64>()
                    / shares
            } else {
                setup.handle_for(usher_core::model::Channel::WebChat).mean_seconds()
            }
        }
    }
}

/// Arrivals per second: on average, and in the busiest hour of the week.
fn rates(setup: &Setup, trace: Option<&Trace>) -> (f64, f64) {
    match trace {
        Some(t) => {
            let span = (t.span_millis() as f64 / 1000.0).max(3600.0);
            let mut hours: std::collections::BTreeMap<i64, u64> = std::collections::BTreeMap::new();
            for a in &t.arrivals {
                *hours.entry(a.at / 3_600_000).or_default() += 1;
            }
            let busiest = hours.values().copied().max().unwrap_or(0) as f64 / 3600.0;
            (t.arrivals.len() as f64 / span, busiest)
        }
        None => {
            (setup.mean_rate_per_second(), setup.rate_per_hour.iter().copied().fold(0.0, f64::max) / 3600.0)
        }
    }
}

/// The theory for a setup on its desk (and its trace).
pub fn theory(setup: &Setup, desk: &Desk, trace: Option<&Trace>) -> Theory {
    let (rate, _) = rates(setup, trace);
    let mu = 1.0 / mean_handle_seconds(setup, trace);
    let servers: u32 = desk.agents.iter().map(|a| a.agent.max_open).sum();
    let exact = trace.is_none()
        && desk.agents.iter().all(|a| a.agent.max_open == 1)
        && setup.patience.is_none()
        && setup.rate_per_hour.len() == 1
        && matches!(setup.handle, Dist::Exponential { .. })
        && setup.handle_by_channel.is_empty()
        && setup.staff.iter().all(|g| g.shifts.is_empty() && g.daily_limit.is_none() && g.skills.is_empty())
        && setup.mix.skills.is_empty()
        && setup.mix.languages.is_empty()
        && setup.teams.len() <= 1
        && setup.workflows.is_empty();
    Theory {
        erlangs: rate / mu,
        probability_of_waiting: erlang::probability_of_waiting(servers, rate / mu),
        wait_mean_seconds: erlang::mean_wait(servers, rate, mu),
        service_level: erlang::service_level(servers, rate, mu, setup.target_seconds),
        exact,
    }
}

/// Fills the empirical distributions a setup leaves empty from a trace's recorded times:
/// a channel's from that channel's rows, `handle` and `patience` from every row.
pub fn fill_from_trace(setup: &mut Setup, trace: &Trace) {
    let fill = |d: &mut Dist, observed: Vec<f64>| {
        if let Dist::Empirical { seconds } = d {
            if seconds.is_empty() {
                *seconds = observed;
            }
        }
    };
    fill(&mut setup.handle, trace.handling_seconds(None));
    for (channel, d) in &mut setup.handle_by_channel {
        fill(d, trace.handling_seconds(Some(*channel)));
    }
    if let Some(p) = &mut setup.patience {
        fill(p, trace.patience_seconds());
    }
}

/// Checks a setup with its trace (the setup, and the teams the trace names), and gives its
/// desk.
pub fn check(setup: &Setup, trace: Option<&Trace>) -> Result<Desk, SetupError> {
    let desk = setup.check(trace.is_some())?;
    if let Some(t) = trace {
        if let Some((i, a)) = t
            .arrivals
            .iter()
            .enumerate()
            .find(|(_, a)| a.team.as_ref().is_some_and(|n| !desk.teams.iter().any(|x| &x.name == n)))
        {
            return Err(SetupError::Invalid(format!(
                "the trace's arrival {} names team {:?}, which the setup does not have",
                i + 1,
                a.team.as_deref().unwrap_or_default()
            )));
        }
    }
    Ok(desk)
}

/// The setup with `n` agents: `agents` when they are alike, else `n` in the staffing group
/// (the setup's `staffing_group`, or the first of the largest), the others unchanged.
pub fn with_agents(setup: &Setup, n: u32) -> Setup {
    let mut s = setup.clone();
    match largest_group(&s) {
        None => s.agents = n.max(1),
        Some(g) => s.staff[g].count = n.max(1),
    }
    s
}

fn largest_group(setup: &Setup) -> Option<usize> {
    if let Some(name) = &setup.staffing_group {
        return setup.staff.iter().position(|g| &g.name == name);
    }
    let most = setup.staff.iter().map(|g| g.count).max()?;
    setup.staff.iter().position(|g| g.count == most)
}

fn simulate(
    setup: &Setup,
    trace: Option<&Trace>,
    plan: Option<Strategy>,
    progress: impl FnMut(f64),
) -> engine::RunOutcome {
    engine::run(setup, &Desk::build(setup), trace, plan, progress)
}

/// Runs the desk once per entry of `plans` (a strategy for every team, or none: as
/// configured), on the trace's arrivals or drawn ones, and the staffing advice when `advise`,
/// telling `progress` the share done. The setup is checked first ([`check`]).
pub fn compare(
    setup: &Setup,
    trace: Option<&Trace>,
    plans: &[Option<Strategy>],
    advise: bool,
    mut progress: impl FnMut(f64),
) -> Result<Report, SetupError> {
    let desk = check(setup, trace)?;
    // A dated trace is replayed from the Monday of its week in the desk's time zone.
    let zoned = trace.and_then(|t| desk.clock.zoned(t));
    let trace = zoned.as_ref().or(trace);
    let runs = plans.len() + if advise { 2 } else { 0 };
    let mut done = 0usize;
    let step = |done: usize| move |p: f64| (done as f64 + p) / runs.max(1) as f64;
    let mut out = Vec::new();
    for plan in plans {
        let share = step(done);
        let r = engine::run(setup, &desk, trace, *plan, |p| progress(share(p)));
        out.push(StrategyRun {
            strategy: *plan,
            name: plan.map_or("configured", Strategy::as_str).to_string(),
            outcome: r.outcome,
            teams: desk
                .teams
                .iter()
                .zip(r.teams)
                .map(|(t, outcome)| TeamRun { team: t.name.clone(), outcome })
                .collect(),
        });
        done += 1;
    }
    let staffing = if advise {
        let (_, busiest) = rates(setup, trace);
        let mu = 1.0 / mean_handle_seconds(setup, trace);
        let slots = erlang::staffing(busiest, mu, setup.target_seconds, setup.service_goal);
        let per_agent = (desk.agents.iter().map(|a| a.agent.max_open).sum::<u32>() as f64
            / desk.agents.len().max(1) as f64)
            .max(1.0);
        let erlang_c_agents = ((f64::from(slots) / per_agent).ceil() as u32).max(1);
        let group = largest_group(setup);
        let start = group.map_or(erlang_c_agents, |g| setup.staff[g].count);
        let first = plans.first().copied().flatten();
        let level = |n: u32, progress: &mut dyn FnMut(f64)| {
            simulate(&with_agents(setup, n), trace, first, progress).outcome.service_level
        };
        let mut n = start;
        let mut reached = level(n, &mut |p| progress(step(done)(p)));
        let mut below = None;
        if reached >= setup.service_goal {
            while n > 1 {
                let fewer = level(n - 1, &mut |p| progress(step(done + 1)(p)));
                if fewer < setup.service_goal {
                    below = Some(fewer);
                    break;
                }
                n -= 1;
                reached = fewer;
            }
        } else {
            while reached < setup.service_goal && n < start + 20 {
                below = Some(reached);
                n += 1;
                reached = level(n, &mut |p| progress(step(done)(p)));
            }
        }
        Some(Staffing {
            goal: setup.service_goal,
            erlang_c_agents,
            group: group.map(|g| setup.staff[g].name.clone()),
            recommended_agents: n,
            simulated_service_level: reached,
            simulated_service_level_one_fewer: below.unwrap_or(0.0),
        })
    } else {
        None
    };
    Ok(Report {
        setup: setup.clone(),
        trace_arrivals: trace.map(|t| t.arrivals.len() as u64),
        agents: desk.agents.iter().map(|a| a.name.clone()).collect(),
        theory: theory(setup, &desk, trace),
        strategies: out,
        staffing,
    })
}

/// The report as a table for the terminal.
pub fn table(r: &Report) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "{} agents in {} team{}, {:.1} Erlangs offered, {}, seed {}",
        r.agents.len(),
        r.setup.teams.len().max(1),
        if r.setup.teams.len() > 1 { "s" } else { "" },
        r.theory.erlangs,
        match r.trace_arrivals {
            Some(n) => format!("{n} arrivals replayed from the trace"),
            None => format!("{:.0} h simulated", r.setup.hours),
        },
        r.setup.seed
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
    let row = |t: &mut String, name: &str, o: &Outcome| {
        let _ = writeln!(
            t,
            "{:<12} {:>9} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>8.3} {:>7.3} {:>7.3} {:>6.3} {:>9.3} {:>8.1}",
            name,
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
    };
    for s in &r.strategies {
        row(&mut t, &s.name, &s.outcome);
        for team in &s.teams {
            row(&mut t, &format!("  {}", team.team), &team.outcome);
        }
        if let Some(same) = s.outcome.same_agent_share {
            let _ = writeln!(
                t,
                "{:<12} {} returning contacts answered, {:.1} % by their previous agent",
                "",
                s.outcome.returning_answered,
                same * 100.0
            );
        }
        let left = s.outcome.unassigned + s.outcome.unanswered;
        if left > 0 {
            let _ = writeln!(
                t,
                "{:<12} {} left unassigned, {} still waiting at the end",
                "", s.outcome.unassigned, s.outcome.unanswered
            );
        }
    }
    let th = &r.theory;
    // Erlang C speaks of agents alike, always there: for a desk of groups and shifts it says
    // nothing worth a row (the JSON still carries it).
    if r.setup.staff.is_empty() && r.setup.teams.len() <= 1 {
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
    }
    if let Some(s) = &r.staffing {
        let who = match &s.group {
            None => "agents".to_string(),
            Some(g) => format!("in group {g:?} (the others as they are)"),
        };
        let verdict = if s.simulated_service_level >= s.goal {
            format!("recommend {} {who}", s.recommended_agents)
        } else {
            format!("not reached with {} {who}", s.recommended_agents)
        };
        let _ = writeln!(
            t,
            "staffing for {:.0} % within {:.0} s: Erlang C says {} agents on duty in the busiest hour; simulated, {} {who} give {:.1} %{}: {verdict}",
            s.goal * 100.0,
            r.setup.target_seconds,
            s.erlang_c_agents,
            s.recommended_agents,
            s.simulated_service_level * 100.0,
            if s.recommended_agents > 1 {
                format!(
                    " and {} give {:.1} %",
                    s.recommended_agents - 1,
                    s.simulated_service_level_one_fewer * 100.0
                )
            } else {
                String::new()
            },
        );
    }
    t
}
