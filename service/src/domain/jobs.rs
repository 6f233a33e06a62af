//! The Postgres job queue behind `INBOXXIA_EMAIL_SENT_ASYNC`.
//!
//! Enqueue is one idempotent insert (the provider event id is the unique dedupe key,
//! `ON CONFLICT DO NOTHING`). Workers claim batches with `FOR UPDATE SKIP LOCKED` and a lease:
//! a job whose worker died is claimed again once its lease runs out. Failures are retried with
//! backoff up to a cap of attempts, then marked failed.

use std::time::Duration;

use serde_json::Value;
use sqlx::PgConnection;

use crate::domain::event::EmailEvent;
use crate::error::AppError;
use crate::tally::Tally;

/// The job kind for a queued `EMAIL_SENT`.
pub const EMAIL_SENT: &str = "email_sent";

/// The job kind for a GHL contact sync that failed inline and is retried from the queue.
pub const GHL_SYNC: &str = "ghl_sync";

/// The dedupe key of `ev`'s GHL contact sync job.
fn ghl_key(ev: &EmailEvent) -> String {
    format!("ghl:{}", ev.dedupe_key())
}

/// Queues the GHL contact syncs of `events`, due after `after`, in one statement (a second
/// one for an event is a no-op). Written in the transaction that applies the events, each row
/// is its sync's outbox: if the worker is cut off (its tick's budget, a crash) before the
/// inline call is settled, the queue makes the call later, so no sync is lost.
pub async fn enqueue_ghl_syncs(
    conn: &mut PgConnection,
    tally: &Tally,
    events: &[&EmailEvent],
    after: Duration,
) -> Result<(), AppError> {
    if events.is_empty() {
        return Ok(());
    }
    let keys: Vec<String> = events.iter().map(|ev| ghl_key(ev)).collect();
    let bodies: Vec<String> = events
        .iter()
        .map(|ev| crate::domain::event::contact_body(ev).to_string())
        .collect();
    let written = sqlx::query(
        "INSERT INTO background_jobs (kind, dedupe_key, payload, run_after)
         SELECT $1, s.key, s.body::jsonb, now() + make_interval(secs => $4)
         FROM unnest($2::text[], $3::text[]) AS s(key, body)
         ON CONFLICT (dedupe_key) DO NOTHING",
    )
    .bind(GHL_SYNC)
    .bind(keys)
    .bind(bodies)
    .bind(after.as_secs_f64())
    .execute(conn)
    .await?;
    tally.wrote(written.rows_affected());
    Ok(())
}

/// What an inline GHL call left its outbox row to become: done when the call succeeded, due
/// again after `retry_after` when it did not.
#[derive(Debug, Clone, PartialEq)]
pub struct GhlSettle {
    key: String,
    pub retry_after: Option<Duration>,
    /// When the row was committed: it comes due one job lease later.
    pub committed: std::time::Instant,
}

impl GhlSettle {
    pub fn new(
        ev: &EmailEvent,
        retry_after: Option<Duration>,
        committed: std::time::Instant,
    ) -> Self {
        Self {
            key: ghl_key(ev),
            retry_after,
            committed,
        }
    }

    /// Whether the call was made (a row left queued would make it again).
    pub fn synced(&self) -> bool {
        self.retry_after.is_none()
    }

    /// The row's dedupe key.
    pub fn key(&self) -> &str {
        &self.key
    }
}

/// Settles the outbox rows of inline GHL calls, all in one statement: a tick gathers them
/// and writes them with its next claim, on the claim's connection, rather than borrowing a
/// connection per job after its call (three round trips a job). Returns the rows written (a
/// row a worker has claimed meanwhile is left to it).
pub async fn settle_ghl_syncs(
    conn: &mut PgConnection,
    settles: &[GhlSettle],
) -> Result<u64, sqlx::Error> {
    if settles.is_empty() {
        return Ok(0);
    }
    let keys: Vec<&str> = settles.iter().map(|s| s.key.as_str()).collect();
    let delays: Vec<Option<f64>> = settles
        .iter()
        .map(|s| s.retry_after.map(|d| d.as_secs_f64()))
        .collect();
    sqlx::query(
        "UPDATE background_jobs b
         SET status = CASE WHEN s.delay IS NULL THEN 'done' ELSE b.status END,
             finished_at = CASE WHEN s.delay IS NULL THEN now() ELSE b.finished_at END,
             run_after = CASE WHEN s.delay IS NULL THEN b.run_after
                              ELSE now() + make_interval(secs => s.delay) END
         FROM unnest($1::text[], $2::float8[]) AS s(key, delay)
         WHERE b.dedupe_key = s.key AND b.status = 'queued'",
    )
    .bind(keys)
    .bind(delays)
    .execute(conn)
    .await
    .map(|r| r.rows_affected())
}

