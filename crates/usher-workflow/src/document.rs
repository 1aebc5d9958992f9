//! The workflow document: what a business writes (or picks from a template) to say what
//! happens to a conversation. JSON, parsed strictly (unknown fields are refused), checked by
//! [`crate::validate`] before it may be published.
//!
//! ```json
//! { "name": "Round robin + online only",
//!   "trigger": { "kind": "conversation_opened" },
//!   "channels": ["whatsapp", "web_chat"],
//!   "start": "welcome",
//!   "steps": {
//!     "welcome": { "kind": "send_message", "text": "Hi {{contact.name}}!", "next": "assign" },
//!     "assign": { "kind": "assign", "team": 1, "strategy": "round_robin", "only_online": true,
//!                 "when_nobody": "queue" } } }
//! ```
//!
//! A step names the step after it (`next`); a step without one ends the run. Steps that
//! branch name one step per branch. Names of steps are the document's own: `[a-z0-9_-]`.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use usher_core::model::{AgentId, Channel, ConversationId, Priority, Strategy, TeamId, Timestamp};
use usher_core::request::{
    AssignRequest, Otherwise, Requirements, Rules, SkillRequirement, Target, WhenNobody,
};

/// A workflow document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workflow {
    /// What people call it.
    pub name: String,
    /// What starts a run.
    pub trigger: Trigger,
    /// The channels it applies to; empty means every channel.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub channels: Vec<Channel>,
    /// The first step.
    pub start: String,
    /// The steps by name.
    pub steps: BTreeMap<String, Step>,
}

/// What starts a run of a workflow for a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Trigger {
    /// A contact opened a conversation.
    ConversationOpened,
    /// A contact sent a message; with keywords, only a message containing one of them
    /// (case-insensitive).
    MessageReceived {
        /// Words or phrases, any of which must occur; none means any message.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        keywords: Vec<String>,
    },
    /// A conversation was closed.
    ConversationClosed,
    /// A contact's tags or fields changed; with names, only a change of one of them.
    ContactChanged {
        /// Tags whose adding or removing starts a run.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        tags: Vec<String>,
        /// Fields whose change starts a run.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        fields: Vec<String>,
    },
    /// Started by hand, or by the API, for one conversation.
    Manual,
}

/// One step of a workflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Step {
    /// Sends a message to the contact: text with `{{variables}}`, optionally quick replies.
    SendMessage {
        /// The text; variables: `contact.name`, `agent.name`, `team.name`, `queue.position`,
        /// `queue.estimated_wait`, `hours.next_opening`, and `field.NAME`.
        text: String,
        /// Quick-reply options shown with it.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        options: Vec<String>,
        /// The step after it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        next: Option<String>,
    },
    /// Asks the contact a question and saves the answer to a contact field.
    Ask(Ask),
    /// Goes to the first branch whose condition holds, or `otherwise`.
    Branch {
        /// Conditions in order.
        branches: Vec<Branch>,
        /// Where to go when none holds.
        otherwise: String,
    },
    /// Assigns the conversation with the routing core.
    Assign(Assign),
    /// Waits, e.g. "give agents five minutes".
    Wait {
        /// How long, in minutes.
        minutes: u32,
        /// The step after it.
        next: String,
    },
    /// Takes the conversation from its agent; it stays unassigned for agents to pick.
    Unassign {
        /// The step after it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        next: Option<String>,
    },
    /// Closes the conversation; the run ends.
    Close,
    /// Changes the contact: tags, fields, the conversation's priority.
    UpdateContact {
        /// Tags to add.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        add_tags: Vec<String>,
        /// Tags to remove.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        remove_tags: Vec<String>,
        /// Fields to set (an empty value removes one).
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        fields: BTreeMap<String, String>,
        /// A new priority for the conversation.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        priority: Option<Priority>,
        /// The step after it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        next: Option<String>,
    },
    /// Adds an internal note for agents (the contact never sees it).
    Note {
        /// The note, with `{{variables}}`.
        text: String,
        /// The step after it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        next: Option<String>,
    },
    /// Goes to another step.
    Jump {
        /// The step to go to.
        to: String,
    },
}

/// A question to the contact (the seeds' airline menu: Refund / Change / Order inquiry).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ask {
    /// The question, with `{{variables}}`.
    pub text: String,
    /// The options offered; none means a free-text answer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
    /// The contact field the answer is saved to.
    pub save_to: String,
    /// Where each option leads; an option not listed goes to `next`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub answers: Vec<Answer>,
    /// Where any other accepted answer leads (a free-text answer, an option without its own
    /// branch); none ends the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    /// How many times an answer that is not one of the options is met by asking again.
    #[serde(default = "default_retries")]
    pub retries: u8,
    /// Where to go when the retries are spent; none ends the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_invalid: Option<String>,
    /// How long to wait for an answer, in minutes; none waits for ever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_minutes: Option<u32>,
    /// Where to go when the time is up (required with a timeout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_timeout: Option<String>,
}

fn default_retries() -> u8 {
    2
}

/// An option of a question and the step it leads to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Answer {
    /// One of the question's options.
    pub option: String,
    /// The step it leads to.
    pub next: String,
}

