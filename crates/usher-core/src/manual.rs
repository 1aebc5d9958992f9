//! Manual operations on a conversation: an agent claims (picks) it; a manager assigns,
//! unassigns or transfers it; it closes and reopens. Each is a pure transition from one
//! [`Conversation`] state to the next, plus the counter changes the caller must write.
//!
//! Rules:
//! - A claim of a conversation someone else holds fails with [`ManualError::AlreadyHeld`];
//!   claiming one's own is a no-op. Claims respect the agent's caps and team membership.
//! - A manager's assignment respects caps and the daily limit unless `force` is set: only an
//!   explicit request may exceed them.
//! - Closed conversations accept only `reopen`.

use crate::decide::eligibility;
use crate::model::{AgentId, Channel, TeamId};
use crate::request::{AssignRequest, Rules};
use crate::snapshot::{Context, Snapshot};
use crate::trace::Skip;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Where a conversation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Held by an agent.
    Assigned,
    /// Waiting in a queue for an agent.
    Queued,
    /// Open, held by nobody, for agents to pick.
    Unassigned,
    /// Done.
    Closed,
}

impl Status {
    /// The API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Assigned => "assigned",
            Status::Queued => "queued",
            Status::Unassigned => "unassigned",
            Status::Closed => "closed",
        }
    }
}

/// The routing-relevant state of a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conversation {
    /// Where it stands.
    pub status: Status,
    /// Who holds it (only when `Assigned`).
    pub assignee: Option<AgentId>,
    /// The team it belongs to, if any.
    pub team: Option<TeamId>,
    /// The channel it arrived on.
    pub channel: Channel,
    /// The last agent who held it (for "previous agent" routing on reopen).
    pub last_assignee: Option<AgentId>,
}

/// Why a manual operation was refused. Nothing changes when one is returned.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ManualError {
    /// Someone else holds the conversation.
    #[error("the conversation is held by {by}")]
    AlreadyHeld {
        /// Who holds it.
        by: AgentId,
    },
    /// The conversation is closed; reopen it first.
    #[error("the conversation is closed")]
    Closed,
    /// Only a closed conversation can be reopened.
    #[error("the conversation is not closed")]
    NotClosed,
    /// The conversation is not assigned to anybody.
    #[error("the conversation is not assigned")]
    NotAssigned,
    /// The agent cannot take it (cap, daily limit, team), and the request did not force it.
    #[error("{agent} cannot take it: {}", reason.phrase())]
    Ineligible {
        /// Who.
        agent: AgentId,
        /// Why.
        reason: Skip,
    },
    /// No such agent.
    #[error("unknown {0}")]
    UnknownAgent(AgentId),
}

/// A transition: the new state and the counter changes it implies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    /// The conversation after the operation.
    pub after: Conversation,
    /// The agent who lets go of it (one fewer open), if any.
    pub released: Option<AgentId>,
    /// The agent who takes it (one more open, one more today), if any.
    pub assigned: Option<AgentId>,
}

impl Change {
    fn none(c: Conversation) -> Change {
        Change { after: c, released: None, assigned: None }
    }

    /// Writes the counter changes into a snapshot.
    pub fn apply(&self, snapshot: &mut Snapshot, ctx: Context) {
        if let Some(a) = self.released {
            snapshot.record_release(a, self.after.channel);
        }
        if let Some(a) = self.assigned {
            snapshot.record_assignment(a, self.after.channel, ctx);
        }
    }
}

/// The capacity checks of a manual assignment: caps, channel caps, daily limit, and team
/// membership when `team` is given. Presence is not checked: a person acting by hand is
/// evidently at work, and a manager may assign to someone away on purpose.
fn capacity(
    snapshot: &Snapshot,
    agent: AgentId,
    team: Option<TeamId>,
    channel: Channel,
    ctx: Context,
) -> Result<(), ManualError> {
    let a = snapshot.agent(agent).ok_or(ManualError::UnknownAgent(agent))?;
    let mut probe = AssignRequest::to_team(crate::model::ConversationId(0), TeamId(0), ctx.now);
    probe.channel = channel;
    probe.rules = Rules { only_online: Some(false), ..Rules::default() };
    eligibility(a, team, false, &probe, ctx).map_err(|reason| ManualError::Ineligible { agent, reason })
}

/// An agent picks a conversation for itself.
pub fn claim(
    snapshot: &Snapshot,
    c: Conversation,
    agent: AgentId,
    ctx: Context,
) -> Result<Change, ManualError> {
    match c.status {
        Status::Closed => Err(ManualError::Closed),
        Status::Assigned if c.assignee == Some(agent) => Ok(Change::none(c)),
        Status::Assigned => Err(ManualError::AlreadyHeld { by: c.assignee.unwrap_or(agent) }),
        Status::Queued | Status::Unassigned => {
            capacity(snapshot, agent, c.team, c.channel, ctx)?;
            Ok(take(c, agent))
        }
    }
}

/// A manager assigns a conversation to an agent (a transfer when someone else holds it).
/// Caps and limits apply unless `force`.
pub fn assign(
    snapshot: &Snapshot,
    c: Conversation,
    agent: AgentId,
    force: bool,
    ctx: Context,
) -> Result<Change, ManualError> {
    if c.status == Status::Closed {
        return Err(ManualError::Closed);
    }
    if c.assignee == Some(agent) {
        return Ok(Change::none(c));
    }
    if force {
        snapshot.agent(agent).ok_or(ManualError::UnknownAgent(agent))?;
    } else {
        capacity(snapshot, agent, None, c.channel, ctx)?;
    }
    let mut change = take(c, agent);
    change.released = c.assignee;
    Ok(change)
}

fn take(c: Conversation, agent: AgentId) -> Change {
    let after =
        Conversation { status: Status::Assigned, assignee: Some(agent), last_assignee: Some(agent), ..c };
    Change { after, released: None, assigned: Some(agent) }
}

/// Takes a conversation away from its agent; it becomes unassigned (the caller may then
/// queue it or run a decision).
pub fn unassign(c: Conversation) -> Result<Change, ManualError> {
    match c.status {
        Status::Closed => Err(ManualError::Closed),
        Status::Assigned => {
            let after = Conversation { status: Status::Unassigned, assignee: None, ..c };
            Ok(Change { after, released: c.assignee, assigned: None })
        }
        Status::Queued | Status::Unassigned => Err(ManualError::NotAssigned),
    }
}

/// Moves a conversation to another team: its agent lets go and it becomes unassigned in that
/// team (the caller then runs the team's decision).
pub fn transfer_to_team(c: Conversation, team: TeamId) -> Result<Change, ManualError> {
    if c.status == Status::Closed {
        return Err(ManualError::Closed);
    }
    let after = Conversation { status: Status::Unassigned, assignee: None, team: Some(team), ..c };
    Ok(Change { after, released: c.assignee, assigned: None })
}

/// Closes a conversation; its agent lets go of it.
pub fn close(c: Conversation) -> Result<Change, ManualError> {
    if c.status == Status::Closed {
        return Err(ManualError::Closed);
    }
    let after = Conversation { status: Status::Closed, assignee: None, ..c };
    Ok(Change { after, released: c.assignee, assigned: None })
}

/// Reopens a closed conversation: it becomes unassigned, remembering its last agent so that
/// the caller's decision can prefer it.
pub fn reopen(c: Conversation) -> Result<Change, ManualError> {
    if c.status != Status::Closed {
        return Err(ManualError::NotClosed);
    }
    Ok(Change::none(Conversation { status: Status::Unassigned, assignee: None, ..c }))
}
