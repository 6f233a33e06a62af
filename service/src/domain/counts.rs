//! The sidebar inbox counts (`getInboxCounts()`).
//!
//! One aggregation over a scope's leads and their latest message. Legacy: run live on the
//! schema without the Phase 53 indexes, under the database's default `statement_timeout` — a
//! cancel surfaces as an error. Fixed (`INBOX_COUNTS_CACHE_FALLBACK`): counts younger than
//! `COUNTS_CACHE_TTL_MS` come from the per-scope cache (in process, then the cache table);
//! otherwise the Phase 53c per-lead query (served by the Phase 53 indexes) runs under
//! `SET LOCAL statement_timeout` below the endpoint budget, and on a timeout or a saturated
//! pool the last computed counts come back marked `stale`. One live query per scope runs at a
//! time: a request that finds one in flight serves the last counts, or waits for that one. The
//! background-jobs cron refreshes cached scopes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, SubsecRound, Utc};
use sqlx::PgConnection;

use crate::error::{AppError, Category};
use crate::state::Resources;
use crate::tally::Tally;

/// The sidebar's numbers.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, sqlx::FromRow,
)]
pub struct Counts {
    pub all: i64,
    pub unread: i64,
    pub awaiting_reply: i64,
    pub positive: i64,
    pub interested: i64,
    pub meetings_booked: i64,
}

/// Counts as last computed.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct CachedCounts {
    pub counts: Counts,
    pub computed_at: DateTime<Utc>,
}

/// The counts kept in process memory: the last good answer per scope (the fallback when even
/// the cache table is out of reach), and per scope the lock held while its live counts are
/// computed (one live query per scope at a time).
#[derive(Default)]
pub struct CountsMemory {
    last: Mutex<HashMap<String, CachedCounts>>,
    computing: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// What the endpoint answers.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CountsAnswer {
    pub scope_key: String,
    /// Where the answer came from: `live`, `cache` (fresh enough) or `fallback` (stale).
    pub source: &'static str,
    /// `None` only when nothing was ever computed for the scope and the live query failed.
    pub counts: Option<Counts>,
    /// True when these are cached counts, not a live result.
    pub stale: bool,
    pub computed_at: Option<DateTime<Utc>>,
}

/// The counts both queries compute, from leads `l` and each lead's last message `lm`.
macro_rules! counts_select {
    () => {
        "
    SELECT
        count(*)                                                            AS all,
        count(*) FILTER (WHERE lm.direction = 'inbound' AND NOT lm.is_read) AS unread,
        count(*) FILTER (WHERE lm.direction = 'inbound')                    AS awaiting_reply,
        count(*) FILTER (WHERE l.sentiment = 'positive')                    AS positive,
        count(*) FILTER (WHERE l.status = 'interested')                     AS interested,
        count(*) FILTER (WHERE l.status = 'meeting_booked')                 AS meetings_booked
    "
    };
}

const COUNTS_SQL: &str = concat!(
    "
    WITH last_message AS (
        SELECT DISTINCT ON (m.lead_id) m.lead_id, m.direction, m.is_read
        FROM messages m
        WHERE m.workspace_id = ANY($1)
        ORDER BY m.lead_id, m.sent_at DESC
    )",
    counts_select!(),
    "    FROM leads l
    LEFT JOIN last_message lm ON lm.lead_id = l.id
    WHERE l.workspace_id = ANY($1)"
);

/// Phase 53c's rewrite: the latest message per lead by one probe of
/// `messages (workspace_id, lead_id, sent_at DESC) INCLUDE (direction, is_read)` each, instead
/// of sorting every message of the scope: an index-only probe per lead. Same numbers; fast only
/// with the Phase 53 index.
pub const COUNTS_SQL_PER_LEAD: &str = concat!(
    counts_select!(),
    "    FROM leads l
    LEFT JOIN LATERAL (
        SELECT m.direction, m.is_read FROM messages m
        WHERE m.workspace_id = l.workspace_id AND m.lead_id = l.id
        ORDER BY m.sent_at DESC LIMIT 1
    ) lm ON true
    WHERE l.workspace_id = ANY($1)"
);

/// Runs the legacy aggregation on `conn`.
pub async fn live(conn: &mut PgConnection, workspaces: &[i64]) -> Result<Counts, sqlx::Error> {
    sqlx::query_as(COUNTS_SQL)
        .bind(workspaces)
        .fetch_one(conn)
        .await
}

