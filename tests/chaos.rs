//! Chaos on the database link, against real Postgres: the fault proxy's every fault observably
//! applied — to a connection opened before it was set, as a pool's are — and removed; a
//! scenario's `[[faults]]` checked where written and played on the load's clock, with no
//! acknowledged event lost across a reset of the service's pooled connections.

mod common;

use common::incident_lab;
use common::scenarios::{arm, scenario_path, text};
use serde_json::Value;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use incident_lab::chaos::{FaultProxy, Faults};
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};

async fn timed(conn: &mut PgConnection, sql: &'static str) -> Result<Duration, sqlx::Error> {
    let started = Instant::now();
    sqlx::query(sql).execute(&mut *conn).await?;
    Ok(started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_link_fault_reaches_open_connections_and_goes_away() {
    let server = common::local_server().await;
    let direct = server.connect_options("postgres");
    let upstream: SocketAddr = format!("127.0.0.1:{}", direct.get_port()).parse().unwrap();
    let proxy = FaultProxy::start(upstream).await.unwrap();
    let via: PgConnectOptions = direct.clone().host("127.0.0.1").port(proxy.addr().port());

    // Opened before any fault, as a pool's connections are.
    let mut conn = PgConnection::connect_with(&via).await.unwrap();
    assert_eq!(proxy.open(), 1);
    timed(&mut conn, "SELECT 1").await.unwrap();

    // Latency ± jitter on each response: one round trip takes at least latency - jitter.
    proxy.set(Faults {
        latency: Duration::from_millis(300),
        jitter: Duration::from_millis(50),
        ..Faults::default()
    });
    let slow = timed(&mut conn, "SELECT 1").await.unwrap();
    assert!(
        slow >= Duration::from_millis(250),
        "latency not applied: {slow:?}"
    );
    proxy.heal();
    let healed = timed(&mut conn, "SELECT 1").await.unwrap();
    assert!(
        healed < Duration::from_millis(250),
        "latency not removed: {healed:?}"
    );

    // Bandwidth: 300 kB of answer at 100 kB/s takes at least two seconds.
    proxy.set(Faults {
        bandwidth: Some(100_000),
        ..Faults::default()
    });
    let narrow = timed(&mut conn, "SELECT repeat('x', 300000)")
        .await
        .unwrap();
    assert!(
        narrow >= Duration::from_secs(2),
        "bandwidth not applied: {narrow:?}"
    );
    proxy.heal();

    // Hang: the query gets no answer (its bytes are dropped), the connection stays open.
    proxy.set(Faults {
        hang: true,
        ..Faults::default()
    });
    let hung = tokio::time::timeout(Duration::from_millis(800), timed(&mut conn, "SELECT 1")).await;
    assert!(hung.is_err(), "a hung link answered: {hung:?}");
    assert!(proxy.dropped_bytes() > 0);
    assert_eq!(proxy.open(), 1, "a hang keeps the connection open");
    proxy.heal();

    // Reset: every open connection is reset; the client sees it on its next query, and a new
    // connection works.
    proxy.reset();
    let after_reset =
        tokio::time::timeout(Duration::from_secs(5), timed(&mut conn, "SELECT 1")).await;
    assert!(
        matches!(after_reset, Ok(Err(_))),
        "the reset did not reach the open connection: {after_reset:?}"
    );
    let accepted = proxy.accepted();
    let mut fresh = PgConnection::connect_with(&via).await.unwrap();
    timed(&mut fresh, "SELECT 1").await.unwrap();
    assert_eq!(proxy.accepted(), accepted + 1);

    // Refuse: new connections are reset on arrival; open ones carry on.
    proxy.set(Faults {
        refuse: true,
        ..Faults::default()
    });
    assert!(
        PgConnection::connect_with(&via).await.is_err(),
        "a refused connection connected"
    );
    assert_eq!(proxy.refused(), 1);
    timed(&mut fresh, "SELECT 1").await.unwrap();

    // Slow connect: a new connection waits before the proxy dials Postgres.
    proxy.set(Faults {
        slow_connect: Duration::from_millis(600),
        ..Faults::default()
    });
    let started = Instant::now();
    let mut late = PgConnection::connect_with(&via).await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(600),
        "{:?}",
        started.elapsed()
    );
    proxy.heal();
    timed(&mut late, "SELECT 1").await.unwrap();
    let _ = late.close().await;
    let _ = fresh.close().await;
    drop(proxy);
    server.shutdown().await;
}

/// `[[faults]]` entries are checked where they are written.
#[test]
fn a_bad_fault_is_named_with_its_line() {
    let base = std::fs::read_to_string(scenario_path("chaos-db-latency.toml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (fault, says) in [
        (
            "kind = \"latency\"\nat = \"1s\"\nfor = \"2s\"",
            "kind \"latency\" needs field `latency`",
        ),
        (
            "kind = \"hang\"\nat = \"1s\"\nfor = \"2s\"\nlatency = \"5ms\"",
            "kind \"hang\": field `latency` is not one of its parameters (it takes none)",
        ),
        (
            "kind = \"reset\"\nat = \"1s\"\nfor = \"2s\"",
            "kind \"reset\" is instant: it takes no `for`",
        ),
        (
            "kind = \"refuse\"\nat = \"25s\"\nfor = \"2s\"",
            "field `at` = 25s must fall within the run (20s)",
        ),
        ("kind = \"flood\"\nat = \"1s\"", "unknown variant `flood`"),
    ] {
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, format!("{base}\n[[faults]]\n{fault}\n")).unwrap();
        let err = incident_lab::scenario::Scenario::load(&path)
            .unwrap_err()
            .to_string();
        assert!(err.contains(says), "{fault}: {err}");
        assert!(err.contains("bad.toml:"), "the file is named: {err}");
    }
}

/// The shipped scenario: the link slows down for the burst and every open connection is reset
/// in its middle; the faults are in the report as they happened, and every acknowledged
/// EMAIL_SENT is applied exactly once.
#[test]
fn the_db_latency_scenario_loses_nothing_across_a_reset() {
    let out = tempfile::tempdir().unwrap();
    let run = incident_lab(&[
        "run",
        &scenario_path("chaos-db-latency.toml"),
        "--arm",
        "all-on",
        "--postgres",
        "local",
        "--out",
        &out.path().display().to_string(),
    ]);
    assert_eq!(run.status.code(), Some(0), "{}", text(&run));
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("report.json")).unwrap())
            .unwrap();
    let a = arm(&report, "all-on");
    let faults = a["faults"].as_array().unwrap();
    assert_eq!(faults.len(), 2, "{faults:?}");
    let near = |v: &Value, want: f64| (v.as_f64().unwrap() - want).abs() < 0.5;
    assert_eq!(faults[0]["kind"], "latency");
    assert!(
        near(&faults[0]["from_s"], 5.0) && near(&faults[0]["to_s"], 13.0),
        "{faults:?}"
    );
    assert_eq!(faults[1]["kind"], "reset");
    assert!(
        faults[1]["connections_open"].as_u64().unwrap() > 0,
        "the reset reached open connections: {faults:?}"
    );
    let once = a["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "every acknowledged EMAIL_SENT applied exactly once")
        .expect("a run with faults checks exactly-once");
    assert_eq!(once["passed"], true, "{once}");
    assert!(a["invariants"]["acked"].as_u64().unwrap() > 100);
    // A reset can lose a commit's acknowledgment: the rows accounting is skipped, and says so.
    assert!(
        a["skipped"].as_array().unwrap().iter().any(|s| s["check"]
            == "declared writes and calls match what was measured"
            && s["reason"].as_str().unwrap().contains("reset or hung")),
        "{}",
        a["skipped"]
    );
    assert!(std::fs::read_to_string(out.path().join("report.md"))
        .unwrap()
        .contains("## Faults injected on the database link"));
}

/// `chaos list` names every kind a scenario accepts, with its parameters.
#[test]
fn chaos_list_describes_every_kind() {
    let run = incident_lab(&["chaos", "list"]);
    assert_eq!(run.status.code(), Some(0), "{}", text(&run));
    let out = String::from_utf8_lossy(&run.stdout);
    for (kind, params, _) in incident_lab::scenario::FaultKind::ALL {
        assert!(
            out.contains(kind.name()) && out.contains(params),
            "{kind:?}:\n{out}"
        );
    }
}
