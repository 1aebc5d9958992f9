//! The values the routing core reasons about: ids, presence, priorities, channels, time,
//! agents and teams.
//!
//! Everything here is plain data. The store builds these values from its rows inside a
//! transaction; the simulator builds them from its virtual world. Nothing here reads a clock:
//! time is a [`Timestamp`] handed in by the caller, and "today" is a [`Day`] computed from it
//! with [`crate::clock::local_day`].

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub i64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "{}"), self.0)
            }
        }
    };
}

id_type!(
    /// An agent: a person who answers conversations.
    AgentId,
    "agent#"
);
id_type!(
    /// A team of agents sharing a queue and a default strategy.
    TeamId,
    "team#"
);
id_type!(
    /// A conversation with a contact on one channel.
    ConversationId,
    "conversation#"
);

/// A point in time: milliseconds since the Unix epoch, UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// This instant plus `seconds`.
    pub fn plus_seconds(self, seconds: i64) -> Timestamp {
        Timestamp(self.0.saturating_add(seconds.saturating_mul(1000)))
    }

    /// Whole seconds from `earlier` to `self`, never negative.
    pub fn seconds_since(self, earlier: Timestamp) -> u64 {
        u64::try_from(self.0.saturating_sub(earlier.0) / 1000).unwrap_or(0)
    }
}

/// A calendar day in a workspace's time zone, counted in days since 1970-01-01.
///
/// Daily reception counts belong to a day; a count from an earlier day is zero today.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Day(pub i32);

/// An agent's presence. Only `Online` agents take automatic assignments by default; a request
/// may include `Busy` and `Away` agents too. `Offline` agents never do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Presence {
    /// At work and taking conversations.
    Online,
    /// At work but heads-down; skipped unless the request includes busy agents.
    Busy,
    /// Stepped away; skipped unless the request includes away agents.
    Away,
    /// Not at work.
    Offline,
}

impl Presence {
    /// The API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Presence::Online => "online",
            Presence::Busy => "busy",
            Presence::Away => "away",
            Presence::Offline => "offline",
        }
    }
}

/// How urgent a conversation is. The waiting queue serves `Urgent` first, `Low` last, and
/// arrival order within one priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// Served first.
    Urgent,
    /// Served before normal.
    High,
    /// The default.
    #[default]
    Normal,
    /// Served last.
    Low,
}

impl Priority {
    /// The API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Urgent => "urgent",
            Priority::High => "high",
            Priority::Normal => "normal",
            Priority::Low => "low",
        }
    }
}

/// The kind of channel a conversation arrived on. Agents may have a separate cap per kind,
/// since an agent who can hold five chats may hold ten e-mail threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// WhatsApp.
    Whatsapp,
    /// Facebook Messenger.
    Messenger,
    /// Instagram direct messages.
    Instagram,
    /// Telegram.
    Telegram,
    /// LINE.
    Line,
    /// WeChat.
    Wechat,
    /// Slack.
    Slack,
    /// E-mail.
    Email,
    /// SMS.
    Sms,
    /// TikTok business messaging.
    Tiktok,
    /// The web-chat widget.
    WebChat,
    /// Anything else, through a custom adapter.
    Custom,
}

impl Channel {
    /// Every channel, in index order.
    pub const ALL: [Channel; 12] = [
        Channel::Whatsapp,
        Channel::Messenger,
        Channel::Instagram,
        Channel::Telegram,
        Channel::Line,
        Channel::Wechat,
        Channel::Slack,
        Channel::Email,
        Channel::Sms,
        Channel::Tiktok,
        Channel::WebChat,
        Channel::Custom,
    ];

    /// A dense index, for per-channel arrays.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Whatsapp => "whatsapp",
            Channel::Messenger => "messenger",
            Channel::Instagram => "instagram",
            Channel::Telegram => "telegram",
            Channel::Line => "line",
            Channel::Wechat => "wechat",
            Channel::Slack => "slack",
            Channel::Email => "email",
            Channel::Sms => "sms",
            Channel::Tiktok => "tiktok",
            Channel::WebChat => "web_chat",
            Channel::Custom => "custom",
        }
    }
}

/// A count per channel kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PerChannel<T>(pub [T; 12]);

impl<T: Copy> PerChannel<T> {
    /// The value for one channel.
    pub fn get(&self, channel: Channel) -> T {
        self.0[channel.index()]
    }

    /// Sets the value for one channel.
    pub fn set(&mut self, channel: Channel, value: T) {
        self.0[channel.index()] = value;
    }
}

/// The assignment strategy a team uses to pick among its eligible agents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Agents in a stable order (by id); each assignment goes to the next eligible agent after
    /// the last one assigned. While the eligible set does not change, no two agents' counts
    /// differ by more than one.
    RoundRobin,
    /// The eligible agent with the fewest open conversations; ties go to whoever was assigned
    /// longest ago (never assigned counts as longest ago), then to the lowest id.
    LeastOpen,
    /// Weighted rotation by Balinski and Young's quota method: each eligible agent earns its
    /// weight in credit per decision; among the agents still below their upper quota, the one
    /// whose next turn is due earliest wins and pays the eligible set's total weight. Over any
    /// prefix of decisions with a fixed eligible set, each agent's count stays within one of
    /// its exact share. Deterministic: no dice.
    Weighted,
}

