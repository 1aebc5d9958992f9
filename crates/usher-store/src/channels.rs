//! Channels: how conversations come in and how answers go out.
//!
//! A channel is configured per workspace (its kind: WhatsApp, e-mail, web chat, …; a name;
//! the team its conversations go to when no workflow routes them; how long after a close a
//! new message reopens the conversation instead of opening another). An adapter, the small
//! service beside the channel's provider, posts every inbound message to
//! [`Store::inbound`]: the contact is found or created by its id on the channel, the
//! conversation opened (routing it, or starting the workflow its trigger names) or reopened,
//! the message stored, and the workflows told. The channel's id for the message makes a
//! retry safe: the same id stores nothing twice and answers what the first call stored.
//!
//! Outbound, a channel with an `outbound_url` owns a webhook subscription to `message.sent`
//! of its own conversations: the workflows' and agents' answers reach the adapter through the
//! same durable, signed, retried deliveries as every webhook (see `webhooks.rs`), and the
//! adapter hands them to the provider. A web-chat channel needs no adapter: it has a public
//! key for the widget, and its visitors hold tokens signed with the channel's secret.

use crate::admin::check_len;
use crate::db::{append_events, PendingEvent, Store};
use crate::error::StoreError;
use crate::routing::{enum_str, parse_enum};
use crate::sql::{query, Row};
use crate::types::{Author, Conversation, Message, Millis, NewContact, NewConversation};
use serde::Serialize;
use serde_json::json;
use usher_core::manual::Status;
use usher_core::model::{Channel, Priority};
use usher_core::request::Rules;

/// The most channels a workspace may have.
pub const PER_WORKSPACE: i64 = 100;
/// The longest channel message id accepted.
pub const MESSAGE_ID_LEN: usize = 200;
/// A new message this many minutes after a close reopens the conversation, unless the
/// channel says otherwise.
pub const DEFAULT_REOPEN_MINUTES: i64 = 24 * 60;

/// Where a message came from: the channel, and the channel's own id for the message.
#[derive(Debug, Clone)]
pub(crate) struct Via {
    pub channel: i64,
    pub message_id: Option<String>,
}

