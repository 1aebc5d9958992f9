//! The simulated desk, scenario by scenario: recorded traces replayed exactly, handling per
//! channel, shifts and breaks, online-only routing, daily limits, skills, languages, several
//! teams and the workflows that route to them. Traces of a few arrivals make each expected
//! wait a sum done by hand.

#![allow(clippy::unwrap_used)]

use serde_json::json;
use usher_core::model::Strategy;
use usher_core::queue::{estimate_wait, Throughput};
use usher_sim::model::Setup;
use usher_sim::report::Outcome;
use usher_sim::trace::{parse, Trace};
use usher_sim::Report;

fn setup(v: serde_json::Value) -> Setup {
    serde_json::from_value(v).unwrap()
}

fn replay(s: &Setup, trace: &str, plans: &[Option<Strategy>]) -> Report {
    let t: Trace = parse(trace).unwrap();
    let mut s = s.clone();
    usher_sim::fill_from_trace(&mut s, &t);
    usher_sim::compare(&s, Some(&t), plans, false, |_| {}).unwrap()
}

fn counted_once(o: &Outcome) {
    assert_eq!(o.answered + o.abandoned + o.unassigned + o.unanswered, o.arrived, "{o:?}");
}

#[test]
fn a_trace_is_replayed_with_its_recorded_handling_times() {
    // One agent; arrivals at 0, 10 and 20 s, each handled for 30 s: waits 0, 20 and 40 s.
    let s = setup(json!({ "handle": { "kind": "fixed", "seconds": 999 }, "agents": 1 }));
    let r = replay(&s, "arrived_at,handle_seconds\n0,30\n10,30\n20,30\n", &[None]);
    let o = &r.strategies[0].outcome;
    assert_eq!((o.arrived, o.answered), (3, 3));
    assert_eq!(o.wait_mean_seconds, 20.0);
    assert_eq!(o.wait_p99_seconds, 40.0);
    assert_eq!(r.trace_arrivals, Some(3));
    assert_eq!(r.strategies[0].name, "configured");
}

#[test]
fn handling_times_differ_by_channel() {
    // An e-mail takes 10 minutes, a chat one: the chat behind the e-mail waits 599 s.
    let s = setup(json!({
        "handle": { "kind": "fixed", "seconds": 60 },
        "handle_by_channel": { "email": { "kind": "fixed", "seconds": 600 } },
        "agents": 1
    }));
    let r = replay(&s, "arrived_at,channel\n0,email\n1,web_chat\n700,web_chat\n", &[None]);
    let o = &r.strategies[0].outcome;
    assert_eq!(o.answered, 3);
    assert!((o.wait_mean_seconds - 599.0 / 3.0).abs() < 1e-9, "{}", o.wait_mean_seconds);
}

#[test]
fn empirical_handling_times_come_from_the_trace_and_only_its_values_are_drawn() {
    let s = setup(json!({
        "rate_per_hour": [30], "hours": 200, "agents": 3,
        "handle": { "kind": "empirical" }
    }));
    let t = parse("arrived_at,handle_seconds\n0,100\n1,300\n2,\n").unwrap();
    let mut filled = s.clone();
    usher_sim::fill_from_trace(&mut filled, &t);
    assert_eq!(filled.handle, usher_sim::model::Dist::Empirical { seconds: vec![100.0, 300.0] });
    assert_eq!(filled.handle.mean_seconds(), 200.0);
    // Without observations the setup is refused, with them it runs on drawn arrivals.
    assert!(usher_sim::compare(&s, None, &[None], false, |_| {}).is_err());
    let r = usher_sim::compare(&filled, None, &[None], false, |_| {}).unwrap();
    // 30 an hour of 200 s on average is 1.67 Erlangs on 3 agents: 56 % busy.
    let occ = r.strategies[0].outcome.occupancy;
    assert!((occ - 30.0 * 200.0 / 3600.0 / 3.0).abs() < 0.03, "occupancy {occ}");
}