/// Reads the cached counts of `scope_key`.
pub async fn cached(
    conn: &mut PgConnection,
    scope_key: &str,
) -> Result<Option<CachedCounts>, sqlx::Error> {
    let row: Option<(sqlx::types::Json<Counts>, DateTime<Utc>)> =
        sqlx::query_as("SELECT counts, computed_at FROM inbox_counts_cache WHERE scope_key = $1")
            .bind(scope_key)
            .fetch_optional(conn)
            .await?;
    Ok(row.map(|(c, at)| CachedCounts {
        counts: c.0,
        computed_at: at,
    }))
}

/// Stores fresh counts for `scope_key`; returns the rows written.
pub async fn store(
    conn: &mut PgConnection,
    scope_key: &str,
    workspaces: &[i64],
    fresh: &CachedCounts,
) -> Result<u64, sqlx::Error> {
    sqlx::query(
        "INSERT INTO inbox_counts_cache (scope_key, workspace_ids, counts, computed_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (scope_key) DO UPDATE SET counts = EXCLUDED.counts, computed_at = EXCLUDED.computed_at",
    )
    .bind(scope_key)
    .bind(workspaces)
    .bind(sqlx::types::Json(fresh.counts))
    .bind(fresh.computed_at)
    .execute(conn)
    .await
    .map(|r| r.rows_affected())
}

/// The current time at the database's precision (microseconds), so a cached answer carries
/// exactly the `computed_at` its live answer had.
fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// The fixed live query under a transaction-local `statement_timeout` of `limit` (or the
/// database's, when lower), in its own transaction.
pub async fn live_bounded(
    conn: &mut PgConnection,
    workspaces: &[i64],
    limit: Duration,
) -> Result<Counts, sqlx::Error> {
    let mut tx = crate::db::begin_bounded(conn, limit).await?;
    let counts = sqlx::query_as(COUNTS_SQL_PER_LEAD)
        .bind(workspaces)
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(counts)
}

/// The counts for a scope, as the current switches say.
pub async fn inbox_counts(
    state: &Resources,
    memory: &CountsMemory,
    tally: &Tally,
    scope_key: &str,
    workspaces: &[i64],
) -> Result<CountsAnswer, AppError> {
    let started = Instant::now();
    let fixed = state.switches().counts_cache_fallback;
    let answer = if fixed {
        fixed_counts(state, memory, tally, scope_key, workspaces).await
    } else {
        let mut conn = state.acquire(tally).await?;
        let counts = live(&mut conn, workspaces).await?;
        CountsAnswer {
            scope_key: scope_key.to_owned(),
            source: "live",
            counts: Some(counts),
            stale: false,
            computed_at: Some(now()),
        }
    };
    state.metrics.counts_answer(answer.source);
    let elapsed = started.elapsed();
    if elapsed > Duration::from_secs(1) {
        tracing::warn!(
            scope_key,
            fallback_used = answer.stale,
            elapsed_ms = elapsed.as_millis() as u64,
            "slow inbox counts"
        );
    }
    Ok(answer)
}

