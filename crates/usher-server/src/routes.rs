//! The handlers. Each one: check the caller's role, parse the body into typed values (unknown
//! fields and bad values refused before anything changes), call the store with "now", and
//! answer JSON.

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::json::{optional_body, Body, Params};
use crate::{now_millis, AppState};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use usher_core::manual::Status;
use usher_core::model::{Channel, Presence, Priority, Strategy};
use usher_core::request::{Rules, WhenNobody};
use usher_store::{
    limits as store_limits, AgentPatch, ContactPatch, ConversationFilter, NewAgent, NewContact,
    NewConversation, NewTeam, Role, TeamPatch,
};

/// An id in a path: a positive integer, or 404.
pub(crate) fn id(raw: &str, what: &str) -> ApiResult<i64> {
    raw.parse::<i64>().ok().filter(|v| *v > 0).ok_or_else(|| ApiError::not_found(format!("{what} {raw}")))
}

pub(crate) fn check_text(field: &str, value: &str, max: usize) -> ApiResult<()> {
    no_nul(field, value)?;
    if value.trim().is_empty() {
        return Err(ApiError::invalid("invalid_field", format!("{field} must not be empty")));
    }
    if value.len() > max {
        return Err(ApiError::invalid("too_long", format!("{field} is longer than {max} bytes")));
    }
    Ok(())
}

/// PostgreSQL text cannot hold NUL; refuse it everywhere so both backends behave alike.
fn no_nul(field: &str, value: &str) -> ApiResult<()> {
    if value.contains('\0') {
        return Err(ApiError::invalid("invalid_field", format!("{field} contains a NUL character")));
    }
    Ok(())
}

fn check_list(field: &str, values: &[String]) -> ApiResult<()> {
    if values.len() > store_limits::LIST_LEN {
        return Err(ApiError::invalid(
            "too_many",
            format!("{field}: at most {} entries", store_limits::LIST_LEN),
        ));
    }
    values.iter().try_for_each(|v| check_text(field, v, store_limits::NAME_LEN))
}

// ---------------------------------------------------------------- operations

/// `GET /healthz`: the process is up.
pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// `GET /readyz`: the database answers and is migrated.
pub async fn readyz(State(state): State<AppState>) -> Response {
    if state.store.ready().await {
        Json(json!({ "status": "ready" })).into_response()
    } else {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", "the database is not reachable")
            .into_response()
    }
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(state): State<AppState>) -> Response {
    let mut out = String::new();
    usher_store::stats::render_decisions(&mut out);
    out.push_str("# HELP usher_decision_seconds Routing transaction latency, commit included.\n");
    out.push_str("# TYPE usher_decision_seconds histogram\n");
    usher_store::stats::DECISION_LATENCY.render(&mut out, "usher_decision_seconds", "");
    out.push_str(
        "# HELP usher_request_seconds HTTP request latency.\n# TYPE usher_request_seconds histogram\n",
    );
    crate::middleware::REQUEST_LATENCY.render(&mut out, "usher_request_seconds", "");
    match state.store.gauges(now_millis()).await {
        Ok(g) => out.push_str(&g),
        Err(e) => tracing::warn!(error = %e, "gauges unavailable"),
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

/// `GET /v1/openapi.json`.
pub async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], include_str!("../openapi.json")).into_response()
}

/// Anything else: 404 in the API's shape.
pub async fn fallback(uri: Uri) -> ApiError {
    ApiError::not_found(format!("route {}", uri.path()))
}

/// `GET /v1/workspace`: who am I.
pub async fn workspace(State(s): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    let ws = s.store.workspace(caller.ws()).await?;
    Ok(Json(json!({ "workspace": ws, "role": caller.0.role, "agent": caller.0.agent })))
}

// ---------------------------------------------------------------- tokens

/// Body of `POST /v1/tokens`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenBody {
    role: Role,
    #[serde(default)]
    agent: Option<i64>,
}

/// `POST /v1/tokens` (admin): a new token, shown once.
pub async fn create_token(
    State(s): State<AppState>,
    caller: Caller,
    Body(b): Body<TokenBody>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    caller.require(&[Role::Admin], "create tokens")?;
    let token = s.store.create_token(caller.ws(), b.role, b.agent, None, now_millis()).await?;
    Ok((StatusCode::CREATED, Json(json!(token))))
}

// ---------------------------------------------------------------- teams

