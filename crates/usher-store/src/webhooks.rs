//! Outbound webhooks: subscriptions per workspace to the event log, delivered at least once,
//! signed, retried with exponential backoff and jitter, and paused when they keep failing.
//!
//! The event log is the transactional outbox: every event is committed with the command that
//! caused it, so nothing is lost when the process dies between the commit and the send.
//! [`Store::dispatch_webhooks`] moves the log past each subscription's cursor into
//! `deliveries`, in one transaction with the cursor's advance; senders (any node) take due
//! deliveries, post them, and record each attempt with [`Store::record_attempt`].
//!
//! ## What a receiver gets
//! `POST` to the subscription's URL with a JSON body `{"id": DELIVERY, "event": EVENT}` (the
//! event as `GET /v1/events` shows it; a message's event, `message.sent` or
//! `message.received`, also carries `message`, `contact` `{id, external_id, name}` and
//! `channel` `{id, kind}`, so that a channel adapter can hand the message on) and headers:
//! - `Usher-Delivery`: the delivery id (the same on every retry: de-duplicate on it);
//! - `Usher-Event`: the event's kind;
//! - `Usher-Signature`: `t=UNIX_SECONDS,v1=HEX`, where `HEX` is the HMAC-SHA256, keyed with
//!   the subscription's secret, of the text `UNIX_SECONDS.BODY` (the timestamp, a full stop,
//!   the raw body). Verify it, and refuse timestamps far from now to stop replays.
//!
//! A 2xx answer delivers it. Anything else (or no answer within the timeout) is retried after
//! `2^attempt` seconds (capped at an hour) plus up to a quarter of random jitter; when one
//! delivery has failed [`PAUSE_AFTER`] times with no success of the subscription since (some
//! 17 minutes of a receiver that is down, not a burst of events while it blinks) the
//! subscription is paused (`webhook.paused` in the log) until it is resumed, and nothing is
//! retried for ever.

use crate::db::{append_events, PendingEvent, Store, Tx};
use crate::error::StoreError;
use crate::sql::{query, Row};
use crate::types::{rfc3339, Event, Millis};
use hmac::{Hmac, Mac};
use rand::Rng;
use serde::Serialize;
use serde_json::json;
use sha2::Sha256;

/// Failed attempts of one delivery, with no success in between, after which its subscription
/// is paused.
pub const PAUSE_AFTER: i64 = 10;
/// The longest wait between two attempts, in seconds.
pub const MAX_BACKOFF_SECONDS: i64 = 3_600;
/// How many deliveries a sender takes per round.
pub const SEND_BATCH: i64 = 50;
/// How long a sender holds a delivery it took before another may take it, in milliseconds.
pub const LEASE_MILLIS: i64 = 30_000;
/// How many events one dispatch moves per subscription.
const DISPATCH_BATCH: i64 = 500;
/// The most subscriptions a workspace may have.
pub const PER_WORKSPACE: i64 = 50;

/// A subscription as the API shows it (the secret only when it is created).
#[derive(Debug, Clone, Serialize)]
pub struct Webhook {
    /// Its id.
    pub id: i64,
    /// Where deliveries go.
    pub url: String,
    /// The event kinds it wants (`conversation.assigned`, …); empty means every event.
    pub events: Vec<String>,
    /// `active` or `paused`.
    pub status: String,
    /// Failed attempts in a row.
    pub failures: i64,
    /// Why it was paused.
    pub paused_reason: Option<String>,
    /// The channel that owns it (its outbound messages), if any.
    pub channel: Option<i64>,
    /// The signing secret, shown once, when it is made.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

/// A delivery and its attempts.
#[derive(Debug, Clone, Serialize)]
pub struct Delivery {
    /// Its id (`Usher-Delivery`).
    pub id: i64,
    /// The event's sequence number.
    pub event_seq: i64,
    /// The event's kind.
    pub kind: String,
    /// `pending`, `delivered`.
    pub status: String,
    /// Attempts so far.
    pub attempts: i64,
    /// When it is tried next (RFC 3339), while pending.
    pub next_attempt_at: Option<String>,
    /// The last answer's HTTP status, if any.
    pub last_status: Option<i64>,
    /// The last error, if any.
    pub last_error: Option<String>,
    /// When it was delivered.
    pub delivered_at: Option<String>,
}

/// A delivery ready to send: where, what, and how to sign it.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The delivery id.
    pub id: i64,
    /// The subscription.
    pub webhook: i64,
    /// Where to.
    pub url: String,
    /// The signing secret.
    pub secret: String,
    /// The event's kind.
    pub kind: String,
    /// The body to post.
    pub body: String,
}

