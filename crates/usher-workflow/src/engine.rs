//! Running a workflow: a pure state machine. Given a published workflow, a run's state, what
//! just happened ([`Input`]), the facts about the conversation ([`Facts`]) and the time, it
//! returns the run's next state and the [`Effect`]s to carry out (send this message, assign
//! with these settings, set a timer for then). It does nothing itself: the shell carries out
//! the effects (in the same transaction as the run's new state, so each happens once) and
//! reports back what came of them (the routing outcome, the contact's answer, a due timer).
//!
//! A run stands at one step. Steps that act at once (messages, branches, contact updates,
//! notes, jumps) run through in one [`advance`]; a question, a wait and an assignment make the
//! run wait for an answer, a timer or the routing outcome. An assignment may also leave
//! *watches* behind that outlive the step: still queued after N minutes (overflow), or the
//! agent silent N minutes after the assignment (no reply). When a watch fires, the run jumps
//! to its step (or reassigns), even if it had finished.
//!
//! Every step taken is written to the advance's trace, so a dry run can say exactly what a
//! workflow would do for a contact and a message.

use crate::document::{Ask, Assign, Condition, NoReplyThen, Nobody, Step, Workflow};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use thiserror::Error;
use usher_core::calendar::Calendar;
use usher_core::model::{AgentId, Channel, Priority, Timestamp};

/// The most steps one advance runs through (validation forbids loops that never wait; this
/// bounds a document that slipped past it anyway).
pub const STEPS_PER_ADVANCE: usize = 1_000;

/// A run's state, stored by the shell between advances.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    /// Where the run stands.
    pub status: RunStatus,
    /// Watches an assignment left behind.
    #[serde(default)]
    pub watches: Vec<Watch>,
}

/// Where a run stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum RunStatus {
    /// Not started yet.
    New,
    /// Waiting at a step.
    Waiting {
        /// The step.
        step: String,
        /// For what.
        until: Until,
    },
    /// Ended (watches may still bring it back).
    Finished,
}

/// What a waiting run waits for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "for", rename_all = "snake_case")]
pub enum Until {
    /// The contact's answer to a question, asked `asked` times so far.
    Answer {
        /// How many times it was asked.
        asked: u8,
        /// When it times out, if it does.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        deadline: Option<Timestamp>,
    },
    /// A moment (a wait step).
    Time {
        /// When it goes on.
        at: Timestamp,
    },
    /// The routing outcome of the assignment it asked for.
    Assignment,
}

/// A watch an assignment leaves on the run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "watch", rename_all = "snake_case")]
pub enum Watch {
    /// Still waiting in the queue at `at`: go to `go_to`.
    Overflow {
        /// When it fires.
        at: Timestamp,
        /// Where it leads.
        go_to: String,
        /// The assign step that queued it (whose no-reply watch starts when an agent takes
        /// it from the queue).
        step: String,
    },
    /// The agent has not replied by `at`.
    NoReply {
        /// When it fires.
        at: Timestamp,
        /// The assign step whose settings apply.
        step: String,
        /// The agent who was assigned.
        agent: AgentId,
    },
}

impl Watch {
    fn at(&self) -> Timestamp {
        match self {
            Watch::Overflow { at, .. } | Watch::NoReply { at, .. } => *at,
        }
    }
}

/// What happened, for the run to go on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "input", rename_all = "snake_case")]
pub enum Input {
    /// The trigger fired (or a person started it).
    Start,
    /// The contact sent a message.
    Message {
        /// Its text.
        text: String,
    },
    /// A timer the run asked for is due.
    Timer,
    /// The routing outcome of the assignment the run asked for: assigned to an agent.
    Assigned {
        /// Who.
        agent: AgentId,
    },
    /// The routing outcome: waiting in the queue.
    Queued,
    /// The routing outcome: nobody took it; it stays unassigned.
    Unassigned,
    /// The assigned agent replied to the contact.
    AgentReplied,
}

