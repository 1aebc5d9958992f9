//! The waiting queue: its order, each conversation's position and estimated wait, and the
//! drain that hands waiting conversations to agents as capacity frees up.
//!
//! ## Order
//! Priority first (urgent, high, normal, low), then arrival time, then conversation id, so
//! the order is total and the same on every node.
//!
//! ## The estimate
//! The conversation at position `p` (1-based) is served once `p` slots have freed up ahead of
//! it. Slots free up at the team's *release rate*: the conversations its agents let go
//! (closed, unassigned or transferred away) per second over a recent window. So
//!
//! ```text
//! estimated_wait(p) = ceil(p × window_seconds / releases)            when releases ≥ 3
//!                   = ceil(p × default_handle_seconds / serving_slots) otherwise, if serving_slots > 0
//!                   = unknown                                          otherwise (nobody to serve)
//! ```
//!
//! The second line is the cold start: with no recent history, assume each of the team's
//! serving slots (the free-or-busy capacity of its available agents, `Σ max_open`) frees once
//! per default handling time. With nobody available at all, no honest number exists, and the
//! estimate says so instead of inventing one.
//!
//! ## The drain
//! [`drain`] walks the queue in order and runs [`crate::decide`] for each waiting
//! conversation against the snapshot as it stands, applying every assignment before the next
//! decision. An entry that nobody can take yet (a skill nobody free has, a dedicated agent at
//! cap) is passed over, not allowed to block the ones behind it. Afterwards no waiting
//! conversation has an eligible agent: nobody who could take work is left idle while work
//! waits. Cost: one decision per waiting conversation, `O(queue × team)`.

use crate::decide::{decide, DecideError, Decision, Outcome};
use crate::model::{AgentId, ConversationId, Priority, TeamId, Timestamp};
use crate::request::{AssignRequest, WhenNobody};
use crate::snapshot::{Context, Snapshot};
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;

/// The least number of recent releases for the throughput estimate to be used.
pub const MIN_RELEASES_FOR_RATE: u32 = 3;

/// A conversation waiting in a queue, with the request it will be decided with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Waiting {
    /// The request, as made when it arrived (its `arrived_at` and `priority` order it).
    pub request: AssignRequest,
}

impl Waiting {
    /// The conversation.
    pub fn conversation(&self) -> ConversationId {
        self.request.conversation
    }

    /// The queue order key.
    pub fn order_key(&self) -> (Priority, Timestamp, ConversationId) {
        (self.request.priority, self.request.arrived_at, self.request.conversation)
    }
}

/// Which queue a waiting conversation is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum QueueKey {
    /// A team's queue.
    Team(TeamId),
    /// The queue reserved for a dedicated agent.
    Agent(AgentId),
}

/// Queue order: priority, then arrival, then id.
pub fn queue_order(a: &Waiting, b: &Waiting) -> Ordering {
    a.order_key().cmp(&b.order_key())
}

/// Sorts a queue into serving order.
pub fn sort(queue: &mut [Waiting]) {
    queue.sort_by(queue_order);
}

/// What the estimate knows about a team's recent throughput and capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Throughput {
    /// Conversations the team's agents let go of (closed, unassigned, transferred away) in
    /// the window.
    pub releases: u32,
    /// The window's length in seconds.
    pub window_seconds: u32,
    /// The capacity of the team's available agents, `Σ max_open` (cold-start fallback).
    pub serving_slots: u32,
    /// The assumed handling time of one conversation (cold-start fallback).
    pub default_handle_seconds: u32,
}

/// The estimated wait in seconds of the conversation at `position` (1-based), or `None` when
/// nothing supports an estimate (no recent releases and nobody available). See the module
/// documentation for the formula.
pub fn estimate_wait(position: u32, t: Throughput) -> Option<u64> {
    let p = u64::from(position.max(1));
    if t.releases >= MIN_RELEASES_FOR_RATE && t.window_seconds > 0 {
        Some(div_ceil(p * u64::from(t.window_seconds), u64::from(t.releases)))
    } else if t.serving_slots > 0 {
        Some(div_ceil(p * u64::from(t.default_handle_seconds), u64::from(t.serving_slots)))
    } else {
        None
    }
}

fn div_ceil(a: u64, b: u64) -> u64 {
    a.div_ceil(b.max(1))
}

/// A waiting conversation's place in its queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Place {
    /// The conversation.
    pub conversation: ConversationId,
    /// 1 for the head of the queue.
    pub position: u32,
    /// Estimated seconds until an agent takes it.
    pub estimated_wait_seconds: Option<u64>,
}

/// Positions and estimates for a queue already in serving order.
pub fn places(queue: &[Waiting], throughput: Throughput) -> Vec<Place> {
    queue
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let position = u32::try_from(i + 1).unwrap_or(u32::MAX);
            Place {
                conversation: w.conversation(),
                position,
                estimated_wait_seconds: estimate_wait(position, throughput),
            }
        })
        .collect()
}

/// One conversation the drain assigned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drained {
    /// The conversation.
    pub conversation: ConversationId,
    /// The agent it went to.
    pub agent: AgentId,
    /// The decision, with its trace.
    pub decision: Decision,
}

/// Hands waiting conversations to agents who can take them now, head first, applying each
/// assignment (counts, rotation) to `snapshot` before the next decision. `queue` must be in
/// serving order (see [`sort`]); it is not modified: the caller removes the drained entries.
///
/// Contract: afterwards, for every entry not drained, [`decide`] against the updated
/// snapshot finds nobody.
pub fn drain(snapshot: &mut Snapshot, queue: &[Waiting], ctx: Context) -> Result<Vec<Drained>, DecideError> {
    let mut drained = Vec::new();
    for waiting in queue {
        let mut request = waiting.request.clone();
        request.when_nobody = WhenNobody::Queue;
        let decision = decide(snapshot, &request, ctx)?;
        if let Outcome::Assigned(agent) = decision.outcome {
            apply(snapshot, &request, &decision, ctx);
            drained.push(Drained { conversation: request.conversation, agent, decision });
        }
    }
    Ok(drained)
}

/// Writes a decision's consequences into a snapshot: the assignee's counts, the rotation.
pub fn apply(snapshot: &mut Snapshot, request: &AssignRequest, decision: &Decision, ctx: Context) {
    if let Outcome::Assigned(agent) = decision.outcome {
        snapshot.record_assignment(agent, request.channel, ctx);
    }
    if let Some((team, rotation)) = &decision.rotation {
        snapshot.set_rotation(*team, rotation.clone());
    }
}

/// Which queue a decision's `Queued` outcome refers to.
pub fn queue_key(outcome: Outcome) -> Option<QueueKey> {
    match outcome {
        Outcome::Queued { reserved_for: Some(agent), .. } => Some(QueueKey::Agent(agent)),
        Outcome::Queued { team: Some(team), .. } => Some(QueueKey::Team(team)),
        _ => None,
    }
}
