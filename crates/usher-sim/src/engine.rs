//! The simulation: the routing core's in-memory workspace (`usher_core::memory`, the very
//! decide, queue and drain the server runs) driven in virtual time by a discrete-event loop.
//!
//! Events, in time order (ties by the order they were made): an arrival is routed (by the
//! workflow that applies to it, through the workflow engine and its assign step's request, or
//! to its team) and opened; an assigned conversation ends after its handling time and frees
//! its agent, which drains the queues; a waiting conversation whose customer runs out of
//! patience leaves; an agent's presence changes with its shifts and breaks (going online
//! drains the queues; going offline, it finishes what it holds and takes nothing new); a
//! new day starts the daily limits again and drains the queues.
//! Handling slows down as an agent holds more at once (`slowdown` per extra conversation).
//! A conversation assigned to an agent who is away or offline (a team that does not route to
//! online agents only) is answered when the agent is back. The queue's wait estimate is taken as each
//! conversation starts waiting in the queue, exactly as the server computes it (releases over
//! the last 15 minutes), and compared with the wait in the queue that followed. A workflow's
//! wait steps are waited out in virtual time (the customer may leave meanwhile), and its
//! calendars are read at the virtual instant ([`crate::clock`]).

use crate::desk::Desk;
use crate::model::{pick, Setup};
use crate::report::{Outcome, Tally};
use crate::rng::Rng;
use crate::trace::{Arrival, Trace};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};

use usher_core::calendar::Calendar;
use usher_core::decide::Outcome as Decided;
use usher_core::memory::Workspace;
use usher_core::model::{AgentId, ConversationId, Day, Presence, Priority, Strategy, Team, Timestamp};
use usher_core::queue::{estimate_wait, QueueKey, Throughput};
use usher_core::request::{AssignRequest, Otherwise, Requirements, SkillRequirement, Target, WhenNobody};
use usher_core::{Context, Snapshot};
use usher_workflow::document::{Assign, Step, Trigger};
use usher_workflow::engine::{advance, Advance, Effect, Facts, Input, Run, RunStatus, Until, Watch};

/// The releases window the server's estimate uses.
const WINDOW_MILLIS: i64 = 900_000;
/// After the last arrival, shifts go on for a week at most to serve who still waits.
const AFTER_MILLIS: i64 = 7 * 86_400_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Arrival,
    Done(i64),
    Abandon(i64),
    Presence(usize),
    /// A queued conversation's overflow is due.
    Overflow(i64),
    /// A workflow's wait is over.
    Resume(i64),
    /// A new day: daily limits start again, so the queues are drained.
    Midnight,
}

/// A conversation still in the system.
#[derive(Debug, Clone, Copy)]
struct Live {
    arrived: i64,
    handle: f64,
    /// The queue's wait estimate, seconds, and when it was given (the first time it queued,
    /// which is later than its arrival when a workflow waited first).
    estimate: Option<(u64, i64)>,
    team: Option<usize>,
    agent: Option<usize>,
    started: Option<i64>,
    /// Its contact, and the agent who last answered that contact when it arrived.
    contact: Option<u64>,
    previous: Option<AgentId>,
}

fn context(now: i64) -> Context {
    Context { now: Timestamp(now), today: Day(now.div_euclid(86_400_000) as i32) }
}

/// One run's result: the whole desk, and each team.
#[derive(Debug, Clone, Default)]
pub struct RunOutcome {
    /// The whole desk.
    pub outcome: Outcome,
    /// Each team (by the desk's order), when there are several.
    pub teams: Vec<Outcome>,
}

/// Where a workflow's walk stopped.
#[derive(Debug, Clone)]
enum Stop {
    /// At an assign step: its settings.
    Assign(Box<Assign>),
    /// At a wait step: the run wakes this many milliseconds after the walk began.
    Wait(i64),
}

/// A workflow walked to an assign step or a wait, with the run and facts to go on with.
#[derive(Debug, Clone)]
struct Walk {
    stop: Stop,
    run: Run,
    facts: Facts,
}

/// Where a workflow's walk ended: an assign step or a wait, or none (the run ended first).
type Walked = Option<Walk>;

/// A conversation whose workflow may still move it on (an overflow, a go-to when nobody can
/// take it, the end of a wait): the workflow, its run, its facts, the arrival (for the next
/// request), how its contact answers, and how many times it has moved it.
#[derive(Debug, Clone)]
struct Follow {
    workflow: usize,
    run: Run,
    facts: Facts,
    arrival: Arrival,
    answers: Vec<u16>,
    moves: usize,
}

