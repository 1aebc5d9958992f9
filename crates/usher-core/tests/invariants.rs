//! Property tests of the routing core's invariants over random sequences of events, run
//! against the in-memory workspace, with every invariant checked after every step and every
//! automatic assignment re-checked by an independent eligibility model written here.

#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use proptest::strategy::Strategy;
use std::collections::BTreeMap;
use usher_core::decide::Outcome;
use usher_core::memory::Workspace;
use usher_core::model::{
    Agent, AgentId, Channel, ConversationId, Day, Presence, Priority, Skill, Team, TeamId, Timestamp,
};
use usher_core::queue::{QueueKey, Throughput};
use usher_core::request::*;
use usher_core::{decide, Context, Decision, Snapshot};

const CHANNELS: [Channel; 3] = [Channel::Whatsapp, Channel::Email, Channel::WebChat];

#[derive(Debug, Clone)]
enum Op {
    Open {
        team: usize,
        dedicated: Option<(usize, u8)>,
        previous: Option<usize>,
        priority: u8,
        channel: usize,
        skill: Option<u8>,
        language: bool,
        queue: bool,
        cap: Option<u32>,
        busy: bool,
    },
    Close(usize),
    Unassign(usize),
    Claim(usize, usize),
    Assign(usize, usize, bool),
    Reopen(usize),
    Transfer(usize, usize),
    Presence(usize, u8),
    MaxOpen(usize, u32),
    Join(usize, usize),
    Tick(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..3usize, proptest::option::of((0..8usize, 0..3u8)), proptest::option::of(0..8usize), 0..4u8, 0..3usize,
              proptest::option::of(1..6u8), any::<bool>(), any::<bool>(), proptest::option::of(0..4u32), any::<bool>())
            .prop_map(|(team, dedicated, previous, priority, channel, skill, language, queue, cap, busy)| Op::Open {
                team, dedicated, previous, priority, channel, skill, language, queue, cap, busy
            }),
        2 => (0..40usize).prop_map(Op::Close),
        1 => (0..40usize).prop_map(Op::Unassign),
        1 => (0..40usize, 0..8usize).prop_map(|(c, a)| Op::Claim(c, a)),
        1 => (0..40usize, 0..8usize, any::<bool>()).prop_map(|(c, a, f)| Op::Assign(c, a, f)),
        1 => (0..40usize).prop_map(Op::Reopen),
        1 => (0..40usize, 0..3usize).prop_map(|(c, t)| Op::Transfer(c, t)),
        2 => (0..8usize, 0..4u8).prop_map(|(a, p)| Op::Presence(a, p)),
        1 => (0..8usize, 0..5u32).prop_map(|(a, m)| Op::MaxOpen(a, m)),
        1 => (0..8usize, 0..3usize).prop_map(|(a, t)| Op::Join(a, t)),
        1 => (0..3u8).prop_map(Op::Tick),
    ]
}

fn presence(p: u8) -> Presence {
    [Presence::Online, Presence::Busy, Presence::Away, Presence::Offline][usize::from(p % 4)]
}

fn strategy(s: u8) -> usher_core::model::Strategy {
    [
        usher_core::model::Strategy::RoundRobin,
        usher_core::model::Strategy::LeastOpen,
        usher_core::model::Strategy::Weighted,
    ][usize::from(s % 3)]
}

#[derive(Debug, Clone)]
struct AgentSpec {
    presence: u8,
    max_open: u32,
    daily: Option<u32>,
    weight: u32,
    teams: Vec<bool>,
    billing: Option<u8>,
    french: bool,
    email_cap: Option<u32>,
}

fn agent_spec() -> impl Strategy<Value = AgentSpec> {
    (
        0..4u8,
        0..4u32,
        proptest::option::of(1..6u32),
        0..4u32,
        proptest::collection::vec(any::<bool>(), 3),
        proptest::option::of(1..6u8),
        any::<bool>(),
        proptest::option::of(0..3u32),
    )
        .prop_map(|(presence, max_open, daily, weight, teams, billing, french, email_cap)| AgentSpec {
            presence,
            max_open,
            daily,
            weight,
            teams,
            billing,
            french,
            email_cap,
        })
}

