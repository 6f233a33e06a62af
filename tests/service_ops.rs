//! The operator surfaces: `/admin/flags` (flags flip at run time, behind the admin token, and
//! bad input is refused whole) and `/metrics` (pool, requests, per-request work).

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::app::{email_sent, TestApp, ADMIN_TOKEN};
use inbox_service::Switches;
use serde_json::{json, Value};

/// Flags are read and flipped at run time with the admin token; /metrics shows them.
#[tokio::test]
async fn flags_flip_at_run_time_behind_the_admin_token() {
    let app = TestApp::spawn(Switches::default()).await;
    let url = format!("{}/admin/flags", app.base);
    assert_eq!(app.http.get(&url).send().await.unwrap().status(), 401);
    assert_eq!(
        app.http
            .get(&url)
            .bearer_auth("guess")
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        app.metric("feature_flag{name=\"INBOXXIA_EMAIL_SENT_ASYNC\"}")
            .await,
        0.0
    );

    let r = app
        .http
        .put(&url)
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({ "INBOXXIA_EMAIL_SENT_ASYNC": true }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().await.unwrap()["INBOXXIA_EMAIL_SENT_ASYNC"],
        true
    );
    assert_eq!(
        app.metric("feature_flag{name=\"INBOXXIA_EMAIL_SENT_ASYNC\"}")
            .await,
        1.0
    );
    let sent = app
        .post_webhook(&email_sent("evt-flip", 2, "f@example.test"))
        .await;
    assert_eq!(
        sent.status(),
        202,
        "the flip takes effect on the next request"
    );

    for bad in [
        json!({ "INBOXXIA_EMAIL_SENT_ASYNCH": false }),
        json!({ "UNIPILE_HEALTH_GATE": "yes" }),
        json!([1]),
    ] {
        let r = app
            .http
            .put(&url)
            .bearer_auth(ADMIN_TOKEN)
            .json(&bad)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{bad}");
    }
    let now: Value = app
        .http
        .get(&url)
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        now["INBOXXIA_EMAIL_SENT_ASYNC"], true,
        "a refused PUT changes nothing"
    );
    assert_eq!(now["UNIPILE_HEALTH_GATE"], false);
    let names: BTreeSet<String> = now.as_object().unwrap().keys().cloned().collect();
    assert_eq!(names.len(), 8);
    app.shutdown().await;
}

/// /metrics carries pool, request, per-request write and call figures.
#[tokio::test]
async fn metrics_expose_pool_requests_and_per_request_work() {
    let app = TestApp::spawn(Switches::all_fixed()).await;
    app.post_webhook(&email_sent("evt-m", 2, "m@example.test"))
        .await;

    let text = app.get("/metrics", None).await.text().await.unwrap();

    for series in [
        "db_pool_max 10",
        "db_pool_waiters 0",
        "http_request_duration_seconds_count{route=\"POST /api/webhooks/email\",status=\"202\"} 1",
        "db_writes_per_request_sum{route=\"POST /api/webhooks/email\"} 1",
        "external_calls_per_request_sum{route=\"POST /api/webhooks/email\"} 0",
        "job_queue_depth{status=\"queued\"} 1",
        "errors_total{category=\"db_pool_wait\"} 0",
    ] {
        assert!(text.contains(series), "missing {series:?} in\n{text}");
    }
    assert_eq!(app.get("/healthz", None).await.text().await.unwrap(), "ok");
    app.shutdown().await;
}

