//! Calendars and workflows as workspace resources: drafts edited freely, versions frozen at
//! publishing (after checking the draft against what the workspace has), rollback to an
//! earlier version, enable and disable, and the dry run that says what a workflow would do
//! for a contact and a message now, routing included, changing nothing.

use crate::db::{append_events, PendingEvent, Store};
use crate::error::StoreError;
use crate::routing::{Need, Scope};
use crate::sql::{query, Row};
use crate::types::{rfc3339, Millis};
use serde::Serialize;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use usher_core::calendar::{Calendar, CalendarSpec};
use usher_core::decide::Outcome;
use usher_core::model::{AgentId, Channel, ConversationId, Priority, TeamId, Timestamp};
use usher_core::request::AssignRequest;
use usher_workflow::document::Assign;
use usher_workflow::engine::{advance, Effect, Facts, Input, Run, RunStatus, TraceLine, Until};
use usher_workflow::{Directory, Problem, Workflow};

/// The most calendars, and separately the most workflows, a workspace may have.
pub const PER_WORKSPACE: i64 = 500;
/// The most advances one dry run makes (each routing outcome is one).
const DRY_RUN_ADVANCES: usize = 16;

/// A calendar as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct CalendarRecord {
    /// Its id.
    pub id: i64,
    /// Its name.
    pub name: String,
    /// The team whose hours it is; none for the workspace's own.
    pub team: Option<i64>,
    /// The schedule.
    pub spec: CalendarSpec,
    /// Whether it is open now, and when it opens next.
    pub open_now: bool,
    /// The next opening (RFC 3339), none if it never opens.
    pub next_opening: Option<String>,
}

/// A workflow as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct WorkflowRecord {
    /// Its id.
    pub id: i64,
    /// Its name (the draft's).
    pub name: String,
    /// Whether published versions run.
    pub enabled: bool,
    /// The version that runs, if one was published.
    pub published_version: Option<i64>,
    /// The draft.
    pub draft: Workflow,
    /// When it was made and last changed (RFC 3339).
    pub created_at: String,
    /// When it was last changed.
    pub updated_at: String,
}

/// A published version.
#[derive(Debug, Clone, Serialize)]
pub struct WorkflowVersion {
    /// Its number, from 1.
    pub version: i64,
    /// When it was published.
    pub published_at: String,
    /// The document, frozen.
    pub document: Workflow,
}

/// The contact and message of a dry run.
#[derive(Debug, Clone, Default)]
pub struct DrySample {
    /// The channel.
    pub channel: Option<Channel>,
    /// The contact's name.
    pub name: Option<String>,
    /// The contact's language.
    pub language: Option<String>,
    /// Its tags.
    pub tags: Vec<String>,
    /// Its fields.
    pub fields: BTreeMap<String, String>,
    /// Whether it wrote before.
    pub returning: bool,
    /// Its previous agent, for `prefer_previous_agent`.
    pub previous_agent: Option<i64>,
    /// The first message.
    pub message: Option<String>,
    /// The conversation's priority.
    pub priority: Priority,
    /// Answers the contact would give, in order, to the questions asked.
    pub answers: Vec<String>,
}

/// What a dry run found.
#[derive(Debug, Clone, Serialize)]
pub struct DryRun {
    /// The effects, in order (nothing was carried out).
    pub effects: Vec<Effect>,
    /// Every step taken.
    pub trace: Vec<TraceLine>,
    /// Every routing decision it would take, explained.
    pub decisions: Vec<DryDecision>,
    /// Where the run would stand afterwards.
    pub run: Run,
}

/// A routing decision a dry run predicts.
#[derive(Debug, Clone, Serialize)]
pub struct DryDecision {
    /// `assigned`, `queued` or `unassigned`.
    pub outcome: &'static str,
    /// The agent it would go to.
    pub agent: Option<i64>,
    /// Why, in a sentence.
    pub explanation: String,
}

fn document_error(code: &'static str, message: &str, problems: Vec<Problem>) -> StoreError {
    StoreError::Document { code, message: message.to_string(), problems }
}

