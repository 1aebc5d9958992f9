//! The store's errors, mapped to meaning at the seam: callers see "not found", "conflict",
//! "invalid", never a driver error they would have to interpret.

use thiserror::Error;

/// What went wrong in a store call. Every variant except `Database` means nothing changed
/// because the request itself cannot be carried out.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The thing does not exist in this workspace.
    #[error("{what} not found")]
    NotFound {
        /// What was looked for, e.g. "conversation 12".
        what: String,
    },
    /// The request clashes with the current state (e.g. someone else holds the conversation).
    #[error("{message}")]
    Conflict {
        /// A stable machine code, e.g. `already_assigned`.
        code: &'static str,
        /// A sentence for humans.
        message: String,
    },
    /// The request is malformed or names something impossible.
    #[error("{message}")]
    Invalid {
        /// A stable machine code, e.g. `unknown_time_zone`.
        code: &'static str,
        /// A sentence for humans.
        message: String,
    },
    /// PostgreSQL failed or is unreachable.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// SQLite failed.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// SQLite could not commit the group of commands this one belonged to; nothing of it
    /// was kept.
    #[error("commit failed: {0}")]
    Commit(String),
    /// A migration failed.
    #[error("migration failed: {0}")]
    Migrate(String),
    /// A document (a workflow, a calendar) has problems, each at its place.
    #[error("{message}")]
    Document {
        /// A stable machine code, e.g. `invalid_workflow`.
        code: &'static str,
        /// A sentence for humans.
        message: String,
        /// Every problem, with its place in the document.
        problems: Vec<usher_workflow::Problem>,
    },
    /// Another transaction changed what this one read before locking it; run it again.
    #[error("concurrent change; retry")]
    Moved,
    /// A stored value could not be read back (a bug or a hand-edited row).
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

impl StoreError {
    pub(crate) fn not_found(what: impl Into<String>) -> StoreError {
        StoreError::NotFound { what: what.into() }
    }

    pub(crate) fn invalid(code: &'static str, message: impl Into<String>) -> StoreError {
        StoreError::Invalid { code, message: message.into() }
    }

    pub(crate) fn conflict(code: &'static str, message: impl Into<String>) -> StoreError {
        StoreError::Conflict { code, message: message.into() }
    }

    /// Whether the transaction should simply be run again (a PostgreSQL deadlock or
    /// serialization failure, SQLite busy).
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::Moved => true,
            StoreError::Database(sqlx::Error::Database(e)) => {
                matches!(e.code().as_deref(), Some("40P01" | "40001"))
            }
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => {
                matches!(e.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
            }
            _ => false,
        }
    }

    /// Whether a unique constraint refused the write.
    pub(crate) fn is_unique_violation(&self) -> bool {
        match self {
            StoreError::Database(sqlx::Error::Database(d)) => d.code().as_deref() == Some("23505"),
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => matches!(
                e.extended_code,
                rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
            ),
            _ => false,
        }
    }

    /// Whether the database is out of reach for now (the answer is 503, not 500): the pool
    /// timed out or closed, the connection broke, the disk is full or the file cannot open.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Database(e) => {
                matches!(e, sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_))
            }
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => matches!(
                e.code,
                rusqlite::ErrorCode::DiskFull
                    | rusqlite::ErrorCode::CannotOpen
                    | rusqlite::ErrorCode::SystemIoFailure
            ),
            _ => false,
        }
    }
}

impl From<serde_json::Error> for StoreError {
    fn from(e: serde_json::Error) -> StoreError {
        StoreError::Corrupt(e.to_string())
    }
}