/// Body of `POST /v1/teams`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeamBody {
    name: String,
    #[serde(default = "default_strategy")]
    strategy: Strategy,
    #[serde(default = "yes")]
    only_online: bool,
    #[serde(default = "utc")]
    time_zone: String,
    #[serde(default)]
    when_nobody: WhenNobody,
    #[serde(default = "default_handle")]
    default_handle_seconds: u32,
}

fn default_strategy() -> Strategy {
    Strategy::RoundRobin
}
fn yes() -> bool {
    true
}
fn utc() -> String {
    "UTC".into()
}
fn default_handle() -> u32 {
    300
}

fn check_handle(secs: u32) -> ApiResult<()> {
    if !(1..=86_400).contains(&secs) {
        return Err(ApiError::invalid("invalid_field", "default_handle_seconds must be 1 to 86400"));
    }
    Ok(())
}

/// `POST /v1/teams`.
pub async fn create_team(
    State(s): State<AppState>,
    caller: Caller,
    Body(b): Body<TeamBody>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    caller.manage("create teams")?;
    check_text("name", &b.name, store_limits::NAME_LEN)?;
    check_handle(b.default_handle_seconds)?;
    let new = NewTeam {
        name: b.name,
        strategy: b.strategy,
        only_online: b.only_online,
        time_zone: b.time_zone,
        when_nobody: b.when_nobody,
        default_handle_seconds: b.default_handle_seconds,
    };
    let team = s.store.create_team(caller.ws(), &new, now_millis()).await?;
    Ok((StatusCode::CREATED, Json(json!(team))))
}

/// Body of `PATCH /v1/teams/{id}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeamPatchBody {
    name: Option<String>,
    strategy: Option<Strategy>,
    only_online: Option<bool>,
    time_zone: Option<String>,
    when_nobody: Option<WhenNobody>,
    default_handle_seconds: Option<u32>,
}

/// `PATCH /v1/teams/{id}`.
pub async fn update_team(
    State(s): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
    Body(b): Body<TeamPatchBody>,
) -> ApiResult<Json<Value>> {
    caller.manage("change teams")?;
    let team = id(&raw, "team")?;
    if let Some(n) = &b.name {
        check_text("name", n, store_limits::NAME_LEN)?;
    }
    if let Some(secs) = b.default_handle_seconds {
        check_handle(secs)?;
    }
    let patch = TeamPatch {
        name: b.name,
        strategy: b.strategy,
        only_online: b.only_online,
        time_zone: b.time_zone,
        when_nobody: b.when_nobody,
        default_handle_seconds: b.default_handle_seconds,
    };
    Ok(Json(json!(s.store.update_team(caller.ws(), team, &patch, now_millis()).await?)))
}

fn not_integration(caller: &Caller, what: &str) -> ApiResult<()> {
    caller.require(&[Role::Admin, Role::Manager, Role::Agent], what)
}

/// `GET /v1/teams`.
pub async fn list_teams(State(s): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    not_integration(&caller, "list teams")?;
    Ok(Json(json!({ "teams": s.store.teams(caller.ws()).await? })))
}

/// `GET /v1/teams/{id}`.
pub async fn get_team(
    State(s): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
) -> ApiResult<Json<Value>> {
    not_integration(&caller, "read teams")?;
    Ok(Json(json!(s.store.team(caller.ws(), id(&raw, "team")?).await?)))
}

/// `GET /v1/teams/{id}/members`: the team's agents with their presence and load, for the
/// team's own agents (whom to hand a conversation to) as well as managers.
pub async fn team_members(
    State(s): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
) -> ApiResult<Json<Value>> {
    not_integration(&caller, "read teams")?;
    let team = s.store.team(caller.ws(), id(&raw, "team")?).await?;
    if caller.0.role == Role::Agent && !caller.0.agent.is_some_and(|a| team.members.contains(&a)) {
        return Err(ApiError::forbidden("read the members of a team it is not in"));
    }
    // One read of the workspace's agents, not one per member.
    let members: Vec<Value> = s
        .store
        .agents(caller.ws(), now_millis())
        .await?
        .into_iter()
        .filter(|a| team.members.contains(&a.id))
        .map(|a| json!({ "id": a.id, "name": a.name, "status": a.status, "open": a.open, "max_open": a.max_open }))
        .collect();
    Ok(Json(json!({ "team": team.id, "members": members })))
}