/// A channel as the API shows it (the secret only when it is made).
#[derive(Debug, Clone, Serialize)]
pub struct ChannelInfo {
    /// Its id.
    pub id: i64,
    /// What it is.
    pub kind: Channel,
    /// Its name.
    pub name: String,
    /// The team its conversations go to when no workflow routes them (none: left for agents
    /// to pick).
    pub team: Option<i64>,
    /// Where outbound messages are delivered (the adapter), if anywhere.
    pub outbound_url: Option<String>,
    /// The webhook subscription that delivers them (its deliveries are visible at
    /// `/v1/webhooks/{id}/deliveries`).
    pub webhook: Option<i64>,
    /// A web-chat channel's public key, for the widget.
    pub public_key: Option<String>,
    /// Minutes after a close within which a new message reopens the conversation.
    pub reopen_minutes: i64,
    /// The secret that signs deliveries to the adapter and visitors' tokens: shown once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

/// A channel to create.
#[derive(Debug, Clone)]
pub struct NewChannel {
    /// What it is.
    pub kind: Channel,
    /// Its name.
    pub name: String,
    /// The team for its conversations.
    pub team: Option<i64>,
    /// The adapter's URL for outbound messages.
    pub outbound_url: Option<String>,
    /// Reopen window in minutes ([`DEFAULT_REOPEN_MINUTES`] when none).
    pub reopen_minutes: Option<i64>,
}

/// A change to a channel: only the fields given change.
#[derive(Debug, Clone, Default)]
pub struct ChannelPatch {
    /// A new name.
    pub name: Option<String>,
    /// A new team (`Some(None)`: none).
    pub team: Option<Option<i64>>,
    /// A new adapter URL (`Some(None)`: deliver nothing).
    pub outbound_url: Option<Option<String>>,
    /// A new reopen window.
    pub reopen_minutes: Option<i64>,
}

/// An inbound message as an adapter posts it.
#[derive(Debug, Clone)]
pub struct Inbound {
    /// The contact, by its id on the channel, with what the channel knows of it.
    pub contact: NewContact,
    /// The channel's id for the message (retries carry the same one).
    pub message_id: String,
    /// The text.
    pub text: String,
}

/// What an inbound message did.
#[derive(Debug, Clone, Serialize)]
pub struct Received {
    /// The conversation, as it stands after the message.
    pub conversation: Conversation,
    /// The stored message.
    pub message: Message,
    /// `opened`, `reopened`, or `appended` (to the open conversation).
    pub outcome: &'static str,
    /// Whether this was a retry of a message already stored (nothing changed).
    pub replayed: bool,
}

fn channel_view(row: &Row) -> Result<ChannelInfo, StoreError> {
    Ok(ChannelInfo {
        id: row.try_get("id")?,
        kind: parse_enum(&row.try_get::<String, _>("kind")?)?,
        name: row.try_get("name")?,
        team: row.try_get("team_id")?,
        outbound_url: row.try_get("outbound_url")?,
        webhook: row.try_get("webhook_id")?,
        public_key: row.try_get("public_key")?,
        reopen_minutes: row.try_get("reopen_minutes")?,
        secret: None,
    })
}

fn check_reopen(minutes: i64) -> Result<(), StoreError> {
    if (0..=525_600).contains(&minutes) {
        Ok(())
    } else {
        Err(StoreError::invalid("invalid_reopen_minutes", "reopen_minutes must be 0 to 525600 (a year)"))
    }
}

/// The token a web-chat visitor holds: the HMAC of its id under the channel's secret, so
/// nobody can read or write another visitor's conversation by guessing its id.
pub fn visitor_token(secret: &str, visitor: &str) -> String {
    let signed = crate::webhooks::signature(secret, 0, visitor);
    signed.rsplit("v1=").next().unwrap_or_default().to_string()
}

/// A new web-chat visitor id (128 random bits).
pub fn new_visitor() -> String {
    let secret = crate::admin::new_secret();
    let hex = &secret["usher_".len()..];
    format!("v_{}", &hex[..32])
}

impl Store {
    /// Creates a channel. One with an `outbound_url` gets the webhook subscription that
    /// delivers its outbound messages, signed with the channel's secret; a web-chat channel
    /// gets a public key.
    pub async fn create_channel(
        &self,
        ws: i64,
        new: &NewChannel,
        now: Millis,
    ) -> Result<ChannelInfo, StoreError> {
        check_len("name", &new.name)?;
        let reopen = new.reopen_minutes.unwrap_or(DEFAULT_REOPEN_MINUTES);
        check_reopen(reopen)?;
        if let Some(t) = new.team {
            self.team(ws, t).await?;
        }
        if let Some(url) = &new.outbound_url {
            crate::webhooks::check_url(url)?;
        }
        if self.count_in("channels", ws).await? >= PER_WORKSPACE {
            return Err(StoreError::conflict("too_many", format!("at most {PER_WORKSPACE} channels")));
        }
        let secret = crate::admin::new_secret().replace("usher_", "chsec_");
        let public_key = (new.kind == Channel::WebChat)
            .then(|| crate::admin::new_secret().replace("usher_", "wc_")[..27].to_string());
        self.sequence_events(ws).await?;
        let mut tx = self.begin().await?;
        let id: i64 = query(
            "INSERT INTO channels (workspace_id, kind, name, team_id, outbound_url, public_key, secret, reopen_minutes, \
             created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9) RETURNING id",
        )
        .bind(ws)
        .bind(enum_str(&new.kind))
        .bind(&new.name)
        .bind(new.team)
        .bind(&new.outbound_url)
        .bind(&public_key)
        .bind(&secret)
        .bind(reopen)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?
        .try_get(0)?;
        if let Some(url) = &new.outbound_url {
            let webhook = self
                .insert_webhook(&mut tx, ws, url, &["message.sent".to_string()], &secret, Some(id), now)
                .await?;
            query("UPDATE channels SET webhook_id = $1 WHERE id = $2")
                .bind(webhook)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        append_events(
            &mut tx,
            ws,
            now,
            &[PendingEvent::new("channel.created")
                .data(json!({ "channel": id, "kind": enum_str(&new.kind) }))],
        )
        .await?;
        tx.commit().await?;
        let mut c = self.channel(ws, id).await?;
        c.secret = Some(secret);
        Ok(c)
    }

    /// One channel.
    pub async fn channel(&self, ws: i64, id: i64) -> Result<ChannelInfo, StoreError> {
        channel_view(&self.row_in("channels", "channel", ws, id).await?)
    }

    /// The workspace's channels.
    pub async fn channels(&self, ws: i64) -> Result<Vec<ChannelInfo>, StoreError> {
        let rows = query("SELECT * FROM channels WHERE workspace_id = $1 ORDER BY id")
            .bind(ws)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(channel_view).collect()
    }

    /// A web-chat channel by its public key: its workspace, the channel and its secret.
    pub async fn web_chat(&self, public_key: &str) -> Result<(i64, ChannelInfo, String), StoreError> {
        let row = query("SELECT * FROM channels WHERE public_key = $1")
            .bind(public_key)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::not_found("web chat"))?;
        Ok((row.try_get("workspace_id")?, channel_view(&row)?, row.try_get("secret")?))
    }

