//! Property tests of the routing core.
//!
//! The main property runs random sequences of events (opens, closes, unassignments, claims,
//! manager assignments, reopens, transfers, presence and cap changes, team joins, time passing)
//! against [`usher_core::memory::Workspace`]. Before every step it copies the workspace into a
//! model written in this file, predicts the step with it (whether the operation is refused,
//! who may get each automatic assignment, what the drain hands out and in which order, every
//! counter), and afterwards compares the workspace with the prediction. Eligibility is
//! recomputed here from the documented rules, never by calling
//! `usher_core::decide::eligibility`. Independently of the model, the workspace's own state is
//! checked after every step: counters equal the truth, queues are in order, nobody eligible is
//! idle while work waits.
//!
//! Focused properties follow: the round-robin spread, the weighted shares, least open, and the
//! trace's JSON form.
//!
//! Failures are not persisted to a regressions file (`failure_persistence: None`): proptest
//! prints the shrunk input, which is what to keep.

use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use usher_core::decide::Outcome;
use usher_core::manual::{Conversation, Status};
use usher_core::memory::{MemoryError, Record, Workspace};
use usher_core::model::{
    Agent, AgentId, Channel, ConversationId, DailyCount, Day, Presence, Priority, Skill, Strategy as Routing,
    Team, TeamId, Timestamp,
};
use usher_core::queue::{Drained, QueueKey, Throughput, Waiting};
use usher_core::request::{
    AssignRequest, Otherwise, Requirements, Rules, SkillRequirement, Target, WhenNobody,
};
use usher_core::trace::Trace;
use usher_core::{decide, Context, Decision, Snapshot};

// ---------------------------------------------------------------------------------------------
// Generators
// ---------------------------------------------------------------------------------------------

const T0_MS: i64 = 1_800_000_000_000;
const DAY0: i32 = 20_000;
const SKILLS: [&str; 2] = ["billing", "tech"];
const CHANNELS: [Channel; 3] = [Channel::WebChat, Channel::Email, Channel::Whatsapp];
/// Languages a contact may need. `FR-be` checks that tags match on the primary subtag,
/// case-insensitively (agents speak `en`, `fr` or `fr-CA`).
const LANGUAGES: [&str; 3] = ["en", "fr", "FR-be"];
/// A cap nobody reaches, for the strategy properties.
const BIG: u32 = 1_000_000;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

fn fail(message: impl Into<String>) -> TestCaseError {
    TestCaseError::fail(message.into())
}

fn presence() -> impl Strategy<Value = Presence> {
    prop_oneof![Just(Presence::Online), Just(Presence::Busy), Just(Presence::Away), Just(Presence::Offline)]
}

fn routing() -> impl Strategy<Value = Routing> {
    prop_oneof![Just(Routing::RoundRobin), Just(Routing::LeastOpen), Just(Routing::Weighted)]
}

fn priority() -> impl Strategy<Value = Priority> {
    prop_oneof![Just(Priority::Urgent), Just(Priority::High), Just(Priority::Normal), Just(Priority::Low)]
}

#[derive(Debug, Clone)]
struct AgentSpec {
    presence: Presence,
    max_open: u32,
    daily_limit: Option<u32>,
    weight: u32,
    /// Membership of teams 1-3 (a team that does not exist makes the agent a member of
    /// nothing there).
    teams: [bool; 3],
    /// Levels in `billing` and `tech`.
    skills: [Option<u8>; 2],
    english: bool,
    /// `Some(false)`: speaks `fr`; `Some(true)`: speaks `fr-CA`.
    french: Option<bool>,
    /// Per-channel caps for `CHANNELS`.
    channel_caps: [Option<u32>; 3],
}

fn agent_spec() -> impl Strategy<Value = AgentSpec> {
    (
        presence(),
        0..=4u32,
        prop::option::weighted(0.5, 0..=3u32),
        0..=3u32,
        prop::array::uniform3(any::<bool>()),
        prop::array::uniform2(prop::option::of(1..=5u8)),
        prop::bool::weighted(0.8),
        prop::option::of(any::<bool>()),
        prop::array::uniform3(prop::option::weighted(0.2, 0..=2u32)),
    )
        .prop_map(
            |(presence, max_open, daily_limit, weight, teams, skills, english, french, channel_caps)| {
                AgentSpec {
                    presence,
                    max_open,
                    daily_limit,
                    weight,
                    teams,
                    skills,
                    english,
                    french,
                    channel_caps,
                }
            },
        )
}

#[derive(Debug, Clone, Copy)]
struct TeamSpec {
    strategy: Routing,
    only_online: bool,
}

fn team_spec() -> impl Strategy<Value = TeamSpec> {
    (routing(), prop::bool::weighted(0.7))
        .prop_map(|(strategy, only_online)| TeamSpec { strategy, only_online })
}

/// Agents `agent#1..`, teams `team#1..`.
fn build(agents: &[AgentSpec], teams: &[TeamSpec]) -> Snapshot {
    let agents = agents
        .iter()
        .zip(1i64..)
        .map(|(s, id)| {
            let mut a = Agent::new(AgentId(id), s.max_open);
            a.presence = s.presence;
            a.daily_limit = s.daily_limit;
            a.weight = s.weight;
            a.teams = s.teams.iter().zip(1i64..).filter(|(m, _)| **m).map(|(_, t)| TeamId(t)).collect();
            a.skills = s
                .skills
                .iter()
                .zip(SKILLS)
                .filter_map(|(level, name)| level.map(|level| Skill { name: name.into(), level }))
                .collect();
            if s.english {
                a.languages.push("en".into());
            }
            match s.french {
                Some(false) => a.languages.push("fr".into()),
                Some(true) => a.languages.push("fr-CA".into()),
                None => {}
            }
            for (cap, channel) in s.channel_caps.iter().zip(CHANNELS) {
                a.channel_caps.set(channel, *cap);
            }
            a
        })
        .collect();
    let teams = teams
        .iter()
        .zip(1i64..)
        .map(|(s, id)| {
            let mut t = Team::new(TeamId(id), s.strategy);
            t.only_online = s.only_online;
            t
        })
        .collect();
    Snapshot::new(agents, teams).expect("agent and team ids are distinct")
}

/// Agents and teams are named by small numbers, resolved against the setup when the event
/// runs: an agent number 15 and a team number 7 name nobody (to exercise refusals).
#[derive(Debug, Clone)]
enum TargetSpec {
    Team { team: u8, strategy: Option<Routing> },
    Agent { agent: u8, otherwise: OtherwiseSpec },
}

#[derive(Debug, Clone)]
enum OtherwiseSpec {
    Wait,
    Leave,
    Team { team: u8, strategy: Option<Routing> },
}

#[derive(Debug, Clone)]
struct OpenSpec {
    target: TargetSpec,
    previous: Option<u8>,
    priority: Priority,
    channel: usize,
    skills: Vec<(usize, u8)>,
    language: Option<usize>,
    when_nobody: WhenNobody,
    rules: Rules,
    /// Arrived this many seconds before now.
    early: u8,
    /// Rarely: reuse an existing conversation id (the open must be refused).
    reuse: Option<u16>,
}

fn target_spec() -> impl Strategy<Value = TargetSpec> {
    let otherwise = prop_oneof![
        2 => Just(OtherwiseSpec::Wait),
        1 => Just(OtherwiseSpec::Leave),
        2 => (0..8u8, prop::option::weighted(0.2, routing()))
            .prop_map(|(team, strategy)| OtherwiseSpec::Team { team, strategy }),
    ];
    prop_oneof![
        3 => (0..8u8, prop::option::weighted(0.2, routing()))
            .prop_map(|(team, strategy)| TargetSpec::Team { team, strategy }),
        1 => (0..16u8, otherwise).prop_map(|(agent, otherwise)| TargetSpec::Agent { agent, otherwise }),
    ]
}