/// `GET /v1/teams/{id}/queue`.
pub async fn team_queue(
    State(s): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
) -> ApiResult<Json<Value>> {
    not_integration(&caller, "read queues")?;
    Ok(Json(json!(s.store.team_queue(caller.ws(), id(&raw, "team")?, now_millis()).await?)))
}

// ---------------------------------------------------------------- agents

/// Body of `POST /v1/agents`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentBody {
    name: String,
    email: String,
    #[serde(default)]
    teams: Vec<i64>,
    #[serde(default = "default_max_open")]
    max_open: u32,
    #[serde(default)]
    daily_limit: Option<u32>,
    #[serde(default = "one")]
    weight: u32,
    #[serde(default)]
    skills: BTreeMap<String, u8>,
    #[serde(default)]
    languages: Vec<String>,
    #[serde(default)]
    channel_caps: BTreeMap<Channel, u32>,
    #[serde(default = "offline")]
    status: Presence,
}

fn default_max_open() -> u32 {
    5
}
fn one() -> u32 {
    1
}
fn offline() -> Presence {
    Presence::Offline
}

fn check_cap(field: &str, v: u32) -> ApiResult<()> {
    if v > 10_000 {
        return Err(ApiError::invalid("invalid_field", format!("{field} must be at most 10000")));
    }
    Ok(())
}

/// `POST /v1/agents`.
pub async fn create_agent(
    State(s): State<AppState>,
    caller: Caller,
    Body(b): Body<AgentBody>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    caller.manage("create agents")?;
    check_text("name", &b.name, store_limits::NAME_LEN)?;
    check_text("email", &b.email, store_limits::NAME_LEN)?;
    check_list("languages", &b.languages)?;
    check_cap("max_open", b.max_open)?;
    b.channel_caps.values().try_for_each(|v| check_cap("channel_caps", *v))?;
    let new = NewAgent {
        name: b.name,
        email: b.email,
        teams: b.teams,
        max_open: b.max_open,
        daily_limit: b.daily_limit,
        weight: b.weight,
        skills: b.skills,
        languages: b.languages,
        channel_caps: b.channel_caps,
        status: b.status,
    };
    let agent = s.store.create_agent(caller.ws(), &new, now_millis()).await?;
    Ok((StatusCode::CREATED, Json(json!(agent))))
}

/// Body of `PATCH /v1/agents/{id}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentPatchBody {
    name: Option<String>,
    teams: Option<Vec<i64>>,
    max_open: Option<u32>,
    #[serde(default, deserialize_with = "double_option")]
    daily_limit: Option<Option<u32>>,
    weight: Option<u32>,
    skills: Option<BTreeMap<String, u8>>,
    languages: Option<Vec<String>>,
    channel_caps: Option<BTreeMap<Channel, u32>>,
}

fn double_option<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<u32>>, D::Error> {
    Option::<u32>::deserialize(d).map(Some)
}

/// `PATCH /v1/agents/{id}`: caps, limits, weight, skills, languages, teams.
pub async fn update_agent(
    State(s): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
    Body(b): Body<AgentPatchBody>,
) -> ApiResult<Json<Value>> {
    caller.manage("change agents")?;
    let agent = id(&raw, "agent")?;
    if let Some(n) = &b.name {
        check_text("name", n, store_limits::NAME_LEN)?;
    }
    if let Some(l) = &b.languages {
        check_list("languages", l)?;
    }
    if let Some(m) = b.max_open {
        check_cap("max_open", m)?;
    }
    let patch = AgentPatch {
        name: b.name,
        teams: b.teams,
        max_open: b.max_open,
        daily_limit: b.daily_limit,
        weight: b.weight,
        skills: b.skills,
        languages: b.languages,
        channel_caps: b.channel_caps,
    };
    Ok(Json(json!(s.store.update_agent(caller.ws(), agent, &patch, now_millis()).await?)))
}

/// `GET /v1/agents`.
pub async fn list_agents(State(s): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    caller.manage("list agents")?;
    Ok(Json(json!({ "agents": s.store.agents(caller.ws(), now_millis()).await? })))
}

/// The agent an agent token may act on: only itself.
fn own_agent(caller: &Caller, agent: i64, what: &str) -> ApiResult<()> {
    match caller.0.role {
        Role::Admin | Role::Manager => Ok(()),
        Role::Agent if caller.0.agent == Some(agent) => Ok(()),
        _ => Err(ApiError::forbidden(what)),
    }
}

