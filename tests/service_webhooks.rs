//! `POST /api/webhooks/email`: the legacy and the enqueue-first EMAIL_SENT, exactly-once under
//! concurrent redelivery, and bad input that never writes and never 5xxs.

mod common;

use common::app::{email_sent, header_n, TestApp, WEBHOOK_SECRET};
use fake_providers::Provider;
use inbox_service::Switches;
use serde_json::{json, Value};

fn async_on() -> Switches {
    Switches {
        email_sent_async: true,
        ..Switches::default()
    }
}

/// Fixed: one write (the job), no external call, 202; the worker applies it later, once.
#[tokio::test]
async fn fixed_email_sent_is_one_write_and_no_external_call() {
    let app = TestApp::spawn(async_on()).await;

    let r = app
        .post_webhook(&email_sent("evt-fixed-1", 3, "ann@example.test"))
        .await;

    assert_eq!(r.status(), 202);
    assert_eq!(header_n(&r, "x-db-writes"), 1);
    assert_eq!(header_n(&r, "x-external-calls"), 0);
    assert_eq!(app.scalar("SELECT count(*) FROM background_jobs").await, 1);
    assert_eq!(
        app.scalar("SELECT count(*) FROM messages WHERE provider_event_id = 'evt-fixed-1'")
            .await,
        0
    );
    assert_eq!(app.fakes.counters().total(Provider::Ghl), 0);

    let tick = app.cron("/api/cron/background-jobs").await;

    assert_eq!(tick["processed"], 1);
    assert_eq!(
        app.scalar("SELECT count(*) FROM messages WHERE provider_event_id = 'evt-fixed-1'")
            .await,
        1
    );
    assert_eq!(
        app.scalar("SELECT count(*) FROM lead_activities WHERE provider_event_id = 'evt-fixed-1'")
            .await,
        1
    );
    assert_eq!(
        app.scalar("SELECT sum(offered)::bigint FROM slot_offer_ledger")
            .await,
        1
    );
    assert_eq!(app.fakes.counters().calls(Provider::Ghl, 3), 1);
    // The job, and the GHL sync's outbox row settled by the inline call.
    assert_eq!(
        app.scalar("SELECT count(*) FROM background_jobs WHERE status = 'done'")
            .await,
        2
    );
    app.shutdown().await;
}

/// Legacy: at least five writes and the GHL call on the request path, 200.
#[tokio::test]
async fn legacy_email_sent_writes_five_times_and_calls_ghl_inline() {
    let app = TestApp::spawn(Switches::pre_phase_53()).await;

    let r = app
        .post_webhook(&email_sent("evt-legacy-1", 3, "ann@example.test"))
        .await;

    assert_eq!(r.status(), 200);
    assert!(
        header_n(&r, "x-db-writes") >= 5,
        "{}",
        header_n(&r, "x-db-writes")
    );
    assert_eq!(header_n(&r, "x-external-calls"), 1);
    assert_eq!(
        app.scalar("SELECT count(*) FROM messages WHERE provider_event_id = 'evt-legacy-1'")
            .await,
        1
    );
    assert_eq!(app.scalar("SELECT count(*) FROM background_jobs").await, 0);
    assert_eq!(app.fakes.counters().calls(Provider::Ghl, 3), 1);
    app.shutdown().await;
}

async fn deliver_twenty_times_at_once(app: &TestApp, event: &Value) -> Vec<u16> {
    app.post_webhooks_concurrently(vec![event.clone(); 20])
        .await
}

