//! The values that cross the store's interface: what callers send in (already parsed and
//! typed by the HTTP edge) and what they get back (serialized as the API's JSON).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use usher_core::manual::Status;
use usher_core::model::{Channel, Presence, Priority, Strategy};
use usher_core::request::{Rules, WhenNobody};
use usher_core::trace::Trace;

/// Milliseconds since the Unix epoch, UTC, as the store's callers pass "now".
pub type Millis = i64;

/// Renders a time for the API: RFC 3339 in UTC with millisecond precision.
pub fn rfc3339(ms: Millis) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything in the workspace.
    Admin,
    /// Routing, teams, agents, assignment of anyone.
    Manager,
    /// Its own status, claims for itself, its own conversations.
    Agent,
    /// Opens conversations and posts messages (channel adapters).
    Integration,
}

impl Role {
    /// The stored and API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Manager => "manager",
            Role::Agent => "agent",
            Role::Integration => "integration",
        }
    }

    /// Parses the stored spelling.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "manager" => Some(Role::Manager),
            "agent" => Some(Role::Agent),
            "integration" => Some(Role::Integration),
            _ => None,
        }
    }
}

/// Who a token speaks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Principal {
    /// The token's workspace: it sees nothing else.
    pub workspace: i64,
    /// Its role.
    pub role: Role,
    /// The agent an `agent` token acts as.
    pub agent: Option<i64>,
    /// The token's own id (for rate limiting and logs; never the secret).
    pub token_id: i64,
}

/// A newly created token: the secret is shown once and stored only as a hash.
#[derive(Debug, Clone, Serialize)]
pub struct NewToken {
    /// The token's id.
    pub id: i64,
    /// The secret, to send as `Authorization: Bearer …`.
    pub token: String,
    /// Its role.
    pub role: Role,
    /// Its agent, for agent tokens.
    pub agent: Option<i64>,
    /// Its workspace.
    pub workspace: i64,
}

/// A workspace.
#[derive(Debug, Clone, Serialize)]
pub struct Workspace {
    /// Its id.
    pub id: i64,
    /// Its name.
    pub name: String,
    /// Its time zone (daily limits reset at its midnight).
    pub time_zone: String,
}

/// A team to create.
#[derive(Debug, Clone)]
pub struct NewTeam {
    /// Unique in the workspace.
    pub name: String,
    /// The default strategy.
    pub strategy: Strategy,
    /// Only online agents by default.
    pub only_online: bool,
    /// The team's time zone.
    pub time_zone: String,
    /// What happens when nobody can take a conversation.
    pub when_nobody: WhenNobody,
    /// Assumed handling time for the cold-start wait estimate.
    pub default_handle_seconds: u32,
}

/// Changes to a team; `None` keeps the value.
#[derive(Debug, Clone, Default)]
pub struct TeamPatch {
    /// New name.
    pub name: Option<String>,
    /// New default strategy.
    pub strategy: Option<Strategy>,
    /// New only-online default.
    pub only_online: Option<bool>,
    /// New time zone.
    pub time_zone: Option<String>,
    /// New nobody policy.
    pub when_nobody: Option<WhenNobody>,
    /// New default handling time.
    pub default_handle_seconds: Option<u32>,
}

/// A team.
#[derive(Debug, Clone, Serialize)]
pub struct Team {
    /// Its id.
    pub id: i64,
    /// Its name.
    pub name: String,
    /// Its default strategy.
    pub strategy: Strategy,
    /// Only online agents by default.
    pub only_online: bool,
    /// Its time zone.
    pub time_zone: String,
    /// What happens when nobody can take a conversation.
    pub when_nobody: WhenNobody,
    /// Assumed handling time for the cold-start wait estimate.
    pub default_handle_seconds: u32,
    /// Member agent ids.
    pub members: Vec<i64>,
}

/// An agent to create.
#[derive(Debug, Clone)]
pub struct NewAgent {
    /// Display name.
    pub name: String,
    /// E-mail, unique in the workspace.
    pub email: String,
    /// Team ids.
    pub teams: Vec<i64>,
    /// Cap on open conversations.
    pub max_open: u32,
    /// Daily reception limit.
    pub daily_limit: Option<u32>,
    /// Weight for the weighted strategy.
    pub weight: u32,
    /// Skill name to level 1-5.
    pub skills: BTreeMap<String, u8>,
    /// Language tags.
    pub languages: Vec<String>,
    /// Caps per channel kind.
    pub channel_caps: BTreeMap<Channel, u32>,
    /// Initial presence.
    pub status: Presence,
}

