//! `--database-url` over TLS, as a managed Postgres requires: a local cluster with `ssl = on`
//! and a certificate made in the test (openssl, nothing fetched). `sslmode=require` and
//! `verify-full` with the right CA connect over TLS; another CA is refused, naming the host.

mod common;

use incident_lab::matrix::target::connect;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_url_is_reached_over_tls_as_its_sslmode_says() {
    let server = common::local_server().await;
    // The cluster's own directory (its data, socket and log), the server's user's.
    let data = server.local_cluster().expect("a local cluster").dir();
    let certs = tempfile::tempdir().unwrap();
    let dir = certs.path();
    common::certs::make(dir);
    let plain = server.url("postgres", true);
    common::certs::postgres_over_tls(&data, dir, &plain).await;

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