/// Two agents, Ana on a break from 12:00 to 12:30 on Monday, Ben holding two at once; two
/// chats at 12:05 and 12:06.
fn break_desk(only_online: bool) -> Setup {
    setup(json!({
        "handle": { "kind": "fixed", "seconds": 120 },
        "teams": [{ "name": "chat", "strategy": "round_robin", "only_online": only_online }],
        "staff": [
            { "name": "Ana", "max_open": 2, "shifts": [{ "start": "08:00", "end": "17:00" }],
              "breaks": [{ "at": "12:00", "minutes": 30 }] },
            { "name": "Ben", "max_open": 2, "shifts": [{ "start": "08:00", "end": "17:00" }] }
        ]
    }))
}

#[test]
fn online_only_routing_keeps_customers_from_agents_on_a_break() {
    let trace = "arrived_at,channel\n43500,whatsapp\n43560,whatsapp\n";
    let online = replay(&break_desk(true), trace, &[None]);
    let o = &online.strategies[0].outcome;
    assert_eq!((o.answered, o.wait_p99_seconds), (2, 0.0), "Ben takes both at once");
    assert_eq!(o.per_agent, vec![0, 2]);
    // Round robin without the online-only rule hands one to Ana, who answers at 12:30.
    let any = replay(&break_desk(false), trace, &[None]);
    let o = &any.strategies[0].outcome;
    assert_eq!(o.answered, 2);
    assert_eq!(o.wait_p99_seconds, (12 * 3600 + 1800 - 43500) as f64, "{o:?}");
}

#[test]
fn conversations_outside_a_shift_wait_for_it_and_occupancy_counts_staffed_time_only() {
    // One agent from 09:00 to 17:00 on weekdays; a chat at 03:00 on Monday waits six hours.
    let s = setup(json!({
        "handle": { "kind": "fixed", "seconds": 3600 },
        "staff": [{ "name": "Ana", "shifts": [{ "days": ["mon","tue","wed","thu","fri"],
                                               "start": "09:00", "end": "17:00" }] }],
        "hours": 24
    }));
    let r = replay(&s, "arrived_at\n10800\n36000\n", &[None]);
    let o = &r.strategies[0].outcome;
    assert_eq!(o.answered, 2);
    // The first is answered at 09:00 (6 h), the second, at 10:00, when the first is done.
    assert_eq!(o.wait_p99_seconds, 6.0 * 3600.0);
    assert_eq!(o.wait_median_seconds, 0.0);
    // Two hours handled of eight staffed.
    assert!((o.occupancy - 0.25).abs() < 1e-9, "{}", o.occupancy);
    // A Saturday arrival, the run ending with it (hours 0: the trace's span): the shifts go
    // on until Monday's takes it.
    let mut s = s;
    s.hours = 0.0;
    let r = replay(&s, "arrived_at\n453600\n", &[None]);
    let o = &r.strategies[0].outcome;
    assert_eq!((o.answered, o.unanswered), (1, 0), "Monday's shift takes it");
    assert_eq!(o.wait_p99_seconds, (2 * 86400 + 9 * 3600 - (453600 - 5 * 86400)) as f64);
}

#[test]
fn daily_limits_hold_each_day_and_start_again_at_midnight() {
    let s = setup(json!({
        "handle": { "kind": "fixed", "seconds": 60 },
        "staff": [{ "name": "agent", "count": 2, "daily_limit": 3 }],
        "hours": 48
    }));
    // Ten chats on Monday morning: six are answered, four wait for Tuesday 00:00.
    let rows: String = (0..10).map(|i| format!("{}\n", 36000 + i * 600)).collect();
    let r = replay(&s, &format!("arrived_at\n{rows}"), &[None]);
    let o = &r.strategies[0].outcome;
    counted_once(o);
    assert_eq!(o.answered, 10);
    assert_eq!(o.per_agent, vec![5, 5]);
    assert_eq!(o.probability_of_waiting, 0.4);
    // The first to wait came at 11:00 (the seventh); it is answered at midnight.
    assert_eq!(o.wait_p99_seconds, (86400 - 36000 - 6 * 600) as f64);
}

