//! The seeds' use cases as readable tables (see `/work/shared/seeds`): who is on the team,
//! what happens, and what should come of each event. Every table runs against the in-memory
//! [`Workspace`], which drives the core's pure functions exactly as the store does.
//!
//! A table is a [`Scenario`] (teams and agent rows) run over a list of event rows. Agents are
//! named in the tables; the helper gives them ids in row order, which is also the order of a
//! round-robin rotation. Every action row moves the clock on by one minute before it acts;
//! check rows (`loads`, `queue`, `held_by`, `state_of`) do not.
//!
//! What a row may expect:
//! - `expect_assigned(agent)`, `expect_queued(position, estimate)`, `expect_unassigned()`,
//!   `expect_refused(..)`: where the row's conversation stands afterwards (or the refusal);
//! - `drains(&[(conversation, agent)])`: what the queues handed out as a result (checked on
//!   every row: a row that says nothing expects nothing drained);
//! - `explains(sentence)` / `mentions(phrase)`: the row's decision, as `Trace::explain` words it.
//!
//! Queue estimates use a throughput the helper measures like a store would: releases by the
//! queue's agents within the last `window` seconds, and as serving slots the `max_open` of its
//! online agents.

use std::collections::BTreeMap;
use usher_core::manual::{ManualError, Status};
use usher_core::memory::{MemoryError, Workspace};
use usher_core::model::{
    Agent, AgentId, Channel, ConversationId, Day, Presence, Priority, Skill, Strategy, Team, TeamId,
    Timestamp,
};
use usher_core::queue::{estimate_wait, Drained, QueueKey, Throughput};
use usher_core::request::{AssignRequest, Otherwise, SkillRequirement, Target, WhenNobody};
use usher_core::{Context, Snapshot};

use Presence::{Away, Busy, Offline, Online};

/// 2026-01-01T10:00:00Z.
const T0: Timestamp = Timestamp(1_767_261_600_000);
/// 2026-01-01, days since 1970-01-01 (UTC workspace).
const DAY0: Day = Day(20_454);
/// Every action row happens this many seconds after the previous one.
const STEP_SECONDS: i64 = 60;

// ---------------------------------------------------------------------------------------------
// Agent rows
// ---------------------------------------------------------------------------------------------

