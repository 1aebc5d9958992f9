//! Workspaces, tokens, teams and agents: the configuration side. Changes that free capacity
//! (an agent comes online, a cap rises, an agent joins a team) drain the queues in the same
//! transaction.

use crate::db::{append_events, json_col, retrying, u32_col, PendingEvent, Store, Tx};
use crate::error::StoreError;
use crate::limits;
use crate::presence::StatusChange;
use crate::routing::{enum_str, parse_enum, Need, Scope};
use crate::sql::{query, Row};
use crate::types::*;
use rand::RngCore;
use serde_json::json;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use usher_core::clock::{local_day, parse_time_zone};
use usher_core::model::{Presence, Rotation, Timestamp};

/// Tokens are 32 random bytes, so a plain SHA-256 is enough to store them: there is nothing to
/// guess that a slow hash would protect.
pub(crate) fn hash_token(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    // ThreadRng is a CSPRNG seeded from the operating system.
    rand::rng().fill_bytes(&mut bytes);
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("usher_{hex}")
}

pub(crate) fn check_len(field: &str, value: &str) -> Result<(), StoreError> {
    if value.contains('\0') {
        return Err(StoreError::invalid("invalid_field", format!("{field} contains a NUL character")));
    }
    if value.trim().is_empty() {
        return Err(StoreError::invalid("invalid_field", format!("{field} must not be empty")));
    }
    if value.len() > limits::NAME_LEN {
        return Err(StoreError::invalid(
            "too_long",
            format!("{field} is longer than {} bytes", limits::NAME_LEN),
        ));
    }
    Ok(())
}

fn check_time_zone(tz: &str) -> Result<(), StoreError> {
    parse_time_zone(tz).map(|_| ()).map_err(|e| StoreError::invalid("unknown_time_zone", e.to_string()))
}

impl Store {
    /// Whether any workspace exists.
    pub async fn is_empty(&self) -> Result<bool, StoreError> {
        let n: i64 = query("SELECT COUNT(*) FROM workspaces").fetch_one(&self.pool).await?.try_get(0)?;
        Ok(n == 0)
    }

    /// On an empty database, creates the first workspace and its admin token (`secret`, or a
    /// random one) in one transaction that excludes every other node doing the same (an
    /// advisory lock on PostgreSQL, the single writer on SQLite). Returns `None` when some
    /// workspace exists already, so nodes starting together create exactly one.
    pub async fn bootstrap(
        &self,
        name: &str,
        time_zone: &str,
        secret: Option<&str>,
        now: Millis,
    ) -> Result<Option<(Workspace, NewToken)>, StoreError> {
        check_len("name", name)?;
        check_time_zone(time_zone)?;
        let token = match secret {
            Some(s) if s.len() >= 16 => s.to_string(),
            Some(_) => {
                return Err(StoreError::invalid("token_too_short", "a token must be at least 16 characters"))
            }
            None => new_secret(),
        };
        let mut tx = self.begin().await?;
        if self.backend == crate::db::Backend::Postgres {
            query("SELECT CAST(pg_advisory_xact_lock(7283) AS TEXT)").fetch_one(&mut *tx).await?;
        }
        let n: i64 = query("SELECT COUNT(*) FROM workspaces").fetch_one(&mut *tx).await?.try_get(0)?;
        if n > 0 {
            tx.rollback().await?;
            return Ok(None);
        }
        let ws: i64 =
            query("INSERT INTO workspaces (name, time_zone, created_at) VALUES ($1, $2, $3) RETURNING id")
                .bind(name)
                .bind(time_zone)
                .bind(now)
                .fetch_one(&mut *tx)
                .await?
                .try_get(0)?;
        let id: i64 = query(
            "INSERT INTO tokens (workspace_id, hash, role, agent_id, created_at) VALUES ($1, $2, 'admin', NULL, $3) \
             RETURNING id",
        )
        .bind(ws)
        .bind(hash_token(&token))
        .bind(now)
        .fetch_one(&mut *tx)
        .await?
        .try_get(0)?;
        let events = [PendingEvent::new("token.created").data(json!({ "token": id, "role": "admin" }))];
        append_events(&mut tx, ws, now, &events).await?;
        tx.commit().await?;
        let workspace = Workspace { id: ws, name: name.into(), time_zone: time_zone.into() };
        Ok(Some((workspace, NewToken { id, token, role: Role::Admin, agent: None, workspace: ws })))
    }