/// The outcome of an enqueue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    New,
    Duplicate,
}

/// Queues `ev` with exactly one write. The workspace check rides in the same statement, so an
/// unknown workspace writes nothing.
pub async fn enqueue(
    conn: &mut PgConnection,
    tally: &Tally,
    ev: &EmailEvent,
    raw: &Value,
) -> Result<Enqueued, AppError> {
    let outcome = enqueue_keyed(conn, &ev.dedupe_key(), ev.workspace_id, raw).await;
    if let Ok(Enqueued::New) = outcome {
        tally.wrote(1);
    }
    outcome
}

/// [`enqueue`] by the event's dedupe key and workspace.
pub async fn enqueue_keyed(
    conn: &mut PgConnection,
    dedupe_key: &str,
    workspace_id: i64,
    raw: &Value,
) -> Result<Enqueued, AppError> {
    let inserted: Option<i64> = sqlx::query_scalar(
        "INSERT INTO background_jobs (kind, dedupe_key, payload)
         SELECT $1, $2, $3 WHERE EXISTS (SELECT 1 FROM workspaces WHERE id = $4)
         ON CONFLICT (dedupe_key) DO NOTHING
         RETURNING id",
    )
    .bind(EMAIL_SENT)
    .bind(dedupe_key)
    .bind(raw)
    .bind(workspace_id)
    .fetch_optional(&mut *conn)
    .await?;
    if inserted.is_some() {
        return Ok(Enqueued::New);
    }
    // Nothing inserted: a duplicate, or a workspace that does not exist (rare; reads only).
    let seen: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM background_jobs WHERE dedupe_key = $1)")
            .bind(dedupe_key)
            .fetch_one(&mut *conn)
            .await?;
    if seen {
        Ok(Enqueued::Duplicate)
    } else {
        Err(unknown_workspace(workspace_id))
    }
}

/// The 422 for an event whose workspace does not exist.
pub fn unknown_workspace(workspace_id: i64) -> AppError {
    AppError::Unprocessable(format!("field `workspace_id`: no workspace {workspace_id}"))
}

/// A claimed job.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Job {
    pub id: i64,
    pub kind: String,
    pub payload: Value,
    pub attempts: i32,
    /// The claim's token: only its holder may mark the job done or retried.
    pub lease_token: i64,
}

/// The claim: `$1` jobs at most, a lease of `$2` seconds, the lease token `$3`, `$4` attempts
/// at most. It walks `background_jobs_claim_idx` (the live jobs, in id order), so its cost
/// does not grow with the finished jobs the table keeps.
pub const CLAIM_SQL: &str =
    "UPDATE background_jobs SET status = 'running', attempts = attempts + 1,
        locked_until = now() + make_interval(secs => $2), lease_token = $3
 WHERE id IN (
     SELECT id FROM background_jobs
     WHERE (status = 'queued' AND run_after <= now())
        OR (status = 'running' AND locked_until < now() AND attempts < $4)
     ORDER BY id
     LIMIT $1
     FOR UPDATE SKIP LOCKED)
 RETURNING id, kind, payload, attempts, lease_token";

/// Claims up to `limit` runnable jobs: queued and due, or running with an expired lease and
/// attempts left (a worker that died mid-job used an attempt, so a job that kills its worker
/// ends). Each claim counts as an attempt and carries a fresh lease token.
pub async fn claim(
    conn: &mut PgConnection,
    limit: i64,
    lease: Duration,
    max_attempts: u32,
) -> Result<Vec<Job>, sqlx::Error> {
    sqlx::query_as(CLAIM_SQL)
        .bind(limit)
        .bind(lease.as_secs_f64())
        .bind(rand::random::<i64>())
        .bind(max_attempts as i32)
        .fetch_all(conn)
        .await
}

