//! Checking a workflow before it is published: every referenced team, agent, calendar, field
//! and step exists, every value is in range, every step is reachable, and no path loops
//! without waiting for something (which would run for ever in an instant). Each problem names
//! its exact place in the document, like `steps.route.branches[2].next`, with a stable code.

use crate::document::{Ask, Assign, Condition, NoReplyThen, Nobody, Step, Trigger, Workflow};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// Limits on a document, each named so the API can document it.
pub mod limits {
    /// The most steps a workflow may have.
    pub const STEPS: usize = 200;
    /// The longest step name.
    pub const STEP_NAME_LEN: usize = 64;
    /// The longest workflow name, tag, field name, option or keyword.
    pub const NAME_LEN: usize = 200;
    /// The longest message, question or note, in bytes.
    pub const TEXT_LEN: usize = 4_096;
    /// The most options, answers, branches, keywords, tags or fields in one list.
    pub const LIST_LEN: usize = 50;
    /// How deep conditions may nest.
    pub const CONDITION_DEPTH: usize = 8;
    /// The longest wait, timeout, overflow or no-reply delay, in minutes (30 days).
    pub const MINUTES: u32 = 30 * 24 * 60;
    /// The most times a question may be asked again.
    pub const RETRIES: u8 = 10;
}

/// What the workspace has, for checking references.
#[derive(Debug, Clone, Default)]
pub struct Directory {
    /// Team ids of the workspace.
    pub teams: BTreeSet<i64>,
    /// Agent ids of the workspace.
    pub agents: BTreeSet<i64>,
    /// Calendar ids of the workspace.
    pub calendars: BTreeSet<i64>,
    /// Contact fields known to the workspace (besides those the workflow itself saves).
    pub contact_fields: BTreeSet<String>,
}

/// One problem with a document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// Where: `start`, `steps.ask.answers[1].option`, …
    pub path: String,
    /// A stable machine code, e.g. `unknown_step`.
    pub code: &'static str,
    /// A sentence for people.
    pub message: String,
}

/// The variables a text may use besides `field.NAME`.
pub const VARIABLES: &[&str] = &[
    "contact.name",
    "agent.name",
    "team.name",
    "queue.position",
    "queue.estimated_wait",
    "hours.next_opening",
];

struct Check<'a> {
    dir: &'a Directory,
    steps: &'a BTreeMap<String, Step>,
    /// Fields the workspace knows or the workflow saves.
    fields: BTreeSet<String>,
    problems: Vec<Problem>,
}