    /// Creates a workspace.
    pub async fn create_workspace(
        &self,
        name: &str,
        time_zone: &str,
        now: Millis,
    ) -> Result<Workspace, StoreError> {
        check_len("name", name)?;
        check_time_zone(time_zone)?;
        let id: i64 =
            query("INSERT INTO workspaces (name, time_zone, created_at) VALUES ($1, $2, $3) RETURNING id")
                .bind(name)
                .bind(time_zone)
                .bind(now)
                .fetch_one(&self.pool)
                .await?
                .try_get(0)?;
        Ok(Workspace { id, name: name.into(), time_zone: time_zone.into() })
    }

    /// One workspace.
    pub async fn workspace(&self, id: i64) -> Result<Workspace, StoreError> {
        let row = query("SELECT id, name, time_zone FROM workspaces WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::not_found(format!("workspace {id}")))?;
        Ok(Workspace {
            id: row.try_get("id")?,
            name: row.try_get("name")?,
            time_zone: row.try_get("time_zone")?,
        })
    }

    /// Creates a token. The secret is returned once; only its hash is stored. With `secret`
    /// given (the bootstrap token from the environment), that value is used.
    pub async fn create_token(
        &self,
        ws: i64,
        role: Role,
        agent: Option<i64>,
        secret: Option<&str>,
        now: Millis,
    ) -> Result<NewToken, StoreError> {
        match (role, agent) {
            (Role::Agent, None) => {
                return Err(StoreError::invalid("agent_required", "an agent token must name its agent"))
            }
            (Role::Agent, Some(a)) => {
                self.agent(ws, a, now).await?;
            }
            (_, Some(_)) => {
                return Err(StoreError::invalid("agent_not_allowed", "only agent tokens name an agent"))
            }
            _ => {}
        }
        let token = match secret {
            Some(s) if s.len() >= 16 => s.to_string(),
            Some(_) => {
                return Err(StoreError::invalid("token_too_short", "a token must be at least 16 characters"))
            }
            None => new_secret(),
        };
        let mut tx = self.begin().await?;
        let row = query(
            "INSERT INTO tokens (workspace_id, hash, role, agent_id, created_at) VALUES ($1, $2, $3, $4, $5) RETURNING id",
        )
        .bind(ws)
        .bind(hash_token(&token))
        .bind(role.as_str())
        .bind(agent)
        .bind(now)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| {
            if e.is_unique_violation() {
                StoreError::conflict("token_exists", "that token exists already")
            } else {
                e
            }
        })?;
        let id: i64 = row.try_get(0)?;
        let events = [PendingEvent::new("token.created")
            .agent(agent)
            .data(json!({ "token": id, "role": role.as_str() }))];
        append_events(&mut tx, ws, now, &events).await?;
        tx.commit().await?;
        Ok(NewToken { id, token, role, agent, workspace: ws })
    }

    /// Who a token speaks for, if it exists.
    pub async fn authenticate(&self, token: &str) -> Result<Option<Principal>, StoreError> {
        let row = query("SELECT id, workspace_id, role, agent_id FROM tokens WHERE hash = $1")
            .bind(hash_token(token))
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let role = Role::parse(&row.try_get::<String, _>("role")?)
            .ok_or_else(|| StoreError::Corrupt("unknown role".into()))?;
        Ok(Some(Principal {
            workspace: row.try_get("workspace_id")?,
            role,
            agent: row.try_get("agent_id")?,
            token_id: row.try_get("id")?,
        }))
    }

