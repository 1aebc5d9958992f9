//! The workflow engine, step by step: what each seed pattern does for a contact, what comes
//! of answers, timers and routing outcomes, and that no sequence of inputs breaks it.

#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use serde_json::json;
use usher_core::calendar::{Calendar, CalendarSpec};
use usher_core::model::{AgentId, Timestamp};
use usher_workflow::document::Nobody;
use usher_workflow::engine::{advance, Advance, Effect, Facts, Input, Run, RunStatus, Until};
use usher_workflow::{parse, validate, Directory, Workflow};

/// Monday 1 February 2027, 10:00 UTC.
const T0: i64 = 1_801_476_000_000;
const MINUTE: i64 = 60_000;

fn workflow(doc: serde_json::Value) -> Workflow {
    let w = parse(&doc.to_string()).unwrap();
    let dir = Directory {
        teams: [1, 2, 3].into(),
        agents: [10].into(),
        calendars: [].into(),
        contact_fields: [].into(),
    };
    assert_eq!(validate(&w, &dir), vec![], "the test's workflow is valid");
    w
}

fn menu() -> Workflow {
    workflow(json!({
        "name": "Airline menu", "trigger": { "kind": "conversation_opened" }, "start": "ask",
        "steps": {
            "ask": { "kind": "ask", "text": "Hi {{contact.name}}, what do you need?", "options": ["Refund", "Change", "Order inquiry"],
                     "save_to": "need", "retries": 1, "on_invalid": "fallback",
                     "answers": [{ "option": "Refund", "next": "refunds" }, { "option": "Change", "next": "changes" }],
                     "next": "orders", "timeout_minutes": 30, "on_timeout": "fallback" },
            "refunds": { "kind": "assign", "team": 1, "overflow": { "after_minutes": 10, "go_to": "fallback" },
                         "no_reply": { "after_minutes": 5, "then": { "go_to": "fallback" } } },
            "changes": { "kind": "assign", "team": 2 },
            "orders": { "kind": "assign", "team": 3 },
            "fallback": { "kind": "assign", "team": 1, "when_nobody": "leave_unassigned" }
        }
    }))
}

fn step(w: &Workflow, run: &Run, input: Input, facts: &Facts, at: i64) -> Advance {
    advance(w, run, &input, facts, Timestamp(at)).unwrap()
}

fn sent(a: &Advance) -> Vec<String> {
    a.effects
        .iter()
        .filter_map(|e| match e {
            Effect::SendMessage { text, .. } => Some(text.clone()),
            _ => None,
        })
        .collect()
}

fn assigned_team(a: &Advance) -> Option<i64> {
    a.effects.iter().find_map(|e| match e {
        Effect::Assign { settings, .. } => settings.team,
        _ => None,
    })
}

fn waiting_at(run: &Run) -> Option<&str> {
    match &run.status {
        RunStatus::Waiting { step, .. } => Some(step),
        _ => None,
    }
}

#[test]
fn low_cost_greets_then_assigns_by_round_robin_to_online_agents() {
    let w = workflow(json!({
        "name": "Round robin + online only", "trigger": { "kind": "conversation_opened" }, "start": "welcome",
        "steps": {
            "welcome": { "kind": "send_message", "text": "Hi {{contact.name}}!", "next": "assign" },
            "assign": { "kind": "assign", "team": 1, "strategy": "round_robin", "only_online": true, "next": "told" },
            "told": { "kind": "send_message", "text": "{{agent.name}} will help you." }
        }
    }));
    let facts = Facts { contact_name: Some("Mia".into()), ..Facts::default() };
    let a = step(&w, &Run::new(), Input::Start, &facts, T0);
    assert_eq!(sent(&a), vec!["Hi Mia!"]);
    let Some(Effect::Assign { settings, exclude }) = a.effects.last() else { panic!("{:?}", a.effects) };
    assert_eq!((settings.team, settings.only_online, exclude.is_empty()), (Some(1), Some(true), true));
    assert_eq!(a.run.status, RunStatus::Waiting { step: "assign".into(), until: Until::Assignment });
    let facts = Facts { agent_name: Some("Ana".into()), ..facts };
    let b = step(&w, &a.run, Input::Assigned { agent: AgentId(10) }, &facts, T0 + 5);
    assert_eq!(sent(&b), vec!["Ana will help you."]);
    assert_eq!(b.run.status, RunStatus::Finished);
    assert_eq!(b.run.next_timer(), None);
}