/// What a workflow made of a conversation: a request to route now (and the run to follow),
/// or a wait until a virtual time, with the run to resume then.
#[derive(Debug)]
enum Routing {
    Now(AssignRequest, Option<Follow>),
    Later(i64, Follow),
}

/// How many times a workflow may move one conversation on (overflows, go-tos).
const MOVES: usize = 8;

/// Applies a run's effects on the contact to its facts; the assign settings among them.
fn apply(facts: &mut Facts, effects: &[Effect]) -> Option<Box<Assign>> {
    let mut assign = None;
    for e in effects {
        match e {
            Effect::Assign { settings, .. } => assign = Some(settings.clone()),
            Effect::SaveField { field, value } => {
                facts.fields.insert(field.clone(), value.clone());
            }
            Effect::UpdateContact { add_tags, remove_tags, fields, priority } => {
                facts.tags.extend(add_tags.iter().cloned());
                facts.tags.retain(|t| !remove_tags.contains(t));
                facts.fields.extend(fields.iter().map(|(k, v)| (k.clone(), v.clone())));
                if let Some(p) = priority {
                    facts.priority = *p;
                }
            }
            _ => {}
        }
    }
    assign
}

/// Adds the skills an arrival needs to a request's.
fn needing(request: &mut AssignRequest, skills: &[SkillRequirement]) {
    for need in skills {
        match request.requirements.skills.iter_mut().find(|s| s.name == need.name) {
            Some(s) => s.min_level = s.min_level.max(need.min_level),
            None => request.requirements.skills.push(need.clone()),
        }
    }
}
/// What a walk depends on: the workflow, the channel, the language, the priority, the
/// answers chosen, which calendars are open ([`crate::clock::Clock::open_at`]) and whether
/// the contact is returning.
type WalkKey = (usize, u8, Option<String>, Priority, Vec<u16>, u64, bool);

struct Sim<'a> {
    setup: &'a Setup,
    desk: &'a Desk,
    plan: Option<Strategy>,
    rng: Rng,
    ws: Workspace,
    events: BinaryHeap<Reverse<(i64, u64, Kind)>>,
    made: u64,
    live: BTreeMap<i64, Live>,
    index: HashMap<AgentId, usize>,
    pending: Vec<Vec<i64>>,
    releases: Vec<VecDeque<i64>>,
    timelines: Vec<(usize, Vec<(i64, Presence)>)>,
    slots: Vec<u32>,
    walks: HashMap<WalkKey, Walked>,
    follows: HashMap<i64, Follow>,
    paused: HashMap<i64, Follow>,
    /// The contacts seen so far, with the agent who last answered each.
    contacts: HashMap<u64, Option<AgentId>>,
    /// Synthetic contacts made so far (numbered from 1).
    made_contacts: u64,
    whole: Tally,
    teams: Vec<Tally>,
    end: i64,
    /// The instant (Unix milliseconds) of virtual time 0: workflows run in real time, so
    /// that their calendars are read on the right dates.
    origin: i64,
    /// The business hours and calendars, lent to a run's facts while it advances.
    hours: Option<Calendar>,
    calendars: BTreeMap<i64, Calendar>,
}

