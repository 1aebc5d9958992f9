//! Workflows, their versions, templates, dry runs, and business-hours calendars over HTTP.
//! Managers and admins only. Workflow documents are the request body itself, parsed with the
//! exact place of any malformed value; a refused document answers 422 with every problem:
//!
//! ```json
//! { "error": { "code": "invalid_workflow", "message": "…",
//!              "problems": [{ "path": "steps.route.branches[2].next", "code": "unknown_step", "message": "…" }] } }
//! ```

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::json::Body;
use crate::routes::{check_text, id};
use crate::{now_millis, AppState};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use usher_core::calendar::{CalendarSpec, ExceptionSpec, HolidaySpec, Weekday};
use usher_core::model::{Channel, Priority};
use usher_store::limits as store_limits;
use usher_store::workflows::DrySample;
use usher_workflow::templates::{instantiate, Params, TemplateError, TEMPLATES};
use usher_workflow::Workflow;

fn document_refused(problem: usher_workflow::Problem) -> ApiError {
    let mut e = ApiError::invalid(
        "invalid_workflow",
        format!("the workflow document is malformed: {}", problem.message),
    );
    e.problems = Some(json!([problem]));
    e
}

/// A JSON request body as text (workflow documents are parsed with their paths).
fn json_text<'a>(headers: &HeaderMap, body: &'a Bytes) -> ApiResult<&'a str> {
    let json = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| {
        v.split(';').next().is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
    });
    if !json {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as JSON with Content-Type: application/json",
        ));
    }
    std::str::from_utf8(body).map_err(|_| ApiError::bad_request("invalid_json", "the body is not UTF-8"))
}

/// A workflow document from a body; NUL characters refused as everywhere.
fn document(text: &str) -> ApiResult<Workflow> {
    if text.contains('\0') || text.contains("\\u0000") {
        return Err(ApiError::invalid("invalid_field", "the document contains a NUL character"));
    }
    usher_workflow::parse(text).map_err(document_refused)
}

/// `GET /v1/workflow-templates`.
pub async fn templates(caller: Caller) -> ApiResult<Json<Value>> {
    caller.manage("read workflow templates")?;
    Ok(Json(json!({ "templates": TEMPLATES })))
}

/// A template to create a workflow from.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FromTemplate {
    template: String,
    #[serde(default)]
    team: Option<i64>,
    #[serde(default)]
    second_team: Option<i64>,
    #[serde(default)]
    agent: Option<i64>,
    #[serde(default)]
    calendar: Option<i64>,
}

/// `POST /v1/workflows`: a document, or `{"template": KEY, "team": …}`; 201 with the
/// workflow (a draft, disabled until published).
pub async fn create(
    State(s): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    caller.manage("create workflows")?;
    let text = json_text(&headers, &body)?;
    let value: Value =
        serde_json::from_str(text).map_err(|e| ApiError::bad_request("invalid_json", e.to_string()))?;
    let draft = if value.get("template").is_some() {
        let t: FromTemplate =
            serde_json::from_value(value).map_err(|e| ApiError::invalid("invalid_field", e.to_string()))?;
        let params =
            Params { team: t.team, second_team: t.second_team, agent: t.agent, calendar: t.calendar };
        instantiate(&t.template, &params).map_err(|e| match e {
            TemplateError::Unknown(_) => ApiError::invalid("unknown_template", e.to_string()),
            TemplateError::Missing(_) => ApiError::invalid("missing_parameter", e.to_string()),
        })?
    } else {
        document(text)?
    };
    let w = s.store.create_workflow(caller.ws(), &draft, now_millis()).await?;
    Ok((StatusCode::CREATED, Json(json!(w))))
}

/// `GET /v1/workflows`.
pub async fn list(State(s): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    caller.manage("read workflows")?;
    Ok(Json(json!({ "workflows": s.store.workflows(caller.ws()).await? })))
}

/// `GET /v1/workflows/{id}`.
pub async fn get(
    State(s): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.manage("read workflows")?;
    Ok(Json(json!(s.store.workflow(caller.ws(), id(&raw, "workflow")?).await?)))
}

/// `PUT /v1/workflows/{id}`: replaces the draft (the body is the document).
pub async fn update(
    State(s): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    caller.manage("edit workflows")?;
    let wid = id(&raw, "workflow")?;
    let draft = document(json_text(&headers, &body)?)?;
    Ok(Json(json!(s.store.update_workflow(caller.ws(), wid, &draft, now_millis()).await?)))
}

/// `POST /v1/workflows/{id}/publish`: checks the draft and freezes it as the next version.
pub async fn publish(
    State(s): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.manage("publish workflows")?;
    Ok(Json(json!(s.store.publish_workflow(caller.ws(), id(&raw, "workflow")?, now_millis()).await?)))
}

