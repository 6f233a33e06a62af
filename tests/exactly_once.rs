//! The harness's exactly-once invariant counts every side effect of EMAIL_SENT — the message
//! row, the lead activity, the lead's `emails_sent`, the slot ledger, the GHL call — and is
//! shown able to fail: each deliberate bug (the `faults` feature, tests only) is caught, with
//! the effect it breaks named, while the others stay clean.

mod common;

use std::collections::BTreeMap;

use common::app::{email_sent, TestApp};
use fake_providers::Provider;
use inbox_service::{Faults, Switches};
use incident_lab::matrix::invariant::{baseline, check_invariant, effects};
use incident_lab::matrix::verdict::invariant_detail;
use incident_lab::report::EffectCount;

/// Sends `n` EMAIL_SENT (redelivering the first `again` of them once more, as providers
/// do), drains the queue, and counts every effect against the acknowledged ones.
async fn run(switches: Switches, faults: Faults, n: usize, again: usize) -> Vec<EffectCount> {
    let app = TestApp::spawn(switches).await;
    app.state.inject_faults(faults);
    let before = baseline(&mut app.db().await).await.unwrap();
    let events: Vec<_> = (0..n)
        .map(|i| {
            email_sent(
                &format!("evt-once-{i}"),
                2 + (i % 3) as i64,
                &format!("p{i}@example.test"),
            )
        })
        .collect();
    let mut acked = Vec::new();
    for (i, event) in events.iter().chain(events.iter().take(again)).enumerate() {
        let r = app.post_webhook(event).await;
        assert!(r.status().is_success(), "delivery {i}: {}", r.status());
        acked.push(format!("evt-once-{}", i % n));
    }
    acked.sort();
    acked.dedup();
    let ghl = drain(&app).await;
    let counted = effects(&mut app.db().await, &acked, &before, &ghl)
        .await
        .unwrap();
    app.shutdown().await;
    counted
}

/// Runs the background-jobs cron once; returns the GHL calls that succeeded, by idempotency key.
async fn drain(app: &TestApp) -> BTreeMap<String, u64> {
    app.cron("/api/cron/background-jobs").await;
    app.fakes
        .counters()
        .ok_by_key
        .remove(&Provider::Ghl)
        .unwrap_or_default()
}

fn dirty(counted: &[EffectCount]) -> Vec<(&str, u64, u64)> {
    counted
        .iter()
        .filter(|e| !e.clean())
        .map(|e| (e.effect.as_str(), e.lost, e.duplicates))
        .collect()
}

/// Without a bug, every effect happens once per event, redeliveries included, on both paths.
#[tokio::test]
async fn every_effect_happens_once_despite_redelivery() {
    for switches in [Switches::all_fixed(), Switches::default()] {
        let counted = run(switches, Faults::default(), 6, 3).await;
        assert_eq!(counted.len(), 5, "{counted:?}");
        assert_eq!(dirty(&counted), vec![], "{switches:?}: {counted:?}");
        assert!(
            counted.iter().all(|e| e.expected == 6 && e.applied == 6),
            "{counted:?}"
        );
    }
}

/// (a) Acknowledged, then crashed before the commit: every event is lost, and the rows say so.
#[tokio::test]
async fn an_ack_before_the_commit_is_caught_as_lost() {
    let faults = Faults {
        ack_before_commit: true,
        ..Faults::default()
    };
    let counted = run(Switches::all_fixed(), faults, 4, 0).await;
    assert_eq!(
        dirty(&counted),
        vec![("message row", 4, 0), ("lead activity", 4, 0)],
        "{counted:?}"
    );
}

