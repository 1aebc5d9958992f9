//! Ready-made workflows, one for each pattern the seeds describe, for a business to use at
//! once and then edit. A template needs a few of the workspace's own things (a team, a second
//! team, a dedicated agent, a calendar); [`instantiate`] fills them in and returns an ordinary
//! document, which validates like any other.

use crate::document::Workflow;
use serde::Serialize;
use serde_json::{json, Value};

/// What a template needs from the workspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Needs {
    /// A team to assign in.
    Team,
    /// A second team (another queue, another language).
    SecondTeam,
    /// A dedicated agent.
    Agent,
    /// A calendar of business hours.
    Calendar,
}

/// A template as the API lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Template {
    /// Its key, e.g. `round_robin_online_only`.
    pub key: &'static str,
    /// Its title.
    pub title: &'static str,
    /// What it does and when to choose it.
    pub description: &'static str,
    /// What it needs from the workspace.
    pub needs: &'static [Needs],
}

/// The ids a template is filled in with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Params {
    /// The team.
    pub team: Option<i64>,
    /// A second team.
    pub second_team: Option<i64>,
    /// A dedicated agent.
    pub agent: Option<i64>,
    /// A calendar.
    pub calendar: Option<i64>,
}

/// Why a template could not be filled in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// No template has that key.
    #[error("there is no template {0:?}")]
    Unknown(String),
    /// The template needs something the parameters lack.
    #[error("the template needs a {0:?}")]
    Missing(Needs),
}

/// Every template.
pub const TEMPLATES: &[Template] = &[
    Template {
        key: "round_robin_online_only",
        title: "Assignment: Round Robin + Online Only",
        description: "Low cost: greets the contact, then hands conversations to online agents in turn, so each gets an equal share and answers come fast.",
        needs: &[Needs::Team],
    },
    Template {
        key: "least_open_online_only",
        title: "Assignment: Least Open Contacts + Online Only",
        description: "High quality: greets the contact, then gives the conversation to the online agent with the fewest open conversations, so nobody is swamped.",
        needs: &[Needs::Team],
    },
    Template {
        key: "sales_lead_rotation",
        title: "Sales lead rotation",
        description: "Every new lead goes to the next salesperson by their reception ratio (weights), busy ones included, and is told who will call.",
        needs: &[Needs::Team],
    },
    Template {
        key: "menu_then_team",
        title: "Menu question, then the right team",
        description: "Asks what the contact needs (Refund, Change, Order inquiry, as the airline example), saves the answer and routes each option to its team; asks again on an unexpected answer.",
        needs: &[Needs::Team, Needs::SecondTeam],
    },
    Template {
        key: "vip_dedicated_agent",
        title: "VIP contacts to their dedicated agent",
        description: "Contacts tagged vip go to their account manager; when that agent cannot take them, the team does.",
        needs: &[Needs::Team, Needs::Agent],
    },
    Template {
        key: "returning_previous_agent",
        title: "Returning contacts to their previous agent",
        description: "A contact who wrote before goes back to the agent who helped them, if that agent can take it; new contacts go by least open contacts.",
        needs: &[Needs::Team],
    },
    Template {
        key: "business_hours_away",
        title: "Business hours away message",
        description: "Outside business hours the contact is told when you open, and the conversation waits for the opening instead of going to nobody.",
        needs: &[Needs::Team, Needs::Calendar],
    },
    Template {
        key: "overcapacity_message",
        title: "Overcapacity message",
        description: "When every agent is at capacity the contact is told their place in the queue and the estimated wait; after 15 minutes the conversation overflows to a second team.",
        needs: &[Needs::Team, Needs::SecondTeam],
    },
    Template {
        key: "assigned_agent_message",
        title: "Assigned-to-agent message",
        description: "Tells the contact which agent took the conversation and when to expect a reply; if that agent stays silent for 10 minutes, the next one takes it.",
        needs: &[Needs::Team],
    },
    Template {
        key: "unassign_on_close",
        title: "Unassign when a conversation closes",
        description: "When a conversation closes, its agent is released and the contact tagged as served, so the next conversation starts fresh.",
        needs: &[],
    },
    Template {
        key: "route_by_language",
        title: "Route by language",
        description: "French-speaking contacts go to the second team, everyone else to the first; within a team only agents who speak the contact's language.",
        needs: &[Needs::Team, Needs::SecondTeam],
    },
];

fn need(value: Option<i64>, what: Needs) -> Result<i64, TemplateError> {
    value.ok_or(TemplateError::Missing(what))
}