/// The `Usher-Signature` header for `body` sent at `unix_seconds` (see the module doc).
pub fn signature(secret: &str, unix_seconds: i64, body: &str) -> String {
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(format!("{unix_seconds}.{body}").as_bytes());
    let hex: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    format!("t={unix_seconds},v1={hex}")
}

/// The wait before attempt `attempts + 1`: `2^attempts` seconds, capped, plus jitter.
pub fn backoff_millis(attempts: i64, jitter: f64) -> i64 {
    let base =
        2i64.saturating_pow(u32::try_from(attempts.clamp(0, 30)).unwrap_or(30)).min(MAX_BACKOFF_SECONDS)
            * 1000;
    base + (base as f64 * 0.25 * jitter.clamp(0.0, 1.0)) as i64
}

fn webhook_view(row: &Row) -> Result<Webhook, StoreError> {
    Ok(Webhook {
        id: row.try_get("id")?,
        url: row.try_get("url")?,
        events: crate::db::json_col(row, "events")?,
        status: row.try_get("status")?,
        failures: row.try_get("failures")?,
        paused_reason: row.try_get("paused_reason")?,
        channel: row.try_get("channel_id")?,
        secret: None,
    })
}

/// Receivers are reached over plain HTTP (the build carries no TLS stack yet): an `https://`
/// URL is refused with its own code rather than accepted and failed for ever.
pub(crate) fn check_url(url: &str) -> Result<(), StoreError> {
    if url.starts_with("https://") {
        return Err(StoreError::invalid(
            "https_not_supported",
            "deliveries go over plain HTTP for now: give an http:// URL (e.g. a TLS-terminating proxy)",
        ));
    }
    let ok = url.starts_with("http://")
        && url.len() > "http://".len()
        && url.len() <= 2_000
        && !url.contains(char::is_whitespace)
        && !url.contains('\0');
    if ok {
        Ok(())
    } else {
        Err(StoreError::invalid("invalid_url", "the URL must be http://HOST/…, at most 2,000 characters"))
    }
}

impl Store {
    /// Subscribes `url` to the workspace's events from now on (all kinds when `events` is
    /// empty). The secret is returned once.
    pub async fn create_webhook(
        &self,
        ws: i64,
        url: &str,
        events: &[String],
        now: Millis,
    ) -> Result<Webhook, StoreError> {
        check_url(url)?;
        if events.len() > crate::limits::LIST_LEN {
            return Err(StoreError::invalid(
                "too_many",
                format!("at most {} event kinds", crate::limits::LIST_LEN),
            ));
        }
        for e in events {
            crate::admin::check_len("event kind", e)?;
        }
        let n = self.count_in("webhooks", ws).await?;
        if n >= PER_WORKSPACE {
            return Err(StoreError::conflict("too_many", format!("at most {PER_WORKSPACE} webhooks")));
        }
        let secret = crate::admin::new_secret().replace("usher_", "whsec_");
        self.sequence_events(ws).await?;
        let mut tx = self.begin().await?;
        let id = self.insert_webhook(&mut tx, ws, url, events, &secret, None, now).await?;
        tx.commit().await?;
        let mut w = self.webhook(ws, id).await?;
        w.secret = Some(secret);
        Ok(w)
    }

    /// Adds a subscription starting after the log's last numbered event (a channel's own, for
    /// its outbound messages, names the channel).
    #[allow(clippy::too_many_arguments)] // the parts of one subscription, each used once
    pub(crate) async fn insert_webhook(
        &self,
        tx: &mut Tx,
        ws: i64,
        url: &str,
        events: &[String],
        secret: &str,
        channel: Option<i64>,
        now: Millis,
    ) -> Result<i64, StoreError> {
        let cursor: i64 = query("SELECT event_seq FROM workspaces WHERE id = $1")
            .bind(ws)
            .fetch_one(&mut **tx)
            .await?
            .try_get(0)?;
        let id: i64 = query(
            "INSERT INTO webhooks (workspace_id, url, events, secret, status, cursor_seq, created_at, updated_at, channel_id) \
             VALUES ($1, $2, $3, $4, 'active', $5, $6, $6, $7) RETURNING id",
        )
        .bind(ws)
        .bind(url)
        .bind(serde_json::to_string(events)?)
        .bind(secret)
        .bind(cursor)
        .bind(now)
        .bind(channel)
        .fetch_one(&mut **tx)
        .await?
        .try_get(0)?;
        append_events(
            tx,
            ws,
            now,
            &[PendingEvent::new("webhook.created").data(json!({ "webhook": id, "channel": channel }))],
        )
        .await?;
        Ok(id)
    }

