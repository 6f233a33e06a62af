//! The sidebar counts under a forced slow query (another session holds an ACCESS EXCLUSIVE
//! lock on `messages`): legacy fails with a statement timeout; fixed answers 200 with the
//! cached counts marked stale. And the inbox page built on them.

mod common;

use std::time::Duration;

use common::app::{lock_messages, TestApp};
use common::logs::Captured;
use inbox_service::Switches;
use serde_json::{json, Value};

const COUNTS: &str = "/api/actions/inbox-counts";

fn counts_on() -> Switches {
    Switches {
        counts_cache_fallback: true,
        ..Switches::default()
    }
}

async fn counts(app: &TestApp, workspaces: &[i64]) -> (u16, Value) {
    let r = app
        .post_action(COUNTS, Some(&TestApp::signed_in(workspaces)), json!({}))
        .await;
    (r.status().as_u16(), r.json().await.unwrap())
}

/// Legacy: the live aggregation runs into the statement timeout and the caller gets a 500,
/// counted as `db_timeout`.
#[tokio::test]
async fn legacy_counts_fail_when_the_query_is_slow() {
    let app = TestApp::spawn_with(Switches::pre_phase_53(), |l| {
        l.statement_timeout = Some(Duration::from_millis(300))
    })
    .await;
    let (status, before) = counts(&app, &[1]).await;
    assert_eq!(status, 200, "{before}");

    let mut locker = app.db().await;
    let lock = lock_messages(&mut locker).await;
    let (status, body) = counts(&app, &[1]).await;
    let page = app.get("/", Some(&TestApp::signed_in(&[1]))).await.status();
    lock.rollback().await.unwrap();

    assert_eq!(status, 500, "{body}");
    assert_eq!(
        body["error"], "internal server error",
        "no internals leak: {body}"
    );
    assert_eq!(page, 500);
    assert!(app.metric("errors_total{category=\"db_timeout\"}").await >= 2.0);
    app.shutdown().await;
}

/// Fixed: the same fault gives 200 with the last counts, `stale: true` and their `computed_at`.
#[tokio::test]
async fn fixed_counts_fall_back_to_stale_cache_when_the_query_is_slow() {
    let app = TestApp::spawn_with(counts_on(), |l| {
        l.counts_query_timeout = Duration::from_millis(300);
        l.counts_cache_ttl = Duration::ZERO;
    })
    .await;
    let (status, fresh) = counts(&app, &[1, 2]).await;
    assert_eq!(status, 200);
    assert_eq!(fresh["stale"], false);
    assert!(fresh["counts"]["all"].as_i64().unwrap() > 0);
    assert_eq!(
        app.scalar("SELECT count(*) FROM inbox_counts_cache").await,
        1
    );

    let (logs, _guard) = Captured::start();
    let mut locker = app.db().await;
    let lock = lock_messages(&mut locker).await;
    let (status, stale) = counts(&app, &[1, 2]).await;
    let (other_status, never_computed) = counts(&app, &[3]).await;
    let page = app.get("/", Some(&TestApp::signed_in(&[1, 2]))).await;
    let page_status = page.status();
    let page_body: Value = page.json().await.unwrap();
    lock.rollback().await.unwrap();

    assert_eq!(status, 200);
    assert_eq!(stale["stale"], true);
    assert_eq!(stale["counts"], fresh["counts"]);
    assert_eq!(stale["computed_at"], fresh["computed_at"]);
    assert_eq!(other_status, 200, "no cache yet is still not an error");
    assert_eq!(never_computed["stale"], true);
    assert_eq!(never_computed["counts"], Value::Null);
    assert_eq!(page_status, 200);
    assert_eq!(page_body["counts"]["stale"], true);
    assert_eq!(page_body["conversations"].as_array().unwrap().len(), 20);
    assert!(app.metric("errors_total{category=\"db_timeout\"}").await >= 3.0);
    // The fallback is logged with the scope key and the category, never the workspace ids.
    let fell_back = logs.at("INFO", "live counts failed; serving cached counts");
    assert!(!fell_back.is_empty(), "{}", logs.text());
    for entry in &fell_back {
        let fields = &entry["fields"];
        assert!(
            fields["scope_key"].as_str().is_some_and(|k| !k.is_empty()),
            "{entry}"
        );
        assert_eq!(fields["category"], "db_timeout", "{entry}");
        assert!(
            fields.get("workspaces").is_none(),
            "raw workspace ids logged: {entry}"
        );
    }
    assert!(
        fell_back
            .iter()
            .any(|e| e["fields"]["scope_key"] == stale["scope_key"]),
        "the [1, 2] scope's fallback is logged under its key"
    );
    app.shutdown().await;
}