fn calendar_of(spec: &CalendarSpec) -> Result<Calendar, StoreError> {
    Calendar::new(spec).map_err(|errors| {
        let problems = errors
            .into_iter()
            .map(|e| Problem { path: e.path, code: "invalid_calendar", message: e.message })
            .collect();
        document_error("invalid_calendar", "the calendar has problems", problems)
    })
}

fn calendar_record(row: &Row, now: Millis) -> Result<CalendarRecord, StoreError> {
    let spec: CalendarSpec = crate::db::json_col(row, "spec")?;
    let calendar =
        calendar_of(&spec).map_err(|_| StoreError::Corrupt("stored calendar does not check".into()))?;
    Ok(CalendarRecord {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        team: row.try_get("team_id")?,
        open_now: calendar.is_open(Timestamp(now)),
        next_opening: calendar.next_opening(Timestamp(now)).map(|t| rfc3339(t.0)),
        spec,
    })
}

fn workflow_record(row: &Row) -> Result<WorkflowRecord, StoreError> {
    Ok(WorkflowRecord {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        enabled: row.try_get::<i64, _>("enabled")? != 0,
        published_version: row.try_get("published_version")?,
        draft: crate::db::json_col(row, "draft")?,
        created_at: rfc3339(row.try_get("created_at")?),
        updated_at: rfc3339(row.try_get("updated_at")?),
    })
}

impl Store {
    /// Creates a calendar (a team's when `team` is given, else the workspace's).
    pub async fn create_calendar(
        &self,
        ws: i64,
        name: &str,
        team: Option<i64>,
        spec: &CalendarSpec,
        now: Millis,
    ) -> Result<CalendarRecord, StoreError> {
        crate::admin::check_len("name", name)?;
        calendar_of(spec)?;
        if let Some(t) = team {
            self.team(ws, t).await?;
        }
        if self.count_in("calendars", ws).await? >= PER_WORKSPACE {
            return Err(StoreError::conflict("too_many", format!("at most {PER_WORKSPACE} calendars")));
        }
        let mut tx = self.begin().await?;
        let id: i64 = query(
            "INSERT INTO calendars (workspace_id, team_id, name, spec, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $5) RETURNING id",
        )
        .bind(ws)
        .bind(team)
        .bind(name)
        .bind(serde_json::to_string(spec)?)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?
        .try_get(0)?;
        append_events(
            &mut tx,
            ws,
            now,
            &[PendingEvent::new("calendar.created").data(json!({ "calendar": id }))],
        )
        .await?;
        tx.commit().await?;
        self.calendar(ws, id, now).await
    }

    /// Replaces a calendar's schedule (and name).
    pub async fn update_calendar(
        &self,
        ws: i64,
        id: i64,
        name: Option<&str>,
        spec: &CalendarSpec,
        now: Millis,
    ) -> Result<CalendarRecord, StoreError> {
        if let Some(n) = name {
            crate::admin::check_len("name", n)?;
        }
        calendar_of(spec)?;
        self.calendar(ws, id, now).await?;
        let mut tx = self.begin().await?;
        query("UPDATE calendars SET name = COALESCE($1, name), spec = $2, updated_at = $3 WHERE id = $4 AND workspace_id = $5")
            .bind(name)
            .bind(serde_json::to_string(spec)?)
            .bind(now)
            .bind(id)
            .bind(ws)
            .execute(&mut *tx)
            .await?;
        append_events(
            &mut tx,
            ws,
            now,
            &[PendingEvent::new("calendar.updated").data(json!({ "calendar": id }))],
        )
        .await?;
        tx.commit().await?;
        self.calendar(ws, id, now).await
    }

    /// One calendar.
    pub async fn calendar(&self, ws: i64, id: i64, now: Millis) -> Result<CalendarRecord, StoreError> {
        let row = self.row_in("calendars", "calendar", ws, id).await?;
        calendar_record(&row, now)
    }