/// `GET /v1/agents/{id}`.
pub async fn get_agent(
    State(s): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
) -> ApiResult<Json<Value>> {
    let agent = id(&raw, "agent")?;
    own_agent(&caller, agent, "read other agents")?;
    Ok(Json(json!(s.store.agent(caller.ws(), agent, now_millis()).await?)))
}

/// Body of `PUT /v1/agents/{id}/status`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusBody {
    status: Presence,
}

/// `PUT /v1/agents/{id}/status`: an agent's own, or anyone's for a manager.
pub async fn set_status(
    State(s): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
    Body(b): Body<StatusBody>,
) -> ApiResult<Json<Value>> {
    let agent = id(&raw, "agent")?;
    own_agent(&caller, agent, "change another agent's status")?;
    Ok(Json(json!(s.store.set_status(caller.ws(), agent, b.status, now_millis()).await?)))
}

// ---------------------------------------------------------------- conversations

/// The contact in `POST /v1/conversations`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContactBody {
    pub(crate) external_id: String,
    #[serde(default)]
    pub(crate) name: Option<String>,
    #[serde(default)]
    pub(crate) language: Option<String>,
    #[serde(default)]
    pub(crate) tags: Vec<String>,
}

impl ContactBody {
    /// Checks the fields and makes the store's contact.
    pub(crate) fn checked(self) -> ApiResult<NewContact> {
        check_text("contact.external_id", &self.external_id, store_limits::NAME_LEN)?;
        if let Some(n) = &self.name {
            check_text("contact.name", n, store_limits::NAME_LEN)?;
        }
        if let Some(l) = &self.language {
            check_text("contact.language", l, 35)?;
        }
        check_list("contact.tags", &self.tags)?;
        Ok(NewContact {
            external_id: self.external_id,
            name: self.name,
            language: self.language,
            tags: self.tags,
        })
    }
}

/// Body of `POST /v1/conversations`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConversationBody {
    channel: Channel,
    contact: ContactBody,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    team: Option<i64>,
    #[serde(default)]
    priority: Priority,
    /// A dedicated agent, tried first.
    #[serde(default)]
    agent: Option<i64>,
    /// With `agent` and no `team`: wait for that agent instead of staying unassigned.
    #[serde(default)]
    wait_for_agent: bool,
    #[serde(default)]
    strategy: Option<Strategy>,
    /// Required skills: name to minimum level.
    #[serde(default)]
    skills: BTreeMap<String, u8>,
    /// Only agents speaking the contact's language.
    #[serde(default)]
    match_language: bool,
    #[serde(default = "yes")]
    prefer_previous_agent: bool,
    #[serde(default)]
    only_online: Option<bool>,
    #[serde(default)]
    include_busy: bool,
    #[serde(default)]
    include_away: bool,
    /// A lower cap on open conversations for this decision.
    #[serde(default)]
    cap: Option<u32>,
    #[serde(default = "yes")]
    channel_caps: bool,
    #[serde(default = "yes")]
    daily_limit: bool,
    #[serde(default)]
    when_nobody: Option<WhenNobody>,
}

