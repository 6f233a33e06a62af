//! The cron runners: the Unipile health gate (legacy sends and retries forever; fixed skips
//! known-disconnected workspaces and stops on final errors), and the bounded job drain with
//! leases and retries; background work that does not amplify load (a tick within its budget
//! under a slow database, one tick at a time, poison jobs that end, leases that are owned).

mod common;

use std::collections::BTreeSet;

use std::time::Duration;

use common::app::{email_sent, lock_messages, TestApp};
use fake_providers::{ErrorMix, Knobs, Provider};
use inbox_service::Switches;
use serde_json::Value;

const FOLLOWUPS: &str = "/api/cron/followups";
const JOBS: &str = "/api/cron/background-jobs";

fn gate_on() -> Switches {
    Switches {
        unipile_health_gate: true,
        ..Switches::default()
    }
}

/// A service whose follow-up tick takes every due task at once (batching is tested apart);
/// backoffs last far longer than a test, so a backed-off send cannot come due mid-test.
async fn spawn_unbatched(switches: Switches) -> TestApp {
    let app = TestApp::spawn_with(switches, |l| {
        l.cron_batch_limit = 10_000;
        l.provider_backoff = Duration::from_secs(60);
    })
    .await;
    let due = app.scalar("SELECT count(*) FROM followup_tasks").await;
    assert!(due > 100, "the smoke seed has follow-ups due: {due}");
    app
}

async fn disconnected_workspaces(app: &TestApp) -> BTreeSet<i64> {
    let mut conn = app.db().await;
    sqlx::query_scalar("SELECT id FROM workspaces WHERE unipile_status = 'disconnected'")
        .fetch_all(&mut conn)
        .await
        .unwrap()
        .into_iter()
        .collect()
}

/// Makes the fake Unipile agree with the database about who is disconnected.
async fn unipile_knows_disconnections(app: &TestApp) -> BTreeSet<i64> {
    let disconnected = disconnected_workspaces(app).await;
    assert!(
        !disconnected.is_empty(),
        "the seed marks some workspaces disconnected"
    );
    app.set_knobs(
        Provider::Unipile,
        Knobs {
            disconnected_workspaces: disconnected.clone(),
            ..Knobs::default()
        },
    );
    disconnected
}

/// Fixed: not one LinkedIn send reaches a disconnected workspace; each skip is counted.
#[tokio::test]
async fn the_gate_sends_nothing_to_disconnected_workspaces() {
    let app = spawn_unbatched(gate_on()).await;
    let disconnected = unipile_knows_disconnections(&app).await;
    let gated = app
        .scalar(
            "SELECT count(*) FROM followup_tasks f JOIN workspaces w ON w.id = f.workspace_id
             WHERE f.channel = 'linkedin' AND w.unipile_status = 'disconnected'",
        )
        .await;

    let tick = app.cron(FOLLOWUPS).await;

    let counters = app.fakes.counters();
    for ws in &disconnected {
        assert_eq!(
            counters.calls(Provider::Unipile, *ws),
            0,
            "workspace {ws} got a send"
        );
    }
    assert!(gated > 0);
    assert_eq!(tick["skipped_health_gated"].as_i64(), Some(gated));
    assert!(
        counters.total(Provider::Unipile) > 0,
        "connected workspaces still get their sends"
    );
    assert_eq!(
        app.metric("cron_units_total{runner=\"followups\",outcome=\"skipped_health_gated\"}")
            .await,
        gated as f64
    );
    app.shutdown().await;
}

/// Legacy: sends go to disconnected workspaces and are retried on every tick.
#[tokio::test]
async fn without_the_gate_disconnected_workspaces_are_retried_forever() {
    let app = spawn_unbatched(Switches::pre_phase_53()).await;
    let disconnected = unipile_knows_disconnections(&app).await;
    let to_disconnected = |app: &TestApp| {
        let c = app.fakes.counters();
        disconnected
            .iter()
            .map(|ws| c.calls(Provider::Unipile, *ws))
            .sum::<u64>()
    };

    app.cron(FOLLOWUPS).await;
    let after_one = to_disconnected(&app);
    app.cron(FOLLOWUPS).await;
    let after_two = to_disconnected(&app);

    assert!(after_one > 0);
    assert_eq!(
        after_two,
        2 * after_one,
        "every failed send is attempted again"
    );
    assert!(
        app.metric("errors_total{category=\"provider_disconnected\"}")
            .await
            >= (2 * after_one) as f64
    );
    app.shutdown().await;
}

/// Fixed: an invalid recipient is final — failed once, never sent again.
#[tokio::test]
async fn invalid_recipients_are_not_retried() {
    let app = spawn_unbatched(gate_on()).await;
    app.set_knobs(
        Provider::Unipile,
        Knobs {
            errors: ErrorMix {
                invalid_recipient_pct: 100.0,
                ..ErrorMix::default()
            },
            ..Knobs::default()
        },
    );

    let first = app.cron(FOLLOWUPS).await;
    let calls = app.fakes.counters().total(Provider::Unipile);
    let second = app.cron(FOLLOWUPS).await;

    assert!(first["failed"].as_i64().unwrap() > 0);
    assert_eq!(first["retried"], 0);
    assert_eq!(
        app.fakes.counters().total(Provider::Unipile),
        calls,
        "no second attempt"
    );
    assert_eq!(second["failed"], 0);
    app.shutdown().await;
}

/// Fixed: a provider 503 is retried later (backoff), not on the next tick; a disconnection the
/// database did not know yet is remembered on the workspace.
#[tokio::test]
async fn retryable_errors_back_off_and_new_disconnections_are_remembered() {
    let app = spawn_unbatched(gate_on()).await;
    let newly_disconnected: i64 = app
        .scalar(
            "SELECT min(f.workspace_id) FROM followup_tasks f JOIN workspaces w ON w.id = f.workspace_id
             WHERE f.channel = 'linkedin' AND w.unipile_status = 'connected'",
        )
        .await;
    app.set_knobs(
        Provider::Unipile,
        Knobs {
            errors: ErrorMix {
                server_error_pct: 100.0,
                ..ErrorMix::default()
            },
            disconnected_workspaces: BTreeSet::from([newly_disconnected]),
            ..Knobs::default()
        },
    );

    let first = app.cron(FOLLOWUPS).await;
    let calls = app.fakes.counters().total(Provider::Unipile);
    app.cron(FOLLOWUPS).await;

    assert!(first["retried"].as_i64().unwrap() > 0, "{first}");
    assert_eq!(
        app.fakes.counters().total(Provider::Unipile),
        calls,
        "backed-off sends are not due yet"
    );
    assert_eq!(
        app.scalar("SELECT count(*) FROM followup_tasks WHERE status = 'pending' AND attempts = 1 AND next_attempt_at > now()").await,
        first["retried"].as_i64().unwrap()
    );
    let mut conn = app.db().await;
    let status: String = sqlx::query_scalar("SELECT unipile_status FROM workspaces WHERE id = $1")
        .bind(newly_disconnected)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(status, "disconnected");
    app.shutdown().await;
}

