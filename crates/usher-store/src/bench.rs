//! A raw measure of the database, for the load generator's baseline: transactions of the
//! same shape as opening a conversation (a lookup, three inserts, two counter updates, the
//! event sequence bump) with no HTTP, no JSON and no routing. The ratio of Usher's throughput
//! to this number is the cost of everything Usher adds.

use crate::db::Store;
use crate::error::StoreError;
use crate::sql::query;
use std::time::Instant;

/// Runs `n` such transactions with `concurrency` tasks on a scratch set of `bench_*` tables
/// at `url` and returns transactions per second.
pub async fn raw_transactions(url: &str, n: usize, concurrency: usize) -> Result<f64, StoreError> {
    let store = Store::connect(url).await?;
    for stmt in [
        "DROP TABLE IF EXISTS bench_rows",
        "DROP TABLE IF EXISTS bench_counters",
        "CREATE TABLE bench_rows (id BIGINT PRIMARY KEY, kind TEXT NOT NULL, body TEXT NOT NULL, at BIGINT NOT NULL)",
        "CREATE TABLE bench_counters (id BIGINT PRIMARY KEY, n BIGINT NOT NULL)",
        "INSERT INTO bench_counters (id, n) VALUES (1, 0), (2, 0), (3, 0)",
    ] {
        query(stmt).execute(&store.pool).await?;
    }
    let started = Instant::now();
    let per = n.div_ceil(concurrency.max(1));
    let mut tasks = Vec::new();
    for t in 0..concurrency.max(1) {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..per {
                let id = i64::try_from(t * per + i).unwrap_or(0) * 3;
                let mut tx = store.begin().await?;
                query("SELECT n FROM bench_counters WHERE id = 1").fetch_one(&mut *tx).await?;
                for k in 0..3 {
                    query("INSERT INTO bench_rows (id, kind, body, at) VALUES ($1, $2, $3, $4)")
                        .bind(id + k)
                        .bind("row")
                        .bind("{\"a\":1,\"b\":[1,2,3]}")
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                }
                query("UPDATE bench_counters SET n = n + 1 WHERE id = 2").execute(&mut *tx).await?;
                query("UPDATE bench_counters SET n = n + 1 WHERE id = 3 RETURNING n")
                    .fetch_one(&mut *tx)
                    .await?;
                tx.commit().await?;
            }
            Ok::<_, StoreError>(())
        }));
    }
    for t in tasks {
        t.await.map_err(|e| StoreError::Corrupt(e.to_string()))??;
    }
    let rate = (per * concurrency.max(1)) as f64 / started.elapsed().as_secs_f64();
    for stmt in ["DROP TABLE bench_rows", "DROP TABLE bench_counters"] {
        query(stmt).execute(&store.pool).await?;
    }
    Ok(rate)
}
