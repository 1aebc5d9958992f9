//! Routing commands: open, claim, assign, unassign, transfer, close, reopen, and the drain
//! that follows every capacity change. Each is one transaction of the same shape:
//!
//! 1. read the scope (which teams and agents the command touches),
//! 2. lock it and load it as a core [`Snapshot`] ([`Store::load`]),
//! 3. let the core decide (pure functions from `usher-core`),
//! 4. write back the conversation, the counters that moved, the rotation, the decision and
//!    its trace, and the events ([`Store::save`]), then commit.

use crate::channels::Via;
use crate::db::{append_events, json_col, retrying, u32_col, PendingEvent, Store, Tx};
use crate::error::StoreError;
use crate::limits;
use crate::sql::{query, Row};
use crate::types::*;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use usher_core::clock::{local_day, parse_time_zone};
use usher_core::decide::{decide, Decision, Outcome};
use usher_core::manual::{self, Change, Conversation as CoreConversation, ManualError, Status};
use usher_core::model::{
    Agent as CoreAgent, AgentId, Channel, ConversationId, DailyCount, Day, PerChannel, Priority, Rotation,
    Skill, Team as CoreTeam, TeamId, Timestamp,
};
use usher_core::queue::{self, Throughput, Waiting};
use usher_core::request::{AssignRequest, Otherwise, Requirements, SkillRequirement, Target, WhenNobody};
use usher_core::{Context, Snapshot};

/// What [`Store::load`] returns: the snapshot, the scope's queue in serving order, agent
/// names for explanations, and each team's policy for when nobody can take a conversation.
pub(crate) struct Loaded {
    pub snapshot: Snapshot,
    pub queue: Vec<Waiting>,
    pub names: BTreeMap<i64, String>,
    pub when_nobody: BTreeMap<i64, WhenNobody>,
}

/// What a command needs [`Store::load`] to load besides the locks on its scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Need {
    /// It decides a conversation: the queues and every member of the scope's teams.
    Decision,
    /// It frees or adds capacity: the queues, and the teams' members only when something
    /// waits (a close with nobody waiting loads one agent, not the team).
    Drain,
    /// Only the locks and the scope's own agents (a change to an agent row, drained later).
    Locks,
}

/// Which teams and agents a command touches.
#[derive(Debug, Default, Clone)]
pub(crate) struct Scope {
    pub teams: BTreeSet<i64>,
    pub agents: BTreeSet<i64>,
    /// Agents (among `agents`) whose capacity the command frees or adds, so every team they
    /// belong to must be in `teams` (their queues are the ones to drain); [`Store::load`]
    /// checks it under the locks.
    pub freed: BTreeSet<i64>,
}

impl Scope {
    /// The scope of a change to these agents' capacity: the agents and all their teams (read
    /// without locks; [`Store::load`] checks them again under the locks).
    pub(crate) async fn of_agents(
        store: &Store,
        tx: &mut Tx,
        agents: impl IntoIterator<Item = i64>,
    ) -> Result<Scope, StoreError> {
        let mut scope = Scope::default();
        for a in agents {
            scope.agents.insert(a);
            scope.freed.insert(a);
            for t in store.agent_teams(tx, a).await? {
                scope.teams.insert(t);
            }
        }
        Ok(scope)
    }
}

/// The routing columns of a conversation row.
#[derive(Debug, Clone)]
pub(crate) struct ConvRow {
    pub state: CoreConversation,
    /// The routing request; none for a conversation opened without a team or agent.
    pub request: Option<AssignRequest>,
    pub priority: Priority,
    pub reserved_for: Option<i64>,
}

pub(crate) const CONV_COLUMNS: &str =
    "c.id, c.status, c.assignee_id, c.last_assignee_id, c.team_id, c.reserved_for, \
     c.channel, c.priority, c.request, c.message, c.opened_at, c.assigned_at, c.closed_at, c.first_response_at, c.channel_id, \
     k.id AS contact_id, k.channel AS contact_channel, k.external_id, k.name AS contact_name, \
     k.language AS contact_language, k.language_confidence AS contact_language_confidence, \
     k.tags AS contact_tags, k.attributes AS contact_attributes";

pub(crate) fn parse_enum<T: serde::de::DeserializeOwned>(s: &str) -> Result<T, StoreError> {
    serde_json::from_value(serde_json::Value::String(s.to_string()))
        .map_err(|_| StoreError::Corrupt(format!("unexpected value {s:?}")))
}

pub(crate) fn enum_str<T: serde::Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::new(),
    }
}

fn status_of(row: &Row) -> Result<Status, StoreError> {
    parse_enum(&row.try_get::<String, _>("status")?)
}

fn conv_row(row: &Row) -> Result<ConvRow, StoreError> {
    let request: Option<AssignRequest> = json_col(row, "request")?;
    let state = CoreConversation {
        status: status_of(row)?,
        assignee: row.try_get::<Option<i64>, _>("assignee_id")?.map(AgentId),
        team: row.try_get::<Option<i64>, _>("team_id")?.map(TeamId),
        channel: parse_enum(&row.try_get::<String, _>("channel")?)?,
        last_assignee: row.try_get::<Option<i64>, _>("last_assignee_id")?.map(AgentId),
    };
    Ok(ConvRow {
        state,
        request,
        priority: parse_enum(&row.try_get::<String, _>("priority")?)?,
        reserved_for: row.try_get("reserved_for")?,
    })
}

pub(crate) fn conversation_view(row: &Row, place: Option<QueuePlace>) -> Result<Conversation, StoreError> {
    let status = status_of(row)?;
    let opened: i64 = row.try_get("opened_at")?;
    let closed: Option<i64> = row.try_get("closed_at")?;
    let first_response: Option<i64> = row.try_get("first_response_at")?;
    Ok(Conversation {
        id: row.try_get("id")?,
        status,
        assignee: row.try_get("assignee_id")?,
        team: row.try_get("team_id")?,
        reserved_for: row.try_get("reserved_for")?,
        channel: parse_enum(&row.try_get::<String, _>("channel")?)?,
        priority: parse_enum(&row.try_get::<String, _>("priority")?)?,
        contact: Contact {
            id: row.try_get("contact_id")?,
            channel: parse_enum(&row.try_get::<String, _>("contact_channel")?)?,
            external_id: row.try_get("external_id")?,
            name: row.try_get("contact_name")?,
            language: row.try_get("contact_language")?,
            language_confidence: confidence(row.try_get("contact_language_confidence")?),
            tags: json_col(row, "contact_tags")?,
            attributes: json_col(row, "contact_attributes")?,
        },
        message: row.try_get("message")?,
        queue: if status == Status::Queued { place } else { None },
        opened_at: rfc3339(opened),
        assigned_at: row.try_get::<Option<i64>, _>("assigned_at")?.map(rfc3339),
        closed_at: closed.map(rfc3339),
        first_response_at: first_response.map(rfc3339),
        first_response_seconds: first_response.map(|t| (t - opened) / 1000),
        resolution_seconds: closed.map(|t| (t - opened) / 1000),
        channel_id: row.try_get("channel_id")?,
    })
}

/// Converts an agent row into the core's agent (teams filled in later).
pub(crate) fn core_agent(row: &Row) -> Result<CoreAgent, StoreError> {
    let caps: BTreeMap<Channel, u32> = json_col(row, "channel_caps")?;
    let mut channel_caps = PerChannel([None; 12]);
    for (c, cap) in caps {
        channel_caps.set(c, Some(cap));
    }
    let open_by: Vec<u32> = json_col(row, "open_by_channel")?;
    let mut open_by_channel = PerChannel([0; 12]);
    for (i, n) in open_by.into_iter().enumerate().take(12) {
        open_by_channel.0[i] = n;
    }
    let skills: BTreeMap<String, u8> = json_col(row, "skills")?;
    Ok(CoreAgent {
        id: AgentId(row.try_get("id")?),
        presence: parse_enum(&row.try_get::<String, _>("status")?)?,
        max_open: u32_col(row, "max_open")?,
        channel_caps,
        open: u32_col(row, "open_count")?,
        open_by_channel,
        daily_limit: row.try_get::<Option<i64>, _>("daily_limit")?.and_then(|v| u32::try_from(v).ok()),
        received: DailyCount {
            day: Day(i32::try_from(row.try_get::<i64, _>("received_day")?).unwrap_or(0)),
            count: u32_col(row, "received_count")?,
        },
        weight: u32_col(row, "weight")?,
        skills: skills.into_iter().map(|(name, level)| Skill { name, level }).collect(),
        languages: json_col(row, "languages")?,
        teams: Vec::new(),
        last_assigned_at: row.try_get::<Option<i64>, _>("last_assigned_at")?.map(Timestamp),
    })
}