/// Within the cache TTL, counts come from the cache: no live query, not stale.
#[tokio::test]
async fn fresh_cached_counts_are_served_without_a_live_query() {
    let app = TestApp::spawn_with(counts_on(), |l| {
        l.counts_query_timeout = Duration::from_millis(300)
    })
    .await;
    let (_, first) = counts(&app, &[4]).await;
    let mut locker = app.db().await;
    let lock = lock_messages(&mut locker).await;

    let (status, second) = counts(&app, &[4]).await;
    lock.rollback().await.unwrap();

    assert_eq!(status, 200);
    assert_eq!(
        second["stale"], false,
        "a fresh cache hit is not a fallback"
    );
    assert_eq!(second["computed_at"], first["computed_at"]);
    assert_eq!(
        app.metric("errors_total{category=\"db_timeout\"}").await,
        0.0,
        "no query ran into the lock"
    );
    app.shutdown().await;
}

/// Sessions waiting on a lock: the counts queries stuck behind `lock_messages`.
async fn lock_waiters(app: &TestApp) -> i64 {
    app.scalar("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")
        .await
}

async fn until_a_query_waits(app: &TestApp) {
    for _ in 0..200 {
        if lock_waiters(app).await >= 1 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("no counts query came to wait on the lock");
}

/// One live query per scope at a time. Requests for a scope whose counts are being computed
/// wait for that computation when nothing is known yet, and answer with its result; when
/// counts are known, they answer those at once (stale) instead of queueing a second query.
#[tokio::test]
async fn requests_for_a_scope_share_its_live_query() {
    let app = TestApp::spawn_with(counts_on(), |l| {
        l.counts_query_timeout = Duration::from_secs(5);
        l.counts_cache_ttl = Duration::ZERO;
    })
    .await;
    let mut locker = app.db().await;

    // A cold scope, four requests at once while the query is held up.
    let lock = lock_messages(&mut locker).await;
    let release = async {
        until_a_query_waits(&app).await;
        // Time for the other three to arrive behind it.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let waiting = lock_waiters(&app).await;
        lock.rollback().await.unwrap();
        waiting
    };
    let (waiting, a, b, c, d) = tokio::join!(
        release,
        counts(&app, &[5]),
        counts(&app, &[5]),
        counts(&app, &[5]),
        counts(&app, &[5])
    );
    assert_eq!(waiting, 1, "one live query for the four requests");
    let answers = [a, b, c, d];
    let live: Vec<&Value> = answers
        .iter()
        .map(|(status, body)| {
            assert_eq!(*status, 200, "{body}");
            body
        })
        .filter(|body| body["source"] == "live")
        .collect();
    assert_eq!(live.len(), 1, "{answers:?}");
    for (_, body) in &answers {
        assert_eq!(body["counts"], live[0]["counts"], "{body}");
        assert_eq!(body["computed_at"], live[0]["computed_at"], "{body}");
    }

    // Known counts: a request behind a running query answers them at once.
    let known = live[0]["computed_at"].clone();
    let lock = lock_messages(&mut locker).await;
    let second = async {
        until_a_query_waits(&app).await;
        let answer = counts(&app, &[5]).await;
        let still_waiting = lock_waiters(&app).await;
        lock.rollback().await.unwrap();
        (answer, still_waiting)
    };
    let ((_, first), ((status, at_once), still_waiting)) = tokio::join!(counts(&app, &[5]), second);
    assert_eq!(
        still_waiting, 1,
        "answered while the first query still waited"
    );
    assert_eq!(status, 200);
    assert_eq!(at_once["source"], "fallback", "{at_once}");
    assert_eq!(at_once["stale"], true);
    assert_eq!(at_once["computed_at"], known);
    assert_eq!(first["source"], "live", "{first}");
    assert_ne!(first["computed_at"], known);
    assert_eq!(
        app.metric("errors_total{category=\"db_timeout\"}").await,
        0.0,
        "no second query ran into its bound"
    );
    app.shutdown().await;
}

/// A counts call slower than 1 s is logged with its scopeKey and whether it fell back.
#[tokio::test]
async fn slow_counts_are_logged_with_the_scope_key_only() {
    let app = TestApp::spawn_with(counts_on(), |l| {
        l.counts_query_timeout = Duration::from_millis(1200);
        l.counts_cache_ttl = Duration::ZERO;
    })
    .await;
    let (logs, _guard) = Captured::start();
    let mut locker = app.db().await;
    let lock = lock_messages(&mut locker).await;

    let (status, body) = counts(&app, &[17]).await;
    lock.rollback().await.unwrap();

    assert_eq!(status, 200);
    let slow = logs.at("WARN", "slow inbox counts");
    assert_eq!(slow.len(), 1, "{}", logs.text());
    assert_eq!(slow[0]["fields"]["scope_key"], body["scope_key"]);
    assert_eq!(slow[0]["fields"]["fallback_used"], true);
    // Only these fields, none of which can hold the workspace ids (the timestamp may well
    // contain "17", so the line is not searched as text).
    let fields: Vec<&str> = slow[0]["fields"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        fields,
        ["elapsed_ms", "fallback_used", "message", "scope_key"],
        "{}",
        slow[0]
    );
    assert!(
        slow[0]["fields"]["scope_key"]
            .as_str()
            .unwrap()
            .starts_with("scope_"),
        "the scope key is a hash of the ids: {}",
        slow[0]
    );
    app.shutdown().await;
}

/// The inbox page needs a session: without one, a redirect to /login (and nothing else).
#[tokio::test]
async fn the_inbox_page_redirects_without_a_session() {
    let app = TestApp::spawn(Switches::default()).await;
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    let r = no_redirects
        .get(format!("{}/", app.base))
        .send()
        .await
        .unwrap();

    assert_eq!(r.status(), 307);
    assert_eq!(r.headers()["location"], "/login");
    app.shutdown().await;
}

/// An expired access token with a valid refresh token is refreshed, not refused.
#[tokio::test]
async fn an_expired_session_is_refreshed_from_the_refresh_token() {
    let app = TestApp::spawn(Switches::default()).await;
    let refresh = incident_wire::mint_refresh(common::app::SESSION_SECRET, "u9", &[5]);
    let cookie = format!("{}={refresh}", incident_wire::REFRESH_COOKIE);

    let r = app.get("/", Some(&cookie)).await;

    assert_eq!(r.status(), 200);
    let set_cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        set_cookie.starts_with(incident_wire::ACCESS_COOKIE),
        "{set_cookie}"
    );
    app.shutdown().await;
}