/// `POST /v1/conversations`: opens a conversation and routes it at once. Send an
/// `Idempotency-Key` header to make retries safe.
pub async fn open_conversation(
    State(s): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Body(b): Body<ConversationBody>,
) -> ApiResult<Response> {
    caller.require(&[Role::Admin, Role::Manager, Role::Integration], "open conversations")?;
    let key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => {
            let k = v.to_str().map_err(|_| ApiError::bad_request("invalid_idempotency_key", "not ASCII"))?;
            if k.is_empty() || k.len() > crate::limits::IDEMPOTENCY_KEY_LEN {
                return Err(ApiError::bad_request(
                    "invalid_idempotency_key",
                    format!("the key must be 1 to {} bytes", crate::limits::IDEMPOTENCY_KEY_LEN),
                ));
            }
            Some(k.to_string())
        }
    };
    check_text("contact.external_id", &b.contact.external_id, store_limits::NAME_LEN)?;
    if let Some(n) = &b.contact.name {
        check_text("contact.name", n, store_limits::NAME_LEN)?;
    }
    if let Some(l) = &b.contact.language {
        check_text("contact.language", l, 35)?;
    }
    check_list("contact.tags", &b.contact.tags)?;
    if let Some(m) = &b.message {
        no_nul("message", m)?;
        if m.len() > store_limits::MESSAGE_LEN {
            return Err(ApiError::invalid(
                "too_long",
                format!("message is longer than {} bytes", store_limits::MESSAGE_LEN),
            ));
        }
    }
    if b.skills.len() > store_limits::LIST_LEN {
        return Err(ApiError::invalid("too_many", "too many skills"));
    }
    for (name, level) in &b.skills {
        check_text("skills", name, store_limits::NAME_LEN)?;
        if !(1..=5).contains(level) {
            return Err(ApiError::invalid(
                "invalid_skill_level",
                format!("skill {name}: level must be 1 to 5"),
            ));
        }
    }
    if b.match_language && b.contact.language.is_none() {
        return Err(ApiError::invalid("language_required", "match_language needs contact.language"));
    }
    let new = NewConversation {
        channel: b.channel,
        contact: NewContact {
            external_id: b.contact.external_id,
            name: b.contact.name,
            language: b.contact.language,
            tags: b.contact.tags,
        },
        message: b.message,
        team: b.team,
        agent: b.agent,
        wait_for_agent: b.wait_for_agent,
        priority: b.priority,
        strategy: b.strategy,
        skills: b.skills.into_iter().collect(),
        match_language: b.match_language,
        prefer_previous_agent: b.prefer_previous_agent,
        rules: Rules {
            only_online: b.only_online,
            include_busy: b.include_busy,
            include_away: b.include_away,
            cap: b.cap,
            channel_caps: b.channel_caps,
            daily_limit: b.daily_limit,
        },
        when_nobody: b.when_nobody,
    };
    let (conversation, replayed) =
        s.store.open_conversation(caller.ws(), &new, key.as_deref(), now_millis()).await?;
    let status = if replayed { StatusCode::OK } else { StatusCode::CREATED };
    Ok((status, Json(json!(conversation))).into_response())
}

/// Query of `GET /v1/conversations`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    status: Option<Status>,
    team: Option<i64>,
    assignee: Option<i64>,
    after: Option<i64>,
    limit: Option<i64>,
}

/// `GET /v1/conversations`: filtered by status, team, assignee; paged by `after` (an id).
/// Agent tokens see their own conversations, or with `status=unassigned` the ones to pick.
pub async fn list_conversations(
    State(s): State<AppState>,
    caller: Caller,
    Params(q): Params<ListQuery>,
) -> ApiResult<Json<Value>> {
    not_integration(&caller, "list conversations")?;
    let mut filter = ConversationFilter {
        status: q.status,
        team: q.team,
        assignee: q.assignee,
        visible_to_agent: None,
        after: q.after,
        limit: q.limit,
    };
    if caller.0.role == Role::Agent {
        if q.status == Some(Status::Unassigned) {
            // The pick-and-assign list: unassigned conversations of the agent's teams.
            filter.visible_to_agent = caller.0.agent;
        } else {
            filter.assignee = caller.0.agent;
        }
    }
    let list = s.store.conversations(caller.ws(), &filter, now_millis()).await?;
    let next = list.last().map(|c| c.id);
    Ok(Json(json!({ "conversations": list, "next_after": next })))
}

/// Whether an agent token may see this conversation: its own, one waiting for it by name, or
/// one nobody holds in one of its teams (or in no team): what its pick list shows.
async fn visible(s: &AppState, caller: &Caller, conversation: i64) -> ApiResult<usher_store::Conversation> {
    let now = now_millis();
    let c = s.store.conversation(caller.ws(), conversation, now).await?;
    if caller.0.role != Role::Agent {
        return Ok(c);
    }
    let me = caller.0.agent;
    if c.assignee.is_some() {
        return if c.assignee == me {
            Ok(c)
        } else {
            Err(ApiError::forbidden("see another agent's conversation"))
        };
    }
    if c.reserved_for.is_some() && c.reserved_for == me {
        return Ok(c);
    }
    let mine = match (c.team, me) {
        (None, _) => true,
        (Some(t), Some(agent)) => s.store.agent(caller.ws(), agent, now).await?.teams.contains(&t),
        (Some(_), None) => false,
    };
    if mine {
        Ok(c)
    } else {
        Err(ApiError::forbidden("see a conversation of a team it is not in"))
    }
}

