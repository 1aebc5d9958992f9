//! # usher-store: the one source of truth
//!
//! Everything Usher knows lives in the database: workspaces, tokens, teams, agents,
//! contacts, conversations, decisions with their traces, and an append-only event log. A
//! node keeps nothing authoritative in memory, so any number of `usher serve` processes can
//! share one PostgreSQL.
//!
//! ## Two backends, one implementation
//! SQLite (embedded, WAL, the default) and PostgreSQL (several nodes) run the same commands,
//! written once in portable SQL (`$1` placeholders, `RETURNING`, row values) against the
//! small executor of `sql.rs`: SQLite through `rusqlite`, synchronously on the one writer
//! connection (a statement is microseconds of CPU, so it runs where it is issued), PostgreSQL
//! through sqlx's native driver. The few real differences are in [`Backend`]:
//! how a write transaction starts (SQLite: the one writer connection, shared by the commands
//! that queue for it, see `writer.rs`), whether rows are locked with `FOR UPDATE`
//! (PostgreSQL), and how events are numbered (in the command on SQLite, by a sequencer after
//! the commit on PostgreSQL, see [`Store::events`]). Each backend has its own migrations
//! folder, run on connect.
//!
//! ## Serializing decisions
//! Every command is one transaction. A routing command locks, in this order, the rows of the
//! teams involved (ascending id), then the agent rows it needs (ascending id, the same
//! queries that load the snapshot), and only then reads the queues. What it read before the
//! locks (which teams an agent belongs to, which teams hold conversations waiting for it) is
//! checked after them; if it changed, the command runs again ([`StoreError::Moved`]). So two
//! nodes never hand one conversation to two agents nor push an agent past its cap. SQLite has
//! one writer, so the locks are implicit there.
//!
//! ## Counters
//! The counters the core needs (open conversations per agent and per channel, today's
//! count, the rotation) are columns written in the same transaction as the change that moves
//! them, never a `COUNT` on the hot path. [`Store::audit_counters`] recounts them from the
//! conversations, for tests and operators.
//!
//! Start reading at [`Store::open_conversation`] in `routing.rs`.

mod admin;
pub mod bench;
pub mod channels;
pub mod console;
mod db;
mod error;
pub mod language;
mod messages;
pub mod presence;
pub mod reports;
mod routing;
pub mod runs;
mod sql;
pub mod stats;
pub mod types;
pub mod webhooks;
pub mod workflows;
mod writer;

pub use db::{Backend, Store};
pub use error::StoreError;
pub use types::*;

/// Limits on what one workspace or one call may hold, each named so the API can document it.
pub mod limits {
    /// The most conversations a drain hands out in one transaction; the rest wait for the
    /// next capacity change.
    pub const DRAIN_BATCH: i64 = 1_000;
    /// The most events one page of the event log returns.
    pub const EVENTS_PAGE: i64 = 1_000;
    /// The most conversations one page of a list returns.
    pub const LIST_PAGE: i64 = 500;
    /// The most waiting conversations a queue listing returns.
    pub const QUEUE_PAGE: i64 = 1_000;
    /// The window over which a team's release rate is measured, in seconds.
    pub const RELEASE_WINDOW_SECONDS: u32 = 900;
    /// The most members a team may have.
    pub const TEAM_MEMBERS: usize = 10_000;
    /// Length limits for names, e-mails, tags and similar strings.
    pub const NAME_LEN: usize = 200;
    /// The most tags, skills or languages on one contact or agent.
    pub const LIST_LEN: usize = 64;
    /// The longest first message stored with a conversation, in bytes.
    pub const MESSAGE_LEN: usize = 16_384;
}
