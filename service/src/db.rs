//! The reference domain's schema.
//!
//! The migrations describe production as it stood before Phase 53. The indexes Phase 53c
//! adds for the inbox counts are applied separately ([`apply_phase53_indexes`]) so that a
//! legacy arm runs on the schema the incident happened on.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sqlx::{PgConnection, PgPool, Postgres, Transaction};

/// Migrations for the legacy schema (every table the fixes need exists, since a deploy ships
/// tables before flags are turned on; only the Phase 53 indexes are held back).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The Phase 53c indexes behind the fixed inbox counts.
pub const PHASE53_INDEXES: &str = include_str!("../sql/phase53_indexes.sql");

/// Creates the Phase 53 indexes (idempotent).
pub async fn apply_phase53_indexes(pool: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::raw_sql(PHASE53_INDEXES).execute(pool).await?;
    Ok(())
}

/// Begins a transaction whose statements may run for at most `limit` — never above the
/// database's own timeout (the role's or the connection's): a fix that raised it would let a
/// statement run longer than production allows. `BEGIN` and the transaction-local
/// `statement_timeout` go in one round trip.
pub async fn begin_bounded(
    conn: &mut PgConnection,
    limit: Duration,
) -> Result<sqlx::Transaction<'_, sqlx::Postgres>, sqlx::Error> {
    let ms = limit.as_millis().clamp(1, i64::MAX as u128);
    // A simple query (two statements, no parameters): `ms` is an integer formatted here.
    let begin = format!(
        "BEGIN; SELECT set_config('statement_timeout', (CASE
             WHEN current_setting('statement_timeout')::interval = interval '0' THEN {ms}
             ELSE least({ms}, (extract(epoch FROM current_setting('statement_timeout')::interval) * 1000)::int8)
         END)::text, true)"
    );
    begin_with(conn, sqlx::AssertSqlSafe(begin)).await
}

/// Begins a transaction with `statement` (`BEGIN` and what rides with it in one round trip).
pub async fn begin_with(
    conn: &mut PgConnection,
    statement: impl sqlx::SqlSafeStr,
) -> Result<Transaction<'_, Postgres>, sqlx::Error> {
    #[allow(clippy::disallowed_methods)] // the one use: counted by `answered`
    answered(sqlx::Connection::begin_with(conn, statement)).await
}

/// Begins a transaction (or, inside one, a savepoint). The service's only ways to begin one are
/// this, [`begin_with`] and [`begin_bounded`] (`service/clippy.toml` refuses sqlx's own): each counts a `BEGIN`
/// that did not answer, which is what makes [`released_clean`]'s round trip needless otherwise.
pub async fn begin(conn: &mut PgConnection) -> Result<Transaction<'_, Postgres>, sqlx::Error> {
    #[allow(clippy::disallowed_methods)] // the one use: counted by `answered`
    answered(sqlx::Connection::begin(conn)).await
}

/// `BEGIN`s sent that did not answer (their future was dropped at the function limit or when
/// the client went away, or they failed) and whose connection has not yet failed a release
/// check: while there are any, some connection may sit inside a transaction sqlx does not know
/// about, so every released connection is checked ([`outside_transaction`]); while there are
/// none, none can (sqlx rolls back, on release, a transaction whose `BEGIN` answered).
static UNANSWERED_BEGINS: AtomicU64 = AtomicU64::new(0);