/// A tick handles at most the batch limit and says it stopped with work left.
#[tokio::test]
async fn a_background_jobs_tick_is_bounded_by_its_batch_limit() {
    let app = TestApp::spawn_with(Switches::all_fixed(), |l| l.cron_batch_limit = 10).await;
    for i in 0..25 {
        let r = app
            .post_webhook(&email_sent(
                &format!("evt-batch-{i}"),
                1 + i % 5,
                &format!("l{i}@example.test"),
            ))
            .await;
        assert_eq!(r.status(), 202);
    }

    let tick = app.cron(JOBS).await;

    assert_eq!(tick["processed"], 10);
    assert_eq!(tick["budget_exhausted"], true);
    assert_eq!(
        app.scalar("SELECT count(*) FROM background_jobs WHERE status = 'queued'")
            .await,
        15
    );
    assert_eq!(app.metric("job_queue_depth{status=\"queued\"}").await, 15.0);
    app.cron(JOBS).await;
    app.cron(JOBS).await;
    assert_eq!(
        app.scalar(
            "SELECT count(*) FROM background_jobs WHERE kind = 'email_sent' AND status = 'done'"
        )
        .await,
        25
    );
    // Each applied event's GHL sync outbox row, settled by the inline call.
    assert_eq!(
        app.scalar(
            "SELECT count(*) FROM background_jobs WHERE kind = 'ghl_sync' AND status = 'done'"
        )
        .await,
        25
    );
    assert_eq!(
        app.scalar("SELECT count(*) FROM messages WHERE provider_event_id LIKE 'evt-batch-%'")
            .await,
        25
    );
    app.shutdown().await;
}

/// Jobs held by a worker that died are picked up once their lease expires; live leases are not.
#[tokio::test]
async fn jobs_of_a_crashed_worker_are_claimed_again_after_the_lease() {
    let app = TestApp::spawn(Switches::all_fixed()).await;
    for i in 0..4 {
        app.post_webhook(&email_sent(
            &format!("evt-lease-{i}"),
            2,
            &format!("m{i}@example.test"),
        ))
        .await;
    }
    let mut conn = app.db().await;
    sqlx::query("UPDATE background_jobs SET status = 'running', attempts = 1, locked_until = now() - interval '1 second' WHERE dedupe_key IN ('email:EMAIL_SENT:evt-lease-0', 'email:EMAIL_SENT:evt-lease-1')")
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query("UPDATE background_jobs SET status = 'running', attempts = 1, locked_until = now() + interval '1 hour' WHERE dedupe_key = 'email:EMAIL_SENT:evt-lease-2'")
        .execute(&mut conn)
        .await
        .unwrap();

    let tick = app.cron(JOBS).await;

    assert_eq!(
        tick["processed"], 3,
        "two expired leases and one queued job: {tick}"
    );
    assert_eq!(app.scalar("SELECT count(*) FROM background_jobs WHERE dedupe_key = 'email:EMAIL_SENT:evt-lease-2' AND status = 'running'").await, 1);
    app.shutdown().await;
}

/// A job whose effects fail is retried with backoff, then failed for good at the attempt cap.
#[tokio::test]
async fn failing_jobs_are_retried_then_failed() {
    let app = TestApp::spawn_with(Switches::all_fixed(), |l| l.max_attempts = 2).await;
    let mut conn = app.db().await;
    // Valid, for a workspace that does not exist: the effects fail on the foreign key.
    let payload = email_sent("evt-nowhere", 999_999, "ann@example.test");
    sqlx::query("INSERT INTO background_jobs (kind, dedupe_key, payload) VALUES ('email_sent', 'nowhere', $1)")
        .bind(&payload)
        .execute(&mut conn)
        .await
        .unwrap();

    let first = app.cron(JOBS).await;
    sqlx::query("UPDATE background_jobs SET run_after = now() WHERE dedupe_key = 'nowhere'")
        .execute(&mut conn)
        .await
        .unwrap();
    let second = app.cron(JOBS).await;

    assert_eq!(
        (first["retried"].as_i64(), first["failed"].as_i64()),
        (Some(1), Some(0))
    );
    assert_eq!(
        (second["retried"].as_i64(), second["failed"].as_i64()),
        (Some(0), Some(1))
    );
    assert_eq!(app.scalar("SELECT count(*) FROM background_jobs WHERE status = 'failed' AND last_error LIKE '%999999%'").await, 1);
    app.shutdown().await;
}

/// A job that can never apply (a malformed payload) fails on its first attempt, with the
/// field named: retrying it would only load the database.
#[tokio::test]
async fn a_poison_job_fails_at_once() {
    let app = TestApp::spawn_with(Switches::all_fixed(), |l| l.max_attempts = 5).await;
    let mut conn = app.db().await;
    sqlx::query("INSERT INTO background_jobs (kind, dedupe_key, payload) VALUES ('email_sent', 'broken', '{}')")
        .execute(&mut conn)
        .await
        .unwrap();

    let tick = app.cron(JOBS).await;

    assert_eq!(
        (tick["retried"].as_i64(), tick["failed"].as_i64()),
        (Some(0), Some(1))
    );
    assert_eq!(app.scalar("SELECT count(*) FROM background_jobs WHERE status = 'failed' AND last_error LIKE 'poison job: %event_id%'").await, 1);
    app.shutdown().await;
}

