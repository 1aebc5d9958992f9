//! What a caller asks the core: assign this conversation, to whom, under which rules, and
//! what to do when nobody can take it.

use crate::model::{AgentId, Channel, ConversationId, Priority, Strategy, TeamId, Timestamp};
use serde::{Deserialize, Serialize};

/// A request to assign one conversation automatically.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssignRequest {
    /// The conversation to place.
    pub conversation: ConversationId,
    /// The channel it arrived on (for per-channel caps).
    pub channel: Channel,
    /// Its priority in the waiting queue.
    pub priority: Priority,
    /// When it started waiting (its place in the queue among equal priorities).
    pub arrived_at: Timestamp,
    /// Who should get it.
    pub target: Target,
    /// The agent who handled this contact last: tried first when set, and the target's
    /// strategy decides when that agent cannot take it.
    pub previous_agent: Option<AgentId>,
    /// Skills and language the agent must have.
    pub requirements: Requirements,
    /// Which agents count as eligible.
    pub rules: Rules,
    /// What happens when nobody eligible can take it now.
    pub when_nobody: WhenNobody,
}

impl AssignRequest {
    /// A plain request: to `team` with its default strategy and rules, queueing when nobody
    /// can take it.
    pub fn to_team(conversation: ConversationId, team: TeamId, arrived_at: Timestamp) -> Self {
        AssignRequest {
            conversation,
            channel: Channel::WebChat,
            priority: Priority::Normal,
            arrived_at,
            target: Target::Team { team, strategy: None },
            previous_agent: None,
            requirements: Requirements::default(),
            rules: Rules::default(),
            when_nobody: WhenNobody::Queue,
        }
    }

    /// The team this request queues in, if any.
    pub fn team(&self) -> Option<TeamId> {
        match &self.target {
            Target::Team { team, .. } => Some(*team),
            Target::Agent { otherwise: Otherwise::Team { team, .. }, .. } => Some(*team),
            Target::Agent { .. } => None,
        }
    }
}

/// Who a conversation should go to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Target {
    /// A team, picking among its members with `strategy` (the team's default when `None`).
    Team {
        /// The team.
        team: TeamId,
        /// A strategy other than the team's default.
        strategy: Option<Strategy>,
    },
    /// A dedicated agent (a VIP's account manager); `otherwise` says what happens when that
    /// agent cannot take it now.
    Agent {
        /// The dedicated agent.
        agent: AgentId,
        /// The fallback.
        otherwise: Otherwise,
    },
}

/// What happens when a dedicated agent cannot take a conversation now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Otherwise {
    /// Wait in a queue reserved for that agent.
    WaitForAgent,
    /// Stay unassigned for agents to pick.
    LeaveUnassigned,
    /// Fall back to a team.
    Team {
        /// The team.
        team: TeamId,
        /// A strategy other than the team's default.
        strategy: Option<Strategy>,
    },
}

/// Requirements on the agent: every skill at or above its level, and the language.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Requirements {
    /// Required skills with their minimum levels.
    pub skills: Vec<SkillRequirement>,
    /// The contact's language, which the agent must speak.
    pub language: Option<String>,
}

/// One required skill.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkillRequirement {
    /// The skill's name.
    pub name: String,
    /// The lowest acceptable level, 1-5.
    pub min_level: u8,
}

/// Eligibility switches, each one settable per request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rules {
    /// Only online agents (plus busy/away ones when included). `None` takes the team's
    /// default, which is on unless the team says otherwise.
    pub only_online: Option<bool>,
    /// With only-online on, busy agents count as available too.
    pub include_busy: bool,
    /// With only-online on, away agents count as available too.
    pub include_away: bool,
    /// A cap on open conversations lower than the agents' own `max_open`.
    pub cap: Option<u32>,
    /// Apply the agents' per-channel caps.
    pub channel_caps: bool,
    /// Apply the agents' daily reception limits.
    pub daily_limit: bool,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            only_online: None,
            include_busy: false,
            include_away: false,
            cap: None,
            channel_caps: true,
            daily_limit: true,
        }
    }
}

/// What happens when no eligible agent can take the conversation now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum WhenNobody {
    /// Wait in the team's queue (or the dedicated agent's), drained as capacity frees up.
    Queue,
    /// Stay unassigned for agents to pick (the manual "pick and assign" default).
    #[default]
    LeaveUnassigned,
}