/// Two teams: Spanish speakers and the rest; a workflow routes by language and asks the
/// contact what it is about, sending billing questions to agents with the skill.
fn language_desk() -> Setup {
    setup(json!({
        "rate_per_hour": [40], "hours": 400, "seed": 9,
        "handle": { "kind": "exponential", "mean_seconds": 240 },
        "patience": { "kind": "exponential", "mean_seconds": 600 },
        "mix": { "languages": { "es": 1, "en": 3 } },
        "answers": { "topic": { "Billing": 1, "Other": 1 } },
        "teams": [
            { "name": "es", "id": 7, "strategy": "round_robin" },
            { "name": "en", "id": 8, "strategy": "least_open" }
        ],
        "staff": [
            { "name": "Lucía", "teams": ["es"], "languages": ["es", "en"], "max_open": 2,
              "skills": { "billing": 3 } },
            { "name": "Pablo", "teams": ["es"], "languages": ["es"], "max_open": 2 },
            { "name": "Emma", "teams": ["en"], "languages": ["en"], "max_open": 2,
              "skills": { "billing": 4 } },
            { "name": "Noah", "count": 2, "teams": ["en"], "languages": ["en"], "max_open": 2 }
        ],
        "workflows": [{
            "name": "Route by language", "trigger": { "kind": "conversation_opened" },
            "start": "topic",
            "steps": {
                "topic": { "kind": "ask", "text": "What is it about?", "options": ["Billing", "Other"],
                           "save_to": "topic", "next": "lang" },
                "lang": { "kind": "branch",
                          "branches": [{ "when": { "language_is": "es" }, "next": "es" }],
                          "otherwise": "en" },
                "es": { "kind": "branch",
                        "branches": [{ "when": { "field_equals": { "field": "topic", "value": "Billing" } },
                                       "next": "es_billing" }],
                        "otherwise": "es_any" },
                "es_billing": { "kind": "assign", "team": 7, "skills": { "billing": 2 } },
                "es_any": { "kind": "assign", "team": 7, "match_language": true },
                "en": { "kind": "branch",
                        "branches": [{ "when": { "field_equals": { "field": "topic", "value": "Billing" } },
                                       "next": "en_billing" }],
                        "otherwise": "en_any" },
                "en_billing": { "kind": "assign", "team": 8, "skills": { "billing": 2 } },
                "en_any": { "kind": "assign", "team": 8 }
            }
        }]
    }))
}

#[test]
fn a_workflow_routes_by_language_and_answer_to_teams_and_skilled_agents() {
    let s = language_desk();
    let r = usher_sim::compare(&s, None, &[None, Some(Strategy::LeastOpen)], false, |_| {}).unwrap();
    assert_eq!(r.agents, vec!["Lucía", "Pablo", "Emma", "Noah 1", "Noah 2"]);
    let run = &r.strategies[0];
    counted_once(&run.outcome);
    let (es, en) = (&run.teams[0], &run.teams[1]);
    assert_eq!((es.team.as_str(), en.team.as_str()), ("es", "en"));
    assert_eq!(es.outcome.arrived + en.outcome.arrived, run.outcome.arrived);
    // A quarter speak Spanish.
    let share = es.outcome.arrived as f64 / run.outcome.arrived as f64;
    assert!((share - 0.25).abs() < 0.02, "{share}");
    // Only team members take a team's conversations ...
    assert_eq!(es.outcome.per_agent.len(), 2);
    assert_eq!(en.outcome.per_agent.len(), 3);
    // ... and billing, half of each team's traffic, only the skilled: Lucía takes every
    // Spanish billing question and shares the rest with Pablo; Emma likewise in English.
    let (lucia, pablo) = (f64::from(es.outcome.per_agent[0]), f64::from(es.outcome.per_agent[1]));
    assert!(lucia / (lucia + pablo) > 0.6, "Lucía {lucia}, Pablo {pablo}");
    let emma = f64::from(en.outcome.per_agent[0]);
    let noahs = f64::from(en.outcome.per_agent[1] + en.outcome.per_agent[2]);
    assert!(emma / (emma + noahs) > 0.45, "Emma {emma}, Noahs {noahs}");
    for t in [es, en] {
        counted_once(&t.outcome);
    }
    // The compared strategy replaces the team's own: the Spanish team's round robin becomes
    // least open, so the run differs.
    assert_ne!(r.strategies[1].teams[0].outcome, es.outcome);
}