impl Check<'_> {
    fn problem(&mut self, path: impl Into<String>, code: &'static str, message: impl Into<String>) {
        self.problems.push(Problem { path: path.into(), code, message: message.into() });
    }

    fn name(&mut self, path: &str, value: &str) {
        if value.trim().is_empty() {
            self.problem(path, "empty", "must not be empty");
        } else if value.len() > limits::NAME_LEN {
            self.problem(path, "too_long", format!("longer than {} bytes", limits::NAME_LEN));
        } else if value.contains('\0') {
            self.problem(path, "invalid", "contains a NUL character");
        }
    }

    fn list_len(&mut self, path: &str, len: usize) -> bool {
        if len > limits::LIST_LEN {
            self.problem(path, "too_many", format!("at most {} entries", limits::LIST_LEN));
            return false;
        }
        true
    }

    fn minutes(&mut self, path: &str, minutes: u32) {
        if minutes == 0 || minutes > limits::MINUTES {
            self.problem(
                path,
                "out_of_range",
                format!("{minutes} is not between 1 and {} minutes", limits::MINUTES),
            );
        }
    }

    fn step_ref(&mut self, path: &str, target: &str) {
        if !self.steps.contains_key(target) {
            self.problem(path, "unknown_step", format!("there is no step {target:?}"));
        }
    }

    fn field(&mut self, path: &str, field: &str) {
        self.name(path, field);
        if !self.fields.contains(field) {
            self.problem(
                path,
                "unknown_field",
                format!("no contact field {field:?} is known or saved by this workflow"),
            );
        }
    }

    /// A text with `{{variables}}`.
    fn text(&mut self, path: &str, text: &str) {
        if text.trim().is_empty() {
            self.problem(path, "empty", "must not be empty");
            return;
        }
        if text.len() > limits::TEXT_LEN {
            self.problem(path, "too_long", format!("longer than {} bytes", limits::TEXT_LEN));
            return;
        }
        let mut rest = text;
        while let Some(open) = rest.find("{{") {
            let after = &rest[open + 2..];
            let Some(close) = after.find("}}") else {
                self.problem(path, "bad_template", "a {{ is never closed by }}");
                return;
            };
            let var = after[..close].trim();
            let known = VARIABLES.contains(&var)
                || var.strip_prefix("field.").is_some_and(|f| self.fields.contains(f));
            if !known {
                self.problem(
                    path,
                    "unknown_variable",
                    format!("{{{{{var}}}}} is not a variable (known: {}, field.NAME)", VARIABLES.join(", ")),
                );
            }
            rest = &after[close + 2..];
        }
    }

    fn condition(&mut self, path: &str, c: &Condition, depth: usize) {
        if depth > limits::CONDITION_DEPTH {
            self.problem(
                path,
                "too_deep",
                format!("conditions nest at most {} deep", limits::CONDITION_DEPTH),
            );
            return;
        }
        match c {
            Condition::All(list) | Condition::Any(list) => {
                let key = if matches!(c, Condition::All(_)) { "all" } else { "any" };
                if list.is_empty() {
                    self.problem(format!("{path}.{key}"), "empty", "needs at least one condition");
                }
                if self.list_len(&format!("{path}.{key}"), list.len()) {
                    for (i, inner) in list.iter().enumerate() {
                        self.condition(&format!("{path}.{key}[{i}]"), inner, depth + 1);
                    }
                }
            }
            Condition::Not(inner) => self.condition(&format!("{path}.not"), inner, depth + 1),
            Condition::HasTag(tag) => self.name(&format!("{path}.has_tag"), tag),
            Condition::FieldEquals { field, value } => {
                self.field(&format!("{path}.field_equals.field"), field);
                if value.len() > limits::NAME_LEN {
                    self.problem(format!("{path}.field_equals.value"), "too_long", "too long");
                }
            }
            Condition::LanguageIs(lang) => {
                let ok = !lang.is_empty()
                    && lang.len() <= 35
                    && lang.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_');
                if !ok {
                    self.problem(
                        format!("{path}.language_is"),
                        "invalid",
                        format!("{lang:?} is not a language tag"),
                    );
                }
            }
            Condition::MessageContains(text) => self.name(&format!("{path}.message_contains"), text),
            Condition::WithinHours { calendar: Some(id), .. } if !self.dir.calendars.contains(id) => {
                self.problem(
                    format!("{path}.within_hours.calendar"),
                    "unknown_calendar",
                    format!("there is no calendar {id}"),
                );
            }
            Condition::ChannelIs(_)
            | Condition::ReturningContact(_)
            | Condition::WithinHours { .. }
            | Condition::PriorityIs(_) => {}
        }
    }

    fn ask(&mut self, path: &str, a: &Ask) {
        self.text(&format!("{path}.text"), &a.text);
        self.name(&format!("{path}.save_to"), &a.save_to);
        if self.list_len(&format!("{path}.options"), a.options.len()) {
            let mut seen = BTreeSet::new();
            for (i, o) in a.options.iter().enumerate() {
                self.name(&format!("{path}.options[{i}]"), o);
                if !seen.insert(o.to_lowercase()) {
                    self.problem(
                        format!("{path}.options[{i}]"),
                        "duplicate",
                        format!("{o:?} is offered twice"),
                    );
                }
            }
        }
        if self.list_len(&format!("{path}.answers"), a.answers.len()) {
            let mut seen = BTreeSet::new();
            for (i, answer) in a.answers.iter().enumerate() {
                let here = format!("{path}.answers[{i}]");
                if !a.options.iter().any(|o| o.eq_ignore_ascii_case(&answer.option)) {
                    self.problem(
                        format!("{here}.option"),
                        "unknown_option",
                        format!("{:?} is not one of the options", answer.option),
                    );
                } else if !seen.insert(answer.option.to_lowercase()) {
                    self.problem(
                        format!("{here}.option"),
                        "duplicate",
                        format!("{:?} has two answers", answer.option),
                    );
                }
                self.step_ref(&format!("{here}.next"), &answer.next);
            }
        }
        if a.retries > limits::RETRIES {
            self.problem(format!("{path}.retries"), "out_of_range", format!("at most {}", limits::RETRIES));
        }
        if a.options.is_empty() && a.on_invalid.is_some() {
            self.problem(
                format!("{path}.on_invalid"),
                "conflict",
                "a free-text question accepts every answer",
            );
        }
        for (key, target) in [("next", &a.next), ("on_invalid", &a.on_invalid), ("on_timeout", &a.on_timeout)]
        {
            if let Some(t) = target {
                self.step_ref(&format!("{path}.{key}"), t);
            }
        }
        match (a.timeout_minutes, &a.on_timeout) {
            (Some(m), Some(_)) => self.minutes(&format!("{path}.timeout_minutes"), m),
            (Some(_), None) => {
                self.problem(format!("{path}.on_timeout"), "missing", "a timeout needs the step to go to")
            }
            (None, Some(_)) => {
                self.problem(format!("{path}.timeout_minutes"), "missing", "on_timeout needs a timeout")
            }
            (None, None) => {}
        }
    }

    fn assign(&mut self, path: &str, a: &Assign) {
        match (a.team, a.agent) {
            (None, None) => {
                self.problem(path.to_string(), "no_target", "an assign step names a team, an agent, or both")
            }
            (team, agent) => {
                if let Some(t) = team.filter(|t| !self.dir.teams.contains(t)) {
                    self.problem(format!("{path}.team"), "unknown_team", format!("there is no team {t}"));
                }
                if let Some(x) = agent.filter(|x| !self.dir.agents.contains(x)) {
                    self.problem(format!("{path}.agent"), "unknown_agent", format!("there is no agent {x}"));
                }
            }
        }
        if a.prefer_previous_agent && a.team.is_none() {
            self.problem(
                format!("{path}.prefer_previous_agent"),
                "conflict",
                "the previous agent is looked for in a team",
            );
        }
        if a.cap == Some(0) {
            self.problem(format!("{path}.cap"), "out_of_range", "a cap of 0 assigns nobody");
        }
        if self.list_len(&format!("{path}.skills"), a.skills.len()) {
            for (name, level) in &a.skills {
                let here = format!("{path}.skills.{name}");
                self.name(&here, name);
                if !(1..=5).contains(level) {
                    self.problem(here, "out_of_range", format!("level {level} is not between 1 and 5"));
                }
            }
        }
        if let Nobody::GoTo(t) = &a.when_nobody {
            self.step_ref(&format!("{path}.when_nobody.go_to"), t);
        }
        if let Some(o) = &a.overflow {
            self.minutes(&format!("{path}.overflow.after_minutes"), o.after_minutes);
            self.step_ref(&format!("{path}.overflow.go_to"), &o.go_to);
            if a.when_nobody != Nobody::Queue {
                self.problem(
                    format!("{path}.overflow"),
                    "conflict",
                    "only a conversation that waits in the queue can overflow",
                );
            }
        }
        if let Some(n) = &a.no_reply {
            self.minutes(&format!("{path}.no_reply.after_minutes"), n.after_minutes);
            if let NoReplyThen::GoTo(t) = &n.then {
                self.step_ref(&format!("{path}.no_reply.then.go_to"), t);
            }
        }
        if let Some(t) = &a.on_queued {
            self.step_ref(&format!("{path}.on_queued"), t);
            if a.when_nobody != Nobody::Queue {
                self.problem(
                    format!("{path}.on_queued"),
                    "conflict",
                    "only a conversation that waits in the queue is queued",
                );
            }
        }
        if let Some(t) = &a.next {
            self.step_ref(&format!("{path}.next"), t);
        }
    }

    fn step(&mut self, name: &str, step: &Step) {
        let path = format!("steps.{name}");
        if name.is_empty()
            || name.len() > limits::STEP_NAME_LEN
            || !name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
        {
            self.problem(
                path.clone(),
                "invalid_step_name",
                format!("step names are 1 to {} of a-z, 0-9, _ and -", limits::STEP_NAME_LEN),
            );
        }
        match step {
            Step::SendMessage { text, options, next } => {
                self.text(&format!("{path}.text"), text);
                if self.list_len(&format!("{path}.options"), options.len()) {
                    for (i, o) in options.iter().enumerate() {
                        self.name(&format!("{path}.options[{i}]"), o);
                    }
                }
                if let Some(t) = next {
                    self.step_ref(&format!("{path}.next"), t);
                }
            }
            Step::Ask(a) => self.ask(&path, a),
            Step::Branch { branches, otherwise } => {
                if branches.is_empty() {
                    self.problem(format!("{path}.branches"), "empty", "needs at least one branch");
                }
                if self.list_len(&format!("{path}.branches"), branches.len()) {
                    for (i, b) in branches.iter().enumerate() {
                        self.condition(&format!("{path}.branches[{i}].when"), &b.when, 1);
                        self.step_ref(&format!("{path}.branches[{i}].next"), &b.next);
                    }
                }
                self.step_ref(&format!("{path}.otherwise"), otherwise);
            }
            Step::Assign(a) => self.assign(&path, a),
            Step::Wait { minutes, next } => {
                self.minutes(&format!("{path}.minutes"), *minutes);
                self.step_ref(&format!("{path}.next"), next);
            }
            Step::Unassign { next } | Step::Note { next, .. } => {
                if let Step::Note { text, .. } = step {
                    self.text(&format!("{path}.text"), text);
                }
                if let Some(t) = next {
                    self.step_ref(&format!("{path}.next"), t);
                }
            }
            Step::Close => {}
            Step::UpdateContact { add_tags, remove_tags, fields, next, .. } => {
                for (key, tags) in [("add_tags", add_tags), ("remove_tags", remove_tags)] {
                    if self.list_len(&format!("{path}.{key}"), tags.len()) {
                        for (i, t) in tags.iter().enumerate() {
                            self.name(&format!("{path}.{key}[{i}]"), t);
                        }
                    }
                }
                if self.list_len(&format!("{path}.fields"), fields.len()) {
                    for (f, v) in fields {
                        self.name(&format!("{path}.fields.{f}"), f);
                        if v.len() > limits::NAME_LEN {
                            self.problem(format!("{path}.fields.{f}"), "too_long", "the value is too long");
                        }
                    }
                }
                if let Some(t) = next {
                    self.step_ref(&format!("{path}.next"), t);
                }
            }
            Step::Jump { to } => self.step_ref(&format!("{path}.to"), to),
        }
    }
}

