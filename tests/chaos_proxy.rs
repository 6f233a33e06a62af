//! The database link's fault proxy against real Postgres: each fault observably applied —
//! to a connection opened before it was set, as a pool's are — and removed.

mod common;

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
