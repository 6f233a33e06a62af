//! What the database and the providers say after an arm: every acknowledged `EMAIL_SENT`
//! applied exactly once on every side effect it has (message, activity, the lead's counter,
//! the slot ledger, the GHL call), and how many rows the service really wrote (Postgres's own counters), to check the
//! service's declared `x-db-writes` against.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use loadgen::Recording;
use sqlx::{ConnectOptions, Connection, PgConnection};

use crate::postgres::PgServer;
use crate::report::{EffectCount, Invariants};

pub(crate) async fn connect(server: &PgServer, db: &str) -> anyhow::Result<PgConnection> {
    Ok(server
        .connect_options(db)
        .options([("statement_timeout", "0")])
        .connect()
        .await?)
}

/// What the counters an `EMAIL_SENT` increments stood at before the load.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Baseline {
    /// Σ `leads.emails_sent`.
    pub emails_sent: i64,
    /// Σ `slot_offer_ledger.offered` per slot date (`YYYY-MM-DD`). A send counts on the day it
    /// occurred; AI drafts offer slots on the day they are written, so the effect of the sends
    /// is read on their days only.
    pub ledger: BTreeMap<String, i64>,
}

/// The counters now.
pub async fn baseline(conn: &mut PgConnection) -> anyhow::Result<Baseline> {
    let emails_sent: i64 =
        sqlx::query_scalar("SELECT coalesce(sum(emails_sent), 0)::int8 FROM leads")
            .fetch_one(&mut *conn)
            .await?;
    let ledger: Vec<(String, i64)> = sqlx::query_as(
        "SELECT slot_date::text, sum(offered)::int8 FROM slot_offer_ledger GROUP BY 1",
    )
    .fetch_all(conn)
    .await?;
    Ok(Baseline {
        emails_sent,
        ledger: ledger.into_iter().collect(),
    })
}

/// Rows per event id → the effect's count against the `expected` ids.
fn per_id(effect: &str, expected: &[String], rows: &BTreeMap<String, i64>) -> EffectCount {
    let applied = expected.iter().filter(|id| rows.contains_key(*id)).count() as u64;
    EffectCount {
        effect: effect.to_owned(),
        expected: expected.len() as u64,
        applied,
        duplicates: rows.values().map(|n| (*n as u64).saturating_sub(1)).sum(),
        lost: expected.len() as u64 - applied,
        at_least_once: None,
    }
}

/// A counter that must have grown by exactly `expected`.
fn counter(effect: &str, expected: u64, grown: i64) -> EffectCount {
    let grown = grown.max(0) as u64;
    EffectCount {
        effect: effect.to_owned(),
        expected,
        applied: grown.min(expected),
        duplicates: grown.saturating_sub(expected),
        lost: expected.saturating_sub(grown),
        at_least_once: None,
    }
}

/// Successful provider calls by idempotency key → once per applied event; a call for an event
/// that never applied counts as a duplicate too (an effect without its cause).
fn provider_calls(
    effect: &str,
    applied: &[String],
    ok_by_key: &BTreeMap<String, u64>,
) -> EffectCount {
    let keys: BTreeMap<String, &String> = applied
        .iter()
        .map(|id| (incident_wire::redact(&format!("email:EMAIL_SENT:{id}")), id))
        .collect();
    let called = keys.keys().filter(|k| ok_by_key.contains_key(*k)).count() as u64;
    let duplicates = ok_by_key
        .iter()
        .map(|(k, n)| if keys.contains_key(k) { n - 1 } else { *n })
        .sum();
    EffectCount {
        effect: effect.to_owned(),
        expected: applied.len() as u64,
        applied: called,
        duplicates,
        lost: applied.len() as u64 - called,
        at_least_once: None,
    }
}

async fn rows_by_id(
    conn: &mut PgConnection,
    sql: &'static str,
    ids: &[String],
) -> anyhow::Result<BTreeMap<String, i64>> {
    let found: Vec<(String, i64)> = sqlx::query_as(sql).bind(ids).fetch_all(conn).await?;
    Ok(found.into_iter().collect())
}

/// Counts every side effect of `EMAIL_SENT` after the drain: the message row and the lead
/// activity per acknowledged event id; the lead's `emails_sent`, the slot ledger and the GHL
/// contact sync once per applied event (whether or not its acknowledgement arrived).
pub async fn effects(
    conn: &mut PgConnection,
    acked: &[String],
    before: &Baseline,
    ghl_ok_by_key: &BTreeMap<String, u64>,
) -> anyhow::Result<Vec<EffectCount>> {
    let mut out = acked_effects(conn, acked).await?;
    let applied: Vec<String> = sqlx::query_scalar(
        "SELECT provider_event_id FROM messages WHERE provider_event_id IS NOT NULL",
    )
    .fetch_all(&mut *conn)
    .await?;
    // The days the applied sends occurred on (UTC, as the service counts them).
    let days: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT ((sent_at AT TIME ZONE 'UTC')::date)::text FROM messages
         WHERE provider_event_id IS NOT NULL",
    )
    .fetch_all(&mut *conn)
    .await?;
    let now = baseline(conn).await?;
    let on_days = |b: &Baseline| -> i64 {
        days.iter()
            .map(|d| b.ledger.get(d).copied().unwrap_or(0))
            .sum()
    };
    let n = applied.len() as u64;
    out.extend([
        counter("lead emails_sent", n, now.emails_sent - before.emails_sent),
        counter("slot ledger", n, on_days(&now) - on_days(before)),
        provider_calls(GHL_EFFECT, &applied, ghl_ok_by_key),
    ]);
    Ok(out)
}

