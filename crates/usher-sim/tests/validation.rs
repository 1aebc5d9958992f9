//! The simulator against theory and itself: for the M/M/N queue (Poisson arrivals,
//! exponential handling, agents taking one conversation each, first come first served,
//! nobody leaving) the simulated mean wait and probability of waiting match Erlang C within
//! 3 % over a long run, for several loads; the values to match were computed independently
//! (Python, from the closed form with factorials), not by the code under test. The same seed
//! gives the same report byte for byte.

#![allow(clippy::unwrap_used)]

use usher_core::model::Strategy;
use usher_sim::model::{Dist, Setup};

fn mmn(agents: u32, per_minute: f64, arrivals: f64, seed: u64) -> Setup {
    Setup {
        rate_per_hour: vec![per_minute * 60.0],
        hours: arrivals / (per_minute * 60.0),
        handle: Dist::Exponential { mean_seconds: 60.0 },
        agents,
        default_handle_seconds: 60,
        seed,
        ..Setup::default()
    }
}

fn compare(setup: &Setup, strategies: &[Strategy], advise: bool) -> usher_sim::Report {
    let plans: Vec<Option<Strategy>> = strategies.iter().copied().map(Some).collect();
    usher_sim::compare(setup, None, &plans, advise, |_| {}).unwrap()
}

/// (agents, arrivals a minute, P(wait), mean wait in minutes), handling one minute on average:
/// loads of 70 % on 5, 10 and 15 agents.
const ERLANG_C: [(u32, f64, f64, f64); 3] =
    [(5, 3.5, 0.377838, 0.251892), (10, 7.0, 0.221731, 0.073910), (15, 10.5, 0.141151, 0.031367)];

#[test]
fn the_simulated_queue_matches_erlang_c_within_three_percent() {
    for (agents, rate, p_wait, wait_minutes) in ERLANG_C {
        // Waits are correlated from one customer to the next, so the mean converges slowly:
        // three million arrivals keep the sampling error (about 1 % here) well inside 3 %.
        let setup = mmn(agents, rate, 3_000_000.0, 42);
        let r = compare(&setup, &[Strategy::LeastOpen], false);
        let o = &r.strategies[0].outcome;
        let wait = o.wait_mean_seconds / 60.0;
        assert!(
            (o.probability_of_waiting - p_wait).abs() / p_wait < 0.03,
            "N={agents}: P(wait) {} vs {p_wait}",
            o.probability_of_waiting
        );
        assert!(
            (wait - wait_minutes).abs() / wait_minutes < 0.03,
            "N={agents}: mean wait {wait} vs {wait_minutes}"
        );
        // The formula in the crate agrees with the independent values too.
        assert!((r.theory.probability_of_waiting - p_wait).abs() < 1e-5);
        assert!(r.theory.exact);
        assert_eq!(o.abandoned, 0);
        assert!((o.occupancy - rate / f64::from(agents)).abs() < 0.01, "occupancy {}", o.occupancy);
    }
}

#[test]
fn the_same_seed_gives_the_same_report_byte_for_byte() {
    let mut setup = mmn(8, 6.0, 20_000.0, 7);
    setup.patience = Some(Dist::Exponential { mean_seconds: 90.0 });
    setup.max_open = 2;
    setup.slowdown = 0.3;
    let run = |s: &Setup| {
        serde_json::to_string(&compare(s, &[Strategy::RoundRobin, Strategy::LeastOpen], true)).unwrap()
    };
    let (a, b) = (run(&setup), run(&setup));
    assert_eq!(a, b);
    setup.seed = 8;
    assert_ne!(run(&setup), a, "another seed, another run");
}

#[test]
fn impatient_customers_leave_and_everyone_is_counted_once() {
    let mut setup = mmn(3, 4.0, 30_000.0, 3);
    setup.patience = Some(Dist::Exponential { mean_seconds: 30.0 });
    let r = compare(&setup, &[Strategy::RoundRobin], false);
    let o = &r.strategies[0].outcome;
    assert!(o.abandonment > 0.2, "overloaded with impatient customers: {}", o.abandonment);
    assert_eq!(o.answered + o.abandoned + o.unassigned + o.unanswered, o.arrived);
    assert_eq!((o.unassigned, o.unanswered), (0, 0));
    assert!(o.occupancy > 0.75 && o.occupancy <= 1.0, "agents are kept busy: {}", o.occupancy);
}

#[test]
fn the_staffing_advice_meets_the_goal_and_one_fewer_does_not() {
    // 10 conversations a minute of a minute each: 10 Erlangs.
    let setup = mmn(14, 10.0, 60_000.0, 5);
    let r = compare(&setup, &[Strategy::LeastOpen], true);
    let s = r.staffing.unwrap();
    assert!(s.simulated_service_level >= s.goal, "{s:?}");
    assert!(s.simulated_service_level_one_fewer < s.goal, "{s:?}");
    // For the M/M/N queue Erlang C is right: the simulation confirms its answer.
    assert_eq!(s.recommended_agents, s.erlang_c_agents, "{s:?}");
}

#[test]
fn weights_share_the_work_when_agents_are_free_to_take_it() {
    // 4 agents holding up to 10 each at 1.2 Erlangs: nobody is ever at the cap, so the
    // strategy alone decides who.
    let mut setup = mmn(4, 1.2, 60_000.0, 11);
    setup.max_open = 10;
    setup.weights = vec![3, 1, 1, 1];
    let r = compare(&setup, &[Strategy::Weighted, Strategy::RoundRobin], false);
    let share = |o: &usher_sim::report::Outcome, i: usize| f64::from(o.per_agent[i]) / o.answered as f64;
    let (weighted, rr) = (&r.strategies[0].outcome, &r.strategies[1].outcome);
    assert!((share(weighted, 0) - 0.5).abs() < 0.05, "weight 3 of 6: {}", share(weighted, 0));
    assert!((share(rr, 0) - 0.25).abs() < 0.03, "round robin ignores weights: {}", share(rr, 0));
    assert!(weighted.gini_conversations > rr.gini_conversations);
}
