//! Connecting, migrating, transactions and the event log: the parts every command shares.

use crate::error::StoreError;
use crate::sql::{query, Param, Row};
use crate::types::Millis;
use crate::writer::{Writer, WriterTx};
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use std::path::PathBuf;
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

/// The store: its connections and the dialect they speak.
#[derive(Debug, Clone)]
pub struct Store {
    pub(crate) pool: Pool,
    pub(crate) backend: Backend,
    /// Workspace time zones, which never change once a workspace exists (there is no call to
    /// change one), so a node may remember them: one query less per command.
    pub(crate) time_zones: Arc<std::sync::RwLock<std::collections::HashMap<i64, chrono_tz::Tz>>>,
    /// Held by every clone of the store; background tasks stop when the last one is gone.
    alive: Arc<()>,
}

/// The connections behind a store.
#[derive(Clone)]
pub(crate) enum Pool {
    /// SQLite has one writer: one connection, taken in turn (writers queue on the mutex, in
    /// the process, never in SQLite's sleeping busy handler), and a few readers beside it
    /// (WAL lets them read while the writer writes).
    /// Commands share commits when they queue (group commit, `writer.rs`).
    Sqlite { writer: Arc<Writer>, readers: Arc<Readers> },
    /// PostgreSQL: a pool of connections, each transaction on one.
    Postgres(PgPool),
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Pool::Sqlite { readers, .. } => write!(f, "Pool::Sqlite({})", readers.path.display()),
            Pool::Postgres(_) => write!(f, "Pool::Postgres"),
        }
    }
}

/// SQLite's read connections, opened on demand and kept for reuse.
pub(crate) struct Readers {
    path: PathBuf,
    idle: std::sync::Mutex<Vec<rusqlite::Connection>>,
    permits: Arc<tokio::sync::Semaphore>,
}

/// How many SQLite read connections may be open at once.
const SQLITE_READERS: usize = 4;

/// Opens a SQLite connection with Usher's settings.
fn open_sqlite(path: &std::path::Path, writer: bool) -> Result<rusqlite::Connection, StoreError> {
    use rusqlite::OpenFlags;
    let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    if writer {
        flags |= OpenFlags::SQLITE_OPEN_CREATE;
    }
    let conn = rusqlite::Connection::open_with_flags(path, flags)?;
    conn.set_prepared_statement_cache_capacity(256);
    conn.busy_timeout(Duration::from_secs(10))?;
    // WAL: readers never block the writer nor it them. synchronous = NORMAL: a commit is
    // durable against a process crash at once and against power loss at the next checkpoint
    // (README, "Durability"). temp_store = MEMORY keeps each command's savepoint journal
    // (group commit, writer.rs) in memory instead of a temporary file.
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; \
         PRAGMA mmap_size = 268435456; PRAGMA cache_size = -16000; PRAGMA temp_store = MEMORY;",
    )?;
    if !writer {
        // A reader that was handed a write by mistake fails loudly instead of racing the writer.
        conn.execute_batch("PRAGMA query_only = 1;")?;
    }
    Ok(conn)
}

/// How often the checkpointer copies the WAL into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(200);

/// Starts the thread that checkpoints the WAL in the background (`PASSIVE`: it never takes
/// the write lock, so the writer never waits for it). It ends when the store is gone.
fn spawn_checkpointer(path: &std::path::Path, writer: std::sync::Weak<Writer>) -> Result<(), StoreError> {
    let conn = open_sqlite(path, true)?;
    std::thread::Builder::new()
        .name("usher-checkpoint".into())
        .spawn(move || {
            while writer.strong_count() > 0 {
                std::thread::sleep(CHECKPOINT_EVERY);
                if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                    tracing::warn!(error = %e, "background checkpoint failed; the writer's own will run");
                }
            }
        })
        .map_err(|e| StoreError::Corrupt(format!("cannot start the checkpoint thread: {e}")))?;
    Ok(())
}

/// A read connection, returned to the pool when dropped.
pub(crate) struct Reader {
    conn: ReaderConn,
}

/// The connection inside a [`Reader`]; `&mut *reader` is an executor.
pub(crate) enum ReaderConn {
    Sqlite {
        conn: Option<rusqlite::Connection>,
        readers: Arc<Readers>,
        _permit: tokio::sync::OwnedSemaphorePermit,
    },
    Postgres(sqlx::pool::PoolConnection<sqlx::Postgres>),
}