/// The effects counted by event id, which need no baseline: a message row and a lead activity
/// per acknowledged event, exactly once each.
pub async fn acked_effects(
    conn: &mut PgConnection,
    acked: &[String],
) -> anyhow::Result<Vec<EffectCount>> {
    let messages = rows_by_id(
        conn,
        "SELECT provider_event_id, count(*) FROM messages WHERE provider_event_id = ANY($1) GROUP BY 1",
        acked,
    )
    .await?;
    let activities = rows_by_id(
        conn,
        "SELECT provider_event_id, count(*) FROM lead_activities
         WHERE kind = 'email_sent' AND provider_event_id = ANY($1) GROUP BY 1",
        acked,
    )
    .await?;
    Ok(vec![
        per_id("message row", acked, &messages),
        per_id("lead activity", acked, &activities),
    ])
}

/// The name of the GHL call's effect.
pub const GHL_EFFECT: &str = "GHL contact sync";

/// Marks the GHL call as required at least once, not exactly once (`why` says why; repeats
/// are still counted and shown): a provider call and a database commit cannot be one atomic
/// step, so a cut between them (a fault; on the legacy path also the function limit) makes
/// the retry call again. The database effects stay exactly once.
pub fn ghl_at_least_once(inv: &mut Invariants, why: &str) {
    for e in inv.effects.iter_mut().filter(|e| e.effect == GHL_EFFECT) {
        e.at_least_once = Some(why.to_owned());
    }
    inv.holds = inv.effects.iter().all(EffectCount::clean);
}

/// The invariant's figures from the effects counted (the first is the message row).
pub fn invariants_of(effects: Vec<EffectCount>, acked: u64, undrained: u64) -> Invariants {
    let message = &effects[0];
    Invariants {
        sent: None,
        acked,
        applied: message.applied,
        duplicates: message.duplicates,
        lost: message.lost,
        undrained_jobs: undrained,
        failed_jobs: 0,
        holds: effects.iter().all(EffectCount::clean),
        effects,
    }
}

/// Every acknowledged `EMAIL_SENT` applied exactly once, on every effect, after the drain.
pub async fn check_invariant(
    server: &PgServer,
    db: &str,
    recording: &Recording,
    undrained: u64,
    before: Baseline,
    ghl_ok_by_key: &BTreeMap<String, u64>,
) -> anyhow::Result<Invariants> {
    let acked: Vec<String> = recording.acked.iter().cloned().collect();
    let mut conn = connect(server, db).await?;
    let effects = effects(&mut conn, &acked, &before, ghl_ok_by_key).await?;
    let failed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM background_jobs WHERE kind = $1 AND status = 'failed'",
    )
    .bind(inbox_service::domain::jobs::EMAIL_SENT)
    .fetch_one(&mut conn)
    .await?;
    conn.close().await?;
    Ok(Invariants {
        sent: Some(recording.sent_events),
        failed_jobs: failed as u64,
        ..invariants_of(effects, acked.len() as u64, undrained)
    })
}

/// Rows written in `db`'s tables, as Postgres counts them (`pg_stat_user_tables`; rows of
/// rolled-back transactions included, as the service's tally counts them too).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct RowCounts {
    /// Inserted + updated + deleted, per table.
    pub written: BTreeMap<String, u64>,
    /// Of those, deleted, per table.
    pub deleted: BTreeMap<String, u64>,
}

/// [`RowCounts`] of `db` so far.
pub(crate) async fn rows_written(server: &PgServer, db: &str) -> anyhow::Result<RowCounts> {
    let mut conn = connect(server, db).await?;
    let rows: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT relname::text, (n_tup_ins + n_tup_upd + n_tup_del)::int8, n_tup_del FROM pg_stat_user_tables",
    )
    .fetch_all(&mut conn)
    .await?;
    conn.close().await?;
    let mut counts = RowCounts::default();
    for (table, written, deleted) in rows {
        counts.written.insert(table.clone(), written.max(0) as u64);
        counts.deleted.insert(table, deleted.max(0) as u64);
    }
    Ok(counts)
}

/// Rows written per table between two [`rows_written`] readings (tables with none left out).
pub(crate) fn rows_since(before: &RowCounts, after: &RowCounts) -> RowCounts {
    let since = |b: &BTreeMap<String, u64>, a: &BTreeMap<String, u64>| {
        a.iter()
            .map(|(t, n)| (t.clone(), n.saturating_sub(b.get(t).copied().unwrap_or(0))))
            .filter(|(_, n)| *n > 0)
            .collect()
    };
    RowCounts {
        written: since(&before.written, &after.written),
        deleted: since(&before.deleted, &after.deleted),
    }
}

/// Ends every other session of `db` and waits until they have exited (which is when Postgres
/// flushes their counters), for at most `limit`. Called once the service has stopped: what its
/// backends still run is a read its client no longer waits for (a legacy counts aggregate ran
/// on for up to the 3 s statement timeout, ~1.5 s of each legacy arm) or a commit already
/// sent, which a terminate does not interrupt.
pub(crate) async fn wait_for_sessions_to_end(
    server: &PgServer,
    db: &str,
    limit: Duration,
) -> anyhow::Result<()> {
    let mut conn = connect(server, db).await?;
    let started = Instant::now();
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .execute(&mut conn)
    .await?;
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