/// [`fail_abandoned`]'s statement (`$1`: the attempts a job has at most). Every tick runs it
/// first; it walks `background_jobs_lease_idx` (the running jobs alone), so its cost does not
/// grow with the queue or the finished jobs the table keeps.
pub const FAIL_ABANDONED_SQL: &str = "UPDATE background_jobs
     SET status = 'failed', finished_at = now(), locked_until = NULL,
         last_error = 'lease expired on every attempt (' || attempts || ')'
     WHERE status = 'running' AND locked_until < now() AND attempts >= $1";

/// Fails the jobs whose lease expired on their last attempt (their worker died each time):
/// a poison job ends instead of being claimed forever. Returns the rows written.
pub async fn fail_abandoned(
    conn: &mut PgConnection,
    max_attempts: u32,
) -> Result<u64, sqlx::Error> {
    sqlx::query(FAIL_ABANDONED_SQL)
        .bind(max_attempts as i32)
        .execute(conn)
        .await
        .map(|r| r.rows_affected())
}

/// Marks `job` done if this claim still holds its lease; 0 rows when another worker took it
/// over (its lease expired): that worker's outcome stands.
pub async fn complete(conn: &mut PgConnection, job: &Job) -> Result<u64, sqlx::Error> {
    Ok(complete_held(conn, &[job]).await?.len() as u64)
}

/// Marks done each of `jobs` whose lease this claim still holds, in one statement, and returns
/// their ids. The row lock it takes is what lets a caller apply those jobs' effects in the same
/// transaction exactly once: no other worker can take them over until it ends.
pub async fn complete_held(
    conn: &mut PgConnection,
    jobs: &[&Job],
) -> Result<Vec<i64>, sqlx::Error> {
    let ids: Vec<i64> = jobs.iter().map(|j| j.id).collect();
    let tokens: Vec<i64> = jobs.iter().map(|j| j.lease_token).collect();
    sqlx::query_scalar(
        "UPDATE background_jobs b
         SET status = 'done', finished_at = now(), locked_until = NULL
         FROM unnest($1::int8[], $2::int8[]) AS c(id, token)
         WHERE b.id = c.id AND b.lease_token = c.token AND b.status = 'running'
         RETURNING b.id",
    )
    .bind(ids)
    .bind(tokens)
    .fetch_all(conn)
    .await
}

/// Gives `jobs` back untouched (their tick ran out of time before their effects): queued
/// again, due now, the attempt their claim counted returned. Returns the rows written.
pub async fn release(conn: &mut PgConnection, jobs: &[Job]) -> Result<u64, sqlx::Error> {
    let ids: Vec<i64> = jobs.iter().map(|j| j.id).collect();
    let tokens: Vec<i64> = jobs.iter().map(|j| j.lease_token).collect();
    sqlx::query(
        "UPDATE background_jobs b
         SET status = 'queued', attempts = b.attempts - 1, locked_until = NULL
         FROM unnest($1::int8[], $2::int8[]) AS c(id, token)
         WHERE b.id = c.id AND b.lease_token = c.token AND b.status = 'running'",
    )
    .bind(ids)
    .bind(tokens)
    .execute(conn)
    .await
    .map(|r| r.rows_affected())
}

/// Puts a failed job back for another attempt after `delay`, or fails it for good. Returns
/// whether it will be retried, and the rows written.
pub async fn retry_or_fail(
    conn: &mut PgConnection,
    job: &Job,
    max_attempts: u32,
    delay: Duration,
    error: &str,
) -> Result<(bool, u64), sqlx::Error> {
    let retry = (job.attempts as u32) < max_attempts;
    let written = sqlx::query(
        "UPDATE background_jobs
         SET status = CASE WHEN $2 THEN 'queued' ELSE 'failed' END,
             run_after = now() + make_interval(secs => $3),
             locked_until = NULL, last_error = $4,
             finished_at = CASE WHEN $2 THEN NULL ELSE now() END
         WHERE id = $1 AND lease_token = $5 AND status = 'running'",
    )
    .bind(job.id)
    .bind(retry)
    .bind(delay.as_secs_f64())
    .bind(error)
    .bind(job.lease_token)
    .execute(conn)
    .await?;
    Ok((retry, written.rows_affected()))
}

/// Job counts by status (for `/metrics`).
pub async fn depth(conn: &mut PgConnection) -> Result<Vec<(String, i64)>, sqlx::Error> {
    sqlx::query_as("SELECT status, count(*) FROM background_jobs GROUP BY status")
        .fetch_all(conn)
        .await
}