impl Sim<'_> {
    fn push(&mut self, at: i64, kind: Kind) {
        self.made += 1;
        self.events.push(Reverse((at, self.made, kind)));
    }

    fn tallies(&mut self, team: Option<usize>, mut f: impl FnMut(&mut Tally)) {
        f(&mut self.whole);
        if let Some(t) = team.and_then(|t| self.teams.get_mut(t)) {
            f(t);
        }
    }

    /// A synthetic arrival at `at`, drawn from the mix.
    fn draw(&mut self, at: i64) -> Arrival {
        let m = &self.setup.mix;
        let channel =
            pick(&mut self.rng, &m.channels).copied().unwrap_or(usher_core::model::Channel::WebChat);
        let language = pick(&mut self.rng, &m.languages).cloned();
        let priority = pick(&mut self.rng, &m.priorities).copied().unwrap_or_default();
        let mut skills = Vec::new();
        for (name, p) in &m.skills {
            if self.rng.unit() < *p {
                skills.push(SkillRequirement { name: name.clone(), min_level: 1 });
            }
        }
        // Contacts only when some return: the draws of a setup without them stay as they were.
        let contact = (m.returning > 0.0).then(|| {
            if self.made_contacts > 0 && self.rng.unit() < m.returning {
                1 + ((self.rng.unit() * self.made_contacts as f64) as u64).min(self.made_contacts - 1)
            } else {
                self.made_contacts += 1;
                self.made_contacts
            }
        });
        Arrival {
            at,
            channel,
            language,
            skills,
            priority,
            handle_millis: None,
            team: None,
            patience_millis: None,
            contact,
        }
    }

    /// The agent who last answered the arrival's contact.
    fn previous_of(&self, a: &Arrival) -> Option<AgentId> {
        a.contact.and_then(|c| self.contacts.get(&c).copied().flatten())
    }

    /// Advances workflow `wi`'s run at virtual time `now`, the calendars lent to the facts
    /// (a conversation's facts do not carry copies of them).
    fn advance_at(
        &mut self,
        wi: usize,
        run: &Run,
        input: &Input,
        facts: &mut Facts,
        now: i64,
    ) -> Option<Advance> {
        let setup = self.setup;
        let w = setup.workflows.get(wi)?;
        facts.hours = self.hours.take();
        facts.calendars = std::mem::take(&mut self.calendars);
        let adv = advance(w, run, input, facts, Timestamp(self.origin + now)).ok();
        self.hours = facts.hours.take();
        self.calendars = std::mem::take(&mut facts.calendars);
        adv
    }

    /// Moves workflow `wi`'s run on from `input` at virtual time `now`, for a contact who
    /// answers its questions with `answers` (one choice per field of the setup's `answers`),
    /// to the assign step or the wait it reaches.
    fn walk(
        &mut self,
        wi: usize,
        mut run: Run,
        mut input: Input,
        mut facts: Facts,
        answers: &[u16],
        now: i64,
    ) -> Walked {
        let setup = self.setup;
        let w = setup.workflows.get(wi)?;
        for _ in 0..64 {
            let adv = self.advance_at(wi, &run, &input, &mut facts, now)?;
            if let Some(settings) = apply(&mut facts, &adv.effects) {
                return Some(Walk { stop: Stop::Assign(settings), run: adv.run, facts });
            }
            input = match &adv.run.status {
                RunStatus::Waiting { step, until: Until::Answer { .. } } => {
                    let Some(Step::Ask(ask)) = w.steps.get(step) else { return None };
                    // `answers` holds one choice per field of the setup's `answers`, in order.
                    let chosen = self
                        .setup
                        .answers
                        .iter()
                        .zip(answers)
                        .find(|((field, _), _)| **field == ask.save_to)
                        .and_then(|((_, shares), k)| shares.keys().nth(usize::from(*k)).cloned());
                    let text = chosen.or_else(|| ask.options.first().cloned()).unwrap_or_else(|| "ok".into());
                    Input::Message { text }
                }
                RunStatus::Waiting { until: Until::Time { at }, .. } => {
                    let delay = at.0 - self.origin - now;
                    return Some(Walk { stop: Stop::Wait(delay), run: adv.run, facts });
                }
                _ => return None,
            };
            run = adv.run;
        }
        None
    }

    /// A walk's stop made a routing at virtual time `now`: the assign step's request, or the
    /// wait (its run set to wake at its end).
    fn routed(&self, id: i64, mut f: Follow, walk: Walk, now: i64) -> Option<Routing> {
        f.run = walk.run;
        f.facts = walk.facts;
        match walk.stop {
            Stop::Assign(settings) => {
                let r = self.request_for(&settings, id, &f.arrival, now)?;
                Some(Routing::Now(r, Some(f)))
            }
            Stop::Wait(delay) => {
                // A cached walk's wait ends `delay` after this arrival, not the first one's.
                let at = now + delay.max(0);
                if let RunStatus::Waiting { until: Until::Time { at: wake }, .. } = &mut f.run.status {
                    *wake = Timestamp(self.origin + at);
                }
                Some(Routing::Later(at, f))
            }
        }
    }

    /// The routing core's request for an assign step's settings, for arrival `a` (the
    /// strategies compared replace the steps' own as well as the teams').
    fn request_for(&self, settings: &Assign, id: i64, a: &Arrival, now: i64) -> Option<AssignRequest> {
        let mut r = settings.request(
            ConversationId(id),
            a.channel,
            a.priority,
            a.language.clone(),
            self.previous_of(a),
            Timestamp(now),
        )?;
        if self.plan.is_some() {
            match &mut r.target {
                Target::Team { strategy, .. }
                | Target::Agent { otherwise: Otherwise::Team { strategy, .. }, .. } => *strategy = None,
                Target::Agent { .. } => {}
            }
        }
        needing(&mut r, &a.skills);
        Some(r)
    }

    fn team_of(&self, r: &AssignRequest) -> Option<usize> {
        r.team().and_then(|id| self.desk.teams.iter().position(|t| t.id == id))
    }

    /// The routing core's request for an arrival, and its workflow's run (which may move it
    /// on: an overflow, a go-to when nobody can take it); or the wait its workflow begins with.
    fn request(&mut self, id: i64, a: &Arrival, answers: &[u16], returning: bool) -> Option<Routing> {
        let wi = self.setup.workflows.iter().position(|w| {
            w.trigger == Trigger::ConversationOpened
                && (w.channels.is_empty() || w.channels.contains(&a.channel))
        });
        match wi {
            Some(wi) if a.team.is_none() => {
                // A walk stops at the first wait, so it reads the calendars at the arrival
                // only: the key holds all it depends on (a desk of too many calendars to
                // key walks by is walked afresh each time).
                let key = self.desk.clock.open_at(self.origin + a.at).map(|open| {
                    (wi, a.channel as u8, a.language.clone(), a.priority, answers.to_vec(), open, returning)
                });
                let cached = key.as_ref().and_then(|k| self.walks.get(k));
                let walk = match cached {
                    Some(w) => w.clone(),
                    None => {
                        let facts = Facts {
                            language: a.language.clone(),
                            channel: Some(a.channel),
                            priority: a.priority,
                            returning,
                            ..Facts::default()
                        };
                        let w = self.walk(wi, Run::new(), Input::Start, facts, answers, a.at);
                        if let Some(key) = key {
                            self.walks.insert(key, w.clone());
                        }
                        w
                    }
                }?;
                // The run goes on with the routing's outcome: an overflow when it queues, a
                // go-to (or the steps after) when nobody takes it.
                let f = Follow {
                    workflow: wi,
                    run: Run::new(),
                    facts: Facts::default(),
                    arrival: a.clone(),
                    answers: answers.to_vec(),
                    moves: 0,
                };
                self.routed(id, f, walk, a.at)
            }
            _ => {
                let team = match &a.team {
                    Some(name) => self.desk.teams.iter().position(|t| &t.name == name).unwrap_or(0),
                    None => self
                        .desk
                        .teams
                        .iter()
                        .position(|t| t.channels.is_empty() || t.channels.contains(&a.channel))
                        .unwrap_or(0),
                };
                let t = self.desk.teams.get(team)?;
                let mut r = AssignRequest::to_team(ConversationId(id), t.id, Timestamp(a.at));
                r.channel = a.channel;
                r.priority = a.priority;
                r.when_nobody = WhenNobody::Queue;
                r.requirements = Requirements {
                    skills: vec![],
                    language: a.language.clone().filter(|_| t.match_language),
                };
                if t.prefer_previous_agent {
                    r.previous_agent = self.previous_of(a);
                }
                needing(&mut r, &a.skills);
                Some(Routing::Now(r, None))
            }
        }
    }

    /// Moves a conversation's workflow on with `input` (an overflow's timer, the routing's
    /// "nobody") at virtual time `now`: the next assign step's request or wait, with the
    /// workflow kept for further moves (at most [`MOVES`]).
    fn follow(&mut self, mut f: Follow, input: Input, id: i64, now: i64) -> Option<Routing> {
        if f.moves >= MOVES {
            return None;
        }
        f.moves += 1;
        self.go_on(f, input, id, now)
    }

    /// The run of `f` goes on from `input` at virtual time `now`, to its next routing.
    fn go_on(&mut self, mut f: Follow, input: Input, id: i64, now: i64) -> Option<Routing> {
        let run = std::mem::replace(&mut f.run, Run::new());
        let facts = std::mem::take(&mut f.facts);
        let walk = self.walk(f.workflow, run, input, facts, &f.answers, now)?;
        self.routed(id, f, walk, now)
    }

    /// Whether an agent is away or offline now (the workspace's presence; agents are in id
    /// order in both): a team that is not online-only still assigns to them, and the
    /// customer waits until they are back.
    fn is_absent(&self, ai: usize) -> bool {
        self.ws
            .snapshot
            .agents()
            .get(ai)
            .is_some_and(|a| matches!(a.presence, Presence::Away | Presence::Offline))
    }

    /// The conversation goes to `agent` now: answered at once, or when the agent is back.
    fn take(&mut self, id: i64, agent: AgentId, now: i64) {
        let Some(&ai) = self.index.get(&agent) else { return };
        let Some(c) = self.live.get_mut(&id) else { return };
        c.agent = Some(ai);
        if self.is_absent(ai) {
            self.pending[ai].push(id);
        } else {
            self.start(id, ai, now);
        }
    }

    fn start(&mut self, id: i64, ai: usize, now: i64) {
        let holding = self.ws.snapshot.agents().get(ai).map_or(1, |a| a.open);
        let slowdown = self.desk.agents.get(ai).map_or(0.0, |a| a.slowdown);
        let Some(c) = self.live.get_mut(&id) else { return };
        c.started = Some(now);
        let c = *c;
        let slowed = c.handle * (1.0 + slowdown * f64::from(holding.saturating_sub(1)));
        let estimate = c.estimate.map(|(e, given)| (e, now - given));
        let agent = self.desk.agents.get(ai).map(|a| a.agent.id);
        let previous = c.previous.map(|p| Some(p) == agent);
        self.tallies(c.team, |t| t.answered(now - c.arrived, ai, estimate, previous));
        if let Some(contact) = c.contact {
            self.contacts.insert(contact, agent);
        }
        self.push(now + slowed.max(1.0) as i64, Kind::Done(id));
    }

    fn drained(&mut self, drained: Vec<usher_core::queue::Drained>, now: i64) {
        for d in drained {
            self.take(d.conversation.0, d.agent, now);
        }
    }

    fn arrive(&mut self, id: i64, a: Arrival) {
        let now = a.at;
        let handle = match a.handle_millis {
            Some(h) => h,
            None => self.setup.handle_for(a.channel).draw_millis(&mut self.rng),
        };
        let patience = match (a.patience_millis, &self.setup.patience) {
            (Some(p), _) => Some(p),
            (None, Some(d)) => Some(d.draw_millis(&mut self.rng)),
            (None, None) => None,
        };
        let mut answers = Vec::new();
        if !self.setup.workflows.is_empty() {
            for shares in self.setup.answers.values() {
                let chosen = pick(&mut self.rng, shares);
                answers.push(chosen.and_then(|c| shares.keys().position(|k| k == c)).unwrap_or(0) as u16);
            }
        }
        let returning = a.contact.is_some_and(|c| self.contacts.contains_key(&c));
        let previous = self.previous_of(&a);
        if let Some(c) = a.contact {
            self.contacts.entry(c).or_insert(None);
        }
        let routing = self.request(id, &a, &answers, returning);
        let team = match &routing {
            Some(Routing::Now(request, _)) => self.team_of(request),
            Some(Routing::Later(..)) => None,
            None => {
                self.tallies(None, |t| {
                    t.arrived();
                    t.unassigned();
                });
                return;
            }
        };
        self.tallies(team, Tally::arrived);
        self.live.insert(
            id,
            Live {
                arrived: now,
                handle,
                estimate: None,
                team,
                agent: None,
                started: None,
                contact: a.contact,
                previous,
            },
        );
        if let Some(p) = patience {
            // Only one still waiting then leaves (see `abandon`).
            self.push(now + p as i64, Kind::Abandon(id));
        }
        if let Some(routing) = routing {
            self.carry(id, routing, now);
        }
    }

    /// Carries out what the workflow made of the conversation: routed now, or paused.
    fn carry(&mut self, id: i64, routing: Routing, now: i64) {
        match routing {
            Routing::Now(request, follow) => self.place(id, request, follow, now),
            Routing::Later(at, f) => self.pause(id, at, f),
        }
    }

    /// The conversation's workflow waits until `at`: it is routed then (unless the customer
    /// has left). A wait ending after the simulation's end leaves it unanswered.
    fn pause(&mut self, id: i64, at: i64, f: Follow) {
        if at <= self.end + AFTER_MILLIS {
            self.paused.insert(id, f);
            self.push(at, Kind::Resume(id));
        }
    }

    /// A workflow's wait is over: its run goes on, to an assign step or another wait.
    fn resume(&mut self, id: i64, now: i64) {
        let Some(f) = self.paused.remove(&id) else { return };
        let Some(team) = self.live.get(&id).map(|c| c.team) else { return };
        // The end of a wait is not a move: a workflow may look at its calendar all weekend.
        match self.go_on(f, Input::Timer, id, now) {
            Some(routing) => self.carry(id, routing, now),
            None => {
                self.live.remove(&id);
                self.tallies(team, Tally::unassigned);
            }
        }
    }

    /// Opens the live conversation `id` with `request` and carries out the outcome: assigned,
    /// queued (its workflow's overflow set), or left unassigned (its workflow's go-to
    /// followed).
    fn place(&mut self, id: i64, request: AssignRequest, follow: Option<Follow>, now: i64) {
        let ctx = context(now);
        let team = self.team_of(&request);
        let Some(c) = self.live.get_mut(&id) else { return };
        let before = c.team;
        c.team = team;
        if before != team {
            // A conversation counts in the team that has it last.
            if let Some(t) = before.and_then(|t| self.teams.get_mut(t)) {
                t.moved_out();
            }
            if let Some(t) = team.and_then(|t| self.teams.get_mut(t)) {
                t.arrived();
            }
        }
        let Ok(decision) = self.ws.open(request, ctx) else {
            self.live.remove(&id);
            self.tallies(team, Tally::unassigned);
            return;
        };
        match decision.outcome {
            Decided::Assigned(agent) => self.take(id, agent, now),
            Decided::Queued { .. } => {
                let first = self.live.get(&id).is_some_and(|c| c.estimate.is_none());
                if let Some(ti) = team.filter(|_| first) {
                    let key = QueueKey::Team(self.desk.teams[ti].id);
                    let releases = &mut self.releases[ti];
                    while releases.front().is_some_and(|r| *r < now - WINDOW_MILLIS) {
                        releases.pop_front();
                    }
                    let throughput = Throughput {
                        releases: releases.len() as u32,
                        window_seconds: (WINDOW_MILLIS / 1000) as u32,
                        serving_slots: self.slots[ti],
                        default_handle_seconds: self.setup.default_handle_seconds,
                    };
                    let position = self.ws.queue(key).len() as u32;
                    if let Some(c) = self.live.get_mut(&id) {
                        c.estimate = estimate_wait(position, throughput).map(|e| (e, now));
                    }
                }
                // The workflow hears it waits: an overflow watch is set.
                let watched = follow.and_then(|mut f| {
                    let adv = self.advance_at(f.workflow, &f.run, &Input::Queued, &mut f.facts, now)?;
                    let at = adv.run.watches.iter().find_map(|x| match x {
                        Watch::Overflow { at, .. } => Some(at.0 - self.origin),
                        _ => None,
                    })?;
                    Some((at, Follow { run: adv.run, ..f }))
                });
                if let Some((at, f)) = watched {
                    self.follows.insert(id, f);
                    self.push(at, Kind::Overflow(id));
                }
            }
            Decided::Unassigned => {
                let _ = self.ws.close(ConversationId(id), ctx);
                self.ws.forget(ConversationId(id));
                match follow.and_then(|f| self.follow(f, Input::Unassigned, id, now)) {
                    Some(routing) => self.carry(id, routing, now),
                    None => {
                        self.live.remove(&id);
                        self.tallies(team, Tally::unassigned);
                    }
                }
            }
        }
    }

    /// A queued conversation's overflow is due: still waiting, its workflow moves it on.
    fn overflow(&mut self, id: i64, now: i64) {
        let Some(f) = self.follows.remove(&id) else { return };
        if self.live.get(&id).is_none_or(|c| c.agent.is_some() || c.started.is_some()) {
            return;
        }
        let Some(routing) = self.follow(f, Input::Timer, id, now) else { return };
        let Ok(drained) = self.ws.close(ConversationId(id), context(now)) else { return };
        self.ws.forget(ConversationId(id));
        self.drained(drained, now);
        self.carry(id, routing, now);
    }

    fn done(&mut self, id: i64, now: i64) {
        let Some(c) = self.live.remove(&id) else { return };
        if let (Some(ai), Some(started)) = (c.agent, c.started) {
            // Occupancy is of the simulated period: handling after its end is not counted.
            let (from, to) = (started.min(self.end), now.min(self.end));
            self.tallies(c.team, |t| t.busy(ai, to - from));
        }
        if let Some(r) = c.team.and_then(|t| self.releases.get_mut(t)) {
            r.push_back(now);
        }
        let Ok(drained) = self.ws.close(ConversationId(id), context(now)) else { return };
        self.ws.forget(ConversationId(id));
        self.drained(drained, now);
    }

    fn abandon(&mut self, id: i64, now: i64) {
        if self.live.get(&id).is_none_or(|c| c.started.is_some()) {
            return;
        }
        let Some(c) = self.live.remove(&id) else { return };
        if let Some(ai) = c.agent {
            self.pending[ai].retain(|x| *x != id);
        }
        self.tallies(c.team, |t| t.abandoned(now - c.arrived));
        if let Ok(drained) = self.ws.close(ConversationId(id), context(now)) {
            self.ws.forget(ConversationId(id));
            self.drained(drained, now);
        }
    }

    fn presence(&mut self, ai: usize, now: i64) {
        let (cursor, changes) = &mut self.timelines[ai];
        let Some(&(_, p)) = changes.get(*cursor) else { return };
        *cursor += 1;
        let next = changes.get(*cursor).map(|c| c.0);
        let id = self.desk.agents[ai].agent.id;
        if let Ok(drained) = self.ws.set_presence(id, p, context(now)) {
            self.drained(drained, now);
        }
        if !self.is_absent(ai) {
            for waiting in std::mem::take(&mut self.pending[ai]) {
                self.start(waiting, ai, now);
            }
        }
        if let Some(t) = next {
            self.push(t, Kind::Presence(ai));
        }
    }

    fn queue_lengths(&mut self, now: i64) {
        let total: usize = self.ws.queues().map(|(_, q)| q.len()).sum();
        self.whole.queue_at(now, total);
        for (ti, t) in self.desk.teams.iter().enumerate() {
            let n = self.ws.queue(QueueKey::Team(t.id)).len();
            if let Some(tally) = self.teams.get_mut(ti) {
                tally.queue_at(now, n);
            }
        }
    }
}

