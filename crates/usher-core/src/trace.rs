//! Every decision explains itself: the strategy, each candidate considered, why each one was
//! skipped or passed over, and why the winner won. A manager asking "why did Bob get this
//! chat?" reads the answer from a [`Trace`]; [`Trace::explain`] renders it as one sentence.

use crate::model::{AgentId, Channel, Presence, Strategy, TeamId, Timestamp};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

/// The full account of one decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trace {
    /// When the decision was taken.
    pub at: Timestamp,
    /// The attempts, in the order they were made (previous agent, dedicated agent, team).
    pub attempts: Vec<Attempt>,
    /// What came of it.
    pub result: TraceResult,
}

/// The result as the trace states it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TraceResult {
    /// Assigned to `agent`.
    Assigned {
        /// The winner.
        agent: AgentId,
    },
    /// Nobody could take it; it waits in a queue.
    Queued {
        /// The team's queue, or none for a dedicated agent's queue.
        team: Option<TeamId>,
        /// For a dedicated agent's queue.
        reserved_for: Option<AgentId>,
    },
    /// Nobody could take it; it stays unassigned for agents to pick.
    Unassigned,
}

/// One attempt to find an agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// What was tried.
    pub kind: AttemptKind,
    /// Every agent considered, with its verdict.
    pub candidates: Vec<Candidate>,
    /// The winner of this attempt, if any.
    pub chosen: Option<AgentId>,
}

/// What an attempt tried.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AttemptKind {
    /// The contact's previous agent.
    PreviousAgent {
        /// That agent.
        agent: AgentId,
    },
    /// A dedicated agent.
    Dedicated {
        /// That agent.
        agent: AgentId,
    },
    /// A team with a strategy.
    Team {
        /// The team.
        team: TeamId,
        /// The strategy used.
        strategy: Strategy,
    },
}

/// One agent considered, and what became of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Candidate {
    /// The agent.
    pub agent: AgentId,
    /// Its verdict.
    pub verdict: Verdict,
}

/// What happened to a candidate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Verdict {
    /// It won, for this reason.
    Chosen {
        /// Why.
        why: Why,
    },
    /// It was eligible but another agent won, for this reason.
    Passed {
        /// Why not.
        why: WhyNot,
    },
    /// It was not eligible.
    Skipped {
        /// Why not.
        reason: Skip,
    },
}

/// Why the winner won.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Why {
    /// Next eligible agent after `after` in the team's rotation.
    RoundRobin {
        /// The agent assigned before (none: the rotation starts).
        after: Option<AgentId>,
    },
    /// Fewest open conversations.
    LeastOpen {
        /// Its open conversations.
        open: u32,
        /// When it was last assigned (ties go to the longest ago).
        last_assigned_at: Option<Timestamp>,
    },
    /// Highest weighted credit.
    Weighted {
        /// Its credit before paying.
        credit: i64,
        /// Its weight.
        weight: u32,
        /// The eligible set's total weight, which it paid.
        total_weight: u64,
    },
    /// The dedicated agent could take it.
    Dedicated,
    /// The contact's previous agent could take it.
    PreviousAgent,
}

/// Why an eligible agent lost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WhyNot {
    /// Not the next in the rotation.
    NotNext,
    /// More open conversations than the winner.
    MoreOpen {
        /// Its open conversations.
        open: u32,
        /// The winner's.
        winner_open: u32,
    },
    /// As many open as the winner but assigned more recently (or later in id order).
    AssignedMoreRecently {
        /// Its open conversations (equal to the winner's).
        open: u32,
        /// When it was last assigned.
        last_assigned_at: Option<Timestamp>,
    },
    /// Lower weighted credit than the winner (or equal and a higher id).
    LowerCredit {
        /// Its credit.
        credit: i64,
        /// Its weight.
        weight: u32,
    },
}

/// Why an agent was not eligible.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Skip {
    /// No such agent in the snapshot.
    Unknown,
    /// Not a member of the target team.
    NotInTeam {
        /// The team.
        team: TeamId,
    },
    /// Its presence rules it out.
    Presence {
        /// Its presence.
        presence: Presence,
    },
    /// At its cap on open conversations.
    AtCap {
        /// Open conversations.
        open: u32,
        /// The cap in force.
        cap: u32,
    },
    /// At its cap for this channel kind.
    AtChannelCap {
        /// The channel kind.
        channel: Channel,
        /// Open conversations of that kind.
        open: u32,
        /// The cap for that kind.
        cap: u32,
    },
    /// Reached its daily reception limit.
    DailyLimit {
        /// Received today.
        received: u32,
        /// The limit.
        limit: u32,
    },
    /// Lacks a skill, or has it below the level required.
    MissingSkill {
        /// The skill.
        skill: String,
        /// The level required.
        required: u8,
        /// The level it has, if any.
        has: Option<u8>,
    },
    /// Does not speak the contact's language.
    MissingLanguage {
        /// The language.
        language: String,
    },
    /// A weight of zero never wins a weighted rotation.
    ZeroWeight,
}