#[test]
fn a_dedicated_agent_step_and_nobody_eligible_are_counted() {
    let s = setup(json!({
        "rate_per_hour": [20], "hours": 50,
        "handle": { "kind": "exponential", "mean_seconds": 120 },
        "patience": { "kind": "fixed", "seconds": 300 },
        "mix": { "skills": { "japanese": 0.5 } },
        "teams": [{ "name": "desk" }],
        "staff": [{ "name": "Ana", "id": 42 }, { "name": "Ben" }],
        "workflows": [{ "name": "VIP", "trigger": { "kind": "conversation_opened" }, "start": "a",
                        "steps": { "a": { "kind": "assign", "agent": 42, "team": 1 } } }]
    }));
    let r = usher_sim::compare(&s, None, &[None], false, |_| {}).unwrap();
    let o = &r.strategies[0].outcome;
    counted_once(o);
    // Half need a skill nobody has: they wait until their patience runs out.
    let share = o.abandoned as f64 / o.arrived as f64;
    assert!((share - 0.5).abs() < 0.08, "{share}");
    // Ana (id 42, so second in id order) is tried first for the rest.
    assert!(o.per_agent[1] > 2 * o.per_agent[0], "{:?}", o.per_agent);
}

#[test]
fn a_bad_desk_is_refused_with_a_reason() {
    let refused = |v: serde_json::Value| {
        let s = setup(v);
        usher_sim::compare(&s, None, &[None], false, |_| {}).unwrap_err().to_string()
    };
    let base = || json!({ "handle": { "kind": "fixed", "seconds": 60 }, "rate_per_hour": [10], "hours": 10 });
    let with = |k: &str, v: serde_json::Value| {
        let mut b = base();
        b[k] = v;
        b
    };
    assert!(refused(with("staff", json!([{ "name": "a", "teams": ["nope"] }]))).contains("no team"));
    assert!(refused(with("staff", json!([{ "name": "a", "count": 0 }]))).contains("count"));
    assert!(refused(with("staff", json!([{ "name": "a", "skills": { "x": 9 } }]))).contains("skill"));
    assert!(refused(with("teams", json!([{ "name": "a" }, { "name": "a" }]))).contains("name"));
    let workflow = json!([{ "name": "w", "trigger": { "kind": "conversation_opened" }, "start": "a",
                            "steps": { "a": { "kind": "assign", "team": 5 } } }]);
    assert!(refused(with("workflows", workflow)).contains("not valid"));
    assert!(serde_json::from_value::<Setup>(json!({ "handle": { "kind": "fixed", "seconds": 1 },
        "staff": [{ "name": "a", "shifts": [{ "start": "25:00", "end": "08:00" }] }] }))
    .is_err());
    let t = parse("arrived_at,team\n0,ghosts\n").unwrap();
    let s = setup(base());
    let e = usher_sim::compare(&s, Some(&t), &[None], false, |_| {}).unwrap_err().to_string();
    assert!(e.contains("ghosts"), "{e}");
}

#[test]
fn the_same_seed_gives_the_same_desk_report() {
    let s = language_desk();
    let run =
        || serde_json::to_string(&usher_sim::compare(&s, None, &[None], true, |_| {}).unwrap()).unwrap();
    assert_eq!(run(), run());
}

