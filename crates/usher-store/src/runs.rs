//! Workflow runs, durably: the imperative shell around `usher_workflow::engine`.
//!
//! A run is a row holding the engine's state and the effects it asked for that are not yet
//! carried out. [`Store::process_run`] takes one step at a time, each in one transaction: it
//! carries out the next pending effect (sends the message, routes the conversation, …) *and*
//! takes it off the list in the same transaction, so an effect happens once even across a
//! crash; an effect that produces an input for the engine (the routing outcome) is fed back
//! in the same transaction, and what the engine asks next joins the list. With nothing
//! pending, a due timer is fed. `wake_at` says when the run next needs attention (now, when
//! effects wait; its next timer otherwise), so the timer worker of any node finds due runs
//! with one indexed query, and on PostgreSQL takes each with `FOR UPDATE SKIP LOCKED`, so
//! two nodes never step the same run at once. The command that started or fed a run steps it
//! too before it answers, and waits for a worker that holds it rather than skipping it.
//!
//! Runs start when a published, enabled workflow's trigger fires: so far when a contact opens
//! a conversation (in the opening's own transaction, replacing the team's default
//! assignment) and the contact's messages answer its questions.

use crate::db::{append_events, Backend, PendingEvent, Store, Tx};
use crate::error::StoreError;
use crate::routing::{parse_enum, Routed};
use crate::sql::query;
use crate::types::{rfc3339, Millis};
use crate::workflows::assign_request;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use usher_core::manual::{self, Status};
use usher_core::model::{AgentId, Channel, ConversationId, Priority};
use usher_workflow::engine::{advance, Effect, Facts, Input, Run, RunStatus, Until, Watch};
use usher_workflow::{Trigger, Workflow};

/// The most steps one call of [`Store::process_run`] takes before it leaves the rest to the
/// worker (a run cannot hog a request).
const STEPS_PER_CALL: usize = 64;

/// Whether a step waits for a run another transaction holds, or leaves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Take {
    Wait,
    Skip,
}
/// How many due runs the worker takes per round.
pub const DUE_BATCH: i64 = 100;

/// What a run row keeps: the engine's state and the effects still to carry out.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct RunState {
    run: Run,
    #[serde(default)]
    pending: VecDeque<Effect>,
}

/// A run as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct RunRecord {
    /// Its id.
    pub id: i64,
    /// The workflow and the version it runs.
    pub workflow: i64,
    /// The version it started on.
    pub version: i64,
    /// The conversation.
    pub conversation: i64,
    /// `active`, `finished` or `failed`.
    pub status: String,
    /// Where the engine stands.
    pub state: Run,
    /// Effects not carried out yet.
    pub pending: Vec<Effect>,
    /// Why it failed, if it did.
    pub error: Option<String>,
    /// When it next needs attention (RFC 3339).
    pub wake_at: Option<String>,
    /// Its history, step by step.
    pub steps: Vec<RunStep>,
}

/// One step of a run's history.
#[derive(Debug, Clone, Serialize)]
pub struct RunStep {
    /// Its number, from 1.
    pub seq: i64,
    /// When (RFC 3339).
    pub at: String,
    /// What happened.
    pub input: serde_json::Value,
    /// What the engine asked for.
    pub effects: serde_json::Value,
    /// The steps taken, in words.
    pub trace: serde_json::Value,
}

/// A workflow a trigger found: its id, the version that runs, the document.
type Found = (i64, i64, Workflow);