    /// Creates a team.
    pub async fn create_team(&self, ws: i64, new: &NewTeam, now: Millis) -> Result<Team, StoreError> {
        check_len("name", &new.name)?;
        check_time_zone(&new.time_zone)?;
        let mut tx = self.begin().await?;
        let row = query(
            "INSERT INTO teams (workspace_id, name, strategy, only_online, when_nobody, time_zone, \
             default_handle_seconds, rotation, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
        )
        .bind(ws)
        .bind(&new.name)
        .bind(new.strategy.as_str())
        .bind(i64::from(new.only_online))
        .bind(enum_str(&new.when_nobody))
        .bind(&new.time_zone)
        .bind(i64::from(new.default_handle_seconds))
        .bind(serde_json::to_string(&Rotation::default())?)
        .bind(now)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| {
            if e.is_unique_violation() {
                StoreError::conflict("name_taken", format!("a team named {:?} exists already", new.name))
            } else {
                e
            }
        })?;
        let id: i64 = row.try_get(0)?;
        append_events(
            &mut tx,
            ws,
            now,
            &[PendingEvent::new("team.created").team(Some(id)).data(json!({ "name": new.name }))],
        )
        .await?;
        tx.commit().await?;
        self.team(ws, id).await
    }

    /// Changes a team's settings.
    pub async fn update_team(
        &self,
        ws: i64,
        id: i64,
        patch: &TeamPatch,
        now: Millis,
    ) -> Result<Team, StoreError> {
        let current = self.team(ws, id).await?;
        if let Some(name) = &patch.name {
            check_len("name", name)?;
        }
        if let Some(tz) = &patch.time_zone {
            check_time_zone(tz)?;
        }
        let mut tx = self.begin().await?;
        query(
            "UPDATE teams SET name = $1, strategy = $2, only_online = $3, when_nobody = $4, time_zone = $5, \
             default_handle_seconds = $6 WHERE id = $7 AND workspace_id = $8",
        )
        .bind(patch.name.clone().unwrap_or(current.name))
        .bind(patch.strategy.unwrap_or(current.strategy).as_str())
        .bind(i64::from(patch.only_online.unwrap_or(current.only_online)))
        .bind(enum_str(&patch.when_nobody.unwrap_or(current.when_nobody)))
        .bind(patch.time_zone.clone().unwrap_or(current.time_zone))
        .bind(i64::from(patch.default_handle_seconds.unwrap_or(current.default_handle_seconds)))
        .bind(id)
        .bind(ws)
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            if e.is_unique_violation() {
                StoreError::conflict("name_taken", "a team with that name exists already")
            } else {
                e
            }
        })?;
        let mut events = vec![PendingEvent::new("team.updated").team(Some(id))];
        // Turning only-online off may make agents eligible: drain.
        let members = current.members.clone();
        self.drain_for_agents(&mut tx, ws, &members, now, &mut events).await?;
        append_events(&mut tx, ws, now, &events).await?;
        tx.commit().await?;
        self.team(ws, id).await
    }

    /// One team.
    pub async fn team(&self, ws: i64, id: i64) -> Result<Team, StoreError> {
        let row = self.row_in("teams", "team", ws, id).await?;
        let members = query("SELECT agent_id FROM team_members WHERE team_id = $1 ORDER BY agent_id")
            .bind(id)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| r.try_get::<i64, _>(0))
            .collect::<Result<Vec<_>, _>>()?;
        team_view(&row, members)
    }

    /// All teams of the workspace.
    pub async fn teams(&self, ws: i64) -> Result<Vec<Team>, StoreError> {
        let rows = query("SELECT * FROM teams WHERE workspace_id = $1 ORDER BY id")
            .bind(ws)
            .fetch_all(&self.pool)
            .await?;
        let mut members: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
        for r in query(
            "SELECT m.team_id, m.agent_id FROM team_members m JOIN teams t ON t.id = m.team_id \
             WHERE t.workspace_id = $1 ORDER BY m.agent_id",
        )
        .bind(ws)
        .fetch_all(&self.pool)
        .await?
        {
            members.entry(r.try_get("team_id")?).or_default().push(r.try_get("agent_id")?);
        }
        rows.iter()
            .map(|r| team_view(r, members.remove(&r.try_get::<i64, _>("id")?).unwrap_or_default()))
            .collect()
    }

    async fn check_teams(&self, tx: &mut Tx, ws: i64, teams: &[i64]) -> Result<(), StoreError> {
        if teams.len() > limits::LIST_LEN {
            return Err(StoreError::invalid("too_many", format!("at most {} teams", limits::LIST_LEN)));
        }
        for &t in teams {
            let found = query("SELECT id FROM teams WHERE id = $1 AND workspace_id = $2")
                .bind(t)
                .bind(ws)
                .fetch_optional(&mut **tx)
                .await?;
            if found.is_none() {
                return Err(StoreError::not_found(format!("team {t}")));
            }
            let n: i64 = query("SELECT COUNT(*) FROM team_members WHERE team_id = $1")
                .bind(t)
                .fetch_one(&mut **tx)
                .await?
                .try_get(0)?;
            if usize::try_from(n).unwrap_or(usize::MAX) >= limits::TEAM_MEMBERS {
                return Err(StoreError::invalid(
                    "team_full",
                    format!("team {t} has {} members", limits::TEAM_MEMBERS),
                ));
            }
        }
        Ok(())
    }

    fn check_agent_fields(
        skills: &BTreeMap<String, u8>,
        languages: &[String],
        weight: u32,
    ) -> Result<(), StoreError> {
        if skills.len() > limits::LIST_LEN || languages.len() > limits::LIST_LEN {
            return Err(StoreError::invalid(
                "too_many",
                format!("at most {} skills or languages", limits::LIST_LEN),
            ));
        }
        for (name, level) in skills {
            check_len("skill name", name)?;
            if !(1..=5).contains(level) {
                return Err(StoreError::invalid(
                    "invalid_skill_level",
                    format!("skill {name}: level must be 1 to 5"),
                ));
            }
        }
        for l in languages {
            check_len("language", l)?;
        }
        if weight > 1_000_000 {
            return Err(StoreError::invalid("invalid_weight", "weight must be at most 1000000"));
        }
        Ok(())
    }

    /// Creates an agent.
    pub async fn create_agent(&self, ws: i64, new: &NewAgent, now: Millis) -> Result<Agent, StoreError> {
        check_len("name", &new.name)?;
        check_len("email", &new.email)?;
        if !new.email.contains('@') {
            return Err(StoreError::invalid("invalid_email", "email must contain @"));
        }
        Self::check_agent_fields(&new.skills, &new.languages, new.weight)?;
        let id = retrying!(self.create_agent_once(ws, new, now).await)?;
        self.agent(ws, id, now).await
    }

    async fn create_agent_once(&self, ws: i64, new: &NewAgent, now: Millis) -> Result<i64, StoreError> {
        let mut tx = self.begin().await?;
        self.check_teams(&mut tx, ws, &new.teams).await?;
        let row = query(
            "INSERT INTO agents (workspace_id, name, email, status, max_open, channel_caps, daily_limit, weight, \
             skills, languages, open_by_channel, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
             RETURNING id",
        )
        .bind(ws)
        .bind(&new.name)
        .bind(&new.email)
        .bind(new.status.as_str())
        .bind(i64::from(new.max_open))
        .bind(serde_json::to_string(&new.channel_caps)?)
        .bind(new.daily_limit.map(i64::from))
        .bind(i64::from(new.weight))
        .bind(serde_json::to_string(&new.skills)?)
        .bind(serde_json::to_string(&new.languages)?)
        .bind(serde_json::to_string(&[0u32; 12])?)
        .bind(now)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| {
            if e.is_unique_violation() {
                StoreError::conflict("email_taken", format!("an agent with e-mail {} exists already", new.email))
            } else {
                e
            }
        })?;
        let id: i64 = row.try_get(0)?;
        for t in &new.teams {
            query("INSERT INTO team_members (team_id, agent_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                .bind(t)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        let mut events = vec![PendingEvent::new("agent.created")
            .agent(Some(id))
            .data(json!({ "name": new.name, "teams": new.teams }))];
        self.drain_for_agents(&mut tx, ws, &[id], now, &mut events).await?;
        append_events(&mut tx, ws, now, &events).await?;
        tx.commit().await?;
        Ok(id)
    }

    /// Changes an agent's settings; raising a cap or joining a team drains the queues.
    pub async fn update_agent(
        &self,
        ws: i64,
        id: i64,
        patch: &AgentPatch,
        now: Millis,
    ) -> Result<Agent, StoreError> {
        let current = self.agent(ws, id, now).await?;
        if let Some(n) = &patch.name {
            check_len("name", n)?;
        }
        Self::check_agent_fields(
            patch.skills.as_ref().unwrap_or(&current.skills),
            patch.languages.as_deref().unwrap_or(&current.languages),
            patch.weight.unwrap_or(current.weight),
        )?;
        retrying!(self.update_agent_once(ws, id, patch, now).await)?;
        self.agent(ws, id, now).await
    }

    async fn update_agent_once(
        &self,
        ws: i64,
        id: i64,
        patch: &AgentPatch,
        now: Millis,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        if let Some(teams) = &patch.teams {
            self.check_teams(&mut tx, ws, teams).await?;
        }
        // Lock the agent's teams, old and new, and their agents before writing the agent row:
        // teams first, as every command does, so none can deadlock with this one.
        let mut scope = Scope::of_agents(self, &mut tx, [id]).await?;
        scope.teams.extend(patch.teams.iter().flatten().copied());
        self.load(&mut tx, ws, &scope, Need::Locks).await?;
        // Only the fields the patch names are written, each under the lock: a concurrent
        // patch of other fields is not overwritten with what this one read before.
        query(
            "UPDATE agents SET name = COALESCE($1, name), max_open = COALESCE($2, max_open), \
             daily_limit = CASE WHEN $3 = 1 THEN $4 ELSE daily_limit END, weight = COALESCE($5, weight), \
             skills = COALESCE($6, skills), languages = COALESCE($7, languages), \
             channel_caps = COALESCE($8, channel_caps) WHERE id = $9 AND workspace_id = $10",
        )
        .bind(patch.name.clone())
        .bind(patch.max_open.map(i64::from))
        .bind(i64::from(patch.daily_limit.is_some()))
        .bind(patch.daily_limit.flatten().map(i64::from))
        .bind(patch.weight.map(i64::from))
        .bind(patch.skills.as_ref().map(serde_json::to_string).transpose()?)
        .bind(patch.languages.as_ref().map(serde_json::to_string).transpose()?)
        .bind(patch.channel_caps.as_ref().map(serde_json::to_string).transpose()?)
        .bind(id)
        .bind(ws)
        .execute(&mut *tx)
        .await?;
        if let Some(teams) = &patch.teams {
            query("DELETE FROM team_members WHERE agent_id = $1").bind(id).execute(&mut *tx).await?;
            for t in teams {
                query("INSERT INTO team_members (team_id, agent_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                    .bind(t)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        let mut events = vec![PendingEvent::new("agent.updated").agent(Some(id))];
        self.drain_for_agents(&mut tx, ws, &[id], now, &mut events).await?;
        append_events(&mut tx, ws, now, &events).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Changes an agent's presence; coming online drains the queues it can serve.
    pub async fn set_status(
        &self,
        ws: i64,
        id: i64,
        status: Presence,
        now: Millis,
    ) -> Result<Agent, StoreError> {
        retrying!(self.set_status_once(ws, id, StatusChange::To(status), now).await)?;
        self.agent(ws, id, now).await
    }

    /// Changes an agent's presence: to the one asked for (by hand: Usher forgets any presence
    /// it took away), or as its console links say (`usher_core::presence::follow`, decided on
    /// the locked row). Answers whether the presence changed.
    pub(crate) async fn set_status_once(
        &self,
        ws: i64,
        id: i64,
        change: StatusChange,
        now: Millis,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin().await?;
        query("SELECT id FROM agents WHERE id = $1 AND workspace_id = $2")
            .bind(id)
            .bind(ws)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| StoreError::not_found(format!("agent {id}")))?;
        // Lock the agent's teams and their agents before writing the agent row (teams first,
        // as every command does); the presence compared is the locked one, and the drain below
        // works under these locks.
        let scope = Scope::of_agents(self, &mut tx, [id]).await?;
        let loaded = self.load(&mut tx, ws, &scope, Need::Locks).await?;
        let before = loaded
            .snapshot
            .agent(usher_core::model::AgentId(id))
            .map(|a| a.presence)
            .ok_or_else(|| StoreError::not_found(format!("agent {id}")))?;
        let (status, taken, by) = match change {
            StatusChange::To(status) => (status, None, "hand"),
            StatusChange::FollowLinks { grace_millis } => {
                let links = self.links_in(&mut tx, id).await?;
                match usher_core::presence::follow(before, &links, Timestamp(now), grace_millis) {
                    usher_core::presence::Follow::Stay => {
                        tx.rollback().await?;
                        return Ok(false);
                    }
                    usher_core::presence::Follow::TurnAway { from } => {
                        (Presence::Away, Some(from), "connection")
                    }
                    usher_core::presence::Follow::Return { to } => (to, None, "connection"),
                }
            }
        };
        query("UPDATE agents SET status = $1, away_from = $2 WHERE id = $3")
            .bind(status.as_str())
            .bind(taken.map(|p| p.as_str()))
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if before == status {
            tx.commit().await?;
            return Ok(false);
        }
        let mut events = vec![PendingEvent::new("agent.status_changed")
            .agent(Some(id))
            .data(json!({ "from": before.as_str(), "to": status.as_str(), "by": by }))];
        if status != Presence::Offline {
            self.drain_for_agents(&mut tx, ws, &[id], now, &mut events).await?;
        }
        append_events(&mut tx, ws, now, &events).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// One agent.
    pub async fn agent(&self, ws: i64, id: i64, now: Millis) -> Result<Agent, StoreError> {
        let row = query("SELECT a.*, w.time_zone AS ws_time_zone FROM agents a JOIN workspaces w ON w.id = a.workspace_id WHERE a.id = $1 AND a.workspace_id = $2")
            .bind(id)
            .bind(ws)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::not_found(format!("agent {id}")))?;
        let teams = query("SELECT team_id FROM team_members WHERE agent_id = $1 ORDER BY team_id")
            .bind(id)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| r.try_get::<i64, _>(0))
            .collect::<Result<Vec<_>, _>>()?;
        agent_view(&row, teams, now)
    }

    /// All agents of the workspace.
    pub async fn agents(&self, ws: i64, now: Millis) -> Result<Vec<Agent>, StoreError> {
        let rows = query("SELECT a.*, w.time_zone AS ws_time_zone FROM agents a JOIN workspaces w ON w.id = a.workspace_id WHERE a.workspace_id = $1 ORDER BY a.id")
            .bind(ws)
            .fetch_all(&self.pool)
            .await?;
        let mut teams: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
        for r in query(
            "SELECT m.team_id, m.agent_id FROM team_members m JOIN agents a ON a.id = m.agent_id \
             WHERE a.workspace_id = $1 ORDER BY m.team_id",
        )
        .bind(ws)
        .fetch_all(&self.pool)
        .await?
        {
            teams.entry(r.try_get("agent_id")?).or_default().push(r.try_get("team_id")?);
        }
        rows.iter()
            .map(|r| agent_view(r, teams.remove(&r.try_get::<i64, _>("id")?).unwrap_or_default(), now))
            .collect()
    }
}

fn team_view(row: &Row, members: Vec<i64>) -> Result<Team, StoreError> {
    Ok(Team {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        strategy: parse_enum(&row.try_get::<String, _>("strategy")?)?,
        only_online: row.try_get::<i64, _>("only_online")? != 0,
        time_zone: row.try_get("time_zone")?,
        when_nobody: parse_enum(&row.try_get::<String, _>("when_nobody")?)?,
        default_handle_seconds: u32_col(row, "default_handle_seconds")?,
        members,
    })
}

fn agent_view(row: &Row, teams: Vec<i64>, now: Millis) -> Result<Agent, StoreError> {
    let core = crate::routing::core_agent(row)?;
    let tz = parse_time_zone(&row.try_get::<String, _>("ws_time_zone")?)
        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let today = local_day(Timestamp(now), tz);
    Ok(Agent {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        email: row.try_get("email")?,
        status: core.presence,
        max_open: core.max_open,
        channel_caps: json_col(row, "channel_caps")?,
        daily_limit: core.daily_limit,
        weight: core.weight,
        skills: json_col(row, "skills")?,
        languages: core.languages,
        teams,
        open: core.open,
        received_today: core.received.on(today),
        last_assigned_at: core.last_assigned_at.map(|t| rfc3339(t.0)),
    })
}

impl Store {
    /// Gauges for `/metrics`, read from the database so every node reports the same truth:
    /// queue length and oldest wait per team, open conversations by status, agents by status.
    pub async fn gauges(&self, now: Millis) -> Result<String, StoreError> {
        use std::fmt::Write as _;
        let mut out = String::new();
        out.push_str("# HELP usher_queue_length Conversations waiting in a team's queue.\n# TYPE usher_queue_length gauge\n");
        let mut oldest = String::new();
        oldest.push_str(
            "# HELP usher_queue_oldest_wait_seconds How long the head of a team's queue has waited.\n\
             # TYPE usher_queue_oldest_wait_seconds gauge\n",
        );
        let rows = query(
            "SELECT t.workspace_id, t.id, t.name, COUNT(c.id) AS waiting, MIN(c.queued_at) AS oldest FROM teams t \
             LEFT JOIN conversations c ON c.team_id = t.id AND c.status = 'queued' GROUP BY t.workspace_id, t.id, t.name \
             ORDER BY t.id",
        )
        .fetch_all(&self.pool)
        .await?;
        for r in &rows {
            let ws: i64 = r.try_get("workspace_id")?;
            let id: i64 = r.try_get("id")?;
            let n: i64 = r.try_get("waiting")?;
            let since: Option<i64> = r.try_get("oldest")?;
            let wait = since.map_or(0, |s| (now - s).max(0) / 1000);
            let _ = writeln!(out, "usher_queue_length{{workspace=\"{ws}\",team=\"{id}\"}} {n}");
            let _ = writeln!(
                oldest,
                "usher_queue_oldest_wait_seconds{{workspace=\"{ws}\",team=\"{id}\"}} {wait}"
            );
        }
        out.push_str(&oldest);
        out.push_str(
            "# HELP usher_conversations Conversations by status.\n# TYPE usher_conversations gauge\n",
        );
        for r in query("SELECT status, COUNT(*) AS n FROM conversations GROUP BY status ORDER BY status")
            .fetch_all(&self.pool)
            .await?
        {
            let status: String = r.try_get("status")?;
            let n: i64 = r.try_get("n")?;
            let _ = writeln!(out, "usher_conversations{{status=\"{status}\"}} {n}");
        }
        out.push_str("# HELP usher_agents Agents by status.\n# TYPE usher_agents gauge\n");
        for r in query("SELECT status, COUNT(*) AS n FROM agents GROUP BY status ORDER BY status")
            .fetch_all(&self.pool)
            .await?
        {
            let status: String = r.try_get("status")?;
            let n: i64 = r.try_get("n")?;
            let _ = writeln!(out, "usher_agents{{status=\"{status}\"}} {n}");
        }
        Ok(out)
    }
}

fn contact_view(row: &Row) -> Result<Contact, StoreError> {
    Ok(Contact {
        id: row.try_get("id")?,
        channel: parse_enum(&row.try_get::<String, _>("channel")?)?,
        external_id: row.try_get("external_id")?,
        name: row.try_get("name")?,
        language: row.try_get("language")?,
        language_confidence: crate::routing::confidence(row.try_get("language_confidence")?),
        tags: json_col(row, "tags")?,
        attributes: json_col(row, "attributes")?,
    })
}

impl Store {
    /// One contact.
    pub async fn contact(&self, ws: i64, id: i64) -> Result<Contact, StoreError> {
        let row = self.row_in("contacts", "contact", ws, id).await?;
        contact_view(&row)
    }

    /// Contacts of the workspace in id order after `after`, optionally only the one with an
    /// external id on a channel.
    pub async fn contacts(
        &self,
        ws: i64,
        channel_and_external_id: Option<(&str, &str)>,
        after: i64,
        limit: i64,
    ) -> Result<Vec<Contact>, StoreError> {
        let limit = limit.clamp(1, limits::LIST_PAGE);
        let rows = match channel_and_external_id {
            Some((channel, external)) => {
                query(
                    "SELECT * FROM contacts WHERE workspace_id = $1 AND channel = $2 AND external_id = $3 AND id > $4",
                )
                .bind(ws)
                .bind(channel)
                .bind(external)
                .bind(after)
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                query(&format!(
                    "SELECT * FROM contacts WHERE workspace_id = $1 AND id > $2 ORDER BY id LIMIT {limit}"
                ))
                .bind(ws)
                .bind(after)
                .fetch_all(&self.pool)
                .await?
            }
        };
        rows.iter().map(contact_view).collect()
    }

    /// Changes a contact's name, language, tags or attributes.
    pub async fn update_contact(
        &self,
        ws: i64,
        id: i64,
        patch: &ContactPatch,
        now: Millis,
    ) -> Result<Contact, StoreError> {
        let current = self.contact(ws, id).await?;
        let mut attributes = current.attributes.clone();
        if let Some(changes) = &patch.attributes {
            for (k, v) in changes {
                check_len("attribute name", k)?;
                if v.len() > limits::NAME_LEN * 5 {
                    return Err(StoreError::invalid("too_long", format!("attribute {k} is too long")));
                }
                if v.is_empty() {
                    attributes.remove(k);
                } else {
                    attributes.insert(k.clone(), v.clone());
                }
            }
            if attributes.len() > limits::LIST_LEN {
                return Err(StoreError::invalid(
                    "too_many",
                    format!("at most {} attributes", limits::LIST_LEN),
                ));
            }
        }
        let mut tx = self.begin().await?;
        // A language set by hand is no longer a detection: its confidence goes.
        query(
            "UPDATE contacts SET name = $1, language = $2, tags = $3, attributes = $4, \
             language_confidence = CASE WHEN $7 = 1 THEN NULL ELSE language_confidence END \
             WHERE id = $5 AND workspace_id = $6",
        )
        .bind(patch.name.clone().or(current.name))
        .bind(patch.language.clone().or(current.language))
        .bind(serde_json::to_string(patch.tags.as_ref().unwrap_or(&current.tags))?)
        .bind(serde_json::to_string(&attributes)?)
        .bind(id)
        .bind(ws)
        .bind(i64::from(patch.language.is_some()))
        .execute(&mut *tx)
        .await?;
        // The workspace's field names, for checking the workflows that read them.
        for name in attributes.keys() {
            query("INSERT INTO contact_fields (workspace_id, name) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                .bind(ws)
                .bind(name)
                .execute(&mut *tx)
                .await?;
        }
        append_events(
            &mut tx,
            ws,
            now,
            &[PendingEvent::new("contact.updated").data(json!({ "contact": id }))],
        )
        .await?;
        tx.commit().await?;
        let updated = self.contact(ws, id).await?;
        // A workflow whose trigger is "contact changed" runs for the contact's latest open
        // conversation, when one of the tags or fields it names changed (any, if it names none).
        let changed_tags: Vec<String> = current
            .tags
            .iter()
            .filter(|t| !updated.tags.contains(t))
            .chain(updated.tags.iter().filter(|t| !current.tags.contains(t)))
            .cloned()
            .collect();
        let changed_fields: Vec<String> = current
            .attributes
            .keys()
            .chain(updated.attributes.keys())
            .filter(|k| current.attributes.get(*k) != updated.attributes.get(*k))
            .cloned()
            .collect();
        if !changed_tags.is_empty() || !changed_fields.is_empty() {
            let open = query(
                "SELECT id FROM conversations WHERE contact_id = $1 AND status <> 'closed' ORDER BY id DESC LIMIT 1",
            )
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
            if let Some(row) = open {
                let conversation: i64 = row.try_get(0)?;
                let fires = |t: &usher_workflow::Trigger| match t {
                    usher_workflow::Trigger::ContactChanged { tags, fields } => {
                        (tags.is_empty() && fields.is_empty())
                            || tags.iter().any(|t| changed_tags.iter().any(|c| c.eq_ignore_ascii_case(t)))
                            || fields.iter().any(|f| changed_fields.contains(f))
                    }
                    _ => false,
                };
                if let Err(e) = self.fire(ws, conversation, fires, now).await {
                    tracing::warn!(error = %e, conversation, "a contact-changed workflow could not start");
                }
            }
        }
        Ok(updated)
    }
}