/// Cron routes refuse callers without the secret.
#[tokio::test]
async fn cron_routes_need_the_secret() {
    let app = TestApp::spawn(Switches::default()).await;
    for path in [JOBS, FOLLOWUPS] {
        let none = app
            .http
            .get(format!("{}{path}", app.base))
            .send()
            .await
            .unwrap();
        let wrong = app
            .http
            .get(format!("{}{path}", app.base))
            .bearer_auth("nope")
            .send()
            .await
            .unwrap();
        assert_eq!(none.status(), 401, "{path}");
        assert_eq!(wrong.status(), 401, "{path}");
    }
    assert_eq!(
        app.scalar("SELECT count(*) FROM followup_tasks WHERE status <> 'pending'")
            .await,
        0
    );
    app.shutdown().await;
}

/// The counts refresh of a background-jobs tick stays within the tick's budget when the
/// database is slow (a held lock): each query gets only the time left. Unbounded, ten stale
/// scopes would take ten times the query limit.
#[tokio::test]
async fn a_tick_stays_within_its_budget_on_a_slow_database() {
    let app = TestApp::spawn_with(Switches::all_fixed(), |l| {
        l.cron_time_budget = Duration::from_millis(1000);
        l.counts_query_timeout = Duration::from_secs(5);
        l.counts_cache_ttl = Duration::ZERO;
    })
    .await;
    for ws in 1..=6 {
        let r = app
            .post_action(
                "/api/actions/inbox-counts",
                Some(&TestApp::signed_in(&[ws])),
                serde_json::json!({}),
            )
            .await;
        assert_eq!(r.status(), 200);
    }
    assert_eq!(
        app.scalar("SELECT count(*) FROM inbox_counts_cache").await,
        6
    );
    let mut locker = app.db().await;
    let lock = lock_messages(&mut locker).await;

    let tick = app.cron(JOBS).await;
    lock.rollback().await.unwrap();

    assert_eq!(tick["counts_refreshed"], 0, "{tick}");
    assert_eq!(tick["budget_exhausted"], true, "{tick}");
    // Every wait inside the tick ends by its budget (nowhere near 6 × 5 s).
    let elapsed = tick["elapsed_ms"].as_u64().unwrap();
    assert!(elapsed <= 1_000, "{elapsed} ms for a 1 s budget: {tick}");
    assert!(
        app.metric("cron_tick_max_seconds{runner=\"background_jobs\"}")
            .await
            <= 1.0
    );
    app.shutdown().await;
}

/// A full pool (the legacy burst) cannot stretch a tick either: waiting for a connection is
/// bounded by the budget, and a tick that got none did nothing and held nothing.
#[tokio::test]
async fn a_tick_stays_within_its_budget_when_the_pool_is_full() {
    let app = TestApp::spawn_with(Switches::all_fixed(), |l| {
        l.cron_time_budget = Duration::from_millis(800);
        l.acquire_timeout = Duration::from_secs(30);
    })
    .await;
    for i in 0..12 {
        let r = app
            .post_webhook(&email_sent(
                &format!("evt-full-{i}"),
                1,
                &format!("f{i}@example.test"),
            ))
            .await;
        assert_eq!(r.status(), 202);
    }
    let mut held = Vec::new();
    for _ in 0..app.state.config.limits.pool_max {
        held.push(app.state.pool.acquire().await.unwrap());
    }

    for cron in [JOBS, FOLLOWUPS] {
        let tick = app.cron(cron).await;
        assert_eq!(tick["budget_exhausted"], true, "{cron}: {tick}");
        assert_eq!(tick["processed"], 0, "{cron}: {tick}");
        let elapsed = tick["elapsed_ms"].as_u64().unwrap();
        assert!(elapsed <= 800, "{cron}: {elapsed} ms for a 0.8 s budget");
    }
    assert_eq!(app.metric("cron_connections_max").await, 0.0);
    drop(held);

    // With connections to be had, the same tick does the work, holding at most one round's
    // worth of them at a time (one per job running, and none left over).
    let tick = app.cron(JOBS).await;
    assert_eq!(tick["processed"], 12, "{tick}");
    let most = app.metric("cron_connections_max").await;
    let concurrency = f64::from(app.state.config.limits.worker_concurrency);
    assert!(
        (1.0..=concurrency).contains(&most),
        "{most} connections held at once"
    );
    assert_eq!(app.metric("cron_connections").await, 0.0);
    app.shutdown().await;
}

/// A new lead of workspace 1.
async fn add_lead(conn: &mut sqlx::PgConnection, email: &str) {
    sqlx::query(
        "INSERT INTO leads (workspace_id, email, first_name, status) VALUES (1, $1, 'held', 'new')",
    )
    .bind(email)
    .execute(conn)
    .await
    .unwrap();
}

/// Holds workspace 1's lead `email` row-locked until the transaction ends: a job that
/// writes it waits.
async fn hold_lead<'c>(
    conn: &'c mut sqlx::PgConnection,
    email: &str,
) -> sqlx::Transaction<'c, sqlx::Postgres> {
    let mut lock = sqlx::Connection::begin(conn).await.unwrap();
    sqlx::query("SELECT id FROM leads WHERE workspace_id = 1 AND email = $1 FOR UPDATE")
        .bind(email)
        .execute(&mut *lock)
        .await
        .unwrap();
    lock
}

/// A slow job holds up only its own slot: the tick's jobs run as a pipeline, the next claimed
/// when one ends, not in rounds that wait for their slowest. One job's lead is locked for the
/// whole tick; with two slots, the other slot runs every other job meanwhile (in rounds, the
/// first round would wait for the locked job until the budget ran out: one job done).
#[tokio::test]
async fn a_slow_job_does_not_hold_up_the_others() {
    let app = TestApp::spawn_with(Switches::all_fixed(), |l| {
        l.worker_concurrency = 2;
        l.cron_time_budget = Duration::from_millis(2000);
    })
    .await;
    let slow = "slow-lead@example.test";
    let mut conn = app.db().await;
    add_lead(&mut conn, slow).await;
    // Queued first, so it is in the first claim.
    let r = app.post_webhook(&email_sent("evt-slow", 1, slow)).await;
    assert_eq!(r.status(), 202);
    for i in 0..12 {
        let r = app
            .post_webhook(&email_sent(
                &format!("evt-quick-{i}"),
                1 + i % 5,
                &format!("quick{i}@example.test"),
            ))
            .await;
        assert_eq!(r.status(), 202);
    }
    let lock = hold_lead(&mut conn, slow).await;

    let tick = app.cron(JOBS).await;
    lock.rollback().await.unwrap();

    assert_eq!(tick["processed"], 12, "{tick}");
    assert_eq!(tick["budget_exhausted"], true, "{tick}");
    let most = app.metric("cron_connections_max").await;
    assert!(
        (1.0..=2.0).contains(&most),
        "{most} connections held at once"
    );
    // The locked job was given back, and runs once the lock is gone.
    let tick = app.cron(JOBS).await;
    assert_eq!(tick["processed"], 1, "{tick}");
    assert_eq!(
        app.scalar("SELECT count(*) FROM messages WHERE provider_event_id = 'evt-slow'")
            .await,
        1
    );
    app.shutdown().await;
}

