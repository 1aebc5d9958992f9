//! SQLite's one writer connection, with group commit.
//!
//! SQLite allows one writer at a time, so every command of a node takes turns on one
//! connection. A command's statements run synchronously (microseconds each); what costs is
//! the `COMMIT`, which writes every page the transaction touched to the WAL. Commands that
//! queue behind each other therefore share one transaction:
//!
//! 1. [`Writer::begin`] takes the connection. If no transaction is open it starts one
//!    (`BEGIN IMMEDIATE`, a *group*); then it opens a savepoint for this command alone.
//! 2. The command runs. Dropped or rolled back, only its savepoint is undone.
//! 3. [`WriterTx::commit`] releases the savepoint. When no other command is waiting for the
//!    connection (or the group is full), it commits the group at once; otherwise it hands
//!    the connection on with the transaction still open, and the next command joins the
//!    group. Either way the command **answers only after its group's `COMMIT` succeeded**,
//!    so nothing is acknowledged that a crash could lose. Should the command meant to commit
//!    never come (its request was cancelled while waiting), the waiters commit themselves
//!    after [`GROUP_WAIT`].
//!
//! One failed `COMMIT` fails every command of its group (none of them answered yet). Under
//! no load a group holds one command, so a lone request pays exactly one commit; under load,
//! the commit's cost is shared by up to [`GROUP_MAX`] commands.

use crate::error::StoreError;
use crate::sql::{query, run_sqlite};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The most commands one group commit carries.
pub const GROUP_MAX: usize = 32;
/// How long a command whose group is open waits before committing the group itself.
pub const GROUP_WAIT: Duration = Duration::from_millis(5);
/// How many failed groups are remembered for late waiters.
const FAILURES_KEPT: usize = 256;

/// The writer connection and its group-commit state.
pub(crate) struct Writer {
    state: Arc<tokio::sync::Mutex<State>>,
    /// Commands waiting for the connection: when none, a finishing command commits.
    waiting: AtomicUsize,
    /// Finished groups: the newest group id done and the recent results.
    done: tokio::sync::watch::Sender<Finished>,
}

struct State {
    conn: rusqlite::Connection,
    /// The group whose transaction is open, if one is.
    open: Option<u64>,
    /// Commands released into the open group so far.
    members: usize,
    next_group: u64,
}

#[derive(Default)]
struct Finished {
    /// Every group up to this one has finished.
    upto: u64,
    /// Groups whose COMMIT failed, with the error, newest last.
    failures: VecDeque<(u64, String)>,
}

impl Finished {
    fn result(&self, group: u64) -> Option<Result<(), StoreError>> {
        if group > self.upto {
            return None;
        }
        let failure = self.failures.iter().find(|(g, _)| *g == group).map(|(_, e)| e.clone());
        Some(match failure {
            None => Ok(()),
            Some(message) => Err(StoreError::Commit(message)),
        })
    }
}

impl Writer {
    pub(crate) fn new(conn: rusqlite::Connection) -> Writer {
        Writer {
            state: Arc::new(tokio::sync::Mutex::new(State { conn, open: None, members: 0, next_group: 1 })),
            waiting: AtomicUsize::new(0),
            done: tokio::sync::watch::channel(Finished::default()).0,
        }
    }

    /// Takes the connection and opens this command's savepoint (and the group's
    /// transaction, if none is open).
    pub(crate) async fn begin(self: &Arc<Self>) -> Result<WriterTx, StoreError> {
        let queued = Queued::new(&self.waiting);
        let mut state = self.state.clone().lock_owned().await;
        drop(queued);
        if state.open.is_none() {
            run_sqlite(&state.conn, &query("BEGIN IMMEDIATE"))?;
            let group = state.next_group;
            state.next_group += 1;
            state.open = Some(group);
            state.members = 0;
        }
        run_sqlite(&state.conn, &query("SAVEPOINT command"))?;
        Ok(WriterTx { state: Some(state), writer: self.clone() })
    }