fn id_list(ids: impl IntoIterator<Item = i64>) -> String {
    let list: Vec<String> = ids.into_iter().map(|i| i.to_string()).collect();
    if list.is_empty() {
        "NULL".into()
    } else {
        list.join(",")
    }
}

fn outcome_str(o: Outcome) -> &'static str {
    match o {
        Outcome::Assigned(_) => "assigned",
        Outcome::Queued { .. } => "queued",
        Outcome::Unassigned => "unassigned",
    }
}

fn manual_error(e: ManualError) -> StoreError {
    match e {
        ManualError::AlreadyHeld { by } => {
            StoreError::conflict("already_assigned", format!("the conversation is held by agent {}", by.0))
        }
        ManualError::Closed => StoreError::conflict("conversation_closed", "the conversation is closed"),
        ManualError::NotClosed => StoreError::conflict("conversation_open", "the conversation is not closed"),
        ManualError::NotAssigned => StoreError::conflict("not_assigned", "the conversation is not assigned"),
        ManualError::Ineligible { agent, reason } => StoreError::conflict(
            "agent_unavailable",
            format!("agent {} cannot take it: {} (use force to override)", agent.0, reason.phrase()),
        ),
        ManualError::UnknownAgent(a) => StoreError::not_found(format!("agent {}", a.0)),
    }
}

/// The language of an opening's first message, when the request gives none (detected before
/// the transaction: it is CPU work that needs no lock).
fn detected_language(new: &NewConversation) -> Option<crate::language::Detected> {
    if new.contact.language.is_some() {
        return None;
    }
    new.message.as_deref().and_then(crate::language::detect)
}

/// A manual operation on a conversation: the core's pure transition, given the snapshot.
pub(crate) type ManualOp<'a> =
    dyn Fn(&Snapshot, CoreConversation, Context) -> Result<Change, ManualError> + Sync + 'a;

/// What a command produced besides the conversation itself.
struct Work {
    /// The workspace the command runs in.
    ws: i64,
    /// Now, and today in the workspace's time zone.
    ctx: Context,
    events: Vec<PendingEvent>,
    /// Agent names for explanations, filled by [`Store::load`].
    names: BTreeMap<i64, String>,
}

impl Store {
    /// The workspace's time zone and the decision context at `now`.
    pub(crate) async fn context(&self, tx: &mut Tx, ws: i64, now: Millis) -> Result<Context, StoreError> {
        let tz = match self.known_time_zone(ws) {
            Some(tz) => tz,
            None => {
                let row = query("SELECT time_zone FROM workspaces WHERE id = $1")
                    .bind(ws)
                    .fetch_optional(&mut **tx)
                    .await?;
                self.remember_time_zone(ws, row)?
            }
        };
        Ok(Context { now: Timestamp(now), today: local_day(Timestamp(now), tz) })
    }

    /// The day `now` falls on in the workspace's time zone, read outside a transaction.
    async fn today(&self, ws: i64, now: Millis) -> Result<Day, StoreError> {
        let tz = match self.known_time_zone(ws) {
            Some(tz) => tz,
            None => {
                let row = query("SELECT time_zone FROM workspaces WHERE id = $1")
                    .bind(ws)
                    .fetch_optional(&self.pool)
                    .await?;
                self.remember_time_zone(ws, row)?
            }
        };
        Ok(local_day(Timestamp(now), tz))
    }

    fn known_time_zone(&self, ws: i64) -> Option<chrono_tz::Tz> {
        self.time_zones.read().ok().and_then(|m| m.get(&ws).copied())
    }

    /// Reads a workspace's time zone from its row and keeps it.
    fn remember_time_zone(&self, ws: i64, row: Option<Row>) -> Result<chrono_tz::Tz, StoreError> {
        let row = row.ok_or_else(|| StoreError::not_found(format!("workspace {ws}")))?;
        let tz =
            parse_time_zone(&row.try_get::<String, _>(0)?).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        if let Ok(mut m) = self.time_zones.write() {
            m.insert(ws, tz);
        }
        Ok(tz)
    }

    /// Locks the scope and loads it as a snapshot: the teams (ascending), then their members
    /// and the scope's agents (ascending, one query), and only then, under those locks, the
    /// queues (each team's, and those waiting for a scope agent by name). Agents that queued
    /// requests name join the snapshot last.
    ///
    /// What was read before the locks is checked after them: should a scope agent have
    /// joined a team outside the scope, or a conversation naming a scope agent wait in a
    /// team outside it, the command returns [`StoreError::Moved`] and runs again with the
    /// wider scope.
    pub(crate) async fn load(
        &self,
        tx: &mut Tx,
        ws: i64,
        scope: &Scope,
        need: Need,
    ) -> Result<Loaded, StoreError> {
        let with_queue = need != Need::Locks;
        let lock = self.for_update();
        let mut scope = scope.clone();
        let named_agents = id_list(scope.agents.iter().copied());
        if with_queue && !scope.agents.is_empty() {
            // Teams whose queues hold conversations that name a scope agent (unlocked; one
            // statement, each branch on its own index).
            let sql = ["reserved_for", "dedicated_id", "previous_id"]
                .map(|col| {
                    format!("SELECT team_id FROM conversations WHERE status = 'queued' AND {col} IN ({named_agents})")
                })
                .join(" UNION ");
            for row in query(&sql).fetch_all(&mut **tx).await? {
                if let Some(t) = row.try_get::<Option<i64>, _>(0)? {
                    scope.teams.insert(t);
                }
            }
        }
        let mut teams = Vec::new();
        let mut when_nobody = BTreeMap::new();
        for &id in &scope.teams {
            let sql = format!(
                "SELECT id, strategy, only_online, rotation, when_nobody FROM teams WHERE id = $1 AND workspace_id = $2{lock}"
            );
            let Some(row) = query(&sql).bind(id).bind(ws).fetch_optional(&mut **tx).await? else {
                return Err(StoreError::not_found(format!("team {id}")));
            };
            when_nobody.insert(id, parse_enum(&row.try_get::<String, _>("when_nobody")?)?);
            teams.push(CoreTeam {
                id: TeamId(id),
                strategy: parse_enum(&row.try_get::<String, _>("strategy")?)?,
                only_online: row.try_get::<i64, _>("only_online")? != 0,
                rotation: json_col::<Rotation>(&row, "rotation")?,
            });
        }
        let team_list = id_list(scope.teams.iter().copied());
        let mut agents = Vec::new();
        let mut names = BTreeMap::new();
        // The scope's own agents first (the queues that wait for them by name are read under
        // their locks); the teams' members when a decision needs them, below.
        let own_rows = self.load_agents(tx, ws, &team_list, "NULL", &named_agents).await?;
        for (agent, name, teams_total) in own_rows {
            if scope.freed.contains(&agent.id.0) && teams_total > agent.teams.len() {
                // It joined a team after the scope was read: run again with that team.
                return Err(StoreError::Moved);
            }
            names.insert(agent.id.0, name);
            agents.push(agent);
        }
        let mut queue = Vec::new();
        let mut extra: BTreeSet<i64> = BTreeSet::new();
        if with_queue && !(scope.teams.is_empty() && scope.agents.is_empty()) {
            // Two statements: the teams' queues, and the conversations that name a scope agent
            // (waiting for it, dedicated to it, or its previous contacts), each branch on its
            // own index: one OR across them would make the planner scan every conversation.
            let named = ["reserved_for", "dedicated_id", "previous_id"]
                .map(|col| {
                    format!(
                        "SELECT request, team_id, priority_rank, queued_at, id FROM conversations \
                         WHERE status = 'queued' AND {col} IN ({named_agents})"
                    )
                })
                .join(" UNION ALL ");
            let queries = [
                format!(
                    "SELECT request, team_id FROM conversations WHERE status = 'queued' AND team_id IN ({team_list}) \
                     ORDER BY priority_rank, queued_at, id LIMIT {}",
                    limits::DRAIN_BATCH
                ),
                format!(
                    "SELECT request, team_id FROM ({named}) AS n ORDER BY priority_rank, queued_at, id LIMIT {}",
                    limits::DRAIN_BATCH
                ),
            ];
            let mut seen = BTreeSet::new();
            for (i, sql) in queries.iter().enumerate() {
                if (i == 0 && scope.teams.is_empty()) || (i == 1 && scope.agents.is_empty()) {
                    continue;
                }
                for row in query(sql).fetch_all(&mut **tx).await? {
                    if let Some(t) = row.try_get::<Option<i64>, _>("team_id")? {
                        if !scope.teams.contains(&t) {
                            // Queued for a scope agent after the teams were read.
                            return Err(StoreError::Moved);
                        }
                    }
                    let request: AssignRequest = json_col(&row, "request")?;
                    if let Target::Agent { agent, .. } = request.target {
                        extra.insert(agent.0);
                    }
                    if let Some(p) = request.previous_agent {
                        extra.insert(p.0);
                    }
                    if seen.insert(request.conversation) {
                        queue.push(Waiting { request });
                    }
                }
            }
            queue::sort(&mut queue);
        }
        if need == Need::Decision || (need == Need::Drain && !queue.is_empty()) {
            // The teams' members, in id order (the scope's own agents again among them).
            agents.clear();
            for (agent, name, _) in self.load_agents(tx, ws, &team_list, &team_list, &named_agents).await? {
                names.insert(agent.id.0, name);
                agents.push(agent);
            }
        }
        extra.retain(|a| !names.contains_key(a));
        if !extra.is_empty() {
            // Agents named by queued requests, locked last (rare: a dedicated or previous
            // agent outside the scope).
            for (agent, name, _) in
                self.load_agents(tx, ws, "NULL", "NULL", &id_list(extra.iter().copied())).await?
            {
                names.insert(agent.id.0, name);
                agents.push(agent);
            }
            agents.sort_by_key(|a| a.id);
        }
        let snapshot = Snapshot::new(agents, teams).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        Ok(Loaded { snapshot, queue, names, when_nobody })
    }

