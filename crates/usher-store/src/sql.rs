//! One small way of speaking SQL to both backends: a statement with `$n` placeholders,
//! parameters that carry their type (so a NULL is a typed NULL on PostgreSQL), and rows of
//! plain values read back by column name or index.
//!
//! ## Why not one driver for both
//! SQLite runs in this process. A statement costs a few microseconds of CPU and no waiting,
//! so it runs right where it is issued: [`run_sqlite`] is synchronous, through `rusqlite`, on
//! the thread that holds the connection. Handing every statement to a worker thread and back
//! (what sqlx's SQLite driver does) cost a context switch per statement, which measured 12×
//! slower for the same transactions (docs/benchmarks.md). PostgreSQL is across a socket, so
//! its statements are real asynchronous round trips, through sqlx's native PostgreSQL driver.
//!
//! The routing code is written once against [`Exec`]: `query(sql).bind(x).fetch_one(e)`.
//! On SQLite the future completes without ever waiting, so a whole command runs through
//! without yielding between its statements.

use crate::db::{Pool, ReaderConn, TxConn};
use crate::error::StoreError;
use std::future::Future;
use std::sync::Arc;

/// A parameter with its type.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Param {
    Int(Option<i64>),
    Text(Option<String>),
}

impl From<&Param> for Param {
    fn from(p: &Param) -> Param {
        p.clone()
    }
}
impl From<i64> for Param {
    fn from(v: i64) -> Param {
        Param::Int(Some(v))
    }
}
impl From<&i64> for Param {
    fn from(v: &i64) -> Param {
        Param::Int(Some(*v))
    }
}
impl From<Option<i64>> for Param {
    fn from(v: Option<i64>) -> Param {
        Param::Int(v)
    }
}
impl From<&str> for Param {
    fn from(v: &str) -> Param {
        Param::Text(Some(v.to_string()))
    }
}
impl From<String> for Param {
    fn from(v: String) -> Param {
        Param::Text(Some(v))
    }
}
impl From<&String> for Param {
    fn from(v: &String) -> Param {
        Param::Text(Some(v.clone()))
    }
}
impl From<Option<String>> for Param {
    fn from(v: Option<String>) -> Param {
        Param::Text(v)
    }
}
impl From<&Option<String>> for Param {
    fn from(v: &Option<String>) -> Param {
        Param::Text(v.clone())
    }
}
impl From<Option<&str>> for Param {
    fn from(v: Option<&str>) -> Param {
        Param::Text(v.map(str::to_string))
    }
}

/// A value read back from a row.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Val {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
}

/// A row: column names (shared by all rows of one result) and values.
#[derive(Debug, Clone)]
pub struct Row {
    cols: Arc<[String]>,
    vals: Vec<Val>,
}

/// Something that picks a column: its index or its name.
pub(crate) trait ColIndex: std::fmt::Debug {
    fn index(&self, cols: &[String]) -> Option<usize>;
}
impl ColIndex for usize {
    fn index(&self, cols: &[String]) -> Option<usize> {
        (*self < cols.len()).then_some(*self)
    }
}
impl ColIndex for &str {
    fn index(&self, cols: &[String]) -> Option<usize> {
        cols.iter().position(|c| c == self)
    }
}

/// A Rust value a column can be read into.
pub(crate) trait FromVal: Sized {
    /// What the column should have held, for the error message.
    const WANT: &'static str;
    fn from_val(v: &Val) -> Option<Self>;
}
impl FromVal for i64 {
    const WANT: &'static str = "an integer";
    fn from_val(v: &Val) -> Option<i64> {
        match v {
            Val::Int(i) => Some(*i),
            _ => None,
        }
    }
}
impl FromVal for f64 {
    const WANT: &'static str = "a number";
    fn from_val(v: &Val) -> Option<f64> {
        match v {
            Val::Real(f) => Some(*f),
            Val::Int(i) => Some(*i as f64),
            _ => None,
        }
    }
}
impl FromVal for String {
    const WANT: &'static str = "text";
    fn from_val(v: &Val) -> Option<String> {
        match v {
            Val::Text(s) => Some(s.clone()),
            _ => None,
        }
    }
}
impl<T: FromVal> FromVal for Option<T> {
    const WANT: &'static str = T::WANT;
    fn from_val(v: &Val) -> Option<Option<T>> {
        match v {
            Val::Null => Some(None),
            other => T::from_val(other).map(Some),
        }
    }
}

impl Row {
    /// The value of a column, by index or name.
    pub(crate) fn try_get<T: FromVal, I: ColIndex>(&self, col: I) -> Result<T, StoreError> {
        let i = col.index(&self.cols).ok_or_else(|| StoreError::Corrupt(format!("no column {col:?}")))?;
        T::from_val(&self.vals[i])
            .ok_or_else(|| StoreError::Corrupt(format!("column {} does not hold {}", self.cols[i], T::WANT)))
    }
}

/// The future of a statement, boxed: its type then names no borrowed lifetimes, which keeps
/// the commands' own futures provably `Send` (the reason sqlx boxes its futures too).
pub(crate) type BoxFuture<'a, T> = std::pin::Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// A statement and its parameters.
#[derive(Debug, Clone)]
pub(crate) struct Query {
    sql: String,
    params: Vec<Param>,
}