    /// Commits the open group (the caller holds the connection) and tells its members.
    fn commit_group(&self, state: &mut State) -> Result<(), StoreError> {
        let Some(group) = state.open.take() else { return Ok(()) };
        let result = run_sqlite(&state.conn, &query("COMMIT"));
        if result.is_err() {
            let _ = state.conn.execute_batch("ROLLBACK");
        }
        let message = result.as_ref().err().map(|e| e.to_string());
        self.done.send_modify(|f| {
            f.upto = group;
            if let Some(message) = message {
                f.failures.push_back((group, message));
                while f.failures.len() > FAILURES_KEPT {
                    f.failures.pop_front();
                }
            }
        });
        result.map(|_| ())
    }

    /// Waits until `group` has committed, committing it here if nobody else does.
    async fn wait_for(&self, group: u64) -> Result<(), StoreError> {
        let mut rx = self.done.subscribe();
        loop {
            if let Some(result) = rx.borrow_and_update().result(group) {
                return result;
            }
            if tokio::time::timeout(GROUP_WAIT, rx.changed()).await.is_err() {
                let mut state = self.state.lock().await;
                if state.open == Some(group) {
                    return self.commit_group(&mut state);
                }
            }
        }
    }
}

/// Counts a command as waiting for the connection while it exists, so that a command whose
/// request is cancelled while it waits (its future dropped) stops counting.
struct Queued<'a>(&'a AtomicUsize);