/// The same EMAIL_SENT delivered 20 times concurrently has one effect, with the flag on.
#[tokio::test]
async fn twenty_concurrent_redeliveries_apply_once_when_queued() {
    let app = TestApp::spawn(async_on()).await;
    let event = email_sent("evt-dup-async", 4, "bo@example.test");

    let statuses = deliver_twenty_times_at_once(&app, &event).await;
    app.cron("/api/cron/background-jobs").await;

    assert!(statuses.iter().all(|s| *s == 202), "{statuses:?}");
    assert_eq!(
        app.scalar("SELECT count(*) FROM background_jobs WHERE kind = 'email_sent'")
            .await,
        1
    );
    assert_eq!(
        app.scalar("SELECT count(*) FROM messages WHERE provider_event_id = 'evt-dup-async'")
            .await,
        1
    );
    assert_eq!(
        app.scalar(
            "SELECT count(*) FROM lead_activities WHERE provider_event_id = 'evt-dup-async'"
        )
        .await,
        1
    );
    assert_eq!(
        app.scalar("SELECT emails_sent::bigint FROM leads WHERE email = 'bo@example.test'")
            .await,
        1
    );
    app.shutdown().await;
}

/// The same with the legacy synchronous path (a pool large enough that no delivery starves:
/// starvation is the incident, tested on its own).
#[tokio::test]
async fn twenty_concurrent_redeliveries_apply_once_when_synchronous() {
    let app = TestApp::spawn_with(Switches::pre_phase_53(), |l| l.pool_max = 45).await;
    let event = email_sent("evt-dup-sync", 4, "bo@example.test");

    let statuses = deliver_twenty_times_at_once(&app, &event).await;

    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(
        app.scalar("SELECT count(*) FROM messages WHERE provider_event_id = 'evt-dup-sync'")
            .await,
        1
    );
    assert_eq!(
        app.scalar("SELECT count(*) FROM lead_activities WHERE provider_event_id = 'evt-dup-sync'")
            .await,
        1
    );
    assert_eq!(
        app.scalar("SELECT emails_sent::bigint FROM leads WHERE email = 'bo@example.test'")
            .await,
        1
    );
    assert_eq!(app.fakes.counters().calls(Provider::Ghl, 4), 1);
    app.shutdown().await;
}

/// A body that looks like SQL is data: stored verbatim through bind parameters.
#[tokio::test]
async fn sql_looking_input_is_stored_verbatim() {
    let app = TestApp::spawn(Switches::default()).await;
    let email = "robert'); DROP TABLE leads;--@example.test";
    let mut event = email_sent("evt-sql'; DELETE FROM messages;--", 2, email);
    event["subject"] = json!("1' OR '1'='1");

    let r = app.post_webhook(&event).await;

    assert_eq!(r.status(), 200);
    let mut conn = app.db().await;
    let (stored_email, subject): (String, String) = sqlx::query_as(
        "SELECT l.email, m.subject FROM messages m JOIN leads l ON l.id = m.lead_id WHERE m.provider_event_id = $1",
    )
    .bind("evt-sql'; DELETE FROM messages;--")
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(stored_email, email);
    assert_eq!(subject, "1' OR '1'='1");
    assert!(
        app.scalar("SELECT count(*) FROM messages").await > 1000,
        "seeded messages intact"
    );
    app.shutdown().await;
}

/// How a bad request is sent.
enum Send {
    /// Signed correctly.
    Signed(Vec<u8>),
    /// With these (timestamp, signature) headers, either may be missing.
    Headers(Vec<u8>, Option<String>, Option<String>),
}

fn valid() -> Value {
    email_sent("evt-bad", 3, "cy@example.test")
}

fn with(field: &str, value: Value) -> Vec<u8> {
    let mut v = valid();
    if value.is_null() {
        v.as_object_mut().unwrap().remove(field);
    } else {
        v[field] = value;
    }
    serde_json::to_vec(&v).unwrap()
}