fn build(specs: &[AgentSpec], teams: &[(u8, bool)]) -> Snapshot {
    let agents = specs
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let mut a = Agent::new(AgentId(i as i64 + 1), s.max_open);
            a.presence = presence(s.presence);
            a.daily_limit = s.daily;
            a.weight = s.weight;
            a.teams =
                s.teams.iter().enumerate().filter(|(_, m)| **m).map(|(t, _)| TeamId(t as i64 + 1)).collect();
            if let Some(l) = s.billing {
                a.skills.push(Skill { name: "billing".into(), level: l });
            }
            a.languages = if s.french { vec!["fr".into(), "en".into()] } else { vec!["en".into()] };
            a.channel_caps.set(Channel::Email, s.email_cap);
            a
        })
        .collect();
    let teams = teams
        .iter()
        .enumerate()
        .map(|(i, (s, online))| {
            let mut t = Team::new(TeamId(i as i64 + 1), strategy(*s));
            t.only_online = *online;
            t
        })
        .collect();
    Snapshot::new(agents, teams).unwrap()
}

/// The independent model of eligibility: what the issue says, written again.
fn eligible(
    snap: &Snapshot,
    agent: AgentId,
    team: Option<TeamId>,
    req: &AssignRequest,
    ctx: Context,
) -> bool {
    let Some(a) = snap.agent(agent) else { return false };
    if let Some(t) = team {
        if !a.teams.contains(&t) {
            return false;
        }
    }
    let only_online = req
        .rules
        .only_online
        .unwrap_or_else(|| team.and_then(|t| snap.team(t)).is_none_or(|t| t.only_online));
    if only_online {
        let ok = a.presence == Presence::Online
            || (a.presence == Presence::Busy && req.rules.include_busy)
            || (a.presence == Presence::Away && req.rules.include_away);
        if !ok {
            return false;
        }
    }
    let cap = req.rules.cap.map_or(a.max_open, |c| c.min(a.max_open));
    if a.open >= cap {
        return false;
    }
    if req.rules.channel_caps {
        if let Some(c) = a.channel_caps.get(req.channel) {
            if a.open_by_channel.get(req.channel) >= c {
                return false;
            }
        }
    }
    if req.rules.daily_limit {
        if let Some(l) = a.daily_limit {
            let today = if a.received.day == ctx.today { a.received.count } else { 0 };
            if today >= l {
                return false;
            }
        }
    }
    for s in &req.requirements.skills {
        if !a.skills.iter().any(|k| k.name == s.name && k.level >= s.min_level) {
            return false;
        }
    }
    if let Some(l) = &req.requirements.language {
        if !a.languages.iter().any(|x| x == l) {
            return false;
        }
    }
    true
}

/// Checks automatic assignments, in the order they were made, against the snapshot as it
/// stood just before them: `after` with those assignments taken back out.
fn check_auto(
    ws: &Workspace,
    decisions: &[(ConversationId, Decision)],
    ctx: Context,
) -> Result<(), TestCaseError> {
    let mut snap = ws.snapshot.clone();
    let assigned: Vec<(AgentId, AssignRequest, &Decision)> = decisions
        .iter()
        .filter_map(|(id, d)| match d.outcome {
            Outcome::Assigned(a) => Some((a, ws.conversation(*id).unwrap().request.clone(), d)),
            _ => None,
        })
        .collect();
    for (a, req, _) in &assigned {
        let mut agents: Vec<Agent> = snap.agents().to_vec();
        let x = agents.iter_mut().find(|x| x.id == *a).unwrap();
        x.open -= 1;
        x.open_by_channel.set(req.channel, x.open_by_channel.get(req.channel) - 1);
        x.received.count -= 1;
        snap = Snapshot::new(agents, snap.teams().to_vec()).unwrap();
    }
    for (agent, req, d) in &assigned {
        let attempt = d.trace.attempts.iter().find(|x| x.chosen == Some(*agent)).unwrap();
        let team = match attempt.kind {
            usher_core::trace::AttemptKind::Dedicated { .. } => None,
            usher_core::trace::AttemptKind::PreviousAgent { .. } => req.team(),
            usher_core::trace::AttemptKind::Team { team, .. } => Some(team),
        };
        prop_assert!(
            eligible(&snap, *agent, team, req, ctx),
            "ineligible automatic assignment of {agent} for {req:?}\n{d:?}"
        );
        snap.record_assignment(*agent, req.channel, ctx);
    }
    Ok(())
}