impl<'a> Queued<'a> {
    fn new(waiting: &'a AtomicUsize) -> Queued<'a> {
        waiting.fetch_add(1, Ordering::SeqCst);
        Queued(waiting)
    }
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One command's turn on the writer, inside its savepoint.
pub(crate) struct WriterTx {
    state: Option<tokio::sync::OwnedMutexGuard<State>>,
    writer: Arc<Writer>,
}

impl WriterTx {
    /// The connection, for the command's statements.
    pub(crate) fn conn(&self) -> Result<&rusqlite::Connection, StoreError> {
        self.state
            .as_ref()
            .map(|s| &s.conn)
            .ok_or_else(|| StoreError::Corrupt("transaction already ended".into()))
    }

    /// Keeps the command's changes and answers once they are committed.
    pub(crate) async fn commit(mut self) -> Result<(), StoreError> {
        let Some(mut state) = self.state.take() else { return Ok(()) };
        if let Err(e) = run_sqlite(&state.conn, &query("RELEASE command")) {
            undo(&mut state);
            return Err(e);
        }
        let Some(group) = state.open else { return Err(StoreError::Corrupt("no open group".into())) };
        state.members += 1;
        if self.writer.waiting.load(Ordering::SeqCst) == 0 || state.members >= GROUP_MAX {
            return self.writer.commit_group(&mut state);
        }
        drop(state);
        self.writer.wait_for(group).await
    }
}

impl WriterTx {
    /// Undoes the command's changes. What the command read may still have been uncommitted
    /// work of earlier commands of its group (an idempotency key claimed a moment ago, say),
    /// so when the group goes on it answers only once the group has committed.
    pub(crate) async fn rollback(mut self) -> Result<(), StoreError> {
        let Some(mut state) = self.state.take() else { return Ok(()) };
        undo(&mut state);
        let Some(group) = state.open else { return Ok(()) };
        if self.writer.waiting.load(Ordering::SeqCst) == 0 {
            return self.writer.commit_group(&mut state);
        }
        drop(state);
        self.writer.wait_for(group).await
    }
}

/// Undoes the command's savepoint; with no one else in the group, ends the transaction too.
fn undo(state: &mut State) {
    let _ = state.conn.execute_batch("ROLLBACK TO command; RELEASE command");
    if state.members == 0 && state.open.is_some() {
        let _ = state.conn.execute_batch("ROLLBACK");
        state.open = None;
    }
}

impl Drop for WriterTx {
    fn drop(&mut self) {
        if let Some(mut state) = self.state.take() {
            undo(&mut state);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> (std::path::PathBuf, Arc<Writer>) {
        let dir = std::env::temp_dir().join(format!("usher-writer-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch directory");
        let path = dir.join("w.db");
        let conn = rusqlite::Connection::open(&path).expect("open");
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER NOT NULL);",
        )
        .expect("schema");
        (path, Arc::new(Writer::new(conn)))
    }

    fn committed(path: &std::path::Path) -> Vec<i64> {
        let conn = rusqlite::Connection::open(path).expect("open");
        let mut stmt = conn.prepare("SELECT id FROM t ORDER BY id").expect("prepare");
        let ids = stmt.query_map([], |r| r.get(0)).expect("query").collect::<Result<Vec<i64>, _>>();
        ids.expect("rows")
    }

    /// Many commands at once, every third rolled back (explicitly or by dropping): each
    /// committed one is visible to another connection the moment its commit returns, and
    /// no rolled-back one ever is.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn commits_are_shared_but_each_answer_waits_for_its_own() {
        let (path, writer) = scratch("groups");
        let mut tasks = Vec::new();
        for id in 1..=300i64 {
            let writer = writer.clone();
            let path = path.clone();
            tasks.push(tokio::spawn(async move {
                let tx = writer.begin().await.expect("begin");
                run_sqlite(tx.conn().expect("conn"), &query("INSERT INTO t (id, v) VALUES ($1, 0)").bind(id))
                    .expect("insert");
                match id % 3 {
                    0 => tx.rollback().await.expect("rollback"),
                    1 => drop(tx),
                    _ => {
                        tx.commit().await.expect("commit");
                        assert!(committed(&path).contains(&id), "{id} answered before it was durable");
                    }
                }
            }));
        }
        for t in tasks {
            t.await.expect("task");
        }
        let expected: Vec<i64> = (1..=300).filter(|id| id % 3 == 2).collect();
        // A dropped command may leave its group to the waiters' timer: give it that long.
        tokio::time::sleep(GROUP_WAIT * 4).await;
        assert_eq!(committed(&path), expected);
        let _ = std::fs::remove_dir_all(path.parent().expect("dir"));
    }

    /// A command cancelled while it waits for the connection stops counting as waiting, so
    /// the next command still commits at once instead of leaving its group to the timer.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cancelled_waiter_does_not_hold_groups_open() {
        let (path, writer) = scratch("cancel");
        let holder = writer.begin().await.expect("begin");
        let w2 = writer.clone();
        let waiter = tokio::spawn(async move { w2.begin().await.map(|_| ()) });
        while writer.waiting.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        waiter.abort();
        let _ = waiter.await;
        assert_eq!(writer.waiting.load(Ordering::SeqCst), 0);
        drop(holder);
        let tx = writer.begin().await.expect("begin");
        run_sqlite(tx.conn().expect("conn"), &query("INSERT INTO t (id, v) VALUES (7, 0)")).expect("insert");
        tx.commit().await.expect("commit");
        // Committed by the command itself, not by a waiter's timer.
        assert_eq!(committed(&path), vec![7]);
        let _ = std::fs::remove_dir_all(path.parent().expect("dir"));
    }

    /// A command that read a row an earlier member of its group wrote, and then rolls back,
    /// answers only once that row is committed (the idempotent-replay case).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_rollback_after_reading_the_group_waits_for_its_commit() {
        let (path, writer) = scratch("replay");
        let first = writer.begin().await.expect("begin");
        run_sqlite(first.conn().expect("conn"), &query("INSERT INTO t (id, v) VALUES (1, 1)"))
            .expect("insert");
        // A second command queues for the connection, so the first leaves its group open.
        let w2 = writer.clone();
        let second = tokio::spawn(async move {
            let tx = w2.begin().await.expect("begin");
            let rows =
                run_sqlite(tx.conn().expect("conn"), &query("SELECT v FROM t WHERE id = 1")).expect("read");
            assert_eq!(rows.len(), 1, "sees its group's earlier write");
            tx.rollback().await.expect("rollback");
        });
        while writer.waiting.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        first.commit().await.expect("commit");
        second.await.expect("second");
        assert_eq!(committed(&path), vec![1]);
        let _ = std::fs::remove_dir_all(path.parent().expect("dir"));
    }
}