fn bad_inputs() -> Vec<(&'static str, Send, u16, &'static str)> {
    let body = serde_json::to_vec(&valid()).unwrap();
    let now = common::app::chrono_now();
    let sig = |ts: i64, b: &[u8]| incident_wire::sign_webhook(WEBHOOK_SECRET, ts, b);
    vec![
        (
            "no signature headers",
            Send::Headers(body.clone(), None, None),
            401,
            "signature",
        ),
        (
            "no timestamp",
            Send::Headers(body.clone(), None, Some(sig(now, &body))),
            401,
            "signature",
        ),
        (
            "no signature",
            Send::Headers(body.clone(), Some(now.to_string()), None),
            401,
            "signature",
        ),
        (
            "garbled signature",
            Send::Headers(body.clone(), Some(now.to_string()), Some("zz".into())),
            401,
            "signature",
        ),
        (
            "signed with another secret",
            Send::Headers(
                body.clone(),
                Some(now.to_string()),
                Some(incident_wire::sign_webhook("other", now, &body)),
            ),
            401,
            "signature",
        ),
        (
            "stale timestamp",
            Send::Headers(
                body.clone(),
                Some((now - 3600).to_string()),
                Some(sig(now - 3600, &body)),
            ),
            401,
            "signature",
        ),
        (
            "timestamp from the future",
            Send::Headers(
                body.clone(),
                Some((now + 3600).to_string()),
                Some(sig(now + 3600, &body)),
            ),
            401,
            "signature",
        ),
        (
            "timestamp not a number",
            Send::Headers(body.clone(), Some("noon".into()), Some(sig(now, &body))),
            401,
            "signature",
        ),
        (
            "body changed after signing",
            Send::Headers(
                with("workspace_id", json!(4)),
                Some(now.to_string()),
                Some(sig(now, &body)),
            ),
            401,
            "signature",
        ),
        (
            "body over 256 KiB",
            Send::Signed(vec![b' '; 256 * 1024 + 1]),
            413,
            "256",
        ),
        (
            "malformed JSON",
            Send::Signed(b"{\"event_id\": ".to_vec()),
            400,
            "not valid JSON",
        ),
        (
            "a JSON array",
            Send::Signed(b"[]".to_vec()),
            400,
            "JSON object",
        ),
        (
            "missing event_id",
            Send::Signed(with("event_id", Value::Null)),
            400,
            "event_id",
        ),
        (
            "empty event_id",
            Send::Signed(with("event_id", json!(" "))),
            400,
            "event_id",
        ),
        (
            "event_id too long",
            Send::Signed(with("event_id", json!("e".repeat(201)))),
            400,
            "event_id",
        ),
        (
            "NUL in event_id (Postgres refuses it in text)",
            Send::Signed(with("event_id", json!("evt\u{0}1"))),
            400,
            "NUL",
        ),
        (
            "NUL in subject",
            Send::Signed(with("subject", json!("hi\u{0}"))),
            400,
            "subject",
        ),
        (
            "missing type",
            Send::Signed(with("type", Value::Null)),
            400,
            "type",
        ),
        (
            "type is a number",
            Send::Signed(with("type", json!(5))),
            400,
            "type",
        ),
        (
            "workspace_id is a string",
            Send::Signed(with("workspace_id", json!("3"))),
            400,
            "workspace_id",
        ),
        (
            "workspace_id is negative",
            Send::Signed(with("workspace_id", json!(-3))),
            400,
            "workspace_id",
        ),
        (
            "workspace_id is fractional",
            Send::Signed(with("workspace_id", json!(1.5))),
            400,
            "workspace_id",
        ),
        (
            "missing lead_email",
            Send::Signed(with("lead_email", Value::Null)),
            400,
            "lead_email",
        ),
        (
            "lead_email without @",
            Send::Signed(with("lead_email", json!("cy.example.test"))),
            400,
            "lead_email",
        ),
        (
            "occurred_at not a timestamp",
            Send::Signed(with("occurred_at", json!("last tuesday"))),
            400,
            "occurred_at",
        ),
        (
            "subject is an array",
            Send::Signed(with("subject", json!(["a"]))),
            400,
            "subject",
        ),
        (
            "unknown workspace",
            Send::Signed(with("workspace_id", json!(999_999))),
            422,
            "workspace_id",
        ),
        (
            "unknown event type",
            Send::Signed(with("type", json!("EMAIL_CLICKED"))),
            202,
            "ignored",
        ),
    ]
}

