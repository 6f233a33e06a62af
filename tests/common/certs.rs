//! Certificates made in a test with openssl (scripts/setup installs it), nothing fetched: a
//! CA, a server certificate it signs for 127.0.0.1, and another CA that signs nothing.

use std::path::Path;
use std::process::Command;

/// Runs openssl with `args` in `dir`.
pub fn openssl(dir: &Path, args: &str) {
    let out = Command::new("openssl")
        .args(args.split_whitespace())
        .current_dir(dir)
        .output()
        .expect("openssl (scripts/setup installs it)");
    assert!(
        out.status.success(),
        "openssl {args}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Writes into `dir`: `ca.pem` (and its key), `server.pem` and `server.key` (signed by it, for
/// IP 127.0.0.1), as the harness makes them, and `other.pem` (a CA that signed nothing here).
pub fn make(dir: &Path) {
    incident_lab::tools::make_certificates(dir).unwrap();
    openssl(
        dir,
        "req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 -keyout other.key -out other.pem -subj /CN=other",
    );
}

/// Switches the local cluster in `cluster` (its own directory, as `data dir:` prints it) to
/// `ssl = on` with `certs`' server certificate, through `admin_url` (a superuser), and waits
/// until a new session sees it. The certificate and key are copied beside the cluster's data,
/// owned by its user and readable by no one else, as Postgres requires.
pub async fn postgres_over_tls(cluster: &Path, certs: &Path, admin_url: &str) {
    use std::os::unix::fs::{chown, MetadataExt, PermissionsExt};
    let owner = std::fs::metadata(cluster).unwrap();
    for name in ["server.pem", "server.key"] {
        let to = cluster.join(name);
        std::fs::copy(certs.join(name), &to).unwrap();
        chown(&to, Some(owner.uid()), Some(owner.gid())).unwrap();
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let connect = incident_lab::matrix::target::connect;
    let mut admin = connect(admin_url).await.unwrap();
    for sql in [
        format!(
            "ALTER SYSTEM SET ssl_cert_file = '{}'",
            cluster.join("server.pem").display()
        ),
        format!(
            "ALTER SYSTEM SET ssl_key_file = '{}'",
            cluster.join("server.key").display()
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
    for _ in 0..50 {
        let mut c = connect(admin_url).await.unwrap();
        let on: String = sqlx::query_scalar("SHOW ssl")
            .fetch_one(&mut c)
            .await
            .unwrap();
        if on == "on" {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("Postgres never switched to ssl = on");
}