    /// The calendars as the workflow engine knows them: the workspace's hours (its first
    /// calendar without a team) and every calendar by id.
    pub(crate) async fn calendar_facts(
        &self,
        ws: i64,
    ) -> Result<(Option<Calendar>, BTreeMap<i64, Calendar>), StoreError> {
        let rows = query("SELECT id, team_id, spec FROM calendars WHERE workspace_id = $1 ORDER BY id")
            .bind(ws)
            .fetch_all(&self.pool)
            .await?;
        let mut hours = None;
        let mut calendars = BTreeMap::new();
        for r in &rows {
            let calendar = calendar_of(&crate::db::json_col::<CalendarSpec>(r, "spec")?)?;
            if r.try_get::<Option<i64>, _>("team_id")?.is_none() && hours.is_none() {
                hours = Some(calendar.clone());
            }
            calendars.insert(r.try_get::<i64, _>("id")?, calendar);
        }
        Ok((hours, calendars))
    }

    /// The workspace's calendars.
    pub async fn calendars(&self, ws: i64, now: Millis) -> Result<Vec<CalendarRecord>, StoreError> {
        let rows = query("SELECT * FROM calendars WHERE workspace_id = $1 ORDER BY id")
            .bind(ws)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| calendar_record(r, now)).collect()
    }

    /// Creates a workflow from a draft (checked for shape; references are checked at
    /// publishing). It starts disabled, with no published version.
    pub async fn create_workflow(
        &self,
        ws: i64,
        draft: &Workflow,
        now: Millis,
    ) -> Result<WorkflowRecord, StoreError> {
        crate::admin::check_len("name", &draft.name)?;
        if self.count_in("workflows", ws).await? >= PER_WORKSPACE {
            return Err(StoreError::conflict("too_many", format!("at most {PER_WORKSPACE} workflows")));
        }
        let mut tx = self.begin().await?;
        let id: i64 = query(
            "INSERT INTO workflows (workspace_id, name, enabled, draft, created_at, updated_at) \
             VALUES ($1, $2, 0, $3, $4, $4) RETURNING id",
        )
        .bind(ws)
        .bind(&draft.name)
        .bind(serde_json::to_string(draft)?)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?
        .try_get(0)?;
        append_events(
            &mut tx,
            ws,
            now,
            &[PendingEvent::new("workflow.created").data(json!({ "workflow": id }))],
        )
        .await?;
        tx.commit().await?;
        self.workflow(ws, id).await
    }

    /// Replaces a workflow's draft; published versions are not touched.
    pub async fn update_workflow(
        &self,
        ws: i64,
        id: i64,
        draft: &Workflow,
        now: Millis,
    ) -> Result<WorkflowRecord, StoreError> {
        crate::admin::check_len("name", &draft.name)?;
        self.workflow(ws, id).await?;
        let mut tx = self.begin().await?;
        query(
            "UPDATE workflows SET name = $1, draft = $2, updated_at = $3 WHERE id = $4 AND workspace_id = $5",
        )
        .bind(&draft.name)
        .bind(serde_json::to_string(draft)?)
        .bind(now)
        .bind(id)
        .bind(ws)
        .execute(&mut *tx)
        .await?;
        append_events(
            &mut tx,
            ws,
            now,
            &[PendingEvent::new("workflow.updated").data(json!({ "workflow": id }))],
        )
        .await?;
        tx.commit().await?;
        self.workflow(ws, id).await
    }

    /// One workflow.
    pub async fn workflow(&self, ws: i64, id: i64) -> Result<WorkflowRecord, StoreError> {
        let row = self.row_in("workflows", "workflow", ws, id).await?;
        workflow_record(&row)
    }

    /// The workspace's workflows.
    pub async fn workflows(&self, ws: i64) -> Result<Vec<WorkflowRecord>, StoreError> {
        let rows = query("SELECT * FROM workflows WHERE workspace_id = $1 ORDER BY id")
            .bind(ws)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(workflow_record).collect()
    }

    /// What a workflow may refer to in this workspace.
    pub async fn directory(&self, ws: i64) -> Result<Directory, StoreError> {
        let ids = |rows: Vec<Row>| -> Result<BTreeSet<i64>, StoreError> {
            rows.iter().map(|r| r.try_get::<i64, _>(0)).collect()
        };
        let names = |rows: Vec<Row>| -> Result<BTreeSet<String>, StoreError> {
            rows.iter().map(|r| r.try_get::<String, _>(0)).collect()
        };
        Ok(Directory {
            teams: ids(query("SELECT id FROM teams WHERE workspace_id = $1")
                .bind(ws)
                .fetch_all(&self.pool)
                .await?)?,
            agents: ids(query("SELECT id FROM agents WHERE workspace_id = $1")
                .bind(ws)
                .fetch_all(&self.pool)
                .await?)?,
            calendars: ids(query("SELECT id FROM calendars WHERE workspace_id = $1")
                .bind(ws)
                .fetch_all(&self.pool)
                .await?)?,
            contact_fields: names(
                query("SELECT name FROM contact_fields WHERE workspace_id = $1")
                    .bind(ws)
                    .fetch_all(&self.pool)
                    .await?,
            )?,
        })
    }

    /// Checks the draft against the workspace and freezes it as the next version, which then
    /// runs; the workflow is enabled. A draft with problems is refused with all of them. The
    /// workflow row is locked first, so concurrent publishes number their versions in turn and
    /// each freezes the draft as it is when it runs.
    pub async fn publish_workflow(
        &self,
        ws: i64,
        id: i64,
        now: Millis,
    ) -> Result<WorkflowRecord, StoreError> {
        let directory = self.directory(ws).await?;
        let mut tx = self.begin().await?;
        let sql = format!("SELECT * FROM workflows WHERE id = $1 AND workspace_id = $2{}", self.for_update());
        let row = query(&sql)
            .bind(id)
            .bind(ws)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| StoreError::not_found(format!("workflow {id}")))?;
        let draft = workflow_record(&row)?.draft;
        let problems = usher_workflow::validate(&draft, &directory);
        if !problems.is_empty() {
            tx.rollback().await?;
            return Err(document_error(
                "invalid_workflow",
                &format!("the draft has {} problem(s); nothing was published", problems.len()),
                problems,
            ));
        }
        let version: i64 =
            query("SELECT COALESCE(MAX(version), 0) + 1 FROM workflow_versions WHERE workflow_id = $1")
                .bind(id)
                .fetch_one(&mut *tx)
                .await?
                .try_get(0)?;
        query("INSERT INTO workflow_versions (workflow_id, version, document, published_at) VALUES ($1, $2, $3, $4)")
            .bind(id)
            .bind(version)
            .bind(serde_json::to_string(&draft)?)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        let event =
            PendingEvent::new("workflow.published").data(json!({ "workflow": id, "version": version }));
        self.change_workflow(tx, ws, id, "published_version = $1, enabled = 1", version, event, now).await
    }

    /// Checks a workflow's draft against the workspace as publishing would, changing nothing:
    /// every problem with its place (none: it can be published).
    pub async fn check_workflow(&self, ws: i64, id: i64) -> Result<Vec<usher_workflow::Problem>, StoreError> {
        let draft = self.workflow(ws, id).await?.draft;
        let directory = self.directory(ws).await?;
        Ok(usher_workflow::validate(&draft, &directory))
    }

    /// Makes an earlier version the one that runs.
    pub async fn rollback_workflow(
        &self,
        ws: i64,
        id: i64,
        version: i64,
        now: Millis,
    ) -> Result<WorkflowRecord, StoreError> {
        self.workflow_version(ws, id, version).await?;
        let tx = self.begin().await?;
        let event =
            PendingEvent::new("workflow.rolled_back").data(json!({ "workflow": id, "version": version }));
        self.change_workflow(tx, ws, id, "published_version = $1", version, event, now).await
    }

    /// Enables or disables a workflow (enabling needs a published version).
    pub async fn set_workflow_enabled(
        &self,
        ws: i64,
        id: i64,
        enabled: bool,
        now: Millis,
    ) -> Result<WorkflowRecord, StoreError> {
        let current = self.workflow(ws, id).await?;
        if enabled && current.published_version.is_none() {
            return Err(StoreError::conflict("not_published", "publish the workflow before enabling it"));
        }
        let tx = self.begin().await?;
        let kind = if enabled { "workflow.enabled" } else { "workflow.disabled" };
        let event = PendingEvent::new(kind).data(json!({ "workflow": id }));
        self.change_workflow(tx, ws, id, "enabled = $1", i64::from(enabled), event, now).await
    }

    /// The common end of a change to a workflow row: `set` (with `$1` bound to `value`), the
    /// event, the commit, and the workflow as it now is.
    #[allow(clippy::too_many_arguments)] // the parts of one change, each used once
    async fn change_workflow(
        &self,
        mut tx: crate::db::Tx,
        ws: i64,
        id: i64,
        set: &str,
        value: i64,
        event: PendingEvent,
        now: Millis,
    ) -> Result<WorkflowRecord, StoreError> {
        query(&format!("UPDATE workflows SET {set}, updated_at = $2 WHERE id = $3 AND workspace_id = $4"))
            .bind(value)
            .bind(now)
            .bind(id)
            .bind(ws)
            .execute(&mut *tx)
            .await?;
        append_events(&mut tx, ws, now, &[event]).await?;
        // Read inside the transaction: the answer is the state this change made, not a later
        // one (two publishes at once would otherwise both answer the second's version).
        let row = query("SELECT * FROM workflows WHERE id = $1 AND workspace_id = $2")
            .bind(id)
            .bind(ws)
            .fetch_one(&mut *tx)
            .await?;
        let record = workflow_record(&row)?;
        tx.commit().await?;
        Ok(record)
    }

    /// A published version.
    pub async fn workflow_version(
        &self,
        ws: i64,
        id: i64,
        version: i64,
    ) -> Result<WorkflowVersion, StoreError> {
        self.workflow(ws, id).await?;
        let row = query("SELECT version, document, published_at FROM workflow_versions WHERE workflow_id = $1 AND version = $2")
            .bind(id)
            .bind(version)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::not_found(format!("version {version} of workflow {id}")))?;
        Ok(WorkflowVersion {
            version: row.try_get("version")?,
            published_at: rfc3339(row.try_get("published_at")?),
            document: crate::db::json_col(&row, "document")?,
        })
    }

    /// A workflow's published versions, oldest first.
    pub async fn workflow_versions(&self, ws: i64, id: i64) -> Result<Vec<WorkflowVersion>, StoreError> {
        self.workflow(ws, id).await?;
        let rows = query("SELECT version, document, published_at FROM workflow_versions WHERE workflow_id = $1 ORDER BY version")
            .bind(id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(WorkflowVersion {
                    version: r.try_get("version")?,
                    published_at: r.try_get::<i64, _>("published_at").map(rfc3339)?,
                    document: crate::db::json_col(r, "document")?,
                })
            })
            .collect()
    }

    /// What `document` would do for `sample` now: the messages, the steps, and the routing
    /// decisions it would take with the workspace as it is, changing nothing.
    pub async fn dry_run(
        &self,
        ws: i64,
        document: &Workflow,
        sample: &DrySample,
        now: Millis,
    ) -> Result<DryRun, StoreError> {
        let problems = usher_workflow::validate(document, &self.directory(ws).await?);
        if !problems.is_empty() {
            return Err(document_error(
                "invalid_workflow",
                "the workflow has problems; fix them to try it",
                problems,
            ));
        }
        let (hours, calendars) = self.calendar_facts(ws).await?;
        let mut facts = Facts {
            contact_name: sample.name.clone(),
            language: sample.language.clone(),
            tags: sample.tags.iter().cloned().collect(),
            fields: sample.fields.clone(),
            returning: sample.returning,
            channel: sample.channel,
            first_message: sample.message.clone(),
            priority: sample.priority,
            hours,
            calendars,
            ..Facts::default()
        };
        let mut run = Run::new();
        let mut input = Input::Start;
        let mut answers = sample.answers.iter();
        let (mut effects, mut trace, mut decisions) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..DRY_RUN_ADVANCES {
            let step = advance(document, &run, &input, &facts, Timestamp(now))
                .map_err(|e| StoreError::invalid("workflow_failed", e.to_string()))?;
            let assign = step.effects.iter().rev().find_map(|e| match e {
                Effect::Assign { settings, exclude } => Some((settings.clone(), exclude.clone())),
                _ => None,
            });
            for e in &step.effects {
                if let Effect::SaveField { field, value } = e {
                    facts.fields.insert(field.clone(), value.clone());
                }
            }
            effects.extend(step.effects);
            trace.extend(step.trace);
            run = step.run;
            input = match (&run.status, assign) {
                (RunStatus::Waiting { until: Until::Assignment, .. }, Some((settings, _))) => {
                    let d = self.predict(ws, &settings, sample, &facts, now).await?;
                    facts.agent_name = d.1.clone();
                    facts.team_name = d.2.clone();
                    let next = match d.0.outcome {
                        "assigned" => Input::Assigned { agent: AgentId(d.0.agent.unwrap_or_default()) },
                        "queued" => Input::Queued,
                        _ => Input::Unassigned,
                    };
                    if d.0.outcome == "queued" {
                        facts.queue = Some((d.3, None));
                    }
                    decisions.push(d.0);
                    next
                }
                (RunStatus::Waiting { until: Until::Answer { .. }, .. }, _) => match answers.next() {
                    Some(a) => Input::Message { text: a.clone() },
                    None => break,
                },
                _ => break,
            };
        }
        Ok(DryRun { effects, trace, decisions, run })
    }

    /// The routing decision an assign step would get now: (the decision, the agent's name,
    /// the team's name, the queue position it would take). Read under a transaction that is
    /// rolled back.
    async fn predict(
        &self,
        ws: i64,
        a: &Assign,
        sample: &DrySample,
        facts: &Facts,
        now: Millis,
    ) -> Result<(DryDecision, Option<String>, Option<String>, u32), StoreError> {
        let request = assign_request(
            a,
            ConversationId(0),
            sample.channel.unwrap_or(Channel::WebChat),
            facts.priority,
            facts.language.clone(),
            sample.previous_agent,
            now,
        )?;
        let mut scope = Scope::default();
        scope.teams.extend(a.team);
        scope.agents.extend(a.agent);
        scope.agents.extend(request.previous_agent.map(|p| p.0));
        let mut tx = self.begin().await?;
        let ctx = self.context(&mut tx, ws, now).await?;
        let loaded = self.load(&mut tx, ws, &scope, Need::Decision).await;
        tx.rollback().await?;
        let loaded = loaded?;
        let decision = self.decide(&loaded.snapshot, &request, ctx)?;
        let names = &loaded.names;
        let explanation =
            decision.trace.explain(|x| names.get(&x.0).cloned().unwrap_or_else(|| format!("agent {}", x.0)));
        let team_name = match a.team {
            Some(t) => Some(self.team(ws, t).await?.name),
            None => None,
        };
        let waiting = loaded.queue.iter().filter(|w| w.request.team() == a.team.map(TeamId)).count();
        let (outcome, agent) = match decision.outcome {
            Outcome::Assigned(x) => ("assigned", Some(x.0)),
            Outcome::Queued { .. } => ("queued", None),
            Outcome::Unassigned => ("unassigned", None),
        };
        Ok((
            DryDecision { outcome, agent, explanation },
            agent.and_then(|x| names.get(&x).cloned()),
            team_name,
            u32::try_from(waiting + 1).unwrap_or(u32::MAX),
        ))
    }
}

/// The routing core's request for a workflow's assign step (see [`Assign::request`]).
pub(crate) fn assign_request(
    a: &Assign,
    conversation: ConversationId,
    channel: Channel,
    priority: Priority,
    language: Option<String>,
    previous_agent: Option<i64>,
    now: Millis,
) -> Result<AssignRequest, StoreError> {
    a.request(conversation, channel, priority, language, previous_agent.map(AgentId), Timestamp(now))
        .ok_or_else(|| StoreError::invalid("no_target", "the assign step names no team or agent"))
}
