//! The docker backend, end to end on this machine's engine: a Postgres image built here from
//! this machine's binaries (`scripts/build-images`, nothing pulled) serves the backend with the
//! scenario's CPU and memory limits read back, `auto` picks it when present, and the matrix runs
//! on it. A missing image gives a clear error; containers of dead runs are reaped.
//!
//! Each test runs whenever a Docker daemon answers, and reports itself skipped by name and
//! reason when none does (see `common::docker`).

mod common;

use common::docker::{cli, daemon, local_pg_image, or_skip};
use common::scenarios::{run_matrix_with, swap, text, tiny_scenario, write_scenario};
use common::skip::DOCKER;
use incident_lab::postgres::{
    docker, Backend, PgServer, PgSettings, PostgresChoice, ProvisionRequest,
};
use incident_lab::units::MemSize;
use serde_json::Value;
use sqlx::{ConnectOptions, Connection};

/// The tests of this file one at a time: they count containers on one daemon.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn docker_request(choice: PostgresChoice, image: &str, settings: PgSettings) -> ProvisionRequest {
    ProvisionRequest {
        choice,
        pg_bin: None,
        pg_image: image.to_owned(),
        settings,
    }
}

/// The containers this test process owns (by the harness's owner label).
fn my_containers() -> Vec<String> {
    let label = format!(
        "label={}={}",
        docker::OWNER_LABEL,
        incident_lab::postgres::owner()
    );
    cli(&["ps", "-aq", "--filter", &label])
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// A missing image is named, with the ways around it (build/load, --pg-image, local).
#[tokio::test]
async fn a_missing_image_gives_a_clear_error() {
    if or_skip("a_missing_image_gives_a_clear_error", daemon()).is_none() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let image = "incident-lab/absent-postgres:never";
    let request = docker_request(PostgresChoice::Docker, image, PgSettings::default());

    let err = PgServer::provision(&request).await.unwrap_err().to_string();

    assert!(err.contains(image), "{err}");
    assert!(err.contains("not present locally"), "{err}");
    assert!(err.contains("--pg-image"), "{err}");
    assert!(err.contains("--postgres local"), "{err}");
}

/// The image built here runs the server as a non-root user, honours the `-c` settings, and gets
/// the limits asked for, read back from the container; shutting down removes the container.
#[tokio::test]
async fn the_local_image_serves_the_backend_with_its_limits() {
    const TEST: &str = "the_local_image_serves_the_backend_with_its_limits";
    if or_skip(TEST, daemon()).is_none() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let image = local_pg_image().unwrap();
    let user = cli(&["image", "inspect", "--format", "{{.Config.User}}", &image]).unwrap();
    assert_eq!(user, "999:999", "the server must not run as root");
    let settings = PgSettings {
        max_connections: 30,
        cpus: Some(1.0),
        memory: Some(MemSize::mib(512)),
        ..PgSettings::default()
    };

    let server = PgServer::provision(&docker_request(PostgresChoice::Docker, &image, settings))
        .await
        .unwrap();

    assert_eq!(server.backend(), Backend::Docker);
    assert_eq!(
        server.limits(),
        "cpus 1, memory 512 MiB (read back from the container)"
    );
    assert_eq!(
        server.show("postgres", "max_connections").await.unwrap(),
        "30"
    );
    assert_eq!(server.show("postgres", "fsync").await.unwrap(), "off");
    let mut conn = server
        .connect_options("postgres")
        .connect()
        .await
        .expect("password login over TCP");
    let tz: String = sqlx::query_scalar("SHOW TimeZone")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        tz, "UTC",
        "sqlx sets UTC at connect: the image carries zoneinfo"
    );
    conn.close().await.unwrap();
    assert_eq!(my_containers().len(), 1, "one container while it runs");

    server.shutdown().await;

    assert_eq!(
        my_containers(),
        Vec::<String>::new(),
        "the container is removed"
    );
}

/// `auto` with no DATABASE_URL picks Docker when the daemon answers and the image is present.
#[tokio::test]
async fn auto_picks_docker_when_the_image_is_present() {
    const TEST: &str = "auto_picks_docker_when_the_image_is_present";
    if or_skip(TEST, daemon()).is_none() {
        return;
    }
    if std::env::var_os("DATABASE_URL").is_some() {
        or_skip(TEST, Err("DATABASE_URL is set: auto would pick it".into()));
        return;
    }
    let _serial = SERIAL.lock().await;
    let image = local_pg_image().unwrap();

    let server = PgServer::provision(&docker_request(
        PostgresChoice::Auto,
        &image,
        PgSettings::default(),
    ))
    .await
    .unwrap();

    assert_eq!(server.backend(), Backend::Docker, "{}", server.why());
    assert_eq!(
        server.limits(),
        "none (read back from the container)",
        "no limits asked, none applied"
    );
    server.shutdown().await;
}