fn check_state(ws: &Workspace, ctx: Context) -> Result<(), TestCaseError> {
    // Counters equal the truth; one assignee at most (status Assigned iff assignee).
    let mut open: BTreeMap<AgentId, u32> = BTreeMap::new();
    let mut by_channel: BTreeMap<(AgentId, Channel), u32> = BTreeMap::new();
    for (_, r) in ws.conversations() {
        let s = r.state;
        prop_assert_eq!(s.status == usher_core::manual::Status::Assigned, s.assignee.is_some());
        if let Some(a) = s.assignee {
            *open.entry(a).or_default() += 1;
            *by_channel.entry((a, s.channel)).or_default() += 1;
        }
    }
    for a in ws.snapshot.agents() {
        prop_assert_eq!(a.open, open.get(&a.id).copied().unwrap_or(0), "open count of {}", a.id);
        for c in CHANNELS {
            prop_assert_eq!(a.open_by_channel.get(c), by_channel.get(&(a.id, c)).copied().unwrap_or(0));
        }
    }
    // Queues in order, positions 1..n, every queued conversation in exactly one queue.
    let mut queued = 0;
    for (key, q) in ws.queues() {
        for w in q.windows(2) {
            prop_assert!(w[0].order_key() < w[1].order_key(), "queue {key:?} out of order");
        }
        let places = ws.places(*key, Throughput::default());
        prop_assert_eq!(
            places.iter().map(|p| p.position).collect::<Vec<_>>(),
            (1..=q.len() as u32).collect::<Vec<_>>()
        );
        for w in q.iter() {
            let r = ws.conversation(w.conversation()).unwrap();
            prop_assert_eq!(r.state.status, usher_core::manual::Status::Queued);
            queued += 1;
            // Nobody idle while work waits: no agent can take any waiting conversation.
            let mut req = w.request.clone();
            req.when_nobody = WhenNobody::Queue;
            let d = decide(&ws.snapshot, &req, ctx).unwrap();
            prop_assert!(
                !matches!(d.outcome, Outcome::Assigned(_)),
                "{:?} waits but {:?} could take it",
                w.conversation(),
                d.outcome
            );
        }
    }
    let statuses =
        ws.conversations().filter(|(_, r)| r.state.status == usher_core::manual::Status::Queued).count();
    prop_assert_eq!(queued, statuses);
    Ok(())
}