/// What the shell is to do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "effect", rename_all = "snake_case")]
pub enum Effect {
    /// Send the contact a message.
    SendMessage {
        /// The text, variables filled in.
        text: String,
        /// Quick replies.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        options: Vec<String>,
    },
    /// Add an internal note.
    Note {
        /// The text, variables filled in.
        text: String,
    },
    /// Route the conversation with these settings, then report the outcome.
    Assign {
        /// The settings (the step's own, `when_nobody` resolved for the routing core:
        /// a `go_to` asks the core to leave it unassigned).
        settings: Box<Assign>,
        /// Agents not to pick (a reassignment after silence).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        exclude: Vec<AgentId>,
    },
    /// Take the conversation from its agent.
    Unassign,
    /// Close the conversation.
    Close,
    /// Save a contact field.
    SaveField {
        /// The field.
        field: String,
        /// The value.
        value: String,
    },
    /// Change the contact.
    UpdateContact {
        /// Tags to add.
        add_tags: Vec<String>,
        /// Tags to remove.
        remove_tags: Vec<String>,
        /// Fields to set.
        fields: BTreeMap<String, String>,
        /// A new priority.
        priority: Option<Priority>,
    },
    /// Wake the run at `at` (with [`Input::Timer`]).
    Timer {
        /// When.
        at: Timestamp,
    },
}

/// What the engine knows about the conversation and its contact.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// The contact's name.
    pub contact_name: Option<String>,
    /// The contact's language tag.
    pub language: Option<String>,
    /// The contact's tags.
    pub tags: BTreeSet<String>,
    /// The contact's fields.
    pub fields: BTreeMap<String, String>,
    /// Whether the contact had conversations before.
    pub returning: bool,
    /// The channel.
    pub channel: Option<Channel>,
    /// The conversation's first message.
    pub first_message: Option<String>,
    /// The conversation's priority.
    pub priority: Priority,
    /// The assigned agent's name, if one is.
    pub agent_name: Option<String>,
    /// The team's name.
    pub team_name: Option<String>,
    /// The place in the queue and the estimated wait in seconds, if queued.
    pub queue: Option<(u32, Option<u64>)>,
    /// The workspace's business hours (none: always open).
    pub hours: Option<Calendar>,
    /// Other calendars by id.
    pub calendars: BTreeMap<i64, Calendar>,
}

/// One line of an advance's trace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceLine {
    /// The step.
    pub step: String,
    /// What it did, for people.
    pub did: String,
}

/// The result of an advance.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Advance {
    /// The run's new state.
    pub run: Run,
    /// What to do, in order.
    pub effects: Vec<Effect>,
    /// What happened, step by step.
    pub trace: Vec<TraceLine>,
}

/// Why an advance could not be made (a document that was not validated, or an input that
/// does not fit the run's state, which the shell should not send).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EngineError {
    /// The document names a step it does not have.
    #[error("the workflow has no step {0:?}")]
    UnknownStep(String),
    /// More than [`STEPS_PER_ADVANCE`] steps without waiting.
    #[error("more than {STEPS_PER_ADVANCE} steps without waiting (a loop)")]
    Endless,
}

impl Run {
    /// A run that has not started.
    pub fn new() -> Run {
        Run { status: RunStatus::New, watches: Vec::new() }
    }

    /// The earliest moment the run wants to be woken, if any.
    pub fn next_timer(&self) -> Option<Timestamp> {
        let own = match &self.status {
            RunStatus::Waiting { until: Until::Time { at }, .. } => Some(*at),
            RunStatus::Waiting { until: Until::Answer { deadline, .. }, .. } => *deadline,
            _ => None,
        };
        own.into_iter().chain(self.watches.iter().map(Watch::at)).min()
    }
}

impl Default for Run {
    fn default() -> Run {
        Run::new()
    }
}

struct Machine<'a> {
    w: &'a Workflow,
    facts: Facts,
    now: Timestamp,
    effects: Vec<Effect>,
    trace: Vec<TraceLine>,
    watches: Vec<Watch>,
}