/// `GET /v1/conversations/{id}`.
pub async fn get_conversation(
    State(s): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
) -> ApiResult<Json<Value>> {
    let c = visible(&s, &caller, id(&raw, "conversation")?).await?;
    Ok(Json(json!(c)))
}

/// Body of `POST /v1/conversations/{id}/claim`: managers may claim on an agent's behalf.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ClaimBody {
    #[serde(default)]
    agent: Option<i64>,
}

/// `POST /v1/conversations/{id}/claim`: the caller's agent takes it, or 409
/// `already_assigned` when someone else holds it.
pub async fn claim(
    State(s): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<Json<Value>> {
    let conversation = id(&raw, "conversation")?;
    let named = optional_body::<ClaimBody>(&body)?.agent;
    let agent = match (caller.0.role, caller.0.agent, named) {
        (Role::Agent, Some(me), None) => me,
        (Role::Agent, Some(me), Some(a)) if a == me => me,
        (Role::Admin | Role::Manager, _, Some(a)) => a,
        (Role::Admin | Role::Manager, _, None) => {
            return Err(ApiError::invalid("agent_required", "name the agent who claims"))
        }
        _ => return Err(ApiError::forbidden("claim for someone else")),
    };
    Ok(Json(json!(s.store.claim(caller.ws(), conversation, agent, now_millis()).await?)))
}

/// Body of `POST /v1/conversations/{id}/assign` (and `/transfer`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssignBody {
    #[serde(default)]
    agent: Option<i64>,
    #[serde(default)]
    team: Option<i64>,
    /// Exceed caps and limits on purpose.
    #[serde(default)]
    force: bool,
}

/// `POST /v1/conversations/{id}/assign`: to an agent (caps apply unless `force`) or to a
/// team (routed there by its strategy).
pub async fn assign(
    State(s): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
    Body(b): Body<AssignBody>,
) -> ApiResult<Json<Value>> {
    let conversation = id(&raw, "conversation")?;
    // An agent hands on what it holds (to a teammate or a team), caps applying; managers
    // assign anything, and may force past caps.
    own_or_manage(&s, &caller, conversation, "assign conversations it does not hold").await?;
    if caller.0.role == Role::Agent && b.force {
        return Err(ApiError::forbidden("force an assignment past caps"));
    }
    let now = now_millis();
    let c = match (b.agent, b.team) {
        (Some(agent), None) => s.store.assign(caller.ws(), conversation, agent, b.force, now).await?,
        (None, Some(team)) => s.store.reroute(caller.ws(), conversation, Some(team), now).await?,
        _ => return Err(ApiError::invalid("agent_or_team", "name exactly one of agent or team")),
    };
    Ok(Json(json!(c)))
}

/// Agents may unassign and close their own conversations; managers any.
async fn own_or_manage(s: &AppState, caller: &Caller, conversation: i64, what: &str) -> ApiResult<()> {
    match caller.0.role {
        Role::Admin | Role::Manager => Ok(()),
        Role::Agent => {
            let c = s.store.conversation(caller.ws(), conversation, now_millis()).await?;
            if c.assignee.is_some() && c.assignee == caller.0.agent {
                Ok(())
            } else {
                Err(ApiError::forbidden(what))
            }
        }
        Role::Integration => Err(ApiError::forbidden(what)),
    }
}

/// `POST /v1/conversations/{id}/unassign`.
pub async fn unassign(
    State(s): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
) -> ApiResult<Json<Value>> {
    let conversation = id(&raw, "conversation")?;
    own_or_manage(&s, &caller, conversation, "unassign others' conversations").await?;
    Ok(Json(json!(s.store.unassign(caller.ws(), conversation, now_millis()).await?)))
}

/// `POST /v1/conversations/{id}/close`.
pub async fn close(
    State(s): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
) -> ApiResult<Json<Value>> {
    let conversation = id(&raw, "conversation")?;
    own_or_manage(&s, &caller, conversation, "close others' conversations").await?;
    Ok(Json(json!(s.store.close(caller.ws(), conversation, now_millis()).await?)))
}

/// `POST /v1/conversations/{id}/reopen`: routed again, its last agent first.
pub async fn reopen(
    State(s): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require(&[Role::Admin, Role::Manager, Role::Integration], "reopen conversations")?;
    let conversation = id(&raw, "conversation")?;
    Ok(Json(json!(s.store.reroute(caller.ws(), conversation, None, now_millis()).await?)))
}

