//! The operator surfaces: `/admin/flags` (flags flip at run time, behind the admin token, and
//! bad input is refused whole) and `/metrics` (pool, requests, per-request work).

mod common;

use std::collections::BTreeSet;

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