/// Changes to an agent; `None` keeps the value.
#[derive(Debug, Clone, Default)]
pub struct AgentPatch {
    /// New name.
    pub name: Option<String>,
    /// New team list (replaces).
    pub teams: Option<Vec<i64>>,
    /// New cap.
    pub max_open: Option<u32>,
    /// New daily limit (`Some(None)` removes it).
    pub daily_limit: Option<Option<u32>>,
    /// New weight.
    pub weight: Option<u32>,
    /// New skills (replaces).
    pub skills: Option<BTreeMap<String, u8>>,
    /// New languages (replaces).
    pub languages: Option<Vec<String>>,
    /// New channel caps (replaces).
    pub channel_caps: Option<BTreeMap<Channel, u32>>,
}

/// An agent.
#[derive(Debug, Clone, Serialize)]
pub struct Agent {
    /// Its id.
    pub id: i64,
    /// Display name.
    pub name: String,
    /// E-mail.
    pub email: String,
    /// Presence.
    pub status: Presence,
    /// Cap on open conversations.
    pub max_open: u32,
    /// Caps per channel kind.
    pub channel_caps: BTreeMap<Channel, u32>,
    /// Daily reception limit.
    pub daily_limit: Option<u32>,
    /// Weight for the weighted strategy.
    pub weight: u32,
    /// Skill name to level.
    pub skills: BTreeMap<String, u8>,
    /// Language tags.
    pub languages: Vec<String>,
    /// Team ids.
    pub teams: Vec<i64>,
    /// Open conversations held now.
    pub open: u32,
    /// Conversations received today (in the workspace's time zone).
    pub received_today: u32,
    /// When it last received an assignment.
    pub last_assigned_at: Option<String>,
}

/// The contact of a conversation being opened.
#[derive(Debug, Clone)]
pub struct NewContact {
    /// The contact's id on the channel (phone number, PSID, e-mail address, …).
    pub external_id: String,
    /// Display name.
    pub name: Option<String>,
    /// Language tag.
    pub language: Option<String>,
    /// Tags.
    pub tags: Vec<String>,
}

/// A conversation to open, with its routing request.
#[derive(Debug, Clone)]
pub struct NewConversation {
    /// Channel.
    pub channel: Channel,
    /// Contact.
    pub contact: NewContact,
    /// The first message.
    pub message: Option<String>,
    /// Target team.
    pub team: Option<i64>,
    /// Dedicated agent (tried before the team).
    pub agent: Option<i64>,
    /// With a dedicated agent and no team: wait for that agent rather than stay unassigned.
    pub wait_for_agent: bool,
    /// Priority.
    pub priority: Priority,
    /// A strategy other than the team's.
    pub strategy: Option<Strategy>,
    /// Required skills (name, minimum level).
    pub skills: Vec<(String, u8)>,
    /// Require agents speaking the contact's language.
    pub match_language: bool,
    /// Prefer the contact's previous agent (default on).
    pub prefer_previous_agent: bool,
    /// Eligibility switches.
    pub rules: Rules,
    /// Queue or leave unassigned; the team's setting when `None`.
    pub when_nobody: Option<WhenNobody>,
}

impl NewConversation {
    /// Whether the request leaves routing to the workspace (names no agent, strategy, skill,
    /// language, rule or fallback of its own; `prefer_previous_agent`, on by default, does
    /// not count), so that a published workflow may decide it. A channel adapter's explicit
    /// instructions win over workflows.
    pub fn leaves_routing_to_workflows(&self) -> bool {
        self.agent.is_none()
            && !self.wait_for_agent
            && self.strategy.is_none()
            && self.skills.is_empty()
            && !self.match_language
            && self.rules == Rules::default()
            && self.when_nobody.is_none()
    }
}

/// A contact.
#[derive(Debug, Clone, Serialize)]
pub struct Contact {
    /// Its id.
    pub id: i64,
    /// Channel.
    pub channel: Channel,
    /// Its id on the channel.
    pub external_id: String,
    /// Display name.
    pub name: Option<String>,
    /// Language.
    pub language: Option<String>,
    /// When the language was detected from a message: the detection's confidence, 0 to 1
    /// (none when the channel, an agent or the API gave it).
    pub language_confidence: Option<f64>,
    /// Tags.
    pub tags: Vec<String>,
    /// Free-form attributes (plan, order number, …).
    pub attributes: BTreeMap<String, String>,
}

/// Changes to a contact; `None` keeps the value.
#[derive(Debug, Clone, Default)]
pub struct ContactPatch {
    /// New name.
    pub name: Option<String>,
    /// New language.
    pub language: Option<String>,
    /// New tags (replaces).
    pub tags: Option<Vec<String>>,
    /// Attributes to set; an empty value removes the attribute.
    pub attributes: Option<BTreeMap<String, String>>,
}

/// A waiting conversation's place.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct QueuePlace {
    /// 1 for the head.
    pub position: u32,
    /// Estimated seconds until an agent takes it; null when no estimate is possible.
    pub estimated_wait_seconds: Option<u64>,
}

