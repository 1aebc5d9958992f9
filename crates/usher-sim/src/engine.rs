//! The simulation: the routing core's in-memory workspace (`usher_core::memory`, the very
//! decide, queue and drain the server runs) driven in virtual time by a discrete-event loop.
//!
//! Events, in time order (ties by the order they were made): an arrival opens a conversation
//! and routes it; an assigned conversation ends after its handling time and frees its agent,
//! which drains the queue; a waiting conversation whose customer runs out of patience leaves
//! the queue. Handling slows down as an agent holds more at once (`slowdown` per extra
//! conversation). The queue's wait estimate is taken as each conversation starts waiting,
//! exactly as the server computes it (releases over the last 15 minutes), and compared with
//! the wait that followed.

use crate::model::{Dist, Setup};
use crate::report::{Outcome, Tally};
use crate::rng::Rng;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};

use usher_core::decide::Outcome as Decided;
use usher_core::memory::Workspace;
use usher_core::model::{Agent, AgentId, ConversationId, Day, Strategy, Team, TeamId, Timestamp};
use usher_core::queue::{estimate_wait, Throughput};
use usher_core::request::AssignRequest;
use usher_core::{Context, Snapshot};

/// The releases window the server's estimate uses.
const WINDOW_MILLIS: i64 = 900_000;
const TEAM: TeamId = TeamId(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Arrival,
    Done(i64),
    Abandon(i64),
}

/// What happened to a conversation that is still in the system.
#[derive(Debug, Clone, Copy)]
struct Live {
    arrived: i64,
    handle: f64,
    estimate: Option<u64>,
    agent: Option<AgentId>,
    started: Option<i64>,
}

/// Draws from a distribution, in milliseconds.
fn draw(rng: &mut Rng, d: &Dist) -> f64 {
    match d {
        Dist::Exponential { mean_seconds } => rng.exponential(*mean_seconds) * 1000.0,
        Dist::LogNormal { median_seconds, sigma } => median_seconds * (sigma * rng.normal()).exp() * 1000.0,
        Dist::Fixed { seconds } => seconds * 1000.0,
    }
}

fn context(now: i64) -> Context {
    Context { now: Timestamp(now), today: Day(now.div_euclid(86_400_000) as i32) }
}

/// Runs `setup` with `strategy` and `agents` agents; `progress` hears the share done.
pub fn run(setup: &Setup, strategy: Strategy, agents: u32, mut progress: impl FnMut(f64)) -> Outcome {
    let mut rng = Rng::new(setup.seed);
    let members: Vec<Agent> = (1..=agents)
        .map(|i| {
            let mut a = Agent::new(AgentId(i64::from(i)), setup.max_open);
            a.teams = vec![TEAM];
            a.weight = setup.weights.get(i as usize - 1).copied().unwrap_or(1);
            a
        })
        .collect();
    let team = Team::new(TEAM, strategy);
    let Ok(snapshot) = Snapshot::new(members, vec![team]) else {
        return Outcome::default();
    };
    let mut ws = Workspace::new(snapshot);
    let end = (setup.hours * 3_600_000.0) as i64;
    let mut events: BinaryHeap<Reverse<(i64, u64, Kind)>> = BinaryHeap::new();
    let mut made = 0u64;
    let mut push = |events: &mut BinaryHeap<Reverse<(i64, u64, Kind)>>, at: i64, kind: Kind| {
        made += 1;
        events.push(Reverse((at, made, kind)));
    };
    let first = setup.next_arrival(&mut rng, 0.0);
    if let Some(t) = first {
        push(&mut events, t as i64, Kind::Arrival);
    }
    let mut next_id = 0i64;
    let mut live: BTreeMap<i64, Live> = BTreeMap::new();
    let mut releases: VecDeque<i64> = VecDeque::new();
    let mut tally = Tally::new(agents as usize, setup.target_seconds);
    let mut last_progress = 0.0;
    // Starts a conversation's handling: its agent holds `holding` conversations.
    let start = |c: &mut Live, agent: AgentId, now: i64, holding: u32| {
        c.agent = Some(agent);
        c.started = Some(now);
        let slowed = c.handle * (1.0 + setup.slowdown * f64::from(holding.saturating_sub(1)));
        now + slowed.max(1.0) as i64
    };
    while let Some(Reverse((now, _, kind))) = events.pop() {
        let ctx = context(now);
        match kind {
            Kind::Arrival => {
                if let Some(t) = setup.next_arrival(&mut rng, now as f64) {
                    if (t as i64) < end {
                        push(&mut events, t as i64, Kind::Arrival);
                    }
                }
                next_id += 1;
                let id = next_id;
                let handle = draw(&mut rng, &setup.handle);
                let patience = setup.patience.as_ref().map(|p| draw(&mut rng, p));
                let request = AssignRequest::to_team(ConversationId(id), TEAM, Timestamp(now));
                let Ok(decision) = ws.open(request, ctx) else { continue };
                let mut c = Live { arrived: now, handle, estimate: None, agent: None, started: None };
                match decision.outcome {
                    Decided::Assigned(agent) => {
                        let holding = ws.snapshot.agent(agent).map_or(1, |a| a.open);
                        let done = start(&mut c, agent, now, holding);
                        tally.answered(0, agent, None);
                        push(&mut events, done, Kind::Done(id));
                    }
                    Decided::Queued { .. } => {
                        while releases.front().is_some_and(|r| *r < now - WINDOW_MILLIS) {
                            releases.pop_front();
                        }
                        let position = ws.queue(usher_core::queue::QueueKey::Team(TEAM)).len() as u32;
                        let throughput = Throughput {
                            releases: releases.len() as u32,
                            window_seconds: (WINDOW_MILLIS / 1000) as u32,
                            serving_slots: agents * setup.max_open,
                            default_handle_seconds: setup.default_handle_seconds,
                        };
                        c.estimate = estimate_wait(position, throughput);
                        if let Some(p) = patience {
                            push(&mut events, now + p as i64, Kind::Abandon(id));
                        }
                    }
                    Decided::Unassigned => {}
                }
                live.insert(id, c);
            }
            Kind::Done(id) => {
                let Some(c) = live.remove(&id) else { continue };
                if let (Some(agent), Some(started)) = (c.agent, c.started) {
                    tally.busy(agent, now - started);
                }
                releases.push_back(now);
                let Ok(drained) = ws.close(ConversationId(id), ctx) else { continue };
                ws.forget(ConversationId(id));
                for d in drained {
                    let Some(w) = live.get_mut(&d.conversation.0) else { continue };
                    let holding = ws.snapshot.agent(d.agent).map_or(1, |a| a.open);
                    let done = start(w, d.agent, now, holding);
                    let waited = now - w.arrived;
                    let estimate = w.estimate;
                    tally.answered(waited, d.agent, estimate);
                    push(&mut events, done, Kind::Done(d.conversation.0));
                }
            }
            Kind::Abandon(id) => {
                let waiting = live.get(&id).is_some_and(|c| c.agent.is_none());
                if !waiting {
                    continue;
                }
                if let Some(c) = live.remove(&id) {
                    tally.abandoned(now - c.arrived);
                }
                if ws.close(ConversationId(id), ctx).is_ok() {
                    ws.forget(ConversationId(id));
                }
            }
        }
        tally.queue_at(now, ws.queue(usher_core::queue::QueueKey::Team(TEAM)).len());
        let done = now as f64 / end.max(1) as f64;
        if done - last_progress >= 0.01 {
            last_progress = done;
            progress(done.min(1.0));
        }
    }
    progress(1.0);
    tally.finish(end, agents, setup.max_open)
}