/// A statement with `$1`, `$2`, … placeholders, in SQL both backends understand.
pub(crate) fn query(sql: &str) -> Query {
    Query { sql: sql.to_string(), params: Vec::new() }
}

impl Query {
    /// Binds the next parameter (`$1` first).
    pub(crate) fn bind(mut self, p: impl Into<Param>) -> Query {
        self.params.push(p.into());
        self
    }

    /// Runs the statement and returns every row.
    pub(crate) fn fetch_all<'a>(self, e: impl Into<Exec<'a>>) -> BoxFuture<'a, Vec<Row>> {
        Box::pin(run(e.into(), self))
    }

    /// Runs the statement and returns its first row, if any.
    pub(crate) fn fetch_optional<'a>(self, e: impl Into<Exec<'a>>) -> BoxFuture<'a, Option<Row>> {
        let e = e.into();
        Box::pin(async move { Ok(run(e, self).await?.into_iter().next()) })
    }

    /// Runs the statement and returns its first row; none is an error (the statement must
    /// always produce one, like `SELECT COUNT(*)` or `INSERT … RETURNING`).
    pub(crate) fn fetch_one<'a>(self, e: impl Into<Exec<'a>>) -> BoxFuture<'a, Row> {
        let e = e.into();
        Box::pin(async move {
            let sql = self.sql.clone();
            run(e, self)
                .await?
                .into_iter()
                .next()
                .ok_or_else(|| StoreError::Corrupt(format!("no row from {sql}")))
        })
    }

    /// Runs the statement for its effect.
    pub(crate) fn execute<'a>(self, e: impl Into<Exec<'a>>) -> BoxFuture<'a, ()> {
        let e = e.into();
        Box::pin(async move { run(e, self).await.map(|_| ()) })
    }

    /// Whether the statement only reads (so may run on a reader connection).
    pub(crate) fn is_read(&self) -> bool {
        let head = self.sql.trim_start();
        head.len() >= 6 && head[..6].eq_ignore_ascii_case("select")
    }
}

/// Where a statement can run: a write transaction, a read connection, or the store's pool
/// (which picks one per statement).
pub(crate) enum Exec<'a> {
    Tx(&'a mut TxConn),
    Reader(&'a mut ReaderConn),
    Pool(&'a Pool),
}

impl<'a> From<&'a mut TxConn> for Exec<'a> {
    fn from(c: &'a mut TxConn) -> Exec<'a> {
        Exec::Tx(c)
    }
}
impl<'a> From<&'a mut ReaderConn> for Exec<'a> {
    fn from(c: &'a mut ReaderConn) -> Exec<'a> {
        Exec::Reader(c)
    }
}
impl<'a> From<&'a Pool> for Exec<'a> {
    fn from(p: &'a Pool) -> Exec<'a> {
        Exec::Pool(p)
    }
}

/// Runs one statement where `e` says and returns its rows (none for a statement without
/// results). On the pool, reads go to a reader and anything else to the writer (SQLite) or
/// any pooled connection (PostgreSQL), committed at once.
async fn run(e: Exec<'_>, q: Query) -> Result<Vec<Row>, StoreError> {
    match e {
        Exec::Tx(TxConn::Sqlite(tx)) => run_sqlite(tx.conn()?, &q),
        Exec::Tx(TxConn::Postgres(tx)) => run_pg(&mut **tx, q).await,
        Exec::Tx(TxConn::Done) => Err(StoreError::Corrupt("transaction already committed".into())),
        Exec::Reader(ReaderConn::Sqlite { conn: Some(c), .. }) => run_sqlite(c, &q),
        Exec::Reader(ReaderConn::Sqlite { conn: None, .. }) => {
            Err(StoreError::Corrupt("reader already returned".into()))
        }
        Exec::Reader(ReaderConn::Postgres(c)) => run_pg(&mut **c, q).await,
        Exec::Pool(Pool::Sqlite { writer, .. }) if !q.is_read() => {
            let tx = writer.begin().await?;
            let rows = run_sqlite(tx.conn()?, &q)?;
            tx.commit().await?;
            Ok(rows)
        }
        Exec::Pool(pool @ Pool::Sqlite { .. }) => match &*pool.acquire().await? {
            ReaderConn::Sqlite { conn: Some(c), .. } => run_sqlite(c, &q),
            _ => Err(StoreError::Corrupt("no SQLite reader".into())),
        },
        Exec::Pool(Pool::Postgres(pool)) => run_pg(pool, q).await,
    }
}

/// Runs a statement on a SQLite connection, synchronously.
pub(crate) fn run_sqlite(conn: &rusqlite::Connection, q: &Query) -> Result<Vec<Row>, StoreError> {
    let mut stmt = conn.prepare_cached(&q.sql)?;
    // SQLite numbers parameters by first appearance; find each `$n` by its name.
    for i in 1..=stmt.parameter_count() {
        let n = stmt
            .parameter_name(i)
            .and_then(|name| name.strip_prefix('$'))
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|n| *n >= 1)
            .ok_or_else(|| StoreError::Corrupt(format!("unnamed parameter {i} in {}", q.sql)))?;
        let p = q
            .params
            .get(n - 1)
            .ok_or_else(|| StoreError::Corrupt(format!("parameter ${n} not bound in {}", q.sql)))?;
        match p {
            Param::Int(v) => stmt.raw_bind_parameter(i, v)?,
            Param::Text(v) => stmt.raw_bind_parameter(i, v)?,
        }
    }
    let width = stmt.column_count();
    if width == 0 {
        stmt.raw_execute()?;
        return Ok(Vec::new());
    }
    let cols: Arc<[String]> = stmt.column_names().into_iter().map(String::from).collect();
    let mut rows = stmt.raw_query();
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let mut vals = Vec::with_capacity(width);
        for i in 0..width {
            use rusqlite::types::ValueRef;
            vals.push(match r.get_ref(i)? {
                ValueRef::Null => Val::Null,
                ValueRef::Integer(v) => Val::Int(v),
                ValueRef::Real(v) => Val::Real(v),
                ValueRef::Text(t) | ValueRef::Blob(t) => Val::Text(String::from_utf8_lossy(t).into_owned()),
            });
        }
        out.push(Row { cols: cols.clone(), vals });
    }
    Ok(out)
}