/// Fills in the template `key`.
pub fn instantiate(key: &str, p: &Params) -> Result<Workflow, TemplateError> {
    let template =
        TEMPLATES.iter().find(|t| t.key == key).ok_or_else(|| TemplateError::Unknown(key.into()))?;
    let team = || need(p.team, Needs::Team);
    let second = || need(p.second_team, Needs::SecondTeam);
    let opened = json!({ "kind": "conversation_opened" });
    let greet = |next: &str| json!({ "kind": "send_message", "text": "Hi {{contact.name}}, thanks for your message! Someone will be with you shortly.", "next": next });
    let doc: Value = match key {
        "round_robin_online_only" | "least_open_online_only" => {
            let strategy = if key == "round_robin_online_only" { "round_robin" } else { "least_open" };
            json!({ "name": template.title, "trigger": opened, "start": "welcome", "steps": {
                "welcome": greet("assign"),
                "assign": { "kind": "assign", "team": team()?, "strategy": strategy, "only_online": true }
            }})
        }
        "sales_lead_rotation" => {
            json!({ "name": template.title, "trigger": opened, "start": "assign", "steps": {
                "assign": { "kind": "assign", "team": team()?, "strategy": "weighted", "include_busy": true, "next": "told" },
                "told": { "kind": "send_message", "text": "Thanks! {{agent.name}} from {{team.name}} will get back to you." }
            }})
        }
        "menu_then_team" => json!({ "name": template.title, "trigger": opened, "start": "ask", "steps": {
            "ask": { "kind": "ask", "text": "Hi {{contact.name}}! What can we help you with?",
                     "options": ["Refund", "Change", "Order inquiry"], "save_to": "need", "retries": 2,
                     "on_invalid": "general", "timeout_minutes": 60, "on_timeout": "general",
                     "answers": [{ "option": "Refund", "next": "refunds" }, { "option": "Change", "next": "general" }],
                     "next": "general" },
            "refunds": { "kind": "assign", "team": second()? },
            "general": { "kind": "assign", "team": team()? }
        }}),
        "vip_dedicated_agent" => {
            json!({ "name": template.title, "trigger": opened, "start": "route", "steps": {
                "route": { "kind": "branch", "branches": [{ "when": { "has_tag": "vip" }, "next": "vip" }], "otherwise": "team" },
                "vip": { "kind": "assign", "agent": need(p.agent, Needs::Agent)?, "team": team()? },
                "team": { "kind": "assign", "team": team()? }
            }})
        }
        "returning_previous_agent" => {
            json!({ "name": template.title, "trigger": opened, "start": "route", "steps": {
                "route": { "kind": "branch", "branches": [{ "when": { "returning_contact": true }, "next": "previous" }], "otherwise": "new" },
                "previous": { "kind": "assign", "team": team()?, "prefer_previous_agent": true },
                "new": { "kind": "assign", "team": team()?, "strategy": "least_open" }
            }})
        }
        "business_hours_away" => {
            let calendar = need(p.calendar, Needs::Calendar)?;
            json!({ "name": template.title, "trigger": opened, "start": "hours", "steps": {
                "hours": { "kind": "branch",
                           "branches": [{ "when": { "within_hours": { "calendar": calendar, "open": true } }, "next": "assign" }],
                           "otherwise": "away" },
                "away": { "kind": "send_message", "text": "Thanks for your message! We are closed now and open {{hours.next_opening}}; we will answer then.", "next": "wait" },
                "wait": { "kind": "wait", "minutes": 15, "next": "check" },
                "check": { "kind": "branch",
                           "branches": [{ "when": { "within_hours": { "calendar": calendar, "open": true } }, "next": "assign" }],
                           "otherwise": "wait" },
                "assign": { "kind": "assign", "team": team()? }
            }})
        }
        "overcapacity_message" => {
            json!({ "name": template.title, "trigger": opened, "start": "assign", "steps": {
                "assign": { "kind": "assign", "team": team()?, "when_nobody": "queue",
                            "overflow": { "after_minutes": 15, "go_to": "overflow" }, "on_queued": "busy" },
                "busy": { "kind": "send_message", "text": "All our agents are busy. You are number {{queue.position}} in line; the wait is about {{queue.estimated_wait}}." },
                "overflow": { "kind": "assign", "team": second()? }
            }})
        }
        "assigned_agent_message" => {
            json!({ "name": template.title, "trigger": opened, "start": "assign", "steps": {
                "assign": { "kind": "assign", "team": team()?, "no_reply": { "after_minutes": 10, "then": "reassign" }, "next": "told" },
                "told": { "kind": "send_message", "text": "{{agent.name}} is taking care of your conversation and usually replies within a few minutes." }
            }})
        }
        "unassign_on_close" => {
            json!({ "name": template.title, "trigger": { "kind": "conversation_closed" }, "start": "unassign", "steps": {
                "unassign": { "kind": "unassign", "next": "tag" },
                "tag": { "kind": "update_contact", "add_tags": ["served"] }
            }})
        }
        "route_by_language" => {
            json!({ "name": template.title, "trigger": opened, "start": "route", "steps": {
                "route": { "kind": "branch", "branches": [{ "when": { "language_is": "fr" }, "next": "french" }], "otherwise": "others" },
                "french": { "kind": "assign", "team": second()?, "match_language": true },
                "others": { "kind": "assign", "team": team()?, "match_language": true, "when_nobody": { "go_to": "anyone" } },
                "anyone": { "kind": "assign", "team": team()? }
            }})
        }
        _ => return Err(TemplateError::Unknown(key.into())),
    };
    // The documents above are this crate's own: a failure here is a bug the tests catch.
    serde_json::from_value(doc).map_err(|_| TemplateError::Unknown(key.into()))
}