/// Body of `POST /v1/workflows/{id}/rollback`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackBody {
    version: i64,
}

/// `POST /v1/workflows/{id}/rollback`: an earlier version runs again.
pub async fn rollback(
    State(s): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
    Body(b): Body<RollbackBody>,
) -> ApiResult<Json<Value>> {
    caller.manage("roll workflows back")?;
    let wid = id(&raw, "workflow")?;
    Ok(Json(json!(s.store.rollback_workflow(caller.ws(), wid, b.version, now_millis()).await?)))
}

/// `POST /v1/workflows/{id}/enable`.
pub async fn enable(
    State(s): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.manage("enable workflows")?;
    Ok(Json(json!(
        s.store.set_workflow_enabled(caller.ws(), id(&raw, "workflow")?, true, now_millis()).await?
    )))
}

/// `POST /v1/workflows/{id}/disable`.
pub async fn disable(
    State(s): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.manage("disable workflows")?;
    Ok(Json(json!(
        s.store.set_workflow_enabled(caller.ws(), id(&raw, "workflow")?, false, now_millis()).await?
    )))
}

/// `GET /v1/workflows/{id}/versions`.
pub async fn versions(
    State(s): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.manage("read workflows")?;
    Ok(Json(json!({ "versions": s.store.workflow_versions(caller.ws(), id(&raw, "workflow")?).await? })))
}

/// The contact of a dry run.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct DryContact {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    language: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    fields: BTreeMap<String, String>,
    #[serde(default)]
    returning: bool,
    #[serde(default)]
    previous_agent: Option<i64>,
}

/// Body of `POST /v1/workflows/{id}/dry-run`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DryRunBody {
    #[serde(default)]
    contact: DryContact,
    #[serde(default)]
    channel: Option<Channel>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    priority: Priority,
    /// The contact's answers to the questions asked, in order.
    #[serde(default)]
    answers: Vec<String>,
    /// A published version to try; the draft by default.
    #[serde(default)]
    version: Option<i64>,
}

/// `POST /v1/workflows/{id}/dry-run`: what it would do for this contact and message now.
pub async fn dry_run(
    State(s): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
    Body(b): Body<DryRunBody>,
) -> ApiResult<Json<Value>> {
    caller.manage("try workflows")?;
    let wid = id(&raw, "workflow")?;
    for (field, value) in [
        ("contact.name", &b.contact.name),
        ("contact.language", &b.contact.language),
        ("message", &b.message),
    ] {
        if let Some(v) = value {
            check_text(field, v, store_limits::MESSAGE_LEN)?;
        }
    }
    if b.answers.len() > store_limits::LIST_LEN || b.contact.tags.len() > store_limits::LIST_LEN {
        return Err(ApiError::invalid(
            "too_many",
            format!("at most {} answers or tags", store_limits::LIST_LEN),
        ));
    }
    let ws = caller.ws();
    let document = match b.version {
        Some(v) => s.store.workflow_version(ws, wid, v).await?.document,
        None => s.store.workflow(ws, wid).await?.draft,
    };
    let sample = DrySample {
        channel: b.channel,
        name: b.contact.name,
        language: b.contact.language,
        tags: b.contact.tags,
        fields: b.contact.fields,
        returning: b.contact.returning,
        previous_agent: b.contact.previous_agent,
        message: b.message,
        priority: b.priority,
        answers: b.answers,
    };
    Ok(Json(json!(s.store.dry_run(ws, &document, &sample, now_millis()).await?)))
}

/// Body of `POST /v1/calendars` and `PUT /v1/calendars/{id}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalendarBody {
    name: String,
    #[serde(default)]
    team: Option<i64>,
    time_zone: String,
    #[serde(default)]
    weekly: BTreeMap<Weekday, Vec<[String; 2]>>,
    #[serde(default)]
    holidays: Vec<HolidaySpec>,
    #[serde(default)]
    exceptions: Vec<ExceptionSpec>,
}

impl CalendarBody {
    fn spec(&self) -> CalendarSpec {
        CalendarSpec {
            time_zone: self.time_zone.clone(),
            weekly: self.weekly.clone(),
            holidays: self.holidays.clone(),
            exceptions: self.exceptions.clone(),
        }
    }
}

/// `POST /v1/calendars`: business hours (a team's with `team`, else the workspace's).
pub async fn create_calendar(
    State(s): State<AppState>,
    caller: Caller,
    Body(b): Body<CalendarBody>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    caller.manage("create calendars")?;
    check_text("name", &b.name, store_limits::NAME_LEN)?;
    let c = s.store.create_calendar(caller.ws(), &b.name, b.team, &b.spec(), now_millis()).await?;
    Ok((StatusCode::CREATED, Json(json!(c))))
}