impl Drop for ReaderConn {
    fn drop(&mut self) {
        if let ReaderConn::Sqlite { conn, readers, .. } = self {
            if let (Some(c), Ok(mut idle)) = (conn.take(), readers.idle.lock()) {
                idle.push(c);
            }
        }
    }
}

impl std::ops::Deref for Reader {
    type Target = ReaderConn;
    fn deref(&self) -> &ReaderConn {
        &self.conn
    }
}

impl std::ops::DerefMut for Reader {
    fn deref_mut(&mut self) -> &mut ReaderConn {
        &mut self.conn
    }
}

impl Pool {
    /// A read connection.
    pub(crate) async fn acquire(&self) -> Result<Reader, StoreError> {
        Ok(Reader {
            conn: match self {
                Pool::Sqlite { readers, .. } => {
                    let permit = readers
                        .permits
                        .clone()
                        .acquire_owned()
                        .await
                        .map_err(|_| StoreError::Corrupt("the store is shut down".into()))?;
                    let idle = readers.idle.lock().ok().and_then(|mut v| v.pop());
                    let conn = match idle {
                        Some(c) => c,
                        None => open_sqlite(&readers.path, false)?,
                    };
                    ReaderConn::Sqlite { conn: Some(conn), readers: readers.clone(), _permit: permit }
                }
                Pool::Postgres(pool) => ReaderConn::Postgres(pool.acquire().await?),
            },
        })
    }
}

/// A write transaction in progress; on SQLite it holds the one writer connection.
/// Dereferences to its connection, so `&mut *tx` is an executor. Dropped without
/// [`Tx::commit`], it rolls back.
pub(crate) struct Tx {
    conn: TxConn,
}

/// The connection inside a [`Tx`].
pub(crate) enum TxConn {
    Sqlite(WriterTx),
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
    /// Committed (PostgreSQL's transaction was consumed).
    Done,
}

impl Tx {
    /// Commits.
    pub(crate) async fn commit(mut self) -> Result<(), StoreError> {
        match std::mem::replace(&mut self.conn, TxConn::Done) {
            TxConn::Sqlite(tx) => tx.commit().await,
            TxConn::Postgres(tx) => Ok(tx.commit().await?),
            TxConn::Done => Ok(()),
        }
    }

    /// Rolls back (dropping the transaction does the same, but answers at once: call this
    /// when the caller goes on to answer with what the transaction read).
    pub(crate) async fn rollback(self) -> Result<(), StoreError> {
        match self.conn {
            TxConn::Postgres(tx) => Ok(tx.rollback().await?),
            TxConn::Sqlite(tx) => tx.rollback().await,
            TxConn::Done => Ok(()),
        }
    }

    /// Runs several statements of SQL text with no parameters (migrations).
    pub(crate) async fn batch(&mut self, sql: &str) -> Result<(), StoreError> {
        match &mut self.conn {
            TxConn::Sqlite(tx) => Ok(tx.conn()?.execute_batch(sql)?),
            TxConn::Postgres(tx) => {
                // A plain string goes by the simple protocol, which takes several statements.
                sqlx::Executor::execute(&mut **tx, sql).await?;
                Ok(())
            }
            TxConn::Done => Err(StoreError::Corrupt("transaction already committed".into())),
        }
    }
}

impl std::ops::Deref for Tx {
    type Target = TxConn;
    fn deref(&self) -> &TxConn {
        &self.conn
    }
}

impl std::ops::DerefMut for Tx {
    fn deref_mut(&mut self) -> &mut TxConn {
        &mut self.conn
    }
}

/// An event to append when the transaction commits.
#[derive(Debug, Clone)]
pub(crate) struct PendingEvent {
    pub kind: &'static str,
    pub conversation: Option<i64>,
    pub agent: Option<i64>,
    pub team: Option<i64>,
    /// The decision this event reports; its explanation and trace are read from there.
    pub decision: Option<i64>,
    pub data: serde_json::Value,
}