#[test]
fn the_staffing_advice_varies_one_group_and_keeps_the_others() {
    // A fixed billing specialist and a chat group to size: 60 an hour of 3 minutes.
    let s = setup(json!({
        "rate_per_hour": [60], "hours": 300, "seed": 4,
        "handle": { "kind": "exponential", "mean_seconds": 180 },
        "target_seconds": 30, "service_goal": 0.9,
        "staff": [{ "name": "Billing" }, { "name": "Chat", "count": 9 }]
    }));
    let r = usher_sim::compare(&s, None, &[None], true, |_| {}).unwrap();
    let a = r.staffing.unwrap();
    assert_eq!(a.group.as_deref(), Some("Chat"), "the largest group");
    assert!(a.simulated_service_level >= 0.9 && a.simulated_service_level_one_fewer < 0.9, "{a:?}");
    // 3 Erlangs: with the specialist, Erlang C's 6 agents on duty are 5 chat agents.
    let six = usher_sim::erlang::service_level(6, 60.0 / 3600.0, 1.0 / 180.0, 30.0);
    let five = usher_sim::erlang::service_level(5, 60.0 / 3600.0, 1.0 / 180.0, 30.0);
    assert!(six >= 0.9 && five < 0.9, "{six} {five}");
    assert_eq!(a.recommended_agents, 5, "{a:?}");
    // Naming a group varies that one instead.
    let mut named = s.clone();
    named.staffing_group = Some("Billing".into());
    let b = usher_sim::compare(&named, None, &[None], true, |_| {}).unwrap().staffing.unwrap();
    assert_eq!(b.group.as_deref(), Some("Billing"));
    assert_eq!(b.recommended_agents, 1, "nine chat agents need no billing help: {b:?}");
    named.staffing_group = Some("Nobody".into());
    assert!(usher_sim::compare(&named, None, &[None], true, |_| {}).is_err());
}

/// Ana in team 1, Ben in team 2; the workflow assigns in team 1 and, as `then` says, moves
/// a conversation on to team 2.
fn two_desks(assign: serde_json::Value) -> Setup {
    setup(json!({
        "handle": { "kind": "fixed", "seconds": 600 },
        "teams": [{ "name": "first" }, { "name": "second" }],
        "staff": [{ "name": "Ana", "teams": ["first"] }, { "name": "Ben", "teams": ["second"] }],
        "workflows": [{ "name": "w", "trigger": { "kind": "conversation_opened" }, "start": "a",
                        "steps": { "a": assign, "b": { "kind": "assign", "team": 2 } } }]
    }))
}

#[test]
fn a_workflow_overflow_moves_a_waiting_conversation_to_another_team() {
    let trace = "arrived_at\n0\n10\n";
    let overflow =
        two_desks(json!({ "kind": "assign", "team": 1, "overflow": { "after_minutes": 2, "go_to": "b" } }));
    let r = replay(&overflow, trace, &[None]);
    let run = &r.strategies[0];
    assert_eq!(run.outcome.answered, 2);
    assert_eq!(run.outcome.wait_p99_seconds, 120.0, "Ben takes it two minutes after it queued");
    assert_eq!(run.outcome.per_agent, vec![1, 1]);
    assert_eq!(
        (run.teams[0].outcome.arrived, run.teams[1].outcome.arrived),
        (1, 1),
        "counted where it ended"
    );
    counted_once(&run.teams[1].outcome);
    // With an overflow later than Ana is free, it waits for her.
    let later = json!({ "kind": "assign", "team": 1, "overflow": { "after_minutes": 60, "go_to": "b" } });
    let plain = replay(&two_desks(later), trace, &[None]);
    assert_eq!(plain.strategies[0].outcome.wait_p99_seconds, 590.0);
    assert_eq!(plain.strategies[0].outcome.per_agent, vec![2, 0]);
}