impl Store {
    /// Published workflows with the version that runs: every enabled one of the workspace
    /// (lowest id first), or the one named, enabled or not (a manual start).
    async fn published(&self, ws: i64, only: Option<i64>) -> Result<Vec<Found>, StoreError> {
        let which = if only.is_some() { "w.id = $2" } else { "w.enabled = 1" };
        let rows = query(&format!(
            "SELECT w.id, v.version, v.document FROM workflows w JOIN workflow_versions v \
             ON v.workflow_id = w.id AND v.version = w.published_version \
             WHERE w.workspace_id = $1 AND {which} ORDER BY w.id"
        ))
        .bind(ws)
        .bind(only.unwrap_or(0))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("id")?, r.try_get("version")?, crate::db::json_col(r, "document")?)))
            .collect()
    }

    /// The enabled workflows' published documents, by id: what routes the workspace's
    /// conversations (the first whose trigger fires and channels match runs).
    pub async fn published_workflows(&self, ws: i64) -> Result<Vec<usher_workflow::Workflow>, StoreError> {
        Ok(self.published(ws, None).await?.into_iter().map(|(_, _, doc)| doc).collect())
    }

    /// The first enabled, published workflow (lowest id) whose trigger `fires` and whose
    /// channels include `channel`.
    pub(crate) async fn triggered_workflow(
        &self,
        ws: i64,
        channel: Channel,
        fires: impl Fn(&Trigger) -> bool,
    ) -> Result<Option<Found>, StoreError> {
        let rows = self.published(ws, None).await?;
        Ok(rows.into_iter().find(|(_, _, doc)| {
            fires(&doc.trigger) && (doc.channels.is_empty() || doc.channels.contains(&channel))
        }))
    }

    /// The workflow a contact's opening starts.
    pub(crate) async fn opened_workflow(
        &self,
        ws: i64,
        channel: Channel,
    ) -> Result<Option<Found>, StoreError> {
        self.triggered_workflow(ws, channel, |t| *t == Trigger::ConversationOpened).await
    }

    /// Starts a run of `found` for an existing conversation in a transaction of its own, and
    /// steps it.
    async fn start_and_process(
        &self,
        ws: i64,
        found: &Found,
        conversation: i64,
        now: Millis,
    ) -> Result<i64, StoreError> {
        let mut tx = self.begin().await?;
        let run = self.start_run(&mut tx, ws, found, conversation, now).await?;
        tx.commit().await?;
        self.process_run(ws, run, now).await?;
        Ok(run)
    }

    /// A trigger fired for a conversation (closed, a contact's message): the matching
    /// workflow, if any, starts a run.
    pub(crate) async fn fire(
        &self,
        ws: i64,
        conversation: i64,
        fires: impl Fn(&Trigger) -> bool,
        now: Millis,
    ) -> Result<Option<i64>, StoreError> {
        // The workflows first: with none that this trigger fires (the usual case on a busy
        // path like closing), the conversation is not even read.
        let candidates: Vec<Found> =
            self.published(ws, None).await?.into_iter().filter(|f| fires(&f.2.trigger)).collect();
        if candidates.is_empty() {
            return Ok(None);
        }
        let channel: Channel = parse_enum(
            &query("SELECT channel FROM conversations WHERE id = $1 AND workspace_id = $2")
                .bind(conversation)
                .bind(ws)
                .fetch_one(&self.pool)
                .await?
                .try_get::<String, _>(0)?,
        )?;
        match candidates
            .into_iter()
            .find(|(_, _, doc)| doc.channels.is_empty() || doc.channels.contains(&channel))
        {
            Some(found) => Ok(Some(self.start_and_process(ws, &found, conversation, now).await?)),
            None => Ok(None),
        }
    }

    /// Starts a workflow with a manual trigger for one conversation (by hand or by the API).
    pub async fn start_manual_run(
        &self,
        ws: i64,
        workflow: i64,
        conversation: i64,
        now: Millis,
    ) -> Result<RunRecord, StoreError> {
        self.conversation(ws, conversation, now).await?;
        let found = self.published(ws, Some(workflow)).await?.into_iter().next().ok_or_else(|| {
            StoreError::conflict("not_published", format!("workflow {workflow} has no published version"))
        })?;
        if found.2.trigger != Trigger::Manual {
            return Err(StoreError::conflict(
                "not_manual",
                "only a workflow whose trigger is manual is started by hand",
            ));
        }
        let run = self.start_and_process(ws, &found, conversation, now).await?;
        self.run(ws, run).await
    }

    /// What the engine needs to know about a conversation, read inside `tx` (so it sees what
    /// this transaction changed).
    async fn facts(&self, tx: &mut Tx, ws: i64, conversation: i64) -> Result<Facts, StoreError> {
        let row = query(
            "SELECT c.status, c.priority, c.channel, c.message, c.team_id, c.priority_rank, c.queued_at, \
             k.id AS contact_id, k.name, k.language, k.tags, k.attributes, \
             (SELECT COUNT(*) FROM conversations o WHERE o.contact_id = k.id AND o.id < c.id) AS earlier, \
             a.name AS agent_name, t.name AS team_name \
             FROM conversations c JOIN contacts k ON k.id = c.contact_id \
             LEFT JOIN agents a ON a.id = c.assignee_id LEFT JOIN teams t ON t.id = c.team_id \
             WHERE c.id = $1 AND c.workspace_id = $2",
        )
        .bind(conversation)
        .bind(ws)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or_else(|| StoreError::not_found(format!("conversation {conversation}")))?;
        let status: Status = parse_enum(&row.try_get::<String, _>("status")?)?;
        let queue = if status == Status::Queued {
            let ahead: i64 = query(
                "SELECT COUNT(*) FROM conversations WHERE status = 'queued' AND team_id = $1 \
                 AND (priority_rank < $2 OR (priority_rank = $2 AND (queued_at < $3 OR (queued_at = $3 AND id < $4))))",
            )
            .bind(row.try_get::<Option<i64>, _>("team_id")?)
            .bind(row.try_get::<i64, _>("priority_rank")?)
            .bind(row.try_get::<i64, _>("queued_at")?)
            .bind(conversation)
            .fetch_one(&mut **tx)
            .await?
            .try_get(0)?;
            Some((u32::try_from(ahead + 1).unwrap_or(u32::MAX), None))
        } else {
            None
        };
        let (hours, calendars) = self.calendar_facts(ws).await?;
        let tags: Vec<String> = crate::db::json_col(&row, "tags")?;
        Ok(Facts {
            contact_name: row.try_get("name")?,
            language: row.try_get("language")?,
            tags: tags.into_iter().collect::<BTreeSet<_>>(),
            fields: crate::db::json_col(&row, "attributes")?,
            returning: row.try_get::<i64, _>("earlier")? > 0,
            channel: Some(parse_enum(&row.try_get::<String, _>("channel")?)?),
            first_message: row.try_get("message")?,
            priority: parse_enum(&row.try_get::<String, _>("priority")?)?,
            agent_name: row.try_get("agent_name")?,
            team_name: row.try_get("team_name")?,
            queue,
            hours,
            calendars,
        })
    }

    /// Starts a run of `found` for a conversation just opened, inside the opening's
    /// transaction: the engine's first advance is taken and its effects wait, to be carried
    /// out by [`Store::process_run`] right after the commit (or by the worker after a crash).
    pub(crate) async fn start_run(
        &self,
        tx: &mut Tx,
        ws: i64,
        found: &Found,
        conversation: i64,
        now: Millis,
    ) -> Result<i64, StoreError> {
        let (workflow, version, doc) = found;
        let facts = self.facts(tx, ws, conversation).await?;
        let step = advance(doc, &Run::new(), &Input::Start, &facts, usher_core::model::Timestamp(now))
            .map_err(|e| StoreError::invalid("workflow_failed", e.to_string()))?;
        let state = RunState { run: step.run.clone(), pending: step.effects.iter().cloned().collect() };
        let id: i64 = query(
            "INSERT INTO runs (workspace_id, workflow_id, version, conversation_id, status, state, wake_at, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, 'active', $5, $6, $7, $7) RETURNING id",
        )
        .bind(ws)
        .bind(*workflow)
        .bind(*version)
        .bind(conversation)
        .bind(serde_json::to_string(&state)?)
        .bind(wake_at(&state, now))
        .bind(now)
        .fetch_one(&mut **tx)
        .await?
        .try_get(0)?;
        self.record_step(tx, id, now, &Input::Start, &step.effects, &step.trace).await?;
        let event = PendingEvent::new("run.started")
            .conversation(conversation)
            .data(json!({ "run": id, "workflow": workflow, "version": version }));
        append_events(tx, ws, now, &[event]).await?;
        Ok(id)
    }

    async fn record_step(
        &self,
        tx: &mut Tx,
        run: i64,
        now: Millis,
        input: &Input,
        effects: &[Effect],
        trace: &[usher_workflow::engine::TraceLine],
    ) -> Result<(), StoreError> {
        query(
            "INSERT INTO run_steps (run_id, seq, at, input, effects, trace) \
             VALUES ($1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM run_steps WHERE run_id = $1), $2, $3, $4, $5)",
        )
        .bind(run)
        .bind(now)
        .bind(serde_json::to_string(input)?)
        .bind(serde_json::to_string(effects)?)
        .bind(serde_json::to_string(trace)?)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// Feeds an outside input (a contact's message, an agent's reply) to the conversation's
    /// active runs, then steps them. Returns whether one of them was waiting for an answer
    /// (so a contact's message was one).
    pub(crate) async fn feed_runs(
        &self,
        ws: i64,
        conversation: i64,
        input: &Input,
        now: Millis,
    ) -> Result<bool, StoreError> {
        let rows =
            query("SELECT id, state FROM runs WHERE conversation_id = $1 AND status = 'active' ORDER BY id")
                .bind(conversation)
                .fetch_all(&self.pool)
                .await?;
        let mut answered = false;
        for r in &rows {
            let id: i64 = r.try_get("id")?;
            let state: RunState = crate::db::json_col(r, "state")?;
            answered |= matches!(state.run.status, RunStatus::Waiting { until: Until::Answer { .. }, .. });
            crate::db::retrying!(self.step_run(ws, id, Some(input), Take::Wait, now).await)?;
            self.process_run(ws, id, now).await?;
        }
        Ok(answered)
    }

    /// The runs due at `now` (the worker's round).
    pub async fn due_runs(&self, now: Millis) -> Result<Vec<(i64, i64)>, StoreError> {
        let sql = format!(
            "SELECT id, workspace_id FROM runs WHERE wake_at <= $1 AND status = 'active' ORDER BY wake_at LIMIT {DUE_BATCH}"
        );
        query(&sql)
            .bind(now)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| Ok((r.try_get::<i64, _>(0)?, r.try_get::<i64, _>(1)?)))
            .collect()
    }

    /// Steps a run until it waits for something outside (an answer, a timer) or ends: what a
    /// command does right after its commit, before it answers. Should a worker hold the run
    /// at that moment, it waits for the worker's step and goes on, so that the answer comes
    /// after the run's immediate effects (the greeting, the assignment), not before.
    pub async fn process_run(&self, ws: i64, id: i64, now: Millis) -> Result<(), StoreError> {
        self.process(ws, id, now, Take::Wait).await
    }

    /// The worker's [`Store::process_run`]: a run another node (or a command) holds is left
    /// to it.
    pub async fn process_due_run(&self, ws: i64, id: i64, now: Millis) -> Result<(), StoreError> {
        self.process(ws, id, now, Take::Skip).await
    }

    async fn process(&self, ws: i64, id: i64, now: Millis, take: Take) -> Result<(), StoreError> {
        for _ in 0..STEPS_PER_CALL {
            match crate::db::retrying!(self.step_run(ws, id, None, take, now).await) {
                Ok(true) => continue,
                Ok(false) => return Ok(()),
                Err(e)
                    if matches!(
                        e,
                        StoreError::Database(_) | StoreError::Sqlite(_) | StoreError::Commit(_)
                    ) =>
                {
                    return Err(e)
                }
                Err(e) => {
                    // The workflow cannot go on (a team it names was deleted, say): the run
                    // fails, visibly, instead of being retried for ever.
                    let mut tx = self.begin().await?;
                    query("UPDATE runs SET status = 'failed', error = $1, wake_at = NULL, updated_at = $2 WHERE id = $3")
                        .bind(e.to_string())
                        .bind(now)
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                    tx.commit().await?;
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// One step of a run in one transaction: the outside `input` if given, else the next
    /// pending effect, else a due timer. Returns whether there may be more to do now.
    async fn step_run(
        &self,
        ws: i64,
        id: i64,
        input: Option<&Input>,
        take: Take,
        now: Millis,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin().await?;
        let lock = match self.backend {
            Backend::Postgres if input.is_none() && take == Take::Skip => " FOR UPDATE SKIP LOCKED",
            Backend::Postgres => " FOR UPDATE",
            Backend::Sqlite => "",
        };
        let Some(row) = query(&format!(
            "SELECT r.conversation_id, r.status, r.state, v.document FROM runs r JOIN workflow_versions v \
             ON v.workflow_id = r.workflow_id AND v.version = r.version WHERE r.id = $1 AND r.workspace_id = $2{lock}"
        ))
        .bind(id)
        .bind(ws)
        .fetch_optional(&mut *tx)
        .await?
        else {
            // Another node holds it (or it is gone): nothing to do here.
            tx.rollback().await?;
            return Ok(false);
        };
        if row.try_get::<String, _>("status")? != "active" {
            tx.rollback().await?;
            return Ok(false);
        }
        let conversation: i64 = row.try_get("conversation_id")?;
        let doc: Workflow = crate::db::json_col(&row, "document")?;
        let mut state: RunState = crate::db::json_col(&row, "state")?;
        let ts = usher_core::model::Timestamp(now);
        let mut feed: Option<Input> = input.cloned();
        if feed.is_none() {
            if let Some(effect) = state.pending.pop_front() {
                feed = self.carry_out(&mut tx, ws, conversation, &effect, now).await?;
                if feed.is_none() {
                    self.save_run(&mut tx, ws, id, conversation, &state, now).await?;
                    tx.commit().await?;
                    return Ok(true);
                }
            } else if state.run.next_timer().is_some_and(|t| t <= ts) {
                // Taken from the queue meanwhile? Then the overflow no longer applies; the
                // engine hears of it before the timer.
                if let Some(agent) = self.taken_since_queued(&mut tx, &state.run, conversation).await? {
                    let facts = self.facts(&mut tx, ws, conversation).await?;
                    let taken = Input::Assigned { agent: AgentId(agent) };
                    self.feed_engine(&mut tx, id, &doc, &mut state, &taken, &facts, now).await?;
                    self.feed_engine(&mut tx, id, &doc, &mut state, &Input::Timer, &facts, now).await?;
                    self.save_run(&mut tx, ws, id, conversation, &state, now).await?;
                    tx.commit().await?;
                    return Ok(!state.pending.is_empty());
                }
                feed = Some(Input::Timer);
            } else {
                tx.rollback().await?;
                return Ok(false);
            }
        }
        let input = feed.unwrap_or(Input::Timer);
        let facts = self.facts(&mut tx, ws, conversation).await?;
        self.feed_engine(&mut tx, id, &doc, &mut state, &input, &facts, now).await?;
        self.save_run(&mut tx, ws, id, conversation, &state, now).await?;
        tx.commit().await?;
        Ok(!state.pending.is_empty())
    }

    /// One advance of the engine: its new state kept, what it asks for queued, the step
    /// written to the run's history.
    #[allow(clippy::too_many_arguments)] // the parts of one advance, each used once
    async fn feed_engine(
        &self,
        tx: &mut Tx,
        id: i64,
        doc: &Workflow,
        state: &mut RunState,
        input: &Input,
        facts: &Facts,
        now: Millis,
    ) -> Result<(), StoreError> {
        let step = advance(doc, &state.run, input, facts, usher_core::model::Timestamp(now))
            .map_err(|e| StoreError::invalid("workflow_failed", e.to_string()))?;
        self.record_step(tx, id, now, input, &step.effects, &step.trace).await?;
        state.run = step.run;
        state.pending.extend(step.effects);
        Ok(())
    }

    /// Whether a run watching for overflow sees its conversation assigned since (the agent).
    async fn taken_since_queued(
        &self,
        tx: &mut Tx,
        run: &Run,
        conversation: i64,
    ) -> Result<Option<i64>, StoreError> {
        if !run.watches.iter().any(|w| matches!(w, Watch::Overflow { .. })) {
            return Ok(None);
        }
        let row = query("SELECT status, assignee_id FROM conversations WHERE id = $1")
            .bind(conversation)
            .fetch_one(&mut **tx)
            .await?;
        Ok(match row.try_get::<String, _>("status")?.as_str() {
            "assigned" => row.try_get("assignee_id")?,
            _ => None,
        })
    }

    async fn save_run(
        &self,
        tx: &mut Tx,
        ws: i64,
        id: i64,
        conversation: i64,
        state: &RunState,
        now: Millis,
    ) -> Result<(), StoreError> {
        let finished = state.pending.is_empty()
            && state.run.status == RunStatus::Finished
            && state.run.watches.is_empty();
        query("UPDATE runs SET state = $1, status = $2, wake_at = $3, updated_at = $4 WHERE id = $5")
            .bind(serde_json::to_string(state)?)
            .bind(if finished { "finished" } else { "active" })
            .bind(if finished { None } else { wake_at(state, now) })
            .bind(now)
            .bind(id)
            .execute(&mut **tx)
            .await?;
        if finished {
            let event =
                PendingEvent::new("run.finished").conversation(conversation).data(json!({ "run": id }));
            append_events(tx, ws, now, &[event]).await?;
        }
        Ok(())
    }

    /// Carries out one effect inside `tx`; returns the input it produced for the engine (the
    /// routing outcome of an assignment).
    async fn carry_out(
        &self,
        tx: &mut Tx,
        ws: i64,
        conversation: i64,
        effect: &Effect,
        now: Millis,
    ) -> Result<Option<Input>, StoreError> {
        match effect {
            Effect::SendMessage { text, options } => {
                self.workflow_message(tx, ws, conversation, "outbound", text, options, now).await?;
                Ok(None)
            }
            Effect::Note { text } => {
                self.workflow_message(tx, ws, conversation, "internal", text, &[], now).await?;
                Ok(None)
            }
            Effect::SaveField { field, value } => {
                let fields = BTreeMap::from([(field.clone(), value.clone())]);
                self.change_contact(tx, ws, conversation, &[], &[], &fields, None, now).await?;
                Ok(None)
            }
            Effect::UpdateContact { add_tags, remove_tags, fields, priority } => {
                self.change_contact(tx, ws, conversation, add_tags, remove_tags, fields, *priority, now)
                    .await?;
                Ok(None)
            }
            Effect::Timer { .. } => Ok(None),
            Effect::Assign { settings, exclude } => {
                let facts = self.facts(tx, ws, conversation).await?;
                let previous: Option<i64> = query(
                    "SELECT k.last_agent_id FROM conversations c JOIN contacts k ON k.id = c.contact_id WHERE c.id = $1",
                )
                .bind(conversation)
                .fetch_one(&mut **tx)
                .await?
                .try_get(0)?;
                let request = assign_request(
                    settings,
                    ConversationId(conversation),
                    facts.channel.unwrap_or(Channel::WebChat),
                    facts.priority,
                    facts.language.clone(),
                    previous,
                    now,
                )?;
                let exclude: Vec<i64> = exclude.iter().map(|a| a.0).collect();
                Ok(Some(match self.route_in(tx, ws, request, &exclude, now).await? {
                    Routed::Assigned(a) => Input::Assigned { agent: AgentId(a) },
                    Routed::Queued => Input::Queued,
                    Routed::Unassigned => Input::Unassigned,
                }))
            }
            Effect::Unassign => {
                let held: Option<i64> = query("SELECT assignee_id FROM conversations WHERE id = $1")
                    .bind(conversation)
                    .fetch_one(&mut **tx)
                    .await?
                    .try_get(0)?;
                if held.is_some() {
                    let op = |_: &usher_core::Snapshot, c: manual::Conversation, _: usher_core::Context| {
                        manual::unassign(c)
                    };
                    self.manual_in(tx, ws, conversation, now, "conversation.unassigned", None, &op).await?;
                }
                Ok(None)
            }
            Effect::Close => {
                let status: String = query("SELECT status FROM conversations WHERE id = $1")
                    .bind(conversation)
                    .fetch_one(&mut **tx)
                    .await?
                    .try_get(0)?;
                if status != "closed" {
                    let op = |_: &usher_core::Snapshot, c: manual::Conversation, _: usher_core::Context| {
                        manual::close(c)
                    };
                    self.manual_in(tx, ws, conversation, now, "conversation.closed", None, &op).await?;
                }
                Ok(None)
            }
        }
    }

    #[allow(clippy::too_many_arguments)] // the parts of one message, each used once
    async fn workflow_message(
        &self,
        tx: &mut Tx,
        ws: i64,
        conversation: i64,
        direction: &str,
        text: &str,
        options: &[String],
        now: Millis,
    ) -> Result<(), StoreError> {
        let id: i64 = query(
            "INSERT INTO messages (workspace_id, conversation_id, direction, author, agent_id, text, created_at) \
             VALUES ($1, $2, $3, 'workflow', NULL, $4, $5) RETURNING id",
        )
        .bind(ws)
        .bind(conversation)
        .bind(direction)
        .bind(text)
        .bind(now)
        .fetch_one(&mut **tx)
        .await?
        .try_get(0)?;
        let kind = if direction == "internal" { "note.added" } else { "message.sent" };
        let event = PendingEvent::new(kind)
            .conversation(conversation)
            .data(json!({ "message": id, "author": "workflow", "options": options }));
        append_events(tx, ws, now, &[event]).await
    }

    #[allow(clippy::too_many_arguments)] // the parts of one change, each used once
    async fn change_contact(
        &self,
        tx: &mut Tx,
        ws: i64,
        conversation: i64,
        add: &[String],
        remove: &[String],
        fields: &BTreeMap<String, String>,
        priority: Option<Priority>,
        now: Millis,
    ) -> Result<(), StoreError> {
        let row = query(
            "SELECT k.id, k.tags, k.attributes FROM conversations c JOIN contacts k ON k.id = c.contact_id WHERE c.id = $1",
        )
        .bind(conversation)
        .fetch_one(&mut **tx)
        .await?;
        let contact: i64 = row.try_get("id")?;
        let mut tags: Vec<String> = crate::db::json_col(&row, "tags")?;
        let mut attributes: BTreeMap<String, String> = crate::db::json_col(&row, "attributes")?;
        for t in add {
            if !tags.iter().any(|x| x.eq_ignore_ascii_case(t)) && tags.len() < crate::limits::LIST_LEN {
                tags.push(t.clone());
            }
        }
        tags.retain(|x| !remove.iter().any(|r| r.eq_ignore_ascii_case(x)));
        for (k, v) in fields {
            if v.is_empty() {
                attributes.remove(k);
            } else if attributes.len() < crate::limits::LIST_LEN || attributes.contains_key(k) {
                attributes.insert(k.clone(), v.chars().take(crate::limits::NAME_LEN).collect());
            }
            query("INSERT INTO contact_fields (workspace_id, name) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                .bind(ws)
                .bind(k)
                .execute(&mut **tx)
                .await?;
        }
        query("UPDATE contacts SET tags = $1, attributes = $2 WHERE id = $3")
            .bind(serde_json::to_string(&tags)?)
            .bind(serde_json::to_string(&attributes)?)
            .bind(contact)
            .execute(&mut **tx)
            .await?;
        if let Some(p) = priority {
            query("UPDATE conversations SET priority = $1, priority_rank = $2 WHERE id = $3")
                .bind(crate::routing::enum_str(&p))
                .bind(p as i64)
                .bind(conversation)
                .execute(&mut **tx)
                .await?;
        }
        let event = PendingEvent::new("contact.updated")
            .conversation(conversation)
            .data(json!({ "contact": contact, "by": "workflow" }));
        append_events(tx, ws, now, &[event]).await
    }

    /// A run with its history.
    pub async fn run(&self, ws: i64, id: i64) -> Result<RunRecord, StoreError> {
        let row = self.row_in("runs", "run", ws, id).await?;
        let state: RunState = crate::db::json_col(&row, "state")?;
        let steps =
            query("SELECT seq, at, input, effects, trace FROM run_steps WHERE run_id = $1 ORDER BY seq")
                .bind(id)
                .fetch_all(&self.pool)
                .await?
                .iter()
                .map(|r| {
                    Ok(RunStep {
                        seq: r.try_get("seq")?,
                        at: rfc3339(r.try_get("at")?),
                        input: crate::db::json_col(r, "input")?,
                        effects: crate::db::json_col(r, "effects")?,
                        trace: crate::db::json_col(r, "trace")?,
                    })
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(RunRecord {
            id,
            workflow: row.try_get("workflow_id")?,
            version: row.try_get("version")?,
            conversation: row.try_get("conversation_id")?,
            status: row.try_get("status")?,
            state: state.run,
            pending: state.pending.into_iter().collect(),
            error: row.try_get("error")?,
            wake_at: row.try_get::<Option<i64>, _>("wake_at")?.map(rfc3339),
            steps,
        })
    }

    /// The runs of a conversation, oldest first.
    pub async fn conversation_runs(&self, ws: i64, conversation: i64) -> Result<Vec<RunRecord>, StoreError> {
        let ids: Vec<i64> =
            query("SELECT id FROM runs WHERE conversation_id = $1 AND workspace_id = $2 ORDER BY id")
                .bind(conversation)
                .bind(ws)
                .fetch_all(&self.pool)
                .await?
                .iter()
                .map(|r| r.try_get::<i64, _>(0))
                .collect::<Result<_, _>>()?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            out.push(self.run(ws, id).await?);
        }
        Ok(out)
    }
}

/// When a run next needs attention: now if effects wait, else its next timer.
fn wake_at(state: &RunState, now: Millis) -> Option<i64> {
    if !state.pending.is_empty()
        || matches!(state.run.status, RunStatus::Waiting { until: Until::Assignment, .. })
    {
        return Some(now);
    }
    state.run.next_timer().map(|t| t.0)
}
