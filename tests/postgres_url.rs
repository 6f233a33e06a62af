//! The URL backend: on an existing server the harness creates its own databases and drops
//! every one of them, on shutdown and on a panic alike.

mod common;

use common::local_server;
use incident_lab::dataset::Template;
use incident_lab::model::Scale;
use incident_lab::postgres::{Backend, PgServer, PgSettings, PostgresChoice, ProvisionRequest};
use sqlx::{ConnectOptions, Connection};

fn url_request(url: String) -> ProvisionRequest {
    ProvisionRequest {
        choice: PostgresChoice::Url(url),
        pg_bin: None,
        pg_image: String::new(),
        settings: PgSettings::default(),
    }
}

async fn harness_databases(existing: &PgServer) -> Vec<String> {
    let mut conn = existing
        .connect_options("postgres")
        .connect()
        .await
        .unwrap();
    let names = sqlx::query_scalar(
        "SELECT datname FROM pg_database WHERE datname LIKE 'ilab_%' ORDER BY 1",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();
    names
}

/// Databases made on a URL server (template and clones) are all dropped at shutdown.
#[tokio::test]
async fn databases_on_an_existing_server_are_created_and_dropped() {
    let existing = local_server().await;
    let url = existing.url("postgres", true);
    let harness = PgServer::provision(&url_request(url)).await.unwrap();
    assert_eq!(harness.backend(), Backend::Url);

    let template = Template::prepare(&harness, Scale::SMOKE, 1).await.unwrap();
    let (clone, _) = template
        .clone_for_arm(&harness, "all-on", false)
        .await
        .unwrap();
    let during = harness_databases(&existing).await;
    assert!(during.contains(&template.name().to_owned()), "{during:?}");
    assert!(during.contains(&clone), "{during:?}");

    harness.shutdown().await;

    assert_eq!(harness_databases(&existing).await, Vec::<String>::new());
    existing.shutdown().await;
}

/// When the harness dies by a panic, its databases on the existing server go with it.
#[tokio::test]
async fn a_panic_drops_the_harness_databases_too() {
    let existing = local_server().await;
    let url = existing.url("postgres", true);
    let body = tokio::spawn(async move {
        let harness = PgServer::provision(&url_request(url)).await.unwrap();
        harness
            .create_database(&PgServer::unique_name("doomed"))
            .await
            .unwrap();
        panic!("the run fails with a database on the server");
    });

    assert!(body.await.unwrap_err().is_panic());

    assert_eq!(harness_databases(&existing).await, Vec::<String>::new());
    existing.shutdown().await;
}

/// An unreachable server is refused up front, its password masked in the message.
#[tokio::test]
async fn an_unreachable_url_is_a_clear_error() {
    let err = PgServer::provision(&url_request("postgres://app:s3cret@127.0.0.1:1/x".into()))
        .await
        .unwrap_err()
        .to_string();

    assert!(err.contains("cannot connect"), "{err}");
    assert!(err.contains("127.0.0.1:1"), "{err}");
    assert!(!err.contains("s3cret"), "password leaked: {err}");
}

/// A database an earlier run left when it died (its owner process is gone) is dropped by the
/// next run on the same server; one whose owner lives is left alone.
#[tokio::test]
async fn databases_left_by_a_dead_run_are_dropped_by_the_next() {
    let existing = local_server().await;
    let dead = common::dead_pid();
    let host_mark = incident_lab::postgres::owner_mark();
    let (prefix, _) = host_mark.rsplit_once(':').unwrap();
    let mut conn = existing
        .connect_options("postgres")
        .connect()
        .await
        .unwrap();
    for (name, pid) in [
        ("ilab_left_dead", dead),
        ("ilab_left_alive", std::process::id()),
    ] {
        for sql in [
            format!("CREATE DATABASE {name}"),
            format!("COMMENT ON DATABASE {name} IS '{prefix}:{pid}'"),
        ] {
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&mut conn)
                .await
                .unwrap();
        }
    }
    conn.close().await.unwrap();

    let harness = PgServer::provision(&url_request(existing.url("postgres", true)))
        .await
        .unwrap();

    assert_eq!(harness_databases(&existing).await, vec!["ilab_left_alive"]);
    harness.shutdown().await;
    existing.shutdown().await;
}
