//! The seeded dataset: deterministic by seed, honouring the scale knobs, and cloned per arm.

mod common;

use common::local_server;
use incident_lab::dataset::{fingerprint, Fingerprint, Template};
use incident_lab::model::Scale;
use incident_lab::postgres::PgServer;
use sqlx::{ConnectOptions, Connection};

async fn fingerprint_of(server: &PgServer, db: &str) -> Fingerprint {
    let mut conn = server.connect_options(db).connect().await.unwrap();
    let fp = fingerprint(&mut conn).await.unwrap();
    conn.close().await.unwrap();
    fp
}

const SMALL: Scale = Scale {
    workspaces: 7,
    leads: 300,
    messages: 5_000,
    disconnected_pct: 30,
    followups_pct: 20,
};

/// The same seed gives the same data; another seed gives other data of the same size.
#[tokio::test]
async fn seeding_is_deterministic_by_seed() {
    let server = local_server().await;

    let a = Template::prepare(&server, SMALL, 7).await.unwrap();
    let b = Template::prepare(&server, SMALL, 7).await.unwrap();
    let c = Template::prepare(&server, SMALL, 8).await.unwrap();
    let (fa, fb, fc) = (
        fingerprint_of(&server, a.name()).await,
        fingerprint_of(&server, b.name()).await,
        fingerprint_of(&server, c.name()).await,
    );

    assert_eq!(fa, fb);
    assert_ne!(fa.content_md5, fc.content_md5);
    assert_eq!(fa.messages, fc.messages);
    server.shutdown().await;
}

/// Every scale knob shows in the data.
#[tokio::test]
async fn the_scale_knobs_are_honoured() {
    let server = local_server().await;

    let t = Template::prepare(&server, SMALL, 53).await.unwrap();
    let fp = fingerprint_of(&server, t.name()).await;

    assert_eq!(fp.workspaces, 7);
    assert_eq!(fp.leads, 300);
    assert_eq!(fp.messages, 5_000);
    // Shares are drawn by hash: near the asked percentage, never all or nothing.
    assert!((1..7).contains(&fp.disconnected_workspaces), "{fp:?}");
    assert!((30..=90).contains(&fp.followup_tasks), "{fp:?}");
    assert!((1_250..=2_250).contains(&fp.inbound_messages), "{fp:?}");
    server.shutdown().await;
}

/// An arm's clone holds the template's data; the fixed variant also has the Phase 53 indexes.
#[tokio::test]
async fn arms_get_fresh_clones_with_or_without_the_phase53_indexes() {
    let server = local_server().await;
    let t = Template::prepare(&server, SMALL, 53).await.unwrap();

    let (legacy, _) = t
        .clone_for_arm(&server, "pre-phase-53", false)
        .await
        .unwrap();
    let (fixed, _) = t.clone_for_arm(&server, "all-on", true).await.unwrap();

    let template_fp = fingerprint_of(&server, t.name()).await;
    assert_eq!(fingerprint_of(&server, &legacy).await, template_fp);
    assert_eq!(fingerprint_of(&server, &fixed).await, template_fp);
    let index_count = |db: String| {
        let server = &server;
        async move {
            let mut conn = server.connect_options(&db).connect().await.unwrap();
            let n: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_indexes WHERE indexname = 'messages_workspace_lead_sent_idx'",
            )
            .fetch_one(&mut conn)
            .await
            .unwrap();
            n
        }
    };
    assert_eq!(index_count(legacy.clone()).await, 0);
    assert_eq!(index_count(fixed.clone()).await, 1);
    // Clones are independent: a write to one is not seen by the other.
    let mut conn = server.connect_options(&legacy).connect().await.unwrap();
    sqlx::query("DELETE FROM followup_tasks")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    assert_eq!(fingerprint_of(&server, &fixed).await, template_fp);
    server.shutdown().await;
}

/// On a fixed arm's fresh clone, the fixed counts' probe for each lead's latest message reads
/// the Phase 53 index alone: an index-only scan (the index carries what the counts read) with
/// no heap fetch (the seeded rows are marked visible to all, as a vacuumed production table's).
#[tokio::test]
async fn the_fixed_counts_read_only_the_index_on_a_fresh_clone() {
    let server = local_server().await;
    let t = Template::prepare(&server, SMALL, 53).await.unwrap();
    let (fixed, _) = t.clone_for_arm(&server, "all-on", true).await.unwrap();

    let mut conn = server.connect_options(&fixed).connect().await.unwrap();
    let explain = format!(
        "EXPLAIN (ANALYZE, FORMAT JSON) {}",
        inbox_service::domain::counts::COUNTS_SQL_PER_LEAD
    );
    let (plan,): (serde_json::Value,) = sqlx::query_as(sqlx::AssertSqlSafe(explain))
        .bind((1..=i64::from(SMALL.workspaces)).collect::<Vec<_>>())
        .fetch_one(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();

    fn scans_of_messages(node: &serde_json::Value, out: &mut Vec<serde_json::Value>) {
        if node["Relation Name"] == "messages" {
            out.push(node.clone());
        }
        for child in node["Plans"].as_array().into_iter().flatten() {
            scans_of_messages(child, out);
        }
    }
    let mut scans = Vec::new();
    scans_of_messages(&plan[0]["Plan"], &mut scans);
    assert_eq!(scans.len(), 1, "one scan of messages: {plan:#}");
    let scan = &scans[0];
    assert_eq!(scan["Node Type"], "Index Only Scan", "{scan:#}");
    assert_eq!(scan["Index Name"], "messages_workspace_lead_sent_idx");
    assert_eq!(
        scan["Actual Loops"],
        u64::from(SMALL.leads),
        "one probe per lead"
    );
    assert_eq!(scan["Heap Fetches"], 0, "{scan:#}");
    server.shutdown().await;
}
