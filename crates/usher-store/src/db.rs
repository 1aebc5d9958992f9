//! Connecting, migrating, transactions and the event log: the parts every command shares.

use crate::error::StoreError;
use crate::types::Millis;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{Any, AnyPool, Row, Transaction};
use std::sync::Arc;
use std::time::Duration;

/// Which database is behind the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// An embedded SQLite file in WAL mode: one node.
    Sqlite,
    /// A PostgreSQL server: any number of nodes.
    Postgres,
}

/// The store: a connection pool and the dialect it speaks.
#[derive(Debug, Clone)]
pub struct Store {
    pub(crate) pool: AnyPool,
    pub(crate) backend: Backend,
    /// SQLite has one writer. Writers queue here, in the process, instead of spinning in
    /// SQLite's busy handler (which sleeps in steps of up to 100 ms and wrecks latency).
    write_lock: Arc<tokio::sync::Mutex<()>>,
    /// Workspace time zones, which never change once a workspace exists (there is no call to
    /// change one), so a node may remember them: one query less per command.
    pub(crate) time_zones: Arc<std::sync::RwLock<std::collections::HashMap<i64, chrono_tz::Tz>>>,
}

/// A write transaction in progress; on SQLite it also holds the process's write turn.
/// Dereferences to the connection, so `&mut *tx` is an executor.
pub(crate) struct Tx {
    tx: Transaction<'static, Any>,
    _turn: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Tx {
    pub(crate) async fn commit(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await
    }

    pub(crate) async fn rollback(self) -> Result<(), sqlx::Error> {
        self.tx.rollback().await
    }
}

impl std::ops::Deref for Tx {
    type Target = sqlx::AnyConnection;
    fn deref(&self) -> &sqlx::AnyConnection {
        &self.tx
    }
}

impl std::ops::DerefMut for Tx {
    fn deref_mut(&mut self) -> &mut sqlx::AnyConnection {
        &mut self.tx
    }
}

/// An event to append when the transaction commits.
#[derive(Debug, Clone)]
pub(crate) struct PendingEvent {
    pub kind: &'static str,
    pub conversation: Option<i64>,
    pub agent: Option<i64>,
    pub team: Option<i64>,
    pub data: serde_json::Value,
}

impl PendingEvent {
    pub fn new(kind: &'static str) -> PendingEvent {
        PendingEvent { kind, conversation: None, agent: None, team: None, data: serde_json::Value::Null }
    }
    pub fn conversation(mut self, id: i64) -> Self {
        self.conversation = Some(id);
        self
    }
    pub fn agent(mut self, id: Option<i64>) -> Self {
        self.agent = id;
        self
    }
    pub fn team(mut self, id: Option<i64>) -> Self {
        self.team = id;
        self
    }
    pub fn data(mut self, data: serde_json::Value) -> Self {
        self.data = data;
        self
    }
}

impl Store {
    /// Connects to `url` (`sqlite://path/to/usher.db` or `postgres://…`), creating a SQLite
    /// file if needed, and runs the migrations.
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(StoreError::invalid(
                "bad_database_url",
                "the database URL must start with sqlite: or postgres:",
            ));
        };
        let pool = match backend {
            Backend::Sqlite => {
                let url = if url.contains('?') { url.to_string() } else { format!("{url}?mode=rwc") };
                AnyPoolOptions::new()
                    .max_connections(4)
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            use sqlx::Executor;
                            conn.execute(
                                "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                                 PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON; \
                                 PRAGMA mmap_size = 268435456; PRAGMA cache_size = -16000;",
                            )
                            .await?;
                            Ok(())
                        })
                    })
                    .connect(&url)
                    .await?
            }
            Backend::Postgres => {
                AnyPoolOptions::new()
                    .max_connections(16)
                    .acquire_timeout(Duration::from_secs(10))
                    .connect(url)
                    .await?
            }
        };
        let store = Store {
            pool,
            backend,
            write_lock: Arc::new(tokio::sync::Mutex::new(())),
            time_zones: Arc::default(),
        };
        store.migrate().await?;
        Ok(store)
    }

    /// Runs the migrations that have not run yet.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        match self.backend {
            Backend::Sqlite => sqlx::migrate!("./migrations/sqlite").run(&self.pool).await?,
            Backend::Postgres => sqlx::migrate!("./migrations/postgres").run(&self.pool).await?,
        }
        Ok(())
    }

    /// Which backend this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Whether the database answers and is migrated (for `/readyz`).
    pub async fn ready(&self) -> bool {
        sqlx::query("SELECT COUNT(*) FROM workspaces").fetch_one(&self.pool).await.is_ok()
    }

    /// Closes the pool.
    pub async fn shutdown(&self) {
        self.pool.close().await;
    }

    /// Starts a write transaction. On SQLite it takes the write lock at once, so two
    /// transactions never both read and then fight over the upgrade.
    pub(crate) async fn begin(&self) -> Result<Tx, StoreError> {
        Ok(match self.backend {
            Backend::Sqlite => {
                let turn = self.write_lock.clone().lock_owned().await;
                Tx { tx: self.pool.begin_with("BEGIN IMMEDIATE").await?, _turn: Some(turn) }
            }
            Backend::Postgres => Tx { tx: self.pool.begin().await?, _turn: None },
        })
    }

    /// `FOR UPDATE` where the backend has it.
    pub(crate) fn for_update(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite => "",
            Backend::Postgres => " FOR UPDATE",
        }
    }
}