/// Two claims run at once, each with its share of the slots: while one claim's batch waits
/// (its lead is being inserted by another transaction that has not committed), the other
/// claims' jobs are applied. One claim at a time, the tick stood behind the waiting batch and
/// nothing was done until it went on.
#[tokio::test]
async fn a_waiting_batch_does_not_hold_up_the_next_claim() {
    let app = TestApp::spawn_with(Switches::all_fixed(), |l| {
        l.worker_concurrency = 4;
        l.cron_time_budget = Duration::from_secs(20);
    })
    .await;
    let held = "being-inserted@example.test";
    let events: Vec<(String, String)> = std::iter::once(("evt-wait-held".into(), held.into()))
        .chain((0..7).map(|i| (format!("evt-next-{i}"), format!("next{i}@example.test"))))
        .collect();
    // In id order, the held one first: it is in the first claim.
    for (event, email) in &events {
        let r = app.post_webhook(&email_sent(event, 1, email)).await;
        assert_eq!(r.status(), 202);
    }
    let mut holder = app.db().await;
    let mut lock = sqlx::Connection::begin(&mut holder).await.unwrap();
    sqlx::query(
        "INSERT INTO leads (workspace_id, email, first_name, status) VALUES (1, $1, 'held', 'new')",
    )
    .bind(held)
    .execute(&mut *lock)
    .await
    .unwrap();

    let tick = app
        .http
        .get(format!("{}{JOBS}", app.base))
        .bearer_auth(common::app::CRON_SECRET)
        .send();
    let (answer, done_meanwhile) = tokio::join!(tick, async {
        let mut conn = app.db().await;
        let until = std::time::Instant::now() + Duration::from_secs(5);
        let done = loop {
            let done: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM background_jobs
                 WHERE status = 'done' AND payload->>'event_id' LIKE 'evt-next-%'",
            )
            .fetch_one(&mut conn)
            .await
            .unwrap();
            if done > 0 || std::time::Instant::now() > until {
                break done;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM background_jobs
             WHERE status = 'running' AND payload->>'event_id' = 'evt-wait-held'",
        )
        .fetch_one(&mut conn)
        .await
        .unwrap();
        lock.rollback().await.unwrap();
        (done, waiting)
    });
    let (done, waiting) = done_meanwhile;
    assert_eq!(waiting, 1, "the held job's batch was waiting");
    assert!(
        done > 0,
        "no other claim's job was applied while a batch waited"
    );

    let tick: Value = answer.unwrap().json().await.unwrap();
    assert_eq!(tick["processed"], 8, "{tick}");
    assert_eq!(
        app.scalar(
            "SELECT count(DISTINCT provider_event_id) FROM messages
             WHERE provider_event_id LIKE 'evt-wait-%' OR provider_event_id LIKE 'evt-next-%'"
        )
        .await,
        8
    );
    assert_eq!(
        app.scalar(
            "SELECT count(*) FROM messages
             WHERE provider_event_id LIKE 'evt-wait-%' OR provider_event_id LIKE 'evt-next-%'"
        )
        .await,
        8,
        "each event applied once"
    );
    app.shutdown().await;
}

/// A claim that fails (not for lack of time) ends the tick like a job's error does: no more
/// claims, but the jobs already running finish and are marked before the error is answered
/// (returning at once dropped them mid-effect: their leases had to expire before they ran
/// again). One job's lead is locked while the tick runs; the next claim fails on a trigger.
#[tokio::test]
async fn a_failed_claim_lets_the_running_jobs_finish() {
    let app = TestApp::spawn_with(Switches::all_fixed(), |l| {
        l.worker_concurrency = 2;
        l.cron_time_budget = Duration::from_millis(8000);
    })
    .await;
    let slow = "held-lead@example.test";
    let mut conn = app.db().await;
    add_lead(&mut conn, slow).await;
    for (event, email) in [
        ("evt-held", slow),
        ("evt-quick", "quick@example.test"),
        ("evt-unclaimable", "never@example.test"),
    ] {
        let r = app.post_webhook(&email_sent(event, 1, email)).await;
        assert_eq!(r.status(), 202);
    }
    // The third job cannot be claimed: its claim's UPDATE raises.
    sqlx::raw_sql(
        "CREATE FUNCTION refuse_claim() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN RAISE EXCEPTION 'claim refused (test)'; END $$;
         CREATE TRIGGER refuse_claim BEFORE UPDATE ON background_jobs FOR EACH ROW
         WHEN (OLD.status = 'queued' AND NEW.status = 'running'
               AND OLD.payload->>'event_id' = 'evt-unclaimable')
         EXECUTE FUNCTION refuse_claim();",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let lock = hold_lead(&mut conn, slow).await;

    let tick = app
        .http
        .get(format!("{}{JOBS}", app.base))
        .bearer_auth(common::app::CRON_SECRET)
        .send();
    let (answer, ()) = tokio::join!(tick, async {
        // The quick job ends and the failing claim comes while the held job waits.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        lock.rollback().await.unwrap();
    });
    let answer = answer.unwrap();
    assert!(answer.status().is_server_error(), "{}", answer.status());

    let status = |event: &'static str| {
        sqlx::query_scalar::<_, String>(
            "SELECT status FROM background_jobs WHERE payload->>'event_id' = $1",
        )
        .bind(event)
    };
    let mut conn = app.db().await;
    for (event, want) in [
        ("evt-held", "done"),
        ("evt-quick", "done"),
        ("evt-unclaimable", "queued"),
    ] {
        let got = status(event).fetch_one(&mut conn).await.unwrap();
        assert_eq!(got, want, "{event}");
    }
    assert_eq!(
        app.scalar("SELECT count(*) FROM messages WHERE provider_event_id = 'evt-held'")
            .await,
        1
    );
    app.shutdown().await;
}

