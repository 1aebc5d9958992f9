//! An in-memory workspace: conversations, queues and a [`Snapshot`], driven only through the
//! core's pure functions. It is the reference model: the property tests check the core's
//! invariants on it, the store's tests compare the database against it, and the simulator
//! runs it in virtual time.
//!
//! Every operation that frees capacity (close, unassign, transfer, an agent coming online, a
//! cap raised, an agent joining a team) drains the queues right away, so that no agent who
//! could take work is idle while work waits.

use crate::decide::{decide, DecideError, Decision, Outcome};
use crate::manual::{self, Change, Conversation, ManualError, Status};
use crate::model::{AgentId, ConversationId, Presence, TeamId};
use crate::queue::{self, Drained, Place, QueueKey, Throughput, Waiting};
use crate::request::AssignRequest;
use crate::snapshot::{Context, Snapshot};
use std::collections::BTreeMap;
use thiserror::Error;

/// Why an operation on the in-memory workspace failed. Nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MemoryError {
    /// A decision could not be taken.
    #[error(transparent)]
    Decide(#[from] DecideError),
    /// A manual operation was refused.
    #[error(transparent)]
    Manual(#[from] ManualError),
    /// No such conversation.
    #[error("unknown {0}")]
    UnknownConversation(ConversationId),
    /// The conversation id is taken.
    #[error("{0} exists already")]
    DuplicateConversation(ConversationId),
    /// No such agent.
    #[error("unknown {0}")]
    UnknownAgent(AgentId),
    /// No such team.
    #[error("unknown {0}")]
    UnknownTeam(TeamId),
}

/// A conversation as the in-memory workspace keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The routing state.
    pub state: Conversation,
    /// The request it was opened (or last routed) with.
    pub request: AssignRequest,
    /// Every decision taken for it, oldest first.
    pub decisions: Vec<Decision>,
}

/// Conversations, queues and the snapshot they are decided against.
#[derive(Debug, Clone)]
pub struct Workspace {
    /// Agents and teams with their live counters.
    pub snapshot: Snapshot,
    conversations: BTreeMap<ConversationId, Record>,
    queues: BTreeMap<QueueKey, Vec<Waiting>>,
}

impl Workspace {
    /// A workspace over a snapshot, with no conversations.
    pub fn new(snapshot: Snapshot) -> Workspace {
        Workspace { snapshot, conversations: BTreeMap::new(), queues: BTreeMap::new() }
    }

    /// One conversation.
    pub fn conversation(&self, id: ConversationId) -> Option<&Record> {
        self.conversations.get(&id)
    }

    /// All conversations, by id.
    pub fn conversations(&self) -> impl Iterator<Item = (&ConversationId, &Record)> {
        self.conversations.iter()
    }