#[test]
fn a_workflow_go_to_when_nobody_can_take_it_is_followed() {
    let go_to = two_desks(json!({ "kind": "assign", "team": 1, "when_nobody": { "go_to": "b" } }));
    let r = replay(&go_to, "arrived_at\n0\n10\n", &[None]);
    let o = &r.strategies[0].outcome;
    assert_eq!((o.answered, o.unassigned, o.wait_p99_seconds), (2, 0, 0.0), "{o:?}");
    assert_eq!(o.per_agent, vec![1, 1]);
    // Leaving it unassigned instead counts it so.
    let mut left = go_to.clone();
    left.workflows[0].steps = serde_json::from_value(
        json!({ "a": { "kind": "assign", "team": 1, "when_nobody": "leave_unassigned" } }),
    )
    .unwrap();
    let o = replay(&left, "arrived_at\n0\n10\n", &[None]).strategies[0].outcome.clone();
    assert_eq!((o.answered, o.unassigned), (1, 1));
    counted_once(&o);
}

/// Monday to Friday, 09:00 to 17:00 in Berlin; Tuesday 5 January 2027 a holiday.
fn berlin_office() -> serde_json::Value {
    json!({
        "time_zone": "Europe/Berlin",
        "weekly": { "mon": [["09:00", "17:00"]], "tue": [["09:00", "17:00"]], "wed": [["09:00", "17:00"]],
                    "thu": [["09:00", "17:00"]], "fri": [["09:00", "17:00"]] },
        "holidays": [{ "date": "2027-01-05", "name": "Epiphany eve" }]
    })
}

#[test]
fn a_workflow_reads_the_business_hours_on_the_dates_of_the_trace() {
    // Open: to the team; closed: an away message and nothing more.
    let s = setup(json!({
        "handle": { "kind": "fixed", "seconds": 60 },
        "time_zone": "Europe/Berlin",
        "business_hours": berlin_office(),
        "teams": [{ "name": "Support" }],
        "staff": [{ "name": "Ana" }],
        "workflows": [{ "name": "hours", "trigger": { "kind": "conversation_opened" }, "start": "hours", "steps": {
            "hours": { "kind": "branch", "branches": [{ "when": { "within_hours": { "open": true } }, "next": "assign" }],
                       "otherwise": "away" },
            "away": { "kind": "send_message", "text": "We are closed." },
            "assign": { "kind": "assign", "team": 1 }
        } }]
    }));
    let trace = "arrived_at\n\
                 2027-01-04T07:30:00Z\n\
                 2027-01-04T08:30:00Z\n\
                 2027-01-04T15:59:00Z\n\
                 2027-01-04T16:00:00Z\n\
                 2027-01-05T10:00:00Z\n\
                 2027-01-09T10:00:00Z\n";
    // In Berlin (UTC+1) 09:30 and 16:59 are open; 08:30 is not yet, 17:00 no longer, the
    // holiday and the Saturday not at all.
    let o = replay(&s, trace, &[None]).strategies[0].outcome.clone();
    assert_eq!((o.arrived, o.answered, o.unassigned), (6, 2, 4), "{o:?}");
    counted_once(&o);
    // Without business hours, every one is routed.
    let mut always = s.clone();
    always.business_hours = None;
    let o = replay(&always, trace, &[None]).strategies[0].outcome.clone();
    assert_eq!((o.answered, o.unassigned), (6, 0));
}

#[test]
fn a_dated_trace_is_replayed_in_the_desks_time_zone() {
    // Ana's shift starts at 09:00 desk time. A customer at 08:30 UTC is at 09:30 in Berlin
    // (answered at once) but half an hour early in UTC.
    let desk = |zone: &str| {
        setup(json!({
            "handle": { "kind": "fixed", "seconds": 60 },
            "time_zone": zone,
            "teams": [{ "name": "Support", "only_online": false }],
            "staff": [{ "name": "Ana", "shifts": [{ "days": ["mon"], "start": "09:00", "end": "17:00" }] }]
        }))
    };
    let trace = "arrived_at\n2027-01-04T08:30:00Z\n";
    let berlin = replay(&desk("Europe/Berlin"), trace, &[None]).strategies[0].outcome.clone();
    assert_eq!((berlin.answered, berlin.wait_p99_seconds), (1, 0.0), "{berlin:?}");
    let utc = replay(&desk("UTC"), trace, &[None]).strategies[0].outcome.clone();
    assert_eq!((utc.answered, utc.wait_p99_seconds), (1, 1_800.0), "{utc:?}");
}