async fn row_counts(app: &TestApp) -> [i64; 5] {
    [
        app.scalar("SELECT count(*) FROM messages").await,
        app.scalar("SELECT count(*) FROM leads").await,
        app.scalar("SELECT count(*) FROM lead_activities").await,
        app.scalar("SELECT count(*) FROM background_jobs").await,
        app.scalar("SELECT coalesce(sum(offered), 0)::bigint FROM slot_offer_ledger")
            .await,
    ]
}

async fn every_bad_input_is_refused_clearly_without_writing(switches: Switches) {
    let app = TestApp::spawn(switches).await;
    let before = row_counts(&app).await;
    for (case, send, status, needle) in bad_inputs() {
        let r = match send {
            Send::Signed(body) => app.post_webhook_raw(body).await,
            Send::Headers(body, ts, sig) => {
                let mut req = app
                    .http
                    .post(format!("{}/api/webhooks/email", app.base))
                    .body(body);
                if let Some(ts) = ts {
                    req = req.header(incident_wire::TIMESTAMP_HEADER, ts);
                }
                if let Some(sig) = sig {
                    req = req.header(incident_wire::SIGNATURE_HEADER, sig);
                }
                req.send().await.unwrap()
            }
        };
        let got = r.status().as_u16();
        let text = r.text().await.unwrap();
        assert_eq!(got, status, "{case}: {text}");
        assert!(
            text.contains(needle),
            "{case}: {text:?} should mention {needle:?}"
        );
        assert_eq!(row_counts(&app).await, before, "{case} wrote something");
    }
    app.shutdown().await;
}

/// The table of bad inputs (26 cases) against the legacy path.
#[tokio::test]
async fn bad_webhooks_write_nothing_on_the_legacy_path() {
    every_bad_input_is_refused_clearly_without_writing(Switches::pre_phase_53()).await;
}

/// The same table against the queued path.
#[tokio::test]
async fn bad_webhooks_write_nothing_on_the_queued_path() {
    every_bad_input_is_refused_clearly_without_writing(Switches::all_fixed()).await;
}

/// An event of another type with the same provider event id as an `EMAIL_SENT`.
fn same_id(event: &Value, kind: &str) -> Value {
    let mut other = event.clone();
    other["type"] = json!(kind);
    other
}

/// The dedupe key is provider + type + id: one id as EMAIL_OPENED and as EMAIL_SENT is two
/// events, whichever comes first, on both paths — neither dropped as a duplicate of the other,
/// and the SENT's activity insert never fails on the OPENED's row.
#[tokio::test]
async fn one_id_under_two_types_is_two_events() {
    for switches in [Switches::pre_phase_53(), async_on()] {
        let app = TestApp::spawn(switches).await;
        // The lead exists (an earlier send), then OPENED and SENT share one id.
        let earlier = email_sent("evt-ns-0", 5, "cy@example.test");
        assert!(app.post_webhook(&earlier).await.status().is_success());
        app.cron("/api/cron/background-jobs").await;
        let sent = email_sent("evt-ns-1", 5, "cy@example.test");

        let opened = app.post_webhook(&same_id(&sent, "EMAIL_OPENED")).await;
        let sent_status = app.post_webhook(&sent).await.status();
        let opened_again = app.post_webhook(&same_id(&sent, "EMAIL_OPENED")).await;
        app.cron("/api/cron/background-jobs").await;

        let body: Value = opened.json().await.unwrap();
        assert_eq!(body["status"], "applied", "{switches:?}: {body}");
        assert!(sent_status.is_success(), "{switches:?}: {sent_status}");
        let again: Value = opened_again.json().await.unwrap();
        assert_eq!(again["status"], "duplicate", "{switches:?}: {again}");
        let activities: Vec<(String,)> = sqlx::query_as(
            "SELECT kind FROM lead_activities WHERE provider_event_id = 'evt-ns-1' ORDER BY kind",
        )
        .fetch_all(&mut app.db().await)
        .await
        .unwrap();
        assert_eq!(
            activities,
            vec![("email_opened".to_owned(),), ("email_sent".to_owned(),)],
            "{switches:?}"
        );
        assert_eq!(
            app.scalar("SELECT count(*) FROM messages WHERE provider_event_id = 'evt-ns-1'")
                .await,
            1,
            "{switches:?}"
        );
        assert_eq!(
            app.scalar(
                "SELECT (emails_sent * 10 + emails_opened)::bigint FROM leads WHERE email = 'cy@example.test'"
            )
            .await,
            21,
            "{switches:?}: two sends, one open"
        );
        app.shutdown().await;
    }
}

