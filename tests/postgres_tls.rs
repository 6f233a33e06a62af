//! `--database-url` over TLS, as a managed Postgres requires: a local cluster with `ssl = on`
//! and a certificate made in the test (openssl, nothing fetched). `sslmode=require` and
//! `verify-full` with the right CA connect over TLS; another CA is refused, naming the host.

mod common;

use std::os::unix::fs::MetadataExt;

use incident_lab::matrix::target::connect;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_url_is_reached_over_tls_as_its_sslmode_says() {
    let server = common::local_server().await;
    // The cluster's own directory (its data, socket and log), the server's user's.
    let data = server.local_cluster().expect("a local cluster").dir();
    let certs = tempfile::tempdir().unwrap();
    let dir = certs.path();
    common::certs::make(dir);
    // The server reads its key as its own user, readable by no one else.
    let owner = std::fs::metadata(&data).unwrap();
    for name in ["server.pem", "server.key"] {
        let to = data.join(name);
        std::fs::copy(dir.join(name), &to).unwrap();
        std::os::unix::fs::chown(&to, Some(owner.uid()), Some(owner.gid())).unwrap();
        std::fs::set_permissions(&to, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    }
    let plain = server.url("postgres", true);
    let mut admin = connect(&plain).await.unwrap();
    for sql in [
        format!(
            "ALTER SYSTEM SET ssl_cert_file = '{}'",
            data.join("server.pem").display()
        ),
        format!(
            "ALTER SYSTEM SET ssl_key_file = '{}'",
            data.join("server.key").display()
        ),
        "ALTER SYSTEM SET ssl = on".into(),
        "SELECT pg_reload_conf()".into(),
    ] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut admin)
            .await
            .unwrap();
    }
    // The reload is asynchronous: wait until a new session sees it.
    let mut on = String::new();
    for _ in 0..50 {
        let mut c = connect(&plain).await.unwrap();
        on = sqlx::query_scalar("SHOW ssl")
            .fetch_one(&mut c)
            .await
            .unwrap();
        if on == "on" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(on, "on");

    let over_tls = |query: &str| format!("{plain}?{query}");
    let ca = dir.join("ca.pem").display().to_string();
    let other = dir.join("other.pem").display().to_string();
    for url in [
        over_tls("sslmode=require"),
        over_tls(&format!("sslmode=verify-full&sslrootcert={ca}")),
    ] {
        let mut c = connect(&url)
            .await
            .unwrap_or_else(|e| panic!("{url}: {e:#}"));
        let ssl: bool =
            sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
                .fetch_one(&mut c)
                .await
                .unwrap();
        assert!(ssl, "{url}: the session is not over TLS");
    }
    let refused = connect(&over_tls(&format!(
        "sslmode=verify-full&sslrootcert={other}"
    )))
    .await
    .unwrap_err();
    let said = format!("{refused:#}");
    let host = server.url("x", false);
    let at = host.rsplit('@').next().unwrap().trim_end_matches("/x");
    assert!(
        said.contains(&format!("cannot connect to --database-url ({at})")),
        "{said}"
    );
    server.shutdown().await;
}