fn rules() -> impl Strategy<Value = Rules> {
    (
        prop::option::weighted(0.3, any::<bool>()),
        prop::bool::weighted(0.3),
        prop::bool::weighted(0.2),
        prop::option::weighted(0.3, 0..=4u32),
        prop::bool::weighted(0.85),
        prop::bool::weighted(0.85),
    )
        .prop_map(|(only_online, include_busy, include_away, cap, channel_caps, daily_limit)| Rules {
            only_online,
            include_busy,
            include_away,
            cap,
            channel_caps,
            daily_limit,
        })
}

fn open_spec() -> impl Strategy<Value = OpenSpec> {
    (
        (
            target_spec(),
            prop::option::weighted(0.3, 0..16u8),
            priority(),
            0..CHANNELS.len(),
            prop::collection::vec((0..SKILLS.len(), 1..=5u8), 0..=2),
        ),
        (
            prop::option::weighted(0.3, 0..LANGUAGES.len()),
            prop_oneof![3 => Just(WhenNobody::Queue), 1 => Just(WhenNobody::LeaveUnassigned)],
            rules(),
            0..=3u8,
            prop::option::weighted(0.03, any::<u16>()),
        ),
    )
        .prop_map(
            |(
                (target, previous, priority, channel, skills),
                (language, when_nobody, rules, early, reuse),
            )| {
                OpenSpec {
                    target,
                    previous,
                    priority,
                    channel,
                    skills,
                    language,
                    when_nobody,
                    rules,
                    early,
                    reuse,
                }
            },
        )
}

/// One event. Conversations are named by a number taken modulo (conversations opened + 1),
/// so that one in a while it names a conversation that does not exist.
#[derive(Debug, Clone)]
enum Op {
    Open(OpenSpec),
    Close(u16),
    Unassign(u16),
    Claim(u16, u8),
    Assign {
        conversation: u16,
        agent: u8,
        force: bool,
    },
    Reopen(u16),
    Transfer(u16, u8),
    SetPresence(u8, Presence),
    SetMaxOpen(u8, u32),
    JoinTeam(u8, u8),
    /// Time passes (minutes), perhaps into the next day, and the caller may drain. When it does
    /// not, daily counts that reset at midnight may leave waiting conversations takeable until
    /// the next operation that drains.
    Advance {
        minutes: u16,
        next_day: bool,
        drain: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => open_spec().prop_map(Op::Open),
        3 => any::<u16>().prop_map(Op::Close),
        1 => any::<u16>().prop_map(Op::Unassign),
        2 => (any::<u16>(), 0..16u8).prop_map(|(c, a)| Op::Claim(c, a)),
        2 => (any::<u16>(), 0..16u8, any::<bool>())
            .prop_map(|(conversation, agent, force)| Op::Assign { conversation, agent, force }),
        1 => any::<u16>().prop_map(Op::Reopen),
        1 => (any::<u16>(), 0..8u8).prop_map(|(c, t)| Op::Transfer(c, t)),
        2 => (0..16u8, presence()).prop_map(|(a, p)| Op::SetPresence(a, p)),
        1 => (0..16u8, 0..=4u32).prop_map(|(a, m)| Op::SetMaxOpen(a, m)),
        1 => (0..16u8, 0..8u8).prop_map(|(a, t)| Op::JoinTeam(a, t)),
        2 => (1..=600u16, prop::bool::weighted(0.6), any::<bool>())
            .prop_map(|(minutes, next_day, drain)| Op::Advance { minutes, next_day, drain }),
    ]
}

// ---------------------------------------------------------------------------------------------
// The independent model
// ---------------------------------------------------------------------------------------------

/// The queue order, written independently of `Waiting::order_key`: urgent first, low last,
/// then arrival, then conversation id.
fn serving_key(w: &Waiting) -> (u8, Timestamp, ConversationId) {
    let rank = match w.request.priority {
        Priority::Urgent => 0,
        Priority::High => 1,
        Priority::Normal => 2,
        Priority::Low => 3,
    };
    (rank, w.request.arrived_at, w.request.conversation)
}

/// `pt-BR` -> `pt`, lowercased.
fn primary_language(tag: &str) -> String {
    tag.split(['-', '_']).next().unwrap_or_default().to_ascii_lowercase()
}

/// The team a request belongs to, written independently of `AssignRequest::team`.
fn team_of(request: &AssignRequest) -> Option<TeamId> {
    match &request.target {
        Target::Team { team, .. } | Target::Agent { otherwise: Otherwise::Team { team, .. }, .. } => {
            Some(*team)
        }
        Target::Agent { .. } => None,
    }
}

/// Why `a` may not take `request` automatically, or `None` when it may: the documented checks
/// (team membership, presence, open cap, channel cap, daily limit, skills, language).
fn ineligible(
    a: &Agent,
    team: Option<TeamId>,
    only_online: bool,
    request: &AssignRequest,
    ctx: Context,
) -> Option<String> {
    let rules = &request.rules;
    if let Some(team) = team {
        if !a.teams.contains(&team) {
            return Some(format!("not a member of {team}"));
        }
    }
    if only_online {
        let allowed = match a.presence {
            Presence::Online => true,
            Presence::Busy => rules.include_busy,
            Presence::Away => rules.include_away,
            Presence::Offline => false,
        };
        if !allowed {
            return Some(format!("presence {:?} with rules {rules:?}", a.presence));
        }
    }
    let cap = match rules.cap {
        Some(c) if c < a.max_open => c,
        _ => a.max_open,
    };
    if a.open >= cap {
        return Some(format!(
            "open {} >= cap {cap} (max_open {}, rules.cap {:?})",
            a.open, a.max_open, rules.cap
        ));
    }
    if rules.channel_caps {
        if let Some(cap) = a.channel_caps.get(request.channel) {
            let open = a.open_by_channel.get(request.channel);
            if open >= cap {
                return Some(format!("open on {:?} {open} >= channel cap {cap}", request.channel));
            }
        }
    }
    if rules.daily_limit {
        if let Some(limit) = a.daily_limit {
            let today = if a.received.day == ctx.today { a.received.count } else { 0 };
            if today >= limit {
                return Some(format!("received {today} today >= daily limit {limit}"));
            }
        }
    }
    for need in &request.requirements.skills {
        if !a.skills.iter().any(|s| s.name.eq_ignore_ascii_case(&need.name) && s.level >= need.min_level) {
            return Some(format!("lacks {}>={} (has {:?})", need.name, need.min_level, a.skills));
        }
    }
    if let Some(language) = &request.requirements.language {
        let wanted = primary_language(language);
        if !a.languages.iter().any(|l| primary_language(l) == wanted) {
            return Some(format!("does not speak {language} (speaks {:?})", a.languages));
        }
    }
    None
}

/// What the model expects of a decision.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Expect {
    /// Exactly this agent.
    Agent(AgentId),
    /// Any of these (the weighted rotation, whose credits the model does not track).
    OneOf(Vec<AgentId>),
    /// Wait in this queue.
    Queue(QueueKey),
    /// Stay unassigned.
    Unassigned,
    /// The decision must fail: the team does not exist.
    UnknownTeam,
}

/// Which attempt an expected assignment comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    Dedicated,
    Previous,
    Strategy(TeamId, Routing),
}

/// Agents, teams, conversations and queues, mutated only by the code below.
#[derive(Debug, Clone, PartialEq)]
struct Model {
    agents: Vec<Agent>,
    teams: Vec<Team>,
    convs: BTreeMap<ConversationId, Record>,
    queues: BTreeMap<QueueKey, Vec<Waiting>>,
}

impl Model {
    fn of(ws: &Workspace) -> Model {
        let mut agents = ws.snapshot.agents().to_vec();
        agents.sort_by_key(|a| a.id);
        Model {
            agents,
            teams: ws.snapshot.teams().to_vec(),
            convs: ws.conversations().map(|(id, r)| (*id, r.clone())).collect(),
            queues: ws.queues().map(|(k, q)| (*k, q.clone())).collect(),
        }
    }