impl PendingEvent {
    pub fn new(kind: &'static str) -> PendingEvent {
        PendingEvent {
            kind,
            conversation: None,
            agent: None,
            team: None,
            decision: None,
            data: serde_json::Value::Null,
        }
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
    pub fn decision(mut self, id: i64) -> Self {
        self.decision = Some(id);
        self
    }
    pub fn data(mut self, data: serde_json::Value) -> Self {
        self.data = data;
        self
    }
}

/// The migrations of each backend, in order: (version, name, SQL).
const SQLITE_MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "init", include_str!("../migrations/sqlite/0001_init.sql")),
    (2, "contact_attributes", include_str!("../migrations/sqlite/0002_contact_attributes.sql")),
    (3, "idempotency_fingerprint", include_str!("../migrations/sqlite/0003_idempotency_fingerprint.sql")),
    (4, "event_decision", include_str!("../migrations/sqlite/0004_event_decision.sql")),
    (5, "named_agents", include_str!("../migrations/sqlite/0005_named_agents.sql")),
    (6, "pending_events", include_str!("../migrations/sqlite/0006_pending_events.sql")),
    (7, "language_confidence", include_str!("../migrations/sqlite/0007_language_confidence.sql")),
    (8, "workflows", include_str!("../migrations/sqlite/0008_workflows.sql")),
    (9, "messages", include_str!("../migrations/sqlite/0009_messages.sql")),
    (10, "runs", include_str!("../migrations/sqlite/0010_runs.sql")),
    (11, "webhooks", include_str!("../migrations/sqlite/0011_webhooks.sql")),
    (12, "channels", include_str!("../migrations/sqlite/0012_channels.sql")),
    (13, "console", include_str!("../migrations/sqlite/0013_console.sql")),
];
const POSTGRES_MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "init", include_str!("../migrations/postgres/0001_init.sql")),
    (2, "contact_attributes", include_str!("../migrations/postgres/0002_contact_attributes.sql")),
    (3, "idempotency_fingerprint", include_str!("../migrations/postgres/0003_idempotency_fingerprint.sql")),
    (4, "event_decision", include_str!("../migrations/postgres/0004_event_decision.sql")),
    (5, "named_agents", include_str!("../migrations/postgres/0005_named_agents.sql")),
    (6, "pending_events", include_str!("../migrations/postgres/0006_pending_events.sql")),
    (7, "language_confidence", include_str!("../migrations/postgres/0007_language_confidence.sql")),
    (8, "workflows", include_str!("../migrations/postgres/0008_workflows.sql")),
    (9, "messages", include_str!("../migrations/postgres/0009_messages.sql")),
    (10, "runs", include_str!("../migrations/postgres/0010_runs.sql")),
    (11, "webhooks", include_str!("../migrations/postgres/0011_webhooks.sql")),
    (12, "channels", include_str!("../migrations/postgres/0012_channels.sql")),
    (13, "console", include_str!("../migrations/postgres/0013_console.sql")),
];

/// The file behind a `sqlite:` URL (`sqlite://path`, `sqlite:path`, options after `?` ignored).
fn sqlite_path(url: &str) -> Result<PathBuf, StoreError> {
    let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")).unwrap_or(url);
    let path = rest.split('?').next().unwrap_or("");
    if path.is_empty() || path.contains(":memory:") {
        return Err(StoreError::invalid(
            "bad_database_url",
            "a SQLite URL must name a file (an in-memory database cannot be shared by readers)",
        ));
    }
    Ok(PathBuf::from(path))
}