/// Where a step leads: (the key in the step that names it, the step named).
pub type Successors<'a> = Vec<(&'static str, &'a str)>;

/// The steps a step can lead to, each with the place in the document that names it.
pub fn successors(step: &Step) -> Successors<'_> {
    fn push<'a>(out: &mut Vec<(&'static str, &'a str)>, key: &'static str, t: &'a Option<String>) {
        if let Some(t) = t {
            out.push((key, t.as_str()));
        }
    }
    let mut out: Vec<(&'static str, &str)> = Vec::new();
    match step {
        Step::SendMessage { next, .. }
        | Step::Unassign { next }
        | Step::Note { next, .. }
        | Step::UpdateContact { next, .. } => push(&mut out, "next", next),
        Step::Ask(a) => {
            push(&mut out, "next", &a.next);
            push(&mut out, "on_invalid", &a.on_invalid);
            push(&mut out, "on_timeout", &a.on_timeout);
            for answer in &a.answers {
                out.push(("answers", answer.next.as_str()));
            }
        }
        Step::Branch { branches, otherwise } => {
            for b in branches {
                out.push(("branches", b.next.as_str()));
            }
            out.push(("otherwise", otherwise.as_str()));
        }
        Step::Assign(a) => {
            push(&mut out, "next", &a.next);
            push(&mut out, "on_queued", &a.on_queued);
            if let Nobody::GoTo(t) = &a.when_nobody {
                out.push(("when_nobody.go_to", t.as_str()));
            }
            if let Some(o) = &a.overflow {
                out.push(("overflow.go_to", o.go_to.as_str()));
            }
            if let Some(NoReplyThen::GoTo(t)) = a.no_reply.as_ref().map(|n| &n.then) {
                out.push(("no_reply.then.go_to", t.as_str()));
            }
        }
        Step::Wait { next, .. } => out.push(("next", next.as_str())),
        Step::Jump { to } => out.push(("to", to.as_str())),
        Step::Close => {}
    }
    out
}

