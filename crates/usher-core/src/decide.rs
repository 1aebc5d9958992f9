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
//! Cost: three linear passes over the team's members (eligibility, the strategy, the trace);
//! `O(n)` in team size for every strategy (the weighted strategy walks the rotation's credits,
//! sorted by agent id like the members, in step). Figures in the crate's README.

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
    ZeroWeight,
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
            Fail::ZeroWeight => Skip::ZeroWeight,
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
///
/// Three passes, each simple: check every member, keeping a small `Copy` result per member;
/// pick the winner among the eligible ones; then write the trace's candidates in one straight
/// `extend`, each verdict final and written once. (Building the larger verdicts member by member
/// and patching them afterwards cost twice as much: the copies stall on the stack.)
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
    let kind = AttemptKind::Team { team: team.id, strategy };

    // 1. Eligibility.
    let mut fails: Vec<Option<Fail>> = Vec::with_capacity(members.len());
    let mut eligible: Vec<usize> = Vec::with_capacity(members.len()); // positions in `members`
    for (pos, &ai) in members.iter().enumerate() {
        let agent = snapshot.agent_at(ai);
        // Members by construction: the membership check (a pointer chase per agent) is skipped.
        let fail = match check(agent, None, only_online, request, ctx) {
            None if strategy == Strategy::Weighted && agent.weight == 0 => Some(Fail::ZeroWeight),
            None => {
                eligible.push(pos);
                None
            }
            some => some,
        };
        fails.push(fail);
    }
    let agent_at = |pos: usize| snapshot.agent_at(members[pos]);

    // 2. The winner.
    let rotation = &team.rotation;
    let mut earned: Vec<i64> = Vec::new(); // weighted: credit after earning, per eligible
    let mut total_weight: u64 = 0;
    let winner = match strategy {
        Strategy::RoundRobin => rotation
            .last_agent
            .and_then(|last| eligible.iter().copied().find(|&p| agent_at(p).id > last))
            .or_else(|| eligible.first().copied()),
        Strategy::LeastOpen => eligible.iter().copied().min_by_key(|&p| {
            let a = agent_at(p);
            (a.open, a.last_assigned_at.map_or(i64::MIN, |t| t.0), a.id)
        }),
        Strategy::Weighted => {
            // Credits are sorted by agent id, like the members: walk them in step.
            let mut cursor = 0;
            let mut best: Option<(i64, usize)> = None;
            earned.reserve(eligible.len());
            for &p in &eligible {
                let a = agent_at(p);
                while cursor < rotation.credits.len() && rotation.credits[cursor].0 < a.id {
                    cursor += 1;
                }
                let old = match rotation.credits.get(cursor) {
                    Some((id, c)) if *id == a.id => *c,
                    _ => 0,
                };
                let credit = old.saturating_add(i64::from(a.weight));
                total_weight += u64::from(a.weight);
                if best.is_none_or(|(c, _)| credit > c) {
                    best = Some((credit, p));
                }
                earned.push(credit);
            }
            // Balinski and Young's quota method. With credit e = t·w − c·W after earning, an
            // agent below its upper quota has e > 0; among those, the earliest "deadline"
            // (c + 1) / w wins, which in credits is the smallest (W − e) / w. This keeps every
            // count within one of its exact share on every prefix; picking the richest credit
            // alone (nginx's rule) can leave a light agent more than one turn behind.
            let total = i128::from(total_weight);
            let mut quota: Option<(i128, i128, usize)> = None; // (W − e, w, position)
            for (&p, &e) in eligible.iter().zip(&earned) {
                if e <= 0 {
                    continue;
                }
                let (lag, w) = (total - i128::from(e), i128::from(agent_at(p).weight));
                if quota.is_none_or(|(bl, bw, _)| lag * bw < bl * w) {
                    quota = Some((lag, w, p));
                }
            }
            quota.map(|(_, _, p)| p).or(best.map(|(_, p)| p))
        }
    };

    // 3. The trace, each verdict written once.
    let (winner_open, winner_last) =
        winner.map_or((0, None), |p| (agent_at(p).open, agent_at(p).last_assigned_at));
    let mut next_eligible = 0; // index into `eligible` / `earned`
    let mut candidates: Vec<Candidate> = Vec::with_capacity(members.len());
    candidates.extend(fails.iter().enumerate().map(|(pos, fail)| {
        let agent = agent_at(pos);
        let verdict = match fail {
            Some(f) => Verdict::Skipped { reason: f.into_skip(agent, None, request) },
            None => {
                let credit = earned.get(next_eligible).copied().unwrap_or(0);
                next_eligible += 1;
                let won = winner == Some(pos);
                match (strategy, won) {
                    (Strategy::RoundRobin, true) => {
                        Verdict::Chosen { why: Why::RoundRobin { after: rotation.last_agent } }
                    }
                    (Strategy::RoundRobin, false) => Verdict::Passed { why: WhyNot::NotNext },
                    (Strategy::LeastOpen, true) => Verdict::Chosen {
                        why: Why::LeastOpen { open: winner_open, last_assigned_at: winner_last },
                    },
                    (Strategy::LeastOpen, false) if agent.open > winner_open => {
                        Verdict::Passed { why: WhyNot::MoreOpen { open: agent.open, winner_open } }
                    }
                    (Strategy::LeastOpen, false) => Verdict::Passed {
                        why: WhyNot::AssignedMoreRecently {
                            open: agent.open,
                            last_assigned_at: agent.last_assigned_at,
                        },
                    },
                    (Strategy::Weighted, true) => {
                        Verdict::Chosen { why: Why::Weighted { credit, weight: agent.weight, total_weight } }
                    }
                    (Strategy::Weighted, false) => {
                        Verdict::Passed { why: WhyNot::LowerCredit { credit, weight: agent.weight } }
                    }
                }
            }
        };
        Candidate { agent: agent.id, verdict }
    }));
    let Some(winner) = winner else {
        return (Attempt { kind, candidates, chosen: None }, None);
    };
    let chosen = agent_at(winner).id;
    let rotation = match strategy {
        Strategy::RoundRobin => {
            Some(Rotation { last_agent: Some(chosen), credits: rotation.credits.clone() })
        }
        Strategy::LeastOpen => None,
        Strategy::Weighted => {
            let total = i64::try_from(total_weight).unwrap_or(i64::MAX);
            let updates: Vec<(AgentId, i64)> = eligible
                .iter()
                .zip(&earned)
                .map(|(&p, &c)| {
                    let id = agent_at(p).id;
                    (id, if p == winner { c.saturating_sub(total) } else { c })
                })
                .collect();
            Some(Rotation {
                last_agent: rotation.last_agent,
                credits: merge_credits(&rotation.credits, &updates),
            })
        }
    };
    (Attempt { kind, candidates, chosen: Some(chosen) }, rotation)
}

/// Eligible members take their new credit, everyone else keeps the old one; both lists and the
/// result are sorted by agent id, and zero credits are dropped.
fn merge_credits(old: &[(AgentId, i64)], updates: &[(AgentId, i64)]) -> Vec<(AgentId, i64)> {
    let mut credits = Vec::with_capacity(old.len().max(updates.len()));
    let (mut i, mut j) = (0, 0);
    while i < old.len() || j < updates.len() {
        match (old.get(i), updates.get(j)) {
            (Some(o), Some(u)) if o.0 == u.0 => {
                credits.push(*u);
                i += 1;
                j += 1;
            }
            (Some(o), Some(u)) if o.0 < u.0 => {
                credits.push(*o);
                i += 1;
            }
            (_, Some(u)) => {
                credits.push(*u);
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
    credits
}