/// A branch: a condition and where it leads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Branch {
    /// When it is taken.
    pub when: Condition,
    /// The step it leads to.
    pub next: String,
}

/// A condition on the contact, the conversation or the time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Condition {
    /// Every one holds.
    All(Vec<Condition>),
    /// At least one holds.
    Any(Vec<Condition>),
    /// It does not hold.
    Not(Box<Condition>),
    /// The contact carries this tag.
    HasTag(String),
    /// A contact field equals a value (case-insensitive).
    FieldEquals {
        /// The field.
        field: String,
        /// The value.
        value: String,
    },
    /// The contact speaks this language (primary subtags compared: `pt-BR` is `pt`).
    LanguageIs(String),
    /// The conversation came in on this channel.
    ChannelIs(Channel),
    /// The conversation's first message contains this text (case-insensitive).
    MessageContains(String),
    /// The contact has had conversations before (`true`) or this is the first (`false`).
    ReturningContact(bool),
    /// Inside the business hours of a calendar (`true`) or outside them (`false`).
    WithinHours {
        /// The calendar's id; none means the workspace's.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        calendar: Option<i64>,
        /// Inside (`true`) or outside (`false`).
        open: bool,
    },
    /// The conversation's priority.
    PriorityIs(Priority),
}

/// What an assign step asks of the routing core, and what happens when nobody can take it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Assign {
    /// The team to assign in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<i64>,
    /// A dedicated agent (a VIP's account manager); with a team, the team takes it when the
    /// agent cannot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<i64>,
    /// The contact's previous agent first, when it can take it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub prefer_previous_agent: bool,
    /// The strategy; none means the team's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<Strategy>,
    /// Only online agents; none means the team's setting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub only_online: Option<bool>,
    /// Busy agents too.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub include_busy: bool,
    /// A cap on open conversations for this assignment, below the agents' own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cap: Option<u32>,
    /// Required skills, name to minimum level 1-5.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub skills: BTreeMap<String, u8>,
    /// Only agents who speak the contact's language.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub match_language: bool,
    /// When nobody can take it now.
    #[serde(default)]
    pub when_nobody: Nobody,
    /// Still waiting after some minutes: go to a step (overflow to another team).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overflow: Option<Overflow>,
    /// The assigned agent has not replied within some minutes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_reply: Option<NoReply>,
    /// When it waits in the queue: go to this step (an overcapacity message) instead of
    /// `next`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_queued: Option<String>,
    /// The step after the assignment (assigned, queued without `on_queued`, or left
    /// unassigned).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

impl Assign {
    /// The routing core's request for this step: the server's run worker, its dry run and
    /// the simulator all route with it. `None` when the step names no team and no agent
    /// (validation refuses such a step).
    pub fn request(
        &self,
        conversation: ConversationId,
        channel: Channel,
        priority: Priority,
        language: Option<String>,
        previous_agent: Option<AgentId>,
        now: Timestamp,
    ) -> Option<AssignRequest> {
        let team = self.team.map(TeamId);
        let when_nobody =
            if self.when_nobody == Nobody::Queue { WhenNobody::Queue } else { WhenNobody::LeaveUnassigned };
        let target = match (self.agent, team) {
            (Some(agent), Some(team)) => Target::Agent {
                agent: AgentId(agent),
                otherwise: Otherwise::Team { team, strategy: self.strategy },
            },
            (Some(agent), None) => Target::Agent {
                agent: AgentId(agent),
                otherwise: if when_nobody == WhenNobody::Queue {
                    Otherwise::WaitForAgent
                } else {
                    Otherwise::LeaveUnassigned
                },
            },
            (None, Some(team)) => Target::Team { team, strategy: self.strategy },
            (None, None) => return None,
        };
        Some(AssignRequest {
            conversation,
            channel,
            priority,
            arrived_at: now,
            target,
            previous_agent: if self.prefer_previous_agent { previous_agent } else { None },
            requirements: Requirements {
                skills: self
                    .skills
                    .iter()
                    .map(|(name, min_level)| SkillRequirement { name: name.clone(), min_level: *min_level })
                    .collect(),
                language: if self.match_language { language } else { None },
            },
            rules: Rules {
                only_online: self.only_online,
                include_busy: self.include_busy,
                cap: self.cap,
                ..Rules::default()
            },
            when_nobody,
        })
    }
}

/// What an assign step does when nobody can take the conversation now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Nobody {
    /// Wait in the queue, served as capacity frees up.
    #[default]
    Queue,
    /// Stay unassigned for agents to pick.
    LeaveUnassigned,
    /// Go to a step (an overcapacity message, another team).
    GoTo(String),
}

/// Overflow: still waiting after `after_minutes`, go to `go_to`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Overflow {
    /// Minutes of waiting.
    pub after_minutes: u32,
    /// The step to go to.
    pub go_to: String,
}

/// The assigned agent has not replied within `after_minutes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoReply {
    /// Minutes since the assignment.
    pub after_minutes: u32,
    /// What then.
    pub then: NoReplyThen,
}

/// What happens when the assigned agent has not replied in time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum NoReplyThen {
    /// Assign again, to the next agent (the silent one excluded).
    Reassign,
    /// Go to a step.
    GoTo(String),
}