fn ctx_at(t: i64, day: i32) -> Context {
    Context { now: Timestamp(1_800_000_000_000 + t * 1000), today: Day(20_000 + day) }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn invariants_hold_over_random_event_sequences(
        specs in proptest::collection::vec(agent_spec(), 1..8),
        teams in proptest::collection::vec((0..3u8, any::<bool>()), 3),
        ops in proptest::collection::vec(op(), 1..60),
    ) {
        let mut ws = Workspace::new(build(&specs, &teams));
        let n = specs.len();
        let mut t = 0i64;
        let mut day = 0i32;
        let mut next = 1i64;
        for op in ops {
            t += 1;
            let ctx = ctx_at(t, day);
            let before = ws.snapshot.clone();
            let states_before: Vec<_> = ws.conversations().map(|(id, r)| (*id, r.state)).collect();
            let conv = |i: usize| ConversationId((i % (next as usize).max(1)) as i64 + 1);
            let result: Result<Vec<(ConversationId, Decision)>, usher_core::memory::MemoryError> = match op {
                Op::Open { team, dedicated, previous, priority, channel, skill, language, queue, cap, busy } => {
                    let id = ConversationId(next);
                    next += 1;
                    let mut r = AssignRequest::to_team(id, TeamId(team as i64 + 1), ctx.now);
                    r.priority = [Priority::Urgent, Priority::High, Priority::Normal, Priority::Low][usize::from(priority)];
                    r.channel = CHANNELS[channel];
                    if let Some((a, how)) = dedicated {
                        let agent = AgentId((a % n) as i64 + 1);
                        let otherwise = match how {
                            0 => Otherwise::WaitForAgent,
                            1 => Otherwise::LeaveUnassigned,
                            _ => Otherwise::Team { team: TeamId(team as i64 + 1), strategy: None },
                        };
                        r.target = Target::Agent { agent, otherwise };
                    }
                    r.previous_agent = previous.map(|p| AgentId((p % n) as i64 + 1));
                    if let Some(level) = skill {
                        r.requirements.skills.push(SkillRequirement { name: "billing".into(), min_level: level });
                    }
                    if language {
                        r.requirements.language = Some("fr".into());
                    }
                    r.when_nobody = if queue { WhenNobody::Queue } else { WhenNobody::LeaveUnassigned };
                    r.rules.cap = cap;
                    r.rules.include_busy = busy;
                    ws.open(r, ctx).map(|d| vec![(id, d)])
                }
                Op::Close(c) => ws.close(conv(c), ctx).map(drained),
                Op::Unassign(c) => ws.unassign(conv(c), ctx).map(drained),
                Op::Claim(c, a) => ws.claim(conv(c), AgentId((a % n) as i64 + 1), ctx).map(drained),
                Op::Assign(c, a, force) => ws.assign(conv(c), AgentId((a % n) as i64 + 1), force, ctx).map(drained),
                Op::Reopen(c) => {
                    let id = conv(c);
                    ws.reopen(id, ctx).map(|d| vec![(id, d)])
                }
                Op::Transfer(c, team) => {
                    let id = conv(c);
                    ws.transfer_to_team(id, TeamId(team as i64 + 1), ctx).map(|d| {
                        // Those waiting were served first; the transferred conversation's own
                        // decision, the last one recorded, came after them.
                        let own = ws.conversation(id).and_then(|r| r.decisions.last().cloned());
                        let mut all = drained(d);
                        all.extend(own.into_iter().map(|x| (id, x)));
                        all
                    })
                }
                Op::Presence(a, p) => ws.set_presence(AgentId((a % n) as i64 + 1), presence(p), ctx).map(drained),
                Op::MaxOpen(a, m) => ws.set_max_open(AgentId((a % n) as i64 + 1), m, ctx).map(drained),
                Op::Join(a, team) => ws.join_team(AgentId((a % n) as i64 + 1), TeamId(team as i64 + 1), ctx).map(drained),
                Op::Tick(d) => {
                    day += i32::from(d);
                    ws.drain(ctx_at(t, day)).map(drained)
                }
            };
            match result {
                Ok(decisions) => check_auto(&ws, &decisions, ctx_at(t, day))?,
                Err(_) => {
                    // A refused operation changes nothing.
                    prop_assert_eq!(&ws.snapshot, &before);
                    let states_after: Vec<_> = ws.conversations().map(|(id, r)| (*id, r.state)).collect();
                    prop_assert_eq!(states_after, states_before);
                }
            }
            check_state(&ws, ctx_at(t, day))?;
        }
    }

    #[test]
    fn round_robin_spreads_within_one(agents in 1..10usize, offline in proptest::collection::vec(any::<bool>(), 10), k in 0..200usize) {
        let specs: Vec<AgentSpec> = (0..agents).map(|i| AgentSpec {
            presence: if offline[i] { 3 } else { 0 }, max_open: 1_000, daily: None, weight: 1,
            teams: vec![true, false, false], billing: None, french: false, email_cap: None,
        }).collect();
        let mut ws = Workspace::new(build(&specs, &[(0, true), (0, true), (0, true)]));
        let ctx = ctx_at(1, 0);
        let mut counts = vec![0u32; agents];
        for i in 0..k {
            let d = ws.open(AssignRequest::to_team(ConversationId(i as i64 + 1), TeamId(1), ctx.now), ctx).unwrap();
            if let Outcome::Assigned(a) = d.outcome {
                counts[(a.0 - 1) as usize] += 1;
            }
        }
        let eligible: Vec<u32> = (0..agents).filter(|i| !offline[*i]).map(|i| counts[i]).collect();
        if let (Some(max), Some(min)) = (eligible.iter().max(), eligible.iter().min()) {
            prop_assert!(max - min <= 1, "{counts:?}");
            prop_assert_eq!(eligible.iter().sum::<u32>() as usize, k);
        }
        for i in (0..agents).filter(|i| offline[*i]) {
            prop_assert_eq!(counts[i], 0);
        }
    }

    #[test]
    fn weighted_shares_stay_within_one_of_the_exact_ratio(weights in proptest::collection::vec(1..11u32, 1..7), k in 1..300usize) {
        let specs: Vec<AgentSpec> = weights.iter().map(|w| AgentSpec {
            presence: 0, max_open: 10_000, daily: None, weight: *w,
            teams: vec![true, false, false], billing: None, french: false, email_cap: None,
        }).collect();
        let mut ws = Workspace::new(build(&specs, &[(2, true), (0, true), (0, true)]));
        let ctx = ctx_at(1, 0);
        let total: i64 = weights.iter().map(|w| i64::from(*w)).sum();
        let mut counts = vec![0i64; weights.len()];
        for n in 1..=k {
            let d = ws.open(AssignRequest::to_team(ConversationId(n as i64), TeamId(1), ctx.now), ctx).unwrap();
            let Outcome::Assigned(a) = d.outcome else { return Err(TestCaseError::fail("not assigned")) };
            counts[(a.0 - 1) as usize] += 1;
            for (i, w) in weights.iter().enumerate() {
                // |c_i - n w_i / W| <= 1, in integers: |c_i W - n w_i| <= W.
                let dev = (counts[i] * total - n as i64 * i64::from(*w)).abs();
                prop_assert!(dev <= total, "after {n}: counts {counts:?} weights {weights:?}");
            }
        }
    }

    #[test]
    fn least_open_picks_a_minimum(opens in proptest::collection::vec(0..6u32, 1..9), k in 1..40usize) {
        let specs: Vec<AgentSpec> = opens.iter().map(|_| AgentSpec {
            presence: 0, max_open: 1_000, daily: None, weight: 1,
            teams: vec![true, false, false], billing: None, french: false, email_cap: None,
        }).collect();
        let mut ws = Workspace::new(build(&specs, &[(1, true), (0, true), (0, true)]));
        let ctx = ctx_at(1, 0);
        // Preload open counts by forced manual assignments.
        let mut id = 1;
        for (i, o) in opens.iter().enumerate() {
            for _ in 0..*o {
                ws.open(AssignRequest { when_nobody: WhenNobody::LeaveUnassigned, ..AssignRequest::to_team(ConversationId(id), TeamId(2), ctx.now) }, ctx).unwrap();
                ws.assign(ConversationId(id), AgentId(i as i64 + 1), true, ctx).unwrap();
                id += 1;
            }
        }
        for _ in 0..k {
            let min = ws.snapshot.agents().iter().map(|a| a.open).min().unwrap();
            let d = ws.open(AssignRequest::to_team(ConversationId(id), TeamId(1), ctx.now), ctx).unwrap();
            id += 1;
            let Outcome::Assigned(a) = d.outcome else { return Err(TestCaseError::fail("not assigned")) };
            prop_assert_eq!(ws.snapshot.agent(a).unwrap().open - 1, min);
        }
    }

    #[test]
    fn traces_round_trip_through_json(specs in proptest::collection::vec(agent_spec(), 1..8), skill in proptest::option::of(1..6u8)) {
        let snap = build(&specs, &[(0, true), (1, false), (2, true)]);
        for team in 1..=3 {
            let mut r = AssignRequest::to_team(ConversationId(1), TeamId(team), Timestamp(5));
            if let Some(l) = skill {
                r.requirements.skills.push(SkillRequirement { name: "billing".into(), min_level: l });
            }
            let d = decide(&snap, &r, ctx_at(1, 0)).unwrap();
            let text = serde_json::to_string(&d.trace).unwrap();
            let back: usher_core::trace::Trace = serde_json::from_str(&text).unwrap();
            prop_assert_eq!(back, d.trace);
        }
    }
}