    fn agent(&self, id: AgentId) -> Option<&Agent> {
        self.agents.iter().find(|a| a.id == id)
    }

    fn agent_mut(&mut self, id: AgentId) -> Result<&mut Agent, TestCaseError> {
        self.agents.iter_mut().find(|a| a.id == id).ok_or_else(|| fail(format!("model: unknown {id}")))
    }

    fn team(&self, id: TeamId) -> Option<&Team> {
        self.teams.iter().find(|t| t.id == id)
    }

    /// A team's members in id order (the rotation order).
    fn members(&self, team: TeamId) -> Vec<&Agent> {
        self.agents.iter().filter(|a| a.teams.contains(&team)).collect()
    }

    fn state(&self, id: ConversationId) -> Option<Conversation> {
        self.convs.get(&id).map(|r| r.state)
    }

    fn record_mut(&mut self, id: ConversationId) -> Result<&mut Record, TestCaseError> {
        self.convs.get_mut(&id).ok_or_else(|| fail(format!("model: unknown {id}")))
    }

    /// One more open conversation on `channel`, one more received today.
    fn give(&mut self, agent: AgentId, channel: Channel, ctx: Context) -> Result<(), TestCaseError> {
        let a = self.agent_mut(agent)?;
        a.open += 1;
        a.open_by_channel.set(channel, a.open_by_channel.get(channel) + 1);
        let today = if a.received.day == ctx.today { a.received.count } else { 0 };
        a.received = DailyCount { day: ctx.today, count: today + 1 };
        a.last_assigned_at = Some(ctx.now);
        Ok(())
    }

    /// One fewer open conversation on `channel`; the counters must not be zero already.
    fn take_back(&mut self, agent: AgentId, channel: Channel) -> Result<(), TestCaseError> {
        let a = self.agent_mut(agent)?;
        let on_channel = a.open_by_channel.get(channel);
        if a.open == 0 || on_channel == 0 {
            return Err(fail(format!(
                "{agent} lets go of a {channel:?} conversation but its counters say open {} / {on_channel} on that channel",
                a.open
            )));
        }
        a.open -= 1;
        a.open_by_channel.set(channel, on_channel - 1);
        Ok(())
    }

    fn unqueue(&mut self, id: ConversationId) {
        for q in self.queues.values_mut() {
            q.retain(|w| w.request.conversation != id);
        }
        self.queues.retain(|_, q| !q.is_empty());
    }

    fn enqueue(&mut self, key: QueueKey, waiting: Waiting) {
        let q = self.queues.entry(key).or_default();
        q.push(waiting);
        q.sort_by_key(serving_key);
    }

    fn hold(&mut self, id: ConversationId, agent: AgentId) -> Result<(), TestCaseError> {
        let record = self.record_mut(id)?;
        record.state.status = Status::Assigned;
        record.state.assignee = Some(agent);
        record.state.last_assignee = Some(agent);
        Ok(())
    }

    /// Whether a manual assignment by hand passes: the agent exists, is a member of `team` when
    /// one is given, and is under its cap, its channel cap and its daily limit. Presence and
    /// skills are not checked.
    fn capacity(&self, agent: AgentId, team: Option<TeamId>, channel: Channel, ctx: Context) -> bool {
        let Some(a) = self.agent(agent) else { return false };
        let probe = AssignRequest {
            conversation: ConversationId(0),
            channel,
            priority: Priority::Normal,
            arrived_at: ctx.now,
            target: Target::Team { team: TeamId(0), strategy: None },
            previous_agent: None,
            requirements: Requirements::default(),
            rules: Rules {
                only_online: Some(false),
                include_busy: false,
                include_away: false,
                cap: None,
                channel_caps: true,
                daily_limit: true,
            },
            when_nobody: WhenNobody::LeaveUnassigned,
        };
        ineligible(a, team, false, &probe, ctx).is_none()
    }

    /// The decision the documented order of attempts leads to: the dedicated agent, then (for a
    /// team) the previous agent, then the strategy; then the fallback.
    fn expect(&self, request: &AssignRequest, ctx: Context) -> (Expect, Option<Via>) {
        let (team_id, strategy) = match &request.target {
            Target::Agent { agent, otherwise } => {
                let only_online = request.rules.only_online.unwrap_or(true);
                if self
                    .agent(*agent)
                    .is_some_and(|a| ineligible(a, None, only_online, request, ctx).is_none())
                {
                    return (Expect::Agent(*agent), Some(Via::Dedicated));
                }
                match otherwise {
                    Otherwise::WaitForAgent => return (Expect::Queue(QueueKey::Agent(*agent)), None),
                    Otherwise::LeaveUnassigned => return (Expect::Unassigned, None),
                    Otherwise::Team { team, strategy } => (*team, *strategy),
                }
            }
            Target::Team { team, strategy } => (*team, *strategy),
        };
        let Some(team) = self.team(team_id) else { return (Expect::UnknownTeam, None) };
        let only_online = request.rules.only_online.unwrap_or(team.only_online);
        if let Some(previous) = request.previous_agent {
            if self
                .agent(previous)
                .is_some_and(|a| ineligible(a, Some(team_id), only_online, request, ctx).is_none())
            {
                return (Expect::Agent(previous), Some(Via::Previous));
            }
        }
        let strategy = strategy.unwrap_or(team.strategy);
        let eligible: Vec<&Agent> = self
            .members(team_id)
            .into_iter()
            .filter(|a| ineligible(a, Some(team_id), only_online, request, ctx).is_none())
            .filter(|a| strategy != Routing::Weighted || a.weight > 0)
            .collect();
        let expect = match strategy {
            _ if eligible.is_empty() => {
                return match request.when_nobody {
                    WhenNobody::Queue => (Expect::Queue(QueueKey::Team(team_id)), None),
                    WhenNobody::LeaveUnassigned => (Expect::Unassigned, None),
                };
            }
            Routing::RoundRobin => {
                let after = team.rotation.last_agent;
                let next = after
                    .and_then(|last| eligible.iter().find(|a| a.id > last))
                    .or_else(|| eligible.first())
                    .map(|a| a.id);
                Expect::OneOf(next.into_iter().collect())
            }
            Routing::LeastOpen => {
                let best = eligible
                    .iter()
                    .min_by_key(|a| (a.open, a.last_assigned_at.map_or(i64::MIN, |t| t.0), a.id))
                    .map(|a| a.id);
                Expect::OneOf(best.into_iter().collect())
            }
            Routing::Weighted => Expect::OneOf(eligible.iter().map(|a| a.id).collect()),
        };
        let expect = match expect {
            Expect::OneOf(v) if v.len() == 1 && strategy != Routing::Weighted => Expect::Agent(v[0]),
            other => other,
        };
        (expect, Some(Via::Strategy(team_id, strategy)))
    }

    /// Invariant 1: an automatic assignment goes to an agent that some legitimate attempt of the
    /// request allows, judged on the counters as they stood just before it.
    fn check_allowed(
        &self,
        agent: AgentId,
        request: &AssignRequest,
        ctx: Context,
    ) -> Result<(), TestCaseError> {
        let Some(a) = self.agent(agent) else {
            return Err(fail(format!("automatic assignment to unknown {agent}")));
        };
        let mut reasons = Vec::new();
        let team = match &request.target {
            Target::Agent { agent: dedicated, otherwise } => {
                if *dedicated == agent {
                    let only_online = request.rules.only_online.unwrap_or(true);
                    match ineligible(a, None, only_online, request, ctx) {
                        None => return Ok(()),
                        Some(why) => reasons.push(format!("as dedicated agent: {why}")),
                    }
                }
                match otherwise {
                    Otherwise::Team { team, strategy } => Some((*team, *strategy)),
                    _ => None,
                }
            }
            Target::Team { team, strategy } => Some((*team, *strategy)),
        };
        if let Some((team_id, strategy)) = team {
            match self.team(team_id) {
                None => reasons.push(format!("{team_id} does not exist")),
                Some(t) => {
                    let only_online = request.rules.only_online.unwrap_or(t.only_online);
                    match ineligible(a, Some(team_id), only_online, request, ctx) {
                        Some(why) => reasons.push(format!("in {team_id}: {why}")),
                        None if request.previous_agent == Some(agent) => return Ok(()),
                        None if strategy.unwrap_or(t.strategy) == Routing::Weighted && a.weight == 0 => {
                            reasons.push("weight 0 in a weighted rotation".into());
                        }
                        None => return Ok(()),
                    }
                }
            }
        }
        Err(fail(format!(
            "INVARIANT 1: automatic assignment of {:?} to {agent}, who may not take it: {}\nagent before: {a:?}\nrequest: {request:?}\nctx: {ctx:?}",
            request.conversation,
            reasons.join("; ")
        )))
    }

