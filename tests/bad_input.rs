//! Bad input never reaches Postgres as a 500: arbitrary JSON values, correctly signed, in
//! every field of the EMAIL_SENT webhook and of each action body. Never a 5xx, never a panic,
//! and a refused request writes nothing (property-based, against the real service and
//! Postgres, on both EMAIL_SENT paths).

mod common;

use common::app::TestApp;
use inbox_service::Switches;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{json, Map, Value};

/// Any JSON value, with the strings Postgres and the schema refuse: NUL, very long, unicode.
fn any_json() -> impl Strategy<Value = Value> {
    let text = prop_oneof![
        2 => any::<String>(),
        3 => "[a-z]{0,4}\u{0}[a-z@.]{0,4}",
        1 => Just("x".repeat(5000)),
        1 => Just("2026-13-45T99:99:99Z".to_owned()),
        1 => Just("ann@example.test".to_owned()),
        1 => Just("EMAIL_SENT".to_owned()),
        1 => "[a-z@.]{0,12}",
    ];
    let leaf = prop_oneof![
        1 => Just(Value::Null),
        1 => any::<bool>().prop_map(Value::Bool),
        1 => any::<i64>().prop_map(|n| json!(n)),
        1 => any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        1 => Just(json!(u64::MAX)),
        5 => text.prop_map(Value::String),
    ];
    // Mostly scalars (the interesting ones), some arrays and objects.
    let nested = leaf.clone().prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,8}", inner, 0..3)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    });
    prop_oneof![4 => leaf, 1 => nested]
}

fn valid_event() -> Value {
    json!({
        "event_id": "evt-prop", "type": "EMAIL_SENT", "workspace_id": 3,
        "lead_email": "ann@example.test", "occurred_at": "2026-01-23T17:51:00Z",
        "subject": "hello"
    })
}

const WEBHOOK_FIELDS: [&str; 6] = [
    "event_id",
    "type",
    "workspace_id",
    "lead_email",
    "occurred_at",
    "subject",
];

/// Rows in the tables a webhook or an action writes.
async fn rows(app: &TestApp) -> i64 {
    app.scalar(
        "SELECT (SELECT count(*) FROM messages) + (SELECT count(*) FROM background_jobs)
              + (SELECT count(*) FROM lead_activities) + (SELECT count(*) FROM ai_drafts)
              + (SELECT count(*) FROM leads)",
    )
    .await
}

fn runner() -> TestRunner {
    TestRunner::new(Config {
        cases: 64,
        failure_persistence: None,
        ..Config::default()
    })
}

#[test]
fn arbitrary_webhook_fields_never_5xx_and_refusals_write_nothing() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    for switches in [Switches::all_fixed(), Switches::pre_phase_53()] {
        let app = rt.block_on(TestApp::spawn_with(switches, |l| l.pool_max = 20));
        let seq = std::sync::atomic::AtomicU64::new(0);
        runner()
            .run(&(0..WEBHOOK_FIELDS.len(), any_json()), |(field, value)| {
                let n = seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let mut body = valid_event();
                // A fresh id unless the id itself is under test, so a valid body is new.
                body["event_id"] = json!(format!("evt-prop-{n}"));
                body[WEBHOOK_FIELDS[field]] = value.clone();
                let (status, before, after) = rt.block_on(async {
                    let before = rows(&app).await;
                    let status = app.post_webhook(&body).await.status().as_u16();
                    (status, before, rows(&app).await)
                });
                prop_assert!(status < 500, "{switches:?}: {status} for {body}");
                if status >= 400 {
                    prop_assert_eq!(before, after, "a refused body wrote: {}", body);
                }
                Ok(())
            })
            .unwrap();
        rt.block_on(app.shutdown());
    }
}

#[test]
fn arbitrary_action_bodies_never_5xx_and_refusals_write_nothing() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let app = rt.block_on(TestApp::spawn(Switches::all_fixed()));
    let cookie = TestApp::signed_in(&[1, 2]);
    runner()
        .run(&(prop::bool::ANY, any_json()), |(draft, value)| {
            let (path, body) = if draft {
                ("/api/actions/ai-draft", json!({ "lead_id": value }))
            } else {
                ("/api/actions/inbox-counts", value)
            };
            let (status, before, after) = rt.block_on(async {
                let before = rows(&app).await;
                let status = app
                    .post_action(path, Some(&cookie), body.clone())
                    .await
                    .status()
                    .as_u16();
                (status, before, rows(&app).await)
            });
            prop_assert!(status < 500, "{path}: {status} for {body}");
            if status >= 400 {
                prop_assert_eq!(before, after, "{} refused and wrote: {}", path, body);
            }
            Ok(())
        })
        .unwrap();
    rt.block_on(app.shutdown());
}