    /// Loads (and on PostgreSQL locks, in id order) the members of `members_of` and the
    /// agents of `agent_list` (SQL id lists), each with its memberships among `team_list`,
    /// its name and how many teams it belongs to in all.
    async fn load_agents(
        &self,
        tx: &mut Tx,
        ws: i64,
        team_list: &str,
        members_of: &str,
        agent_list: &str,
    ) -> Result<Vec<(CoreAgent, String, usize)>, StoreError> {
        let lock = self.for_update();
        let member_of = match self.backend {
            crate::db::Backend::Sqlite => "group_concat(m.team_id)",
            crate::db::Backend::Postgres => "string_agg(CAST(m.team_id AS TEXT), ',')",
        };
        let sql = format!(
            "SELECT a.*, (SELECT {member_of} FROM team_members m WHERE m.agent_id = a.id AND m.team_id IN ({team_list})) \
             AS member_of, (SELECT COUNT(*) FROM team_members m WHERE m.agent_id = a.id) AS teams_total \
             FROM agents a WHERE a.id IN (SELECT agent_id FROM team_members WHERE team_id IN ({members_of}) \
             UNION ALL SELECT id FROM agents WHERE id IN ({agent_list})) AND +a.workspace_id = $1 ORDER BY a.id{lock}"
        );
        let mut out = Vec::new();
        for row in query(&sql).bind(ws).fetch_all(&mut **tx).await? {
            let mut agent = core_agent(&row)?;
            let member_of: Option<String> = row.try_get("member_of")?;
            agent.teams = member_of
                .iter()
                .flat_map(|list| list.split(','))
                .filter_map(|t| t.trim().parse::<i64>().ok())
                .map(TeamId)
                .collect();
            let total = usize::try_from(row.try_get::<i64, _>("teams_total")?).unwrap_or(usize::MAX);
            out.push((agent, row.try_get::<String, _>("name")?, total));
        }
        Ok(out)
    }

    /// Writes back the counters and rotations that differ between `before` and `after`.
    pub(crate) async fn save(
        &self,
        tx: &mut Tx,
        before: &Snapshot,
        after: &Snapshot,
    ) -> Result<(), StoreError> {
        for a in after.agents() {
            if before.agent(a.id) == Some(a) {
                continue;
            }
            query(
                "UPDATE agents SET open_count = $1, open_by_channel = $2, received_day = $3, \
                 received_count = $4, last_assigned_at = $5 WHERE id = $6",
            )
            .bind(i64::from(a.open))
            .bind(serde_json::to_string(&a.open_by_channel.0.to_vec())?)
            .bind(i64::from(a.received.day.0))
            .bind(i64::from(a.received.count))
            .bind(a.last_assigned_at.map(|t| t.0))
            .bind(a.id.0)
            .execute(&mut **tx)
            .await?;
        }
        for t in after.teams() {
            if before.team(t.id).map(|b| &b.rotation) != Some(&t.rotation) {
                query("UPDATE teams SET rotation = $1 WHERE id = $2")
                    .bind(serde_json::to_string(&t.rotation)?)
                    .bind(t.id.0)
                    .execute(&mut **tx)
                    .await?;
            }
        }
        Ok(())
    }

    /// Records a decision for a conversation that nobody holds: its new state, the decision
    /// row with its trace, the contact's last agent, and the events.
    async fn record_decision(
        &self,
        tx: &mut Tx,
        conversation: i64,
        request: &AssignRequest,
        decision: &Decision,
        work: &mut Work,
    ) -> Result<(), StoreError> {
        let (ws, now) = (work.ws, work.ctx.now.0);
        let (status, assignee, reserved) = match decision.outcome {
            Outcome::Assigned(a) => ("assigned", Some(a.0), None),
            Outcome::Queued { reserved_for, .. } => ("queued", None, reserved_for.map(|a| a.0)),
            Outcome::Unassigned => ("unassigned", None, None),
        };
        let dedicated = match request.target {
            Target::Agent { agent, .. } => Some(agent.0),
            Target::Team { .. } => None,
        };
        query(
            "UPDATE conversations SET status = $1, assignee_id = $2, \
             last_assignee_id = COALESCE($3, last_assignee_id), reserved_for = $4, request = $5, \
             assigned_at = CASE WHEN $6 = 1 THEN $7 ELSE assigned_at END, updated_at = $8, \
             dedicated_id = $10, previous_id = $11 WHERE id = $9",
        )
        .bind(status)
        .bind(assignee)
        .bind(assignee)
        .bind(reserved)
        .bind(serde_json::to_string(&Some(request))?)
        .bind(i64::from(assignee.is_some()))
        .bind(now)
        .bind(now)
        .bind(conversation)
        .bind(dedicated)
        .bind(request.previous_agent.map(|a| a.0))
        .execute(&mut **tx)
        .await?;
        if let Some(agent) = assignee {
            query(
                "UPDATE contacts SET last_agent_id = $1 WHERE id = (SELECT contact_id FROM conversations WHERE id = $2)",
            )
            .bind(agent)
            .bind(conversation)
            .execute(&mut **tx)
            .await?;
        }
        let explanation = decision
            .trace
            .explain(|a| work.names.get(&a.0).cloned().unwrap_or_else(|| format!("agent {}", a.0)));
        let decision_id: i64 = query(
            "INSERT INTO decisions (workspace_id, conversation_id, at, outcome, agent_id, explanation, trace) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
        )
        .bind(ws)
        .bind(conversation)
        .bind(now)
        .bind(outcome_str(decision.outcome))
        .bind(assignee)
        .bind(&explanation)
        .bind(serde_json::to_string(&decision.trace)?)
        .fetch_one(&mut **tx)
        .await?
        .try_get(0)?;
        let strategy = match decision
            .trace
            .attempts
            .iter()
            .find(|a| a.chosen.is_some())
            .or(decision.trace.attempts.last())
        {
            Some(a) => match a.kind {
                usher_core::trace::AttemptKind::Team { strategy, .. } => strategy as usize,
                usher_core::trace::AttemptKind::Dedicated { .. } => 3,
                usher_core::trace::AttemptKind::PreviousAgent { .. } => 4,
            },
            None => 3,
        };
        let outcome = match decision.outcome {
            Outcome::Assigned(_) => 0,
            Outcome::Queued { .. } => 1,
            Outcome::Unassigned => 2,
        };
        crate::stats::count_decision(strategy, outcome);
        let kind = match decision.outcome {
            Outcome::Assigned(_) => "conversation.assigned",
            Outcome::Queued { .. } => "conversation.queued",
            Outcome::Unassigned => "conversation.left_unassigned",
        };
        work.events.push(
            PendingEvent::new(kind)
                .conversation(conversation)
                .agent(assignee.or(reserved))
                .team(request.team().map(|t| t.0))
                .decision(decision_id),
        );
        Ok(())
    }

    /// Hands queued conversations of the scope to agents who can now take them.
    async fn drain(
        &self,
        tx: &mut Tx,
        snapshot: &mut Snapshot,
        queue: &[Waiting],
        work: &mut Work,
    ) -> Result<(), StoreError> {
        let ctx = work.ctx;
        if queue.is_empty() {
            return Ok(());
        }
        let drained = queue::drain(snapshot, queue, ctx).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        for d in drained {
            let request =
                queue.iter().find(|w| w.conversation() == d.conversation).map(|w| w.request.clone());
            if let Some(request) = request {
                self.record_decision(tx, d.conversation.0, &request, &d.decision, work).await?;
            }
        }
        Ok(())
    }