/// Runs a statement on PostgreSQL.
pub(crate) async fn run_pg<'c, E>(e: E, q: Query) -> Result<Vec<Row>, StoreError>
where
    E: sqlx::PgExecutor<'c>,
{
    use sqlx::{Column, Row as _, TypeInfo, ValueRef};
    let mut pq = sqlx::query::<sqlx::Postgres>(&q.sql);
    for p in q.params.iter() {
        pq = match p {
            Param::Int(v) => pq.bind(*v),
            Param::Text(v) => pq.bind(v.clone()),
        };
    }
    let rows = pq.fetch_all(e).await?;
    let Some(first) = rows.first() else { return Ok(Vec::new()) };
    let cols: Arc<[String]> = first.columns().iter().map(|c| c.name().to_string()).collect();
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        let mut vals = Vec::with_capacity(cols.len());
        for i in 0..cols.len() {
            let raw = r.try_get_raw(i)?;
            if raw.is_null() {
                vals.push(Val::Null);
                continue;
            }
            let ty = raw.type_info().name().to_string();
            vals.push(match ty.as_str() {
                "INT8" => Val::Int(r.try_get::<i64, _>(i)?),
                "INT4" => Val::Int(i64::from(r.try_get::<i32, _>(i)?)),
                "INT2" => Val::Int(i64::from(r.try_get::<i16, _>(i)?)),
                "BOOL" => Val::Int(i64::from(r.try_get::<bool, _>(i)?)),
                "FLOAT8" => Val::Real(r.try_get::<f64, _>(i)?),
                "FLOAT4" => Val::Real(f64::from(r.try_get::<f32, _>(i)?)),
                "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" => Val::Text(r.try_get::<String, _>(i)?),
                "VOID" => Val::Null,
                other => {
                    return Err(StoreError::Corrupt(format!(
                        "column {} has unsupported type {other}",
                        cols[i]
                    )))
                }
            });
        }
        out.push(Row { cols: cols.clone(), vals });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_parameters_are_matched_by_name_not_position() {
        let conn = rusqlite::Connection::open_in_memory().expect("memory database");
        // $2 appears first: SQLite would number it 1.
        let q = query("SELECT $2 AS b, $1 AS a, $2 + $1 AS sum").bind(10).bind(32);
        let rows = run_sqlite(&conn, &q).expect("runs");
        assert_eq!(rows[0].try_get::<i64, _>("b").expect("b"), 32);
        assert_eq!(rows[0].try_get::<i64, _>("a").expect("a"), 10);
        assert_eq!(rows[0].try_get::<i64, _>(2).expect("sum"), 42);
    }

    #[test]
    fn typed_nulls_and_wrong_types_are_errors_not_panics() {
        let conn = rusqlite::Connection::open_in_memory().expect("memory database");
        let q = query("SELECT $1 AS n, $2 AS t").bind(None::<i64>).bind("x");
        let rows = run_sqlite(&conn, &q).expect("runs");
        assert_eq!(rows[0].try_get::<Option<i64>, _>("n").expect("n"), None);
        assert!(rows[0].try_get::<i64, _>("n").is_err());
        assert!(rows[0].try_get::<i64, _>("t").is_err());
        assert!(rows[0].try_get::<String, _>("missing").is_err());
        assert!(rows[0].try_get::<String, _>(9).is_err());
        assert!(run_sqlite(&conn, &query("SELECT $1, $2").bind(1)).is_err());
    }

    #[test]
    fn only_selects_count_as_reads() {
        assert!(query("  select 1").is_read());
        assert!(!query("INSERT INTO t VALUES (1) RETURNING id").is_read());
        assert!(!query("UPDATE t SET a = 1").is_read());
    }
}