/// The tests that cut a `BEGIN` or count on none being cut run one at a time: the count of
/// unanswered `BEGIN`s (`inbox_service::db::unanswered_begins`) is the process's.
static BEGINS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A request cut while its `BEGIN` is in flight leaves the server inside a transaction sqlx
/// does not know about; lent again, that connection would swallow the next borrower's
/// autocommit writes (a webhook acknowledged 202, then lost). It must be closed instead.
#[tokio::test]
async fn a_connection_left_in_a_transaction_is_not_lent_again() {
    let _one_at_a_time = BEGINS.lock().await;
    let unanswered = inbox_service::db::unanswered_begins();
    let app = TestApp::spawn_with(Switches::all_fixed(), |l| l.pool_max = 1).await;
    let pool = app.state.pool.clone();

    // A clean connection is lent again as it is.
    let mut conn = pool.acquire().await.unwrap();
    let clean_pid = backend_pid(&mut conn).await;
    drop(conn);
    let mut conn = pool.acquire().await.unwrap();
    assert_eq!(
        backend_pid(&mut conn).await,
        clean_pid,
        "a clean connection was closed"
    );
    drop(conn);

    // The handler's future is dropped at its limit while the `BEGIN` is still running.
    let cut = tokio::time::timeout(Duration::from_millis(100), {
        let pool = pool.clone();
        async move {
            let mut conn = pool.acquire().await.unwrap();
            let begin = sqlx::AssertSqlSafe("BEGIN; SELECT pg_sleep(0.5)");
            let _tx = inbox_service::db::begin_with(&mut conn, begin).await;
            std::future::pending::<()>().await;
        }
    })
    .await;
    assert!(cut.is_err(), "the begin was not cut");

    // The next borrower writes in autocommit: its write is visible at once to another session.
    let mut conn = pool.acquire().await.unwrap();
    let pid = backend_pid(&mut conn).await;
    sqlx::query("INSERT INTO workspaces (id, name) VALUES (9001, 'after a cut begin')")
        .execute(&mut *conn)
        .await
        .unwrap();
    let seen = app
        .scalar("SELECT count(*) FROM workspaces WHERE id = 9001")
        .await;
    drop(conn);
    assert_eq!(seen, 1, "an autocommit write joined a stray transaction");
    assert_ne!(
        pid, clean_pid,
        "the connection left in a transaction was lent again"
    );
    assert_eq!(
        inbox_service::db::unanswered_begins(),
        unanswered,
        "the closed connection did not settle the cut BEGIN"
    );
    app.shutdown().await;
}

/// While no `BEGIN` is unanswered (cut or failed), a released connection is lent again without the release
/// check's round trip (`db::released_clean`): the server's last statement on it is still the
/// borrower's, not the check's.
#[tokio::test]
async fn a_release_asks_the_server_only_after_an_unanswered_begin() {
    let _one_at_a_time = BEGINS.lock().await;
    let app = TestApp::spawn_with(Switches::all_fixed(), |l| l.pool_max = 1).await;
    let pool = app.state.pool.clone();
    assert_eq!(inbox_service::db::unanswered_begins(), 0);
    let last_statement = |pid: i32| {
        let app = &app;
        async move {
            let mut other = app.db().await;
            sqlx::query_scalar::<_, String>("SELECT query FROM pg_stat_activity WHERE pid = $1")
                .bind(pid)
                .fetch_one(&mut other)
                .await
                .unwrap()
        }
    };
    let mut conn = pool.acquire().await.unwrap();
    let pid = backend_pid(&mut conn).await;
    drop(conn);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        last_statement(pid).await,
        "SELECT pg_backend_pid()",
        "a release asked the server with no BEGIN unanswered"
    );

    // A BEGIN that fails counts as unanswered: the next release asks, finds the connection
    // clean (the failed BEGIN left no transaction) and lends it again.
    let mut conn = pool.acquire().await.unwrap();
    let failed = inbox_service::db::begin_with(&mut conn, sqlx::AssertSqlSafe("SELECT 1/0"))
        .await
        .is_err();
    assert!(failed, "a BEGIN that fails answered with a transaction");
    assert_eq!(inbox_service::db::unanswered_begins(), 1);
    drop(conn);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        last_statement(pid).await,
        "SELECT now() = statement_timestamp()",
        "a release after an unanswered BEGIN did not ask the server"
    );
    app.shutdown().await;
}

/// Without sqlx's ping before every borrow, a connection idle for [`FRESH`] or longer is still
/// pinged: one whose server process was ended while it sat idle is closed, not lent broken.
///
/// [`FRESH`]: inbox_service::db::FRESH
#[tokio::test]
async fn a_connection_that_died_while_idle_is_not_lent() {
    let app = TestApp::spawn_with(Switches::all_fixed(), |l| l.pool_max = 1).await;
    let pool = app.state.pool.clone();
    let mut conn = pool.acquire().await.unwrap();
    let pid = backend_pid(&mut conn).await;
    drop(conn);
    // Back in the pool (its release check done), then its server process ended.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut other = app.db().await;
    let ended: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1, 5000)")
        .bind(pid)
        .fetch_one(&mut other)
        .await
        .unwrap();
    assert!(ended, "the idle connection's backend was not ended");
    tokio::time::sleep(inbox_service::db::FRESH + Duration::from_millis(50)).await;

    let mut conn = pool.acquire().await.unwrap();
    let now = sqlx::query_scalar::<_, i32>("SELECT pg_backend_pid()")
        .fetch_one(&mut *conn)
        .await;
    assert!(
        now.as_ref().is_ok_and(|p| *p != pid),
        "a connection whose backend {pid} had ended was lent: {now:?}"
    );
    // Given back before the pool is closed, which waits for it.
    drop(conn);
    app.shutdown().await;
}