fn minutes(now: Timestamp, m: u32) -> Timestamp {
    Timestamp(now.0.saturating_add(i64::from(m) * 60_000))
}

fn primary(tag: &str) -> String {
    tag.split(['-', '_']).next().unwrap_or_default().to_ascii_lowercase()
}

impl Machine<'_> {
    fn note(&mut self, step: &str, did: impl Into<String>) {
        self.trace.push(TraceLine { step: step.to_string(), did: did.into() });
    }

    fn step(&self, name: &str) -> Result<&Step, EngineError> {
        self.w.steps.get(name).ok_or_else(|| EngineError::UnknownStep(name.to_string()))
    }

    /// Fills in `{{variables}}`; an unknown one (validation refuses them) is left as it is.
    fn render(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(open) = rest.find("{{") {
            out.push_str(&rest[..open]);
            let after = &rest[open + 2..];
            let Some(close) = after.find("}}") else {
                out.push_str(&rest[open..]);
                return out;
            };
            let var = after[..close].trim();
            match self.variable(var) {
                Some(v) => out.push_str(&v),
                None => out.push_str(&rest[open..open + 2 + close + 2]),
            }
            rest = &after[close + 2..];
        }
        out.push_str(rest);
        out
    }

    fn variable(&self, var: &str) -> Option<String> {
        let f = &self.facts;
        Some(match var {
            "contact.name" => f.contact_name.clone().unwrap_or_else(|| "there".into()),
            "agent.name" => f.agent_name.clone().unwrap_or_else(|| "an agent".into()),
            "team.name" => f.team_name.clone().unwrap_or_else(|| "our team".into()),
            "queue.position" => f.queue.map_or_else(|| "-".into(), |(p, _)| p.to_string()),
            "queue.estimated_wait" => match f.queue.and_then(|(_, e)| e) {
                Some(s) if s < 90 => "a minute".into(),
                Some(s) => format!("{} minutes", s.div_ceil(60)),
                None => "a few minutes".into(),
            },
            "hours.next_opening" => match &f.hours {
                None => "now".into(),
                Some(c) => match c.next_opening(self.now) {
                    None => "later".into(),
                    Some(t) if t == self.now => "now".into(),
                    Some(t) => chrono::DateTime::from_timestamp_millis(t.0)
                        .map(|utc| utc.with_timezone(&c.time_zone()).format("%A %H:%M").to_string())
                        .unwrap_or_else(|| "later".into()),
                },
            },
            other => {
                return other.strip_prefix("field.").map(|k| f.fields.get(k).cloned().unwrap_or_default())
            }
        })
    }

    fn holds(&self, c: &Condition) -> bool {
        let f = &self.facts;
        match c {
            Condition::All(list) => list.iter().all(|c| self.holds(c)),
            Condition::Any(list) => list.iter().any(|c| self.holds(c)),
            Condition::Not(c) => !self.holds(c),
            Condition::HasTag(t) => f.tags.iter().any(|x| x.eq_ignore_ascii_case(t)),
            Condition::FieldEquals { field, value } => {
                f.fields.get(field).map_or(value.is_empty(), |v| v.trim().eq_ignore_ascii_case(value.trim()))
            }
            Condition::LanguageIs(l) => f.language.as_deref().is_some_and(|x| primary(x) == primary(l)),
            Condition::ChannelIs(ch) => f.channel == Some(*ch),
            Condition::MessageContains(text) => {
                f.first_message.as_deref().is_some_and(|m| m.to_lowercase().contains(&text.to_lowercase()))
            }
            Condition::ReturningContact(r) => f.returning == *r,
            Condition::WithinHours { calendar, open } => {
                let cal = match calendar {
                    Some(id) => f.calendars.get(id),
                    None => f.hours.as_ref(),
                };
                cal.is_none_or(|c| c.is_open(self.now)) == *open
            }
            Condition::PriorityIs(p) => f.priority == *p,
        }
    }

    /// Runs from `start` until a step waits or the run ends.
    fn run_from(&mut self, start: &str) -> Result<RunStatus, EngineError> {
        let mut at = start.to_string();
        for _ in 0..STEPS_PER_ADVANCE {
            let step = self.step(&at)?.clone();
            let next = match step {
                Step::SendMessage { text, options, next } => {
                    let text = self.render(&text);
                    self.note(&at, format!("sent {text:?}"));
                    self.effects.push(Effect::SendMessage { text, options });
                    next
                }
                Step::Note { text, next } => {
                    let text = self.render(&text);
                    self.note(&at, "added a note");
                    self.effects.push(Effect::Note { text });
                    next
                }
                Step::Ask(a) => {
                    self.ask(&at, &a);
                    let deadline = a.timeout_minutes.map(|m| minutes(self.now, m));
                    if let Some(d) = deadline {
                        self.effects.push(Effect::Timer { at: d });
                    }
                    return Ok(RunStatus::Waiting { step: at, until: Until::Answer { asked: 1, deadline } });
                }
                Step::Branch { branches, otherwise } => {
                    let taken = branches.iter().position(|b| self.holds(&b.when));
                    let next = taken.map_or(otherwise.clone(), |i| branches[i].next.clone());
                    match taken {
                        Some(i) => self.note(&at, format!("branch {} held: to {next}", i + 1)),
                        None => self.note(&at, format!("no branch held: otherwise to {next}")),
                    }
                    Some(next)
                }
                Step::Assign(a) => {
                    let mut settings = a.clone();
                    if matches!(a.when_nobody, Nobody::GoTo(_)) {
                        settings.when_nobody = Nobody::LeaveUnassigned;
                    }
                    self.note(&at, "asked for an assignment");
                    self.effects.push(Effect::Assign { settings: Box::new(settings), exclude: Vec::new() });
                    return Ok(RunStatus::Waiting { step: at, until: Until::Assignment });
                }
                Step::Wait { minutes: m, .. } => {
                    let until = minutes(self.now, m);
                    self.note(&at, format!("waits {m} minutes"));
                    self.effects.push(Effect::Timer { at: until });
                    return Ok(RunStatus::Waiting { step: at, until: Until::Time { at: until } });
                }
                Step::Unassign { next } => {
                    self.note(&at, "unassigned the conversation");
                    self.effects.push(Effect::Unassign);
                    next
                }
                Step::Close => {
                    self.note(&at, "closed the conversation");
                    self.effects.push(Effect::Close);
                    self.watches.clear();
                    return Ok(RunStatus::Finished);
                }
                Step::UpdateContact { add_tags, remove_tags, fields, priority, next } => {
                    for t in &add_tags {
                        self.facts.tags.insert(t.clone());
                    }
                    for t in &remove_tags {
                        self.facts.tags.retain(|x| !x.eq_ignore_ascii_case(t));
                    }
                    let fields: BTreeMap<String, String> =
                        fields.iter().map(|(k, v)| (k.clone(), self.render(v))).collect();
                    for (k, v) in &fields {
                        if v.is_empty() {
                            self.facts.fields.remove(k);
                        } else {
                            self.facts.fields.insert(k.clone(), v.clone());
                        }
                    }
                    if let Some(p) = priority {
                        self.facts.priority = p;
                    }
                    self.note(&at, "updated the contact");
                    self.effects.push(Effect::UpdateContact { add_tags, remove_tags, fields, priority });
                    next
                }
                Step::Jump { to } => {
                    self.note(&at, format!("jumped to {to}"));
                    Some(to)
                }
            };
            match next {
                Some(n) => at = n,
                None => {
                    self.note(&at, "the run ends");
                    return Ok(RunStatus::Finished);
                }
            }
        }
        Err(EngineError::Endless)
    }

    fn ask(&mut self, at: &str, a: &Ask) {
        let text = self.render(&a.text);
        self.note(at, format!("asked {text:?}"));
        self.effects.push(Effect::SendMessage { text, options: a.options.clone() });
    }

    /// The contact answered the question at `at`.
    fn answer(
        &mut self,
        at: &str,
        a: &Ask,
        asked: u8,
        deadline: Option<Timestamp>,
        text: &str,
    ) -> Result<RunStatus, EngineError> {
        let given = text.trim();
        let chosen = if a.options.is_empty() {
            Some(given.to_string())
        } else {
            // The option itself, or its number (1 for the first).
            a.options
                .iter()
                .find(|o| o.eq_ignore_ascii_case(given))
                .or_else(|| {
                    given.parse::<usize>().ok().and_then(|n| n.checked_sub(1)).and_then(|i| a.options.get(i))
                })
                .cloned()
        };
        let Some(value) = chosen else {
            if asked <= a.retries {
                self.note(at, format!("{given:?} is not an option: asked again"));
                self.ask(at, a);
                return Ok(RunStatus::Waiting {
                    step: at.to_string(),
                    until: Until::Answer { asked: asked + 1, deadline },
                });
            }
            self.note(at, format!("{given:?} is not an option, and the retries are spent"));
            return self.go(a.on_invalid.clone());
        };
        self.facts.fields.insert(a.save_to.clone(), value.clone());
        self.effects.push(Effect::SaveField { field: a.save_to.clone(), value: value.clone() });
        let next = a.answers.iter().find(|x| x.option.eq_ignore_ascii_case(&value)).map(|x| x.next.clone());
        self.note(at, format!("answered {value:?}"));
        self.go(next.or_else(|| a.next.clone()))
    }

    fn go(&mut self, next: Option<String>) -> Result<RunStatus, EngineError> {
        match next {
            Some(n) => self.run_from(&n),
            None => Ok(RunStatus::Finished),
        }
    }

    /// The routing outcome of the assign step at `at`.
    fn outcome(&mut self, at: &str, a: &Assign, input: &Input) -> Result<RunStatus, EngineError> {
        match input {
            Input::Assigned { agent } => {
                self.note(at, format!("assigned to agent {}", agent.0));
                self.watches.retain(|w| !matches!(w, Watch::Overflow { .. }));
                if let Some(n) = &a.no_reply {
                    let due = minutes(self.now, n.after_minutes);
                    self.watches.push(Watch::NoReply { at: due, step: at.to_string(), agent: *agent });
                    self.effects.push(Effect::Timer { at: due });
                }
                self.go(a.next.clone())
            }
            Input::Queued => {
                self.note(at, "waits in the queue");
                if let Some(o) = &a.overflow {
                    let due = minutes(self.now, o.after_minutes);
                    self.watches.push(Watch::Overflow {
                        at: due,
                        go_to: o.go_to.clone(),
                        step: at.to_string(),
                    });
                    self.effects.push(Effect::Timer { at: due });
                }
                self.go(a.on_queued.clone().or_else(|| a.next.clone()))
            }
            _ => match &a.when_nobody {
                Nobody::GoTo(step) => {
                    self.note(at, format!("nobody can take it: to {step}"));
                    self.run_from(step)
                }
                _ => {
                    self.note(at, "nobody can take it: left for agents to pick");
                    self.go(a.next.clone())
                }
            },
        }
    }

    /// Fires the watches that are due; returns where the run goes, if one moves it.
    fn fire_watches(&mut self) -> Result<Option<RunStatus>, EngineError> {
        let now = self.now;
        let (due, later): (Vec<Watch>, Vec<Watch>) =
            std::mem::take(&mut self.watches).into_iter().partition(|w| w.at() <= now);
        self.watches = later;
        let mut moved = None;
        for w in due {
            match w {
                Watch::Overflow { go_to, .. } => {
                    self.note(&go_to, "still waiting: overflow");
                    moved = Some(self.run_from(&go_to)?);
                }
                Watch::NoReply { step, agent, .. } => {
                    let Step::Assign(a) = self.step(&step)?.clone() else { continue };
                    match a.no_reply.as_ref().map(|n| &n.then) {
                        Some(NoReplyThen::GoTo(to)) => {
                            self.note(&step, format!("agent {} did not reply: to {to}", agent.0));
                            moved = Some(self.run_from(to)?);
                        }
                        _ => {
                            self.note(&step, format!("agent {} did not reply: reassigned", agent.0));
                            let mut settings = a.clone();
                            if matches!(a.when_nobody, Nobody::GoTo(_)) {
                                settings.when_nobody = Nobody::LeaveUnassigned;
                            }
                            self.effects
                                .push(Effect::Assign { settings: Box::new(settings), exclude: vec![agent] });
                            moved = Some(RunStatus::Waiting { step, until: Until::Assignment });
                        }
                    }
                }
            }
        }
        Ok(moved)
    }
}