/// Whether a step waits for something outside the run (an answer, time) before it goes on;
/// a loop through such a step is a loop in time, not an endless one.
pub fn waits(step: &Step) -> bool {
    matches!(step, Step::Ask(_) | Step::Wait { .. })
}

/// Checks a workflow against what the workspace has. No problems: it may be published.
pub fn validate(w: &Workflow, dir: &Directory) -> Vec<Problem> {
    let mut fields = dir.contact_fields.clone();
    for step in w.steps.values() {
        match step {
            Step::Ask(a) => {
                fields.insert(a.save_to.clone());
            }
            Step::UpdateContact { fields: set, .. } => fields.extend(set.keys().cloned()),
            _ => {}
        }
    }
    let mut c = Check { dir, steps: &w.steps, fields, problems: Vec::new() };
    c.name("name", &w.name);
    match &w.trigger {
        Trigger::MessageReceived { keywords } => {
            if c.list_len("trigger.keywords", keywords.len()) {
                for (i, k) in keywords.iter().enumerate() {
                    c.name(&format!("trigger.keywords[{i}]"), k);
                }
            }
        }
        Trigger::ContactChanged { tags, fields } => {
            for (key, list) in [("tags", tags), ("fields", fields)] {
                if c.list_len(&format!("trigger.{key}"), list.len()) {
                    for (i, k) in list.iter().enumerate() {
                        c.name(&format!("trigger.{key}[{i}]"), k);
                    }
                }
            }
        }
        Trigger::ConversationOpened | Trigger::ConversationClosed | Trigger::Manual => {}
    }
    if w.steps.is_empty() {
        c.problem("steps", "empty", "a workflow needs at least one step");
    }
    if w.steps.len() > limits::STEPS {
        c.problem("steps", "too_many", format!("at most {} steps", limits::STEPS));
        return c.problems;
    }
    c.step_ref("start", &w.start);
    for (name, step) in &w.steps {
        c.step(name, step);
    }
    let mut problems = c.problems;
    problems.extend(graph(w));
    problems
}