    /// A queue in serving order.
    pub fn queue(&self, key: QueueKey) -> &[Waiting] {
        self.queues.get(&key).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Every non-empty queue.
    pub fn queues(&self) -> impl Iterator<Item = (&QueueKey, &Vec<Waiting>)> {
        self.queues.iter().filter(|(_, q)| !q.is_empty())
    }

    /// Positions and estimates of a queue.
    pub fn places(&self, key: QueueKey, throughput: Throughput) -> Vec<Place> {
        queue::places(self.queue(key), throughput)
    }

    /// Opens a conversation and decides it at once. Returns the decision.
    pub fn open(&mut self, request: AssignRequest, ctx: Context) -> Result<Decision, MemoryError> {
        if self.conversations.contains_key(&request.conversation) {
            return Err(MemoryError::DuplicateConversation(request.conversation));
        }
        // Those already waiting go first: capacity can appear without an event freeing it (a
        // daily limit resets at midnight), and a newcomer must not overtake the queue. The team
        // must exist before anything changes.
        if let Some(team) = request.team() {
            if self.snapshot.team(team).is_none() {
                return Err(MemoryError::Decide(DecideError::UnknownTeam(team)));
            }
        }
        self.drain(ctx)?;
        let decision = decide(&self.snapshot, &request, ctx)?;
        let state = Conversation {
            status: Status::Unassigned,
            assignee: None,
            team: request.team(),
            channel: request.channel,
            last_assignee: None,
        };
        self.conversations
            .insert(request.conversation, Record { state, request: request.clone(), decisions: Vec::new() });
        self.settle(&request, decision.clone(), ctx);
        Ok(decision)
    }

    /// Records a decision for a conversation that is not held: assigns, queues or leaves it.
    fn settle(&mut self, request: &AssignRequest, decision: Decision, ctx: Context) {
        queue::apply(&mut self.snapshot, request, &decision, ctx);
        let Some(record) = self.conversations.get_mut(&request.conversation) else { return };
        match decision.outcome {
            Outcome::Assigned(agent) => {
                record.state.status = Status::Assigned;
                record.state.assignee = Some(agent);
                record.state.last_assignee = Some(agent);
            }
            Outcome::Queued { .. } => {
                record.state.status = Status::Queued;
                if let Some(key) = queue::queue_key(decision.outcome) {
                    let q = self.queues.entry(key).or_default();
                    let waiting = Waiting { request: request.clone() };
                    let at = q.partition_point(|w| queue::queue_order(w, &waiting).is_lt());
                    q.insert(at, waiting);
                }
            }
            Outcome::Unassigned => record.state.status = Status::Unassigned,
        }
        record.decisions.push(decision);
    }

    fn record(&self, id: ConversationId) -> Result<&Record, MemoryError> {
        self.conversations.get(&id).ok_or(MemoryError::UnknownConversation(id))
    }

    /// Applies a manual change: counters, state, leaving the queue.
    fn commit(&mut self, id: ConversationId, change: Change, ctx: Context) {
        change.apply(&mut self.snapshot, ctx);
        for q in self.queues.values_mut() {
            q.retain(|w| w.conversation() != id);
        }
        if let Some(record) = self.conversations.get_mut(&id) {
            record.state = change.after;
        }
    }

    /// An agent picks a conversation.
    pub fn claim(
        &mut self,
        id: ConversationId,
        agent: AgentId,
        ctx: Context,
    ) -> Result<Vec<Drained>, MemoryError> {
        let change = manual::claim(&self.snapshot, self.record(id)?.state, agent, ctx)?;
        self.commit(id, change, ctx);
        Ok(Vec::new())
    }

    /// A manager assigns a conversation; `force` may exceed caps.
    pub fn assign(
        &mut self,
        id: ConversationId,
        agent: AgentId,
        force: bool,
        ctx: Context,
    ) -> Result<Vec<Drained>, MemoryError> {
        let change = manual::assign(&self.snapshot, self.record(id)?.state, agent, force, ctx)?;
        self.commit(id, change, ctx);
        self.drain(ctx)
    }

    /// Takes a conversation from its agent; it stays unassigned for agents to pick.
    pub fn unassign(&mut self, id: ConversationId, ctx: Context) -> Result<Vec<Drained>, MemoryError> {
        let change = manual::unassign(self.record(id)?.state)?;
        self.commit(id, change, ctx);
        self.drain(ctx)
    }

    /// Moves a conversation to another team and decides it there.
    pub fn transfer_to_team(
        &mut self,
        id: ConversationId,
        team: TeamId,
        ctx: Context,
    ) -> Result<Vec<Drained>, MemoryError> {
        self.transfer_to_team_with(id, team, None, ctx)
    }

    /// [`Workspace::transfer_to_team`], with the new team's policy for when nobody can take
    /// it (which teams do not carry here; the store keeps it per team).
    pub fn transfer_to_team_with(
        &mut self,
        id: ConversationId,
        team: TeamId,
        when_nobody: Option<crate::request::WhenNobody>,
        ctx: Context,
    ) -> Result<Vec<Drained>, MemoryError> {
        if self.snapshot.team(team).is_none() {
            return Err(MemoryError::UnknownTeam(team));
        }
        let record = self.record(id)?;
        let change = manual::transfer_to_team(record.state, team)?;
        let mut request = record.request.clone();
        request.target = crate::request::Target::Team { team, strategy: None };
        request.previous_agent = None;
        // It arrives in the new team now, and those already waiting go first, as when
        // opening. The old agent lets go before both, so the released capacity counts. The
        // team exists, so the decision cannot fail after the commit.
        request.arrived_at = ctx.now;
        if let Some(w) = when_nobody {
            request.when_nobody = w;
        }
        self.commit(id, change, ctx);
        let drained = self.drain(ctx)?;
        let decision = decide(&self.snapshot, &request, ctx)?;
        if let Some(record) = self.conversations.get_mut(&id) {
            record.request = request.clone();
        }
        self.settle(&request, decision, ctx);
        Ok(drained)
    }

    /// Closes a conversation.
    pub fn close(&mut self, id: ConversationId, ctx: Context) -> Result<Vec<Drained>, MemoryError> {
        let change = manual::close(self.record(id)?.state)?;
        self.commit(id, change, ctx);
        self.drain(ctx)
    }

    /// Forgets a closed conversation (the simulator keeps only what is still open). Returns
    /// whether it was closed and is now gone; an open one is kept.
    pub fn forget(&mut self, id: ConversationId) -> bool {
        let closed = self.conversations.get(&id).is_some_and(|r| r.state.status == Status::Closed);
        if closed {
            self.conversations.remove(&id);
        }
        closed
    }

    /// Reopens a closed conversation and decides it again, preferring its last agent.
    pub fn reopen(&mut self, id: ConversationId, ctx: Context) -> Result<Decision, MemoryError> {
        let record = self.record(id)?;
        let change = manual::reopen(record.state)?;
        let mut request = record.request.clone();
        request.previous_agent = record.state.last_assignee.or(request.previous_agent);
        request.arrived_at = ctx.now;
        if let Some(team) = request.team() {
            if self.snapshot.team(team).is_none() {
                return Err(MemoryError::Decide(DecideError::UnknownTeam(team)));
            }
        }
        // Those already waiting go first, as when opening.
        self.drain(ctx)?;
        let decision = decide(&self.snapshot, &request, ctx)?;
        self.commit(id, change, ctx);
        if let Some(record) = self.conversations.get_mut(&id) {
            record.request = request.clone();
        }
        self.settle(&request, decision.clone(), ctx);
        Ok(decision)
    }

    /// Changes an agent's presence, then drains.
    pub fn set_presence(
        &mut self,
        agent: AgentId,
        presence: Presence,
        ctx: Context,
    ) -> Result<Vec<Drained>, MemoryError> {
        if !self.snapshot.set_presence(agent, presence) {
            return Err(MemoryError::UnknownAgent(agent));
        }
        self.drain(ctx)
    }

    /// Changes an agent's cap, then drains.
    pub fn set_max_open(
        &mut self,
        agent: AgentId,
        max_open: u32,
        ctx: Context,
    ) -> Result<Vec<Drained>, MemoryError> {
        if !self.snapshot.set_max_open(agent, max_open) {
            return Err(MemoryError::UnknownAgent(agent));
        }
        self.drain(ctx)
    }

    /// Adds an agent to a team, then drains.
    pub fn join_team(
        &mut self,
        agent: AgentId,
        team: TeamId,
        ctx: Context,
    ) -> Result<Vec<Drained>, MemoryError> {
        if self.snapshot.team(team).is_none() {
            return Err(MemoryError::UnknownTeam(team));
        }
        if !self.snapshot.join_team(agent, team) {
            return Err(MemoryError::UnknownAgent(agent));
        }
        self.drain(ctx)
    }

    /// Drains every queue, merged into one serving order, into agents who can take work now.
    pub fn drain(&mut self, ctx: Context) -> Result<Vec<Drained>, MemoryError> {
        let mut merged: Vec<Waiting> = self.queues.values().flatten().cloned().collect();
        queue::sort(&mut merged);
        let drained = queue::drain(&mut self.snapshot, &merged, ctx)?;
        for d in &drained {
            for q in self.queues.values_mut() {
                q.retain(|w| w.conversation() != d.conversation);
            }
            if let Some(record) = self.conversations.get_mut(&d.conversation) {
                record.state.status = Status::Assigned;
                record.state.assignee = Some(d.agent);
                record.state.last_assignee = Some(d.agent);
                record.decisions.push(d.decision.clone());
            }
        }
        Ok(drained)
    }
}