/// Runs a `BEGIN`, counting it in [`UNANSWERED_BEGINS`] unless it answered with a transaction.
async fn answered<T>(
    begin: impl Future<Output = Result<T, sqlx::Error>>,
) -> Result<T, sqlx::Error> {
    struct Watch(bool);
    impl Drop for Watch {
        fn drop(&mut self) {
            if !self.0 {
                UNANSWERED_BEGINS.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
    let mut watch = Watch(false);
    let result = begin.await;
    watch.0 = result.is_ok();
    result
}

/// The pools' release test: whether `conn` may be lent again. Only while a `BEGIN` is
/// unanswered ([`UNANSWERED_BEGINS`]) is it asked of the server ([`outside_transaction`]); a
/// connection that fails closes, and settles one. (A `BEGIN` that failed without leaving a
/// transaction is never settled: the checks then go on, as safe as before and as slow.) The
/// check was a round trip on every release, beside sqlx's own ping (a `Sync`, which it always
/// sends): a webhook's one-statement enqueue took three round trips where pgbench's insert takes
/// one. Asked only after an unanswered `BEGIN`, the `EMAIL_SENT` ingest held 3600–4000/s against
/// 2800–3200/s, 0.35–0.47 of pgbench against 0.26–0.31 (`incident-lab ceiling --ingest-rates
/// 2400,3200,…`, AMD EPYC, 2 cores, three runs each, the binaries taking turns).
pub async fn released_clean(conn: &mut PgConnection) -> Result<bool, sqlx::Error> {
    if UNANSWERED_BEGINS.load(Ordering::SeqCst) == 0 {
        return Ok(true);
    }
    let clean = outside_transaction(conn).await?;
    if !clean {
        let _ = UNANSWERED_BEGINS
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
    }
    Ok(clean)
}

/// `BEGIN`s not yet settled by a release check (tests).
pub fn unanswered_begins() -> u64 {
    UNANSWERED_BEGINS.load(Ordering::SeqCst)
}

/// A connection idle for less than this answered sqlx's release ping (and, after an unanswered
/// `BEGIN`, [`released_clean`]'s check) that recently, so it is lent again without a ping of its
/// own.
pub const FRESH: Duration = Duration::from_millis(100);

/// Whether an idle connection may be lent again: pinged first only when it has been idle for
/// [`FRESH`] or longer (a broken one is closed, and another taken or opened). Its release (sqlx's
/// ping on every release) is a round trip to the server already, and under load a connection
/// comes back within milliseconds; sqlx's own ping before every acquire was a second round trip
/// per borrow. `cargo bench --bench webhook` (AMD EPYC, 2 cores), run with this, with the ping,
/// then with this again: the webhook's verify + parse + enqueue 348, 488, 324 µs; a one-row
/// insert 247, 429, 298 µs. A server restarted under a fresh connection breaks it within the
/// restart's window, where new connections fail too.
pub async fn alive_unless_fresh(
    conn: &mut PgConnection,
    meta: sqlx::pool::PoolConnectionMetadata,
) -> Result<bool, sqlx::Error> {
    if meta.idle_for < FRESH {
        return Ok(true);
    }
    Ok(sqlx::Connection::ping(conn).await.is_ok())
}

/// Whether `conn` is outside any transaction on the server — the test a connection passes
/// before the pool lends it again.
///
/// sqlx raises its transaction depth only once `BEGIN` has answered, so a future dropped while
/// its `BEGIN` is in flight (a handler cut at the function limit) leaves the server in a
/// transaction no guard will roll back; sqlx's own release ping passes inside a transaction.
/// Lent again, that connection would make the next borrower's autocommit writes (a webhook's
/// enqueue, answered 202) part of the stray transaction, lost when it is rolled back. A
/// connection that fails this test is closed, which rolls the stray transaction back.
///
/// Sent as a simple query: in its implicit transaction `now()` (the transaction's start) equals
/// `statement_timestamp()`; inside an open transaction it is earlier. (Under the extended
/// protocol the Execute message sets a later statement time, so the two never match.) An
/// error (an aborted transaction, a broken connection) also fails the test.
pub async fn outside_transaction(conn: &mut PgConnection) -> Result<bool, sqlx::Error> {
    use sqlx::Row;
    let rows = sqlx::raw_sql("SELECT now() = statement_timestamp()")
        .fetch_all(&mut *conn)
        .await;
    Ok(match rows {
        Ok(rows) => rows.first().and_then(|r| r.try_get::<bool, _>(0).ok()) == Some(true),
        Err(_) => false,
    })
}
