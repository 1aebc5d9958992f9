//! Channels and the web chat.
//!
//! - `/v1/channels`: a workspace's channels (admin), and `POST /v1/channels/{id}/inbound`,
//!   the one call a channel adapter makes for every inbound message (integration tokens).
//!   The adapter contract is in `docs/adapters.md`.
//! - `/v1/webchat/{key}/…`: the web-chat widget's public API. No bearer token: the channel's
//!   public key names the workspace, and a visitor proves who it is with the token it got
//!   when it first came (the HMAC of its id under the channel's secret). Rate-limited per
//!   channel.
//! - `/widget.js` (the embeddable widget) and `/chat/{key}` (a customer page that uses it).

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::json::{Body, Params};
use crate::routes::{id, ContactBody};
use crate::{now_millis, AppState};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::stream::{self, Stream};
use serde::{Deserialize, Deserializer};
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;
use usher_core::model::Channel;
use usher_store::channels::{visitor_token, ChannelInfo, ChannelPatch, Inbound, NewChannel};
use usher_store::{Message, NewContact, Role, Store};

fn double<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// Body of `POST /v1/channels`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelBody {
    kind: Channel,
    name: String,
    #[serde(default)]
    team: Option<i64>,
    #[serde(default)]
    outbound_url: Option<String>,
    #[serde(default)]
    reopen_minutes: Option<i64>,
}

/// `POST /v1/channels`: 201 with the channel and its secret (shown once).
pub async fn create_channel(
    State(s): State<AppState>,
    caller: Caller,
    Body(b): Body<ChannelBody>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    caller.require(&[Role::Admin], "manage channels")?;
    let new = NewChannel {
        kind: b.kind,
        name: b.name,
        team: b.team,
        outbound_url: b.outbound_url,
        reopen_minutes: b.reopen_minutes,
    };
    let c = s.store.create_channel(caller.ws(), &new, now_millis()).await?;
    Ok((StatusCode::CREATED, Json(json!(c))))
}

/// `GET /v1/channels`.
pub async fn list_channels(State(s): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    caller.manage("read channels")?;
    Ok(Json(json!({ "channels": s.store.channels(caller.ws()).await? })))
}

/// `GET /v1/channels/{id}`.
pub async fn get_channel(
    State(s): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require(&[Role::Admin, Role::Manager, Role::Integration], "read channels")?;
    Ok(Json(json!(s.store.channel(caller.ws(), id(&raw, "channel")?).await?)))
}

/// Body of `PATCH /v1/channels/{id}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelPatchBody {
    #[serde(default)]
    name: Option<String>,
    #[serde(default, deserialize_with = "double")]
    team: Option<Option<i64>>,
    #[serde(default, deserialize_with = "double")]
    outbound_url: Option<Option<String>>,
    #[serde(default)]
    reopen_minutes: Option<i64>,
}

/// `PATCH /v1/channels/{id}`: only the fields given change (`null` clears team or URL).
pub async fn update_channel(
    State(s): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
    Body(b): Body<ChannelPatchBody>,
) -> ApiResult<Json<Value>> {
    caller.require(&[Role::Admin], "manage channels")?;
    let patch = ChannelPatch {
        name: b.name,
        team: b.team,
        outbound_url: b.outbound_url,
        reopen_minutes: b.reopen_minutes,
    };
    Ok(Json(json!(s.store.update_channel(caller.ws(), id(&raw, "channel")?, &patch, now_millis()).await?)))
}

/// The message of an inbound call.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InboundMessage {
    /// The channel's id for the message: a retry sends the same one.
    id: String,
    text: String,
}

/// Body of `POST /v1/channels/{id}/inbound`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InboundBody {
    contact: ContactBody,
    message: InboundMessage,
}

/// `POST /v1/channels/{id}/inbound`: an adapter's inbound message. 201 when stored, 200 when
/// it is a retry of one already stored (nothing changed); the body says what it did.
pub async fn inbound(
    State(s): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
    Body(b): Body<InboundBody>,
) -> ApiResult<Response> {
    caller.require(&[Role::Admin, Role::Integration], "post inbound messages")?;
    let channel = id(&raw, "channel")?;
    let msg = Inbound { contact: b.contact.checked()?, message_id: b.message.id, text: b.message.text };
    let r = s.store.inbound(caller.ws(), channel, &msg, now_millis()).await?;
    let status = if r.replayed { StatusCode::OK } else { StatusCode::CREATED };
    Ok((status, Json(json!(r))).into_response())
}

// ---- the web chat's public API ----

/// A web-chat channel by its key, with the per-channel rate limit taken.
async fn web_chat(s: &AppState, key: &str) -> ApiResult<(i64, ChannelInfo, String)> {
    if key.len() > 64 || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(ApiError::not_found("web chat"));
    }
    let found = s.store.web_chat(key).await?;
    // Channels' buckets are keyed apart from tokens' (negative ids).
    if let Err(wait) = s.limiter.take(-found.1.id) {
        return Err(ApiError::rate_limited(wait, "chat"));
    }
    Ok(found)
}