/// `GET /v1/conversations/{id}/trace`: every decision with every candidate and its reason.
pub async fn trace(
    State(s): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
) -> ApiResult<Json<Value>> {
    let conversation = id(&raw, "conversation")?;
    match caller.0.role {
        Role::Admin | Role::Manager => {}
        Role::Agent => {
            visible(&s, &caller, conversation).await?;
        }
        Role::Integration => return Err(ApiError::forbidden("read traces")),
    }
    Ok(Json(
        json!({ "conversation": conversation, "decisions": s.store.trace(caller.ws(), conversation).await? }),
    ))
}

// ---------------------------------------------------------------- contacts

/// Query of `GET /v1/contacts`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContactsQuery {
    channel: Option<Channel>,
    external_id: Option<String>,
    #[serde(default)]
    after: i64,
    #[serde(default = "events_page")]
    limit: i64,
}

/// `GET /v1/contacts[?channel&external_id&after&limit]`.
pub async fn list_contacts(
    State(s): State<AppState>,
    caller: Caller,
    Params(q): Params<ContactsQuery>,
) -> ApiResult<Json<Value>> {
    caller.require(&[Role::Admin, Role::Manager, Role::Integration], "list contacts")?;
    if let Some(e) = &q.external_id {
        check_text("external_id", e, store_limits::NAME_LEN)?;
    }
    let by = match (&q.channel, &q.external_id) {
        (Some(c), Some(e)) => Some((c.as_str(), e.as_str())),
        (None, None) => None,
        _ => {
            return Err(ApiError::invalid(
                "channel_and_external_id",
                "give both channel and external_id, or neither",
            ))
        }
    };
    let list = s.store.contacts(caller.ws(), by, q.after, q.limit).await?;
    let next = list.last().map(|c| c.id);
    Ok(Json(json!({ "contacts": list, "next_after": next })))
}

/// `GET /v1/contacts/{id}`.
pub async fn get_contact(
    State(s): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require(&[Role::Admin, Role::Manager, Role::Agent, Role::Integration], "read contacts")?;
    Ok(Json(json!(s.store.contact(caller.ws(), id(&raw, "contact")?).await?)))
}

/// Body of `PATCH /v1/contacts/{id}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContactPatchBody {
    name: Option<String>,
    language: Option<String>,
    tags: Option<Vec<String>>,
    /// Attributes to set; an empty string removes one.
    attributes: Option<BTreeMap<String, String>>,
}

/// `PATCH /v1/contacts/{id}`: name, language, tags, attributes.
pub async fn update_contact(
    State(s): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
    Body(b): Body<ContactPatchBody>,
) -> ApiResult<Json<Value>> {
    caller.require(&[Role::Admin, Role::Manager, Role::Integration], "change contacts")?;
    let contact = id(&raw, "contact")?;
    if let Some(n) = &b.name {
        check_text("name", n, store_limits::NAME_LEN)?;
    }
    if let Some(l) = &b.language {
        check_text("language", l, 35)?;
    }
    if let Some(t) = &b.tags {
        check_list("tags", t)?;
    }
    for (k, v) in b.attributes.iter().flatten() {
        no_nul("attributes", k)?;
        no_nul("attributes", v)?;
    }
    let patch = ContactPatch { name: b.name, language: b.language, tags: b.tags, attributes: b.attributes };
    Ok(Json(json!(s.store.update_contact(caller.ws(), contact, &patch, now_millis()).await?)))
}

// ---------------------------------------------------------------- events

/// Query of `GET /v1/events`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    #[serde(default)]
    after: i64,
    #[serde(default = "events_page")]
    limit: i64,
}

fn events_page() -> i64 {
    100
}

/// `GET /v1/events?after=SEQ`: the log after a sequence number, oldest first.
pub async fn events(
    State(s): State<AppState>,
    caller: Caller,
    Params(q): Params<EventsQuery>,
) -> ApiResult<Json<Value>> {
    caller.manage("read the event log")?;
    if q.after < 0 {
        return Err(ApiError::invalid("invalid_field", "after must not be negative"));
    }
    let events = s.store.events(caller.ws(), q.after, q.limit).await?;
    let next = events.last().map_or(q.after, |e| e.seq);
    Ok(Json(json!({ "events": events, "next_after": next })))
}