    /// Records that an agent let go of a conversation of `team` (for the release rate).
    async fn record_release(&self, tx: &mut Tx, team: Option<TeamId>, now: Millis) -> Result<(), StoreError> {
        let Some(team) = team else { return Ok(()) };
        query("INSERT INTO releases (team_id, at) VALUES ($1, $2)")
            .bind(team.0)
            .bind(now)
            .execute(&mut **tx)
            .await?;
        // Prune old rows about once in 32 releases (by the clock's milliseconds): the window
        // query only reads recent rows, so stale ones cost space, not time.
        if now % 32 != 0 {
            return Ok(());
        }
        let horizon = now - i64::from(limits::RELEASE_WINDOW_SECONDS) * 1000 * 4;
        query("DELETE FROM releases WHERE team_id = $1 AND at < $2")
            .bind(team.0)
            .bind(horizon)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// The throughput figures behind a team's wait estimate.
    pub(crate) async fn throughput(
        &self,
        conn: &mut crate::db::ReaderConn,
        team: i64,
        now: Millis,
    ) -> Result<Throughput, StoreError> {
        let window = limits::RELEASE_WINDOW_SECONDS;
        let since = now - i64::from(window) * 1000;
        let releases: i64 = query("SELECT COUNT(*) FROM releases WHERE team_id = $1 AND at > $2")
            .bind(team)
            .bind(since)
            .fetch_one(&mut *conn)
            .await?
            .try_get(0)?;
        let row = query(
            "SELECT t.default_handle_seconds, t.only_online, \
             (SELECT CAST(COALESCE(SUM(a.max_open), 0) AS BIGINT) FROM agents a JOIN team_members m ON m.agent_id = a.id \
              WHERE m.team_id = t.id AND a.status = 'online') AS online_slots, \
             (SELECT CAST(COALESCE(SUM(a.max_open), 0) AS BIGINT) FROM agents a JOIN team_members m ON m.agent_id = a.id \
              WHERE m.team_id = t.id AND a.status <> 'offline') AS present_slots \
             FROM teams t WHERE t.id = $1",
        )
        .bind(team)
        .fetch_optional(&mut *conn)
        .await?;
        let Some(row) = row else { return Ok(Throughput::default()) };
        let only_online = row.try_get::<i64, _>("only_online")? != 0;
        let slots: i64 = row.try_get(if only_online { "online_slots" } else { "present_slots" })?;
        Ok(Throughput {
            releases: u32::try_from(releases).unwrap_or(u32::MAX),
            window_seconds: window,
            serving_slots: u32::try_from(slots).unwrap_or(u32::MAX),
            default_handle_seconds: u32_col(&row, "default_handle_seconds")?,
        })
    }

    /// A queued conversation's position and estimate.
    pub(crate) async fn queue_place(
        &self,
        conn: &mut crate::db::ReaderConn,
        id: i64,
        now: Millis,
    ) -> Result<Option<QueuePlace>, StoreError> {
        let Some(row) = query(
            "SELECT team_id, reserved_for, priority_rank, queued_at, status FROM conversations WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
        else {
            return Ok(None);
        };
        if row.try_get::<String, _>("status")? != "queued" {
            return Ok(None);
        }
        let team: Option<i64> = row.try_get("team_id")?;
        let reserved: Option<i64> = row.try_get("reserved_for")?;
        let rank: i64 = row.try_get("priority_rank")?;
        let queued_at: i64 = row.try_get("queued_at")?;
        let (col, key) = match (reserved, team) {
            (Some(a), _) => ("reserved_for", a),
            (None, Some(t)) => ("team_id", t),
            (None, None) => return Ok(None),
        };
        let sql = format!(
            "SELECT COUNT(*) FROM conversations WHERE status = 'queued' AND {col} = $1 \
             AND (priority_rank < $2 OR (priority_rank = $3 AND (queued_at < $4 OR (queued_at = $5 AND id < $6))))"
        );
        let ahead: i64 = query(&sql)
            .bind(key)
            .bind(rank)
            .bind(rank)
            .bind(queued_at)
            .bind(queued_at)
            .bind(id)
            .fetch_one(&mut *conn)
            .await?
            .try_get(0)?;
        let position = u32::try_from(ahead + 1).unwrap_or(u32::MAX);
        let throughput = match (reserved, team) {
            (None, Some(t)) => self.throughput(conn, t, now).await?,
            _ => Throughput::default(),
        };
        Ok(Some(QueuePlace { position, estimated_wait_seconds: queue::estimate_wait(position, throughput) }))
    }

    /// Reads one conversation of the workspace as the API shows it.
    pub async fn conversation(&self, ws: i64, id: i64, now: Millis) -> Result<Conversation, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let sql = format!(
            "SELECT {CONV_COLUMNS} FROM conversations c JOIN contacts k ON k.id = c.contact_id \
             WHERE c.id = $1 AND c.workspace_id = $2"
        );
        let row = query(&sql)
            .bind(id)
            .bind(ws)
            .fetch_optional(&mut *conn)
            .await?
            .ok_or_else(|| StoreError::not_found(format!("conversation {id}")))?;
        let place = if status_of(&row)? == Status::Queued {
            self.queue_place(&mut conn, id, now).await?
        } else {
            None
        };
        conversation_view(&row, place)
    }

    /// Reads a conversation's routing state, locking its row on PostgreSQL (taken after the
    /// team and agent locks, like every conversation row a command writes).
    async fn conv_for_update(
        &self,
        tx: &mut Tx,
        ws: i64,
        id: i64,
        locked: bool,
    ) -> Result<ConvRow, StoreError> {
        let lock = match self.backend {
            crate::db::Backend::Postgres if locked => " FOR UPDATE OF c",
            _ => "",
        };
        let sql = format!(
            "SELECT {CONV_COLUMNS} FROM conversations c JOIN contacts k ON k.id = c.contact_id \
             WHERE c.id = $1 AND c.workspace_id = $2{lock}"
        );
        let row = query(&sql)
            .bind(id)
            .bind(ws)
            .fetch_optional(&mut **tx)
            .await?
            .ok_or_else(|| StoreError::not_found(format!("conversation {id}")))?;
        conv_row(&row)
    }

    /// The teams an agent belongs to.
    pub(crate) async fn agent_teams(&self, tx: &mut Tx, agent: i64) -> Result<Vec<i64>, StoreError> {
        let rows = query("SELECT team_id FROM team_members WHERE agent_id = $1 ORDER BY team_id")
            .bind(agent)
            .fetch_all(&mut **tx)
            .await?;
        rows.iter().map(|r| r.try_get::<i64, _>(0)).collect()
    }

    /// Opens a conversation and routes it at once. With an idempotency key, a retry returns
    /// the conversation the first call opened (and `true` as the second value) and changes
    /// nothing.
    pub async fn open_conversation(
        &self,
        ws: i64,
        new: &NewConversation,
        idempotency_key: Option<&str>,
        now: Millis,
    ) -> Result<(Conversation, bool), StoreError> {
        self.open_via(ws, new, idempotency_key, None, now).await
    }

    /// [`Store::open_conversation`] for a message that came through a channel (see
    /// `channels.rs`): the conversation remembers the channel, its first message keeps the
    /// channel's id for it, and a contact that already has an open conversation on the channel
    /// gets `Conflict{conversation_open}` instead of a second one.
    pub(crate) async fn open_via(
        &self,
        ws: i64,
        new: &NewConversation,
        idempotency_key: Option<&str>,
        via: Option<&Via>,
        now: Millis,
    ) -> Result<(Conversation, bool), StoreError> {
        let started = std::time::Instant::now();
        // A published workflow replaces the team's default assignment, unless the request
        // says how to route it itself.
        let workflow = if new.leaves_routing_to_workflows() {
            self.opened_workflow(ws, new.channel).await?
        } else {
            None
        };
        let (id, replayed, run) =
            retrying!(self.open_once(ws, new, idempotency_key, via, workflow.as_ref(), now).await)?;
        if let Some(run) = run {
            // The run's first steps (the greeting, the assignment) before answering; after a
            // crash here the worker carries them out.
            if let Err(e) = self.process_run(ws, run, now).await {
                tracing::warn!(error = %e, run, "the run will go on in the worker");
            }
        }
        crate::stats::DECISION_LATENCY.observe(started.elapsed().as_secs_f64());
        Ok((self.conversation(ws, id, now).await?, replayed))
    }

    async fn open_once(
        &self,
        ws: i64,
        new: &NewConversation,
        key: Option<&str>,
        via: Option<&Via>,
        workflow: Option<&(i64, i64, usher_workflow::Workflow)>,
        now: Millis,
    ) -> Result<(i64, bool, Option<i64>), StoreError> {
        let mut tx = self.begin().await?;
        if let Some(key) = key {
            // The request's fingerprint: the same key must come with the same request.
            let fingerprint = crate::admin::hash_token(&format!("{new:?}"));
            let claimed = query(
                "INSERT INTO idempotency (workspace_id, key, conversation_id, created_at, fingerprint) \
                 VALUES ($1, $2, 0, $3, $4) ON CONFLICT (workspace_id, key) DO NOTHING RETURNING key",
            )
            .bind(ws)
            .bind(key)
            .bind(now)
            .bind(&fingerprint)
            .fetch_optional(&mut *tx)
            .await?;
            if claimed.is_none() {
                let row = query(
                    "SELECT conversation_id, fingerprint FROM idempotency WHERE workspace_id = $1 AND key = $2",
                )
                .bind(ws)
                .bind(key)
                .fetch_one(&mut *tx)
                .await?;
                tx.rollback().await?;
                let earlier: String = row.try_get("fingerprint")?;
                if !earlier.is_empty() && earlier != fingerprint {
                    return Err(StoreError::conflict(
                        "idempotency_key_reused",
                        "this Idempotency-Key was used with a different request",
                    ));
                }
                return Ok((row.try_get("conversation_id")?, true, None));
            }
        }
        let ctx = self.context(&mut tx, ws, now).await?;
        let mut scope = Scope::default();
        if let Some(team) = new.team {
            scope.teams.insert(team);
        }
        if let Some(agent) = new.agent {
            let exists = query("SELECT id FROM agents WHERE id = $1 AND workspace_id = $2")
                .bind(agent)
                .bind(ws)
                .fetch_optional(&mut *tx)
                .await?;
            if exists.is_none() {
                return Err(StoreError::not_found(format!("agent {agent}")));
            }
            scope.agents.insert(agent);
        }
        // The contact's previous agent joins the scope, so it is read before the locks (a
        // plain read: writing the contact row first would lock it ahead of the team and agent
        // rows, against the order every command keeps) and checked again below.
        let channel = enum_str(&new.channel);
        let previous = if new.prefer_previous_agent {
            query("SELECT last_agent_id FROM contacts WHERE workspace_id = $1 AND channel = $2 AND external_id = $3")
                .bind(ws)
                .bind(&channel)
                .bind(&new.contact.external_id)
                .fetch_optional(&mut *tx)
                .await?
                .map(|r| r.try_get::<Option<i64>, _>(0))
                .transpose()?
                .flatten()
        } else {
            None
        };
        if let Some(p) = previous {
            scope.agents.insert(p);
        }
        let Loaded { snapshot, names, when_nobody: policies, queue } =
            self.load(&mut tx, ws, &scope, Need::Decision).await?;
        // The contact: found by (channel, external id), created on first contact; one statement
        // finds or creates it and refreshes what the channel told us.
        let tags = serde_json::to_string(&new.contact.tags)?;
        // A language the request gives wins; a detected one fills in only an unknown one.
        let detected = detected_language(new);
        let row = query(
            "INSERT INTO contacts (workspace_id, channel, external_id, name, language, language_confidence, tags, created_at) \
             VALUES ($1, $2, $3, $4, COALESCE($5, $8), CASE WHEN $5 IS NULL THEN $9 END, $6, $7) \
             ON CONFLICT (workspace_id, channel, external_id) DO UPDATE SET \
             name = COALESCE(excluded.name, contacts.name), \
             language = COALESCE($5, contacts.language, $8), \
             language_confidence = CASE WHEN $5 IS NOT NULL THEN NULL \
               WHEN contacts.language IS NOT NULL THEN contacts.language_confidence ELSE $9 END, \
             tags = CASE WHEN excluded.tags = '[]' THEN contacts.tags ELSE excluded.tags END \
             RETURNING id, last_agent_id, language",
        )
        .bind(ws)
        .bind(&channel)
        .bind(&new.contact.external_id)
        .bind(&new.contact.name)
        .bind(&new.contact.language)
        .bind(&tags)
        .bind(now)
        .bind(detected.map(|d| d.tag))
        .bind(detected.map(|d| (d.confidence * 1000.0).round() as i64))
        .fetch_one(&mut *tx)
        .await?;
        let contact_id: i64 = row.try_get("id")?;
        let language: Option<String> = row.try_get("language")?;
        if new.prefer_previous_agent && row.try_get::<Option<i64>, _>("last_agent_id")? != previous {
            // Another command assigned this contact meanwhile: decide again with its agent.
            return Err(StoreError::Moved);
        }
        if let Some(via) = via {
            // One open conversation per contact and channel: a message that raced another
            // one's opening joins it instead.
            let open = query(
                "SELECT id FROM conversations WHERE contact_id = $1 AND channel_id = $2 AND status <> 'closed' LIMIT 1",
            )
            .bind(contact_id)
            .bind(via.channel)
            .fetch_optional(&mut *tx)
            .await?;
            if open.is_some() {
                return Err(StoreError::conflict(
                    "conversation_open",
                    "the contact already has an open conversation on this channel",
                ));
            }
        }
        let when_nobody = match (new.when_nobody, new.team) {
            (Some(w), _) => w,
            (None, Some(team)) => policies.get(&team).copied().unwrap_or_default(),
            (None, None) => WhenNobody::LeaveUnassigned,
        };
        let id: i64 = query(
            "INSERT INTO conversations (workspace_id, contact_id, channel, team_id, status, priority, priority_rank, \
             queued_at, request, message, opened_at, updated_at, channel_id) \
             VALUES ($1, $2, $3, $4, 'unassigned', $5, $6, $7, 'null', $8, $9, $10, $11) RETURNING id",
        )
        .bind(ws)
        .bind(contact_id)
        .bind(&channel)
        .bind(new.team)
        .bind(enum_str(&new.priority))
        .bind(new.priority as i64)
        .bind(now)
        .bind(&new.message)
        .bind(now)
        .bind(now)
        .bind(via.map(|v| v.channel))
        .fetch_one(&mut *tx)
        .await?
        .try_get(0)?;
        if let Some(text) = &new.message {
            // The first message opens the conversation's history too.
            crate::messages::insert_inbound(&mut tx, ws, id, text, via, now).await?;
        }
        if let Some(key) = key {
            query("UPDATE idempotency SET conversation_id = $1 WHERE workspace_id = $2 AND key = $3")
                .bind(id)
                .bind(ws)
                .bind(key)
                .execute(&mut *tx)
                .await?;
        }
        let target = match (new.agent, new.team) {
            (Some(agent), Some(team)) => Some(Target::Agent {
                agent: AgentId(agent),
                otherwise: Otherwise::Team { team: TeamId(team), strategy: new.strategy },
            }),
            (Some(agent), None) => Some(Target::Agent {
                agent: AgentId(agent),
                otherwise: if new.wait_for_agent {
                    Otherwise::WaitForAgent
                } else {
                    Otherwise::LeaveUnassigned
                },
            }),
            (None, Some(team)) => Some(Target::Team { team: TeamId(team), strategy: new.strategy }),
            (None, None) => None,
        };
        let mut work = Work { ws, ctx, events: Vec::new(), names };
        work.events.push(
            PendingEvent::new("conversation.opened").conversation(id).team(new.team).data(
                json!({ "channel": channel, "contact": contact_id, "priority": enum_str(&new.priority) }),
            ),
        );
        let language = if new.match_language { language } else { None };
        if let Some(found) = workflow {
            append_events(&mut tx, ws, now, &work.events).await?;
            let run = self.start_run(&mut tx, ws, found, id, now).await?;
            tx.commit().await?;
            return Ok((id, false, Some(run)));
        }
        if let Some(target) = target {
            let request = AssignRequest {
                conversation: ConversationId(id),
                channel: new.channel,
                priority: new.priority,
                arrived_at: Timestamp(now),
                target,
                previous_agent: previous.map(AgentId),
                requirements: Requirements {
                    skills: new
                        .skills
                        .iter()
                        .map(|(name, min_level)| SkillRequirement {
                            name: name.clone(),
                            min_level: *min_level,
                        })
                        .collect(),
                    language,
                },
                rules: new.rules,
                when_nobody,
            };
            // Those already waiting go first: capacity can appear without a command freeing it
            // (a daily limit resets at midnight), and a newcomer must not overtake the queue.
            let mut after = snapshot.clone();
            self.drain(&mut tx, &mut after, &queue, &mut work).await?;
            let decision = self.decide(&after, &request, ctx)?;
            queue::apply(&mut after, &request, &decision, ctx);
            self.save(&mut tx, &snapshot, &after).await?;
            self.record_decision(&mut tx, id, &request, &decision, &mut work).await?;
        } else {
            work.events.push(PendingEvent::new("conversation.left_unassigned").conversation(id));
        }
        append_events(&mut tx, ws, now, &work.events).await?;
        tx.commit().await?;
        Ok((id, false, None))
    }

    pub(crate) fn decide(
        &self,
        snapshot: &Snapshot,
        request: &AssignRequest,
        ctx: Context,
    ) -> Result<Decision, StoreError> {
        decide(snapshot, request, ctx).map_err(|e| match e {
            usher_core::decide::DecideError::UnknownTeam(t) => StoreError::not_found(format!("team {}", t.0)),
        })
    }

    /// Applies a manual change under locks, then drains the scope it freed capacity in.
    async fn manual_command(
        &self,
        ws: i64,
        id: i64,
        now: Millis,
        event: &'static str,
        extra_agent: Option<i64>,
        op: &ManualOp<'_>,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        self.manual_in(&mut tx, ws, id, now, event, extra_agent, op).await?;
        tx.commit().await
    }

    /// [`Store::manual_command`] inside the caller's transaction (a workflow's unassign or
    /// close step, applied with the rest of its run's state).
    #[allow(clippy::too_many_arguments)] // the parts of one command, each used once
    pub(crate) async fn manual_in(
        &self,
        tx: &mut Tx,
        ws: i64,
        id: i64,
        now: Millis,
        event: &'static str,
        extra_agent: Option<i64>,
        op: &ManualOp<'_>,
    ) -> Result<(), StoreError> {
        let ctx = self.context(tx, ws, now).await?;
        // Scope from an unlocked read, checked again after locking.
        let first = self.conv_for_update(tx, ws, id, false).await?;
        let agents = [first.state.assignee.map(|a| a.0), extra_agent, first.reserved_for];
        let mut scope = Scope::of_agents(self, tx, agents.into_iter().flatten()).await?;
        if let Some(t) = first.state.team {
            scope.teams.insert(t.0);
        }
        let Loaded { snapshot, queue, names, .. } = self.load(tx, ws, &scope, Need::Drain).await?;
        let conv = self.conv_for_update(tx, ws, id, true).await?;
        if conv.state.team != first.state.team || conv.state.assignee != first.state.assignee {
            return Err(StoreError::Moved);
        }
        let change = op(&snapshot, conv.state, ctx).map_err(manual_error)?;
        let mut after = snapshot.clone();
        change.apply(&mut after, ctx);
        let mut work = Work { ws, ctx, events: Vec::new(), names };
        let before_status = conv.state.status;
        if change.after != conv.state {
            let assigned_at = change.assigned.map(|_| now);
            let reserved = if change.after.status == Status::Queued { conv.reserved_for } else { None };
            query(
                "UPDATE conversations SET status = $1, assignee_id = $2, last_assignee_id = $3, team_id = $4, \
                 reserved_for = $5, assigned_at = COALESCE($6, assigned_at), \
                 closed_at = CASE WHEN $7 = 'closed' THEN $8 ELSE closed_at END, updated_at = $9 WHERE id = $10",
            )
            .bind(change.after.status.as_str())
            .bind(change.after.assignee.map(|a| a.0))
            .bind(change.after.last_assignee.map(|a| a.0))
            .bind(change.after.team.map(|t| t.0))
            .bind(reserved)
            .bind(assigned_at)
            .bind(change.after.status.as_str())
            .bind(now)
            .bind(now)
            .bind(id)
            .execute(&mut **tx)
            .await?;
            if let Some(agent) = change.assigned {
                query(
                    "UPDATE contacts SET last_agent_id = $1 WHERE id = (SELECT contact_id FROM conversations WHERE id = $2)",
                )
                .bind(agent.0)
                .bind(id)
                .execute(&mut **tx)
                .await?;
            }
            if change.released.is_some() {
                self.record_release(tx, conv.state.team, now).await?;
            }
            work.events.push(
                PendingEvent::new(event)
                    .conversation(id)
                    .agent(change.assigned.or(change.released).map(|a| a.0))
                    .team(change.after.team.map(|t| t.0))
                    .data(json!({
                        "from_status": before_status.as_str(),
                        "status": change.after.status.as_str(),
                        "released": change.released.map(|a| a.0),
                        "assigned": change.assigned.map(|a| a.0),
                    })),
            );
        }
        let freed = change.released.is_some();
        self.finish(tx, &snapshot, after, queue, id, freed, work).await
    }

    /// An agent picks a conversation for itself. Fails with `already_assigned` when someone
    /// else holds it.
    pub async fn claim(&self, ws: i64, id: i64, agent: i64, now: Millis) -> Result<Conversation, StoreError> {
        let op =
            move |s: &Snapshot, c: CoreConversation, ctx: Context| manual::claim(s, c, AgentId(agent), ctx);
        retrying!(self.manual_command(ws, id, now, "conversation.claimed", Some(agent), &op).await)?;
        self.conversation(ws, id, now).await
    }

    /// A manager assigns a conversation to an agent (a transfer when someone holds it).
    /// Caps and limits apply unless `force`.
    pub async fn assign(
        &self,
        ws: i64,
        id: i64,
        agent: i64,
        force: bool,
        now: Millis,
    ) -> Result<Conversation, StoreError> {
        let op = move |s: &Snapshot, c: CoreConversation, ctx: Context| {
            manual::assign(s, c, AgentId(agent), force, ctx)
        };
        retrying!(self.manual_command(ws, id, now, "conversation.transferred", Some(agent), &op).await)?;
        self.conversation(ws, id, now).await
    }

    /// Takes a conversation from its agent; it stays unassigned for agents to pick.
    pub async fn unassign(&self, ws: i64, id: i64, now: Millis) -> Result<Conversation, StoreError> {
        let op = |_: &Snapshot, c: CoreConversation, _: Context| manual::unassign(c);
        retrying!(self.manual_command(ws, id, now, "conversation.unassigned", None, &op).await)?;
        self.conversation(ws, id, now).await
    }

    /// Closes a conversation; the freed capacity drains the queues. A workflow whose trigger
    /// is "conversation closed" then starts a run.
    pub async fn close(&self, ws: i64, id: i64, now: Millis) -> Result<Conversation, StoreError> {
        let op = |_: &Snapshot, c: CoreConversation, _: Context| manual::close(c);
        retrying!(self.manual_command(ws, id, now, "conversation.closed", None, &op).await)?;
        let fires = |t: &usher_workflow::Trigger| *t == usher_workflow::Trigger::ConversationClosed;
        if let Err(e) = self.fire(ws, id, fires, now).await {
            tracing::warn!(error = %e, conversation = id, "a conversation-closed workflow could not start");
        }
        self.conversation(ws, id, now).await
    }

    /// Reopens a closed conversation and routes it again (its last agent first), or transfers
    /// an open one to another team and routes it there.
    pub async fn reroute(
        &self,
        ws: i64,
        id: i64,
        to_team: Option<i64>,
        now: Millis,
    ) -> Result<Conversation, StoreError> {
        retrying!(self.reroute_once(ws, id, to_team, now).await)?;
        self.conversation(ws, id, now).await
    }

    async fn reroute_once(
        &self,
        ws: i64,
        id: i64,
        to_team: Option<i64>,
        now: Millis,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        let ctx = self.context(&mut tx, ws, now).await?;
        let first = self.conv_for_update(&mut tx, ws, id, false).await?;
        let agents = [first.state.assignee, first.state.last_assignee];
        let mut scope = Scope::of_agents(self, &mut tx, agents.into_iter().flatten().map(|a| a.0)).await?;
        for t in [to_team.map(TeamId), first.state.team].into_iter().flatten() {
            scope.teams.insert(t.0);
        }
        if let Some(Target::Agent { agent, .. }) = first.request.as_ref().map(|r| &r.target) {
            scope.agents.insert(agent.0);
        }
        let Loaded { snapshot, queue, names, when_nobody: policies } =
            self.load(&mut tx, ws, &scope, Need::Decision).await?;
        let conv = self.conv_for_update(&mut tx, ws, id, true).await?;
        if conv.state.team != first.state.team || conv.state.assignee != first.state.assignee {
            return Err(StoreError::Moved);
        }
        let (change, event) = match to_team {
            Some(t) => (
                manual::transfer_to_team(conv.state, TeamId(t)).map_err(manual_error)?,
                "conversation.transferred",
            ),
            None => (manual::reopen(conv.state).map_err(manual_error)?, "conversation.reopened"),
        };
        let mut after = snapshot.clone();
        change.apply(&mut after, ctx);
        let mut work = Work { ws, ctx, events: Vec::new(), names };
        if change.released.is_some() {
            self.record_release(&mut tx, conv.state.team, now).await?;
        }
        query(
            "UPDATE conversations SET status = 'unassigned', assignee_id = NULL, team_id = $1, reserved_for = NULL, \
             queued_at = $2, closed_at = NULL, updated_at = $3 WHERE id = $4",
        )
        .bind(change.after.team.map(|t| t.0))
        .bind(now)
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        work.events.push(
            PendingEvent::new(event)
                .conversation(id)
                .agent(change.released.map(|a| a.0))
                .team(change.after.team.map(|t| t.0))
                .data(json!({ "from_team": conv.state.team.map(|t| t.0), "to_team": change.after.team.map(|t| t.0) })),
        );
        let request = match (conv.request.clone(), to_team) {
            (Some(mut r), Some(t)) => {
                r.target = Target::Team { team: TeamId(t), strategy: None };
                r.previous_agent = None;
                Some(r)
            }
            (Some(mut r), None) => {
                r.previous_agent = conv.state.last_assignee.or(r.previous_agent);
                Some(r)
            }
            (None, Some(t)) => {
                let mut r = AssignRequest::to_team(ConversationId(id), TeamId(t), Timestamp(now));
                r.channel = conv.state.channel;
                r.priority = conv.priority;
                Some(r)
            }
            (None, None) => None,
        };
        if let Some(mut request) = request {
            request.arrived_at = Timestamp(now);
            // Transferred: the new team's policy for when nobody can take it.
            if let Some(team) = to_team {
                request.when_nobody = policies.get(&team).copied().unwrap_or_default();
            }
            // Those already waiting go first (capacity freed by this command, or by a daily
            // limit that reset at midnight), then this conversation is decided.
            let waiting: Vec<Waiting> = queue.iter().filter(|w| w.conversation().0 != id).cloned().collect();
            self.drain(&mut tx, &mut after, &waiting, &mut work).await?;
            let decision = self.decide(&after, &request, ctx)?;
            queue::apply(&mut after, &request, &decision, ctx);
            self.record_decision(&mut tx, id, &request, &decision, &mut work).await?;
            self.finish(&mut tx, &snapshot, after, queue, id, false, work).await?;
            return tx.commit().await;
        }
        let freed = change.released.is_some();
        self.finish(&mut tx, &snapshot, after, queue, id, freed, work).await?;
        tx.commit().await
    }

    /// The common end of a manual command: when capacity was freed, drain the queue (less
    /// the conversation just handled), write back what moved, append the events (the caller
    /// commits).
    #[allow(clippy::too_many_arguments)] // the parts of one command, each used once
    async fn finish(
        &self,
        tx: &mut Tx,
        before: &Snapshot,
        mut after: Snapshot,
        queue: Vec<Waiting>,
        handled: i64,
        freed: bool,
        mut work: Work,
    ) -> Result<(), StoreError> {
        if freed {
            let remaining: Vec<Waiting> =
                queue.into_iter().filter(|w| w.conversation().0 != handled).collect();
            self.drain(tx, &mut after, &remaining, &mut work).await?;
        }
        self.save(tx, before, &after).await?;
        append_events(tx, work.ws, work.ctx.now.0, &work.events).await?;
        Ok(())
    }

    /// Drains the queues an agent can serve (after it came online, its cap rose, it joined a
    /// team), inside the caller's transaction.
    pub(crate) async fn drain_for_agents(
        &self,
        tx: &mut Tx,
        ws: i64,
        agents: &[i64],
        now: Millis,
        events: &mut Vec<PendingEvent>,
    ) -> Result<(), StoreError> {
        let ctx = self.context(tx, ws, now).await?;
        let scope = Scope::of_agents(self, tx, agents.iter().copied()).await?;
        let Loaded { snapshot, queue, names, .. } = self.load(tx, ws, &scope, Need::Drain).await?;
        let mut after = snapshot.clone();
        let mut work = Work { ws, ctx, events: Vec::new(), names };
        self.drain(tx, &mut after, &queue, &mut work).await?;
        self.save(tx, &snapshot, &after).await?;
        events.extend(work.events);
        Ok(())
    }

    /// A new day for the agents whose daily limit held them back on an earlier one (in their
    /// workspace's time zone): the queues they serve are drained for them at once, rather than
    /// at the next event, and their stored count is set to today's zero, so that each is
    /// started once a day. Run by every node's worker; two nodes doing it at once drain once
    /// (the drain works under the scope's locks). Answers `(workspace, agent)` for each agent
    /// started.
    ///
    /// The oldest counts come first, so that agents at their limit today (who are looked at
    /// and left) do not crowd out those whose day is over.
    pub async fn start_new_days(&self, now: Millis) -> Result<Vec<(i64, i64)>, StoreError> {
        let rows = query(
            "SELECT workspace_id, id, received_day FROM agents \
             WHERE daily_limit IS NOT NULL AND received_count >= daily_limit \
             ORDER BY received_day, id LIMIT 1000",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut by_workspace: BTreeMap<i64, Vec<(i64, i64)>> = BTreeMap::new();
        for r in &rows {
            by_workspace.entry(r.try_get(0)?).or_default().push((r.try_get(1)?, r.try_get(2)?));
        }
        let mut started = Vec::new();
        for (ws, agents) in by_workspace {
            let done = retrying!(self.start_new_day_once(ws, &agents, now).await)?;
            started.extend(done.into_iter().map(|a| (ws, a)));
        }
        Ok(started)
    }

    /// [`Store::start_new_days`] for one workspace's agents `(id, day of their count)`.
    async fn start_new_day_once(
        &self,
        ws: i64,
        agents: &[(i64, i64)],
        now: Millis,
    ) -> Result<Vec<i64>, StoreError> {
        // Agents at their limit today are the common case: found out without a transaction.
        let today = i64::from(self.today(ws, now).await?.0);
        let behind: Vec<i64> = agents.iter().filter(|(_, day)| *day < today).map(|(id, _)| *id).collect();
        if behind.is_empty() {
            return Ok(behind);
        }
        let mut tx = self.begin().await?;
        // The drain takes the locks in the order every command does; a count from an
        // earlier day already counts as zero in it. Only then is the stored count rewritten.
        let mut events = Vec::new();
        self.drain_for_agents(&mut tx, ws, &behind, now, &mut events).await?;
        for id in &behind {
            query(
                "UPDATE agents SET received_day = $1, received_count = 0 WHERE id = $2 AND received_day < $1",
            )
            .bind(today)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        append_events(&mut tx, ws, now, &events).await?;
        tx.commit().await?;
        Ok(behind)
    }

    /// The decisions taken for a conversation, oldest first.
    pub async fn trace(&self, ws: i64, id: i64) -> Result<Vec<DecisionRecord>, StoreError> {
        let exists = query("SELECT id FROM conversations WHERE id = $1 AND workspace_id = $2")
            .bind(id)
            .bind(ws)
            .fetch_optional(&self.pool)
            .await?;
        if exists.is_none() {
            return Err(StoreError::not_found(format!("conversation {id}")));
        }
        let rows = query(
            "SELECT at, outcome, agent_id, explanation, trace FROM decisions WHERE conversation_id = $1 ORDER BY id",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(DecisionRecord {
                    at: rfc3339(r.try_get("at")?),
                    outcome: r.try_get("outcome")?,
                    agent: r.try_get("agent_id")?,
                    explanation: r.try_get("explanation")?,
                    trace: json_col(r, "trace")?,
                })
            })
            .collect()
    }

    /// A team's queue in serving order, with positions and estimates.
    pub async fn team_queue(&self, ws: i64, team: i64, now: Millis) -> Result<TeamQueue, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let exists = query("SELECT id FROM teams WHERE id = $1 AND workspace_id = $2")
            .bind(team)
            .bind(ws)
            .fetch_optional(&mut *conn)
            .await?;
        if exists.is_none() {
            return Err(StoreError::not_found(format!("team {team}")));
        }
        let throughput = self.throughput(&mut conn, team, now).await?;
        let sql = format!(
            "SELECT id, priority, queued_at FROM conversations WHERE status = 'queued' AND team_id = $1 \
             ORDER BY priority_rank, queued_at, id LIMIT {}",
            limits::QUEUE_PAGE
        );
        let rows = query(&sql).bind(team).fetch_all(&mut *conn).await?;
        let mut waiting = Vec::with_capacity(rows.len());
        for (i, r) in rows.iter().enumerate() {
            let position = u32::try_from(i + 1).unwrap_or(u32::MAX);
            let queued_at: i64 = r.try_get("queued_at")?;
            waiting.push(QueueEntry {
                conversation: r.try_get("id")?,
                priority: parse_enum::<Priority>(&r.try_get::<String, _>("priority")?)?,
                position,
                estimated_wait_seconds: queue::estimate_wait(position, throughput),
                waited_seconds: u64::try_from((now - queued_at).max(0) / 1000).unwrap_or(0),
            });
        }
        Ok(TeamQueue {
            team,
            waiting,
            recent_releases: throughput.releases,
            window_seconds: throughput.window_seconds,
        })
    }

    /// Lists conversations of the workspace, newest first unless paging with `after`.
    pub async fn conversations(
        &self,
        ws: i64,
        f: &ConversationFilter,
        now: Millis,
    ) -> Result<Vec<Conversation>, StoreError> {
        let limit = f.limit.unwrap_or(100).clamp(1, limits::LIST_PAGE);
        let mut sql = format!(
            "SELECT {CONV_COLUMNS} FROM conversations c JOIN contacts k ON k.id = c.contact_id WHERE c.workspace_id = $1 \
             AND c.id > $2"
        );
        if let Some(s) = f.status {
            sql.push_str(&format!(" AND c.status = '{}'", s.as_str()));
        }
        if let Some(t) = f.team {
            sql.push_str(&format!(" AND c.team_id = {t}"));
        }
        if let Some(a) = f.assignee {
            sql.push_str(&format!(" AND c.assignee_id = {a}"));
        }
        if let Some(a) = f.visible_to_agent {
            sql.push_str(&format!(
                " AND (c.team_id IS NULL OR c.team_id IN (SELECT team_id FROM team_members WHERE agent_id = {a}))"
            ));
        }
        sql.push_str(&format!(" ORDER BY c.id LIMIT {limit}"));
        let rows = query(&sql).bind(ws).bind(f.after.unwrap_or(0)).fetch_all(&self.pool).await?;
        let mut out = Vec::with_capacity(rows.len());
        let mut conn = self.pool.acquire().await?;
        for r in &rows {
            let id: i64 = r.try_get("id")?;
            let place = if status_of(r)? == Status::Queued {
                self.queue_place(&mut conn, id, now).await?
            } else {
                None
            };
            out.push(conversation_view(r, place)?);
        }
        Ok(out)
    }

    /// The newest event's sequence number (0 for an empty log).
    pub async fn last_seq(&self, ws: i64) -> Result<i64, StoreError> {
        self.sequence_events(ws).await?;
        query("SELECT event_seq FROM workspaces WHERE id = $1")
            .bind(ws)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::not_found(format!("workspace {ws}")))?
            .try_get(0)
    }