/// (b) No dedupe check on redelivery: the counter, the ledger and the GHL call happen again
/// (the unique row constraints still hold the rows at once).
#[tokio::test]
async fn a_skipped_dedupe_check_is_caught_on_the_counters_and_the_provider_call() {
    let faults = Faults {
        skip_dedupe: true,
        ..Faults::default()
    };
    let counted = run(Switches::default(), faults, 4, 2).await;
    assert_eq!(
        dirty(&counted),
        vec![
            ("lead emails_sent", 0, 2),
            ("slot ledger", 0, 2),
            ("GHL contact sync", 0, 2)
        ],
        "{counted:?}"
    );
}

/// (c) A doubled counter increment: the counter alone is dirty, by exactly one per event.
#[tokio::test]
async fn a_doubled_counter_is_caught_on_the_counter() {
    let faults = Faults {
        double_counter: true,
        ..Faults::default()
    };
    let counted = run(Switches::all_fixed(), faults, 5, 0).await;
    assert_eq!(
        dirty(&counted),
        vec![("lead emails_sent", 0, 5)],
        "{counted:?}"
    );
}

/// (c') One lead's increment lost and another's doubled in the same batch (and so for the
/// ledger's rows): every sum grew by exactly the sends applied, yet both counters are caught,
/// each with one key short and one over.
#[tokio::test]
async fn a_lost_and_a_doubled_increment_are_caught_though_the_sums_match() {
    let faults = Faults {
        crossed_counters: true,
        ..Faults::default()
    };
    let counted = run(Switches::all_fixed(), faults, 5, 0).await;
    let dirty = dirty(&counted);
    assert_eq!(
        dirty.iter().map(|d| d.0).collect::<Vec<_>>(),
        ["lead emails_sent", "slot ledger"],
        "{counted:?}"
    );
    for (effect, lost, duplicates) in dirty {
        assert!(lost > 0 && lost == duplicates, "{effect}: {counted:?}");
    }
}

/// (d) A job the queue gives up on: its payload made unreadable after the ack (a poison job),
/// the worker fails it at once, the event is lost, and the invariant says where it went:
/// one failed `EMAIL_SENT` job, its `last_error` naming the field.
#[tokio::test]
async fn a_job_the_queue_gave_up_on_is_counted_as_failed_where_the_event_was_lost() {
    let app = TestApp::spawn(Switches::all_fixed()).await;
    let before = baseline(&mut app.db().await).await.unwrap();
    let mut recording = loadgen::record::Recording::default();
    for i in 0..4 {
        let id = format!("evt-poison-{i}");
        let r = app
            .post_webhook(&email_sent(&id, 2, &format!("q{i}@example.test")))
            .await;
        assert!(r.status().is_success(), "{id}: {}", r.status());
        recording.acked.insert(id);
        recording.sent_events += 1;
    }
    // The queued payload of one event no longer validates.
    let poisoned = sqlx::query(
        "UPDATE background_jobs SET payload = jsonb_set(payload, '{lead_email}', '\"no-at-sign\"')
         WHERE kind = 'email_sent' AND payload->>'event_id' = 'evt-poison-2'",
    )
    .execute(&mut app.db().await)
    .await
    .unwrap();
    assert_eq!(poisoned.rows_affected(), 1);
    let ghl = drain(&app).await;
    let inv = check_invariant(&app.server, &app.db, &recording, 0, before, &ghl)
        .await
        .unwrap();
    let last_error: String = sqlx::query_scalar(
        "SELECT last_error FROM background_jobs WHERE kind = 'email_sent' AND status = 'failed'",
    )
    .fetch_one(&mut app.db().await)
    .await
    .unwrap();
    app.shutdown().await;
    assert_eq!(
        (inv.acked, inv.applied, inv.lost, inv.failed_jobs, inv.holds),
        (4, 3, 1, 1, false),
        "{inv:?}"
    );
    assert_eq!(
        last_error,
        "poison job: field `lead_email` is not an email address"
    );
    assert!(
        invariant_detail(&inv)
            .contains("1 EMAIL_SENT jobs failed (background_jobs.last_error says why)"),
        "{}",
        invariant_detail(&inv)
    );
}
