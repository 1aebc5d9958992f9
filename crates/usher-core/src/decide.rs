//! The decision: given a [`Snapshot`], an [`AssignRequest`] and the [`Context`] (now, today),
//! who gets the conversation, or where it waits, and why.
//!
//! The order of attempts:
//! 1. A dedicated agent (target [`Target::Agent`]): assigned if eligible; otherwise the request's
//!    [`Otherwise`] says whether it waits for that agent or falls back to a team.
//! 2. For a team: the contact's previous agent first, when the request names one and that
//!    agent is an eligible member of the team.
//! 3. The team's strategy (or the request's) over the team's eligible members.
//! 4. Nobody: the request's [`WhenNobody`] says queue or leave unassigned.
//!
//! Eligibility is checked in a fixed order, and the first failing check is the reason given:
//! team membership, presence, the open cap (the lower of the agent's `max_open` and the
//! request's cap), the per-channel cap, the daily reception limit, skills, language.
//!
//! Cost: one pass over the team's members plus a second pass over the candidates for the
//! trace; `O(n)` in team size for every strategy (the weighted strategy adds a binary search
//! per eligible member into the rotation's credits, `O(n log n)`).

use crate::model::Presence;
use crate::model::{Agent, AgentId, Rotation, Strategy, TeamId};
use crate::request::{AssignRequest, Otherwise, Target, WhenNobody};
use crate::snapshot::{Context, Snapshot};
use crate::trace::{Attempt, AttemptKind, Candidate, Skip, Trace, TraceResult, Verdict, Why, WhyNot};
use thiserror::Error;

/// Why no decision could be taken at all (as opposed to "nobody eligible", which is a
/// decision).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecideError {
    /// The request names a team the snapshot does not hold.
    #[error("unknown {0}")]
    UnknownTeam(TeamId),
}

/// The outcome of a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Assign to this agent.
    Assigned(AgentId),
    /// Wait: in a team's queue, or in the queue reserved for a dedicated agent.
    Queued {
        /// The team whose queue it joins (none when waiting for a dedicated agent alone).
        team: Option<TeamId>,
        /// The dedicated agent it waits for.
        reserved_for: Option<AgentId>,
    },
    /// Stay unassigned for agents to pick.
    Unassigned,
}

/// A decision and everything the caller must write back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// What to do.
    pub outcome: Outcome,
    /// Why.
    pub trace: Trace,
    /// The team rotation to persist, when a strategy advanced it.
    pub rotation: Option<(TeamId, Rotation)>,
}

/// Decides where a conversation goes. Pure: reads only its arguments.
///
/// Contract: when the outcome is `Assigned(a)`, `a` passed every eligibility check of the
/// request at `ctx` (so automatic assignment never exceeds a cap, a daily limit, or picks an
/// offline agent unless the rules allow it).
pub fn decide(snapshot: &Snapshot, request: &AssignRequest, ctx: Context) -> Result<Decision, DecideError> {
    let mut attempts = Vec::with_capacity(3);
    let fallback_team = match &request.target {
        Target::Agent { agent, otherwise } => {
            let attempt = single(
                snapshot,
                *agent,
                None,
                request,
                ctx,
                AttemptKind::Dedicated { agent: *agent },
                Why::Dedicated,
            );
            let chosen = attempt.chosen;
            attempts.push(attempt);
            if let Some(agent) = chosen {
                return Ok(finish(ctx, attempts, Outcome::Assigned(agent), None));
            }
            match otherwise {
                Otherwise::WaitForAgent => {
                    let outcome = Outcome::Queued { team: None, reserved_for: Some(*agent) };
                    return Ok(finish(ctx, attempts, outcome, None));
                }
                Otherwise::LeaveUnassigned => {
                    return Ok(finish(ctx, attempts, Outcome::Unassigned, None));
                }
                Otherwise::Team { team, strategy } => (*team, *strategy),
            }
        }
        Target::Team { team, strategy } => (*team, *strategy),
    };
    let (team_id, strategy) = fallback_team;
    let team_index = snapshot.team_index(team_id).ok_or(DecideError::UnknownTeam(team_id))?;
    let team = &snapshot.teams()[team_index];

    if let Some(previous) = request.previous_agent {
        let attempt = single(
            snapshot,
            previous,
            Some(team_id),
            request,
            ctx,
            AttemptKind::PreviousAgent { agent: previous },
            Why::PreviousAgent,
        );
        let chosen = attempt.chosen;
        attempts.push(attempt);
        if let Some(agent) = chosen {
            return Ok(finish(ctx, attempts, Outcome::Assigned(agent), None));
        }
    }

    let strategy = strategy.unwrap_or(team.strategy);
    let only_online = request.rules.only_online.unwrap_or(team.only_online);
    let (attempt, rotation) = run_strategy(snapshot, team_index, strategy, only_online, request, ctx);
    let chosen = attempt.chosen;
    attempts.push(attempt);
    let outcome = match (chosen, request.when_nobody) {
        (Some(agent), _) => Outcome::Assigned(agent),
        (None, WhenNobody::Queue) => Outcome::Queued { team: Some(team_id), reserved_for: None },
        (None, WhenNobody::LeaveUnassigned) => Outcome::Unassigned,
    };
    Ok(finish(ctx, attempts, outcome, rotation.map(|r| (team_id, r))))
}