    /// Events after `after`, oldest first, at most `limit` (capped). An event that reports a
    /// decision carries its explanation and trace in `data`, joined from the decision.
    pub async fn events(&self, ws: i64, after: i64, limit: i64) -> Result<Vec<Event>, StoreError> {
        let limit = limit.clamp(1, limits::EVENTS_PAGE);
        self.sequence_events(ws).await?;
        let sql = format!(
            "SELECT e.seq, e.kind, e.at, e.conversation_id, e.agent_id, e.team_id, e.data, \
             d.explanation AS decision_explanation, d.trace AS decision_trace FROM events e \
             LEFT JOIN decisions d ON d.id = e.decision_id \
             WHERE e.workspace_id = $1 AND e.seq > $2 ORDER BY e.seq LIMIT {limit}"
        );
        let rows = query(&sql).bind(ws).bind(after).fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                let mut data: serde_json::Value = json_col(r, "data")?;
                if let Some(explanation) = r.try_get::<Option<String>, _>("decision_explanation")? {
                    let trace: serde_json::Value = json_col(r, "decision_trace")?;
                    data = json!({ "explanation": explanation, "trace": trace });
                }
                Ok(Event {
                    seq: r.try_get("seq")?,
                    kind: r.try_get("kind")?,
                    at: rfc3339(r.try_get("at")?),
                    conversation: r.try_get("conversation_id")?,
                    agent: r.try_get("agent_id")?,
                    team: r.try_get("team_id")?,
                    data,
                })
            })
            .collect()
    }

    /// Recounts every agent's open conversations from the conversations table and reports
    /// counters that disagree (none, when the store is correct).
    pub async fn audit_counters(&self, ws: i64) -> Result<Vec<CounterMismatch>, StoreError> {
        let rows = query(
            "SELECT a.id, a.open_count, a.open_by_channel, \
             (SELECT COUNT(*) FROM conversations c WHERE c.assignee_id = a.id AND c.status = 'assigned') AS actual \
             FROM agents a WHERE a.workspace_id = $1 ORDER BY a.id",
        )
        .bind(ws)
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::new();
        for r in &rows {
            let agent: i64 = r.try_get("id")?;
            let stored: i64 = r.try_get("open_count")?;
            let actual: i64 = r.try_get("actual")?;
            if stored != actual {
                out.push(CounterMismatch { agent, counter: "open".into(), stored, actual });
            }
            let by: Vec<i64> = json_col(r, "open_by_channel")?;
            if by.iter().sum::<i64>() != actual {
                out.push(CounterMismatch {
                    agent,
                    counter: "open_by_channel".into(),
                    stored: by.iter().sum(),
                    actual,
                });
            }
        }
        let held = query(
            "SELECT COUNT(*) FROM conversations WHERE workspace_id = $1 AND ((status = 'assigned') <> (assignee_id IS NOT NULL))",
        )
        .bind(ws)
        .fetch_one(&self.pool)
        .await?
        .try_get::<i64, _>(0)?;
        if held != 0 {
            out.push(CounterMismatch {
                agent: 0,
                counter: "assigned_without_assignee".into(),
                stored: held,
                actual: 0,
            });
        }
        Ok(out)
    }
}

