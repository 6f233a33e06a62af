//! The `EMAIL_SENT` webhook's hot path with `INBOXXIA_EMAIL_SENT_ASYNC` on, in process against
//! a real Postgres (a local cluster this bench starts, seeded with the smoke dataset): the
//! signature check, the parse, a pooled connection and the enqueue — beside the reference
//! measured in the same run on the same pool: pgbench's one-row insert into the same
//! `background_jobs` table (what `incident-lab ceiling` runs pgbench with). The ratio
//! hot path ÷ insert is what the fixed path costs above the one write it must make. Then a
//! burst: 64 enqueues at once through the intake (group commit: those arriving together share
//! a statement) beside 64 one-row INSERTs at once on the same pool, in events per second.
//!
//! `cargo bench --bench webhook` (needs the PostgreSQL server binaries, as the local backend).

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use inbox_service::config::{Limits, ProviderUrls, Secrets};
use inbox_service::domain::{event, jobs};
use inbox_service::tally::Tally;
use inbox_service::{AppState, Config, Switches};
use incident_lab::dataset::Template;
use incident_lab::model::Scale;
use incident_lab::postgres::{PgServer, PgSettings, PostgresChoice, ProvisionRequest};

const SECRET: &str = "bench-webhook-secret";

/// A local cluster seeded with the smoke dataset, and the service's state on one arm's copy.
async fn setup() -> (PgServer, AppState) {
    let server = PgServer::provision(&ProvisionRequest {
        choice: PostgresChoice::Local,
        pg_bin: None,
        pg_image: incident_lab::postgres::DEFAULT_PG_IMAGE.to_owned(),
        settings: PgSettings::default(),
    })
    .await
    .expect("a local Postgres cluster starts (the PostgreSQL server binaries are needed)");
    let template = Template::prepare(&server, Scale::SMOKE, 53)
        .await
        .expect("the smoke dataset seeds");
    let (db, _) = template
        .clone_for_arm(&server, "bench", true)
        .await
        .expect("the arm's database");
    let nowhere = "http://127.0.0.1:9".to_owned();
    let config = Config {
        bind: "127.0.0.1:0".parse().unwrap(),
        database_url: server.url(&db, true),
        switches: Switches {
            email_sent_async: true,
            ..Switches::default()
        },
        limits: Limits::default(),
        secrets: Secrets {
            webhook: SECRET.into(),
            cron: "c".into(),
            admin: "a".into(),
            session: "s".into(),
        },
        providers: ProviderUrls {
            ghl: nowhere.clone(),
            unipile: nowhere.clone(),
            ai: nowhere,
        },
    };
    let state = AppState::new(config).expect("the service's state");
    state
        .check_database()
        .await
        .expect("the service reaches its database");
    (server, state)
}

fn hot_path(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (server, state) = rt.block_on(setup());
    let seq = AtomicU64::new(0);
    let next = || seq.fetch_add(1, Ordering::Relaxed);

    let mut g = c.benchmark_group("EMAIL_SENT on real Postgres");
    g.bench_function("reference: one-row INSERT into background_jobs", |b| {
        b.iter(|| {
            let key = format!("bench:ref:{}", next());
            rt.block_on(reference_insert(state.clone(), key))
        })
    });
    g.bench_function("service: verify + parse + enqueue", |b| {
        b.iter(|| {
            let n = next();
            let body = format!(
                r#"{{"event_id":"bench-{n}","type":"EMAIL_SENT","workspace_id":{},"lead_email":"lead{n}@bench.test","occurred_at":"2026-01-23T17:55:00Z"}}"#,
                1 + n % 20
            )
            .into_bytes();
            let now = chrono::Utc::now().timestamp();
            let sig = incident_wire::sign_webhook(SECRET, now, &body);
            rt.block_on(async {
                incident_wire::verify_webhook(
                    SECRET,
                    Some(&now.to_string()),
                    Some(&sig),
                    black_box(&body),
                    now,
                    300,
                )
                .unwrap();
                let ev = event::parse(&body).unwrap();
                let raw: serde_json::Value = serde_json::from_slice(&body).unwrap();
                let tally = Tally::default();
                let mut conn = state.acquire(&tally).await.unwrap();
                let queued = jobs::enqueue(&mut conn, &tally, &ev, &raw).await.unwrap();
                assert!(matches!(queued, jobs::Enqueued::New));
            })
        })
    });
    g.finish();

    // A burst: many enqueues at once. One at a time each is a statement of its own; through
    // the intake (what the handler calls) those that arrive together share one.
    let mut g = c.benchmark_group("EMAIL_SENT burst on real Postgres");
    g.throughput(Throughput::Elements(BURST as u64));
    g.sample_size(50);
    g.bench_function(
        format!("reference: {BURST} one-row INSERTs at once on the pool"),
        |b| {
            b.iter(|| {
                rt.block_on(burst(|_| {
                    reference_insert(state.clone(), format!("bench:ref:{}", next()))
                }))
            })
        },
    );
    g.bench_function(
        format!("service: {BURST} enqueues at once through the intake"),
        |b| {
            b.iter(|| {
                rt.block_on(burst(|_| {
                    let n = next();
                    let (state, raw) = (state.clone(), email_sent(n));
                    async move {
                        let ev = event::parse(raw.to_string().as_bytes()).unwrap();
                        let tally = Arc::new(Tally::default());
                        let queued = state.intake().enqueue(&state, &tally, &ev, raw).await;
                        assert!(matches!(queued, Ok(jobs::Enqueued::New)));
                    }
                }))
            })
        },
    );
    g.finish();
    rt.block_on(async {
        state.pool.close().await;
        state.ops_pool.close().await;
        server.shutdown().await;
    });
}

/// The reference: pgbench's one-row insert into `background_jobs`, on a connection of the
/// service's pool.
async fn reference_insert(state: AppState, key: String) {
    let mut conn = state.pool.acquire().await.unwrap();
    sqlx::query(
        "INSERT INTO background_jobs (kind, dedupe_key, payload) VALUES ('pgbench', $1, '{}'::jsonb)",
    )
    .bind(key)
    .execute(&mut *conn)
    .await
    .unwrap();
}

/// Enqueues in flight at once in the burst benches.
const BURST: usize = 64;

/// Runs `BURST` tasks made by `task` at once, until all have finished.
async fn burst<F: std::future::Future<Output = ()> + Send + 'static>(task: impl Fn(usize) -> F) {
    let mut set = tokio::task::JoinSet::new();
    for i in 0..BURST {
        set.spawn(task(i));
    }
    while let Some(done) = set.join_next().await {
        done.unwrap();
    }
}

/// A new EMAIL_SENT event, numbered `n`.
fn email_sent(n: u64) -> serde_json::Value {
    serde_json::json!({
        "event_id": format!("bench-burst-{n}"),
        "type": "EMAIL_SENT",
        "workspace_id": 1 + n % 20,
        "lead_email": format!("lead{n}@bench.test"),
        "occurred_at": "2026-01-23T17:55:00Z",
    })
}

criterion_group!(benches, hot_path);
criterion_main!(benches);