/// Posts every event at once; returns each answer's status and `status` field (or `error`), in
/// order.
fn answers(app: &TestApp, events: Vec<Value>) -> tokio::task::JoinHandle<Vec<(u16, String)>> {
    let mut posts = tokio::task::JoinSet::new();
    for (i, event) in events.into_iter().enumerate() {
        let post = app.signed_post(&event);
        posts.spawn(async move {
            let r = post.send().await.unwrap();
            let status = r.status().as_u16();
            let body: Value = r.json().await.unwrap();
            let said = body.get("status").or(body.get("error"));
            (
                i,
                status,
                said.and_then(Value::as_str).unwrap_or("").to_owned(),
            )
        });
    }
    tokio::spawn(async move {
        let mut answers = posts.join_all().await;
        answers.sort();
        answers
            .into_iter()
            .map(|(_, status, said)| (status, said))
            .collect()
    })
}

/// Asserts that the intake wrote `statements` statements carrying `rows` rows since `before`;
/// returns what it has written now.
fn wrote_since(
    app: &TestApp,
    before: inbox_service::domain::intake::Written,
    statements: u64,
    rows: usize,
) -> inbox_service::domain::intake::Written {
    let now = app.state.intake().written();
    assert_eq!(
        now.statements - before.statements,
        statements,
        "{before:?} then {now:?}"
    );
    assert_eq!(
        now.rows - before.rows,
        rows as u64,
        "{before:?} then {now:?}"
    );
    now
}

/// Holds every insert into the job queue until the returned connection commits.
async fn hold_the_queue(app: &TestApp) -> sqlx::PgConnection {
    let mut holder = app.db().await;
    sqlx::raw_sql("BEGIN; LOCK TABLE background_jobs IN SHARE MODE")
        .execute(&mut holder)
        .await
        .unwrap();
    holder
}

/// Both flush tasks busy: two enqueues sent one after the other, each in a statement of its
/// own, held by the lock. Returns their answers.
async fn occupy_the_flushers(
    app: &TestApp,
    ids: [&str; 2],
) -> Vec<tokio::task::JoinHandle<Vec<(u16, String)>>> {
    assert_eq!(inbox_service::domain::intake::FLUSHERS, ids.len());
    let mut heads = Vec::new();
    for id in ids {
        let before = app.state.intake().written().statements;
        heads.push(answers(app, vec![email_sent(id, 3, "head@example.test")]));
        common::app::eventually(async || app.state.intake().written().statements == before + 1)
            .await;
    }
    heads
}