/// Appends events to the workspace's log with gap-free sequence numbers. Call it last in a
/// transaction: it locks the workspace row until commit.
pub(crate) async fn append_events(
    tx: &mut Tx,
    workspace: i64,
    now: Millis,
    events: &[PendingEvent],
) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    let n = i64::try_from(events.len()).unwrap_or(i64::MAX);
    let last: i64 =
        sqlx::query("UPDATE workspaces SET event_seq = event_seq + $1 WHERE id = $2 RETURNING event_seq")
            .bind(n)
            .bind(workspace)
            .fetch_one(&mut **tx)
            .await?
            .try_get(0)?;
    // One multi-row insert (at most a few dozen rows: the events of one command), so a
    // command pays one round trip for its events.
    for (ci, chunk) in events.chunks(64).enumerate() {
        let mut sql = String::from(
            "INSERT INTO events (workspace_id, seq, kind, at, conversation_id, agent_id, team_id, data) VALUES ",
        );
        for i in 0..chunk.len() {
            let p = i * 8;
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!(
                "(${}, ${}, ${}, ${}, ${}, ${}, ${}, ${})",
                p + 1,
                p + 2,
                p + 3,
                p + 4,
                p + 5,
                p + 6,
                p + 7,
                p + 8
            ));
        }
        let mut query = sqlx::query(&sql);
        for (i, e) in chunk.iter().enumerate() {
            let seq = last - n + 1 + i64::try_from(ci * 64 + i).unwrap_or(0);
            query = query
                .bind(workspace)
                .bind(seq)
                .bind(e.kind)
                .bind(now)
                .bind(e.conversation)
                .bind(e.agent)
                .bind(e.team)
                .bind(e.data.to_string());
        }
        query.execute(&mut **tx).await?;
    }
    Ok(())
}

/// Reads a column that holds JSON text.
pub(crate) fn json_col<T: serde::de::DeserializeOwned>(row: &AnyRow, col: &str) -> Result<T, StoreError> {
    let text: String = row.try_get(col)?;
    Ok(serde_json::from_str(&text)?)
}

/// Reads a non-negative integer column into a u32.
pub(crate) fn u32_col(row: &AnyRow, col: &str) -> Result<u32, StoreError> {
    let v: i64 = row.try_get(col)?;
    u32::try_from(v).map_err(|_| StoreError::Corrupt(format!("{col} = {v} is out of range")))
}

/// Runs a command again when the database says it lost a race (deadlock, serialization,
/// busy), up to a few times.
macro_rules! retrying {
    ($e:expr) => {{
        let mut attempt = 0u32;
        loop {
            match $e {
                Err(err) if err.is_retryable() && attempt < 5 => {
                    attempt += 1;
                    tracing::debug!(attempt, error = %err, "retrying transaction");
                    tokio::time::sleep(std::time::Duration::from_millis(u64::from(attempt) * 5)).await;
                }
                other => break other,
            }
        }
    }};
}
pub(crate) use retrying;