impl Skip {
    /// A short phrase: "offline", "at cap 5/5", "missing skill billing>=3".
    pub fn phrase(&self) -> String {
        match self {
            Skip::Unknown => "unknown agent".into(),
            Skip::NotInTeam { team } => format!("not in {team}"),
            Skip::Presence { presence } => presence.as_str().into(),
            Skip::AtCap { open, cap } => format!("at cap {open}/{cap}"),
            Skip::AtChannelCap { channel, open, cap } => {
                format!("at {} cap {open}/{cap}", channel.as_str())
            }
            Skip::DailyLimit { received, limit } => {
                format!("daily limit reached {received}/{limit}")
            }
            Skip::MissingSkill { skill, required, has: None } => {
                format!("missing skill {skill}>={required}")
            }
            Skip::MissingSkill { skill, required, has: Some(has) } => {
                format!("missing skill {skill}>={required} (has {has})")
            }
            Skip::MissingLanguage { language } => format!("does not speak {language}"),
            Skip::ZeroWeight => "weight 0".into(),
        }
    }
}

impl Trace {
    /// The agent the decision assigned, if any.
    pub fn assignee(&self) -> Option<AgentId> {
        match self.result {
            TraceResult::Assigned { agent } => Some(agent),
            _ => None,
        }
    }

    /// One sentence a manager can read, naming agents with `name`, e.g. "assigned to Bob by
    /// least open contacts: Bob had 2 open; Ana had 4 open; Ravi offline".
    pub fn explain(&self, name: impl Fn(AgentId) -> String) -> String {
        let mut out = String::new();
        match &self.result {
            TraceResult::Assigned { agent } => {
                let how = self
                    .attempts
                    .iter()
                    .find(|a| a.chosen == Some(*agent))
                    .map(|a| match &a.kind {
                        AttemptKind::PreviousAgent { .. } => "as the contact's previous agent",
                        AttemptKind::Dedicated { .. } => "as the dedicated agent",
                        AttemptKind::Team { strategy: Strategy::RoundRobin, .. } => "by round robin",
                        AttemptKind::Team { strategy: Strategy::LeastOpen, .. } => "by least open contacts",
                        AttemptKind::Team { strategy: Strategy::Weighted, .. } => "by weighted rotation",
                    })
                    .unwrap_or("");
                let _ = write!(out, "assigned to {} {how}", name(*agent));
            }
            TraceResult::Queued { reserved_for: Some(agent), .. } => {
                let _ = write!(out, "waiting for {}", name(*agent));
            }
            TraceResult::Queued { team, .. } => {
                let team = team.map(|t| t.to_string()).unwrap_or_default();
                let _ = write!(out, "queued in {team}: nobody eligible");
            }
            TraceResult::Unassigned => out.push_str("left unassigned: nobody eligible"),
        }
        let mut first = true;
        for attempt in &self.attempts {
            for c in &attempt.candidates {
                out.push_str(if first { ": " } else { "; " });
                first = false;
                let who = name(c.agent);
                let _ = match &c.verdict {
                    Verdict::Chosen { why: Why::LeastOpen { open, .. } } => {
                        write!(out, "{who} had {open} open")
                    }
                    Verdict::Chosen { why: Why::RoundRobin { after: Some(a) } } => {
                        write!(out, "{who} was next after {}", name(*a))
                    }
                    Verdict::Chosen { why: Why::RoundRobin { after: None } } => {
                        write!(out, "{who} was first in the rotation")
                    }
                    Verdict::Chosen { why: Why::Weighted { credit, weight, total_weight } } => {
                        write!(out, "{who} had the most credit ({credit}, weight {weight} of {total_weight})")
                    }
                    Verdict::Chosen { why: Why::Dedicated | Why::PreviousAgent } => {
                        write!(out, "{who} could take it")
                    }
                    Verdict::Passed { why: WhyNot::NotNext } => write!(out, "{who} not next"),
                    Verdict::Passed {
                        why: WhyNot::MoreOpen { open, .. } | WhyNot::AssignedMoreRecently { open, .. },
                    } => write!(out, "{who} had {open} open"),
                    Verdict::Passed { why: WhyNot::LowerCredit { credit, .. } } => {
                        write!(out, "{who} had less credit ({credit})")
                    }
                    Verdict::Skipped { reason } => write!(out, "{who} {}", reason.phrase()),
                };
            }
        }
        out
    }
}