/// A queue as a drain leaves it: 20 000 done jobs ahead of 2 000 queued ones in id order, and
/// `more` (statements run before the table's statistics are taken).
async fn a_drain_under_way(conn: &mut sqlx::PgConnection, more: &str) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "INSERT INTO background_jobs (kind, dedupe_key, payload, status, finished_at)
         SELECT 'email_sent', 'old:' || g, '{{}}', 'done', now() FROM generate_series(1, 20000) g;
         INSERT INTO background_jobs (kind, dedupe_key, payload)
         SELECT 'email_sent', 'new:' || g, '{{}}' FROM generate_series(1, 2000) g;
         {more}
         ANALYZE background_jobs;"
    )))
    .execute(conn)
    .await
    .unwrap();
}

/// A claim reads the live jobs, not the finished ones the table keeps: with 20 000 done jobs
/// ahead of 2 000 queued ones in id order (a drain under way), the claim's plan filters out
/// only a handful of rows (walking the primary key, it stepped over every done job first:
/// 62 ms a claim at 200 000).
#[tokio::test]
async fn a_claim_does_not_walk_the_finished_jobs() {
    let app = TestApp::spawn(Switches::all_fixed()).await;
    let mut conn = app.db().await;
    a_drain_under_way(&mut conn, "").await;
    let mut tx = sqlx::Connection::begin(&mut conn).await.unwrap();
    let plan: Value = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "EXPLAIN (ANALYZE, FORMAT JSON) {}",
        inbox_service::domain::jobs::CLAIM_SQL
    )))
    .bind(10i64)
    .bind(60.0f64)
    .bind(7i64)
    .bind(5i32)
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    tx.rollback().await.unwrap();
    let root = &plan[0]["Plan"];
    assert_eq!(root["Actual Rows"], 10, "{plan:#}");
    let filtered = rows_removed(root);
    assert!(
        filtered < 100,
        "the claim stepped over {filtered} rows: {plan:#}"
    );
    app.shutdown().await;
}

/// The rows a plan's nodes read and then filtered out, summed over the plan.
fn rows_removed(node: &Value) -> i64 {
    node["Rows Removed by Filter"].as_i64().unwrap_or(0)
        + node["Plans"]
            .as_array()
            .map_or(0, |plans| plans.iter().map(rows_removed).sum())
}

/// Each tick's first statement, failing the jobs abandoned on their last attempt, reads the
/// running jobs, not the whole table: with 20 000 done and 2 000 queued jobs beside 5 running
/// ones whose last lease ran out, it fails those 5 and filters out a handful of rows. The same
/// statement without `background_jobs_lease_idx` (dropped in a transaction rolled back) reads
/// the queued jobs at least (the whole table, by a sequential scan, on a real queue): the check
/// can fail.
#[tokio::test]
async fn failing_abandoned_jobs_reads_only_the_running_ones() {
    let app = TestApp::spawn(Switches::all_fixed()).await;
    let mut conn = app.db().await;
    a_drain_under_way(
        &mut conn,
        "INSERT INTO background_jobs (kind, dedupe_key, payload, status, attempts, locked_until)
         SELECT 'email_sent', 'dead:' || g, '{}', 'running', 5, now() - interval '1 minute'
         FROM generate_series(1, 5) g;",
    )
    .await;
    async fn plan(conn: &mut sqlx::PgConnection, without_index: bool) -> Value {
        let mut tx = sqlx::Connection::begin(&mut *conn).await.unwrap();
        if without_index {
            sqlx::raw_sql("DROP INDEX background_jobs_lease_idx")
                .execute(&mut *tx)
                .await
                .unwrap();
        }
        let plan: Value = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "EXPLAIN (ANALYZE, FORMAT JSON) {}",
            inbox_service::domain::jobs::FAIL_ABANDONED_SQL
        )))
        .bind(5i32)
        .fetch_one(&mut *tx)
        .await
        .unwrap();
        tx.rollback().await.unwrap();
        plan
    }
    let with = plan(&mut conn, false).await;
    let root = &with[0]["Plan"];
    assert_eq!(root["Plans"][0]["Actual Rows"], 5, "{with:#}");
    let filtered = rows_removed(root);
    assert!(
        filtered < 100,
        "it read {filtered} rows it did not fail: {with:#}"
    );
    let without = plan(&mut conn, true).await;
    let filtered = rows_removed(&without[0]["Plan"]);
    assert!(
        filtered >= 2_000,
        "without the index it reads at least the queued jobs, yet filtered {filtered}: {without:#}"
    );
    app.shutdown().await;
}

/// One tick per cron at a time: a call while a tick runs does nothing and says so.
#[tokio::test]
async fn overlapping_ticks_do_not_multiply_the_work() {
    let app = TestApp::spawn(Switches::all_fixed()).await;
    app.set_knobs(Provider::Ghl, common::app::slow(1500));
    let r = app
        .post_webhook(&email_sent("evt-overlap", 2, "ov@example.test"))
        .await;
    assert_eq!(r.status(), 202);

    let (first, second) = tokio::join!(app.cron(JOBS), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        app.cron(JOBS).await
    });

    assert_eq!(first["processed"], 1, "{first}");
    assert_eq!(first["overlapped"], false);
    assert_eq!(second["overlapped"], true, "{second}");
    assert_eq!(second["processed"], 0);
    // The lease is given back: the next tick runs.
    let third = app.cron(JOBS).await;
    assert_eq!(third["overlapped"], false, "{third}");
    app.shutdown().await;
}