/// Body of `POST /v1/conversations/{id}/messages`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessageBody {
    text: String,
    /// `contact` (inbound) or `agent` (an answer); by default the caller's kind: an agent
    /// token writes as its agent, an integration token as the contact.
    #[serde(default)]
    author: Option<usher_store::Author>,
    /// The agent answering (managers and admins; an agent token is always its own agent).
    #[serde(default)]
    agent: Option<i64>,
}

/// `POST /v1/conversations/{id}/messages`: the contact's message (integrations: channel
/// adapters) or an answer of the agent who holds it. 201 with the message.
pub async fn post_message(
    State(s): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
    Body(b): Body<MessageBody>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    use usher_store::Author;
    let conversation = id(&raw, "conversation")?;
    let (author, agent) = match (caller.0.role, b.author) {
        (Role::Integration, None | Some(Author::Contact)) => (Author::Contact, None),
        (Role::Integration, Some(Author::Agent)) => return Err(ApiError::forbidden("write as an agent")),
        (Role::Agent, None | Some(Author::Agent)) => {
            if b.agent.is_some() && b.agent != caller.0.agent {
                return Err(ApiError::forbidden("write as another agent"));
            }
            (Author::Agent, caller.0.agent)
        }
        (Role::Agent, Some(Author::Contact)) => return Err(ApiError::forbidden("write as the contact")),
        (_, Some(Author::Workflow)) => return Err(ApiError::forbidden("write as a workflow")),
        (Role::Admin | Role::Manager, author) => (author.unwrap_or(Author::Agent), b.agent),
    };
    if author == Author::Contact && b.agent.is_some() {
        return Err(ApiError::invalid("invalid_field", "a contact's message names no agent"));
    }
    let m = s.store.post_message(caller.ws(), conversation, author, agent, &b.text, now_millis()).await?;
    Ok((StatusCode::CREATED, Json(json!(m))))
}

/// `GET /v1/conversations/{id}/messages?after=ID&limit=N`: the messages in order.
pub async fn list_messages(
    State(s): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
    Params(q): Params<EventsQuery>,
) -> ApiResult<Json<Value>> {
    let conversation = id(&raw, "conversation")?;
    if caller.0.role == Role::Agent {
        visible(&s, &caller, conversation).await?;
    }
    let list = s.store.messages(caller.ws(), conversation, q.after, q.limit).await?;
    let next = list.last().map(|m| m.id);
    Ok(Json(json!({ "messages": list, "next_after": next })))
}

/// Body of `POST /v1/webhooks`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookBody {
    url: String,
    /// Event kinds wanted; none means every event.
    #[serde(default)]
    events: Vec<String>,
}

/// `POST /v1/webhooks`: subscribes a URL to the workspace's events from now on; 201 with the
/// subscription and its signing secret, shown once.
pub async fn create_webhook(
    State(s): State<AppState>,
    caller: Caller,
    Body(b): Body<WebhookBody>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    caller.require(&[Role::Admin], "manage webhooks")?;
    let w = s.store.create_webhook(caller.ws(), &b.url, &b.events, now_millis()).await?;
    Ok((StatusCode::CREATED, Json(json!(w))))
}

/// `GET /v1/webhooks`.
pub async fn list_webhooks(State(s): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    caller.require(&[Role::Admin], "read webhooks")?;
    Ok(Json(json!({ "webhooks": s.store.webhooks(caller.ws()).await? })))
}

/// `GET /v1/webhooks/{id}`.
pub async fn get_webhook(
    State(s): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require(&[Role::Admin], "read webhooks")?;
    Ok(Json(json!(s.store.webhook(caller.ws(), id(&raw, "webhook")?).await?)))
}

/// `POST /v1/webhooks/{id}/resume`: a paused subscription delivers again.
pub async fn resume_webhook(
    State(s): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require(&[Role::Admin], "manage webhooks")?;
    Ok(Json(json!(s.store.resume_webhook(caller.ws(), id(&raw, "webhook")?, now_millis()).await?)))
}

/// `GET /v1/webhooks/{id}/deliveries`: the latest deliveries and how their attempts went.
pub async fn webhook_deliveries(
    State(s): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require(&[Role::Admin], "read webhooks")?;
    Ok(Json(json!({ "deliveries": s.store.deliveries(caller.ws(), id(&raw, "webhook")?, 100).await? })))
}