/// One agent row: `agent("Ana").online().max_open(3).skills(&[("billing", 3)]).speaks(&["en"])`.
/// Defaults: offline (every row says its presence), `max_open` 5, weight 1, no daily limit, no
/// skills, no languages, a member of the scenario's first team.
#[derive(Debug, Clone)]
struct AgentRow {
    name: &'static str,
    presence: Presence,
    max_open: u32,
    teams: Option<Vec<&'static str>>,
    weight: u32,
    daily_limit: Option<u32>,
    skills: Vec<(&'static str, u8)>,
    languages: Vec<&'static str>,
    channel_caps: Vec<(Channel, u32)>,
}

fn agent(name: &'static str) -> AgentRow {
    AgentRow {
        name,
        presence: Offline,
        max_open: 5,
        teams: None,
        weight: 1,
        daily_limit: None,
        skills: Vec::new(),
        languages: Vec::new(),
        channel_caps: Vec::new(),
    }
}

impl AgentRow {
    fn online(self) -> Self {
        self.presence(Online)
    }
    fn offline(self) -> Self {
        self.presence(Offline)
    }
    fn away(self) -> Self {
        self.presence(Away)
    }
    fn busy(self) -> Self {
        self.presence(Busy)
    }
    fn presence(mut self, p: Presence) -> Self {
        self.presence = p;
        self
    }
    fn max_open(mut self, n: u32) -> Self {
        self.max_open = n;
        self
    }
    fn weight(mut self, w: u32) -> Self {
        self.weight = w;
        self
    }
    fn daily_limit(mut self, n: u32) -> Self {
        self.daily_limit = Some(n);
        self
    }
    fn skills(mut self, skills: &[(&'static str, u8)]) -> Self {
        self.skills = skills.to_vec();
        self
    }
    fn speaks(mut self, languages: &[&'static str]) -> Self {
        self.languages = languages.to_vec();
        self
    }
    /// Member of exactly these teams (none: `&[]`).
    fn teams(mut self, teams: &[&'static str]) -> Self {
        self.teams = Some(teams.to_vec());
        self
    }
    fn channel_cap(mut self, channel: Channel, cap: u32) -> Self {
        self.channel_caps.push((channel, cap));
        self
    }
}

// ---------------------------------------------------------------------------------------------
// Event rows
// ---------------------------------------------------------------------------------------------

/// What a dedicated agent's conversation does when that agent cannot take it.
#[derive(Debug, Clone)]
enum Fallback {
    Wait,
    Leave,
    Team(&'static str),
}

/// A conversation to open, and how it is to be routed.
#[derive(Debug, Clone)]
struct Open {
    conversation: String,
    team: Option<&'static str>,
    channel: Channel,
    priority: Priority,
    previous: Option<&'static str>,
    skills: Vec<(&'static str, u8)>,
    language: Option<&'static str>,
    dedicated: Option<(&'static str, Fallback)>,
    leave_unassigned: bool,
    include_busy: bool,
}

#[derive(Debug, Clone)]
enum Action {
    Open(Open),
    Close(String),
    Reopen(String),
    Status(&'static str, Presence),
    MaxOpen(&'static str, u32),
    Claim(String, &'static str),
    Assign {
        conversation: String,
        agent: &'static str,
        force: bool,
    },
    Unassign(String),
    Transfer(String, &'static str),
    /// Let time pass without anything happening.
    Wait(i64),
    /// Midnight in the workspace's time zone: `Context.today` moves on.
    NextDay,
    /// Run the workspace's drain (what a store does on a timer or at midnight).
    Drain,
    // Checks: no time passes.
    Loads(Vec<(&'static str, u32)>),
    Queue(&'static str, Vec<(String, Option<u64>)>),
    HeldBy(String, Option<&'static str>),
    StateOf(String, Status),
}

/// Why a manual operation was refused, with agents by name.
#[derive(Debug, Clone, PartialEq)]
enum Refusal {
    AlreadyHeld(&'static str),
    Closed,
    NotClosed,
    NotAssigned,
    Ineligible(&'static str, String),
}

/// Where a row's conversation stands afterwards (or what became of the row).
#[derive(Debug, Clone, PartialEq)]
enum Is {
    Done,
    Assigned(&'static str),
    Queued { position: u32, estimate: Option<u64> },
    Unassigned,
    Closed,
    Refused(Refusal),
}

/// One row of a table: an action and what should come of it.
#[derive(Debug, Clone)]
struct Event {
    action: Action,
    expect: Option<Is>,
    drains: Vec<(String, &'static str)>,
    explains: Option<String>,
    mentions: Vec<&'static str>,
}

fn row(action: Action) -> Event {
    Event { action, expect: None, drains: Vec::new(), explains: None, mentions: Vec::new() }
}

/// A new conversation for the scenario's first team, queueing when nobody can take it.
fn open(conversation: impl Into<String>) -> Event {
    row(Action::Open(Open {
        conversation: conversation.into(),
        team: None,
        channel: Channel::WebChat,
        priority: Priority::Normal,
        previous: None,
        skills: Vec::new(),
        language: None,
        dedicated: None,
        leave_unassigned: false,
        include_busy: false,
    }))
}
fn close(conversation: impl Into<String>) -> Event {
    row(Action::Close(conversation.into()))
}
fn reopen(conversation: impl Into<String>) -> Event {
    row(Action::Reopen(conversation.into()))
}
fn status(agent: &'static str, presence: Presence) -> Event {
    row(Action::Status(agent, presence))
}
fn set_max_open(agent: &'static str, max_open: u32) -> Event {
    row(Action::MaxOpen(agent, max_open))
}
fn claim(conversation: impl Into<String>, agent: &'static str) -> Event {
    row(Action::Claim(conversation.into(), agent))
}
/// A manager's assignment, within caps and limits.
fn assign(conversation: impl Into<String>, agent: &'static str) -> Event {
    row(Action::Assign { conversation: conversation.into(), agent, force: false })
}
/// A manager's assignment that may exceed caps and limits.
fn assign_forced(conversation: impl Into<String>, agent: &'static str) -> Event {
    row(Action::Assign { conversation: conversation.into(), agent, force: true })
}
fn unassign(conversation: impl Into<String>) -> Event {
    row(Action::Unassign(conversation.into()))
}
fn transfer(conversation: impl Into<String>, team: &'static str) -> Event {
    row(Action::Transfer(conversation.into(), team))
}
fn wait(seconds: i64) -> Event {
    row(Action::Wait(seconds))
}
fn next_day() -> Event {
    row(Action::NextDay)
}
fn drain() -> Event {
    row(Action::Drain)
}
/// Check: these agents hold exactly these many open conversations.
fn loads(loads: &[(&'static str, u32)]) -> Event {
    row(Action::Loads(loads.to_vec()))
}
/// Check: the queue of a team or of a dedicated agent (by name), in serving order, with each
/// conversation's estimated wait.
fn queue(of: &'static str, entries: &[(&str, Option<u64>)]) -> Event {
    row(Action::Queue(of, entries.iter().map(|(c, e)| (c.to_string(), *e)).collect()))
}
fn held_by(conversation: &str, agent: Option<&'static str>) -> Event {
    row(Action::HeldBy(conversation.to_string(), agent))
}
fn state_of(conversation: &str, status: Status) -> Event {
    row(Action::StateOf(conversation.to_string(), status))
}

impl Event {
    fn request(&mut self) -> &mut Open {
        match &mut self.action {
            Action::Open(o) => o,
            other => panic!("only an open row takes request options, not {other:?}"),
        }
    }
    fn for_team(mut self, team: &'static str) -> Self {
        self.request().team = Some(team);
        self
    }
    fn channel(mut self, channel: Channel) -> Self {
        self.request().channel = channel;
        self
    }
    fn urgent(mut self) -> Self {
        self.request().priority = Priority::Urgent;
        self
    }
    fn high(mut self) -> Self {
        self.request().priority = Priority::High;
        self
    }
    fn low(mut self) -> Self {
        self.request().priority = Priority::Low;
        self
    }
    fn previous(mut self, agent: &'static str) -> Self {
        self.request().previous = Some(agent);
        self
    }
    fn needs(mut self, skill: &'static str, level: u8) -> Self {
        self.request().skills.push((skill, level));
        self
    }
    fn language(mut self, language: &'static str) -> Self {
        self.request().language = Some(language);
        self
    }
    fn dedicated_or_wait(mut self, agent: &'static str) -> Self {
        self.request().dedicated = Some((agent, Fallback::Wait));
        self
    }
    fn dedicated_or_leave(mut self, agent: &'static str) -> Self {
        self.request().dedicated = Some((agent, Fallback::Leave));
        self
    }
    fn dedicated_or_team(mut self, agent: &'static str, team: &'static str) -> Self {
        self.request().dedicated = Some((agent, Fallback::Team(team)));
        self
    }
    fn leave_unassigned(mut self) -> Self {
        self.request().leave_unassigned = true;
        self
    }
    fn include_busy(mut self) -> Self {
        self.request().include_busy = true;
        self
    }

    fn expect(mut self, is: Is) -> Self {
        self.expect = Some(is);
        self
    }
    fn expect_assigned(self, agent: &'static str) -> Self {
        self.expect(Is::Assigned(agent))
    }
    fn expect_queued(self, position: u32, estimate: Option<u64>) -> Self {
        self.expect(Is::Queued { position, estimate })
    }
    fn expect_unassigned(self) -> Self {
        self.expect(Is::Unassigned)
    }
    fn expect_refused(self, refusal: Refusal) -> Self {
        self.expect(Is::Refused(refusal))
    }
    fn drains(mut self, drained: &[(&str, &'static str)]) -> Self {
        self.drains = drained.iter().map(|(c, a)| (c.to_string(), *a)).collect();
        self
    }
    fn explains(mut self, sentence: &str) -> Self {
        self.explains = Some(sentence.to_string());
        self
    }
    fn mentions(mut self, phrase: &'static str) -> Self {
        self.mentions.push(phrase);
        self
    }
}

// ---------------------------------------------------------------------------------------------
// The scenario and its run
// ---------------------------------------------------------------------------------------------

/// Teams (the first is the default for agents and requests) and agents.
struct Scenario {
    teams: Vec<(&'static str, Strategy)>,
    agents: Vec<AgentRow>,
    handle_seconds: u32,
    window_seconds: u32,
}

fn scenario(team: &'static str, strategy: Strategy) -> Scenario {
    Scenario { teams: vec![(team, strategy)], agents: Vec::new(), handle_seconds: 300, window_seconds: 1800 }
}

impl Scenario {
    fn team(mut self, team: &'static str, strategy: Strategy) -> Self {
        self.teams.push((team, strategy));
        self
    }
    fn agents(mut self, rows: Vec<AgentRow>) -> Self {
        self.agents = rows;
        self
    }
    /// The cold-start handling time and the release window of the queue estimates.
    fn estimates(mut self, handle_seconds: u32, window_seconds: u32) -> Self {
        self.handle_seconds = handle_seconds;
        self.window_seconds = window_seconds;
        self
    }

    fn run(self, events: Vec<Event>) -> Run {
        let mut run = Run::new(self);
        for (i, event) in events.into_iter().enumerate() {
            run.step(i + 1, event);
        }
        run
    }
}

/// A running table: the workspace, names to ids, the clock, and what the helper measured.
struct Run {
    ws: Workspace,
    agents: BTreeMap<&'static str, AgentId>,
    teams: BTreeMap<&'static str, TeamId>,
    conversations: BTreeMap<String, ConversationId>,
    default_team: &'static str,
    ctx: Context,
    handle_seconds: u32,
    window_seconds: u32,
    /// (when, who) for every conversation an agent let go of.
    releases: Vec<(Timestamp, AgentId)>,
    /// Every assignment, in the order it happened.
    assignments: Vec<(String, &'static str)>,
}

impl Run {
    fn new(s: Scenario) -> Run {
        let teams: BTreeMap<&'static str, TeamId> =
            s.teams.iter().zip(1..).map(|((name, _), id)| (*name, TeamId(id))).collect();
        let default_team = s.teams.first().map(|(n, _)| *n).expect("a scenario has a team");
        let mut agents = BTreeMap::new();
        let mut rows = Vec::new();
        for (row, id) in s.agents.iter().zip(1..) {
            let id = AgentId(id);
            assert!(agents.insert(row.name, id).is_none(), "two agents named {}", row.name);
            let mut a = Agent::new(id, row.max_open);
            a.presence = row.presence;
            a.weight = row.weight;
            a.daily_limit = row.daily_limit;
            a.skills = row.skills.iter().map(|(n, l)| Skill { name: n.to_string(), level: *l }).collect();
            a.languages = row.languages.iter().map(|l| l.to_string()).collect();
            let member_of = row.teams.clone().unwrap_or_else(|| vec![default_team]);
            a.teams = member_of.iter().map(|t| *teams.get(t).expect("a known team")).collect();
            for (channel, cap) in &row.channel_caps {
                a.channel_caps.set(*channel, Some(*cap));
            }
            rows.push(a);
        }
        let core_teams = s.teams.iter().map(|(n, strategy)| Team::new(teams[n], *strategy)).collect();
        Run {
            ws: Workspace::new(Snapshot::new(rows, core_teams).expect("a valid snapshot")),
            agents,
            teams,
            conversations: BTreeMap::new(),
            default_team,
            ctx: Context { now: T0, today: DAY0 },
            handle_seconds: s.handle_seconds,
            window_seconds: s.window_seconds,
            releases: Vec::new(),
            assignments: Vec::new(),
        }
    }

    fn agent_id(&self, name: &str) -> AgentId {
        *self.agents.get(name).unwrap_or_else(|| panic!("no agent named {name}"))
    }

    fn team_id(&self, name: &str) -> TeamId {
        *self.teams.get(name).unwrap_or_else(|| panic!("no team named {name}"))
    }

    fn conversation_id(&self, name: &str) -> ConversationId {
        *self.conversations.get(name).unwrap_or_else(|| panic!("no conversation named {name}"))
    }

    fn name(&self, id: AgentId) -> &'static str {
        self.agents.iter().find(|(_, v)| **v == id).map(|(k, _)| *k).unwrap_or("?")
    }

    fn conversation_name(&self, id: ConversationId) -> String {
        self.conversations.iter().find(|(_, v)| **v == id).map(|(k, _)| k.clone()).unwrap_or_default()
    }

    fn explain(&self, trace: &usher_core::trace::Trace) -> String {
        trace.explain(|a| self.name(a).to_string())
    }

    /// Open conversations held by an agent.
    fn load(&self, name: &str) -> u32 {
        self.ws.snapshot.agent(self.agent_id(name)).expect("a known agent").open
    }

    /// Every assignment so far, in order: (conversation, agent).
    fn assignments(&self) -> &[(String, &'static str)] {
        &self.assignments
    }

    fn queue_key(&self, of: &str) -> QueueKey {
        match (self.teams.get(of), self.agents.get(of)) {
            (Some(t), _) => QueueKey::Team(*t),
            (None, Some(a)) => QueueKey::Agent(*a),
            (None, None) => panic!("no team or agent named {of}"),
        }
    }

    /// What the estimate knows about a queue now: releases by its agents within the window,
    /// and the `max_open` of its online agents.
    fn throughput(&self, key: QueueKey) -> Throughput {
        let serving: Vec<&Agent> = match key {
            QueueKey::Team(t) => self.ws.snapshot.members(t).collect(),
            QueueKey::Agent(a) => self.ws.snapshot.agent(a).into_iter().collect(),
        };
        let releases = self
            .releases
            .iter()
            .filter(|(at, who)| {
                self.ctx.now.seconds_since(*at) < u64::from(self.window_seconds)
                    && serving.iter().any(|a| a.id == *who)
            })
            .count();
        Throughput {
            releases: u32::try_from(releases).expect("few releases"),
            window_seconds: self.window_seconds,
            serving_slots: serving.iter().filter(|a| a.presence == Online).map(|a| a.max_open).sum(),
            default_handle_seconds: self.handle_seconds,
        }
    }

    /// Where a conversation stands: held, queued (position and estimate), unassigned, closed.
    fn placement(&self, id: ConversationId) -> Is {
        let record = self.ws.conversation(id).expect("a known conversation");
        match record.state.status {
            Status::Assigned => Is::Assigned(self.name(record.state.assignee.expect("an assignee"))),
            Status::Unassigned => Is::Unassigned,
            Status::Closed => Is::Closed,
            Status::Queued => {
                let (key, _) = self
                    .ws
                    .queues()
                    .find(|(_, q)| q.iter().any(|w| w.conversation() == id))
                    .expect("a queued conversation is in a queue");
                let place = self
                    .ws
                    .places(*key, self.throughput(*key))
                    .into_iter()
                    .find(|p| p.conversation == id)
                    .expect("a place in its queue");
                Is::Queued { position: place.position, estimate: place.estimated_wait_seconds }
            }
        }
    }

    fn holders(&self) -> BTreeMap<ConversationId, Option<AgentId>> {
        self.ws.conversations().map(|(id, r)| (*id, r.state.assignee)).collect()
    }

    fn refusal(&self, e: MemoryError) -> Refusal {
        match e {
            MemoryError::Manual(ManualError::AlreadyHeld { by }) => Refusal::AlreadyHeld(self.name(by)),
            MemoryError::Manual(ManualError::Closed) => Refusal::Closed,
            MemoryError::Manual(ManualError::NotClosed) => Refusal::NotClosed,
            MemoryError::Manual(ManualError::NotAssigned) => Refusal::NotAssigned,
            MemoryError::Manual(ManualError::Ineligible { agent, reason }) => {
                Refusal::Ineligible(self.name(agent), reason.phrase())
            }
            other => panic!("unexpected error: {other}"),
        }
    }

    fn new_request(&mut self, o: &Open) -> AssignRequest {
        assert!(!self.conversations.contains_key(&o.conversation), "{} opened twice", o.conversation);
        let id = ConversationId(i64::try_from(self.conversations.len()).expect("few") + 1);
        self.conversations.insert(o.conversation.clone(), id);
        let team = self.team_id(o.team.unwrap_or(self.default_team));
        let mut r = AssignRequest::to_team(id, team, self.ctx.now);
        r.channel = o.channel;
        r.priority = o.priority;
        r.previous_agent = o.previous.map(|n| self.agent_id(n));
        r.requirements.skills = o
            .skills
            .iter()
            .map(|(name, level)| SkillRequirement { name: name.to_string(), min_level: *level })
            .collect();
        r.requirements.language = o.language.map(str::to_string);
        r.rules.include_busy = o.include_busy;
        r.when_nobody = if o.leave_unassigned { WhenNobody::LeaveUnassigned } else { WhenNobody::Queue };
        if let Some((who, fallback)) = &o.dedicated {
            let otherwise = match fallback {
                Fallback::Wait => Otherwise::WaitForAgent,
                Fallback::Leave => Otherwise::LeaveUnassigned,
                Fallback::Team(t) => Otherwise::Team { team: self.team_id(t), strategy: None },
            };
            r.target = Target::Agent { agent: self.agent_id(who), otherwise };
        }
        r
    }

    /// Runs one row and checks everything it expects.
    fn step(&mut self, n: usize, event: Event) {
        let here = format!("row {n}: {:?}", event.action);
        let is_check = matches!(
            event.action,
            Action::Loads(_) | Action::Queue(..) | Action::HeldBy(..) | Action::StateOf(..)
        );
        if !is_check && !matches!(event.action, Action::Wait(_) | Action::NextDay) {
            self.ctx.now = self.ctx.now.plus_seconds(STEP_SECONDS);
        }
        let before = self.holders();
        let decisions_before =
            |ws: &Workspace, id: ConversationId| ws.conversation(id).map_or(0, |r| r.decisions.len());

        // The conversation the row is about, and what the workspace answered.
        let mut subject: Option<ConversationId> = None;
        let mut subject_decisions = 0;
        let mut result: Result<Vec<Drained>, MemoryError> = Ok(Vec::new());
        let ctx = self.ctx;
        match &event.action {
            Action::Open(o) => {
                let r = self.new_request(o);
                subject = Some(r.conversation);
                result = self.ws.open(r, ctx).map(|_| Vec::new());
            }
            Action::Close(c) => result = self.ws.close(self.conversation_id(c), ctx),
            Action::Reopen(c) => {
                let id = self.conversation_id(c);
                subject = Some(id);
                subject_decisions = decisions_before(&self.ws, id);
                result = self.ws.reopen(id, ctx).map(|_| Vec::new());
            }
            Action::Status(a, p) => result = self.ws.set_presence(self.agent_id(a), *p, ctx),
            Action::MaxOpen(a, m) => result = self.ws.set_max_open(self.agent_id(a), *m, ctx),
            Action::Claim(c, a) => {
                let id = self.conversation_id(c);
                subject = Some(id);
                subject_decisions = decisions_before(&self.ws, id);
                result = self.ws.claim(id, self.agent_id(a), ctx);
            }
            Action::Assign { conversation, agent, force } => {
                let id = self.conversation_id(conversation);
                subject = Some(id);
                subject_decisions = decisions_before(&self.ws, id);
                result = self.ws.assign(id, self.agent_id(agent), *force, ctx);
            }
            Action::Unassign(c) => {
                let id = self.conversation_id(c);
                subject = Some(id);
                subject_decisions = decisions_before(&self.ws, id);
                result = self.ws.unassign(id, ctx);
            }
            Action::Transfer(c, t) => {
                let id = self.conversation_id(c);
                subject = Some(id);
                subject_decisions = decisions_before(&self.ws, id);
                result = self.ws.transfer_to_team(id, self.team_id(t), ctx);
            }
            Action::Wait(s) => self.ctx.now = self.ctx.now.plus_seconds(*s),
            Action::NextDay => {
                self.ctx.now = self.ctx.now.plus_seconds(86_400);
                self.ctx.today = Day(self.ctx.today.0 + 1);
            }
            Action::Drain => result = self.ws.drain(ctx),
            Action::Loads(want) => {
                let got: Vec<(&'static str, u32)> = want.iter().map(|(a, _)| (*a, self.load(a))).collect();
                assert_eq!(&got, want, "{here}: open conversations per agent");
            }
            Action::Queue(of, want) => {
                let key = self.queue_key(of);
                let got: Vec<(String, Option<u64>)> = self
                    .ws
                    .places(key, self.throughput(key))
                    .into_iter()
                    .map(|p| (self.conversation_name(p.conversation), p.estimated_wait_seconds))
                    .collect();
                assert_eq!(
                    &got,
                    want,
                    "{here}: queue in serving order, with estimates ({:?})",
                    self.throughput(key)
                );
            }
            Action::HeldBy(c, want) => {
                let got = self.ws.conversation(self.conversation_id(c)).and_then(|r| r.state.assignee);
                assert_eq!(got.map(|a| self.name(a)), *want, "{here}");
            }
            Action::StateOf(c, want) => {
                let got = self.ws.conversation(self.conversation_id(c)).map(|r| r.state.status);
                assert_eq!(got, Some(*want), "{here}");
            }
        }

        // Bookkeeping: releases (for the estimates) and assignments, from the holders' change.
        let after = self.holders();
        for (id, held) in &before {
            if let Some(a) = held {
                if after.get(id).copied().flatten() != Some(*a) {
                    self.releases.push((ctx.now, *a));
                }
            }
        }
        let drained: Vec<(String, &'static str)> = match &result {
            Ok(d) => d.iter().map(|d| (self.conversation_name(d.conversation), self.name(d.agent))).collect(),
            Err(_) => Vec::new(),
        };
        if let Some(id) = subject {
            if let Some(held) = after.get(&id).copied().flatten() {
                if before.get(&id).copied().flatten() != Some(held) {
                    self.assignments.push((self.conversation_name(id), self.name(held)));
                }
            }
        }
        self.assignments.extend(drained.iter().cloned());

        // The row's own decision, if it took one.
        let trace = subject.and_then(|id| {
            let r = self.ws.conversation(id)?;
            (r.decisions.len() > subject_decisions).then(|| r.decisions.last()).flatten().map(|d| &d.trace)
        });
        let sentence = trace.map(|t| self.explain(t)).unwrap_or_default();

        // Where the row's conversation stands, or the refusal.
        let got = match result {
            Err(e) => Is::Refused(self.refusal(e)),
            Ok(_) => match subject {
                Some(id) => self.placement(id),
                None => Is::Done,
            },
        };
        match &event.expect {
            Some(want) => assert_eq!(&got, want, "{here}\n  decision: {sentence}"),
            None => {
                assert!(
                    !matches!(event.action, Action::Open(_) | Action::Reopen(_) | Action::Transfer(..)),
                    "{here}: a row that routes a conversation must state the outcome (got {got:?}: {sentence})"
                );
                assert!(!matches!(got, Is::Refused(_)), "{here}: refused: {got:?}");
            }
        }
        assert_eq!(drained, event.drains, "{here}: conversations drained from the queues");
        if let Some(want) = &event.explains {
            assert_eq!(&sentence, want, "{here}: the trace");
        }
        for phrase in &event.mentions {
            assert!(sentence.contains(phrase), "{here}: the trace {sentence:?} should mention {phrase:?}");
        }
    }
}

/// Names `lead1`, `lead2`, ... for generated rows.
fn numbered(prefix: &str, n: usize) -> String {
    format!("{prefix}{n}")
}

// ---------------------------------------------------------------------------------------------
// The seeds' use cases
// ---------------------------------------------------------------------------------------------

/// Low cost (respond.io, "Assignment: Round Robin + Online Only"): "Resolve inquiries as
/// quickly as possible - Focused on reducing sales and support costs"; round robin "to
/// distribute Contacts equally among agents" with "Only assign to online users" on.
#[test]
fn low_cost_round_robin_online_only() {
    let run = scenario("Support", Strategy::RoundRobin)
        .agents(vec![
            agent("Ana").online(),
            agent("Bob").away(),
            agent("Cara").online(),
            agent("Dan").offline(),
            agent("Eli").busy(),
            agent("Finn").online(),
        ])
        .run(vec![
            open("c1").expect_assigned("Ana").explains(
                "assigned to Ana by round robin: Ana was first in the rotation; Bob away; \
                 Cara not next; Dan offline; Eli busy; Finn not next",
            ),
            open("c2").expect_assigned("Cara").explains(
                "assigned to Cara by round robin: Ana not next; Bob away; Cara was next after Ana; \
                 Dan offline; Eli busy; Finn not next",
            ),
            open("c3").expect_assigned("Finn"),
            open("c4").expect_assigned("Ana"), // wraps around
            // Bob comes back: he rejoins the rotation at his place (after Ana, by id).
            status("Bob", Online),
            open("c5").expect_assigned("Bob"),
            open("c6").expect_assigned("Cara"),
            // Cara leaves; the rotation continues after her, at the next online agent.
            status("Cara", Offline),
            open("c7").expect_assigned("Finn").mentions("Finn was next after Cara"),
            open("c8").expect_assigned("Ana"),
            open("c9").expect_assigned("Bob"),
            open("c10").expect_assigned("Finn"),
            // A request may include busy agents: Eli takes his turn.
            open("c11").include_busy().expect_assigned("Ana"),
            open("c12").include_busy().expect_assigned("Bob"),
            open("c13").include_busy().expect_assigned("Eli").explains(
                "assigned to Eli by round robin: Ana not next; Bob not next; Cara offline; \
                 Dan offline; Eli was next after Bob; Finn not next",
            ),
            // Ana and Finn were online throughout (Ana also took c11, a busy-inclusive turn),
            // Bob from c5 on, Cara until c6; Eli only where busy agents were included.
            loads(&[("Ana", 4), ("Bob", 3), ("Cara", 2), ("Dan", 0), ("Eli", 1), ("Finn", 3)]),
        ]);
    assert_eq!(run.assignments().len(), 13);
}

/// High quality (respond.io, "Assignment: Least Open Contacts"): "Provide great service -
/// Views excellent service as a competitive advantage"; give each conversation to "agents with
/// the fewest ongoing conversations", so each has "a manageable caseload".
#[test]
fn high_quality_least_open_contacts() {
    scenario("Support", Strategy::LeastOpen)
        .agents(vec![
            agent("Ana").online(),
            agent("Bob").online(),
            agent("Cara").online(),
            agent("Ravi").offline(),
            agent("Eve").busy(),
        ])
        .run(vec![
            // Nobody assigned yet, all at 0: the lowest id.
            open("c1").expect_assigned("Ana").explains(
                "assigned to Ana by least open contacts: Ana had 0 open; Bob had 0 open; \
                 Cara had 0 open; Ravi offline; Eve busy",
            ),
            open("c2").expect_assigned("Bob"),
            open("c3").expect_assigned("Cara"),
            // All at 1: Ana was assigned longest ago.
            open("c4").expect_assigned("Ana"),
            open("c5").expect_assigned("Bob"),
            open("c6").expect_assigned("Cara"),
            loads(&[("Ana", 2), ("Bob", 2), ("Cara", 2)]),
            // Bob closes one: he has the fewest, he is next.
            close("c2"),
            open("c7").expect_assigned("Bob").explains(
                "assigned to Bob by least open contacts: Ana had 2 open; Bob had 1 open; \
                 Cara had 2 open; Ravi offline; Eve busy",
            ),
            // All at 2 again: Ana (c4) was assigned before Cara (c6) and Bob (c7).
            open("c8").expect_assigned("Ana"),
            close("c3"),
            open("c9").expect_assigned("Cara"),
            // Ravi comes online with nothing open: he is the least loaded.
            status("Ravi", Online),
            open("c10").expect_assigned("Ravi"),
            close("c10"),
            // Eve comes online too: Ravi and Eve both hold 0; Eve was never assigned, which
            // counts as longest ago, so she wins despite her higher id.
            status("Eve", Online),
            open("c11").expect_assigned("Eve"),
            open("c12").expect_assigned("Ravi"), // 0 open again after closing c10
            loads(&[("Ana", 3), ("Bob", 2), ("Cara", 2), ("Ravi", 1), ("Eve", 1)]),
        ]);
}

/// Sales lead rotation (the vendor's guide): "As each conversation represents an opportunity
/// for sales agents to convert leads and earn commissions, equitable conversation distribution
/// among team members is paramount" - round robin "guarantees leads are distributed equally".
#[test]
fn sales_lead_rotation_gives_equal_counts() {
    let reps = ["Sam", "Tia", "Uma", "Vic"];
    let mut rows: Vec<Event> =
        (1..=40).map(|i| open(numbered("lead", i)).expect_assigned(reps[(i - 1) % reps.len()])).collect();
    rows.push(loads(&[("Sam", 10), ("Tia", 10), ("Uma", 10), ("Vic", 10)]));
    // Closing leads does not change whose turn it is: round robin counts turns, not load.
    rows.push(close("lead1"));
    rows.push(close("lead5"));
    rows.push(open("lead41").expect_assigned("Sam"));
    rows.push(open("lead42").expect_assigned("Tia"));
    let run = scenario("Sales", Strategy::RoundRobin)
        .agents(reps.iter().map(|r| agent(r).online().max_open(100)).collect())
        .run(rows);
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, rep) in run.assignments() {
        *counts.entry(rep).or_default() += 1;
    }
    assert_eq!(counts.values().copied().collect::<Vec<_>>(), vec![11, 11, 10, 10]);
}

/// A dedicated agent for VIPs (respond.io "Assign to a specific user"; the vendor's guide):
/// "assign high-priority customers to a dedicated agent ... a primary point of contact for all
/// their needs". When the manager is full, the VIP waits for them, or falls back to the team.
#[test]
fn dedicated_vip_agent() {
    scenario("Support", Strategy::RoundRobin)
        .agents(vec![
            agent("Vera").online().max_open(2).teams(&[]), // the account manager, in no team
            agent("Sam").online(),
            agent("Tom").online(),
        ])
        .run(vec![
            open("v1")
                .dedicated_or_wait("Vera")
                .expect_assigned("Vera")
                .explains("assigned to Vera as the dedicated agent: Vera could take it"),
            open("v2").dedicated_or_wait("Vera").expect_assigned("Vera"),
            // Vera is at her cap: the VIP waits in Vera's own queue. Cold start: Vera's 2 slots,
            // 300 s each: ceil(1 × 300 / 2) = 150 s.
            open("v3")
                .dedicated_or_wait("Vera")
                .expect_queued(1, Some(150))
                .explains("waiting for Vera: Vera at cap 2/2"),
            // Another VIP with the team as fallback: round robin in Support.
            open("v4").dedicated_or_team("Vera", "Support").expect_assigned("Sam").explains(
                "assigned to Sam by round robin: Vera at cap 2/2; Sam was first in the rotation; \
                 Tom not next",
            ),
            open("v5").dedicated_or_leave("Vera").expect_unassigned(),
            open("c6").expect_assigned("Tom"),
            queue("Vera", &[("v3", Some(150))]),
            queue("Support", &[]),
            // Capacity freed elsewhere does not serve Vera's VIP...
            close("c6"),
            queue("Vera", &[("v3", Some(150))]),
            // ...Vera closing one does, at once.
            close("v1").drains(&[("v3", "Vera")]),
            queue("Vera", &[]),
            loads(&[("Vera", 2), ("Sam", 1), ("Tom", 0)]),
            // Vera steps away: a new VIP waits for her. One release by Vera in the window (fewer
            // than 3) and no online slot: no honest estimate.
            status("Vera", Away),
            open("v7")
                .dedicated_or_wait("Vera")
                .expect_queued(1, None)
                .explains("waiting for Vera: Vera away"),
            // Back, but still full: nothing moves until she closes one.
            status("Vera", Online),
            close("v2").drains(&[("v7", "Vera")]),
            loads(&[("Vera", 2), ("Sam", 1), ("Tom", 0)]),
        ]);
}

/// Returning customers (the vendor's guide; SaleSmartly): "route returning customers with an
/// interaction history to the previous agent responsible for their case"; "Old visitors can be
/// assigned to the customer service member who has previously received them".
#[test]
fn returning_customer_goes_to_the_previous_agent() {
    scenario("Support", Strategy::RoundRobin)
        .agents(vec![agent("Ana").online(), agent("Bob").online().max_open(2), agent("Cara").online()])
        .run(vec![
            open("c1").expect_assigned("Ana"),
            open("c2")
                .previous("Cara")
                .expect_assigned("Cara")
                .explains("assigned to Cara as the contact's previous agent: Cara could take it"),
            // The rotation continues after Ana: the previous-agent assignment does not move it.
            open("c3").expect_assigned("Bob"),
            // The previous agent is offline: the team's strategy decides.
            status("Cara", Offline),
            open("c4").previous("Cara").expect_assigned("Ana").explains(
                "assigned to Ana by round robin: Cara offline; Ana was next after Bob; Bob not next; \
                 Cara offline",
            ),
            // A closed conversation that reopens goes back to its last agent.
            close("c1"),
            reopen("c1")
                .expect_assigned("Ana")
                .explains("assigned to Ana as the contact's previous agent: Ana could take it"),
            // Reopened while its last agent is offline: the team's strategy (after Ana: Bob).
            close("c2"),
            reopen("c2").expect_assigned("Bob").mentions("Cara offline").mentions("Bob was next after Ana"),
            // The previous agent at cap (Bob holds c3 and c2): the team's strategy again.
            open("c5").previous("Bob").expect_assigned("Ana").mentions("Bob at cap 2/2"),
            loads(&[("Ana", 3), ("Bob", 2), ("Cara", 0)]),
        ]);
}

/// Reception ratio (SaleSmartly): "if member A's reception limit is set to 100 and member B's
/// is 200, then the probability of new conversations ... being allocated to A is 1/3 and B is
/// 2/3"; and a daily reception limit stops an agent until the next day.
#[test]
fn reception_ratio_and_daily_limits() {
    // The daily limits as weights. Smooth weighted rotation, credits (Ana, Bob), each decision
    // adds (100, 200) and the winner pays 300:
    //   (100, 200) -> Bob (100, -100); (200, 100) -> Ana (-100, 100); (0, 300) -> Bob (0, 0)
    // so the pattern Bob, Ana, Bob repeats.
    let pattern = ["Bob", "Ana", "Bob"];
    let rows: Vec<Event> =
        (1..=30).map(|i| open(numbered("c", i)).expect_assigned(pattern[(i - 1) % 3])).collect();
    let run = scenario("Support", Strategy::Weighted)
        .agents(vec![
            agent("Ana").online().max_open(1000).weight(100).daily_limit(100),
            agent("Bob").online().max_open(1000).weight(200).daily_limit(200),
        ])
        .run(rows);
    let (mut ana, mut bob) = (0i64, 0i64);
    for (n, (_, who)) in (1i64..).zip(run.assignments()) {
        match *who {
            "Ana" => ana += 1,
            _ => bob += 1,
        }
        // Within one of the exact share after every decision: |ana - n/3| <= 1, |bob - 2n/3| <= 1.
        assert!((3 * ana - n).abs() <= 3, "after {n}: Ana {ana}");
        assert!((3 * bob - 2 * n).abs() <= 3, "after {n}: Bob {bob}");
    }
    assert_eq!((ana, bob), (10, 20));

    // A daily limit: Ana may receive 2 a day. Weights 1 and 2; credits (Ana, Bob), the winner
    // pays the eligible set's total weight:
    //   d1 (1, 2) -> Bob (1, -1); d2 (2, 1) -> Ana (-1, 1); d3 (0, 3) -> Bob (0, 0);
    //   d4 (1, 2) -> Bob (1, -1); d5 (2, 1) -> Ana (-1, 1): Ana has received 2, her limit;
    //   d6 Ana skipped, Bob alone: (-1, 3) -> Bob pays 2 (-1, 1); d7 the same.
    scenario("Support", Strategy::Weighted)
        .agents(vec![
            agent("Ana").online().max_open(100).weight(1).daily_limit(2),
            agent("Bob").online().max_open(100).weight(2),
        ])
        .run(vec![
            open("d1").expect_assigned("Bob"),
            open("d2").expect_assigned("Ana"),
            open("d3").expect_assigned("Bob"),
            open("d4").expect_assigned("Bob"),
            open("d5").expect_assigned("Ana"),
            open("d6").expect_assigned("Bob").explains(
                "assigned to Bob by weighted rotation: Ana daily limit reached 2/2; \
                 Bob had the most credit (3, weight 2 of 2)",
            ),
            open("d7").expect_assigned("Bob").mentions("daily limit reached 2/2"),
            // Midnight: Ana's count starts again, with both eligible the credits cycle:
            //   d8 (0, 3) -> Bob (0, 0); d9 (1, 2) -> Bob (1, -1); d10 (2, 1) -> Ana (-1, 1);
            //   d11 (0, 3) -> Bob (0, 0); d12 (1, 2) -> Bob (1, -1); d13 (2, 1) -> Ana (-1, 1),
            //   her second today: d14 finds her at the limit again.
            next_day(),
            open("d8").expect_assigned("Bob"),
            open("d9").expect_assigned("Bob"),
            open("d10").expect_assigned("Ana").mentions("Ana had the most credit (2, weight 1 of 3)"),
            open("d11").expect_assigned("Bob"),
            open("d12").expect_assigned("Bob"),
            open("d13").expect_assigned("Ana"),
            open("d14").expect_assigned("Bob").mentions("Ana daily limit reached 2/2"),
        ]);

    // Everyone at the limit: the conversation waits; after midnight a drain serves it.
    scenario("Support", Strategy::RoundRobin)
        .agents(vec![agent("Ana").online().daily_limit(1), agent("Bob").online().daily_limit(1)])
        .run(vec![
            open("e1").expect_assigned("Ana"),
            open("e2").expect_assigned("Bob"),
            // Cold start: 10 slots (5 + 5), 300 s: ceil(300 / 10) = 30 s.
            open("e3").expect_queued(1, Some(30)).mentions("Ana daily limit reached 1/1"),
            next_day(),
            drain().drains(&[("e3", "Ana")]),
            open("e4").expect_assigned("Bob"),
        ]);
}

/// Skills and language (SaleSmartly's airline: "classify them according to the language ...
/// then ask the customer 'What service do you need?'"): "conversations are assigned based on
/// ... Agent Expertise - Required language or technical knowledge".
#[test]
fn skills_and_language_routing() {
    scenario("Support", Strategy::LeastOpen)
        .agents(vec![
            agent("Ana").online().skills(&[("billing", 4)]).speaks(&["en"]),
            agent("Bob").online().skills(&[("tech", 5)]).speaks(&["fr", "en"]),
            agent("Cara").online().skills(&[("billing", 2)]).speaks(&["fr-CA"]),
            agent("Dan").online().max_open(1).skills(&[("billing", 3)]).speaks(&["fr", "en"]),
            agent("Ema").online().skills(&[("Billing", 5)]).speaks(&["pt-BR"]),
        ])
        .run(vec![
            // billing >= 3: Ana, Dan, Ema; all at 0, never assigned: the lowest id.
            open("c1").needs("billing", 3).expect_assigned("Ana"),
            // billing >= 3 in French: only Dan.
            open("c2").needs("billing", 3).language("fr").expect_assigned("Dan").explains(
                "assigned to Dan by least open contacts: Ana does not speak fr; \
                 Bob missing skill billing>=3; Cara missing skill billing>=3 (has 2); Dan had 0 open; \
                 Ema does not speak fr",
            ),
            // Dan is full: the next French billing question waits for him. The cold-start
            // estimate counts the team's online slots, 5 + 5 + 5 + 1 + 5 = 21:
            // ceil(300 / 21) = 15 s.
            open("c3")
                .needs("billing", 3)
                .language("fr")
                .expect_queued(1, Some(15))
                .mentions("missing skill billing>=3")
                .mentions("Dan at cap 1/1")
                .mentions("does not speak fr"),
            // Others are served meanwhile: the waiting one does not block them.
            open("c4").needs("tech", 1).language("fr-FR").expect_assigned("Bob"), // fr-FR: fr
            open("c5").language("pt").expect_assigned("Ema"),                     // pt-BR speaks pt
            open("c6").needs("billing", 1).language("fr").expect_assigned("Cara"), // fr-CA: fr
            // Dan frees up: the French billing question goes to him at once.
            close("c2").drains(&[("c3", "Dan")]),
            loads(&[("Ana", 1), ("Bob", 1), ("Cara", 1), ("Dan", 1), ("Ema", 1)]),
        ]);
}

/// Overcapacity (the vendor's guide): "When agents are operating at maximum capacity ... an
/// update on their position in the queue, and an estimated response time".
#[test]
fn overcapacity_queue_with_position_and_estimate() {
    scenario("Support", Strategy::RoundRobin)
        .agents(vec![agent("Ana").online().max_open(1), agent("Bob").online().max_open(1)])
        .estimates(300, 1800)
        .run(vec![
            open("c1").expect_assigned("Ana"),
            open("c2").expect_assigned("Bob"),
            // Everyone at cap. No releases yet: cold start over 2 slots (1 + 1) at 300 s,
            // position p waits ceil(p × 300 / 2) = 150 p.
            open("c3")
                .expect_queued(1, Some(150))
                .explains("queued in team#1: nobody eligible: Ana at cap 1/1; Bob at cap 1/1"),
            open("c4").expect_queued(2, Some(300)),
            // Urgent goes first, high next; arrival order within a priority.
            open("c5").urgent().expect_queued(1, Some(150)),
            open("c6").high().expect_queued(2, Some(300)),
            open("c7").low().expect_queued(5, Some(750)),
            open("c8").expect_queued(5, Some(750)), // normal: ahead of the low one
            queue(
                "Support",
                &[
                    ("c5", Some(150)),
                    ("c6", Some(300)),
                    ("c3", Some(450)),
                    ("c4", Some(600)),
                    ("c8", Some(750)),
                    ("c7", Some(900)),
                ],
            ),
            // Each close hands the head of the queue to the agent who freed up.
            close("c1").drains(&[("c5", "Ana")]),
            close("c2").drains(&[("c6", "Bob")]),
            close("c5").drains(&[("c3", "Ana")]),
            // Three releases in the last 1800 s: the throughput formula, one release every
            // 1800 / 3 = 600 s, position p waits ceil(p × 1800 / 3) = 600 p.
            queue("Support", &[("c4", Some(600)), ("c8", Some(1200)), ("c7", Some(1800))]),
            close("c6").drains(&[("c4", "Bob")]),
            // Four releases: ceil(p × 1800 / 4) = 450 p.
            queue("Support", &[("c8", Some(450)), ("c7", Some(900))]),
            open("c9").urgent().expect_queued(1, Some(450)),
            // Half an hour passes: the releases fall out of the window, the cold start is back.
            wait(1800),
            queue("Support", &[("c9", Some(150)), ("c8", Some(300)), ("c7", Some(450))]),
            // Nobody online and no recent history: no honest number.
            status("Ana", Offline),
            status("Bob", Offline),
            queue("Support", &[("c9", None), ("c8", None), ("c7", None)]),
            close("c3"), // Ana lets go while offline: nothing is drained to her
            // Ana comes back online with room: the head of the queue goes to her.
            status("Ana", Online).drains(&[("c9", "Ana")]),
            // Bob comes back with room after he closes: the next one goes to him.
            close("c4"),
            status("Bob", Online).drains(&[("c8", "Bob")]),
            // A raised cap frees capacity too.
            set_max_open("Ana", 2).drains(&[("c7", "Ana")]),
            queue("Support", &[]),
            loads(&[("Ana", 2), ("Bob", 1)]),
        ]);

    // The estimate, by hand (see `usher_core::queue`'s module documentation).
    let t = |releases, window_seconds, serving_slots, default_handle_seconds| Throughput {
        releases,
        window_seconds,
        serving_slots,
        default_handle_seconds,
    };
    // Throughput: 12 releases in 900 s is one every 75 s; position 3 waits 3 × 75 = 225 s.
    assert_eq!(estimate_wait(3, t(12, 900, 4, 300)), Some(225));
    // Rounded up: 7 releases in 1800 s, position 2: ceil(3600 / 7) = ceil(514.3) = 515 s.
    assert_eq!(estimate_wait(2, t(7, 1800, 4, 300)), Some(515));
    // Exactly 3 releases is enough history: ceil(1 × 600 / 3) = 200 s.
    assert_eq!(estimate_wait(1, t(3, 600, 4, 300)), Some(200));
    // Two releases are too few: the cold start, ceil(3 × 300 / 4) = 225 s.
    assert_eq!(estimate_wait(3, t(2, 600, 4, 300)), Some(225));
    // Cold start rounded up: ceil(1 × 250 / 3) = ceil(83.3) = 84 s.
    assert_eq!(estimate_wait(1, t(0, 600, 3, 250)), Some(84));
    // No history and nobody available: unknown.
    assert_eq!(estimate_wait(1, t(2, 600, 0, 300)), None);
    // History but an empty window is no history: unknown when nobody is available.
    assert_eq!(estimate_wait(1, t(5, 0, 0, 300)), None);
}

/// Manual operations (SaleSmartly "Join Session"; respond.io's "pick and assign" default;
/// the vendor's guide: managers "distribute conversations ... relying on human judgment"):
/// agents claim unassigned conversations, a second claim fails cleanly, and a manager may
/// exceed a cap only on purpose.
#[test]
fn manual_claims_assignments_and_transfers() {
    scenario("Support", Strategy::RoundRobin)
        .team("Billing", Strategy::LeastOpen)
        .agents(vec![
            agent("Ana").offline().max_open(1),
            agent("Bob").offline().max_open(1),
            agent("Cid").online().max_open(3).teams(&["Billing"]),
        ])
        .run(vec![
            open("c1")
                .leave_unassigned()
                .expect_unassigned()
                .explains("left unassigned: nobody eligible: Ana offline; Bob offline"),
            // Claims ignore presence: a person acting by hand is at work.
            claim("c1", "Ana").expect_assigned("Ana"),
            claim("c1", "Bob").expect_refused(Refusal::AlreadyHeld("Ana")),
            claim("c1", "Ana").expect_assigned("Ana"), // one's own: nothing changes
            loads(&[("Ana", 1), ("Bob", 0)]),
            open("c2").leave_unassigned().expect_unassigned(),
            // Claims stay within the conversation's team.
            claim("c2", "Cid").expect_refused(Refusal::Ineligible("Cid", "not in team#1".into())),
            // A manager's assignment respects the cap unless forced.
            assign("c2", "Ana").expect_refused(Refusal::Ineligible("Ana", "at cap 1/1".into())),
            assign_forced("c2", "Ana").expect_assigned("Ana"),
            loads(&[("Ana", 2)]),
            unassign("c2").expect_unassigned(),
            unassign("c2").expect_refused(Refusal::NotAssigned),
            loads(&[("Ana", 1)]),
            // Transfer to another team: decided there at once.
            transfer("c2", "Billing")
                .expect_assigned("Cid")
                .explains("assigned to Cid by least open contacts: Cid had 0 open"),
            // A new conversation for Billing: least open in that team.
            open("b1").for_team("Billing").expect_assigned("Cid"),
            // Close: nothing but reopen is accepted afterwards.
            close("c1"),
            state_of("c1", Status::Closed),
            loads(&[("Ana", 0)]),
            close("c1").expect_refused(Refusal::Closed),
            claim("c1", "Bob").expect_refused(Refusal::Closed),
            assign_forced("c1", "Bob").expect_refused(Refusal::Closed),
            unassign("c1").expect_refused(Refusal::Closed),
            transfer("c1", "Billing").expect_refused(Refusal::Closed),
            // Reopen: Ana (its last agent) is offline and so is everyone in Support.
            reopen("c1")
                .expect_unassigned()
                .explains("left unassigned: nobody eligible: Ana offline; Ana offline; Bob offline"),
            reopen("c1").expect_refused(Refusal::NotClosed),
            claim("c1", "Bob").expect_assigned("Bob"),
            // A manager moves it from Bob to Ana (within her cap).
            assign("c1", "Ana").expect_assigned("Ana"),
            loads(&[("Ana", 1), ("Bob", 0), ("Cid", 2)]),
            held_by("c2", Some("Cid")),
        ]);
}

/// "Why did Bob get this chat?": every decision explains itself; the strategy, every candidate
/// and the reason each one was passed over or skipped.
#[test]
fn the_trace_explains_the_decision() {
    let mut rows = Vec::new();
    // Least open alternates Ana, Bob, ...: 4 each.
    for i in 1..=8 {
        rows.push(open(numbered("c", i)).expect_assigned(if i % 2 == 1 { "Ana" } else { "Bob" }));
    }
    rows.extend([
        close("c2"),
        close("c4"),
        loads(&[("Ana", 4), ("Bob", 2), ("Ravi", 0)]),
        open("chat")
            .expect_assigned("Bob")
            .explains("assigned to Bob by least open contacts: Ana had 4 open; Bob had 2 open; Ravi offline"),
        // A skill nobody online has at the level.
        open("invoice").needs("billing", 3).leave_unassigned().expect_unassigned().explains(
            "left unassigned: nobody eligible: Ana missing skill billing>=3 (has 2); \
             Bob missing skill billing>=3; Ravi offline",
        ),
        status("Ravi", Online),
        open("invoice2").needs("billing", 3).expect_assigned("Ravi").explains(
            "assigned to Ravi by least open contacts: Ana missing skill billing>=3 (has 2); \
             Bob missing skill billing>=3; Ravi had 0 open",
        ),
    ]);
    scenario("Support", Strategy::LeastOpen)
        .agents(vec![
            agent("Ana").online().skills(&[("billing", 2)]),
            agent("Bob").online(),
            agent("Ravi").offline().skills(&[("billing", 5)]),
        ])
        .run(rows);
}

/// Per-channel caps (the vendor's guide: "setting maximum conversation limits per agent"): an
/// agent who can hold two chats may still take e-mail threads.
#[test]
fn per_channel_caps() {
    scenario("Support", Strategy::RoundRobin)
        .agents(vec![agent("Ana").online().max_open(10).channel_cap(Channel::WebChat, 2)])
        .run(vec![
            open("w1").channel(Channel::WebChat).expect_assigned("Ana"),
            open("w2").channel(Channel::WebChat).expect_assigned("Ana"),
            open("w3")
                .channel(Channel::WebChat)
                .expect_queued(1, Some(30))
                .mentions("Ana at web_chat cap 2/2"),
            open("e1").channel(Channel::Email).expect_assigned("Ana"),
            open("e2").channel(Channel::Email).expect_assigned("Ana"),
            // An e-mail closing does not free a web-chat slot...
            close("e1"),
            queue("Support", &[("w3", Some(30))]),
            // ...a chat closing does.
            close("w1").drains(&[("w3", "Ana")]),
            loads(&[("Ana", 3)]),
        ]);
}

/// The constants above agree with the clock: `DAY0` is the UTC day of `T0`.
#[test]
fn the_tables_clock_is_consistent() {
    assert_eq!(usher_core::clock::local_day(T0, chrono_tz::Tz::UTC), DAY0);
}
