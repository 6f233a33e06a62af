//! The production topology: several service instances behind one front, autoscaled, through
//! PgBouncer — on real Postgres and Debian's real PgBouncer, nothing mocked.

mod common;

use std::time::Duration;

use common::scenarios::{scenario_path, text};
use common::{incident_lab, local_server, process_alive};
use incident_lab::fleet::pooler::PgBouncer;
use incident_lab::model::PoolerSpec;
use serde_json::Value;
use sqlx::Connection;

/// One at a time: a test that looks for leftover processes must not see another test's.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn spec(mode: &str) -> PoolerSpec {
    PoolerSpec {
        kind: "pgbouncer".into(),
        pool_mode: mode.into(),
        default_pool_size: 2,
        // The console's own connection, and three clients.
        max_client_conn: 4,
        query_wait_timeout: Duration::from_secs(2),
    }
}

/// PgBouncer starts as the postgres user, serves queries (prepared statements included) with
/// the scenario's statement timeout on its server connections, queues clients past its pool,
/// refuses them past max_client_conn, reports all of it on its console — and leaves nothing
/// behind when it stops.
#[tokio::test]
async fn pgbouncer_pools_queues_refuses_and_leaves_nothing_behind() {
    let _one = ONE_AT_A_TIME.lock().await;
    let server = local_server().await;
    let db = incident_lab::postgres::PgServer::unique_name("pooler");
    server.create_database(&db).await.unwrap();
    let pooler = PgBouncer::start(&spec("session"), &server, Some(Duration::from_millis(700)))
        .await
        .unwrap();
    let (pid, dir) = (pooler.pid(), pooler.dir().to_owned());
    assert!(process_alive(pid));
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid: u32 = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap()
        .parse()
        .unwrap();
    assert_ne!(uid, 0, "pgbouncer must not run as root");

    let url = pooler.url(&server, &db);
    let mut a = sqlx::PgConnection::connect(&url).await.unwrap();
    // Prepared (extended protocol), twice: the statement cache is used through the pooler.
    for n in [1i32, 2] {
        let v: i32 = sqlx::query_scalar("SELECT $1::int4 + 1")
            .bind(n)
            .fetch_one(&mut a)
            .await
            .unwrap();
        assert_eq!(v, n + 1);
    }
    let timeout: String = sqlx::query_scalar("SHOW statement_timeout")
        .fetch_one(&mut a)
        .await
        .unwrap();
    assert_eq!(
        timeout, "700ms",
        "connect_query sets the scenario's timeout"
    );

    // Session mode, pool of 2: a third client waits for a server connection.
    let mut b = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::query("SELECT 1").execute(&mut b).await.unwrap();
    let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
    let waiting =
        tokio::spawn(async move { sqlx::query("SELECT 1").execute(&mut c).await.map(|_| c) });
    let mut seen = None;
    for _ in 0..40 {
        let s = pooler.scrape(&db).await.expect("the console answers");
        if s.cl_waiting >= 1.0 {
            seen = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let s = seen.expect("the third client waits for a server connection");
    assert_eq!(s.sv_active, 2.0, "{s:?}");
    // The wait ends when a client leaves; the console's totals count it.
    a.close().await.unwrap();
    let c = waiting.await.unwrap().expect("served after the wait");
    // PgBouncer adds up its totals each second (stats_period = 1).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let s = pooler.scrape(&db).await.unwrap();
    assert!(s.transactions >= 4.0 && s.wait_s > 0.0, "{s:?}");

    // max_client_conn = 4 (the console, b, c and one more): the next client is refused.
    let d = sqlx::PgConnection::connect(&url).await.unwrap();
    let refused = sqlx::PgConnection::connect(&url).await.unwrap_err();
    assert!(
        refused.to_string().contains("no more connections allowed"),
        "{refused}"
    );
    drop((b, c, d));
    // The refusal is in PgBouncer's log, where the report counts refused clients from.
    assert!(
        pooler
            .errors_logged()
            .iter()
            .any(|l| l.contains("no more connections allowed")),
        "{:?}",
        pooler.errors_logged()
    );

    pooler.stop();
    assert!(!process_alive(pid), "pgbouncer still runs after stop");
    drop(pooler);
    assert!(!dir.exists(), "{} is left behind", dir.display());
    server.drop_database(&db).await.unwrap();
    server.shutdown().await;
}

/// Transaction pooling needs PgBouncer's prepared-statement tracking (1.21+); on an older
/// PgBouncer the pooler refuses to start, and says why and what to use instead.
#[tokio::test]
async fn transaction_pooling_on_an_old_pgbouncer_is_refused_with_the_reason() {
    let _one = ONE_AT_A_TIME.lock().await;
    let version = std::process::Command::new(incident_lab::fleet::pooler::find_binary().unwrap())
        .arg("--version")
        .output()
        .unwrap();
    let old = String::from_utf8_lossy(&version.stdout).starts_with("PgBouncer 1.1");
    let server = local_server().await;
    let started = PgBouncer::start(&spec("transaction"), &server, None).await;
    match (old, started) {
        (true, Err(e)) => {
            let e = e.to_string();
            assert!(
                e.contains("1.21") && e.contains("pool_mode = \"session\""),
                "{e}"
            );
        }
        (true, Ok(_)) => panic!("transaction pooling started on PgBouncer < 1.21"),
        (false, started) => {
            started.expect("transaction pooling on PgBouncer ≥ 1.21");
        }
    }
    server.shutdown().await;
}

/// Without a pooler, instances × pools over max_connections is refused before anything
/// starts, with the file, the line and what to change.
#[test]
fn instances_times_pools_over_max_connections_are_refused_before_starting() {
    let dir = tempfile::tempdir().unwrap();
    let text_of = std::fs::read_to_string(scenario_path("incident-scaleout.toml")).unwrap();
    let start = text_of.find("\n[pooler]\n").unwrap();
    let end = start + text_of[start..].find("\n\n").unwrap();
    let without = format!("{}{}", &text_of[..start], &text_of[end..]);
    let path = dir.path().join("no-pooler.toml");
    std::fs::write(&path, &without).unwrap();
    let line = without
        .lines()
        .position(|l| l.starts_with("autoscale"))
        .unwrap()
        + 1;
    let run = incident_lab(&[
        "matrix",
        path.to_str().unwrap(),
        "--out",
        dir.path().join("out").to_str().unwrap(),
    ]);
    assert_eq!(run.status.code(), Some(2), "{}", text(&run));
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(
        err.contains(&format!("no-pooler.toml:{line}:"))
            && err.contains("12 instances × 11 connections")
            && err.contains("max_connections = 60")
            && err.contains("[pooler]"),
        "{err}"
    );
    assert!(!dir.path().join("out").join("report.json").exists());
}

/// The scale-out scenario end to end: the legacy arm makes the platform start instances whose
/// pools queue at the pooler and miss the budgets; all-on holds them; the instances, their
/// connections and the pooler's queue reach the report; nothing is left running.
#[test]
fn the_scaleout_scenario_reproduces_through_the_pooler_and_the_fix_holds() {
    let _one = ONE_AT_A_TIME.blocking_lock();
    let out = tempfile::tempdir().unwrap();
    let run = incident_lab(&[
        "matrix",
        &scenario_path("incident-scaleout.toml"),
        "--postgres",
        "local",
        "--out",
        out.path().to_str().unwrap(),
    ]);
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("report.json")).unwrap())
            .unwrap();
    assert_eq!(run.status.code(), Some(0), "{}", text(&run));
    let arm = |name: &str| {
        report["arms"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == name)
            .unwrap()
            .clone()
    };
    let (legacy, on) = (arm("pre-phase-53"), arm("all-on"));
    assert_eq!(legacy["status"], "as_expected", "{legacy:#}");
    assert_eq!(on["status"], "as_expected", "{on:#}");

    // The legacy burst makes the platform scale out, and the pooler queue.
    let fleet = &legacy["fleet"];
    let most = fleet["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[1].as_u64().unwrap())
        .max()
        .unwrap();
    assert!(
        most >= 4,
        "the legacy arm ran at most {most} instances: {fleet}"
    );
    let pooler = &fleet["pooler"];
    assert!(
        pooler["cl_waiting_max"].as_f64().unwrap() >= 1.0,
        "{pooler}"
    );
    assert!(pooler["transactions"].as_f64().unwrap() > 0.0, "{pooler}");
    // Each instance's connections and the pooler's figures are on the timeline too.
    let timeline = legacy["timeline"].as_array().unwrap();
    assert!(timeline
        .iter()
        .any(|p| p["instances"].as_f64().unwrap_or(0.0) >= 2.0));
    assert!(timeline
        .iter()
        .any(|p| p["pooler_cl_waiting"].as_f64().unwrap_or(0.0) >= 1.0));
    assert!(timeline.iter().any(|p| p["instance_pool_in_use"]
        .as_array()
        .is_some_and(|v| v.len() >= 2)));

    // All-on: few instances, every budget held, nobody queued long at the pooler.
    let on_fleet = &on["fleet"];
    assert!(on_fleet["failed_starts"].as_u64() == Some(0), "{on_fleet}");
    for e in on["endpoints"].as_array().unwrap() {
        if e["budget_p95_ms"].is_number() {
            assert_eq!(e["within_budget"], true, "{e}");
        }
    }
    let md = std::fs::read_to_string(out.path().join("report.md")).unwrap();
    assert!(md.contains("## Instances and the pooler"), "{md}");

    // Nothing left running: no pgbouncer, no service process started for this run.
    let ps = std::process::Command::new("ps")
        .args(["-eo", "args"])
        .output()
        .unwrap();
    let ps = String::from_utf8_lossy(&ps.stdout);
    let dir = out.path().display().to_string();
    assert!(
        !ps.lines()
            .any(|l| l.contains("pgbouncer") && l.contains("incident-lab-pgbouncer-")),
        "{ps}"
    );
    assert!(!ps.lines().any(|l| l.contains(&dir)), "{ps}");
}