/// Queued enqueues that arrive while others are written go to Postgres together, one statement
/// for the lot, and each keeps its own answer: new, a duplicate of a queued key, 422 for a
/// workspace that does not exist. Two deliveries of one event never share a statement: the
/// later is a duplicate of the earlier.
#[tokio::test]
async fn enqueues_arriving_together_share_a_statement_and_keep_their_answers() {
    let app = TestApp::spawn(async_on()).await;
    let old = email_sent("evt-gc-old", 3, "old@example.test");
    assert_eq!(app.post_webhook(&old).await.status(), 202);
    let twin = email_sent("evt-gc-twin", 4, "twin@example.test");
    let mut events: Vec<Value> = (0..20)
        .map(|i| email_sent(&format!("evt-gc-{i}"), 3 + i % 2, "many@example.test"))
        .collect();
    events.extend([
        old,
        twin.clone(),
        twin,
        email_sent("evt-gc-nowhere", 987_654, "x@example.test"),
    ]);
    let queued = events.len();

    let mut holder = hold_the_queue(&app).await;
    let heads = occupy_the_flushers(&app, ["evt-gc-head-0", "evt-gc-head-1"]).await;
    let written = app.state.intake().written();
    let rest = answers(&app, events);
    common::app::eventually(async || app.state.intake().waiting() == queued).await;
    sqlx::raw_sql("COMMIT").execute(&mut holder).await.unwrap();
    for head in heads {
        assert_eq!(head.await.unwrap(), [(202, "accepted".to_owned())]);
    }
    let rest = rest.await.unwrap();
    for (i, answer) in rest[..20].iter().enumerate() {
        assert_eq!(*answer, (202, "accepted".to_owned()), "event {i}");
    }
    assert_eq!(
        rest[20],
        (202, "duplicate".to_owned()),
        "the event queued before"
    );
    // The twins' statements may run side by side on the two flushers: either can be first.
    let mut twins = [rest[21].clone(), rest[22].clone()];
    twins.sort();
    assert_eq!(
        twins,
        [(202, "accepted".to_owned()), (202, "duplicate".to_owned())],
        "the twins"
    );
    assert_eq!(rest[23].0, 422, "{:?}", rest[23]);
    assert!(rest[23].1.contains("workspace_id"), "{:?}", rest[23]);
    // The 24 queued requests: one statement, and one more for the second twin.
    let now = wrote_since(&app, written, 2, queued);
    assert_eq!(
        app.metric("enqueue_statements_total").await,
        now.statements as f64
    );
    assert_eq!(app.metric("enqueue_rows_total").await, now.rows as f64);
    assert_eq!(
        app.scalar("SELECT count(*) FROM background_jobs WHERE kind = 'email_sent'")
            .await,
        1 + 2 + 20 + 1
    );
    assert_eq!(
        app.scalar("SELECT count(*) FROM background_jobs WHERE dedupe_key LIKE '%evt-gc-nowhere'")
            .await,
        0
    );
    app.shutdown().await;
}

/// A row Postgres refuses (a NUL in the payload: jsonb has no such character) fails its own
/// request only: the statement it shared is split, and the others are written one by one.
#[tokio::test]
async fn a_refused_row_fails_only_its_own_enqueue() {
    use inbox_service::domain::event::{EmailEvent, EventKind};
    use inbox_service::domain::jobs::Enqueued;
    use inbox_service::tally::Tally;
    use std::sync::Arc;

    let app = TestApp::spawn(async_on()).await;
    let event = |id: &str| EmailEvent {
        event_id: id.to_owned(),
        kind: EventKind::Sent,
        workspace_id: 3,
        lead_email: "nul@example.test".to_owned(),
        occurred_at: chrono::Utc::now(),
        subject: "s".to_owned(),
    };
    let mut holder = hold_the_queue(&app).await;
    let heads = occupy_the_flushers(&app, ["evt-nul-head-0", "evt-nul-head-1"]).await;
    let written = app.state.intake().written();
    let mut enqueues = tokio::task::JoinSet::new();
    for (i, payload) in [
        json!({"ok": 1}),
        json!({"bad": "a\u{0}b"}),
        json!({"ok": 2}),
    ]
    .into_iter()
    .enumerate()
    {
        let state = app.state.clone();
        let ev = event(&format!("evt-nul-{i}"));
        enqueues.spawn(async move {
            let tally = Arc::new(Tally::default());
            let outcome = state.intake().enqueue(&state, &tally, &ev, payload).await;
            (i, outcome.map_err(|e| e.to_string()), tally.writes())
        });
        common::app::eventually(async || app.state.intake().waiting() == i + 1).await;
    }
    sqlx::raw_sql("COMMIT").execute(&mut holder).await.unwrap();
    for head in heads {
        assert_eq!(head.await.unwrap(), [(202, "accepted".to_owned())]);
    }
    let mut outcomes = enqueues.join_all().await;
    outcomes.sort_by_key(|o| o.0);

    assert_eq!(outcomes[0], (0, Ok(Enqueued::New), 1));
    assert_eq!(outcomes[2], (2, Ok(Enqueued::New), 1));
    let (_, refused, writes) = &outcomes[1];
    assert!(
        refused.as_ref().is_err_and(|e| e.contains("Unicode")),
        "{refused:?}"
    );
    assert_eq!(*writes, 0);
    assert_eq!(
        app.state.intake().written().statements - written.statements,
        1
    );
    assert_eq!(
        app.scalar("SELECT count(*) FROM background_jobs WHERE dedupe_key LIKE '%evt-nul-_'")
            .await,
        2
    );
    app.shutdown().await;
}

