//! Presence that follows the agent console's connection (the rule is
//! `usher_core::presence::follow`; this is its shell).
//!
//! Each live console connection is a row of `agent_links`, refreshed while it lives
//! ([`Store::link_seen`]); a node that dies leaves rows that go stale after
//! [`LINK_STALE_MILLIS`] and are then counted as gone since they were last seen. When an
//! agent's last link goes, `agents.link_gone_at` says when. [`Store::sweep_presence`], run
//! by every node's worker, turns away the agents whose links have all been gone for longer
//! than the grace period; [`Store::link_opened`] gives back what was taken. Every change
//! goes through the same locked, draining presence command as a change by hand, with
//! `"by": "connection"` in its event.

use crate::db::{retrying, Store, Tx};
use crate::error::StoreError;
use crate::routing::parse_enum;
use crate::sql::query;
use crate::types::Millis;
use usher_core::model::{Presence, Timestamp};
use usher_core::presence::Links;

/// A link not refreshed for this long counts as gone (its node died, or the network did).
pub const LINK_STALE_MILLIS: i64 = 45_000;
/// How often a live link is refreshed.
pub const LINK_REFRESH_MILLIS: i64 = 10_000;
/// The grace period when none is configured, in seconds.
pub const DEFAULT_GRACE_SECONDS: i64 = 120;

/// How an agent's presence is to change.
#[derive(Debug, Clone, Copy)]
pub(crate) enum StatusChange {
    /// To this one, by hand.
    To(Presence),
    /// As the console links say, with this grace period.
    FollowLinks { grace_millis: i64 },
}

impl Store {
    /// What is known of an agent's links, read in the command's transaction.
    pub(crate) async fn links_in(&self, tx: &mut Tx, agent: i64) -> Result<Links, StoreError> {
        let row = query(
            "SELECT a.link_gone_at, a.away_from, (SELECT COUNT(*) FROM agent_links l WHERE l.agent_id = a.id) AS live \
             FROM agents a WHERE a.id = $1",
        )
        .bind(agent)
        .fetch_one(&mut **tx)
        .await?;
        let taken: Option<String> = row.try_get("away_from")?;
        Ok(Links {
            live: u32::try_from(row.try_get::<i64, _>("live")?).unwrap_or(u32::MAX),
            gone_since: row.try_get::<Option<i64>, _>("link_gone_at")?.map(Timestamp),
            taken: taken.as_deref().map(parse_enum::<Presence>).transpose()?,
        })
    }

    /// A console connection of `agent` opened: it counts as a link until it closes, and an
    /// agent Usher turned away for want of one gets its presence back. Returns the link's id.
    pub async fn link_opened(&self, ws: i64, agent: i64, now: Millis) -> Result<i64, StoreError> {
        let mut tx = self.begin().await?;
        let exists = query("SELECT id FROM agents WHERE id = $1 AND workspace_id = $2")
            .bind(agent)
            .bind(ws)
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_none() {
            return Err(StoreError::not_found(format!("agent {agent}")));
        }
        let id: i64 = query(
            "INSERT INTO agent_links (workspace_id, agent_id, opened_at, seen_at) VALUES ($1, $2, $3, $3) RETURNING id",
        )
        .bind(ws)
        .bind(agent)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?
        .try_get(0)?;
        query("UPDATE agents SET link_gone_at = NULL WHERE id = $1").bind(agent).execute(&mut *tx).await?;
        tx.commit().await?;
        retrying!(self.set_status_once(ws, agent, StatusChange::FollowLinks { grace_millis: 0 }, now).await)?;
        Ok(id)
    }

    /// A live link is still there (refresh it every [`LINK_REFRESH_MILLIS`]).
    pub async fn link_seen(&self, link: i64, now: Millis) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        query("UPDATE agent_links SET seen_at = $1 WHERE id = $2")
            .bind(now)
            .bind(link)
            .execute(&mut *tx)
            .await?;
        tx.commit().await
    }

    /// A link closed. When it was the agent's last, the grace period starts now.
    pub async fn link_closed(&self, link: i64, now: Millis) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        self.drop_link(&mut tx, link, now).await?;
        tx.commit().await
    }

    async fn drop_link(&self, tx: &mut Tx, link: i64, gone_at: Millis) -> Result<(), StoreError> {
        let Some(row) = query("DELETE FROM agent_links WHERE id = $1 RETURNING agent_id")
            .bind(link)
            .fetch_optional(&mut **tx)
            .await?
        else {
            return Ok(());
        };
        let agent: i64 = row.try_get(0)?;
        query(
            "UPDATE agents SET link_gone_at = $1 WHERE id = $2 \
             AND NOT EXISTS (SELECT 1 FROM agent_links WHERE agent_id = $2)",
        )
        .bind(gone_at)
        .bind(agent)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// Turns away every agent whose links have all been gone for `grace_millis` or more
    /// (stale links of dead nodes counted as gone since last seen). Returns the agents turned
    /// away, as (workspace, agent).
    pub async fn sweep_presence(
        &self,
        now: Millis,
        grace_millis: i64,
    ) -> Result<Vec<(i64, i64)>, StoreError> {
        let stale = query("SELECT id, seen_at FROM agent_links WHERE seen_at < $1 ORDER BY id LIMIT 500")
            .bind(now - LINK_STALE_MILLIS)
            .fetch_all(&self.pool)
            .await?;
        if !stale.is_empty() {
            let mut tx = self.begin().await?;
            for r in &stale {
                self.drop_link(&mut tx, r.try_get("id")?, r.try_get("seen_at")?).await?;
            }
            tx.commit().await?;
        }
        let due = query(
            "SELECT workspace_id, id FROM agents WHERE link_gone_at IS NOT NULL AND link_gone_at <= $1 \
             AND status IN ('online', 'busy') ORDER BY id LIMIT 500",
        )
        .bind(now - grace_millis.max(0))
        .fetch_all(&self.pool)
        .await?;
        let mut turned = Vec::new();
        for r in &due {
            let (ws, agent): (i64, i64) = (r.try_get(0)?, r.try_get(1)?);
            let change = StatusChange::FollowLinks { grace_millis };
            if retrying!(self.set_status_once(ws, agent, change, now).await)? {
                turned.push((ws, agent));
            }
        }
        Ok(turned)
    }
}