impl Store {
    /// Connects to `url` (`sqlite://path/to/usher.db` or `postgres://…`), creating a SQLite
    /// file if needed, and runs the migrations.
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        let (pool, backend) = if url.starts_with("sqlite:") {
            let path = sqlite_path(url)?;
            let writer = open_sqlite(&path, true)?;
            let readers = Readers {
                path,
                idle: std::sync::Mutex::new(Vec::new()),
                permits: Arc::new(tokio::sync::Semaphore::new(SQLITE_READERS)),
            };
            // Checkpoints (copying the WAL back into the database file, with an fsync) run on a
            // thread of their own, so no command waits for one inside its COMMIT; the writer's
            // own automatic checkpoint stays as a backstop for a WAL that grows regardless.
            writer.execute_batch("PRAGMA wal_autocheckpoint = 10000;")?;
            let writer = Arc::new(Writer::new(writer));
            spawn_checkpointer(&readers.path, Arc::downgrade(&writer))?;
            let pool = Pool::Sqlite { writer, readers: Arc::new(readers) };
            (pool, Backend::Sqlite)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            // Statements name their id lists inline (`IN (3, 7)`, portable to SQLite), so a node
            // sees a few thousand distinct statements: cache their prepared forms generously.
            let options = url.parse::<sqlx::postgres::PgConnectOptions>()?.statement_cache_capacity(4096);
            let pool = PgPoolOptions::new()
                .max_connections(16)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(options)
                .await?;
            (Pool::Postgres(pool), Backend::Postgres)
        } else {
            return Err(StoreError::invalid(
                "bad_database_url",
                "the database URL must start with sqlite: or postgres:",
            ));
        };
        let store = Store { pool, backend, time_zones: Arc::default(), alive: Arc::new(()) };
        store.migrate().await?;
        store.spawn_sequencer();
        Ok(store)
    }

    /// Runs the migrations that have not run yet, all in one transaction (on PostgreSQL
    /// under an advisory lock, so nodes starting together migrate once).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let (migrations, legacy) = match self.backend {
            Backend::Sqlite => {
                (SQLITE_MIGRATIONS, "SELECT name FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'")
            }
            Backend::Postgres => (
                POSTGRES_MIGRATIONS,
                "SELECT CAST(to_regclass('_sqlx_migrations') AS TEXT) AS name WHERE to_regclass('_sqlx_migrations') IS NOT NULL",
            ),
        };
        let mut tx = self.begin().await?;
        if self.backend == Backend::Postgres {
            query("SELECT CAST(pg_advisory_xact_lock(7284) AS TEXT)").fetch_one(&mut *tx).await?;
        }
        tx.batch(
            "CREATE TABLE IF NOT EXISTS usher_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL, \
             applied_at BIGINT NOT NULL)",
        )
        .await?;
        // Databases made before Usher ran its own migrations carry sqlx's table: take its record.
        if query(legacy).fetch_optional(&mut *tx).await?.is_some() {
            query(
                "INSERT INTO usher_migrations (version, name, applied_at) SELECT version, description, 0 \
                 FROM _sqlx_migrations WHERE success ON CONFLICT (version) DO NOTHING",
            )
            .execute(&mut *tx)
            .await?;
        }
        let applied: Vec<i64> = query("SELECT version FROM usher_migrations ORDER BY version")
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| r.try_get::<i64, _>(0))
            .collect::<Result<_, _>>()?;
        for &(version, name, sql) in migrations {
            if applied.contains(&version) {
                continue;
            }
            tracing::info!(version, name, "running migration");
            tx.batch(sql).await.map_err(|e| StoreError::Migrate(format!("{version} {name}: {e}")))?;
            query("INSERT INTO usher_migrations (version, name, applied_at) VALUES ($1, $2, 0)")
                .bind(version)
                .bind(name)
                .execute(&mut *tx)
                .await?;
        }
        if let Some(&newest) = applied.iter().max() {
            if migrations.iter().all(|&(v, _, _)| v < newest) {
                return Err(StoreError::Migrate(format!(
                    "the database is at version {newest}, newer than this build of Usher knows"
                )));
            }
        }
        tx.commit().await
    }

    /// Which backend this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Whether the database answers and is migrated (for `/readyz`).
    pub async fn ready(&self) -> bool {
        query("SELECT COUNT(*) FROM workspaces").fetch_one(&self.pool).await.is_ok()
    }

    /// Closes the connections (PostgreSQL); SQLite's close when the last handle goes.
    pub async fn shutdown(&self) {
        if let Pool::Postgres(pool) = &self.pool {
            pool.close().await;
        }
    }

    /// Starts a write transaction. On SQLite it takes the one writer connection and the
    /// write lock at once (`BEGIN IMMEDIATE`), so no transaction ever reads and then fights
    /// over the upgrade.
    pub(crate) async fn begin(&self) -> Result<Tx, StoreError> {
        Ok(match &self.pool {
            Pool::Sqlite { writer, .. } => Tx { conn: TxConn::Sqlite(writer.begin().await?) },
            Pool::Postgres(pool) => Tx { conn: TxConn::Postgres(pool.begin().await?) },
        })
    }

    /// The row of `table` with this id in this workspace, or `NotFound` naming `what` (e.g.
    /// `webhook 3`). `table` is one of the store's own table names, never input.
    pub(crate) async fn row_in(&self, table: &str, what: &str, ws: i64, id: i64) -> Result<Row, StoreError> {
        query(&format!("SELECT * FROM {table} WHERE id = $1 AND workspace_id = $2"))
            .bind(id)
            .bind(ws)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::not_found(format!("{what} {id}")))
    }

    /// How many rows of `table` the workspace has (for the per-workspace limits; `table` is one
    /// of the store's own table names).
    pub(crate) async fn count_in(&self, table: &str, ws: i64) -> Result<i64, StoreError> {
        query(&format!("SELECT COUNT(*) FROM {table} WHERE workspace_id = $1"))
            .bind(ws)
            .fetch_one(&self.pool)
            .await?
            .try_get(0)
    }

    /// `FOR UPDATE` where the backend has it.
    pub(crate) fn for_update(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite => "",
            Backend::Postgres => " FOR UPDATE",
        }
    }
}