/// Reachability from `start` and loops that never wait.
fn graph(w: &Workflow) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut reached: BTreeSet<&str> = BTreeSet::new();
    let mut todo: Vec<&str> = vec![w.start.as_str()];
    while let Some(s) = todo.pop() {
        if !w.steps.contains_key(s) || !reached.insert(s) {
            continue;
        }
        if let Some(step) = w.steps.get(s) {
            todo.extend(successors(step).into_iter().map(|(_, t)| t));
        }
    }
    for name in w.steps.keys() {
        if !reached.contains(name.as_str()) && w.steps.contains_key(&w.start) {
            problems.push(Problem {
                path: format!("steps.{name}"),
                code: "unreachable",
                message: format!("no path from the start step {:?} leads here", w.start),
            });
        }
    }
    // Depth-first over the steps that do not wait: an edge back to a step on the current
    // path closes a loop that would run for ever without waiting for anything.
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnPath,
        Done,
    }
    let mut mark: BTreeMap<&str, Mark> = w.steps.keys().map(|k| (k.as_str(), Mark::New)).collect();
    for root in w.steps.keys() {
        if mark.get(root.as_str()) != Some(&Mark::New) {
            continue;
        }
        // (step, its successors, the next successor to visit)
        let mut stack: Vec<(&str, Successors<'_>, usize)> = Vec::new();
        let enter = |name: &str| -> Successors<'_> {
            match w.steps.get(name) {
                Some(step) if !waits(step) => successors(step),
                _ => Vec::new(),
            }
        };
        mark.insert(root.as_str(), Mark::OnPath);
        stack.push((root.as_str(), enter(root), 0));
        while let Some(top) = stack.last_mut() {
            let from = top.0;
            let Some(&(key, target)) = top.1.get(top.2) else {
                mark.insert(from, Mark::Done);
                stack.pop();
                continue;
            };
            top.2 += 1;
            match mark.get(target) {
                Some(Mark::OnPath) => problems.push(Problem {
                    path: format!("steps.{from}.{key}"),
                    code: "endless_loop",
                    message: format!(
                        "leads back to {target:?} without a step that waits (a question or a wait), so the run would never stop"
                    ),
                }),
                Some(Mark::New) => {
                    mark.insert(target, Mark::OnPath);
                    stack.push((target, enter(target), 0));
                }
                _ => {}
            }
        }
    }
    problems
}