/// A job whose worker dies on every attempt (its lease expires each time) ends: the expired
/// lease counted as an attempt, and at the cap the job is failed, not claimed again.
#[tokio::test]
async fn a_job_that_kills_its_worker_ends_at_the_attempt_cap() {
    let app = TestApp::spawn_with(Switches::all_fixed(), |l| l.max_attempts = 3).await;
    let mut conn = app.db().await;
    let payload = email_sent("evt-poison", 2, "po@example.test");
    sqlx::query(
        "INSERT INTO background_jobs (kind, dedupe_key, payload, status, attempts, locked_until)
         VALUES ('email_sent', 'poison', $1, 'running', 3, now() - interval '1 second')",
    )
    .bind(&payload)
    .execute(&mut conn)
    .await
    .unwrap();

    let tick = app.cron(JOBS).await;

    assert_eq!(tick["abandoned"], 1, "{tick}");
    assert_eq!(tick["processed"], 0, "not claimed a fourth time: {tick}");
    assert_eq!(
        app.scalar("SELECT count(*) FROM background_jobs WHERE dedupe_key = 'poison' AND status = 'failed' AND last_error LIKE 'lease expired%'").await,
        1
    );
    app.shutdown().await;
}

/// Only the worker that holds a job's lease may mark it: once the lease expired and another
/// worker claimed it, the first worker's "done" writes nothing.
#[tokio::test]
async fn a_worker_that_lost_its_lease_cannot_mark_the_job() {
    use inbox_service::domain::jobs;
    let app = TestApp::spawn(Switches::all_fixed()).await;
    let r = app
        .post_webhook(&email_sent("evt-owned", 2, "ow@example.test"))
        .await;
    assert_eq!(r.status(), 202);
    let mut conn = app.db().await;

    let first = jobs::claim(&mut conn, 1, Duration::from_secs(30), 5)
        .await
        .unwrap();
    sqlx::query("UPDATE background_jobs SET locked_until = now() - interval '1 second'")
        .execute(&mut conn)
        .await
        .unwrap();
    let second = jobs::claim(&mut conn, 1, Duration::from_secs(30), 5)
        .await
        .unwrap();

    assert_eq!((first.len(), second.len()), (1, 1));
    assert_eq!(
        second[0].attempts, 2,
        "the expired lease counted as an attempt"
    );
    assert_eq!(jobs::complete(&mut conn, &first[0]).await.unwrap(), 0);
    assert_eq!(jobs::complete(&mut conn, &second[0]).await.unwrap(), 1);
    app.shutdown().await;
}

/// The `EMAIL_SENT`s of one claim are applied together, and each exactly once: two events of
/// one lead count twice on it, a job whose lease another worker took writes nothing, a
/// redelivery whose message exists is done without effects, a job whose lead another
/// transaction holds is left out (not waited for), and each applied event has its ledger slot
/// and its GHL outbox row.
#[tokio::test]
async fn one_claim_applies_its_email_sent_jobs_together_each_once() {
    use inbox_service::domain::{event, events, jobs, ticks::Budget};
    use inbox_service::tally::Tally;
    let app = TestApp::spawn(Switches::all_fixed()).await;
    // A redelivery: its event applied by a tick, then queued again under another key.
    app.post_webhook(&email_sent("evt-set-dup", 2, "dup@example.test"))
        .await;
    app.cron(JOBS).await;
    let mut conn = app.db().await;
    sqlx::query("INSERT INTO background_jobs (kind, dedupe_key, payload) VALUES ('email_sent', 'again', $1)")
        .bind(email_sent("evt-set-dup", 2, "dup@example.test"))
        .execute(&mut conn)
        .await
        .unwrap();
    for (id, ws, email) in [
        ("evt-set-0", 2, "twice@example.test"),
        ("evt-set-1", 2, "twice@example.test"),
        ("evt-set-2", 3, "other@example.test"),
        ("evt-set-stolen", 3, "stolen@example.test"),
        ("evt-set-held", 1, "held-set@example.test"),
    ] {
        let r = app.post_webhook(&email_sent(id, ws, email)).await;
        assert_eq!(r.status(), 202);
    }
    let slots_before = app
        .scalar("SELECT coalesce(sum(offered), 0)::int8 FROM slot_offer_ledger")
        .await;
    // Another transaction holds one lead.
    let mut holder = app.db().await;
    add_lead(&mut holder, "held-set@example.test").await;
    let lock = hold_lead(&mut holder, "held-set@example.test").await;
    let claimed = jobs::claim(&mut conn, 10, Duration::from_secs(30), 5)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 6, "the redelivery and five new events");
    // Another worker takes one job over (its claim's token is no longer this one's).
    sqlx::query("UPDATE background_jobs SET lease_token = lease_token + 1 WHERE dedupe_key = 'email:EMAIL_SENT:evt-set-stolen'")
        .execute(&mut conn)
        .await
        .unwrap();
    let evs: Vec<event::EmailEvent> = claimed
        .iter()
        .map(|j| event::validate(serde_json::from_value(j.payload.clone()).unwrap()).unwrap())
        .collect();
    let batch: Vec<_> = claimed.iter().zip(&evs).collect();

    let tally = Tally::default();
    let applied = events::apply_sent_jobs(
        &app.state,
        &tally,
        &mut conn,
        &batch,
        &Budget::new(Duration::from_secs(10)),
    )
    .await
    .unwrap();
    lock.rollback().await.unwrap();

    let by_event: Vec<(&str, events::JobApplied)> = evs
        .iter()
        .map(|ev| ev.event_id.as_str())
        .zip(applied)
        .collect();
    use events::JobApplied::*;
    assert_eq!(
        by_event,
        [
            ("evt-set-dup", Duplicate),
            ("evt-set-0", Applied),
            ("evt-set-1", Applied),
            ("evt-set-2", Applied),
            ("evt-set-stolen", LeaseLost),
            ("evt-set-held", Busy),
        ]
    );
    assert_eq!(
        app.scalar("SELECT emails_sent::int8 FROM leads WHERE workspace_id = 2 AND email = 'twice@example.test'").await,
        2
    );
    assert_eq!(
        app.scalar("SELECT count(*) FROM messages WHERE provider_event_id LIKE 'evt-set-%'")
            .await,
        4,
        "the redelivery's first message and three new ones"
    );
    assert_eq!(
        app.scalar("SELECT count(*) FROM lead_activities WHERE provider_event_id IN ('evt-set-0', 'evt-set-1', 'evt-set-2')").await,
        3
    );
    assert_eq!(
        app.scalar("SELECT count(*) FROM messages WHERE provider_event_id = 'evt-set-stolen'")
            .await,
        0
    );
    assert_eq!(
        app.scalar("SELECT coalesce(sum(offered), 0)::int8 FROM slot_offer_ledger")
            .await
            - slots_before,
        3
    );
    assert_eq!(
        app.scalar(
            "SELECT count(*) FROM background_jobs WHERE kind = 'ghl_sync' AND status = 'queued'"
        )
        .await,
        3,
        "an outbox row for each applied event"
    );
    assert_eq!(
        app.scalar(
            "SELECT count(*) FROM background_jobs WHERE kind = 'email_sent' AND status = 'done'"
        )
        .await,
        5,
        "the first delivery, the redelivery and the three applied"
    );
    assert_eq!(
        app.scalar("SELECT count(*) FROM background_jobs WHERE dedupe_key = 'email:EMAIL_SENT:evt-set-stolen' AND status = 'running'").await,
        1,
        "the job taken over is left to its new worker"
    );
    assert_eq!(
        app.scalar("SELECT count(*) FROM messages WHERE provider_event_id = 'evt-set-held'")
            .await,
        0
    );
    assert_eq!(
        app.scalar("SELECT count(*) FROM background_jobs WHERE dedupe_key = 'email:EMAIL_SENT:evt-set-held' AND status = 'running'").await,
        1,
        "the job left out of the batch is still the claim's"
    );
    app.shutdown().await;
}