fn finish(
    ctx: Context,
    attempts: Vec<Attempt>,
    outcome: Outcome,
    rotation: Option<(TeamId, Rotation)>,
) -> Decision {
    let result = match outcome {
        Outcome::Assigned(agent) => TraceResult::Assigned { agent },
        Outcome::Queued { team, reserved_for } => TraceResult::Queued { team, reserved_for },
        Outcome::Unassigned => TraceResult::Unassigned,
    };
    Decision { outcome, trace: Trace { at: ctx.now, attempts, result }, rotation }
}

/// One named agent: the dedicated agent (no team membership needed) or the previous agent
/// (must be a member of `team`). The presence default for a dedicated agent is "only online".
fn single(
    snapshot: &Snapshot,
    agent: AgentId,
    team: Option<TeamId>,
    request: &AssignRequest,
    ctx: Context,
    kind: AttemptKind,
    why: Why,
) -> Attempt {
    let only_online = request
        .rules
        .only_online
        .unwrap_or_else(|| team.and_then(|t| snapshot.team(t)).map(|t| t.only_online).unwrap_or(true));
    let verdict = match snapshot.agent(agent) {
        None => Verdict::Skipped { reason: Skip::Unknown },
        Some(a) => match eligibility(a, team, only_online, request, ctx) {
            Ok(()) => Verdict::Chosen { why },
            Err(reason) => Verdict::Skipped { reason },
        },
    };
    let chosen = matches!(verdict, Verdict::Chosen { .. }).then_some(agent);
    Attempt { kind, candidates: vec![Candidate { agent, verdict }], chosen }
}

/// Checks one agent against the request's rules. The first failing check is the reason.
pub fn eligibility(
    agent: &Agent,
    team: Option<TeamId>,
    only_online: bool,
    request: &AssignRequest,
    ctx: Context,
) -> Result<(), Skip> {
    match check(agent, team, only_online, request, ctx) {
        None => Ok(()),
        Some(fail) => Err(fail.into_skip(agent, team, request)),
    }
}

/// Why a check failed, in a form small enough to travel in registers: the hot loop over a
/// team's members runs this for every member, and only skipped members pay for the full
/// [`Skip`] (which may carry strings).
#[derive(Debug, Clone, Copy)]
enum Fail {
    NotInTeam,
    Presence,
    AtCap { open: u32, cap: u32 },
    AtChannelCap { open: u32, cap: u32 },
    DailyLimit { received: u32, limit: u32 },
    MissingSkill { index: u32 },
    MissingLanguage,
}

impl Fail {
    fn into_skip(self, agent: &Agent, team: Option<TeamId>, request: &AssignRequest) -> Skip {
        match self {
            Fail::NotInTeam => Skip::NotInTeam { team: team.unwrap_or(TeamId(0)) },
            Fail::Presence => Skip::Presence { presence: agent.presence },
            Fail::AtCap { open, cap } => Skip::AtCap { open, cap },
            Fail::AtChannelCap { open, cap } => Skip::AtChannelCap { channel: request.channel, open, cap },
            Fail::DailyLimit { received, limit } => Skip::DailyLimit { received, limit },
            Fail::MissingSkill { index } => {
                let need = &request.requirements.skills[index as usize];
                Skip::MissingSkill {
                    skill: need.name.clone(),
                    required: need.min_level,
                    has: agent.skill_level(&need.name),
                }
            }
            Fail::MissingLanguage => {
                Skip::MissingLanguage { language: request.requirements.language.clone().unwrap_or_default() }
            }
        }
    }
}

