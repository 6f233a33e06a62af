//! The slot-offer ledger: how many meeting slots each workspace offered per day.
//!
//! Legacy (`LEGACY_LEDGER_TX`): an interactive transaction on a connection of its own —
//! `BEGIN; SELECT … FOR UPDATE; INSERT or UPDATE; COMMIT` — so a caller already holding a
//! connection needs a second one (the pool starves under a burst), and two first increments
//! of a day race on the insert. Fixed: one atomic upsert on the caller's own connection, under
//! a savepoint so that it is best effort: a failure is logged once with its category, rolled
//! back alone, and never fails the caller.

use chrono::NaiveDate;
use sqlx::{Connection, PgConnection};

use crate::error::{AppError, Category};
use crate::state::{AppState, Tally};

/// Adds one offered slot for `workspace` on `day`; `conn` is the caller's connection (the
/// fixed path runs on it, inside the caller's transaction if there is one).
pub async fn increment(
    state: &AppState,
    tally: &Tally,
    conn: &mut PgConnection,
    workspace: i64,
    day: NaiveDate,
) -> Result<(), AppError> {
    if state.switches().legacy_ledger_tx {
        let mut conn = state.acquire(tally).await?;
        let mut tx = conn.begin().await?;
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
        return Ok(());
    }
    let result = async {
        let mut savepoint = conn.begin().await?;
        let written = sqlx::query(
            "INSERT INTO slot_offer_ledger (workspace_id, slot_date, offered) VALUES ($1, $2, 1)
             ON CONFLICT (workspace_id, slot_date) DO UPDATE SET offered = slot_offer_ledger.offered + 1",
        )
        .bind(workspace)
        .bind(day)
        .execute(&mut *savepoint)
        .await?;
        // Counted before the commit: a rolled-back row is still a row Postgres wrote.
        tally.wrote(written.rows_affected());
        savepoint.commit().await?;
        Ok::<_, AppError>(())
    }
    .await;
    if let Err(e) = result {
        let category = e.category();
        if let Some(c) = category {
            tally.note(c);
        }
        tracing::warn!(category = category.map(Category::as_str), error = %e, "slot ledger increment skipped");
    }
    Ok(())
}