    /// One subscription.
    pub async fn webhook(&self, ws: i64, id: i64) -> Result<Webhook, StoreError> {
        let row = self.row_in("webhooks", "webhook", ws, id).await?;
        webhook_view(&row)
    }

    /// The workspace's subscriptions.
    pub async fn webhooks(&self, ws: i64) -> Result<Vec<Webhook>, StoreError> {
        let rows = query("SELECT * FROM webhooks WHERE workspace_id = $1 ORDER BY id")
            .bind(ws)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(webhook_view).collect()
    }

    /// Resumes a paused subscription: its pending deliveries are tried again at once.
    pub async fn resume_webhook(&self, ws: i64, id: i64, now: Millis) -> Result<Webhook, StoreError> {
        self.webhook(ws, id).await?;
        let mut tx = self.begin().await?;
        query("UPDATE webhooks SET status = 'active', failures = 0, paused_reason = NULL, updated_at = $1 WHERE id = $2")
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        query("UPDATE deliveries SET next_attempt_at = $1 WHERE webhook_id = $2 AND status = 'pending'")
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        append_events(
            &mut tx,
            ws,
            now,
            &[PendingEvent::new("webhook.resumed").data(json!({ "webhook": id }))],
        )
        .await?;
        tx.commit().await?;
        self.webhook(ws, id).await
    }