#[inline]
fn check(
    agent: &Agent,
    team: Option<TeamId>,
    only_online: bool,
    request: &AssignRequest,
    ctx: Context,
) -> Option<Fail> {
    let rules = &request.rules;
    if let Some(team) = team {
        if !agent.in_team(team) {
            return Some(Fail::NotInTeam);
        }
    }
    if only_online {
        let ok = match agent.presence {
            Presence::Online => true,
            Presence::Busy => rules.include_busy,
            Presence::Away => rules.include_away,
            Presence::Offline => false,
        };
        if !ok {
            return Some(Fail::Presence);
        }
    }
    let cap = rules.cap.map_or(agent.max_open, |c| c.min(agent.max_open));
    if agent.open >= cap {
        return Some(Fail::AtCap { open: agent.open, cap });
    }
    if rules.channel_caps {
        if let Some(cap) = agent.channel_caps.get(request.channel) {
            let open = agent.open_by_channel.get(request.channel);
            if open >= cap {
                return Some(Fail::AtChannelCap { open, cap });
            }
        }
    }
    if rules.daily_limit {
        if let Some(limit) = agent.daily_limit {
            let received = agent.received.on(ctx.today);
            if received >= limit {
                return Some(Fail::DailyLimit { received, limit });
            }
        }
    }
    for (index, need) in request.requirements.skills.iter().enumerate() {
        if agent.skill_level(&need.name).is_none_or(|level| level < need.min_level) {
            return Some(Fail::MissingSkill { index: u32::try_from(index).unwrap_or(u32::MAX) });
        }
    }
    if let Some(language) = &request.requirements.language {
        if !agent.speaks(language) {
            return Some(Fail::MissingLanguage);
        }
    }
    None
}

/// Runs a strategy over a team's members. Returns the attempt and, when the strategy keeps
/// rotation state and someone won, the rotation to persist.
fn run_strategy(
    snapshot: &Snapshot,
    team_index: usize,
    strategy: Strategy,
    only_online: bool,
    request: &AssignRequest,
    ctx: Context,
) -> (Attempt, Option<Rotation>) {
    let team = &snapshot.teams()[team_index];
    let members = snapshot.member_indices(team_index);
    let mut candidates = Vec::with_capacity(members.len());
    let kind = AttemptKind::Team { team: team.id, strategy };
    // Eligible members as (candidate position, agent index).
    let mut eligible: Vec<(usize, usize)> = Vec::with_capacity(members.len());
    for &ai in members {
        let agent = snapshot.agent_at(ai);
        // Members by construction: the membership check (a pointer chase per agent) is skipped.
        let verdict = match check(agent, None, only_online, request, ctx) {
            Some(fail) => Verdict::Skipped { reason: fail.into_skip(agent, None, request) },
            None if strategy == Strategy::Weighted && agent.weight == 0 => {
                Verdict::Skipped { reason: Skip::ZeroWeight }
            }
            None => {
                eligible.push((candidates.len(), ai));
                Verdict::Passed { why: WhyNot::NotNext }
            }
        };
        candidates.push(Candidate { agent: agent.id, verdict });
    }
    if eligible.is_empty() {
        return (Attempt { kind, candidates, chosen: None }, None);
    }
    let (winner_pos, rotation) = match strategy {
        Strategy::RoundRobin => round_robin(snapshot, team, &eligible, &mut candidates),
        Strategy::LeastOpen => (least_open(snapshot, &eligible, &mut candidates), None),
        Strategy::Weighted => weighted(snapshot, team, &eligible, &mut candidates),
    };
    let chosen = Some(candidates[winner_pos].agent);
    (Attempt { kind, candidates, chosen }, rotation)
}