    /// Checks a decision against the model's expectation, then applies it (the `settle` of a
    /// conversation nobody holds).
    fn settle(
        &mut self,
        request: &AssignRequest,
        decision: &Decision,
        ctx: Context,
    ) -> Result<(), TestCaseError> {
        let id = request.conversation;
        if let Outcome::Assigned(agent) = decision.outcome {
            self.check_allowed(agent, request, ctx)?;
        }
        let (expect, via) = self.expect(request, ctx);
        check_outcome(&expect, decision, request, ctx)?;
        self.record_mut(id)?.decisions.push(decision.clone());
        match decision.outcome {
            Outcome::Assigned(agent) => {
                self.give(agent, request.channel, ctx)?;
                self.hold(id, agent)?;
                if let Some(Via::Strategy(team, Routing::RoundRobin)) = via {
                    if let Some(t) = self.teams.iter_mut().find(|t| t.id == team) {
                        t.rotation.last_agent = Some(agent);
                    }
                }
            }
            Outcome::Queued { team, reserved_for } => {
                self.record_mut(id)?.state.status = Status::Queued;
                let key = match (reserved_for, team) {
                    (Some(a), _) => QueueKey::Agent(a),
                    (None, Some(t)) => QueueKey::Team(t),
                    (None, None) => return Err(fail(format!("{id} queued nowhere: {decision:?}"))),
                };
                self.enqueue(key, Waiting { request: request.clone() });
            }
            Outcome::Unassigned => self.record_mut(id)?.state.status = Status::Unassigned,
        }
        Ok(())
    }

    /// The drain, predicted: every waiting conversation in serving order (all queues merged),
    /// handed to an agent when one can take it now, each assignment counted before the next.
    /// `drained` must be exactly those, in that order. Invariant 4, on the model: afterwards no
    /// waiting conversation has anybody who could take it.
    fn drain(&mut self, drained: &[Drained], ctx: Context, op: &str) -> Result<(), TestCaseError> {
        let mut merged: Vec<Waiting> = self.queues.values().flatten().cloned().collect();
        merged.sort_by_key(serving_key);
        let mut next = 0;
        for waiting in merged {
            let mut request = waiting.request.clone();
            request.when_nobody = WhenNobody::Queue;
            // Invariant 1 first: whatever the drain gave this conversation, the agent could take it.
            if let Some(d) = drained.get(next).filter(|d| d.conversation == request.conversation) {
                self.check_allowed(d.agent, &request, ctx)?;
            }
            let (expect, via) = self.expect(&request, ctx);
            match expect {
                Expect::Queue(_) | Expect::Unassigned => continue,
                Expect::UnknownTeam => {
                    return Err(fail(format!(
                        "{:?} waits for a team that does not exist",
                        request.conversation
                    )))
                }
                Expect::Agent(_) | Expect::OneOf(_) => {}
            }
            let Some(d) = drained.get(next) else {
                return Err(fail(format!(
                    "INVARIANT 4 ({op}): {:?} still waits though {expect:?} could take it now\nrequest: {request:?}\nagents: {:?}",
                    request.conversation, self.agents
                )));
            };
            prop_assert_eq!(
                d.conversation,
                request.conversation,
                "{}: the drain served {:?} where the model serves {:?} ({:?}) next",
                op,
                d.conversation,
                request.conversation,
                expect
            );
            prop_assert_eq!(d.decision.outcome, Outcome::Assigned(d.agent));
            check_outcome(&expect, &d.decision, &request, ctx)?;
            self.give(d.agent, request.channel, ctx)?;
            self.hold(request.conversation, d.agent)?;
            self.record_mut(request.conversation)?.decisions.push(d.decision.clone());
            self.unqueue(request.conversation);
            if let Some(Via::Strategy(team, Routing::RoundRobin)) = via {
                if let Some(t) = self.teams.iter_mut().find(|t| t.id == team) {
                    t.rotation.last_agent = Some(d.agent);
                }
            }
            next += 1;
        }
        prop_assert!(
            next == drained.len(),
            "{}: the drain handed out {:?}, which nobody could take",
            op,
            drained[next..].iter().map(|d| (d.conversation, d.agent)).collect::<Vec<_>>()
        );
        Ok(())
    }
}