/// Takes a run one event further. Pure: the same arguments give the same result.
pub fn advance(
    w: &Workflow,
    run: &Run,
    input: &Input,
    facts: &Facts,
    now: Timestamp,
) -> Result<Advance, EngineError> {
    let mut m = Machine {
        w,
        facts: facts.clone(),
        now,
        effects: Vec::new(),
        trace: Vec::new(),
        watches: run.watches.clone(),
    };
    if *input == Input::AgentReplied {
        m.watches.retain(|x| !matches!(x, Watch::NoReply { .. }));
    }
    let status = match (&run.status, input) {
        (RunStatus::New, Input::Start) => m.run_from(&w.start)?,
        (RunStatus::Waiting { step, until: Until::Answer { asked, deadline } }, Input::Message { text }) => {
            match m.step(step)?.clone() {
                Step::Ask(a) => m.answer(step, &a, *asked, *deadline, text)?,
                _ => run.status.clone(),
            }
        }
        (RunStatus::Waiting { step, until: Until::Answer { deadline: Some(d), .. } }, Input::Timer)
            if *d <= now =>
        {
            match m.step(step)?.clone() {
                Step::Ask(a) => {
                    m.note(step, "no answer in time");
                    m.go(a.on_timeout.clone())?
                }
                _ => run.status.clone(),
            }
        }
        (RunStatus::Waiting { step, until: Until::Time { at } }, Input::Timer) if *at <= now => {
            match m.step(step)?.clone() {
                Step::Wait { next, .. } => {
                    m.note(step, "waited");
                    m.run_from(&next)?
                }
                _ => run.status.clone(),
            }
        }
        (
            RunStatus::Waiting { step, until: Until::Assignment },
            Input::Assigned { .. } | Input::Queued | Input::Unassigned,
        ) => match m.step(step)?.clone() {
            Step::Assign(a) => m.outcome(step, &a, input)?,
            _ => run.status.clone(),
        },
        (_, Input::Assigned { agent }) => {
            // Taken from the queue later: the overflow no longer applies, and the no-reply
            // watch of the step that queued it starts now.
            let queued_by: Vec<String> = m
                .watches
                .iter()
                .filter_map(|x| match x {
                    Watch::Overflow { step, .. } => Some(step.clone()),
                    Watch::NoReply { .. } => None,
                })
                .collect();
            m.watches.retain(|x| !matches!(x, Watch::Overflow { .. }));
            for step in queued_by {
                if let Step::Assign(Assign { no_reply: Some(n), .. }) = m.step(&step)?.clone() {
                    let due = minutes(now, n.after_minutes);
                    m.note(&step, format!("assigned to agent {} from the queue", agent.0));
                    m.watches.push(Watch::NoReply { at: due, step, agent: *agent });
                    m.effects.push(Effect::Timer { at: due });
                }
            }
            run.status.clone()
        }
        _ => run.status.clone(),
    };
    let status = match input {
        Input::Timer => m.fire_watches()?.unwrap_or(status),
        _ => status,
    };
    Ok(Advance { run: Run { status, watches: m.watches }, effects: m.effects, trace: m.trace })
}