/// A bounded transaction (the fixed counts' live query, a worker's job) takes the lower of its
/// limit and the database's own `statement_timeout`, never more, and only for itself.
#[tokio::test]
async fn a_bounded_transaction_never_raises_the_database_timeout() {
    let app = TestApp::spawn(counts_on()).await;
    let mut conn = app.db().await;
    async fn shown(conn: &mut sqlx::PgConnection) -> String {
        sqlx::query_scalar("SHOW statement_timeout")
            .fetch_one(conn)
            .await
            .unwrap()
    }
    for (session, limit, within) in [
        ("0", Duration::from_millis(1500), "1500ms"),
        ("200ms", Duration::from_secs(5), "200ms"),
        ("8s", Duration::from_millis(40), "40ms"),
    ] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "SET statement_timeout = '{session}'"
        )))
        .execute(&mut conn)
        .await
        .unwrap();
        let before = shown(&mut conn).await;
        let mut tx = inbox_service::db::begin_bounded(&mut conn, limit)
            .await
            .unwrap();
        assert_eq!(
            shown(&mut tx).await,
            within,
            "session {session}, limit {limit:?}"
        );
        tx.commit().await.unwrap();
        assert_eq!(shown(&mut conn).await, before, "after the transaction");
    }
    // And it binds: a statement past the limit is cancelled (57014), the transaction with it.
    let mut tx = inbox_service::db::begin_bounded(&mut conn, Duration::from_millis(50))
        .await
        .unwrap();
    let err = sqlx::query("SELECT pg_sleep(2)")
        .execute(&mut *tx)
        .await
        .unwrap_err();
    assert_eq!(
        err.as_database_error().and_then(|e| e.code()).as_deref(),
        Some("57014"),
        "{err}"
    );
    tx.rollback().await.unwrap();
    app.shutdown().await;
}