/// When a claim's `EMAIL_SENT`s fail together (one of them for a workspace that does not
/// exist), each job runs on its own: the good ones apply, the bad one alone is retried.
#[tokio::test]
async fn a_batch_that_fails_runs_each_job_on_its_own() {
    let app = TestApp::spawn_with(Switches::all_fixed(), |l| {
        l.worker_concurrency = 8;
        l.provider_backoff = Duration::from_secs(60);
    })
    .await;
    for i in 0..3 {
        let r = app
            .post_webhook(&email_sent(
                &format!("evt-fall-{i}"),
                2,
                &format!("f{i}@example.test"),
            ))
            .await;
        assert_eq!(r.status(), 202);
    }
    let mut conn = app.db().await;
    sqlx::query("INSERT INTO background_jobs (kind, dedupe_key, payload) VALUES ('email_sent', 'nowhere', $1)")
        .bind(email_sent("evt-fall-nowhere", 999_999, "ann@example.test"))
        .execute(&mut conn)
        .await
        .unwrap();

    let tick = app.cron(JOBS).await;

    assert_eq!(
        (tick["processed"].as_i64(), tick["retried"].as_i64()),
        (Some(3), Some(1)),
        "{tick}"
    );
    assert_eq!(
        app.scalar("SELECT count(*) FROM messages WHERE provider_event_id LIKE 'evt-fall-%'")
            .await,
        3
    );
    assert_eq!(app.scalar("SELECT count(*) FROM background_jobs WHERE dedupe_key = 'nowhere' AND status = 'queued' AND last_error LIKE '%999999%'").await, 1);
    app.shutdown().await;
}

/// Of `workspaces`, those with LinkedIn follow-ups due now (the ones a tick can probe).
async fn with_linkedin_due(app: &TestApp, workspaces: BTreeSet<i64>) -> BTreeSet<i64> {
    let mut conn = app.db().await;
    let due: Vec<i64> = sqlx::query_scalar(
        "SELECT DISTINCT workspace_id FROM followup_tasks
         WHERE channel = 'linkedin' AND status = 'pending' AND coalesce(next_attempt_at, due_at) <= now()",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let found: BTreeSet<i64> = workspaces.into_iter().filter(|w| due.contains(w)).collect();
    assert!(
        !found.is_empty(),
        "some disconnected workspace has LinkedIn follow-ups due"
    );
    found
}

/// The gate's rollback: a workspace that reconnects is probed once its status is older than
/// `unipile_recheck` — by the tick itself, follow-ups due or not — re-admitted on success, and
/// sent to again in the same tick: no false skips after that.
#[tokio::test]
async fn a_reconnected_workspace_is_readmitted() {
    let app = TestApp::spawn_with(gate_on(), |l| {
        l.cron_batch_limit = 10_000;
        l.provider_backoff = Duration::from_secs(60);
        l.unipile_recheck = Duration::ZERO;
    })
    .await;
    let all_disconnected = disconnected_workspaces(&app).await;
    let disconnected = with_linkedin_due(&app, all_disconnected.clone()).await;
    let back = *disconnected.iter().next().unwrap();
    // One of them has no follow-up due at all: only the gate's own probe can bring it back.
    let idle = *all_disconnected
        .iter()
        .rev()
        .find(|w| **w != back)
        .expect("two disconnected workspaces in the test data");
    sqlx::query("DELETE FROM followup_tasks WHERE workspace_id = $1")
        .bind(idle)
        .execute(&mut app.db().await)
        .await
        .unwrap();
    // Unipile says every one of them is connected again.
    app.set_knobs(Provider::Unipile, Knobs::default());
    let due_for = |ws: i64| {
        let app = &app;
        async move {
            let mut conn = app.db().await;
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM followup_tasks WHERE workspace_id = $1 AND channel = 'linkedin' AND status = 'pending'",
            )
            .bind(ws)
            .fetch_one(&mut conn)
            .await
            .unwrap()
        }
    };
    let pending_before = due_for(back).await;
    assert!(
        pending_before > 1,
        "workspace {back} has LinkedIn follow-ups due"
    );

    let tick = app.cron(FOLLOWUPS).await;

    assert_eq!(
        tick["readmitted"].as_u64(),
        Some(all_disconnected.len() as u64),
        "every disconnected workspace probed and re-admitted: {tick}"
    );
    assert_eq!(
        tick["skipped_health_gated"], 0,
        "re-admitted in the same tick: {tick}"
    );
    assert!(disconnected_workspaces(&app).await.is_empty());
    assert!(app.fakes.counters().calls(Provider::Unipile, back) >= pending_before as u64);
    assert_eq!(
        app.fakes.counters().calls(Provider::Unipile, idle),
        1,
        "the workspace without follow-ups: its probe only"
    );
    app.shutdown().await;
}