#[test]
fn the_menu_saves_the_answer_and_routes_each_option_to_its_team() {
    let w = menu();
    let facts = Facts { contact_name: Some("Léa".into()), ..Facts::default() };
    let asked = step(&w, &Run::new(), Input::Start, &facts, T0);
    assert_eq!(sent(&asked), vec!["Hi Léa, what do you need?"]);
    assert!(asked.effects.contains(&Effect::Timer { at: Timestamp(T0 + 30 * MINUTE) }));
    assert_eq!(asked.run.next_timer(), Some(Timestamp(T0 + 30 * MINUTE)));
    for (answer, team, saved) in
        [("refund", 1, "Refund"), (" 2 ", 2, "Change"), ("Order inquiry", 3, "Order inquiry")]
    {
        let a = step(&w, &asked.run, Input::Message { text: answer.into() }, &facts, T0 + MINUTE);
        assert!(
            a.effects.contains(&Effect::SaveField { field: "need".into(), value: saved.into() }),
            "{answer}"
        );
        assert_eq!(assigned_team(&a), Some(team), "{answer}");
    }
}

#[test]
fn an_unexpected_answer_is_asked_again_then_goes_to_its_step() {
    let w = menu();
    let facts = Facts::default();
    let asked = step(&w, &Run::new(), Input::Start, &facts, T0);
    let again = step(&w, &asked.run, Input::Message { text: "pizza".into() }, &facts, T0 + MINUTE);
    assert_eq!(sent(&again), vec!["Hi there, what do you need?"], "asked again");
    assert_eq!(waiting_at(&again.run), Some("ask"));
    let spent = step(&w, &again.run, Input::Message { text: "pizza".into() }, &facts, T0 + 2 * MINUTE);
    assert_eq!(assigned_team(&spent), Some(1), "retries spent: the fallback");
    let Some(Effect::Assign { settings, .. }) = spent.effects.last() else { panic!() };
    assert_eq!(settings.when_nobody, Nobody::LeaveUnassigned);
}

#[test]
fn a_question_times_out_only_when_its_time_is_up() {
    let w = menu();
    let facts = Facts::default();
    let asked = step(&w, &Run::new(), Input::Start, &facts, T0);
    let early = step(&w, &asked.run, Input::Timer, &facts, T0 + 29 * MINUTE);
    assert_eq!(early.run, asked.run, "an early timer changes nothing");
    assert!(early.effects.is_empty());
    let late = step(&w, &asked.run, Input::Timer, &facts, T0 + 30 * MINUTE);
    assert_eq!(assigned_team(&late), Some(1));
    assert_eq!(late.trace[0].did, "no answer in time");
}

#[test]
fn a_queued_conversation_overflows_unless_it_is_assigned_first() {
    let w = menu();
    let facts = Facts::default();
    let asked = step(&w, &Run::new(), Input::Start, &facts, T0);
    let routed = step(&w, &asked.run, Input::Message { text: "Refund".into() }, &facts, T0 + MINUTE);
    let queued = step(&w, &routed.run, Input::Queued, &facts, T0 + MINUTE);
    assert!(queued.effects.contains(&Effect::Timer { at: Timestamp(T0 + 11 * MINUTE) }));
    assert_eq!(queued.run.status, RunStatus::Finished, "the run ends, its overflow watch stays");
    assert_eq!(queued.run.next_timer(), Some(Timestamp(T0 + 11 * MINUTE)));
    // Still waiting ten minutes later: to the fallback team.
    let overflow = step(&w, &queued.run, Input::Timer, &facts, T0 + 11 * MINUTE);
    assert_eq!(assigned_team(&overflow), Some(1));
    assert_eq!(waiting_at(&overflow.run), Some("fallback"));
    // Assigned from the queue in time: no overflow, and the agent's five minutes to reply
    // start now.
    let served = step(&w, &queued.run, Input::Assigned { agent: AgentId(10) }, &facts, T0 + 3 * MINUTE);
    assert_eq!(served.run.next_timer(), Some(Timestamp(T0 + 8 * MINUTE)));
    let replied = step(&w, &served.run, Input::AgentReplied, &facts, T0 + 4 * MINUTE);
    assert_eq!(replied.run.next_timer(), None);
    assert!(step(&w, &replied.run, Input::Timer, &facts, T0 + 11 * MINUTE).effects.is_empty());
    // Silent instead: to the fallback team.
    let silent = step(&w, &served.run, Input::Timer, &facts, T0 + 8 * MINUTE);
    assert_eq!(assigned_team(&silent), Some(1));
}