fn round_robin(
    snapshot: &Snapshot,
    team: &crate::model::Team,
    eligible: &[(usize, usize)],
    candidates: &mut [Candidate],
) -> (usize, Option<Rotation>) {
    let after = team.rotation.last_agent;
    let next = after
        .and_then(|last| eligible.iter().find(|(_, ai)| snapshot.agent_at(*ai).id > last))
        .unwrap_or(&eligible[0]);
    let pos = next.0;
    candidates[pos].verdict = Verdict::Chosen { why: Why::RoundRobin { after } };
    let rotation =
        Rotation { last_agent: Some(candidates[pos].agent), credits: team.rotation.credits.clone() };
    (pos, Some(rotation))
}

fn least_open(snapshot: &Snapshot, eligible: &[(usize, usize)], candidates: &mut [Candidate]) -> usize {
    let key = |ai: usize| {
        let a = snapshot.agent_at(ai);
        (a.open, a.last_assigned_at.map_or(i64::MIN, |t| t.0), a.id)
    };
    let &(winner_pos, winner_ai) = eligible.iter().min_by_key(|(_, ai)| key(*ai)).unwrap_or(&eligible[0]);
    let winner = snapshot.agent_at(winner_ai);
    for &(pos, ai) in eligible {
        let a = snapshot.agent_at(ai);
        candidates[pos].verdict = if pos == winner_pos {
            Verdict::Chosen { why: Why::LeastOpen { open: a.open, last_assigned_at: a.last_assigned_at } }
        } else if a.open > winner.open {
            Verdict::Passed { why: WhyNot::MoreOpen { open: a.open, winner_open: winner.open } }
        } else {
            Verdict::Passed {
                why: WhyNot::AssignedMoreRecently { open: a.open, last_assigned_at: a.last_assigned_at },
            }
        };
    }
    winner_pos
}

fn weighted(
    snapshot: &Snapshot,
    team: &crate::model::Team,
    eligible: &[(usize, usize)],
    candidates: &mut [Candidate],
) -> (usize, Option<Rotation>) {
    let old = &team.rotation;
    let mut total: u64 = 0;
    let mut best: Option<(usize, i64)> = None;
    // Credits after every eligible agent earned its weight, in id order (members are sorted).
    let mut earned = Vec::with_capacity(eligible.len());
    for &(pos, ai) in eligible {
        let a = snapshot.agent_at(ai);
        total += u64::from(a.weight);
        let credit = old.credit(a.id).saturating_add(i64::from(a.weight));
        earned.push((a.id, credit));
        if best.is_none_or(|(_, c)| credit > c) {
            best = Some((pos, credit));
        }
    }
    let (winner_pos, _) = best.unwrap_or((eligible[0].0, 0));
    let winner = candidates[winner_pos].agent;
    let total_i = i64::try_from(total).unwrap_or(i64::MAX);
    for (&(pos, ai), &(_, credit)) in eligible.iter().zip(&earned) {
        let weight = snapshot.agent_at(ai).weight;
        candidates[pos].verdict = if pos == winner_pos {
            Verdict::Chosen { why: Why::Weighted { credit, weight, total_weight: total } }
        } else {
            Verdict::Passed { why: WhyNot::LowerCredit { credit, weight } }
        };
    }
    for entry in &mut earned {
        if entry.0 == winner {
            entry.1 = entry.1.saturating_sub(total_i);
        }
    }
    // Merge: eligible agents take their new credit, everyone else keeps the old one.
    let mut credits = Vec::with_capacity(old.credits.len().max(earned.len()));
    let (mut i, mut j) = (0, 0);
    while i < old.credits.len() || j < earned.len() {
        match (old.credits.get(i), earned.get(j)) {
            (Some(o), Some(e)) if o.0 == e.0 => {
                credits.push(*e);
                i += 1;
                j += 1;
            }
            (Some(o), Some(e)) if o.0 < e.0 => {
                credits.push(*o);
                i += 1;
            }
            (_, Some(e)) => {
                credits.push(*e);
                j += 1;
            }
            (Some(o), None) => {
                credits.push(*o);
                i += 1;
            }
            (None, None) => break,
        }
    }
    credits.retain(|(_, c)| *c != 0);
    (winner_pos, Some(Rotation { last_agent: old.last_agent, credits }))
}