/// Still disconnected: one probe per workspace per tick, the rest skipped, and the status's
/// age reset so the next tick does not probe again before `unipile_recheck`.
#[tokio::test]
async fn a_still_disconnected_workspace_costs_one_probe() {
    let app = TestApp::spawn_with(gate_on(), |l| {
        l.cron_batch_limit = 10_000;
        l.provider_backoff = Duration::from_secs(60);
        l.unipile_recheck = Duration::from_secs(3600);
    })
    .await;
    let disconnected = with_linkedin_due(&app, unipile_knows_disconnections(&app).await).await;
    // Their status is old: make it older than the recheck interval.
    sqlx::query("UPDATE workspaces SET unipile_checked_at = now() - interval '2 hours' WHERE unipile_status = 'disconnected'")
        .execute(&mut app.db().await)
        .await
        .unwrap();

    let first = app.cron(FOLLOWUPS).await;
    let calls: u64 = disconnected
        .iter()
        .map(|ws| app.fakes.counters().calls(Provider::Unipile, *ws))
        .sum();
    assert_eq!(calls, disconnected.len() as u64, "one probe each: {first}");
    assert_eq!(first["readmitted"], 0);
    let second = app.cron(FOLLOWUPS).await;
    let after: u64 = disconnected
        .iter()
        .map(|ws| app.fakes.counters().calls(Provider::Unipile, *ws))
        .sum();
    assert_eq!(
        after, calls,
        "no probe before the recheck interval: {second}"
    );
    app.shutdown().await;
}

/// A GHL sync that fails inline is not lost: the outbox row written with the event's effects
/// makes the call from the queue once GHL answers again — once.
#[tokio::test]
async fn a_failed_ghl_sync_is_made_from_its_outbox_row() {
    let app = TestApp::spawn_with(Switches::all_fixed(), |l| {
        l.provider_backoff = Duration::from_millis(10);
    })
    .await;
    let failing = Knobs {
        errors: ErrorMix {
            server_error_pct: 100.0,
            ..ErrorMix::default()
        },
        ..Knobs::default()
    };
    app.set_knobs(Provider::Ghl, failing);
    let r = app
        .post_webhook(&email_sent("evt-outbox", 2, "ob@example.test"))
        .await;
    assert_eq!(r.status(), 202);
    let synced = |app: &TestApp| {
        let counters = app.fakes.counters();
        counters
            .ok_by_key
            .get(&Provider::Ghl)
            .map(|keys| keys.values().copied().collect::<Vec<_>>())
            .unwrap_or_default()
    };

    let tick = app.cron(JOBS).await;

    assert_eq!(tick["processed"], 1, "the event applied: {tick}");
    let queued =
        "SELECT count(*) FROM background_jobs WHERE kind = 'ghl_sync' AND status = 'queued'";
    assert_eq!(app.scalar(queued).await, 1);
    assert!(synced(&app).is_empty());

    app.set_knobs(Provider::Ghl, Knobs::default());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let tick = app.cron(JOBS).await;

    assert_eq!(tick["processed"], 1, "the sync, from the queue: {tick}");
    assert_eq!(app.scalar(queued).await, 0);
    assert_eq!(synced(&app), vec![1], "one successful call for the event");
    app.shutdown().await;
}

/// A GHL sync made inline whose tick then finds no connection to mark its outbox row done
/// (legacy counts queries hold the pool) is settled after the tick, before the row comes due:
/// the queue does not call GHL a second time.
#[tokio::test]
async fn a_sync_made_but_not_settled_in_its_tick_is_not_made_again() {
    let app = TestApp::spawn_with(Switches::all_fixed(), |l| {
        l.cron_time_budget = Duration::from_millis(2500);
        l.provider_timeout = Duration::from_secs(1);
        l.job_lease = Duration::from_secs(6);
        l.acquire_timeout = Duration::from_secs(30);
    })
    .await;
    let slow = Knobs {
        latency: fake_providers::Latency {
            base_ms: 600,
            ..fake_providers::Latency::default()
        },
        ..Knobs::default()
    };
    app.set_knobs(Provider::Ghl, slow);
    let r = app
        .post_webhook(&email_sent("evt-unsettled", 2, "us@example.test"))
        .await;
    assert_eq!(r.status(), 202);
    let ghl_calls = |app: &TestApp| -> Vec<u64> {
        let counters = app.fakes.counters();
        let keys = counters.ok_by_key.get(&Provider::Ghl).cloned();
        keys.unwrap_or_default().into_values().collect()
    };
    let started = std::time::Instant::now();

    // The tick applies the event, lets its connection go and calls GHL; meanwhile every
    // pooled connection is taken, and kept until the tick has given up on its settle.
    let tick_done = tokio::sync::Notify::new();
    let tick = async {
        let tick = app.cron(JOBS).await;
        tick_done.notify_one();
        tick
    };
    let hold_the_pool = async {
        let applied =
            "SELECT count(*) FROM background_jobs WHERE kind = 'email_sent' AND status = 'done'";
        while app.scalar(applied).await == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut held = Vec::new();
        for _ in 0..app.state.config.limits.pool_max {
            held.push(app.state.pool.acquire().await.unwrap());
        }
        tick_done.notified().await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        drop(held);
    };
    let (tick, ()) = tokio::join!(tick, hold_the_pool);

    assert_eq!(tick["processed"], 1, "{tick}");
    assert_eq!(ghl_calls(&app), vec![1], "the inline call was made");
    let settled =
        "SELECT count(*) FROM background_jobs WHERE kind = 'ghl_sync' AND status = 'done'";
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while app.scalar(settled).await == 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        app.scalar(settled).await,
        1,
        "the outbox row was marked done"
    );
    let route = inbox_service::domain::events::DEFERRED_SETTLE_ROUTE;
    let declared = format!("db_writes_per_request_sum{{route=\"{route}\"}}");
    assert_eq!(app.metric(&declared).await, 1.0, "its write is declared");

    // Past the row's lease (and the first tick's own): nothing is due, nothing called again.
    let past_the_lease = Duration::from_millis(6500).saturating_sub(started.elapsed());
    tokio::time::sleep(past_the_lease).await;
    let tick = app.cron(JOBS).await;
    assert_eq!(tick["overlapped"], false, "{tick}");
    assert_eq!(tick["processed"], 0, "{tick}");
    assert_eq!(ghl_calls(&app), vec![1], "GHL called once for the event");
    app.shutdown().await;
}