/// A stored confidence (thousandths) as the API shows it (0 to 1).
pub(crate) fn confidence(thousandths: Option<i64>) -> Option<f64> {
    thousandths.map(|t| t as f64 / 1000.0)
}

/// What came of routing a conversation for a workflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Routed {
    /// Assigned to this agent.
    Assigned(i64),
    /// Waiting in a queue.
    Queued,
    /// Nobody took it; it stays unassigned.
    Unassigned,
}

impl Store {
    /// Routes an existing conversation with `request` (a workflow's assign step) inside the
    /// caller's transaction: those waiting go first, then it is decided; its team becomes the
    /// request's. Agents in `exclude` are passed over (a reassignment after silence). A
    /// conversation someone already holds is left as it is.
    pub(crate) async fn route_in(
        &self,
        tx: &mut Tx,
        ws: i64,
        mut request: AssignRequest,
        exclude: &[i64],
        now: Millis,
    ) -> Result<Routed, StoreError> {
        let id = request.conversation.0;
        let ctx = self.context(tx, ws, now).await?;
        let first = self.conv_for_update(tx, ws, id, false).await?;
        if let Some(a) = first.state.assignee.filter(|_| exclude.is_empty()) {
            return Ok(Routed::Assigned(a.0));
        }
        if first.state.status == Status::Closed {
            return Ok(Routed::Unassigned);
        }
        let agents = [first.state.assignee.map(|a| a.0)].into_iter().flatten();
        let mut scope = Scope::of_agents(self, tx, agents).await?;
        scope.teams.extend(request.team().map(|t| t.0));
        scope.teams.extend(first.state.team.map(|t| t.0));
        if let Target::Agent { agent, .. } = request.target {
            scope.agents.insert(agent.0);
        }
        scope.agents.extend(request.previous_agent.map(|a| a.0));
        let Loaded { snapshot, queue, names, .. } = self.load(tx, ws, &scope, Need::Decision).await?;
        let conv = self.conv_for_update(tx, ws, id, true).await?;
        if conv.state.assignee != first.state.assignee || conv.state.status != first.state.status {
            return Err(StoreError::Moved);
        }
        let mut after = snapshot.clone();
        let mut work = Work { ws, ctx, events: Vec::new(), names };
        // A reassignment: the silent agent lets go first.
        if let Some(held) = conv.state.assignee {
            let change = manual::unassign(conv.state).map_err(manual_error)?;
            change.apply(&mut after, ctx);
            work.events
                .push(PendingEvent::new("conversation.unassigned").conversation(id).agent(Some(held.0)));
        }
        query("UPDATE conversations SET team_id = $1, status = 'unassigned', assignee_id = NULL, updated_at = $2 WHERE id = $3")
            .bind(request.team().map(|t| t.0))
            .bind(now)
            .bind(id)
            .execute(&mut **tx)
            .await?;
        request.channel = conv.state.channel;
        request.priority = conv.priority;
        let waiting: Vec<Waiting> = queue.iter().filter(|w| w.conversation().0 != id).cloned().collect();
        self.drain(tx, &mut after, &waiting, &mut work).await?;
        // Passed over: decided as if they were offline.
        let mut view = after.clone();
        for a in exclude {
            view.set_presence(AgentId(*a), usher_core::model::Presence::Offline);
        }
        let decision = self.decide(&view, &request, ctx)?;
        queue::apply(&mut after, &request, &decision, ctx);
        self.record_decision(tx, id, &request, &decision, &mut work).await?;
        self.finish(tx, &snapshot, after, queue, id, false, work).await?;
        Ok(match decision.outcome {
            Outcome::Assigned(a) => Routed::Assigned(a.0),
            Outcome::Queued { .. } => Routed::Queued,
            Outcome::Unassigned => Routed::Unassigned,
        })
    }
}