/// The matrix on the docker backend, from the image built here: the one-arm smoke scenario with
/// a small-compute profile (1 CPU, 1 GB) passes, the report says where it ran and with which
/// limits, and no container is left behind.
#[test]
fn the_matrix_runs_on_the_local_image() {
    const TEST: &str = "the_matrix_runs_on_the_local_image";
    if or_skip(TEST, daemon()).is_none() {
        return;
    }
    let _serial = SERIAL.blocking_lock();
    let image = local_pg_image().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let scenario = tiny_scenario(|s| swap(&s, "cpus = 2.0", "cpus = 1.0"));
    let path = write_scenario(dir.path(), "docker.toml", &scenario);
    let out = dir.path().join("out");
    let before = cli(&["ps", "-aq"]).unwrap();

    let run = run_matrix_with(&path, &out, &["--postgres", "docker", "--pg-image", &image]);

    let said = text(&run);
    assert_eq!(run.status.code(), Some(0), "{said}");
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["verdict"], "pass");
    assert_eq!(report["environment"]["postgres_backend"], "docker");
    assert_eq!(
        report["environment"]["postgres_limits"],
        "cpus 1, memory 1024 MiB (read back from the container)"
    );
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("limits: cpus 1, memory 1024 MiB"), "{md}");
    assert_eq!(
        cli(&["ps", "-aq"]).unwrap(),
        before,
        "the run left a container behind"
    );
}

/// A tiny image built here, offline: Debian's static busybox in a scratch image.
fn busybox_image() -> Result<&'static str, String> {
    const TAG: &str = "incident-lab/test-busybox:1";
    let busybox = std::path::Path::new("/bin/busybox");
    if !busybox.is_file() {
        return Err("no /bin/busybox (Debian's busybox-static; scripts/setup installs it)".into());
    }
    let ctx = tempfile::tempdir().map_err(|e| e.to_string())?;
    std::fs::copy(busybox, ctx.path().join("busybox")).map_err(|e| e.to_string())?;
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM scratch\nCOPY busybox /bin/busybox\nENTRYPOINT [\"/bin/busybox\"]\n",
    )
    .map_err(|e| e.to_string())?;
    cli(&["build", "-q", "-t", TAG, ctx.path().to_str().unwrap()])?;
    Ok(TAG)
}

/// A container an earlier run left when it died (its owner label names a process of this host
/// that is gone) is removed by the next run; one whose owner lives stays.
#[tokio::test]
async fn containers_left_by_a_dead_run_are_removed() {
    const TEST: &str = "containers_left_by_a_dead_run_are_removed";
    if or_skip(TEST, daemon()).is_none() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let image = busybox_image().unwrap();
    let dead = common::dead_pid();
    let me = incident_lab::postgres::owner();
    let (host, _) = me.rsplit_once(':').unwrap();
    let run = |owner: String| {
        cli(&[
            "run",
            "-d",
            "--label",
            &format!("{}={owner}", docker::OWNER_LABEL),
            image,
            "sleep",
            "300",
        ])
        .unwrap()
    };
    let orphan = run(format!("{host}:{dead}"));
    let mine = run(me.clone());

    let removed = docker::reap_leftover_containers().await.unwrap();

    let exists = |id: &str| cli(&["inspect", "--format", "{{.Id}}", id]).is_ok();
    assert!(!exists(&orphan), "the orphan survived: {removed:?}");
    assert!(
        exists(&mine),
        "a live run's container was removed: {removed:?}"
    );
    assert!(
        removed
            .iter()
            .any(|r| r.contains(&format!("{host}:{dead}"))),
        "{removed:?}"
    );
    cli(&["rm", "-f", &mine]).unwrap();
}

/// Where Docker is required (CI on a machine with a daemon), a daemon that does not answer
/// fails the test rather than passing as a skip; elsewhere the skip names the test and why.
#[test]
fn a_missing_daemon_is_a_failure_where_docker_is_required() {
    let no_daemon = || Err("no Docker daemon answers (made up for this test)".to_owned());
    let line = common::skip::skip_line("some_test", &DOCKER, no_daemon(), false);
    assert_eq!(
        line.as_deref(),
        Some("skipped: some_test: no Docker daemon answers (made up for this test)")
    );
    assert_eq!(
        common::skip::skip_line("some_test", &DOCKER, Ok(()), true),
        None
    );
    // And a test whose need is met goes on (this once returned None, so every Docker test here
    // returned at its first line and passed without running).
    assert_eq!(or_skip("some_test", Ok(())), Some(()));
    let required = std::panic::catch_unwind(|| {
        common::skip::skip_line("some_test", &DOCKER, no_daemon(), true);
    });
    let said = required.expect_err("a required daemon that does not answer must fail");
    let said = said.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(said.contains("INCIDENT_LAB_REQUIRE_DOCKER"), "{said}");
}
