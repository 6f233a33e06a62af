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

/// What the counters an `EMAIL_SENT` increments stood at before the load, per key: each
/// lead's and each ledger row's growth is compared with the sends applied to it, so one key's
/// loss cannot cancel another's repeat in a sum.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Baseline {
    /// `leads.emails_sent` per lead id (leads at 0 left out).
    pub emails_sent: BTreeMap<i64, i64>,
    /// `slot_offer_ledger.offered` per workspace and slot date (`YYYY-MM-DD`). A send counts
    /// on the day it occurred; AI drafts offer slots on the day they are written, so the
    /// effect of the sends is read on their days only.
    pub ledger: BTreeMap<(i64, String), i64>,
}

/// The counters now.
pub async fn baseline(conn: &mut PgConnection) -> anyhow::Result<Baseline> {
    let emails_sent: Vec<(i64, i64)> =
        sqlx::query_as("SELECT id, emails_sent::int8 FROM leads WHERE emails_sent <> 0")
            .fetch_all(&mut *conn)
            .await?;
    let ledger: Vec<(i64, String, i64)> = sqlx::query_as(
        "SELECT workspace_id, slot_date::text, offered::int8 FROM slot_offer_ledger",
    )
    .fetch_all(conn)
    .await?;
    Ok(Baseline {
        emails_sent: emails_sent.into_iter().collect(),
        ledger: ledger.into_iter().map(|(w, d, n)| ((w, d), n)).collect(),
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
        declared_skips: None,
    }
}

/// A counter kept per key (a lead, a ledger row) that must have grown, on every key, by
/// exactly the sends applied to it: a key that grew less lost some, one that grew more (or
/// grew with nothing applied to it) repeated some, and neither cancels the other.
fn counter_per_key<K: Ord>(
    effect: &str,
    expected: &BTreeMap<K, u64>,
    grown: &BTreeMap<K, i64>,
) -> EffectCount {
    let mut count = EffectCount {
        effect: effect.to_owned(),
        expected: expected.values().sum(),
        ..EffectCount::default()
    };
    for (key, want) in expected {
        let got = grown.get(key).copied().unwrap_or(0).max(0) as u64;
        count.applied += got.min(*want);
        count.lost += want.saturating_sub(got);
        count.duplicates += got.saturating_sub(*want);
    }
    count.duplicates += grown
        .iter()
        .filter(|(key, _)| !expected.contains_key(*key))
        .map(|(_, n)| (*n).max(0) as u64)
        .sum::<u64>();
    count
}

/// Per key, `now − before` where it is not zero (a key missing on a side stands at 0).
fn growth<K: Ord + Clone>(before: &BTreeMap<K, i64>, now: &BTreeMap<K, i64>) -> BTreeMap<K, i64> {
    let mut out: BTreeMap<K, i64> = now
        .iter()
        .map(|(k, n)| (k.clone(), n - before.get(k).copied().unwrap_or(0)))
        .collect();
    for (k, n) in before {
        if !now.contains_key(k) {
            out.insert(k.clone(), -n);
        }
    }
    out.retain(|_, n| *n != 0);
    out
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
        declared_skips: None,
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
    let applied: Vec<(String, i64, i64, String)> = sqlx::query_as(
        "SELECT provider_event_id, lead_id, workspace_id, ((sent_at AT TIME ZONE 'UTC')::date)::text
         FROM messages WHERE provider_event_id IS NOT NULL",
    )
    .fetch_all(&mut *conn)
    .await?;
    let (mut per_lead, mut per_row) = (BTreeMap::new(), BTreeMap::new());
    for (_, lead, workspace, day) in &applied {
        *per_lead.entry(*lead).or_insert(0u64) += 1;
        *per_row.entry((*workspace, day.clone())).or_insert(0u64) += 1;
    }
    // The days the applied sends occurred on (UTC, as the service counts them): drafts offer
    // slots on other days.
    let days: std::collections::BTreeSet<&String> = applied.iter().map(|a| &a.3).collect();
    let now = baseline(conn).await?;
    let mut ledger = growth(&before.ledger, &now.ledger);
    ledger.retain(|(_, day), _| days.contains(day));
    let ids: Vec<String> = applied.iter().map(|a| a.0.clone()).collect();
    out.extend([
        counter_per_key(
            "lead emails_sent",
            &per_lead,
            &growth(&before.emails_sent, &now.emails_sent),
        ),
        counter_per_key(LEDGER_EFFECT, &per_row, &ledger),
        provider_calls(GHL_EFFECT, &ids, ghl_ok_by_key),
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

/// The name of the slot ledger's effect.
pub const LEDGER_EFFECT: &str = "slot ledger";

/// Marks the slot ledger as best effort with the increments the service declared skipped:
/// a lost increment it declared is reported, one it did not still fails the invariant.
pub fn ledger_best_effort(inv: &mut Invariants, declared_skips: u64) {
    for e in inv.effects.iter_mut().filter(|e| e.effect == LEDGER_EFFECT) {
        e.declared_skips = Some(declared_skips);
    }
    inv.holds = inv.effects.iter().all(EffectCount::clean);
}

/// The invariant's figures from the effects counted (the first is the message row): the
/// headline's lost and repeated are the most of any effect, the worst of them named.
pub fn invariants_of(effects: Vec<EffectCount>, acked: u64, undrained: u64) -> Invariants {
    let worst = effects
        .iter()
        .filter(|e| e.lost + e.duplicates > 0)
        .max_by_key(|e| e.lost + e.duplicates)
        .map(|e| {
            let mut s = e.effect.clone();
            if e.lost > 0 {
                s.push_str(&format!(" −{}", e.lost));
            }
            if e.duplicates > 0 {
                s.push_str(&format!(" +{}", e.duplicates));
            }
            s
        });
    Invariants {
        sent: None,
        acked,
        applied: effects[0].applied,
        duplicates: effects.iter().map(|e| e.duplicates).max().unwrap_or(0),
        lost: effects.iter().map(|e| e.lost).max().unwrap_or(0),
        worst_effect: worst,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn effect(name: &str, lost: u64, duplicates: u64) -> EffectCount {
        EffectCount {
            effect: name.into(),
            expected: 100,
            applied: 100 - lost,
            duplicates,
            lost,
            at_least_once: None,
            declared_skips: None,
        }
    }

    /// Counters compared per key: one lead's lost increment and another's doubled one are
    /// one lost and one repeated, though their sum grew by exactly the sends applied.
    #[test]
    fn a_lost_and_a_doubled_increment_do_not_cancel_out() {
        let expected: BTreeMap<i64, u64> = [(1, 1), (2, 1), (3, 2)].into();
        let grown: BTreeMap<i64, i64> = [(1, 2), (3, 2)].into();
        assert_eq!(
            grown.values().sum::<i64>() as u64,
            expected.values().sum::<u64>()
        );
        let c = counter_per_key("lead emails_sent", &expected, &grown);
        assert_eq!((c.expected, c.applied, c.lost, c.duplicates), (4, 3, 1, 1));
        assert!(!c.clean());
        // Growth on a key nothing was applied to is a repeat too.
        let stray = counter_per_key(
            "slot ledger",
            &expected,
            &[(1, 1), (2, 1), (3, 2), (9, 1)].into(),
        );
        assert_eq!((stray.lost, stray.duplicates), (0, 1));
        let exact = counter_per_key(
            "lead emails_sent",
            &expected,
            &[(1, 1), (2, 1), (3, 2)].into(),
        );
        assert!(exact.clean(), "{exact:?}");
        // Growth is read per key, a key gone from a side standing at 0.
        let g = growth(&[(1, 5), (2, 3)].into(), &[(1, 6), (3, 1)].into());
        assert_eq!(g, [(1, 1), (2, -3), (3, 1)].into());
    }

    /// The headline is the worst of every effect, named: a message row the unique index holds
    /// at once cannot hide 522 repeated GHL calls (or one lost counter increment).
    #[test]
    fn the_headline_is_the_worst_effect_not_the_message_row() {
        let inv = invariants_of(
            vec![
                effect("message row", 0, 0),
                effect("lead emails_sent", 1, 0),
                effect(GHL_EFFECT, 0, 522),
            ],
            100,
            0,
        );
        assert_eq!((inv.lost, inv.duplicates), (1, 522));
        assert_eq!(inv.worst_effect.as_deref(), Some("GHL contact sync +522"));
        assert!(!inv.holds);
        let clean = invariants_of(vec![effect("message row", 0, 0)], 100, 0);
        assert_eq!(
            (clean.lost, clean.duplicates, clean.worst_effect),
            (0, 0, None)
        );
    }

    /// A lost ledger increment the service declared skipped (best effort) is reported, not
    /// failed; one it did not declare, or more lost than declared, still fails.
    #[test]
    fn a_declared_ledger_skip_is_reported_and_an_undeclared_loss_fails() {
        let expected: BTreeMap<(i64, String), u64> =
            [((1, "d".to_owned()), 2), ((2, "d".to_owned()), 1)].into();
        let lost_one = counter_per_key(
            LEDGER_EFFECT,
            &expected,
            &[((1, "d".to_owned()), 1), ((2, "d".to_owned()), 1)].into(),
        );
        assert_eq!(lost_one.lost, 1);
        let effects = || {
            vec![
                per_id("message row", &["a".into()], &[("a".into(), 1)].into()),
                lost_one.clone(),
            ]
        };
        for (declared, holds) in [(0, false), (1, true), (3, true)] {
            let mut inv = invariants_of(effects(), 1, 0);
            assert!(!inv.holds);
            ledger_best_effort(&mut inv, declared);
            assert_eq!(inv.holds, holds, "{declared} declared");
            // The headline still says what is missing.
            assert_eq!(inv.lost, 1);
        }
        // Only the ledger is best effort: a lost message row fails whatever was declared.
        let mut inv = invariants_of(
            vec![per_id("message row", &["a".into()], &BTreeMap::new())],
            1,
            0,
        );
        ledger_best_effort(&mut inv, 5);
        assert!(!inv.holds);
    }
}