async fn fixed_counts(
    state: &Resources,
    memory: &CountsMemory,
    tally: &Tally,
    scope_key: &str,
    workspaces: &[i64],
) -> CountsAnswer {
    let limits = &state.config.limits;
    let stale = |c: Option<CachedCounts>| CountsAnswer {
        scope_key: scope_key.to_owned(),
        source: "fallback",
        counts: c.map(|c| c.counts),
        stale: true,
        computed_at: c.map(|c| c.computed_at),
    };
    let remembered = || {
        memory
            .last
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(scope_key)
            .copied()
    };
    let fresh_enough = |c: &CachedCounts| {
        (Utc::now() - c.computed_at).to_std().unwrap_or_default() < limits.counts_cache_ttl
    };
    let cached_answer = |c: CachedCounts| CountsAnswer {
        scope_key: scope_key.to_owned(),
        source: "cache",
        counts: Some(c.counts),
        stale: false,
        computed_at: Some(c.computed_at),
    };
    if let Some(c) = remembered().filter(fresh_enough) {
        return cached_answer(c);
    }
    // One live query per scope at a time. Copies of the same aggregation run side by side only
    // slow each other past the bound (the agency admins share one scope: their first requests
    // all timed out together). Another request's computation in flight: serve the last counts
    // at once, or with none known, wait for that computation (within the query's own bound)
    // and serve what it left — never a second query after it.
    let gate = computing_gate(memory, scope_key);
    let _computing = match gate.clone().try_lock_owned() {
        Ok(held) => held,
        Err(_) => {
            if let Some(c) = remembered() {
                return stale(Some(c));
            }
            let _ = tokio::time::timeout(limits.counts_query_timeout, gate.lock_owned()).await;
            return match remembered() {
                Some(c) if fresh_enough(&c) => cached_answer(c),
                other => stale(other),
            };
        }
    };
    // Waiting for the pool longer than the query may run buys nothing: fall back instead.
    let mut conn = match state
        .acquire_within(
            tally,
            limits.acquire_timeout.min(limits.counts_query_timeout),
        )
        .await
    {
        Ok(conn) => conn,
        Err(e) => {
            if let Some(c) = e.category() {
                tally.note(c);
            }
            return stale(remembered());
        }
    };
    if let Ok(Some(c)) = cached(&mut conn, scope_key).await {
        if fresh_enough(&c) {
            remember(memory, scope_key, c);
            return cached_answer(c);
        }
    }
    match live_bounded(&mut conn, workspaces, limits.counts_query_timeout).await {
        Ok(counts) => {
            let fresh = CachedCounts {
                counts,
                computed_at: now(),
            };
            remember(memory, scope_key, fresh);
            if let Ok(rows) = store(&mut conn, scope_key, workspaces, &fresh).await {
                tally.wrote(rows);
            }
            CountsAnswer {
                scope_key: scope_key.to_owned(),
                source: "live",
                counts: Some(counts),
                stale: false,
                computed_at: Some(fresh.computed_at),
            }
        }
        Err(e) => {
            let category = Category::of_sqlx(&e);
            if let Some(c) = category {
                tally.note(c);
            }
            tracing::info!(
                scope_key,
                category = category.map(Category::as_str),
                "live counts failed; serving cached counts"
            );
            let from_table = cached(&mut conn, scope_key).await.ok().flatten();
            stale(from_table.or_else(remembered))
        }
    }
}

/// The lock held while `scope_key`'s live counts are computed (by a request or the cron).
fn computing_gate(memory: &CountsMemory, scope_key: &str) -> Arc<tokio::sync::Mutex<()>> {
    memory
        .computing
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(scope_key.to_owned())
        .or_default()
        .clone()
}

/// Keeps the latest counts of a scope in process memory.
pub fn remember(memory: &CountsMemory, scope_key: &str, fresh: CachedCounts) {
    memory
        .last
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(scope_key.to_owned(), fresh);
}

/// Recomputes, on the cron's `conn`, up to `limit` cached scopes older than half the cache
/// TTL, oldest first, so requests keep finding fresh counts. Background work until `deadline`:
/// each query under the time left (and never more than the fixed query's own limit), so a slow
/// database cannot stretch the tick past its budget. Returns the scopes refreshed.
pub async fn refresh_stale(
    state: &Resources,
    memory: &CountsMemory,
    tally: &Tally,
    conn: &mut PgConnection,
    limit: i64,
    deadline: Instant,
) -> Result<u64, AppError> {
    let limits = &state.config.limits;
    let scopes: Vec<(String, Vec<i64>)> = sqlx::query_as(
        "SELECT scope_key, workspace_ids FROM inbox_counts_cache
         WHERE computed_at < now() - make_interval(secs => $1)
         ORDER BY computed_at LIMIT $2",
    )
    .bind((limits.counts_cache_ttl / 2).as_secs_f64())
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    let mut refreshed = 0;
    for (scope_key, workspaces) in scopes {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        // A request computing this scope now refreshes it: not a second query beside it.
        let Ok(_computing) = computing_gate(memory, &scope_key).try_lock_owned() else {
            continue;
        };
        match live_bounded(
            &mut *conn,
            &workspaces,
            left.min(limits.counts_query_timeout),
        )
        .await
        {
            Ok(counts) => {
                let fresh = CachedCounts {
                    counts,
                    computed_at: now(),
                };
                tally.wrote(store(&mut *conn, &scope_key, &workspaces, &fresh).await?);
                remember(memory, &scope_key, fresh);
                refreshed += 1;
            }
            Err(e) => {
                if let Some(c) = Category::of_sqlx(&e) {
                    tally.note(c);
                }
            }
        }
    }
    Ok(refreshed)
}