fn check_visitor(secret: &str, visitor: &str, token: &str) -> ApiResult<()> {
    let ok = visitor.len() <= 64 && !visitor.is_empty() && {
        let want = visitor_token(secret, visitor);
        // Compared in full whatever the first difference (no early exit to time).
        want.len() == token.len()
            && want.bytes().zip(token.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    };
    if ok {
        Ok(())
    } else {
        Err(ApiError::new(StatusCode::UNAUTHORIZED, "invalid_visitor", "unknown visitor or wrong token"))
    }
}

/// `POST /v1/webchat/{key}/visitors`: a new visitor id and its token (the widget keeps both).
pub async fn new_visitor(
    State(s): State<AppState>,
    Path(key): Path<String>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let (_, channel, secret) = web_chat(&s, &key).await?;
    let visitor = usher_store::channels::new_visitor();
    let token = visitor_token(&secret, &visitor);
    Ok((StatusCode::CREATED, Json(json!({ "visitor": visitor, "token": token, "channel": channel.name }))))
}

/// Body of `POST /v1/webchat/{key}/messages`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VisitorMessage {
    visitor: String,
    token: String,
    /// The widget's id for the message (a retry sends the same one).
    id: String,
    text: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    language: Option<String>,
}

/// What a visitor sees of a message (no agent ids, no internal notes).
fn visitor_view(m: &Message) -> Value {
    json!({ "id": m.id, "direction": m.direction, "author": m.author, "text": m.text, "at": m.at })
}

/// `POST /v1/webchat/{key}/messages`: the visitor writes. 201 (200 for a retry).
pub async fn visitor_post(
    State(s): State<AppState>,
    Path(key): Path<String>,
    Body(b): Body<VisitorMessage>,
) -> ApiResult<Response> {
    let (ws, channel, secret) = web_chat(&s, &key).await?;
    check_visitor(&secret, &b.visitor, &b.token)?;
    let contact =
        ContactBody { external_id: b.visitor, name: b.name, language: b.language, tags: Vec::new() };
    let contact: NewContact = contact.checked()?;
    let msg = Inbound { contact, message_id: b.id, text: b.text };
    let r = s.store.inbound(ws, channel.id, &msg, now_millis()).await?;
    let status = if r.replayed { StatusCode::OK } else { StatusCode::CREATED };
    let body = json!({
        "message": visitor_view(&r.message),
        "conversation": { "id": r.conversation.id, "status": r.conversation.status, "queue": r.conversation.queue },
    });
    Ok((status, Json(body)).into_response())
}

/// Query of the visitor's reads.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VisitorQuery {
    visitor: String,
    token: String,
    #[serde(default)]
    after: i64,
}

/// `GET /v1/webchat/{key}/messages?visitor=&token=&after=`: the visitor's messages.
pub async fn visitor_messages(
    State(s): State<AppState>,
    Path(key): Path<String>,
    Params(q): Params<VisitorQuery>,
) -> ApiResult<Json<Value>> {
    let (ws, channel, secret) = web_chat(&s, &key).await?;
    check_visitor(&secret, &q.visitor, &q.token)?;
    let list = s.store.visitor_messages(ws, channel.id, &q.visitor, q.after).await?;
    Ok(Json(json!({ "messages": list.iter().map(visitor_view).collect::<Vec<_>>() })))
}

struct VisitorCursor {
    store: Store,
    ws: i64,
    channel: i64,
    visitor: String,
    after: i64,
    ready: VecDeque<Message>,
}

/// `GET /v1/webchat/{key}/stream?visitor=&token=&after=`: the visitor's messages, live, as
/// server-sent events (`message`, the SSE id is the message id, so `Last-Event-ID` resumes).
pub async fn visitor_stream(
    State(s): State<AppState>,
    Path(key): Path<String>,
    headers: HeaderMap,
    Params(q): Params<VisitorQuery>,
) -> ApiResult<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>> {
    let (ws, channel, secret) = web_chat(&s, &key).await?;
    check_visitor(&secret, &q.visitor, &q.token)?;
    let resume =
        headers.get("last-event-id").and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse().ok());
    let cursor = VisitorCursor {
        store: s.store.clone(),
        ws,
        channel: channel.id,
        visitor: q.visitor,
        after: resume.unwrap_or(q.after),
        ready: VecDeque::new(),
    };
    let events = stream::unfold(cursor, |mut c| async move {
        loop {
            if let Some(m) = c.ready.pop_front() {
                let e = SseEvent::default()
                    .id(m.id.to_string())
                    .event("message")
                    .data(visitor_view(&m).to_string());
                return Some((Ok(e), c));
            }
            match c.store.visitor_messages(c.ws, c.channel, &c.visitor, c.after).await {
                Ok(list) if !list.is_empty() => {
                    c.after = list.last().map_or(c.after, |m| m.id);
                    c.ready.extend(list);
                }
                Ok(_) => tokio::time::sleep(crate::stream::POLL).await,
                Err(e) => {
                    tracing::warn!(error = %e, "visitor stream: cannot read messages; retrying");
                    tokio::time::sleep(crate::stream::POLL * 5).await;
                }
            }
        }
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// `GET /widget.js`: the embeddable chat widget. A site includes
/// `<script src="https://USHER/widget.js" data-channel="KEY"></script>`.
pub async fn widget() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8"), (header::CACHE_CONTROL, "max-age=300")],
        include_str!("../web/widget.js"),
    )
        .into_response()
}

/// `GET /chat/{key}`: a customer page with the widget open, for trying a web-chat channel.
pub async fn chat_page(State(s): State<AppState>, Path(key): Path<String>) -> ApiResult<Response> {
    let (_, channel, _) = web_chat(&s, &key).await?;
    let escape = |t: &str| {
        t.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
            .replace('\'', "&#39;")
    };
    let page = include_str!("../web/chat.html")
        .replace("{{channel_name}}", &escape(&channel.name))
        .replace("{{channel_key}}", &escape(&key));
    Ok((
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, "default-src 'self'; style-src 'self' 'unsafe-inline'"),
        ],
        page,
    )
        .into_response())
}
