//! The local backend: an ephemeral cluster run as the postgres user, constrained as asked,
//! and gone without a trace afterwards.

mod common;

use std::time::Duration;

use common::{local_request, local_server, port_open, process_alive};
use incident_lab::postgres::{Backend, PgServer, PgSettings};
use incident_lab::units::MemSize;

/// The cluster starts (as root, through the postgres user) and applies every setting asked for.
#[tokio::test]
async fn a_local_cluster_applies_the_constrained_settings() {
    let settings = PgSettings {
        max_connections: 23,
        statement_timeout: Some(Duration::from_millis(1500)),
        shared_buffers: MemSize::mib(64),
        durable: true,
        cpus: Some(1.0),
        memory: Some(MemSize::mib(512)),
    };
    let server = PgServer::provision(&local_request(settings)).await.unwrap();
    assert_eq!(
        server.limits(),
        "none: cpus 1, memory 512 MiB asked, which only --postgres docker applies",
        "the local backend cannot limit, and says so"
    );
    let db = PgServer::unique_name("settings");
    server.create_database(&db).await.unwrap();

    assert_eq!(server.backend(), Backend::Local);
    assert_eq!(server.show(&db, "max_connections").await.unwrap(), "23");
    assert_eq!(server.show(&db, "shared_buffers").await.unwrap(), "64MB");
    assert_eq!(server.show(&db, "fsync").await.unwrap(), "on");
    assert_eq!(server.show(&db, "synchronous_commit").await.unwrap(), "on");
    assert_eq!(
        server.show(&db, "statement_timeout").await.unwrap(),
        "1500ms"
    );
    server.shutdown().await;
}

/// Postgres runs as the postgres user, never as root.
#[tokio::test]
async fn the_server_process_does_not_run_as_root() {
    let server = local_server().await;
    let pid = server.local_cluster().unwrap().pid();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    let real_uid: u32 = uid_line.split_whitespace().nth(1).unwrap().parse().unwrap();

    let expected = if nix::unistd::geteuid().is_root() {
        nix::unistd::User::from_name("postgres")
            .unwrap()
            .unwrap()
            .uid
            .as_raw()
    } else {
        nix::unistd::getuid().as_raw()
    };
    assert_eq!(real_uid, expected);
    assert_ne!(real_uid, 0);
    server.shutdown().await;
}

/// After shutdown: no postmaster, no listening port, no temp dir.
#[tokio::test]
async fn shutdown_leaves_no_process_port_or_directory() {
    let server = local_server().await;
    let cluster = server.local_cluster().unwrap();
    let (pid, dir) = (cluster.pid(), cluster.dir());
    let port = server.connect_options("postgres").get_port();
    assert!(process_alive(pid) && dir.exists() && port_open(port));

    server.shutdown().await;

    assert!(!process_alive(pid), "postmaster {pid} still running");
    assert!(!port_open(port), "port {port} still accepts connections");
    assert!(!dir.exists(), "{} left behind", dir.display());
}

/// A panic in the middle of a run still stops the cluster and removes its directory.
#[tokio::test]
async fn a_panicking_test_body_still_tears_the_cluster_down() {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let body = tokio::spawn(async move {
        let server = local_server().await;
        let cluster = server.local_cluster().unwrap();
        let port = server.connect_options("postgres").get_port();
        tx.send((cluster.pid(), cluster.dir(), port)).unwrap();
        panic!("the test body fails while the cluster runs");
    });

    let outcome = body.await;
    let (pid, dir, port) = rx.await.unwrap();

    assert!(outcome.unwrap_err().is_panic());
    assert!(!process_alive(pid), "postmaster {pid} outlived the panic");
    assert!(!port_open(port));
    assert!(!dir.exists(), "{} outlived the panic", dir.display());
}

/// A directory without Postgres binaries is refused with a message that names it.
#[tokio::test]
async fn a_missing_binary_dir_is_named_in_the_error() {
    let mut request = local_request(PgSettings::default());
    request.pg_bin = Some("/nonexistent/pg/bin".into());

    let err = PgServer::provision(&request).await.unwrap_err().to_string();

    assert!(err.contains("/nonexistent/pg/bin"), "{err}");
    assert!(err.contains("initdb"), "{err}");
}

/// Each backend leads a session of its own, so on a kernel with autogroups its `nice` counts
/// for nothing against the harness: the cluster lowers the backend's autogroup instead, and
/// never the harness's own.
#[tokio::test]
async fn backends_sit_below_the_harness_in_their_own_autogroups() {
    use incident_lab::postgres::autogroup;
    // The harness may sit in the default group (an empty /proc/PID/autogroup: started by a
    // process that never called setsid, as on some CI runners); its backends never do.
    let ready = if !autogroup::enabled() {
        Err("kernel.sched_autogroup_enabled is not 1".to_owned())
    } else if autogroup::of(std::process::id()).is_none() {
        Err("/proc/self/autogroup cannot be read".to_owned())
    } else {
        Ok(())
    };
    let test = "backends_sit_below_the_harness_in_their_own_autogroups";
    if common::skip::or_skip(test, &common::skip::AUTOGROUP, ready).is_none() {
        return;
    }
    let ours = autogroup::of(std::process::id()).unwrap();
    let server = local_server().await;
    let db = PgServer::unique_name("autogroup");
    server.create_database(&db).await.unwrap();
    let mut conn = sqlx::ConnectOptions::connect(&server.connect_options(&db))
        .await
        .unwrap();
    let backend: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    let backend = backend as u32;
    let first = autogroup::of(backend).unwrap();
    assert_ne!(first.id, ours.id, "the backend leads its own session");

    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut now = first;
    while now.nice != 10 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        now = autogroup::of(backend).unwrap();
    }
    assert_eq!(now.nice, 10, "the backend's autogroup was not lowered");
    let postmaster = server.local_cluster().unwrap().pid();
    assert_eq!(
        autogroup::of(postmaster).unwrap(),
        ours,
        "the postmaster shares the harness's autogroup, which must keep its nice"
    );
    sqlx::Connection::close(conn).await.unwrap();
    server.shutdown().await;
}