impl Strategy {
    /// The API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::RoundRobin => "round_robin",
            Strategy::LeastOpen => "least_open",
            Strategy::Weighted => "weighted",
        }
    }
}

/// A skill an agent has, at a level from 1 to 5.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skill {
    /// The skill's name, e.g. `billing`.
    pub name: String,
    /// 1 (novice) to 5 (expert).
    pub level: u8,
}

/// How many conversations an agent received on one day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DailyCount {
    /// The day the count belongs to, in the workspace's time zone.
    pub day: Day,
    /// Conversations assigned on that day.
    pub count: u32,
}

impl DailyCount {
    /// The count for `today`: zero if the stored count belongs to another day.
    pub fn on(&self, today: Day) -> u32 {
        if self.day == today {
            self.count
        } else {
            0
        }
    }

    /// The count after one more assignment on `today`.
    pub fn plus_one(&self, today: Day) -> DailyCount {
        DailyCount { day: today, count: self.on(today).saturating_add(1) }
    }
}

/// Everything the core needs to know about one agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Agent {
    /// Who.
    pub id: AgentId,
    /// Current presence.
    pub presence: Presence,
    /// The agent's own cap on open conversations (all channels together).
    pub max_open: u32,
    /// Optional caps per channel kind, applied to the open conversations of that kind.
    pub channel_caps: PerChannel<Option<u32>>,
    /// Open conversations assigned to this agent, all channels together.
    pub open: u32,
    /// Open conversations assigned to this agent, per channel kind.
    pub open_by_channel: PerChannel<u32>,
    /// The most conversations this agent may receive per day, if limited.
    pub daily_limit: Option<u32>,
    /// What the agent received today (or on the last day it received anything).
    pub received: DailyCount,
    /// The agent's weight for the weighted strategy (its reception ratio).
    pub weight: u32,
    /// Skills with levels 1-5.
    pub skills: Vec<Skill>,
    /// Languages spoken, as language tags (`en`, `pt-BR`); matched on the primary subtag.
    pub languages: Vec<String>,
    /// Teams the agent belongs to, sorted.
    pub teams: Vec<TeamId>,
    /// When the agent last received an assignment, if ever.
    pub last_assigned_at: Option<Timestamp>,
}

impl Agent {
    /// A fresh agent: online, no load, cap `max_open`, weight 1, no skills, no teams.
    pub fn new(id: AgentId, max_open: u32) -> Agent {
        Agent {
            id,
            presence: Presence::Online,
            max_open,
            channel_caps: PerChannel([None; 12]),
            open: 0,
            open_by_channel: PerChannel([0; 12]),
            daily_limit: None,
            received: DailyCount::default(),
            weight: 1,
            skills: Vec::new(),
            languages: Vec::new(),
            teams: Vec::new(),
            last_assigned_at: None,
        }
    }

    /// The agent's level in a skill, if it has it.
    pub fn skill_level(&self, name: &str) -> Option<u8> {
        self.skills.iter().find(|s| s.name.eq_ignore_ascii_case(name)).map(|s| s.level)
    }

    /// Whether the agent speaks `language` (primary subtags compared, case-insensitively).
    pub fn speaks(&self, language: &str) -> bool {
        let wanted = primary_subtag(language);
        self.languages.iter().any(|l| primary_subtag(l).eq_ignore_ascii_case(wanted))
    }

    /// Whether the agent belongs to `team`.
    pub fn in_team(&self, team: TeamId) -> bool {
        self.teams.binary_search(&team).is_ok()
    }
}

/// `pt-BR` -> `pt`.
fn primary_subtag(tag: &str) -> &str {
    tag.split(['-', '_']).next().unwrap_or(tag)
}

/// The per-team state a strategy needs to continue where it left off. The store keeps it in
/// the team's row and writes back the value each decision returns.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Rotation {
    /// The agent the round-robin strategy assigned last.
    pub last_agent: Option<AgentId>,
    /// Smooth-weighted credits per agent, sorted by agent id. Absent means zero.
    pub credits: Vec<(AgentId, i64)>,
}

impl Rotation {
    /// An agent's weighted credit.
    pub fn credit(&self, agent: AgentId) -> i64 {
        match self.credits.binary_search_by_key(&agent, |(a, _)| *a) {
            Ok(i) => self.credits[i].1,
            Err(_) => 0,
        }
    }

    /// Sets an agent's weighted credit.
    pub fn set_credit(&mut self, agent: AgentId, credit: i64) {
        match self.credits.binary_search_by_key(&agent, |(a, _)| *a) {
            Ok(i) => self.credits[i].1 = credit,
            Err(i) => self.credits.insert(i, (agent, credit)),
        }
    }
}

/// A team: its default strategy, whether it takes only online agents by default, its members
/// and its rotation state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Team {
    /// Which team.
    pub id: TeamId,
    /// The strategy used when a request names none.
    pub strategy: Strategy,
    /// Whether only online agents are eligible when a request does not say.
    pub only_online: bool,
    /// Where the rotation stands.
    pub rotation: Rotation,
}

impl Team {
    /// A team with `strategy`, online agents only, fresh rotation.
    pub fn new(id: TeamId, strategy: Strategy) -> Team {
        Team { id, strategy, only_online: true, rotation: Rotation::default() }
    }
}