fn vip_and_hours() -> Workflow {
    workflow(json!({
        "name": "VIP and hours", "trigger": { "kind": "conversation_opened" }, "start": "route",
        "steps": {
            "route": { "kind": "branch", "branches": [
                { "when": { "has_tag": "vip" }, "next": "vip" },
                { "when": { "within_hours": { "open": false } }, "next": "away" },
                { "when": { "language_is": "fr" }, "next": "french" }
            ], "otherwise": "team" },
            "vip": { "kind": "assign", "agent": 10, "team": 1, "no_reply": { "after_minutes": 5, "then": "reassign" } },
            "away": { "kind": "send_message", "text": "We are closed; we open {{hours.next_opening}}.", "next": "later" },
            "later": { "kind": "wait", "minutes": 60, "next": "route" },
            "french": { "kind": "assign", "team": 3, "match_language": true },
            "team": { "kind": "assign", "team": 2, "when_nobody": { "go_to": "busy" } },
            "busy": { "kind": "send_message", "text": "All agents are busy: you are number {{queue.position}}, about {{queue.estimated_wait}}." }
        }
    }))
}

fn office() -> Calendar {
    let spec: CalendarSpec = serde_json::from_value(json!({
        "time_zone": "Europe/Paris",
        "weekly": { "mon": [["09:00", "18:00"]], "tue": [["09:00", "18:00"]] }
    }))
    .unwrap();
    Calendar::new(&spec).unwrap()
}

#[test]
fn a_vip_goes_to_the_dedicated_agent_and_is_reassigned_after_silence() {
    let w = vip_and_hours();
    let facts = Facts { tags: ["VIP".to_string()].into(), hours: Some(office()), ..Facts::default() };
    let a = step(&w, &Run::new(), Input::Start, &facts, T0);
    let Some(Effect::Assign { settings, .. }) = a.effects.last() else { panic!("{:?}", a.effects) };
    assert_eq!((settings.agent, settings.team), (Some(10), Some(1)));
    let held = step(&w, &a.run, Input::Assigned { agent: AgentId(10) }, &facts, T0 + 1);
    assert_eq!(held.run.next_timer(), Some(Timestamp(T0 + 1 + 5 * MINUTE)));
    // Silent for five minutes: reassigned, the silent agent excluded.
    let silent = step(&w, &held.run, Input::Timer, &facts, T0 + 1 + 5 * MINUTE);
    let Some(Effect::Assign { exclude, .. }) = silent.effects.last() else { panic!("{:?}", silent.effects) };
    assert_eq!(exclude, &vec![AgentId(10)]);
    assert_eq!(silent.run.status, RunStatus::Waiting { step: "vip".into(), until: Until::Assignment });
    // A reply in time cancels the watch.
    let replied = step(&w, &held.run, Input::AgentReplied, &facts, T0 + MINUTE);
    assert_eq!(replied.run.next_timer(), None);
    assert!(step(&w, &replied.run, Input::Timer, &facts, T0 + 6 * MINUTE).effects.is_empty());
}

#[test]
fn outside_business_hours_the_contact_is_told_when_it_opens_and_the_run_waits() {
    let w = vip_and_hours();
    let facts = Facts { hours: Some(office()), ..Facts::default() };
    // Monday 1 February 2027, 20:00 UTC is 21:00 in Paris: closed until Tuesday 09:00.
    let evening = T0 + 10 * 60 * MINUTE;
    let a = step(&w, &Run::new(), Input::Start, &facts, evening);
    assert_eq!(sent(&a), vec!["We are closed; we open Tuesday 09:00."]);
    assert_eq!(a.run.next_timer(), Some(Timestamp(evening + 60 * MINUTE)));
    // At Tuesday 08:00 UTC (09:00 in Paris) the branch sends it to the team.
    let morning = T0 + 22 * 60 * MINUTE;
    let b = step(&w, &a.run, Input::Timer, &facts, morning);
    assert_eq!(assigned_team(&b), Some(2));
}

#[test]
fn overcapacity_tells_the_place_in_the_queue() {
    let w = vip_and_hours();
    let facts = Facts { hours: Some(office()), queue: Some((4, Some(420))), ..Facts::default() };
    let a = step(&w, &Run::new(), Input::Start, &facts, T0);
    let Some(Effect::Assign { settings, .. }) = a.effects.last() else { panic!() };
    assert_eq!(settings.when_nobody, Nobody::LeaveUnassigned, "the core leaves it; the workflow goes on");
    let b = step(&w, &a.run, Input::Unassigned, &facts, T0 + 1);
    assert_eq!(sent(&b), vec!["All agents are busy: you are number 4, about 7 minutes."]);
}