    /// Changes a channel. A new `outbound_url` moves its subscription (made if it had none);
    /// none pauses the subscription, so nothing more is delivered.
    pub async fn update_channel(
        &self,
        ws: i64,
        id: i64,
        patch: &ChannelPatch,
        now: Millis,
    ) -> Result<ChannelInfo, StoreError> {
        let row = self.row_in("channels", "channel", ws, id).await?;
        if let Some(n) = &patch.name {
            check_len("name", n)?;
        }
        if let Some(m) = patch.reopen_minutes {
            check_reopen(m)?;
        }
        if let Some(Some(t)) = patch.team {
            self.team(ws, t).await?;
        }
        if let Some(Some(url)) = &patch.outbound_url {
            crate::webhooks::check_url(url)?;
        }
        let current = channel_view(&row)?;
        let secret: String = row.try_get("secret")?;
        self.sequence_events(ws).await?;
        let mut tx = self.begin().await?;
        let team = patch.team.unwrap_or(current.team);
        let url = patch.outbound_url.clone().unwrap_or(current.outbound_url.clone());
        let mut webhook = current.webhook;
        match (&url, webhook) {
            (Some(u), Some(w)) => {
                query("UPDATE webhooks SET url = $1, status = 'active', failures = 0, paused_reason = NULL, updated_at = $2 WHERE id = $3")
                    .bind(u)
                    .bind(now)
                    .bind(w)
                    .execute(&mut *tx)
                    .await?;
            }
            (Some(u), None) => {
                webhook = Some(
                    self.insert_webhook(
                        &mut tx,
                        ws,
                        u,
                        &["message.sent".to_string()],
                        &secret,
                        Some(id),
                        now,
                    )
                    .await?,
                );
            }
            (None, Some(w)) => {
                query("UPDATE webhooks SET status = 'paused', paused_reason = 'the channel has no outbound_url', updated_at = $1 WHERE id = $2")
                    .bind(now)
                    .bind(w)
                    .execute(&mut *tx)
                    .await?;
            }
            (None, None) => {}
        }
        query(
            "UPDATE channels SET name = $1, team_id = $2, outbound_url = $3, webhook_id = $4, reopen_minutes = $5, \
             updated_at = $6 WHERE id = $7",
        )
        .bind(patch.name.clone().unwrap_or(current.name.clone()))
        .bind(team)
        .bind(&url)
        .bind(webhook)
        .bind(patch.reopen_minutes.unwrap_or(current.reopen_minutes))
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        append_events(
            &mut tx,
            ws,
            now,
            &[PendingEvent::new("channel.updated").data(json!({ "channel": id }))],
        )
        .await?;
        tx.commit().await?;
        self.channel(ws, id).await
    }