#[test]
fn a_workflow_waiting_for_the_hours_routes_when_they_open_and_customers_may_leave_first() {
    // The business_hours_away template's shape: closed, an away message, then a check every
    // 15 minutes; calendar 7 is the team's.
    let s = setup(json!({
        "handle": { "kind": "fixed", "seconds": 600 },
        "time_zone": "Europe/Berlin",
        "calendars": { "7": berlin_office() },
        "teams": [{ "name": "Support" }],
        "staff": [{ "name": "Ana" }],
        "workflows": [{ "name": "away", "trigger": { "kind": "conversation_opened" }, "start": "hours", "steps": {
            "hours": { "kind": "branch", "branches": [{ "when": { "within_hours": { "calendar": 7, "open": true } }, "next": "assign" }],
                       "otherwise": "away" },
            "away": { "kind": "send_message", "text": "We open at 09:00.", "next": "wait" },
            "wait": { "kind": "wait", "minutes": 15, "next": "check" },
            "check": { "kind": "branch", "branches": [{ "when": { "within_hours": { "calendar": 7, "open": true } }, "next": "assign" }],
                       "otherwise": "wait" },
            "assign": { "kind": "assign", "team": 1 }
        } }]
    }));
    // 07:00 Berlin, patience 5 minutes: gone before the first check. 08:50: checked at 09:05,
    // answered then (900 s). 09:30: Ana is free again (09:15), answered at once. Friday
    // 16:55: open, answered at once. Friday 17:05: closed, checked every 15 minutes until
    // Monday 09:05, a wait of 64 hours.
    let trace = "arrived_at,patience_seconds\n\
                 2027-01-04T06:00:00Z,300\n\
                 2027-01-04T07:50:00Z,\n\
                 2027-01-04T08:30:00Z,\n\
                 2027-01-08T16:05:00Z,\n\
                 2027-01-08T15:55:00Z,\n";
    let r = replay(&s, trace, &[None]);
    let o = &r.strategies[0].outcome;
    assert_eq!((o.arrived, o.answered, o.abandoned, o.unassigned), (5, 4, 1, 0), "{o:?}");
    counted_once(o);
    // Waits: 900, 0, 0 (15:55 UTC is 16:55, open) and Friday 17:05 to Monday 09:05.
    let weekend = (2 * 24 * 3_600 + 16 * 3_600) as f64;
    assert_eq!(o.wait_p99_seconds, weekend, "{o:?}");
    assert!((o.wait_mean_seconds - (900.0 + weekend) / 4.0).abs() < 1e-6, "{o:?}");
    // The queue's estimate is judged against the wait in the queue, not the night before
    // it: 08:50 and 08:51 both wake at 09:05 and 09:06; the second queues behind the first
    // (done at 09:15), 540 s in the queue after 15 minutes in the workflow.
    let o = replay(&s, "arrived_at\n2027-01-04T07:50:00Z\n2027-01-04T07:51:00Z\n", &[None]).strategies[0]
        .outcome
        .clone();
    assert_eq!((o.answered, o.wait_p99_seconds), (2, 1_440.0), "{o:?}");
    let throughput =
        Throughput { releases: 0, window_seconds: 900, serving_slots: 1, default_handle_seconds: 300 };
    let estimate = estimate_wait(1, throughput).unwrap() as f64;
    assert_eq!(o.estimate_mean_error_seconds, estimate - 540.0, "{o:?}");
    // A calendar that never opens: the workflow looks every 15 minutes until a week after
    // the end, and the customer (who would wait for ever) is counted unanswered.
    let mut never = s.clone();
    never.calendars.insert(7, serde_json::from_value(json!({ "time_zone": "Europe/Berlin" })).unwrap());
    never.patience = None;
    let o = replay(&never, "arrived_at\n2027-01-04T07:50:00Z\n", &[None]).strategies[0].outcome.clone();
    assert_eq!((o.arrived, o.answered, o.unanswered), (1, 0, 1), "{o:?}");
    // A calendar no setup names is refused.
    let mut unknown = s.clone();
    unknown.calendars.clear();
    let err = usher_sim::compare(&unknown, Some(&parse(trace).unwrap()), &[None], false, |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("workflow \"away\" is not valid"), "{err}");
}

