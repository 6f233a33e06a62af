//! One tick per cron at a time: a lease row per cron (`cron_leases`), taken for at most the
//! tick's longest possible run, so overlapping calls (a slow tick, a retried trigger) do not
//! multiply the background work — and no connection is held while the tick runs.

use std::time::Duration;

use sqlx::PgConnection;

/// A held tick lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TickLease {
    holder: i64,
}

/// Takes the lease of cron `name` for `ttl` unless another tick holds an unexpired one.
/// Returns the lease and the rows written (1 when taken).
pub async fn acquire(
    conn: &mut PgConnection,
    name: &str,
    ttl: Duration,
) -> Result<Option<TickLease>, sqlx::Error> {
    let holder = rand::random::<i64>();
    let taken: Option<i64> = sqlx::query_scalar(
        "INSERT INTO cron_leases (name, holder, until) VALUES ($1, $2, now() + make_interval(secs => $3))
         ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, until = EXCLUDED.until
         WHERE cron_leases.until < now()
         RETURNING holder",
    )
    .bind(name)
    .bind(holder)
    .bind(ttl.as_secs_f64())
    .fetch_optional(conn)
    .await?;
    Ok(taken.map(|holder| TickLease { holder }))
}

/// Gives the lease back (if still held); returns the rows written.
pub async fn release(
    conn: &mut PgConnection,
    name: &str,
    lease: TickLease,
) -> Result<u64, sqlx::Error> {
    sqlx::query("UPDATE cron_leases SET until = now() WHERE name = $1 AND holder = $2")
        .bind(name)
        .bind(lease.holder)
        .execute(conn)
        .await
        .map(|r| r.rows_affected())
}