    /// An inbound message through channel `channel` (see the module doc): finds or creates
    /// the contact, opens, reopens or continues its conversation, stores the message.
    pub async fn inbound(
        &self,
        ws: i64,
        channel: i64,
        msg: &Inbound,
        now: Millis,
    ) -> Result<Received, StoreError> {
        let ch = self.channel(ws, channel).await?;
        check_len("contact.external_id", &msg.contact.external_id)?;
        check_len("message.id", &msg.message_id)?;
        if msg.message_id.len() > MESSAGE_ID_LEN {
            return Err(StoreError::invalid(
                "too_long",
                format!("message.id is longer than {MESSAGE_ID_LEN} bytes"),
            ));
        }
        crate::messages::check_message(&msg.text)?;
        let via = Via { channel, message_id: Some(msg.message_id.clone()) };
        // Contention (a racing first message, a reopen meanwhile) is settled in a few rounds.
        for _ in 0..5 {
            if let Some(earlier) = self.channel_message(&via).await? {
                let conversation = self.conversation(ws, earlier.conversation, now).await?;
                // The retry answers as the first call did: a conversation's first message
                // opened it.
                let first: Option<i64> = query("SELECT MIN(id) FROM messages WHERE conversation_id = $1")
                    .bind(earlier.conversation)
                    .fetch_one(&self.pool)
                    .await?
                    .try_get(0)?;
                let outcome = if first == Some(earlier.id) { "opened" } else { "appended" };
                return Ok(Received { conversation, message: earlier, outcome, replayed: true });
            }
            let latest = query(
                "SELECT c.id, c.status, c.closed_at FROM conversations c JOIN contacts k ON k.id = c.contact_id \
                 WHERE k.workspace_id = $1 AND k.channel = $2 AND k.external_id = $3 AND c.channel_id = $4 \
                 ORDER BY c.id DESC LIMIT 1",
            )
            .bind(ws)
            .bind(enum_str(&ch.kind))
            .bind(&msg.contact.external_id)
            .bind(channel)
            .fetch_optional(&self.pool)
            .await?;
            let latest = match latest {
                Some(r) => Some((
                    r.try_get::<i64, _>("id")?,
                    parse_enum::<Status>(&r.try_get::<String, _>("status")?)?,
                    r.try_get::<Option<i64>, _>("closed_at")?,
                )),
                None => None,
            };
            let mut outcome = "appended";
            let conversation = match latest {
                Some((id, status, _)) if status != Status::Closed => id,
                Some((id, _, Some(closed))) if now - closed <= ch.reopen_minutes * 60_000 => {
                    match self.reroute(ws, id, None, now).await {
                        Ok(_) => {}
                        // Reopened by someone else meanwhile: the message joins it.
                        Err(StoreError::Conflict { .. }) => {}
                        Err(e) => return Err(e),
                    }
                    outcome = "reopened";
                    id
                }
                _ => {
                    let new = NewConversation {
                        channel: ch.kind,
                        contact: msg.contact.clone(),
                        message: Some(msg.text.clone()),
                        team: ch.team,
                        agent: None,
                        wait_for_agent: false,
                        priority: Priority::Normal,
                        strategy: None,
                        skills: Vec::new(),
                        match_language: false,
                        prefer_previous_agent: true,
                        rules: Rules::default(),
                        when_nobody: None,
                    };
                    let key = format!("channel:{channel}:{}", msg.message_id);
                    match self.open_via(ws, &new, Some(&key), Some(&via), now).await {
                        Ok((conversation, replayed)) => {
                            let message = self.channel_message(&via).await?.ok_or_else(|| {
                                StoreError::Corrupt("an opening message was not stored".into())
                            })?;
                            return Ok(Received { conversation, message, outcome: "opened", replayed });
                        }
                        Err(StoreError::Conflict { code: "conversation_open", .. }) => continue,
                        Err(e) => return Err(e),
                    }
                }
            };
            match self.post_via(ws, conversation, Author::Contact, None, &msg.text, Some(&via), now).await {
                Ok((message, replayed)) => {
                    let conversation = self.conversation(ws, conversation, now).await?;
                    return Ok(Received { conversation, message, outcome, replayed });
                }
                // Closed between the read and the message: look again.
                Err(StoreError::Conflict { code: "conversation_closed", .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::Moved)
    }

    /// A web-chat visitor's messages on channel `channel` (every conversation it had there),
    /// after message `after`, internal notes left out.
    pub async fn visitor_messages(
        &self,
        ws: i64,
        channel: i64,
        visitor: &str,
        after: i64,
    ) -> Result<Vec<Message>, StoreError> {
        let rows = query(&format!(
            "SELECT m.* FROM messages m JOIN conversations c ON c.id = m.conversation_id \
             JOIN contacts k ON k.id = c.contact_id \
             WHERE k.workspace_id = $1 AND k.channel = 'web_chat' AND k.external_id = $2 AND c.channel_id = $3 \
             AND m.id > $4 AND m.direction <> 'internal' ORDER BY m.id LIMIT {}",
            crate::limits::EVENTS_PAGE
        ))
        .bind(ws)
        .bind(visitor)
        .bind(channel)
        .bind(after)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(crate::messages::message_view).collect()
    }
}