    /// A subscription's deliveries, newest first, with their attempts' outcome.
    pub async fn deliveries(&self, ws: i64, id: i64, limit: i64) -> Result<Vec<Delivery>, StoreError> {
        self.webhook(ws, id).await?;
        let sql = format!(
            "SELECT * FROM deliveries WHERE webhook_id = $1 ORDER BY id DESC LIMIT {}",
            limit.clamp(1, 500)
        );
        let rows = query(&sql).bind(id).fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                let status: String = r.try_get("status")?;
                Ok(Delivery {
                    id: r.try_get("id")?,
                    event_seq: r.try_get("event_seq")?,
                    kind: r.try_get("kind")?,
                    next_attempt_at: if status == "pending" {
                        Some(rfc3339(r.try_get("next_attempt_at")?))
                    } else {
                        None
                    },
                    status,
                    attempts: r.try_get("attempts")?,
                    last_status: r.try_get("last_status")?,
                    last_error: r.try_get("last_error")?,
                    delivered_at: r.try_get::<Option<i64>, _>("delivered_at")?.map(rfc3339),
                })
            })
            .collect()
    }

    /// Moves the log past every active subscription's cursor into deliveries (each
    /// subscription in one transaction with its cursor), for every workspace. Idempotent.
    pub async fn dispatch_webhooks(&self, now: Millis) -> Result<usize, StoreError> {
        let subs = query("SELECT id, workspace_id FROM webhooks WHERE status = 'active' ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        let mut made = 0;
        for s in &subs {
            let (id, ws): (i64, i64) = (s.try_get(0)?, s.try_get(1)?);
            self.sequence_events(ws).await?;
            let lock = self.for_update();
            let mut tx = self.begin().await?;
            let Some(row) = query(&format!(
                "SELECT events, cursor_seq, status, channel_id FROM webhooks WHERE id = $1{lock}"
            ))
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
            else {
                continue;
            };
            let wanted: Vec<String> = crate::db::json_col(&row, "events")?;
            let cursor: i64 = row.try_get("cursor_seq")?;
            let channel: Option<i64> = row.try_get("channel_id")?;
            // A channel's subscription takes only its own conversations' events.
            let sql = format!(
                "SELECT e.seq, e.kind, c.channel_id FROM events e LEFT JOIN conversations c ON c.id = e.conversation_id \
                 WHERE e.workspace_id = $1 AND e.seq > $2 ORDER BY e.seq LIMIT {DISPATCH_BATCH}"
            );
            let events = query(&sql).bind(ws).bind(cursor).fetch_all(&mut *tx).await?;
            let Some(last) = events.last().map(|e| e.try_get::<i64, _>("seq")).transpose()? else {
                continue;
            };
            for e in &events {
                let kind: String = e.try_get("kind")?;
                if !wanted.is_empty() && !wanted.contains(&kind) {
                    continue;
                }
                if channel.is_some() && e.try_get::<Option<i64>, _>("channel_id")? != channel {
                    continue;
                }
                query(
                    "INSERT INTO deliveries (webhook_id, workspace_id, event_seq, kind, status, next_attempt_at, created_at) \
                     VALUES ($1, $2, $3, $4, 'pending', $5, $5) ON CONFLICT (webhook_id, event_seq) DO NOTHING",
                )
                .bind(id)
                .bind(ws)
                .bind(e.try_get::<i64, _>("seq")?)
                .bind(&kind)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                made += 1;
            }
            query("UPDATE webhooks SET cursor_seq = $1 WHERE id = $2")
                .bind(last)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        }
        Ok(made)
    }

    /// A delivery's body: the event, and for a message's event the message itself, its
    /// conversation's contact and channel, so that an adapter can hand it on at once.
    async fn delivery_body(&self, id: i64, event: Event) -> Result<String, StoreError> {
        let message = match (event.kind.as_str(), event.data.get("message").and_then(|m| m.as_i64())) {
            ("message.sent" | "message.received", Some(m)) => {
                query(
                    "SELECT m.*, k.id AS contact_id, k.external_id, k.name AS contact_name, c.channel AS kind, \
                     c.channel_id AS conversation_channel FROM messages m JOIN conversations c ON c.id = m.conversation_id \
                     JOIN contacts k ON k.id = c.contact_id WHERE m.id = $1",
                )
                .bind(m)
                .fetch_optional(&self.pool)
                .await?
            }
            _ => None,
        };
        let Some(row) = message else {
            return Ok(json!({ "id": id, "event": event }).to_string());
        };
        let body = json!({
            "id": id,
            "event": event,
            "message": crate::messages::message_view(&row)?,
            "contact": {
                "id": row.try_get::<i64, _>("contact_id")?,
                "external_id": row.try_get::<String, _>("external_id")?,
                "name": row.try_get::<Option<String>, _>("contact_name")?,
            },
            "channel": {
                "id": row.try_get::<Option<i64>, _>("conversation_channel")?,
                "kind": row.try_get::<String, _>("kind")?,
            },
        });
        Ok(body.to_string())
    }

    /// Deliveries due at `now` on active subscriptions, with their bodies.
    pub async fn due_deliveries(&self, now: Millis) -> Result<Vec<Outgoing>, StoreError> {
        let sql = format!(
            "SELECT d.id, d.webhook_id, d.workspace_id, d.event_seq, d.kind, w.url, w.secret FROM deliveries d \
             JOIN webhooks w ON w.id = d.webhook_id \
             WHERE d.status = 'pending' AND d.next_attempt_at <= $1 AND w.status = 'active' ORDER BY d.next_attempt_at LIMIT {SEND_BATCH}"
        );
        let rows = query(&sql).bind(now).fetch_all(&self.pool).await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let id: i64 = r.try_get("id")?;
            // A lease: the node that moves `next_attempt_at` forward sends it; another node
            // that read it too finds it taken. (A node that dies mid-send leaves it to be sent
            // again after the lease: at least once.)
            let leased = query("UPDATE deliveries SET next_attempt_at = $1 WHERE id = $2 AND next_attempt_at <= $3 AND status = 'pending' RETURNING id")
                .bind(now + LEASE_MILLIS)
                .bind(id)
                .bind(now)
                .fetch_optional(&self.pool)
                .await?;
            if leased.is_none() {
                continue;
            }
            let (ws, seq): (i64, i64) = (r.try_get("workspace_id")?, r.try_get("event_seq")?);
            let event: Option<Event> = self.events(ws, seq - 1, 1).await?.into_iter().next();
            let Some(event) = event.filter(|e| e.seq == seq) else { continue };
            out.push(Outgoing {
                id,
                webhook: r.try_get("webhook_id")?,
                url: r.try_get("url")?,
                secret: r.try_get("secret")?,
                kind: r.try_get("kind")?,
                body: self.delivery_body(id, event).await?,
            });
        }
        Ok(out)
    }

    /// Records one attempt of a delivery: delivered on `Ok(2xx)`, else retried later (or the
    /// subscription paused after [`PAUSE_AFTER`] failures in a row). An attempt for a delivery
    /// already delivered (another node sent it too) changes nothing.
    pub async fn record_attempt(
        &self,
        delivery: i64,
        status: Option<u16>,
        error: Option<&str>,
        millis: i64,
        now: Millis,
    ) -> Result<(), StoreError> {
        let lock = self.for_update();
        let mut tx = self.begin().await?;
        let Some(row) = query(&format!(
            "SELECT webhook_id, workspace_id, attempts, status FROM deliveries WHERE id = $1{lock}"
        ))
        .bind(delivery)
        .fetch_optional(&mut *tx)
        .await?
        else {
            return Ok(());
        };
        if row.try_get::<String, _>("status")? != "pending" {
            tx.rollback().await?;
            return Ok(());
        }
        let (webhook, ws, attempts): (i64, i64, i64) =
            (row.try_get("webhook_id")?, row.try_get("workspace_id")?, row.try_get("attempts")?);
        let attempt = attempts + 1;
        let ok = status.is_some_and(|s| (200..300).contains(&s));
        let error: Option<String> = match (ok, error, status) {
            (true, _, _) => None,
            (false, Some(e), _) => Some(e.chars().take(500).collect()),
            (false, None, Some(s)) => Some(format!("answered {s}")),
            (false, None, None) => Some("no answer".into()),
        };
        query("INSERT INTO delivery_attempts (delivery_id, attempt, at, status, error, millis) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(delivery)
            .bind(attempt)
            .bind(now)
            .bind(status.map(i64::from))
            .bind(error.clone())
            .bind(millis)
            .execute(&mut *tx)
            .await?;
        if ok {
            query("UPDATE deliveries SET status = 'delivered', attempts = $1, last_status = $2, last_error = NULL, delivered_at = $3 WHERE id = $4")
                .bind(attempt)
                .bind(status.map(i64::from))
                .bind(now)
                .bind(delivery)
                .execute(&mut *tx)
                .await?;
            query("UPDATE webhooks SET failures = 0 WHERE id = $1").bind(webhook).execute(&mut *tx).await?;
        } else {
            let jitter: f64 = rand::rng().random();
            query("UPDATE deliveries SET attempts = $1, last_status = $2, last_error = $3, next_attempt_at = $4 WHERE id = $5")
                .bind(attempt)
                .bind(status.map(i64::from))
                .bind(error.clone())
                .bind(now + backoff_millis(attempts, jitter))
                .bind(delivery)
                .execute(&mut *tx)
                .await?;
            let failures: i64 =
                query("UPDATE webhooks SET failures = failures + 1 WHERE id = $1 RETURNING failures")
                    .bind(webhook)
                    .fetch_one(&mut *tx)
                    .await?
                    .try_get(0)?;
            // Paused when one delivery has failed PAUSE_AFTER times with no success of the
            // subscription since: about 17 minutes of backoff, a receiver that is really down.
            // A burst of events failing once each while a receiver blinks does not pause it.
            if attempt >= PAUSE_AFTER && failures >= PAUSE_AFTER {
                let reason = format!(
                    "a delivery failed {attempt} times, {failures} failed attempts in a row; last: {}",
                    error.unwrap_or_default()
                );
                query("UPDATE webhooks SET status = 'paused', paused_reason = $1, updated_at = $2 WHERE id = $3 AND status = 'active'")
                    .bind(&reason)
                    .bind(now)
                    .bind(webhook)
                    .execute(&mut *tx)
                    .await?;
                let event =
                    PendingEvent::new("webhook.paused").data(json!({ "webhook": webhook, "reason": reason }));
                append_events(&mut tx, ws, now, &[event]).await?;
            }
        }
        tx.commit().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_the_documented_hmac() {
        // Computed independently, with Python's hmac module:
        // hmac.new(b"whsec_test", b'1700000000.{"a":1}', hashlib.sha256).hexdigest()
        assert_eq!(
            signature("whsec_test", 1_700_000_000, r#"{"a":1}"#),
            "t=1700000000,v1=38877139021993b830af32feea6e18a8da83eb2f6e49ee50bd9e4cf4ca4d3789"
        );
    }

    #[test]
    fn backoff_doubles_is_capped_and_jitters_up_to_a_quarter() {
        assert_eq!(backoff_millis(0, 0.0), 1_000);
        assert_eq!(backoff_millis(3, 0.0), 8_000);
        assert_eq!(backoff_millis(3, 1.0), 10_000);
        assert_eq!(backoff_millis(40, 0.0), MAX_BACKOFF_SECONDS * 1000);
        assert_eq!(backoff_millis(-1, 0.5), 1_125);
    }
}
