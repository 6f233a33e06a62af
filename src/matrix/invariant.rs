//! What the database says after an arm: every acknowledged `EMAIL_SENT` applied exactly once,
//! and how many rows the service really wrote (Postgres's own counters), to check the
//! service's declared `x-db-writes` against.

use std::time::{Duration, Instant};

use loadgen::Recording;
use sqlx::{ConnectOptions, Connection, PgConnection};

use crate::postgres::PgServer;
use crate::report::Invariants;

async fn connect(server: &PgServer, db: &str) -> anyhow::Result<PgConnection> {
    Ok(server
        .connect_options(db)
        .options([("statement_timeout", "0")])
        .connect()
        .await?)
}

/// Every acknowledged `EMAIL_SENT` has exactly one message row after the drain.
pub(crate) async fn check_invariant(
    server: &PgServer,
    db: &str,
    recording: &Recording,
    undrained: u64,
) -> anyhow::Result<Invariants> {
    let acked: Vec<String> = recording.acked.iter().cloned().collect();
    let mut conn = connect(server, db).await?;
    let counts: Vec<(String, i64)> = sqlx::query_as(
        "SELECT provider_event_id, count(*) FROM messages WHERE provider_event_id = ANY($1) GROUP BY 1",
    )
    .bind(&acked)
    .fetch_all(&mut conn)
    .await?;
    conn.close().await?;
    let applied = counts.len() as u64;
    let duplicates = counts.iter().filter(|(_, n)| *n > 1).count() as u64;
    let lost = acked.len() as u64 - applied;
    Ok(Invariants {
        acked: acked.len() as u64,
        applied,
        duplicates,
        lost,
        undrained_jobs: undrained,
        holds: lost == 0 && duplicates == 0,
    })
}

/// Rows inserted, updated and deleted in `db`'s tables so far, as Postgres counts them
/// (`pg_stat_user_tables`; rows of rolled-back transactions included, as the service's tally
/// counts them too).
pub(crate) async fn rows_written(server: &PgServer, db: &str) -> anyhow::Result<u64> {
    let mut conn = connect(server, db).await?;
    let n: i64 = sqlx::query_scalar(
        "SELECT coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0)::int8 FROM pg_stat_user_tables",
    )
    .fetch_one(&mut conn)
    .await?;
    conn.close().await?;
    Ok(n.max(0) as u64)
}

/// Waits until no other session is connected to `db` (the service's backends have exited,
/// which is when Postgres flushes their counters), for at most `limit`.
pub(crate) async fn wait_for_sessions_to_end(
    server: &PgServer,
    db: &str,
    limit: Duration,
) -> anyhow::Result<()> {
    let mut conn = connect(server, db).await?;
    let started = Instant::now();
    loop {
        let others: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        .fetch_one(&mut conn)
        .await?;
        if others == 0 || started.elapsed() > limit {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    conn.close().await?;
    Ok(())
}