/// Appends a command's events to the workspace's log. Call it last in the transaction.
///
/// On SQLite (one writer) the command numbers them itself, gap-free, in the same
/// transaction. On PostgreSQL it leaves them in `pending_events` and [`Store::sequence_events`]
/// numbers them after the commit: numbering here would hold the workspace row's lock through
/// the COMMIT and serialize every command of the workspace.
pub(crate) async fn append_events(
    tx: &mut Tx,
    workspace: i64,
    now: Millis,
    events: &[PendingEvent],
) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    let rows: Vec<Vec<Param>> = events
        .iter()
        .map(|e| {
            vec![
                workspace.into(),
                e.kind.into(),
                now.into(),
                e.conversation.into(),
                e.agent.into(),
                e.team.into(),
                e.decision.into(),
                e.data.to_string().into(),
            ]
        })
        .collect();
    if matches!(**tx, TxConn::Postgres(_)) {
        return insert_rows(tx, "pending_events", PENDING_COLUMNS, rows).await;
    }
    let n = i64::try_from(events.len()).unwrap_or(i64::MAX);
    let last: i64 =
        query("UPDATE workspaces SET event_seq = event_seq + $1 WHERE id = $2 RETURNING event_seq")
            .bind(n)
            .bind(workspace)
            .fetch_one(&mut **tx)
            .await?
            .try_get(0)?;
    insert_rows(tx, "events", EVENT_COLUMNS, numbered(rows, last - n + 1)).await
}

/// The columns of a pending event, in the order [`append_events`] builds its rows.
const PENDING_COLUMNS: &str = "workspace_id, kind, at, conversation_id, agent_id, team_id, decision_id, data";
/// The columns of a numbered event: the pending ones and the sequence number.
const EVENT_COLUMNS: &str =
    "workspace_id, kind, at, conversation_id, agent_id, team_id, decision_id, data, seq";

/// Appends sequence numbers `first`, `first + 1`, … to rows of [`PENDING_COLUMNS`].
fn numbered(rows: Vec<Vec<Param>>, first: i64) -> Vec<Vec<Param>> {
    rows.into_iter()
        .zip(first..)
        .map(|(mut row, seq)| {
            row.push(seq.into());
            row
        })
        .collect()
}

/// Inserts rows with multi-row `INSERT`s of at most 64 rows: a command pays one round trip
/// for its events.
async fn insert_rows(
    tx: &mut Tx,
    table: &str,
    columns: &str,
    rows: Vec<Vec<Param>>,
) -> Result<(), StoreError> {
    for chunk in rows.chunks(64) {
        let mut sql = format!("INSERT INTO {table} ({columns}) VALUES ");
        let mut q = Vec::new();
        for (i, row) in chunk.iter().enumerate() {
            sql.push_str(if i == 0 { "(" } else { ", (" });
            for (k, p) in row.iter().enumerate() {
                q.push(p.clone());
                sql.push_str(&format!("{}${}", if k == 0 { "" } else { ", " }, q.len()));
            }
            sql.push(')');
        }
        let mut statement = query(&sql);
        for p in q {
            statement = statement.bind(p);
        }
        statement.execute(&mut **tx).await?;
    }
    Ok(())
}

/// How many pending events one sequencing pass numbers.
const SEQUENCE_BATCH: i64 = 5_000;
/// How often a PostgreSQL node's sequencer looks for pending events.
const SEQUENCE_EVERY: Duration = Duration::from_millis(20);

