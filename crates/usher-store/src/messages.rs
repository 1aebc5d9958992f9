//! A conversation's messages: what the contact wrote (inbound, from a channel adapter) and
//! what agents answered (outbound). The first agent message after the assignment records the
//! conversation's first response time. Messages change no routing state, so a message takes
//! no team or agent lock: only the conversation's row, for its first response.

use crate::channels::Via;
use crate::db::{append_events, PendingEvent, Store, Tx};
use crate::error::StoreError;
use crate::limits;
use crate::routing::parse_enum;
use crate::sql::{query, Row};
use crate::types::{rfc3339, Author, Message, Millis};
use serde_json::json;
use usher_core::manual::Status;

/// A message's text must hold something, no NUL, and at most [`limits::MESSAGE_LEN`] bytes.
pub(crate) fn check_message(text: &str) -> Result<(), StoreError> {
    if text.trim().is_empty() || text.contains('\0') {
        return Err(StoreError::invalid("invalid_field", "text must not be empty nor hold NUL characters"));
    }
    if text.len() > limits::MESSAGE_LEN {
        return Err(StoreError::invalid(
            "too_long",
            format!("text is longer than {} bytes", limits::MESSAGE_LEN),
        ));
    }
    Ok(())
}

/// Stores a conversation's opening message (the contact's) inside the opening transaction.
pub(crate) async fn insert_inbound(
    tx: &mut Tx,
    ws: i64,
    conversation: i64,
    text: &str,
    via: Option<&Via>,
    now: Millis,
) -> Result<(), StoreError> {
    query(
        "INSERT INTO messages (workspace_id, conversation_id, direction, author, agent_id, text, created_at, \
         channel_id, channel_message_id) VALUES ($1, $2, 'inbound', 'contact', NULL, $3, $4, $5, $6)",
    )
    .bind(ws)
    .bind(conversation)
    .bind(text)
    .bind(now)
    .bind(via.map(|v| v.channel))
    .bind(via.and_then(|v| v.message_id.as_deref()))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub(crate) fn message_view(row: &Row) -> Result<Message, StoreError> {
    Ok(Message {
        id: row.try_get("id")?,
        conversation: row.try_get("conversation_id")?,
        direction: row.try_get("direction")?,
        author: parse_enum(&row.try_get::<String, _>("author")?)?,
        agent: row.try_get("agent_id")?,
        text: row.try_get("text")?,
        at: rfc3339(row.try_get("created_at")?),
    })
}

impl Store {
    /// Adds a message to a conversation. An agent's message must come from the agent who holds
    /// the conversation; a contact's may come while it is open. Closed conversations take no
    /// messages (reopen first).
    pub async fn post_message(
        &self,
        ws: i64,
        conversation: i64,
        author: Author,
        agent: Option<i64>,
        text: &str,
        now: Millis,
    ) -> Result<Message, StoreError> {
        Ok(self.post_via(ws, conversation, author, agent, text, None, now).await?.0)
    }

    /// [`Store::post_message`] for a message that came through a channel with the channel's
    /// id for it: a second message with the same id stores nothing and answers the first
    /// (`true` as the second value).
    #[allow(clippy::too_many_arguments)] // the parts of one message, each used once
    pub(crate) async fn post_via(
        &self,
        ws: i64,
        conversation: i64,
        author: Author,
        agent: Option<i64>,
        text: &str,
        via: Option<&Via>,
        now: Millis,
    ) -> Result<(Message, bool), StoreError> {
        check_message(text)?;
        let mut tx = self.begin().await?;
        let lock = match self.backend {
            crate::db::Backend::Postgres => " FOR UPDATE",
            crate::db::Backend::Sqlite => "",
        };
        let row = query(&format!(
            "SELECT status, assignee_id, assigned_at, first_response_at FROM conversations WHERE id = $1 AND workspace_id = $2{lock}"
        ))
        .bind(conversation)
        .bind(ws)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| StoreError::not_found(format!("conversation {conversation}")))?;
        let status: Status = parse_enum(&row.try_get::<String, _>("status")?)?;
        if status == Status::Closed {
            return Err(StoreError::conflict(
                "conversation_closed",
                "the conversation is closed; reopen it first",
            ));
        }
        let assignee: Option<i64> = row.try_get("assignee_id")?;
        let (direction, agent) = match author {
            Author::Contact => ("inbound", None),
            Author::Workflow => ("outbound", None),
            Author::Agent => {
                let Some(a) = agent.or(assignee) else {
                    return Err(StoreError::conflict(
                        "not_assigned",
                        "nobody holds the conversation to answer it",
                    ));
                };
                if assignee != Some(a) {
                    return Err(StoreError::conflict(
                        "not_assignee",
                        format!("agent {a} does not hold the conversation (claim it first)"),
                    ));
                }
                ("outbound", Some(a))
            }
        };
        let inserted = query(
            "INSERT INTO messages (workspace_id, conversation_id, direction, author, agent_id, text, created_at, \
             channel_id, channel_message_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (channel_id, channel_message_id) DO NOTHING RETURNING id",
        )
        .bind(ws)
        .bind(conversation)
        .bind(direction)
        .bind(author.as_str())
        .bind(agent)
        .bind(text)
        .bind(now)
        .bind(via.map(|v| v.channel))
        .bind(via.and_then(|v| v.message_id.as_deref()))
        .fetch_optional(&mut *tx)
        .await?;
        let Some(inserted) = inserted else {
            // The channel sent this message before: answer what the first time stored.
            tx.rollback().await?;
            let via =
                via.ok_or_else(|| StoreError::Corrupt("a message without a channel id conflicted".into()))?;
            let earlier = self.channel_message(via).await?;
            return Ok((earlier.ok_or(StoreError::Moved)?, true));
        };
        let id: i64 = inserted.try_get(0)?;
        let first = author == Author::Agent
            && row.try_get::<Option<i64>, _>("assigned_at")?.is_some()
            && row.try_get::<Option<i64>, _>("first_response_at")?.is_none();
        if first {
            query("UPDATE conversations SET first_response_at = $1 WHERE id = $2")
                .bind(now)
                .bind(conversation)
                .execute(&mut *tx)
                .await?;
        }
        let kind = if author == Author::Contact { "message.received" } else { "message.sent" };
        let event = PendingEvent::new(kind)
            .conversation(conversation)
            .agent(agent)
            .data(json!({ "message": id, "first_response": first }));
        append_events(&mut tx, ws, now, &[event]).await?;
        tx.commit().await?;
        // The conversation's runs hear of it: a contact's message answers a question, an
        // agent's reply ends a no-reply watch.
        let input = match author {
            Author::Contact => Some(usher_workflow::engine::Input::Message { text: text.to_string() }),
            Author::Agent => Some(usher_workflow::engine::Input::AgentReplied),
            Author::Workflow => None,
        };
        if let Some(input) = input {
            match self.feed_runs(ws, conversation, &input, now).await {
                // A contact's message that answered no question may start a workflow whose
                // trigger is "message received" (with its keywords, if it has any).
                Ok(false) if author == Author::Contact => {
                    let lowered = text.to_lowercase();
                    let fires = |t: &usher_workflow::Trigger| match t {
                        usher_workflow::Trigger::MessageReceived { keywords } => {
                            keywords.is_empty()
                                || keywords.iter().any(|k| lowered.contains(&k.to_lowercase()))
                        }
                        _ => false,
                    };
                    if let Err(e) = self.fire(ws, conversation, fires, now).await {
                        tracing::warn!(error = %e, conversation, "a message-received workflow could not start");
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, conversation, "runs will hear of the message from the worker")
                }
            }
        }
        Ok((
            Message {
                id,
                conversation,
                direction: direction.into(),
                author,
                agent,
                text: text.into(),
                at: rfc3339(now),
            },
            false,
        ))
    }

    /// The message a channel sent with this id, if it has been stored.
    pub(crate) async fn channel_message(&self, via: &Via) -> Result<Option<Message>, StoreError> {
        let Some(id) = via.message_id.as_deref() else { return Ok(None) };
        let row = query("SELECT * FROM messages WHERE channel_id = $1 AND channel_message_id = $2")
            .bind(via.channel)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(message_view).transpose()
    }

    /// A conversation's messages in order, after message `after`, at most `limit` (capped).
    pub async fn messages(
        &self,
        ws: i64,
        conversation: i64,
        after: i64,
        limit: i64,
    ) -> Result<Vec<Message>, StoreError> {
        let exists = query("SELECT id FROM conversations WHERE id = $1 AND workspace_id = $2")
            .bind(conversation)
            .bind(ws)
            .fetch_optional(&self.pool)
            .await?;
        if exists.is_none() {
            return Err(StoreError::not_found(format!("conversation {conversation}")));
        }
        let limit = limit.clamp(1, limits::EVENTS_PAGE);
        let rows = query(&format!(
            "SELECT * FROM messages WHERE conversation_id = $1 AND id > $2 ORDER BY id LIMIT {limit}"
        ))
        .bind(conversation)
        .bind(after)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(message_view).collect()
    }
}