async fn backend_pid(conn: &mut sqlx::PgConnection) -> i32 {
    sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(conn)
        .await
        .unwrap()
}

/// The access log (`ACCESS_LOG`, `matrix --access-log`): one line per answered request with
/// the status the client got, and `logs export` turns it into an export the log reader sums
/// up as the same requests, time stretched.
#[tokio::test]
async fn the_access_log_holds_each_answer_and_exports_as_production_would() {
    let app = TestApp::spawn(Switches::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.jsonl");
    app.state
        .set_access_log(inbox_service::access_log::AccessLog::open(&log).unwrap());
    let mut sent = Vec::new();
    for i in 0..3 {
        let r = app
            .post_webhook(&email_sent(&format!("evt-log-{i}"), 2, "l@example.test"))
            .await;
        sent.push(("POST", "/api/webhooks/email", r.status().as_u16()));
    }
    let refused = app.post_webhook_raw(b"{}".to_vec()).await;
    sent.push(("POST", "/api/webhooks/email", refused.status().as_u16()));
    // Signed out, the page redirects to the login page (the client follows): two requests.
    let page = app.get("/", None).await;
    assert_eq!(page.url().path(), "/login");
    sent.push(("GET", "/", 307));
    sent.push(("GET", "/login", page.status().as_u16()));
    assert_eq!(refused.status(), 400, "a refused request is logged too");

    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let logged: Vec<(String, String, u16)> = lines
        .iter()
        .map(|l| {
            (
                l["method"].as_str().unwrap().to_owned(),
                l["path"].as_str().unwrap().to_owned(),
                l["statusCode"].as_u64().unwrap() as u16,
            )
        })
        .collect();
    let want: Vec<(String, String, u16)> = sent
        .iter()
        .map(|(m, p, s)| (m.to_string(), p.to_string(), *s))
        .collect();
    assert_eq!(logged, want);
    for l in &lines {
        assert!(l["durationMs"].as_f64().unwrap() >= 0.0);
        assert!(l["timestamp"].as_u64().unwrap() > 1_700_000_000_000);
        // What a log drain holds, nothing more: no query, no client, no workspace.
        assert_eq!(l.as_object().unwrap().len(), 5, "{l}");
    }
    app.shutdown().await;

    // Stretched ×10 into Vercel's CSV: the same requests, statuses and durations ×10.
    let csv = dir.path().join("export.csv");
    let export_by = |slower: &str| {
        common::incident_lab(&[
            "logs",
            "export",
            log.to_str().unwrap(),
            "--slower",
            slower,
            "--out",
            csv.to_str().unwrap(),
        ])
    };
    let run = export_by("10");
    assert!(run.status.success(), "{}", common::scenarios::text(&run));
    let export = std::fs::read_to_string(&csv).unwrap();
    let rows: Vec<&str> = export.lines().skip(1).collect();
    assert_eq!(rows.len(), lines.len());
    let first = lines
        .iter()
        .map(|l| l["timestamp"].as_f64().unwrap() - l["durationMs"].as_f64().unwrap())
        .fold(f64::INFINITY, f64::min);
    // (start, duration, status) of each request, stretched by hand and as exported.
    let mut expected: Vec<(f64, f64, String)> = lines
        .iter()
        .map(|l| {
            let d = l["durationMs"].as_f64().unwrap();
            let start = l["timestamp"].as_f64().unwrap() - d;
            (
                first + 10.0 * (start - first),
                10.0 * d,
                l["statusCode"].to_string(),
            )
        })
        .collect();
    let mut exported: Vec<(f64, f64, String)> = rows
        .iter()
        .map(|row| {
            let f: Vec<&str> = row.split(',').collect();
            let (end, d): (f64, f64) = (f[1].parse().unwrap(), f[6].parse().unwrap());
            (end - d, d, f[4].to_owned())
        })
        .collect();
    // By status, then start: two requests can start within the rounding of a millisecond.
    let order =
        |a: &(f64, f64, String), b: &(f64, f64, String)| a.2.cmp(&b.2).then(a.0.total_cmp(&b.0));
    expected.sort_by(order);
    exported.sort_by(order);
    for (e, x) in expected.iter().zip(&exported) {
        assert!(
            (e.0 - x.0).abs() <= 2.0 && (e.1 - x.1).abs() <= 1.0,
            "{e:?} vs {x:?}"
        );
        assert_eq!(e.2, x.2);
    }
    // A factor that is not one is refused, naming it.
    let bad = export_by("0");
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        common::scenarios::text(&bad).contains("--slower 0"),
        "{}",
        common::scenarios::text(&bad)
    );
}
