//! A [`Snapshot`]: the agents and teams a decision looks at, indexed once so that a decision
//! walks a team's members without searching.
//!
//! The snapshot is a value. [`crate::decide`] reads it; [`Snapshot::apply`] and the small
//! mutators below write the consequences of a decision or an event back into it, exactly as
//! the store writes them into its rows. Both the in-memory [`crate::memory::Workspace`] and the
//! simulator keep one snapshot alive across decisions; the store builds a fresh one per
//! transaction.

use crate::model::{Agent, AgentId, Channel, Day, Presence, Rotation, Team, TeamId, Timestamp};
use thiserror::Error;

/// Why a snapshot could not be built.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SnapshotError {
    /// Two agents share an id.
    #[error("duplicate {0}")]
    DuplicateAgent(AgentId),
    /// Two teams share an id.
    #[error("duplicate {0}")]
    DuplicateTeam(TeamId),
}

/// The time of a decision: the instant, and the calendar day it falls on in the workspace's
/// time zone (see [`crate::clock::local_day`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Context {
    /// Now.
    pub now: Timestamp,
    /// Today, in the workspace's time zone.
    pub today: Day,
}

/// Agents and teams, sorted by id, with each team's member list resolved to agent indices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    agents: Vec<Agent>,
    teams: Vec<Team>,
    /// For each team (same index as `teams`), indices into `agents` of its members, in id
    /// order: the stable order of the round-robin rotation.
    members: Vec<Vec<usize>>,
}

impl Snapshot {
    /// Builds a snapshot. Membership comes from each agent's `teams`; agents naming a team
    /// that is not in the snapshot are simply not members of anything here.
    pub fn new(mut agents: Vec<Agent>, mut teams: Vec<Team>) -> Result<Snapshot, SnapshotError> {
        agents.sort_by_key(|a| a.id);
        teams.sort_by_key(|t| t.id);
        if let Some(w) = agents.windows(2).find(|w| w[0].id == w[1].id) {
            return Err(SnapshotError::DuplicateAgent(w[0].id));
        }
        if let Some(w) = teams.windows(2).find(|w| w[0].id == w[1].id) {
            return Err(SnapshotError::DuplicateTeam(w[0].id));
        }
        for agent in &mut agents {
            agent.teams.sort();
            agent.teams.dedup();
        }
        let mut snapshot = Snapshot { agents, teams, members: Vec::new() };
        snapshot.index_members();
        Ok(snapshot)
    }

    fn index_members(&mut self) {
        let mut members = vec![Vec::new(); self.teams.len()];
        for (ai, agent) in self.agents.iter().enumerate() {
            for team in &agent.teams {
                if let Ok(ti) = self.teams.binary_search_by_key(team, |t| t.id) {
                    members[ti].push(ai);
                }
            }
        }
        self.members = members;
    }

    /// All agents, in id order.
    pub fn agents(&self) -> &[Agent] {
        &self.agents
    }

    /// All teams, in id order.
    pub fn teams(&self) -> &[Team] {
        &self.teams
    }

    /// One agent.
    pub fn agent(&self, id: AgentId) -> Option<&Agent> {
        self.agent_index(id).map(|i| &self.agents[i])
    }

    /// One team.
    pub fn team(&self, id: TeamId) -> Option<&Team> {
        self.team_index(id).map(|i| &self.teams[i])
    }

    pub(crate) fn agent_index(&self, id: AgentId) -> Option<usize> {
        self.agents.binary_search_by_key(&id, |a| a.id).ok()
    }

    pub(crate) fn team_index(&self, id: TeamId) -> Option<usize> {
        self.teams.binary_search_by_key(&id, |t| t.id).ok()
    }

    pub(crate) fn agent_at(&self, index: usize) -> &Agent {
        &self.agents[index]
    }

    pub(crate) fn member_indices(&self, team_index: usize) -> &[usize] {
        &self.members[team_index]
    }

    /// The members of a team, in rotation order.
    pub fn members(&self, team: TeamId) -> impl Iterator<Item = &Agent> + '_ {
        let indices: &[usize] = match self.team_index(team) {
            Some(ti) => &self.members[ti],
            None => &[],
        };
        indices.iter().map(|&i| &self.agents[i])
    }

    fn agent_mut(&mut self, id: AgentId) -> Option<&mut Agent> {
        let i = self.agent_index(id)?;
        Some(&mut self.agents[i])
    }

    /// Records an assignment: one more open conversation on `channel`, one more received
    /// today, and the time of it. Returns false if the agent is unknown.
    pub fn record_assignment(&mut self, agent: AgentId, channel: Channel, ctx: Context) -> bool {
        let Some(a) = self.agent_mut(agent) else { return false };
        a.open = a.open.saturating_add(1);
        let n = a.open_by_channel.get(channel).saturating_add(1);
        a.open_by_channel.set(channel, n);
        a.received = a.received.plus_one(ctx.today);
        a.last_assigned_at = Some(ctx.now);
        true
    }

    /// Records that an agent no longer holds a conversation on `channel` (closed, unassigned,
    /// transferred away). Returns false if the agent is unknown.
    pub fn record_release(&mut self, agent: AgentId, channel: Channel) -> bool {
        let Some(a) = self.agent_mut(agent) else { return false };
        a.open = a.open.saturating_sub(1);
        let n = a.open_by_channel.get(channel).saturating_sub(1);
        a.open_by_channel.set(channel, n);
        true
    }

    /// Sets a team's rotation state (the value a decision returned).
    pub fn set_rotation(&mut self, team: TeamId, rotation: Rotation) -> bool {
        match self.team_index(team) {
            Some(i) => {
                self.teams[i].rotation = rotation;
                true
            }
            None => false,
        }
    }

    /// Changes an agent's presence.
    pub fn set_presence(&mut self, agent: AgentId, presence: Presence) -> bool {
        self.agent_mut(agent).map(|a| a.presence = presence).is_some()
    }

    /// Changes an agent's cap on open conversations.
    pub fn set_max_open(&mut self, agent: AgentId, max_open: u32) -> bool {
        self.agent_mut(agent).map(|a| a.max_open = max_open).is_some()
    }

    /// Adds an agent to a team.
    pub fn join_team(&mut self, agent: AgentId, team: TeamId) -> bool {
        let Some(a) = self.agent_mut(agent) else { return false };
        if let Err(i) = a.teams.binary_search(&team) {
            a.teams.insert(i, team);
        }
        self.index_members();
        true
    }

    /// Removes an agent from a team.
    pub fn leave_team(&mut self, agent: AgentId, team: TeamId) -> bool {
        let Some(a) = self.agent_mut(agent) else { return false };
        a.teams.retain(|t| *t != team);
        self.index_members();
        true
    }
}