fn check_outcome(
    expect: &Expect,
    decision: &Decision,
    request: &AssignRequest,
    ctx: Context,
) -> Result<(), TestCaseError> {
    let ok = match (expect, decision.outcome) {
        (Expect::Agent(x), Outcome::Assigned(a)) => *x == a,
        (Expect::OneOf(v), Outcome::Assigned(a)) => v.contains(&a),
        (Expect::Queue(QueueKey::Agent(x)), Outcome::Queued { team: None, reserved_for: Some(a) }) => *x == a,
        (Expect::Queue(QueueKey::Team(x)), Outcome::Queued { team: Some(t), reserved_for: None }) => *x == t,
        (Expect::Unassigned, Outcome::Unassigned) => true,
        _ => false,
    };
    prop_assert!(
        ok,
        "decision for {:?} differs from the model: expected {:?}, got {:?}\nrequest: {:?}\ntrace: {:?}",
        request.conversation,
        expect,
        decision.outcome,
        request,
        decision.trace
    );
    prop_assert_eq!(decision.trace.at, ctx.now);
    let assignee = match decision.outcome {
        Outcome::Assigned(a) => Some(a),
        _ => None,
    };
    prop_assert_eq!(decision.trace.assignee(), assignee, "the trace states another result");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Checks on the workspace itself
// ---------------------------------------------------------------------------------------------

/// Invariants 2-4, read off the workspace alone (4 only when `drained`: a drain ran since the
/// day last changed).
fn check_workspace(ws: &Workspace, ctx: Context, drained: bool) -> Result<(), TestCaseError> {
    // 2. One assignee at most, counters equal the truth.
    let mut open: BTreeMap<AgentId, u32> = BTreeMap::new();
    let mut by_channel: BTreeMap<(AgentId, Channel), u32> = BTreeMap::new();
    for (id, r) in ws.conversations() {
        let s = r.state;
        prop_assert_eq!(
            s.status == Status::Assigned,
            s.assignee.is_some(),
            "INVARIANT 2: {:?} has status {:?} and assignee {:?}",
            id,
            s.status,
            s.assignee
        );
        if let (Status::Assigned, Some(a)) = (s.status, s.assignee) {
            *open.entry(a).or_default() += 1;
            *by_channel.entry((a, s.channel)).or_default() += 1;
        }
    }
    for a in ws.snapshot.agents() {
        prop_assert_eq!(a.open, open.remove(&a.id).unwrap_or(0), "INVARIANT 2: open count of {}", a.id);
        for channel in Channel::ALL {
            prop_assert_eq!(
                a.open_by_channel.get(channel),
                by_channel.get(&(a.id, channel)).copied().unwrap_or(0),
                "INVARIANT 2: open count of {} on {:?}",
                a.id,
                channel
            );
        }
    }
    prop_assert!(open.is_empty(), "INVARIANT 2: conversations held by unknown agents: {:?}", open);

    // 3. Queue order, positions, one queue per waiting conversation.
    let throughput =
        Throughput { releases: 4, window_seconds: 600, serving_slots: 3, default_handle_seconds: 300 };
    let mut seen: BTreeMap<ConversationId, QueueKey> = BTreeMap::new();
    for (key, q) in ws.queues() {
        for pair in q.windows(2) {
            prop_assert!(
                serving_key(&pair[0]) < serving_key(&pair[1]),
                "INVARIANT 3: queue {:?} out of order: {:?} before {:?}",
                key,
                serving_key(&pair[0]),
                serving_key(&pair[1])
            );
        }
        let places = ws.places(*key, throughput);
        prop_assert_eq!(places.len(), q.len());
        for (i, (place, w)) in places.iter().zip(q.iter()).enumerate() {
            prop_assert_eq!(place.position as usize, i + 1, "INVARIANT 3: positions of {:?}", key);
            prop_assert_eq!(place.conversation, w.request.conversation);
        }
        for pair in places.windows(2) {
            prop_assert!(pair[0].estimated_wait_seconds <= pair[1].estimated_wait_seconds);
        }
        for w in q {
            let id = w.request.conversation;
            if let Some(other) = seen.insert(id, *key) {
                return Err(fail(format!("INVARIANT 3: {id} waits in {other:?} and in {key:?}")));
            }
            let record = ws.conversation(id).ok_or_else(|| fail(format!("{id} waits but does not exist")))?;
            prop_assert_eq!(record.state.status, Status::Queued, "INVARIANT 3: {} waits in {:?}", id, key);
            match key {
                QueueKey::Agent(a) => prop_assert!(
                    matches!(w.request.target, Target::Agent { agent, otherwise: Otherwise::WaitForAgent } if agent == *a),
                    "{} waits for {} but its target is {:?}",
                    id,
                    a,
                    w.request.target
                ),
                QueueKey::Team(t) => {
                    prop_assert_eq!(team_of(&w.request), Some(*t), "{} waits in the wrong team's queue", id);
                    prop_assert_eq!(record.state.team, Some(*t));
                }
            }
        }
    }
    for (id, r) in ws.conversations() {
        if r.state.status == Status::Queued {
            prop_assert!(seen.contains_key(id), "INVARIANT 3: {} is queued but in no queue", id);
        }
    }

    // 4. Nobody eligible idle while work waits.
    for (key, q) in ws.queues().filter(|_| drained) {
        for w in q {
            let mut request = w.request.clone();
            request.when_nobody = WhenNobody::Queue;
            let d = decide(&ws.snapshot, &request, ctx)
                .map_err(|e| fail(format!("waiting entry undecidable: {e}")))?;
            prop_assert!(
                !matches!(d.outcome, Outcome::Assigned(_)),
                "INVARIANT 4: {:?} waits in {:?} but decide gives {:?}",
                request.conversation,
                key,
                d.outcome
            );
        }
    }
    Ok(())
}

/// What a drain inside an operation that does not report it (`open`) handed out: the
/// conversations that waited before and were decided again, in serving order (the order the
/// model's drain walks them in).
fn drained_since(
    before: &Model,
    ws: &Workspace,
    except: ConversationId,
) -> Result<Vec<Drained>, TestCaseError> {
    let mut waiting: Vec<&Waiting> = before.queues.values().flatten().collect();
    waiting.sort_by_key(|w| serving_key(w));
    let mut drained = Vec::new();
    for w in waiting {
        let id = w.request.conversation;
        if id == except {
            continue;
        }
        let known = before.convs.get(&id).map_or(0, |r| r.decisions.len());
        let after = ws.conversation(id).ok_or_else(|| fail(format!("{id} vanished")))?;
        for decision in after.decisions.iter().skip(known) {
            let Outcome::Assigned(agent) = decision.outcome else {
                return Err(fail(format!("{id} was decided again without being assigned: {decision:?}")));
            };
            drained.push(Drained { conversation: id, agent, decision: decision.clone() });
        }
    }
    Ok(drained)
}

/// A refused operation changed nothing.
fn check_unchanged(
    ws: &Workspace,
    before: &Model,
    snapshot: &Snapshot,
    op: &str,
) -> Result<(), TestCaseError> {
    prop_assert!(&ws.snapshot == snapshot, "{}: refused, yet the snapshot changed", op);
    let after = Model::of(ws);
    prop_assert!(after.convs == before.convs, "{}: refused, yet conversations changed", op);
    prop_assert!(after.queues == before.queues, "{}: refused, yet queues changed", op);
    Ok(())
}

/// The workspace equals the model's prediction.
fn check_predicted(ws: &Workspace, model: &Model, op: &str) -> Result<(), TestCaseError> {
    let actual = Model::of(ws);
    for (a, m) in actual.agents.iter().zip(&model.agents) {
        prop_assert_eq!(a, m, "{}: agent {} differs from the model (left: workspace)", op, a.id);
    }
    prop_assert_eq!(actual.agents.len(), model.agents.len());
    for (t, m) in actual.teams.iter().zip(&model.teams) {
        prop_assert_eq!(
            t.rotation.last_agent,
            m.rotation.last_agent,
            "{}: round-robin position of {}",
            op,
            t.id
        );
    }
    let ids: BTreeSet<_> = actual.convs.keys().chain(model.convs.keys()).copied().collect();
    for id in ids {
        let (a, m) = (actual.convs.get(&id), model.convs.get(&id));
        prop_assert_eq!(
            a.map(|r| (r.state, &r.request)),
            m.map(|r| (r.state, &r.request)),
            "{}: conversation {} differs from the model (left: workspace)",
            op,
            id
        );
        prop_assert_eq!(
            a.map(|r| r.decisions.len()),
            m.map(|r| r.decisions.len()),
            "{}: decisions recorded for {}",
            op,
            id
        );
        prop_assert!(a == m, "{}: record of {} differs from the model", op, id);
    }
    prop_assert_eq!(&actual.queues, &model.queues, "{}: queues differ from the model (left: workspace)", op);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Running events
// ---------------------------------------------------------------------------------------------

struct Run {
    ws: Workspace,
    /// The clock moved to a new day without a drain since: waiting conversations may have
    /// become takeable, and invariant 4 holds again only after the next operation that drains.
    stale: bool,
    now_ms: i64,
    today: i32,
    opened: i64,
    agents: i64,
    teams: i64,
}

/// Whether the result is what the model expected; the value when it succeeded.
fn expected<T: Debug>(
    ok: bool,
    result: Result<T, MemoryError>,
    op: &str,
) -> Result<Option<T>, TestCaseError> {
    match (ok, result) {
        (true, Ok(v)) => Ok(Some(v)),
        (false, Err(_)) => Ok(None),
        (true, Err(e)) => Err(fail(format!("{op}: the model expected success, the workspace refused: {e}"))),
        (false, Ok(v)) => {
            Err(fail(format!("{op}: the model expected a refusal, the workspace did it: {v:?}")))
        }
    }
}

impl Run {
    fn new(agents: &[AgentSpec], teams: &[TeamSpec]) -> Run {
        Run {
            ws: Workspace::new(build(agents, teams)),
            stale: false,
            now_ms: T0_MS,
            today: DAY0,
            opened: 0,
            agents: agents.len() as i64,
            teams: teams.len() as i64,
        }
    }

    fn ctx(&self) -> Context {
        Context { now: Timestamp(self.now_ms), today: Day(self.today) }
    }

    fn agent(&self, n: u8) -> AgentId {
        if n == 15 {
            AgentId(99)
        } else {
            AgentId(i64::from(n) % self.agents + 1)
        }
    }

    fn team(&self, n: u8) -> TeamId {
        if n == 7 {
            TeamId(99)
        } else {
            TeamId(i64::from(n) % self.teams + 1)
        }
    }

    fn conversation(&self, n: u16) -> ConversationId {
        ConversationId(i64::from(n) % (self.opened + 1) + 1)
    }

    fn request(&mut self, spec: &OpenSpec) -> AssignRequest {
        let conversation = match spec.reuse {
            Some(n) if self.opened > 0 => ConversationId(i64::from(n) % self.opened + 1),
            _ => {
                self.opened += 1;
                ConversationId(self.opened)
            }
        };
        let target = match &spec.target {
            TargetSpec::Team { team, strategy } => {
                Target::Team { team: self.team(*team), strategy: *strategy }
            }
            TargetSpec::Agent { agent, otherwise } => Target::Agent {
                agent: self.agent(*agent),
                otherwise: match otherwise {
                    OtherwiseSpec::Wait => Otherwise::WaitForAgent,
                    OtherwiseSpec::Leave => Otherwise::LeaveUnassigned,
                    OtherwiseSpec::Team { team, strategy } => {
                        Otherwise::Team { team: self.team(*team), strategy: *strategy }
                    }
                },
            },
        };
        AssignRequest {
            conversation,
            channel: CHANNELS[spec.channel],
            priority: spec.priority,
            arrived_at: Timestamp(self.now_ms - i64::from(spec.early) * 1000),
            target,
            previous_agent: spec.previous.map(|n| self.agent(n)),
            requirements: Requirements {
                skills: spec
                    .skills
                    .iter()
                    .map(|(s, level)| SkillRequirement { name: SKILLS[*s].into(), min_level: *level })
                    .collect(),
                language: spec.language.map(|l| LANGUAGES[l].into()),
            },
            rules: spec.rules,
            when_nobody: spec.when_nobody,
        }
    }

    /// Runs one event, predicting it with the model, and checks everything afterwards.
    fn step(&mut self, op: &Op, seconds: u8) -> Result<(), TestCaseError> {
        self.now_ms += i64::from(seconds) * 1000;
        if let Op::Advance { minutes, next_day, .. } = op {
            self.now_ms += i64::from(*minutes) * 60_000;
            if *next_day {
                self.today += 1;
                self.stale = true;
            }
        }
        let ctx = self.ctx();
        let name = format!("{op:?} at {ctx:?}");
        let snapshot_before = self.ws.snapshot.clone();
        let before = Model::of(&self.ws);
        let mut m = before.clone();
        let done = match op {
            Op::Open(spec) => {
                // A duplicate id or a team (target or fallback) that does not exist is refused
                // before anything changes; otherwise those already waiting go first (a drain),
                // then the newcomer is decided.
                let request = self.request(spec);
                let id = request.conversation;
                let ok = !m.convs.contains_key(&id) && team_of(&request).is_none_or(|t| m.team(t).is_some());
                match expected(ok, self.ws.open(request.clone(), ctx), &name)? {
                    None => false,
                    Some(decision) => {
                        let drained = drained_since(&before, &self.ws, id)?;
                        m.drain(&drained, ctx, &name)?;
                        let state = Conversation {
                            status: Status::Unassigned,
                            assignee: None,
                            team: team_of(&request),
                            channel: request.channel,
                            last_assignee: None,
                        };
                        m.convs.insert(id, Record { state, request: request.clone(), decisions: Vec::new() });
                        m.settle(&request, &decision, ctx)?;
                        true
                    }
                }
            }
            Op::Close(n) => {
                let id = self.conversation(*n);
                let state = m.state(id);
                let ok = state.is_some_and(|s| s.status != Status::Closed);
                match (expected(ok, self.ws.close(id, ctx), &name)?, state) {
                    (Some(drained), Some(s)) => {
                        if let Some(a) = s.assignee {
                            m.take_back(a, s.channel)?;
                        }
                        m.record_mut(id)?.state =
                            Conversation { status: Status::Closed, assignee: None, ..s };
                        m.unqueue(id);
                        m.drain(&drained, ctx, &name)?;
                        true
                    }
                    _ => false,
                }
            }
            Op::Unassign(n) => {
                let id = self.conversation(*n);
                let state = m.state(id);
                let ok = state.is_some_and(|s| s.status == Status::Assigned);
                match (expected(ok, self.ws.unassign(id, ctx), &name)?, state) {
                    (Some(drained), Some(s)) => {
                        if let Some(a) = s.assignee {
                            m.take_back(a, s.channel)?;
                        }
                        m.record_mut(id)?.state =
                            Conversation { status: Status::Unassigned, assignee: None, ..s };
                        m.drain(&drained, ctx, &name)?;
                        true
                    }
                    _ => false,
                }
            }
            Op::Claim(n, a) => {
                let (id, agent) = (self.conversation(*n), self.agent(*a));
                let state = m.state(id);
                // None: refused; Some(false): already the claimant's; Some(true): taken.
                let plan = state.and_then(|s| match s.status {
                    Status::Closed => None,
                    Status::Assigned => (s.assignee == Some(agent)).then_some(false),
                    Status::Queued | Status::Unassigned => {
                        m.capacity(agent, s.team, s.channel, ctx).then_some(true)
                    }
                });
                match (expected(plan.is_some(), self.ws.claim(id, agent, ctx), &name)?, state) {
                    (Some(drained), Some(s)) => {
                        if plan == Some(true) {
                            m.give(agent, s.channel, ctx)?;
                            m.hold(id, agent)?;
                            m.unqueue(id);
                        }
                        // A claim frees nothing and does not drain.
                        prop_assert!(drained.is_empty(), "{}: a claim drained {:?}", name, drained);
                        if !self.stale {
                            m.drain(&[], ctx, &name)?;
                        }
                        true
                    }
                    _ => false,
                }
            }
            Op::Assign { conversation, agent, force } => {
                let (id, agent) = (self.conversation(*conversation), self.agent(*agent));
                let state = m.state(id);
                let plan = state.and_then(|s| {
                    if s.status == Status::Closed {
                        None
                    } else if s.assignee == Some(agent) {
                        Some(false)
                    } else if *force {
                        m.agent(agent).is_some().then_some(true)
                    } else {
                        m.capacity(agent, None, s.channel, ctx).then_some(true)
                    }
                });
                match (expected(plan.is_some(), self.ws.assign(id, agent, *force, ctx), &name)?, state) {
                    (Some(drained), Some(s)) => {
                        if plan == Some(true) {
                            if let Some(old) = s.assignee {
                                m.take_back(old, s.channel)?;
                            }
                            m.give(agent, s.channel, ctx)?;
                            m.hold(id, agent)?;
                            m.unqueue(id);
                        }
                        m.drain(&drained, ctx, &name)?;
                        true
                    }
                    _ => false,
                }
            }
            Op::Reopen(n) => {
                let id = self.conversation(*n);
                let again = m.convs.get(&id).filter(|r| r.state.status == Status::Closed).map(|r| {
                    let mut request = r.request.clone();
                    request.previous_agent = r.state.last_assignee.or(request.previous_agent);
                    request.arrived_at = ctx.now;
                    (r.state, request)
                });
                let ok = again
                    .as_ref()
                    .is_some_and(|(_, request)| m.expect(request, ctx).0 != Expect::UnknownTeam);
                match (expected(ok, self.ws.reopen(id, ctx), &name)?, again) {
                    (Some(decision), Some((s, request))) => {
                        // Like an opening: those already waiting go first (capacity a new day
                        // freed), then the reopened conversation is decided.
                        let drained = drained_since(&before, &self.ws, id)?;
                        m.drain(&drained, ctx, &name)?;
                        let record = m.record_mut(id)?;
                        record.state = Conversation { status: Status::Unassigned, assignee: None, ..s };
                        record.request = request.clone();
                        m.settle(&request, &decision, ctx)?;
                        true
                    }
                    _ => false,
                }
            }
            Op::Transfer(n, t) => {
                let (id, team) = (self.conversation(*n), self.team(*t));
                let state = m.state(id);
                let ok = m.team(team).is_some() && state.is_some_and(|s| s.status != Status::Closed);
                let decisions_before = m.convs.get(&id).map_or(0, |r| r.decisions.len());
                match (expected(ok, self.ws.transfer_to_team(id, team, ctx), &name)?, state) {
                    (Some(drained), Some(s)) => {
                        if let Some(a) = s.assignee {
                            m.take_back(a, s.channel)?;
                        }
                        m.unqueue(id);
                        let record = m.record_mut(id)?;
                        record.state = Conversation {
                            status: Status::Unassigned,
                            assignee: None,
                            team: Some(team),
                            ..s
                        };
                        record.request.target = Target::Team { team, strategy: None };
                        record.request.previous_agent = None;
                        record.request.arrived_at = ctx.now;
                        let request = record.request.clone();
                        // Those already waiting go first, then the transferred conversation.
                        m.drain(&drained, ctx, &name)?;
                        let own = self
                            .ws
                            .conversation(id)
                            .and_then(|r| r.decisions.get(decisions_before))
                            .cloned()
                            .ok_or_else(|| fail(format!("{name}: no decision recorded for the transfer")))?;
                        m.settle(&request, &own, ctx)?;
                        true
                    }
                    _ => false,
                }
            }
            Op::SetPresence(a, presence) => {
                let agent = self.agent(*a);
                let ok = m.agent(agent).is_some();
                match expected(ok, self.ws.set_presence(agent, *presence, ctx), &name)? {
                    Some(drained) => {
                        m.agent_mut(agent)?.presence = *presence;
                        m.drain(&drained, ctx, &name)?;
                        true
                    }
                    None => false,
                }
            }
            Op::SetMaxOpen(a, max_open) => {
                let agent = self.agent(*a);
                let ok = m.agent(agent).is_some();
                match expected(ok, self.ws.set_max_open(agent, *max_open, ctx), &name)? {
                    Some(drained) => {
                        m.agent_mut(agent)?.max_open = *max_open;
                        m.drain(&drained, ctx, &name)?;
                        true
                    }
                    None => false,
                }
            }
            Op::JoinTeam(a, t) => {
                let (agent, team) = (self.agent(*a), self.team(*t));
                let ok = m.agent(agent).is_some() && m.team(team).is_some();
                match expected(ok, self.ws.join_team(agent, team, ctx), &name)? {
                    Some(drained) => {
                        let teams = &mut m.agent_mut(agent)?.teams;
                        if !teams.contains(&team) {
                            teams.push(team);
                            teams.sort();
                        }
                        m.drain(&drained, ctx, &name)?;
                        true
                    }
                    None => false,
                }
            }
            Op::Advance { drain: false, .. } => true,
            Op::Advance { drain: true, .. } => {
                let drained = expected(true, self.ws.drain(ctx), &name)?.unwrap_or_default();
                m.drain(&drained, ctx, &name)?;
                true
            }
        };
        let drains = matches!(
            op,
            Op::Open(_)
                | Op::Close(_)
                | Op::Unassign(_)
                | Op::Assign { .. }
                | Op::Transfer(..)
                | Op::SetPresence(..)
                | Op::SetMaxOpen(..)
                | Op::JoinTeam(..)
                | Op::Advance { drain: true, .. }
        );
        if done && drains {
            self.stale = false;
        }
        if !done {
            check_unchanged(&self.ws, &before, &snapshot_before, &name)?;
        }
        check_workspace(&self.ws, ctx, !self.stale).map_err(|e| fail(format!("after {name}: {e}")))?;
        if done {
            check_predicted(&self.ws, &m, &name)?;
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(config(256))]

    /// Invariants 1-4 (and the model's prediction of every step) over random event sequences.
    #[test]
    fn invariants_hold_over_random_event_sequences(
        agents in prop::collection::vec(agent_spec(), 1..=8),
        teams in prop::collection::vec(team_spec(), 1..=3),
        ops in prop::collection::vec((op(), 0..=2u8), 1..=60),
    ) {
        let mut run = Run::new(&agents, &teams);
        check_workspace(&run.ws, run.ctx(), true)?;
        for (op, seconds) in &ops {
            run.step(op, *seconds)?;
        }
    }
}

/// An agent for the day-turning property: online, a small daily limit, member of team 1.
fn daily_agent_spec() -> impl Strategy<Value = AgentSpec> {
    (2..=4u32, 1..=2u32, 1..=3u32, any::<bool>()).prop_map(|(max_open, limit, weight, second)| AgentSpec {
        presence: Presence::Online,
        max_open,
        daily_limit: Some(limit),
        weight,
        teams: [true, second, false],
        skills: [None, None],
        english: true,
        french: None,
        channel_caps: [None, None, None],
    })
}

/// Events where days turn without a drain: plain opens that queue when nobody can take them,
/// closes, reopens, claims and the clock.
fn day_op() -> impl Strategy<Value = Op> {
    let open =
        (0..2u8, prop::option::weighted(0.2, 0..4u8), priority()).prop_map(|(team, previous, priority)| {
            Op::Open(OpenSpec {
                target: TargetSpec::Team { team, strategy: None },
                previous,
                priority,
                channel: 0,
                skills: Vec::new(),
                language: None,
                when_nobody: WhenNobody::Queue,
                rules: Rules::default(),
                early: 0,
                reuse: None,
            })
        });
    prop_oneof![
        5 => open,
        2 => (1..=600u16, prop::bool::weighted(0.8), prop::bool::weighted(0.2))
            .prop_map(|(minutes, next_day, drain)| Op::Advance { minutes, next_day, drain }),
        2 => any::<u16>().prop_map(Op::Close),
        1 => any::<u16>().prop_map(Op::Reopen),
        1 => (any::<u16>(), 0..4u8).prop_map(|(c, a)| Op::Claim(c, a)),
    ]
}

proptest! {
    #![proptest_config(config(128))]

    /// Invariants 1-4 (and the model's prediction) while days turn without the caller draining:
    /// waiting conversations held back by daily limits must go before newcomers.
    #[test]
    fn invariants_hold_while_days_turn_without_drains(
        agents in prop::collection::vec(daily_agent_spec(), 1..=4),
        teams in prop::collection::vec(team_spec(), 1..=2),
        ops in prop::collection::vec((day_op(), 0..=2u8), 1..=60),
    ) {
        let mut run = Run::new(&agents, &teams);
        for (op, seconds) in &ops {
            run.step(op, *seconds)?;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The strategies
// ---------------------------------------------------------------------------------------------

/// One team (`team#1`) with `strategy`, only online agents; agents `agent#1..` with the given
/// presences and weights, all members, with caps nobody reaches.
fn one_team(presences: &[Presence], weights: &[u32], strategy: Routing) -> Workspace {
    let agents = presences
        .iter()
        .zip(weights)
        .zip(1i64..)
        .map(|((p, w), id)| {
            let mut a = Agent::new(AgentId(id), BIG);
            a.presence = *p;
            a.weight = *w;
            a.teams = vec![TeamId(1)];
            a
        })
        .collect();
    Workspace::new(Snapshot::new(agents, vec![Team::new(TeamId(1), strategy)]).expect("distinct ids"))
}

fn ctx0() -> Context {
    Context { now: Timestamp(T0_MS), today: Day(DAY0) }
}

fn open_in_team_1(ws: &mut Workspace, n: usize, ctx: Context) -> Result<Outcome, TestCaseError> {
    let request = AssignRequest::to_team(ConversationId(n as i64 + 1), TeamId(1), ctx.now);
    ws.open(request, ctx).map(|d| d.outcome).map_err(|e| fail(format!("open refused: {e}")))
}

fn index_of(a: AgentId) -> usize {
    usize::try_from(a.0 - 1).unwrap_or(usize::MAX)
}

/// Two seniority levels: six agents, each light (weight 1-2) or heavy (1-10).
fn weights() -> impl Strategy<Value = Vec<u32>> {
    prop_oneof![
        prop::collection::vec(1..=10u32, 1..=6),
        (1..=2u32, 1..=10u32, prop::collection::vec(any::<bool>(), 6))
            .prop_map(|(light, heavy, mask)| mask.iter().map(|h| if *h { heavy } else { light }).collect()),
    ]
}

#[derive(Debug, Clone)]
enum LeastOp {
    Open,
    Close(u16),
    ForceAssign(u16, u8),
}

proptest! {
    #![proptest_config(config(256))]

    /// Invariant 5: round robin over a fixed set of online agents: after every decision, no
    /// two agents' counts differ by more than one.
    #[test]
    fn round_robin_spreads_within_one(n in 1..=10usize, k in 0..=200usize) {
        let mut ws = one_team(&vec![Presence::Online; n], &vec![1; n], Routing::RoundRobin);
        let ctx = ctx0();
        let mut counts = vec![0u32; n];
        for i in 0..k {
            let Outcome::Assigned(a) = open_in_team_1(&mut ws, i, ctx)? else {
                return Err(fail(format!("conversation {i} not assigned")));
            };
            counts[index_of(a)] += 1;
            let (min, max) = (counts.iter().min().copied().unwrap_or(0), counts.iter().max().copied().unwrap_or(0));
            prop_assert!(max - min <= 1, "after {} decisions: {:?}", i + 1, counts);
        }
    }

    /// Invariant 5 with some agents away from the start: the eligible ones stay within one of
    /// each other, the others get nothing.
    #[test]
    fn round_robin_spreads_within_one_among_the_eligible(
        presences in prop::collection::vec(
            prop_oneof![3 => Just(Presence::Online), 1 => Just(Presence::Offline), 1 => Just(Presence::Busy), 1 => Just(Presence::Away)],
            1..=10,
        ),
        k in 0..=200usize,
    ) {
        let n = presences.len();
        let mut ws = one_team(&presences, &vec![1; n], Routing::RoundRobin);
        let ctx = ctx0();
        let eligible: Vec<usize> = (0..n).filter(|i| presences[*i] == Presence::Online).collect();
        let mut counts = vec![0u32; n];
        for i in 0..k {
            match open_in_team_1(&mut ws, i, ctx)? {
                Outcome::Assigned(a) => counts[index_of(a)] += 1,
                other => prop_assert!(eligible.is_empty(), "conversation {} not assigned: {:?}", i, other),
            }
            let of_eligible: Vec<u32> = eligible.iter().map(|i| counts[*i]).collect();
            if let (Some(min), Some(max)) = (of_eligible.iter().min(), of_eligible.iter().max()) {
                prop_assert!(max - min <= 1, "after {} decisions: {:?} (presences {:?})", i + 1, counts, presences);
            }
            for j in (0..n).filter(|j| !eligible.contains(j)) {
                prop_assert_eq!(counts[j], 0, "{:?} agent#{} got work", presences[j], j + 1);
            }
        }
    }

    /// Invariant 6: weighted rotation: after every prefix of `n` decisions each agent's count is
    /// within one of its exact share, `|c_i - n w_i / W| <= 1`, i.e. `|c_i W - n w_i| <= W`.
    #[test]
    fn weighted_shares_stay_within_one_of_the_exact_share(weights in weights(), k in 1..=150usize) {
        let mut ws = one_team(&vec![Presence::Online; weights.len()], &weights, Routing::Weighted);
        let ctx = ctx0();
        let total: i64 = weights.iter().map(|w| i64::from(*w)).sum();
        let mut counts = vec![0i64; weights.len()];
        let mut sequence = Vec::new();
        for n in 1..=k {
            let Outcome::Assigned(a) = open_in_team_1(&mut ws, n - 1, ctx)? else {
                return Err(fail(format!("conversation {n} not assigned")));
            };
            counts[index_of(a)] += 1;
            sequence.push(a.0);
            for (i, w) in weights.iter().enumerate() {
                let off = counts[i] * total - n as i64 * i64::from(*w);
                prop_assert!(
                    off.abs() <= total,
                    "after {} decisions agent#{} (weight {} of {}) has {} against an exact share of {}/{}: counts {:?}, weights {:?}, picks {:?}",
                    n, i + 1, w, total, counts[i], n as i64 * i64::from(*w), total, counts, weights, sequence
                );
            }
        }
    }

    /// Invariant 7: least open: with every member online and under its cap, each automatic
    /// decision picks an agent with the fewest open conversations (loads are varied by closes
    /// and forced manual assignments in between).
    #[test]
    fn least_open_picks_an_agent_with_the_fewest_open(
        n in 1..=8usize,
        ops in prop::collection::vec(
            prop_oneof![
                4 => Just(LeastOp::Open),
                2 => any::<u16>().prop_map(LeastOp::Close),
                1 => (any::<u16>(), any::<u8>()).prop_map(|(c, a)| LeastOp::ForceAssign(c, a)),
            ],
            1..=80,
        ),
    ) {
        let mut ws = one_team(&vec![Presence::Online; n], &vec![1; n], Routing::LeastOpen);
        let mut opened = 0usize;
        for (step, op) in ops.iter().enumerate() {
            let ctx = Context { now: Timestamp(T0_MS + step as i64 * 1000), today: Day(DAY0) };
            match op {
                LeastOp::Open => {
                    let loads: Vec<u32> = ws.snapshot.members(TeamId(1)).map(|a| a.open).collect();
                    let min = loads.iter().min().copied().unwrap_or(0);
                    let Outcome::Assigned(a) = open_in_team_1(&mut ws, opened, ctx)? else {
                        return Err(fail("not assigned"));
                    };
                    opened += 1;
                    prop_assert_eq!(loads[index_of(a)], min, "{} picked with loads {:?}", a, loads);
                }
                LeastOp::Close(c) if opened > 0 => {
                    let _ = ws.close(ConversationId((usize::from(*c) % opened) as i64 + 1), ctx);
                }
                LeastOp::ForceAssign(c, a) if opened > 0 => {
                    let id = ConversationId((usize::from(*c) % opened) as i64 + 1);
                    let agent = AgentId((usize::from(*a) % n) as i64 + 1);
                    let _ = ws.assign(id, agent, true, ctx);
                }
                _ => {}
            }
        }
    }

    /// A trace survives JSON: serialized and read back, it is the same value.
    #[test]
    fn traces_round_trip_through_json(
        agents in prop::collection::vec(agent_spec(), 1..=8),
        teams in prop::collection::vec(team_spec(), 1..=3),
        opens in prop::collection::vec((open_spec(), prop::option::of((0..16u8, presence()))), 1..=20),
    ) {
        let mut run = Run::new(&agents, &teams);
        let ctx = run.ctx();
        for (spec, presence) in &opens {
            let request = run.request(spec);
            let _ = run.ws.open(request, ctx);
            if let Some((a, p)) = presence {
                let agent = run.agent(*a);
                let _ = run.ws.set_presence(agent, *p, ctx);
            }
        }
        let traces: Vec<Trace> =
            run.ws.conversations().flat_map(|(_, r)| r.decisions.iter().map(|d| d.trace.clone())).collect();
        for trace in traces {
            let text = serde_json::to_string(&trace).map_err(|e| fail(format!("serialize: {e}")))?;
            let back: Trace = serde_json::from_str(&text).map_err(|e| fail(format!("deserialize {text}: {e}")))?;
            prop_assert_eq!(&back, &trace, "{}", text);
            let value = serde_json::to_value(&trace).map_err(|e| fail(format!("to_value: {e}")))?;
            let back: Trace = serde_json::from_value(value).map_err(|e| fail(format!("from_value: {e}")))?;
            prop_assert_eq!(&back, &trace);
            prop_assert!(!trace.explain(|a| a.to_string()).is_empty());
        }
    }
}