/// A conversation.
#[derive(Debug, Clone, Serialize)]
pub struct Conversation {
    /// Its id.
    pub id: i64,
    /// Where it stands.
    pub status: Status,
    /// Who holds it.
    pub assignee: Option<i64>,
    /// Its team.
    pub team: Option<i64>,
    /// The dedicated agent it waits for.
    pub reserved_for: Option<i64>,
    /// Channel.
    pub channel: Channel,
    /// Priority.
    pub priority: Priority,
    /// Contact.
    pub contact: Contact,
    /// The first message.
    pub message: Option<String>,
    /// Queue place while queued.
    pub queue: Option<QueuePlace>,
    /// Opened.
    pub opened_at: String,
    /// Last assigned.
    pub assigned_at: Option<String>,
    /// Closed.
    pub closed_at: Option<String>,
    /// When an agent first answered after the assignment (RFC 3339).
    pub first_response_at: Option<String>,
    /// First response time: seconds from the opening to the agent's first answer (what the
    /// contact waited for a person).
    pub first_response_seconds: Option<i64>,
    /// Resolution time: seconds from the opening to the close (none while open; a reopen
    /// clears it until the next close).
    pub resolution_seconds: Option<i64>,
    /// The channel (as configured in `/v1/channels`) it came through, if an adapter opened it.
    pub channel_id: Option<i64>,
}

/// A filter for listing conversations.
#[derive(Debug, Clone, Default)]
pub struct ConversationFilter {
    /// Only this status.
    pub status: Option<Status>,
    /// Only this team.
    pub team: Option<i64>,
    /// Only this assignee.
    pub assignee: Option<i64>,
    /// Only conversations with no team or a team this agent belongs to.
    pub visible_to_agent: Option<i64>,
    /// Only ids greater than this (paging).
    pub after: Option<i64>,
    /// Page size (capped at [`crate::limits::LIST_PAGE`]).
    pub limit: Option<i64>,
}

/// A decision taken for a conversation.
#[derive(Debug, Clone, Serialize)]
pub struct DecisionRecord {
    /// When.
    pub at: String,
    /// `assigned`, `queued` or `unassigned`.
    pub outcome: String,
    /// The agent assigned, if any.
    pub agent: Option<i64>,
    /// One sentence.
    pub explanation: String,
    /// Every candidate and its reason.
    pub trace: Trace,
}

/// A waiting conversation in a team's queue.
#[derive(Debug, Clone, Serialize)]
pub struct QueueEntry {
    /// The conversation.
    pub conversation: i64,
    /// Priority.
    pub priority: Priority,
    /// 1 for the head.
    pub position: u32,
    /// Estimated seconds until an agent takes it.
    pub estimated_wait_seconds: Option<u64>,
    /// Seconds waited so far.
    pub waited_seconds: u64,
}

/// A team's queue.
#[derive(Debug, Clone, Serialize)]
pub struct TeamQueue {
    /// The team.
    pub team: i64,
    /// Waiting conversations in serving order.
    pub waiting: Vec<QueueEntry>,
    /// Conversations the team's agents let go of in the last window (the estimate's input).
    pub recent_releases: u32,
    /// The window, in seconds.
    pub window_seconds: u32,
}

/// An entry of the append-only event log.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// Position in the workspace's log: strictly increasing, gap-free.
    pub seq: i64,
    /// What happened: `conversation.opened`, `conversation.assigned`, …
    pub kind: String,
    /// When.
    pub at: String,
    /// The conversation concerned.
    pub conversation: Option<i64>,
    /// The agent concerned.
    pub agent: Option<i64>,
    /// The team concerned.
    pub team: Option<i64>,
    /// Details.
    pub data: serde_json::Value,
}

/// A counter that disagrees with the truth.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CounterMismatch {
    /// The agent.
    pub agent: i64,
    /// Which counter.
    pub counter: String,
    /// The stored value.
    pub stored: i64,
    /// The recounted value.
    pub actual: i64,
}

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Author {
    /// The contact (inbound).
    Contact,
    /// An agent (outbound).
    Agent,
    /// A workflow: its messages (outbound) and notes (internal).
    Workflow,
}

impl Author {
    /// Its name in the API and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Author::Contact => "contact",
            Author::Agent => "agent",
            Author::Workflow => "workflow",
        }
    }
}

/// A message of a conversation.
#[derive(Debug, Clone, Serialize)]
pub struct Message {
    /// Its id.
    pub id: i64,
    /// The conversation.
    pub conversation: i64,
    /// `inbound` (from the contact), `outbound`, or `internal` (a note agents see).
    pub direction: String,
    /// Who wrote it.
    pub author: Author,
    /// The agent who wrote it.
    pub agent: Option<i64>,
    /// The text.
    pub text: String,
    /// When (RFC 3339).
    pub at: String,
}
