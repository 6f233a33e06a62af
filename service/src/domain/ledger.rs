//! The slot-offer ledger: how many meeting slots each workspace offered per day. Slots are
//! offered where drafts are written (AI drafts); each sent email counts as one too.
//!
//! Legacy (`LEGACY_LEDGER_TX`, slot offers only): an interactive transaction on a connection
//! of its own — `BEGIN; SELECT … FOR UPDATE; INSERT or UPDATE; COMMIT` — so a caller already
//! holding a connection needs a second one: when the pool is busy the acquisition fails (the
//! seed's "transaction acquisition failure", counted apart in `ledger_increments_total`), and
//! two first increments of a day race on the insert. Fixed: one atomic upsert on the caller's
//! own connection, under a savepoint so that it is best effort: a failure is logged once with
//! its category, rolled back alone, and never fails the caller. A sent email's increment is
//! always the atomic one, so the P0 cascade comes from the burst alone.

use chrono::NaiveDate;
use sqlx::PgConnection;

use crate::error::{AppError, Category};
use crate::state::Resources;
use crate::tally::Tally;

/// How long the legacy interactive transaction waits for its connection: Prisma's
/// `$transaction` default `maxWait` (2 s), after which Prisma fails the acquisition.
pub const LEGACY_TX_MAX_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Adds one offered slot for `workspace` on `day` where slots are offered; `conn` is the
/// caller's connection (the fixed path runs on it, inside the caller's transaction if any).
pub async fn offer_slot(
    state: &Resources,
    tally: &Tally,
    conn: &mut PgConnection,
    workspace: i64,
    day: NaiveDate,
) -> Result<(), AppError> {
    if state.switches().legacy_ledger_tx {
        let wait = LEGACY_TX_MAX_WAIT.min(state.config.limits.acquire_timeout);
        let mut conn = match state.acquire_within(tally, wait).await {
            Ok(conn) => conn,
            Err(e) => {
                state.metrics.ledger("acquire_failed", 1);
                tracing::warn!(
                    category = e.category().map(Category::as_str),
                    "slot ledger: could not acquire a connection for its transaction"
                );
                return Err(e);
            }
        };
        let mut tx = crate::db::begin(&mut conn).await?;
        let current: Option<i32> = sqlx::query_scalar(
            "SELECT offered FROM slot_offer_ledger WHERE workspace_id = $1 AND slot_date = $2 FOR UPDATE",
        )
        .bind(workspace)
        .bind(day)
        .fetch_optional(&mut *tx)
        .await?;
        let written = match current {
            Some(n) => {
                sqlx::query("UPDATE slot_offer_ledger SET offered = $3 WHERE workspace_id = $1 AND slot_date = $2")
                    .bind(workspace)
                    .bind(day)
                    .bind(n + 1)
                    .execute(&mut *tx)
                    .await?
            }
            None => {
                sqlx::query("INSERT INTO slot_offer_ledger (workspace_id, slot_date, offered) VALUES ($1, $2, 1)")
                    .bind(workspace)
                    .bind(day)
                    .execute(&mut *tx)
                    .await?
            }
        };
        tally.wrote(written.rows_affected());
        tx.commit().await?;
        state.metrics.ledger("applied", 1);
        return Ok(());
    }
    count(state, tally, conn, workspace, day).await
}

/// The fixed increment: one atomic upsert on `conn` under a savepoint, best effort.
pub async fn count(
    state: &Resources,
    tally: &Tally,
    conn: &mut PgConnection,
    workspace: i64,
    day: NaiveDate,
) -> Result<(), AppError> {
    count_many(state, tally, conn, &[(workspace, day)]).await
}

/// The fixed increment of one slot per `(workspace, day)` in `counts` (a pair may repeat):
/// one atomic upsert on `conn` for them all, under a savepoint, best effort.
pub async fn count_many(
    state: &Resources,
    tally: &Tally,
    conn: &mut PgConnection,
    counts: &[(i64, NaiveDate)],
) -> Result<(), AppError> {
    if counts.is_empty() {
        return Ok(());
    }
    // A deliberate bug (tests only): the last row's increment goes to the first's. Copied
    // only then: the ledger's hot path takes the caller's slice as it is.
    let crossed;
    let counts = if state.faults().crossed_counters {
        let mut c = counts.to_vec();
        if let (Some(first), Some(last)) = (c.first().copied(), c.last_mut()) {
            *last = first;
        }
        crossed = c;
        &crossed[..]
    } else {
        counts
    };
    let (workspaces, days): (Vec<i64>, Vec<NaiveDate>) = counts.iter().copied().unzip();
    let result = async {
        let mut savepoint = crate::db::begin(conn).await?;
        // Grouped, so each row is updated once; in key order, so two writers lock alike.
        let written = sqlx::query(
            "INSERT INTO slot_offer_ledger (workspace_id, slot_date, offered)
             SELECT w, d, count(*) FROM unnest($1::int8[], $2::date[]) AS t(w, d)
             GROUP BY w, d ORDER BY w, d
             ON CONFLICT (workspace_id, slot_date)
             DO UPDATE SET offered = slot_offer_ledger.offered + EXCLUDED.offered",
        )
        .bind(workspaces)
        .bind(days)
        .execute(&mut *savepoint)
        .await?;
        // Counted before the commit: a rolled-back row is still a row Postgres wrote.
        tally.wrote(written.rows_affected());
        savepoint.commit().await?;
        Ok::<_, AppError>(())
    }
    .await;
    if let Err(e) = result {
        // Best effort within a live transaction; a lost connection means the caller's
        // transaction is gone too, and its commit must not be attempted as if it held.
        if let AppError::Db(db) = &e {
            if connection_lost(db) {
                return Err(e);
            }
        }
        let category = e.category();
        if let Some(c) = category {
            tally.note(c);
        }
        tracing::warn!(category = category.map(Category::as_str), error = %e, "slot ledger increment skipped");
        state.metrics.ledger("skipped", counts.len() as u64);
    } else {
        state.metrics.ledger("applied", counts.len() as u64);
    }
    Ok(())
}

/// The connection itself failed (a crash, a reset, an administrator's termination), not a
/// statement on it.
pub fn connection_lost(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::Protocol(_) | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(d) => d
            .code()
            .is_some_and(|c| c.starts_with("57P") || c.starts_with("08")),
        _ => false,
    }
}