/// Runs `setup` on its desk, with every team's strategy replaced by `plan` (none: as
/// configured), arrivals from `trace` or drawn; `progress` hears the share done.
pub fn run(
    setup: &Setup,
    desk: &Desk,
    trace: Option<&Trace>,
    plan: Option<Strategy>,
    mut progress: impl FnMut(f64),
) -> RunOutcome {
    // A dated trace is replayed from the Monday of its week in the desk's zone
    // (`crate::compare` has done it once already; then this is a no-op).
    let zoned = trace.and_then(|t| desk.clock.zoned(t));
    let trace = zoned.as_ref().or(trace);
    // A trace covers `hours`, or with none the days up to the midnight after its last
    // arrival.
    let end = match trace {
        Some(t) if setup.hours <= 0.0 => (t.span_millis().div_euclid(86_400_000) + 1) * 86_400_000,
        _ => (setup.hours * 3_600_000.0) as i64,
    };
    let n = desk.agents.len();
    let mut timelines = Vec::with_capacity(n);
    let mut members = desk.agents.iter().map(|a| a.agent.clone()).collect::<Vec<_>>();
    let mut capacity = vec![0.0f64; n];
    for (ai, m) in members.iter_mut().enumerate() {
        let (initial, changes) = desk.timeline(setup, ai, end + AFTER_MILLIS);
        m.presence = initial;
        // Capacity staffed before the end: slots × time not offline.
        let mut on = 0i64;
        let (mut at, mut p) = (0i64, initial);
        for (t, q) in changes.iter().chain(std::iter::once(&(end, Presence::Offline))) {
            let t = (*t).min(end);
            if p != Presence::Offline && t > at {
                on += t - at;
            }
            at = at.max(t);
            p = *q;
        }
        capacity[ai] = f64::from(m.max_open) * on as f64;
        timelines.push((0usize, changes));
    }
    let teams: Vec<Team> = desk
        .teams
        .iter()
        .map(|t| {
            let mut team = Team::new(t.id, plan.unwrap_or(t.strategy));
            team.only_online = t.only_online;
            team
        })
        .collect();
    let Ok(snapshot) = Snapshot::new(members, teams) else {
        return RunOutcome::default();
    };
    let team_members: Vec<Vec<usize>> =
        desk.teams.iter().map(|t| (0..n).filter(|i| desk.agents[*i].agent.in_team(t.id)).collect()).collect();
    let mut sim = Sim {
        setup,
        desk,
        plan,
        rng: Rng::new(setup.seed),
        ws: Workspace::new(snapshot),
        events: BinaryHeap::new(),
        made: 0,
        live: BTreeMap::new(),
        index: desk.agents.iter().enumerate().map(|(i, a)| (a.agent.id, i)).collect(),
        pending: vec![Vec::new(); n],
        releases: vec![VecDeque::new(); desk.teams.len()],
        timelines,
        slots: team_members.iter().map(|m| m.iter().map(|i| desk.agents[*i].agent.max_open).sum()).collect(),
        walks: HashMap::new(),
        follows: HashMap::new(),
        paused: HashMap::new(),
        contacts: HashMap::new(),
        made_contacts: 0,
        whole: Tally::new((0..n).collect(), n, setup.target_seconds),
        teams: team_members.iter().map(|m| Tally::new(m.clone(), n, setup.target_seconds)).collect(),
        end,
        origin: desk.clock.origin(trace),
        hours: desk.clock.hours.clone(),
        calendars: desk.clock.calendars.clone(),
    };
    for ai in 0..n {
        if let Some(&(t, _)) = sim.timelines[ai].1.first() {
            sim.push(t, Kind::Presence(ai));
        }
    }
    if desk.agents.iter().any(|a| a.agent.daily_limit.is_some()) {
        sim.push(86_400_000, Kind::Midnight);
    }
    let mut cursor = 0usize;
    match trace {
        Some(t) => {
            if t.arrivals.first().is_some_and(|a| a.at < end) {
                sim.push(t.arrivals[0].at, Kind::Arrival);
            }
        }
        None => {
            if let Some(t) = setup.next_arrival(&mut sim.rng, 0.0) {
                if (t as i64) < end {
                    sim.push(t as i64, Kind::Arrival);
                }
            }
        }
    }
    let mut next_id = 0i64;
    let mut last_progress = 0.0;
    while let Some(Reverse((now, _, kind))) = sim.events.pop() {
        match kind {
            Kind::Arrival => {
                next_id += 1;
                let arrival = match trace {
                    Some(t) => {
                        let a = t.arrivals.get(cursor).cloned();
                        cursor += 1;
                        if let Some(next) = t.arrivals.get(cursor).filter(|a| a.at < end) {
                            sim.push(next.at, Kind::Arrival);
                        }
                        a
                    }
                    None => {
                        if let Some(t) = setup.next_arrival(&mut sim.rng, now as f64) {
                            if (t as i64) < end {
                                sim.push(t as i64, Kind::Arrival);
                            }
                        }
                        Some(sim.draw(now))
                    }
                };
                if let Some(a) = arrival {
                    sim.arrive(next_id, a);
                }
            }
            Kind::Done(id) => sim.done(id, now),
            Kind::Abandon(id) => sim.abandon(id, now),
            Kind::Overflow(id) => sim.overflow(id, now),
            Kind::Resume(id) => sim.resume(id, now),
            Kind::Presence(ai) => {
                if now >= sim.end && sim.live.is_empty() {
                    break;
                }
                sim.presence(ai, now);
            }
            Kind::Midnight => {
                if let Ok(drained) = sim.ws.drain(context(now)) {
                    sim.drained(drained, now);
                }
                if now < sim.end || (!sim.live.is_empty() && now < sim.end + AFTER_MILLIS) {
                    sim.push(now + 86_400_000, Kind::Midnight);
                }
            }
        }
        sim.queue_lengths(now);
        let done = now as f64 / end.max(1) as f64;
        if done - last_progress >= 0.01 {
            last_progress = done;
            progress(done.min(1.0));
        }
    }
    progress(1.0);
    let waiting: Vec<Option<usize>> =
        sim.live.values().filter(|c| c.started.is_none()).map(|c| c.team).collect();
    for team in waiting {
        sim.tallies(team, Tally::unanswered);
    }
    let Sim { whole, teams: tallies, .. } = sim;
    let total_capacity: f64 = capacity.iter().sum();
    let outcome = whole.finish(end, total_capacity);
    let teams = if desk.teams.len() > 1 {
        tallies
            .into_iter()
            .enumerate()
            .map(|(ti, t)| {
                let cap: f64 = team_members[ti].iter().map(|i| capacity[*i]).sum();
                t.finish(end, cap)
            })
            .collect()
    } else {
        Vec::new()
    };
    RunOutcome { outcome, teams }
}