#[test]
fn returning_contacts_go_to_their_previous_agent_where_the_routing_prefers_it() {
    // Round robin alternates: x to one agent, y to the other, and y again would go back to
    // the first, unless its previous agent is preferred.
    let desk = |prefer: bool| {
        setup(json!({
            "handle": { "kind": "fixed", "seconds": 60 },
            "teams": [{ "name": "Support", "strategy": "round_robin", "prefer_previous_agent": prefer }],
            "staff": [{ "name": "Ana" }, { "name": "Ben" }]
        }))
    };
    let trace = "arrived_at,contact\n0,x\n10,y\n1000,y\n";
    let r = replay(&desk(true), trace, &[None]);
    let o = &r.strategies[0].outcome;
    assert_eq!((o.answered, o.returning_answered, o.same_agent_share), (3, 1, Some(1.0)), "{o:?}");
    assert!(
        usher_sim::table(&r).contains("1 returning contacts answered, 100.0 % by their previous agent"),
        "{}",
        usher_sim::table(&r)
    );
    let o = replay(&desk(false), trace, &[None]).strategies[0].outcome.clone();
    assert_eq!((o.returning_answered, o.same_agent_share), (1, Some(0.0)), "{o:?}");
    // Without contacts, nobody returns and the report says nothing of it.
    let o = replay(&desk(true), "arrived_at\n0\n10\n1000\n", &[None]).strategies[0].outcome.clone();
    assert_eq!((o.returning_answered, o.same_agent_share), (0, None));
}

#[test]
fn a_workflow_tells_returning_contacts_from_new_ones() {
    let s = two_desks(json!({ "kind": "branch",
        "branches": [{ "when": { "returning_contact": true }, "next": "b" }], "otherwise": "first" }));
    let mut s = s;
    s.workflows[0]
        .steps
        .insert("first".into(), serde_json::from_value(json!({ "kind": "assign", "team": 1 })).unwrap());
    let r = replay(&s, "arrived_at,contact\n0,x\n100,x\n200,y\n", &[None]);
    let run = &r.strategies[0];
    assert_eq!(
        (run.teams[0].outcome.arrived, run.teams[1].outcome.arrived),
        (2, 1),
        "x's second goes to the second team"
    );
}

#[test]
fn synthetic_contacts_return_in_the_share_asked_and_meet_their_agent_when_preferred() {
    let desk = |prefer: bool| {
        setup(json!({
            "rate_per_hour": [60], "hours": 400,
            "handle": { "kind": "exponential", "mean_seconds": 60 },
            "mix": { "returning": 0.5 },
            "teams": [{ "name": "Support", "prefer_previous_agent": prefer }],
            "staff": [{ "name": "agent", "count": 3 }]
        }))
    };
    let run = |s: &Setup| {
        usher_sim::compare(s, None, &[None], false, |_| {}).unwrap().strategies[0].outcome.clone()
    };
    let preferred = run(&desk(true));
    let share = preferred.returning_answered as f64 / preferred.answered as f64;
    assert!((share - 0.5).abs() < 0.03, "{share}");
    let plain = run(&desk(false));
    let (p, q) = (preferred.same_agent_share.unwrap(), plain.same_agent_share.unwrap());
    // Least open spreads them over three agents (about a third meet theirs); preferring the
    // previous agent brings them back to it whenever it is free (a third of the time it is
    // busy at this load).
    assert!(p > 0.6 && q < 0.4 && p - q > 0.25, "{p} against {q}");
}