fn drained(d: Vec<usher_core::queue::Drained>) -> Vec<(ConversationId, Decision)> {
    d.into_iter().map(|x| (x.conversation, x.decision)).collect()
}

#[test]
fn queue_key_is_unused_here() {
    // QueueKey is part of the public API used by the store; keep the import honest.
    assert_ne!(QueueKey::Team(TeamId(1)), QueueKey::Agent(AgentId(1)));
}

/// A daily limit that resets at midnight frees capacity without any event: the conversation
/// that waited since yesterday must still go before a newcomer.
#[test]
fn a_new_day_does_not_let_newcomers_overtake_the_queue() {
    let specs = vec![AgentSpec {
        presence: 0,
        max_open: 10,
        daily: Some(1),
        weight: 1,
        teams: vec![true, false, false],
        billing: None,
        french: false,
        email_cap: None,
    }];
    let mut ws = Workspace::new(build(&specs, &[(0, true), (0, true), (0, true)]));
    let day1 = ctx_at(1, 0);
    let d = ws.open(AssignRequest::to_team(ConversationId(1), TeamId(1), day1.now), day1).unwrap();
    assert_eq!(d.outcome, Outcome::Assigned(AgentId(1)));
    let mut waiting = AssignRequest::to_team(ConversationId(2), TeamId(1), day1.now);
    waiting.when_nobody = WhenNobody::Queue;
    assert!(matches!(ws.open(waiting, day1).unwrap().outcome, Outcome::Queued { .. }));
    let day2 = ctx_at(2, 1);
    let mut newcomer = AssignRequest::to_team(ConversationId(3), TeamId(1), day2.now);
    newcomer.when_nobody = WhenNobody::Queue;
    assert!(matches!(ws.open(newcomer, day2).unwrap().outcome, Outcome::Queued { .. }));
    assert_eq!(ws.conversation(ConversationId(2)).unwrap().state.assignee, Some(AgentId(1)));
}