impl Store {
    /// Numbers the workspace's pending events (PostgreSQL; nothing to do on SQLite): under
    /// the workspace row's lock, moves the committed pending events, oldest first, into the
    /// log with the next gap-free sequence numbers. Any node may run it at any time; the lock
    /// makes passes take turns. Readers of the log call it first, so a command's events are
    /// readable as soon as it has answered.
    pub(crate) async fn sequence_events(&self, ws: i64) -> Result<(), StoreError> {
        if self.backend != Backend::Postgres {
            return Ok(());
        }
        loop {
            let pending = query("SELECT id FROM pending_events WHERE workspace_id = $1 LIMIT 1")
                .bind(ws)
                .fetch_optional(&self.pool)
                .await?;
            if pending.is_none() {
                return Ok(());
            }
            let mut tx = self.begin().await?;
            let base: i64 = query("SELECT event_seq FROM workspaces WHERE id = $1 FOR UPDATE")
                .bind(ws)
                .fetch_one(&mut *tx)
                .await?
                .try_get(0)?;
            // Taken after the lock, so this statement sees every pass before it committed.
            let sql = format!(
                "DELETE FROM pending_events WHERE id IN (SELECT id FROM pending_events WHERE workspace_id = $1 \
                 ORDER BY id LIMIT {SEQUENCE_BATCH}) RETURNING id, {PENDING_COLUMNS}"
            );
            let mut moved = query(&sql).bind(ws).fetch_all(&mut *tx).await?;
            moved.sort_by_key(|r| r.try_get::<i64, _>("id").unwrap_or(i64::MAX));
            let n = i64::try_from(moved.len()).unwrap_or(i64::MAX);
            let mut rows = Vec::with_capacity(moved.len());
            for r in &moved {
                rows.push(vec![
                    r.try_get::<i64, _>("workspace_id")?.into(),
                    r.try_get::<String, _>("kind")?.into(),
                    r.try_get::<i64, _>("at")?.into(),
                    r.try_get::<Option<i64>, _>("conversation_id")?.into(),
                    r.try_get::<Option<i64>, _>("agent_id")?.into(),
                    r.try_get::<Option<i64>, _>("team_id")?.into(),
                    r.try_get::<Option<i64>, _>("decision_id")?.into(),
                    r.try_get::<String, _>("data")?.into(),
                ]);
            }
            insert_rows(&mut tx, "events", EVENT_COLUMNS, numbered(rows, base + 1)).await?;
            query("UPDATE workspaces SET event_seq = $1 WHERE id = $2")
                .bind(base + n)
                .bind(ws)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            if n < SEQUENCE_BATCH {
                return Ok(());
            }
        }
    }

    /// Starts this node's sequencer (PostgreSQL): every [`SEQUENCE_EVERY`] it numbers the
    /// pending events of every workspace. It stops when the store is shut down or dropped.
    fn spawn_sequencer(&self) {
        let Pool::Postgres(pool) = &self.pool else { return };
        let pool = pool.clone();
        let alive = Arc::downgrade(&self.alive);
        let store = Store {
            pool: Pool::Postgres(pool.clone()),
            backend: self.backend,
            time_zones: Arc::default(),
            alive: Arc::new(()),
        };
        tokio::spawn(async move {
            while alive.strong_count() > 0 && !pool.is_closed() {
                tokio::time::sleep(SEQUENCE_EVERY).await;
                let workspaces = match query("SELECT DISTINCT workspace_id FROM pending_events")
                    .fetch_all(&store.pool)
                    .await
                {
                    Ok(rows) => rows,
                    Err(e) => {
                        tracing::warn!(error = %e, "sequencer: cannot read pending events");
                        continue;
                    }
                };
                for ws in workspaces.iter().filter_map(|r| r.try_get::<i64, _>(0).ok()) {
                    if let Err(e) = store.sequence_events(ws).await {
                        tracing::warn!(error = %e, workspace = ws, "sequencer: pass failed; the next one retries");
                    }
                }
            }
        });
    }
}

/// Reads a column that holds JSON text.
pub(crate) fn json_col<T: serde::de::DeserializeOwned>(row: &Row, col: &str) -> Result<T, StoreError> {
    let text: String = row.try_get(col)?;
    Ok(serde_json::from_str(&text)?)
}

/// Reads a non-negative integer column into a u32.
pub(crate) fn u32_col(row: &Row, col: &str) -> Result<u32, StoreError> {
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