/// `GET /v1/calendars`.
pub async fn list_calendars(State(s): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    caller.manage("read calendars")?;
    Ok(Json(json!({ "calendars": s.store.calendars(caller.ws(), now_millis()).await? })))
}

/// `GET /v1/calendars/{id}`: with whether it is open now and when it opens next.
pub async fn get_calendar(
    State(s): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.manage("read calendars")?;
    Ok(Json(json!(s.store.calendar(caller.ws(), id(&raw, "calendar")?, now_millis()).await?)))
}

/// `PUT /v1/calendars/{id}`: replaces the schedule.
pub async fn update_calendar(
    State(s): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
    Body(b): Body<CalendarBody>,
) -> ApiResult<Json<Value>> {
    caller.manage("edit calendars")?;
    let cid = id(&raw, "calendar")?;
    check_text("name", &b.name, store_limits::NAME_LEN)?;
    if b.team.is_some() {
        return Err(ApiError::invalid("invalid_field", "a calendar's team is set when it is made"));
    }
    Ok(Json(json!(s.store.update_calendar(caller.ws(), cid, Some(&b.name), &b.spec(), now_millis()).await?)))
}

/// `GET /v1/conversations/{id}/runs`: the workflow runs of a conversation, with their history.
pub async fn conversation_runs(
    State(s): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.manage("read workflow runs")?;
    let conversation = id(&raw, "conversation")?;
    s.store.conversation(caller.ws(), conversation, now_millis()).await?;
    Ok(Json(json!({ "runs": s.store.conversation_runs(caller.ws(), conversation).await? })))
}

/// `GET /v1/runs/{id}`: a run, where it stands and its history step by step.
pub async fn get_run(
    State(s): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.manage("read workflow runs")?;
    Ok(Json(json!(s.store.run(caller.ws(), id(&raw, "run")?).await?)))
}

/// Body of `POST /v1/conversations/{id}/runs`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartBody {
    workflow: i64,
}

/// `POST /v1/conversations/{id}/runs`: starts a workflow whose trigger is manual for this
/// conversation; 201 with the run as it stands after its first steps.
pub async fn start_run(
    State(s): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
    Body(b): Body<StartBody>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    caller.manage("start workflow runs")?;
    let conversation = id(&raw, "conversation")?;
    let run = s.store.start_manual_run(caller.ws(), b.workflow, conversation, now_millis()).await?;
    Ok((StatusCode::CREATED, Json(json!(run))))
}

/// `GET /v1/workflow-schema.json`: the JSON Schema of workflow documents (no token needed,
/// like the OpenAPI document).
pub async fn schema() -> axum::response::Response {
    use axum::response::IntoResponse;
    ([(header::CONTENT_TYPE, "application/schema+json")], usher_workflow::SCHEMA).into_response()
}

/// `POST /v1/workflows/{id}/check`: the draft checked against the workspace as publishing
/// would, changing nothing: `{"problems": [...]}`, empty when it can be published.
pub async fn check(
    State(s): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.manage("check workflows")?;
    let problems = s.store.check_workflow(caller.ws(), id(&raw, "workflow")?).await?;
    Ok(Json(json!({ "problems": problems })))
}

/// `GET /v1/workflows/{id}/diagram.svg[?version=N]`: the draft's graph (or a published
/// version's) drawn as SVG.
pub async fn diagram(
    State(s): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
    crate::json::Params(q): crate::json::Params<VersionQuery>,
) -> ApiResult<axum::response::Response> {
    use axum::response::IntoResponse;
    caller.manage("read workflows")?;
    let wid = id(&raw, "workflow")?;
    let doc = match q.version {
        None => s.store.workflow(caller.ws(), wid).await?.draft,
        Some(v) => s
            .store
            .workflow_versions(caller.ws(), wid)
            .await?
            .into_iter()
            .find(|x| x.version == v)
            .map(|x| x.document)
            .ok_or_else(|| ApiError::not_found(format!("version {v} of workflow {wid}")))?,
    };
    Ok((
        [(header::CONTENT_TYPE, "image/svg+xml"), (header::CACHE_CONTROL, "no-store")],
        crate::diagram::diagram(&doc),
    )
        .into_response())
}

/// `?version=N`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct VersionQuery {
    #[serde(default)]
    version: Option<i64>,
    /// Ignored: lets a page ask for a fresh drawing after an edit.
    #[serde(default, rename = "t")]
    _fresh: Option<i64>,
}