#[test]
fn language_routing_and_the_trace_say_which_branch_held() {
    let w = vip_and_hours();
    let facts = Facts { language: Some("fr-CA".into()), ..Facts::default() };
    let a = step(&w, &Run::new(), Input::Start, &facts, T0);
    assert_eq!(assigned_team(&a), Some(3));
    assert_eq!(a.trace[0].step, "route");
    assert_eq!(a.trace[0].did, "branch 3 held: to french");
}

fn inputs() -> impl Strategy<Value = (Input, i64)> {
    (
        prop_oneof![
            Just(Input::Start),
            prop::sample::select(vec!["Refund", "2", "x", ""])
                .prop_map(|t| Input::Message { text: t.into() }),
            Just(Input::Timer),
            Just(Input::Assigned { agent: AgentId(10) }),
            Just(Input::Queued),
            Just(Input::Unassigned),
            Just(Input::AgentReplied),
        ],
        0..90 * MINUTE,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Any order of inputs at any times: no error, a bounded number of effects, a timer asked
    /// for whenever the run has one to wait for, and the same result for the same arguments.
    #[test]
    fn any_inputs_keep_the_run_coherent(seq in prop::collection::vec(inputs(), 1..30), vip in any::<bool>()) {
        for w in [menu(), vip_and_hours()] {
            let tags = if vip { ["vip".to_string()].into() } else { Default::default() };
            let facts = Facts { hours: Some(office()), tags, ..Facts::default() };
            let mut run = Run::new();
            let mut now = T0;
            let mut timers: Vec<Timestamp> = Vec::new();
            for (input, dt) in &seq {
                now += dt;
                let a = advance(&w, &run, input, &facts, Timestamp(now)).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(&a, &advance(&w, &run, input, &facts, Timestamp(now)).unwrap());
                prop_assert!(a.effects.len() <= 20);
                for e in &a.effects {
                    if let Effect::Timer { at } = e {
                        prop_assert!(at.0 > now, "a timer in the past");
                        timers.push(*at);
                    }
                }
                if let Some(next) = a.run.next_timer() {
                    prop_assert!(timers.contains(&next), "waits for {next:?} but never asked for that timer");
                }
                run = a.run;
            }
        }
    }
}

// ------------------------------------------------------------------------------------------
// Templates: each one fills in, validates, and does what its description says.
// ------------------------------------------------------------------------------------------

use usher_workflow::templates::{instantiate, Needs, Params, TemplateError, TEMPLATES};

fn params() -> Params {
    Params { team: Some(1), second_team: Some(2), agent: Some(10), calendar: Some(5) }
}

fn template_directory() -> Directory {
    Directory { teams: [1, 2].into(), agents: [10].into(), calendars: [5].into(), contact_fields: [].into() }
}

#[test]
fn every_template_fills_in_and_validates() {
    assert_eq!(TEMPLATES.len(), 11);
    for t in TEMPLATES {
        let w = instantiate(t.key, &params()).unwrap_or_else(|e| panic!("{}: {e}", t.key));
        assert_eq!(validate(&w, &template_directory()), vec![], "{}", t.key);
        assert_eq!(w.name, t.title);
        // What it needs, it refuses to do without.
        for need in t.needs {
            let mut p = params();
            match need {
                Needs::Team => p.team = None,
                Needs::SecondTeam => p.second_team = None,
                Needs::Agent => p.agent = None,
                Needs::Calendar => p.calendar = None,
            }
            assert_eq!(instantiate(t.key, &p), Err(TemplateError::Missing(*need)), "{}", t.key);
        }
    }
    assert!(matches!(instantiate("teleport", &params()), Err(TemplateError::Unknown(_))));
}

fn run_template(key: &str, facts: &Facts, inputs: &[(Input, i64)]) -> Vec<Advance> {
    let w = instantiate(key, &params()).unwrap();
    let mut run = Run::new();
    let mut out = Vec::new();
    for (input, at) in std::iter::once(&(Input::Start, T0)).chain(inputs) {
        let a = step(&w, &run, input.clone(), facts, *at);
        run = a.run.clone();
        out.push(a);
    }
    out
}

#[test]
fn the_templates_do_what_they_say() {
    let facts = Facts { contact_name: Some("Mia".into()), ..Facts::default() };
    // Low cost and high quality: a greeting, then the team by their strategy, online only.
    for (key, strategy) in
        [("round_robin_online_only", "round_robin"), ("least_open_online_only", "least_open")]
    {
        let a = &run_template(key, &facts, &[])[0];
        assert_eq!(sent(a), vec!["Hi Mia, thanks for your message! Someone will be with you shortly."]);
        let Some(Effect::Assign { settings, .. }) = a.effects.last() else { panic!("{key}") };
        assert_eq!(serde_json::to_value(settings.strategy).unwrap(), json!(strategy), "{key}");
        assert_eq!(settings.only_online, Some(true), "{key}");
    }
    // Sales rotation: weighted, busy included, and the lead is told who.
    let told = Facts { agent_name: Some("Dmitri".into()), team_name: Some("Sales".into()), ..facts.clone() };
    let runs =
        run_template("sales_lead_rotation", &told, &[(Input::Assigned { agent: AgentId(10) }, T0 + 1)]);
    assert_eq!(sent(&runs[1]), vec!["Thanks! Dmitri from Sales will get back to you."]);
    // The menu: Refund to the second team, anything else valid to the first.
    let runs = run_template("menu_then_team", &facts, &[(Input::Message { text: "Refund".into() }, T0 + 1)]);
    assert_eq!(assigned_team(&runs[1]), Some(2));
    // VIPs to their agent, with the team behind; others to the team.
    let vip = Facts { tags: ["vip".to_string()].into(), ..facts.clone() };
    let Some(Effect::Assign { settings, .. }) =
        run_template("vip_dedicated_agent", &vip, &[])[0].effects.last().cloned()
    else {
        panic!()
    };
    assert_eq!((settings.agent, settings.team), (Some(10), Some(1)));
    let Some(Effect::Assign { settings, .. }) =
        run_template("vip_dedicated_agent", &facts, &[])[0].effects.last().cloned()
    else {
        panic!()
    };
    assert_eq!((settings.agent, settings.team), (None, Some(1)));
    // Returning contacts: their previous agent first.
    let back = Facts { returning: true, ..facts.clone() };
    let Some(Effect::Assign { settings, .. }) =
        run_template("returning_previous_agent", &back, &[])[0].effects.last().cloned()
    else {
        panic!()
    };
    assert!(settings.prefer_previous_agent);
    // Overcapacity: queued, the contact is told their place.
    let queued = Facts { queue: Some((3, Some(240))), ..facts.clone() };
    let runs = run_template("overcapacity_message", &queued, &[(Input::Queued, T0 + 1)]);
    assert_eq!(
        sent(&runs[1]),
        vec!["All our agents are busy. You are number 3 in line; the wait is about 4 minutes."]
    );
    // Assigned-to-agent message with the agent's name.
    let runs =
        run_template("assigned_agent_message", &told, &[(Input::Assigned { agent: AgentId(10) }, T0 + 1)]);
    assert_eq!(
        sent(&runs[1]),
        vec!["Dmitri is taking care of your conversation and usually replies within a few minutes."]
    );
    assert_eq!(runs[1].run.next_timer(), Some(Timestamp(T0 + 1 + 10 * MINUTE)), "the no-reply watch");
    // On close: released and tagged.
    let a = &run_template("unassign_on_close", &facts, &[])[0];
    assert_eq!(a.effects[0], Effect::Unassign);
    assert!(
        matches!(&a.effects[1], Effect::UpdateContact { add_tags, .. } if add_tags == &vec!["served".to_string()])
    );
    // By language: French to the second team.
    let french = Facts { language: Some("fr".into()), ..facts.clone() };
    assert_eq!(assigned_team(&run_template("route_by_language", &french, &[])[0]), Some(2));
    assert_eq!(assigned_team(&run_template("route_by_language", &facts, &[])[0]), Some(1));
}

#[test]
fn the_away_template_waits_for_the_opening() {
    let mut calendars = std::collections::BTreeMap::new();
    calendars.insert(5, office());
    let facts = Facts { calendars, hours: Some(office()), ..Facts::default() };
    // Monday 21:00 in Paris: told Tuesday 09:00, then checked every 15 minutes until open.
    let evening = T0 + 10 * 60 * MINUTE;
    let w = instantiate("business_hours_away", &params()).unwrap();
    let a = step(&w, &Run::new(), Input::Start, &facts, evening);
    assert_eq!(
        sent(&a),
        vec!["Thanks for your message! We are closed now and open Tuesday 09:00; we will answer then."]
    );
    let mut run = a.run;
    let mut now = evening;
    let mut assigned_at = None;
    for _ in 0..100 {
        now += 15 * MINUTE;
        let b = step(&w, &run, Input::Timer, &facts, now);
        if assigned_team(&b) == Some(1) {
            assigned_at = Some(now);
            break;
        }
        assert!(sent(&b).is_empty(), "told only once");
        run = b.run;
    }
    let opened = T0 + 22 * 60 * MINUTE; // Tuesday 08:00 UTC, 09:00 in Paris
    let at = assigned_at.expect("assigned once open");
    assert!(at >= opened && at < opened + 15 * MINUTE, "assigned within a check of the opening");
}