/// The weight vectors on which nginx's smooth weighted rule leaves an agent more than one turn
/// behind its exact share (found by the property tests); the quota method must not.
#[test]
fn weighted_shares_hold_on_the_known_hard_cases() {
    for weights in [vec![1u32, 1, 1, 5, 5, 5], vec![1, 1, 1, 1, 7, 7], vec![8, 8, 1, 1, 1, 8]] {
        let specs: Vec<AgentSpec> = weights
            .iter()
            .map(|w| AgentSpec {
                presence: 0,
                max_open: 100_000,
                daily: None,
                weight: *w,
                teams: vec![true, false, false],
                billing: None,
                french: false,
                email_cap: None,
            })
            .collect();
        let mut ws = Workspace::new(build(&specs, &[(2, true), (0, true), (0, true)]));
        let ctx = ctx_at(1, 0);
        let total: i64 = weights.iter().map(|w| i64::from(*w)).sum();
        let mut counts = vec![0i64; weights.len()];
        for n in 1..=500i64 {
            let d = ws.open(AssignRequest::to_team(ConversationId(n), TeamId(1), ctx.now), ctx).unwrap();
            let Outcome::Assigned(a) = d.outcome else { panic!("not assigned") };
            counts[(a.0 - 1) as usize] += 1;
            for (i, w) in weights.iter().enumerate() {
                assert!(
                    (counts[i] * total - n * i64::from(*w)).abs() <= total,
                    "{weights:?} after {n}: {counts:?}"
                );
            }
        }
    }
}