/// Cancels the enqueue statements waiting on `hold_the_queue`'s lock once `n` of them wait;
/// a cancel is SQLSTATE 57014, as a statement timeout. From a connection of its own: within
/// the holder's transaction `pg_stat_activity` would stay as it first read it.
async fn cancel_waiting_enqueues(app: &TestApp, n: usize) {
    let mut watcher = app.db().await;
    const WAITING: &str = "SELECT pid FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid() \
         AND wait_event_type = 'Lock' AND query LIKE 'WITH input AS%'";
    let mut pids: Vec<i32> = Vec::new();
    common::app::eventually(async || {
        pids = sqlx::query_scalar(WAITING)
            .fetch_all(&mut watcher)
            .await
            .unwrap();
        pids.len() == n
    })
    .await;
    for pid in pids {
        let cancelled: bool = sqlx::query_scalar("SELECT pg_cancel_backend($1)")
            .bind(pid)
            .fetch_one(&mut watcher)
            .await
            .unwrap();
        assert!(cancelled, "backend {pid}");
    }
}

/// A statement that fails for a reason other than its rows (here cancelled, as by a statement
/// timeout) fails every request it carried, each with the failure's status and category, and
/// writes none of them.
#[tokio::test]
async fn a_failed_statement_fails_every_enqueue_it_carried() {
    let app = TestApp::spawn(async_on()).await;
    let timeouts_before = app.metric("errors_total{category=\"db_timeout\"}").await;
    let events: Vec<Value> = (0..5)
        .map(|i| email_sent(&format!("evt-cancel-{i}"), 3, "cancel@example.test"))
        .collect();
    let queued = events.len();

    let mut holder = hold_the_queue(&app).await;
    let heads = occupy_the_flushers(&app, ["evt-cancel-head-0", "evt-cancel-head-1"]).await;
    let written = app.state.intake().written();
    let rest = answers(&app, events);
    common::app::eventually(async || app.state.intake().waiting() == queued).await;
    // The heads' statements fail; the flush tasks then write the five queued together.
    cancel_waiting_enqueues(&app, 2).await;
    for head in heads {
        assert_eq!(
            head.await.unwrap(),
            [(500, "internal server error".to_owned())]
        );
    }
    cancel_waiting_enqueues(&app, 1).await;
    let rest = rest.await.unwrap();
    sqlx::raw_sql("COMMIT").execute(&mut holder).await.unwrap();

    assert_eq!(
        rest,
        vec![(500, "internal server error".to_owned()); queued]
    );
    wrote_since(&app, written, 1, queued);
    assert_eq!(
        app.metric("errors_total{category=\"db_timeout\"}").await - timeouts_before,
        (2 + queued) as f64,
        "each failed request tagged with its statement's category"
    );
    assert_eq!(
        app.scalar("SELECT count(*) FROM background_jobs WHERE dedupe_key LIKE '%evt-cancel-%'")
            .await,
        0
    );
    app.shutdown().await;
}
